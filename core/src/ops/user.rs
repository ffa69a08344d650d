//! User elementwise kernels (WGSL bodies of their own, run by [`Tensor::map_kernel`]) and the
//! operator traits (`&a + &b`, `-&a`).
use super::cpu_of;
use crate::graph::Node;
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::tensor::check_float;
use crate::{cpu, Error, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::Context;

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

/// A user elementwise kernel applied with its scalar operand: a primitive like any other,
/// with a batching rule (elementwise) but no derivative rules of its own. Under grad or jvp
/// it is [`Error::MissingRule`]: wrap it in [`crate::custom_op`] to give it a VJP.
struct UserKernel {
    kernel: ElementwiseKernel,
    scalar: f64,
}

impl Primitive for UserKernel {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn name(&self) -> String {
        self.kernel.name.clone()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_float("map_kernel", x[0])?;
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (k, s) = (&self.kernel, self.scalar);
        if let Some(fast) = &k.cpu_f32 {
            if let Some(v) = cpu::contiguous_f32(cpu_of(x[0]), x[0].layout()) {
                // the slice closure writes every element
                let mut o = cpu::scratch_f32(v.len());
                cpu::par_chunks(&mut o, 1, |start, part| fast(part, &v[start..start + part.len()], s as f32));
                return Ok(out.cpu(crate::storage::CpuStorage::F32(o)));
            }
        }
        Ok(out.cpu(cpu::map(cpu_of(x[0]), x[0].layout(), x[0].dtype(), |v| (k.cpu)(v, s))))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let buf = ctx.user_unary(self.kernel.id, self.scalar as f32, x[0].view(), x[0].shape())?;
        Ok(out.gpu(buf, x[0].device()))
    }
    /// none: the kernel's derivative is unknown
    fn vjp(&self, _node: &Arc<Node>, _g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Err(Error::MissingRule { op: self.name(), transform: "grad (reverse mode)" })
    }
    /// none: the kernel's derivative is unknown
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        match t[0] {
            None => Ok(None),
            Some(_) => Err(Error::MissingRule { op: self.name(), transform: "jvp (forward mode)" }),
        }
    }
    /// batch: elementwise, the kernel on the physical tensor
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].map_kernel(&self.kernel, self.scalar)
    }
}

impl Tensor {
    /// Run a user elementwise kernel (`s` is its scalar operand). It has no derivative of
    /// its own: under grad or jvp it is [`Error::MissingRule`] unless it runs inside
    /// [`crate::custom_op`], whose VJP gives it one; under vmap it runs on every example.
    pub fn map_kernel(&self, k: &ElementwiseKernel, s: f64) -> Result<Tensor> {
        check_float("map_kernel", self)?;
        if self.is_tracked() && crate::transform::is_recording() {
            // an error now rather than at the backward pass
            return Err(Error::MissingRule { op: k.name.clone(), transform: "grad (reverse mode)" });
        }
        bind(Arc::new(UserKernel { kernel: k.clone(), scalar: s }), &[self])
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
