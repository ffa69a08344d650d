//! Matrix calculus: GPU vs CPU, check_grads to order 2, the closed forms of the notes, errors.
use crate::common::*;
use wgrad::{check_grads, grad, hessian, DType, Device, Error, Result, Tensor};

/// Diagonally dominant [batch.., n, n] (well conditioned for inverse / solve).
fn dominant(batch: &[usize], n: usize, dev: &Device, dtype: DType) -> Tensor {
    let mut shape = batch.to_vec();
    shape.extend([n, n]);
    let r = Tensor::from_slice(&rand_vec(shape.iter().product(), -1.0, 1.0), &shape, &cpu()).unwrap();
    let a = r.add(Tensor::eye(n, DType::F64, &cpu()).unwrap().mul_scalar(n as f64 + 1.0).unwrap()).unwrap();
    a.to_dtype(dtype).unwrap().to_device(dev).unwrap()
}

/// Symmetric positive definite: R R^T / n + I.
fn spd(batch: &[usize], n: usize, dev: &Device, dtype: DType) -> Tensor {
    let mut shape = batch.to_vec();
    shape.extend([n, n]);
    let r = Tensor::from_slice(&rand_vec(shape.iter().product(), -1.0, 1.0), &shape, &cpu()).unwrap();
    let a = r
        .matmul(&r.t().unwrap())
        .unwrap()
        .mul_scalar(1.0 / n as f64)
        .unwrap()
        .add(Tensor::eye(n, DType::F64, &cpu()).unwrap())
        .unwrap();
    a.to_dtype(dtype).unwrap().to_device(dev).unwrap()
}

fn f64_of(t: &Tensor) -> Tensor {
    t.to_device(&cpu()).unwrap().to_dtype(DType::F64).unwrap()
}

#[test]
fn factorizations_on_the_gpu_match_the_cpu() {
    with_gpu!(g);
    for &n in &[1usize, 2, 3, 17, 64, 255] {
        let batch: &[usize] = if n <= 17 { &[3] } else { &[] };
        let a = dominant(batch, n, &g, DType::F32);
        let a64 = f64_of(&a);
        // inverse: residual A A^-1 - I, and agreement with the f64 reference
        let inv = a.inverse().unwrap();
        assert_close(&f64_of(&inv), &a64.inverse().unwrap(), 1e-4, 1e-5, &format!("inverse n={n}"));
        let (rhs, _) = pair(&[batch, &[n, 2]].concat(), -1.0, 1.0, &g);
        let rhs32 = rhs.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
        assert_close(
            &f64_of(&a.solve(&rhs32).unwrap()),
            &a64.solve(&rounded(&rhs)).unwrap(),
            1e-4,
            1e-5,
            &format!("solve n={n}"),
        );
        let (s, la) = a.slogdet().unwrap();
        let (s64, la64) = a64.slogdet().unwrap();
        assert_close(&f64_of(&s), &s64, 0.0, 0.0, &format!("sign n={n}"));
        assert_close(&f64_of(&la), &la64, 1e-5, 1e-4, &format!("logabsdet n={n}"));
        let p = spd(batch, n, &g, DType::F32);
        assert_close(
            &f64_of(&p.cholesky().unwrap()),
            &f64_of(&p).cholesky().unwrap(),
            1e-4,
            1e-5,
            &format!("cholesky n={n}"),
        );
    }
    // n = 512 takes several dispatches per factorization and solve on lavapipe
    let a = dominant(&[], 512, &g, DType::F32);
    let resid = a.matmul(&a.inverse().unwrap()).unwrap().sub(Tensor::eye(512, DType::F32, &g).unwrap()).unwrap();
    assert!(resid.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-4, "A A^-1 = I at n = 512");
    let p = spd(&[], 512, &g, DType::F32);
    let l = p.cholesky().unwrap();
    let back = l.matmul(&l.t().unwrap()).unwrap().sub(&p).unwrap();
    assert!(back.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-4, "L L^T = A at n = 512");
    // hand-computed: det [[2, 1], [1, 3]] = 5; inverse = [[0.6, -0.2], [-0.2, 0.4]]
    let a = Tensor::from_slice(&[2.0f32, 1.0, 1.0, 3.0], &[2, 2], &g).unwrap();
    assert!((a.det().unwrap().to_scalar::<f32>().unwrap() - 5.0).abs() < 1e-5);
    assert_close(
        &f64_of(&a.inverse().unwrap()),
        &Tensor::from_slice(&[0.6, -0.2, -0.2, 0.4], &[2, 2], &cpu()).unwrap(),
        1e-6,
        1e-6,
        "inverse 2x2",
    );
    // cholesky of [[4, 2], [2, 5]] = [[2, 0], [1, 2]]
    let c = Tensor::from_slice(&[4.0f32, 2.0, 2.0, 5.0], &[2, 2], &g).unwrap().cholesky().unwrap();
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![2.0, 0.0, 1.0, 2.0]);
}

