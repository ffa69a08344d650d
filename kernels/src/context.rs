//! One `Context` owns (or borrows from a host) one wgpu device and queue, the pipeline
//! cache, the buffer pool and the open command batch.

use crate::batch::BatchState;
use crate::counters::{AtomicCounters, Counters};
use crate::error::{KResult, KernelError};
use crate::profile::{KernelTime, ProfileTable};
use crate::source::KernelKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a readback may wait for the GPU before it is reported as an error.
pub const READBACK_TIMEOUT: Duration = Duration::from_secs(120);
/// A batch is submitted after this many dispatches even if nobody reads back.
const MAX_BATCH_DISPATCHES: u32 = 512;
/// Bytes of the per-batch params arena (each dispatch takes an aligned slot).
const PARAMS_ARENA_BYTES: u64 = 512 * 1024;
/// Bytes of one dispatch's uniform params block.
pub(crate) const PARAMS_BYTES: u64 = crate::source::PARAMS_QUADS as u64 * 16;

/// Adapter facts shown to users.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
}

/// The wgpu runtime of one device.
pub struct Context {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: AdapterSummary,
    limits: wgpu::Limits,
    layouts: Mutex<HashMap<(u32, u32, u32), wgpu::BindGroupLayout>>,
    pipelines: Mutex<HashMap<KernelKey, wgpu::ComputePipeline>>,
    pub(crate) state: Mutex<BatchState>,
    pub(crate) counters: AtomicCounters,
    fault: Arc<Mutex<Option<String>>>,
    lost: Arc<AtomicBool>,
    poison: AtomicBool,
    matmul_choice: KernelChoice,
    /// How grid-stride loops deal items to invocations (see `contiguous_runs`).
    runs_choice: KernelChoice,
    /// Whether f16 kernels read f16 storage directly where the adapter can (see `supports_f16`).
    f16_choice: KernelChoice,
    pass_per_dispatch: bool,
    params_align: u64,
    /// How long a readback or synchronize waits for the GPU, in nanoseconds.
    readback_timeout_ns: std::sync::atomic::AtomicU64,
    /// Test aid: report fresh allocations as out of memory (see `inject_out_of_memory`).
    inject_oom: AtomicBool,
    /// Per-kernel (dispatches, seconds) while profiling is on (see `set_profiling`).
    profile: ProfileTable,
}

/// A kernel family forced on or off for one device (None: the adapter's default), set
/// from an environment variable when the context is created or later by a setter.
struct KernelChoice(std::sync::atomic::AtomicU8);

impl KernelChoice {
    /// `var=yes` forces it on, `var=no` off; anything else leaves the default.
    fn from_env(var: &str, yes: &str, no: &str) -> KernelChoice {
        let v = std::env::var(var).ok();
        KernelChoice(std::sync::atomic::AtomicU8::new(Self::code(match v.as_deref() {
            Some(s) if s == yes => Some(true),
            Some(s) if s == no => Some(false),
            _ => None,
        })))
    }
    fn code(choice: Option<bool>) -> u8 {
        match choice {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        }
    }
    fn get(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(true),
            2 => Some(false),
            _ => None,
        }
    }
    /// Set it; whether that changed it.
    fn set(&self, choice: Option<bool>) -> bool {
        let v = Self::code(choice);
        self.0.swap(v, Ordering::Relaxed) != v
    }
}

fn rank_adapter(info: &wgpu::AdapterInfo) -> u32 {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 50,
        wgpu::DeviceType::IntegratedGpu => 40,
        wgpu::DeviceType::VirtualGpu => 30,
        wgpu::DeviceType::Cpu => 20,
        wgpu::DeviceType::Other => 10,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 2,
        _ => 0,
    };
    ty + backend
}

impl Context {
    /// Create a context on the best adapter: `WGRAD_ADAPTER=<substring>` picks one by name,
    /// otherwise a discrete GPU is preferred over integrated, virtual and CPU adapters.
    /// Blocks; in the browser it is [`KernelError::Blocking`] (use [`Context::new_async`]).
    pub fn new() -> KResult<Arc<Context>> {
        let wanted = std::env::var("WGRAD_ADAPTER").ok().filter(|s| !s.is_empty());
        if wanted.as_deref() == Some("noop") {
            return Self::noop();
        }
        Self::on_adapter(wanted.as_deref())
    }

