//! A `torch.save` writer for XLM's golden fixtures and tests, in both containers: the zip
//! archive of torch ≥ 1.6 and the legacy stream of the 2019 releases (checkpoint-formats.md §5).
//!
//! The pickles are written opcode for opcode as CPython's pickler writes them at protocol 2 (the
//! one torch uses), so that a legacy file matches what `torch.save(obj,
//! _use_new_zipfile_serialization=False)` writes byte for byte, given the same storage keys
//! (tests/xlm_torch_save.rs compares the two). Python's output depends on object identity through
//! the memo; the model here is that equal strings are one object (as in XLM's checkpoints, where
//! the dictionaries share their words and `langs` its language names) and every tuple, list and
//! dict is its own. The two exceptions are torch's own: a legacy storage key is a fresh string at
//! every reference, a zip storage key one string per storage.

use std::collections::HashMap;

/// A Python value as `torch.save` sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Py>),
    List(Vec<Py>),
    Dict(Vec<(Py, Py)>),
    /// `collections.OrderedDict`; a state dict carries the `_metadata` attribute
    /// `nn.Module.state_dict()` sets (module prefix → `{"version": 1}`).
    OrderedDict { items: Vec<(Py, Py)>, metadata: Option<Vec<(Py, Py)>> },
    Tensor(Tensor),
    /// A numpy float64 vector (XLM's `params.mask_scores`), pickled through numpy's
    /// `_reconstruct` under `module` (`numpy.core.multiarray` for numpy 1, `numpy._core.multiarray`
    /// for numpy 2).
    NdArrayF64 { module: &'static str, values: Vec<f64> },
    /// `module.name(*args)`, pickled as GLOBAL and REDUCE: what a malicious file uses to run
    /// code on `torch.load` (tests of the reader's refusal).
    Call { module: &'static str, name: &'static str, args: Vec<Py> },
}

/// A tensor: a view of one of the file's storages.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub storage: usize,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
}

/// Element types of storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageType {
    Float,
    Long,
}

impl StorageType {
    fn class(self) -> &'static str {
        match self {
            StorageType::Float => "FloatStorage",
            StorageType::Long => "LongStorage",
        }
    }
    fn size(self) -> usize {
        match self {
            StorageType::Float => 4,
            StorageType::Long => 8,
        }
    }
}

/// One storage: element type and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Storage {
    pub kind: StorageType,
    pub bytes: Vec<u8>,
}

impl Storage {
    pub fn numel(&self) -> usize {
        self.bytes.len() / self.kind.size()
    }
}

/// A set of storages and helpers to make tensors over them.
#[derive(Debug, Clone, Default)]
pub struct Storages(pub Vec<Storage>);

impl Storages {
    /// A contiguous float32 tensor of `shape` in a storage of its own.
    pub fn f32(&mut self, shape: &[usize], values: &[f32]) -> Py {
        assert_eq!(values.len(), shape.iter().product::<usize>(), "values fit the shape");
        self.0.push(Storage { kind: StorageType::Float, bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect() });
        Py::Tensor(Tensor { storage: self.0.len() - 1, offset: 0, size: shape.to_vec(), stride: row_major(shape) })
    }

    /// An int64 tensor in a storage of its own.
    pub fn i64(&mut self, shape: &[usize], values: &[i64]) -> Py {
        assert_eq!(values.len(), shape.iter().product::<usize>(), "values fit the shape");
        self.0.push(Storage { kind: StorageType::Long, bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect() });
        Py::Tensor(Tensor { storage: self.0.len() - 1, offset: 0, size: shape.to_vec(), stride: row_major(shape) })
    }
}

pub fn row_major(shape: &[usize]) -> Vec<usize> {
    let mut stride = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * shape[i + 1];
    }
    stride
}

/// `torch.serialization.MAGIC_NUMBER` as pickled (LONG1, 10 bytes).
const MAGIC: i128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL_VERSION: i64 = 1001;

/// How the pickle of the object refers to storages.
enum Container<'a> {
    /// `('storage', torch.<T>Storage, key, 'cpu', numel)`, one key string per storage.
    Zip,
    /// `('storage', torch.<T>Storage, key, 'cpu', numel, None)`, a fresh key string each time.
    Legacy { keys: &'a [String] },
}

