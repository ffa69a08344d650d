//! Embedding in a host's wgpu device, and thread safety.
use crate::common::*;
use wgrad::nn::{self, Activation, Ctx, Linear, Module, Params, Sequential};
use wgrad::optim::{Adam, Optimizer};
use wgrad::wgpu;
use wgrad::{value_and_grad_many, DType, Device, Tensor};

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn device_and_tensor_are_send_and_sync() {
    assert_send_sync::<Device>();
    assert_send_sync::<Tensor>();
    assert_send_sync::<Params>();
}

#[test]
fn host_buffers_wrap_as_tensors_and_tensors_hand_their_buffers_back() {
    let Some(g) = fresh_gpu() else { return };
    let ctx = g.context().unwrap();
    let (device, queue) = (ctx.wgpu_device().clone(), ctx.wgpu_queue().clone());
    let host = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host"),
        size: 64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(
        &host,
        0,
        bytemuck::cast_slice(&[
            1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0,
        ]),
    );
    queue.submit([]);
    // elements 4.. as a [3, 4] tensor: no copy, the data is the host's
    let t = Tensor::from_wgpu_buffer(&host, 16, &[3, 4], DType::F32, &g).unwrap();
    assert_eq!(t.sum(&[1], false).unwrap().to_vec::<f32>().unwrap(), vec![26.0, 42.0, 58.0]);
    let (buf, off, layout) = t.exp().unwrap().wgpu_buffer().unwrap();
    assert_eq!((off, layout.shape.as_slice()), (0, &[3usize, 4][..]));
    assert!(buf.size() >= 48);
    let (same, off, _) = t.wgpu_buffer().unwrap();
    assert_eq!(same, host, "the host's own buffer comes back");
    assert_eq!(off, 16);
    // bad hand-ins are errors
    assert!(Tensor::from_wgpu_buffer(&host, 16, &[4, 4], DType::F32, &g)
        .unwrap_err()
        .to_string()
        .contains("needs 80 bytes"));
    assert!(Tensor::from_wgpu_buffer(&host, 2, &[1], DType::F32, &g).is_err());
    assert!(Tensor::from_wgpu_buffer(&host, 0, &[1], DType::F32, &cpu()).is_err());
    let uniform = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::UNIFORM,
        mapped_at_creation: false,
    });
    assert!(Tensor::from_wgpu_buffer(&uniform, 0, &[4], DType::F32, &g).unwrap_err().to_string().contains("STORAGE"));
    // a device built from the host's device and queue shares the memory
    let hosted = Device::from_wgpu(device.clone(), queue.clone());
    assert_eq!(hosted.context().unwrap().adapter().name, ctx.adapter().name);
    let h = Tensor::from_wgpu_buffer(&host, 0, &[16], DType::F32, &hosted).unwrap();
    assert_eq!(h.sum_all().unwrap().to_scalar::<f32>().unwrap(), 136.0);
    // a 4-byte host buffer as a broadcast operand (too small to bind as vec4s)
    let tiny = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&tiny, 0, bytemuck::cast_slice(&[0.5f32]));
    queue.submit([]);
    let s = Tensor::from_wgpu_buffer(&tiny, 0, &[1], DType::F32, &hosted).unwrap();
    assert_eq!(
        h.narrow(0, 0, 8).unwrap().mul(&s).unwrap().to_vec::<f32>().unwrap(),
        vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    );
}

fn train(dev: &Device, seed: u64) -> Vec<f32> {
    let x = Tensor::randn(&[64, 8], seed, dev).unwrap();
    let y = Tensor::from_slice(&(0..64u32).map(|i| (i + seed as u32) % 3).collect::<Vec<_>>(), &[64], dev).unwrap();
    let mut p = Params::new();
    let m = Sequential::new()
        .push(Linear::new(&mut p, "a", 8, 16, seed, dev).unwrap())
        .push(Activation::Tanh)
        .push(Linear::new(&mut p, "b", 16, 3, seed + 1, dev).unwrap());
    let mut opt = Adam::new(0.01);
    for s in 0..30 {
        let (_, g) =
            value_and_grad_many(|ps| nn::cross_entropy(&m.forward(&Ctx::train(ps, s), &x)?, &y), p.tensors()).unwrap();
        opt.step(&mut p, &g).unwrap();
    }
    p.tensors().iter().flat_map(|t| t.to_vec::<f32>().unwrap()).collect()
}

#[test]
fn two_threads_training_on_one_device_match_one_after_the_other() {
    let Some(g) = fresh_gpu() else { return };
    let sequential = (train(&g, 1), train(&g, 2));
    let (ga, gb) = (g.clone(), g.clone());
    let ta = std::thread::spawn(move || train(&ga, 1));
    let tb = std::thread::spawn(move || train(&gb, 2));
    let parallel = (ta.join().unwrap(), tb.join().unwrap());
    assert_eq!(parallel.0, sequential.0);
    assert_eq!(parallel.1, sequential.1);
}
