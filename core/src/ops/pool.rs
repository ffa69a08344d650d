//! Max pooling over non-overlapping k x k windows: one kernel forward, one for its VJP
//! (ties split evenly, as the max reduction's VJP). Both are primitives; the VJP's own
//! rules are written with ops, so the gradient differentiates again.
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::tensor::check_float;
use crate::{DType, Error, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::Context;

fn pool_view(x: &Tensor, k: usize) -> Result<Tensor> {
    let s = x.shape();
    x.reshape(&[s[0], s[1], s[2] / k, k, s[3] / k, k])
}

fn shape4(x: &Tensor) -> [usize; 4] {
    let s = x.shape();
    [s[0], s[1], s[2], s[3]]
}

/// [x == window max] / ties: where each window's derivative goes.
fn window_weights(x: &Tensor, pooled: &Tensor, k: usize) -> Result<Tensor> {
    let s = x.shape().to_vec();
    let m = pooled.reshape(&[s[0], s[1], s[2] / k, 1, s[3] / k, 1])?;
    let mask = pool_view(x, k)?.eq(&m)?;
    mask.div(&mask.sum(&[3, 5], true)?)?.reshape(&s)
}

/// Window sums of h * weights: the adjoint of spreading a pooled value over its window.
fn window_sums(h: &Tensor, weights: &Tensor, k: usize) -> Result<Tensor> {
    pool_view(&h.mul(weights)?, k)?.sum(&[3, 5], false)
}

/// Max over k x k windows (stride k) of images [B, C, H, W]; NaN wins.
pub struct MaxPool2d {
    pub k: usize,
}

impl Primitive for MaxPool2d {
    fn name(&self) -> String {
        "max_pool2d".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let (x, k) = (x[0], self.k);
        check_float("max_pool2d", x)?;
        let s = x.shape();
        if x.rank() != 4 || k == 0 || !s[2].is_multiple_of(k) || !s[3].is_multiple_of(k) {
            return Err(Error::Invalid {
                op: "max_pool2d",
                msg: format!("expected [B, C, H, W] with H and W divisible by {k}, got {s:?}"),
            });
        }
        Ok(OutSpec::new(&[s[0], s[1], s[2] / k, s[3] / k], x.dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        true
    }
    fn saves_output(&self) -> bool {
        true
    }
    fn cpu(&self, x: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        pool_view(x[0], self.k)?.max(&[3, 5], false)
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        if x[0].dtype() != DType::F32 || x[0].numel() == 0 {
            return self.cpu(x, out);
        }
        Ok(out.gpu(ctx.max_pool2d(x[0].view(), shape4(x[0]), self.k)?, x[0].device()))
    }
    /// x-bar = g spread over each window * [x == max] / ties: the fused max_pool2d_grad
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let pooled = Node::output(node)?.detach();
        Ok(vec![Some(max_pool2d_grad(&node.input(0)?, &pooled, g, self.k)?)])
    }
    /// jvp = window sums of t * [x == max] / ties (the tangent at the maxima)
    fn jvp(&self, x: &[Tensor], y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let Some(t) = &t[0] else { return Ok(None) };
        let w = window_weights(&x[0].detach(), &y.detach(), self.k)?;
        Ok(Some(window_sums(t, &w, self.k)?))
    }
    /// batch: fold the examples into the image batch N
    fn batch(&self, x: &[Tensor], _batched: &[bool], b: &Batch) -> Result<Tensor> {
        let s = x[0].shape();
        let pooled = x[0].reshape(&[b.size * s[1], s[2], s[3], s[4]])?.max_pool2d(self.k)?;
        pooled.reshape(&[b.size, s[1], s[2], s[3] / self.k, s[4] / self.k])
    }
}

/// G(x, g, pooled) = the max-pool VJP: linear in g, piecewise constant in x; `pooled` is
/// the forward's output (no derivative flows through it here).
pub struct MaxPool2dGrad {
    pub k: usize,
}

fn max_pool2d_grad(x: &Tensor, pooled: &Tensor, g: &Tensor, k: usize) -> Result<Tensor> {
    bind(Arc::new(MaxPool2dGrad { k }), &[x, g, &pooled.detach()])
}

impl Primitive for MaxPool2dGrad {
    fn name(&self) -> String {
        "max_pool2d_grad".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    fn saves_input(&self, i: usize) -> bool {
        i != 1
    }
    fn cpu(&self, x: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        let (g, k) = (x[1], self.k);
        let s = x[0].shape().to_vec();
        let spread = g
            .reshape(&[s[0], s[1], s[2] / k, 1, s[3] / k, 1])?
            .broadcast_to(&[s[0], s[1], s[2] / k, k, s[3] / k, k])?
            .reshape(&s)?;
        spread.mul(&window_weights(x[0], x[2], k)?)
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        if x[0].dtype() != DType::F32 || x[0].numel() == 0 {
            return self.cpu(x, out);
        }
        let (p, g) = (x[2].contiguous()?, x[1].to_dtype(DType::F32)?.contiguous()?);
        Ok(out.gpu(ctx.max_pool2d_grad(x[0].view(), p.view(), g.view(), shape4(x[0]), self.k)?, x[0].device()))
    }
    /// For the cotangent h: g-bar = window sums of h * [x == max] / ties (the adjoint of
    /// spreading g); x-bar = 0 (the mask is flat almost everywhere)
    fn vjp(&self, node: &Arc<Node>, h: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let w = window_weights(&node.input(0)?.detach(), &node.input(2)?, self.k)?;
        Ok(vec![None, Some(window_sums(h, &w, self.k)?), None])
    }
    /// linear in g, flat in x: jvp = G(x, tg)
    fn jvp(&self, x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[1].as_ref().map(|tg| max_pool2d_grad(&x[0].detach(), &x[2], tg, self.k)).transpose()
    }
    /// batch: fold the examples into the image batch N (shared inputs broadcast)
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        let fold = |i: usize| -> Result<Tensor> {
            let t = b.expand(&x[i], batched[i])?;
            let s = t.shape();
            t.reshape(&[b.size * s[1], s[2], s[3], s[4]])
        };
        let out = max_pool2d_grad(&fold(0)?, &fold(2)?, &fold(1)?, self.k)?;
        let s = out.shape();
        out.reshape(&[b.size, s[0] / b.size, s[1], s[2], s[3]])
    }
}

impl Tensor {
    /// Max over non-overlapping k x k windows (stride k) of images [B, C, H, W] with H and
    /// W multiples of k: [B, C, H/k, W/k] (NaN wins). The gradient goes to the maxima,
    /// split evenly between ties.
    pub fn max_pool2d(&self, k: usize) -> Result<Tensor> {
        bind(Arc::new(MaxPool2d { k }), &[self])
    }
}
