//! The CPU reference backend: every op computed in f64 from strided views and rounded to
//! the tensor's dtype (so f32 results are the correctly rounded reference); matmul runs a
//! blocked GEMM (`matrixmultiply`) in the tensor's own precision.
use crate::storage::CpuStorage;
use crate::{DType, Layout};

/// The elements of a view, row-major, widened to f64 (one match on the dtype, then a
/// tight loop: contiguous views are read as slices).
pub fn read(s: &CpuStorage, l: &Layout) -> Vec<f64> {
    fn gather<T: Copy>(v: &[T], l: &Layout, f: impl Fn(T) -> f64) -> Vec<f64> {
        if l.is_contiguous() {
            return v[l.offset..l.offset + l.numel()].iter().map(|&x| f(x)).collect();
        }
        l.offsets().into_iter().map(|o| f(v[o])).collect()
    }
    match s {
        CpuStorage::F32(v) => gather(v, l, |x| x as f64),
        CpuStorage::F64(v) => gather(v, l, |x| x),
        CpuStorage::U32(v) => gather(v, l, |x| x as f64),
        CpuStorage::F16(v) => gather(v, l, |x| x.to_f64()),
    }
}

pub fn pow_num(x: f64, y: f64) -> f64 {
    x.powf(y)
}

pub fn max_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

pub fn min_nan(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

/// Elements from which an elementwise loop is split across the cores.
const PAR_MIN: usize = 1 << 16;

/// Cores used by the CPU backend's parallel loops (at most 8).
pub fn threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(8))
}

/// [f(0), ..., f(n - 1)], split into one chunk per core when n is large. Every element is
/// computed on its own, so the split changes no result (the same bits on any core count).
fn par_fill<T: Send + Copy + Default>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let t = threads();
    if n < PAR_MIN || t == 1 {
        return (0..n).map(f).collect();
    }
    let mut out = vec![T::default(); n];
    let chunk = n.div_ceil(t);
    std::thread::scope(|s| {
        for (c, part) in out.chunks_mut(chunk).enumerate() {
            let f = &f;
            s.spawn(move || part.iter_mut().enumerate().for_each(|(j, o)| *o = f(c * chunk + j)));
        }
    });
    out
}

/// Rows of n values of `v`, each passed to `f` with its index, split by whole rows across
/// the cores when there are many values (each row on its own: the same bits on any core
/// count).
pub fn par_rows(v: &mut [f64], n: usize, f: impl Fn(usize, &mut [f64]) + Sync) {
    let t = threads();
    if n == 0 {
        return;
    }
    if v.len() < PAR_MIN || t == 1 {
        v.chunks_mut(n).enumerate().for_each(|(r, row)| f(r, row));
        return;
    }
    let rows_per_core = (v.len() / n).div_ceil(t);
    std::thread::scope(|s| {
        for (c, part) in v.chunks_mut(rows_per_core * n).enumerate() {
            let f = &f;
            s.spawn(move || part.chunks_mut(n).enumerate().for_each(|(r, row)| f(c * rows_per_core + r, row)));
        }
    });
}

/// out[i] = f(x[i]) with the result in `dtype`. In f32, rounding each step as the GPU does
/// is not needed for a reference: one correctly rounded result is the target.
pub fn map(s: &CpuStorage, l: &Layout, dtype: DType, f: impl Fn(f64) -> f64 + Sync) -> CpuStorage {
    // fast path: f32 in, f32 out, no intermediate vectors (strided views walked in place)
    if let (CpuStorage::F32(v), DType::F32) = (s, dtype) {
        if l.is_contiguous() {
            let x = &v[l.offset..l.offset + l.numel()];
            return CpuStorage::F32(par_fill(x.len(), |i| f(x[i] as f64) as f32));
        }
        let mut out = Vec::with_capacity(l.numel());
        let (shape, strides, _) = coalesce2(&l.shape, &l.strides, &l.strides);
        let (n, st) = (*shape.last().unwrap_or(&1), *strides.last().unwrap_or(&1));
        for_each_row2(&shape, (l.offset, &strides), (0, &strides), |o, _| {
            out.extend((0..n).map(|j| f(v[o + j * st] as f64) as f32))
        });
        return CpuStorage::F32(out);
    }
    CpuStorage::from_f64(read(s, l).into_iter().map(f).collect(), dtype)
}

