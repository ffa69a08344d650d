//! The single entry point every primitive runs through (JAX's `bind`), and the
//! [`Primitive`] trait whose one impl block per primitive holds, in order: its name and
//! attributes (the struct), its shape/dtype rule, what its VJP saves, the CPU reference,
//! the GPU launch, the VJP and the JVP. The blocks live by family under `ops/`.
//!
//! [`bind`] runs, in this order:
//! 1. the pure shape and dtype rule (an error before anything is dispatched);
//! 2. the forward on the inputs' device, on plain copies of the inputs (nothing inside
//!    records or pushes tangents);
//! 3. a node for reverse mode, when recording and an input is tracked;
//! 4. tangents for forward mode, one active level at a time, innermost level last.
//!
//! At the base, on the GPU, a primitive with a [`Primitive::fusible`] form (elementwise
//! ops, matmul, reductions) is deferred instead of launched, and any other primitive's
//! pending inputs are computed first (automatic fusion, `fusion/`).
use crate::graph::{self, Node};
use crate::storage::{CpuStorage, Storage};
use crate::{transform, DType, Device, Error, Result, Tensor};
use std::sync::{Arc, OnceLock};
use wgrad_kernels::{Context, GpuBuffer};

pub use crate::custom_op::{custom_op, jvp_from_vjp, vmap_fallback_loops, CustomForward, CustomOp, UserForward};

/// Shape and dtype of a primitive's output, from its shape rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutSpec {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl OutSpec {
    pub fn new(shape: &[usize], dtype: DType) -> OutSpec {
        OutSpec { shape: shape.to_vec(), dtype }
    }
    /// A CPU result around reference values.
    pub fn cpu(&self, s: CpuStorage) -> Tensor {
        Tensor::new_contiguous(Storage::cpu_owned(s), &self.shape, self.dtype, Device::Cpu)
    }
    /// A GPU result around a kernel's output buffer.
    pub fn gpu(&self, buf: GpuBuffer, device: &Device) -> Tensor {
        Tensor::new_contiguous(Storage::Gpu(Arc::new(buf)), &self.shape, self.dtype, device.clone())
    }
}

/// One primitive op. Rules are written with the differentiable Tensor ops users call, so
/// every derivative can be differentiated again.
pub trait Primitive: Send + Sync + 'static {
    /// The name errors and profiles use.
    fn name(&self) -> String;
    /// Output shape and dtype; an `Err` naming the op and the shapes for bad input.
    fn shape_rule(&self, inputs: &[&Tensor]) -> Result<OutSpec>;
    /// Whether the VJP reads input `i`.
    fn saves_input(&self, _i: usize) -> bool {
        false
    }
    /// Whether the VJP reads the output.
    fn saves_output(&self) -> bool {
        false
    }
    /// Whether the output carries derivatives at all (argmax, comparisons, masks: no).
    fn differentiable(&self) -> bool {
        true
    }
    /// The forward on plain (untracked, tangent-free) inputs. By default: [`Primitive::cpu`]
    /// or [`Primitive::gpu`] by the first input's device; views override it.
    fn forward(&self, inputs: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        match inputs[0].device() {
            Device::Cpu => self.cpu(inputs, out),
            Device::Gpu(ctx) => self.gpu(ctx, inputs, out),
        }
    }
    /// The host values the primitive carries (a scale, an epsilon): a CPU jit trace compares
    /// them between calls, as launch parameters are compared on a GPU.
    fn host_values(&self) -> Vec<f64> {
        Vec::new()
    }
    /// A primitive keyed by the host generator (CPU random draws): the same draw under the
    /// key `next(key, blocks)` gives it, so that a CPU jit replay draws fresh numbers as an
    /// eager call does. None for every other primitive.
    fn rekeyed(&self, _next: &mut dyn FnMut((u64, u64), u64) -> (u64, u64)) -> Option<Arc<dyn Primitive>> {
        None
    }
    /// The CPU reference (f64 inside, rounded to the dtype).
    fn cpu(&self, _inputs: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        Err(Error::Invalid { op: "forward", msg: format!("{} has no CPU reference", self.name()) })
    }
    /// The GPU launch (WGSL kernels only).
    fn gpu(&self, _ctx: &Arc<Context>, _inputs: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        Err(Error::Invalid { op: "forward", msg: format!("{} has no GPU kernel", self.name()) })
    }
    /// Input cotangents (None: no gradient) from the output cotangent `g`, in the broadcast
    /// (output-side) shape; the engine unbroadcasts.
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>>;
    /// The output tangent (None: zero) from the input tangents (None: zero), given the
    /// primal inputs and output.
    fn jvp(&self, primals: &[Tensor], out: &Tensor, tangents: &[Option<Tensor>]) -> Result<Option<Tensor>>;
    /// The batching rule for vmap: the physical output (examples on axis 0) from the
    /// physical inputs, where `batched[i]` says whether input i carries the batch on its
    /// axis 0 (the others are shared by every example). Written with ops.
    fn batch(&self, inputs: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        let _ = (inputs, batched, b);
        Err(Error::MissingRule { op: self.name(), transform: "vmap" })
    }
    /// The form fusion may defer (see `fusion/`: elementwise ops, matmul, reductions); None
    /// for every other primitive, which reads its inputs materialized.
    fn fusible(&self) -> Option<crate::fusion::Fusible> {
        None
    }
    /// Whether this primitive computes these inputs' f16 values in f32: f16 is a storage
    /// format, so [`bind`] then runs it on f32 copies of its f16 inputs and stores an f16
    /// result back (the conversions are primitives too, so every transform sees through
    /// them). Elementwise ops read f16 storage directly on adapters with SHADER_F16.
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        let _ = inputs;
        false
    }
    /// Whether this is a matrix product (what [`crate::CheckpointPolicy::Matmuls`] keeps).
    fn is_matmul(&self) -> bool {
        false
    }
    /// The name a [`crate::checkpoint_name`] marker gives its value.
    fn checkpoint_name(&self) -> Option<&str> {
        None
    }
    /// Whether the entry point checks a batching rule's output against the shape rule
    /// (user primitives have no shape rule of their own).
    fn checks_batched_shape(&self) -> bool {
        true
    }
}

