//! Index primitives with bounds-checked u32 indices: index_select, gather, one_hot.
//! Bounds are checked on the host before a kernel runs; a u32 tensor made from host data
//! or by argmax carries a known bound, so the check needs no readback. Kernels never
//! dereference an index past the axis either way.
use super::cpu_of;
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::shape::normalize_axis;
use crate::storage::CpuStorage;
use crate::tensor::check_float;
use crate::{cpu, DType, Error, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::Context;

pub(super) fn check_indices(op: &'static str, idx: &Tensor, size: usize) -> Result<()> {
    if idx.dtype() != DType::U32 {
        return Err(Error::UnsupportedDType {
            op,
            dtype: idx.dtype(),
            device: idx.device().name(),
            why: " (indices must be u32)".into(),
        });
    }
    if idx.numel() == 0 {
        return Ok(());
    }
    if let Some(b) = idx.index_bound() {
        if b as usize <= size {
            return Ok(());
        }
    }
    // Unknown or too loose a bound: look at the values (a readback on the GPU).
    let max = idx.to_vec::<u32>()?.into_iter().max().unwrap_or(0);
    if max as usize >= size {
        return Err(Error::IndexOutOfRange { op, index: max as u64, size });
    }
    Ok(())
}

/// Entries `idx` (1-d u32) of `axis`.
pub struct IndexSelect {
    pub axis: usize,
}

impl Primitive for IndexSelect {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn name(&self) -> String {
        "index_select".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let (x, idx) = (x[0], x[1]);
        check_float("index_select", x)?;
        if idx.rank() != 1 {
            return Err(Error::Invalid {
                op: "index_select",
                msg: format!("indices must be 1-d, got shape {:?}", idx.shape()),
            });
        }
        if idx.device() != x.device() {
            return Err(Error::DeviceMismatch { op: "index_select", lhs: x.device().name(), rhs: idx.device().name() });
        }
        check_indices("index_select", idx, x.shape()[self.axis])?;
        let mut shape = x.shape().to_vec();
        shape[self.axis] = idx.numel();
        Ok(OutSpec::new(&shape, x.dtype()))
    }
    fn saves_input(&self, i: usize) -> bool {
        i == 1
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let ids = x[1].cpu_values();
        Ok(out.cpu(x[0].cpu_pick(&out.shape, self.axis, |_, c| ids[c] as usize)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let size = x[0].shape()[self.axis];
        Ok(out.gpu(ctx.index_select(x[0].view(), x[1].view(), &out.shape, self.axis, size)?, x[0].device()))
    }
    /// x-bar = g with `axis` moved last, times one_hot(idx, n): row j gathers every g
    /// entry picked from j (a product: deterministic, no atomics, differentiable again)
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let idx = &node.input(1)?;
        let oh = idx.one_hot(node.input_shapes[0][self.axis], g.dtype())?;
        let (ax, last) = (self.axis as isize, g.rank() as isize - 1);
        Ok(vec![Some(g.transpose(ax, last)?.matmul(&oh)?.transpose(ax, last)?), None])
    }
    /// linear in x: jvp = index_select(t, idx)
    fn jvp(&self, x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| t.index_select(self.axis as isize, &x[1])).transpose()
    }
    /// batch: with shared indices the axis shifts by one; batched indices become a gather
    /// whose index, spread over the other axes, picks each example's own entries
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        let (ax, xs) = (self.axis + 1, b.expand(&x[0], batched[0])?);
        if !batched[1] {
            return xs.index_select(ax as isize, &x[1]);
        }
        let mut shape = xs.shape().to_vec();
        shape[ax] = x[1].shape()[1];
        let mut lined = vec![1; shape.len()];
        (lined[0], lined[ax]) = (b.size, shape[ax]);
        xs.gather(ax as isize, &x[1].reshape(&lined)?.broadcast_to(&shape)?.contiguous()?)
    }
}

/// torch.gather along `axis`.
pub struct Gather {
    pub axis: usize,
}

impl Primitive for Gather {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn name(&self) -> String {
        "gather".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let (x, idx, ax) = (x[0], x[1], self.axis);
        check_float("gather", x)?;
        let ok = idx.rank() == x.rank() && (0..x.rank()).all(|d| d == ax || idx.shape()[d] == x.shape()[d]);
        if !ok {
            return Err(Error::ShapeMismatch {
                op: "gather",
                lhs: x.shape().to_vec(),
                rhs: idx.shape().to_vec(),
                msg: format!("indices must match the input on every axis but {ax}"),
            });
        }
        if idx.device() != x.device() {
            return Err(Error::DeviceMismatch { op: "gather", lhs: x.device().name(), rhs: idx.device().name() });
        }
        check_indices("gather", idx, x.shape()[ax])?;
        Ok(OutSpec::new(idx.shape(), x.dtype()))
    }
    fn saves_input(&self, i: usize) -> bool {
        i == 1
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let ids = x[1].cpu_values();
        Ok(out.cpu(x[0].cpu_pick(&out.shape, self.axis, |i, _| ids[i] as usize)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let size = x[0].shape()[self.axis];
        Ok(out.gpu(ctx.gather(x[0].view(), x[1].view(), &out.shape, self.axis, size)?, x[0].device()))
    }
    /// x-bar[.., j, ..] = sum_k [idx[.., k, ..] = j] g[.., k, ..] along `axis`
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (idx, axis) = (&node.input(1)?, self.axis);
        let oh = idx.one_hot(node.input_shapes[0][axis], g.dtype())?;
        let summed = g.unsqueeze(-1)?.mul(&oh)?.sum(&[axis as isize], false)?;
        // summed: x's axes without `axis`, then n last; move n back to position `axis`.
        let r = summed.rank();
        let perm: Vec<usize> = (0..r)
            .map(|p| {
                if p < axis {
                    p
                } else if p == axis {
                    r - 1
                } else {
                    p - 1
                }
            })
            .collect();
        Ok(vec![Some(summed.permute(&perm)?), None])
    }
    /// linear in x: jvp = gather(t, idx)
    fn jvp(&self, x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| t.gather(self.axis as isize, &x[1])).transpose()
    }
    /// batch: both with the batch in front, the axis shifted by one
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        let idx = b.expand(&x[1], batched[1])?.contiguous()?;
        b.expand(&x[0], batched[0])?.gather(self.axis as isize + 1, &idx)
    }
}

