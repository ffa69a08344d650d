"""The char_gpt model and recipe in plain JAX (no flax / optax), for a same-window
reference of wgrad's examples/char_gpt.rs: 4 layers, 4 heads, embd 128, ctx 64, batch 32,
pre-LayerNorm blocks, tanh-GELU MLP 4x, learned positions, tied output projection,
weights N(0, 0.02) (residual projections N(0, 0.02 / sqrt(2 layers))), AdamW lr 1e-3
betas (0.9, 0.95) eps 1e-8 decay 0.1 on matrices, 100 warm-up steps then cosine to 10%,
clipping at global norm 1.

    python3 tools/char_gpt_jax.py [--steps N] [--time-only] [--threads 1|2]

--time-only trains 30 steps and prints the median jitted step time.
"""
import argparse
import math
import os
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=2000)
ap.add_argument("--time-only", action="store_true")
ap.add_argument("--threads", type=int, default=0)
ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../examples/data/shakespeare/input.txt"))
args = ap.parse_args()
if args.threads:
    os.environ["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} " \
                              f"intra_op_parallelism_threads={args.threads}"

import jax
import jax.numpy as jnp
import numpy as np

L, H, E, T, B = 4, 4, 128, 64, 32
text = open(args.data).read()
chars = sorted(set(text))
V = len(chars)
lut = np.zeros(256, dtype=np.int32)  # the corpus is ASCII
for i, c in enumerate(chars):
    lut[ord(c)] = i
ids = lut[np.frombuffer(text.encode(), dtype=np.uint8)]
split = len(ids) * 9 // 10
train, val = ids[:split], ids[split:]


def init(key):
    ks = iter(jax.random.split(key, 64))
    n = lambda shape, std=0.02: std * jax.random.normal(next(ks), shape, jnp.float32)
    resid = 0.02 / math.sqrt(2 * L)
    p = {"wte": n((V, E)), "wpe": n((T, E)), "lnf_w": jnp.ones(E), "lnf_b": jnp.zeros(E), "blocks": []}
    for _ in range(L):
        p["blocks"].append({
            "ln1_w": jnp.ones(E), "ln1_b": jnp.zeros(E),
            "qkv_w": n((3 * E, E)), "qkv_b": jnp.zeros(3 * E),
            "proj_w": n((E, E), resid), "proj_b": jnp.zeros(E),
            "ln2_w": jnp.ones(E), "ln2_b": jnp.zeros(E),
            "fc_w": n((4 * E, E)), "fc_b": jnp.zeros(4 * E),
            "fc2_w": n((E, 4 * E), resid), "fc2_b": jnp.zeros(E),
        })
    return p


def ln(x, w, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / jnp.sqrt(v + 1e-5) * w + b


def forward(p, x):
    t = x.shape[1]
    h = p["wte"][x] + p["wpe"][:t]
    mask = jnp.tril(jnp.ones((t, t), bool))
    for blk in p["blocks"]:
        a = ln(h, blk["ln1_w"], blk["ln1_b"]) @ blk["qkv_w"].T + blk["qkv_b"]
        q, k, v = jnp.split(a, 3, axis=-1)
        sh = lambda z: z.reshape(z.shape[0], t, H, E // H).transpose(0, 2, 1, 3)
        q, k, v = sh(q), sh(k), sh(v)
        s = jnp.where(mask, q @ k.transpose(0, 1, 3, 2) / math.sqrt(E // H), -jnp.inf)
        y = (jax.nn.softmax(s, -1) @ v).transpose(0, 2, 1, 3).reshape(h.shape)
        h = h + y @ blk["proj_w"].T + blk["proj_b"]
        m = jax.nn.gelu(ln(h, blk["ln2_w"], blk["ln2_b"]) @ blk["fc_w"].T + blk["fc_b"], approximate=True)
        h = h + m @ blk["fc2_w"].T + blk["fc2_b"]
    return ln(h, p["lnf_w"], p["lnf_b"]) @ p["wte"].T


def loss_fn(p, x, y):
    logits = forward(p, x)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits, -1), y[..., None], -1).mean()


def lr_at(step):
    warm = 1e-3 * (step + 1) / 100
    p = jnp.clip((step - 100) / (args.steps - 100), 0.0, 1.0)
    cos = 1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + jnp.cos(math.pi * p))
    return jnp.where(step < 100, warm, cos)


@jax.jit
def train_step(p, m, v, step, x, y):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    norm = jnp.sqrt(sum(jnp.sum(t * t) for t in jax.tree_util.tree_leaves(g)))
    g = jax.tree_util.tree_map(lambda t: t * jnp.minimum(1.0, 1.0 / (norm + 1e-6)), g)
    lr, t = lr_at(step), step + 1
    m = jax.tree_util.tree_map(lambda a, b: 0.9 * a + 0.1 * b, m, g)
    v = jax.tree_util.tree_map(lambda a, b: 0.95 * a + 0.05 * b * b, v, g)

    def upd(w, a, b):
        decay = 0.1 if w.ndim >= 2 else 0.0
        w = w - lr * decay * w
        return w - lr * (a / (1 - 0.9 ** t)) / (jnp.sqrt(b / (1 - 0.95 ** t)) + 1e-8)

    return jax.tree_util.tree_map(upd, p, m, v), m, v, loss


eval_loss = jax.jit(loss_fn)
rng = np.random.default_rng(1337)


def batch(data):
    i = rng.integers(0, len(data) - T - 1, B)
    return np.stack([data[j:j + T] for j in i]), np.stack([data[j + 1:j + T + 1] for j in i])


p = init(jax.random.PRNGKey(0))
m = jax.tree_util.tree_map(jnp.zeros_like, p)
v = jax.tree_util.tree_map(jnp.zeros_like, p)
print(f"{sum(x.size for x in jax.tree_util.tree_leaves(p))} parameters, {V} characters", file=sys.stderr)
steps = 30 if args.time_only else args.steps
times = []
for step in range(steps):
    x, y = batch(train)
    t0 = time.perf_counter()
    p, m, v, loss = train_step(p, m, v, step, x, y)
    loss.block_until_ready()
    times.append(time.perf_counter() - t0)
    if not args.time_only and ((step + 1) % 250 == 0 or step + 1 == steps):
        vl = np.mean([float(eval_loss(p, *batch(val))) for _ in range(20)])
        print(f"step {step + 1}: train loss {float(loss):.4f}  validation loss {vl:.4f}", flush=True)
print(f"jitted step: median {np.median(times[5:]) * 1e3:.1f} ms over {len(times) - 5} steps (after 5 warm-up)")
