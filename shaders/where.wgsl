// out[i] = cond[i] != 0 ? a[i] : b[i], all three strided and broadcast.
// params: WhereParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p_numel()) { return; }
    let rank = p_rank();
    var ci = p_cond_off() + i;
    var ai = p_a_off() + i;
    var bi = p_b_off() + i;
    if (p_contiguous() == 0u) {
        ci = strided_offset(i, rank, P_SHAPE, P_COND_STRIDES, p_cond_off());
        ai = strided_offset(i, rank, P_SHAPE, P_A_STRIDES, p_a_off());
        bi = strided_offset(i, rank, P_SHAPE, P_B_STRIDES, p_b_off());
    }
    out[i] = select(b[bi], a[ai], cond[ci] != ST(0));
}
