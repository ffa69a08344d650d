// The bindings and the default load of a standalone vec4 reduction (reduce_vec4.wgsl,
// reduce_rows_vec4.wgsl); a fused prologue declares its own and computes the load.
fn load_x4(q: u32) -> vec4<f32> { return x[q]; }
