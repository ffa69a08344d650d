//! Launchers turn shapes and strides into params and a grid. This file: the elementwise,
//! copy, cast, fill and index launchers and the view helpers they share (reductions are
//! in `reduce.rs`, matmul in `matmul.rs`, training kernels in `nn.rs`). Every output is a
//! fresh contiguous buffer unless the launcher writes into a given one.

use crate::buffer::GpuBuffer;
use crate::context::Context;
use crate::error::{KResult, KernelError};
use crate::params::{
    dims, AdvanceParams, BinaryVec4Params, CopyParams, FillParams, IndexParams, LaunchParams, MapParams, OneHotParams,
    PadParams, RandomParams, UnaryVec4Params, WhereParams, ZipParams,
};
use crate::source::{BinaryOp, KDType, Kernel, KernelKey, UnaryOp, Vec4Operand};
use std::sync::Arc;

/// Highest rank the strided kernels accept.
/// The most iterations a kernel's loops may run per invocation: lavapipe kills a shader
/// loop past 65,535 iterations, so kernels whose threads walk a row (or an inner
/// dimension) are chosen only when the walk stays under this, with room to spare.
pub const LOOP_CAP: usize = 60_000;

pub const MAX_RANK: usize = 8;
/// Highest number of matmul batch dimensions.
pub const MAX_BATCH_RANK: usize = 6;

/// A strided view into a buffer, in elements.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub buffer: &'a GpuBuffer,
    pub offset: usize,
    pub strides: &'a [usize],
}

pub(crate) fn u32_of(v: usize, what: &str) -> KResult<u32> {
    u32::try_from(v).map_err(|_| KernelError::Unsupported(format!("{what} {v} does not fit in 32 bits")))
}

/// Launch words from sizes, offsets and strides, each checked to fit in 32 bits (`what`
/// names them in the error).
pub(crate) fn words<const N: usize>(values: [usize; N], what: &str) -> KResult<[u32; N]> {
    let mut out = [0u32; N];
    for (o, v) in out.iter_mut().zip(values) {
        *o = u32_of(v, what)?;
    }
    Ok(out)
}

/// A count bounded far below 2^32 by construction (a binding slot, a registry id, a rank,
/// tensors per dispatch): saturates instead of wrapping, so it can never alias a small
/// value.
pub(crate) fn small_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The (low, high) 32-bit words of a 64-bit launch value (a seed, a counter).
#[allow(clippy::cast_possible_truncation)] // the split is the point
pub(crate) fn lo_hi(v: u64) -> (u32, u32) {
    (v as u32, (v >> 32) as u32)
}

pub(crate) fn check_rank(shape: &[usize], kernel: &str) -> KResult<()> {
    if shape.len() > MAX_RANK {
        return Err(KernelError::Unsupported(format!("{kernel} of rank {} (at most {MAX_RANK})", shape.len())));
    }
    Ok(())
}

pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major contiguity, ignoring dims of size 1.
pub fn is_contiguous(shape: &[usize], strides: &[usize]) -> bool {
    let mut expect = 1;
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect *= d;
    }
    true
}

/// The launch params of a one-operand strided kernel: x viewed as `shape`.
fn map_params(shape: &[usize], x: &View, scalar: u32) -> KResult<MapParams> {
    Ok(MapParams {
        numel: u32_of(numel(shape), "element count")?,
        rank: small_u32(shape.len()),
        contiguous: is_contiguous(shape, x.strides) as u32,
        scalar,
        shape: dims(shape, "dimension")?,
        x_off: u32_of(x.offset, "offset")?,
        x_strides: dims(x.strides, "stride")?,
    })
}

