//! User elementwise kernels (WGSL bodies of their own, run by [`Tensor::map_kernel`]) and the
//! operator traits (`&a + &b`, `-&a`).
use super::{cpu_of, run};
use crate::tensor::check_float;
use crate::{cpu, DType, Error, Result, Tensor};

/// A user elementwise kernel: `wgsl_body` is the body of `fn unary_op(x: T, s: T) -> T`
/// (WGSL, `T` = f32; the helpers of shaders/common.wgsl are in scope) and `cpu` the same
/// function for the CPU device. Give it a derivative by wrapping [`Tensor::map_kernel`] in
/// [`crate::custom_op`] with a VJP.
#[derive(Clone)]
pub struct ElementwiseKernel {
    id: u32,
    name: String,
    cpu: std::sync::Arc<dyn Fn(f64, f64) -> f64 + Send + Sync>,
    /// The f32 form as a slice loop (out, x, s), compiled where the closure is given so
    /// that the closure inlines and the loop vectorizes.
    cpu_f32: Option<std::sync::Arc<CpuSliceFn>>,
}

type CpuSliceFn = dyn Fn(&mut [f32], &[f32], f32) + Send + Sync;

impl ElementwiseKernel {
    /// Register the kernel; invalid WGSL is an error naming it (checked with naga now).
    pub fn new(name: &str, wgsl_body: &str, cpu: impl Fn(f64, f64) -> f64 + Send + Sync + 'static) -> Result<Self> {
        let id = wgrad_kernels::register_user_unary(name, wgsl_body)
            .map_err(|msg| Error::Gpu(wgrad_kernels::KernelError::Compile { kernel: name.to_string(), msg }))?;
        Ok(ElementwiseKernel { id, name: name.to_string(), cpu: std::sync::Arc::new(cpu), cpu_f32: None })
    }
    /// An f32 form for the CPU device, used on contiguous f32 tensors: one vectorized loop
    /// over the whole chain (the f64 closure calls per element through a pointer and
    /// cannot vectorize). It should agree with the WGSL body to f32 accuracy; vectorizable
    /// math such as [`crate::cpu::exp_f32`] keeps the loop vectorized.
    pub fn with_cpu_f32(mut self, f: impl Fn(f32, f32) -> f32 + Send + Sync + Copy + 'static) -> Self {
        self.cpu_f32 = Some(std::sync::Arc::new(move |out: &mut [f32], x: &[f32], s: f32| {
            cpu::map_slice_f32(out, x, |v| f(v, s))
        }));
        self
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Tensor {
    /// Run a user elementwise kernel (`s` is its scalar operand). It has no derivative of
    /// its own: on a tracked tensor it is an error unless it runs inside [`crate::custom_op`].
    pub fn map_kernel(&self, k: &ElementwiseKernel, s: f64) -> Result<Tensor> {
        check_float("map_kernel", self)?;
        if self.dtype() == DType::F16 {
            return self.via_f32(|x| x.map_kernel(k, s));
        }
        if self.is_tracked() && crate::transform::is_recording() {
            return Err(Error::NotDifferentiable { op: k.name.clone(), order: 1 });
        }
        if let Some((level, physical)) = self.batch() {
            // elementwise: every example at once
            return Ok(Tensor::batched(level, physical.map_kernel(k, s)?));
        }
        let x = self.materialized()?;
        if let (Some(fast), crate::Device::Cpu) = (&k.cpu_f32, x.device()) {
            if let Some(v) = cpu::contiguous_f32(cpu_of(&x), x.layout()) {
                // the slice closure writes every element
                let mut out = cpu::scratch_f32(v.len());
                cpu::par_chunks(&mut out, 1, |start, part| fast(part, &v[start..start + part.len()], s as f32));
                let storage = crate::storage::Storage::cpu_owned(crate::storage::CpuStorage::F32(out));
                return Ok(Tensor::new_contiguous(storage, x.shape(), DType::F32, crate::Device::Cpu));
            }
        }
        run(
            &x,
            x.shape(),
            x.dtype(),
            || Ok(cpu::map(cpu_of(&x), x.layout(), x.dtype(), |v| (k.cpu)(v, s))),
            |ctx| Ok(ctx.user_unary(k.id, s as f32, x.view(), x.shape())?),
        )
    }
}

macro_rules! std_op {
    ($trait:ident, $method:ident, $call:ident) => {
        impl std::ops::$trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                self.$call(rhs)
            }
        }
        impl std::ops::$trait<Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                (&self).$call(&rhs)
            }
        }
        impl std::ops::$trait<f64> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: f64) -> Result<Tensor> {
                let r = self.full_like(rhs)?;
                self.$call(&r)
            }
        }
    };
}
std_op!(Add, add, add);
std_op!(Sub, sub, sub);
std_op!(Mul, mul, mul);
std_op!(Div, div, div);

impl std::ops::Neg for &Tensor {
    type Output = Result<Tensor>;
    fn neg(self) -> Result<Tensor> {
        Tensor::neg(self)
    }
}
