//! OpenAI GPT (openai/finetune-transformer-lm) numpy checkpoint: a folder with
//! `params_shapes.json` and the 1-D float32 shards `params_0.npy … params_{N-1}.npy`
//! (docs/checkpoint-formats.md §4), plus the `.npy` header parser it needs (§6).
//!
//! The shards are one float32 array cut into files of unequal length: concatenated in index
//! order, they split at the running sums of the shapes' element counts. No names file is
//! shipped, so the pieces are named from the release's fixed order ([`piece_names`]). Shapes
//! are kept as written (`c_attn/w` is `[1, 768, 2304]`); squeezing is the architecture's job.
//!
//! Opening parses every header and checks the element counts, so a successful open means every
//! piece can be read. A piece inside one shard is borrowed from the mmap; one straddling two
//! shards is assembled.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::error::{Error, InputFault, Result};
use crate::source::mapped::FileBytes;
use crate::source::{Checkpoint, DType, TensorInfo};

/// The shapes file of the layout.
pub const SHAPES_FILE: &str = "params_shapes.json";
/// Format name of [`NumpyShards`] (and of `Resolved::NumpyShards`).
pub const FORMAT: &str = "openai-gpt-numpy";
/// The pieces of one transformer block, in the release's order.
pub const LAYER_PIECES: [&str; 12] = [
    "attn/c_attn/w",
    "attn/c_attn/b",
    "attn/c_proj/w",
    "attn/c_proj/b",
    "ln_1/g",
    "ln_1/b",
    "mlp/c_fc/w",
    "mlp/c_fc/b",
    "mlp/c_proj/w",
    "mlp/c_proj/b",
    "ln_2/g",
    "ln_2/b",
];
/// The release's file is 3 kB; anything this large is not a shapes list.
const MAX_SHAPES_FILE: u64 = 16 << 20;
/// Headers of real files are under 200 bytes; numpy itself refuses more than 10 000 by default.
const MAX_HEADER_LEN: usize = 1 << 20;
const MAX_SHARDS: usize = 100_000;
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// `params_{i}.npy`.
pub fn shard_name(i: usize) -> String {
    format!("params_{i}.npy")
}

/// The index `i` of a `params_{i}.npy` file name.
pub fn parse_shard_name(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("params_")?.strip_suffix(".npy")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// Names of the `n` pieces in release order: `model/pos_embd`, `model/tok_embd`, then 12 per
/// layer `model/h{l}/…` ([`LAYER_PIECES`]). `None` unless `n` is 2 + 12·L.
pub fn piece_names(n: usize) -> Option<Vec<String>> {
    if n < 2 || !(n - 2).is_multiple_of(LAYER_PIECES.len()) {
        return None;
    }
    let layers = (n - 2) / LAYER_PIECES.len();
    let mut names = vec!["model/pos_embd".to_string(), "model/tok_embd".to_string()];
    for l in 0..layers {
        names.extend(LAYER_PIECES.iter().map(|p| format!("model/h{l}/{p}")));
    }
    Some(names)
}

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Format major version (1, 2 or 3).
    pub version: u8,
    /// The dtype string, e.g. `<f4`.
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
    /// Where the array data starts in the file.
    pub data_offset: usize,
}

impl NpyHeader {
    /// Element count; `None` on overflow.
    pub fn numel(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
    }
}

/// Parses the magic, version and header dict of a `.npy` file. The dict must hold exactly the
/// keys `descr` (a string; a list of fields, i.e. a structured dtype, is refused),
/// `fortran_order` (`True`/`False`) and `shape` (a tuple of non-negative integers).
pub fn parse_npy_header(bytes: &[u8]) -> std::result::Result<NpyHeader, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        let found = match bytes.len() {
            0 => "an empty file".to_string(),
            _ => bytes.iter().take(6).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" "),
        };
        return Err(format!("not a .npy file: expected the magic bytes 93 4e 55 4d 50 59 (\\x93NUMPY), found {found}"));
    }
    let (version, minor) = (bytes[6], bytes[7]);
    let (len, start) = match version {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            let b = bytes.get(8..12).ok_or("file ends inside the header length")?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy format version {v}.{minor} (known: 1.0, 2.0, 3.0)")),
    };
    if minor != 0 {
        return Err(format!("unsupported .npy format version {version}.{minor} (known: 1.0, 2.0, 3.0)"));
    }
    if len > MAX_HEADER_LEN {
        return Err(format!("header length {len} is implausibly large (at most {MAX_HEADER_LEN} bytes are accepted)"));
    }
    let raw = bytes
        .get(start..start + len)
        .ok_or_else(|| format!("file has {} bytes, ends inside the {len}-byte header", bytes.len()))?;
    // Versions 1 and 2 store the header as latin-1, version 3 as UTF-8; the syntax is ASCII either way.
    if version == 3 && std::str::from_utf8(raw).is_err() {
        return Err("version 3 header is not valid UTF-8".into());
    }
    let (descr, fortran_order, shape) = HeaderParser { s: raw, pos: 0, utf8: version == 3 }.dict()?;
    Ok(NpyHeader { version, descr, fortran_order, shape, data_offset: start + len })
}

