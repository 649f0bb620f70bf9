//! `torch.save` files such as Facebook XLM's `.pth` checkpoints (docs/checkpoint-formats.md §5,
//! §8), in both containers: the zip archive of torch ≥ 1.6 (`<name>/data.pkl` plus one member
//! per storage, `<name>/data/<key>`) and the legacy stream of five pickles followed by the raw
//! storages. The pickles are read by the restricted reader in `pickle.rs`; nothing is executed.
//!
//! Tensors are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, …)` calls (or
//! `_rebuild_parameter` around one) whose storage is a persistent id
//! `('storage', torch.<T>Storage, key, location, numel[, view])`. Listed are the tensors of the
//! state dicts at the top of the saved dict, named `<top key>/<state dict key>` (e.g.
//! `model/embeddings.weight`, `encoder/…`, `decoder/…`), or just `<key>` when the saved dict is
//! itself a state dict; a `module.` prefix is kept. Optimizer state (`*_optimizer`) is not
//! listed. Everything else at the top (`params`, `dico_*`, `epoch`, …) is available as JSON
//! from [`PthCheckpoint::metadata`].
//!
//! Tensors are views: contiguous ones are borrowed from the mmap, others gathered row-major.
//! Opening checks every listed view against its storage, so reads cannot fail afterwards.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};

use crate::error::{Error, InputFault, Result};
use crate::source::mapped::FileBytes;
use crate::source::pickle::{self, bigint_to_decimal, Value};
use crate::source::{Checkpoint, DType, TensorInfo, UnsupportedTensor};

/// Format name of [`PthCheckpoint`] (and of `Resolved::TorchPickle`).
pub const FORMAT: &str = "torch-pth";
/// The first 15 bytes of a legacy `torch.save` file: the pickled magic number 0x1950a86a20f9469cfc6c.
pub const LEGACY_MAGIC: [u8; 15] =
    [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];
const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";
/// `torch.serialization.PROTOCOL_VERSION` of the legacy format.
const LEGACY_PROTOCOL: i64 = 1001;

/// What a file is, judged from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// A zip archive with a `<name>/data.pkl` member.
    Zip,
    /// Starts with the legacy magic number.
    Legacy,
    /// A zip archive without `<name>/data.pkl` (not written by `torch.save`).
    ZipWithoutPickle,
    NotTorch,
}

/// Checks the magic bytes (and for zip archives, the member names). Reads regular files only.
pub fn sniff(path: &Path) -> Sniff {
    if !path.is_file() {
        return Sniff::NotTorch;
    }
    let Ok(mut f) = File::open(path) else { return Sniff::NotTorch };
    let mut head = [0u8; 15];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    if n == 15 && head == LEGACY_MAGIC {
        return Sniff::Legacy;
    }
    if n < 4 || &head[..4] != ZIP_MAGIC {
        return Sniff::NotTorch;
    }
    if f.rewind().is_err() {
        return Sniff::NotTorch;
    }
    match zip::ZipArchive::new(f) {
        Ok(z) if z.file_names_raw().any(|n| pickle_prefix(n).is_some()) => Sniff::Zip,
        _ => Sniff::ZipWithoutPickle,
    }
}

/// `X/` for a member named `X/data.pkl` (one folder level, as torch writes it).
fn pickle_prefix(name: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(name).ok()?;
    let dir = name.strip_suffix("data.pkl")?;
    (dir.ends_with('/') && dir.len() > 1 && dir.matches('/').count() == 1).then_some(dir)
}

/// Element type and size of a storage class; `None` dtype for classes this reader cannot represent.
fn storage_class(name: &str) -> Option<(Option<DType>, usize)> {
    Some(match name {
        "FloatStorage" => (Some(DType::F32), 4),
        "DoubleStorage" => (Some(DType::F64), 8),
        "HalfStorage" => (Some(DType::F16), 2),
        "BFloat16Storage" => (Some(DType::BF16), 2),
        "LongStorage" => (Some(DType::I64), 8),
        "IntStorage" => (Some(DType::I32), 4),
        "ShortStorage" => (Some(DType::I16), 2),
        "CharStorage" => (Some(DType::I8), 1),
        "ByteStorage" => (Some(DType::U8), 1),
        "BoolStorage" => (Some(DType::Bool), 1),
        "ComplexFloatStorage" => (None, 8),
        "ComplexDoubleStorage" => (None, 16),
        "QInt32Storage" => (None, 4),
        "QInt8Storage" | "QUInt8Storage" | "QUInt4x2Storage" | "QUInt2x4Storage" => (None, 1),
        _ => return None,
    })
}

/// A storage reference from a persistent id.
#[derive(Debug, Clone)]
struct StorageRef {
    key: String,
    class: String,
    numel: usize,
    /// Legacy storage views: (offset, numel) in elements of the root storage.
    view: Option<(usize, usize)>,
}

/// A `_rebuild_tensor_v2` call, decoded.
#[derive(Debug, Clone)]
struct Spec {
    storage: StorageRef,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

enum TensorLike {
    Tensor(Spec),
    /// A tensor this reader does not represent (complex, quantized, other `_rebuild_*`).
    Unsupported(String),
    /// A tensor call whose arguments make no sense.
    Malformed(String),
}

fn int_arg(v: &Value, what: &str) -> std::result::Result<usize, String> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("{what} is {i}, expected a non-negative integer")),
        other => Err(format!("{what} is {}, expected an integer", other.a_kind())),
    }
}

fn dims_arg(v: &Value, what: &str) -> std::result::Result<Vec<usize>, String> {
    let items = v.as_seq().ok_or_else(|| format!("{what} is {}, expected a tuple of integers", v.a_kind()))?;
    items.iter().enumerate().map(|(i, d)| int_arg(d, &format!("{what}[{i}]"))).collect()
}

fn storage_ref(pid: &Value) -> std::result::Result<StorageRef, String> {
    let Value::PersistentId(pid) = pid else {
        return Err(format!("the storage argument is {}, expected a persistent id", pid.a_kind()));
    };
    let t = pid.as_seq().filter(|t| t.len() >= 5).ok_or_else(|| {
        format!("the storage persistent id is {}, expected ('storage', class, key, location, numel)", pid.a_kind())
    })?;
    if t[0].as_str() != Some("storage") {
        return Err(format!("the persistent id is a {:?} record, expected 'storage'", t[0].as_str().unwrap_or("?")));
    }
    let class = match t[1].global() {
        Some(("torch", name)) => name.to_string(),
        _ => return Err(format!("the storage class is {}, expected a torch.<T>Storage global", t[1].a_kind())),
    };
    let key = match &t[2] {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        other => return Err(format!("the storage key is {}, expected a string", other.a_kind())),
    };
    let numel = int_arg(&t[4], "the storage size")?;
    let view = match t.get(5) {
        None | Some(Value::None) => None,
        Some(v) => {
            let v = v.as_seq().filter(|v| v.len() == 3).ok_or("the storage view is not a (key, offset, size) tuple")?;
            Some((int_arg(&v[1], "the storage view offset")?, int_arg(&v[2], "the storage view size")?))
        }
    };
    Ok(StorageRef { key, class, numel, view })
}

