use crate::common::*;
use wgrad::{DType, Tensor};

#[test]
fn views_and_copies_match_the_reference() {
    with_gpu!(g);
    let (r, d) = pair(&[3, 4, 5], -1.0, 1.0, &g);
    let r = rounded(&r);
    let check = |got: Tensor, want: Tensor, what: &str| assert_close(&got, &want, 0.0, 0.0, what);
    check(
        d.permute(&[2, 0, 1]).unwrap().contiguous().unwrap(),
        r.permute(&[2, 0, 1]).unwrap().contiguous().unwrap(),
        "permute",
    );
    check(
        d.transpose(0, 2).unwrap().reshape(&[5, 12]).unwrap(),
        r.transpose(0, 2).unwrap().reshape(&[5, 12]).unwrap(),
        "reshape of transpose",
    );
    check(d.narrow(1, 1, 2).unwrap(), r.narrow(1, 1, 2).unwrap(), "narrow");
    check(d.narrow(2, 4, 1).unwrap().squeeze(2).unwrap(), r.narrow(2, 4, 1).unwrap().squeeze(2).unwrap(), "squeeze");
    check(
        d.unsqueeze(1).unwrap().broadcast_to(&[3, 2, 4, 5]).unwrap().contiguous().unwrap(),
        r.unsqueeze(1).unwrap().broadcast_to(&[3, 2, 4, 5]).unwrap().contiguous().unwrap(),
        "broadcast",
    );
    let parts_d = [d.narrow(1, 0, 1).unwrap(), d.t().unwrap().t().unwrap(), d.narrow(1, 2, 2).unwrap()];
    let parts_r = [r.narrow(1, 0, 1).unwrap(), r.clone(), r.narrow(1, 2, 2).unwrap()];
    check(Tensor::cat(&parts_d, 1).unwrap(), Tensor::cat(&parts_r, 1).unwrap(), "cat");
    check(
        Tensor::stack(&[d.clone(), d.clone()], -1).unwrap(),
        Tensor::stack(&[r.clone(), r.clone()], -1).unwrap(),
        "stack",
    );
    // hand-computed
    let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &g).unwrap();
    assert_eq!(x.t().unwrap().to_vec::<f32>().unwrap(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    assert_eq!(Tensor::cat(&[x.clone(), x.clone()], 0).unwrap().shape(), &[4, 3]);
}

#[test]
fn index_select_gather_one_hot() {
    for dev in devices() {
        let x = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &dev).unwrap();
        let idx = Tensor::from_slice(&[2u32, 0, 2], &[3], &dev).unwrap();
        assert_eq!(x.index_select(1, &idx).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 1.0, 3.0, 6.0, 4.0, 6.0]);
        let rows = Tensor::from_slice(&[1u32, 1, 0], &[3], &dev).unwrap();
        assert_eq!(
            x.index_select(0, &rows).unwrap().to_vec::<f32>().unwrap(),
            vec![4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 1.0, 2.0, 3.0]
        );
        let labels = Tensor::from_slice(&[2u32, 0], &[2, 1], &dev).unwrap();
        assert_eq!(x.gather(1, &labels).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 4.0]);
        let oh = Tensor::from_slice(&[1u32, 0, 3], &[3], &dev).unwrap().one_hot(4, DType::F32).unwrap();
        assert_eq!(oh.to_vec::<f32>().unwrap(), vec![0., 1., 0., 0., 1., 0., 0., 0., 0., 0., 0., 1.]);
        // indices computed on the device (argmax) carry their bound
        let am = x.argmax(1, true).unwrap();
        assert_eq!(x.gather(1, &am).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 6.0]);
        // indices from a float conversion have no known bound: checked by value
        let conv = Tensor::from_slice(&[1.0f32, 2.0], &[2, 1], &dev).unwrap().to_dtype(DType::U32).unwrap();
        assert_eq!(x.gather(1, &conv).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 6.0]);
    }
    with_gpu!(g);
    let (r, d) = pair(&[50, 70], -1.0, 1.0, &g);
    let ids: Vec<u32> = rand_vec(90, 0.0, 69.99).into_iter().map(|v| v as u32).collect();
    let (ig, ic) = (Tensor::from_slice(&ids, &[90], &g).unwrap(), Tensor::from_slice(&ids, &[90], &cpu()).unwrap());
    assert_close(
        &d.t().unwrap().index_select(0, &ig).unwrap(),
        &rounded(&r).t().unwrap().index_select(0, &ic).unwrap(),
        0.0,
        0.0,
        "index_select of a transpose",
    );
}

