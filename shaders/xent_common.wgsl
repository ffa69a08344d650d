// Shared by the softmax cross-entropy kernels (which declare `z`).

// log(sum_j exp(z[base + j])) over `n` values, with the max subtracted first (stable).
fn row_logsumexp(base: u32, n: u32) -> T {
    var m = neg_inf();
    for (var j = 0u; j < n; j = j + 1u) { m = max(m, z[base + j]); }
    if (m == neg_inf()) { return m; }
    var s = T(0);
    for (var j = 0u; j < n; j = j + 1u) { s = s + exp(z[base + j] - m); }
    return m + log(s);
}
