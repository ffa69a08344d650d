//! Embedding: tensors over buffers that a host application owns, and a tensor's buffer
//! handed to the host, without copies.
//!
//! Rules for hosts:
//! - Create the wgrad device from your own device and queue: `Device::from_wgpu(device,
//!   queue)`. wgrad then records into command buffers of its own and submits
//!   them on that queue.
//! - wgrad batches its work: before a pass of yours reads a tensor's buffer, call
//!   `Device::flush()` (submits wgrad's pending work; queue order then makes your later
//!   submissions see the results). Before wgrad reads a buffer you wrote, submit your
//!   command buffer first (wgrad's next submission is ordered after it).
//! - Fusion defers elementwise work until something reads it (see `fusion/`): a
//!   pending op reads its inputs when it runs, not when it was called. Call
//!   `Device::flush()` before you overwrite a buffer that wgrad tensors were computed from
//!   (flush runs every pending op first). `wgpu_buffer()` does this itself.
//! - A wrapped buffer stays yours: wgrad never returns it to its pool, and writes into it
//!   only through in-place optimizer updates. Keep it alive while tensors use it (the tensor
//!   holds a clone of the `wgpu::Buffer` handle, which keeps it alive).
use crate::layout::Layout;
use crate::storage::Storage;
use crate::{DType, Device, Error, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::wgpu;

impl Tensor {
    /// A tensor over `shape` elements of `dtype` starting `byte_offset` bytes into a buffer the
    /// host owns (no copy). The buffer needs `STORAGE` usage (and `COPY_SRC` to be read back
    /// with `to_vec`); it must come from `device`'s wgpu device.
    pub fn from_wgpu_buffer(
        buffer: &wgpu::Buffer,
        byte_offset: u64,
        shape: &[usize],
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let op = "from_wgpu_buffer";
        let Device::Gpu(ctx) = device else {
            return Err(Error::Invalid { op, msg: "needs a GPU device (Device::from_wgpu)".into() });
        };
        crate::tensor::check_gpu_dtype(op, dtype, device)?;
        let usage = buffer.usage();
        if !usage.contains(wgpu::BufferUsages::STORAGE) {
            return Err(Error::Invalid { op, msg: format!("the buffer's usages {usage:?} lack STORAGE") });
        }
        let esize = dtype.size_in_bytes() as u64;
        if !byte_offset.is_multiple_of(esize) {
            return Err(Error::Invalid {
                op,
                msg: format!("byte offset {byte_offset} is not a multiple of the element size {esize}"),
            });
        }
        let numel: usize = shape.iter().product();
        let need = byte_offset + numel as u64 * esize;
        if need > buffer.size() {
            return Err(Error::Invalid {
                op,
                msg: format!(
                    "shape {shape:?} at byte offset {byte_offset} needs {need} bytes; the buffer has {}",
                    buffer.size()
                ),
            });
        }
        let gb = ctx.wrap_external(buffer.clone());
        let mut layout = Layout::contiguous(shape);
        layout.offset = (byte_offset / esize) as usize;
        Ok(Tensor::from_parts(Storage::Gpu(Arc::new(gb)), layout, dtype, device.clone(), None))
    }

    /// The wgpu buffer behind a GPU tensor, the byte offset of its first element and its
    /// layout (strides in elements). Call `Device::flush()` before a host pass reads it.
    /// None for a CPU tensor, and for a batched tensor inside vmap (its buffer holds every
    /// example).
    pub fn wgpu_buffer(&self) -> Option<(wgpu::Buffer, u64, Layout)> {
        if self.batch().is_some() {
            return None;
        }
        // the host may read or write it: every pending fused value is computed first
        if let Some(ctx) = self.device().context() {
            crate::fusion::flush(ctx).ok()?;
        }
        let this = self.materialized().ok()?;
        let buf = this.storage().gpu()?;
        let off = (self.layout().offset * self.dtype().size_in_bytes()) as u64;
        Some((buf.raw().clone(), off, self.layout().clone()))
    }
}
