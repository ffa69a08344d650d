//! In-place optimizer updates: the one place where wgrad writes into existing tensors.
//! On the GPU each update is one WGSL kernel on the parameter's own buffer (no host
//! round-trip, no new buffer); on the CPU the vector is updated in place when the tensor
//! is the only handle to it, else replaced.
use crate::storage::{CpuStorage, Storage};
use crate::{cpu, Device, Error, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::AdamParams;

fn check_state(op: &'static str, p: &Tensor, others: &[&Tensor]) -> Result<()> {
    if !matches!(p.dtype(), crate::DType::F32 | crate::DType::F64)
        || !p.layout().is_contiguous()
        || p.layout().offset != 0
    {
        return Err(Error::Invalid { op, msg: format!("parameters must be contiguous float tensors, got {:?}", p) });
    }
    if p.is_tracked() {
        return Err(Error::Invalid {
            op,
            msg: "cannot update a tensor that is being differentiated; update outside the transform".into(),
        });
    }
    for t in others {
        if t.shape() != p.shape() || t.device() != p.device() || t.dtype() != p.dtype() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: p.shape().to_vec(),
                rhs: t.shape().to_vec(),
                msg: "gradient and state must match the parameter".into(),
            });
        }
    }
    Ok(())
}

/// The CPU buffer of a CPU tensor.
fn cpu_buffer(t: &Tensor) -> &Arc<crate::storage::CpuBuffer> {
    match t.storage() {
        Storage::Cpu(b) => b,
        _ => unreachable!("a CPU tensor has CPU storage"),
    }
}

fn update_f32<const N: usize>(
    slices: &mut [&mut [f32]; N],
    n: usize,
    g_at: impl Fn(usize) -> f64,
    f: &impl Fn(usize, f64, &mut [f64; N]),
) {
    let mut x = [0.0; N];
    for i in 0..n {
        for k in 0..N {
            x[k] = slices[k][i] as f64;
        }
        f(i, g_at(i), &mut x);
        for k in 0..N {
            slices[k][i] = x[k] as f32;
        }
    }
}

/// Apply `f(i, g_i, [p_i, state_i..])` to every element i (in f64), in place in each
/// target's buffer (contiguous from element 0, as `check_state` requires): every handle to
/// the buffer sees the update (views of flat parameters, a jit plan's references), as on a
/// GPU. The targets must be distinct buffers; a gradient that shares one is read first.
fn cpu_update<const N: usize>(ts: [&Tensor; N], grad: &Tensor, f: impl Fn(usize, f64, &mut [f64; N])) -> Result<()> {
    let n = grad.numel();
    for i in 0..N {
        for j in i + 1..N {
            if ts[i].shares_storage(ts[j]) {
                return Err(Error::Invalid {
                    op: "optimizer update",
                    msg: "a parameter and its optimizer state share one buffer".into(),
                });
            }
        }
    }
    // a read lock beside a write lock on one buffer would deadlock: an aliased gradient is
    // not held, but read out into f64 first (as a strided or non-f32 one is)
    let aliased = ts.iter().any(|t| t.shares_storage(grad));
    let g_read = (!aliased).then(|| grad.cpu_storage());
    let gl = grad.layout();
    let g_f32 = match g_read.as_deref() {
        Some(CpuStorage::F32(v)) if gl.is_contiguous() => Some(&v[gl.offset..gl.offset + n]),
        _ => None,
    };
    let g_f64 = match (g_f32, g_read.as_deref()) {
        (Some(_), _) => Vec::new(),
        (None, Some(s)) => cpu::read(s, gl),
        (None, None) => cpu::read(&grad.cpu_storage(), gl),
    };
    let g_at = |i: usize| g_f32.map_or_else(|| g_f64[i], |g| g[i] as f64);
    let mut writes = ts.map(|t| cpu_buffer(t).write());
    if writes.iter().all(|w| matches!(**w, CpuStorage::F32(_))) {
        let mut slices = writes.each_mut().map(|w| match &mut **w {
            CpuStorage::F32(v) => &mut v[..n],
            _ => unreachable!("checked above"),
        });
        // one monomorphic loop per gradient source
        match g_f32 {
            Some(g) => update_f32(&mut slices, n, |i| g[i] as f64, &f),
            None => update_f32(&mut slices, n, |i| g_f64[i], &f),
        }
        return Ok(());
    }
    let mut x = [0.0; N];
    for i in 0..n {
        for k in 0..N {
            x[k] = writes[k].get(i);
        }
        f(i, g_at(i), &mut x);
        for k in 0..N {
            writes[k].set(i, x[k]);
        }
    }
    Ok(())
}

