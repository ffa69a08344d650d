//! Function transforms in the JAX style: differentiable functions are plain closures
//! over [`Tensor`].
//!
//! - Reverse mode (`grad`, `vjp`, `jacrev`): track the input, run `f` once recording a
//!   graph, walk it backwards.
//! - Forward mode (`jvp`, `jacfwd`): attach a tangent to the input at a fresh level, run
//!   `f` once; every primitive pushes the tangent through its JVP rule. Levels keep
//!   nested perturbations apart.
//! - `hvp` is forward-over-reverse: the JVP of `grad f` along v, one forward and one
//!   backward pass carrying tangents, with no second tape.
//!
//! Nesting: every transform takes a level. A reverse transform inside another reverse
//! transform tapes its own backward pass, so the outer one differentiates through it;
//! forward-mode tangents flow through everything, backward passes included.
use crate::engine::backward;
use wgrad_core::__private::{batch_levels, batched, lift, physical_at, register_backward, rewrap, vmap_levels_below};
use wgrad_core::__private::{enter_transform, make_dual, split_dual, track, with_grad};
use wgrad_core::__private::{TransformGuard, TransformKind};
use wgrad_core::{Error, Result, Tensor};

fn enter(kind: TransformKind) -> TransformGuard {
    register_backward(backward);
    crate::interpreters::register();
    enter_transform(kind)
}

/// A transform's result: plain at top level, with its node and tangents when an
/// enclosing transform must see through it.
fn finish(t: Tensor, guard: &TransformGuard) -> Tensor {
    if guard.is_nested() {
        t
    } else {
        t.detach()
    }
}

/// The vmap levels a reverse transform runs under: its tape records every example's axis
/// explicitly (see [`lift`]), so that per-example gradients stay per example.
type Levels = Vec<(u64, usize)>;

/// Enter reverse mode: the guard and the vmap levels outside it.
fn enter_reverse() -> (TransformGuard, Levels) {
    let guard = enter(TransformKind::Reverse);
    let levels = vmap_levels_below(guard.level());
    (guard, levels)
}

/// The input of a reverse transform: (the tracked physical tensor the tape starts from,
/// the logical view `f` gets).
fn track_input(x: &Tensor, levels: &Levels) -> Result<(Tensor, Tensor)> {
    let tracked = track(&lift(x, levels)?);
    let logical = rewrap(&tracked, levels);
    Ok((tracked, logical))
}

