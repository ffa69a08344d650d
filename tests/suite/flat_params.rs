//! Flat parameters: `Tensor::pack` against values written by hand, training with flat
//! parameters equal to training without them (bitwise on the CPU in f64), one update
//! dispatch per flat buffer, and the errors for parameters replaced behind its back.
use crate::common::*;
use wgrad::nn::Params;
use wgrad::optim::{Adam, LrSchedule, Optimizer, Sgd};
use wgrad::{check_grads, jit, value_and_grad_many, DType, Device, Error, Result, Tensor};

#[test]
fn pack_places_windows_and_zeros_between() {
    for dev in devices() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &dev).unwrap();
        let at = a.t().unwrap(); // strided: [[1, 4], [2, 5], [3, 6]]
        let b = Tensor::from_slice(&[7.0f32, 8.0, 9.0, 10.0], &[4], &dev).unwrap();
        let b_view = b.narrow(0, 1, 2).unwrap(); // [8, 9] from offset 1
        let packed = Tensor::pack(&[a.clone(), at, b_view], &[1, 8, 15], 18).unwrap();
        let want = [0., 1., 2., 3., 4., 5., 6., 0., 1., 4., 2., 5., 3., 6., 0., 8., 9., 0.];
        assert_eq!(packed.to_vec::<f32>().unwrap(), want.map(|v| v as f32), "{}", dev.name());
        // bad windows: overlapping, out of order, past the end, a count mismatch
        for (offsets, len) in [(vec![0usize, 3], 20), (vec![8, 0], 20), (vec![0, 6], 9)] {
            let e = Tensor::pack(&[a.clone(), a.clone()], &offsets, len).unwrap_err();
            assert!(matches!(e, Error::Invalid { op: "pack", .. }), "{offsets:?}: {e}");
        }
        let e = Tensor::pack(std::slice::from_ref(&a), &[0, 6], 12).unwrap_err();
        assert!(matches!(e, Error::Invalid { op: "pack", .. }), "{e}");
        assert!(matches!(Tensor::pack(&[], &[], 4).unwrap_err(), Error::Empty { op: "pack", .. }));
        // a is still usable
        assert_eq!(a.sum_all().unwrap().to_vec::<f32>().unwrap(), vec![21.0]);
    }
}

#[test]
fn pack_of_many_tensors_matches_cpu_in_few_dispatches() {
    // 23 tensors of ragged sizes, more than one dispatch binds in a browser (7)
    let sizes: Vec<usize> = (0..23).map(|i| 1 + (i * 7) % 13).collect();
    let offsets: Vec<usize> = sizes.iter().scan(3, |at, n| Some(std::mem::replace(at, *at + n + 2))).collect();
    let len = offsets.last().unwrap() + sizes.last().unwrap() + 5;
    let values: Vec<Vec<f64>> = sizes.iter().map(|&n| rand_vec(n, -2.0, 2.0)).collect();
    let mut want = vec![0.0f64; len];
    for ((v, &at), &n) in values.iter().zip(&offsets).zip(&sizes) {
        want[at..at + n].copy_from_slice(v);
    }
    let c = cpu();
    let parts: Vec<Tensor> = values.iter().map(|v| Tensor::from_slice(v, &[v.len()], &c).unwrap()).collect();
    assert_eq!(Tensor::pack(&parts, &offsets, len).unwrap().to_vec::<f64>().unwrap(), want);
    // a device of its own: the dispatch count is not shared with tests running beside it
    let Some(g) = fresh_gpu() else { return };
    let parts: Vec<Tensor> = parts.iter().map(|t| t.to_dtype(DType::F32).unwrap().to_device(&g).unwrap()).collect();
    g.synchronize().unwrap();
    let before = g.counters().dispatches;
    let packed = Tensor::pack(&parts, &offsets, len).unwrap();
    let dispatches = g.counters().dispatches - before;
    let per = (g.context().unwrap().limits().max_storage_buffers_per_shader_stage - 1).clamp(1, 16) as u64;
    assert_eq!(dispatches, 23u64.div_ceil(per), "23 tensors, {per} per dispatch");
    let want32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
    assert_eq!(packed.to_vec::<f32>().unwrap(), want32);
}

