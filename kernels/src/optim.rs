//! Launchers for optimizers: in-place SGD and Adam steps on one tensor or many in one
//! dispatch ([`MultiStep`], the one update kernel of each optimizer), the sum of squares behind gradient clipping ([`SumSquares`]),
//! and the device-side step state (learning-rate schedule, bias corrections, clip scale).
use crate::buffer::GpuBuffer;
use crate::context::Context;
use crate::error::KResult;
use crate::launch::u32_of;
use crate::params::{LaunchParams, MultiStepParams, ScheduleParams, SumSquaresParams, MAX_TENSORS};
use crate::source::{KDType, Kernel, KernelKey};
use std::sync::Arc;

/// Hyper-parameters of one Adam step (bias corrections already computed).
#[derive(Clone, Copy, Debug)]
pub struct AdamParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias_correction1: f32,
    pub bias_correction2: f32,
    pub decoupled: bool,
}

/// One tensor of a multi-tensor step: (its gradient, [weights, state..], its elements,
/// how many of its first elements get weight decay).
pub type MultiStepItem<'a> = (&'a GpuBuffer, Vec<&'a GpuBuffer>, usize, usize);

/// The in-place update a [`Kernel::MultiStep`] applies to each of its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MultiStepKind {
    /// SGD with momentum and weight decay: buffers (grad | weights, velocity).
    Sgd,
    /// Adam / AdamW: buffers (grad | weights, m, v).
    Adam,
}

/// One optimizer step over several tensors in one dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MultiStep {
    pub kind: MultiStepKind,
    /// Tensors updated by one dispatch.
    pub tensors: u32,
    /// Read and written as vec4 (every buffer holds whole quads).
    pub vec4: bool,
    /// The learning rate and Adam's bias corrections come from a device-side state
    /// (`[lr, bc1, bc2, t]`, a uniform bound after the params; see optim_schedule.wgsl)
    /// instead of the launch params.
    pub dyn_hyper: bool,
}

impl MultiStep {
    /// Read-write buffers per tensor besides its gradient.
    pub(crate) fn states(self) -> u32 {
        match self.kind {
            MultiStepKind::Sgd => 2,
            MultiStepKind::Adam => 3,
        }
    }

    /// The WGSL: tensor k's gradient is `g{k}`, its weights and state `w{k}`, `s{k}_{j}`;
    /// thread i updates element i of the concatenation (params: [`MultiStepParams`];
    /// tensor k starts at `starts[k]`, its first `decayed[k]` elements get weight decay).
    pub(crate) fn wgsl(self) -> String {
        let elem = if self.vec4 { "vec4<f32>" } else { "f32" };
        let k = self.tensors;
        let mut s = String::new();
        let grads: Vec<(String, &str)> = (0..k).map(|t| (format!("g{t}"), elem)).collect();
        let mut states: Vec<(String, &str)> = Vec::new();
        for t in 0..k {
            states.push((format!("w{t}"), elem));
            states.extend((1..self.states()).map(|j| (format!("s{t}_{j}"), elem)));
        }
        s += &crate::bindings::storage(0, &grads, &states);
        s += &crate::bindings::params_block(k * (1 + self.states()));
        // hyperparameter k (f32 bits)
        s += "fn hp(k: u32) -> f32 { return bitcast<f32>(p_hyper(k)); }\n";
        // the step-dependent ones from the device-side state, or from the params
        if self.dyn_hyper {
            s += &format!(
                "@group(0) @binding({}) var<uniform> step_state: array<vec4<f32>, 2>;\n",
                k * (1 + self.states()) + 1
            );
            s += "fn sgd_h() -> SgdHyper { var h = sgd_hyper(); h.lr = step_state[0].x; return h; }\n\
                  fn adam_h() -> AdamHyper { var h = adam_hyper(); h.lr = step_state[0].x; \
                  h.bc1 = step_state[0].y; h.bc2 = step_state[0].z; return h; }\n\
                  fn gs() -> f32 { return step_state[1].x; }\n";
        } else {
            s += "fn sgd_h() -> SgdHyper { return sgd_hyper(); }\n\
                  fn adam_h() -> AdamHyper { return adam_hyper(); }\n\
                  fn gs() -> f32 { return 1.0; }\n";
        }
        // the update functions of optim_update.wgsl, the same as the one-tensor kernels'
        // weight decay reaches the first decayed[t] elements of tensor t only
        let body = |t: u32| match self.kind {
            MultiStepKind::Sgd => format!(
                "var h = sgd_h();\nif (j >= p_decayed({t}u)) {{ h.wd = T(0); }}\n\
                 let r = sgd_update(w{t}[j], g{t}[j] * gs(), s{t}_1[j], h);\n\
                 if (hp(1u) != 0.0) {{ s{t}_1[j] = r.velocity; }}\n\
                 w{t}[j] = r.w;"
            ),
            MultiStepKind::Adam => format!(
                "var h = adam_h();\nif (j >= p_decayed({t}u)) {{ h.wd = T(0); }}\n\
                 let r = adam_update(w{t}[j], g{t}[j] * gs(), s{t}_1[j], s{t}_2[j], h);\n\
                 s{t}_1[j] = r.m;\ns{t}_2[j] = r.v;\nw{t}[j] = r.w;"
            ),
        };
        s += "@compute @workgroup_size(WG)\n\
              fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,\n\
                      @builtin(local_invocation_index) lid: u32) {\n\
                  let span = stride_range(wid, nwg, lid, p_total());\n\
                  for (var i = span.x; i < span.y; i = i + span.z) {\n";
        s += &per_tensor(k, body);
        s += "    }\n}\n";
        s
    }
}

