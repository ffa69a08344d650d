// In-place Cholesky A = L L^T (lower), one workgroup per matrix (right-looking).
// l holds the contiguous matrices on entry and L, with zeros above the diagonal, on exit;
// info[b] is 0, or k + 1 for the first non-positive (or NaN) pivot: not positive definite.
// params: FactorParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let b = wid.y * nwg.x + wid.x;
    let n = p_n();
    if (b >= p_batch()) { return; }
    let base = b * n * n;
    var bad = info[b];
    workgroupBarrier();
    for (var k = p_k_begin(); k < p_k_end(); k = k + 1u) {
        let a = l[base + k * n + k];
        if (!(a > T(0)) && bad == 0u) { bad = k + 1u; }
        let d = sqrt(a);
        storageBarrier();
        workgroupBarrier();
        for (var i = k + 1u + lid; i < n; i = i + WG) {
            l[base + i * n + k] = l[base + i * n + k] / d;
        }
        storageBarrier();
        workgroupBarrier();
        if (lid == 0u) { l[base + k * n + k] = d; }
        // trailing lower triangle: (i, j) with k < j <= i < n, enumerated row by row
        let m = n - k - 1u;
        for (var e = lid; e < m * m; e = e + WG) {
            let i = k + 1u + e / m;
            let j = k + 1u + e % m;
            if (j <= i) {
                l[base + i * n + j] = l[base + i * n + j] - l[base + i * n + k] * l[base + j * n + k];
            }
        }
        storageBarrier();
        workgroupBarrier();
    }
    if (p_k_end() == n) {
        for (var e = lid; e < n * n; e = e + WG) {
            if (e % n > e / n) { l[base + e] = T(0); }
        }
    }
    if (lid == 0u) { info[b] = bad; }
}
