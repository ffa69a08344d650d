//! Losses, mean-reduced. Each is differentiable to any order, in both modes: compositions
//! of primitives, or fused primitives with their own rules (cross-entropy: one kernel for
//! the loss and one for its gradient; softplus: a stable form with an exact derivative).
use crate::{DType, Error, Result, Tensor};

/// mean_i -log softmax(logits_i)[labels_i] for logits [B, C] and u32 labels [B].
/// Stable for logits of 1e4 and finite for -inf logits on non-target classes.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if logits.rank() != 2 {
        return Err(Error::Invalid {
            op: "cross_entropy",
            msg: format!("logits must be [batch, classes], got {:?}", logits.shape()),
        });
    }
    if labels.dtype() != DType::U32 || labels.rank() != 1 {
        return Err(Error::Invalid {
            op: "cross_entropy",
            msg: format!("labels must be u32 [batch], got {:?} {:?}", labels.dtype(), labels.shape()),
        });
    }
    let (b, _) = (logits.shape()[0], logits.shape()[1]);
    if labels.shape()[0] != b {
        return Err(Error::ShapeMismatch {
            op: "cross_entropy",
            lhs: logits.shape().to_vec(),
            rhs: labels.shape().to_vec(),
            msg: "logits and labels have different batch sizes".into(),
        });
    }
    if b == 0 {
        return Err(Error::Empty { op: "cross_entropy", msg: "the batch is empty".into() });
    }
    logits.softmax_cross_entropy_mean(labels)
}

/// mean((pred - target)^2).
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    if pred.shape() != target.shape() {
        return Err(Error::ShapeMismatch {
            op: "mse",
            lhs: pred.shape().to_vec(),
            rhs: target.shape().to_vec(),
            msg: "shapes differ".into(),
        });
    }
    if pred.numel() == 0 {
        return Err(Error::Empty { op: "mse", msg: "the batch is empty".into() });
    }
    pred.sub(target)?.square()?.mean_all()
}

/// softplus(x) = log(1 + exp(x)), stable for any x (one primitive with its own rules:
/// d softplus = sigmoid(x) dx, exact at 0 where the stable form has kinks).
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    x.softplus()
}

/// mean(softplus(x) - x y) for logits x and targets y in [0, 1] (stable for any x).
pub fn binary_cross_entropy_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.shape() != targets.shape() {
        return Err(Error::ShapeMismatch {
            op: "binary_cross_entropy_with_logits",
            lhs: logits.shape().to_vec(),
            rhs: targets.shape().to_vec(),
            msg: "shapes differ".into(),
        });
    }
    if logits.numel() == 0 {
        return Err(Error::Empty { op: "binary_cross_entropy_with_logits", msg: "the batch is empty".into() });
    }
    softplus(logits)?.sub(&logits.mul(targets)?)?.mean_all()
}