/// [idx.shape.., classes] of 0 / 1 from u32 indices (no derivative).
pub struct OneHot {
    pub classes: usize,
    pub dtype: DType,
}

impl Primitive for OneHot {
    fn name(&self) -> String {
        "one_hot".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_indices("one_hot", x[0], self.classes)?;
        if !self.dtype.is_float() {
            return Err(Error::UnsupportedDType {
                op: "one_hot",
                dtype: self.dtype,
                device: x[0].device().name(),
                why: " (a float output dtype is needed)".into(),
            });
        }
        crate::tensor::check_gpu_dtype("one_hot", self.dtype, x[0].device())?;
        let mut shape = x[0].shape().to_vec();
        shape.push(self.classes);
        Ok(OutSpec::new(&shape, self.dtype))
    }
    fn differentiable(&self) -> bool {
        false
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let ids = x[0].cpu_values();
        let mut v = vec![0.0; ids.len() * self.classes];
        for (i, &k) in ids.iter().enumerate() {
            v[i * self.classes + k as usize] = 1.0;
        }
        Ok(out.cpu(CpuStorage::from_f64(v, self.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        Ok(out.gpu(ctx.one_hot(x[0].view(), x[0].shape(), self.classes)?, x[0].device()))
    }
    /// indices carry no derivative
    fn vjp(&self, _node: &Arc<Node>, _g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None])
    }
    /// indices carry no derivative
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, _t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// batch: elementwise in the indices
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].one_hot(self.classes, self.dtype)
    }
}

impl Tensor {
    /// Entries `idx` (1-d u32) of `axis`: out has x's shape with that axis of idx's length.
    pub fn index_select(&self, axis: isize, idx: &Tensor) -> Result<Tensor> {
        check_float("index_select", self)?;
        let axis = normalize_axis("index_select", axis, self.rank())?;
        bind(Arc::new(IndexSelect { axis }), &[self, &idx.detach()])
    }

    /// Rows `ids` of the table `self` [vocab, dim] for u32 ids of any shape:
    /// `ids.shape ++ [dim]` (an embedding lookup). Its gradient accumulates repeated ids
    /// through a one-hot product (deterministic, no atomics, differentiable again).
    pub fn embedding(&self, ids: &Tensor) -> Result<Tensor> {
        let op = "embedding";
        if self.rank() != 2 {
            return Err(Error::Invalid { op, msg: format!("the weight must be [vocab, dim], got {:?}", self.shape()) });
        }
        if ids.device() != self.device() {
            return Err(Error::DeviceMismatch { op, lhs: self.device().name(), rhs: ids.device().name() });
        }
        check_indices(op, ids, self.shape()[0]).map_err(|e| match e {
            Error::IndexOutOfRange { index, size, .. } => Error::Invalid {
                op,
                msg: format!(
                    "token id {index} is out of range for a vocabulary of {size} (weight {:?}, ids {:?})",
                    self.shape(),
                    ids.shape()
                ),
            },
            e => e,
        })?;
        let mut shape = ids.shape().to_vec();
        shape.push(self.shape()[1]);
        self.index_select(0, &ids.reshape(&[ids.numel()])?)?.reshape(&shape)
    }

    /// torch.gather: out[.., j, ..] = x[.., idx[.., j, ..], ..] along `axis`; idx has x's
    /// rank and x's sizes on every other axis.
    pub fn gather(&self, axis: isize, idx: &Tensor) -> Result<Tensor> {
        check_float("gather", self)?;
        let axis = normalize_axis("gather", axis, self.rank())?;
        bind(Arc::new(Gather { axis }), &[self, &idx.detach()])
    }

    /// [idx.shape.., classes] of 0 / 1 in `dtype` from u32 indices (no gradient).
    pub fn one_hot(&self, classes: usize, dtype: DType) -> Result<Tensor> {
        bind(Arc::new(OneHot { classes, dtype }), &[&self.detach()])
    }

    /// CPU reference of the index ops: output element i (of `shape`) reads x at the output's
    /// multi-index with the `axis` coordinate replaced by `index(i, coordinate)`.
    fn cpu_pick(&self, shape: &[usize], axis: usize, index: impl Fn(usize, usize) -> usize) -> CpuStorage {
        let x = cpu::read(&cpu_of(self), self.layout());
        let xs = crate::shape::contiguous_strides(self.shape());
        let os = crate::shape::contiguous_strides(shape);
        let v = (0..crate::shape::numel(shape))
            .map(|i| {
                let mut off = 0;
                for d in 0..shape.len() {
                    let c = (i / os[d]) % shape[d];
                    off += if d == axis { index(i, c) } else { c } * xs[d];
                }
                x[off]
            })
            .collect();
        CpuStorage::from_f64(v, self.dtype())
    }
}
