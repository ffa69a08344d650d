//! Fused softmax kernels. The mean softmax cross-entropy of logit rows against u32 labels
//! and its gradient times a scalar cotangent record nothing: `wgrad::nn::cross_entropy`
//! wraps them in custom ops. The (scaled) softmax VJP is itself a differentiable op whose
//! VJP is written with ops and with itself, so derivatives of any order stay fused.
use super::{cpu_of, index::check_indices};
use crate::graph::is_recording;
use crate::storage::CpuStorage;
use crate::tensor::check_float;
use crate::{cpu, DType, Error, Result, Tensor};

fn check_args(op: &'static str, z: &Tensor, labels: &Tensor) -> Result<(usize, usize)> {
    check_float(op, z)?;
    if z.rank() != 2 || labels.rank() != 1 || labels.shape()[0] != z.shape()[0] {
        return Err(Error::ShapeMismatch { op, lhs: z.shape().to_vec(), rhs: labels.shape().to_vec(), msg: "expected logits [batch, classes] and labels [batch]".into() });
    }
    let (b, c) = (z.shape()[0], z.shape()[1]);
    if b == 0 || c == 0 {
        return Err(Error::Empty { op, msg: format!("logits of shape {:?}", z.shape()) });
    }
    check_indices(op, labels, c)?;
    if z.is_tracked() && is_recording() {
        // no VJP of its own: reached through nn::cross_entropy (a custom op)
        return Err(Error::NotDifferentiable { op: op.to_string(), order: 1 });
    }
    Ok((b, c))
}