/// (shape, strides of a, strides of b) of two views of one shape with size-1 axes dropped
/// and neighbouring axes merged where both views step through them as one: the same
/// elements in the same order, walked in fewer, longer rows ([256, 256, 1] is one axis
/// of 65536, not 65536 rows of one).
pub fn coalesce2(shape: &[usize], sa: &[usize], sb: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (mut s, mut a, mut b): (Vec<usize>, Vec<usize>, Vec<usize>) = (vec![], vec![], vec![]);
    for i in 0..shape.len() {
        if shape[i] == 1 {
            continue;
        }
        if let (Some(&ls), Some(&la), Some(&lb)) = (s.last(), a.last(), b.last()) {
            if la == sa[i] * shape[i] && lb == sb[i] * shape[i] {
                let k = s.len() - 1;
                (s[k], a[k], b[k]) = (ls * shape[i], sa[i], sb[i]);
                continue;
            }
        }
        s.push(shape[i]);
        a.push(sa[i]);
        b.push(sb[i]);
    }
    (s, a, b)
}

/// Calls `f(start_a, start_b)` for every last-axis row of two views of one shape, in
/// row-major order, without materializing index lists (an odometer over the leading axes).
pub fn for_each_row2(
    shape: &[usize],
    (oa, sa): (usize, &[usize]),
    (ob, sb): (usize, &[usize]),
    mut f: impl FnMut(usize, usize),
) {
    let rank = shape.len();
    if shape.contains(&0) {
        return;
    }
    if rank == 0 {
        f(oa, ob);
        return;
    }
    let mut idx = vec![0usize; rank - 1];
    let (mut pa, mut pb) = (oa, ob);
    loop {
        f(pa, pb);
        let mut d = rank - 1;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            pa += sa[d];
            pb += sb[d];
            if idx[d] < shape[d] {
                break;
            }
            pa -= sa[d] * shape[d];
            pb -= sb[d] * shape[d];
            idx[d] = 0;
        }
    }
}

/// Extends `out` with f over one last-axis row of `n` elements (slices where unit or zero
/// strides allow, so the loop vectorizes).
#[allow(clippy::too_many_arguments)]
fn zip_row(
    out: &mut Vec<f32>,
    x: &[f32],
    y: &[f32],
    (pa, la): (usize, usize),
    (pb, lb): (usize, usize),
    n: usize,
    f: &impl Fn(f64, f64) -> f64,
) {
    match (la, lb) {
        (1, 1) => out.extend(x[pa..pa + n].iter().zip(&y[pb..pb + n]).map(|(&p, &q)| f(p as f64, q as f64) as f32)),
        (1, 0) => {
            let q = y[pb] as f64;
            out.extend(x[pa..pa + n].iter().map(|&p| f(p as f64, q) as f32))
        }
        (0, 1) => {
            let p = x[pa] as f64;
            out.extend(y[pb..pb + n].iter().map(|&q| f(p, q as f64) as f32))
        }
        _ => out.extend((0..n).map(|j| f(x[pa + j * la] as f64, y[pb + j * lb] as f64) as f32)),
    }
}

pub fn zip(
    a: (&CpuStorage, &Layout),
    b: (&CpuStorage, &Layout),
    dtype: DType,
    f: impl Fn(f64, f64) -> f64 + Sync,
) -> CpuStorage {
    if let (CpuStorage::F32(x), CpuStorage::F32(y), DType::F32) = (a.0, b.0, dtype) {
        if a.1.is_contiguous() && b.1.is_contiguous() {
            let n = a.1.numel();
            let (x, y) = (&x[a.1.offset..a.1.offset + n], &y[b.1.offset..b.1.offset + n]);
            return CpuStorage::F32(par_fill(n, |i| f(x[i] as f64, y[i] as f64) as f32));
        }
        // broadcast / strided: walk both views in place
        let mut out = Vec::with_capacity(a.1.numel());
        let (shape, sa, sb) = coalesce2(&a.1.shape, &a.1.strides, &b.1.strides);
        let n = *shape.last().unwrap_or(&1);
        let (la, lb) = (*sa.last().unwrap_or(&1), *sb.last().unwrap_or(&1));
        for_each_row2(&shape, (a.1.offset, &sa), (b.1.offset, &sb), |p, q| {
            zip_row(&mut out, x, y, (p, la), (q, lb), n, &f)
        });
        return CpuStorage::F32(out);
    }
    let va = read(a.0, a.1);
    let vb = read(b.0, b.1);
    CpuStorage::from_f64(va.into_iter().zip(vb).map(|(x, y)| f(x, y)).collect(), dtype)
}

/// Rows of `inner` values (reduced axes already permuted last) reduced by `f`.
pub fn reduce_rows(vals: &[f64], inner: usize, outer: usize, init: f64, f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    (0..outer).map(|o| vals[o * inner..(o + 1) * inner].iter().fold(init, |a, &b| f(a, b))).collect()
}

