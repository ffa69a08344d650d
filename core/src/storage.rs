//! The data behind a tensor: a host vector or a pooled GPU buffer, shared by views.
use crate::DType;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use wgrad_kernels::GpuBuffer;

#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    U32(Vec<u32>),
    F16(Vec<half::f16>),
}

/// Large f32 buffers go back to the CPU backend's recycler (`cpu::scratch_f32` hands them
/// out again without new page faults).
impl Drop for CpuStorage {
    fn drop(&mut self) {
        if let CpuStorage::F32(v) = self {
            crate::cpu_buffers::recycle_f32(std::mem::take(v));
        }
    }
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::U32(_) => DType::U32,
            CpuStorage::F16(_) => DType::F16,
        }
    }
    /// Element at `i` widened to f64 (exact for every dtype).
    #[inline]
    pub fn get(&self, i: usize) -> f64 {
        match self {
            CpuStorage::F32(v) => v[i] as f64,
            CpuStorage::F64(v) => v[i],
            CpuStorage::U32(v) => v[i] as f64,
            CpuStorage::F16(v) => v[i].to_f64(),
        }
    }
    /// Whether both hold the same dtype and the same bits.
    pub fn same_bits(&self, other: &CpuStorage) -> bool {
        self.dtype() == other.dtype() && self.as_bytes() == other.as_bytes()
    }
    /// The elements' bytes.
    fn as_bytes(&self) -> &[u8] {
        match self {
            CpuStorage::F32(v) => bytemuck::cast_slice(v),
            CpuStorage::F64(v) => bytemuck::cast_slice(v),
            CpuStorage::U32(v) => bytemuck::cast_slice(v),
            CpuStorage::F16(v) => bytemuck::cast_slice(v),
        }
    }
    /// Set element `i` to `v` rounded to the dtype.
    #[inline]
    pub fn set(&mut self, i: usize, v: f64) {
        match self {
            CpuStorage::F32(d) => d[i] = v as f32,
            CpuStorage::F64(d) => d[i] = v,
            CpuStorage::U32(d) => d[i] = v as u32,
            CpuStorage::F16(d) => d[i] = half::f16::from_f64(v),
        }
    }
    /// Build storage of `dtype` from f64 values (rounded to the dtype).
    pub fn from_f64(values: Vec<f64>, dtype: DType) -> CpuStorage {
        match dtype {
            DType::F32 => {
                let mut out = crate::cpu::scratch_capacity_f32(values.len());
                out.extend(values.into_iter().map(|v| v as f32));
                CpuStorage::F32(out)
            }
            DType::F64 => CpuStorage::F64(values),
            DType::U32 => CpuStorage::U32(values.into_iter().map(|v| v as u32).collect()),
            DType::F16 => CpuStorage::F16(values.into_iter().map(half::f16::from_f64).collect()),
        }
    }
}

/// CPU storage held by tensors, counted in the CPU device's live and peak bytes. Views
/// share it; in-place updates (optimizer steps, `assign_`) write it under its lock, so
/// every handle sees them, as on a GPU. `id` is unique for the process (a jit trace tells
/// buffers apart by it, whatever addresses the allocator reuses).
#[derive(Debug)]
pub struct CpuBuffer {
    data: RwLock<CpuStorage>,
    id: u64,
}

/// A read of a CPU buffer (held while a kernel reads it).
pub type CpuRead<'a> = RwLockReadGuard<'a, CpuStorage>;
/// A write into a CPU buffer (held while an in-place update writes it).
pub type CpuWrite<'a> = RwLockWriteGuard<'a, CpuStorage>;

static CPU_BUFFER_IDS: AtomicU64 = AtomicU64::new(1);

static CPU_LIVE_BYTES: AtomicU64 = AtomicU64::new(0);
static CPU_PEAK_LIVE_BYTES: AtomicU64 = AtomicU64::new(0);
static CPU_LIVE_BUFFERS: AtomicU64 = AtomicU64::new(0);

impl CpuStorage {
    /// Bytes of the elements.
    pub fn bytes(&self) -> u64 {
        (match self {
            CpuStorage::F32(v) => v.len() * 4,
            CpuStorage::F64(v) => v.len() * 8,
            CpuStorage::U32(v) => v.len() * 4,
            CpuStorage::F16(v) => v.len() * 2,
        }) as u64
    }
}

impl CpuBuffer {
    fn new(data: CpuStorage) -> CpuBuffer {
        let now = CPU_LIVE_BYTES.fetch_add(data.bytes(), Ordering::Relaxed) + data.bytes();
        CPU_PEAK_LIVE_BYTES.fetch_max(now, Ordering::Relaxed);
        CPU_LIVE_BUFFERS.fetch_add(1, Ordering::Relaxed);
        CpuBuffer { data: RwLock::new(data), id: CPU_BUFFER_IDS.fetch_add(1, Ordering::Relaxed) }
    }
    /// The elements, for reading (a panic elsewhere never poisons them: writes are whole
    /// element updates).
    pub fn read(&self) -> CpuRead<'_> {
        self.data.read().unwrap_or_else(|e| e.into_inner())
    }
    /// The elements, for an in-place update (the length never changes).
    pub fn write(&self) -> CpuWrite<'_> {
        self.data.write().unwrap_or_else(|e| e.into_inner())
    }
    /// This buffer's process-wide unique number, in order of creation.
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// The id the next CPU buffer will get: buffers made from now on have ids at least this.
pub(crate) fn next_cpu_buffer_id() -> u64 {
    CPU_BUFFER_IDS.load(Ordering::Relaxed)
}

impl Drop for CpuBuffer {
    fn drop(&mut self) {
        let bytes = self.data.get_mut().unwrap_or_else(|e| e.into_inner()).bytes();
        CPU_LIVE_BYTES.fetch_sub(bytes, Ordering::Relaxed);
        CPU_LIVE_BUFFERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// (live buffers, live bytes, peak live bytes) of the CPU device: process-wide, since the
/// CPU device is one for the whole process.
pub(crate) fn cpu_live() -> (u64, u64, u64) {
    (
        CPU_LIVE_BUFFERS.load(Ordering::Relaxed),
        CPU_LIVE_BYTES.load(Ordering::Relaxed),
        CPU_PEAK_LIVE_BYTES.load(Ordering::Relaxed),
    )
}

/// Start a new peak of the CPU device's live bytes.
pub(crate) fn reset_cpu_peak() {
    CPU_PEAK_LIVE_BYTES.store(CPU_LIVE_BYTES.load(Ordering::Relaxed), Ordering::Relaxed);
}

#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(Arc<CpuBuffer>),
    Gpu(Arc<GpuBuffer>),
    /// A deferred elementwise value on the GPU (see `fusion/`); its buffer exists once
    /// it is materialized.
    Lazy(crate::fusion::LazyHandle),
}

impl Storage {
    pub fn gpu(&self) -> Option<&GpuBuffer> {
        match self {
            Storage::Gpu(b) => Some(b),
            Storage::Lazy(l) => l.buffer(),
            Storage::Cpu(_) => None,
        }
    }
    /// Host storage, counted in the CPU device's live bytes.
    pub fn cpu_owned(data: CpuStorage) -> Storage {
        Storage::Cpu(Arc::new(CpuBuffer::new(data)))
    }
    pub fn cpu(&self) -> Option<CpuRead<'_>> {
        match self {
            Storage::Cpu(c) => Some(c.read()),
            Storage::Gpu(_) | Storage::Lazy(_) => None,
        }
    }
}
