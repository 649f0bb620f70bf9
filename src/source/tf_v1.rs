//! TensorFlow checkpoint V1: one SSTable file (or shards `<prefix>-SSSSS-of-NNNNN`) holding
//! `SavedTensorSlices` protos — the tensor list under the empty key, and each saved slice's
//! values as a `TensorProto` under its OrderedCode slice key (docs/checkpoint-formats.md §2).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, InputFault, Result};
use crate::source::names;
use crate::source::ordered_code::{encode_tensor_name_slice, slice_extents};
use crate::source::proto::{SavedTensorSlices, TensorProto, TensorShapeProto, TensorSliceProto};
use crate::source::slices::{self, SliceBox};
use crate::source::sstable::{display_key, Table, ValueLoc};
use crate::source::{Checkpoint, DType, TensorInfo, UnsupportedTensor};

const CONSUMER_VERSION: i32 = 1;
const MAX_FILES: usize = 100_000;

enum FileData {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl FileData {
    fn bytes(&self) -> &[u8] {
        match self {
            FileData::Mmap(m) => m,
            FileData::Owned(v) => v,
        }
    }
}

struct V1File {
    path: PathBuf,
    data: FileData,
    table: Table,
    locs: HashMap<Vec<u8>, ValueLoc>,
}

struct SliceRef {
    b: SliceBox,
    file: usize,
    loc: ValueLoc,
}

struct V1Tensor {
    tf_dtype: i32,
    slices: Vec<SliceRef>,
}

/// A tensor's declaration merged over all shard files: dtype, shape, slices with their file.
type Merged = (i32, Option<TensorShapeProto>, Vec<(TensorSliceProto, usize)>);

/// An opened V1 ("tensor slice") checkpoint, possibly sharded.
pub struct V1Checkpoint {
    path: PathBuf,
    files: Vec<V1File>,
    infos: Vec<TensorInfo>,
    tensors: Vec<V1Tensor>,
    unsupported: Vec<UnsupportedTensor>,
}

/// Splits `name-SSSSS-of-NNNNN` into (name, shard, count).
pub fn parse_shard_suffix(file_name: &OsStr) -> Option<(&OsStr, usize, usize)> {
    // "-SSSSS-of-NNNNN" is 15 ASCII bytes.
    let bytes = file_name.as_encoded_bytes();
    let cut = bytes.len().checked_sub(15)?;
    let t = &bytes[cut..];
    let digits = |r: std::ops::Range<usize>| t[r].iter().all(u8::is_ascii_digit);
    if t[0] != b'-' || &t[6..10] != b"-of-" || !digits(1..6) || !digits(10..15) {
        return None;
    }
    let number = |r: std::ops::Range<usize>| std::str::from_utf8(&t[r]).ok()?.parse::<usize>().ok();
    let (i, n) = (number(1..6)?, number(10..15)?);
    let base = names::strip_suffix(file_name, std::str::from_utf8(t).ok()?)?;
    (i < n).then_some((base, i, n))
}

/// The files of a V1 checkpoint given one of them: all shards if the name has a
/// `-SSSSS-of-NNNNN` suffix, else just the file.
pub fn shard_files(path: &Path) -> Vec<PathBuf> {
    match parse_shard_suffix(names::file_name(path)) {
        Some((base, _, n)) if n <= MAX_FILES => (0..n)
            .map(|i| {
                let mut name = base.to_os_string();
                name.push(format!("-{i:05}-of-{n:05}"));
                path.with_file_name(name)
            })
            .collect(),
        _ => vec![path.to_path_buf()],
    }
}

fn map_file(path: &Path) -> Result<FileData> {
    let file = crate::source::mapped::open_regular(path)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Ok(FileData::Owned(Vec::new()));
    }
    // SAFETY: read-only mapping; the file must not be modified while the checkpoint is open.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    Ok(FileData::Mmap(map))
}

