//! Reductions over any set of axes (deterministic fixed-order trees on the GPU), index
//! reductions, the fused softmax / log-softmax primitives, and the stable composites
//! built on them (mean, logsumexp).
use super::cpu_of;
use crate::fusion::{Fusible, FusionHost, HostKind};
use crate::graph::ReduceKind;
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::shape::{normalize_axes, normalize_axis, numel};
use crate::storage::CpuStorage;
use crate::tensor::check_float;
use crate::{cpu, DType, Error, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::{ArgReduceOp, Context, Epilogue, GpuBuffer, ReduceOp};

/// A reduction as a fusion host: deferred, its loads compute a pending elementwise input
/// (a prologue: sum(x * y), mean((a - b)^2)).
struct ReduceHost {
    op: ReduceOp,
    axes: Vec<usize>,
}

impl FusionHost for ReduceHost {
    fn name(&self) -> &'static str {
        "reduce"
    }
    fn kind(&self) -> HostKind {
        HostKind::Prologue
    }
    /// the reduced axes walked last, through x's strides
    fn launch(&self, ctx: &Arc<Context>, x: &Tensor) -> Result<GpuBuffer> {
        let walk = x.with_layout(x.layout().axes_last(&self.axes));
        Ok(ctx.reduce(self.op, walk.view(), walk.shape(), self.axes.len())?)
    }
    fn launch_with_prologue(
        &self,
        ctx: &Arc<Context>,
        shape: &[usize],
        prologue: &Epilogue,
    ) -> Result<Option<(GpuBuffer, Vec<GpuBuffer>)>> {
        let walk = crate::Layout::contiguous(shape).axes_last(&self.axes);
        Ok(Some(ctx.reduce_fused(self.op, &walk.strides, &walk.shape, self.axes.len(), prologue)?))
    }
}

/// softmax over the last axis as a fusion host: deferred over a pending input, which the
/// row kernel computes as it loads it (its row max and sum read the producer directly).
struct SoftmaxHost {
    axis: usize,
}

impl FusionHost for SoftmaxHost {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn kind(&self) -> HostKind {
        HostKind::Prologue
    }
    /// only a pending input along its last axis, in rows the kernel's loops take
    fn defers(&self, x: &Tensor, pending_map: bool) -> bool {
        let n = x.shape().last().copied().unwrap_or(1);
        pending_map && self.axis + 1 == x.rank() && x.numel() > 0 && wgrad_kernels::softmax_rows_fit(n)
    }
    fn launch(&self, ctx: &Arc<Context>, x: &Tensor) -> Result<GpuBuffer> {
        let n = x.shape().last().copied().unwrap_or(1);
        let rows = x.numel() / n;
        let x = x.dense()?;
        ctx.softmax_rows(x.view(), rows, n)?.ok_or_else(|| Error::Invalid {
            op: "softmax",
            msg: format!("rows of {n} are past the row kernel's limit"),
        })
    }
    fn launch_with_prologue(
        &self,
        ctx: &Arc<Context>,
        shape: &[usize],
        prologue: &Epilogue,
    ) -> Result<Option<(GpuBuffer, Vec<GpuBuffer>)>> {
        let n = shape.last().copied().unwrap_or(1);
        Ok(ctx.softmax_rows_fused(shape.iter().product::<usize>() / n, n, prologue)?)
    }
}

fn split_axes(rank: usize, axes: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let kept: Vec<usize> = (0..rank).filter(|d| !axes.contains(d)).collect();
    let mut perm = kept.clone();
    perm.extend_from_slice(axes);
    (kept, perm)
}

fn out_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    (0..shape.len()).filter_map(|d| if axes.contains(&d) { keepdim.then_some(1) } else { Some(shape[d]) }).collect()
}

/// `t` (reduced over `axes`) with those axes put back as size 1 (the keepdim shape).
fn keepdim_view(t: &Tensor, in_shape: &[usize], axes: &[usize], kept: bool) -> Result<Tensor> {
    if kept {
        return Ok(t.clone());
    }
    t.reshape(&out_shape(in_shape, axes, true))
}

/// sum / max / min over `axes` (normalized, sorted).
pub struct Reduce {
    pub kind: ReduceKind,
    pub axes: Vec<usize>,
    pub keepdim: bool,
}

