// out = x.index_select(axis, idx) for strided x and 1-D idx. An index past the axis
// is never dereferenced: the element becomes NaN (the launcher checks bounds first).
// params: [numel, rank, axis, dim_size, shape_out[rank], x_off, x_strides[rank], idx_off, idx_stride]
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<T>;
@group(0) @binding(3) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= param(0)) { return; }
    let rank = param(1);
    let axis = param(2);
    let x_at = 4u + rank;
    let i_at = x_at + 1u + rank;
    var rem = i;
    var off = param(x_at);
    var ok = true;
    var d = rank;
    loop {
        if (d == 0u) { break; }
        d = d - 1u;
        let size = param(4u + d);
        var coord = rem % size;
        rem = rem / size;
        if (d == axis) {
            coord = idx[param(i_at) + coord * param(i_at + 1u)];
            ok = coord < param(3);
        }
        off = off + coord * param(x_at + 1u + d);
    }
    out[i] = select(nan_value(), x[select(0u, off, ok)], ok);
}
