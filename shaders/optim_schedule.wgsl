// An optimizer's step on the device: the learning rate of its schedule at the step count,
// then the count advanced and Adam's bias corrections for it, and the gradient scale. The
// state (f32) is [lr, 1 - b1^t, 1 - b2^t, t, grad scale, 0, 0, 0]; the updates read it as a
// uniform, so a replayed step follows the schedule as an eager one does. The bindings
// (`state`) and `grad_scale()` are the variant's: optim_schedule_io.wgsl (scale 1) or
// optim_clip_io.wgsl (a global-norm clip from partial sums of squares).
// params: [schedule, lr, 1 - b1, 1 - b2, a, b, c, d] (schedule u32, the rest f32 bits; the
// betas' complements, since 1 - b rounds away a beta near 1's digits in f32):
//   0 constant lr; 1 step: lr gamma^floor(t / size) (a = size, b = gamma);
//   2 warm-up + cosine (a = warmup, b = total, c = min_lr);
//   3 one-cycle (a = peak step, b = last step, c = initial lr, d = final lr).

fn pf(i: u32) -> f32 {
    return bitcast<f32>(param(i));
}

// from a to b as p goes 0 -> 1 along half a cosine
fn cos_anneal(a: f32, b: f32, p: f32) -> f32 {
    return b + (a - b) * 0.5 * (1.0 + cos(3.141592653589793 * p));
}

fn schedule_lr(step: f32) -> f32 {
    let lr = pf(1u);
    switch param(0) {
        case 1u: {
            return lr * pow(pf(5u), floor(step / max(pf(4u), 1.0)));
        }
        case 2u: {
            let warmup = pf(4u);
            let total = pf(5u);
            if (step < warmup) { return lr * (step + 1.0) / warmup; }
            if (step >= total) { return pf(6u); }
            return cos_anneal(lr, pf(6u), (step - warmup) / max(total - warmup, 1.0));
        }
        case 3u: {
            let peak = pf(4u);
            let last = pf(5u);
            let t = min(step, last);
            if (t <= peak) {
                if (peak == 0.0) { return lr; }
                return cos_anneal(pf(6u), lr, t / peak);
            }
            return cos_anneal(lr, pf(7u), (t - peak) / (last - peak));
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
    state[1] = state[1] + pf(2u) * (1.0 - state[1]);
    state[2] = state[2] + pf(3u) * (1.0 - state[2]);
    state[3] = step + 1.0;
    state[4] = grad_scale();
}