/// The launch params of index_select and gather.
fn index_params(out_shape: &[usize], x: &View, idx: &View, axis: usize, dim_size: usize) -> KResult<IndexParams> {
    Ok(IndexParams {
        numel: u32_of(numel(out_shape), "element count")?,
        rank: small_u32(out_shape.len()),
        axis: small_u32(axis),
        dim_size: u32_of(dim_size, "dim")?,
        shape: dims(out_shape, "dimension")?,
        x_off: u32_of(x.offset, "offset")?,
        x_strides: dims(x.strides, "stride")?,
        idx_off: u32_of(idx.offset, "offset")?,
        idx_strides: dims(idx.strides, "stride")?,
    })
}

impl Context {
    pub(crate) fn out_f32(self: &Arc<Self>, n: usize) -> KResult<GpuBuffer> {
        self.alloc_output((n * 4) as u64)
    }

    /// An output of n elements of `dt` (f16: two per word).
    fn out_of(self: &Arc<Self>, dt: KDType, n: usize) -> KResult<GpuBuffer> {
        let bytes = if dt == KDType::F16 { n.div_ceil(2) * 4 } else { n * 4 };
        self.alloc_output(bytes as u64)
    }

    /// Whether the device runs kernels on f16 storage directly: the adapter has SHADER_F16
    /// and [`Context::set_native_f16`] did not force the fallback.
    pub fn supports_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16) && self.f16_native_allowed()
    }

    /// out = op(x, scalar), x a strided view of `shape`, stored as `dt` (f32, or f16 where
    /// [`Context::supports_f16`]) and computed in f32.
    pub fn unary(
        self: &Arc<Self>,
        op: UnaryOp,
        dt: KDType,
        scalar: f32,
        x: View,
        shape: &[usize],
    ) -> KResult<GpuBuffer> {
        self.map1(KernelKey::new(Kernel::Unary(op), dt), scalar, x, shape)
    }

    /// out = user_kernel(x, scalar) for a kernel from [`crate::register_user_unary`].
    pub fn user_unary(self: &Arc<Self>, id: u32, scalar: f32, x: View, shape: &[usize]) -> KResult<GpuBuffer> {
        self.map1(KernelKey::new(Kernel::UserUnary(id), KDType::F32), scalar, x, shape)
    }

    fn map1(self: &Arc<Self>, key: KernelKey, scalar: f32, x: View, shape: &[usize]) -> KResult<GpuBuffer> {
        let (shape, st) = coalesce(shape, &[x.strides]);
        let (shape, x) = (&shape[..], View { strides: &st[0], ..x });
        check_rank(shape, "unary")?;
        let n = numel(shape);
        if key.dtype == KDType::F32
            && n.is_multiple_of(4)
            && x.offset.is_multiple_of(4)
            && is_contiguous(shape, x.strides)
        {
            // whole quads: the vec4 skeleton
            let kernel = match key.kernel {
                Kernel::Unary(op) => Kernel::UnaryVec4(op),
                Kernel::UserUnary(id) => Kernel::UserUnaryVec4(id),
                k => k,
            };
            let key = KernelKey::new(kernel, KDType::F32);
            let out = self.out_f32(n)?;
            let [quads, x_off] = words([n / 4, x.offset / 4], "vec4 operand")?;
            let p = UnaryVec4Params { quads, x_off, scalar: scalar.to_bits() };
            // sized by elements, not quads: on lavapipe many short loops beat few long ones
            let grid = self.grid_stride(key, n as u64)?;
            self.dispatch(key, &[x.buffer], &[&out], p.words(), grid)?;
            return Ok(out);
        }
        let out = self.out_of(key.dtype, numel(shape))?;
        let p = map_params(shape, &x, scalar.to_bits())?;
        let grid = self.grid_stride(key, numel(shape) as u64)?;
        self.dispatch(key, &[x.buffer], &[&out], p.words(), grid)?;
        Ok(out)
    }

    /// out = op(a, b), both already broadcast to `shape` (stride 0 on broadcast dims),
    /// stored as `dt`.
    pub fn binary(self: &Arc<Self>, op: BinaryOp, dt: KDType, a: View, b: View, shape: &[usize]) -> KResult<GpuBuffer> {
        let (shape, st) = coalesce(shape, &[a.strides, b.strides]);
        let (shape, a, b) = (&shape[..], View { strides: &st[0], ..a }, View { strides: &st[1], ..b });
        check_rank(shape, "binary")?;
        let n = numel(shape);
        if dt == KDType::F32 && n.is_multiple_of(4) {
            if let (Some((am, ao, ap)), Some((bm, bo, bp))) = (vec4_operand(&a, shape), vec4_operand(&b, shape)) {
                let key = KernelKey::new(Kernel::BinaryVec4(op, am, bm), KDType::F32);
                let out = self.out_f32(n)?;
                let [quads, a_off, a_period, b_off, b_period] = words([n / 4, ao, ap, bo, bp], "vec4 operand")?;
                let p = BinaryVec4Params { quads, a_off, a_period, b_off, b_period };
                let grid = self.grid_stride(key, n as u64)?;
                self.dispatch(key, &[a.buffer, b.buffer], &[&out], p.words(), grid)?;
                return Ok(out);
            }
        }
        let key = KernelKey::new(Kernel::Binary(op), dt);
        let out = self.out_of(dt, numel(shape))?;
        let contiguous = is_contiguous(shape, a.strides) && is_contiguous(shape, b.strides);
        let p = ZipParams {
            numel: u32_of(numel(shape), "element count")?,
            rank: small_u32(shape.len()),
            contiguous: contiguous as u32,
            shape: dims(shape, "dimension")?,
            a_off: u32_of(a.offset, "offset")?,
            a_strides: dims(a.strides, "stride")?,
            b_off: u32_of(b.offset, "offset")?,
            b_strides: dims(b.strides, "stride")?,
        };
        let grid = self.grid_stride(key, numel(shape) as u64)?;
        self.dispatch(key, &[a.buffer, b.buffer], &[&out], p.words(), grid)?;
        Ok(out)
    }

    /// out = cond != 0 ? a : b, all broadcast to `shape` and stored as `dt`.
    pub fn where_(self: &Arc<Self>, dt: KDType, cond: View, a: View, b: View, shape: &[usize]) -> KResult<GpuBuffer> {
        let (shape, st) = coalesce(shape, &[cond.strides, a.strides, b.strides]);
        let (shape, cond, a, b) = (
            &shape[..],
            View { strides: &st[0], ..cond },
            View { strides: &st[1], ..a },
            View { strides: &st[2], ..b },
        );
        check_rank(shape, "where")?;
        let key = KernelKey::new(Kernel::Where, dt);
        let out = self.out_of(dt, numel(shape))?;
        let contiguous = [cond.strides, a.strides, b.strides].iter().all(|s| is_contiguous(shape, s));
        let p = WhereParams {
            numel: u32_of(numel(shape), "element count")?,
            rank: small_u32(shape.len()),
            contiguous: contiguous as u32,
            shape: dims(shape, "dimension")?,
            cond_off: u32_of(cond.offset, "offset")?,
            cond_strides: dims(cond.strides, "stride")?,
            a_off: u32_of(a.offset, "offset")?,
            a_strides: dims(a.strides, "stride")?,
            b_off: u32_of(b.offset, "offset")?,
            b_strides: dims(b.strides, "stride")?,
        };
        let grid = self.grid_1d(key, numel(shape) as u64)?;
        self.dispatch(key, &[cond.buffer, a.buffer, b.buffer], &[&out], p.words(), grid)?;
        Ok(out)
    }

    /// Copy the 4-byte elements of `src` into the strided region `dst` (both of `shape`).
    pub fn copy_into(self: &Arc<Self>, src: View, dst: View, shape: &[usize]) -> KResult<()> {
        let (shape, st) = coalesce(shape, &[src.strides, dst.strides]);
        let (shape, src, dst) = (&shape[..], View { strides: &st[0], ..src }, View { strides: &st[1], ..dst });
        check_rank(shape, "copy")?;
        let key = KernelKey::new(Kernel::Copy, KDType::F32);
        let p = CopyParams {
            numel: u32_of(numel(shape), "element count")?,
            rank: small_u32(shape.len()),
            shape: dims(shape, "dimension")?,
            src_off: u32_of(src.offset, "offset")?,
            src_strides: dims(src.strides, "stride")?,
            dst_off: u32_of(dst.offset, "offset")?,
            dst_strides: dims(dst.strides, "stride")?,
        };
        let grid = self.grid_stride(key, numel(shape) as u64)?;
        self.dispatch(key, &[src.buffer], &[dst.buffer], p.words(), grid)
    }

    /// `src` (contiguous words from `src_offset`, shape [outer, len, inner]) placed in the
    /// window [start, start + len) of the middle axis of a fresh zero buffer [outer, full,
    /// inner]: one launch.
    pub fn pad(
        self: &Arc<Self>,
        src: &GpuBuffer,
        src_offset: usize,
        [outer, full, inner]: [usize; 3],
        start: usize,
        len: usize,
    ) -> KResult<GpuBuffer> {
        let n = outer * full * inner;
        let out = self.out_f32(n)?;
        let key = KernelKey::new(Kernel::Pad, KDType::F32);
        let [numel, full, inner, start, len, src_off] = words([n, full, inner, start, len, src_offset], "pad size")?;
        let p = PadParams { numel, full, inner, start, len, src_off };
        let grid = self.grid_stride(key, n as u64)?;
        self.dispatch(key, &[src], &[&out], p.words(), grid)?;
        Ok(out)
    }

    /// A contiguous copy of a strided view.
    pub fn contiguous(self: &Arc<Self>, src: View, shape: &[usize]) -> KResult<GpuBuffer> {
        let out = self.out_f32(numel(shape))?;
        let strides = row_major_strides(shape);
        self.copy_into(src, View { buffer: &out, offset: 0, strides: &strides }, shape)?;
        Ok(out)
    }

    /// Dtype conversion between f32 and u32, and between f16 storage and f32.
    pub fn cast(self: &Arc<Self>, from: KDType, to: KDType, x: View, shape: &[usize]) -> KResult<GpuBuffer> {
        let (shape, st) = coalesce(shape, &[x.strides]);
        let (shape, x) = (&shape[..], View { strides: &st[0], ..x });
        check_rank(shape, "cast")?;
        let key = KernelKey::new(Kernel::Cast(from, to), KDType::F32);
        let n = numel(shape);
        let (out, threads) = if to == KDType::F16 {
            (self.alloc_output((n.div_ceil(2) * 4) as u64)?, n.div_ceil(2))
        } else {
            (self.out_f32(n)?, n)
        };
        let p = map_params(shape, &x, 0)?;
        let grid = self.grid_1d(key, threads as u64)?;
        self.dispatch(key, &[x.buffer], &[&out], p.words(), grid)?;
        Ok(out)
    }

    /// A buffer of `n` copies of `value`.
    pub fn fill(self: &Arc<Self>, n: usize, value: f32) -> KResult<GpuBuffer> {
        let key = KernelKey::new(Kernel::Fill, KDType::F32);
        let out = self.alloc_output((n * 4) as u64)?;
        let p = FillParams { numel: u32_of(n, "element count")?, value: value.to_bits() };
        let grid = self.grid_stride(key, n as u64)?;
        self.dispatch(key, &[], &[&out], p.words(), grid)?;
        Ok(out)
    }

    /// `n` f32 samples of Philox 4x32-10 keyed by `seed` at counter offset `offset`:
    /// uniform in [low, high), or standard normal (see shaders/random.wgsl).
    pub fn random(
        self: &Arc<Self>,
        n: usize,
        seed: u64,
        offset: u64,
        normal: bool,
        low: f32,
        high: f32,
    ) -> KResult<GpuBuffer> {
        let key = KernelKey::new(Kernel::Random, KDType::F32);
        let out = self.alloc_output((n * 4) as u64)?;
        let ((seed_lo, seed_hi), (offset_lo, offset_hi)) = (lo_hi(seed), lo_hi(offset));
        let p = RandomParams {
            numel: u32_of(n, "element count")?,
            seed_lo,
            seed_hi,
            offset_lo,
            offset_hi,
            normal: normal as u32,
            low: low.to_bits(),
            high: high.to_bits(),
        };
        let grid = self.grid_stride(key, n as u64)?;
        self.dispatch(key, &[], &[&out], p.words(), grid)?;
        Ok(out)
    }

    /// `n` f32 samples keyed by a generator snapshot on the device (`[seed_lo, seed_hi,
    /// offset_lo, offset_hi]`, from [`Context::random_advance`]).
    pub fn random_from_state(
        self: &Arc<Self>,
        n: usize,
        snapshot: &GpuBuffer,
        normal: bool,
        low: f32,
        high: f32,
    ) -> KResult<GpuBuffer> {
        let key = KernelKey::new(Kernel::RandomFromState, KDType::F32);
        let out = self.alloc_output((n * 4) as u64)?;
        let mut p = RandomParams::zeroed();
        (p.numel, p.normal, p.low, p.high) =
            (u32_of(n, "element count")?, normal as u32, low.to_bits(), high.to_bits());
        let grid = self.grid_stride(key, n as u64)?;
        self.dispatch(key, &[snapshot], &[&out], p.words(), grid)?;
        Ok(out)
    }

    /// A snapshot of the device-side generator `state` (four words), after which `state`'s
    /// offset is advanced by `blocks`.
    pub fn random_advance(self: &Arc<Self>, state: &GpuBuffer, blocks: u64) -> KResult<GpuBuffer> {
        let key = KernelKey::new(Kernel::RandomAdvance, KDType::F32);
        let snapshot = self.alloc_output(16)?;
        let (blocks_lo, blocks_hi) = lo_hi(blocks);
        self.dispatch(key, &[], &[state, &snapshot], AdvanceParams { blocks_lo, blocks_hi }.words(), (1, 1, 1))?;
        Ok(snapshot)
    }

    /// A buffer of `n` zero words (0u32 has the bits of 0.0f32).
    pub fn zeros_u32(self: &Arc<Self>, n: usize) -> KResult<GpuBuffer> {
        self.fill(n, 0.0)
    }

    /// x.index_select(axis, idx): `out_shape` is x's shape with `axis` replaced by idx's length.
    pub fn index_select(
        self: &Arc<Self>,
        x: View,
        idx: View,
        out_shape: &[usize],
        axis: usize,
        dim_size: usize,
    ) -> KResult<GpuBuffer> {
        check_rank(out_shape, "index_select")?;
        let key = KernelKey::new(Kernel::IndexSelect, KDType::F32);
        let out = self.out_f32(numel(out_shape))?;
        let p = index_params(out_shape, &x, &idx, axis, dim_size)?;
        let grid = self.grid_1d(key, numel(out_shape) as u64)?;
        self.dispatch(key, &[x.buffer, idx.buffer], &[&out], p.words(), grid)?;
        Ok(out)
    }

    /// torch.gather(x, axis, idx): out has idx's shape (`out_shape`).
    pub fn gather(
        self: &Arc<Self>,
        x: View,
        idx: View,
        out_shape: &[usize],
        axis: usize,
        dim_size: usize,
    ) -> KResult<GpuBuffer> {
        check_rank(out_shape, "gather")?;
        let key = KernelKey::new(Kernel::Gather, KDType::F32);
        let out = self.out_f32(numel(out_shape))?;
        let p = index_params(out_shape, &x, &idx, axis, dim_size)?;
        let grid = self.grid_1d(key, numel(out_shape) as u64)?;
        self.dispatch(key, &[x.buffer, idx.buffer], &[&out], p.words(), grid)?;
        Ok(out)
    }

    /// one_hot(idx, classes): [idx.shape.., classes] of 0/1.
    pub fn one_hot(self: &Arc<Self>, idx: View, idx_shape: &[usize], classes: usize) -> KResult<GpuBuffer> {
        check_rank(idx_shape, "one_hot")?;
        let key = KernelKey::new(Kernel::OneHot, KDType::F32);
        let n = numel(idx_shape) * classes;
        let out = self.out_f32(n)?;
        let p = OneHotParams {
            numel: u32_of(n, "element count")?,
            rank: small_u32(idx_shape.len()),
            classes: u32_of(classes, "classes")?,
            shape: dims(idx_shape, "dimension")?,
            idx_off: u32_of(idx.offset, "offset")?,
            idx_strides: dims(idx.strides, "stride")?,
        };
        let grid = self.grid_1d(key, n as u64)?;
        self.dispatch(key, &[idx.buffer], &[&out], p.words(), grid)?;
        Ok(out)
    }
}

