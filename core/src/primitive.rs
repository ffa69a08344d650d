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
//! The vmap issue adds batching and the fusion issue adds deferral at the same place.
use crate::graph::{self, Node};
use crate::storage::{CpuStorage, Storage};
use crate::{transform, DType, Device, Error, Result, Tensor};
use std::sync::{Arc, OnceLock};
use wgrad_kernels::{Context, GpuBuffer};

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
        Tensor::new_contiguous(Storage::Cpu(Arc::new(s)), &self.shape, self.dtype, Device::Cpu)
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
}

/// Run `prim` on `inputs` through every active transform.
pub fn bind(prim: Arc<dyn Primitive>, inputs: &[&Tensor]) -> Result<Tensor> {
    let spec = prim.shape_rule(inputs)?;
    bind_with(prim, inputs, spec, |p, plain, spec| p.forward(plain, spec))
}

/// [`bind`] with a given forward (user primitives run their own closure).
pub(crate) fn bind_with(
    prim: Arc<dyn Primitive>,
    inputs: &[&Tensor],
    spec: OutSpec,
    forward: impl FnOnce(&dyn Primitive, &[&Tensor], &OutSpec) -> Result<Tensor>,
) -> Result<Tensor> {
    let plain: Vec<Tensor> = inputs.iter().map(|t| t.plain()).collect();
    let plain_refs: Vec<&Tensor> = plain.iter().collect();
    let out = forward(prim.as_ref(), &plain_refs, &spec)?.plain();
    if out.shape() != spec.shape {
        return Err(Error::Invalid {
            op: "bind",
            msg: format!("{} produced shape {:?}, its shape rule says {:?}", prim.name(), out.shape(), spec.shape),
        });
    }
    let out = graph::record(out, &prim, inputs);
    push_tangents(&prim, inputs, out)
}

/// Step 4 of [`bind`]: for each active forward level of the inputs, lowest first, the
/// output tangent from the primitive's JVP rule. Rule ops are taped only when a reverse
/// transform encloses that level (grad of jvp); otherwise nothing records them.
fn push_tangents(prim: &Arc<dyn Primitive>, inputs: &[&Tensor], out: Tensor) -> Result<Tensor> {
    if transform::is_suspended() || !prim.differentiable() {
        return Ok(out);
    }
    let mut levels: Vec<u64> = inputs
        .iter()
        .flat_map(|t| t.duals().iter().map(|(l, _)| *l))
        .filter(|&l| transform::is_forward_alive(l))
        .collect();
    if levels.is_empty() {
        return Ok(out);
    }
    levels.sort_unstable();
    levels.dedup();
    let mut cur = out;
    for level in levels {
        let primals: Vec<Tensor> = inputs.iter().map(|t| t.keep_levels_below(level)).collect();
        let tangents: Vec<Option<Tensor>> = inputs.iter().map(|t| t.tangent(level)).collect();
        if tangents.iter().all(|t| t.is_none()) {
            continue;
        }
        let rule = || prim.jvp(&primals, &cur, &tangents);
        let t = if transform::reverse_below(level) { rule()? } else { transform::no_grad(rule)? };
        let Some(t) = t else { continue };
        if t.shape() != cur.shape() {
            return Err(Error::Invalid {
                op: "jvp",
                msg: format!(
                    "the JVP of {} gave shape {:?} for an output of shape {:?}",
                    prim.name(),
                    t.shape(),
                    cur.shape()
                ),
            });
        }
        if let Some(node) = cur.node() {
            if transform::innermost_reverse().is_some_and(|r| level < r) {
                node.save_output_tangent(level, &t);
            }
        }
        cur = cur.with_dual(level, t);
    }
    Ok(cur)
}

/// The tracked input of a transform: the identity.
pub(crate) struct Leaf;

