//! vmap: every primitive's batching rule against a loop over the examples (in and out
//! axes first and last, inputs mapped and shared), the GPU against the CPU, nesting with
//! itself and with forward mode, and the errors.
use crate::common::*;
use wgrad::kernels::{BinaryOp, UnaryOp};
use wgrad::{jvp, vmap, vmap_many, DType, Device, Error, Result, Tensor};

fn random(shape: &[usize], lo: f64, hi: f64) -> Tensor {
    Tensor::from_slice(&rand_vec(shape.iter().product(), lo, hi), shape, &cpu()).unwrap()
}

/// Example i of `x` along `axis`.
fn example(x: &Tensor, axis: usize, i: usize) -> Tensor {
    x.narrow(axis as isize, i, 1).unwrap().squeeze(axis as isize).unwrap()
}

/// The reference: f on each example, stacked along `out_axis`.
fn looped(f: &dyn Fn(&[Tensor]) -> Result<Tensor>, xs: &[Tensor], axes: &[Option<usize>], out_axis: usize) -> Tensor {
    let n = xs.iter().zip(axes).find_map(|(x, a)| a.map(|a| x.shape()[a])).unwrap();
    let ys: Vec<Tensor> = (0..n)
        .map(|i| {
            let ex: Vec<Tensor> =
                xs.iter().zip(axes).map(|(x, a)| a.map_or_else(|| x.clone(), |a| example(x, a, i))).collect();
            f(&ex).unwrap()
        })
        .collect();
    Tensor::stack(&ys, out_axis as isize).unwrap()
}

/// `shape` with an axis of `n` examples inserted at `axis`.
fn with_examples(shape: &[usize], axis: usize, n: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    s.insert(axis, n);
    s
}

/// vmap(f) against the loop for in and out axes first and last.
fn check_vmap(name: &str, f: &dyn Fn(&Tensor) -> Result<Tensor>, shape: &[usize], lo: f64, hi: f64) {
    let out_rank = f(&random(shape, lo, hi)).unwrap().rank();
    for in_axis in [0, shape.len()] {
        for out_axis in [0, out_rank] {
            let x = random(&with_examples(shape, in_axis, 3), lo, hi);
            let got = vmap(f, &x, in_axis, out_axis).unwrap_or_else(|e| panic!("{name}: vmap: {e}"));
            let want = looped(&|xs: &[Tensor]| f(&xs[0]), std::slice::from_ref(&x), &[Some(in_axis)], out_axis);
            assert_close(&got, &want, 1e-12, 1e-12, &format!("{name}: vmap in {in_axis} out {out_axis}"));
        }
    }
}

#[test]
fn every_unary_batching_rule_matches_a_loop() {
    for &op in UnaryOp::ALL {
        let (lo, hi) = match op {
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::PowScalar | UnaryOp::Recip => (0.5, 2.0),
            _ => (-1.5, 1.5),
        };
        let f = move |x: &Tensor| x.unary(op, 1.7);
        for shape in [&[][..], &[4], &[2, 3]] {
            check_vmap(&format!("{op:?} {shape:?}"), &f, shape, lo, hi);
        }
    }
}

#[test]
fn every_binary_batching_rule_matches_a_loop_mapped_and_shared() {
    const SHAPES: &[&[usize]] = &[&[], &[3], &[2, 3], &[1, 3], &[2, 1]];
    for &op in BinaryOp::ALL {
        for &sa in SHAPES {
            for &sb in SHAPES {
                let (lo, hi) = if op == BinaryOp::Pow { (0.5, 2.0) } else { (-2.0, 2.0) };
                let f = move |xs: &[Tensor]| xs[0].binary(op, &xs[1]);
                for axes in [[Some(0), Some(0)], [Some(0), None], [None, Some(sb.len())]] {
                    let shape_of = |s: &[usize], a: Option<usize>| a.map_or(s.to_vec(), |a| with_examples(s, a, 3));
                    let xs = [random(&shape_of(sa, axes[0]), lo, hi), random(&shape_of(sb, axes[1]), lo, hi)];
                    let got = vmap_many(f, &xs, &axes, 0).unwrap_or_else(|e| panic!("{op:?} {sa:?} {sb:?}: {e}"));
                    let want = looped(&f, &xs, &axes, 0);
                    assert_close(&got, &want, 1e-12, 1e-12, &format!("{op:?} {sa:?} {sb:?} axes {axes:?}"));
                }
            }
        }
    }
}

#[test]
fn every_other_batching_rule_matches_a_loop() {
    for (name, f, shape) in crate::forward_mode::structural_cases() {
        check_vmap(name, &f, &shape, -1.5, 1.5);
    }
}

