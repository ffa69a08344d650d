// Random draws keyed by the launch params (RandomParams: seed and offset).
@group(0) @binding(0) var<storage, read_write> out: array<T>;
@group(0) @binding(1) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

fn draw_key() -> vec2<u32> {
    return vec2<u32>(p_seed_lo(), p_seed_hi());
}
fn draw_offset() -> vec2<u32> {
    return vec2<u32>(p_offset_lo(), p_offset_hi());
}
