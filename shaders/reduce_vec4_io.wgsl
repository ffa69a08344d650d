// The bindings and the default load of a standalone vec4 reduction (reduce_vec4.wgsl,
// reduce_rows_vec4.wgsl); a fused prologue declares its own and computes the load.
@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;
fn load_x4(q: u32) -> vec4<f32> { return x[q]; }
