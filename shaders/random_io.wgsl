// Random draws keyed by the launch params: [numel, seed_lo, seed_hi, offset_lo, offset_hi, ..].
@group(0) @binding(0) var<storage, read_write> out: array<T>;
@group(0) @binding(1) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

fn draw_key() -> vec2<u32> {
    return vec2<u32>(param(1), param(2));
}
fn draw_offset() -> vec2<u32> {
    return vec2<u32>(param(3), param(4));
}