#[test]
fn pack_derivatives_check() {
    let c = cpu();
    let other = Tensor::from_slice(&[0.5f64, -1.5, 2.0], &[3], &c).unwrap();
    let w = Tensor::from_slice(&rand_vec(12, -1.0, 1.0), &[12], &c).unwrap();
    // f(x) = <w, pack(x^2, other)>: first and second derivatives through the windows
    let f = |x: &Tensor| -> Result<Tensor> {
        let p = Tensor::pack(&[x.square()?, other.clone()], &[1, 8], 12)?;
        p.mul(&w)?.sum_all()
    };
    let x = Tensor::from_slice(&rand_vec(6, -1.0, 1.0), &[2, 3], &c).unwrap();
    check_grads(f, &x, 2).unwrap();
    // the GPU's gradient and tangent equal the CPU's (the VJP slices windows, the JVP packs)
    let grad_cpu = wgrad::grad(f, &x).unwrap();
    let t = Tensor::from_slice(&rand_vec(6, -1.0, 1.0), &[2, 3], &c).unwrap();
    let (_, tan_cpu) = wgrad::jvp(f, &x, &t).unwrap();
    with_gpu!(g);
    let on_gpu = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
    let (other_g, w_g) = (on_gpu(&other), on_gpu(&w));
    let fg = |x: &Tensor| -> Result<Tensor> {
        let p = Tensor::pack(&[x.square()?, other_g.clone()], &[1, 8], 12)?;
        p.mul(&w_g)?.sum_all()
    };
    let grad_gpu = wgrad::grad(fg, &on_gpu(&x)).unwrap();
    let (_, tan_gpu) = wgrad::jvp(fg, &on_gpu(&x), &on_gpu(&t)).unwrap();
    assert_close(&grad_gpu, &on_gpu(&grad_cpu), 1e-5, 1e-6, "pack gradient on the GPU");
    assert_close(&tan_gpu, &on_gpu(&tan_cpu), 1e-5, 1e-6, "pack tangent on the GPU");
}

/// A two-layer net over [w1 (5x6), b1 (6), w2 (6x3), b2 (3), s ()]: odd sizes, so the
/// flat windows have padding, and a rank-0 parameter.
fn net_params(dev: &Device, dtype: DType) -> Params {
    let mut p = Params::new();
    let shapes: [(&str, &[usize]); 5] = [("b1", &[6]), ("w1", &[5, 6]), ("s", &[]), ("w2", &[6, 3]), ("b2", &[3])];
    for (k, (name, shape)) in shapes.iter().enumerate() {
        let t = Tensor::randn_dtype(shape, 40 + k as u64, dtype, dev).unwrap().mul_scalar(0.5).unwrap();
        p.add(name, t);
    }
    p
}

fn net_loss(p: &[Tensor], x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let (b1, w1, s, w2, b2) = (&p[0], &p[1], &p[2], &p[3], &p[4]);
    let h = x.matmul(w1)?.add(b1)?.tanh()?;
    let out = h.matmul(w2)?.add(b2)?.mul(s)?;
    out.sub(y)?.square()?.mean_all()
}

/// Parameters after `steps` optimizer steps, flat or not, and the step's dispatches on a
/// GPU (the last step's optimizer part).
fn train_net(dev: &Device, dtype: DType, flat: bool, opt: &mut dyn Optimizer, steps: u64) -> (Vec<Tensor>, u64) {
    let mut params = net_params(dev, dtype);
    if flat {
        params.flatten().unwrap();
        assert!(params.is_flat());
    }
    let mut opt_dispatches = 0;
    for s in 0..steps {
        let x = Tensor::randn_dtype(&[7, 5], 90 + s, dtype, dev).unwrap();
        let y = Tensor::randn_dtype(&[7, 3], 190 + s, dtype, dev).unwrap();
        let (_, grads) = value_and_grad_many(|p| net_loss(p, &x, &y), params.tensors()).unwrap();
        dev.synchronize().unwrap();
        let before = dev.counters().dispatches;
        opt.step(&mut params, &grads).unwrap();
        opt_dispatches = dev.counters().dispatches - before;
    }
    if flat {
        assert!(params.is_flat(), "the parameters stay views of the flat buffers");
    }
    (params.tensors().to_vec(), opt_dispatches)
}

