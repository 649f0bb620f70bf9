//! The hostile and odd inputs of the I/O issue, each through the command line: every failure is
//! a named error with its own exit code (corrupt 3, missing 9, truncated 10, ambiguous 11,
//! unreadable 12, unsupported 13), names the file, and leaves no output; names that are not
//! UTF-8 are no failure at all.

mod common;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use tfconv::source::testing::{BundleBuilder, V1Builder};

fn run(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tfconv")).args(args).output().unwrap()
}

/// `convert` of `ckpt` into `dir/out` (golden/bert's config), checking that a failure leaves
/// nothing behind.
fn convert(ckpt: &Path, dir: &Path) -> Output {
    let out = dir.join("out");
    let config = golden("bert/bert_config.json");
    let o = run(&[
        "convert".as_ref(),
        "--model-type".as_ref(),
        "bert".as_ref(),
        "--tf-checkpoint".as_ref(),
        ckpt.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
        "--output".as_ref(),
        out.as_os_str(),
    ]);
    if !o.status.success() {
        assert!(!out.exists(), "a failed convert left {}", out.display());
        let leftovers: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.file_name().as_bytes().starts_with(b".out")).collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }
    o
}

/// A failure with `code` whose message names `file` and says `says`.
fn assert_refused(o: &Output, code: i32, file: &Path, says: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert!(err.contains(&file.display().to_string()), "the error does not name {}: {err}", file.display());
    assert!(err.contains(says), "the error does not say '{says}': {err}");
}

/// golden/bert's checkpoint copied to `dir/<name>`; returns the prefix.
fn bert_named(dir: &Path, name: &OsStr) -> PathBuf {
    let prefix = dir.join(name);
    for suffix in [".index", ".data-00000-of-00001"] {
        let mut to = prefix.clone().into_os_string();
        to.push(suffix);
        std::fs::copy(golden(&format!("bert/bert_model.ckpt{suffix}")), to).unwrap();
    }
    prefix
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

#[test]
fn truncated_shard_exits_10_naming_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = bert_named(dir.path(), "model.ckpt".as_ref());
    let shard = with_suffix(&prefix, ".data-00000-of-00001");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len / 2).unwrap();
    assert_refused(&convert(&prefix, dir.path()), 10, &shard, "the data file is truncated, or the index points past its end");
}

#[test]
fn index_entry_past_the_end_exits_10() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = BundleBuilder::new(1);
    b.add_f32("w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    b.entry_mut("w").offset = 1 << 40;
    let prefix = dir.path().join("model.ckpt");
    b.write(&prefix).unwrap();
    let o = run(&["inspect".as_ref(), prefix.as_os_str()]);
    assert_refused(&o, 10, &with_suffix(&prefix, ".data-00000-of-00001"), "tensor 'w'");
}

#[test]
fn missing_shard_exits_9_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = BundleBuilder::new(2);
    b.add_f32("w", &[2], &[1.0, 2.0]);
    b.add_in_shard(1, "v", tfconv::source::DType::F32, &[1], &1f32.to_le_bytes());
    let prefix = dir.path().join("model.ckpt");
    b.write(&prefix).unwrap();
    let gone = with_suffix(&prefix, ".data-00001-of-00002");
    std::fs::remove_file(&gone).unwrap();
    let o = run(&["inspect".as_ref(), prefix.as_os_str()]);
    assert_refused(&o, 9, &gone, "data file is missing");
    // Nothing at all at the path: missing too.
    let o = convert(&dir.path().join("typo.ckpt"), dir.path());
    assert_refused(&o, 9, &dir.path().join("typo.ckpt"), "no checkpoint at");
}

