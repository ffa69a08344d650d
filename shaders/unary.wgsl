// Elementwise map of one strided input (stored as ST, computed as T): out[i] = unary_op(x[view(i)], scalar).
// params: [numel, rank, contiguous, scalar_bits, shape[rank], x_off, x_strides[rank]]
@group(0) @binding(0) var<storage, read> x: array<ST>;
@group(0) @binding(1) var<storage, read_write> out: array<ST>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= params[0]) { return; }
    let rank = params[1];
    let x_off = params[4u + rank];
    var xi = x_off + i;
    if (params[2] == 0u) { xi = strided_offset(i, rank, 4u, 5u + rank, x_off); }
    out[i] = ST(unary_op(T(x[xi]), T(bitcast<f32>(params[3]))));
}