fn tensor_like(v: &Value) -> Option<TensorLike> {
    let Value::Object(o) = v else { return None };
    let (module, name) = o.callable.global()?;
    if module != "torch._utils" || !name.starts_with("_rebuild_") {
        return None;
    }
    if name.starts_with("_rebuild_parameter") {
        return Some(match o.args.as_seq().and_then(|a| a.first()).map(tensor_like) {
            Some(Some(t)) => t,
            _ => TensorLike::Malformed(format!("torch._utils.{name} is not applied to a tensor")),
        });
    }
    if name != "_rebuild_tensor_v2" {
        return Some(TensorLike::Unsupported(format!("torch._utils.{name} tensors are not supported")));
    }
    let parse = || -> std::result::Result<Spec, String> {
        let a = o.args.as_seq().filter(|a| a.len() >= 4).ok_or_else(|| {
            format!("_rebuild_tensor_v2 arguments are {}, expected (storage, offset, size, stride, …)", o.args.a_kind())
        })?;
        let storage = storage_ref(&a[0])?;
        let (offset, size, stride) =
            (int_arg(&a[1], "storage_offset")?, dims_arg(&a[2], "size")?, dims_arg(&a[3], "stride")?);
        if size.len() != stride.len() {
            return Err(format!("size {size:?} and stride {stride:?} have different lengths"));
        }
        Ok(Spec { storage, offset, size, stride })
    };
    Some(match parse() {
        Ok(spec) => match storage_class(&spec.storage.class) {
            Some((Some(_), _)) => TensorLike::Tensor(spec),
            Some((None, _)) => {
                TensorLike::Unsupported(format!("storage class torch.{} is not supported", spec.storage.class))
            }
            None => TensorLike::Malformed(format!("unknown storage class torch.{}", spec.storage.class)),
        },
        Err(m) => TensorLike::Malformed(m),
    })
}

/// `(key, tensor)` pairs if `v` is a state dict: a non-empty dict of string keys to tensors.
fn state_dict(v: &Value) -> Option<Vec<(String, TensorLike)>> {
    let Value::Dict(items) = v else { return None };
    if items.is_empty() {
        return None;
    }
    items.iter().map(|(k, v)| Some((k.as_str()?.to_string(), tensor_like(v)?))).collect()
}

/// Every storage persistent id under `v`, in pickle order (how the legacy writer ordered its
/// element sizes). Depth is bounded by the pickle reader.
fn collect_storages(v: &Value, out: &mut Vec<StorageRef>) {
    match v {
        Value::PersistentId(_) => {
            if let Ok(s) = storage_ref(v) {
                out.push(s);
            }
        }
        Value::Tuple(xs) | Value::List(xs) => xs.iter().for_each(|x| collect_storages(x, out)),
        Value::Dict(kv) => kv.iter().for_each(|(k, x)| {
            collect_storages(k, out);
            collect_storages(x, out);
        }),
        Value::Object(o) => {
            collect_storages(&o.args, out);
            if let Some(s) = &o.state {
                collect_storages(s, out);
            }
            o.items.iter().for_each(|(k, x)| {
                collect_storages(k, out);
                collect_storages(x, out);
            });
            o.appended.iter().for_each(|x| collect_storages(x, out));
        }
        _ => {}
    }
}

/// A dict key as JSON object keys are written by Python's `json.dumps`.
fn key_text(k: &Value) -> String {
    match k {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(b) => bigint_to_decimal(b),
        Value::Bool(b) => b.to_string(),
        Value::None => "null".into(),
        Value::Float(f) => f.to_string(),
        other => format!("<{}>", other.kind()),
    }
}

/// The non-tensor parts of a checkpoint as JSON. Tensors become `"<tensor float32 [2, 3]>"`,
/// numpy arrays `"<ndarray f8 [5]>"`; dict keys become strings as `json.dumps` writes them; NaN
/// and infinities become the strings "NaN", "Infinity", "-Infinity"; integers beyond 64 bits
/// become decimal strings; an object pickled with a dict of attributes (`argparse.Namespace`)
/// becomes that dict, one filled by `SETITEMS` (`defaultdict`, `Counter`) its items, a set its
/// elements; other objects `"<object module.name>"`.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::None => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::BigInt(b) => {
            let text = bigint_to_decimal(b);
            text.parse::<u64>().map(Json::from).unwrap_or(Json::String(text))
        }
        Value::Float(f) if f.is_finite() => json!(f),
        Value::Float(f) if f.is_nan() => json!("NaN"),
        Value::Float(f) => json!(if *f > 0.0 { "Infinity" } else { "-Infinity" }),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!(format!("<bytes, {} long>", b.len())),
        Value::Tuple(xs) | Value::List(xs) => Json::Array(xs.iter().map(to_json).collect()),
        Value::Dict(kv) => Json::Object(kv.iter().map(|(k, x)| (key_text(k), to_json(x))).collect::<Map<_, _>>()),
        Value::Global { module, name } => json!(format!("<global {module}.{name}>")),
        Value::PersistentId(_) => json!("<persistent id>"),
        Value::Object(o) => {
            if let Some(t) = tensor_like(v) {
                return json!(match t {
                    TensorLike::Tensor(s) => {
                        let dtype = storage_class(&s.storage.class).and_then(|c| c.0).map_or("?", DType::name);
                        format!("<tensor {dtype} {:?}>", s.size)
                    }
                    _ => "<tensor>".to_string(),
                });
            }
            let (module, name) = o.callable.global().unwrap_or(("?", "?"));
            if module.starts_with("numpy") && name == "_reconstruct" {
                return json!(ndarray_text(o.state.as_ref()));
            }
            if module == "builtins" && (name == "set" || name == "frozenset") {
                if let Some(items) = o.args.as_seq().and_then(|a| a.first()).and_then(Value::as_seq) {
                    return Json::Array(items.iter().map(to_json).collect());
                }
            }
            if !o.items.is_empty() {
                return Json::Object(o.items.iter().map(|(k, x)| (key_text(k), to_json(x))).collect());
            }
            if !o.appended.is_empty() {
                return Json::Array(o.appended.iter().map(to_json).collect());
            }
            if let Some(state @ Value::Dict(_)) = &o.state {
                return to_json(state);
            }
            json!(format!("<object {module}.{name}>"))
        }
    }
}

/// `<ndarray f8 [5]>` from a numpy array's pickled state `(version, shape, dtype, fortran, data)`.
fn ndarray_text(state: Option<&Value>) -> String {
    let Some(s) = state.and_then(Value::as_seq).filter(|s| s.len() >= 3) else { return "<ndarray>".into() };
    let shape = s[1].as_seq().map(|d| d.iter().map(|x| x.as_int().unwrap_or(-1)).collect::<Vec<_>>());
    let dtype = match &s[2] {
        Value::Object(d) => d.args.as_seq().and_then(|a| a.first()).and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    match (dtype, shape) {
        (Some(d), Some(sh)) => format!("<ndarray {d} {sh:?}>"),
        (None, Some(sh)) => format!("<ndarray {sh:?}>"),
        _ => "<ndarray>".into(),
    }
}

/// A listed tensor's view, validated against its storage.
#[derive(Debug, Clone)]
struct View {
    /// The storage's bytes in the file.
    storage: Range<usize>,
    es: usize,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
    /// Highest element index the view touches, plus one (0 for an empty view).
    end: usize,
    contiguous: bool,
}

impl View {
    /// Bytes of the file the view reads.
    fn span(&self) -> Range<usize> {
        self.storage.start + self.offset * self.es..self.storage.start + self.end * self.es
    }
}

fn is_row_major(size: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&n, &s) in size.iter().zip(stride).rev() {
        if n != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(n);
    }
    true
}

