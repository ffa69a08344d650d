//! The one user-facing tensor type.
use crate::graph::{Node, SavedOutput};
use crate::shape::numel;
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Element, Error, Layout, Result};
use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct Inner {
    pub(crate) storage: Storage,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    pub(crate) node: Option<Arc<Node>>,
    /// For u32 tensors: a known exclusive upper bound of the values (host data, argmax),
    /// so index ops can check bounds without reading the GPU back.
    pub(crate) index_bound: Option<u32>,
    /// Forward-mode tangents by level, lowest first: (level, tangent). The tensor is the
    /// primal of its highest level; each tangent may carry tangents of lower levels.
    pub(crate) duals: Vec<(u64, Tensor)>,
    /// For a tensor batched by vmap: (level, physical). The physical tensor holds every
    /// example, the batch on its axis 0; this tensor is the logical view of one example
    /// (its layout is example 0's, and no kernel ever reads it: the entry point maps every
    /// op on it to an op on the physical tensor).
    pub(crate) batch: Option<(u64, Tensor)>,
}

/// An n-dimensional array on a [`Device`], cheap to clone (views share storage).
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({:?}, {:?}, {}{})",
            self.shape(),
            self.dtype(),
            self.device(),
            if self.node().is_some() { ", tracked" } else { "" }
        )
    }
}

impl Tensor {
    pub(crate) fn from_parts(
        storage: Storage,
        layout: Layout,
        dtype: DType,
        device: Device,
        node: Option<Arc<Node>>,
    ) -> Tensor {
        Tensor(Arc::new(Inner {
            storage,
            layout,
            dtype,
            device,
            node,
            index_bound: None,
            duals: Vec::new(),
            batch: None,
        }))
    }

    /// Known exclusive upper bound of a u32 tensor's values.
    pub fn index_bound(&self) -> Option<u32> {
        self.0.index_bound
    }

    pub(crate) fn with_index_bound(self, bound: Option<u32>) -> Tensor {
        let mut inner = Arc::unwrap_or_clone(self.0);
        inner.index_bound = bound;
        Tensor(Arc::new(inner))
    }

    /// A fresh contiguous tensor of `shape` around `storage`.
    pub(crate) fn new_contiguous(storage: Storage, shape: &[usize], dtype: DType, device: Device) -> Tensor {
        Tensor::from_parts(storage, Layout::contiguous(shape), dtype, device, None)
    }

    pub(crate) fn storage(&self) -> &Storage {
        &self.0.storage
    }
    /// Whether the two are views of one storage (one buffer on a GPU, one vector on the
    /// CPU), as flat parameters are of their flat buffer.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        match (self.storage(), other.storage()) {
            (Storage::Cpu(a), Storage::Cpu(b)) => Arc::ptr_eq(a, b),
            (Storage::Gpu(a), Storage::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    pub fn shape(&self) -> &[usize] {
        &self.0.layout.shape
    }
    pub fn dims(&self) -> &[usize] {
        self.shape()
    }
    pub fn rank(&self) -> usize {
        self.shape().len()
    }
    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn device(&self) -> &Device {
        &self.0.device
    }
    /// The graph node of a tracked tensor.
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.0.node.as_ref()
    }
    pub fn is_tracked(&self) -> bool {
        self.0.node.is_some()
    }

