// Reduction of contiguous rows read as vec4, one thread per row (row length and offset are
// multiples of 4): for CPU adapters, where a workgroup's closing tree costs more than the
// row itself. Fixed order: deterministic.
// params: ReduceVec4Params (nchunks 1, chunk_len = inner; in elements)
// bindings and load_x4: reduce_vec4_io.wgsl (standalone) or the fused prologue

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = flat_id(wid, nwg, lid);
    if (row >= p_outer()) { return; }
    let quads = p_inner() / 4u;
    let base = p_off() / 4u + row * quads;
    var v = vec4<T>(reduce_identity());
    for (var q = 0u; q < quads; q = q + 1u) { v = combine_quad(v, load_x4(base + q)); }
    out[row] = reduce_combine(reduce_combine(v.x, v.y), reduce_combine(v.z, v.w));
}
