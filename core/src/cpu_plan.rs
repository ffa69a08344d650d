//! `jit` on the CPU device: a trace records every primitive the closure runs through
//! `bind` and every in-place host step ([`host_step`]: optimizer updates), with the
//! buffers each read and wrote; a replay runs the recorded kernels again over the new
//! arguments, with no graph node, shape rule, interpreter or fusion work (no primitive is
//! bound: `Counters::primitives` stays 0).
//!
//! Buffers are told apart by their process-unique id. A buffer a step reads is an
//! argument, the output of an earlier step, or held by the plan: a tensor the closure
//! captured (parameters, optimizer state: read live, and written in place by host steps,
//! so every replay sees and makes the updates), or a constant the closure made on the host
//! during the trace (`Tensor::scalar(0.5)`, a fill). Two traces must agree: the same steps
//! with the same host values, the same captured buffers, and constants with the same
//! contents. Otherwise a host value reaches a kernel and a replay would freeze it: an
//! error naming `jit` and the op. The first call may set up state (an optimizer's
//! moments): a constant of the first trace that the second captured is that set-up.
use crate::primitive::{OutSpec, Primitive};
use crate::storage::{CpuBuffer, CpuStorage, Storage};
use crate::{DType, Device, Error, Layout, Result, Tensor};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

/// An in-place step on the host over tensors (their buffers written where they are).
pub type HostRun = Arc<dyn Fn(&mut [Tensor]) -> Result<()> + Send + Sync>;

thread_local! {
    /// The capture this thread's closure is being traced into.
    static CAPTURE: RefCell<Option<Capture>> = const { RefCell::new(None) };
    /// Whether a capture is open (a cheap test for every bind).
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    /// Inside a recorded step: what it runs internally is part of the step, not a step.
    static IN_STEP: Cell<bool> = const { Cell::new(false) };
}

/// Where a value a step reads comes from.
#[derive(Clone)]
enum Value {
    /// Argument i of the call.
    Arg(usize),
    /// The output of step k.
    Step(usize),
    /// A buffer the plan holds: captured before the trace began, or made during it on
    /// the host (a constant, with its contents at first use).
    Held { buf: Arc<CpuBuffer>, made: Option<Arc<CpuStorage>> },
}

/// A tensor a step reads or writes: its value and how it views it.
#[derive(Clone)]
struct Slot {
    value: usize,
    layout: Layout,
    dtype: DType,
    index_bound: Option<u32>,
}

enum Kind {
    Prim { prim: Arc<dyn Primitive>, spec: OutSpec },
    Host(HostRun),
}

struct Step {
    kind: Kind,
    /// What two traces must agree on besides the slots: the op and its host values.
    what: String,
    name: String,
    inputs: Vec<Slot>,
    output: Option<Slot>,
}

/// A closure's recorded run on the CPU.
pub(crate) struct Capture {
    first_new_id: u64,
    values: Vec<Value>,
    by_id: HashMap<u64, usize>,
    steps: Vec<Step>,
    outputs: Vec<Slot>,
}

fn buffer_of(t: &Tensor) -> Result<&Arc<CpuBuffer>> {
    match t.storage() {
        Storage::Cpu(b) => Ok(b),
        _ => Err(Error::Jit { op: "call".into(), msg: format!("a tensor on {} inside a CPU trace", t.device()) }),
    }
}

impl Capture {
    /// The slot of `t`, adding its buffer as a held value when no step made it.
    fn slot(&mut self, t: &Tensor) -> Result<Slot> {
        let buf = buffer_of(t)?;
        let value = match self.by_id.get(&buf.id()) {
            Some(&v) => v,
            None => {
                let made = (buf.id() >= self.first_new_id).then(|| Arc::new(buf.read().clone()));
                self.values.push(Value::Held { buf: buf.clone(), made });
                self.by_id.insert(buf.id(), self.values.len() - 1);
                self.values.len() - 1
            }
        };
        Ok(Slot { value, layout: t.layout().clone(), dtype: t.dtype(), index_bound: t.index_bound() })
    }

