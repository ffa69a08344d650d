use crate::common::*;
use wgrad::kernels::{Kernel, MatmulVec4};
use wgrad::{DType, Tensor};

/// TESTING.md bound: |err| <= k * 2^-24 * sum |a||b| per element.
fn assert_matmul_close(got: &Tensor, a: &Tensor, b: &Tensor, what: &str) {
    let want = a.matmul(b).unwrap();
    let bound = a.abs().unwrap().matmul(&b.abs().unwrap()).unwrap().to_f64_vec().unwrap();
    let k = a.shape()[a.rank() - 1].max(1) as f64;
    let g = got.to_f64_vec().unwrap();
    let w = want.to_f64_vec().unwrap();
    assert_eq!(got.shape(), want.shape(), "{what}");
    for i in 0..w.len() {
        let tol = k * 2f64.powi(-24) * bound[i] + 1e-30;
        assert!((g[i] - w[i]).abs() <= tol, "{what}: element {i}: got {}, want {}, bound {tol}", g[i], w[i]);
    }
}

#[test]
fn matmul_matches_the_reference_at_boundary_sizes() {
    with_gpu!(g);
    for &(m, k, n) in &[(1, 1, 1), (7, 5, 3), (63, 64, 65), (64, 64, 64), (65, 17, 129), (1, 257, 1), (130, 3, 70)] {
        let (ra, da) = pair(&[m, k], -1.0, 1.0, &g);
        let (rb, db) = pair(&[k, n], -1.0, 1.0, &g);
        assert_matmul_close(&da.matmul(&db).unwrap(), &rounded(&ra), &rounded(&rb), &format!("{m}x{k}x{n}"));
    }
}

#[test]
fn transposed_operands_need_no_copy() {
    let Some(g) = fresh_gpu() else { return };
    let (ra, da) = pair(&[40, 70], -1.0, 1.0, &g);
    let (rb, db) = pair(&[50, 40], -1.0, 1.0, &g);
    let before = g.counters();
    let c = da.t().unwrap().matmul(&db.t().unwrap()).unwrap();
    g.flush().unwrap();
    let after = g.counters();
    assert_eq!(after.dispatches - before.dispatches, 1, "one matmul dispatch, no copies");
    assert_matmul_close(&c, &rounded(&ra).t().unwrap(), &rounded(&rb).t().unwrap(), "A^T B^T");
}

#[test]
fn batch_dims_broadcast() {
    with_gpu!(g);
    let cases: &[(&[usize], &[usize])] = &[
        (&[3, 4, 5], &[5, 6]),
        (&[2, 1, 4, 5], &[3, 5, 2]),
        (&[4, 5], &[2, 5, 3]),
        (&[5], &[5, 3]),
        (&[2, 4, 5], &[5]),
    ];
    for &(sa, sb) in cases {
        let (ra, da) = pair(sa, -1.0, 1.0, &g);
        let (rb, db) = pair(sb, -1.0, 1.0, &g);
        assert_matmul_close(&da.matmul(&db).unwrap(), &rounded(&ra), &rounded(&rb), &format!("{sa:?} @ {sb:?}"));
    }
    let a = Tensor::ones(&[2, 1, 4, 5], DType::F32, &g).unwrap();
    let b = Tensor::ones(&[3, 5, 2], DType::F32, &g).unwrap();
    assert_eq!(a.matmul(&b).unwrap().shape(), &[2, 3, 4, 2]);
}

#[test]
fn empty_inner_dimension_gives_zeros() {
    for dev in devices() {
        let a = Tensor::zeros(&[2, 0], DType::F32, &dev).unwrap();
        let b = Tensor::zeros(&[0, 3], DType::F32, &dev).unwrap();
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.to_vec::<f32>().unwrap(), vec![0.0; 6], "on {dev}");
    }
}

#[test]
fn long_inner_dimensions_are_summed_completely() {
    // K = 8192: more K steps than lavapipe lets one invocation loop over without unrolling
    with_gpu!(g);
    let (ra, da) = pair(&[3, 8192], -1.0, 1.0, &g);
    let (rb, db) = pair(&[8192, 5], -1.0, 1.0, &g);
    assert_matmul_close(&da.matmul(&db).unwrap(), &rounded(&ra), &rounded(&rb), "K = 8192");
}

