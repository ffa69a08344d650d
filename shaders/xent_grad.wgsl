// Gradient of the mean softmax cross-entropy times the scalar cotangent g, one thread per
// row: out[r, j] = (softmax(z_r)_j - [j == label_r]) * g / B. g stays on the device.
// params: XentParams
// the load of z[i]; a fused prologue computes it instead (kernels/src/fused/wgsl.rs)
fn load_z(i: u32) -> T { return z[i]; }

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let r = flat_id(wid, nwg, lid);
    let rows = p_b();
    if (r >= rows) { return; }
    let classes = p_c();
    let base = p_z_off() + r * classes;
    let ms = row_max_sum(base, classes);
    let y = labels[p_labels_off() + r];
    let scale = g[p_g_off()] / T(rows);
    for (var j = 0u; j < classes; j = j + 1u) {
        let p = row_prob(z[base + j], ms);
        out[r * classes + j] = (p - select(T(0), T(1), j == y)) * scale;
    }
}
