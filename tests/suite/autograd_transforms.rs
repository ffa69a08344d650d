//! The transforms against hand-computed derivatives (the notes' examples), their nesting,
//! their errors, and the runtime promises of a backward pass on the GPU.
use crate::common::*;
use std::sync::Arc;
use wgrad::{
    custom_op, grad, hessian, hvp, jacobian, jvp, no_grad, value_and_grad, value_and_grad_many, vjp, CustomOp, DType,
    Device, Error, Result, Tensor,
};

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &cpu()).unwrap()
}

fn v64(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

#[test]
fn elementwise_exponent_jacobian_is_diagonal() {
    // f(x) = exp(x): J = diag(exp x), and the VJP is g * exp(x)
    for dev in [gpu(), Some(cpu())].into_iter().flatten() {
        let x = Tensor::from_slice(&[0.5f32, -1.0, 2.0], &[3], &dev).unwrap();
        let j = jacobian(|x| x.exp(), &x).unwrap();
        assert_eq!(j.shape(), &[3, 3]);
        let e: Vec<f64> = [0.5f64, -1.0, 2.0].iter().map(|v| v.exp()).collect();
        let want = [e[0], 0.0, 0.0, 0.0, e[1], 0.0, 0.0, 0.0, e[2]];
        close(&v64(&j), &want, 1e-6);
        let g = Tensor::from_slice(&[1.0f32, 2.0, 3.0], &[3], &dev).unwrap();
        let (y, u) = vjp(|x| x.exp(), &x, &g).unwrap();
        close(&v64(&y), &e, 1e-6);
        close(&v64(&u), &[e[0], 2.0 * e[1], 3.0 * e[2]], 1e-6);
    }
}

#[test]
fn the_tiny_network_of_the_notes() {
    // L = 1/2 (s - t)^2 with s = sigma(z), z = w x + b.
    // dL/dw = (s - t) s (1 - s) x,  dL/db = (s - t) s (1 - s).
    let (x, t, b) = (1.5, 0.25, -0.3);
    let w: f64 = 0.8;
    let s = 1.0 / (1.0 + (-(w * x + b)).exp());
    let dl_dw = (s - t) * s * (1.0 - s) * x;
    let dl_db = (s - t) * s * (1.0 - s);
    let loss = |p: &[Tensor]| -> Result<Tensor> {
        let z = p[0].mul_scalar(x)?.add(&p[1])?;
        z.sigmoid()?.add_scalar(-t)?.square()?.mul_scalar(0.5)?.sum_all()
    };
    let (l, g) = value_and_grad_many(loss, &[t64(&[w], &[]), t64(&[b], &[])]).unwrap();
    close(&v64(&l), &[0.5 * (s - t).powi(2)], 1e-12);
    close(&v64(&g[0]), &[dl_dw], 1e-12);
    close(&v64(&g[1]), &[dl_db], 1e-12);
}

#[test]
fn jacobian_of_softmax_of_wx() {
    // J = (diag(s) - s s^T) W for s = softmax(W x)
    let w = t64(&[0.2, -0.5, 1.0, 0.3, 0.7, -0.1, -0.4, 0.9, 0.05], &[3, 3]);
    let x = t64(&[0.3, -1.2, 0.8], &[3]);
    let f = |x: &Tensor| w.matmul(x)?.softmax(0);
    let s = v64(&f(&x).unwrap());
    let mut a = vec![0.0; 9];
    for i in 0..3 {
        for j in 0..3 {
            a[i * 3 + j] = if i == j { s[i] } else { 0.0 } - s[i] * s[j];
        }
    }
    let want = t64(&a, &[3, 3]).matmul(&w).unwrap();
    let got = jacobian(f, &x).unwrap();
    close(&v64(&got), &v64(&want), 1e-12);
    if let Some(g) = gpu() {
        let (wg, xg) = (
            w.to_dtype(DType::F32).unwrap().to_device(&g).unwrap(),
            x.to_dtype(DType::F32).unwrap().to_device(&g).unwrap(),
        );
        let jg = jacobian(|x| wg.matmul(x)?.softmax(0), &xg).unwrap();
        close(&v64(&jg), &v64(&want), 2e-5);
    }
}

#[test]
fn hessian_of_a_vector_valued_function_is_3d() {
    // f(x) = [x0^2 x1, sin(x0) + x1^3]
    // H_0 = [[2 x1, 2 x0], [2 x0, 0]],  H_1 = [[-sin x0, 0], [0, 6 x1]]
    let (a, b) = (0.7f64, -1.3f64);
    let f = |x: &Tensor| -> Result<Tensor> {
        let x0 = x.narrow(0, 0, 1)?;
        let x1 = x.narrow(0, 1, 1)?;
        Tensor::cat(&[x0.square()?.mul(&x1)?, x0.sin()?.add(&x1.powf(3.0)?)?], 0)
    };
    let want = [2.0 * b, 2.0 * a, 2.0 * a, 0.0, -a.sin(), 0.0, 0.0, 6.0 * b];
    let h = hessian(f, &t64(&[a, b], &[2])).unwrap();
    assert_eq!(h.shape(), &[2, 2, 2]);
    close(&v64(&h), &want, 1e-12);
    if let Some(g) = gpu() {
        let x = Tensor::from_slice(&[a as f32, b as f32], &[2], &g).unwrap();
        let h = hessian(f, &x).unwrap();
        assert_eq!(h.shape(), &[2, 2, 2]);
        close(&v64(&h), &want, 1e-5);
    }
}

#[test]
fn hvp_literally_as_in_the_notes_equals_hvp_and_hessian_times_v() {
    let f = |x: &Tensor| x.sin()?.mul(&x.square()?)?.sum_all()?.add(&x.prod_pairs()?);
    for dev in [gpu(), Some(cpu())].into_iter().flatten() {
        let (x, v) = if dev.is_gpu() {
            (
                Tensor::from_slice(&[0.3f32, -0.7, 1.1, 0.5], &[4], &dev).unwrap(),
                Tensor::from_slice(&[1.0f32, 0.5, -2.0, 0.25], &[4], &dev).unwrap(),
            )
        } else {
            (t64(&[0.3, -0.7, 1.1, 0.5], &[4]), t64(&[1.0, 0.5, -2.0, 0.25], &[4]))
        };
        let literal = grad(|x| grad(f, x)?.mul(&v)?.sum_all(), &x).unwrap();
        let h = hvp(f, &x, &v).unwrap();
        let hv = hessian(f, &x).unwrap().matmul(&v).unwrap();
        let tol = if dev.is_gpu() { 1e-5 } else { 1e-12 };
        close(&v64(&literal), &v64(&h), tol);
        close(&v64(&hv), &v64(&h), tol);
    }
}

trait PairProd {
    fn prod_pairs(&self) -> Result<Tensor>;
}
impl PairProd for Tensor {
    /// x0 x1 + x2 x3: a function with off-diagonal second derivatives
    fn prod_pairs(&self) -> Result<Tensor> {
        self.narrow(0, 0, 2)?.mul(&self.narrow(0, 2, 2)?)?.sum_all()
    }
}

#[test]
fn third_derivatives_of_scalar_functions() {
    // f(x) = x^4 sin(x): f''' = 24 x sin x + 36 x^2 cos x - 12 x^3 sin x - x^4 cos x... computed by nesting grad
    let f = |x: &Tensor| x.powf(4.0)?.mul(&x.sin()?)?.sum_all();
    let x0 = 0.9f64;
    let (s, c) = (x0.sin(), x0.cos());
    let want = 24.0 * x0 * s + 36.0 * x0 * x0 * c - 12.0 * x0.powi(3) * s - x0.powi(4) * c;
    let x = t64(&[x0], &[]);
    let d3 = grad(|x| grad(|x| grad(f, x), x), &x).unwrap();
    close(&v64(&d3), &[want], 1e-10);
}

#[test]
fn jvp_equals_jacobian_times_tangent() {
    let f = |x: &Tensor| x.reshape(&[2, 2])?.matmul(&x.reshape(&[2, 2])?.t()?)?.tanh();
    let x = t64(&[0.2, -0.4, 0.9, 0.1], &[4]);
    let t = t64(&[1.0, -1.0, 0.5, 2.0], &[4]);
    let (y, jt) = jvp(f, &x, &t).unwrap();
    assert_eq!(jt.shape(), &[2, 2]);
    let want = jacobian(f, &x).unwrap().reshape(&[4, 4]).unwrap().matmul(&t).unwrap();
    close(&v64(&jt), &v64(&want), 1e-12);
    close(&v64(&y), &v64(&f(&x).unwrap()), 0.0);
}

#[test]
fn detach_stop_gradient_and_no_grad() {
    let x = t64(&[2.0, 3.0], &[2]);
    // d/dx (x * stop_gradient(x)) = stop_gradient(x)
    let g = grad(|x| x.mul(x.stop_gradient())?.sum_all(), &x).unwrap();
    assert_eq!(v64(&g), vec![2.0, 3.0]);
    let g = grad(|x| no_grad(|| x.square())?.sum_all(), &x).unwrap();
    assert_eq!(v64(&g), vec![0.0, 0.0], "nothing recorded inside no_grad");
    let (v, g) = value_and_grad(|x| x.square()?.sum_all(), &x).unwrap();
    assert!(!v.is_tracked() && !g.is_tracked(), "results of a top-level transform hold no graph");
}

/// A user primitive: softplus(x) = log(1 + exp(x)) with its own VJP g * sigmoid(x).
struct Softplus;
impl CustomOp for Softplus {
    fn name(&self) -> &str {
        "softplus"
    }
    fn vjp(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&inputs[0].sigmoid()?)?)])
    }
}