#[test]
fn directory_holding_two_checkpoints_exits_11_listing_both() {
    let dir = tempfile::tempdir().unwrap();
    bert_named(dir.path(), "model.ckpt-1000".as_ref());
    let mut v1 = V1Builder::new();
    v1.add_f32("w", &[2], &[1.0, 2.0]);
    std::fs::write(dir.path().join("old.ckpt"), v1.bytes()).unwrap();
    let o = convert(dir.path(), dir.path());
    assert_refused(&o, 11, dir.path(), "holds 2 checkpoints");
    assert!(stderr(&o).contains("model.ckpt-1000 (V2 bundle prefix)") && stderr(&o).contains("old.ckpt (V1 checkpoint file)"), "{}", stderr(&o));
    // A state file saying which one settles it.
    std::fs::write(dir.path().join("checkpoint"), "model_checkpoint_path: \"model.ckpt-1000\"\n").unwrap();
    let o = convert(dir.path(), dir.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn symlink_loops_fifos_and_unreadable_files_exit_12() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.ckpt");
    let b = dir.path().join("b.ckpt");
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    assert_refused(&convert(&a, dir.path()), 12, &a, "cannot be followed");

    // The index of a real bundle replaced by a loop: the prefix is no longer a bundle, and
    // the index named directly cannot be followed.
    let prefix = bert_named(dir.path(), "model.ckpt".as_ref());
    let index = with_suffix(&prefix, ".index");
    std::fs::remove_file(&index).unwrap();
    std::os::unix::fs::symlink(&index, &index).unwrap();
    assert_refused(&convert(&index, dir.path()), 12, &index, "cannot be followed");

    let fifo = dir.path().join("pipe.ckpt");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    assert_refused(&convert(&fifo, dir.path()), 12, &fifo, "FIFO");

    // A data shard that is a directory: the reader refuses it rather than reading nothing.
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let prefix = bert_named(&sub, "model.ckpt".as_ref());
    let shard = with_suffix(&prefix, ".data-00000-of-00001");
    std::fs::remove_file(&shard).unwrap();
    std::fs::create_dir(&shard).unwrap();
    let o = convert(&prefix, dir.path());
    assert!(matches!(o.status.code(), Some(9) | Some(12)), "{}", stderr(&o));
    assert!(stderr(&o).contains(&shard.display().to_string()), "{}", stderr(&o));
}

#[test]
fn corrupt_bytes_exit_3_and_unsupported_ones_13() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = bert_named(dir.path(), "model.ckpt".as_ref());
    let shard = with_suffix(&prefix, ".data-00000-of-00001");
    let mut bytes = std::fs::read(&shard).unwrap();
    // Every few hundred bytes, so that the tensors converted (not only optimizer slots) are hit.
    for at in (0..bytes.len()).step_by(509) {
        bytes[at] ^= 0x40;
    }
    std::fs::write(&shard, &bytes).unwrap();
    assert_refused(&convert(&prefix, dir.path()), 3, &shard, "CRC32C mismatch");

    // OpenAI GPT's release with one shard relabelled float64 (same header length).
    let npy = dir.path().join("gpt");
    std::fs::create_dir(&npy).unwrap();
    for entry in std::fs::read_dir(golden("openai-gpt")).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("params_") {
            std::fs::copy(entry.path(), npy.join(entry.file_name())).unwrap();
        }
    }
    let shard = npy.join("params_0.npy");
    let mut bytes = std::fs::read(&shard).unwrap();
    let at = bytes.windows(3).position(|w| w == b"<f4").expect("a float32 header");
    bytes[at..at + 3].copy_from_slice(b"<f8");
    std::fs::write(&shard, bytes).unwrap();
    let o = run(&["inspect".as_ref(), npy.as_os_str()]);
    assert_refused(&o, 13, &npy.join("params_0.npy"), "little-endian float32");
}

/// The same checkpoint under a name that is not UTF-8 converts however it is named: its prefix,
/// its index, its data file, its folder, and a state file naming it through octal escapes.
#[test]
fn names_that_are_not_utf8_convert() {
    let dir = tempfile::tempdir().unwrap();
    let name = OsString::from_vec(b"mod\xffel.ckpt-\xfe1".to_vec());
    let prefix = bert_named(dir.path(), &name);
    let reference = tfconv::source::open(&golden("bert/bert_model.ckpt")).unwrap();
    for (i, path) in [prefix.clone(), with_suffix(&prefix, ".index"), with_suffix(&prefix, ".data-00000-of-00001"), dir.path().to_path_buf()]
        .iter()
        .enumerate()
    {
        let ckpt = tfconv::source::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(ckpt.tensors(), reference.tensors(), "{}", path.display());
        let work = dir.path().join(format!("run{i}"));
        std::fs::create_dir(&work).unwrap();
        let o = convert(path, &work);
        assert_eq!(o.status.code(), Some(0), "{}: {}", path.display(), stderr(&o));
        assert!(work.join("out/model.safetensors").is_file());
    }
    // A second checkpoint beside it (not BERT, so converting it would fail), and a state file
    // choosing ours by its escaped bytes.
    let mut v1 = V1Builder::new();
    v1.add_f32("w", &[2], &[1.0, 2.0]);
    std::fs::write(dir.path().join("other.ckpt"), v1.bytes()).unwrap();
    std::fs::write(dir.path().join("checkpoint"), "model_checkpoint_path: \"mod\\377el.ckpt-\\3761\"\n").unwrap();
    let work = dir.path().join("state");
    std::fs::create_dir(&work).unwrap();
    let o = convert(dir.path(), &work);
    assert_eq!(o.status.code(), Some(0), "the state file chose {name:?}, not other.ckpt: {}", stderr(&o));
}