impl Reduce {
    fn reduce_op(&self) -> ReduceOp {
        match self.kind {
            ReduceKind::Sum => ReduceOp::Sum,
            ReduceKind::Max => ReduceOp::Max,
            ReduceKind::Min => ReduceOp::Min,
        }
    }
    /// [x == extremum] / ties: where the max / min reduction's derivative goes.
    fn extremum_weights(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let ax: Vec<isize> = self.axes.iter().map(|&a| a as isize).collect();
        let mask = x.eq(&keepdim_view(y, x.shape(), &self.axes, self.keepdim)?)?;
        mask.div(&mask.sum(&ax, true)?)
    }
}

impl Primitive for Reduce {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn name(&self) -> String {
        format!("{:?}", self.kind).to_lowercase()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let name = match self.kind {
            ReduceKind::Sum => "sum",
            ReduceKind::Max => "max",
            ReduceKind::Min => "min",
        };
        check_float(name, x[0])?;
        if self.kind != ReduceKind::Sum {
            if let Some(&d) = self.axes.iter().find(|&&d| x[0].shape()[d] == 0) {
                return Err(Error::Empty { op: name, msg: format!("axis {d} of shape {:?} is empty", x[0].shape()) });
            }
        }
        Ok(OutSpec::new(&out_shape(x[0].shape(), &self.axes, self.keepdim), x[0].dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        self.kind != ReduceKind::Sum
    }
    fn saves_output(&self) -> bool {
        self.kind != ReduceKind::Sum
    }
    /// Deferred on the GPU, so that a pending elementwise input is computed inside the
    /// reduction as it is loaded (prologue fusion, see `fusion/`).
    fn fusible(&self) -> Option<Fusible> {
        Some(Fusible::Host(Arc::new(ReduceHost { op: self.reduce_op(), axes: self.axes.clone() })))
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let x = x[0];
        let (kept, perm) = split_axes(x.rank(), &self.axes);
        let pt = x.with_layout(x.layout().permute(&perm));
        let outer = numel(&kept.iter().map(|&d| x.shape()[d]).collect::<Vec<_>>());
        let inner: usize = self.axes.iter().map(|&d| x.shape()[d]).product();
        let st = cpu_of(&pt);
        let (st, l) = (&*st, pt.layout());
        let r = match self.kind {
            ReduceKind::Sum => cpu::reduce_view(st, l, inner, outer, 0.0, |a, b| a + b),
            ReduceKind::Max => cpu::reduce_view(st, l, inner, outer, f64::NEG_INFINITY, cpu::max_nan),
            ReduceKind::Min => cpu::reduce_view(st, l, inner, outer, f64::INFINITY, cpu::min_nan),
        };
        Ok(out.cpu(CpuStorage::from_f64(r, out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let pt = x[0].with_layout(x[0].layout().axes_last(&self.axes));
        Ok(out.gpu(ctx.reduce(self.reduce_op(), pt.view(), pt.shape(), self.axes.len())?, x[0].device()))
    }
    /// sum: x-bar = g broadcast back over the reduced axes;
    /// max / min: x-bar = g at the extrema, ties split evenly
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let in_shape = &node.input_shapes[0];
        let gk = keepdim_view(g, in_shape, &self.axes, self.keepdim)?;
        Ok(vec![Some(match self.kind {
            ReduceKind::Sum => gk.broadcast_to(in_shape)?,
            _ => gk.mul(&self.extremum_weights(&node.input(0)?, &Node::output(node)?)?)?,
        })])
    }
    /// sum: jvp = sum(t); max / min: jvp = sum(t * [x == extremum] / ties), the tangent
    /// at the arg-extremum
    fn jvp(&self, x: &[Tensor], y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let Some(t) = &t[0] else { return Ok(None) };
        let ax: Vec<isize> = self.axes.iter().map(|&a| a as isize).collect();
        Ok(Some(match self.kind {
            ReduceKind::Sum => t.sum(&ax, self.keepdim)?,
            _ => t.mul(&self.extremum_weights(&x[0], y)?)?.sum(&ax, self.keepdim)?,
        }))
    }
    /// batch: the reduced axes shift by one
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        let axes = self.axes.iter().map(|&a| a + 1).collect();
        bind(Arc::new(Reduce { kind: self.kind, axes, keepdim: self.keepdim }), &[&x[0]])
    }
}

/// argmax / argmin along one axis, as u32 (piecewise constant: no derivative).
pub struct ArgReduce {
    pub op: ArgReduceOp,
    pub axis: usize,
    pub keepdim: bool,
}

impl Primitive for ArgReduce {
    /// f16 is compared in f32 (bind widens it; the indices are u32 either way)
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn name(&self) -> String {
        format!("{:?}", self.op).to_lowercase()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let name = if self.op == ArgReduceOp::ArgMax { "argmax" } else { "argmin" };
        check_float(name, x[0])?;
        if x[0].shape()[self.axis] == 0 {
            return Err(Error::Empty {
                op: name,
                msg: format!("axis {} of shape {:?} is empty", self.axis, x[0].shape()),
            });
        }
        Ok(OutSpec::new(&out_shape(x[0].shape(), &[self.axis], self.keepdim), DType::U32))
    }
    fn differentiable(&self) -> bool {
        false
    }
    fn forward(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let x = x[0];
        let (kept, perm) = split_axes(x.rank(), &[self.axis]);
        let pt = x.with_layout(x.layout().permute(&perm));
        let inner = x.shape()[self.axis];
        let outer = numel(&kept.iter().map(|&d| x.shape()[d]).collect::<Vec<_>>());
        let r = match x.device().context() {
            None => {
                let vals = cpu::read(&cpu_of(&pt), pt.layout());
                let r = if self.op == ArgReduceOp::ArgMax {
                    cpu::arg_rows(&vals, inner, outer, |v, b| v > b)
                } else {
                    cpu::arg_rows(&vals, inner, outer, |v, b| v < b)
                };
                out.cpu(CpuStorage::from_f64(r, DType::U32))
            }
            Some(ctx) => out.gpu(ctx.arg_reduce(self.op, pt.view(), pt.shape())?, x.device()),
        };
        Ok(r.with_index_bound(u32::try_from(inner).ok()))
    }
    /// piecewise constant: no cotangent
    fn vjp(&self, _node: &Arc<Node>, _g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None])
    }
    /// piecewise constant: zero tangent
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, _t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// batch: the axis shifts by one
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        bind(Arc::new(ArgReduce { op: self.op, axis: self.axis + 1, keepdim: self.keepdim }), &[&x[0]])
    }
}

