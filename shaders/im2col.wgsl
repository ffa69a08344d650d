// Patches of a strided image batch x [B, C, H, W] as columns [R, B, L] (R = C*KH*KW,
// L = OH*OW; batch inside the rows so a convolution is one matmul of K = R):
// out[(c*KH + i)*KW + j, b, oh*OW + ow] = x[b, c, oh*S + i - P, ow*S + j - P] (0 outside).
// params: ConvParams (image strides [b, c, h, w])

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // grid-stride over runs of RUN outputs: (r, b, oh, ow) decomposed (integer divisions)
    // once per run and stepped along ow / oh after that
    let n = p_numel();
    let C = p_channels(); let H = p_height(); let W = p_width();
    let KH = p_kernel_h(); let KW = p_kernel_w(); let S = p_stride(); let P = p_padding();
    let OH = p_out_h(); let OW = p_out_w();
    let L = OH * OW;
    let runs = (n + RUN - 1u) / RUN;
    let span = stride_range(wid, nwg, lid, runs);
    for (var q = span.x; q < span.y; q = q + span.z) {
        let e0 = q * RUN;
        let end = min(e0 + RUN, n);
        var l = e0 % L;
        var b = (e0 / L) % p_batch();
        var r = e0 / (L * p_batch());
        var oh = l / OW;
        var ow = l % OW;
        for (var e = e0; e < end; e = e + 1u) {
            let c = r / (KH * KW);
            let i = (r / KW) % KH;
            let j = r % KW;
            let h = i32(oh * S + i) - i32(P);
            let w = i32(ow * S + j) - i32(P);
            var v = T(0);
            if (h >= 0 && h < i32(H) && w >= 0 && w < i32(W)) {
                v = x[p_off() + b * p_strides(0u) + c * p_strides(1u) + u32(h) * p_strides(2u) + u32(w) * p_strides(3u)];
            }
            out[e] = v;
            // next output: ow, then oh, then (b, r)
            ow = ow + 1u;
            if (ow == OW) {
                ow = 0u;
                oh = oh + 1u;
                if (oh == OH) {
                    oh = 0u;
                    b = b + 1u;
                    if (b == p_batch()) { b = 0u; r = r + 1u; }
                }
            }
        }
    }
}
