//! The open command batch of a context: its encoder and compute pass, the launch params
//! of its dispatches, the buffers freed while it is open, and the buffers replay plans pin.

use crate::context::Context;
use crate::counters::AtomicCounters;
use std::collections::HashMap;

/// What a context accumulates between submissions (guarded by its `state` mutex).
pub(crate) struct BatchState {
    encoder: Option<wgpu::CommandEncoder>,
    /// The open compute pass: consecutive dispatches share one pass (wgpu still inserts
    /// the barriers between them); it is ended before any other command or the submit.
    pass: Option<wgpu::ComputePass<'static>>,
    dispatches: u32,
    /// Host copy of this batch's params; written to `params_buf` right before submit.
    params: Vec<u32>,
    params_buf: wgpu::Buffer,
    /// Buffers dropped while the batch is open. The batch may still read them, and a
    /// `write_buffer` into one would land before those reads (queue writes run before the
    /// batch's commands), so until the submit they are reused only as kernel outputs,
    /// which the encoder orders after the earlier reads.
    pending_free: HashMap<u64, Vec<wgpu::Buffer>>,
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    /// Set when a queue write must be flushed even without a command.
    dirty: bool,
    /// The launches recorded since `begin_capture` (see `capture.rs`).
    pub(crate) capture: Option<crate::capture::Capture>,
    /// Buffers replay plans reference, with how many plans do: never returned to the pool.
    pinned: HashMap<wgpu::Buffer, u32>,
    /// Pinned buffers whose tensors were dropped: the plans keep them (still live memory).
    pinned_dropped: std::collections::HashSet<wgpu::Buffer>,
}

impl BatchState {
    /// An empty batch whose params go to `params_buf` (the context's params arena).
    pub(crate) fn new(params_buf: wgpu::Buffer) -> BatchState {
        BatchState {
            encoder: None,
            pass: None,
            dispatches: 0,
            params: Vec::new(),
            params_buf,
            pending_free: HashMap::new(),
            free: HashMap::new(),
            dirty: false,
            capture: None,
            pinned: HashMap::new(),
            pinned_dropped: Default::default(),
        }
    }
}

impl BatchState {
    /// The batch's encoder for non-compute commands (ends the open compute pass).
    pub(crate) fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.pass = None;
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgrad batch") })
        })
    }

    pub(crate) fn end_pass(&mut self) {
        self.pass = None;
    }

    /// The open compute pass of the batch (begun on first use).
    pub(crate) fn pass(&mut self, device: &wgpu::Device) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            let encoder = self.encoder(device);
            let pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("wgrad"), timestamp_writes: None });
            self.pass = Some(pass.forget_lifetime());
        }
        self.pass.as_mut().expect("pass just begun")
    }
    pub(crate) fn params_mut(&mut self) -> &mut Vec<u32> {
        &mut self.params
    }
    pub(crate) fn params_buf(&self) -> &wgpu::Buffer {
        &self.params_buf
    }
    pub(crate) fn bump_dispatches(&mut self) -> u32 {
        self.dispatches += 1;
        self.dispatches
    }
    pub(crate) fn defer_free(&mut self, class: u64, buf: wgpu::Buffer) {
        self.pending_free.entry(class).or_default().push(buf);
    }
    /// A free buffer of `class`; `for_queue_write` excludes those the open batch may read.
    pub(crate) fn take_free(&mut self, class: u64, for_queue_write: bool) -> Option<wgpu::Buffer> {
        if let Some(b) = self.free.get_mut(&class).and_then(|v| v.pop()) {
            return Some(b);
        }
        if for_queue_write {
            return None;
        }
        self.pending_free.get_mut(&class).and_then(|v| v.pop())
    }
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Whether `buf` is pinned by a plan; a dropped pinned buffer is kept for the plan
    /// (and its bytes stay live) instead of going back to the pool.
    pub(crate) fn keep_if_pinned(&mut self, buf: &wgpu::Buffer) -> bool {
        if self.pinned.contains_key(buf) {
            self.pinned_dropped.insert(buf.clone());
            return true;
        }
        false
    }

    /// Whether `buf` is back in the pool (no tensor and no plan holds it).
    pub(crate) fn in_pool(&self, buf: &wgpu::Buffer) -> bool {
        [&self.free, &self.pending_free].iter().any(|list| list.get(&buf.size()).is_some_and(|v| v.contains(buf)))
    }

    /// Pin a plan's buffers; those already back in the pool are taken out of it (their
    /// bytes become live again: returned so the caller counts them).
    pub(crate) fn pin(&mut self, buffers: &[wgpu::Buffer]) -> Vec<u64> {
        let mut revived = Vec::new();
        for b in buffers {
            *self.pinned.entry(b.clone()).or_insert(0) += 1;
            for list in [&mut self.free, &mut self.pending_free] {
                if let Some(v) = list.get_mut(&b.size()) {
                    if let Some(i) = v.iter().position(|x| x == b) {
                        v.swap_remove(i);
                        self.pinned_dropped.insert(b.clone());
                        revived.push(b.size());
                    }
                }
            }
        }
        revived
    }

    /// Unpin a plan's buffers; the bytes of those no tensor holds any more (now back in the
    /// pool) are returned so the caller stops counting them as live.
    pub(crate) fn unpin(&mut self, buffers: &[wgpu::Buffer]) -> Vec<u64> {
        let mut released = Vec::new();
        for b in buffers {
            let Some(n) = self.pinned.get_mut(b) else { continue };
            *n -= 1;
            if *n > 0 {
                continue;
            }
            self.pinned.remove(b);
            if self.pinned_dropped.remove(b) {
                released.push(b.size());
                self.pending_free.entry(b.size()).or_default().push(b.clone());
            }
        }
        released
    }

    /// Submit the open batch (params first, then commands); returns the submission index.
    pub(crate) fn submit(&mut self, ctx: &Context) -> Option<wgpu::SubmissionIndex> {
        self.pass = None; // a pass must end before its encoder finishes
        let encoder = self.encoder.take();
        let mut index = None;
        if encoder.is_some() || self.dirty {
            if !self.params.is_empty() {
                ctx.queue.write_buffer(&self.params_buf, 0, bytemuck::cast_slice(&self.params));
            }
            index = Some(ctx.queue.submit(encoder.map(|e| e.finish())));
            AtomicCounters::add(&ctx.counters.submits, 1);
        }
        self.params.clear();
        self.dispatches = 0;
        self.dirty = false;
        for (class, bufs) in self.pending_free.drain() {
            self.free.entry(class).or_default().extend(bufs);
        }
        index
    }
}
