//! Train an MLP (default 784-256-128-10) or a small CNN on MNIST with Adam.
//! `cargo run --release --example mnist -- [--model mlp|cnn] [--device gpu|cpu|best]
//!     [--dtype f32|f16] [--epochs N (default 10 for mlp, 5 for cnn)]
//!     [--batch-size N] [--lr X] [--seed N] [--data DIR] [--out DIR] [--resume]`
//! Writes the loss / accuracy curves (PNG) and the weights (safetensors) into --out.
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::PathBuf;
use std::time::Instant;
use wgrad::nn::{self, Activation, Cast, Conv2d, Ctx, Flatten, Linear, MaxPool2d, Module, Params, Sequential};
use wgrad::optim::{Adam, Optimizer};
use wgrad::{no_grad, value_and_grad_many, DType, Device, Error, Result, Tensor};

struct Args {
    model: String,
    device: String,
    epochs: usize,
    batch: usize,
    lr: f64,
    seed: u64,
    data: PathBuf,
    out: Option<PathBuf>,
    resume: bool,
    f16: bool,
    /// Run every step eagerly instead of through `wgrad::jit`.
    eager: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        model: "mlp".into(),
        device: "best".into(),
        epochs: 0,
        batch: 128,
        lr: 1e-3,
        seed: 0,
        data: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/mnist")),
        out: None,
        resume: false,
        f16: false,
        eager: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let bad = |m: String| Error::Invalid { op: "mnist", msg: m };
    let mut i = 0;
    while i < argv.len() {
        let val = || argv.get(i + 1).cloned().ok_or_else(|| bad(format!("{} needs a value", argv[i])));
        match argv[i].as_str() {
            "--model" => a.model = val()?,
            "--device" => a.device = val()?,
            "--epochs" => a.epochs = val()?.parse().map_err(|e| bad(format!("--epochs: {e}")))?,
            "--batch-size" => a.batch = val()?.parse().map_err(|e| bad(format!("--batch-size: {e}")))?,
            "--lr" => a.lr = val()?.parse().map_err(|e| bad(format!("--lr: {e}")))?,
            "--seed" => a.seed = val()?.parse().map_err(|e| bad(format!("--seed: {e}")))?,
            "--data" => a.data = PathBuf::from(val()?),
            "--out" => a.out = Some(PathBuf::from(val()?)),
            "--dtype" => match val()?.as_str() {
                "f16" => a.f16 = true,
                "f32" => a.f16 = false,
                other => return Err(bad(format!("--dtype {other}: f32 or f16"))),
            },
            "--resume" => {
                a.resume = true;
                i -= 1;
            }
            "--eager" => {
                a.eager = true;
                i -= 1;
            }
            other => return Err(bad(format!("unknown argument {other}"))),
        }
        i += 2;
    }
    if a.epochs == 0 {
        a.epochs = if a.model == "cnn" { 5 } else { 10 };
    }
    if a.batch == 0 {
        return Err(bad("--batch-size must be positive".into()));
    }
    Ok(a)
}

/// The model; with `f16`, activations are stored in f16 between layers (f32 weights).
fn build(model: &str, p: &mut Params, seed: u64, dev: &Device, f16: bool) -> Result<Sequential> {
    let act =
        |s: Sequential| if f16 { s.push(Activation::Relu).push(Cast(DType::F16)) } else { s.push(Activation::Relu) };
    Ok(match model {
        "mlp" => {
            let s = act(Sequential::new().push(Linear::new(p, "fc1", 784, 256, seed, dev)?));
            let s = act(s.push(Linear::new(p, "fc2", 256, 128, seed + 1, dev)?));
            s.push(Linear::new(p, "fc3", 128, 10, seed + 2, dev)?)
        }
        "cnn" => {
            let s = act(Sequential::new().push(Conv2d::new(p, "conv1", 1, 16, 3, 1, 1, seed, dev)?)).push(MaxPool2d(2));
            let s =
                act(s.push(Conv2d::new(p, "conv2", 16, 32, 3, 1, 1, seed + 1, dev)?)).push(MaxPool2d(2)).push(Flatten);
            let s = act(s.push(Linear::new(p, "fc1", 32 * 7 * 7, 128, seed + 2, dev)?));
            s.push(Linear::new(p, "fc2", 128, 10, seed + 3, dev)?)
        }
        other => return Err(Error::Invalid { op: "mnist", msg: format!("unknown model '{other}' (mlp or cnn)") }),
    })
}

