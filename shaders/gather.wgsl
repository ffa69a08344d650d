// out[..., j, ...] = x[..., idx[..., j, ...], ...] along `axis` (torch.gather): out has idx's shape.
// params: [numel, rank, axis, dim_size, shape_out[rank], x_off, x_strides[rank], idx_off, idx_strides[rank]]
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
    let k = idx[strided_offset(i, rank, 4u, i_at + 1u, param(i_at))];
    let ok = k < param(3);
    var rem = i;
    var off = param(x_at);
    var d = rank;
    loop {
        if (d == 0u) { break; }
        d = d - 1u;
        let size = param(4u + d);
        var coord = rem % size;
        rem = rem / size;
        if (d == axis) { coord = k; }
        off = off + coord * param(x_at + 1u + d);
    }
    out[i] = select(nan_value(), x[select(0u, off, ok)], ok);
}
