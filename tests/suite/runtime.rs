//! The runtime's promises: counters, batching, pooling, compile-once pipelines, faults.
use crate::common::*;
use wgrad::{DType, Tensor};

#[test]
fn one_matmul_is_one_dispatch_and_no_submit_until_read() {
    let Some(g) = fresh_gpu() else { return };
    let a = Tensor::ones(&[128, 128], DType::F32, &g).unwrap();
    let b = Tensor::ones(&[128, 128], DType::F32, &g).unwrap();
    let _warm = a.matmul(&b).unwrap().to_vec::<f32>().unwrap();
    let before = g.counters();
    let c = a.matmul(&b).unwrap();
    let mid = g.counters();
    // deferred (an elementwise consumer would run in its store) until something reads it
    assert_eq!(mid.dispatches - before.dispatches, 0);
    assert_eq!(mid.readbacks - before.readbacks, 0, "no readback before the user asks");
    assert_eq!(mid.submits - before.submits, 0, "no submit before the user asks");
    let v = c.to_vec::<f32>().unwrap();
    assert!(v.iter().all(|&x| x == 128.0));
    let after = g.counters();
    assert_eq!(after.dispatches - before.dispatches, 1);
    assert_eq!(after.pipeline_compilations - before.pipeline_compilations, 0, "pipelines are compiled once");
    assert_eq!(after.readbacks - mid.readbacks, 1);
    assert!(after.submits - before.submits <= 1);
}

#[test]
fn the_pool_reuses_buffers_in_a_loop() {
    let Some(g) = fresh_gpu() else { return };
    g.context().unwrap().set_poison_outputs(false);
    let x = Tensor::randn(&[256, 64], 1, DType::F32, &g).unwrap();
    let step = |x: &Tensor| x.exp().unwrap().mul(x).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    for _ in 0..3 {
        step(&x);
    }
    let before = g.counters();
    for _ in 0..20 {
        step(&x);
    }
    let after = g.counters();
    assert_eq!(after.buffer_allocations, before.buffer_allocations, "steady state allocates nothing new");
    assert_eq!(after.live_buffers, before.live_buffers, "live buffers stay flat");
}

#[test]
fn batches_are_submitted_without_readbacks() {
    let Some(g) = fresh_gpu() else { return };
    let mut x = Tensor::ones(&[1000], DType::F32, &g).unwrap();
    let before = g.counters();
    // unfused: one dispatch per op (fused, the chain would be a few kernels)
    wgrad::with_fusion(false, || {
        for _ in 0..1200 {
            x = x.add_scalar(1.0).unwrap();
        }
    });
    let mid = g.counters();
    assert_eq!(mid.readbacks, before.readbacks);
    assert!(mid.submits - before.submits >= 2, "long chains are submitted in batches");
    assert_eq!(x.to_vec::<f32>().unwrap()[999], 1201.0);
}

#[test]
fn zero_size_tensors_never_bind_empty_buffers() {
    with_gpu!(g);
    let z = Tensor::zeros(&[0], DType::F32, &g).unwrap();
    assert_eq!(z.exp().unwrap().to_vec::<f32>().unwrap(), Vec::<f32>::new());
    assert_eq!(z.add(&z).unwrap().shape(), &[0]);
    assert_eq!(Tensor::from_slice::<f32>(&[], &[0, 4], &g).unwrap().t().unwrap().shape(), &[4, 0]);
}

#[test]
fn a_lost_device_returns_errors_not_panics() {
    let Some(g) = fresh_gpu() else { return };
    let x = Tensor::ones(&[4], DType::F32, &g).unwrap();
    g.context().unwrap().mark_lost("test");
    assert!(matches!(x.exp(), Err(wgrad::Error::Gpu(wgrad::KernelError::DeviceLost(_)))));
    assert!(x.to_vec::<f32>().is_err());
    assert!(Tensor::ones(&[4], DType::F32, &g).is_err());
}

#[test]
fn adapter_info_is_available() {
    with_gpu!(g);
    let info = g.context().unwrap().adapter();
    assert!(!info.name.is_empty());
    assert!(g.name().contains(&info.name));
}
