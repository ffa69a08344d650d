//! Generated elementwise kernels: one WGSL module per expression DAG (a list of steps over
//! N strided inputs, M outputs). The structure (steps, input modes, which inputs share a
//! buffer, outputs, vec4 or scalar) is the cache key; scalars and shapes are launch params,
//! so the same structure at other sizes or constants compiles once. Each new structure is
//! validated with naga when it is registered.

mod wgsl;

use crate::buffer::GpuBuffer;
use crate::context::Context;
use crate::error::{KResult, KernelError};
use crate::launch::{check_rank, coalesce, is_contiguous, numel, u32_of, View};
use crate::source::{BinaryOp, KDType, Kernel, KernelKey, UnaryOp, PARAMS_QUADS};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use wgsl::{generate, generate_epilogue, generate_prologue};

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
    /// The matmul's result at this element (epilogue programs only).
    Acc,
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
    /// A user elementwise kernel (`crate::register_user_unary`): `user_id(x, scalars[scalar])`.
    User {
        id: u32,
        x: u32,
        scalar: u32,
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
            FusedStep::Load(_) | FusedStep::Acc => None,
            FusedStep::Unary { op, .. } => Some(format!("{op:?}").to_lowercase()),
            FusedStep::Binary { op, .. } => Some(format!("{op:?}").to_lowercase()),
            FusedStep::User { id, .. } => Some(crate::source::user_kernel(*id).0),
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
    /// A contiguous block repeated along the leading dims (a bias row): element
    /// `offset + i % period`.
    Repeat,
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
    /// The kernel this program runs inside: a matmul whose stores run it as an epilogue
    /// (`Acc` is the product), a reduction whose loads run it as a prologue (output 0 is
    /// the value reduced, the others are written where it is loaded), or None for a plain
    /// elementwise kernel.
    host: Option<Kernel>,
}

/// Where an epilogue's params start (the matmul's own take the words before).
const EPILOGUE_PARAMS: usize = 32;

struct Entry {
    name: String,
    source: String,
    /// Storage buffers read (the matmul's two operands included).
    inputs: u32,
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
    let (name, source);
    match p.host {
        Some(k @ (Kernel::Matmul | Kernel::MatmulReg | Kernel::MatmulVec4(_))) => {
            name = format!("matmul+fused[{}]", ops.join(","));
            source = generate_epilogue(&p, k, &name);
        }
        Some(k) => {
            name = format!("fused[{}]+{}", ops.join(","), KernelKey::new(k, KDType::F32).name());
            source = generate_prologue(&p, k, &name);
        }
        None => {
            name = format!("fused[{}]", ops.join(","));
            source = generate(&p, &name);
        }
    }
    crate::source::validate_wgsl(&source).map_err(|msg| KernelError::Compile { kernel: name.clone(), msg })?;
    let id = crate::launch::small_u32(reg.entries.len());
    let inputs = p.buffers
        + if matches!(p.host, Some(Kernel::Matmul | Kernel::MatmulReg | Kernel::MatmulVec4(_))) { 2 } else { 0 };
    reg.entries.push(Entry { name, source, inputs, outputs: crate::launch::small_u32(p.outputs.len()) });
    reg.ids.get_or_insert_with(HashMap::new).insert(p, id);
    Ok(id)
}

/// (name, WGSL source, input buffers, outputs) of a registered fused kernel.
pub(crate) fn entry(id: u32) -> (String, String, u32, u32) {
    let reg = crate::lock(&REGISTRY);
    let e = &reg.entries[id as usize];
    (e.name.clone(), e.source.clone(), e.inputs, e.outputs)
}

/// How many fused kernel structures this process has generated (each validated by naga).
pub fn fused_kernels_generated() -> usize {
    crate::lock(&REGISTRY).entries.len()
}

/// The WGSL sources of every fused kernel generated so far (for validation tests).
pub fn fused_sources() -> Vec<String> {
    crate::lock(&REGISTRY).entries.iter().map(|e| e.source.clone()).collect()
}

/// Launch-param words a fused kernel over `rank` dims with `inputs` inputs (each counted
/// as strided, the worst case) and `scalars` scalars needs at most.
pub fn fused_param_words(rank: usize, inputs: usize, scalars: usize) -> usize {
    4 + scalars + rank + inputs * (1 + rank)
}

/// The inputs of a fused program over `shape`: one binding per distinct buffer, each
/// input's mode, and the params that place them (after `words` of earlier params).
struct Inputs<'a> {
    shape: Vec<usize>,
    buffers: Vec<&'a GpuBuffer>,
    modes: Vec<(u32, Mode)>,
    strides: Vec<Vec<usize>>,
}

