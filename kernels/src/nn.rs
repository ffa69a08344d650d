//! Launchers for training: the im2col / col2im pair, the fused softmax cross-entropy (loss
//! and gradient), row softmax, layer norm and pooling. Optimizer steps are in `optim.rs`.
use crate::buffer::GpuBuffer;
use crate::context::Context;
use crate::error::KResult;
use crate::launch::{u32_of, words, View};
use crate::params::{ConvParams, LaunchParams, NormParams, PoolParams, RowsParams, SoftmaxVjpParams, XentParams};
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
    /// The geometry's launch params; the strided operand's at `off` with `strides`.
    fn params(&self, numel: usize, off: usize, strides: [usize; 4]) -> KResult<ConvParams> {
        let dims = [
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
            off,
            self.batch,
        ];
        let [numel, channels, height, width, kernel_h, kernel_w, stride, padding, out_h, out_w, off, batch] =
            words(dims, "convolution size")?;
        let strides = words(strides, "stride")?;
        Ok(ConvParams {
            numel,
            channels,
            height,
            width,
            kernel_h,
            kernel_w,
            stride,
            padding,
            out_h,
            out_w,
            off,
            strides,
            batch,
        })
    }
}

impl Context {
    /// Columns [C*KH*KW, B, OH*OW] of the strided images `x` [B, C, H, W].
    pub fn im2col(self: &Arc<Self>, x: View, g: ConvGeometry) -> KResult<GpuBuffer> {
        let key = KernelKey::new(Kernel::Im2Col, KDType::F32);
        let n = g.batch * g.channels * g.kernel_h * g.kernel_w * g.out_h() * g.out_w();
        let out = self.alloc_output((n * 4) as u64)?;
        let strides = [x.strides[0], x.strides[1], x.strides[2], x.strides[3]];
        let p = g.params(n, x.offset, strides)?;
        let grid = self.grid_stride(key, n as u64)?;
        self.dispatch(key, &[x.buffer], &[&out], p.words(), grid)?;
        Ok(out)
    }

    /// Images [B, C, H, W] summing the strided columns `cols` [C*KH*KW, B, OH*OW] back.
    pub fn col2im(self: &Arc<Self>, cols: View, g: ConvGeometry) -> KResult<GpuBuffer> {
        let key = KernelKey::new(Kernel::Col2Im, KDType::F32);
        let n = g.batch * g.channels * g.height * g.width;
        let out = self.alloc_output((n * 4) as u64)?;
        // [batch, row, location] (cols is [row, batch, location])
        let p = g.params(n, cols.offset, [cols.strides[1], cols.strides[0], cols.strides[2], 0])?;
        let grid = self.grid_1d(key, n as u64)?;
        self.dispatch(key, &[cols.buffer], &[&out], p.words(), grid)?;
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
        if b.div_ceil(WG as usize) * (2 * c + 1) > crate::launch::LOOP_CAP {
            return Ok(None);
        }
        let key = KernelKey::new(Kernel::XentLoss, KDType::F32);
        let out = self.alloc_output(4)?;
        let [b, c, z_off, labels_off] = words([b, c, z.offset, labels.offset], "cross-entropy size")?;
        let p = XentParams { b, c, z_off, labels_off, g_off: 0 };
        self.dispatch(key, &[z.buffer, labels.buffer], &[&out], p.words(), (1, 1, 1))?;
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
        if 3 * c + 1 > crate::launch::LOOP_CAP {
            return Ok(None);
        }
        let key = KernelKey::new(Kernel::XentGrad, KDType::F32);
        let out = self.alloc_output((b * c * 4) as u64)?;
        let [b_w, c, z_off, labels_off, g_off] =
            words([b, c, z.offset, labels.offset, g.offset], "cross-entropy size")?;
        let p = XentParams { b: b_w, c, z_off, labels_off, g_off };
        let grid = self.grid_1d(key, b as u64)?;
        self.dispatch(key, &[z.buffer, labels.buffer, g.buffer], &[&out], p.words(), grid)?;
        Ok(Some(out))
    }

