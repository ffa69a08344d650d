// X = A^-1 B from the LU factors: one thread per (matrix, right-hand-side column), in
// place in x (B on entry; contiguous [batch, n, nrhs]). Phase 0 applies the row swaps,
// phase 1 runs forward substitution (unit lower L) over rows i_begin..i_end, phase 2 back
// substitution (U) over rows n-1-i for i in i_begin..i_end. The launcher splits the rows
// over dispatches so no invocation exceeds lavapipe's 65,535 loop iterations.
// params: SolveParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = flat_id(wid, nwg, lid);
    let n = p_n();
    let r = p_nrhs();
    if (t >= r * p_batch()) { return; }
    let b = t / r;
    let j = t % r;
    let a0 = b * n * n;
    let x0 = b * n * r + j;
    let phase = p_phase();
    if (phase == 0u) {
        for (var k = 0u; k < n; k = k + 1u) {
            let p = piv[b * n + k];
            if (p != k) {
                let tmp = x[x0 + k * r];
                x[x0 + k * r] = x[x0 + p * r];
                x[x0 + p * r] = tmp;
            }
        }
        return;
    }
    for (var s = p_i_begin(); s < p_i_end(); s = s + 1u) {
        if (phase == 1u) {
            let i = s;
            var acc = x[x0 + i * r];
            for (var k = 0u; k < i; k = k + 1u) {
                acc = acc - lu[a0 + i * n + k] * x[x0 + k * r];
            }
            x[x0 + i * r] = acc;
        } else {
            let i = n - 1u - s;
            var acc = x[x0 + i * r];
            for (var k = i + 1u; k < n; k = k + 1u) {
                acc = acc - lu[a0 + i * n + k] * x[x0 + k * r];
            }
            x[x0 + i * r] = acc / lu[a0 + i * n + i];
        }
    }
}