impl<'a> Inputs<'a> {
    fn new(inputs: &[View<'a>], shape: &[usize]) -> KResult<Inputs<'a>> {
        let strides: Vec<&[usize]> = inputs.iter().map(|v| v.strides).collect();
        let (shape, st) = coalesce(shape, &strides);
        check_rank(&shape, "fused")?;
        let mut buffers: Vec<&GpuBuffer> = Vec::new();
        let mut modes = Vec::with_capacity(inputs.len());
        for (v, s) in inputs.iter().zip(&st) {
            let b = match buffers.iter().position(|b| std::ptr::eq(*b, v.buffer)) {
                Some(b) => b,
                None => {
                    buffers.push(v.buffer);
                    buffers.len() - 1
                }
            };
            let lead = s.iter().take_while(|&&x| x == 0).count();
            let mode = if lead == s.len() {
                Mode::Splat
            } else if is_contiguous(&shape, s) {
                Mode::Contiguous
            } else if is_contiguous(&shape[lead..], &s[lead..]) {
                Mode::Repeat
            } else {
                Mode::Strided
            };
            modes.push((crate::launch::small_u32(b), mode));
        }
        Ok(Inputs { shape, buffers, modes, strides: st })
    }

    /// The repeated block's length of an input in `Mode::Repeat`.
    fn period(&self, strides: &[usize]) -> usize {
        let lead = strides.iter().take_while(|&&x| x == 0).count();
        numel(&self.shape[lead..])
    }

    fn check_bindings(&self, ctx: &Context, extra: usize, outputs: usize) -> KResult<()> {
        let limit = FUSED_MAX_BUFFERS.min(ctx.limits().max_storage_buffers_per_shader_stage);
        if crate::launch::small_u32(extra + self.buffers.len() + outputs) > limit {
            return Err(KernelError::Unsupported(format!(
                "fused kernel of {} buffers and {outputs} outputs (at most {limit} storage buffers)",
                extra + self.buffers.len(),
            )));
        }
        Ok(())
    }

    /// [rank, 0, 0, 0 | n, rank, 0, 0], scalars, shape, then each input's offset (in
    /// quads for vec4 contiguous reads) and strides where strided.
    fn params(&self, p: &mut Vec<u32>, inputs: &[View], scalars: &[f32], vec4: bool) -> KResult<()> {
        p.extend(scalars.iter().map(|s| s.to_bits()));
        for &d in &self.shape {
            p.push(u32_of(d, "dim")?);
        }
        for ((v, s), &(_, mode)) in inputs.iter().zip(&self.strides).zip(&self.modes) {
            let quads = vec4 && matches!(mode, Mode::Contiguous | Mode::Repeat);
            p.push(u32_of(if quads { v.offset / 4 } else { v.offset }, "offset")?);
            match mode {
                Mode::Strided => {
                    for &x in s {
                        p.push(u32_of(x, "stride")?);
                    }
                }
                Mode::Repeat => {
                    let period = self.period(s);
                    p.push(u32_of(if quads { period / 4 } else { period }, "period")?);
                }
                _ => {}
            }
        }
        Ok(())
    }
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
        let ins = Inputs::new(inputs, shape)?;
        ins.check_bindings(self, 0, outputs.len())?;
        let n = numel(&ins.shape);
        // whole quads when every input is a splat or quad-aligned and contiguous
        let vec4 = n.is_multiple_of(4)
            && inputs.iter().zip(&ins.modes).zip(&ins.strides).all(|((v, &(_, m)), s)| {
                v.buffer.capacity() >= 16
                    && match m {
                        Mode::Splat => true,
                        Mode::Contiguous => v.offset.is_multiple_of(4),
                        Mode::Repeat => v.offset.is_multiple_of(4) && ins.period(s).is_multiple_of(4),
                        Mode::Strided => false,
                    }
            });
        let program = Program {
            steps: steps.to_vec(),
            inputs: ins.modes.clone(),
            buffers: crate::launch::small_u32(ins.buffers.len()),
            outputs: outputs.to_vec(),
            scalars: crate::launch::small_u32(scalars.len()),
            vec4,
            host: None,
        };
        let key = KernelKey::new(Kernel::Fused(register(program)?), KDType::F32);
        let items = if vec4 { n / 4 } else { n };
        let mut p = vec![u32_of(items, "element count")?, crate::launch::small_u32(ins.shape.len()), 0, 0];
        ins.params(&mut p, inputs, scalars, vec4)?;
        let outs = (0..outputs.len()).map(|_| self.out_f32(n)).collect::<KResult<Vec<_>>>()?;
        let grid = self.grid_stride(key, n as u64)?;
        let out_refs: Vec<&GpuBuffer> = outs.iter().collect();
        self.dispatch(key, &ins.buffers, &out_refs, &p, grid)?;
        Ok(outs)
    }

    /// The matmul `kernel` with `params` and its two operands, storing through a fused
    /// epilogue: `steps` (with `Acc` for the product) over the output's `shape`, reading
    /// `inputs` (views broadcast to it), writing a buffer per step in `outputs`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn matmul_epilogue(
        self: &Arc<Self>,
        kernel: Kernel,
        operands: [&GpuBuffer; 2],
        mut params: Vec<u32>,
        grid: (u32, u32, u32),
        epi: &Epilogue,
    ) -> KResult<Option<Vec<GpuBuffer>>> {
        let ins = Inputs::new(&epi.inputs, &epi.shape)?;
        ins.check_bindings(self, 2, epi.outputs.len())?;
        if ins.modes.iter().any(|&(_, m)| m == Mode::Strided) {
            // each store would decompose an index: compile times explode on CPU adapters
            return Ok(None);
        }
        let key = hosted(kernel, epi, &ins, &mut params)?;
        let n = numel(&epi.shape);
        let outs = (0..epi.outputs.len()).map(|_| self.out_f32(n)).collect::<KResult<Vec<_>>>()?;
        let mut bufs = vec![operands[0], operands[1]];
        bufs.extend(ins.buffers.iter().copied());
        let out_refs: Vec<&GpuBuffer> = outs.iter().collect();
        self.dispatch(key, &bufs, &out_refs, &params, grid)?;
        Ok(Some(outs))
    }
}