/// Copies a strided view out row-major. The indices were checked against `src` at open.
fn gather(src: &[u8], v: &View) -> Vec<u8> {
    let numel: usize = v.size.iter().product();
    let es = v.es;
    let mut out = Vec::with_capacity(numel * es);
    if numel == 0 {
        return out;
    }
    let mut idx = vec![0usize; v.size.len()];
    let mut pos = v.offset;
    loop {
        out.extend_from_slice(&src[pos * es..(pos + 1) * es]);
        // Odometer step over the dimensions, innermost first.
        let mut d = v.size.len();
        loop {
            if d == 0 {
                return out;
            }
            d -= 1;
            idx[d] += 1;
            // Wrapping: one step past the last index is never read, and may exceed the storage.
            pos = pos.wrapping_add(v.stride[d]);
            if idx[d] < v.size[d] {
                break;
            }
            pos = pos.wrapping_sub(v.stride[d].wrapping_mul(v.size[d]));
            idx[d] = 0;
        }
    }
}

/// An opened `torch.save` file.
pub struct PthCheckpoint {
    path: PathBuf,
    data: FileBytes,
    zip: bool,
    /// Sorted by name; `views[i]` belongs to `infos[i]`.
    infos: Vec<TensorInfo>,
    views: Vec<View>,
    unsupported: Vec<UnsupportedTensor>,
    metadata: Json,
}

/// Where a file keeps its storages.
enum Container {
    Zip(ZipLayout),
    /// The storage records start at this byte, after the pickles.
    Legacy(usize),
}

/// The members of a torch zip archive: `data.pkl`'s bytes and every member under the prefix.
struct ZipLayout {
    pickle: Range<usize>,
    /// Member name without the prefix (`data/0`, `byteorder`, …) → its bytes in the file.
    members: HashMap<String, Range<usize>>,
    prefix: String,
}

impl PthCheckpoint {
    /// Opens a `.pth` file (zip or legacy).
    pub fn open(path: impl AsRef<Path>) -> Result<PthCheckpoint> {
        let path = path.as_ref();
        Self::build(path, FileBytes::map(path)?)
    }

    /// Opens a file held in memory (tests, fuzzing); `path` only names it in errors.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<PthCheckpoint> {
        Self::build(path.as_ref(), FileBytes::Owned(bytes))
    }

    /// The top-level entries of the saved dict that are neither state dicts nor optimizer state
    /// (`*_optimizer`), as a JSON object in file order: for XLM `params`, `dico_id2word`,
    /// `dico_word2id`, `dico_counts`, `epoch`, `n_total_iter`, `best_metrics`, … Conversion
    /// rules are those of [`to_json`]: e.g. `params.pred_probs` (a tensor) reads
    /// `"<tensor float32 [3]>"`, `params.mask_scores` (a numpy array) `"<ndarray f8 [n]>"`, and
    /// `dico_id2word`'s integer keys become strings. Empty when the file is a bare state dict.
    pub fn metadata(&self) -> &Json {
        &self.metadata
    }

    /// Whether the file is a zip archive (torch ≥ 1.6) rather than the legacy format.
    pub fn is_zip(&self) -> bool {
        self.zip
    }

    fn build(path: &Path, data: FileBytes) -> Result<PthCheckpoint> {
        let bytes = data.bytes();
        // The container and pickle parsers report in text; a cut-off file is the one fault
        // they name ("… is truncated"), and it gets its own exit code like any other reader's.
        let input = |m: String| {
            let fault = if m.contains("is truncated") { InputFault::Truncated } else { InputFault::Corrupt };
            Error::input(path, m).because(fault)
        };
        let (root, container) = if bytes.starts_with(&LEGACY_MAGIC) {
            let (root, end) = read_legacy_pickles(bytes).map_err(input)?;
            (root, Container::Legacy(end))
        } else if bytes.starts_with(ZIP_MAGIC) {
            let z = read_zip(bytes).map_err(input)?;
            let (root, _) = pickle::parse(&bytes[z.pickle.clone()], 0).map_err(|m| input(format!("data.pkl: {m}")))?;
            (root, Container::Zip(z))
        } else {
            let head: Vec<String> = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
            return Err(input(format!(
                "not a torch.save file: it starts with neither a zip header (50 4b 03 04) nor the legacy magic \
                 number ({}); first bytes: {}",
                LEGACY_MAGIC.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "),
                if head.is_empty() { "none (empty file)".to_string() } else { head.join(" ") }
            )));
        };

        // Which entries are tensors and which are metadata.
        let Value::Dict(top) = &root else {
            return Err(input(format!(
                "the saved object is {}, expected a dict (a state dict, or a dict holding state dicts)",
                root.a_kind()
            )));
        };
        let mut listed: BTreeMap<String, TensorLike> = BTreeMap::new();
        let mut metadata = Map::new();
        if let Some(sd) = state_dict(&root) {
            listed.extend(sd);
        } else {
            for (k, v) in top {
                let key = key_text(k);
                if key.ends_with("_optimizer") {
                    continue;
                }
                match state_dict(v) {
                    Some(sd) => listed.extend(sd.into_iter().map(|(n, t)| (format!("{key}/{n}"), t))),
                    None => {
                        metadata.insert(key, to_json(v));
                    }
                }
            }
        }

        let storages = match &container {
            Container::Zip(z) => Storages::Zip { members: &z.members, prefix: &z.prefix },
            Container::Legacy(at) => Storages::Legacy(legacy_storages(bytes, &root, *at).map_err(input)?),
        };
        let mut infos = Vec::with_capacity(listed.len());
        let mut views = Vec::with_capacity(listed.len());
        let mut unsupported = Vec::new();
        for (name, t) in listed {
            match t {
                TensorLike::Tensor(spec) => {
                    let (dtype, view) = check_view(&spec, &storages).map_err(|m| Error::tensor(path, &name, m))?;
                    infos.push(TensorInfo { name, dtype, shape: spec.size });
                    views.push(view);
                }
                TensorLike::Unsupported(reason) => unsupported.push(UnsupportedTensor { name, tf_dtype: None, reason }),
                TensorLike::Malformed(m) => return Err(Error::tensor(path, &name, m)),
            }
        }
        let zip = matches!(container, Container::Zip(_));
        Ok(PthCheckpoint {
            path: path.to_path_buf(),
            data,
            zip,
            infos,
            views,
            unsupported,
            metadata: Json::Object(metadata),
        })
    }

    fn lookup(&self, name: &str) -> Result<(&TensorInfo, &View)> {
        match self.infos.binary_search_by(|t| t.name.as_str().cmp(name)) {
            Ok(i) => Ok((&self.infos[i], &self.views[i])),
            Err(_) => match self.unsupported.iter().find(|u| u.name == name) {
                Some(u) => Err(Error::tensor(&self.path, name, u.reason.clone()).because(InputFault::Unsupported)),
                None => Err(Error::tensor(&self.path, name, "no such tensor in the checkpoint").because(InputFault::Missing)),
            },
        }
    }
}

/// Storage key → bytes of the file, per container.
enum Storages<'a> {
    Zip {
        members: &'a HashMap<String, Range<usize>>,
        prefix: &'a str,
    },
    /// Key → byte range.
    Legacy(HashMap<String, Range<usize>>),
}

