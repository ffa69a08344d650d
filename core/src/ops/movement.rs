//! Layout primitives: views that share storage (reshape, permute, broadcast_to, narrow)
//! and copies (contiguous, cat).
use super::cpu_of;
use crate::graph::{record, Op};
use crate::shape::{broadcast_shapes, normalize_axis, numel};
use crate::storage::{CpuStorage, Storage};
use crate::tensor::check_same;
use crate::{cpu, Device, Error, Layout, Result, Tensor};
use std::sync::Arc;

impl Tensor {
    /// A tensor of another shape with the same elements in row-major order
    /// (a view when the data is contiguous, else a copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let out = match self.layout().reshape(shape)? {
            Some(l) => self.with_layout(l),
            None => {
                let c = crate::graph::no_grad(|| self.contiguous())?;
                c.with_layout(c.layout().reshape(shape)?.expect("contiguous"))
            }
        };
        Ok(record(out, Op::Reshape, &[self], &[false], false))
    }

    /// Reorder the axes: output axis i is input axis perm[i] (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let rank = self.rank();
        let mut seen = vec![false; rank];
        if perm.len() != rank || perm.iter().any(|&p| p >= rank || std::mem::replace(&mut seen[p], true)) {
            return Err(Error::Invalid { op: "permute", msg: format!("{perm:?} is not a permutation of the {rank} axes of {:?}", self.shape()) });
        }
        let out = self.with_layout(self.layout().permute(perm));
        Ok(record(out, Op::Permute(perm.to_vec()), &[self], &[false], false))
    }

    /// Swap two axes (negative axes count from the end).
    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let a = normalize_axis("transpose", d0, self.rank())?;
        let b = normalize_axis("transpose", d1, self.rank())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Transpose of the last two axes (a 0-d or 1-d tensor is returned as is).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Ok(self.clone());
        }
        self.transpose(-2, -1)
    }

    /// View as `shape` with numpy broadcasting (stride 0 on the new axes).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        let b = broadcast_shapes("broadcast_to", self.shape(), shape)?;
        if b != shape {
            return Err(Error::Broadcast { op: "broadcast_to", lhs: self.shape().to_vec(), rhs: shape.to_vec() });
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let out = self.with_layout(self.layout().broadcast_to(shape));
        Ok(record(out, Op::BroadcastTo, &[self], &[false], false))
    }

    /// `len` entries of `axis` from `start` (a view).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let ax = normalize_axis("narrow", axis, self.rank())?;
        let size = self.shape()[ax];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::SliceOutOfRange { op: "narrow", axis: ax, start, end: start.saturating_add(len), size });
        }
        let out = self.with_layout(self.layout().narrow(ax, start, len));
        Ok(record(out, Op::Narrow { axis: ax, start }, &[self], &[false], false))
    }

    /// Alias of `narrow(axis, start, end - start)`.
    pub fn slice(&self, axis: isize, start: usize, end: usize) -> Result<Tensor> {
        if end < start {
            let ax = normalize_axis("slice", axis, self.rank())?;
            return Err(Error::SliceOutOfRange { op: "slice", axis: ax, start, end, size: self.shape()[ax] });
        }
        self.narrow(axis, start, end - start)
    }

    /// Insert an axis of size 1.
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let ax = normalize_axis("unsqueeze", axis, self.rank() + 1)?;
        let mut s = self.shape().to_vec();
        s.insert(ax, 1);
        self.reshape(&s)
    }

    /// Remove an axis of size 1.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let ax = normalize_axis("squeeze", axis, self.rank())?;
        if self.shape()[ax] != 1 {
            return Err(Error::Invalid { op: "squeeze", msg: format!("axis {ax} of {:?} has size {}, not 1", self.shape(), self.shape()[ax]) });
        }
        let mut s = self.shape().to_vec();
        s.remove(ax);
        self.reshape(&s)
    }

    /// All elements in one axis.
    pub fn flatten(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])
    }

    /// A contiguous copy (or the tensor itself when it is already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.layout().is_contiguous() && self.layout().offset == 0 {
            return Ok(self.clone());
        }
        if self.dtype() == crate::DType::F16 && self.device().is_gpu() {
            // the copy kernel moves whole 32-bit words; halves are repacked instead
            return self.via_f32(|x| x.contiguous());
        }
        let out = super::run(
            self,
            self.shape(),
            self.dtype(),
            || Ok(CpuStorage::from_f64(cpu::read(cpu_of(self), self.layout()), self.dtype())),
            |ctx| Ok(ctx.contiguous(self.view(), self.shape())?),
        )?;
        Ok(record(out, Op::Contiguous, &[self], &[false], false))
    }

    /// Join tensors along an existing axis.
    pub fn cat(tensors: &[Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::Empty { op: "cat", msg: "no tensors to concatenate".into() })?;
        let refs: Vec<&Tensor> = tensors.iter().collect();
        check_same("cat", &refs)?;
        let ax = normalize_axis("cat", axis, first.rank())?;
        if first.dtype() == crate::DType::F16 && first.device().is_gpu() {
            let up = tensors.iter().map(|t| t.to_dtype(crate::DType::F32)).collect::<Result<Vec<_>>>()?;
            return Tensor::cat(&up, axis)?.to_dtype(crate::DType::F16);
        }
        for t in &tensors[1..] {
            let ok = t.rank() == first.rank() && (0..first.rank()).all(|d| d == ax || t.shape()[d] == first.shape()[d]);
            if !ok {
                return Err(Error::ShapeMismatch { op: "cat", lhs: first.shape().to_vec(), rhs: t.shape().to_vec(), msg: format!("all axes but {ax} must match") });
            }
        }
        let mut shape = first.shape().to_vec();
        shape[ax] = tensors.iter().map(|t| t.shape()[ax]).sum();
        let dst = Layout::contiguous(&shape);
        let storage = match first.device() {
            Device::Cpu => {
                let mut v = vec![0.0f64; numel(&shape)];
                let mut start = 0;
                for t in tensors {
                    let vals = cpu::read(cpu_of(t), t.layout());
                    for (o, x) in dst.narrow(ax, start, t.shape()[ax]).offsets().into_iter().zip(vals) {
                        v[o] = x;
                    }
                    start += t.shape()[ax];
                }
                Storage::Cpu(Arc::new(CpuStorage::from_f64(v, first.dtype())))
            }
            Device::Gpu(ctx) => {
                let out = ctx.alloc_output((numel(&shape) * 4) as u64)?;
                let mut start = 0;
                for t in tensors {
                    let region = dst.narrow(ax, start, t.shape()[ax]);
                    let dview = wgrad_kernels::View { buffer: &out, offset: region.offset, strides: &region.strides };
                    ctx.copy_into(t.view(), dview, t.shape())?;
                    start += t.shape()[ax];
                }
                Storage::Gpu(Arc::new(out))
            }
        };
        let out = Tensor::new_contiguous(storage, &shape, first.dtype(), first.device().clone());
        let saves = vec![false; tensors.len()];
        Ok(record(out, Op::Cat { axis: ax }, &refs, &saves, false))
    }

    /// Join tensors of one shape along a new axis.
    pub fn stack(tensors: &[Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::Empty { op: "stack", msg: "no tensors to stack".into() })?;
        let ax = normalize_axis("stack", axis, first.rank() + 1)?;
        let parts = tensors.iter().map(|t| t.unsqueeze(ax as isize)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, ax as isize)
    }
}
