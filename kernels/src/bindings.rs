//! Storage bindings, declared once per family: each standalone family lists its inputs
//! (read-only) and outputs (read-write) as (WGSL name, element type) in [`family`]; the
//! WGSL declarations ([`storage`], [`params_block`]), [`KernelKey::bindings`] (from which
//! the bind-group layout is made) and the dispatch's arity check all come from that list.
//! The generated families (fused programs, MultiStep, SumSquares, Pack, the vec4 matmuls)
//! compute their lists from their shape and declare them through the same functions.
use crate::source::{KDType, Kernel};
use std::fmt::Write;

/// One storage binding: its WGSL name and element type.
pub(crate) type Binding = (&'static str, &'static str);

/// (inputs, outputs) of a standalone family; None for the generated ones.
pub(crate) fn family(kernel: Kernel) -> Option<(Vec<Binding>, Vec<Binding>)> {
    let (i, o): (&[Binding], &[Binding]) = match kernel {
        Kernel::Unary(_) | Kernel::UserUnary(_) => (&[("x", "ST")], &[("out", "ST")]),
        Kernel::UnaryVec4(_) | Kernel::UserUnaryVec4(_) => (&[("x", "vec4<f32>")], &[("out", "vec4<f32>")]),
        Kernel::Binary(_) => (&[("a", "ST"), ("b", "ST")], &[("out", "ST")]),
        Kernel::BinaryVec4(..) => (&[("a", "vec4<f32>"), ("b", "vec4<f32>")], &[("out", "vec4<f32>")]),
        Kernel::Where => (&[("cond", "ST"), ("a", "ST"), ("b", "ST")], &[("out", "ST")]),
        // f32 -> f16 packs two halves per word; f16 -> f32 unpacks them
        Kernel::Cast(_, KDType::F16) => (&[("x", "f32")], &[("out", "u32")]),
        Kernel::Cast(KDType::F16, _) => (&[("x", "u32")], &[("out", "f32")]),
        Kernel::Cast(..) => (&[("x", "S")], &[("out", "D")]),
        Kernel::Copy => (&[("src", "u32")], &[("dst", "u32")]),
        Kernel::Pad => (&[("src", "u32")], &[("dst", "u32")]),
        Kernel::Fill | Kernel::Random => (&[], &[("out", "T")]),
        Kernel::RandomFromState => (&[("generator", "u32")], &[("out", "T")]),
        Kernel::RandomAdvance => (&[], &[("state", "u32"), ("snapshot", "u32")]),
        Kernel::OptimSchedule { clip: false } => (&[], &[("state", "f32")]),
        Kernel::OptimSchedule { clip: true } => (&[("partials", "f32")], &[("state", "f32")]),
        Kernel::Reduce(_) | Kernel::ReduceRows(_) => (&[("x", "T")], &[("out", "T")]),
        Kernel::ReduceVec4(_) | Kernel::ReduceRowsVec4(_) => (&[("x", "vec4<f32>")], &[("out", "T")]),
        Kernel::ArgReduce(_) => (&[("x", "T")], &[("out", "u32")]),
        Kernel::Matmul | Kernel::MatmulReg => (&[("a", "T"), ("b", "T")], &[("c", "T")]),
        Kernel::IndexSelect | Kernel::Gather => (&[("x", "T"), ("idx", "u32")], &[("out", "T")]),
        Kernel::OneHot => (&[("idx", "u32")], &[("out", "T")]),
        Kernel::Lu => (&[], &[("lu", "T"), ("piv", "u32"), ("info", "u32"), ("det_sign", "T")]),
        Kernel::LuSolve => (&[("lu", "T"), ("piv", "u32")], &[("x", "T")]),
        Kernel::Cholesky => (&[], &[("l", "T"), ("info", "u32")]),
        Kernel::Im2Col | Kernel::MaxPool => (&[("x", "T")], &[("out", "T")]),
        Kernel::Col2Im => (&[("cols", "T")], &[("out", "T")]),
        Kernel::MaxPoolGrad => (&[("x", "T"), ("pooled", "T"), ("g", "T")], &[("out", "T")]),
        Kernel::XentLoss => (&[("z", "T"), ("labels", "u32")], &[("out", "T")]),
        Kernel::XentGrad => (&[("z", "T"), ("labels", "u32"), ("g", "T")], &[("out", "T")]),
        Kernel::SoftmaxRows => (&[("z", "T")], &[("out", "T")]),
        Kernel::SoftmaxVjp => (&[("z", "T"), ("v", "T"), ("g", "T")], &[("out", "T")]),
        Kernel::LayerNorm => (&[("x", "T"), ("w", "T"), ("b", "T")], &[("out", "T")]),
        Kernel::LayerNormGrad => (&[("x", "T"), ("w", "T"), ("g", "T")], &[("out", "T")]),
        Kernel::Fused(_) | Kernel::MultiStep(_) | Kernel::SumSquares(_) | Kernel::Pack(_) | Kernel::MatmulVec4(_) => {
            return None
        }
    };
    Some((i.to_vec(), o.to_vec()))
}

/// The WGSL of storage bindings from `first`: `inputs` read-only, then `outputs`
/// read-write, each an `array<elem>`.
pub(crate) fn storage<N: AsRef<str>, E: AsRef<str>>(first: u32, inputs: &[(N, E)], outputs: &[(N, E)]) -> String {
    let mut s = String::new();
    let all = inputs.iter().map(|b| (b, "read")).chain(outputs.iter().map(|b| (b, "read_write")));
    for (k, ((name, elem), access)) in all.enumerate() {
        let at = first + crate::launch::small_u32(k);
        let _ =
            writeln!(s, "@group(0) @binding({at}) var<storage, {access}> {}: array<{}>;", name.as_ref(), elem.as_ref());
    }
    s
}

/// The WGSL of the params block at binding `at` (after the storage bindings).
pub(crate) fn params_block(at: u32) -> String {
    format!("@group(0) @binding({at}) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;\n")
}

/// A standalone family's declarations: its storage bindings, then the params block.
pub(crate) fn declarations(kernel: Kernel) -> Option<String> {
    let (inputs, outputs) = family(kernel)?;
    let at = crate::launch::small_u32(inputs.len() + outputs.len());
    Some(storage(0, &inputs, &outputs) + &params_block(at))
}
