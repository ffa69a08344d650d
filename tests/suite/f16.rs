//! f16 tensors: a storage format (two halves per 32-bit word on the GPU) computed in f32.
use crate::common::*;
use half::f16;
use wgrad::{grad, DType, Tensor};

fn h(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}

#[test]
fn f16_round_trips_and_converts_on_every_device() {
    for dev in devices() {
        for n in [1usize, 2, 7, 64, 257] {
            let v: Vec<f32> = rand_vec(n, -100.0, 100.0).into_iter().map(|x| x as f32).collect();
            let t = Tensor::from_slice(&h(&v), &[n], &dev).unwrap();
            assert_eq!(t.dtype(), DType::F16);
            assert_eq!(t.to_vec::<f16>().unwrap(), h(&v), "round trip n={n} on {dev}");
            // f32 -> f16 on the device rounds like the half crate (to nearest even)
            let f = Tensor::from_slice(&v, &[n], &dev).unwrap().to_dtype(DType::F16).unwrap();
            assert_eq!(f.to_vec::<f16>().unwrap(), h(&v), "to_dtype(F16) n={n} on {dev}");
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
    for dev in devices() {
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
            assert_close(&got, &want, 1e-3, 1e-3, &format!("f16 {name} on {dev}"));
        }
        assert_eq!(
            a16.argmax(1, false).unwrap().to_vec::<u32>().unwrap(),
            ar.argmax(1, false).unwrap().to_vec::<u32>().unwrap()
        );
        // gradients through f16 storage agree with f32 to 1e-2
        let f = |x: &Tensor| x.matmul(&b16.to_dtype(x.dtype())?)?.tanh()?.sum_all();
        let g16 = grad(f, &a16).unwrap();
        assert_eq!(g16.dtype(), DType::F16);
        assert_close(&g16, &grad(f, &ar).unwrap(), 1e-2, 1e-2, &format!("f16 gradient on {dev}"));
        assert!(a16.inverse().is_err(), "factorizations reject f16");
    }
}

#[test]
fn elementwise_f16_runs_in_one_kernel_where_the_adapter_has_shader_f16() {
    let Some(g) = fresh_gpu() else { return };
    let x = Tensor::from_slice(&h(&[0.5, -1.0, 2.0]), &[3], &g).unwrap();
    let before = g.counters();
    let y = x.exp().unwrap().mul(&x).unwrap();
    let n = g.counters().dispatches - before.dispatches;
    let native = g.context().unwrap().supports_f16();
    assert_eq!(n, if native { 2 } else { 6 }, "native f16: one kernel per op; else unpack, op, pack");
    let want: Vec<f32> = [0.5f32, -1.0, 2.0].iter().map(|&v| v.exp() * v).collect();
    assert_close(&y, &Tensor::from_slice(&want, &[3], &cpu()).unwrap(), 1e-3, 1e-3, "exp(x) * x in f16");
}