/// Row-major strides of a shape.
pub fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc *= shape[i];
    }
    s
}

/// How a binary input maps onto the output's quads, with its offset (quads, or elements
/// for a splat) and period (quads): None when it cannot be read as whole vec4s.
fn vec4_operand(v: &View, shape: &[usize]) -> Option<(Vec4Operand, usize, usize)> {
    // bound as array<vec4<f32>>: a (host-wrapped) buffer under 16 bytes cannot be
    if v.buffer.capacity() < 16 {
        return None;
    }
    if v.strides.iter().zip(shape).all(|(&s, &d)| s == 0 || d == 1) {
        return Some((Vec4Operand::Splat, v.offset, 1));
    }
    if !v.offset.is_multiple_of(4) {
        return None;
    }
    if is_contiguous(shape, v.strides) {
        return Some((Vec4Operand::Full, v.offset / 4, 1));
    }
    // leading broadcast dims (stride 0), then a contiguous block of whole quads
    let lead = v.strides.iter().zip(shape).take_while(|(&s, &d)| s == 0 || d == 1).count();
    let block = numel(&shape[lead..]);
    (block.is_multiple_of(4) && is_contiguous(&shape[lead..], &v.strides[lead..])).then_some((
        Vec4Operand::Repeat,
        v.offset / 4,
        block / 4,
    ))
}

