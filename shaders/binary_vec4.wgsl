// f32 elementwise map of two inputs read and written as vec4. Each input is either
// contiguous like the output (mode 0), a contiguous block repeated along the leading dims
// (mode 1, e.g. a bias row: quad q reads q % period), or one broadcast element (mode 2).
// The modes A_MODE and B_MODE are constants of the generated header (one pipeline each).
// params: BinaryVec4Params
// (offsets in quads for modes 0 and 1, in elements for mode 2; periods in quads)

fn operand_a(q: u32, mode: u32, off: u32, period: u32) -> vec4<f32> {
    if (mode == 0u) { return a[off + q]; }
    if (mode == 1u) { return a[off + q % period]; }
    return vec4<f32>(a[off / 4u][off % 4u]);
}

fn operand_b(q: u32, mode: u32, off: u32, period: u32) -> vec4<f32> {
    if (mode == 0u) { return b[off + q]; }
    if (mode == 1u) { return b[off + q % period]; }
    return vec4<f32>(b[off / 4u][off % 4u]);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let quads = p_quads();
    let ao = p_a_off();
    let ap = p_a_period();
    let bo = p_b_off();
    let bp = p_b_period();
    let span = stride_range(wid, nwg, lid, quads);
    for (var q = span.x; q < span.y; q = q + span.z) {
        let x = operand_a(q, A_MODE, ao, ap);
        let y = operand_b(q, B_MODE, bo, bp);
        out[q] = vec4<f32>(binary_op(x.x, y.x), binary_op(x.y, y.y), binary_op(x.z, y.z), binary_op(x.w, y.w));
    }
}
