//! The golden GPT-2 checkpoint (written by TensorFlow under gpt-2 `model.py`'s names, with a
//! fine-tuner's Adam state, and TF's outputs stored beside it): `convert --verify` with the
//! binary in every stored dtype, the exact bytes and names it writes, the config and tokenizer
//! it translates, and what it refuses or warns about.
//!
//! The verifying tests need TensorFlow: a missing runtime makes them FAIL, never skip.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tfconv::convert::{convert, ConvertOptions};
use tfconv::source::{self, DType};
use tfconv::verify::{self, compare, Tolerance, VerifyOptions};
use tfconv_models::probe::{Outputs, Probes};

fn golden(name: &str) -> PathBuf {
    common::golden("gpt2").join(name)
}

fn require_tensorflow() {
    if let Err(e) = tfconv::tf_runtime::load() {
        panic!("these tests need the TensorFlow reference runtime: {e}");
    }
}

/// golden/gpt2 copied into `dir` (checkpoint, hparams.json, encoder.json, vocab.bpe); returns the prefix.
fn copy_golden(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(common::golden("gpt2")).unwrap() {
        let name = entry.unwrap().file_name();
        let name = name.to_str().unwrap();
        if name.starts_with("model.ckpt") || ["hparams.json", "encoder.json", "vocab.bpe"].contains(&name) {
            std::fs::copy(golden(name), dir.join(name)).unwrap();
        }
    }
    dir.join("model.ckpt")
}

