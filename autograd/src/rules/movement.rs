//! VJPs of the layout primitives: each moves the cotangent back to the input's layout.
use std::sync::Arc;
use wgrad_core::{Node, Op, Result, Tensor};

pub(crate) fn vjp(op: &Op, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let in_shape = &node.input_shapes[0];
    let one = |t: Tensor| Ok(vec![Some(t)]);
    match op {
        // reshape is linear and invertible: x-bar = reshape(g, x.shape)
        Op::Reshape => one(g.reshape(in_shape)?),
        // permute by the inverse permutation
        Op::Permute(perm) => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            one(g.permute(&inv)?)
        }
        // broadcast_to: the engine's unbroadcast sums g back to x.shape
        Op::BroadcastTo | Op::Contiguous => one(g.clone()),
        // narrow: g lands in its window of a zero tensor of x's shape
        Op::Narrow { axis, start } => {
            let len = g.shape()[*axis];
            let mut parts = Vec::new();
            let zeros = |n: usize| {
                let mut s = in_shape.clone();
                s[*axis] = n;
                Tensor::zeros(&s, g.dtype(), g.device())
            };
            if *start > 0 {
                parts.push(zeros(*start)?);
            }
            parts.push(g.clone());
            let after = in_shape[*axis] - start - len;
            if after > 0 {
                parts.push(zeros(after)?);
            }
            one(Tensor::cat(&parts, *axis as isize)?)
        }
        // cat: each input gets its window of g
        Op::Cat { axis } => {
            let mut start = 0;
            let mut out = Vec::with_capacity(node.input_shapes.len());
            for s in &node.input_shapes {
                out.push(Some(g.narrow(*axis as isize, start, s[*axis])?));
                start += s[*axis];
            }
            Ok(out)
        }
        _ => unreachable!("movement::vjp is only called for movement ops"),
    }
}
