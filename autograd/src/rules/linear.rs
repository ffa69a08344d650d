//! VJP of matmul.
use std::sync::Arc;
use wgrad_core::{Node, Result, Tensor};

/// d(A B) = dA B + A dB, so A-bar = G B^T and B-bar = A^T G (batch dims unbroadcast by the engine).
///
/// Each cotangent takes its primal's memory layout: for a transposed matrix (e.g. the
/// `w.t()` of a linear layer) A-bar = (B G^T)^T is computed as a contiguous product and
/// returned transposed, so that the transpose's own VJP hands a contiguous gradient to the
/// weight (no copy before the optimizer). Same products, same cost.
pub(crate) fn matmul(node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let (a, b) = (node.input(0)?, node.input(1)?);
    let matrices = a.rank() == 2 && b.rank() == 2;
    let ga = node.parents[0]
        .as_ref()
        .map(|_| if matrices && is_transposed(a)? { b.matmul(&g.t()?)?.t() } else { g.matmul(&b.t()?) })
        .transpose()?;
    let gb = node.parents[1]
        .as_ref()
        .map(|_| if matrices && is_transposed(b)? { g.t()?.matmul(a)?.t() } else { a.t()?.matmul(g) })
        .transpose()?;
    Ok(vec![ga, gb])
}

/// A matrix stored column-major (its transpose is contiguous, itself is not).
fn is_transposed(x: &Tensor) -> Result<bool> {
    Ok(!x.layout().is_contiguous() && x.t()?.layout().is_contiguous())
}
