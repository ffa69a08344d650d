//! Criterion benches, GPU vs CPU, one group per op family plus the training workloads
//! (the bench tool's W1-W5, for regression tracking). Every GPU iteration ends with
//! `synchronize()` so the timer measures finished work.
//! `cargo bench --bench ops` (filter: `cargo bench --bench ops -- gpu/matmul`).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use wgrad::nn::{self, Activation, Ctx, Linear, Module, Params, Sequential};
use wgrad::optim::{Optimizer, Sgd};
use wgrad::{grad, hvp, value_and_grad_many, Device, Tensor};

fn devices() -> Vec<(&'static str, Device)> {
    let mut v = Vec::new();
    match Device::gpu() {
        Ok(g) => v.push(("gpu", g)),
        Err(e) => eprintln!("no GPU for the benches: {e}"),
    }
    v.push(("cpu", Device::cpu()));
    v
}

fn run(dev: &Device, f: impl Fn() -> Tensor) {
    let t = f();
    dev.synchronize().unwrap();
    drop(t);
}

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let sizes: Vec<usize> = std::env::var("WGRAD_BENCH_MATMUL")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or(vec![256, 512, 1024, 2048]);
    for (name, dev) in devices() {
        for &n in &sizes {
            let a = Tensor::randn(&[n, n], 1, &dev).unwrap();
            let b = Tensor::randn(&[n, n], 2, &dev).unwrap();
            group.throughput(Throughput::Elements((2 * n * n * n) as u64));
            group.bench_with_input(BenchmarkId::new(format!("{name}/matmul"), n), &n, |bench, _| {
                bench.iter(|| run(&dev, || a.matmul(&b).unwrap()))
            });
        }
    }
}

fn elementwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("elementwise");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let n = 16 << 20;
    for (name, dev) in devices() {
        let x = Tensor::rand(&[n], -1.0, 1.0, 1, &dev).unwrap();
        let y = Tensor::rand(&[n], -1.0, 1.0, 2, &dev).unwrap();
        group.throughput(Throughput::Bytes((12 * n) as u64));
        group.bench_function(format!("{name}/add_16M"), |b| b.iter(|| run(&dev, || x.add(&y).unwrap())));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{name}/exp_x_mul_x_plus_1_16M"), |b| {
            b.iter(|| run(&dev, || x.exp().unwrap().mul(&x).unwrap().add_scalar(1.0).unwrap()))
        });
    }
}

fn reduce(c: &mut Criterion) {
    let mut group = c.benchmark_group("reduce");
    group.sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let n = 16 << 20;
    for (name, dev) in devices() {
        let x = Tensor::rand(&[n], -1.0, 1.0, 1, &dev).unwrap();
        group.throughput(Throughput::Bytes((4 * n) as u64));
        group.bench_function(format!("{name}/sum_16M"), |b| b.iter(|| run(&dev, || x.sum_all().unwrap())));
        let m = x.reshape(&[4096, 4096]).unwrap();
        group.bench_function(format!("{name}/row_sum_4096x4096"), |b| {
            b.iter(|| run(&dev, || m.sum(&[1], false).unwrap()))
        });
    }
}

/// The bench tool's W4 model: 784-256-256-10, ReLU, batch 128.
fn mlp(p: &mut Params, dev: &Device) -> Sequential {
    Sequential::new()
        .push(Linear::new(p, "l1", 784, 256, 0, dev).unwrap())
        .push(Activation::Relu)
        .push(Linear::new(p, "l2", 256, 256, 1, dev).unwrap())
        .push(Activation::Relu)
        .push(Linear::new(p, "l3", 256, 10, 2, dev).unwrap())
}

/// W4 (an SGD training step) and W5 (loss, gradient and HVP with respect to the first
/// weight) of the bench tool.
fn training(c: &mut Criterion) {
    let mut group = c.benchmark_group("training");
    group.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    for (name, dev) in devices() {
        let mut params = Params::new();
        let model = mlp(&mut params, &dev);
        let xb = Tensor::rand(&[128, 784], 0.0, 1.0, 5, &dev).unwrap();
        let yb = Tensor::from_slice(&(0..128u32).map(|i| i % 10).collect::<Vec<_>>(), &[128], &dev).unwrap();
        let mut sgd = Sgd::new(0.1);
        group.bench_function(format!("{name}/mlp_step_b128"), |b| {
            b.iter(|| {
                let (_, g) = value_and_grad_many(
                    |p| nn::cross_entropy(&model.forward(&Ctx::train(p, 0), &xb)?, &yb),
                    params.tensors(),
                )
                .unwrap();
                sgd.step(&mut params, &g).unwrap();
                dev.synchronize().unwrap();
            })
        });
        let p = params.tensors().to_vec();
        let loss_of = |w: &Tensor| -> wgrad::Result<Tensor> {
            let mut q = p.clone();
            q[0] = w.clone();
            nn::cross_entropy(&model.forward(&Ctx::eval(&q), &xb)?, &yb)
        };
        let v = Tensor::randn(p[0].shape(), 9, &dev).unwrap();
        group.bench_function(format!("{name}/loss"), |b| b.iter(|| run(&dev, || loss_of(&p[0]).unwrap())));
        group.bench_function(format!("{name}/grad"), |b| b.iter(|| run(&dev, || grad(loss_of, &p[0]).unwrap())));
        group.bench_function(format!("{name}/hvp"), |b| b.iter(|| run(&dev, || hvp(loss_of, &p[0], &v).unwrap())));
    }
}

criterion_group!(benches, matmul, elementwise, reduce, training);
criterion_main!(benches);
