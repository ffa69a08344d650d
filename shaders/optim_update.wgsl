// The optimizer updates, one function each, read by the one update kernel of each optimizer
// (MultiStep, kernels/src/optim.rs: one tensor or many, scalar or vec4). V is the element
// (T, or vec4<T>: the scalars broadcast); the hyperparameters are MultiStepParams.hyper (f32 bits).

struct SgdHyper { lr: T, momentum: T, wd: T }
struct SgdStep { w: V, velocity: V }

// SGD (PyTorch): g = grad + wd w; velocity = momentum velocity + g (when momentum > 0);
// w = w - lr velocity (or w - lr g without momentum). The caller writes `velocity` back
// only when momentum > 0 (without momentum its buffer may be a placeholder).
fn sgd_update(w: V, grad: V, velocity: V, h: SgdHyper) -> SgdStep {
    var g = grad + h.wd * w;
    if (h.momentum != T(0)) {
        g = h.momentum * velocity + g;
    }
    return SgdStep(w - h.lr * g, g);
}

// hyper [lr, momentum, weight_decay].
fn sgd_hyper() -> SgdHyper {
    return SgdHyper(T(bitcast<f32>(p_hyper(0u))), T(bitcast<f32>(p_hyper(1u))), T(bitcast<f32>(p_hyper(2u))));
}

struct AdamHyper { lr: T, b1: T, b2: T, eps: T, wd: T, bc1: T, bc2: T, decoupled: bool }
struct AdamStep { w: V, m: V, v: V }

// Adam adds wd w to the gradient; AdamW (decoupled) decays the weight directly:
// w = w - lr wd w. Then m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// w = w - lr (m / bc1) / (sqrt(v / bc2) + eps) (bc1, bc2: the bias corrections).
fn adam_update(w: V, grad: V, m: V, v: V, h: AdamHyper) -> AdamStep {
    var p = w;
    var g = grad;
    if (h.decoupled) {
        p = p - h.lr * h.wd * p;
    } else {
        g = g + h.wd * p;
    }
    let mi = h.b1 * m + (T(1) - h.b1) * g;
    let vi = h.b2 * v + (T(1) - h.b2) * g * g;
    return AdamStep(p - h.lr * (mi / h.bc1) / (sqrt(vi / h.bc2) + h.eps), mi, vi);
}

// hyper [lr, b1, b2, eps, weight_decay, bc1, bc2]; AdamW's flag `decoupled`.
fn adam_hyper() -> AdamHyper {
    return AdamHyper(T(bitcast<f32>(p_hyper(0u))), T(bitcast<f32>(p_hyper(1u))), T(bitcast<f32>(p_hyper(2u))),
                     T(bitcast<f32>(p_hyper(3u))), T(bitcast<f32>(p_hyper(4u))), T(bitcast<f32>(p_hyper(5u))),
                     T(bitcast<f32>(p_hyper(6u))), p_decoupled() == 1u);
}
