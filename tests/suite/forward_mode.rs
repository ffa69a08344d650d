//! Forward mode: every primitive's JVP rule against its VJP (the transpose identity
//! <u, J t> = <J^T u, t>), against central differences at first and second order (jvp of
//! jvp, jvp of grad), the GPU against the CPU, user primitives with and without a JVP of
//! their own, nested levels (perturbation confusion), and agreement between transforms.
use crate::common::*;
use std::sync::Arc;
use wgrad::kernels::{BinaryOp, UnaryOp};
use wgrad::{
    custom_op, grad, hessian, hvp, jacfwd, jacrev, jvp, vjp, ConvGeometry, CustomOp, DType, Device, Error, Result,
    Tensor,
};

type F = Box<dyn Fn(&Tensor) -> Result<Tensor>>;

fn vec64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &cpu()).unwrap()
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.mul(b).unwrap().sum_all().unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn close(a: f64, b: f64, atol: f64, rtol: f64) -> bool {
    (a - b).abs() <= atol + rtol * b.abs().max(a.abs())
}

/// Central difference of `f` at x along t, in f64.
fn fd(f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor, t: &Tensor) -> Tensor {
    let eps = 1e-6;
    let step = t.mul_scalar(eps).unwrap();
    let fp = f(&x.add(&step).unwrap()).unwrap();
    let fm = f(&x.sub(&step).unwrap()).unwrap();
    fp.sub(&fm).unwrap().mul_scalar(0.5 / eps).unwrap()
}

fn assert_all_close(got: &Tensor, want: &Tensor, what: &str) {
    // TESTING.md: f64 derivatives against central differences, atol 1e-5, rtol 1e-3
    assert_close(got, want, 1e-3, 1e-5, what);
}

/// All forward-mode checks of one function at x (f64, CPU).
fn check_forward(name: &str, f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor) {
    let y = f(x).unwrap();
    let t = random(x.shape(), -1.0, 1.0);
    let u = random(y.shape(), -1.0, 1.0);
    // 1. transpose identity: both sides are exact, so they agree to rounding
    let (y_fwd, jt) = jvp(f, x, &t).unwrap_or_else(|e| panic!("{name}: jvp: {e}"));
    assert_close(&y_fwd, &y, 1e-12, 1e-12, &format!("{name}: jvp's primal"));
    let (_, jtu) = vjp(f, x, &u).unwrap();
    let (lhs, rhs) = (dot(&u, &jt), dot(&jtu, &t));
    assert!(close(lhs, rhs, 1e-10, 1e-9), "{name}: <u, J t> = {lhs} but <J^T u, t> = {rhs}");
    // 2. first order against central differences
    assert_all_close(&jt, &fd(f, x, &t), &format!("{name}: jvp vs finite differences"));
    // 3. jvp of jvp: the second directional derivative along (t, t2)
    let t2 = random(x.shape(), -1.0, 1.0);
    let jvp_along_t = |x: &Tensor| Ok(jvp(f, x, &t)?.1);
    let (_, jj) = jvp(jvp_along_t, x, &t2).unwrap_or_else(|e| panic!("{name}: jvp of jvp: {e}"));
    assert_all_close(&jj, &fd(&jvp_along_t, x, &t2), &format!("{name}: jvp of jvp vs finite differences"));
    // 4. jvp of grad: forward-over-reverse, the Hessian of <f, u> times t2
    let grad_of_projection = |x: &Tensor| grad(|x| f(x)?.mul(&u)?.sum_all(), x);
    let (_, hv) = jvp(grad_of_projection, x, &t2).unwrap_or_else(|e| panic!("{name}: jvp of grad: {e}"));
    assert_all_close(&hv, &fd(&grad_of_projection, x, &t2), &format!("{name}: jvp of grad vs finite differences"));
    // 5. grad of jvp: reverse-over-forward, d/dx <J(x) t, u>
    let (_, gj) = vjp(jvp_along_t, x, &u).unwrap_or_else(|e| panic!("{name}: grad of jvp: {e}"));
    let (lhs, rhs) = (dot(&gj, &t2), dot(&fd(&jvp_along_t, x, &t2), &u));
    assert!(close(lhs, rhs, 1e-5, 1e-3), "{name}: grad of jvp: {lhs} vs finite differences {rhs}");
}

