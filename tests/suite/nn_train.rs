//! Training: losses, optimizers, layers, the IDX loader, safetensors, and a tiny task that
//! must be learned.
use crate::common::*;
use wgrad::data::{parse_idx, read_idx, Mnist};
use wgrad::nn::{self, Activation, AvgPool2d, Conv2d, Ctx, Flatten, Linear, MaxPool2d, Module, Params, Sequential};
use wgrad::optim::{Adam, Optimizer, Sgd};
use wgrad::{check_grads, value_and_grad_many, DType, Device, Error, Tensor};

fn f64t(v: &[f64], s: &[usize]) -> Tensor {
    Tensor::from_slice(v, s, &cpu()).unwrap()
}

#[test]
fn cross_entropy_matches_hand_computed_values_and_is_stable() {
    for dev in devices() {
        // logits [[1, 2, 3], [1, 1, 1]], labels [2, 0]:
        // row 0: -log(e^3 / (e + e^2 + e^3)) = log(1 + e^-1 + e^-2) ; row 1: log 3
        let logits = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 1.0, 1.0, 1.0], &[2, 3], &dev).unwrap();
        let labels = Tensor::from_slice(&[2u32, 0], &[2], &dev).unwrap();
        let want = ((1.0 + (-1.0f64).exp() + (-2.0f64).exp()).ln() + 3f64.ln()) / 2.0;
        let got = nn::cross_entropy(&logits, &labels).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-6, "{got} vs {want} on {dev}");
        // logits of 1e4 and -inf on non-target classes stay finite
        let big =
            Tensor::from_slice(&[1e4f32, 0.0, f32::NEG_INFINITY, 1e4, -1e4, f32::NEG_INFINITY], &[2, 3], &dev).unwrap();
        let l = nn::cross_entropy(&big, &Tensor::from_slice(&[0u32, 0], &[2], &dev).unwrap())
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(l.is_finite() && l.abs() < 1e-3, "{l}");
        let (_, gr) =
            value_and_grad_many(|p| nn::cross_entropy(&p[0], &Tensor::from_slice(&[0u32, 0], &[2], &dev)?), &[big])
                .unwrap();
        assert!(gr[0].to_vec::<f32>().unwrap().iter().all(|v| v.is_finite()));
        // errors
        assert!(matches!(
            nn::cross_entropy(&logits, &Tensor::from_slice(&[3u32, 0], &[2], &dev).unwrap()),
            Err(Error::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            nn::cross_entropy(&logits, &Tensor::from_slice(&[1u32], &[1], &dev).unwrap()),
            Err(Error::ShapeMismatch { op: "cross_entropy", .. })
        ));
        let empty = Tensor::zeros(&[0, 3], DType::F32, &dev).unwrap();
        assert!(matches!(
            nn::cross_entropy(&empty, &Tensor::from_slice::<u32>(&[], &[0], &dev).unwrap()),
            Err(Error::Empty { .. })
        ));
    }
    // gradient: softmax - one_hot, divided by the batch, checked by finite differences too
    let labels = Tensor::from_slice(&[2u32, 0], &[2], &cpu()).unwrap();
    check_grads(|x| nn::cross_entropy(x, &labels), &f64t(&[0.3, -1.0, 2.0, 0.5, 0.1, -0.2], &[2, 3]), 2).unwrap();
}