    /// softmax of contiguous rows [outer, n] at `z.offset`; None past lavapipe's loop cap.
    pub fn softmax_rows(self: &Arc<Self>, z: View, outer: usize, n: usize) -> KResult<Option<GpuBuffer>> {
        if !softmax_rows_fit(n) {
            return Ok(None);
        }
        let key = KernelKey::new(Kernel::SoftmaxRows, KDType::F32);
        let out = self.alloc_output((outer * n * 4) as u64)?;
        let [outer_w, n_w, z_off] = words([outer, n, z.offset], "softmax size")?;
        let p = RowsParams { outer: outer_w, n: n_w, z_off };
        let grid = self.grid_1d(key, outer as u64)?;
        self.dispatch(key, &[z.buffer], &[&out], p.words(), grid)?;
        Ok(Some(out))
    }

    /// [`Context::softmax_rows`] of a value the fused `prologue` computes as the kernel
    /// loads it (over `[outer, n]`, row-major): the softmax and the prologue's extra
    /// outputs; None past lavapipe's loop cap.
    pub fn softmax_rows_fused(
        self: &Arc<Self>,
        outer: usize,
        n: usize,
        prologue: &crate::fused::Epilogue,
    ) -> KResult<Option<(GpuBuffer, Vec<GpuBuffer>)>> {
        if !softmax_rows_fit(n) {
            return Ok(None);
        }
        let out = self.alloc_output((outer * n * 4) as u64)?;
        let [outer_w, n_w] = words([outer, n], "softmax size")?;
        let p = RowsParams { outer: outer_w, n: n_w, z_off: 0 }.words().to_vec();
        let grid = self.grid_1d(KernelKey::new(Kernel::SoftmaxRows, KDType::F32), outer as u64)?;
        let extras = self.dispatch_prologue(Kernel::SoftmaxRows, prologue, p, &out, grid)?;
        Ok(Some((out, extras)))
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
        if 4 * n + 1 > crate::launch::LOOP_CAP {
            return Ok(None);
        }
        let key = KernelKey::new(Kernel::SoftmaxVjp, KDType::F32);
        let out = self.alloc_output((outer * n * 4) as u64)?;
        let (g_buf, g_off) = match &g {
            Some(g) => (g.buffer, u32_of(g.offset, "offset")?),
            None => (z.buffer, u32::MAX),
        };
        let [rows, n_w, z_off, v_off] = words([outer, n, z.offset, v.offset], "softmax size")?;
        let p = SoftmaxVjpParams { rows, n: n_w, z_off, v_off, g_off, k: k.to_bits() };
        let grid = self.grid_1d(key, outer as u64)?;
        self.dispatch(key, &[z.buffer, v.buffer, g_buf], &[&out], p.words(), grid)?;
        Ok(Some(out))
    }

