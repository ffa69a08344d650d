//! Encoding one kernel launch into the open batch.

use crate::buffer::GpuBuffer;
use crate::context::{Context, PARAMS_BYTES};
use crate::counters::AtomicCounters;
use crate::error::{KResult, KernelError};
use crate::launch::small_u32;
use crate::source::{KernelKey, WG};
use std::num::NonZeroU64;
use std::sync::Arc;

const MAX_STRIDE_GROUPS: u64 = 1024;
/// On CPU adapters a grid-stride kernel's threads take at least this many elements each.
const CPU_MIN_ELEMS: u64 = 64;

/// Threads of this machine (lavapipe runs one per core); asked once: the std call reads
/// cgroup files each time.
pub(crate) fn cpu_threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(4, |t| t.get()))
}

impl Context {
    /// Workgroup grid for `threads` threads of a 1-D kernel: folded into 2-D past the
    /// per-dimension limit (65,535 on most adapters).
    pub(crate) fn grid_1d(&self, key: KernelKey, threads: u64) -> KResult<(u32, u32, u32)> {
        self.grid_groups(key, threads.div_ceil(WG as u64))
    }

    /// Grid for a grid-stride kernel over `n` elements: at most `MAX_STRIDE_GROUPS`
    /// workgroups (per-workgroup overhead dominates software rasterizers such as lavapipe;
    /// real GPUs are still filled: 1,024 x 256 threads).
    pub(crate) fn grid_stride(&self, key: KernelKey, n: u64) -> KResult<(u32, u32, u32)> {
        let groups = n.div_ceil(WG as u64);
        if self.is_cpu_adapter() {
            // lavapipe pays a fixed cost per workgroup: give each thread at least
            // CPU_MIN_ELEMS elements, but keep every CPU thread busy
            let threads = cpu_threads() as u64;
            let wanted = n.div_ceil(WG as u64 * CPU_MIN_ELEMS).max(threads);
            return self.grid_groups(key, groups.min(wanted).min(MAX_STRIDE_GROUPS));
        }
        self.grid_groups(key, groups.min(MAX_STRIDE_GROUPS))
    }

    pub(crate) fn grid_groups(&self, key: KernelKey, groups: u64) -> KResult<(u32, u32, u32)> {
        let max = self.limits().max_compute_workgroups_per_dimension;
        // both fit in 32 bits once within the limit (a u32)
        let within = |g: u64| u32::try_from(g).ok().filter(|&g| g <= max);
        if let Some(g) = within(groups) {
            return Ok((g, 1, 1));
        }
        match within(groups.div_ceil(max as u64)) {
            Some(y) => Ok((max, y, 1)),
            None => Err(KernelError::GridTooLarge { kernel: key.name(), groups, max }),
        }
    }

    /// Encode one dispatch; `params` go to this dispatch's slot of the batch arena.
    pub(crate) fn dispatch(
        self: &Arc<Self>,
        key: KernelKey,
        inputs: &[&GpuBuffer],
        outputs: &[&GpuBuffer],
        params: &[u32],
        groups: (u32, u32, u32),
    ) -> KResult<()> {
        self.dispatch_with(key, inputs, outputs, &[], params, groups)
    }

    /// [`Context::dispatch`] with the key's extra uniform buffers, bound after the params.
    pub(crate) fn dispatch_with(
        self: &Arc<Self>,
        key: KernelKey,
        inputs: &[&GpuBuffer],
        outputs: &[&GpuBuffer],
        uniforms: &[&GpuBuffer],
        params: &[u32],
        groups: (u32, u32, u32),
    ) -> KResult<()> {
        self.check_health()?;
        if groups.0 == 0 || groups.1 == 0 || groups.2 == 0 {
            return Ok(());
        }
        let pipeline = self.pipeline(key)?;
        let started = self.profiling().then(web_time::Instant::now);
        let (n_in, n_out) = key.bindings();
        // the arity check, against the family's declaration (KernelKey::bindings)
        let given = (small_u32(inputs.len()), small_u32(outputs.len()), small_u32(uniforms.len()));
        if given != (n_in, n_out, key.extra_uniforms()) {
            return Err(KernelError::Unsupported(format!(
                "{}: {} inputs, {} outputs and {} uniform buffers given, the kernel binds {n_in}, {n_out} and {}",
                key.name(),
                inputs.len(),
                outputs.len(),
                uniforms.len(),
                key.extra_uniforms()
            )));
        }
        let layout = self.layout(n_in, n_out, key.extra_uniforms());
        if params.len() as u64 * 4 > PARAMS_BYTES {
            return Err(KernelError::Unsupported(format!(
                "{}: {} launch params (at most {})",
                key.name(),
                params.len(),
                PARAMS_BYTES / 4
            )));
        }
        let align = self.params_align();
        // every slot is bound as a whole PARAMS_BYTES block (the shader's declared size);
        // the bytes past this dispatch's own params are never read
        let bytes = PARAMS_BYTES;
        let mut st = crate::lock(&self.state);
        let mut offset = ((st.params_mut().len() * 4) as u64).div_ceil(align) * align;
        if offset + bytes > self.arena_bytes() {
            st.submit(self);
            offset = 0;
        }
        {
            let arena = st.params_mut();
            arena.resize((offset / 4) as usize, 0);
            arena.extend_from_slice(params);
            if params.is_empty() {
                arena.push(0);
            }
        }
        let params_buf = st.params_buf().clone();
        let mut entries: Vec<wgpu::BindGroupEntry> = Vec::with_capacity(inputs.len() + outputs.len() + 1);
        for (i, b) in inputs.iter().chain(outputs.iter()).enumerate() {
            entries.push(wgpu::BindGroupEntry { binding: small_u32(i), resource: b.raw().as_entire_binding() });
        }
        entries.push(wgpu::BindGroupEntry {
            binding: n_in + n_out,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &params_buf,
                offset,
                size: NonZeroU64::new(bytes),
            }),
        });
        for (i, u) in uniforms.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: n_in + n_out + 1 + small_u32(i),
                resource: u.raw().as_entire_binding(),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        {
            let pass = st.pass(&self.device);
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        }
        if self.pass_per_dispatch() {
            st.end_pass();
        }
        AtomicCounters::add(&self.counters.dispatches, 1);
        AtomicCounters::add(&self.counters.bind_group_creations, 1);
        Context::note_launch(&mut st, key, [inputs, outputs, uniforms], params, groups);
        if st.bump_dispatches() >= self.max_batch() {
            st.submit(self);
        }
        if let Some(t) = started {
            st.submit(self);
            drop(st);
            self.wait_idle()?;
            self.record_profile(key.name(), t.elapsed().as_secs_f64());
        }
        Ok(())
    }
}