#[test]
fn mse_and_bce_match_hand_computed_values() {
    let p = f64t(&[1.0, 2.0, 4.0], &[3]);
    let t = f64t(&[1.0, 0.0, 1.0], &[3]);
    // mse = (0 + 4 + 9) / 3
    assert!((nn::mse(&p, &t).unwrap().to_scalar::<f64>().unwrap() - 13.0 / 3.0).abs() < 1e-12);
    // bce(x, y) = -(y log s(x) + (1 - y) log(1 - s(x)))
    let s = |x: f64| 1.0 / (1.0 + (-x).exp());
    let want = [(1.0, 1.0), (2.0, 0.0), (4.0, 1.0)]
        .iter()
        .map(|&(x, y): &(f64, f64)| -(y * s(x).ln() + (1.0 - y) * (1.0 - s(x)).ln()))
        .sum::<f64>()
        / 3.0;
    assert!((nn::binary_cross_entropy_with_logits(&p, &t).unwrap().to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
    check_grads(|x| nn::mse(x, &t), &p, 2).unwrap();
    check_grads(|x| nn::binary_cross_entropy_with_logits(x, &t), &p, 2).unwrap();
    // at logits exactly 0 (where the stable form has its kinks): d/dx = sigmoid(0) - y
    let zero = f64t(&[0.0, 0.0, 0.0], &[3]);
    let g = wgrad::grad(|x| nn::binary_cross_entropy_with_logits(x, &t), &zero).unwrap();
    assert_eq!(g.to_vec::<f64>().unwrap(), vec![-0.5 / 3.0, 0.5 / 3.0, -0.5 / 3.0]);
    check_grads(|x| nn::binary_cross_entropy_with_logits(x, &t), &zero, 2).unwrap();
    let huge = f64t(&[1000.0, -1000.0], &[2]);
    assert!(nn::binary_cross_entropy_with_logits(&huge, &f64t(&[0.0, 1.0], &[2]))
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
        .is_finite());
}

fn one_param(v: &[f32], dev: &Device) -> Params {
    let mut p = Params::new();
    p.add("w", Tensor::from_slice(v, &[v.len()], dev).unwrap());
    p
}

#[test]
fn optimizer_steps_match_hand_computed_updates() {
    for dev in devices() {
        let grad = [Tensor::from_slice(&[0.5f32, -1.0], &[2], &dev).unwrap()];
        // SGD lr 0.1, momentum 0.9, wd 0.01: g' = g + 0.01 p; v1 = g'; v2 = 0.9 v1 + g2'
        let mut p = one_param(&[1.0, 2.0], &dev);
        let mut sgd = Sgd::new(0.1).momentum(0.9).weight_decay(0.01);
        sgd.step(&mut p, &grad).unwrap();
        let g1 = [0.5 + 0.01 * 1.0, -1.0 + 0.01 * 2.0];
        let p1 = [1.0 - 0.1 * g1[0], 2.0 - 0.1 * g1[1]];
        assert_close(&p.tensors()[0], &f64t(&p1, &[2]), 1e-6, 1e-7, "sgd step 1");
        sgd.step(&mut p, &grad).unwrap();
        let v2 = [0.9 * g1[0] + 0.5 + 0.01 * p1[0], 0.9 * g1[1] - 1.0 + 0.01 * p1[1]];
        assert_close(
            &p.tensors()[0],
            &f64t(&[p1[0] - 0.1 * v2[0], p1[1] - 0.1 * v2[1]], &[2]),
            1e-6,
            1e-7,
            "sgd step 2",
        );
        // Adam, first step: m = 0.1 g, v = 0.001 g^2, p -= lr * g / (|g| + eps): a step of lr * sign(g)
        let mut p = one_param(&[1.0, 2.0], &dev);
        let mut adam = Adam::new(0.01);
        adam.step(&mut p, &grad).unwrap();
        assert_close(&p.tensors()[0], &f64t(&[0.99, 2.01], &[2]), 1e-6, 1e-6, "adam step 1");
        // AdamW decays the weights first: p = p (1 - lr wd) - lr sign(g)
        let mut p = one_param(&[1.0, 2.0], &dev);
        let mut adamw = Adam::adamw(0.01).weight_decay(0.1);
        adamw.step(&mut p, &grad).unwrap();
        assert_close(
            &p.tensors()[0],
            &f64t(&[1.0 * 0.999 - 0.01, 2.0 * 0.999 + 0.01], &[2]),
            1e-6,
            1e-6,
            "adamw step 1",
        );
        // errors: wrong count, wrong shape
        let e = adam.step(&mut p, &[]).unwrap_err();
        assert!(matches!(e, Error::Invalid { op: "Optimizer::step", .. }), "{e}");
        let e = adam.step(&mut p, &[Tensor::ones(&[3], DType::F32, &dev).unwrap()]).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. } | Error::Broadcast { .. }), "{e}");
    }
}

#[test]
fn gpu_optimizer_steps_update_in_place() {
    let Some(g) = fresh_gpu() else { return };
    g.context().unwrap().set_poison_outputs(false);
    let mut p = one_param(&[1.0; 1000], &g);
    let grad = [Tensor::ones(&[1000], DType::F32, &g).unwrap()];
    let mut adam = Adam::new(0.1);
    adam.step(&mut p, &grad).unwrap();
    g.synchronize().unwrap();
    let before = g.counters();
    for _ in 0..10 {
        adam.step(&mut p, &grad).unwrap();
    }
    let after = g.counters();
    // the step count / schedule kernel, then the update of every tensor
    assert_eq!(after.dispatches - before.dispatches, 20, "two kernels per step");
    assert_eq!(after.readbacks, before.readbacks);
    assert_eq!(after.buffer_allocations, before.buffer_allocations, "no new buffers");
    assert_eq!(after.live_buffers, before.live_buffers);
    // constant unit gradients: each Adam step moves by lr (m-hat = v-hat = 1), 11 steps
    let got = p.tensors()[0].to_f64_vec().unwrap();
    assert!(got.iter().all(|&x| (x - (1.0 - 11.0 * 0.1)).abs() < 1e-5), "adam: {:?}", &got[..4]);
    // SGD with momentum on a whole number of vec4s and on a ragged length
    for n in [1000usize, 999] {
        let mut p = one_param(&vec![1.0; n], &g);
        let grad = [Tensor::ones(&[n], DType::F32, &g).unwrap()];
        let mut sgd = Sgd::new(0.1).momentum(0.9);
        sgd.step(&mut p, &grad).unwrap();
        sgd.step(&mut p, &grad).unwrap();
        let want = 1.0 - 0.1 * 1.0 - 0.1 * 1.9;
        let got = p.tensors()[0].to_f64_vec().unwrap();
        assert!(got.iter().all(|&x| (x - want).abs() < 1e-6), "sgd n={n}: {:?}", &got[..4]);
    }
}

