// Shared by the softmax kernels (softmax_rows, softmax_vjp, xent_loss, xent_grad; they
// declare `z` and `load_z`, which a fused prologue replaces).

// (m, s) of the `n` values at z[base..]: their max m (0 if it is infinite, so that rows
// of -inf give exp(-inf) = 0, not NaN) and s = sum_j exp(z_j - m). Results are formed
// relative to m (exp(z - m) / s, log(s) - (z - m)): subtracting a rounded logsumexp
// from logits of 1e4 would lose digits.
fn row_max_sum(base: u32, n: u32) -> vec2<T> {
    var m = neg_inf();
    for (var j = 0u; j < n; j = j + 1u) { m = max(m, load_z(base + j)); }
    if (m == neg_inf() || m == -neg_inf()) { m = T(0); }
    var s = T(0);
    for (var j = 0u; j < n; j = j + 1u) { s = s + exp(load_z(base + j) - m); }
    return vec2<T>(m, s);
}

// softmax probability of the value zj in a row whose row_max_sum is ms.
fn row_prob(zj: T, ms: vec2<T>) -> T {
    return exp(zj - ms.x) / ms.y;
}
