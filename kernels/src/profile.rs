//! The profile table of kernel (and CPU primitive) times that `Context::set_profiling`
//! and the CPU device's profiling fill.
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// One row of [`Context::kernel_profile`].
#[derive(Clone, Debug)]
pub struct KernelTime {
    pub kernel: String,
    pub dispatches: u64,
    pub seconds: f64,
}

/// A profile: (count, seconds) by name while it is on. Whether it is on is one atomic
/// load, so the check costs nothing on the paths it watches (every dispatch, every CPU
/// primitive).
#[derive(Default)]
pub struct ProfileTable {
    on: AtomicBool,
    rows: Mutex<HashMap<String, (u64, f64)>>,
}

impl ProfileTable {
    pub fn new(on: bool) -> ProfileTable {
        ProfileTable { on: AtomicBool::new(on), rows: Mutex::new(HashMap::new()) }
    }
    /// Start (clearing the table) or stop.
    pub fn set(&self, on: bool) {
        crate::lock(&self.rows).clear();
        self.on.store(on, Ordering::Relaxed);
    }
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }
    /// Add one run of `name` taking `seconds` (ignored while off).
    pub fn record(&self, name: String, seconds: f64) {
        if self.is_on() {
            let mut rows = crate::lock(&self.rows);
            let e = rows.entry(name).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += seconds;
        }
    }
    /// The rows since the table was started, slowest first (empty while off).
    pub fn rows(&self) -> Vec<KernelTime> {
        if !self.is_on() {
            return Vec::new();
        }
        let mut v: Vec<KernelTime> = crate::lock(&self.rows)
            .iter()
            .map(|(k, &(n, t))| KernelTime { kernel: k.clone(), dispatches: n, seconds: t })
            .collect();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        v
    }
}
