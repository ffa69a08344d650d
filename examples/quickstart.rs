//! A first look at wgrad: the same matmul and reduction on the GPU and on the CPU.
//! `cargo run --release --example quickstart`
use std::time::Instant;
use wgrad::{Device, Result, Tensor};

fn main() -> Result<()> {
    let gpu = Device::best();
    let cpu = Device::cpu();
    println!("device: {}", gpu.name());
    let n = 512;
    let a = Tensor::randn(&[n, n], 1, &cpu)?;
    let b = Tensor::randn(&[n, n], 2, &cpu)?;
    for dev in [&gpu, &cpu] {
        let (a, b) = (a.to_device(dev)?, b.to_device(dev)?);
        let c = a.matmul(&b)?; // warm-up: compiles the kernel once
        dev.synchronize()?;
        let t = Instant::now();
        let c2 = a.matmul(&b)?;
        dev.synchronize()?;
        let secs = t.elapsed().as_secs_f64();
        let s = c.sum_all()?.to_scalar::<f32>()?;
        let rowmax = c2.max(&[1], false)?.mean_all()?.to_scalar::<f32>()?;
        println!(
            "{:<32} matmul {n}x{n}: {:8.2} ms ({:6.2} GFLOP/s)  sum = {s:.4}  mean row max = {rowmax:.4}",
            dev.name(),
            secs * 1e3,
            2.0 * (n as f64).powi(3) / secs / 1e9
        );
    }
    if gpu.is_gpu() {
        // what one 1024 x 1024 matmul costs the runtime
        let a = Tensor::randn(&[1024, 1024], 3, &gpu)?;
        let b = Tensor::randn(&[1024, 1024], 4, &gpu)?;
        gpu.synchronize()?;
        let before = gpu.counters();
        let c = a.matmul(&b)?;
        let queued = gpu.counters() - before;
        let _ = c.to_vec::<f32>()?;
        let read = gpu.counters() - before;
        println!(
            "one 1024x1024 matmul: {} dispatch, {} submits and {} readbacks until read; \
             {} submit and {} readback after to_vec",
            queued.dispatches, queued.submits, queued.readbacks, read.submits, read.readbacks
        );
    }
    Ok(())
}
