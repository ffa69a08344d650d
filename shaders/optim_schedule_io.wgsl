// The optimizer step state alone: no clipping (a gradient scale of 1).

fn grad_scale() -> f32 {
    return 1.0;
}
