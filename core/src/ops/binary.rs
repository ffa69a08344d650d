//! Binary elementwise primitives with numpy broadcasting (arithmetic, comparisons) and
//! where. One block per primitive: the binary table below lists, for each op, what its
//! VJP saves, its CPU reference, its VJP and its JVP; the GPU launch is the binary skeleton
//! with the op's WGSL body (`wgrad_kernels::BinaryOp`).
use super::{unsaved, Operand};
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::shape::broadcast_shapes;
use crate::storage::CpuStorage;
use crate::tensor::{check_float, check_same};
use crate::{cpu, DType, Error, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::{BinaryOp, Context};

/// (a-bar, b-bar) or the output tangent, by rule.
type BinaryVjp = fn(&Saved2, &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)>;
type BinaryJvp = fn(&Saved2, Option<&Tensor>, Option<&Tensor>) -> Result<Option<Tensor>>;

/// Inputs a, b and output y of a binary op, as far as its rule reads them.
struct Saved2 {
    a: Option<Tensor>,
    b: Option<Tensor>,
    y: Option<Tensor>,
}

impl Saved2 {
    fn a(&self) -> Result<&Tensor> {
        self.a.as_ref().ok_or_else(|| unsaved("a"))
    }
    fn b(&self) -> Result<&Tensor> {
        self.b.as_ref().ok_or_else(|| unsaved("b"))
    }
    fn y(&self) -> Result<&Tensor> {
        self.y.as_ref().ok_or_else(|| unsaved("the output"))
    }
}

/// A strided operand of the CPU reference.
type CpuOperand<'a> = (&'a CpuStorage, &'a crate::Layout);

struct BinaryRule {
    saves_ab: bool,
    saves_y: bool,
    cpu: fn(CpuOperand, CpuOperand, DType) -> CpuStorage,
    vjp: BinaryVjp,
    jvp: BinaryJvp,
}

macro_rules! binary_rules {
    ($($op:ident { saves: [$sab:expr, $sy:expr], cpu: |$a:ident, $b:ident| $cpu:expr,
        vjp: |$vs:ident, $g:ident| $vjp:expr, jvp: |$js:ident, $ta:ident, $tb:ident| $jvp:expr $(,)? })*) => {
        fn binary_rule(op: BinaryOp) -> BinaryRule {
            match op {
                $(BinaryOp::$op => BinaryRule {
                    saves_ab: $sab,
                    saves_y: $sy,
                    cpu: |a, b, dt| cpu::zip(a, b, dt, |$a, $b| $cpu),
                    vjp: |$vs, $g| $vjp,
                    jvp: |$js, $ta, $tb| $jvp,
                },)*
            }
        }
    };
}

fn mask(c: bool) -> f64 {
    if c {
        1.0
    } else {
        0.0
    }
}

binary_rules! {
    Add { saves: [false, false], cpu: |a, b| a + b,
        // d(a + b) = da + db
        vjp: |_s, g| Ok((Some(g.clone()), Some(g.clone()))),
        // jvp(a + b) = ta + tb
        jvp: |_s, ta, tb| add_opt(ta.cloned(), tb.cloned()) }
    Sub { saves: [false, false], cpu: |a, b| a - b,
        // d(a - b) = da - db
        vjp: |_s, g| Ok((Some(g.clone()), Some(g.neg()?))),
        // jvp(a - b) = ta - tb
        jvp: |_s, ta, tb| add_opt(ta.cloned(), tb.map(|t| t.neg()).transpose()?) }
    Mul { saves: [true, false], cpu: |a, b| a * b,
        // d(a b) = b da + a db
        vjp: |s, g| Ok((Some(g.mul(s.b()?)?), Some(g.mul(s.a()?)?))),
        // jvp(a b) = ta b + a tb
        jvp: |s, ta, tb| add_opt(ta.map(|t| t.mul(s.b()?)).transpose()?, tb.map(|t| s.a()?.mul(t)).transpose()?) }
    Div { saves: [true, false], cpu: |a, b| a / b,
        // d(a / b) = da / b - a / b^2 db
        vjp: |s, g| {
            let ga = g.div(s.b()?)?;
            let gb = ga.mul(s.a()?)?.div(s.b()?)?.neg()?;
            Ok((Some(ga), Some(gb)))
        },
        // jvp(a / b) = ta / b - a tb / b^2
        jvp: |s, ta, tb| {
            let ja = ta.map(|t| t.div(s.b()?)).transpose()?;
            let jb = tb.map(|t| s.a()?.mul(t)?.div(s.b()?)?.div(s.b()?)?.neg()).transpose()?;
            add_opt(ja, jb)
        } }
    Pow { saves: [true, true], cpu: |a, b| cpu::pow_num(a, b),
        // d(a^b) = b a^(b-1) da + a^b ln(a) db
        vjp: |s, g| Ok((Some(g.mul(&pow_slope_a(s)?)?), Some(g.mul(&s.y()?.mul(&s.a()?.log()?)?)?))),
        // jvp(a^b) = b a^(b-1) ta + a^b ln(a) tb
        jvp: |s, ta, tb| add_opt(
            ta.map(|t| t.mul(&pow_slope_a(s)?)).transpose()?,
            tb.map(|t| t.mul(&s.y()?.mul(&s.a()?.log()?)?)).transpose()?,
        ) }
    Maximum { saves: [true, false], cpu: |a, b| cpu::max_nan(a, b),
        // d max(a, b) = w da + (1 - w) db, w = [a > b] + [a = b] / 2 (ties split evenly)
        vjp: |s, g| split_vjp(&winner(s, BinaryOp::Gt)?, g),
        // jvp max(a, b) = w ta + (1 - w) tb
        jvp: |s, ta, tb| split_jvp(&winner(s, BinaryOp::Gt)?, ta, tb) }
    Minimum { saves: [true, false], cpu: |a, b| cpu::min_nan(a, b),
        // d min(a, b) = w da + (1 - w) db, w = [a < b] + [a = b] / 2
        vjp: |s, g| split_vjp(&winner(s, BinaryOp::Lt)?, g),
        // jvp min(a, b) = w ta + (1 - w) tb
        jvp: |s, ta, tb| split_jvp(&winner(s, BinaryOp::Lt)?, ta, tb) }
    // comparisons are piecewise constant: no derivative (the primitive is not differentiable)
    Eq { saves: [false, false], cpu: |a, b| mask(a == b), vjp: |_s, _g| Ok((None, None)), jvp: |_s, _a, _b| Ok(None) }
    Ne { saves: [false, false], cpu: |a, b| mask(a != b), vjp: |_s, _g| Ok((None, None)), jvp: |_s, _a, _b| Ok(None) }
    Lt { saves: [false, false], cpu: |a, b| mask(a < b), vjp: |_s, _g| Ok((None, None)), jvp: |_s, _a, _b| Ok(None) }
    Le { saves: [false, false], cpu: |a, b| mask(a <= b), vjp: |_s, _g| Ok((None, None)), jvp: |_s, _a, _b| Ok(None) }
    Gt { saves: [false, false], cpu: |a, b| mask(a > b), vjp: |_s, _g| Ok((None, None)), jvp: |_s, _a, _b| Ok(None) }
    Ge { saves: [false, false], cpu: |a, b| mask(a >= b), vjp: |_s, _g| Ok((None, None)), jvp: |_s, _a, _b| Ok(None) }
    WherePositive { saves: [true, false], cpu: |a, b| if b > 0.0 { a } else { 0.0 },
        // d (a [b > 0]) = [b > 0] da (the mask is flat in b almost everywhere)
        vjp: |s, g| Ok((Some(g.binary(BinaryOp::WherePositive, s.b()?)?), None)),
        // jvp (a [b > 0]) = [b > 0] ta
        jvp: |s, ta, _tb| ta.map(|t| t.binary(BinaryOp::WherePositive, s.b()?)).transpose() }
}

fn pow_slope_a(s: &Saved2) -> Result<Tensor> {
    let (a, b) = (s.a()?, s.b()?);
    b.mul(&a.pow(&b.add_scalar(-1.0)?)?)
}

fn winner(s: &Saved2, wins: BinaryOp) -> Result<Tensor> {
    let (a, b) = (s.a()?, s.b()?);
    a.binary(wins, b)?.add(&a.eq(b)?.mul_scalar(0.5)?)
}

fn split_vjp(w: &Tensor, g: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
    Ok((Some(g.mul(w)?), Some(g.mul(&w.neg()?.add_scalar(1.0)?)?)))
}

fn split_jvp(w: &Tensor, ta: Option<&Tensor>, tb: Option<&Tensor>) -> Result<Option<Tensor>> {
    let ja = ta.map(|t| t.mul(w)).transpose()?;
    let jb = tb.map(|t| t.mul(&w.neg()?.add_scalar(1.0)?)).transpose()?;
    add_opt(ja, jb)
}

/// A physical operand of a broadcasting op under vmap: a batched one [B, s..] becomes
/// [B, 1.., s..] of rank `rank + 1` (so the batch axis lines up in front of the broadcast
/// shape); an unbatched one broadcasts as it is.
pub(crate) fn align_batched(x: &Tensor, batched: bool, rank: usize) -> Result<Tensor> {
    if !batched || x.rank() == rank + 1 {
        return Ok(x.clone());
    }
    let mut shape = vec![x.shape()[0]];
    shape.resize(rank + 1 - (x.rank() - 1), 1);
    shape.extend_from_slice(&x.shape()[1..]);
    x.reshape(&shape)
}

/// a + b where None is zero.
pub(crate) fn add_opt(a: Option<Tensor>, b: Option<Tensor>) -> Result<Option<Tensor>> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some(a.add(&b)?)),
        (a, b) => Ok(a.or(b)),
    }
}