/// The input as the model wants it: flat for the MLP, [B, 1, 28, 28] for the CNN.
fn shape_input(model: &str, x: &Tensor) -> Result<Tensor> {
    if model == "cnn" {
        return x.reshape(&[x.shape()[0], 1, 28, 28]);
    }
    Ok(x.clone())
}

fn accuracy(model: &Sequential, name: &str, params: &Params, x: &Tensor, y: &[u32], dev: &Device) -> Result<f64> {
    no_grad(|| {
        let n = y.len();
        let mut correct = Tensor::zeros(&[], DType::F32, dev)?;
        for start in (0..n).step_by(1000) {
            let len = (n - start).min(1000);
            let xb = shape_input(name, &x.narrow(0, start, len)?)?;
            let pred = model.forward(&Ctx::eval(params.tensors()), &xb)?.argmax(1, false)?;
            let yb = Tensor::from_slice(&y[start..start + len], &[len], dev)?;
            correct = correct.add(&pred.eq(&yb)?.sum_all()?)?;
        }
        Ok(correct.to_scalar::<f32>()? as f64 / n as f64)
    })
}

fn plot(path: &std::path::Path, losses: &[f64], accs: &[f64]) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let per_epoch = |v: &[f64], k: f64| v.iter().enumerate().map(|(i, &y)| (i as f64 + 1.0, y * k)).collect();
    wgrad_plot::write_row(
        path,
        &[
            wgrad_plot::Plot {
                title: "MNIST training loss".into(),
                x_label: "epoch".into(),
                y_label: "cross-entropy".into(),
                series: vec![("train loss".into(), per_epoch(losses, 1.0))],
            },
            wgrad_plot::Plot {
                title: "MNIST test accuracy".into(),
                x_label: "epoch".into(),
                y_label: "accuracy (%)".into(),
                series: vec![("test accuracy".into(), per_epoch(accs, 100.0))],
            },
        ],
    )
}

#[path = "common/plot.rs"]
mod wgrad_plot;

