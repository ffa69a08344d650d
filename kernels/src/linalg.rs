//! Launchers of the factorization kernels (one workgroup per matrix) and the LU solve.
use crate::buffer::GpuBuffer;
use crate::context::Context;
use crate::error::KResult;
use crate::launch::View;
use crate::params::{FactorParams, LaunchParams, SolveParams};
use crate::source::{KDType, Kernel, KernelKey};
use std::sync::Arc;

/// Loop iterations one invocation may run per dispatch: lavapipe (llvmpipe) stops a
/// shader invocation after 65,535 loop iterations in total, silently, so long
/// factorizations and solves are split into several dispatches.
const LOOP_BUDGET: usize = 48_000;

/// Split 0..n into ranges whose summed `cost(k)` stays within the budget.
fn segments(n: usize, cost: impl Fn(usize) -> usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut start, mut acc) = (0, 0);
    for k in 0..n {
        let c = cost(k);
        if acc + c > LOOP_BUDGET && k > start {
            out.push((start, k));
            start = k;
            acc = 0;
        }
        acc += c;
    }
    if start < n || n == 0 {
        out.push((start, n));
    }
    out
}

/// Per-thread loop iterations of one step of a one-workgroup factorization (WG threads).
fn factor_step_cost(n: usize, k: usize) -> usize {
    let wg = crate::source::WG as usize;
    let m = n - k - 1;
    (n - k).div_ceil(wg) + 8 + n.div_ceil(wg) * 2 + (m * m).div_ceil(wg) + 2
}

/// Outputs of a batched LU factorization.
pub struct LuFactors {
    /// [batch, n, n]: L below the diagonal (unit diagonal implied), U on and above it.
    pub lu: GpuBuffer,
    /// [batch, n] u32: the row swapped with row k at step k.
    pub piv: GpuBuffer,
    /// [batch] u32: 0, or k + 1 for the first zero pivot.
    pub info: GpuBuffer,
    /// [batch] f32: the sign of det(A) (0 when singular).
    pub sign: GpuBuffer,
}

impl Context {
    /// Batched LU with partial pivoting of the matrices of view `a` (shape [batch.., n, n]).
    pub fn lu(self: &Arc<Self>, a: View, shape: &[usize]) -> KResult<LuFactors> {
        let n = shape[shape.len() - 1];
        let batch: usize = shape[..shape.len() - 2].iter().product();
        let key = KernelKey::new(Kernel::Lu, KDType::F32);
        let lu = self.contiguous(a, shape)?; // factorized in place
        let piv = self.alloc_output((batch * n * 4) as u64)?;
        let info = self.zeros_u32(batch)?;
        let sign = self.fill(batch, 1.0)?;
        let grid = self.grid_groups(key, batch as u64)?;
        for (k0, k1) in segments(n, |k| factor_step_cost(n, k)) {
            let p = factor_params(n, batch, k0, k1)?;
            self.dispatch(key, &[], &[&lu, &piv, &info, &sign], p.words(), grid)?;
        }
        Ok(LuFactors { lu, piv, info, sign })
    }

    /// X = A^-1 B from LU factors; `b` is a view of shape [batch.., n, nrhs].
    pub fn lu_solve(self: &Arc<Self>, f: &LuFactors, b: View, shape: &[usize]) -> KResult<GpuBuffer> {
        let rank = shape.len();
        let (n, r) = (shape[rank - 2], shape[rank - 1]);
        let batch: usize = shape[..rank - 2].iter().product();
        let key = KernelKey::new(Kernel::LuSolve, KDType::F32);
        let x = self.contiguous(b, shape)?;
        let grid = self.grid_1d(key, (batch * r) as u64)?;
        let [n_w, nrhs, batch] = crate::launch::words([n, r, batch], "solve size")?;
        let mut p = SolveParams { n: n_w, nrhs, batch, phase: 0, i_begin: 0, i_end: 0 };
        self.dispatch(key, &[&f.lu, &f.piv], &[&x], p.words(), grid)?;
        for phase in [1u32, 2] {
            // row i of the forward pass costs i iterations, step s of the backward pass s
            for (i0, i1) in segments(n, |i| i + 1) {
                [p.i_begin, p.i_end] = crate::launch::words([i0, i1], "row")?;
                p.phase = phase;
                self.dispatch(key, &[&f.lu, &f.piv], &[&x], p.words(), grid)?;
            }
        }
        Ok(x)
    }

    /// Batched lower Cholesky factor; returns (L, info) with info[b] = k + 1 at the first
    /// non-positive pivot.
    pub fn cholesky(self: &Arc<Self>, a: View, shape: &[usize]) -> KResult<(GpuBuffer, GpuBuffer)> {
        let n = shape[shape.len() - 1];
        let batch: usize = shape[..shape.len() - 2].iter().product();
        let key = KernelKey::new(Kernel::Cholesky, KDType::F32);
        let l = self.contiguous(a, shape)?; // factorized in place
        let info = self.zeros_u32(batch)?;
        let grid = self.grid_groups(key, batch as u64)?;
        for (k0, k1) in segments(n, |k| factor_step_cost(n, k)) {
            self.dispatch(key, &[], &[&l, &info], factor_params(n, batch, k0, k1)?.words(), grid)?;
        }
        Ok((l, info))
    }
}

/// The launch params of factorization steps [k0, k1) of `batch` n x n matrices.
fn factor_params(n: usize, batch: usize, k0: usize, k1: usize) -> KResult<FactorParams> {
    let [n, batch, k_begin, k_end] = crate::launch::words([n, batch, k0, k1], "factorization size")?;
    Ok(FactorParams { n, batch, k_begin, k_end })
}
