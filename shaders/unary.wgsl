// Elementwise map of one strided input (stored as ST, computed as T): out[i] = unary_op(x[view(i)], scalar).
// params: MapParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // grid-stride over a bounded grid; contiguous inputs go four elements per step
    let numel = p_numel();
    let rank = p_rank();
    let x_off = p_x_off();
    let sc = T(bitcast<f32>(p_scalar()));
    let first = flat_id(wid, nwg, lid);
    if (p_contiguous() == 1u) {
        let quads = numel / 4u;
        let span = stride_range(wid, nwg, lid, quads);
        for (var q = span.x; q < span.y; q = q + span.z) {
            let i = 4u * q;
            out[i] = ST(unary_op(T(x[x_off + i]), sc));
            out[i + 1u] = ST(unary_op(T(x[x_off + i + 1u]), sc));
            out[i + 2u] = ST(unary_op(T(x[x_off + i + 2u]), sc));
            out[i + 3u] = ST(unary_op(T(x[x_off + i + 3u]), sc));
        }
        let i = 4u * quads + first;
        if (i < numel) { out[i] = ST(unary_op(T(x[x_off + i]), sc)); }
        return;
    }
    // strided: runs of RUN elements, offsets decomposed once per run, then stepped
    let sx = stride_back(P_X_STRIDES, rank, 1u);
    let sx2 = stride_back(P_X_STRIDES, rank, 2u);
    let runs = (numel + RUN - 1u) / RUN;
    let span = stride_range(wid, nwg, lid, runs);
    for (var q = span.x; q < span.y; q = q + span.z) {
        let i0 = q * RUN;
        let end = min(i0 + RUN, numel);
        var i = i0;
        loop {
            if (i >= end) { break; }
            // decomposed once per block of the last two dims (see binary.wgsl)
            var xi = strided_offset(i, rank, P_SHAPE, P_X_STRIDES, x_off);
            var w = walk_start(i, rank, P_SHAPE);
            let stop = min(end, i + walk_left(w));
            for (; i < stop; i = i + 1u) {
                out[i] = ST(unary_op(T(x[xi]), sc));
                xi = walk_offset(xi, walk_next(&w), w, sx, sx2);
            }
        }
    }
}
