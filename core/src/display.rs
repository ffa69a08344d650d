//! `Display` for tensors, as PyTorch prints them: nested brackets, a common format for every
//! element (integers as `1.`, four decimals, or scientific notation when the magnitudes call
//! for it), the middle of long dims elided, then the dtype and the device.
use crate::{DType, Tensor};
use std::fmt::{self, Write};

/// Past this many elements, each dim shows its first and last `EDGE_ITEMS` only.
const SUMMARIZE_ABOVE: usize = 1000;
const EDGE_ITEMS: usize = 3;

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = match self.to_f64_vec() {
            Ok(v) => v,
            Err(e) => return write!(f, "tensor(<unreadable: {e}>, shape={:?})", self.shape()),
        };
        let style = Style::of(&values, self.dtype());
        let summarize = values.len() > SUMMARIZE_ABOVE;
        let mut body = String::new();
        let printer = Printer { values: &values, shape: self.shape(), style, summarize };
        printer.block(&mut body, 0, 0, "tensor(".len())?;
        write!(f, "tensor({body}, dtype={}, device={})", dtype_name(self.dtype()), self.device())
    }
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F64 => "f64",
        DType::F16 => "f16",
        DType::U32 => "u32",
    }
}

/// How every element of one tensor is written, and the width they are padded to.
#[derive(Clone, Copy)]
enum Format {
    /// `3` (u32)
    Integer,
    /// `3.` (floats whose finite values are all whole)
    Whole,
    /// `3.1416`
    Fixed,
    /// `3.1416e+05`
    Scientific,
}

#[derive(Clone, Copy)]
struct Style {
    format: Format,
    width: usize,
}

impl Style {
    /// PyTorch's choice: scientific when the finite magnitudes span more than 1e3 or leave
    /// [1e-4, 1e8).
    fn of(values: &[f64], dtype: DType) -> Style {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).map(f64::abs).collect();
        let format = if dtype == DType::U32 {
            Format::Integer
        } else if finite.iter().all(|v| v.fract() == 0.0) && finite.iter().all(|&v| v < 1e8) {
            Format::Whole
        } else {
            let nonzero: Vec<f64> = finite.iter().copied().filter(|&v| v != 0.0).collect();
            let max = nonzero.iter().copied().fold(0.0, f64::max);
            let min = nonzero.iter().copied().fold(f64::INFINITY, f64::min);
            if !nonzero.is_empty() && (max / min > 1e3 || max >= 1e8 || min < 1e-4) {
                Format::Scientific
            } else {
                Format::Fixed
            }
        };
        let mut style = Style { format, width: 0 };
        style.width = values.iter().map(|&v| style.text(v).len()).max().unwrap_or(0);
        style
    }

    fn text(&self, v: f64) -> String {
        if v.is_nan() {
            return "nan".into();
        }
        if v.is_infinite() {
            return if v > 0.0 { "inf".into() } else { "-inf".into() };
        }
        match self.format {
            Format::Integer => format!("{v}"),
            Format::Whole => format!("{v}."),
            Format::Fixed => format!("{v:.4}"),
            Format::Scientific => {
                let s = format!("{v:.4e}");
                // Rust writes 1.2345e5; PyTorch (and C) write 1.2345e+05
                match s.split_once('e') {
                    Some((m, e)) => {
                        let (sign, digits) = e.strip_prefix('-').map_or(("+", e), |d| ("-", d));
                        format!("{m}e{sign}{digits:0>2}")
                    }
                    None => s,
                }
            }
        }
    }
}

struct Printer<'a> {
    values: &'a [f64],
    shape: &'a [usize],
    style: Style,
    summarize: bool,
}

impl Printer<'_> {
    /// The indices of dim `d` that are shown (None marks the elided middle).
    fn shown(&self, d: usize) -> Vec<Option<usize>> {
        let n = self.shape[d];
        if self.summarize && n > 2 * EDGE_ITEMS {
            let mut v: Vec<Option<usize>> = (0..EDGE_ITEMS).map(Some).collect();
            v.push(None);
            v.extend((n - EDGE_ITEMS..n).map(Some));
            v
        } else {
            (0..n).map(Some).collect()
        }
    }

    /// Write the sub-tensor at dim `d` starting at flat element `base`; `indent` is the
    /// column its opening bracket sits at.
    fn block(&self, out: &mut String, d: usize, base: usize, indent: usize) -> fmt::Result {
        if d == self.shape.len() {
            return write!(out, "{:>w$}", self.style.text(self.values[base]), w = self.style.width);
        }
        let inner: usize = self.shape[d + 1..].iter().product();
        out.push('[');
        let last_dim = d + 1 == self.shape.len();
        // between rows: a newline per remaining dim, as PyTorch separates matrices
        let row_sep = format!(",{}{}", "\n".repeat(self.shape.len() - d - 1), " ".repeat(indent + 1));
        for (k, i) in self.shown(d).into_iter().enumerate() {
            if k > 0 {
                out.push_str(if last_dim { ", " } else { &row_sep });
            }
            match i {
                Some(i) => self.block(out, d + 1, base + i * inner, indent + 1)?,
                None => out.push_str("..."),
            }
        }
        out.push(']');
        Ok(())
    }
}