/// The vmap level a batching rule runs at.
pub struct Batch {
    pub level: u64,
    /// Examples along every batched input's axis 0.
    pub size: usize,
}

impl Batch {
    /// The logical (per-example) view of a physical result whose axis 0 holds the examples.
    pub fn wrap(&self, physical: Tensor) -> Tensor {
        Tensor::batched(self.level, physical)
    }
    /// `x` with the batch on axis 0: batched inputs as they are, unbatched ones broadcast
    /// (a stride-0 view, no copy).
    pub fn expand(&self, x: &Tensor, batched: bool) -> Result<Tensor> {
        if batched {
            return Ok(x.clone());
        }
        let mut shape = vec![self.size];
        shape.extend_from_slice(x.shape());
        x.broadcast_to(&shape)
    }
}

thread_local! {
    static CPU_PRIMITIVES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Primitives this thread ran through [`bind`] on the CPU device.
pub(crate) fn cpu_primitives() -> u64 {
    CPU_PRIMITIVES.with(|n| n.get())
}

/// Count a primitive on its device ([`crate::Counters::primitives`]).
fn note_primitive(inputs: &[&Tensor]) {
    match inputs.first().map(|t| t.device()) {
        Some(Device::Gpu(ctx)) => ctx.note_primitive(),
        Some(Device::Cpu) => CPU_PRIMITIVES.with(|n| n.set(n.get() + 1)),
        None => {}
    }
}

/// Run `prim` on `inputs` through every active transform.
pub fn bind(prim: Arc<dyn Primitive>, inputs: &[&Tensor]) -> Result<Tensor> {
    note_primitive(inputs);
    let spec = prim.shape_rule(inputs)?;
    if prim.computes_in_f32(inputs) {
        // the dtype policy: f16 inputs computed in f32, an f16 result stored back
        let wide =
            inputs.iter().map(|t| if t.dtype() == DType::F16 { t.to_dtype(DType::F32) } else { Ok((*t).clone()) });
        let wide = wide.collect::<Result<Vec<_>>>()?;
        let out = bind(prim, &wide.iter().collect::<Vec<_>>())?;
        return if spec.dtype == DType::F16 { out.to_dtype(DType::F16) } else { Ok(out) };
    }
    // on the CPU through the jit's recorder (a step when a trace is open); `p` is `prim`
    let recorded = prim.clone();
    let mut forward = |p: &dyn Primitive, plain: &[&Tensor], spec: &OutSpec| match plain.first().map(|t| t.device()) {
        Some(Device::Cpu) => crate::cpu_plan::forward(&recorded, plain, spec),
        _ => p.forward(plain, spec),
    };
    bind_levels(&prim, inputs, inputs, Some(&spec), &mut forward)
}

pub(crate) type Forward<'a> = dyn FnMut(&dyn Primitive, &[&Tensor], &OutSpec) -> Result<Tensor> + 'a;

/// The highest active level an input carries: (level, whether it is a vmap level).
fn top_level(t: &Tensor) -> Result<Option<(u64, bool)>> {
    let mut top = None;
    if let Some((level, _)) = t.batch() {
        if !transform::is_vmap_alive(level) {
            return Err(Error::Invalid {
                op: "vmap",
                msg: "a batched tensor escaped its vmap (return it from f instead of keeping it)".into(),
            });
        }
        top = Some((level, true));
    }
    for (level, _) in t.duals() {
        if transform::is_forward_alive(*level) && top.is_none_or(|(l, _)| *level > l) {
            top = Some((*level, false));
        }
    }
    Ok(top)
}

/// The kind of a transform level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LevelKind {
    /// Forward mode (`jvp`): tangents keyed by level.
    Forward,
    /// `vmap`: batched tensors keyed by level.
    Vmap,
}