#[test]
fn layers_have_the_expected_shapes_and_gradients() {
    // Conv2d: gradients by finite differences (CPU, f64), then the GPU's forward and both
    // gradients (im2col's VJP is col2im) against the CPU
    let x = rounded(&f64t(&rand_vec(2 * 2 * 5 * 6, -1.0, 1.0), &[2, 2, 5, 6]));
    let w = rounded(&f64t(&rand_vec(3 * 2 * 3 * 3, -1.0, 1.0), &[3, 2, 3, 3]));
    let b = rounded(&f64t(&rand_vec(3, -1.0, 1.0), &[3]));
    const CONVS: [(usize, usize); 3] = [(1, 1), (2, 0), (2, 1)];
    for (stride, pad) in CONVS {
        check_grads(|w| x.conv2d(w, None, stride, pad), &w, 2)
            .unwrap_or_else(|e| panic!("conv wrt w, stride {stride} pad {pad}: {e}"));
        check_grads(|x| x.conv2d(&w, None, stride, pad), &x, 1).unwrap_or_else(|e| panic!("conv wrt x: {e}"));
        check_grads(|b| x.conv2d(&w, Some(b), stride, pad), &b, 1).unwrap_or_else(|e| panic!("conv wrt b: {e}"));
    }
    let y = x.conv2d(&w, None, 1, 0).unwrap().to_vec::<f64>().unwrap();
    let (xv, wv) = (x.to_vec::<f64>().unwrap(), w.to_vec::<f64>().unwrap());
    let mut want = 0.0;
    for c in 0..2 {
        for i in 0..3 {
            for j in 0..3 {
                want += wv[((1 * 2 + c) * 3 + i) * 3 + j] * xv[(c * 5 + i) * 6 + j];
            }
        }
    }
    assert!((y[12] - want).abs() < 1e-12, "{} vs {want}", y[12]);
    with_gpu!(g);
    let to_gpu = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
    let (xg, wg, bg) = (to_gpu(&x), to_gpu(&w), to_gpu(&b));
    for (stride, pad) in CONVS {
        let what = format!("stride {stride} pad {pad}");
        let y = x.conv2d(&w, Some(&b), stride, pad).unwrap();
        let yg = xg.conv2d(&wg, Some(&bg), stride, pad).unwrap();
        assert_close(&yg, &y, 1e-5, 1e-5, &format!("conv2d on the GPU, {what}"));
        // gradients of <conv(x, w) + b, v> for a fixed v: dx through col2im, dw and db
        let v = rounded(&f64t(&rand_vec(y.numel(), -1.0, 1.0), y.shape()));
        let vg = to_gpu(&v);
        let loss = |p: &[Tensor], v: &Tensor| p[0].conv2d(&p[1], Some(&p[2]), stride, pad)?.mul(v)?.sum_all();
        let (_, want) = value_and_grad_many(|p| loss(p, &v), &[x.clone(), w.clone(), b.clone()]).unwrap();
        let (_, got) = value_and_grad_many(|p| loss(p, &vg), &[xg.clone(), wg.clone(), bg.clone()]).unwrap();
        for ((name, gt), wt) in ["input", "weight", "bias"].iter().zip(&got).zip(&want) {
            assert_close(gt, wt, 1e-4, 1e-5, &format!("conv2d's {name} gradient on the GPU, {what}"));
        }
    }
    // a small CNN end to end: shapes, and its loss and gradients equal the CPU's
    let dev = g.clone();
    let mut p = Params::new();
    let m = Sequential::new()
        .push(Conv2d::new(&mut p, "c1", 1, 4, 3, 1, 1, 0, &dev).unwrap())
        .push(Activation::Gelu)
        .push(MaxPool2d(2))
        .push(Flatten)
        .push(Linear::new(&mut p, "fc", 4 * 4 * 4, 3, 1, &dev).unwrap());
    let xb = Tensor::randn(&[5, 1, 8, 8], 3, &dev).unwrap();
    assert_eq!(m.forward(&Ctx::eval(p.tensors()), &xb).unwrap().shape(), &[5, 3]);
    assert_eq!(p.names(), &["c1.weight", "c1.bias", "fc.weight", "fc.bias"]);
    let labels = [0u32, 2, 1, 1, 0];
    let cnn_loss = |params: &[Tensor], xb: &Tensor, dev: &Device| {
        let y = Tensor::from_slice(&labels, &[5], dev)?;
        nn::cross_entropy(&m.forward(&Ctx::eval(params), xb)?, &y)
    };
    let (loss, grads) = value_and_grad_many(|q| cnn_loss(q, &xb, &dev), p.tensors()).unwrap();
    let on_cpu: Vec<Tensor> = p.tensors().iter().map(|t| t.to_device(&cpu()).unwrap()).collect();
    let (want_loss, want_grads) =
        value_and_grad_many(|q| cnn_loss(q, &xb.to_device(&cpu()).unwrap(), &cpu()), &on_cpu).unwrap();
    let lv = loss.to_scalar::<f32>().unwrap();
    assert!(lv.is_finite() && lv > 0.0, "CNN loss {lv}");
    assert_close(&loss, &want_loss, 1e-5, 1e-5, "CNN loss on the GPU");
    for ((name, gt), wt) in p.names().iter().zip(&grads).zip(&want_grads) {
        assert_close(gt, wt, 1e-4, 1e-5, &format!("CNN gradient of {name} on the GPU"));
    }
    // dropout: identity in eval mode, zeroes about p of the elements in training
    let d = nn::Dropout { p: 0.5, seed: 1 };
    let ones = Tensor::ones(&[1000], DType::F32, &dev).unwrap();
    assert_eq!(d.forward(&Ctx::eval(&[]), &ones).unwrap().to_vec::<f32>().unwrap(), vec![1.0; 1000]);
    let kept = d.forward(&Ctx::train(&[], 0), &ones).unwrap().to_vec::<f32>().unwrap();
    let zeros = kept.iter().filter(|&&v| v == 0.0).count();
    assert!((400..600).contains(&zeros), "{zeros}");
    assert!(kept.iter().all(|&v| v == 0.0 || v == 2.0));
}

