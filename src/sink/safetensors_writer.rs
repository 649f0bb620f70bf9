//! One safetensors file, written as a stream.
//!
//! The header is written by hand rather than with `safetensors::serialize_to_file`: that function
//! needs every tensor's data available at once (it walks views it is given) and orders the data by
//! dtype alignment and name, while we receive tensors one at a time in state-dict order and must
//! not hold the model in memory. The header only needs names, dtypes and shapes, so it is computed
//! up front and the data appended as it arrives. The finished file is then checked with the
//! `safetensors` crate's own reader (header and offsets only; the data is mapped, not read).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::{ShardFile, TensorSpec};
use crate::error::{Error, Result};

/// safetensors' reader refuses headers larger than this (`MAX_HEADER_SIZE`).
const MAX_HEADER_SIZE: usize = 100_000_000;

pub(super) fn check_spec(spec: &TensorSpec) -> Result<()> {
    if spec.dtype.safetensors_name().is_none() {
        return Err(Error::Output(format!(
            "tensor '{}': {} cannot be stored in safetensors",
            spec.name,
            spec.dtype.name()
        )));
    }
    if spec.name == "__metadata__" {
        return Err(Error::Output("a tensor named '__metadata__' cannot be stored in safetensors".into()));
    }
    spec.nbytes().map(|_| ())
}

/// The full header block: u64le length, then the JSON padded with spaces so that the data
/// starts at a multiple of 8. Also returns the data length.
pub(super) fn header_bytes(specs: &[&TensorSpec]) -> Result<(Vec<u8>, u64)> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0u64;
    for spec in specs {
        check_spec(spec)?;
        let end = offset + spec.nbytes()?;
        header.insert(
            spec.name.clone(),
            json!({
                "dtype": spec.dtype.safetensors_name().expect("checked"),
                "shape": spec.shape,
                "data_offsets": [offset, end],
            }),
        );
        offset = end;
    }
    let mut json = serde_json::to_vec(&Value::Object(header)).expect("JSON of strings and numbers serializes");
    let padded = json.len().next_multiple_of(8);
    json.resize(padded, b' ');
    if json.len() > MAX_HEADER_SIZE {
        return Err(Error::Output(format!(
            "safetensors header would be {} bytes, over the format's limit of {MAX_HEADER_SIZE}; use a smaller shard size",
            json.len()
        )));
    }
    let mut out = Vec::with_capacity(8 + json.len());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    Ok((out, offset))
}

pub(super) struct SafetensorsFile {
    path: PathBuf,
    out: BufWriter<File>,
    expected_len: u64,
    tensors: usize,
}

impl SafetensorsFile {
    pub(super) fn create(path: &Path, specs: &[&TensorSpec]) -> Result<Self> {
        let (header, data_len) = header_bytes(specs)?;
        // Readable too: `finish` maps the file to check it.
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header).map_err(|e| Error::io(path, e))?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            out,
            expected_len: header.len() as u64 + data_len,
            tensors: specs.len(),
        })
    }
}

impl ShardFile for SafetensorsFile {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| Error::io(&self.path, e))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let path = self.path;
        let file = self.out.into_inner().map_err(|e| Error::io(&path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len != self.expected_len {
            return Err(Error::Output(format!(
                "{}: wrote {len} bytes, expected {}",
                path.display(),
                self.expected_len
            )));
        }
        validate(&path, &file, self.tensors)
    }
}

/// Reads the file back with the `safetensors` crate: header parses, offsets cover the data.
fn validate(path: &Path, file: &File, tensors: usize) -> Result<()> {
    let bad = |msg: String| Error::Output(format!("{}: written file does not read back: {msg}", path.display()));
    // SAFETY: the file is ours, complete and no longer written to; only the header is read.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&map).map_err(|e| bad(e.to_string()))?;
    if st.len() != tensors {
        return Err(bad(format!("{} tensors instead of {tensors}", st.len())));
    }
    Ok(())
}