/// How one kind of transform handles a primitive at one of its levels (JAX's
/// `Trace.process_primitive`): given the primitive, its inputs (some carrying `level`) and
/// its output spec (None where only the level's rule can tell it: a custom op under vmap
/// takes its shape from its batching rule), produce the output at that level. `lower` runs the primitive on
/// inputs one level down (the remaining levels, then the device). Core defines the
/// interface and the base (the device, fusion, graph recording); `wgrad-autograd`
/// implements and registers forward mode and vmap, so a new transform (a jit tracer, a
/// checkpoint recorder) is one more impl, not an arm in core.
pub trait Interpreter: Send + Sync {
    fn process(
        &self,
        level: u64,
        prim: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        spec: Option<&OutSpec>,
        lower: &mut dyn FnMut(&[&Tensor]) -> Result<Tensor>,
    ) -> Result<Tensor>;
}

static FORWARD_INTERPRETER: OnceLock<&'static dyn Interpreter> = OnceLock::new();
static VMAP_INTERPRETER: OnceLock<&'static dyn Interpreter> = OnceLock::new();

fn slot(kind: LevelKind) -> &'static OnceLock<&'static dyn Interpreter> {
    match kind {
        LevelKind::Forward => &FORWARD_INTERPRETER,
        LevelKind::Vmap => &VMAP_INTERPRETER,
    }
}

/// Register the interpreter of a level kind (the first registration of a kind wins).
pub fn register_interpreter(kind: LevelKind, interpreter: &'static dyn Interpreter) {
    let _ = slot(kind).set(interpreter);
}

fn interpreter(kind: LevelKind) -> Result<&'static dyn Interpreter> {
    slot(kind).get().copied().ok_or_else(|| Error::Invalid {
        op: "bind",
        msg: format!("no interpreter is registered for {kind:?} levels (use the transforms of wgrad-autograd)"),
    })
}

/// Steps 2-4 of [`bind`], one level at a time from the highest: the interpreter of the
/// top level's kind handles the op (its `lower` binds one level down); with no level left
/// the forward runs on plain inputs (deferred for fusion where it can be) and a node is
/// recorded. `originals` are what the node saves: the inputs as they came, tangents of
/// enclosing forward levels included (forward-over-reverse reads them). `spec` is None for
/// a custom op under vmap, whose batching rule gives the shape (the base is not reached).
pub(crate) fn bind_levels(
    prim: &Arc<dyn Primitive>,
    inputs: &[&Tensor],
    originals: &[&Tensor],
    spec: Option<&OutSpec>,
    forward: &mut Forward,
) -> Result<Tensor> {
    let mut top: Option<(u64, bool)> = None;
    if !transform::is_suspended() {
        for t in inputs {
            if let Some(l) = top_level(t)? {
                if top.is_none_or(|(best, _)| l.0 > best) {
                    top = Some(l);
                }
            }
        }
    }
    match top {
        Some((level, vmap)) => {
            let kind = if vmap { LevelKind::Vmap } else { LevelKind::Forward };
            let mut lower = |xs: &[&Tensor]| bind_levels(prim, xs, originals, spec, forward);
            interpreter(kind)?.process(level, prim, inputs, spec, &mut lower)
        }
        None => {
            let spec = spec.ok_or_else(|| Error::Internal {
                op: "bind",
                msg: format!("{} reached the device without an output spec", prim.name()),
            })?;
            let plain: Vec<Tensor> = inputs.iter().map(|t| t.plain()).collect();
            if let Some(op) = prim.fusible() {
                if let Some(out) = crate::fusion::defer(op, &plain, spec)? {
                    return Ok(graph::record(out, prim, originals));
                }
            }
            // anything else reads data: pending fused inputs are computed first, and ops
            // inside the forward run unfused (its kernels read their buffers directly)
            let plain = plain.iter().map(|t| t.materialized()).collect::<Result<Vec<_>>>()?;
            let plain_refs: Vec<&Tensor> = plain.iter().collect();
            let mut run = || crate::fusion::with_fusion(false, || forward(prim.as_ref(), &plain_refs, spec));
            let out = match plain.first().map(|t| t.device()) {
                Some(Device::Cpu) => crate::cpu_profile::timed(|| prim.name(), run),
                _ => run(),
            }?
            .plain();
            if out.shape() != spec.shape {
                return Err(Error::Invalid {
                    op: "bind",
                    msg: format!(
                        "{} produced shape {:?}, its shape rule says {:?}",
                        prim.name(),
                        out.shape(),
                        spec.shape
                    ),
                });
            }
            Ok(graph::record(out, prim, originals))
        }
    }
}

