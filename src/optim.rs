//! Optimizers, learning-rate schedules, gradient clipping and accumulation. Each step is
//! one in-place GPU kernel for all parameters (as many per dispatch as the adapter's
//! binding limit allows; no host round-trip, no new buffers after the first step, which
//! creates the state). With flat parameters ([`Params::flatten`]) the gradients are packed
//! like them and each flat buffer is one tensor: one update dispatch and one norm
//! reduction whatever the binding limit. Clipping and accumulation are device ops that
//! never read back.
use crate::nn::Params;
use crate::{AdamParams, Error, Result, Tensor};

/// Anything that updates parameters from their gradients.
pub trait Optimizer {
    fn step(&mut self, params: &mut Params, grads: &[Tensor]) -> Result<()>;
    /// A constant learning rate from now on (a value set from the host each step reaches
    /// the update as a launch parameter: under `jit` that is an error, use a schedule).
    fn set_lr(&mut self, lr: f64);
    /// Follow `schedule` from the optimizer's own step count, which lives where the
    /// parameters do: on a GPU the learning rate (and Adam's bias corrections) are
    /// computed on the device each step, so eager and jitted steps follow it alike.
    fn set_schedule(&mut self, schedule: LrSchedule);
}

/// A global-norm clip for the device state: (max_norm, the gradients).
type Clip<'a> = (f64, &'a [Tensor]);

/// An optimizer's step state on a GPU (`[lr, 1 - b1^t, 1 - b2^t, t, grad scale, ..]`).
type DeviceState = std::sync::Arc<wgrad_core::kernels::GpuBuffer>;

/// The CPU's step state: the schedule and the step count, advanced by the CPU update
/// itself (a host step, [`wgrad_core::host_step`]), so a jitted CPU step advances it on
/// every replay as the device state is on a GPU.
#[derive(Debug)]
struct HostSteps {
    schedule: LrSchedule,
    steps: u64,
}

impl HostSteps {
    /// This step's (lr, 1 - b1^t, 1 - b2^t), counting it.
    fn advance(&mut self, betas: (f64, f64)) -> (f64, f64, f64) {
        let lr = self.schedule.lr_at(self.steps);
        self.steps += 1;
        let t = self.steps as i32;
        (lr, 1.0 - betas.0.powi(t), 1.0 - betas.1.powi(t))
    }
}

type SharedHostSteps = std::sync::Arc<std::sync::Mutex<HostSteps>>;

fn advance(host: &SharedHostSteps, betas: (f64, f64)) -> (f64, f64, f64) {
    host.lock().unwrap_or_else(|e| e.into_inner()).advance(betas)
}

/// What every optimizer's step shares: the learning-rate schedule, the step count and an
/// optional global-norm clip. On a GPU the count lives in a device-side state advanced by
/// one kernel per step (optim_schedule.wgsl), which the update reads; on the CPU in
/// [`HostSteps`], advanced by the update.
struct StepControl {
    schedule: LrSchedule,
    max_grad_norm: Option<f64>,
    device: Option<DeviceState>,
    host: SharedHostSteps,
}

impl StepControl {
    fn new(lr: f64) -> Self {
        let schedule = LrSchedule::Constant { lr };
        let host = std::sync::Arc::new(std::sync::Mutex::new(HostSteps { schedule, steps: 0 }));
        StepControl { schedule, max_grad_norm: None, device: None, host }
    }