/// A recursive-descent reader of the header's Python dict literal, restricted to what numpy writes.
struct HeaderParser<'a> {
    s: &'a [u8],
    pos: usize,
    utf8: bool,
}

type Fields = (String, bool, Vec<usize>);

impl HeaderParser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.pos).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8, what: &str) -> std::result::Result<(), String> {
        match self.peek() {
            Some(x) if x == c => {
                self.pos += 1;
                Ok(())
            }
            other => Err(self.unexpected(other, what)),
        }
    }

    fn unexpected(&self, got: Option<u8>, what: &str) -> String {
        let got = match got {
            Some(c) if c.is_ascii_graphic() => format!("'{}'", c as char),
            Some(c) => format!("byte {c:#04x}"),
            None => "the end of the header".into(),
        };
        format!("bad header dict: expected {what} at character {}, found {got}", self.pos)
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let q = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            other => return Err(self.unexpected(other, "a quoted string")),
        };
        let start = self.pos + 1;
        let len = self.s[start..].iter().position(|&c| c == q).ok_or("bad header dict: unterminated string")?;
        let body = &self.s[start..start + len];
        if body.contains(&b'\\') {
            return Err("bad header dict: escape sequences in strings are not supported".into());
        }
        self.pos = start + len + 1;
        Ok(if self.utf8 {
            String::from_utf8_lossy(body).into_owned()
        } else {
            body.iter().map(|&b| char::from(b)).collect()
        })
    }

    fn word(&mut self) -> &[u8] {
        self.ws();
        let start = self.pos;
        while self.s.get(self.pos).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    fn shape(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(', "a shape tuple '('")?;
        let mut dims = Vec::new();
        let mut trailing_comma = false;
        while self.peek() != Some(b')') {
            let w = self.word();
            // Python 2 wrote long integers with an `L` suffix.
            let digits = w.strip_suffix(b"L").unwrap_or(w);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                let shown = String::from_utf8_lossy(w).into_owned();
                return Err(if shown.is_empty() {
                    self.unexpected(self.s.get(self.pos).copied(), "a dimension (non-negative integer)")
                } else {
                    format!("bad header dict: shape dimension '{shown}' is not a non-negative integer")
                });
            }
            let d = std::str::from_utf8(digits)
                .ok()
                .and_then(|t| t.parse::<usize>().ok())
                .ok_or_else(|| format!("shape dimension {} is too large", String::from_utf8_lossy(digits)))?;
            dims.push(d);
            trailing_comma = false;
            if self.peek() == Some(b',') {
                self.pos += 1;
                trailing_comma = true;
            } else if self.peek() != Some(b')') {
                let got = self.peek();
                return Err(self.unexpected(got, "',' or ')' in the shape"));
            }
        }
        self.pos += 1;
        if dims.len() == 1 && !trailing_comma {
            return Err(format!(
                "bad header dict: shape ({}) is not a tuple (a 1-tuple needs a trailing comma)",
                dims[0]
            ));
        }
        Ok(dims)
    }

    fn dict(mut self) -> std::result::Result<Fields, String> {
        self.expect(b'{', "'{'")?;
        let (mut descr, mut fortran, mut shape) = (None, None, None);
        while self.peek() != Some(b'}') {
            let key = self.string()?;
            self.expect(b':', "':' after a key")?;
            let dup = || format!("bad header dict: key '{key}' appears twice");
            match key.as_str() {
                "descr" => {
                    if self.peek() == Some(b'[') {
                        return Err("structured dtype (descr is a list of fields) is not supported".into());
                    }
                    let v = self.string()?;
                    if descr.replace(v).is_some() {
                        return Err(dup());
                    }
                }
                "fortran_order" => {
                    let v = match self.word() {
                        b"True" => true,
                        b"False" => false,
                        w => {
                            let w = String::from_utf8_lossy(w).into_owned();
                            return Err(format!("bad header dict: fortran_order is '{w}', expected True or False"));
                        }
                    };
                    if fortran.replace(v).is_some() {
                        return Err(dup());
                    }
                }
                "shape" => {
                    let v = self.shape()?;
                    if shape.replace(v).is_some() {
                        return Err(dup());
                    }
                }
                other => {
                    return Err(format!(
                        "bad header dict: unexpected key '{other}' (expected only descr, fortran_order, shape)"
                    ))
                }
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                other => return Err(self.unexpected(other, "',' or '}'")),
            }
        }
        self.pos += 1;
        if let Some(c) = self.peek() {
            return Err(self.unexpected(Some(c), "only padding after the header dict"));
        }
        let missing = |k: &str| format!("bad header dict: key '{k}' is missing");
        let descr = descr.ok_or_else(|| missing("descr"))?;
        let fortran = fortran.ok_or_else(|| missing("fortran_order"))?;
        Ok((descr, fortran, shape.ok_or_else(|| missing("shape"))?))
    }
}

/// Writes a `.npy` file (format 1.0, C order, data 64-byte aligned as numpy does) around `data`,
/// which must already be in the layout `descr` names. For tests and synthetic fixtures.
pub fn npy_bytes(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.extend(std::iter::repeat_n(' ', pad));
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// What a dtype string is, for messages that say why a shard was refused.
fn describe_descr(descr: &str) -> String {
    let (order, code) = match descr.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => (&descr[..1], &descr[1..]),
        _ => ("", descr),
    };
    let kind = match code {
        "f2" => "float16",
        "f4" => "float32",
        "f8" => "float64",
        "i1" => "int8",
        "i2" => "int16",
        "i4" => "int32",
        "i8" => "int64",
        "u1" => "uint8",
        "b1" => "bool",
        "O" => return format!("'{descr}' (pickled Python objects)"),
        _ => return format!("'{descr}'"),
    };
    match order {
        ">" => format!("big-endian {kind} ('{descr}')"),
        _ => format!("{kind} ('{descr}')"),
    }
}

struct Shard {
    path: PathBuf,
    data: FileBytes,
    /// Byte offset of the first element.
    offset: usize,
    /// Index of the shard's first element in the concatenated array.
    start: usize,
    numel: usize,
}

/// An opened OpenAI GPT numpy checkpoint.
pub struct NumpyShards {
    dir: PathBuf,
    shapes_path: PathBuf,
    shards: Vec<Shard>,
    /// Sorted by name; `ranges[i]` = (first element, element count) of `infos[i]`.
    infos: Vec<TensorInfo>,
    ranges: Vec<(usize, usize)>,
}

impl NumpyShards {
    /// Opens the folder `dir` (holding `params_shapes.json` and `params_0.npy …`).
    pub fn open(dir: impl AsRef<Path>) -> Result<NumpyShards> {
        let dir = dir.as_ref();
        let shapes_path = dir.join(SHAPES_FILE);
        let size = std::fs::metadata(&shapes_path).map_err(|e| Error::io(&shapes_path, e))?.len();
        if size > MAX_SHAPES_FILE {
            return Err(Error::input(&shapes_path, format!("is {size} bytes, too large for a list of shapes")));
        }
        let shapes = std::fs::read(&shapes_path).map_err(|e| Error::io(&shapes_path, e))?;
        let n = (0..MAX_SHARDS).take_while(|&i| dir.join(shard_name(i)).is_file()).count();
        let next = dir.join(shard_name(n));
        if let Some(later) = later_shards(dir, n) {
            return Err(Error::input(
                &next,
                format!(
                    "shard file is missing, but later shards exist ({later}); the shards must be numbered \
                     consecutively from params_0.npy"
                ),
            )
            .because(InputFault::Missing));
        }
        let mut shards = Vec::with_capacity(n);
        for i in 0..n {
            let path = dir.join(shard_name(i));
            let data = FileBytes::map(&path)?;
            shards.push((path, data));
        }
        Self::build(dir, shapes_path, &shapes, shards, next)
    }

    /// Opens shards held in memory (tests, fuzzing); `dir` only names files in errors.
    pub fn from_bytes(dir: impl AsRef<Path>, shapes: &[u8], shards: Vec<Vec<u8>>) -> Result<NumpyShards> {
        let dir = dir.as_ref();
        let next = dir.join(shard_name(shards.len()));
        let shards =
            shards.into_iter().enumerate().map(|(i, b)| (dir.join(shard_name(i)), FileBytes::Owned(b))).collect();
        Self::build(dir, dir.join(SHAPES_FILE), shapes, shards, next)
    }

    fn build(
        dir: &Path,
        shapes_path: PathBuf,
        shapes: &[u8],
        files: Vec<(PathBuf, FileBytes)>,
        next_shard: PathBuf,
    ) -> Result<NumpyShards> {
        let shapes = parse_shapes(shapes).map_err(|m| Error::input(&shapes_path, m))?;
        let names = piece_names(shapes.len()).ok_or_else(|| {
            Error::input(
                &shapes_path,
                format!(
                    "lists {} shapes, but the GPT layout has 2 embeddings plus 12 per layer \
                     (2 + 12·L, e.g. 146 for 12 layers)",
                    shapes.len()
                ),
            )
        })?;
        if files.is_empty() {
            return Err(Error::input(&next_shard, format!("shard file is missing (no shards next to {SHAPES_FILE})"))
                .because(InputFault::Missing));
        }
        let mut shards = Vec::with_capacity(files.len());
        let mut total = 0usize;
        for (path, data) in files {
            let (offset, numel) = check_shard(&path, data.bytes())?;
            shards.push(Shard { path, data, offset, start: total, numel });
            total = total.checked_add(numel).ok_or_else(|| Error::input(dir, "shards hold too many elements"))?;
        }
        let mut ranges = Vec::with_capacity(shapes.len());
        let mut needed = 0usize;
        for (shape, name) in shapes.iter().zip(&names) {
            let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let end = n.and_then(|n| needed.checked_add(n)).ok_or_else(|| {
                Error::input(&shapes_path, format!("the shapes overflow the element count at {name} {shape:?}"))
            })?;
            ranges.push((needed, end - needed));
            needed = end;
        }
        let held = || {
            let last = shards.len() - 1;
            if last == 0 {
                shard_name(0)
            } else {
                format!("{} … {}", shard_name(0), shard_name(last))
            }
        };
        if total < needed {
            return Err(Error::input(
                &next_shard,
                format!(
                    "shard file is missing: {} hold {total} float32 values, but {SHAPES_FILE} needs {needed} ({} more)",
                    held(),
                    needed - total
                ),
            )
            .because(InputFault::Missing));
        }
        if total > needed {
            return Err(Error::input(
                &shapes_path,
                format!(
                    "the shapes need {needed} float32 values, but {} hold {total} ({} too many)",
                    held(),
                    total - needed
                ),
            ));
        }
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| names[a].cmp(&names[b]));
        let infos = order
            .iter()
            .map(|&i| TensorInfo { name: names[i].clone(), dtype: DType::F32, shape: shapes[i].clone() })
            .collect();
        let ranges = order.iter().map(|&i| ranges[i]).collect();
        Ok(NumpyShards { dir: dir.to_path_buf(), shapes_path, shards, infos, ranges })
    }

    /// Number of `params_*.npy` shards.
    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    fn lookup(&self, name: &str) -> Result<(usize, usize)> {
        self.infos
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .map(|i| self.ranges[i])
            .map_err(|_| Error::tensor(&self.dir, name, "no such tensor in the checkpoint"))
    }

    /// The shards overlapping elements `[start, start + n)`, with the byte range in each.
    fn spans(&self, start: usize, n: usize) -> impl Iterator<Item = (&Shard, std::ops::Range<usize>)> {
        let end = start + n;
        let first = self.shards.partition_point(|s| s.start + s.numel <= start);
        self.shards[first..].iter().take_while(move |s| s.start < end).map(move |s| {
            let from = start.max(s.start) - s.start;
            let to = end.min(s.start + s.numel) - s.start;
            (s, s.offset + from * 4..s.offset + to * 4)
        })
    }
}