fn is_comparison(op: BinaryOp) -> bool {
    use BinaryOp::*;
    matches!(op, Eq | Ne | Lt | Le | Gt | Ge)
}

/// A binary primitive with numpy broadcasting.
pub struct Binary {
    pub op: BinaryOp,
}

impl Primitive for Binary {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16_not_native(inputs)
    }
    fn name(&self) -> String {
        format!("{:?}", self.op).to_lowercase()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let name = self.op.name();
        check_same(name, &[x[0], x[1]])?;
        check_float(name, x[0])?;
        Ok(OutSpec::new(&broadcast_shapes(name, x[0].shape(), x[1].shape())?, x[0].dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        binary_rule(self.op).saves_ab
    }
    fn saves_output(&self) -> bool {
        binary_rule(self.op).saves_y
    }
    fn differentiable(&self) -> bool {
        !is_comparison(self.op)
    }
    fn fusible(&self) -> Option<crate::fusion::Fusible> {
        Some(crate::fusion::Fusible::Binary(self.op))
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (a, b) = (x[0].broadcast_view(&out.shape), x[1].broadcast_view(&out.shape));
        let (sa, sb) = (a.cpu_storage(), b.cpu_storage());
        let (va, vb) = ((&*sa, a.layout()), (&*sb, b.layout()));
        // + - * / in f32 directly (bitwise the f64 reference rounded; see cpu::zip_f32)
        let fast = match self.op {
            BinaryOp::Add => cpu::zip_f32(va, vb, out.dtype, |p, q| p + q),
            BinaryOp::Sub => cpu::zip_f32(va, vb, out.dtype, |p, q| p - q),
            BinaryOp::Mul => cpu::zip_f32(va, vb, out.dtype, |p, q| p * q),
            BinaryOp::Div => cpu::zip_f32(va, vb, out.dtype, |p, q| p / q),
            _ => None,
        };
        Ok(out.cpu(fast.unwrap_or_else(|| (binary_rule(self.op).cpu)(va, vb, out.dtype))))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (a, b) = (x[0].broadcast_view(&out.shape), x[1].broadcast_view(&out.shape));
        Ok(out.gpu(ctx.binary(self.op, a.kdtype(), a.view(), b.view(), &out.shape)?, x[0].device()))
    }
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let rule = binary_rule(self.op);
        let s = Saved2 {
            a: rule.saves_ab.then(|| node.input(0)).transpose()?,
            b: rule.saves_ab.then(|| node.input(1)).transpose()?,
            y: rule.saves_y.then(|| Node::output(node)).transpose()?,
        };
        let (ga, gb) = (rule.vjp)(&s, g)?;
        Ok(vec![ga, gb])
    }
    fn jvp(&self, x: &[Tensor], y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let s = Saved2 { a: Some(x[0].clone()), b: Some(x[1].clone()), y: Some(y.clone()) };
        let out = (binary_rule(self.op).jvp)(&s, t[0].as_ref(), t[1].as_ref())?;
        // a tangent of a broadcast operand alone still has the operand's shape
        out.map(|o| o.broadcast_to(y.shape())).transpose()
    }
    /// batch: align the batch axis in front of the broadcast shape, then broadcast
    fn batch(&self, x: &[Tensor], batched: &[bool], _b: &Batch) -> Result<Tensor> {
        let rank = x.iter().zip(batched).map(|(t, &b)| t.rank() - b as usize).max().unwrap_or(0);
        let a = align_batched(&x[0], batched[0], rank)?;
        a.binary(self.op, &align_batched(&x[1], batched[1], rank)?)
    }
}

