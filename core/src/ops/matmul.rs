//! Batched matrix product with numpy batch broadcasting; transposed views need no copy.
use super::cpu_of;
use crate::graph::{record, Op};
use crate::shape::broadcast_shapes;
use crate::storage::Storage;
use crate::tensor::{check_float, check_same};
use crate::{cpu, Device, Error, Layout, Result, Tensor};
use std::sync::Arc;

impl Tensor {
    /// numpy `matmul`: [.., m, k] @ [.., k, n] -> [.., m, n] with broadcast batch dims;
    /// a 1-d operand is a row (left) or column (right) vector and its axis is dropped.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        check_same("matmul", &[self, rhs])?;
        check_float("matmul", self)?;
        if self.dtype() == crate::DType::F16 {
            let r = rhs.to_dtype(crate::DType::F32)?;
            return self.via_f32(|a| a.matmul(&r));
        }
        if self.rank() == 0 || rhs.rank() == 0 {
            return Err(Error::ShapeMismatch { op: "matmul", lhs: self.shape().to_vec(), rhs: rhs.shape().to_vec(), msg: "0-d operands have no matrix axes".into() });
        }
        let (a1, b1) = (self.rank() == 1, rhs.rank() == 1);
        if a1 || b1 {
            let a = if a1 { self.unsqueeze(0)? } else { self.clone() };
            let b = if b1 { rhs.unsqueeze(-1)? } else { rhs.clone() };
            let mut r = a.matmul(&b)?;
            if b1 {
                r = r.squeeze(-1)?;
            }
            if a1 {
                r = r.squeeze(if b1 { -1 } else { -2 })?;
            }
            return Ok(r);
        }
        let (ar, br) = (self.rank(), rhs.rank());
        let (m, k) = (self.shape()[ar - 2], self.shape()[ar - 1]);
        let (k2, n) = (rhs.shape()[br - 2], rhs.shape()[br - 1]);
        if k != k2 {
            return Err(Error::ShapeMismatch { op: "matmul", lhs: self.shape().to_vec(), rhs: rhs.shape().to_vec(), msg: format!("inner dims {k} and {k2} differ") });
        }
        let batch = broadcast_shapes("matmul", &self.shape()[..ar - 2], &rhs.shape()[..br - 2])?;
        let full = |mut b: Vec<usize>, x: usize, y: usize| {
            b.push(x);
            b.push(y);
            b
        };
        let la = self.layout().broadcast_to(&full(batch.clone(), m, k));
        let lb = rhs.layout().broadcast_to(&full(batch.clone(), k, n));
        let out_shape = full(batch.clone(), m, n);
        let nb = batch.len();
        let storage = match self.device() {
            Device::Cpu => {
                let base = |l: &Layout| Layout { shape: batch.clone(), strides: l.strides[..nb].to_vec(), offset: l.offset }.offsets();
                let out = cpu::matmul(
                    cpu_of(self),
                    cpu_of(rhs),
                    &base(&la),
                    &base(&lb),
                    (la.strides[nb], la.strides[nb + 1]),
                    (lb.strides[nb], lb.strides[nb + 1]),
                    m,
                    k,
                    n,
                );
                Storage::Cpu(Arc::new(out))
            }
            Device::Gpu(ctx) => {
                let (a, b) = (self.with_layout(la.clone()), rhs.with_layout(lb.clone()));
                Storage::Gpu(Arc::new(ctx.matmul(a.view(), b.view(), &batch, m, k, n)?))
            }
        };
        let out = Tensor::new_contiguous(storage, &out_shape, self.dtype(), self.device().clone());
        Ok(record(out, Op::Matmul, &[self, rhs], &[true, true], false))
    }
}
