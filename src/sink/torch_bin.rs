//! One `pytorch_model.bin` in `torch.save`'s zip format, written as a stream.
//!
//! Layout (all members STORED, each member's data starting on a 64-byte boundary, ZIP64 where
//! sizes or offsets need it), inside a folder named after the file without its extension:
//! `data.pkl`, `.format_version`, `.storage_alignment`, `byteorder`, `data/0` … `data/<n-1>`
//! (one per tensor, in order), `version`, `.data/serialization_id`. The pickle depends only on
//! names, dtypes and shapes, so it is written first and the tensor data streamed after it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::{pickle, ShardFile, TensorSpec};
use crate::error::{Error, Result};

pub(super) use pickle::check_spec;

/// torch's `kFieldAlignment`.
const ALIGNMENT: u16 = 64;

pub(super) struct TorchBinFile {
    path: PathBuf,
    folder: String,
    zip: ZipWriter<BufWriter<File>>,
    sizes: Vec<u64>,
    next: usize,
    /// Seed for the serialization id: a hash of what was declared.
    id_hash: u128,
}

fn zip_err(path: &Path, e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(e) => Error::write(path, e),
        e => Error::Output(format!("{}: {e}", path.display())),
    }
}

/// Options for a member of `len` bytes.
fn member_options(len: u64) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .with_alignment(ALIGNMENT)
        .large_file(len >= u32::MAX as u64)
}

/// 128-bit FNV-1a; enough to make the serialization id depend on the contents.
fn fnv1a(seed: u128, bytes: &[u8]) -> u128 {
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes.iter().fold(seed, |h, &b| (h ^ b as u128).wrapping_mul(PRIME))
}
const FNV_OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;

impl TorchBinFile {
    pub(super) fn create(path: &Path, specs: &[&TensorSpec]) -> Result<Self> {
        let folder = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::Output(format!("{}: cannot derive the archive folder name", path.display())))?
            .to_string();
        let pkl = pickle::state_dict(specs)?;
        let sizes = specs.iter().map(|s| s.nbytes()).collect::<Result<Vec<u64>>>()?;
        let id_hash = fnv1a(FNV_OFFSET, &pkl);

        let file = File::create(path).map_err(|e| Error::write(path, e))?;
        let mut this = TorchBinFile {
            path: path.to_path_buf(),
            folder,
            zip: ZipWriter::new(BufWriter::with_capacity(1 << 20, file)),
            sizes,
            next: 0,
            id_hash,
        };
        this.member("data.pkl", &pkl)?;
        this.member(".format_version", b"1")?;
        this.member(".storage_alignment", ALIGNMENT.to_string().as_bytes())?;
        this.member("byteorder", b"little")?;
        Ok(this)
    }

    fn start(&mut self, name: &str, len: u64) -> Result<()> {
        let full = format!("{}/{name}", self.folder);
        self.zip.start_file(full, member_options(len)).map_err(|e| zip_err(&self.path, e))
    }

    fn member(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.start(name, bytes.len() as u64)?;
        self.zip.write_all(bytes).map_err(|e| Error::write(&self.path, e))
    }
}

impl ShardFile for TorchBinFile {
    fn write(&mut self, len: u64, fill: &mut super::Fill) -> Result<()> {
        let k = self.next;
        debug_assert_eq!(self.sizes.get(k).copied(), Some(len));
        self.start(&format!("data/{k}"), len)?;
        super::fill_exactly(&mut self.zip, len, fill, &self.path)?;
        self.next += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        if self.next != self.sizes.len() {
            return Err(Error::Output(format!(
                "{}: {} of {} tensors written",
                self.path.display(),
                self.next,
                self.sizes.len()
            )));
        }
        self.member("version", b"3\n")?;
        // torch writes a 40-digit decimal id; ours is derived from the contents so that the same
        // conversion gives the same bytes.
        let id = format!("{:040}", fnv1a(self.id_hash, self.folder.as_bytes()));
        self.member(".data/serialization_id", id.as_bytes())?;
        let TorchBinFile { path, zip, .. } = *self;
        let out = zip.finish().map_err(|e| zip_err(&path, e))?;
        let file = out.into_inner().map_err(|e| Error::write(&path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::write(&path, e))
    }
}
