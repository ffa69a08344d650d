//! Random numbers computed where the tensor lives: Philox 4x32-10 (Salmon et al. 2011, the
//! counter-based generator of cuRAND and PyTorch), in WGSL (shaders/random.wgsl) and here
//! on the CPU with the same bits, so a seed gives the same numbers on both devices.
//!
//! A draw is keyed by a seed and a counter offset. `Tensor::rand` / `randn` with an
//! explicit seed draw at offset 0; [`manual_seed`] sets the global generator, which
//! `rand_like`, `randn_like` and dropout draw from, each draw advancing its offset past the
//! counters it used.
use crate::primitive::{bind, Batch, OutSpec, Primitive};
use crate::storage::{CpuStorage, Storage};
use crate::tensor::check_gpu_dtype;
use crate::{DType, Device, Node, Result, Tensor};
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use wgrad_kernels::{Context, GpuBuffer};

/// What a draw samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// Uniform in [low, high).
    Uniform { low: f64, high: f64 },
    /// Standard normal.
    Normal,
}

impl Distribution {
    /// What the WGSL kernel takes: (normal, low, high).
    fn kernel_args(self) -> (bool, f32, f32) {
        match self {
            Distribution::Uniform { low, high } => (false, low as f32, high as f32),
            Distribution::Normal => (true, 0.0, 1.0),
        }
    }

    /// Philox blocks (of four words) that `n` samples use.
    fn blocks(self, n: usize) -> u64 {
        match self {
            Distribution::Uniform { .. } => n.div_ceil(4) as u64,
            Distribution::Normal => n.div_ceil(2) as u64,
        }
    }
}

