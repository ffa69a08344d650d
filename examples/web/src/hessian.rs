//! The page's second panel, a worked example of the notes: f(x) = ln <Ax, x> with A
//! symmetric positive definite, whose Hessian has the closed form
//! H = 2A / q - 4 (Ax)(Ax)^T / q^2, q = <Ax, x>.
use wgrad::{hessian, Device, Result, Tensor};

pub const A: [[f64; 3]; 3] = [[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]];
pub const X: [f64; 3] = [0.3, -0.5, 0.8];

/// The closed form, in f64 on the host.
pub fn closed_form() -> [[f64; 3]; 3] {
    let ax: Vec<f64> = A.iter().map(|row| row.iter().zip(X).map(|(a, x)| a * x).sum()).collect();
    let q: f64 = ax.iter().zip(X).map(|(a, x)| a * x).sum();
    let mut h = [[0.0; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            h[i][j] = 2.0 * A[i][j] / q - 4.0 * ax[i] * ax[j] / (q * q);
        }
    }
    h
}

/// `hessian` of f on `dev` (f32), read back with the async form.
pub async fn autograd(dev: &Device) -> Result<[[f64; 3]; 3]> {
    let a = Tensor::from_slice(&A.concat().iter().map(|&v| v as f32).collect::<Vec<_>>(), &[3, 3], dev)?;
    let x = Tensor::from_slice(&X.map(|v| v as f32), &[3], dev)?;
    let h = hessian(|x| a.matmul(x)?.dot(x)?.log(), &x)?;
    let flat = h.to_vec_async::<f64>().await?;
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        row.copy_from_slice(&flat[3 * i..3 * i + 3]);
    }
    Ok(out)
}

/// The largest absolute difference between two matrices.
pub fn max_abs_diff(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> f64 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autograd_hessian_matches_the_closed_form_on_the_cpu() {
        let h = pollster::block_on(autograd(&Device::cpu())).unwrap();
        let want = closed_form();
        assert!(max_abs_diff(&h, &want) < 1e-4, "{h:?} vs {want:?}");
        // hand-computed: Ax = (0.7, -0.4, 1.1), q = 0.21 + 0.2 + 0.88 = 1.29
        assert!((want[0][0] - (8.0 / 1.29 - 4.0 * 0.49 / (1.29 * 1.29))).abs() < 1e-12);
    }
}
