//! Launchers of the reductions: sum / max / min over the trailing dims of a strided view
//! (workgroup per chunk, thread per row or column, vec4 where the layout allows) and
//! argmax / argmin.
use crate::buffer::GpuBuffer;
use crate::context::Context;
use crate::error::KResult;
use crate::fused::Epilogue;
use crate::launch::{check_rank, coalesce, is_contiguous, numel, View};
use crate::params::{dims, LaunchParams, ReduceParams, ReduceVec4Params};
use crate::source::{ArgReduceOp, KDType, Kernel, KernelKey, ReduceOp};
use std::sync::Arc;

impl Context {
    fn reduce_params(
        x: &XSrc,
        shape: &[usize],
        split: usize,
        outer: usize,
        inner: usize,
        nchunks: usize,
        chunk: usize,
    ) -> KResult<Vec<u32>> {
        let [outer, inner, nchunks, chunk_len, off] =
            crate::launch::words([outer, inner, nchunks, chunk, x.offset], "reduction size")?;
        let mut p = ReduceParams {
            outer,
            inner,
            nchunks,
            chunk_len,
            rank: crate::launch::small_u32(shape.len()),
            shape: dims(shape, "dimension")?,
            off,
            strides: dims(x.strides, "stride")?,
            mode: 0,
            row_stride: 0,
            elem_stride: 0,
        };
        // mode: 1 contiguous; 2 two-level (element (row, r) at off + row * so + r * si,
        // no per-element index arithmetic over the dims); 0 general strided
        match (is_contiguous(shape, x.strides), two_level_strides(shape, x.strides, split)) {
            (true, _) => p.mode = 1,
            (false, Some((so, si))) => {
                p.mode = 2;
                [p.row_stride, p.elem_stride] = crate::launch::words([so, si], "stride")?;
            }
            (false, None) => p.mode = 0,
        }
        Ok(p.words().to_vec())
    }

    /// Reduce the last `n_reduced` dims of the strided view: returns `outer` values.
    /// Long rows are split into chunks reduced in a second pass (fixed order: deterministic).
    pub fn reduce(self: &Arc<Self>, op: ReduceOp, x: View, shape: &[usize], n_reduced: usize) -> KResult<GpuBuffer> {
        let src = XSrc { buffer: Some(x.buffer), offset: x.offset, strides: x.strides, prologue: None };
        Ok(self.reduce_with(op, src, shape, n_reduced)?.0)
    }

    /// A reduction whose input is computed as it is loaded: `prologue` is an elementwise
    /// program over its own (contiguous, row-major) shape; `strides` and `shape` say how
    /// the reduction walks that value (the reduced dims last). Returns the reduction and
    /// a buffer for each of the prologue's outputs after the first (values something else
    /// reads, written where they are loaded).
    pub fn reduce_fused(
        self: &Arc<Self>,
        op: ReduceOp,
        strides: &[usize],
        shape: &[usize],
        n_reduced: usize,
        prologue: &Epilogue,
    ) -> KResult<(GpuBuffer, Vec<GpuBuffer>)> {
        let src = XSrc { buffer: None, offset: 0, strides, prologue: Some(prologue) };
        self.reduce_with(op, src, shape, n_reduced)
    }

    /// One reduction pass's dispatch, loading x from its buffer or through the prologue.
    fn reduce_dispatch(
        self: &Arc<Self>,
        key: KernelKey,
        x: &XSrc,
        out: &GpuBuffer,
        p: Vec<u32>,
        grid: (u32, u32, u32),
    ) -> KResult<Vec<GpuBuffer>> {
        let Some(pro) = x.prologue else {
            self.dispatch(key, &[x.buffer.expect("a plain reduction reads a buffer")], &[out], &p, grid)?;
            return Ok(Vec::new());
        };
        self.dispatch_prologue(key.kernel, pro, p, out, grid)
    }

