//! Capture and replay of kernel launches (what `wgrad::jit` records): while a capture is
//! open, every dispatch runs as usual and is also recorded (kernel, buffers, params,
//! grid). A [`Plan`] built from a capture replays the same launches on the same buffers
//! from cached pipelines and bind groups: no params are computed, no buffer is allocated
//! and no bind group is created per replay.
//!
//! Buffers: the plan references every buffer its launches touched. Those buffers are
//! *pinned* while the plan lives: when the tensor holding one is dropped, the buffer does
//! not go back to the pool (where another tensor could get it and be overwritten by a
//! replay); the plan keeps it, and it counts as live memory until the plan is dropped.
//! Buffers reused within the capture keep the same reuse in every replay, in the same
//! order, so that is safe.
// wgpu buffers hash and compare by identity (the handle), never by their contents.
#![allow(clippy::mutable_key_type)]

use crate::buffer::GpuBuffer;
use crate::context::{Context, PARAMS_BYTES};
use crate::counters::AtomicCounters;
use crate::error::{KResult, KernelError};
use crate::source::KernelKey;
use std::collections::HashSet;
use std::num::NonZeroU64;
use std::sync::Arc;

/// One recorded launch.
#[derive(Clone, Debug)]
pub struct CapturedDispatch {
    pub key: KernelKey,
    pub(crate) buffers: Vec<wgpu::Buffer>,
    pub params: Vec<u32>,
    pub groups: (u32, u32, u32),
}

/// The launches of one capture, in order, and the host bytes written into buffers. Its
/// buffers are pinned from the moment the capture ends (so nothing allocated after it,
/// such as copies of its results, can share one) until it is dropped or becomes a plan.
#[derive(Default)]
pub struct Capture {
    pub dispatches: Vec<CapturedDispatch>,
    /// The bytes of every queue write (uploads), in order: a replay does not write them
    /// again, so two captures must agree on them.
    pub writes: Vec<Vec<u8>>,
    /// Buffers uploads wrote during the capture: pinned at once, so that no later launch of
    /// the capture reuses one (a replay does not upload again: each keeps its bytes).
    written: Vec<wgpu::Buffer>,
    /// Buffers handed to a tensor during the capture, with the number of launches recorded
    /// before: where a new value of the buffer begins (memory planning).
    allocations: Vec<(wgpu::Buffer, usize)>,
    /// The distinct buffers of the launches, pinned by this capture, and their context.
    pinned: Option<(Arc<Context>, Vec<wgpu::Buffer>)>,
}

impl Capture {
    /// Keep only what comparing captures needs: the buffers are unpinned now (a capture
    /// kept to compare the next one against must not hold their memory).
    pub fn release_buffers(&mut self) {
        if let Some((ctx, buffers)) = self.pinned.take() {
            ctx.unpin(&buffers);
        }
        for d in &mut self.dispatches {
            d.buffers.clear();
        }
    }
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Capture({} launches, {} uploads)", self.dispatches.len(), self.writes.len())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some((ctx, buffers)) = self.pinned.take() {
            ctx.unpin(&buffers);
        }
    }
}

impl Capture {
    /// Whether `next` (a later capture of the same step) is this one's steady state: equal,
    /// or equal without some of this one's launches and uploads (the set-up a first call
    /// does: optimizer moments, a generator's state). Otherwise the first launch of `next`
    /// that has no counterpart, as (index, kernel name, what differs): a host value that
    /// changed between the calls.
    pub fn steady_state(&self, next: &Capture) -> Result<(), (usize, String, &'static str)> {
        let same =
            |a: &CapturedDispatch, b: &CapturedDispatch| a.key == b.key && a.params == b.params && a.groups == b.groups;
        let mut i = 0;
        for (j, d) in next.dispatches.iter().enumerate() {
            let found = self.dispatches[i..].iter().position(|a| same(a, d));
            match found {
                Some(k) => i += k + 1,
                None => {
                    let what = if self.dispatches[i..].iter().any(|a| a.key == d.key) {
                        "a launch parameter"
                    } else {
                        "the kernel"
                    };
                    return Err((j, d.key.name(), what));
                }
            }
        }
        let mut i = 0;
        for w in &next.writes {
            match self.writes[i..].iter().position(|a| a == w) {
                Some(k) => i += k + 1,
                None => return Err((next.dispatches.len(), "an upload".into(), "the uploaded host values")),
            }
        }
        Ok(())
    }
}

