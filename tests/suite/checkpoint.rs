//! Gradient checkpointing: gradients through a checkpointed function equal the plain ones
//! (bitwise on the CPU in f64, within tolerance on the GPU) for an MLP, an attention block,
//! dropout, captured weights, HVPs and Hessians, and vmap(grad); the policies recompute
//! what they say; and the backward pass holds less memory.
use crate::common::*;
use wgrad::nn::{self, Ctx, Dropout, Module};
use wgrad::{
    checkpoint, checkpoint_name, checkpoint_replays, checkpoint_with, hessian, hvp, value_and_grad_many, vmap_many,
    CheckpointPolicy, DType, Device, Result, Tensor,
};

/// (rtol, atol) of a checkpointed result against the plain one: the same arithmetic, so
/// bitwise on the CPU; the GPU may fuse the replay differently from the forward.
fn tol(dev: &Device) -> (f64, f64) {
    if dev.is_gpu() {
        (1e-5, 1e-6)
    } else {
        (0.0, 0.0)
    }
}

/// The gradients of `loss` with respect to `params`, plain and with `block` checkpointed
/// (`loss` gets a flag: whether to checkpoint), compared.
fn assert_same_grads(what: &str, dev: &Device, params: &[Tensor], loss: impl Fn(&[Tensor], bool) -> Result<Tensor>) {
    let (l0, g0) = value_and_grad_many(|p| loss(p, false), params).unwrap();
    let before = checkpoint_replays();
    let (l1, g1) = value_and_grad_many(|p| loss(p, true), params).unwrap();
    assert!(checkpoint_replays().ops > before.ops, "{what} on {dev}: the backward pass replayed nothing");
    let (rtol, atol) = tol(dev);
    assert_close(&l1, &l0, rtol, atol, &format!("{what} on {dev}: loss"));
    for (i, (a, b)) in g1.iter().zip(&g0).enumerate() {
        assert_close(a, b, rtol, atol, &format!("{what} on {dev}: gradient {i}"));
    }
}

fn mlp_block(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.matmul(w)?.add(b)?.tanh()?.matmul(&w.t()?)?.gelu()
}

#[test]
fn an_mlp_and_an_attention_block_have_the_same_gradients_checkpointed() {
    for dev in devices() {
        let x = on(&dev, &random(&[6, 8], -1.0, 1.0));
        let w = on(&dev, &random(&[8, 8], -0.5, 0.5));
        let b = on(&dev, &random(&[8], -0.5, 0.5));
        assert_same_grads("MLP", &dev, &[x.clone(), w.clone(), b.clone()], |p, ckpt| {
            let mut h = p[0].clone();
            for _ in 0..3 {
                h = if ckpt {
                    checkpoint(|xs| Ok(vec![mlp_block(&xs[0], &xs[1], &xs[2])?]), &[h, p[1].clone(), p[2].clone()])?
                        .remove(0)
                } else {
                    mlp_block(&h, &p[1], &p[2])?
                };
            }
            h.square()?.mean_all()
        });
        // pre-LayerNorm causal self-attention with a residual
        let q = on(&dev, &random(&[2, 2, 5, 4], -1.0, 1.0));
        let wq = on(&dev, &random(&[4, 4], -0.5, 0.5));
        let ln_w = on(&dev, &random(&[4], 0.5, 1.5));
        let block = |xs: &[Tensor]| -> Result<Vec<Tensor>> {
            let h = xs[0].layer_norm(Some(&xs[2]), None, 1e-5)?;
            let (qh, kh) = (h.matmul(&xs[1])?, h.matmul(&xs[1].t()?)?);
            Ok(vec![xs[0].add(&nn::scaled_dot_product_attention(&qh, &kh, &h, None, true)?)?])
        };
        assert_same_grads("attention", &dev, &[q, wq, ln_w], |p, ckpt| {
            let y = if ckpt { checkpoint(block, p)?.remove(0) } else { block(p)?.remove(0) };
            y.sin()?.sum_all()
        });
    }
}

