//! Layout primitives: views that share storage (reshape, permute, broadcast_to, narrow)
//! and copies (contiguous, cat). All are linear: each JVP is the op applied to the
//! tangent, each VJP moves the cotangent back to the input's layout.
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::shape::{broadcast_shapes, normalize_axis, numel};
use crate::storage::{CpuStorage, Storage};
use crate::tensor::check_same;
use crate::{cpu, Error, Layout, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::Context;

/// [size] ++ shape.
pub(crate) fn with_batch(size: usize, shape: &[usize]) -> Vec<usize> {
    std::iter::once(size).chain(shape.iter().copied()).collect()
}

/// The same elements in row-major order under another shape (a view when possible).
pub struct Reshape {
    pub shape: Vec<usize>,
}

impl Primitive for Reshape {
    fn name(&self) -> String {
        "reshape".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        x[0].layout().reshape(&self.shape)?; // element-count check
        Ok(OutSpec::new(&self.shape, x[0].dtype()))
    }
    fn forward(&self, x: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        match x[0].layout().reshape(&self.shape)? {
            Some(l) => Ok(x[0].with_layout(l)),
            None => {
                let c = x[0].contiguous()?;
                Ok(c.with_layout(c.layout().reshape(&self.shape)?.expect("contiguous")))
            }
        }
    }
    /// x-bar = reshape(g, x.shape)
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(&node.input_shapes[0])?)])
    }
    /// jvp = reshape(t)
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| t.reshape(&self.shape)).transpose()
    }
    /// batch: prepend the batch axis to the target shape
    fn batch(&self, x: &[Tensor], _batched: &[bool], b: &Batch) -> Result<Tensor> {
        x[0].reshape(&with_batch(b.size, &self.shape))
    }
}

/// Output axis i is input axis perm[i] (a view).
pub struct Permute {
    pub perm: Vec<usize>,
}

impl Primitive for Permute {
    fn name(&self) -> String {
        "permute".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let rank = x[0].rank();
        let mut seen = vec![false; rank];
        let p = &self.perm;
        if p.len() != rank || p.iter().any(|&i| i >= rank || std::mem::replace(&mut seen[i], true)) {
            return Err(Error::Invalid {
                op: "permute",
                msg: format!("{p:?} is not a permutation of the {rank} axes of {:?}", x[0].shape()),
            });
        }
        Ok(OutSpec::new(&p.iter().map(|&i| x[0].shape()[i]).collect::<Vec<_>>(), x[0].dtype()))
    }
    fn forward(&self, x: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        Ok(x[0].with_layout(x[0].layout().permute(&self.perm)))
    }
    /// x-bar = permute(g, perm^-1)
    fn vjp(&self, _node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut inv = vec![0; self.perm.len()];
        for (i, &p) in self.perm.iter().enumerate() {
            inv[p] = i;
        }
        Ok(vec![Some(g.permute(&inv)?)])
    }
    /// jvp = permute(t, perm)
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| t.permute(&self.perm)).transpose()
    }
    /// batch: the batch axis stays first, the others shift by one
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        let perm: Vec<usize> = std::iter::once(0).chain(self.perm.iter().map(|&p| p + 1)).collect();
        x[0].permute(&perm)
    }
}

/// numpy broadcasting to `shape` (a view with stride 0 on new axes).
pub struct BroadcastTo {
    pub shape: Vec<usize>,
}

impl Primitive for BroadcastTo {
    fn name(&self) -> String {
        "broadcast_to".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let b = broadcast_shapes("broadcast_to", x[0].shape(), &self.shape)?;
        if b != self.shape {
            return Err(Error::Broadcast { op: "broadcast_to", lhs: x[0].shape().to_vec(), rhs: self.shape.clone() });
        }
        Ok(OutSpec::new(&self.shape, x[0].dtype()))
    }
    fn forward(&self, x: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        Ok(x[0].broadcast_view(&self.shape))
    }
    /// x-bar = g; the engine's unbroadcast sums it back to x.shape
    fn vjp(&self, _node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
    /// jvp = broadcast_to(t)
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| t.broadcast_to(&self.shape)).transpose()
    }
    /// batch: align the batch axis in front of the target shape, then broadcast
    fn batch(&self, x: &[Tensor], _batched: &[bool], b: &Batch) -> Result<Tensor> {
        let aligned = super::binary::align_batched(&x[0], true, self.shape.len())?;
        aligned.broadcast_to(&with_batch(b.size, &self.shape))
    }
}

