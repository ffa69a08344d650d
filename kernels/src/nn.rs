//! Launchers for training: in-place optimizer steps, the im2col / col2im pair and the fused
//! softmax cross-entropy (loss and gradient).
use crate::buffer::GpuBuffer;
use crate::context::Context;
use crate::error::KResult;
use crate::launch::View;
use crate::source::{KDType, Kernel, KernelKey, WG};
use std::sync::Arc;

/// Shape of a 2-D convolution's patch extraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    pub fn out_h(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel_h) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel_w) / self.stride + 1
    }
    fn head(&self, numel: usize) -> Vec<u32> {
        [
            numel,
            self.channels,
            self.height,
            self.width,
            self.kernel_h,
            self.kernel_w,
            self.stride,
            self.padding,
            self.out_h(),
            self.out_w(),
        ]
        .iter()
        .map(|&v| v as u32)
        .collect()
    }
}

/// Hyper-parameters of one Adam step (bias corrections already computed).
#[derive(Clone, Copy, Debug)]
pub struct AdamParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias_correction1: f32,
    pub bias_correction2: f32,
    pub decoupled: bool,
}

impl Context {
    /// param -= lr * (momentum-averaged) (grad + wd param), in place; all contiguous of n elements.
    #[allow(clippy::too_many_arguments)]
    pub fn sgd_step(
        self: &Arc<Self>,
        param: &GpuBuffer,
        grad: &GpuBuffer,
        velocity: &GpuBuffer,
        n: usize,
        lr: f32,
        momentum: f32,
        wd: f32,
    ) -> KResult<()> {
        let key = KernelKey::new(if n.is_multiple_of(4) { Kernel::SgdVec4 } else { Kernel::Sgd }, KDType::F32);
        let p = [n as u32, lr.to_bits(), momentum.to_bits(), wd.to_bits()];
        let grid = self.grid_stride(key, n as u64)?;
        self.dispatch(key, &[grad], &[param, velocity], &p, grid)
    }

    /// One Adam / AdamW step in place; all buffers contiguous with n elements.
    pub fn adam_step(
        self: &Arc<Self>,
        param: &GpuBuffer,
        grad: &GpuBuffer,
        m: &GpuBuffer,
        v: &GpuBuffer,
        n: usize,
        h: AdamParams,
    ) -> KResult<()> {
        let key = KernelKey::new(if n.is_multiple_of(4) { Kernel::AdamVec4 } else { Kernel::Adam }, KDType::F32);
        let f = |x: f32| x.to_bits();
        let p = [
            n as u32,
            f(h.lr),
            f(h.beta1),
            f(h.beta2),
            f(h.eps),
            f(h.weight_decay),
            f(h.bias_correction1),
            f(h.bias_correction2),
            h.decoupled as u32,
        ];
        let grid = self.grid_stride(key, n as u64)?;
        self.dispatch(key, &[grad], &[param, m, v], &p, grid)
    }

    /// Columns [C*KH*KW, B, OH*OW] of the strided images `x` [B, C, H, W].
    pub fn im2col(self: &Arc<Self>, x: View, g: ConvGeometry) -> KResult<GpuBuffer> {
        let key = KernelKey::new(Kernel::Im2Col, KDType::F32);
        let n = g.batch * g.channels * g.kernel_h * g.kernel_w * g.out_h() * g.out_w();
        let out = self.alloc_output((n * 4) as u64)?;
        let mut p = g.head(n);
        p.push(x.offset as u32);
        p.extend(x.strides.iter().map(|&s| s as u32));
        p.extend([0, g.batch as u32]);
        let grid = self.grid_stride(key, n as u64)?;
        self.dispatch(key, &[x.buffer], &[&out], &p, grid)?;
        Ok(out)
    }

    /// Images [B, C, H, W] summing the strided columns `cols` [C*KH*KW, B, OH*OW] back.
    pub fn col2im(self: &Arc<Self>, cols: View, g: ConvGeometry) -> KResult<GpuBuffer> {
        let key = KernelKey::new(Kernel::Col2Im, KDType::F32);
        let n = g.batch * g.channels * g.height * g.width;
        let out = self.alloc_output((n * 4) as u64)?;
        let mut p = g.head(n);
        p.push(cols.offset as u32);
        p.extend([cols.strides[1], cols.strides[0], cols.strides[2]].iter().map(|&s| s as u32));
        let grid = self.grid_1d(key, n as u64)?;
        self.dispatch(key, &[cols.buffer], &[&out], &p, grid)?;
        Ok(out)
    }

    /// Mean softmax cross-entropy of contiguous logits [b, c] (at `z.offset`) against u32
    /// labels: one value. None when a thread's loops would pass lavapipe's 65,535-step cap
    /// (the caller then composes the loss from smaller ops).
    pub fn softmax_xent_mean(
        self: &Arc<Self>,
        z: View,
        labels: View,
        b: usize,
        c: usize,
    ) -> KResult<Option<GpuBuffer>> {
        if b.div_ceil(WG as usize) * (2 * c + 1) > 60_000 {
            return Ok(None);
        }
        let key = KernelKey::new(Kernel::XentLoss, KDType::F32);
        let out = self.alloc_output(4)?;
        let p = [b as u32, c as u32, z.offset as u32, labels.offset as u32];
        self.dispatch(key, &[z.buffer, labels.buffer], &[&out], &p, (1, 1, 1))?;
        Ok(Some(out))
    }

