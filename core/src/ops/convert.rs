//! Conversions: dtype casts and moves between devices. Both are linear maps whose
//! derivative converts back.
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::storage::CpuStorage;
use crate::tensor::check_gpu_dtype;
use crate::{DType, Device, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::{Context, KDType};

/// A copy converted to `dtype` (float to u32 truncates; NaN and negatives give 0).
pub struct ToDtype {
    pub from: DType,
    pub dtype: DType,
}

fn kdtype(d: DType) -> KDType {
    match d {
        DType::U32 => KDType::U32,
        DType::F16 => KDType::F16,
        _ => KDType::F32,
    }
}

impl Primitive for ToDtype {
    fn name(&self) -> String {
        "to_dtype".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_gpu_dtype("to_dtype", self.dtype, x[0].device())?;
        Ok(OutSpec::new(x[0].shape(), self.dtype))
    }
    /// Between floats only: a cast to or from u32 is piecewise constant.
    fn differentiable(&self) -> bool {
        self.dtype.is_float() && self.from.is_float()
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let vals = x[0].cpu_values();
        let vals = if self.dtype == DType::U32 {
            vals.into_iter().map(|v| if v.is_nan() || v < 0.0 { 0.0 } else { v.trunc() }).collect()
        } else {
            vals
        };
        Ok(out.cpu(CpuStorage::from_f64(vals, self.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let buf = ctx.cast(kdtype(x[0].dtype()), kdtype(self.dtype), x[0].view(), x[0].shape())?;
        Ok(out.gpu(buf, x[0].device()))
    }
    /// x-bar = g converted back to x's dtype
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let _ = node;
        Ok(vec![Some(g.to_dtype(self.from)?)])
    }
    /// jvp = t converted like x
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| t.to_dtype(self.dtype)).transpose()
    }
    /// batch: elementwise, the cast of the physical tensor
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].to_dtype(self.dtype)
    }
}

/// A copy on another device.
pub struct ToDevice {
    pub from: Device,
    pub device: Device,
}

impl Primitive for ToDevice {
    fn name(&self) -> String {
        "to_device".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_gpu_dtype("to_device", x[0].dtype(), &self.device)?;
        Ok(OutSpec::new(x[0].shape(), x[0].dtype()))
    }
    /// The only primitive that reads data back: moving is its whole point.
    fn forward(&self, x: &[&Tensor], _out: &OutSpec) -> Result<Tensor> {
        let (x, d) = (x[0], &self.device);
        match x.dtype() {
            DType::F32 => Tensor::from_slice(&x.to_vec::<f32>()?, x.shape(), d),
            DType::F64 => Tensor::from_slice(&x.to_vec::<f64>()?, x.shape(), d),
            DType::U32 => Tensor::from_slice(&x.to_vec::<u32>()?, x.shape(), d),
            DType::F16 => Tensor::from_slice(&x.to_vec::<half::f16>()?, x.shape(), d),
        }
    }
    /// x-bar = g moved back to x's device
    fn vjp(&self, node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let _ = node;
        Ok(vec![Some(g.to_device(&self.from)?)])
    }
    /// jvp = t moved like x
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| t.to_device(&self.device)).transpose()
    }
    /// batch: the move of the physical tensor
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        x[0].to_device(&self.device)
    }
}

impl Tensor {
    /// A copy on `device` (differentiable: the gradient moves back).
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        bind(Arc::new(ToDevice { from: self.device().clone(), device: device.clone() }), &[self])
    }

    /// A copy converted to `dtype` (float to u32 truncates; differentiable between floats).
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        let gpu_f16_u32 = self.device().is_gpu()
            && (self.dtype() == DType::F16) != (dtype == DType::F16)
            && self.dtype() != DType::F32
            && dtype != DType::F32;
        if gpu_f16_u32 {
            // f16 <-> u32 goes through f32
            return self.to_dtype(DType::F32)?.to_dtype(dtype);
        }
        bind(Arc::new(ToDtype { from: self.dtype(), dtype }), &[self])
    }
}
