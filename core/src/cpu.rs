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

/// Cores used by the CPU backend's parallel loops: `WGRAD_CPU_THREADS` when set, else
/// every core (at most 8). One in the browser, where the CPU device spawns no threads.
pub fn threads() -> usize {
    if cfg!(target_arch = "wasm32") {
        return 1;
    }
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        let all = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
        std::env::var("WGRAD_CPU_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n| n >= 1).unwrap_or(all)
    })
}

pub use crate::cpu_buffers::{scratch_capacity_f32, scratch_f32, zeroed_f32};

/// e^x in f32, branch-free so that loops over slices vectorize: x = k ln2 + r with
/// |r| <= ln2 / 2 (Cody-Waite, ln2 in two parts), e^r by its Taylor polynomial to r^7
/// (truncation 5e-9 relative), times 2^k in two exact steps (subnormal results come out
/// right). Within 2 ulp of the correctly rounded value (tested over a dense sweep);
/// NaN stays NaN, +inf gives inf, -inf gives 0.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer
    const SHIFTER: f32 = 12_582_912.0;

    // clamped by comparisons (NaN falls through both), not f32::clamp, which does not vectorize
    #[allow(clippy::manual_clamp)]
    let xc = if x < -104.0 {
        -104.0
    } else if x > 88.8 {
        88.8
    } else {
        x
    };
    let shifted = xc * std::f32::consts::LOG2_E + SHIFTER;
    let k = shifted - SHIFTER;
    // the integer k sits in the low mantissa bits (no float-to-int cast, which does not vectorize)
    let ki = shifted.to_bits() as i32 - SHIFTER.to_bits() as i32;
    let r = (xc - k * LN2_HI) - k * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let er = 1.0 + r + r * r * p;
    let (k1, k2) = (ki >> 1, ki - (ki >> 1));
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    er * pow2(k1) * pow2(k2)
}

/// Elements from which the f32 forms of transcendentals replace the correctly rounded
/// f64 path: below it the f64 path costs little, and small tensors keep results that
/// round like the reference (which tests of comparisons between nearly equal values lean on).
pub const FAST_F32_MIN: usize = 1 << 14;

/// out[i] = f(x[i]) in f32 for a contiguous f32 view of at least [`FAST_F32_MIN`] elements
/// with an f32 result (None otherwise): the vectorized form of ops whose f32 formula meets
/// the f64 reference's tolerance.
pub fn map_f32(s: &CpuStorage, l: &Layout, dtype: DType, f: impl Fn(f32) -> f32 + Sync) -> Option<CpuStorage> {
    let x = contiguous_f32(s, l).filter(|x| dtype == DType::F32 && x.len() >= FAST_F32_MIN)?;
    Some(CpuStorage::F32(par_map_f32([x], true, |[a]| f(a))))
}

