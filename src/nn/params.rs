//! The named parameter list of a model, with safetensors save / load.
use crate::{DType, Device, Error, Result, Tensor};
use std::collections::HashMap;

/// Named parameter tensors, in registration order.
#[derive(Clone, Default)]
pub struct Params {
    names: Vec<String>,
    tensors: Vec<Tensor>,
}

impl Params {
    pub fn new() -> Self {
        Self::default()
    }
    /// Register a tensor; returns its index.
    pub fn add(&mut self, name: &str, t: Tensor) -> usize {
        self.names.push(name.to_string());
        self.tensors.push(t);
        self.tensors.len() - 1
    }
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
    pub fn tensors_mut(&mut self) -> &mut [Tensor] {
        &mut self.tensors
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    /// Total number of scalars.
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(|t| t.numel()).sum()
    }
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.names.iter().position(|n| n == name).map(|i| &self.tensors[i])
    }

    /// Write all parameters to a safetensors file (f32 / f64 as stored).
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let mut data: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = Vec::new();
        for (n, t) in self.names.iter().zip(&self.tensors) {
            let (bytes, dt) = match t.dtype() {
                DType::F32 => (bytemuck_bytes(&t.to_vec::<f32>()?), safetensors::Dtype::F32),
                DType::F64 => (bytemuck_bytes(&t.to_vec::<f64>()?), safetensors::Dtype::F64),
                DType::U32 => (bytemuck_bytes(&t.to_vec::<u32>()?), safetensors::Dtype::U32),
                DType::F16 => (bytemuck_bytes(&t.to_vec::<half::f16>()?), safetensors::Dtype::F16),
            };
            data.push((n.clone(), bytes, t.shape().to_vec(), dt));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = data
            .iter()
            .map(|(n, b, s, dt)| {
                Ok((n.clone(), safetensors::tensor::TensorView::new(*dt, s.clone(), b).map_err(|e| fmt_err(path, e))?))
            })
            .collect::<Result<_>>()?;
        safetensors::serialize_to_file(views, None, path).map_err(|e| fmt_err(path, e))
    }

    /// Replace every parameter with the tensor of the same name from a safetensors file,
    /// on each parameter's device. A missing tensor, or one of another shape or dtype,
    /// is an error naming it; nothing is replaced then.
    pub fn load(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            op: "Params::load",
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| fmt_err(path, e))?;
        let mut fresh: HashMap<usize, Tensor> = HashMap::new();
        for (i, (name, cur)) in self.names.iter().zip(&self.tensors).enumerate() {
            let view = st.tensor(name).map_err(|_| Error::Format {
                what: format!("{}", path.display()),
                msg: format!("tensor '{name}' is missing"),
            })?;
            if view.shape() != cur.shape() {
                return Err(Error::Format {
                    what: format!("{}", path.display()),
                    msg: format!("tensor '{name}' has shape {:?}, the model expects {:?}", view.shape(), cur.shape()),
                });
            }
            let dev: Device = cur.device().clone();
            let t = match (view.dtype(), cur.dtype()) {
                (safetensors::Dtype::F32, DType::F32) => {
                    Tensor::from_slice(&from_le::<f32>(view.data()), view.shape(), &dev)?
                }
                (safetensors::Dtype::F64, DType::F64) => {
                    Tensor::from_slice(&from_le::<f64>(view.data()), view.shape(), &dev)?
                }
                (safetensors::Dtype::U32, DType::U32) => {
                    Tensor::from_slice(&from_le::<u32>(view.data()), view.shape(), &dev)?
                }
                (safetensors::Dtype::F16, DType::F16) => {
                    Tensor::from_slice(&from_le::<half::f16>(view.data()), view.shape(), &dev)?
                }
                (got, want) => {
                    return Err(Error::Format {
                        what: format!("{}", path.display()),
                        msg: format!("tensor '{name}' has dtype {got:?}, the model expects {want:?}"),
                    })
                }
            };
            fresh.insert(i, t);
        }
        for (i, t) in fresh {
            self.tensors[i] = t;
        }
        Ok(())
    }
}

fn fmt_err(path: &std::path::Path, e: impl std::fmt::Display) -> Error {
    Error::Format { what: format!("{}", path.display()), msg: e.to_string() }
}

fn bytemuck_bytes<T: bytemuck::Pod>(v: &[T]) -> Vec<u8> {
    bytemuck::cast_slice(v).to_vec()
}

fn from_le<T: bytemuck::Pod>(b: &[u8]) -> Vec<T> {
    bytemuck::pod_collect_to_vec(b)
}
