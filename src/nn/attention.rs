//! Token embeddings and multi-head attention.
use super::{scaled_dot_product_attention, Ctx, Init, Linear, Module, Params};
use crate::{Device, Error, Result, Tensor};

/// A lookup table [vocab, dim]: u32 ids of any shape -> `ids.shape ++ [dim]`.
pub struct Embedding {
    w: usize,
}

impl Embedding {
    /// N(0, 1) weights (PyTorch's default), seeded.
    pub fn new(p: &mut Params, name: &str, vocab: usize, dim: usize, seed: u64, dev: &Device) -> Result<Self> {
        Self::with_std(p, name, vocab, dim, 1.0, seed, dev)
    }
    /// N(0, std^2) weights.
    pub fn with_std(
        p: &mut Params,
        name: &str,
        vocab: usize,
        dim: usize,
        std: f64,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        let w = p.add(&format!("{name}.weight"), Tensor::randn(&[vocab, dim], seed, dev)?.mul_scalar(std)?);
        Ok(Embedding { w })
    }
    /// The weight's index in the model's [`Params`].
    pub fn weight(&self) -> usize {
        self.w
    }
    /// h W^T: scores of every token for features h [.., dim], with the embedding matrix as
    /// the output projection (weight tying: one parameter, both gradients summed into it).
    pub fn attend(&self, c: &Ctx, h: &Tensor) -> Result<Tensor> {
        h.matmul(&c.params[self.w].t()?)
    }
}

impl Module for Embedding {
    fn forward(&self, c: &Ctx, ids: &Tensor) -> Result<Tensor> {
        super::embedding(ids, &c.params[self.w])
    }
}

/// Multi-head attention over [batch, seq, embd] with one fused projection to q, k and v
/// (weight [3 embd, embd], PyTorch's `in_proj`) and an output projection.
/// `forward(x)` is self-attention; `forward_many(&[query, key, value])` (optionally a
/// fourth input, an additive mask broadcasting to [batch, heads, seq_q, seq_k]) attends
/// the query to separate keys and values.
pub struct MultiheadAttention {
    qkv: Linear,
    proj: Linear,
    embd: usize,
    heads: usize,
    /// Whether each position attends only to itself and earlier ones.
    pub causal: bool,
}

impl MultiheadAttention {
    /// Xavier-uniform projections, zero biases, not causal.
    pub fn new(p: &mut Params, name: &str, embd: usize, heads: usize, seed: u64, dev: &Device) -> Result<Self> {
        Self::with_init(p, name, embd, heads, Init::XavierUniform, Init::XavierUniform, seed, dev)
    }
    /// With the initializations of the qkv and output projections (e.g. GPT's
    /// N(0, 0.02) and N(0, 0.02 / sqrt(2 layers))).
    #[allow(clippy::too_many_arguments)]
    pub fn with_init(
        p: &mut Params,
        name: &str,
        embd: usize,
        heads: usize,
        qkv_init: Init,
        proj_init: Init,
        seed: u64,
        dev: &Device,
    ) -> Result<Self> {
        if heads == 0 || !embd.is_multiple_of(heads) {
            return Err(Error::Invalid {
                op: "MultiheadAttention",
                msg: format!("embedding {embd} is not heads {heads} * head_dim for a whole head_dim"),
            });
        }
        let qkv = Linear::with_init(p, &format!("{name}.in_proj"), embd, 3 * embd, qkv_init, seed, dev)?;
        let proj = Linear::with_init(p, &format!("{name}.out_proj"), embd, embd, proj_init, seed + 1, dev)?;
        Ok(MultiheadAttention { qkv, proj, embd, heads, causal: false })
    }
    pub fn causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    fn check(&self, what: &str, x: &Tensor) -> Result<()> {
        if x.rank() != 3 || x.shape()[2] != self.embd {
            return Err(Error::Invalid {
                op: "MultiheadAttention",
                msg: format!(
                    "the {what} must be [batch, seq, {}] ({} heads of {}), got {:?}",
                    self.embd,
                    self.heads,
                    self.embd / self.heads,
                    x.shape()
                ),
            });
        }
        Ok(())
    }

    /// [b, t, embd] -> [b, heads, t, head_dim].
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t) = (x.shape()[0], x.shape()[1]);
        x.reshape(&[b, t, self.heads, self.embd / self.heads])?.permute(&[0, 2, 1, 3])
    }

    /// Attention of the projected q, k, v ([b, t, embd] each), merged and projected out.
    fn attend(&self, c: &Ctx, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t) = (q.shape()[0], q.shape()[1]);
        let (q, k, v) = (self.split_heads(q)?, self.split_heads(k)?, self.split_heads(v)?);
        let y = scaled_dot_product_attention(&q, &k, &v, mask, self.causal)?;
        let merged = y.permute(&[0, 2, 1, 3])?.reshape(&[b, t, self.embd])?;
        self.proj.forward(c, &merged)
    }
}

impl Module for MultiheadAttention {
    fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        self.check("input", x)?;
        let qkv = self.qkv.forward(c, x)?;
        let e = self.embd;
        let (q, k, v) = (qkv.narrow(2, 0, e)?, qkv.narrow(2, e, e)?, qkv.narrow(2, 2 * e, e)?);
        self.attend(c, &q, &k, &v, None)
    }

    fn forward_many(&self, c: &Ctx, inputs: &[&Tensor]) -> Result<Tensor> {
        let (q, k, v, mask) = match inputs {
            [x] => return self.forward(c, x),
            [q, k, v] => (*q, *k, *v, None),
            [q, k, v, m] => (*q, *k, *v, Some(*m)),
            _ => {
                return Err(Error::Invalid {
                    op: "MultiheadAttention",
                    msg: format!("expected (query, key, value[, mask]), got {} inputs", inputs.len()),
                })
            }
        };
        for (what, x) in [("query", q), ("key", k), ("value", v)] {
            self.check(what, x)?;
        }
        let (w, bias) = self.qkv.weight_and_bias(c);
        let e = self.embd;
        let project = |x: &Tensor, i: usize| -> Result<Tensor> {
            x.matmul(&w.narrow(0, i * e, e)?.t()?)?.add(&bias.narrow(0, i * e, e)?)
        };
        self.attend(c, &project(q, 0)?, &project(k, 1)?, &project(v, 2)?, mask)
    }
}
