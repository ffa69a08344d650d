//! Automatic fusion of elementwise chains on the GPU.
//!
//! **Deferral.** At the entry point's base, an elementwise primitive (unary and its scalar
//! forms, binary with broadcasting, where) on f32 GPU tensors is not launched: its output
//! is a tensor whose storage is a [`Lazy`] node holding the op and its arguments. An
//! argument is another pending node of the same shape (the DAG grows) or a leaf: a
//! materialized tensor, read through its strides (broadcasting included).
//!
//! **Materialization.** A pending value is computed when something other than an
//! elementwise primitive needs its data: a reduction, matmul, view or any other primitive
//! reading it, a readback, `Device::flush` / `synchronize`, an in-place optimizer step, a
//! `wgpu_buffer()` hand-off, or a size limit when the DAG is built. Then one WGSL kernel is
//! generated for the whole DAG (`wgrad_kernels::Context::fused`, cached by structure).
//! Its outputs are the root and every interior node something else still holds (a user
//! tensor, a value saved for a VJP, another pending DAG): those are written too, the rest
//! stay in registers.
//!
//! **Limits.** A kernel binds at most `FUSED_MAX_BUFFERS` storage buffers and fits its
//! launch params in one uniform block; a DAG that would not is split (its pending inputs
//! are materialized first) when it is built, and again at materialization if the extra
//! outputs push it over.
//!
//! **Semantics.** Shape and dtype rules run eagerly in `bind`, so errors are raised by the
//! op that causes them. Results are those of the unfused kernels within TESTING.md's
//! tolerances (the same f32 formulas, without intermediate rounding to memory, which f32
//! registers do not add), and the same program gives bitwise the same output. Turn it off
//! with `WGRAD_FUSION=0`, or for one thread's scope with [`with_fusion`].
use crate::ops::matmul::{gpu_operands, GpuOperands};
use crate::primitive::OutSpec;
use crate::storage::Storage;
use crate::{DType, Device, Result, Tensor};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use wgrad_kernels::{
    fused_param_words, BinaryOp, Context, FusedStep, GpuBuffer, UnaryOp, View, FUSED_MAX_BUFFERS, FUSED_PARAM_WORDS,
    MAX_RANK,
};

/// The form of a primitive that fusion can defer.
#[derive(Clone, Debug)]
pub enum Fusible {
    /// op(x, scalar)
    Unary(UnaryOp, f64),
    Binary(BinaryOp),
    /// cond != 0 ? a : b
    Where,
    /// A matrix product: deferred like the others, so that the elementwise ops that read
    /// its result run in its store (epilogue fusion: bias, activation, residual, masks).
    Matmul,
    /// A reduction over `axes`: deferred, so that a pending elementwise input is computed
    /// as the reduction loads it (prologue fusion: sum(x * y), mean((a - b)^2)).
    Reduce {
        op: wgrad_kernels::ReduceOp,
        axes: Vec<usize>,
    },
}

/// Ops one generated kernel holds at most (longer chains are split).
const MAX_OPS: usize = 48;

/// A deferred elementwise value on the GPU.
pub(crate) struct Lazy {
    ctx: Arc<Context>,
    shape: Vec<usize>,
    result: OnceLock<Arc<GpuBuffer>>,
    pending: Mutex<Option<Pending>>,
}

struct Pending {
    op: Fusible,
    args: Vec<Arg>,
    /// The operands of a matmul node (its `args` are empty).
    matmul: Option<GpuOperands>,
    /// What the DAG under this node binds (an upper bound once parts of it materialize).
    cost: Cost,
}

#[derive(Clone)]
enum Arg {
    /// A pending value of the same shape.
    Node(Arc<Lazy>),
    /// A materialized value, its layout broadcast to the node's shape.
    Leaf(Tensor),
}

/// Identity of a leaf read: (buffer, offset, strides).
type LeafId = (usize, usize, Vec<usize>);

