//! CPU reference factorizations in f64 (straightforward loops; the GPU runs WGSL kernels).

/// In-place LU with partial pivoting of a row-major n x n matrix.
/// Returns (pivots, info: 0 or k + 1 at the first zero pivot, sign of det).
pub fn lu_factor(a: &mut [f64], n: usize) -> (Vec<usize>, usize, f64) {
    let mut piv = vec![0; n];
    let mut info = 0;
    let mut sign = 1.0;
    for k in 0..n {
        let mut p = k;
        for i in k + 1..n {
            if a[i * n + k].abs() > a[p * n + k].abs() {
                p = i;
            }
        }
        piv[k] = p;
        if p != k {
            for j in 0..n {
                a.swap(k * n + j, p * n + j);
            }
            sign = -sign;
        }
        let d = a[k * n + k];
        if d == 0.0 {
            if info == 0 {
                info = k + 1;
            }
            sign = 0.0;
            continue;
        }
        if d < 0.0 {
            sign = -sign;
        }
        for i in k + 1..n {
            a[i * n + k] /= d;
            let m = a[i * n + k];
            for j in k + 1..n {
                a[i * n + j] -= m * a[k * n + j];
            }
        }
    }
    (piv, info, sign)
}

/// Solve in place for the r columns of row-major b (n x r) given LU factors.
pub fn lu_solve(lu: &[f64], piv: &[usize], b: &mut [f64], n: usize, r: usize) {
    for k in 0..n {
        if piv[k] != k {
            for j in 0..r {
                b.swap(k * r + j, piv[k] * r + j);
            }
        }
    }
    for i in 0..n {
        for k in 0..i {
            let l = lu[i * n + k];
            for j in 0..r {
                b[i * r + j] -= l * b[k * r + j];
            }
        }
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            let u = lu[i * n + k];
            for j in 0..r {
                b[i * r + j] -= u * b[k * r + j];
            }
        }
        let d = lu[i * n + i];
        for j in 0..r {
            b[i * r + j] /= d;
        }
    }
}

/// In-place lower Cholesky factor (upper triangle zeroed); 0 or k + 1 at the first
/// non-positive pivot.
pub fn cholesky(a: &mut [f64], n: usize) -> usize {
    let mut info = 0;
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        // not positive, or NaN
        if d.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) && info == 0 {
            info = j + 1;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
        for i in 0..j {
            a[i * n + j] = 0.0;
        }
    }
    info
}