/// The first pickles of a legacy file: magic, protocol version, system info, the object.
fn read_legacy_pickles(bytes: &[u8]) -> std::result::Result<(Value, usize), String> {
    let at = LEGACY_MAGIC.len();
    let (version, at) = pickle::parse(bytes, at).map_err(|m| format!("legacy pickle #2 (protocol version): {m}"))?;
    if !matches!(version, Value::Int(LEGACY_PROTOCOL)) {
        return Err(format!("legacy protocol version is {version:?}, expected {LEGACY_PROTOCOL}"));
    }
    let (info, at) = pickle::parse(bytes, at).map_err(|m| format!("legacy pickle #3 (system info): {m}"))?;
    if let Value::Dict(kv) = &info {
        for (k, v) in kv {
            if k.as_str() == Some("little_endian") && matches!(v, Value::Bool(false)) {
                return Err("written on a big-endian machine (little_endian: False); not supported".into());
            }
        }
    }
    pickle::parse(bytes, at).map_err(|m| format!("legacy pickle #4 (the saved object): {m}"))
}

/// Walks the legacy storage section: pickle #5 lists the keys, then each storage follows as
/// i64le element count and raw bytes. Element sizes come from the storages' classes.
fn legacy_storages(
    bytes: &[u8],
    root: &Value,
    at: usize,
) -> std::result::Result<HashMap<String, Range<usize>>, String> {
    let (keys, mut pos) = pickle::parse(bytes, at).map_err(|m| format!("legacy pickle #5 (storage keys): {m}"))?;
    let keys = keys
        .as_seq()
        .ok_or_else(|| format!("legacy pickle #5 is {}, expected a list of storage keys", keys.a_kind()))?;
    let mut refs = Vec::new();
    collect_storages(root, &mut refs);
    let mut first: HashMap<&str, &StorageRef> = HashMap::new();
    for r in &refs {
        first.entry(r.key.as_str()).or_insert(r);
    }
    let mut out = HashMap::with_capacity(keys.len());
    for k in keys {
        let key = match k {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            other => return Err(format!("legacy storage key is {}, expected a string", other.a_kind())),
        };
        let r = first.get(key.as_str()).ok_or_else(|| {
            format!("storage '{key}' is listed but nothing in the pickle refers to it, so its element size is unknown")
        })?;
        let (_, es) =
            storage_class(&r.class).ok_or_else(|| format!("storage '{key}' has unknown class torch.{}", r.class))?;
        let head = bytes.get(pos..pos + 8).ok_or_else(|| {
            format!("file is truncated: storage '{key}' should start at byte {pos}, the file has {}", bytes.len())
        })?;
        let n = i64::from_le_bytes([head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7]]);
        if n < 0 || n as u64 != r.numel as u64 {
            return Err(format!(
                "storage '{key}' at byte {pos} records {n} elements, but the pickle declares {} (corrupt file?)",
                r.numel
            ));
        }
        let start = pos + 8;
        let end = r.numel.checked_mul(es).and_then(|len| start.checked_add(len)).filter(|&e| e <= bytes.len());
        let end = end.ok_or_else(|| {
            format!(
                "file is truncated: storage '{key}' needs bytes [{start}, {}) ({} × {es} bytes), the file has {}",
                start as u128 + r.numel as u128 * es as u128,
                r.numel,
                bytes.len()
            )
        })?;
        out.insert(key, start..end);
        pos = end;
    }
    Ok(out)
}

/// Finds `<name>/data.pkl` and every stored member of the archive.
fn read_zip(bytes: &[u8]) -> std::result::Result<ZipLayout, String> {
    let mut z =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| format!("cannot read the zip archive: {e}"))?;
    let names: Vec<Vec<u8>> = z.file_names_raw().map(<[u8]>::to_vec).collect();
    let prefix = names.iter().find_map(|n| pickle_prefix(n)).map(str::to_string).ok_or_else(|| {
        "zip archive without a <name>/data.pkl member: not written by torch.save (torch.jit archives are not supported)"
            .to_string()
    })?;
    let mut members = HashMap::new();
    let mut pickle = None;
    for (i, raw) in names.iter().enumerate() {
        let Ok(name) = std::str::from_utf8(raw) else { continue };
        let Some(rest) = name.strip_prefix(prefix.as_str()) else { continue };
        let f = z.by_index_raw(i).map_err(|e| format!("zip member {name}: {e}"))?;
        if f.compression() != zip::CompressionMethod::Stored {
            return Err(format!(
                "zip member {name} is compressed ({}); torch.save stores members uncompressed, and only those can be \
                 read in place (re-save the file with torch.save)",
                f.compression()
            ));
        }
        let start = f.data_start().ok_or_else(|| format!("zip member {name}: no data offset"))?;
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(f.compressed_size()).ok())
            .and_then(|(s, n)| Some(s..s.checked_add(n)?))
            .filter(|r| r.end <= bytes.len() && f.size() == f.compressed_size())
            .ok_or_else(|| format!("zip member {name}: its data lies outside the file (truncated?)"))?;
        if rest == "data.pkl" {
            pickle = Some(range.clone());
        }
        if rest == "byteorder" && bytes.get(range.clone()) != Some(b"little".as_slice()) {
            let got = String::from_utf8_lossy(bytes.get(range.clone()).unwrap_or_default()).into_owned();
            return Err(format!("{name} is '{got}': only little-endian archives are supported"));
        }
        members.insert(rest.to_string(), range);
    }
    let pickle = pickle.ok_or_else(|| format!("zip member {prefix}data.pkl cannot be read"))?;
    Ok(ZipLayout { pickle, members, prefix })
}

/// Locates a tensor's storage and checks its view; returns the dtype and the view.
fn check_view(spec: &Spec, storages: &Storages) -> std::result::Result<(DType, View), String> {
    let s = &spec.storage;
    let Some((Some(dtype), es)) = storage_class(&s.class) else {
        return Err(format!("storage class torch.{} is not supported", s.class));
    };
    let mut range = match storages {
        Storages::Zip { members, prefix } => {
            let r = members
                .get(&format!("data/{}", s.key))
                .ok_or_else(|| format!("its storage member {prefix}data/{} is missing from the archive", s.key))?;
            let need = s.numel.checked_mul(es).filter(|&n| n <= r.len()).ok_or_else(|| {
                format!(
                    "storage member {prefix}data/{} has {} bytes, but the pickle declares {} {} elements",
                    s.key,
                    r.len(),
                    s.numel,
                    dtype.name()
                )
            })?;
            r.start..r.start + need
        }
        Storages::Legacy(map) => map
            .get(&s.key)
            .cloned()
            .ok_or_else(|| format!("its storage '{}' is not in the file's storage list", s.key))?,
    };
    if let Some((off, n)) = s.view {
        let len = range.len() / es;
        if off.checked_add(n).is_none_or(|e| e > len) {
            return Err(format!(
                "storage view [{off}, {off}+{n}) lies outside its root storage '{}' of {len} elements",
                s.key
            ));
        }
        range = range.start + off * es..range.start + (off + n) * es;
    }
    let avail = range.len() / es;
    let numel = spec.size.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("its size overflows")?;
    let end = if numel == 0 {
        0
    } else {
        let last = spec
            .size
            .iter()
            .zip(&spec.stride)
            .try_fold(spec.offset, |acc, (&n, &st)| (n - 1).checked_mul(st).and_then(|x| acc.checked_add(x)));
        match last.and_then(|l| l.checked_add(1)) {
            Some(end) if end <= avail => end,
            _ => {
                return Err(format!(
                    "view (storage offset {}, size {:?}, stride {:?}) reaches past the end of its storage '{}' of \
                     {avail} {} elements",
                    spec.offset,
                    spec.size,
                    spec.stride,
                    s.key,
                    dtype.name()
                ))
            }
        }
    };
    let contiguous = numel == 0 || is_row_major(&spec.size, &spec.stride);
    let view = View {
        storage: range,
        es,
        // An empty view reads nothing, wherever torch says it starts (torch does not check the
        // offset of an empty tensor either); 0 keeps every position computed from it in the file.
        offset: if numel == 0 { 0 } else { spec.offset },
        size: spec.size.clone(),
        stride: spec.stride.clone(),
        end,
        contiguous,
    };
    Ok((dtype, view))
}

