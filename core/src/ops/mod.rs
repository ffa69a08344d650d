//! The op surface, one file per family. Each primitive has its shape rule, CPU reference,
//! GPU launch and graph record next to each other; its VJP lives in `wgrad-autograd`
//! under the same family name.
mod conv;
mod elementwise;
pub use elementwise::ElementwiseKernel;
mod index;
mod linalg;
mod loss;
mod matmul;
mod movement;
mod optim;
mod pool;
mod reduce;

use crate::storage::Storage;
use crate::{DType, Device, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::{Context, GpuBuffer};

/// Run `cpu` or `gpu` by the tensor's device and wrap the result as a contiguous tensor.
pub(crate) fn run(
    t: &Tensor,
    shape: &[usize],
    dtype: DType,
    cpu: impl FnOnce() -> Result<crate::storage::CpuStorage>,
    gpu: impl FnOnce(&Arc<Context>) -> Result<GpuBuffer>,
) -> Result<Tensor> {
    let storage = match t.device() {
        Device::Cpu => Storage::Cpu(Arc::new(cpu()?)),
        Device::Gpu(ctx) => Storage::Gpu(Arc::new(gpu(ctx)?)),
    };
    Ok(Tensor::new_contiguous(storage, shape, dtype, t.device().clone()))
}

pub(crate) fn cpu_of(t: &Tensor) -> &crate::storage::CpuStorage {
    t.storage().cpu().expect("CPU tensor")
}
