//! The checkpoint readers through the public API only: `tfconv::source::open` on the kinds of
//! paths users type, and the error categories the CLI maps to exit codes.

use std::path::Path;

use tfconv::source::bundle::{shard_path, with_suffix, Bundle, OpenOptions};
use tfconv::source::testing::{BundleBuilder, V1Builder};
use tfconv::source::{open, Checkpoint, DType};
use tfconv::Error;

/// A T5-like layout: several shards (shard 0 nearly empty), bfloat16 weights, an int64 step,
/// a partitioned embedding, a `checkpoint` state file with the author's absolute path.
fn write_t5_like(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut b = BundleBuilder::new(4);
    let mut want = Vec::new();
    b.add_in_shard(0, "global_step", DType::I64, &[], &1_000_000i64.to_le_bytes());
    want.push(("global_step".to_string(), 1_000_000i64.to_le_bytes().to_vec()));
    for (i, name) in
        ["encoder/block_000/layer_000/SelfAttention/q", "decoder/final_layer_norm/scale"].iter().enumerate()
    {
        let bytes: Vec<u8> = (0..12u16).flat_map(|v| (0x3f80 + v + i as u16).to_le_bytes()).collect();
        b.add_in_shard(1 + i, name, DType::BF16, &[3, 4], &bytes);
        want.push((name.to_string(), bytes));
    }
    let full: Vec<u8> = (0..32u16).flat_map(|v| (0x4000 + v).to_le_bytes()).collect();
    let rows = |r: std::ops::Range<usize>| full[r.start * 8..r.end * 8].to_vec();
    b.add_partitioned(
        "shared/embedding",
        DType::BF16,
        &[8, 4],
        &[(vec![(0, 5), (0, -1)], rows(0..5)), (vec![(5, 3), (0, -1)], rows(5..8))],
    );
    want.push(("shared/embedding".to_string(), full));
    b.write(&dir.join("model.ckpt-1000000")).unwrap();
    std::fs::write(dir.join("model.ckpt-1000000.meta"), b"graph").unwrap();
    std::fs::write(
        dir.join("checkpoint"),
        "model_checkpoint_path: \"/home/author/t5/model.ckpt-1000000\"\n\
         all_model_checkpoint_paths: \"/home/author/t5/model.ckpt-1000000\"\n",
    )
    .unwrap();
    want
}

#[test]
fn open_directory_prefix_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let want = write_t5_like(dir.path());
    let prefix = dir.path().join("model.ckpt-1000000");
    for p in [
        dir.path().to_path_buf(),
        dir.path().join("checkpoint"),
        prefix.clone(),
        with_suffix(&prefix, ".index"),
        shard_path(&prefix, 2, 4),
        with_suffix(&prefix, ".meta"),
    ] {
        let ck = open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(ck.path(), prefix);
        assert_eq!(ck.format(), "tf-bundle-v2");
        assert_eq!(ck.tensors().len(), want.len());
        for (name, bytes) in &want {
            assert_eq!(&*ck.read(name).unwrap(), bytes.as_slice(), "{name}");
            let info = ck.info(name).unwrap();
            assert_eq!(info.nbytes(), Some(bytes.len()));
        }
        assert_eq!(ck.info("shared/embedding").unwrap().shape, [8, 4]);
        assert!(ck.unsupported().is_empty());
    }
}

#[test]
fn error_categories() {
    let dir = tempfile::tempdir().unwrap();
    write_t5_like(dir.path());
    let prefix = dir.path().join("model.ckpt-1000000");

    // Resolution problems.
    assert!(matches!(open(&dir.path().join("nothing-here")), Err(Error::Resolve { .. })));

    // A flipped byte in a data file: a tensor error naming the data file and the tensor.
    let data = shard_path(&prefix, 1, 4);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[3] ^= 0x80;
    std::fs::write(&data, &bytes).unwrap();
    let ck = open(dir.path()).unwrap();
    match ck.read("encoder/block_000/layer_000/SelfAttention/q") {
        Err(e @ Error::Tensor { .. }) => {
            let m = e.to_string();
            assert!(m.contains("model.ckpt-1000000.data-00001-of-00004") && m.contains("CRC32C mismatch"), "{m}");
        }
        other => panic!("expected a tensor error, got {other:?}"),
    }
    let unchecked = Bundle::open_with(&prefix, OpenOptions { verify_checksums: false }).unwrap();
    unchecked.read("encoder/block_000/layer_000/SelfAttention/q").unwrap();

    // A missing shard: an input error naming it.
    std::fs::remove_file(shard_path(&prefix, 3, 4)).unwrap();
    match open(dir.path()) {
        Err(e @ Error::Input { .. }) => {
            assert!(e.to_string().contains("model.ckpt-1000000.data-00003-of-00004"), "{e}");
        }
        other => panic!("expected an input error, got {:?}", other.map(|c| c.path().to_path_buf())),
    }

    // A truncated index: an input error naming the index.
    let index = with_suffix(&prefix, ".index");
    let ib = std::fs::read(&index).unwrap();
    std::fs::write(&index, &ib[..ib.len() - 1]).unwrap();
    match Bundle::open(&prefix) {
        Err(e @ Error::Input { .. }) => {
            let m = e.to_string();
            assert!(m.contains("model.ckpt-1000000.index") && m.contains("bad SSTable magic"), "{m}");
        }
        other => panic!("expected an input error, got {other:?}"),
    }
}

#[test]
fn v1_through_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = V1Builder::new();
    b.add_f32("layer/w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    std::fs::write(dir.path().join("model.ckpt"), b.bytes()).unwrap();
    std::fs::write(dir.path().join("checkpoint"), "model_checkpoint_path: \"model.ckpt\"\n").unwrap();
    let ck = open(dir.path()).unwrap();
    assert_eq!(ck.format(), "tf-checkpoint-v1");
    let want: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(&*ck.read("layer/w").unwrap(), want.as_slice());
}