fn main() -> Result<()> {
    let args = parse_args()?;
    let dev = Device::from_name(&args.device)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("out/mnist-{}", args.model)));
    std::fs::create_dir_all(&out).map_err(|e| Error::Io {
        op: "mnist",
        path: out.display().to_string(),
        msg: e.to_string(),
    })?;
    let data = wgrad::data::Mnist::load(&args.data)?;
    println!(
        "device: {}   data: {} train / {} test images from {}",
        dev.name(),
        data.train.len(),
        data.test.len(),
        args.data.display()
    );
    let (train_x, _) = data.train.to_tensors(&dev)?;
    let (test_x, _) = data.test.to_tensors(&dev)?;
    let train_y: Vec<u32> = data.train.labels.iter().map(|&l| l as u32).collect();
    let test_y: Vec<u32> = data.test.labels.iter().map(|&l| l as u32).collect();

    let mut params = Params::new();
    let model = build(&args.model, &mut params, args.seed, &dev, args.f16)?;
    let weights = out.join("model.safetensors");
    if args.resume {
        params.load(&weights)?;
        println!("resumed from {}", weights.display());
    }
    // one flat buffer per dtype: Adam updates every parameter in one dispatch
    params.flatten()?;
    let precision = if args.f16 { "f16 activations, f32 weights" } else { "f32" };
    println!(
        "model: {} ({} parameters, {precision}), Adam lr {}, batch {}, {} epochs",
        args.model,
        params.numel(),
        args.lr,
        args.batch,
        args.epochs
    );
    let mut opt = Adam::new(args.lr);
    let n = data.train.len();
    let steps_per_epoch = n.div_ceil(args.batch);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let (mut losses, mut accs) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let mut train_time = 0.0;
    for epoch in 1..=args.epochs {
        // one training step, jitted by default: traced on its first calls per batch shape,
        // then replayed with no per-op host work (`--eager` runs it op by op)
        let train_step = |a: &[Tensor]| -> Result<Vec<Tensor>> {
            let loss_of = |p: &[Tensor]| nn::cross_entropy(&model.forward(&Ctx::train(p, 0), &a[0])?, &a[1]);
            let (loss, grads) = value_and_grad_many(loss_of, params.tensors())?;
            opt.step(&mut params, &grads)?;
            Ok(vec![loss])
        };
        let mut run_step = wgrad::jit(train_step).enabled(!args.eager);
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut rng);
        let bar = ProgressBar::new(steps_per_epoch as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix:>2} [{bar:30}] {pos}/{len} {msg}")
                .unwrap()
                .progress_chars("=> "),
        );
        bar.set_prefix(epoch.to_string());
        let t0 = Instant::now();
        let mut loss_sum = Tensor::zeros(&[], DType::F32, &dev)?;
        for (b, chunk) in order.chunks(args.batch).enumerate() {
            let idx = Tensor::from_slice(chunk, &[chunk.len()], &dev)?;
            let xb = shape_input(&args.model, &train_x.index_select(0, &idx)?)?;
            let labels: Vec<u32> = chunk.iter().map(|&i| train_y[i as usize]).collect();
            let yb = Tensor::from_slice(&labels, &[labels.len()], &dev)?;
            let loss = run_step.call(&[xb, yb])?.remove(0);
            loss_sum = no_grad(|| loss_sum.add(&loss))?;
            // reading the loss syncs the queue: only every 25 steps
            if b % 25 == 24 || b + 1 == steps_per_epoch {
                let avg = loss_sum.to_scalar::<f32>()? / (b + 1) as f32;
                let ips = ((b + 1) * args.batch) as f64 / t0.elapsed().as_secs_f64();
                bar.set_message(format!("loss {avg:.4}  {ips:.0} img/s"));
            }
            bar.inc(1);
        }
        drop(run_step);
        dev.synchronize()?;
        let epoch_secs = t0.elapsed().as_secs_f64();
        train_time += epoch_secs;
        bar.finish();
        let loss = loss_sum.to_scalar::<f32>()? as f64 / steps_per_epoch as f64;
        let acc = accuracy(&model, &args.model, &params, &test_x, &test_y, &dev)?;
        println!(
            "epoch {epoch:>2}: loss {loss:.4}  test accuracy {:.2}%  ({:.1} s, {:.0} img/s)",
            acc * 100.0,
            epoch_secs,
            n as f64 / epoch_secs
        );
        losses.push(loss);
        accs.push(acc);
        params.save(&weights)?;
    }
    let curves = out.join("curves.png");
    if let Err(e) = plot(&curves, &losses, &accs) {
        eprintln!("could not write the plot: {e}");
    }
    let total = start.elapsed().as_secs_f64();
    let acc =
        if let Some(&a) = accs.last() { a } else { accuracy(&model, &args.model, &params, &test_x, &test_y, &dev)? };
    println!(
        "total {:.1} s ({:.0} training img/s); weights {}; curves {}",
        total,
        (n * args.epochs) as f64 / train_time.max(1e-9),
        weights.display(),
        curves.display()
    );
    println!("final test accuracy: {:.2}% (device: {})", acc * 100.0, dev.name());
    Ok(())
}
