//! Matrix calculus ops of the notes. Primitives (with VJPs in autograd): `solve`, the
//! log|det| of `slogdet`, `cholesky`; everything else is composed of differentiable ops:
//! inverse = solve(A, I), det = sign * exp(log|det|), logdet = log|det| + log(sign),
//! cholesky_solve = two solves, trace / diag / inner / norms from mul and sum.
//! Batched over leading dims. The checked forms read the factorization's info back
//! (one small readback) to return typed errors; the `_ex` forms never sync.
use super::cpu_of;
use crate::graph::{record, Op};
use crate::storage::{CpuStorage, Storage};
use crate::tensor::{check_float, check_same};
use crate::{cpu, cpu_linalg, DType, Device, Error, Layout, Result, Tensor};
use std::sync::Arc;

fn square(op: &'static str, a: &Tensor) -> Result<(usize, Vec<usize>)> {
    check_float(op, a)?;
    if a.dtype() == DType::F16 {
        return Err(Error::UnsupportedDType { op, dtype: DType::F16, device: a.device().name(), why: " (factorizations need f32 or f64; convert with to_dtype)".into() });
    }
    let r = a.rank();
    if r < 2 || a.shape()[r - 1] != a.shape()[r - 2] {
        return Err(Error::Invalid { op, msg: format!("expected square matrices [.., n, n], got shape {:?}", a.shape()) });
    }
    Ok((a.shape()[r - 1], a.shape()[..r - 2].to_vec()))
}

/// Per-matrix f64 copies of a CPU tensor [batch.., n, m].
fn cpu_matrices(t: &Tensor) -> Vec<f64> {
    cpu::read(cpu_of(t), t.layout())
}

fn info_tensor(info: Vec<f64>, batch: &[usize], dev: &Device) -> Tensor {
    let s = CpuStorage::from_f64(info, DType::U32);
    Tensor::new_contiguous(Storage::Cpu(Arc::new(s)), batch, DType::U32, dev.clone())
}

/// Err for the first failed matrix in `info` (u32 [batch]; 0 means fine).
fn check_info(info: &Tensor, f: impl Fn(usize, usize) -> Error) -> Result<()> {
    for (b, &v) in info.to_vec::<u32>()?.iter().enumerate() {
        if v != 0 {
            return Err(f(b, v as usize));
        }
    }
    Ok(())
}

impl Tensor {
    /// The n x n identity.
    pub fn eye(n: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let v: Vec<f64> = (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect();
        Tensor::from_f64_vec(v, &[n, n], dtype, device)
    }

    /// Unchecked solve: (X, info) with X = A^-1 B for A [.., n, n], B [.., n, k] (same
    /// batch dims); info[b] = 0, or k + 1 where matrix b has a zero pivot (X is then inf/NaN).
    pub fn solve_ex(&self, b: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, batch) = square("solve", self)?;
        check_same("solve", &[self, b])?;
        let rank = self.rank();
        if b.rank() != rank || b.shape()[..rank - 2] != batch[..] || b.shape()[rank - 2] != n {
            return Err(Error::ShapeMismatch { op: "solve", lhs: self.shape().to_vec(), rhs: b.shape().to_vec(), msg: format!("B must be [.., {n}, k] with A's batch dims") });
        }
        let k = b.shape()[rank - 1];
        let nb: usize = batch.iter().product();
        let (out, info) = match self.device() {
            Device::Cpu => {
                let a = cpu_matrices(self);
                let mut x = cpu_matrices(b);
                let mut info = vec![0.0; nb];
                for i in 0..nb {
                    let mut m = a[i * n * n..(i + 1) * n * n].to_vec();
                    let (piv, inf, _) = cpu_linalg::lu_factor(&mut m, n);
                    cpu_linalg::lu_solve(&m, &piv, &mut x[i * n * k..(i + 1) * n * k], n, k);
                    info[i] = inf as f64;
                }
                let xs = Storage::Cpu(Arc::new(CpuStorage::from_f64(x, self.dtype())));
                (Tensor::new_contiguous(xs, b.shape(), self.dtype(), Device::Cpu), info_tensor(info, &batch, &Device::Cpu))
            }
            Device::Gpu(ctx) => {
                let f = ctx.lu(self.view(), self.shape())?;
                let x = ctx.lu_solve(&f, b.view(), b.shape())?;
                let dev = self.device().clone();
                let x = Tensor::new_contiguous(Storage::Gpu(Arc::new(x)), b.shape(), self.dtype(), dev.clone());
                let info = Tensor::new_contiguous(Storage::Gpu(Arc::new(f.info)), &batch, DType::U32, dev);
                (x, info)
            }
        };
        Ok((record(out, Op::Solve, &[self, b], &[true, false], true), info))
    }

