//! Function transforms in the JAX style: differentiable functions are plain closures
//! over [`Tensor`]. Reverse mode throughout; `jvp` is the VJP of the VJP (the VJP is
//! linear in its cotangent, so differentiating u -> J^T u against t gives J t).
//!
//! Nesting: each transform tracks its input with a fresh node whose parent is the
//! input's own node. When a transform runs inside another, its backward pass is
//! recorded, so the outer transform differentiates through it (any order).
use crate::engine::backward;
use wgrad_core::graph::{enter_transform, track, with_grad};
use wgrad_core::{DType, Error, Result, Tensor};

fn finish(t: Tensor, depth: usize) -> Tensor {
    if depth == 1 {
        t.detach()
    } else {
        t
    }
}

fn zeros_or(g: Option<Tensor>, like: &Tensor) -> Result<Tensor> {
    match g {
        Some(g) => Ok(g),
        None => like.zeros_like(),
    }
}

/// (f(x), J(x)^T u) for any output shape; `u` has f(x)'s shape.
pub fn vjp<F>(f: F, x: &Tensor, u: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let (_guard, depth) = enter_transform();
    let xv = track(x);
    let y = with_grad(|| f(&xv))?;
    if u.shape() != y.shape() {
        return Err(Error::ShapeMismatch { op: "vjp", lhs: y.shape().to_vec(), rhs: u.shape().to_vec(), msg: "the cotangent must have f(x)'s shape".into() });
    }
    if u.device() != y.device() {
        return Err(Error::DeviceMismatch { op: "vjp", lhs: y.device().name(), rhs: u.device().name() });
    }
    let g = backward(&[(y.clone(), u.clone())], &[xv], depth > 1)?.pop().flatten();
    Ok((finish(y, depth), finish(zeros_or(g, x)?, depth)))
}

/// (f(x), grad f(x)) for a function returning one element.
pub fn value_and_grad<F>(f: F, x: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let (_guard, depth) = enter_transform();
    let xv = track(x);
    let y = with_grad(|| f(&xv))?;
    if y.numel() != 1 {
        return Err(Error::Invalid { op: "grad", msg: format!("f must return a single element, got shape {:?}; use vjp or jacobian", y.shape()) });
    }
    let seed = y.detach().ones_like()?;
    let g = backward(&[(y.clone(), seed)], &[xv], depth > 1)?.pop().flatten();
    Ok((finish(y, depth), finish(zeros_or(g, x)?, depth)))
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
    let (_guard, depth) = enter_transform();
    let tracked: Vec<Tensor> = params.iter().map(track).collect();
    let y = with_grad(|| f(&tracked))?;
    if y.numel() != 1 {
        return Err(Error::Invalid { op: "value_and_grad_many", msg: format!("f must return a single element, got shape {:?}", y.shape()) });
    }
    let seed = y.detach().ones_like()?;
    let gs = backward(&[(y.clone(), seed)], &tracked, depth > 1)?;
    let gs = gs.into_iter().zip(params).map(|(g, p)| Ok(finish(zeros_or(g, p)?, depth))).collect::<Result<Vec<_>>>()?;
    Ok((finish(y, depth), gs))
}

/// (f(x), J(x) t), computed as the VJP of u -> J(x)^T u (reverse mode twice).
pub fn jvp<F>(f: F, x: &Tensor, t: &Tensor) -> Result<(Tensor, Tensor)>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    if t.shape() != x.shape() {
        return Err(Error::ShapeMismatch { op: "jvp", lhs: x.shape().to_vec(), rhs: t.shape().to_vec(), msg: "the tangent must have x's shape".into() });
    }
    if t.device() != x.device() {
        return Err(Error::DeviceMismatch { op: "jvp", lhs: x.device().name(), rhs: t.device().name() });
    }
    let (_guard, depth) = enter_transform();
    let y = with_grad(|| f(x))?;
    let u0 = y.detach().zeros_like()?;
    // jt = d/du <J^T u, t> = J t; run as the VJP of u -> J^T u with cotangent t.
    let (_, jt) = vjp(|u| Ok(vjp(&f, x, u)?.1), &u0, t)?;
    Ok((finish(y, depth), finish(jt, depth)))
}

/// The Jacobian, of shape f(x).shape ++ x.shape: one VJP per output element.
pub fn jacobian<F>(f: F, x: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    let (_guard, depth) = enter_transform();
    let xv = track(x);
    let y = with_grad(|| f(&xv))?;
    let m = y.numel();
    let mut out_shape = y.shape().to_vec();
    out_shape.extend_from_slice(x.shape());
    if m == 0 {
        return Tensor::zeros(&out_shape, x.dtype(), x.device());
    }
    let eye: Vec<f64> = (0..m * m).map(|i| if i / m == i % m { 1.0 } else { 0.0 }).collect();
    let eye = match y.dtype() {
        DType::F64 => Tensor::from_slice(&eye, &[m, m], y.device())?,
        _ => Tensor::from_slice(&eye.iter().map(|&v| v as f32).collect::<Vec<_>>(), &[m, m], y.device())?,
    };
    let mut rows = Vec::with_capacity(m);
    for i in 0..m {
        let seed = eye.narrow(0, i, 1)?.reshape(y.shape())?;
        let g = backward(&[(y.clone(), seed)], std::slice::from_ref(&xv), depth > 1)?.pop().flatten();
        rows.push(zeros_or(g, x)?.unsqueeze(0)?);
    }
    let j = Tensor::cat(&rows, 0)?.reshape(&out_shape)?;
    Ok(finish(j, depth))
}

/// The Hessian, of shape f(x).shape ++ x.shape ++ x.shape (a 3-D tensor for a
/// vector-valued f of a vector: one Hessian slice per output).
pub fn hessian<F>(f: F, x: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    jacobian(|x| jacobian(&f, x), x)
}

/// The Hessian-vector product H(x) v = grad(x -> <grad f(x), v>), never forming H.
pub fn hvp<F>(f: F, x: &Tensor, v: &Tensor) -> Result<Tensor>
where
    F: Fn(&Tensor) -> Result<Tensor>,
{
    if v.shape() != x.shape() {
        return Err(Error::ShapeMismatch { op: "hvp", lhs: x.shape().to_vec(), rhs: v.shape().to_vec(), msg: "v must have x's shape".into() });
    }
    grad(|x| grad(&f, x)?.mul(v)?.sum_all(), x)
}
