//! The GPU-vs-CPU benchmark tool. Each workload runs after a warm-up with the device
//! synchronized before the timer stops; GPU results are checked against the CPU.
//! `cargo run --release --example bench -- [--device gpu|cpu|both|noop] [--json FILE] [--quick] [--profile]
//!     [--only transforms|memory|host|device-check]` (`WGRAD_CPU_THREADS=1` and `MATMUL_NUM_THREADS=1`: one core)
//! (`--profile`: per-kernel times of the W4 step on the GPU, each dispatch waited for).
use std::time::Instant;
use wgrad::nn::{self, Activation, Ctx, Linear, Module, Params, Sequential};
use wgrad::optim::{Adam, LrSchedule, Optimizer, Sgd};
use wgrad::{
    grad, hessian, hvp, jacobian, jvp, value_and_grad_many, vmap_many, with_fusion, DType, Device, ElementwiseKernel,
    Result, Tensor,
};

struct Rec {
    workload: String,
    param: String,
    device: &'static str,
    median: f64,
    min: f64,
    max: f64,
    unit: &'static str,
}

/// (median, min, max) seconds of `reps` timed runs after one warm-up.
/// Median, min and max seconds of `f` over `reps` runs, each waited for. The result is
/// held until the device is synchronized: a value nobody holds is never computed (fusion
/// defers elementwise work until something reads it).
fn time<T>(dev: &Device, reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, f64, f64)> {
    let warm = f()?;
    dev.synchronize()?;
    drop(warm);
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        let out = f()?;
        dev.synchronize()?;
        t.push(s.elapsed().as_secs_f64());
        drop(out);
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok((t[t.len() / 2], t[0], t[t.len() - 1]))
}

fn check(what: &str, got: &Tensor, want: &Tensor, rtol: f64) -> Result<()> {
    let (g, w) = (got.to_f64_vec()?, want.to_f64_vec()?);
    let scale = w.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    let err = g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) / scale;
    if err.is_nan() || err > rtol {
        eprintln!("CHECK FAILED: {what}: relative error {err:e} > {rtol:e}");
        std::process::exit(2);
    }
    Ok(())
}

