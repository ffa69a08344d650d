//! The surface a PyTorch or JAX user expects: operators on every pairing of tensors,
//! results and numbers; methods that take numbers; values that print and read back in any
//! type; f32 defaults; errors that name the call; a check_grads that checks the device's
//! kernels; user kernels with derivatives in one declaration.
use crate::common::*;
use std::sync::Arc;
use wgrad::nn::{Activation, Ctx, Module, Sequential};
use wgrad::{
    check_grads, check_grads_with, custom_op, grad, hessian, jvp, value_and_grad_many, vmap, vmap_fallback_loops,
    vmap_many, CheckOptions, CustomOp, DType, Device, ElementwiseKernel, Error, Result, Tensor,
};

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_vec::<f64>().unwrap()
}

fn assert_vals(t: &Tensor, want: &[f64], what: &str) {
    let got = vals(t);
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(close(*g, *w, 1e-6, 1e-6), "{what}: {got:?} vs {want:?}");
    }
}

#[test]
fn every_operator_pairing_returns_the_elementwise_result() {
    for dev in devices() {
        let a = || Tensor::from_slice(&[1.0f32, -2.0, 4.0], &[3], &dev).unwrap();
        let b = || Tensor::from_slice(&[0.5f32, 4.0, -8.0], &[3], &dev).unwrap();
        let (av, bv) = ([1.0, -2.0, 4.0], [0.5, 4.0, -8.0]);
        let ok = || -> Result<Tensor> { Ok(b()) };
        type Op = fn(f64, f64) -> f64;
        let ops: [(&str, Op); 4] = [("+", |x, y| x + y), ("-", |x, y| x - y), ("*", |x, y| x * y), ("/", |x, y| x / y)];
        for (name, f) in ops {
            let want: Vec<f64> = av.iter().zip(&bv).map(|(&x, &y)| f(x, y)).collect();
            let with_two: Vec<f64> = av.iter().map(|&x| f(x, 2.0)).collect();
            let two_with: Vec<f64> = av.iter().map(|&x| f(2.0, x)).collect();
            macro_rules! all_pairings {
                ($op:tt) => {{
                    let pairs: Vec<(&str, Result<Tensor>, &Vec<f64>)> = vec![
                        ("T op T", a() $op b(), &want),
                        ("T op &T", a() $op &b(), &want),
                        ("&T op T", &a() $op b(), &want),
                        ("&T op &T", &a() $op &b(), &want),
                        ("&T op Result", &a() $op ok(), &want),
                        ("T op Result", a() $op ok(), &want),
                        ("Result op &T", Ok::<Tensor, Error>(a()) $op &b(), &want),
                        ("Result op T", Ok::<Tensor, Error>(a()) $op b(), &want),
                        ("&T op f64", &a() $op 2.0, &with_two),
                        ("T op f64", a() $op 2.0, &with_two),
                        ("f64 op &T", 2.0 $op &a(), &two_with),
                        ("f64 op T", 2.0 $op a(), &two_with),
                    ];
                    for (pairing, got, want) in pairs {
                        let got = got.unwrap();
                        assert_eq!(got.dtype(), DType::F32, "{name} {pairing}");
                        assert_eq!(got.device(), &dev, "{name} {pairing}");
                        assert_vals(&got, want, &format!("{name} {pairing} on {dev}"));
                    }
                }};
            }
            match name {
                "+" => all_pairings!(+),
                "-" => all_pairings!(-),
                "*" => all_pairings!(*),
                _ => all_pairings!(/),
            }
        }
        assert_vals(&(-a()).unwrap(), &[-1.0, 2.0, -4.0], "-T");
        assert_vals(&(-&a()).unwrap(), &[-1.0, 2.0, -4.0], "-&T");
        // an error on either side propagates, naming the call
        let wrong = Tensor::zeros(&[2], DType::F32, &dev).unwrap();
        assert!(matches!(&a() + &wrong, Err(Error::Broadcast { op: "add", .. })));
        assert!(matches!((&a() + &wrong) * &a(), Err(Error::Broadcast { op: "add", .. })));
        // the PyTorch one-liners: one ? per chain
        let (w, g, lr) = (a(), b(), 0.1);
        assert_vals(&(&w - lr * &g).unwrap(), &[0.95, -2.4, 4.8], "w - lr * g");
        let chained = ((&a() * 2.0) + &b()).unwrap().exp().unwrap();
        let want: Vec<f64> = av.iter().zip(&bv).map(|(x, y)| (2.0 * x + y).exp()).collect();
        assert_vals(&chained, &want, "exp(2a + b)");
        // a number keeps the tensor's dtype
        let a64 = a().to_device(&cpu()).unwrap().to_dtype(DType::F64).unwrap();
        assert_eq!((&a64 * 3.0).unwrap().dtype(), DType::F64);
    }
}

