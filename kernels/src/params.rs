//! Launch params, declared once per kernel family: [`launch_params!`] makes a `#[repr(C)]`
//! Pod struct of u32 words (scalars and fixed-size arrays) and, from the same declaration,
//! the WGSL its shaders read them by: for each field a `const P_<FIELD>: u32` (its first
//! word) and an accessor, `fn p_<field>() -> u32` for a scalar or `fn p_<field>(i: u32) ->
//! u32` for an array. Launchers fill the struct by name; shaders read by name; the word
//! layout exists in one place. (The generated fused kernels, whose leaves are many and
//! variable, lay out their words in one generator: `fused_param_words`.)
use crate::source::Kernel;

/// A family's launch params: its words as the dispatch uploads them, and the WGSL
/// accessors of its declaration.
pub(crate) trait LaunchParams: bytemuck::Pod {
    fn wgsl() -> String;
    fn words(&self) -> &[u32] {
        bytemuck::cast_slice(std::slice::from_ref(self))
    }
}

/// `launch_params!(Name { field, array[len], .. })`: the struct and its [`LaunchParams`].
macro_rules! launch_params {
    ($(#[$meta:meta])* $name:ident { $($field:ident $([$len:expr])?),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name {
            $(pub $field: launch_params!(@ty $($len)?),)*
        }
        impl $name {
            /// All words zero (fields are then set by name).
            #[allow(dead_code)]
            pub(crate) fn zeroed() -> Self {
                bytemuck::Zeroable::zeroed()
            }
        }
        impl LaunchParams for $name {
            fn wgsl() -> String {
                let mut s = format!("// launch params: {} (kernels/src/params.rs)\n", stringify!($name));
                $(launch_params!(@accessor s, $name, $field $(, $len)?);)*
                s
            }
        }
    };
    (@ty) => { u32 };
    (@ty $len:expr) => { [u32; $len] };
    (@accessor $s:ident, $name:ident, $field:ident) => {{
        let at = std::mem::offset_of!($name, $field) / 4;
        let f = stringify!($field);
        $s += &format!("const P_{}: u32 = {at}u;\nfn p_{f}() -> u32 {{ return param({at}u); }}\n", f.to_uppercase());
    }};
    (@accessor $s:ident, $name:ident, $field:ident, $len:expr) => {{
        let at = std::mem::offset_of!($name, $field) / 4;
        let f = stringify!($field);
        $s += &format!(
            "const P_{}: u32 = {at}u;\nfn p_{f}(i: u32) -> u32 {{ return param({at}u + i); }}\n",
            f.to_uppercase()
        );
    }};
}

/// Tensors one multi-tensor launch takes at most (its per-tensor arrays).
pub(crate) const MAX_TENSORS: usize = 16;

