//! The readers on checkpoints written by TensorFlow itself (golden/, produced by `cargo xtask golden`):
//! every tensor must open, pass its CRC32C and have the size its dtype and shape imply.
//! Checkpoints that are not present are skipped (the golden set is generated separately).

use std::path::{Path, PathBuf};

use tfconv::source::{open, DType};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Every checkpoint under golden/: each directory is resolved (as a user would pass it), and each
/// `*.index` prefix and V1 file is opened explicitly as well.
fn checkpoints() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![golden()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(prefix) = name.strip_suffix(".index") {
                out.push(p.with_file_name(prefix));
            } else if dir.ends_with("v1") && tfconv::source::resolve::has_sstable_magic(&p) {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn golden_checkpoints_read_completely() {
    let all = checkpoints();
    assert!(all.len() >= 10, "expected the committed golden checkpoints under {}, found {}", golden().display(), all.len());
    for path in all {
        let ck = open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!ck.tensors().is_empty(), "{}", path.display());
        for t in ck.tensors() {
            if t.dtype == DType::String {
                let s = ck.read_strings(&t.name).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(s.len(), t.numel(), "{} {}", path.display(), t.name);
            } else {
                let b = ck.read(&t.name).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(Some(b.len()), t.nbytes(), "{} {}", path.display(), t.name);
            }
        }
        eprintln!(
            "{}: {} ({} tensors, {} unsupported)",
            path.display(),
            ck.format(),
            ck.tensors().len(),
            ck.unsupported().len()
        );
    }
}

/// Values of golden/formats that do not depend on the fixture generator's random numbers.
#[test]
fn golden_formats_known_values() {
    let root = golden().join("formats");
    let f32s = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>();
    {
        assert!(root.join("dtypes/ckpt.index").is_file(), "fixture dtypes/ckpt.index is missing: run `cargo xtask golden`");
        let ck = open(&root.join("dtypes/ckpt")).unwrap();
        let special = f32s(&ck.read("float32/special").unwrap());
        assert_eq!(special.len(), 8);
        assert_eq!(&special[..4], &[1.0, -0.0, f32::INFINITY, f32::NEG_INFINITY]);
        assert!(special[1].is_sign_negative() && special[4].is_nan());
        assert_eq!(&special[5..], &[f32::MIN_POSITIVE / 4.0, f32::MAX, 3.25]);
        assert_eq!(ck.read_strings("string/vector").unwrap(), [b"hi".to_vec(), vec![], b"world".to_vec()]);
        assert_eq!(ck.read_strings("string/scalar").unwrap(), ["ünïcode ✓".as_bytes().to_vec()]);
        assert_eq!(&*ck.read("global_step").unwrap(), 1000i64.to_le_bytes().as_slice());
        for t in ck.tensors() {
            if t.name.ends_with("/empty") {
                assert_eq!(t.shape, [0, 4]);
                assert!(ck.read(&t.name).unwrap().is_empty());
            }
        }
        assert_eq!(ck.info("bfloat16/matrix").unwrap().dtype, DType::BF16);
        assert_eq!(ck.info("uint64/scalar").unwrap().shape, Vec::<usize>::new());
    }
    {
        assert!(root.join("partitioned/ckpt.index").is_file(), "fixture partitioned/ckpt.index is missing: run `cargo xtask golden`");
        let ck = open(&root.join("partitioned/ckpt")).unwrap();
        let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["cols", "part", "whole"]);
        assert_eq!(ck.info("part").unwrap().shape, [10, 4]);
        assert_eq!(ck.info("cols").unwrap().shape, [2, 3, 5]);
        assert_eq!(ck.info("cols").unwrap().dtype, DType::F64);
        let sharded = open(&root.join("partitioned/sharded")).unwrap();
        assert_eq!(sharded.info("emb").unwrap().shape, [6, 6]);
        assert_eq!(sharded.read("emb").unwrap().len(), 6 * 6 * 4);
    }
    {
        assert!(root.join("v1/model.ckpt").is_file(), "fixture v1/model.ckpt is missing: run `cargo xtask golden`");
        let ck = open(&root.join("v1")).unwrap();
        assert_eq!(ck.format(), "tf-checkpoint-v1");
        assert_eq!(f32s(&ck.read("scalar").unwrap()), [2.5]);
        assert_eq!(ck.info("sliced").unwrap().shape, [6, 2]);
        assert_eq!(ck.info("float16/matrix").unwrap().dtype, DType::F16);
        assert_eq!(ck.read("bool/matrix").unwrap().len(), 6);
    }
    {
        assert!(root.join("sharded/ckpt.index").is_file(), "fixture sharded/ckpt.index is missing: run `cargo xtask golden`");
        let ck = open(&root.join("sharded")).unwrap();
        assert_eq!(ck.tensors().len(), 12);
        assert_eq!(ck.info("layer_2/w3").unwrap().shape, [7, 3]);
    }
}