/// out[j] = f(ins[..][j]): compiled twice, with AVX2 (8 lanes) where the CPU has it and
/// `wide` (closures of inlined arithmetic; a libm call per element runs slower from AVX
/// code), and with the baseline SSE2 (4 lanes). Both run the same IEEE operations (Rust never
/// contracts a * b + c into an FMA), so results are bitwise the same on either.
fn map_slices<const K: usize>(out: &mut [f32], ins: [&[f32]; K], wide: bool, f: &impl Fn([f32; K]) -> f32) {
    #[inline(always)]
    fn each<const K: usize>(out: &mut [f32], ins: [&[f32]; K], f: &impl Fn([f32; K]) -> f32) {
        // zipped iterators (no indexing) for the one- and two-input cases, which vectorize
        let mut arg = [0f32; K];
        if K == 1 {
            for (o, &a) in out.iter_mut().zip(ins[0]) {
                arg[0] = a;
                *o = f(arg);
            }
        } else if K == 2 {
            for ((o, &a), &b) in out.iter_mut().zip(ins[0]).zip(ins[1]) {
                arg[0] = a;
                arg[1] = b;
                *o = f(arg);
            }
        } else {
            for (j, o) in out.iter_mut().enumerate() {
                *o = f(ins.map(|x| x[j]));
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn each_avx2<const K: usize>(out: &mut [f32], ins: [&[f32]; K], f: &impl Fn([f32; K]) -> f32) {
            each(out, ins, f)
        }
        if wide && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { each_avx2(out, ins, f) };
        }
    }
    let _ = wide; // only x86_64 has the AVX2 form
    each(out, ins, f)
}

/// out[i] = f(a[i], b[i]) in f32 for two contiguous f32 views with an f32 result (None
/// otherwise): for + - * / the f32 operation equals the f64 reference rounded to f32 bit
/// for bit (double rounding is harmless at 53 >= 2 * 24 + 2 bits), without conversions.
pub fn zip_f32(
    a: (&CpuStorage, &Layout),
    b: (&CpuStorage, &Layout),
    dtype: DType,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Option<CpuStorage> {
    let (x, y) = (contiguous_f32(a.0, a.1)?, contiguous_f32(b.0, b.1)?);
    (dtype == DType::F32).then(|| CpuStorage::F32(par_map_f32([x, y], true, |[p, q]| f(p, q))))
}

/// The elements of a contiguous f32 view (None for any other).
pub fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> Option<&'a [f32]> {
    match s {
        CpuStorage::F32(v) if l.is_contiguous() => Some(&v[l.offset..l.offset + l.numel()]),
        _ => None,
    }
}

/// out[j] = f(x[j]) as one vectorized loop (AVX2 where present), for slice-level closures
/// built around an inlined f (see `ElementwiseKernel::with_cpu_f32`).
pub fn map_slice_f32(out: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32) {
    let x = &x[..out.len()];
    map_slices(out, [x], true, &|[v]: [f32; 1]| f(v));
}

/// `f(first_index, chunk)` on chunks of `v` of whole `unit`s, one per core, each on its
/// own thread (on this one with a single core or chunk). Callers give each element (or
/// unit) its own computation, so the split changes no result.
fn split_across_cores<T: Send>(v: &mut [T], unit: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let units = v.len() / unit.max(1);
    if threads() == 1 || units < 2 {
        f(0, v);
        return;
    }
    let per_core = units.div_ceil(threads()) * unit;
    std::thread::scope(|s| {
        for (c, part) in v.chunks_mut(per_core).enumerate() {
            let f = &f;
            s.spawn(move || f(c * per_core, part));
        }
    });
}

/// [`split_across_cores`] from 64K elements on; below, `f(0, v)` here.
pub fn par_chunks<T: Send>(v: &mut [T], unit: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if v.len() < PAR_MIN {
        f(0, v);
        return;
    }
    split_across_cores(v, unit, f);
}

/// [f(x_0), ..., f(x_n-1)] over f32 slices (one input or two of the same length), split
/// into one chunk per core when there are many. Every element is computed on its own, so
/// the split changes no result (the same bits on any core count); each chunk is a plain
/// slice loop the compiler vectorizes.
fn par_map_f32<const K: usize>(xs: [&[f32]; K], wide: bool, f: impl Fn([f32; K]) -> f32 + Sync) -> Vec<f32> {
    let n = xs[0].len();
    let body = |out: &mut [f32], start: usize| {
        // inputs cut to the output's length, so the loop carries no bounds checks
        let ins: [&[f32]; K] = xs.map(|x| &x[start..start + out.len()]);
        map_slices(out, ins, wide, &f);
    };
    // every element is written below
    let mut out = scratch_f32(n);
    par_chunks(&mut out, 1, |start, part| body(part, start));
    out
}

/// Rows of n values of `v`, each passed to `f` with its index, split by whole rows across
/// the cores when there are many values (each row on its own: the same bits on any core
/// count).
pub fn par_rows(v: &mut [f64], n: usize, f: impl Fn(usize, &mut [f64]) + Sync) {
    if n == 0 {
        return;
    }
    par_chunks(v, n, |start, part| part.chunks_mut(n).enumerate().for_each(|(r, row)| f(start / n + r, row)));
}

/// out[i] = f(x[i]) with the result in `dtype`. In f32, rounding each step as the GPU does
/// is not needed for a reference: one correctly rounded result is the target.
pub fn map(s: &CpuStorage, l: &Layout, dtype: DType, f: impl Fn(f64) -> f64 + Sync) -> CpuStorage {
    // fast path: f32 in, f32 out, no intermediate vectors (strided views walked in place)
    if let (CpuStorage::F32(v), DType::F32) = (s, dtype) {
        if l.is_contiguous() {
            let x = &v[l.offset..l.offset + l.numel()];
            return CpuStorage::F32(par_map_f32([x], false, |[a]| f(a as f64) as f32));
        }
        let mut out = scratch_capacity_f32(l.numel());
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
            return CpuStorage::F32(par_map_f32([x, y], true, |[p, q]| f(p as f64, q as f64) as f32));
        }
        // broadcast / strided: walk both views in place
        let mut out = scratch_capacity_f32(a.1.numel());
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

/// Fold in 16 interleaved accumulators, then combine them: a fixed order (deterministic)
/// that the compiler can vectorize, unlike one serial chain.
fn fold_lanes(v: &[f32], init: f64, f: &impl Fn(f64, f64) -> f64) -> f64 {
    // 16 lanes in a fixed order (lane i takes elements i, i + 16, ...), combined left to
    // right: the same bits on any CPU, compiled with AVX2 where there is one
    #[inline(always)]
    fn lanes(v: &[f32], init: f64, f: &impl Fn(f64, f64) -> f64) -> f64 {
        let mut acc = [init; 16];
        let chunks = v.chunks_exact(16);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..16 {
                acc[i] = f(acc[i], c[i] as f64);
            }
        }
        let a = acc.iter().fold(init, |a, &b| f(a, b));
        rest.iter().fold(a, |a, &b| f(a, b as f64))
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn lanes_avx2(v: &[f32], init: f64, f: &impl Fn(f64, f64) -> f64) -> f64 {
            lanes(v, init, f)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { lanes_avx2(v, init, f) };
        }
    }
    lanes(v, init, f)
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
                let all_blocks = |start: usize, part: &mut [$t]| {
                    for (j, block) in part.chunks_mut(m * n).enumerate() {
                        product(start / (m * n) + j, block);
                    }
                };
                // products too small for the GEMM's own threads: whole batches per core
                if batch >= 2 * threads() && m * k + k * n < 1 << 14 {
                    split_across_cores(&mut c, m * n, all_blocks);
                } else {
                    all_blocks(0, &mut c);
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
