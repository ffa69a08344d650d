// Helpers shared by every kernel family. The generated header defines `T` and `WG`;
// each skeleton declares the `params` uniform block these helpers read.

// Element offset of row-major linear index `linear` in a strided view whose shape
// starts at param(shape_at) and strides at param(strides_at) (`rank` of each).
fn strided_offset(linear: u32, rank: u32, shape_at: u32, strides_at: u32, base: u32) -> u32 {
    var rem = linear;
    var off = base;
    var d = rank;
    loop {
        if (d == 0u) { break; }
        d = d - 1u;
        let size = param(shape_at + d);
        off = off + (rem % size) * param(strides_at + d);
        rem = rem / size;
    }
    return off;
}

// 1-D grids over 65,535 workgroups are folded into 2-D by the launcher.
fn flat_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid;
}

// How a grid-stride loop deals its items to the invocations. GPUs: interleaved, item i to
// invocation i % total, so the neighbouring lanes of a warp load neighbouring words
// (coalesced). CPU adapters: one contiguous run per invocation. lavapipe (Mesa 22.3) loads
// a storage buffer lane by lane, each word through the stack, and there a 16M add runs
// 1.3-1.5x faster with contiguous runs than with interleaved lanes (a bare wgpu kernel and
// the bench tool, 2 cores). The context sets it per adapter (Context::contiguous_runs).
override CONTIGUOUS_RUNS: bool = false;

// Items [lo, hi) dealt to `count` takers; taker `id` gets (first, end, step): a contiguous
// run of ceil(n / count) items with CONTIGUOUS_RUNS, every count-th item otherwise.
fn deal_items(id: u32, count: u32, lo: u32, hi: u32) -> vec3<u32> {
    if (CONTIGUOUS_RUNS) {
        let n = hi - lo;
        // ceil(n / count), without overflowing n + count
        let per = n / count + select(0u, 1u, n % count != 0u);
        let first = lo + min(id * per, n);
        return vec3<u32>(first, min(first + per, hi), 1u);
    }
    return vec3<u32>(lo + id, hi, count);
}

// This invocation's items of a grid-stride loop over n items.
fn stride_range(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, n: u32) -> vec3<u32> {
    return deal_items(flat_id(wid, nwg, lid), nwg.x * nwg.y * WG, 0u, n);
}

// This lane's items of a loop that a whole workgroup shares over [lo, hi).
fn lane_range(lid: u32, lo: u32, hi: u32) -> vec3<u32> {
    return deal_items(lid, WG, lo, hi);
}

// Checked on the bits: drivers may compile `x != x` assuming no NaNs exist.
fn is_nan(x: T) -> bool {
    return (bitcast<u32>(f32(x)) & 0x7fffffffu) > 0x7f800000u;
}

// Infinities and NaN come from runtime bits: WGSL makes a constant expression that
// evaluates to one an error, which Chrome's compiler (Tint) enforces and naga does not.
fn from_bits(bits: u32) -> T {
    var b = bits;
    return T(bitcast<f32>(b));
}

fn neg_inf() -> T {
    return from_bits(0xff800000u);
}

fn pos_inf() -> T {
    return from_bits(0x7f800000u);
}

fn nan_value() -> T {
    return from_bits(0x7fc00000u);
}

// NaN-propagating max/min (WGSL's max/min may drop NaN, PyTorch propagates it).
fn max_nan(a: T, b: T) -> T {
    if (is_nan(a)) { return a; }
    if (is_nan(b)) { return b; }
    return select(b, a, a >= b);
}

fn min_nan(a: T, b: T) -> T {
    if (is_nan(a)) { return a; }
    if (is_nan(b)) { return b; }
    return select(b, a, a <= b);
}

// x^n by squaring: exact for small integral powers (exp2(y log2 x) is not: 3^3 = 27.000002).
fn pow_int(x: T, n: u32) -> T {
    var r = T(1);
    var b = x;
    var e = n;
    loop {
        if (e == 0u) { break; }
        if ((e & 1u) == 1u) { r = r * b; }
        b = b * b;
        e = e >> 1u;
    }
    return r;
}

// pow with numpy semantics: exact small integral powers, negative bases allowed for
// integral exponents.
fn pow_num(x: T, y: T) -> T {
    if (y == T(0)) { return T(1); }
    if (y == floor(y) && abs(y) <= T(64)) {
        let r = pow_int(x, u32(abs(y)));
        return select(r, T(1) / r, y < T(0));
    }
    if (x < T(0) && y == floor(y)) {
        let r = pow(-x, y);
        let odd = abs(y - T(2) * floor(y / T(2))) == T(1);
        return select(r, -r, odd);
    }
    if (x == T(0)) { return select(pos_inf(), T(0), y > T(0)); }
    return pow(x, y);
}

// tanh saturates past |x| = 15 in f32; clamping first avoids inf/inf = NaN in naive lowerings.
fn tanh_safe(x: T) -> T {
    let y = select(x, sign(x) * T(15), abs(x) > T(15));
    return tanh(y);
}