impl Tensor {
    /// Partial sums of the squares of every element of `tensors` (f32, on one GPU): a
    /// buffer of partials and their count, for an optimizer's global-norm clip
    /// ([`wgrad_kernels::Context::optim_schedule`]); a few dispatches for all of them.
    pub fn sum_squares_partials(tensors: &[Tensor]) -> Result<(wgrad_kernels::GpuBuffer, usize)> {
        let op = "clip_grad_norm";
        let Some(ctx) = one_gpu(tensors) else {
            return Err(Error::Invalid { op, msg: "the gradients must be f32 tensors on one GPU".into() });
        };
        if tensors.iter().any(|t| t.dtype() != crate::DType::F32) {
            return Err(Error::Invalid { op, msg: "the gradients must be f32".into() });
        }
        crate::fusion::flush(&ctx)?;
        let dense = tensors.iter().map(|g| g.contiguous()?.materialized()).collect::<Result<Vec<_>>>()?;
        // a view at an offset: copied so that the kernel reads from element 0
        let dense = dense
            .into_iter()
            .map(|g| if g.layout().offset == 0 { Ok(g) } else { g.mul_scalar(1.0)?.materialized() })
            .collect::<Result<Vec<_>>>()?;
        let items: Vec<_> = dense.iter().map(|g| (buf(g), g.numel())).collect();
        Ok(ctx.sum_squares(&items)?)
    }

    /// Overwrite `self`'s elements with `src`'s (same shape and dtype), in place: on a GPU
    /// one copy kernel into `self`'s buffer, so every handle to that buffer sees the new
    /// values, and a jitted step that updates state (running statistics) updates it on
    /// every replay. Pending fused values that read the old values run first.
    pub fn assign_(&mut self, src: &Tensor) -> Result<()> {
        let op = "assign_";
        check_state(op, self, &[src])?;
        match self.device().clone() {
            Device::Gpu(ctx) => {
                crate::fusion::flush(&ctx)?;
                let s = src.materialized()?;
                let dst = self.materialized()?;
                ctx.copy_into(s.view(), dst.view(), self.shape())?;
                *self = dst;
                Ok(())
            }
            _ => {
                // the CPU: the values written into this tensor's buffer (a source that
                // shares it is read out first); a host step, so a jitted CPU step assigns on
                // every replay
                crate::cpu_plan::host_step(op, String::new(), &mut [self.clone(), src.clone()], |ts| {
                    let values = ts[1].cpu_values();
                    let mut w = cpu_buffer(&ts[0]).write();
                    for (i, v) in values.into_iter().enumerate() {
                        w.set(i, v);
                    }
                    Ok(())
                })
            }
        }
    }

    /// SGD step in place on `self` (PyTorch semantics): g = grad + wd p; v = momentum v + g;
    /// p -= lr v (v is used only when momentum > 0).
    pub fn sgd_update_(
        &mut self,
        grad: &Tensor,
        velocity: &mut Tensor,
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    ) -> Result<()> {
        check_state("sgd", self, &[grad, velocity])?;
        match self.device().clone() {
            Device::Gpu(ctx) => {
                // the many-tensor update with one tensor
                let hyper = [lr as f32, momentum as f32, weight_decay as f32];
                let hyper = Hyper { values: &hyper, decoupled: false, step_state: None };
                let (params, grads) = (std::slice::from_ref(self), std::slice::from_ref(grad));
                let states: [&[Tensor]; 1] = [std::slice::from_ref(velocity)];
                let kind = wgrad_kernels::MultiStepKind::Sgd;
                gpu_multi_step(&ctx, kind, params, grads, &states, hyper, &[self.numel()])?;
            }
            Device::Cpu => {
                cpu_update([&*self, &*velocity], grad, |_, g, x| {
                    let mut g = g + weight_decay * x[0];
                    if momentum != 0.0 {
                        g += momentum * x[1];
                        x[1] = g;
                    }
                    x[0] -= lr * g;
                })?;
            }
        }
        Ok(())
    }

