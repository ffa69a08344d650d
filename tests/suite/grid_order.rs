//! Both orders in which grid-stride loops deal items to invocations (contiguous runs per
//! invocation, the CPU adapters' default; interleaved, the GPUs' default) give the CPU
//! reference's results at the boundary sizes and layouts of TESTING.md. Each order runs on
//! a device of its own, so on any adapter both skeletons are exercised.
use crate::common::*;
use wgrad::{DType, Device, Tensor};

/// The boundary sizes, plus sizes whose items do not divide evenly over a full grid.
const SIZES: &[usize] = &[0, 1, 7, 63, 64, 65, 255, 256, 257, 1031, 65_537, 1_048_579];

fn device_with(contiguous: bool) -> Option<Device> {
    let d = fresh_gpu()?;
    d.context().unwrap().set_contiguous_runs(Some(contiguous));
    assert_eq!(d.context().unwrap().contiguous_runs(), contiguous);
    Some(d)
}

#[test]
fn the_default_order_follows_the_adapter_type() {
    let Some(d) = fresh_gpu() else { return };
    let ctx = d.context().unwrap();
    assert_eq!(ctx.contiguous_runs(), ctx.is_cpu_adapter());
    ctx.set_contiguous_runs(Some(!ctx.is_cpu_adapter()));
    assert_eq!(ctx.contiguous_runs(), !ctx.is_cpu_adapter());
    ctx.set_contiguous_runs(None);
    assert_eq!(ctx.contiguous_runs(), ctx.is_cpu_adapter());
}

#[test]
fn elementwise_maps_match_the_cpu_in_both_orders() {
    for contiguous in [true, false] {
        let Some(g) = device_with(contiguous) else { return };
        for &n in SIZES {
            let what = |op: &str| format!("{op} n={n} contiguous={contiguous}");
            let (rx, dx) = pair(&[n], -3.0, 3.0, &g);
            let (ry, dy) = pair(&[n], -3.0, 3.0, &g);
            let (rx, ry) = (rounded(&rx), rounded(&ry));
            // unary (vec4 and scalar skeletons: n % 4 decides), binary, scalar broadcast
            assert_close(&dx.exp().unwrap(), &rx.exp().unwrap(), 2e-6, 1e-6, &what("exp"));
            assert_close(&dx.add(&dy).unwrap(), &rx.add(&ry).unwrap(), 1e-6, 1e-6, &what("add"));
            assert_close(&dx.mul_scalar(0.5).unwrap(), &rx.mul_scalar(0.5).unwrap(), 1e-6, 1e-6, &what("mul_scalar"));
            // an automatically fused chain
            let want = rx.exp().unwrap().mul(&rx).unwrap().add_scalar(1.0).unwrap();
            let got = dx.exp().unwrap().mul(&dx).unwrap().add_scalar(1.0).unwrap();
            assert_close(&got, &want, 2e-6, 1e-5, &what("exp(x)*x+1"));
            // an offset view (offset 1: not on a quad boundary, so the scalar skeletons)
            if n >= 2 {
                let (r2, d2) = (rx.narrow(0, 1, n - 1).unwrap(), dx.narrow(0, 1, n - 1).unwrap());
                assert_close(&d2.neg().unwrap(), &r2.neg().unwrap(), 0.0, 0.0, &what("neg of a slice"));
            }
        }
    }
}

#[test]
fn layouts_match_the_cpu_in_both_orders() {
    for contiguous in [true, false] {
        let Some(g) = device_with(contiguous) else { return };
        for &(m, k) in &[(1usize, 1usize), (7, 5), (63, 65), (257, 255), (1031, 64)] {
            let what = |op: &str| format!("{op} [{m}, {k}] contiguous={contiguous}");
            let (ra, da) = pair(&[m, k], -2.0, 2.0, &g);
            let (rb, db) = pair(&[k], -2.0, 2.0, &g);
            let (rc, dc) = pair(&[k, m], -2.0, 2.0, &g);
            let (ra, rb, rc) = (rounded(&ra), rounded(&rb), rounded(&rc));
            // a broadcast row (the vec4 period mode when k % 4 == 0), a transposed operand
            assert_close(&da.add(&db).unwrap(), &ra.add(&rb).unwrap(), 1e-6, 1e-6, &what("a + row"));
            let want = ra.mul(rc.transpose(0, 1).unwrap()).unwrap();
            assert_close(&da.mul(dc.transpose(0, 1).unwrap()).unwrap(), &want, 1e-6, 1e-6, &what("a * c^T"));
            // the copy kernel (a transposed view made contiguous) and a column slice
            let t = da.transpose(0, 1).unwrap().contiguous().unwrap();
            assert_close(&t, &ra.transpose(0, 1).unwrap(), 0.0, 0.0, &what("transpose copy"));
            let s = da.narrow(1, k / 2, k - k / 2).unwrap().exp().unwrap();
            let want = ra.narrow(1, k / 2, k - k / 2).unwrap().exp().unwrap();
            assert_close(&s, &want, 2e-6, 1e-6, &what("exp of a column slice"));
        }
    }
}