    /// The slot of step `k`'s output (a view of a known buffer keeps that buffer's value).
    fn output_slot(&mut self, t: &Tensor, k: usize) -> Result<Slot> {
        let buf = buffer_of(t)?;
        let value = match self.by_id.get(&buf.id()) {
            Some(&v) => v,
            None => {
                self.values.push(Value::Step(k));
                self.by_id.insert(buf.id(), self.values.len() - 1);
                self.values.len() - 1
            }
        };
        Ok(Slot { value, layout: t.layout().clone(), dtype: t.dtype(), index_bound: t.index_bound() })
    }
}

/// Start recording this thread's CPU work; `args` (dense, in buffers of their own) are the
/// call's arguments.
pub(crate) fn begin(args: &[Tensor]) -> Result<()> {
    let mut capture = Capture {
        first_new_id: crate::storage::next_cpu_buffer_id(),
        values: Vec::new(),
        by_id: HashMap::new(),
        steps: Vec::new(),
        outputs: Vec::new(),
    };
    for (i, a) in args.iter().enumerate() {
        let id = buffer_of(a)?.id();
        capture.values.push(Value::Arg(i));
        capture.by_id.insert(id, i);
    }
    CAPTURE.with(|c| *c.borrow_mut() = Some(capture));
    CAPTURING.with(|c| c.set(true));
    Ok(())
}

/// Stop recording; with the closure's results, the capture.
pub(crate) fn end(outputs: Option<&[Tensor]>) -> Result<Option<Capture>> {
    CAPTURING.with(|c| c.set(false));
    let Some(mut capture) = CAPTURE.with(|c| c.borrow_mut().take()) else { return Ok(None) };
    let Some(outputs) = outputs else { return Ok(None) };
    for t in outputs {
        let slot = capture.slot(t)?;
        capture.outputs.push(slot);
    }
    Ok(Some(capture))
}

/// Run `f` as part of the step being recorded (its own binds are not steps).
fn inside_step<R>(f: impl FnOnce() -> R) -> R {
    let outer = IN_STEP.with(|s| s.replace(true));
    let r = f();
    IN_STEP.with(|s| s.set(outer));
    r
}

/// Whether work on this thread now is a step of an open capture.
fn recording() -> bool {
    CAPTURING.with(|c| c.get()) && !IN_STEP.with(|s| s.get())
}

/// Run a primitive's CPU forward, recorded as a step when a capture is open.
pub(crate) fn forward(prim: &Arc<dyn Primitive>, inputs: &[&Tensor], spec: &OutSpec) -> Result<Tensor> {
    if !recording() {
        return prim.forward(inputs, spec);
    }
    let out = inside_step(|| prim.forward(inputs, spec))?;
    let what = format!("{}{:?}", prim.name(), prim.host_values());
    CAPTURE.with(|c| -> Result<()> {
        let mut c = c.borrow_mut();
        let Some(c) = c.as_mut() else { return Ok(()) };
        let inputs = inputs.iter().map(|t| c.slot(t)).collect::<Result<Vec<_>>>()?;
        let k = c.steps.len();
        let output = Some(c.output_slot(&out, k)?);
        let kind = Kind::Prim { prim: prim.clone(), spec: spec.clone() };
        c.steps.push(Step { kind, what, name: prim.name(), inputs, output });
        Ok(())
    })?;
    Ok(out)
}

/// Run an in-place host step on `tensors` (each written where it is; none replaced):
/// now, and again on every replay of a jitted CPU function that ran it. `key` names the
/// host values `run` carries (hyperparameters): two traces must agree on it.
pub fn host_step(
    name: &str,
    key: String,
    tensors: &mut [Tensor],
    run: impl Fn(&mut [Tensor]) -> Result<()> + Send + Sync + 'static,
) -> Result<()> {
    if !recording() || tensors.iter().any(|t| t.device().is_gpu()) {
        return inside_step(|| run(tensors));
    }
    let run: HostRun = Arc::new(run);
    CAPTURE.with(|c| -> Result<()> {
        let mut c = c.borrow_mut();
        let Some(c) = c.as_mut() else { return Ok(()) };
        let inputs = tensors.iter().map(|t| c.slot(t)).collect::<Result<Vec<_>>>()?;
        let what = format!("{name}({key})");
        c.steps.push(Step { kind: Kind::Host(run.clone()), what, name: name.to_string(), inputs, output: None });
        Ok(())
    })?;
    inside_step(|| run(tensors))
}