#[test]
fn conversions_round_trip() {
    with_gpu!(g);
    let v = vec![0.5f32, 1.5, 2.0, 7.9];
    let x = Tensor::from_slice(&v, &[4], &g).unwrap();
    assert_eq!(x.to_dtype(DType::U32).unwrap().to_vec::<u32>().unwrap(), vec![0, 1, 2, 7]);
    assert_eq!(
        x.to_device(&cpu()).unwrap().to_dtype(DType::F64).unwrap().to_vec::<f64>().unwrap(),
        vec![0.5, 1.5, 2.0, 7.900000095367432]
    );
    let u = Tensor::from_slice(&[3u32, 9], &[2], &g).unwrap();
    assert_eq!(u.to_dtype(DType::F32).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 9.0]);
    let r = Tensor::randn(&[3, 3], 7, &g).unwrap();
    let rc = Tensor::randn(&[3, 3], 7, &cpu()).unwrap();
    // the same Philox words; log and cos may differ in the last bits between WGSL and Rust
    let (r, rc) = (r.to_vec::<f64>().unwrap(), rc.to_vec::<f64>().unwrap());
    assert!(r.iter().zip(&rc).all(|(a, b)| close(*a, *b, 1e-5, 1e-6)), "seeded randn on both devices: {r:?} vs {rc:?}");
}

/// narrow's VJP places the cotangent in a window of zeros with one `pad` launch: the
/// gradient of sum(w * x.narrow(axis, start, len)) is w in the window and 0 elsewhere,
/// for every axis, a strided cotangent and f16; it is differentiable (JVP, vmap, a second
/// order) like any op.
#[test]
fn narrow_gradient_is_one_pad_of_the_cotangent() {
    for dev in devices() {
        let shape = [3, 4, 5];
        let (r, x) = pair(&shape, -1.0, 1.0, &dev);
        for (axis, start, len) in [(0, 1, 2), (1, 0, 3), (1, 3, 1), (2, 1, 3), (2, 0, 5)] {
            let mut wshape = shape.to_vec();
            wshape[axis] = len;
            let (_, w) = pair(&wshape, -1.0, 1.0, &dev);
            let g = wgrad::grad(|x| x.narrow(axis as isize, start, len)?.mul(&w)?.sum_all(), &x).unwrap();
            // by hand: w where the window is, 0 elsewhere
            let wv = w.to_f64_vec().unwrap();
            let mut want = vec![0.0; 60];
            for i in 0..3 {
                for j in 0..4 {
                    for k in 0..5 {
                        let idx = [i, j, k];
                        if idx[axis] >= start && idx[axis] < start + len {
                            let mut widx = idx;
                            widx[axis] -= start;
                            want[(i * 4 + j) * 5 + k] = wv[(widx[0] * wshape[1] + widx[1]) * wshape[2] + widx[2]];
                        }
                    }
                }
            }
            assert_eq!(g.to_f64_vec().unwrap(), want, "axis {axis} window {start}+{len} on {dev}");
        }
        // a strided (transposed) cotangent
        let g = wgrad::grad(|x| x.narrow(1, 1, 2)?.transpose(0, 2)?.square()?.sum_all(), &x).unwrap();
        let want = wgrad::grad(|x| x.narrow(1, 1, 2)?.square()?.sum_all(), &x).unwrap();
        assert_eq!(g.to_f64_vec().unwrap(), want.to_f64_vec().unwrap(), "strided cotangent on {dev}");
        // f16 (through f32 on a GPU)
        let h = x.to_dtype(DType::F16).unwrap();
        let gh = wgrad::grad(|x| x.narrow(2, 2, 2)?.sum_all(), &h).unwrap();
        assert_eq!(gh.dtype(), DType::F16);
        let ones_in_window: Vec<f64> = (0..60).map(|i| if (2..4).contains(&(i % 5)) { 1.0 } else { 0.0 }).collect();
        assert_eq!(gh.to_f64_vec().unwrap(), ones_in_window, "f16 on {dev}");
        // differentiable: the Hessian of sum(narrow(x)^3) is diag(6 x) in the window
        let x1 = on(&dev, &r.reshape(&[60]).unwrap().narrow(0, 0, 4).unwrap());
        let v = Tensor::ones(&[4], x1.dtype(), &dev).unwrap();
        let hv = wgrad::hvp(|x| x.narrow(0, 1, 2)?.powf(3.0)?.sum_all(), &x1, &v).unwrap();
        let xv = x1.to_f64_vec().unwrap();
        let want: Vec<f64> = (0..4).map(|i| if (1..3).contains(&i) { 6.0 * xv[i] } else { 0.0 }).collect();
        assert_close(&hv, &Tensor::from_slice(&want, &[4], &cpu()).unwrap(), 1e-5, 1e-6, "hvp through pad");
        // per-example gradients: vmap of the gradient
        let per_row: Tensor =
            wgrad::vmap(|row| wgrad::grad(|z| z.narrow(0, 1, 2)?.sum_all(), row), &x.reshape(&[3, 20]).unwrap(), 0, 0)
                .unwrap();
        let row_want: Vec<f64> = (0..60).map(|i| if (1..3).contains(&(i % 20)) { 1.0 } else { 0.0 }).collect();
        assert_eq!(per_row.to_f64_vec().unwrap(), row_want, "vmap(grad) on {dev}");
    }
    // one launch on a GPU: the pad, where zeros and a cat took one per part (counted on a
    // device of its own: tests in parallel share the default one)
    let Some(g) = fresh_gpu() else { return };
    let x = Tensor::ones(&[8, 96], DType::F32, &g).unwrap();
    let cot = Tensor::ones(&[8, 32], DType::F32, &g).unwrap();
    g.synchronize().unwrap();
    let before = g.counters().dispatches;
    let (_, vjp) = wgrad::vjp(|x| x.narrow(1, 32, 32), &x, &cot).unwrap();
    g.synchronize().unwrap();
    assert_eq!(g.counters().dispatches - before, 1, "narrow's VJP is one launch");
    assert_eq!(vjp.sum_all().unwrap().item().unwrap(), 256.0);
}

