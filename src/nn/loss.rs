//! Losses, mean-reduced. Each is differentiable to any order: compositions of
//! differentiable ops, or custom ops whose VJPs are (cross-entropy: fused kernels for the
//! loss and its gradient, softplus: a stable form with an exact VJP).
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
    let labels = labels.detach();
    custom_op(Arc::new(SoftmaxXent { labels: labels.clone() }), &[logits], || logits.softmax_cross_entropy_mean(&labels))
}

/// The mean softmax cross-entropy as one op (one kernel on the GPU).
struct SoftmaxXent {
    labels: Tensor,
}

impl CustomOp for SoftmaxXent {
    fn name(&self) -> &str {
        "cross_entropy"
    }
    /// d/dz mean_r (logsumexp(z_r) - z_r[y_r]) = (softmax(z) - onehot(y)) / B, times g:
    /// one fused kernel, itself a custom op so that it differentiates again.
    fn vjp(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (z, labels) = (&inputs[0], self.labels.clone());
        let grad = custom_op(Arc::new(SoftmaxXentGrad { labels: labels.clone() }), &[z, g], || z.softmax_cross_entropy_grad(&labels, g))?;
        Ok(vec![Some(grad)])
    }
}

/// G(z, g) = g (softmax(z) - onehot(y)) / B, the cross-entropy gradient.
struct SoftmaxXentGrad {
    labels: Tensor,
}

impl CustomOp for SoftmaxXentGrad {
    fn name(&self) -> &str {
        "cross_entropy_grad"
    }
    /// With s = softmax(z) (rows) and the symmetric softmax Jacobian diag(s) - s s^T:
    /// z-bar = (g / B) s * (G-bar - rowsum(s * G-bar)) (the fused softmax_vjp op),
    /// g-bar = sum(G-bar * (s - onehot(y))) / B. Differentiable to any order.
    fn vjp(&self, inputs: &[Tensor], _out: &Tensor, gbar: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (z, g) = (&inputs[0], &inputs[1]);
        let (b, c) = (z.shape()[0], z.shape()[1]);
        let zbar = z.softmax_vjp(gbar, Some(g), 1.0 / b as f64)?;
        // g is usually the constant seed of a gradient: its cotangent only when tracked
        let gbar_g = if g.is_tracked() {
            let diff = z.softmax(1)?.sub(&self.labels.one_hot(c, z.dtype())?)?;
            Some(gbar.mul(&diff)?.sum_all()?.mul_scalar(1.0 / b as f64)?.reshape(g.shape())?)
        } else {
            None
        };
        Ok(vec![Some(zbar), gbar_g])
    }
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
