// Reduction of short rows: one thread per output row loops over its `inner` elements in
// order (deterministic). Used when rows are short and many, where a workgroup per row
// would idle most of its threads (e.g. 2x2 pooling windows).
// params: ReduceParams
// bindings and load_x: reduce_io.wgsl (standalone) or the fused prologue

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = flat_id(wid, nwg, lid);
    if (row >= p_outer()) { return; }
    let inner = p_inner();
    let rank = p_rank();
    let off = p_off();
    let mode = p_mode();
    var a = reduce_identity();
    if (mode == 2u) {
        // two-level strides (e.g. a column): no per-element index arithmetic
        let si = p_elem_stride();
        var xi = off + row * p_row_stride();
        for (var r = 0u; r < inner; r = r + 1u) {
            a = reduce_combine(a, load_x(xi));
            xi = xi + si;
        }
        out[row] = a;
        return;
    }
    if (mode == 1u) {
        for (var r = 0u; r < inner; r = r + 1u) {
            a = reduce_combine(a, load_x(off + row * inner + r));
        }
        out[row] = a;
        return;
    }
    // general strided: offsets decomposed once per block of the last two dims, then
    // stepped (Walk in common.wgsl), in the same element order
    let s1 = stride_back(P_STRIDES, rank, 1u);
    let s2 = stride_back(P_STRIDES, rank, 2u);
    var lin = row * inner;
    let end = lin + inner;
    loop {
        if (lin >= end) { break; }
        var xi = strided_offset(lin, rank, P_SHAPE, P_STRIDES, off);
        var w = walk_start(lin, rank, P_SHAPE);
        let stop = min(end, lin + walk_left(w));
        for (; lin < stop; lin = lin + 1u) {
            a = reduce_combine(a, load_x(xi));
            xi = walk_offset(xi, walk_next(&w), w, s1, s2);
        }
    }
    out[row] = a;
}