/// Away from kinks: |x| in [0.3, 1.5] with alternating signs.
fn signed_away_from_zero(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> =
        rand_vec(n, 0.3, 1.5).into_iter().enumerate().map(|(i, x)| if i % 2 == 0 { x } else { -x }).collect();
    vec64(&v, shape)
}

/// Inputs inside each unary op's domain, away from its kinks.
fn unary_input(op: UnaryOp, shape: &[usize]) -> Tensor {
    match op {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::PowScalar | UnaryOp::Recip => random(shape, 0.5, 2.0),
        UnaryOp::Log1p => random(shape, -0.5, 2.0),
        UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Sign => signed_away_from_zero(shape),
        _ => random(shape, -1.5, 1.5),
    }
}

#[test]
fn every_unary_jvp_is_the_transpose_of_its_vjp_and_matches_finite_differences() {
    for &op in UnaryOp::ALL {
        let s = match op {
            UnaryOp::PowScalar => 2.5,
            UnaryOp::RPowScalar => 1.7,
            _ => 0.7,
        };
        let f = move |x: &Tensor| x.unary(op, s);
        for shape in [&[][..], &[3], &[2, 3]] {
            check_forward(&format!("{op:?} {shape:?}"), &f, &unary_input(op, shape));
        }
    }
}

#[test]
fn every_binary_jvp_over_all_broadcast_pairs() {
    const SHAPES: &[&[usize]] = &[&[], &[3], &[2, 3], &[1, 3], &[2, 1]];
    for &op in BinaryOp::ALL {
        for &sa in SHAPES {
            for &sb in SHAPES {
                let (na, nb) = (sa.iter().product::<usize>(), sb.iter().product::<usize>());
                // both operands packed in one vector: tangents on both, mixed terms included
                let f = move |x: &Tensor| -> Result<Tensor> {
                    x.narrow(0, 0, na)?.reshape(sa)?.binary(op, &x.narrow(0, na, nb)?.reshape(sb)?)
                };
                let x = if op == BinaryOp::Pow { random(&[na + nb], 0.5, 2.0) } else { random(&[na + nb], -2.0, 2.0) };
                check_forward(&format!("{op:?} {sa:?} {sb:?}"), &f, &x);
            }
        }
    }
}