#[test]
fn avg_pool2d_matches_window_means_and_its_vjp_spreads_evenly() {
    // hand-computed: 2x2 means of a 4x4 ramp 0..16
    let ramp: Vec<f64> = (0..16).map(f64::from).collect();
    let x = f64t(&ramp, &[1, 1, 4, 4]);
    let pool = |x: &Tensor| AvgPool2d(2).forward(&Ctx::eval(&[]), x);
    assert_eq!(pool(&x).unwrap().to_vec::<f64>().unwrap(), vec![2.5, 4.5, 10.5, 12.5]);
    // its VJP gives each input g / k^2 of its window's cotangent
    let g = wgrad::grad(|x| pool(x)?.mul(f64t(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]))?.sum_all(), &x).unwrap();
    let want: Vec<f64> = (0..16).map(|i| [1.0, 2.0, 3.0, 4.0][(i / 8) * 2 + (i % 4) / 2] / 4.0).collect();
    assert_eq!(g.to_vec::<f64>().unwrap(), want);
    let xr = random(&[2, 3, 6, 4], -1.0, 1.0);
    check_grads(pool, &xr, 2).unwrap();
    let e = pool(&random(&[1, 1, 5, 4], -1.0, 1.0)).unwrap_err();
    assert!(matches!(e, Error::Invalid { op: "AvgPool2d", .. }), "{e}");
    // the GPU's forward and VJP against the CPU's
    with_gpu!(gd);
    let xr = rounded(&xr);
    let v = rounded(&random(&[2, 3, 3, 2], -1.0, 1.0));
    let to = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(&gd).unwrap();
    assert_close(&pool(&to(&xr)).unwrap(), &pool(&xr).unwrap(), 1e-6, 1e-6, "AvgPool2d on the GPU");
    let (_, want) = wgrad::vjp(pool, &xr, &v).unwrap();
    let (_, got) = wgrad::vjp(pool, &to(&xr), &to(&v)).unwrap();
    assert_close(&got, &want, 1e-6, 1e-6, "AvgPool2d's VJP on the GPU");
}

