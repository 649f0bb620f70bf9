//! Reader for the LevelDB-style SSTable container that TensorFlow uses for checkpoint `.index`
//! files (V2) and for whole V1 checkpoints.
//!
//! Layout: data blocks, a metaindex block, an index block, then a 48-byte footer. Every block is
//! followed by a 5-byte trailer (compression type + masked CRC32C). Blocks hold prefix-compressed
//! key/value entries followed by a restart array. See docs/checkpoint-formats.md §1.1.
//!
//! Everything read from the file is treated as untrusted: offsets and lengths are checked before
//! use, decompressed sizes are bounded, and all failures become [`Error::Input`] naming the file
//! and the block.

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{Error, InputFault, Result};

/// Footer magic, stored as two little-endian u32 words (low word first).
pub const MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// Encoded footer length: two block handles padded to 40 bytes, then the 8-byte magic.
pub const FOOTER_LEN: usize = 48;
/// Bytes after every block: compression type and masked CRC32C.
pub const BLOCK_TRAILER_LEN: usize = 5;

const MASK_DELTA: u32 = 0xa282_ead8;

/// Standard CRC-32C (Castagnoli).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continue a CRC-32C computation over more bytes.
pub fn crc32c_extend(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// TensorFlow/LevelDB checksum masking: rotate right by 15 and add a constant.
pub fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Inverse of [`mask_crc`].
pub fn unmask_crc(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// Whether `bytes` ends with the SSTable footer magic (cheap format sniffing).
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.len() >= FOOTER_LEN && bytes[bytes.len() - 8..] == MAGIC.to_le_bytes()
}

/// Decodes a LevelDB/protobuf varint of at most 64 bits at `*pos`, advancing `pos`.
/// `None` if the input ends early or the varint is longer than 10 bytes / overflows.
pub fn read_varint64(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut result: u64 = 0;
    for i in 0..10u32 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None; // would overflow 64 bits
        }
        result |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Some(result);
        }
    }
    None
}

/// Decodes a varint that must fit in 32 bits.
pub fn read_varint32(buf: &[u8], pos: &mut usize) -> Option<u32> {
    let mut result: u32 = 0;
    for i in 0..5u32 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        if i == 4 && b > 0x0f {
            return None;
        }
        result |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(result);
        }
    }
    None
}

fn read_u32le(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Renders a key for error messages: printable ASCII as is, other bytes as `\xNN`.
pub fn display_key(key: &[u8]) -> String {
    let mut s = String::new();
    for &b in key.iter().take(200) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    if key.len() > 200 {
        s.push_str("...");
    }
    s
}

/// Position and stored size (without trailer) of a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHandle {
    pub offset: u64,
    pub size: u64,
}

impl BlockHandle {
    pub fn decode(buf: &[u8], pos: &mut usize) -> Option<BlockHandle> {
        let offset = read_varint64(buf, pos)?;
        let size = read_varint64(buf, pos)?;
        Some(BlockHandle { offset, size })
    }
}

/// The two handles stored in the footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub metaindex: BlockHandle,
    pub index: BlockHandle,
}

/// Where a value lives: which data block, and the byte range inside that block's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueLoc {
    pub block: usize,
    pub range: Range<usize>,
}

/// Contents of one block after the trailer check and decompression.
#[derive(Debug)]
pub struct Block<'a> {
    pub contents: Cow<'a, [u8]>,
    /// Absolute file offset of `contents[0]` when the block was stored uncompressed.
    pub file_offset: Option<usize>,
}

/// An opened SSTable: the footer and the parsed index block. The file bytes are passed to each
/// method, so the owner can keep them in an mmap without self-references.
#[derive(Debug, Clone)]
pub struct Table {
    path: PathBuf,
    file_len: usize,
    /// Index entries: separator key (>= every key of the block) and the data block's handle.
    index: Vec<(Vec<u8>, BlockHandle)>,
}

