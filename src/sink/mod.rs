//! Output writers: safetensors (optionally sharded, with the HF index), `pytorch_model.bin` in
//! `torch.save`'s zip format, an atomic output folder, and float casting for the output dtype.
//!
//! Writing is streaming: the caller declares every output tensor (name, dtype, shape) up front,
//! in state-dict order, then hands over each tensor's little-endian bytes in that order with
//! [`TensorSink::write_tensor`]. Headers are computed from the declarations and written first;
//! each tensor's data goes straight to its place in the file as it arrives and is never held
//! beyond the call, so memory use is bounded by the largest tensor, not by the model.
//!
//! ```no_run
//! # use tfconv::sink::*; use tfconv::source::DType;
//! # fn main() -> tfconv::Result<()> {
//! let out = OutputDir::create("out/bert".as_ref(), false)?;
//! let specs = vec![TensorSpec::new("w", DType::F32, vec![2, 2])];
//! let mut sink = create_sink(out.path(), Format::Safetensors, specs, Some(parse_size("5GB")?))?;
//! sink.write_tensor("w", &[0u8; 16])?;
//! let files = sink.finish()?; // [out/.bert.tmp-<pid>/model.safetensors]
//! out.write_file("config.json", b"{}")?;
//! out.commit()?;
//! # Ok(()) }
//! ```

mod cast;
mod output_dir;
mod pickle;
mod safetensors_writer;
mod shard;
mod torch_bin;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

pub use cast::cast;
pub use output_dir::{free_space, FilesInto, OutputDir, PendingFile};
pub use shard::{parse_size, plan_shards, ShardPlan};

use crate::error::{Error, Result};
use crate::source::{DType, TensorInfo};

/// One output tensor as declared before writing: name, dtype, row-major shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<usize>) -> Self {
        TensorSpec { name: name.into(), dtype, shape }
    }

    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> Result<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .ok_or_else(|| Error::Output(format!("tensor '{}': shape {:?} is too large", self.name, self.shape)))
    }

    /// Bytes of the tensor's data. Errors for strings, which neither output format can hold.
    pub fn nbytes(&self) -> Result<u64> {
        let size = self.dtype.size().ok_or_else(|| {
            Error::Output(format!("tensor '{}': {} tensors cannot be written as weights", self.name, self.dtype.name()))
        })?;
        self.numel()?
            .checked_mul(size as u64)
            .ok_or_else(|| Error::Output(format!("tensor '{}': shape {:?} is too large", self.name, self.shape)))
    }
}

impl From<&TensorInfo> for TensorSpec {
    fn from(t: &TensorInfo) -> Self {
        TensorSpec { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() }
    }
}

/// The weight file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `model.safetensors`, or `model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`.
    Safetensors,
    /// `pytorch_model.bin` (torch.save zip), or `pytorch_model-0000i-of-0000n.bin` +
    /// `pytorch_model.bin.index.json`.
    PytorchBin,
}

impl Format {
    fn stem(self) -> &'static str {
        match self {
            Format::Safetensors => "model",
            Format::PytorchBin => "pytorch_model",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::PytorchBin => "bin",
        }
    }

    /// `model.safetensors` / `pytorch_model.bin`.
    pub fn single_file_name(self) -> String {
        format!("{}.{}", self.stem(), self.extension())
    }

    /// `model-00002-of-00005.safetensors` for `i = 2, n = 5` (1-based, HF's suffix pattern).
    pub fn shard_file_name(self, i: usize, n: usize) -> String {
        format!("{}-{i:05}-of-{n:05}.{}", self.stem(), self.extension())
    }

    /// `model.safetensors.index.json` / `pytorch_model.bin.index.json`.
    pub fn index_file_name(self) -> String {
        format!("{}.index.json", self.single_file_name())
    }
}

