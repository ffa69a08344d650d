//! The op tables of the elementwise and reduction kernels: each op's WGSL function body
//! (spliced into its family's skeleton by `source.rs`), the element types, and the
//! registry of user elementwise kernels.
use crate::source::{validate_wgsl, Kernel, KernelKey};

/// Element types a kernel can be built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KDType {
    F32,
    U32,
    /// Half precision: stored as f16 (packed two per word), computed in f32. Native
    /// variants need the adapter's SHADER_F16; elsewhere it is reached through pack /
    /// unpack kernels.
    F16,
}

impl KDType {
    pub fn wgsl(self) -> &'static str {
        match self {
            KDType::F32 => "f32",
            KDType::U32 => "u32",
            KDType::F16 => "f16",
        }
    }
}

/// `AddScalar` -> `add_scalar`.
fn snake_case(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_lowercase());
    }
    out
}

macro_rules! op_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $body:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            /// The WGSL body of this op's function.
            pub fn wgsl_body(self) -> &'static str {
                match self { $($name::$variant => $body),* }
            }
            /// The op's name as users call it (`AddScalar` is `add_scalar`).
            pub fn name(self) -> &'static str {
                static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
                let names = NAMES.get_or_init(|| {
                    $name::ALL.iter().map(|op| &*snake_case(&format!("{op:?}")).leak()).collect()
                });
                names[self as usize]
            }
        }
    };
}

op_enum!(
    /// `fn unary_op(x: T, s: T) -> T`; `s` is the scalar operand of the scalar forms.
    UnaryOp {
        Neg => "return -x;",
        Exp => "return exp(x);",
        Log => "return log(x);",
        Sqrt => "return sqrt(x);",
        Abs => "return abs(x);",
        Tanh => "return tanh_safe(x);",
        Sigmoid => "return sigmoid_safe(x);",
        Relu => "if (is_nan(x)) { return x; } return select(T(0), x, x > T(0));",
        Sin => "return sin_accurate(x);",
        Cos => "return cos_accurate(x);",
        Recip => "return T(1) / x;",
        Sign => "if (is_nan(x)) { return x; } return sign(x);",
        AddScalar => "return x + s;",
        MulScalar => "return x * s;",
        PowScalar => "return pow_num(x, s);",
        RPowScalar => "return pow_num(s, x);",
        Erf => "return erf_approx(x);",
        // gelu(x) = x Phi(x) = x / 2 (1 + erf(x / sqrt(2))), and its slope Phi(x) + x phi(x)
        Gelu => "return T(0.5) * x * (T(1) + erf_approx(x * T(0.7071067812)));",
        GeluSlope => "return T(0.5) * (T(1) + erf_approx(x * T(0.7071067812))) \
                      + x * T(0.3989422804) * exp(T(-0.5) * x * x);",
        GeluTanh => "return gelu_tanh_value(x);",
        GeluTanhSlope => "return gelu_tanh_slope(x);",
        // log(1 + x) without losing x's digits to the rounding of 1 + x: for -0.3 < x < 0.5,
        // 2 atanh(z) with z = x / (2 + x) (|z| < 0.2: the odd series to z^11 leaves under
        // 1e-9 relative); elsewhere 1 + x rounds by at most 1.2e-7 of log(1 + x)
        Log1p => "if (x > T(-0.3) && x < T(0.5)) { let z = x / (T(2) + x); let q = z * z; \
                  return T(2) * z * (T(1) + q * (T(0.33333333) + q * (T(0.2) + q * (T(0.14285714) \
                  + q * (T(0.11111111) + q * T(0.09090909)))))); } return log(T(1) + x);",
    }
);

op_enum!(
    /// `fn binary_op(a: T, b: T) -> T`; comparisons give 1 or 0 masks in T.
    BinaryOp {
        Add => "return a + b;",
        Sub => "return a - b;",
        Mul => "return a * b;",
        Div => "return a / b;",
        Pow => "return pow_num(a, b);",
        Maximum => "return max_nan(a, b);",
        Minimum => "return min_nan(a, b);",
        Eq => "return select(T(0), T(1), a == b);",
        Ne => "return select(T(0), T(1), a != b);",
        Lt => "return select(T(0), T(1), a < b);",
        Le => "return select(T(0), T(1), a <= b);",
        Gt => "return select(T(0), T(1), a > b);",
        Ge => "return select(T(0), T(1), a >= b);",
        // a where b > 0, else 0 (NaN b gives 0): relu's VJP in one kernel
        WherePositive => "return select(T(0), a, b > T(0));",
    }
);

op_enum!(
    /// Tree reductions: `reduce_identity` and `reduce_combine`.
    ReduceOp {
        Sum => "fn reduce_identity() -> T { return T(0); }\nfn reduce_combine(a: T, b: T) -> T { return a + b; }",
        Max => "fn reduce_identity() -> T { return neg_inf(); }\n\
                fn reduce_combine(a: T, b: T) -> T { return max_nan(a, b); }",
        Min => "fn reduce_identity() -> T { return pos_inf(); }\n\
                fn reduce_combine(a: T, b: T) -> T { return min_nan(a, b); }",
    }
);

op_enum!(
    /// Index reductions: `arg_better(candidate, best)`.
    ArgReduceOp {
        ArgMax => "fn arg_better(v: T, best: T) -> bool { return v > best; }",
        ArgMin => "fn arg_better(v: T, best: T) -> bool { return v < best; }",
    }
);

/// A user elementwise kernel: the WGSL body of `fn unary_op(x: T, s: T) -> T`.
struct UserKernel {
    name: String,
    body: String,
}

static USER_KERNELS: std::sync::Mutex<Vec<UserKernel>> = std::sync::Mutex::new(Vec::new());

/// Register a user elementwise kernel (process-wide). The assembled module is validated
/// with naga now, so a bad body is an error here, not at dispatch.
pub fn register_user_unary(name: &str, wgsl_body: &str) -> Result<u32, String> {
    let mut reg = USER_KERNELS.lock().unwrap_or_else(|p| p.into_inner());
    let id = crate::launch::small_u32(reg.len());
    reg.push(UserKernel { name: name.to_string(), body: wgsl_body.to_string() });
    drop(reg);
    let key = KernelKey::new(Kernel::UserUnary(id), KDType::F32);
    if let Err(e) = validate_wgsl(&key.source()) {
        // leave the slot unusable: its body is replaced by a valid identity, never dispatched
        USER_KERNELS.lock().unwrap_or_else(|p| p.into_inner())[id as usize].body = "return x;".into();
        return Err(e);
    }
    Ok(id)
}

/// How many user kernels are registered.
pub(crate) fn user_kernel_count() -> u32 {
    crate::launch::small_u32(USER_KERNELS.lock().unwrap_or_else(|p| p.into_inner()).len())
}

/// (name, WGSL body) of a registered user kernel.
pub(crate) fn user_kernel(id: u32) -> (String, String) {
    let reg = USER_KERNELS.lock().unwrap_or_else(|p| p.into_inner());
    let k = &reg[id as usize];
    (k.name.clone(), k.body.clone())
}