launch_params!(
    /// fill.wgsl: `numel` words set to `value` (f32 bits).
    FillParams { numel, value }
);
launch_params!(
    /// pad.wgsl: the source [outer, len, inner] at `src_off` in a zero window of `full`
    /// along its axis, from `start`.
    PadParams { numel, full, inner, start, len, src_off }
);
launch_params!(
    /// random.wgsl: `numel` Philox samples keyed by (seed, offset), normal or uniform in
    /// [low, high) (f32 bits); random_state_io.wgsl reads the key from a state instead.
    RandomParams { numel, seed_lo, seed_hi, offset_lo, offset_hi, normal, low, high }
);
launch_params!(
    /// random_advance.wgsl: advance a generator state by `blocks`.
    AdvanceParams { blocks_lo, blocks_hi }
);
launch_params!(
    /// optim_schedule.wgsl: the schedule's `kind` and its values [lr, 1 - b1, 1 - b2, a,
    /// b, c, d] (f32 bits); with a clip (optim_clip_io.wgsl) `max_norm` (f32 bits) and the
    /// number of partial sums.
    ScheduleParams { kind, values[7], max_norm, partials }
);
launch_params!(
    /// lu.wgsl, cholesky.wgsl: factorization steps [k_begin, k_end) of `batch` n x n
    /// matrices.
    FactorParams { n, batch, k_begin, k_end }
);
launch_params!(
    /// lu_solve.wgsl: rows [i_begin, i_end) of `phase` (0 permute, 1 forward, 2 backward)
    /// for `batch` systems of n rows and `nrhs` right-hand sides.
    SolveParams { n, nrhs, batch, phase, i_begin, i_end }
);
launch_params!(
    /// softmax_rows.wgsl: `outer` rows of `n` at `z_off`.
    RowsParams { outer, n, z_off }
);
launch_params!(
    /// softmax_vjp.wgsl: `rows` rows of `n`; `g_off` u32::MAX when there is no g; `k`
    /// (f32 bits) the scale.
    SoftmaxVjpParams { rows, n, z_off, v_off, g_off, k }
);
launch_params!(
    /// layer_norm.wgsl, layer_norm_grad.wgsl: `rows` rows of `n`; the third buffer is the
    /// bias (forward) or the cotangent (gradient); `flags` weight | bias << 1 | rms << 2;
    /// `eps` f32 bits.
    NormParams { rows, n, x_off, w_off, third_off, flags, eps }
);
launch_params!(
    /// xent_loss.wgsl, xent_grad.wgsl: logits [b, c] at `z_off`, labels at `labels_off`,
    /// the scalar cotangent at `g_off` (gradient only).
    XentParams { b, c, z_off, labels_off, g_off }
);
launch_params!(
    /// max_pool.wgsl, max_pool_grad.wgsl: k x k windows of x [B, C, H, W] (strides
    /// [b, c, h, w]) into [B, C, OH, OW]; the gradient also reads the pooled values and g.
    PoolParams { numel_out, channels, out_h, out_w, k, x_off, x_strides[4], numel_in, pooled_off, g_off }
);
launch_params!(
    /// im2col.wgsl, col2im.wgsl: the convolution's geometry; the strided operand at `off`
    /// (images: strides [b, c, h, w]; columns: [batch, row, location] in strides[0..3]).
    ConvParams {
        numel, channels, height, width, kernel_h, kernel_w, stride, padding, out_h, out_w, off, strides[4], batch
    }
);
launch_params!(
    /// unary_vec4.wgsl: `quads` vec4s of x from quad `x_off`; `scalar` f32 bits.
    UnaryVec4Params { quads, x_off, scalar }
);
launch_params!(
    /// binary_vec4.wgsl: `quads` vec4s; each operand from its offset, repeating every
    /// `period` quads (Repeat) or one element (Splat).
    BinaryVec4Params { quads, a_off, a_period, b_off, b_period }
);
launch_params!(
    /// reduce_vec4.wgsl, reduce_rows_vec4.wgsl: `outer` rows of `inner` contiguous
    /// elements from `off`, in `nchunks` chunks of `chunk_len`.
    ReduceVec4Params { outer, inner, nchunks, chunk_len, off }
);
launch_params!(
    /// MultiStep (kernels/src/optim.rs): `total` elements (or quads) of the concatenation;
    /// `hyper` the optimizer's values (f32 bits); tensor t starts at `starts[t]` and its
    /// first `decayed[t]` get weight decay.
    MultiStepParams { total, hyper[8], decoupled, starts[MAX_TENSORS], decayed[MAX_TENSORS] }
);
launch_params!(
    /// SumSquares (kernels/src/optim.rs): `total` elements of the concatenation, partial
    /// sums written from `out_at`; tensor t starts at `starts[t]`.
    SumSquaresParams { total, out_at, starts[MAX_TENSORS] }
);
launch_params!(
    /// Pack (kernels/src/pack.rs): output elements [base, base + count); source t's window
    /// starts at `starts[t]` (relative to base) with `lens[t]` elements read from
    /// `offsets[t]` of its buffer.
    PackParams { count, base, starts[MAX_TENSORS], lens[MAX_TENSORS], offsets[MAX_TENSORS] }
);

/// The WGSL accessors of a kernel's launch params, where its family declares them.
pub(crate) fn accessors(kernel: Kernel) -> Option<String> {
    Some(match kernel {
        Kernel::Fill => FillParams::wgsl(),
        Kernel::Pad => PadParams::wgsl(),
        Kernel::Random | Kernel::RandomFromState => RandomParams::wgsl(),
        Kernel::RandomAdvance => AdvanceParams::wgsl(),
        Kernel::OptimSchedule { .. } => ScheduleParams::wgsl(),
        Kernel::Lu | Kernel::Cholesky => FactorParams::wgsl(),
        Kernel::LuSolve => SolveParams::wgsl(),
        Kernel::SoftmaxRows => RowsParams::wgsl(),
        Kernel::SoftmaxVjp => SoftmaxVjpParams::wgsl(),
        Kernel::LayerNorm | Kernel::LayerNormGrad => NormParams::wgsl(),
        Kernel::XentLoss | Kernel::XentGrad => XentParams::wgsl(),
        Kernel::MaxPool | Kernel::MaxPoolGrad => PoolParams::wgsl(),
        Kernel::Im2Col | Kernel::Col2Im => ConvParams::wgsl(),
        Kernel::UnaryVec4(_) | Kernel::UserUnaryVec4(_) => UnaryVec4Params::wgsl(),
        Kernel::BinaryVec4(..) => BinaryVec4Params::wgsl(),
        Kernel::ReduceVec4(_) | Kernel::ReduceRowsVec4(_) => ReduceVec4Params::wgsl(),
        Kernel::MultiStep(_) => MultiStepParams::wgsl(),
        Kernel::SumSquares(_) => SumSquaresParams::wgsl(),
        Kernel::Pack(_) => PackParams::wgsl(),
        k => return strided_accessors(k),
    })
}