#[derive(Clone, Default)]
struct Cost {
    /// Pending nodes in the DAG (addresses), sorted.
    nodes: Vec<usize>,
    /// Distinct leaf buffers, sorted.
    buffers: Vec<usize>,
    /// Distinct leaf reads, sorted.
    leaves: Vec<LeafId>,
}

fn union<T: Ord + Clone>(a: &mut Vec<T>, b: &[T]) {
    a.extend_from_slice(b);
    a.sort();
    a.dedup();
}

impl Cost {
    fn fits(&self, rank: usize) -> bool {
        // one output and one spare binding for an interior value that must be written
        self.nodes.len() <= MAX_OPS
            && self.buffers.len() as u32 + 2 <= FUSED_MAX_BUFFERS
            && fused_param_words(rank, self.leaves.len(), self.nodes.len()) <= FUSED_PARAM_WORDS
    }
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lazy({:?}, {})", self.shape, if self.is_pending() { "pending" } else { "materialized" })
    }
}

impl Lazy {
    /// The buffer once materialized.
    pub(crate) fn buffer(&self) -> Option<&GpuBuffer> {
        self.result.get().map(|b| &**b)
    }
    fn is_pending(&self) -> bool {
        self.result.get().is_none()
    }
    fn address(self: &Arc<Self>) -> usize {
        Arc::as_ptr(self) as usize
    }
}

/// Materialization and deferral run under one lock: a DAG is read and resolved by one
/// thread at a time. It also holds the pending values `Device::flush` materializes.
struct State {
    pending: Vec<Weak<Lazy>>,
    pruned_len: usize,
}

static STATE: Mutex<State> = Mutex::new(State { pending: Vec::new(), pruned_len: 0 });

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

thread_local! {
    static OVERRIDE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// Whether elementwise ops are deferred and fused on this thread now: on unless
/// `WGRAD_FUSION=0`, or [`with_fusion`] says otherwise.
pub fn fusion_enabled() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    OVERRIDE
        .with(|o| o.get())
        .unwrap_or_else(|| *ENV.get_or_init(|| std::env::var("WGRAD_FUSION").as_deref() != Ok("0")))
}

/// Run `f` with fusion turned on or off on this thread (for comparisons and debugging).
pub fn with_fusion<R>(on: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<bool>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(on))));
    f()
}

/// The output of `op` on plain inputs as a pending value, or None when it is not fused
/// (fusion off, not f32 on one GPU, empty, too many dims).
pub(crate) fn defer(op: Fusible, inputs: &[Tensor], spec: &OutSpec) -> Result<Option<Tensor>> {
    if !fusion_enabled() || spec.dtype != DType::F32 || spec.shape.contains(&0) || spec.shape.len() > MAX_RANK {
        return Ok(None);
    }
    let Some(ctx) = inputs[0].device().context().cloned() else { return Ok(None) };
    // a lost or faulted device errs at the op, as an unfused launch would
    ctx.check_health()?;
    if inputs.iter().any(|t| t.dtype() != DType::F32 || t.device() != inputs[0].device()) {
        return Ok(None);
    }
    match op {
        Fusible::Matmul => return defer_matmul(ctx, inputs, spec),
        Fusible::Reduce { .. } => return defer_reduce(ctx, op, &inputs[0], spec),
        _ => {}
    }
    let mut st = state();
    let mut args: Vec<Arg> = Vec::with_capacity(inputs.len());
    for t in inputs {
        args.push(arg_of(t, &spec.shape)?);
    }
    let mut cost = cost_of(&args);
    if !cost.fits(spec.shape.len()) {
        // too big for one kernel: materialize the pending arguments, which become leaves
        for a in args.iter_mut() {
            if let Arg::Node(n) = a {
                let buf = force_locked(n)?;
                *a = Arg::Leaf(leaf_of(buf, &n.shape, inputs[0].device()));
            }
        }
        cost = cost_of(&args);
    }
    let node = Arc::new(Lazy {
        ctx,
        shape: spec.shape.clone(),
        result: OnceLock::new(),
        pending: Mutex::new(Some(Pending { op, args, matmul: None, cost })),
    });
    note_pending(&mut st, &node);
    drop(st);
    Ok(Some(Tensor::new_contiguous(Storage::Lazy(node), &spec.shape, DType::F32, inputs[0].device().clone())))
}