/// [`reduce_rows`] straight from storage: contiguous f32 rows are folded in place, and a
/// view whose kept and reduced axes each collapse to one stride (e.g. columns) is folded
/// row by row into the accumulators, in the same per-output order.
pub fn reduce_view(
    s: &CpuStorage,
    l: &Layout,
    inner: usize,
    outer: usize,
    init: f64,
    f: impl Fn(f64, f64) -> f64,
) -> Vec<f64> {
    if let CpuStorage::F32(v) = s {
        if l.is_contiguous() {
            let v = &v[l.offset..l.offset + inner * outer];
            return (0..outer).map(|o| fold_lanes(&v[o * inner..(o + 1) * inner], init, &f)).collect();
        }
        if let Some((so, si)) = two_level(l, outer) {
            let mut acc = vec![init; outer];
            for r in 0..inner {
                let base = l.offset + r * si;
                for (o, a) in acc.iter_mut().enumerate() {
                    *a = f(*a, v[base + o * so] as f64);
                }
            }
            return acc;
        }
    }
    reduce_rows(&read(s, l), inner, outer, init, f)
}

/// Fold in 8 interleaved accumulators, then combine them: a fixed order (deterministic)
/// that the compiler can vectorize, unlike one serial chain.
fn fold_lanes(v: &[f32], init: f64, f: &impl Fn(f64, f64) -> f64) -> f64 {
    let mut acc = [init; 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = f(acc[i], c[i] as f64);
        }
    }
    let a = acc.iter().fold(init, |a, &b| f(a, b));
    rest.iter().fold(a, |a, &b| f(a, b as f64))
}

/// (kept stride, reduced stride) when the leading axes (`outer` elements) and the trailing
/// axes each collapse to one strided axis.
fn two_level(l: &Layout, outer: usize) -> Option<(usize, usize)> {
    let mut split = 0;
    let mut prod = 1;
    while prod < outer && split < l.shape.len() {
        prod *= l.shape[split];
        split += 1;
    }
    if prod != outer {
        return None;
    }
    wgrad_kernels::two_level_strides(&l.shape, &l.strides, split)
}

/// Index of the best element of each row (first on ties, NaN wins).
pub fn arg_rows(vals: &[f64], inner: usize, outer: usize, better: impl Fn(f64, f64) -> bool) -> Vec<f64> {
    (0..outer)
        .map(|o| {
            let row = &vals[o * inner..(o + 1) * inner];
            let mut best = 0;
            for (i, &v) in row.iter().enumerate().skip(1) {
                let b = row[best];
                if b.is_nan() {
                    break;
                }
                if v.is_nan() || better(v, b) {
                    best = i;
                }
            }
            best as f64
        })
        .collect()
}

/// C = A @ B for each batch; offsets index the batch's first element; strides in elements.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &CpuStorage,
    b: &CpuStorage,
    a_offsets: &[usize],
    b_offsets: &[usize],
    (a_rs, a_cs): (usize, usize),
    (b_rs, b_cs): (usize, usize),
    m: usize,
    k: usize,
    n: usize,
) -> CpuStorage {
    let batch = a_offsets.len();
    // one body for f32 (sgemm) and f64 (dgemm)
    macro_rules! gemm {
        ($av:expr, $bv:expr, $t:ty, $gemm:path, $wrap:path) => {{
            let mut c = vec![0 as $t; batch * m * n];
            let (av, bv): (&[$t], &[$t]) = (&$av, &$bv);
            // one product per batch into its own block of c
            let product = |i: usize, block: &mut [$t]| {
                // SAFETY: offsets and strides describe views inside av / bv (checked by the
                // layouts); block is a fresh contiguous m x n block.
                unsafe {
                    $gemm(
                        m,
                        k,
                        n,
                        1.0,
                        av.as_ptr().add(a_offsets[i]),
                        a_rs as isize,
                        a_cs as isize,
                        bv.as_ptr().add(b_offsets[i]),
                        b_rs as isize,
                        b_cs as isize,
                        0.0,
                        block.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
            };
            if m * n * k > 0 {
                // products too small for the GEMM's own threads: whole batches per core
                let per_core = batch.div_ceil(threads());
                if batch >= 2 * threads() && m * k + k * n < 1 << 14 && threads() > 1 {
                    std::thread::scope(|s| {
                        for (c0, part) in c.chunks_mut(per_core * m * n).enumerate() {
                            let product = &product;
                            s.spawn(move || {
                                for (j, block) in part.chunks_mut(m * n).enumerate() {
                                    product(c0 * per_core + j, block);
                                }
                            });
                        }
                    });
                } else {
                    for (i, block) in c.chunks_mut(m * n).enumerate() {
                        product(i, block);
                    }
                }
            }
            $wrap(c)
        }};
    }
    match (a, b) {
        (CpuStorage::F32(av), CpuStorage::F32(bv)) => gemm!(av, bv, f32, matrixmultiply::sgemm, CpuStorage::F32),
        (CpuStorage::F64(av), CpuStorage::F64(bv)) => gemm!(av, bv, f64, matrixmultiply::dgemm, CpuStorage::F64),
        _ => unreachable!("matmul dtypes are checked before the backend runs"),
    }
}