#[test]
fn two_spirals_are_learned_to_nearly_100_percent() {
    with_gpu!(g);
    // two interleaved spirals, 200 points
    let n = 200;
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for i in 0..n {
        let class = (i % 2) as u32;
        let t = (i / 2) as f64 / (n / 2) as f64 * 3.0 * std::f64::consts::PI / 2.0 + 0.5;
        let sign = if class == 0 { 1.0 } else { -1.0 };
        xs.push((sign * t * t.cos() / 5.0) as f32);
        xs.push((sign * t * t.sin() / 5.0) as f32);
        ys.push(class);
    }
    let x = Tensor::from_slice(&xs, &[n, 2], &g).unwrap();
    let y = Tensor::from_slice(&ys, &[n], &g).unwrap();
    let mut p = Params::new();
    let m = Sequential::new()
        .push(Linear::new(&mut p, "l1", 2, 64, 0, &g).unwrap())
        .push(Activation::Tanh)
        .push(Linear::new(&mut p, "l2", 64, 64, 1, &g).unwrap())
        .push(Activation::Tanh)
        .push(Linear::new(&mut p, "l3", 64, 2, 2, &g).unwrap());
    let mut opt = Adam::new(0.02);
    for step in 0..400 {
        let (_, grads) =
            value_and_grad_many(|ps| nn::cross_entropy(&m.forward(&Ctx::train(ps, step), &x)?, &y), p.tensors())
                .unwrap();
        opt.step(&mut p, &grads).unwrap();
    }
    let pred = m.forward(&Ctx::eval(p.tensors()), &x).unwrap().argmax(1, false).unwrap();
    let acc = pred.eq(&y).unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(acc >= 0.98, "training accuracy {acc}");
}

#[test]
fn a_1000_step_training_loop_holds_gpu_memory_flat() {
    let Some(g) = fresh_gpu() else { return };
    g.context().unwrap().set_poison_outputs(false);
    let x = Tensor::randn(&[32, 16], 0, &g).unwrap();
    let y = Tensor::from_slice(&(0..32u32).map(|i| i % 4).collect::<Vec<_>>(), &[32], &g).unwrap();
    let mut p = Params::new();
    let m = Sequential::new()
        .push(Linear::new(&mut p, "a", 16, 32, 0, &g).unwrap())
        .push(Activation::Relu)
        .push(Linear::new(&mut p, "b", 32, 4, 1, &g).unwrap());
    let mut opt = Sgd::new(0.05).momentum(0.9);
    let mut step = |i: u64| {
        let (_, grads) =
            value_and_grad_many(|ps| nn::cross_entropy(&m.forward(&Ctx::train(ps, i), &x)?, &y), p.tensors()).unwrap();
        opt.step(&mut p, &grads).unwrap();
    };
    for i in 0..50 {
        step(i);
    }
    g.synchronize().unwrap();
    let before = g.counters();
    for i in 0..1000 {
        step(i);
    }
    g.synchronize().unwrap();
    let after = g.counters();
    assert_eq!(after.live_buffers, before.live_buffers, "live buffers grew over 1,000 steps");
    assert_eq!(after.buffer_allocations, before.buffer_allocations);
    assert_eq!(after.readbacks, before.readbacks, "a training step reads nothing back");
}

