//! The pure-Rust readers against TensorFlow's own `RestoreV2`, bit for bit: on the committed
//! fixtures (golden/formats/) and on random bundles that TF writes during the test.
//! Needs TensorFlow (`cargo xtask setup-tf`); without it these tests fail with that message.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tfconv::source::{self, DType};
use tfconv::tf_io::{self, HostTensor, SaveItem};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/formats").join(rel)
}

/// Reads every tensor with our reader and with TF, and asserts identical dtype, shape and bytes.
fn assert_agrees_with_tf(path: &Path, tf_prefix: &Path) -> usize {
    let ckpt = source::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let infos = ckpt.tensors().to_vec();
    assert!(!infos.is_empty(), "{} lists no tensors", path.display());
    let requests: Vec<(&str, &str, DType)> = infos.iter().map(|t| (t.name.as_str(), "", t.dtype)).collect();
    let expected = tf_io::restore(tf_prefix.to_str().unwrap(), &requests).expect("TensorFlow RestoreV2");
    for (info, tf) in infos.iter().zip(&expected) {
        assert_eq!(info.shape, tf.shape, "{}: shape of {}", path.display(), info.name);
        if info.dtype == DType::String {
            let ours = ckpt.read_strings(&info.name).unwrap();
            assert_eq!(ours, tf.strings, "{}: strings of {}", path.display(), info.name);
        } else {
            let ours = ckpt.read(&info.name).unwrap();
            assert!(ours.as_ref() == tf.data.as_slice(), "{}: bytes of {} differ from RestoreV2", path.display(), info.name);
        }
    }
    infos.len()
}

#[test]
fn dtypes_fixture_matches_restore_v2() {
    let n = assert_agrees_with_tf(&fixture("dtypes/ckpt"), &fixture("dtypes/ckpt"));
    assert_eq!(n, 13 * 3 + 4, "every dtype's matrix, scalar and empty tensor, special floats, 2 strings, global_step");
}

#[test]
fn sharded_fixture_matches_restore_v2() {
    assert_eq!(assert_agrees_with_tf(&fixture("sharded/ckpt"), &fixture("sharded/ckpt")), 12);
}

#[test]
fn partitioned_fixtures_match_restore_v2() {
    assert_eq!(assert_agrees_with_tf(&fixture("partitioned/ckpt"), &fixture("partitioned/ckpt")), 3);
    assert_eq!(assert_agrees_with_tf(&fixture("partitioned/sharded"), &fixture("partitioned/sharded")), 1);
}

#[test]
fn v1_fixture_matches_restore_v2() {
    let file = fixture("v1/model.ckpt");
    assert_eq!(assert_agrees_with_tf(&file, &file), 11);
}

#[test]
fn resolution_forms_open_the_same_checkpoint() {
    for form in ["dtypes/ckpt", "dtypes/ckpt.index", "dtypes/ckpt.data-00000-of-00001", "dtypes"] {
        let ckpt = source::open(&fixture(form)).unwrap_or_else(|e| panic!("{form}: {e}"));
        assert_eq!(ckpt.tensors().len(), 43, "{form}");
    }
}

const FIXED: [DType; 13] = [
    DType::F32, DType::F16, DType::BF16, DType::F64, DType::I8, DType::U8, DType::I16, DType::U16,
    DType::I32, DType::U32, DType::I64, DType::U64, DType::Bool,
];

const SLICEABLE: [DType; 8] = [DType::F32, DType::F64, DType::I32, DType::I64, DType::I8, DType::U8, DType::I16, DType::Bool];

#[derive(Debug, Clone)]
struct RandomVar {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    seed: u64,
    /// Split into this many slices along axis 0 (1 = not partitioned).
    partitions: usize,
}

fn var_strategy() -> impl Strategy<Value = RandomVar> {
    (
        "[a-z][a-z0-9_]{0,6}(/[a-z0-9_.-]{1,8}){0,3}",
        0..FIXED.len(),
        prop::collection::vec(0usize..6, 0..4),
        any::<u64>(),
        1usize..4,
    )
        .prop_map(|(name, d, shape, seed, partitions)| {
            // TF's sliced restore handles only these dtypes ("Dtype half not supported").
            let sliceable = SLICEABLE.contains(&FIXED[d]);
            let partitions = if sliceable && shape.first().copied().unwrap_or(0) >= partitions { partitions } else { 1 };
            RandomVar { name, dtype: FIXED[d], shape, seed, partitions }
        })
}

fn fill(var: &RandomVar, rows: std::ops::Range<usize>) -> HostTensor {
    let mut shape = var.shape.clone();
    if !shape.is_empty() {
        shape[0] = rows.len();
    }
    let n: usize = shape.iter().product();
    let size = var.dtype.size().unwrap();
    let mut state = var.seed ^ (rows.start as u64).wrapping_mul(0x9e37_79b9);
    let data = (0..n * size)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let b = (state >> 33) as u8;
            if var.dtype == DType::Bool { b & 1 } else { b }
        })
        .collect();
    HostTensor::new(var.dtype, shape, data)
}

fn slice_spec(var: &RandomVar, rows: &std::ops::Range<usize>) -> String {
    if var.partitions == 1 {
        return String::new();
    }
    let dims: Vec<String> = var.shape.iter().map(|d| d.to_string()).collect();
    let mut extents = vec![format!("{},{}", rows.start, rows.len())];
    extents.extend(var.shape.iter().skip(1).map(|_| "-".to_string()));
    format!("{} {}", dims.join(" "), extents.join(":"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random names, dtypes, shapes, partitioning and shard counts: TF writes, we read, TF restores.
    #[test]
    fn random_bundles_written_by_tf_read_back_exactly(
        vars in prop::collection::btree_map("[a-z]{1,3}", var_strategy(), 1..8),
        shards in 1usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let vars: Vec<RandomVar> = vars.into_iter().enumerate()
            .map(|(i, (k, mut v))| { v.name = format!("{k}{i}/{}", v.name); v }).collect();
        let mut pieces: Vec<(usize, String, HostTensor)> = Vec::new();
        for (i, var) in vars.iter().enumerate() {
            let rows = var.shape.first().copied().unwrap_or(1);
            let step = rows.div_ceil(var.partitions).max(1);
            let mut start = 0;
            while start < rows || (start == 0 && rows == 0) {
                let range = start..(start + step).min(rows);
                let spec = slice_spec(var, &range);
                pieces.push((i, spec, fill(var, range.clone())));
                if rows == 0 { break; }
                start += step;
            }
        }
        let prefixes: Vec<String> = (0..shards).map(|s| dir.path().join(format!("s{s}")).to_string_lossy().into_owned()).collect();
        for (s, p) in prefixes.iter().enumerate() {
            let items: Vec<SaveItem> = pieces.iter().enumerate().filter(|(k, _)| k % shards == s)
                .map(|(_, (i, spec, t))| SaveItem { name: &vars[*i].name, slice_spec: spec, tensor: t }).collect();
            if items.is_empty() {
                let dummy = HostTensor::f32(vec![], &[0.0]);
                let pad = format!("zz_pad{s}");
                tf_io::save_v2(p, &[SaveItem { name: &pad, slice_spec: "", tensor: &dummy }]).unwrap();
            } else {
                tf_io::save_v2(p, &items).unwrap();
            }
        }
        let merged = dir.path().join("ckpt");
        let refs: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        tf_io::merge_v2(&refs, merged.to_str().unwrap()).unwrap();
        let n = assert_agrees_with_tf(&merged, &merged);
        prop_assert!(n >= vars.len());
    }
}
