//! The hosts of fused programs, and the one trait through which a primitive declares
//! itself one ([`FusionHost`], implemented in the primitive's own block: matmul in
//! ops/matmul.rs, reductions and softmax in ops/reduce.rs). Fusion keeps the DAG, the plan
//! and the cost rules here; a host keeps its kernels.
use super::plan::Plan;
use super::*;

/// How a host fuses with the elementwise ops around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// Its store runs the DAG that reads its result (a matrix product: bias, activation,
    /// residual, masks).
    Epilogue,
    /// Its loads compute its one pending input (a reduction: sum(x * y), mean((a - b)^2);
    /// a row softmax: its row max and sum read the producer).
    Prologue,
}

/// A primitive whose GPU kernel runs pending elementwise work inside it. The primitive's
/// [`crate::Primitive::fusible`] returns [`Fusible::Host`] with it; fusion then defers the
/// op and, when the value is needed, plans the DAG around it and calls back here to
/// launch. An epilogue host implements `operands` and `launch_product`; a prologue host
/// `defers`, `launch` and `launch_with_prologue`.
pub trait FusionHost: Send + Sync {
    /// The name fusion's errors use.
    fn name(&self) -> &'static str;
    fn kind(&self) -> HostKind;
    /// Epilogue: what its kernel reads, laid out from the (materialized) inputs at the
    /// call; the pending node keeps it.
    fn operands(&self, inputs: &[&Tensor]) -> Result<GpuOperands> {
        let _ = inputs;
        Err(host_error(self.name(), "operands"))
    }
    /// Epilogue: the product alone (`epilogue` None; always Some), or with `epilogue`
    /// run in its store: the program's outputs, or None where this product cannot take
    /// one (then it runs alone and the program after it).
    fn launch_product(
        &self,
        ctx: &Arc<Context>,
        operands: &GpuOperands,
        epilogue: Option<&wgrad_kernels::Epilogue>,
    ) -> Result<Option<Vec<GpuBuffer>>> {
        let _ = (ctx, operands, epilogue);
        Err(host_error(self.name(), "launch_product"))
    }
    /// Prologue: whether to defer over input `x` (`pending_map`: x is a pending
    /// elementwise value, which the kernel could compute as it loads it).
    fn defers(&self, x: &Tensor, pending_map: bool) -> bool {
        let _ = (x, pending_map);
        true
    }
    /// Prologue: the kernel over its materialized input `x` (in x's layout).
    fn launch(&self, ctx: &Arc<Context>, x: &Tensor) -> Result<GpuBuffer> {
        let _ = (ctx, x);
        Err(host_error(self.name(), "launch"))
    }
    /// Prologue: the kernel computing its input of `shape` with `prologue` as it loads it:
    /// its result and a buffer per prologue output after the first; None where it does
    /// not fit (then the input is materialized first).
    fn launch_with_prologue(
        &self,
        ctx: &Arc<Context>,
        shape: &[usize],
        prologue: &wgrad_kernels::Epilogue,
    ) -> Result<Option<(GpuBuffer, Vec<GpuBuffer>)>> {
        let _ = (ctx, shape, prologue);
        Err(host_error(self.name(), "launch_with_prologue"))
    }
}

fn host_error(name: &str, what: &str) -> crate::Error {
    crate::Error::Internal { op: "fusion", msg: format!("the fusion host {name} does not implement {what}") }
}

/// Defer a host primitive: an epilogue host's operands are materialized now (its kernel
/// reads them as they are) and its product waits for its consumers; a prologue host keeps
/// a pending elementwise input pending (computed as the kernel loads it) and reads
/// anything else as it is.
pub(super) fn defer_host(
    ctx: Arc<Context>,
    host: Arc<dyn FusionHost>,
    inputs: &[Tensor],
    spec: &OutSpec,
) -> Result<Option<Tensor>> {
    match host.kind() {
        HostKind::Epilogue => {
            let ins = inputs.iter().map(|t| t.materialized()).collect::<Result<Vec<_>>>()?;
            let refs: Vec<&Tensor> = ins.iter().collect();
            let operands = host.operands(&refs)?;
            if operands.k == 0 {
                return Ok(None);
            }
            let st = state();
            let mut cost = Cost::default();
            for t in [&operands.a, &operands.b] {
                union(&mut cost.buffers, &[leaf_id(t).0]);
            }
            let pending = Pending { op: Fusible::Host(host), args: Vec::new(), operands: Some(operands), cost };
            Ok(Some(pending_tensor(st, ctx, spec, pending)))
        }
        HostKind::Prologue => {
            let x = &inputs[0];
            let pending_map = matches!(x.storage(), Storage::Lazy(n) if n.is_pending_map());
            if x.shape().contains(&0) || x.rank() > MAX_RANK || !host.defers(x, pending_map) {
                return Ok(None);
            }
            let st = state();
            let arg = match x.storage() {
                Storage::Lazy(n) if n.is_pending_map() => Arg::Node(Edge::new(Arc::clone(n))),
                Storage::Lazy(n) => Arg::Leaf(materialized_locked(x, n)?),
                _ => Arg::Leaf(x.clone()),
            };
            let cost = cost_of(std::slice::from_ref(&arg));
            let pending = Pending { op: Fusible::Host(host), args: vec![arg], operands: None, cost };
            Ok(Some(pending_tensor(st, ctx, spec, pending)))
        }
    }
}

/// A pending host node's host with its operands (epilogue) or argument (prologue).
pub(super) type HostNode = (Arc<dyn FusionHost>, Option<GpuOperands>, Option<Arg>);

/// The host of a pending host node, with its operands (epilogue) or argument (prologue).
pub(super) fn host_of(n: &Lazy) -> Option<HostNode> {
    let p = crate::lock(&n.pending);
    let p = p.as_ref()?;
    match &p.op {
        Fusible::Host(h) => Some((h.clone(), p.operands.clone(), p.args.first().cloned())),
        _ => None,
    }
}

/// Run a pending prologue host: over its materialized input, or with its pending input's
/// DAG as the prologue of its kernel (the values in it that something else holds are
/// written as they are loaded).
pub(super) fn run_prologue_host(n: &Arc<Lazy>, host: &dyn FusionHost, arg: Arg) -> Result<Arc<GpuBuffer>> {
    let device = Device::Gpu(n.ctx.clone());
    let input = match arg {
        Arg::Leaf(t) => t,
        Arg::Node(edge) => {
            let x = edge.into_arc();
            match try_prologue(&x, &device, |pro| host.launch_with_prologue(&n.ctx, &x.shape, pro))? {
                Some(buf) => return Ok(n.resolve(buf)),
                None => leaf_of(force_locked(&x)?, &x.shape, &device),
            }
        }
    };
    Ok(n.resolve(host.launch(&n.ctx, &input)?))
}

/// A host kernel (`launch`) over the pending value `x` that computes x's DAG as it loads
/// it; None where it does not fit (a matmul or another host inside, too many bindings or
/// params, or the host declines): then x is materialized first.
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
    // output 0 is the value the host reads; x is written too when a tensor holds it or a
    // pending node besides this host reads it
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

/// Run a pending epilogue host alone (no epilogue).
pub(super) fn run_product(n: &Arc<Lazy>, host: &dyn FusionHost, op: &GpuOperands) -> Result<Arc<GpuBuffer>> {
    let mut outs = host.launch_product(&n.ctx, op, None)?.unwrap_or_default();
    let buf = outs.pop().ok_or_else(|| crate::Error::Internal {
        op: "fusion",
        msg: format!("{} ran alone and returned no result", host.name()),
    })?;
    Ok(n.resolve(buf))
}
