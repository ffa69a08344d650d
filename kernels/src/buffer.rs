//! Pooled device buffers: allocation by size class, return on drop, upload and readback.

use crate::context::Context;
use crate::counters::AtomicCounters;
use crate::error::{KResult, KernelError};
use std::sync::Arc;

const MIN_CLASS: u64 = 256;

/// Size classes: powers of two up to 1 MiB, then whole MiBs (bounded waste for big tensors).
fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(MIN_CLASS);
    if b <= 1 << 20 {
        b.next_power_of_two()
    } else {
        b.div_ceil(1 << 20) << 20
    }
}

/// A storage buffer owned by one tensor storage; it goes back to the pool when dropped.
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    ctx: Arc<Context>,
    external: bool,
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer({} bytes)", self.class)
    }
}

impl GpuBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
    /// Capacity in bytes (the size class, at least the requested size).
    pub fn capacity(&self) -> u64 {
        self.class
    }
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(buf) = self.buffer.take() {
            if self.external {
                return;
            }
            let mut st = self.ctx.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.keep_if_pinned(&buf) {
                return;
            }
            AtomicCounters::sub(&self.ctx.counters.live_buffers, 1);
            AtomicCounters::sub(&self.ctx.counters.live_bytes, self.class);
            st.defer_free(self.class, buf);
        }
    }
}

impl Context {
    /// A buffer of at least `bytes` bytes from the pool (never zero-size), safe to fill
    /// with a queue write.
    pub fn alloc(self: &Arc<Self>, bytes: u64) -> KResult<GpuBuffer> {
        self.alloc_for(bytes, true)
    }

    fn alloc_for(self: &Arc<Self>, bytes: u64, for_queue_write: bool) -> KResult<GpuBuffer> {
        self.check_health()?;
        let class = size_class(bytes);
        let max_binding = self.limits().max_storage_buffer_binding_size;
        if class > max_binding {
            return Err(KernelError::BufferTooLarge {
                bytes,
                limit: "max_storage_buffer_binding_size",
                max: max_binding,
            });
        }
        if class > self.limits().max_buffer_size {
            return Err(KernelError::BufferTooLarge {
                bytes,
                limit: "max_buffer_size",
                max: self.limits().max_buffer_size,
            });
        }
        let reused = {
            // a capture notes the hand-out under the same lock (memory planning, capture.rs)
            let mut st = crate::lock(&self.state);
            let reused = st.take_free(class, for_queue_write);
            if let Some(b) = &reused {
                Context::note_allocation(&mut st, b);
            }
            reused
        };
        let buffer = match reused {
            Some(b) => b,
            None => {
                if self.out_of_memory_injected() {
                    let msg = "injected by Context::inject_out_of_memory".to_string();
                    return Err(KernelError::OutOfMemory { bytes: class, msg });
                }
                let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
                let b = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgrad tensor"),
                    size: class,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                if let Some(e) = self.pop_error_scope(scope) {
                    return Err(KernelError::OutOfMemory { bytes: class, msg: e.to_string() });
                }
                AtomicCounters::add(&self.counters.buffer_allocations, 1);
                Context::note_allocation(&mut crate::lock(&self.state), &b);
                b
            }
        };
        AtomicCounters::add(&self.counters.live_buffers, 1);
        self.counters.add_live_bytes(class);
        Ok(GpuBuffer { buffer: Some(buffer), class, ctx: self.clone(), external: false })
    }

    /// A buffer that only kernels will write; poisoned with NaN bits when the poison test
    /// aid is on: [`POISON_WORD`] reads as NaN both as an f32 and as each of two f16s.
    pub fn alloc_output(self: &Arc<Self>, bytes: u64) -> KResult<GpuBuffer> {
        let poison = self.poison_outputs();
        let buf = self.alloc_for(bytes, poison)?;
        if poison {
            // a test aid, not an upload of the step: a capture does not record it (kernels
            // overwrite every element, which is what the poison checks)
            let words = vec![POISON_WORD; (buf.capacity() / 4) as usize];
            let mut st = crate::lock(&self.state);
            self.queue.write_buffer(buf.raw(), 0, bytemuck::cast_slice(&words));
            st.mark_dirty();
        }
        Ok(buf)
    }

    /// A buffer that a device copy will fill (ordered after earlier reads, like a kernel
    /// output; never poisoned: the copy writes what is read).
    pub fn alloc_for_copy(self: &Arc<Self>, bytes: u64) -> KResult<GpuBuffer> {
        self.alloc_for(bytes, false)
    }

    /// Wrap a buffer the host owns (it is not returned to the pool on drop).
    pub fn wrap_external(self: &Arc<Self>, buffer: wgpu::Buffer) -> GpuBuffer {
        let class = buffer.size();
        GpuBuffer { buffer: Some(buffer), class, ctx: self.clone(), external: true }
    }

    /// Queue a host-to-device write; it lands before the batch's commands at the next submit.
    pub(crate) fn write(&self, buf: &GpuBuffer, offset: u64, bytes: &[u8]) {
        let mut st = crate::lock(&self.state);
        self.queue.write_buffer(buf.raw(), offset, bytes);
        st.mark_dirty();
        Context::note_write(&mut st, buf.raw(), bytes);
    }

    /// Upload host bytes (a multiple of 4) into a fresh buffer.
    pub fn upload(self: &Arc<Self>, bytes: &[u8]) -> KResult<GpuBuffer> {
        let buf = self.alloc(bytes.len() as u64)?;
        if !bytes.is_empty() {
            self.write(&buf, 0, bytes);
        }
        Ok(buf)
    }

    /// Submit the open batch without waiting for it.
    pub fn flush(&self) -> KResult<()> {
        self.check_health()?;
        let mut st = crate::lock(&self.state);
        st.submit(self);
        Ok(())
    }
}

/// The fill of poisoned outputs: an f32 NaN (exponent all ones, mantissa 0x407E00) whose
/// halves are f16 NaNs (0x7FC0 above, 0x7E00 below), so an unwritten f32 element and an
/// unwritten f16 element at an even or odd index all read back as NaN.
pub const POISON_WORD: u32 = 0x7FC0_7E00;