/// A named maker of a fresh optimizer.
type MakeOptimizer = (&'static str, Box<dyn Fn() -> Box<dyn Optimizer>>);

fn optimizers() -> Vec<MakeOptimizer> {
    vec![
        ("sgd momentum", Box::new(|| Box::new(Sgd::new(0.05).momentum(0.9).weight_decay(0.01)))),
        (
            "adamw matrices-only clip warmup-cosine",
            Box::new(|| {
                let mut a = Adam::adamw(0.02).decay_matrices_only(true).weight_decay(0.1).clip_grad_norm(0.5);
                a.set_schedule(LrSchedule::WarmupCosine { lr: 0.02, warmup: 2, total: 6, min_lr: 0.002 });
                Box::new(a)
            }),
        ),
        ("adam l2", Box::new(|| Box::new(Adam::new(0.01).weight_decay(0.05)))),
    ]
}

#[test]
fn flat_training_equals_per_tensor_training() {
    // CPU f64: bitwise, except where a global-norm clip sums the squares in another order
    // (one flat sum against a sum of per-tensor sums: the last bits of the norm)
    for (name, make) in optimizers() {
        let c = cpu();
        let (flat, _) = train_net(&c, DType::F64, true, make().as_mut(), 5);
        let (each, _) = train_net(&c, DType::F64, false, make().as_mut(), 5);
        for (k, (a, b)) in flat.iter().zip(&each).enumerate() {
            assert_eq!(a.shape(), b.shape());
            if name.contains("clip") {
                assert_close(a, b, 1e-13, 1e-14, &format!("{name}: parameter {k}"));
            } else {
                assert_eq!(a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap(), "{name}: parameter {k}");
            }
        }
    }
    let Some(g) = fresh_gpu() else { return };
    for (name, make) in optimizers() {
        let (flat, flat_dispatches) = train_net(&g, DType::F32, true, make().as_mut(), 5);
        let (each, _) = train_net(&g, DType::F32, false, make().as_mut(), 5);
        let (reference, _) = train_net(&cpu(), DType::F32, false, make().as_mut(), 5);
        for (k, ((a, b), r)) in flat.iter().zip(&each).zip(&reference).enumerate() {
            assert_close(a, b, 1e-5, 1e-6, &format!("{name}: parameter {k}, flat against per tensor"));
            assert_close(a, &r.to_device(&g).unwrap(), 1e-4, 1e-5, &format!("{name}: parameter {k} against CPU"));
        }
        // one pack of the 5 gradients, (a norm's partial sums,) the step state, one update
        let clip = name.contains("clip") as u64;
        let want = 1 + clip + 1 + 1;
        assert_eq!(flat_dispatches, want, "{name}: the flat step's dispatches (pack, norm, state, update)");
    }
}

#[test]
fn replaced_or_added_parameter_after_flatten_is_an_error() {
    for dev in devices() {
        let mut params = net_params(&dev, DType::F32);
        params.flatten().unwrap();
        let x = Tensor::randn(&[7, 5], 1, &dev).unwrap();
        let y = Tensor::randn(&[7, 3], 2, &dev).unwrap();
        let grads = |p: &Params| value_and_grad_many(|t| net_loss(t, &x, &y), p.tensors()).unwrap().1;
        let mut opt = Adam::new(0.01);
        // replaced behind the flat buffer's back: the step would miss it
        params.tensors_mut()[1] = Tensor::zeros(&[5, 6], DType::F32, &dev).unwrap();
        assert!(!params.is_flat());
        let g = grads(&params);
        let e = opt.step(&mut params, &g).unwrap_err();
        assert!(matches!(e, Error::Invalid { op: "Params::flatten", .. }), "{e}");
        // flatten again: the replacement is packed, and the step runs
        params.flatten().unwrap();
        assert_eq!(params.tensors()[1].to_vec::<f32>().unwrap(), vec![0.0; 30]);
        let g = grads(&params);
        opt.step(&mut params, &g).unwrap();
        // a parameter added later is an error until flatten() again
        params.add("extra", Tensor::ones(&[2], DType::F32, &dev).unwrap());
        let g = grads(&params);
        let e = opt.step(&mut params, &g).unwrap_err();
        assert!(matches!(e, Error::Invalid { op: "Params::flatten", .. }), "{e}");
    }
}

#[test]
fn flat_parameters_save_and_load_unchanged() {
    for dev in devices() {
        let dir = std::env::temp_dir().join(format!("wgrad_flat_{}_{}", std::process::id(), dev.is_gpu()));
        let mut params = net_params(&dev, DType::F32);
        let plain = params.clone();
        params.flatten().unwrap();
        let path = dir.with_extension("safetensors");
        params.save(&path).unwrap();
        // the file holds the same tensors as a model that was never flattened
        let mut other = plain.clone();
        other.load(&path).unwrap();
        let flat_before = params.flat_buffers().0[0].clone();
        // train a step (changes every parameter), then load the saved values back
        let x = Tensor::randn(&[7, 5], 3, &dev).unwrap();
        let y = Tensor::randn(&[7, 3], 4, &dev).unwrap();
        let (_, g) = value_and_grad_many(|t| net_loss(t, &x, &y), params.tensors()).unwrap();
        Sgd::new(0.1).step(&mut params, &g).unwrap();
        params.load(&path).unwrap();
        assert!(params.is_flat());
        if dev.is_gpu() {
            // in place: a jitted step would keep reading the same buffer
            assert!(params.flat_buffers().0[0].shares_storage(&flat_before));
        }
        for (k, (a, b)) in params.tensors().iter().zip(plain.tensors()).enumerate() {
            assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), "{} parameter {k}", dev.name());
        }
        std::fs::remove_file(&path).ok();
    }
}

