//! VJPs of the index primitives, written as products with one-hot matrices so that they
//! are deterministic (no atomics) and differentiable again.
use std::sync::Arc;
use wgrad_core::{Node, Result, Tensor};

/// x-bar = g moved so `axis` is last, times one_hot(idx, n): row j gathers every g entry picked from j.
pub(crate) fn index_select(axis: usize, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let idx = node.input(1)?;
    let n = node.input_shapes[0][axis];
    let oh = idx.one_hot(n, g.dtype())?;
    let last = g.rank() as isize - 1;
    let gx = g.transpose(axis as isize, last)?.matmul(&oh)?.transpose(axis as isize, last)?;
    Ok(vec![Some(gx), None])
}

/// x-bar[.., j, ..] = sum_k [idx[.., k, ..] = j] g[.., k, ..] along `axis`.
pub(crate) fn gather(axis: usize, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let idx = node.input(1)?;
    let n = node.input_shapes[0][axis];
    let oh = idx.one_hot(n, g.dtype())?;
    let summed = g.unsqueeze(-1)?.mul(&oh)?.sum(&[axis as isize], false)?;
    // summed: x's axes without `axis`, then n last; move n back to position `axis`.
    let r = summed.rank();
    let perm: Vec<usize> = (0..r).map(|p| if p < axis { p } else if p == axis { r - 1 } else { p - 1 }).collect();
    Ok(vec![Some(summed.permute(&perm)?), None])
}
