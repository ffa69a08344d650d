// Dtype conversion of a strided input: out[i] = D(x[view(i)]). The header defines S and D.
// params: [numel, rank, contiguous, 0, shape[rank], x_off, x_strides[rank]]
@group(0) @binding(0) var<storage, read> x: array<S>;
@group(0) @binding(1) var<storage, read_write> out: array<D>;
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
    out[i] = D(x[xi]);
}
