//! TensorFlow checkpoint V2 ("tensor bundle"): `<prefix>.index` (SSTable of protos) plus
//! `<prefix>.data-SSSSS-of-NNNNN` shards holding the raw tensor bytes (docs/checkpoint-formats.md §1).
//!
//! Opening parses and validates the whole index (header version, every entry's dtype, shape,
//! size and byte range, the slices of partitioned tensors) and mmaps every shard, so that a
//! successful open means every listed tensor can be located. Reading checks each tensor's
//! CRC32C (unless disabled), reassembles partitioned tensors and converts big-endian data.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, InputFault, Result};
use crate::source::ordered_code::{encode_tensor_name_slice, slice_extents};
use crate::source::proto::{BundleEntryProto, BundleHeaderProto, ENDIANNESS_BIG, ENDIANNESS_LITTLE};
use crate::source::slices::{self, fmt_shape, SliceBox};
use crate::source::sstable::{crc32c, crc32c_extend, display_key, mask_crc, read_varint64, Table};
use crate::source::{Checkpoint, DType, TensorInfo, UnsupportedTensor};

/// The version of the bundle format this reader understands (`kTensorBundleVersion`).
const CONSUMER_VERSION: i32 = 1;
/// Sanity bound on `num_shards` from the header.
const MAX_SHARDS: i32 = 100_000;

/// Options for [`Bundle::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Check every tensor's CRC32C when it is read (default: true). Costs one pass over the bytes.
    pub verify_checksums: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { verify_checksums: true }
    }
}

/// Bytes of one data shard.
enum ShardData {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl ShardData {
    fn bytes(&self) -> &[u8] {
        match self {
            ShardData::Mmap(m) => m,
            ShardData::Owned(v) => v,
        }
    }
}

struct Shard {
    path: PathBuf,
    data: ShardData,
}

/// A byte range in a shard, validated against the shard's length at open.
#[derive(Debug, Clone)]
struct Piece {
    shard: usize,
    offset: usize,
    size: usize,
    /// Masked CRC32C as stored in the entry.
    crc: u32,
}

#[derive(Debug, Clone)]
enum Layout {
    Contiguous(Piece),
    /// Slices of a partitioned tensor, each with its own stored bytes.
    Partitioned(Vec<(SliceBox, Piece)>),
}

/// An opened V2 tensor bundle.
pub struct Bundle {
    prefix: PathBuf,
    index_path: PathBuf,
    shards: Vec<Shard>,
    big_endian: bool,
    verify: bool,
    /// Sorted by name; `layouts[i]` belongs to `infos[i]`.
    infos: Vec<TensorInfo>,
    layouts: Vec<Layout>,
    unsupported: Vec<UnsupportedTensor>,
}

/// `<prefix><suffix>` (suffix appended, not replacing an extension).
pub fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Path of data shard `i` of `n`: `<prefix>.data-%05d-of-%05d`.
pub fn shard_path(prefix: &Path, i: usize, n: usize) -> PathBuf {
    with_suffix(prefix, &format!(".data-{i:05}-of-{n:05}"))
}

fn map_file(path: &Path) -> Result<ShardData> {
    let file = crate::source::mapped::open_regular(path)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Ok(ShardData::Owned(Vec::new()));
    }
    // SAFETY: the mapping is read-only. As with every mmap-based reader, the file must not be
    // truncated or modified by another process while the checkpoint is open.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(ShardData::Mmap(map))
}

/// Decoded header fields we act on.
struct Header {
    num_shards: usize,
    big_endian: bool,
}

fn check_header(index_path: &Path, value: &[u8]) -> Result<Header> {
    let bad = |msg: String| Error::input(index_path, msg);
    let h = BundleHeaderProto::decode(value)
        .map_err(|e| bad(format!("cannot decode the bundle header (value of the empty key): {e}")))?;
    let v = h.version.unwrap_or_default();
    if v.producer < 0 {
        return Err(bad(format!("bundle header has invalid producer version {}", v.producer)));
    }
    if v.min_consumer > CONSUMER_VERSION {
        return Err(bad(format!(
            "bundle needs a reader of version >= {}, this reader is version {CONSUMER_VERSION} (written by a newer TensorFlow?)",
            v.min_consumer
        ))
        .because(InputFault::Unsupported));
    }
    if v.bad_consumers.contains(&CONSUMER_VERSION) {
        return Err(bad(format!("bundle header disallows reader version {CONSUMER_VERSION} (bad_consumers)"))
            .because(InputFault::Unsupported));
    }
    let big_endian = match h.endianness {
        ENDIANNESS_LITTLE => false,
        ENDIANNESS_BIG => true,
        e => return Err(bad(format!("bundle header has unknown endianness {e} (expected 0 = little or 1 = big)"))),
    };
    if h.num_shards < 1 || h.num_shards > MAX_SHARDS {
        return Err(bad(format!(
            "bundle header has implausible num_shards = {} (expected 1..={MAX_SHARDS})",
            h.num_shards
        )));
    }
    Ok(Header { num_shards: h.num_shards as usize, big_endian })
}

impl Bundle {
    /// Opens `<prefix>.index` and its data shards, verifying checksums on read.
    pub fn open(prefix: impl AsRef<Path>) -> Result<Bundle> {
        Self::open_with(prefix, OpenOptions::default())
    }

    pub fn open_with(prefix: impl AsRef<Path>, options: OpenOptions) -> Result<Bundle> {
        let prefix = prefix.as_ref();
        let index_path = with_suffix(prefix, ".index");
        let index = crate::source::mapped::read_regular(&index_path)?;
        Self::build(prefix, &index, options, |header| {
            let n = header.num_shards;
            let missing: Vec<PathBuf> = (0..n).map(|i| shard_path(prefix, i, n)).filter(|p| !p.is_file()).collect();
            if let Some(first) = missing.first() {
                let more = match missing.len() {
                    1 => String::new(),
                    k => format!(" (and {} more missing: {})", k - 1, list_paths(&missing[1..])),
                };
                return Err(Error::input(
                    first,
                    format!(
                        "data file is missing{more}; the index {} says the checkpoint has {n} data shard(s)",
                        index_path.display()
                    ),
                )
                .because(InputFault::Missing));
            }
            (0..n)
                .map(|i| {
                    let path = shard_path(prefix, i, n);
                    let data = map_file(&path)?;
                    Ok(Shard { path, data })
                })
                .collect()
        })
    }

    /// Opens a bundle held in memory (for tests and fuzzing): `shards[i]` is the content of data
    /// shard `i`. `prefix` is only used for naming files in errors. The shard count must match
    /// the header.
    pub fn from_bytes(
        prefix: impl AsRef<Path>,
        index: &[u8],
        shards: Vec<Vec<u8>>,
        options: OpenOptions,
    ) -> Result<Bundle> {
        let prefix = prefix.as_ref();
        let mut shards = Some(shards);
        Self::build(prefix, index, options, |header| {
            let given = shards.take().unwrap_or_default();
            let n = header.num_shards;
            if given.len() != n {
                let missing = shard_path(prefix, given.len().min(n), n);
                return Err(Error::input(
                    missing,
                    format!("data file is missing: the header says {n} shard(s), {} were given", given.len()),
                )
                .because(InputFault::Missing));
            }
            Ok(given
                .into_iter()
                .enumerate()
                .map(|(i, data)| Shard { path: shard_path(prefix, i, n), data: ShardData::Owned(data) })
                .collect())
        })
    }

