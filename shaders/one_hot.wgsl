// out[i, c] = (idx[i] == c) ? 1 : 0 for strided idx of n elements, out [n, classes].
// params: [numel, rank, classes, 0, idx_shape[rank], idx_off, idx_strides[rank]]
@group(0) @binding(0) var<storage, read> idx: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<storage, read> params: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= params[0]) { return; }
    let rank = params[1];
    let classes = params[2];
    let k = idx[strided_offset(i / classes, rank, 4u, 5u + rank, params[4u + rank])];
    out[i] = select(T(0), T(1), k == i % classes);
}