/// One Philox 4x32-10 block: ten rounds of the counter under the bumped key.
pub fn philox(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mulhilo = |a: u32, b: u32| {
        let p = a as u64 * b as u64;
        ((p >> 32) as u32, p as u32)
    };
    let (mut c, mut k) = (counter, key);
    for _ in 0..10 {
        let (hi0, lo0) = mulhilo(0xD251_1F53, c[0]);
        let (hi1, lo1) = mulhilo(0xCD9E_8D57, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
        k = [k[0].wrapping_add(0x9E37_79B9), k[1].wrapping_add(0xBB67_AE85)];
    }
    c
}

/// The top 24 bits as a float in [0, 1) (exact in f32 and f64 alike).
fn unit(x: u32) -> f32 {
    (x >> 8) as f32 * 5.960_464_5e-8
}

/// The words each of `n` samples reads: lane i % 4 of block i / 4 (uniform), lanes
/// 2 (i % 2) and 2 (i % 2) + 1 of block i / 2 (normal; the second word is 0 for uniform).
/// One Philox block per four (or two) samples.
fn words(n: usize, dist: Distribution, seed: u64, offset: u64) -> Vec<(u32, u32)> {
    let key = [seed as u32, (seed >> 32) as u32];
    let block = |b: usize| philox([b as u32, 0, offset as u32, (offset >> 32) as u32], key);
    let mut out = Vec::with_capacity(n);
    for b in 0..dist.blocks(n) as usize {
        let r = block(b);
        match dist {
            Distribution::Uniform { .. } => out.extend(r.iter().map(|&w| (w, 0))),
            Distribution::Normal => out.extend([(r[0], r[1]), (r[2], r[3])]),
        }
    }
    out.truncate(n);
    out
}

/// `n` samples in f32, as the WGSL kernel computes them.
pub fn samples_f32(n: usize, dist: Distribution, seed: u64, offset: u64) -> Vec<f32> {
    let words = words(n, dist, seed, offset).into_iter();
    match dist {
        Distribution::Uniform { low, high } => {
            let (low, high) = (low as f32, high as f32);
            words.map(|(a, _)| low + (high - low) * unit(a)).collect()
        }
        Distribution::Normal => words
            .map(|(a, b)| {
                let (u1, u2) = (unit(a) + 5.960_464_5e-8, unit(b));
                (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
            })
            .collect(),
    }
}

/// `n` samples in f64 from the same words (the f64 reference of the f32 draw).
fn samples_f64(n: usize, dist: Distribution, seed: u64, offset: u64) -> Vec<f64> {
    let words = words(n, dist, seed, offset).into_iter();
    match dist {
        Distribution::Uniform { low, high } => words.map(|(a, _)| low + (high - low) * unit(a) as f64).collect(),
        Distribution::Normal => words
            .map(|(a, b)| {
                let (u1, u2) = (unit(a) as f64 + 5.960_464_5e-8, unit(b) as f64);
                (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            })
            .collect(),
    }
}

thread_local! {
    /// The global generator of this thread: (seed, next counter offset) of its CPU draws.
    /// Per thread, as ops run on the thread that calls them: threads draw independent,
    /// reproducible sequences.
    static GENERATOR: Cell<(u64, u64)> = const { Cell::new((0x5EED, 0)) };
    /// Its state on each GPU device this thread drew on: [seed, offset] as four words in
    /// a device buffer that each draw snapshots and advances on the device (so a replayed
    /// step draws fresh numbers as an eager one does).
    static DEVICE_GENERATORS: RefCell<Vec<Arc<GpuBuffer>>> = const { RefCell::new(Vec::new()) };
}

/// Seed the global generator (PyTorch's `torch.manual_seed`; this thread's): the draws
/// that follow (`rand_like`, `randn_like`, dropout) are the same sequence after the same
/// seed, on either device.
pub fn manual_seed(seed: u64) {
    GENERATOR.with(|g| g.set((seed, 0)));
    DEVICE_GENERATORS.with(|d| d.borrow_mut().clear());
}

/// This thread's generator state on `ctx`, made from the seed at its first draw.
fn device_generator(ctx: &Arc<Context>) -> Result<Arc<GpuBuffer>> {
    DEVICE_GENERATORS.with(|d| {
        let mut d = d.borrow_mut();
        if let Some(g) = d.iter().find(|g| Arc::ptr_eq(g.context(), ctx)) {
            return Ok(g.clone());
        }
        let seed = GENERATOR.with(|g| g.get().0);
        let words = [seed as u32, (seed >> 32) as u32, 0, 0];
        let g = Arc::new(ctx.upload(bytemuck::cast_slice(&words))?);
        d.push(g.clone());
        Ok(g)
    })
}

/// (seed, offset) of the next draw of `blocks` Philox blocks, advancing the global
/// generator.
pub(crate) fn next_key(blocks: u64) -> (u64, u64) {
    GENERATOR.with(|g| {
        let at = g.get();
        g.set((at.0, at.1.wrapping_add(blocks)));
        at
    })
}

/// A tensor of samples of `dist` keyed by (seed, offset), made on `device` (a kernel on a
/// GPU, the same words on the CPU).
pub(crate) fn draw(
    shape: &[usize],
    dist: Distribution,
    seed: u64,
    offset: u64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    match device {
        Device::Cpu => {
            let s = match dtype {
                DType::F32 => CpuStorage::F32(samples_f32(n, dist, seed, offset)),
                DType::F16 => {
                    CpuStorage::F16(samples_f32(n, dist, seed, offset).into_iter().map(half::f16::from_f32).collect())
                }
                _ => CpuStorage::from_f64(samples_f64(n, dist, seed, offset), dtype),
            };
            Ok(Tensor::new_contiguous(Storage::cpu_owned(s), shape, dtype, device.clone()))
        }
        Device::Gpu(ctx) => {
            check_gpu_dtype("rand", dtype, device)?;
            if dtype != DType::F32 {
                return draw(shape, dist, seed, offset, DType::F32, device)?.to_dtype(dtype);
            }
            let (normal, low, high) = dist.kernel_args();
            let buf = ctx.random(n, seed, offset, normal, low, high)?;
            Ok(Tensor::new_contiguous(Storage::Gpu(Arc::new(buf)), shape, dtype, device.clone()))
        }
    }
}

/// Samples shaped like input 0 (its shape, dtype and device), keyed by a fixed (seed,
/// offset) on the CPU, or on a GPU by input 1, a snapshot of the device-side generator: a
/// primitive whose key is fixed either way, so that a checkpoint's replay draws the same
/// sample again.
#[derive(Clone, Copy)]
struct RandomLike {
    dist: Distribution,
    seed: u64,
    offset: u64,
    /// The Philox blocks of a CPU draw from the host generator (None on a GPU).
    host_blocks: Option<u64>,
}

impl Primitive for RandomLike {
    fn name(&self) -> String {
        match self.dist {
            Distribution::Uniform { .. } => "rand_like".into(),
            Distribution::Normal => "randn_like".into(),
        }
    }
    fn shape_rule(&self, x: &[&Tensor]) -> Result<OutSpec> {
        let dtype = if x[0].dtype().is_float() { x[0].dtype() } else { DType::F32 };
        Ok(OutSpec::new(x[0].shape(), dtype))
    }
    fn differentiable(&self) -> bool {
        false
    }
    fn cpu(&self, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        draw(x[0].shape(), self.dist, self.seed, self.offset, out.dtype, &Device::Cpu)
    }
    /// on the CPU the key comes from the host generator: a replay takes its next one
    fn rekeyed(&self, next: &mut dyn FnMut((u64, u64), u64) -> (u64, u64)) -> Option<Arc<dyn Primitive>> {
        let blocks = self.host_blocks?;
        let (seed, offset) = next((self.seed, self.offset), blocks);
        Some(Arc::new(RandomLike { seed, offset, ..*self }))
    }
    fn gpu(&self, ctx: &Arc<Context>, x: &[&Tensor], out: &OutSpec) -> Result<Tensor> {
        let device = Device::Gpu(ctx.clone());
        let Some(snapshot) = x.get(1) else {
            return draw(x[0].shape(), self.dist, self.seed, self.offset, out.dtype, &device);
        };
        let snapshot = snapshot.storage().gpu().ok_or_else(|| crate::Error::Internal {
            op: "rand_like",
            msg: "the generator snapshot is not on the GPU".into(),
        })?;
        let (normal, low, high) = self.dist.kernel_args();
        let buf = ctx.random_from_state(x[0].numel(), snapshot, normal, low, high)?;
        let t = Tensor::new_contiguous(Storage::Gpu(Arc::new(buf)), x[0].shape(), DType::F32, device);
        if out.dtype == DType::F32 {
            return Ok(t);
        }
        t.to_dtype(out.dtype)
    }
    /// none: a sample has no derivative in the tensor it is shaped like
    fn vjp(&self, node: &Arc<Node>, _g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None; node.saved_inputs.len()])
    }
    /// none: a sample has no derivative in the tensor it is shaped like
    fn jvp(&self, _x: &[Tensor], _y: &Tensor, _t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// batch: one sample per physical element (every example draws its own)
    fn batch(&self, x: &[Tensor], _batched: &[bool], _b: &Batch) -> Result<Tensor> {
        let inputs: Vec<&Tensor> = x.iter().collect();
        bind(Arc::new(*self), &inputs)
    }
}

impl Tensor {
    /// Uniform samples in [low, high) shaped like `self` (its dtype, f32 for u32, and
    /// device), drawn from the global generator ([`manual_seed`]).
    pub fn rand_like(&self, low: f64, high: f64) -> Result<Tensor> {
        self.random_like(Distribution::Uniform { low, high })
    }

    /// Standard normal samples shaped like `self`, drawn from the global generator.
    pub fn randn_like(&self) -> Result<Tensor> {
        self.random_like(Distribution::Normal)
    }

    fn random_like(&self, dist: Distribution) -> Result<Tensor> {
        if let Device::Gpu(ctx) = self.device() {
            // the key comes from the device: a snapshot of this thread's generator there
            let state = device_generator(ctx)?;
            let snapshot = ctx.random_advance(&state, dist.blocks(self.numel()))?;
            let snapshot =
                Tensor::new_contiguous(Storage::Gpu(Arc::new(snapshot)), &[4], DType::U32, self.device().clone());
            let prim = RandomLike { dist, seed: 0, offset: 0, host_blocks: None };
            return bind(Arc::new(prim), &[&self.detach(), &snapshot]);
        }
        let blocks = dist.blocks(self.numel());
        let (seed, offset) = next_key(blocks);
        bind(Arc::new(RandomLike { dist, seed, offset, host_blocks: Some(blocks) }), &[&self.detach()])
    }
}