    /// [`Context::new`] as a future: the form that works in the browser (WebGPU).
    pub async fn new_async() -> KResult<Arc<Context>> {
        let wanted = std::env::var("WGRAD_ADAPTER").ok().filter(|s| !s.is_empty());
        if wanted.as_deref() == Some("noop") {
            return Self::noop_async().await;
        }
        Self::on_adapter_async(wanted.as_deref()).await
    }

    /// A context on wgpu's noop backend: everything a real device does on the host
    /// (validation, pipelines, bind groups, encoding, submission, buffer copies and maps)
    /// except the GPU's work, which never runs. It reports the WebGPU default limits and
    /// a discrete GPU, so that wgrad takes its GPU paths. Host cost is measured on it; its
    /// readbacks return what was written into a buffer (uploads, copies), never a kernel's
    /// result. Native only.
    pub fn noop() -> KResult<Arc<Context>> {
        crate::platform::block_on(Self::noop_async(), "Context::noop", "Context::new_async")
    }

    async fn noop_async() -> KResult<Arc<Context>> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::NOOP;
        desc.backend_options.noop = wgpu::NoopBackendOptions {
            enable: true,
            limits: Some(wgpu::Limits::default()),
            features: Some(wgpu::Features::empty()),
            device_type: Some(wgpu::DeviceType::DiscreteGpu),
            ..Default::default()
        };
        let instance = wgpu::Instance::new(desc);
        let adapters = instance.enumerate_adapters(wgpu::Backends::NOOP).await;
        let adapter = adapters.into_iter().next().ok_or(KernelError::NoAdapter { hint: " (noop backend)".into() })?;
        let info = adapter.get_info();
        let device_desc = wgpu::DeviceDescriptor {
            label: Some("wgrad noop"),
            required_limits: adapter.limits(),
            ..Default::default()
        };
        let (device, queue) = adapter
            .request_device(&device_desc)
            .await
            .map_err(|e| KernelError::RequestDevice { adapter: info.name.clone(), msg: e.to_string() })?;
        Ok(Self::from_parts(device, queue, &info))
    }

    /// Create a context on the best adapter whose name contains `wanted` (any adapter for
    /// None); none is [`KernelError::NoAdapter`] naming what was asked for. Blocks.
    pub fn on_adapter(wanted: Option<&str>) -> KResult<Arc<Context>> {
        crate::platform::block_on(Self::on_adapter_async(wanted), "Device::gpu", "Device::gpu_async")
    }

    /// [`Context::on_adapter`] as a future. In the browser the one adapter is the one
    /// WebGPU offers.
    pub async fn on_adapter_async(wanted: Option<&str>) -> KResult<Arc<Context>> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
        let instance = wgpu::Instance::new(desc);
        let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
        let mut candidates: Vec<wgpu::Adapter> = adapters
            .into_iter()
            .filter(|a| {
                let name = a.get_info().name.to_lowercase();
                wanted.as_ref().is_none_or(|w| name.contains(&w.to_lowercase()))
            })
            .collect();
        candidates.sort_by_key(|a| std::cmp::Reverse(rank_adapter(&a.get_info())));
        let Some(adapter) = candidates.into_iter().next() else {
            let hint = match wanted {
                Some(w) => format!(" whose name contains '{w}' (WGRAD_ADAPTER or Device::gpu_named)"),
                None if cfg!(target_arch = "wasm32") => " (this browser offers no WebGPU adapter)".to_string(),
                None => String::new(),
            };
            return Err(KernelError::NoAdapter { hint });
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features() & wgpu::Features::SHADER_F16;
        let device_desc = wgpu::DeviceDescriptor {
            label: Some("wgrad"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = adapter
            .request_device(&device_desc)
            .await
            .map_err(|e| KernelError::RequestDevice { adapter: info.name.clone(), msg: e.to_string() })?;
        Ok(Self::from_parts(device, queue, &info))
    }

    /// Wrap a device and queue that a host application created (wgrad creates nothing of
    /// its own; limits and adapter facts come from the device).
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue) -> Arc<Context> {
        let info = device.adapter_info();
        Self::from_parts(device, queue, &info)
    }

    fn from_parts(device: wgpu::Device, queue: wgpu::Queue, info: &wgpu::AdapterInfo) -> Arc<Context> {
        let limits = device.limits();
        let fault = Arc::new(Mutex::new(None));
        let lost = Arc::new(AtomicBool::new(false));
        {
            let fault_u = fault.clone();
            // The default handler panics; wgrad turns uncaptured errors into values.
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                let mut f = fault_u.lock().unwrap_or_else(|p| p.into_inner());
                f.get_or_insert_with(|| e.to_string());
            }));
            let lost = lost.clone();
            let fault = fault.clone();
            device.set_device_lost_callback(move |_reason, msg| {
                lost.store(true, Ordering::SeqCst);
                let mut f = fault.lock().unwrap_or_else(|p| p.into_inner());
                f.get_or_insert(msg);
            });
        }
        let params_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgrad params arena"),
            size: PARAMS_ARENA_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let params_align = (limits.min_uniform_buffer_offset_alignment as u64).max(16);
        Arc::new(Context {
            device,
            queue,
            info: AdapterSummary {
                // browsers may withhold the adapter's description
                name: match (info.name.is_empty(), info.backend) {
                    (false, _) => info.name.clone(),
                    (true, wgpu::Backend::BrowserWebGpu) => "WebGPU adapter".to_string(),
                    (true, _) => "unnamed adapter".to_string(),
                },
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            },
            limits,
            layouts: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            state: Mutex::new(BatchState::new(params_buf)),
            counters: AtomicCounters::default(),
            fault,
            lost,
            poison: AtomicBool::new(false),
            matmul_choice: KernelChoice::from_env("WGRAD_MATMUL", "reg", "tiled"),
            runs_choice: KernelChoice::from_env("WGRAD_GRID_RUNS", "contiguous", "interleaved"),
            f16_choice: KernelChoice::from_env("WGRAD_F16", "native", "fallback"),
            pass_per_dispatch: std::env::var("WGRAD_PASS_PER_DISPATCH").as_deref() == Ok("1"),
            profile: ProfileTable::new(std::env::var("WGRAD_PROFILE").as_deref() == Ok("1")),
            params_align,
            readback_timeout_ns: std::sync::atomic::AtomicU64::new(
                u64::try_from(READBACK_TIMEOUT.as_nanos()).unwrap_or(u64::MAX),
            ),
            inject_oom: AtomicBool::new(false),
        })
    }

    /// How long a readback or [`Context::synchronize`] waits for submitted work before it
    /// is [`KernelError::ReadbackTimeout`] ([`READBACK_TIMEOUT`] unless set).
    pub fn readback_timeout(&self) -> Duration {
        Duration::from_nanos(self.readback_timeout_ns.load(Ordering::Relaxed))
    }

    /// Set the readback timeout of this device. A timed-out read loses nothing: the work
    /// stays queued and the tensors stay valid, so a later read (with a longer timeout)
    /// returns the values.
    pub fn set_readback_timeout(&self, timeout: Duration) {
        self.readback_timeout_ns.store(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Test aid: while on, every allocation that the pool cannot serve fails as the driver's
    /// out-of-memory error would ([`KernelError::OutOfMemory`], raised through the same
    /// error-scope path), so callers' handling of it can be tested on any adapter.
    pub fn inject_out_of_memory(&self, on: bool) {
        self.inject_oom.store(on, Ordering::SeqCst);
    }
    pub(crate) fn out_of_memory_injected(&self) -> bool {
        self.inject_oom.load(Ordering::Relaxed)
    }

    /// The matmul kernel family: register blocks on CPU adapters, shared-memory tiles on
    /// GPUs; `WGRAD_MATMUL=reg|tiled` (read when the context is created) or
    /// [`Context::set_matmul_register_blocked`] override it (for benchmarking).
    pub(crate) fn prefer_register_matmul(&self) -> bool {
        self.matmul_choice.get().unwrap_or(self.is_cpu_adapter())
    }

    /// Force the matmul kernel family on this device: Some(true) register blocks,
    /// Some(false) shared-memory tiles, None the adapter's default.
    pub fn set_matmul_register_blocked(&self, choice: Option<bool>) {
        self.matmul_choice.set(choice);
    }

    /// Whether grid-stride loops give each invocation one contiguous run of items (CPU
    /// adapters) rather than every total-th item (GPUs, where a warp's loads then
    /// coalesce): the `CONTIGUOUS_RUNS` override of common.wgsl. `WGRAD_GRID_RUNS=
    /// contiguous|interleaved` (read when the context is created) or
    /// [`Context::set_contiguous_runs`] override the adapter's default.
    pub fn contiguous_runs(&self) -> bool {
        self.runs_choice.get().unwrap_or(self.is_cpu_adapter())
    }

    /// Choose how this device computes on f16 tensors: Some(false) forces the fallback
    /// (f16 unpacked to f32 with `unpack2x16float`, computed, and packed back) even where
    /// the adapter has SHADER_F16; Some(true) or None use f16 storage directly where the
    /// adapter has it. `WGRAD_F16=native|fallback` sets it when the context is created.
    /// Tests use it to run both paths on one adapter.
    pub fn set_native_f16(&self, choice: Option<bool>) {
        self.f16_choice.set(choice);
    }

    /// Whether f16 storage may be used directly (not forced to the fallback).
    pub(crate) fn f16_native_allowed(&self) -> bool {
        self.f16_choice.get() != Some(false)
    }

    /// Force the grid-stride order on this device: Some(true) contiguous runs, Some(false)
    /// interleaved, None the adapter's default. Pipelines built so far are dropped (the
    /// order is compiled into them); work already encoded keeps its own.
    pub fn set_contiguous_runs(&self, choice: Option<bool>) {
        if self.runs_choice.set(choice) {
            crate::lock(&self.pipelines).clear();
        }
    }

    /// `WGRAD_PASS_PER_DISPATCH=1` ends the compute pass after every dispatch (the old
    /// behaviour, kept to measure what sharing one pass saves).
    pub(crate) fn pass_per_dispatch(&self) -> bool {
        self.pass_per_dispatch
    }

    /// Whether the adapter is a CPU (a software rasterizer such as lavapipe).
    pub fn is_cpu_adapter(&self) -> bool {
        self.info.device_type == "Cpu"
    }

    pub fn adapter(&self) -> &AdapterSummary {
        &self.info
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }
    pub fn wgpu_device(&self) -> &wgpu::Device {
        &self.device
    }
    pub fn wgpu_queue(&self) -> &wgpu::Queue {
        &self.queue
    }
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }
    /// Start a new peak: `peak_live_bytes` becomes the bytes live now.
    pub fn reset_peak_live_bytes(&self) {
        let now = self.counters.live_bytes.load(Ordering::Relaxed);
        self.counters.peak_live_bytes.store(now, Ordering::Relaxed);
    }
    /// Test aid: fill every new output buffer with NaN so unwritten elements show.
    pub fn set_poison_outputs(&self, on: bool) {
        self.poison.store(on, Ordering::SeqCst);
    }
    pub(crate) fn poison_outputs(&self) -> bool {
        self.poison.load(Ordering::Relaxed)
    }

    /// Err if the device was lost or an uncaptured GPU error was reported.
    pub fn check_health(&self) -> KResult<()> {
        if self.lost.load(Ordering::SeqCst) {
            let msg = self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone();
            return Err(KernelError::DeviceLost(msg.unwrap_or_default()));
        }
        if let Some(msg) = self.fault.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(KernelError::Gpu(msg));
        }
        Ok(())
    }

    /// Where GPU errors reported later are kept until a call reports them.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn fault_slot(&self) -> Arc<Mutex<Option<String>>> {
        self.fault.clone()
    }

    /// Mark the device lost (a host that destroyed the device, or a fault test).
    pub fn mark_lost(&self, why: &str) {
        self.lost.store(true, Ordering::SeqCst);
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(why.to_string());
    }

    /// The layout of `n_in` read-only and `n_out` read-write storage buffers, the params
    /// block, then `n_uniform` 16-byte uniforms.
    pub(crate) fn layout(&self, n_in: u32, n_out: u32, n_uniform: u32) -> wgpu::BindGroupLayout {
        let mut layouts = crate::lock(&self.layouts);
        layouts
            .entry((n_in, n_out, n_uniform))
            .or_insert_with(|| {
                let entry = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
                    binding,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                };
                let mut entries: Vec<_> = (0..n_in).map(|b| entry(b, true)).collect();
                entries.extend((n_in..n_in + n_out).map(|b| entry(b, false)));
                // launch params: a uniform block of PARAMS_QUADS vec4<u32> (see common.wgsl)
                entries.push(wgpu::BindGroupLayoutEntry {
                    binding: n_in + n_out,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: std::num::NonZeroU64::new(PARAMS_BYTES),
                    },
                    count: None,
                });
                for u in 0..n_uniform {
                    entries.push(wgpu::BindGroupLayoutEntry {
                        binding: n_in + n_out + 1 + u,
                        visibility: wgpu::ShaderStages::COMPUTE,
                        ty: wgpu::BindingType::Buffer {
                            ty: wgpu::BufferBindingType::Uniform,
                            has_dynamic_offset: false,
                            min_binding_size: std::num::NonZeroU64::new(32),
                        },
                        count: None,
                    });
                }
                self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some("wgrad layout"),
                    entries: &entries,
                })
            })
            .clone()
    }

    /// Profiling: every dispatch is submitted and waited for on its own, and its wall time
    /// (encode + submit + run) is added to its kernel's row. It serializes everything, so
    /// totals are slower than normal runs; it is for finding where the time goes. `on`
    /// clears the table; `WGRAD_PROFILE=1` turns it on for new contexts.
    pub fn set_profiling(&self, on: bool) {
        self.profile.set(on);
    }

    /// The profile since `set_profiling(true)`, slowest kernel first.
    pub fn kernel_profile(&self) -> Vec<KernelTime> {
        self.profile.rows()
    }

    pub(crate) fn profiling(&self) -> bool {
        self.profile.is_on()
    }

    pub(crate) fn record_profile(&self, kernel: String, seconds: f64) {
        self.profile.record(kernel, seconds);
    }

    /// Count a vmap loop fallback over `op` on this device, and show it in the profile as
    /// a row of its own (its wall time; the kernels it ran appear under their own names).
    pub fn note_vmap_fallback(&self, op: &str, seconds: f64) {
        AtomicCounters::add(&self.counters.vmap_fallback_loops, 1);
        self.record_profile(format!("vmap loop fallback: {op}"), seconds);
    }

    /// Count a primitive run through the entry point on this device.
    pub fn note_primitive(&self) {
        AtomicCounters::add(&self.counters.primitives, 1);
    }

    /// The kernels compiled on this device so far (what ran, for tests and diagnostics).
    pub fn compiled_kernels(&self) -> Vec<KernelKey> {
        crate::lock(&self.pipelines).keys().copied().collect()
    }

    /// Compile `key`'s pipeline now (cached like any other): for checks that every kernel
    /// compiles on an adapter, such as the browser tests against Chrome's WGSL compiler.
    /// In the browser a compile error arrives later and the next call reports it.
    pub fn compile(&self, key: KernelKey) -> KResult<()> {
        self.pipeline(key).map(|_| ())
    }

    pub(crate) fn pipeline(&self, key: KernelKey) -> KResult<wgpu::ComputePipeline> {
        if let Some(p) = crate::lock(&self.pipelines).get(&key) {
            return Ok(p.clone());
        }
        let (n_in, n_out) = key.bindings();
        let layout = self.layout(n_in, n_out, key.extra_uniforms());
        let source = key.source();
        let name = key.name();
        // the grid-stride order: an override that common.wgsl declares (every kernel, built
        // here or generated by fusion, includes it: the naga test checks)
        let runs_constant = [("CONTIGUOUS_RUNS", if self.contiguous_runs() { 1.0 } else { 0.0 })];
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&name),
            layout: Some(&pl),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &runs_constant, ..Default::default() },
            cache: None,
        });
        if let Some(e) = self.pop_error_scope(scope) {
            return Err(KernelError::Compile { kernel: name, msg: e.to_string() });
        }
        AtomicCounters::add(&self.counters.pipeline_compilations, 1);
        crate::lock(&self.pipelines).insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// Params slot alignment within the arena.
    pub(crate) fn params_align(&self) -> u64 {
        self.params_align
    }
    pub(crate) fn arena_bytes(&self) -> u64 {
        PARAMS_ARENA_BYTES
    }
    pub(crate) fn max_batch(&self) -> u32 {
        MAX_BATCH_DISPATCHES
    }
}
