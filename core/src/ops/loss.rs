//! Fused softmax-family primitives: the (scaled) softmax VJP, the mean softmax
//! cross-entropy of logit rows against u32 labels and its gradient, and softplus. Each
//! is one kernel on the GPU where it has one, and each rule is written with ops and with
//! these primitives again, so derivatives of any order stay fused.
use super::index::check_indices;
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::storage::CpuStorage;
use crate::tensor::check_float;
use crate::{DType, Error, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::Context;

fn check_xent(op: &'static str, z: &Tensor, labels: &Tensor) -> Result<(usize, usize)> {
    check_float(op, z)?;
    if z.rank() != 2 || labels.rank() != 1 || labels.shape()[0] != z.shape()[0] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: z.shape().to_vec(),
            rhs: labels.shape().to_vec(),
            msg: "expected logits [batch, classes] and labels [batch]".into(),
        });
    }
    let (b, c) = (z.shape()[0], z.shape()[1]);
    if b == 0 || c == 0 {
        return Err(Error::Empty { op, msg: format!("logits of shape {:?}", z.shape()) });
    }
    check_indices(op, labels, c)?;
    Ok((b, c))
}

/// Errs unless `g` (a scale or cotangent) is one value on z's device.
fn check_one_value(op: &'static str, what: &str, z: &Tensor, g: &Tensor) -> Result<()> {
    if g.numel() != 1 || g.device() != z.device() {
        return Err(Error::Invalid {
            op,
            msg: format!(
                "{what} must be one value on {}, got {:?} on {}",
                z.device().name(),
                g.shape(),
                g.device().name()
            ),
        });
    }
    Ok(())
}

/// Rows of logits with their log-sum-exp (max subtracted first) and labels, in f64.
fn cpu_rows(z: &Tensor, labels: &Tensor, b: usize, c: usize) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let zv = z.cpu_values();
    let ys = labels.cpu_values().into_iter().map(|y| y as usize).collect();
    let lse = (0..b)
        .map(|r| {
            let row = &zv[r * c..(r + 1) * c];
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if m == f64::NEG_INFINITY {
                return m;
            }
            m + row.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
        })
        .collect();
    (zv, lse, ys)
}

// ------------------------------------------------------------------ softmax VJP

/// F(z, v[, g]) = k g J_s(z) v = k g s * (v - sum_last(s * v)), s = softmax(z) over the
/// last axis, J_s = diag(s) - s s^T (symmetric).
pub struct SoftmaxVjp {
    pub k: f64,
    pub scaled: bool,
}

