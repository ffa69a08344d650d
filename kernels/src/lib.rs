//! wgrad's GPU runtime. It knows buffers, dims and strides, and nothing of tensors or
//! autograd: the core crate maps its ops onto the launchers here.
// Numeric loops index several arrays by one counter; iterator chains would hide that.
#![allow(clippy::needless_range_loop)]
// Every conversion to a launch word is checked (`launch::u32_of`, `words`) or bounded by
// construction (`small_u32`): a size past 32 bits is an error, never a wrapped value.
#![deny(clippy::cast_possible_truncation)]

mod batch;
mod bindings;
mod buffer;
mod capture;
mod context;
mod counters;
mod dispatch;
mod error;
mod fused;
mod launch;
mod linalg;
mod matmul;
mod matmul_vec4;
mod nn;
mod op_tables;
mod optim;
mod pack;
mod params;
mod platform;
mod profile;
mod readback;
mod reduce;
pub mod source;

pub use buffer::{GpuBuffer, POISON_WORD};
pub use capture::{Capture, CapturedDispatch, Copy as PlanCopy, Plan};
pub use context::{AdapterSummary, Context, READBACK_TIMEOUT};
pub use counters::Counters;
pub use error::{KResult, KernelError};
pub use fused::{
    epilogue_param_words, fused_kernels_generated, fused_param_words, fused_sources, Epilogue, FusedStep,
    FUSED_MAX_BUFFERS, FUSED_PARAM_WORDS,
};
pub use launch::{is_contiguous, row_major_strides, View, MAX_BATCH_RANK, MAX_RANK};
pub use linalg::LuFactors;
pub use matmul_vec4::{Block as MatmulBlock, MatmulVec4, Vec4Layout};
pub use nn::{softmax_rows_fit, ConvGeometry};
pub use optim::{AdamParams, MultiStep, MultiStepItem, MultiStepKind};
pub use pack::{Pack, PackSource};
pub use profile::{KernelTime, ProfileTable};
pub use reduce::two_level_strides;
pub use source::{
    all_kernels, register_user_unary, validate_wgsl, ArgReduceOp, BinaryOp, KDType, Kernel, KernelKey, ReduceOp,
    UnaryOp, Vec4Operand, WG,
};
pub use wgpu;

/// Lock a mutex; a panic on another thread while it held the lock does not poison it
/// here (every guarded state stays valid between statements), so library code never
/// panics on a poisoned lock.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
