//! Batched matrix product with numpy batch broadcasting; transposed views need no copy.
use super::cpu_of;
use crate::fusion::{Fusible, FusionHost, GpuOperands, HostKind};
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::shape::broadcast_shapes;
use crate::tensor::{check_float, check_same};
use crate::{cpu, Error, Layout, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::Context;

/// [.., m, k] @ [.., k, n] -> [.., m, n] with broadcast batch dims (both operands rank >= 2).
pub struct Matmul;

/// The product as a fusion host: deferred, its store runs the elementwise ops that read
/// its result (an epilogue: bias, activation, residual, masks).
struct MatmulHost;

impl FusionHost for MatmulHost {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn kind(&self) -> HostKind {
        HostKind::Epilogue
    }
    fn operands(&self, inputs: &[&Tensor]) -> Result<GpuOperands> {
        gpu_operands(inputs)
    }
    fn launch_product(
        &self,
        ctx: &Arc<Context>,
        op: &GpuOperands,
        epilogue: Option<&wgrad_kernels::Epilogue>,
    ) -> Result<Option<Vec<wgrad_kernels::GpuBuffer>>> {
        let (a, b) = (op.a.view(), op.b.view());
        Ok(match epilogue {
            None => Some(vec![ctx.matmul(a, b, &op.batch, op.m, op.k, op.n)?]),
            Some(epi) => ctx.matmul_fused(a, b, &op.batch, op.m, op.k, op.n, epi)?,
        })
    }
}

/// (batch, m, k, n) of a product, or an error naming both shapes.
fn dims(a: &Tensor, b: &Tensor) -> Result<(Vec<usize>, usize, usize, usize)> {
    let (ar, br) = (a.rank(), b.rank());
    let (m, k) = (a.shape()[ar - 2], a.shape()[ar - 1]);
    let (k2, n) = (b.shape()[br - 2], b.shape()[br - 1]);
    if k != k2 {
        return Err(Error::ShapeMismatch {
            op: "matmul",
            lhs: a.shape().to_vec(),
            rhs: b.shape().to_vec(),
            msg: format!("inner dims {k} and {k2} differ"),
        });
    }
    Ok((broadcast_shapes("matmul", &a.shape()[..ar - 2], &b.shape()[..br - 2])?, m, k, n))
}

fn with2(mut b: Vec<usize>, x: usize, y: usize) -> Vec<usize> {
    b.push(x);
    b.push(y);
    b
}

/// When B is the same matrix for every batch entry (stride 0 on every batch axis) and A's
/// batch and row axes step as one: (A as [rows, k], B as [k, n], rows), one GEMM for the
/// whole batch.
fn fold_rows(la: &Layout, lb: &Layout, nb: usize, m: usize) -> Option<(Layout, Layout, usize)> {
    if nb == 0 || lb.strides[..nb].iter().any(|&s| s != 0) {
        return None;
    }
    let row_stride = la.strides[nb];
    let mut rows = m;
    for d in (0..nb).rev() {
        if la.shape[d] != 1 && la.strides[d] != rows * row_stride {
            return None;
        }
        rows *= la.shape[d];
    }
    let a = Layout {
        shape: vec![rows, la.shape[nb + 1]],
        strides: vec![row_stride, la.strides[nb + 1]],
        offset: la.offset,
    };
    let b = Layout { shape: lb.shape[nb..].to_vec(), strides: lb.strides[nb..].to_vec(), offset: lb.offset };
    Some((a, b, rows))
}

/// The GPU kernels' operands of a product; a right operand shared by the whole batch
/// (stride 0, as vmap's per-example tapes make) folds the batch into the rows: one GEMM.
pub(crate) fn gpu_operands(x: &[&Tensor]) -> Result<GpuOperands> {
    let (batch, m, k, n) = dims(x[0], x[1])?;
    let la = x[0].layout().broadcast_to(&with2(batch.clone(), m, k));
    let lb = x[1].layout().broadcast_to(&with2(batch.clone(), k, n));
    if let Some((la, lb, rows)) = fold_rows(&la, &lb, batch.len(), m) {
        return Ok(GpuOperands { a: x[0].with_layout(la), b: x[1].with_layout(lb), batch: Vec::new(), m: rows, k, n });
    }
    Ok(GpuOperands { a: x[0].with_layout(la), b: x[1].with_layout(lb), batch, m, k, n })
}

/// For a matrix `b` shared by a batch of `a`s (a linear layer on [batch, seq, features]):
/// `a` [.., k] and the cotangent `g` [.., n] as matrices [rows, k] and [rows, n], so that
/// B-bar = sum_i A_i^T G_i is one GEMM A'^T G' (no batched products and no reduction over
/// the batch afterwards). None when `b` has batch dims itself or `a` has none.
fn fold_batch_into_rows(a: &Tensor, b: &Tensor, g: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
    if b.rank() != 2 || a.rank() <= 2 || b.numel() == 0 {
        return Ok(None);
    }
    let (k, n) = (b.shape()[0], b.shape()[1]);
    if g.shape()[..g.rank() - 2] != a.shape()[..a.rank() - 2] {
        return Ok(None); // the batch broadcast on g's side: leave it to the engine
    }
    Ok(Some((a.reshape(&[a.numel() / k, k])?, g.reshape(&[g.numel() / n, n])?)))
}

/// A matrix stored column-major (its transpose is contiguous, itself is not).
fn is_transposed(x: &Tensor) -> Result<bool> {
    Ok(!x.layout().is_contiguous() && x.t()?.layout().is_contiguous())
}

impl Primitive for Matmul {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn name(&self) -> String {
        "matmul".into()
    }
    fn is_matmul(&self) -> bool {
        true
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_same("matmul", &[x[0], x[1]])?;
        check_float("matmul", x[0])?;
        let (batch, m, _, n) = dims(x[0], x[1])?;
        Ok(OutSpec::new(&with2(batch, m, n), x[0].dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        true
    }
    /// A blocked GEMM per batch entry; k = 1 (outer products) is an elementwise product,
    /// and a right operand shared by the whole batch folds the batch into the rows.
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (batch, m, k, n) = dims(x[0], x[1])?;
        let la = x[0].layout().broadcast_to(&with2(batch.clone(), m, k));
        let lb = x[1].layout().broadcast_to(&with2(batch.clone(), k, n));
        if k == 1 {
            let (a, b) =
                (x[0].with_layout(la).broadcast_view(&out.shape), x[1].with_layout(lb).broadcast_view(&out.shape));
            return Ok(out.cpu(cpu::zip((&cpu_of(&a), a.layout()), (&cpu_of(&b), b.layout()), out.dtype, |p, q| p * q)));
        }
        let (la, lb, batch, rows) = match fold_rows(&la, &lb, batch.len(), m) {
            Some((la, lb, rows)) => (la, lb, Vec::new(), rows),
            None => (la, lb, batch, m),
        };
        let nb = batch.len();
        let base =
            |l: &Layout| Layout { shape: batch.clone(), strides: l.strides[..nb].to_vec(), offset: l.offset }.offsets();
        let c = cpu::matmul(
            &cpu_of(x[0]),
            &cpu_of(x[1]),
            &base(&la),
            &base(&lb),
            (la.strides[nb], la.strides[nb + 1]),
            (lb.strides[nb], lb.strides[nb + 1]),
            rows,
            k,
            n,
        );
        Ok(out.cpu(c))
    }
    /// The tiled or register-blocked kernels; a right operand shared by the whole batch
    /// (stride 0, as vmap's per-example tapes make) folds the batch into the rows: one GEMM.
    /// (Outer products, k = 1, stay matmuls here: lavapipe's strided elementwise kernel
    /// measured slower for them, 128 against 81 ms in W7 at b = 32.)
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let op = gpu_operands(x)?;
        Ok(out.gpu(ctx.matmul(op.a.view(), op.b.view(), &op.batch, op.m, op.k, op.n)?, x[0].device()))
    }
    /// Deferred on the GPU, so that the elementwise ops reading its result run in its store
    /// (epilogue fusion, see `fusion/`).
    fn fusible(&self) -> Option<Fusible> {
        Some(Fusible::Host(Arc::new(MatmulHost)))
    }
    /// d(A B) = dA B + A dB, so A-bar = G B^T and B-bar = A^T G (batch dims unbroadcast by
    /// the engine). Each cotangent takes its primal's memory layout: for a transposed
    /// matrix (the `w.t()` of a linear layer) A-bar = (B G^T)^T is computed contiguous and
    /// returned transposed, so the weight gets a contiguous gradient (no copy before the
    /// optimizer). Same products, same cost.
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (&node.input(0)?, &node.input(1)?);
        let matrices = a.rank() == 2 && b.rank() == 2;
        let ga = node
            .needs_grad(0)
            .then(|| if matrices && is_transposed(a)? { b.matmul(&g.t()?)?.t() } else { g.matmul(&b.t()?) })
            .transpose()?;
        let gb = node
            .needs_grad(1)
            .then(|| {
                if let Some((a2, g2)) = fold_batch_into_rows(a, b, g)? {
                    return if is_transposed(b)? { g2.t()?.matmul(&a2)?.t() } else { a2.t()?.matmul(&g2) };
                }
                if matrices && is_transposed(b)? {
                    g.t()?.matmul(a)?.t()
                } else {
                    a.t()?.matmul(g)
                }
            })
            .transpose()?;
        Ok(vec![ga, gb])
    }
    /// jvp(A B) = tA B + A tB
    fn jvp(&self, x: &[Tensor], y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let ja = t[0].as_ref().map(|t| t.matmul(&x[1])).transpose()?;
        let jb = t[1].as_ref().map(|t| x[0].matmul(t)).transpose()?;
        let out = super::binary::add_opt(ja, jb)?;
        out.map(|o| o.broadcast_to(y.shape())).transpose()
    }
    /// batch: matmul takes leading batch dims, so the batch axis lines up in front of
    /// them; a batched left operand times a shared matrix folds the batch into the rows,
    /// a shared matrix times batched matrices into the columns (one bigger GEMM either
    /// way, as JAX's dot_general)
    fn batch(&self, x: &[Tensor], batched: &[bool], _b: &Batch) -> Result<Tensor> {
        let (a, b) = (&x[0], &x[1]);
        if batched[0] && !batched[1] && b.rank() == 2 {
            let k = a.shape()[a.rank() - 1];
            let rows: usize = a.shape()[..a.rank() - 1].iter().product();
            let mut out = a.shape()[..a.rank() - 1].to_vec();
            out.push(b.shape()[1]);
            return a.reshape(&[rows, k])?.matmul(b)?.reshape(&out);
        }
        if !batched[0] && batched[1] && a.rank() == 2 && b.rank() == 3 {
            // a shared matrix times batched matrices: the batch joins the columns
            let (size, k, n) = (b.shape()[0], b.shape()[1], b.shape()[2]);
            let columns = b.permute(&[1, 0, 2])?.reshape(&[k, size * n])?;
            let m = a.shape()[0];
            return a.matmul(&columns)?.reshape(&[m, size, n])?.permute(&[1, 0, 2]);
        }
        let rank = x.iter().zip(batched).map(|(t, &bt)| t.rank() - bt as usize).max().unwrap_or(0);
        let a = super::binary::align_batched(a, batched[0], rank)?;
        let b = super::binary::align_batched(b, batched[1], rank)?;
        a.matmul(&b)
    }
}

impl Tensor {
    /// numpy `matmul`: [.., m, k] @ [.., k, n] -> [.., m, n] with broadcast batch dims;
    /// a 1-d operand is a row (left) or column (right) vector and its axis is dropped.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        check_same("matmul", &[self, rhs])?;
        check_float("matmul", self)?;
        if self.rank() == 0 || rhs.rank() == 0 {
            return Err(Error::ShapeMismatch {
                op: "matmul",
                lhs: self.shape().to_vec(),
                rhs: rhs.shape().to_vec(),
                msg: "0-d operands have no matrix axes".into(),
            });
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
        bind(Arc::new(Matmul), &[self, rhs])
    }
}
