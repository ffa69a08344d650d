//! Layers. Each holds indices into the model's [`Params`]; weights are seeded.
use super::{Ctx, Module, Params};
use crate::{DType, Device, ElementwiseKernel, Error, Result, Tensor};

/// Weight initialisations (fan_in = inputs per output; fan_out = outputs per input).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// N(0, 2 / fan_in): for ReLU networks (He et al.).
    KaimingNormal,
    /// U(-b, b), b = sqrt(6 / fan_in).
    KaimingUniform,
    /// U(-b, b), b = sqrt(6 / (fan_in + fan_out)) (Glorot).
    XavierUniform,
    /// N(0, 2 / (fan_in + fan_out)).
    XavierNormal,
    /// N(0, std^2) (GPT's N(0, 0.02)).
    Normal(f64),
}

impl Init {
    pub fn tensor(self, shape: &[usize], fan_in: usize, fan_out: usize, seed: u64, dev: &Device) -> Result<Tensor> {
        let (fi, fo) = (fan_in as f64, fan_out as f64);
        match self {
            Init::KaimingNormal => Tensor::randn(shape, seed, dev)?.mul_scalar((2.0 / fi).sqrt()),
            Init::XavierNormal => Tensor::randn(shape, seed, dev)?.mul_scalar((2.0 / (fi + fo)).sqrt()),
            Init::Normal(std) => Tensor::randn(shape, seed, dev)?.mul_scalar(std),
            Init::KaimingUniform => {
                let b = (6.0 / fi).sqrt();
                Tensor::rand(shape, -b, b, seed, dev)
            }
            Init::XavierUniform => {
                let b = (6.0 / (fi + fo)).sqrt();
                Tensor::rand(shape, -b, b, seed, dev)
            }
        }
    }
}

/// y = x W^T + b with W [out, in] (PyTorch's layout; the transpose is a view).
pub struct Linear {
    w: usize,
    b: usize,
}

impl Linear {
    /// Kaiming-normal weights (seeded), zero bias.
    pub fn new(p: &mut Params, name: &str, inputs: usize, outputs: usize, seed: u64, dev: &Device) -> Result<Self> {
        Self::with_init(p, name, inputs, outputs, Init::KaimingUniform, seed, dev)
    }
    pub fn with_init(
        p: &mut Params,
        name: &str,
        inputs: usize,
        outputs: usize,
        init: Init,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let w = p.add(&format!("{name}.weight"), init.tensor(&[outputs, inputs], inputs, outputs, seed, dev)?);
        let b = p.add(&format!("{name}.bias"), Tensor::zeros(&[outputs], DType::F32, dev)?);
        Ok(Linear { w, b })
    }
}

impl Linear {
    /// (W, b) as the context holds them.
    pub(super) fn weight_and_bias<'a>(&self, c: &Ctx<'a>) -> (&'a Tensor, &'a Tensor) {
        (&c.params[self.w], &c.params[self.b])
    }
}

/// Inputs stored in another dtype (f16 activations) are computed in the weights' dtype.
fn as_dtype_of(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.dtype() == w.dtype() {
        return Ok(x.clone());
    }
    x.to_dtype(w.dtype())
}

impl Module for Linear {
    fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        let w = &c.params[self.w];
        as_dtype_of(x, w)?.matmul(&w.t()?)?.add(&c.params[self.b])
    }
}

/// Stores activations in another dtype, e.g. `Cast(DType::F16)` for mixed precision
/// (f16 activations, f32 master weights).
pub struct Cast(pub DType);

impl Module for Cast {
    fn forward(&self, _: &Ctx, x: &Tensor) -> Result<Tensor> {
        x.to_dtype(self.0)
    }
}

/// 2-D convolution [B, C, H, W] -> [B, O, OH, OW] (im2col + matmul), weight [O, C, K, K].
pub struct Conv2d {
    w: usize,
    b: usize,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        p: &mut Params,
        name: &str,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let fan_in = in_ch * kernel * kernel;
        let w = p.add(
            &format!("{name}.weight"),
            Init::KaimingNormal.tensor(
                &[out_ch, in_ch, kernel, kernel],
                fan_in,
                out_ch * kernel * kernel,
                seed,
                dev,
            )?,
        );
        let b = p.add(&format!("{name}.bias"), Tensor::zeros(&[out_ch], DType::F32, dev)?);
        Ok(Conv2d { w, b, stride, padding })
    }
}

impl Module for Conv2d {
    fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        let w = &c.params[self.w];
        as_dtype_of(x, w)?.conv2d(w, Some(&c.params[self.b]), self.stride, self.padding)
    }
}

fn pool_view(op: &'static str, x: &Tensor, k: usize) -> Result<Tensor> {
    let s = x.shape();
    if x.rank() != 4 || k == 0 || !s[2].is_multiple_of(k) || !s[3].is_multiple_of(k) {
        return Err(Error::Invalid {
            op,
            msg: format!("expected [B, C, H, W] with H and W divisible by {k}, got {s:?}"),
        });
    }
    x.reshape(&[s[0], s[1], s[2] / k, k, s[3] / k, k])
}

/// Max over non-overlapping k x k windows (stride k).
pub struct MaxPool2d(pub usize);

