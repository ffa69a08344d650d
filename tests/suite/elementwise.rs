use crate::common::*;
use wgrad::kernels::{BinaryOp, UnaryOp};
use wgrad::{DType, Tensor};

const SIZES: &[usize] = &[0, 1, 7, 63, 64, 65, 255, 256, 257, 1031];

fn unary_domain(op: UnaryOp) -> (f64, f64) {
    match op {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::PowScalar => (0.1, 4.0),
        UnaryOp::Log1p => (-0.9, 4.0),
        UnaryOp::Recip => (0.5, 3.0),
        _ => (-4.0, 4.0),
    }
}

fn unary_tol(op: UnaryOp) -> (f64, f64) {
    match op {
        UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Sign | UnaryOp::AddScalar | UnaryOp::MulScalar => {
            (1e-6, 1e-6)
        }
        // sin/cos/tanh lowerings on some drivers are accurate in absolute, not relative, terms near 0
        _ => (2e-5, 2e-6),
    }
}

#[test]
fn unary_ops_match_the_cpu_reference_at_boundary_sizes() {
    // a device of its own, to see which kernels ran
    let Some(g) = fresh_gpu() else { return };
    // fused (the default: a one-op fused kernel) and unfused (each op's own kernel)
    for fusion in [true, false] {
        for &op in UnaryOp::ALL {
            let (lo, hi) = unary_domain(op);
            let s = if matches!(op, UnaryOp::PowScalar | UnaryOp::RPowScalar) { 1.7 } else { 0.75 };
            for &n in SIZES {
                let (r, d) = pair(&[n], lo, hi, &g);
                let want = rounded(&rounded(&r).unary(op, s).unwrap());
                let got = wgrad::with_fusion(fusion, || d.unary(op, s).unwrap().to_device(&cpu()).unwrap());
                let (rtol, atol) = unary_tol(op);
                assert_close(&got, &want, rtol, atol, &format!("{op:?} n={n} fusion={fusion}"));
            }
        }
    }
    let compiled = g.context().unwrap().compiled_kernels();
    use wgrad::kernels::Kernel;
    for &op in UnaryOp::ALL {
        assert!(
            compiled.iter().any(|k| matches!(k.kernel, Kernel::Unary(o) | Kernel::UnaryVec4(o) if o == op)),
            "{op:?}'s own kernel never ran"
        );
    }
}

/// Every binary op on every pair of shapes (both operand orders) against the CPU in f64,
/// fused (the default) and unfused (each op's own kernel).
fn check_binary_ops(shapes: &[(&[usize], &[usize])], g: &wgrad::Device) {
    for fusion in [true, false] {
        for &op in BinaryOp::ALL {
            for &(sa, sb) in shapes {
                let (lo, hi) = if op == BinaryOp::Pow { (0.2, 2.0) } else { (-3.0, 3.0) };
                let (ra, da) = pair(sa, lo, hi, g);
                let (rb, db) = pair(sb, lo, hi, g);
                let tol = if op == BinaryOp::Pow { 2e-5 } else { 1e-6 };
                for (x, y, rx, ry, what) in [
                    (&da, &db, &ra, &rb, format!("{op:?} {sa:?} {sb:?} fusion={fusion}")),
                    (&db, &da, &rb, &ra, format!("{op:?} {sb:?} {sa:?} fusion={fusion}")),
                ] {
                    let want = rounded(&rounded(rx).binary(op, &rounded(ry)).unwrap());
                    let got = wgrad::with_fusion(fusion, || x.binary(op, y).unwrap().to_device(&cpu()).unwrap());
                    assert_close(&got, &want, tol, 1e-6, &what);
                }
            }
        }
    }
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    // a device of its own, to see which kernels ran
    let Some(g) = fresh_gpu() else { return };
    check_binary_ops(
        &[(&[5, 7], &[5, 7]), (&[5, 1], &[1, 7]), (&[3, 4, 5], &[5]), (&[], &[6, 2]), (&[2, 1, 3], &[4, 1])],
        &g,
    );
    let compiled = g.context().unwrap().compiled_kernels();
    use wgrad::kernels::Kernel;
    for &op in BinaryOp::ALL {
        assert!(
            compiled.iter().any(|k| matches!(k.kernel, Kernel::Binary(o) | Kernel::BinaryVec4(o, ..) if o == op)),
            "{op:?}'s own kernel never ran"
        );
    }
}

