//! Strided views: shape, strides (in elements, 0 on broadcast dims) and offset.
use crate::shape::{contiguous_strides, numel};
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: 0 }
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    pub fn is_contiguous(&self) -> bool {
        wgrad_kernels::is_contiguous(&self.shape, &self.strides)
    }
    /// Element offsets in row-major order of the view.
    pub fn offsets(&self) -> Vec<usize> {
        let n = self.numel();
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let rank = self.shape.len();
        let mut idx = vec![0usize; rank];
        let mut off = self.offset;
        for _ in 0..n {
            out.push(off);
            for d in (0..rank).rev() {
                idx[d] += 1;
                off += self.strides[d];
                if idx[d] < self.shape[d] {
                    break;
                }
                off -= self.strides[d] * self.shape[d];
                idx[d] = 0;
            }
        }
        out
    }
    /// The layout with `axes` moved last, the others first in order (what a GPU reduction
    /// over `axes` walks).
    pub fn axes_last(&self, axes: &[usize]) -> Layout {
        let mut perm: Vec<usize> = (0..self.shape.len()).filter(|d| !axes.contains(d)).collect();
        perm.extend_from_slice(axes);
        self.permute(&perm)
    }
    pub fn permute(&self, perm: &[usize]) -> Layout {
        Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }
    /// View as `shape` by broadcasting (caller checked compatibility).
    pub fn broadcast_to(&self, shape: &[usize]) -> Layout {
        let extra = shape.len() - self.shape.len();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.shape.len() {
            strides[extra + i] = if self.shape[i] == 1 && shape[extra + i] != 1 { 0 } else { self.strides[i] };
        }
        Layout { shape: shape.to_vec(), strides, offset: self.offset }
    }
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Layout {
        let mut l = self.clone();
        l.offset += start * self.strides[axis];
        l.shape[axis] = len;
        l
    }
    /// A reshape that keeps the data in place (see [`view_strides`]); None when it needs a
    /// copy.
    pub fn reshape(&self, shape: &[usize]) -> Result<Option<Layout>> {
        if numel(shape) != self.numel() {
            return Err(Error::ElementCount {
                op: "reshape",
                shape: shape.to_vec(),
                got: self.numel(),
                expected: numel(shape),
            });
        }
        if self.is_contiguous() {
            return Ok(Some(Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: self.offset }));
        }
        Ok(view_strides(&self.shape, &self.strides, shape).map(|strides| Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        }))
    }
}

/// Strides that show a view of `old_shape` with `old_strides` as `new_shape` in the same
/// row-major order, or None when that needs a copy (PyTorch's `computeStride`). The old
/// dims fall into chunks that are contiguous among themselves (dim d - 1's stride is dim
/// d's stride times its size); each chunk must be split exactly by consecutive new dims,
/// which take strides within the chunk. Splitting the last axis of a narrowed tensor
/// into heads is a view; merging permuted axes is not. The element count matches.
fn view_strides(old_shape: &[usize], old_strides: &[usize], new_shape: &[usize]) -> Option<Vec<usize>> {
    if old_shape.is_empty() || numel(old_shape) == 0 {
        return None;
    }
    let mut new_strides = vec![0; new_shape.len()];
    let mut view_d = new_shape.len() as isize - 1;
    let mut chunk_stride = *old_strides.last().expect("rank > 0");
    let (mut tensor_numel, mut view_numel) = (1usize, 1usize);
    for d in (0..old_shape.len()).rev() {
        tensor_numel *= old_shape[d];
        let chunk_ends = d == 0 || (old_shape[d - 1] != 1 && old_strides[d - 1] != tensor_numel * chunk_stride);
        if chunk_ends {
            while view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d as usize] == 1) {
                new_strides[view_d as usize] = view_numel * chunk_stride;
                view_numel *= new_shape[view_d as usize];
                view_d -= 1;
            }
            if view_numel != tensor_numel {
                return None;
            }
            if d > 0 {
                chunk_stride = old_strides[d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    (view_d == -1).then_some(new_strides)
}
