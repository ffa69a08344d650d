//! im2col and its adjoint col2im: a 2-D convolution is im2col followed by a matmul. Both
//! are linear and each is the other's VJP, so convolutions differentiate to any order.
use super::cpu_of;
use crate::graph::{record, Op};
use crate::storage::CpuStorage;
use crate::tensor::check_float;
use crate::{cpu, Error, Result, Tensor};
use wgrad_kernels::ConvGeometry;

fn geometry_from(x: &Tensor, kernel: (usize, usize), stride: usize, padding: usize) -> Result<ConvGeometry> {
    if x.rank() != 4 {
        return Err(Error::Invalid { op: "im2col", msg: format!("expected images [B, C, H, W], got shape {:?}", x.shape()) });
    }
    let s = x.shape();
    let g = ConvGeometry { batch: s[0], channels: s[1], height: s[2], width: s[3], kernel_h: kernel.0, kernel_w: kernel.1, stride, padding };
    if stride == 0 || kernel.0 == 0 || kernel.1 == 0 || s[2] + 2 * padding < kernel.0 || s[3] + 2 * padding < kernel.1 {
        return Err(Error::Invalid { op: "im2col", msg: format!("kernel {kernel:?}, stride {stride}, padding {padding} do not fit images {s:?}") });
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

impl Tensor {
    /// Patches of images [B, C, H, W] as columns [C*KH*KW, B, OH*OW] (zero padding).
    pub fn im2col(&self, kernel: (usize, usize), stride: usize, padding: usize) -> Result<Tensor> {
        check_float("im2col", self)?;
        if self.dtype() == crate::DType::F16 {
            return self.via_f32(|x| x.im2col(kernel, stride, padding));
        }
        let g = geometry_from(self, kernel, stride, padding)?;
        let shape = [g.channels * g.kernel_h * g.kernel_w, g.batch, g.out_h() * g.out_w()];
        let out = super::run(
            self,
            &shape,
            self.dtype(),
            || Ok(CpuStorage::from_f64(cpu_pass(&cpu::read(cpu_of(self), self.layout()), &g, false), self.dtype())),
            |ctx| Ok(ctx.im2col(self.view(), g)?),
        )?;
        Ok(record(out, Op::Im2Col(g), &[self], &[false], false))
    }

    /// The adjoint of im2col: columns [C*KH*KW, B, OH*OW] summed back into images.
    pub fn col2im(&self, g: ConvGeometry) -> Result<Tensor> {
        check_float("col2im", self)?;
        if self.dtype() == crate::DType::F16 {
            return self.via_f32(|x| x.col2im(g));
        }
        let want = [g.channels * g.kernel_h * g.kernel_w, g.batch, g.out_h() * g.out_w()];
        if self.shape() != want {
            return Err(Error::Invalid { op: "col2im", msg: format!("expected columns {want:?}, got {:?}", self.shape()) });
        }
        let shape = [g.batch, g.channels, g.height, g.width];
        let out = super::run(
            self,
            &shape,
            self.dtype(),
            || Ok(CpuStorage::from_f64(cpu_pass(&cpu::read(cpu_of(self), self.layout()), &g, true), self.dtype())),
            |ctx| Ok(ctx.col2im(self.view(), g)?),
        )?;
        Ok(record(out, Op::Col2Im(g), &[self], &[false], false))
    }

    /// 2-D convolution (cross-correlation, as PyTorch): x [B, C, H, W], weight [O, C, KH, KW],
    /// optional bias [O]; returns [B, O, OH, OW].
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
        if weight.rank() != 4 || self.rank() != 4 || weight.shape()[1] != self.shape()[1] {
            return Err(Error::ShapeMismatch { op: "conv2d", lhs: self.shape().to_vec(), rhs: weight.shape().to_vec(), msg: "expected x [B, C, H, W] and weight [O, C, KH, KW]".into() });
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
