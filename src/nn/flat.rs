//! Flat parameters: [`Params::flatten`] moves every parameter of one dtype on one device
//! into one flat 1-D buffer and leaves views of it in their place, so an optimizer updates
//! all of them in one dispatch, whatever the adapter's storage-buffer limit, and a
//! global-norm clip is one reduction (apex's and DeepSpeed's flat master weights,
//! JAX's `ravel_pytree`).
use super::Params;
use crate::{DType, Device, Error, Result, Tensor};

/// Each parameter's window starts at a multiple of this many elements, so that views read
/// whole vec4s where the kernels want them.
const ALIGN: usize = 4;

/// The flat buffers of a [`Params`] (empty until [`Params::flatten`]).
#[derive(Clone, Default)]
pub(super) struct Flat {
    /// One flat tensor per (device, dtype), in order of first appearance.
    pub(super) tensors: Vec<Tensor>,
    pub(super) groups: Vec<FlatGroup>,
}

/// Where the parameters of one flat buffer live in it.
#[derive(Clone, Debug)]
pub struct FlatGroup {
    /// (parameter index, element offset, shape), matrices (rank >= 2) first.
    members: Vec<(usize, usize, Vec<usize>)>,
    /// The elements that hold matrices: [0, matrices_end).
    matrices_end: usize,
    len: usize,
}

impl FlatGroup {
    /// (parameter index, first element, shape) of each member, in flat order.
    pub fn members(&self) -> &[(usize, usize, Vec<usize>)] {
        &self.members
    }
    /// The matrices (rank >= 2: weights, embeddings) come first and end here, so a weight
    /// decay for matrices only applies to a prefix of the buffer.
    pub fn matrices_end(&self) -> usize {
        self.matrices_end
    }
    /// Elements of the flat buffer (windows are padded to multiples of 4).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Params {
    /// Hold the parameters as views of one flat buffer per dtype and device (matrices
    /// first, each window padded to a multiple of 4 elements). Their values, names and
    /// shapes stay; [`Params::tensors`] returns the views. Optimizers then update each flat
    /// buffer in one dispatch and clip with one reduction over the packed gradients.
    /// Calling it again (after [`Params::add`]) packs every parameter anew.
    pub fn flatten(&mut self) -> Result<()> {
        let mut keys: Vec<(Device, DType)> = Vec::new();
        for t in self.tensors() {
            let key = (t.device().clone(), t.dtype());
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let mut flat = Flat::default();
        for (device, dtype) in keys {
            let of_key = |t: &Tensor| t.device() == &device && t.dtype() == dtype;
            let idx: Vec<usize> = (0..self.len()).filter(|&i| of_key(&self.tensors()[i])).collect();
            let (matrices, rest): (Vec<usize>, Vec<usize>) = idx.iter().partition(|&&i| self.tensors()[i].rank() >= 2);
            let mut group = FlatGroup { members: Vec::new(), matrices_end: 0, len: 0 };
            for (k, &i) in matrices.iter().chain(&rest).enumerate() {
                let t = &self.tensors()[i];
                group.members.push((i, group.len, t.shape().to_vec()));
                group.len += t.numel().next_multiple_of(ALIGN);
                if k + 1 == matrices.len() {
                    group.matrices_end = group.len;
                }
            }
            let parts: Vec<Tensor> = group.members.iter().map(|&(i, _, _)| self.tensors()[i].detach()).collect();
            let offsets: Vec<usize> = group.members.iter().map(|&(_, at, _)| at).collect();
            flat.tensors.push(Tensor::pack(&parts, &offsets, group.len)?);
            flat.groups.push(group);
        }
        self.flat = flat;
        self.views_of_flat()
    }

    /// Whether every parameter is a view of its flat buffer ([`Params::flatten`] was called
    /// and no parameter was added or replaced since).
    pub fn is_flat(&self) -> bool {
        let flat = &self.flat;
        let members: usize = flat.groups.iter().map(|g| g.members.len()).sum();
        !flat.groups.is_empty()
            && members == self.len()
            && flat
                .groups
                .iter()
                .zip(&flat.tensors)
                .all(|(g, f)| g.members.iter().all(|(i, _, _)| self.tensors()[*i].shares_storage(f)))
    }

    /// The flat buffers and where each parameter is in them (empty unless flattened).
    pub fn flat_buffers(&self) -> (&[Tensor], &[FlatGroup]) {
        (&self.flat.tensors, &self.flat.groups)
    }

    /// An error when the parameters were flattened but one was added or replaced since (an
    /// optimizer would update the flat buffer and miss it).
    pub(crate) fn check_flat(&self) -> Result<bool> {
        if self.flat.groups.is_empty() {
            return Ok(false);
        }
        if !self.is_flat() {
            return Err(Error::Invalid {
                op: "Params::flatten",
                msg: "a parameter was added or replaced after flatten(); call flatten() again".into(),
            });
        }
        Ok(true)
    }

    /// `grads` (one per parameter) packed like the parameters: one flat gradient per flat
    /// buffer, zeros in the padding (one pack per buffer: a few dispatches on a GPU).
    pub(crate) fn pack_grads(&self, grads: &[Tensor]) -> Result<Vec<Tensor>> {
        self.flat
            .groups
            .iter()
            .map(|g| {
                let parts: Vec<Tensor> = g.members.iter().map(|(i, _, _)| grads[*i].detach()).collect();
                let offsets: Vec<usize> = g.members.iter().map(|(_, at, _)| *at).collect();
                Tensor::pack(&parts, &offsets, g.len)
            })
            .collect()
    }

    /// Run an in-place update on the flat buffers: it writes the buffers the views read (on
    /// either device); views are made again only if it replaced a buffer.
    pub(crate) fn update_flat<R>(&mut self, f: impl FnOnce(&mut [Tensor]) -> Result<R>) -> Result<R> {
        let before: Vec<Tensor> = self.flat.tensors.clone();
        let out = f(&mut self.flat.tensors);
        let moved = before.iter().zip(&self.flat.tensors).any(|(a, b)| !a.shares_storage(b));
        if moved {
            self.views_of_flat()?;
        }
        out
    }

    /// Pack the current parameter values into the existing flat buffers (in place on a
    /// GPU) and make the parameters views again (after [`Params::load`]).
    pub(super) fn refill_flat(&mut self) -> Result<()> {
        if self.flat.groups.is_empty() {
            return Ok(());
        }
        for k in 0..self.flat.groups.len() {
            let g = &self.flat.groups[k];
            let parts: Vec<Tensor> = g.members.iter().map(|(i, _, _)| self.tensors()[*i].detach()).collect();
            let offsets: Vec<usize> = g.members.iter().map(|(_, at, _)| *at).collect();
            let packed = Tensor::pack(&parts, &offsets, g.len)?;
            self.flat.tensors[k].assign_(&packed)?;
        }
        self.views_of_flat()
    }

    /// Every member parameter as a view of its window.
    fn views_of_flat(&mut self) -> Result<()> {
        for (g, flat) in self.flat.groups.iter().zip(&self.flat.tensors) {
            for (i, at, shape) in &g.members {
                let n = shape.iter().product();
                let view = flat.narrow(0, *at, n)?.reshape(shape)?;
                self.tensors[*i] = view;
            }
        }
        Ok(())
    }
}
