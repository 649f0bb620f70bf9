//! Geometry shared by the V2 and V1 readers: shapes from protos, slice boxes of partitioned
//! tensors, coverage checks, and the N-d strided copy of a slice into the full tensor.

use crate::source::proto::{TensorShapeProto, TensorSliceProto};

/// At most this many slices per tensor (the overlap check is quadratic in the worst case).
pub const MAX_SLICES: usize = 4096;

/// Dims of a shape proto; a missing shape is a scalar. Rejects unknown rank, negative (unknown)
/// dimensions and element counts that overflow.
pub fn shape_from_proto(shape: Option<&TensorShapeProto>) -> Result<Vec<usize>, String> {
    let Some(shape) = shape else { return Ok(Vec::new()) };
    if shape.unknown_rank {
        return Err("shape has unknown rank".into());
    }
    let mut dims = Vec::with_capacity(shape.dim.len().min(64));
    for d in &shape.dim {
        let v = usize::try_from(d.size).map_err(|_| format!("shape has invalid dimension {}", d.size))?;
        dims.push(v);
    }
    numel(&dims).ok_or_else(|| format!("shape {} has more elements than fit in memory", fmt_shape(&dims)))?;
    Ok(dims)
}

/// Element count with overflow check.
pub fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

pub fn fmt_shape(shape: &[usize]) -> String {
    format!("[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

/// One slice of a partitioned tensor: per-dimension start and length, validated against the full shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceBox {
    pub start: Vec<usize>,
    pub shape: Vec<usize>,
}

impl SliceBox {
    pub fn numel(&self) -> usize {
        // Validated against the full shape, whose element count fits.
        numel(&self.shape).unwrap_or(0)
    }

    fn overlaps(&self, other: &SliceBox) -> bool {
        (0..self.start.len())
            .all(|d| self.start[d] < other.start[d] + other.shape[d] && other.start[d] < self.start[d] + self.shape[d])
    }
}

impl std::fmt::Display for SliceBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.start.iter().zip(&self.shape).map(|(s, l)| format!("{}:{}", s, s + l)).collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

/// Checks a slice proto against the full shape of its tensor.
pub fn slice_box(slice: &TensorSliceProto, full: &[usize]) -> Result<SliceBox, String> {
    if slice.extent.len() != full.len() {
        return Err(format!(
            "slice has {} extents but the tensor has rank {} (shape {})",
            slice.extent.len(),
            full.len(),
            fmt_shape(full)
        ));
    }
    let mut b = SliceBox { start: Vec::with_capacity(full.len()), shape: Vec::with_capacity(full.len()) };
    for (d, (e, &dim)) in slice.extent.iter().zip(full).enumerate() {
        let (start, len) = match e.length {
            None if e.start == 0 => (0, dim),
            None => return Err(format!("slice dimension {d}: full extent with non-zero start {}", e.start)),
            Some(l) => {
                let s =
                    usize::try_from(e.start).map_err(|_| format!("slice dimension {d}: negative start {}", e.start))?;
                let l = usize::try_from(l).map_err(|_| format!("slice dimension {d}: negative length {l}"))?;
                (s, l)
            }
        };
        match start.checked_add(len) {
            Some(end) if end <= dim => {}
            _ => {
                return Err(format!(
                    "slice dimension {d}: [{start}, {start}+{len}) is outside the dimension size {dim}"
                ))
            }
        }
        b.start.push(start);
        b.shape.push(len);
    }
    Ok(b)
}

/// Checks that `boxes` tile the tensor exactly: no two overlap and together they hold every element.
pub fn check_coverage(full: &[usize], boxes: &[&SliceBox]) -> Result<(), String> {
    if boxes.len() > MAX_SLICES {
        return Err(format!("{} slices; at most {MAX_SLICES} per tensor are supported", boxes.len()));
    }
    let total = numel(full).unwrap_or(usize::MAX);
    let mut covered = 0usize;
    for b in boxes {
        covered = covered.checked_add(b.numel()).ok_or("slice element counts overflow")?;
    }
    // Sweep along dimension 0: sort by start, compare only with boxes that begin before this one ends.
    let mut order: Vec<&SliceBox> = boxes.iter().copied().filter(|b| b.numel() > 0).collect();
    if !full.is_empty() {
        order.sort_by_key(|b| b.start[0]);
    }
    for (i, a) in order.iter().enumerate() {
        for b in &order[i + 1..] {
            if !full.is_empty() && b.start[0] >= a.start[0] + a.shape[0] {
                break;
            }
            if a.overlaps(b) {
                return Err(format!("slices {a} and {b} overlap"));
            }
        }
    }
    if covered != total {
        return Err(format!(
            "slices cover {covered} of the {total} elements of shape {} (some parts are missing)",
            fmt_shape(full)
        ));
    }
    Ok(())
}

/// Places the dense data of slice `b` into `out`, the row-major data of a tensor of shape
/// `full`, where each element is `unit` items long (its byte size for raw data, 1 for a list of
/// strings). Runs that would fall outside either buffer are skipped, never a panic.
pub fn place_slice<T: Clone>(out: &mut [T], full: &[usize], b: &SliceBox, src: &[T], unit: usize) {
    for_each_run(full, b, |d, s, n| {
        let (d, s, n) = (d * unit, s * unit, n * unit);
        if let (Some(dst), Some(src)) = (out.get_mut(d..d + n), src.get(s..s + n)) {
            dst.clone_from_slice(src);
        }
    });
}

/// Calls `f(dst_elem, src_elem, run_len)` for each contiguous run when copying the dense,
/// row-major data of slice `b` into a row-major tensor of shape `full`. `b` must have been
/// validated by [`slice_box`] for `full`. Element offsets, not bytes.
pub fn for_each_run(full: &[usize], b: &SliceBox, mut f: impl FnMut(usize, usize, usize)) {
    let rank = full.len();
    if b.shape.contains(&0) {
        return;
    }
    if rank == 0 {
        f(0, 0, 1);
        return;
    }
    // Dims after `p` are covered fully, so each run spans b.shape[p] * prod(full[p+1..]) elements.
    let mut p = rank - 1;
    while p > 0 && b.start[p] == 0 && b.shape[p] == full[p] {
        p -= 1;
    }
    let mut stride = vec![1usize; rank];
    for d in (0..rank - 1).rev() {
        stride[d] = stride[d + 1] * full[d + 1];
    }
    let run = b.shape[p] * stride[p];
    let mut idx = vec![0usize; p];
    let mut src = 0usize;
    loop {
        let mut dst = b.start[p] * stride[p];
        for d in 0..p {
            dst += (b.start[d] + idx[d]) * stride[d];
        }
        f(dst, src, run);
        src += run;
        // Odometer over dims 0..p.
        let mut d = p;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < b.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::proto::Extent;
    use proptest::prelude::*;

    fn sl(ext: &[(i64, Option<i64>)]) -> TensorSliceProto {
        TensorSliceProto { extent: ext.iter().map(|&(start, length)| Extent { start, length }).collect() }
    }

    /// Reference: copy element by element with full index arithmetic.
    fn naive(full: &[usize], b: &SliceBox, src: &[u32], dst: &mut [u32]) {
        let n = b.numel();
        for (s, &v) in src.iter().enumerate().take(n) {
            let mut rem = s;
            let mut coords = vec![0; full.len()];
            for d in (0..full.len()).rev() {
                coords[d] = rem % b.shape[d] + b.start[d];
                rem /= b.shape[d];
            }
            let mut off = 0;
            for d in 0..full.len() {
                off = off * full[d] + coords[d];
            }
            dst[off] = v;
        }
    }

    #[test]
    fn runs_partition_example() {
        let full = [10, 4];
        let b = slice_box(&sl(&[(4, Some(3)), (0, Some(4))]), &full).unwrap();
        let mut runs = vec![];
        for_each_run(&full, &b, |d, s, n| runs.push((d, s, n)));
        assert_eq!(runs, [(16, 0, 12)]);
        let b = slice_box(&sl(&[(0, None), (1, Some(2))]), &full).unwrap();
        let mut runs = vec![];
        for_each_run(&full, &b, |d, s, n| runs.push((d, s, n)));
        assert_eq!(runs.len(), 10);
        assert_eq!(runs[1], (5, 2, 2));
        assert_eq!(b.to_string(), "[0:10, 1:3]");
    }

    #[test]
    fn box_errors() {
        assert!(slice_box(&sl(&[(0, Some(4))]), &[10, 4]).unwrap_err().contains("rank"));
        assert!(slice_box(&sl(&[(8, Some(4))]), &[10]).unwrap_err().contains("outside"));
        assert!(slice_box(&sl(&[(-1, Some(4))]), &[10]).unwrap_err().contains("negative"));
        assert!(slice_box(&sl(&[(i64::MAX, Some(i64::MAX))]), &[10]).unwrap_err().contains("outside"));
        assert!(slice_box(&sl(&[(3, None)]), &[10]).unwrap_err().contains("full extent"));
        let a = slice_box(&sl(&[(0, Some(5))]), &[10]).unwrap();
        let b = slice_box(&sl(&[(4, Some(6))]), &[10]).unwrap();
        let c = slice_box(&sl(&[(5, Some(4))]), &[10]).unwrap();
        assert!(check_coverage(&[10], &[&a, &b]).unwrap_err().contains("overlap"));
        assert!(check_coverage(&[10], &[&a, &c]).unwrap_err().contains("cover 9 of the 10"));
        let d = slice_box(&sl(&[(5, Some(5))]), &[10]).unwrap();
        check_coverage(&[10], &[&d, &a]).unwrap();
    }

    #[test]
    fn shape_errors() {
        use crate::source::proto::TensorShapeProto;
        assert_eq!(shape_from_proto(None).unwrap(), Vec::<usize>::new());
        assert!(shape_from_proto(Some(&TensorShapeProto::from_dims(&[2, -1]))).unwrap_err().contains("-1"));
        assert!(shape_from_proto(Some(&TensorShapeProto::from_dims(&[1 << 40, 1 << 40]))).is_err());
        assert_eq!(shape_from_proto(Some(&TensorShapeProto::from_dims(&[0, 1 << 62]))).unwrap(), [0, 1 << 62]);
        let mut s = TensorShapeProto::from_dims(&[2]);
        s.unknown_rank = true;
        assert!(shape_from_proto(Some(&s)).is_err());
    }

    fn shape_and_box() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<usize>)> {
        proptest::collection::vec(1usize..5, 0..5)
            .prop_flat_map(|full| {
                let starts: Vec<_> = full.iter().map(|&d| 0..d).collect();
                (Just(full), starts)
            })
            .prop_flat_map(|(full, starts)| {
                let lens: Vec<_> = full.iter().zip(&starts).map(|(&d, &s)| 0..=(d - s)).collect();
                (Just(full), Just(starts), lens)
            })
    }

    proptest! {
        #[test]
        fn strided_copy_matches_naive((full, start, shape) in shape_and_box()) {
            let b = SliceBox { start, shape };
            let n = numel(&full).unwrap();
            let src: Vec<u32> = (0..b.numel() as u32).map(|i| i + 1).collect();
            let mut want = vec![0u32; n];
            naive(&full, &b, &src, &mut want);
            let mut got = vec![0u32; n];
            let mut total = 0;
            for_each_run(&full, &b, |d, s, r| { got[d..d + r].copy_from_slice(&src[s..s + r]); total += r; });
            prop_assert_eq!(total, b.numel());
            prop_assert_eq!(got, want);
        }
    }
}
