//! Generated elementwise kernels: one WGSL module per expression DAG (a list of steps over
//! N strided inputs, M outputs). The structure (steps, input modes, which inputs share a
//! buffer, outputs, vec4 or scalar) is the cache key; scalars and shapes are launch params,
//! so the same structure at other sizes or constants compiles once. Each new structure is
//! validated with naga when it is registered.

use crate::buffer::GpuBuffer;
use crate::context::Context;
use crate::error::{KResult, KernelError};
use crate::launch::{check_rank, coalesce, is_contiguous, numel, u32_of, View};
use crate::source::{BinaryOp, KDType, Kernel, KernelKey, UnaryOp, PARAMS_QUADS, WG};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// Storage buffers a fused kernel binds at most (inputs + outputs): the WebGPU default of
/// `max_storage_buffers_per_shader_stage`, or the adapter's limit where it is lower.
pub const FUSED_MAX_BUFFERS: u32 = 8;
/// Launch-param words a fused kernel may use (the uniform block's size).
pub const FUSED_PARAM_WORDS: usize = PARAMS_QUADS as usize * 4;

/// One step of a fused program; operands are indices of earlier steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FusedStep {
    /// The value of input `i` at this element.
    Load(u32),
    /// `op(x, scalars[scalar])`.
    Unary {
        op: UnaryOp,
        x: u32,
        scalar: u32,
    },
    Binary {
        op: BinaryOp,
        a: u32,
        b: u32,
    },
    /// `c != 0 ? a : b`.
    Where {
        c: u32,
        a: u32,
        b: u32,
    },
}

impl FusedStep {
    fn name(&self) -> Option<String> {
        match self {
            FusedStep::Load(_) => None,
            FusedStep::Unary { op, .. } => Some(format!("{op:?}").to_lowercase()),
            FusedStep::Binary { op, .. } => Some(format!("{op:?}").to_lowercase()),
            FusedStep::Where { .. } => Some("where".into()),
        }
    }
}

/// How an input is read: like the output (contiguous), one element everywhere (splat), or
/// through its strides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Mode {
    Contiguous,
    Splat,
    Strided,
}

/// The structure of a fused kernel: what its WGSL depends on, and nothing else.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Program {
    steps: Vec<FusedStep>,
    /// (binding, mode) of each input.
    inputs: Vec<(u32, Mode)>,
    buffers: u32,
    outputs: Vec<u32>,
    scalars: u32,
    vec4: bool,
}

struct Entry {
    name: String,
    source: String,
    buffers: u32,
    outputs: u32,
}

/// Every structure generated so far (an id indexes the entries) and the id of each.
struct Registry {
    entries: Vec<Entry>,
    ids: Option<HashMap<Program, u32>>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry { entries: Vec::new(), ids: None });

/// The kernel id of a program, generating and validating its WGSL the first time.
fn register(p: Program) -> KResult<u32> {
    let mut reg = crate::lock(&REGISTRY);
    if let Some(&id) = reg.ids.get_or_insert_with(HashMap::new).get(&p) {
        return Ok(id);
    }
    let ops: Vec<String> = p.steps.iter().filter_map(FusedStep::name).collect();
    let name = format!("fused[{}]", ops.join(","));
    let source = generate(&p, &name);
    crate::source::validate_wgsl(&source).map_err(|msg| KernelError::Compile { kernel: name.clone(), msg })?;
    let id = reg.entries.len() as u32;
    reg.entries.push(Entry { name, source, buffers: p.buffers, outputs: p.outputs.len() as u32 });
    reg.ids.get_or_insert_with(HashMap::new).insert(p, id);
    Ok(id)
}

/// (name, WGSL source, input buffers, outputs) of a registered fused kernel.
pub(crate) fn entry(id: u32) -> (String, String, u32, u32) {
    let reg = crate::lock(&REGISTRY);
    let e = &reg.entries[id as usize];
    (e.name.clone(), e.source.clone(), e.buffers, e.outputs)
}

/// How many fused kernel structures this process has generated (each validated by naga).
pub fn fused_kernels_generated() -> usize {
    crate::lock(&REGISTRY).entries.len()
}

/// The WGSL sources of every fused kernel generated so far (for validation tests).
pub fn fused_sources() -> Vec<String> {
    crate::lock(&REGISTRY).entries.iter().map(|e| e.source.clone()).collect()
}

const COMMON: &str = include_str!("../../shaders/common.wgsl");