/// `len` entries of `axis` from `start` (a view).
pub struct Narrow {
    pub axis: usize,
    pub start: usize,
    pub len: usize,
}

impl Primitive for Narrow {
    fn name(&self) -> String {
        "narrow".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let size = x[0].shape()[self.axis];
        if self.start.checked_add(self.len).is_none_or(|end| end > size) {
            return Err(Error::SliceOutOfRange {
                op: "narrow",
                axis: self.axis,
                start: self.start,
                end: self.start.saturating_add(self.len),
                size,
            });
        }
        let mut s = x[0].shape().to_vec();
        s[self.axis] = self.len;
        Ok(OutSpec::new(&s, x[0].dtype()))
    }
    fn forward(&self, x: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        Ok(x[0].with_layout(x[0].layout().narrow(self.axis, self.start, self.len)))
    }
    /// x-bar = g placed in its window of zeros of x's shape (one [`Pad`])
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.pad_window(self.axis, self.start, node.input_shapes[0][self.axis])?)])
    }
    /// jvp = narrow(t)
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| t.narrow(self.axis as isize, self.start, self.len)).transpose()
    }
    /// batch: the axis shifts by one
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].narrow(self.axis as isize + 1, self.start, self.len)
    }
}

/// x placed in the window [start, start + x's size) of zeros whose `axis` has size `full`
/// (narrow's VJP: one launch where fills and a cat took one per part).
pub struct Pad {
    pub axis: usize,
    pub start: usize,
    pub full: usize,
}

impl Primitive for Pad {
    fn name(&self) -> String {
        "pad".into()
    }
    /// the kernel moves whole 32-bit words: f16 halves go through f32
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs) && inputs[0].device().is_gpu()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let len = x[0].shape()[self.axis];
        if self.start.checked_add(len).is_none_or(|end| end > self.full) {
            return Err(Error::SliceOutOfRange {
                op: "pad",
                axis: self.axis,
                start: self.start,
                end: self.start.saturating_add(len),
                size: self.full,
            });
        }
        let mut s = x[0].shape().to_vec();
        s[self.axis] = self.full;
        Ok(OutSpec::new(&s, x[0].dtype()))
    }
    /// zeros before and after x, joined (the CPU join of cat)
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let len = x[0].shape()[self.axis];
        let zeros = |n: usize| {
            let mut s = x[0].shape().to_vec();
            s[self.axis] = n;
            Tensor::zeros(&s, out.dtype, &crate::Device::Cpu)
        };
        let (before, after) = (zeros(self.start)?, zeros(self.full - self.start - len)?);
        Cat { axis: self.axis }.cpu(&[&before, x[0], &after], out)
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let shape = x[0].shape();
        let src = if x[0].layout().is_contiguous() { x[0].clone() } else { crate::no_grad(|| x[0].contiguous())? };
        let outer = numel(&shape[..self.axis]);
        let inner = numel(&shape[self.axis + 1..]);
        let words =
            src.storage().gpu().ok_or(Error::Internal { op: "pad", msg: "a GPU input without a buffer".into() })?;
        let buf = ctx.pad(words, src.layout().offset, [outer, self.full, inner], self.start, shape[self.axis])?;
        Ok(out.gpu(buf, x[0].device()))
    }
    /// x-bar = the window of g
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.narrow(self.axis as isize, self.start, node.input_shapes[0][self.axis])?)])
    }
    /// jvp = pad(t)
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| t.pad_window(self.axis, self.start, self.full)).transpose()
    }
    /// batch: the axis shifts by one
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].pad_window(self.axis + 1, self.start, self.full)
    }
}

/// A contiguous copy.
pub struct Contiguous;

impl Primitive for Contiguous {
    /// the copy kernel moves whole 32-bit words: f16 halves are repacked through f32
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs) && inputs[0].device().is_gpu()
    }
    fn name(&self) -> String {
        "contiguous".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    /// A strided walk row by row (f32 is copied without widening).
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        Ok(out.cpu(cpu::map(&x[0].cpu_storage(), x[0].layout(), out.dtype, |v| v)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        Ok(out.gpu(ctx.contiguous(x[0].view(), x[0].shape())?, x[0].device()))
    }
    /// x-bar = g
    fn vjp(&self, _node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.clone())])
    }
    /// jvp = t
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        Ok(t[0].clone())
    }
    /// batch: the copy of the physical tensor
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].contiguous()
    }
}

