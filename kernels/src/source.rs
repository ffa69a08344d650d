//! WGSL assembly: a generated header (dtype aliases, constants) + shared helpers + one
//! family skeleton + the op-specific function. Every source the runtime can build is
//! listed by [`all_kernels`], which the naga test validates without a GPU.

/// Threads per workgroup of the 1-D kernels.
pub const WG: u32 = 256;
/// Size of every kernel's uniform params block, in vec4<u32> (128 words).
pub const PARAMS_QUADS: u32 = 32;

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const UNARY: &str = include_str!("../../shaders/unary.wgsl");
const BINARY: &str = include_str!("../../shaders/binary.wgsl");
const WHERE: &str = include_str!("../../shaders/where.wgsl");
const COPY: &str = include_str!("../../shaders/copy.wgsl");
const CAST: &str = include_str!("../../shaders/cast.wgsl");
const UNPACK_F16: &str = include_str!("../../shaders/unpack_f16.wgsl");
const PACK_F16: &str = include_str!("../../shaders/pack_f16.wgsl");
const FILL: &str = include_str!("../../shaders/fill.wgsl");
const PAD: &str = include_str!("../../shaders/pad.wgsl");
const RANDOM: &str = include_str!("../../shaders/random.wgsl");
const RANDOM_IO: &str = include_str!("../../shaders/random_io.wgsl");
const RANDOM_STATE_IO: &str = include_str!("../../shaders/random_state_io.wgsl");
const RANDOM_ADVANCE: &str = include_str!("../../shaders/random_advance.wgsl");
const OPTIM_SCHEDULE: &str = include_str!("../../shaders/optim_schedule.wgsl");
const OPTIM_SCHEDULE_IO: &str = include_str!("../../shaders/optim_schedule_io.wgsl");
const OPTIM_CLIP_IO: &str = include_str!("../../shaders/optim_clip_io.wgsl");
const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
const REDUCE_IO: &str = include_str!("../../shaders/reduce_io.wgsl");
const REDUCE_VEC4_IO: &str = include_str!("../../shaders/reduce_vec4_io.wgsl");
const REDUCE_COMMON: &str = include_str!("../../shaders/reduce_common.wgsl");
const UNARY_VEC4: &str = include_str!("../../shaders/unary_vec4.wgsl");
const BINARY_VEC4: &str = include_str!("../../shaders/binary_vec4.wgsl");
const REDUCE_VEC4: &str = include_str!("../../shaders/reduce_vec4.wgsl");
const REDUCE_ROWS_VEC4: &str = include_str!("../../shaders/reduce_rows_vec4.wgsl");
const REDUCE_ROWS: &str = include_str!("../../shaders/reduce_rows.wgsl");
const ARGREDUCE: &str = include_str!("../../shaders/argreduce.wgsl");
const MATMUL_COMMON: &str = include_str!("../../shaders/matmul_common.wgsl");
const MATMUL_STORE: &str = include_str!("../../shaders/matmul_store.wgsl");
const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
const MATMUL_REG: &str = include_str!("../../shaders/matmul_reg.wgsl");
const INDEX_SELECT: &str = include_str!("../../shaders/index_select.wgsl");
const GATHER: &str = include_str!("../../shaders/gather.wgsl");
const ONE_HOT: &str = include_str!("../../shaders/one_hot.wgsl");
const LU: &str = include_str!("../../shaders/lu.wgsl");
const LU_SOLVE: &str = include_str!("../../shaders/lu_solve.wgsl");
const CHOLESKY: &str = include_str!("../../shaders/cholesky.wgsl");
const OPTIM_UPDATE: &str = include_str!("../../shaders/optim_update.wgsl");
const SOFTMAX_COMMON: &str = include_str!("../../shaders/softmax_common.wgsl");
const SOFTMAX_ROWS: &str = include_str!("../../shaders/softmax_rows.wgsl");
const SOFTMAX_ROWS_IO: &str = include_str!("../../shaders/softmax_rows_io.wgsl");
const SOFTMAX_VJP: &str = include_str!("../../shaders/softmax_vjp.wgsl");
const XENT_LOSS: &str = include_str!("../../shaders/xent_loss.wgsl");
const XENT_GRAD: &str = include_str!("../../shaders/xent_grad.wgsl");
const POOL_COMMON: &str = include_str!("../../shaders/pool_common.wgsl");
const MAX_POOL: &str = include_str!("../../shaders/max_pool.wgsl");
const MAX_POOL_GRAD: &str = include_str!("../../shaders/max_pool_grad.wgsl");
const IM2COL: &str = include_str!("../../shaders/im2col.wgsl");
const COL2IM: &str = include_str!("../../shaders/col2im.wgsl");
const NORM_COMMON: &str = include_str!("../../shaders/norm_common.wgsl");
const LAYER_NORM: &str = include_str!("../../shaders/layer_norm.wgsl");
const LAYER_NORM_GRAD: &str = include_str!("../../shaders/layer_norm_grad.wgsl");

