// Layer / RMS normalization over contiguous rows x [rows, n], one thread per row:
// out[r, j] = (x[r, j] - mu_r) * r_r * w[j] + b[j] (weight and bias optional).
// params: NormParams (the third buffer: the bias)

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = flat_id(wid, nwg, lid);
    if (r >= p_rows()) { return; }
    let n = p_n();
    let base = p_x_off() + r * n;
    let st = row_stats(base, n);
    for (var j = 0u; j < n; j = j + 1u) {
        var y = (x[base + j] - st.x) * st.y;
        if (norm_has_weight()) { y = y * w[p_w_off() + j]; }
        if (norm_has_bias()) { y = y + b[p_third_off() + j]; }
        out[r * n + j] = y;
    }
}
