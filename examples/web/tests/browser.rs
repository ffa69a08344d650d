//! The browser test suite: wgrad on WebGPU in headless Chromium (`tools/web_test.sh`),
//! against the CPU device in the same page and against hand-computed values. Every test
//! needs a WebGPU adapter and fails, never skips, without one.
#![cfg(target_arch = "wasm32")]

use wasm_bindgen_test::*;
use wgrad::{grad, hessian, hvp, jvp, vmap, with_fusion, DType, Device, Error, KernelError, Result, Tensor};

wasm_bindgen_test_configure!(run_in_browser);

/// The WebGPU device; a panic (a failed test) when the browser has none.
async fn gpu() -> Device {
    match Device::gpu_async().await {
        Ok(d) => d,
        Err(e) => panic!("no WebGPU adapter in this browser: {e}"),
    }
}

/// Deterministic values in [lo, hi).
fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

async fn read(t: &Tensor) -> Vec<f64> {
    t.to_vec_async::<f64>().await.expect("async readback")
}

/// Where |got - want| > atol + rtol |want| (the worst element), or the shapes differ.
async fn mismatch(got: &Tensor, want: &Tensor, rtol: f64, atol: f64, what: &str) -> Option<String> {
    if got.shape() != want.shape() {
        return Some(format!("{what}: shapes {:?} and {:?}", got.shape(), want.shape()));
    }
    let (g, w) = (read(got).await, read(want).await);
    let excess = |(a, b): (&f64, &f64)| {
        if a.is_nan() && b.is_nan() {
            return 0.0;
        }
        (a - b).abs() / (atol + rtol * b.abs())
    };
    let (i, worst) =
        g.iter().zip(&w).map(excess).enumerate().fold((0, 0.0), |m, (i, e)| if e > m.1 { (i, e) } else { m });
    (worst > 1.0 || worst.is_nan())
        .then(|| format!("{what}: element {i}: {} vs {} ({worst:.1}x the tolerance)", g[i], w[i]))
}

async fn assert_close(got: &Tensor, want: &Tensor, rtol: f64, atol: f64, what: &str) {
    if let Some(m) = mismatch(got, want, rtol, atol, what).await {
        panic!("{m}");
    }
}

fn assert_values(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {got:?} vs {want:?}");
    }
}

fn on(dev: &Device, v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, dev).unwrap()
}

#[wasm_bindgen_test]
async fn the_device_is_webgpu() {
    let g = gpu().await;
    assert!(g.is_gpu());
    assert!(g.name().contains("WebGpu"), "{}", g.name());
    // the blocking form returns the device the async form created
    assert_eq!(Device::gpu().unwrap(), g);
    assert_eq!(Device::best_async().await, g);
}

#[wasm_bindgen_test]
async fn every_kernel_compiles_with_chromes_compiler() {
    // Chrome validates WGSL with Tint, stricter than naga in places (the naga test checks
    // the same list natively)
    let g = gpu().await;
    let ctx = g.context().unwrap();
    let keys: Vec<_> = wgrad::kernels::all_kernels()
        .into_iter()
        .filter(|k| k.dtype == wgrad::kernels::KDType::F32 || ctx.supports_f16())
        .collect();
    assert!(keys.len() > 100, "{} kernels", keys.len());
    let max_buffers = ctx.limits().max_storage_buffers_per_shader_stage;
    for key in &keys {
        // variants for adapters with more storage buffers than this one are never built here
        let (n_in, n_out) = key.bindings();
        if n_in + n_out > max_buffers {
            continue;
        }
        ctx.compile(*key).unwrap_or_else(|e| panic!("{}: {e}", key.name()));
    }
    // a compile error arrives asynchronously: the next call reports the first one
    g.synchronize_async().await.unwrap();
    assert_eq!(read(&on(&g, &[1.0, 2.0], &[2]).exp().unwrap()).await.len(), 2);
}

#[wasm_bindgen_test]
async fn a_user_kernel_that_chrome_rejects_is_an_error_value() {
    gpu().await;
    // a device of its own: the error is this device's, reported by its next call
    let g = Device::new_gpu_async().await.unwrap();
    // naga accepts a constant expression that evaluates to infinity; Tint does not
    let body = "return x + T(bitcast<f32>(0x7f800000u));";
    let k = wgrad::ElementwiseKernel::new("plus_inf_const", body, |x, _| x).unwrap();
    let x = on(&g, &[1.0, 2.0], &[2]);
    let y = with_fusion(false, || x.map_kernel(&k, 0.0));
    let err = match y {
        Err(e) => e,
        Ok(y) => y.to_vec_async::<f32>().await.unwrap_err(),
    };
    assert!(matches!(err, Error::Gpu(KernelError::Gpu(_))), "{err}");
    assert!(err.to_string().contains("plus_inf_const"), "{err}");
}