pub(crate) use crate::op_tables::user_kernel;
pub use crate::op_tables::{register_user_unary, ArgReduceOp, BinaryOp, KDType, ReduceOp, UnaryOp};

/// Every kernel (family x op variant) the runtime can build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Unary(UnaryOp),
    /// A registered user elementwise kernel (unary skeleton).
    UserUnary(u32),
    Binary(BinaryOp),
    /// Contiguous f32 map read and written as vec4.
    UnaryVec4(UnaryOp),
    /// A user kernel read and written as vec4.
    UserUnaryVec4(u32),
    /// vec4 map of two inputs, each contiguous / repeated block / splat (see [`Vec4Operand`]).
    BinaryVec4(BinaryOp, Vec4Operand, Vec4Operand),
    Where,
    /// Strided copy of 32-bit words (any 4-byte dtype; built with the f32 header).
    Copy,
    /// Conversion from the first dtype to the second.
    Cast(KDType, KDType),
    Fill,
    /// Zero padding along one axis (shaders/pad.wgsl).
    Pad,
    /// Philox 4x32-10 uniform or normal samples keyed by the launch params.
    Random,
    /// The same keyed by a generator state on the device (a snapshot, an input).
    RandomFromState,
    /// Snapshot a device-side generator state and advance it past one draw.
    RandomAdvance,
    /// An optimizer's learning rate, step count and bias corrections, advanced on the device
    /// (with `clip`: also the gradient scale of a global-norm clip, from partial sums).
    OptimSchedule {
        clip: bool,
    },
    /// Partial sums of squares of several tensors (see [`crate::optim::SumSquares`]).
    SumSquares(crate::optim::SumSquares),
    /// Several tensors copied into windows of one flat buffer (see [`crate::pack::Pack`]).
    Pack(crate::pack::Pack),
    Reduce(ReduceOp),
    /// Reduction of contiguous rows read as vec4.
    ReduceVec4(ReduceOp),
    /// One thread per contiguous row, read as vec4 (CPU adapters).
    ReduceRowsVec4(ReduceOp),
    /// One thread per (short) row.
    ReduceRows(ReduceOp),
    ArgReduce(ArgReduceOp),
    Matmul,
    /// Register-blocked matmul without workgroup memory (CPU adapters).
    MatmulReg,
    /// Generated vec4 register-tile matmul (CPU adapters, aligned layouts).
    MatmulVec4(crate::matmul_vec4::MatmulVec4),
    IndexSelect,
    Gather,
    OneHot,
    /// Batched LU factorization with partial pivoting (in place).
    Lu,
    /// Batched solve from LU factors.
    LuSolve,
    /// Batched Cholesky factorization (in place).
    Cholesky,
    /// Softmax of contiguous rows, one thread per row.
    SoftmaxRows,
    /// The (scaled) softmax VJP of contiguous rows, one thread per row.
    SoftmaxVjp,
    /// Layer / RMS normalization of contiguous rows (affine optional), one thread per row.
    LayerNorm,
    /// Its input gradient J (g * w), one thread per row.
    LayerNormGrad,
    /// Mean softmax cross-entropy of logit rows against u32 labels (one workgroup).
    XentLoss,
    /// Its gradient times a scalar cotangent, one thread per row.
    XentGrad,
    /// Max over non-overlapping k x k windows, one thread per output.
    MaxPool,
    /// Its gradient, one thread per input element.
    MaxPoolGrad,
    /// A generated elementwise kernel over an expression DAG (see `fused/`; the id
    /// indexes the process-wide registry of fused structures).
    Fused(u32),
    /// One optimizer step over several tensors (see `nn.rs`).
    MultiStep(crate::optim::MultiStep),
    /// Image patches as columns (convolution as matmul).
    Im2Col,
    /// The adjoint of Im2Col.
    Col2Im,
}