fn generate(p: &Program, name: &str) -> String {
    let elem = if p.vec4 { "vec4<f32>" } else { "f32" };
    let mut s = format!(
        "// generated: {name}\nalias T = f32;\nalias ST = f32;\nconst WG: u32 = {WG}u;\n\
         const PARAMS_QUADS: u32 = {PARAMS_QUADS}u;\n"
    );
    s += COMMON;
    s += "\n";
    for b in 0..p.buffers {
        let _ = writeln!(s, "@group(0) @binding({b}) var<storage, read> in{b}: array<{elem}>;");
    }
    for o in 0..p.outputs.len() {
        let _ = writeln!(
            s,
            "@group(0) @binding({}) var<storage, read_write> out{o}: array<{elem}>;",
            p.buffers as usize + o
        );
    }
    let _ = writeln!(
        s,
        "@group(0) @binding({}) var<uniform> params: array<vec4<u32>, PARAMS_QUADS>;",
        p.buffers as usize + p.outputs.len()
    );
    // one function per distinct op
    let mut seen = Vec::new();
    for st in &p.steps {
        let (fname, def) = match st {
            FusedStep::Unary { op, .. } => {
                (format!("u_{op:?}"), format!("fn u_{op:?}(x: T, s: T) -> T {{ {} }}", op.wgsl_body()))
            }
            FusedStep::Binary { op, .. } => {
                (format!("b_{op:?}"), format!("fn b_{op:?}(a: T, b: T) -> T {{ {} }}", op.wgsl_body()))
            }
            _ => continue,
        };
        if !seen.contains(&fname) {
            s += &def;
            s += "\n";
            seen.push(fname);
        }
    }
    // the expression: inputs in, outputs out
    s += "struct Outs {\n";
    for o in 0..p.outputs.len() {
        let _ = writeln!(s, "    o{o}: T,");
    }
    s += "}\n";
    let args: Vec<String> = (0..p.inputs.len()).map(|i| format!("l{i}: T")).collect();
    let _ = writeln!(s, "fn expr({}) -> Outs {{", args.join(", "));
    for (k, st) in p.steps.iter().enumerate() {
        let e = match *st {
            FusedStep::Load(i) => format!("l{i}"),
            FusedStep::Unary { op, x, scalar } => format!("u_{op:?}(v{x}, bitcast<f32>(param({}u)))", 4 + scalar),
            FusedStep::Binary { op, a, b } => format!("b_{op:?}(v{a}, v{b})"),
            FusedStep::Where { c, a, b } => format!("select(v{b}, v{a}, v{c} != T(0))"),
        };
        let _ = writeln!(s, "    let v{k} = {e};");
    }
    let outs: Vec<String> = p.outputs.iter().map(|o| format!("v{o}")).collect();
    let _ = writeln!(s, "    return Outs({});\n}}", outs.join(", "));
    // main: the grid-stride loop
    s += "@compute @workgroup_size(WG)\n\
          fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,\n\
                  @builtin(local_invocation_index) lid: u32) {\n\
              let total = nwg.x * nwg.y * WG;\n\
              let n = param(0);\n\
              let rank = param(1);\n";
    let _ = writeln!(s, "    let shape_at = {}u;", 4 + p.scalars);
    s += "    var at = shape_at + rank;\n";
    for (i, &(_, mode)) in p.inputs.iter().enumerate() {
        let step = if mode == Mode::Strided { "1u + rank" } else { "1u" };
        let _ = writeln!(s, "    let p{i} = at;\n    at = at + {step};");
    }
    s += "    for (var i = flat_id(wid, nwg, lid); i < n; i = i + total) {\n";
    for (i, &(b, mode)) in p.inputs.iter().enumerate() {
        let load = match (mode, p.vec4) {
            (Mode::Contiguous, _) => format!("in{b}[param(p{i}) + i]"),
            (Mode::Splat, false) => format!("in{b}[param(p{i})]"),
            (Mode::Splat, true) => format!("vec4<f32>(in{b}[param(p{i}) / 4u][param(p{i}) % 4u])"),
            (Mode::Strided, _) => format!("in{b}[strided_offset(i, rank, shape_at, p{i} + 1u, param(p{i}))]"),
        };
        let _ = writeln!(s, "        let l{i} = {load};");
    }
    if p.vec4 {
        for lane in ["x", "y", "z", "w"] {
            let a: Vec<String> = (0..p.inputs.len()).map(|i| format!("l{i}.{lane}")).collect();
            let _ = writeln!(s, "        let r{lane} = expr({});", a.join(", "));
        }
        for o in 0..p.outputs.len() {
            let _ = writeln!(s, "        out{o}[i] = vec4<f32>(rx.o{o}, ry.o{o}, rz.o{o}, rw.o{o});");
        }
    } else {
        let a: Vec<String> = (0..p.inputs.len()).map(|i| format!("l{i}")).collect();
        let _ = writeln!(s, "        let r = expr({});", a.join(", "));
        for o in 0..p.outputs.len() {
            let _ = writeln!(s, "        out{o}[i] = r.o{o};");
        }
    }
    s += "    }\n}\n";
    s
}

