//! The interpreters of forward mode and vmap (JAX's `JVPTrace` and `BatchTrace`): core's
//! `bind` hands a primitive to the interpreter of the innermost level its inputs carry,
//! and these are registered on every transform entry.
use std::sync::Arc;
use wgrad_core::__private::{
    batched, innermost_reverse, make_dual, physical_at, reverse_below, save_output_tangent, split_dual,
};
use wgrad_core::{no_grad, Batch, Error, Interpreter, LevelKind, OutSpec, Primitive, Result, Tensor};

/// Forward mode: bind the primals one level down, then push the tangents through the
/// primitive's JVP rule (its ops are taped only when a reverse transform encloses the
/// level: reverse-over-forward).
struct ForwardMode;

impl Interpreter for ForwardMode {
    fn process(
        &self,
        level: u64,
        prim: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        _spec: Option<&OutSpec>,
        lower: &mut dyn FnMut(&[&Tensor]) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (primals, tangents): (Vec<Tensor>, Vec<Option<Tensor>>) =
            inputs.iter().map(|t| split_dual(t, level)).unzip();
        let refs: Vec<&Tensor> = primals.iter().collect();
        let out = lower(&refs)?;
        if !prim.differentiable() || tangents.iter().all(|t| t.is_none()) {
            return Ok(out);
        }
        let rule = || prim.jvp(&primals, &out, &tangents);
        let t = if reverse_below(level) { rule()? } else { no_grad(rule)? };
        let Some(t) = t else { return Ok(out) };
        if t.shape() != out.shape() {
            return Err(Error::Invalid {
                op: "jvp",
                msg: format!(
                    "the JVP of {} gave shape {:?} for an output of shape {:?}",
                    prim.name(),
                    t.shape(),
                    out.shape()
                ),
            });
        }
        // a tape inside this level reads the output's tangent in forward-over-reverse
        if let Some(node) = out.node() {
            if innermost_reverse().is_some_and(|r| level < r) {
                save_output_tangent(node, level, &t);
            }
        }
        Ok(make_dual(&out, level, &t))
    }
}

/// vmap: run the primitive's batching rule on the physical tensors (the examples on axis
/// 0; the rule's ops bind afresh, so a tape only ever holds unbatched primitives).
struct Vmap;

impl Interpreter for Vmap {
    fn process(
        &self,
        level: u64,
        prim: &Arc<dyn Primitive>,
        inputs: &[&Tensor],
        spec: Option<&OutSpec>,
        _lower: &mut dyn FnMut(&[&Tensor]) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let physical_or_shared: Vec<(Tensor, bool)> = inputs
            .iter()
            .map(|t| match physical_at(t, level) {
                Some(p) => (p, true),
                None => ((*t).clone(), false),
            })
            .collect();
        let (physical, is_batched): (Vec<Tensor>, Vec<bool>) = physical_or_shared.into_iter().unzip();
        let size = physical.iter().zip(&is_batched).find(|(_, &b)| b).map(|(p, _)| p.shape()[0]).unwrap_or(0);
        let out = prim.batch(&physical, &is_batched, &Batch { level, size })?;
        let want = spec.map(|spec| [&[size], &spec.shape[..]].concat());
        if let Some(want) = want.filter(|w| prim.checks_batched_shape() && out.shape() != &w[..]) {
            return Err(Error::Invalid {
                op: "vmap",
                msg: format!("the batching rule of {} gave {:?}, not {:?}", prim.name(), out.shape(), want),
            });
        }
        Ok(batched(level, out))
    }
}

/// Register forward mode and vmap with core's `bind` (idempotent).
pub(crate) fn register() {
    wgrad_core::register_interpreter(LevelKind::Forward, &ForwardMode);
    wgrad_core::register_interpreter(LevelKind::Vmap, &Vmap);
}
