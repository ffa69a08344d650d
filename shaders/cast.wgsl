// Dtype conversion of a strided input: out[i] = D(x[view(i)]). The header defines S and D.
// params: MapParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p_numel()) { return; }
    let rank = p_rank();
    let x_off = p_x_off();
    var xi = x_off + i;
    if (p_contiguous() == 0u) { xi = strided_offset(i, rank, P_SHAPE, P_X_STRIDES, x_off); }
    out[i] = D(x[xi]);
}