impl Checkpoint for PthCheckpoint {
    fn path(&self) -> &Path {
        &self.path
    }

    fn format(&self) -> &'static str {
        FORMAT
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn unsupported(&self) -> &[UnsupportedTensor] {
        &self.unsupported
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let (info, v) = self.lookup(name)?;
        // Views were checked against their storages at open; this only guards against a bug.
        let outside = || Error::tensor(&self.path, name, "view lies outside the file (reader bug)");
        let file = self.data.bytes();
        if v.contiguous {
            let start = v.storage.start + v.offset * v.es;
            return Ok(Cow::Borrowed(file.get(start..start + info.numel() * v.es).ok_or_else(outside)?));
        }
        let storage = file.get(v.storage.clone()).ok_or_else(outside)?;
        Ok(Cow::Owned(gather(storage, v)))
    }

    fn read_strings(&self, name: &str) -> Result<Vec<Vec<u8>>> {
        let (info, _) = self.lookup(name)?;
        Err(Error::tensor(&self.path, name, format!("holds {} values, not strings; use read", info.dtype.name())))
    }

    /// The [`PthCheckpoint::metadata`], when the file has any (a bare state dict has none).
    fn embedded_config(&self) -> Option<Json> {
        self.metadata.as_object().is_some_and(|m| !m.is_empty()).then(|| self.metadata.clone())
    }

    fn release(&self, name: &str) {
        if let Ok((_, v)) = self.lookup(name) {
            let span = v.span();
            self.data.release(span.start, span.len());
        }
    }
}

