// argmax / argmin of each row of a strided view [outer..., inner...]: one workgroup per row.
// Ties go to the first index and NaN counts as the extreme value (PyTorch semantics).
// params: ReduceParams

var<workgroup> acc_v: array<T, WG>;
var<workgroup> acc_i: array<u32, WG>;

// Does candidate (vb, ib) beat the current best (va, ia)?
fn beats(va: T, ia: u32, vb: T, ib: u32) -> bool {
    if (ib == 0xffffffffu) { return false; }
    if (ia == 0xffffffffu) { return true; }
    let na = is_nan(va);
    let nb = is_nan(vb);
    if (na || nb) { return (nb && !na) || (na && nb && ib < ia); }
    if (vb == va) { return ib < ia; }
    return arg_better(vb, va);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p_outer()) { return; }
    let inner = p_inner();
    let rank = p_rank();
    let off = p_off();
    let contiguous = p_mode() == 1u;
    var bv = T(0);
    var bi = 0xffffffffu;
    for (var r = lid; r < inner; r = r + WG) {
        let lin = row * inner + r;
        var xi = off + lin;
        if (!contiguous) { xi = strided_offset(lin, rank, P_SHAPE, P_STRIDES, off); }
        let v = x[xi];
        if (beats(bv, bi, v, r)) { bv = v; bi = r; }
    }
    acc_v[lid] = bv;
    acc_i[lid] = bi;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s && beats(acc_v[lid], acc_i[lid], acc_v[lid + s], acc_i[lid + s])) {
            acc_v[lid] = acc_v[lid + s];
            acc_i[lid] = acc_i[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) { out[row] = acc_i[0]; }
}
