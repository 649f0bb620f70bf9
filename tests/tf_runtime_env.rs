//! How `tfconv verify` finds and loads TensorFlow under unusual environments: a `TFCONV_TF_DIR`
//! that is missing or holds something else, an unusable home directory, and TensorFlow's own
//! start-up chatter. Each case runs the binary on a folder converted from golden/bert.
//!
//! Needs TensorFlow (tfconv's venv, as `cargo xtask setup-tf` installs it): without it the cases
//! that expect success FAIL, they never skip.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::not_tensorflow_library as libz;

const CC_LIB: &str = "libtensorflow_cc.so.2";
const FRAMEWORK_LIB: &str = "libtensorflow_framework.so.2";

fn checkpoint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/bert/bert_model.ckpt")
}

/// golden/bert converted into `tmp/out`.
fn converted(tmp: &Path) -> PathBuf {
    let out = tmp.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_tfconv"))
        .args(["convert", "--tf-checkpoint"])
        .arg(checkpoint())
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "convert failed: {}", String::from_utf8_lossy(&o.stderr));
    out
}

/// `tfconv verify` on golden/bert converted under `tmp`, with `set` set and `remove` removed from
/// the environment; returns the exit code and stderr.
fn verify(tmp: &Path, set: &[(&str, &Path)], remove: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tfconv"));
    cmd.arg("verify").arg("--hf-dir").arg(converted(tmp)).arg("--tf-checkpoint").arg(checkpoint());
    for key in ["TFCONV_TF_DIR", "TF_CPP_MIN_LOG_LEVEL"].iter().chain(remove) {
        cmd.env_remove(key);
    }
    cmd.envs(set.iter().copied());
    let o: Output = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "tfconv panicked:\n{stderr}");
    (o.status.code().unwrap_or_else(|| panic!("killed by a signal:\n{stderr}")), stderr)
}

/// The directory holding the real TensorFlow libraries, as the library finds it from this environment.
fn real_tensorflow() -> PathBuf {
    tfconv::tf_runtime::find_library_dir().expect("these tests need TensorFlow: run `cargo xtask setup-tf`")
}

#[test]
fn a_non_tensorflow_library_is_named_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (bogus, cache, path) = (tmp.path().join("bogus"), tmp.path().join("cache"), tmp.path().join("bin"));
    for dir in [&bogus, &cache, &path] {
        std::fs::create_dir(dir).unwrap();
    }
    for name in [CC_LIB, FRAMEWORK_LIB] {
        std::fs::copy(libz(), bogus.join(name)).unwrap();
    }
    // No venv in the empty cache and no python3 on PATH: nothing to fall back to.
    let (code, stderr) = verify(tmp.path(), &[("TFCONV_TF_DIR", &bogus), ("TFCONV_CACHE", &cache), ("PATH", &path)], &[]);
    assert_eq!(code, 6, "{stderr}");
    let user_file = bogus.join(CC_LIB);
    let expected = format!("TFCONV_TF_DIR={}: {} is not a TensorFlow C library (it lacks TF_Version", bogus.display(), user_file.display());
    assert!(stderr.contains(&expected), "expected {expected:?} in:\n{stderr}");
    assert!(stderr.contains("tfconv setup-tf"), "{stderr}");
    assert!(!stderr.contains("tf-shim"), "the message names an internal path:\n{stderr}");
}

#[test]
fn a_missing_tf_dir_is_named_when_nothing_else_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let (missing, cache, path) = (tmp.path().join("missing"), tmp.path().join("cache"), tmp.path().join("bin"));
    std::fs::create_dir(&cache).unwrap();
    std::fs::create_dir(&path).unwrap();
    let (code, stderr) = verify(tmp.path(), &[("TFCONV_TF_DIR", &missing), ("TFCONV_CACHE", &cache), ("PATH", &path)], &[]);
    assert_eq!(code, 6, "{stderr}");
    let expected = format!("TFCONV_TF_DIR={}: no such directory", missing.display());
    assert!(stderr.contains(&expected), "expected {expected:?} in:\n{stderr}");
}

#[test]
fn a_missing_tf_dir_falls_back_to_the_venv_with_a_warning() {
    real_tensorflow();
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let (code, stderr) = verify(tmp.path(), &[("TFCONV_TF_DIR", &missing)], &[]);
    assert_eq!(code, 0, "{stderr}");
    let warning = format!("warning: ignoring TFCONV_TF_DIR={}: no such directory; using the TensorFlow in ", missing.display());
    assert_eq!(stderr.lines().filter(|l| l.starts_with(&warning)).count(), 1, "expected one {warning:?} line in:\n{stderr}");
    assert!(stderr.contains("PASS"), "{stderr}");
}

#[test]
fn an_empty_tf_dir_counts_as_unset() {
    real_tensorflow();
    let tmp = tempfile::tempdir().unwrap();
    let (code, stderr) = verify(tmp.path(), &[("TFCONV_TF_DIR", Path::new(""))], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("TFCONV_TF_DIR"), "{stderr}");
}

#[test]
fn an_unusable_home_puts_the_shim_in_the_temp_dir() {
    let tf = real_tensorflow();
    let tmp = tempfile::tempdir().unwrap();
    // Root ignores permission bits, so make HOME unusable for everyone: a path under a regular file.
    std::fs::write(tmp.path().join("afile"), b"").unwrap();
    let home = tmp.path().join("afile").join("home");
    let temp = tmp.path().join("tmp");
    std::fs::create_dir(&temp).unwrap();
    let (code, stderr) =
        verify(tmp.path(), &[("TFCONV_TF_DIR", &tf), ("HOME", &home), ("TMPDIR", &temp)], &["TFCONV_CACHE", "XDG_CACHE_HOME"]);
    assert_eq!(code, 0, "{stderr}");
    let uid = std::fs::metadata(&temp).unwrap().uid();
    let shim = temp.join(format!("tfconv-tf-shim-{uid}"));
    assert_eq!(std::fs::read_link(shim.join("libtensorflow.so")).unwrap(), tf.join(CC_LIB));
}

#[test]
fn tensorflow_start_up_chatter_is_hidden() {
    real_tensorflow();
    let tmp = tempfile::tempdir().unwrap();
    let (code, stderr) = verify(tmp.path(), &[], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("PASS"), "{stderr}");
    for noise in ["oneDNN custom operations", "TF_ENABLE_ONEDNN_OPTS", "absl::InitializeLog", "cpu_feature_guard"] {
        assert!(!stderr.contains(noise), "{noise:?} in:\n{stderr}");
    }
}
