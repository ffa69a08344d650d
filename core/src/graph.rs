//! Graph recording. When an op runs on a tracked tensor (one with a node) while recording
//! is on, core records a [`Node`]: which primitive, its parents, the input shapes and
//! what its VJP reads. The VJP rules and the backward walk live in `wgrad-autograd`.
use crate::storage::Storage;
use crate::{DType, Device, Layout, Result, Tensor};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
pub use wgrad_kernels::{BinaryOp, UnaryOp};

/// Reductions that carry a gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Max,
    Min,
}

/// A user-defined primitive: its forward runs as the user wrote it (for instance a WGSL
/// kernel of their own), autograd calls `vjp` written with differentiable Tensor ops.
pub trait CustomOp: Send + Sync {
    fn name(&self) -> &str;
    /// Input cotangents (None for inputs without a gradient) given the inputs, the output
    /// and the output cotangent `g`. Written with Tensor ops, it is differentiable again.
    fn vjp(&self, inputs: &[Tensor], output: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>>;
}

/// The primitives that autograd knows. Composite ops (softmax, mean...) record their parts.
#[derive(Clone)]
pub enum Op {
    /// The tracked input of a transform; its one parent is the outer node, if any.
    Leaf,
    Unary(UnaryOp, f64),
    Binary(BinaryOp),
    /// where(cond, a, b); cond has no gradient.
    Where,
    Reduce { kind: ReduceKind, axes: Vec<usize>, keepdim: bool },
    /// argmax / argmin: piecewise constant, no gradient.
    ArgReduce,
    Matmul,
    Reshape,
    Permute(Vec<usize>),
    BroadcastTo,
    Narrow { axis: usize, start: usize },
    Contiguous,
    Cat { axis: usize },
    ToDtype,
    ToDevice(Device),
    IndexSelect { axis: usize },
    Gather { axis: usize },
    /// X = A^-1 B (A [.., n, n], B [.., n, k]).
    Solve,
    /// log |det A| (the second output of slogdet).
    LogAbsDet,
    /// Lower Cholesky factor.
    Cholesky,
    /// Image patches as columns (and its adjoint): convolution as matmul.
    Im2Col(wgrad_kernels::ConvGeometry),
    Col2Im(wgrad_kernels::ConvGeometry),
    Custom(Arc<dyn CustomOp>),
}

impl Op {
    pub fn name(&self) -> String {
        match self {
            Op::Leaf => "leaf".into(),
            Op::Unary(u, _) => format!("{u:?}").to_lowercase(),
            Op::Binary(b) => format!("{b:?}").to_lowercase(),
            Op::Where => "where".into(),
            Op::Reduce { kind, .. } => format!("{kind:?}").to_lowercase(),
            Op::ArgReduce => "argmax/argmin".into(),
            Op::Matmul => "matmul".into(),
            Op::Reshape => "reshape".into(),
            Op::Permute(_) => "permute".into(),
            Op::BroadcastTo => "broadcast_to".into(),
            Op::Narrow { .. } => "narrow".into(),
            Op::Contiguous => "contiguous".into(),
            Op::Cat { .. } => "cat".into(),
            Op::ToDtype => "to_dtype".into(),
            Op::ToDevice(_) => "to_device".into(),
            Op::IndexSelect { .. } => "index_select".into(),
            Op::Gather { .. } => "gather".into(),
            Op::Solve => "solve".into(),
            Op::LogAbsDet => "slogdet".into(),
            Op::Cholesky => "cholesky".into(),
            Op::Im2Col(_) => "im2col".into(),
            Op::Col2Im(_) => "col2im".into(),
            Op::Custom(c) => c.name().to_string(),
        }
    }
}

/// The data of a forward output kept for its VJP, without a reference to its node (which
/// would be a cycle); the engine rebuilds the output tensor with the node attached.
#[derive(Clone)]
pub struct SavedOutput {
    pub(crate) storage: Storage,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
}

/// One recorded application of a primitive.
pub struct Node {
    id: u64,
    pub op: Op,
    /// One entry per input: its node, or None when that input is not tracked.
    pub parents: Vec<Option<Arc<Node>>>,
    pub input_shapes: Vec<Vec<usize>>,
    pub input_dtypes: Vec<DType>,
    /// Inputs the VJP reads (None where it does not), with their own graph.
    pub saved_inputs: Vec<Option<Tensor>>,
    pub(crate) saved_output: Option<SavedOutput>,
}

impl Node {
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Input `i` as saved at forward time.
    pub fn input(&self, i: usize) -> Result<&Tensor> {
        self.saved_inputs.get(i).and_then(|t| t.as_ref()).ok_or_else(|| crate::Error::Invalid {
            op: "vjp",
            msg: format!("{} did not save input {i}", self.op.name()),
        })
    }
    /// The forward output as a tensor whose graph node is `this` (so VJPs that read the
    /// output stay differentiable).
    pub fn output(this: &Arc<Node>) -> Result<Tensor> {
        let s = this.saved_output.as_ref().ok_or_else(|| crate::Error::Invalid {
            op: "vjp",
            msg: format!("{} did not save its output", this.op.name()),
        })?;
        Ok(Tensor::from_parts(s.storage.clone(), s.layout.clone(), s.dtype, s.device.clone(), Some(this.clone())))
    }
}

// Long chains would otherwise drop recursively and overflow the stack.
impl Drop for Node {
    fn drop(&mut self) {
        let mut stack: Vec<Arc<Node>> = self.parents.drain(..).flatten().collect();
        stack.extend(self.saved_inputs.drain(..).flatten().filter_map(|t| t.take_node_if_unique()));
        while let Some(n) = stack.pop() {
            if let Some(mut node) = Arc::into_inner(n) {
                stack.extend(node.parents.drain(..).flatten());
                stack.extend(node.saved_inputs.drain(..).flatten().filter_map(|t| t.take_node_if_unique()));
            }
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(true) };
    static TRANSFORM_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Whether ops on tracked tensors record graph nodes on this thread.
pub fn is_recording() -> bool {
    RECORDING.with(|r| r.get())
}

struct RestoreRecording(bool);
impl Drop for RestoreRecording {
    fn drop(&mut self) {
        RECORDING.with(|r| r.set(self.0));
    }
}

/// Run `f` without recording a graph (inference, optimizer updates).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _restore = RestoreRecording(RECORDING.with(|r| r.replace(false)));
    f()
}

/// Run `f` with recording forced on (the backward pass of a nested transform).
pub fn with_grad<R>(f: impl FnOnce() -> R) -> R {
    let _restore = RestoreRecording(RECORDING.with(|r| r.replace(true)));
    f()
}

/// Guard for one active transform (grad, vjp, ...) on this thread.
pub struct TransformGuard(());
impl Drop for TransformGuard {
    fn drop(&mut self) {
        TRANSFORM_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Enter a transform; returns the guard and the depth including this one.
pub fn enter_transform() -> (TransformGuard, usize) {
    let depth = TRANSFORM_DEPTH.with(|d| {
        d.set(d.get() + 1);
        d.get()
    });
    (TransformGuard(()), depth)
}

/// Attach a node for `op` to `out` when recording and some input is tracked.
pub(crate) fn record(out: Tensor, op: Op, inputs: &[&Tensor], save_inputs: &[bool], save_output: bool) -> Tensor {
    if !is_recording() || inputs.iter().all(|t| t.node().is_none()) {
        return out;
    }
    let node = Node {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        op,
        parents: inputs.iter().map(|t| t.node().cloned()).collect(),
        input_shapes: inputs.iter().map(|t| t.shape().to_vec()).collect(),
        input_dtypes: inputs.iter().map(|t| t.dtype()).collect(),
        saved_inputs: inputs
            .iter()
            .enumerate()
            .map(|(i, t)| save_inputs.get(i).copied().unwrap_or(false).then(|| (*t).clone()))
            .collect(),
        saved_output: save_output.then(|| out.saved_output()),
    };
    out.with_node(Some(Arc::new(node)))
}

/// A tracked copy of `x` (same data): the input of a transform. Its parent is x's node,
/// so an enclosing transform still sees through it.
pub fn track(x: &Tensor) -> Tensor {
    let node = Node {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        op: Op::Leaf,
        parents: vec![x.node().cloned()],
        input_shapes: vec![x.shape().to_vec()],
        input_dtypes: vec![x.dtype()],
        saved_inputs: vec![None],
        saved_output: None,
    };
    x.with_node(Some(Arc::new(node)))
}

/// Record a user primitive: `forward` runs without recording, then one node of `op` is attached.
pub fn custom_op(op: Arc<dyn CustomOp>, inputs: &[&Tensor], forward: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    let out = no_grad(forward)?;
    let n = inputs.len();
    Ok(record(out, Op::Custom(op), inputs, &vec![true; n], true))
}
