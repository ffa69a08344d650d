// Elementwise map of two strided, broadcast inputs (stored as ST, computed as T) (stride 0 on broadcast dims).
// params: ZipParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // grid-stride over a bounded grid (stride_range: interleaved or contiguous runs)
    let numel = p_numel();
    let rank = p_rank();
    let contiguous = p_contiguous() == 1u;
    let a0 = p_a_off();
    let b0 = p_b_off();
    let first = flat_id(wid, nwg, lid);
    if (contiguous) {
        // four consecutive elements per step: fewer loop trips per element
        let quads = numel / 4u;
        let span = stride_range(wid, nwg, lid, quads);
        for (var q = span.x; q < span.y; q = q + span.z) {
            let i = 4u * q;
            out[i] = ST(binary_op(T(a[a0 + i]), T(b[b0 + i])));
            out[i + 1u] = ST(binary_op(T(a[a0 + i + 1u]), T(b[b0 + i + 1u])));
            out[i + 2u] = ST(binary_op(T(a[a0 + i + 2u]), T(b[b0 + i + 2u])));
            out[i + 3u] = ST(binary_op(T(a[a0 + i + 3u]), T(b[b0 + i + 3u])));
        }
        let i = 4u * quads + first;
        if (i < numel) { out[i] = ST(binary_op(T(a[a0 + i]), T(b[b0 + i]))); }
        return;
    }
    // strided: runs of RUN consecutive elements, offsets decomposed once per run and
    // stepped along the last two dims after that (see Walk in common.wgsl)
    let sa = stride_back(P_A_STRIDES, rank, 1u);
    let sa2 = stride_back(P_A_STRIDES, rank, 2u);
    let sb = stride_back(P_B_STRIDES, rank, 1u);
    let sb2 = stride_back(P_B_STRIDES, rank, 2u);
    let runs = (numel + RUN - 1u) / RUN;
    let span = stride_range(wid, nwg, lid, runs);
    for (var q = span.x; q < span.y; q = q + span.z) {
        let i0 = q * RUN;
        let end = min(i0 + RUN, numel);
        var i = i0;
        loop {
            if (i >= end) { break; }
            // decompose once per block of the last two dims, then only step (a branch
            // around the decomposition would still run it, masked, on SIMD CPUs)
            var ai = strided_offset(i, rank, P_SHAPE, P_A_STRIDES, a0);
            var bi = strided_offset(i, rank, P_SHAPE, P_B_STRIDES, b0);
            var w = walk_start(i, rank, P_SHAPE);
            let stop = min(end, i + walk_left(w));
            for (; i < stop; i = i + 1u) {
                out[i] = ST(binary_op(T(a[ai]), T(b[bi])));
                let moved = walk_next(&w);
                ai = walk_offset(ai, moved, w, sa, sa2);
                bi = walk_offset(bi, moved, w, sb, sb2);
            }
        }
    }
}
