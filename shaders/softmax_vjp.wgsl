// The softmax VJP over contiguous rows, scaled, one thread per row:
// out[r, j] = c * p_j * (v[r, j] - sum_k p_k v[r, k]), p = softmax(z_r), c = k * g (g a
// device scalar at g_off, or 1 when g_off is 0xffffffff).
// params: SoftmaxVjpParams
// the load of z[i]; a fused prologue computes it instead (kernels/src/fused/wgsl.rs)
fn load_z(i: u32) -> T { return z[i]; }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = flat_id(wid, nwg, lid);
    if (r >= p_rows()) { return; }
    let n = p_n();
    let zb = p_z_off() + r * n;
    let vb = p_v_off() + r * n;
    var c = bitcast<f32>(p_k());
    if (p_g_off() != 0xffffffffu) { c = c * g[p_g_off()]; }
    let ms = row_max_sum(zb, n);
    var dot = T(0);
    for (var j = 0u; j < n; j = j + 1u) { dot = dot + row_prob(z[zb + j], ms) * v[vb + j]; }
    for (var j = 0u; j < n; j = j + 1u) {
        out[r * n + j] = c * row_prob(z[zb + j], ms) * (v[vb + j] - dot);
    }
}