#[test]
fn dropout_inside_a_checkpoint_recomputes_the_same_sample() {
    for dev in devices() {
        let x = on(&dev, &random(&[16, 8], -1.0, 1.0));
        let w = on(&dev, &random(&[8, 8], -0.5, 0.5));
        let drop = Dropout { p: 0.5, seed: 7 };
        let ctx = Ctx::train(&[], 3);
        let block = |xs: &[Tensor]| Ok(vec![drop.forward(&ctx, &xs[0].matmul(&xs[1])?.relu()?)?.matmul(&xs[1])?]);
        assert_same_grads("dropout", &dev, &[x, w], |p, ckpt| {
            let y = if ckpt { checkpoint(block, p)?.remove(0) } else { block(p)?.remove(0) };
            y.square()?.sum_all()
        });
    }
}

#[test]
fn weights_the_function_captures_get_their_gradients() {
    for dev in devices() {
        let x = on(&dev, &random(&[4, 6], -1.0, 1.0));
        let w = on(&dev, &random(&[6, 6], -0.5, 0.5));
        // only x is an input; w (a parameter of the outer loss) is captured by the closure
        assert_same_grads("captured weights", &dev, &[x, w], |p, ckpt| {
            let w = &p[1];
            let block = |xs: &[Tensor]| Ok(vec![xs[0].matmul(w)?.sigmoid()?.matmul(w)?]);
            let y = if ckpt { checkpoint(block, &p[..1])?.remove(0) } else { block(&p[..1])?.remove(0) };
            y.exp()?.mean_all()
        });
    }
}

#[test]
fn hvp_hessian_and_vmap_grad_through_a_checkpoint_equal_the_plain_ones() {
    for dev in devices() {
        let (rtol, atol) = if dev.is_gpu() { (1e-4, 1e-5) } else { (0.0, 0.0) };
        let w = on(&dev, &random(&[5, 5], -0.5, 0.5));
        let f = |x: &Tensor, ckpt: bool| -> Result<Tensor> {
            let block = |xs: &[Tensor]| Ok(vec![w.matmul(&xs[0])?.tanh()?.mul(&xs[0])?]);
            let y = if ckpt {
                checkpoint(block, std::slice::from_ref(x))?.remove(0)
            } else {
                block(std::slice::from_ref(x))?.remove(0)
            };
            y.sum_all()
        };
        let x = on(&dev, &random(&[5], -1.0, 1.0));
        let v = on(&dev, &random(&[5], -1.0, 1.0));
        let want = hvp(|x| f(x, false), &x, &v).unwrap();
        assert_close(&hvp(|x| f(x, true), &x, &v).unwrap(), &want, rtol, atol, &format!("hvp on {dev}"));
        let want = hessian(|x| f(x, false), &x).unwrap();
        assert_close(&hessian(|x| f(x, true), &x).unwrap(), &want, rtol, atol, &format!("hessian on {dev}"));
        // per-example gradients of a shared weight through a checkpointed block
        let xs = on(&dev, &random(&[3, 5], -1.0, 1.0));
        let per_example = |ckpt: bool| {
            vmap_many(
                |p| {
                    let loss = |q: &[Tensor]| {
                        let block = |ys: &[Tensor]| Ok(vec![ys[1].matmul(&ys[0])?.tanh()?]);
                        let y = if ckpt { checkpoint(block, q)?.remove(0) } else { block(q)?.remove(0) };
                        y.square()?.sum_all()
                    };
                    Ok(value_and_grad_many(loss, &[p[0].clone(), p[1].clone()])?.1.remove(1))
                },
                &[xs.clone(), w.clone()],
                &[Some(0), None],
                0,
            )
            .unwrap()
        };
        assert_close(&per_example(true), &per_example(false), rtol, atol, &format!("vmap(grad) on {dev}"));
    }
}

/// An 8-layer MLP whose layers are checkpointed under `policy`, the layer-3 pre-activation
/// marked "h3"; the loss and what the backward pass replayed.
fn mlp8(dev: &Device, policy: &CheckpointPolicy, params: &[Tensor]) -> (Vec<Tensor>, wgrad::ReplayCount) {
    let loss = |p: &[Tensor]| -> Result<Tensor> {
        let layers = |xs: &[Tensor]| -> Result<Vec<Tensor>> {
            let mut h = xs[0].clone();
            for (l, w) in xs[1..].iter().enumerate() {
                let pre = h.matmul(w)?;
                let pre = if l == 3 { checkpoint_name(&pre, "h3")? } else { pre };
                h = pre.tanh()?;
            }
            Ok(vec![h])
        };
        checkpoint_with(policy.clone(), layers, p)?.remove(0).square()?.sum_all()
    };
    let _ = dev;
    let before = checkpoint_replays();
    let grads = value_and_grad_many(loss, params).unwrap().1;
    let after = checkpoint_replays();
    (grads, wgrad::ReplayCount { ops: after.ops - before.ops, matmuls: after.matmuls - before.matmuls })
}

