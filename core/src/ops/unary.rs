//! Unary elementwise primitives (and their scalar forms). One block per primitive: the
//! table below lists, for each op, what its VJP saves, its CPU reference, its VJP and its
//! JVP; the GPU launch is the unary skeleton with the op's WGSL body
//! (`wgrad_kernels::UnaryOp`).
//!
//! Elementwise Jacobians are diagonal, so a unary op's VJP and JVP are the same product
//! with f'(x) (PyTorch's `auto_element_wise`), one applied to g, the other to t.
use super::unsaved;
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::storage::CpuStorage;
use crate::tensor::check_float;
use crate::{cpu, DType, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::{BinaryOp, Context, UnaryOp};

/// What a unary rule reads: the input x, the output y, the scalar operand s. For a VJP
/// they come from the node (as saved), for a JVP from the primals.
struct Saved {
    x: Option<Tensor>,
    y: Option<Tensor>,
    s: f64,
}

impl Saved {
    fn from_node(node: &Arc<Node>, x: bool, y: bool, s: f64) -> Result<Saved> {
        Ok(Saved { x: x.then(|| node.input(0)).transpose()?, y: y.then(|| Node::output(node)).transpose()?, s })
    }
    fn from_primals(x: &Tensor, y: &Tensor, s: f64) -> Saved {
        Saved { x: Some(x.clone()), y: Some(y.clone()), s }
    }
    fn x(&self) -> Result<&Tensor> {
        self.x.as_ref().ok_or_else(|| unsaved("x"))
    }
    fn y(&self) -> Result<&Tensor> {
        self.y.as_ref().ok_or_else(|| unsaved("the output"))
    }
}

/// The rules of one unary primitive. `x` / `y` are the input / output (as saved for the
/// VJP, as primals for the JVP), `s` the scalar operand of the scalar forms.
struct UnaryRule {
    saves_x: bool,
    saves_y: bool,
    cpu: fn(&CpuStorage, &crate::Layout, DType, f64) -> CpuStorage,
    vjp: fn(&Saved, &Tensor) -> Result<Tensor>,
    jvp: fn(&Saved, &Tensor) -> Result<Tensor>,
}

macro_rules! unary_rules {
    ($($(#[$doc:meta])* $op:ident { saves: [$sx:expr, $sy:expr], cpu: |$x:ident, $s:ident| $cpu:expr,
        vjp: |$va:ident, $g:ident| $vjp:expr, jvp: |$ja:ident, $t:ident| $jvp:expr $(,)? })*) => {
        fn unary_rule(op: UnaryOp) -> UnaryRule {
            match op {
                $($(#[$doc])* UnaryOp::$op => UnaryRule {
                    saves_x: $sx,
                    saves_y: $sy,
                    cpu: |st, l, dt, sc| cpu::map(st, l, dt, |$x| { let $s = sc; $cpu }),
                    vjp: |$va, $g| $vjp,
                    jvp: |$ja, $t| $jvp,
                },)*
            }
        }
    };
}

unary_rules! {
    // -x: linear
    Neg { saves: [false, false], cpu: |x, _s| -x,
        // d(-x) = -dx
        vjp: |_a, g| g.neg(),
        // jvp(-x) = -t
        jvp: |_a, t| t.neg() }
    Exp { saves: [false, true], cpu: |x, _s| x.exp(),
        // d exp(x) = exp(x) dx
        vjp: |a, g| g.mul(a.y()?),
        // jvp exp(x) = exp(x) t
        jvp: |a, t| t.mul(a.y()?) }
    Log { saves: [true, false], cpu: |x, _s| x.ln(),
        // d log(x) = dx / x
        vjp: |a, g| g.div(a.x()?),
        // jvp log(x) = t / x
        jvp: |a, t| t.div(a.x()?) }
    Sqrt { saves: [false, true], cpu: |x, _s| x.sqrt(),
        // d sqrt(x) = dx / (2 sqrt(x))
        vjp: |a, g| g.div(&a.y()?.mul_scalar(2.0)?),
        // jvp sqrt(x) = t / (2 sqrt(x))
        jvp: |a, t| t.div(&a.y()?.mul_scalar(2.0)?) }
    Abs { saves: [true, false], cpu: |x, _s| x.abs(),
        // d |x| = sign(x) dx
        vjp: |a, g| g.mul(&a.x()?.sign()?),
        // jvp |x| = sign(x) t
        jvp: |a, t| t.mul(&a.x()?.sign()?) }
    Tanh { saves: [false, true], cpu: |x, _s| tanh(x),
        // d tanh(x) = (1 - tanh(x)^2) dx
        vjp: |a, g| g.mul(&one_minus_square(a.y()?)?),
        // jvp tanh(x) = (1 - tanh(x)^2) t
        jvp: |a, t| t.mul(&one_minus_square(a.y()?)?) }
    Sigmoid { saves: [false, true], cpu: |x, _s| 1.0 / (1.0 + (-x).exp()),
        // d sigmoid(x) = s (1 - s) dx
        vjp: |a, g| g.mul(&sigmoid_slope(a.y()?)?),
        // jvp sigmoid(x) = s (1 - s) t
        jvp: |a, t| t.mul(&sigmoid_slope(a.y()?)?) }
    Relu { saves: [true, false], cpu: |x, _s| if x <= 0.0 { 0.0 } else { x },
        // d relu(x) = [x > 0] dx (one kernel: where_positive)
        vjp: |a, g| g.binary(BinaryOp::WherePositive, a.x()?),
        // jvp relu(x) = [x > 0] t
        jvp: |a, t| t.binary(BinaryOp::WherePositive, a.x()?) }
    Sin { saves: [true, false], cpu: |x, _s| x.sin(),
        // d sin(x) = cos(x) dx
        vjp: |a, g| g.mul(&a.x()?.cos()?),
        // jvp sin(x) = cos(x) t
        jvp: |a, t| t.mul(&a.x()?.cos()?) }
    Cos { saves: [true, false], cpu: |x, _s| x.cos(),
        // d cos(x) = -sin(x) dx
        vjp: |a, g| g.mul(&a.x()?.sin()?.neg()?),
        // jvp cos(x) = -sin(x) t
        jvp: |a, t| t.mul(&a.x()?.sin()?.neg()?) }
    Recip { saves: [false, true], cpu: |x, _s| 1.0 / x,
        // d (1/x) = -(1/x)^2 dx
        vjp: |a, g| g.mul(&a.y()?.square()?)?.neg(),
        // jvp (1/x) = -(1/x)^2 t
        jvp: |a, t| t.mul(&a.y()?.square()?)?.neg() }
    Sign { saves: [false, false], cpu: |x, _s| if x.is_nan() { x } else if x > 0.0 { 1.0 } else if x < 0.0 { -1.0 } else { 0.0 },
        // sign is piecewise constant: d sign(x) = 0
        vjp: |_a, g| g.zeros_like(),
        // jvp sign(x) = 0
        jvp: |_a, t| t.zeros_like() }
    AddScalar { saves: [false, false], cpu: |x, s| x + s,
        // d (x + s) = dx
        vjp: |_a, g| Ok(g.clone()),
        // jvp (x + s) = t
        jvp: |_a, t| Ok(t.clone()) }
    MulScalar { saves: [false, false], cpu: |x, s| x * s,
        // d (s x) = s dx
        vjp: |a, g| g.mul_scalar(a.s),
        // jvp (s x) = s t
        jvp: |a, t| t.mul_scalar(a.s) }
    PowScalar { saves: [true, false], cpu: |x, s| cpu::pow_num(x, s),
        // d x^p = p x^(p-1) dx
        vjp: |a, g| g.mul(&a.x()?.powf(a.s - 1.0)?.mul_scalar(a.s)?),
        // jvp x^p = p x^(p-1) t
        jvp: |a, t| t.mul(&a.x()?.powf(a.s - 1.0)?.mul_scalar(a.s)?) }
    RPowScalar { saves: [false, true], cpu: |x, s| cpu::pow_num(s, x),
        // d b^x = b^x ln(b) dx
        vjp: |a, g| g.mul(&a.y()?.mul_scalar(a.s.ln())?),
        // jvp b^x = b^x ln(b) t
        jvp: |a, t| t.mul(&a.y()?.mul_scalar(a.s.ln())?) }
    Erf { saves: [true, false], cpu: |x, _s| erf(x),
        // d erf(x) = 2/sqrt(pi) exp(-x^2) dx
        vjp: |a, g| g.mul(&erf_slope(a.x()?)?),
        // jvp erf(x) = 2/sqrt(pi) exp(-x^2) t
        jvp: |a, t| t.mul(&erf_slope(a.x()?)?) }
    Gelu { saves: [true, false], cpu: |x, _s| 0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2)),
        // d gelu(x) = gelu'(x) dx, gelu'(x) = Phi(x) + x phi(x) (one kernel: gelu_slope)
        vjp: |a, g| g.mul(&a.x()?.unary(UnaryOp::GeluSlope, 0.0)?),
        // jvp gelu(x) = gelu'(x) t
        jvp: |a, t| t.mul(&a.x()?.unary(UnaryOp::GeluSlope, 0.0)?) }
    GeluSlope { saves: [true, false], cpu: |x, _s| gelu_slope(x),
        // d gelu'(x) = gelu''(x) dx, gelu''(x) = phi(x) (2 - x^2)
        vjp: |a, g| g.mul(&gelu_curvature(a.x()?)?),
        // jvp gelu'(x) = gelu''(x) t
        jvp: |a, t| t.mul(&gelu_curvature(a.x()?)?) }
    GeluTanh { saves: [true, false], cpu: |x, _s| gelu_tanh(x).0,
        // d gelu_tanh(x) = gelu_tanh'(x) dx (one kernel: gelu_tanh_slope)
        vjp: |a, g| g.mul(&a.x()?.unary(UnaryOp::GeluTanhSlope, 0.0)?),
        // jvp gelu_tanh(x) = gelu_tanh'(x) t
        jvp: |a, t| t.mul(&a.x()?.unary(UnaryOp::GeluTanhSlope, 0.0)?) }
    GeluTanhSlope { saves: [true, false], cpu: |x, _s| gelu_tanh(x).1,
        // d gelu_tanh'(x) = gelu_tanh''(x) dx (see gelu_tanh_curvature)
        vjp: |a, g| g.mul(&gelu_tanh_curvature(a.x()?)?),
        // jvp gelu_tanh'(x) = gelu_tanh''(x) t
        jvp: |a, t| t.mul(&gelu_tanh_curvature(a.x()?)?) }
    Log1p { saves: [true, false], cpu: |x, _s| x.ln_1p(),
        // d log(1 + x) = dx / (1 + x)
        vjp: |a, g| g.div(&a.x()?.add_scalar(1.0)?),
        // jvp log(1 + x) = t / (1 + x)
        jvp: |a, t| t.div(&a.x()?.add_scalar(1.0)?) }
}

