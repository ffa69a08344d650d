//! `jit`: trace a step once and replay it with no per-op host work (tinygrad's TinyJit,
//! CUDA graphs), recorded at the dispatch layer (`wgrad_kernels::Capture`).
//!
//! For each signature of the arguments (shapes, dtypes, device) the first calls run the
//! closure eagerly while the device records every kernel launch and upload. The second
//! recording must be the first's steady state: the same launches (kernel, launch params,
//! grid) and uploads, except for set-up that only the first call does (an optimizer's
//! moments, a generator's state); then the third call replays. When set-up also changed
//! other launches (what fuses with a fresh fill), a third call traces and must agree with
//! the second. A host value that reaches a kernel and changes between calls (a learning
//! rate computed on the host, a step count) is an error naming `jit` and the kernel, never
//! a frozen value. A replay is one submission of
//! cached pipelines and bind groups over the same buffers, with the new arguments copied
//! into the recorded argument buffers first and the results copied out into fresh
//! buffers, so returned tensors stay valid through later calls. No primitive, shape rule,
//! graph node, fusion plan, params word or bind group is made by a replay.
//!
//! In-place updates of tensors the closure captured (optimizer steps on parameters)
//! happen on every replay, since they are launches on those tensors' buffers. The closure
//! must otherwise be pure: state it replaces by assignment (`w = w - g`) is not updated
//! by replays. Reading a value back inside it is an error naming `jit`; so is a tracked
//! argument (a jitted function is not differentiated from outside; transforms inside it
//! are traced like any op).
//!
//! On the CPU device the same holds with a plan of CPU kernels instead of launches
//! (`cpu_plan`): a replay runs the recorded primitives' CPU kernels and in-place host
//! steps over the new arguments, with no graph, shape rule or interpreter work.
use crate::cpu_plan;
use crate::storage::Storage;
use crate::{DType, Device, Error, Layout, Result, Tensor};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use wgrad_kernels::{Capture, Context, GpuBuffer, Plan, PlanCopy};

thread_local! {
    /// Whether this thread is running a jitted closure under trace.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// An error when a readback (`op`) happens inside a traced closure.
pub(crate) fn check_not_tracing(op: &'static str) -> Result<()> {
    if TRACING.with(|t| t.get()) {
        return Err(Error::Jit {
            op: op.into(),
            msg: "reading a value back inside a jitted function would freeze it into the replay; \
                  return the tensor from the function and read it after the call"
                .into(),
        });
    }
    Ok(())
}

/// What a [`Jit`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Calls that ran the closure (traced).
    pub traces: u64,
    /// Calls served by replaying a plan.
    pub replays: u64,
    /// Plans held (one per signature traced twice).
    pub plans: usize,
    /// Launches in the most recently built plan.
    pub launches: usize,
}

/// A closure traced once per signature and replayed (see the module docs).
pub struct Jit<F> {
    f: F,
    entries: HashMap<Signature, Entry>,
    cpu_entries: HashMap<Signature, CpuEntry>,
    stats: JitStats,
    enabled: bool,
    /// The device of the plans.
    context: Option<Arc<Context>>,
    /// Whether replays were submitted since the last trace (waited for on drop).
    replayed: bool,
}

/// The shapes and dtypes of the arguments (their device is the jit's context).
type Signature = Vec<(Vec<usize>, DType)>;

enum Entry {
    /// Traced: the latest recording, to compare the next trace against, and whether the
    /// previous pair already failed to agree (the first call may set up state in ways
    /// that change later launches too, such as what fuses with a fresh fill: one more
    /// trace is taken then, and a second disagreement in a row is an error).
    Traced {
        capture: Capture,
        retried: bool,
    },
    Ready(Box<Ready>),
}

/// A signature's state on the CPU device (as [`Entry`] on a GPU).
enum CpuEntry {
    Traced { capture: cpu_plan::Capture, retried: bool },
    Ready { plan: cpu_plan::CpuPlan, args: Vec<Tensor> },
}

/// A replayable step: the plan, the argument buffers it reads, the results it writes.
struct Ready {
    ctx: Arc<Context>,
    plan: Plan,
    /// The tensors whose buffers the plan reads as its arguments.
    args: Vec<Tensor>,
    /// The results the plan writes (their layouts and buffers).
    outputs: Vec<Tensor>,
}