/// The identity: the tracked input of a transform (no marker), or a value marked with a
/// name that a checkpoint policy can keep ([`crate::checkpoint_name`]).
pub(crate) struct Identity {
    pub marker: Option<String>,
}

impl Primitive for Identity {
    fn name(&self) -> String {
        match &self.marker {
            None => "leaf".into(),
            Some(name) => format!("checkpoint_name({name})"),
        }
    }
    fn shape_rule(&self, inputs: &[&Tensor]) -> Result<OutSpec> {
        Ok(OutSpec::new(inputs[0].shape(), inputs[0].dtype()))
    }
    fn forward(&self, inputs: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        Ok(inputs[0].clone())
    }
    fn checkpoint_name(&self) -> Option<&str> {
        self.marker.as_deref()
    }
    /// d x = dx
    fn vjp(&self, _node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
    /// jvp x = t
    fn jvp(&self, _p: &[Tensor], _out: &Tensor, tangents: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        Ok(tangents[0].clone())
    }
    /// batch: the identity on the physical tensor
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        b.expand(&x[0], batched[0])
    }
}

/// The backward walk, filled in by `wgrad-autograd` (core cannot depend on it): the
/// cotangents of `targets` given (output, cotangent) pairs, taped when the flag is set.
pub type BackwardFn = fn(&[(Tensor, Tensor)], &[Tensor], bool) -> Result<Vec<Option<Tensor>>>;

pub(crate) static BACKWARD: OnceLock<BackwardFn> = OnceLock::new();

/// Register the backward walk (called by `wgrad-autograd` on every transform entry).
pub fn register_backward(f: BackwardFn) {
    let _ = BACKWARD.set(f);
}

/// The physical tensor of `t` with respect to the vmap `levels` (lowest first, with their
/// sizes): one leading axis per level, in that order, then t's own axes. A level `t` is
/// not batched at is broadcast (every example sees the same value); forward-mode tangents
/// are lifted alongside, so row b of the tangent stays the tangent of row b. This is what
/// a reverse-mode tape inside vmap records: values with every example's axis explicit, so
/// the tape holds unbatched primitives only.
pub fn lift(t: &Tensor, levels: &[(u64, usize)]) -> Result<Tensor> {
    if levels.is_empty() {
        return Ok(t.clone());
    }
    if !t.duals().is_empty() {
        let mut out = lift(&t.keep_levels_below(0), levels)?;
        for (level, tangent) in t.duals() {
            out = out.with_dual(*level, lift(tangent, levels)?);
        }
        return Ok(out);
    }
    let (&(level, size), rest) = levels.split_last().expect("not empty");
    if let Some((l, physical)) = t.batch() {
        if l == level {
            return lift(physical, rest);
        }
    }
    if t.batch_levels().contains(&level) {
        return Err(Error::Invalid {
            op: "vmap",
            msg: "a tensor batched by an outer vmap under an inner one reached a transform (unsupported)".into(),
        });
    }
    let q = lift(t, rest)?;
    let mut shape = q.shape().to_vec();
    shape.insert(rest.len(), size);
    q.unsqueeze(rest.len() as isize)?.broadcast_to(&shape)
}

/// The inverse of [`lift`]: the logical tensor whose examples at `levels` are the leading
/// axes of `physical`. Tangents stay with the physical tensor, row by row (see
/// `Tensor::tangent`, which looks through batched views).
pub fn rewrap(physical: &Tensor, levels: &[(u64, usize)]) -> Tensor {
    levels.iter().fold(physical.clone(), |t, &(level, _)| Tensor::batched(level, t))
}