#[test]
fn cholesky_solve_on_the_gpu_matches_the_cpu() {
    with_gpu!(g);
    for &(n, k) in &[(1usize, 1usize), (3, 2), (17, 4), (64, 3)] {
        let p = spd(&[2], n, &g, DType::F32);
        let (rhs, _) = pair(&[2, n, k], -1.0, 1.0, &g);
        let rhs32 = rhs.to_dtype(DType::F32).unwrap().to_device(&g).unwrap();
        let l = p.cholesky().unwrap();
        let got = rhs32.cholesky_solve(&l).unwrap();
        let want = rounded(&rhs).cholesky_solve(&f64_of(&p).cholesky().unwrap()).unwrap();
        assert_close(&f64_of(&got), &want, 1e-4, 1e-5, &format!("cholesky_solve n={n} k={k}"));
        // and the residual A X - B on the device
        let resid = p.matmul(&got).unwrap().sub(&rhs32).unwrap().abs().unwrap().max_all().unwrap();
        assert!(resid.to_scalar::<f32>().unwrap() < 1e-4, "A X = B for n={n}");
    }
}

/// The unchecked forms return (values, info) without reading anything back: the README's
/// "never sync" promise. Values and info codes are then compared with the CPU device.
#[test]
fn solve_ex_and_cholesky_ex_read_nothing_back_and_match_the_cpu() {
    // batch 0 regular, batch 1 singular ([[1, 2], [2, 4]]: zero pivot at column 2)
    let a_vals = [3.0f32, 1.0, 1.0, 2.0, 1.0, 2.0, 2.0, 4.0];
    let b_vals = [1.0f32, 2.0, 3.0, 4.0];
    // batch 0 positive definite, batch 1 indefinite ([[1, 2], [2, 1]]: minor 2)
    let p_vals = [4.0f32, 2.0, 2.0, 5.0, 1.0, 2.0, 2.0, 1.0];
    let run = |dev: &wgrad::Device| {
        let a = Tensor::from_slice(&a_vals, &[2, 2, 2], dev).unwrap();
        let b = Tensor::from_slice(&b_vals, &[2, 2, 1], dev).unwrap();
        let p = Tensor::from_slice(&p_vals, &[2, 2, 2], dev).unwrap();
        let (x, info) = a.solve_ex(&b).unwrap();
        let (l, linfo) = p.cholesky_ex().unwrap();
        (x, info, l, linfo)
    };
    let (xc, ic, lc, lic) = run(&cpu());
    assert_eq!(ic.to_vec::<u32>().unwrap(), vec![0, 2], "solve_ex info on the CPU");
    assert_eq!(lic.to_vec::<u32>().unwrap(), vec![0, 2], "cholesky_ex info on the CPU");
    // [[3, 1], [1, 2]] x = [1, 2]: x = [0, 1]; chol [[4, 2], [2, 5]] = [[2, 0], [1, 2]]
    assert_eq!(xc.narrow(0, 0, 1).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 1.0]);
    assert_eq!(lc.narrow(0, 0, 1).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 0.0, 1.0, 2.0]);
    let Some(g) = fresh_gpu() else { return };
    let before = g.counters();
    let (xg, ig, lg, lig) = run(&g);
    g.flush().unwrap();
    let mid = g.counters();
    assert_eq!(mid.readbacks, before.readbacks, "solve_ex / cholesky_ex read nothing back");
    assert!(mid.dispatches > before.dispatches, "the factorizations were submitted");
    assert_eq!(ig.to_vec::<u32>().unwrap(), vec![0, 2], "solve_ex info on the GPU");
    assert_eq!(lig.to_vec::<u32>().unwrap(), vec![0, 2], "cholesky_ex info on the GPU");
    let first = |t: &Tensor| f64_of(&t.narrow(0, 0, 1).unwrap());
    assert_close(&first(&xg), &first(&xc), 1e-6, 1e-6, "solve_ex values of the regular matrix");
    assert_close(&first(&lg), &first(&lc), 1e-6, 1e-6, "cholesky_ex values of the SPD matrix");
}

type F = Box<dyn Fn(&Tensor) -> Result<Tensor>>;