#[test]
fn a_custom_primitive_with_its_own_vjp() {
    let softplus = |x: &Tensor| custom_op(Arc::new(Softplus), &[x], || x.exp()?.add_scalar(1.0)?.log());
    let x = t64(&[-1.0, 0.5, 2.0], &[3]);
    let g = grad(|x| softplus(x)?.sum_all(), &x).unwrap();
    close(&v64(&g), &v64(&x.sigmoid().unwrap()), 1e-12);
    wgrad::check_grads(softplus, &x, 2).unwrap();
}

/// A fused user kernel with its own VJP: swish(x) = x * sigmoid(x) in one WGSL kernel,
/// d swish = (s + x s (1 - s)) dx with s = sigmoid(x).
struct Swish(wgrad::ElementwiseKernel);
impl CustomOp for Swish {
    fn name(&self) -> &str {
        "swish"
    }
    fn vjp(&self, inputs: &[Tensor], _out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = &inputs[0];
        let s = x.sigmoid()?;
        let ds = s.add(&x.mul(&s)?.mul(&s.neg()?.add_scalar(1.0)?)?)?;
        Ok(vec![Some(g.mul(&ds)?)])
    }
}

#[test]
fn a_custom_primitive_with_its_own_wgsl_kernel() {
    let k =
        wgrad::ElementwiseKernel::new("swish", "return x * sigmoid_safe(x);", |x, _| x / (1.0 + (-x).exp())).unwrap();
    let op = Arc::new(Swish(k.clone()));
    let swish = |x: &Tensor| custom_op(op.clone(), &[x], || x.map_kernel(&op.0, 0.0));
    let x = t64(&[-2.0, -0.5, 0.0, 1.5], &[4]);
    wgrad::check_grads(swish, &x, 2).unwrap();
    if let Some(g) = fresh_gpu() {
        let xg = x.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
        let before = g.counters();
        let y = swish(&xg).unwrap();
        assert_eq!(g.counters().dispatches - before.dispatches, 1, "one fused kernel");
        close(&v64(&y), &v64(&swish(&x).unwrap()), 1e-6);
        let gg = grad(|x| swish(x)?.sum_all(), &xg).unwrap();
        close(&v64(&gg), &v64(&grad(|x| swish(x)?.sum_all(), &x).unwrap()), 1e-5);
    }
    // invalid WGSL is an error at registration; a tracked input outside custom_op is an error
    assert!(matches!(
        wgrad::ElementwiseKernel::new("bad", "return y;", |x, _| x),
        Err(Error::Gpu(wgrad::KernelError::Compile { .. }))
    ));
    // without rules, every derivative transform is an error naming the op and the
    // transform, never a zero; vmap runs it on every example; x stays usable
    let missing = |r: wgrad::Result<Tensor>, transform: &str| match r {
        Err(Error::MissingRule { op, transform: t }) => assert!(op == "swish" && t.contains(transform), "{op} {t}"),
        other => panic!("want MissingRule for {transform}, got {other:?}"),
    };
    missing(grad(|x| x.map_kernel(&k, 0.0)?.sum_all(), &x), "grad");
    missing(wgrad::jvp(|x| x.map_kernel(&k, 0.0), &x, &x.ones_like().unwrap()).map(|r| r.1), "jvp");
    missing(wgrad::hessian(|x| x.map_kernel(&k, 0.0)?.sum_all(), &x), "grad"); // jacfwd(jacrev): the inner grad meets it first
    let e = grad(|x| x.map_kernel(&k, 0.0)?.sum_all(), &x).unwrap_err().to_string();
    assert!(e.contains("custom_op"), "the error says how to give it a rule: {e}");
    let batched = wgrad::vmap(|x| x.map_kernel(&k, 0.0), &x.reshape(&[2, 2]).unwrap(), 0, 0).unwrap();
    close(&v64(&batched.reshape(&[4]).unwrap()), &v64(&swish(&x).unwrap()), 1e-12);
    assert_eq!(x.to_vec::<f64>().unwrap(), vec![-2.0, -0.5, 0.0, 1.5]);
}