    fn reduce_with(
        self: &Arc<Self>,
        op: ReduceOp,
        x: XSrc,
        shape: &[usize],
        n_reduced: usize,
    ) -> KResult<(GpuBuffer, Vec<GpuBuffer>)> {
        // merge dims within the kept part and within the reduced part (never across)
        let cut = shape.len() - n_reduced;
        let (kept, ks) = coalesce(&shape[..cut], &[&x.strides[..cut]]);
        let (red, rs) = coalesce(&shape[cut..], &[&x.strides[cut..]]);
        let merged_shape: Vec<usize> = kept.iter().chain(&red).copied().collect();
        let merged_strides: Vec<usize> = ks[0].iter().chain(&rs[0]).copied().collect();
        let (shape, n_reduced, x) = (&merged_shape[..], red.len(), XSrc { strides: &merged_strides, ..x });
        check_rank(shape, "reduce")?;
        let split = shape.len() - n_reduced;
        let outer = numel(&shape[..split]);
        let inner = numel(&shape[split..]);
        let vec4 = inner.is_multiple_of(4) && x.offset.is_multiple_of(4) && is_contiguous(shape, x.strides);
        if vec4 && self.is_cpu_adapter() && outer >= 256 && (8..=1 << 17).contains(&inner) {
            // many contiguous rows on a CPU adapter: a thread per row, vec4 loads (at most
            // 2^15 of them per thread, under lavapipe's 65,535-iteration cap)
            let key = KernelKey::new(Kernel::ReduceRowsVec4(op), KDType::F32);
            let out = self.out_f32(outer)?;
            let p = vec4_params(outer, inner, 1, inner, x.offset)?;
            let grid = self.grid_1d(key, outer as u64)?;
            let extras = self.reduce_dispatch(key, &x, &out, p.words().to_vec(), grid)?;
            return Ok((out, extras));
        }
        // Many short rows: a thread per row beats a mostly idle workgroup per row; so do
        // columns (reduced elements apart in memory, outputs adjacent: e.g. a bias
        // gradient summed over the batch), where neighbouring threads read neighbours.
        let columns = matches!(two_level_strides(shape, x.strides, split), Some((1, si)) if si != 1);
        if inner <= 16 || (outer >= 4096 && inner <= 1024) || (columns && inner <= 4096) {
            let key = KernelKey::new(Kernel::ReduceRows(op), KDType::F32);
            let out = self.out_f32(outer)?;
            let p = Self::reduce_params(&x, shape, split, outer, inner, 1, inner.max(1))?;
            let grid = self.grid_1d(key, outer as u64)?;
            let extras = self.reduce_dispatch(key, &x, &out, p, grid)?;
            return Ok((out, extras));
        }
        let key = KernelKey::new(if vec4 { Kernel::ReduceVec4(op) } else { Kernel::Reduce(op) }, KDType::F32);
        // elements per workgroup: on CPU adapters each workgroup's closing tree (barriers
        // are coroutine switches in lavapipe) costs more than a GPU's, so chunks are longer
        let chunk_len: usize = if vec4 && self.is_cpu_adapter() { 256 * 1024 } else { 16 * 1024 };
        let nchunks = if inner > chunk_len { inner.div_ceil(chunk_len) } else { 1 };
        let chunk = if nchunks > 1 { chunk_len } else { inner.max(1) };
        let out = self.out_f32(outer * nchunks)?;
        let p = if vec4 {
            vec4_params(outer, inner, nchunks, chunk, x.offset)?.words().to_vec()
        } else {
            Self::reduce_params(&x, shape, split, outer, inner, nchunks, chunk)?
        };
        let grid = self.grid_groups(key, (outer * nchunks) as u64)?;
        let extras = self.reduce_dispatch(key, &x, &out, p, grid)?;
        if nchunks == 1 {
            return Ok((out, extras));
        }
        let strides = [nchunks, 1];
        let partial = View { buffer: &out, offset: 0, strides: &strides };
        Ok((self.reduce(op, partial, &[outer, nchunks], 1)?, extras))
    }

    /// argmax / argmin over the last dim of the strided view: `outer` u32 indices.
    pub fn arg_reduce(self: &Arc<Self>, op: ArgReduceOp, x: View, shape: &[usize]) -> KResult<GpuBuffer> {
        check_rank(shape, "arg_reduce")?;
        let key = KernelKey::new(Kernel::ArgReduce(op), KDType::F32);
        let inner = *shape.last().unwrap_or(&1);
        let outer = numel(shape) / inner.max(1);
        let out = self.out_f32(outer)?;
        let split = shape.len().saturating_sub(1);
        let src = XSrc { buffer: Some(x.buffer), offset: x.offset, strides: x.strides, prologue: None };
        let p = Self::reduce_params(&src, shape, split, outer, inner, 1, inner)?;
        let grid = self.grid_groups(key, outer as u64)?;
        self.dispatch(key, &[x.buffer], &[&out], &p, grid)?;
        Ok(out)
    }
}

/// Where a reduction reads x: a strided view of a buffer, or (offset 0, these strides)
/// of a value a fused prologue computes.
#[derive(Clone, Copy)]
struct XSrc<'a> {
    buffer: Option<&'a GpuBuffer>,
    offset: usize,
    strides: &'a [usize],
    prologue: Option<&'a Epilogue<'a>>,
}

/// (row stride, element stride) when the kept dims `shape[..split]` and the reduced dims
/// `shape[split..]` each collapse into one strided axis (the CPU reference folds such
/// views in place with the same test).
pub fn two_level_strides(shape: &[usize], strides: &[usize], split: usize) -> Option<(usize, usize)> {
    fn collapse(shape: &[usize], strides: &[usize]) -> Option<usize> {
        let dims: Vec<(usize, usize)> =
            shape.iter().zip(strides).filter(|(&d, _)| d != 1).map(|(&d, &s)| (d, s)).collect();
        let Some(&(_, last)) = dims.last() else { return Some(0) };
        dims.windows(2).all(|w| w[0].1 == w[1].1 * w[1].0).then_some(last)
    }
    Some((collapse(&shape[..split], &strides[..split])?, collapse(&shape[split..], &strides[split..])?))
}

/// The launch params of a vec4 reduction: `outer` rows of `inner` contiguous elements from
/// `off`, in `nchunks` chunks of `chunk_len`.
fn vec4_params(outer: usize, inner: usize, nchunks: usize, chunk_len: usize, off: usize) -> KResult<ReduceVec4Params> {
    let [outer, inner, nchunks, chunk_len, off] =
        crate::launch::words([outer, inner, nchunks, chunk_len, off], "reduction size")?;
    Ok(ReduceVec4Params { outer, inner, nchunks, chunk_len, off })
}