/// Trace `f` on its first two calls per signature and replay it after (see [`Jit`]).
pub fn jit<F>(f: F) -> Jit<F>
where
    F: FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
{
    Jit {
        f,
        entries: HashMap::new(),
        cpu_entries: HashMap::new(),
        stats: JitStats::default(),
        enabled: true,
        context: None,
        replayed: false,
    }
}

impl<F> Jit<F>
where
    F: FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
{
    /// Whether calls trace and replay (the default) or run the closure eagerly, op by op
    /// (to compare, as the examples' `--eager` does).
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// What the closure returns for `args`, traced or replayed.
    pub fn call(&mut self, args: &[Tensor]) -> Result<Vec<Tensor>> {
        if !self.enabled {
            self.stats.traces += 1;
            return (self.f)(args);
        }
        for (i, a) in args.iter().enumerate() {
            if a.is_tracked() || !a.duals().is_empty() || a.batch().is_some() {
                return Err(Error::Jit {
                    op: "call".into(),
                    msg: format!(
                        "argument {i} is tracked by a transform: a jitted function is not differentiated \
                         from outside (put the transform inside the function)"
                    ),
                });
            }
        }
        let sig: Signature = args.iter().map(|a| (a.shape().to_vec(), a.dtype())).collect();
        let ctx = match args.first().map(|a| a.device()) {
            Some(Device::Gpu(ctx))
                if args.iter().all(|a| a.device().context().is_some_and(|c| Arc::ptr_eq(c, ctx))) =>
            {
                ctx.clone()
            }
            Some(Device::Cpu) if args.iter().all(|a| !a.device().is_gpu()) => return self.call_cpu(args, sig),
            _ => {
                // mixed devices or no arguments: the closure, eagerly
                self.stats.traces += 1;
                return (self.f)(args);
            }
        };
        if self.context.as_ref().is_some_and(|c| !Arc::ptr_eq(c, &ctx)) {
            // plans belong to one device: another device starts over
            self.entries.clear();
        }
        self.context = Some(ctx.clone());
        if let Some(Entry::Ready(ready)) = self.entries.get(&sig) {
            if within_traced_bounds(&ready.args, args) {
                let out = replay(ready, args)?;
                self.stats.replays += 1;
                self.replayed = true;
                return Ok(out);
            }
            // indices past those the trace's host checks saw: trace again, checking them
            self.entries.remove(&sig);
        }
        let (user_out, mut traced) = trace(&mut self.f, &ctx, args)?;
        self.stats.traces += 1;
        match self.entries.remove(&sig) {
            None => {
                traced.capture.release_buffers();
                self.entries.insert(sig, Entry::Traced { capture: traced.capture, retried: false });
            }
            Some(Entry::Traced { capture: previous, retried }) => {
                // this trace must be the previous one's steady state (the first call may also
                // set up state, such as an optimizer's moments)
                if let Err((i, kernel, what)) = previous.steady_state(&traced.capture) {
                    if !retried {
                        traced.capture.release_buffers();
                        self.entries.insert(sig, Entry::Traced { capture: traced.capture, retried: true });
                        return Ok(user_out);
                    }
                    return Err(Error::Jit {
                        op: kernel,
                        msg: format!(
                            "{what} of launch {i} changed between two traces in a row: a host value \
                             reaches the kernel and would be frozen by a replay (keep it in a tensor, or \
                             call reset() to trace again)"
                        ),
                    });
                }
                let plan = ctx.build_plan(traced.capture)?;
                self.stats.launches = plan.len();
                let ready = Ready { ctx: ctx.clone(), plan, args: traced.args, outputs: traced.outputs };
                self.entries.insert(sig, Entry::Ready(Box::new(ready)));
            }
            Some(Entry::Ready(_)) => unreachable!("served by the replay above"),
        }
        self.count_plans();
        Ok(user_out)
    }

    fn count_plans(&mut self) {
        let gpu = self.entries.values().filter(|e| matches!(e, Entry::Ready(_))).count();
        let cpu = self.cpu_entries.values().filter(|e| matches!(e, CpuEntry::Ready { .. })).count();
        self.stats.plans = gpu + cpu;
    }

    /// [`Jit::call`] on the CPU device: trace twice, then replay the CPU plan.
    fn call_cpu(&mut self, args: &[Tensor], sig: Signature) -> Result<Vec<Tensor>> {
        if let Some(CpuEntry::Ready { plan, args: traced }) = self.cpu_entries.get(&sig) {
            if within_traced_bounds(traced, args) {
                let dense: Vec<Tensor> = args.iter().map(dense_cpu).collect();
                let out = plan.replay(&dense)?;
                self.stats.replays += 1;
                return Ok(out);
            }
            // indices past those the trace's host checks saw: trace again, checking them
            self.cpu_entries.remove(&sig);
        }
        let own_args: Vec<Tensor> = args.iter().map(cpu_plan::own_copy).collect();
        cpu_plan::begin(&own_args)?;
        TRACING.with(|t| t.set(true));
        // tracing stops when this guard drops, after the results are recorded below or on a
        // panic inside the closure (the capture is then discarded: nothing keeps recording)
        struct EndTrace;
        impl Drop for EndTrace {
            fn drop(&mut self) {
                TRACING.with(|t| t.set(false));
                let _ = cpu_plan::end(None);
            }
        }
        let end_trace = EndTrace;
        let run = (self.f)(&own_args);
        let capture = cpu_plan::end(run.as_ref().ok().map(|v| v.as_slice()));
        drop(end_trace);
        let user_out = run?;
        let capture = capture?.ok_or_else(|| Error::Internal { op: "jit", msg: "a CPU trace ended twice".into() })?;
        self.stats.traces += 1;
        match self.cpu_entries.remove(&sig) {
            Some(CpuEntry::Traced { capture: previous, retried }) => {
                if let Err((i, op, what)) = previous.steady_state(&capture) {
                    if !retried {
                        self.cpu_entries.insert(sig, CpuEntry::Traced { capture, retried: true });
                        return Ok(user_out);
                    }
                    return Err(Error::Jit {
                        op,
                        msg: format!(
                            "{what} of step {i} changed between two traces in a row: a host value reaches \
                             the kernel and would be frozen by a replay (keep it in a tensor, or call \
                             reset() to trace again)"
                        ),
                    });
                }
                let plan = cpu_plan::CpuPlan::new(capture);
                self.stats.launches = plan.len();
                self.cpu_entries.insert(sig, CpuEntry::Ready { plan, args: own_args });
            }
            _ => {
                self.cpu_entries.insert(sig, CpuEntry::Traced { capture, retried: false });
            }
        }
        self.count_plans();
        Ok(user_out)
    }

    pub fn stats(&self) -> JitStats {
        self.stats
    }

    /// Drop the plans and recordings: the next call traces again.
    pub fn reset(&mut self) {
        self.entries.clear();
        self.cpu_entries.clear();
        self.stats.plans = 0;
    }
}