/// The shards numbered after a gap at `n`, as `params_4.npy … params_9.npy (6 files)`, if any exist.
fn later_shards(dir: &Path, n: usize) -> Option<String> {
    let mut later: Vec<usize> = std::fs::read_dir(dir)
        .ok()?
        .take(MAX_SHARDS)
        .filter_map(|e| e.ok())
        .filter_map(|e| parse_shard_name(e.file_name().to_str()?))
        .filter(|&i| i > n)
        .collect();
    later.sort_unstable();
    match later.len() {
        0 => None,
        1 => Some(shard_name(later[0])),
        k => Some(format!("{} … {} ({k} files)", shard_name(later[0]), shard_name(later[k - 1]))),
    }
}

/// `params_shapes.json`: a list of shapes, each a list of non-negative integers.
fn parse_shapes(bytes: &[u8]) -> std::result::Result<Vec<Vec<usize>>, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("is not valid JSON: {e}"))?;
    let list = v.as_array().ok_or("expected a JSON list of shapes (lists of non-negative integers)")?;
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let dims = s.as_array().ok_or_else(|| format!("shape #{i} is {s}, not a list of integers"))?;
            dims.iter()
                .map(|d| {
                    d.as_u64()
                        .and_then(|d| usize::try_from(d).ok())
                        .ok_or_else(|| format!("shape #{i} is {s}: dimensions must be non-negative integers"))
                })
                .collect()
        })
        .collect()
}

