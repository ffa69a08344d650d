//! The hosts of fused programs: deferred matmuls (whose stores run an elementwise DAG as
//! an epilogue) and deferred reductions (whose loads compute a pending input as a
//! prologue).
use super::plan::Plan;
use super::*;

/// A deferred matmul: its operands are materialized now (its kernel reads them as they
/// are), the product waits for its consumers.
pub(super) fn defer_matmul(
    ctx: Arc<Context>,
    operands_of: OperandsFn,
    inputs: &[Tensor],
    spec: &OutSpec,
) -> Result<Option<Tensor>> {
    let ins = inputs.iter().map(|t| t.materialized()).collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = ins.iter().collect();
    let operands = operands_of(&refs)?;
    if operands.k == 0 {
        return Ok(None);
    }
    let st = state();
    let mut cost = Cost::default();
    for t in [&operands.a, &operands.b] {
        union(&mut cost.buffers, &[leaf_id(t).0]);
    }
    let pending = Pending { op: Fusible::Matmul(operands_of), args: Vec::new(), matmul: Some(operands), cost };
    Ok(Some(pending_tensor(st, ctx, spec, pending)))
}

/// A deferred reduction: a pending input stays pending (the reduction will compute it as
/// it loads it), anything else is read as it is.
pub(super) fn defer_reduce(ctx: Arc<Context>, op: Fusible, x: &Tensor, spec: &OutSpec) -> Result<Option<Tensor>> {
    if x.shape().contains(&0) || x.rank() > MAX_RANK {
        return Ok(None);
    }
    let st = state();
    let arg = match x.storage() {
        Storage::Lazy(n) if n.is_pending_map() => Arg::Node(Edge::new(Arc::clone(n))),
        Storage::Lazy(n) => Arg::Leaf(materialized_locked(x, n)?),
        _ => Arg::Leaf(x.clone()),
    };
    let cost = cost_of(std::slice::from_ref(&arg));
    Ok(Some(pending_tensor(st, ctx, spec, Pending { op, args: vec![arg], matmul: None, cost })))
}

/// (op, axes, argument) of a pending reduction node.
pub(super) fn reduce_of(n: &Lazy) -> Option<(wgrad_kernels::ReduceOp, Vec<usize>, Arg)> {
    let p = crate::lock(&n.pending);
    let p = p.as_ref()?;
    match &p.op {
        Fusible::Reduce { op, axes } => Some((*op, axes.clone(), p.args[0].clone())),
        _ => None,
    }
}

/// Run a pending reduction: over its materialized input, or with its pending input's DAG
/// as the prologue of the reduction kernel (its values that something else holds are
/// written as they are loaded).
pub(super) fn run_reduce(
    n: &Arc<Lazy>,
    op: wgrad_kernels::ReduceOp,
    axes: &[usize],
    arg: Arg,
) -> Result<Arc<GpuBuffer>> {
    let device = Device::Gpu(n.ctx.clone());
    let input = match arg {
        Arg::Leaf(t) => t,
        Arg::Node(edge) => {
            let x = edge.into_arc();
            match try_prologue(&x, &device, |pro| {
                let walk = crate::Layout::contiguous(&x.shape).axes_last(axes);
                Ok(Some(n.ctx.reduce_fused(op, &walk.strides, &walk.shape, axes.len(), pro)?))
            })? {
                Some(buf) => return Ok(n.resolve(buf)),
                None => leaf_of(force_locked(&x)?, &x.shape, &device),
            }
        }
    };
    let pt = input.with_layout(input.layout().axes_last(axes));
    Ok(n.resolve(n.ctx.reduce(op, pt.view(), pt.shape(), axes.len())?))
}

