//! Packing: several tensors' 4-byte elements copied into windows of one flat output, zeros
//! in between (flat parameters and their gradients). One dispatch per group of sources
//! that the storage-buffer limit allows.
use crate::buffer::GpuBuffer;
use crate::context::Context;
use crate::error::KResult;
use crate::launch::u32_of;
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
    /// The WGSL: params [count, base, then (start, len, offset) per source]; thread i
    /// writes output element base + i: source t's element i - start(t) when i falls in
    /// its window (t the last source starting at or before i), else 0.
    pub(crate) fn wgsl(self) -> String {
        let k = self.sources;
        let mut s = String::new();
        for t in 0..k {
            s += &format!("@group(0) @binding({t}) var<storage, read> src{t}: array<u32>;\n");
        }
        s += &format!("@group(0) @binding({k}) var<storage, read_write> out: array<u32>;\n");
        s += &format!("@group(0) @binding({}) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;\n", k + 1);
        s += "@compute @workgroup_size(WG)\n\
              fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,\n\
                      @builtin(local_invocation_index) lid: u32) {\n\
                  let span = stride_range(wid, nwg, lid, param(0));\n\
                  for (var i = span.x; i < span.y; i = i + span.z) {\n";
        s += &format!("        var t = {k}u;\n");
        s += &format!(
            "        for (var q = 0u; q < {k}u; q = q + 1u) {{ if (i >= param(2u + 3u * q)) {{ t = q; }} }}\n"
        );
        s += "        var v = 0u;\n        switch t {\n";
        for t in 0..k {
            s += &format!(
                "            case {t}u: {{\n\
                                 let j = i - param({start}u);\n\
                                 if (j < param({len}u)) {{ v = src{t}[param({off}u) + j]; }}\n\
                             }}\n",
                start = 2 + 3 * t,
                len = 3 + 3 * t,
                off = 4 + 3 * t
            );
        }
        s += "            default: {}\n        }\n        out[param(1) + i] = v;\n    }\n}\n";
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
        let group = (self.limits().max_storage_buffers_per_shader_stage.saturating_sub(1)).clamp(1, 16) as usize;
        let chunks: Vec<&[PackSource]> = if sources.is_empty() { vec![&[]] } else { sources.chunks(group).collect() };
        for (c, chunk) in chunks.iter().enumerate() {
            // this dispatch writes [base, end): from its first window (the output's start
            // for the first) to the next dispatch's first window (the output's end)
            let base = if c == 0 { 0 } else { chunk[0].at };
            let end = chunks.get(c + 1).map_or(len, |next| next[0].at);
            let key =
                KernelKey::new(Kernel::Pack(Pack { sources: crate::launch::small_u32(chunk.len()) }), KDType::F32);
            let mut p = vec![u32_of(end - base, "elements")?, u32_of(base, "offset")?];
            for s in chunk.iter() {
                p.push(u32_of(s.at - base, "offset")?);
                p.push(u32_of(s.len, "elements")?);
                p.push(u32_of(s.offset, "offset")?);
            }
            let inputs: Vec<&GpuBuffer> = chunk.iter().map(|s| s.buffer).collect();
            let grid = self.grid_stride(key, (end - base) as u64)?;
            self.dispatch(key, &inputs, &[&out], &p, grid)?;
        }
        Ok(out)
    }
}
