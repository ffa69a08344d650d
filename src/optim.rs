//! Optimizers. Each step is one in-place GPU kernel for all parameters (as many per
//! dispatch as the adapter's binding limit allows; no host round-trip, no new buffers
//! after the first step, which creates the state).
use crate::nn::Params;
use crate::{AdamParams, Error, Result, Tensor};

/// Anything that updates parameters from their gradients.
pub trait Optimizer {
    fn step(&mut self, params: &mut Params, grads: &[Tensor]) -> Result<()>;
    /// The learning rate, for schedules.
    fn set_lr(&mut self, lr: f64);
}

fn check(params: &Params, grads: &[Tensor]) -> Result<()> {
    if params.len() != grads.len() {
        return Err(Error::Invalid {
            op: "Optimizer::step",
            msg: format!("{} parameters but {} gradients", params.len(), grads.len()),
        });
    }
    Ok(())
}

fn zeros_like_all(params: &Params) -> Result<Vec<Tensor>> {
    params.tensors().iter().map(|t| t.zeros_like()).collect()
}

/// Stochastic gradient descent with momentum and weight decay (PyTorch semantics).
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    velocity: Vec<Tensor>,
}

impl Sgd {
    pub fn new(lr: f64) -> Self {
        Sgd { lr, momentum: 0.0, weight_decay: 0.0, velocity: Vec::new() }
    }
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut Params, grads: &[Tensor]) -> Result<()> {
        check(params, grads)?;
        if self.velocity.is_empty() {
            self.velocity = zeros_like_all(params)?;
        }
        Tensor::sgd_update_many_(
            params.tensors_mut(),
            grads,
            &mut self.velocity,
            self.lr,
            self.momentum,
            self.weight_decay,
        )
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// Adam (L2 weight decay added to the gradient) or AdamW (decoupled weight decay).
pub struct Adam {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    decoupled: bool,
    t: u64,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }
    /// AdamW with decoupled weight decay (default 0.01, as PyTorch).
    pub fn adamw(lr: f64) -> Self {
        Adam { weight_decay: 0.01, decoupled: true, ..Adam::new(lr) }
    }
    pub fn weight_decay(mut self, wd: f64) -> Self {
        self.weight_decay = wd;
        self
    }
    pub fn betas(mut self, b1: f64, b2: f64) -> Self {
        self.betas = (b1, b2);
        self
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &mut Params, grads: &[Tensor]) -> Result<()> {
        check(params, grads)?;
        if self.m.is_empty() {
            self.m = zeros_like_all(params)?;
            self.v = zeros_like_all(params)?;
        }
        self.t += 1;
        let h = AdamParams {
            lr: self.lr as f32,
            beta1: self.betas.0 as f32,
            beta2: self.betas.1 as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
            bias_correction1: (1.0 - self.betas.0.powi(self.t as i32)) as f32,
            bias_correction2: (1.0 - self.betas.1.powi(self.t as i32)) as f32,
            decoupled: self.decoupled,
        };
        Tensor::adam_update_many_(params.tensors_mut(), grads, &mut self.m, &mut self.v, h)
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
}
