//! A restricted reader of Python pickles: the binary opcodes of protocols 0–2, which is what
//! `torch.save` writes (docs/checkpoint-formats.md §5, §8). Nothing is executed or imported:
//! a `GLOBAL` stays a name, a call (`REDUCE`, `NEWOBJ`) and what `BUILD`/`SETITEMS`/`APPENDS` do
//! to its result are recorded as data, and persistent ids (torch's storage references) are kept
//! as values. The caller interprets the tree (see `pth.rs` for torch tensors).
//!
//! Pickles share objects through the memo, and containers are filled after they are memoized,
//! so the machine works on an arena of nodes referenced by index; the result is then copied
//! into an owned tree. The copy is bounded in depth and in size (relative to the input), so
//! cycles and "billion laughs" inputs are errors, not hangs. Dict order is kept.

use std::collections::HashMap;

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64, as little-endian two's complement bytes (`LONG1`/`LONG4`).
    BigInt(Vec<u8>),
    Float(f64),
    /// Text; invalid UTF-8 is replaced (U+FFFD) rather than refused.
    Str(String),
    /// A Python 2 `str` (`SHORT_BINSTRING`/`BINSTRING`) that is not UTF-8.
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// `dict` or `collections.OrderedDict`, in insertion order. Attributes a `BUILD` gives a
    /// dict subclass (a state dict's `_metadata`) are dropped.
    Dict(Vec<(Value, Value)>),
    /// A module-level name from `GLOBAL`, never imported.
    Global {
        module: String,
        name: String,
    },
    /// A call recorded as data.
    Object(Box<Object>),
    /// A persistent id (`BINPERSID`); for torch, a storage reference.
    PersistentId(Box<Value>),
}

/// `callable(*args)` (`REDUCE`) or `cls.__new__(cls, *args)` (`NEWOBJ`), then what was done to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub callable: Value,
    pub args: Value,
    /// The argument of `BUILD` (`__setstate__` or `__dict__` update), if any.
    pub state: Option<Value>,
    /// Pairs set by `SETITEM(S)` (e.g. on a `defaultdict`).
    pub items: Vec<(Value, Value)>,
    /// Values added by `APPEND(S)`.
    pub appended: Vec<Value>,
}

impl Value {
    /// Short description for messages: "int", "dict", "global torch.FloatStorage", …
    pub fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) | Value::BigInt(_) => "int".into(),
            Value::Float(_) => "float".into(),
            Value::Str(_) => "str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(_) => "tuple".into(),
            Value::List(_) => "list".into(),
            Value::Dict(_) => "dict".into(),
            Value::Global { module, name } => format!("global {module}.{name}"),
            Value::Object(o) => match o.callable.global() {
                Some((m, n)) => format!("{m}.{n}(…) object"),
                None => "object".into(),
            },
            Value::PersistentId(_) => "persistent id".into(),
        }
    }

    /// [`Value::kind`] with an article: "an int", "a dict", "None".
    pub fn a_kind(&self) -> String {
        let k = self.kind();
        match k.as_bytes().first() {
            _ if matches!(self, Value::None | Value::Bytes(_)) => k,
            Some(b'a' | b'e' | b'i' | b'o' | b'u') => format!("an {k}"),
            _ => format!("a {k}"),
        }
    }

    /// `(module, name)` of a `Global`.
    pub fn global(&self) -> Option<(&str, &str)> {
        match self {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// Items of a tuple or list.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
}

/// The module-level names a pickle may refer to: what `torch.save` writes for tensors, state
/// dicts and the plain Python and numpy values a training script keeps beside them (XLM's
/// `params`, an `argparse.Namespace`, numpy scalars and arrays, optimizer state). Anything else
/// (`os.system`, `builtins.eval`, a model class) is refused: a reader that only records calls
/// never runs it, but such a file is not a checkpoint of weights.
pub fn allowed_global(module: &str, name: &str) -> bool {
    const TORCH_DTYPES: &[&str] = &[
        "float16", "float32", "float64", "bfloat16", "half", "float", "double", "int8", "int16", "int32", "int64",
        "uint8", "bool", "long", "int", "short", "complex64", "complex128",
    ];
    match module {
        "torch._utils" => name.starts_with("_rebuild_"),
        "torch" => name.ends_with("Storage") || matches!(name, "device" | "Size") || TORCH_DTYPES.contains(&name),
        "collections" => matches!(name, "OrderedDict" | "defaultdict" | "Counter"),
        "argparse" => name == "Namespace",
        "builtins" | "__builtin__" => matches!(name, "set" | "frozenset"),
        "numpy.core.multiarray" | "numpy._core.multiarray" => matches!(name, "_reconstruct" | "scalar"),
        "numpy" => matches!(name, "ndarray" | "dtype"),
        "numpy.dtypes" => name.ends_with("DType"),
        "_codecs" => name == "encode",
        _ => false,
    }
}

/// Deepest nesting accepted: real checkpoints nest fewer than 10 levels; the bound keeps the
/// recursive copy (and every recursive consumer of the tree) far from the stack limit.
pub const MAX_DEPTH: usize = 100;

/// Reads one pickle starting at `data[start]`; returns the value and the position after its
/// `STOP`. Errors are messages with the byte position (counted in `data`).
pub fn parse(data: &[u8], start: usize) -> Result<(Value, usize), String> {
    let mut m =
        Machine { data, pos: start, arena: Vec::new(), stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() };
    let (root, end) = m.run()?;
    // Each node costs about one input byte; sharing through the memo may repeat it, but not
    // without limit. Strings count by length too.
    let mut budget = 2 * (end - start) + 65_536;
    let value = m.tree(root, 0, &mut budget)?;
    Ok((value, end))
}

/// A value on the machine's stack: scalars inline, everything else an arena index.
#[derive(Debug, Clone, Copy)]
enum V {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Node(usize),
}

enum Node {
    BigInt(Vec<u8>),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<V>),
    List(Vec<V>),
    Dict(Vec<(V, V)>),
    Global(String, String),
    Object { callable: V, args: V, state: Option<V>, items: Vec<(V, V)>, appended: Vec<V> },
    PersId(V),
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    arena: Vec<Node>,
    stack: Vec<V>,
    /// Stack lengths at each `MARK`.
    marks: Vec<usize>,
    memo: HashMap<u32, V>,
}

