// softmax of contiguous rows z [outer, n], one thread per row (max subtracted first):
// out[r, j] = exp(z[r, j] - m_r) / sum_k exp(z[r, k] - m_r).
// params: [outer, n, z_off]
@group(0) @binding(0) var<storage, read> z: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;
// the load of z[i]; a fused prologue computes it instead (kernels/src/fused/wgsl.rs)
fn load_z(i: u32) -> T { return z[i]; }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = flat_id(wid, nwg, lid);
    if (r >= param(0)) { return; }
    let n = param(1);
    let base = param(2) + r * n;
    let ms = row_max_sum(base, n);
    for (var j = 0u; j < n; j = j + 1u) {
        out[r * n + j] = row_prob(load_z(base + j), ms);
    }
}