#[test]
fn strided_transposed_sliced_and_broadcast_inputs() {
    with_gpu!(g);
    let (r, d) = pair(&[6, 9], -2.0, 2.0, &g);
    let (rr, dd) = (rounded(&r), d.clone());
    // transposed
    assert_close(
        &dd.t().unwrap().exp().unwrap(),
        &rounded(&rr.t().unwrap().exp().unwrap()),
        2e-5,
        1e-6,
        "exp of transpose",
    );
    // sliced
    let sl = |t: &wgrad::Tensor| t.narrow(1, 2, 5).unwrap().narrow(0, 1, 4).unwrap();
    assert_close(&sl(&dd).mul(sl(&dd)).unwrap(), &rounded(&sl(&rr).mul(sl(&rr)).unwrap()), 1e-6, 1e-6, "mul of slices");
    // broadcast (stride 0) operand
    let row = dd.narrow(0, 0, 1).unwrap().broadcast_to(&[6, 9]).unwrap();
    let rrow = rr.narrow(0, 0, 1).unwrap().broadcast_to(&[6, 9]).unwrap();
    assert_close(&row.sub(&dd).unwrap(), &rounded(&rrow.sub(&rr).unwrap()), 1e-6, 1e-6, "sub of broadcast");
    // transposed + broadcast mixed
    assert_close(
        &dd.t().unwrap().add(row.t().unwrap()).unwrap(),
        &rounded(&rr.t().unwrap().add(rrow.t().unwrap()).unwrap()),
        1e-6,
        1e-6,
        "mixed",
    );
}

#[test]
fn a_grid_over_65535_workgroups_is_folded_and_fully_written() {
    with_gpu!(g);
    // 65,535 * 256 + 1000 elements needs more than 65,535 workgroups in one dimension.
    let n = 65_535 * 256 + 1000;
    let x = Tensor::full(1.5, &[n], &g).unwrap();
    let y = x.add_scalar(1.0).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(y.len(), n);
    assert!(y.iter().all(|&v| v == 2.5), "an element was not written");
}

#[test]
fn nan_and_inf_propagate_like_pytorch() {
    for dev in devices() {
        let x = Tensor::from_slice(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -1.0, 2.0], &[5], &dev).unwrap();
        let relu = x.relu().unwrap().to_vec::<f32>().unwrap();
        assert!(relu[0].is_nan(), "relu(NaN) must be NaN on {dev}");
        assert_eq!(&relu[1..], &[f32::INFINITY, 0.0, 0.0, 2.0]);
        let y = Tensor::from_slice(&[0.0f32, f32::NAN, 1.0, f32::NAN, 1.0], &[5], &dev).unwrap();
        let mx = x.maximum(&y).unwrap().to_vec::<f32>().unwrap();
        assert!(mx[0].is_nan() && mx[1].is_nan() && mx[3].is_nan(), "maximum with NaN is NaN on {dev}: {mx:?}");
        assert_eq!(mx[2], 1.0);
        let mn = x.minimum(&y).unwrap().to_vec::<f32>().unwrap();
        assert!(mn[0].is_nan() && mn[1].is_nan() && mn[3].is_nan(), "minimum with NaN is NaN on {dev}: {mn:?}");
        let th = Tensor::from_slice(&[100.0f32, -100.0, f32::NAN], &[3], &dev)
            .unwrap()
            .tanh()
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(&th[..2], &[1.0, -1.0]);
        assert!(th[2].is_nan());
        let sg =
            Tensor::from_slice(&[100.0f32, -100.0], &[2], &dev).unwrap().sigmoid().unwrap().to_vec::<f32>().unwrap();
        assert_eq!(sg[0], 1.0);
        assert!(sg[1] >= 0.0 && sg[1] < 1e-40);
    }
}