/// Where two traces first differ: (step, op, what differs).
type Disagreement = (usize, String, String);

impl Capture {
    /// Whether `next` is this capture's steady state: the same steps over the same kinds of
    /// values, constants with the same contents, the same captured buffers (a constant
    /// here that `next` captured is this trace's set-up).
    pub(crate) fn steady_state(&self, next: &Capture) -> std::result::Result<(), Disagreement> {
        if self.steps.len() != next.steps.len() {
            let at = self.steps.iter().zip(&next.steps).position(|(a, b)| a.what != b.what);
            let at = at.unwrap_or(self.steps.len().min(next.steps.len()));
            let name = next.steps.get(at).or(self.steps.get(at)).map_or("call".into(), |s| s.name.clone());
            return Err((at, name, "the number of ops".into()));
        }
        for (k, (a, b)) in self.steps.iter().zip(&next.steps).enumerate() {
            let differ = |what: &str| Err((k, b.name.clone(), what.to_string()));
            if a.what != b.what {
                return differ("the op or a host value it carries");
            }
            if let (Kind::Prim { spec: sa, .. }, Kind::Prim { spec: sb, .. }) = (&a.kind, &b.kind) {
                if sa != sb {
                    return differ("the output shape");
                }
            }
            if a.output.as_ref().map(|s| &s.layout) != b.output.as_ref().map(|s| &s.layout) {
                return differ("the output's layout (a view at a host-given place)");
            }
            if a.inputs.len() != b.inputs.len() {
                return differ("the number of inputs");
            }
            for (x, y) in a.inputs.iter().zip(&b.inputs) {
                if let Err(what) = self.same_slot(x, next, y) {
                    return differ(&what);
                }
            }
        }
        if self.outputs.len() != next.outputs.len() {
            return Err((self.steps.len(), "call".into(), "the number of results".into()));
        }
        for (x, y) in self.outputs.iter().zip(&next.outputs) {
            if let Err(what) = self.same_slot(x, next, y) {
                return Err((self.steps.len(), "call".into(), format!("a result's {what}")));
            }
        }
        Ok(())
    }

    fn same_slot(&self, x: &Slot, next: &Capture, y: &Slot) -> std::result::Result<(), String> {
        if x.layout != y.layout || x.dtype != y.dtype {
            return Err("an input's layout or dtype".into());
        }
        match (&self.values[x.value], &next.values[y.value]) {
            (Value::Arg(i), Value::Arg(j)) if i == j => Ok(()),
            (Value::Step(i), Value::Step(j)) if i == j => Ok(()),
            (Value::Held { made: Some(a), .. }, Value::Held { made: Some(b), .. }) => match a.same_bits(b) {
                true => Ok(()),
                false => Err("a value made on the host inside the function".into()),
            },
            // set-up: made by the first call, captured by the next
            (Value::Held { buf: a, made: Some(_) }, Value::Held { buf: b, made: None }) if a.id() == b.id() => Ok(()),
            (Value::Held { buf: a, made: None }, Value::Held { buf: b, made: None }) => match a.id() == b.id() {
                true => Ok(()),
                false => Err("a captured tensor (replaced between calls instead of updated in place)".into()),
            },
            _ => Err("where an input comes from".into()),
        }
    }
}

/// A replayable CPU step: the steps, the held buffers, when each value is last read.
pub(crate) struct CpuPlan {
    values: Vec<Value>,
    steps: Vec<Step>,
    outputs: Vec<Slot>,
    /// Per step: the values it reads last (dropped after it ran).
    frees: Vec<Vec<usize>>,
    /// The arguments a host step may write: copied first, so the caller's stay as they are.
    written_args: Vec<usize>,
}