impl Context {
    /// Dispatch the host `kernel` (a reduction or the row softmax; its params `p`, its
    /// `grid`, writing `out`) with `pro` computing its loads of x. Returns a buffer for
    /// each of the prologue's outputs after the first (values written where loaded).
    pub(crate) fn dispatch_prologue(
        self: &Arc<Self>,
        kernel: Kernel,
        pro: &Epilogue,
        mut p: Vec<u32>,
        out: &GpuBuffer,
        grid: (u32, u32, u32),
    ) -> KResult<Vec<GpuBuffer>> {
        let ins = Inputs::new(&pro.inputs, &pro.shape)?;
        ins.check_bindings(self, 0, pro.outputs.len())?;
        let key = hosted(kernel, pro, &ins, &mut p)?;
        let n = numel(&pro.shape);
        let extras = (1..pro.outputs.len()).map(|_| self.out_f32(n)).collect::<KResult<Vec<_>>>()?;
        let mut outs: Vec<&GpuBuffer> = vec![out];
        outs.extend(extras.iter());
        self.dispatch(key, &ins.buffers, &outs, &p, grid)?;
        Ok(extras)
    }
}

/// The key of `kernel` running `prog` in its stores or loads, with the program's params
/// appended to the host kernel's `p` (from EPILOGUE_PARAMS).
fn hosted(kernel: Kernel, prog: &Epilogue, ins: &Inputs, p: &mut Vec<u32>) -> KResult<KernelKey> {
    if p.len() > EPILOGUE_PARAMS {
        return Err(KernelError::Unsupported(format!("{kernel:?} with {} params takes no fused program", p.len())));
    }
    let program = Program {
        steps: prog.steps.to_vec(),
        inputs: ins.modes.clone(),
        buffers: crate::launch::small_u32(ins.buffers.len()),
        outputs: prog.outputs.to_vec(),
        scalars: crate::launch::small_u32(prog.scalars.len()),
        vec4: false,
        host: Some(kernel),
    };
    let key = KernelKey::new(Kernel::Fused(register(program)?), KDType::F32);
    p.resize(EPILOGUE_PARAMS, 0);
    p.extend_from_slice(&[crate::launch::small_u32(ins.shape.len()), 0, 0, 0]);
    ins.params(p, &prog.inputs, &prog.scalars, false)?;
    Ok(key)
}

/// An elementwise program a matmul applies to its results as it stores them.
pub struct Epilogue<'a> {
    pub steps: Vec<FusedStep>,
    /// Views over `shape` (broadcast), read by `Load(i)`.
    pub inputs: Vec<View<'a>>,
    pub scalars: Vec<f32>,
    /// Steps whose values are written, one buffer each.
    pub outputs: Vec<u32>,
    /// The matmul's output shape, row-major.
    pub shape: Vec<usize>,
}

/// Param words an epilogue over `rank` dims with `inputs` inputs and `scalars` scalars
/// needs at most (after the matmul's own).
pub fn epilogue_param_words(rank: usize, inputs: usize, scalars: usize) -> usize {
    EPILOGUE_PARAMS + fused_param_words(rank, inputs, scalars)
}