impl Primitive for Leaf {
    fn name(&self) -> String {
        "leaf".into()
    }
    fn shape_rule(&self, inputs: &[&Tensor]) -> Result<OutSpec> {
        Ok(OutSpec::new(inputs[0].shape(), inputs[0].dtype()))
    }
    fn forward(&self, inputs: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        Ok(inputs[0].clone())
    }
    /// d x = dx
    fn vjp(&self, _node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
    /// jvp x = t
    fn jvp(&self, _p: &[Tensor], _out: &Tensor, tangents: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        Ok(tangents[0].clone())
    }
}

/// The backward walk, filled in by `wgrad-autograd` (core cannot depend on it): the
/// cotangents of `targets` given (output, cotangent) pairs, taped when the flag is set.
pub type BackwardFn = fn(&[(Tensor, Tensor)], &[Tensor], bool) -> Result<Vec<Option<Tensor>>>;

static BACKWARD: OnceLock<BackwardFn> = OnceLock::new();

/// Register the backward walk (called by `wgrad-autograd` on every transform entry).
pub fn register_backward(f: BackwardFn) {
    let _ = BACKWARD.set(f);
}

/// A user-defined primitive: its forward runs as the user wrote it (for instance a WGSL
/// kernel of their own, see [`crate::ElementwiseKernel`]); its rules are written with
/// differentiable Tensor ops.
pub trait CustomOp: Send + Sync {
    fn name(&self) -> &str;
    /// Input cotangents (None for inputs without a gradient) given the inputs, the output
    /// and the output cotangent `g`. Written with Tensor ops, it is differentiable again.
    fn vjp(&self, inputs: &[Tensor], output: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>>;
    /// The output tangent given input tangents (None: zero). Optional: by default it is
    /// derived from [`CustomOp::vjp`], which is linear in its cotangent u, so
    /// J t = d/du <J^T u, t>: one local reverse pass through the VJP on this node alone.
    fn jvp(&self, inputs: &[Tensor], output: &Tensor, tangents: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        jvp_from_vjp(self, inputs, output, tangents)
    }
}

/// J t for a primitive that only has a VJP: the gradient in u of s(u) = sum_i <vjp_i(u), t_i>,
/// taken at u = 0 (any u gives the same: s is linear).
pub fn jvp_from_vjp<C: CustomOp + ?Sized>(
    op: &C,
    inputs: &[Tensor],
    output: &Tensor,
    tangents: &[Option<Tensor>],
) -> Result<Option<Tensor>> {
    let backward = BACKWARD.get().ok_or_else(|| Error::Invalid {
        op: "jvp",
        msg: "the backward walk is not registered (use the transforms of wgrad-autograd)".into(),
    })?;
    let guard = transform::enter_transform(transform::TransformKind::Reverse);
    let u = graph::track(&output.detach().zeros_like()?);
    let s = transform::with_grad(|| -> Result<Option<Tensor>> {
        let cotangents = op.vjp(inputs, output, &u)?;
        let mut s: Option<Tensor> = None;
        for (v, t) in cotangents.iter().zip(tangents) {
            let (Some(v), Some(t)) = (v, t) else { continue };
            let term = v.sum_to_shape(t.shape())?.mul(t)?.sum_all()?;
            s = Some(match s {
                Some(acc) => acc.add(&term)?,
                None => term,
            });
        }
        Ok(s)
    })?;
    let Some(s) = s else { return Ok(None) };
    let seed = s.detach().ones_like()?;
    let jt = backward(&[(s, seed)], &[u], guard.reverse_outside())?.pop().flatten();
    Ok(jt)
}

/// A [`CustomOp`] as a primitive of the entry point.
struct Custom(Arc<dyn CustomOp>);

impl Primitive for Custom {
    fn name(&self) -> String {
        self.0.name().to_string()
    }
    fn shape_rule(&self, _inputs: &[&Tensor]) -> Result<OutSpec> {
        unreachable!("custom ops bind with the shape of their forward's result")
    }
    fn saves_input(&self, _i: usize) -> bool {
        true
    }
    fn saves_output(&self) -> bool {
        true
    }
    /// The user's VJP on the saved inputs and output.
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let inputs = (0..node.saved_inputs.len()).map(|i| node.input(i).cloned()).collect::<Result<Vec<_>>>()?;
        self.0.vjp(&inputs, &Node::output(node)?, g)
    }
    /// The user's JVP, or the one derived from the VJP.
    fn jvp(&self, primals: &[Tensor], out: &Tensor, tangents: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        self.0.jvp(primals, out, tangents)
    }
}

/// Record a user primitive: `forward` runs with every transform off, then one node of
/// `op` is recorded and tangents are pushed through its rules.
pub fn custom_op(
    op: Arc<dyn CustomOp>,
    inputs: &[&Tensor],
    forward: impl FnOnce() -> Result<Tensor>,
) -> Result<Tensor> {
    let out = transform::suspended(forward)?;
    let spec = OutSpec::new(out.shape(), out.dtype());
    bind_with(Arc::new(Custom(op)), inputs, spec, move |_, _, _| Ok(out))
}
