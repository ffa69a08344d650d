// The bindings and the default load of the standalone row softmax (softmax_rows.wgsl); a
// fused prologue declares its own and computes the load.
fn load_z(i: u32) -> T { return z[i]; }