impl Table {
    /// Parses the footer and the index block of `file` (the whole SSTable). `path` is only used
    /// in error messages; `kind` describes what the file should be ("TensorFlow checkpoint index").
    pub fn open(path: &Path, file: &[u8], kind: &str) -> Result<Table> {
        let footer = read_footer(path, file, kind)?;
        let mut table = Table { path: path.to_path_buf(), file_len: file.len(), index: Vec::new() };
        let index_block = table.read_block_at(file, footer.index, "index block")?;
        let mut prev: Option<Vec<u8>> = None;
        let mut bad = None;
        for_each_entry(&index_block.contents, |key, value| {
            let mut pos = 0;
            let handle = match BlockHandle::decode(&index_block.contents[value.clone()], &mut pos) {
                Some(h) => h,
                None => {
                    bad = Some(format!("index entry for key '{}' holds no valid block handle", display_key(key)));
                    return Err(());
                }
            };
            if let Some(p) = &prev {
                if key <= p.as_slice() {
                    bad = Some(format!("index keys out of order: '{}' follows '{}'", display_key(key), display_key(p)));
                    return Err(());
                }
            }
            prev = Some(key.to_vec());
            table.index.push((key.to_vec(), handle));
            Ok(())
        })
        .map_err(|e| match (e, bad.take()) {
            (_, Some(msg)) => {
                Error::input(path, format!("corrupt index block (offset {}): {msg}", footer.index.offset))
            }
            (EntryError::Format(msg), None) => Error::input(
                path,
                format!("corrupt index block (offset {}, size {}): {msg}", footer.index.offset, footer.index.size),
            ),
            (EntryError::Callback, None) => Error::input(path, "corrupt index block"),
        })?;
        Ok(table)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of data blocks.
    pub fn num_blocks(&self) -> usize {
        self.index.len()
    }

    fn block_desc(&self, i: usize) -> String {
        match self.index.get(i) {
            Some((_, h)) => format!("data block #{i} (offset {}, size {})", h.offset, h.size),
            None => format!("data block #{i}"),
        }
    }

    /// Reads data block `i`: bounds check, trailer CRC check, decompression.
    pub fn read_block<'f>(&self, file: &'f [u8], i: usize) -> Result<Block<'f>> {
        let (_, handle) = self
            .index
            .get(i)
            .ok_or_else(|| Error::input(&self.path, format!("no data block #{i} (table has {})", self.index.len())))?;
        self.read_block_at(file, *handle, &format!("data block #{i}"))
    }

    fn read_block_at<'f>(&self, file: &'f [u8], handle: BlockHandle, what: &str) -> Result<Block<'f>> {
        let err = |msg: String| {
            Error::input(
                &self.path,
                format!("corrupt or truncated table: {what} (offset {}, size {}): {msg}", handle.offset, handle.size),
            )
        };
        if file.len() != self.file_len {
            return Err(err(format!("file changed size from {} to {} bytes", self.file_len, file.len())));
        }
        // Blocks live before the footer.
        let limit = file.len().saturating_sub(FOOTER_LEN) as u64;
        handle
            .offset
            .checked_add(handle.size)
            .and_then(|e| e.checked_add(BLOCK_TRAILER_LEN as u64))
            .filter(|&e| e <= limit)
            .ok_or_else(|| {
                err(format!(
                    "the block and its {BLOCK_TRAILER_LEN}-byte trailer extend past the end of the block area \
                     ({limit} bytes before the footer; file is {} bytes)",
                    file.len()
                ))
                .because(InputFault::Truncated)
            })?;
        // `end <= limit <= file.len()`, so these conversions and slices are in bounds.
        let start = handle.offset as usize;
        let data_end = start + handle.size as usize;
        let stored = &file[start..data_end];
        let trailer = &file[data_end..data_end + BLOCK_TRAILER_LEN];
        let ctype = trailer[0];
        let want = unmask_crc(u32::from_le_bytes([trailer[1], trailer[2], trailer[3], trailer[4]]));
        let got = crc32c_extend(crc32c(stored), &[ctype]);
        if want != got {
            return Err(err(format!("block checksum mismatch (stored {want:#010x}, computed {got:#010x})")));
        }
        match ctype {
            0 => Ok(Block { contents: Cow::Borrowed(stored), file_offset: Some(start) }),
            1 => {
                let n = snap::raw::decompress_len(stored).map_err(|e| err(format!("bad snappy block header: {e}")))?;
                // Snappy expands at most ~21x (a 3-byte copy produces 64 bytes); anything more is garbage.
                let bound = stored.len().saturating_mul(22).saturating_add(64);
                if n > bound {
                    return Err(err(format!(
                        "snappy block claims {n} uncompressed bytes from {} stored bytes",
                        stored.len()
                    )));
                }
                let out = snap::raw::Decoder::new()
                    .decompress_vec(stored)
                    .map_err(|e| err(format!("snappy decompression failed: {e}")))?;
                Ok(Block { contents: Cow::Owned(out), file_offset: None })
            }
            t => Err(err(format!("unsupported block compression type {t} (expected 0 = none or 1 = snappy)"))),
        }
    }

    /// Calls `f(key, value, location)` for every entry of every data block, in key order.
    /// Checks that keys are strictly increasing across the whole table.
    pub fn for_each(&self, file: &[u8], mut f: impl FnMut(&[u8], &[u8], ValueLoc) -> Result<()>) -> Result<()> {
        let mut prev: Option<Vec<u8>> = None;
        for i in 0..self.index.len() {
            let block = self.read_block(file, i)?;
            let sep = &self.index[i].0;
            let mut user_err = None;
            let mut fmt_err = None;
            let res = for_each_entry(&block.contents, |key, range| {
                if let Some(p) = &prev {
                    if key <= p.as_slice() {
                        fmt_err =
                            Some(format!("keys out of order: '{}' follows '{}'", display_key(key), display_key(p)));
                        return Err(());
                    }
                }
                if key > sep.as_slice() {
                    fmt_err = Some(format!(
                        "key '{}' is beyond the block's index separator '{}'",
                        display_key(key),
                        display_key(sep)
                    ));
                    return Err(());
                }
                match prev.as_mut() {
                    Some(p) => {
                        p.clear();
                        p.extend_from_slice(key);
                    }
                    None => prev = Some(key.to_vec()),
                }
                let value = &block.contents[range.clone()];
                if let Err(e) = f(key, value, ValueLoc { block: i, range }) {
                    user_err = Some(e);
                    return Err(());
                }
                Ok(())
            });
            if let Err(e) = res {
                if let Some(e) = user_err {
                    return Err(e);
                }
                let msg = match (e, fmt_err) {
                    (_, Some(m)) => m,
                    (EntryError::Format(m), None) => m,
                    (EntryError::Callback, None) => "bad entry".to_string(),
                };
                return Err(Error::input(
                    &self.path,
                    format!("corrupt or truncated table: {}: {msg}", self.block_desc(i)),
                ));
            }
        }
        Ok(())
    }

    /// All entries as owned pairs, in key order.
    pub fn entries(&self, file: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each(file, |k, v, _| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// The value at `loc` (as produced by [`Table::for_each`]). Borrowed from `file` for
    /// uncompressed blocks (no re-check of the block CRC then), owned for compressed ones.
    pub fn value_at<'f>(&self, file: &'f [u8], loc: &ValueLoc) -> Result<Cow<'f, [u8]>> {
        if file.len() != self.file_len {
            return Err(Error::input(&self.path, "file changed size since it was opened"));
        }
        let (_, handle) = self
            .index
            .get(loc.block)
            .ok_or_else(|| Error::input(&self.path, format!("no data block #{}", loc.block)))?;
        let bad =
            || Error::input(&self.path, format!("value range {:?} outside {}", loc.range, self.block_desc(loc.block)));
        if loc.range.start > loc.range.end {
            return Err(bad());
        }
        // Fast path: uncompressed block, slice the file directly.
        let hs = handle.offset as usize;
        let he = handle.offset.checked_add(handle.size).ok_or_else(bad)?;
        let trailer_type = usize::try_from(he).ok().and_then(|e| file.get(e)).copied();
        if trailer_type == Some(0) && (loc.range.end as u64) <= handle.size {
            let s = hs.checked_add(loc.range.start).ok_or_else(bad)?;
            let e = hs.checked_add(loc.range.end).ok_or_else(bad)?;
            return file.get(s..e).map(Cow::Borrowed).ok_or_else(bad);
        }
        let block = self.read_block(file, loc.block)?;
        match block.contents {
            Cow::Borrowed(b) => b.get(loc.range.clone()).map(Cow::Borrowed).ok_or_else(bad),
            Cow::Owned(v) => v.get(loc.range.clone()).map(|s| Cow::Owned(s.to_vec())).ok_or_else(bad),
        }
    }

    /// Looks up one key: finds the block via the index separators and scans it.
    pub fn get<'f>(&self, file: &'f [u8], key: &[u8]) -> Result<Option<Cow<'f, [u8]>>> {
        let i = self.index.partition_point(|(sep, _)| sep.as_slice() < key);
        if i >= self.index.len() {
            return Ok(None);
        }
        let block = self.read_block(file, i)?;
        let mut found = None;
        let res = for_each_entry(&block.contents, |k, range| {
            if k == key {
                found = Some(range);
                return Err(());
            }
            Ok(())
        });
        match (res, found) {
            (_, Some(range)) => Ok(Some(match block.contents {
                Cow::Borrowed(b) => Cow::Borrowed(&b[range]),
                Cow::Owned(v) => Cow::Owned(v[range].to_vec()),
            })),
            (Err(EntryError::Format(m)), None) => {
                Err(Error::input(&self.path, format!("corrupt or truncated table: {}: {m}", self.block_desc(i))))
            }
            _ => Ok(None),
        }
    }
}

