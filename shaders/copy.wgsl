// Strided copy of 32-bit words (any 4-byte dtype): dst[view_d(i)] = src[view_s(i)].
// Serves `contiguous`, `cat` (each input into a slice of the output) and raw copies.
// params: [numel, rank, 0, 0, shape[rank], src_off, src_strides[rank], dst_off, dst_strides[rank]]
@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= param(0)) { return; }
    let rank = param(1);
    let s_at = 4u + rank;
    let d_at = s_at + 1u + rank;
    let si = strided_offset(i, rank, 4u, s_at + 1u, param(s_at));
    let di = strided_offset(i, rank, 4u, d_at + 1u, param(d_at));
    dst[di] = src[si];
}
