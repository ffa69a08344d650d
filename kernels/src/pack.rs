//! Packing: several tensors' 4-byte elements copied into windows of one flat output, zeros
//! in between (flat parameters and their gradients). One dispatch per group of sources
//! that the storage-buffer limit allows.
use crate::buffer::GpuBuffer;
use crate::context::Context;
use crate::error::KResult;
use crate::params::{LaunchParams, PackParams, MAX_TENSORS};
use crate::source::{KDType, Kernel, KernelKey};
use std::sync::Arc;

/// One dispatch of a pack: `sources` inputs copied into one output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Pack {
    pub sources: u32,
}

/// One source of a pack: a contiguous run of `len` elements of `buffer` from element
/// `offset`, written to the output from element `at`.
#[derive(Clone, Copy, Debug)]
pub struct PackSource<'a> {
    pub buffer: &'a GpuBuffer,
    pub offset: usize,
    pub len: usize,
    pub at: usize,
}

impl Pack {
    /// The WGSL (params: [`PackParams`]): thread i writes output element base + i: source
    /// t's element i - starts[t] when i falls in its window (t the last source starting at
    /// or before i), else 0.
    pub(crate) fn wgsl(self) -> String {
        let k = self.sources;
        let mut s = String::new();
        let sources: Vec<(String, &str)> = (0..k).map(|t| (format!("src{t}"), "u32")).collect();
        s += &crate::bindings::storage(0, &sources, &[("out".to_string(), "u32")]);
        s += &crate::bindings::params_block(k + 1);
        s += "@compute @workgroup_size(WG)\n\
              fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,\n\
                      @builtin(local_invocation_index) lid: u32) {\n\
                  let span = stride_range(wid, nwg, lid, p_count());\n\
                  for (var i = span.x; i < span.y; i = i + span.z) {\n";
        s += &format!("        var t = {k}u;\n");
        s += &format!("        for (var q = 0u; q < {k}u; q = q + 1u) {{ if (i >= p_starts(q)) {{ t = q; }} }}\n");
        s += "        var v = 0u;\n        switch t {\n";
        for t in 0..k {
            s += &format!(
                "            case {t}u: {{\n\
                                 let j = i - p_starts({t}u);\n\
                                 if (j < p_lens({t}u)) {{ v = src{t}[p_offsets({t}u) + j]; }}\n\
                             }}\n"
            );
        }
        s += "            default: {}\n        }\n        out[p_base() + i] = v;\n    }\n}\n";
        s
    }
}

impl Context {
    /// A fresh buffer of `len` 4-byte elements holding each source's elements at its `at`
    /// and zeros elsewhere. The sources come in ascending `at` with windows that do not
    /// overlap; as few dispatches as the storage-buffer limit allows.
    pub fn pack(self: &Arc<Self>, sources: &[PackSource], len: usize) -> KResult<GpuBuffer> {
        let out = self.alloc_output((len.max(1) * 4) as u64)?;
        if len == 0 {
            return Ok(out);
        }
        let group =
            (self.limits().max_storage_buffers_per_shader_stage.saturating_sub(1) as usize).clamp(1, MAX_TENSORS);
        let chunks: Vec<&[PackSource]> = if sources.is_empty() { vec![&[]] } else { sources.chunks(group).collect() };
        for (c, chunk) in chunks.iter().enumerate() {
            // this dispatch writes [base, end): from its first window (the output's start
            // for the first) to the next dispatch's first window (the output's end)
            let base = if c == 0 { 0 } else { chunk[0].at };
            let end = chunks.get(c + 1).map_or(len, |next| next[0].at);
            let key =
                KernelKey::new(Kernel::Pack(Pack { sources: crate::launch::small_u32(chunk.len()) }), KDType::F32);
            let mut p = PackParams::zeroed();
            [p.count, p.base] = crate::launch::words([end - base, base], "pack window")?;
            for (t, s) in chunk.iter().enumerate() {
                [p.starts[t], p.lens[t], p.offsets[t]] =
                    crate::launch::words([s.at - base, s.len, s.offset], "pack window")?;
            }
            let inputs: Vec<&GpuBuffer> = chunk.iter().map(|s| s.buffer).collect();
            let grid = self.grid_stride(key, (end - base) as u64)?;
            self.dispatch(key, &inputs, &[&out], p.words(), grid)?;
        }
        Ok(out)
    }
}