impl std::fmt::Debug for PthCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PthCheckpoint")
            .field("path", &self.path)
            .field("zip", &self.zip)
            .field("tensors", &self.infos.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::pickle::tests::W;
    use proptest::prelude::*;
    use std::io::Write;

    fn golden(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/formats/pth").join(name)
    }

    fn le<T: Copy, const N: usize>(v: impl IntoIterator<Item = T>, f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }

    fn f32s(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
        le(v, f32::to_le_bytes)
    }

    /// Name, dtype, shape, little-endian bytes, and whether `read` borrows them.
    type Expected = (&'static str, DType, Vec<usize>, Vec<u8>, bool);

    /// What golden/formats/pth/make.py put in the `model` state dict, computed the same way.
    fn expected_model() -> Vec<Expected> {
        let emb = |i: usize| i as f32 / 4.0 - 1.0;
        let base = |i: usize| i as f32 - 5.5;
        let half = [-1.0f32, -0.5, 0.0, 0.5];
        vec![
            ("position_embeddings.weight", DType::F32, vec![4, 3], f32s((0..12).map(|i| i as f32 / 8.0)), true),
            ("embeddings.weight", DType::F32, vec![5, 3], f32s((0..15).map(emb)), true),
            ("attentions.0.q_lin.weight", DType::F32, vec![3, 4], f32s((0..12).map(base)), true),
            // base.t(): element (i, j) is base[j][i].
            (
                "attentions.0.k_lin.weight",
                DType::F32,
                vec![4, 3],
                f32s((0..12).map(|k| base((k % 3) * 4 + k / 3))),
                false,
            ),
            ("attentions.0.q_lin.bias", DType::F32, vec![4], f32s((4..8).map(base)), true),
            ("pred_layer.proj.bias", DType::F32, vec![5], f32s((0..5).map(|i| emb(i * 3 + 1))), false),
            ("dtypes.float64", DType::F64, vec![3], le((0..3).map(|i| i as f64 / 4.0), f64::to_le_bytes), true),
            ("dtypes.float16", DType::F16, vec![4], le(half.map(half::f16::from_f32), half::f16::to_le_bytes), true),
            (
                "dtypes.bfloat16",
                DType::BF16,
                vec![4],
                le(half.map(half::bf16::from_f32), half::bf16::to_le_bytes),
                true,
            ),
            (
                "dtypes.int64",
                DType::I64,
                vec![4],
                le((-2..2).map(|i: i64| i * 1_000_000_000_000), i64::to_le_bytes),
                true,
            ),
            ("dtypes.int32", DType::I32, vec![4], le((-2..2).map(|i: i32| i * 100_000), i32::to_le_bytes), true),
            ("dtypes.int16", DType::I16, vec![4], le((-2..2).map(|i: i16| i * 1000), i16::to_le_bytes), true),
            ("dtypes.uint8", DType::U8, vec![4], vec![250, 251, 252, 253], true),
            ("dtypes.int8", DType::I8, vec![4], le(-4i8..0, i8::to_le_bytes), true),
            ("dtypes.bool", DType::Bool, vec![3], vec![1, 0, 1], true),
            ("scalar", DType::F32, vec![], f32s([2.5]), true),
            ("empty", DType::F32, vec![0, 3], vec![], true),
        ]
    }

    fn assert_has(e: &str, parts: &[&str]) {
        for p in parts {
            assert!(e.contains(p), "{e:?} should contain {p:?}");
        }
    }

    #[test]
    fn golden_xlm_files_in_both_containers() {
        let mut seen = Vec::new();
        for (file, zip) in [("xlm-zip.pth", true), ("xlm-legacy.pth", false)] {
            let path = golden(file);
            let ck = PthCheckpoint::open(&path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((ck.is_zip(), ck.format(), ck.files()), (zip, "torch-pth", vec![path.clone()]));
            let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
            let mut want_names: Vec<String> = expected_model().iter().map(|t| format!("model/{}", t.0)).collect();
            want_names.sort();
            assert_eq!(names, want_names, "{file}: only the model's tensors, sorted; no optimizer, no params");
            for (name, dtype, shape, bytes, borrowed) in expected_model() {
                let name = format!("model/{name}");
                let info = ck.info(&name).unwrap();
                assert_eq!((info.dtype, &info.shape), (dtype, &shape), "{file} {name}");
                let got = ck.read(&name).unwrap();
                assert_eq!(&*got, bytes.as_slice(), "{file} {name}");
                assert_eq!(matches!(got, Cow::Borrowed(_)), borrowed, "{file} {name}");
                ck.release(&name);
                assert_eq!(&*ck.read(&name).unwrap(), bytes.as_slice(), "{file} {name} after release");
            }
            assert!(ck.unsupported().is_empty());
            assert_has(&ck.read("params/pred_probs").unwrap_err().to_string(), &[file, "no such tensor"]);
            assert_has(
                &ck.read_strings("model/scalar").unwrap_err().to_string(),
                &["holds float32 values, not strings"],
            );
            seen.push(ck.metadata().clone());
        }
        assert_eq!(seen[0], seen[1], "both containers give the same metadata");
        let m = &seen[0];
        let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "epoch",
                "n_total_iter",
                "best_metrics",
                "best_stopping_criterion",
                "dico_id2word",
                "dico_word2id",
                "dico_counts",
                "params"
            ]
        );
        assert_eq!(m["epoch"], 7);
        assert_eq!(m["best_metrics"], json!({"valid_en_mlm_ppl": 12.5}));
        assert_eq!(m["best_stopping_criterion"], -1e12);
        assert_eq!(
            m["dico_id2word"],
            json!({"0": "<s>", "1": "</s>", "2": "<pad>", "3": "<unk>", "4": "hello@@", "5": "world"})
        );
        assert_eq!(m["dico_word2id"]["hello@@"], 4);
        assert_eq!(m["dico_counts"], json!({"hello@@": 7, "world": 3}));
        let p = &m["params"];
        for (k, v) in [
            ("emb_dim", json!(3)),
            ("dropout", json!(0.1)),
            ("gelu_activation", json!(true)),
            ("sinusoidal_embeddings", json!(false)),
            ("lang2id", json!({"en": 0, "fr": 1})),
            ("id2lang", json!({"0": "en", "1": "fr"})),
            ("langs", json!(["en", "fr"])),
            ("mt_steps", json!([["en", "fr"]])),
            ("stopping_criterion", Json::Null),
            ("tokens_per_batch", json!(1u64 << 40)),
            ("big", json!("1180591620717411303425")),
            ("neg_big", json!("-1180591620717411303424")),
            ("clip_grad_norm", json!("Infinity")),
            ("exp_name", json!("héllo ✓")),
            ("pred_probs", json!("<tensor float32 [3]>")),
            ("mask_scores", json!("<ndarray f8 [6]>")),
        ] {
            assert_eq!(p[k], v, "params.{k}");
        }
    }

    #[test]
    fn bare_state_dict_keeps_its_keys_and_module_prefix() {
        let ck = crate::source::open(&golden("state-dict.pth")).unwrap();
        assert_eq!(ck.format(), "torch-pth");
        let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["module.embeddings.weight", "module.pred_layer.proj.bias"]);
        assert_eq!(&*ck.read("module.pred_layer.proj.bias").unwrap(), f32s([2.0, 5.0]).as_slice());
        let ck = PthCheckpoint::open(golden("state-dict.pth")).unwrap();
        assert_eq!(ck.metadata(), &json!({}));
    }

    #[test]
    fn sniffing_by_content() {
        assert_eq!(sniff(&golden("xlm-zip.pth")), Sniff::Zip);
        assert_eq!(sniff(&golden("xlm-legacy.pth")), Sniff::Legacy);
        assert_eq!(sniff(&golden("make.py")), Sniff::NotTorch);
        assert_eq!(sniff(&golden("no-such-file.pth")), Sniff::NotTorch);
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.zip");
        std::fs::write(&other, zip_of(&[("docs/readme.txt", b"hi")])).unwrap();
        assert_eq!(sniff(&other), Sniff::ZipWithoutPickle);
        let e = crate::source::resolve(&other).unwrap_err().to_string();
        assert_has(&e, &["other.zip is a zip archive without a <name>/data.pkl member"]);
        let fake = dir.path().join("mlm_en_2048.pth");
        std::fs::write(&fake, b"<html>not found</html>").unwrap();
        assert_has(
            &crate::source::resolve(&fake).unwrap_err().to_string(),
            &["mlm_en_2048.pth is named .pth but is not a torch.save file"],
        );
        let copy = dir.path().join("model.bin");
        std::fs::copy(golden("xlm-legacy.pth"), &copy).unwrap();
        assert_eq!(crate::source::resolve(&copy).unwrap(), crate::source::Resolved::TorchPickle { file: copy.clone() });
        assert_eq!(crate::source::resolve(&copy).unwrap().format(), "torch-pth");
    }

    // ------------------------------------------------------------ crafted files

    /// A zip archive of stored members.
    fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in members {
            z.start_file(*name, opts).unwrap();
            z.write_all(bytes).unwrap();
        }
        z.finish().unwrap().into_inner()
    }

    /// A torch zip archive: `archive/data.pkl`, `archive/data/<key>`, `archive/version`.
    fn torch_zip(pkl: &[u8], storages: &[(&str, &[u8])]) -> Vec<u8> {
        let names: Vec<String> = storages.iter().map(|(k, _)| format!("archive/data/{k}")).collect();
        let mut members: Vec<(&str, &[u8])> = vec![("archive/data.pkl", pkl), ("archive/byteorder", b"little")];
        members.extend(names.iter().zip(storages).map(|(n, (_, b))| (n.as_str(), *b)));
        members.push(("archive/version", b"3\n"));
        zip_of(&members)
    }

    /// A legacy file: magic, 1001, system info, the object, the key list, the storages.
    fn torch_legacy(pkl: &[u8], storages: &[(&str, i64, &[u8])]) -> Vec<u8> {
        let mut out = LEGACY_MAGIC.to_vec();
        out.extend(W::new().int(1001).stop());
        out.extend(
            W::new().op(b'}').op(b'(').s("protocol_version").int(1001).s("little_endian").op(0x88).op(b'u').stop(),
        );
        out.extend_from_slice(pkl);
        let keys = storages.iter().fold(W::new().op(b']').op(b'('), |w, (k, _, _)| w.s(k)).op(b'e').stop();
        out.extend(keys);
        for (_, n, bytes) in storages {
            out.extend_from_slice(&n.to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// `{"model": {"w": <tensor>}}` around one tensor call written by `tensor`.
    fn model_with(tensor: impl FnOnce(W) -> W) -> Vec<u8> {
        tensor(W::new().op(b'}').op(b'(').s("model").op(b'}').op(b'(').s("w")).op(b'u').op(b'u').stop()
    }

    fn open_bytes(bytes: Vec<u8>) -> Result<PthCheckpoint> {
        PthCheckpoint::from_bytes("x/mlm.pth", bytes)
    }

    fn err_of(bytes: Vec<u8>) -> Error {
        match open_bytes(bytes) {
            Err(e) => e,
            Ok(c) => panic!("expected an error, opened {c:?}"),
        }
    }

    fn tensor_err(bytes: Vec<u8>, tensor: &str, parts: &[&str]) {
        match err_of(bytes) {
            e @ Error::Tensor { .. } => {
                let m = e.to_string();
                assert_has(&m, &["x/mlm.pth: ", &format!("tensor '{tensor}'")]);
                assert_has(&m, parts);
            }
            e => panic!("expected a tensor error, got {e:?}"),
        }
    }

    fn input_err(bytes: Vec<u8>, parts: &[&str]) {
        match err_of(bytes) {
            e @ Error::Input { .. } => {
                let m = e.to_string();
                assert_has(&m, &["x/mlm.pth: "]);
                assert_has(&m, parts);
            }
            e => panic!("expected an input error, got {e:?}"),
        }
    }

    const SIX: [f32; 6] = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];

    #[test]
    fn crafted_views_in_both_containers() {
        // A [3, 2] view with stride (1, 3) at offset 0 of 6 floats, read row-major; and a
        // parameter wrapper around a contiguous [2] view at offset 4.
        let pkl = W::new()
            .op(b'}')
            .op(b'(')
            .s("encoder")
            .op(b'}')
            .op(b'(')
            .s("t")
            .tensor("FloatStorage", "0", 6, 0, &[3, 2], &[1, 3])
            .s("p")
            .global("torch._utils", "_rebuild_parameter")
            .op(b'(')
            .tensor("FloatStorage", "0", 6, 4, &[2], &[1])
            .op(0x89)
            .global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b't')
            .op(b'R')
            .op(b'u')
            .s("decoder")
            .op(b'}')
            .s("b")
            .tensor("ByteStorage", "1", 2, 1, &[], &[])
            .op(b's')
            .s("decoder_optimizer")
            .op(b'}')
            .s("x")
            .tensor("ByteStorage", "1", 2, 0, &[1], &[1])
            .op(b's')
            .op(b'u')
            .stop();
        let six = f32s(SIX);
        for bytes in
            [torch_zip(&pkl, &[("0", &six), ("1", &[7, 9])]), torch_legacy(&pkl, &[("0", 6, &six), ("1", 2, &[7, 9])])]
        {
            let ck = open_bytes(bytes).unwrap();
            let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["decoder/b", "encoder/p", "encoder/t"]);
            assert_eq!(&*ck.read("encoder/t").unwrap(), f32s([0.0, 3.0, 1.0, 4.0, 2.0, 5.0]).as_slice());
            assert_eq!(&*ck.read("encoder/p").unwrap(), f32s([4.0, 5.0]).as_slice());
            assert_eq!(&*ck.read("decoder/b").unwrap(), &[9]);
            assert_eq!(ck.info("decoder/b").unwrap().shape, Vec::<usize>::new());
            assert_eq!(ck.metadata(), &json!({}));
        }
    }

    /// Found by the fuzz target (tests/pth_fuzz.rs): an empty tensor whose storage offset lies
    /// past its storage, or anywhere, reads as empty instead of failing (or overflowing).
    #[test]
    fn empty_views_read_empty_wherever_they_start() {
        let six = f32s(SIX);
        for offset in [0, 6, 1000, i64::MAX] {
            let pkl = model_with(|w| w.tensor("FloatStorage", "0", 6, offset, &[0, 3], &[3, 1]));
            for bytes in [torch_zip(&pkl, &[("0", &six)]), torch_legacy(&pkl, &[("0", 6, &six)])] {
                let ck = open_bytes(bytes).unwrap();
                assert_eq!(ck.read("model/w").unwrap().len(), 0, "offset {offset}");
                ck.release("model/w");
            }
        }
    }

    #[test]
    fn legacy_storage_views_read_their_slice_of_the_root() {
        // ('storage', FloatStorage, 'root', 'cpu', 6, ('view', 2, 3)): elements 2..5 of the root.
        let pkl = model_with(|w| {
            w.global("torch._utils", "_rebuild_tensor_v2")
                .op(b'(')
                .op(b'(')
                .s("storage")
                .global("torch", "FloatStorage")
                .s("root")
                .s("cpu")
                .int(6)
                .s("view")
                .int(2)
                .int(3)
                .op(0x87)
                .op(b't')
                .op(b'Q')
                .int(1)
                .ints(&[2])
                .ints(&[1])
                .op(b't')
                .op(b'R')
        });
        let six = f32s(SIX);
        let ck = open_bytes(torch_legacy(&pkl, &[("root", 6, &six)])).unwrap();
        assert_eq!(&*ck.read("model/w").unwrap(), f32s([3.0, 4.0]).as_slice());
    }

    #[test]
    fn tensor_errors_name_the_tensor() {
        let six = f32s(SIX);
        let zip = |t: fn(W) -> W| torch_zip(&model_with(t), &[("0", &f32s(SIX))]);
        tensor_err(zip(|w| w.tensor("FloatStorage", "0", 6, 1, &[2, 3], &[3, 1])), "model/w", &[
            "view (storage offset 1, size [2, 3], stride [3, 1]) reaches past the end of its storage '0' of 6 float32 elements",
        ]);
        tensor_err(
            zip(|w| w.tensor("FloatStorage", "0", 6, 0, &[2, 3], &[3])),
            "model/w",
            &["size [2, 3] and stride [3] have different lengths"],
        );
        tensor_err(
            zip(|w| w.tensor("FloatStorage", "0", 6, -1, &[2], &[1])),
            "model/w",
            &["storage_offset is -1, expected a non-negative integer"],
        );
        tensor_err(
            zip(|w| w.tensor("FloatStorage", "0", 8, 0, &[2], &[1])),
            "model/w",
            &["storage member archive/data/0 has 24 bytes, but the pickle declares 8 float32 elements"],
        );
        tensor_err(
            zip(|w| w.tensor("FloatStorage", "5", 6, 0, &[2], &[1])),
            "model/w",
            &["storage member archive/data/5 is missing"],
        );
        tensor_err(
            zip(|w| w.tensor("NoSuchStorage", "0", 6, 0, &[2], &[1])),
            "model/w",
            &["unknown storage class torch.NoSuchStorage"],
        );
        tensor_err(
            zip(|w| w.global("torch._utils", "_rebuild_tensor_v2").op(b')').op(b'R')),
            "model/w",
            &["expected (storage, offset, size, stride, …)"],
        );
        tensor_err(
            zip(|w| w.global("torch._utils", "_rebuild_parameter").int(3).op(0x85).op(b'R')),
            "model/w",
            &["not applied to a tensor"],
        );
        tensor_err(
            torch_legacy(&model_with(|w| w.tensor("FloatStorage", "0", 6, 0, &[7], &[1])), &[("0", 6, &six)]),
            "model/w",
            &["reaches past the end of its storage '0' of 6 float32 elements"],
        );
        // Complex and quantized tensors are listed as unsupported, not fatal.
        let ck = open_bytes(zip(|w| w.tensor("ComplexFloatStorage", "0", 3, 0, &[3], &[1]))).unwrap();
        assert!(ck.tensors().is_empty());
        assert_eq!(ck.unsupported()[0].name, "model/w");
        assert_has(
            &ck.read("model/w").unwrap_err().to_string(),
            &["'model/w'", "torch.ComplexFloatStorage is not supported"],
        );
        let ck = open_bytes(zip(|w| w.global("torch._utils", "_rebuild_qtensor").op(b')').op(b'R'))).unwrap();
        assert_has(&ck.unsupported()[0].reason, &["_rebuild_qtensor tensors are not supported"]);
    }

    #[test]
    fn container_errors_name_the_file() {
        let six = f32s(SIX);
        let good = model_with(|w| w.tensor("FloatStorage", "0", 6, 0, &[6], &[1]));
        input_err(b"\x89PNG\r\n".to_vec(), &["not a torch.save file", "89 50 4e 47 0d 0a"]);
        input_err(vec![], &["none (empty file)"]);
        input_err(zip_of(&[("archive/other.pkl", b"x")]), &["without a <name>/data.pkl member"]);
        input_err(b"PK\x03\x04 and then nothing".to_vec(), &["cannot read the zip archive"]);
        input_err(torch_zip(&W::new().op(b']').stop(), &[]), &["the saved object is a list, expected a dict"]);
        input_err(
            torch_zip(&[0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0], &[]),
            &["data.pkl: unsupported pickle opcode FRAME (0x95) at byte 2"],
        );
        input_err(torch_zip(&good[..good.len() - 1], &[("0", &six)]), &["data.pkl: pickle is truncated"]);
        let mut big = torch_zip(&good, &[("0", &six)]);
        let at = big.windows(6).position(|w| w == b"little").unwrap();
        big[at..at + 6].copy_from_slice(b"big\0\0\0");
        input_err(big, &["archive/byteorder is 'big\0\0\0': only little-endian"]);
        // A compressed member: the method field rewritten to deflate in both headers.
        let mut deflated = torch_zip(&good, &[("0", &six)]);
        for sig in [&b"PK\x03\x04"[..], b"PK\x01\x02"] {
            let offsets: Vec<usize> =
                deflated.windows(4).enumerate().filter(|(_, w)| *w == sig).map(|(i, _)| i).collect();
            for i in offsets {
                let field = if sig[2] == 3 { i + 8 } else { i + 10 };
                deflated[field] = 8;
            }
        }
        input_err(deflated, &["zip member archive/data.pkl is compressed (Deflated)", "uncompressed"]);

        // Legacy: version, byte order, key list, storage records.
        let legacy = torch_legacy(&good, &[("0", 6, &six)]);
        input_err(legacy[..legacy.len() - 1].to_vec(), &["file is truncated: storage '0' needs bytes [", "× 4 bytes"]);
        input_err(
            torch_legacy(&good, &[("0", 5, &six)]),
            &["storage '0' at byte", "records 5 elements, but the pickle declares 6"],
        );
        input_err(
            torch_legacy(&good, &[("0", 6, &six), ("9", 1, &[0; 4])]),
            &["storage '9' is listed but nothing in the pickle refers to it"],
        );
        let mut v = legacy.clone();
        v[15..15 + 6].copy_from_slice(&W::new().int(1000).stop()[..6]);
        input_err(v, &["legacy protocol version is Int(1000), expected 1001"]);
        let mut v = legacy.clone();
        let at = v.windows(13).position(|w| w == b"little_endian").unwrap();
        v[at + 13] = 0x89;
        input_err(v, &["big-endian machine"]);
        input_err(legacy[..30].to_vec(), &["legacy pickle #3 (system info): pickle is truncated"]);
    }

    /// What `torch.load` of an untrusted file would run, `params = {"x": os.system("touch …")}`,
    /// refused in either container before anything else is read.
    #[test]
    fn a_pickle_calling_os_system_is_refused() {
        let six = f32s(SIX);
        let pkl = W::new()
            .op(b'}')
            .op(b'(')
            .s("model")
            .op(b'}')
            .s("w")
            .tensor("FloatStorage", "0", 6, 0, &[6], &[1])
            .op(b's')
            .s("params")
            .op(b'}')
            .s("x")
            .global("os", "system")
            .s("touch /tmp/tfconv-pwned")
            .op(0x85)
            .op(b'R')
            .op(b's')
            .op(b'u')
            .stop();
        let refusal = "names os.system, which torch.save does not write for tensors and plain data; refusing the file";
        input_err(torch_zip(&pkl, &[("0", &six)]), &["data.pkl: GLOBAL at byte", refusal]);
        input_err(torch_legacy(&pkl, &[("0", 6, &six)]), &["legacy pickle #4 (the saved object): GLOBAL at byte", refusal]);
        assert!(!Path::new("/tmp/tfconv-pwned").exists());
    }

    #[test]
    fn optimizer_state_is_neither_listed_nor_metadata() {
        let pkl = W::new()
            .op(b'}')
            .op(b'(')
            .s("model_optimizer")
            .op(b'}')
            .s("w")
            .tensor("FloatStorage", "0", 6, 0, &[6], &[1])
            .op(b's')
            .s("epoch")
            .int(3)
            .op(b'u')
            .stop();
        let ck = open_bytes(torch_zip(&pkl, &[("0", &f32s(SIX))])).unwrap();
        assert!(ck.tensors().is_empty());
        assert_eq!(ck.metadata(), &json!({"epoch": 3}));
    }

    #[test]
    fn json_of_other_objects() {
        let obj = |w: W| pickle::parse(&w.stop(), 0).unwrap().0;
        let ns =
            obj(W::new().global("argparse", "Namespace").op(b')').op(b'R').op(b'}').s("lr").int(2).op(b's').op(b'b'));
        assert_eq!(to_json(&ns), json!({"lr": 2}));
        let set = obj(W::new().global("builtins", "set").op(b']').s("a").op(b'a').op(0x85).op(b'R'));
        assert_eq!(to_json(&set), json!(["a"]));
        let dev = obj(W::new().global("torch", "device").s("cpu").op(0x85).op(b'R'));
        assert_eq!(to_json(&dev), json!("<object torch.device>"));
        let keys = obj(W::new()
            .op(b'}')
            .op(b'(')
            .op(0x88)
            .int(1)
            .op(b'N')
            .int(2)
            .op(b'G')
            .raw(&1.5f64.to_be_bytes())
            .int(3)
            .op(b'u'));
        assert_eq!(to_json(&keys), json!({"true": 1, "null": 2, "1.5": 3}));
        assert_eq!(to_json(&Value::Float(f64::NAN)), json!("NaN"));
        assert_eq!(to_json(&Value::Float(f64::NEG_INFINITY)), json!("-Infinity"));
        assert_eq!(to_json(&Value::Bytes(vec![1, 2])), json!("<bytes, 2 long>"));
    }

    // ---------------------------------------------------------------- fuzzing

    fn exercise(bytes: Vec<u8>) -> usize {
        let Ok(ck) = open_bytes(bytes) else { return 0 };
        let _ = serde_json::to_string(ck.metadata());
        ck.tensors()
            .iter()
            .map(|t| {
                let b = ck.read(&t.name).expect("an opened checkpoint reads every listed tensor");
                assert_eq!(Some(b.len()), t.nbytes());
                ck.release(&t.name);
            })
            .count()
    }

    fn golden_bytes(zip: bool) -> &'static [u8] {
        static FILES: std::sync::OnceLock<[Vec<u8>; 2]> = std::sync::OnceLock::new();
        let files = FILES.get_or_init(|| {
            [golden("xlm-zip.pth"), golden("xlm-legacy.pth")]
                .map(|p| std::fs::read(&p).unwrap_or_else(|e| panic!("{e}")))
        });
        &files[usize::from(!zip)]
    }

    #[test]
    fn fuzz_inputs_reach_the_reads() {
        assert_eq!(exercise(golden_bytes(true).to_vec()), 17);
        assert_eq!(exercise(golden_bytes(false).to_vec()), 17);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

        /// No file may panic the reader: random bytes behind either magic, and byte mutations
        /// and cuts of the torch-written fixtures (pickle, zip structures, storages alike).
        #[test]
        fn fuzz_pth(zip in any::<bool>(),
                    random in proptest::collection::vec(any::<u8>(), 0..200),
                    muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..5),
                    cut in proptest::option::of(any::<usize>())) {
            let magic: &[u8] = if zip { ZIP_MAGIC } else { &LEGACY_MAGIC };
            exercise([magic, &random].concat());
            let mut b = golden_bytes(zip).to_vec();
            for (at, v) in muts {
                let n = b.len();
                b[at % n] = v;
            }
            if let Some(c) = cut {
                b.truncate(c % (b.len() + 1));
            }
            exercise(b);
        }
    }
}
