//! Output buffers of the CPU backend: fresh ones on transparent huge pages, and large f32
//! buffers that freed storage left, handed out again so that a new result costs no page
//! faults.

/// n zeros in a fresh allocation; on Linux, allocations of 4 MB and more ask for
/// transparent huge pages before their first touch (as numpy does): writing a fresh 64 MB
/// result otherwise costs 16,384 page faults, more than the arithmetic.
pub fn zeroed_f32(n: usize) -> Vec<f32> {
    let v = vec![0f32; n];
    #[cfg(target_os = "linux")]
    if n * 4 >= 4 << 20 {
        const HUGE: usize = 2 << 20;
        let start = (v.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (v.as_ptr() as usize + n * 4) & !(HUGE - 1);
        if end > start {
            // SAFETY: [start, end) lies inside v's allocation; madvise changes only how the
            // kernel backs those pages (a hint: failure is harmless and ignored).
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    v
}

/// Large f32 buffers that CPU storage freed, handed out again by [`scratch_f32`]: a fresh
/// 64 MB result costs its page faults (the kernel zeroing every page) on first touch, as
/// much as the arithmetic that fills it. At most `RECYCLE_MAX_BUFFERS` buffers and
/// `RECYCLE_MAX_BYTES` in all are kept (the oldest go first); each is at least
/// `RECYCLE_MIN_BYTES`.
static RECYCLED: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());
const RECYCLE_MIN_BYTES: usize = 4 << 20;
const RECYCLE_MAX_BUFFERS: usize = 8;
const RECYCLE_MAX_BYTES: usize = 256 << 20;

/// Keep a freed f32 buffer for [`scratch_f32`] if it is large (called when CPU storage
/// drops).
pub(crate) fn recycle_f32(v: Vec<f32>) {
    let bytes = v.capacity() * 4;
    if !(RECYCLE_MIN_BYTES..=RECYCLE_MAX_BYTES).contains(&bytes) {
        return;
    }
    let mut kept = RECYCLED.lock().unwrap_or_else(|p| p.into_inner());
    kept.push(v);
    while kept.len() > RECYCLE_MAX_BUFFERS || kept.iter().map(|b| b.capacity() * 4).sum::<usize>() > RECYCLE_MAX_BYTES {
        kept.remove(0);
    }
}

/// A kept buffer of capacity n to 2n (the smallest), if n is large and one is kept.
fn take_recycled(n: usize) -> Option<Vec<f32>> {
    if n * 4 < RECYCLE_MIN_BYTES {
        return None;
    }
    let mut kept = RECYCLED.lock().unwrap_or_else(|p| p.into_inner());
    let fit =
        (0..kept.len()).filter(|&i| (n..=2 * n).contains(&kept[i].capacity())).min_by_key(|&i| kept[i].capacity());
    fit.map(|i| kept.remove(i))
}

/// n f32s whose values are unspecified (stale data of a recycled buffer, or zeros): for
/// callers that write every element. A fresh [`zeroed_f32`] when no freed buffer fits.
pub fn scratch_f32(n: usize) -> Vec<f32> {
    match take_recycled(n) {
        Some(mut v) => {
            // within capacity: truncating writes nothing, growing writes only the gap
            v.resize(n, 0.0);
            v
        }
        None => zeroed_f32(n),
    }
}

/// An empty vector with room for n f32s, for outputs filled by pushing: a freed buffer
/// when one fits (its pages are already there), else a plain allocation.
pub fn scratch_capacity_f32(n: usize) -> Vec<f32> {
    let mut v = take_recycled(n).unwrap_or_else(|| Vec::with_capacity(n));
    v.clear();
    v
}
