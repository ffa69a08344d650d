//! The transformer layers and training features: layer_norm / rms_norm, gelu, embedding,
//! attention, BatchNorm, LR schedules, gradient clipping and accumulation, decay on
//! matrices only, and a small char-GPT that must learn. References are written from the
//! definitions in f64.
use crate::common::*;
use wgrad::nn::{self, BatchNorm1d, Ctx, Embedding, Module, MultiheadAttention, Params};
use wgrad::optim::{clip_grad_norm, Adam, GradAccumulator, LrSchedule, Optimizer};
use wgrad::{check_grads, hvp, value_and_grad_many, DType, Device, Error, Tensor};

#[path = "../../examples/common/gpt.rs"]
mod gpt;

fn vals(t: &Tensor) -> Vec<f64> {
    t.to_f64_vec().unwrap()
}

/// (x - mean) / sqrt(var + eps) * w + b per row (mean 0 for RMS), in f64.
fn norm_ref(x: &[f64], n: usize, w: &[f64], b: &[f64], eps: f64, rms: bool) -> Vec<f64> {
    let mut out = Vec::new();
    for row in x.chunks(n) {
        let mu = if rms { 0.0 } else { row.iter().sum::<f64>() / n as f64 };
        let var = row.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / n as f64;
        out.extend(row.iter().enumerate().map(|(j, v)| (v - mu) / (var + eps).sqrt() * w[j] + b[j]));
    }
    out
}

#[test]
fn layer_norm_and_rms_norm_match_the_formula_on_both_devices() {
    for dev in devices() {
        // f64 on the CPU, f32 on the GPU; the reference sees the f32-rounded inputs on both
        let tol = if dev.is_gpu() { 1e-4 } else { 1e-12 };
        for n in [1usize, 7, 37, 300] {
            let rows = 5;
            let (x64, w64, b64) = (
                rounded(&random(&[rows, n], -3.0, 3.0)),
                rounded(&random(&[n], 0.5, 1.5)),
                rounded(&random(&[n], -1.0, 1.0)),
            );
            let (x, w, b) = (on(&dev, &x64), on(&dev, &w64), on(&dev, &b64));
            for rms in [false, true] {
                let bias = if rms { vec![0.0; n] } else { vals(&b64) };
                let want = norm_ref(&vals(&x64), n, &vals(&w64), &bias, 1e-5, rms);
                let want = Tensor::from_slice(&want, &[rows, n], &cpu()).unwrap();
                let y =
                    if rms { nn::rms_norm(&x, &w, 1e-5).unwrap() } else { nn::layer_norm(&x, &w, &b, 1e-5).unwrap() };
                assert_close(&y, &want, tol, tol, &format!("{dev} n={n} rms={rms}"));
            }
            // without affine parameters the rows have mean 0 and variance 1 / (1 + eps / var)
            let y = x.layer_norm(None, None, 0.0).unwrap();
            if n > 1 {
                for row in vals(&y).chunks(n) {
                    let m = row.iter().sum::<f64>() / n as f64;
                    let v = row.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n as f64;
                    assert!(m.abs() < 1e-5 && (v - 1.0).abs() < 1e-4, "{dev} n={n}: mean {m} var {v}");
                }
            }
        }
    }
    // forward: one dispatch (the row kernel) on a fresh device
    let Some(d) = fresh_gpu() else { return };
    let x = Tensor::randn(&[64, 128], 1, &d).unwrap();
    let (w, b) = (Tensor::ones(&[128], DType::F32, &d).unwrap(), Tensor::zeros(&[128], DType::F32, &d).unwrap());
    d.synchronize().unwrap();
    let c0 = d.counters().dispatches;
    nn::layer_norm(&x, &w, &b, 1e-5).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(d.counters().dispatches - c0, 1);
}

