//! Max pooling over non-overlapping k x k windows as one op: one kernel forward, one for
//! its VJP (ties split evenly, as the max reduction's VJP), both custom ops, so the
//! gradient differentiates again (its own VJP is written with ops).
use crate::graph::{custom_op, CustomOp};
use crate::storage::Storage;
use crate::tensor::check_float;
use crate::{DType, Error, Result, Tensor};
use std::sync::Arc;

fn pool_view(x: &Tensor, k: usize) -> Result<Tensor> {
    let s = x.shape();
    x.reshape(&[s[0], s[1], s[2] / k, k, s[3] / k, k])
}

fn shape4(x: &Tensor) -> [usize; 4] {
    let s = x.shape();
    [s[0], s[1], s[2], s[3]]
}

/// mask / ties per window: where each window's cotangent goes (the max reduction's VJP).
fn window_weights(x: &Tensor, pooled: &Tensor, k: usize) -> Result<Tensor> {
    let s = x.shape().to_vec();
    let m = pooled.reshape(&[s[0], s[1], s[2] / k, 1, s[3] / k, 1])?;
    let mask = pool_view(x, k)?.eq(&m)?;
    mask.div(&mask.sum(&[3, 5], true)?)?.reshape(&s)
}

fn gpu_tensor(buf: wgrad_kernels::GpuBuffer, shape: &[usize], like: &Tensor) -> Tensor {
    Tensor::new_contiguous(Storage::Gpu(Arc::new(buf)), shape, like.dtype(), like.device().clone())
}

impl Tensor {
    /// Max over non-overlapping k x k windows (stride k) of images [B, C, H, W] with H and
    /// W multiples of k: [B, C, H/k, W/k] (NaN wins). The gradient goes to the maxima,
    /// split evenly between ties.
    pub fn max_pool2d(&self, k: usize) -> Result<Tensor> {
        check_float("max_pool2d", self)?;
        let s = self.shape();
        if self.rank() != 4 || k == 0 || !s[2].is_multiple_of(k) || !s[3].is_multiple_of(k) {
            return Err(Error::Invalid { op: "max_pool2d", msg: format!("expected [B, C, H, W] with H and W divisible by {k}, got {s:?}") });
        }
        let x = self.clone();
        custom_op(Arc::new(MaxPool { k }), &[self], move || {
            if let (Some(ctx), DType::F32, false) = (x.device().context(), x.dtype(), x.numel() == 0) {
                let out = ctx.max_pool2d(x.view(), shape4(&x), k)?;
                return Ok(gpu_tensor(out, &[s[0], s[1], s[2] / k, s[3] / k], &x));
            }
            pool_view(&x, k)?.max(&[3, 5], false)
        })
    }
}

struct MaxPool {
    k: usize,
}

impl CustomOp for MaxPool {
    fn name(&self) -> &str {
        "max_pool2d"
    }
    /// x-bar = g (broadcast over each window) * [x == max] / ties: one fused op.
    fn vjp(&self, inputs: &[Tensor], out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, k) = (&inputs[0], self.k);
        let pooled = out.detach();
        let grad = MaxPoolGrad { k, pooled: pooled.clone() };
        let (xc, gc) = (x.detach(), g.clone());
        Ok(vec![Some(custom_op(Arc::new(grad), &[x, g], move || {
            if let (Some(ctx), DType::F32, false) = (xc.device().context(), xc.dtype(), xc.numel() == 0) {
                let (p, gg) = (pooled.contiguous()?, gc.to_dtype(DType::F32)?.contiguous()?);
                let out = ctx.max_pool2d_grad(xc.view(), p.view(), gg.view(), shape4(&xc), k)?;
                return Ok(gpu_tensor(out, xc.shape(), &xc));
            }
            let s = xc.shape().to_vec();
            let gb = gc.reshape(&[s[0], s[1], s[2] / k, 1, s[3] / k, 1])?.broadcast_to(&[s[0], s[1], s[2] / k, k, s[3] / k, k])?.reshape(&s)?;
            gb.mul(&window_weights(&xc, &pooled, k)?)
        })?)])
    }
}

/// G(x, g) = the max-pool VJP; linear in g, piecewise constant in x.
struct MaxPoolGrad {
    k: usize,
    pooled: Tensor,
}

impl CustomOp for MaxPoolGrad {
    fn name(&self) -> &str {
        "max_pool2d_grad"
    }
    /// For the cotangent h: g-bar = the window sums of h * [x == max] / ties (the adjoint of
    /// spreading g); x-bar = 0 (the mask is flat almost everywhere).
    fn vjp(&self, inputs: &[Tensor], _out: &Tensor, h: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, k) = (&inputs[0].detach(), self.k);
        let weighted = h.mul(&window_weights(x, &self.pooled, k)?)?;
        Ok(vec![None, Some(pool_view(&weighted, k)?.sum(&[3, 5], false)?)])
    }
}