    /// X with A X = B (`self` is A [.., n, n]; B is [.., n, k] or [.., n]). A singular
    /// matrix is an error naming its batch index.
    pub fn solve(&self, b: &Tensor) -> Result<Tensor> {
        let vector = b.rank() + 1 == self.rank();
        let bm = if vector { b.unsqueeze(-1)? } else { b.clone() };
        let (x, info) = self.solve_ex(&bm)?;
        check_info(&info, |batch, column| Error::Singular { op: "solve", batch, column })?;
        if vector {
            return x.squeeze(-1);
        }
        Ok(x)
    }

    /// A^-1 (checked: a singular matrix is an error naming its batch index).
    pub fn inverse(&self) -> Result<Tensor> {
        let (x, info) = self.inverse_ex()?;
        check_info(&info, |batch, column| Error::Singular { op: "inverse", batch, column })?;
        Ok(x)
    }

    /// Unchecked inverse: (A^-1, info) as in [`Tensor::solve_ex`].
    pub fn inverse_ex(&self) -> Result<(Tensor, Tensor)> {
        let (n, batch) = square("inverse", self)?;
        let mut shape = batch.clone();
        shape.extend([n, n]);
        let eye = Tensor::eye(n, self.dtype(), self.device())?.broadcast_to(&shape)?;
        self.solve_ex(&eye)
    }

    /// (sign, log|det|) of each matrix; sign is 0 for a singular matrix (log|det| = -inf).
    pub fn slogdet(&self) -> Result<(Tensor, Tensor)> {
        let (n, batch) = square("slogdet", self)?;
        let nb: usize = batch.iter().product();
        let dev = self.device().clone();
        let (sign, logabs) = match &dev {
            Device::Cpu => {
                let a = cpu_matrices(self);
                let (mut sign, mut la) = (vec![0.0; nb], vec![0.0; nb]);
                for i in 0..nb {
                    let mut m = a[i * n * n..(i + 1) * n * n].to_vec();
                    let (_, _, s) = cpu_linalg::lu_factor(&mut m, n);
                    sign[i] = s;
                    la[i] = (0..n).map(|j| m[j * n + j].abs().ln()).sum();
                }
                let mk = |v| Tensor::new_contiguous(Storage::Cpu(Arc::new(CpuStorage::from_f64(v, self.dtype()))), &batch, self.dtype(), Device::Cpu);
                (mk(sign), mk(la))
            }
            Device::Gpu(ctx) => {
                let f = ctx.lu(self.view(), self.shape())?;
                let lu = Tensor::new_contiguous(Storage::Gpu(Arc::new(f.lu)), &[nb, n, n], self.dtype(), dev.clone());
                // the diagonal of U as a strided view: stride n + 1 inside each matrix
                let diag = lu.with_layout(Layout { shape: vec![nb, n], strides: vec![n * n, n + 1], offset: 0 });
                let la = crate::graph::no_grad(|| diag.abs()?.log()?.sum(&[1], false)?.reshape(&batch))?;
                let sign = Tensor::new_contiguous(Storage::Gpu(Arc::new(f.sign)), &batch, self.dtype(), dev.clone());
                (sign, la)
            }
        };
        Ok((sign, record(logabs, Op::LogAbsDet, &[self], &[true], false)))
    }

    /// det A = sign * exp(log|det A|).
    pub fn det(&self) -> Result<Tensor> {
        let (sign, la) = self.slogdet()?;
        sign.mul(&la.exp()?)
    }

    /// log det A; NaN where det < 0 and -inf where it is 0 (as PyTorch).
    pub fn logdet(&self) -> Result<Tensor> {
        let (sign, la) = self.slogdet()?;
        la.add(&sign.log()?)
    }

