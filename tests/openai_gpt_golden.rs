//! The golden OpenAI GPT releases (numpy shards as finetune-transformer-lm lays them out, with
//! TF's outputs stored beside them): `convert --verify` with the binary in every stored dtype,
//! the double-heads class, the exact bytes and names written, the config taken from the arrays
//! and train.py's defaults, and clear errors for corrupt or inconsistent shards.
//!
//! The verifying tests need TensorFlow: a missing runtime makes them FAIL, never skip.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tfconv::convert::{convert, ConvertOptions};
use tfconv::source::numpy::{npy_bytes, SHAPES_FILE};
use tfconv::source::{self, DType};
use tfconv::verify::{self, compare, Tolerance};
use tfconv_models::probe::{Outputs, Probes};

fn golden(case: &str) -> PathBuf {
    common::golden(case)
}

fn require_tensorflow() {
    if let Err(e) = tfconv::tf_runtime::load() {
        panic!("these tests need the TensorFlow reference runtime: {e}");
    }
}

/// A golden release copied into `dir` (shards, shapes, BPE files, config.json if any).
fn copy_golden(case: &str, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(golden(case)).unwrap() {
        let name = entry.unwrap().file_name();
        let name = name.to_str().unwrap();
        if !["probes.json", "expected.safetensors"].contains(&name) {
            std::fs::copy(golden(case).join(name), dir.join(name)).unwrap();
        }
    }
    dir.to_path_buf()
}

fn expected_outputs(case: &str) -> Outputs {
    let bytes = std::fs::read(golden(case).join("expected.safetensors")).unwrap();
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

fn config_of(folder: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(folder.join("config.json")).unwrap()).unwrap()
}

/// Both releases, through the binary as a user runs it, in every stored dtype and as .bin.
#[test]
fn golden_releases_convert_and_verify_with_the_binary() {
    require_tensorflow();
    let tmp = tempfile::tempdir().unwrap();
    let mut worst = 0f64;
    for (case, outputs) in [("openai-gpt", 4), ("openai-gpt-swish", 5)] {
        for (dtype, output) in [("float32", "f32"), ("float16", "f16"), ("bfloat16", "bf16"), ("float32", "bin/pytorch_model.bin")] {
            let out = tmp.path().join(case).join(output);
            let report = tmp.path().join(format!("{case}-{dtype}-{}.json", output.len()));
            let o = common::tfconv(&[
                "convert", "--tf-checkpoint", golden(case).to_str().unwrap(), "--output", out.to_str().unwrap(), "--dtype", dtype,
                "--verify", "--report", report.to_str().unwrap(),
            ]);
            let err = common::stderr(&o);
            assert_eq!(o.status.code(), Some(0), "{case} {dtype} {output}:\n{err}");
            assert!(err.contains("as OpenAIGPTLMHeadModel"), "{err}");
            assert!(err.contains(&format!("PASS: {outputs} outputs agree in {outputs} stages")), "{err}");
            assert!(!err.contains("note:"), "{err}");
            let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
            let rel = json["outputs"].as_array().unwrap().iter().map(|o| o["max_rel_error"].as_f64().unwrap()).fold(0.0, f64::max);
            eprintln!("golden/{case} {dtype} {output}: worst relative error {rel:.3e}");
            worst = worst.max(rel);
        }
    }
    eprintln!("golden OpenAI GPT: worst relative error over every form {worst:.3e}");
}

/// Without a config file the sizes come from params_shapes.json and the rest from train.py's
/// defaults; a config.json beside the shards is read when present.
#[test]
fn the_config_comes_from_the_arrays_and_train_py_unless_a_file_says_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let done = convert(&ConvertOptions::new(golden("openai-gpt"), tmp.path().join("release"))).unwrap();
    assert_eq!(done.config_path, golden("openai-gpt"), "no config file: the checkpoint stands for it");
    let c = config_of(&done.folder);
    for (key, value) in [
        ("model_type", "\"openai-gpt\""), ("architectures", "[\"OpenAIGPTLMHeadModel\"]"), ("vocab_size", "60"), ("n_positions", "12"),
        ("n_embd", "48"), ("n_layer", "2"), ("n_head", "12"), ("afn", "\"gelu\""), ("layer_norm_epsilon", "1e-5"), ("dtype", "\"float32\""),
    ] {
        assert_eq!(c[key], serde_json::from_str::<serde_json::Value>(value).unwrap(), "{key}");
    }
    let done = convert(&ConvertOptions::new(golden("openai-gpt-swish"), tmp.path().join("swish"))).unwrap();
    assert_eq!(done.config_path, golden("openai-gpt-swish").join("config.json"));
    let c = config_of(&done.folder);
    assert_eq!((c["n_head"].as_u64(), c["afn"].as_str(), c["n_layer"].as_u64()), (Some(4), Some("swish"), Some(3)));
    assert_eq!(std::fs::read(done.folder.join("vocab.json")).unwrap(), std::fs::read(golden("openai-gpt-swish").join("encoder_bpe_40000.json")).unwrap());
    assert_eq!(std::fs::read(done.folder.join("merges.txt")).unwrap(), std::fs::read(golden("openai-gpt-swish").join("vocab_40000.bpe")).unwrap());
    let tok: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tok["tokenizer_class"], "OpenAIGPTTokenizer");
}