fn sym(x: &Tensor) -> Result<Tensor> {
    // (X + X^T)/2 + 3 I: symmetric and (for small X) positive definite
    let n = x.shape()[x.rank() - 1];
    x.add(&x.t()?)?.mul_scalar(0.5)?.add(&Tensor::eye(n, x.dtype(), x.device())?.mul_scalar(3.0)?)
}

#[test]
fn every_matrix_op_passes_check_grads_to_order_2() {
    let n = 3;
    let b = Tensor::from_slice(&rand_vec(6, -1.0, 1.0), &[3, 2], &cpu()).unwrap();
    let cases: Vec<(&str, F)> = vec![
        ("inverse", Box::new(|x: &Tensor| x.inverse())),
        ("det", Box::new(|x: &Tensor| x.det())),
        ("logdet", Box::new(|x: &Tensor| x.logdet())),
        ("slogdet", Box::new(|x: &Tensor| Ok(x.slogdet()?.1))),
        ("solve wrt A", Box::new(move |x: &Tensor| x.solve(&b))),
        (
            "solve wrt B",
            Box::new(|x: &Tensor| {
                Tensor::from_slice(&[4.0, 1.0, 0.5, 1.0, 3.0, -1.0, 0.0, 0.5, 5.0], &[3, 3], &cpu())?.solve(x)
            }),
        ),
        ("solve vector", Box::new(|x: &Tensor| x.solve(&x.diag()?))),
        ("cholesky", Box::new(|x: &Tensor| sym(x)?.cholesky())),
        ("cholesky_solve", Box::new(|x: &Tensor| x.cholesky_solve(&sym(x)?.cholesky()?))),
        ("trace", Box::new(|x: &Tensor| x.matmul(x)?.trace())),
        ("diag", Box::new(|x: &Tensor| x.diag()?.exp())),
        ("diag_embed", Box::new(|x: &Tensor| x.diag()?.square()?.diag_embed())),
        ("inner", Box::new(|x: &Tensor| x.inner(&x.exp()?))),
        ("frobenius_norm", Box::new(|x: &Tensor| x.frobenius_norm())),
        ("norm", Box::new(|x: &Tensor| x.norm())),
        ("outer", Box::new(|x: &Tensor| x.diag()?.outer(&x.narrow(0, 0, 1)?.squeeze(0)?))),
        ("dot", Box::new(|x: &Tensor| x.dot(&x.sin()?))),
        ("batched logdet", Box::new(|x: &Tensor| Tensor::stack(&[x.clone(), x.t()?.matmul(x)?], 0)?.logdet())),
    ];
    for (name, f) in cases {
        let x = dominant(&[], n, &cpu(), DType::F64);
        check_grads(&f, &x, 2).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn gradients_through_factorizations_match_on_the_gpu() {
    with_gpu!(g);
    let fs: Vec<(&str, F)> = vec![
        ("inverse", Box::new(|x: &Tensor| x.inverse()?.sum_all())),
        ("logdet", Box::new(|x: &Tensor| x.logdet()?.sum_all())),
        ("det", Box::new(|x: &Tensor| x.det()?.mul_scalar(1e-20)?.sum_all())),
        ("cholesky", Box::new(|x: &Tensor| sym(x)?.cholesky()?.square()?.sum_all())),
        ("solve", Box::new(|x: &Tensor| x.solve(&x.narrow(2, 0, 2)?)?.sum_all())),
    ];
    for (name, f) in fs {
        let x64 = rounded(&dominant(&[2], 17, &cpu(), DType::F64));
        let want = grad(&f, &x64).unwrap();
        let got = grad(&f, &x64.to_dtype(DType::F32).unwrap().to_device(&g).unwrap()).unwrap();
        assert_close(&f64_of(&got), &want, 1e-3, 1e-4, &format!("GPU gradient of {name}"));
    }
}

#[test]
fn closed_forms_of_the_notes() {
    for dev in devices() {
        let dt = if dev.is_gpu() { DType::F32 } else { DType::F64 };
        let tol = if dev.is_gpu() { 2e-4 } else { 1e-10 };
        let x = spd(&[], 4, &dev, dt);
        let s = dominant(&[], 4, &dev, dt);
        // grad of <S, X> - log det X is S - X^-T
        let got = grad(|x| s.inner(x)?.sub(&x.logdet()?), &x).unwrap();
        let want = s.sub(x.inverse().unwrap().t().unwrap()).unwrap();
        assert_close(&f64_of(&got), &f64_of(&want), tol, tol, "grad <S,X> - logdet X");
        // f(x) = ln <Ax, x> for SPD A: grad 2Ax / q, Hessian 2A/q - 4 (Ax)(Ax)^T / q^2
        let a = spd(&[], 4, &dev, dt);
        let v = Tensor::from_slice(&[0.3, -0.5, 0.8, 0.1], &[4], &cpu())
            .unwrap()
            .to_dtype(dt)
            .unwrap()
            .to_device(&dev)
            .unwrap();
        let f = |x: &Tensor| a.matmul(x)?.dot(x)?.log();
        let ax = a.matmul(&v).unwrap();
        let q = ax.dot(&v).unwrap();
        let want = ax.mul_scalar(2.0).unwrap().div(&q).unwrap();
        assert_close(&f64_of(&grad(f, &v).unwrap()), &f64_of(&want), tol, tol, "grad ln <Ax,x>");
        let want_h = a
            .mul_scalar(2.0)
            .unwrap()
            .div(&q)
            .unwrap()
            .sub(ax.outer(&ax).unwrap().mul_scalar(4.0).unwrap().div(q.square().unwrap()).unwrap())
            .unwrap();
        assert_close(&f64_of(&hessian(f, &v).unwrap()), &f64_of(&want_h), tol * 5.0, tol * 5.0, "Hessian ln <Ax,x>");
        // grad of det X is det(X) X^-T
        let want = x.inverse().unwrap().t().unwrap().mul(x.det().unwrap()).unwrap();
        assert_close(&f64_of(&grad(|x| x.det(), &x).unwrap()), &f64_of(&want), tol, tol, "grad det");
        // ||AX - B||_F^2 has gradient 2 A^T (AX - B)
        let bm = dominant(&[], 4, &dev, dt);
        let want = a.t().unwrap().matmul(&a.matmul(&x).unwrap().sub(&bm).unwrap()).unwrap().mul_scalar(2.0).unwrap();
        let got = grad(|x| a.matmul(x)?.sub(&bm)?.frobenius_norm()?.square(), &x).unwrap();
        assert_close(&f64_of(&got), &f64_of(&want), tol, tol * 10.0, "grad ||AX - B||^2");
    }
}

#[test]
fn singular_and_indefinite_inputs_are_typed_errors() {
    for dev in devices() {
        let keep = Tensor::from_slice(&[1.0f32, 2.0], &[2], &dev).unwrap();
        // batch index 1 is singular ([[1, 2], [2, 4]])
        let a = Tensor::from_slice(&[2.0f32, 0.0, 0.0, 2.0, 1.0, 2.0, 2.0, 4.0], &[2, 2, 2], &dev).unwrap();
        assert!(matches!(a.inverse(), Err(Error::Singular { op: "inverse", batch: 1, .. })), "on {dev}");
        let b = Tensor::ones(&[2, 2, 1], DType::F32, &dev).unwrap();
        assert!(matches!(a.solve(&b), Err(Error::Singular { op: "solve", batch: 1, .. })));
        let (_, info) = a.inverse_ex().unwrap();
        assert_eq!(info.to_vec::<u32>().unwrap(), vec![0, 2], "the unchecked form reports an info code");
        // indefinite: [[1, 2], [2, 1]]
        let ind = Tensor::from_slice(&[1.0f32, 2.0, 2.0, 1.0], &[1, 2, 2], &dev).unwrap();
        assert!(
            matches!(ind.cholesky(), Err(Error::NotPositiveDefinite { op: "cholesky", batch: 0, minor: 2 })),
            "on {dev}"
        );
        assert!(matches!(ind.logdet_checked(), Err(Error::NotPositiveDefinite { op: "logdet", batch: 0, .. })));
        assert!(ind.logdet().unwrap().to_vec::<f32>().unwrap()[0].is_nan(), "log of a negative determinant is NaN");
        // shapes
        let rect = Tensor::ones(&[2, 3], DType::F32, &dev).unwrap();
        assert!(matches!(rect.inverse(), Err(Error::Invalid { op: "inverse", .. })));
        let sq = Tensor::eye(3, DType::F32, &dev).unwrap();
        assert!(matches!(
            sq.solve(&Tensor::ones(&[2, 1], DType::F32, &dev).unwrap()),
            Err(Error::ShapeMismatch { op: "solve", .. })
        ));
        assert!(matches!(
            a.solve(&Tensor::ones(&[3, 2, 1], DType::F32, &dev).unwrap()),
            Err(Error::ShapeMismatch { op: "solve", .. })
        ));
        assert_eq!(keep.to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
        assert_eq!(a.narrow(0, 0, 1).unwrap().det().unwrap().to_vec::<f32>().unwrap(), vec![4.0]);
    }
}