#[test]
fn bad_inputs_to_transforms_are_errors() {
    let x = t64(&[1.0, 2.0], &[2]);
    assert!(matches!(grad(|x| x.exp(), &x), Err(Error::NotScalar { op: "grad", .. })));
    assert!(matches!(vjp(|x| x.exp(), &x, &t64(&[1.0], &[1])), Err(Error::ShapeMismatch { op: "vjp", .. })));
    assert!(matches!(jvp(|x| x.exp(), &x, &t64(&[1.0; 3], &[3])), Err(Error::ShapeMismatch { op: "jvp", .. })));
    assert!(matches!(hvp(|x| x.sum_all(), &x, &t64(&[1.0; 3], &[3])), Err(Error::ShapeMismatch { op: "hvp", .. })));
    if let Some(g) = gpu() {
        let w = Tensor::ones(&[2], DType::F32, &g).unwrap();
        let xf = x.to_dtype(DType::F32).unwrap();
        assert!(matches!(grad(|x| x.mul(&w)?.sum_all(), &xf), Err(Error::DeviceMismatch { .. })));
    }
    // a function that ignores its input has a zero gradient, not an error
    assert_eq!(v64(&grad(|_| t64(&[1.0], &[]).exp(), &x).unwrap()), vec![0.0, 0.0]);
}

