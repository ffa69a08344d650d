//! Pack: tensors laid out in windows of one flat 1-D tensor, zeros between them (flat
//! parameters and their gradients, as JAX's `ravel_pytree` and apex's flat master
//! weights). Linear: the VJP slices each window back out, the JVP packs the tangents.
use crate::primitive::{bind, OutSpec, Primitive};
use crate::storage::CpuStorage;
use crate::tensor::check_same;
use crate::{cpu, DType, Error, Layout, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::{Context, PackSource};

/// Input i's elements (row-major) at `offsets[i]` of a 1-D output of `len` elements.
pub struct Pack {
    pub offsets: Vec<usize>,
    pub len: usize,
}

impl Primitive for Pack {
    /// the pack kernel moves 4-byte words: f16 windows go through f32 on a GPU (the CPU
    /// places f16 as it is)
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs) && inputs[0].device().is_gpu()
    }
    fn name(&self) -> String {
        "pack".into()
    }
    /// The windows must come in ascending order, inside the output, without overlapping.
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_same("pack", x)?;
        if x.len() != self.offsets.len() {
            return Err(Error::Invalid {
                op: "pack",
                msg: format!("{} tensors but {} offsets", x.len(), self.offsets.len()),
            });
        }
        let mut free_from = 0;
        for (t, &at) in x.iter().zip(&self.offsets) {
            if at < free_from || at + t.numel() > self.len {
                return Err(Error::Invalid {
                    op: "pack",
                    msg: format!(
                        "a window of {} elements at {at} (shape {:?}) overlaps the previous one or leaves the \
                         output of {} (windows go in ascending order)",
                        t.numel(),
                        t.shape(),
                        self.len
                    ),
                });
            }
            free_from = at + t.numel();
        }
        Ok(OutSpec::new(&[self.len], x[0].dtype()))
    }
    /// Each input's elements copied straight into its window in their own dtype (a slice
    /// copy when dense, a row walk when strided): no widening to f64.
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        fn place<T: Copy + Default>(parts: &[(&[T], &Layout)], offsets: &[usize], len: usize) -> Vec<T> {
            let mut v = vec![T::default(); len];
            for (&(src, l), &at) in parts.iter().zip(offsets) {
                let dst = &mut v[at..at + l.numel()];
                if l.is_contiguous() {
                    dst.copy_from_slice(&src[l.offset..l.offset + l.numel()]);
                    continue;
                }
                let dense = crate::shape::contiguous_strides(&l.shape);
                let (shape, strides, _) = cpu::coalesce2(&l.shape, &l.strides, &dense);
                let (n, step) = (*shape.last().unwrap_or(&1), *strides.last().unwrap_or(&1));
                let mut at = 0;
                cpu::for_each_row2(&shape, (l.offset, &strides), (0, &strides), |o, _| {
                    for j in 0..n {
                        dst[at + j] = src[o + j * step];
                    }
                    at += n;
                });
            }
            v
        }
        macro_rules! placed {
            ($variant:ident) => {{
                let reads: Vec<_> = x.iter().map(|t| t.cpu_storage()).collect();
                let parts: Vec<(&[_], &Layout)> = x
                    .iter()
                    .zip(&reads)
                    .map(|(t, s)| match &**s {
                        CpuStorage::$variant(v) => (&v[..], t.layout()),
                        _ => unreachable!("pack inputs share one dtype"),
                    })
                    .collect();
                CpuStorage::$variant(place(&parts, &self.offsets, self.len))
            }};
        }
        let storage = match out.dtype {
            DType::F32 => placed!(F32),
            DType::F64 => placed!(F64),
            DType::U32 => placed!(U32),
            DType::F16 => placed!(F16),
        };
        Ok(out.cpu(storage))
    }
    /// Contiguous inputs (views included) are read by the pack kernel; a strided one is
    /// copied into its window after it (the kernel leaves that window zero).
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let mut sources = Vec::with_capacity(x.len());
        let mut strided = Vec::new();
        for (t, &at) in x.iter().zip(&self.offsets) {
            if t.layout().is_contiguous() {
                let buffer = t.storage().gpu().expect("GPU tensor");
                sources.push(PackSource { buffer, offset: t.layout().offset, len: t.numel(), at });
            } else {
                strided.push((t, at));
            }
        }
        let buf = ctx.pack(&sources, self.len)?;
        for (t, at) in strided {
            let strides = wgrad_kernels::row_major_strides(t.shape());
            let dst = wgrad_kernels::View { buffer: &buf, offset: at, strides: &strides };
            ctx.copy_into(t.view(), dst, t.shape())?;
        }
        Ok(out.gpu(buf, x[0].device()))
    }
    /// x_i's cotangent is g's window at offsets[i], in x_i's shape
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let windows = node.input_shapes.iter().zip(&self.offsets);
        windows.map(|(shape, &at)| Ok(Some(g.narrow(0, at, shape.iter().product())?.reshape(shape)?))).collect()
    }
    /// jvp = pack of the tangents (zeros where an input has none)
    fn jvp(&self, x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let Some(parts) = super::tangents_or_zeros(x, t)? else { return Ok(None) };
        Ok(Some(Tensor::pack(&parts, &self.offsets, self.len)?))
    }
}

impl Tensor {
    /// A 1-D tensor of `len` elements holding `parts[i]`'s elements (row-major) from
    /// element `offsets[i]`, and zeros between the windows, which go in ascending order
    /// without overlapping. On a GPU it is one dispatch per group of tensors the adapter's
    /// storage-buffer limit allows (seven in browsers), however many there are.
    pub fn pack(parts: &[Tensor], offsets: &[usize], len: usize) -> Result<Tensor> {
        if parts.is_empty() {
            return Err(Error::Empty { op: "pack", msg: "no tensors to pack".into() });
        }
        let refs: Vec<&Tensor> = parts.iter().collect();
        bind(Arc::new(Pack { offsets: offsets.to_vec(), len }), &refs)
    }
}
