//! The runtime's promises: counters, batching, pooling, compile-once pipelines, faults.
use crate::common::*;
use wgrad::{DType, Device, Error, KernelError, Tensor};

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
    let x = Tensor::randn(&[256, 64], 1, &g).unwrap();
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
    let lost = |r: Result<(), wgrad::Error>| matches!(r, Err(wgrad::Error::Gpu(wgrad::KernelError::DeviceLost(_))));
    assert!(lost(x.exp().map(drop)));
    assert!(lost(x.to_vec::<f32>().map(drop)));
    assert!(lost(Tensor::ones(&[4], DType::F32, &g).map(drop)));
}

#[test]
fn adapter_info_is_available() {
    with_gpu!(g);
    let info = g.context().unwrap().adapter();
    assert!(!info.name.is_empty());
    assert!(g.name().contains(&info.name));
}

#[test]
fn no_adapter_by_that_name_is_an_error_naming_it() {
    // runs without a GPU too: no adapter at all gives the same error
    match Device::gpu_named("no-such-adapter-7f3a") {
        Err(Error::Gpu(KernelError::NoAdapter { hint })) => assert!(hint.contains("no-such-adapter-7f3a"), "{hint}"),
        other => panic!("want NoAdapter, got {other:?}"),
    }
}

#[test]
fn a_grid_past_the_adapter_limit_is_an_error_and_the_device_stays_usable() {
    with_gpu!(_shared);
    // a device whose workgroup grid is capped at 8 per dimension (requesting lower limits
    // than the adapter's is allowed), wrapped as a host's device
    use wgrad::wgpu;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default())).unwrap();
    let limits = wgpu::Limits { max_compute_workgroups_per_dimension: 8, ..adapter.limits() };
    let desc = wgpu::DeviceDescriptor { required_limits: limits, ..Default::default() };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).unwrap();
    let g = Device::from_wgpu(device, queue);
    let a = Tensor::ones(&[4096, 8], DType::F32, &g).unwrap();
    let b = Tensor::ones(&[8, 8], DType::F32, &g).unwrap();
    // 4096 rows are at least 32 workgroups of rows in every matmul kernel
    let r = wgrad::with_fusion(false, || a.matmul(&b)).and_then(|c| c.to_vec::<f32>());
    match r {
        Err(Error::Gpu(KernelError::GridTooLarge { kernel, groups, max: 8 })) => {
            assert!(kernel.contains("matmul") && groups > 8, "{kernel}: {groups}")
        }
        other => panic!("want GridTooLarge, got {other:?}"),
    }
    // nothing was lost, and work within the limit still runs
    assert_eq!(b.matmul(&b).unwrap().to_vec::<f32>().unwrap(), vec![8.0; 64]);
    assert_eq!(a.sum_all().unwrap().to_scalar::<f32>().unwrap(), 4096.0 * 8.0);
}

#[test]
fn a_readback_past_its_timeout_is_an_error_and_a_later_read_succeeds() {
    let Some(g) = fresh_gpu() else { return };
    let ctx = g.context().unwrap();
    // work that takes the GPU a while (about 0.1 s on lavapipe, milliseconds on a large GPU),
    // submitted by the read itself, which then waits for zero seconds; entries of size
    // sqrt(3 / n) keep the chain's values near 1
    let (n, steps) = if ctx.is_cpu_adapter() { (384, 3) } else { (4096, 16) };
    let s = (3.0 / n as f64).sqrt();
    let (r, a) = pair(&[n, n], -s, s, &g);
    let chain = |a: &Tensor| (0..steps).try_fold(a.clone(), |c, _| c.matmul(a)).unwrap();
    let c = chain(&a);
    ctx.set_readback_timeout(std::time::Duration::ZERO);
    match c.to_vec::<f32>() {
        Err(Error::Gpu(KernelError::ReadbackTimeout(t))) => assert_eq!(t, std::time::Duration::ZERO),
        other => panic!("want ReadbackTimeout, got {:?}", other.map(|v| v.len())),
    }
    ctx.set_readback_timeout(wgrad::kernels::READBACK_TIMEOUT);
    // c is intact: it equals the same chain computed again, and the f64 reference on lavapipe
    assert_close(&c, &chain(&a), 0.0, 0.0, "the values after a timed-out read");
    if ctx.is_cpu_adapter() {
        let r = rounded(&r);
        assert_close(&c, &chain(&r), 1e-3, 1e-5, "against the CPU");
    }
}

#[test]
fn an_allocation_refused_as_out_of_memory_is_an_error_and_loses_nothing() {
    let Some(g) = fresh_gpu() else { return };
    let ctx = g.context().unwrap();
    let keep = Tensor::from_slice(&[1.0f32, 2.0, 3.0], &[3], &g).unwrap();
    g.synchronize().unwrap();
    ctx.inject_out_of_memory(true);
    match Tensor::zeros(&[1 << 20], DType::F32, &g) {
        Err(Error::Gpu(KernelError::OutOfMemory { bytes, .. })) => assert!(bytes >= 4 << 20, "{bytes}"),
        other => panic!("want OutOfMemory, got {:?}", other.map(|t| t.shape().to_vec())),
    }
    let r = keep.broadcast_to(&[1000, 3]).and_then(|t| t.exp()).and_then(|t| t.to_vec::<f32>());
    assert!(matches!(r, Err(Error::Gpu(KernelError::OutOfMemory { .. }))), "{r:?}");
    ctx.inject_out_of_memory(false);
    assert_eq!(keep.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    assert_eq!(
        Tensor::ones(&[1 << 20], DType::F32, &g).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(),
        1048576.0
    );
}
