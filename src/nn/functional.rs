//! The functional forms of the transformer-era layers, with PyTorch's names: the layers
//! in `norm.rs` and `attention.rs` call these with their parameters.
use crate::{DType, Error, Result, Tensor};

/// Layer normalization over the last axis: (x - mean) / sqrt(var + eps) * weight + bias
/// (biased variance), as `torch.nn.functional.layer_norm` over one axis. One kernel on the
/// GPU forward and one for the input gradient.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    x.layer_norm(Some(weight), Some(bias), eps)
}

/// RMS normalization over the last axis: x / sqrt(mean(x^2) + eps) * weight.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    x.rms_norm(Some(weight), eps)
}

/// Rows of `weight` [vocab, dim] for u32 `ids` of any shape: `ids.shape ++ [dim]`.
pub fn embedding(ids: &Tensor, weight: &Tensor) -> Result<Tensor> {
    weight.embedding(ids)
}

/// Dropout in training (`torch.nn.functional.dropout`): each element zeroed with
/// probability `p`, the rest scaled by 1 / (1 - p). The mask is drawn on the device from the
/// global generator ([`crate::manual_seed`]), so calls draw fresh masks and the sequence
/// repeats after the same seed; a checkpoint's replay redraws the same mask.
pub fn dropout(x: &Tensor, p: f64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::Invalid { op: "dropout", msg: format!("p = {p} is not in [0, 1)") });
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let keep = x.rand_like(0.0, 1.0)?.ge(p)?;
    (x * &keep)? * (1.0 / (1.0 - p))
}

/// gelu(x) = x Phi(x), exact (with erf), PyTorch's default.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    x.gelu()
}

/// The tanh approximation of gelu (PyTorch's `approximate='tanh'`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.gelu_tanh()
}

/// softmax(q k^T / sqrt(head_dim) + mask) v over `[batch, heads, seq, head_dim]` (any
/// number of leading axes), as `torch.nn.functional.scaled_dot_product_attention`.
///
/// `mask` is additive and broadcasts to `[.., seq_q, seq_k]`. `causal` hides the keys
/// after each query (aligned at the end when seq_k > seq_q, as PyTorch's lower-right
/// mask): the mask is built on the device from two index vectors by a comparison that
/// fusion computes inside the softmax kernel, so no [seq_q, seq_k] mask exists on the
/// host. On the GPU the scale, the masks and the softmax are one kernel.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
) -> Result<Tensor> {
    let op = "scaled_dot_product_attention";
    let (r, sq, d) = (q.rank(), q.shape().get(q.rank().wrapping_sub(2)), q.shape().last());
    let (Some(&sq), Some(&d)) = (sq, d) else {
        return Err(Error::Invalid { op, msg: format!("q must have rank >= 2, got {:?}", q.shape()) });
    };
    if k.rank() != r || v.rank() != r || k.shape()[r - 1] != d || k.shape()[..r - 2] != v.shape()[..r - 2] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: q.shape().to_vec(),
            rhs: k.shape().to_vec(),
            msg: format!("q, k and v must be [.., seq, head_dim] with matching head_dim (v {:?})", v.shape()),
        });
    }
    if k.shape()[r - 2] != v.shape()[r - 2] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: k.shape().to_vec(),
            rhs: v.shape().to_vec(),
            msg: "k and v must have the same sequence length".into(),
        });
    }
    let sk = k.shape()[r - 2];
    let mut scores_shape = q.shape()[..r - 1].to_vec();
    scores_shape.push(sk);
    let mut scores = q.matmul(&k.transpose(-2, -1)?)?.mul_scalar(1.0 / (d as f64).sqrt())?;
    if let Some(m) = mask {
        if crate::shape::broadcast_shapes(op, m.shape(), &scores_shape).ok().as_deref() != Some(&scores_shape[..]) {
            return Err(Error::ShapeMismatch {
                op,
                lhs: m.shape().to_vec(),
                rhs: scores_shape,
                msg: "the mask does not broadcast to the attention scores [.., seq_q, seq_k]".into(),
            });
        }
        scores = scores.add(m)?;
    }
    if causal {
        scores = scores.add(&causal_mask(sq, sk, q)?)?;
    }
    scores.softmax(-1)?.matmul(v)
}

/// [seq_q, seq_k] of 0 where query i may see key j (j <= i + seq_k - seq_q), -inf after,
/// as the log of a comparison of two index vectors on the device (fusion keeps it pending,
/// so it is computed where it is read).
fn causal_mask(sq: usize, sk: usize, like: &Tensor) -> Result<Tensor> {
    let dev = like.device();
    let dt = if like.dtype() == DType::F16 { DType::F32 } else { like.dtype() };
    // query i's last visible key, i + sk - sq (an arange of its own: no launch to shift it)
    let first = sk as f64 - sq as f64;
    let rows = Tensor::arange_dtype(first, first + sq as f64, 1.0, dt, dev)?.reshape(&[sq, 1])?;
    let cols = Tensor::arange_dtype(0.0, sk as f64, 1.0, dt, dev)?.reshape(&[1, sk])?;
    // log of the visibility mask: log 1 = 0 where a key is visible, log 0 = -inf after it
    // (elementwise ops that fuse, where a select between two constants filled two tensors)
    cols.le(&rows)?.log()?.to_dtype(like.dtype())
}

/// Batch normalization over every axis but 1 (channels) of x [batch, channels, ..]:
/// (x - mean) / sqrt(var + eps) * weight + bias with the batch's biased statistics; also
/// returns them (mean, unbiased variance), detached, for running estimates.
pub fn batch_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let op = "batch_norm";
    if x.rank() < 2 {
        return Err(Error::Invalid { op, msg: format!("expected [batch, channels, ..], got {:?}", x.shape()) });
    }
    let c = x.shape()[1];
    let per_channel = x.numel() / c.max(1);
    if per_channel < 2 {
        return Err(Error::Invalid {
            op,
            msg: format!("expected more than 1 value per channel when training, got input of shape {:?}", x.shape()),
        });
    }
    let axes: Vec<isize> = (0..x.rank() as isize).filter(|&a| a != 1).collect();
    let mean = x.mean(&axes, true)?;
    let centered = x.sub(&mean)?;
    let var = centered.square()?.mean(&axes, true)?;
    let y = affine_channels(&centered.div(&var.add_scalar(eps)?.sqrt()?)?, weight, bias)?;
    let unbiased = var.mul_scalar(per_channel as f64 / (per_channel - 1) as f64)?;
    Ok((y, mean.detach().reshape(&[c])?, unbiased.detach().reshape(&[c])?))
}

/// x * weight + bias with the [channels] vectors on axis 1.
pub(super) fn affine_channels(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1; x.rank()];
    shape[1] = x.shape()[1];
    x.mul(&weight.reshape(&shape)?)?.add(&bias.reshape(&shape)?)
}