    /// Begin one step: `lr` is the optimizer's public rate, followed while no schedule is
    /// set. Returns the gradients to update with (clipped here on the CPU; on a GPU the
    /// update scales them) and the device state on a GPU (on the CPU the update advances
    /// the host's step state).
    fn begin<'a>(
        &mut self,
        lr: f64,
        params: &Params,
        grads: &'a [Tensor],
        betas: (f64, f64),
    ) -> Result<(std::borrow::Cow<'a, [Tensor]>, Option<DeviceState>)> {
        if let LrSchedule::Constant { .. } = self.schedule {
            self.schedule = LrSchedule::Constant { lr };
        }
        self.host.lock().unwrap_or_else(|e| e.into_inner()).schedule = self.schedule;
        let (grads, clip) = clip_in_step(self.max_grad_norm, params, grads)?;
        let state = self.advance(params, betas, clip)?;
        Ok((grads, state))
    }

    /// Advance one step under the schedule on a GPU: the device state (returned, for the
    /// update to read). With `clip` = (max_norm, grads) the state also gets the scale of a
    /// global-norm clip of `grads`, which the update applies. None on the CPU.
    fn advance(&mut self, params: &Params, betas: (f64, f64), clip: Option<Clip>) -> Result<Option<DeviceState>> {
        let Some(ctx) = params.tensors().first().and_then(|p| p.device().context()) else {
            return Ok(None);
        };
        let state = self.device.get_or_insert_with(|| std::sync::Arc::new(ctx.optim_step_state()));
        let (kind, mut values) = self.schedule.words();
        values[1] = (1.0 - betas.0) as f32;
        values[2] = (1.0 - betas.1) as f32;
        match clip {
            None => ctx.optim_schedule(state, kind, values, None)?,
            Some((max_norm, grads)) => {
                let (partials, n) = Tensor::sum_squares_partials(grads)?;
                ctx.optim_schedule(state, kind, values, Some((&partials, n, max_norm as f32)))?;
            }
        }
        Ok(Some(state.clone()))
    }
}

/// A CPU update as a host step over `[targets.., grads.., states..]` (in place; a jitted
/// CPU step runs it on every replay). `key` names its host values.
fn cpu_step(
    name: &str,
    key: String,
    targets: &[Tensor],
    grads: &[Tensor],
    states: &[&[Tensor]],
    update: impl Fn(&mut [Tensor], &[Tensor], &mut [&mut [Tensor]]) -> Result<()> + Send + Sync + 'static,
) -> Result<()> {
    let n = targets.len();
    let mut all: Vec<Tensor> = targets.iter().chain(grads).cloned().collect();
    for s in states {
        all.extend(s.iter().cloned());
    }
    wgrad_core::host_step(name, key, &mut all, move |all| {
        let (targets, rest) = all.split_at_mut(n);
        let (grads, rest) = rest.split_at_mut(n);
        let mut states: Vec<&mut [Tensor]> = rest.chunks_mut(n).collect();
        update(targets, grads, &mut states)
    })
}

/// The gradients a step updates with and the clip its device state applies: on a GPU the
/// gradients as they are (the update scales them); on the CPU clipped here.
fn clip_in_step<'a>(
    max_norm: Option<f64>,
    params: &Params,
    grads: &'a [Tensor],
) -> Result<(std::borrow::Cow<'a, [Tensor]>, Option<Clip<'a>>)> {
    let Some(max_norm) = max_norm else { return Ok((grads.into(), None)) };
    if params.tensors().first().is_some_and(|p| p.device().is_gpu()) {
        if max_norm.is_nan() || max_norm <= 0.0 {
            return Err(Error::Invalid { op: "clip_grad_norm", msg: format!("max_norm = {max_norm} must be > 0") });
        }
        return Ok((grads.into(), Some((max_norm, grads))));
    }
    Ok((clip_grad_norm(grads, max_norm)?.0.into(), None))
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

/// With flat parameters ([`Params::flatten`]): the gradients packed like them, one flat
/// gradient per flat buffer; None otherwise.
fn flat_grads(params: &Params, grads: &[Tensor]) -> Result<Option<Vec<Tensor>>> {
    match params.check_flat()? {
        true => Ok(Some(params.pack_grads(grads)?)),
        false => Ok(None),
    }
}

/// Run an in-place update on what an optimizer updates: the flat buffers of flat
/// parameters (one tensor per buffer), else every parameter.
fn on_targets(params: &mut Params, flat: bool, update: impl FnOnce(&mut [Tensor]) -> Result<()>) -> Result<()> {
    match flat {
        true => params.update_flat(update),
        false => update(params.tensors_mut()),
    }
}

/// Stochastic gradient descent with momentum and weight decay (PyTorch semantics).
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    velocity: Vec<Tensor>,
    control: StepControl,
}

