//! Casting raw little-endian float tensors between f64, f32, f16 and bf16.
//!
//! Every conversion rounds to nearest, ties to even, exactly once. Widening is exact. NaN stays
//! NaN (quieted), ±inf stays ±inf, finite values too large for the target become ±inf, and -0.0
//! keeps its sign.
//!
//! Narrowing f64 straight to a 16-bit type needs care: `half`'s f64 paths (and a plain
//! `f64 as f32` followed by an f32→16-bit conversion) can round twice and get ties wrong. We first
//! narrow f64 to f32 with *round-to-odd*, which keeps enough information (f32 has at least 13 more
//! significand bits than either 16-bit type) for the single correct rounding to f16/bf16 that
//! follows.

use std::borrow::Cow;

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::source::DType;

/// Converts `bytes`, a little-endian array of `from` elements, to `to` elements.
///
/// Returns the input unchanged (borrowed) when `from == to`, for any dtype. Otherwise both dtypes
/// must be one of f64, f32, f16, bf16, and `bytes.len()` a multiple of the element size.
pub fn cast(bytes: &[u8], from: DType, to: DType) -> Result<Cow<'_, [u8]>> {
    if from == to {
        return Ok(Cow::Borrowed(bytes));
    }
    if !from.is_float() || !to.is_float() {
        return Err(Error::Output(format!(
            "cannot cast tensor data from {} to {}: only float16, bfloat16, float32 and float64 convert",
            from.name(),
            to.name()
        )));
    }
    let width = from.size().expect("float dtypes have a size");
    if !bytes.len().is_multiple_of(width) {
        return Err(Error::Output(format!(
            "cannot cast {} bytes of {}: not a multiple of the element size {width}",
            bytes.len(),
            from.name()
        )));
    }

    use DType::*;
    let out = match (from, to) {
        // From f64.
        (F64, F32) => map::<8, 4>(bytes, |b| (f64::from_le_bytes(b) as f32).to_le_bytes()),
        (F64, F16) => map::<8, 2>(bytes, |b| f16::from_f32(f64_to_f32_odd(f64::from_le_bytes(b))).to_le_bytes()),
        (F64, BF16) => map::<8, 2>(bytes, |b| bf16::from_f32(f64_to_f32_odd(f64::from_le_bytes(b))).to_le_bytes()),
        // From f32.
        (F32, F64) => map::<4, 8>(bytes, |b| f64::from(f32::from_le_bytes(b)).to_le_bytes()),
        (F32, F16) => map::<4, 2>(bytes, |b| f16::from_f32(f32::from_le_bytes(b)).to_le_bytes()),
        (F32, BF16) => map::<4, 2>(bytes, |b| bf16::from_f32(f32::from_le_bytes(b)).to_le_bytes()),
        // From f16 (exact in f32, so going through f32 rounds only once).
        (F16, F64) => map::<2, 8>(bytes, |b| f16::from_le_bytes(b).to_f64().to_le_bytes()),
        (F16, F32) => map::<2, 4>(bytes, |b| f16::from_le_bytes(b).to_f32().to_le_bytes()),
        (F16, BF16) => map::<2, 2>(bytes, |b| bf16::from_f32(f16::from_le_bytes(b).to_f32()).to_le_bytes()),
        // From bf16 (exact in f32).
        (BF16, F64) => map::<2, 8>(bytes, |b| bf16::from_le_bytes(b).to_f64().to_le_bytes()),
        (BF16, F32) => map::<2, 4>(bytes, |b| bf16::from_le_bytes(b).to_f32().to_le_bytes()),
        (BF16, F16) => map::<2, 2>(bytes, |b| f16::from_f32(bf16::from_le_bytes(b).to_f32()).to_le_bytes()),
        _ => unreachable!("same-dtype and non-float cases are handled above"),
    };
    Ok(Cow::Owned(out))
}

/// Applies `f` to each `N`-byte element, producing `M`-byte elements.
#[inline]
fn map<const N: usize, const M: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> [u8; M]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() / N * M);
    for chunk in bytes.chunks_exact(N) {
        let elem: [u8; N] = chunk.try_into().expect("chunks_exact yields N bytes");
        out.extend_from_slice(&f(elem));
    }
    out
}

