// Counter-based random numbers: Philox 4x32-10 (Salmon et al. 2011, as in cuRAND and
// PyTorch), the same bits as core/src/random.rs computes on the CPU.
// Element i of a uniform draw is lane i % 4 of block i / 4; of a normal draw, Box-Muller on
// lanes 2 (i % 2) and 2 (i % 2) + 1 of block i / 2. A block's counter is
// (block, 0, offset_lo, offset_hi) and the key is the seed.
// params: RandomParams;
// the bindings, `out` and where the key and the offset come from (`draw_key`,
// `draw_offset`) are the variant's: random_io.wgsl (the params) or random_state_io.wgsl (a
// generator state on the device).

// (high, low) words of the 64-bit product a * b, from 16-bit halves
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
    let al = a & 0xFFFFu;
    let ah = a >> 16u;
    let bl = b & 0xFFFFu;
    let bh = b >> 16u;
    let ll = al * bl;
    let hl = ah * bl;
    let lh = al * bh;
    let cross = (ll >> 16u) + (hl & 0xFFFFu) + lh;
    let hi = ah * bh + (hl >> 16u) + (cross >> 16u);
    let lo = (cross << 16u) | (ll & 0xFFFFu);
    return vec2<u32>(hi, lo);
}

fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var r = 0u; r < 10u; r = r + 1u) {
        let p0 = mulhilo(0xD2511F53u, c.x);
        let p1 = mulhilo(0xCD9E8D57u, c.z);
        c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
        k = k + vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// the top 24 bits as a float in [0, 1)
fn unit(x: u32) -> f32 {
    return f32(x >> 8u) * 5.9604644775390625e-8;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let n = p_numel();
    let key = draw_key();
    let offset = draw_offset();
    let normal = p_normal() == 1u;
    let low = bitcast<f32>(p_low());
    let high = bitcast<f32>(p_high());
    let span = stride_range(wid, nwg, lid, n);
    for (var i = span.x; i < span.y; i = i + span.z) {
        if (normal) {
            let r = philox(vec4<u32>(i >> 1u, 0u, offset.x, offset.y), key);
            let pair = select(r.xy, r.zw, (i & 1u) == 1u);
            let u1 = unit(pair.x) + 5.9604644775390625e-8;
            let u2 = unit(pair.y);
            out[i] = T(sqrt(-2.0 * log(u1)) * sin_quadrant(6.283185307179586 * u2, 1));
        } else {
            let r = philox(vec4<u32>(i >> 2u, 0u, offset.x, offset.y), key);
            out[i] = T(low + (high - low) * unit(r[i & 3u]));
        }
    }
}
