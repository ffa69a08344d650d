//! Data sets. The MNIST IDX loader reads the original distribution's files, gzipped or
//! plain, and checks magic numbers, dimensions and lengths.
use crate::{Device, Error, Result, Tensor};
use std::io::Read;
use std::path::{Path, PathBuf};

/// An IDX file: its dimensions and its unsigned-byte payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parse IDX bytes (unsigned-byte payload, type code 0x08) with `expect_rank` dimensions.
pub fn parse_idx(bytes: &[u8], expect_rank: usize, what: &str) -> Result<Idx> {
    let err = |msg: String| Error::Format { what: what.to_string(), msg };
    if bytes.len() < 4 {
        return Err(err(format!("{} bytes is too short for an IDX header", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(err(format!(
            "bad magic number {:02x}{:02x}{:02x}{:02x} (expected 0000 08 then the rank)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    let rank = bytes[3] as usize;
    if rank != expect_rank {
        return Err(err(format!("rank {rank}, expected {expect_rank}")));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(err(format!("truncated header: {} bytes, needs {header}", bytes.len())));
    }
    let dims: Vec<usize> =
        (0..rank).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize).collect();
    let n: usize = dims.iter().product();
    if bytes.len() - header != n {
        return Err(err(format!("dimensions {dims:?} need {n} bytes of data, found {}", bytes.len() - header)));
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

/// Read an IDX file, gunzipping when its name ends in .gz.
pub fn read_idx(path: &Path, expect_rank: usize) -> Result<Idx> {
    let io = |e: std::io::Error| Error::Io { op: "read_idx", path: path.display().to_string(), msg: e.to_string() };
    let raw = std::fs::read(path).map_err(io)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") { gunzip(&raw).map_err(io)? } else { raw };
    parse_idx(&bytes, expect_rank, &path.display().to_string())
}

fn gunzip(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw).read_to_end(&mut out)?;
    Ok(out)
}

/// Parse IDX bytes that may be gzipped (recognized by gzip's magic number 1f 8b).
pub fn parse_idx_maybe_gz(bytes: &[u8], expect_rank: usize, what: &str) -> Result<Idx> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let plain = gunzip(bytes).map_err(|e| Error::Format { what: what.to_string(), msg: format!("gunzip: {e}") })?;
        return parse_idx(&plain, expect_rank, what);
    }
    parse_idx(bytes, expect_rank, what)
}

/// One split of MNIST: images as bytes [n, rows * cols] and labels.
#[derive(Clone, Debug)]
pub struct MnistSplit {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl MnistSplit {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Images scaled to [0, 1] as f32 [n, rows * cols] and labels as u32 [n], on `dev`.
    pub fn to_tensors(&self, dev: &Device) -> Result<(Tensor, Tensor)> {
        let x: Vec<f32> = self.images.iter().map(|&b| b as f32 / 255.0).collect();
        let y: Vec<u32> = self.labels.iter().map(|&l| l as u32).collect();
        Ok((
            Tensor::from_slice(&x, &[self.len(), self.rows * self.cols], dev)?,
            Tensor::from_slice(&y, &[self.len()], dev)?,
        ))
    }
}

/// The MNIST training and test splits.
#[derive(Clone, Debug)]
pub struct Mnist {
    pub train: MnistSplit,
    pub test: MnistSplit,
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(Error::Io {
        op: "Mnist::load",
        path: dir.join(stem).display().to_string(),
        msg: "not found (looked for the file and its .gz)".into(),
    })
}

fn split(dir: &Path, prefix: &str) -> Result<MnistSplit> {
    let imgs = read_idx(&find(dir, &format!("{prefix}-images-idx3-ubyte"))?, 3)?;
    let labels = read_idx(&find(dir, &format!("{prefix}-labels-idx1-ubyte"))?, 1)?;
    split_of(imgs, labels, prefix)
}

/// A split from its parsed image and label files (checked against each other).
fn split_of(imgs: Idx, labels: Idx, prefix: &str) -> Result<MnistSplit> {
    if imgs.dims[0] != labels.dims[0] {
        return Err(Error::Format {
            what: format!("MNIST {prefix}"),
            msg: format!("{} images but {} labels", imgs.dims[0], labels.dims[0]),
        });
    }
    if let Some(&bad) = labels.data.iter().find(|&&l| l > 9) {
        return Err(Error::Format {
            what: format!("MNIST {prefix} labels"),
            msg: format!("label {bad} is not a digit"),
        });
    }
    Ok(MnistSplit { images: imgs.data, labels: labels.data, rows: imgs.dims[1], cols: imgs.dims[2] })
}

impl Mnist {
    /// Load `train-*` and `t10k-*` IDX files (plain or .gz) from `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Mnist> {
        let dir = dir.as_ref();
        Ok(Mnist { train: split(dir, "train")?, test: split(dir, "t10k")? })
    }

    /// The splits from the bytes of the four IDX files, each gzipped or plain, in the
    /// original distribution's order (train images, train labels, test images, test
    /// labels): for programs that fetch them rather than read a directory (a web page).
    pub fn from_bytes(
        train_images: &[u8],
        train_labels: &[u8],
        test_images: &[u8],
        test_labels: &[u8],
    ) -> Result<Mnist> {
        let part = |images: &[u8], labels: &[u8], prefix: &str| {
            let imgs = parse_idx_maybe_gz(images, 3, &format!("MNIST {prefix} images"))?;
            let labels = parse_idx_maybe_gz(labels, 1, &format!("MNIST {prefix} labels"))?;
            split_of(imgs, labels, prefix)
        };
        Ok(Mnist { train: part(train_images, train_labels, "train")?, test: part(test_images, test_labels, "t10k")? })
    }
}