/// A replayable capture: pipelines, bind groups and a params buffer of its own.
pub struct Plan {
    ctx: Arc<Context>,
    steps: Vec<(wgpu::ComputePipeline, wgpu::BindGroup, (u32, u32, u32))>,
    /// Every buffer the launches touch (pinned while the plan lives).
    buffers: Vec<wgpu::Buffer>,
    _params: wgpu::Buffer,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Plan({} launches, {} buffers)", self.steps.len(), self.buffers.len())
    }
}

impl Context {
    /// Start recording launches on this device (one capture at a time).
    pub fn begin_capture(&self) -> KResult<()> {
        let mut st = crate::lock(&self.state);
        if st.capture.is_some() {
            return Err(KernelError::Unsupported("jit: a capture is already open on this device".into()));
        }
        st.capture = Some(Capture::default());
        Ok(())
    }

    /// Stop recording; the launches since [`Context::begin_capture`], their buffers
    /// pinned (see [`Capture`]).
    pub fn end_capture(self: &Arc<Self>) -> Capture {
        let mut st = crate::lock(&self.state);
        let mut capture = st.capture.take().unwrap_or_default();
        share_intermediates(&st, &mut capture);
        // the uploads' buffers are pinned already
        let mut seen: HashSet<wgpu::Buffer> = capture.written.iter().cloned().collect();
        let mut buffers = Vec::new();
        for d in &capture.dispatches {
            for b in &d.buffers {
                if seen.insert(b.clone()) {
                    buffers.push(b.clone());
                }
            }
        }
        let revived = st.pin(&buffers);
        drop(st);
        for bytes in revived {
            AtomicCounters::add(&self.counters.live_buffers, 1);
            self.counters.add_live_bytes(bytes);
        }
        buffers.append(&mut capture.written);
        capture.pinned = Some((self.clone(), buffers));
        capture
    }

    /// Release pins (a dropped capture or plan): the bytes of buffers no tensor holds any
    /// more stop counting as live.
    fn unpin(&self, buffers: &[wgpu::Buffer]) {
        let released = crate::lock(&self.state).unpin(buffers);
        for bytes in released {
            AtomicCounters::sub(&self.counters.live_buffers, 1);
            AtomicCounters::sub(&self.counters.live_bytes, bytes);
        }
    }

    /// Whether a capture is open on this device.
    pub fn capturing(&self) -> bool {
        crate::lock(&self.state).capture.is_some()
    }

    /// Note an upload into the open capture, if any: its bytes (compared between captures)
    /// and its buffer, pinned at once.
    pub(crate) fn note_write(st: &mut crate::batch::BatchState, buf: &wgpu::Buffer, bytes: &[u8]) {
        let Some(c) = st.capture.as_mut() else { return };
        c.writes.push(bytes.to_vec());
        if !c.written.contains(buf) {
            c.written.push(buf.clone());
            st.pin(std::slice::from_ref(buf));
        }
    }

    /// Note a buffer handed to a tensor while a capture is open.
    pub(crate) fn note_allocation(st: &mut crate::batch::BatchState, buf: &wgpu::Buffer) {
        if let Some(c) = st.capture.as_mut() {
            c.allocations.push((buf.clone(), c.dispatches.len()));
        }
    }

    /// Record a launch into the open capture, if any: its buffers in binding order
    /// (inputs, outputs, extra uniforms). Nothing is copied when no capture is open.
    pub(crate) fn note_launch(
        st: &mut crate::batch::BatchState,
        key: KernelKey,
        buffers: [&[&GpuBuffer]; 3],
        params: &[u32],
        groups: (u32, u32, u32),
    ) {
        if let Some(c) = st.capture.as_mut() {
            c.dispatches.push(CapturedDispatch {
                key,
                buffers: buffers.iter().flat_map(|group| group.iter()).map(|b| b.raw().clone()).collect(),
                params: params.to_vec(),
                groups,
            });
        }
    }

