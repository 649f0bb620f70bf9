//! The golden ALBERT checkpoints (written by TensorFlow, TF's outputs stored beside them)
//! converted and run in candle against those outputs, no TensorFlow needed; the keys and values
//! written checked against HF's layout spelled out independently of the mapping table; and the
//! configs transformers cannot run as the original does refused before anything is written.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tfconv::convert::{convert, ConvertOptions};
use tfconv::source::{self, DType};
use tfconv::verify::{self, compare, Tolerance};
use tfconv_models::albert::{AlbertConfig, Head};
use tfconv_models::arch;
use tfconv_models::probe::{Outputs, Probes};

const CASES: [&str; 3] = ["albert", "albert-shared", "albert-hub-classifier"];

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(case)
}

fn checkpoint(case: &str) -> PathBuf {
    golden(case).join("model.ckpt-best")
}

fn config(case: &str) -> AlbertConfig {
    serde_json::from_slice(&std::fs::read(golden(case).join("albert_config.json")).unwrap()).unwrap()
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

/// The keys `save_pretrained` writes for each ALBERT class (tied decoder omitted), spelled out
/// from HF's module tree rather than from tfconv's table.
fn hf_keys(cfg: &AlbertConfig, head: Head) -> BTreeSet<String> {
    let pre = if head == Head::Base { "" } else { "albert." };
    let mut keys: Vec<String> = ["word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"]
        .iter()
        .map(|k| format!("{pre}embeddings.{k}"))
        .collect();
    keys.push(format!("{pre}encoder.embedding_hidden_mapping_in.weight"));
    keys.push(format!("{pre}encoder.embedding_hidden_mapping_in.bias"));
    for g in 0..cfg.num_hidden_groups {
        for j in 0..cfg.inner_group_num {
            for m in ["full_layer_layer_norm", "attention.query", "attention.key", "attention.value", "attention.dense", "attention.LayerNorm", "ffn", "ffn_output"] {
                for p in ["weight", "bias"] {
                    keys.push(format!("{pre}encoder.albert_layer_groups.{g}.albert_layers.{j}.{m}.{p}"));
                }
            }
        }
    }
    keys.push(format!("{pre}pooler.weight"));
    keys.push(format!("{pre}pooler.bias"));
    let extra: &[&str] = match head {
        Head::PreTraining => &[
            "predictions.bias", "predictions.LayerNorm.weight", "predictions.LayerNorm.bias", "predictions.dense.weight",
            "predictions.dense.bias", "sop_classifier.classifier.weight", "sop_classifier.classifier.bias",
        ],
        Head::SequenceClassification { .. } => &["classifier.weight", "classifier.bias"],
        Head::Base => &[],
    };
    keys.extend(extra.iter().map(|k| k.to_string()));
    keys.into_iter().collect()
}

#[test]
fn golden_probes_are_the_architectures_probes_for_their_seed() {
    for case in CASES {
        let ckpt = source::open(&checkpoint(case)).unwrap();
        let vars = tfconv::convert::source_vars(ckpt.as_ref());
        assert_eq!(arch::detect_model_type(&vars), Ok("albert"), "{case}");
        let original: serde_json::Value = serde_json::from_slice(&std::fs::read(golden(case).join("albert_config.json")).unwrap()).unwrap();
        let model = arch::from_original("albert", &original, &vars).unwrap();
        let stored: Probes = serde_json::from_slice(&std::fs::read(golden(case).join("probes.json")).unwrap()).unwrap();
        assert_eq!(stored, model.probes(7, 3, None), "{case}");
    }
}

#[test]
fn golden_checkpoints_reproduce_tensorflow_outputs_in_candle() {
    for case in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(checkpoint(case), tmp.path().join("out"))).unwrap();
        let probes: Probes = serde_json::from_slice(&std::fs::read(golden(case).join("probes.json")).unwrap()).unwrap();
        let files = verify::weight_files(&done.folder).unwrap();
        let got = verify::candle_outputs(&files, done.arch.as_ref(), &probes.inputs).unwrap();
        let expected = expected_outputs(case);
        assert_eq!(got.names(), expected.names(), "{case}");
        for report in compare::compare(&got, &expected, Tolerance::for_dtype(DType::F32)) {
            eprintln!("{case} {:<12} max|Δ| {:.3e} rel {:.3e}", report.name, report.max_abs_error, report.max_rel_error);
            assert!(report.pass, "{case}: {report:?}");
        }
    }
}

