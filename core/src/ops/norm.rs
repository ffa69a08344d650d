//! Row normalization primitives over the last axis: layer normalization (centered) and
//! RMS normalization, each with an optional elementwise weight and bias, and their input
//! gradient. One kernel per row set on the GPU for each; the rules are written with these
//! primitives and ops, so derivatives of any order stay fused.
//!
//! Notation for a row x of n values: c = 1 (layer norm) or 0 (RMS), mu = c mean(x),
//! r = 1 / sqrt(mean((x - mu)^2) + eps), xh = (x - mu) r. The normalization's Jacobian is
//! J = r (I - c/n 11^T - xh xh^T / n), symmetric, so its VJP and JVP are both J applied.
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::storage::CpuStorage;
use crate::tensor::check_float;
use crate::{DType, Error, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::Context;

/// What both primitives share: eps, and centered (layer norm) or not (RMS).
#[derive(Clone, Copy, Debug)]
struct NormKind {
    eps: f64,
    rms: bool,
}

impl NormKind {
    fn op(self) -> &'static str {
        if self.rms {
            "rms_norm"
        } else {
            "layer_norm"
        }
    }
    fn c(self) -> f64 {
        if self.rms {
            0.0
        } else {
            1.0
        }
    }

    /// Per row: (mu, r) in f64.
    fn stats(self, row: &[f64]) -> (f64, f64) {
        let n = row.len() as f64;
        let mu = if self.rms { 0.0 } else { row.iter().sum::<f64>() / n };
        let var = row.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / n;
        (mu, 1.0 / (var + self.eps).sqrt())
    }

    /// v - c mean(v) over the last axis.
    fn center(self, v: &Tensor) -> Result<Tensor> {
        if self.rms {
            return Ok(v.clone());
        }
        v.sub(&v.mean(&[-1], true)?)
    }

    /// xh = (x - c mean(x)) r and r^2 = 1 / (mean((x - mu)^2) + eps) (keepdim), with ops:
    /// the composite pieces the fallbacks and the second-order rules read.
    fn normalized_parts(self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let xc = self.center(x)?;
        let r2 = xc.square()?.mean(&[-1], true)?.add_scalar(self.eps)?.recip()?;
        Ok((xc.mul(&r2.sqrt()?)?, r2))
    }

    /// xh = normalize(x): the forward primitive without weight or bias.
    fn normalize(self, x: &Tensor) -> Result<Tensor> {
        bind(Arc::new(LayerNorm { eps: self.eps, rms: self.rms, weight: false, bias: false }), &[x])
    }

    /// J(x) (g * w): the gradient primitive.
    fn grad(self, x: &Tensor, g: &Tensor, w: Option<&Tensor>) -> Result<Tensor> {
        let mut inputs = vec![x, g];
        inputs.extend(w);
        bind(Arc::new(LayerNormGrad { eps: self.eps, rms: self.rms, weight: w.is_some() }), &inputs)
    }

    /// Errs unless x is a float tensor of rank >= 1 with a non-empty last axis and each of
    /// `affine` (weight, bias) has shape [n] on x's device and dtype.
    fn check(self, x: &Tensor, affine: &[(&str, &Tensor)]) -> Result<usize> {
        let op = self.op();
        check_float(op, x)?;
        let n = match x.shape().last() {
            Some(&n) if n > 0 => n,
            _ => return Err(Error::Empty { op, msg: format!("normalizes over the last axis of {:?}", x.shape()) }),
        };
        for (what, t) in affine {
            if t.shape() != [n] {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: x.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                    msg: format!("the {what} must have shape [{n}] (the last axis of the input)"),
                });
            }
            if t.device() != x.device() {
                return Err(Error::DeviceMismatch { op, lhs: x.device().name(), rhs: t.device().name() });
            }
            // f16 is computed in f32 (the dtype policy at bind), so f32 affine parameters
            // serve f16 inputs
            let computed = |d: DType| if d == DType::F16 { DType::F32 } else { d };
            if computed(t.dtype()) != computed(x.dtype()) {
                return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: t.dtype() });
            }
        }
        Ok(n)
    }
}

/// The cotangent-side shape of a per-column vector [n] broadcast along a batched tensor's
/// axis 0: [B, 1, ..., 1, n] for a physical tensor of rank `rank`.
fn per_example_row(v: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![1; rank];
    shape[0] = v.shape()[0];
    shape[rank - 1] = v.shape()[1];
    v.reshape(&shape)
}

/// a = g w (g when there is no weight): the cotangent the normalization's Jacobian meets.
fn weighted(g: &Tensor, w: Option<&Tensor>) -> Result<Tensor> {
    match w {
        Some(w) => g.mul(w),
        None => Ok(g.clone()),
    }
}