fn note_pending(st: &mut State, node: &Arc<Lazy>) {
    st.pending.push(Arc::downgrade(node));
    if st.pending.len() > 2 * st.pruned_len + 64 {
        st.pending.retain(|w| w.upgrade().is_some_and(|n| n.is_pending()));
        st.pruned_len = st.pending.len();
    }
}

/// A deferred matmul: its operands are materialized now (its kernel reads them as they
/// are), the product waits for its consumers.
fn defer_matmul(ctx: Arc<Context>, inputs: &[Tensor], spec: &OutSpec) -> Result<Option<Tensor>> {
    let ins = inputs.iter().map(|t| t.materialized()).collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = ins.iter().collect();
    let operands = gpu_operands(&refs)?;
    if operands.k == 0 {
        return Ok(None);
    }
    let mut st = state();
    let mut cost = Cost::default();
    for t in [&operands.a, &operands.b] {
        let id = leaf_id(t);
        union(&mut cost.buffers, &[id.0]);
    }
    let node = Arc::new(Lazy { ctx, shape: spec.shape.clone(), result: OnceLock::new(), pending: Mutex::new(None) });
    cost.nodes.push(node.address());
    *crate::lock(&node.pending) = Some(Pending { op: Fusible::Matmul, args: Vec::new(), matmul: Some(operands), cost });
    note_pending(&mut st, &node);
    drop(st);
    Ok(Some(Tensor::new_contiguous(Storage::Lazy(node), &spec.shape, DType::F32, inputs[0].device().clone())))
}

/// A deferred reduction: a pending input stays pending (the reduction will compute it as
/// it loads it), anything else is read as it is.
fn defer_reduce(ctx: Arc<Context>, op: Fusible, x: &Tensor, spec: &OutSpec) -> Result<Option<Tensor>> {
    if x.shape().contains(&0) || x.rank() > MAX_RANK {
        return Ok(None);
    }
    let mut st = state();
    let arg = match x.storage() {
        Storage::Lazy(n) if n.is_pending() && matmul_of(n).is_none() && reduce_of(n).is_none() => Arg::Node(n.clone()),
        Storage::Lazy(n) => Arg::Leaf(leaf_of(force_locked(n)?, &n.shape, x.device()).with_layout(x.layout().clone())),
        _ => Arg::Leaf(x.clone()),
    };
    let mut cost = cost_of(std::slice::from_ref(&arg));
    let node = Arc::new(Lazy { ctx, shape: spec.shape.clone(), result: OnceLock::new(), pending: Mutex::new(None) });
    union(&mut cost.nodes, &[node.address()]);
    *crate::lock(&node.pending) = Some(Pending { op, args: vec![arg], matmul: None, cost });
    note_pending(&mut st, &node);
    drop(st);
    Ok(Some(Tensor::new_contiguous(Storage::Lazy(node), &spec.shape, DType::F32, x.device().clone())))
}

