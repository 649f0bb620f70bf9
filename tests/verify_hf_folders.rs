//! `tfconv verify` on folders that were not written by tfconv's own convert: the full state dict
//! Hugging Face's `transformers convert` saves (tied aliases included), and folders whose
//! config.json disagrees with their weights.
//!
//! Needs TensorFlow and the interop torch environment: either missing makes these tests FAIL,
//! never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tfconv");

fn golden_ckpt() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join("bert").join("bert_model.ckpt")
}

fn torch_python() -> PathBuf {
    let python = tfconv::tf_runtime::cache_dir().join("interop/torch/bin/python");
    assert!(
        python.is_file(),
        "{} does not exist: run `cargo xtask interop` once to install the torch environment these tests need",
        python.display()
    );
    python
}

fn require_tensorflow() {
    if let Err(e) = tfconv::tf_runtime::load() {
        panic!("these tests need the TensorFlow reference runtime: {e}");
    }
}

/// golden/bert converted by the binary into `tmp/bert`, as `weights` (a weight file name, or
/// "" for the default folder output).
fn convert(tmp: &Path, weights: &str) -> PathBuf {
    require_tensorflow();
    let folder = tmp.join("bert");
    let output = if weights.is_empty() { folder.clone() } else { folder.join(weights) };
    let out = Command::new(BIN).arg("convert").arg("--tf-checkpoint").arg(golden_ckpt()).arg("--output").arg(&output).output().unwrap();
    assert!(out.status.success(), "tfconv convert failed:\n{}", String::from_utf8_lossy(&out.stderr));
    folder
}

/// Rewrites `folder/pytorch_model.bin` with torch, running `edit` (Python, on the state dict `sd`).
fn edit_with_torch(folder: &Path, edit: &str) {
    let script = format!(
        "import sys, torch\np = sys.argv[1]\nsd = torch.load(p, weights_only=True)\n{edit}\ntorch.save(sd, p)\n"
    );
    let out = Command::new(torch_python()).arg("-c").arg(&script).arg(folder.join("pytorch_model.bin")).output().unwrap();
    assert!(out.status.success(), "torch script failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// HF's converter: the full state dict, with the tied parameters saved as the same tensors.
const HF_ALIASES: &str = "sd['cls.predictions.decoder.weight'] = sd['bert.embeddings.word_embeddings.weight']\n\
                          sd['cls.predictions.decoder.bias'] = sd['cls.predictions.bias']";

struct Verdict {
    code: i32,
    stderr: String,
    report: serde_json::Value,
}

impl Verdict {
    fn problems(&self) -> Vec<String> {
        self.report["structural_problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
    }
}

fn verify(folder: &Path) -> Verdict {
    let report = folder.with_extension("report.json");
    let _ = std::fs::remove_file(&report);
    let out = Command::new(BIN)
        .arg("verify")
        .arg("--hf-dir")
        .arg(folder)
        .arg("--tf-checkpoint")
        .arg(golden_ckpt())
        .arg("--report")
        .arg(&report)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let code = out.status.code().expect("exited by a signal");
    let text = std::fs::read(&report).unwrap_or_else(|e| panic!("no report ({e}); exit {code}:\n{stderr}"));
    Verdict { code, stderr, report: serde_json::from_slice(&text).unwrap() }
}

fn tensor_names(folder: &Path) -> Vec<String> {
    let files = tfconv::verify::weight_files(folder).unwrap();
    tfconv::verify::folder_tensors(&files).unwrap().into_keys().collect()
}

#[test]
fn hf_converter_state_dict_with_tied_aliases_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = convert(tmp.path(), "pytorch_model.bin");
    let plain = verify(&folder);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    edit_with_torch(&folder, HF_ALIASES);
    let names = tensor_names(&folder);
    for alias in ["cls.predictions.decoder.weight", "cls.predictions.decoder.bias"] {
        assert!(names.iter().any(|n| n == alias), "the torch script did not add {alias}: {names:?}");
    }

    let v = verify(&folder);
    assert_eq!(v.code, 0, "a correct HF-style folder must pass:\n{}", v.stderr);
    assert!(v.problems().is_empty(), "{:?}", v.problems());
    assert_eq!(v.report["pass"], true);
    // Each distinct tensor once: the aliases add no parameters.
    assert_eq!(v.report["parameters"], plain.report["parameters"], "{}", v.stderr);
    assert_eq!(v.report["outputs"].as_array().unwrap().len(), plain.report["outputs"].as_array().unwrap().len());
}

#[test]
fn a_tied_alias_that_differs_from_its_tensor_fails_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = convert(tmp.path(), "pytorch_model.bin");
    edit_with_torch(&folder, &format!("{HF_ALIASES}\nsd['cls.predictions.decoder.bias'] = sd['cls.predictions.bias'] + 1"));

    let v = verify(&folder);
    assert_eq!(v.code, 1, "{}", v.stderr);
    assert_eq!(v.report["first_divergence"], "structure", "{}", v.stderr);
    let problems = v.problems();
    assert!(
        problems.iter().any(|p| p.contains("cls.predictions.decoder.bias") && p.contains("cls.predictions.bias ") && p.contains("differ")),
        "no problem names both tensors: {problems:?}"
    );
    // The identical alias is still accepted, and nothing is "unexpected".
    assert!(!problems.iter().any(|p| p.contains("decoder.weight") || p.contains("unexpected")), "{problems:?}");
    assert!(v.stderr.contains("cls.predictions.decoder.bias is tied to cls.predictions.bias"), "{}", v.stderr);
}

/// Sets `num_hidden_layers` in the folder's config.json.
fn set_layers(folder: &Path, layers: u64) {
    let path = folder.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(config["num_hidden_layers"], 3, "golden/bert has 3 layers");
    config["num_hidden_layers"] = layers.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

#[test]
fn config_with_fewer_layers_than_the_weights_is_a_structural_finding() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = convert(tmp.path(), "");
    set_layers(&folder, 2);

    let v = verify(&folder);
    assert_eq!(v.code, 1, "{}", v.stderr);
    assert_eq!(v.report["first_divergence"], "structure", "not a numeric divergence:\n{}", v.stderr);
    assert_eq!(
        v.problems(),
        ["config.json num_hidden_layers=2, but the folder holds weights for layer 2: bert.encoder.layer.2.* \
          (16 tensors unused by a model built from config.json)"]
    );
    assert!(v.report["outputs"].as_array().unwrap().is_empty(), "no numbers are compared for a broken folder");
}

#[test]
fn config_with_more_layers_than_the_weights_is_a_structural_finding() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = convert(tmp.path(), "");
    set_layers(&folder, 4);

    let v = verify(&folder);
    assert_eq!(v.code, 1, "{}", v.stderr);
    assert_eq!(v.report["first_divergence"], "structure", "{}", v.stderr);
    let problems = v.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("config.json num_hidden_layers=4, but the folder holds no weights for layer 3")
            && problems[0].contains("bert.encoder.layer.3.* (16 tensors a model built from config.json needs)"),
        "{problems:?}"
    );
}
