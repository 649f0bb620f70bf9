//! Writers for small TensorFlow checkpoints, for tests (ours and other modules'): an SSTable
//! builder, a V2 bundle builder and a V1 tensor-slice builder. They follow the layout TF writes
//! (docs/checkpoint-formats.md §1–2) and expose knobs for producing unusual or corrupt files
//! (block size, restart interval, compression, hooks that mutate block contents before the
//! trailer CRC is computed, direct access to index entries).
//!
//! Not meant for production writing: everything is built in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;

use crate::source::ordered_code::encode_tensor_name_slice;
use crate::source::proto::*;
use crate::source::sstable::{crc32c, crc32c_extend, mask_crc, MAGIC};
use crate::source::DType;

/// One slice of a partitioned tensor: extents as (start, length) with length -1 = full
/// dimension, and the slice's little-endian bytes.
pub type SliceData = (Vec<(i64, i64)>, Vec<u8>);

/// How data blocks are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// Snappy raw format, always kept (TF only keeps it when it saves >= 12.5 %).
    Snappy,
    /// Stored uncompressed but labelled with this type byte.
    Raw(u8),
}

/// Hook called with (block number, block contents) before compression and CRC. Data blocks are
/// numbered from 0; the metaindex block is `usize::MAX - 1`, the index block `usize::MAX`.
pub type BlockHook = Arc<dyn Fn(usize, &mut Vec<u8>) + Send + Sync>;

/// Builds an SSTable like TF's `table::TableBuilder`.
#[derive(Clone)]
pub struct TableBuilder {
    pub block_size: usize,
    pub restart_interval: usize,
    pub compression: Compression,
    pub block_hook: Option<BlockHook>,
    /// Panic if keys are not strictly increasing (disable to write broken tables).
    pub check_sorted: bool,
}

