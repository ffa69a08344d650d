// Max over non-overlapping k x k windows of a strided image batch x [B, C, H, W] (stride
// k), one thread per output [B, C, H/k, W/k]; NaN wins (max_nan).
// params: PoolParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let o = flat_id(wid, nwg, lid);
    if (o >= p_numel_out()) { return; }
    let base = pool_window_base(o);
    let k = p_k();
    var m = neg_inf();
    for (var i = 0u; i < k; i = i + 1u) {
        for (var j = 0u; j < k; j = j + 1u) {
            m = max_nan(m, x[base + i * p_x_strides(2u) + j * p_x_strides(3u)]);
        }
    }
    out[o] = m;
}
