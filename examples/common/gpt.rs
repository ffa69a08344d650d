//! The GPT of `char_gpt` (shared with the tests): pre-LayerNorm blocks (LayerNorm, causal
//! self-attention, residual; LayerNorm, MLP 4x with tanh-GELU, residual), learned
//! positions, a final LayerNorm, the output projection tied to the token embedding;
//! weights N(0, 0.02), the residual projections N(0, 0.02 / sqrt(2 layers)); and the
//! corpus with its batches.
// shared by the example and the tests, each using a part
#![allow(dead_code)]
use rand::Rng;
use wgrad::nn::{Ctx, Embedding, Init, LayerNorm, Linear, Module, MultiheadAttention, Params};
use wgrad::{DType, Device, Error, Result, Tensor};

/// The model's sizes.
pub struct GptConfig {
    pub vocab: usize,
    pub layers: usize,
    pub heads: usize,
    pub embd: usize,
    pub ctx: usize,
    pub seed: u64,
}

struct Block {
    ln1: LayerNorm,
    attn: MultiheadAttention,
    ln2: LayerNorm,
    fc: Linear,
    proj: Linear,
}

impl Block {
    fn forward(&self, c: &Ctx, x: &Tensor) -> Result<Tensor> {
        let x = x.add(&self.attn.forward(c, &self.ln1.forward(c, x)?)?)?;
        let h = self.fc.forward(c, &self.ln2.forward(c, &x)?)?.gelu_tanh()?;
        x.add(&self.proj.forward(c, &h)?)
    }
}

pub struct Gpt {
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    ctx: usize,
    /// Run each block under `wgrad::checkpoint` (its activations recomputed in the backward pass).
    checkpoint: bool,
}

impl Gpt {
    pub fn new(p: &mut Params, a: &GptConfig, dev: &Device) -> Result<Gpt> {
        let (vocab, e, std) = (a.vocab, a.embd, 0.02);
        let resid = Init::Normal(std / (2.0 * a.layers as f64).sqrt());
        let seed = a.seed * 1000;
        let wte = Embedding::with_std(p, "wte", vocab, e, std, seed, dev)?;
        let wpe = Embedding::with_std(p, "wpe", a.ctx, e, std, seed + 1, dev)?;
        let mut blocks = Vec::new();
        for l in 0..a.layers {
            let (name, s) = (format!("h{l}"), seed + 10 * (l as u64 + 1));
            blocks.push(Block {
                ln1: LayerNorm::new(p, &format!("{name}.ln1"), e, dev)?,
                attn: MultiheadAttention::with_init(
                    p,
                    &format!("{name}.attn"),
                    e,
                    a.heads,
                    Init::Normal(std),
                    resid,
                    s,
                    dev,
                )?
                .causal(true),
                ln2: LayerNorm::new(p, &format!("{name}.ln2"), e, dev)?,
                fc: Linear::with_init(p, &format!("{name}.fc"), e, 4 * e, Init::Normal(std), s + 2, dev)?,
                proj: Linear::with_init(p, &format!("{name}.proj"), 4 * e, e, resid, s + 3, dev)?,
            });
        }
        let ln_f = LayerNorm::new(p, "ln_f", e, dev)?;
        Ok(Gpt { wte, wpe, blocks, ln_f, ctx: a.ctx, checkpoint: false })
    }

    /// The same model with every block checkpointed (or not).
    pub fn checkpointed(mut self, on: bool) -> Gpt {
        self.checkpoint = on;
        self
    }

    /// Logits [batch * t, vocab] for ids [batch, t] (t <= ctx).
    pub fn forward(&self, c: &Ctx, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = (ids.shape()[0], ids.shape()[1]);
        if t > self.ctx {
            return Err(Error::Invalid {
                op: "Gpt::forward",
                msg: format!("a sequence of {t} is longer than the context of {} (ids {:?})", self.ctx, ids.shape()),
            });
        }
        let pos = Tensor::arange_dtype(0.0, t as f64, 1.0, DType::U32, ids.device())?;
        let mut x = self.wte.forward(c, ids)?.add(&self.wpe.forward(c, &pos)?)?;
        for block in &self.blocks {
            x = if self.checkpoint {
                wgrad::checkpoint(|xs| Ok(vec![block.forward(c, &xs[0])?]), &[x])?.remove(0)
            } else {
                block.forward(c, &x)?
            };
        }
        let h = self.ln_f.forward(c, &x)?;
        let e = h.shape()[2];
        self.wte.attend(c, &h.reshape(&[b * t, e])?)
    }
}

/// The corpus as u32 character ids, with its sorted alphabet.
pub struct Corpus {
    pub chars: Vec<char>,
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

impl Corpus {
    /// The first 90% of the characters train, the last 10% validate.
    pub fn load(path: &std::path::Path) -> Result<Corpus> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            op: "char_gpt",
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        // a BTreeSet iterates in order: the alphabet comes out sorted
        let chars: Vec<char> = text.chars().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let ids: Vec<u32> = text.chars().map(|c| chars.binary_search(&c).expect("in the alphabet") as u32).collect();
        let split = ids.len() * 9 / 10;
        Ok(Corpus { chars, train: ids[..split].to_vec(), val: ids[split..].to_vec() })
    }
    pub fn encode(&self, s: &str) -> Vec<u32> {
        s.chars().filter_map(|c| self.chars.binary_search(&c).ok().map(|i| i as u32)).collect()
    }
}

/// `batch` random windows of `ctx + 1` characters: inputs [batch, ctx], targets shifted by one.
pub fn sample_batch(
    data: &[u32],
    batch: usize,
    ctx: usize,
    rng: &mut impl Rng,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let (mut x, mut y) = (Vec::with_capacity(batch * ctx), Vec::with_capacity(batch * ctx));
    for _ in 0..batch {
        let i = rng.random_range(0..data.len() - ctx - 1);
        x.extend_from_slice(&data[i..i + ctx]);
        y.extend_from_slice(&data[i + 1..i + ctx + 1]);
    }
    Ok((Tensor::from_slice(&x, &[batch, ctx], dev)?, Tensor::from_slice(&y, &[batch * ctx], dev)?))
}
