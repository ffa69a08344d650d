//! Per-example gradient clipping (the DP-SGD recipe without the noise): each example's
//! gradient is computed with `vmap` over `grad`, clipped to norm C, and the clipped
//! gradients are averaged. Trains the MNIST MLP 784-128-10 that way and plainly, and prints
//! the time per step and the test accuracy of both.
//! `cargo run --release --example per_example_grads -- [--device gpu|cpu|best] [--epochs N]
//!     [--batch-size N] [--clip C] [--lr X]`
use std::time::Instant;
use wgrad::nn::{self, Activation, Ctx, Linear, Module, Params, Sequential};
use wgrad::optim::{Adam, Optimizer};
use wgrad::{value_and_grad_many, vmap_many, Device, Error, Result, Tensor};

fn arg(name: &str, default: &str) -> String {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter().position(|a| a == name).and_then(|i| argv.get(i + 1)).cloned().unwrap_or_else(|| default.into())
}

fn num<T: std::str::FromStr>(name: &str, default: &str) -> Result<T> {
    arg(name, default).parse().map_err(|_| Error::Invalid { op: "per_example_grads", msg: format!("bad {name}") })
}

fn model(p: &mut Params, dev: &Device) -> Result<Sequential> {
    Ok(Sequential::new()
        .push(Linear::new(p, "fc1", 784, 128, 0, dev)?)
        .push(Activation::Relu)
        .push(Linear::new(p, "fc2", 128, 10, 1, dev)?))
}

/// The mean of the per-example gradients, each clipped to norm `clip`: one vmapped
/// gradient over the batch, all on the device.
fn clipped_mean_grads(m: &Sequential, params: &[Tensor], x: &Tensor, y: &Tensor, clip: f64) -> Result<Vec<Tensor>> {
    let per_example = vmap_many(
        |a| {
            let loss =
                |p: &[Tensor]| nn::cross_entropy(&m.forward(&Ctx::eval(p), &a[0].unsqueeze(0)?)?, &a[1].unsqueeze(0)?);
            let (_, grads) = value_and_grad_many(loss, params)?;
            Tensor::cat(&grads.iter().map(|g| g.flatten()).collect::<Result<Vec<_>>>()?, 0)
        },
        &[x.clone(), y.clone()],
        &[Some(0), Some(0)],
        0,
    )?; // [B, number of parameters]
    let norms = per_example.square()?.sum(&[1], true)?.sqrt()?;
    // scale = C / max(norm, C): 1 for gradients already inside the ball
    let scale = norms.maximum(&norms.full_like(clip)?)?.recip()?.mul_scalar(clip)?;
    let mean = per_example.mul(&scale)?.mean(&[0], false)?;
    let mut grads = Vec::with_capacity(params.len());
    let mut start = 0;
    for p in params {
        grads.push(mean.narrow(0, start, p.numel())?.reshape(p.shape())?);
        start += p.numel();
    }
    Ok(grads)
}

fn accuracy(m: &Sequential, params: &Params, x: &Tensor, y: &[u32]) -> Result<f64> {
    let pred = m.forward(&Ctx::eval(params.tensors()), x)?.argmax(1, false)?.to_vec::<u32>()?;
    Ok(pred.iter().zip(y).filter(|(a, b)| a == b).count() as f64 / y.len() as f64)
}

fn main() -> Result<()> {
    let dev = Device::from_name(&arg("--device", "best"))?;
    let (epochs, batch): (usize, usize) = (num("--epochs", "1")?, num("--batch-size", "64")?);
    let (clip, lr): (f64, f64) = (num("--clip", "1.0")?, num("--lr", "1e-3")?);
    let data = wgrad::data::Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/mnist"))?;
    let (xtr, ytr) = data.train.to_tensors(&dev)?;
    let (xte, _) = data.test.to_tensors(&dev)?;
    let yte_host: Vec<u32> = data.test.labels.iter().map(|&l| l as u32).collect();
    let steps = data.train.len() / batch;
    println!("device: {}; {epochs} epoch(s) of {steps} steps, batch {batch}, clip norm {clip}", dev.name());
    for dp in [false, true] {
        let mut params = Params::new();
        let m = model(&mut params, &dev)?;
        let mut opt = Adam::new(lr);
        let t0 = Instant::now();
        for _ in 0..epochs {
            for s in 0..steps {
                let (x, y) = (xtr.narrow(0, s * batch, batch)?, ytr.narrow(0, s * batch, batch)?);
                let grads = if dp {
                    clipped_mean_grads(&m, params.tensors(), &x, &y, clip)?
                } else {
                    value_and_grad_many(|p| nn::cross_entropy(&m.forward(&Ctx::eval(p), &x)?, &y), params.tensors())?.1
                };
                opt.step(&mut params, &grads)?;
            }
        }
        dev.synchronize()?;
        let per_step = t0.elapsed().as_secs_f64() * 1e3 / (epochs * steps) as f64;
        let acc = accuracy(&m, &params, &xte, &yte_host)?;
        let name = if dp { "per-example clipped" } else { "plain" };
        println!("{name:>20}: {per_step:8.2} ms/step, test accuracy {:.2}%", acc * 100.0);
    }
    Ok(())
}
