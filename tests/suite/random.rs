//! Random numbers on the device: Philox 4x32-10 against its published answers, the same
//! numbers on both devices, their distributions, the global generator and dropout.
use crate::common::*;
use wgrad::random::philox;
use wgrad::{grad, manual_seed, nn, DType, Tensor};

#[test]
fn philox_matches_the_known_answers_of_random123() {
    // Random123's kat_vectors for philox4x32_10
    assert_eq!(philox([0, 0, 0, 0], [0, 0]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    assert_eq!(philox([u32::MAX; 4], [u32::MAX; 2]), [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    assert_eq!(
        philox([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]),
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
    );
}

fn moments(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (mean, v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
}

#[test]
fn a_seed_gives_the_same_numbers_on_both_devices() {
    let n = 100_003;
    let u_cpu = Tensor::rand(&[n], -1.0, 3.0, 42, &cpu()).unwrap().to_vec::<f64>().unwrap();
    let z_cpu = Tensor::randn(&[n], 42, &cpu()).unwrap().to_vec::<f64>().unwrap();
    // uniform on [-1, 3): mean 1, variance 16 / 12; normal: mean 0, variance 1
    let (m, v) = moments(&u_cpu);
    assert!((m - 1.0).abs() < 0.02 && (v - 16.0 / 12.0).abs() < 0.02, "uniform moments {m} {v}");
    assert!(u_cpu.iter().all(|&x| (-1.0..3.0).contains(&x)));
    let (m, v) = moments(&z_cpu);
    assert!(m.abs() < 0.01 && (v - 1.0).abs() < 0.02, "normal moments {m} {v}");
    assert!(z_cpu.iter().all(|x| x.is_finite()));
    // f64 draws are the f32 draws' exact words, in f64
    let u64s = Tensor::rand_dtype(&[8], 0.0, 1.0, 42, DType::F64, &cpu()).unwrap().to_vec::<f64>().unwrap();
    let u32s = Tensor::rand(&[8], 0.0, 1.0, 42, &cpu()).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(u64s, u32s);
    // another seed, other numbers
    let other = Tensor::rand(&[8], -1.0, 3.0, 43, &cpu()).unwrap().to_vec::<f64>().unwrap();
    assert_ne!(other[..8], u_cpu[..8]);
    with_gpu!(g);
    let u_gpu = Tensor::rand(&[n], -1.0, 3.0, 42, &g).unwrap().to_vec::<f64>().unwrap();
    let z_gpu = Tensor::randn(&[n], 42, &g).unwrap().to_vec::<f64>().unwrap();
    for i in 0..n {
        assert!(close(u_gpu[i], u_cpu[i], 1e-6, 1e-6), "uniform {i}: {} vs {}", u_gpu[i], u_cpu[i]);
        assert!(close(z_gpu[i], z_cpu[i], 1e-4, 1e-5), "normal {i}: {} vs {}", z_gpu[i], z_cpu[i]);
    }
}

#[test]
fn the_global_generator_repeats_after_manual_seed() {
    for dev in devices() {
        let x = Tensor::zeros(&[1000], DType::F32, &dev).unwrap();
        manual_seed(7);
        let a1 = x.rand_like(0.0, 1.0).unwrap().to_vec::<f32>().unwrap();
        let a2 = x.randn_like().unwrap().to_vec::<f32>().unwrap();
        assert_ne!(a1, x.rand_like(0.0, 1.0).unwrap().to_vec::<f32>().unwrap(), "each draw advances");
        manual_seed(7);
        assert_eq!(a1, x.rand_like(0.0, 1.0).unwrap().to_vec::<f32>().unwrap());
        assert_eq!(a2, x.randn_like().unwrap().to_vec::<f32>().unwrap());
    }
    // the same sequence on both devices
    let c = Tensor::zeros(&[64], DType::F32, &cpu()).unwrap();
    manual_seed(11);
    let on_cpu = [c.rand_like(0.0, 1.0).unwrap(), c.rand_like(0.0, 1.0).unwrap()].map(|t| t.to_vec::<f64>().unwrap());
    with_gpu!(g);
    let x = Tensor::zeros(&[64], DType::F32, &g).unwrap();
    manual_seed(11);
    let on_gpu = [x.rand_like(0.0, 1.0).unwrap(), x.rand_like(0.0, 1.0).unwrap()].map(|t| t.to_vec::<f64>().unwrap());
    for (a, b) in on_cpu.iter().zip(&on_gpu) {
        assert!(a.iter().zip(b).all(|(p, q)| close(*p, *q, 1e-6, 1e-7)));
    }
}

#[test]
fn dropout_draws_fresh_masks_and_scales_what_it_keeps() {
    for dev in devices() {
        let x = Tensor::ones(&[20_000], DType::F32, &dev).unwrap();
        manual_seed(3);
        let a = nn::dropout(&x, 0.25).unwrap().to_vec::<f32>().unwrap();
        let b = nn::dropout(&x, 0.25).unwrap().to_vec::<f32>().unwrap();
        assert_ne!(a, b, "a fresh mask per call");
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((dropped - 0.25).abs() < 0.02, "dropped {dropped}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        manual_seed(3);
        assert_eq!(a, nn::dropout(&x, 0.25).unwrap().to_vec::<f32>().unwrap(), "the same after the same seed");
        // the gradient is the mask, scaled
        manual_seed(5);
        let g = grad(|x| nn::dropout(x, 0.5)?.sum_all(), &x).unwrap().to_vec::<f32>().unwrap();
        manual_seed(5);
        let y = nn::dropout(&x, 0.5).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(g, y);
        assert!(matches!(nn::dropout(&x, 1.0), Err(wgrad::Error::Invalid { op: "dropout", .. })));
    }
}
