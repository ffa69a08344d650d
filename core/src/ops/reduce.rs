//! Reductions over any set of axes (deterministic fixed-order trees on the GPU), index
//! reductions, and the stable composites built on them (logsumexp, softmax, log_softmax).
use super::{cpu_of, run};
use crate::graph::{record, Op, ReduceKind};
use crate::shape::{normalize_axes, normalize_axis, numel};
use crate::storage::CpuStorage;
use crate::tensor::check_float;
use crate::{cpu, DType, Error, Result, Tensor};
use wgrad_kernels::{ArgReduceOp, ReduceOp};

/// Kept axes first, reduced axes last.
fn split_axes(rank: usize, axes: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = (0..rank).filter(|d| !axes.contains(d)).collect();
    let mut perm = kept.clone();
    perm.extend_from_slice(axes);
    (kept, perm)
}

fn out_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    (0..shape.len())
        .filter_map(|d| if axes.contains(&d) { keepdim.then_some(1) } else { Some(shape[d]) })
        .collect()
}

impl Tensor {
    fn reduce(&self, kind: ReduceKind, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let name = match kind {
            ReduceKind::Sum => "sum",
            ReduceKind::Max => "max",
            ReduceKind::Min => "min",
        };
        check_float(name, self)?;
        if self.dtype() == DType::F16 {
            return self.via_f32(|x| x.reduce(kind, axes, keepdim));
        }
        let axes = normalize_axes(name, axes, self.rank())?;
        if kind != ReduceKind::Sum {
            if let Some(&d) = axes.iter().find(|&&d| self.shape()[d] == 0) {
                return Err(Error::Empty { op: name, msg: format!("axis {d} of shape {:?} is empty", self.shape()) });
            }
        }
        let (kept, perm) = split_axes(self.rank(), &axes);
        let view = self.layout().permute(&perm);
        let outer = numel(&kept.iter().map(|&d| self.shape()[d]).collect::<Vec<_>>());
        let inner: usize = axes.iter().map(|&d| self.shape()[d]).product();
        let shape = out_shape(self.shape(), &axes, keepdim);
        let pt = self.with_layout(view);
        let out = run(
            self,
            &shape,
            self.dtype(),
            || {
                let (st, l) = (cpu_of(&pt), pt.layout());
                let r = match kind {
                    ReduceKind::Sum => cpu::reduce_view(st, l, inner, outer, 0.0, |a, b| a + b),
                    ReduceKind::Max => cpu::reduce_view(st, l, inner, outer, f64::NEG_INFINITY, cpu::max_nan),
                    ReduceKind::Min => cpu::reduce_view(st, l, inner, outer, f64::INFINITY, cpu::min_nan),
                };
                Ok(CpuStorage::from_f64(r, self.dtype()))
            },
            |ctx| {
                let op = match kind {
                    ReduceKind::Sum => ReduceOp::Sum,
                    ReduceKind::Max => ReduceOp::Max,
                    ReduceKind::Min => ReduceOp::Min,
                };
                Ok(ctx.reduce(op, pt.view(), pt.shape(), axes.len())?)
            },
        )?;
        let saves = kind != ReduceKind::Sum;
        Ok(record(out, Op::Reduce { kind, axes, keepdim }, &[self], &[saves], saves))
    }