#[test]
fn binary_methods_take_numbers_in_the_tensors_dtype() {
    for dev in devices() {
        let x = Tensor::from_slice(&[-1.0f32, 0.0, 2.0], &[3], &dev).unwrap();
        assert_vals(&x.gt(0.0).unwrap(), &[0.0, 0.0, 1.0], "gt");
        assert_vals(&x.ge(0.0).unwrap(), &[0.0, 1.0, 1.0], "ge");
        assert_vals(&x.lt(0.0).unwrap(), &[1.0, 0.0, 0.0], "lt");
        assert_vals(&x.le(0.0).unwrap(), &[1.0, 1.0, 0.0], "le");
        assert_vals(&x.eq(2.0).unwrap(), &[0.0, 0.0, 1.0], "eq");
        assert_vals(&x.ne(2.0).unwrap(), &[1.0, 1.0, 0.0], "ne");
        assert_vals(&x.maximum(0.5).unwrap(), &[0.5, 0.5, 2.0], "maximum");
        assert_vals(&x.minimum(0.5).unwrap(), &[-1.0, 0.0, 0.5], "minimum");
        assert_vals(&x.pow(2.0).unwrap(), &[1.0, 0.0, 4.0], "pow number");
        assert_vals(&x.pow(x.abs().unwrap()).unwrap(), &[-1.0, 1.0, 4.0], "pow tensor");
        let mask = x.gt(0.0).unwrap();
        assert_vals(&mask.where_(&x, 0.0).unwrap(), &[0.0, 0.0, 2.0], "where_(tensor, number)");
        assert_vals(&mask.where_(1.0, &x).unwrap(), &[-1.0, 0.0, 1.0], "where_(number, tensor)");
        assert_vals(&mask.where_(1.0, -1.0).unwrap(), &[-1.0, -1.0, 1.0], "where_(number, number)");
        assert_vals(&x.add(1).unwrap(), &[0.0, 1.0, 3.0], "add an integer");
        assert_vals(&x.div(4.0).unwrap(), &[-0.25, 0.0, 0.5], "div");
        for t in [x.gt(0.0).unwrap(), x.maximum(0.5).unwrap(), mask.where_(1.0, -1.0).unwrap()] {
            assert_eq!((t.dtype(), t.device()), (DType::F32, &dev));
        }
        // numbers carry no gradient, and the tensor side keeps its own
        let g = grad(|x| x.maximum(0.5)?.mul(3.0)?.sum_all(), &x).unwrap();
        assert_vals(&g, &[0.0, 0.0, 3.0], "grad through maximum(number)");
        // labels compare with numbers too (masks in f32)
        let labels = Tensor::from_slice(&[3u32, 1, 3], &[3], &dev).unwrap();
        assert_vals(&labels.eq(3).unwrap(), &[1.0, 0.0, 1.0], "u32 eq");
    }
}