impl V1Checkpoint {
    /// Opens a V1 checkpoint file (all its shards if its name is `…-SSSSS-of-NNNNN`).
    pub fn open(path: impl AsRef<Path>) -> Result<V1Checkpoint> {
        let path = path.as_ref();
        let files = shard_files(path);
        if let Some(missing) = files.iter().find(|p| !p.is_file()) {
            return Err(Error::input(
                missing,
                format!(
                    "V1 checkpoint shard is missing ({} shard files expected next to {})",
                    files.len(),
                    path.display()
                ),
            )
            .because(InputFault::Missing));
        }
        let mut data = Vec::with_capacity(files.len());
        for f in files {
            let d = map_file(&f)?;
            data.push((f, d));
        }
        Self::build(path, data)
    }

    /// Opens a V1 checkpoint held in memory (tests, fuzzing); `path` names it in errors.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<V1Checkpoint> {
        let path = path.as_ref();
        Self::build(path, vec![(path.to_path_buf(), FileData::Owned(bytes))])
    }

    fn build(path: &Path, data: Vec<(PathBuf, FileData)>) -> Result<V1Checkpoint> {
        let mut files = Vec::with_capacity(data.len());
        // name -> (dtype, shape, slices(proto, file))
        let mut merged: BTreeMap<String, Merged> = BTreeMap::new();
        for (fi, (fpath, fdata)) in data.into_iter().enumerate() {
            let bytes = fdata.bytes();
            let table = Table::open(&fpath, bytes, "TensorFlow V1 checkpoint")?;
            let mut meta_value: Option<Vec<u8>> = None;
            let mut locs = HashMap::new();
            let mut first = true;
            table.for_each(bytes, |k, v, loc| {
                if first {
                    first = false;
                    if !k.is_empty() {
                        return Err(Error::input(
                            &fpath,
                            format!(
                                "no tensor list (empty key) in the V1 checkpoint; first key is '{}'",
                                display_key(k)
                            ),
                        ));
                    }
                    meta_value = Some(v.to_vec());
                } else {
                    locs.insert(k.to_vec(), loc);
                }
                Ok(())
            })?;
            let meta_value =
                meta_value.ok_or_else(|| Error::input(&fpath, "V1 checkpoint is empty: no tensor list (empty key)"))?;
            let sts = SavedTensorSlices::decode(meta_value.as_slice())
                .map_err(|e| Error::input(&fpath, format!("cannot decode the tensor list (SavedTensorSlices): {e}")))?;
            let meta = sts.meta.ok_or_else(|| {
                Error::input(&fpath, "the empty key holds no SavedTensorSliceMeta (not a V1 checkpoint?)")
            })?;
            let v = meta.versions.unwrap_or_default();
            if v.producer < 0 || v.min_consumer > CONSUMER_VERSION || v.bad_consumers.contains(&CONSUMER_VERSION) {
                return Err(Error::input(
                    &fpath,
                    format!(
                        "unsupported V1 checkpoint version (producer {}, min_consumer {}, bad_consumers {:?})",
                        v.producer, v.min_consumer, v.bad_consumers
                    ),
                ));
            }
            for t in meta.tensor {
                let entry = merged.entry(t.name.clone()).or_insert_with(|| (t.r#type, t.shape.clone(), Vec::new()));
                if entry.0 != t.r#type || entry.1 != t.shape {
                    return Err(Error::tensor(&fpath, &t.name, "dtype or shape differs between checkpoint shards"));
                }
                if entry.2.len().saturating_add(t.slice.len()) > slices::MAX_SLICES {
                    return Err(Error::tensor(&fpath, &t.name, format!("more than {} slices", slices::MAX_SLICES)));
                }
                entry.2.extend(t.slice.into_iter().map(|s| (s, fi)));
            }
            files.push(V1File { path: fpath, data: fdata, table, locs });
        }

        let mut ck = V1Checkpoint {
            path: path.to_path_buf(),
            files,
            infos: Vec::new(),
            tensors: Vec::new(),
            unsupported: Vec::new(),
        };
        for (name, (tf_dtype, shape, slice_list)) in merged {
            let Some(dtype) = DType::from_tf(tf_dtype) else {
                ck.unsupported.push(UnsupportedTensor {
                    name: name.clone(),
                    tf_dtype: Some(tf_dtype),
                    reason: format!("dtype {} (DataType {tf_dtype}) is not supported", DType::tf_name(tf_dtype)),
                });
                continue;
            };
            let terr = |fi: usize, msg: String| Error::tensor(&ck.files[fi].path, &name, msg);
            let shape = slices::shape_from_proto(shape.as_ref()).map_err(|m| terr(0, m))?;
            let mut refs = Vec::with_capacity(slice_list.len());
            for (s, fi) in slice_list {
                let b = slices::slice_box(&s, &shape).map_err(|m| terr(fi, m))?;
                let key = encode_tensor_name_slice(name.as_bytes(), &slice_extents(&s));
                let loc = ck.files[fi].locs.get(&key).ok_or_else(|| {
                    terr(fi, format!("data for slice {b} is missing (key '{}' not in the file)", display_key(&key)))
                })?;
                // Every element takes at least one byte in the proto; this bounds later allocations.
                if b.numel() > loc.range.len() {
                    return Err(terr(
                        fi,
                        format!(
                            "slice {b} has {} elements but its stored value is only {} bytes",
                            b.numel(),
                            loc.range.len()
                        ),
                    ));
                }
                refs.push(SliceRef { b, file: fi, loc: loc.clone() });
            }
            let boxes: Vec<&SliceBox> = refs.iter().map(|r| &r.b).collect();
            slices::check_coverage(&shape, &boxes).map_err(|m| terr(0, m))?;
            ck.infos.push(TensorInfo { name, dtype, shape });
            ck.tensors.push(V1Tensor { tf_dtype, slices: refs });
        }
        Ok(ck)
    }

    fn lookup(&self, name: &str) -> Result<(&TensorInfo, &V1Tensor)> {
        match self.infos.binary_search_by(|t| t.name.as_str().cmp(name)) {
            Ok(i) => Ok((&self.infos[i], &self.tensors[i])),
            Err(_) => match self.unsupported.iter().find(|u| u.name == name) {
                Some(u) => Err(Error::tensor(&self.path, name, u.reason.clone()).because(InputFault::Unsupported)),
                None => Err(Error::tensor(&self.path, name, "no such tensor in the checkpoint").because(InputFault::Missing)),
            },
        }
    }

    /// Decodes the TensorProto of one slice.
    fn slice_proto(&self, name: &str, t: &V1Tensor, r: &SliceRef) -> Result<TensorProto> {
        let f = self.files.get(r.file).ok_or_else(|| Error::tensor(&self.path, name, "bad file index"))?;
        let value = f.table.value_at(f.data.bytes(), &r.loc)?;
        let terr = |msg: String| Error::tensor(&f.path, name, format!("slice {}: {msg}", r.b));
        let sts = SavedTensorSlices::decode(value.as_ref())
            .map_err(|e| terr(format!("cannot decode SavedTensorSlices: {e}")))?;
        let saved = sts.data.ok_or_else(|| terr("value holds no SavedSlice".into()))?;
        if saved.name != name {
            return Err(terr(format!("stored slice is named '{}'", saved.name)));
        }
        let tp = saved.data.ok_or_else(|| terr("SavedSlice holds no TensorProto".into()))?;
        if tp.dtype != 0 && tp.dtype != t.tf_dtype {
            return Err(terr(format!(
                "values have dtype {} but the tensor is declared {}",
                DType::tf_name(tp.dtype),
                DType::tf_name(t.tf_dtype)
            )));
        }
        Ok(tp)
    }
}

