//! VJPs of im2col / col2im: each is the other's adjoint.
use wgrad_core::{ConvGeometry, Result, Tensor};

/// im2col is linear: x-bar = col2im(g).
pub(crate) fn im2col(g_geom: ConvGeometry, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    Ok(vec![Some(g.col2im(g_geom)?)])
}

/// col2im is linear: cols-bar = im2col(g).
pub(crate) fn col2im(geom: ConvGeometry, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    Ok(vec![Some(g.im2col((geom.kernel_h, geom.kernel_w), geom.stride, geom.padding)?)])
}