// The strided families: a shape and views (an offset and strides) of up to MAX_RANK dims,
// each in a fixed run of words (dims past the rank are 0). Their shaders walk views with
// common.wgsl's helpers, which take a field's first word: strided_offset(i, rank, P_SHAPE,
// P_X_STRIDES, p_x_off()), stride_back(P_X_STRIDES, rank, 1u), walk_start(i, rank, P_SHAPE).
const R: usize = crate::launch::MAX_RANK;

launch_params!(
    /// unary.wgsl, cast.wgsl, pack_f16.wgsl, unpack_f16.wgsl: x viewed as `shape`;
    /// `contiguous` 1 when it is dense; `scalar` the op's scalar (f32 bits).
    MapParams { numel, rank, contiguous, scalar, shape[R], x_off, x_strides[R] }
);
launch_params!(
    /// binary.wgsl: a and b viewed as the output's `shape` (stride 0 on broadcast dims).
    ZipParams { numel, rank, contiguous, shape[R], a_off, a_strides[R], b_off, b_strides[R] }
);
launch_params!(
    /// where.wgsl: cond, a and b viewed as the output's `shape`.
    WhereParams {
        numel, rank, contiguous, shape[R], cond_off, cond_strides[R], a_off, a_strides[R], b_off, b_strides[R]
    }
);
launch_params!(
    /// copy.wgsl: src copied into the strided region dst, both viewed as `shape`.
    CopyParams { numel, rank, shape[R], src_off, src_strides[R], dst_off, dst_strides[R] }
);
launch_params!(
    /// index_select.wgsl, gather.wgsl: the output's `shape`; x's view, the indices' view
    /// (index_select: a vector, idx_strides[0]); `axis` and its size in x, `dim_size`.
    IndexParams { numel, rank, axis, dim_size, shape[R], x_off, x_strides[R], idx_off, idx_strides[R] }
);
launch_params!(
    /// one_hot.wgsl: `numel` = indices x `classes` outputs; the indices viewed as `shape`.
    OneHotParams { numel, rank, classes, shape[R], idx_off, idx_strides[R] }
);

/// The strided families' accessors.
pub(crate) fn strided_accessors(kernel: Kernel) -> Option<String> {
    Some(match kernel {
        Kernel::Unary(_) | Kernel::UserUnary(_) | Kernel::Cast(..) => MapParams::wgsl(),
        Kernel::Binary(_) => ZipParams::wgsl(),
        Kernel::Where => WhereParams::wgsl(),
        Kernel::Copy => CopyParams::wgsl(),
        Kernel::IndexSelect | Kernel::Gather => IndexParams::wgsl(),
        Kernel::OneHot => OneHotParams::wgsl(),
        Kernel::Reduce(_) | Kernel::ReduceRows(_) | Kernel::ArgReduce(_) => ReduceParams::wgsl(),
        Kernel::Matmul | Kernel::MatmulReg | Kernel::MatmulVec4(_) => MatmulParams::wgsl(),
        _ => return None,
    })
}

/// `values` in a field of MAX_RANK words (the rest 0), each checked to fit in 32 bits.
pub(crate) fn dims(values: &[usize], what: &str) -> crate::error::KResult<[u32; R]> {
    if values.len() > R {
        return Err(crate::error::KernelError::Unsupported(format!("{what}s of rank {} (at most {R})", values.len())));
    }
    let mut out = [0u32; R];
    for (o, &v) in out.iter_mut().zip(values) {
        *o = crate::launch::u32_of(v, what)?;
    }
    Ok(out)
}

launch_params!(
    /// reduce.wgsl, reduce_rows.wgsl, argreduce.wgsl: `outer` rows of `inner` reduced
    /// elements of x viewed as `shape` (reduced dims last), in `nchunks` chunks of
    /// `chunk_len`; `mode` 1 contiguous, 2 two-level (element (row, r) at off + row *
    /// row_stride + r * elem_stride), 0 general strided.
    ReduceParams {
        outer, inner, nchunks, chunk_len, rank, shape[R], off, strides[R], mode, row_stride, elem_stride
    }
);

/// Batch dims a product takes at most (as `launch::MAX_BATCH_RANK`).
const B: usize = crate::launch::MAX_BATCH_RANK;

launch_params!(
    /// The matmul kernels (matmul.wgsl, matmul_reg.wgsl, the vec4 variants, and the fused
    /// epilogues, whose program's params follow from EPILOGUE_PARAMS): C [m, n] = A [m, k]
    /// B [k, n] per batch; A's row and column strides `a_rs`, `a_cs` from `a_off` (B's
    /// alike); batches from `batch_base` (z of the grid added) over `batch_shape` with each
    /// operand's batch strides (matmul_common.wgsl's `batch_bases`).
    MatmulParams {
        m, n, k, batch_rank, batch_base, a_off, a_rs, a_cs, b_off, b_rs, b_cs,
        batch_shape[B], a_batch_strides[B], b_batch_strides[B]
    }
);

/// The accessors of the matmul kernels' params (for the fused epilogues' generator).
pub(crate) fn matmul_accessors() -> String {
    MatmulParams::wgsl()
}
