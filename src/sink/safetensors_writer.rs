//! One safetensors file, written as a stream.
//!
//! The header is written by hand rather than with `safetensors::serialize_to_file`: that function
//! needs every tensor's data available at once (it walks the views it is given), while we receive
//! tensors one at a time and must not hold the model in memory. The header only needs names,
//! dtypes and shapes, so it is computed up front and each tensor's data written at its offset as
//! it arrives.
//!
//! The layout is the reference writer's: data ordered by descending dtype alignment, then name,
//! so that every tensor starts at a multiple of its element size (the header is padded to 8
//! bytes); `__metadata__` first in the header, then the tensors in data order. Our files are
//! byte-identical to `safetensors::serialize` with `{"format": "pt"}`. Since tensors arrive in
//! state-dict order, writing seeks to each tensor's offset. The finished file is checked with the
//! `safetensors` crate's own reader (header and offsets only; the data is mapped, not read).

use std::cmp::Reverse;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::{ShardFile, TensorSpec};
use crate::error::{Error, Result};
use crate::source::DType;

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

/// The reference crate's dtype, whose order is by increasing alignment.
fn st_dtype(dtype: DType) -> Option<safetensors::Dtype> {
    use safetensors::Dtype as S;
    Some(match dtype {
        DType::Bool => S::BOOL,
        DType::U8 => S::U8,
        DType::I8 => S::I8,
        DType::I16 => S::I16,
        DType::U16 => S::U16,
        DType::F16 => S::F16,
        DType::BF16 => S::BF16,
        DType::I32 => S::I32,
        DType::U32 => S::U32,
        DType::F32 => S::F32,
        DType::F64 => S::F64,
        DType::I64 => S::I64,
        DType::U64 => S::U64,
        DType::String => return None,
    })
}

/// The header block and data layout of one file.
pub(super) struct Layout {
    /// u64le length, then the JSON padded with spaces so that the data starts at a multiple of 8.
    pub header: Vec<u8>,
    /// Per tensor, in the order given: offset of its data from the start of the data buffer.
    pub offsets: Vec<u64>,
    pub data_len: u64,
}

pub(super) fn layout(specs: &[&TensorSpec]) -> Result<Layout> {
    let mut order: Vec<usize> = (0..specs.len()).collect();
    for spec in specs {
        check_spec(spec)?;
    }
    order.sort_by(|&a, &b| {
        let key = |i: usize| (Reverse(st_dtype(specs[i].dtype)), specs[i].name.as_str());
        key(a).cmp(&key(b))
    });

    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offsets = vec![0u64; specs.len()];
    let mut offset = 0u64;
    for i in order {
        let spec = specs[i];
        let end = offset + spec.nbytes()?;
        header.insert(
            spec.name.clone(),
            json!({
                "dtype": spec.dtype.safetensors_name().expect("checked"),
                "shape": spec.shape,
                "data_offsets": [offset, end],
            }),
        );
        offsets[i] = offset;
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
    Ok(Layout { header: out, offsets, data_len: offset })
}

pub(super) struct SafetensorsFile {
    path: PathBuf,
    out: BufWriter<File>,
    /// Absolute file offset of each tensor's data, in arrival order.
    starts: Vec<u64>,
    next: usize,
    /// Where the next write lands without seeking.
    pos: u64,
    expected_len: u64,
    /// Bytes written since writeback was last started.
    unflushed: u64,
}

/// Written bytes after which the kernel is asked to start writing them back, so that the
/// closing fsync finds most of the file already on disk instead of flushing it all at the end.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Starts writeback of the file's dirty pages without waiting for it (Linux); durability still
/// comes from the fsync in `finish`, this only overlaps the disk's work with ours.
fn start_writeback(file: &File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor; the call only schedules I/O and reports errors by value.
        unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

impl SafetensorsFile {
    pub(super) fn create(path: &Path, specs: &[&TensorSpec]) -> Result<Self> {
        let Layout { header, offsets, data_len } = layout(specs)?;
        // Readable too: `finish` maps the file to check it.
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| Error::write(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header).map_err(|e| Error::write(path, e))?;
        let data_start = header.len() as u64;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            out,
            starts: offsets.iter().map(|o| data_start + o).collect(),
            next: 0,
            pos: data_start,
            expected_len: data_start + data_len,
            unflushed: 0,
        })
    }
}

impl ShardFile for SafetensorsFile {
    fn write(&mut self, len: u64, fill: &mut super::Fill) -> Result<()> {
        let start = self.starts[self.next];
        if self.pos != start {
            self.out.seek(SeekFrom::Start(start)).map_err(|e| Error::write(&self.path, e))?;
        }
        super::fill_exactly(&mut self.out, len, fill, &self.path)?;
        self.pos = start + len;
        self.next += 1;
        self.unflushed += len;
        if self.unflushed >= WRITEBACK_EVERY {
            start_writeback(self.out.get_ref());
            self.unflushed = 0;
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let path = self.path;
        let file = self.out.into_inner().map_err(|e| Error::write(&path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::write(&path, e))?;
        let len = file.metadata().map_err(|e| Error::write(&path, e))?.len();
        if len != self.expected_len {
            return Err(Error::Output(format!(
                "{}: wrote {len} bytes, expected {}",
                path.display(),
                self.expected_len
            )));
        }
        if self.next != self.starts.len() {
            return Err(Error::Output(format!(
                "{}: {} of {} tensors written",
                path.display(),
                self.next,
                self.starts.len()
            )));
        }
        validate(&path, &file, self.starts.len())
    }
}

/// Reads the file back with the `safetensors` crate: header parses, offsets cover the data.
fn validate(path: &Path, file: &File, tensors: usize) -> Result<()> {
    let bad = |msg: String| Error::Output(format!("{}: written file does not read back: {msg}", path.display()));
    // SAFETY: the file is ours, complete and no longer written to; only the header is read.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|e| Error::write(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&map).map_err(|e| bad(e.to_string()))?;
    if st.len() != tensors {
        return Err(bad(format!("{} tensors instead of {tensors}", st.len())));
    }
    Ok(())
}
