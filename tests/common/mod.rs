//! Helpers shared by the command-line tests: running the binary, copies of golden checkpoints,
//! and snapshots of every file under a folder to prove what a command did and did not touch.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

pub mod mutation;
use tfconv::source::{self, testing::BundleBuilder};

pub fn golden(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(rel)
}

pub fn tfconv_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tfconv")).current_dir(cwd).args(args).output().unwrap()
}

pub fn tfconv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tfconv")).args(args).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Copies a golden case's checkpoint, config and tokenizer files (what a release ships, not the
/// probes and expected outputs) into `dir`; returns the prefix.
pub fn copy_golden(case: &str, dir: &Path) -> PathBuf {
    let golden_case = tfconv_models::arch::golden_cases().into_iter().find(|c| c.dir == case).unwrap_or_else(|| panic!("no golden case {case}"));
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(golden(case)).unwrap() {
        let name = entry.unwrap().file_name();
        let name = name.to_str().unwrap();
        let shipped = name.starts_with(golden_case.checkpoint)
            || Some(name) == golden_case.config_file
            || golden_case.files.iter().any(|(f, _)| *f == name);
        if shipped {
            std::fs::copy(golden(case).join(name), dir.join(name)).unwrap();
        }
    }
    dir.join(golden_case.checkpoint)
}

/// Copies golden/bert's checkpoint into `dir` with its variables edited, plus its config and vocab.
pub fn edited_bert(dir: &Path, edit: impl Fn(&mut Vec<(String, Vec<i64>, Vec<f32>)>)) -> PathBuf {
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

/// A BERT checkpoint of about 440 MB (a 2.3M-row vocabulary), big enough to interrupt mid-write.
/// Its vocab.txt is removed (it would not match); returns the prefix.
pub fn big_bert(dir: &Path) -> PathBuf {
    let vocab = 2_300_000i64;
    let ckpt = edited_bert(dir, |vars| {
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
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("bert_config.json")).unwrap()).unwrap();
    config["vocab_size"] = vocab.into();
    std::fs::write(dir.join("bert_config.json"), config.to_string()).unwrap();
    std::fs::remove_file(dir.join("vocab.txt")).unwrap();
    ckpt
}

/// Every entry under `root` (files by SHA-256, folders and links marked), keyed by path.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                out.insert(path.clone(), format!("link -> {}", std::fs::read_link(&path).unwrap().display()));
            } else if kind.is_dir() {
                out.insert(path.clone(), "dir".into());
                stack.push(path);
            } else {
                let digest = Sha256::digest(std::fs::read(&path).unwrap());
                out.insert(path, digest.iter().map(|b| format!("{b:02x}")).collect());
            }
        }
    }
    out
}

/// Paths whose entry differs between two snapshots (changed, created or deleted).
pub fn changed(before: &BTreeMap<PathBuf, String>, after: &BTreeMap<PathBuf, String>) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = before.keys().chain(after.keys()).filter(|p| before.get(*p) != after.get(*p)).cloned().collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The files a convert run says it wrote (`  wrote PATH`) and its report (`report: PATH`).
pub fn reported_outputs(o: &Output) -> Vec<PathBuf> {
    stderr(o)
        .lines()
        .filter_map(|l| l.strip_prefix("  wrote ").or_else(|| l.strip_prefix("report: ")))
        .map(PathBuf::from)
        .collect()
}

/// A real shared library that is not TensorFlow (libz), to stand in for a wrong TFCONV_TF_DIR.
pub fn not_tensorflow_library() -> PathBuf {
    ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib"]
        .iter()
        .map(|d| Path::new(d).join("libz.so.1"))
        .find(|p| p.is_file())
        .expect("these tests need a shared library that is not TensorFlow: libz.so.1")
}
