// out[..., j, ...] = x[..., idx[..., j, ...], ...] along `axis` (torch.gather): out has idx's shape.
// params: IndexParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p_numel()) { return; }
    let rank = p_rank();
    let axis = p_axis();
    let k = idx[strided_offset(i, rank, P_SHAPE, P_IDX_STRIDES, p_idx_off())];
    let ok = k < p_dim_size();
    var rem = i;
    var off = p_x_off();
    var d = rank;
    loop {
        if (d == 0u) { break; }
        d = d - 1u;
        let size = p_shape(d);
        var coord = rem % size;
        rem = rem / size;
        if (d == axis) { coord = k; }
        off = off + coord * p_x_strides(d);
    }
    out[i] = select(nan_value(), x[select(0u, off, ok)], ok);
}
