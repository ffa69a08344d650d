// The optimizer step state with a global-norm clip (torch.nn.utils.clip_grad_norm_): the
// gradients' norm from the partial sums of squares of sum_squares, and the scale
// min(1, max_norm / (norm + 1e-6)). params (ScheduleParams): max_norm (f32 bits), partials.

fn grad_scale() -> f32 {
    var total = 0.0;
    for (var i = 0u; i < p_partials(); i = i + 1u) {
        total = total + partials[i];
    }
    let norm = sqrt(total);
    state[5] = norm;
    return min(1.0, bitcast<f32>(p_max_norm()) / (norm + 1e-6));
}
