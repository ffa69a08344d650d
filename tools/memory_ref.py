"""Same-window single-thread references for bench --only memory: JAX (jitted) and numpy
on one thread, W2 add / exp(x)*x+1 and W3 sum / row-sum over 16M f32.

    python3 tools/memory_ref.py
"""
import os, sys, time
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ["OMP_NUM_THREADS"] = "1"; os.environ["OPENBLAS_NUM_THREADS"] = "1"
import numpy as np, jax, jax.numpy as jnp
n = 16 << 20
x = np.random.default_rng(0).uniform(-1, 1, n).astype(np.float32)
y = np.random.default_rng(1).uniform(-1, 1, n).astype(np.float32)
def t(f, reps=7):
    f(); ts = []
    for _ in range(reps):
        s = time.perf_counter(); f(); ts.append(time.perf_counter() - s)
    return sorted(ts)[len(ts)//2]
jx, jy = jnp.asarray(x), jnp.asarray(y)
add = jax.jit(lambda a, b: a + b); chain = jax.jit(lambda a: jnp.exp(a) * a + 1.0)
s_ = jax.jit(jnp.sum); rs = jax.jit(lambda a: a.reshape(4096, 4096).sum(1))
print(f"JAX   add {12*n/1e9/t(lambda: add(jx, jy).block_until_ready()):.2f} GB/s  chain {t(lambda: chain(jx).block_until_ready())*1e3:.1f} ms  "
      f"sum {4*n/1e9/t(lambda: s_(jx).block_until_ready()):.2f} GB/s  row-sum {t(lambda: rs(jx).block_until_ready())*1e3:.2f} ms")
m = x.reshape(4096, 4096)
print(f"numpy add {12*n/1e9/t(lambda: x + y):.2f} GB/s  chain {t(lambda: np.exp(x) * x + 1.0)*1e3:.1f} ms  "
      f"sum {4*n/1e9/t(lambda: x.sum()):.2f} GB/s  row-sum {t(lambda: m.sum(1))*1e3:.2f} ms")