#[test]
fn a_chain_of_100000_ops_differentiates_without_stack_overflow() {
    let x = t64(&[1.0], &[1]);
    let g = grad(
        |x| {
            let mut y = x.clone();
            for _ in 0..100_000 {
                y = y.mul_scalar(1.0)?;
            }
            y.sum_all()
        },
        &x,
    )
    .unwrap();
    assert_eq!(v64(&g), vec![1.0]);
}

fn mlp_loss(p: &[Tensor], x: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let h = x.matmul(&p[0])?.add(&p[1])?.relu()?;
    let h = h.matmul(&p[2])?.add(&p[3])?.relu()?;
    let logits = h.matmul(&p[4])?.add(&p[5])?;
    logits.log_softmax(1)?.gather(1, labels)?.neg()?.mean_all()
}

fn mlp_params(dev: &Device) -> Vec<Tensor> {
    let dims = [784, 256, 256, 10];
    let mut p = Vec::new();
    for i in 0..3 {
        let scale = (2.0 / dims[i] as f64).sqrt();
        p.push(Tensor::randn(&[dims[i], dims[i + 1]], i as u64, dev).unwrap().mul_scalar(scale).unwrap());
        p.push(Tensor::zeros(&[dims[i + 1]], DType::F32, dev).unwrap());
    }
    p
}