/// Merge adjacent dims that every view walks as one (stride[d] == stride[d+1] * shape[d+1]
/// in all of them) and drop dims of size 1: the same elements in the same row-major order,
/// with fewer dims for the strided kernels to decompose and longer last-dim runs (e.g. a
/// permuted [B, O, H, W] conv output becomes [B, O, H*W]; a contiguous view, rank 1).
pub(crate) fn coalesce(shape: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    if shape.contains(&0) {
        return (shape.to_vec(), strides.iter().map(|s| s.to_vec()).collect());
    }
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out: Vec<Vec<usize>> = vec![Vec::with_capacity(shape.len()); strides.len()];
    // walk from the last dim; the front of the output is built in reverse
    for d in (0..shape.len()).rev() {
        if shape[d] == 1 {
            continue;
        }
        let merge = out_shape.last().is_some_and(|&inner| {
            strides.iter().zip(&out).all(|(s, o)| s[d] == o.last().expect("same length") * inner)
        });
        if merge {
            *out_shape.last_mut().expect("checked") *= shape[d];
        } else {
            out_shape.push(shape[d]);
            for (s, o) in strides.iter().zip(out.iter_mut()) {
                o.push(s[d]);
            }
        }
    }
    out_shape.reverse();
    out.iter_mut().for_each(|o| o.reverse());
    (out_shape, out)
}