/// Little-endian bytes of `n` values of `dtype` from a TensorProto (tensor_content or the typed field).
pub fn tensor_proto_bytes(tp: &TensorProto, dtype: DType, n: usize) -> std::result::Result<Vec<u8>, String> {
    let es = dtype.size().ok_or("string tensors have no fixed-size bytes")?;
    if !tp.tensor_content.is_empty() {
        if Some(tp.tensor_content.len()) != n.checked_mul(es) {
            return Err(format!(
                "tensor_content has {} bytes, expected {n} elements x {es} bytes",
                tp.tensor_content.len()
            ));
        }
        return Ok(tp.tensor_content.clone());
    }
    fn collect<T: Copy, const W: usize>(
        vals: &[T],
        n: usize,
        field: &str,
        f: impl Fn(T) -> [u8; W],
    ) -> std::result::Result<Vec<u8>, String> {
        if vals.len() != n {
            return Err(format!("{field} holds {} values, expected {n}", vals.len()));
        }
        Ok(vals.iter().flat_map(|&v| f(v)).collect())
    }
    match dtype {
        DType::F32 => collect(&tp.float_val, n, "float_val", f32::to_le_bytes),
        DType::F64 => collect(&tp.double_val, n, "double_val", f64::to_le_bytes),
        DType::I32 => collect(&tp.int_val, n, "int_val", i32::to_le_bytes),
        DType::I16 => collect(&tp.int_val, n, "int_val", |v| (v as i16).to_le_bytes()),
        DType::U16 => collect(&tp.int_val, n, "int_val", |v| (v as u16).to_le_bytes()),
        DType::I8 => collect(&tp.int_val, n, "int_val", |v| [v as u8]),
        DType::U8 => collect(&tp.int_val, n, "int_val", |v| [v as u8]),
        DType::I64 => collect(&tp.int64_val, n, "int64_val", i64::to_le_bytes),
        DType::Bool => collect(&tp.bool_val, n, "bool_val", |v| [v as u8]),
        DType::F16 | DType::BF16 => collect(&tp.half_val, n, "half_val", |v| (v as u16).to_le_bytes()),
        DType::U32 => collect(&tp.uint32_val, n, "uint32_val", u32::to_le_bytes),
        DType::U64 => collect(&tp.uint64_val, n, "uint64_val", u64::to_le_bytes),
        DType::String => Err("string tensors have no fixed-size bytes".into()),
    }
}

