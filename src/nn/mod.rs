//! Neural-network building blocks in a functional style: a model is a tree of [`Module`]s
//! that read their weights from a [`Params`] list by index, so the same code runs plain
//! (with the stored tensors) and under `value_and_grad_many` (with tracked copies).
//!
//! ```no_run
//! use wgrad::nn::{self, Activation, Linear, Module, Params, Sequential};
//! use wgrad::{value_and_grad_many, DType, Device, Tensor};
//! # fn main() -> wgrad::Result<()> {
//! let dev = Device::best();
//! let mut params = Params::new();
//! let model = Sequential::new()
//!     .push(Linear::new(&mut params, "fc1", 784, 128, 0, &dev)?)
//!     .push(Activation::Relu)
//!     .push(Linear::new(&mut params, "fc2", 128, 10, 1, &dev)?);
//! let x = Tensor::zeros(&[32, 784], DType::F32, &dev)?;
//! let y = Tensor::from_slice(&[3u32; 32], &[32], &dev)?;
//! let (loss, grads) = value_and_grad_many(
//!     |p| nn::cross_entropy(&model.forward(&nn::Ctx::train(p, 0), &x)?, &y),
//!     params.tensors(),
//! )?;
//! # Ok(()) }
//! ```
mod layers;
mod loss;
mod params;

pub use layers::{Activation, AvgPool2d, Cast, Conv2d, Dropout, Flatten, Init, Linear, MaxPool2d, Sequential};
pub use loss::{binary_cross_entropy_with_logits, cross_entropy, mse, softplus};
pub use params::Params;

use crate::{Result, Tensor};

/// What a forward pass sees: the parameter tensors (plain or tracked), train / eval mode,
/// and a step counter that seeds dropout.
pub struct Ctx<'a> {
    pub params: &'a [Tensor],
    pub train: bool,
    pub step: u64,
}

impl<'a> Ctx<'a> {
    pub fn train(params: &'a [Tensor], step: u64) -> Self {
        Ctx { params, train: true, step }
    }
    pub fn eval(params: &'a [Tensor]) -> Self {
        Ctx { params, train: false, step: 0 }
    }
}

/// A layer or a model.
pub trait Module: Send + Sync {
    fn forward(&self, ctx: &Ctx, x: &Tensor) -> Result<Tensor>;
}