/// Reads and checks the footer.
pub fn read_footer(path: &Path, file: &[u8], kind: &str) -> Result<Footer> {
    if file.len() < FOOTER_LEN {
        let mut msg = format!(
            "not a {kind}: file is {} bytes, shorter than the {FOOTER_LEN}-byte SSTable footer (truncated?)",
            file.len()
        );
        add_state_file_hint(&mut msg, file);
        return Err(Error::input(path, msg).because(InputFault::Truncated));
    }
    let footer = &file[file.len() - FOOTER_LEN..];
    let magic = &footer[40..48];
    if magic != MAGIC.to_le_bytes() {
        let mut msg = format!(
            "not a {kind} (bad SSTable magic: expected {}, found {} in the last 8 bytes; truncated or not an SSTable)",
            hex(&MAGIC.to_le_bytes()),
            hex(magic)
        );
        add_state_file_hint(&mut msg, file);
        return Err(Error::input(path, msg));
    }
    let mut pos = 0;
    let bad = |what: &str| Error::input(path, format!("corrupt SSTable footer: cannot decode the {what} block handle"));
    let metaindex = BlockHandle::decode(footer, &mut pos).ok_or_else(|| bad("metaindex"))?;
    let index = BlockHandle::decode(footer, &mut pos).ok_or_else(|| bad("index"))?;
    if pos > 40 {
        return Err(Error::input(path, "corrupt SSTable footer: block handles overlap the magic number"));
    }
    Ok(Footer { metaindex, index })
}

