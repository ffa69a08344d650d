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
mod attention;
mod flat;
mod functional;
mod layers;
mod loss;
mod norm;
mod params;

pub use attention::{Embedding, MultiheadAttention};
pub use flat::FlatGroup;
pub use functional::{
    batch_norm, dropout, embedding, gelu, gelu_tanh, layer_norm, rms_norm, scaled_dot_product_attention,
};
pub use layers::{
    Activation, AvgPool2d, Cast, Checkpointed, Conv2d, Dropout, Flatten, Init, Linear, MaxPool2d, Sequential,
};
pub use loss::{binary_cross_entropy_with_logits, cross_entropy, mse, softplus};
pub use norm::{BatchNorm1d, BatchNorm2d, LayerNorm, RmsNorm};
pub use params::{Buffers, Params};

use crate::{Error, Result, Tensor};

/// What a forward pass sees: the parameter tensors (plain or tracked), the model's
/// buffers (running statistics; needed by layers that keep state), train / eval mode, and
/// a step counter that seeds dropout.
pub struct Ctx<'a> {
    pub params: &'a [Tensor],
    pub buffers: Option<&'a Buffers>,
    pub train: bool,
    pub step: u64,
}

impl<'a> Ctx<'a> {
    pub fn train(params: &'a [Tensor], step: u64) -> Self {
        Ctx { params, buffers: None, train: true, step }
    }
    pub fn eval(params: &'a [Tensor]) -> Self {
        Ctx { params, buffers: None, train: false, step: 0 }
    }
    /// The same context with the model's buffers ([`Params::buffers`]).
    pub fn with_buffers(self, buffers: &'a Buffers) -> Self {
        Ctx { buffers: Some(buffers), ..self }
    }
    /// The buffers, or an error naming the layer that needs them.
    pub fn buffers(&self, op: &'static str) -> Result<&'a Buffers> {
        self.buffers.ok_or_else(|| Error::Invalid {
            op,
            msg: "this layer keeps running statistics: pass the model's buffers with Ctx::with_buffers".into(),
        })
    }
}

/// A layer or a model. `forward` takes one input; a layer of several inputs (attention:
/// query, key, value) reads them through `forward_many`, whose default passes one input
/// on to `forward`.
pub trait Module: Send + Sync {
    fn forward(&self, ctx: &Ctx, x: &Tensor) -> Result<Tensor>;
    fn forward_many(&self, ctx: &Ctx, inputs: &[&Tensor]) -> Result<Tensor> {
        match inputs {
            [x] => self.forward(ctx, x),
            _ => Err(Error::Invalid {
                op: "Module::forward_many",
                msg: format!("this layer takes one input, got {}", inputs.len()),
            }),
        }
    }
}