/// Replays are submitted without waiting: a program that drops its jit and exits right
/// away would leave them running while the process tears down (software drivers such as
/// lavapipe crash then). Dropping the jit waits for them, a few seconds at most.
impl<F> Drop for Jit<F> {
    fn drop(&mut self) {
        if let (true, Some(ctx)) = (self.replayed, &self.context) {
            ctx.finish_in_flight(std::time::Duration::from_secs(5));
        }
    }
}

/// A trace's recording with the tensors its launches read as arguments and wrote as
/// results.
struct Traced {
    capture: Capture,
    args: Vec<Tensor>,
    outputs: Vec<Tensor>,
}

/// Run `f` once while the device records it. The closure gets copies of the arguments
/// in buffers of their own (what a replay copies new arguments into), and the caller
/// gets copies of the results (what a replay writes stays the plan's).
fn trace<F>(f: &mut F, ctx: &Arc<Context>, args: &[Tensor]) -> Result<(Vec<Tensor>, Traced)>
where
    F: FnMut(&[Tensor]) -> Result<Vec<Tensor>>,
{
    let own_args = args.iter().map(|a| dense_copy(ctx, a)).collect::<Result<Vec<_>>>()?;
    ctx.begin_capture()?;
    TRACING.with(|t| t.set(true));
    let run = (|| -> Result<Vec<Tensor>> {
        let out = f(&own_args)?;
        out.iter().map(|t| t.materialized()).collect()
    })();
    TRACING.with(|t| t.set(false));
    let capture = ctx.end_capture();
    let outputs = run?;
    let mut user = Vec::with_capacity(outputs.len());
    for (i, t) in outputs.iter().enumerate() {
        if !t.device().context().is_some_and(|c| Arc::ptr_eq(c, ctx)) {
            return Err(Error::Jit {
                op: "call".into(),
                msg: format!("result {i} is on {}, not on the arguments' device", t.device()),
            });
        }
        user.push(copy_out(ctx, t)?);
    }
    Ok((user, Traced { capture, args: own_args, outputs }))
}