#[test]
fn layer_norm_gradients_pass_check_grads_at_order_two_and_match_on_the_gpu() {
    let (x, w, b) = (random(&[3, 6], -2.0, 2.0), random(&[6], 0.5, 1.5), random(&[6], -1.0, 1.0));
    for rms in [false, true] {
        let ln = |x: &Tensor, w: &Tensor, b: &Tensor| {
            if rms {
                x.rms_norm(Some(w), 1e-3)
            } else {
                x.layer_norm(Some(w), Some(b), 1e-3)
            }
        };
        check_grads(|x| ln(x, &w, &b), &x, 2).unwrap();
        check_grads(|w| ln(&x, w, &b), &w, 2).unwrap();
        if !rms {
            check_grads(|b| ln(&x, &w, b), &b, 2).unwrap();
        }
        // third order through the input (the second-order rule is itself differentiated)
        check_grads(|x| ln(x, &w, &b)?.square()?.sum_all(), &x, 3).unwrap();
    }
    // GPU gradients (input, weight, bias) equal the CPU's
    with_gpu!(g);
    let loss = |p: &[Tensor]| p[0].layer_norm(Some(&p[1]), Some(&p[2]), 1e-5)?.sin()?.sum_all();
    let to = |t: &Tensor, d: &Device| t.to_dtype(DType::F32).unwrap().to_device(d).unwrap();
    let (_, want) = value_and_grad_many(loss, &[x.clone(), w.clone(), b.clone()]).unwrap();
    let (_, got) = value_and_grad_many(loss, &[to(&x, &g), to(&w, &g), to(&b, &g)]).unwrap();
    for (got, want) in got.iter().zip(&want) {
        assert_close(got, want, 1e-3, 1e-4, "layer_norm grads gpu vs cpu");
    }
    // rms_norm's input and weight gradients, and its second order (an HVP through the input)
    let rms_loss = |p: &[Tensor]| p[0].rms_norm(Some(&p[1]), 1e-5)?.sin()?.sum_all();
    let (_, want) = value_and_grad_many(rms_loss, &[x.clone(), w.clone()]).unwrap();
    let (_, got) = value_and_grad_many(rms_loss, &[to(&x, &g), to(&w, &g)]).unwrap();
    for ((name, got), want) in ["input", "weight"].iter().zip(&got).zip(&want) {
        assert_close(got, want, 1e-3, 1e-4, &format!("rms_norm's {name} gradient gpu vs cpu"));
    }
    let v = random(x.shape(), -1.0, 1.0);
    let rms_x = |x: &Tensor, w: &Tensor| x.rms_norm(Some(w), 1e-5)?.sin()?.sum_all();
    let want = wgrad::hvp(|x| rms_x(x, &w), &x, &v).unwrap();
    let wg = to(&w, &g);
    let got = wgrad::hvp(|x| rms_x(x, &wg), &to(&x, &g), &to(&v, &g)).unwrap();
    assert_close(&got, &want, 2e-3, 2e-4, "rms_norm hvp gpu vs cpu");
}

#[test]
fn gelu_matches_its_definitions_and_differentiates_to_order_three() {
    // (|x| <= 3.5: the reference's Taylor series of erf stays accurate to 1e-13 there)
    let xs = [-3.5, -2.5, -1.0, -0.3, 0.0, 1e-4, 0.3, 1.0, 2.5, 3.5];
    let erf = |x: f64| {
        // erf by its Taylor series (converges for these x in f64)
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    };
    let exact: Vec<f64> = xs.iter().map(|&x| 0.5 * x * (1.0 + erf(x / 2f64.sqrt()))).collect();
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let tanh: Vec<f64> = xs.iter().map(|&x| 0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh())).collect();
    for dev in devices() {
        let dt = if !dev.is_gpu() { DType::F64 } else { DType::F32 };
        let x = Tensor::from_slice(&xs, &[xs.len()], &cpu()).unwrap().to_dtype(dt).unwrap().to_device(&dev).unwrap();
        let tol = if !dev.is_gpu() { 1e-12 } else { 2e-6 };
        assert_close(
            &nn::gelu(&x).unwrap(),
            &Tensor::from_slice(&exact, &[xs.len()], &cpu()).unwrap(),
            tol,
            tol,
            "gelu",
        );
        assert_close(
            &nn::gelu_tanh(&x).unwrap(),
            &Tensor::from_slice(&tanh, &[xs.len()], &cpu()).unwrap(),
            tol,
            tol,
            "gelu_tanh",
        );
    }
    let x = random(&[9], -3.0, 3.0);
    check_grads(|x| x.gelu(), &x, 3).unwrap();
    check_grads(|x| x.gelu_tanh(), &x, 3).unwrap();
}

