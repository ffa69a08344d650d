//! Reading values back to the host: the blocking forms (native) and the async forms
//! (everywhere, and the only ones on a GPU in the browser). Both gather the tensor's
//! elements in row-major order as bytes of its own dtype, then convert.
use crate::storage::{CpuStorage, Storage};
use crate::transform::no_grad;
use crate::{DType, Element, Error, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::{Context, KernelError};

/// The elements of a tensor in row-major order, as bytes of its dtype: ready (a CPU
/// tensor, or no elements), or a span of a GPU buffer still to be read.
enum Pending {
    Ready(Vec<u8>),
    Gpu {
        ctx: Arc<Context>,
        /// The contiguous tensor that holds the span (kept alive until the read).
        source: Tensor,
        offset: u64,
        len: u64,
        /// Bytes of the span before and after the elements (f16 reads whole words).
        skip: usize,
        keep: usize,
    },
}

/// The async form of a blocking read call, for the error a blocking read in the browser
/// returns.
fn async_form(op: &'static str) -> &'static str {
    match op {
        "to_scalar" => "to_scalar_async",
        "item" => "item_async",
        _ => "to_vec_async",
    }
}

impl Tensor {
    /// Start reading the elements: a CPU tensor is gathered now; a GPU tensor is made
    /// contiguous (f16: whole 32-bit words) and its span named.
    fn start_read(&self, op: &'static str) -> Result<Pending> {
        self.check_not_batched(op)?;
        crate::jit::check_not_tracing(op)?;
        let this = self.materialized()?;
        match this.storage() {
            Storage::Cpu(s) => {
                let offs = self.layout().offsets();
                fn gather<E: bytemuck::Pod>(v: &[E], offs: &[usize]) -> Vec<u8> {
                    let picked: Vec<E> = offs.iter().map(|&o| v[o]).collect();
                    bytemuck::cast_slice(&picked).to_vec()
                }
                Ok(Pending::Ready(match &*s.read() {
                    CpuStorage::F32(v) => gather(v, &offs),
                    CpuStorage::F64(v) => gather(v, &offs),
                    CpuStorage::U32(v) => gather(v, &offs),
                    CpuStorage::F16(v) => gather(v, &offs),
                }))
            }
            Storage::Lazy(_) => unreachable!("materialized above"),
            Storage::Gpu(buf) => {
                let n = self.numel();
                if n == 0 {
                    return Ok(Pending::Ready(Vec::new()));
                }
                let ctx = buf.context().clone();
                if self.dtype() == DType::F16 {
                    // whole words around the halves; a strided view is repacked first
                    let source = if self.layout().is_contiguous() {
                        this.clone()
                    } else {
                        no_grad(|| self.to_dtype(DType::F32)?.to_dtype(DType::F16))?
                    };
                    let first = source.layout().offset;
                    let (w0, w1) = (first / 2, (first + n).div_ceil(2));
                    let (offset, len) = ((w0 * 4) as u64, ((w1 - w0) * 4) as u64);
                    return Ok(Pending::Gpu { ctx, source, offset, len, skip: (first - 2 * w0) * 2, keep: n * 2 });
                }
                let source = if self.layout().is_contiguous() { this.clone() } else { no_grad(|| self.contiguous())? };
                let (offset, len) = ((source.layout().offset * 4) as u64, (n * 4) as u64);
                Ok(Pending::Gpu { ctx, source, offset, len, skip: 0, keep: n * 4 })
            }
        }
    }

    /// The elements, blocking for a GPU read (an error naming the async form in the
    /// browser).
    fn read_bytes(&self, op: &'static str) -> Result<Vec<u8>> {
        match self.start_read(op)? {
            Pending::Ready(bytes) => Ok(bytes),
            Pending::Gpu { .. } if cfg!(target_arch = "wasm32") => {
                Err(KernelError::Blocking { call: op, use_instead: async_form(op) }.into())
            }
            Pending::Gpu { ctx, source, offset, len, skip, keep } => {
                let bytes = ctx.read(source.storage().gpu().expect("gpu storage"), offset, len)?;
                Ok(bytes[skip..skip + keep].to_vec())
            }
        }
    }

    /// The elements, awaiting a GPU read.
    async fn read_bytes_async(&self, op: &'static str) -> Result<Vec<u8>> {
        match self.start_read(op)? {
            Pending::Ready(bytes) => Ok(bytes),
            Pending::Gpu { ctx, source, offset, len, skip, keep } => {
                let bytes = ctx.read_async(source.storage().gpu().expect("gpu storage"), offset, len).await?;
                Ok(bytes[skip..skip + keep].to_vec())
            }
        }
    }

    /// Convert the elements (bytes of this tensor's dtype) to `T`: directly when `T` is
    /// the dtype, else through f64 (a float tensor does not read as u32).
    fn decode<T: Element>(&self, bytes: &[u8], op: &'static str) -> Result<Vec<T>> {
        if T::DTYPE == self.dtype() {
            return Ok(bytemuck::pod_collect_to_vec(bytes));
        }
        if T::DTYPE == DType::U32 {
            return Err(Error::DTypeMismatch { op, lhs: self.dtype(), rhs: T::DTYPE });
        }
        fn widen<E: Element>(bytes: &[u8]) -> Vec<f64> {
            bytemuck::pod_collect_to_vec::<u8, E>(bytes).into_iter().map(E::to_f64).collect()
        }
        let wide = match self.dtype() {
            DType::F32 => widen::<f32>(bytes),
            DType::F64 => widen::<f64>(bytes),
            DType::U32 => widen::<u32>(bytes),
            DType::F16 => widen::<half::f16>(bytes),
        };
        Ok(wide.into_iter().map(T::from_f64).collect())
    }

    fn check_single(&self, op: &'static str) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::NotScalar { op, shape: self.shape().to_vec(), hint: "" });
        }
        Ok(())
    }

    fn read_as<T: Element>(&self, op: &'static str) -> Result<Vec<T>> {
        self.decode(&self.read_bytes(op)?, op)
    }

    // ---------------------------------------------------------------- blocking forms

    /// The elements in row-major order, converted to `T` (any dtype reads as any float
    /// type; a float tensor does not read as u32). Blocks until the GPU has computed them;
    /// in the browser a GPU tensor needs [`Tensor::to_vec_async`].
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        self.read_as("to_vec")
    }

    /// Elements widened to f64 (any dtype).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        self.read_as("to_f64_vec")
    }

    /// The value of a one-element tensor, converted to `T` as [`Tensor::to_vec`] does.
    pub fn to_scalar<T: Element>(&self) -> Result<T> {
        self.check_single("to_scalar")?;
        Ok(self.read_as::<T>("to_scalar")?[0])
    }

    /// The value of a one-element tensor of any dtype, as f64 (PyTorch's `item`).
    pub fn item(&self) -> Result<f64> {
        self.check_single("item")?;
        Ok(self.read_as::<f64>("item")?[0])
    }

    /// The rows of a matrix, converted to `T` as [`Tensor::to_vec`] does.
    pub fn to_vec2<T: Element>(&self) -> Result<Vec<Vec<T>>> {
        let [rows, cols] = *self.shape() else {
            return Err(self.rank_error("to_vec2", 2));
        };
        let flat = self.read_as::<T>("to_vec2")?;
        Ok((0..rows).map(|r| flat[r * cols..(r + 1) * cols].to_vec()).collect())
    }

    /// The matrices of a rank-3 tensor, converted to `T` as [`Tensor::to_vec`] does.
    pub fn to_vec3<T: Element>(&self) -> Result<Vec<Vec<Vec<T>>>> {
        let [n, rows, cols] = *self.shape() else {
            return Err(self.rank_error("to_vec3", 3));
        };
        let flat = self.read_as::<T>("to_vec3")?;
        let at = |m: usize, r: usize| flat[(m * rows + r) * cols..(m * rows + r + 1) * cols].to_vec();
        Ok((0..n).map(|m| (0..rows).map(|r| at(m, r)).collect()).collect())
    }

    pub(crate) fn rank_error(&self, op: &'static str, rank: usize) -> Error {
        Error::ShapeMismatch {
            op,
            lhs: self.shape().to_vec(),
            rhs: vec![],
            msg: format!("needs a tensor of rank {rank}, got rank {}", self.rank()),
        }
    }

    // ---------------------------------------------------------------- async forms

    /// [`Tensor::to_vec`] as a future: the form that works in the browser, where the
    /// page's event loop delivers the GPU's answer. On native it waits as `to_vec` does.
    pub async fn to_vec_async<T: Element>(&self) -> Result<Vec<T>> {
        let op = "to_vec_async";
        self.decode(&self.read_bytes_async(op).await?, op)
    }

    /// [`Tensor::to_scalar`] as a future (see [`Tensor::to_vec_async`]).
    pub async fn to_scalar_async<T: Element>(&self) -> Result<T> {
        let op = "to_scalar_async";
        self.check_single(op)?;
        Ok(self.decode::<T>(&self.read_bytes_async(op).await?, op)?[0])
    }

    /// [`Tensor::item`] as a future (see [`Tensor::to_vec_async`]).
    pub async fn item_async(&self) -> Result<f64> {
        self.to_scalar_async::<f64>().await
    }
}