#[test]
fn where_and_comparisons_give_masks() {
    for dev in devices() {
        let a = Tensor::from_slice(&[1.0f32, 5.0, 3.0], &[3], &dev).unwrap();
        let b = Tensor::from_slice(&[2.0f32, 5.0, 1.0], &[3], &dev).unwrap();
        assert_eq!(a.lt(&b).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 0.0, 0.0]);
        assert_eq!(a.ge(&b).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 1.0, 1.0]);
        assert_eq!(a.eq(&b).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 1.0, 0.0]);
        let m = a.gt(&b).unwrap();
        // broadcast scalar branch
        let z = Tensor::zeros(&[], DType::F32, &dev).unwrap();
        assert_eq!(m.where_(&a, &z).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 0.0, 3.0]);
        // u32 labels compare as a float mask
        let p = Tensor::from_slice(&[1u32, 2, 3], &[3], &dev).unwrap();
        let l = Tensor::from_slice(&[1u32, 0, 3], &[3], &dev).unwrap();
        assert_eq!(p.eq(&l).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 0.0, 1.0]);
    }
}

#[test]
fn hand_computed_values() {
    for dev in devices() {
        let x = Tensor::from_slice(&[-2.0f32, 0.0, 3.0], &[3], &dev).unwrap();
        // pow with integral exponents of negative bases follows numpy: (-2)^2 = 4, (-2)^3 = -8
        assert_eq!(x.powf(2.0).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 0.0, 9.0]);
        assert_eq!(x.powf(3.0).unwrap().to_vec::<f32>().unwrap(), vec![-8.0, 0.0, 27.0]);
        assert_eq!(x.abs().unwrap().to_vec::<f32>().unwrap(), vec![2.0, 0.0, 3.0]);
        assert_eq!(x.sign().unwrap().to_vec::<f32>().unwrap(), vec![-1.0, 0.0, 1.0]);
        assert_eq!((&x * &x).unwrap().add_scalar(1.0).unwrap().to_vec::<f32>().unwrap(), vec![5.0, 1.0, 10.0]);
        assert_eq!(x.clamp(-1.0, 1.0).unwrap().to_vec::<f32>().unwrap(), vec![-1.0, 0.0, 1.0]);
    }
}

#[test]
fn vec4_paths_cover_full_repeated_and_splat_operands() {
    // whole-quad tensors go through the vec4 skeletons: each input contiguous (full), a
    // contiguous block repeated along leading dims (bias rows), or one element (splat);
    // these are the unfused kernels
    let Some(g) = fresh_gpu() else { return };
    wgrad::with_fusion(false, || vec4_paths(&g));
}

fn vec4_paths(g: &wgrad::Device) {
    let g = g.clone();
    check_binary_ops(
        &[
            (&[6, 8], &[6, 8]),
            (&[6, 8], &[8]),
            (&[3, 4, 8], &[4, 8]),
            (&[6, 8], &[1]),
            (&[], &[4, 2]),
            (&[4], &[3, 1, 4]),
        ],
        &g,
    );
    // offset views: rows 1.. of [5, 8] start at element 8 (a whole quad), rows of [5, 6] do not
    for cols in [8usize, 6] {
        let (r, d) = pair(&[5, cols * 4], -2.0, 2.0, &g);
        let (r, d) = (r.narrow(0, 1, 4).unwrap(), d.narrow(0, 1, 4).unwrap());
        assert_close(
            &d.exp().unwrap(),
            &rounded(&rounded(&r).exp().unwrap()),
            2e-6,
            1e-6,
            &format!("exp of offset rows, {cols} cols"),
        );
        assert_close(
            &d.add(&d).unwrap(),
            &rounded(&rounded(&r).add(rounded(&r)).unwrap()),
            1e-6,
            1e-6,
            "add of offset rows",
        );
        assert_close(
            &d.sum(&[1], false).unwrap(),
            &rounded(&r).sum(&[1], false).unwrap(),
            1e-5,
            1e-5,
            "row sums of offset rows",
        );
    }
    // many rows: on CPU adapters a thread per row (vec4); max / min through the same paths
    let (r, d) = pair(&[300, 12], -2.0, 2.0, &g);
    let rr = rounded(&r);
    assert_close(&d.sum(&[1], false).unwrap(), &rr.sum(&[1], false).unwrap(), 1e-5, 1e-5, "row sums of 300 rows");
    assert_close(&d.max(&[1], false).unwrap(), &rr.max(&[1], false).unwrap(), 0.0, 0.0, "row max of 300 rows");
    assert_close(&d.min(&[1], false).unwrap(), &rr.min(&[1], false).unwrap(), 0.0, 0.0, "row min of 300 rows");
    let (r, d) = pair(&[2, 40000], -2.0, 2.0, &g);
    let rr = rounded(&r);
    assert_close(&d.sum(&[1], false).unwrap(), &rr.sum(&[1], false).unwrap(), 1e-5, 1e-3, "long row sums");
    assert_close(&d.max(&[1], false).unwrap(), &rr.max(&[1], false).unwrap(), 0.0, 0.0, "long row max");
    let ctx = g.context().unwrap();
    let kernels = ctx.compiled_kernels();
    use wgrad::kernels::{Kernel, Vec4Operand::*};
    for (am, bm) in [(Full, Full), (Full, Repeat), (Repeat, Full), (Full, Splat), (Splat, Full)] {
        assert!(
            kernels.iter().any(|k| matches!(k.kernel, Kernel::BinaryVec4(_, a, b) if a == am && b == bm)),
            "no vec4 binary kernel with modes {am:?}, {bm:?}"
        );
    }
    assert!(kernels.iter().any(|k| matches!(k.kernel, Kernel::UnaryVec4(_))), "no vec4 unary kernel ran");
    assert!(kernels.iter().any(|k| matches!(k.kernel, Kernel::ReduceVec4(_))), "no vec4 reduction ran");
    if ctx.is_cpu_adapter() {
        assert!(
            kernels.iter().any(|k| matches!(k.kernel, Kernel::ReduceRowsVec4(_))),
            "no vec4 row-per-thread reduction ran"
        );
    }
}

