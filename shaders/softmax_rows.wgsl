// softmax of contiguous rows z [outer, n], one thread per row (max subtracted first):
// out[r, j] = exp(z[r, j] - m_r) / sum_k exp(z[r, k] - m_r).
// params: RowsParams
// bindings and load_z: softmax_rows_io.wgsl (standalone) or the fused prologue

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = flat_id(wid, nwg, lid);
    if (r >= p_outer()) { return; }
    let n = p_n();
    let base = p_z_off() + r * n;
    let ms = row_max_sum(base, n);
    for (var j = 0u; j < n; j = j + 1u) {
        out[r * n + j] = row_prob(load_z(base + j), ms);
    }
}
