// Reduction of contiguous rows read as vec4 (row length, offset and chunk length are
// multiples of 4). Workgroup g reduces chunk g % nchunks of row g / nchunks; a second
// pass over [outer, nchunks] finishes. Fixed visiting order and tree: deterministic.
// params: ReduceVec4Params (in elements)
// bindings and load_x4: reduce_vec4_io.wgsl (standalone) or the fused prologue

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let g = wid.y * nwg.x + wid.x;
    let nchunks = p_nchunks();
    if (g >= p_outer() * nchunks) { return; }
    let inner = p_inner();
    let chunk_len = p_chunk_len();
    let c = chunk_of(g, nchunks, inner, chunk_len);
    let row = c.x;
    let start = c.y;
    let end = c.z;
    let base = (p_off() + row * inner) / 4u;
    var v = vec4<T>(reduce_identity());
    let span = lane_range(lid, start / 4u, end / 4u);
    for (var q = span.x; q < span.y; q = q + span.z) { v = combine_quad(v, load_x4(base + q)); }
    let total = workgroup_combine(lid, reduce_combine(reduce_combine(v.x, v.y), reduce_combine(v.z, v.w)));
    if (lid == 0u) { out[g] = total; }
}