#[test]
fn policies_recompute_what_they_say() {
    for dev in devices() {
        let mut params = vec![on(&dev, &random(&[4, 8], -1.0, 1.0))];
        params.extend((0..8).map(|_| on(&dev, &random(&[8, 8], -0.6, 0.6))));
        let (_, plain) = value_and_grad_many(
            |p| {
                let mut h = p[0].clone();
                for w in &p[1..] {
                    h = h.matmul(w)?.tanh()?;
                }
                h.square()?.sum_all()
            },
            &params,
        )
        .unwrap();
        let (rtol, atol) = tol(&dev);
        let names = CheckpointPolicy::Names(vec!["h3".into()]);
        let unknown = CheckpointPolicy::Names(vec!["nowhere".into()]);
        let mut counts = Vec::new();
        for policy in [CheckpointPolicy::Nothing, CheckpointPolicy::Matmuls, names, unknown] {
            let (grads, count) = mlp8(&dev, &policy, &params);
            for (i, (a, b)) in grads.iter().zip(&plain).enumerate() {
                assert_close(a, b, rtol, atol, &format!("{policy:?} on {dev}: gradient {i}"));
            }
            counts.push(count);
        }
        let [nothing, matmuls, named, unknown] = counts[..] else { unreachable!() };
        // Nothing: every layer's matmul runs again (tanh's VJP reads its output, the
        // matmuls' VJPs their inputs); Matmuls: none does, only the tanh layers
        assert_eq!(nothing.matmuls, 8, "{dev}: Nothing replays {nothing:?}");
        assert_eq!(matmuls.matmuls, 0, "{dev}: Matmuls replays {matmuls:?}");
        assert_eq!(matmuls.ops, 9, "{dev}: Matmuls replays the 8 tanh layers and the h3 marker: {matmuls:?}");
        // Names: the marked value is kept, so its matmul is not replayed; a name nobody
        // marked keeps nothing
        assert_eq!(named.matmuls, 7, "{dev}: Names([h3]) replays {named:?}");
        assert_eq!(unknown, nothing, "{dev}: an unknown name keeps nothing");
    }
}

/// The same policies seen in the GPU's own counters: the kernel profile of one gradient
/// step counts the matmul kernels dispatched.
#[test]
fn the_gpu_profile_shows_which_policy_reruns_the_matmuls() {
    let Some(g) = fresh_gpu() else { return };
    let ctx = g.context().unwrap();
    let mut params = vec![on(&g, &random(&[4, 8], -1.0, 1.0))];
    params.extend((0..8).map(|_| on(&g, &random(&[8, 8], -0.6, 0.6))));
    let matmul_dispatches = |policy: Option<CheckpointPolicy>| {
        let loss = |p: &[Tensor]| -> Result<Tensor> {
            let layers = |xs: &[Tensor]| -> Result<Vec<Tensor>> {
                let mut h = xs[0].clone();
                for w in &xs[1..] {
                    h = h.matmul(w)?.tanh()?;
                }
                Ok(vec![h])
            };
            let h = match &policy {
                Some(policy) => checkpoint_with(policy.clone(), layers, p)?.remove(0),
                None => layers(p)?.remove(0),
            };
            h.square()?.sum_all()
        };
        g.synchronize().unwrap();
        ctx.set_profiling(true);
        let (_, grads) = value_and_grad_many(loss, &params).unwrap();
        for gr in &grads {
            gr.to_vec::<f32>().unwrap();
        }
        let rows = ctx.kernel_profile(); // (read while on: turning it off clears it)
        ctx.set_profiling(false);
        rows.iter().filter(|r| r.kernel.contains("matmul")).map(|r| r.dispatches).sum::<u64>()
    };
    let plain = matmul_dispatches(None);
    let nothing = matmul_dispatches(Some(CheckpointPolicy::Nothing));
    let matmuls = matmul_dispatches(Some(CheckpointPolicy::Matmuls));
    assert!(plain >= 24, "8 forward and 16 backward products: {plain}");
    assert_eq!(nothing, plain + 8, "Nothing runs the 8 forward products again");
    assert_eq!(matmuls, plain, "Matmuls runs none again");
}

