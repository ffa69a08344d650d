//! vmap: every primitive's batching rule against a loop over the examples (in and out
//! axes first and last, inputs mapped and shared), the GPU against the CPU, nesting with
//! itself and with forward mode, and the errors.
use crate::common::*;
use wgrad::kernels::{BinaryOp, UnaryOp};
use wgrad::{jvp, vmap, vmap_many, DType, Device, Error, Result, Tensor};

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
            UnaryOp::Log1p => (-0.5, 2.0),
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
    for (name, f, shape) in crate::forward_mode::structural_cases(&cpu()) {
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
    let r = vmap(|x| Tensor::randn_dtype(x.shape(), 7, DType::F64, x.device())?.add(&x.mul_scalar(0.0)?), &x, 0, 0)
        .unwrap();
    assert_close(&r.narrow(0, 0, 1).unwrap(), &r.narrow(0, 1, 1).unwrap(), 0.0, 0.0, "shared random stream");
}

/// The loop Jacobian the transforms used to be: one VJP per output element (the oracle).
fn loop_jacobian(f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor) -> Tensor {
    let y = f(x).unwrap();
    let m = y.numel();
    let eye = Tensor::eye(m, DType::F64, &cpu()).unwrap();
    let rows: Vec<Tensor> = (0..m)
        .map(|i| wgrad::vjp(f, x, &eye.narrow(0, i, 1).unwrap().reshape(y.shape()).unwrap()).unwrap().1)
        .collect();
    let mut shape = y.shape().to_vec();
    shape.extend_from_slice(x.shape());
    Tensor::stack(&rows, 0).unwrap().reshape(&shape).unwrap()
}

#[test]
fn batched_jacobians_equal_the_loop_and_chunking_changes_nothing() {
    use wgrad::{hessian, jacfwd, jacfwd_chunked, jacrev, jacrev_chunked};
    let w = random(&[3, 4], -1.0, 1.0);
    let g = |x: &Tensor| w.matmul(x)?.tanh()?.softmax(0); // R^(4x2) -> R^(3x2)
    let x = random(&[4, 2], -1.0, 1.0);
    let oracle = loop_jacobian(&g, &x);
    assert_eq!(oracle.shape(), &[3, 2, 4, 2]);
    assert_close(&jacrev(g, &x).unwrap(), &oracle, 1e-12, 1e-12, "jacrev vs the loop");
    assert_close(&jacfwd(g, &x).unwrap(), &oracle, 1e-12, 1e-12, "jacfwd vs the loop");
    for chunk in [1, 2, 5, 100] {
        assert_close(&jacrev_chunked(g, &x, Some(chunk)).unwrap(), &oracle, 1e-12, 1e-12, "jacrev chunked");
        assert_close(&jacfwd_chunked(g, &x, Some(chunk)).unwrap(), &oracle, 1e-12, 1e-12, "jacfwd chunked");
    }
    // the 3-D Hessian of a vector function, slice by slice against the Hessian of each output
    let v = |x: &Tensor| w.matmul(x)?.tanh()?.sum(&[1], false); // R^(4x2) -> R^3
    let h = hessian(v, &x).unwrap();
    assert_eq!(h.shape(), &[3, 4, 2, 4, 2]);
    for i in 0..3 {
        let hi = loop_jacobian(&|x: &Tensor| wgrad::grad(|x| v(x)?.narrow(0, i, 1)?.sum_all(), x), &x);
        assert_close(&h.narrow(0, i, 1).unwrap().squeeze(0).unwrap(), &hi, 1e-12, 1e-12, "Hessian slice");
    }
}

