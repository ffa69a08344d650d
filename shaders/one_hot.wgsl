// out[i, c] = (idx[i] == c) ? 1 : 0 for strided idx of n elements, out [n, classes].
// params: OneHotParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p_numel()) { return; }
    let rank = p_rank();
    let classes = p_classes();
    let k = idx[strided_offset(i / classes, rank, P_SHAPE, P_IDX_STRIDES, p_idx_off())];
    out[i] = select(T(0), T(1), k == i % classes);
}
