// f16 storage to f32: out[i] = half at element offset view(i) of the packed input (two
// halves per u32 word, low half first).
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
    let pair = unpack2x16float(x[xi / 2u]);
    out[i] = select(pair.x, pair.y, (xi & 1u) == 1u);
}
