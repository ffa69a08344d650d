// Random draws keyed by the launch params (RandomParams: seed and offset).

fn draw_key() -> vec2<u32> {
    return vec2<u32>(p_seed_lo(), p_seed_hi());
}
fn draw_offset() -> vec2<u32> {
    return vec2<u32>(p_offset_lo(), p_offset_hi());
}