    /// Adam / AdamW step in place on `self` with moment estimates `m`, `v`.
    pub fn adam_update_(&mut self, grad: &Tensor, m: &mut Tensor, v: &mut Tensor, h: AdamParams) -> Result<()> {
        let n = self.numel();
        self.adam_update_decayed_(grad, m, v, h, n)
    }

    /// [`Tensor::adam_update_`] with weight decay on the first `decayed` elements only.
    fn adam_update_decayed_(
        &mut self,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        h: AdamParams,
        decayed: usize,
    ) -> Result<()> {
        check_state("adam", self, &[grad, m, v])?;
        match self.device().clone() {
            Device::Gpu(ctx) => {
                // the many-tensor update with one tensor
                let hyper = [h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.bias_correction1, h.bias_correction2];
                let hyper = Hyper { values: &hyper, decoupled: h.decoupled, step_state: None };
                let (params, grads) = (std::slice::from_ref(self), std::slice::from_ref(grad));
                let states: [&[Tensor]; 2] = [std::slice::from_ref(m), std::slice::from_ref(v)];
                gpu_multi_step(&ctx, wgrad_kernels::MultiStepKind::Adam, params, grads, &states, hyper, &[decayed])?;
            }
            Device::Cpu => {
                let r = |x: f32| x as f64;
                cpu_update([&*self, &*m, &*v], grad, |i, g, x| {
                    let (mut p, mut g) = (x[0], g);
                    let wd = if i < decayed { r(h.weight_decay) } else { 0.0 };
                    if h.decoupled {
                        p -= r(h.lr) * wd * p;
                    } else {
                        g += wd * p;
                    }
                    x[1] = r(h.beta1) * x[1] + (1.0 - r(h.beta1)) * g;
                    x[2] = r(h.beta2) * x[2] + (1.0 - r(h.beta2)) * g * g;
                    x[0] = p - r(h.lr) * (x[1] / r(h.bias_correction1))
                        / ((x[2] / r(h.bias_correction2)).sqrt() + r(h.eps));
                })?;
            }
        }
        Ok(())
    }
}

/// The GPU context when every tensor lives on that one GPU.
fn one_gpu(ts: &[Tensor]) -> Option<Arc<wgrad_kernels::Context>> {
    let ctx = ts.first()?.device().context()?.clone();
    ts.iter().all(|t| t.device().context().is_some_and(|c| Arc::ptr_eq(c, &ctx))).then_some(ctx)
}

/// The buffer of a GPU tensor the flush before an in-place step has materialized.
fn buf(t: &Tensor) -> &wgrad_kernels::GpuBuffer {
    t.storage().gpu().expect("materialized by the flush")
}

fn check_many(op: &'static str, params: &[Tensor], grads: &[Tensor], states: &[&[Tensor]]) -> Result<()> {
    if grads.len() != params.len() || states.iter().any(|s| s.len() != params.len()) {
        return Err(Error::Invalid {
            op,
            msg: format!("{} parameters, {} gradients and state for {:?}", params.len(), grads.len(), {
                states.iter().map(|s| s.len()).collect::<Vec<_>>()
            }),
        });
    }
    for (i, p) in params.iter().enumerate() {
        let mut others = vec![&grads[i]];
        others.extend(states.iter().map(|s| &s[i]));
        check_state(op, p, &others)?;
    }
    Ok(())
}

/// The hyperparameters of one multi-tensor step: the values in launch params, AdamW's
/// flag, and the device-side step state that overrides the step-dependent values.
struct Hyper<'a> {
    values: &'a [f32],
    decoupled: bool,
    step_state: Option<&'a wgrad_kernels::GpuBuffer>,
}