    /// Layer normalization (RMS normalization when `rms`) of the contiguous rows of x
    /// [rows, n] at its offset, times the weight and plus the bias when given (each n
    /// contiguous values): contiguous [rows, n]. None past lavapipe's loop cap.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm(
        self: &Arc<Self>,
        x: View,
        weight: Option<View>,
        bias: Option<View>,
        rows: usize,
        n: usize,
        eps: f32,
        rms: bool,
    ) -> KResult<Option<GpuBuffer>> {
        let (b_buf, b_off) = bias.map_or((x.buffer, 0), |b| (b.buffer, b.offset));
        let flags = norm_flags(weight.is_some(), bias.is_some(), rms);
        self.norm_rows(Kernel::LayerNorm, x, weight, (b_buf, b_off), rows, n, eps, flags)
    }

    /// The input gradient of [`Context::layer_norm`] for the cotangent g (contiguous
    /// [rows, n] at its offset): J(x) (g * w), J the normalization's Jacobian; contiguous
    /// [rows, n]. None past lavapipe's loop cap.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm_grad(
        self: &Arc<Self>,
        x: View,
        g: View,
        weight: Option<View>,
        rows: usize,
        n: usize,
        eps: f32,
        rms: bool,
    ) -> KResult<Option<GpuBuffer>> {
        let flags = norm_flags(weight.is_some(), false, rms);
        self.norm_rows(Kernel::LayerNormGrad, x, weight, (g.buffer, g.offset), rows, n, eps, flags)
    }

    /// The launch both normalization kernels share: bindings (x, weight or x, third),
    /// params [rows, n, x_off, w_off, third_off, flags, eps_bits].
    #[allow(clippy::too_many_arguments)]
    fn norm_rows(
        self: &Arc<Self>,
        kernel: Kernel,
        x: View,
        weight: Option<View>,
        (third, third_off): (&GpuBuffer, usize),
        rows: usize,
        n: usize,
        eps: f32,
        flags: u32,
    ) -> KResult<Option<GpuBuffer>> {
        if !norm_rows_fit(n) {
            return Ok(None);
        }
        let key = KernelKey::new(kernel, KDType::F32);
        let out = self.alloc_output((rows * n * 4) as u64)?;
        let (w_buf, w_off) = weight.map_or((x.buffer, 0), |w| (w.buffer, w.offset));
        let [rows_w, n_w, x_off, w_off, third_off] =
            words([rows, n, x.offset, w_off, third_off], "normalization size")?;
        let p = NormParams { rows: rows_w, n: n_w, x_off, w_off, third_off, flags, eps: eps.to_bits() };
        let grid = self.grid_1d(key, rows as u64)?;
        self.dispatch(key, &[x.buffer, w_buf, third], &[&out], p.words(), grid)?;
        Ok(Some(out))
    }

    /// Max over non-overlapping k x k windows of the strided images x [b, c, h, w]
    /// (h, w multiples of k): contiguous [b, c, h/k, w/k].
    pub fn max_pool2d(self: &Arc<Self>, x: View, shape: [usize; 4], k: usize) -> KResult<GpuBuffer> {
        let key = KernelKey::new(Kernel::MaxPool, KDType::F32);
        let n = shape[0] * shape[1] * (shape[2] / k) * (shape[3] / k);
        let out = self.alloc_output((n * 4) as u64)?;
        let p = pool_params(&x, shape, k, n)?;
        let grid = self.grid_1d(key, n as u64)?;
        self.dispatch(key, &[x.buffer], &[&out], p.words(), grid)?;
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
        let mut p = pool_params(&x, shape, k, n_out)?;
        [p.numel_in, p.pooled_off, p.g_off] = words([n_in, pooled.offset, g.offset], "pooling size")?;
        let grid = self.grid_1d(key, n_out as u64)?;
        self.dispatch(key, &[x.buffer, pooled.buffer, g.buffer], &[&out], p.words(), grid)?;
        Ok(out)
    }
}

/// [numel_out, C, OH, OW, k, x_off, xs_b, xs_c, xs_h, xs_w]
fn pool_params(x: &View, shape: [usize; 4], k: usize, n_out: usize) -> KResult<PoolParams> {
    let [numel_out, channels, out_h, out_w, k, x_off] =
        words([n_out, shape[1], shape[2] / k, shape[3] / k, k, x.offset], "pooling size")?;
    let x_strides = words([x.strides[0], x.strides[1], x.strides[2], x.strides[3]], "stride")?;
    Ok(PoolParams { numel_out, channels, out_h, out_w, k, x_off, x_strides, numel_in: 0, pooled_off: 0, g_off: 0 })
}

/// Whether the row softmax kernel takes rows of `n` (each thread reads its row three
/// times, under [`crate::launch::LOOP_CAP`]).
pub fn softmax_rows_fit(n: usize) -> bool {
    3 * n < crate::launch::LOOP_CAP
}

/// Whether the normalization kernels take rows of `n` (their threads read a row up to
/// four times, under [`crate::launch::LOOP_CAP`]).
pub fn norm_rows_fit(n: usize) -> bool {
    4 * n < crate::launch::LOOP_CAP
}

fn norm_flags(weight: bool, bias: bool, rms: bool) -> u32 {
    weight as u32 | (bias as u32) << 1 | (rms as u32) << 2
}
