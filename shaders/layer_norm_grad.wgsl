// The input gradient of layer / RMS normalization over contiguous rows, one thread per
// row: with a = g * w (w optional), xh = (x - mu) r and J = r (I - c/n 11^T - xh xh^T / n)
// the (symmetric) Jacobian of the normalization (c = 1 centered, 0 for RMS):
// out[r, :] = J a = r (a - c mean(a) - xh mean(a xh)).
// params: NormParams (the third buffer: the cotangent g)

fn cot(gb: u32, j: u32) -> T {
    var a = g[gb + j];
    if (norm_has_weight()) { a = a * w[p_w_off() + j]; }
    return a;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = flat_id(wid, nwg, lid);
    if (r >= p_rows()) { return; }
    let n = p_n();
    let base = p_x_off() + r * n;
    let gb = p_third_off() + r * n;
    let st = row_stats(base, n);
    var abar = T(0);
    var axh = T(0);
    for (var j = 0u; j < n; j = j + 1u) {
        let a = cot(gb, j);
        abar = abar + a;
        axh = axh + a * (x[base + j] - st.x) * st.y;
    }
    abar = select(T(0), abar / T(n), norm_centered());
    axh = axh / T(n);
    for (var j = 0u; j < n; j = j + 1u) {
        let xh = (x[base + j] - st.x) * st.y;
        out[r * n + j] = st.y * (cot(gb, j) - abar - xh * axh);
    }
}
