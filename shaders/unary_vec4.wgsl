// Contiguous f32 elementwise map read and written as vec4 (element count and offset are
// multiples of 4): on CPU adapters a vec4 load costs about what a scalar load does.
// params: UnaryVec4Params (x_off in quads)

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let quads = p_quads();
    let x0 = p_x_off();
    let sc = T(bitcast<f32>(p_scalar()));
    let span = stride_range(wid, nwg, lid, quads);
    for (var q = span.x; q < span.y; q = q + span.z) {
        let v = x[x0 + q];
        out[q] = vec4<f32>(unary_op(v.x, sc), unary_op(v.y, sc), unary_op(v.z, sc), unary_op(v.w, sc));
    }
}