/// The CPU device's vectorized f32 forms (exp, sigmoid, gelu_tanh and its slope) against
/// the f64 reference over a dense sweep of their domain and the edge values, at the
/// transcendental tolerance; NaN and infinities behave as the reference; and the chunks
/// the work is split into (above 64K elements) leave no element out.
#[test]
fn cpu_vectorized_transcendentals_meet_the_tolerance_over_a_dense_sweep() {
    let mut xs: Vec<f64> = (0..200_001).map(|i| -100.0 + 188.5 * i as f64 / 200_000.0).collect();
    xs.extend([0.0, -0.0, 1e-40, -1e-40, 1e-30, -1e-30, 1e-7, -1e-7, 88.7, 88.8, -103.9, -87.3, 3e38, -3e38]);
    let n = xs.len();
    let x32 = Tensor::from_slice(&xs.iter().map(|&v| v as f32).collect::<Vec<_>>(), &[n], &cpu()).unwrap();
    let x64 = rounded(&x32);
    for op in [UnaryOp::Exp, UnaryOp::Sigmoid, UnaryOp::GeluTanh, UnaryOp::GeluTanhSlope] {
        let got = x32.unary(op, 0.0).unwrap().to_f64_vec().unwrap();
        let want = x64.unary(op, 0.0).unwrap().to_f64_vec().unwrap();
        for i in 0..n {
            // the reference rounded to f32 (so exp(88.8) wants +inf): relative 2e-5; absolute
            // 1e-35 in the far tails, where the f32 forms underflow a step earlier, and the
            // unary ops' 2e-6 for the slope, which crosses zero (a sum of opposite terms) near
            // x = -0.75; a non-finite reference is matched exactly
            let (g, w) = (got[i], want[i] as f32 as f64);
            let atol = if op == UnaryOp::GeluTanhSlope { 2e-6 } else { 1e-35 };
            assert!(close(g, w, 2e-5, atol), "{op:?}({}) = {g}, want {w}", x64.to_f64_vec().unwrap()[i]);
        }
    }
    // the overflow edges by hand: f32 exp overflows above ln(f32::MAX) = 88.72, and the
    // ops built on it saturate there instead of turning into inf / inf
    let edges = Tensor::from_slice(&[88.7f32, 88.8, 3e38, -3e38, -103.9], &[5], &cpu()).unwrap();
    let e = edges.exp().unwrap().to_vec::<f32>().unwrap();
    assert!(e[0].is_finite() && e[0] > 3.2e38, "exp(88.7) = {}", e[0]);
    // e^-103.9 = 8.2e-46 rounds up to the least subnormal, 1.4e-45
    assert_eq!(&e[1..], &[f32::INFINITY, f32::INFINITY, 0.0, f32::from_bits(1)], "exp at the edges");
    let s = edges.sigmoid().unwrap().to_vec::<f32>().unwrap();
    assert_eq!(s, vec![1.0, 1.0, 1.0, 0.0, f32::from_bits(1)], "sigmoid at the edges");
    let gt = edges.gelu_tanh().unwrap().to_vec::<f32>().unwrap();
    assert_eq!(gt, vec![88.7, 88.8, 3e38, -0.0, -0.0], "gelu_tanh at the edges");
    let slope = edges.unary(UnaryOp::GeluTanhSlope, 0.0).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(slope, vec![1.0, 1.0, 1.0, 0.0, 0.0], "gelu_tanh's slope at the edges");
    let special = Tensor::from_slice(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY], &[3], &cpu()).unwrap();
    let e = special.exp().unwrap().to_vec::<f32>().unwrap();
    assert!(e[0].is_nan() && e[1] == f32::INFINITY && e[2] == 0.0, "{e:?}");
    let s = special.sigmoid().unwrap().to_vec::<f32>().unwrap();
    assert!(s[0].is_nan() && s[1] == 1.0 && s[2] == 0.0, "{s:?}");
    // add and exp at sizes around the split, against the f64 reference, element by element
    for n in [65_535usize, 65_536, 65_537, 200_003] {
        let (r, c) = pair(&[n], -3.0, 3.0, &cpu());
        let (r2, c2) = pair(&[n], -3.0, 3.0, &cpu());
        assert_close(&c.add(&c2).unwrap(), &rounded(&rounded(&r).add(rounded(&r2)).unwrap()), 0.0, 0.0, "add");
        assert_close(&c.exp().unwrap(), &rounded(&r).exp().unwrap(), 2e-5, 0.0, "exp");
    }
}