impl CpuPlan {
    pub(crate) fn new(capture: Capture) -> CpuPlan {
        let mut last = vec![None; capture.values.len()];
        for (k, s) in capture.steps.iter().enumerate() {
            for slot in s.inputs.iter().chain(&s.output) {
                last[slot.value] = Some(k);
            }
        }
        let mut frees = vec![Vec::new(); capture.steps.len()];
        let kept: Vec<usize> = capture.outputs.iter().map(|s| s.value).collect();
        for (v, at) in last.iter().enumerate() {
            if let (Some(k), false) = (at, kept.contains(&v)) {
                if !matches!(capture.values[v], Value::Held { .. }) {
                    frees[*k].push(v);
                }
            }
        }
        let mut written_args = Vec::new();
        for s in capture.steps.iter().filter(|s| matches!(s.kind, Kind::Host(_))) {
            for slot in &s.inputs {
                if let Value::Arg(i) = capture.values[slot.value] {
                    written_args.push(i);
                }
            }
        }
        CpuPlan { values: capture.values, steps: capture.steps, outputs: capture.outputs, frees, written_args }
    }

    pub(crate) fn len(&self) -> usize {
        self.steps.len()
    }

    /// Run the steps over `args` (dense, in the traced signature); the results.
    pub(crate) fn replay(&self, args: &[Tensor]) -> Result<Vec<Tensor>> {
        let mut bufs: Vec<Option<Arc<CpuBuffer>>> = self
            .values
            .iter()
            .map(|v| match v {
                Value::Held { buf, .. } => Ok(Some(buf.clone())),
                Value::Arg(i) if self.written_args.contains(i) => {
                    buffer_of(&own_copy(&args[*i])).map(|b| Some(b.clone()))
                }
                Value::Arg(i) => buffer_of(&args[*i]).map(|b| Some(b.clone())),
                Value::Step(_) => Ok(None),
            })
            .collect::<Result<_>>()?;
        let tensor = |bufs: &[Option<Arc<CpuBuffer>>], s: &Slot| -> Result<Tensor> {
            let buf = bufs[s.value].clone().ok_or_else(|| Error::Internal {
                op: "jit",
                msg: "a CPU replay read a value before a step made it".into(),
            })?;
            let t = Tensor::new_contiguous(Storage::Cpu(buf), &s.layout.shape, s.dtype, Device::Cpu);
            Ok(t.with_layout(s.layout.clone()).with_index_bound(s.index_bound))
        };
        // a draw keyed by the host generator takes the generator's next key, once per
        // traced key (a checkpoint's recomputation reuses it, as the eager call does)
        let mut keys: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
        for (k, step) in self.steps.iter().enumerate() {
            let mut inputs = step.inputs.iter().map(|s| tensor(&bufs, s)).collect::<Result<Vec<_>>>()?;
            match &step.kind {
                Kind::Prim { prim, spec } => {
                    let rekeyed = prim.rekeyed(&mut |key, blocks| {
                        *keys.entry(key).or_insert_with(|| crate::random::next_key(blocks))
                    });
                    let prim = rekeyed.as_ref().unwrap_or(prim);
                    let refs: Vec<&Tensor> = inputs.iter().collect();
                    let out = inside_step(|| prim.forward(&refs, spec))?;
                    if let Some(slot) = &step.output {
                        bufs[slot.value] = Some(buffer_of(&out)?.clone());
                    }
                }
                Kind::Host(run) => inside_step(|| run(&mut inputs))?,
            }
            drop(inputs);
            for &v in &self.frees[k] {
                bufs[v] = None;
            }
        }
        self.outputs
            .iter()
            .map(|s| {
                let t = tensor(&bufs, s)?;
                match self.values[s.value] {
                    // a result the plan keeps (an argument, a captured tensor): a copy of
                    // its own for the caller
                    Value::Step(_) => Ok(t),
                    _ => Ok(own_copy(&t)),
                }
            })
            .collect()
    }
}

/// A contiguous copy of a CPU tensor in a buffer of its own.
pub(crate) fn own_copy(t: &Tensor) -> Tensor {
    let s = crate::cpu::map(&t.cpu_storage(), t.layout(), t.dtype(), |v| v);
    Tensor::new_contiguous(Storage::cpu_owned(s), t.shape(), t.dtype(), Device::Cpu).with_index_bound(t.index_bound())
}
