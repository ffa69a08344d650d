// Gradient of max_pool: dx[b, c, h, w] = g[window] * [x == max] / (ties in the window),
// one thread per window writing its k x k gradients (ties split evenly; a window holding
// NaN gives NaN, as 0 / 0). x strided [B, C, H, W], the pooled max and g contiguous
// [B, C, H/k, W/k] from their offsets; dx contiguous [B, C, H, W].
// params: [numel_out, C, OH, OW, k, x_off, xs_b, xs_c, xs_h, xs_w, numel_in, pooled_off, g_off]
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> pooled: array<T>;
@group(0) @binding(2) var<storage, read> g: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;
@group(0) @binding(4) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let o = flat_id(wid, nwg, lid);
    if (o >= param(0)) { return; }
    let k = param(4);
    let OH = param(2);
    let OW = param(3);
    let W = OW * k;
    let base = pool_window_base(o);
    let m = pooled[param(11) + o];
    var ties = 0u;
    for (var i = 0u; i < k; i = i + 1u) {
        for (var j = 0u; j < k; j = j + 1u) {
            ties = ties + select(0u, 1u, x[base + i * param(8) + j * param(9)] == m);
        }
    }
    let share = g[param(12) + o] / T(ties);
    // the window's first element in dx: row (bc, oh) * k, column ow * k
    let ow = o % OW;
    let row0 = (o / OW) * k;
    for (var i = 0u; i < k; i = i + 1u) {
        for (var j = 0u; j < k; j = j + 1u) {
            let hit = x[base + i * param(8) + j * param(9)] == m;
            out[(row0 + i) * W + ow * k + j] = select(T(0), T(1), hit) * share;
        }
    }
}