/// Run `f` on tracked copies of `xs` for a reverse transform under the vmap levels
/// `outer`: (the tracked physical inputs, f's output, the levels the tape made explicit).
/// A level is made explicit (lifted) where an input or the output is batched at it:
/// first where the inputs are; if the output turns out batched at more (f read batched
/// values of its own, as in per-example gradients of shared weights), once more with
/// those lifted too. Levels that only tangents carry stay implicit: the tape then holds
/// the unbatched primal once (jacfwd of jacrev batches only its tangents).
fn run_taped(
    xs: &[Tensor],
    outer: &Levels,
    f: &dyn Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<(Vec<Tensor>, Tensor, Levels)> {
    let wanted = |ts: &[&Tensor], have: &Levels| -> Levels {
        let hit: Vec<u64> = ts.iter().flat_map(|t| batch_levels(t)).collect();
        outer.iter().filter(|(l, _)| hit.contains(l) || have.iter().any(|(h, _)| h == l)).cloned().collect()
    };
    let mut used = wanted(&xs.iter().collect::<Vec<_>>(), &Vec::new());
    loop {
        let (tracked, inputs): (Vec<Tensor>, Vec<Tensor>) =
            xs.iter().map(|x| track_input(x, &used)).collect::<Result<Vec<_>>>()?.into_iter().unzip();
        let y = with_grad(|| f(&inputs))?;
        let need = wanted(&[&y], &used);
        if need.len() == used.len() {
            return Ok((tracked, y, used));
        }
        used = need;
    }
}

fn zeros_or(g: Option<Tensor>, like: &Tensor) -> Result<Tensor> {
    match g {
        Some(g) => Ok(g),
        None => like.detach().zeros_like(),
    }
}

/// (f(x), J(x)^T u) for any output shape; `u` has f(x)'s shape.
pub fn vjp<F>(f: F, x: &Tensor, u: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let (guard, outer) = enter_reverse();
    let (mut xv, y, levels) = run_taped(std::slice::from_ref(x), &outer, &|xs| f(&xs[0]))?;
    let xv = xv.remove(0);
    if u.shape() != y.shape() {
        return Err(Error::ShapeMismatch {
            op: "vjp",
            lhs: y.shape().to_vec(),
            rhs: u.shape().to_vec(),
            msg: "the cotangent must have f(x)'s shape".into(),
        });
    }
    if u.device() != y.device() {
        return Err(Error::DeviceMismatch { op: "vjp", lhs: y.device().name(), rhs: u.device().name() });
    }
    let (yp, up) = (lift(&y, &levels)?, lift(u, &levels)?);
    let g = backward(&[(yp, up)], std::slice::from_ref(&xv), guard.reverse_outside())?.pop().flatten();
    let g = rewrap(&zeros_or(g, &xv)?, &levels);
    Ok((finish(y, &guard), finish(g, &guard)))
}

/// (f(x), grad f(x)) for a function returning one element.
pub fn value_and_grad<F>(f: F, x: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let (guard, outer) = enter_reverse();
    let (mut xv, y, levels) = run_taped(std::slice::from_ref(x), &outer, &|xs| f(&xs[0]))?;
    let xv = xv.remove(0);
    if y.numel() != 1 {
        return Err(Error::NotScalar { op: "grad", shape: y.shape().to_vec(), hint: "; use vjp or jacobian" });
    }
    let yp = lift(&y, &levels)?;
    let seed = yp.detach().ones_like()?;
    let g = backward(&[(yp, seed)], std::slice::from_ref(&xv), guard.reverse_outside())?.pop().flatten();
    let g = rewrap(&zeros_or(g, &xv)?, &levels);
    Ok((finish(y, &guard), finish(g, &guard)))
}

/// The gradient of a function returning one element; it has x's shape.
pub fn grad<F>(f: F, x: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    Ok(value_and_grad(f, x)?.1)
}

/// For training: (f(params), d f / d params[i] for each i). `f` gets the tracked
/// parameters in order and returns a one-element loss.
pub fn value_and_grad_many<F>(f: F, params: &[Tensor]) -> Result<(Tensor, Vec<Tensor>)>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    let (guard, outer) = enter_reverse();
    let (tracked, y, levels) = run_taped(params, &outer, &|ps| f(ps))?;
    if y.numel() != 1 {
        return Err(Error::NotScalar { op: "value_and_grad_many", shape: y.shape().to_vec(), hint: "" });
    }
    let yp = lift(&y, &levels)?;
    let seed = yp.detach().ones_like()?;
    let gs = backward(&[(yp, seed)], &tracked, guard.reverse_outside())?;
    let gs = gs
        .into_iter()
        .zip(&tracked)
        .map(|(g, p)| Ok(finish(rewrap(&zeros_or(g, p)?, &levels), &guard)))
        .collect::<Result<Vec<_>>>()?;
    Ok((finish(y, &guard), gs))
}

/// Errs unless the tangent `t` fits the primal `x` (shape, dtype, device).
fn check_tangent(op: &'static str, x: &Tensor, t: &Tensor) -> Result<()> {
    if t.shape() != x.shape() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape().to_vec(),
            rhs: t.shape().to_vec(),
            msg: "the tangent must have x's shape".into(),
        });
    }
    if t.dtype() != x.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: t.dtype() });
    }
    if t.device() != x.device() {
        return Err(Error::DeviceMismatch { op, lhs: x.device().name(), rhs: t.device().name() });
    }
    Ok(())
}

/// (f(x), J(x) t) in forward mode: `f` runs once with the tangent attached to x, and
/// every primitive pushes it through its JVP rule.
pub fn jvp<F>(f: F, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    check_tangent("jvp", x, t)?;
    let guard = enter(TransformKind::Forward);
    let level = guard.level();
    let y = f(&make_dual(x, level, t))?;
    let (primal, tangent) = split_dual(&y, level);
    let tangent = zeros_or(tangent, &primal)?;
    Ok((finish(primal, &guard), finish(tangent, &guard)))
}

/// The identity basis of a space of `n` elements shaped `shape`: [n] ++ shape, row i = e_i.
fn basis(n: usize, shape: &[usize], like: &Tensor) -> Result<Tensor> {
    let mut s = vec![n];
    s.extend_from_slice(shape);
    Tensor::eye(n, like.dtype(), like.device())?.reshape(&s)
}

/// Rows [start, start + chunk) of a basis, for each chunk.
fn chunks(n: usize, chunk: Option<usize>) -> impl Iterator<Item = (usize, usize)> {
    let chunk = chunk.unwrap_or(n).max(1);
    (0..n).step_by(chunk).map(move |start| (start, chunk.min(n - start)))
}

/// The Jacobian in forward mode, of shape f(x).shape ++ x.shape: one vmapped JVP over
/// the identity basis of the input (one batched pass).
pub fn jacfwd<F>(f: F, x: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    jacfwd_chunked(f, x, None)
}

