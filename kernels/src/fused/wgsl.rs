//! The WGSL of fused programs: the elementwise kernel (vec4, scalar, and strided walks),
//! and the hooks a host kernel runs them in (a matmul's stores, a reduction's loads).
use super::{FusedStep, Mode, Program, EPILOGUE_PARAMS};
use crate::bindings::{params_block, storage};
use crate::source::{Kernel, PARAMS_QUADS, WG};
use std::fmt::Write;

const COMMON: &str = include_str!("../../../shaders/common.wgsl");

fn header(name: &str) -> String {
    format!(
        "// generated: {name}\nalias T = f32;\nalias ST = f32;\nconst WG: u32 = {WG}u;\n\
         const PARAMS_QUADS: u32 = {PARAMS_QUADS}u;\n{COMMON}\n"
    )
}

/// Binding declarations: inputs `in{b}` from `first`, then outputs `out{o}`, then params.
fn declarations(p: &Program, first: usize, elem: &str) -> String {
    let inputs: Vec<(String, &str)> = (0..p.buffers).map(|b| (format!("in{b}"), elem)).collect();
    let outputs: Vec<(String, &str)> = (0..p.outputs.len()).map(|o| (format!("out{o}"), elem)).collect();
    let first = crate::launch::small_u32(first);
    let at = first + crate::launch::small_u32(inputs.len() + outputs.len());
    storage(first, &inputs, &outputs) + &params_block(at)
}

/// One function per distinct op, the `Outs` struct and `fn expr(acc, l0, l1..) -> Outs`
/// (scalar k is param(scalar_at + k)).
fn expression(p: &Program, scalar_at: usize) -> String {
    let mut s = String::new();
    let mut seen = Vec::new();
    for st in &p.steps {
        let (fname, def) = match st {
            FusedStep::Unary { op, .. } => {
                (format!("u_{op:?}"), format!("fn u_{op:?}(x: T, s: T) -> T {{ {} }}", op.wgsl_body()))
            }
            FusedStep::Binary { op, .. } => {
                (format!("b_{op:?}"), format!("fn b_{op:?}(a: T, b: T) -> T {{ {} }}", op.wgsl_body()))
            }
            FusedStep::User { id, .. } => {
                let body = crate::source::user_kernel(*id).1;
                (format!("user_{id}"), format!("fn user_{id}(x: T, s: T) -> T {{ {body} }}"))
            }
            _ => continue,
        };
        if !seen.contains(&fname) {
            s += &def;
            s += "\n";
            seen.push(fname);
        }
    }
    s += "struct Outs {\n";
    for o in 0..p.outputs.len() {
        let _ = writeln!(s, "    o{o}: T,");
    }
    s += "}\n";
    let mut args = vec!["acc: T".to_string()];
    args.extend((0..p.inputs.len()).map(|i| format!("l{i}: T")));
    let _ = writeln!(s, "fn expr({}) -> Outs {{", args.join(", "));
    for (k, st) in p.steps.iter().enumerate() {
        let e = match *st {
            FusedStep::Load(i) => format!("l{i}"),
            FusedStep::Acc => "acc".to_string(),
            FusedStep::Unary { op, x, scalar } => {
                format!("u_{op:?}(v{x}, bitcast<f32>(param({}u)))", scalar_at + scalar as usize)
            }
            FusedStep::Binary { op, a, b } => format!("b_{op:?}(v{a}, v{b})"),
            FusedStep::User { id, x, scalar } => {
                format!("user_{id}(v{x}, bitcast<f32>(param({}u)))", scalar_at + scalar as usize)
            }
            FusedStep::Where { c, a, b } => format!("select(v{b}, v{a}, v{c} != T(0))"),
        };
        let _ = writeln!(s, "    let v{k} = {e};");
    }
    let outs: Vec<String> = p.outputs.iter().map(|o| format!("v{o}")).collect();
    let _ = writeln!(s, "    return Outs({});\n}}", outs.join(", "));
    s
}

/// Statements computing `p{i}`, where input i's params start, from `at` (a var).
fn input_params(p: &Program) -> String {
    let mut s = String::new();
    for (i, &(_, mode)) in p.inputs.iter().enumerate() {
        let step = match mode {
            Mode::Strided => "1u + rank",
            Mode::Repeat => "2u",
            _ => "1u",
        };
        let _ = writeln!(s, "    let p{i} = at;\n    at = at + {step};");
    }
    s
}

/// How strided inputs are addressed by [`loads`]: their offsets decomposed from the index
/// at each load, or walked (`o{i}`, kept by [`strided_main`]).
#[derive(Clone, Copy, PartialEq)]
enum Strided {
    Decomposed,
    Walked,
}