/// f64 → f32 rounding to odd: truncate toward zero, then set the last significand bit if any
/// nonzero bits were dropped. Out-of-range finite values become ±f32::MAX (odd), which any
/// narrower type then rounds to ±inf exactly as the original value would.
fn f64_to_f32_odd(x: f64) -> f32 {
    if !x.is_finite() {
        return x as f32; // NaN (quiet, payload top bits kept) or ±inf.
    }
    let mut t = x as f32; // round to nearest even
    if f64::from(t).abs() > x.abs() {
        // Rounded away from zero: step one ulp back toward zero (sign-magnitude bits).
        t = f32::from_bits(t.to_bits() - 1);
    }
    if f64::from(t) != x {
        t = f32::from_bits(t.to_bits() | 1);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(b: Vec<u8>, from: DType, to: DType) -> Vec<u8> {
        cast(&b, from, to).unwrap().into_owned()
    }
    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn f64s(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn u16s(b: &[u8]) -> Vec<u16> {
        b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
    }
    fn as_f32(b: &[u8]) -> Vec<f32> {
        b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
    fn as_f64(b: &[u8]) -> Vec<f64> {
        b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()
    }
    fn bits16(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn same_dtype_is_borrowed_for_any_dtype() {
        let b = [1u8, 2, 3, 4];
        assert!(matches!(cast(&b, DType::F32, DType::F32).unwrap(), Cow::Borrowed(_)));
        assert!(matches!(cast(&b, DType::I32, DType::I32).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn rejects_non_float_and_ragged_input() {
        let e = cast(&[0; 4], DType::I32, DType::F32).unwrap_err().to_string();
        assert!(e.contains("int32") && e.contains("float32"), "{e}");
        assert!(cast(&[0; 4], DType::F32, DType::I64).is_err());
        let e = cast(&[0; 5], DType::F32, DType::F16).unwrap_err().to_string();
        assert!(e.contains("multiple"), "{e}");
    }

    #[test]
    fn f32_to_f16_known_values_and_ties() {
        let one = 1.0f32;
        let ulp = 2f32.powi(-10); // f16 ulp at 1.0
        let input = [
            0.0,
            -0.0,
            one,
            -2.5,
            65504.0, // f16 max
            65519.0, // below the tie with 65536 → max
            65520.0, // tie between max and 2^16: even is 2^16 → inf
            f32::INFINITY,
            f32::NEG_INFINITY,
            one + ulp / 2.0,                  // tie → 1.0 (even)
            one + 3.0 * ulp / 2.0,            // tie → 1 + 2ulp (even)
            one + ulp / 2.0 + 2f32.powi(-20), // just above the tie → 1 + ulp
            2f32.powi(-24),                   // smallest subnormal
            2f32.powi(-25),                   // tie between 0 and smallest subnormal → 0
            3.0 * 2f32.powi(-25),             // tie → 2 * smallest subnormal
            2f32.powi(-14),                   // smallest normal
        ];
        let out = conv(f32s(&input), DType::F32, DType::F16);
        assert_eq!(
            u16s(&out),
            vec![
                0x0000, 0x8000, 0x3C00, 0xC100, 0x7BFF, 0x7BFF, 0x7C00, 0x7C00, 0xFC00, 0x3C00, 0x3C02, 0x3C01, 0x0001,
                0x0000, 0x0002, 0x0400
            ]
        );
        let nan = conv(f32s(&[f32::NAN, -f32::NAN]), DType::F32, DType::F16);
        for (h, sign) in u16s(&nan).into_iter().zip([0u16, 0x8000]) {
            assert_eq!(h & 0x7C00, 0x7C00, "exponent all ones");
            assert_ne!(h & 0x03FF, 0, "nonzero mantissa");
            assert_eq!(h & 0x8000, sign);
        }
    }

    #[test]
    fn f32_to_bf16_known_values_and_ties() {
        let ulp = 2f32.powi(-7); // bf16 ulp at 1.0
        let input = [
            1.0f32,
            -1.0,
            3.140625,                         // exactly representable (0x4049)
            std::f32::consts::PI,             // 0x40490FDB → 0x4049
            1.0 + ulp / 2.0,                  // tie → 1.0
            1.0 + 3.0 * ulp / 2.0,            // tie → 1 + 2ulp
            1.0 + ulp / 2.0 + 2f32.powi(-20), // above tie → 1 + ulp
            f32::MAX,                         // rounds up to inf
            f32::INFINITY,
            -0.0,
            f32::from_bits(1), // smallest f32 subnormal → 0
        ];
        let out = conv(f32s(&input), DType::F32, DType::BF16);
        assert_eq!(
            u16s(&out),
            vec![0x3F80, 0xBF80, 0x4049, 0x4049, 0x3F80, 0x3F82, 0x3F81, 0x7F80, 0x7F80, 0x8000, 0x0000]
        );
        let nan = u16s(&conv(f32s(&[f32::NAN]), DType::F32, DType::BF16))[0];
        assert!(nan & 0x7F80 == 0x7F80 && nan & 0x7F != 0);
        // A signalling NaN whose payload sits only in the low bits must not become inf.
        let snan = f32::from_bits(0x7F80_0001);
        let h = u16s(&conv(f32s(&[snan]), DType::F32, DType::BF16))[0];
        assert!(h & 0x7F80 == 0x7F80 && h & 0x7F != 0, "{h:#x}");
    }

    #[test]
    fn widening_is_exact_and_round_trips() {
        // Every f16 and bf16 bit pattern survives a trip through f32 and f64.
        let all: Vec<u16> = (0..=u16::MAX).collect();
        let bytes = bits16(&all);
        for dt in [DType::F16, DType::BF16] {
            for wide in [DType::F32, DType::F64] {
                let w = cast(&bytes, dt, wide).unwrap();
                let back = cast(&w, wide, dt).unwrap();
                for (a, b) in all.iter().zip(u16s(&back)) {
                    let is_nan = if dt == DType::F16 {
                        a & 0x7C00 == 0x7C00 && a & 0x3FF != 0
                    } else {
                        a & 0x7F80 == 0x7F80 && a & 0x7F != 0
                    };
                    if is_nan {
                        assert_eq!(b & 0x8000, a & 0x8000);
                        assert_ne!(b & !0x8000 & if dt == DType::F16 { 0x3FF } else { 0x7F }, 0);
                    } else {
                        assert_eq!(*a, b, "{dt:?} via {wide:?}");
                    }
                }
            }
        }
        let f = conv(bits16(&[0x3C00, 0xC000, 0x7C00]), DType::F16, DType::F32);
        assert_eq!(as_f32(&f), vec![1.0, -2.0, f32::INFINITY]);
        let d = conv(f32s(&[0.1, -3.5]), DType::F32, DType::F64);
        assert_eq!(as_f64(&d), vec![0.1f32 as f64, -3.5]);
    }

    #[test]
    fn f64_narrowing_rounds_once() {
        // 1 + 2^-8 + 2^-40 lies just above the bf16 tie between 1 and 1 + 2^-7; rounding through
        // f32 with round-to-nearest would land exactly on the tie and go down to 1.0.
        let above_bf16_tie = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
        let above_f16_tie = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        let exact_tie_bf16 = 1.0 + 2f64.powi(-8);
        let b = conv(f64s(&[above_bf16_tie, exact_tie_bf16, 1e300, -1e300, f64::NAN, 0.1]), DType::F64, DType::BF16);
        let b = u16s(&b);
        assert_eq!(&b[..4], &[0x3F81, 0x3F80, 0x7F80, 0xFF80]);
        assert!(b[4] & 0x7F80 == 0x7F80 && b[4] & 0x7F != 0);
        assert_eq!(b[5], half::bf16::from_f32(0.1f32).to_bits()); // no tie involved: agrees with f32 path
        let h =
            conv(f64s(&[above_f16_tie, 1e-30, -1e-30, 65519.99, 65520.0, f64::NEG_INFINITY]), DType::F64, DType::F16);
        assert_eq!(u16s(&h), vec![0x3C01, 0x0000, 0x8000, 0x7BFF, 0x7C00, 0xFC00]);
        let f = conv(f64s(&[0.1, 1e300, f64::MIN_POSITIVE]), DType::F64, DType::F32);
        assert_eq!(as_f32(&f), vec![0.1f32, f32::INFINITY, 0.0]);
    }

    #[test]
    fn f16_bf16_cross() {
        // f16 1 + 2^-10 is not representable in bf16: tie-free, rounds to 1.0; 65504 → 65536.
        let out = conv(bits16(&[0x3C01, 0x7BFF, 0x7C00, 0x0001]), DType::F16, DType::BF16);
        assert_eq!(u16s(&out), vec![0x3F80, 0x4780, 0x7F80, 0x3380]);
        // bf16 2^100 overflows f16 → inf; bf16 1.0078125 (0x3F81) is exact in f16.
        let out = conv(bits16(&[0x7180, 0x3F81]), DType::BF16, DType::F16);
        assert_eq!(u16s(&out), vec![0x7C00, 0x3C08]);
    }
}
