//! The VJP table: one rule per primitive, written with differentiable Tensor ops (so the
//! gradients they produce can be differentiated again). Each rule returns the input
//! cotangents in the broadcast (output-side) shape; the engine unbroadcasts them.
mod conv;
mod elementwise;
mod index;
mod linalg;
mod linear;
mod movement;
mod reduce;

use std::sync::Arc;
use wgrad_core::{Node, Op, Result, Tensor};

/// Cotangents of a node's inputs (None: no gradient flows to that input) given the output cotangent `g`.
pub(crate) fn vjp(node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    match &node.op {
        Op::Leaf => Ok(vec![Some(g.clone())]),
        Op::Unary(op, s) => Ok(vec![Some(elementwise::unary(*op, *s, node, g)?)]),
        Op::Binary(op) => elementwise::binary(*op, node, g),
        Op::Where => elementwise::where_(node, g),
        Op::Reduce { kind, axes, keepdim } => Ok(vec![Some(reduce::reduce(*kind, axes, *keepdim, node, g)?)]),
        // argmax / argmin are piecewise constant: no gradient, by definition.
        Op::ArgReduce => Ok(vec![None]),
        Op::Matmul => linear::matmul(node, g),
        Op::Reshape | Op::Permute(_) | Op::BroadcastTo | Op::Narrow { .. } | Op::Contiguous | Op::Cat { .. } => {
            movement::vjp(&node.op, node, g)
        }
        Op::ToDtype => Ok(vec![Some(g.to_dtype(node.input_dtypes[0])?)]),
        Op::ToDevice(from) => Ok(vec![Some(g.to_device(from)?)]),
        Op::IndexSelect { axis } => index::index_select(*axis, node, g),
        Op::Gather { axis } => index::gather(*axis, node, g),
        Op::Solve => linalg::solve(node, g),
        Op::LogAbsDet => linalg::logabsdet(node, g),
        Op::Cholesky => linalg::cholesky(node, g),
        Op::Im2Col(geom) => conv::im2col(*geom, g),
        Op::Col2Im(geom) => conv::col2im(*geom, g),
        Op::Custom(op) => {
            let inputs = (0..node.saved_inputs.len()).map(|i| node.input(i).cloned()).collect::<Result<Vec<_>>>()?;
            op.vjp(&inputs, &Node::output(node)?, g)
        }
    }
}