/// How an input of [`Kernel::BinaryVec4`] maps onto the output's quads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Vec4Operand {
    /// Contiguous, the output's shape.
    Full = 0,
    /// A contiguous block repeated along the leading dims (e.g. a bias row).
    Repeat = 1,
    /// One element broadcast everywhere.
    Splat = 2,
}

impl Vec4Operand {
    pub const ALL: [Vec4Operand; 3] = [Vec4Operand::Full, Vec4Operand::Repeat, Vec4Operand::Splat];
}

/// A pipeline is compiled once per device for each key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    pub kernel: Kernel,
    pub dtype: KDType,
}

impl KernelKey {
    pub fn new(kernel: Kernel, dtype: KDType) -> Self {
        KernelKey { kernel, dtype }
    }

    /// Name in the candle style `{op}_{dtype}`, used as the pipeline label.
    pub fn name(&self) -> String {
        match self.kernel {
            Kernel::Fused(id) => return crate::fused::entry(id).0,
            // a user kernel by the name its author gave it
            Kernel::UserUnary(id) => return format!("{}_{}", user_kernel(id).0, self.dtype.wgsl()),
            Kernel::UserUnaryVec4(id) => return format!("{}_vec4_{}", user_kernel(id).0, self.dtype.wgsl()),
            _ => {}
        }
        format!("{:?}_{}", self.kernel, self.dtype.wgsl()).to_lowercase()
    }

    /// Uniform buffers bound after the params block (an optimizer's device-side state).
    pub fn extra_uniforms(&self) -> u32 {
        match self.kernel {
            Kernel::MultiStep(m) if m.dyn_hyper => 1,
            _ => 0,
        }
    }

    /// (read-only inputs, read-write outputs); a params buffer is bound after them, then
    /// any [`KernelKey::extra_uniforms`]. A standalone family's come from its declaration
    /// (`bindings::family`); the generated families' from their shape.
    pub fn bindings(&self) -> (u32, u32) {
        if let Some((inputs, outputs)) = crate::bindings::family(self.kernel) {
            return (crate::launch::small_u32(inputs.len()), crate::launch::small_u32(outputs.len()));
        }
        match self.kernel {
            Kernel::Fused(id) => {
                let (_, _, inputs, outputs) = crate::fused::entry(id);
                (inputs, outputs)
            }
            Kernel::MultiStep(m) => (m.tensors, m.tensors * m.states()),
            Kernel::SumSquares(s) => (s.tensors, 1),
            Kernel::Pack(p) => (p.sources, 1),
            // the vec4 matmuls: A and B as quads, C
            Kernel::MatmulVec4(_) => (2, 1),
            k => unreachable!("{k:?} declares its bindings in bindings::family"),
        }
    }