impl Tensor {
    /// Apply a binary primitive with numpy broadcasting.
    pub fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
        let name = op.name();
        check_same(name, &[self, rhs])?;
        if self.dtype() == DType::U32 {
            if is_comparison(op) {
                return self.to_dtype(DType::F32)?.binary(op, &rhs.to_dtype(DType::F32)?);
            }
            check_float(name, self)?;
        }
        bind(Arc::new(Binary { op }), &[self, rhs])
    }

    /// `self op rhs` for a tensor or a number `rhs` (in `self`'s dtype and device): sums,
    /// differences and products with a number run as the scalar primitives, and a power
    /// as `powf`; the other ops against a 0-d constant.
    fn binary_operand<'a>(&self, op: BinaryOp, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        match rhs.into() {
            Operand::Number(v) if self.dtype().is_float() => match op {
                BinaryOp::Add => self.add_scalar(v),
                BinaryOp::Sub => self.add_scalar(-v),
                BinaryOp::Mul => self.mul_scalar(v),
                BinaryOp::Pow => self.powf(v),
                _ => self.binary(op, &*Operand::Number(v).to_tensor(self)?),
            },
            rhs => self.binary(op, &*rhs.to_tensor(self)?),
        }
    }

    pub fn add<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Add, rhs)
    }
    pub fn sub<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Sub, rhs)
    }
    pub fn mul<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Mul, rhs)
    }
    pub fn div<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Div, rhs)
    }
    /// `self ^ rhs` elementwise (a number exponent runs as `powf`).
    pub fn pow<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Pow, rhs)
    }
    /// Elementwise max; NaN propagates.
    pub fn maximum<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Maximum, rhs)
    }
    /// Elementwise min; NaN propagates.
    pub fn minimum<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Minimum, rhs)
    }
    /// 1 where equal, else 0 (a mask in the float dtype; f32 for u32 inputs).
    pub fn eq<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Eq, rhs)
    }
    pub fn ne<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Ne, rhs)
    }
    pub fn lt<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Lt, rhs)
    }
    pub fn le<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Le, rhs)
    }
    pub fn gt<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Gt, rhs)
    }
    pub fn ge<'a>(&self, rhs: impl Into<Operand<'a>>) -> Result<Tensor> {
        self.binary_operand(BinaryOp::Ge, rhs)
    }
}

