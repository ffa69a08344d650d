// Gradient of max_pool: dx[b, c, h, w] = g[window] * [x == max] / (ties in the window),
// one thread per window writing its k x k gradients (ties split evenly; a window holding
// NaN gives NaN, as 0 / 0). x strided [B, C, H, W], the pooled max and g contiguous
// [B, C, H/k, W/k] from their offsets; dx contiguous [B, C, H, W].
// params: PoolParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let o = flat_id(wid, nwg, lid);
    if (o >= p_numel_out()) { return; }
    let k = p_k();
    let OH = p_out_h();
    let OW = p_out_w();
    let W = OW * k;
    let base = pool_window_base(o);
    let m = pooled[p_pooled_off() + o];
    var ties = 0u;
    for (var i = 0u; i < k; i = i + 1u) {
        for (var j = 0u; j < k; j = j + 1u) {
            ties = ties + select(0u, 1u, x[base + i * p_x_strides(2u) + j * p_x_strides(3u)] == m);
        }
    }
    let share = g[p_g_off() + o] / T(ties);
    // the window's first element in dx: row (bc, oh) * k, column ow * k
    let ow = o % OW;
    let row0 = (o / OW) * k;
    for (var i = 0u; i < k; i = i + 1u) {
        for (var j = 0u; j < k; j = j + 1u) {
            let hit = x[base + i * p_x_strides(2u) + j * p_x_strides(3u)] == m;
            out[(row0 + i) * W + ow * k + j] = select(T(0), T(1), hit) * share;
        }
    }
}