/// Receives tensor data one tensor at a time, in the declared order, and writes the weight files.
pub trait TensorSink {
    /// Writes the next tensor. `name` must be the next declared name and `bytes` its exact size
    /// in the declared dtype, little-endian, row-major.
    fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_tensor_with(name, &mut |w| w.write_all(bytes))
    }

    /// Writes the next tensor by letting `fill` write its bytes (in pieces, e.g. cast chunk by
    /// chunk, so the whole converted tensor never has to be in memory); they must add up to the
    /// declared size.
    fn write_tensor_with(&mut self, name: &str, fill: &mut Fill) -> Result<()>;

    /// Completes all files after every declared tensor has been written, syncs them to disk and
    /// returns the paths written: weight files in file-number order, then the index JSON if the
    /// model was sharded.
    fn finish(self: Box<Self>) -> Result<Vec<PathBuf>>;
}

/// Creates a sink writing `format` files into the existing folder `dir`.
///
/// `specs` lists every tensor to be written, in state-dict order (names unique; no string
/// tensors). `max_shard_size` (bytes of tensor data per file, see [`parse_size`]) splits the
/// weights like Hugging Face's `save_pretrained`; `None` always writes a single file. Nothing is
/// created until the first tensor arrives (or `finish` for an empty state dict).
pub fn create_sink(
    dir: &Path,
    format: Format,
    specs: Vec<TensorSpec>,
    max_shard_size: Option<u64>,
) -> Result<Box<dyn TensorSink>> {
    if max_shard_size == Some(0) {
        return Err(Error::Output("the maximum shard size must be at least one byte".into()));
    }
    let mut seen = HashSet::new();
    for s in &specs {
        if !seen.insert(s.name.as_str()) {
            return Err(Error::Output(format!("tensor '{}' is declared twice", s.name)));
        }
        if s.name.is_empty() {
            return Err(Error::Output("a tensor has an empty name".into()));
        }
        match format {
            Format::Safetensors => safetensors_writer::check_spec(s)?,
            Format::PytorchBin => torch_bin::check_spec(s)?,
        }
    }
    let plan = plan_shards(&specs, max_shard_size)?;
    let paths = plan.file_names(format).into_iter().map(|f| dir.join(f)).collect();
    let n = plan.shards.len();
    Ok(Box::new(ShardedSink {
        dir: dir.to_path_buf(),
        format,
        remaining: plan.shards.iter().map(Vec::len).collect(),
        specs,
        plan,
        paths,
        open: (0..n).map(|_| None).collect(),
        done: vec![false; n],
        next: 0,
        failed: false,
    }))
}

/// Writes a tensor's bytes into the writer it is given.
pub type Fill<'a> = dyn FnMut(&mut dyn std::io::Write) -> std::io::Result<()> + 'a;

/// Counts what passes through, so a tensor written in pieces is checked against its size.
struct Counted<'a> {
    inner: &'a mut dyn std::io::Write,
    written: u64,
}

impl std::io::Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Runs `fill` into `out` and checks it wrote exactly `len` bytes.
fn fill_exactly(out: &mut dyn std::io::Write, len: u64, fill: &mut Fill, path: &Path) -> Result<()> {
    let mut counted = Counted { inner: out, written: 0 };
    fill(&mut counted).map_err(|e| Error::write(path, e))?;
    match counted.written == len {
        true => Ok(()),
        false => Err(Error::Output(format!("{}: a tensor wrote {} bytes, expected {len}", path.display(), counted.written))),
    }
}

/// One weight file being written: receives its own tensors in order.
trait ShardFile {
    /// Writes the next tensor, `len` bytes produced by `fill`.
    fn write(&mut self, len: u64, fill: &mut Fill) -> Result<()>;
    /// Completes and syncs the file; `Ok` only if it is fully written and valid.
    fn finish(self: Box<Self>) -> Result<()>;
}

fn open_shard(format: Format, path: &Path, specs: &[&TensorSpec]) -> Result<Box<dyn ShardFile>> {
    Ok(match format {
        Format::Safetensors => Box::new(safetensors_writer::SafetensorsFile::create(path, specs)?),
        Format::PytorchBin => Box::new(torch_bin::TorchBinFile::create(path, specs)?),
    })
}

