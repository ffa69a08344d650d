// In-place LU factorization with partial pivoting, P A = L U, one workgroup per matrix.
// lu holds the contiguous matrices on entry and L (unit lower, below the diagonal) and U
// on exit. piv[b*n + k] is the row swapped with row k at step k; info[b] is 0, or k + 1
// for the first exactly-zero pivot (singular); det_sign[b] is det(P) * sign(prod diag U).
// Steps k_begin..k_end run per dispatch (the launcher splits long factorizations: lavapipe
// caps one invocation at 65,535 loop iterations in total); info and det_sign carry the
// state between dispatches and must be 0 and 1 before the first.
// params: FactorParams

var<workgroup> best_v: array<T, WG>;
var<workgroup> best_i: array<u32, WG>;
var<workgroup> pivot_row: u32;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let b = wid.y * nwg.x + wid.x;
    let n = p_n();
    if (b >= p_batch()) { return; }
    let base = b * n * n;
    var s = det_sign[b];
    var first_zero = info[b];
    workgroupBarrier();
    for (var k = p_k_begin(); k < p_k_end(); k = k + 1u) {
        // pivot search: the largest |a[i, k]| for i >= k, first row on ties
        var bv = T(-1);
        var bi = k;
        for (var i = k + lid; i < n; i = i + WG) {
            let v = abs(lu[base + i * n + k]);
            if (v > bv) { bv = v; bi = i; }
        }
        best_v[lid] = bv;
        best_i[lid] = bi;
        workgroupBarrier();
        for (var w = WG / 2u; w > 0u; w = w >> 1u) {
            if (lid < w) {
                let ov = best_v[lid + w];
                let oi = best_i[lid + w];
                if (ov > best_v[lid] || (ov == best_v[lid] && oi < best_i[lid])) {
                    best_v[lid] = ov;
                    best_i[lid] = oi;
                }
            }
            workgroupBarrier();
        }
        if (lid == 0u) {
            pivot_row = best_i[0];
            piv[b * n + k] = best_i[0];
        }
        let p = workgroupUniformLoad(&pivot_row);
        if (p != k) {
            for (var j = lid; j < n; j = j + WG) {
                let t = lu[base + k * n + j];
                lu[base + k * n + j] = lu[base + p * n + j];
                lu[base + p * n + j] = t;
            }
            s = -s;
        }
        storageBarrier();
        workgroupBarrier();
        let d = lu[base + k * n + k];
        if (d == T(0)) {
            if (first_zero == 0u) { first_zero = k + 1u; }
        } else {
            for (var i = k + 1u + lid; i < n; i = i + WG) {
                lu[base + i * n + k] = lu[base + i * n + k] / d;
            }
        }
        if (d < T(0)) { s = -s; }
        if (d == T(0)) { s = T(0); }
        storageBarrier();
        workgroupBarrier();
        let m = n - k - 1u;
        if (d != T(0)) {
            for (var e = lid; e < m * m; e = e + WG) {
                let i = k + 1u + e / m;
                let j = k + 1u + e % m;
                lu[base + i * n + j] = lu[base + i * n + j] - lu[base + i * n + k] * lu[base + k * n + j];
            }
        }
        storageBarrier();
        workgroupBarrier();
    }
    if (lid == 0u) {
        info[b] = first_zero;
        det_sign[b] = s;
    }
}
