//! im2col and its adjoint col2im: a 2-D convolution is im2col followed by a matmul. Both
//! are linear and each is the other's VJP, so convolutions differentiate to any order.
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::storage::CpuStorage;
use crate::tensor::check_float;
use crate::{Error, Node, Result, Tensor};
use std::sync::Arc;
use wgrad_kernels::{Context, ConvGeometry};

fn geometry_from(x: &Tensor, kernel: (usize, usize), stride: usize, padding: usize) -> Result<ConvGeometry> {
    if x.rank() != 4 {
        return Err(Error::Invalid {
            op: "im2col",
            msg: format!("expected images [B, C, H, W], got shape {:?}", x.shape()),
        });
    }
    let s = x.shape();
    let g = ConvGeometry {
        batch: s[0],
        channels: s[1],
        height: s[2],
        width: s[3],
        kernel_h: kernel.0,
        kernel_w: kernel.1,
        stride,
        padding,
    };
    if stride == 0 || kernel.0 == 0 || kernel.1 == 0 || s[2] + 2 * padding < kernel.0 || s[3] + 2 * padding < kernel.1 {
        return Err(Error::Invalid {
            op: "im2col",
            msg: format!("kernel {kernel:?}, stride {stride}, padding {padding} do not fit images {s:?}"),
        });
    }
    Ok(g)
}

/// CPU im2col (forward) or col2im (adjoint) in f64 with columns [R, B, L]: `adjoint`
/// scatters columns back.
fn cpu_pass(src: &[f64], g: &ConvGeometry, adjoint: bool) -> Vec<f64> {
    let (c, h, w, kh, kw) = (g.channels, g.height, g.width, g.kernel_h, g.kernel_w);
    let (oh, ow) = (g.out_h(), g.out_w());
    let (rows, l) = (c * kh * kw, oh * ow);
    let mut out = vec![0.0; if adjoint { g.batch * c * h * w } else { g.batch * rows * l }];
    for b in 0..g.batch {
        for r in 0..rows {
            let (ci, i, j) = (r / (kh * kw), (r / kw) % kh, r % kw);
            for p in 0..l {
                let hh = (p / ow) * g.stride + i;
                let ww = (p % ow) * g.stride + j;
                if hh < g.padding || ww < g.padding || hh - g.padding >= h || ww - g.padding >= w {
                    continue;
                }
                let img = ((b * c + ci) * h + hh - g.padding) * w + ww - g.padding;
                let col = (r * g.batch + b) * l + p;
                if adjoint {
                    out[img] += src[col];
                } else {
                    out[col] = src[img];
                }
            }
        }
    }
    out
}

/// Patches of images [B, C, H, W] as columns [C*KH*KW, B, OH*OW] (zero padding).
pub struct Im2Col {
    pub geom: ConvGeometry,
}

impl Primitive for Im2Col {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn name(&self) -> String {
        "im2col".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_float("im2col", x[0])?;
        let g = &self.geom;
        Ok(OutSpec::new(&[g.channels * g.kernel_h * g.kernel_w, g.batch, g.out_h() * g.out_w()], x[0].dtype()))
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        Ok(out.cpu(CpuStorage::from_f64(cpu_pass(&x[0].cpu_values(), &self.geom, false), out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        Ok(out.gpu(ctx.im2col(x[0].view(), self.geom)?, x[0].device()))
    }
    /// im2col is linear; its adjoint is col2im: x-bar = col2im(g)
    fn vjp(&self, _node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.col2im(self.geom)?)])
    }
    /// jvp = im2col(t)
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        let g = &self.geom;
        t[0].as_ref().map(|t| t.im2col((g.kernel_h, g.kernel_w), g.stride, g.padding)).transpose()
    }
    /// batch: fold the examples into the image batch N, then split the columns' N again
    fn batch(&self, x: &[Tensor], _batched: &[bool], b: &Batch) -> Result<Tensor> {
        let (g, s) = (&self.geom, x[0].shape());
        let folded = x[0].reshape(&[b.size * s[1], s[2], s[3], s[4]])?;
        let cols = folded.im2col((g.kernel_h, g.kernel_w), g.stride, g.padding)?;
        let r = g.channels * g.kernel_h * g.kernel_w;
        cols.reshape(&[r, b.size, g.batch, g.out_h() * g.out_w()])?.permute(&[1, 0, 2, 3])
    }
}