/// Rows of logits with their log-sum-exp (max subtracted first) and labels, in f64.
fn cpu_rows(z: &Tensor, labels: &Tensor, b: usize, c: usize) -> (Vec<f64>, Vec<f64>, Vec<usize>) {
    let zv = cpu::read(cpu_of(z), z.layout());
    let ys = cpu::read(cpu_of(labels), labels.layout()).into_iter().map(|y| y as usize).collect();
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

impl Tensor {
    /// mean_r (logsumexp(z_r) - z_r[labels_r]) for logits z [B, C] and u32 labels [B]: a
    /// scalar. Not differentiable by itself (see `wgrad::nn::cross_entropy`).
    pub fn softmax_cross_entropy_mean(&self, labels: &Tensor) -> Result<Tensor> {
        let (b, c) = check_args("softmax_cross_entropy", self, labels)?;
        if self.dtype() == DType::F16 {
            return self.via_f32(|x| x.softmax_cross_entropy_mean(labels));
        }
        let (z, y) = (self.contiguous()?, labels.contiguous()?);
        if let Some(ctx) = self.device().context() {
            if let Some(buf) = ctx.softmax_xent_mean(z.view(), y.view(), b, c)? {
                return Ok(Tensor::new_contiguous(crate::storage::Storage::Gpu(std::sync::Arc::new(buf)), &[], self.dtype(), self.device().clone()));
            }
            // too long for one workgroup's loops: the composite
            return z.log_softmax(1)?.gather(1, &y.reshape(&[b, 1])?)?.mean_all()?.neg();
        }
        let (zv, lse, ys) = cpu_rows(&z, &y, b, c);
        let loss = (0..b).map(|r| lse[r] - zv[r * c + ys[r]]).sum::<f64>() / b as f64;
        super::run(self, &[], self.dtype(), || Ok(CpuStorage::from_f64(vec![loss], self.dtype())), |_| unreachable!("CPU tensor"))
    }

    /// (softmax(z) - onehot(labels)) * g / B: the gradient of
    /// [`Tensor::softmax_cross_entropy_mean`] times the scalar cotangent `g` (kept on the
    /// device). Not differentiable by itself.
    pub fn softmax_cross_entropy_grad(&self, labels: &Tensor, g: &Tensor) -> Result<Tensor> {
        let (b, c) = check_args("softmax_cross_entropy_grad", self, labels)?;
        if g.numel() != 1 || g.device() != self.device() {
            return Err(Error::Invalid { op: "softmax_cross_entropy_grad", msg: format!("the cotangent must be one value on {}, got {:?} on {}", self.device().name(), g.shape(), g.device().name()) });
        }
        if self.dtype() == DType::F16 {
            let g = g.to_dtype(DType::F32)?;
            return self.via_f32(|x| x.softmax_cross_entropy_grad(labels, &g));
        }
        let (z, y, gc) = (self.contiguous()?, labels.contiguous()?, g.to_dtype(self.dtype())?.contiguous()?);
        if let Some(ctx) = self.device().context() {
            if let Some(buf) = ctx.softmax_xent_grad(z.view(), y.view(), gc.view(), b, c)? {
                return Ok(Tensor::new_contiguous(crate::storage::Storage::Gpu(std::sync::Arc::new(buf)), &[b, c], self.dtype(), self.device().clone()));
            }
            let p = z.softmax(1)?.sub(&y.one_hot(c, self.dtype())?)?;
            return p.mul(&gc.reshape(&[])?)?.mul_scalar(1.0 / b as f64);
        }
        let (zv, lse, ys) = cpu_rows(&z, &y, b, c);
        let scale = cpu::read(cpu_of(&gc), gc.layout())[0] / b as f64;
        let mut out = vec![0.0; b * c];
        for r in 0..b {
            for j in 0..c {
                let hit = if j == ys[r] { 1.0 } else { 0.0 };
                out[r * c + j] = ((zv[r * c + j] - lse[r]).exp() - hit) * scale;
            }
        }
        super::run(self, &[b, c], self.dtype(), || Ok(CpuStorage::from_f64(out, self.dtype())), |_| unreachable!("CPU tensor"))
    }
}

impl Tensor {
    /// k * g * s * (v - sum_last(s * v)) with s = softmax(self) over the last axis: the
    /// softmax VJP for the cotangent v, scaled by k and (optionally) the one-element g.
    /// One kernel on the GPU; differentiable to any order.
    pub fn softmax_vjp(&self, v: &Tensor, g: Option<&Tensor>, k: f64) -> Result<Tensor> {
        check_float("softmax_vjp", self)?;
        if v.shape() != self.shape() || self.rank() == 0 {
            return Err(Error::ShapeMismatch { op: "softmax_vjp", lhs: self.shape().to_vec(), rhs: v.shape().to_vec(), msg: "the cotangent must have the logits' shape (rank >= 1)".into() });
        }
        if let Some(g) = g {
            if g.numel() != 1 || g.device() != self.device() {
                return Err(Error::Invalid { op: "softmax_vjp", msg: format!("the scale must be one value on {}, got {:?} on {}", self.device().name(), g.shape(), g.device().name()) });
            }
        }
        let mut inputs = vec![self, v];
        inputs.extend(g);
        let (z, vv, gg) = (self.clone(), v.clone(), g.cloned());
        crate::graph::custom_op(std::sync::Arc::new(SoftmaxVjp { k, scaled: g.is_some() }), &inputs, move || softmax_vjp_forward(&z, &vv, gg.as_ref(), k))
    }
}

/// [`Tensor::softmax_vjp`] as one op: F(z, v, g) = k g J_s(z) v with J_s = diag(s) - s s^T.
struct SoftmaxVjp {
    k: f64,
    scaled: bool,
}

impl crate::graph::CustomOp for SoftmaxVjp {
    fn name(&self) -> &str {
        "softmax_vjp"
    }
    /// For the cotangent h (J_s symmetric, a = sum_last(s v), b = sum_last(s h)):
    /// v-bar = F(z, h, g); z-bar = F(z, u, g) with u = h v - a h - b v (from
    /// d(J_s v) = dJ_s v, written through J_s again); g-bar = sum(h * F(z, v, 1)).
    fn vjp(&self, inputs: &[Tensor], _out: &Tensor, h: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let (z, v) = (&inputs[0], &inputs[1]);
        let g = inputs.get(2).filter(|_| self.scaled);
        let s = z.softmax(-1)?;
        let a = s.mul(v)?.sum(&[-1], true)?;
        let b = s.mul(h)?.sum(&[-1], true)?;
        let u = h.mul(v)?.sub(&a.mul(h)?)?.sub(&b.mul(v)?)?;
        let mut out = vec![Some(z.softmax_vjp(&u, g, self.k)?), Some(z.softmax_vjp(h, g, self.k)?)];
        if let Some(g) = g {
            let gbar = if g.is_tracked() { Some(h.mul(&z.softmax_vjp(v, None, self.k)?)?.sum_all()?.reshape(g.shape())?) } else { None };
            out.push(gbar);
        }
        Ok(out)
    }
}

/// The forward of [`SoftmaxVjp`]: the row kernel on the GPU (f32), ops elsewhere.
fn softmax_vjp_forward(z: &Tensor, v: &Tensor, g: Option<&Tensor>, k: f64) -> Result<Tensor> {
    if let (Some(ctx), DType::F32, DType::F32) = (z.device().context(), z.dtype(), v.dtype()) {
        let n = *z.shape().last().expect("rank >= 1");
        let (zc, vc) = (z.contiguous()?, v.contiguous()?);
        let gc = g.map(|g| g.to_dtype(DType::F32)?.contiguous()).transpose()?;
        if let Some(buf) = ctx.softmax_vjp(zc.view(), vc.view(), gc.as_ref().map(|g| g.view()), k as f32, z.numel() / n.max(1), n)? {
            return Ok(Tensor::new_contiguous(crate::storage::Storage::Gpu(std::sync::Arc::new(buf)), z.shape(), z.dtype(), z.device().clone()));
        }
    }
    let s = z.softmax(-1)?;
    let sv = s.mul(v)?;
    let mut out = sv.sub(&s.mul(&sv.sum(&[-1], true)?)?)?.mul_scalar(k)?;
    if let Some(g) = g {
        out = out.mul(&g.reshape(&[])?)?;
    }
    Ok(out)
}