#[test]
fn display_prints_values_like_pytorch() {
    let c = cpu();
    let v = Tensor::from_slice(&[1.0f32, 2.5, -3.0], &[3], &c).unwrap();
    assert_eq!(v.to_string(), "tensor([ 1.0000,  2.5000, -3.0000], dtype=f32, device=cpu)");
    let s = Tensor::scalar(3.5, &c).unwrap();
    assert_eq!(s.to_string(), "tensor(3.5000, dtype=f32, device=cpu)");
    let m = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0], &[2, 2], &c).unwrap();
    assert_eq!(m.to_string(), "tensor([[1., 2.],\n        [3., 4.]], dtype=f64, device=cpu)");
    let cube = Tensor::arange(0.0, 8.0, &c).unwrap().reshape(&[2, 2, 2]).unwrap();
    assert_eq!(
        cube.to_string(),
        "tensor([[[0., 1.],\n         [2., 3.]],\n\n        [[4., 5.],\n         [6., 7.]]], dtype=f32, device=cpu)"
    );
    let tiny = Tensor::from_slice(&[1e-6f64, 1.0], &[2], &c).unwrap();
    assert_eq!(tiny.to_string(), "tensor([1.0000e-06, 1.0000e+00], dtype=f64, device=cpu)");
    let labels = Tensor::from_slice(&[7u32, 10], &[2], &c).unwrap();
    assert_eq!(labels.to_string(), "tensor([ 7, 10], dtype=u32, device=cpu)");
    let special = Tensor::from_slice(&[f32::NAN, f32::NEG_INFINITY, 0.5], &[3], &c).unwrap();
    assert_eq!(special.to_string(), "tensor([   nan,   -inf, 0.5000], dtype=f32, device=cpu)");
    // a large tensor: the middle of each dim is elided
    let big = Tensor::arange(0.0, 2000.0, &c).unwrap();
    assert_eq!(big.to_string(), "tensor([   0.,    1.,    2., ..., 1997., 1998., 1999.], dtype=f32, device=cpu)");
    let big2 = Tensor::arange(0.0, 1200.0, &c).unwrap().reshape(&[40, 30]).unwrap();
    let text = big2.to_string();
    assert!(text.starts_with("tensor([[   0.,    1.,    2., ...,   27.,   28.,   29.],\n"), "{text}");
    assert!(text.contains("\n        ...,\n"), "{text}");
    assert!(text.ends_with("[1170., 1171., 1172., ..., 1197., 1198., 1199.]], dtype=f32, device=cpu)"), "{text}");
    with_gpu!(g);
    let on_gpu = Tensor::from_slice(&[1.0f32, 2.5, -3.0], &[3], &g).unwrap();
    assert_eq!(on_gpu.to_string(), format!("tensor([ 1.0000,  2.5000, -3.0000], dtype=f32, device={g})"));
}