// ------------------------------------------------------------------ forward

/// y = xh * w + b over the last axis (weight and bias optional inputs, in that order).
pub struct LayerNorm {
    pub eps: f64,
    pub rms: bool,
    pub weight: bool,
    pub bias: bool,
}

impl LayerNorm {
    fn kind(&self) -> NormKind {
        NormKind { eps: self.eps, rms: self.rms }
    }
    fn bias_index(&self) -> usize {
        1 + self.weight as usize
    }
    fn affine<'a>(&self, x: &[&'a Tensor]) -> (Option<&'a Tensor>, Option<&'a Tensor>) {
        (self.weight.then(|| x[1]), self.bias.then(|| x[self.bias_index()]))
    }
}

impl Primitive for LayerNorm {
    /// f16 storage is normalized in f32 (bind widens the f16 inputs and stores the result
    /// back as f16)
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn host_values(&self) -> Vec<f64> {
        vec![self.eps]
    }
    fn name(&self) -> String {
        self.kind().op().into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let (w, b) = self.affine(x);
        let affine: Vec<(&str, &Tensor)> = w.map(|w| ("weight", w)).into_iter().chain(b.map(|b| ("bias", b))).collect();
        self.kind().check(x[0], &affine)?;
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    fn saves_input(&self, i: usize) -> bool {
        i < 2 // x, and the weight when there is one
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (w, b) = self.affine(x);
        let n = *x[0].shape().last().expect("rank >= 1");
        let (wv, bv) = (w.map(|w| w.cpu_values()), b.map(|b| b.cpu_values()));
        let mut v = x[0].cpu_values();
        for row in v.chunks_mut(n) {
            let (mu, r) = self.kind().stats(row);
            for (j, e) in row.iter_mut().enumerate() {
                *e = (*e - mu) * r * wv.as_ref().map_or(1.0, |w| w[j]) + bv.as_ref().map_or(0.0, |b| b[j]);
            }
        }
        Ok(out.cpu(CpuStorage::from_f64(v, out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (w, b) = self.affine(x);
        let n = *x[0].shape().last().expect("rank >= 1");
        let rows = x[0].numel() / n;
        // the kernels read each operand at its offset: views of a flat buffer are not copied
        let xc = x[0].dense()?;
        let (wc, bc) = (w.map(|w| w.dense()).transpose()?, b.map(|b| b.dense()).transpose()?);
        let views = (wc.as_ref().map(|w| w.view()), bc.as_ref().map(|b| b.view()));
        if let Some(buf) = ctx.layer_norm(xc.view(), views.0, views.1, rows, n, self.eps as f32, self.rms)? {
            return Ok(out.gpu(buf, x[0].device()));
        }
        // rows too long for one thread's loops: the same math with other kernels
        let (mut y, _) = self.kind().normalized_parts(x[0])?;
        if let Some(w) = w {
            y = y.mul(w)?;
        }
        if let Some(b) = b {
            y = y.add(b)?;
        }
        Ok(y)
    }
    /// x-bar = J(x) (g w) (the gradient primitive); w-bar = g xh; b-bar = g (in the
    /// broadcast shape: the engine sums over the leading axes)
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &node.input(0)?;
        let w = if self.weight { Some(&node.input(1)?) } else { None };
        let mut out = vec![node.needs_grad(0).then(|| self.kind().grad(x, g, w)).transpose()?];
        if self.weight {
            out.push(node.needs_grad(1).then(|| g.mul(&self.kind().normalize(x)?)).transpose()?);
        }
        if self.bias {
            out.push(Some(g.clone()));
        }
        Ok(out)
    }
    /// jvp = (J(x) tx) w + xh tw + tb
    fn jvp(&self, x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let kind = self.kind();
        let mut out = None;
        if let Some(tx) = &t[0] {
            let mut d = kind.grad(&x[0], tx, None)?;
            if self.weight {
                d = d.mul(&x[1])?;
            }
            out = Some(d);
        }
        if let (true, Some(tw)) = (self.weight, t.get(1).and_then(|t| t.as_ref())) {
            out = super::binary::add_opt(out, Some(kind.normalize(&x[0])?.mul(tw)?))?;
        }
        if let (true, Some(tb)) = (self.bias, t.get(self.bias_index()).and_then(|t| t.as_ref())) {
            out = super::binary::add_opt(out, Some(tb.broadcast_to(x[0].shape())?))?;
        }
        Ok(out)
    }
    /// batch: rows stay rows under a new leading axis; a per-example weight or bias
    /// multiplies / adds after the plain normalization
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        let xb = b.expand(&x[0], batched[0])?;
        if !batched[1..].iter().any(|&v| v) {
            let mut inputs = vec![&xb];
            inputs.extend(x[1..].iter());
            return bind(Arc::new(LayerNorm { ..*self }), &inputs);
        }
        let mut y = self.kind().normalize(&xb)?;
        let rank = y.rank();
        let expand = |i: usize| -> Result<Tensor> {
            if batched[i] {
                per_example_row(&x[i], rank)
            } else {
                Ok(x[i].clone())
            }
        };
        if self.weight {
            y = y.mul(&expand(1)?)?;
        }
        if self.bias {
            y = y.add(&expand(self.bias_index())?)?;
        }
        Ok(y)
    }
}

// ------------------------------------------------------------------ input gradient

/// F(x, g[, w]) = J(x) (g w): the input gradient of [`LayerNorm`] (w optional).
pub struct LayerNormGrad {
    pub eps: f64,
    pub rms: bool,
    pub weight: bool,
}

impl LayerNormGrad {
    fn kind(&self) -> NormKind {
        NormKind { eps: self.eps, rms: self.rms }
    }
}

impl Primitive for LayerNormGrad {
    fn host_values(&self) -> Vec<f64> {
        vec![self.eps]
    }
    fn name(&self) -> String {
        format!("{}_grad", self.kind().op())
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let kind = self.kind();
        let n = kind.check(x[0], &x.get(2).map(|w| ("weight", *w)).into_iter().collect::<Vec<_>>())?;
        if x[1].shape() != x[0].shape() || x[1].dtype() != x[0].dtype() || x[1].device() != x[0].device() {
            return Err(Error::ShapeMismatch {
                op: kind.op(),
                lhs: x[0].shape().to_vec(),
                rhs: x[1].shape().to_vec(),
                msg: format!("the cotangent must match the input (rows of {n}, same dtype and device)"),
            });
        }
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        true
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let kind = self.kind();
        let n = *x[0].shape().last().expect("rank >= 1");
        let (xv, gv) = (x[0].cpu_values(), x[1].cpu_values());
        let wv = x.get(2).map(|w| w.cpu_values());
        let mut v = vec![0.0; xv.len()];
        for ((row, grow), orow) in xv.chunks(n).zip(gv.chunks(n)).zip(v.chunks_mut(n)) {
            let (mu, r) = kind.stats(row);
            let a: Vec<f64> = (0..n).map(|j| grow[j] * wv.as_ref().map_or(1.0, |w| w[j])).collect();
            let xh: Vec<f64> = row.iter().map(|e| (e - mu) * r).collect();
            let abar = kind.c() * a.iter().sum::<f64>() / n as f64;
            let m = a.iter().zip(&xh).map(|(a, h)| a * h).sum::<f64>() / n as f64;
            for j in 0..n {
                orow[j] = r * (a[j] - abar - xh[j] * m);
            }
        }
        Ok(out.cpu(CpuStorage::from_f64(v, out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let n = *x[0].shape().last().expect("rank >= 1");
        let rows = x[0].numel() / n;
        let (xc, gc) = (x[0].dense()?, x[1].dense()?);
        let wc = x.get(2).map(|w| w.dense()).transpose()?;
        let wv = wc.as_ref().map(|w| w.view());
        if let Some(buf) = ctx.layer_norm_grad(xc.view(), gc.view(), wv, rows, n, self.eps as f32, self.rms)? {
            return Ok(out.gpu(buf, x[0].device()));
        }
        // rows too long for one thread's loops: r (a - c mean(a) - xh mean(a xh)) with ops
        let kind = self.kind();
        let a = weighted(x[1], x.get(2).copied())?;
        let (xh, r2) = kind.normalized_parts(x[0])?;
        let ac = kind.center(&a)?;
        ac.sub(&xh.mul(&a.mul(&xh)?.mean(&[-1], true)?)?)?.mul(&r2.sqrt()?)
    }
    /// For the cotangent h, with a = g w, ac = a - c mean(a), hc = h - c mean(h),
    /// m = mean(a xh), hx = mean(h xh) (means over the row):
    /// g-bar = w J h; w-bar = g J h (broadcast shape);
    /// x-bar = -r^2 (m hc + hx ac + (mean(h ac) - 3 m hx) xh), the second derivative of
    /// the normalization contracted with a and h (symmetric in them).
    fn vjp(&self, node: &Arc<Node>, h: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let kind = self.kind();
        let (x, g) = (&node.input(0)?, &node.input(1)?);
        let w = if self.weight { Some(&node.input(2)?) } else { None };
        let jh =
            if node.needs_grad(1) || (self.weight && node.needs_grad(2)) { Some(kind.grad(x, h, None)?) } else { None };
        let gbar = match (&jh, w, node.needs_grad(1)) {
            (Some(jh), Some(w), true) => Some(jh.mul(w)?),
            (Some(jh), None, true) => Some(jh.clone()),
            _ => None,
        };
        let xbar = node.needs_grad(0).then(|| self.second_order(x, g, w, h)).transpose()?;
        let mut out = vec![xbar, gbar];
        if self.weight {
            out.push(if node.needs_grad(2) { jh.map(|jh| g.mul(&jh)).transpose()? } else { None });
        }
        Ok(out)
    }
    /// jvp = J (tg w) + J (g tw) + d_x(J a)[tx], with u = tx, s = mean(xh u),
    /// uc = u - c mean(u), P = ac - xh m:
    /// d_x(J a)[u] = -r^2 (s P + m (uc - xh s) + xh (mean(ac uc) - m s))
    fn jvp(&self, x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let kind = self.kind();
        let (xp, g) = (&x[0], &x[1]);
        let w = x.get(2).filter(|_| self.weight);
        let mut out = t[1].as_ref().map(|tg| kind.grad(xp, tg, w)).transpose()?;
        if let (Some(w_t), true) = (t.get(2).and_then(|t| t.as_ref()), self.weight) {
            out = super::binary::add_opt(out, Some(kind.grad(xp, &g.mul(w_t)?, None)?))?;
        }
        if let Some(u) = &t[0] {
            let a = weighted(g, w)?;
            let (xh, r2) = kind.normalized_parts(xp)?;
            let (ac, uc) = (kind.center(&a)?, kind.center(u)?);
            let m = a.mul(&xh)?.mean(&[-1], true)?;
            let s = xh.mul(u)?.mean(&[-1], true)?;
            let p = ac.sub(&xh.mul(&m)?)?;
            let term = s
                .mul(&p)?
                .add(&m.mul(&uc.sub(&xh.mul(&s)?)?)?)?
                .add(&xh.mul(&ac.mul(&uc)?.mean(&[-1], true)?.sub(&m.mul(&s)?)?)?)?;
            out = super::binary::add_opt(out, Some(term.mul(&r2)?.neg()?))?;
        }
        Ok(out)
    }
    /// batch: rows stay rows under a new leading axis; a per-example weight multiplies
    /// the cotangent first
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        let (xb, gb) = (b.expand(&x[0], batched[0])?, b.expand(&x[1], batched[1])?);
        let kind = self.kind();
        match x.get(2) {
            Some(w) if batched[2] => kind.grad(&xb, &gb.mul(&per_example_row(w, gb.rank())?)?, None),
            w => kind.grad(&xb, &gb, w),
        }
    }
}

impl LayerNormGrad {
    /// x-bar of the VJP (see there), with ops.
    fn second_order(&self, x: &Tensor, g: &Tensor, w: Option<&Tensor>, h: &Tensor) -> Result<Tensor> {
        let kind = self.kind();
        let a = weighted(g, w)?;
        let (xh, r2) = kind.normalized_parts(x)?;
        let (ac, hc) = (kind.center(&a)?, kind.center(h)?);
        let m = a.mul(&xh)?.mean(&[-1], true)?;
        let hx = h.mul(&xh)?.mean(&[-1], true)?;
        let k = h.mul(&ac)?.mean(&[-1], true)?.sub(&m.mul(&hx)?.mul_scalar(3.0)?)?;
        m.mul(&hc)?.add(&hx.mul(&ac)?)?.add(&k.mul(&xh)?)?.mul(&r2)?.neg()
    }
}

impl Tensor {
    /// Layer normalization over the last axis, (x - mean) / sqrt(var + eps) * weight + bias
    /// (biased variance; weight and bias of shape [last axis], each optional). One kernel
    /// on the GPU forward and one for the input gradient; differentiable to any order.
    pub fn layer_norm(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        self.normalized(weight, bias, eps, false)
    }

    /// RMS normalization over the last axis, x / sqrt(mean(x^2) + eps) * weight (weight of
    /// shape [last axis], optional). One kernel on the GPU forward and one for the input
    /// gradient; differentiable to any order.
    pub fn rms_norm(&self, weight: Option<&Tensor>, eps: f64) -> Result<Tensor> {
        self.normalized(weight, None, eps, true)
    }

    fn normalized(&self, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f64, rms: bool) -> Result<Tensor> {
        if eps.is_nan() || eps < 0.0 {
            return Err(Error::Invalid { op: NormKind { eps, rms }.op(), msg: format!("eps = {eps} must be >= 0") });
        }
        let mut inputs = vec![self];
        inputs.extend(weight);
        inputs.extend(bias);
        bind(Arc::new(LayerNorm { eps, rms, weight: weight.is_some(), bias: bias.is_some() }), &inputs)
    }
}