impl Sgd {
    pub fn new(lr: f64) -> Self {
        Sgd { lr, momentum: 0.0, weight_decay: 0.0, velocity: Vec::new(), control: StepControl::new(lr) }
    }
    /// Clip the gradients to a global L2 norm of `max_norm` in each step (as
    /// [`clip_grad_norm`] does), on a GPU inside the update: a few reductions and no
    /// per-tensor scaling.
    pub fn clip_grad_norm(mut self, max_norm: f64) -> Self {
        self.control.max_grad_norm = Some(max_norm);
        self
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
        let packed = flat_grads(params, grads)?;
        let grads = packed.as_deref().unwrap_or(grads);
        let (grads, state) = self.control.begin(self.lr, params, grads, (0.0, 0.0))?;
        let (momentum, wd, velocity) = (self.momentum, self.weight_decay, &mut self.velocity);
        let (host, schedule) = (self.control.host.clone(), self.control.schedule);
        on_targets(params, packed.is_some(), |targets| {
            if velocity.is_empty() {
                *velocity = targets.iter().map(|t| t.zeros_like()).collect::<Result<_>>()?;
            }
            if state.is_some() {
                return Tensor::sgd_update_many_(targets, &grads, velocity, 0.0, momentum, wd, state.as_deref());
            }
            let key = format!("momentum {momentum}, weight decay {wd}, {schedule:?}");
            cpu_step("sgd", key, targets, &grads, &[velocity], move |p, g, s| {
                let (lr, _, _) = advance(&host, (0.0, 0.0));
                Tensor::sgd_update_many_(p, g, s[0], lr, momentum, wd, None)
            })
        })
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
        self.control.schedule = LrSchedule::Constant { lr };
    }
    fn set_schedule(&mut self, schedule: LrSchedule) {
        self.lr = schedule.lr_at(0);
        self.control.schedule = schedule;
    }
}

/// Adam (L2 weight decay added to the gradient) or AdamW (decoupled weight decay).
pub struct Adam {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
    decoupled: bool,
    matrices_only: bool,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    control: StepControl,
}

impl Adam {
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            matrices_only: false,
            m: Vec::new(),
            v: Vec::new(),
            control: StepControl::new(lr),
        }
    }
    /// Clip the gradients to a global L2 norm of `max_norm` in each step (as
    /// [`clip_grad_norm`] does), on a GPU inside the update: a few reductions and no
    /// per-tensor scaling.
    pub fn clip_grad_norm(mut self, max_norm: f64) -> Self {
        self.control.max_grad_norm = Some(max_norm);
        self
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
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// Apply weight decay only to parameters of rank >= 2 (weight matrices and
    /// embeddings), not to biases and normalization weights: the usual GPT recipe.
    pub fn decay_matrices_only(mut self, yes: bool) -> Self {
        self.matrices_only = yes;
        self
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &mut Params, grads: &[Tensor]) -> Result<()> {
        check(params, grads)?;
        let packed = flat_grads(params, grads)?;
        let grads = packed.as_deref().unwrap_or(grads);
        let (grads, state) = self.control.begin(self.lr, params, grads, self.betas)?;
        // nothing step-dependent is in the launch params: on a GPU the device state supplies
        // the lr and bias corrections, on the CPU the host step state (a jitted step replays
        // faithfully)
        let h = AdamParams {
            lr: 0.0,
            beta1: self.betas.0 as f32,
            beta2: self.betas.1 as f32,
            eps: self.eps as f32,
            weight_decay: self.weight_decay as f32,
            bias_correction1: 1.0,
            bias_correction2: 1.0,
            decoupled: self.decoupled,
        };
        // weight decay on every element, or (decay_matrices_only) on the matrices: whole
        // tensors of rank >= 2, or the prefix of a flat buffer that holds them
        let all = !self.matrices_only || self.weight_decay == 0.0;
        let decayed: Vec<usize> = match packed.is_some() {
            true => params.flat_buffers().1.iter().map(|g| if all { g.len() } else { g.matrices_end() }).collect(),
            false => params.tensors().iter().map(|t| if all || t.rank() >= 2 { t.numel() } else { 0 }).collect(),
        };
        let (m, v, betas) = (&mut self.m, &mut self.v, self.betas);
        let (host, schedule) = (self.control.host.clone(), self.control.schedule);
        on_targets(params, packed.is_some(), |targets| {
            if m.is_empty() {
                *m = targets.iter().map(|t| t.zeros_like()).collect::<Result<_>>()?;
                *v = targets.iter().map(|t| t.zeros_like()).collect::<Result<_>>()?;
            }
            if state.is_some() {
                return Tensor::adam_update_many_decayed_(targets, &grads, m, v, h, state.as_deref(), &decayed);
            }
            let key = format!("{h:?}, decayed {decayed:?}, {schedule:?}");
            cpu_step("adam", key, targets, &grads, &[m, v], move |p, g, s| {
                let (lr, bc1, bc2) = advance(&host, betas);
                let h = AdamParams { lr: lr as f32, bias_correction1: bc1 as f32, bias_correction2: bc2 as f32, ..h };
                let (m, v) = s.split_at_mut(1);
                Tensor::adam_update_many_decayed_(p, g, m[0], v[0], h, None, &decayed)
            })
        })
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
        self.control.schedule = LrSchedule::Constant { lr };
    }
    fn set_schedule(&mut self, schedule: LrSchedule) {
        self.lr = schedule.lr_at(0);
        self.control.schedule = schedule;
    }
}