/// The GPU buffer of a materialized GPU tensor.
fn buffer_of(t: &Tensor) -> Result<&GpuBuffer> {
    match t.storage() {
        Storage::Gpu(b) => Ok(b),
        _ => Err(Error::Internal { op: "jit", msg: "a materialized GPU tensor without a buffer".into() }),
    }
}

/// Where `t`'s elements start and how many bytes they span, in its buffer, for a dense
/// (contiguous) tensor; None when a copy cannot express it (f16 at an odd element).
fn dense_span(t: &Tensor) -> Option<(u64, u64)> {
    let size = t.dtype().size_in_bytes() as u64;
    let (start, bytes) = (t.layout().offset as u64 * size, t.numel() as u64 * size);
    (start % 4 == 0 && t.layout().is_contiguous()).then_some((start, bytes.div_ceil(4) * 4))
}

/// Argument `t` materialized and dense (made contiguous where it is not), with the byte
/// where its elements start in its buffer and the bytes they span.
fn dense_argument(t: &Tensor) -> Result<(Tensor, u64, u64)> {
    let mut t = t.materialized()?;
    if dense_span(&t).is_none() {
        t = crate::no_grad(|| t.contiguous())?.materialized()?;
    }
    let (start, bytes) = dense_span(&t).ok_or_else(|| Error::Jit {
        op: "call".into(),
        msg: format!("argument of shape {:?} and dtype {:?} starts inside a word", t.shape(), t.dtype()),
    })?;
    Ok((t, start, bytes))
}

/// A contiguous copy of `t` in a buffer of its own.
fn dense_copy(ctx: &Arc<Context>, t: &Tensor) -> Result<Tensor> {
    let (t, start, bytes) = dense_argument(t)?;
    let buf = ctx.copy_to_new(buffer_of(&t)?, start, bytes)?;
    let copy = Tensor::new_contiguous(Storage::Gpu(Arc::new(buf)), t.shape(), t.dtype(), t.device().clone());
    // indices keep their known bound (what index ops check on the host)
    Ok(copy.with_index_bound(t.index_bound()))
}

/// A copy of a result (its whole buffer, the same layout) for the caller.
fn copy_out(ctx: &Arc<Context>, t: &Tensor) -> Result<Tensor> {
    let src = buffer_of(t)?;
    let buf = ctx.copy_to_new(src, 0, src.capacity())?;
    Ok(with_buffer(t, buf))
}

fn with_buffer(like: &Tensor, buf: GpuBuffer) -> Tensor {
    let layout: Layout = like.layout().clone();
    Tensor::new_contiguous(Storage::Gpu(Arc::new(buf)), like.shape(), like.dtype(), like.device().clone())
        .with_layout(layout)
}

/// Whether the arguments' indices stay below those the trace saw: index ops check their
/// range on the host, which a replay does not do again (an unknown bound is a retrace).
fn within_traced_bounds(traced: &[Tensor], args: &[Tensor]) -> bool {
    args.iter().zip(traced).all(|(a, own)| match own.index_bound() {
        None => true,
        Some(traced) => a.index_bound().is_some_and(|b| b <= traced),
    })
}

/// A CPU argument as the plan reads it: contiguous from element 0 of its buffer (else a
/// copy).
fn dense_cpu(t: &Tensor) -> Tensor {
    match t.layout().is_contiguous() && t.layout().offset == 0 {
        true => t.clone(),
        false => cpu_plan::own_copy(t),
    }
}

/// One replay: the new arguments into the plan's argument buffers, the launches, the
/// results out into fresh buffers.
fn replay(ready: &Ready, args: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut inputs = Vec::with_capacity(args.len());
    let mut keep = Vec::new();
    for (a, own) in args.iter().zip(&ready.args) {
        let (a, start, bytes) = dense_argument(a)?;
        inputs.push(PlanCopy {
            from: (buffer_of(&a)?.raw().clone(), start),
            to: (buffer_of(own)?.raw().clone(), 0),
            bytes,
        });
        keep.push(a);
    }
    let mut outputs = Vec::with_capacity(ready.outputs.len());
    let mut results = Vec::with_capacity(ready.outputs.len());
    for t in &ready.outputs {
        let src = buffer_of(t)?;
        let buf = ready.ctx.alloc_for_copy(src.capacity())?;
        outputs.push(PlanCopy { from: (src.raw().clone(), 0), to: (buf.raw().clone(), 0), bytes: src.capacity() });
        results.push(with_buffer(t, buf));
    }
    ready.plan.replay(&inputs, &outputs)?;
    drop(keep);
    Ok(results)
}
