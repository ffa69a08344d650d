// Mean softmax cross-entropy of contiguous logits z [B, C] against u32 labels [B], in one
// workgroup: thread t takes rows t, t + WG, ... (logsumexp with the row max subtracted),
// then a fixed tree: deterministic. loss_r = logsumexp(z_r) - z_r[label_r].
// Labels are bounds-checked on the host; a label >= C still reads no memory (NaN).
// params: XentParams
// the load of z[i]; a fused prologue computes it instead (kernels/src/fused/wgsl.rs)
fn load_z(i: u32) -> T { return z[i]; }

var<workgroup> acc: array<T, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let rows = p_b();
    let classes = p_c();
    var total = T(0);
    for (var r = lid; r < rows; r = r + WG) {
        let base = p_z_off() + r * classes;
        let ms = row_max_sum(base, classes);
        let y = labels[p_labels_off() + r];
        var picked = nan_value();
        if (y < classes) { picked = z[base + y]; }
        total = total + (log(ms.y) - (picked - ms.x));
    }
    acc[lid] = total;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) { acc[lid] = acc[lid] + acc[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) { out[0] = acc[0] / T(rows); }
}