/// A learning rate as a function of the step (0-based), for any [`Optimizer`] through
/// [`Optimizer::set_schedule`] (followed on the device from the optimizer's step count), or
/// `opt.set_lr(schedule.lr_at(step))` before each step (eager only). Computed on
/// the host from the step number alone (nothing is read back).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// `lr` at every step.
    Constant { lr: f64 },
    /// `lr * gamma^(step / step_size)` (PyTorch's StepLR).
    Step { lr: f64, step_size: u64, gamma: f64 },
    /// Linear warm-up to `lr` over the first `warmup` steps (lr (step + 1) / warmup), then
    /// cosine decay from `lr` at step `warmup` to `min_lr` at step `total`, and `min_lr`
    /// after (nanoGPT's and optax's warm-up cosine).
    WarmupCosine { lr: f64, warmup: u64, total: u64, min_lr: f64 },
    /// PyTorch's OneCycleLR (cosine annealing): from max_lr / div_factor up to `max_lr`
    /// over the first pct_start of `total` steps, then down to
    /// max_lr / (div_factor * final_div_factor) at the last step.
    OneCycle { max_lr: f64, total: u64, pct_start: f64, div_factor: f64, final_div_factor: f64 },
}

impl LrSchedule {
    /// The schedule as optim_schedule.wgsl reads it: (kind, [lr, 1 - b1, 1 - b2, a, b, c,
    /// d]) with the betas' complements left 0 for the optimizer to fill.
    fn words(&self) -> (u32, [f32; 7]) {
        match *self {
            LrSchedule::Constant { lr } => (0, [lr as f32, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            LrSchedule::Step { lr, step_size, gamma } => {
                (1, [lr as f32, 0.0, 0.0, step_size.max(1) as f32, gamma as f32, 0.0, 0.0])
            }
            LrSchedule::WarmupCosine { lr, warmup, total, min_lr } => {
                (2, [lr as f32, 0.0, 0.0, warmup as f32, total as f32, min_lr as f32, 0.0])
            }
            LrSchedule::OneCycle { max_lr, total, pct_start, div_factor, final_div_factor } => {
                let initial = max_lr / div_factor;
                let peak = (pct_start * total as f64 - 1.0).max(0.0);
                let last = (total as f64 - 1.0).max(peak + 1.0);
                let min_lr = initial / final_div_factor;
                (3, [max_lr as f32, 0.0, 0.0, peak as f32, last as f32, initial as f32, min_lr as f32])
            }
        }
    }

    /// [`LrSchedule::OneCycle`] with PyTorch's defaults: pct_start 0.3, div_factor 25,
    /// final_div_factor 1e4.
    pub fn one_cycle(max_lr: f64, total: u64) -> LrSchedule {
        LrSchedule::OneCycle { max_lr, total, pct_start: 0.3, div_factor: 25.0, final_div_factor: 1e4 }
    }

    /// The learning rate at `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        // from a to b as p goes 0 -> 1 along half a cosine
        let cos_anneal = |a: f64, b: f64, p: f64| b + (a - b) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
        match *self {
            LrSchedule::Constant { lr } => lr,
            LrSchedule::Step { lr, step_size, gamma } => lr * gamma.powi((step / step_size.max(1)) as i32),
            LrSchedule::WarmupCosine { lr, warmup, total, min_lr } => {
                if step < warmup {
                    return lr * (step + 1) as f64 / warmup as f64;
                }
                if step >= total {
                    return min_lr;
                }
                let p = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                cos_anneal(lr, min_lr, p)
            }
            LrSchedule::OneCycle { max_lr, total, pct_start, div_factor, final_div_factor } => {
                let initial = max_lr / div_factor;
                let min_lr = initial / final_div_factor;
                let peak = (pct_start * total as f64 - 1.0).max(0.0);
                let last = (total as f64 - 1.0).max(peak + 1.0);
                let t = (step as f64).min(last);
                if t <= peak {
                    return if peak == 0.0 { max_lr } else { cos_anneal(initial, max_lr, t / peak) };
                }
                cos_anneal(max_lr, min_lr, (t - peak) / (last - peak))
            }
        }
    }
}

/// Scale the gradients so that their global L2 norm (over all of them together) is at
/// most `max_norm`, as `torch.nn.utils.clip_grad_norm_`: each is multiplied by
/// min(1, max_norm / (norm + 1e-6)). Returns the clipped gradients and the norm before
/// clipping as a one-element tensor; all of it runs on the device (no readback).
pub fn clip_grad_norm(grads: &[Tensor], max_norm: f64) -> Result<(Vec<Tensor>, Tensor)> {
    let op = "clip_grad_norm";
    let Some(first) = grads.first() else {
        return Err(Error::Empty { op, msg: "no gradients".into() });
    };
    if max_norm.is_nan() || max_norm <= 0.0 {
        return Err(Error::Invalid { op, msg: format!("max_norm = {max_norm} must be > 0") });
    }
    let mut total: Option<Tensor> = None;
    for g in grads {
        if g.device() != first.device() {
            return Err(Error::DeviceMismatch { op, lhs: first.device().name(), rhs: g.device().name() });
        }
        let sq = g.mul(g)?.sum_all()?.to_dtype(first.dtype())?;
        total = Some(match total {
            Some(t) => t.add(&sq)?,
            None => sq,
        });
    }
    let norm = total.expect("one gradient at least").sqrt()?;
    let scale = norm.add_scalar(1e-6)?.recip()?.mul_scalar(max_norm)?.clamp(0.0, 1.0)?;
    let clipped = grads.iter().map(|g| g.mul(&scale.to_dtype(g.dtype())?)).collect::<Result<_>>()?;
    Ok((clipped, norm.reshape(&[1])?))
}

/// Sums gradients over micro-batches on the device; [`GradAccumulator::mean`] gives
/// their average (the gradient of the mean loss over all micro-batches when each has the
/// same size) and starts over.
#[derive(Default)]
pub struct GradAccumulator {
    sum: Vec<Tensor>,
    count: usize,
}

impl GradAccumulator {
    pub fn new() -> Self {
        Self::default()
    }
    /// Add one micro-batch's gradients (the same parameters in the same order each time).
    pub fn add(&mut self, grads: &[Tensor]) -> Result<()> {
        if self.count > 0 && grads.len() != self.sum.len() {
            return Err(Error::Invalid {
                op: "GradAccumulator::add",
                msg: format!("{} gradients, but the first micro-batch had {}", grads.len(), self.sum.len()),
            });
        }
        self.sum = if self.count == 0 {
            grads.iter().map(|g| g.detach()).collect()
        } else {
            self.sum.iter().zip(grads).map(|(s, g)| s.add(g.detach())).collect::<Result<_>>()?
        };
        self.count += 1;
        Ok(())
    }
    /// Micro-batches added since the last [`GradAccumulator::mean`].
    pub fn count(&self) -> usize {
        self.count
    }
    /// The average of the added gradients; resets the accumulator.
    pub fn mean(&mut self) -> Result<Vec<Tensor>> {
        if self.count == 0 {
            return Err(Error::Empty { op: "GradAccumulator::mean", msg: "no micro-batch was added".into() });
        }
        let k = 1.0 / self.count as f64;
        let out = std::mem::take(&mut self.sum).iter().map(|s| s.mul_scalar(k)).collect::<Result<_>>()?;
        self.count = 0;
        Ok(out)
    }
}
