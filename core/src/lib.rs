//! wgrad-core: the Tensor, shapes and strided layouts, dtypes, devices, the op surface,
//! graph recording and the CPU reference backend.

pub mod cpu;
pub mod cpu_linalg;
mod device;
mod dtype;
mod error;
mod interop;
pub mod graph;
mod layout;
mod ops;
pub mod shape;
mod storage;
mod tensor;

pub use device::{AdapterSummary, Context, Counters, Device};
pub use dtype::{DType, Element};
pub use error::{Error, KernelError, Result};
pub use graph::{custom_op, is_recording, no_grad, CustomOp, Node, Op};
pub use layout::Layout;
pub use ops::ElementwiseKernel;
pub use tensor::Tensor;
pub use wgrad_kernels as kernels;
pub use wgrad_kernels::{AdamParams, ConvGeometry};