/// Every other primitive (and the composites the notes use), each with an input shape.
/// Index operands live on `dev`; constants take the input's dtype and device.
pub(crate) fn structural_cases(dev: &Device) -> Vec<(&'static str, F, Vec<usize>)> {
    let idx = Tensor::from_slice(&[2u32, 0, 2, 1], &[4], dev).unwrap();
    let gidx = Tensor::from_slice(&[2u32, 2, 0, 1], &[2, 2], dev).unwrap();
    let labels = Tensor::from_slice(&[2u32, 0], &[2], dev).unwrap();
    let labels2 = labels.clone();
    let geom =
        ConvGeometry { batch: 1, channels: 2, height: 3, width: 3, kernel_h: 2, kernel_w: 2, stride: 1, padding: 1 };
    // A = x x^T + 3 I: symmetric positive definite for any x (Cholesky, logdet)
    let spd = |x: &Tensor| -> Result<Tensor> {
        let m = x.reshape(&[3, 3])?;
        m.matmul(&m.t()?)?.add(&Tensor::eye(3, x.dtype(), x.device())?.mul_scalar(3.0)?)
    };
    let well_conditioned = |x: &Tensor| -> Result<Tensor> {
        x.narrow(0, 0, 9)?.reshape(&[3, 3])?.add(&Tensor::eye(3, x.dtype(), x.device())?.mul_scalar(3.0)?)
    };
    vec![
        ("sum axis 1", Box::new(|x: &Tensor| x.sum(&[1], false)), vec![2, 3]),
        ("sum keepdim", Box::new(|x: &Tensor| x.sum(&[0, 2], true)), vec![2, 3, 2]),
        ("max", Box::new(|x: &Tensor| x.max(&[1], false)), vec![3, 4]),
        ("min keepdim", Box::new(|x: &Tensor| x.min(&[0], true)), vec![3, 4]),
        (
            "argmax is flat",
            Box::new(|x: &Tensor| x.argmax(1, false)?.to_dtype(x.dtype())?.add(&x.sum(&[1], false)?)),
            vec![2, 3],
        ),
        ("logsumexp", Box::new(|x: &Tensor| x.logsumexp(&[1], false)), vec![2, 3]),
        ("softmax last", Box::new(|x: &Tensor| x.softmax(1)), vec![2, 3]),
        ("softmax axis 0", Box::new(|x: &Tensor| x.softmax(0)), vec![3, 2]),
        ("log_softmax", Box::new(|x: &Tensor| x.log_softmax(0)), vec![2, 3]),
        ("log_softmax last", Box::new(|x: &Tensor| x.log_softmax(-1)), vec![2, 3]),
        (
            "softmax_vjp (z, v, g)",
            Box::new(|x: &Tensor| {
                let (z, v) = (x.narrow(0, 0, 6)?.reshape(&[2, 3])?, x.narrow(0, 6, 6)?.reshape(&[2, 3])?);
                z.softmax_vjp(&v, Some(&x.narrow(0, 12, 1)?), 0.5)
            }),
            vec![13],
        ),
        ("cross_entropy", Box::new(move |x: &Tensor| x.softmax_cross_entropy_mean(&labels)), vec![2, 3]),
        (
            "cross_entropy_grad (z, g)",
            Box::new(move |x: &Tensor| {
                x.narrow(0, 0, 6)?
                    .reshape(&[2, 3])?
                    .softmax_cross_entropy_grad(&labels2, &x.narrow(0, 6, 1)?.reshape(&[])?)
            }),
            vec![7],
        ),
        ("softplus", Box::new(|x: &Tensor| x.softplus()), vec![2, 3]),
        ("max_pool2d", Box::new(|x: &Tensor| x.max_pool2d(2)), vec![1, 2, 4, 4]),
        (
            "max_pool2d's VJP",
            Box::new(|x: &Tensor| grad(|x| x.max_pool2d(2)?.square()?.sum_all(), x)),
            vec![1, 1, 4, 4],
        ),
        ("matmul", Box::new(|x: &Tensor| x.matmul(&x.t()?)), vec![2, 3]),
        (
            "matmul batch broadcast",
            Box::new(|x: &Tensor| x.reshape(&[2, 2, 3])?.matmul(&x.narrow(0, 0, 3)?.reshape(&[3, 1])?)),
            vec![12],
        ),
        ("reshape", Box::new(|x: &Tensor| x.reshape(&[3, 2])?.exp()), vec![2, 3]),
        ("permute", Box::new(|x: &Tensor| x.permute(&[2, 0, 1])?.sin()), vec![2, 3, 2]),
        (
            "broadcast_to",
            Box::new(|x: &Tensor| x.broadcast_to(&[4, 2, 3])?.mul(&x.broadcast_to(&[4, 2, 3])?)),
            vec![1, 3],
        ),
        ("narrow", Box::new(|x: &Tensor| x.narrow(1, 1, 2)?.exp()), vec![2, 4]),
        ("contiguous", Box::new(|x: &Tensor| x.t()?.contiguous()?.square()), vec![2, 3]),
        ("cat", Box::new(|x: &Tensor| Tensor::cat(&[x.exp()?, x.clone(), x.square()?], 1)), vec![2, 3]),
        ("where", Box::new(|x: &Tensor| x.gt(&x.zeros_like()?)?.where_(&x.square()?, &x.exp()?)), vec![2, 3]),
        ("index_select", Box::new(move |x: &Tensor| x.index_select(1, &idx)?.square()), vec![2, 3]),
        ("gather", Box::new(move |x: &Tensor| x.gather(1, &gidx)?.exp()), vec![2, 3]),
        ("im2col", Box::new(|x: &Tensor| x.im2col((2, 2), 1, 1)), vec![1, 2, 3, 3]),
        ("col2im", Box::new(move |x: &Tensor| x.col2im(geom)), vec![8, 1, 16]),
        (
            "conv2d",
            Box::new(|x: &Tensor| {
                let img = x.narrow(0, 0, 18)?.reshape(&[1, 2, 3, 3])?;
                img.conv2d(&x.narrow(0, 18, 16)?.reshape(&[2, 2, 2, 2])?, None, 1, 0)
            }),
            vec![34],
        ),
        (
            "solve (A and B)",
            Box::new(move |x: &Tensor| well_conditioned(x)?.solve(&x.narrow(0, 9, 6)?.reshape(&[3, 2])?)),
            vec![15],
        ),
        ("inverse", Box::new(move |x: &Tensor| well_conditioned(x)?.inverse()), vec![9]),
        ("logdet", Box::new(move |x: &Tensor| spd(x)?.logdet()), vec![9]),
        ("det", Box::new(move |x: &Tensor| well_conditioned(x)?.det()), vec![9]),
        ("cholesky", Box::new(move |x: &Tensor| spd(x)?.cholesky()), vec![9]),
        (
            "cholesky_solve",
            Box::new(move |x: &Tensor| x.reshape(&[3, 3])?.cholesky_solve(&spd(x)?.cholesky()?)),
            vec![9],
        ),
    ]
}

