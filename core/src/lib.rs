//! wgrad-core: the Tensor, shapes and strided layouts, dtypes, devices, the single entry
//! point every primitive runs through ([`bind`]), the primitive blocks by family, graph
//! recording, forward-mode tangents and the CPU reference backend.
// Numeric loops index several arrays by one counter; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]

mod checkpoint;
pub mod cpu;
mod cpu_buffers;
pub mod cpu_linalg;
mod cpu_plan;
mod cpu_profile;
mod custom_op;
mod device;
mod display;
mod dtype;
mod error;
pub mod fusion;
pub mod graph;
mod interop;
mod jit;
mod layout;
mod ops;
pub mod primitive;
pub mod random;
mod readback;
pub mod shape;
mod storage;
mod tensor;
mod transform;

pub use checkpoint::{checkpoint, checkpoint_name, checkpoint_replays, checkpoint_with, CheckpointPolicy, ReplayCount};
pub use cpu_plan::host_step;
pub use device::{AdapterSummary, Context, Counters, Device};
pub use dtype::{DType, Element};
pub use error::{Error, KernelError, Result};
pub use fusion::{fusion_enabled, with_fusion};
pub use graph::Node;
pub use jit::{jit, Jit, JitStats};
pub use layout::Layout;
pub use ops::{ElementwiseKernel, Operand};
pub use primitive::{
    bind, custom_op, jvp_from_vjp, register_interpreter, vmap_fallback_loops, Batch, CustomForward, CustomOp,
    Interpreter, LevelKind, OutSpec, Primitive, UserForward,
};
pub use random::{manual_seed, Distribution};
pub use tensor::Tensor;
pub use transform::{is_recording, no_grad};
pub use wgrad_kernels as kernels;
pub use wgrad_kernels::{AdamParams, ConvGeometry};

/// Lock a mutex; a panic on another thread while it held the lock does not poison it here.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Graph and transform internals for `wgrad-autograd`; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::primitive::{lift, register_backward, rewrap};
    pub use crate::transform::{enter_transform, with_grad, TransformGuard, TransformKind};
    use crate::Tensor;

    /// A tracked copy of `x`: the input of a reverse-mode transform.
    pub fn track(x: &Tensor) -> Tensor {
        crate::graph::track(x)
    }
    /// (primal, tangent) of `t` at forward level `level`.
    pub fn split_dual(t: &Tensor, level: u64) -> (Tensor, Option<Tensor>) {
        (t.keep_levels_below(level), t.tangent(level))
    }
    /// The logical view of one example of `physical` (examples on axis 0) at vmap `level`.
    pub fn batched(level: u64, physical: Tensor) -> Tensor {
        Tensor::batched(level, physical)
    }
    /// The active vmap levels below `level` (lowest first) with their sizes.
    pub fn vmap_levels_below(level: u64) -> Vec<(u64, usize)> {
        crate::transform::vmap_levels_below(level)
    }
    /// The vmap levels `t` itself is batched at (its chain of batched views, tangents not
    /// counted).
    pub fn batch_levels(t: &Tensor) -> Vec<u64> {
        t.batch_levels()
    }
    /// The physical tensor of `t` if it is batched at vmap `level`.
    pub fn physical_at(t: &Tensor, level: u64) -> Option<Tensor> {
        t.batch().filter(|(l, _)| *l == level).map(|(_, p)| p.clone())
    }
    /// `t` with `tangent` at forward level `level`.
    pub fn make_dual(t: &Tensor, level: u64, tangent: &Tensor) -> Tensor {
        t.with_dual(level, tangent.clone())
    }
    /// Whether a reverse-mode transform outside `level` is active.
    pub fn reverse_below(level: u64) -> bool {
        crate::transform::reverse_below(level)
    }
    /// The innermost active reverse-mode level.
    pub fn innermost_reverse() -> Option<u64> {
        crate::transform::innermost_reverse()
    }
    /// Remember the forward-mode tangent of a node's output (for VJPs that read it).
    pub fn save_output_tangent(node: &crate::graph::Node, level: u64, t: &Tensor) {
        node.save_output_tangent(level, t)
    }
}
