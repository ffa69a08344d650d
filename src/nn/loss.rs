//! Losses, mean-reduced. All are compositions of differentiable ops (so second derivatives
//! work); cross-entropy is the stable log-softmax form.
use crate::{custom_op, CustomOp, DType, Error, Result, Tensor};
use std::sync::Arc;

/// mean_i -log softmax(logits_i)[labels_i] for logits [B, C] and u32 labels [B].
/// Stable for logits of 1e4 and finite for -inf logits on non-target classes.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if logits.rank() != 2 {
        return Err(Error::Invalid { op: "cross_entropy", msg: format!("logits must be [batch, classes], got {:?}", logits.shape()) });
    }
    if labels.dtype() != DType::U32 || labels.rank() != 1 {
        return Err(Error::Invalid { op: "cross_entropy", msg: format!("labels must be u32 [batch], got {:?} {:?}", labels.dtype(), labels.shape()) });
    }
    let (b, _) = (logits.shape()[0], logits.shape()[1]);
    if labels.shape()[0] != b {
        return Err(Error::ShapeMismatch { op: "cross_entropy", lhs: logits.shape().to_vec(), rhs: labels.shape().to_vec(), msg: "logits and labels have different batch sizes".into() });
    }
    if b == 0 {
        return Err(Error::Empty { op: "cross_entropy", msg: "the batch is empty".into() });
    }
    let picked = logits.log_softmax(1)?.gather(1, &labels.reshape(&[b, 1])?)?;
    picked.mean_all()?.neg()
}

/// mean((pred - target)^2).
pub fn mse(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    if pred.shape() != target.shape() {
        return Err(Error::ShapeMismatch { op: "mse", lhs: pred.shape().to_vec(), rhs: target.shape().to_vec(), msg: "shapes differ".into() });
    }
    if pred.numel() == 0 {
        return Err(Error::Empty { op: "mse", msg: "the batch is empty".into() });
    }
    pred.sub(target)?.square()?.mean_all()
}

/// softplus(x) = log(1 + exp(x)), computed stably as max(x, 0) + log(1 + exp(-|x|)), with
/// its own VJP g * sigmoid(x): the stable form's pieces have kinks at 0 whose one-sided
/// derivatives would give a wrong gradient (and Hessian) exactly there.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    struct Softplus;
    impl CustomOp for Softplus {
        fn name(&self) -> &str {
            "softplus"
        }
        /// d softplus(x) = sigmoid(x) dx
        fn vjp(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(g.mul(&inputs[0].sigmoid()?)?)])
        }
    }
    custom_op(Arc::new(Softplus), &[x], || x.relu()?.add(&x.abs()?.neg()?.exp()?.add_scalar(1.0)?.log()?))
}

/// mean(softplus(x) - x y) for logits x and targets y in [0, 1] (stable for any x).
pub fn binary_cross_entropy_with_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.shape() != targets.shape() {
        return Err(Error::ShapeMismatch { op: "binary_cross_entropy_with_logits", lhs: logits.shape().to_vec(), rhs: targets.shape().to_vec(), msg: "shapes differ".into() });
    }
    if logits.numel() == 0 {
        return Err(Error::Empty { op: "binary_cross_entropy_with_logits", msg: "the batch is empty".into() });
    }
    softplus(logits)?.sub(&logits.mul(targets)?)?.mean_all()
}
