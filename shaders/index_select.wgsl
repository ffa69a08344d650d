// out = x.index_select(axis, idx) for strided x and 1-D idx. An index past the axis
// is never dereferenced: the element becomes NaN (the launcher checks bounds first).
// params: IndexParams (the indices a vector: idx_strides[0])

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= p_numel()) { return; }
    let rank = p_rank();
    let axis = p_axis();
    var rem = i;
    var off = p_x_off();
    var ok = true;
    var d = rank;
    loop {
        if (d == 0u) { break; }
        d = d - 1u;
        let size = p_shape(d);
        var coord = rem % size;
        rem = rem / size;
        if (d == axis) {
            coord = idx[p_idx_off() + coord * p_idx_strides(0u)];
            ok = coord < p_dim_size();
        }
        off = off + coord * p_x_strides(d);
    }
    out[i] = select(nan_value(), x[select(0u, off, ok)], ok);
}