impl Primitive for SoftmaxVjp {
    fn host_values(&self) -> Vec<f64> {
        vec![self.k]
    }
    fn name(&self) -> String {
        "softmax_vjp".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let (z, v) = (x[0], x[1]);
        check_float("softmax_vjp", z)?;
        if v.shape() != z.shape() || z.rank() == 0 {
            return Err(Error::ShapeMismatch {
                op: "softmax_vjp",
                lhs: z.shape().to_vec(),
                rhs: v.shape().to_vec(),
                msg: "the cotangent must have the logits' shape (rank >= 1)".into(),
            });
        }
        if let Some(g) = x.get(2) {
            check_one_value("softmax_vjp", "the scale", z, g)?;
        }
        Ok(OutSpec::new(z.shape(), z.dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        true
    }
    /// One pass per row: s = softmax(z_r), then c s (v - <s, v>).
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (z, v) = (x[0], x[1]);
        let n = *z.shape().last().expect("rank >= 1");
        let c = self.k * x.get(2).map_or(1.0, |g| g.cpu_values()[0]);
        let (mut s, vv) = (z.cpu_values(), v.cpu_values());
        crate::cpu::par_rows(&mut s, n, |r, srow| {
            let vrow = &vv[r * n..(r + 1) * n];
            super::reduce::softmax_row(srow);
            let dot: f64 = srow.iter().zip(vrow).map(|(a, b)| a * b).sum();
            srow.iter_mut().zip(vrow).for_each(|(p, vj)| *p = c * *p * (vj - dot));
        });
        Ok(out.cpu(CpuStorage::from_f64(s, out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (z, v) = (x[0], x[1]);
        if z.dtype() == DType::F32 && v.dtype() == DType::F32 {
            let n = *z.shape().last().expect("rank >= 1");
            let (zc, vc) = (z.contiguous()?, v.contiguous()?);
            let gc = x.get(2).map(|g| g.to_dtype(DType::F32)?.contiguous()).transpose()?;
            let rows = z.numel() / n.max(1);
            if let Some(buf) =
                ctx.softmax_vjp(zc.view(), vc.view(), gc.as_ref().map(|g| g.view()), self.k as f32, rows, n)?
            {
                return Ok(out.gpu(buf, z.device()));
            }
        }
        // past the row kernel's loop limit: the same math with other kernels
        let s = z.softmax(-1)?;
        let sv = s.mul(v)?;
        let mut out = sv.sub(&s.mul(&sv.sum(&[-1], true)?)?)?.mul_scalar(self.k)?;
        if let Some(g) = x.get(2) {
            out = out.mul(&g.reshape(&[])?)?;
        }
        Ok(out)
    }
    /// For the cotangent h, with a = sum_last(s v), b = sum_last(s h):
    /// v-bar = F(z, h, g); z-bar = F(z, u, g) with u = h v - a h - b v (d(J_s v) written
    /// through J_s again); g-bar = sum(h * F(z, v, 1)).
    fn vjp(&self, node: &Arc<Node>, h: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (z, v) = (&node.input(0)?, &node.input(1)?);
        let g = if self.scaled { Some(&node.input(2)?) } else { None };
        let s = z.softmax(-1)?;
        let a = s.mul(v)?.sum(&[-1], true)?;
        let b = s.mul(h)?.sum(&[-1], true)?;
        let u = h.mul(v)?.sub(&a.mul(h)?)?.sub(&b.mul(v)?)?;
        let mut out = vec![Some(z.softmax_vjp(&u, g, self.k)?), Some(z.softmax_vjp(h, g, self.k)?)];
        if let Some(g) = g {
            let gbar = node
                .needs_grad(2)
                .then(|| h.mul(&z.softmax_vjp(v, None, self.k)?)?.sum_all()?.reshape(g.shape()))
                .transpose()?;
            out.push(gbar);
        }
        Ok(out)
    }
    /// jvp = F(z, tv, g) + k g (ds (v - a) - s sum_last(ds v)) + F(z, v, 1) tg,
    /// with ds = J_s tz and a = sum_last(s v)
    fn jvp(&self, x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let (z, v) = (&x[0], &x[1]);
        let g = x.get(2).filter(|_| self.scaled);
        let mut out = t[1].as_ref().map(|tv| z.softmax_vjp(tv, g, self.k)).transpose()?;
        if let Some(tz) = &t[0] {
            let s = z.softmax(-1)?;
            let ds = z.softmax_vjp(tz, None, 1.0)?;
            let a = s.mul(v)?.sum(&[-1], true)?;
            let mut dz = ds.mul(&v.sub(&a)?)?.sub(&s.mul(&ds.mul(v)?.sum(&[-1], true)?)?)?.mul_scalar(self.k)?;
            if let Some(g) = g {
                dz = dz.mul(&g.reshape(&[])?)?;
            }
            out = super::binary::add_opt(out, Some(dz))?;
        }
        if let (Some(tg), true) = (t.get(2).and_then(|t| t.as_ref()), self.scaled) {
            let dg = z.softmax_vjp(v, None, self.k)?.mul(&tg.reshape(&[])?)?;
            out = super::binary::add_opt(out, Some(dg))?;
        }
        Ok(out)
    }
    /// batch: the kernel takes leading axes; a per-example scale multiplies afterwards
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        let (z, v) = (b.expand(&x[0], batched[0])?, b.expand(&x[1], batched[1])?);
        if self.scaled && batched[2] {
            let mut shape = vec![1; z.rank()];
            shape[0] = b.size;
            let unscaled = bind(Arc::new(SoftmaxVjp { k: self.k, scaled: false }), &[&z, &v])?;
            return unscaled.mul(&x[2].reshape(&shape)?);
        }
        let mut inputs = vec![&z, &v];
        inputs.extend(x.get(2));
        bind(Arc::new(SoftmaxVjp { k: self.k, scaled: self.scaled }), &inputs)
    }
}

impl Tensor {
    /// k * g * s * (v - sum_last(s * v)) with s = softmax(self) over the last axis: the
    /// softmax VJP for the cotangent v, scaled by k and (optionally) the one-element g.
    /// One kernel on the GPU; differentiable to any order.
    pub fn softmax_vjp(&self, v: &Tensor, g: Option<&Tensor>, k: f64) -> Result<Tensor> {
        let mut inputs = vec![self, v];
        inputs.extend(g);
        bind(Arc::new(SoftmaxVjp { k, scaled: g.is_some() }), &inputs)
    }
}

// ------------------------------------------------------------------ cross-entropy

/// mean_r (logsumexp(z_r) - z_r[y_r]) for logits z [B, C] and u32 labels y [B] (inputs;
/// labels carry no derivative).
pub struct SoftmaxCrossEntropy;

impl Primitive for SoftmaxCrossEntropy {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn name(&self) -> String {
        "cross_entropy".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_xent("softmax_cross_entropy", x[0], x[1])?;
        Ok(OutSpec::new(&[], x[0].dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        true
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (z, y) = (x[0], x[1]);
        let (b, c) = (z.shape()[0], z.shape()[1]);
        let (zv, lse, ys) = cpu_rows(z, y, b, c);
        let loss = (0..b).map(|r| lse[r] - zv[r * c + ys[r]]).sum::<f64>() / b as f64;
        Ok(out.cpu(CpuStorage::from_f64(vec![loss], out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (z, y) = (x[0].contiguous()?, x[1].contiguous()?);
        let (b, c) = (z.shape()[0], z.shape()[1]);
        if let Some(buf) = ctx.softmax_xent_mean(z.view(), y.view(), b, c)? {
            return Ok(out.gpu(buf, z.device()));
        }
        // too long for one workgroup's loops: the composite
        z.log_softmax(1)?.gather(1, &y.reshape(&[b, 1])?)?.mean_all()?.neg()
    }
    /// z-bar = g (softmax(z) - onehot(y)) / B: the fused gradient primitive
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(node.input(0)?.softmax_cross_entropy_grad(&node.input(1)?, g)?), None])
    }
    /// jvp = sum((softmax(z) - onehot(y)) * t) / B = <G(z, 1), t>
    fn jvp(&self, x: &[Tensor], y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let Some(t) = &t[0] else { return Ok(None) };
        let one = y.detach().ones_like()?;
        Ok(Some(x[0].softmax_cross_entropy_grad(&x[1], &one)?.mul(t)?.sum_all()?))
    }
    /// batch: each example's mean over its own rows, -mean(log_softmax(z)[y]), with ops
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        let (z, y) = (b.expand(&x[0], batched[0])?, b.expand(&x[1], batched[1])?);
        let (n, picked) = (z.shape()[1], z.log_softmax(-1)?.gather(2, &y.unsqueeze(-1)?.contiguous()?)?);
        picked.reshape(&[b.size, n])?.mean(&[1], false)?.neg()
    }
}

/// G(z, y, g) = g (softmax(z) - onehot(y)) / B, the cross-entropy gradient (inputs: logits,
/// u32 labels, the one-element cotangent).
pub struct SoftmaxCrossEntropyGrad;

impl Primitive for SoftmaxCrossEntropyGrad {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn name(&self) -> String {
        "cross_entropy_grad".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let (z, g) = (x[0], x[2]);
        check_xent("softmax_cross_entropy_grad", z, x[1])?;
        check_one_value("softmax_cross_entropy_grad", "the cotangent", z, g)?;
        Ok(OutSpec::new(z.shape(), z.dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        true
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (z, g) = (x[0], x[2]);
        let (b, c) = (z.shape()[0], z.shape()[1]);
        let (zv, lse, ys) = cpu_rows(z, x[1], b, c);
        let scale = g.cpu_values()[0] / b as f64;
        let mut v = vec![0.0; b * c];
        for r in 0..b {
            for j in 0..c {
                let hit = if j == ys[r] { 1.0 } else { 0.0 };
                v[r * c + j] = ((zv[r * c + j] - lse[r]).exp() - hit) * scale;
            }
        }
        Ok(out.cpu(CpuStorage::from_f64(v, out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (z, y) = (x[0].contiguous()?, x[1].contiguous()?);
        let gc = x[2].to_dtype(z.dtype())?.contiguous()?;
        let (b, c) = (z.shape()[0], z.shape()[1]);
        if let Some(buf) = ctx.softmax_xent_grad(z.view(), y.view(), gc.view(), b, c)? {
            return Ok(out.gpu(buf, z.device()));
        }
        let p = z.softmax(1)?.sub(&y.one_hot(c, z.dtype())?)?;
        p.mul(&gc.reshape(&[])?)?.mul_scalar(1.0 / b as f64)
    }
    /// For the cotangent h: z-bar = (g / B) J_s h (the fused softmax_vjp),
    /// g-bar = sum(h * (s - onehot(y))) / B
    fn vjp(&self, node: &Arc<Node>, h: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (z, y, g) = (&node.input(0)?, &node.input(1)?, &node.input(2)?);
        let b = z.shape()[0];
        let zbar = z.softmax_vjp(h, Some(g), 1.0 / b as f64)?;
        // g is usually the constant seed of a gradient: its cotangent only when tracked
        let gbar = node
            .needs_grad(2)
            .then(|| {
                let one = g.detach().ones_like()?;
                h.mul(&z.softmax_cross_entropy_grad(y, &one)?)?.sum_all()?.reshape(g.shape())
            })
            .transpose()?;
        Ok(vec![Some(zbar), None, gbar])
    }
    /// jvp = (g / B) J_s tz + G(z, tg) (G is linear in g)
    fn jvp(&self, x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let (z, g) = (&x[0], &x[2]);
        let b = z.shape()[0];
        let dz = t[0].as_ref().map(|tz| z.softmax_vjp(tz, Some(g), 1.0 / b as f64)).transpose()?;
        let dg = t[2].as_ref().map(|tg| z.softmax_cross_entropy_grad(&x[1], tg)).transpose()?;
        super::binary::add_opt(dz, dg)
    }
    /// batch: (softmax(z) - onehot(y)) g / rows per example, with ops
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        let (z, y) = (b.expand(&x[0], batched[0])?, b.expand(&x[1], batched[1])?);
        let (n, c) = (z.shape()[1], z.shape()[2]);
        let diff = z.softmax(-1)?.sub(&y.contiguous()?.one_hot(c, z.dtype())?)?;
        let g = x[2].reshape(&[if batched[2] { b.size } else { 1 }, 1, 1])?;
        diff.mul(&g)?.mul_scalar(1.0 / n as f64)
    }
}

impl Tensor {
    /// mean_r (logsumexp(z_r) - z_r[labels_r]) for logits z [B, C] and u32 labels [B]: a
    /// scalar, one kernel on the GPU, differentiable to any order.
    pub fn softmax_cross_entropy_mean(&self, labels: &Tensor) -> Result<Tensor> {
        bind(Arc::new(SoftmaxCrossEntropy), &[self, &labels.detach()])
    }

    /// (softmax(z) - onehot(labels)) * g / B: the gradient of
    /// [`Tensor::softmax_cross_entropy_mean`] times the one-element cotangent `g` (kept on
    /// the device). One kernel on the GPU, differentiable to any order.
    pub fn softmax_cross_entropy_grad(&self, labels: &Tensor, g: &Tensor) -> Result<Tensor> {
        bind(Arc::new(SoftmaxCrossEntropyGrad), &[self, &labels.detach(), g])
    }
}

// ------------------------------------------------------------------ softplus

/// softplus(x) = log(1 + exp(x)), computed stably as relu(x) + log(1 + exp(-|x|)). Its own
/// rules: the stable form's pieces have kinks at 0 whose one-sided derivatives would give
/// a wrong gradient (and Hessian) exactly there.
pub struct Softplus;

impl Primitive for Softplus {
    fn name(&self) -> String {
        "softplus".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_float("softplus", x[0])?;
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        true
    }
    /// Three kernels on either device (relu, exp(-|x|) + 1, log, add).
    fn forward(&self, x: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        let x = x[0];
        x.relu()?.add(&x.abs()?.neg()?.exp()?.add_scalar(1.0)?.log()?)
    }
    /// d softplus(x) = sigmoid(x) dx
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&node.input(0)?.sigmoid()?)?)])
    }
    /// jvp softplus(x) = sigmoid(x) t
    fn jvp(&self, x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| t.mul(&x[0].sigmoid()?)).transpose()
    }
    /// batch: elementwise
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].softplus()
    }
}

impl Tensor {
    /// log(1 + exp(x)), stable for any x.
    pub fn softplus(&self) -> Result<Tensor> {
        bind(Arc::new(Softplus), &[self])
    }
}