/// tanh in f64 through one exp (libm's tanh goes through expm1: 3x slower here): the odd
/// series below 1/16 (truncation below 1e-14 relative), (1 - e) / (1 + e) with
/// e = exp(-2|x|) up to 20 (at most 3 bits lost to cancellation), +-1 beyond.
fn tanh(x: f64) -> f64 {
    let a = x.abs();
    if a < 0.0625 {
        let q = x * x;
        return x * (1.0 + q * (-1.0 / 3.0 + q * (2.0 / 15.0 + q * (-17.0 / 315.0 + q * (62.0 / 2835.0)))));
    }
    if a.is_nan() || a > 20.0 {
        return if a.is_nan() { x } else { 1f64.copysign(x) };
    }
    let e = (-2.0 * a).exp();
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// The f32 forms of the transcendental ops on contiguous f32 tensors, vectorized through
/// [`cpu::exp_f32`]: each is written without cancellation (gelu_tanh through
/// 1 + tanh(u) = 2 sigmoid(2u)), so it stays within the f64 reference's transcendental
/// tolerance (a few ulp; tests/suite/elementwise.rs sweeps them).
fn fast_f32(op: UnaryOp, st: &CpuStorage, l: &crate::Layout, dt: DType) -> Option<CpuStorage> {
    const C: f32 = SQRT_2_OVER_PI as f32;
    const K: f32 = GELU_TANH_K as f32;
    match op {
        UnaryOp::Exp => cpu::map_f32(st, l, dt, cpu::exp_f32),
        UnaryOp::Sigmoid => cpu::map_f32(st, l, dt, |x| 1.0 / (1.0 + cpu::exp_f32(-x))),
        UnaryOp::GeluTanh => cpu::map_f32(st, l, dt, |x| x / (1.0 + cpu::exp_f32(-2.0 * C * (x + K * x * x * x)))),
        UnaryOp::GeluTanhSlope => cpu::map_f32(st, l, dt, |x| {
            // slope = s + 2 x s (1 - s) u' with s = sigmoid(2u), u' = c (1 + 3 k x^2)
            let s = 1.0 / (1.0 + cpu::exp_f32(-2.0 * C * (x + K * x * x * x)));
            // a saturated s leaves only s (x^2 overflows f32 long after s saturates)
            let curve = if s == 0.0 || s == 1.0 { 0.0 } else { 2.0 * x * s * (1.0 - s) * C * (1.0 + 3.0 * K * x * x) };
            s + curve
        }),
        _ => None,
    }
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const GELU_TANH_K: f64 = 0.044715;

/// gelu'(x) = Phi(x) + x phi(x) in f64.
fn gelu_slope(x: f64) -> f64 {
    let phi = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    0.5 * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2)) + x * phi
}