/// Validates one shard: a 1-D little-endian float32 C-order array whose data fills the rest of
/// the file. Returns (data offset, element count).
fn check_shard(path: &Path, bytes: &[u8]) -> Result<(usize, usize)> {
    let h = parse_npy_header(bytes).map_err(|m| Error::input(path, m))?;
    let unsupported = |m: String| Error::input(path, m).because(InputFault::Unsupported);
    if h.descr != "<f4" {
        let m = format!("dtype is {}; the shards must be little-endian float32 ('<f4')", describe_descr(&h.descr));
        return Err(unsupported(m));
    }
    if h.fortran_order {
        return Err(unsupported("fortran_order is True; the shards must be 1-D C-order arrays".into()));
    }
    let [numel] = h.shape[..] else {
        let dims: Vec<String> = h.shape.iter().map(|d| d.to_string()).collect();
        return Err(unsupported(format!("shard is not 1-D: its shape is ({}), expected (n,)", dims.join(", "))));
    };
    let have = bytes.len() - h.data_offset;
    match numel.checked_mul(4) {
        Some(need) if need == have => Ok((h.data_offset, numel)),
        Some(need) if need < have => Err(Error::input(
            path,
            format!("the file has {} byte(s) after the {numel} float32 values the header announces", have - need),
        )),
        _ => Err(Error::input(
            path,
            format!(
                "data is truncated: the header announces {numel} float32 values ({} bytes from byte {}), the file has {have}",
                numel as u128 * 4,
                h.data_offset
            ),
        )
        .because(InputFault::Truncated)),
    }
}

