//! The primitive blocks, one file per family (elementwise, reduce, matmul, movement,
//! index, linalg, conv, pool, loss, conversions). Each primitive is a struct holding its
//! attributes whose `Primitive` impl holds its shape rule, saves, CPU reference, GPU
//! launch, VJP and JVP next to each other; the `Tensor` methods are thin calls into
//! [`crate::primitive::bind`]. Composites (mean, logsumexp, conv2d...) are plain
//! functions of primitives.
mod binary;
mod conv;
mod convert;
mod index;
mod linalg;
mod loss;
pub(crate) mod matmul;
mod movement;
mod norm;
mod operators;
mod optim;
mod pack;
mod pool;
pub(crate) mod reduce;
mod unary;
mod user;

pub use operators::Operand;
pub use user::ElementwiseKernel;

use crate::storage::CpuRead;
use crate::{Error, Result, Tensor};

/// The elements of a CPU tensor's storage, read-locked while the guard lives.
pub(crate) fn cpu_of(t: &Tensor) -> CpuRead<'_> {
    t.storage().cpu().expect("CPU tensor")
}

/// The tangents of a linear op of several inputs with zeros where an input has none; None
/// when no input has one (the output's tangent is then zero).
pub(crate) fn tangents_or_zeros(x: &[Tensor], t: &[Option<Tensor>]) -> Result<Option<Vec<Tensor>>> {
    if t.iter().all(|t| t.is_none()) {
        return Ok(None);
    }
    let parts = x.iter().zip(t).map(|(x, t)| match t {
        Some(t) => Ok(t.clone()),
        None => x.detach().zeros_like(),
    });
    Ok(Some(parts.collect::<Result<Vec<_>>>()?))
}

/// The error of a rule that reads a value its saves rule does not keep.
pub(crate) fn unsaved(what: &str) -> Error {
    Error::Internal { op: "vjp", msg: format!("a rule read {what}, which its saves rule does not keep") }
}

impl Tensor {
    /// The host storage of a CPU tensor (internal: after the device is known).
    pub(crate) fn cpu_storage(&self) -> CpuRead<'_> {
        cpu_of(self)
    }
    /// The elements of a CPU tensor, row-major, in f64.
    pub(crate) fn cpu_values(&self) -> Vec<f64> {
        crate::cpu::read(&cpu_of(self), self.layout())
    }
    /// A plain view broadcast to `shape` (stride 0 on new axes), for kernels.
    pub(crate) fn broadcast_view(&self, shape: &[usize]) -> Tensor {
        self.with_layout(self.layout().broadcast_to(shape))
    }
    /// Sum a broadcast (output-side) value back to `shape`: the adjoint of broadcasting.
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let lead = self.rank().checked_sub(shape.len()).ok_or_else(|| Error::ShapeMismatch {
            op: "sum_to_shape",
            lhs: self.shape().to_vec(),
            rhs: shape.to_vec(),
            msg: "the value has fewer axes than the target".into(),
        })?;
        let mut axes: Vec<isize> = (0..lead as isize).collect();
        for (i, &d) in shape.iter().enumerate() {
            if d == 1 && self.shape()[lead + i] != 1 {
                axes.push((lead + i) as isize);
            }
        }
        let summed = if axes.is_empty() { self.clone() } else { self.sum(&axes, true)? };
        summed.reshape(shape)
    }
}