    /// The complete WGSL module for this key.
    pub fn source(&self) -> String {
        if let Kernel::Fused(id) = self.kernel {
            return crate::fused::entry(id).1;
        }
        // T is the compute type, ST the storage type of the elementwise skeletons
        let (t, st) = match self.dtype {
            KDType::F16 => ("f32", "f16"),
            d => (d.wgsl(), d.wgsl()),
        };
        let enable = if self.dtype == KDType::F16 { "enable f16;\n" } else { "" };
        let mut s = format!(
            "{enable}// generated: {}\nalias T = {t};\nalias ST = {st};\nconst WG: u32 = {WG}u;\n\
             const PARAMS_QUADS: u32 = {PARAMS_QUADS}u;\n",
            self.name()
        );
        if let Kernel::Cast(from, to) = self.kernel {
            // the f16 pack / unpack skeletons read and write u32 words themselves
            if from != KDType::F16 && to != KDType::F16 {
                s += &format!("alias S = {};\nalias D = {};\n", from.wgsl(), to.wgsl());
            }
        }
        s += COMMON;
        if let Some(accessors) = crate::params::accessors(self.kernel) {
            s += &accessors;
        }
        // a standalone family's bindings (the generated ones declare their own)
        if let Some(declarations) = crate::bindings::declarations(self.kernel) {
            s += &declarations;
        }
        let generated;
        let (skeleton, op_fn) = match self.kernel {
            Kernel::Unary(op) => (UNARY, format!("fn unary_op(x: T, s: T) -> T {{ {} }}", op.wgsl_body())),
            Kernel::UserUnary(id) => {
                let (name, body) = user_kernel(id);
                (UNARY, format!("// user kernel '{name}'\nfn unary_op(x: T, s: T) -> T {{\n{body}\n}}"))
            }
            Kernel::Binary(op) => (BINARY, format!("fn binary_op(a: T, b: T) -> T {{ {} }}", op.wgsl_body())),
            Kernel::UnaryVec4(op) => (UNARY_VEC4, format!("fn unary_op(x: T, s: T) -> T {{ {} }}", op.wgsl_body())),
            Kernel::UserUnaryVec4(id) => {
                let (name, body) = user_kernel(id);
                (UNARY_VEC4, format!("// user kernel '{name}'\nfn unary_op(x: T, s: T) -> T {{\n{body}\n}}"))
            }
            Kernel::BinaryVec4(op, am, bm) => (
                BINARY_VEC4,
                format!(
                    "const A_MODE: u32 = {}u;\nconst B_MODE: u32 = {}u;\nfn binary_op(a: T, b: T) -> T {{ {} }}",
                    am as u32,
                    bm as u32,
                    op.wgsl_body()
                ),
            ),
            Kernel::ReduceVec4(_) | Kernel::ReduceRowsVec4(_) | Kernel::Reduce(_) | Kernel::ReduceRows(_) => {
                let (skeleton, helpers) = reduction_parts(self.kernel);
                let io = if matches!(self.kernel, Kernel::ReduceVec4(_) | Kernel::ReduceRowsVec4(_)) {
                    REDUCE_VEC4_IO
                } else {
                    REDUCE_IO
                };
                (skeleton, format!("{helpers}\n{io}"))
            }
            Kernel::ArgReduce(op) => (ARGREDUCE, op.wgsl_body().to_string()),
            Kernel::Where => (WHERE, String::new()),
            Kernel::Copy => (COPY, String::new()),
            Kernel::Cast(KDType::F16, _) => (UNPACK_F16, String::new()),
            Kernel::Cast(_, KDType::F16) => (PACK_F16, String::new()),
            Kernel::Cast(..) => (CAST, String::new()),
            Kernel::Fill => (FILL, String::new()),
            Kernel::Pad => (PAD, String::new()),
            Kernel::Random => (RANDOM, RANDOM_IO.to_string()),
            Kernel::RandomFromState => (RANDOM, RANDOM_STATE_IO.to_string()),
            Kernel::RandomAdvance => (RANDOM_ADVANCE, String::new()),
            Kernel::OptimSchedule { clip: false } => (OPTIM_SCHEDULE, OPTIM_SCHEDULE_IO.to_string()),
            Kernel::OptimSchedule { clip: true } => (OPTIM_SCHEDULE, OPTIM_CLIP_IO.to_string()),
            Kernel::SumSquares(s) => {
                generated = s.wgsl();
                (generated.as_str(), String::new())
            }
            Kernel::Pack(p) => {
                generated = p.wgsl();
                (generated.as_str(), String::new())
            }
            Kernel::Matmul => (MATMUL, format!("{MATMUL_COMMON}\n{MATMUL_STORE}")),
            Kernel::MatmulReg => (MATMUL_REG, format!("{MATMUL_COMMON}\n{MATMUL_STORE}")),
            Kernel::MatmulVec4(v) => {
                generated = v.wgsl();
                // row-layout B stores whole vec4s; otherwise store_row's checked scalars
                let helpers =
                    if v.quad_store() { MATMUL_COMMON.to_string() } else { format!("{MATMUL_COMMON}\n{MATMUL_STORE}") };
                (generated.as_str(), helpers)
            }
            Kernel::IndexSelect => (INDEX_SELECT, String::new()),
            Kernel::Gather => (GATHER, String::new()),
            Kernel::OneHot => (ONE_HOT, String::new()),
            Kernel::Lu => (LU, String::new()),
            Kernel::LuSolve => (LU_SOLVE, String::new()),
            Kernel::Cholesky => (CHOLESKY, String::new()),
            Kernel::XentLoss => (XENT_LOSS, SOFTMAX_COMMON.to_string()),
            Kernel::SoftmaxRows => (SOFTMAX_ROWS, format!("{SOFTMAX_COMMON}\n{SOFTMAX_ROWS_IO}")),
            Kernel::SoftmaxVjp => (SOFTMAX_VJP, SOFTMAX_COMMON.to_string()),
            Kernel::LayerNorm => (LAYER_NORM, NORM_COMMON.to_string()),
            Kernel::LayerNormGrad => (LAYER_NORM_GRAD, NORM_COMMON.to_string()),
            Kernel::XentGrad => (XENT_GRAD, SOFTMAX_COMMON.to_string()),
            Kernel::MaxPool => (MAX_POOL, POOL_COMMON.to_string()),
            Kernel::MaxPoolGrad => (MAX_POOL_GRAD, POOL_COMMON.to_string()),
            Kernel::Im2Col => (IM2COL, String::new()),
            Kernel::Col2Im => (COL2IM, String::new()),
            Kernel::Fused(_) => unreachable!("returned above"),
            Kernel::MultiStep(m) => {
                generated = m.wgsl();
                let elem = if m.vec4 { "alias V = vec4<T>;" } else { "alias V = T;" };
                (generated.as_str(), format!("{elem}\n{OPTIM_UPDATE}"))
            }
        };
        s += "\n";
        s += &op_fn;
        s += "\n";
        s += skeleton;
        s
    }
}