impl Checkpoint for V1Checkpoint {
    fn path(&self) -> &Path {
        &self.path
    }

    fn format(&self) -> &'static str {
        "tf-checkpoint-v1"
    }

    fn files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn unsupported(&self) -> &[UnsupportedTensor] {
        &self.unsupported
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let (info, t) = self.lookup(name)?;
        let Some(es) = info.dtype.size() else {
            return Err(Error::tensor(&self.path, name, "is a string tensor; use read_strings"));
        };
        if let [only] = t.slices.as_slice() {
            if only.b.shape == info.shape {
                let tp = self.slice_proto(name, t, only)?;
                let bytes = tensor_proto_bytes(&tp, info.dtype, info.numel())
                    .map_err(|m| Error::tensor(&self.files[only.file].path, name, m))?;
                return Ok(Cow::Owned(bytes));
            }
        }
        let mut out = vec![0u8; info.numel() * es];
        for r in &t.slices {
            let tp = self.slice_proto(name, t, r)?;
            let src = tensor_proto_bytes(&tp, info.dtype, r.b.numel())
                .map_err(|m| Error::tensor(&self.files[r.file].path, name, format!("slice {}: {m}", r.b)))?;
            slices::place_slice(&mut out, &info.shape, &r.b, &src, es);
        }
        Ok(Cow::Owned(out))
    }

    fn read_strings(&self, name: &str) -> Result<Vec<Vec<u8>>> {
        let (info, t) = self.lookup(name)?;
        if info.dtype != DType::String {
            return Err(Error::tensor(
                &self.path,
                name,
                format!("is a {} tensor, not a string tensor; use read", info.dtype.name()),
            ));
        }
        let mut out = vec![Vec::new(); info.numel()];
        for r in &t.slices {
            let tp = self.slice_proto(name, t, r)?;
            if tp.string_val.len() != r.b.numel() {
                return Err(Error::tensor(
                    &self.files[r.file].path,
                    name,
                    format!("slice {}: string_val holds {} values, expected {}", r.b, tp.string_val.len(), r.b.numel()),
                ));
            }
            slices::place_slice(&mut out, &info.shape, &r.b, &tp.string_val, 1);
        }
        Ok(out)
    }
}