#[test]
fn without_a_reverse_transform_a_checkpoint_is_just_the_function() {
    let x = random(&[3], -1.0, 1.0);
    let before = checkpoint_replays();
    let y = checkpoint(|xs| Ok(vec![xs[0].exp()?]), std::slice::from_ref(&x)).unwrap();
    assert_close(&y[0], &x.exp().unwrap(), 0.0, 0.0, "checkpoint outside any transform");
    // forward mode alone is unaffected
    let (_, t) =
        wgrad::jvp(|x| Ok(checkpoint(|xs| Ok(vec![xs[0].sin()?]), std::slice::from_ref(x))?.remove(0)), &x, &x)
            .unwrap();
    assert_close(&t, &x.cos().unwrap().mul(&x).unwrap(), 0.0, 0.0, "jvp through a checkpoint");
    assert_eq!(checkpoint_replays(), before);
    // errors inside f come out as they are
    let e = checkpoint(|xs| Ok(vec![xs[0].reshape(&[2])?]), &[x]).unwrap_err();
    assert!(matches!(e, wgrad::Error::ElementCount { op: "reshape", .. }), "{e}");
}

#[test]
fn a_checkpointed_backward_pass_holds_less_gpu_memory() {
    let Some(g) = fresh_gpu() else { return };
    g.context().unwrap().set_poison_outputs(false);
    let x = Tensor::randn(&[256, 256], 1, &g).unwrap();
    let ws: Vec<Tensor> =
        (0..8).map(|i| Tensor::randn(&[256, 256], 10 + i, &g).unwrap().mul_scalar(0.06).unwrap()).collect();
    let peak = |ckpt: bool| {
        let loss = |p: &[Tensor]| -> Result<Tensor> {
            let mut h = x.clone();
            for w in p {
                let layer = |xs: &[Tensor]| Ok(vec![xs[0].matmul(&xs[1])?.tanh()?.mul(&xs[0])?]);
                let pair = [h.clone(), w.clone()];
                h = if ckpt { checkpoint(layer, &pair)?.remove(0) } else { layer(&pair)?.remove(0) };
            }
            h.square()?.mean_all()
        };
        g.synchronize().unwrap();
        g.reset_peak_live_bytes();
        let live_before = g.counters().live_bytes;
        let (l, grads) = value_and_grad_many(loss, &ws).unwrap();
        g.synchronize().unwrap();
        // the step's own peak: above what was live before it
        let peak = g.counters().peak_live_bytes - live_before;
        (peak, l.to_scalar::<f32>().unwrap(), grads)
    };
    let (plain, l0, g0) = peak(false);
    let (ckpt, l1, g1) = peak(true);
    assert_eq!(l0, l1);
    for (a, b) in g1.iter().zip(&g0) {
        assert_close(a, b, 1e-5, 1e-7, "checkpointed gradient");
    }
    // without: every layer's input and tanh output live at the turn (16 x 256 KB); with:
    // the layer inputs, and one layer's recomputed values at a time
    assert!(ckpt * 10 < plain * 8, "peak with checkpointing {ckpt} bytes, without {plain}");
}

#[test]
fn the_cpu_device_counts_live_and_peak_bytes() {
    // process-wide counters (tests run in parallel): only what this test holds is certain
    let dev = cpu();
    let big = Tensor::zeros(&[8 << 20], DType::F32, &dev).unwrap(); // 32 MiB
    let c = dev.counters();
    assert!(c.live_bytes >= 32 << 20 && c.peak_live_bytes >= c.live_bytes, "{c:?}");
    assert!(c.live_buffers >= 1);
    let doubled = big.add(&big).unwrap();
    assert!(dev.counters().live_bytes >= 64 << 20, "{:?}", dev.counters());
    drop((big, doubled));
}
