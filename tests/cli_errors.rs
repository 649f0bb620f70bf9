//! Bad input through the command line: each failure gets a clear message naming what is wrong,
//! its own exit code, and leaves no output folder behind.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

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
    // --force replaces only tfconv's own output, never a folder holding the user's files.
    let o = convert(&ckpt, &out, &["--force"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("keep.txt"), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"mine", "nothing was touched");
    std::fs::remove_file(out.join("keep.txt")).unwrap();
    let o = convert(&ckpt, &out, &["--force"]);
    assert_eq!(o.status.code(), Some(0), "an empty folder is filled: {}", stderr(&o));
    assert!(out.join("model.safetensors").is_file());
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
    // An empty folder: no checkpoint there (missing, 9); an index of garbage (corrupt, 3).
    let o = tfconv(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    let garbage = dir.path().join("model.ckpt.index");
    std::fs::write(&garbage, vec![7u8; 100]).unwrap();
    let o = tfconv(&["inspect", garbage.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("model.ckpt.index"), "{}", stderr(&o));
}

/// `--set KEY=VALUE` supplies what a release's config does not say (OpenAI GPT ships none): it
/// reaches config.json, a value that does not fit the checkpoint is an input error naming it,
/// and a malformed setting is a usage error.
#[test]
fn set_fills_in_the_original_config() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = golden("openai-gpt").join("params_shapes.json");
    let out = dir.path().join("out");
    let o = convert(&ckpt, &out, &["--set", "n_head=4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["n_head"], 4);
    let bad = dir.path().join("bad");
    let o = convert(&ckpt, &bad, &["--set", "n_head=5"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("n_embd 48 must be a multiple of n_head 5 (with n_head=5 from the command line)"), "{}", stderr(&o));
    assert!(!bad.exists());
    let o = convert(&ckpt, &bad, &["--set", "n_head"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("'n_head' is not KEY=VALUE"), "{}", stderr(&o));
}