fn sigmoid_safe(x: T) -> T {
    // exp of a non-positive argument cannot overflow: stable on both sides.
    let e = exp(-abs(x));
    let p = T(1) / (T(1) + e);
    return select(p, T(1) - p, x < T(0));
}

// sin and cos to about 1 ulp in f32, on every adapter: WGSL only promises an absolute error
// of 2^-11 on [-pi, pi] (SwiftShader, Chrome's software adapter, is that loose). x = k pi/2
// + r with |r| <= pi/4 (Cody-Waite, pi/2 in three parts, exact to |k| ~ 2^12), then Cephes'
// minimax polynomials for sin r and cos r, picked and signed by the quadrant k mod 4
// (`shift` 1 turns sin into cos). Past |x| = 8192 the reduction loses digits: the builtin.
fn sin_quadrant(xf: f32, shift: i32) -> f32 {
    if (abs(xf) > 8192.0) {
        return select(sin(xf), cos(xf), shift == 1);
    }
    let k = round(xf * 0.63661977236);
    let r = ((xf - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.54978995489188216e-8;
    let z = r * r;
    let s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
    let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
    let q = (i32(k) + shift) & 3;
    let v = select(s, c, (q & 1) == 1);
    return select(v, -v, q >= 2);
}

fn sin_accurate(x: T) -> T {
    return T(sin_quadrant(f32(x), 0));
}

fn cos_accurate(x: T) -> T {
    return T(sin_quadrant(f32(x), 1));
}

// erf: odd Taylor series near 0 (relative accuracy), Abramowitz-Stegun 7.1.26 beyond
// (absolute error below 1.5e-7).
fn erf_approx(x: T) -> T {
    let a = abs(x);
    let q = x * x;
    if (a < T(0.5)) {
        return x * (T(1.1283791671) + q * (T(-0.3761263890) + q * (T(0.1128379167)
            + q * (T(-0.0268661707) + q * (T(0.0052239776) + q * T(-0.0008548327))))));
    }
    let k = T(1) / (T(1) + T(0.3275911) * a);
    let p = k * (T(0.254829592) + k * (T(-0.284496736) + k * (T(1.421413741)
        + k * (T(-1.453152027) + k * T(1.061405429)))));
    return sign(x) * (T(1) - p * exp(-q));
}

// gelu_tanh(x) = x / 2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), and its slope
// 1/2 (1 + t) + x/2 (1 - t^2) u' with t = tanh(u), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
fn gelu_tanh_value(x: T) -> T {
    let t = tanh_safe(T(0.7978845608) * (x + T(0.044715) * x * x * x));
    return T(0.5) * x * (T(1) + t);
}
fn gelu_tanh_slope(x: T) -> T {
    let t = tanh_safe(T(0.7978845608) * (x + T(0.044715) * x * x * x));
    let du = T(0.7978845608) * (T(1) + T(0.134145) * x * x);
    return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du;
}

// Elements per invocation run in the strided paths of the elementwise kernels.
const RUN: u32 = 32u;

// A position in a strided walk over linear indices: the last two coordinates and the
// extents of those dims (n2 = 1 for rank 1). Operands decompose their offset once
// (strided_offset, integer divisions: slow on CPU adapters) and then only step:
// walk_next says how far the position moved.
struct Walk {
    col: u32,
    row: u32,
    n_last: u32,
    n2: u32,
}

fn walk_start(i: u32, rank: u32, shape_at: u32) -> Walk {
    let n_last = param(shape_at + rank - 1u);
    var n2 = 1u;
    if (rank >= 2u) { n2 = param(shape_at + rank - 2u); }
    return Walk(i % n_last, (i / n_last) % n2, n_last, n2);
}

// Elements from the position to the end of its block of the last two dims.
fn walk_left(w: Walk) -> u32 {
    return (w.n2 - w.row) * w.n_last - w.col;
}

// Advance by one element: 0 = moved along the last dim, 1 = wrapped into the next row of
// the second-to-last dim, 2 = wrapped further (offsets must be decomposed again).
fn walk_next(w: ptr<function, Walk>) -> u32 {
    (*w).col = (*w).col + 1u;
    if ((*w).col < (*w).n_last) { return 0u; }
    (*w).col = 0u;
    (*w).row = (*w).row + 1u;
    if ((*w).row < (*w).n2) { return 1u; }
    (*w).row = 0u;
    return 2u;
}

// An operand's offset after walk_next returned `moved` (0 or 1), from its last two strides.
fn walk_offset(off: u32, moved: u32, w: Walk, s_last: u32, s2: u32) -> u32 {
    if (moved == 0u) { return off + s_last; }
    return off - (w.n_last - 1u) * s_last + s2;
}

// The stride of dim `rank - back` of the strides at `strides_at` (0 past the front).
fn stride_back(strides_at: u32, rank: u32, back: u32) -> u32 {
    if (rank < back) { return 0u; }
    return param(strides_at + rank - back);
}

// Launch parameters live in a uniform block (array<vec4<u32>, PARAMS_QUADS>): on CPU
// adapters uniform reads are plain (broadcast) loads, storage reads go lane by lane.
fn param(i: u32) -> u32 {
    return params[i >> 2u][i & 3u];
}
