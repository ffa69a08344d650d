// Zero padding along one axis, in one launch (narrow's VJP, instead of fills and a cat):
// dst is [outer, full, inner], contiguous; the window [start, start + len) of its middle
// axis holds src [outer, len, inner] (contiguous from word src_off); the rest is 0.
// Moves 32-bit words (any 4-byte dtype).
// params: PadParams

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let numel = p_numel();
    let full = p_full();
    let inner = p_inner();
    let start = p_start();
    let len = p_len();
    let src_off = p_src_off();
    let span = stride_range(wid, nwg, lid, numel);
    for (var i = span.x; i < span.y; i = i + span.z) {
        let r = i % inner;
        let rest = i / inner;
        let a = rest % full;
        let o = rest / full;
        var v = 0u;
        if (a >= start && a < start + len) {
            v = src[src_off + (o * len + (a - start)) * inner + r];
        }
        dst[i] = v;
    }
}