fn mlp(p: &mut Params, dev: &Device) -> Result<Sequential> {
    Ok(Sequential::new()
        .push(Linear::new(p, "l1", 784, 256, 0, dev)?)
        .push(Activation::Relu)
        .push(Linear::new(p, "l2", 256, 256, 1, dev)?)
        .push(Activation::Relu)
        .push(Linear::new(p, "l3", 256, 10, 2, dev)?))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let opt = |k: &str| args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned();
    let which = opt("--device").unwrap_or_else(|| "both".into());
    let quick = args.iter().any(|a| a == "--quick");
    // `--only transforms`: W6 and W7 alone
    let only_transforms = opt("--only").as_deref() == Some("transforms");
    // `--only memory`: W2 and W3 alone (the memory-bound kernels)
    let only_memory = opt("--only").as_deref() == Some("memory");
    // `--only device-check`: W1, W4 and W9 (what tools/device_check.sh runs)
    let only_core = opt("--only").as_deref() == Some("device-check");
    let profile = args.iter().any(|a| a == "--profile");
    let mut devices: Vec<(&'static str, Device)> = Vec::new();
    let mut recs: Vec<Rec> = Vec::new();
    // `--device noop` (or `--only host`): W9, the host cost of a training step
    let only_host = opt("--only").as_deref() == Some("host") || which == "noop";
    if which == "noop" {
        devices.push(("noop", Device::noop()?));
    }
    if which == "gpu" || which == "both" {
        // cold start: a fresh device (own wgpu device and queue) and its first op
        let s = Instant::now();
        let fresh = Device::new_gpu()?;
        Tensor::ones(&[4], DType::F32, &fresh)?.exp()?.to_vec::<f32>()?;
        let cold = s.elapsed().as_secs_f64() * 1e3;
        recs.push(Rec {
            workload: "cold start (device + first op)".into(),
            param: String::new(),
            device: "gpu",
            median: cold,
            min: cold,
            max: cold,
            unit: "ms",
        });
        // host cost of one small op: 400 adds encoded (below the 512-dispatch batch, so
        // nothing executes meanwhile), median of 20 rounds
        let x = Tensor::ones(&[4], DType::F32, &fresh)?;
        let mut per = Vec::new();
        for _ in 0..20 {
            let mut y = x.clone();
            let s = Instant::now();
            for _ in 0..400 {
                y = y.add(&x)?;
            }
            per.push(s.elapsed().as_secs_f64() * 1e6 / 400.0);
            fresh.synchronize()?;
        }
        per.sort_by(f64::total_cmp);
        recs.push(Rec {
            workload: "host encode per op (tiny add)".into(),
            param: String::new(),
            device: "gpu",
            median: per[10],
            min: per[0],
            max: per[19],
            unit: "us",
        });
        drop(fresh);
        devices.push(("gpu", Device::gpu()?));
    }
    if which == "cpu" || which == "both" {
        devices.push(("cpu", Device::cpu()));
    }
    let cpu = Device::cpu();
    let reps = if quick { 3 } else { 7 };
    let sizes: &[usize] = if quick { &[256, 512, 1024] } else { &[256, 512, 1024, 2048] };
    let big = 16 << 20;
    let gpu_name = devices.iter().find(|d| d.0 == "gpu").map(|d| d.1.name());
    for (tag, dev) in &devices {
        eprintln!("running on {}", dev.name());
        if only_host {
            host_workloads(dev, tag, quick, &mut recs)?;
            continue;
        }
        if only_transforms {
            transform_workloads(dev, tag, quick, &mut recs)?;
            continue;
        }
        // W1 matmul
        for &n in sizes.iter().filter(|_| !only_memory) {
            // first call: on a fresh device (no pipeline compiled yet, as in a new process;
            // lavapipe still finds Mesa's on-disk shader cache unless
            // MESA_SHADER_CACHE_DISABLE=true)
            let first_dev = if *tag == "gpu" { Device::new_gpu()? } else { dev.clone() };
            let (fa, fb) = (Tensor::randn(&[n, n], 1, &first_dev)?, Tensor::randn(&[n, n], 2, &first_dev)?);
            first_dev.synchronize()?;
            let s = Instant::now();
            let c = fa.matmul(&fb)?;
            first_dev.synchronize()?;
            let first = s.elapsed().as_secs_f64() * 1e3;
            drop((fa, fb, first_dev));
            let a = Tensor::randn(&[n, n], 1, dev)?;
            let b = Tensor::randn(&[n, n], 2, dev)?;
            if *tag == "gpu" && n <= 1024 {
                let want = a.to_device(&cpu)?.matmul(&b.to_device(&cpu)?)?;
                check("matmul", &c, &want, 1e-4)?;
                check("matmul", &a.matmul(&b)?, &want, 1e-4)?;
            }
            let r = if n >= 2048 { reps.min(3) } else { reps };
            let (md, mn, mx) = time(dev, r, || a.matmul(&b))?;
            let fl = 2.0 * (n as f64).powi(3) / 1e9;
            recs.push(Rec {
                workload: "W1 matmul f32".into(),
                param: format!("N={n}"),
                device: tag,
                median: fl / md,
                min: fl / mx,
                max: fl / mn,
                unit: "GFLOP/s",
            });
            recs.push(Rec {
                workload: "W1 matmul first call".into(),
                param: format!("N={n}"),
                device: tag,
                median: first,
                min: first,
                max: first,
                unit: "ms",
            });
        }
        if !only_core {
            // W2 elementwise
            let x = Tensor::rand(&[big], -1.0, 1.0, 3, dev)?;
            let y = Tensor::rand(&[big], -1.0, 1.0, 4, dev)?;
            let (md, mn, mx) = time(dev, reps, || x.add(&y))?;
            let gb = 12.0 * big as f64 / 1e9;
            recs.push(Rec {
                workload: "W2 add".into(),
                param: "16M".into(),
                device: tag,
                median: gb / md,
                min: gb / mx,
                max: gb / mn,
                unit: "GB/s",
            });
            let chain = || x.exp()?.mul(&x)?.add_scalar(1.0);
            if *tag == "gpu" {
                let xc = x.to_device(&cpu)?;
                check("exp(x)*x+1", &chain()?, &xc.exp()?.mul(&xc)?.add_scalar(1.0)?, 1e-5)?;
            }
            let (md, mn, mx) = time(dev, reps, chain)?;
            recs.push(Rec {
                workload: "W2 exp(x)*x+1".into(),
                param: "16M".into(),
                device: tag,
                median: md * 1e3,
                min: mn * 1e3,
                max: mx * 1e3,
                unit: "ms",
            });
            if *tag == "gpu" {
                // the same three ops with automatic fusion off, in the same run
                let (md, mn, mx) = with_fusion(false, || time(dev, reps, chain))?;
                recs.push(Rec {
                    workload: "W2 exp(x)*x+1 unfused (WGRAD_FUSION=0)".into(),
                    param: "16M".into(),
                    device: tag,
                    median: md * 1e3,
                    min: mn * 1e3,
                    max: mx * 1e3,
                    unit: "ms",
                });
            }
            // the same chain fused by hand into one kernel (the documented fusing API)
            let fused_k =
                ElementwiseKernel::new("exp_x_mul_x_plus_s", "return exp(x) * x + s;", |x, s| x.exp() * x + s)?
                    .with_cpu_f32(|x, s| wgrad::cpu::exp_f32(x) * x + s);
            let fused = || x.map_kernel(&fused_k, 1.0);
            if *tag == "gpu" {
                let xc = x.to_device(&cpu)?;
                check("exp(x)*x+1 fused", &fused()?, &xc.exp()?.mul(&xc)?.add_scalar(1.0)?, 1e-5)?;
            }
            let (md, mn, mx) = time(dev, reps, fused)?;
            recs.push(Rec {
                workload: "W2 exp(x)*x+1 fused (map_kernel)".into(),
                param: "16M".into(),
                device: tag,
                median: md * 1e3,
                min: mn * 1e3,
                max: mx * 1e3,
                unit: "ms",
            });
            // W3 reductions
            if *tag == "gpu" {
                check("sum", &x.sum_all()?, &x.to_device(&cpu)?.sum_all()?, 1e-4)?;
            }
            let (md, mn, mx) = time(dev, reps, || x.sum_all())?;
            let gb = 4.0 * big as f64 / 1e9;
            recs.push(Rec {
                workload: "W3 sum".into(),
                param: "16M".into(),
                device: tag,
                median: gb / md,
                min: gb / mx,
                max: gb / mn,
                unit: "GB/s",
            });
            let m = x.reshape(&[4096, 4096])?;
            let (md, mn, mx) = time(dev, reps, || m.sum(&[1], false))?;
            recs.push(Rec {
                workload: "W3 row-sum".into(),
                param: "4096x4096".into(),
                device: tag,
                median: md * 1e3,
                min: mn * 1e3,
                max: mx * 1e3,
                unit: "ms",
            });
        }
        if only_memory {
            continue;
        }
        // W4 MLP train step
        let mut params = Params::new();
        let model = mlp(&mut params, dev)?;
        let xb = Tensor::rand(&[128, 784], 0.0, 1.0, 5, dev)?;
        let yb = Tensor::from_slice(&(0..128u32).map(|i| i % 10).collect::<Vec<_>>(), &[128], dev)?;
        let mut sgd = Sgd::new(0.1);
        let mut step = |params: &mut Params| -> Result<()> {
            let (_, g) = value_and_grad_many(
                |p| nn::cross_entropy(&model.forward(&Ctx::train(p, 0), &xb)?, &yb),
                params.tensors(),
            )?;
            sgd.step(params, &g)
        };
        if profile && *tag == "gpu" {
            dev.context().expect("a gpu device has a context").set_profiling(true);
        }
        let s = Instant::now();
        step(&mut params)?;
        dev.synchronize()?;
        let first = s.elapsed().as_secs_f64() * 1e3;
        if profile && *tag == "gpu" {
            let ctx = dev.context().expect("a gpu device has a context");
            eprintln!("W4 first step per kernel (pipeline compiles included):");
            for r in ctx.kernel_profile().iter().filter(|r| r.seconds > 0.005) {
                eprintln!("{:<64} {:>4} {:>10.1} ms", r.kernel, r.dispatches, r.seconds * 1e3);
            }
            ctx.set_profiling(false);
        }
        let c0 = dev.counters();
        let steps = 20;
        for _ in 0..steps {
            step(&mut params)?;
        }
        dev.synchronize()?;
        let c1 = dev.counters();
        let (md, mn, mx) = time(dev, reps, || step(&mut params))?;
        if profile && *tag == "gpu" {
            // per-kernel wall times of 20 steps, each dispatch run on its own
            let ctx = dev.context().expect("a gpu device has a context");
            ctx.set_profiling(true);
            for _ in 0..steps {
                step(&mut params)?;
            }
            dev.synchronize()?;
            let rows = ctx.kernel_profile();
            ctx.set_profiling(false);
            let total: f64 = rows.iter().map(|r| r.seconds).sum();
            eprintln!(
                "W4 profile, {steps} steps, each dispatch waited for (total {:.2} ms/step):",
                total * 1e3 / steps as f64
            );
            eprintln!("{:<64} {:>10} {:>12}", "kernel", "per step", "ms/step");
            for r in &rows {
                eprintln!(
                    "{:<64} {:>10.1} {:>12.3}",
                    r.kernel,
                    r.dispatches as f64 / steps as f64,
                    r.seconds * 1e3 / steps as f64
                );
            }
        }
        recs.push(Rec {
            workload: "W4 MLP step 784-256-256-10 b128".into(),
            param: "SGD".into(),
            device: tag,
            median: md * 1e3,
            min: mn * 1e3,
            max: mx * 1e3,
            unit: "ms",
        });
        recs.push(Rec {
            workload: "W4 MLP first step".into(),
            param: String::new(),
            device: tag,
            median: first,
            min: first,
            max: first,
            unit: "ms",
        });
        if *tag == "gpu" {
            // the same step with automatic fusion off, in the same run
            let (md0, mn0, mx0, d0) = with_fusion(false, || -> Result<_> {
                step(&mut params)?;
                dev.synchronize()?;
                let c0 = dev.counters().dispatches;
                for _ in 0..steps {
                    step(&mut params)?;
                }
                dev.synchronize()?;
                let d0 = (dev.counters().dispatches - c0) as f64 / steps as f64;
                let (md, mn, mx) = time(dev, reps, || step(&mut params))?;
                Ok((md, mn, mx, d0))
            })?;
            recs.push(Rec {
                workload: "W4 MLP step unfused (WGRAD_FUSION=0)".into(),
                param: "SGD".into(),
                device: tag,
                median: md0 * 1e3,
                min: mn0 * 1e3,
                max: mx0 * 1e3,
                unit: "ms",
            });
            recs.push(Rec {
                workload: "W4 dispatches per step unfused".into(),
                param: String::new(),
                device: tag,
                median: d0,
                min: d0,
                max: d0,
                unit: "count",
            });
            // per-dispatch cost: 512 dependent tiny ops as 512 kernels, and fused
            let t = Tensor::ones(&[16], DType::F32, dev)?;
            let chain = || -> Result<Tensor> {
                let mut y = t.clone();
                for _ in 0..512 {
                    y = y.add_scalar(1.0)?;
                }
                Ok(y)
            };
            for (name, on) in [("W8 per-op cost, 512 tiny ops unfused", false), ("W8 per-op cost, fused", true)] {
                let (md, mn, mx) = with_fusion(on, || time(dev, reps, chain))?;
                let us = |s: f64| s * 1e6 / 512.0;
                recs.push(Rec {
                    workload: name.into(),
                    param: "16 elements".into(),
                    device: tag,
                    median: us(md),
                    min: us(mn),
                    max: us(mx),
                    unit: "us",
                });
            }
            let per = |a: u64, b: u64| (a - b) as f64 / steps as f64;
            for (name, v) in [
                ("dispatches", per(c1.dispatches, c0.dispatches)),
                ("submits", per(c1.submits, c0.submits)),
                ("readbacks", per(c1.readbacks, c0.readbacks)),
                ("buffer allocations", per(c1.buffer_allocations, c0.buffer_allocations)),
            ] {
                recs.push(Rec {
                    workload: format!("W4 {name} per step"),
                    param: String::new(),
                    device: tag,
                    median: v,
                    min: v,
                    max: v,
                    unit: "count",
                });
            }
        }
        if only_core {
            host_workloads(dev, tag, quick, &mut recs)?;
            continue;
        }
        // W5 loss / grad / jvp / hvp of the W4 loss with respect to the first weight; medians
        // of at least 10 runs after a warm-up (the ratios compare medians of one window)
        let p = params.tensors().to_vec();
        let loss_of = |w: &Tensor| -> Result<Tensor> {
            let mut q = p.clone();
            q[0] = w.clone();
            nn::cross_entropy(&model.forward(&Ctx::eval(&q), &xb)?, &yb)
        };
        let v = Tensor::randn(p[0].shape(), 9, dev)?;
        // the reverse-over-reverse HVP, grad(w -> <grad loss(w), v>), for comparison
        let hvp_rev = |w: &Tensor| grad(|w| grad(loss_of, w)?.mul(&v)?.sum_all(), w);
        let reps5 = if quick { 10 } else { 15 };
        let (tl, _, _) = time(dev, reps5, || loss_of(&p[0]))?;
        let (tg, _, _) = time(dev, reps5, || grad(loss_of, &p[0]))?;
        let (tj, _, _) = time(dev, reps5, || jvp(loss_of, &p[0], &v))?;
        let (th, _, _) = time(dev, reps5, || hvp(loss_of, &p[0], &v))?;
        let (thr, _, _) = time(dev, reps5, || hvp_rev(&p[0]))?;
        // peak live GPU bytes above what was live before, one call each
        let peak = |f: &dyn Fn() -> Result<Tensor>| -> Result<f64> {
            dev.synchronize()?;
            let base = dev.counters().live_bytes;
            dev.reset_peak_live_bytes();
            let _out = f()?;
            dev.synchronize()?;
            Ok((dev.counters().peak_live_bytes.saturating_sub(base)) as f64 / (1 << 20) as f64)
        };
        let peaks =
            if *tag == "gpu" { Some((peak(&|| hvp(loss_of, &p[0], &v))?, peak(&|| hvp_rev(&p[0]))?)) } else { None };
        if profile && *tag == "gpu" {
            let ctx = dev.context().expect("a gpu device has a context");
            for (name, which) in [("loss", 0), ("grad", 1), ("jvp", 2), ("hvp", 3)] {
                ctx.set_profiling(true);
                let _out = match which {
                    0 => loss_of(&p[0])?,
                    1 => grad(loss_of, &p[0])?,
                    2 => jvp(loss_of, &p[0], &v)?.1,
                    _ => hvp(loss_of, &p[0], &v)?,
                };
                dev.synchronize()?;
                let rows = ctx.kernel_profile();
                ctx.set_profiling(false);
                let n: u64 = rows.iter().map(|r| r.dispatches).sum();
                let t: f64 = rows.iter().map(|r| r.seconds).sum();
                eprintln!("W5 {name}: {n} dispatches, {:.2} ms with each waited for", t * 1e3);
                for r in rows.iter().take(if name == "hvp" { 40 } else { 6 }) {
                    eprintln!("    {:<60} {:>4} {:>8.3} ms", r.kernel, r.dispatches, r.seconds * 1e3);
                }
            }
        }
        let mut w5 = vec![
            ("W5 t(loss)", tl * 1e3, "ms"),
            ("W5 t(grad)", tg * 1e3, "ms"),
            ("W5 t(jvp)", tj * 1e3, "ms"),
            ("W5 t(hvp) fwd-over-rev", th * 1e3, "ms"),
            ("W5 t(hvp) rev-over-rev", thr * 1e3, "ms"),
            ("W5 t(grad)/t(loss)", tg / tl, "ratio"),
            ("W5 t(jvp)/t(loss)", tj / tl, "ratio"),
            ("W5 t(hvp)/t(grad)", th / tg, "ratio"),
        ];
        if let Some((fwd, rev)) = peaks {
            w5.push(("W5 peak live hvp fwd-over-rev", fwd, "MiB"));
            w5.push(("W5 peak live hvp rev-over-rev", rev, "MiB"));
        }
        for (name, val, unit) in w5 {
            recs.push(Rec {
                workload: name.into(),
                param: String::new(),
                device: tag,
                median: val,
                min: val,
                max: val,
                unit,
            });
        }
        transform_workloads(dev, tag, quick, &mut recs)?;
    }
    println!("GPU: {}", gpu_name.unwrap_or_else(|| "none".into()));
    println!(
        "{:<34} {:>10} {:>5} {:>11} {:>11} {:>11} {:>8} {:>9}",
        "workload", "param", "dev", "median", "min", "max", "unit", "gpu/cpu"
    );
    for r in &recs {
        let other = recs.iter().find(|o| o.workload == r.workload && o.param == r.param && o.device != r.device);
        let ratio = match (r.device, other) {
            ("gpu", Some(o)) if o.median != 0.0 => format!("{:.2}", r.median / o.median),
            _ => String::new(),
        };
        println!(
            "{:<34} {:>10} {:>5} {:>11.3} {:>11.3} {:>11.3} {:>8} {:>9}",
            r.workload, r.param, r.device, r.median, r.min, r.max, r.unit, ratio
        );
    }
    if let Some(path) = opt("--json") {
        let lines: Vec<String> = recs
            .iter()
            .map(|r| {
                format!(
                    "{{\"workload\":{:?},\"param\":{:?},\"device\":{:?},\"value\":{},\"unit\":{:?}}}",
                    r.workload, r.param, r.device, r.median, r.unit
                )
            })
            .collect();
        std::fs::write(&path, lines.join("\n") + "\n").map_err(|e| wgrad::Error::Io {
            op: "bench",
            path: path.clone(),
            msg: e.to_string(),
        })?;
    }
    Ok(())
}

#[path = "common/gpt.rs"]
mod gpt;
#[path = "bench_workloads/host.rs"]
mod host;
#[path = "bench_workloads/transforms.rs"]
mod transforms;
use host::host_workloads;
use transforms::transform_workloads;
