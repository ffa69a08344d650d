//! Matrix calculus ops of the notes. Primitives (with VJPs in autograd): `solve`, the
//! log|det| of `slogdet`, `cholesky`; everything else is composed of differentiable ops:
//! inverse = solve(A, I), det = sign * exp(log|det|), logdet = log|det| + log(sign),
//! cholesky_solve = two solves, trace / diag / inner / norms from mul and sum.
//! Batched over leading dims. The checked forms read the factorization's info back
//! (one small readback) to return typed errors; the `_ex` forms never sync.
use super::cpu_of;
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::storage::{CpuStorage, Storage};
use crate::tensor::{check_float, check_same};
use crate::{cpu, cpu_linalg, DType, Device, Error, Layout, Node, Result, Tensor};
use std::sync::{Arc, Mutex};
use wgrad_kernels::Context;

/// A second, non-differentiable output of a factorization (info codes, signs), handed
/// back to the method that bound the primitive.
#[derive(Default)]
struct SideOutput(Mutex<Option<Tensor>>);

impl SideOutput {
    fn set(&self, t: Tensor) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }
    fn take(&self) -> Result<Tensor> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take().ok_or_else(|| Error::Internal {
            op: "linalg",
            msg: "a factorization's second output was not produced".into(),
        })
    }
}

/// X = A^-1 B (A [.., n, n], B [.., n, k], same batch dims), by LU with partial pivoting.
#[derive(Default)]
pub struct Solve {
    info: SideOutput,
}