#[test]
fn embedding_gathers_rows_and_accumulates_repeated_ids() {
    for dev in devices() {
        let w = Tensor::from_slice(&[0.0f32, 1.0, 10.0, 11.0, 20.0, 21.0], &[3, 2], &dev).unwrap();
        let ids = Tensor::from_slice(&[2u32, 0, 2, 2], &[2, 2], &dev).unwrap();
        let y = nn::embedding(&ids, &w).unwrap();
        assert_eq!(y.shape(), &[2, 2, 2]);
        assert_eq!(y.to_vec::<f32>().unwrap(), vec![20.0, 21.0, 0.0, 1.0, 20.0, 21.0, 20.0, 21.0]);
        // d/dW sum(emb * c) with c = 1, 2, ... per output element: rows hit three times sum
        let c = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], &[2, 2, 2], &dev).unwrap();
        let (_, gr) =
            value_and_grad_many(|p| nn::embedding(&ids, &p[0])?.mul(&c)?.sum_all(), std::slice::from_ref(&w)).unwrap();
        assert_eq!(gr[0].to_vec::<f32>().unwrap(), vec![3.0, 4.0, 0.0, 0.0, 1.0 + 5.0 + 7.0, 2.0 + 6.0 + 8.0]);
        // the same bits every time (no atomics)
        let again = value_and_grad_many(|p| nn::embedding(&ids, &p[0])?.mul(&c)?.sum_all(), std::slice::from_ref(&w))
            .unwrap()
            .1;
        assert_eq!(again[0].to_vec::<f32>().unwrap(), gr[0].to_vec::<f32>().unwrap());
        // ids past the vocabulary are an error naming the op and the shapes
        let bad = Tensor::from_slice(&[3u32], &[1], &dev).unwrap();
        match nn::embedding(&bad, &w) {
            Err(Error::Invalid { op: "embedding", msg }) => {
                assert!(msg.contains("[3, 2]") && msg.contains('3'), "{msg}")
            }
            other => panic!("{other:?}"),
        }
    }
    let ids = Tensor::from_slice(&[1u32, 1, 0], &[3], &cpu()).unwrap();
    check_grads(|w| nn::embedding(&ids, w)?.square(), &random(&[2, 3], -1.0, 1.0), 2).unwrap();
}

/// softmax(q k^T / sqrt(d) + mask) v with an explicit causal mask, in f64, per (batch, head).
#[allow(clippy::too_many_arguments)]
fn attention_ref(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    bh: usize,
    sq: usize,
    sk: usize,
    d: usize,
    causal: bool,
    mask: Option<&[f64]>,
) -> Vec<f64> {
    let mut out = vec![0.0; bh * sq * d];
    for h in 0..bh {
        for i in 0..sq {
            let mut s: Vec<f64> = (0..sk)
                .map(|j| {
                    let dot: f64 = (0..d).map(|e| q[(h * sq + i) * d + e] * k[(h * sk + j) * d + e]).sum();
                    let m = mask.map_or(0.0, |m| m[i * sk + j]);
                    let hidden = causal && j > i + sk - sq;
                    if hidden {
                        f64::NEG_INFINITY
                    } else {
                        dot / (d as f64).sqrt() + m
                    }
                })
                .collect();
            let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - mx).exp()).sum();
            s.iter_mut().for_each(|x| *x = (*x - mx).exp() / z);
            for e in 0..d {
                out[(h * sq + i) * d + e] = (0..sk).map(|j| s[j] * v[(h * sk + j) * d + e]).sum();
            }
        }
    }
    out
}

