//! The matmul launcher: batched, strided operands; shared-memory tiles on GPUs, register
//! blocks (vec4 where the layout allows, see `matmul_vec4.rs`) on CPU adapters; split-K
//! for few output tiles over a long K.
use crate::buffer::GpuBuffer;
use crate::context::Context;
use crate::error::{KResult, KernelError};
use crate::fused::Epilogue;
use crate::launch::{numel, u32_of, words, View, MAX_BATCH_RANK};
use crate::matmul_vec4::{vec4_layout, Block, MatmulVec4};
use crate::params::{LaunchParams, MatmulParams};
use crate::source::{KDType, Kernel, KernelKey, ReduceOp};
use std::sync::Arc;

impl Context {
    /// Batched matmul: a [batch.., m, k] and b [batch.., k, n] strided (batch strides already
    /// broadcast, 0 on broadcast dims); returns contiguous [batch.., m, n].
    pub fn matmul(
        self: &Arc<Self>,
        a: View,
        b: View,
        batch_shape: &[usize],
        m: usize,
        k: usize,
        n: usize,
    ) -> KResult<GpuBuffer> {
        let out = self.matmul_with(a, b, batch_shape, m, k, n, None)?;
        Ok(out.expect("a plain matmul always runs").pop().expect("one output"))
    }

    /// The same matmul with an elementwise epilogue applied as it stores (see
    /// [`Epilogue`]): the epilogue's outputs, or None where this matmul cannot take one
    /// (split-K runs it as partial products and a reduction).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_fused(
        self: &Arc<Self>,
        a: View,
        b: View,
        batch_shape: &[usize],
        m: usize,
        k: usize,
        n: usize,
        epilogue: &Epilogue,
    ) -> KResult<Option<Vec<GpuBuffer>>> {
        self.matmul_with(a, b, batch_shape, m, k, n, Some(epilogue))
    }

    #[allow(clippy::too_many_arguments)]
    fn matmul_with(
        self: &Arc<Self>,
        a: View,
        b: View,
        batch_shape: &[usize],
        m: usize,
        k: usize,
        n: usize,
        epilogue: Option<&Epilogue>,
    ) -> KResult<Option<Vec<GpuBuffer>>> {
        if batch_shape.len() > MAX_BATCH_RANK {
            return Err(KernelError::Unsupported(format!(
                "matmul with {} batch dims (at most {MAX_BATCH_RANK})",
                batch_shape.len()
            )));
        }
        let key = KernelKey::new(Kernel::Matmul, KDType::F32);
        let batch = numel(batch_shape);
        // Split-K: few output tiles over a long K (e.g. a weight gradient) would leave most
        // of the GPU idle; K is cut into `s` slices computed as a batch and summed in a
        // fixed order (deterministic).
        let tiles = n.div_ceil(64) * m.div_ceil(64);
        if batch == 1 && tiles < 32 && k >= 2048 && epilogue.is_none() {
            let s =
                [64usize, 32, 16, 8, 4].into_iter().find(|&s| k.is_multiple_of(s) && k / s >= 256 && tiles * s <= 256);
            if let Some(s) = s {
                let kc = k / s;
                let a_strides = [
                    kc * a.strides[batch_shape.len() + 1],
                    a.strides[batch_shape.len()],
                    a.strides[batch_shape.len() + 1],
                ];
                let b_strides =
                    [kc * b.strides[batch_shape.len()], b.strides[batch_shape.len()], b.strides[batch_shape.len() + 1]];
                let av = View { buffer: a.buffer, offset: a.offset, strides: &a_strides };
                let bv = View { buffer: b.buffer, offset: b.offset, strides: &b_strides };
                let partial = self.matmul(av, bv, &[s], m, kc, n)?;
                let ps = [1, m * n];
                let pv = View { buffer: &partial, offset: 0, strides: &ps };
                return Ok(Some(vec![self.reduce(ReduceOp::Sum, pv, &[m * n, s], 1)?]));
            }
        }
        let br = batch_shape.len();
        let mut p = MatmulParams::zeroed();
        [p.m, p.n, p.k] = words([m, n, k], "matrix size")?;
        p.batch_rank = crate::launch::small_u32(br);
        [p.a_off, p.a_rs, p.a_cs] = words([a.offset, a.strides[br], a.strides[br + 1]], "stride")?;
        [p.b_off, p.b_rs, p.b_cs] = words([b.offset, b.strides[br], b.strides[br + 1]], "stride")?;
        for d in 0..br {
            p.batch_shape[d] = u32_of(batch_shape[d], "batch dimension")?;
            [p.a_batch_strides[d], p.b_batch_strides[d]] = words([a.strides[d], b.strides[d]], "stride")?;
        }
        // On CPU adapters (lavapipe) barriers are costly and memory is cached: register
        // blocks win, read as vec4 where the layout allows; GPUs get the shared-memory tiles.
        let key = if self.prefer_register_matmul() && k <= crate::launch::LOOP_CAP {
            match matmul_vec4_variant(&a, &b, br, batch, m, k, n) {
                Some(v) => KernelKey::new(Kernel::MatmulVec4(v), KDType::F32),
                None => KernelKey::new(Kernel::MatmulReg, KDType::F32),
            }
        } else {
            key
        };
        let (tile_m, tile_n) = match key.kernel {
            Kernel::MatmulVec4(v) => v.workgroup_tile(),
            _ => (64, 64),
        };
        let max = self.limits().max_compute_workgroups_per_dimension;
        // within the limit (a u32), the grid's sides fit in 32 bits
        let within = |g: usize| u32::try_from(g).ok().filter(|&g| g <= max);
        let (Some(gx), Some(gy)) = (within(n.div_ceil(tile_n)), within(m.div_ceil(tile_m))) else {
            let groups = n.div_ceil(tile_n).max(m.div_ceil(tile_m)) as u64;
            return Err(KernelError::GridTooLarge { kernel: key.name(), groups, max });
        };
        if let Some(epi) = epilogue {
            let Some(batch) = within(batch) else { return Ok(None) };
            return self.matmul_epilogue(key.kernel, [a.buffer, b.buffer], p.words().to_vec(), (gx, gy, batch), epi);
        }
        let out = self.out_f32(batch * m * n)?;
        let mut base = 0usize;
        while base < batch {
            let z = (batch - base).min(max as usize);
            p.batch_base = u32_of(base, "batch")?;
            self.dispatch(key, &[a.buffer, b.buffer], &[&out], p.words(), (gx, gy, u32_of(z, "batch")?))?;
            base += z;
        }
        Ok(Some(vec![out]))
    }
}