/// gelu''(x) = phi(x) (2 - x^2), phi the standard normal density.
fn gelu_curvature(x: &Tensor) -> Result<Tensor> {
    let phi = x.square()?.mul_scalar(-0.5)?.exp()?.mul_scalar(1.0 / (2.0 * std::f64::consts::PI).sqrt())?;
    phi.mul(&x.square()?.neg()?.add_scalar(2.0)?)
}

/// (gelu_tanh(x), gelu_tanh'(x)) in f64, written without cancellation through
/// 1 + tanh(u) = 2 s, 1 - tanh(u)^2 = 4 s (1 - s) with s = sigmoid(2u), u = c (x + k x^3):
/// value x s, slope s + 2 x s (1 - s) u' with u' = c (1 + 3 k x^2).
fn gelu_tanh(x: f64) -> (f64, f64) {
    let s = 1.0 / (1.0 + (-2.0 * SQRT_2_OVER_PI * (x + GELU_TANH_K * x * x * x)).exp());
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_K * x * x);
    (x * s, s + 2.0 * x * s * (1.0 - s) * du)
}

/// gelu_tanh''(x) = t' + x/2 t'' with t' = (1 - t^2) u', t'' = -2 t t' u' + (1 - t^2) u'',
/// u' = c (1 + 3 k x^2), u'' = 6 c k x.
fn gelu_tanh_curvature(x: &Tensor) -> Result<Tensor> {
    let x2 = x.square()?;
    let t = x.mul(&x2)?.mul_scalar(GELU_TANH_K)?.add(x)?.mul_scalar(SQRT_2_OVER_PI)?.tanh()?;
    let sech2 = one_minus_square(&t)?;
    let du = x2.mul_scalar(3.0 * GELU_TANH_K)?.add_scalar(1.0)?.mul_scalar(SQRT_2_OVER_PI)?;
    let dt = sech2.mul(&du)?;
    let ddu = x.mul_scalar(6.0 * SQRT_2_OVER_PI * GELU_TANH_K)?;
    let ddt = t.mul(&dt)?.mul(&du)?.mul_scalar(-2.0)?.add(&sech2.mul(&ddu)?)?;
    dt.add(&x.mul(&ddt)?.mul_scalar(0.5)?)
}