/// The WGSL that runs `body(t)` for element i of the concatenation of `k` tensors, with t
/// the tensor that holds it (the last whose `starts[t]` is at most i) and `j` its index in
/// that tensor (MultiStep and SumSquares share it).
fn per_tensor(k: u32, body: impl Fn(u32) -> String) -> String {
    let mut s = String::from("        var t = 0u;\n");
    s += &format!("        for (var q = 1u; q < {k}u; q = q + 1u) {{ if (i >= p_starts(q)) {{ t = q; }} }}\n");
    s += "        let j = i - p_starts(t);\n        switch t {\n";
    for t in 0..k {
        s += &format!("            case {t}u: {{\n{}\n            }}\n", body(t));
    }
    s += "            default: {}\n        }\n";
    s
}

/// The sum of squares of several tensors' elements (a global gradient norm), one partial
/// sum per workgroup (`partials[out_at + workgroup]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SumSquares {
    /// Tensors read by one dispatch.
    pub tensors: u32,
}

impl SumSquares {
    /// The WGSL: tensor k is `g{k}`; thread i reads element i of the concatenation (params:
    /// [`SumSquaresParams`]); a workgroup tree-sums its threads' sums.
    pub(crate) fn wgsl(self) -> String {
        let k = self.tensors;
        let mut s = String::new();
        let grads: Vec<(String, &str)> = (0..k).map(|t| (format!("g{t}"), "f32")).collect();
        s += &crate::bindings::storage(0, &grads, &[("partials".to_string(), "f32")]);
        s += &crate::bindings::params_block(k + 1);
        s += "var<workgroup> sums: array<f32, WG>;\n\
              @compute @workgroup_size(WG)\n\
              fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,\n\
                      @builtin(local_invocation_index) lid: u32) {\n\
                  let span = stride_range(wid, nwg, lid, p_total());\n\
                  var acc = 0.0;\n\
                  for (var i = span.x; i < span.y; i = i + span.z) {\n";
        s += &per_tensor(k, |t| format!("acc = acc + g{t}[j] * g{t}[j];"));
        s += "    }\n\
              sums[lid] = acc;\n\
              for (var w = WG / 2u; w > 0u; w = w / 2u) {\n\
                  workgroupBarrier();\n\
                  if (lid < w) { sums[lid] = sums[lid] + sums[lid + w]; }\n\
              }\n\
              if (lid == 0u) { partials[p_out_at() + wid.y * nwg.x + wid.x] = sums[0]; }\n\
              }\n";
        s
    }
}

impl Context {
    /// Partial sums of squares of `tensors` (buffer, elements), all written into one fresh
    /// buffer of f32 partials; returns it and how many partials it holds (their sum is the
    /// total). As few dispatches as the storage-buffer limit allows.
    pub fn sum_squares(self: &Arc<Self>, tensors: &[(&GpuBuffer, usize)]) -> KResult<(GpuBuffer, usize)> {
        let group =
            (self.limits().max_storage_buffers_per_shader_stage.saturating_sub(1) as usize).clamp(1, MAX_TENSORS);
        let mut plans = Vec::new();
        let mut partials = 0usize;
        for chunk in tensors.chunks(group) {
            let key = KernelKey::new(
                Kernel::SumSquares(SumSquares { tensors: crate::launch::small_u32(chunk.len()) }),
                KDType::F32,
            );
            let total: usize = chunk.iter().map(|(_, n)| n).sum();
            let grid = self.grid_stride(key, total.max(1) as u64)?;
            let groups = (grid.0 * grid.1) as usize;
            plans.push((chunk, key, grid, partials));
            partials += groups;
        }
        let out = self.alloc_output((partials.max(1) * 4) as u64)?;
        for (chunk, key, grid, at) in plans {
            let mut p = SumSquaresParams::zeroed();
            p.out_at = u32_of(at, "partials")?;
            let mut start = 0usize;
            for (t, (_, n)) in chunk.iter().enumerate() {
                p.starts[t] = u32_of(start, "elements")?;
                start += n;
            }
            p.total = u32_of(start, "elements")?;
            let inputs: Vec<&GpuBuffer> = chunk.iter().map(|(b, _)| *b).collect();
            self.dispatch(key, &inputs, &[&out], p.words(), grid)?;
        }
        Ok((out, partials))
    }

    /// Tensors one [`MultiStep`] dispatch of `kind` may update: as many as the adapter's
    /// storage-buffer limit allows (at most 16).
    fn multi_step_group(&self, kind: MultiStepKind) -> usize {
        let per = 1 + MultiStep { kind, tensors: 1, vec4: false, dyn_hyper: false }.states();
        ((self.limits().max_storage_buffers_per_shader_stage / per) as usize).clamp(1, MAX_TENSORS)
    }