/// The vec4 matmul variant for these operands, if both can be read as aligned vec4s and
/// K is a multiple of 4 (see `matmul_vec4.rs`).
fn matmul_vec4_variant(
    a: &View,
    b: &View,
    br: usize,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Option<MatmulVec4> {
    if !k.is_multiple_of(4) || k / 4 > crate::launch::LOOP_CAP {
        return None;
    }
    let aligned = |v: &View| v.offset.is_multiple_of(4) && v.strides[..br].iter().all(|s| s % 4 == 0);
    let la = vec4_layout(a.strides[br], a.strides[br + 1], m, k, aligned(a))?;
    let lb = vec4_layout(b.strides[br], b.strides[br + 1], k, n, aligned(b))?;
    // lavapipe runs one workgroup per CPU thread at a time: the biggest block that still
    // gives every thread a tile and whose compile time (once per machine: Mesa caches it
    // on disk) the product pays back: large from 2^27 FMAs, huge from 2^30.
    let threads = crate::dispatch::cpu_threads().clamp(2, 8);
    let variant = |block| MatmulVec4 { a: la, b: lb, block };
    let fills = |block| {
        let (tm, tn) = variant(block).workgroup_tile();
        batch * m.div_ceil(tm) * n.div_ceil(tn) >= threads
    };
    let fmas = batch * m * n * k;
    let block = if fmas >= 1 << 30 && fills(Block::Huge) {
        Block::Huge
    } else if fmas >= 1 << 27 && fills(Block::Large) {
        Block::Large
    } else if fills(Block::Medium) {
        Block::Medium
    } else {
        Block::Small
    };
    Some(variant(block))
}