fn one_minus_square(y: &Tensor) -> Result<Tensor> {
    y.square()?.neg()?.add_scalar(1.0)
}

fn sigmoid_slope(s: &Tensor) -> Result<Tensor> {
    s.mul(&s.neg()?.add_scalar(1.0)?)
}

fn erf_slope(x: &Tensor) -> Result<Tensor> {
    x.square()?.neg()?.exp()?.mul_scalar(std::f64::consts::FRAC_2_SQRT_PI)
}

/// erf in f64 (the CPU reference): its Taylor series below 2.5, where the terms stay small
/// enough to sum in f64 to ~1e-15, and the continued fraction of erfc beyond.
fn erf(x: f64) -> f64 {
    let a = x.abs();
    if a.is_nan() {
        return x;
    }
    if a < 2.5 {
        let (q, mut term, mut sum) = (x * x, x, x);
        for n in 1..200 {
            term *= -q / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        return sum * std::f64::consts::FRAC_2_SQRT_PI;
    }
    // erfc(a) = exp(-a^2) / sqrt(pi) / (a + (1/2) / (a + 1 / (a + (3/2) / (a + ...))))
    let mut f = a;
    for k in (1..80).rev() {
        f = a + (k as f64 / 2.0) / f;
    }
    let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / f;
    (1.0 - erfc).copysign(x)
}

/// A unary primitive: the op and its scalar operand.
pub struct Unary {
    pub op: UnaryOp,
    pub scalar: f64,
}

impl Primitive for Unary {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16_not_native(inputs)
    }
    fn host_values(&self) -> Vec<f64> {
        vec![self.scalar]
    }
    fn name(&self) -> String {
        format!("{:?}", self.op).to_lowercase()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_float(self.op.name(), x[0])?;
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        unary_rule(self.op).saves_x
    }
    fn saves_output(&self) -> bool {
        unary_rule(self.op).saves_y
    }
    fn fusible(&self) -> Option<crate::fusion::Fusible> {
        Some(crate::fusion::Fusible::Unary(self.op, self.scalar))
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let st = x[0].cpu_storage();
        let (st, l) = (&*st, x[0].layout());
        if let Some(fast) = fast_f32(self.op, st, l, out.dtype) {
            return Ok(out.cpu(fast));
        }
        Ok(out.cpu((unary_rule(self.op).cpu)(st, l, out.dtype, self.scalar)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let buf = ctx.unary(self.op, x[0].kdtype(), self.scalar as f32, x[0].view(), x[0].shape())?;
        Ok(out.gpu(buf, x[0].device()))
    }
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let rule = unary_rule(self.op);
        let saved = Saved::from_node(node, rule.saves_x, rule.saves_y, self.scalar)?;
        Ok(vec![Some((rule.vjp)(&saved, g)?)])
    }
    fn jvp(&self, x: &[Tensor], y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let Some(t) = &t[0] else { return Ok(None) };
        let saved = Saved::from_primals(&x[0], y, self.scalar);
        Ok(Some((unary_rule(self.op).jvp)(&saved, t)?))
    }
    /// batch: elementwise, the op on the physical tensor
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].unary(self.op, self.scalar)
    }
}

