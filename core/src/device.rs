//! Where tensors live: the CPU reference backend or one wgpu device.
use crate::Result;
use std::sync::{Arc, OnceLock};
use wgrad_kernels::KernelError;
pub use wgrad_kernels::{AdapterSummary, Context, Counters};

/// A compute device. Cloning is cheap; GPU devices compare equal when they share a context.
#[derive(Clone)]
pub enum Device {
    Cpu,
    Gpu(Arc<Context>),
}

static DEFAULT_GPU: OnceLock<std::result::Result<Arc<Context>, wgrad_kernels::KernelError>> = OnceLock::new();

impl Device {
    pub fn cpu() -> Device {
        Device::Cpu
    }

    /// The process-wide default GPU device (created once; `WGRAD_ADAPTER` picks the adapter).
    /// Errs with instructions when no adapter exists. Creating it blocks: in the browser
    /// it is an error naming [`Device::gpu_async`] until that has created it.
    pub fn gpu() -> Result<Device> {
        if cfg!(target_arch = "wasm32") {
            return match DEFAULT_GPU.get() {
                Some(ctx) => Ok(Device::Gpu(ctx.clone()?)),
                None => Err(KernelError::Blocking { call: "Device::gpu", use_instead: "Device::gpu_async" }.into()),
            };
        }
        let ctx = DEFAULT_GPU.get_or_init(Context::new).clone()?;
        Ok(Device::Gpu(ctx))
    }

    /// [`Device::gpu`] as a future: the form that works in the browser (WebGPU). The
    /// device it creates is the default one, which `Device::gpu()` then returns too.
    pub async fn gpu_async() -> Result<Device> {
        if let Some(ctx) = DEFAULT_GPU.get() {
            return Ok(Device::Gpu(ctx.clone()?));
        }
        let created = Context::new_async().await;
        // another task may have finished first: the first one stays the default
        let ctx = DEFAULT_GPU.get_or_init(|| created).clone()?;
        Ok(Device::Gpu(ctx))
    }

    /// [`Device::best`] as a future: the GPU (WebGPU in the browser) when there is one,
    /// otherwise the CPU.
    pub async fn best_async() -> Device {
        Device::gpu_async().await.unwrap_or(Device::Cpu)
    }

    /// A GPU device with a context of its own (its own wgpu device and queue).
    pub fn new_gpu() -> Result<Device> {
        Ok(Device::Gpu(Context::new()?))
    }

    /// [`Device::new_gpu`] as a future (the form that works in the browser).
    pub async fn new_gpu_async() -> Result<Device> {
        Ok(Device::Gpu(Context::new_async().await?))
    }

    /// A GPU device of its own on the adapter whose name contains `name` (case-insensitive),
    /// as `WGRAD_ADAPTER=<name>` picks for [`Device::gpu`]; no such adapter is an error.
    pub fn gpu_named(name: &str) -> Result<Device> {
        Ok(Device::Gpu(Context::on_adapter(Some(name))?))
    }

    /// Run on the device and queue a host application created (no device of wgrad's own);
    /// see the interop rules on [`Tensor::from_wgpu_buffer`](crate::Tensor::from_wgpu_buffer).
    /// Note that wgrad installs its own uncaptured-error handler on the device, so that GPU
    /// errors surface as `Err` values from wgrad calls.
    pub fn from_wgpu(device: wgpu_types::Device, queue: wgpu_types::Queue) -> Device {
        Device::Gpu(Context::from_wgpu(device, queue))
    }

    /// The GPU when there is one, otherwise the CPU with a one-line notice on stderr.
    pub fn best() -> Device {
        match Device::gpu() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("wgrad: no GPU available, running on the CPU ({e})");
                Device::Cpu
            }
        }
    }

    /// A GPU device on wgpu's noop backend, to measure wgrad's host cost on any machine:
    /// every op does its host work (shape rules, graph, fusion, validation, bind groups,
    /// encoding, submission) but no kernel runs, so values read back are not computed
    /// ones (only what was uploaded or copied). It reports the WebGPU default limits and a
    /// discrete GPU. `WGRAD_ADAPTER=noop` makes it the default GPU device.
    pub fn noop() -> Result<Device> {
        Ok(Device::Gpu(Context::noop()?))
    }

    /// Parse `cpu`, `gpu`, `best` or `noop` (for command-line flags).
    pub fn from_name(name: &str) -> Result<Device> {
        match name {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Device::gpu(),
            "best" => Ok(Device::best()),
            "noop" => Device::noop(),
            other => Err(crate::Error::Invalid {
                op: "Device::from_name",
                msg: format!("unknown device '{other}' (cpu, gpu, best or noop)"),
            }),
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    pub fn context(&self) -> Option<&Arc<Context>> {
        match self {
            Device::Gpu(c) => Some(c),
            Device::Cpu => None,
        }
    }

    /// Runtime counters of a GPU device (zeros on the CPU).
    /// The device's counters. The CPU device counts its live buffers and bytes (tensor
    /// storage, process-wide: there is one CPU device) and their peak; the rest are GPU work.
    pub fn counters(&self) -> Counters {
        match self.context() {
            Some(c) => c.counters(),
            None => {
                let (live_buffers, live_bytes, peak_live_bytes) = crate::storage::cpu_live();
                let primitives = crate::primitive::cpu_primitives();
                Counters { live_buffers, live_bytes, peak_live_bytes, primitives, ..Default::default() }
            }
        }
    }

    /// Start a new peak of live bytes (see [`Counters::peak_live_bytes`]) on this device.
    pub fn reset_peak_live_bytes(&self) {
        match self.context() {
            Some(c) => c.reset_peak_live_bytes(),
            None => crate::storage::reset_cpu_peak(),
        }
    }

    /// Submit queued GPU work without waiting.
    pub fn flush(&self) -> Result<()> {
        if let Some(c) = self.context() {
            crate::fusion::flush(c)?;
            c.flush()?;
        }
        Ok(())
    }

    /// Wait until all queued GPU work has finished. Blocks: in the browser it is an error
    /// naming [`Device::synchronize_async`].
    pub fn synchronize(&self) -> Result<()> {
        if let Some(c) = self.context() {
            crate::fusion::flush(c)?;
            c.synchronize()?;
        }
        Ok(())
    }

    /// [`Device::synchronize`] as a future: the form that works in the browser.
    pub async fn synchronize_async(&self) -> Result<()> {
        if let Some(c) = self.context() {
            crate::fusion::flush(c)?;
            c.synchronize_async().await?;
        }
        Ok(())
    }

    /// Start (clearing the table) or stop per-kernel profiling: on a GPU every dispatch is
    /// waited for and timed ([`Context::set_profiling`]); on the CPU each primitive's
    /// forward is timed (one CPU table for the process).
    pub fn set_profiling(&self, on: bool) {
        match self {
            Device::Gpu(c) => c.set_profiling(on),
            Device::Cpu => crate::cpu_profile::set(on),
        }
    }

    /// The profile since `set_profiling(true)`, slowest first: GPU kernels, or CPU
    /// primitives by name.
    pub fn kernel_profile(&self) -> Vec<wgrad_kernels::KernelTime> {
        match self {
            Device::Gpu(c) => c.kernel_profile(),
            Device::Cpu => crate::cpu_profile::rows(),
        }
    }

    /// A human-readable name: `cpu` or the adapter's name and backend.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".to_string(),
            Device::Gpu(c) => format!("{} ({})", c.adapter().name, c.adapter().backend),
        }
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Gpu(a), Device::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name())
    }
}

use wgrad_kernels::wgpu as wgpu_types;
