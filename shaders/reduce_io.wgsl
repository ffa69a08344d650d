// The bindings and the default load of a standalone scalar reduction (reduce.wgsl,
// reduce_rows.wgsl); a fused prologue declares its own and computes the load.
fn load_x(i: u32) -> T { return x[i]; }
