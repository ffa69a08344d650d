// f16 storage to f32: out[i] = half at element offset view(i) of the packed input (two
// halves per u32 word, low half first).
// params: [numel, rank, contiguous, 0, shape[rank], x_off, x_strides[rank]]
@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= param(0)) { return; }
    let rank = param(1);
    let x_off = param(4u + rank);
    var xi = x_off + i;
    if (param(2) == 0u) { xi = strided_offset(i, rank, 4u, 5u + rank, x_off); }
    let pair = unpack2x16float(x[xi / 2u]);
    out[i] = select(pair.x, pair.y, (xi & 1u) == 1u);
}