/// A host kernel (`launch`: a reduction or a row softmax) over the pending value `x` that
/// computes x's DAG as it loads it; None where it does not fit (a matmul or reduction
/// inside, too many bindings or params, or the host declines): then x is materialized
/// first.
fn try_prologue(
    x: &Arc<Lazy>,
    device: &Device,
    launch: impl FnOnce(&wgrad_kernels::Epilogue) -> Result<Option<(GpuBuffer, Vec<GpuBuffer>)>>,
) -> Result<Option<GpuBuffer>> {
    if x.result.get().is_some() || x.shape.len() > MAX_RANK {
        return Ok(None);
    }
    let mut plan = Plan::new();
    plan.visit(x, device)?;
    if plan.acc.is_some() || plan.must_force.is_some() {
        return Ok(None);
    }
    // output 0 is the value reduced; x is written too when a tensor holds it or a pending
    // node besides this host reads it
    let root = plan.nodes.len() - 1;
    let mut outputs: Vec<usize> = plan.outputs().into_iter().filter(|&i| i != root).collect();
    if x.holders() > 0 || x.dependents() > 1 {
        outputs.push(root);
    }
    let buffers = plan.buffers();
    let words = wgrad_kernels::epilogue_param_words(x.shape.len(), plan.leaves.len(), plan.scalars.len());
    if (buffers + 1 + outputs.len()) as u32 > FUSED_MAX_BUFFERS || words > FUSED_PARAM_WORDS {
        return Ok(None);
    }
    let views: Vec<View> = plan.leaves.iter().map(|t| t.view()).collect();
    let mut out_steps = vec![plan.nodes[root].1];
    out_steps.extend(outputs.iter().map(|&i| plan.nodes[i].1));
    let pro = plan.program(&views, out_steps, &x.shape);
    let Some((out, extras)) = launch(&pro)? else { return Ok(None) };
    drop(pro);
    drop(views);
    plan.resolve(&outputs, extras);
    Ok(Some(out))
}

/// A deferred softmax over the last axis of a pending value (else None: it runs as it is,
/// on its materialized input): the row kernel will compute the value as it loads it.
pub(super) fn defer_softmax(ctx: Arc<Context>, axis: usize, x: &Tensor, spec: &OutSpec) -> Result<Option<Tensor>> {
    let n = x.shape().last().copied().unwrap_or(1);
    let Storage::Lazy(lazy) = x.storage() else { return Ok(None) };
    if axis + 1 != x.rank() || !lazy.is_pending_map() || x.numel() == 0 || !wgrad_kernels::softmax_rows_fit(n) {
        return Ok(None);
    }
    let st = state();
    let arg = Arg::Node(Edge::new(Arc::clone(lazy)));
    let cost = cost_of(std::slice::from_ref(&arg));
    Ok(Some(pending_tensor(
        st,
        ctx,
        spec,
        Pending { op: Fusible::Softmax { axis }, args: vec![arg], matmul: None, cost },
    )))
}

/// The argument of a pending softmax node.
pub(super) fn softmax_of(n: &Lazy) -> Option<Arg> {
    let p = crate::lock(&n.pending);
    let p = p.as_ref()?;
    matches!(p.op, Fusible::Softmax { .. }).then(|| p.args[0].clone())
}

/// Run a pending softmax: the row kernel computing its pending input as it loads it, or
/// over the input materialized.
pub(super) fn run_softmax(n: &Arc<Lazy>, arg: Arg) -> Result<Arc<GpuBuffer>> {
    let Arg::Node(x) = arg else {
        return Err(crate::Error::Internal { op: "fusion", msg: "a deferred softmax reads a pending value".into() });
    };
    let x = x.into_arc();
    let device = Device::Gpu(n.ctx.clone());
    let len = x.shape.last().copied().unwrap_or(1);
    let rows = x.shape.iter().product::<usize>() / len;
    let buf = match try_prologue(&x, &device, |pro| Ok(n.ctx.softmax_rows_fused(rows, len, pro)?))? {
        Some(buf) => buf,
        None => {
            let input = force_locked(&x)?;
            let strides = [len, 1];
            let view = View { buffer: &input, offset: 0, strides: &strides };
            n.ctx.softmax_rows(view, rows, len)?.ok_or_else(|| crate::Error::Invalid {
                op: "softmax",
                msg: format!("rows of {len} are past the row kernel's limit"),
            })?
        }
    };
    Ok(n.resolve(buf))
}

/// The operands of a pending matmul node.
pub(super) fn matmul_of(n: &Lazy) -> Option<GpuOperands> {
    crate::lock(&n.pending).as_ref().and_then(|p| p.matmul.clone())
}

/// Run a pending matmul node alone (no epilogue).
pub(super) fn run_matmul(n: &Arc<Lazy>, op: &GpuOperands) -> Result<Arc<GpuBuffer>> {
    Ok(n.resolve(n.ctx.matmul(op.a.view(), op.b.view(), &op.batch, op.m, op.k, op.n)?))
}
