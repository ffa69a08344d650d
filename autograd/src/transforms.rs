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
use wgrad_core::__private::{enter_transform, make_dual, split_dual, track, with_grad};
use wgrad_core::__private::{register_backward, TransformGuard, TransformKind};
use wgrad_core::{DType, Error, Result, Tensor};

fn enter(kind: TransformKind) -> TransformGuard {
    register_backward(backward);
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
    let guard = enter(TransformKind::Reverse);
    let xv = track(x);
    let y = with_grad(|| f(&xv))?;
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
    let g = backward(&[(y.clone(), u.clone())], &[xv], guard.reverse_outside())?.pop().flatten();
    Ok((finish(y, &guard), finish(zeros_or(g, x)?, &guard)))
}

/// (f(x), grad f(x)) for a function returning one element.
pub fn value_and_grad<F>(f: F, x: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let guard = enter(TransformKind::Reverse);
    let xv = track(x);
    let y = with_grad(|| f(&xv))?;
    if y.numel() != 1 {
        return Err(Error::Invalid {
            op: "grad",
            msg: format!("f must return a single element, got shape {:?}; use vjp or jacobian", y.shape()),
        });
    }
    let seed = y.detach().ones_like()?;
    let g = backward(&[(y.clone(), seed)], &[xv], guard.reverse_outside())?.pop().flatten();
    Ok((finish(y, &guard), finish(zeros_or(g, x)?, &guard)))
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
    let guard = enter(TransformKind::Reverse);
    let tracked: Vec<Tensor> = params.iter().map(track).collect();
    let y = with_grad(|| f(&tracked))?;
    if y.numel() != 1 {
        return Err(Error::Invalid {
            op: "value_and_grad_many",
            msg: format!("f must return a single element, got shape {:?}", y.shape()),
        });
    }
    let seed = y.detach().ones_like()?;
    let gs = backward(&[(y.clone(), seed)], &tracked, guard.reverse_outside())?;
    let gs =
        gs.into_iter().zip(params).map(|(g, p)| Ok(finish(zeros_or(g, p)?, &guard))).collect::<Result<Vec<_>>>()?;
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

/// The identity basis of a space of `n` elements shaped `shape`: e_i for each i.
fn basis(n: usize, shape: &[usize], like: &Tensor) -> Result<Vec<Tensor>> {
    let dtype = if like.dtype() == DType::F64 { DType::F64 } else { DType::F32 };
    let eye = Tensor::eye(n, dtype, like.device())?;
    (0..n).map(|i| eye.narrow(0, i, 1)?.reshape(shape)?.to_dtype(like.dtype())).collect()
}

/// The Jacobian in forward mode, of shape f(x).shape ++ x.shape: one JVP per input
/// element (the vmap issue batches them into one pass).
pub fn jacfwd<F>(f: F, x: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let n = x.numel();
    let mut columns = Vec::with_capacity(n);
    let mut out_shape = None;
    for e in basis(n, x.shape(), x)? {
        let (y, jt) = jvp(&f, x, &e)?;
        out_shape.get_or_insert_with(|| y.shape().to_vec());
        columns.push(jt.unsqueeze(-1)?);
    }
    let Some(mut shape) = out_shape else {
        let mut shape = no_grad_shape(&f, x)?;
        shape.extend_from_slice(x.shape());
        return Tensor::zeros(&shape, x.dtype(), x.device());
    };
    shape.extend_from_slice(x.shape());
    Tensor::cat(&columns, -1)?.reshape(&shape)
}

fn no_grad_shape<F: Fn(&Tensor) -> Result<Tensor>>(f: &F, x: &Tensor) -> Result<Vec<usize>> {
    Ok(f(&x.detach())?.shape().to_vec())
}

/// The Jacobian in reverse mode, of shape f(x).shape ++ x.shape: `f` runs once, then one
/// backward pass per output element (the vmap issue batches them into one pass).
pub fn jacrev<F>(f: F, x: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let guard = enter(TransformKind::Reverse);
    let xv = track(x);
    let y = with_grad(|| f(&xv))?;
    let m = y.numel();
    let mut out_shape = y.shape().to_vec();
    out_shape.extend_from_slice(x.shape());
    if m == 0 {
        return Tensor::zeros(&out_shape, x.dtype(), x.device());
    }
    let mut rows = Vec::with_capacity(m);
    for seed in basis(m, y.shape(), &y)? {
        let g = backward(&[(y.clone(), seed)], std::slice::from_ref(&xv), guard.reverse_outside())?.pop().flatten();
        rows.push(zeros_or(g, x)?.unsqueeze(0)?);
    }
    let j = Tensor::cat(&rows, 0)?.reshape(&out_shape)?;
    Ok(finish(j, &guard))
}

/// The Jacobian, of shape f(x).shape ++ x.shape; reverse mode ([`jacrev`]).
pub fn jacobian<F>(f: F, x: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    jacrev(f, x)
}

/// The Hessian, of shape f(x).shape ++ x.shape ++ x.shape (a 3-D tensor for a
/// vector-valued f of a vector: one Hessian slice per output).
///
/// Computed as `jacrev(jacrev(f))`: until vmap batches the basis, each `jacfwd` column is
/// a full forward-and-backward pass with tangents, and the bench tool's W6 measures
/// `jacfwd(jacrev)` 2.0-2.4x slower than `jacrev(jacrev)` (one taped backward, then one
/// backward pass of it per element). Both give the same Hessian (tested).
pub fn hessian<F>(f: F, x: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    jacrev(|x| jacrev(&f, x), x)
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
