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
mod hosts;
mod plan;

use crate::primitive::OutSpec;
use crate::storage::Storage;
use crate::{DType, Device, Result, Tensor};
pub use hosts::{FusionHost, HostKind};
use plan::force_locked;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// A user elementwise kernel (its registered id) with its scalar operand.
    User(u32, f64),
    /// cond != 0 ? a : b
    Where,
    /// A kernel that runs pending elementwise work inside it, declared by its primitive
    /// ([`FusionHost`]): a matrix product whose store runs the ops that read its result
    /// (an epilogue), a reduction or row softmax whose loads compute its pending input (a
    /// prologue).
    Host(Arc<dyn FusionHost>),
}

impl std::fmt::Debug for dyn FusionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}

/// What a GPU product multiplies: A and B as views with their batch dims broadcast (or
/// folded into the rows), and the dims. An epilogue host builds it
/// ([`FusionHost::operands`]); a deferred product keeps it.
#[derive(Clone)]
pub struct GpuOperands {
    pub a: Tensor,
    pub b: Tensor,
    pub batch: Vec<usize>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// Ops one generated kernel holds at most (longer chains are split).
const MAX_OPS: usize = 48;

/// A deferred elementwise value on the GPU.
///
/// Whether a pending value must be written out when its DAG runs is declared, not
/// inferred: `holders` counts the tensors that hold it ([`LazyHandle`]: a user's tensor,
/// a value a VJP saved, a checkpoint's kept value), `dependents` the pending nodes that
/// read it ([`Edge`]). Plans and hosts hold plain `Arc`s, which declare nothing.
pub(crate) struct Lazy {
    ctx: Arc<Context>,
    shape: Vec<usize>,
    result: OnceLock<Arc<GpuBuffer>>,
    pending: Mutex<Option<Pending>>,
    holders: AtomicUsize,
    dependents: AtomicUsize,
}

/// Which of a [`Lazy`]'s counts a [`Counted`] handle is in.
pub(crate) trait Count {
    fn of(lazy: &Lazy) -> &AtomicUsize;
}

/// Counted in the holders: the tensors that hold the value.
pub(crate) struct Holder;
impl Count for Holder {
    fn of(lazy: &Lazy) -> &AtomicUsize {
        &lazy.holders
    }
}

/// Counted in the dependents: the pending nodes that read the value.
pub(crate) struct Dependent;
impl Count for Dependent {
    fn of(lazy: &Lazy) -> &AtomicUsize {
        &lazy.dependents
    }
}

/// A handle on a deferred value that is counted, in the count `C`, for as long as it lives.
pub(crate) struct Counted<C: Count>(Arc<Lazy>, std::marker::PhantomData<C>);

/// A tensor's hold on a deferred value.
pub(crate) type LazyHandle = Counted<Holder>;
/// A pending node's read of another pending value.
pub(super) type Edge = Counted<Dependent>;

impl<C: Count> Counted<C> {
    fn new(lazy: Arc<Lazy>) -> Self {
        C::of(&lazy).fetch_add(1, Ordering::Relaxed);
        Counted(lazy, std::marker::PhantomData)
    }
    /// The value, no longer counted.
    pub(super) fn into_arc(self) -> Arc<Lazy> {
        self.0.clone()
    }
}

impl<C: Count> Clone for Counted<C> {
    fn clone(&self) -> Self {
        Self::new(self.0.clone())
    }
}

impl<C: Count> Drop for Counted<C> {
    fn drop(&mut self) {
        C::of(&self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

impl<C: Count> std::ops::Deref for Counted<C> {
    type Target = Arc<Lazy>;
    fn deref(&self) -> &Arc<Lazy> {
        &self.0
    }
}

impl<C: Count> std::fmt::Debug for Counted<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

struct Pending {
    op: Fusible,
    args: Vec<Arg>,
    /// The operands of an epilogue host's node (its `args` are empty).
    operands: Option<GpuOperands>,
    /// What the DAG under this node binds (an upper bound once parts of it materialize).
    cost: Cost,
}

#[derive(Clone)]
enum Arg {
    /// A pending value of the same shape.
    Node(Edge),
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
    /// Tensors holding this value (they need it written out).
    pub(super) fn holders(&self) -> usize {
        self.holders.load(Ordering::Relaxed)
    }
    /// Pending nodes reading this value.
    pub(super) fn dependents(&self) -> usize {
        self.dependents.load(Ordering::Relaxed)
    }
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
    /// Whether this value is pending as an elementwise op (one that can join a DAG, not a
    /// deferred host kernel).
    fn is_pending_map(&self) -> bool {
        crate::lock(&self.pending).as_ref().is_some_and(|p| {
            matches!(p.op, Fusible::Unary(..) | Fusible::User(..) | Fusible::Binary(_) | Fusible::Where)
        })
    }
    /// Store this node's computed value and release its arguments.
    fn resolve(&self, buf: GpuBuffer) -> Arc<GpuBuffer> {
        let buf = Arc::new(buf);
        let _ = self.result.set(buf.clone());
        crate::lock(&self.pending).take();
        buf
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
    crate::lock(&STATE)
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
    if let Fusible::Host(host) = op {
        return hosts::defer_host(ctx, host, inputs, spec);
    }
    let st = state();
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
    Ok(Some(pending_tensor(st, ctx, spec, Pending { op, args, operands: None, cost })))
}

/// A tensor whose value is `pending`, noted for `flush` (under the state lock `st`).
fn pending_tensor(mut st: std::sync::MutexGuard<State>, ctx: Arc<Context>, spec: &OutSpec, pending: Pending) -> Tensor {
    let device = Device::Gpu(ctx.clone());
    let node = Arc::new(Lazy {
        ctx,
        shape: spec.shape.clone(),
        result: OnceLock::new(),
        pending: Mutex::new(Some(pending)),
        holders: AtomicUsize::new(0),
        dependents: AtomicUsize::new(0),
    });
    st.pending.push(Arc::downgrade(&node));
    if st.pending.len() > 2 * st.pruned_len + 64 {
        st.pending.retain(|w| w.upgrade().is_some_and(|n| n.is_pending()));
        st.pruned_len = st.pending.len();
    }
    drop(st);
    Tensor::new_contiguous(Storage::Lazy(LazyHandle::new(node)), &spec.shape, DType::F32, device)
}

/// How a deferred op reads input `t`: a pending value of the output's shape joins the DAG;
/// anything else is materialized (already, or now) and read through its strides.
fn arg_of(t: &Tensor, shape: &[usize]) -> Result<Arg> {
    if let Storage::Lazy(n) = t.storage() {
        if n.is_pending() && t.shape() == shape && t.layout().is_contiguous() && t.layout().offset == 0 {
            return Ok(Arg::Node(Edge::new(Arc::clone(n))));
        }
        return Ok(Arg::Leaf(materialized_locked(t, n)?.broadcast_view(shape)));
    }
    Ok(Arg::Leaf(t.broadcast_view(shape)))
}

/// `t`, whose storage is the pending `n`, computed now (under the state lock) and viewed
/// with t's layout.
fn materialized_locked(t: &Tensor, n: &Arc<Lazy>) -> Result<Tensor> {
    Ok(leaf_of(force_locked(n)?, &n.shape, t.device()).with_layout(t.layout().clone()))
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

impl Tensor {
    /// This tensor with its data computed (a pending fused value is materialized; any
    /// other tensor is returned as it is).
    pub fn materialized(&self) -> Result<Tensor> {
        if let Storage::Lazy(n) = self.storage() {
            let buf = force(n)?;
            let mut inner = (*self.0).clone();
            inner.storage = Storage::Gpu(buf);
            return Ok(Tensor(Arc::new(inner)));
        }
        Ok(self.clone())
    }
}