/// If `file` looks like the text `checkpoint` state file, explain what to pass instead.
fn add_state_file_hint(msg: &mut String, file: &[u8]) {
    let head = &file[..file.len().min(4096)];
    let text = String::from_utf8_lossy(head);
    if text.trim_start().starts_with("model_checkpoint_path") || text.contains("all_model_checkpoint_paths") {
        msg.push_str(
            "; this looks like a `checkpoint` state file (text) – pass the directory containing it or the \
             checkpoint prefix (e.g. path/model.ckpt) instead",
        );
    }
}

enum EntryError {
    /// The block is malformed; message says where.
    Format(String),
    /// The callback asked to stop.
    Callback,
}

/// Walks the entries of one block, reconstructing prefix-compressed keys. Calls `f(key, value_range)`
/// where `value_range` indexes into `block`. Validates the restart array.
fn for_each_entry(
    block: &[u8],
    mut f: impl FnMut(&[u8], Range<usize>) -> std::result::Result<(), ()>,
) -> std::result::Result<(), EntryError> {
    let len = block.len();
    if len < 4 {
        return Err(EntryError::Format(format!("block of {len} bytes is too short for a restart count")));
    }
    let num_restarts = read_u32le(block, len - 4).unwrap_or(0) as usize;
    let max_restarts = (len - 4) / 4;
    if num_restarts > max_restarts {
        return Err(EntryError::Format(format!(
            "restart count {num_restarts} does not fit in a {len}-byte block (at most {max_restarts})"
        )));
    }
    let entries_end = len - 4 - 4 * num_restarts;
    for r in 0..num_restarts {
        let off = read_u32le(block, entries_end + 4 * r).unwrap_or(u32::MAX) as usize;
        if off >= entries_end && !(off == 0 && entries_end == 0) {
            return Err(EntryError::Format(format!(
                "restart point #{r} at offset {off} is outside the entry area (0..{entries_end})"
            )));
        }
    }
    let mut key: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    while pos < entries_end {
        let at = pos;
        let bad = |what: &str| EntryError::Format(format!("entry at byte {at} of the block: {what}"));
        let area = &block[..entries_end];
        let shared = read_varint32(area, &mut pos).ok_or_else(|| bad("truncated header"))? as usize;
        let non_shared = read_varint32(area, &mut pos).ok_or_else(|| bad("truncated header"))? as usize;
        let value_len = read_varint32(area, &mut pos).ok_or_else(|| bad("truncated header"))? as usize;
        if shared > key.len() {
            return Err(bad(&format!("shares {shared} bytes with a previous key of {} bytes", key.len())));
        }
        let key_end = pos
            .checked_add(non_shared)
            .filter(|&e| e <= entries_end)
            .ok_or_else(|| bad(&format!("key of {non_shared} bytes runs past the entry area ({entries_end} bytes)")))?;
        let value_end = key_end.checked_add(value_len).filter(|&e| e <= entries_end).ok_or_else(|| {
            bad(&format!("value of {value_len} bytes runs past the entry area ({entries_end} bytes)"))
        })?;
        key.truncate(shared);
        key.extend_from_slice(&block[pos..key_end]);
        if f(&key, key_end..value_end).is_err() {
            return Err(EntryError::Callback);
        }
        pos = value_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::testing::{Compression, TableBuilder};
    use proptest::prelude::*;

    fn p() -> &'static Path {
        Path::new("t.index")
    }

    #[test]
    fn crc_check_value_and_mask() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        for c in [0u32, 1, 0xE306_9283, u32::MAX, 0x1234_5678] {
            assert_eq!(unmask_crc(mask_crc(c)), c);
        }
        assert_eq!(mask_crc(0), 0xa282_ead8);
        // extend == crc of concatenation
        assert_eq!(crc32c_extend(crc32c(b"1234"), b"56789"), 0xE306_9283);
    }

    #[test]
    fn varints() {
        let mut pos = 0;
        assert_eq!(read_varint64(&[0xe8, 0x01], &mut pos), Some(232));
        assert_eq!(pos, 2);
        let mut pos = 0;
        assert_eq!(read_varint64(&[0xff; 10], &mut pos), None);
        let mut pos = 0;
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_varint64(&max, &mut pos), Some(u64::MAX));
        let mut pos = 0;
        assert_eq!(read_varint32(&[0xff, 0xff, 0xff, 0xff, 0x0f], &mut pos), Some(u32::MAX));
        let mut pos = 0;
        assert_eq!(read_varint32(&[0xff, 0xff, 0xff, 0xff, 0x1f], &mut pos), None);
        let mut pos = 0;
        assert_eq!(read_varint32(&[0x80], &mut pos), None);
    }

    /// The worked example of the doc: index block holding one entry `"t"` -> (0, 232), and the footer.
    #[test]
    fn doc_index_block_and_footer_bytes() {
        let tb = TableBuilder { restart_interval: 1, ..Default::default() };
        let block = tb.build_block(&[(b"t".to_vec(), vec![0x00, 0xe8, 0x01])]);
        assert_eq!(block, [0x00, 0x01, 0x03, b't', 0x00, 0xe8, 0x01, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(block.len(), 15);
        let mut footer = vec![0xed, 0x01, 0x08, 0xfa, 0x01, 0x0f];
        footer.resize(40, 0);
        footer.extend_from_slice(&[0x57, 0xfb, 0x80, 0x8b, 0x24, 0x75, 0x47, 0xdb]);
        let mut file = vec![0u8; 318 - 48];
        file.extend_from_slice(&footer);
        let f = read_footer(p(), &file, "x").unwrap();
        assert_eq!(f.metaindex, BlockHandle { offset: 237, size: 8 });
        assert_eq!(f.index, BlockHandle { offset: 250, size: 15 });
    }

    fn sample(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let k = format!("bert/encoder/layer_{:03}/attention/kernel{}", i / 3, i % 3).into_bytes();
                let v = vec![(i % 251) as u8; i % 37];
                (k, v)
            })
            .collect()
    }

    #[test]
    fn round_trip_multi_block_restarts_snappy() {
        let mut entries = sample(500);
        entries.insert(0, (Vec::new(), b"header".to_vec()));
        entries.insert(1, (b"\x00part\x00\x01".to_vec(), vec![1, 2, 3]));
        entries.sort();
        for comp in [Compression::None, Compression::Snappy] {
            for (bs, ri) in [(64usize, 1usize), (256, 4), (1024, 16), (1 << 20, 16)] {
                let tb = TableBuilder { block_size: bs, restart_interval: ri, compression: comp, ..Default::default() };
                let file = tb.build(&entries);
                let t = Table::open(p(), &file, "test table").unwrap();
                if bs == 64 {
                    assert!(t.num_blocks() > 10);
                }
                assert_eq!(t.entries(&file).unwrap(), entries);
                for (k, v) in entries.iter().step_by(7) {
                    assert_eq!(t.get(&file, k).unwrap().as_deref(), Some(v.as_slice()));
                }
                assert_eq!(t.get(&file, b"zzz").unwrap(), None);
                assert_eq!(t.get(&file, b"bert/encoder/layer_000/attention/kernel0x").unwrap(), None);
                let mut locs = Vec::new();
                t.for_each(&file, |_, v, loc| {
                    locs.push((v.to_vec(), loc));
                    Ok(())
                })
                .unwrap();
                for (v, loc) in locs {
                    assert_eq!(&*t.value_at(&file, &loc).unwrap(), v.as_slice());
                }
            }
        }
    }

    #[test]
    fn snappy_blocks_really_compressed() {
        let entries: Vec<_> = (0..50).map(|i| (format!("k{i:03}").into_bytes(), vec![7u8; 500])).collect();
        let tb = TableBuilder { compression: Compression::Snappy, ..Default::default() };
        let file = tb.build(&entries);
        assert!(file.len() < 50 * 500 / 4, "{}", file.len());
        let t = Table::open(p(), &file, "t").unwrap();
        assert_eq!(t.entries(&file).unwrap(), entries);
    }

    #[test]
    fn empty_table() {
        let file = TableBuilder::default().build(&[]);
        let t = Table::open(p(), &file, "t").unwrap();
        assert!(t.entries(&file).unwrap().is_empty());
        assert_eq!(t.get(&file, b"").unwrap(), None);
    }

    #[test]
    fn errors_bad_magic_short_and_state_file() {
        let e = Table::open(p(), b"short", "TensorFlow checkpoint index").unwrap_err().to_string();
        assert!(e.contains("t.index") && e.contains("shorter"), "{e}");
        let mut file = TableBuilder::default().build(&sample(3));
        let n = file.len();
        file[n - 1] ^= 1;
        let e = Table::open(p(), &file, "TensorFlow checkpoint index").unwrap_err().to_string();
        assert!(e.contains("not a TensorFlow checkpoint index (bad SSTable magic"), "{e}");
        let mut text =
            b"model_checkpoint_path: \"model.ckpt-1\"\nall_model_checkpoint_paths: \"model.ckpt-1\"\n".to_vec();
        text.resize(100, b' ');
        let e = Table::open(p(), &text, "TensorFlow checkpoint index").unwrap_err().to_string();
        assert!(e.contains("bad SSTable magic") && e.contains("pass the directory"), "{e}");
    }

    #[test]
    fn errors_block_crc_and_truncation() {
        let entries = sample(200);
        let tb = TableBuilder { block_size: 256, ..Default::default() };
        let file = tb.build(&entries);
        // Flip a byte inside the first data block.
        let mut bad = file.clone();
        bad[10] ^= 0x40;
        let t = Table::open(p(), &bad, "t").unwrap();
        let e = t.entries(&bad).unwrap_err().to_string();
        assert!(e.contains("t.index") && e.contains("data block #0") && e.contains("checksum mismatch"), "{e}");
        // Truncate in the middle: the magic is gone.
        let e = Table::open(p(), &file[..file.len() / 2], "t").unwrap_err().to_string();
        assert!(e.contains("bad SSTable magic"), "{e}");
        // Truncate and re-attach the footer: the index block handle points past the end.
        let mut cut = file[..file.len() / 2].to_vec();
        cut.extend_from_slice(&file[file.len() - FOOTER_LEN..]);
        let e = Table::open(p(), &cut, "t").unwrap_err().to_string();
        assert!(e.contains("index block") && e.contains("extend past"), "{e}");
    }

    #[test]
    fn errors_garbled_block_contents_with_valid_crc() {
        let entries = sample(40);
        // shared > previous key length
        let tb = TableBuilder {
            block_hook: Some(std::sync::Arc::new(|i: usize, b: &mut Vec<u8>| {
                if i == 0 {
                    b[0] = 50;
                }
            })),
            ..Default::default()
        };
        let file = tb.build(&entries);
        let t = Table::open(p(), &file, "t").unwrap();
        let e = t.entries(&file).unwrap_err().to_string();
        assert!(e.contains("data block #0") && e.contains("entry at byte 0") && e.contains("shares 50"), "{e}");
        // restart count too large
        let tb = TableBuilder {
            block_hook: Some(std::sync::Arc::new(|_: usize, b: &mut Vec<u8>| {
                let n = b.len();
                b[n - 1] = 0x7f;
            })),
            ..Default::default()
        };
        let file = tb.build(&entries);
        let e = Table::open(p(), &file, "t").unwrap_err().to_string();
        assert!(e.contains("index block") && e.contains("restart count"), "{e}");
        // unknown compression type
        let tb = TableBuilder { compression: Compression::Raw(2), ..Default::default() };
        let file = tb.build(&entries);
        let t = Table::open(p(), &file, "t").unwrap();
        let e = t.entries(&file).unwrap_err().to_string();
        assert!(e.contains("data block #0") && e.contains("compression type 2"), "{e}");
    }

    #[test]
    fn errors_unsorted_keys() {
        let mut entries = sample(10);
        entries.swap(2, 3);
        let tb = TableBuilder { check_sorted: false, ..Default::default() };
        let file = tb.build(&entries);
        let t = Table::open(p(), &file, "t").unwrap();
        let e = t.entries(&file).unwrap_err().to_string();
        assert!(e.contains("out of order"), "{e}");
    }

    fn fuzz_cases() -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000)
    }

    /// Opening and fully iterating must never panic, whatever the bytes.
    pub(crate) fn parse_everything(file: &[u8]) {
        if let Ok(t) = Table::open(p(), file, "t") {
            let _ = t.entries(file);
            let _ = t.get(file, b"");
            let _ = t.get(file, b"a");
            for i in 0..t.num_blocks().min(64) {
                let _ = t.read_block(file, i);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn fuzz_arbitrary_bytes(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), with_magic in any::<bool>()) {
            if with_magic && bytes.len() >= 8 {
                let n = bytes.len();
                bytes[n - 8..].copy_from_slice(&MAGIC.to_le_bytes());
            }
            parse_everything(&bytes);
        }

        #[test]
        fn fuzz_mutated_table(
            seed in 0usize..1000,
            muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            fix_crc in any::<bool>(),
            snappy in any::<bool>(),
        ) {
            let entries = sample(20 + seed % 50);
            let comp = if snappy { Compression::Snappy } else { Compression::None };
            let muts2 = muts.clone();
            let tb = if fix_crc {
                // Mutate block contents before the trailer is computed, so the CRC passes.
                TableBuilder {
                    block_size: 128 + seed % 512,
                    restart_interval: 1 + seed % 16,
                    compression: comp,
                    block_hook: Some(std::sync::Arc::new(move |_i: usize, b: &mut Vec<u8>| {
                        for (at, v) in &muts2 {
                            if !b.is_empty() { let n = b.len(); b[at % n] = *v; }
                        }
                    })),
                    ..Default::default()
                }
            } else {
                TableBuilder { block_size: 128 + seed % 512, compression: comp, ..Default::default() }
            };
            let mut file = tb.build(&entries);
            if !fix_crc {
                for (at, v) in &muts { let n = file.len(); file[at % n] = *v; }
            }
            parse_everything(&file);
            // Also truncations.
            let cut = muts[0].0 % (file.len() + 1);
            parse_everything(&file[..cut]);
        }
    }
}
