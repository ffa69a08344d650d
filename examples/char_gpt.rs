//! A character-level GPT trained on Shakespeare (the nanoGPT recipe at a small size).
//!
//! `cargo run --release --example char_gpt -- [--steps N (2000)] [--device gpu|cpu|best]
//!     [--layers N (4)] [--heads N (4)] [--embd N (128)] [--ctx N (64)] [--batch N (32)]
//!     [--lr X (1e-3)] [--seed N] [--data FILE] [--out DIR] [--eval-every N (250)]
//!     [--prompt TEXT] [--temperature X (0.8)] [--top-k N (40)] [--resume] [--profile]
//!     [--checkpoint] [--eager]`
//!
//! Pre-LayerNorm blocks (LayerNorm, causal self-attention, residual; LayerNorm, MLP 4x
//! with tanh-GELU, residual), learned positions, a final LayerNorm, the output projection
//! tied to the token embedding; AdamW (betas 0.9 / 0.95, weight decay 0.1 on matrices
//! only), 100 warm-up steps then cosine decay to 10%, gradients clipped to norm 1.
//! Writes the loss curves (PNG) and the weights (safetensors) into --out, samples text,
//! and ends with `peak memory per step: N bytes (device: NAME)` (the most bytes tensors held
//! during a training step) and `final validation loss: X (device: NAME)`. `--checkpoint`
//! runs every transformer block under `wgrad::checkpoint`: its activations are recomputed
//! in the backward pass instead of kept.
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;
use wgrad::nn::{self, Ctx, Params};
use wgrad::optim::{Adam, LrSchedule, Optimizer};
use wgrad::{no_grad, value_and_grad_many, DType, Device, Error, Result, Tensor};

/// Steps at the end of training that `--profile` times.
const PROFILED_STEPS: u64 = 5;

struct Args {
    steps: u64,
    device: String,
    layers: usize,
    heads: usize,
    embd: usize,
    ctx: usize,
    batch: usize,
    lr: f64,
    seed: u64,
    data: PathBuf,
    out: PathBuf,
    eval_every: u64,
    prompt: String,
    temperature: f64,
    top_k: usize,
    resume: bool,
    profile: bool,
    checkpoint: bool,
    /// Run every step eagerly instead of through `wgrad::jit`.
    eager: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        steps: 2000,
        device: "best".into(),
        layers: 4,
        heads: 4,
        embd: 128,
        ctx: 64,
        batch: 32,
        lr: 1e-3,
        seed: 1337,
        data: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/shakespeare/input.txt")),
        out: PathBuf::from("out/char_gpt"),
        eval_every: 250,
        prompt: "ROMEO:".into(),
        temperature: 0.8,
        top_k: 40,
        resume: false,
        profile: false,
        checkpoint: false,
        eager: false,
    };
    let bad = |msg: String| Error::Invalid { op: "char_gpt", msg };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "--resume" {
            a.resume = true;
            continue;
        }
        if flag == "--checkpoint" {
            a.checkpoint = true;
            continue;
        }
        if flag == "--profile" {
            a.profile = true;
            continue;
        }
        if flag == "--eager" {
            a.eager = true;
            continue;
        }
        let val = it.next().ok_or_else(|| bad(format!("{flag} needs a value")))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| bad(format!("{flag} {v}: {e}")));
        match flag.as_str() {
            "--steps" => a.steps = num(val)? as u64,
            "--device" => a.device = val.clone(),
            "--layers" => a.layers = num(val)? as usize,
            "--heads" => a.heads = num(val)? as usize,
            "--embd" => a.embd = num(val)? as usize,
            "--ctx" => a.ctx = num(val)? as usize,
            "--batch" => a.batch = num(val)? as usize,
            "--lr" => a.lr = num(val)?,
            "--seed" => a.seed = num(val)? as u64,
            "--data" => a.data = PathBuf::from(val),
            "--out" => a.out = PathBuf::from(val),
            "--eval-every" => a.eval_every = (num(val)? as u64).max(1),
            "--prompt" => a.prompt = val.clone(),
            "--temperature" => a.temperature = num(val)?,
            "--top-k" => a.top_k = num(val)? as usize,
            other => return Err(bad(format!("unknown option {other}"))),
        }
    }
    if a.batch == 0 || a.ctx == 0 || a.layers == 0 || a.steps == 0 {
        return Err(bad("--batch, --ctx, --layers and --steps must be positive".into()));
    }
    Ok(a)
}

/// Mean cross-entropy over `batches` random batches of `data`.
fn estimate_loss(model: &Gpt, p: &Params, data: &[u32], a: &Args, rng: &mut impl Rng, dev: &Device) -> Result<f64> {
    let batches = 20;
    let mut sum = Tensor::zeros(&[], DType::F32, dev)?;
    for _ in 0..batches {
        let (x, y) = sample_batch(data, a.batch, a.ctx, rng, dev)?;
        sum = no_grad(|| sum.add(&nn::cross_entropy(&model.forward(&Ctx::eval(p.tensors()), &x)?, &y)?))?;
    }
    Ok(sum.to_scalar::<f32>()? as f64 / batches as f64)
}

