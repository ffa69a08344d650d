//! Elementwise primitives with numpy broadcasting: unary, scalar forms, binary, comparisons, where.
use super::{cpu_of, run};
use crate::graph::{record, Op};
use crate::shape::broadcast_shapes;
use crate::tensor::{check_float, check_same};
use crate::{cpu, DType, Error, Result, Tensor};
use wgrad_kernels::{BinaryOp, UnaryOp};

/// Which of (input, output) a unary op's VJP reads.
fn unary_saves(op: UnaryOp) -> (bool, bool) {
    use UnaryOp::*;
    match op {
        Exp | Sqrt | Tanh | Sigmoid | Recip | RPowScalar => (false, true),
        Log | Abs | Relu | Sin | Cos | PowScalar => (true, false),
        Neg | Sign | AddScalar | MulScalar => (false, false),
    }
}

fn binary_saves(op: BinaryOp) -> (bool, bool) {
    use BinaryOp::*;
    match op {
        Mul | Div | Maximum | Minimum => (true, false),
        Pow => (true, true),
        Add | Sub | Eq | Ne | Lt | Le | Gt | Ge => (false, false),
        WherePositive => (true, false),
    }
}

fn is_comparison(op: BinaryOp) -> bool {
    use BinaryOp::*;
    matches!(op, Eq | Ne | Lt | Le | Gt | Ge)
}

impl Tensor {
    /// Apply a unary primitive; `s` is the scalar operand of the scalar forms.
    pub fn unary(&self, op: UnaryOp, s: f64) -> Result<Tensor> {
        check_float("unary", self)?;
        if self.dtype() == DType::F16 && !self.native_f16() {
            return self.via_f32(|x| x.unary(op, s));
        }
        let out = run(
            self,
            self.shape(),
            self.dtype(),
            || Ok(cpu::map_unary(cpu_of(self), self.layout(), self.dtype(), op, s)),
            |ctx| Ok(ctx.unary(op, self.kdtype(), s as f32, self.view(), self.shape())?),
        )?;
        let (si, so) = unary_saves(op);
        Ok(record(out, Op::Unary(op, s), &[self], &[si], so))
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

    /// Apply a binary primitive with numpy broadcasting.
    pub fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
        let name = "binary";
        check_same(name, &[self, rhs])?;
        if self.dtype() == DType::U32 {
            if is_comparison(op) {
                return self.to_dtype(DType::F32)?.binary(op, &rhs.to_dtype(DType::F32)?);
            }
            check_float(name, self)?;
        }
        if self.dtype() == DType::F16 && !self.native_f16() {
            let r = rhs.to_dtype(DType::F32)?;
            return self.via_f32(|x| x.binary(op, &r));
        }
        let shape = broadcast_shapes(name, self.shape(), rhs.shape())?;
        let la = self.layout().broadcast_to(&shape);
        let lb = rhs.layout().broadcast_to(&shape);
        let (a, b) = (self.with_layout(la), rhs.with_layout(lb));
        let out = run(
            self,
            &shape,
            self.dtype(),
            || Ok(cpu::zip_binary((cpu_of(&a), a.layout()), (cpu_of(&b), b.layout()), a.dtype(), op)),
            |ctx| Ok(ctx.binary(op, a.kdtype(), a.view(), b.view(), &shape)?),
        )?;
        let (si, so) = binary_saves(op);
        Ok(record(out, Op::Binary(op), &[self, rhs], &[si, si], so))
    }

    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, rhs)
    }
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Sub, rhs)
    }
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, rhs)
    }
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Div, rhs)
    }
    pub fn pow(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Pow, rhs)
    }
    /// Elementwise max; NaN propagates.
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Maximum, rhs)
    }
    /// Elementwise min; NaN propagates.
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Minimum, rhs)
    }
    /// 1 where equal, else 0 (a mask in the float dtype; f32 for u32 inputs).
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Eq, rhs)
    }
    pub fn ne(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Ne, rhs)
    }
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Lt, rhs)
    }
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Le, rhs)
    }
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Gt, rhs)
    }
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Ge, rhs)
    }

    /// `self != 0 ? on_true : on_false`, all three broadcast together (`self` is the mask).
    pub fn where_(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let name = "where";
        check_same(name, &[on_true, on_false])?;
        let cond = if self.dtype() == on_true.dtype() { self.clone() } else { self.to_dtype(on_true.dtype())?.detach() };
        check_same(name, &[&cond, on_true])?;
        check_float(name, on_true)?;
        if on_true.dtype() == DType::F16 && !on_true.native_f16() {
            let (c, f) = (cond.to_dtype(DType::F32)?, on_false.to_dtype(DType::F32)?);
            return on_true.via_f32(|t| c.where_(t, &f));
        }
        let s1 = broadcast_shapes(name, cond.shape(), on_true.shape())?;
        let shape = broadcast_shapes(name, &s1, on_false.shape())?;
        let c = cond.with_layout(cond.layout().broadcast_to(&shape));
        let a = on_true.with_layout(on_true.layout().broadcast_to(&shape));
        let b = on_false.with_layout(on_false.layout().broadcast_to(&shape));
        let out = run(
            on_true,
            &shape,
            on_true.dtype(),
            || {
                let (vc, va, vb) = (cpu::read(cpu_of(&c), c.layout()), cpu::read(cpu_of(&a), a.layout()), cpu::read(cpu_of(&b), b.layout()));
                let v = vc.iter().zip(va).zip(vb).map(|((&k, x), y)| if k != 0.0 { x } else { y }).collect();
                Ok(crate::storage::CpuStorage::from_f64(v, a.dtype()))
            },
            |ctx| Ok(ctx.where_(a.kdtype(), c.view(), a.view(), b.view(), &shape)?),
        )?;
        Ok(record(out, Op::Where, &[&cond.detach(), on_true, on_false], &[true, false, false], false))
    }

    /// Clamp into [lo, hi] (NaN stays NaN), composed of maximum and minimum.
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        if lo > hi {
            return Err(Error::Invalid { op: "clamp", msg: format!("lo {lo} > hi {hi}") });
        }
        let l = self.full_like(lo)?;
        let h = self.full_like(hi)?;
        self.maximum(&l)?.minimum(&h)
    }
}