impl Tensor {
    fn reduce(&self, kind: ReduceKind, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let name = match kind {
            ReduceKind::Sum => "sum",
            ReduceKind::Max => "max",
            ReduceKind::Min => "min",
        };
        check_float(name, self)?;
        let mut axes = normalize_axes(name, axes, self.rank())?;
        axes.sort_unstable();
        bind(Arc::new(Reduce { kind, axes, keepdim }), &[self])
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
        let axis = normalize_axis(name, axis, self.rank())?;
        bind(Arc::new(ArgReduce { op, axis, keepdim }), &[self])
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

    /// exp(x) / sum(exp(x)) along `axis`, stable for large logits (one kernel on the GPU
    /// along the last axis).
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        check_float("softmax", self)?;
        let axis = normalize_axis("softmax", axis, self.rank())?;
        bind(Arc::new(Softmax { axis }), &[self])
    }

    /// x - logsumexp(x) along `axis`.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        check_float("log_softmax", self)?;
        let axis = normalize_axis("log_softmax", axis, self.rank())?;
        bind(Arc::new(LogSoftmax { axis }), &[self])
    }
}

/// softmax of one row in place, the max subtracted first (a row whose max is infinite
/// subtracts 0: rows of -inf give 0 / 0 = NaN as the composite does, +inf gives NaN).
pub(crate) fn softmax_row(row: &mut [f64]) {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, crate::cpu::max_nan);
    let m = if m.is_infinite() { 0.0 } else { m };
    let mut sum = 0.0;
    for e in row.iter_mut() {
        *e = (*e - m).exp();
        sum += *e;
    }
    row.iter_mut().for_each(|e| *e /= sum);
}

