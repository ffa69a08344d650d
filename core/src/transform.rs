//! The stack of active transforms on this thread. Every transform (grad / vjp for reverse
//! mode, jvp for forward mode) takes a level from one counter, so a level says how deep
//! it is nested: a higher level is an inner transform. Forward-mode tangents are keyed by
//! level (no perturbation confusion), and the entry point asks this stack which tapes and
//! which tangents an op must feed.
use std::cell::{Cell, RefCell};

/// Reverse mode (a tape walked backwards), forward mode (tangents pushed forward) or
/// vmap over `size` examples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransformKind {
    Reverse,
    Forward,
    Vmap { size: usize },
}

thread_local! {
    static STACK: RefCell<Vec<(u64, TransformKind)>> = const { RefCell::new(Vec::new()) };
    static NEXT_LEVEL: Cell<u64> = const { Cell::new(1) };
    static RECORDING: Cell<bool> = const { Cell::new(true) };
    static SUSPENDED: Cell<bool> = const { Cell::new(false) };
}

/// One active transform; leaving it (drop) retires its level.
pub struct TransformGuard {
    level: u64,
}

impl TransformGuard {
    /// This transform's level.
    pub fn level(&self) -> u64 {
        self.level
    }
    /// Whether another transform encloses this one.
    pub fn is_nested(&self) -> bool {
        STACK.with(|s| s.borrow().iter().any(|&(l, _)| l < self.level))
    }
    /// Whether a reverse-mode transform encloses this one (its work must then be taped).
    pub fn reverse_outside(&self) -> bool {
        reverse_below(self.level)
    }
}

impl Drop for TransformGuard {
    fn drop(&mut self) {
        STACK.with(|s| s.borrow_mut().retain(|&(l, _)| l != self.level));
    }
}

/// Enter a transform of `kind`.
pub fn enter_transform(kind: TransformKind) -> TransformGuard {
    let level = NEXT_LEVEL.with(|n| n.replace(n.get() + 1));
    STACK.with(|s| s.borrow_mut().push((level, kind)));
    TransformGuard { level }
}

/// Whether forward-mode level `level` is still active (tangents of retired levels are ignored).
pub(crate) fn is_forward_alive(level: u64) -> bool {
    STACK.with(|s| s.borrow().iter().any(|&(l, k)| l == level && k == TransformKind::Forward))
}

/// Whether vmap level `level` is still active (a batched tensor of a retired level has
/// escaped its vmap).
pub(crate) fn is_vmap_alive(level: u64) -> bool {
    STACK.with(|s| s.borrow().iter().any(|&(l, k)| l == level && matches!(k, TransformKind::Vmap { .. })))
}

/// The active vmap levels below `level`, lowest first, with their sizes.
pub(crate) fn vmap_levels_below(level: u64) -> Vec<(u64, usize)> {
    STACK.with(|s| {
        s.borrow()
            .iter()
            .filter_map(|&(l, k)| match k {
                TransformKind::Vmap { size } if l < level => Some((l, size)),
                _ => None,
            })
            .collect()
    })
}

/// Whether a reverse-mode transform below (outside) `level` is active.
pub(crate) fn reverse_below(level: u64) -> bool {
    STACK.with(|s| s.borrow().iter().any(|&(l, k)| l < level && k == TransformKind::Reverse))
}

/// The innermost active reverse-mode level, if any.
pub(crate) fn innermost_reverse() -> Option<u64> {
    STACK.with(|s| s.borrow().iter().filter(|(_, k)| *k == TransformKind::Reverse).map(|&(l, _)| l).max())
}

/// Whether ops on tracked tensors record graph nodes on this thread.
pub fn is_recording() -> bool {
    RECORDING.with(|r| r.get()) && !is_suspended()
}

/// Whether every transform is suspended (inside a user primitive's forward).
pub(crate) fn is_suspended() -> bool {
    SUSPENDED.with(|s| s.get())
}

struct Restore<'a>(&'static std::thread::LocalKey<Cell<bool>>, bool, std::marker::PhantomData<&'a ()>);
impl Drop for Restore<'_> {
    fn drop(&mut self) {
        self.0.with(|r| r.set(self.1));
    }
}

fn with_flag<R>(key: &'static std::thread::LocalKey<Cell<bool>>, value: bool, f: impl FnOnce() -> R) -> R {
    let _restore = Restore(key, key.with(|r| r.replace(value)), std::marker::PhantomData);
    f()
}

/// Run `f` without recording a graph (inference, optimizer updates). Forward-mode
/// tangents still flow, as in PyTorch.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&RECORDING, false, f)
}

/// Run `f` with recording forced on (the backward pass of a nested transform).
pub fn with_grad<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&RECORDING, true, f)
}

/// Run `f` with every transform off: nothing is recorded and no tangent is pushed (the
/// forward of a user primitive, whose derivatives come from its own rules).
pub(crate) fn suspended<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&SUSPENDED, true, f)
}