#[test]
fn every_other_primitive_jvp_is_the_transpose_of_its_vjp_and_matches_finite_differences() {
    for (name, f, shape) in structural_cases(&cpu()) {
        let x = random(&shape, -1.5, 1.5);
        check_forward(name, &f, &x);
    }
}

#[test]
fn gpu_jvps_match_the_cpu() {
    with_gpu!(g);
    // a chain through the fused primitives, matmul, reductions and movement
    let labels_cpu = Tensor::from_slice(&[1u32, 0, 3], &[3], &cpu()).unwrap();
    let labels_gpu = labels_cpu.to_device(&g).unwrap();
    let f = |x: &Tensor, labels: &Tensor| -> Result<Tensor> {
        let w = x.narrow(0, 0, 12)?.reshape(&[3, 4])?;
        let h = w.t()?.matmul(&w)?.tanh()?; // [4, 4]
        let img = h.reshape(&[1, 1, 4, 4])?.max_pool2d(2)?.reshape(&[1, 4])?;
        let z = w.add(&img)?.erf()?.softplus()?; // [3, 4]
        let loss = z.softmax_cross_entropy_mean(labels)?;
        Tensor::cat(&[z.softmax(-1)?.flatten()?, z.log_softmax(0)?.flatten()?, loss.reshape(&[1])?], 0)
    };
    let x64 = rounded(&random(&[12], -1.5, 1.5));
    let t64 = rounded(&random(&[12], -1.0, 1.0));
    let (y_want, jt_want) = jvp(|x| f(x, &labels_cpu), &x64, &t64).unwrap();
    let x32 = x64.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
    let t32 = t64.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
    let (y_got, jt_got) = jvp(|x| f(x, &labels_gpu), &x32, &t32).unwrap();
    assert_close(&y_got.to_device(&cpu()).unwrap(), &y_want, 1e-4, 1e-5, "GPU primal");
    assert_close(&jt_got.to_device(&cpu()).unwrap(), &jt_want, 1e-4, 1e-5, "GPU tangent");
    // and forward-over-reverse on the GPU
    let loss = |x: &Tensor, l: &Tensor| f(x, l)?.square()?.sum_all();
    let want = hvp(|x| loss(x, &labels_cpu), &x64, &t64).unwrap();
    let got = hvp(|x| loss(x, &labels_gpu), &x32, &t32).unwrap();
    assert_close(&got.to_device(&cpu()).unwrap(), &want, 2e-3, 1e-4, "GPU hvp");
}

#[test]
fn tangents_follow_conversions_between_dtypes_and_devices() {
    // jvp sin(f32(x)) = cos(x) t, with the tangent converted like the primal
    let (x, t) = (random(&[5], -1.5, 1.5), random(&[5], -1.0, 1.0));
    let f = |x: &Tensor| x.to_dtype(DType::F32)?.sin()?.to_dtype(DType::F64);
    let (_, jt) = jvp(f, &x, &t).unwrap();
    assert_close(&jt, &x.cos().unwrap().mul(&t).unwrap(), 1e-6, 1e-7, "jvp through to_dtype");
    with_gpu!(g);
    let x32 = x.to_dtype(DType::F32).unwrap();
    let t32 = t.to_dtype(DType::F32).unwrap();
    let (_, jt) = jvp(|x| x.to_device(&g)?.exp()?.to_device(&cpu()), &x32, &t32).unwrap();
    assert_eq!(jt.device(), &cpu());
    assert_close(&jt, &x32.exp().unwrap().mul(&t32).unwrap(), 2e-6, 1e-7, "jvp through to_device");
}