/// `let l{i} = ...;` loads of every input at linear index `idx`.
fn loads(p: &Program, idx: &str, indent: &str, strided: Strided) -> String {
    let mut s = String::new();
    for (i, &(b, mode)) in p.inputs.iter().enumerate() {
        let load = match (mode, p.vec4) {
            (Mode::Contiguous, _) => format!("in{b}[param(p{i}) + {idx}]"),
            (Mode::Splat, false) => format!("in{b}[param(p{i})]"),
            (Mode::Splat, true) => format!("vec4<f32>(in{b}[param(p{i}) / 4u][param(p{i}) % 4u])"),
            (Mode::Repeat, _) => format!("in{b}[param(p{i}) + {idx} % param(p{i} + 1u)]"),
            (Mode::Strided, _) if strided == Strided::Walked => format!("in{b}[o{i}]"),
            (Mode::Strided, _) => format!("in{b}[strided_offset({idx}, rank, shape_at, p{i} + 1u, param(p{i}))]"),
        };
        let _ = writeln!(s, "{indent}let l{i} = {load};");
    }
    s
}

/// `expr(acc, l0{lane}, l1{lane}, ..)`: the program on the loaded inputs (`lane` picks a
/// vec4 component, or is empty).
fn call_expr(p: &Program, acc: &str, lane: &str) -> String {
    let mut a = vec![acc.to_string()];
    a.extend((0..p.inputs.len()).map(|i| format!("l{i}{lane}")));
    format!("expr({})", a.join(", "))
}

/// `out{o}[i] = r.o{o};` for every output.
fn stores(p: &Program, indent: &str) -> String {
    (0..p.outputs.len()).map(|o| format!("{indent}out{o}[i] = r.o{o};\n")).collect()
}

/// params: [n, rank, 0, 0, scalars.., shape[rank], per input: offset (+ strides if strided)]
pub(super) fn generate(p: &Program, name: &str) -> String {
    let elem = if p.vec4 { "vec4<f32>" } else { "f32" };
    let mut s = header(name);
    s += &declarations(p, 0, elem);
    s += &expression(p, 4);
    s += "@compute @workgroup_size(WG)\n\
          fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,\n\
                  @builtin(local_invocation_index) lid: u32) {\n\
              let n = param(0);\n\
              let rank = param(1);\n";
    let _ = writeln!(s, "    let shape_at = {}u;", 4 + p.scalars);
    s += "    var at = shape_at + rank;\n";
    s += &input_params(p);
    if p.inputs.iter().any(|&(_, m)| m == Mode::Strided) {
        s += &strided_main(p);
        return s;
    }
    s += "    let span = stride_range(wid, nwg, lid, n);\n    for (var i = span.x; i < span.y; i = i + span.z) {\n";
    s += &loads(p, "i", "        ", Strided::Decomposed);
    if p.vec4 {
        for lane in ["x", "y", "z", "w"] {
            let _ = writeln!(s, "        let r{lane} = {};", call_expr(p, "0.0", &format!(".{lane}")));
        }
        for o in 0..p.outputs.len() {
            let _ = writeln!(s, "        out{o}[i] = vec4<f32>(rx.o{o}, ry.o{o}, rz.o{o}, rw.o{o});");
        }
    } else {
        let _ = writeln!(s, "        let r = {};", call_expr(p, "0.0", ""));
        s += &stores(p, "        ");
    }
    s += "    }\n}\n";
    s
}

/// The loop of a scalar kernel with strided inputs, as the unfused binary kernel walks:
/// runs of RUN elements, each strided input's offset decomposed once per block of the last
/// two dims and then only stepped (integer divisions per element are slow on CPU adapters).
fn strided_main(p: &Program) -> String {
    let strided: Vec<usize> = (0..p.inputs.len()).filter(|&i| p.inputs[i].1 == Mode::Strided).collect();
    let mut s = String::new();
    for &k in &strided {
        let _ = writeln!(
            s,
            "    let s{k} = stride_back(p{k} + 1u, rank, 1u);\n    let t{k} = stride_back(p{k} + 1u, rank, 2u);"
        );
    }
    s += "    let runs = (n + RUN - 1u) / RUN;\n\
          \x20   let span = stride_range(wid, nwg, lid, runs);\n\
          \x20   for (var q = span.x; q < span.y; q = q + span.z) {\n\
          \x20       let end = min(q * RUN + RUN, n);\n\
          \x20       var i = q * RUN;\n\
          \x20       loop {\n\
          \x20           if (i >= end) { break; }\n";
    for &k in &strided {
        let _ = writeln!(s, "            var o{k} = strided_offset(i, rank, shape_at, p{k} + 1u, param(p{k}));");
    }
    s += "            var w = walk_start(i, rank, shape_at);\n\
          \x20           let stop = min(end, i + walk_left(w));\n\
          \x20           for (; i < stop; i = i + 1u) {\n";
    s += &loads(p, "i", "                ", Strided::Walked);
    let _ = writeln!(s, "                let r = {};", call_expr(p, "0.0", ""));
    s += &stores(p, "                ");
    s += "                let moved = walk_next(&w);\n";
    for &k in &strided {
        let _ = writeln!(s, "                o{k} = walk_offset(o{k}, moved, w, s{k}, t{k});");
    }
    s += "            }\n        }\n    }\n}\n";
    s
}

