// Shared by the workgroup reductions (reduce, reduce_vec4): the fixed tree over the WG
// partial results (deterministic) and the chunk of a row each workgroup owns.
var<workgroup> acc: array<T, WG>;

// Combine every invocation's `a` (call from uniform control flow); all get the result.
fn workgroup_combine(lid: u32, a: T) -> T {
    acc[lid] = a;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) { acc[lid] = reduce_combine(acc[lid], acc[lid + s]); }
        workgroupBarrier();
    }
    return acc[0];
}

// Workgroup g reduces chunk g % nchunks of row g / nchunks: (row, start, end) in elements.
fn chunk_of(g: u32, nchunks: u32, inner: u32, chunk_len: u32) -> vec3<u32> {
    let start = (g % nchunks) * chunk_len;
    return vec3<u32>(g / nchunks, start, min(inner, start + chunk_len));
}