#[test]
fn reductions_match_the_cpu_and_repeat_bitwise_in_both_orders() {
    for contiguous in [true, false] {
        let Some(g) = device_with(contiguous) else { return };
        // past one workgroup chunk (256K elements on CPU adapters, 16K on GPUs), odd tails
        for &n in &[0usize, 1, 7, 257, 16_387, 262_147, 1_048_580, 4_194_307] {
            let what = format!("sum n={n} contiguous={contiguous}");
            let (r, d) = pair(&[n], -1.0, 1.0, &g);
            let got = d.sum_all().unwrap();
            assert_close(&got, &rounded(&r).sum_all().unwrap(), 1e-5, 1e-4, &what);
            assert_eq!(got.to_vec::<f32>().unwrap(), d.sum_all().unwrap().to_vec::<f32>().unwrap(), "{what}: repeat");
        }
        for &(m, k) in &[(1usize, 1031usize), (300, 64), (257, 1_031), (7, 70_001), (4096, 36)] {
            let what = |op: &str| format!("{op} [{m}, {k}] contiguous={contiguous}");
            let (r, d) = pair(&[m, k], -1.0, 1.0, &g);
            let r = rounded(&r);
            assert_close(&d.sum(&[1], false).unwrap(), &r.sum(&[1], false).unwrap(), 1e-5, 1e-4, &what("rows"));
            assert_close(&d.sum(&[0], false).unwrap(), &r.sum(&[0], false).unwrap(), 1e-5, 1e-4, &what("columns"));
            let want = r.max(&[1], false).unwrap();
            assert_close(&d.max(&[1], false).unwrap(), &want, 0.0, 0.0, &what("row max"));
        }
    }
}

#[test]
fn nan_and_infinity_propagate_in_both_orders() {
    for contiguous in [true, false] {
        let Some(g) = device_with(contiguous) else { return };
        let n = 262_147;
        let mut v = vec![1.0f32; n];
        v[n - 1] = f32::NAN;
        v[n / 2] = f32::INFINITY;
        let x = Tensor::from_slice(&v, &[n], &g).unwrap();
        assert!(x.sum_all().unwrap().to_vec::<f32>().unwrap()[0].is_nan(), "sum with a NaN");
        let y = x.add_scalar(1.0).unwrap().to_vec::<f32>().unwrap();
        assert!(y[n - 1].is_nan() && y[n / 2] == f32::INFINITY && y[0] == 2.0, "add_scalar");
        let z = x.narrow(0, 0, n - 1).unwrap().max(&[0], false).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(z[0], f32::INFINITY, "max without the NaN");
        let ones = Tensor::ones(&[n], DType::F32, &g).unwrap();
        let w = x.mul(&ones).unwrap().to_vec::<f32>().unwrap();
        assert!(w[n - 1].is_nan() && w[n / 2] == f32::INFINITY, "mul");
    }
}

/// Two steps of SGD with momentum and of Adam over tensors of odd and vec4 sizes (the
/// multi-tensor step), and im2col: the same as on the CPU device in both orders.
#[test]
fn optimizer_steps_and_im2col_match_the_cpu_in_both_orders() {
    use wgrad::nn::Params;
    use wgrad::optim::{Adam, Optimizer, Sgd};
    let sizes = [7usize, 1031, 65_536, 65_537];
    let init: Vec<Tensor> = sizes.iter().map(|&n| random(&[n], -1.0, 1.0).to_dtype(DType::F32).unwrap()).collect();
    let params_on = |dev: &Device| {
        let mut p = Params::new();
        for (i, t) in init.iter().enumerate() {
            p.add(&format!("w{i}"), t.to_device(dev).unwrap());
        }
        p
    };
    let grads: Vec<Tensor> = sizes.iter().map(|&n| random(&[n], -1.0, 1.0).to_dtype(DType::F32).unwrap()).collect();
    let run = |dev: &Device, adam: bool| {
        let mut p = params_on(dev);
        let g: Vec<Tensor> = grads.iter().map(|t| t.to_device(dev).unwrap()).collect();
        let mut opt: Box<dyn Optimizer> =
            if adam { Box::new(Adam::new(0.01)) } else { Box::new(Sgd::new(0.1).momentum(0.9)) };
        for _ in 0..2 {
            opt.step(&mut p, &g).unwrap();
        }
        p.tensors().iter().map(|t| t.to_device(&cpu()).unwrap()).collect::<Vec<_>>()
    };
    for contiguous in [true, false] {
        let Some(g) = device_with(contiguous) else { return };
        for adam in [false, true] {
            for (i, (got, want)) in run(&g, adam).iter().zip(run(&cpu(), adam)).enumerate() {
                let what = format!("{} n={} contiguous={contiguous}", if adam { "adam" } else { "sgd" }, sizes[i]);
                assert_close(got, &want, 1e-5, 1e-6, &what);
            }
        }
        let (r, d) = pair(&[2, 3, 17, 19], -1.0, 1.0, &g);
        let want = rounded(&r).im2col((3, 3), 2, 1).unwrap();
        assert_close(&d.im2col((3, 3), 2, 1).unwrap(), &want, 0.0, 0.0, &format!("im2col contiguous={contiguous}"));
    }
}
