//! f16 tensors: a storage format (two halves per 32-bit word on the GPU) computed in f32.
use crate::common::*;
use half::f16;
use wgrad::{grad, DType, Device, Tensor};

fn h(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

/// A GPU device of its own with f16 forced through the `unpack2x16float` fallback (the
/// path adapters without SHADER_F16 take), or None where the person opted out of GPU tests.
fn fallback_gpu() -> Option<Device> {
    let d = fresh_gpu()?;
    d.context().unwrap().set_native_f16(Some(false));
    assert!(!d.context().unwrap().supports_f16());
    Some(d)
}

/// The CPU, the shared GPU device (f16 storage read directly where the adapter has
/// SHADER_F16) and a GPU device forced to the fallback: both GPU paths run on every adapter.
fn f16_devices() -> Vec<Device> {
    let mut d = devices();
    d.extend(fallback_gpu());
    d
}

fn path(dev: &Device) -> String {
    match dev.context() {
        Some(c) if c.supports_f16() => format!("{dev} (native f16)"),
        Some(_) => format!("{dev} (f16 fallback)"),
        None => format!("{dev}"),
    }
}

#[test]
fn f16_round_trips_and_converts_on_every_device() {
    for dev in f16_devices() {
        let on = path(&dev);
        for n in [1usize, 2, 7, 64, 257] {
            let v: Vec<f32> = rand_vec(n, -100.0, 100.0).into_iter().map(|x| x as f32).collect();
            let t = Tensor::from_slice(&h(&v), &[n], &dev).unwrap();
            assert_eq!(t.dtype(), DType::F16);
            assert_eq!(t.to_vec::<f16>().unwrap(), h(&v), "round trip n={n} on {on}");
            // f32 -> f16 on the device rounds like the half crate (to nearest even)
            let f = Tensor::from_slice(&v, &[n], &dev).unwrap().to_dtype(DType::F16).unwrap();
            assert_eq!(f.to_vec::<f16>().unwrap(), h(&v), "to_dtype(F16) n={n} on {on}");
            let back = t.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap();
            assert_eq!(back, h(&v).iter().map(|x| x.to_f32()).collect::<Vec<_>>());
        }
        // odd offsets and strides: a slice starting mid-word, a transpose
        let v: Vec<f32> = (0..15).map(|i| i as f32 * 0.5).collect();
        let t = Tensor::from_slice(&h(&v), &[3, 5], &dev).unwrap();
        assert_eq!(
            t.narrow(1, 1, 3).unwrap().to_vec::<f16>().unwrap(),
            h(&[0.5, 1.0, 1.5, 3.0, 3.5, 4.0, 5.5, 6.0, 6.5])
        );
        let tt: Vec<f32> = t.t().unwrap().to_vec::<f16>().unwrap().iter().map(|x| x.to_f32()).collect();
        assert_eq!(tt[..4], [0.0, 2.5, 5.0, 0.5]);
        assert_eq!(Tensor::cat(&[t.clone(), t.narrow(0, 1, 1).unwrap()], 0).unwrap().shape(), &[4, 5]);
        assert_eq!(Tensor::ones(&[3], DType::F16, &dev).unwrap().to_vec::<f16>().unwrap(), vec![f16::ONE; 3]);
    }
}

#[test]
fn f16_ops_match_the_f32_path_and_gradients_flow() {
    for dev in f16_devices() {
        let on = path(&dev);
        let (_, a32) = pair(&[17, 33], -2.0, 2.0, &dev);
        let (_, b32) = pair(&[33, 9], -2.0, 2.0, &dev);
        let (a16, b16) = (a32.to_dtype(DType::F16).unwrap(), b32.to_dtype(DType::F16).unwrap());
        // the f32 reference on the same (f16-rounded) inputs
        let (ar, br) = (a16.to_dtype(DType::F32).unwrap(), b16.to_dtype(DType::F32).unwrap());
        let cases: Vec<(&str, Tensor, Tensor)> = vec![
            ("exp", a16.exp().unwrap(), ar.exp().unwrap()),
            ("mul", a16.mul(&a16).unwrap(), ar.mul(&ar).unwrap()),
            ("matmul", a16.matmul(&b16).unwrap(), ar.matmul(&br).unwrap()),
            ("sum", a16.sum(&[1], false).unwrap(), ar.sum(&[1], false).unwrap()),
            ("softmax", a16.softmax(1).unwrap(), ar.softmax(1).unwrap()),
            ("max", a16.max(&[0], true).unwrap(), ar.max(&[0], true).unwrap()),
        ];
        for (name, got, want) in cases {
            assert_eq!(got.dtype(), DType::F16, "{name} keeps f16");
            assert_close(&got, &want, 1e-3, 1e-3, &format!("f16 {name} on {on}"));
        }
        assert_eq!(
            a16.argmax(1, false).unwrap().to_vec::<u32>().unwrap(),
            ar.argmax(1, false).unwrap().to_vec::<u32>().unwrap()
        );
        // gradients through f16 storage agree with f32 to 1e-2
        let f = |x: &Tensor| x.matmul(&b16.to_dtype(x.dtype())?)?.tanh()?.sum_all();
        let g16 = grad(f, &a16).unwrap();
        assert_eq!(g16.dtype(), DType::F16);
        assert_close(&g16, &grad(f, &ar).unwrap(), 1e-2, 1e-2, &format!("f16 gradient on {on}"));
        assert!(a16.inverse().is_err(), "factorizations reject f16");
    }
}

#[test]
fn elementwise_f16_runs_in_one_kernel_where_the_adapter_has_shader_f16() {
    let Some(g) = fresh_gpu() else { return };
    let native = g.context().unwrap().supports_f16();
    for (dev, native) in [(g, native), (fallback_gpu().unwrap(), false)] {
        // odd lengths: the last word holds one half, and every half of every word is checked
        for n in [1usize, 3, 8, 257] {
            let v: Vec<f32> = rand_vec(n, -2.0, 2.0).into_iter().map(|x| x as f32).collect();
            let x = Tensor::from_slice(&h(&v), &[n], &dev).unwrap();
            dev.synchronize().unwrap();
            let before = dev.counters();
            let y = wgrad::with_fusion(false, || x.exp().unwrap().mul(&x).unwrap());
            let dispatches = dev.counters().dispatches - before.dispatches;
            // native: one kernel per op; fallback: exp is unpack, exp, pack (3) and mul
            // unpacks both operands (4)
            assert_eq!(dispatches, if native { 2 } else { 7 }, "native f16 {native}: dispatches");
            // poisoned outputs: an unwritten half at either index of a word reads as NaN
            let got = y.to_vec::<f16>().unwrap();
            assert!(got.iter().all(|v| v.is_finite()), "native {native} n={n}: an unwritten half: {got:?}");
            let want: Vec<f32> = h(&v).iter().map(|v| v.to_f32()).map(|v| v.exp() * v).collect();
            let what = format!("exp(x) * x in f16, native {native}, n={n}");
            assert_close(&y, &Tensor::from_slice(&want, &[n], &cpu()).unwrap(), 2e-3, 2e-3, &what);
            // fused (the default) equals unfused
            let fused = x.exp().unwrap().mul(&x).unwrap();
            assert_close(&fused, &y, 0.0, 0.0, &format!("{what}, fused"));
        }
    }
}

#[test]
fn poisoned_outputs_read_as_nan_in_f32_and_in_both_f16_halves() {
    let word = wgrad::kernels::POISON_WORD;
    assert!(f32::from_bits(word).is_nan());
    assert!(f16::from_bits((word & 0xFFFF) as u16).is_nan() && f16::from_bits((word >> 16) as u16).is_nan());
}

#[test]
fn layer_norm_of_f16_is_computed_in_f32_with_f16_or_f32_affine() {
    // reference: the f16 values widened, normalized in f64 on the CPU, rounded to f16
    let x32: Vec<f32> = rand_vec(24, -3.0, 3.0).iter().map(|&v| f16::from_f64(v).to_f32()).collect();
    let w32: Vec<f32> = rand_vec(6, 0.5, 1.5).iter().map(|&v| f16::from_f64(v).to_f32()).collect();
    let b32: Vec<f32> = rand_vec(6, -0.5, 0.5).iter().map(|&v| f16::from_f64(v).to_f32()).collect();
    let c = cpu();
    let wide = |v: &[f32], s: &[usize]| Tensor::from_slice(&v.iter().map(|&x| x as f64).collect::<Vec<_>>(), s, &c);
    let (xr, wr, br) = (wide(&x32, &[4, 6]).unwrap(), wide(&w32, &[6]).unwrap(), wide(&b32, &[6]).unwrap());
    let want: Vec<f16> = xr
        .layer_norm(Some(&wr), Some(&br), 1e-5)
        .unwrap()
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .map(|&v| f16::from_f64(v))
        .collect();
    for dev in f16_devices() {
        let x = Tensor::from_slice(&h(&x32), &[4, 6], &dev).unwrap();
        for affine in [DType::F16, DType::F32] {
            let w = Tensor::from_slice(&w32, &[6], &dev).unwrap().to_dtype(affine).unwrap();
            let b = Tensor::from_slice(&b32, &[6], &dev).unwrap().to_dtype(affine).unwrap();
            let y = x.layer_norm(Some(&w), Some(&b), 1e-5).unwrap();
            assert_eq!(y.dtype(), DType::F16, "{}", path(&dev));
            let got = y.to_vec::<f16>().unwrap();
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                // within one f16 ulp of the reference rounding
                assert!(
                    (g.to_f64() - w.to_f64()).abs() <= 1e-3 * w.to_f64().abs().max(1.0),
                    "{} {affine:?} [{k}]: {g} vs {w}",
                    path(&dev)
                );
            }
        }
        // integer affine parameters are a dtype error naming the op
        let w_u32 = Tensor::from_slice(&[1.0f32; 6], &[6], &dev).unwrap().to_dtype(DType::U32).unwrap();
        assert!(
            matches!(x.layer_norm(Some(&w_u32), None, 1e-5), Err(wgrad::Error::DTypeMismatch { .. })),
            "{}",
            path(&dev)
        );
    }
}

#[test]
fn cat_and_pack_of_f16_keep_every_value() {
    let a = h(&[1.5, -2.25, 3.0, 0.125, 7.0, -0.5]);
    let b = h(&[10.0, 20.0, -30.0]);
    for dev in f16_devices() {
        let (ta, tb) = (Tensor::from_slice(&a, &[2, 3], &dev).unwrap(), Tensor::from_slice(&b, &[1, 3], &dev).unwrap());
        let joined = Tensor::cat(&[ta.clone(), tb.clone()], 0).unwrap();
        assert_eq!(joined.dtype(), DType::F16);
        assert_eq!(joined.to_vec::<f16>().unwrap(), [a.clone(), b.clone()].concat(), "cat {}", path(&dev));
        let packed = Tensor::pack(&[ta, tb], &[1, 8], 12).unwrap();
        let z = f16::from_f32(0.0);
        let mut want = vec![z; 12];
        want[1..7].copy_from_slice(&a);
        want[8..11].copy_from_slice(&b);
        assert_eq!(packed.to_vec::<f16>().unwrap(), want, "pack {}", path(&dev));
    }
}