impl std::fmt::Debug for V1Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V1Checkpoint")
            .field("path", &self.path)
            .field("files", &self.files.len())
            .field("tensors", &self.infos.len())
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::testing::{Compression, TableBuilder, V1Builder};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::sync::Arc;

    fn sample() -> V1Builder {
        let mut b = V1Builder::new();
        b.add_f32("w", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        b.add_f32("scalar", &[], &[7.5]);
        // int64 [4, 2] partitioned into rows [0,1) and [1,4).
        b.add(
            "part",
            9,
            &[4, 2],
            vec![
                (
                    vec![(1, 3), (0, -1)],
                    TensorProto { dtype: 9, int64_val: vec![3, 4, 5, 6, 7, 8], ..Default::default() },
                ),
                (vec![(0, 1), (0, -1)], TensorProto { dtype: 9, int64_val: vec![1, 2], ..Default::default() }),
            ],
        );
        b.add(
            "h",
            19,
            &[2],
            vec![(vec![(0, -1)], TensorProto { dtype: 19, half_val: vec![0x3c00, 0xc000], ..Default::default() })],
        );
        b.add("i8", 6, &[3], vec![(vec![(0, -1)], TensorProto { int_val: vec![-1, 2, -128], ..Default::default() })]);
        b.add(
            "raw",
            3,
            &[2],
            vec![(
                vec![(0, -1)],
                TensorProto {
                    dtype: 3,
                    tensor_content: vec![1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
                    ..Default::default()
                },
            )],
        );
        b.add("b", 10, &[2], vec![(vec![(0, -1)], TensorProto { bool_val: vec![true, false], ..Default::default() })]);
        b.add(
            "s",
            7,
            &[2],
            vec![(
                vec![(0, -1)],
                TensorProto { string_val: vec![b"x".to_vec(), b"yz".to_vec()], ..Default::default() },
            )],
        );
        b.add("c", 8, &[1], vec![(vec![(0, -1)], TensorProto { scomplex_val: vec![1.0, 2.0], ..Default::default() })]);
        b
    }

    fn le_f32(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn check(ck: &V1Checkpoint) {
        let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b", "h", "i8", "part", "raw", "s", "scalar", "w"]);
        assert_eq!(&*ck.read("w").unwrap(), le_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).as_slice());
        assert_eq!(&*ck.read("scalar").unwrap(), le_f32(&[7.5]).as_slice());
        let part: Vec<u8> = (1..=8i64).flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&*ck.read("part").unwrap(), part.as_slice());
        assert_eq!(&*ck.read("h").unwrap(), [0x00, 0x3c, 0x00, 0xc0].as_slice());
        assert_eq!(&*ck.read("i8").unwrap(), [0xff, 2, 0x80].as_slice());
        assert_eq!(&*ck.read("raw").unwrap(), [1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff].as_slice());
        assert_eq!(&*ck.read("b").unwrap(), [1, 0].as_slice());
        assert_eq!(ck.read_strings("s").unwrap(), [b"x".to_vec(), b"yz".to_vec()]);
        assert_eq!(ck.unsupported().len(), 1);
        assert!(ck.read("c").unwrap_err().to_string().contains("DT_COMPLEX64"));
        assert_eq!(ck.format(), "tf-checkpoint-v1");
    }

    #[test]
    fn shard_suffix() {
        let parse = |n: &str| parse_shard_suffix(OsStr::new(n)).map(|(b, i, n)| (b.to_str().unwrap().to_string(), i, n));
        assert_eq!(parse("model.ckpt-00001-of-00016"), Some(("model.ckpt".into(), 1, 16)));
        assert_eq!(parse("model.ckpt-00016-of-00016"), None);
        assert_eq!(parse("model.ckpt-1000"), None);
        assert_eq!(parse("é-00001-of-00016"), Some(("é".into(), 1, 16)));
        assert_eq!(parse("ééééééééé"), None);
    }

    #[test]
    fn round_trip_file_and_generic_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.ckpt-100");
        std::fs::write(&path, sample().bytes()).unwrap();
        check(&V1Checkpoint::open(&path).unwrap());
        let ck = crate::source::open(&path).unwrap();
        assert_eq!(ck.format(), "tf-checkpoint-v1");
        assert_eq!(ck.tensors().len(), 8);
    }

    #[test]
    fn round_trip_snappy_multiblock() {
        let mut b = sample();
        b.table = TableBuilder {
            block_size: 48,
            restart_interval: 2,
            compression: Compression::Snappy,
            ..Default::default()
        };
        check(&V1Checkpoint::from_bytes("v1", b.bytes()).unwrap());
    }

    #[test]
    fn sharded_v1() {
        let dir = tempfile::tempdir().unwrap();
        // Shard 0 holds w and the first row of part, shard 1 the rest of part.
        let mut s0 = V1Builder::new();
        s0.add_f32("w", &[2], &[1.0, 2.0]);
        s0.add(
            "part",
            3,
            &[2, 2],
            vec![(vec![(0, 1), (0, -1)], TensorProto { int_val: vec![1, 2], ..Default::default() })],
        );
        let mut s1 = V1Builder::new();
        s1.add(
            "part",
            3,
            &[2, 2],
            vec![(vec![(1, 1), (0, -1)], TensorProto { int_val: vec![3, 4], ..Default::default() })],
        );
        std::fs::write(dir.path().join("model.ckpt-00000-of-00002"), s0.bytes()).unwrap();
        std::fs::write(dir.path().join("model.ckpt-00001-of-00002"), s1.bytes()).unwrap();
        let ck = V1Checkpoint::open(dir.path().join("model.ckpt-00001-of-00002")).unwrap();
        let want: Vec<u8> = (1..=4i32).flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(&*ck.read("part").unwrap(), want.as_slice());
        assert_eq!(ck.tensors().len(), 2);
        // The directory resolves to the sharded set.
        let ck = crate::source::open(dir.path()).unwrap();
        assert_eq!(&*ck.read("part").unwrap(), want.as_slice());
        std::fs::remove_file(dir.path().join("model.ckpt-00001-of-00002")).unwrap();
        let e = V1Checkpoint::open(dir.path().join("model.ckpt-00000-of-00002")).unwrap_err().to_string();
        assert!(e.contains("model.ckpt-00001-of-00002") && e.contains("missing"), "{e}");
    }

    #[test]
    fn errors_name_file_and_tensor() {
        let open = |b: &V1Builder| V1Checkpoint::from_bytes("d/model.ckpt", b.bytes());
        // Wrong number of values.
        let mut b = V1Builder::new();
        b.add("x", 1, &[3], vec![(vec![(0, -1)], TensorProto { float_val: vec![1.0, 2.0], ..Default::default() })]);
        let e = open(&b).unwrap().read("x").unwrap_err().to_string();
        assert!(
            e.contains("d/model.ckpt") && e.contains("'x'") && e.contains("float_val holds 2 values, expected 3"),
            "{e}"
        );
        // Value dtype disagrees.
        let mut b = V1Builder::new();
        b.add(
            "x",
            1,
            &[1],
            vec![(vec![(0, -1)], TensorProto { dtype: 2, double_val: vec![1.0], ..Default::default() })],
        );
        let e = open(&b).unwrap().read("x").unwrap_err().to_string();
        assert!(e.contains("'x'") && e.contains("values have dtype float64 but the tensor is declared float32"), "{e}");
        // Bad tensor_content length.
        let mut b = V1Builder::new();
        b.add("x", 1, &[2], vec![(vec![(0, -1)], TensorProto { tensor_content: vec![0; 7], ..Default::default() })]);
        let e = open(&b).unwrap().read("x").unwrap_err().to_string();
        assert!(e.contains("'x'") && e.contains("tensor_content has 7 bytes"), "{e}");
        // Slice data missing.
        let mut b = V1Builder::new();
        b.add_f32("x", &[1], &[1.0]);
        b.data.clear();
        let e = open(&b).unwrap_err().to_string();
        assert!(e.contains("d/model.ckpt") && e.contains("'x'") && e.contains("missing"), "{e}");
        // Shape much bigger than the stored data.
        let mut b = V1Builder::new();
        b.add_f32("x", &[1], &[1.0]);
        b.meta.tensor[0].shape = Some(crate::source::proto::TensorShapeProto::from_dims(&[1 << 40]));
        let e = open(&b).unwrap_err().to_string();
        assert!(e.contains("'x'"), "{e}");
        // Corrupt block.
        let mut bytes = sample().bytes();
        bytes[40] ^= 1;
        let e = V1Checkpoint::from_bytes("d/model.ckpt", bytes).unwrap_err().to_string();
        assert!(e.contains("d/model.ckpt") && e.contains("checksum mismatch"), "{e}");
        // Not an SSTable.
        let e = V1Checkpoint::from_bytes("d/x", vec![0; 100]).unwrap_err().to_string();
        assert!(e.contains("bad SSTable magic"), "{e}");
    }

    fn exercise(bytes: Vec<u8>) -> usize {
        let Ok(ck) = V1Checkpoint::from_bytes("f/v1", bytes) else { return 0 };
        let mut ok = 0;
        for t in ck.tensors() {
            if t.dtype == DType::String {
                ok += ck.read_strings(&t.name).is_ok() as usize;
            } else if let Ok(v) = ck.read(&t.name) {
                assert_eq!(Some(v.len()), t.nbytes());
                ok += 1;
            }
        }
        ok
    }

    fn strategy() -> impl Strategy<Value = (Vec<(usize, u8)>, bool, usize, bool)> {
        (proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), any::<bool>(), 24usize..400, any::<bool>())
    }

    fn run((muts, fix, block_size, snappy): (Vec<(usize, u8)>, bool, usize, bool)) -> usize {
        let mut b = sample();
        let m2 = muts.clone();
        b.table = TableBuilder {
            block_size,
            compression: if snappy { Compression::Snappy } else { Compression::None },
            block_hook: if fix {
                Some(Arc::new(move |_, blk: &mut Vec<u8>| {
                    for (at, v) in &m2 {
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
        let mut bytes = b.bytes();
        if !fix {
            for (at, v) in &muts {
                let n = bytes.len();
                bytes[at % n] = *v;
            }
        }
        exercise(bytes)
    }

    /// Runs `n` mutated V1 files; returns how many ran.
    pub(crate) fn fuzz_many(n: usize) -> usize {
        let mut runner = TestRunner::new(Config { cases: n as u32, failure_persistence: None, ..Config::default() });
        let count = std::sync::atomic::AtomicUsize::new(0);
        runner
            .run(&strategy(), |c| {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                run(c);
                Ok(())
            })
            .unwrap();
        count.into_inner()
    }

    fn fuzz_cases() -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: fuzz_cases(), failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn fuzz_v1_no_panic(c in strategy()) {
            run(c);
        }

        #[test]
        fn fuzz_v1_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            exercise(bytes);
        }
    }
}
