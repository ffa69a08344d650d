//! The backward walk: a topological order of the graph between the outputs and the
//! targets (iterative, so chains of any length work), one VJP per node, unbroadcast once
//! here, and cotangents freed as soon as they are consumed.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use wgrad_core::__private::with_grad;
use wgrad_core::no_grad;
use wgrad_core::{Error, Node, Result, Tensor};

/// Sum `g` (a broadcast, output-side cotangent) back to an input's `shape`.
pub fn unbroadcast(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    g.sum_to_shape(shape)
}

fn accumulate(grads: &mut HashMap<u64, Tensor>, id: u64, g: Tensor) -> Result<()> {
    let g = match grads.remove(&id) {
        Some(prev) => prev.add(&g)?,
        None => g,
    };
    grads.insert(id, g);
    Ok(())
}

/// Nodes reachable from `roots`, parents before children (iterative DFS post-order).
fn topo_order(roots: &[Arc<Node>]) -> Vec<Arc<Node>> {
    let mut order = Vec::new();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut stack: Vec<(Arc<Node>, usize)> = Vec::new();
    for r in roots {
        if seen.insert(r.id()) {
            stack.push((r.clone(), 0));
        }
        while let Some((node, next)) = stack.pop() {
            if next < node.parents.len() {
                stack.push((node.clone(), next + 1));
                if let Some(p) = &node.parents[next] {
                    if seen.insert(p.id()) {
                        stack.push((p.clone(), 0));
                    }
                }
            } else {
                order.push(node);
            }
        }
    }
    order
}

/// Cotangents of `targets` given (output, cotangent) pairs. With `create_graph` the
/// backward ops are recorded (so the result can be differentiated again); otherwise they
/// run without a graph. A target that the outputs do not depend on gets None.
pub fn backward(outputs: &[(Tensor, Tensor)], targets: &[Tensor], create_graph: bool) -> Result<Vec<Option<Tensor>>> {
    let run = || backward_inner(outputs, targets);
    if create_graph {
        with_grad(run)
    } else {
        no_grad(run)
    }
}

fn backward_inner(outputs: &[(Tensor, Tensor)], targets: &[Tensor]) -> Result<Vec<Option<Tensor>>> {
    let target_ids: Vec<u64> = targets
        .iter()
        .map(|t| {
            t.node()
                .map(|n| n.id())
                .ok_or_else(|| Error::Invalid { op: "backward", msg: "a target is not tracked".into() })
        })
        .collect::<Result<_>>()?;
    let mut grads: HashMap<u64, Tensor> = HashMap::new();
    let mut roots = Vec::new();
    for (y, u) in outputs {
        if u.shape() != y.shape() {
            return Err(Error::ShapeMismatch {
                op: "backward",
                lhs: y.shape().to_vec(),
                rhs: u.shape().to_vec(),
                msg: "the cotangent must have the output's shape".into(),
            });
        }
        if let Some(n) = y.node() {
            accumulate(&mut grads, n.id(), u.clone())?;
            roots.push(n.clone());
        }
    }
    let order = topo_order(&roots);
    // A node matters if a target is reachable from it.
    let mut relevant: HashSet<u64> = HashSet::new();
    for n in &order {
        let hit = target_ids.contains(&n.id()) || n.parents.iter().flatten().any(|p| relevant.contains(&p.id()));
        if hit {
            relevant.insert(n.id());
        }
    }
    let mut results: Vec<Option<Tensor>> = vec![None; targets.len()];
    for node in order.iter().rev() {
        if !relevant.contains(&node.id()) {
            continue;
        }
        let Some(g) = grads.remove(&node.id()) else {
            node.vjp_done();
            continue;
        };
        if let Some(pos) = target_ids.iter().position(|&t| t == node.id()) {
            results[pos] = Some(g.clone());
            if node.is_leaf() {
                continue;
            }
        }
        let needs_any = node.parents.iter().flatten().any(|p| relevant.contains(&p.id()));
        if !needs_any {
            node.vjp_done();
            continue;
        }
        let input_grads = node.op.vjp(node, &g)?;
        node.vjp_done();
        drop(g);
        for (i, gi) in input_grads.into_iter().enumerate() {
            let (Some(parent), Some(gi)) = (&node.parents[i], gi) else { continue };
            if !relevant.contains(&parent.id()) {
                continue;
            }
            let gi = unbroadcast(&gi, &node.input_shapes[i])?;
            accumulate(&mut grads, parent.id(), gi)?;
        }
    }
    Ok(results)
}