#[test]
fn output_keys_are_what_save_pretrained_writes_and_values_are_exact_transforms() {
    for case in CASES {
        let cfg = config(case);
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(checkpoint(case), tmp.path().join("out"))).unwrap();
        let head = match done.arch.class_name() {
            "AlbertForPreTraining" => Head::PreTraining,
            "AlbertForSequenceClassification" => Head::SequenceClassification { num_labels: 3 },
            other => panic!("{case}: unexpected class {other}"),
        };
        let bytes = std::fs::read(done.folder.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let written: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
        assert_eq!(written, hf_keys(&cfg, head), "{case}");
        let ckpt = source::open(&checkpoint(case)).unwrap();
        let f32s = |b: &[u8]| -> Vec<f32> { b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect() };
        for m in &done.plan.mappings {
            let src = f32s(&ckpt.read(&m.source).unwrap());
            let out = f32s(st.tensor(&m.target).unwrap().data());
            let want = match m.source.rsplit('/').next().unwrap() {
                // Kernels are [in, out] in TF, weights [out, in] in torch; nothing else moves.
                "kernel" => {
                    let (rows, cols) = (m.shape[1], m.shape[0]);
                    (0..rows * cols).map(|k| src[(k % rows) * cols + k / rows]).collect()
                }
                _ => src,
            };
            assert!(out == want, "{case}: {} is not the exact transform of {}", m.target, m.source);
        }
        // E == H: no projection in the checkpoint, the identity and a zero bias in the folder.
        let projection = f32s(st.tensor("albert.encoder.embedding_hidden_mapping_in.weight").unwrap().data());
        let bias = f32s(st.tensor("albert.encoder.embedding_hidden_mapping_in.bias").unwrap().data());
        if cfg.embedding_size == cfg.hidden_size {
            let h = cfg.hidden_size;
            assert!(projection.iter().enumerate().all(|(k, &v)| v == if k / h == k % h { 1.0 } else { 0.0 }), "{case}: not the identity");
            assert!(bias.iter().all(|&b| b == 0.0), "{case}");
            assert_eq!(done.plan.synthesized.len(), 2, "{case}");
        } else {
            assert!(done.plan.synthesized.is_empty(), "{case}");
        }
    }
}

#[test]
fn config_and_tokenizer_files_say_what_the_original_computes() {
    for (case, act) in [("albert", "gelu_new"), ("albert-shared", "relu"), ("albert-hub-classifier", "gelu_new")] {
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(checkpoint(case), tmp.path().join("out"))).unwrap();
        let written: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("config.json")).unwrap()).unwrap();
        assert_eq!(written["model_type"], "albert", "{case}");
        assert_eq!(written["hidden_act"], act, "{case}: the original's gelu is the tanh approximation");
        assert_eq!(written["architectures"][0], done.arch.class_name(), "{case}");
        let original = serde_json::to_value(config(case)).unwrap();
        for key in ["embedding_size", "num_hidden_groups", "inner_group_num", "num_hidden_layers", "hidden_size"] {
            assert_eq!(written[key], original[key], "{case}: {key}");
        }
        assert_eq!(written["layer_norm_eps"], 1e-12);
        assert_eq!(
            std::fs::read(done.folder.join("spiece.model")).unwrap(),
            std::fs::read(golden(case).join("30k-clean.model")).unwrap(),
            "{case}: the SentencePiece model is copied as spiece.model"
        );
        let tokenizer: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("tokenizer_config.json")).unwrap()).unwrap();
        assert_eq!(tokenizer["tokenizer_class"], "AlbertTokenizer");
    }
}

