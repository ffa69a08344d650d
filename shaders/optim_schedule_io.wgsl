// The optimizer step state alone: no clipping (a gradient scale of 1).
@group(0) @binding(0) var<storage, read_write> state: array<f32>;
@group(0) @binding(1) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;

fn grad_scale() -> f32 {
    return 1.0;
}
