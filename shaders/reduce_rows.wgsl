// Reduction of short rows: one thread per output row loops over its `inner` elements in
// order (deterministic). Used when rows are short and many, where a workgroup per row
// would idle most of its threads (e.g. 2x2 pooling windows).
// params: [outer, inner, 1, inner, rank, shape[rank], off, strides[rank], mode, (row stride, element stride if mode 2)]
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = flat_id(wid, nwg, lid);
    if (row >= param(0)) { return; }
    let inner = param(1);
    let rank = param(4);
    let off = param(5u + rank);
    let mode = param(6u + 2u * rank);
    var a = reduce_identity();
    if (mode == 2u) {
        // two-level strides (e.g. a column): no per-element index arithmetic
        let si = param(8u + 2u * rank);
        var xi = off + row * param(7u + 2u * rank);
        for (var r = 0u; r < inner; r = r + 1u) {
            a = reduce_combine(a, x[xi]);
            xi = xi + si;
        }
        out[row] = a;
        return;
    }
    for (var r = 0u; r < inner; r = r + 1u) {
        let lin = row * inner + r;
        var xi = off + lin;
        if (mode == 0u) { xi = strided_offset(lin, rank, 5u, 6u + rank, off); }
        a = reduce_combine(a, x[xi]);
    }
    out[row] = a;
}
