// Strided copy of 32-bit words (any 4-byte dtype): dst[view_d(i)] = src[view_s(i)].
// Serves `contiguous`, `cat` (each input into a slice of the output) and raw copies.
// Grid-stride over runs of RUN elements: offsets are decomposed (integer divisions) once
// per run and stepped along the last two dims after that (Walk in common.wgsl).
// params: CopyParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let numel = p_numel();
    let rank = p_rank();
    let first = flat_id(wid, nwg, lid);
    if (rank == 0u) {
        if (first == 0u && numel == 1u) { dst[p_dst_off()] = src[p_src_off()]; }
        return;
    }
    let ss = stride_back(P_SRC_STRIDES, rank, 1u);
    let ss2 = stride_back(P_SRC_STRIDES, rank, 2u);
    let ds = stride_back(P_DST_STRIDES, rank, 1u);
    let ds2 = stride_back(P_DST_STRIDES, rank, 2u);
    let runs = (numel + RUN - 1u) / RUN;
    let span = stride_range(wid, nwg, lid, runs);
    for (var q = span.x; q < span.y; q = q + span.z) {
        let i0 = q * RUN;
        let end = min(i0 + RUN, numel);
        var i = i0;
        loop {
            if (i >= end) { break; }
            // decomposed once per block of the last two dims (see binary.wgsl)
            var si = strided_offset(i, rank, P_SHAPE, P_SRC_STRIDES, p_src_off());
            var di = strided_offset(i, rank, P_SHAPE, P_DST_STRIDES, p_dst_off());
            var w = walk_start(i, rank, P_SHAPE);
            let stop = min(end, i + walk_left(w));
            for (; i < stop; i = i + 1u) {
                dst[di] = src[si];
                let moved = walk_next(&w);
                si = walk_offset(si, moved, w, ss, ss2);
                di = walk_offset(di, moved, w, ds, ds2);
            }
        }
    }
}