#[test]
fn attention_matches_explicit_softmax_on_both_devices() {
    for dev in devices() {
        let tol = if dev.is_gpu() { (1e-4, 1e-5) } else { (1e-12, 1e-12) };
        // seq 1, seq 37 (not a multiple of any workgroup), and more keys than queries
        for (sq, sk) in [(1usize, 1usize), (37, 37), (5, 9)] {
            let (b, h, d) = (2, 3, 8);
            let q64 = rounded(&random(&[b, h, sq, d], -1.0, 1.0));
            let k64 = rounded(&random(&[b, h, sk, d], -1.0, 1.0));
            let v64 = rounded(&random(&[b, h, sk, d], -1.0, 1.0));
            let m64 = rounded(&random(&[sq, sk], -1.0, 1.0));
            let (q, k, v, m) = (on(&dev, &q64), on(&dev, &k64), on(&dev, &v64), on(&dev, &m64));
            for causal in [false, true] {
                for masked in [false, true] {
                    let mv = vals(&m64);
                    let want = attention_ref(
                        &vals(&q64),
                        &vals(&k64),
                        &vals(&v64),
                        b * h,
                        sq,
                        sk,
                        d,
                        causal,
                        masked.then_some(&mv[..]),
                    );
                    let want = Tensor::from_slice(&want, &[b, h, sq, d], &cpu()).unwrap();
                    let what = format!("{dev} sq={sq} sk={sk} causal={causal} mask={masked}");
                    let y = nn::scaled_dot_product_attention(&q, &k, &v, masked.then_some(&m), causal).unwrap();
                    assert_close(&y, &want, tol.0, tol.1, &what);
                }
            }
        }
        // bad masks: a typed error naming the op and both shapes
        let q = Tensor::zeros(&[1, 2, 4, 8], DType::F32, &dev).unwrap();
        let bad = Tensor::zeros(&[3, 4], DType::F32, &dev).unwrap();
        match nn::scaled_dot_product_attention(&q, &q, &q, Some(&bad), false) {
            Err(Error::ShapeMismatch { op: "scaled_dot_product_attention", lhs, rhs, .. }) => {
                assert_eq!((lhs, rhs), (vec![3, 4], vec![1, 2, 4, 4]))
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn attention_passes_check_grads_at_order_two_with_and_without_the_causal_mask() {
    let (q, k, v) =
        (random(&[1, 2, 3, 4], -1.0, 1.0), random(&[1, 2, 3, 4], -1.0, 1.0), random(&[1, 2, 3, 4], -1.0, 1.0));
    for causal in [false, true] {
        check_grads(|q| nn::scaled_dot_product_attention(q, &k, &v, None, causal), &q, 2).unwrap();
        check_grads(|k| nn::scaled_dot_product_attention(&q, k, &v, None, causal), &k, 2).unwrap();
        check_grads(|v| nn::scaled_dot_product_attention(&q, &k, v, None, causal), &v, 2).unwrap();
    }
    // GPU gradients equal the CPU's
    with_gpu!(g);
    let f = |p: &[Tensor]| nn::scaled_dot_product_attention(&p[0], &p[1], &p[2], None, true)?.square()?.sum_all();
    let to = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
    let (_, want) = value_and_grad_many(f, &[q.clone(), k.clone(), v.clone()]).unwrap();
    let (_, got) = value_and_grad_many(f, &[to(&q), to(&k), to(&v)]).unwrap();
    for (got, want) in got.iter().zip(&want) {
        assert_close(got, want, 1e-3, 1e-4, "attention grads gpu vs cpu");
    }
}

#[test]
fn hvp_through_a_transformer_block_matches_finite_differences() {
    let dev = cpu();
    let mut p = Params::new();
    let ln = nn::LayerNorm::new(&mut p, "ln", 8, &dev).unwrap();
    let attn = MultiheadAttention::new(&mut p, "attn", 8, 2, 3, &dev).unwrap().causal(true);
    let params: Vec<Tensor> = p.tensors().iter().map(|t| t.to_dtype(DType::F64).unwrap()).collect();
    let block = |x: &Tensor| -> wgrad::Result<Tensor> {
        let c = Ctx::eval(&params);
        let h = x.add(&attn.forward(&c, &ln.forward(&c, x)?)?)?;
        h.gelu_tanh()?.square()?.sum_all()
    };
    let x = random(&[2, 5, 8], -1.0, 1.0);
    let v = random(&[2, 5, 8], -1.0, 1.0);
    let hv = vals(&hvp(block, &x, &v).unwrap());
    // central differences of the gradient along v
    let eps = 1e-5;
    let gr = |x: &Tensor| vals(&wgrad::grad(block, x).unwrap());
    let (xp, xm) = (x.add(v.mul_scalar(eps).unwrap()).unwrap(), x.sub(v.mul_scalar(eps).unwrap()).unwrap());
    let (gp, gm) = (gr(&xp), gr(&xm));
    for i in 0..hv.len() {
        let fd = (gp[i] - gm[i]) / (2.0 * eps);
        assert!((hv[i] - fd).abs() <= 1e-5 + 1e-4 * fd.abs(), "element {i}: hvp {} vs fd {fd}", hv[i]);
    }
}

#[test]
fn batch_norm_tracks_running_statistics_and_switches_with_the_mode() {
    for dev in devices() {
        let mut p = Params::new();
        let bn = BatchNorm1d::new(&mut p, "bn", 2, &dev).unwrap();
        let batches: [[f32; 8]; 3] = [
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            [0.0, -1.0, 2.0, 1.0, 4.0, 3.0, 6.0, 5.0],
            [1.0, 1.0, 1.0, 2.0, 1.0, 3.0, 1.0, 4.0],
        ];
        // by hand: running = 0.9 running + 0.1 batch stat (unbiased variance), from (0, 1)
        let (mut rm, mut rv) = ([0.0f64; 2], [1.0f64; 2]);
        for b in &batches {
            let x = Tensor::from_slice(b, &[4, 2], &dev).unwrap();
            let y = bn.forward(&Ctx::train(p.tensors(), 0).with_buffers(p.buffers()), &x).unwrap();
            for c in 0..2 {
                let col: Vec<f64> = (0..4).map(|r| b[r * 2 + c] as f64).collect();
                let m = col.iter().sum::<f64>() / 4.0;
                let var = col.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 4.0;
                rm[c] = 0.9 * rm[c] + 0.1 * m;
                rv[c] = 0.9 * rv[c] + 0.1 * var * 4.0 / 3.0;
                // training normalizes with the batch's (biased) statistics
                let yv = y.to_vec::<f32>().unwrap();
                for r in 0..4 {
                    let want = (col[r] - m) / (var + 1e-5).sqrt();
                    assert!((yv[r * 2 + c] as f64 - want).abs() < 1e-4, "{dev}: train y");
                }
            }
        }
        let bufs = p.buffers().all();
        for c in 0..2 {
            assert!((bufs[0].to_f64_vec().unwrap()[c] - rm[c]).abs() < 1e-5, "{dev}: running mean");
            assert!((bufs[1].to_f64_vec().unwrap()[c] - rv[c]).abs() < 1e-5, "{dev}: running var");
        }
        // eval normalizes with the running statistics, and updates nothing
        let x = Tensor::from_slice(&batches[0], &[4, 2], &dev).unwrap();
        let y = bn.forward(&Ctx::eval(p.tensors()).with_buffers(p.buffers()), &x).unwrap().to_vec::<f32>().unwrap();
        for r in 0..4 {
            for c in 0..2 {
                let want = (batches[0][r * 2 + c] as f64 - rm[c]) / (rv[c] + 1e-5).sqrt();
                assert!((y[r * 2 + c] as f64 - want).abs() < 1e-4, "{dev}: eval y");
            }
        }
        assert_eq!(p.buffers().all()[0].to_f64_vec().unwrap(), bufs[0].to_f64_vec().unwrap());
        // running statistics are saved and loaded with the weights
        let path = std::env::temp_dir().join(format!("wgrad_bn_{}.safetensors", dev.name().len()));
        p.save(&path).unwrap();
        let mut q = Params::new();
        let _ = BatchNorm1d::new(&mut q, "bn", 2, &dev).unwrap();
        q.load(&path).unwrap();
        assert_eq!(q.buffers().all()[1].to_f64_vec().unwrap(), bufs[1].to_f64_vec().unwrap());
        // bad input: one value per channel in training; no buffers passed
        let one = Tensor::zeros(&[1, 2], DType::F32, &dev).unwrap();
        match bn.forward(&Ctx::train(p.tensors(), 0).with_buffers(p.buffers()), &one) {
            Err(Error::Invalid { op: "BatchNorm1d", msg }) => assert!(msg.contains("[1, 2]"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(bn.forward(&Ctx::train(p.tensors(), 0), &x), Err(Error::Invalid { op: "BatchNorm1d", .. })));
    }
}

#[test]
fn lr_schedules_give_their_values_at_given_steps() {
    let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    close(LrSchedule::Constant { lr: 0.1 }.lr_at(999), 0.1);
    let s = LrSchedule::Step { lr: 1.0, step_size: 10, gamma: 0.5 };
    close(s.lr_at(9), 1.0);
    close(s.lr_at(10), 0.5);
    close(s.lr_at(25), 0.25);
    let w = LrSchedule::WarmupCosine { lr: 1e-3, warmup: 100, total: 2000, min_lr: 1e-4 };
    close(w.lr_at(0), 1e-5);
    close(w.lr_at(49), 5e-4);
    close(w.lr_at(100), 1e-3);
    close(w.lr_at(1050), 1e-4 + 0.9e-3 * 0.5); // half-way through the cosine
    close(w.lr_at(2000), 1e-4);
    close(w.lr_at(5000), 1e-4);
    // OneCycle: PyTorch's values for max_lr 1, total 100 (initial 0.04, peak at step 29)
    let o = LrSchedule::one_cycle(1.0, 100);
    close(o.lr_at(0), 0.04);
    close(o.lr_at(29), 1.0);
    close(o.lr_at(99), 0.04 / 1e4);
    let mid = 0.04 / 1e4 + (1.0 - 0.04 / 1e4) * 0.5 * (1.0 + (std::f64::consts::PI * 35.0 / 70.0).cos());
    close(o.lr_at(64), mid);
}

#[test]
fn clip_grad_norm_scales_only_above_the_threshold_and_reports_the_f64_norm() {
    for dev in devices() {
        let a = Tensor::from_slice(&[3.0f32, 0.0], &[2], &dev).unwrap();
        let b = Tensor::from_slice(&[0.0f32, 4.0, 0.0, 0.0], &[2, 2], &dev).unwrap();
        // norm 5: below 10 unchanged, above 1 scaled by 1 / (5 + 1e-6)
        let (same, norm) = clip_grad_norm(&[a.clone(), b.clone()], 10.0).unwrap();
        assert_eq!(norm.shape(), &[1]);
        assert!((norm.to_vec::<f32>().unwrap()[0] - 5.0).abs() < 1e-6);
        assert_eq!(same[0].to_vec::<f32>().unwrap(), a.to_vec::<f32>().unwrap());
        assert_eq!(same[1].to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let (clipped, _) = clip_grad_norm(&[a.clone(), b.clone()], 1.0).unwrap();
        let k = 1.0 / (5.0 + 1e-6);
        assert!((clipped[0].to_vec::<f32>().unwrap()[0] as f64 - 3.0 * k).abs() < 1e-6);
        assert!((clipped[1].to_vec::<f32>().unwrap()[1] as f64 - 4.0 * k).abs() < 1e-6);
        // random gradients: the norm equals the f64 norm
        let gs: Vec<Tensor> = [[7usize, 3], [5, 1], [64, 2]]
            .iter()
            .map(|s| Tensor::from_slice(&rand_vec(s[0] * s[1], -1.0, 1.0), s, &cpu()).unwrap())
            .collect();
        let want: f64 = gs.iter().flat_map(vals).map(|v| v * v).sum::<f64>().sqrt();
        let on: Vec<Tensor> = gs.iter().map(|t| t.to_dtype(DType::F32).unwrap().to_device(&dev).unwrap()).collect();
        let got = clip_grad_norm(&on, 0.5).unwrap().1.to_vec::<f32>().unwrap()[0] as f64;
        assert!((got - want).abs() < 1e-5 * want, "{got} vs {want}");
    }
    assert!(matches!(clip_grad_norm(&[], 1.0), Err(Error::Empty { op: "clip_grad_norm", .. })));
}

#[test]
fn accumulation_averages_micro_batches_and_decay_skips_vectors() {
    for dev in devices() {
        let w = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2], &dev).unwrap();
        let x = Tensor::from_slice(&[1.0f32, -1.0, 0.5, 2.0], &[2, 2], &dev).unwrap();
        let loss = |p: &[Tensor], rows: &[usize]| {
            let xs = x.narrow(0, rows[0], rows.len())?;
            xs.matmul(&p[0])?.square()?.mean_all()
        };
        let (_, full) = value_and_grad_many(|p| loss(p, &[0, 1]), std::slice::from_ref(&w)).unwrap();
        let mut acc = GradAccumulator::new();
        for r in 0..2 {
            acc.add(&value_and_grad_many(|p| loss(p, &[r]), std::slice::from_ref(&w)).unwrap().1).unwrap();
        }
        assert_eq!(acc.count(), 2);
        assert_close(&acc.mean().unwrap()[0], &full[0], 1e-6, 1e-6, "accumulated");
        assert!(acc.mean().is_err());
        // AdamW with decay on matrices only: a zero gradient moves the matrix, not the vector
        let mut p = Params::new();
        p.add("w", w.clone());
        p.add("b", Tensor::from_slice(&[1.0f32, 1.0], &[2], &dev).unwrap());
        let zeros = [w.zeros_like().unwrap(), Tensor::zeros(&[2], DType::F32, &dev).unwrap()];
        let mut opt = Adam::adamw(0.1).weight_decay(0.5).decay_matrices_only(true);
        opt.step(&mut p, &zeros).unwrap();
        let got = p.tensors()[0].to_vec::<f32>().unwrap();
        for (g, w0) in got.iter().zip([1.0f32, 2.0, 3.0, 4.0]) {
            assert!((g - w0 * (1.0 - 0.1 * 0.5)).abs() < 1e-6, "{g}");
        }
        assert_eq!(p.tensors()[1].to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
        assert_eq!(p.names(), &["w".to_string(), "b".to_string()]);
    }
}

#[test]
fn attention_layers_reject_bad_shapes_with_typed_errors() {
    let dev = cpu();
    let mut p = Params::new();
    // head_dim * heads != embedding
    match MultiheadAttention::new(&mut p, "a", 10, 3, 0, &dev) {
        Err(Error::Invalid { op: "MultiheadAttention", msg }) => assert!(msg.contains("10") && msg.contains('3')),
        other => panic!("{:?}", other.err()),
    }
    let mha = MultiheadAttention::new(&mut p, "b", 8, 2, 0, &dev).unwrap();
    let wrong = Tensor::zeros(&[2, 3, 6], DType::F32, &dev).unwrap();
    match mha.forward(&Ctx::eval(p.tensors()), &wrong) {
        Err(Error::Invalid { op: "MultiheadAttention", msg }) => assert!(msg.contains("[2, 3, 6]"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // cross-attention through forward_many, with a mask of the scores' shape
    let q = Tensor::randn(&[2, 3, 8], 1, &dev).unwrap();
    let kv = Tensor::randn(&[2, 5, 8], 2, &dev).unwrap();
    let mask = Tensor::zeros(&[3, 5], DType::F32, &dev).unwrap();
    let y = mha.forward_many(&Ctx::eval(p.tensors()), &[&q, &kv, &kv, &mask]).unwrap();
    assert_eq!(y.shape(), &[2, 3, 8]);
    // a sequence longer than the model's context
    let mut gp = Params::new();
    let cfg = gpt::GptConfig { vocab: 5, layers: 1, heads: 2, embd: 8, ctx: 4, seed: 0 };
    let model = gpt::Gpt::new(&mut gp, &cfg, &dev).unwrap();
    let long = Tensor::from_slice(&[0u32; 6], &[1, 6], &dev).unwrap();
    match model.forward(&Ctx::eval(gp.tensors()), &long) {
        Err(Error::Invalid { op: "Gpt::forward", msg }) => {
            assert!(msg.contains("[1, 6]") && msg.contains('4'), "{msg}")
        }
        other => panic!("{other:?}"),
    }
    let _ = Embedding::new(&mut gp, "unused", 3, 2, 0, &dev).unwrap();
}

/// A 2-layer char-GPT on the shipped corpus for 200 steps: the loss must fall clearly
/// below the unigram baseline (the entropy of the character frequencies).
fn small_gpt_learns(dev: &Device) -> (f64, f64) {
    use rand::SeedableRng;
    let corpus =
        gpt::Corpus::load(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/shakespeare/input.txt").as_ref())
            .unwrap();
    let (chars, ids) = (&corpus.chars, &corpus.train[..200_000]);
    let mut counts = vec![0f64; chars.len()];
    ids.iter().for_each(|&i| counts[i as usize] += 1.0);
    let unigram: f64 =
        counts.iter().filter(|&&c| c > 0.0).map(|&c| -(c / ids.len() as f64) * (c / ids.len() as f64).ln()).sum();
    let cfg = gpt::GptConfig { vocab: chars.len(), layers: 2, heads: 2, embd: 32, ctx: 16, seed: 3 };
    let mut p = Params::new();
    let model = gpt::Gpt::new(&mut p, &cfg, dev).unwrap();
    let mut opt = Adam::adamw(3e-3).betas(0.9, 0.95).weight_decay(0.1).decay_matrices_only(true);
    let sched = LrSchedule::WarmupCosine { lr: 3e-3, warmup: 20, total: 200, min_lr: 3e-4 };
    opt.set_schedule(sched);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let (b, t) = (16, cfg.ctx);
    let (mut last, mut live) = (Vec::new(), Vec::new());
    for step in 0..200u64 {
        let (x, y) = gpt::sample_batch(ids, b, t, &mut rng, dev).unwrap();
        let (loss, grads) =
            value_and_grad_many(|p| nn::cross_entropy(&model.forward(&Ctx::train(p, step), &x)?, &y), p.tensors())
                .unwrap();
        let (grads, _) = clip_grad_norm(&grads, 1.0).unwrap();
        opt.step(&mut p, &grads).unwrap();
        if step == 100 || step == 179 {
            // live GPU buffers stay flat after warm-up (nothing accumulates step to step)
            dev.synchronize().unwrap();
            live.push(dev.counters().live_buffers);
        }
        if step >= 180 {
            last.push(loss);
        }
    }
    if dev.is_gpu() {
        assert_eq!(live[0], live[1], "{dev}: live buffers at steps 100 and 179");
    }
    let mean = last.iter().map(|l| l.to_scalar::<f32>().unwrap() as f64).sum::<f64>() / last.len() as f64;
    (mean, unigram)
}

#[test]
fn a_small_char_gpt_learns_below_the_unigram_baseline_on_cpu_and_gpu() {
    // the GPU: a device of its own, so its live-buffer counter sees only this model
    for dev in std::iter::once(cpu()).chain(fresh_gpu()) {
        let (loss, unigram) = small_gpt_learns(&dev);
        // the unigram entropy is about 3.2 nats; 200 steps of a 2-layer model reach 2.61-2.73
        // (model seeds 1 to 5; this one, 3, is the 2.73)
        assert!(loss < unigram - 0.4, "{dev}: loss {loss} vs unigram {unigram}");
    }
}

#[test]
fn layer_norm_batches_under_vmap_with_shared_and_per_example_weights() {
    use wgrad::{vmap, vmap_many};
    let (x, w, b) = (random(&[4, 3, 5], -2.0, 2.0), random(&[5], 0.5, 1.5), random(&[5], -1.0, 1.0));
    let ws = random(&[4, 5], 0.5, 1.5);
    let per_example = |i: usize, w: &Tensor| {
        let xi = x.narrow(0, i, 1).unwrap().reshape(&[3, 5]).unwrap();
        xi.layer_norm(Some(w), Some(&b), 1e-5).unwrap()
    };
    // shared weight
    let got = vmap(|xi| xi.layer_norm(Some(&w), Some(&b), 1e-5), &x, 0, 0).unwrap();
    let want = Tensor::stack(&(0..4).map(|i| per_example(i, &w)).collect::<Vec<_>>(), 0).unwrap();
    assert_close(&got, &want, 1e-12, 1e-12, "vmap layer_norm");
    // a weight per example, and the gradient rule batched too
    let got =
        vmap_many(|p| p[0].layer_norm(Some(&p[1]), Some(&b), 1e-5), &[x.clone(), ws.clone()], &[Some(0), Some(0)], 0)
            .unwrap();
    let want = Tensor::stack(
        &(0..4).map(|i| per_example(i, &ws.narrow(0, i, 1).unwrap().reshape(&[5]).unwrap())).collect::<Vec<_>>(),
        0,
    )
    .unwrap();
    assert_close(&got, &want, 1e-12, 1e-12, "vmap layer_norm, per-example weight");
    let grads =
        vmap(|xi| wgrad::grad(|x| x.layer_norm(Some(&w), Some(&b), 1e-5)?.sin()?.sum_all(), xi), &x, 0, 0).unwrap();
    for i in 0..4 {
        let xi = x.narrow(0, i, 1).unwrap().reshape(&[3, 5]).unwrap();
        let gi = wgrad::grad(|x| x.layer_norm(Some(&w), Some(&b), 1e-5)?.sin()?.sum_all(), &xi).unwrap();
        assert_close(&grads.narrow(0, i, 1).unwrap().reshape(&[3, 5]).unwrap(), &gi, 1e-12, 1e-12, "vmap(grad)");
    }
}

#[test]
fn batch_norm_2d_normalizes_each_channel_over_batch_and_space() {
    let dev = cpu();
    let mut p = Params::new();
    let bn = nn::BatchNorm2d::new(&mut p, "bn", 3, &dev).unwrap();
    let x = Tensor::randn(&[2, 3, 4, 4], 9, &dev).unwrap().mul_scalar(3.0).unwrap().add_scalar(1.0).unwrap();
    let y = bn.forward(&Ctx::train(p.tensors(), 0).with_buffers(p.buffers()), &x).unwrap();
    let m = y.mean(&[0, 2, 3], false).unwrap().to_f64_vec().unwrap();
    let v = y.square().unwrap().mean(&[0, 2, 3], false).unwrap().to_f64_vec().unwrap();
    for c in 0..3 {
        assert!(m[c].abs() < 1e-5 && (v[c] - 1.0).abs() < 1e-3, "channel {c}: mean {} var {}", m[c], v[c]);
    }
    // a [B, C] input is not an image
    let flat = Tensor::zeros(&[4, 3], DType::F32, &dev).unwrap();
    assert!(matches!(
        bn.forward(&Ctx::train(p.tensors(), 0).with_buffers(p.buffers()), &flat),
        Err(Error::Invalid { op: "BatchNorm2d", .. })
    ));
}
