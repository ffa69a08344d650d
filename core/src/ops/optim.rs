//! In-place optimizer updates: the one place where wgrad writes into existing tensors.
//! On the GPU each update is one WGSL kernel on the parameter's own buffer (no host
//! round-trip, no new buffer); on the CPU the vector is updated in place when the tensor
//! is the only handle to it, else replaced.
use crate::storage::{CpuStorage, Storage};
use crate::{cpu, Device, Error, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::AdamParams;

fn check_state(op: &'static str, p: &Tensor, others: &[&Tensor]) -> Result<()> {
    if !matches!(p.dtype(), crate::DType::F32 | crate::DType::F64) || !p.layout().is_contiguous() || p.layout().offset != 0 {
        return Err(Error::Invalid { op, msg: format!("parameters must be contiguous float tensors, got {:?}", p) });
    }
    if p.is_tracked() {
        return Err(Error::Invalid { op, msg: "cannot update a tensor that is being differentiated; update outside the transform".into() });
    }
    for t in others {
        if t.shape() != p.shape() || t.device() != p.device() || t.dtype() != p.dtype() {
            return Err(Error::ShapeMismatch { op, lhs: p.shape().to_vec(), rhs: t.shape().to_vec(), msg: "gradient and state must match the parameter".into() });
        }
    }
    Ok(())
}

/// Apply `f(i, values)` to the f64 values of CPU tensors and write them back in place.
fn cpu_update(ts: &mut [&mut Tensor], f: impl Fn(&mut [Vec<f64>])) {
    let mut vals: Vec<Vec<f64>> = ts.iter().map(|t| cpu::read(t.storage().cpu().unwrap(), t.layout())).collect();
    f(&mut vals);
    for (t, v) in ts.iter_mut().zip(vals) {
        let dtype = t.dtype();
        let shape = t.shape().to_vec();
        let new = CpuStorage::from_f64(v, dtype);
        if let Some(inner) = Arc::get_mut(&mut t.0) {
            if let Storage::Cpu(s) = &mut inner.storage {
                if let Some(s) = Arc::get_mut(s) {
                    *s = new;
                    continue;
                }
            }
        }
        **t = Tensor::new_contiguous(Storage::Cpu(Arc::new(new)), &shape, dtype, Device::Cpu);
    }
}

impl Tensor {
    /// SGD step in place on `self` (PyTorch semantics): g = grad + wd p; v = momentum v + g;
    /// p -= lr v (v is used only when momentum > 0).
    pub fn sgd_update_(&mut self, grad: &Tensor, velocity: &mut Tensor, lr: f64, momentum: f64, weight_decay: f64) -> Result<()> {
        check_state("sgd", self, &[grad, velocity])?;
        match self.device().clone() {
            Device::Gpu(ctx) => {
                let g = grad.contiguous()?;
                let gb = g.storage().gpu().unwrap();
                ctx.sgd_step(self.storage().gpu().unwrap(), gb, velocity.storage().gpu().unwrap(), self.numel(), lr as f32, momentum as f32, weight_decay as f32)?;
            }
            Device::Cpu => {
                let gv = cpu::read(grad.storage().cpu().unwrap(), grad.layout());
                cpu_update(&mut [self, velocity], |v| {
                    for i in 0..gv.len() {
                        let mut g = gv[i] + weight_decay * v[0][i];
                        if momentum != 0.0 {
                            g += momentum * v[1][i];
                            v[1][i] = g;
                        }
                        v[0][i] -= lr * g;
                    }
                });
            }
        }
        Ok(())
    }

    /// Adam / AdamW step in place on `self` with moment estimates `m`, `v`.
    pub fn adam_update_(&mut self, grad: &Tensor, m: &mut Tensor, v: &mut Tensor, h: AdamParams) -> Result<()> {
        check_state("adam", self, &[grad, m, v])?;
        match self.device().clone() {
            Device::Gpu(ctx) => {
                let g = grad.contiguous()?;
                ctx.adam_step(self.storage().gpu().unwrap(), g.storage().gpu().unwrap(), m.storage().gpu().unwrap(), v.storage().gpu().unwrap(), self.numel(), h)?;
            }
            Device::Cpu => {
                let gv = cpu::read(grad.storage().cpu().unwrap(), grad.layout());
                let r = |x: f32| x as f64;
                cpu_update(&mut [self, m, v], |s| {
                    for i in 0..gv.len() {
                        let mut p = s[0][i];
                        let mut g = gv[i];
                        if h.decoupled {
                            p -= r(h.lr) * r(h.weight_decay) * p;
                        } else {
                            g += r(h.weight_decay) * p;
                        }
                        s[1][i] = r(h.beta1) * s[1][i] + (1.0 - r(h.beta1)) * g;
                        s[2][i] = r(h.beta2) * s[2][i] + (1.0 - r(h.beta2)) * g * g;
                        s[0][i] = p - r(h.lr) * (s[1][i] / r(h.bias_correction1)) / ((s[2][i] / r(h.bias_correction2)).sqrt() + r(h.eps));
                    }
                });
            }
        }
        Ok(())
    }
}
