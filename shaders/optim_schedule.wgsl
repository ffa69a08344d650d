// An optimizer's step on the device: the learning rate of its schedule at the step count,
// then the count advanced and Adam's bias corrections for it, and the gradient scale. The
// state (f32) is [lr, 1 - b1^t, 1 - b2^t, t, grad scale, 0, 0, 0]; the updates read it as a
// uniform, so a replayed step follows the schedule as an eager one does. The bindings
// (`state`) and `grad_scale()` are the variant's: optim_schedule_io.wgsl (scale 1) or
// optim_clip_io.wgsl (a global-norm clip from partial sums of squares).
// params: ScheduleParams: `kind` and values [lr, 1 - b1, 1 - b2, a, b, c, d] (f32 bits; the
// betas' complements, since 1 - b rounds away a beta near 1's digits in f32) by kind:
//   0 constant lr; 1 step: lr gamma^floor(t / size) (a = size, b = gamma);
//   2 warm-up + cosine (a = warmup, b = total, c = min_lr);
//   3 one-cycle (a = peak step, b = last step, c = initial lr, d = final lr).

// value k of the schedule: 0 lr, 1 1 - b1, 2 1 - b2, 3 a, 4 b, 5 c, 6 d
fn sv(k: u32) -> f32 {
    return bitcast<f32>(p_values(k));
}

// from a to b as p goes 0 -> 1 along half a cosine
fn cos_anneal(a: f32, b: f32, p: f32) -> f32 {
    return b + (a - b) * 0.5 * (1.0 + cos(3.141592653589793 * p));
}

fn schedule_lr(step: f32) -> f32 {
    let lr = sv(0u);
    switch p_kind() {
        case 1u: {
            return lr * pow(sv(4u), floor(step / max(sv(3u), 1.0)));
        }
        case 2u: {
            let warmup = sv(3u);
            let total = sv(4u);
            if (step < warmup) { return lr * (step + 1.0) / warmup; }
            if (step >= total) { return sv(5u); }
            return cos_anneal(lr, sv(5u), (step - warmup) / max(total - warmup, 1.0));
        }
        case 3u: {
            let peak = sv(3u);
            let last = sv(4u);
            let t = min(step, last);
            if (t <= peak) {
                if (peak == 0.0) { return lr; }
                return cos_anneal(sv(5u), lr, t / peak);
            }
            return cos_anneal(lr, sv(6u), (t - peak) / (last - peak));
        }
        default: {
            return lr;
        }
    }
}

// The bias correction q_t = 1 - b^t by its recurrence q_t = q_(t-1) + c (1 - q_(t-1))
// from q_0 = 0, with c = 1 - b given accurately: no cancellation (1 - b^t in f32 would
// lose a beta near 1's digits), and no log / exp, whose precision Vulkan only bounds
// absolutely near 1.
@compute @workgroup_size(1)
fn main() {
    let step = state[3];
    state[0] = schedule_lr(step);
    state[1] = state[1] + sv(1u) * (1.0 - state[1]);
    state[2] = state[2] + sv(2u) * (1.0 - state[2]);
    state[3] = step + 1.0;
    state[4] = grad_scale();
}
