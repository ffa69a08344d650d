//! The bench's W9: host time and dispatches per training step, eager and jitted (on the
//! noop device, the host's work alone).
use super::*;

/// Median, min and max of per-step wall times (seconds) of `steps` calls after `warmup`,
/// with the dispatches of one step; the device is synchronized every step, so on the noop
/// device (where no kernel runs) the time is the host's work alone.
fn host_per_step(
    dev: &Device,
    warmup: usize,
    steps: usize,
    mut step: impl FnMut() -> Result<()>,
) -> Result<(f64, f64, f64, u64)> {
    for _ in 0..warmup {
        step()?;
    }
    dev.synchronize()?;
    let c0 = dev.counters();
    let mut t = Vec::with_capacity(steps);
    for _ in 0..steps {
        let s = Instant::now();
        step()?;
        dev.synchronize()?;
        t.push(s.elapsed().as_secs_f64());
    }
    let dispatches = (dev.counters() - c0).dispatches / steps as u64;
    t.sort_by(f64::total_cmp);
    Ok((t[t.len() / 2], t[0], t[t.len() - 1], dispatches))
}

/// W9: host time and dispatches per training step of the W4 MLP (SGD) and of the char-GPT
/// step (examples/char_gpt.rs defaults: AdamW, warm-up + cosine, clipping), eager and
/// jitted, with flat parameters (as the examples train) and, to compare, per-tensor ones.
pub(super) fn host_workloads(dev: &Device, tag: &'static str, quick: bool, recs: &mut Vec<Rec>) -> Result<()> {
    for flat in [true, false] {
        mlp_rows(dev, tag, quick, flat, recs)?;
        gpt_rows(dev, tag, quick, flat, recs)?;
    }
    Ok(())
}

/// A row pusher: `W9 <workload> <what>`, the workload named for its parameters.
fn pusher<'a>(
    tag: &'static str,
    workload: &'static str,
    flat: bool,
    recs: &'a mut Vec<Rec>,
) -> impl FnMut(&str, (f64, f64, f64), &'static str) + 'a {
    let name = if flat { workload.to_string() } else { format!("{workload}, per-tensor params") };
    move |what: &str, (md, mn, mx): (f64, f64, f64), unit: &'static str| {
        recs.push(Rec {
            workload: format!("W9 {name} {what}"),
            param: String::new(),
            device: tag,
            median: md,
            min: mn,
            max: mx,
            unit,
        });
    }
}

/// The W4 MLP step (SGD), eager and jitted.
fn mlp_rows(dev: &Device, tag: &'static str, quick: bool, flat: bool, recs: &mut Vec<Rec>) -> Result<()> {
    let mut push = pusher(tag, "MLP step", flat, recs);
    let mut params = Params::new();
    let model = mlp(&mut params, dev)?;
    if flat {
        params.flatten()?;
    }
    let xb = Tensor::rand(&[128, 784], 0.0, 1.0, 5, dev)?;
    let yb = Tensor::from_slice(&(0..128u32).map(|i| i % 10).collect::<Vec<_>>(), &[128], dev)?;
    let mut sgd = Sgd::new(0.1);
    let mut step = || -> Result<()> {
        let (_, g) =
            value_and_grad_many(|p| nn::cross_entropy(&model.forward(&Ctx::train(p, 0), &xb)?, &yb), params.tensors())?;
        sgd.step(&mut params, &g)
    };
    let (md, mn, mx, d) = host_per_step(dev, 5, if quick { 30 } else { 200 }, &mut step)?;
    push("host eager", (md * 1e6, mn * 1e6, mx * 1e6), "us");
    push("dispatches eager", (d as f64, d as f64, d as f64), "count");
    // the same step jitted: traced on its first calls, replayed after (the labels are its
    // argument, copied in each call; the inputs stay captured, as in the eager step)
    let mut jitted = wgrad::jit(|a: &[Tensor]| -> Result<Vec<Tensor>> {
        let (loss, g) = value_and_grad_many(
            |p| nn::cross_entropy(&model.forward(&Ctx::train(p, 0), &xb)?, &a[0]),
            params.tensors(),
        )?;
        sgd.step(&mut params, &g)?;
        Ok(vec![loss])
    });
    let ys = [yb.clone()];
    let (md, mn, mx, d) = host_per_step(dev, 5, if quick { 30 } else { 200 }, || jitted.call(&ys).map(drop))?;
    push("host jit", (md * 1e6, mn * 1e6, mx * 1e6), "us");
    push("dispatches jit", (d as f64, d as f64, d as f64), "count");
    Ok(())
}

/// The char-GPT step, eager and jitted.
fn gpt_rows(dev: &Device, tag: &'static str, quick: bool, flat: bool, recs: &mut Vec<Rec>) -> Result<()> {
    let mut push = pusher(tag, "char-GPT step", flat, recs);
    let corpus = gpt::Corpus::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/data/shakespeare/input.txt"
    )))?;
    let config = gpt::GptConfig { vocab: corpus.chars.len(), layers: 4, heads: 4, embd: 128, ctx: 64, seed: 0 };
    let mut params = Params::new();
    let model = gpt::Gpt::new(&mut params, &config, dev)?;
    if flat {
        params.flatten()?;
    }
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let (x, y) = gpt::sample_batch(&corpus.train, 32, 64, &mut rng, dev)?;
    let mut opt =
        Adam::adamw(1e-3).betas(0.9, 0.95).eps(1e-8).weight_decay(0.1).decay_matrices_only(true).clip_grad_norm(1.0);
    let schedule = LrSchedule::WarmupCosine { lr: 1e-3, warmup: 100, total: 2000, min_lr: 1e-4 };
    opt.set_schedule(schedule);
    let mut n = 0u64;
    let mut step = || -> Result<()> {
        let (_, grads) =
            value_and_grad_many(|p| nn::cross_entropy(&model.forward(&Ctx::train(p, n), &x)?, &y), params.tensors())?;
        opt.step(&mut params, &grads)?;
        n += 1;
        Ok(())
    };
    let (md, mn, mx, d) = host_per_step(dev, 3, if quick { 10 } else { 40 }, &mut step)?;
    push("host eager", (md * 1e3, mn * 1e3, mx * 1e3), "ms");
    push("dispatches eager", (d as f64, d as f64, d as f64), "count");
    // the same step jitted (the batch is its argument)
    let mut jitted = wgrad::jit(|a: &[Tensor]| -> Result<Vec<Tensor>> {
        let (loss, grads) = value_and_grad_many(
            |p| nn::cross_entropy(&model.forward(&Ctx::train(p, 0), &a[0])?, &a[1]),
            params.tensors(),
        )?;
        opt.step(&mut params, &grads)?;
        Ok(vec![loss])
    });
    let xy = [x.clone(), y.clone()];
    let (md, mn, mx, d) = host_per_step(dev, 3, if quick { 10 } else { 40 }, || jitted.call(&xy).map(drop))?;
    push("host jit", (md * 1e3, mn * 1e3, mx * 1e3), "ms");
    push("dispatches jit", (d as f64, d as f64, d as f64), "count");
    Ok(())
}
