# Random programs of wgrad primitives with JAX float64 results for eight transforms
# (value, grad, jvp, hvp, hessian, jacfwd, jacrev, vmap(grad)):
#   pip install jax && python3 tools/jax_diffcheck/gen.py 300 /tmp/progs.txt
#   cargo run --release --example jax_diffcheck -- /tmp/progs.txt
import jax, jax.numpy as jnp, numpy as np, sys
jax.config.update("jax_enable_x64", True)
OPS = ["tanh","sin","sigmoid","softplus","erf","exp_tanh","mulc","addc","matmul","softmax0","softmax1","logsoftmax0","logsoftmax1","sumkeep0","sumkeep1","max1","square_half","divc"]
def run(prog, consts, x):
    y = x
    for op, k in prog:
        c = consts[k]
        if op=="tanh": y = jnp.tanh(y)
        elif op=="sin": y = jnp.sin(y)
        elif op=="sigmoid": y = jax.nn.sigmoid(y)
        elif op=="softplus": y = jax.nn.softplus(y)
        elif op=="erf": y = jax.scipy.special.erf(y)
        elif op=="exp_tanh": y = jnp.exp(jnp.tanh(y))
        elif op=="mulc": y = y * c
        elif op=="addc": y = y + c
        elif op=="divc": y = y / (jnp.abs(c) + 1.0)
        elif op=="matmul": y = y @ (c.reshape(4,4) / 2.0)
        elif op=="softmax0": y = jax.nn.softmax(y, axis=0)
        elif op=="softmax1": y = jax.nn.softmax(y, axis=1)
        elif op=="logsoftmax0": y = jax.nn.log_softmax(y, axis=0)
        elif op=="logsoftmax1": y = jax.nn.log_softmax(y, axis=1)
        elif op=="sumkeep0": y = y + 0.1 * jnp.sum(y, axis=0, keepdims=True)
        elif op=="sumkeep1": y = y + 0.1 * jnp.sum(y, axis=1, keepdims=True)
        elif op=="max1": y = y + 0.1 * jnp.max(y, axis=1, keepdims=True)
        elif op=="square_half": y = 0.5 * y * y
    return y
rng = np.random.default_rng(0)
N = int(sys.argv[1])
out = open(sys.argv[2] if len(sys.argv) > 2 else "progs.txt", "w")
def nums(a): return " ".join(repr(float(v)) for v in np.asarray(a).ravel())
for i in range(N):
    L = rng.integers(2, 7)
    prog = [(OPS[rng.integers(len(OPS))], j) for j in range(L)]
    consts = [rng.uniform(-1,1,(3,4)) if op!="matmul" else rng.uniform(-1,1,(16,)) for op,_ in prog]
    consts = [c if op!="matmul" else c for (op,_),c in zip(prog,consts)]
    wout = rng.uniform(-1,1,(3,4))
    x = rng.uniform(-1,1,(3,4)); t = rng.uniform(-1,1,(3,4)); v = rng.uniform(-1,1,(3,4))
    xs = rng.uniform(-1,1,(5,3,4))
    f = lambda x: jnp.sum(run(prog, consts, x) * wout)
    val = f(x); g = jax.grad(f)(x); jt = jax.jvp(f, (x,), (t,))[1]
    hv = jax.jvp(jax.grad(f), (x,), (v,))[1]; H = jax.hessian(f)(x)
    J = jax.jacfwd(lambda x: run(prog, consts, x))(x)
    pg = jax.vmap(jax.grad(f))(xs)
    out.write("PROG " + " ".join(op for op,_ in prog) + "\n")
    for c in consts: out.write("C " + nums(c) + "\n")
    for name, a in [("W", wout),("X", x),("T", t),("V", v),("XS", xs),("VAL", val),("G", g),("JT", jt),("HV", hv),("H", H),("J", J),("PG", pg)]:
        out.write(name + " " + nums(a) + "\n")
    out.write("END\n")
print("wrote", N)
