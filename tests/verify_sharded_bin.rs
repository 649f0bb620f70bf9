//! `verify` reads every layout `convert` writes, including a sharded `pytorch_model.bin` folder
//! (`pytorch_model-0000i-of-0000n.bin` + `pytorch_model.bin.index.json`), and checks that the
//! index and the shards agree.
//!
//! Exit codes chosen (README table): a shard the index names but the folder lacks makes the
//! folder unreadable, like a corrupt weight file, so it is an input error (3) naming the file;
//! readable shards whose contents disagree with the index are weights that don't match what the
//! folder declares, a verification failure (1) reported as structural problems.
//!
//! Needs TensorFlow (the CLI loads it before reading the folder): a missing runtime FAILS these.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn golden_ckpt() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/bert/bert_model.ckpt")
}

fn tfconv(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tfconv")).args(args).output().expect("run tfconv")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Converts golden/bert into `<dir>/out` as 100 kB `.bin` shards, with `extra` flags.
fn convert_sharded_bin(dir: &Path, extra: &[&str]) -> (PathBuf, Output) {
    if let Err(e) = tfconv::tf_runtime::load() {
        panic!("these tests need the TensorFlow reference runtime: {e}");
    }
    let folder = dir.join("out");
    let output = folder.join("pytorch_model.bin");
    let ckpt = golden_ckpt();
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "convert".as_ref(),
        "--tf-checkpoint".as_ref(),
        ckpt.as_os_str(),
        "--output".as_ref(),
        output.as_os_str(),
        "--max-shard-size".as_ref(),
        "100KB".as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let o = tfconv(&args);
    (folder, o)
}

fn shards(folder: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pytorch_model-") && n.ends_with(".bin"))
        .collect();
    names.sort();
    names
}

fn verify(folder: &Path) -> Output {
    let ckpt = golden_ckpt();
    tfconv(&["verify".as_ref(), "--hf-dir".as_ref(), folder.as_os_str(), "--tf-checkpoint".as_ref(), ckpt.as_os_str()])
}

#[test]
fn sharded_bin_converts_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, o) = convert_sharded_bin(dir.path(), &["--verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("PASS: "), "{}", stderr(&o));
    assert!(shards(&folder).len() > 1, "100KB must shard the ~250 kB float32 model: {:?}", shards(&folder));
    assert!(folder.join("pytorch_model.bin.index.json").is_file());
    assert!(!folder.join("pytorch_model.bin").exists());
}

#[test]
fn missing_shard_is_an_input_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, o) = convert_sharded_bin(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let gone = shards(&folder).remove(1);
    std::fs::remove_file(folder.join(&gone)).unwrap();
    let o = verify(&folder);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(9), "{err}");
    assert!(err.contains(&format!("shard {gone} is missing")) && err.contains("pytorch_model.bin.index.json"), "{err}");
}

#[test]
fn index_disagreeing_with_shards_is_a_structural_failure_naming_tensor_and_shard() {
    let dir = tempfile::tempdir().unwrap();
    let (folder, o) = convert_sharded_bin(dir.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let names = shards(&folder);
    let index_path = folder.join("pytorch_model.bin.index.json");
    let mut index: serde_json::Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let map = index["weight_map"].as_object_mut().unwrap();
    // One tensor moved to a shard that does not hold it, one dropped from the index.
    let moved = map.iter().find(|(_, f)| **f == names[0]).map(|(k, _)| k.clone()).unwrap();
    map.insert(moved.clone(), names[1].clone().into());
    let dropped = map.iter().find(|(_, f)| **f == names[0]).map(|(k, _)| k.clone()).unwrap();
    map.remove(&dropped);
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
    let o = verify(&folder);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let (a, b) = (&names[0], &names[1]);
    assert!(err.contains(&format!("lists {moved} in {b}, but {b} does not hold it ({a} does)")), "{err}");
    assert!(err.contains(&format!("{a} holds {dropped}, which pytorch_model.bin.index.json does not list")), "{err}");
    assert!(err.contains("FAIL: the folder's weights do not match the plan"), "{err}");
}
