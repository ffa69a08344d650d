// out[i] = cond[i] != 0 ? a[i] : b[i], all three strided and broadcast.
// params: [numel, rank, contiguous, 0, shape[rank], (off, strides[rank]) for cond, a, b]
@group(0) @binding(0) var<storage, read> cond: array<ST>;
@group(0) @binding(1) var<storage, read> a: array<ST>;
@group(0) @binding(2) var<storage, read> b: array<ST>;
@group(0) @binding(3) var<storage, read_write> out: array<ST>;
@group(0) @binding(4) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= param(0)) { return; }
    let rank = param(1);
    let c_at = 4u + rank;
    let a_at = c_at + 1u + rank;
    let b_at = a_at + 1u + rank;
    var ci = param(c_at) + i;
    var ai = param(a_at) + i;
    var bi = param(b_at) + i;
    if (param(2) == 0u) {
        ci = strided_offset(i, rank, 4u, c_at + 1u, param(c_at));
        ai = strided_offset(i, rank, 4u, a_at + 1u, param(a_at));
        bi = strided_offset(i, rank, 4u, b_at + 1u, param(b_at));
    }
    out[i] = select(b[bi], a[ai], cond[ci] != ST(0));
}