/// Tensors joined along an existing axis.
pub struct Cat {
    pub axis: usize,
}

impl Primitive for Cat {
    /// the GPU's copies move 4-byte words: f16 windows go through f32 there (the CPU
    /// joins f16 as it is)
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs) && inputs[0].device().is_gpu()
    }
    fn name(&self) -> String {
        "cat".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_same("cat", x)?;
        let (first, ax) = (x[0], self.axis);
        for t in &x[1..] {
            let ok = t.rank() == first.rank() && (0..first.rank()).all(|d| d == ax || t.shape()[d] == first.shape()[d]);
            if !ok {
                return Err(Error::ShapeMismatch {
                    op: "cat",
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                    msg: format!("all axes but {ax} must match"),
                });
            }
        }
        let mut shape = first.shape().to_vec();
        shape[ax] = x.iter().map(|t| t.shape()[ax]).sum();
        Ok(OutSpec::new(&shape, first.dtype()))
    }
    /// Each input as a contiguous block, then copied block row by block row into its
    /// window of the output (no index lists, no widening).
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        fn join<T: Copy + Default>(parts: &[&[T]], lens: &[usize], outer: usize, inner: usize) -> Vec<T> {
            let total: usize = lens.iter().sum();
            let mut v = vec![T::default(); outer * total * inner];
            let mut start = 0;
            for (src, &len) in parts.iter().zip(lens) {
                for o in 0..outer {
                    let d = (o * total + start) * inner;
                    v[d..d + len * inner].copy_from_slice(&src[o * len * inner..(o + 1) * len * inner]);
                }
                start += len;
            }
            v
        }
        let ax = self.axis;
        let outer: usize = out.shape[..ax].iter().product();
        let inner: usize = out.shape[ax + 1..].iter().product();
        let lens: Vec<usize> = x.iter().map(|t| t.shape()[ax]).collect();
        let blocks: Vec<CpuStorage> =
            x.iter().map(|t| cpu::map(&t.cpu_storage(), t.layout(), out.dtype, |v| v)).collect();
        macro_rules! joined {
            ($variant:ident) => {{
                let parts: Vec<&[_]> = blocks
                    .iter()
                    .map(|b| match b {
                        CpuStorage::$variant(v) => &v[..],
                        _ => unreachable!("cat inputs share one dtype"),
                    })
                    .collect();
                CpuStorage::$variant(join(&parts, &lens, outer, inner))
            }};
        }
        let storage = match blocks.first() {
            Some(CpuStorage::F32(_)) => joined!(F32),
            Some(CpuStorage::F64(_)) => joined!(F64),
            Some(CpuStorage::U32(_)) => joined!(U32),
            _ => joined!(F16),
        };
        Ok(out.cpu(storage))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let dst = Layout::contiguous(&out.shape);
        let buf = ctx.alloc_output((numel(&out.shape) * 4) as u64)?;
        let mut start = 0;
        for t in x {
            let region = dst.narrow(self.axis, start, t.shape()[self.axis]);
            let dview = wgrad_kernels::View { buffer: &buf, offset: region.offset, strides: &region.strides };
            ctx.copy_into(t.view(), dview, t.shape())?;
            start += t.shape()[self.axis];
        }
        let storage = Storage::Gpu(Arc::new(buf));
        Ok(Tensor::new_contiguous(storage, &out.shape, out.dtype, x[0].device().clone()))
    }
    /// each input's cotangent is its window of g
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut out = Vec::with_capacity(node.input_shapes.len());
        for s in &node.input_shapes {
            out.push(Some(g.narrow(self.axis as isize, start, s[self.axis])?));
            start += s[self.axis];
        }
        Ok(out)
    }
    /// jvp = cat of the tangents (zeros where an input has none)
    fn jvp(&self, x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let Some(parts) = super::tangents_or_zeros(x, t)? else { return Ok(None) };
        Ok(Some(Tensor::cat(&parts, self.axis as isize)?))
    }
    /// batch: every input with the batch in front (shared ones broadcast), the axis
    /// shifted by one
    fn batch(&self, x: &[Tensor], batched: &[bool], b: &Batch) -> Result<Tensor> {
        let parts = x.iter().zip(batched).map(|(t, &bt)| b.expand(t, bt)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, self.axis as isize + 1)
    }
}