fn expected_outputs() -> Outputs {
    let bytes = std::fs::read(golden("expected.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let order = meta.metadata().as_ref().unwrap()["order"].clone();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = Outputs::default();
    for name in order.split(',') {
        let t = st.tensor(name).unwrap();
        out.push(name, t.shape().to_vec(), t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect());
    }
    out
}

const OUTPUTS: [&str; 6] = ["embeddings", "layer.0", "layer.1", "layer.2", "ln_f", "lm_logits"];

/// `tfconv convert --verify` as a user runs it: model type, config and tokenizer found beside the
/// checkpoint, every stage within tolerance, in each stored dtype and as pytorch_model.bin.
#[test]
fn golden_converts_and_verifies_with_the_binary() {
    require_tensorflow();
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = golden("model.ckpt");
    let mut worst = 0f64;
    for (dtype, output) in [("float32", "f32"), ("float16", "f16"), ("bfloat16", "bf16"), ("float32", "bin/pytorch_model.bin")] {
        let (out, report) = (tmp.path().join(output), tmp.path().join(format!("{dtype}-{}.json", output.len())));
        let o = common::tfconv(&[
            "convert", "--tf-checkpoint", ckpt.to_str().unwrap(), "--output", out.to_str().unwrap(), "--dtype", dtype,
            "--verify", "--report", report.to_str().unwrap(),
        ]);
        let err = common::stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{dtype} {output}:\n{err}");
        assert!(err.contains("as GPT2LMHeadModel (40 tensors, 83 optimizer/bookkeeping variables skipped)"), "{err}");
        assert!(err.contains("PASS: 6 outputs agree in 6 stages"), "{err}");
        assert!(!err.contains("note:"), "the golden tokenizer fits the model: {err}");
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let names: Vec<&str> = json["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
        assert_eq!(names, OUTPUTS);
        assert_eq!(json["stored_dtype"], dtype);
        assert_eq!(json["probes"]["inputs"].as_array().unwrap().len(), 1, "input_ids only: the original has no padding mask");
        let rel = json["outputs"].as_array().unwrap().iter().map(|o| o["max_rel_error"].as_f64().unwrap()).fold(0.0, f64::max);
        eprintln!("golden/gpt2 {dtype} {output}: worst relative error {rel:.3e}");
        worst = worst.max(rel);
    }
    eprintln!("golden/gpt2: worst relative error over every form {worst:.3e}");
}

/// The stored probes are what GPT-2's probe policy draws from their seed.
#[test]
fn golden_probes_are_gpt2s_probes_for_their_seed() {
    let stored: Probes = serde_json::from_slice(&std::fs::read(golden("probes.json")).unwrap()).unwrap();
    let hparams: serde_json::Value = serde_json::from_slice(&std::fs::read(golden("hparams.json")).unwrap()).unwrap();
    let arch = tfconv_models::arch::from_original("gpt2", &hparams, &[]).unwrap();
    assert_eq!(arch.probes(7, 3, None), stored);
    assert_eq!(stored.to_string(), "input_ids [3, 16] (seed 7)");
}

/// candle on the converted folder reproduces TensorFlow's stored outputs (no TensorFlow needed).
#[test]
fn golden_outputs_reproduce_in_candle() {
    let tmp = tempfile::tempdir().unwrap();
    let done = convert(&ConvertOptions::new(golden("model.ckpt"), tmp.path().join("out"))).unwrap();
    let probes: Probes = serde_json::from_slice(&std::fs::read(golden("probes.json")).unwrap()).unwrap();
    let files = verify::weight_files(&done.folder).unwrap();
    let candle = verify::candle_outputs(&files, done.arch.as_ref(), &probes.inputs).unwrap();
    let expected = expected_outputs();
    assert_eq!(expected.names(), OUTPUTS);
    assert_eq!(candle.names(), expected.names());
    for report in compare::compare(&candle, &expected, Tolerance::for_dtype(DType::F32)) {
        eprintln!("gpt2 {:<10} max|Δ| {:.3e} rel {:.3e}", report.name, report.max_abs_error, report.max_rel_error);
        assert!(report.pass, "{report:?}");
    }
}

/// The keys `save_pretrained` writes for GPT2LMHeadModel, spelled out independently of the table:
/// no `lm_head.weight` (tied), no attention-mask buffers.
fn hf_keys(layers: usize) -> BTreeSet<String> {
    let mut keys = vec!["transformer.wte.weight".to_string(), "transformer.wpe.weight".into(), "transformer.ln_f.weight".into(), "transformer.ln_f.bias".into()];
    for l in 0..layers {
        for m in ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"] {
            keys.push(format!("transformer.h.{l}.{m}.weight"));
            keys.push(format!("transformer.h.{l}.{m}.bias"));
        }
    }
    keys.into_iter().collect()
}

#[test]
fn written_tensors_are_the_squeezed_originals_under_save_pretrained_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let done = convert(&ConvertOptions::new(golden("model.ckpt"), tmp.path().join("out"))).unwrap();
    let bytes = std::fs::read(done.folder.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let written: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
    assert_eq!(written, hf_keys(3));
    let ckpt = source::open(&golden("model.ckpt")).unwrap();
    for m in &done.plan.mappings {
        let src = ckpt.info(&m.source).unwrap().clone();
        let t = st.tensor(&m.target).unwrap();
        // A squeeze moves no bytes: every tensor is its source byte for byte, Conv1D kernels
        // [1, in, out] included, stored as [in, out] (never transposed).
        assert_eq!(t.data(), ckpt.read(&m.source).unwrap().as_ref(), "{} is not {} unchanged", m.target, m.source);
        if m.source.ends_with("/w") {
            assert_eq!((src.shape[0], &src.shape[1..]), (1, t.shape()), "{}", m.source);
        }
    }
    let c_attn = st.tensor("transformer.h.0.attn.c_attn.weight").unwrap();
    assert_eq!(c_attn.shape(), [32, 96], "c_attn stays fused, [n_embd, 3·n_embd]");
    let skipped: BTreeSet<&str> = done.plan.skipped.iter().map(|(n, _)| n.as_str()).collect();
    for name in ["global_step", "beta1_power", "beta2_power", "model/wte/Adam", "model/h2/attn/c_attn/w/Adam_1"] {
        assert!(skipped.contains(name), "{name} not skipped");
    }
}

#[test]
fn hparams_and_tokenizer_are_translated_to_transformers_names() {
    let tmp = tempfile::tempdir().unwrap();
    let done = convert(&ConvertOptions::new(golden("model.ckpt"), tmp.path().join("out"))).unwrap();
    assert!(done.notes.is_empty(), "{:?}", done.notes);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("config.json")).unwrap()).unwrap();
    for (key, value) in [
        ("model_type", "\"gpt2\""), ("architectures", "[\"GPT2LMHeadModel\"]"), ("vocab_size", "64"), ("n_positions", "16"), ("n_ctx", "16"),
        ("n_embd", "32"), ("n_head", "4"), ("n_layer", "3"), ("activation_function", "\"gelu_new\""), ("layer_norm_epsilon", "1e-5"),
        ("bos_token_id", "63"), ("eos_token_id", "63"), ("scale_attn_weights", "true"), ("tie_word_embeddings", "true"), ("dtype", "\"float32\""),
    ] {
        assert_eq!(config[key], serde_json::from_str::<serde_json::Value>(value).unwrap(), "{key}");
    }
    assert!(config.get("n_vocab").is_none());
    assert_eq!(std::fs::read(done.folder.join("vocab.json")).unwrap(), std::fs::read(golden("encoder.json")).unwrap());
    assert_eq!(std::fs::read(done.folder.join("merges.txt")).unwrap(), std::fs::read(golden("vocab.bpe")).unwrap());
    let tok: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tok["tokenizer_class"], "GPT2Tokenizer");
    assert_eq!(tok["model_max_length"], 16);
    let encoder: serde_json::Value = serde_json::from_slice(&std::fs::read(golden("encoder.json")).unwrap()).unwrap();
    assert_eq!(encoder[tok["eos_token"].as_str().unwrap()], config["eos_token_id"]);
}

