use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live runtime counters, readable by tests and benchmarks.
#[derive(Default, Debug)]
pub(crate) struct AtomicCounters {
    pub dispatches: AtomicU64,
    pub submits: AtomicU64,
    pub readbacks: AtomicU64,
    pub pipeline_compilations: AtomicU64,
    pub buffer_allocations: AtomicU64,
    pub live_buffers: AtomicU64,
    pub live_bytes: AtomicU64,
    pub peak_live_bytes: AtomicU64,
    pub vmap_fallback_loops: AtomicU64,
    pub primitives: AtomicU64,
    pub bind_group_creations: AtomicU64,
}

/// A snapshot of the runtime counters. Subtract two snapshots to count the work in between.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Compute dispatches encoded.
    pub dispatches: u64,
    /// Queue submissions.
    pub submits: u64,
    /// Device-to-host reads (each blocks the host).
    pub readbacks: u64,
    /// Compute pipelines compiled (each key once per device).
    pub pipeline_compilations: u64,
    /// Buffers created on the device (pool misses).
    pub buffer_allocations: u64,
    /// Buffers held by tensors right now (excluding the pool's free lists).
    pub live_buffers: u64,
    /// Bytes of the buffers held by tensors right now.
    pub live_bytes: u64,
    /// The most `live_bytes` ever reached since the device was made or
    /// [`crate::Context::reset_peak_live_bytes`] was called.
    pub peak_live_bytes: u64,
    /// Times vmap ran a loop over the examples (a user op without a batching rule).
    pub vmap_fallback_loops: u64,
    /// Primitives run through the entry point (`bind`) on this device (on the CPU device:
    /// by the calling thread, where CPU primitives run).
    pub primitives: u64,
    /// Bind groups created (eager dispatches create one each).
    pub bind_group_creations: u64,
}

impl AtomicCounters {
    pub fn snapshot(&self) -> Counters {
        Counters {
            dispatches: self.dispatches.load(Relaxed),
            submits: self.submits.load(Relaxed),
            readbacks: self.readbacks.load(Relaxed),
            pipeline_compilations: self.pipeline_compilations.load(Relaxed),
            buffer_allocations: self.buffer_allocations.load(Relaxed),
            live_buffers: self.live_buffers.load(Relaxed),
            live_bytes: self.live_bytes.load(Relaxed),
            peak_live_bytes: self.peak_live_bytes.load(Relaxed),
            vmap_fallback_loops: self.vmap_fallback_loops.load(Relaxed),
            primitives: self.primitives.load(Relaxed),
            bind_group_creations: self.bind_group_creations.load(Relaxed),
        }
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    /// A buffer of `n` bytes became live: count it and raise the peak.
    pub fn add_live_bytes(&self, n: u64) {
        let now = self.live_bytes.fetch_add(n, Relaxed) + n;
        self.peak_live_bytes.fetch_max(now, Relaxed);
    }
    pub fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Relaxed);
    }
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    /// Work done between two snapshots (live values are differences too).
    fn sub(self, o: Counters) -> Counters {
        Counters {
            dispatches: self.dispatches - o.dispatches,
            submits: self.submits - o.submits,
            readbacks: self.readbacks - o.readbacks,
            pipeline_compilations: self.pipeline_compilations - o.pipeline_compilations,
            buffer_allocations: self.buffer_allocations - o.buffer_allocations,
            live_buffers: self.live_buffers.wrapping_sub(o.live_buffers),
            live_bytes: self.live_bytes.wrapping_sub(o.live_bytes),
            peak_live_bytes: self.peak_live_bytes,
            vmap_fallback_loops: self.vmap_fallback_loops - o.vmap_fallback_loops,
            primitives: self.primitives - o.primitives,
            bind_group_creations: self.bind_group_creations - o.bind_group_creations,
        }
    }
}