#[test]
fn per_example_gradients_of_the_mlp_equal_separate_grads() {
    use wgrad::nn::{self, Activation, Ctx, Linear, Module, Params, Sequential};
    let dev = cpu();
    let mut p = Params::new();
    let model = Sequential::new()
        .push(Linear::new(&mut p, "l1", 784, 256, 0, &dev).unwrap())
        .push(Activation::Relu)
        .push(Linear::new(&mut p, "l2", 256, 256, 1, &dev).unwrap())
        .push(Activation::Relu)
        .push(Linear::new(&mut p, "l3", 256, 10, 2, &dev).unwrap());
    let params: Vec<Tensor> = p.tensors().to_vec();
    let xb = Tensor::rand(&[32, 784], 0.0, 1.0, 5, &dev).unwrap();
    let yb = Tensor::from_slice(&(0..32u32).map(|i| i % 10).collect::<Vec<_>>(), &[32], &dev).unwrap();
    // loss of one example (a batch of one) as a function of the first weight
    let loss = |w: &Tensor, x: &Tensor, y: &Tensor| -> Result<Tensor> {
        let mut q = params.clone();
        q[0] = w.clone();
        nn::cross_entropy(&model.forward(&Ctx::eval(&q), &x.unsqueeze(0)?)?, &y.unsqueeze(0)?)
    };
    let per_example = vmap_many(
        |a| wgrad::grad(|w| loss(w, &a[1], &a[2]), &a[0]),
        &[params[0].clone(), xb.clone(), yb.clone()],
        &[None, Some(0), Some(0)],
        0,
    )
    .unwrap();
    assert_eq!(per_example.shape(), &[32, 256, 784]);
    // the same through value_and_grad_many (every parameter), first parameter's slice
    let all = vmap_many(
        |a| {
            let f = |q: &[Tensor]| -> Result<Tensor> {
                nn::cross_entropy(&model.forward(&Ctx::eval(q), &a[0].unsqueeze(0)?)?, &a[1].unsqueeze(0)?)
            };
            let (_, gs) = wgrad::value_and_grad_many(f, &params)?;
            Tensor::cat(&gs.iter().map(|g| g.flatten()).collect::<Result<Vec<_>>>()?, 0)
        },
        &[xb.clone(), yb.clone()],
        &[Some(0), Some(0)],
        0,
    )
    .unwrap();
    let first = all.narrow(1, 0, 256 * 784).unwrap().reshape(&[32, 256, 784]).unwrap();
    assert_close(&first, &per_example, 1e-5, 1e-7, "value_and_grad_many under vmap");
    for i in [0, 7, 31] {
        let (xi, yi) = (example(&xb, 0, i), example(&yb, 0, i));
        let want = wgrad::grad(|w| loss(w, &xi, &yi), &params[0]).unwrap();
        assert_close(&example(&per_example, 0, i), &want, 1e-5, 1e-7, &format!("example {i}"));
    }
}

#[test]
fn grad_and_jvp_of_vmap_match_finite_differences_to_second_order() {
    let w = random(&[3, 3], -1.0, 1.0);
    // F(X) = sum over examples of softplus(w x_i) . sin(x_i), examples on axis 1
    let batched = |x: &Tensor| vmap(|xi| w.matmul(xi)?.softplus()?.mul(&xi.sin()?)?.sum_all(), x, 1, 0)?.sum_all();
    let x = random(&[3, 4], -1.0, 1.0);
    wgrad::check_grads(batched, &x, 2).unwrap();
    // jvp of vmap against finite differences, and jvp of grad of vmap (second order)
    let t = random(&[3, 4], -1.0, 1.0);
    let eps = 1e-6;
    let fd = |f: &dyn Fn(&Tensor) -> Result<Tensor>| {
        let fp = f(&x.add(t.mul_scalar(eps).unwrap()).unwrap()).unwrap();
        let fm = f(&x.sub(t.mul_scalar(eps).unwrap()).unwrap()).unwrap();
        fp.sub(&fm).unwrap().mul_scalar(0.5 / eps).unwrap()
    };
    let (_, jt) = jvp(batched, &x, &t).unwrap();
    assert_close(&jt, &fd(&batched), 1e-3, 1e-5, "jvp(vmap)");
    let g = |x: &Tensor| wgrad::grad(batched, x);
    let (_, hv) = jvp(g, &x, &t).unwrap();
    assert_close(&hv, &fd(&g), 1e-3, 1e-5, "jvp(grad(vmap))");
}