/// Launch-param words a fused kernel over `rank` dims with `inputs` inputs (each counted
/// as strided, the worst case) and `scalars` scalars needs at most.
pub fn fused_param_words(rank: usize, inputs: usize, scalars: usize) -> usize {
    4 + scalars + rank + inputs * (1 + rank)
}

impl Context {
    /// Run a fused elementwise program over `shape`: `inputs[i]` is read by `Load(i)`
    /// (a strided view already broadcast to `shape`), `scalars` are the operands of the
    /// unary steps, and one fresh contiguous f32 buffer is written for each step in
    /// `outputs`. Inputs on one buffer share a binding; at most [`FUSED_MAX_BUFFERS`]
    /// buffers and [`FUSED_PARAM_WORDS`] param words (the caller splits larger DAGs).
    pub fn fused(
        self: &Arc<Self>,
        steps: &[FusedStep],
        inputs: &[View],
        scalars: &[f32],
        outputs: &[u32],
        shape: &[usize],
    ) -> KResult<Vec<GpuBuffer>> {
        let strides: Vec<&[usize]> = inputs.iter().map(|v| v.strides).collect();
        let (shape, st) = coalesce(shape, &strides);
        check_rank(&shape, "fused")?;
        let n = numel(&shape);
        // one binding per distinct buffer
        let mut buffers: Vec<&GpuBuffer> = Vec::new();
        let mut program_inputs = Vec::with_capacity(inputs.len());
        for (v, s) in inputs.iter().zip(&st) {
            let b = match buffers.iter().position(|b| std::ptr::eq(*b, v.buffer)) {
                Some(b) => b,
                None => {
                    buffers.push(v.buffer);
                    buffers.len() - 1
                }
            };
            let mode = if s.iter().all(|&x| x == 0) {
                Mode::Splat
            } else if is_contiguous(&shape, s) {
                Mode::Contiguous
            } else {
                Mode::Strided
            };
            program_inputs.push((b as u32, mode));
        }
        let limit = FUSED_MAX_BUFFERS.min(self.limits().max_storage_buffers_per_shader_stage);
        if (buffers.len() + outputs.len()) as u32 > limit {
            return Err(KernelError::Unsupported(format!(
                "fused kernel of {} buffers and {} outputs (at most {limit} storage buffers)",
                buffers.len(),
                outputs.len()
            )));
        }
        // whole quads when every input is a splat or quad-aligned and contiguous
        let vec4 = n.is_multiple_of(4)
            && inputs.iter().zip(&program_inputs).all(|(v, &(_, m))| {
                v.buffer.capacity() >= 16
                    && match m {
                        Mode::Splat => true,
                        Mode::Contiguous => v.offset.is_multiple_of(4),
                        Mode::Strided => false,
                    }
            });
        let program = Program {
            steps: steps.to_vec(),
            inputs: program_inputs.clone(),
            buffers: buffers.len() as u32,
            outputs: outputs.to_vec(),
            scalars: scalars.len() as u32,
            vec4,
        };
        let key = KernelKey::new(Kernel::Fused(register(program)?), KDType::F32);
        let items = if vec4 { n / 4 } else { n };
        let mut p = vec![u32_of(items, "element count")?, shape.len() as u32, 0, 0];
        p.extend(scalars.iter().map(|s| s.to_bits()));
        for &d in &shape {
            p.push(u32_of(d, "dim")?);
        }
        for ((v, s), &(_, mode)) in inputs.iter().zip(&st).zip(&program_inputs) {
            let offset = if vec4 && mode == Mode::Contiguous { v.offset / 4 } else { v.offset };
            p.push(u32_of(offset, "offset")?);
            if mode == Mode::Strided {
                for &x in s {
                    p.push(u32_of(x, "stride")?);
                }
            }
        }
        let outs = (0..outputs.len()).map(|_| self.out_f32(n)).collect::<KResult<Vec<_>>>()?;
        let grid = self.grid_stride(key, n as u64)?;
        let out_refs: Vec<&GpuBuffer> = outs.iter().collect();
        self.dispatch(key, &buffers, &out_refs, &p, grid)?;
        Ok(outs)
    }
}
