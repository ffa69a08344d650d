use crate::common::*;
use wgrad::{DType, Tensor};

#[test]
fn sum_max_min_mean_over_any_axes_match_the_reference() {
    with_gpu!(g);
    let shapes: &[&[usize]] = &[&[1], &[7], &[257], &[3, 5], &[4, 65, 3], &[2, 3, 4, 5], &[33, 1000]];
    for &shape in shapes {
        let (r, d) = pair(shape, -3.0, 3.0, &g);
        let rr = rounded(&r);
        let rank = shape.len() as isize;
        let mut axes_sets: Vec<Vec<isize>> = (0..rank).map(|a| vec![a]).collect();
        axes_sets.push((0..rank).collect());
        if rank >= 2 {
            axes_sets.push(vec![0, rank - 1]);
            axes_sets.push(vec![-1]);
        }
        for axes in &axes_sets {
            for keep in [false, true] {
                let k: usize = axes.iter().map(|&a| shape[a.rem_euclid(rank) as usize]).product();
                let sum_tol = k as f64 * 6e-8 * 3.0;
                assert_close(
                    &d.sum(axes, keep).unwrap(),
                    &rr.sum(axes, keep).unwrap(),
                    1e-6,
                    sum_tol,
                    &format!("sum {shape:?} {axes:?}"),
                );
                assert_close(
                    &d.max(axes, keep).unwrap(),
                    &rr.max(axes, keep).unwrap(),
                    0.0,
                    0.0,
                    &format!("max {shape:?} {axes:?}"),
                );
                assert_close(
                    &d.min(axes, keep).unwrap(),
                    &rr.min(axes, keep).unwrap(),
                    0.0,
                    0.0,
                    &format!("min {shape:?} {axes:?}"),
                );
                assert_close(
                    &d.mean(axes, keep).unwrap(),
                    &rr.mean(axes, keep).unwrap(),
                    1e-5,
                    sum_tol,
                    &format!("mean {shape:?} {axes:?}"),
                );
            }
        }
        // strided input: reduce a transposed view
        if shape.len() == 2 {
            assert_close(
                &d.t().unwrap().sum(&[1], false).unwrap(),
                &rr.t().unwrap().sum(&[1], false).unwrap(),
                1e-6,
                1e-4,
                "sum of transpose",
            );
        }
    }
}

#[test]
fn argmax_argmin_take_the_first_of_ties_and_nan_wins() {
    for dev in devices() {
        let x = Tensor::from_slice(&[1.0f32, 3.0, 3.0, 0.0, -1.0, f32::NAN, 2.0, -1.0], &[2, 4], &dev).unwrap();
        assert_eq!(x.argmax(1, false).unwrap().to_vec::<u32>().unwrap(), vec![1, 1], "argmax on {dev}");
        assert_eq!(x.argmin(1, false).unwrap().to_vec::<u32>().unwrap(), vec![3, 1], "argmin on {dev}");
        assert_eq!(x.argmax(0, true).unwrap().shape(), &[1, 4]);
    }
    with_gpu!(g);
    let (r, d) = pair(&[37, 300], -5.0, 5.0, &g);
    assert_eq!(
        d.argmax(1, false).unwrap().to_vec::<u32>().unwrap(),
        rounded(&r).argmax(1, false).unwrap().to_vec::<u32>().unwrap()
    );
    assert_eq!(
        d.argmin(0, false).unwrap().to_vec::<u32>().unwrap(),
        rounded(&r).argmin(0, false).unwrap().to_vec::<u32>().unwrap()
    );
}

#[test]
fn sum_of_2_24_plus_2_20_ones_is_exact() {
    with_gpu!(g);
    let n = (1usize << 24) + (1 << 20);
    let s = Tensor::ones(&[n], DType::F32, &g).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(s, 17_825_792.0);
}

#[test]
fn reductions_are_deterministic() {
    with_gpu!(g);
    let (_, d) = pair(&[3_000_001], -1.0, 1.0, &g);
    let a = d.sum_all().unwrap().to_scalar::<f32>().unwrap();
    let b = d.sum_all().unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(a.to_bits(), b.to_bits());
    let (_, m) = pair(&[123, 4567], -1.0, 1.0, &g);
    assert_eq!(
        m.sum(&[0], false).unwrap().to_vec::<f32>().unwrap(),
        m.sum(&[0], false).unwrap().to_vec::<f32>().unwrap()
    );
}

#[test]
fn zero_size_reductions() {
    for dev in devices() {
        let e = Tensor::zeros(&[0, 3], DType::F32, &dev).unwrap();
        assert_eq!(e.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
        assert_eq!(e.sum(&[0], false).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 3]);
        assert_eq!(e.sum(&[1], false).unwrap().shape(), &[0]);
        assert!(e.max(&[0], false).is_err(), "max over an empty axis is an error");
        assert!(e.argmax(0, false).is_err());
    }
}

#[test]
fn softmax_and_logsumexp_are_stable_for_large_logits() {
    for dev in devices() {
        let x = Tensor::from_slice(&[1e4f32, 1e4 - 1.0, -1e4, 0.0, f32::NEG_INFINITY, 1.0], &[2, 3], &dev).unwrap();
        let sm = x.softmax(1).unwrap().to_vec::<f32>().unwrap();
        let e1 = (-1.0f64).exp();
        assert!((sm[0] as f64 - 1.0 / (1.0 + e1)).abs() < 1e-6, "{sm:?}");
        assert!((sm[1] as f64 - e1 / (1.0 + e1)).abs() < 1e-6);
        assert_eq!(sm[2], 0.0);
        assert_eq!(sm[4], 0.0, "exp(-inf) = 0");
        let lse = x.logsumexp(&[1], false).unwrap().to_vec::<f32>().unwrap();
        assert!((lse[0] as f64 - (1e4 + (1.0 + e1).ln())).abs() < 1e-3, "{lse:?}");
        let ls = x.log_softmax(1).unwrap().to_vec::<f32>().unwrap();
        assert!(ls.iter().enumerate().all(|(i, v)| v.is_finite() || i == 4), "{ls:?}");
        // a row of only -inf has logsumexp -inf, not NaN
        let ninf = Tensor::full(f64::NEG_INFINITY, &[1, 3], &dev).unwrap();
        assert_eq!(ninf.logsumexp(&[1], false).unwrap().to_vec::<f32>().unwrap(), vec![f32::NEG_INFINITY]);
    }
    with_gpu!(g);
    let (r, d) = pair(&[17, 300], -20.0, 20.0, &g);
    assert_close(&d.softmax(-1).unwrap(), &rounded(&r).softmax(-1).unwrap(), 1e-5, 1e-7, "softmax");
    assert_close(&d.log_softmax(0).unwrap(), &rounded(&r).log_softmax(0).unwrap(), 1e-5, 1e-5, "log_softmax");
}