/// One multi-tensor step on the GPU: pending values are computed first (the step writes in
/// place), then every (param, grad, states) triple is updated by as few dispatches as the
/// binding limit allows.
fn gpu_multi_step(
    ctx: &Arc<wgrad_kernels::Context>,
    kind: wgrad_kernels::MultiStepKind,
    params: &[Tensor],
    grads: &[Tensor],
    states: &[&[Tensor]],
    hyper: Hyper,
    decayed: &[usize],
) -> Result<()> {
    crate::fusion::flush(ctx)?;
    let gs = grads.iter().map(|g| g.contiguous()?.materialized()).collect::<Result<Vec<_>>>()?;
    let items: Vec<_> = params
        .iter()
        .zip(&gs)
        .enumerate()
        .map(|(i, (p, g))| {
            let mut bufs = vec![buf(p)];
            bufs.extend(states.iter().map(|s| buf(&s[i])));
            (buf(g), bufs, p.numel(), decayed[i])
        })
        .collect();
    ctx.multi_step(kind, &items, hyper.values, hyper.decoupled, hyper.step_state)?;
    Ok(())
}

impl Tensor {
    /// [`Tensor::sgd_update_`] on every parameter at once: on one GPU a single dispatch
    /// updates them all (as many as the adapter's binding limit allows per dispatch). With
    /// a `step_state` ([`wgrad_kernels::Context::optim_step_state`]) the GPU update reads
    /// its learning rate from that device-side state instead of `lr`.
    pub fn sgd_update_many_(
        params: &mut [Tensor],
        grads: &[Tensor],
        velocity: &mut [Tensor],
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        step_state: Option<&wgrad_kernels::GpuBuffer>,
    ) -> Result<()> {
        check_many("sgd", params, grads, &[velocity])?;
        let Some(ctx) = one_gpu(params) else {
            for ((p, g), v) in params.iter_mut().zip(grads).zip(velocity.iter_mut()) {
                p.sgd_update_(g, v, lr, momentum, weight_decay)?;
            }
            return Ok(());
        };
        let hyper = [lr as f32, momentum as f32, weight_decay as f32];
        let hyper = Hyper { values: &hyper, decoupled: false, step_state };
        let decayed: Vec<usize> = params.iter().map(|p| p.numel()).collect();
        gpu_multi_step(&ctx, wgrad_kernels::MultiStepKind::Sgd, params, grads, &[velocity], hyper, &decayed)
    }

    /// [`Tensor::adam_update_`] on every parameter at once (one dispatch on one GPU, as
    /// [`Tensor::sgd_update_many_`]; a `step_state` supplies the learning rate and the bias
    /// corrections on the device).
    pub fn adam_update_many_(
        params: &mut [Tensor],
        grads: &[Tensor],
        m: &mut [Tensor],
        v: &mut [Tensor],
        h: AdamParams,
        step_state: Option<&wgrad_kernels::GpuBuffer>,
    ) -> Result<()> {
        let decayed: Vec<usize> = params.iter().map(|p| p.numel()).collect();
        Tensor::adam_update_many_decayed_(params, grads, m, v, h, step_state, &decayed)
    }

    /// [`Tensor::adam_update_many_`] with weight decay on the first `decayed[i]` elements
    /// of tensor i only (a flat buffer whose matrices come first), in the same dispatch.
    pub fn adam_update_many_decayed_(
        params: &mut [Tensor],
        grads: &[Tensor],
        m: &mut [Tensor],
        v: &mut [Tensor],
        h: AdamParams,
        step_state: Option<&wgrad_kernels::GpuBuffer>,
        decayed: &[usize],
    ) -> Result<()> {
        check_many("adam", params, grads, &[m, v])?;
        if decayed.len() != params.len() {
            return Err(Error::Invalid {
                op: "adam",
                msg: format!("{} parameters but {} decay lengths", params.len(), decayed.len()),
            });
        }
        let Some(ctx) = one_gpu(params) else {
            let all = params.iter_mut().zip(grads).zip(m.iter_mut()).zip(v.iter_mut()).zip(decayed);
            for ((((p, g), m), v), &d) in all {
                p.adam_update_decayed_(g, m, v, h, d)?;
            }
            return Ok(());
        };
        let hyper = [h.lr, h.beta1, h.beta2, h.eps, h.weight_decay, h.bias_correction1, h.bias_correction2];
        let hyper = Hyper { values: &hyper, decoupled: h.decoupled, step_state };
        gpu_multi_step(&ctx, wgrad_kernels::MultiStepKind::Adam, params, grads, &[m, v], hyper, decayed)
    }
}
