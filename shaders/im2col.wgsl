// Patches of a strided image batch x [B, C, H, W] as columns [R, B, L] (R = C*KH*KW,
// L = OH*OW; batch inside the rows so a convolution is one matmul of K = R):
// out[(c*KH + i)*KW + j, b, oh*OW + ow] = x[b, c, oh*S + i - P, ow*S + j - P] (0 outside).
// params: [numel, C, H, W, KH, KW, S, P, OH, OW, x_off, xs_b, xs_c, xs_h, xs_w, 0, B]
@group(0) @binding(0) var<storage, read> x: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    // grid-stride over runs of RUN outputs: (r, b, oh, ow) decomposed (integer divisions)
    // once per run and stepped along ow / oh after that
    let n = param(0);
    let C = param(1); let H = param(2); let W = param(3);
    let KH = param(4); let KW = param(5); let S = param(6); let P = param(7);
    let OH = param(8); let OW = param(9);
    let L = OH * OW;
    let runs = (n + RUN - 1u) / RUN;
    let span = stride_range(wid, nwg, lid, runs);
    for (var q = span.x; q < span.y; q = q + span.z) {
        let e0 = q * RUN;
        let end = min(e0 + RUN, n);
        var l = e0 % L;
        var b = (e0 / L) % param(16);
        var r = e0 / (L * param(16));
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
                v = x[param(10) + b * param(11) + c * param(12) + u32(h) * param(13) + u32(w) * param(14)];
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
                    if (b == param(16)) { b = 0u; r = r + 1u; }
                }
            }
        }
    }
}
