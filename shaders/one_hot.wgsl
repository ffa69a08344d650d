// out[i, c] = (idx[i] == c) ? 1 : 0 for strided idx of n elements, out [n, classes].
// params: [numel, rank, classes, 0, idx_shape[rank], idx_off, idx_strides[rank]]
@group(0) @binding(0) var<storage, read> idx: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= param(0)) { return; }
    let rank = param(1);
    let classes = param(2);
    let k = idx[strided_offset(i / classes, rank, 4u, 5u + rank, param(4u + rank))];
    out[i] = select(T(0), T(1), k == i % classes);
}
