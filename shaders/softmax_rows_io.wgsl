// The bindings and the default load of the standalone row softmax (softmax_rows.wgsl); a
// fused prologue declares its own and computes the load.
@group(0) @binding(0) var<storage, read> z: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;
fn load_z(i: u32) -> T { return z[i]; }