    /// A plan replaying `capture`: its pipelines (compiled already), one bind group per
    /// launch over the recorded buffers and a params buffer holding every launch's params.
    pub fn build_plan(self: &Arc<Self>, mut capture: Capture) -> KResult<Plan> {
        let align = self.params_align();
        let slot = PARAMS_BYTES.div_ceil(align) * align;
        let n = capture.dispatches.len() as u64;
        let params = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgrad jit params"),
            size: (slot * n.max(1)).max(PARAMS_BYTES),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut words = vec![0u32; (slot * n.max(1) / 4) as usize];
        let mut steps = Vec::with_capacity(capture.dispatches.len());
        for (i, d) in capture.dispatches.iter().enumerate() {
            let at = (i as u64 * slot / 4) as usize;
            words[at..at + d.params.len()].copy_from_slice(&d.params);
            let pipeline = self.pipeline(d.key)?;
            let (n_in, n_out) = d.key.bindings();
            let layout = self.layout(n_in, n_out, d.key.extra_uniforms());
            // storage buffers at 0.., the params block next, extra uniforms after it
            let binding_of = |b: u32| if b < n_in + n_out { b } else { b + 1 };
            let mut entries: Vec<wgpu::BindGroupEntry> = d
                .buffers
                .iter()
                .enumerate()
                .map(|(b, buf)| wgpu::BindGroupEntry {
                    binding: binding_of(crate::launch::small_u32(b)),
                    resource: buf.as_entire_binding(),
                })
                .collect();
            entries.push(wgpu::BindGroupEntry {
                binding: n_in + n_out,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &params,
                    offset: i as u64 * slot,
                    size: NonZeroU64::new(PARAMS_BYTES),
                }),
            });
            let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("wgrad jit"),
                layout: &layout,
                entries: &entries,
            });
            steps.push((pipeline, bind_group, d.groups));
        }
        self.queue.write_buffer(&params, 0, bytemuck::cast_slice(&words));
        // the plan takes over the capture's pins
        let buffers = capture.pinned.take().map(|(_, b)| b).unwrap_or_default();
        Ok(Plan { ctx: self.clone(), steps, buffers, _params: params })
    }
}

/// Memory planning, when a capture ends. The capture's intermediates are the buffers the
/// pool handed to tensors during the capture, back in the pool at its end, that no upload
/// filled. Each hand-out starts a new value of the buffer, which lives from that point to
/// its last use before the next hand-out. Values of one size whose lives do not overlap
/// share one buffer (greedy by first use: an interval colouring, optimal per size), and the
/// buffers left unused stay in the pool. A replay then holds only the step's widest set of
/// simultaneously live values, where eager mode held each tensor until it was dropped.
fn share_intermediates(st: &crate::batch::BatchState, capture: &mut Capture) {
    use std::collections::HashMap;
    let written: HashSet<&wgpu::Buffer> = capture.written.iter().collect();
    // per buffer: the launch counts at which it was handed out
    let mut handed_out: HashMap<wgpu::Buffer, Vec<usize>> = HashMap::new();
    for (buf, at) in &capture.allocations {
        handed_out.entry(buf.clone()).or_default().push(*at);
    }
    handed_out.retain(|buf, _| !written.contains(buf) && st.in_pool(buf));
    // per launch and binding: the value (hand-out index) the binding belongs to; per
    // (buffer, value): its first and last launch
    let mut span: HashMap<(wgpu::Buffer, usize), (usize, usize)> = HashMap::new();
    let mut value_of: Vec<Vec<Option<usize>>> = Vec::with_capacity(capture.dispatches.len());
    let mut predates = HashSet::new();
    for (i, d) in capture.dispatches.iter().enumerate() {
        let mut here = Vec::with_capacity(d.buffers.len());
        for buf in &d.buffers {
            let value = handed_out.get(buf).and_then(|at| at.iter().rposition(|&a| a <= i));
            match (handed_out.contains_key(buf), value) {
                (true, Some(k)) => {
                    span.entry((buf.clone(), k)).and_modify(|s| s.1 = i).or_insert((i, i));
                }
                // used before the capture handed it out: it carries a value from before
                (true, None) => {
                    predates.insert(buf.clone());
                }
                _ => {}
            }
            here.push(value);
        }
        value_of.push(here);
    }
    let mut values: Vec<(wgpu::Buffer, usize, usize, usize)> = span
        .into_iter()
        .filter(|((buf, _), _)| !predates.contains(buf))
        .map(|((buf, k), (first, last))| (buf, k, first, last))
        .collect();
    values.sort_by_key(|v| (v.2, v.3));
    // the distinct buffers the values may go to, by size
    let mut spare: HashMap<u64, Vec<wgpu::Buffer>> = HashMap::new();
    for (buf, ..) in &values {
        let list = spare.entry(buf.size()).or_default();
        if !list.contains(buf) {
            list.push(buf.clone());
        }
    }
    // per size: the buffers in use, each busy until a launch
    let mut kept: HashMap<u64, Vec<(wgpu::Buffer, usize)>> = HashMap::new();
    let mut assigned: HashMap<(wgpu::Buffer, usize), wgpu::Buffer> = HashMap::new();
    for (buf, k, first, last) in values {
        let slots = kept.entry(buf.size()).or_default();
        let target = match slots.iter_mut().find(|(_, busy_until)| *busy_until < first) {
            Some(slot) => {
                slot.1 = last;
                slot.0.clone()
            }
            None => {
                // a buffer of this size that holds no value yet: the value's own when it
                // is still free (the trace had at least as many live at once as overlap here)
                let free = spare.get_mut(&buf.size()).expect("listed above");
                if free.is_empty() {
                    return; // cannot happen; planning nothing is always correct
                }
                let fresh = free.swap_remove(free.iter().position(|b| *b == buf).unwrap_or(0));
                slots.push((fresh.clone(), last));
                fresh
            }
        };
        assigned.insert((buf, k), target);
    }
    for (d, values) in capture.dispatches.iter_mut().zip(&value_of) {
        for (b, k) in d.buffers.iter_mut().zip(values) {
            if let Some(to) = k.and_then(|k| assigned.get(&(b.clone(), k))) {
                *b = to.clone();
            }
        }
    }
}

