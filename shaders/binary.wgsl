// Elementwise map of two strided, broadcast inputs (stored as ST, computed as T) (stride 0 on broadcast dims).
// params: [numel, rank, contiguous, 0, shape[rank], a_off, a_strides[rank], b_off, b_strides[rank]]
@group(0) @binding(0) var<storage, read> a: array<ST>;
@group(0) @binding(1) var<storage, read> b: array<ST>;
@group(0) @binding(2) var<storage, read_write> out: array<ST>;
@group(0) @binding(3) var<storage, read> params: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_id(wid, nwg, lid);
    if (i >= params[0]) { return; }
    let rank = params[1];
    let a_at = 4u + rank;
    let b_at = a_at + 1u + rank;
    var ai = params[a_at] + i;
    var bi = params[b_at] + i;
    if (params[2] == 0u) {
        ai = strided_offset(i, rank, 4u, a_at + 1u, params[a_at]);
        bi = strided_offset(i, rank, 4u, b_at + 1u, params[b_at]);
    }
    out[i] = ST(binary_op(T(a[ai]), T(b[bi])));
}