#[test]
fn gpu_vmap_matches_the_cpu() {
    with_gpu!(g);
    let gpu_cases = crate::autograd_ops::structural_cases(&g);
    for ((name, fg, shape), (_, fc, _)) in gpu_cases.into_iter().zip(crate::autograd_ops::structural_cases(&cpu())) {
        let x = rounded(&random(&with_examples(&shape, 0, 3), -1.5, 1.5));
        let want = vmap(&fc, &x, 0, 0).unwrap();
        let xg = x.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
        let got = vmap(&fg, &xg, 0, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(&got.to_device(&cpu()).unwrap(), &want, 2e-5, 2e-6, &format!("GPU vmap of {name}"));
    }
}

#[test]
fn vmap_of_vmap_matches_a_double_loop() {
    let w = random(&[4, 3], -1.0, 1.0);
    let f = |x: &Tensor| w.matmul(x)?.tanh()?.softmax(0);
    let x = random(&[2, 3, 5], -1.0, 1.0); // examples on axes 0 and 2
    let got = vmap(|xi| vmap(f, xi, 1, 0), &x, 0, 0).unwrap();
    let mut rows = Vec::new();
    for i in 0..2 {
        let inner: Vec<Tensor> = (0..5).map(|j| f(&example(&example(&x, 0, i), 1, j)).unwrap()).collect();
        rows.push(Tensor::stack(&inner, 0).unwrap());
    }
    assert_close(&got, &Tensor::stack(&rows, 0).unwrap(), 1e-12, 1e-12, "vmap(vmap)");
}

#[test]
fn vmap_and_jvp_nest_both_ways() {
    let w = random(&[3, 3], -1.0, 1.0);
    let f = |x: &Tensor| w.matmul(x)?.sin();
    let (x, t) = (random(&[4, 3], -1.0, 1.0), random(&[4, 3], -1.0, 1.0));
    // vmap of jvp: each example's directional derivative
    let got = vmap_many(|a| Ok(jvp(f, &a[0], &a[1])?.1), &[x.clone(), t.clone()], &[Some(0), Some(0)], 0).unwrap();
    let want = looped(&|a: &[Tensor]| Ok(jvp(f, &a[0], &a[1])?.1), &[x.clone(), t.clone()], &[Some(0), Some(0)], 0);
    assert_close(&got, &want, 1e-12, 1e-12, "vmap(jvp)");
    // jvp of vmap: the tangent of the batched function
    let (_, got) = jvp(|x| vmap(f, x, 0, 0), &x, &t).unwrap();
    assert_close(&got, &want, 1e-12, 1e-12, "jvp(vmap)");
}

#[test]
fn vmap_errors_name_vmap() {
    let x = random(&[3, 2], -1.0, 1.0);
    let e = vmap(|x| x.exp(), &x, 2, 0).unwrap_err();
    assert!(matches!(e, Error::AxisOutOfRange { op: "vmap", .. }), "{e}");
    let e =
        vmap_many(|a| a[0].add(&a[1]), &[x.clone(), random(&[4, 2], -1.0, 1.0)], &[Some(0), Some(0)], 0).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "vmap", .. }), "{e}");
    // reading one example back inside f
    let e = vmap(|x| Tensor::scalar(x.sum_all()?.to_scalar::<f64>()?, &Device::cpu()), &x, 0, 0).unwrap_err();
    assert!(matches!(e, Error::Invalid { op: "vmap", .. }), "{e}");
    // a batched tensor that escapes its vmap
    let kept = std::cell::RefCell::new(None);
    vmap(
        |x| {
            *kept.borrow_mut() = Some(x.exp()?);
            x.exp()
        },
        &x,
        0,
        0,
    )
    .unwrap();
    let e = kept.borrow().as_ref().unwrap().add_scalar(1.0).unwrap_err();
    assert!(matches!(e, Error::Invalid { op: "vmap", .. }), "{e}");
    // out axis out of range
    let e = vmap(|x| x.exp(), &x, 0, 3).unwrap_err();
    assert!(matches!(e, Error::AxisOutOfRange { op: "vmap", .. }), "{e}");
    // random ops inside f draw one sample shared by every example
    let r = vmap(|x| Tensor::randn(x.shape(), 7, DType::F64, x.device())?.add(&x.mul_scalar(0.0)?), &x, 0, 0).unwrap();
    assert_close(&r.narrow(0, 0, 1).unwrap(), &r.narrow(0, 1, 1).unwrap(), 0.0, 0.0, "shared random stream");
}