    fn build(
        prefix: &Path,
        index: &[u8],
        options: OpenOptions,
        load_shards: impl FnOnce(&Header) -> Result<Vec<Shard>>,
    ) -> Result<Bundle> {
        let index_path = with_suffix(prefix, ".index");
        let table = Table::open(&index_path, index, "TensorFlow checkpoint index")?;
        // Collect all entries: header, named entries, slice entries (keys starting with 0x00).
        let mut header_value: Option<Vec<u8>> = None;
        let mut first = true;
        let mut named: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut slice_entries: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        table.for_each(index, |k, v, _| {
            if first {
                first = false;
                if !k.is_empty() {
                    return Err(Error::input(
                        &index_path,
                        format!(
                            "index has no bundle header: the first key is '{}', expected the empty key",
                            display_key(k)
                        ),
                    ));
                }
                header_value = Some(v.to_vec());
            } else if k.first() == Some(&0) {
                slice_entries.insert(k.to_vec(), v.to_vec());
            } else {
                named.push((k.to_vec(), v.to_vec()));
            }
            Ok(())
        })?;
        let header_value = header_value
            .ok_or_else(|| Error::input(&index_path, "index is empty: no bundle header (empty key) found"))?;
        let header = check_header(&index_path, &header_value)?;
        let shards = load_shards(&header)?;

        let mut bundle = Bundle {
            prefix: prefix.to_path_buf(),
            index_path,
            shards,
            big_endian: header.big_endian,
            verify: options.verify_checksums,
            infos: Vec::with_capacity(named.len()),
            layouts: Vec::with_capacity(named.len()),
            unsupported: Vec::new(),
        };
        for (key, value) in named {
            bundle.add_entry(&key, &value, &slice_entries)?;
        }
        Ok(bundle)
    }