// ------------------------------------------------------------------ where

/// where(cond, a, b): cond != 0 ? a : b, all three broadcast together; cond has no derivative.
pub struct Where;

impl Primitive for Where {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16_not_native(inputs)
    }
    fn name(&self) -> String {
        "where".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_same("where", &[x[0], x[1], x[2]])?;
        check_float("where", x[1])?;
        let s1 = broadcast_shapes("where", x[0].shape(), x[1].shape())?;
        Ok(OutSpec::new(&broadcast_shapes("where", &s1, x[2].shape())?, x[1].dtype()))
    }
    fn saves_input(&self, i: usize) -> bool {
        i == 0
    }
    fn fusible(&self) -> Option<crate::fusion::Fusible> {
        Some(crate::fusion::Fusible::Where)
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let [c, a, b] = [0, 1, 2].map(|i| x[i].broadcast_view(&out.shape).cpu_values());
        let v = c.iter().zip(a).zip(b).map(|((&k, x), y)| if k != 0.0 { x } else { y }).collect();
        Ok(out.cpu(CpuStorage::from_f64(v, out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let [c, a, b] = [0, 1, 2].map(|i| x[i].broadcast_view(&out.shape));
        Ok(out.gpu(ctx.where_(a.kdtype(), c.view(), a.view(), b.view(), &out.shape)?, x[1].device()))
    }
    /// d where(c, a, b) = [c] da + [not c] db
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let c = &node.input(0)?;
        let z = g.zeros_like()?;
        Ok(vec![None, Some(c.where_(g, &z)?), Some(c.where_(&z, g)?)])
    }
    /// jvp where(c, a, b) = where(c, ta, tb)
    fn jvp(&self, x: &[Tensor], y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        if t[1].is_none() && t[2].is_none() {
            return Ok(None);
        }
        let zero = y.detach().zeros_like()?;
        let ta = t[1].clone().unwrap_or_else(|| zero.clone());
        let tb = t[2].clone().unwrap_or(zero);
        Ok(Some(x[0].detach().where_(&ta, &tb)?))
    }
    /// batch: align the batch axis in front of the broadcast shape, then broadcast
    fn batch(&self, x: &[Tensor], batched: &[bool], _b: &Batch) -> Result<Tensor> {
        let rank = x.iter().zip(batched).map(|(t, &b)| t.rank() - b as usize).max().unwrap_or(0);
        let [c, a, f] = [0, 1, 2].map(|i| align_batched(&x[i], batched[i], rank));
        c?.where_(&a?, &f?)
    }
}

impl Tensor {
    /// `self != 0 ? on_true : on_false`, all three broadcast together (`self` is the mask).
    /// Either branch may be a number, in the other branch's dtype and device (f32 on the
    /// mask's device when both are numbers).
    pub fn where_<'a, 'b>(&self, on_true: impl Into<Operand<'a>>, on_false: impl Into<Operand<'b>>) -> Result<Tensor> {
        let (on_true, on_false) = (on_true.into(), on_false.into());
        let like = match (&on_true, &on_false) {
            (Operand::Tensor(t), _) | (_, Operand::Tensor(t)) => t.as_ref().clone(),
            _ => Tensor::zeros(&[], DType::F32, self.device())?,
        };
        let (on_true, on_false) = (on_true.to_tensor(&like)?, on_false.to_tensor(&like)?);
        self.where_tensors(&on_true, &on_false)
    }

    fn where_tensors(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        let name = "where";
        check_same(name, &[on_true, on_false])?;
        let cond =
            if self.dtype() == on_true.dtype() { self.detach() } else { self.to_dtype(on_true.dtype())?.detach() };
        check_same(name, &[&cond, on_true])?;
        check_float(name, on_true)?;
        bind(Arc::new(Where), &[&cond, on_true, on_false])
    }

    /// Clamp into [lo, hi] (NaN stays NaN), composed of maximum and minimum.
    pub fn clamp(&self, lo: f64, hi: f64) -> Result<Tensor> {
        if lo > hi {
            return Err(Error::Invalid { op: "clamp", msg: format!("lo {lo} > hi {hi}") });
        }
        let l = self.full_like(lo)?;
        let h = self.full_like(hi)?;
        self.maximum(&l)?.minimum(&h)
    }
}
