// The adjoint of im2col, as a gather (deterministic, no atomics): each image element sums
// the column entries that copied it. cols is a strided view of [C*KH*KW, B, OH*OW]
// given by its strides in (b, r, l) order.
// params: [numel, C, H, W, KH, KW, S, P, OH, OW, cols_off, cs_b, cs_r, cs_l]
@group(0) @binding(0) var<storage, read> cols: array<T>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let e = flat_id(wid, nwg, lid);
    if (e >= param(0)) { return; }
    let C = param(1); let H = param(2); let W = param(3);
    let KH = param(4); let KW = param(5); let S = param(6); let P = param(7);
    let OH = param(8); let OW = param(9);
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
            acc = acc + cols[param(10) + b * param(11) + r * param(12) + (oh * OW + ow) * param(13)];
        }
    }
    out[e] = acc;
}