/// [`jacfwd`] in ceil(x.numel() / chunk) batched passes of at most `chunk` tangents each
/// (None: one pass), to bound memory.
pub fn jacfwd_chunked<F>(f: F, x: &Tensor, chunk: Option<usize>) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let n = x.numel();
    if n == 0 {
        let mut shape = f(&x.detach())?.shape().to_vec();
        shape.extend_from_slice(x.shape());
        return Tensor::zeros(&shape, x.dtype(), x.device());
    }
    let eye = basis(n, x.shape(), x)?;
    let parts = chunks(n, chunk)
        .map(|(start, len)| vmap(|t| Ok(jvp(&f, x, t)?.1), &eye.narrow(0, start, len)?, 0, 0))
        .collect::<Result<Vec<_>>>()?;
    let columns = Tensor::cat(&parts, 0)?; // [n] ++ f(x).shape
    let mut shape = columns.shape()[1..].to_vec();
    shape.extend_from_slice(x.shape());
    move_axis(&columns, 0, columns.rank() - 1)?.reshape(&shape)
}

/// The Jacobian in reverse mode, of shape f(x).shape ++ x.shape: `f` runs once, then one
/// vmapped VJP over the identity basis of the output (one batched backward pass).
pub fn jacrev<F>(f: F, x: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    jacrev_chunked(f, x, None)
}

/// [`jacrev`] in ceil(f(x).numel() / chunk) batched backward passes of at most `chunk`
/// cotangents each (None: one pass), to bound memory.
pub fn jacrev_chunked<F>(f: F, x: &Tensor, chunk: Option<usize>) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let (guard, outer) = enter_reverse();
    let (mut xv, y, levels) = run_taped(std::slice::from_ref(x), &outer, &|xs| f(&xs[0]))?;
    let xv = xv.remove(0);
    let yp = lift(&y, &levels)?;
    let m = y.numel();
    let mut out_shape = y.shape().to_vec();
    out_shape.extend_from_slice(x.shape());
    if m == 0 {
        return Tensor::zeros(&out_shape, x.dtype(), x.device());
    }
    let eye = basis(m, y.shape(), &y)?;
    let create_graph = guard.reverse_outside();
    let pullback = |u: &Tensor| -> Result<Tensor> {
        let g = backward(&[(yp.clone(), lift(u, &levels)?)], std::slice::from_ref(&xv), create_graph)?.pop().flatten();
        zeros_or(g, &xv)
    };
    let parts = chunks(m, chunk)
        .map(|(start, len)| vmap(pullback, &eye.narrow(0, start, len)?, 0, 0))
        .collect::<Result<Vec<_>>>()?;
    // [m] ++ (one axis per outer vmap level) ++ x.shape: those axes go in front again
    let rows = Tensor::cat(&parts, 0)?;
    let k = levels.len();
    let perm: Vec<usize> = (1..=k).chain(std::iter::once(0)).chain(k + 1..rows.rank()).collect();
    let mut physical_shape: Vec<usize> = rows.shape()[1..=k].to_vec();
    physical_shape.extend_from_slice(&out_shape);
    let j = rows.permute(&perm)?.reshape(&physical_shape)?;
    Ok(finish(rewrap(&j, &levels), &guard))
}

/// The Jacobian, of shape f(x).shape ++ x.shape; reverse mode ([`jacrev`]).
pub fn jacobian<F>(f: F, x: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    jacrev(f, x)
}

/// The Hessian, of shape f(x).shape ++ x.shape ++ x.shape (a 3-D tensor for a
/// vector-valued f of a vector: one Hessian slice per output): `jacfwd(jacrev(f))`, one
/// batched forward-over-reverse pass over the basis of x.
pub fn hessian<F>(f: F, x: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    jacfwd(|x| jacrev(&f, x), x)
}

/// The Hessian-vector product H(x) v, forward-over-reverse: the JVP of x -> grad f(x)
/// along v. One forward and one backward pass carry the tangent; no second tape, and H
/// is never formed.
pub fn hvp<F>(f: F, x: &Tensor, v: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    check_tangent("hvp", x, v)?;
    Ok(jvp(|x| grad(&f, x), x, v)?.1)
}

