//! The named parameter list of a model and its buffers (non-trained state such as
//! BatchNorm's running statistics), with safetensors save / load of both.
use crate::{DType, Device, Error, Result, Tensor};
use std::collections::HashMap;
use std::sync::Mutex;

/// Named parameter tensors, in registration order, and the model's [`Buffers`].
#[derive(Clone, Default)]
pub struct Params {
    names: Vec<String>,
    pub(super) tensors: Vec<Tensor>,
    buffers: Buffers,
    /// After [`Params::flatten`]: the flat buffers the parameters are views of.
    pub(super) flat: super::flat::Flat,
}

/// A model's named non-trained state: tensors a layer reads in every mode and may replace
/// in training (running statistics), saved and loaded with the weights. Layers hold
/// indices; a forward pass reaches them through [`super::Ctx::buffers`], so updates work
/// through a shared reference (under `value_and_grad_many` as well).
#[derive(Default)]
pub struct Buffers {
    names: Vec<String>,
    tensors: Mutex<Vec<Tensor>>,
}

impl Clone for Buffers {
    /// A copy of the values: buffers are updated in place ([`Buffers::set`]), so a clone
    /// gets buffers of its own.
    fn clone(&self) -> Self {
        let own = |t: Tensor| -> Tensor {
            let mut copy = match t.zeros_like() {
                Ok(z) => z,
                Err(_) => return t,
            };
            if copy.assign_(&t).is_err() {
                return t;
            }
            copy
        };
        Buffers { names: self.names.clone(), tensors: Mutex::new(self.all().into_iter().map(own).collect()) }
    }
}

impl Buffers {
    /// The buffer at index `i` (a cheap handle to its storage).
    pub fn get(&self, i: usize) -> Tensor {
        self.lock()[i].clone()
    }
    /// Set buffer `i` to `t`'s values (detached: buffers carry no derivatives). A buffer of
    /// the same shape, dtype and device is overwritten in place (so a jitted step updates
    /// it on every replay); anything else replaces it.
    pub fn set(&self, i: usize, t: Tensor) {
        let mut all = self.lock();
        let cur = &mut all[i];
        let same = cur.shape() == t.shape() && cur.dtype() == t.dtype() && cur.device() == t.device();
        if same && cur.assign_(&t.detach()).is_ok() {
            return;
        }
        *cur = t.detach();
    }
    /// Every buffer, in registration order.
    pub fn all(&self) -> Vec<Tensor> {
        self.lock().clone()
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Tensor>> {
        // a panic elsewhere cannot leave a half-written Vec<Tensor>: use it as it is
        self.tensors.lock().unwrap_or_else(|e| e.into_inner())
    }
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
    /// Register a buffer (non-trained state); returns its index into [`Params::buffers`].
    pub fn add_buffer(&mut self, name: &str, t: Tensor) -> usize {
        self.buffers.names.push(name.to_string());
        let mut all = self.buffers.lock();
        all.push(t.detach());
        all.len() - 1
    }
    pub fn buffers(&self) -> &Buffers {
        &self.buffers
    }

    /// Every (name, tensor) that [`Params::save`] writes: the parameters, then the buffers.
    fn named(&self) -> Vec<(String, Tensor)> {
        let params = self.names.iter().cloned().zip(self.tensors.iter().cloned());
        params.chain(self.buffers.names.iter().cloned().zip(self.buffers.all())).collect()
    }

    /// Write all parameters and buffers to a safetensors file (in their stored dtypes).
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let mut data: Vec<(String, Vec<u8>, Vec<usize>, safetensors::Dtype)> = Vec::new();
        for (n, t) in &self.named() {
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

    /// Replace every parameter and buffer with the tensor of the same name from a
    /// safetensors file, on each one's device. A missing tensor, or one of another shape
    /// or dtype, is an error naming it; nothing is replaced then.
    pub fn load(&mut self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            op: "Params::load",
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| fmt_err(path, e))?;
        let mut fresh: HashMap<usize, Tensor> = HashMap::new();
        for (i, (name, cur)) in self.named().iter().enumerate() {
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
        let n_params = self.tensors.len();
        for (i, t) in fresh {
            if i < n_params {
                self.tensors[i] = t;
            } else {
                self.buffers.set(i - n_params, t);
            }
        }
        // flat parameters: the loaded values go into the flat buffers (in place on a GPU,
        // so a jitted step keeps reading them), and the parameters become views again
        self.refill_flat()
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