    /// Validates one named index entry and records it (or lists it as unsupported).
    fn add_entry(&mut self, key: &[u8], value: &[u8], slice_entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<()> {
        let Ok(name) = std::str::from_utf8(key) else {
            self.unsupported.push(UnsupportedTensor {
                name: String::from_utf8_lossy(key).into_owned(),
                tf_dtype: None,
                reason: format!("tensor name '{}' is not valid UTF-8", display_key(key)),
            });
            return Ok(());
        };
        let terr = |msg: String| Error::tensor(&self.index_path, name, msg);
        let entry = BundleEntryProto::decode(value).map_err(|e| terr(format!("cannot decode the index entry: {e}")))?;
        let Some(dtype) = DType::from_tf(entry.dtype) else {
            self.unsupported.push(UnsupportedTensor {
                name: name.to_string(),
                tf_dtype: Some(entry.dtype),
                reason: format!("dtype {} (DataType {}) is not supported", DType::tf_name(entry.dtype), entry.dtype),
            });
            return Ok(());
        };
        let shape = slices::shape_from_proto(entry.shape.as_ref()).map_err(&terr)?;
        let layout = if entry.slices.is_empty() {
            Layout::Contiguous(self.check_piece(name, &entry, dtype, &shape)?)
        } else {
            let mut parts = Vec::with_capacity(entry.slices.len().min(slices::MAX_SLICES));
            if entry.slices.len() > slices::MAX_SLICES {
                return Err(terr(format!(
                    "partitioned into {} slices; at most {} are supported",
                    entry.slices.len(),
                    slices::MAX_SLICES
                )));
            }
            for s in &entry.slices {
                let b = slice_box(s, &shape).map_err(|m| terr(format!("partitioned tensor: {m}")))?;
                let skey = encode_tensor_name_slice(key, &slice_extents(s));
                let sv = slice_entries.get(&skey).ok_or_else(|| {
                    terr(format!(
                        "slice {b} of the partitioned tensor is missing from the index (key '{}')",
                        display_key(&skey)
                    ))
                })?;
                let slice_name = format!("{name}{b}");
                let se = BundleEntryProto::decode(sv.as_slice()).map_err(|e| {
                    Error::tensor(&self.index_path, &slice_name, format!("cannot decode the slice entry: {e}"))
                })?;
                if se.dtype != entry.dtype {
                    return Err(Error::tensor(
                        &self.index_path,
                        &slice_name,
                        format!(
                            "slice has dtype {} but the partitioned tensor has {}",
                            DType::tf_name(se.dtype),
                            DType::tf_name(entry.dtype)
                        ),
                    ));
                }
                if !se.slices.is_empty() {
                    return Err(Error::tensor(&self.index_path, &slice_name, "slice entry is itself partitioned"));
                }
                let sshape = slices::shape_from_proto(se.shape.as_ref())
                    .map_err(|m| Error::tensor(&self.index_path, &slice_name, m))?;
                if sshape != b.shape {
                    return Err(Error::tensor(
                        &self.index_path,
                        &slice_name,
                        format!(
                            "slice entry has shape {} but the slice spans {}",
                            fmt_shape(&sshape),
                            fmt_shape(&b.shape)
                        ),
                    ));
                }
                let piece = self.check_piece(&slice_name, &se, dtype, &b.shape)?;
                parts.push((b, piece));
            }
            let boxes: Vec<&SliceBox> = parts.iter().map(|(b, _)| b).collect();
            slices::check_coverage(&shape, &boxes).map_err(|m| terr(format!("partitioned tensor: {m}")))?;
            // Real slices occupy disjoint bytes, so together they fit in the data files. This also
            // bounds the buffer allocated when the tensor is assembled.
            let stored: u128 = parts.iter().map(|(_, p)| p.size as u128).sum();
            let available: u128 = self.shards.iter().map(|s| s.data.bytes().len() as u128).sum();
            if stored > available {
                return Err(terr(format!(
                    "partitioned tensor: its slices claim {stored} bytes but the data files hold only {available}"
                )));
            }
            Layout::Partitioned(parts)
        };
        self.infos.push(TensorInfo { name: name.to_string(), dtype, shape });
        self.layouts.push(layout);
        Ok(())
    }

    /// Checks shard id, offset and size of an entry against the dtype, shape and shard length.
    fn check_piece(&self, name: &str, e: &BundleEntryProto, dtype: DType, shape: &[usize]) -> Result<Piece> {
        let terr = |msg: String| Error::tensor(&self.index_path, name, msg);
        let shard = usize::try_from(e.shard_id).ok().filter(|&s| s < self.shards.len()).ok_or_else(|| {
            terr(format!("entry refers to data shard {} but the bundle has {}", e.shard_id, self.shards.len()))
        })?;
        let offset = usize::try_from(e.offset).map_err(|_| terr(format!("entry has invalid offset {}", e.offset)))?;
        let size = usize::try_from(e.size).map_err(|_| terr(format!("entry has invalid size {}", e.size)))?;
        let numel = slices::numel(shape).unwrap_or(usize::MAX);
        match dtype.size() {
            Some(es) => {
                let want = numel.checked_mul(es);
                if want != Some(size) {
                    let want = want.map(|w| w.to_string()).unwrap_or_else(|| "too many".into());
                    return Err(terr(format!(
                        "entry size {size} bytes disagrees with dtype {} x shape {} = {want} bytes",
                        dtype.name(),
                        fmt_shape(shape)
                    )));
                }
            }
            None => {
                // Each string needs at least one length byte plus the 4-byte length checksum.
                if numel.checked_add(4).is_none_or(|min| size < min) {
                    return Err(terr(format!(
                        "string tensor of shape {} ({numel} elements) cannot fit in {size} bytes",
                        fmt_shape(shape)
                    )));
                }
            }
        }
        let shard_ref = &self.shards[shard];
        let flen = shard_ref.data.bytes().len();
        match offset.checked_add(size) {
            Some(end) if end <= flen => Ok(Piece { shard, offset, size, crc: e.crc32c }),
            _ => Err(Error::tensor(
                &shard_ref.path,
                name,
                format!(
                    "tensor needs bytes [{offset}, {}) but the data file has only {flen} bytes: the data file is \
                     truncated, or the index points past its end",
                    offset as u128 + size as u128
                ),
            )
            .because(InputFault::Truncated)),
        }
    }

    /// Whether CRCs are checked on read.
    pub fn verify_checksums(&self) -> bool {
        self.verify
    }

    /// Turns CRC checking on read on or off.
    pub fn set_verify_checksums(&mut self, on: bool) {
        self.verify = on;
    }

    pub fn is_big_endian(&self) -> bool {
        self.big_endian
    }

    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    /// The `.index` file.
    pub fn index_path(&self) -> &Path {
        &self.index_path
    }

    /// Reads every tensor once (checking every CRC); returns the first error.
    pub fn verify_all(&self) -> Result<()> {
        for t in &self.infos {
            if t.dtype == DType::String {
                self.read_strings(&t.name)?;
            } else {
                self.read(&t.name)?;
            }
        }
        Ok(())
    }

    fn lookup(&self, name: &str) -> Result<(&TensorInfo, &Layout)> {
        match self.infos.binary_search_by(|t| t.name.as_str().cmp(name)) {
            Ok(i) => Ok((&self.infos[i], &self.layouts[i])),
            Err(_) => match self.unsupported.iter().find(|u| u.name == name) {
                Some(u) => Err(Error::tensor(&self.index_path, name, u.reason.clone()).because(InputFault::Unsupported)),
                None => Err(Error::tensor(&self.prefix, name, "no such tensor in the checkpoint").because(InputFault::Missing)),
            },
        }
    }

    /// Stored bytes of a piece, CRC-checked if enabled.
    fn piece_bytes(&self, name: &str, p: &Piece, check_crc: bool) -> Result<&[u8]> {
        let shard = self.shards.get(p.shard).ok_or_else(|| Error::tensor(&self.index_path, name, "bad shard"))?;
        let data = shard.data.bytes();
        let bytes = p.offset.checked_add(p.size).and_then(|end| data.get(p.offset..end)).ok_or_else(|| {
            Error::tensor(
                &shard.path,
                name,
                format!(
                    "tensor needs bytes [{}, {}+{}) but the data file has {} bytes",
                    p.offset,
                    p.offset,
                    p.size,
                    data.len()
                ),
            )
            .because(InputFault::Truncated)
        })?;
        if check_crc && self.verify {
            let got = mask_crc(crc32c(bytes));
            if got != p.crc {
                return Err(crc_error(&shard.path, name, p, got));
            }
        }
        Ok(bytes)
    }
}

fn crc_error(path: &Path, name: &str, p: &Piece, got: u32) -> Error {
    Error::tensor(
        path,
        name,
        format!(
            "CRC32C mismatch: the index expects masked crc {:#010x}, the data at bytes [{}, {}) gives {got:#010x} (data file corrupted)",
            p.crc,
            p.offset,
            p.offset + p.size
        ),
    )
}

fn slice_box(s: &crate::source::proto::TensorSliceProto, full: &[usize]) -> std::result::Result<SliceBox, String> {
    slices::slice_box(s, full)
}

fn list_paths(paths: &[PathBuf]) -> String {
    let mut s: Vec<String> = paths.iter().take(5).map(|p| p.display().to_string()).collect();
    if paths.len() > 5 {
        s.push(format!("… {} more", paths.len() - 5));
    }
    s.join(", ")
}

/// Reverses the bytes of every `elem`-sized element in place.
fn swap_elements(bytes: &mut [u8], elem: usize) {
    if elem > 1 {
        for c in bytes.chunks_exact_mut(elem) {
            c.reverse();
        }
    }
}

/// Decodes TF's DT_STRING layout (`varint64 lengths | u32le masked length crc | bytes`), checking
/// both checksums when `verify` is set. Errors are plain messages (the caller adds file/tensor).
pub fn decode_strings(
    bytes: &[u8],
    n: usize,
    entry_crc: u32,
    verify: bool,
) -> std::result::Result<Vec<Vec<u8>>, String> {
    if n > bytes.len() {
        return Err(format!("{n} strings need at least {n} length bytes, the entry has {}", bytes.len()));
    }
    let mut pos = 0usize;
    let mut lens = Vec::with_capacity(n);
    let mut crc = 0u32;
    for i in 0..n {
        let len =
            read_varint64(bytes, &mut pos).ok_or_else(|| format!("truncated or bad length varint of string #{i}"))?;
        crc = match u32::try_from(len) {
            Ok(l) => crc32c_extend(crc, &l.to_le_bytes()),
            Err(_) => crc32c_extend(crc, &len.to_le_bytes()),
        };
        lens.push(len);
    }
    let stored = bytes
        .get(pos..pos + 4)
        .ok_or_else(|| format!("entry ends at byte {} before the length checksum", bytes.len()))?;
    let stored_len_crc = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    if verify && mask_crc(crc) != stored_len_crc {
        return Err(format!(
            "CRC32C mismatch in the string lengths: stored {stored_len_crc:#010x}, computed {:#010x}",
            mask_crc(crc)
        ));
    }
    crc = crc32c_extend(crc, stored);
    pos += 4;
    let mut total: u64 = 0;
    for &l in &lens {
        total = total.checked_add(l).ok_or("string lengths overflow")?;
    }
    let remaining = (bytes.len() - pos) as u64;
    if total != remaining {
        return Err(format!(
            "string lengths add up to {total} bytes but the entry has {remaining} bytes of string data"
        ));
    }
    let mut out = Vec::with_capacity(n);
    for l in lens {
        let s = &bytes[pos..pos + l as usize];
        crc = crc32c_extend(crc, s);
        out.push(s.to_vec());
        pos += l as usize;
    }
    if verify && mask_crc(crc) != entry_crc {
        return Err(format!(
            "CRC32C mismatch: the index expects masked crc {entry_crc:#010x}, the string data gives {:#010x} (data file corrupted)",
            mask_crc(crc)
        ));
    }
    Ok(out)
}

impl Checkpoint for Bundle {
    fn path(&self) -> &Path {
        &self.prefix
    }

