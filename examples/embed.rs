//! wgrad inside a host application that owns its wgpu device: the host's compute pass
//! makes data, wgrad fits a model on it in place (no host copy), and a second host pass
//! uses the fitted parameters straight from wgrad's buffers. Exits non-zero on a wrong fit.
//! `cargo run --release --example embed`
use std::time::Instant;
use wgrad::nn::Params;
use wgrad::optim::{Optimizer, Sgd};
use wgrad::wgpu;
use wgrad::{value_and_grad_many, DType, Device, Result, Tensor};

const N: u32 = 4096;

const MAKE_POINTS: &str = r#"
@group(0) @binding(0) var<storage, read_write> pts: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= arrayLength(&pts) / 2u) { return; }
    let x = f32(i) / 2048.0 - 1.0;
    pts[2u * i] = x;
    pts[2u * i + 1u] = 3.0 * x + 2.0 + 0.05 * sin(17.0 * f32(i));
}
"#;

const PREDICT: &str = r#"
@group(0) @binding(0) var<storage, read> pts: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> pred: array<f32>;
struct Offsets { w: u32, b: u32 }
@group(0) @binding(4) var<uniform> off: Offsets;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= arrayLength(&pred)) { return; }
    pred[i] = w[off.w] * pts[2u * i] + b[off.b];
}
"#;

fn pipeline(device: &wgpu::Device, src: &str) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}

fn run_pass(device: &wgpu::Device, queue: &wgpu::Queue, p: &wgpu::ComputePipeline, bufs: &[wgpu::BindingResource]) {
    let entries: Vec<wgpu::BindGroupEntry> =
        bufs.iter().enumerate().map(|(i, r)| wgpu::BindGroupEntry { binding: i as u32, resource: r.clone() }).collect();
    let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &p.get_bind_group_layout(0),
        entries: &entries,
    });
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(p);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(N.div_ceil(64), 1, 1);
    }
    queue.submit([enc.finish()]);
}

fn host_read(device: &wgpu::Device, queue: &wgpu::Queue, src: &wgpu::Buffer, bytes: u64) -> Vec<f32> {
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: bytes,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes);
    queue.submit([enc.finish()]);
    staging.map_async(wgpu::MapMode::Read, .., |_| {});
    device.poll(wgpu::PollType::Wait { submission_index: None, timeout: None }).unwrap();
    let v = bytemuck::cast_slice(&staging.get_mapped_range(..).unwrap()).to_vec();
    v
}

fn main() -> Result<()> {
    // --- the host's own device
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::HighPerformance,
        ..Default::default()
    }))
    .expect("no adapter (install mesa-vulkan-drivers on a machine without a GPU)");
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor { required_limits: adapter.limits(), ..Default::default() }),
    )
    .expect("device");
    println!("host device: {} ({:?})", info.name, info.backend);
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let points = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host points"),
        size: (N * 2 * 4) as u64,
        usage,
        mapped_at_creation: false,
    });
    let pred = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("host predictions"),
        size: (N * 4) as u64,
        usage,
        mapped_at_creation: false,
    });
    // --- host pass 1: make the data
    run_pass(&device, &queue, &pipeline(&device, MAKE_POINTS), &[points.as_entire_binding()]);

    // --- wgrad on the host's device: fit y = w x + b on the host's buffer, no copy
    let dev = Device::from_wgpu(device.clone(), queue.clone());
    let data = Tensor::from_wgpu_buffer(&points, 0, &[N as usize, 2], DType::F32, &dev)?;
    let (x, y) = (data.narrow(1, 0, 1)?, data.narrow(1, 1, 1)?);
    let mut params = Params::new();
    params.add("w", Tensor::zeros(&[1, 1], DType::F32, &dev)?);
    params.add("b", Tensor::zeros(&[1], DType::F32, &dev)?);
    let mut opt = Sgd::new(0.3).momentum(0.5);
    let before = dev.counters();
    for _ in 0..200 {
        let (_, g) =
            value_and_grad_many(|p| x.matmul(&p[0])?.add(&p[1])?.sub(&y)?.square()?.mean_all(), params.tensors())?;
        opt.step(&mut params, &g)?;
    }
    let loop_counts = dev.counters() - before;
    println!(
        "200 training steps on the host's buffer: {} dispatches, {} submits, {} readbacks",
        loop_counts.dispatches, loop_counts.submits, loop_counts.readbacks
    );

    // --- host pass 2 reads the fitted parameters from wgrad's buffers
    let (wbuf, woff, _) = params.tensors()[0].wgpu_buffer().expect("GPU tensor");
    let (bbuf, boff, _) = params.tensors()[1].wgpu_buffer().expect("GPU tensor");
    dev.flush()?; // wgrad's pending work is submitted before the host's pass
    let offs = [(woff / 4) as u32, (boff / 4) as u32];
    let uni = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&uni, 0, bytemuck::cast_slice(&[offs[0], offs[1], 0, 0]));
    run_pass(
        &device,
        &queue,
        &pipeline(&device, PREDICT),
        &[
            points.as_entire_binding(),
            wbuf.as_entire_binding(),
            bbuf.as_entire_binding(),
            pred.as_entire_binding(),
            uni.as_entire_binding(),
        ],
    );
    let p = host_read(&device, &queue, &pred, (N * 4) as u64);
    let worst =
        p.iter().enumerate().map(|(i, &v)| (v - (3.0 * (i as f32 / 2048.0 - 1.0) + 2.0)).abs()).fold(0.0f32, f32::max);
    let (w, b) = (params.tensors()[0].to_scalar::<f32>()?, params.tensors()[1].to_scalar::<f32>()?);
    println!("fitted w = {w:.4}, b = {b:.4} (true 3, 2); host predictions within {worst:.4} of 3x + 2");

    // --- the cost of a hand-off (wrap + hand back) against a plain copy, 1M elements
    let big =
        device.create_buffer(&wgpu::BufferDescriptor { label: None, size: 4 << 20, usage, mapped_at_creation: false });
    let dst =
        device.create_buffer(&wgpu::BufferDescriptor { label: None, size: 4 << 20, usage, mapped_at_creation: false });
    let t = Instant::now();
    for _ in 0..1000 {
        let t = Tensor::from_wgpu_buffer(&big, 0, &[1 << 20], DType::F32, &dev)?;
        let _ = t.wgpu_buffer();
    }
    let handoff = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..1000 {
        let mut enc = device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&big, 0, &dst, 0, 4 << 20);
        queue.submit([enc.finish()]);
    }
    device.poll(wgpu::PollType::Wait { submission_index: None, timeout: None }).unwrap();
    let copy = t.elapsed().as_secs_f64();
    println!(
        "1,000 hand-offs of a 1M-element buffer: {:.3} ms in all ({:.2} us each); 1,000 plain 4 MB copies: {:.1} ms",
        handoff * 1e3,
        handoff * 1e6 / 1000.0,
        copy * 1e3
    );
    if (w - 3.0).abs() > 0.02 || (b - 2.0).abs() > 0.02 || worst > 0.05 || loop_counts.readbacks != 0 {
        eprintln!("the fit is wrong or the loop read data back");
        std::process::exit(1);
    }
    println!("ok");
    Ok(())
}
