//! User-defined primitives: a [`CustomOp`] carries the rules (VJP, optionally JVP and a
//! batching rule) of a forward the user runs (a WGSL kernel of their own, any Tensor
//! code); [`custom_op`] binds it through the same entry point as every primitive.
use crate::graph::{self, Node};
use crate::primitive::{bind_levels, Batch, OutSpec, Primitive, BACKWARD};
use crate::{transform, Error, Result, Tensor};
use std::sync::Arc;

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
    /// The batching rule for vmap (optional): the output for every example (on axis 0)
    /// from the inputs, where `batched[i]` says whether input i carries `size` examples on
    /// its axis 0. Without one, vmap loops over the examples with [`CustomOp::forward`].
    fn batch(&self, inputs: &[Tensor], batched: &[bool], size: usize) -> Option<Result<Tensor>> {
        let _ = (inputs, batched, size);
        None
    }
    /// The forward as a function of the inputs (optional): what vmap's loop fallback runs
    /// for each example when there is no batching rule.
    fn forward(&self, inputs: &[Tensor]) -> Option<Result<Tensor>> {
        let _ = inputs;
        None
    }
}

thread_local! {
    static VMAP_LOOPS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times vmap has fallen back to a loop over the examples (a custom op with no
/// batching rule) on this thread: a count that other threads' work cannot change. A GPU
/// device also counts its own (`Counters::vmap_fallback_loops`).
pub fn vmap_fallback_loops() -> u64 {
    VMAP_LOOPS.with(|n| n.get())
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

/// The forward given to [`custom_op`]: a function of the inputs (`|xs: &[Tensor]| ...`),
/// which vmap's loop fallback reuses for each example, or a closure over them (`|| ...`),
/// run once (vmap then loops with [`CustomOp::forward`]).
pub enum UserForward<'a> {
    Once(Box<dyn FnOnce() -> Result<Tensor> + 'a>),
    OfInputs(Arc<UserForwardFn>),
}

type UserForwardFn = dyn Fn(&[Tensor]) -> Result<Tensor> + Send + Sync;

/// What [`custom_op`] accepts as its forward (the marker tells the two forms apart).
pub trait CustomForward<'a, Marker> {
    fn into_forward(self) -> UserForward<'a>;
}

/// Marker of a forward that takes the inputs.
pub struct OfInputs;
/// Marker of a forward that closes over the inputs.
pub struct Closure;

impl<'a, F: Fn(&[Tensor]) -> Result<Tensor> + Send + Sync + 'static> CustomForward<'a, OfInputs> for F {
    fn into_forward(self) -> UserForward<'a> {
        UserForward::OfInputs(Arc::new(self))
    }
}
impl<'a, F: FnOnce() -> Result<Tensor> + 'a> CustomForward<'a, Closure> for F {
    fn into_forward(self) -> UserForward<'a> {
        UserForward::Once(Box::new(self))
    }
}

/// A [`CustomOp`] as a primitive of the entry point, with the forward it was given when
/// that forward is a function of the inputs.
struct Custom {
    op: Arc<dyn CustomOp>,
    forward: Option<Arc<UserForwardFn>>,
}

impl Custom {
    /// The forward on one example's inputs: the one given to `custom_op`, else
    /// [`CustomOp::forward`], else an error naming vmap.
    fn example_forward(&self, example: &[Tensor]) -> Result<Tensor> {
        if let Some(f) = &self.forward {
            return f(example);
        }
        self.op
            .forward(example)
            .unwrap_or_else(|| Err(Error::MissingRule { op: self.op.name().to_string(), transform: "vmap" }))
    }
}