/// Writes `obj` as torch's legacy format: five pickles (magic number, protocol version, system
/// info, the object, the sorted storage keys), then each storage in key order as its i64le
/// element count and raw bytes. `keys[i]` names storage `i` (torch uses the storage's address in
/// decimal; any distinct strings will do).
pub fn legacy(obj: &Py, storages: &Storages, keys: &[String]) -> Vec<u8> {
    assert_eq!(keys.len(), storages.0.len(), "one key per storage");
    let mut magic = Pickler::new(None, storages);
    magic.long(MAGIC);
    let mut out = magic.finish();
    out.extend(Pickler::dump(&Py::Int(LEGACY_PROTOCOL_VERSION), None, storages));
    let sizes = [("short", 2), ("int", 4), ("long", 4)].map(|(k, v)| (Py::Str(k.into()), Py::Int(v))).to_vec();
    let sys_info = Py::Dict(vec![
        (Py::Str("protocol_version".into()), Py::Int(LEGACY_PROTOCOL_VERSION)),
        (Py::Str("little_endian".into()), Py::Bool(true)),
        (Py::Str("type_sizes".into()), Py::Dict(sizes)),
    ]);
    out.extend(Pickler::dump(&sys_info, None, storages));
    out.extend(Pickler::dump(obj, Some(&Container::Legacy { keys }), storages));
    // torch writes the storages the object refers to, sorted by key.
    let mut order = first_references(obj);
    order.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    out.extend(Pickler::dump(&Py::List(order.iter().map(|&i| Py::Str(keys[i].clone())).collect()), None, storages));
    for i in order {
        let s = &storages.0[i];
        out.extend((s.numel() as i64).to_le_bytes());
        out.extend_from_slice(&s.bytes);
    }
    out
}

/// Writes `obj` as torch's zip format: `<name>/data.pkl`, `<name>/byteorder`, one stored member
/// `<name>/data/<key>` per storage (keys "0", "1", … in order of first reference), `<name>/version`.
pub fn zip(obj: &Py, storages: &Storages, name: &str) -> Vec<u8> {
    use std::io::Write;
    let pickle = Pickler::dump(obj, Some(&Container::Zip), storages);
    let order = first_references(obj);
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    // torch aligns member data to 64 bytes so storages can be mapped; the reader does not need it.
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).with_alignment(64);
    let mut member = |path: String, bytes: &[u8]| {
        z.start_file(path, opts).expect("a member of an in-memory zip");
        z.write_all(bytes).expect("writing to memory");
    };
    member(format!("{name}/data.pkl"), &pickle);
    member(format!("{name}/byteorder"), b"little");
    for (key, &i) in order.iter().enumerate() {
        member(format!("{name}/data/{key}"), &storages.0[i].bytes);
    }
    member(format!("{name}/version"), b"3\n");
    z.finish().expect("finishing an in-memory zip").into_inner()
}