/// softmax along `axis` as one primitive.
pub struct Softmax {
    pub axis: usize,
}

impl Softmax {
    /// s * (v - sum_axis(s * v)): the symmetric softmax Jacobian diag(s) - s s^T applied
    /// to v (fused along the last axis).
    fn jacobian_times(&self, x: &Tensor, s: &Tensor, v: &Tensor) -> Result<Tensor> {
        if self.axis + 1 == x.rank() {
            return x.softmax_vjp(v, None, 1.0);
        }
        let sv = s.mul(v)?;
        sv.sub(&s.mul(&sv.sum(&[self.axis as isize], true)?)?)
    }
}

impl Primitive for Softmax {
    fn name(&self) -> String {
        "softmax".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_float("softmax", x[0])?;
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        true
    }
    fn saves_output(&self) -> bool {
        true
    }
    /// Rows of the last axis in one pass each (max, exp, sum, divide); other axes through
    /// the composite.
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let n = x[0].shape().get(self.axis).copied().unwrap_or(0);
        if self.axis + 1 != x[0].rank() || n == 0 {
            return x[0].softmax_composite(self.axis as isize);
        }
        let mut v = x[0].cpu_values();
        crate::cpu::par_rows(&mut v, n, |_, row| softmax_row(row));
        Ok(out.cpu(CpuStorage::from_f64(v, out.dtype)))
    }
    /// Along the last axis, deferred on the GPU: a pending input is computed inside the row
    /// kernel as it loads it (its row max and sum read the producer; see `fusion/`).
    fn fusible(&self) -> Option<Fusible> {
        Some(Fusible::Host(Arc::new(SoftmaxHost { axis: self.axis })))
    }
    /// The row kernel along the last axis (f32, rows within its loop limit); elsewhere
    /// the same math as kernels of other ops.
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let x = x[0];
        if self.axis + 1 == x.rank() && x.dtype() == DType::F32 && x.numel() > 0 {
            let n = x.shape()[self.axis];
            let c = x.contiguous()?;
            if let Some(buf) = ctx.softmax_rows(c.view(), x.numel() / n, n)? {
                return Ok(out.gpu(buf, x.device()));
            }
        }
        x.softmax_composite(self.axis as isize)
    }
    /// x-bar = s * (g - sum_axis(s * g)) (J_s symmetric)
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(self.jacobian_times(&node.input(0)?, &Node::output(node)?, g)?)])
    }
    /// jvp = s * (t - sum_axis(s * t))
    fn jvp(&self, x: &[Tensor], y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| self.jacobian_times(&x[0], y, t)).transpose()
    }
    /// batch: the axis shifts by one
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].softmax(self.axis as isize + 1)
    }
}

/// log_softmax along `axis` as one primitive.
pub struct LogSoftmax {
    pub axis: usize,
}

impl Primitive for LogSoftmax {
    fn name(&self) -> String {
        "log_softmax".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_float("log_softmax", x[0])?;
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    fn saves_output(&self) -> bool {
        true
    }
    /// x - logsumexp(x), with the reduction kernels (the same on both devices)
    fn forward(&self, x: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        x[0].sub(&x[0].logsumexp(&[self.axis as isize], true)?)
    }
    /// x-bar = g - softmax(x) sum_axis(g), softmax(x) = exp(y)
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let s = Node::output(node)?.exp()?;
        Ok(vec![Some(g.sub(&s.mul(&g.sum(&[self.axis as isize], true)?)?)?)])
    }
    /// jvp = t - sum_axis(softmax(x) t)
    fn jvp(&self, _x: &[Tensor], y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let Some(t) = &t[0] else { return Ok(None) };
        let s = y.exp()?;
        Ok(Some(t.sub(&s.mul(t)?.sum(&[self.axis as isize], true)?)?))
    }
    /// batch: the axis shifts by one
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].log_softmax(self.axis as isize + 1)
    }
}

impl Tensor {
    fn softmax_composite(&self, axis: isize) -> Result<Tensor> {
        let m = self.stable_shift(&[axis])?;
        let e = self.sub(&m)?.exp()?;
        e.div(&e.sum(&[axis], true)?)
    }
}