    /// Sum over `axes` (negative axes count from the end).
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceKind::Sum, axes, keepdim)
    }
    /// Max over `axes`; an empty axis is an error.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceKind::Max, axes, keepdim)
    }
    /// Min over `axes`; an empty axis is an error.
    pub fn min(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceKind::Min, axes, keepdim)
    }
    /// Mean over `axes`.
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let ax = normalize_axes("mean", axes, self.rank())?;
        let n: usize = ax.iter().map(|&d| self.shape()[d]).product();
        self.sum(axes, keepdim)?.mul_scalar(1.0 / n as f64)
    }
    fn all_axes(&self) -> Vec<isize> {
        (0..self.rank() as isize).collect()
    }
    /// Sum of all elements (0-d result; 0 for an empty tensor).
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum(&self.all_axes(), false)
    }
    /// Mean of all elements (0-d result).
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean(&self.all_axes(), false)
    }
    pub fn max_all(&self) -> Result<Tensor> {
        self.max(&self.all_axes(), false)
    }
    pub fn min_all(&self) -> Result<Tensor> {
        self.min(&self.all_axes(), false)
    }

    fn arg_reduce(&self, op: ArgReduceOp, axis: isize, keepdim: bool) -> Result<Tensor> {
        let name = if op == ArgReduceOp::ArgMax { "argmax" } else { "argmin" };
        check_float(name, self)?;
        if self.dtype() == DType::F16 {
            return self.to_dtype(DType::F32)?.arg_reduce(op, axis, keepdim);
        }
        let ax = normalize_axis(name, axis, self.rank())?;
        if self.shape()[ax] == 0 {
            return Err(Error::Empty { op: name, msg: format!("axis {ax} of shape {:?} is empty", self.shape()) });
        }
        let (kept, perm) = split_axes(self.rank(), &[ax]);
        let pt = self.with_layout(self.layout().permute(&perm));
        let inner = self.shape()[ax];
        let outer = numel(&kept.iter().map(|&d| self.shape()[d]).collect::<Vec<_>>());
        let shape = out_shape(self.shape(), &[ax], keepdim);
        let out = run(
            self,
            &shape,
            DType::U32,
            || {
                let vals = cpu::read(cpu_of(&pt), pt.layout());
                let r = if op == ArgReduceOp::ArgMax {
                    cpu::arg_rows(&vals, inner, outer, |v, b| v > b)
                } else {
                    cpu::arg_rows(&vals, inner, outer, |v, b| v < b)
                };
                Ok(CpuStorage::from_f64(r, DType::U32))
            },
            |ctx| Ok(ctx.arg_reduce(op, pt.view(), pt.shape())?),
        )?;
        let out = out.with_index_bound(u32::try_from(inner).ok());
        Ok(record(out, Op::ArgReduce, &[self], &[false], false))
    }

    /// Index of the largest element along `axis` (first on ties; NaN counts as largest), as u32.
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.arg_reduce(ArgReduceOp::ArgMax, axis, keepdim)
    }
    /// Index of the smallest element along `axis`, as u32.
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.arg_reduce(ArgReduceOp::ArgMin, axis, keepdim)
    }

    /// The row max used to stabilize exp; 0 where it is infinite, so that rows of -inf
    /// give -inf (not NaN). Detached: logsumexp and softmax do not depend on it.
    fn stable_shift(&self, axes: &[isize]) -> Result<Tensor> {
        let m = self.max(axes, true)?.detach();
        let finite = m.abs()?.lt(&m.full_like(f64::INFINITY)?)?;
        finite.where_(&m, &m.zeros_like()?)
    }

    /// log(sum(exp(x))) over `axes`, stable for large inputs.
    pub fn logsumexp(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let m = self.stable_shift(axes)?;
        let s = self.sub(&m)?.exp()?.sum(axes, true)?.log()?.add(&m)?;
        if keepdim {
            return Ok(s);
        }
        let ax = normalize_axes("logsumexp", axes, self.rank())?;
        s.reshape(&out_shape(self.shape(), &ax, false))
    }

    /// exp(x) / sum(exp(x)) along `axis`, stable for large logits. Along the last axis
    /// it is one op (one kernel on the GPU) with the VJP s * (g - sum(s * g)); elsewhere a
    /// composition of ops.
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        let ax = crate::shape::normalize_axis("softmax", axis, self.rank())?;
        if ax + 1 == self.rank() && self.dtype().is_float() && self.numel() > 0 {
            let x = self.clone();
            return crate::graph::custom_op(std::sync::Arc::new(SoftmaxLast), &[self], move || softmax_last(&x));
        }
        self.softmax_composite(axis)
    }

    fn softmax_composite(&self, axis: isize) -> Result<Tensor> {
        let m = self.stable_shift(&[axis])?;
        let e = self.sub(&m)?.exp()?;
        e.div(&e.sum(&[axis], true)?)
    }

    /// x - logsumexp(x) along `axis`.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        self.sub(&self.logsumexp(&[axis], true)?)
    }
}

/// softmax over the last axis as one op.
struct SoftmaxLast;

impl crate::graph::CustomOp for SoftmaxLast {
    fn name(&self) -> &str {
        "softmax"
    }
    /// With s = softmax(x) and the symmetric Jacobian diag(s) - s s^T (per row):
    /// x-bar = s * (g - sum_last(s * g)), the fused (and differentiable) softmax_vjp.
    fn vjp(&self, inputs: &[Tensor], _s: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(inputs[0].softmax_vjp(g, None, 1.0)?)])
    }
}

/// The forward of [`SoftmaxLast`]: the row kernel on the GPU, the composite elsewhere (and
/// past the kernel's loop limit).
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    if let (Some(ctx), crate::DType::F32) = (x.device().context(), x.dtype()) {
        let n = *x.shape().last().expect("rank >= 1");
        let c = x.contiguous()?;
        if let Some(buf) = ctx.softmax_rows(c.view(), x.numel() / n, n)? {
            return Ok(Tensor::new_contiguous(crate::storage::Storage::Gpu(std::sync::Arc::new(buf)), x.shape(), x.dtype(), x.device().clone()));
        }
    }
    x.softmax_composite(-1)
}
