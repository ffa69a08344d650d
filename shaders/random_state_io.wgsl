// Random draws keyed by a generator state on the device, [seed_lo, seed_hi, offset_lo,
// offset_hi] (a snapshot taken by random_advance.wgsl); the params' seed and offset are unused.

fn draw_key() -> vec2<u32> {
    return vec2<u32>(generator[0], generator[1]);
}
fn draw_offset() -> vec2<u32> {
    return vec2<u32>(generator[2], generator[3]);
}