/// Statements of a host kernel's hook (epilogue store or prologue load) that evaluate the
/// program at linear index `idx` into `r` (params from EPILOGUE_PARAMS; `acc` is the
/// value `Acc` reads).
fn evaluate_at(p: &Program, idx: &str, acc: &str) -> String {
    let e = EPILOGUE_PARAMS;
    let mut s = format!("    let rank = param({e}u);\n    let shape_at = {}u;\n", e + 4 + p.scalars as usize);
    s += "    var at = shape_at + rank;\n";
    s += &input_params(p);
    s += &loads(p, idx, "    ", Strided::Decomposed);
    let _ = writeln!(s, "    let r = {};", call_expr(p, acc, ""));
    s
}

/// A matmul kernel whose `store_row` runs the program on each result before it is
/// written. params: the matmul's, then from EPILOGUE_PARAMS [rank, 0, 0, 0, scalars..,
/// shape[rank], per input: offset (+ strides)], over the output's row-major index.
pub(super) fn generate_epilogue(p: &Program, matmul: Kernel, name: &str) -> String {
    let e = EPILOGUE_PARAMS;
    let mut s = header(name);
    // the operands (bindings 0 and 1): a standalone family's, or the vec4 skeleton's own
    if let Some((operands, _)) = crate::bindings::family(matmul) {
        s += &storage(0, &operands, &[]);
    }
    s += &declarations(p, 2, "f32");
    s += &crate::params::matmul_accessors();
    s += crate::source::MATMUL_HELPERS;
    s += "\n";
    s += &expression(p, e + 4);
    s += "fn store_one(o: u32, acc: T) {\n";
    s += &evaluate_at(p, "o", "acc");
    for o in 0..p.outputs.len() {
        let _ = writeln!(s, "    out{o}[o] = r.o{o};");
    }
    s += "}\n";
    s += "fn store_row(c_base: u32, r: u32, col: u32, M: u32, N: u32, v: vec4<T>) {\n\
              if (r >= M) { return; }\n\
              let o = c_base + r * N + col;\n\
              if (col < N) { store_one(o, v.x); }\n\
              if (col + 1u < N) { store_one(o + 1u, v.y); }\n\
              if (col + 2u < N) { store_one(o + 2u, v.z); }\n\
              if (col + 3u < N) { store_one(o + 3u, v.w); }\n\
          }\n";
    s += &crate::source::matmul_skeleton(matmul);
    s
}

/// A reduction kernel whose loads of x compute the program (see [`Program::host`]):
/// bindings [inputs.., out (the reduction's), extra outputs..], params the reduction's,
/// then from EPILOGUE_PARAMS the program's as in an epilogue.
pub(super) fn generate_prologue(p: &Program, reduce: Kernel, name: &str) -> String {
    let e = EPILOGUE_PARAMS;
    let (body, helpers) = crate::source::prologue_skeleton(reduce);
    let mut s = header(name);
    // the host's output `out`, then the program's other outputs `xo{o}`
    let inputs: Vec<(String, &str)> = (0..p.buffers).map(|b| (format!("in{b}"), "f32")).collect();
    let mut outputs: Vec<(String, &str)> = vec![("out".into(), "T")];
    outputs.extend((1..p.outputs.len()).map(|o| (format!("xo{o}"), "f32")));
    s += &storage(0, &inputs, &outputs);
    s += &params_block(crate::launch::small_u32(inputs.len() + outputs.len()));
    s += &expression(p, e + 4);
    s += "fn load_x(i: u32) -> T {\n";
    s += &evaluate_at(p, "i", "0.0");
    for o in 1..p.outputs.len() {
        let _ = writeln!(s, "    xo{o}[i] = r.o{o};");
    }
    s += "    return r.o0;\n}\n";
    s += "fn load_z(i: u32) -> T { return load_x(i); }\n";
    s += "fn load_x4(q: u32) -> vec4<f32> {\n\
          \x20   return vec4<f32>(load_x(4u * q), load_x(4u * q + 1u), load_x(4u * q + 2u), load_x(4u * q + 3u));\n}\n";
    s += &helpers;
    s += "\n";
    s += &body;
    s += "\n";
    s
}