impl Tensor {
    /// Apply a unary primitive; `s` is the scalar operand of the scalar forms.
    pub fn unary(&self, op: UnaryOp, s: f64) -> Result<Tensor> {
        check_float(op.name(), self)?;
        bind(Arc::new(Unary { op, scalar: s }), &[self])
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Neg, 0.0)
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp, 0.0)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log, 0.0)
    }
    /// log(1 + x), accurate for small x (where `(1 + x).log()` loses x's digits).
    pub fn log1p(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log1p, 0.0)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt, 0.0)
    }
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs, 0.0)
    }
    pub fn tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Tanh, 0.0)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sigmoid, 0.0)
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu, 0.0)
    }
    pub fn sin(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sin, 0.0)
    }
    pub fn cos(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Cos, 0.0)
    }
    /// The error function 2/sqrt(pi) * integral_0^x exp(-u^2) du.
    pub fn erf(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Erf, 0.0)
    }
    /// gelu(x) = x Phi(x) = x / 2 (1 + erf(x / sqrt(2))), exact (PyTorch's default).
    pub fn gelu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Gelu, 0.0)
    }
    /// The tanh approximation of gelu: x / 2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    /// (PyTorch's `approximate='tanh'`, GPT-2's).
    pub fn gelu_tanh(&self) -> Result<Tensor> {
        self.unary(UnaryOp::GeluTanh, 0.0)
    }
    /// 1 / x.
    pub fn recip(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Recip, 0.0)
    }
    /// -1, 0 or 1 (NaN stays NaN).
    pub fn sign(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sign, 0.0)
    }
    pub fn square(&self) -> Result<Tensor> {
        self.mul(self)
    }
    pub fn add_scalar(&self, s: f64) -> Result<Tensor> {
        self.unary(UnaryOp::AddScalar, s)
    }
    pub fn sub_scalar(&self, s: f64) -> Result<Tensor> {
        self.unary(UnaryOp::AddScalar, -s)
    }
    pub fn mul_scalar(&self, s: f64) -> Result<Tensor> {
        self.unary(UnaryOp::MulScalar, s)
    }
    pub fn div_scalar(&self, s: f64) -> Result<Tensor> {
        self.unary(UnaryOp::MulScalar, 1.0 / s)
    }
    /// x ** p for a scalar exponent.
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        self.unary(UnaryOp::PowScalar, p)
    }
    /// base ** x for a scalar base.
    pub fn rpowf(&self, base: f64) -> Result<Tensor> {
        self.unary(UnaryOp::RPowScalar, base)
    }
}