#[test]
fn params_round_trip_through_safetensors_and_bad_files_are_named() {
    with_gpu!(g);
    let dir = std::env::temp_dir().join(format!("wgrad-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    let mut p = Params::new();
    p.add("a.weight", Tensor::randn(&[3, 4], 1, &g).unwrap());
    p.add("a.bias", Tensor::randn(&[4], 2, &g).unwrap());
    p.save(&path).unwrap();
    let mut q = Params::new();
    q.add("a.weight", Tensor::zeros(&[3, 4], DType::F32, &cpu()).unwrap());
    q.add("a.bias", Tensor::zeros(&[4], DType::F32, &cpu()).unwrap());
    q.load(&path).unwrap();
    for (a, b) in p.tensors().iter().zip(q.tensors()) {
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    }
    let mut wrong_shape = Params::new();
    wrong_shape.add("a.weight", Tensor::zeros(&[4, 3], DType::F32, &cpu()).unwrap());
    let e = wrong_shape.load(&path).unwrap_err();
    assert!(e.to_string().contains("a.weight") && e.to_string().contains("shape"), "{e}");
    let mut wrong_dtype = Params::new();
    wrong_dtype.add("a.bias", Tensor::zeros(&[4], DType::F64, &cpu()).unwrap());
    let e = wrong_dtype.load(&path).unwrap_err();
    assert!(e.to_string().contains("a.bias") && e.to_string().contains("dtype"), "{e}");
    let mut missing = Params::new();
    missing.add("b.weight", Tensor::zeros(&[1], DType::F32, &cpu()).unwrap());
    assert!(missing.load(&path).unwrap_err().to_string().contains("b.weight"));
    assert_eq!(wrong_shape.tensors()[0].to_vec::<f32>().unwrap(), vec![0.0; 12], "a failed load replaces nothing");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_idx_loader_reads_good_files_and_rejects_corrupt_ones() {
    // hand-made: 2 images of 2x3, and 2 labels
    let mut img = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3];
    img.extend(1..=12u8);
    let idx = parse_idx(&img, 3, "images").unwrap();
    assert_eq!(idx.dims, vec![2, 2, 3]);
    assert_eq!(idx.data, (1..=12).collect::<Vec<u8>>());
    assert!(matches!(parse_idx(&img[..20], 3, "t"), Err(Error::Format { .. })), "truncated data");
    assert!(matches!(parse_idx(&img[..10], 3, "t"), Err(Error::Format { .. })), "truncated header");
    let mut bad_magic = img.clone();
    bad_magic[2] = 9;
    assert!(parse_idx(&bad_magic, 3, "t").unwrap_err().to_string().contains("magic"));
    assert!(parse_idx(&img, 1, "t").unwrap_err().to_string().contains("rank"));
    // a directory with plain (not gzipped) files, then a corrupt label file
    let dir = std::env::temp_dir().join(format!("wgrad-idx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let labels = vec![0, 0, 8, 1, 0, 0, 0, 2, 7, 3];
    for split in ["train", "t10k"] {
        std::fs::write(dir.join(format!("{split}-images-idx3-ubyte")), &img).unwrap();
        std::fs::write(dir.join(format!("{split}-labels-idx1-ubyte")), &labels).unwrap();
    }
    let m = Mnist::load(&dir).unwrap();
    assert_eq!((m.train.len(), m.train.rows, m.train.cols, m.test.labels.clone()), (2, 2, 3, vec![7, 3]));
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), &labels[..9]).unwrap();
    let e = Mnist::load(&dir).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e}");
    std::fs::remove_dir_all(&dir).ok();
    assert!(matches!(read_idx(std::path::Path::new("/nonexistent/x"), 1), Err(Error::Io { .. })));
    // the shipped subset (gzipped)
    let m = Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/mnist")).unwrap();
    assert_eq!((m.train.len(), m.test.len(), m.train.rows, m.train.cols), (8000, 2000, 28, 28));
    // the same files as bytes (what the web page fetches), gzipped and plain
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/mnist");
    let gz = |name: &str| std::fs::read(format!("{dir}/{name}.gz")).unwrap();
    let (ti, tl, vi, vl) = (
        gz("train-images-idx3-ubyte"),
        gz("train-labels-idx1-ubyte"),
        gz("t10k-images-idx3-ubyte"),
        gz("t10k-labels-idx1-ubyte"),
    );
    let from_gz = Mnist::from_bytes(&ti, &tl, &vi, &vl).unwrap();
    assert_eq!(
        (from_gz.train.images.clone(), from_gz.test.labels.clone()),
        (m.train.images.clone(), m.test.labels.clone())
    );
    let plain = |b: &[u8]| {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(b), &mut out).unwrap();
        out
    };
    let from_plain = Mnist::from_bytes(&plain(&ti), &plain(&tl), &plain(&vi), &plain(&vl)).unwrap();
    assert_eq!((from_plain.train.labels, from_plain.test.images), (m.train.labels, m.test.images));
    // a label file where an image file belongs names the split and what is wrong
    let e = Mnist::from_bytes(&tl, &tl, &vi, &vl).unwrap_err();
    assert!(e.to_string().contains("MNIST train images") && e.to_string().contains("rank"), "{e}");
}