impl Checkpoint for NumpyShards {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn format(&self) -> &'static str {
        FORMAT
    }

    fn files(&self) -> Vec<PathBuf> {
        std::iter::once(self.shapes_path.clone()).chain(self.shards.iter().map(|s| s.path.clone())).collect()
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>> {
        let (start, n) = self.lookup(name)?;
        let mut spans = self.spans(start, n);
        let Some((first, range)) = spans.next() else { return Ok(Cow::Borrowed(&[])) };
        if range.len() == n * 4 {
            return Ok(Cow::Borrowed(&first.data.bytes()[range]));
        }
        // Straddles shards: the ranges were validated against every shard's length at open.
        let mut out = Vec::with_capacity(n * 4);
        out.extend_from_slice(&first.data.bytes()[range]);
        for (s, r) in spans {
            out.extend_from_slice(&s.data.bytes()[r]);
        }
        Ok(Cow::Owned(out))
    }

    fn read_strings(&self, name: &str) -> Result<Vec<Vec<u8>>> {
        self.lookup(name)?;
        Err(Error::tensor(&self.dir, name, "is a float32 tensor, not a string tensor; use read"))
    }

    fn release(&self, name: &str) {
        if let Ok((start, n)) = self.lookup(name) {
            for (s, r) in self.spans(start, n) {
                s.data.release(r.start, r.len());
            }
        }
    }
}

