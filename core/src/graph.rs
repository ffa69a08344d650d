//! Graph recording for reverse mode. When a primitive runs on a tracked tensor (one with
//! a node) while recording is on, the entry point records a [`Node`]: the primitive (with
//! every attribute needed to run it again), its parents, the input and output shapes and
//! what its VJP reads. The backward walk lives in `wgrad-autograd`.
use crate::primitive::Primitive;
use crate::storage::Storage;
use crate::{transform, DType, Device, Layout, Result, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
pub use wgrad_kernels::{BinaryOp, UnaryOp};

/// Reductions that carry a gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Max,
    Min,
}

/// The data of a forward output kept for its VJP, without a strong reference to its node
/// (which would be a cycle); the node rebuilds the output tensor with itself attached.
#[derive(Clone)]
pub(crate) struct SavedOutput {
    pub(crate) storage: Storage,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
}

/// A forward-mode tangent of a saved output. Its node is held weakly: the tangent was
/// computed from the output itself, so a strong handle would be a cycle. A batched
/// tangent (a view over a physical tensor, with no node of its own) is kept whole.
struct SavedTangent {
    data: SavedOutput,
    node: Weak<Node>,
    duals: Vec<(u64, Tensor)>,
    batched: Option<Tensor>,
}

/// One recorded application of a primitive.
pub struct Node {
    id: u64,
    pub op: Arc<dyn Primitive>,
    /// One entry per input: its node, or None when that input is not tracked.
    pub parents: Vec<Option<Arc<Node>>>,
    pub input_shapes: Vec<Vec<usize>>,
    pub input_dtypes: Vec<DType>,
    pub output_shape: Vec<usize>,
    /// Inputs the VJP reads (None where it does not), with their own graph and the
    /// tangents of enclosing forward-mode transforms (forward-over-reverse).
    pub saved_inputs: Vec<Option<Tensor>>,
    pub(crate) saved_output: Option<SavedOutput>,
    output_tangents: Mutex<Vec<(u64, SavedTangent)>>,
    /// Recorded inside a checkpointed function with values dropped: where to replay them.
    recompute: Option<crate::checkpoint::RegionLink>,
    /// The checkpoint region this output node keeps alive (see `checkpoint`).
    owned_region: std::sync::OnceLock<Arc<crate::checkpoint::Region>>,
}

impl Node {
    pub fn id(&self) -> u64 {
        self.id
    }
    /// The primitive's name.
    pub fn name(&self) -> String {
        self.op.name()
    }
    /// Whether this is the tracked input of a transform.
    pub fn is_leaf(&self) -> bool {
        self.op.name() == "leaf"
    }
    /// Whether input `i` is tracked (its cotangent is wanted).
    pub fn needs_grad(&self, i: usize) -> bool {
        self.parents.get(i).is_some_and(|p| p.is_some())
    }
    /// Input `i` as saved at forward time (or, inside a checkpointed function, as replayed).
    pub fn input(&self, i: usize) -> Result<Tensor> {
        if let Some(t) = self.saved_inputs.get(i).and_then(|t| t.as_ref()) {
            return Ok(t.clone());
        }
        if let (Some((region, index)), true) = (&self.recompute, self.op.saves_input(i)) {
            let region = region.upgrade().ok_or_else(crate::checkpoint::region_gone)?;
            return Ok(saved_copy(&region.input(*index, i)?));
        }
        Err(crate::Error::Internal {
            op: "vjp",
            msg: format!("{} did not save input {i} (its saves rule and its VJP disagree)", self.op.name()),
        })
    }
    /// Keep a checkpoint region alive (this node is one of its outputs).
    pub(crate) fn own_region(&self, region: Arc<crate::checkpoint::Region>) {
        let _ = self.owned_region.set(region);
    }
    /// Called by the backward walk once this node's VJP has run: values a checkpoint
    /// replayed for it can be freed when no other node waits for them.
    pub fn vjp_done(&self) {
        if let Some((region, index)) = &self.recompute {
            if let Some(region) = region.upgrade() {
                region.done(*index);
            }
        }
    }
    /// The forward output as a tensor whose graph node is `this` (so VJPs that read the
    /// output stay differentiable), with the tangents it had.
    pub fn output(this: &Arc<Node>) -> Result<Tensor> {
        if let (None, Some((region, index)), true) = (&this.saved_output, &this.recompute, this.op.saves_output()) {
            let region = region.upgrade().ok_or_else(crate::checkpoint::region_gone)?;
            return Ok(region.value(*index)?.with_node(Some(this.clone())));
        }
        let s = this.saved_output.as_ref().ok_or_else(|| crate::Error::Internal {
            op: "vjp",
            msg: format!("{} did not save its output (its saves rule and its VJP disagree)", this.op.name()),
        })?;
        let mut out =
            Tensor::from_parts(s.storage.clone(), s.layout.clone(), s.dtype, s.device.clone(), Some(this.clone()));
        let tangents = this.output_tangents.lock().unwrap_or_else(|p| p.into_inner());
        for (level, t) in tangents.iter() {
            if let Some(b) = &t.batched {
                out = out.with_dual(*level, b.clone());
                continue;
            }
            let d = &t.data;
            let tangent =
                Tensor::from_parts(d.storage.clone(), d.layout.clone(), d.dtype, d.device.clone(), t.node.upgrade())
                    .with_duals(t.duals.clone());
            out = out.with_dual(*level, tangent);
        }
        Ok(out)
    }