#[test]
fn fused_cross_entropy_matches_the_composite_to_third_order() {
    // the fused loss / gradient kernels against log_softmax + gather, on the GPU and CPU
    let composite = |z: &Tensor, y: &Tensor| -> wgrad::Result<Tensor> {
        z.log_softmax(1)?.gather(1, &y.reshape(&[y.numel(), 1])?)?.mean_all()?.neg()
    };
    let (b, c) = (37, 11);
    let ys: Vec<u32> = (0..b as u32).map(|i| (i * 7) % c as u32).collect();
    let z64 = f64t(&rand_vec(b * c, -3.0, 3.0), &[b, c]);
    let y_cpu = Tensor::from_slice(&ys, &[b], &cpu()).unwrap();
    let v64 = f64t(&rand_vec(b * c, -1.0, 1.0), &[b, c]);
    let want_loss = composite(&z64, &y_cpu).unwrap();
    let want_grad = wgrad::grad(|z| composite(z, &y_cpu), &z64).unwrap();
    let want_hvp = wgrad::hvp(|z| composite(z, &y_cpu), &z64, &v64).unwrap();
    assert_close(&nn::cross_entropy(&z64, &y_cpu).unwrap(), &want_loss, 1e-12, 1e-12, "cpu loss");
    assert_close(&wgrad::grad(|z| nn::cross_entropy(z, &y_cpu), &z64).unwrap(), &want_grad, 1e-12, 1e-12, "cpu grad");
    assert_close(
        &wgrad::hvp(|z| nn::cross_entropy(z, &y_cpu), &z64, &v64).unwrap(),
        &want_hvp,
        1e-10,
        1e-12,
        "cpu hvp",
    );
    // third order by finite differences (the gradient op's VJP differentiated again)
    let labels = Tensor::from_slice(&[2u32, 0, 1], &[3], &cpu()).unwrap();
    check_grads(|x| nn::cross_entropy(x, &labels), &f64t(&rand_vec(12, -2.0, 2.0), &[3, 4]), 3).unwrap();
    let Some(g) = fresh_gpu() else { return };
    let z = z64.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
    let v = v64.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
    let y = Tensor::from_slice(&ys, &[b], &g).unwrap();
    let before = g.counters();
    let loss = nn::cross_entropy(&z, &y).unwrap();
    assert_eq!(g.counters().dispatches - before.dispatches, 1, "the loss is one kernel");
    assert_close(&loss, &want_loss, 1e-5, 1e-6, "gpu loss");
    assert_close(&wgrad::grad(|z| nn::cross_entropy(z, &y), &z).unwrap(), &want_grad, 1e-4, 1e-6, "gpu grad");
    assert_close(&wgrad::hvp(|z| nn::cross_entropy(z, &y), &z, &v).unwrap(), &want_hvp, 1e-4, 1e-6, "gpu hvp");
}

#[test]
fn fused_max_pool_matches_the_max_reduction_with_ties_and_nan() {
    // reference: the max over the [B, C, H/k, k, W/k, k] view and its VJP (ties split)
    let composite = |x: &Tensor, k: usize| -> wgrad::Result<Tensor> {
        let s = x.shape().to_vec();
        x.reshape(&[s[0], s[1], s[2] / k, k, s[3] / k, k])?.max(&[3, 5], false)
    };
    // values on a coarse grid so windows hold ties
    let vals: Vec<f64> = rand_vec(2 * 3 * 6 * 4, -2.0, 2.0).iter().map(|v| (v * 2.0).round() / 2.0).collect();
    let x = f64t(&vals, &[2, 3, 6, 4]);
    let w = f64t(&rand_vec(2 * 3 * 3 * 2, -1.0, 1.0), &[2, 3, 3, 2]);
    let loss = |f: &dyn Fn(&Tensor) -> wgrad::Result<Tensor>, x: &Tensor| -> wgrad::Result<Tensor> {
        f(x)?.mul(&w.to_dtype(x.dtype())?.to_device(x.device())?)?.sum_all()
    };
    let want = composite(&x, 2).unwrap();
    let want_grad = wgrad::grad(|x| loss(&|x| composite(x, 2), x), &x).unwrap();
    assert_close(&x.max_pool2d(2).unwrap(), &want, 0.0, 0.0, "cpu max_pool2d");
    assert_close(
        &wgrad::grad(|x| loss(&|x| x.max_pool2d(2), x), &x).unwrap(),
        &want_grad,
        1e-12,
        1e-12,
        "cpu gradient with ties",
    );
    // second order by finite differences at distinct values (the gradient's own VJP)
    let distinct = f64t(&rand_vec(1 * 2 * 4 * 4, -2.0, 2.0), &[1, 2, 4, 4]);
    let w2 = f64t(&rand_vec(1 * 2 * 2 * 2, -1.0, 1.0), &[1, 2, 2, 2]);
    check_grads(|x| x.max_pool2d(2)?.square()?.mul(&w2)?.sum_all(), &distinct, 2).unwrap();
    assert!(matches!(x.max_pool2d(4), Err(Error::Invalid { op: "max_pool2d", .. })));
    let Some(g) = fresh_gpu() else { return };
    let xg = x.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
    let before = g.counters();
    let pooled = xg.max_pool2d(2).unwrap();
    assert_eq!(g.counters().dispatches - before.dispatches, 1, "one kernel");
    assert_close(&pooled, &want, 0.0, 0.0, "gpu max_pool2d");
    assert_close(
        &wgrad::grad(|x| loss(&|x| x.max_pool2d(2), x), &xg).unwrap(),
        &want_grad,
        1e-6,
        1e-6,
        "gpu gradient with ties",
    );
    // a strided (transposed-back) view and a NaN: NaN wins the window, its gradient is NaN
    let mut nan_vals: Vec<f32> = vals.iter().map(|&v| v as f32).collect();
    nan_vals[5] = f32::NAN;
    let xn = Tensor::from_slice(&nan_vals, &[2, 3, 6, 4], &g).unwrap();
    let p = xn.max_pool2d(2).unwrap().to_vec::<f32>().unwrap();
    let pc = composite(&xn.to_device(&cpu()).unwrap(), 2).unwrap().to_vec::<f32>().unwrap();
    assert!(p.iter().zip(&pc).all(|(a, b)| a == b || (a.is_nan() && b.is_nan())), "{p:?} vs {pc:?}");
    let xt = xg.permute(&[0, 1, 3, 2]).unwrap().contiguous().unwrap().permute(&[0, 1, 3, 2]).unwrap();
    assert_close(&xt.max_pool2d(2).unwrap(), &want, 0.0, 0.0, "gpu max_pool2d of a strided view");
}