/// A reshape of a strided view is a view whenever the strides allow it (PyTorch's rule):
/// splitting the last axis of a narrowed tensor into heads moves no data; merging permuted
/// axes copies. Either way the values are those of reshaping a contiguous copy.
#[test]
fn reshape_of_a_strided_view_is_a_view_when_the_strides_allow() {
    type View = fn(&Tensor) -> wgrad::Result<Tensor>;
    // (what, the view of a [2, 6, 12] tensor, the new shape, whether it stays a view)
    let cases: [(&str, View, &[usize], bool); 9] = [
        ("split a narrowed last axis", |x| x.narrow(2, 4, 8), &[2, 6, 2, 4], true),
        ("merge the leading axes of a narrow", |x| x.narrow(2, 0, 6), &[12, 6], true),
        ("narrow of the middle axis, merged", |x| x.narrow(1, 2, 3), &[2, 36], true),
        ("narrow of the last axis, merged", |x| x.narrow(2, 0, 6), &[2, 36], false),
        ("split a transposed axis", |x| x.transpose(0, 2), &[3, 4, 6, 2], true),
        ("merge transposed axes", |x| x.transpose(1, 2), &[2, 72], false),
        ("heads back to [b, t, e]", |x| x.reshape(&[2, 6, 3, 4])?.permute(&[0, 2, 1, 3]), &[2, 3, 24], false),
        ("add and drop unit axes", |x| x.narrow(2, 1, 1), &[2, 1, 6], true),
        ("a broadcast row split", |x| x.narrow(0, 0, 1)?.broadcast_to(&[3, 6, 12]), &[3, 6, 3, 4], true),
    ];
    // launches are counted on a GPU device of its own (tests in parallel share the default)
    let mut devs = vec![cpu()];
    devs.extend(fresh_gpu());
    for dev in devs {
        let (_, x) = pair(&[2, 6, 12], -1.0, 1.0, &dev);
        for (what, view, shape, stays_view) in cases {
            let v = view(&x).unwrap();
            let want = v.contiguous().unwrap().reshape(shape).unwrap();
            dev.synchronize().unwrap();
            let before = dev.counters().dispatches;
            let got = v.reshape(shape).unwrap();
            let moved = dev.counters().dispatches - before;
            assert_eq!(got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap(), "{what} on {dev}");
            if dev.is_gpu() {
                assert_eq!(moved == 0, stays_view, "{what}: {moved} launches");
            }
            // and it differentiates like any reshape
            let g = wgrad::grad(|x| view(x)?.reshape(shape)?.square()?.sum_all(), &x).unwrap();
            let g_want = wgrad::grad(|x| view(x)?.square()?.sum_all(), &x).unwrap();
            // (a broadcast's gradient sums its copies: in another order, rounding may differ)
            assert_close(&g, &g_want, 1e-6, 1e-6, &format!("{what}: gradient on {dev}"));
        }
    }
}
