// The adjoint of im2col, as a gather (deterministic, no atomics): each image element sums
// the column entries that copied it. cols is a strided view of [C*KH*KW, B, OH*OW]
// given by its strides in (b, r, l) order.
// params: ConvParams (column strides [batch, row, location])

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let e = flat_id(wid, nwg, lid);
    if (e >= p_numel()) { return; }
    let C = p_channels(); let H = p_height(); let W = p_width();
    let KH = p_kernel_h(); let KW = p_kernel_w(); let S = p_stride(); let P = p_padding();
    let OH = p_out_h(); let OW = p_out_w();
    let w = e % W;
    let h = (e / W) % H;
    let c = (e / (W * H)) % C;
    let b = e / (W * H * C);
    var acc = T(0);
    for (var i = 0u; i < KH; i = i + 1u) {
        let hp = h + P;
        if (hp < i || (hp - i) % S != 0u) { continue; }
        let oh = (hp - i) / S;
        if (oh >= OH) { continue; }
        for (var j = 0u; j < KW; j = j + 1u) {
            let wp = w + P;
            if (wp < j || (wp - j) % S != 0u) { continue; }
            let ow = (wp - j) / S;
            if (ow >= OW) { continue; }
            let r = (c * KH + i) * KW + j;
            acc = acc + cols[p_off() + b * p_strides(0u) + r * p_strides(1u) + (oh * OW + ow) * p_strides(2u)];
        }
    }
    out[e] = acc;
}
