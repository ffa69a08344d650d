//! The arithmetic operators and the numbers binary methods take.
//!
//! `+ - * /` are implemented for `Tensor`, `&Tensor` and a number (`f64`) on either
//! side, and for a `Result<Tensor>` on either side of a tensor, each returning
//! `Result<Tensor>`, so a chain needs one `?`: `let w = (&w - lr * &g)?;`,
//! `((&a * 2.0) + &b)?.exp()`. (Rust's orphan rule forbids `Result + Result`,
//! `Result + number` and `number + Result`: put a `?` on one side.) A number takes the
//! tensor's dtype and device. `-` negates `Tensor` and `&Tensor`.
use crate::{Result, Tensor};
use std::borrow::Cow;

/// The second operand of a binary method: a tensor, or a number that takes the other
/// operand's dtype and device (`x.gt(0.0)`, `x.maximum(&y)`, `x.pow(2.0)`).
pub enum Operand<'a> {
    Tensor(Cow<'a, Tensor>),
    Number(f64),
}

impl<'a> From<&'a Tensor> for Operand<'a> {
    fn from(t: &'a Tensor) -> Self {
        Operand::Tensor(Cow::Borrowed(t))
    }
}
impl<'a> From<&'a &'a Tensor> for Operand<'a> {
    fn from(t: &'a &'a Tensor) -> Self {
        Operand::Tensor(Cow::Borrowed(*t))
    }
}
impl From<Tensor> for Operand<'_> {
    fn from(t: Tensor) -> Self {
        Operand::Tensor(Cow::Owned(t))
    }
}
macro_rules! number_operand {
    ($($t:ty),*) => {$(
        impl From<$t> for Operand<'_> {
            fn from(v: $t) -> Self {
                Operand::Number(v as f64)
            }
        }
    )*};
}
number_operand!(f64, f32, i32, i64, u32, usize);

impl<'a> Operand<'a> {
    /// The operand as a tensor: a number becomes a 0-d tensor of `like`'s dtype and device
    /// (it broadcasts against anything).
    pub fn to_tensor(self, like: &Tensor) -> Result<Cow<'a, Tensor>> {
        match self {
            Operand::Tensor(t) => Ok(t),
            Operand::Number(v) => Ok(Cow::Owned(Tensor::full_dtype(v, &[], like.dtype(), like.device())?)),
        }
    }
}

/// `lhs op rhs` for owned or borrowed tensors, as the named method.
macro_rules! tensor_tensor {
    ($trait:ident, $method:ident, $call:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Tensor::$call(self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Tensor::$call(self, &rhs)
            }
        }
        impl std::ops::$trait<&Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Tensor::$call(&self, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Tensor::$call(&self, &rhs)
            }
        }
        // a Result on either side of a tensor: its error propagates
        impl std::ops::$trait<Result<Tensor>> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Result<Tensor>) -> Result<Tensor> {
                Tensor::$call(self, &rhs?)
            }
        }
        impl std::ops::$trait<Result<Tensor>> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Result<Tensor>) -> Result<Tensor> {
                Tensor::$call(&self, &rhs?)
            }
        }
        impl std::ops::$trait<&Tensor> for Result<Tensor> {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Tensor::$call(&self?, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Result<Tensor> {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Tensor::$call(&self?, &rhs)
            }
        }
    };
}
tensor_tensor!(Add, add, add);
tensor_tensor!(Sub, sub, sub);
tensor_tensor!(Mul, mul, mul);
tensor_tensor!(Div, div, div);

/// `tensor op number` and `number op tensor`, with the number in the tensor's dtype.
/// Sums and products run as the scalar primitives (`add_scalar`, `mul_scalar`: exact, and
/// no constant tensor is made); quotients divide by a 0-d constant, so that `x / 3.0`
/// rounds as a division does.
macro_rules! tensor_number {
    ($num:ty) => {
        tensor_number!(@both $num, Add, add, |t: &Tensor, v: f64| t.add_scalar(v), |v: f64, t: &Tensor| t.add_scalar(v));
        tensor_number!(@both $num, Sub, sub, |t: &Tensor, v: f64| t.add_scalar(-v), |v: f64, t: &Tensor| t.neg()?.add_scalar(v));
        tensor_number!(@both $num, Mul, mul, |t: &Tensor, v: f64| t.mul_scalar(v), |v: f64, t: &Tensor| t.mul_scalar(v));
        tensor_number!(@both $num, Div, div, |t: &Tensor, v: f64| t.div(v), |v: f64, t: &Tensor| Tensor::full_dtype(v, &[], t.dtype(), t.device())?.div(t));
    };
    (@both $num:ty, $trait:ident, $method:ident, $tensor_first:expr, $number_first:expr) => {
        impl std::ops::$trait<$num> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: $num) -> Result<Tensor> {
                ($tensor_first)(self, rhs as f64)
            }
        }
        impl std::ops::$trait<$num> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: $num) -> Result<Tensor> {
                ($tensor_first)(&self, rhs as f64)
            }
        }
        impl std::ops::$trait<&Tensor> for $num {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                ($number_first)(self as f64, rhs)
            }
        }
        impl std::ops::$trait<Tensor> for $num {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                ($number_first)(self as f64, &rhs)
            }
        }
    };
}
// f64 only: with a second float type, `lr * &g` for `let lr = 0.1` could not infer lr
tensor_number!(f64);

impl std::ops::Neg for &Tensor {
    type Output = Result<Tensor>;
    fn neg(self) -> Result<Tensor> {
        Tensor::neg(self)
    }
}
impl std::ops::Neg for Tensor {
    type Output = Result<Tensor>;
    fn neg(self) -> Result<Tensor> {
        Tensor::neg(&self)
    }
}
