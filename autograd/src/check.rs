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
    /// Check an f64 copy of `x` on the CPU instead of `x` itself (the reference mode: exact
    /// derivatives of the math, not of the kernels). A function that captures tensors of
    /// another dtype or device cannot run there: that is an error naming `check_grads`.
    pub cpu_f64: bool,
}

impl CheckOptions {
    /// f64: eps 1e-6, atol 1e-5, rtol 1e-3 (PyTorch gradcheck).
    pub fn f64() -> Self {
        CheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
            projections: 3,
            seed: 0,
            forward: true,
            reverse: true,
            cpu_f64: false,
        }
    }
    /// f32: eps 1e-3, rtol = atol = 2e-3 (JAX).
    pub fn f32() -> Self {
        CheckOptions { eps: 1e-3, atol: 2e-3, rtol: 2e-3, ..CheckOptions::f64() }
    }
    /// f16: eps 1e-2, rtol = atol = 5e-2.
    pub fn f16() -> Self {
        CheckOptions { eps: 1e-2, atol: 5e-2, rtol: 5e-2, ..CheckOptions::f64() }
    }
    /// The tolerances of `dtype` ([`check_grads`]'s choice).
    pub fn for_dtype(dtype: DType) -> Self {
        match dtype {
            DType::F16 => CheckOptions::f16(),
            DType::F64 => CheckOptions::f64(),
            _ => CheckOptions::f32(),
        }
    }
    /// The reference mode: `x` copied to the CPU in f64, f64 tolerances.
    pub fn cpu_f64() -> Self {
        CheckOptions { cpu_f64: true, ..CheckOptions::f64() }
    }
}

fn dot(a: &Tensor, b: &Tensor) -> Result<f64> {
    let s = a.mul(b)?.sum_all()?;
    s.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_scalar::<f64>()
}

/// Check derivatives of `f` at `x` up to `order` (each level against central differences of
/// the one below), in reverse mode (the VJP) and forward mode (the JVP). It runs `f` as
/// given, on `x`'s device and in its dtype, so on a GPU the WGSL kernels are what is
/// checked, with the tolerances of the dtype ([`CheckOptions::for_dtype`]: JAX's 2e-3 in
/// f32). The error names the worst mismatch, its order and its mode.
/// [`CheckOptions::cpu_f64`] checks an f64 CPU copy instead.
pub fn check_grads<F>(f: F, x: &Tensor, order: usize) -> Result<()>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    check_grads_with(f, x, order, CheckOptions::for_dtype(x.dtype()))
}

/// [`check_grads`] with explicit options.
pub fn check_grads_with<F>(f: F, x: &Tensor, order: usize, opts: CheckOptions) -> Result<()>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    if !opts.cpu_f64 {
        return check_dyn(&f, x, order, 1, opts);
    }
    let x64 = x.detach().to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    check_dyn(&f, &x64, order, 1, opts).map_err(|e| match e {
        Error::DTypeMismatch { .. } | Error::DeviceMismatch { .. } | Error::UnsupportedDType { .. } => Error::Invalid {
            op: "check_grads",
            msg: format!(
                "CheckOptions::cpu_f64 runs f on an f64 CPU copy of x ({:?} on {}), and f failed there \
                     ({e}): it captures tensors of another dtype or device, which check_grads cannot \
                     convert. Check at x's own device and dtype (check_grads, CheckOptions::f32) or \
                     build the captured tensors from x's dtype and device",
                x.dtype(),
                x.device()
            ),
        },
        e => e,
    })
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
        let u = Tensor::randn_dtype(x.shape(), seed, x.dtype(), x.device())?;
        let v = Tensor::randn_dtype(y.shape(), seed + 50, y.dtype(), y.device())?;
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
        let w = Tensor::randn_dtype(y.shape(), opts.seed + 7, y.dtype(), y.device())?;
        let next = CheckOptions { seed: opts.seed + 1, ..opts };
        let g = |x: &Tensor| Ok(vjp(f, x, &w)?.1);
        return check_dyn(&g, x, order - 1, level + 1, next);
    }
    Ok(())
}