/// A config the original runs but transformers cannot (or runs differently) is refused before
/// any output exists, with the reason.
#[test]
fn configs_transformers_cannot_run_are_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let refused = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| -> String {
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        let prefix = common::copy_golden("albert", dir.path());
        let path = dir.path().join("albert_config.json");
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(c.as_object_mut().unwrap());
        std::fs::write(&path, serde_json::to_vec(&c).unwrap()).unwrap();
        let out = dir.path().join("out");
        let o = common::tfconv(&["convert", "--tf-checkpoint", prefix.to_str().unwrap(), "--output", out.to_str().unwrap()]);
        assert!(!o.status.success());
        assert!(!out.exists(), "nothing may be written");
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".out")));
        common::stderr(&o)
    };
    // golden/albert: L = 4, G = 2, J = 2. J = 3 > L/G = 2.
    let e = refused(&|c| {
        c.insert("inner_group_num".into(), 3.into());
    });
    assert!(e.contains("inner_group_num 3 > num_hidden_layers / num_hidden_groups = 4/2") && e.contains("IndexError"), "{e}");
    // L = G = 22: the two float roundings of ℓ·G/L disagree at layer 15.
    let e = refused(&|c| {
        c.insert("num_hidden_layers".into(), 22.into());
        c.insert("num_hidden_groups".into(), 22.into());
        c.insert("inner_group_num".into(), 1.into());
    });
    assert!(e.contains("the original runs layer 15 in group 14 but transformers runs it in group 15"), "{e}");
    // More groups than layers: transformers' group size int(L/G) is 0.
    let e = refused(&|c| {
        c.insert("num_hidden_groups".into(), 5.into());
        c.insert("inner_group_num".into(), 1.into());
    });
    assert!(e.contains("inner_group_num 1 > num_hidden_layers / num_hidden_groups = 4/5"), "{e}");
    let e = refused(&|c| {
        c.insert("inner_group_num".into(), 0.into());
    });
    assert!(e.contains("inner_group_num must be a positive integer, got 0"), "{e}");
    let e = refused(&|c| {
        c.insert("hidden_act".into(), "gelu_new".into());
    });
    assert!(e.contains("hidden_act \"gelu_new\" is not supported (allowed: gelu, relu)"), "{e}");
}

/// The variants a checkpoint may come in are all read by their own names: the TF-Hub prefix
/// and Keras' norm names (golden/albert-hub-classifier), and variable names that fit no model
/// type get an error listing a few.
#[test]
fn hub_prefix_and_keras_norm_names_are_mapped_and_strangers_refused() {
    let ckpt = source::open(&checkpoint("albert-hub-classifier")).unwrap();
    let vars = tfconv::convert::source_vars(ckpt.as_ref());
    assert!(vars.iter().any(|v| v.name == "module/bert/encoder/transformer/group_0/inner_group_0/layer_normalization_1/gamma"));
    let done = convert(&ConvertOptions::new(checkpoint("albert-hub-classifier"), tempfile::tempdir().unwrap().path().join("o"))).unwrap();
    let source_of = |target: &str| done.plan.mappings.iter().find(|m| m.target == target).map(|m| m.source.clone()).unwrap();
    assert_eq!(
        source_of("albert.encoder.albert_layer_groups.0.albert_layers.0.attention.LayerNorm.weight"),
        "module/bert/encoder/transformer/group_0/inner_group_0/layer_normalization_1/gamma"
    );
    assert_eq!(
        source_of("albert.encoder.albert_layer_groups.0.albert_layers.0.full_layer_layer_norm.weight"),
        "module/bert/encoder/transformer/group_0/inner_group_0/layer_normalization_2/gamma"
    );
    assert_eq!(source_of("classifier.weight"), "output_weights");
    let strangers = vec![tfconv_models::plan::SourceVar { name: "encoder/transformer/foo".into(), shape: vec![2] }];
    assert!(arch::detect_model_type(&strangers).unwrap_err().contains("could not tell the model type"));
}
