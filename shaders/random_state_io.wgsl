// Random draws keyed by a generator state on the device, [seed_lo, seed_hi, offset_lo,
// offset_hi] (a snapshot taken by random_advance.wgsl); the params' seed and offset are unused.
@group(0) @binding(0) var<storage, read> generator: array<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

fn draw_key() -> vec2<u32> {
    return vec2<u32>(generator[0], generator[1]);
}
fn draw_offset() -> vec2<u32> {
    return vec2<u32>(generator[2], generator[3]);
}
