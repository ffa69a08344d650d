//! Per-primitive wall times on the CPU device, the CPU's counterpart of the GPU
//! context's kernel profile ([`crate::Device::set_profiling`]), in the same
//! [`ProfileTable`]. Only outermost primitives are timed: a primitive whose CPU forward
//! calls other ops (a composite reference) is one row holding all of its time.
use std::cell::Cell;
use std::sync::LazyLock;
use web_time::Instant;
use wgrad_kernels::{KernelTime, ProfileTable};

static TABLE: LazyLock<ProfileTable> = LazyLock::new(ProfileTable::default);

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Start (clearing the table) or stop profiling CPU primitives.
pub(crate) fn set(on: bool) {
    TABLE.set(on);
}

/// The table since profiling started, slowest first.
pub(crate) fn rows() -> Vec<KernelTime> {
    TABLE.rows()
}

/// Run `f` (the forward of the primitive `name`), adding its time to the table when
/// profiling is on and no enclosing primitive is being timed.
pub(crate) fn timed<R>(name: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
    if !TABLE.is_on() || DEPTH.with(|d| d.get()) > 0 {
        return f();
    }
    DEPTH.with(|d| d.set(1));
    let t0 = Instant::now();
    let out = f();
    let secs = t0.elapsed().as_secs_f64();
    DEPTH.with(|d| d.set(0));
    TABLE.record(name(), secs);
    out
}