    /// The same data and tangents with another node (or none).
    pub(crate) fn with_node(&self, node: Option<Arc<Node>>) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), self.0.layout.clone(), self.0.dtype, self.0.device.clone(), node)
            .with_index_bound(self.0.index_bound)
            .with_duals(self.0.duals.clone())
    }

    /// The same data cut off from every transform: no gradient and no tangent flows
    /// through it (JAX's `stop_gradient`).
    pub fn detach(&self) -> Tensor {
        self.plain()
    }

    /// The data alone: no node, no tangents (a batched tensor stays batched, its
    /// examples detached).
    pub(crate) fn plain(&self) -> Tensor {
        if let Some((level, physical)) = &self.0.batch {
            return Tensor::batched(*level, physical.plain());
        }
        if self.0.node.is_none() && self.0.duals.is_empty() {
            return self.clone();
        }
        Tensor::from_parts(self.0.storage.clone(), self.0.layout.clone(), self.0.dtype, self.0.device.clone(), None)
            .with_index_bound(self.0.index_bound)
    }

    /// The logical view of one example of `physical` (whose axis 0 holds the examples)
    /// at vmap level `level`.
    pub(crate) fn batched(level: u64, physical: Tensor) -> Tensor {
        let l = physical.layout();
        let layout = Layout { shape: l.shape[1..].to_vec(), strides: l.strides[1..].to_vec(), offset: l.offset };
        let p = &physical.0;
        let mut inner = Inner {
            storage: p.storage.clone(),
            layout,
            dtype: p.dtype,
            device: p.device.clone(),
            node: None,
            index_bound: p.index_bound,
            duals: Vec::new(),
            batch: None,
        };
        inner.batch = Some((level, physical));
        Tensor(Arc::new(inner))
    }

    /// The tensor under every batched view (all examples of every vmap level).
    pub(crate) fn physical_all(&self) -> Tensor {
        match self.batch() {
            Some((_, p)) => p.physical_all(),
            None => self.clone(),
        }
    }

    /// The vmap levels this tensor is batched at, outermost view first (tangents not
    /// counted).
    pub(crate) fn batch_levels(&self) -> Vec<u64> {
        let mut levels = Vec::new();
        let mut cur = self.batch();
        while let Some((l, p)) = cur {
            levels.push(l);
            cur = p.batch();
        }
        levels
    }

    /// (vmap level, physical tensor) of a batched tensor.
    pub(crate) fn batch(&self) -> Option<(u64, &Tensor)> {
        self.0.batch.as_ref().map(|(l, p)| (*l, p))
    }

    /// Errs for a batched tensor: reading one example back would let the host's control
    /// flow depend on it.
    pub(crate) fn check_not_batched(&self, op: &'static str) -> Result<()> {
        if self.0.batch.is_some() {
            return Err(Error::Invalid {
                op: "vmap",
                msg: format!("{op} reads a batched tensor back to the host inside vmap; return it from f instead"),
            });
        }
        Ok(())
    }

    /// Forward-mode tangents by level, lowest first.
    pub(crate) fn duals(&self) -> &[(u64, Tensor)] {
        &self.0.duals
    }

    /// The same tensor with `duals` in place of its tangents.
    pub(crate) fn with_duals(self, duals: Vec<(u64, Tensor)>) -> Tensor {
        if duals.is_empty() && self.0.duals.is_empty() {
            return self;
        }
        let mut inner = Arc::unwrap_or_clone(self.0);
        inner.duals = duals;
        Tensor(Arc::new(inner))
    }

    /// This tensor with `tangent` at forward level `level` (replacing one already there).
    pub(crate) fn with_dual(&self, level: u64, tangent: Tensor) -> Tensor {
        let mut duals: Vec<(u64, Tensor)> = self.0.duals.iter().filter(|(l, _)| *l != level).cloned().collect();
        duals.push((level, tangent));
        duals.sort_by_key(|(l, _)| *l);
        self.clone().with_duals(duals)
    }

    /// The tangent at forward level `level` (None: zero). A batched tensor's tangent may
    /// ride on its physical tensor (a reverse tape inside vmap keeps it there, row by row):
    /// it is read through the batched view.
    pub(crate) fn tangent(&self, level: u64) -> Option<Tensor> {
        if let Some((_, t)) = self.0.duals.iter().find(|(l, _)| *l == level) {
            return Some(t.clone());
        }
        let (batch_level, physical) = self.batch()?;
        Some(Tensor::batched(batch_level, physical.tangent(level)?))
    }

    /// The primal of forward level `level`: the tangents of that level and above removed
    /// (through batched views too).
    pub(crate) fn keep_levels_below(&self, level: u64) -> Tensor {
        let own = self.0.duals.iter().all(|(l, _)| *l < level);
        let inside = self.batch().is_none_or(|(_, p)| !p.has_levels_from(level));
        if own && inside {
            return self.clone();
        }
        let duals = self.0.duals.iter().filter(|(l, _)| *l < level).cloned().collect();
        let base = match self.batch() {
            Some((batch_level, physical)) if !inside => Tensor::batched(batch_level, physical.keep_levels_below(level)),
            _ => self.clone(),
        };
        base.with_duals(duals)
    }

    /// Whether a tangent of level `level` or above rides anywhere on this tensor.
    fn has_levels_from(&self, level: u64) -> bool {
        self.0.duals.iter().any(|(l, _)| *l >= level) || self.batch().is_some_and(|(_, p)| p.has_levels_from(level))
    }

    /// Alias of [`Tensor::detach`], named as in JAX.
    pub fn stop_gradient(&self) -> Tensor {
        self.detach()
    }

    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor::from_parts(self.0.storage.clone(), layout, self.0.dtype, self.0.device.clone(), None)
            .with_index_bound(self.0.index_bound)
    }

    pub(crate) fn saved_output(&self) -> SavedOutput {
        SavedOutput {
            storage: self.0.storage.clone(),
            layout: self.0.layout.clone(),
            dtype: self.0.dtype,
            device: self.0.device.clone(),
        }
    }

    /// Used by Node's iterative drop: the node, if this was the last handle to the tensor.
    pub(crate) fn take_node_if_unique(self) -> Option<Arc<Node>> {
        Arc::into_inner(self.0).and_then(|mut inner| inner.node.take())
    }

    // ---------------------------------------------------------------- constructors

    /// A tensor holding a copy of `data` laid out as `shape`.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize], device: &Device) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return Err(Error::ElementCount {
                op: "from_slice",
                shape: shape.to_vec(),
                got: data.len(),
                expected: numel(shape),
            });
        }
        let storage = match device {
            Device::Cpu => Storage::cpu_owned(match T::DTYPE {
                DType::F32 => CpuStorage::F32(bytemuck::cast_slice(data).to_vec()),
                DType::F64 => CpuStorage::F64(bytemuck::cast_slice(data).to_vec()),
                DType::U32 => CpuStorage::U32(bytemuck::cast_slice(data).to_vec()),
                DType::F16 => CpuStorage::F16(bytemuck::cast_slice(data).to_vec()),
            }),
            Device::Gpu(ctx) => {
                check_gpu_dtype("from_slice", T::DTYPE, device)?;
                let mut bytes: Vec<u8> = bytemuck::cast_slice(data).to_vec();
                bytes.resize(bytes.len().div_ceil(4) * 4, 0); // f16: whole words
                Storage::Gpu(Arc::new(ctx.upload(&bytes)?))
            }
        };
        let t = Tensor::new_contiguous(storage, shape, T::DTYPE, device.clone());
        if T::DTYPE == DType::U32 {
            let max = bytemuck::cast_slice::<T, u32>(data).iter().max().copied();
            return Ok(t.with_index_bound(max.map(|m| m.saturating_add(1))));
        }
        Ok(t)
    }

    /// A 0-d tensor. An f64 value makes an f32 tensor, as PyTorch's and JAX's default
    /// float dtype does (`Tensor::full_dtype(v, &[], DType::F64, dev)` keeps f64); f32, f16
    /// and u32 values keep their type.
    pub fn scalar<T: Element>(value: T, device: &Device) -> Result<Tensor> {
        if T::DTYPE == DType::F64 {
            return Tensor::full(value.to_f64(), &[], device);
        }
        Tensor::from_slice(&[value], &[], device)
    }

    /// An f32 tensor of `shape` filled with `value`.
    pub fn full(value: f64, shape: &[usize], device: &Device) -> Result<Tensor> {
        Tensor::full_dtype(value, shape, DType::F32, device)
    }

    /// A tensor of `shape` filled with `value` (converted to `dtype`).
    pub fn full_dtype(value: f64, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        match device {
            Device::Cpu => {
                let s = CpuStorage::from_f64(vec![value; numel(shape)], dtype);
                Ok(Tensor::new_contiguous(Storage::cpu_owned(s), shape, dtype, device.clone()))
            }
            Device::Gpu(ctx) => {
                check_gpu_dtype("full", dtype, device)?;
                if dtype == DType::U32 {
                    let data = vec![value as u32; numel(shape)];
                    return Tensor::from_slice(&data, shape, device);
                }
                if dtype == DType::F16 {
                    return Tensor::full_dtype(value, shape, DType::F32, device)?.to_dtype(DType::F16);
                }
                let buf = ctx.fill(numel(shape), value as f32)?;
                Ok(Tensor::new_contiguous(Storage::Gpu(Arc::new(buf)), shape, dtype, device.clone()))
            }
        }
    }

    pub fn zeros(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full_dtype(0.0, shape, dtype, device)
    }
    pub fn ones(shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        Tensor::full_dtype(1.0, shape, dtype, device)
    }
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.dtype(), self.device())
    }
    pub fn ones_like(&self) -> Result<Tensor> {
        Tensor::ones(self.shape(), self.dtype(), self.device())
    }
    pub fn full_like(&self, value: f64) -> Result<Tensor> {
        Tensor::full_dtype(value, self.shape(), self.dtype(), self.device())
    }

    /// start, start + 1, ... below `end`, as f32 (`Tensor::arange(0.0, 5.0, &dev)`).
    pub fn arange(start: f64, end: f64, device: &Device) -> Result<Tensor> {
        Tensor::arange_dtype(start, end, 1.0, DType::F32, device)
    }

    /// start, start + step, ... up to (not including) `end`, as f32.
    pub fn arange_step(start: f64, end: f64, step: f64, device: &Device) -> Result<Tensor> {
        Tensor::arange_dtype(start, end, step, DType::F32, device)
    }

    /// start, start + step, ... up to (not including) `end`, as `dtype` (u32 for indices).
    pub fn arange_dtype(start: f64, end: f64, step: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::Invalid { op: "arange", msg: format!("start {start}, end {end}, step {step}") });
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        let v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
        Tensor::from_f64_vec(v, &[n], dtype, device)
    }

    /// `steps` values evenly spaced from `start` to `end` inclusive, as f32.
    pub fn linspace(start: f64, end: f64, steps: usize, device: &Device) -> Result<Tensor> {
        Tensor::linspace_dtype(start, end, steps, DType::F32, device)
    }

    /// `steps` values evenly spaced from `start` to `end` inclusive, as `dtype`.
    pub fn linspace_dtype(start: f64, end: f64, steps: usize, dtype: DType, device: &Device) -> Result<Tensor> {
        let v: Vec<f64> = match steps {
            1 => vec![start],
            _ => {
                let d = (end - start) / (steps as f64 - 1.0);
                // the last value is `end` exactly, as numpy's is
                (0..steps).map(|i| if i + 1 == steps { end } else { start + i as f64 * d }).collect()
            }
        };
        Tensor::from_f64_vec(v, &[steps], dtype, device)
    }

    pub(crate) fn from_f64_vec(v: Vec<f64>, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        match dtype {
            DType::F32 => Tensor::from_slice(&v.iter().map(|&x| x as f32).collect::<Vec<_>>(), shape, device),
            DType::F64 => Tensor::from_slice(&v, shape, device),
            DType::U32 => Tensor::from_slice(&v.iter().map(|&x| x as u32).collect::<Vec<_>>(), shape, device),
            DType::F16 => {
                Tensor::from_slice(&v.iter().map(|&x| half::f16::from_f64(x)).collect::<Vec<_>>(), shape, device)
            }
        }
    }

    /// f32 uniform samples in [low, high), drawn on the device by Philox 4x32-10 keyed by
    /// `seed`: the same numbers on every device (see [`crate::manual_seed`] for the global
    /// generator).
    pub fn rand(shape: &[usize], low: f64, high: f64, seed: u64, device: &Device) -> Result<Tensor> {
        Tensor::rand_dtype(shape, low, high, seed, DType::F32, device)
    }

    /// Uniform samples in [low, high) as `dtype` (see [`Tensor::rand`]).
    pub fn rand_dtype(
        shape: &[usize],
        low: f64,
        high: f64,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        crate::random::draw(shape, crate::random::Distribution::Uniform { low, high }, seed, 0, dtype, device)
    }

    /// f32 standard normal samples, drawn on the device keyed by `seed` (see
    /// [`Tensor::rand`]).
    pub fn randn(shape: &[usize], seed: u64, device: &Device) -> Result<Tensor> {
        Tensor::randn_dtype(shape, seed, DType::F32, device)
    }

    /// Standard normal samples as `dtype` (see [`Tensor::randn`]).
    pub fn randn_dtype(shape: &[usize], seed: u64, dtype: DType, device: &Device) -> Result<Tensor> {
        crate::random::draw(shape, crate::random::Distribution::Normal, seed, 0, dtype, device)
    }

    // ---------------------------------------------------------------- conversions

    /// Whether elementwise kernels run on this f16 tensor's storage directly (a GPU with
    /// SHADER_F16); otherwise f16 is computed in f32 (`Primitive::computes_in_f32`).
    pub(crate) fn native_f16(&self) -> bool {
        self.dtype() == DType::F16 && self.device().context().is_some_and(|c| c.supports_f16())
    }

    /// The storage type of an elementwise kernel on this tensor.
    pub(crate) fn kdtype(&self) -> wgrad_kernels::KDType {
        if self.native_f16() {
            wgrad_kernels::KDType::F16
        } else {
            wgrad_kernels::KDType::F32
        }
    }

    /// Whether any of `inputs` holds f16 values (a primitive then computes them in f32).
    pub(crate) fn any_f16(inputs: &[&Tensor]) -> bool {
        inputs.iter().any(|t| t.dtype() == DType::F16)
    }

    /// Whether any of `inputs` holds f16 values an elementwise kernel cannot read directly
    /// (no SHADER_F16, or the CPU).
    pub(crate) fn any_f16_not_native(inputs: &[&Tensor]) -> bool {
        inputs.iter().any(|t| t.dtype() == DType::F16 && !t.native_f16())
    }
    /// The GPU view of this tensor (panics on a CPU tensor: internal use after a device check).
    pub(crate) fn view(&self) -> wgrad_kernels::View<'_> {
        wgrad_kernels::View {
            buffer: self.storage().gpu().expect("GPU tensor"),
            offset: self.layout().offset,
            strides: &self.layout().strides,
        }
    }
}

/// Errs when `dtype` cannot live on `device`.
pub(crate) fn check_gpu_dtype(op: &'static str, dtype: DType, device: &Device) -> Result<()> {
    if device.is_gpu() && dtype == DType::F64 {
        return Err(Error::UnsupportedDType {
            op,
            dtype,
            device: device.name(),
            why: " (WGSL kernels compute in f32; use DType::F32 on the GPU or the CPU device for f64)".into(),
        });
    }
    Ok(())
}

/// Errs unless all tensors share one device and one dtype.
pub(crate) fn check_same(op: &'static str, ts: &[&Tensor]) -> Result<()> {
    let first = ts[0];
    for t in &ts[1..] {
        if t.device() != first.device() {
            return Err(Error::DeviceMismatch { op, lhs: first.device().name(), rhs: t.device().name() });
        }
        if t.dtype() != first.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: first.dtype(), rhs: t.dtype() });
        }
    }
    Ok(())
}

pub(crate) fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(Error::UnsupportedDType {
            op,
            dtype: t.dtype(),
            device: t.device().name(),
            why: " (a float dtype is needed)".into(),
        });
    }
    Ok(())
}