/// A user kernel's f32 CPU form (one vectorized loop) agrees with its f64 closure, at sizes
/// around the thread split; a strided view takes the f64 closure.
#[test]
fn user_kernels_with_an_f32_cpu_form_match_the_f64_closure() {
    use wgrad::ElementwiseKernel;
    let k = ElementwiseKernel::new("exp_x_mul_x_plus_s_f32", "return exp(x) * x + s;", |x, s| x.exp() * x + s)
        .unwrap()
        .with_cpu_f32(|x, s| wgrad::cpu::exp_f32(x) * x + s);
    let plain =
        ElementwiseKernel::new("exp_x_mul_x_plus_s_f64", "return exp(x) * x + s;", |x, s| x.exp() * x + s).unwrap();
    for n in [0usize, 1, 7, 65_535, 65_537, 200_003] {
        let (_, x) = pair(&[n], -5.0, 5.0, &cpu());
        let got = x.map_kernel(&k, 1.5).unwrap();
        let want = x.map_kernel(&plain, 1.5).unwrap();
        assert_close(&got, &want, 2e-5, 2e-6, &format!("n={n}"));
    }
    let (_, m) = pair(&[64, 33], -2.0, 2.0, &cpu());
    let t = m.t().unwrap();
    assert_close(&t.map_kernel(&k, 0.5).unwrap(), &t.map_kernel(&plain, 0.5).unwrap(), 0.0, 0.0, "strided");
}