#[test]
fn golden_outputs_reproduce_in_candle() {
    for case in ["openai-gpt", "openai-gpt-swish"] {
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(golden(case), tmp.path().join("out"))).unwrap();
        let probes: Probes = serde_json::from_slice(&std::fs::read(golden(case).join("probes.json")).unwrap()).unwrap();
        assert_eq!(done.arch.probes(7, 3, None), probes, "{case}: the stored probes are the policy's for seed 7");
        let candle = verify::candle_outputs(&verify::weight_files(&done.folder).unwrap(), done.arch.as_ref(), &probes.inputs).unwrap();
        let expected = expected_outputs(case);
        assert_eq!(candle.names(), expected.names());
        for report in compare::compare(&candle, &expected, Tolerance::for_dtype(DType::F32)) {
            eprintln!("{case} {:<10} max|Δ| {:.3e} rel {:.3e}", report.name, report.max_abs_error, report.max_rel_error);
            assert!(report.pass, "{case}: {report:?}");
        }
    }
}

/// The keys `save_pretrained` writes for OpenAIGPTLMHeadModel (no lm_head.weight: tied), each
/// the squeezed array byte for byte.
#[test]
fn written_tensors_are_the_arrays_under_save_pretrained_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let done = convert(&ConvertOptions::new(golden("openai-gpt-swish"), tmp.path().join("out"))).unwrap();
    let bytes = std::fs::read(done.folder.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut keys = vec!["transformer.tokens_embed.weight".to_string(), "transformer.positions_embed.weight".into()];
    for l in 0..3 {
        for m in ["attn.c_attn", "attn.c_proj", "ln_1", "mlp.c_fc", "mlp.c_proj", "ln_2"] {
            keys.extend([format!("transformer.h.{l}.{m}.weight"), format!("transformer.h.{l}.{m}.bias")]);
        }
    }
    let written: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
    assert_eq!(written, keys.into_iter().collect::<BTreeSet<_>>());
    let ckpt = source::open(&golden("openai-gpt-swish")).unwrap();
    assert_eq!(ckpt.format(), "openai-gpt-numpy");
    for m in &done.plan.mappings {
        assert_eq!(st.tensor(&m.target).unwrap().data(), ckpt.read(&m.source).unwrap().as_ref(), "{} is not {}", m.target, m.source);
    }
    assert_eq!(st.tensor("transformer.h.2.attn.c_attn.weight").unwrap().shape(), [32, 96]);
}