impl std::fmt::Debug for NumpyShards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NumpyShards")
            .field("dir", &self.dir)
            .field("shards", &self.shards.len())
            .field("tensors", &self.infos.len())
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f32_le(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Shapes of a GPT with `layers` blocks, width 4, MLP 16, 3 positions, 5 tokens.
    pub(crate) fn gpt_shapes(layers: usize) -> Vec<Vec<usize>> {
        let mut s = vec![vec![3, 4], vec![5, 4]];
        for _ in 0..layers {
            s.extend([
                vec![1, 4, 12],
                vec![12],
                vec![1, 4, 4],
                vec![4],
                vec![4],
                vec![4],
                vec![1, 4, 16],
                vec![16],
                vec![1, 16, 4],
                vec![4],
                vec![4],
                vec![4],
            ]);
        }
        s
    }

    fn value(i: usize) -> f32 {
        i as f32 * 0.25 - 7.0
    }

    /// (shapes JSON, shard files) with the concatenated array cut before each index in `cuts`.
    pub(crate) fn gpt_files(layers: usize, cuts: &[usize]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let shapes = gpt_shapes(layers);
        let total: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
        let values: Vec<f32> = (0..total).map(value).collect();
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().map(|&c| c.min(total)));
        bounds.push(total);
        let shards =
            bounds.windows(2).map(|w| npy_bytes("<f4", &[w[1] - w[0]], &f32_le(&values[w[0]..w[1]]))).collect();
        (serde_json::to_vec(&shapes).unwrap(), shards)
    }

    fn open_mem(shapes: &[u8], shards: Vec<Vec<u8>>) -> Result<NumpyShards> {
        NumpyShards::from_bytes("gpt", shapes, shards)
    }

    fn err_of(shapes: &[u8], shards: Vec<Vec<u8>>) -> Error {
        match open_mem(shapes, shards) {
            Err(e) => e,
            Ok(c) => panic!("expected an error, opened {c:?}"),
        }
    }

    fn assert_has(e: &str, parts: &[&str]) {
        for p in parts {
            assert!(e.contains(p), "{e:?} should contain {p:?}");
        }
    }

    fn header(text: &str) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[1, 0]);
        v.extend_from_slice(&(text.len() as u16).to_le_bytes());
        v.extend_from_slice(text.as_bytes());
        v
    }

    #[test]
    fn npy_header_versions_and_forms() {
        let h = parse_npy_header(&npy_bytes("<f4", &[7], &[0; 28])).unwrap();
        assert_eq!(
            (h.version, h.descr.as_str(), h.fortran_order, h.shape.clone(), h.data_offset),
            (1, "<f4", false, vec![7], 128)
        );
        let h = parse_npy_header(&header("{'shape': (), \"fortran_order\": True, 'descr': '|b1'}")).unwrap();
        assert_eq!((h.descr.as_str(), h.fortran_order, h.shape.clone(), h.numel()), ("|b1", true, vec![], Some(1)));
        let h = parse_npy_header(&header("{'descr':'<i8','fortran_order':False,'shape':(2, 3L , 0)}  \n")).unwrap();
        assert_eq!(h.shape, [2, 3, 0]);
        assert_eq!(h.numel(), Some(0));
        // Versions 2 and 3 have a 4-byte length; 3 is UTF-8, 1 and 2 latin-1.
        for (v, text) in [
            (2u8, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }\n"),
            (3, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,)}"),
        ] {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&[v, 0]);
            b.extend_from_slice(&(text.len() as u32).to_le_bytes());
            b.extend_from_slice(text.as_bytes());
            let h = parse_npy_header(&b).unwrap();
            assert_eq!((h.version, h.shape.clone(), h.data_offset), (v, vec![5], 12 + text.len()));
        }
        let mut latin = header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}");
        let n = latin.len();
        latin[n - 1] = 0xe9; // 'é' in latin-1 where '}' was
        assert_has(&parse_npy_header(&latin).unwrap_err(), &["expected ',' or '}'", "byte 0xe9"]);
    }

    #[test]
    fn npy_header_errors_say_what_was_expected() {
        let cases: &[(&[u8], &[&str])] = &[
            (b"", &["not a .npy file", "93 4e 55 4d 50 59", "an empty file"]),
            (b"PK\x03\x04\x14\x00\x00\x00\x00\x00", &["not a .npy file", "50 4b 03 04 14 00"]),
            (b"\x93NUMPY\x04\x00\x10\x00", &["unsupported .npy format version 4.0"]),
            (b"\x93NUMPY\x01\x01\x10\x00", &["version 1.1"]),
            (b"\x93NUMPY\x02\x00\x10\x00", &["ends inside the header length"]),
            (b"\x93NUMPY\x01\x00\x10\x00{}", &["ends inside the 16-byte header"]),
            (b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{}", &["implausibly large"]),
            (b"\x93NUMPY\x03\x00\x02\x00\x00\x00\xff}", &["not valid UTF-8"]),
        ];
        for (bytes, parts) in cases {
            assert_has(&parse_npy_header(bytes).unwrap_err(), parts);
        }
        let dicts: &[(&str, &[&str])] = &[
            ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", &["structured dtype"]),
            ("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,)}", &["fortran_order is 'Maybe'", "True or False"]),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (5)}", &["shape (5) is not a tuple", "trailing comma"]),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (-5,)}", &["expected a dimension"]),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (5x,)}", &["'5x' is not a non-negative integer"]),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}", &["too large"]),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': [5]}", &["expected a shape tuple '('", "found '['"]),
            ("{'descr': '<f4', 'fortran_order': False}", &["key 'shape' is missing"]),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'descr': '<f4'}", &["'descr' appears twice"]),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
                &["unexpected key 'extra'", "descr, fortran_order, shape"],
            ),
            ("{'descr': '<\\f4', 'fortran_order': False, 'shape': (1,)}", &["escape sequences"]),
            ("{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}", &["expected ':' after a key"]),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x",
                &["only padding after the header dict", "found 'x'"],
            ),
            ("{'descr': '<f4' 'fortran_order': False}", &["expected ',' or '}'"]),
            ("{'descr': 'unterminated", &["unterminated string"]),
            ("['descr']", &["expected '{'"]),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,", &["the end of the header"]),
        ];
        for (text, parts) in dicts {
            assert_has(&parse_npy_header(&header(text)).unwrap_err(), parts);
        }
    }

    #[test]
    fn names_follow_the_release_order() {
        let names = piece_names(26).unwrap();
        assert_eq!(names.len(), 26);
        assert_eq!(&names[..3], ["model/pos_embd", "model/tok_embd", "model/h0/attn/c_attn/w"]);
        assert_eq!(names[13], "model/h0/ln_2/b");
        assert_eq!(names[14], "model/h1/attn/c_attn/w");
        assert_eq!(names[25], "model/h1/ln_2/b");
        assert_eq!(piece_names(146).unwrap()[145], "model/h11/ln_2/b");
        assert_eq!(piece_names(2).unwrap().len(), 2);
        for bad in [0, 1, 3, 13, 145] {
            assert_eq!(piece_names(bad), None, "{bad}");
        }
        assert_eq!(parse_shard_name("params_12.npy"), Some(12));
        for bad in ["params_.npy", "params_01.npy", "params_1.np", "xparams_1.npy", "params_-1.npy", "params_1a.npy"] {
            assert_eq!(parse_shard_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn pieces_are_split_at_running_sums_and_borrowed_unless_straddling() {
        // 2 layers = 26 pieces, 520 values; cuts inside c_attn/w of layer 0 (elements 32..80)
        // and exactly at the start of layer 1, plus an empty shard.
        let (shapes, shards) = gpt_files(2, &[50, 276, 276, 300]);
        let ck = open_mem(&shapes, shards).unwrap();
        assert_eq!(ck.num_shards(), 5);
        assert_eq!(ck.format(), "openai-gpt-numpy");
        let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "tensors() must be sorted by name");
        assert_eq!(names.len(), 26);
        let mut start = 0;
        for (name, shape) in piece_names(26).unwrap().iter().zip(gpt_shapes(2)) {
            let info = ck.info(name).unwrap();
            assert_eq!((info.dtype, &info.shape), (DType::F32, &shape), "{name}");
            let n: usize = shape.iter().product();
            let bytes = ck.read(name).unwrap();
            let want: Vec<f32> = (start..start + n).map(value).collect();
            assert_eq!(&*bytes, f32_le(&want).as_slice(), "{name}");
            let straddles = start < 50 && start + n > 50 || start < 300 && start + n > 300;
            assert_eq!(matches!(bytes, Cow::Owned(_)), straddles, "{name}");
            start += n;
        }
        assert_eq!(start, 520);
        assert_has(
            &ck.read("model/h2/ln_1/g").unwrap_err().to_string(),
            &["gpt", "'model/h2/ln_1/g'", "no such tensor"],
        );
        assert_has(&ck.read_strings("model/pos_embd").unwrap_err().to_string(), &["not a string tensor"]);
    }

    #[test]
    fn opens_from_disk_by_folder_shapes_file_or_any_shard() {
        let dir = tempfile::tempdir().unwrap();
        let (shapes, shards) = gpt_files(1, &[100, 107]);
        std::fs::write(dir.path().join(SHAPES_FILE), &shapes).unwrap();
        for (i, s) in shards.iter().enumerate() {
            std::fs::write(dir.path().join(shard_name(i)), s).unwrap();
        }
        std::fs::write(dir.path().join("encoder_bpe_40000.json"), b"{}").unwrap();
        for p in [dir.path().to_path_buf(), dir.path().join(SHAPES_FILE), dir.path().join("params_2.npy")] {
            let ck = crate::source::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(ck.path(), dir.path());
            assert_eq!(ck.format(), FORMAT);
            assert_eq!(
                ck.files(),
                [SHAPES_FILE, "params_0.npy", "params_1.npy", "params_2.npy"].map(|f| dir.path().join(f))
            );
            // c_attn/w (elements 32..80) is in shard 0, c_proj/w (92..108) spans all three.
            for (name, start, n) in [("model/h0/attn/c_attn/w", 32, 48), ("model/h0/attn/c_proj/w", 92, 16)] {
                let want = f32_le(&(start..start + n).map(value).collect::<Vec<_>>());
                assert_eq!(&*ck.read(name).unwrap(), want.as_slice());
                ck.release(name);
                assert_eq!(&*ck.read(name).unwrap(), want.as_slice(), "read again after release");
            }
        }
    }

    #[test]
    fn a_gap_in_the_shard_numbers_names_the_missing_shard() {
        let dir = tempfile::tempdir().unwrap();
        let (shapes, shards) = gpt_files(1, &[20, 40, 60, 80, 100]);
        std::fs::write(dir.path().join(SHAPES_FILE), &shapes).unwrap();
        for (i, s) in shards.iter().enumerate() {
            if i != 3 {
                std::fs::write(dir.path().join(shard_name(i)), s).unwrap();
            }
        }
        let e = NumpyShards::open(dir.path()).unwrap_err();
        assert!(matches!(e, Error::Input { .. }), "{e:?}");
        assert_has(&e.to_string(), &["params_3.npy: shard file is missing", "params_4.npy … params_5.npy (2 files)"]);
        std::fs::remove_file(dir.path().join("params_0.npy")).unwrap();
        assert_has(&NumpyShards::open(dir.path()).unwrap_err().to_string(), &["params_0.npy: shard file is missing"]);
        std::fs::remove_file(dir.path().join(SHAPES_FILE)).unwrap();
        assert_has(&NumpyShards::open(dir.path()).unwrap_err().to_string(), &[SHAPES_FILE]);
    }

    #[test]
    fn element_counts_must_match_the_shapes() {
        // The last shard missing: fewer values than the shapes need.
        let (shapes, mut shards) = gpt_files(1, &[100, 200]);
        shards.pop();
        let e = err_of(&shapes, shards);
        assert!(matches!(e, Error::Input { .. }));
        assert_has(
            &e.to_string(),
            &[
                "gpt/params_2.npy: shard file is missing",
                "params_0.npy … params_1.npy hold 200 float32 values",
                "needs 276 (76 more)",
            ],
        );
        let (shapes, _) = gpt_files(1, &[]);
        assert_has(&err_of(&shapes, vec![]).to_string(), &["gpt/params_0.npy: shard file is missing"]);
        // One more value than needed.
        let (shapes, mut shards) = gpt_files(1, &[]);
        shards.push(npy_bytes("<f4", &[1], &[0; 4]));
        assert_has(
            &err_of(&shapes, shards).to_string(),
            &[
                "gpt/params_shapes.json",
                "the shapes need 276 float32 values",
                "params_0.npy … params_1.npy hold 277 (1 too many)",
            ],
        );
        // Shapes list of the wrong length.
        let (_, shards) = gpt_files(1, &[]);
        let mut list = gpt_shapes(1);
        list.pop();
        assert_has(
            &err_of(&serde_json::to_vec(&list).unwrap(), shards).to_string(),
            &["gpt/params_shapes.json", "lists 13 shapes", "2 + 12·L"],
        );
        let big = serde_json::to_vec(&[[usize::MAX, 2], [1, 1]]).unwrap();
        assert_has(
            &err_of(&big, vec![npy_bytes("<f4", &[1], &[0; 4])]).to_string(),
            &["params_shapes.json", "overflow"],
        );
    }

    #[test]
    fn bad_shapes_json_is_named() {
        let (_, shards) = gpt_files(0, &[]);
        for (json, parts) in [
            (&b"[[3, 4], [5, 4]"[..], &["gpt/params_shapes.json: is not valid JSON", "EOF"][..]),
            (b"{\"a\": 1}", &["expected a JSON list of shapes"]),
            (b"[[3, 4], 7]", &["shape #1 is 7, not a list"]),
            (b"[[3, -4], [5, 4]]", &["shape #0 is [3,-4]", "non-negative integers"]),
            (b"[[3, 4.5], [5, 4]]", &["shape #0 is [3,4.5]"]),
        ] {
            assert_has(&err_of(json, shards.clone()).to_string(), parts);
        }
        // Two embeddings and no layers is a (degenerate) valid layout.
        let ck = open_mem(b"[[3, 4], [5, 4]]", shards).unwrap();
        assert_eq!(ck.tensors().len(), 2);
    }

    #[test]
    fn shard_errors_name_the_shard_and_the_expectation() {
        let (shapes, good) = gpt_files(1, &[100]);
        let data = f32_le(&(0..100).map(value).collect::<Vec<_>>());
        let cases: Vec<(Vec<u8>, Vec<&str>)> = vec![
            (npy_bytes(">f4", &[100], &data), vec!["big-endian float32 ('>f4')", "little-endian float32 ('<f4')"]),
            (npy_bytes("|O", &[100], &data), vec!["'|O' (pickled Python objects)"]),
            (npy_bytes("<f8", &[50], &data), vec!["dtype is float64 ('<f8')"]),
            (npy_bytes("<c8", &[50], &data), vec!["dtype is '<c8'"]),
            (header("{'descr': [('w', '<f4')], 'fortran_order': False, 'shape': (100,)}"), vec!["structured dtype"]),
            (
                {
                    let mut b = header("{'descr': '<f4', 'fortran_order': True, 'shape': (100,)}");
                    b.extend_from_slice(&data);
                    b
                },
                vec!["fortran_order is True"],
            ),
            (npy_bytes("<f4", &[10, 10], &data), vec!["shard is not 1-D: its shape is (10, 10)"]),
            (npy_bytes("<f4", &[], &data[..4]), vec!["shard is not 1-D: its shape is ()"]),
            (
                npy_bytes("<f4", &[100], &data[..396]),
                vec!["truncated", "100 float32 values (400 bytes from byte 128), the file has 396"],
            ),
            (
                npy_bytes("<f4", &[100], &[data.as_slice(), &[0]].concat()),
                vec!["has 1 byte(s) after the 100 float32 values"],
            ),
            (b"\x93NUMPX\x01\x00".to_vec(), vec!["not a .npy file"]),
            (npy_bytes("<f4", &[100], &data)[..40].to_vec(), vec!["ends inside the 118-byte header"]),
        ];
        for (bad, parts) in cases {
            let e = err_of(&shapes, vec![bad, good[1].clone()]);
            assert!(matches!(e, Error::Input { .. }), "{e:?}");
            let m = e.to_string();
            assert_has(&m, &["gpt/params_0.npy: "]);
            assert_has(&m, &parts);
        }
    }

    // ---------------------------------------------------------------- fuzzing

    /// Opens and reads everything; must never panic. Returns the number of pieces read.
    pub(crate) fn exercise(shapes: &[u8], shards: Vec<Vec<u8>>) -> usize {
        let Ok(ck) = NumpyShards::from_bytes("f", shapes, shards) else { return 0 };
        ck.tensors()
            .iter()
            .map(|t| {
                let b = ck.read(&t.name).expect("an opened checkpoint reads every piece");
                assert_eq!(Some(b.len()), t.nbytes());
                ck.release(&t.name);
            })
            .count()
    }

    #[derive(Debug, Clone)]
    pub(crate) enum FuzzCase {
        /// Arbitrary bytes as one shard's header (with or without the magic pasted in).
        Header(Vec<u8>, bool),
        /// A valid layout, then byte mutations of one shard or the shapes, and a truncation.
        Mutate { cuts: Vec<usize>, target: usize, muts: Vec<(usize, u8)>, cut: Option<usize> },
    }

    pub(crate) fn fuzz_strategy() -> impl Strategy<Value = FuzzCase> {
        prop_oneof![
            (proptest::collection::vec(any::<u8>(), 0..200), any::<bool>()).prop_map(|(b, m)| FuzzCase::Header(b, m)),
            (
                proptest::collection::vec(0usize..300, 0..4),
                any::<usize>(),
                proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
                proptest::option::of(any::<usize>())
            )
                .prop_map(|(cuts, target, muts, cut)| FuzzCase::Mutate { cuts, target, muts, cut }),
        ]
    }

    pub(crate) fn run_case(case: &FuzzCase) -> usize {
        match case {
            FuzzCase::Header(bytes, magic) => {
                let mut b = bytes.clone();
                if *magic {
                    b.splice(0..b.len().min(6), MAGIC.iter().copied());
                }
                let _ = parse_npy_header(&b);
                let (shapes, mut shards) = gpt_files(1, &[100]);
                shards[0] = b;
                exercise(&shapes, shards)
            }
            FuzzCase::Mutate { cuts, target, muts, cut } => {
                let mut cuts = cuts.clone();
                cuts.sort_unstable();
                let (mut shapes, mut shards) = gpt_files(1, &cuts);
                let k = target % (shards.len() + 1);
                let file = if k == shards.len() { &mut shapes } else { &mut shards[k] };
                for (at, v) in muts {
                    if !file.is_empty() {
                        let n = file.len();
                        file[at % n] = *v;
                    }
                }
                if let Some(c) = cut {
                    file.truncate(c % (file.len() + 1));
                }
                exercise(&shapes, shards)
            }
        }
    }

    #[test]
    fn fuzz_cases_reach_the_reads() {
        let clean = FuzzCase::Mutate { cuts: vec![50, 200], target: 0, muts: vec![], cut: None };
        assert_eq!(run_case(&clean), 14);
        assert_eq!(run_case(&FuzzCase::Header(b"garbage".to_vec(), true)), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// No input may panic the header parser or the shard reader.
        #[test]
        fn fuzz_numpy_shards(case in fuzz_strategy()) {
            run_case(&case);
        }

        #[test]
        fn fuzz_npy_header_text(text in "[{}()'\":, a-z_<>|0-9LTF\\[\\]\n]{0,80}") {
            let _ = parse_npy_header(&header(&text));
        }
    }
}
