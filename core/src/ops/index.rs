//! Index primitives with bounds-checked u32 indices: index_select, gather, one_hot.
//! Bounds are checked on the host before a kernel runs; a u32 tensor made from host data
//! or by argmax carries a known bound, so the check needs no readback. Kernels never
//! dereference an index past the axis either way.
use super::cpu_of;
use crate::graph::{record, Op};
use crate::shape::normalize_axis;
use crate::storage::CpuStorage;
use crate::tensor::check_float;
use crate::{cpu, DType, Error, Result, Tensor};

pub(super) fn check_indices(op: &'static str, idx: &Tensor, size: usize) -> Result<()> {
    if idx.dtype() != DType::U32 {
        return Err(Error::UnsupportedDType { op, dtype: idx.dtype(), device: idx.device().name(), why: " (indices must be u32)".into() });
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

impl Tensor {
    /// Entries `idx` (1-d u32) of `axis`: out has x's shape with that axis of idx's length.
    pub fn index_select(&self, axis: isize, idx: &Tensor) -> Result<Tensor> {
        check_float("index_select", self)?;
        if self.dtype() == DType::F16 {
            return self.via_f32(|x| x.index_select(axis, idx));
        }
        let ax = normalize_axis("index_select", axis, self.rank())?;
        if idx.rank() != 1 {
            return Err(Error::Invalid { op: "index_select", msg: format!("indices must be 1-d, got shape {:?}", idx.shape()) });
        }
        if idx.device() != self.device() {
            return Err(Error::DeviceMismatch { op: "index_select", lhs: self.device().name(), rhs: idx.device().name() });
        }
        let size = self.shape()[ax];
        check_indices("index_select", idx, size)?;
        let mut shape = self.shape().to_vec();
        shape[ax] = idx.numel();
        let out = super::run(
            self,
            &shape,
            self.dtype(),
            || {
                let ids = cpu::read(cpu_of(idx), idx.layout());
                Ok(self.cpu_pick(&shape, ax, |_, c| ids[c] as usize))
            },
            |ctx| Ok(ctx.index_select(self.view(), idx.view(), &shape, ax, size)?),
        )?;
        Ok(record(out, Op::IndexSelect { axis: ax }, &[self, &idx.detach()], &[false, true], false))
    }

    /// torch.gather: out[.., j, ..] = x[.., idx[.., j, ..], ..] along `axis`; idx has x's
    /// rank and x's sizes on every other axis.
    pub fn gather(&self, axis: isize, idx: &Tensor) -> Result<Tensor> {
        check_float("gather", self)?;
        if self.dtype() == DType::F16 {
            return self.via_f32(|x| x.gather(axis, idx));
        }
        let ax = normalize_axis("gather", axis, self.rank())?;
        let ok = idx.rank() == self.rank() && (0..self.rank()).all(|d| d == ax || idx.shape()[d] == self.shape()[d]);
        if !ok {
            return Err(Error::ShapeMismatch { op: "gather", lhs: self.shape().to_vec(), rhs: idx.shape().to_vec(), msg: format!("indices must match the input on every axis but {ax}") });
        }
        if idx.device() != self.device() {
            return Err(Error::DeviceMismatch { op: "gather", lhs: self.device().name(), rhs: idx.device().name() });
        }
        let size = self.shape()[ax];
        check_indices("gather", idx, size)?;
        let shape = idx.shape().to_vec();
        let out = super::run(
            self,
            &shape,
            self.dtype(),
            || {
                let ids = cpu::read(cpu_of(idx), idx.layout());
                Ok(self.cpu_pick(&shape, ax, |i, _| ids[i] as usize))
            },
            |ctx| Ok(ctx.gather(self.view(), idx.view(), &shape, ax, size)?),
        )?;
        Ok(record(out, Op::Gather { axis: ax }, &[self, &idx.detach()], &[false, true], false))
    }

    /// [idx.shape.., classes] of 0 / 1 in `dtype` from u32 indices (no gradient).
    pub fn one_hot(&self, classes: usize, dtype: DType) -> Result<Tensor> {
        check_indices("one_hot", self, classes)?;
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType { op: "one_hot", dtype, device: self.device().name(), why: " (a float output dtype is needed)".into() });
        }
        crate::tensor::check_gpu_dtype("one_hot", dtype, self.device())?;
        let mut shape = self.shape().to_vec();
        shape.push(classes);
        super::run(
            self,
            &shape,
            dtype,
            || {
                let ids = cpu::read(cpu_of(self), self.layout());
                let mut v = vec![0.0; ids.len() * classes];
                for (i, &k) in ids.iter().enumerate() {
                    v[i * classes + k as usize] = 1.0;
                }
                Ok(CpuStorage::from_f64(v, dtype))
            },
            |ctx| Ok(ctx.one_hot(self.view(), self.shape(), classes)?),
        )
    }

    /// CPU reference of the index ops: output element i (of `shape`) reads x at the output's
    /// multi-index with the `axis` coordinate replaced by `index(i, coordinate)`.
    fn cpu_pick(&self, shape: &[usize], axis: usize, index: impl Fn(usize, usize) -> usize) -> CpuStorage {
        let x = cpu::read(cpu_of(self), self.layout());
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
