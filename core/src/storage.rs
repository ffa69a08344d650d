//! The data behind a tensor: a host vector or a pooled GPU buffer, shared by views.
use crate::DType;
use std::sync::Arc;
use wgrad_kernels::GpuBuffer;

#[derive(Debug)]
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

#[derive(Clone, Debug)]
pub enum Storage {
    Cpu(Arc<CpuStorage>),
    Gpu(Arc<GpuBuffer>),
    /// A deferred elementwise value on the GPU (see `fusion/`); its buffer exists once
    /// it is materialized.
    Lazy(Arc<crate::fusion::Lazy>),
}

impl Storage {
    pub fn gpu(&self) -> Option<&GpuBuffer> {
        match self {
            Storage::Gpu(b) => Some(b),
            Storage::Lazy(l) => l.buffer(),
            Storage::Cpu(_) => None,
        }
    }
    pub fn cpu(&self) -> Option<&CpuStorage> {
        match self {
            Storage::Cpu(c) => Some(c),
            Storage::Gpu(_) | Storage::Lazy(_) => None,
        }
    }
}