/// The adjoint of im2col: columns [C*KH*KW, B, OH*OW] summed back into images.
pub struct Col2Im {
    pub geom: ConvGeometry,
}

impl Primitive for Col2Im {
    fn computes_in_f32(&self, inputs: &[&Tensor]) -> bool {
        Tensor::any_f16(inputs)
    }
    fn name(&self) -> String {
        "col2im".into()
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        check_float("col2im", x[0])?;
        let g = &self.geom;
        let want = [g.channels * g.kernel_h * g.kernel_w, g.batch, g.out_h() * g.out_w()];
        if x[0].shape() != want {
            return Err(Error::Invalid {
                op: "col2im",
                msg: format!("expected columns {want:?}, got {:?}", x[0].shape()),
            });
        }
        Ok(OutSpec::new(&[g.batch, g.channels, g.height, g.width], x[0].dtype()))
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        Ok(out.cpu(CpuStorage::from_f64(cpu_pass(&x[0].cpu_values(), &self.geom, true), out.dtype)))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        Ok(out.gpu(ctx.col2im(x[0].view(), self.geom)?, x[0].device()))
    }
    /// col2im is linear; its adjoint is im2col: cols-bar = im2col(g)
    fn vjp(&self, _node: &Arc<Node>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let geom = &self.geom;
        Ok(vec![Some(g.im2col((geom.kernel_h, geom.kernel_w), geom.stride, geom.padding)?)])
    }
    /// jvp = col2im(t)
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        t[0].as_ref().map(|t| t.col2im(self.geom)).transpose()
    }
    /// batch: fold the examples into the columns' N, then split the images' N again
    fn batch(&self, x: &[Tensor], _batched: &[bool], b: &Batch) -> Result<Tensor> {
        let g = self.geom;
        let s = x[0].shape();
        let cols = x[0].permute(&[1, 0, 2, 3])?.reshape(&[s[1], b.size * s[2], s[3]])?;
        let images = cols.col2im(ConvGeometry { batch: b.size * g.batch, ..g })?;
        images.reshape(&[b.size, g.batch, g.channels, g.height, g.width])
    }
}

impl Tensor {
    /// Patches of images [B, C, H, W] as columns [C*KH*KW, B, OH*OW] (zero padding).
    pub fn im2col(&self, kernel: (usize, usize), stride: usize, padding: usize) -> Result<Tensor> {
        check_float("im2col", self)?;
        let geom = geometry_from(self, kernel, stride, padding)?;
        bind(Arc::new(Im2Col { geom }), &[self])
    }

    /// The adjoint of im2col: columns [C*KH*KW, B, OH*OW] summed back into images.
    pub fn col2im(&self, geom: ConvGeometry) -> Result<Tensor> {
        check_float("col2im", self)?;
        bind(Arc::new(Col2Im { geom }), &[self])
    }

    /// 2-D convolution (cross-correlation, as PyTorch): x [B, C, H, W], weight [O, C, KH, KW],
    /// optional bias [O]; returns [B, O, OH, OW].
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
        if weight.rank() != 4 || self.rank() != 4 || weight.shape()[1] != self.shape()[1] {
            return Err(Error::ShapeMismatch {
                op: "conv2d",
                lhs: self.shape().to_vec(),
                rhs: weight.shape().to_vec(),
                msg: "expected x [B, C, H, W] and weight [O, C, KH, KW]".into(),
            });
        }
        let (o, kh, kw) = (weight.shape()[0], weight.shape()[2], weight.shape()[3]);
        let cols = self.im2col((kh, kw), stride, padding)?;
        let g = geometry_from(self, (kh, kw), stride, padding)?;
        let r = g.channels * kh * kw;
        let w2 = weight.reshape(&[o, r])?;
        // one matmul over the whole batch: [O, R] @ [R, B*L] -> [O, B*L]
        let mut y = w2.matmul(&cols.reshape(&[r, g.batch * g.out_h() * g.out_w()])?)?;
        if let Some(b) = bias {
            y = y.add(&b.reshape(&[o, 1])?)?;
        }
        y.reshape(&[o, g.batch, g.out_h(), g.out_w()])?.permute(&[1, 0, 2, 3])
    }
}