/// Storage indices in the order the pickle first refers to them.
pub fn first_references(obj: &Py) -> Vec<usize> {
    fn walk(v: &Py, out: &mut Vec<usize>) {
        match v {
            Py::Tensor(t) if !out.contains(&t.storage) => out.push(t.storage),
            Py::Tuple(xs) | Py::List(xs) => xs.iter().for_each(|x| walk(x, out)),
            Py::Dict(kv) => kv.iter().for_each(|(k, x)| {
                walk(k, out);
                walk(x, out)
            }),
            Py::OrderedDict { items, metadata } => items.iter().chain(metadata.iter().flatten()).for_each(|(k, x)| {
                walk(k, out);
                walk(x, out)
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(obj, &mut out);
    out
}

/// CPython's protocol-2 pickler, for the value kinds above.
struct Pickler<'a> {
    out: Vec<u8>,
    next_memo: u32,
    strings: HashMap<String, u32>,
    globals: HashMap<(&'static str, String), u32>,
    container: Option<&'a Container<'a>>,
    storages: &'a Storages,
    /// Zip: the key string of each storage already written, by storage.
    zip_keys: HashMap<usize, u32>,
}

impl<'a> Pickler<'a> {
    /// A fresh pickle (PROTO 2, empty memo).
    fn new(container: Option<&'a Container<'a>>, storages: &'a Storages) -> Self {
        Pickler { out: vec![0x80, 2], next_memo: 0, strings: HashMap::new(), globals: HashMap::new(), container, storages, zip_keys: HashMap::new() }
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }

    /// One `pickle.dump(obj, protocol=2)`.
    fn dump(obj: &Py, container: Option<&'a Container<'a>>, storages: &'a Storages) -> Vec<u8> {
        let mut p = Pickler::new(container, storages);
        p.save(obj);
        p.finish()
    }

    /// BINPUT / LONG_BINPUT of the next memo slot; returns the slot.
    fn memoize(&mut self) -> u32 {
        let n = self.next_memo;
        self.next_memo += 1;
        match u8::try_from(n) {
            Ok(b) => self.out.extend([b'q', b]),
            Err(_) => {
                self.out.push(b'r');
                self.out.extend(n.to_le_bytes());
            }
        }
        n
    }

    /// BINGET / LONG_BINGET of a memo slot.
    fn get(&mut self, n: u32) {
        match u8::try_from(n) {
            Ok(b) => self.out.extend([b'h', b]),
            Err(_) => {
                self.out.push(b'j');
                self.out.extend(n.to_le_bytes());
            }
        }
    }

    fn int(&mut self, v: i64) {
        match v {
            0..=0xff => self.out.extend([b'K', v as u8]),
            0x100..=0xffff => {
                self.out.push(b'M');
                self.out.extend((v as u16).to_le_bytes());
            }
            _ if i32::try_from(v).is_ok() => {
                self.out.push(b'J');
                self.out.extend((v as i32).to_le_bytes());
            }
            _ => self.long(i128::from(v)),
        }
    }

    /// LONG1 with the shortest two's complement bytes, as `pickle.encode_long`.
    fn long(&mut self, v: i128) {
        let bytes = v.to_le_bytes();
        let mut n = bytes.len();
        // Drop high bytes that only repeat the sign.
        while n > 1 {
            let (top, next) = (bytes[n - 1], bytes[n - 2]);
            let redundant = (top == 0x00 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0);
            if !redundant {
                break;
            }
            n -= 1;
        }
        if v == 0 {
            n = 0;
        }
        self.out.extend([0x8a, n as u8]);
        self.out.extend_from_slice(&bytes[..n]);
    }

    /// A string: BINGET when an equal one was written, else BINUNICODE and a memo slot.
    fn str(&mut self, s: &str) {
        if let Some(&n) = self.strings.get(s) {
            return self.get(n);
        }
        let n = self.fresh_str(s);
        self.strings.insert(s.to_string(), n);
    }

    /// A string object no other reference shares.
    fn fresh_str(&mut self, s: &str) -> u32 {
        self.out.push(b'X');
        self.out.extend((s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
        self.memoize()
    }

    fn global(&mut self, module: &'static str, name: &str) {
        if let Some(&n) = self.globals.get(&(module, name.to_string())) {
            return self.get(n);
        }
        self.out.push(b'c');
        self.out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        let n = self.memoize();
        self.globals.insert((module, name.to_string()), n);
    }

    /// A tuple of values written by `items`, `len` long: TUPLE1-3 or MARK … TUPLE, memoized
    /// (the empty tuple is a singleton and is not).
    fn tuple(&mut self, len: usize, items: impl FnOnce(&mut Self)) {
        if len == 0 {
            self.out.push(b')');
            return;
        }
        if len > 3 {
            self.out.push(b'(');
        }
        items(self);
        self.out.push(match len {
            1 => 0x85,
            2 => 0x86,
            3 => 0x87,
            _ => b't',
        });
        self.memoize();
    }

    /// Items added to the container on top of the stack, in batches of 1000 as CPython does.
    fn batches<T>(&mut self, items: &[T], one: u8, many: u8, mut save: impl FnMut(&mut Self, &T)) {
        for batch in items.chunks(1000) {
            if batch.len() > 1 {
                self.out.push(b'(');
            }
            for item in batch {
                save(self, item);
            }
            self.out.push(if batch.len() > 1 { many } else { one });
        }
    }

    fn pairs(&mut self, items: &[(Py, Py)]) {
        self.batches(items, b's', b'u', |p, (k, v)| {
            p.save(k);
            p.save(v);
        });
    }

    fn save(&mut self, v: &Py) {
        match v {
            Py::None => self.out.push(b'N'),
            Py::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Py::Int(i) => self.int(*i),
            Py::Float(f) => {
                self.out.push(b'G');
                self.out.extend(f.to_be_bytes());
            }
            Py::Str(s) => self.str(s),
            Py::Tuple(xs) => self.tuple(xs.len(), |p| xs.iter().for_each(|x| p.save(x))),
            Py::List(xs) => {
                self.out.push(b']');
                self.memoize();
                self.batches(xs, b'a', b'e', |p, x| p.save(x));
            }
            Py::Dict(kv) => {
                self.out.push(b'}');
                self.memoize();
                self.pairs(kv);
            }
            Py::OrderedDict { items, metadata } => {
                // OrderedDict.__reduce__: (OrderedDict, (), instance dict or None, None, items).
                self.global("collections", "OrderedDict");
                self.out.extend([b')', b'R']);
                self.memoize();
                self.pairs(items);
                if let Some(meta) = metadata {
                    let state = Py::Dict(vec![(Py::Str("_metadata".into()), Py::OrderedDict { items: meta.clone(), metadata: None })]);
                    self.save(&state);
                    self.out.push(b'b');
                }
            }
            Py::Tensor(t) => self.tensor(t),
            Py::NdArrayF64 { module, values } => self.ndarray(module, values),
            Py::Call { module, name, args } => {
                self.global(module, name);
                self.save(&Py::Tuple(args.clone()));
                self.out.push(b'R');
                self.memoize();
            }
        }
    }

    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    fn tensor(&mut self, t: &Tensor) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.tuple(6, |p| {
            p.storage_id(t.storage);
            p.int(t.offset as i64);
            p.save(&Py::Tuple(t.size.iter().map(|&d| Py::Int(d as i64)).collect()));
            p.save(&Py::Tuple(t.stride.iter().map(|&d| Py::Int(d as i64)).collect()));
            p.out.push(0x89);
            p.save(&Py::OrderedDict { items: Vec::new(), metadata: None });
        });
        self.out.push(b'R');
        self.memoize();
    }

    /// The persistent id of storage `i` (BINPERSID; torch does not memoize the storage itself).
    fn storage_id(&mut self, i: usize) {
        let storage = &self.storages.0[i];
        let (class, numel) = (storage.kind.class(), storage.numel());
        let container = self.container.expect("tensors are only pickled in the object pickle");
        let legacy = matches!(container, Container::Legacy { .. });
        self.tuple(if legacy { 6 } else { 5 }, |p| {
            p.str("storage");
            p.global("torch", class);
            match container {
                Container::Legacy { keys } => {
                    p.fresh_str(&keys[i]);
                }
                Container::Zip => match p.zip_keys.get(&i) {
                    Some(&n) => p.get(n),
                    None => {
                        let key = p.zip_keys.len().to_string();
                        let n = p.fresh_str(&key);
                        p.zip_keys.insert(i, n);
                    }
                },
            }
            p.str("cpu");
            p.int(numel as i64);
            if legacy {
                p.out.push(b'N');
            }
        });
        self.out.push(b'Q');
    }

    /// Python 2-compatible bytes: `_codecs.encode(latin-1 text, 'latin1')`, memoized.
    fn bytes(&mut self, data: &[u8]) {
        self.global("_codecs", "encode");
        let text: String = data.iter().map(|&b| char::from(b)).collect();
        self.tuple(2, |p| {
            // A one-character string is one of CPython's cached singletons, so it is shared.
            if text.chars().count() == 1 {
                p.str(&text);
            } else {
                p.fresh_str(&text);
            }
            p.str("latin1");
        });
        self.out.push(b'R');
        self.memoize();
    }

    /// `numpy.ndarray.__reduce__` of a float64 vector: `_reconstruct(ndarray, (0,), b'b')`, then
    /// BUILD with `(1, shape, dtype('f8'), False, raw bytes)`.
    fn ndarray(&mut self, module: &'static str, values: &[f64]) {
        self.global(module, "_reconstruct");
        self.tuple(3, |p| {
            p.global("numpy", "ndarray");
            p.save(&Py::Tuple(vec![Py::Int(0)]));
            p.bytes(b"b");
        });
        self.out.push(b'R');
        self.memoize();
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tuple(5, |p| {
            p.int(1);
            p.save(&Py::Tuple(vec![Py::Int(values.len() as i64)]));
            // dtype('f8'): dtype('f8', False, True) with state (3, '<', None, None, None, -1, -1, 0).
            p.global("numpy", "dtype");
            p.tuple(3, |p| {
                p.str("f8");
                p.out.push(0x89);
                p.out.push(0x88);
            });
            p.out.push(b'R');
            p.memoize();
            let state = [Py::Int(3), Py::Str("<".into()), Py::None, Py::None, Py::None, Py::Int(-1), Py::Int(-1), Py::Int(0)];
            p.save(&Py::Tuple(state.to_vec()));
            p.out.push(b'b');
            p.out.push(0x89);
            p.bytes(&raw);
        });
        self.out.push(b'b');
    }
}