#[test]
fn both_matmul_kernel_families_match_the_reference() {
    // the register-blocked kernel is lavapipe's default, the shared-memory tiles a GPU's
    for register_blocked in [true, false] {
        let Some(g) = fresh_gpu() else { return };
        g.context().unwrap().set_matmul_register_blocked(Some(register_blocked));
        for &(sa, sb) in
            &[(&[65usize, 17][..], &[17usize, 129][..]), (&[2, 3, 40, 70], &[3, 70, 33]), (&[1, 3000], &[3000, 5])]
        {
            let (ra, da) = pair(sa, -1.0, 1.0, &g);
            let (rb, db) = pair(sb, -1.0, 1.0, &g);
            assert_matmul_close(
                &da.matmul(&db).unwrap(),
                &rounded(&ra),
                &rounded(&rb),
                &format!("{sa:?} @ {sb:?}, register blocked {register_blocked}"),
            );
            // genuinely strided operands: A column-major (a transposed copy, viewed back) and
            // B a slice of wider rows (row stride k + 3)
            let col_major = da.t().unwrap().contiguous().unwrap().t().unwrap();
            let rank = db.rank();
            let mut wide = db.shape().to_vec();
            wide[rank - 1] += 3;
            let padded = Tensor::cat(
                &[db.clone(), Tensor::zeros(&[&wide[..rank - 1], &[3]].concat(), DType::F32, &g).unwrap()],
                -1,
            )
            .unwrap();
            let sliced = padded.contiguous().unwrap().narrow(-1, 0, db.shape()[rank - 1]).unwrap();
            // (a [1, k] matrix is contiguous in either order)
            assert!(sa[sa.len() - 2] == 1 || !col_major.layout().is_contiguous(), "{sa:?} column-major");
            assert!(!sliced.layout().is_contiguous(), "{sb:?} sliced");
            let t = col_major.matmul(&sliced).unwrap();
            let what = format!("{sa:?} @ {sb:?} strided, register blocked {register_blocked}");
            assert_matmul_close(&t, &rounded(&ra), &rounded(&rb), &what);
        }
    }
}

#[test]
fn vec4_register_tiles_match_the_reference_in_every_layout() {
    // lavapipe's default for aligned operands: A and B read as vec4 along whichever axis is
    // contiguous ("row" or "col"), 8x8, 8x16, 12x16 or 16x16 outputs per invocation; forced here so a
    // GPU runs it too. Sizes leave partial workgroup tiles on both axes.
    let Some(g) = fresh_gpu() else { return };
    let ctx = g.context().unwrap();
    ctx.set_matmul_register_blocked(Some(true));
    for &(m, k, n) in &[(36usize, 20usize, 44usize), (520, 12, 516), (520, 512, 516), (1040, 1024, 1032), (4, 4, 4)] {
        for a_col in [false, true] {
            for b_col in [false, true] {
                let (ra, da) = if a_col { pair(&[k, m], -1.0, 1.0, &g) } else { pair(&[m, k], -1.0, 1.0, &g) };
                let (rb, db) = if b_col { pair(&[n, k], -1.0, 1.0, &g) } else { pair(&[k, n], -1.0, 1.0, &g) };
                let (ra, da) = if a_col { (ra.t().unwrap(), da.t().unwrap()) } else { (ra, da) };
                let (rb, db) = if b_col { (rb.t().unwrap(), db.t().unwrap()) } else { (rb, db) };
                let what = format!("{m}x{k}x{n}, A col {a_col}, B col {b_col}");
                assert_matmul_close(&da.matmul(&db).unwrap(), &rounded(&ra), &rounded(&rb), &what);
            }
        }
    }
    // batch broadcast (B's batch stride 0) and an offset view (rows 4.. of a taller A)
    let (ra, da) = pair(&[3, 40, 8], -1.0, 1.0, &g);
    let (rb, db) = pair(&[8, 12], -1.0, 1.0, &g);
    assert_matmul_close(&da.matmul(&db).unwrap(), &rounded(&ra), &rounded(&rb), "batched");
    let (ra, da) = pair(&[24, 8], -1.0, 1.0, &g);
    let (ra, da) = (ra.narrow(0, 4, 20).unwrap(), da.narrow(0, 4, 20).unwrap());
    assert_matmul_close(&da.matmul(&db).unwrap(), &rounded(&ra), &rounded(&rb), "offset rows");
    let used: Vec<MatmulVec4> = ctx
        .compiled_kernels()
        .into_iter()
        .filter_map(|k| match k.kernel {
            Kernel::MatmulVec4(v) => Some(v),
            _ => None,
        })
        .collect();
    for v in MatmulVec4::ALL {
        assert!(used.contains(&v), "{v:?} was never dispatched (dispatched: {used:?})");
    }
}

