//! Every primitive's VJP: check_grads at orders 1 and 2 in f64 on the CPU over a matrix of
//! shapes (binary ops exercise unbroadcast), then the GPU f32 gradient against the CPU one.
use crate::common::*;
use wgrad::kernels::{BinaryOp, UnaryOp};
use wgrad::{check_grads, grad, DType, Device, Result, Tensor};

const SHAPES: &[&[usize]] = &[&[], &[3], &[2, 3], &[1, 3], &[2, 1]];

fn input(shape: &[usize], lo: f64, hi: f64, dev: &Device, dtype: DType) -> Tensor {
    let v = rand_vec(shape.iter().product(), lo, hi);
    let t = Tensor::from_slice(&v, shape, &cpu()).unwrap();
    t.to_dtype(dtype).unwrap().to_device(dev).unwrap()
}

fn unary_domain(op: UnaryOp) -> (f64, f64) {
    match op {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::PowScalar | UnaryOp::Recip => (0.5, 2.0),
        UnaryOp::Log1p => (-0.5, 2.0),
        UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Sign => (0.2, 1.5), // away from the kink (sign is flipped below)
        _ => (-1.5, 1.5),
    }
}

/// Away-from-kink inputs with both signs for abs/relu.
fn signed(op: UnaryOp, x: &Tensor) -> Tensor {
    if matches!(op, UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Sign) && x.numel() > 1 {
        let n = x.numel();
        let signs: Vec<f64> = (0..n).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }).collect();
        let s = Tensor::from_slice(&signs, x.shape(), &cpu())
            .unwrap()
            .to_dtype(x.dtype())
            .unwrap()
            .to_device(x.device())
            .unwrap();
        return x.mul(&s).unwrap();
    }
    x.clone()
}

/// Gradient of <f(x), w> for a fixed random w, on `dev` in `dtype`, as f64 on the CPU.
fn projected_grad(f: &dyn Fn(&Tensor) -> Result<Tensor>, x64: &Tensor, dev: &Device, dtype: DType) -> Tensor {
    let x = x64.to_dtype(dtype).unwrap().to_device(dev).unwrap();
    let y = f(&x).unwrap();
    let w = Tensor::randn_dtype(y.shape(), 99, dtype, dev).unwrap();
    let g = grad(|x| f(x)?.mul(&w)?.sum_all(), &x).unwrap();
    g.to_device(&cpu()).unwrap().to_dtype(DType::F64).unwrap()
}

fn gpu_matches_cpu(f: &dyn Fn(&Tensor) -> Result<Tensor>, x64: &Tensor, g: &Device, what: &str) {
    let x32 = rounded(x64);
    let want = projected_grad(f, &x32, &cpu(), DType::F64);
    let got = projected_grad(f, &x32, g, DType::F32);
    assert_close(&got, &want, 2e-4, 2e-5, &format!("GPU gradient of {what}"));
}

#[test]
fn every_unary_vjp_passes_check_grads_to_order_2_and_matches_on_the_gpu() {
    let unary = |op: UnaryOp| {
        let s = match op {
            UnaryOp::PowScalar => 2.5,
            UnaryOp::RPowScalar => 1.7,
            _ => 0.7,
        };
        move |x: &Tensor| x.unary(op, s)
    };
    for &op in UnaryOp::ALL {
        for &shape in SHAPES {
            let (lo, hi) = unary_domain(op);
            let x = signed(op, &input(shape, lo, hi, &cpu(), DType::F64));
            check_grads(unary(op), &x, 2).unwrap_or_else(|e| panic!("{op:?} {shape:?}: {e}"));
        }
    }
    with_gpu!(g);
    for &op in UnaryOp::ALL {
        let f = unary(op);
        let (lo, hi) = unary_domain(op);
        let x = signed(op, &input(&[2, 3], lo, hi, &cpu(), DType::F64));
        gpu_matches_cpu(&f, &x, &g, &format!("{op:?}"));
    }
}