type Unary = (&'static str, fn(&Tensor) -> Result<Tensor>);

#[wasm_bindgen_test]
async fn elementwise_family_matches_the_cpu_device_unfused() {
    let g = gpu().await;
    let v = values(3 * 67, 1, -3.0, 3.0);
    let pos = values(3 * 67, 2, 0.1, 4.0);
    let unary: [Unary; 15] = [
        ("neg", |x| x.neg()),
        ("exp", |x| x.exp()),
        ("abs", |x| x.abs()),
        ("tanh", |x| x.tanh()),
        ("sigmoid", |x| x.sigmoid()),
        ("relu", |x| x.relu()),
        ("sin", |x| x.sin()),
        ("cos", |x| x.cos()),
        ("erf", |x| x.erf()),
        ("gelu", |x| x.gelu()),
        ("gelu_tanh", |x| x.gelu_tanh()),
        ("sign", |x| x.sign()),
        ("square", |x| x.square()),
        ("clamp", |x| x.clamp(-1.0, 0.5)),
        ("powf", |x| x.abs()?.powf(1.5)),
    ];
    let positive: [Unary; 4] =
        [("log", |x| x.log()), ("log1p", |x| x.log1p()), ("sqrt", |x| x.sqrt()), ("recip", |x| x.recip())];
    let cases = unary.iter().map(|u| (u, &v)).chain(positive.iter().map(|u| (u, &pos)));
    let mut failures = Vec::new();
    for ((name, f), x) in cases {
        let (xg, xc) = (on(&g, x, &[3, 67]), on(&Device::cpu(), x, &[3, 67]));
        let got = with_fusion(false, || f(&xg)).unwrap();
        failures.extend(mismatch(&got, &f(&xc).unwrap(), 2e-5, 2e-6, name).await);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

type Binary = (&'static str, fn(&Tensor, &Tensor) -> Result<Tensor>);

#[wasm_bindgen_test]
async fn binary_ops_broadcast_as_on_the_cpu_device() {
    let g = gpu().await;
    let c = Device::cpu();
    let (a, b) = (values(4 * 5, 3, -2.0, 2.0), values(3 * 5, 4, 0.5, 2.0));
    let binary: [Binary; 11] = [
        ("add", |x, y| x.add(y)),
        ("sub", |x, y| x.sub(y)),
        ("mul", |x, y| x.mul(y)),
        ("div", |x, y| x.div(y)),
        ("pow", |x, y| x.abs()?.pow(y)),
        ("maximum", |x, y| x.maximum(y)),
        ("minimum", |x, y| x.minimum(y)),
        ("gt", |x, y| x.gt(y)),
        ("le", |x, y| x.le(y)),
        ("eq", |x, y| x.eq(y)),
        ("where", |x, y| x.gt(0.0)?.where_(x, y)),
    ];
    for (name, f) in binary {
        // [4, 1, 5] with [3, 5]: both operands broadcast
        let got = with_fusion(false, || f(&on(&g, &a, &[4, 1, 5]), &on(&g, &b, &[3, 5]))).unwrap();
        let want = f(&on(&c, &a, &[4, 1, 5]), &on(&c, &b, &[3, 5])).unwrap();
        assert_eq!(got.shape(), &[4, 3, 5]);
        assert_close(&got, &want, 2e-5, 2e-6, name).await;
    }
}

#[wasm_bindgen_test]
async fn reductions_match_the_cpu_device() {
    let g = gpu().await;
    let c = Device::cpu();
    let v = values(6 * 7 * 33, 5, -2.0, 2.0);
    let shape = [6, 7, 33];
    let reductions: [Unary; 9] = [
        ("sum rows", |x| x.sum(&[-1], false)),
        ("sum axes 0 and 2", |x| x.sum(&[0, 2], true)),
        ("mean", |x| x.mean(&[1], false)),
        ("max", |x| x.max(&[2], false)),
        ("min", |x| x.min(&[0], false)),
        ("sum_all", |x| x.sum_all()),
        ("logsumexp", |x| x.logsumexp(&[-1], false)),
        ("softmax", |x| x.softmax(-1)),
        ("log_softmax", |x| x.log_softmax(1)),
    ];
    for (name, f) in reductions {
        let got = with_fusion(false, || f(&on(&g, &v, &shape))).unwrap();
        assert_close(&got, &f(&on(&c, &v, &shape)).unwrap(), 1e-4, 1e-5, name).await;
    }
    let am = on(&g, &v, &shape).argmax(-1, false).unwrap();
    assert_eq!(
        am.to_vec_async::<u32>().await.unwrap(),
        on(&c, &v, &shape).argmax(-1, false).unwrap().to_vec::<u32>().unwrap()
    );
}

#[wasm_bindgen_test]
async fn matmul_matches_the_cpu_device() {
    let g = gpu().await;
    let c = Device::cpu();
    // (lhs shape, rhs shape): square, ragged, batched, a shared right operand, a vector
    let cases: [(&[usize], &[usize]); 5] = [
        (&[64, 64], &[64, 64]),
        (&[37, 70], &[70, 19]),
        (&[3, 17, 24], &[3, 24, 9]),
        (&[2, 5, 33], &[33, 8]),
        (&[20, 30], &[30]),
    ];
    for (i, (ls, rs)) in cases.into_iter().enumerate() {
        let (a, b) = (
            values(ls.iter().product(), 10 + i as u64, -1.0, 1.0),
            values(rs.iter().product(), 20 + i as u64, -1.0, 1.0),
        );
        let got = on(&g, &a, ls).matmul(&on(&g, &b, rs)).unwrap();
        let want = on(&c, &a, ls).matmul(&on(&c, &b, rs)).unwrap();
        assert_close(&got, &want, 1e-4, 1e-4, &format!("matmul {ls:?} x {rs:?}")).await;
    }
    // a transposed operand
    let a = values(40 * 24, 30, -1.0, 1.0);
    let got = on(&g, &a, &[40, 24]).t().unwrap().matmul(&on(&g, &a, &[40, 24])).unwrap();
    let want = on(&c, &a, &[40, 24]).t().unwrap().matmul(&on(&c, &a, &[40, 24])).unwrap();
    assert_close(&got, &want, 1e-4, 1e-4, "a^T a").await;
}

#[wasm_bindgen_test]
async fn fusion_runs_a_chain_as_one_kernel_with_the_same_values() {
    let g = gpu().await;
    let v = values(4096, 6, -2.0, 2.0);
    let chain = |x: &Tensor| x.mul(1.5)?.add(0.25)?.tanh()?.square()?.neg()?.exp();
    let x = on(&g, &v, &[4096]);
    g.synchronize_async().await.unwrap();
    let before = g.counters().dispatches;
    let fused = with_fusion(true, || chain(&x)).unwrap();
    let got = read(&fused).await;
    let fused_dispatches = g.counters().dispatches - before;
    assert_eq!(fused_dispatches, 1, "six elementwise ops fuse into one kernel");
    let before = g.counters().dispatches;
    let unfused = with_fusion(false, || chain(&x)).unwrap();
    let unfused_values = read(&unfused).await;
    assert_eq!(g.counters().dispatches - before, 6);
    let want: Vec<f64> = v.iter().map(|&a| (-(((a * 1.5 + 0.25).tanh()).powi(2))).exp() as f64).collect();
    assert_values(&got, &want, 1e-5, "fused");
    assert_values(&unfused_values, &want, 1e-5, "unfused");
}

#[wasm_bindgen_test]
async fn transforms_give_hand_computed_values() {
    let g = gpu().await;
    let x = on(&g, &[1.0, 2.0, 3.0], &[3]);
    // f(x) = sum x^3: grad 3x^2, Hessian diag(6x), hvp with v = (1, 0, -1): 6 x v
    let cube = |x: &Tensor| x.powf(3.0)?.sum_all();
    assert_values(&read(&grad(cube, &x).unwrap()).await, &[3.0, 12.0, 27.0], 1e-5, "grad");
    let v = on(&g, &[1.0, 0.0, -1.0], &[3]);
    assert_values(&read(&hvp(cube, &x, &v).unwrap()).await, &[6.0, 0.0, -18.0], 1e-5, "hvp");
    // jvp of sin at x along t: cos(x) t
    let (y, t) = jvp(|x| x.sin(), &x, &v).unwrap();
    assert_values(&read(&y).await, &[1f64.sin(), 2f64.sin(), 3f64.sin()], 1e-5, "jvp primal");
    assert_values(&read(&t).await, &[1f64.cos(), 0.0, -3f64.cos()], 1e-5, "jvp tangent");
    // vmap of a row dot product: each row of [[1,2],[3,4],[5,6]] dotted with w = (1, -1)
    let w = on(&g, &[1.0, -1.0], &[2]);
    let rows = on(&g, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    let per_row: Tensor = vmap(|r| r.dot(&w), &rows, 0, 0).unwrap();
    assert_values(&read(&per_row).await, &[-1.0, -1.0, -1.0], 1e-6, "vmap");
    // the 3-D Hessian of the vector function f(x0, x1) = (x0^2 x1, sin x0 + x1^3):
    // H[0] = [[2 x1, 2 x0], [2 x0, 0]], H[1] = [[-sin x0, 0], [0, 6 x1]]
    let p = on(&g, &[0.5, 2.0], &[2]);
    let f = |x: &Tensor| {
        let (x0, x1) = (x.narrow(0, 0, 1)?, x.narrow(0, 1, 1)?);
        Tensor::cat(&[x0.square()?.mul(&x1)?, x0.sin()?.add(&x1.powf(3.0)?)?], 0)
    };
    let h = hessian(f, &p).unwrap();
    assert_eq!(h.shape(), &[2, 2, 2]);
    let want = [4.0, 1.0, 1.0, 0.0, -(0.5f64.sin()), 0.0, 0.0, 12.0];
    assert_values(&read(&h).await, &want, 1e-5, "3-D hessian");
}

#[wasm_bindgen_test]
async fn a_jitted_step_equals_the_eager_one() {
    let g = gpu().await;
    let (wv, xv) = (values(8 * 4, 7, -1.0, 1.0), values(16 * 8, 8, -1.0, 1.0));
    // 5 steps of gradient descent on mean((x w)^2), eagerly and jitted
    let run = |jitted: bool| {
        let mut w = on(&g, &wv, &[8, 4]);
        let x = on(&g, &xv, &[16, 8]);
        let mut step = wgrad::jit(|a: &[Tensor]| -> Result<Vec<Tensor>> {
            let gw = grad(|w| a[0].matmul(w)?.square()?.mean_all(), &a[1])?;
            Ok(vec![a[1].sub(&gw.mul(0.1)?)?])
        })
        .enabled(jitted);
        for _ in 0..5 {
            w = step.call(&[x.clone(), w]).unwrap().remove(0);
        }
        (w, step.stats())
    };
    let (eager, _) = run(false);
    let (jitted, stats) = run(true);
    assert!(stats.replays >= 2, "{stats:?}");
    assert_eq!(read(&jitted).await, read(&eager).await, "replayed = eager, bit for bit");
}

#[wasm_bindgen_test]
async fn async_readback_of_a_large_tensor_and_synchronize() {
    let g = gpu().await;
    let n = 1 << 20;
    let x = Tensor::arange(0.0, n as f64, &g).unwrap().mul(2.0).unwrap();
    g.synchronize_async().await.unwrap();
    let v = x.to_vec_async::<f32>().await.unwrap();
    assert_eq!(v.len(), n);
    assert!(v.iter().enumerate().all(|(i, &a)| a == 2.0 * i as f32));
    let total = x.sum_all().unwrap().to_scalar_async::<f64>().await.unwrap();
    let want = (n as f64) * (n as f64 - 1.0);
    assert!((total - want).abs() <= 1e-5 * want, "{total} vs {want}");
    let f16 = x.narrow(0, 3, 5).unwrap().to_dtype(DType::F16).unwrap();
    assert_eq!(f16.to_vec_async::<f32>().await.unwrap(), vec![6.0, 8.0, 10.0, 12.0, 14.0]);
}

#[wasm_bindgen_test]
async fn blocking_calls_are_errors_naming_the_async_form() {
    let g = gpu().await;
    let x = on(&g, &[1.0, 2.0], &[2]);
    let blocking = |e: Error, call: &str, async_form: &str| {
        assert!(
            matches!(&e, Error::Gpu(KernelError::Blocking { call: c, use_instead: u }) if *c == call && *u == async_form),
            "{e}"
        );
        assert!(e.to_string().contains(async_form), "{e}");
    };
    blocking(x.to_vec::<f32>().unwrap_err(), "to_vec", "to_vec_async");
    blocking(x.sum_all().unwrap().to_scalar::<f32>().unwrap_err(), "to_scalar", "to_scalar_async");
    blocking(x.sum_all().unwrap().item().unwrap_err(), "item", "item_async");
    blocking(g.synchronize().unwrap_err(), "synchronize", "synchronize_async");
    blocking(Device::new_gpu().unwrap_err(), "Device::gpu", "Device::gpu_async");
    // nothing was lost: the tensor still reads with the async form
    assert_eq!(x.to_vec_async::<f32>().await.unwrap(), vec![1.0, 2.0]);
}

#[wasm_bindgen_test]
async fn the_cpu_device_runs_on_one_thread() {
    assert_eq!(wgrad::cpu::threads(), 1);
    // large enough that native would split it across cores
    let n = 1 << 18;
    let x = Tensor::arange_dtype(0.0, n as f64, 1.0, DType::F64, &Device::cpu()).unwrap();
    let y = x.mul(0.5).unwrap().abs().unwrap().sum_all().unwrap();
    assert_eq!(y.to_scalar::<f64>().unwrap(), 0.5 * (n as f64) * (n as f64 - 1.0) / 2.0);
    let m = Tensor::ones(&[300, 300], DType::F32, &Device::cpu()).unwrap();
    assert_eq!(m.matmul(&m).unwrap().to_vec::<f32>().unwrap()[0], 300.0);
}