#[test]
fn outer_products_and_shared_right_operands_take_their_own_paths() {
    with_gpu!(g);
    // k = 1: a batch of outer products, against the products by hand
    let (ra, da) = pair(&[5, 7, 1], -1.0, 1.0, &g);
    let (rb, db) = pair(&[5, 1, 9], -1.0, 1.0, &g);
    let (av, bv) = (rounded(&ra).to_vec::<f64>().unwrap(), rounded(&rb).to_vec::<f64>().unwrap());
    let by_hand: Vec<f64> = (0..5 * 7 * 9).map(|i| av[(i / 63) * 7 + (i / 9) % 7] * bv[(i / 63) * 9 + i % 9]).collect();
    let want = Tensor::from_slice(&by_hand, &[5, 7, 9], &cpu()).unwrap();
    assert_close(
        &da.matmul(&db).unwrap().to_device(&cpu()).unwrap().to_dtype(DType::F64).unwrap(),
        &want,
        1e-6,
        1e-7,
        "outer products (GPU)",
    );
    assert_close(&rounded(&ra).matmul(&rounded(&rb)).unwrap(), &want, 1e-15, 1e-15, "outer products (CPU)");
    // B shared by every batch entry (stride 0) folds the batch into A's rows (one GEMM),
    // with a transposed B; the reference multiplies a materialized copy of B
    let (ra, da) = pair(&[3, 4, 6, 5], -1.0, 1.0, &g);
    let (rb, db) = pair(&[8, 5], -1.0, 1.0, &g);
    let shared = |b: &Tensor| b.t().unwrap().broadcast_to(&[3, 4, 5, 8]).unwrap();
    let copied = shared(&rounded(&rb)).contiguous().unwrap();
    assert_matmul_close(&da.matmul(&shared(&db)).unwrap(), &rounded(&ra), &copied, "shared B (GPU)");
    assert_matmul_close(&ra.matmul(&shared(&rb)).unwrap(), &ra, &shared(&rb).contiguous().unwrap(), "shared B (CPU)");
}

/// The gradient of a weight shared by a batch (a linear layer on [batch, seq, features]) is
/// one GEMM over the batch folded into rows, with no reduction after it, and comes out in
/// the weight's own layout (contiguous for `x w^T`: the optimizer copies nothing):
/// w-bar[o][i] = sum over (b, t) of g[b][t][o] x[b][t][i], by hand.
#[test]
fn a_shared_weights_gradient_is_one_gemm_in_the_weights_layout() {
    let (b, t, fin, fout) = (2, 5, 3, 4);
    let mut devs = vec![cpu()];
    devs.extend(fresh_gpu());
    for dev in devs {
        let (xr, x) = pair(&[b, t, fin], -1.0, 1.0, &dev);
        let (gr, g) = pair(&[b, t, fout], -1.0, 1.0, &dev);
        let (xv, gv) = (rounded(&xr).to_f64_vec().unwrap(), rounded(&gr).to_f64_vec().unwrap());
        let by_hand = |o: usize, i: usize| -> f64 { (0..b * t).map(|r| gv[r * fout + o] * xv[r * fin + i]).sum() };
        // x w^T with w [out, in] (a linear layer)
        let w = Tensor::zeros(&[fout, fin], x.dtype(), &dev).unwrap();
        dev.synchronize().unwrap();
        let before = dev.counters().dispatches;
        let (_, wbar) = wgrad::vjp(|w| x.matmul(&w.t()?), &w, &g).unwrap();
        dev.synchronize().unwrap();
        if dev.is_gpu() {
            assert_eq!(dev.counters().dispatches - before, 1, "one GEMM, no reduction over the batch");
        }
        assert!(wbar.layout().is_contiguous(), "w-bar in w's layout: {:?}", wbar.layout());
        let want: Vec<f64> =
            (0..fout).flat_map(|o| (0..fin).map(move |i| (o, i))).map(|(o, i)| by_hand(o, i)).collect();
        assert_close(&wbar, &Tensor::from_slice(&want, &[fout, fin], &cpu()).unwrap(), 1e-5, 1e-6, "x w^T");
        // x w with w [in, out]
        let w = Tensor::zeros(&[fin, fout], x.dtype(), &dev).unwrap();
        let (_, wbar) = wgrad::vjp(|w| x.matmul(w), &w, &g).unwrap();
        assert!(wbar.layout().is_contiguous());
        let want: Vec<f64> =
            (0..fin).flat_map(|i| (0..fout).map(move |o| (o, i))).map(|(o, i)| by_hand(o, i)).collect();
        assert_close(&wbar, &Tensor::from_slice(&want, &[fin, fout], &cpu()).unwrap(), 1e-5, 1e-6, "x w");
        // and to second order (the folded form is differentiable like any op)
        let (_, x64) = pair(&[b, t, fin], -1.0, 1.0, &cpu());
        let x64 = on(&cpu(), &rounded(&x64));
        let w64 = on(&cpu(), &Tensor::from_slice(&rand_vec(fout * fin, -1.0, 1.0), &[fout, fin], &cpu()).unwrap());
        wgrad::check_grads(|w| x64.matmul(&w.t()?)?.tanh()?.sum_all(), &w64, 2).unwrap();
    }
}