/// Routes tensors to their files per the [`ShardPlan`]; a file is opened at its first tensor and
/// completed at its last, so at most two are open at once (one being filled, one oversized).
struct ShardedSink {
    dir: PathBuf,
    format: Format,
    specs: Vec<TensorSpec>,
    plan: ShardPlan,
    paths: Vec<PathBuf>,
    open: Vec<Option<Box<dyn ShardFile>>>,
    /// Tensors still to be written per file.
    remaining: Vec<usize>,
    done: Vec<bool>,
    next: usize,
    failed: bool,
}

impl ShardedSink {
    fn shard_specs(&self, shard: usize) -> Vec<&TensorSpec> {
        self.plan.shards[shard].iter().map(|&i| &self.specs[i]).collect()
    }

    fn write_inner(&mut self, len: u64, fill: &mut Fill) -> Result<()> {
        let shard = self.plan.shard_of[self.next];
        if self.open[shard].is_none() {
            let file = open_shard(self.format, &self.paths[shard], &self.shard_specs(shard))?;
            self.open[shard] = Some(file);
        }
        self.open[shard].as_mut().expect("opened above").write(len, fill)?;
        self.remaining[shard] -= 1;
        if self.remaining[shard] == 0 {
            self.open[shard].take().expect("open").finish()?;
            self.done[shard] = true;
        }
        Ok(())
    }
}

impl TensorSink for ShardedSink {
    fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        // A wrong size is the caller's mistake, reported before anything is written.
        if let Some(spec) = self.specs.get(self.next).filter(|s| s.name == name) {
            let expected = spec.nbytes()?;
            if bytes.len() as u64 != expected {
                return Err(Error::Output(format!(
                    "tensor '{name}': got {} bytes, but {} {:?} needs {expected}",
                    bytes.len(),
                    spec.dtype.name(),
                    spec.shape
                )));
            }
        }
        self.write_tensor_with(name, &mut |w| w.write_all(bytes))
    }

    fn write_tensor_with(&mut self, name: &str, fill: &mut Fill) -> Result<()> {
        if self.failed {
            return Err(Error::Output(format!(
                "{}: cannot write tensor '{name}': an earlier write failed",
                self.dir.display()
            )));
        }
        let Some(spec) = self.specs.get(self.next) else {
            return Err(Error::Output(format!(
                "tensor '{name}' was not declared: all {} declared tensors are already written",
                self.specs.len()
            )));
        };
        if spec.name != name {
            return Err(Error::Output(format!(
                "tensors out of order: expected '{}' (#{} of {}), got '{name}'",
                spec.name,
                self.next + 1,
                self.specs.len()
            )));
        }
        let expected = spec.nbytes()?;
        let r = self.write_inner(expected, fill);
        if r.is_err() {
            self.failed = true;
        } else {
            self.next += 1;
        }
        r
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<PathBuf>> {
        if self.failed {
            return Err(Error::Output(format!("{}: an earlier write failed", self.dir.display())));
        }
        if let Some(missing) = self.specs.get(self.next) {
            return Err(Error::Output(format!(
                "only {} of {} tensors were written; next missing: '{}'",
                self.next,
                self.specs.len(),
                missing.name
            )));
        }
        // Only an empty state dict leaves a file unopened: write it empty.
        for shard in 0..self.paths.len() {
            if !self.done[shard] {
                open_shard(self.format, &self.paths[shard], &[])?.finish()?;
                self.done[shard] = true;
            }
        }
        let mut written = self.paths.clone();
        if self.plan.is_sharded() {
            let index = self.dir.join(self.format.index_file_name());
            fs::write(&index, self.plan.index_json(&self.specs, self.format)).map_err(|e| Error::write(&index, e))?;
            written.push(index);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests;