#[test]
fn values_read_back_in_any_float_type() {
    for dev in devices() {
        let x = Tensor::from_slice(&[0.5f32, -1.25, 3.0, 4.0, 5.0, 6.0], &[2, 3], &dev).unwrap();
        assert_eq!(x.to_vec::<f64>().unwrap(), vec![0.5, -1.25, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(x.to_vec2::<f32>().unwrap(), vec![vec![0.5, -1.25, 3.0], vec![4.0, 5.0, 6.0]]);
        assert_eq!(
            x.reshape(&[3, 1, 2]).unwrap().to_vec3::<f64>().unwrap(),
            vec![vec![vec![0.5, -1.25]], vec![vec![3.0, 4.0]], vec![vec![5.0, 6.0]]]
        );
        let one = x.sum_all().unwrap();
        assert_eq!(one.item().unwrap(), 17.25);
        assert_eq!(one.to_scalar::<f64>().unwrap(), 17.25);
        let half = x.to_dtype(DType::F16).unwrap();
        assert_eq!(half.to_vec::<f32>().unwrap(), vec![0.5, -1.25, 3.0, 4.0, 5.0, 6.0]);
        let labels = Tensor::from_slice(&[2u32, 9], &[2], &dev).unwrap();
        assert_eq!(labels.to_vec::<f32>().unwrap(), vec![2.0, 9.0]);
        assert_eq!(labels.narrow(0, 1, 1).unwrap().item().unwrap(), 9.0);
        // what cannot convert, or is not one element, is an error naming the call
        assert!(matches!(x.to_vec::<u32>(), Err(Error::DTypeMismatch { op: "to_vec", .. })));
        assert!(matches!(x.item(), Err(Error::NotScalar { op: "item", .. })));
        assert!(matches!(x.to_scalar::<f32>(), Err(Error::NotScalar { op: "to_scalar", .. })));
        assert!(matches!(x.to_vec3::<f32>(), Err(Error::ShapeMismatch { op: "to_vec3", .. })));
    }
}

#[test]
fn default_constructors_make_f32() {
    for dev in devices() {
        let made = [
            ("scalar", Tensor::scalar(0.0, &dev).unwrap()),
            ("full", Tensor::full(2.0, &[2, 2], &dev).unwrap()),
            ("arange", Tensor::arange(0.0, 5.0, &dev).unwrap()),
            ("arange_step", Tensor::arange_step(1.0, 2.0, 0.25, &dev).unwrap()),
            ("linspace", Tensor::linspace(0.0, 1.0, 5, &dev).unwrap()),
            ("rand", Tensor::rand(&[3], 0.0, 1.0, 0, &dev).unwrap()),
            ("randn", Tensor::randn(&[3], 0, &dev).unwrap()),
        ];
        for (name, t) in &made {
            assert_eq!(t.dtype(), DType::F32, "{name} on {dev}");
            assert_eq!(t.device(), &dev, "{name}");
        }
        assert_eq!(made[2].1.to_vec::<f32>().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(made[3].1.to_vec::<f32>().unwrap(), vec![1.0, 1.25, 1.5, 1.75]);
        assert_eq!(made[4].1.to_vec::<f32>().unwrap(), vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        // a scalar made from a plain number works against f32 tensors on every device
        let x = Tensor::ones(&[2], DType::F32, &dev).unwrap();
        assert_vals(&x.add(Tensor::scalar(0.5, &dev).unwrap()).unwrap(), &[1.5, 1.5], "x + scalar");
        assert_eq!(Tensor::scalar(3u32, &dev).unwrap().dtype(), DType::U32);
        assert_eq!(
            Tensor::arange_dtype(0.0, 3.0, 1.0, DType::U32, &dev).unwrap().to_vec::<u32>().unwrap(),
            vec![0, 1, 2]
        );
    }
    // f64 is one explicit dtype away
    let c = cpu();
    assert_eq!(Tensor::full_dtype(0.0, &[], DType::F64, &c).unwrap().dtype(), DType::F64);
    assert_eq!(Tensor::randn_dtype(&[2], 0, DType::F64, &c).unwrap().dtype(), DType::F64);
    assert_eq!(Tensor::linspace_dtype(0.0, 1.0, 3, DType::F64, &c).unwrap().dtype(), DType::F64);
}

#[test]
fn errors_name_the_call() {
    for dev in devices() {
        let labels = Tensor::from_slice(&[1u32, 2], &[2], &dev).unwrap();
        let x = Tensor::ones(&[2, 3], DType::F32, &dev).unwrap();
        let y = Tensor::ones(&[4], DType::F32, &dev).unwrap();
        assert!(matches!(labels.exp(), Err(Error::UnsupportedDType { op: "exp", .. })), "{:?}", labels.exp());
        assert!(matches!(x.gt(&y), Err(Error::Broadcast { op: "gt", .. })));
        assert!(matches!(x.mul(&y), Err(Error::Broadcast { op: "mul", .. })));
        assert!(matches!(x.maximum(&y), Err(Error::Broadcast { op: "maximum", .. })));
        let msg = x.sub(&y).unwrap_err().to_string();
        assert!(msg.starts_with("sub:") && msg.contains("[2, 3]") && msg.contains("[4]"), "{msg}");
    }
}

/// x^3 + s x, with its first and second derivatives as kernels (WGSL and CPU alike).
fn cubic() -> ElementwiseKernel {
    ElementwiseKernel::new("cubic", "return x * x * x + s * x;", |x, s| x * x * x + s * x)
        .unwrap()
        .with_derivative("return 3.0 * x * x + s;", |x, s| 3.0 * x * x + s)
        .with_derivative("return 6.0 * x;", |x, _| 6.0 * x)
}

#[test]
fn a_kernel_with_derivatives_has_grad_jvp_vmap_and_hessian() {
    let k = cubic();
    let s = 0.5;
    let xs = [0.3, -1.2, 2.0];
    for dev in devices() {
        let x = Tensor::from_slice(&xs.map(|v| v as f32), &[3], &dev).unwrap();
        let f = |x: &Tensor| x.map_kernel(&k, s)?.sum_all();
        // grad: 3x^2 + s
        assert_vals(&grad(f, &x).unwrap(), &xs.map(|v| 3.0 * v * v + s), "grad");
        // jvp: (3x^2 + s) t
        let t = Tensor::from_slice(&[1.0f32, 2.0, -1.0], &[3], &dev).unwrap();
        let (y, jt) = jvp(|x| x.map_kernel(&k, s), &x, &t).unwrap();
        assert_vals(&y, &xs.map(|v| v * v * v + s * v), "value");
        assert_vals(&jt, &[(3.0 * 0.09 + s), 2.0 * (3.0 * 1.44 + s), -(3.0 * 4.0 + s)], "jvp");
        // hessian: diag(6x)
        let h = hessian(f, &x).unwrap();
        assert_vals(&h, &[1.8, 0.0, 0.0, 0.0, -7.2, 0.0, 0.0, 0.0, 12.0], "hessian");
        // vmap of grad: per-row gradients
        let rows = Tensor::from_slice(&[0.3f32, -1.2, 2.0, 1.0, 0.0, -0.5], &[2, 3], &dev).unwrap();
        let per_row = vmap(|r| grad(f, r), &rows, 0, 0).unwrap();
        assert_vals(&per_row, &[0.3f64, -1.2, 2.0, 1.0, 0.0, -0.5].map(|v| 3.0 * v * v + s), "vmap(grad)");
        // against finite differences, to second order, on the device's own kernels
        check_grads(|x| x.map_kernel(&k, s), &x, 2).unwrap();
        // a layer of Sequential
        let model = Sequential::new().push(k.clone()).push(Activation::Tanh);
        let out = model.forward(&Ctx::eval(&[]), &x).unwrap();
        assert_vals(&out, &xs.map(|v| (v * v * v).tanh()), "Module");
    }
}

#[test]
fn a_kernel_without_a_derivative_says_how_to_give_it_one() {
    let k = ElementwiseKernel::new("plain_square", "return x * x;", |x, _| x * x).unwrap();
    for dev in devices() {
        let x = Tensor::from_slice(&[1.0f32, 2.0], &[2], &dev).unwrap();
        let e = grad(|x| x.map_kernel(&k, 0.0)?.sum_all(), &x).unwrap_err();
        assert!(matches!(&e, Error::MissingRule { transform: "grad (reverse mode)", .. }), "{e}");
        assert!(e.to_string().contains("with_derivative"), "{e}");
        let e = jvp(|x| x.map_kernel(&k, 0.0), &x, &x).unwrap_err();
        assert!(matches!(&e, Error::MissingRule { transform: "jvp (forward mode)", .. }), "{e}");
        // only the second order is missing when one derivative is given
        let once = k.clone().with_derivative("return 2.0 * x;", |x, _| 2.0 * x);
        let e = hessian(|x| x.map_kernel(&once, 0.0)?.sum_all(), &x).unwrap_err();
        assert!(matches!(&e, Error::MissingRule { op, .. } if op == "plain_square'"), "{e}");
        assert_vals(&x.map_kernel(&k, 0.0).unwrap(), &[1.0, 4.0], "still usable");
    }
}

#[test]
fn check_grads_catches_a_wrong_derivative_kernel_on_the_gpu() {
    // The WGSL derivative is wrong (2x instead of 3x^2); the CPU closure is right. The
    // default check runs what the user runs: it passes on the CPU and fails on the GPU.
    let k = ElementwiseKernel::new("cube_bad_wgsl", "return x * x * x;", |x, _| x * x * x)
        .unwrap()
        .with_derivative("return 2.0 * x;", |x, _| 3.0 * x * x);
    let x = Tensor::from_slice(&[0.7f32, -1.1, 1.6], &[3], &cpu()).unwrap();
    check_grads(|x| x.map_kernel(&k, 0.0), &x, 1).unwrap();
    with_gpu!(g);
    let x = x.to_device(&g).unwrap();
    let e = check_grads(|x| x.map_kernel(&k, 0.0), &x, 1).unwrap_err();
    assert!(matches!(e, Error::GradCheck { order: 1, .. }), "{e}");
    // the reference mode checks the CPU closures instead
    check_grads_with(|x| x.map_kernel(&k, 0.0), &x, 1, CheckOptions::cpu_f64()).unwrap();
}

#[test]
fn the_reference_mode_explains_captured_tensors() {
    let c = cpu();
    let w = Tensor::from_slice(&[1.0f32, 2.0], &[2], &c).unwrap();
    let x = Tensor::from_slice(&[0.5f32, 0.25], &[2], &c).unwrap();
    let f = |x: &Tensor| x.mul(&w)?.sin();
    check_grads(f, &x, 2).unwrap();
    let e = check_grads_with(f, &x, 1, CheckOptions::cpu_f64()).unwrap_err();
    assert!(matches!(&e, Error::Invalid { op: "check_grads", .. }), "{e}");
    assert!(e.to_string().contains("captures tensors"), "{e}");
}

struct Cube;
impl CustomOp for Cube {
    fn name(&self) -> &str {
        "cube"
    }
    fn vjp(&self, x: &[Tensor], _y: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&x[0].square()?.mul(3.0)?)?)])
    }
}

