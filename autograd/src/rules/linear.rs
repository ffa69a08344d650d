//! VJP of matmul.
use std::sync::Arc;
use wgrad_core::{Node, Result, Tensor};

/// d(A B) = dA B + A dB, so A-bar = G B^T and B-bar = A^T G (batch dims unbroadcast by the engine).
pub(crate) fn matmul(node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let (a, b) = (node.input(0)?, node.input(1)?);
    let ga = node.parents[0].as_ref().map(|_| g.matmul(&b.t()?)).transpose()?;
    let gb = node.parents[1].as_ref().map(|_| a.t()?.matmul(g)).transpose()?;
    Ok(vec![ga, gb])
}