#[test]
fn every_binary_vjp_unbroadcasts_and_passes_check_grads_to_order_2() {
    // both operands packed in one vector, so mixed second derivatives are checked too
    let packed = |op: BinaryOp, sa: &'static [usize], sb: &'static [usize]| {
        let (na, nb) = (sa.iter().product::<usize>(), sb.iter().product::<usize>());
        let f = move |x: &Tensor| -> Result<Tensor> {
            let a = x.narrow(0, 0, na)?.reshape(sa)?;
            let b = x.narrow(0, na, nb)?.reshape(sb)?;
            a.binary(op, &b)
        };
        let (lo, hi) = if op == BinaryOp::Pow { (0.5, 2.0) } else { (-2.0, 2.0) };
        (f, input(&[na + nb], lo, hi, &cpu(), DType::F64))
    };
    for &op in BinaryOp::ALL {
        for &sa in SHAPES {
            for &sb in SHAPES {
                let (f, x) = packed(op, sa, sb);
                check_grads(f, &x, 2).unwrap_or_else(|e| panic!("{op:?} {sa:?} {sb:?}: {e}"));
            }
        }
    }
    with_gpu!(g);
    for &op in BinaryOp::ALL {
        let (f, x) = packed(op, &[2, 1], &[1, 3]);
        gpu_matches_cpu(&f, &x, &g, &format!("{op:?}"));
    }
}

