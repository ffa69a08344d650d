//! Second-order optimization with Hessian-vector products: L2-regularized logistic
//! regression on the MNIST subset (digit 3 against 8), trained by Newton-CG, where every
//! CG step is one `hvp` on the device and the Hessian is never formed, compared with
//! plain gradient descent.
//! `cargo run --release --example newton_cg -- [--device gpu|cpu|best]`
use std::time::Instant;
use wgrad::{grad, hvp, nn, value_and_grad, DType, Device, Result, Tensor};

const LAMBDA: f64 = 1e-3;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let name =
        args.iter().position(|a| a == "--device").and_then(|i| args.get(i + 1)).map(String::as_str).unwrap_or("best");
    let dev = Device::from_name(name)?;
    let data = wgrad::data::Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/mnist"))?;
    let pick = |s: &wgrad::data::MnistSplit| -> Result<(Tensor, Tensor, usize)> {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for (i, &l) in s.labels.iter().enumerate() {
            if l == 3 || l == 8 {
                xs.extend(s.images[i * 784..(i + 1) * 784].iter().map(|&b| b as f32 / 255.0));
                xs.push(1.0); // bias feature
                ys.push(if l == 8 { 1.0f32 } else { 0.0 });
            }
        }
        let n = ys.len();
        Ok((Tensor::from_slice(&xs, &[n, 785], &dev)?, Tensor::from_slice(&ys, &[n], &dev)?, n))
    };
    let (x, y, n) = pick(&data.train)?;
    let (xt, yt, nt) = pick(&data.test)?;
    println!("device: {}   digits 3 vs 8: {n} training, {nt} test images, 785 weights, lambda {LAMBDA}", dev.name());
    let loss =
        |w: &Tensor| nn::binary_cross_entropy_with_logits(&x.matmul(w)?, &y)? + w.square()?.sum_all()? * (LAMBDA / 2.0);
    let accuracy = |w: &Tensor| xt.matmul(w)?.gt(0.0)?.eq(&yt)?.mean_all()?.item();
    let dot = |a: &Tensor, b: &Tensor| (a * b)?.sum_all();

    // Newton-CG: solve H p = -g by conjugate gradients with Hessian-vector products only.
    // CG's scalars stay on the device as 0-d tensors: no readback inside the solve.
    let t0 = Instant::now();
    let mut w = Tensor::zeros(&[785], DType::F32, &dev)?;
    let mut newton_log = Vec::new();
    let mut hvps = 0;
    for it in 1..=8 {
        let g = grad(loss, &w)?;
        let (mut p, mut r) = (w.zeros_like()?, (-&g)?);
        let (mut d, mut rr) = (r.clone(), dot(&r, &r)?);
        for _ in 0..10 {
            let hd = hvp(loss, &w, &d)?;
            hvps += 1;
            // once the residual is ~0, the guards keep 0/0 out: alpha and beta become 0
            let alpha = (&rr / dot(&d, &hd)?.maximum(1e-30)?)?;
            p = (&p + &d * &alpha)?;
            r = (&r - &hd * &alpha)?;
            let rr_new = dot(&r, &r)?;
            d = (&r + &d * (&rr_new / rr.maximum(1e-30)?))?;
            rr = rr_new;
        }
        w = (&w + &p)?;
        let (l, gn) = (loss(&w)?.item()?, g.square()?.sum_all()?.sqrt()?.item()?);
        newton_log.push(l);
        println!("newton-cg  iter {it:>2}: loss {l:.6}  |grad| before step {gn:.2e}");
    }
    let newton_secs = t0.elapsed().as_secs_f64();
    let newton_loss = *newton_log.last().unwrap();
    let newton_acc = accuracy(&w)?;

    // Gradient descent with a fixed step, until it matches Newton-CG's loss or 1,000 steps.
    let t1 = Instant::now();
    let mut v = Tensor::zeros(&[785], DType::F32, &dev)?;
    let lr = 0.5;
    let mut gd_steps = 0;
    let mut gd_loss = f64::INFINITY;
    while gd_steps < 1000 {
        let (l, g) = value_and_grad(loss, &v)?;
        v = (&v - lr * &g)?;
        gd_steps += 1;
        if gd_steps % 50 == 0 {
            gd_loss = l.item()?;
            if gd_steps % 250 == 0 {
                println!("gradient descent step {gd_steps:>4}: loss {gd_loss:.6}");
            }
            if gd_loss <= newton_loss * (1.0 + 1e-3) {
                break;
            }
        }
    }
    let gd_secs = t1.elapsed().as_secs_f64();
    let gd_acc = accuracy(&v)?;
    println!();
    println!("{:<22} {:>10} {:>12} {:>14} {:>10}", "method", "iterations", "final loss", "test accuracy", "seconds");
    println!(
        "{:<22} {:>10} {:>12.6} {:>13.2}% {:>10.2}",
        format!("newton-cg ({hvps} hvps)"),
        newton_log.len(),
        newton_loss,
        newton_acc * 100.0,
        newton_secs
    );
    println!(
        "{:<22} {:>10} {:>12.6} {:>13.2}% {:>10.2}",
        format!("gradient descent lr {lr}"),
        gd_steps,
        gd_loss,
        gd_acc * 100.0,
        gd_secs
    );
    Ok(())
}