#[test]
fn a_gpu_hessian_reads_nothing_back() {
    let Some(g) = fresh_gpu() else { return };
    let w = Tensor::randn(&[8, 8], 1, &g).unwrap();
    let x = Tensor::randn(&[8, 1], 2, &g).unwrap();
    let f = |x: &Tensor| w.matmul(x)?.tanh()?.sum_all()?.add(&x.square()?.sum_all()?.mul_scalar(0.5)?);
    g.synchronize().unwrap();
    let before = g.counters();
    let h = wgrad::hessian(f, &x).unwrap();
    let j = wgrad::jacrev(|x| w.matmul(x)?.tanh(), &x).unwrap();
    g.synchronize().unwrap();
    assert_eq!(g.counters().readbacks - before.readbacks, 0, "readbacks during hessian and jacrev");
    assert_eq!(h.shape(), &[8, 1, 8, 1]);
    assert_eq!(j.shape(), &[8, 1, 8, 1]);
    // the values, by hand in f64: with z = W x and s = sech^2 z,
    // H = W^T diag(-2 tanh(z) s) W + I and J = diag(s) W
    let (wv, xv) = (w.to_f64_vec().unwrap(), x.to_f64_vec().unwrap());
    let z: Vec<f64> = (0..8).map(|i| (0..8).map(|k| wv[i * 8 + k] * xv[k]).sum()).collect();
    let sech2: Vec<f64> = z.iter().map(|z| 1.0 - z.tanh().powi(2)).collect();
    let mut want_h = vec![0.0; 64];
    let mut want_j = vec![0.0; 64];
    for a in 0..8 {
        for b in 0..8 {
            let curvature: f64 = (0..8).map(|i| wv[i * 8 + a] * -2.0 * z[i].tanh() * sech2[i] * wv[i * 8 + b]).sum();
            want_h[a * 8 + b] = curvature + if a == b { 1.0 } else { 0.0 };
            want_j[a * 8 + b] = sech2[a] * wv[a * 8 + b];
        }
    }
    let as_t = |v: Vec<f64>| Tensor::from_slice(&v, &[8, 1, 8, 1], &cpu()).unwrap();
    assert_close(&h, &as_t(want_h), 1e-4, 1e-5, "the Hessian's values");
    assert_close(&j, &as_t(want_j), 1e-4, 1e-5, "the Jacobian's values");
}

/// x^3 as a user primitive, with a forward to loop over and optionally a batching rule.
struct Cube {
    rule: bool,
    forward: bool,
}
impl wgrad::CustomOp for Cube {
    fn name(&self) -> &str {
        "cube"
    }
    /// d x^3 = 3 x^2 dx
    fn vjp(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&inputs[0].square()?.mul_scalar(3.0)?)?)])
    }
    /// batch: elementwise, the cube of every example at once
    fn batch(&self, inputs: &[Tensor], _batched: &[bool], _size: usize) -> Option<Result<Tensor>> {
        self.rule.then(|| inputs[0].powf(3.0))
    }
    fn forward(&self, inputs: &[Tensor]) -> Option<Result<Tensor>> {
        self.forward.then(|| inputs[0].powf(3.0))
    }
}

#[test]
fn custom_ops_batch_by_their_rule_or_a_counted_loop() {
    use std::sync::Arc;
    let x = random(&[4, 3], -1.0, 1.0);
    let want = x.powf(3.0).unwrap();
    let run = |rule: bool, forward: bool| {
        let op = Arc::new(Cube { rule, forward });
        vmap(move |x| wgrad::custom_op(op.clone(), &[x], || x.powf(3.0)), &x, 0, 0)
    };
    let loops = wgrad::vmap_fallback_loops();
    assert_close(&run(true, false).unwrap(), &want, 1e-12, 1e-12, "custom op batching rule");
    assert_eq!(wgrad::vmap_fallback_loops(), loops, "a batching rule needs no loop");
    assert_close(&run(false, true).unwrap(), &want, 1e-12, 1e-12, "custom op loop fallback");
    assert!(wgrad::vmap_fallback_loops() > loops, "the loop fallback is counted");
    let e = run(false, false).unwrap_err();
    assert!(matches!(e, Error::MissingRule { transform: "vmap", .. }), "{e}");
    // and the gradient through the loop: d/dx sum(x^3) = 3 x^2
    let op = Arc::new(Cube { rule: false, forward: true });
    let f = move |x: &Tensor| vmap(|xi| wgrad::custom_op(op.clone(), &[xi], || xi.powf(3.0)), x, 0, 0)?.sum_all();
    let g = wgrad::grad(f, &x).unwrap();
    assert_close(&g, &x.square().unwrap().mul_scalar(3.0).unwrap(), 1e-12, 1e-12, "grad through the loop");
}

#[test]
fn a_gpu_loop_fallback_shows_in_counters_and_the_profile() {
    use std::sync::Arc;
    let Some(g) = fresh_gpu() else { return };
    let x = Tensor::randn(&[3, 4], 1, &g).unwrap();
    let op = Arc::new(Cube { rule: false, forward: true });
    let ctx = g.context().unwrap();
    ctx.set_profiling(true);
    let before = g.counters();
    let y = vmap(|x| wgrad::custom_op(op.clone(), &[x], || x.powf(3.0)), &x, 0, 0).unwrap();
    assert_eq!(g.counters().vmap_fallback_loops - before.vmap_fallback_loops, 1);
    assert!(ctx.kernel_profile().iter().any(|r| r.kernel == "vmap loop fallback: cube"));
    ctx.set_profiling(false);
    assert_close(&y, &x.powf(3.0).unwrap(), 1e-6, 1e-6, "the loop's result");
}