#[test]
fn an_mlp_backward_pass_on_the_gpu_reads_nothing_back_and_matches_the_cpu() {
    let Some(g) = fresh_gpu() else { return };
    let batch = 128;
    let x = Tensor::rand(&[batch, 784], 0.0, 1.0, 5, &g).unwrap();
    let labels: Vec<u32> = (0..batch as u32).map(|i| (i * 7) % 10).collect();
    let y = Tensor::from_slice(&labels, &[batch, 1], &g).unwrap();
    let params = mlp_params(&g);
    let before = g.counters();
    let (loss, grads) = value_and_grad_many(|p| mlp_loss(p, &x, &y), &params).unwrap();
    let after = g.counters();
    assert_eq!(after.readbacks - before.readbacks, 0, "forward + backward stay on the GPU");
    assert_eq!(grads.len(), 6);
    // same loss and gradients on the CPU
    let c = cpu();
    let (xc, yc) = (x.to_device(&c).unwrap(), Tensor::from_slice(&labels, &[batch, 1], &c).unwrap());
    let pc: Vec<Tensor> = params.iter().map(|p| p.to_device(&c).unwrap()).collect();
    let (lc, gc) = value_and_grad_many(|p| mlp_loss(p, &xc, &yc), &pc).unwrap();
    assert_close(&loss, &lc, 1e-5, 1e-6, "loss");
    for (a, b) in grads.iter().zip(&gc) {
        assert_close(a, b, 1e-3, 1e-5, "gradient");
    }
}

#[test]
fn a_loop_of_1000_value_and_grad_calls_holds_gpu_memory_flat() {
    let Some(g) = fresh_gpu() else { return };
    // poisoning writes every output from the host, which the pool must not reuse mid-batch
    g.context().unwrap().set_poison_outputs(false);
    let x = Tensor::randn(&[16, 8], 1, &g).unwrap();
    let w = Tensor::randn(&[8, 4], 2, &g).unwrap();
    let step = |w: &Tensor| value_and_grad(|w| x.matmul(w)?.tanh()?.square()?.mean_all(), w).unwrap();
    let mut w = w;
    for _ in 0..50 {
        let (_, gw) = step(&w);
        w = no_grad(|| w.sub(&gw.mul_scalar(0.1)?)).unwrap();
    }
    g.synchronize().unwrap();
    let before = g.counters();
    for _ in 0..1000 {
        let (_, gw) = step(&w);
        w = no_grad(|| w.sub(&gw.mul_scalar(0.1)?)).unwrap();
    }
    g.synchronize().unwrap();
    let after = g.counters();
    assert_eq!(after.live_buffers, before.live_buffers, "live buffers grew");
    assert_eq!(after.live_bytes, before.live_bytes);
    assert_eq!(after.buffer_allocations, before.buffer_allocations, "steady state allocates nothing new");
    assert_eq!(after.readbacks, before.readbacks);
}