impl Plan {
    /// Launches in the plan.
    pub fn len(&self) -> usize {
        self.steps.len()
    }
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Replay: copy each `(source, destination)` input pair, run every launch, then copy
    /// each output pair (plan buffer into the caller's), all in one submission. Each pair
    /// is (buffer, byte offset) with a byte count.
    pub fn replay(&self, inputs: &[Copy], outputs: &[Copy]) -> KResult<()> {
        self.ctx.check_health()?;
        let mut st = crate::lock(&self.ctx.state);
        {
            let enc = st.encoder(&self.ctx.device);
            for c in inputs {
                enc.copy_buffer_to_buffer(&c.from.0, c.from.1, &c.to.0, c.to.1, c.bytes);
            }
        }
        {
            let pass = st.pass(&self.ctx.device);
            for (pipeline, bind_group, g) in &self.steps {
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, bind_group, &[]);
                pass.dispatch_workgroups(g.0, g.1, g.2);
            }
        }
        {
            let enc = st.encoder(&self.ctx.device);
            for c in outputs {
                enc.copy_buffer_to_buffer(&c.from.0, c.from.1, &c.to.0, c.to.1, c.bytes);
            }
        }
        AtomicCounters::add(&self.ctx.counters.dispatches, self.steps.len() as u64);
        st.submit(&self.ctx);
        Ok(())
    }
}

impl Context {
    /// A fresh buffer holding a copy of `bytes` bytes of `buf` from byte `offset`
    /// (multiples of 4), copied on the device.
    pub fn copy_to_new(self: &Arc<Self>, buf: &GpuBuffer, offset: u64, bytes: u64) -> KResult<GpuBuffer> {
        let out = self.alloc_for_copy(bytes)?;
        if bytes > 0 {
            let mut st = crate::lock(&self.state);
            st.encoder(&self.device).copy_buffer_to_buffer(buf.raw(), offset, out.raw(), 0, bytes);
        }
        Ok(out)
    }
}

/// A buffer-to-buffer copy of a replay: (buffer, byte offset) to (buffer, byte offset).
pub struct Copy {
    pub from: (wgpu::Buffer, u64),
    pub to: (wgpu::Buffer, u64),
    pub bytes: u64,
}

impl Drop for Plan {
    fn drop(&mut self) {
        self.ctx.unpin(&self.buffers);
    }
}
