//! The independent differential check against JAX: random programs of primitives
//! (tools/jax_diffcheck/gen.py writes them with JAX float64 results) evaluated with wgrad's
//! CPU device in f64 under eight transforms; every result must agree to 1e-9 relative.
//! With `--device gpu` the same programs run in f32 on the GPU (automatic fusion on:
//! every transform's elementwise work goes through generated kernels) against a relative
//! tolerance of 1e-3.
//! `cargo run --release --example jax_diffcheck -- PROGS_FILE [--device gpu]`
use wgrad::{grad, hessian, hvp, jacfwd, jacrev, jvp, vmap, Device, Result, Tensor};
fn device() -> &'static Device {
    static DEV: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEV.get_or_init(|| {
        let args: Vec<String> = std::env::args().collect();
        match args.iter().position(|a| a == "--device").and_then(|i| args.get(i + 1)) {
            Some(name) => Device::from_name(name).expect("a device"),
            None => Device::cpu(),
        }
    })
}
fn t(v: &[f64], s: &[usize]) -> Tensor {
    if device().is_gpu() {
        let v32: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        return Tensor::from_slice(&v32, s, device()).unwrap();
    }
    Tensor::from_slice(v, s, device()).unwrap()
}
fn run(prog: &[String], consts: &[Tensor], x: &Tensor) -> Result<Tensor> {
    let mut y = x.clone();
    for (op, c) in prog.iter().zip(consts) {
        y = match op.as_str() {
            "tanh" => y.tanh()?,
            "sin" => y.sin()?,
            "sigmoid" => y.sigmoid()?,
            "softplus" => y.softplus()?,
            "erf" => y.erf()?,
            "exp_tanh" => y.tanh()?.exp()?,
            "mulc" => y.mul(c)?,
            "addc" => y.add(c)?,
            "divc" => y.div(&c.abs()?.add_scalar(1.0)?)?,
            "matmul" => y.matmul(&c.reshape(&[4, 4])?.mul_scalar(0.5)?)?,
            "softmax0" => y.softmax(0)?,
            "softmax1" => y.softmax(1)?,
            "logsoftmax0" => y.log_softmax(0)?,
            "logsoftmax1" => y.log_softmax(1)?,
            "sumkeep0" => y.add(&y.sum(&[0], true)?.mul_scalar(0.1)?)?,
            "sumkeep1" => y.add(&y.sum(&[1], true)?.mul_scalar(0.1)?)?,
            "max1" => y.add(&y.max(&[1], true)?.mul_scalar(0.1)?)?,
            "square_half" => y.mul(&y)?.mul_scalar(0.5)?,
            o => panic!("{o}"),
        };
    }
    Ok(y)
}
fn maxrel(a: &Tensor, b: &[f64]) -> f64 {
    let a = a.to_f64_vec().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / scale).fold(0.0, f64::max)
}
fn main() -> Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "progs.txt".into());
    let tol = if device().is_gpu() { 1e-3 } else { 1e-9 };
    let text = std::fs::read_to_string(&path).map_err(|e| wgrad::Error::Io {
        op: "jax_diffcheck",
        path: path.clone(),
        msg: e.to_string(),
    })?;
    let (mut n, mut worst, mut fails) = (0, 0.0f64, 0);
    let mut prog: Vec<String> = vec![];
    let mut consts: Vec<Tensor> = vec![];
    let mut f: std::collections::HashMap<String, Vec<f64>> = Default::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let head = it.next().unwrap();
        let nums: Vec<f64> = it.clone().filter_map(|s| s.parse().ok()).collect();
        match head {
            "PROG" => {
                prog = it.map(String::from).collect();
                consts.clear();
                f.clear();
            }
            "C" => consts.push(if nums.len() == 16 { t(&nums, &[16]) } else { t(&nums, &[3, 4]) }),
            "END" => {
                let w = t(&f["W"], &[3, 4]);
                let fx = |x: &Tensor| run(&prog, &consts, x)?.mul(&w)?.sum_all();
                let (x, tt, v) = (t(&f["X"], &[3, 4]), t(&f["T"], &[3, 4]), t(&f["V"], &[3, 4]));
                let xs = t(&f["XS"], &[5, 3, 4]);
                let errs = [
                    ("value", maxrel(&fx(&x)?, &f["VAL"])),
                    ("grad", maxrel(&grad(fx, &x)?, &f["G"])),
                    ("jvp", maxrel(&jvp(fx, &x, &tt)?.1, &f["JT"])),
                    ("hvp", maxrel(&hvp(fx, &x, &v)?, &f["HV"])),
                    ("hessian", maxrel(&hessian(fx, &x)?, &f["H"])),
                    ("jacfwd", maxrel(&jacfwd(|x| run(&prog, &consts, x), &x)?, &f["J"])),
                    ("jacrev", maxrel(&jacrev(|x| run(&prog, &consts, x), &x)?, &f["J"])),
                    ("vmap(grad)", maxrel(&vmap(|x| grad(fx, x), &xs, 0, 0)?, &f["PG"])),
                ];
                for (name, e) in errs {
                    worst = worst.max(e);
                    if e.is_nan() || e > tol {
                        fails += 1;
                        println!("program {n} ({}): {name} rel err {e:e}", prog.join(" "));
                    }
                }
                n += 1;
            }
            k => {
                f.insert(k.to_string(), nums);
            }
        }
    }
    println!("{n} programs x 8 transforms on {}, worst relative error {worst:e}, {fails} above {tol:e}", device());
    if fails > 0 {
        std::process::exit(1);
    }
    Ok(())
}