#[test]
fn perturbations_of_nested_jvps_are_not_confused() {
    // d/dx [x * d/dy (x + y)] = d/dx [x * 1] = 1 at any x (a confused implementation gives 2)
    for x0 in [0.5, -2.0, 3.0] {
        let x = vec64(&[x0], &[]);
        let one = vec64(&[1.0], &[]);
        let (_, d) = jvp(|x| x.mul(&jvp(|y| x.add(y), &vec64(&[7.0], &[]), &one)?.1), &x, &one).unwrap();
        assert_eq!(d.to_scalar::<f64>().unwrap(), 1.0, "x = {x0}");
    }
    // and mixed with reverse mode: d/dx [x * grad_y (x y)] = d/dx [x^2] = 2x
    let x = vec64(&[1.5], &[]);
    let d = grad(|x| x.mul(&grad(|y| x.mul(y), &vec64(&[4.0], &[]))?), &x).unwrap();
    assert_eq!(d.to_scalar::<f64>().unwrap(), 3.0);
    let (_, d) = jvp(|x| x.mul(&grad(|y| x.mul(y), &vec64(&[4.0], &[]))?), &x, &vec64(&[1.0], &[])).unwrap();
    assert_eq!(d.to_scalar::<f64>().unwrap(), 3.0);
}

/// x^3 with only a VJP: its JVP is derived from the VJP.
struct Cube;
impl CustomOp for Cube {
    fn name(&self) -> &str {
        "cube"
    }
    /// d x^3 = 3 x^2 dx
    fn vjp(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&inputs[0].square()?.mul_scalar(3.0)?)?)])
    }
}

/// x^3 with its own JVP, which counts its calls.
struct CubeWithJvp(std::sync::atomic::AtomicUsize);
impl CustomOp for CubeWithJvp {
    fn name(&self) -> &str {
        "cube_jvp"
    }
    fn vjp(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&inputs[0].square()?.mul_scalar(3.0)?)?)])
    }
    /// jvp x^3 = 3 x^2 t
    fn jvp(&self, inputs: &[Tensor], _out: &Tensor, t: &[Option<Tensor>]) -> Result<Option<Tensor>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        t[0].as_ref().map(|t| t.mul(&inputs[0].square()?.mul_scalar(3.0)?)).transpose()
    }
}

#[test]
fn user_primitives_get_forward_mode_with_or_without_a_jvp() {
    let x = random(&[4], -1.5, 1.5);
    let derived = |x: &Tensor| custom_op(Arc::new(Cube), &[x], || x.powf(3.0));
    let own = Arc::new(CubeWithJvp(Default::default()));
    let given = {
        let own = own.clone();
        move |x: &Tensor| custom_op(own.clone(), &[x], || x.powf(3.0))
    };
    let want_jt = |t: &Tensor| x.square().unwrap().mul_scalar(3.0).unwrap().mul(t).unwrap();
    let t = random(&[4], -1.0, 1.0);
    for (name, f) in [("derived from the VJP", &derived as &dyn Fn(&Tensor) -> Result<Tensor>), ("its own", &given)] {
        let (_, jt) = jvp(f, &x, &t).unwrap();
        assert_close(&jt, &want_jt(&t), 1e-12, 1e-12, &format!("jvp of a custom op, {name}"));
        check_forward(&format!("custom op, JVP {name}"), f, &x);
    }
    assert!(own.0.load(std::sync::atomic::Ordering::Relaxed) > 0, "the user's own JVP was not called");
}