pub(crate) type Case = (&'static str, Box<dyn Fn(&Tensor) -> Result<Tensor>>, Vec<usize>);

pub(crate) fn structural_cases(dev: &Device) -> Vec<Case> {
    let dev = dev.clone();
    let d2 = dev.clone();
    let d3 = dev.clone();
    let d4 = dev.clone();
    vec![
        ("sum axis 1", Box::new(|x: &Tensor| x.sum(&[1], false)), vec![2, 3]),
        ("sum keepdim", Box::new(|x: &Tensor| x.sum(&[0], true)), vec![2, 3]),
        ("sum_all", Box::new(|x: &Tensor| x.sum_all()), vec![2, 3]),
        ("mean", Box::new(|x: &Tensor| x.mean(&[0, 2], false)), vec![2, 3, 2]),
        ("max", Box::new(|x: &Tensor| x.max(&[1], false)), vec![3, 4]),
        ("min keepdim", Box::new(|x: &Tensor| x.min(&[0], true)), vec![3, 4]),
        ("logsumexp", Box::new(|x: &Tensor| x.logsumexp(&[1], false)), vec![2, 3]),
        ("softmax", Box::new(|x: &Tensor| x.softmax(1)), vec![2, 3]),
        ("log_softmax", Box::new(|x: &Tensor| x.log_softmax(0)), vec![2, 3]),
        ("matmul", Box::new(|x: &Tensor| x.matmul(&x.t()?)), vec![2, 3]),
        (
            "matmul batch broadcast",
            Box::new(|x: &Tensor| x.reshape(&[2, 2, 3])?.matmul(&x.narrow(0, 0, 3)?.reshape(&[3, 1])?)),
            vec![12],
        ),
        ("matmul vectors", Box::new(|x: &Tensor| x.matmul(&x.exp()?)), vec![4]),
        ("reshape", Box::new(|x: &Tensor| x.reshape(&[3, 2])?.exp()), vec![2, 3]),
        ("permute", Box::new(|x: &Tensor| x.permute(&[2, 0, 1])?.sin()), vec![2, 3, 2]),
        ("transpose", Box::new(|x: &Tensor| x.t()?.mul(&x.t()?.exp()?)), vec![2, 3]),
        (
            "broadcast_to",
            Box::new(|x: &Tensor| x.broadcast_to(&[4, 2, 3])?.mul(&x.broadcast_to(&[4, 2, 3])?)),
            vec![1, 3],
        ),
        ("narrow", Box::new(|x: &Tensor| x.narrow(1, 1, 2)?.exp()), vec![2, 4]),
        ("contiguous", Box::new(|x: &Tensor| x.t()?.contiguous()?.square()), vec![2, 3]),
        ("cat", Box::new(|x: &Tensor| Tensor::cat(&[x.exp()?, x.clone(), x.square()?], 1)), vec![2, 3]),
        ("stack", Box::new(|x: &Tensor| Tensor::stack(&[x.sin()?, x.clone()], 0)), vec![2, 3]),
        ("squeeze/unsqueeze", Box::new(|x: &Tensor| x.unsqueeze(0)?.square()?.squeeze(0)), vec![3]),
        ("where", Box::new(move |x: &Tensor| x.gt(&x.zeros_like()?)?.where_(&x.square()?, &x.exp()?)), vec![2, 3]),
        (
            "index_select",
            Box::new(move |x: &Tensor| x.index_select(1, &Tensor::from_slice(&[2u32, 0, 2, 1], &[4], &dev)?)?.square()),
            vec![2, 3],
        ),
        (
            "gather",
            Box::new(move |x: &Tensor| x.gather(1, &Tensor::from_slice(&[2u32, 2, 0, 1], &[2, 2], &d2)?)?.exp()),
            vec![2, 3],
        ),
        (
            "maximum with a scalar (no ties: max_ties_split_the_gradient_evenly has them)",
            Box::new(move |x: &Tensor| x.maximum(&Tensor::zeros(&[], x.dtype(), &d3)?)?.square()),
            vec![2, 3],
        ),
        (
            "clamp",
            Box::new(move |x: &Tensor| {
                let _ = &d4;
                x.clamp(-0.5, 0.5)?.sin()
            }),
            vec![2, 3],
        ),
    ]
}

#[test]
fn reductions_matmul_movement_index_and_where_pass_check_grads_to_order_2() {
    for (name, f, shape) in structural_cases(&cpu()) {
        let x = input(&shape, -1.5, 1.5, &cpu(), DType::F64);
        check_grads(&f, &x, 2).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    with_gpu!(g);
    let gpu_cases = structural_cases(&g);
    let cpu_cases = structural_cases(&cpu());
    for ((name, fg, shape), (_, fc, _)) in gpu_cases.into_iter().zip(cpu_cases) {
        let x = rounded(&input(&shape, -1.5, 1.5, &cpu(), DType::F64));
        let want = projected_grad(&fc, &x, &cpu(), DType::F64);
        let got = projected_grad(&fg, &x, &g, DType::F32);
        assert_close(&got, &want, 2e-4, 2e-5, &format!("GPU gradient of {name}"));
    }
}

#[test]
fn piecewise_constant_ops_have_zero_gradient() {
    // d/dx of x * argmax-selected mask: comparisons and argmax contribute nothing
    let x = Tensor::from_slice(&[1.0f64, 3.0, 2.0], &[3], &cpu()).unwrap();
    let g = grad(|x| x.gt(&x.ones_like()?)?.mul_scalar(5.0)?.add(&x.sign()?)?.sum_all(), &x).unwrap();
    assert_eq!(g.to_vec::<f64>().unwrap(), vec![0.0, 0.0, 0.0]);
    let g = grad(|x| x.gather(0, &x.argmax(0, true)?), &x).unwrap();
    assert_eq!(g.to_vec::<f64>().unwrap(), vec![0.0, 1.0, 0.0]);
}

#[test]
fn max_ties_split_the_gradient_evenly() {
    for dev in devices() {
        let dtype = if dev.is_gpu() { DType::F32 } else { DType::F64 };
        let t = |v: &[f64]| {
            Tensor::from_slice(v, &[v.len()], &cpu()).unwrap().to_dtype(dtype).unwrap().to_device(&dev).unwrap()
        };
        // max(1, 3, 3) = 3; the gradient is shared by the two maxima
        let x = t(&[1.0, 3.0, 3.0]);
        let g = grad(|x| x.max_all(), &x).unwrap();
        assert_eq!(g.to_f64_vec().unwrap(), vec![0.0, 0.5, 0.5], "max on {dev}");
        // maximum(x, y) at x = y splits: d/dx = d/dy = 1/2, in both operands' gradients
        let y = t(&[2.0, 3.0, 0.0]);
        let g = grad(|x| x.maximum(&y)?.sum_all(), &x).unwrap();
        assert_eq!(g.to_f64_vec().unwrap(), vec![0.0, 0.5, 1.0], "maximum wrt x on {dev}");
        let g = grad(|y| x.maximum(y)?.sum_all(), &y).unwrap();
        assert_eq!(g.to_f64_vec().unwrap(), vec![1.0, 0.5, 0.0], "maximum wrt y on {dev}");
        // against a scalar zero that x touches, and minimum likewise
        let z = t(&[-1.0, 0.0, 2.0]);
        let zero = Tensor::zeros(&[], dtype, &dev).unwrap();
        let g = grad(|z| z.maximum(&zero)?.sum_all(), &z).unwrap();
        assert_eq!(g.to_f64_vec().unwrap(), vec![0.0, 0.5, 1.0], "maximum with a scalar on {dev}");
        let g = grad(|x| x.minimum(&y)?.sum_all(), &x).unwrap();
        assert_eq!(g.to_f64_vec().unwrap(), vec![1.0, 0.5, 0.0], "minimum on {dev}");
    }
}

#[test]
fn conversions_carry_gradients_across_dtypes_and_devices() {
    let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0], &[3], &cpu()).unwrap();
    let g = grad(|x| x.to_dtype(DType::F64)?.square()?.sum_all()?.to_dtype(DType::F32), &x).unwrap();
    assert_eq!(g.dtype(), DType::F32);
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![1.0, -2.0, 4.0]);
    with_gpu!(gd);
    // d/dx sum(exp(x)) computed on the GPU, the gradient comes back to the CPU
    let g = grad(|x| x.to_device(&gd)?.exp()?.sum_all()?.to_device(&cpu()), &x).unwrap();
    assert_eq!(g.device(), &cpu());
    assert_close(&g, &x.exp().unwrap(), 2e-6, 0.0, "grad through to_device");
}