    /// Update many tensors in place, as few dispatches as the binding limit allows (one
    /// for all of them on most adapters). `tensors[i]` is (grad, [weights, state..], n,
    /// decayed): weight decay applies to its first `decayed` elements only (all of them for
    /// a tensor of its own; the matrices of a flat buffer);
    /// `hyper` are the kind's hyperparameters (see [`MultiStep::wgsl`]): SGD [lr, momentum,
    /// wd], Adam [lr, b1, b2, eps, wd, bc1, bc2, decoupled as 0 / 1].
    /// With `step_state` (see [`Context::optim_schedule`]) the learning rate and bias
    /// corrections are read from it on the device, not from `hyper`.
    pub fn multi_step(
        self: &Arc<Self>,
        kind: MultiStepKind,
        tensors: &[MultiStepItem],
        hyper: &[f32],
        decoupled: bool,
        step_state: Option<&GpuBuffer>,
    ) -> KResult<()> {
        let group = self.multi_step_group(kind);
        for chunk in tensors.chunks(group) {
            // whole quads, a ragged tensor's last one included where every buffer has room
            // for it (pooled buffers do: their sizes are multiples of 256 bytes); the lanes
            // past the end update slack that no tensor reads
            // (and a decay boundary inside a tensor falls between quads)
            let quads_fit = |(g, s, n, decayed): &&MultiStepItem| {
                let bytes = (n.div_ceil(4) * 16) as u64;
                let boundary = decayed >= n || decayed.is_multiple_of(4);
                boundary && g.capacity() >= bytes && s.iter().all(|b| b.capacity() >= bytes)
            };
            let vec4 = chunk.iter().all(|t| quads_fit(&t));
            let step = MultiStep {
                kind,
                tensors: crate::launch::small_u32(chunk.len()),
                vec4,
                dyn_hyper: step_state.is_some(),
            };
            let key = KernelKey::new(Kernel::MultiStep(step), KDType::F32);
            let unit = if vec4 { 4 } else { 1 };
            let mut p = MultiStepParams::zeroed();
            for (slot, h) in p.hyper.iter_mut().zip(hyper) {
                *slot = h.to_bits();
            }
            p.decoupled = decoupled as u32;
            let mut start = 0usize;
            for (t, (_, _, n, decayed)) in chunk.iter().enumerate() {
                p.starts[t] = u32_of(start, "elements")?;
                p.decayed[t] = u32_of(decayed.min(n).div_ceil(unit), "elements")?;
                start += n.div_ceil(unit);
            }
            p.total = u32_of(start, "elements")?;
            let inputs: Vec<&GpuBuffer> = chunk.iter().map(|(g, _, _, _)| *g).collect();
            let outputs: Vec<&GpuBuffer> = chunk.iter().flat_map(|(_, s, _, _)| s.iter().copied()).collect();
            let grid = self.grid_stride(key, (start * unit) as u64)?;
            let uniforms: Vec<&GpuBuffer> = step_state.into_iter().collect();
            self.dispatch_with(key, &inputs, &outputs, &uniforms, p.words(), grid)?;
        }
        Ok(())
    }

    /// A fresh optimizer step state `[lr, bc1, bc2, t, grad scale, grad norm, 0, 0]` = 0 on
    /// the device (bound as a storage buffer by [`Context::optim_schedule`] and as a uniform
    /// by the updates).
    pub fn optim_step_state(self: &Arc<Self>) -> GpuBuffer {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgrad optimizer step state"),
            size: 32,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // wgpu zero-initializes every buffer
        self.wrap_external(buf)
    }

    /// Advance an optimizer's step state on the device: lr = schedule(t), then t + 1 and
    /// the bias corrections 1 - b^t. `schedule` is [kind, lr, 1 - b1, 1 - b2, a, b, c, d] as
    /// optim_schedule.wgsl reads them (kind as a u32, the rest as f32).
    /// With `clip` = (partial sums of squares from [`Context::sum_squares`], their count,
    /// max_norm) it also sets the gradient scale of a global-norm clip, which the updates
    /// apply to every gradient.
    pub fn optim_schedule(
        self: &Arc<Self>,
        state: &GpuBuffer,
        kind: u32,
        values: [f32; 7],
        clip: Option<(&GpuBuffer, usize, f32)>,
    ) -> KResult<()> {
        let mut p = ScheduleParams { kind, values: values.map(f32::to_bits), max_norm: 0, partials: 0 };
        match clip {
            None => self.dispatch(
                KernelKey::new(Kernel::OptimSchedule { clip: false }, KDType::F32),
                &[],
                &[state],
                p.words(),
                (1, 1, 1),
            ),
            Some((partials, n, max_norm)) => {
                p.max_norm = max_norm.to_bits();
                p.partials = u32_of(n, "partials")?;
                let key = KernelKey::new(Kernel::OptimSchedule { clip: true }, KDType::F32);
                self.dispatch(key, &[partials], &[state], p.words(), (1, 1, 1))
            }
        }
    }
}