impl Primitive for Solve {
    fn name(&self) -> String {
        "solve".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let (a, b) = (x[0], x[1]);
        let (n, batch) = square("solve", a)?;
        check_same("solve", &[a, b])?;
        let rank = a.rank();
        if b.rank() != rank || b.shape()[..rank - 2] != batch[..] || b.shape()[rank - 2] != n {
            return Err(Error::ShapeMismatch {
                op: "solve",
                lhs: a.shape().to_vec(),
                rhs: b.shape().to_vec(),
                msg: format!("B must be [.., {n}, k] with A's batch dims"),
            });
        }
        Ok(OutSpec::new(b.shape(), a.dtype()))
    }
    fn saves_input(&self, i: usize) -> bool {
        i == 0
    }
    fn saves_output(&self) -> bool {
        true
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (n, batch) = square("solve", x[0])?;
        let k = out.shape[out.shape.len() - 1];
        let nb: usize = batch.iter().product();
        let a = cpu_matrices(x[0]);
        let mut v = cpu_matrices(x[1]);
        let mut info = vec![0.0; nb];
        for i in 0..nb {
            let mut m = a[i * n * n..(i + 1) * n * n].to_vec();
            let (piv, inf, _) = cpu_linalg::lu_factor(&mut m, n);
            cpu_linalg::lu_solve(&m, &piv, &mut v[i * n * k..(i + 1) * n * k], n, k);
            info[i] = inf as f64;
        }
        self.info.set(info_tensor(info, &batch, &Device::Cpu));
        Ok(out.cpu(CpuStorage::from_f64(v, out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (_, batch) = square("solve", x[0])?;
        let f = ctx.lu(x[0].view(), x[0].shape())?;
        let sol = ctx.lu_solve(&f, x[1].view(), x[1].shape())?;
        let dev = x[0].device().clone();
        self.info.set(Tensor::new_contiguous(Storage::Gpu(Arc::new(f.info)), &batch, DType::U32, dev.clone()));
        Ok(out.gpu(sol, &dev))
    }
    /// X = A^-1 B: dX = A^-1 (dB - dA X), so B-bar = A^-T G and A-bar = -B-bar X^T
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let a = &node.input(0)?;
        let x = Node::output(node)?;
        let gb = a.t()?.solve_ex(g)?.0;
        let ga = node.needs_grad(0).then(|| gb.matmul(&x.t()?)?.neg()).transpose()?;
        Ok(vec![ga, Some(gb)])
    }
    /// jvp: dX = solve(A, tB - tA X)
    fn jvp(&self, p: &[Tensor], x: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let ta_x = t[0].as_ref().map(|ta| ta.matmul(x)?.neg()).transpose()?;
        let Some(rhs) = super::binary::add_opt(t[1].clone(), ta_x)? else { return Ok(None) };
        Ok(Some(p[0].solve_ex(&rhs)?.0))
    }
    /// batch: solve takes leading batch dims (a shared operand is broadcast)
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        let (a, rhs) = (b.expand(&x[0], batched[0])?.contiguous()?, b.expand(&x[1], batched[1])?.contiguous()?);
        let (sol, info) = a.solve_ex(&rhs)?;
        self.info.set(b.wrap(info));
        Ok(sol)
    }
}

/// log |det A| (the second output of slogdet; the sign is a side output).
#[derive(Default)]
pub struct LogAbsDet {
    sign: SideOutput,
}

impl Primitive for LogAbsDet {
    fn name(&self) -> String {
        "slogdet".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let (_, batch) = square("slogdet", x[0])?;
        Ok(OutSpec::new(&batch, x[0].dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        true
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (n, batch) = square("slogdet", x[0])?;
        let nb: usize = batch.iter().product();
        let a = cpu_matrices(x[0]);
        let (mut sign, mut la) = (vec![0.0; nb], vec![0.0; nb]);
        for i in 0..nb {
            let mut m = a[i * n * n..(i + 1) * n * n].to_vec();
            let (_, _, s) = cpu_linalg::lu_factor(&mut m, n);
            sign[i] = s;
            la[i] = (0..n).map(|j| m[j * n + j].abs().ln()).sum();
        }
        self.sign.set(out.cpu(CpuStorage::from_f64(sign, out.dtype)));
        Ok(out.cpu(CpuStorage::from_f64(la, out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (n, batch) = square("slogdet", x[0])?;
        let nb: usize = batch.iter().product();
        let dev = x[0].device().clone();
        let f = ctx.lu(x[0].view(), x[0].shape())?;
        let lu = Tensor::new_contiguous(Storage::Gpu(Arc::new(f.lu)), &[nb, n, n], out.dtype, dev.clone());
        // the diagonal of U as a strided view: stride n + 1 inside each matrix
        let diag = lu.with_layout(Layout { shape: vec![nb, n], strides: vec![n * n, n + 1], offset: 0 });
        self.sign.set(out.gpu(f.sign, &dev));
        diag.abs()?.log()?.sum(&[1], false)?.reshape(&batch)
    }
    /// d log|det A| = <A^-T, dA>, so A-bar = g A^-T
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let inv_t = node.input(0)?.inverse_ex()?.0.t()?;
        Ok(vec![Some(g.unsqueeze(-1)?.unsqueeze(-1)?.mul(&inv_t)?)])
    }
    /// jvp = tr(A^-1 tA)
    fn jvp(&self, p: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| p[0].solve_ex(t)?.0.trace()).transpose()
    }
    /// batch: slogdet takes leading batch dims
    fn batch(&self, x: &[Tensor], _batched: &[bool], b: &Batch) -> Result<Tensor> {
        let (sign, logabs) = x[0].slogdet()?;
        self.sign.set(b.wrap(sign));
        Ok(logabs)
    }
}

/// The lower Cholesky factor L of A = L L^T.
#[derive(Default)]
pub struct Cholesky {
    info: SideOutput,
}

/// Phi(X): the lower triangle of X with half its diagonal.
fn phi(x: &Tensor) -> Result<Tensor> {
    let n = x.shape()[x.rank() - 1];
    let m: Vec<f64> = (0..n * n)
        .map(|i| {
            if i % n < i / n {
                1.0
            } else if i % n == i / n {
                0.5
            } else {
                0.0
            }
        })
        .collect();
    x.mul(&Tensor::from_f64_vec(m, &[n, n], x.dtype(), x.device())?)
}

impl Primitive for Cholesky {
    fn name(&self) -> String {
        "cholesky".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        square("cholesky", x[0])?;
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    fn saves_output(&self) -> bool {
        true
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (n, batch) = square("cholesky", x[0])?;
        let nb: usize = batch.iter().product();
        let mut a = cpu_matrices(x[0]);
        let mut info = vec![0.0; nb];
        for i in 0..nb {
            info[i] = cpu_linalg::cholesky(&mut a[i * n * n..(i + 1) * n * n], n) as f64;
        }
        self.info.set(info_tensor(info, &batch, &Device::Cpu));
        Ok(out.cpu(CpuStorage::from_f64(a, out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (_, batch) = square("cholesky", x[0])?;
        let dev = x[0].device().clone();
        let (l, info) = ctx.cholesky(x[0].view(), x[0].shape())?;
        self.info.set(Tensor::new_contiguous(Storage::Gpu(Arc::new(info)), &batch, DType::U32, dev.clone()));
        Ok(out.gpu(l, &dev))
    }
    /// A = L L^T: A-bar = sym(L^-T Phi(L^T L-bar) L^-1)
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let l = Node::output(node)?;
        let p = phi(&l.t()?.matmul(g)?)?;
        let lt = l.t()?;
        let y = lt.solve_ex(&p)?.0; // L^-T P
        let s = lt.solve_ex(&y.t()?)?.0.t()?; // L^-T P L^-1
        Ok(vec![Some(s.add(&s.t()?)?.mul_scalar(0.5)?)])
    }
    /// jvp: dL = L Phi(L^-1 tA L^-T)
    fn jvp(&self, _p: &[Tensor], l: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let Some(ta) = &t[0] else { return Ok(None) };
        // the factorization reads A as symmetric, as the VJP's sym() says
        let ta = ta.add(&ta.t()?)?.mul_scalar(0.5)?;
        let y = l.solve_ex(&ta)?.0; // L^-1 tA
        let z = l.solve_ex(&y.t()?)?.0.t()?; // L^-1 tA L^-T (tA symmetric)
        Ok(Some(l.matmul(&phi(&z)?)?))
    }
    /// batch: cholesky takes leading batch dims
    fn batch(&self, x: &[Tensor], _batched: &[bool], b: &Batch) -> Result<Tensor> {
        let (l, info) = x[0].cholesky_ex()?;
        self.info.set(b.wrap(info));
        Ok(l)
    }
}

fn square(op: &'static str, a: &Tensor) -> Result<(usize, Vec<usize>)> {
    check_float(op, a)?;
    if a.dtype() == DType::F16 {
        return Err(Error::UnsupportedDType {
            op,
            dtype: DType::F16,
            device: a.device().name(),
            why: " (factorizations need f32 or f64; convert with to_dtype)".into(),
        });
    }
    let r = a.rank();
    if r < 2 || a.shape()[r - 1] != a.shape()[r - 2] {
        return Err(Error::Invalid {
            op,
            msg: format!("expected square matrices [.., n, n], got shape {:?}", a.shape()),
        });
    }
    Ok((a.shape()[r - 1], a.shape()[..r - 2].to_vec()))
}

/// Per-matrix f64 copies of a CPU tensor [batch.., n, m].
fn cpu_matrices(t: &Tensor) -> Vec<f64> {
    cpu::read(&cpu_of(t), t.layout())
}

fn info_tensor(info: Vec<f64>, batch: &[usize], dev: &Device) -> Tensor {
    let s = CpuStorage::from_f64(info, DType::U32);
    Tensor::new_contiguous(Storage::cpu_owned(s), batch, DType::U32, dev.clone())
}

/// Err for the first failed matrix in `info` (u32 [batch]; 0 means fine).
/// Under vmap the check reads every example's info (the physical tensor): the error is a
/// property of the whole call, not host control flow inside f. The index counts matrices
/// across the examples too.
fn check_info(info: &Tensor, f: impl Fn(usize, usize) -> Error) -> Result<()> {
    for (b, &v) in info.physical_all().to_vec::<u32>()?.iter().enumerate() {
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
        let prim = Arc::new(Solve::default());
        let x = bind(prim.clone(), &[self, b])?;
        Ok((x, prim.info.take()?))
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
        square("slogdet", self)?;
        let prim = Arc::new(LogAbsDet::default());
        let logabs = bind(prim.clone(), &[self])?;
        Ok((prim.sign.take()?, logabs))
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
        for (b, &p) in positive.physical_all().to_vec::<u32>()?.iter().enumerate() {
            if p == 0 {
                return Err(Error::NotPositiveDefinite {
                    op: "logdet",
                    batch: b,
                    minor: self.shape()[self.rank() - 1],
                });
            }
        }
        Ok(la)
    }

    /// Unchecked lower Cholesky factor: (L, info), info[b] = k + 1 at the first
    /// non-positive pivot of matrix b (L then holds NaN).
    pub fn cholesky_ex(&self) -> Result<(Tensor, Tensor)> {
        let prim = Arc::new(Cholesky::default());
        let l = bind(prim.clone(), &[self])?;
        Ok((l, prim.info.take()?))
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
