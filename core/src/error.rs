use thiserror::Error;
pub use wgrad_kernels::KernelError;

/// The one public error type of wgrad. Variants name the op and the offending values.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    #[error("{op}: shapes {lhs:?} and {rhs:?} do not broadcast")]
    Broadcast { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize> },
    #[error("{op}: shapes {lhs:?} and {rhs:?} are incompatible: {msg}")]
    ShapeMismatch { op: &'static str, lhs: Vec<usize>, rhs: Vec<usize>, msg: String },
    #[error("{op}: {got} elements do not fill shape {shape:?} ({expected} elements)")]
    ElementCount { op: &'static str, shape: Vec<usize>, got: usize, expected: usize },
    #[error("{op}: axis {axis} is out of range for rank {rank}")]
    AxisOutOfRange { op: &'static str, axis: isize, rank: usize },
    #[error("{op}: range {start}..{end} is out of bounds for axis {axis} of size {size}")]
    SliceOutOfRange { op: &'static str, axis: usize, start: usize, end: usize, size: usize },
    #[error("{op}: matrix {batch} of the batch is singular (zero pivot in column {column})")]
    Singular { op: &'static str, batch: usize, column: usize },
    #[error(
        "{op}: matrix {batch} of the batch is not positive definite (leading minor of order {minor} is not positive)"
    )]
    NotPositiveDefinite { op: &'static str, batch: usize, minor: usize },
    #[error("{op}: {msg}")]
    Empty { op: &'static str, msg: String },
    #[error("{op}: index {index} is out of range for an axis of size {size}")]
    IndexOutOfRange { op: &'static str, index: u64, size: usize },
    #[error("{op}: dtypes {lhs:?} and {rhs:?} differ; convert explicitly with to_dtype")]
    DTypeMismatch { op: &'static str, lhs: crate::DType, rhs: crate::DType },
    #[error("{op}: tensors are on different devices ({lhs} and {rhs}); move one with to_device")]
    DeviceMismatch { op: &'static str, lhs: String, rhs: String },
    #[error("{op}: dtype {dtype:?} is not supported on {device}{why}")]
    UnsupportedDType { op: &'static str, dtype: crate::DType, device: String, why: String },
    /// A primitive without a rule for a transform ran under it (never a silent zero).
    #[error(
        "{op} has no {transform} rule: give a user kernel its derivative with \
         ElementwiseKernel::with_derivative(wgsl, cpu) (call it again for each higher order), \
         or run it inside wgrad::custom_op with a CustomOp's vjp (and optionally jvp and batch)"
    )]
    MissingRule { op: String, transform: &'static str },
    /// An op that needs a single element got more (a loss for grad, a value to read as a
    /// number).
    #[error("{op}: needs a single element, got shape {shape:?}{hint}")]
    NotScalar { op: &'static str, shape: Vec<usize>, hint: &'static str },
    /// A broken invariant inside wgrad (a bug to report, not bad input).
    #[error("{op}: internal error: {msg}")]
    Internal { op: &'static str, msg: String },
    /// A derivative that disagrees with central differences: `mode` is "reverse" (the VJP,
    /// `<u, J^T v>`) or "forward" (the JVP, `<J u, v>`).
    #[error(
        "check_grads: order-{order} derivative ({mode} mode) disagrees with central differences: \
             {analytic:e} but the finite-difference value is {numeric:e} \
             (|difference| {diff:e} > tolerance {tol:e})"
    )]
    GradCheck { order: usize, mode: &'static str, analytic: f64, numeric: f64, diff: f64, tol: f64 },
    #[error("{op}: {msg}")]
    Invalid { op: &'static str, msg: String },
    /// What `jit` cannot trace or replay faithfully: `op` is the call or kernel involved.
    #[error("jit: {op}: {msg}")]
    Jit { op: String, msg: String },
    #[error("{op}: {path}: {msg}")]
    Io { op: &'static str, path: String, msg: String },
    #[error("{what}: {msg}")]
    Format { what: String, msg: String },
    #[error(transparent)]
    Gpu(#[from] KernelError),
}

/// `Result` with wgrad's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
