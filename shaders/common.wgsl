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

// Checked on the bits: drivers may compile `x != x` assuming no NaNs exist.
fn is_nan(x: T) -> bool {
    return (bitcast<u32>(f32(x)) & 0x7fffffffu) > 0x7f800000u;
}

fn neg_inf() -> T {
    return T(bitcast<f32>(0xff800000u));
}

fn pos_inf() -> T {
    return T(bitcast<f32>(0x7f800000u));
}

fn nan_value() -> T {
    return T(bitcast<f32>(0x7fc00000u));
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

// Elements per invocation run in the strided paths of the elementwise kernels.
const RUN: u32 = 16u;

// Launch parameters live in a uniform block (array<vec4<u32>, PARAMS_QUADS>): on CPU
// adapters uniform reads are plain (broadcast) loads, storage reads go lane by lane.
fn param(i: u32) -> u32 {
    return params[i >> 2u][i & 3u];
}
