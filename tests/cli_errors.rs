//! Bad input through the command line: each failure gets a clear message naming what is wrong,
//! its own exit code, and leaves no output folder behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tfconv::source::{self, testing::BundleBuilder};

fn golden(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(rel)
}

fn tfconv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tfconv")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Copies golden/bert's checkpoint into `dir` with its variables edited, plus its config and vocab.
fn edited_bert(dir: &Path, edit: impl Fn(&mut Vec<(String, Vec<i64>, Vec<f32>)>)) -> PathBuf {
    let ckpt = source::open(&golden("bert/bert_model.ckpt")).unwrap();
    let mut vars: Vec<(String, Vec<i64>, Vec<f32>)> = ckpt
        .tensors()
        .iter()
        .filter(|t| t.dtype == source::DType::F32)
        .map(|t| {
            let bytes = ckpt.read(&t.name).unwrap();
            let values = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            (t.name.clone(), t.shape.iter().map(|&d| d as i64).collect(), values)
        })
        .collect();
    edit(&mut vars);
    let mut b = BundleBuilder::new(1);
    for (name, shape, values) in &vars {
        b.add_f32(name, shape, values);
    }
    let prefix = dir.join("bert_model.ckpt");
    b.write(&prefix).unwrap();
    for f in ["bert_config.json", "vocab.txt"] {
        std::fs::copy(golden("bert").join(f), dir.join(f)).unwrap();
    }
    prefix
}

fn convert(ckpt: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["convert", "--tf-checkpoint", ckpt.to_str().unwrap(), "--output", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    tfconv(&args)
}

#[test]
fn unmapped_variable_is_an_error_listing_it() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = edited_bert(dir.path(), |vars| {
        vars.push(("bert/encoder/layer_1/attention/self/relative_bias".into(), vec![4], vec![0.0; 4]));
        vars.push(("cls/extra/kernel".into(), vec![2], vec![0.0; 2]));
    });
    let out = dir.path().join("out");
    let o = convert(&ckpt, &out, &[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let msg = stderr(&o);
    assert!(msg.contains("2 variable(s) are neither mapped nor known optimizer/bookkeeping slots"), "{msg}");
    assert!(msg.contains("bert/encoder/layer_1/attention/self/relative_bias") && msg.contains("cls/extra/kernel"), "{msg}");
    assert!(!out.exists());
}

#[test]
fn missing_variable_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = edited_bert(dir.path(), |vars| vars.retain(|v| v.0 != "bert/encoder/layer_2/output/dense/bias"));
    let out = dir.path().join("out");
    let o = convert(&ckpt, &out, &[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing from the checkpoint: bert/encoder/layer_2/output/dense/bias"), "{}", stderr(&o));
    assert!(!out.exists());
}

#[test]
fn config_that_disagrees_with_the_checkpoint_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(golden("bert/bert_config.json")).unwrap()).unwrap();
    config["intermediate_size"] = 96.into();
    let config_path = dir.path().join("wrong_config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let out = dir.path().join("out");
    let ckpt = golden("bert/bert_model.ckpt");
    let o = convert(&ckpt, &out, &["--config", config_path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let msg = stderr(&o);
    assert!(msg.contains("shapes disagree with the config"), "{msg}");
    assert!(msg.contains("bert/encoder/layer_0/intermediate/dense/kernel has shape [48, 80]"), "{msg}");
    assert!(!out.exists());
}

#[test]
fn existing_output_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"mine").unwrap();
    let ckpt = golden("bert/bert_model.ckpt");
    let o = convert(&ckpt, &out, &[]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"mine", "nothing was touched");
    let o = convert(&ckpt, &out, &["--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(out.join("model.safetensors").is_file() && !out.join("keep.txt").exists());
}

#[test]
fn transformers_convert_flags_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    std::fs::create_dir(&dump).unwrap();
    let bin = dump.join("pytorch_model.bin");
    let o = tfconv(&[
        "convert",
        "--model_type", "bert",
        "--tf_checkpoint", golden("bert/bert_model.ckpt").to_str().unwrap(),
        "--config", golden("bert/bert_config.json").to_str().unwrap(),
        "--pytorch_dump_output", bin.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(bin.is_file() && dump.join("config.json").is_file());
}

#[test]
fn usage_and_input_errors_have_their_own_codes() {
    let o = tfconv(&["convert", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let o = tfconv(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let garbage = dir.path().join("model.ckpt.index");
    std::fs::write(&garbage, vec![7u8; 100]).unwrap();
    let o = tfconv(&["inspect", garbage.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("model.ckpt.index"), "{}", stderr(&o));
}

#[test]
fn killed_conversion_leaves_no_valid_looking_folder() {
    let dir = tempfile::tempdir().unwrap();
    // A 1.5M-token vocabulary makes the first tensor ~290 MB, so the kill lands mid-write.
    let vocab = 1_500_000i64;
    let ckpt = edited_bert(dir.path(), |vars| {
        for v in vars.iter_mut() {
            if v.0 == "bert/embeddings/word_embeddings" {
                v.1 = vec![vocab, 48];
                v.2 = vec![0.5; vocab as usize * 48];
            } else if v.0 == "cls/predictions/output_bias" {
                v.1 = vec![vocab];
                v.2 = vec![0.0; vocab as usize];
            }
        }
        vars.retain(|v| !v.0.ends_with("adam_m") && !v.0.ends_with("adam_v"));
    });
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("bert_config.json")).unwrap()).unwrap();
    config["vocab_size"] = vocab.into();
    std::fs::write(dir.path().join("bert_config.json"), config.to_string()).unwrap();
    std::fs::remove_file(dir.path().join("vocab.txt")).unwrap();

    let out = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tfconv"))
        .args(["convert", "--tf-checkpoint", ckpt.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .spawn()
        .unwrap();
    // Wait until the temporary folder exists (writing has begun), then kill without warning.
    let started = std::time::Instant::now();
    loop {
        let temp_exists = std::fs::read_dir(dir.path()).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".out.tmp"));
        if temp_exists {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "conversion finished before it could be killed");
        assert!(started.elapsed().as_secs() < 60, "conversion never started writing");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!out.exists(), "a killed conversion must not leave {}", out.display());
}