#[test]
fn jacfwd_equals_jacrev_and_hessians_are_3d_for_vector_functions() {
    let w = random(&[3, 4], -1.0, 1.0);
    let g = |x: &Tensor| w.matmul(x)?.tanh()?.softmax(0); // R^4 -> R^3
    let x = random(&[4], -1.0, 1.0);
    let (jf, jr) = (jacfwd(g, &x).unwrap(), jacrev(g, &x).unwrap());
    assert_eq!(jf.shape(), &[3, 4]);
    assert_close(&jf, &jr, 1e-12, 1e-12, "jacfwd vs jacrev");
    // the 3-D Hessian of a vector-valued f: jacfwd(jacrev) against jacrev(jacrev) (= hessian)
    let h = jacfwd(|x| jacrev(g, x), &x).unwrap();
    assert_eq!(h.shape(), &[3, 4, 4]);
    assert_close(&h, &hessian(g, &x).unwrap(), 1e-12, 1e-12, "jacfwd(jacrev) vs jacrev(jacrev)");
    // shapes: f(x).shape ++ x.shape for matrices
    let m = random(&[2, 3], -1.0, 1.0);
    assert_eq!(jacfwd(|m| m.exp()?.sum(&[0], false), &m).unwrap().shape(), &[3, 2, 3]);
}

#[test]
fn forward_over_reverse_hvp_agrees_with_reverse_over_reverse_and_the_hessian() {
    let w = random(&[5, 5], -1.0, 1.0);
    let f = |x: &Tensor| w.matmul(x)?.tanh()?.sum_all()?.add(&x.square()?.sum_all()?.mul_scalar(0.5)?);
    let (x, v) = (random(&[5], -1.0, 1.0), random(&[5], -1.0, 1.0));
    let fwd = hvp(f, &x, &v).unwrap();
    let rev = grad(|x| grad(f, x)?.mul(&v)?.sum_all(), &x).unwrap();
    let h_v = hessian(f, &x).unwrap().matmul(&v).unwrap();
    assert_close(&fwd, &rev, 1e-12, 1e-12, "forward-over-reverse vs reverse-over-reverse");
    assert_close(&fwd, &h_v, 1e-12, 1e-12, "hvp vs hessian . v");
}

#[test]
fn a_bad_tangent_is_an_error_naming_jvp() {
    let x = random(&[3], -1.0, 1.0);
    let f = |x: &Tensor| x.exp();
    let e = jvp(f, &x, &random(&[4], -1.0, 1.0)).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "jvp", .. }), "{e}");
    let e = jvp(f, &x, &x.to_dtype(DType::F32).unwrap()).unwrap_err();
    assert!(matches!(e, Error::DTypeMismatch { op: "jvp", .. }), "{e}");
    let e = hvp(|x| x.exp()?.sum_all(), &x, &random(&[2], -1.0, 1.0)).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "hvp", .. }), "{e}");
    with_gpu!(g);
    let xg = x.to_dtype(DType::F32).unwrap();
    let e = jvp(f, &xg, &xg.to_device(&g).unwrap()).unwrap_err();
    assert!(matches!(e, Error::DeviceMismatch { op: "jvp", .. }), "{e}");
    // nothing was lost: x still reads back
    assert_eq!(x.to_vec::<f64>().unwrap().len(), 3);
}

#[test]
fn erf_matches_known_values_on_both_devices() {
    // erf(0) = 0, erf(0.5) = 0.5204998778, erf(1) = 0.8427007929, erf(-2) = -0.9953222650,
    // erf(3) = 0.9999779095 (Abramowitz & Stegun, table 7.1)
    let xs = [0.0, 0.5, 1.0, -2.0, 3.0, 1e-3];
    let want =
        [0.0, 0.5204998778130465, 0.8427007929497149, -0.9953222650189527, 0.9999779095030014, 0.0011283787909692365];
    let got = vec64(&xs, &[6]).erf().unwrap().to_vec::<f64>().unwrap();
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-13 + 1e-12 * w.abs(), "CPU erf: {g} vs {w}");
    }
    with_gpu!(gd);
    let x32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
    let got = Tensor::from_slice(&x32, &[6], &gd).unwrap().erf().unwrap().to_vec::<f32>().unwrap();
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() <= 1e-6 + 2e-5 * w.abs(), "GPU erf: {g} vs {w}");
    }
}

