//! The async forms that the browser needs (`Device::gpu_async`, `best_async`,
//! `synchronize_async`, `Tensor::to_vec_async`, `to_scalar_async`, `item_async`) work on
//! native too: driven here by pollster, they return what the blocking forms return, on
//! both devices, for contiguous, strided and f16 tensors.
use crate::common::*;
use wgrad::{DType, Device, Tensor};

fn block<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// Tensors whose reads take each path: contiguous, a strided view, an offset view, f16
/// at an odd offset (half a word), u32, and one element.
fn cases(dev: &Device) -> Vec<(&'static str, Tensor)> {
    let x = Tensor::arange(0.0, 24.0, dev).unwrap().reshape(&[4, 6]).unwrap().mul(0.5).unwrap();
    let f16 = x.to_dtype(DType::F16).unwrap();
    vec![
        ("contiguous", x.clone()),
        ("transposed", x.t().unwrap()),
        ("offset slice", x.narrow(1, 1, 3).unwrap()),
        ("f16", f16.clone()),
        ("f16 at an odd offset", f16.reshape(&[24]).unwrap().narrow(0, 3, 7).unwrap()),
        ("f16 transposed", f16.t().unwrap()),
        ("u32", Tensor::from_slice(&[7u32, 0, 4_000_000_000], &[3], dev).unwrap()),
        ("one element", x.sum_all().unwrap()),
    ]
}

#[test]
fn async_reads_equal_blocking_reads_on_both_devices() {
    for dev in devices() {
        for (what, t) in cases(&dev) {
            let sync = t.to_vec::<f64>().unwrap();
            let asynchronous = block(t.to_vec_async::<f64>()).unwrap();
            assert_eq!(asynchronous, sync, "{what} on {dev}");
            if t.dtype() == DType::U32 {
                assert_eq!(block(t.to_vec_async::<u32>()).unwrap(), t.to_vec::<u32>().unwrap(), "{what} on {dev}");
            }
        }
        // hand-computed: sum of 0.5 * (0..24) = 138
        let total = Tensor::arange(0.0, 24.0, &dev).unwrap().mul(0.5).unwrap().sum_all().unwrap();
        assert_eq!(block(total.to_scalar_async::<f32>()).unwrap(), 138.0, "{dev}");
        assert_eq!(block(total.item_async()).unwrap(), 138.0, "{dev}");
        let empty = Tensor::zeros(&[0, 3], DType::F32, &dev).unwrap();
        assert!(block(empty.to_vec_async::<f32>()).unwrap().is_empty());
    }
}

#[test]
fn async_reads_report_the_same_errors_naming_the_async_call() {
    for dev in devices() {
        let v = Tensor::from_slice(&[1.0f32, 2.0], &[2], &dev).unwrap();
        let err = block(v.to_scalar_async::<f32>()).unwrap_err();
        assert!(matches!(err, wgrad::Error::NotScalar { op: "to_scalar_async", .. }), "{err}");
        let err = block(v.to_vec_async::<u32>()).unwrap_err();
        assert!(matches!(err, wgrad::Error::DTypeMismatch { op: "to_vec_async", .. }), "{err}");
    }
}

#[test]
fn async_device_creation_and_synchronize() {
    // the CPU fallback needs no adapter
    block(Device::cpu().synchronize_async()).unwrap();
    with_gpu!(g);
    let d = block(Device::gpu_async()).unwrap();
    assert_eq!(d, g, "gpu_async returns the default device");
    assert_eq!(block(Device::best_async()), g, "best_async prefers the GPU");
    let x = Tensor::full(3.0, &[1000], &d).unwrap();
    let y = x.exp().unwrap();
    let total = y.sum_all().unwrap();
    block(d.synchronize_async()).unwrap();
    let got = block(total.to_scalar_async::<f64>()).unwrap();
    let want = 1000.0 * 3f64.exp();
    assert!(close(got, want, 1e-5, 0.0), "{got} vs {want}");
}