/// `n` characters after the prompt: softmax(logits / temperature) over the top k.
fn generate(model: &Gpt, p: &Params, corpus: &Corpus, a: &Args, n: usize, dev: &Device) -> Result<String> {
    let mut ids = corpus.encode(&a.prompt);
    if ids.is_empty() {
        ids.push(corpus.encode("\n").first().copied().unwrap_or(0));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed + 7);
    let start = ids.len();
    for _ in 0..n {
        let window = &ids[ids.len().saturating_sub(a.ctx)..];
        let x = Tensor::from_slice(window, &[1, window.len()], dev)?;
        let logits = no_grad(|| model.forward(&Ctx::eval(p.tensors()), &x))?;
        let v = corpus.chars.len();
        let last = logits.narrow(0, window.len() - 1, 1)?.to_vec::<f32>()?;
        let mut order: Vec<usize> = (0..v).collect();
        order.sort_by(|&i, &j| last[j].total_cmp(&last[i]));
        order.truncate(a.top_k.clamp(1, v));
        let t = a.temperature.max(1e-6);
        let top = last[order[0]] as f64;
        let w: Vec<f64> = order.iter().map(|&i| ((last[i] as f64 - top) / t).exp()).collect();
        let mut u = rng.random::<f64>() * w.iter().sum::<f64>();
        let mut pick = order[order.len() - 1];
        for (k, &wk) in w.iter().enumerate() {
            if u < wk {
                pick = order[k];
                break;
            }
            u -= wk;
        }
        ids.push(pick as u32);
    }
    Ok(ids[start..].iter().map(|&i| corpus.chars[i as usize]).collect())
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let dev = Device::from_name(&a.device)?;
    std::fs::create_dir_all(&a.out).map_err(|e| Error::Io {
        op: "char_gpt",
        path: a.out.display().to_string(),
        msg: e.to_string(),
    })?;
    let corpus = Corpus::load(&a.data)?;
    let vocab = corpus.chars.len();
    println!(
        "device: {}   data: {} train / {} validation characters, {vocab} distinct, from {}",
        dev.name(),
        corpus.train.len(),
        corpus.val.len(),
        a.data.display()
    );
    let mut params = Params::new();
    let config = GptConfig { vocab, layers: a.layers, heads: a.heads, embd: a.embd, ctx: a.ctx, seed: a.seed };
    let model = Gpt::new(&mut params, &config, &dev)?.checkpointed(a.checkpoint);
    let weights = a.out.join("model.safetensors");
    if a.resume {
        params.load(&weights)?;
        println!("resumed from {}", weights.display());
    }
    // one flat buffer: AdamW updates every parameter in one dispatch, and the clip's norm
    // is one reduction
    params.flatten()?;
    println!(
        "model: {} layers, {} heads, embd {}, ctx {} ({} parameters); batch {}, {} steps, AdamW lr {}",
        a.layers,
        a.heads,
        a.embd,
        a.ctx,
        params.numel(),
        a.batch,
        a.steps,
        a.lr
    );
    let mut opt =
        Adam::adamw(a.lr).betas(0.9, 0.95).eps(1e-8).weight_decay(0.1).decay_matrices_only(true).clip_grad_norm(1.0);
    let schedule = LrSchedule::WarmupCosine { lr: a.lr, warmup: 100, total: a.steps, min_lr: a.lr * 0.1 };
    opt.set_schedule(schedule); // followed on the device from the optimizer's step count
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let mut eval_rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed + 1);
    let (mut curve_steps, mut train_curve, mut val_curve) = (Vec::new(), Vec::new(), Vec::new());
    let bar = ProgressBar::new(a.steps);
    bar.set_style(ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}").unwrap().progress_chars("=> "));
    let tokens_per_step = (a.batch * a.ctx) as f64;
    let start = Instant::now();
    let mut eval_secs = 0.0; // validation, checkpoints: not training time
    let mut window = (Instant::now(), 0u64, Tensor::zeros(&[], DType::F32, &dev)?);
    let mut last_val = f64::NAN;
    let mut profile = Vec::new();
    let mut step_secs = Vec::new();
    let mut peak_bytes = 0u64;
    // one training step, jitted by default (traced on its first calls, then replayed with
    // no per-op host work; `--eager` runs it op by op). The parameters and the optimizer
    // are shared with the validation and the checkpoints between steps.
    let (params, opt) = (std::cell::RefCell::new(params), std::cell::RefCell::new(opt));
    let train_step = |b: &[Tensor]| -> Result<Vec<Tensor>> {
        let mut p = params.borrow_mut();
        let loss_of = |t: &[Tensor]| nn::cross_entropy(&model.forward(&Ctx::train(t, 0), &b[0])?, &b[1]);
        let (loss, grads) = value_and_grad_many(loss_of, p.tensors())?;
        opt.borrow_mut().step(&mut p, &grads)?;
        Ok(vec![loss])
    };
    let mut run_step = wgrad::jit(train_step).enabled(!a.eager);
    for step in 0..a.steps {
        if a.profile && step == a.steps.saturating_sub(PROFILED_STEPS) {
            dev.synchronize()?;
            dev.set_profiling(true);
        }
        let t_step = Instant::now();
        dev.reset_peak_live_bytes();
        let (x, y) = sample_batch(&corpus.train, a.batch, a.ctx, &mut rng, &dev)?;
        let loss = run_step.call(&[x, y])?.remove(0);
        step_secs.push(t_step.elapsed().as_secs_f64()); // the whole step on the CPU (it is synchronous)
        peak_bytes = peak_bytes.max(dev.counters().peak_live_bytes);
        if a.profile && step + 1 == a.steps {
            dev.synchronize()?;
            profile = dev.kernel_profile(); // before the validation forwards
            dev.set_profiling(false);
        }
        window.1 += 1;
        window.2 = no_grad(|| window.2.add(&loss))?;
        bar.inc(1);
        let last = step + 1 == a.steps;
        if (step + 1) % 10 == 0 || (step + 1) % a.eval_every == 0 || last {
            // reading the loss waits for the queue: only every 10 steps
            let train = window.2.to_scalar::<f32>()? as f64 / window.1 as f64;
            let tps = tokens_per_step * window.1 as f64 / window.0.elapsed().as_secs_f64();
            bar.set_message(format!("loss {train:.4}  {tps:.0} tokens/s  val {last_val:.4}"));
            if (step + 1) % a.eval_every == 0 || last {
                let t_eval = Instant::now();
                last_val = estimate_loss(&model, &params.borrow(), &corpus.val, &a, &mut eval_rng, &dev)?;
                let mut line = format!(
                    "step {:>5}: train loss {train:.4}  validation loss {last_val:.4}  {tps:.0} tokens/s",
                    step + 1
                );
                if dev.is_gpu() {
                    let c = dev.counters();
                    line += &format!("  (live GPU buffers {}, {:.1} MB)", c.live_buffers, c.live_bytes as f64 / 1e6);
                }
                // a hidden bar (output not a terminal) prints nothing itself
                if bar.is_hidden() {
                    println!("{line}");
                } else {
                    bar.println(line);
                }
                curve_steps.push(step + 1);
                train_curve.push(train);
                val_curve.push(last_val);
                params.borrow().save(&weights)?;
                eval_secs += t_eval.elapsed().as_secs_f64();
            }
            window = (Instant::now(), 0, Tensor::zeros(&[], DType::F32, &dev)?);
        }
    }
    bar.finish();
    let total = start.elapsed().as_secs_f64() - eval_secs;
    println!(
        "trained {} steps in {total:.1} s (plus {eval_secs:.1} s of validation): {:.1} ms/step, {:.0} tokens/s",
        a.steps,
        total * 1e3 / a.steps as f64,
        tokens_per_step * a.steps as f64 / total
    );
    if !dev.is_gpu() && step_secs.len() > 5 {
        let mut later = step_secs[5..].to_vec();
        later.sort_by(f64::total_cmp);
        println!("median step after 5 warm-up steps: {:.1} ms", later[later.len() / 2] * 1e3);
    }
    if a.profile {
        let rows = profile;
        let steps = PROFILED_STEPS.min(a.steps) as f64;
        let sum: f64 = rows.iter().map(|r| r.seconds).sum();
        let what = if dev.is_gpu() { "kernel (each dispatch waited for)" } else { "primitive (CPU forward)" };
        println!("profile of the last {steps} steps, {:.1} ms/step in {what}s:", sum * 1e3 / steps);
        println!("{:<60} {:>9} {:>10}", what, "per step", "ms/step");
        for r in rows.iter().take(25) {
            println!("{:<60} {:>9.1} {:>10.2}", r.kernel, r.dispatches as f64 / steps, r.seconds * 1e3 / steps);
        }
    }
    let curves = a.out.join("curves.png");
    let plot = wgrad_plot::Plot {
        title: format!("char-GPT, {} layers, embd {} ({})", a.layers, a.embd, dev.name()),
        x_label: "step".into(),
        y_label: "cross-entropy (nats / character)".into(),
        series: vec![
            ("train".into(), curve_steps.iter().map(|&s| s as f64).zip(train_curve.iter().cloned()).collect()),
            ("validation".into(), curve_steps.iter().map(|&s| s as f64).zip(val_curve.iter().cloned()).collect()),
        ],
    };
    if let Err(e) = plot.write(&curves) {
        eprintln!("could not write the plot: {e}");
    }
    println!("weights {}; curves {}", weights.display(), curves.display());
    drop(run_step);
    let params = params.into_inner();
    let text = generate(&model, &params, &corpus, &a, 300, &dev)?;
    println!("--- sample (temperature {}, top-k {}) ---\n{}{}\n---", a.temperature, a.top_k, a.prompt, text);
    println!("peak memory per step: {peak_bytes} bytes (device: {})", dev.name());
    println!("final validation loss: {last_val:.6} (device: {})", dev.name());
    Ok(())
}

#[path = "common/plot.rs"]
mod wgrad_plot;

#[path = "common/gpt.rs"]
mod gpt;
use gpt::{sample_batch, Corpus, Gpt, GptConfig};
