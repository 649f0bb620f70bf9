//! A protocol-2 pickle emitter for exactly what `torch.save` writes for a state dict, using only
//! opcodes that `torch.load(weights_only=True)` accepts.
//!
//! The object written is `OrderedDict([(name, tensor), …])`, each tensor being
//! `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` where the
//! storage is a persistent id `('storage', torch.<X>Storage, '<key>', 'cpu', numel)`; the
//! storage's bytes live in the zip member `data/<key>`.

use super::TensorSpec;
use crate::error::{Error, Result};
use crate::source::DType;

pub(super) mod op {
    pub const PROTO: u8 = 0x80;
    pub const GLOBAL: u8 = b'c';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const REDUCE: u8 = b'R';
    pub const MARK: u8 = b'(';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const BINPERSID: u8 = b'Q';
    pub const NEWFALSE: u8 = 0x89;
    pub const SETITEMS: u8 = b'u';
    pub const STOP: u8 = b'.';
}

/// The `torch.<X>Storage` class that holds `dtype`, if torch has one.
pub(super) fn storage_class(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "FloatStorage",
        DType::F64 => "DoubleStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::I64 => "LongStorage",
        DType::I32 => "IntStorage",
        DType::I16 => "ShortStorage",
        DType::I8 => "CharStorage",
        DType::U8 => "ByteStorage",
        DType::Bool => "BoolStorage",
        DType::U16 | DType::U32 | DType::U64 | DType::String => return None,
    })
}

/// Python's pickler puts at most this many items in one SETITEMS.
const BATCH: usize = 1000;

struct Pickler {
    buf: Vec<u8>,
}

impl Pickler {
    fn op(&mut self, op: u8) {
        self.buf.push(op);
    }

    fn global(&mut self, module: &str, name: &str) {
        self.buf.push(op::GLOBAL);
        for part in [module, name] {
            self.buf.extend_from_slice(part.as_bytes());
            self.buf.push(b'\n');
        }
    }

    fn unicode(&mut self, s: &str) {
        self.buf.push(op::BINUNICODE);
        self.buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(s.as_bytes());
    }

    /// Smallest encoding of a non-negative integer, as Python's pickler chooses it.
    fn int(&mut self, v: u64) {
        if v <= 0xff {
            self.buf.extend_from_slice(&[op::BININT1, v as u8]);
        } else if v <= 0xffff {
            self.buf.push(op::BININT2);
            self.buf.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= i32::MAX as u64 {
            self.buf.push(op::BININT);
            self.buf.extend_from_slice(&(v as i32).to_le_bytes());
        } else {
            // Two's complement, little-endian, minimal length: keep a zero byte on top if the
            // highest kept byte has its sign bit set.
            let bytes = v.to_le_bytes();
            let mut n = 8 - (v.leading_zeros() as usize / 8);
            if bytes[n - 1] & 0x80 != 0 {
                n += 1;
            }
            self.buf.extend_from_slice(&[op::LONG1, n as u8]);
            self.buf.extend_from_slice(&bytes[..n.min(8)]);
            if n == 9 {
                self.buf.push(0);
            }
        }
    }

    fn int_tuple(&mut self, items: &[u64]) {
        match items.len() {
            0 => return self.op(op::EMPTY_TUPLE),
            1..=3 => {}
            _ => self.op(op::MARK),
        }
        for &v in items {
            self.int(v);
        }
        self.op(match items.len() {
            1 => op::TUPLE1,
            2 => op::TUPLE2,
            3 => op::TUPLE3,
            _ => op::TUPLE,
        });
    }

    /// `collections.OrderedDict()`
    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(op::EMPTY_TUPLE);
        self.op(op::REDUCE);
    }

    fn tensor(&mut self, spec: &TensorSpec, key: &str) -> Result<()> {
        let class = storage_class(spec.dtype).ok_or_else(|| unsupported(spec))?;
        let shape: Vec<u64> = spec.shape.iter().map(|&d| d as u64).collect();
        // Contiguous strides in elements; torch treats size-0 dims as 1 when computing them.
        let mut stride = vec![0u64; shape.len()];
        let mut acc = 1u64;
        for i in (0..shape.len()).rev() {
            stride[i] = acc;
            acc = acc.saturating_mul(shape[i].max(1));
        }

        self.global("torch._utils", "_rebuild_tensor_v2");
        self.op(op::MARK);
        // Persistent id: ('storage', torch.<X>Storage, key, 'cpu', numel).
        self.op(op::MARK);
        self.unicode("storage");
        self.global("torch", class);
        self.unicode(key);
        self.unicode("cpu");
        self.int(spec.numel()?);
        self.op(op::TUPLE);
        self.op(op::BINPERSID);
        self.int(0); // storage offset
        self.int_tuple(&shape);
        self.int_tuple(&stride);
        self.op(op::NEWFALSE); // requires_grad
        self.empty_ordered_dict(); // backward hooks
        self.op(op::TUPLE);
        self.op(op::REDUCE);
        Ok(())
    }
}

fn unsupported(spec: &TensorSpec) -> Error {
    Error::Output(format!(
        "tensor '{}': {} cannot be stored in pytorch_model.bin (torch has no storage class for it)",
        spec.name,
        spec.dtype.name()
    ))
}

pub(super) fn check_spec(spec: &TensorSpec) -> Result<()> {
    storage_class(spec.dtype).ok_or_else(|| unsupported(spec))?;
    spec.nbytes().map(|_| ())
}

/// `data.pkl` for a state dict: tensor `i` (in `specs` order) uses storage key `i`.
pub(super) fn state_dict(specs: &[&TensorSpec]) -> Result<Vec<u8>> {
    let mut p = Pickler { buf: Vec::with_capacity(256 + specs.len() * 256) };
    p.buf.extend_from_slice(&[op::PROTO, 2]);
    p.empty_ordered_dict();
    for (batch_no, batch) in specs.chunks(BATCH).enumerate() {
        p.op(op::MARK);
        for (j, spec) in batch.iter().enumerate() {
            p.unicode(&spec.name);
            p.tensor(spec, &(batch_no * BATCH + j).to_string())?;
        }
        p.op(op::SETITEMS);
    }
    p.op(op::STOP);
    Ok(p.buf)
}