#[test]
fn jitted_flat_step_equals_eager() {
    // the GPU: a device of its own, so the counters below see this test's work alone
    let mut devs = vec![cpu()];
    devs.extend(fresh_gpu());
    for dev in devs {
        let run = |jitted: bool| -> Vec<Vec<f32>> {
            let mut params = net_params(&dev, DType::F32);
            params.flatten().unwrap();
            let mut opt = Adam::adamw(0.02).decay_matrices_only(true).clip_grad_norm(1.0);
            let mut step = |args: &[Tensor]| -> Result<Vec<Tensor>> {
                let (loss, grads) = value_and_grad_many(|p| net_loss(p, &args[0], &args[1]), params.tensors())?;
                opt.step(&mut params, &grads)?;
                Ok(vec![loss])
            };
            let mut f = jit(&mut step).enabled(jitted);
            let mut losses = Vec::new();
            for s in 0..6 {
                let x = Tensor::randn(&[7, 5], 300 + s, &dev).unwrap();
                let y = Tensor::randn(&[7, 3], 400 + s, &dev).unwrap();
                dev.synchronize().unwrap();
                let before = dev.counters();
                let loss = f.call(&[x, y]).unwrap().remove(0);
                let work = dev.counters() - before;
                if jitted && dev.is_gpu() && s >= 3 {
                    // a replay: no primitive, bind group, compilation or new buffer (the
                    // result's copy comes from the pool)
                    assert_eq!(
                        (
                            work.primitives,
                            work.bind_group_creations,
                            work.pipeline_compilations,
                            work.buffer_allocations
                        ),
                        (0, 0, 0, 0),
                        "call {s}: {work:?}"
                    );
                }
                losses.push(loss.to_vec::<f32>().unwrap());
            }
            if jitted && dev.is_gpu() {
                assert_eq!((f.stats().traces, f.stats().replays), (2, 4), "{:?}", f.stats());
            }
            drop(f);
            losses.extend(params.tensors().iter().map(|t| t.to_vec::<f32>().unwrap()));
            losses
        };
        assert_eq!(run(true), run(false), "{}", dev.name());
    }
}
