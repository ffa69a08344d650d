//! VJPs of the factorization primitives, from the differentials of the notes.
use std::sync::Arc;
use wgrad_core::{Node, Result, Tensor};

/// X = A^-1 B: dX = A^-1 (dB - dA X), so B-bar = A^-T G and A-bar = -B-bar X^T.
pub(crate) fn solve(node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let a = node.input(0)?;
    let x = Node::output(node)?;
    let gb = a.t()?.solve_ex(g)?.0;
    let ga = node.parents[0].as_ref().map(|_| gb.matmul(&x.t()?)?.neg()).transpose()?;
    Ok(vec![ga, Some(gb)])
}

/// d log|det A| = <A^-T, dA>, so A-bar = g A^-T.
pub(crate) fn logabsdet(node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let a = node.input(0)?;
    let inv_t = a.inverse_ex()?.0.t()?;
    Ok(vec![Some(g.unsqueeze(-1)?.unsqueeze(-1)?.mul(&inv_t)?)])
}

/// A = L L^T: A-bar = sym(L^-T Phi(L^T L-bar) L^-1), Phi = lower triangle with half diagonal.
pub(crate) fn cholesky(node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let l = Node::output(node)?;
    let n = l.shape()[l.rank() - 1];
    let phi: Vec<f64> = (0..n * n).map(|i| if i % n < i / n { 1.0 } else if i % n == i / n { 0.5 } else { 0.0 }).collect();
    let phi = Tensor::from_slice(&phi, &[n, n], &wgrad_core::Device::Cpu)?.to_dtype(l.dtype())?.to_device(l.device())?;
    let p = l.t()?.matmul(g)?.mul(&phi)?;
    let lt = l.t()?;
    let y = lt.solve_ex(&p)?.0; // L^-T P
    let s = lt.solve_ex(&y.t()?)?.0.t()?; // L^-T P L^-1
    Ok(vec![Some(s.add(&s.t()?)?.mul_scalar(0.5)?)])
}