#[test]
fn fused_softmax_and_its_vjp_match_the_composite_to_third_order() {
    // softmax over the last axis is one op whose VJP is the fused softmax_vjp op, whose VJP
    // is written with itself: check derivatives to order 3 by finite differences (CPU, f64)
    let x = input(&[3, 5], -2.0, 2.0, &cpu(), DType::F64);
    let w = input(&[3, 5], -1.0, 1.0, &cpu(), DType::F64);
    check_grads(|x| x.softmax(-1)?.mul(&w)?.sum_all(), &x, 3).unwrap();
    // softmax_vjp with a tracked scale: all three inputs packed in one vector
    let packed = input(&[31], -1.5, 1.5, &cpu(), DType::F64);
    let f = |p: &Tensor| -> Result<Tensor> {
        let (z, v, g) =
            (p.narrow(0, 0, 15)?.reshape(&[3, 5])?, p.narrow(0, 15, 15)?.reshape(&[3, 5])?, p.narrow(0, 30, 1)?);
        z.softmax_vjp(&v, Some(&g), 0.5)?.square()?.sum_all()
    };
    check_grads(f, &packed, 2).unwrap();
    // the GPU kernel against the composite s * (v - sum(s v)) * k * g, and its gradients
    with_gpu!(g);
    let (z, v) = (input(&[37, 11], -3.0, 3.0, &cpu(), DType::F64), input(&[37, 11], -1.0, 1.0, &cpu(), DType::F64));
    let s = z.softmax(-1).unwrap();
    let sv = s.mul(&v).unwrap();
    let want = sv.sub(s.mul(sv.sum(&[-1], true).unwrap()).unwrap()).unwrap().mul_scalar(0.25 * 3.0).unwrap();
    let dev = |t: &Tensor| rounded(t).to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
    let scale = Tensor::from_slice(&[3.0f32], &[1], &g).unwrap();
    let got = dev(&z).softmax_vjp(&dev(&v), Some(&scale), 0.25).unwrap();
    assert_close(&got, &want, 1e-5, 1e-6, "softmax_vjp on the GPU");
    gpu_matches_cpu(&|x: &Tensor| x.softmax(-1)?.square()?.sum_all(), &z, &g, "softmax (through softmax_vjp)");
}
