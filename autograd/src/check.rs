//! Gradient checking by central finite differences on random projections (HIPS autograd's
//! and JAX's check_grads, in both modes): with the difference quotient
//! d = (f(x + eps u) - f(x - eps u)) / 2 eps,
//! - reverse mode: <u, J^T v> from the VJP against <d, v>;
//! - forward mode: <J u, v> from the JVP against <d, v>.
use crate::transforms::{jvp, vjp};
use wgrad_core::no_grad;
use wgrad_core::{DType, Device, Error, Result, Tensor};

/// Step and tolerances of a check.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    pub eps: f64,
    pub atol: f64,
    pub rtol: f64,
    /// Random (u, v) pairs tried per order.
    pub projections: usize,
    pub seed: u64,
    /// Check the JVP (forward mode) at every order.
    pub forward: bool,
    /// Check the VJP (reverse mode) at every order.
    pub reverse: bool,
}

impl CheckOptions {
    /// f64: eps 1e-6, atol 1e-5, rtol 1e-3 (PyTorch gradcheck).
    pub fn f64() -> Self {
        CheckOptions { eps: 1e-6, atol: 1e-5, rtol: 1e-3, projections: 3, seed: 0, forward: true, reverse: true }
    }
    /// f32: eps 1e-3, rtol = atol = 2e-3 (JAX).
    pub fn f32() -> Self {
        CheckOptions { eps: 1e-3, atol: 2e-3, rtol: 2e-3, projections: 3, seed: 0, forward: true, reverse: true }
    }
}

fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    let s = a.mul(b)?.sum_all()?;
    s.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// Check derivatives of `f` at `x` up to `order` (each level against central differences of
/// the one below), in reverse mode (the VJP) and forward mode (the JVP), in f64 on the CPU (x
/// is copied there); the error names the worst mismatch, its order and its mode.
pub fn check_grads<F>(f: F, x: &Tensor, order: usize) -> Result<()>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let x64 = x.detach().to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    check_grads_with(f, &x64, order, CheckOptions::f64())
}

/// [`check_grads`] at `x` as given (its device and dtype) with explicit options.
pub fn check_grads_with<F>(f: F, x: &Tensor, order: usize, opts: CheckOptions) -> Result<()>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    check_dyn(&f, x, order, 1, opts)
}

/// Check the `level`-th derivative of the original function (f is its (level-1)-th
/// gradient function), then the remaining `order - 1` levels.
fn check_dyn(
    f: &dyn Fn(&Tensor) -> Result<Tensor>,
    x: &Tensor,
    order: usize,
    level: usize,
    opts: CheckOptions,
) -> Result<()> {
    if order == 0 {
        return Ok(());
    }
    let y = no_grad(|| f(x))?;
    let mut worst: Option<Error> = None;
    let mut worst_ratio = 0.0;
    for p in 0..opts.projections {
        let seed = opts.seed.wrapping_mul(1000).wrapping_add(order as u64 * 100 + p as u64);
        let u = Tensor::randn(x.shape(), seed, x.dtype(), x.device())?;
        let v = Tensor::randn(y.shape(), seed + 50, y.dtype(), y.device())?;
        let numeric = no_grad(|| -> Result<f64> {
            let step = u.mul_scalar(opts.eps)?;
            let fp = f(&x.add(&step)?)?;
            let fm = f(&x.sub(&step)?)?;
            dot(&fp.sub(&fm)?.mul_scalar(1.0 / (2.0 * opts.eps))?, &v)
        })?;
        let mut analytic = Vec::with_capacity(2);
        if opts.reverse {
            analytic.push(("reverse", dot(&u, &vjp(f, x, &v)?.1)?));
        }
        if opts.forward {
            analytic.push(("forward", dot(&jvp(f, x, &u)?.1, &v)?));
        }
        for (mode, analytic) in analytic {
            let diff = (analytic - numeric).abs();
            let tol = opts.atol + opts.rtol * numeric.abs();
            if (diff > tol && diff / tol > worst_ratio) || (diff.is_nan() && worst.is_none()) {
                worst_ratio = diff / tol;
                worst = Some(Error::GradCheck { order: level, mode, analytic, numeric, diff, tol });
            }
        }
    }
    if let Some(e) = worst {
        return Err(e);
    }
    if order > 1 {
        // The gradient function x -> J(x)^T w is checked the same way, one order down.
        let w = Tensor::randn(y.shape(), opts.seed + 7, y.dtype(), y.device())?;
        let next = CheckOptions { seed: opts.seed + 1, ..opts };
        let g = |x: &Tensor| Ok(vjp(f, x, &w)?.1);
        return check_dyn(&g, x, order - 1, level + 1, next);
    }
    Ok(())
}