/// Map `f` over axis `in_axis` of `x` and stack the results along `out_axis`: the
/// batched version of `f`, run once on every example together. Inside `f`, `x` looks like
/// one example (its shape lacks the mapped axis); every op maps to its batching rule.
///
/// Rules for `f`: it must not read a batched tensor back (`to_vec`, `to_scalar`: an
/// error, since host control flow would depend on one example), nor keep one past the
/// call (using it later is an error). Tensors made inside `f` (`zeros`, `randn`, ...)
/// are shared by every example: a random op draws one sample for all of them.
pub fn vmap<F, O>(f: F, x: &Tensor, in_axis: usize, out_axis: usize) -> Result<O>
where
    F: Fn(&Tensor) -> Result<O>,
    O: VmapOutput,
{
    vmap_many(|xs| f(&xs[0]), std::slice::from_ref(x), &[Some(in_axis)], out_axis)
}

/// [`vmap`] over several inputs: input i is mapped over axis `in_axes[i]`, or shared by
/// every example when that is None. All mapped axes must have one size.
/// `f` may return one tensor, a `Vec<Tensor>` or a pair: every output gets the examples on
/// `out_axis` (per-example gradients of a weight and a bias in one call).
pub fn vmap_many<F, O>(f: F, xs: &[Tensor], in_axes: &[Option<usize>], out_axis: usize) -> Result<O>
where
    F: Fn(&[Tensor]) -> Result<O>,
    O: VmapOutput,
{
    if xs.len() != in_axes.len() {
        return Err(Error::Invalid { op: "vmap", msg: format!("{} inputs but {} axes", xs.len(), in_axes.len()) });
    }
    let mut size = None;
    for (x, axis) in xs.iter().zip(in_axes) {
        let Some(a) = *axis else { continue };
        if a >= x.rank() {
            return Err(Error::AxisOutOfRange { op: "vmap", axis: a as isize, rank: x.rank() });
        }
        match size {
            None => size = Some((x.shape()[a], x.shape().to_vec())),
            Some((n, ref first)) if n != x.shape()[a] => {
                return Err(Error::ShapeMismatch {
                    op: "vmap",
                    lhs: first.clone(),
                    rhs: x.shape().to_vec(),
                    msg: format!("the mapped axes have sizes {n} and {}", x.shape()[a]),
                })
            }
            _ => {}
        }
    }
    let Some((size, _)) = size else {
        return Err(Error::Invalid { op: "vmap", msg: "no input is mapped (every axis is None)".into() });
    };
    let guard = enter(TransformKind::Vmap { size });
    let level = guard.level();
    let inputs = xs
        .iter()
        .zip(in_axes)
        .map(|(x, axis)| match *axis {
            Some(a) => Ok(batched(level, move_axis(x, a, 0)?)),
            None => Ok(x.clone()),
        })
        .collect::<Result<Vec<_>>>()?;
    let y = f(&inputs)?;
    y.unbatch(&|y| unbatch_one(y, level, size, out_axis))
}

/// The stacked result of one output of vmap's `f`: the examples of `level` on `out_axis`.
fn unbatch_one(y: Tensor, level: u64, size: usize, out_axis: usize) -> Result<Tensor> {
    let physical = match physical_at(&y, level) {
        Some(p) => p,
        // an output that does not depend on the mapped inputs is the same for every example
        None => {
            let mut shape = vec![size];
            shape.extend_from_slice(y.shape());
            y.broadcast_to(&shape)?
        }
    };
    if out_axis >= physical.rank() {
        return Err(Error::AxisOutOfRange { op: "vmap", axis: out_axis as isize, rank: y.rank() + 1 });
    }
    move_axis(&physical, 0, out_axis)
}

/// What vmap's `f` may return: each tensor in it is stacked over the examples.
pub trait VmapOutput: Sized {
    fn unbatch(self, one: &dyn Fn(Tensor) -> Result<Tensor>) -> Result<Self>;
}

impl VmapOutput for Tensor {
    fn unbatch(self, one: &dyn Fn(Tensor) -> Result<Tensor>) -> Result<Self> {
        one(self)
    }
}

impl VmapOutput for Vec<Tensor> {
    fn unbatch(self, one: &dyn Fn(Tensor) -> Result<Tensor>) -> Result<Self> {
        self.into_iter().map(one).collect()
    }
}

impl VmapOutput for (Tensor, Tensor) {
    fn unbatch(self, one: &dyn Fn(Tensor) -> Result<Tensor>) -> Result<Self> {
        Ok((one(self.0)?, one(self.1)?))
    }
}

/// `x` with axis `from` moved to position `to` (a view).
fn move_axis(x: &Tensor, from: usize, to: usize) -> Result<Tensor> {
    if from == to {
        return Ok(x.clone());
    }
    let mut perm: Vec<usize> = (0..x.rank()).filter(|&d| d != from).collect();
    perm.insert(to, from);
    x.permute(&perm)
}
