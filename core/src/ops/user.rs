//! User elementwise kernels (WGSL bodies of their own, run by [`Tensor::map_kernel`]).
use super::cpu_of;
use crate::graph::Node;
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::tensor::check_float;
use crate::{cpu, Error, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::Context;

/// A user elementwise kernel: `wgsl_body` is the body of `fn unary_op(x: T, s: T) -> T`
/// (WGSL, `T` = f32; the helpers of shaders/common.wgsl are in scope) and `cpu` the same
/// function for the CPU device. One declaration gives a whole op:
///
/// ```no_run
/// # use wgrad_core::{ElementwiseKernel, Tensor, Device};
/// # fn main() -> wgrad_core::Result<()> {
/// let swish = ElementwiseKernel::new("swish", "return x * sigmoid_safe(x);", |x, _| x / (1.0 + (-x).exp()))?
///     .with_derivative(
///         "let sg = sigmoid_safe(x); return sg + x * sg * (1.0 - sg);",
///         |x, _| { let sg = 1.0 / (1.0 + (-x).exp()); sg + x * sg * (1.0 - sg) },
///     );
/// let y = Tensor::randn(&[4], 0, &Device::best())?.map_kernel(&swish, 0.0)?;
/// # Ok(()) }
/// ```
///
/// With a derivative (d/dx, the scalar operand `s` held fixed) the op has grad, jvp and
/// vmap rules; each further `with_derivative` gives the next order (the derivative's own
/// derivative), which Hessians need. It fuses with the elementwise ops around it.
#[derive(Clone)]
pub struct ElementwiseKernel {
    id: u32,
    name: String,
    cpu: std::sync::Arc<dyn Fn(f64, f64) -> f64 + Send + Sync>,
    /// The f32 form as a slice loop (out, x, s), compiled where the closure is given so
    /// that the closure inlines and the loop vectorizes.
    cpu_f32: Option<std::sync::Arc<CpuSliceFn>>,
    /// d/dx of the kernel as a kernel (which may carry the next order); Err: its WGSL did
    /// not validate, reported when a rule needs it.
    derivative: Option<std::result::Result<Arc<ElementwiseKernel>, String>>,
}

type CpuSliceFn = dyn Fn(&mut [f32], &[f32], f32) + Send + Sync;

impl ElementwiseKernel {
    /// Register the kernel; invalid WGSL is an error naming it (checked with naga now).
    pub fn new(name: &str, wgsl_body: &str, cpu: impl Fn(f64, f64) -> f64 + Send + Sync + 'static) -> Result<Self> {
        let id = wgrad_kernels::register_user_unary(name, wgsl_body).map_err(|msg| compile_error(name, msg))?;
        Ok(ElementwiseKernel {
            id,
            name: name.to_string(),
            cpu: std::sync::Arc::new(cpu),
            cpu_f32: None,
            derivative: None,
        })
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
    /// The next derivative in x: the first call gives d/dx (grad, jvp), the second d2/dx2
    /// (Hessians), and so on. `wgsl_body` and `cpu` are as in [`ElementwiseKernel::new`].
    /// Invalid WGSL is reported (naming the kernel) by the first rule that needs it.
    pub fn with_derivative(mut self, wgsl_body: &str, cpu: impl Fn(f64, f64) -> f64 + Send + Sync + 'static) -> Self {
        self.derivative = Some(match self.derivative.take() {
            None => ElementwiseKernel::new(&format!("{}'", self.name), wgsl_body, cpu)
                .map(Arc::new)
                .map_err(|e| e.to_string()),
            Some(Ok(d)) => Ok(Arc::new((*d).clone().with_derivative(wgsl_body, cpu))),
            Some(Err(e)) => Err(e),
        });
        self
    }
    /// The derivative as a kernel built elsewhere (it may carry its own derivatives).
    pub fn with_derivative_kernel(mut self, derivative: ElementwiseKernel) -> Self {
        self.derivative = Some(Ok(Arc::new(derivative)));
        self
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// d/dx as a kernel, or the error saying why there is none.
    fn derivative(&self, transform: &'static str) -> Result<&ElementwiseKernel> {
        match &self.derivative {
            Some(Ok(d)) => Ok(d),
            Some(Err(msg)) => Err(compile_error(&format!("{}'", self.name), msg.clone())),
            None => Err(Error::MissingRule { op: self.name.clone(), transform }),
        }
    }
}

fn compile_error(name: &str, msg: String) -> Error {
    Error::Gpu(wgrad_kernels::KernelError::Compile { kernel: name.to_string(), msg })
}

/// A user elementwise kernel applied with its scalar operand: a primitive like any other.
/// Its rules come from the kernel's derivative (itself a kernel); without one, grad and
/// jvp are [`Error::MissingRule`].
struct UserKernel {
    kernel: ElementwiseKernel,
    scalar: f64,
}

impl Primitive for UserKernel {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn host_values(&self) -> Vec<f64> {
        vec![self.scalar]
    }
    fn name(&self) -> String {
        self.kernel.name.clone()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_float("map_kernel", x[0])?;
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    fn saves_input(&self, _i: usize) -> bool {
        self.kernel.derivative.is_some()
    }
    fn fusible(&self) -> Option<crate::fusion::Fusible> {
        Some(crate::fusion::Fusible::User(self.kernel.id, self.scalar))
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let (k, s) = (&self.kernel, self.scalar);
        if let Some(fast) = &k.cpu_f32 {
            if let Some(v) = cpu::contiguous_f32(&cpu_of(x[0]), x[0].layout()) {
                // the slice closure writes every element
                let mut o = cpu::scratch_f32(v.len());
                cpu::par_chunks(&mut o, 1, |start, part| fast(part, &v[start..start + part.len()], s as f32));
                return Ok(out.cpu(crate::storage::CpuStorage::F32(o)));
            }
        }
        Ok(out.cpu(cpu::map(&cpu_of(x[0]), x[0].layout(), x[0].dtype(), |v| (k.cpu)(v, s))))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let buf = ctx.user_unary(self.kernel.id, self.scalar as f32, x[0].view(), x[0].shape())?;
        Ok(out.gpu(buf, x[0].device()))
    }
    /// d k(x, s) = k'(x, s) dx, so x's cotangent is g k'(x, s)
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let d = self.kernel.derivative("grad (reverse mode)")?;
        Ok(vec![Some(g.mul(&node.input(0)?.map_kernel(d, self.scalar)?)?)])
    }
    /// jvp k(x, s) = k'(x, s) t
    fn jvp(&self, x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let Some(t) = &t[0] else { return Ok(None) };
        let d = self.kernel.derivative("jvp (forward mode)")?;
        Ok(Some(t.mul(&x[0].map_kernel(d, self.scalar)?)?))
    }
    /// batch: elementwise, the kernel on the physical tensor
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].map_kernel(&self.kernel, self.scalar)
    }
}

impl Tensor {
    /// Run a user elementwise kernel (`s` is its scalar operand). Its derivatives are the
    /// ones [`ElementwiseKernel::with_derivative`] gave it; without them, grad and jvp are
    /// [`Error::MissingRule`] (or wrap it in [`crate::custom_op`] with a VJP). Under vmap
    /// it runs on every example at once.
    pub fn map_kernel(&self, k: &ElementwiseKernel, s: f64) -> Result<Tensor> {
        check_float("map_kernel", self)?;
        if k.derivative.is_none() && self.is_tracked() && crate::transform::is_recording() {
            // an error now rather than at the backward pass
            return Err(Error::MissingRule { op: k.name.clone(), transform: "grad (reverse mode)" });
        }
        bind(Arc::new(UserKernel { kernel: k.clone(), scalar: s }), &[self])
    }
}
