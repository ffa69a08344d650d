//! Normalization layers: LayerNorm and RMSNorm over the last axis, BatchNorm over the
//! channels of [batch, channels, ..] with running statistics kept in the model's buffers.
use super::functional::{affine_channels, batch_norm};
use super::{Ctx, Module, Params};
use crate::{DType, Device, Error, Result, Tensor};

/// Layer normalization over the last axis with a learned weight (ones) and bias (zeros).
pub struct LayerNorm {
    w: usize,
    b: usize,
    pub eps: f64,
}

impl LayerNorm {
    /// eps 1e-5, as PyTorch.
    pub fn new(p: &mut Params, name: &str, dim: usize, dev: &Device) -> Result<Self> {
        let w = p.add(&format!("{name}.weight"), Tensor::ones(&[dim], DType::F32, dev)?);
        let b = p.add(&format!("{name}.bias"), Tensor::zeros(&[dim], DType::F32, dev)?);
        Ok(LayerNorm { w, b, eps: 1e-5 })
    }
}

impl Module for LayerNorm {
    fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        super::layer_norm(x, &c.params[self.w], &c.params[self.b], self.eps)
    }
}

/// RMS normalization over the last axis with a learned weight (ones).
pub struct RmsNorm {
    w: usize,
    pub eps: f64,
}

impl RmsNorm {
    /// eps 1e-6.
    pub fn new(p: &mut Params, name: &str, dim: usize, dev: &Device) -> Result<Self> {
        let w = p.add(&format!("{name}.weight"), Tensor::ones(&[dim], DType::F32, dev)?);
        Ok(RmsNorm { w, eps: 1e-6 })
    }
}

impl Module for RmsNorm {
    fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        super::rms_norm(x, &c.params[self.w], self.eps)
    }
}

/// Batch normalization over the channels (axis 1), PyTorch's semantics: in training the
/// batch's statistics normalize, and the running mean and (unbiased) variance move by
/// `momentum` toward them; in eval the running statistics normalize. The running
/// statistics are buffers: saved and loaded with the weights.
struct BatchNorm {
    op: &'static str,
    ranks: &'static [usize],
    w: usize,
    b: usize,
    running_mean: usize,
    running_var: usize,
    momentum: f64,
    eps: f64,
}

impl BatchNorm {
    fn new(
        op: &'static str,
        ranks: &'static [usize],
        p: &mut Params,
        name: &str,
        channels: usize,
        dev: &Device,
    ) -> Result<Self> {
        Ok(BatchNorm {
            op,
            ranks,
            w: p.add(&format!("{name}.weight"), Tensor::ones(&[channels], DType::F32, dev)?),
            b: p.add(&format!("{name}.bias"), Tensor::zeros(&[channels], DType::F32, dev)?),
            running_mean: p.add_buffer(&format!("{name}.running_mean"), Tensor::zeros(&[channels], DType::F32, dev)?),
            running_var: p.add_buffer(&format!("{name}.running_var"), Tensor::ones(&[channels], DType::F32, dev)?),
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        let (w, b) = (&c.params[self.w], &c.params[self.b]);
        if !self.ranks.contains(&x.rank()) || x.shape()[1] != w.numel() {
            return Err(Error::Invalid {
                op: self.op,
                msg: format!(
                    "expected rank {:?} with {} channels on axis 1, got {:?}",
                    self.ranks,
                    w.numel(),
                    x.shape()
                ),
            });
        }
        let buffers = c.buffers(self.op)?;
        let (rm, rv) = (buffers.get(self.running_mean), buffers.get(self.running_var));
        if c.train {
            let (y, mean, var) = batch_norm(x, w, b, self.eps).map_err(|e| match e {
                Error::Invalid { msg, .. } => Error::Invalid { op: self.op, msg },
                e => e,
            })?;
            let m = self.momentum;
            buffers.set(self.running_mean, rm.mul_scalar(1.0 - m)?.add(&mean.mul_scalar(m)?)?.materialized()?);
            buffers.set(self.running_var, rv.mul_scalar(1.0 - m)?.add(&var.mul_scalar(m)?)?.materialized()?);
            return Ok(y);
        }
        let mut shape = vec![1; x.rank()];
        shape[1] = x.shape()[1];
        let normalized = x.sub(&rm.reshape(&shape)?)?.div(&rv.add_scalar(self.eps)?.sqrt()?.reshape(&shape)?)?;
        affine_channels(&normalized, w, b)
    }
}

macro_rules! batch_norm_layer {
    ($(#[$doc:meta])* $name:ident, $ranks:expr) => {
        $(#[$doc])*
        pub struct $name(BatchNorm);

        impl $name {
            /// Weight ones, bias zeros, running mean 0 and variance 1, momentum 0.1,
            /// eps 1e-5 (PyTorch's defaults).
            pub fn new(p: &mut Params, name: &str, channels: usize, dev: &Device) -> Result<Self> {
                Ok($name(BatchNorm::new(stringify!($name), $ranks, p, name, channels, dev)?))
            }
            pub fn momentum(mut self, m: f64) -> Self {
                self.0.momentum = m;
                self
            }
            pub fn eps(mut self, eps: f64) -> Self {
                self.0.eps = eps;
                self
            }
        }

        impl Module for $name {
            fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
                self.0.forward(c, x)
            }
        }
    };
}

batch_norm_layer!(
    /// BatchNorm over [batch, channels] or [batch, channels, length].
    BatchNorm1d,
    &[2, 3]
);
batch_norm_layer!(
    /// BatchNorm over images [batch, channels, height, width].
    BatchNorm2d,
    &[4]
);