/// The body of a matmul kernel that stores through `store_row`, without the bindings of C
/// and the params (a fused epilogue declares its outputs and `store_row` itself).
pub(crate) fn matmul_skeleton(kernel: Kernel) -> String {
    let body = match kernel {
        Kernel::Matmul => MATMUL.to_string(),
        Kernel::MatmulReg => MATMUL_REG.to_string(),
        Kernel::MatmulVec4(v) => v.body(false, false),
        k => unreachable!("{k:?} is not a matmul"),
    };
    body
}

/// A reduction kernel's skeleton and helpers: its combine op (plus `combine_quad` for the
/// vec4 skeletons) and, for the workgroup reductions, the closing tree.
fn reduction_parts(kernel: Kernel) -> (&'static str, String) {
    // lane-wise: the four running values of a vec4 reduction take the next quad
    const COMBINE_QUAD: &str = "fn combine_quad(v: vec4<T>, y: vec4<f32>) -> vec4<T> {\n\
        \x20   return vec4<T>(reduce_combine(v.x, T(y.x)), reduce_combine(v.y, T(y.y)), \
        reduce_combine(v.z, T(y.z)), reduce_combine(v.w, T(y.w)));\n}";
    match kernel {
        Kernel::ReduceVec4(op) => (REDUCE_VEC4, format!("{}\n{COMBINE_QUAD}\n{REDUCE_COMMON}", op.wgsl_body())),
        Kernel::ReduceRowsVec4(op) => (REDUCE_ROWS_VEC4, format!("{}\n{COMBINE_QUAD}", op.wgsl_body())),
        Kernel::Reduce(op) => (REDUCE, format!("{}\n{REDUCE_COMMON}", op.wgsl_body())),
        Kernel::ReduceRows(op) => (REDUCE_ROWS, op.wgsl_body().to_string()),
        k => unreachable!("{k:?} is not a reduction"),
    }
}

/// A prologue host's helpers (a reduction's combine op, the softmax row statistics) and
/// body, which declares neither its bindings nor its loads (`load_x` / `load_x4` /
/// `load_z`): a standalone kernel adds them from its `_io.wgsl`, a fused prologue
/// declares its own and computes the loads.
pub(crate) fn prologue_skeleton(kernel: Kernel) -> (String, String) {
    let (body, mut helpers) = match kernel {
        Kernel::SoftmaxRows => (SOFTMAX_ROWS, SOFTMAX_COMMON.to_string()),
        k => reduction_parts(k),
    };
    // the host's own params come first (the program's follow them)
    if let Some(accessors) = crate::params::accessors(kernel) {
        helpers = format!("{accessors}\n{helpers}");
    }
    (body.to_string(), helpers)
}

/// matmul_common.wgsl (the batch offsets every matmul kernel reads).
pub(crate) const MATMUL_HELPERS: &str = MATMUL_COMMON;