impl Default for TableBuilder {
    fn default() -> Self {
        TableBuilder {
            block_size: 262_144,
            restart_interval: 16,
            compression: Compression::None,
            block_hook: None,
            check_sorted: true,
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn shortest_separator(start: &[u8], limit: &[u8]) -> Vec<u8> {
    let n = start.len().min(limit.len());
    let diff = start.iter().zip(limit).take_while(|(a, b)| a == b).count();
    if diff < n {
        let b = start[diff];
        if b < 0xff && b + 1 < limit[diff] {
            let mut s = start[..=diff].to_vec();
            s[diff] += 1;
            return s;
        }
    }
    start.to_vec()
}

fn short_successor(key: &[u8]) -> Vec<u8> {
    for (i, &b) in key.iter().enumerate() {
        if b != 0xff {
            let mut s = key[..=i].to_vec();
            s[i] += 1;
            return s;
        }
    }
    key.to_vec()
}

impl TableBuilder {
    /// Encodes one block (entries with prefix compression, restart array, restart count).
    pub fn build_block(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut restarts = vec![0u32];
        let mut prev: &[u8] = &[];
        let interval = self.restart_interval.max(1);
        for (i, (k, v)) in entries.iter().enumerate() {
            let shared = if i > 0 && i % interval == 0 {
                restarts.push(out.len() as u32);
                0
            } else {
                prev.iter().zip(k).take_while(|(a, b)| a == b).count()
            };
            put_varint(&mut out, shared as u64);
            put_varint(&mut out, (k.len() - shared) as u64);
            put_varint(&mut out, v.len() as u64);
            out.extend_from_slice(&k[shared..]);
            out.extend_from_slice(v);
            prev = k;
        }
        for r in &restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(restarts.len() as u32).to_le_bytes());
        out
    }

    fn write_block(&self, file: &mut Vec<u8>, number: usize, mut contents: Vec<u8>, compress: bool) -> (u64, u64) {
        if let Some(h) = &self.block_hook {
            h(number, &mut contents);
        }
        let (stored, ctype) = match (compress, self.compression) {
            (true, Compression::Snappy) => (snap::raw::Encoder::new().compress_vec(&contents).unwrap(), 1u8),
            (true, Compression::Raw(t)) => (contents, t),
            _ => (contents, 0u8),
        };
        let offset = file.len() as u64;
        file.extend_from_slice(&stored);
        file.push(ctype);
        let crc = mask_crc(crc32c_extend(crc32c(&stored), &[ctype]));
        file.extend_from_slice(&crc.to_le_bytes());
        (offset, stored.len() as u64)
    }

    /// Builds a whole table from sorted, unique keys.
    pub fn build(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        if self.check_sorted {
            for w in entries.windows(2) {
                assert!(w[0].0 < w[1].0, "TableBuilder: keys must be strictly increasing");
            }
        }
        let mut file = Vec::new();
        let mut index: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut start = 0;
        let mut number = 0;
        while start < entries.len() {
            // Fill a block until its estimated size reaches block_size.
            let mut end = start;
            let mut est = 0usize;
            while end < entries.len() && (end == start || est < self.block_size) {
                est += entries[end].0.len() + entries[end].1.len() + 8;
                end += 1;
            }
            let block = self.build_block(&entries[start..end]);
            let (off, size) = self.write_block(&mut file, number, block, true);
            let last = &entries[end - 1].0;
            let sep = match entries.get(end) {
                Some((next, _)) if self.check_sorted => shortest_separator(last, next),
                Some(_) => last.clone(),
                None => short_successor(last),
            };
            let mut handle = Vec::new();
            put_varint(&mut handle, off);
            put_varint(&mut handle, size);
            index.push((sep, handle));
            start = end;
            number += 1;
        }
        let meta = self.build_block(&[]);
        let (moff, msize) = self.write_block(&mut file, usize::MAX - 1, meta, false);
        let idx = TableBuilder { restart_interval: 1, ..self.clone() }.build_block(&index);
        let (ioff, isize) = self.write_block(&mut file, usize::MAX, idx, false);
        let mut footer = Vec::new();
        for v in [moff, msize, ioff, isize] {
            put_varint(&mut footer, v);
        }
        footer.resize(40, 0);
        footer.extend_from_slice(&MAGIC.to_le_bytes());
        file.extend_from_slice(&footer);
        file
    }
}

/// Stored bytes of little-endian `data` in the bundle's byte order.
fn to_stored(data: &[u8], elem: usize, big_endian: bool) -> Vec<u8> {
    let mut v = data.to_vec();
    if big_endian && elem > 1 {
        for c in v.chunks_exact_mut(elem) {
            c.reverse();
        }
    }
    v
}

/// Encodes a DT_STRING tensor as TF's `WriteStringTensor` does; returns (bytes, masked entry crc).
pub fn encode_string_tensor(strings: &[&[u8]]) -> (Vec<u8>, u32) {
    let mut out = Vec::new();
    let mut crc = 0u32;
    let mut first = true;
    for s in strings {
        put_varint(&mut out, s.len() as u64);
        let len_bytes: Vec<u8> = if s.len() as u64 > u64::from(u32::MAX) {
            (s.len() as u64).to_le_bytes().to_vec()
        } else {
            (s.len() as u32).to_le_bytes().to_vec()
        };
        crc = if first { crc32c(&len_bytes) } else { crc32c_extend(crc, &len_bytes) };
        first = false;
    }
    if first {
        crc = crc32c(&[]);
    }
    let masked_len = mask_crc(crc);
    out.extend_from_slice(&masked_len.to_le_bytes());
    crc = crc32c_extend(crc, &masked_len.to_le_bytes());
    for s in strings {
        out.extend_from_slice(s);
        crc = crc32c_extend(crc, s);
    }
    (out, mask_crc(crc))
}

/// Builds a V2 tensor bundle (`.index` + `.data-SSSSS-of-NNNNN`).
#[derive(Clone)]
pub struct BundleBuilder {
    pub header: BundleHeaderProto,
    pub entries: BTreeMap<Vec<u8>, BundleEntryProto>,
    /// Raw values overriding (or adding) index entries, e.g. undecodable protos.
    pub raw_entries: BTreeMap<Vec<u8>, Vec<u8>>,
    pub shards: Vec<Vec<u8>>,
    pub table: TableBuilder,
    next_shard: usize,
}

impl BundleBuilder {
    pub fn new(num_shards: usize) -> Self {
        BundleBuilder {
            header: BundleHeaderProto {
                num_shards: num_shards as i32,
                endianness: ENDIANNESS_LITTLE,
                version: Some(VersionDef { producer: 1, min_consumer: 0, bad_consumers: vec![] }),
            },
            entries: BTreeMap::new(),
            raw_entries: BTreeMap::new(),
            shards: vec![Vec::new(); num_shards],
            table: TableBuilder::default(),
            next_shard: 0,
        }
    }

    /// Makes the bundle big-endian: call before adding tensors.
    pub fn big_endian(mut self) -> Self {
        self.header.endianness = ENDIANNESS_BIG;
        self
    }

    fn big(&self) -> bool {
        self.header.endianness == ENDIANNESS_BIG
    }

    fn take_shard(&mut self) -> usize {
        let n = self.shards.len().max(1);
        let s = self.next_shard % n;
        self.next_shard += 1;
        s
    }

    /// Appends stored bytes to a shard; returns an entry with shard/offset/size/crc filled.
    pub fn put_bytes(&mut self, shard: usize, tf_dtype: i32, shape: &[i64], stored: &[u8]) -> BundleEntryProto {
        if self.shards.len() <= shard {
            self.shards.resize(shard + 1, Vec::new());
        }
        let offset = self.shards[shard].len() as i64;
        self.shards[shard].extend_from_slice(stored);
        BundleEntryProto {
            dtype: tf_dtype,
            shape: Some(TensorShapeProto::from_dims(shape)),
            shard_id: shard as i32,
            offset,
            size: stored.len() as i64,
            crc32c: mask_crc(crc32c(stored)),
            slices: vec![],
        }
    }

    /// Adds a fixed-size tensor given its little-endian bytes.
    pub fn add(&mut self, name: &str, dtype: DType, shape: &[i64], le: &[u8]) -> &mut Self {
        let shard = self.take_shard();
        self.add_in_shard(shard, name, dtype, shape, le)
    }

    pub fn add_in_shard(&mut self, shard: usize, name: &str, dtype: DType, shape: &[i64], le: &[u8]) -> &mut Self {
        let stored = to_stored(le, dtype.size().unwrap_or(1), self.big());
        let e = self.put_bytes(shard, dtype.to_tf(), shape, &stored);
        self.entries.insert(name.as_bytes().to_vec(), e);
        self
    }

    pub fn add_f32(&mut self, name: &str, shape: &[i64], values: &[f32]) -> &mut Self {
        let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add(name, DType::F32, shape, &le)
    }

    /// Adds a tensor with any TF dtype number and raw stored bytes (e.g. unsupported dtypes).
    pub fn add_raw(&mut self, name: &str, tf_dtype: i32, shape: &[i64], stored: &[u8]) -> &mut Self {
        let shard = self.take_shard();
        let e = self.put_bytes(shard, tf_dtype, shape, stored);
        self.entries.insert(name.as_bytes().to_vec(), e);
        self
    }

    pub fn add_strings(&mut self, name: &str, shape: &[i64], strings: &[&[u8]]) -> &mut Self {
        let shard = self.take_shard();
        let (bytes, crc) = encode_string_tensor(strings);
        let mut e = self.put_bytes(shard, DType::String.to_tf(), shape, &bytes);
        e.crc32c = crc;
        self.entries.insert(name.as_bytes().to_vec(), e);
        self
    }

    /// Adds a partitioned tensor: `slices` are (extents as (start, length) with length -1 = full,
    /// little-endian bytes of the slice).
    pub fn add_partitioned(&mut self, name: &str, dtype: DType, full_shape: &[i64], slices: &[SliceData]) -> &mut Self {
        let mut protos = Vec::new();
        for (ext, le) in slices {
            let shard = self.take_shard();
            let slice_shape: Vec<i64> =
                ext.iter().zip(full_shape).map(|(&(s, l), &d)| if l < 0 { d - s } else { l }).collect();
            let stored = to_stored(le, dtype.size().unwrap_or(1), self.big());
            let e = self.put_bytes(shard, dtype.to_tf(), &slice_shape, &stored);
            self.entries.insert(encode_tensor_name_slice(name.as_bytes(), ext), e);
            protos.push(TensorSliceProto {
                extent: ext
                    .iter()
                    .map(|&(s, l)| Extent { start: s, length: if l < 0 { None } else { Some(l) } })
                    .collect(),
            });
        }
        self.entries.insert(
            name.as_bytes().to_vec(),
            BundleEntryProto {
                dtype: dtype.to_tf(),
                shape: Some(TensorShapeProto::from_dims(full_shape)),
                slices: protos,
                ..Default::default()
            },
        );
        self
    }

    pub fn entry_mut(&mut self, name: &str) -> &mut BundleEntryProto {
        self.entries.get_mut(name.as_bytes()).expect("no such entry")
    }

    /// The `.index` file contents.
    pub fn index_bytes(&self) -> Vec<u8> {
        let mut all: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        all.insert(Vec::new(), self.header.encode_to_vec());
        for (k, e) in &self.entries {
            all.insert(k.clone(), e.encode_to_vec());
        }
        for (k, v) in &self.raw_entries {
            all.insert(k.clone(), v.clone());
        }
        let entries: Vec<_> = all.into_iter().collect();
        self.table.build(&entries)
    }

    pub fn shard_path(prefix: &Path, i: usize, n: usize) -> PathBuf {
        let mut s = prefix.as_os_str().to_os_string();
        s.push(format!(".data-{i:05}-of-{n:05}"));
        PathBuf::from(s)
    }

    /// Writes `<prefix>.index` and every `<prefix>.data-*` file.
    pub fn write(&self, prefix: &Path) -> std::io::Result<()> {
        let mut idx = prefix.as_os_str().to_os_string();
        idx.push(".index");
        std::fs::write(PathBuf::from(idx), self.index_bytes())?;
        let n = self.shards.len();
        for (i, s) in self.shards.iter().enumerate() {
            std::fs::write(Self::shard_path(prefix, i, n), s)?;
        }
        Ok(())
    }
}

/// Builds a V1 (single SSTable, `SavedTensorSlices`) checkpoint.
#[derive(Clone, Default)]
pub struct V1Builder {
    pub meta: SavedTensorSliceMeta,
    pub data: BTreeMap<Vec<u8>, SavedTensorSlices>,
    pub table: TableBuilder,
}

impl V1Builder {
    pub fn new() -> Self {
        V1Builder {
            meta: SavedTensorSliceMeta {
                tensor: vec![],
                versions: Some(VersionDef { producer: 27, min_consumer: 0, bad_consumers: vec![] }),
            },
            ..Default::default()
        }
    }

    /// Adds a tensor saved as the given slices, each with its TensorProto holding the values.
    pub fn add(
        &mut self,
        name: &str,
        tf_dtype: i32,
        shape: &[i64],
        slices: Vec<(Vec<(i64, i64)>, TensorProto)>,
    ) -> &mut Self {
        let mut protos = Vec::new();
        for (ext, data) in slices {
            let slice = TensorSliceProto {
                extent: ext
                    .iter()
                    .map(|&(s, l)| Extent { start: s, length: if l < 0 { None } else { Some(l) } })
                    .collect(),
            };
            let key = encode_tensor_name_slice(name.as_bytes(), &ext);
            self.data.insert(
                key,
                SavedTensorSlices {
                    meta: None,
                    data: Some(SavedSlice { name: name.to_string(), slice: Some(slice.clone()), data: Some(data) }),
                },
            );
            protos.push(slice);
        }
        self.meta.tensor.push(SavedSliceMeta {
            name: name.to_string(),
            shape: Some(TensorShapeProto::from_dims(shape)),
            r#type: tf_dtype,
            slice: protos,
        });
        self
    }

    /// Adds an unpartitioned float32 tensor stored in `float_val`, as TF's V1 saver does.
    pub fn add_f32(&mut self, name: &str, shape: &[i64], values: &[f32]) -> &mut Self {
        let full: Vec<(i64, i64)> = shape.iter().map(|_| (0, -1)).collect();
        let tp = TensorProto { dtype: 1, float_val: values.to_vec(), ..Default::default() };
        self.add(name, 1, shape, vec![(full, tp)])
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> =
            vec![(Vec::new(), SavedTensorSlices { meta: Some(self.meta.clone()), data: None }.encode_to_vec())];
        for (k, v) in &self.data {
            entries.push((k.clone(), v.encode_to_vec()));
        }
        self.table.build(&entries)
    }
}