/// Large CPU results reuse freed buffers (no page faults): a buffer that held NaNs must
/// never show through in the f32 maps, the f64-computed ops, or user kernels' f32 forms.
#[test]
fn recycled_cpu_buffers_never_show_stale_values() {
    use wgrad::ElementwiseKernel;
    let cpu = cpu();
    // 8 MB of f32, above the recycler's 4 MB floor; odd so that no chunk boundary lines up
    let n = (1 << 21) + 3;
    let xs: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 / 500.0 - 1.0).collect();
    let x = Tensor::from_slice(&xs, &[n], &cpu).unwrap();
    let k =
        ElementwiseKernel::new("recycled_x_plus_s", "return x + s;", |x, s| x + s).unwrap().with_cpu_f32(|x, s| x + s);
    for round in 0..3 {
        let results = [
            x.add(&x).unwrap(),
            x.exp().unwrap(),
            x.sin().unwrap(),
            x.map_kernel(&k, 0.5).unwrap(),
            // an f32 result built from f64 values (CpuStorage::from_f64)
            x.to_dtype(DType::F64).unwrap().to_dtype(DType::F32).unwrap(),
        ];
        let want: [fn(f32) -> f32; 5] =
            [|v| v + v, |v| ((v as f64).exp()) as f32, |v| ((v as f64).sin()) as f32, |v| v + 0.5, |v| v];
        for (r, (got, f)) in results.iter().zip(want).enumerate() {
            let got = got.to_vec::<f32>().unwrap();
            for i in [0, 1, n / 2, n - 2, n - 1] {
                let w = f(xs[i]);
                assert!(
                    (got[i] - w).abs() <= 4e-7 * w.abs().max(1.0),
                    "round {round}, result {r}, [{i}]: {} vs {w}",
                    got[i]
                );
            }
            assert!(got.iter().all(|v| v.is_finite()), "round {round}, result {r}: a stale NaN");
        }
        // pushed outputs: a broadcast zip and a map over a transposed view (2^21 elements)
        let two = Tensor::from_slice(&[2.0f32], &[1], &cpu).unwrap();
        let b = x.mul(&two).unwrap().to_vec::<f32>().unwrap();
        assert!(b.iter().zip(&xs).all(|(g, v)| *g == 2.0 * v), "round {round}: broadcast zip");
        let m = x.narrow(0, 0, 1 << 21).unwrap().reshape(&[2048, 1024]).unwrap();
        let t = m.t().unwrap().neg().unwrap().to_vec::<f32>().unwrap();
        assert!(t.iter().all(|v| v.is_finite()), "round {round}: strided map, a stale NaN");
        assert_eq!((t[0], t[1], t[2048]), (-xs[0], -xs[1024], -xs[1]), "round {round}: strided map");
        // free buffers full of NaN of the same size, for the next round to reuse
        drop(results);
        let junk: Vec<Tensor> = (0..4)
            .map(|_| Tensor::from_slice(&vec![f32::NAN; n], &[n], &cpu).unwrap())
            .chain((0..2).map(|_| Tensor::from_slice(&vec![f32::NAN; 1 << 21], &[1 << 21], &cpu).unwrap()))
            .collect();
        drop(junk);
    }
}

/// log1p keeps the digits of small x that log(1 + x) loses in f32 (at x = 1e-7, 1 + x
/// rounds to 1 + 1.19e-7), on both devices, fused and unfused, and its first and second
/// derivatives pass check_grads (f64 on the CPU; f32 on the GPU).
#[test]
fn log1p_matches_the_f64_reference_where_log_of_1_plus_x_fails() {
    let xs = [1e-7f64, -1e-7, 1e-3, -0.29, 0.5, -0.5, 10.0, -0.9];
    let want: Vec<f64> = xs.iter().map(|&x| (x as f32 as f64).ln_1p()).collect();
    let x32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
    let naive = Tensor::from_slice(&x32, &[xs.len()], &cpu()).unwrap().add_scalar(1.0).unwrap().log().unwrap();
    let naive = naive.to_f64_vec().unwrap();
    assert!((naive[0] - want[0]).abs() > 0.1 * want[0], "log(1 + 1e-7) in f32 is off by 19%: {}", naive[0]);
    let check = |got: Vec<f64>, what: &str| {
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 2.5e-7 * w.abs(), "{what}: log1p({}) = {g}, want {w}", xs[i]);
        }
    };
    let on_cpu = Tensor::from_slice(&x32, &[xs.len()], &cpu()).unwrap();
    check(on_cpu.log1p().unwrap().to_f64_vec().unwrap(), "CPU f32");
    let x64 = random(&[7], -0.8, 3.0);
    wgrad::check_grads(|x| x.log1p(), &x64, 2).unwrap();
    with_gpu!(g);
    let on_gpu = Tensor::from_slice(&x32, &[xs.len()], &g).unwrap();
    for fusion in [true, false] {
        let got = wgrad::with_fusion(fusion, || on_gpu.log1p().unwrap().to_f64_vec().unwrap());
        check(got, &format!("GPU, fusion {fusion}"));
    }
    let opts = wgrad::CheckOptions::f32();
    wgrad::check_grads_with(|x| x.log1p(), &on(&g, &random(&[7], -0.5, 3.0)), 2, opts).unwrap();
}