/// An encoder.json with ids past the embedding rows (seen in the wild): converted, with a note.
#[test]
fn a_vocabulary_that_does_not_fit_the_embedding_is_a_warning_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = copy_golden(&tmp.path().join("ckpt"));
    let mut encoder: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&std::fs::read(golden("encoder.json")).unwrap()).unwrap();
    encoder.insert("Ġzz".into(), 64.into());
    encoder.insert("Ġzzz".into(), 70.into());
    std::fs::write(prefix.with_file_name("encoder.json"), serde_json::to_vec(&encoder).unwrap()).unwrap();
    let out = tmp.path().join("out");
    let o = common::tfconv(&["convert", "--tf-checkpoint", prefix.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("holds 2 token id(s) at or above the model's 64 embedding rows (largest 70): the tokenizer does not fit this model"), "{err}");
    assert!(err.lines().any(|l| l.starts_with("note: ") && l.contains("encoder.json holds 2 token id(s)")), "{err}");
    assert!(out.join("model.safetensors").is_file() && out.join("vocab.json").is_file() && out.join("merges.txt").is_file());
}

#[test]
fn hparams_that_do_not_describe_the_checkpoint_are_refused_by_field() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = copy_golden(&tmp.path().join("ckpt"));
    let hparams = prefix.with_file_name("hparams.json");
    let out = tmp.path().join("out");
    let convert = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut h: serde_json::Value = serde_json::from_slice(&std::fs::read(golden("hparams.json")).unwrap()).unwrap();
        edit(&mut h);
        std::fs::write(&hparams, h.to_string()).unwrap();
        common::tfconv(&["convert", "--tf-checkpoint", prefix.to_str().unwrap(), "--output", out.to_str().unwrap()])
    };
    // transformers' default context, as its converter leaves it when given hparams.json.
    let o = convert(&|h| h["n_ctx"] = 1024.into());
    assert_eq!(o.status.code(), Some(4), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("n_ctx (n_positions) 1024 and n_embd 32 need model/wpe of shape [1024, 32], but the checkpoint's is [16, 32]"), "{}", common::stderr(&o));
    let o = convert(&|h| h["n_layer"] = 4.into());
    assert!(common::stderr(&o).contains("n_layer is 4, but the checkpoint holds the blocks h0, h1, h2"), "{}", common::stderr(&o));
    let o = convert(&|h| h["n_head"] = 5.into());
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("n_embd 32 must be a multiple of n_head 5"), "{}", common::stderr(&o));
    let o = convert(&|h| h["n_vocab"] = (-3).into());
    assert!(common::stderr(&o).contains("n_vocab must be a positive integer, got -3"), "{}", common::stderr(&o));
    assert!(!out.exists(), "nothing is written for a refused conversion");
}

/// The model type comes from the variable names, and each golden checkpoint fits exactly one.
#[test]
fn model_type_is_told_from_the_variable_names() {
    let names = |case: &str, prefix: &str| -> Vec<tfconv_models::plan::SourceVar> {
        tfconv::convert::source_vars(source::open(&common::golden(case).join(prefix)).unwrap().as_ref())
    };
    assert_eq!(tfconv_models::arch::detect_model_type(&names("gpt2", "model.ckpt")), Ok("gpt2"));
    assert_eq!(tfconv_models::arch::detect_model_type(&names("bert", "bert_model.ckpt")), Ok("bert"));
    assert_eq!(tfconv_models::arch::detect_model_type(&names("bert-tf2", "bert_model.ckpt")), Ok("bert"));
    assert_eq!(tfconv_models::arch::detect_model_type(&names("albert", "model.ckpt-best")), Ok("albert"));
    // Told to read GPT-2 as BERT, the plan names what BERT would need.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = common::tfconv(&[
        "convert", "--tf-checkpoint", golden("model.ckpt").to_str().unwrap(), "--model-type", "bert",
        "--config", common::golden("bert").join("bert_config.json").to_str().unwrap(), "--output", out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("missing from the checkpoint: bert/embeddings/word_embeddings"), "{}", common::stderr(&o));
}

/// verify on the converted folder alone (no original config) refuses without
/// --trust-folder-config, and with it builds the reference from the folder's config.json.
#[test]
fn verify_with_the_folders_own_config() {
    require_tensorflow();
    let tmp = tempfile::tempdir().unwrap();
    let prefix = copy_golden(&tmp.path().join("ckpt"));
    let done = convert(&ConvertOptions::new(&prefix, tmp.path().join("out"))).unwrap();
    std::fs::remove_file(prefix.with_file_name("hparams.json")).unwrap();
    let (folder, ckpt) = (done.folder.to_str().unwrap(), prefix.to_str().unwrap());
    let o = common::tfconv(&["verify", "--hf-dir", folder, "--tf-checkpoint", ckpt]);
    assert_eq!(o.status.code(), Some(9), "the original config is missing: {}", common::stderr(&o));
    assert!(common::stderr(&o).contains("hparams.json, config.json"), "{}", common::stderr(&o));
    let o = common::tfconv(&["verify", "--hf-dir", folder, "--tf-checkpoint", ckpt, "--trust-folder-config"]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    // The library call, too: the report's reference is the original model of the folder's sizes.
    let report = verify::verify(&done.folder, done.checkpoint.as_ref(), done.arch.as_ref(), &done.plan, &VerifyOptions::default()).unwrap();
    assert!(report.pass, "{}", verify::render_table(&report));
}