#[test]
fn a_node_carries_everything_needed_to_run_its_primitive_again() {
    // record y = op(x) inside a transform, then bind the node's primitive on x again
    let x = random(&[2, 3, 4], -1.0, 1.0);
    let ops: Vec<F> = vec![
        Box::new(|x: &Tensor| x.reshape(&[6, 4])),
        Box::new(|x: &Tensor| x.permute(&[2, 0, 1])),
        Box::new(|x: &Tensor| x.narrow(2, 1, 2)),
        Box::new(|x: &Tensor| x.broadcast_to(&[5, 2, 3, 4])),
        Box::new(|x: &Tensor| x.sum(&[0, 2], true)),
        Box::new(|x: &Tensor| x.max(&[1], false)),
        Box::new(|x: &Tensor| x.powf(3.0)),
        Box::new(|x: &Tensor| x.softmax(1)),
        Box::new(|x: &Tensor| x.log_softmax(2)),
        Box::new(|x: &Tensor| x.argmax(1, false)?.to_dtype(DType::F64)),
    ];
    let replayed = std::cell::Cell::new(0);
    for (i, op) in ops.iter().enumerate() {
        vjp(
            |xv| {
                let y = op(xv)?;
                if let Some(node) = y.node() {
                    assert_eq!(node.output_shape, y.shape(), "op {i}: output shape on the node");
                    let again = wgrad::bind(node.op.clone(), &[&x])?;
                    assert_close(&again, &y.detach(), 0.0, 0.0, &format!("op {i} ({}) replayed", node.name()));
                    replayed.set(replayed.get() + 1);
                }
                Ok(y)
            },
            &x,
            &op(&x).unwrap().ones_like().unwrap(),
        )
        .unwrap_or_else(|e| panic!("op {i}: {e}"));
    }
    // every op but argmax (a u32 result carries no derivative, so no node)
    assert_eq!(replayed.get(), ops.len() - 1);
}

/// The JVP of `f` at x along t on `dev` in `dtype`, read back as f64.
fn jvp_on(f: &dyn Fn(&Tensor) -> Result<Tensor>, x64: &Tensor, t64: &Tensor, dev: &Device, dtype: DType) -> Tensor {
    let put = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(dev).unwrap();
    let (_, jt) = jvp(f, &put(x64), &put(t64)).unwrap();
    jt.to_device(&cpu()).unwrap().to_dtype(DType::F64).unwrap()
}

#[test]
fn gpu_jvps_of_every_primitive_match_the_cpu() {
    with_gpu!(g);
    let check =
        |name: &str, fg: &dyn Fn(&Tensor) -> Result<Tensor>, fc: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor| {
            let (x, t) = (rounded(x), rounded(&random(x.shape(), -1.0, 1.0)));
            let want = jvp_on(fc, &x, &t, &cpu(), DType::F64);
            let got = jvp_on(fg, &x, &t, &g, DType::F32);
            assert_close(&got, &want, 2e-4, 2e-5, &format!("GPU jvp of {name}"));
        };
    for &op in UnaryOp::ALL {
        let s = if op == UnaryOp::RPowScalar { 1.7 } else { 2.5 };
        let x = unary_input(op, &[2, 3]);
        let f = move |x: &Tensor| x.unary(op, s);
        check(&format!("{op:?}"), &f, &f, &x);
    }
    for &op in BinaryOp::ALL {
        // [2, 1] against [1, 3]: both operands broadcast
        let f =
            move |x: &Tensor| x.narrow(0, 0, 2)?.reshape(&[2, 1])?.binary(op, &x.narrow(0, 2, 3)?.reshape(&[1, 3])?);
        let x = if op == BinaryOp::Pow { random(&[5], 0.5, 2.0) } else { random(&[5], -2.0, 2.0) };
        check(&format!("{op:?}"), &f, &f, &x);
    }
    let gpu_cases = crate::autograd_ops::structural_cases(&g);
    for ((name, fg, shape), (_, fc, _)) in gpu_cases.into_iter().zip(crate::autograd_ops::structural_cases(&cpu())) {
        check(name, &fg, &fc, &random(&shape, -1.5, 1.5));
    }
    // the forward-mode list: softmax_vjp, cross-entropy and its gradient, pooling, im2col,
    // col2im, conv2d and the factorizations
    let mut seen = Vec::new();
    for ((name, fg, shape), (_, fc, _)) in structural_cases(&g).into_iter().zip(structural_cases(&cpu())) {
        check(name, &fg, &fc, &random(&shape, -1.5, 1.5));
        seen.push(name);
    }
    for name in ["softmax_vjp (z, v, g)", "im2col", "col2im", "conv2d", "solve (A and B)", "cholesky", "logdet"] {
        assert!(seen.contains(&name), "{name} is in the GPU JVP list");
    }
}