/// --finetuning_task_name asks for the double-heads class: the multiple-choice head the release
/// lacks is written as zeros, and `tfconv verify` later takes the class from the folder.
#[test]
fn a_finetuning_task_writes_the_double_heads_class() {
    require_tensorflow();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("double");
    let ckpt = golden("openai-gpt");
    let o = common::tfconv(&[
        "convert", "--model_type", "openai-gpt", "--tf_checkpoint", ckpt.to_str().unwrap(), "--finetuning_task_name", "rocstories",
        "--pytorch_dump_output", out.to_str().unwrap(), "--verify",
    ]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("as OpenAIGPTDoubleHeadsModel") && err.contains("PASS: 5 outputs agree in 5 stages"), "{err}");
    assert!(err.lines().any(|l| l.trim_start().starts_with("mc_logits") && l.ends_with("ok")), "{err}");
    let c = config_of(&out);
    assert_eq!((c["architectures"][0].as_str(), c["finetuning_task"].as_str()), (Some("OpenAIGPTDoubleHeadsModel"), Some("rocstories")));
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let head = st.tensor("multiple_choice_head.summary.weight").unwrap();
    assert_eq!(head.shape(), [1, 48]);
    assert!(head.data().iter().all(|&b| b == 0), "the head the release lacks is zeros");
    let o = common::tfconv(&["verify", "--hf-dir", out.to_str().unwrap(), "--tf-checkpoint", ckpt.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("OpenAIGPTDoubleHeadsModel"), "{}", common::stderr(&o));
}

/// Shards that are missing, do not add up to the shapes, or are not little-endian C-order
/// float32 fail before anything is written, naming the file and the reason, each with its exit
/// code: missing 9, inconsistent 3, unsupported 13.
#[test]
fn corrupt_or_inconsistent_shards_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let refused = |label: &str, code: i32, edit: &dyn Fn(&Path), says: &[&str]| {
        let dir = copy_golden("openai-gpt", &tmp.path().join(label));
        edit(&dir);
        let out = tmp.path().join(format!("{label}-out"));
        let o = common::tfconv(&["convert", "--tf-checkpoint", dir.to_str().unwrap(), "--output", out.to_str().unwrap()]);
        let err = common::stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{label}: {err}");
        for s in says {
            assert!(err.contains(s), "{label}: stderr does not say {s:?}:\n{err}");
        }
        assert!(!out.exists(), "{label}: nothing is written");
    };
    let shard = |dir: &Path, i: usize| dir.join(format!("params_{i}.npy"));
    refused("missing-middle", 9, &|d| std::fs::remove_file(shard(d, 1)).unwrap(), &["params_1.npy", "missing", "params_2.npy"]);
    refused("missing-last", 9, &|d| std::fs::remove_file(shard(d, 2)).unwrap(), &["params_2.npy", "shard file is missing"]);
    refused(
        "shapes-too-small",
        3,
        &|d| {
            let mut shapes: Vec<Vec<usize>> = serde_json::from_slice(&std::fs::read(d.join(SHAPES_FILE)).unwrap()).unwrap();
            shapes[0][0] -= 1;
            std::fs::write(d.join(SHAPES_FILE), serde_json::to_vec(&shapes).unwrap()).unwrap();
        },
        &[SHAPES_FILE, "too many"],
    );
    let rewrite = |d: &Path, descr: &str, fortran: bool| {
        let bytes = std::fs::read(shard(d, 1)).unwrap();
        let header = tfconv::source::numpy::parse_npy_header(&bytes).unwrap();
        let mut out = npy_bytes(descr, &header.shape, &bytes[header.data_offset..]);
        if fortran {
            // Same header length: "'fortran_order': False" becomes "'fortran_order': True ".
            let at = out.windows(5).position(|w| w == b"False").expect("the header says False");
            out.splice(at..at + 5, b"True ".iter().copied());
        }
        std::fs::write(shard(d, 1), out).unwrap();
    };
    refused("big-endian", 13, &|d| rewrite(d, ">f4", false), &["params_1.npy", "big-endian float32 ('>f4')"]);
    refused("float64", 13, &|d| rewrite(d, "<f8", false), &["params_1.npy", "float64 ('<f8')"]);
    refused("fortran", 13, &|d| rewrite(d, "<f4", true), &["params_1.npy", "fortran_order is True"]);
}

/// A config.json that does not fit the arrays is refused by field.
#[test]
fn a_config_that_does_not_fit_the_arrays_is_refused_by_field() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy_golden("openai-gpt-swish", &tmp.path().join("ckpt"));
    let out = tmp.path().join("out");
    let run = |config: serde_json::Value| {
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        common::tfconv(&["convert", "--tf-checkpoint", dir.to_str().unwrap(), "--output", out.to_str().unwrap()])
    };
    let o = run(serde_json::json!({"n_head": 4, "n_ctx": 512}));
    assert_eq!(o.status.code(), Some(4), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("n_positions (n_ctx) 512 and n_embd 32 need model/pos_embd of shape [512, 32], but the checkpoint's is [10, 32]"), "{}", common::stderr(&o));
    let o = run(serde_json::json!({"n_head": 5}));
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("n_embd 32 must be a multiple of n_head 5"), "{}", common::stderr(&o));
    let o = run(serde_json::json!({"n_head": 4, "afn": "tanh"}));
    assert!(common::stderr(&o).contains("afn \"tanh\" is not supported (allowed: gelu, relu, swish)"), "{}", common::stderr(&o));
    // Without n_head, train.py's 12 do not divide 32: the message says where 12 came from.
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let o = common::tfconv(&["convert", "--tf-checkpoint", dir.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(common::stderr(&o).contains("n_embd 32 must be a multiple of n_head 12 (train.py's default; give n_head in a config file)"), "{}", common::stderr(&o));
    assert!(!out.exists());
}

#[test]
fn model_type_is_told_from_the_array_names() {
    for case in ["openai-gpt", "openai-gpt-swish"] {
        let vars = tfconv::convert::source_vars(source::open(&golden(case)).unwrap().as_ref());
        assert_eq!(tfconv_models::arch::detect_model_type(&vars), Ok("openai-gpt"), "{case}");
    }
}