impl Module for MaxPool2d {
    fn forward(&self, _: &Ctx, x: &Tensor) -> Result<Tensor> {
        pool_view("MaxPool2d", x, self.0)?;
        x.max_pool2d(self.0)
    }
}

/// Mean over non-overlapping k x k windows (stride k).
pub struct AvgPool2d(pub usize);

impl Module for AvgPool2d {
    fn forward(&self, _: &Ctx, x: &Tensor) -> Result<Tensor> {
        pool_view("AvgPool2d", x, self.0)?.mean(&[3, 5], false)
    }
}

/// [B, ...] -> [B, prod(...)].
pub struct Flatten;

impl Module for Flatten {
    fn forward(&self, _: &Ctx, x: &Tensor) -> Result<Tensor> {
        let b = *x.shape().first().unwrap_or(&1);
        x.reshape(&[b, x.numel() / b.max(1)])
    }
}

/// Zeroes each element with probability p in training (scaling the rest by 1/(1-p));
/// the identity in eval mode. `Dropout::new(p)` draws its masks from the global generator
/// ([`crate::manual_seed`], as [`super::dropout`] does); a nonzero `seed` keys each mask by
/// (seed, ctx.step) instead.
pub struct Dropout {
    pub p: f64,
    pub seed: u64,
}

impl Dropout {
    /// Dropout with probability `p`, masks from the global generator.
    pub fn new(p: f64) -> Self {
        Dropout { p, seed: 0 }
    }
}

impl Module for Dropout {
    fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        if !c.train || self.p == 0.0 {
            return Ok(x.clone());
        }
        if self.seed == 0 {
            return super::dropout(x, self.p);
        }
        if !(0.0..1.0).contains(&self.p) {
            return Err(Error::Invalid { op: "Dropout", msg: format!("p = {} is not in [0, 1)", self.p) });
        }
        let u = Tensor::rand_dtype(
            x.shape(),
            0.0,
            1.0,
            self.seed.wrapping_mul(1_000_003).wrapping_add(c.step),
            x.dtype(),
            x.device(),
        )?;
        let keep = u.ge(&u.full_like(self.p)?)?;
        x.mul(&keep)?.mul_scalar(1.0 / (1.0 - self.p))
    }
}

/// Elementwise activations.
#[derive(Clone, Copy, Debug)]
pub enum Activation {
    Relu,
    /// x Phi(x), exact (PyTorch's default).
    Gelu,
    /// The tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    GeluTanh,
    Tanh,
    Sigmoid,
}

impl Module for Activation {
    fn forward(&self, _: &Ctx, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Gelu => x.gelu(),
            Activation::GeluTanh => x.gelu_tanh(),
        }
    }
}

/// A user elementwise kernel as a layer (its scalar operand 0): it trains through the
/// derivatives [`ElementwiseKernel::with_derivative`] gave it.
impl Module for ElementwiseKernel {
    fn forward(&self, _: &Ctx, x: &Tensor) -> Result<Tensor> {
        x.map_kernel(self, 0.0)
    }
}

/// A boxed module is a module (`Sequential::push(Box<dyn Module>)`, layers chosen at run
/// time).
impl Module for Box<dyn Module> {
    fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        (**self).forward(c, x)
    }
    fn forward_many(&self, c: &Ctx, inputs: &[&Tensor]) -> Result<Tensor> {
        (**self).forward_many(c, inputs)
    }
}

/// Modules applied in order.
#[derive(Default)]
pub struct Sequential(Vec<Box<dyn Module>>);

impl Sequential {
    pub fn new() -> Self {
        Self::default()
    }
    #[allow(clippy::should_implement_trait)]
    pub fn push(mut self, m: impl Module + 'static) -> Self {
        self.0.push(Box::new(m));
        self
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Module for Sequential {
    fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for m in &self.0 {
            h = m.forward(c, &h)?;
        }
        Ok(h)
    }
}

/// Any module run under [`crate::checkpoint_with`]: in a training step its activations are
/// not kept for the backward pass (except what `policy` keeps) but recomputed there, trading
/// compute for memory. Its parameters, read from the context, get their gradients as usual.
pub struct Checkpointed<M: Module> {
    pub inner: M,
    pub policy: crate::CheckpointPolicy,
}

impl<M: Module> Checkpointed<M> {
    /// `inner` with nothing it computes saved ([`crate::CheckpointPolicy::Nothing`]).
    pub fn new(inner: M) -> Self {
        Checkpointed { inner, policy: crate::CheckpointPolicy::Nothing }
    }
    pub fn with_policy(inner: M, policy: crate::CheckpointPolicy) -> Self {
        Checkpointed { inner, policy }
    }
}

impl<M: Module> Module for Checkpointed<M> {
    fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        let f = |xs: &[Tensor]| Ok(vec![self.inner.forward(c, &xs[0])?]);
        Ok(crate::checkpoint_with(self.policy.clone(), f, std::slice::from_ref(x))?.remove(0))
    }
    fn forward_many(&self, c: &Ctx, inputs: &[&Tensor]) -> Result<Tensor> {
        let owned: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        let f = |xs: &[Tensor]| {
            let refs: Vec<&Tensor> = xs.iter().collect();
            Ok(vec![self.inner.forward_many(c, &refs)?])
        };
        Ok(crate::checkpoint_with(self.policy.clone(), f, &owned)?.remove(0))
    }
}
