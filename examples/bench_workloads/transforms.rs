//! The bench's W6 (Jacobians and Hessians by size) and W7 (per-example gradients).
use super::*;

/// Dispatches (GPU) and median time of `f`.
fn timed_count<T>(dev: &Device, reps: usize, f: &dyn Fn() -> Result<T>) -> Result<((f64, f64, f64), f64)> {
    let t = time(dev, reps, f)?;
    dev.synchronize()?;
    let c0 = dev.counters().dispatches;
    let _out = f()?;
    dev.synchronize()?;
    Ok((t, (dev.counters().dispatches - c0) as f64))
}

/// W6: Jacobians and Hessians of f(x) = sum(tanh(W x)) + 0.5 <x, x> and g(x) = tanh(W x),
/// W [n, n] / sqrt(n), x [n, 1]; W7: per-example gradients of the W4 MLP.
pub(super) fn transform_workloads(dev: &Device, tag: &'static str, quick: bool, recs: &mut Vec<Rec>) -> Result<()> {
    let mut push = |workload: &str, param: String, (md, mn, mx): (f64, f64, f64), unit: &'static str| {
        recs.push(Rec { workload: workload.into(), param, device: tag, median: md, min: mn, max: mx, unit });
    };
    let ms = |(a, b, c): (f64, f64, f64)| (a * 1e3, b * 1e3, c * 1e3);
    for &n in if quick { &[16usize, 64][..] } else { &[16, 64, 256, 1024][..] } {
        let w = Tensor::randn(&[n, n], 3, dev)?.mul_scalar(1.0 / (n as f64).sqrt())?;
        let x = Tensor::randn(&[n, 1], 4, dev)?;
        let v = Tensor::randn(&[n, 1], 5, dev)?;
        let f = |x: &Tensor| w.matmul(x)?.tanh()?.sum_all()?.add(&x.square()?.sum_all()?.mul_scalar(0.5)?);
        let g = |x: &Tensor| w.matmul(x)?.tanh();
        let r = if n >= 1024 { 3 } else { 5 };
        let p = format!("n={n}");
        push("W6 grad f", p.clone(), ms(time(dev, r, || grad(f, &x))?), "ms");
        push("W6 jvp g", p.clone(), ms(time(dev, r, || jvp(g, &x, &v))?), "ms");
        push("W6 hvp f", p.clone(), ms(time(dev, r, || hvp(f, &x, &v))?), "ms");
        let (tj, dj) = timed_count(dev, r, &|| jacobian(g, &x))?;
        push("W6 jacobian g", p.clone(), ms(tj), "ms");
        let (th, dh) = timed_count(dev, r, &|| hessian(f, &x))?;
        push("W6 hessian f", p.clone(), ms(th), "ms");
        if tag == "gpu" {
            push("W6 dispatches per jacobian", p.clone(), (dj, dj, dj), "count");
            push("W6 dispatches per hessian", p, (dh, dh, dh), "count");
        }
    }
    // W7: per-example gradients of the W4 MLP at batch 128
    let mut params = Params::new();
    let model = mlp(&mut params, dev)?;
    let ps = params.tensors().to_vec();
    let b = if quick { 32 } else { 128 };
    let xb = Tensor::rand(&[b, 784], 0.0, 1.0, 5, dev)?;
    let yb = Tensor::from_slice(&(0..b as u32).map(|i| i % 10).collect::<Vec<_>>(), &[b], dev)?;
    let batched = || value_and_grad_many(|p| nn::cross_entropy(&model.forward(&Ctx::eval(p), &xb)?, &yb), &ps);
    let per_example = || {
        vmap_many(
            |a| {
                let loss = |p: &[Tensor]| {
                    nn::cross_entropy(&model.forward(&Ctx::eval(p), &a[0].unsqueeze(0)?)?, &a[1].unsqueeze(0)?)
                };
                // every parameter's per-example gradient is computed; the first weight's is
                // returned (all of them flattened, [128, 269322], pass a GPU binding limit)
                let (_, gs) = value_and_grad_many(loss, &ps)?;
                Ok(gs[0].clone())
            },
            &[xb.clone(), yb.clone()],
            &[Some(0), Some(0)],
            0,
        )
    };
    let r = if quick { 3 } else { 5 };
    let tb = time(dev, r, batched)?;
    let tp = time(dev, r, per_example)?;
    let p = format!("b={b}");
    push("W7 batched grad", p.clone(), ms(tb), "ms");
    push("W7 vmap(grad) per example", p.clone(), ms(tp), "ms");
    push("W7 vmap(grad) / grad", p, (tp.0 / tb.0, tp.0 / tb.0, tp.0 / tb.0), "ratio");
    Ok(())
}
