//! VJPs of the reductions.
use std::sync::Arc;
use wgrad_core::graph::ReduceKind;
use wgrad_core::{Node, Result, Tensor};

/// `g` with the reduced axes put back as size 1 (the keepdim shape).
fn keepdim(t: &Tensor, in_shape: &[usize], axes: &[usize], kept: bool) -> Result<Tensor> {
    if kept {
        return Ok(t.clone());
    }
    let shape: Vec<usize> = (0..in_shape.len()).map(|d| if axes.contains(&d) { 1 } else { in_shape[d] }).collect();
    t.reshape(&shape)
}

pub(crate) fn reduce(kind: ReduceKind, axes: &[usize], kept: bool, node: &Arc<Node>, g: &Tensor) -> Result<Tensor> {
    let in_shape = &node.input_shapes[0];
    let gk = keepdim(g, in_shape, axes, kept)?;
    match kind {
        // d sum(x) = sum(dx): the cotangent is broadcast back over the reduced axes
        ReduceKind::Sum => gk.broadcast_to(in_shape),
        // d max(x) = dx at the maxima, ties split evenly (same for min)
        ReduceKind::Max | ReduceKind::Min => {
            let x = node.input(0)?;
            let out = keepdim(&Node::output(node)?, in_shape, axes, kept)?;
            let mask = x.eq(&out)?;
            let ax: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
            let count = mask.sum(&ax, true)?;
            gk.mul(&mask)?.div(&count)
        }
    }
}
