// f32 to f16 storage: word w of the output packs elements 2w and 2w + 1 of the strided f32
// view (the high half of a last odd word is 0).
// params: MapParams

fn element(i: u32) -> f32 {
    if (i >= p_numel()) { return 0.0; }
    let rank = p_rank();
    let x_off = p_x_off();
    if (p_contiguous() == 1u) { return x[x_off + i]; }
    return x[strided_offset(i, rank, P_SHAPE, P_X_STRIDES, x_off)];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let w = flat_id(wid, nwg, lid);
    if (2u * w >= p_numel()) { return; }
    out[w] = pack2x16float(vec2<f32>(element(2u * w), element(2u * w + 1u)));
}
