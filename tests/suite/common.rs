use wgrad::{DType, Device, Tensor};

/// The shared GPU device with output poisoning on (unwritten elements read back as NaN).
/// None only when the person running the tests opted out with WGRAD_SKIP_GPU_TESTS=1.
pub fn gpu() -> Option<Device> {
    match Device::gpu() {
        Ok(d) => {
            d.context().unwrap().set_poison_outputs(true);
            Some(d)
        }
        Err(e) => {
            if std::env::var("WGRAD_SKIP_GPU_TESTS").as_deref() == Ok("1") {
                eprintln!("skipping a GPU test (WGRAD_SKIP_GPU_TESTS=1): {e}");
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

/// Runs the body with the GPU device, or returns early where the person opted out.
macro_rules! with_gpu {
    ($g:ident) => {
        let Some($g) = crate::common::gpu() else { return };
    };
}
pub(crate) use with_gpu;

pub fn cpu() -> Device {
    Device::cpu()
}

/// Fresh random values (never zeros) for each call: seed from a counter.
pub fn rand_vec(n: usize, lo: f64, hi: f64) -> Vec<f64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: AtomicU64 = AtomicU64::new(12345);
    let mut s = SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            lo + (hi - lo) * u
        })
        .collect()
}

/// Fresh uniform values in [lo, hi) as an f64 CPU tensor of `shape`.
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

/// The reference computed on f32-rounded inputs (what the GPU actually saw).
pub fn rounded(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F32).unwrap().to_dtype(DType::F64).unwrap()
}

pub fn assert_close(got: &Tensor, want: &Tensor, rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let g = got.to_f64_vec().unwrap();
    let w = want.to_f64_vec().unwrap();
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= atol + rtol * b.abs();
        assert!(ok, "{what}: element {i} of {:?}: got {a}, want {b} (rtol {rtol}, atol {atol})", want.shape());
    }
}

/// A GPU device with a context of its own, for tests that count work on the device
/// (the shared device is used by tests running in parallel).
pub fn fresh_gpu() -> Option<Device> {
    gpu()?;
    let d = Device::new_gpu().expect("a second device on the same adapter");
    d.context().unwrap().set_poison_outputs(true);
    Some(d)
}
