use std::cell::RefCell;
use wgrad::{DType, Device, Tensor};

/// The shared GPU device with output poisoning on (unwritten elements read back as NaN).
/// None only when the person running the tests opted out with WGRAD_SKIP_GPU_TESTS=1.
pub fn gpu() -> Option<Device> {
    report_seed_on_panic();
    match Device::gpu() {
        Ok(d) => {
            d.context().unwrap().set_poison_outputs(true);
            Some(d)
        }
        Err(e) => {
            if gpu_tests_skipped() {
                eprintln!("skipping the GPU part of a test (WGRAD_SKIP_GPU_TESTS=1): {e}");
                None
            } else {
                panic!(
                    "no GPU adapter: {e}\nInstall Mesa's lavapipe (apt-get install mesa-vulkan-drivers) \
                     or set WGRAD_SKIP_GPU_TESTS=1 to opt out."
                );
            }
        }
    }
}

/// True where the person running the tests opted out of GPU work (WGRAD_SKIP_GPU_TESTS=1).
/// Only GPU work is skipped: every CPU assertion of a test runs before its GPU part.
pub fn gpu_tests_skipped() -> bool {
    std::env::var("WGRAD_SKIP_GPU_TESTS").as_deref() == Ok("1")
}

/// Runs the rest of the body with the GPU device, or returns where the person opted out.
/// Place it after the test's CPU assertions: what comes before it runs in every case.
macro_rules! with_gpu {
    ($g:ident) => {
        let Some($g) = crate::common::gpu() else { return };
    };
}
pub(crate) use with_gpu;

pub fn cpu() -> Device {
    report_seed_on_panic();
    Device::cpu()
}

/// The CPU device, then the GPU device unless the person opted out: for tests that run the
/// same assertions on both (the CPU ones always run).
pub fn devices() -> Vec<Device> {
    let mut d = vec![cpu()];
    if let Some(g) = gpu() {
        d.push(g);
    }
    d
}

thread_local! {
    /// The random stream of the test running on this thread: (test name, seed, state).
    static STREAM: RefCell<Option<(String, u64, u64)>> = const { RefCell::new(None) };
}

/// The name of the running test (the harness names each test's thread after it).
fn test_name() -> String {
    std::thread::current().name().unwrap_or("main").to_string()
}

/// The seed of the running test's random inputs: FNV-1a of its name, so a test draws the
/// same values whatever runs beside it (WGRAD_TEST_SEED=<n> tries another).
pub fn test_seed() -> u64 {
    with_stream(|(_, seed, _)| *seed)
}

fn seed_of(name: &str) -> u64 {
    let base = std::env::var("WGRAD_TEST_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    name.bytes().fold(0xCBF2_9CE4_8422_2325u64 ^ base, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3))
}

/// After a panic in a test that drew random inputs, print the seed they came from.
fn report_seed_on_panic() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let _ = STREAM.try_with(|s| {
                if let Ok(s) = s.try_borrow() {
                    if let Some((name, seed, _)) = s.as_ref() {
                        eprintln!(
                            "random inputs of `{name}` came from seed {seed:#018x} (derived from the test's name)"
                        );
                    }
                }
            });
        }));
    });
}

/// Run `f` on the running test's stream (name, seed, state), started from the test's seed
/// if this thread last ran another test; from then on a failure prints the seed.
fn with_stream<R>(f: impl FnOnce(&mut (String, u64, u64)) -> R) -> R {
    report_seed_on_panic();
    STREAM.with(|s| {
        let mut s = s.borrow_mut();
        let name = test_name();
        if s.as_ref().is_none_or(|(n, _, _)| *n != name) {
            let seed = seed_of(&name);
            *s = Some((name, seed, seed | 1));
        }
        f(s.as_mut().expect("started above"))
    })
}

/// The next 64 random bits of the running test's stream (xorshift64, never zero).
fn next_bits() -> u64 {
    with_stream(|(_, _, state)| {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    })
}

/// Uniform values in [lo, hi) from the running test's stream: reproducible per test.
pub fn rand_vec(n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u = (next_bits() >> 11) as f64 / (1u64 << 53) as f64;
            lo + (hi - lo) * u
        })
        .collect()
}

/// Uniform values in [lo, hi) as an f64 CPU tensor of `shape`.
pub fn random(shape: &[usize], lo: f64, hi: f64) -> Tensor {
    Tensor::from_slice(&rand_vec(shape.iter().product(), lo, hi), shape, &cpu()).unwrap()
}

/// An f64 CPU reference tensor and the same values as f32 on `dev`.
pub fn pair(shape: &[usize], lo: f64, hi: f64, dev: &Device) -> (Tensor, Tensor) {
    let v = rand_vec(shape.iter().product(), lo, hi);
    let r = Tensor::from_slice(&v, shape, &cpu()).unwrap();
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    let d = Tensor::from_slice(&f, shape, dev).unwrap();
    (r, d)
}

/// An f64 CPU tensor on `dev` in the dtype tests use there: f64 on the CPU, f32 on a GPU.
pub fn on(dev: &Device, t64: &Tensor) -> Tensor {
    let dtype = if dev.is_gpu() { DType::F32 } else { DType::F64 };
    t64.to_dtype(dtype).unwrap().to_device(dev).unwrap()
}

/// The reference computed on f32-rounded inputs (what the GPU actually saw).
pub fn rounded(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F32).unwrap().to_dtype(DType::F64).unwrap()
}

pub fn assert_close(got: &Tensor, want: &Tensor, rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let g = got.to_f64_vec().unwrap();
    let w = want.to_f64_vec().unwrap();
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        assert!(
            close(a, b, rtol, atol),
            "{what}: element {i} of {:?}: got {a}, want {b} (rtol {rtol}, atol {atol})",
            want.shape()
        );
    }
}

/// `|a - b| <= atol + rtol |b|` for a finite expected value `b`; a non-finite `b` is
/// matched exactly: the same infinity, or NaN where NaN (`inf <= inf` would accept anything).
pub fn close(a: f64, b: f64, rtol: f64, atol: f64) -> bool {
    if b.is_nan() {
        return a.is_nan();
    }
    if b.is_infinite() {
        return a == b;
    }
    a.is_finite() && (a == b || (a - b).abs() <= atol + rtol * b.abs())
}

/// A GPU device with a context of its own, for tests that count work on the device
/// (the shared device is used by tests running in parallel).
pub fn fresh_gpu() -> Option<Device> {
    gpu()?;
    let d = Device::new_gpu().expect("a second device on the same adapter");
    d.context().unwrap().set_poison_outputs(true);
    Some(d)
}