/// Every (kernel, dtype) pair the runtime may build: the naga test validates each.
pub fn all_kernels() -> Vec<KernelKey> {
    let f = KDType::F32;
    let mut v: Vec<KernelKey> = Vec::new();
    for dt in [f, KDType::F16] {
        v.extend(UnaryOp::ALL.iter().map(|&o| KernelKey::new(Kernel::Unary(o), dt)));
        v.extend(BinaryOp::ALL.iter().map(|&o| KernelKey::new(Kernel::Binary(o), dt)));
        v.push(KernelKey::new(Kernel::Where, dt));
    }
    v.extend(ReduceOp::ALL.iter().map(|&o| KernelKey::new(Kernel::Reduce(o), f)));
    v.extend(ReduceOp::ALL.iter().map(|&o| KernelKey::new(Kernel::ReduceVec4(o), f)));
    v.extend(ReduceOp::ALL.iter().map(|&o| KernelKey::new(Kernel::ReduceRowsVec4(o), f)));
    v.extend(UnaryOp::ALL.iter().map(|&o| KernelKey::new(Kernel::UnaryVec4(o), f)));
    for &o in BinaryOp::ALL {
        for am in Vec4Operand::ALL {
            for bm in Vec4Operand::ALL {
                v.push(KernelKey::new(Kernel::BinaryVec4(o, am, bm), f));
            }
        }
    }
    v.extend(ReduceOp::ALL.iter().map(|&o| KernelKey::new(Kernel::ReduceRows(o), f)));
    v.extend(ArgReduceOp::ALL.iter().map(|&o| KernelKey::new(Kernel::ArgReduce(o), f)));
    for k in [
        Kernel::Fill,
        Kernel::Random,
        Kernel::RandomFromState,
        Kernel::RandomAdvance,
        Kernel::OptimSchedule { clip: false },
        Kernel::OptimSchedule { clip: true },
        Kernel::SumSquares(crate::optim::SumSquares { tensors: 1 }),
        Kernel::SumSquares(crate::optim::SumSquares { tensors: 7 }),
        Kernel::Pack(crate::pack::Pack { sources: 0 }),
        Kernel::Pack(crate::pack::Pack { sources: 1 }),
        Kernel::Pack(crate::pack::Pack { sources: 7 }),
        Kernel::Matmul,
        Kernel::MatmulReg,
        Kernel::IndexSelect,
        Kernel::Gather,
        Kernel::OneHot,
        Kernel::Lu,
        Kernel::LuSolve,
        Kernel::Cholesky,
        Kernel::Im2Col,
        Kernel::Col2Im,
        Kernel::XentLoss,
        Kernel::XentGrad,
        Kernel::SoftmaxRows,
        Kernel::SoftmaxVjp,
        Kernel::LayerNorm,
        Kernel::LayerNormGrad,
        Kernel::MaxPool,
        Kernel::MaxPoolGrad,
    ] {
        v.push(KernelKey::new(k, f));
    }
    for kind in [crate::optim::MultiStepKind::Sgd, crate::optim::MultiStepKind::Adam] {
        for tensors in [1, 3, 16] {
            for vec4 in [false, true] {
                for dyn_hyper in [false, true] {
                    let m = crate::optim::MultiStep { kind, tensors, vec4, dyn_hyper };
                    v.push(KernelKey::new(Kernel::MultiStep(m), f));
                }
            }
        }
    }
    v.extend(crate::matmul_vec4::MatmulVec4::ALL.iter().map(|&m| KernelKey::new(Kernel::MatmulVec4(m), f)));
    let users = crate::op_tables::user_kernel_count();
    v.extend((0..users).map(|id| KernelKey::new(Kernel::UserUnary(id), f)));
    v.extend((0..users).map(|id| KernelKey::new(Kernel::UserUnaryVec4(id), f)));
    v.push(KernelKey::new(Kernel::Copy, KDType::F32));
    v.push(KernelKey::new(Kernel::Pad, KDType::F32));
    v.push(KernelKey::new(Kernel::Cast(KDType::U32, KDType::F32), f));
    v.push(KernelKey::new(Kernel::Cast(KDType::F32, KDType::U32), f));
    v.push(KernelKey::new(Kernel::Cast(KDType::F16, KDType::F32), f));
    v.push(KernelKey::new(Kernel::Cast(KDType::F32, KDType::F16), f));
    v
}

/// Parse and validate a WGSL module with naga, as the runtime would before compiling it.
pub fn validate_wgsl(source: &str) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string(source))?;
    Ok(())
}