impl Tensor {
    /// A tensor of another shape with the same elements in row-major order
    /// (a view when the data is contiguous, else a copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        bind(Arc::new(Reshape { shape: shape.to_vec() }), &[self])
    }

    /// Reorder the axes: output axis i is input axis perm[i] (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        bind(Arc::new(Permute { perm: perm.to_vec() }), &[self])
    }

    /// Swap two axes (negative axes count from the end).
    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let a = normalize_axis("transpose", d0, self.rank())?;
        let b = normalize_axis("transpose", d1, self.rank())?;
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Transpose of the last two axes (a 0-d or 1-d tensor is returned as is).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Ok(self.clone());
        }
        self.transpose(-2, -1)
    }

    /// View as `shape` with numpy broadcasting (stride 0 on the new axes).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        bind(Arc::new(BroadcastTo { shape: shape.to_vec() }), &[self])
    }

    /// `len` entries of `axis` from `start` (a view).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let axis = normalize_axis("narrow", axis, self.rank())?;
        bind(Arc::new(Narrow { axis, start, len }), &[self])
    }

    /// This tensor in the window [start, start + size) of zeros whose `axis` has size
    /// `full` (narrow's VJP).
    pub(crate) fn pad_window(&self, axis: usize, start: usize, full: usize) -> Result<Tensor> {
        bind(Arc::new(Pad { axis, start, full }), &[self])
    }

    /// Alias of `narrow(axis, start, end - start)`.
    pub fn slice(&self, axis: isize, start: usize, end: usize) -> Result<Tensor> {
        if end < start {
            let ax = normalize_axis("slice", axis, self.rank())?;
            return Err(Error::SliceOutOfRange { op: "slice", axis: ax, start, end, size: self.shape()[ax] });
        }
        self.narrow(axis, start, end - start)
    }

    /// Insert an axis of size 1.
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let ax = normalize_axis("unsqueeze", axis, self.rank() + 1)?;
        let mut s = self.shape().to_vec();
        s.insert(ax, 1);
        self.reshape(&s)
    }

    /// Remove an axis of size 1.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let ax = normalize_axis("squeeze", axis, self.rank())?;
        if self.shape()[ax] != 1 {
            return Err(Error::Invalid {
                op: "squeeze",
                msg: format!("axis {ax} of {:?} has size {}, not 1", self.shape(), self.shape()[ax]),
            });
        }
        let mut s = self.shape().to_vec();
        s.remove(ax);
        self.reshape(&s)
    }

    /// All elements in one axis.
    pub fn flatten(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])
    }

    /// This tensor if its elements are row-major and dense at some offset into its storage
    /// (a view of a flat buffer), else a contiguous copy: for kernels that take an offset.
    pub(crate) fn dense(&self) -> Result<Tensor> {
        match self.layout().is_contiguous() {
            true => Ok(self.clone()),
            false => self.contiguous(),
        }
    }

    /// A contiguous copy (or the tensor itself when it is already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.layout().is_contiguous() && self.layout().offset == 0 {
            return Ok(self.clone());
        }
        bind(Arc::new(Contiguous), &[self])
    }

    /// Join tensors along an existing axis.
    pub fn cat(tensors: &[Tensor], axis: isize) -> Result<Tensor> {
        let first =
            tensors.first().ok_or_else(|| Error::Empty { op: "cat", msg: "no tensors to concatenate".into() })?;
        let refs: Vec<&Tensor> = tensors.iter().collect();
        check_same("cat", &refs)?;
        let ax = normalize_axis("cat", axis, first.rank())?;
        bind(Arc::new(Cat { axis: ax }), &refs)
    }

    /// Join tensors of one shape along a new axis.
    pub fn stack(tensors: &[Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::Empty { op: "stack", msg: "no tensors to stack".into() })?;
        let ax = normalize_axis("stack", axis, first.rank() + 1)?;
        let parts = tensors.iter().map(|t| t.unsqueeze(ax as isize)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts, ax as isize)
    }
}
