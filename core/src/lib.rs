//! wgrad-core: the Tensor, shapes and strided layouts, dtypes, devices, the single entry
//! point every primitive runs through ([`bind`]), the primitive blocks by family, graph
//! recording, forward-mode tangents and the CPU reference backend.
// Numeric loops index several arrays by one counter; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

pub mod cpu;
pub mod cpu_linalg;
mod device;
mod dtype;
mod error;
pub mod graph;
mod interop;
mod layout;
mod ops;
pub mod primitive;
pub mod shape;
mod storage;
mod tensor;
mod transform;

pub use device::{AdapterSummary, Context, Counters, Device};
pub use dtype::{DType, Element};
pub use error::{Error, KernelError, Result};
pub use graph::Node;
pub use layout::Layout;
pub use ops::ElementwiseKernel;
pub use primitive::{bind, custom_op, jvp_from_vjp, CustomOp, OutSpec, Primitive};
pub use tensor::Tensor;
pub use transform::{is_recording, no_grad};
pub use wgrad_kernels as kernels;
pub use wgrad_kernels::{AdamParams, ConvGeometry};

/// Graph and transform internals for `wgrad-autograd`; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::primitive::register_backward;
    pub use crate::transform::{enter_transform, with_grad, TransformGuard, TransformKind};
    use crate::Tensor;

    /// A tracked copy of `x`: the input of a reverse-mode transform.
    pub fn track(x: &Tensor) -> Tensor {
        crate::graph::track(x)
    }
    /// The tensor without its node, tangents kept (a transform's nested result).
    pub fn untrack(t: &Tensor) -> Tensor {
        t.with_node(None)
    }
    /// (primal, tangent) of `t` at forward level `level`.
    pub fn split_dual(t: &Tensor, level: u64) -> (Tensor, Option<Tensor>) {
        (t.keep_levels_below(level), t.tangent(level))
    }
    /// `t` with `tangent` at forward level `level`.
    pub fn make_dual(t: &Tensor, level: u64, tangent: &Tensor) -> Tensor {
        t.with_dual(level, tangent.clone())
    }
}
