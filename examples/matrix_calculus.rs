//! The worked examples of the matrix-calculus notes, each three ways: the closed form from
//! the differential rules, wgrad's autograd on the chosen device, and central finite
//! differences (f64, CPU). Exits non-zero if any line disagrees.
//! `cargo run --release --example matrix_calculus -- --device cpu|gpu|best`
use wgrad::{grad, hessian, vjp, DType, Device, Result, Tensor};

fn arg_device() -> Result<Device> {
    let args: Vec<String> = std::env::args().collect();
    let name =
        args.iter().position(|a| a == "--device").and_then(|i| args.get(i + 1)).map(String::as_str).unwrap_or("best");
    Device::from_name(name)
}

fn cpu64(t: &Tensor) -> Tensor {
    t.to_device(&Device::Cpu).unwrap().to_dtype(DType::F64).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (cpu64(a).to_vec::<f64>().unwrap(), cpu64(b).to_vec::<f64>().unwrap());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn max_abs(a: &Tensor) -> f64 {
    cpu64(a).to_vec::<f64>().unwrap().iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Central differences of a scalar function of an f64 CPU tensor: h = 1e-6.
fn fd_grad(f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor) -> Tensor {
    let h = 1e-6;
    let base = x.to_vec::<f64>().unwrap();
    let g: Vec<f64> = (0..base.len())
        .map(|i| {
            let mut p = base.clone();
            let mut m = base.clone();
            p[i] += h;
            m[i] -= h;
            let fp = f(&Tensor::from_slice(&p, x.shape(), &Device::Cpu).unwrap()).unwrap().to_scalar::<f64>().unwrap();
            let fm = f(&Tensor::from_slice(&m, x.shape(), &Device::Cpu).unwrap()).unwrap().to_scalar::<f64>().unwrap();
            (fp - fm) / (2.0 * h)
        })
        .collect();
    Tensor::from_slice(&g, x.shape(), &Device::Cpu).unwrap()
}

/// Second-order central differences of each output of f (h = 1e-4): shape f.shape ++ x.shape ++ x.shape.
fn fd_hessian(f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor) -> Tensor {
    let h = 1e-4;
    let base = x.to_vec::<f64>().unwrap();
    let n = base.len();
    let eval = |di: usize, si: f64, dj: usize, sj: f64| -> Vec<f64> {
        let mut v = base.clone();
        v[di] += si * h;
        v[dj] += sj * h;
        f(&Tensor::from_slice(&v, x.shape(), &Device::Cpu).unwrap()).unwrap().to_vec::<f64>().unwrap()
    };
    let out_shape = f(x).unwrap().shape().to_vec();
    let m: usize = out_shape.iter().product();
    let mut hess = vec![0.0; m * n * n];
    for i in 0..n {
        for j in 0..n {
            let (pp, pm, mp, mm) =
                (eval(i, 1.0, j, 1.0), eval(i, 1.0, j, -1.0), eval(i, -1.0, j, 1.0), eval(i, -1.0, j, -1.0));
            for o in 0..m {
                hess[o * n * n + i * n + j] = (pp[o] - pm[o] - mp[o] + mm[o]) / (4.0 * h * h);
            }
        }
    }
    let mut shape = out_shape;
    shape.extend_from_slice(x.shape());
    shape.extend_from_slice(x.shape());
    Tensor::from_slice(&hess, &shape, &Device::Cpu).unwrap()
}

struct Report {
    failures: usize,
    tol: f64,
}

impl Report {
    fn line(&mut self, name: &str, closed: &Tensor, auto: &Tensor, fd: &Tensor) {
        let scale = max_abs(closed).max(1.0);
        let (ea, ef) = (max_abs_diff(auto, closed) / scale, max_abs_diff(fd, closed) / scale);
        let ok = ea <= self.tol && ef <= 1e-5;
        if !ok {
            self.failures += 1;
        }
        println!(
            "{name:<44} {:>12} {ea:>14.3e} {ef:>14.3e}   {}",
            format!("{:?}", closed.shape()),
            if ok { "ok" } else { "DISAGREES" }
        );
    }
}

fn main() -> Result<()> {
    let dev = arg_device()?;
    let dt = if dev.is_gpu() { DType::F32 } else { DType::F64 };
    let on = |t: &Tensor| t.to_dtype(dt).unwrap().to_device(&dev).unwrap();
    let mut r = Report { failures: 0, tol: if dev.is_gpu() { 1e-3 } else { 1e-9 } };
    println!("device: {}  (autograd in {dt:?}; finite differences in f64 on the CPU)", dev.name());
    println!("{:<44} {:>12} {:>14} {:>14}", "example", "shape", "autograd err", "finite-diff err");
    println!("{}", "-".repeat(94));

    let n = 4;
    let rnd = |seed| Tensor::randn_dtype(&[n, n], seed, DType::F64, &Device::Cpu).unwrap();
    let eye = Tensor::eye(n, DType::F64, &Device::Cpu)?;
    let r1 = rnd(1);
    let x_spd = r1.matmul(&r1.t()?)?.mul_scalar(0.25)?.add(&eye)?; // SPD
    let s = rnd(2);
    let a_spd = {
        let r3 = rnd(3);
        r3.matmul(&r3.t()?)?.mul_scalar(0.25)?.add(&eye)?
    };
    let b = rnd(4);

    // 1. f(X) = <S, X> - log det X  =>  grad = S - X^-T
    let f1 = |s: Tensor| move |x: &Tensor| s.inner(x)?.sub(&x.logdet()?);
    let closed = s.sub(&x_spd.inverse()?.t()?)?;
    let auto = grad(f1(on(&s)), &on(&x_spd))?;
    r.line("grad <S,X> - log det X = S - X^-T", &closed, &auto, &fd_grad(&f1(s.clone()), &x_spd));

    // 2. f(x) = ln <Ax, x>, A SPD  =>  grad = 2Ax / <Ax,x>, Hessian = 2A/q - 4 (Ax)(Ax)^T / q^2
    let xv = Tensor::from_slice(&[0.3, -0.5, 0.8, 0.1], &[n], &Device::Cpu)?;
    let f2 = |a: Tensor| move |x: &Tensor| a.matmul(x)?.dot(x)?.log();
    let ax = a_spd.matmul(&xv)?;
    let q = ax.dot(&xv)?;
    let closed = ax.mul_scalar(2.0)?.div(&q)?;
    r.line(
        "grad ln <Ax,x> = 2Ax / <Ax,x>",
        &closed,
        &grad(f2(on(&a_spd)), &on(&xv))?,
        &fd_grad(&f2(a_spd.clone()), &xv),
    );
    let closed_h = a_spd.mul_scalar(2.0)?.div(&q)?.sub(&ax.outer(&ax)?.mul_scalar(4.0)?.div(&q.square()?)?)?;
    r.line(
        "Hessian ln <Ax,x> = 2A/q - 4AxxᵀA/q²",
        &closed_h,
        &hessian(f2(on(&a_spd)), &on(&xv))?,
        &fd_hessian(&f2(a_spd.clone()), &xv),
    );

    // 3. d det X = det X <X^-T, dX>  =>  grad det X = det(X) X^-T
    let closed = x_spd.inverse()?.t()?.mul(&x_spd.det()?)?;
    r.line(
        "grad det X = det(X) X^-T",
        &closed,
        &grad(|x| x.det(), &on(&x_spd))?,
        &fd_grad(&|x: &Tensor| x.det(), &x_spd),
    );

    // 4. d(X^-1) = -X^-1 dX X^-1  =>  VJP with cotangent G: -X^-T G X^-T
    let g = rnd(5);
    let xi_t = x_spd.inverse()?.t()?;
    let closed = xi_t.matmul(&g)?.matmul(&xi_t)?.neg()?;
    let auto = vjp(|x| x.inverse(), &on(&x_spd), &on(&g))?.1;
    let fd = fd_grad(&|x: &Tensor| x.inverse()?.inner(&g), &x_spd);
    r.line("d(X^-1) as a VJP: -X^-T G X^-T", &closed, &auto, &fd);

    // 5. f(X) = ||AX - B||_F^2  =>  grad = 2 A^T (AX - B)
    let f5 = |a: &Tensor, b: &Tensor| {
        let (a, b) = (a.clone(), b.clone());
        move |x: &Tensor| a.matmul(x)?.sub(&b)?.frobenius_norm()?.square()
    };
    let closed = a_spd.t()?.matmul(&a_spd.matmul(&x_spd)?.sub(&b)?)?.mul_scalar(2.0)?;
    r.line(
        "grad ||AX - B||_F^2 = 2 A^T (AX - B)",
        &closed,
        &grad(f5(&on(&a_spd), &on(&b)), &on(&x_spd))?,
        &fd_grad(&f5(&a_spd, &b), &x_spd),
    );

    // 6. vector-valued f(x) = [x0^2 x1, sin x0 + x1^3]: Hessian is 3-D, one slice per output
    //    H_0 = [[2 x1, 2 x0], [2 x0, 0]], H_1 = [[-sin x0, 0], [0, 6 x1]]
    let f6 = |x: &Tensor| -> Result<Tensor> {
        let (x0, x1) = (x.narrow(0, 0, 1)?, x.narrow(0, 1, 1)?);
        Tensor::cat(&[x0.square()?.mul(&x1)?, x0.sin()?.add(&x1.powf(3.0)?)?], 0)
    };
    let (p, qv) = (0.7f64, -1.3f64);
    let closed =
        Tensor::from_slice(&[2.0 * qv, 2.0 * p, 2.0 * p, 0.0, -p.sin(), 0.0, 0.0, 6.0 * qv], &[2, 2, 2], &Device::Cpu)?;
    let x6 = Tensor::from_slice(&[p, qv], &[2], &Device::Cpu)?;
    r.line("Hessian of [x0² x1, sin x0 + x1³] (3-D)", &closed, &hessian(f6, &on(&x6))?, &fd_hessian(&f6, &x6));

    println!("{}", "-".repeat(94));
    if r.failures > 0 {
        println!("{} example(s) disagree", r.failures);
        std::process::exit(1);
    }
    println!("all {} examples agree (autograd tolerance {:e} relative, finite differences 1e-5)", 7, r.tol);
    Ok(())
}
