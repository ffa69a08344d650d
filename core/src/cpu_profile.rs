//! Per-primitive wall times on the CPU device, the CPU's counterpart of the GPU
//! context's kernel profile ([`crate::Device::set_profiling`]). Only outermost primitives
//! are timed: a primitive whose CPU forward calls other ops (a composite reference) is
//! one row holding all of its time.
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use wgrad_kernels::KernelTime;

static TABLE: Mutex<Option<HashMap<String, (u64, f64)>>> = Mutex::new(None);

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

fn table() -> std::sync::MutexGuard<'static, Option<HashMap<String, (u64, f64)>>> {
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start (clearing the table) or stop profiling CPU primitives.
pub(crate) fn set(on: bool) {
    *table() = if on { Some(HashMap::new()) } else { None };
}

/// The table since profiling started, slowest first.
pub(crate) fn rows() -> Vec<KernelTime> {
    let mut v: Vec<KernelTime> = table()
        .iter()
        .flatten()
        .map(|(k, &(n, t))| KernelTime { kernel: k.clone(), dispatches: n, seconds: t })
        .collect();
    v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    v
}

/// Run `f` (the forward of the primitive `name`), adding its time to the table when
/// profiling is on and no enclosing primitive is being timed.
pub(crate) fn timed<R>(name: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
    if DEPTH.with(|d| d.get()) > 0 || table().is_none() {
        return f();
    }
    DEPTH.with(|d| d.set(1));
    let t0 = Instant::now();
    let out = f();
    let secs = t0.elapsed().as_secs_f64();
    DEPTH.with(|d| d.set(0));
    if let Some(map) = table().as_mut() {
        let e = map.entry(name()).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += secs;
    }
    out
}
