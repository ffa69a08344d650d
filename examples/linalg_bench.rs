//! Times inverse and logdet + its gradient at n = 64 and 256, batch 1 and 32, on the GPU
//! and the CPU in one run (median of a few runs after a warm-up, device synchronized).
//! `cargo run --release --example linalg_bench`
use std::time::Instant;
use wgrad::{grad, DType, Device, Result, Tensor};

fn median_ms(dev: &Device, reps: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    f()?;
    dev.synchronize()?;
    let mut t = Vec::new();
    for _ in 0..reps {
        let s = Instant::now();
        let out = f()?;
        dev.synchronize()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
        drop(out);
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(t[t.len() / 2])
}

fn main() -> Result<()> {
    let gpu = Device::best();
    let devices = if gpu.is_gpu() { vec![gpu, Device::cpu()] } else { vec![Device::cpu()] };
    println!("{:<40} {:>6} {:>6} {:>16} {:>12}", "device", "n", "batch", "op", "median ms");
    for dev in &devices {
        for &n in &[64usize, 256] {
            for &batch in &[1usize, 32] {
                let r = Tensor::randn(&[batch, n, n], 1, dev)?;
                let a = r.add(&Tensor::eye(n, DType::F32, dev)?.mul_scalar(n as f64)?)?;
                let reps = if n == 256 && batch == 32 { 3 } else { 5 };
                let t_inv = median_ms(dev, reps, || a.inverse_ex().map(|r| r.0))?;
                let t_ld = median_ms(dev, reps, || grad(|x| x.logdet()?.sum_all(), &a))?;
                println!("{:<40} {n:>6} {batch:>6} {:>16} {t_inv:>12.2}", dev.name(), "inverse");
                println!("{:<40} {n:>6} {batch:>6} {:>16} {t_ld:>12.2}", dev.name(), "logdet+grad");
            }
        }
    }
    Ok(())
}