    /// log det A for matrices that must have det > 0: otherwise an error naming the batch index.
    pub fn logdet_checked(&self) -> Result<Tensor> {
        let (sign, la) = self.slogdet()?;
        let positive = sign.gt(&sign.zeros_like()?)?.to_dtype(DType::U32)?;
        for (b, &p) in positive.to_vec::<u32>()?.iter().enumerate() {
            if p == 0 {
                return Err(Error::NotPositiveDefinite { op: "logdet", batch: b, minor: self.shape()[self.rank() - 1] });
            }
        }
        Ok(la)
    }

    /// Unchecked lower Cholesky factor: (L, info), info[b] = k + 1 at the first
    /// non-positive pivot of matrix b (L then holds NaN).
    pub fn cholesky_ex(&self) -> Result<(Tensor, Tensor)> {
        let (n, batch) = square("cholesky", self)?;
        let nb: usize = batch.iter().product();
        let dev = self.device().clone();
        let (l, info) = match &dev {
            Device::Cpu => {
                let mut a = cpu_matrices(self);
                let mut info = vec![0.0; nb];
                for i in 0..nb {
                    info[i] = cpu_linalg::cholesky(&mut a[i * n * n..(i + 1) * n * n], n) as f64;
                }
                let l = Tensor::new_contiguous(Storage::Cpu(Arc::new(CpuStorage::from_f64(a, self.dtype()))), self.shape(), self.dtype(), Device::Cpu);
                (l, info_tensor(info, &batch, &Device::Cpu))
            }
            Device::Gpu(ctx) => {
                let (l, info) = ctx.cholesky(self.view(), self.shape())?;
                let l = Tensor::new_contiguous(Storage::Gpu(Arc::new(l)), self.shape(), self.dtype(), dev.clone());
                (l, Tensor::new_contiguous(Storage::Gpu(Arc::new(info)), &batch, DType::U32, dev.clone()))
            }
        };
        Ok((record(l, Op::Cholesky, &[self], &[false], true), info))
    }

    /// Lower Cholesky factor L with A = L L^T; not positive definite is an error naming the batch index.
    pub fn cholesky(&self) -> Result<Tensor> {
        let (l, info) = self.cholesky_ex()?;
        check_info(&info, |batch, minor| Error::NotPositiveDefinite { op: "cholesky", batch, minor })?;
        Ok(l)
    }

    /// X with (L L^T) X = B, given the lower Cholesky factor `l` (`self` is B).
    pub fn cholesky_solve(&self, l: &Tensor) -> Result<Tensor> {
        let y = l.solve(self)?;
        l.t()?.solve(&y)
    }

    /// Diagonals [.., n] of square matrices [.., n, n].
    pub fn diag(&self) -> Result<Tensor> {
        let (n, _) = square("diag", self)?;
        self.mul(&Tensor::eye(n, self.dtype(), self.device())?)?.sum(&[-1], false)
    }

    /// Square matrices [.., n, n] with `self` [.., n] on the diagonal.
    pub fn diag_embed(&self) -> Result<Tensor> {
        if self.rank() == 0 {
            return Err(Error::Invalid { op: "diag_embed", msg: "needs at least one axis".into() });
        }
        let n = self.shape()[self.rank() - 1];
        self.unsqueeze(-2)?.mul(&Tensor::eye(n, self.dtype(), self.device())?)
    }

    /// tr A for matrices [.., n, n].
    pub fn trace(&self) -> Result<Tensor> {
        self.diag()?.sum(&[-1], false)
    }

    /// Frobenius inner product <A, B> = tr(A^T B) over the last two axes (all axes for vectors).
    pub fn inner(&self, b: &Tensor) -> Result<Tensor> {
        let p = self.mul(b)?;
        if p.rank() < 2 {
            return p.sum_all();
        }
        p.sum(&[-2, -1], false)
    }

    /// ||A||_F = sqrt(<A, A>).
    pub fn frobenius_norm(&self) -> Result<Tensor> {
        self.inner(self)?.sqrt()
    }

    /// Euclidean norm over the last axis.
    pub fn norm(&self) -> Result<Tensor> {
        self.square()?.sum(&[-1], false)?.sqrt()
    }

    /// a b^T of vectors [.., n] and [.., m].
    pub fn outer(&self, b: &Tensor) -> Result<Tensor> {
        self.unsqueeze(-1)?.mul(&b.unsqueeze(-2)?)
    }

    /// sum(a * b) over the last axis.
    pub fn dot(&self, b: &Tensor) -> Result<Tensor> {
        self.mul(b)?.sum(&[-1], false)
    }
}