/// A user elementwise kernel: `wgsl_body` is the body of `fn unary_op(x: T, s: T) -> T`
/// (WGSL, `T` = f32; the helpers of shaders/common.wgsl are in scope) and `cpu` the same
/// function for the CPU device. Give it a derivative by wrapping [`Tensor::map_kernel`] in
/// [`crate::custom_op`] with a VJP.
#[derive(Clone)]
pub struct ElementwiseKernel {
    id: u32,
    name: String,
    cpu: std::sync::Arc<dyn Fn(f64, f64) -> f64 + Send + Sync>,
}

impl ElementwiseKernel {
    /// Register the kernel; invalid WGSL is an error naming it (checked with naga now).
    pub fn new(name: &str, wgsl_body: &str, cpu: impl Fn(f64, f64) -> f64 + Send + Sync + 'static) -> Result<Self> {
        let id = wgrad_kernels::register_user_unary(name, wgsl_body)
            .map_err(|msg| Error::Gpu(wgrad_kernels::KernelError::Compile { kernel: name.to_string(), msg }))?;
        Ok(ElementwiseKernel { id, name: name.to_string(), cpu: std::sync::Arc::new(cpu) })
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Tensor {
    /// Run a user elementwise kernel (`s` is its scalar operand). It has no derivative of
    /// its own: on a tracked tensor it is an error unless it runs inside [`crate::custom_op`].
    pub fn map_kernel(&self, k: &ElementwiseKernel, s: f64) -> Result<Tensor> {
        check_float("map_kernel", self)?;
        if self.dtype() == DType::F16 {
            return self.via_f32(|x| x.map_kernel(k, s));
        }
        if self.is_tracked() && crate::graph::is_recording() {
            return Err(Error::NotDifferentiable { op: k.name.clone(), order: 1 });
        }
        run(
            self,
            self.shape(),
            self.dtype(),
            || Ok(cpu::map(cpu_of(self), self.layout(), self.dtype(), |x| (k.cpu)(x, s))),
            |ctx| Ok(ctx.user_unary(k.id, s as f32, self.view(), self.shape())?),
        )
    }
}

macro_rules! std_op {
    ($trait:ident, $method:ident, $call:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                self.$call(rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                (&self).$call(&rhs)
            }
        }
        impl std::ops::$trait<f64> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: f64) -> Result<Tensor> {
                let r = self.full_like(rhs)?;
                self.$call(&r)
            }
        }
    };
}
std_op!(Add, add, add);
std_op!(Sub, sub, sub);
std_op!(Mul, mul, mul);
std_op!(Div, div, div);

impl std::ops::Neg for &Tensor {
    type Output = Result<Tensor>;
    fn neg(self) -> Result<Tensor> {
        Tensor::neg(self)
    }
}