#[test]
fn custom_ops_loop_under_vmap_with_the_forward_they_were_given() {
    for dev in devices() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, -1.0, 0.5], &[2, 2], &dev).unwrap();
        let cube = |x: &Tensor| custom_op(Arc::new(Cube), &[x], |xs: &[Tensor]| xs[0].pow(3.0));
        let before = vmap_fallback_loops();
        let y = vmap(cube, &x, 0, 0).unwrap();
        assert_eq!(vmap_fallback_loops(), before + 1);
        assert_vals(&y, &[1.0, 8.0, -1.0, 0.125], "vmap(custom op)");
        let g = vmap(|r| grad(|r| cube(r)?.sum_all(), r), &x, 0, 0).unwrap();
        assert_vals(&g, &[3.0, 12.0, 3.0, 0.75], "vmap(grad(custom op))");
    }
}

/// A custom op's primitive takes its shape from the forward `custom_op` ran: binding it by
/// itself (as a replay of a recorded node would) is an error naming custom_op, not a panic.
#[test]
fn a_custom_ops_primitive_bound_alone_is_an_error() {
    let x = Tensor::from_slice(&[1.0f64, 2.0], &[2], &cpu()).unwrap();
    let seen = std::cell::RefCell::new(None);
    grad(
        |x| {
            let y = custom_op(Arc::new(Cube), &[x], |xs: &[Tensor]| xs[0].pow(3.0))?;
            let node = y.node().expect("recorded under grad");
            *seen.borrow_mut() = Some(wgrad::bind(node.op.clone(), &[&x.detach()]).unwrap_err());
            y.sum_all()
        },
        &x,
    )
    .unwrap();
    let err = seen.into_inner().unwrap();
    assert!(matches!(err, Error::Invalid { op: "custom_op", .. }), "{err}");
    assert!(err.to_string().contains("cube"), "{err}");
}