impl Primitive for Custom {
    fn name(&self) -> String {
        self.op.name().to_string()
    }
    /// The output spec is that of the forward's result (`custom_op` runs the forward
    /// first); binding the op by itself, with no result, is an error rather than a guess.
    fn shape_rule(&self, _inputs: &[&Tensor]) -> Result<OutSpec> {
        Err(Error::Invalid {
            op: "custom_op",
            msg: format!("{} binds through wgrad::custom_op, which takes its shape from the forward", self.op.name()),
        })
    }
    fn saves_input(&self, _i: usize) -> bool {
        true
    }
    fn saves_output(&self) -> bool {
        true
    }
    /// Run again (a checkpoint's replay): the forward given to `custom_op` when it takes
    /// the inputs; a closure over them cannot run twice.
    fn forward(&self, inputs: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        let example: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        match &self.forward {
            Some(f) => f(&example),
            None => Err(Error::MissingRule {
                op: self.op.name().to_string(),
                transform: "recomputation (give custom_op a forward of its inputs)",
            }),
        }
    }
    /// The user's VJP on the saved inputs and output.
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let inputs = (0..node.saved_inputs.len()).map(|i| node.input(i)).collect::<Result<Vec<_>>>()?;
        self.op.vjp(&inputs, &Node::output(node)?, g)
    }
    /// The user's JVP, or the one derived from the VJP.
    fn jvp(&self, primals: &[Tensor], out: &Tensor, tangents: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        self.op.jvp(primals, out, tangents)
    }
    /// The user's batching rule; without one, a loop over the examples running the forward
    /// on each (counted by [`vmap_fallback_loops`]); without a forward, an error naming vmap.
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        if let Some(out) = self.op.batch(x, batched, b.size) {
            return out;
        }
        VMAP_LOOPS.with(|n| n.set(n.get() + 1));
        let started = web_time::Instant::now();
        let outs = (0..b.size)
            .map(|i| {
                let example = x
                    .iter()
                    .zip(batched)
                    .map(|(t, &bt)| if bt { t.narrow(0, i, 1)?.squeeze(0) } else { Ok(t.clone()) })
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&Tensor> = example.iter().collect();
                enter_custom(Custom { op: self.op.clone(), forward: self.forward.clone() }, &refs, None)
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(ctx) = x.first().and_then(|t| t.device().context()) {
            ctx.note_vmap_fallback(self.op.name(), started.elapsed().as_secs_f64());
        }
        Tensor::stack(&outs, 0)
    }
    fn checks_batched_shape(&self) -> bool {
        false
    }
}

/// Record a user primitive: `forward` runs with every transform off, then one node of
/// `op` is recorded and tangents are pushed through its rules. Under vmap, `forward` is not
/// run on the batch: the op's batching rule is, or a loop running the forward on each
/// example (see [`CustomOp::batch`]). The forward is a function of the inputs
/// (`|xs: &[Tensor]| xs[0].map_kernel(&k, 0.0)`), which that loop reuses, or a closure over
/// them (`|| x.map_kernel(&k, 0.0)`), after which the loop needs [`CustomOp::forward`].
pub fn custom_op<'a, Marker>(
    op: Arc<dyn CustomOp>,
    inputs: &[&Tensor],
    forward: impl CustomForward<'a, Marker>,
) -> Result<Tensor> {
    match forward.into_forward() {
        UserForward::Once(f) => enter_custom(Custom { op, forward: None }, inputs, Some(f)),
        UserForward::OfInputs(f) => enter_custom(Custom { op, forward: Some(f) }, inputs, None),
    }
}

/// [`custom_op`] with its forward sorted out: `once` when the user's closure runs it, else
/// the primitive's own.
fn enter_custom(
    prim: Custom,
    inputs: &[&Tensor],
    once: Option<Box<dyn FnOnce() -> Result<Tensor> + '_>>,
) -> Result<Tensor> {
    if inputs.iter().any(|t| t.batch().is_some() || t.duals().iter().any(|(_, d)| d.batch().is_some())) {
        // the shape comes from the batching rule; the base (and this forward) is not reached
        let mut unreachable = |_: &dyn Primitive, _: &[&Tensor], _: &OutSpec| {
            Err(Error::Internal { op: "vmap", msg: "a custom op's forward ran on a batched input".into() })
        };
        let prim: Arc<dyn Primitive> = Arc::new(prim);
        return bind_levels(&prim, inputs, inputs, None, &mut unreachable);
    }
    for t in inputs {
        t.materialized()?;
    }
    let out = crate::fusion::with_fusion(false, || {
        transform::suspended(|| match once {
            Some(once) => once(),
            None => {
                let plain: Vec<Tensor> = inputs.iter().map(|t| t.plain()).collect();
                prim.example_forward(&plain)
            }
        })
    })?;
    bind_custom(prim, inputs, out)
}

/// Bind a custom op whose forward already gave `out`.
fn bind_custom(prim: Custom, inputs: &[&Tensor], out: Tensor) -> Result<Tensor> {
    let spec = OutSpec::new(out.shape(), out.dtype());
    let mut out = Some(out);
    let mut forward = |_: &dyn Primitive, _: &[&Tensor], _: &OutSpec| {
        out.take().ok_or_else(|| Error::Internal { op: "custom_op", msg: "the forward ran twice".into() })
    };
    let prim: Arc<dyn Primitive> = Arc::new(prim);
    bind_levels(&prim, inputs, inputs, Some(&spec), &mut forward)
}
