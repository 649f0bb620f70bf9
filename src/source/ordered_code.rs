//! TensorFlow's OrderedCode encoding, used to build the keys under which slices of partitioned
//! tensors are stored (V2 bundles) and under which all data lives (V1 checkpoints).
//! Docs: checkpoint-formats.md §1.6. Only encoding is needed: readers compute the key of each
//! slice they want and look it up.

/// Appends an unsigned number: one length byte, then the minimal big-endian bytes (0 → `00`).
pub fn write_num_increasing(out: &mut Vec<u8>, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = (v.leading_zeros() / 8) as usize;
    out.push((8 - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

/// Appends a string: `00` → `00 FF`, `FF` → `FF 00`, then the terminator `00 01`.
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            0x00 => out.extend_from_slice(&[0x00, 0xff]),
            0xff => out.extend_from_slice(&[0xff, 0x00]),
            b => out.push(b),
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Appends a signed number so that byte order equals numeric order.
///
/// The encoding length L (1..=10) is the smallest with `v` in `[-2^(7L-1), 2^(7L-1))`; the value is
/// written as L-byte big-endian two's complement and the length header bits (L ones followed by a
/// zero, counting from the top bit) are XOR-ed into the leading bytes.
pub fn write_signed_num_increasing(out: &mut Vec<u8>, v: i64) {
    // Magnitude-like value: for negatives, the one's complement has the same bit length.
    let x = if v < 0 { !(v as u64) } else { v as u64 };
    let bits = 64 - x.leading_zeros(); // significant bits, excluding the sign bit
                                       // Need 7L - 1 > bits - 1, i.e. 7L >= bits + 1.
    let len = ((bits as usize + 1).div_ceil(7)).clamp(1, 10);
    // 10-byte big-endian two's complement (sign extended).
    let mut buf = [if v < 0 { 0xffu8 } else { 0 }; 10];
    buf[2..].copy_from_slice(&v.to_be_bytes());
    let enc = &mut buf[10 - len..];
    // Header: `len` one-bits followed by a zero bit, from the most significant bit of enc[0].
    let header: u16 = match len {
        1..=8 => (0xff00u16 >> len) & 0xff,
        _ => 0,
    };
    if len <= 8 {
        enc[0] ^= header as u8;
    } else {
        // L = 9: FF 80, L = 10: FF C0
        enc[0] ^= 0xff;
        enc[1] ^= if len == 9 { 0x80 } else { 0xc0 };
    }
    out.extend_from_slice(enc);
}

/// Key of one slice of tensor `name` (TF's `EncodeTensorNameSlice`): `00`, the escaped name,
/// the rank, then `start, length` per dimension, where a full extent is `(0, -1)`.
pub fn encode_tensor_name_slice(name: &[u8], extents: &[(i64, i64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 4 + 4 * extents.len());
    write_num_increasing(&mut out, 0);
    write_string(&mut out, name);
    write_num_increasing(&mut out, extents.len() as u64);
    for &(start, length) in extents {
        write_signed_num_increasing(&mut out, start);
        write_signed_num_increasing(&mut out, length);
    }
    out
}

/// Extents of a `TensorSliceProto` as the `(start, length)` pairs that go into its key; an
/// extent without a length is a full extent and gets length -1 (TF keeps the stored start).
pub fn slice_extents(slice: &crate::source::proto::TensorSliceProto) -> Vec<(i64, i64)> {
    slice.extent.iter().map(|e| (e.start, e.length.unwrap_or(-1))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signed(v: i64) -> Vec<u8> {
        let mut o = Vec::new();
        write_signed_num_increasing(&mut o, v);
        o
    }

    #[test]
    fn doc_examples() {
        assert_eq!(signed(0), [0x80]);
        assert_eq!(signed(4), [0x84]);
        assert_eq!(signed(7), [0x87]);
        assert_eq!(signed(-1), [0x7f]);
        assert_eq!(signed(6666), [0xda, 0x0a]);
        assert_eq!(signed(6667), [0xda, 0x0b]);
        assert_eq!(signed(13334), [0xe0, 0x34, 0x16]);
        let key = encode_tensor_name_slice(b"part", &[(0, 4), (0, 4)]);
        assert_eq!(key, [0x00, b'p', b'a', b'r', b't', 0x00, 0x01, 0x01, 0x02, 0x80, 0x84, 0x80, 0x84]);
        // full extents (V1 unpartitioned tensors): 80 7F per dim
        let key = encode_tensor_name_slice(b"w", &[(0, -1)]);
        assert_eq!(key, [0x00, b'w', 0x00, 0x01, 0x01, 0x01, 0x80, 0x7f]);
    }

    #[test]
    fn boundaries_and_extremes() {
        assert_eq!(signed(63), [0xbf]);
        assert_eq!(signed(64), [0xc0, 0x40]);
        assert_eq!(signed(-64), [0x40]);
        assert_eq!(signed(-65), [0x3f, 0xbf]);
        assert_eq!(signed(i64::MAX).len(), 10);
        assert_eq!(signed(i64::MIN).len(), 10);
        assert_eq!(signed(i64::MAX)[..2], [0xff, 0xc0]);
        assert_eq!(signed(1 << 55).len(), 9);
        assert_eq!(signed(1 << 55)[..2], [0xff, 0x80]);
        let mut o = Vec::new();
        write_num_increasing(&mut o, 0);
        write_num_increasing(&mut o, 2);
        write_num_increasing(&mut o, 0x1234);
        assert_eq!(o, [0x00, 0x01, 0x02, 0x02, 0x12, 0x34]);
        let mut o = Vec::new();
        write_string(&mut o, &[1, 0, 0xff, 2]);
        assert_eq!(o, [1, 0, 0xff, 0xff, 0, 2, 0, 1]);
    }

    proptest! {
        #[test]
        fn signed_encoding_preserves_order(a in any::<i64>(), b in any::<i64>()) {
            let (ea, eb) = (signed(a), signed(b));
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
        }

        #[test]
        fn string_encoding_preserves_order(a in proptest::collection::vec(any::<u8>(), 0..8),
                                           b in proptest::collection::vec(any::<u8>(), 0..8)) {
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            write_string(&mut ea, &a);
            write_string(&mut eb, &b);
            prop_assert_eq!(a.cmp(&b), ea.cmp(&eb));
        }
    }
}