    /// Remember the forward-mode tangent of the output at `level` (for VJPs that read it).
    pub(crate) fn save_output_tangent(&self, level: u64, t: &Tensor) {
        if self.saved_output.is_none() {
            return;
        }
        let saved = SavedTangent {
            data: t.saved_output(),
            node: t.node().map(Arc::downgrade).unwrap_or_default(),
            duals: t.duals().to_vec(),
            batched: t.batch().is_some().then(|| t.clone()),
        };
        self.output_tangents.lock().unwrap_or_else(|p| p.into_inner()).push((level, saved));
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

/// What a saved tensor keeps: its node, and the tangents of forward-mode levels outside
/// the innermost tape (those the backward pass must carry; inner ones are not its business).
fn saved_copy(t: &Tensor) -> Tensor {
    let keep = transform::innermost_reverse().unwrap_or(0);
    t.keep_levels_below(keep)
}

/// Attach a node for `op` to `out` when recording and some input is tracked.
pub(crate) fn record(out: Tensor, op: &Arc<dyn Primitive>, inputs: &[&Tensor]) -> Tensor {
    if !transform::is_recording() || inputs.iter().all(|t| t.node().is_none()) || !op.differentiable() {
        return out;
    }
    if let Some(region) = crate::checkpoint::active() {
        return record_in_region(out, op, inputs, &region);
    }
    let node = new_node(op, inputs, &out, |i| op.saves_input(i), op.saves_output(), None);
    out.with_node(Some(Arc::new(node)))
}

/// A node for `op` on `inputs` giving `out`, saving input i where `keep_input(i)` and the
/// output where `keep_output`.
fn new_node(
    op: &Arc<dyn Primitive>,
    inputs: &[&Tensor],
    out: &Tensor,
    keep_input: impl Fn(usize) -> bool,
    keep_output: bool,
    recompute: Option<crate::checkpoint::RegionLink>,
) -> Node {
    Node {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        op: op.clone(),
        parents: inputs.iter().map(|t| t.node().cloned()).collect(),
        input_shapes: inputs.iter().map(|t| t.shape().to_vec()).collect(),
        input_dtypes: inputs.iter().map(|t| t.dtype()).collect(),
        output_shape: out.shape().to_vec(),
        saved_inputs: inputs.iter().enumerate().map(|(i, t)| keep_input(i).then(|| saved_copy(t))).collect(),
        saved_output: keep_output.then(|| out.saved_output()),
        output_tangents: Mutex::new(Vec::new()),
        recompute,
        owned_region: std::sync::OnceLock::new(),
    }
}

/// [`record`] inside a checkpointed function: the node saves only what the region's
/// policy keeps, and can replay the rest.
fn record_in_region(
    out: Tensor,
    op: &Arc<dyn Primitive>,
    inputs: &[&Tensor],
    region: &Arc<crate::checkpoint::Region>,
) -> Tensor {
    let (sources, keep) = region.plan(op, inputs);
    // the node's index in the region is the next one
    let link = (Arc::downgrade(region), region.len());
    let node = Arc::new(new_node(op, inputs, &out, |i| keep.keep_input[i], keep.keep_output, Some(link)));
    region.push(&node, &out, sources, &keep);
    out.with_node(Some(node))
}

/// A tracked copy of `x` (same data, same tangents): the input of a transform. Its parent
/// is x's node, so an enclosing transform still sees through it.
pub(crate) fn track(x: &Tensor) -> Tensor {
    let leaf: Arc<dyn Primitive> = Arc::new(crate::primitive::Identity { marker: None });
    x.with_node(Some(Arc::new(new_node(&leaf, &[x], x, |_| false, false, None))))
}