/// Opcode names, for messages (pickletools' names).
fn opcode_name(op: u8) -> &'static str {
    match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

impl Machine<'_> {
    fn take(&mut self, n: usize, op: u8) -> Result<&[u8], String> {
        let start = self.pos;
        let bytes = start.checked_add(n).and_then(|end| self.data.get(start..end)).ok_or_else(|| {
            format!(
                "pickle is truncated: {} needs {n} bytes at byte {start}, {} are left",
                opcode_name(op),
                self.data.len().saturating_sub(start)
            )
        })?;
        self.pos += n;
        Ok(bytes)
    }

    fn u8(&mut self, op: u8) -> Result<u8, String> {
        Ok(self.take(1, op)?[0])
    }

    fn u16(&mut self, op: u8) -> Result<u16, String> {
        let b = self.take(2, op)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, op: u8) -> Result<u32, String> {
        let b = self.take(4, op)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self, op: u8) -> Result<String, String> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let n = rest.iter().take(1024).position(|&b| b == b'\n').ok_or_else(|| {
            format!("{} at byte {}: no end of line within 1024 bytes", opcode_name(op), self.pos.saturating_sub(1))
        })?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn node(&mut self, n: Node) -> V {
        self.arena.push(n);
        V::Node(self.arena.len() - 1)
    }

    fn push(&mut self, v: V) {
        self.stack.push(v);
    }

    fn pop(&mut self, op: u8, at: usize) -> Result<V, String> {
        if self.stack.len() <= self.marks.last().copied().unwrap_or(0) {
            return Err(format!("{} at byte {at}: the stack is empty (or ends at a MARK)", opcode_name(op)));
        }
        self.stack.pop().ok_or_else(|| format!("{} at byte {at}: the stack is empty", opcode_name(op)))
    }

    fn top(&self, op: u8, at: usize) -> Result<V, String> {
        match self.stack.last() {
            Some(&v) if self.stack.len() > self.marks.last().copied().unwrap_or(0) => Ok(v),
            _ => Err(format!("{} at byte {at}: the stack is empty (or ends at a MARK)", opcode_name(op))),
        }
    }

    /// Everything pushed since the last `MARK` (which is removed).
    fn pop_mark(&mut self, op: u8, at: usize) -> Result<Vec<V>, String> {
        let m = self.marks.pop().ok_or_else(|| format!("{} at byte {at}: no MARK on the stack", opcode_name(op)))?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    fn pop_n(&mut self, n: usize, op: u8, at: usize) -> Result<Vec<V>, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return Err(format!("{} at byte {at}: needs {n} values on the stack", opcode_name(op)));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn describe(&self, v: V) -> &'static str {
        match v {
            V::None => "None",
            V::Bool(_) => "a bool",
            V::Int(_) => "an int",
            V::Float(_) => "a float",
            V::Node(i) => match &self.arena[i] {
                Node::BigInt(_) => "an int",
                Node::Str(_) => "a str",
                Node::Bytes(_) => "bytes",
                Node::Tuple(_) => "a tuple",
                Node::List(_) => "a list",
                Node::Dict(_) => "a dict",
                Node::Global(..) => "a global",
                Node::Object { .. } => "an object",
                Node::PersId(_) => "a persistent id",
            },
        }
    }

    fn int_from_le(&mut self, bytes: &[u8]) -> V {
        let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
        let fill = if negative { 0xff } else { 0 };
        if bytes.len() <= 8 || bytes[8..].iter().all(|&b| b == fill) && (bytes[7] & 0x80 != 0) == negative {
            let mut b = [fill; 8];
            let n = bytes.len().min(8);
            b[..n].copy_from_slice(&bytes[..n]);
            V::Int(i64::from_le_bytes(b))
        } else {
            self.node(Node::BigInt(bytes.to_vec()))
        }
    }

    fn text(&mut self, bytes: Vec<u8>) -> V {
        match String::from_utf8(bytes) {
            Ok(s) => self.node(Node::Str(s)),
            Err(e) => self.node(Node::Bytes(e.into_bytes())),
        }
    }

    fn run(&mut self) -> Result<(V, usize), String> {
        loop {
            let at = self.pos;
            let op =
                *self.data.get(at).ok_or_else(|| format!("pickle is truncated: it ends at byte {at} without STOP"))?;
            self.pos += 1;
            match op {
                0x80 => {
                    let v = self.u8(op)?;
                    if v > 5 {
                        return Err(format!("PROTO at byte {at}: unknown pickle protocol {v}"));
                    }
                }
                b'.' => {
                    let v = self.pop(op, at)?;
                    return Ok((v, self.pos));
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop(op, at)?;
                }
                b'1' => {
                    self.pop_mark(op, at)?;
                }
                b'2' => {
                    let v = self.top(op, at)?;
                    self.push(v);
                }
                b'N' => self.push(V::None),
                0x88 => self.push(V::Bool(true)),
                0x89 => self.push(V::Bool(false)),
                b'J' => {
                    let v = self.u32(op)? as i32;
                    self.push(V::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8(op)?;
                    self.push(V::Int(i64::from(v)));
                }
                b'M' => {
                    let v = self.u16(op)?;
                    self.push(V::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { usize::from(self.u8(op)?) } else { self.u32(op)? as i32 as isize as usize };
                    if n > isize::MAX as usize {
                        return Err(format!("LONG4 at byte {at}: negative length"));
                    }
                    let bytes = self.take(n, op)?.to_vec();
                    let v = self.int_from_le(&bytes);
                    self.push(v);
                }
                b'G' => {
                    let b = self.take(8, op)?;
                    let v = f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                    self.push(V::Float(v));
                }
                b'X' => {
                    let n = self.u32(op)? as usize;
                    let s = String::from_utf8_lossy(self.take(n, op)?).into_owned();
                    let v = self.node(Node::Str(s));
                    self.push(v);
                }
                b'U' | b'T' => {
                    let n = if op == b'U' { usize::from(self.u8(op)?) } else { self.u32(op)? as i32 as isize as usize };
                    if n > isize::MAX as usize {
                        return Err(format!("BINSTRING at byte {at}: negative length"));
                    }
                    let bytes = self.take(n, op)?.to_vec();
                    let v = self.text(bytes);
                    self.push(v);
                }
                b')' => {
                    let v = self.node(Node::Tuple(Vec::new()));
                    self.push(v);
                }
                0x85..=0x87 => {
                    let items = self.pop_n(usize::from(op - 0x84), op, at)?;
                    let v = self.node(Node::Tuple(items));
                    self.push(v);
                }
                b't' => {
                    let items = self.pop_mark(op, at)?;
                    let v = self.node(Node::Tuple(items));
                    self.push(v);
                }
                b']' => {
                    let v = self.node(Node::List(Vec::new()));
                    self.push(v);
                }
                b'l' => {
                    let items = self.pop_mark(op, at)?;
                    let v = self.node(Node::List(items));
                    self.push(v);
                }
                b'}' => {
                    let v = self.node(Node::Dict(Vec::new()));
                    self.push(v);
                }
                b'd' => {
                    let items = self.pop_mark(op, at)?;
                    let pairs =
                        pairs(items).ok_or_else(|| format!("DICT at byte {at}: odd number of keys and values"))?;
                    let v = self.node(Node::Dict(pairs));
                    self.push(v);
                }
                b'a' | b'e' => {
                    let items = if op == b'a' { vec![self.pop(op, at)?] } else { self.pop_mark(op, at)? };
                    let target = self.top(op, at)?;
                    let kind = self.describe(target);
                    match target {
                        V::Node(i) => match &mut self.arena[i] {
                            Node::List(l) => l.extend(items),
                            Node::Object { appended, .. } => appended.extend(items),
                            _ => return Err(format!("{} at byte {at}: cannot append to {kind}", opcode_name(op))),
                        },
                        _ => return Err(format!("{} at byte {at}: cannot append to {kind}", opcode_name(op))),
                    }
                }
                b's' | b'u' => {
                    let items = if op == b's' { self.pop_n(2, op, at)? } else { self.pop_mark(op, at)? };
                    let new =
                        pairs(items).ok_or_else(|| format!("SETITEMS at byte {at}: odd number of keys and values"))?;
                    let target = self.top(op, at)?;
                    let kind = self.describe(target);
                    match target {
                        V::Node(i) => match &mut self.arena[i] {
                            Node::Dict(d) => d.extend(new),
                            Node::Object { items, .. } => items.extend(new),
                            _ => return Err(format!("{} at byte {at}: cannot set items on {kind}", opcode_name(op))),
                        },
                        _ => return Err(format!("{} at byte {at}: cannot set items on {kind}", opcode_name(op))),
                    }
                }
                b'c' => {
                    let module = self.line(op)?;
                    let name = self.line(op)?;
                    if !allowed_global(&module, &name) {
                        return Err(format!(
                            "GLOBAL at byte {at} names {module}.{name}, which torch.save does not write for tensors and \
                             plain data; refusing the file (torch.load would import {module} and call it)"
                        ));
                    }
                    let v = self.node(Node::Global(module, name));
                    self.push(v);
                }
                b'R' | 0x81 => {
                    let args = self.pop(op, at)?;
                    let callable = self.pop(op, at)?;
                    let v = if self.is_empty_ordered_dict_call(callable, args) {
                        self.node(Node::Dict(Vec::new()))
                    } else {
                        self.node(Node::Object { callable, args, state: None, items: Vec::new(), appended: Vec::new() })
                    };
                    self.push(v);
                }
                b'b' => {
                    let new_state = self.pop(op, at)?;
                    let target = self.top(op, at)?;
                    let kind = self.describe(target);
                    match target {
                        V::Node(i) => match &mut self.arena[i] {
                            Node::Object { state, .. } => *state = Some(new_state),
                            Node::Dict(_) => {}
                            _ => return Err(format!("BUILD at byte {at}: cannot set the state of {kind}")),
                        },
                        _ => return Err(format!("BUILD at byte {at}: cannot set the state of {kind}")),
                    }
                }
                b'Q' => {
                    let pid = self.pop(op, at)?;
                    let v = self.node(Node::PersId(pid));
                    self.push(v);
                }
                b'q' | b'r' => {
                    let key = if op == b'q' { u32::from(self.u8(op)?) } else { self.u32(op)? };
                    let v = self.top(op, at)?;
                    self.memo.insert(key, v);
                }
                b'h' | b'j' => {
                    let key = if op == b'h' { u32::from(self.u8(op)?) } else { self.u32(op)? };
                    let v = *self.memo.get(&key).ok_or_else(|| {
                        format!("{} at byte {at}: memo entry {key} was never stored", opcode_name(op))
                    })?;
                    self.push(v);
                }
                other => {
                    let name = opcode_name(other);
                    return Err(if name == "unknown" {
                        format!("unknown pickle opcode {other:#04x} at byte {at} (corrupt file?)")
                    } else {
                        format!(
                            "unsupported pickle opcode {name} ({other:#04x}) at byte {at}: only the protocol-2 binary \
                             opcodes that torch.save writes are read (save with pickle_protocol=2, torch's default)"
                        )
                    });
                }
            }
        }
    }

    /// `collections.OrderedDict()`: how a state dict (and any OrderedDict) starts.
    fn is_empty_ordered_dict_call(&self, callable: V, args: V) -> bool {
        let (V::Node(c), V::Node(a)) = (callable, args) else { return false };
        matches!(&self.arena[c], Node::Global(m, n) if m == "collections" && n == "OrderedDict")
            && matches!(&self.arena[a], Node::Tuple(t) if t.is_empty())
    }

    /// Copies the arena graph under `v` into an owned tree.
    fn tree(&self, v: V, depth: usize, budget: &mut usize) -> Result<Value, String> {
        let cost = match v {
            V::Node(i) => match &self.arena[i] {
                Node::Str(s) => 1 + s.len() / 8,
                Node::Bytes(b) | Node::BigInt(b) => 1 + b.len() / 8,
                _ => 1,
            },
            _ => 1,
        };
        *budget = budget.checked_sub(cost).ok_or(
            "the pickle's shared references expand to too many objects (more than twice its size); refusing to expand it",
        )?;
        if depth > MAX_DEPTH {
            return Err(format!("the pickle nests deeper than {MAX_DEPTH} levels (or refers to itself)"));
        }
        let sub = |x: V, budget: &mut usize| self.tree(x, depth + 1, budget);
        let seq = |xs: &[V], budget: &mut usize| xs.iter().map(|&x| sub(x, budget)).collect::<Result<Vec<_>, _>>();
        let pairs = |xs: &[(V, V)], budget: &mut usize| {
            xs.iter().map(|&(k, x)| Ok((sub(k, budget)?, sub(x, budget)?))).collect::<Result<Vec<_>, String>>()
        };
        Ok(match v {
            V::None => Value::None,
            V::Bool(b) => Value::Bool(b),
            V::Int(i) => Value::Int(i),
            V::Float(f) => Value::Float(f),
            V::Node(i) => match &self.arena[i] {
                Node::BigInt(b) => Value::BigInt(b.clone()),
                Node::Str(s) => Value::Str(s.clone()),
                Node::Bytes(b) => Value::Bytes(b.clone()),
                Node::Tuple(t) => Value::Tuple(seq(t, budget)?),
                Node::List(l) => Value::List(seq(l, budget)?),
                Node::Dict(d) => Value::Dict(pairs(d, budget)?),
                Node::Global(m, n) => Value::Global { module: m.clone(), name: n.clone() },
                Node::PersId(p) => Value::PersistentId(Box::new(sub(*p, budget)?)),
                Node::Object { callable, args, state, items, appended } => Value::Object(Box::new(Object {
                    callable: sub(*callable, budget)?,
                    args: sub(*args, budget)?,
                    state: state.map(|s| sub(s, budget)).transpose()?,
                    items: pairs(items, budget)?,
                    appended: seq(appended, budget)?,
                })),
            },
        })
    }
}

fn pairs(items: Vec<V>) -> Option<Vec<(V, V)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    let mut it = items.into_iter();
    let mut out = Vec::with_capacity(it.len() / 2);
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Some(out)
}