/// (op, axes, argument) of a pending reduction node.
fn reduce_of(n: &Lazy) -> Option<(wgrad_kernels::ReduceOp, Vec<usize>, Arg)> {
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
fn run_reduce(n: &Arc<Lazy>, op: wgrad_kernels::ReduceOp, axes: &[usize], arg: Arg) -> Result<Arc<GpuBuffer>> {
    let device = Device::Gpu(n.ctx.clone());
    let finish = |buf: GpuBuffer| {
        let buf = Arc::new(buf);
        let _ = n.result.set(buf.clone());
        crate::lock(&n.pending).take();
        buf
    };
    let input = match arg {
        Arg::Leaf(t) => t,
        Arg::Node(x) => match try_prologue(n, &x, op, axes, &device)? {
            Some(buf) => return Ok(finish(buf)),
            None => leaf_of(force_locked(&x)?, &x.shape, &device),
        },
    };
    let pt = input.with_layout(crate::ops::reduce::reduced_last(input.layout(), axes));
    Ok(finish(n.ctx.reduce(op, pt.view(), pt.shape(), axes.len())?))
}

/// The reduction `n` of the pending value `x` in one kernel that computes x's DAG as it
/// loads it; None where it does not fit (a matmul or reduction inside, too many bindings
/// or params): then x is materialized first.
fn try_prologue(
    n: &Arc<Lazy>,
    x: &Arc<Lazy>,
    op: wgrad_kernels::ReduceOp,
    axes: &[usize],
    device: &Device,
) -> Result<Option<GpuBuffer>> {
    if x.result.get().is_some() || x.shape.len() > 6 {
        return Ok(None);
    }
    let mut plan = Plan::new();
    plan.visit(x, device)?;
    if plan.acc.is_some() || plan.must_force.is_some() {
        return Ok(None);
    }
    // output 0 is the value reduced; x is written too when something besides this
    // reduction holds it (n's argument, the caller's copy of it and the plan hold one
    // reference each)
    let root = plan.nodes.len() - 1;
    let mut outputs: Vec<usize> = plan.outputs().into_iter().filter(|&i| i != root).collect();
    if Arc::strong_count(x) > 3 {
        outputs.push(root);
    }
    let buffers = {
        let mut b: Vec<usize> = plan.leaves.iter().map(|t| leaf_id(t).0).collect();
        b.sort();
        b.dedup();
        b.len()
    };
    let words = wgrad_kernels::epilogue_param_words(x.shape.len(), plan.leaves.len(), plan.scalars.len());
    if (buffers + 1 + outputs.len()) as u32 > FUSED_MAX_BUFFERS || words > FUSED_PARAM_WORDS {
        return Ok(None);
    }
    let views: Vec<View> = plan.leaves.iter().map(|t| t.view()).collect();
    let mut out_steps = vec![plan.nodes[root].1];
    out_steps.extend(outputs.iter().map(|&i| plan.nodes[i].1));
    let pro = wgrad_kernels::Epilogue {
        steps: plan.steps.clone(),
        inputs: views.clone(),
        scalars: plan.scalars.clone(),
        outputs: out_steps,
        shape: x.shape.clone(),
    };
    let walk = crate::ops::reduce::reduced_last(&crate::Layout::contiguous(&x.shape), axes);
    let (out, extras) = n.ctx.reduce_fused(op, &walk.strides, &walk.shape, axes.len(), &pro)?;
    drop(pro);
    drop(views);
    for (&i, buf) in outputs.iter().zip(extras) {
        let _ = plan.nodes[i].0.result.set(Arc::new(buf));
    }
    for (node, _, _) in &plan.nodes {
        crate::lock(&node.pending).take();
    }
    Ok(Some(out))
}

/// The operands of a pending matmul node.
fn matmul_of(n: &Lazy) -> Option<GpuOperands> {
    crate::lock(&n.pending).as_ref().and_then(|p| p.matmul.clone())
}

/// Run a pending matmul node alone (no epilogue).
fn run_matmul(n: &Arc<Lazy>, op: &GpuOperands) -> Result<Arc<GpuBuffer>> {
    let buf = Arc::new(n.ctx.matmul(op.a.view(), op.b.view(), &op.batch, op.m, op.k, op.n)?);
    let _ = n.result.set(buf.clone());
    crate::lock(&n.pending).take();
    Ok(buf)
}

/// How a deferred op reads input `t`: a pending value of the output's shape joins the DAG;
/// anything else is materialized (already, or now) and read through its strides.
fn arg_of(t: &Tensor, shape: &[usize]) -> Result<Arg> {
    if let Storage::Lazy(n) = t.storage() {
        if n.is_pending() && t.shape() == shape && t.layout().is_contiguous() && t.layout().offset == 0 {
            return Ok(Arg::Node(n.clone()));
        }
        let buf = force_locked(n)?;
        let base = leaf_of(buf, &n.shape, t.device());
        return Ok(Arg::Leaf(base.with_layout(t.layout().clone()).broadcast_view(shape)));
    }
    Ok(Arg::Leaf(t.broadcast_view(shape)))
}

fn leaf_of(buf: Arc<GpuBuffer>, shape: &[usize], device: &Device) -> Tensor {
    Tensor::new_contiguous(Storage::Gpu(buf), shape, DType::F32, device.clone())
}

fn leaf_id(t: &Tensor) -> LeafId {
    let buf = t.storage().gpu().expect("a leaf is materialized") as *const GpuBuffer as usize;
    (buf, t.layout().offset, t.layout().strides.clone())
}

fn cost_of(args: &[Arg]) -> Cost {
    let mut c = Cost::default();
    for a in args {
        match a {
            Arg::Leaf(t) => {
                let id = leaf_id(t);
                union(&mut c.buffers, &[id.0]);
                union(&mut c.leaves, &[id]);
            }
            Arg::Node(n) => {
                let p = crate::lock(&n.pending);
                if let Some(p) = p.as_ref() {
                    union(&mut c.nodes, &p.cost.nodes);
                    union(&mut c.buffers, &p.cost.buffers);
                    union(&mut c.leaves, &p.cost.leaves);
                    union(&mut c.nodes, &[n.address()]);
                }
            }
        }
    }
    c
}

/// The buffer of a pending value, computing it (and the DAG under it) now.
pub(crate) fn force(node: &Arc<Lazy>) -> Result<Arc<GpuBuffer>> {
    if let Some(b) = node.result.get() {
        return Ok(b.clone());
    }
    let _st = state();
    force_locked(node)
}

/// Materialize every pending value of `ctx` something still holds, newest first (the
/// newest are the roots of the DAGs the others belong to).
pub(crate) fn flush(ctx: &Arc<Context>) -> Result<()> {
    let mut st = state();
    let pending = std::mem::take(&mut st.pending);
    st.pruned_len = 0;
    let mut keep = Vec::new();
    let mut result = Ok(());
    for w in pending.into_iter().rev() {
        let Some(n) = w.upgrade() else { continue };
        if !n.is_pending() {
            continue;
        }
        if !Arc::ptr_eq(&n.ctx, ctx) || result.is_err() {
            keep.push(w);
            continue;
        }
        if let Err(e) = force_locked(&n) {
            result = Err(e);
            keep.push(w);
        }
    }
    keep.reverse();
    st.pending.extend(keep);
    result
}

/// One DAG ready to launch: the steps in topological order (root last).
struct Plan {
    steps: Vec<FusedStep>,
    scalars: Vec<f32>,
    leaves: Vec<Tensor>,
    leaf_step: HashMap<LeafId, u32>,
    /// Pending nodes in the DAG with their step and how many DAG edges point at them.
    nodes: Vec<(Arc<Lazy>, u32, usize)>,
    node_index: HashMap<usize, usize>,
    /// The pending matmul whose store runs this DAG (its index in `nodes`).
    acc: Option<usize>,
    /// A second pending matmul in the DAG: computed on its own first.
    must_force: Option<Arc<Lazy>>,
}

impl Plan {
    fn new() -> Plan {
        Plan {
            steps: Vec::new(),
            scalars: Vec::new(),
            leaves: Vec::new(),
            leaf_step: HashMap::new(),
            nodes: Vec::new(),
            node_index: HashMap::new(),
            acc: None,
            must_force: None,
        }
    }

    fn visit(&mut self, n: &Arc<Lazy>, device: &Device) -> Result<u32> {
        if let Some(&i) = self.node_index.get(&n.address()) {
            self.nodes[i].2 += 1;
            return Ok(self.nodes[i].1);
        }
        if let Some(buf) = n.result.get() {
            return Ok(self.load(leaf_of(buf.clone(), &n.shape, device)));
        }
        let (op, args) = {
            let p = crate::lock(&n.pending);
            let p = p.as_ref().ok_or_else(|| crate::Error::Invalid {
                op: "fusion",
                msg: "a fused value was released before it was computed (internal error)".into(),
            })?;
            (p.op.clone(), p.args.clone())
        };
        if let Fusible::Reduce { .. } = op {
            // a reduction read by an elementwise op of its own shape: computed first
            self.must_force = Some(n.clone());
            return Ok(0);
        }
        if let Fusible::Matmul = op {
            if self.acc.is_some() {
                self.must_force = Some(n.clone());
                return Ok(0);
            }
            self.steps.push(FusedStep::Acc);
            let id = self.steps.len() as u32 - 1;
            self.acc = Some(self.nodes.len());
            self.node_index.insert(n.address(), self.nodes.len());
            self.nodes.push((n.clone(), id, 1));
            return Ok(id);
        }
        let mut operands = Vec::with_capacity(args.len());
        for a in &args {
            operands.push(match a {
                Arg::Node(c) => self.visit(c, device)?,
                Arg::Leaf(t) => self.load(t.clone()),
            });
        }
        let step = match op {
            Fusible::Unary(op, s) => {
                self.scalars.push(s as f32);
                FusedStep::Unary { op, x: operands[0], scalar: self.scalars.len() as u32 - 1 }
            }
            Fusible::Binary(op) => FusedStep::Binary { op, a: operands[0], b: operands[1] },
            Fusible::Where => FusedStep::Where { c: operands[0], a: operands[1], b: operands[2] },
            Fusible::Matmul | Fusible::Reduce { .. } => unreachable!("handled above"),
        };
        self.steps.push(step);
        let id = self.steps.len() as u32 - 1;
        self.node_index.insert(n.address(), self.nodes.len());
        self.nodes.push((n.clone(), id, 1));
        Ok(id)
    }

    fn load(&mut self, t: Tensor) -> u32 {
        let id = leaf_id(&t);
        if let Some(&s) = self.leaf_step.get(&id) {
            return s;
        }
        self.steps.push(FusedStep::Load(self.leaves.len() as u32));
        self.leaves.push(t);
        let s = self.steps.len() as u32 - 1;
        self.leaf_step.insert(id, s);
        s
    }

    /// Nodes whose values must be written: the root, and every interior node held by
    /// anything besides this DAG's edges and the plan itself (a tensor, a tape, another
    /// pending DAG).
    fn outputs(&self) -> Vec<usize> {
        let root = self.nodes.len() - 1;
        (0..self.nodes.len())
            .filter(|&i| {
                let (n, _, edges) = &self.nodes[i];
                i == root || Arc::strong_count(n) > edges + 1
            })
            .collect()
    }
}

fn force_locked(root: &Arc<Lazy>) -> Result<Arc<GpuBuffer>> {
    loop {
        if let Some(b) = root.result.get() {
            return Ok(b.clone());
        }
        if let Some(op) = matmul_of(root) {
            return run_matmul(root, &op);
        }
        if let Some((op, axes, arg)) = reduce_of(root) {
            return run_reduce(root, op, &axes, arg);
        }
        let device = Device::Gpu(root.ctx.clone());
        let mut plan = Plan::new();
        plan.visit(root, &device)?;
        if let Some(m) = plan.must_force.take() {
            drop(plan);
            force_locked(&m)?;
            continue;
        }
        let outputs = plan.outputs();
        // the matmul runs the DAG in its store only if nothing else reads its own result
        let acc = plan.acc.map(|i| plan.nodes[i].0.clone());
        if let (Some(i), Some(m)) = (plan.acc, &acc) {
            if outputs.contains(&i) {
                drop(plan);
                force_locked(m)?;
                continue;
            }
        }
        let buffers = {
            let mut b: Vec<usize> = plan.leaves.iter().map(|t| leaf_id(t).0).collect();
            b.sort();
            b.dedup();
            b.len() + if acc.is_some() { 2 } else { 0 }
        };
        let (rank, inputs, scalars) = (root.shape.len(), plan.leaves.len(), plan.scalars.len());
        let words = match acc {
            Some(_) => wgrad_kernels::epilogue_param_words(rank, inputs, scalars),
            None => fused_param_words(rank, inputs, scalars),
        };
        if (buffers + outputs.len()) as u32 > FUSED_MAX_BUFFERS || words > FUSED_PARAM_WORDS {
            // split: the matmul runs alone first, else an interior value that must be
            // written anyway goes first, else the root's largest pending argument
            let interior = outputs.iter().find(|&&i| i + 1 != plan.nodes.len()).map(|&i| plan.nodes[i].0.clone());
            let next = acc.clone().or(interior).or_else(|| largest_pending_arg(root));
            drop(plan);
            match next {
                Some(n) => {
                    force_locked(&n)?;
                    continue;
                }
                None => {
                    return Err(crate::Error::Invalid {
                        op: "fusion",
                        msg: format!("a fused op reads {buffers} buffers, more than one kernel can bind"),
                    })
                }
            }
        }
        let views: Vec<View> = plan.leaves.iter().map(|t| t.view()).collect();
        let out_steps: Vec<u32> = outputs.iter().map(|&i| plan.nodes[i].1).collect();
        let bufs = match &acc {
            None => root.ctx.fused(&plan.steps, &views, &plan.scalars, &out_steps, &root.shape)?,
            Some(m) => {
                let op = matmul_of(m).expect("a pending matmul");
                let epi = wgrad_kernels::Epilogue {
                    steps: plan.steps.clone(),
                    inputs: views.clone(),
                    scalars: plan.scalars.clone(),
                    outputs: out_steps.clone(),
                    shape: root.shape.clone(),
                };
                match root.ctx.matmul_fused(op.a.view(), op.b.view(), &op.batch, op.m, op.k, op.n, &epi)? {
                    Some(bufs) => bufs,
                    None => {
                        // this product cannot take an epilogue (split-K): alone, then the DAG
                        drop(epi);
                        drop(views);
                        drop(plan);
                        run_matmul(m, &op)?;
                        continue;
                    }
                }
            }
        };
        drop(views);
        for (&i, buf) in outputs.iter().zip(bufs) {
            let _ = plan.nodes[i].0.result.set(Arc::new(buf));
        }
        // the DAG is resolved: release every node's arguments (leaves go back to the pool)
        for (n, _, _) in &plan.nodes {
            crate::lock(&n.pending).take();
        }
    }
}

/// The pending argument of `n` with the largest DAG.
fn largest_pending_arg(n: &Arc<Lazy>) -> Option<Arc<Lazy>> {
    let p = crate::lock(&n.pending);
    let p = p.as_ref()?;
    p.args
        .iter()
        .filter_map(|a| match a {
            Arg::Node(c) if c.is_pending() => Some(c.clone()),
            _ => None,
        })
        .max_by_key(|c| crate::lock(&c.pending).as_ref().map_or(0, |p| p.cost.nodes.len()))
}

impl Tensor {
    /// This tensor with its data computed (a pending fused value is materialized; any
    /// other tensor is returned as it is).
    pub(crate) fn materialized(&self) -> Result<Tensor> {
        if let Storage::Lazy(n) = self.storage() {
            let buf = force(n)?;
            let mut inner = (*self.0).clone();
            inner.storage = Storage::Gpu(buf);
            return Ok(Tensor(Arc::new(inner)));
        }
        Ok(self.clone())
    }
}