    /// (softmax(z) - onehot(labels)) * g / b for contiguous logits [b, c] and the scalar g.
    pub fn softmax_xent_grad(
        self: &Arc<Self>,
        z: View,
        labels: View,
        g: View,
        b: usize,
        c: usize,
    ) -> KResult<Option<GpuBuffer>> {
        if 3 * c + 1 > 60_000 {
            return Ok(None);
        }
        let key = KernelKey::new(Kernel::XentGrad, KDType::F32);
        let out = self.alloc_output((b * c * 4) as u64)?;
        let p = [b as u32, c as u32, z.offset as u32, labels.offset as u32, g.offset as u32];
        let grid = self.grid_1d(key, b as u64)?;
        self.dispatch(key, &[z.buffer, labels.buffer, g.buffer], &[&out], &p, grid)?;
        Ok(Some(out))
    }

    /// softmax of contiguous rows [outer, n] at `z.offset`; None past lavapipe's loop cap.
    pub fn softmax_rows(self: &Arc<Self>, z: View, outer: usize, n: usize) -> KResult<Option<GpuBuffer>> {
        if 3 * n + 1 > 60_000 {
            return Ok(None);
        }
        let key = KernelKey::new(Kernel::SoftmaxRows, KDType::F32);
        let out = self.alloc_output((outer * n * 4) as u64)?;
        let p = [outer as u32, n as u32, z.offset as u32];
        let grid = self.grid_1d(key, outer as u64)?;
        self.dispatch(key, &[z.buffer], &[&out], &p, grid)?;
        Ok(Some(out))
    }

    /// k * g * p * (v - rowsum(p * v)) with p = softmax of the contiguous rows of z
    /// [outer, n] (at their offsets); g a device scalar, or 1 when None. None past
    /// lavapipe's loop cap.
    #[allow(clippy::too_many_arguments)]
    pub fn softmax_vjp(
        self: &Arc<Self>,
        z: View,
        v: View,
        g: Option<View>,
        k: f32,
        outer: usize,
        n: usize,
    ) -> KResult<Option<GpuBuffer>> {
        if 4 * n + 1 > 60_000 {
            return Ok(None);
        }
        let key = KernelKey::new(Kernel::SoftmaxVjp, KDType::F32);
        let out = self.alloc_output((outer * n * 4) as u64)?;
        let (g_buf, g_off) = match &g {
            Some(g) => (g.buffer, g.offset as u32),
            None => (z.buffer, u32::MAX),
        };
        let p = [outer as u32, n as u32, z.offset as u32, v.offset as u32, g_off, k.to_bits()];
        let grid = self.grid_1d(key, outer as u64)?;
        self.dispatch(key, &[z.buffer, v.buffer, g_buf], &[&out], &p, grid)?;
        Ok(Some(out))
    }

    /// Max over non-overlapping k x k windows of the strided images x [b, c, h, w]
    /// (h, w multiples of k): contiguous [b, c, h/k, w/k].
    pub fn max_pool2d(self: &Arc<Self>, x: View, shape: [usize; 4], k: usize) -> KResult<GpuBuffer> {
        let key = KernelKey::new(Kernel::MaxPool, KDType::F32);
        let n = shape[0] * shape[1] * (shape[2] / k) * (shape[3] / k);
        let out = self.alloc_output((n * 4) as u64)?;
        let p = pool_params(&x, shape, k, n);
        let grid = self.grid_1d(key, n as u64)?;
        self.dispatch(key, &[x.buffer], &[&out], &p, grid)?;
        Ok(out)
    }

    /// The gradient of [`Context::max_pool2d`] for the pooled maxima and their cotangent
    /// `g` (both contiguous [b, c, h/k, w/k] from their offsets): contiguous [b, c, h, w].
    pub fn max_pool2d_grad(
        self: &Arc<Self>,
        x: View,
        pooled: View,
        g: View,
        shape: [usize; 4],
        k: usize,
    ) -> KResult<GpuBuffer> {
        let key = KernelKey::new(Kernel::MaxPoolGrad, KDType::F32);
        let n_out = shape[0] * shape[1] * (shape[2] / k) * (shape[3] / k);
        let n_in: usize = shape.iter().product();
        let out = self.alloc_output((n_in * 4) as u64)?;
        let mut p = pool_params(&x, shape, k, n_out);
        p.extend([n_in as u32, pooled.offset as u32, g.offset as u32]);
        let grid = self.grid_1d(key, n_out as u64)?;
        self.dispatch(key, &[x.buffer, pooled.buffer, g.buffer], &[&out], &p, grid)?;
        Ok(out)
    }
}

/// [numel_out, C, OH, OW, k, x_off, xs_b, xs_c, xs_h, xs_w]
fn pool_params(x: &View, shape: [usize; 4], k: usize, n_out: usize) -> Vec<u32> {
    let mut p =
        vec![n_out as u32, shape[1] as u32, (shape[2] / k) as u32, (shape[3] / k) as u32, k as u32, x.offset as u32];
    p.extend(x.strides.iter().map(|&s| s as u32));
    p
}