    fn format(&self) -> &'static str {
        "tf-bundle-v2"
    }

    fn files(&self) -> Vec<PathBuf> {
        std::iter::once(self.index_path.clone()).chain(self.shards.iter().map(|s| s.path.clone())).collect()
    }

    fn release(&self, name: &str) {
        let Ok((_, layout)) = self.lookup(name) else { return };
        let pieces: Vec<&Piece> = match layout {
            Layout::Contiguous(p) => vec![p],
            Layout::Partitioned(parts) => parts.iter().map(|(_, p)| p).collect(),
        };
        for p in pieces {
            if let Some(Shard { data: ShardData::Mmap(map), .. }) = self.shards.get(p.shard) {
                // SAFETY: the map is read-only and shared, so dropping its pages loses nothing:
                // a later read faults them in from the file again.
                let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, p.offset, p.size) };
            }
        }
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn unsupported(&self) -> &[UnsupportedTensor] {
        &self.unsupported
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let (info, layout) = self.lookup(name)?;
        let Some(es) = info.dtype.size() else {
            return Err(Error::tensor(&self.prefix, name, "is a string tensor; use read_strings"));
        };
        match layout {
            Layout::Contiguous(p) => {
                let bytes = self.piece_bytes(name, p, true)?;
                if self.big_endian && es > 1 {
                    let mut v = bytes.to_vec();
                    swap_elements(&mut v, es);
                    Ok(Cow::Owned(v))
                } else {
                    Ok(Cow::Borrowed(bytes))
                }
            }
            Layout::Partitioned(parts) => {
                // Sizes were validated at open: total = numel * es, bounded by the shard sizes.
                let total = info.numel() * es;
                let mut out = vec![0u8; total];
                for (b, p) in parts {
                    let src = self.piece_bytes(&format!("{name}{b}"), p, true)?;
                    slices::place_slice(&mut out, &info.shape, b, src, es);
                }
                if self.big_endian {
                    swap_elements(&mut out, es);
                }
                Ok(Cow::Owned(out))
            }
        }
    }

    fn read_strings(&self, name: &str) -> Result<Vec<Vec<u8>>> {
        let (info, layout) = self.lookup(name)?;
        if info.dtype != DType::String {
            return Err(Error::tensor(
                &self.prefix,
                name,
                format!("is a {} tensor, not a string tensor; use read", info.dtype.name()),
            ));
        }
        let decode = |label: &str, p: &Piece, n: usize| -> Result<Vec<Vec<u8>>> {
            let bytes = self.piece_bytes(label, p, false)?;
            decode_strings(bytes, n, p.crc, self.verify).map_err(|m| {
                let path = self.shards.get(p.shard).map(|s| s.path.clone()).unwrap_or_default();
                Error::tensor(
                    path,
                    label,
                    format!("{m} (string tensor at bytes [{}, {}))", p.offset, p.offset + p.size),
                )
            })
        };
        match layout {
            Layout::Contiguous(p) => decode(name, p, info.numel()),
            Layout::Partitioned(parts) => {
                let mut out = vec![Vec::new(); info.numel()];
                for (b, p) in parts {
                    let src = decode(&format!("{name}{b}"), p, b.numel())?;
                    slices::place_slice(&mut out, &info.shape, b, &src, 1);
                }
                Ok(out)
            }
        }
    }
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("prefix", &self.prefix)
            .field("shards", &self.shards.len())
            .field("big_endian", &self.big_endian)
            .field("tensors", &self.infos.len())
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::proto::{BundleEntryProto, Extent, TensorSliceProto, VersionDef};
    use crate::source::testing::{encode_string_tensor, BundleBuilder, Compression, TableBuilder};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn iota(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32 * 0.5 - 3.0).collect()
    }

    /// Row-major coordinates → elements of the sub-box, as LE bytes of `es`-byte elements.
    fn extract(full: &[u8], shape: &[i64], ext: &[(i64, i64)], es: usize) -> Vec<u8> {
        let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
        let b = SliceBox {
            start: ext.iter().map(|&(s, _)| s as usize).collect(),
            shape: ext
                .iter()
                .zip(&shape)
                .map(|(&(s, l), &d)| if l < 0 { d - s as usize } else { l as usize })
                .collect(),
        };
        let mut out = vec![0u8; b.numel() * es];
        slices::for_each_run(&shape, &b, |d, s, n| {
            out[s * es..(s + n) * es].copy_from_slice(&full[d * es..(d + n) * es]);
        });
        out
    }

    /// A bundle with one of everything; returns the builder and the expected LE bytes per tensor.
    pub(crate) fn sample(num_shards: usize, big: bool) -> (BundleBuilder, Vec<(String, Vec<u8>)>) {
        let mut b = BundleBuilder::new(num_shards);
        if big {
            b = b.big_endian();
        }
        let mut want = Vec::new();
        let a = f32_bytes(&iota(6));
        b.add("a", DType::F32, &[2, 3], &a);
        want.push(("a".to_string(), a));
        let bf: Vec<u8> = [0x3f80u16, 0xc000, 0x0001, 0x7f80].iter().flat_map(|v| v.to_le_bytes()).collect();
        b.add("bf16", DType::BF16, &[4], &bf);
        want.push(("bf16".into(), bf));
        let step = 123_456_789_012i64.to_le_bytes().to_vec();
        b.add("global_step", DType::I64, &[], &step);
        want.push(("global_step".into(), step));
        b.add("mask", DType::Bool, &[3], &[1, 0, 1]);
        want.push(("mask".into(), vec![1, 0, 1]));
        b.add("empty", DType::F32, &[0, 3], &[]);
        want.push(("empty".into(), vec![]));
        // Partitioned [10, 4] by rows into 3, as TF1's fixed_size_partitioner(3) does.
        let full = f32_bytes(&iota(40));
        let ext = [vec![(0, 4), (0, 4)], vec![(4, 3), (0, 4)], vec![(7, 3), (0, 4)]];
        let parts: Vec<_> = ext.iter().map(|e| (e.clone(), extract(&full, &[10, 4], e, 4))).collect();
        b.add_partitioned("part", DType::F32, &[10, 4], &parts);
        want.push(("part".into(), full));
        // Rank 3 partitioned along the middle dimension, with full extents elsewhere.
        let full3: Vec<u8> = (0..36u16).flat_map(|v| (v * 3).to_le_bytes()).collect();
        let ext = [vec![(0, -1), (0, 2), (0, -1)], vec![(0, -1), (2, 4), (0, -1)]];
        let parts: Vec<_> = ext.iter().rev().map(|e| (e.clone(), extract(&full3, &[2, 6, 3], e, 2))).collect();
        b.add_partitioned("z/part3", DType::U16, &[2, 6, 3], &parts);
        want.push(("z/part3".into(), full3));
        b.add_strings("_CHECKPOINTABLE_OBJECT_GRAPH", &[], &[b"\x0a\x05graph"]);
        b.add_strings("words", &[3], &[b"hi", b"", b"world"]);
        (b, want)
    }

    fn open_mem(b: &BundleBuilder) -> Result<Bundle> {
        Bundle::from_bytes("mem/model.ckpt", &b.index_bytes(), b.shards.clone(), OpenOptions::default())
    }

    fn check_sample(bundle: &Bundle, want: &[(String, Vec<u8>)], borrowed: bool) {
        let names: Vec<&str> = bundle.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["_CHECKPOINTABLE_OBJECT_GRAPH", "a", "bf16", "empty", "global_step", "mask", "part", "words", "z/part3"]
        );
        for (name, bytes) in want {
            let got = bundle.read(name).unwrap();
            assert_eq!(&*got, bytes.as_slice(), "{name}");
            let partitioned = name.contains("part");
            if borrowed && !partitioned {
                assert!(matches!(got, Cow::Borrowed(_)), "{name} should be borrowed from the mmap");
            }
        }
        assert_eq!(bundle.info("part").unwrap().shape, [10, 4]);
        assert_eq!(bundle.info("global_step").unwrap().shape, Vec::<usize>::new());
        assert_eq!(bundle.info("bf16").unwrap().dtype, DType::BF16);
        assert_eq!(bundle.read_strings("words").unwrap(), [b"hi".to_vec(), vec![], b"world".to_vec()]);
        assert_eq!(bundle.read_strings("_CHECKPOINTABLE_OBJECT_GRAPH").unwrap(), [b"\x0a\x05graph".to_vec()]);
        assert!(bundle.read("words").unwrap_err().to_string().contains("read_strings"));
        assert!(bundle.read_strings("a").unwrap_err().to_string().contains("not a string tensor"));
        let e = bundle.read("nope").unwrap_err().to_string();
        assert!(e.contains("'nope'") && e.contains("no such tensor"), "{e}");
        bundle.verify_all().unwrap();
    }

    #[test]
    fn round_trip_files_single_and_multi_shard() {
        let dir = tempfile::tempdir().unwrap();
        for shards in [1, 3] {
            let (b, want) = sample(shards, false);
            let prefix = dir.path().join(format!("model.ckpt-{shards}"));
            b.write(&prefix).unwrap();
            let bundle = Bundle::open(&prefix).unwrap();
            assert_eq!(bundle.num_shards(), shards);
            assert_eq!(bundle.path(), prefix);
            assert_eq!(bundle.format(), "tf-bundle-v2");
            check_sample(&bundle, &want, true);
            // Through the generic entry point too.
            let ck = crate::source::open(&prefix).unwrap();
            assert_eq!(ck.tensors().len(), 9);
            assert_eq!(&*ck.read("part").unwrap(), want[5].1.as_slice());
        }
    }

    #[test]
    fn round_trip_multi_block_snappy_index() {
        let (mut b, want) = sample(2, false);
        for i in 0..300 {
            b.add_f32(&format!("bert/encoder/layer_{}/dense/kernel_{i}", i % 12), &[2], &[i as f32, -(i as f32)]);
        }
        for (bs, comp) in [(128, Compression::Snappy), (256, Compression::None), (64, Compression::Snappy)] {
            b.table = TableBuilder { block_size: bs, compression: comp, ..Default::default() };
            let bundle = open_mem(&b).unwrap();
            assert_eq!(bundle.tensors().len(), 309);
            for (name, bytes) in &want {
                assert_eq!(&*bundle.read(name).unwrap(), bytes.as_slice());
            }
            let t = "bert/encoder/layer_5/dense/kernel_17";
            assert_eq!(&*bundle.read(t).unwrap(), f32_bytes(&[17.0, -17.0]).as_slice());
        }
    }

    #[test]
    fn big_endian_bundle_is_swapped() {
        let (b, want) = sample(2, true);
        assert_eq!(b.header.endianness, 1);
        // Stored bytes are really big-endian.
        let e = &b.entries[b"a".as_slice()];
        let stored = &b.shards[e.shard_id as usize][e.offset as usize..][..4];
        assert_eq!(stored, (-3.0f32).to_be_bytes());
        let bundle = open_mem(&b).unwrap();
        assert!(bundle.is_big_endian());
        check_sample(&bundle, &want, false);
        assert!(matches!(bundle.read("a").unwrap(), Cow::Owned(_)));
        assert!(matches!(bundle.read("mask").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn doc_string_tensor_bytes() {
        let (bytes, crc) = encode_string_tensor(&[b"hi", b"", b"world"]);
        assert_eq!(bytes, [0x02, 0x00, 0x05, 0xa1, 0xca, 0x70, 0xaf, b'h', b'i', b'w', b'o', b'r', b'l', b'd']);
        assert_eq!(bytes.len(), 14);
        let got = decode_strings(&bytes, 3, crc, true).unwrap();
        assert_eq!(got, [b"hi".to_vec(), vec![], b"world".to_vec()]);
        assert!(decode_strings(&bytes, 3, crc ^ 1, true).unwrap_err().contains("CRC32C mismatch"));
        decode_strings(&bytes, 3, crc ^ 1, false).unwrap();
        assert!(decode_strings(&bytes, 2, crc, true).is_err());
        assert!(decode_strings(&bytes, 4, crc, true).is_err());
        assert!(decode_strings(&bytes[..13], 3, crc, false).unwrap_err().contains("add up"));
        let mut bad = bytes.clone();
        bad[3] ^= 1;
        assert!(decode_strings(&bad, 3, crc, true).unwrap_err().contains("string lengths"));
        assert!(decode_strings(&[0xff; 12], 3, 0, true).is_err());
        let (empty, crc) = encode_string_tensor(&[]);
        assert_eq!(decode_strings(&empty, 0, crc, true).unwrap(), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn doc_header_bytes() {
        use prost::Message;
        assert_eq!(BundleBuilder::new(1).header.encode_to_vec(), [0x08, 0x01, 0x1a, 0x02, 0x08, 0x01]);
    }

    fn err_of(b: &BundleBuilder) -> String {
        open_mem(b).unwrap_err().to_string()
    }

    fn assert_has(e: &str, parts: &[&str]) {
        for p in parts {
            assert!(e.contains(p), "error {e:?} should mention {p:?}");
        }
    }

    #[test]
    fn corrupt_flipped_data_byte_is_crc_error() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("model.ckpt");
        let (b, _) = sample(1, false);
        b.write(&prefix).unwrap();
        let data = shard_path(&prefix, 0, 1);
        let mut bytes = std::fs::read(&data).unwrap();
        let e = &b.entries[b"a".as_slice()];
        bytes[e.offset as usize + 5] ^= 0x10;
        std::fs::write(&data, &bytes).unwrap();
        let bundle = Bundle::open(&prefix).unwrap();
        let err = bundle.read("a").unwrap_err().to_string();
        assert_has(&err, &["model.ckpt.data-00000-of-00001", "'a'", "CRC32C mismatch"]);
        assert!(bundle.verify_all().is_err());
        // Other tensors are still fine, and with checks disabled the bytes come back.
        bundle.read("bf16").unwrap();
        let unchecked = Bundle::open_with(&prefix, OpenOptions { verify_checksums: false }).unwrap();
        assert!(!unchecked.verify_checksums());
        assert_eq!(unchecked.read("a").unwrap().len(), 24);
    }

    #[test]
    fn corrupt_slice_and_string_data() {
        let (mut b, _) = sample(1, false);
        let se = encode_tensor_name_slice(b"part", &[(4, 3), (0, 4)]);
        let off = b.entries[&se].offset as usize;
        b.shards[0][off] ^= 1;
        let w = b.entries[b"words".as_slice()].offset as usize;
        b.shards[0][w + 8] ^= 1; // inside "hiworld"
        let bundle = open_mem(&b).unwrap();
        let e = bundle.read("part").unwrap_err().to_string();
        assert_has(&e, &["data-00000-of-00001", "'part[4:7, 0:4]'", "CRC32C mismatch"]);
        let e = bundle.read_strings("words").unwrap_err().to_string();
        assert_has(&e, &["data-00000-of-00001", "'words'", "CRC32C mismatch"]);
    }

    #[test]
    fn corrupt_truncated_data_file() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("model.ckpt");
        let (b, _) = sample(1, false);
        b.write(&prefix).unwrap();
        let data = shard_path(&prefix, 0, 1);
        let bytes = std::fs::read(&data).unwrap();
        std::fs::write(&data, &bytes[..bytes.len() - 3]).unwrap();
        let err = Bundle::open(&prefix).unwrap_err().to_string();
        assert_has(
            &err,
            &["model.ckpt.data-00000-of-00001", "tensor '", "needs bytes [", "but the data file has only"],
        );
    }

    #[test]
    fn corrupt_truncated_or_garbled_index() {
        let (mut b, _) = sample(1, false);
        b.table.block_size = 64;
        let index = b.index_bytes();
        let open = |ix: &[u8]| Bundle::from_bytes("d/model.ckpt", ix, b.shards.clone(), OpenOptions::default());
        let e = open(&index[..index.len() - 10]).unwrap_err().to_string();
        assert_has(&e, &["d/model.ckpt.index", "not a TensorFlow checkpoint index (bad SSTable magic"]);
        let e = open(&index[..20]).unwrap_err().to_string();
        assert_has(&e, &["d/model.ckpt.index", "shorter than the 48-byte SSTable footer"]);
        // Cut out the middle but keep the footer: block handles now point past the end.
        let mut cut = index[..index.len() / 3].to_vec();
        cut.extend_from_slice(&index[index.len() - 48..]);
        let e = open(&cut).unwrap_err().to_string();
        assert_has(&e, &["d/model.ckpt.index", "index block", "offset"]);
        // Flip a byte in a data block: block checksum names the block.
        let mut flipped = index.clone();
        flipped[30] ^= 4;
        let e = open(&flipped).unwrap_err().to_string();
        assert_has(&e, &["d/model.ckpt.index", "data block #0 (offset 0", "checksum mismatch"]);
        // Garbled contents with a valid CRC.
        b.table.block_hook = Some(Arc::new(|i, blk: &mut Vec<u8>| {
            if i == 1 {
                blk[1] = 0xff;
                blk[2] = 0xff;
            }
        }));
        let e = err_of(&b);
        assert_has(&e, &["model.ckpt.index", "data block #1", "entry at byte 0"]);
    }

    #[test]
    fn state_file_passed_as_index() {
        let text = b"model_checkpoint_path: \"model.ckpt-5\"\nall_model_checkpoint_paths: \"model.ckpt-5\"\n";
        let e = Bundle::from_bytes("d/checkpoint", text, vec![vec![]], OpenOptions::default()).unwrap_err().to_string();
        assert_has(&e, &["not a TensorFlow checkpoint index (bad SSTable magic", "pass the directory"]);
    }

    #[test]
    fn missing_shard_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("model.ckpt");
        let (b, _) = sample(4, false);
        b.write(&prefix).unwrap();
        std::fs::remove_file(shard_path(&prefix, 2, 4)).unwrap();
        std::fs::remove_file(shard_path(&prefix, 3, 4)).unwrap();
        let e = Bundle::open(&prefix).unwrap_err().to_string();
        assert_has(
            &e,
            &["model.ckpt.data-00002-of-00004", "missing", "model.ckpt.data-00003-of-00004", "4 data shard"],
        );
        std::fs::remove_file(with_suffix(&prefix, ".index")).unwrap();
        let e = Bundle::open(&prefix).unwrap_err().to_string();
        assert_has(&e, &["model.ckpt.index"]);
    }

    #[test]
    fn entry_size_disagrees_with_shape() {
        let (mut b, _) = sample(1, false);
        b.entry_mut("a").size = 20;
        let e = err_of(&b);
        assert_has(
            &e,
            &["model.ckpt.index", "'a'", "entry size 20 bytes disagrees with dtype float32 x shape [2, 3] = 24 bytes"],
        );
        let (mut b, _) = sample(1, false);
        b.entry_mut("a").shape = Some(crate::source::proto::TensorShapeProto::from_dims(&[1 << 40, 1 << 40]));
        assert_has(&err_of(&b), &["'a'", "more elements than fit"]);
        let (mut b, _) = sample(1, false);
        b.entry_mut("a").shape = Some(crate::source::proto::TensorShapeProto::from_dims(&[2, -1]));
        assert_has(&err_of(&b), &["'a'", "invalid dimension -1"]);
        let (mut b, _) = sample(1, false);
        b.entry_mut("a").shard_id = 3;
        assert_has(&err_of(&b), &["'a'", "data shard 3 but the bundle has 1"]);
        let (mut b, _) = sample(1, false);
        b.entry_mut("a").offset = -5;
        assert_has(&err_of(&b), &["'a'", "invalid offset -5"]);
        let (mut b, _) = sample(1, false);
        b.entry_mut("a").offset = i64::MAX - 3;
        assert_has(&err_of(&b), &["'a'", "needs bytes"]);
        let (mut b, _) = sample(1, false);
        b.entry_mut("words").size = 3;
        assert_has(&err_of(&b), &["'words'", "cannot fit in 3 bytes"]);
        let (mut b, _) = sample(1, false);
        b.raw_entries.insert(b"a".to_vec(), vec![0x0a, 0xff]);
        assert_has(&err_of(&b), &["model.ckpt.index", "'a'", "cannot decode the index entry"]);
    }

    #[test]
    fn unsupported_dtype_is_reported_not_fatal() {
        let (mut b, _) = sample(1, false);
        b.add_raw("cplx", 8, &[2], &[0u8; 16]);
        b.add_raw("weird", 77, &[], &[]);
        let bundle = open_mem(&b).unwrap();
        assert_eq!(bundle.tensors().len(), 9);
        let u = bundle.unsupported();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].name, "cplx");
        assert_eq!(u[0].tf_dtype, Some(8));
        assert!(u[0].reason.contains("DT_COMPLEX64"));
        let e = bundle.read("cplx").unwrap_err().to_string();
        assert_has(&e, &["model.ckpt.index", "'cplx'", "DT_COMPLEX64", "not supported"]);
        assert_has(&bundle.read("weird").unwrap_err().to_string(), &["'weird'", "DataType(77)"]);
    }

    #[test]
    fn header_checks() {
        type Case = (Box<dyn Fn(&mut BundleBuilder)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                Box::new(|b| {
                    b.header.version = Some(VersionDef { producer: 1, min_consumer: 2, bad_consumers: vec![] })
                }),
                "reader of version >= 2",
            ),
            (
                Box::new(|b| {
                    b.header.version = Some(VersionDef { producer: 1, min_consumer: 0, bad_consumers: vec![1] })
                }),
                "bad_consumers",
            ),
            (
                Box::new(|b| {
                    b.header.version = Some(VersionDef { producer: -1, min_consumer: 0, bad_consumers: vec![] })
                }),
                "producer version -1",
            ),
            (Box::new(|b| b.header.endianness = 5), "unknown endianness 5"),
            (Box::new(|b| b.header.num_shards = 0), "num_shards = 0"),
            (Box::new(|b| b.header.num_shards = 7), "7 shard(s), 1 were given"),
            (
                Box::new(|b| {
                    b.raw_entries.insert(vec![], vec![0x08]);
                }),
                "cannot decode the bundle header",
            ),
        ];
        for (f, msg) in cases {
            let (mut b, _) = sample(1, false);
            f(&mut b);
            let e = err_of(&b);
            assert!(e.contains(msg), "{e:?} should contain {msg:?}");
        }
        // No header at all.
        let mut b = BundleBuilder::new(1);
        b.add_f32("x", &[1], &[1.0]);
        let entries = [(b"x".to_vec(), b.entries[b"x".as_slice()].clone())];
        use prost::Message;
        let index = TableBuilder::default()
            .build(&entries.iter().map(|(k, v)| (k.clone(), v.encode_to_vec())).collect::<Vec<_>>());
        let e = Bundle::from_bytes("m", &index, b.shards.clone(), OpenOptions::default()).unwrap_err().to_string();
        assert_has(&e, &["m.index", "no bundle header"]);
        let index = TableBuilder::default().build(&[]);
        let e = Bundle::from_bytes("m", &index, vec![], OpenOptions::default()).unwrap_err().to_string();
        assert_has(&e, &["m.index", "empty"]);
    }

    #[test]
    fn partition_errors() {
        let full = |ext: &[(i64, Option<i64>)]| TensorSliceProto {
            extent: ext.iter().map(|&(start, length)| Extent { start, length }).collect(),
        };
        // Missing slice entry.
        let (mut b, _) = sample(1, false);
        b.entries.remove(&encode_tensor_name_slice(b"part", &[(7, 3), (0, 4)]));
        assert_has(&err_of(&b), &["'part'", "slice [7:10, 0:4]", "missing from the index"]);
        // Gap: drop a slice from the list.
        let (mut b, _) = sample(1, false);
        b.entry_mut("part").slices.pop();
        assert_has(&err_of(&b), &["'part'", "cover 28 of the 40 elements"]);
        // Overlap: duplicate slice.
        let (mut b, _) = sample(1, false);
        let s = b.entry_mut("part").slices[0].clone();
        b.entry_mut("part").slices.push(s);
        assert_has(&err_of(&b), &["'part'", "overlap"]);
        // Out of range and rank mismatch.
        let (mut b, _) = sample(1, false);
        b.entry_mut("part").slices[2] = full(&[(7, Some(4)), (0, Some(4))]);
        assert_has(&err_of(&b), &["'part'", "outside the dimension size 10"]);
        let (mut b, _) = sample(1, false);
        b.entry_mut("part").slices[2] = full(&[(7, Some(3))]);
        assert_has(&err_of(&b), &["'part'", "rank 2"]);
        // Slice entry with a different dtype / size.
        let (mut b, _) = sample(1, false);
        b.entries.get_mut(&encode_tensor_name_slice(b"part", &[(4, 3), (0, 4)])).unwrap().dtype = 2;
        assert_has(&err_of(&b), &["'part[4:7, 0:4]'", "dtype float64", "float32"]);
        let (mut b, _) = sample(1, false);
        b.entries.get_mut(&encode_tensor_name_slice(b"part", &[(4, 3), (0, 4)])).unwrap().size = 4;
        assert_has(&err_of(&b), &["'part[4:7, 0:4]'", "entry size 4 bytes disagrees"]);
        let (mut b, _) = sample(1, false);
        b.entries.get_mut(&encode_tensor_name_slice(b"part", &[(4, 3), (0, 4)])).unwrap().shape =
            Some(crate::source::proto::TensorShapeProto::from_dims(&[12]));
        assert_has(&err_of(&b), &["'part[4:7, 0:4]'", "shape [12] but the slice spans [3, 4]"]);
    }

    #[test]
    fn partitioned_strings() {
        let mut b = BundleBuilder::new(1);
        let (s0, c0) = encode_string_tensor(&[b"c", b"d"]);
        let (s1, c1) = encode_string_tensor(&[b"a", b"b"]);
        let mut e0 = b.put_bytes(0, 7, &[2], &s0);
        e0.crc32c = c0;
        let mut e1 = b.put_bytes(0, 7, &[2], &s1);
        e1.crc32c = c1;
        b.entries.insert(encode_tensor_name_slice(b"v", &[(2, 2)]), e0);
        b.entries.insert(encode_tensor_name_slice(b"v", &[(0, 2)]), e1);
        b.entries.insert(
            b"v".to_vec(),
            BundleEntryProto {
                dtype: 7,
                shape: Some(crate::source::proto::TensorShapeProto::from_dims(&[4])),
                slices: vec![
                    TensorSliceProto { extent: vec![Extent { start: 2, length: Some(2) }] },
                    TensorSliceProto { extent: vec![Extent { start: 0, length: Some(2) }] },
                ],
                ..Default::default()
            },
        );
        let bundle = open_mem(&b).unwrap();
        assert_eq!(bundle.read_strings("v").unwrap(), [b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    }

    // ---------------------------------------------------------------- fuzzing

    /// Opens and reads everything; must never panic.
    pub(crate) fn exercise(index: &[u8], shards: Vec<Vec<u8>>) -> usize {
        let Ok(bundle) = Bundle::from_bytes("f/model.ckpt", index, shards, OpenOptions::default()) else { return 0 };
        let mut ok = 0;
        for t in bundle.tensors() {
            if t.dtype == DType::String {
                ok += bundle.read_strings(&t.name).is_ok() as usize;
            } else if let Ok(v) = bundle.read(&t.name) {
                assert_eq!(Some(v.len()), t.nbytes());
                ok += 1;
            }
        }
        for u in bundle.unsupported() {
            assert!(bundle.read(&u.name).is_err());
        }
        ok
    }

    /// One fuzz input: how to derive an (index, shards) pair.
    #[derive(Debug, Clone)]
    pub(crate) enum FuzzCase {
        /// Arbitrary index bytes, optionally with the magic pasted at the end.
        Bytes(Vec<u8>, bool),
        /// Byte mutations of a valid index (CRC left broken or recomputed), then data mutations.
        Mutate {
            shards: usize,
            block_size: usize,
            snappy: bool,
            fix_crc: bool,
            index_muts: Vec<(usize, u8)>,
            data_muts: Vec<(usize, u8)>,
            cut: Option<usize>,
        },
        /// Structural edits of one entry's proto fields.
        Edit { shards: usize, entry: usize, field: u8, value: i64 },
    }

    pub(crate) fn fuzz_strategy() -> impl Strategy<Value = FuzzCase> {
        let muts = || proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6);
        prop_oneof![
            (proptest::collection::vec(any::<u8>(), 0..400), any::<bool>()).prop_map(|(b, m)| FuzzCase::Bytes(b, m)),
            (
                1usize..4,
                32usize..600,
                any::<bool>(),
                any::<bool>(),
                muts(),
                muts(),
                proptest::option::of(any::<usize>())
            )
                .prop_map(|(shards, block_size, snappy, fix_crc, index_muts, data_muts, cut)| {
                    FuzzCase::Mutate { shards, block_size, snappy, fix_crc, index_muts, data_muts, cut }
                }),
            (
                1usize..3,
                any::<usize>(),
                0u8..12,
                prop_oneof![
                    Just(0i64),
                    Just(1),
                    Just(-1),
                    Just(2),
                    Just(4),
                    Just(7),
                    Just(24),
                    Just(i64::MAX),
                    Just(i64::MIN),
                    Just(1 << 32),
                    any::<i64>(),
                    0i64..64
                ]
            )
                .prop_map(|(shards, entry, field, value)| FuzzCase::Edit { shards, entry, field, value }),
        ]
    }

    pub(crate) fn run_case(case: &FuzzCase) -> usize {
        match case {
            FuzzCase::Bytes(bytes, magic) => {
                let mut bytes = bytes.clone();
                if *magic && bytes.len() >= 8 {
                    let n = bytes.len();
                    bytes[n - 8..].copy_from_slice(&crate::source::sstable::MAGIC.to_le_bytes());
                }
                exercise(&bytes, vec![vec![0u8; 64]])
            }
            FuzzCase::Mutate { shards, block_size, snappy, fix_crc, index_muts, data_muts, cut } => {
                let (mut b, _) = sample(*shards, false);
                let muts = index_muts.clone();
                b.table = TableBuilder {
                    block_size: *block_size,
                    restart_interval: 1 + block_size % 16,
                    compression: if *snappy { Compression::Snappy } else { Compression::None },
                    block_hook: if *fix_crc {
                        Some(Arc::new(move |_, blk: &mut Vec<u8>| {
                            for (at, v) in &muts {
                                if !blk.is_empty() {
                                    let n = blk.len();
                                    blk[at % n] = *v;
                                }
                            }
                        }))
                    } else {
                        None
                    },
                    ..Default::default()
                };
                let mut index = b.index_bytes();
                if !fix_crc {
                    for (at, v) in index_muts {
                        let n = index.len();
                        index[at % n] = *v;
                    }
                }
                if let Some(c) = cut {
                    index.truncate(c % (index.len() + 1));
                }
                let mut shards = b.shards.clone();
                for (at, v) in data_muts {
                    let s = at % shards.len();
                    if !shards[s].is_empty() {
                        let n = shards[s].len();
                        shards[s][at % n] = *v;
                    }
                }
                exercise(&index, shards)
            }
            FuzzCase::Edit { shards, entry, field, value } => {
                let (mut b, _) = sample(*shards, false);
                let keys: Vec<Vec<u8>> = b.entries.keys().cloned().collect();
                let key = &keys[entry % keys.len()];
                let e = b.entries.get_mut(key).unwrap();
                let v = *value;
                match field {
                    0 => e.dtype = v as i32,
                    1 => e.shard_id = v as i32,
                    2 => e.offset = v,
                    3 => e.size = v,
                    4 => e.crc32c = v as u32,
                    5 => e.shape = Some(crate::source::proto::TensorShapeProto::from_dims(&[v, 2])),
                    6 => e.shape = None,
                    7 => e
                        .slices
                        .push(TensorSliceProto { extent: vec![Extent { start: v, length: Some(v.wrapping_abs()) }] }),
                    8 => {
                        if let Some(s) = e.slices.first_mut() {
                            if let Some(x) = s.extent.first_mut() {
                                x.length = if v < 0 { None } else { Some(v) };
                            }
                        }
                    }
                    9 => b.header.num_shards = v as i32,
                    10 => b.header.endianness = v as i32,
                    _ => {
                        let shard = (v as usize) % b.shards.len();
                        let n = b.shards[shard].len();
                        b.shards[shard].truncate(n.saturating_sub(1 + (v as usize) % 8));
                    }
                }
                exercise(&b.index_bytes(), b.shards.clone())
            }
        }
    }

    fn fuzz_cases() -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(3000)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

        /// No input may panic the index parser or the bundle reader.
        #[test]
        fn fuzz_bundle_open_and_read(case in fuzz_strategy()) {
            run_case(&case);
        }
    }

    /// The long fuzz run: `cargo test --release --lib source::bundle::tests::fuzz_million -- --ignored --nocapture`
    /// (case count from FUZZ_CASES, default 1,000,000). Prints how many inputs ran.
    #[test]
    #[ignore]
    fn fuzz_million() {
        use proptest::test_runner::{Config, TestRunner};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cases: u32 = std::env::var("FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
        let ran = AtomicUsize::new(0);
        let readable = AtomicUsize::new(0);
        let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
        let started = std::time::Instant::now();
        runner
            .run(&fuzz_strategy(), |case| {
                ran.fetch_add(1, Ordering::Relaxed);
                readable.fetch_add(run_case(&case), Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        let v1 = crate::source::tf_v1::tests::fuzz_many(cases as usize / 10);
        println!(
            "fuzz_million: {} bundle inputs ran without panic ({} tensors read successfully), plus {v1} V1 inputs, in {:.1?}",
            ran.load(Ordering::Relaxed),
            readable.load(Ordering::Relaxed),
            started.elapsed()
        );
    }
}