#[test]
fn boxed_modules_and_several_vmap_outputs() {
    let c = cpu();
    let layers: Vec<Box<dyn Module>> = vec![Box::new(Activation::Relu), Box::new(Activation::Tanh)];
    let mut model = Sequential::new();
    for l in layers {
        model = model.push(l);
    }
    let x = Tensor::from_slice(&[-1.0f32, 0.5], &[2], &c).unwrap();
    assert_vals(&model.forward(&Ctx::eval(&[]), &x).unwrap(), &[0.0, 0.5f64.tanh()], "boxed layers");
    for dev in devices() {
        // per-example gradients of a weight and a bias in one vmap
        let w = Tensor::from_slice(&[0.5f32, -1.0], &[2], &dev).unwrap();
        let b = Tensor::scalar(0.25f32, &dev).unwrap();
        let xs = Tensor::from_slice(&[1.0f32, 2.0, 3.0, -1.0, 0.0, 4.0], &[3, 2], &dev).unwrap();
        let per_example = |a: &[Tensor]| -> Result<Vec<Tensor>> {
            let loss = |p: &[Tensor]| p[0].mul(&a[2])?.sum_all()?.add(&p[1])?.square();
            Ok(value_and_grad_many(loss, &[a[0].clone(), a[1].clone()])?.1)
        };
        let grads: Vec<Tensor> =
            vmap_many(per_example, &[w.clone(), b.clone(), xs.clone()], &[None, None, Some(0)], 0).unwrap();
        assert_eq!((grads[0].shape(), grads[1].shape()), (&[3, 2][..], &[3][..]));
        // d/dw (w.x + b)^2 = 2 (w.x + b) x, d/db = 2 (w.x + b)
        let rows = [[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]];
        let r: Vec<f64> = rows.iter().map(|x| 2.0 * (0.5 * x[0] - x[1] + 0.25)).collect();
        assert_vals(&grads[1], &r, "bias grads");
        let want_w: Vec<f64> = rows.iter().zip(&r).flat_map(|(x, r)| [r * x[0], r * x[1]]).collect();
        assert_vals(&grads[0], &want_w, "weight grads");
    }
}

#[test]
fn a_jacobian_of_two_outputs_needs_no_concatenation() {
    let dev = Device::cpu();
    let x = Tensor::from_slice(&[1.0f64, 2.0, 3.0], &[3], &dev).unwrap();
    let (sq, sn): (Tensor, Tensor) = vmap(|v| Ok((v.square()?, v.sin()?)), &x, 0, 0).unwrap();
    assert_vals(&sq, &[1.0, 4.0, 9.0], "first output");
    assert_vals(&sn, &[1f64.sin(), 2f64.sin(), 3f64.sin()], "second output");
}