#[test]
fn multi_tensor_steps_equal_per_tensor_steps_in_one_dispatch() {
    let Some(g) = fresh_gpu() else { return };
    // 20 parameters (more than one dispatch binds on adapters with few storage buffers),
    // ragged and whole-quad sizes mixed
    let sizes: Vec<usize> = (0..20).map(|i| [1, 7, 64, 257, 1000][i % 5] + i).collect();
    let values = |seed: f64| -> Vec<Vec<f32>> {
        sizes.iter().enumerate().map(|(k, &n)| (0..n).map(|i| ((i + k) as f64 * seed).sin() as f32).collect()).collect()
    };
    let (p0, g0) = (values(0.37), values(0.91));
    let make = |dev: &Device, v: &[Vec<f32>]| -> Vec<Tensor> {
        v.iter().map(|x| Tensor::from_slice(x, &[x.len()], dev).unwrap()).collect()
    };
    for adam in [false, true] {
        let run_many = |dev: &Device| {
            let (mut p, grads) = (make(dev, &p0), make(dev, &g0));
            // (each state its own buffer: a clone would share storage)
            let zeros = |p: &[Tensor]| -> Vec<Tensor> { p.iter().map(|t| t.zeros_like().unwrap()).collect() };
            let (mut s1, mut s2) = (zeros(&p), zeros(&p));
            let h = wgrad::AdamParams {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.99,
                eps: 1e-8,
                weight_decay: 0.1,
                bias_correction1: 0.1,
                bias_correction2: 0.01,
                decoupled: true,
            };
            for _ in 0..3 {
                if adam {
                    Tensor::adam_update_many_(&mut p, &grads, &mut s1, &mut s2, h, None).unwrap();
                } else {
                    Tensor::sgd_update_many_(&mut p, &grads, &mut s1, 0.1, 0.9, 0.01, None).unwrap();
                }
            }
            let mut p_one = make(dev, &p0);
            let (mut t1, mut t2) = (zeros(&p_one), zeros(&p_one));
            for _ in 0..3 {
                for k in 0..p_one.len() {
                    if adam {
                        p_one[k].adam_update_(&grads[k], &mut t1[k], &mut t2[k], h).unwrap();
                    } else {
                        p_one[k].sgd_update_(&grads[k], &mut t1[k], 0.1, 0.9, 0.01).unwrap();
                    }
                }
            }
            (p, p_one)
        };
        g.synchronize().unwrap();
        let (gpu_many, gpu_one) = run_many(&g);
        let (cpu_many, _) = run_many(&cpu());
        for k in 0..sizes.len() {
            let what = format!("{} tensor {k} ({} elements)", if adam { "adam" } else { "sgd" }, sizes[k]);
            assert_close(&gpu_many[k], &gpu_one[k], 1e-6, 1e-7, &what);
            assert_close(&gpu_many[k], &cpu_many[k], 1e-5, 1e-6, &what);
        }
    }
    // one dispatch per step for a model's parameters where the adapter binds enough buffers
    let limit = g.context().unwrap().limits().max_storage_buffers_per_shader_stage;
    let (mut p, grads) = (make(&g, &p0[..4]), make(&g, &g0[..4]));
    let mut v: Vec<Tensor> = p.iter().map(|t| t.zeros_like().unwrap()).collect();
    g.synchronize().unwrap();
    let before = g.counters().dispatches;
    Tensor::sgd_update_many_(&mut p, &grads, &mut v, 0.1, 0.9, 0.0, None).unwrap();
    let n = g.counters().dispatches - before;
    assert_eq!(n, (4u64 * 3).div_ceil((limit / 3 * 3) as u64), "4 parameters in {n} dispatches (limit {limit})");
    // bad input: counts and shapes
    let e = Tensor::sgd_update_many_(&mut p, &grads[..3], &mut v, 0.1, 0.0, 0.0, None).unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
}
