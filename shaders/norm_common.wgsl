// Shared by the row normalization kernels (layer_norm, layer_norm_grad), one thread per
// row of n values at x[base..]; params 0..7: [rows, n, x_off, w_off, b_off | g_off,
// flags, eps_bits]; flags: 1 = weight bound, 2 = bias bound, 4 = RMS (no centering).

fn norm_centered() -> bool { return (p_flags() & 4u) == 0u; }
fn norm_has_weight() -> bool { return (p_flags() & 1u) != 0u; }
fn norm_has_bias() -> bool { return (p_flags() & 2u) != 0u; }

// (mu, r) of a row: its mean (0 for RMS) and r = 1 / sqrt(mean((x - mu)^2) + eps),
// in two passes (the variance of the centered values, not E[x^2] - mu^2).
fn row_stats(base: u32, n: u32) -> vec2<T> {
    var mu = T(0);
    if (norm_centered()) {
        for (var j = 0u; j < n; j = j + 1u) { mu = mu + x[base + j]; }
        mu = mu / T(n);
    }
    var v = T(0);
    for (var j = 0u; j < n; j = j + 1u) { let d = x[base + j] - mu; v = v + d * d; }
    v = v / T(n);
    return vec2<T>(mu, T(1) / sqrt(v + bitcast<f32>(p_eps())));
}