/// Decimal text of a little-endian two's complement integer of any length.
pub fn bigint_to_decimal(le: &[u8]) -> String {
    let negative = le.last().is_some_and(|&b| b & 0x80 != 0);
    // Magnitude, big-endian base 256.
    let mut mag: Vec<u8> = le.iter().rev().copied().collect();
    if negative {
        for b in &mut mag {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in &mut mag {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if negative {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Writes protocol-2 pickles opcode by opcode, for tests.
    pub(crate) struct W(pub Vec<u8>);

    impl W {
        pub(crate) fn new() -> W {
            W(vec![0x80, 2])
        }
        pub(crate) fn op(mut self, op: u8) -> W {
            self.0.push(op);
            self
        }
        pub(crate) fn raw(mut self, bytes: &[u8]) -> W {
            self.0.extend_from_slice(bytes);
            self
        }
        pub(crate) fn s(self, s: &str) -> W {
            self.op(b'X').raw(&(s.len() as u32).to_le_bytes()).raw(s.as_bytes())
        }
        pub(crate) fn int(self, v: i64) -> W {
            match v {
                0..=0xff => self.op(b'K').raw(&[v as u8]),
                0x100..=0xffff => self.op(b'M').raw(&(v as u16).to_le_bytes()),
                _ if i32::try_from(v).is_ok() => self.op(b'J').raw(&(v as i32).to_le_bytes()),
                _ => self.op(0x8a).raw(&[8]).raw(&v.to_le_bytes()),
            }
        }
        pub(crate) fn global(self, module: &str, name: &str) -> W {
            self.op(b'c').raw(format!("{module}\n{name}\n").as_bytes())
        }
        pub(crate) fn ints(self, xs: &[usize]) -> W {
            xs.iter().fold(self.op(b'('), |w, &x| w.int(x as i64)).op(b't')
        }
        /// `_rebuild_tensor_v2(('storage', torch.<class>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())`.
        pub(crate) fn tensor(
            self,
            class: &str,
            key: &str,
            numel: i64,
            offset: i64,
            size: &[usize],
            stride: &[usize],
        ) -> W {
            self.global("torch._utils", "_rebuild_tensor_v2")
                .op(b'(')
                .op(b'(')
                .s("storage")
                .global("torch", class)
                .s(key)
                .s("cpu")
                .int(numel)
                .op(b't')
                .op(b'Q')
                .int(offset)
                .ints(size)
                .ints(stride)
                .op(0x89)
                .global("collections", "OrderedDict")
                .op(b')')
                .op(b'R')
                .op(b't')
                .op(b'R')
        }
        pub(crate) fn stop(self) -> Vec<u8> {
            self.op(b'.').0
        }
    }

    fn p(bytes: &[u8]) -> Value {
        parse(bytes, 0).unwrap_or_else(|e| panic!("{e}")).0
    }

    fn perr(bytes: &[u8]) -> String {
        parse(bytes, 0).map(|v| panic!("expected an error, got {v:?}")).unwrap_err()
    }

    fn s(x: &str) -> Value {
        Value::Str(x.into())
    }

    #[test]
    fn scalars() {
        assert_eq!(p(&W::new().op(b'N').stop()), Value::None);
        assert_eq!(p(&W::new().op(0x88).stop()), Value::Bool(true));
        assert_eq!(p(&W::new().int(200).stop()), Value::Int(200));
        assert_eq!(p(&W::new().int(40_000).stop()), Value::Int(40_000));
        assert_eq!(p(&W::new().int(-5).stop()), Value::Int(-5));
        assert_eq!(p(&W::new().int(1 << 40).stop()), Value::Int(1 << 40));
        // LONG1 as Python writes it: minimal two's complement bytes.
        assert_eq!(p(&W::new().op(0x8a).raw(&[0]).stop()), Value::Int(0));
        assert_eq!(p(&W::new().op(0x8a).raw(&[1, 0xff]).stop()), Value::Int(-1));
        assert_eq!(p(&W::new().op(0x8a).raw(&[2, 0xff, 0x00]).stop()), Value::Int(255));
        assert_eq!(
            p(&W::new().op(0x8a).raw(&[9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0]).stop()),
            Value::Int(i64::MAX)
        );
        assert_eq!(p(&W::new().op(0x8a).raw(&[9, 0, 0, 0, 0, 0, 0, 0, 0x80, 0xff]).stop()), Value::Int(i64::MIN));
        // torch's legacy magic number needs 10 bytes (and made candle's reader overflow).
        let magic = p(&[0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);
        let Value::BigInt(b) = &magic else { panic!("{magic:?}") };
        assert_eq!(bigint_to_decimal(b), (0x1950a86a20f9469cfc6cu128).to_string());
        assert_eq!(p(&W::new().op(0x8b).raw(&3u32.to_le_bytes()).raw(&[0, 0, 0x80]).stop()), Value::Int(-(1 << 23)));
        assert_eq!(p(&W::new().op(b'G').raw(&(-2.5f64).to_be_bytes()).stop()), Value::Float(-2.5));
        assert_eq!(p(&W::new().s("héllo ✓").stop()), s("héllo ✓"));
        assert_eq!(p(&W::new().op(b'U').raw(&[2, b'h', b'i']).stop()), s("hi"));
        assert_eq!(
            p(&W::new().op(b'T').raw(&2u32.to_le_bytes()).raw(&[0xff, 0xfe]).stop()),
            Value::Bytes(vec![0xff, 0xfe])
        );
        assert_eq!(p(&W::new().op(b'X').raw(&1u32.to_le_bytes()).raw(&[0xff]).stop()), s("\u{fffd}"));
    }

    #[test]
    fn bigints_to_decimal() {
        for (le, want) in [
            (vec![], "0"),
            (vec![0xff], "-1"),
            (vec![0x80], "-128"),
            (vec![0xff, 0x00], "255"),
            ((1u128 << 70).to_le_bytes()[..9].to_vec(), "1180591620717411303424"),
            ((-(1i128 << 70)).to_le_bytes()[..9].to_vec(), "-1180591620717411303424"),
        ] {
            assert_eq!(bigint_to_decimal(&le), want, "{le:x?}");
        }
    }

    #[test]
    fn containers_keep_order_and_memo_shares_filled_containers() {
        // d = {}; memo; d['b'] = 1; d['a'] = [d_items...]; then a tuple (d, d) through the memo.
        let bytes = W::new()
            .op(b'}')
            .op(b'q')
            .raw(&[0])
            .op(b'(')
            .s("b")
            .int(1)
            .s("a")
            .op(b']')
            .op(b'(')
            .int(7)
            .op(0x8a)
            .raw(&[0])
            .op(b'e')
            .op(b'u')
            .op(b'h')
            .raw(&[0])
            .op(0x86)
            .stop();
        let d = Value::Dict(vec![(s("b"), Value::Int(1)), (s("a"), Value::List(vec![Value::Int(7), Value::Int(0)]))]);
        assert_eq!(p(&bytes), Value::Tuple(vec![d.clone(), d]));
        // MARK … TUPLE, DICT, LIST; POP and POP_MARK; DUP.
        let bytes = W::new().op(b'(').int(1).int(2).op(b't').op(b'(').s("k").op(b'N').op(b'd').op(0x86).stop();
        assert_eq!(
            p(&bytes),
            Value::Tuple(vec![
                Value::Tuple(vec![Value::Int(1), Value::Int(2)]),
                Value::Dict(vec![(s("k"), Value::None)])
            ])
        );
        let bytes = W::new().op(b'(').int(1).op(b'l').op(b'(').int(9).op(b'1').int(3).op(b'0').op(b'2').op(0x85).stop();
        assert_eq!(p(&bytes), Value::Tuple(vec![Value::List(vec![Value::Int(1)])]));
    }

    #[test]
    fn calls_are_recorded_not_run() {
        // OrderedDict() becomes a dict; BUILD on it (a state dict's _metadata) is dropped.
        let bytes = W::new()
            .global("collections", "OrderedDict")
            .op(b')')
            .op(b'R')
            .op(b'(')
            .s("w")
            .int(1)
            .op(b'u')
            .op(b'}')
            .s("_metadata")
            .op(b'N')
            .op(b's')
            .op(b'b')
            .stop();
        assert_eq!(p(&bytes), Value::Dict(vec![(s("w"), Value::Int(1))]));
        // argparse.Namespace(): REDUCE then BUILD with its __dict__; defaultdict gets SETITEMS.
        let bytes =
            W::new().global("argparse", "Namespace").op(b')').op(b'R').op(b'}').s("x").int(3).op(b's').op(b'b').stop();
        let Value::Object(o) = p(&bytes) else { panic!() };
        assert_eq!(o.callable.global(), Some(("argparse", "Namespace")));
        assert_eq!(o.args, Value::Tuple(vec![]));
        assert_eq!(o.state, Some(Value::Dict(vec![(s("x"), Value::Int(3))])));
        let bytes =
            W::new().global("collections", "defaultdict").op(b'N').op(0x85).op(0x81).s("k").int(2).op(b's').stop();
        let Value::Object(o) = p(&bytes) else { panic!() };
        assert_eq!(o.items, [(s("k"), Value::Int(2))]);
        assert_eq!(o.args, Value::Tuple(vec![Value::None]));
        let bytes = W::new().s("storage").op(0x85).op(b'Q').stop();
        assert_eq!(p(&bytes), Value::PersistentId(Box::new(Value::Tuple(vec![s("storage")]))));
        assert_eq!(p(&bytes).kind(), "persistent id");
    }

    #[test]
    fn consecutive_pickles_and_end_positions() {
        let a = W::new().int(1001).stop();
        let b = W::new().s("x").stop();
        let both = [a.clone(), b.clone()].concat();
        let (v, end) = parse(&both, 0).unwrap();
        assert_eq!((v, end), (Value::Int(1001), a.len()));
        assert_eq!(parse(&both, end).unwrap(), (s("x"), both.len()));
        // Positions in errors count from the start of the buffer.
        let e = parse(&[both.as_slice(), &[0x80, 2, 0x8c, 1, b'x', b'.']].concat(), both.len()).unwrap_err();
        assert!(e.contains(&format!("at byte {}", both.len() + 2)), "{e}");
    }

    #[test]
    fn refusals_name_the_opcode_and_the_problem() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x80, 4, 0x95, 8, 0, 0, 0, 0, 0, 0, 0], "unsupported pickle opcode FRAME (0x95) at byte 2"),
            (vec![0x80, 3, 0x8c, 1, b'a', b'.'], "SHORT_BINUNICODE (0x8c)"),
            (vec![0x80, 4, 0x93], "STACK_GLOBAL (0x93)"),
            (vec![0x80, 4, b'N', 0x94], "MEMOIZE (0x94)"),
            (vec![0x80, 3, b'C', 1, b'a'], "SHORT_BINBYTES"),
            (b"I42\n.".to_vec(), "unsupported pickle opcode INT (0x49) at byte 0"),
            (b"P1\n.".to_vec(), "PERSID"),
            (vec![0x80, 2, 0xff], "unknown pickle opcode 0xff at byte 2"),
            (vec![0x80, 9], "unknown pickle protocol 9"),
            (vec![0x80, 2, b'N'], "ends at byte 3 without STOP"),
            (vec![0x80, 2, b'X', 9, 0, 0, 0, b'a'], "BINUNICODE needs 9 bytes at byte 7, 1 are left"),
            (vec![0x80, 2, b'h', 3, b'.'], "BINGET at byte 2: memo entry 3 was never stored"),
            (vec![0x80, 2, b'.'], "STOP at byte 2: the stack is empty"),
            (vec![0x80, 2, b'N', b'(', b'0', b'.'], "POP at byte 4: the stack is empty (or ends at a MARK)"),
            (vec![0x80, 2, b't'], "TUPLE at byte 2: no MARK"),
            (vec![0x80, 2, b'N', 0x86], "TUPLE2 at byte 3: needs 2 values"),
            (vec![0x80, 2, b'K', 1, b'N', b'a'], "APPEND at byte 5: cannot append to an int"),
            (vec![0x80, 2, b'}', b'(', b'N', b'u'], "SETITEMS at byte 5: odd number"),
            (vec![0x80, 2, b')', b'N', b'b'], "BUILD at byte 4: cannot set the state of a tuple"),
            (vec![0x80, 2, b'c', b'a'], "no end of line"),
            (vec![0x80, 2, 0x8b, 0xff, 0xff, 0xff, 0xff], "LONG4 at byte 2: negative length"),
        ];
        for (bytes, want) in cases {
            let e = perr(&bytes);
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    /// The classic exploit pickles are refused at their GLOBAL, naming it; torch's own names pass.
    #[test]
    fn arbitrary_globals_are_refused() {
        for (module, name) in [("os", "system"), ("posix", "system"), ("builtins", "eval"), ("subprocess", "Popen"), ("torch", "load"), ("xlm.model", "TransformerModel")] {
            let bytes = W::new().global(module, name).s("touch /tmp/pwned").op(0x85).op(b'R').stop();
            let e = perr(&bytes);
            assert!(e.contains(&format!("GLOBAL at byte 2 names {module}.{name}, which torch.save does not write")), "{e}");
        }
        for (module, name) in [
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch", "FloatStorage"),
            ("collections", "OrderedDict"),
            ("argparse", "Namespace"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("_codecs", "encode"),
        ] {
            assert!(allowed_global(module, name), "{module}.{name}");
        }
    }

    #[test]
    fn cycles_depth_and_expansion_are_bounded() {
        // l = []; l.append(l)
        let e = perr(&W::new().op(b']').op(b'q').raw(&[0]).op(b'h').raw(&[0]).op(b'a').stop());
        assert!(e.contains("deeper than 100 levels (or refers to itself)"), "{e}");
        // 200 nested lists.
        let mut w = W::new();
        for _ in 0..200 {
            w = w.op(b']');
        }
        for _ in 0..199 {
            w = w.op(b'a');
        }
        assert!(perr(&w.stop()).contains("deeper than 100"));
        // Doubling a tuple through the memo 30 times: 2^30 leaves from 200 bytes.
        let mut w = W::new().op(b'N');
        for _ in 0..30 {
            w = w.op(b'q').raw(&[0]).op(b'h').raw(&[0]).op(0x86);
        }
        assert!(perr(&w.stop()).contains("expand to too many objects"));
        // A big string shared a few times is fine.
        let text = "x".repeat(10_000);
        let (v, _) =
            parse(&W::new().s(&text).op(b'q').raw(&[0]).op(b'h').raw(&[0]).op(b'h').raw(&[0]).op(0x87).stop(), 0)
                .unwrap();
        assert_eq!(v, Value::Tuple(vec![s(&text), s(&text), s(&text)]));
    }

    /// The data.pkl of the golden zip fixture (real torch output).
    pub(crate) fn golden_pickle() -> Vec<u8> {
        static PICKLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        PICKLE
            .get_or_init(|| {
                let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/formats/pth/xlm-zip.pth");
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
                let mut f = z.by_name("xlm-zip/data.pkl").unwrap();
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut out).unwrap();
                out
            })
            .clone()
    }

    #[test]
    fn reads_torchs_own_pickle() {
        let (v, end) = parse(&golden_pickle(), 0).unwrap();
        assert_eq!(end, golden_pickle().len());
        let Value::Dict(top) = v else { panic!("{v:?}") };
        let keys: Vec<&str> = top.iter().filter_map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "epoch",
                "n_total_iter",
                "best_metrics",
                "best_stopping_criterion",
                "model",
                "model_optimizer",
                "dico_id2word",
                "dico_word2id",
                "dico_counts",
                "params"
            ]
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

        /// No input may panic the reader: random bytes, and mutations and cuts of torch's pickle.
        #[test]
        fn fuzz_pickle(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                       muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
                       cut in any::<usize>()) {
            let _ = parse(&bytes, 0);
            let _ = parse(&[&[0x80u8, 2][..], &bytes].concat(), 0);
            let mut g = golden_pickle();
            for (at, v) in muts {
                let n = g.len();
                g[at % n] = v;
            }
            let _ = parse(&g, 0);
            g.truncate(cut % (g.len() + 1));
            let _ = parse(&g, 0);
        }
    }
}
