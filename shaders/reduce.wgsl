// Reduction of the last `inner` elements of a strided view [outer..., inner...]
// (the launcher permutes the reduced axes to the end). Workgroup g reduces chunk
// g % nchunks of row g / nchunks; a second pass over [outer, nchunks] finishes.
// Every element is visited in a fixed order and combined by a fixed tree: deterministic.
// params: ReduceParams
// bindings and load_x: reduce_io.wgsl (standalone) or the fused prologue

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.y * nwg.x + wid.x;
    let nchunks = p_nchunks();
    if (g >= p_outer() * nchunks) { return; }
    let inner = p_inner();
    let chunk_len = p_chunk_len();
    let rank = p_rank();
    let off = p_off();
    let mode = p_mode();
    let c = chunk_of(g, nchunks, inner, chunk_len);
    let row = c.x;
    let start = c.y;
    let end = c.z;
    var a = reduce_identity();
    if (mode == 1u) {
        // four consecutive elements per step (fixed order: still deterministic)
        let base = off + row * inner;
        var r = start + 4u * lid;
        for (; r + 3u < end; r = r + 4u * WG) {
            a = reduce_combine(a, load_x(base + r));
            a = reduce_combine(a, load_x(base + r + 1u));
            a = reduce_combine(a, load_x(base + r + 2u));
            a = reduce_combine(a, load_x(base + r + 3u));
        }
        // the last, partial quad (if this thread owns it)
        let q_end = min(end, r + 4u);
        for (; r < q_end; r = r + 1u) {
            a = reduce_combine(a, load_x(base + r));
        }
    } else if (mode == 2u) {
        let si = p_elem_stride();
        let base = off + row * p_row_stride();
        let span = lane_range(lid, start, end);
        for (var r = span.x; r < span.y; r = r + span.z) {
            a = reduce_combine(a, load_x(base + r * si));
        }
    } else {
        let span = lane_range(lid, start, end);
        for (var r = span.x; r < span.y; r = r + span.z) {
            let lin = row * inner + r;
            a = reduce_combine(a, load_x(strided_offset(lin, rank, P_SHAPE, P_STRIDES, off)));
        }
    }
    let total = workgroup_combine(lid, a);
    if (lid == 0u) { out[g] = total; }
}
