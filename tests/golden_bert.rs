//! The golden BERT checkpoints (written by TensorFlow, with TF's outputs stored beside them)
//! converted and run in candle, compared with TensorFlow's outputs — no TensorFlow needed.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tfconv::convert::{convert, ConvertOptions};
use tfconv::source::{self, DType};
use tfconv::verify::{self, compare, Tolerance};
use tfconv_models::bert::Head;
use tfconv_models::probe::{Outputs, Probes};

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(case)
}

fn options(case: &str, output: PathBuf, dtype: DType) -> ConvertOptions {
    ConvertOptions { dtype, ..ConvertOptions::new(golden(case).join("bert_model.ckpt"), output) }
}

fn expected_outputs(case: &str) -> Outputs {
    let bytes = std::fs::read(golden(case).join("expected.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let order = meta.metadata().as_ref().unwrap()["order"].clone();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = Outputs::default();
    for name in order.split(',') {
        let t = st.tensor(name).unwrap();
        let values = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        out.push(name, t.shape().to_vec(), values);
    }
    out
}

fn probes(case: &str) -> Probes {
    serde_json::from_slice(&std::fs::read(golden(case).join("probes.json")).unwrap()).unwrap()
}

/// The keys `save_pretrained` writes for each class (tied decoder weight and bias omitted, no
/// non-persistent buffers), spelled out independently of the mapping table.
fn hf_keys(head: Head, layers: usize) -> BTreeSet<String> {
    let pre = if head == Head::Base { "" } else { "bert." };
    let mut keys: Vec<String> = ["word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"]
        .iter()
        .map(|k| format!("{pre}embeddings.{k}"))
        .collect();
    for l in 0..layers {
        for m in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"] {
            keys.push(format!("{pre}encoder.layer.{l}.{m}.weight"));
            keys.push(format!("{pre}encoder.layer.{l}.{m}.bias"));
        }
    }
    if head != Head::QuestionAnswering {
        keys.push(format!("{pre}pooler.dense.weight"));
        keys.push(format!("{pre}pooler.dense.bias"));
    }
    let extra: &[&str] = match head {
        Head::PreTraining => &[
            "cls.predictions.bias", "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
            "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
            "cls.seq_relationship.weight", "cls.seq_relationship.bias",
        ],
        Head::SequenceClassification { .. } => &["classifier.weight", "classifier.bias"],
        Head::QuestionAnswering => &["qa_outputs.weight", "qa_outputs.bias"],
        Head::Base => &[],
    };
    keys.extend(extra.iter().map(|k| k.to_string()));
    keys.into_iter().collect()
}

const CASES: [(&str, Head); 5] = [
    ("bert", Head::PreTraining),
    ("bert-classifier", Head::SequenceClassification { num_labels: 3 }),
    ("bert-squad", Head::QuestionAnswering),
    ("bert-encoder", Head::Base),
    // TF Model Garden v2.3.0 object-based checkpoint: encoder only.
    ("bert-tf2", Head::Base),
];

/// The stored probes are what BERT's probe policy draws from their seed (`PROBE_SEED` in
/// xtask/src/golden.rs), through the same call verify makes: a change to the policy or the
/// generator shows here rather than as outputs that no longer match.
#[test]
fn golden_probes_are_berts_probes_for_their_seed() {
    for (case, _) in CASES {
        let stored = probes(case);
        assert_eq!(stored.seed, 7, "{case}");
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(golden(case).join("bert_config.json")).unwrap()).unwrap();
        let arch = tfconv_models::arch::from_original("bert", &config, &[]).unwrap();
        assert_eq!(arch.probes(stored.seed, 3, None), stored, "{case}");
        assert_eq!(stored.to_string(), "input_ids [3, 24], token_type_ids [3, 24], attention_mask [3, 24] (seed 7)");
    }
}

#[test]
fn golden_checkpoints_reproduce_tensorflow_outputs_in_candle() {
    for (case, head) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let done = convert(&options(case, dir.path().join("out"), DType::F32)).unwrap();
        assert_eq!(done.arch.class_name(), head.class_name(), "{case}");
        let files = verify::weight_files(&done.folder).unwrap();
        let candle = verify::candle_outputs(&files, done.arch.as_ref(), &probes(case).inputs).unwrap();
        let expected = expected_outputs(case);
        assert_eq!(candle.names(), expected.names(), "{case}: output names and order");
        for report in compare::compare(&candle, &expected, Tolerance::for_dtype(DType::F32)) {
            eprintln!("{case} {:<12} max|Δ| {:.3e} rel {:.3e}", report.name, report.max_abs_error, report.max_rel_error);
            assert!(report.pass, "{case}: {report:?}");
        }
    }
}

#[test]
fn output_keys_are_what_save_pretrained_writes_and_values_are_exact_transforms() {
    for (case, head) in CASES {
        let dir = tempfile::tempdir().unwrap();
        let done = convert(&options(case, dir.path().join("out"), DType::F32)).unwrap();
        let bytes = std::fs::read(done.folder.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let written: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
        assert_eq!(written, hf_keys(head, 3), "{case}");
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap().get("format").map(String::as_str), Some("pt"));

        // Every tensor equals its source, transposed exactly when the source is a dense kernel.
        // A kernel of any rank (TF2 einsum kernels [H,N,Dh], [N,Dh,H]) is read row-major as the
        // [in, out] matrix whose transpose the [out, in] target is.
        let ckpt = source::open(&golden(case).join("bert_model.ckpt")).unwrap();
        for m in &done.plan.mappings {
            let src = ckpt.read(&m.source).unwrap();
            let variable = m.source.trim_end_matches("/.ATTRIBUTES/VARIABLE_VALUE");
            let expected: Cow<[u8]> = if variable.ends_with("/kernel") {
                let (rows, cols) = (m.shape[1], m.shape[0]);
                let mut out = vec![0u8; src.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        out[(c * rows + r) * 4..][..4].copy_from_slice(&src[(r * cols + c) * 4..][..4]);
                    }
                }
                Cow::Owned(out)
            } else {
                src
            };
            let t = st.tensor(&m.target).unwrap();
            assert!(t.data() == expected.as_ref(), "{case}: {} is not the exact transform of {}", m.target, m.source);
        }
    }
}

#[test]
fn tf2_checkpoint_is_detected_skips_trainer_state_and_names_model_garden_gelu() {
    let dir = tempfile::tempdir().unwrap();
    let done = convert(&options("bert-tf2", dir.path().join("out"), DType::F32)).unwrap();
    assert_eq!(done.arch.model_type(), "bert", "detected without --model-type");
    let skipped: BTreeSet<&str> = done.plan.skipped.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "_CHECKPOINTABLE_OBJECT_GRAPH",
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE",
        "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE",
        "model/layer_with_weights-0/embeddings/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE",
        "model/layer_with_weights-0/embeddings/.OPTIMIZER_SLOT/optimizer/v/.ATTRIBUTES/VARIABLE_VALUE",
    ] {
        assert!(skipped.contains(name), "{name} not skipped: {skipped:?}");
    }
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertModel");
    // Model Garden's "gelu" is the tanh approximation; HF's "gelu" would be erf.
    assert_eq!(config["hidden_act"], "gelu_new");
}

#[test]
fn config_and_tokenizer_files_load_as_hf_expects() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options("bert-classifier", dir.path().join("out"), DType::F32);
    opts.finetuning_task = Some("mnli".into());
    let done = convert(&opts).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "bert");
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["layer_norm_eps"], 1e-12);
    assert_eq!(config["hidden_act"], "gelu");
    assert_eq!(config["dtype"], "float32");
    assert_eq!(config["id2label"].as_object().unwrap().len(), 3);
    assert_eq!(config["finetuning_task"], "mnli");
    let tok: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tok["do_lower_case"], true, "the golden vocabulary is lower-cased");
    assert_eq!(std::fs::read(done.folder.join("vocab.txt")).unwrap(), std::fs::read(golden("bert-classifier").join("vocab.txt")).unwrap());
}

#[test]
fn sharding_and_half_precision_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options("bert", dir.path().join("sharded"), DType::BF16);
    opts.max_shard_size = 60_000;
    let done = convert(&opts).unwrap();
    let files = verify::weight_files(&done.folder).unwrap();
    assert!(files.len() > 1, "a 60 kB limit must shard the ~130 kB bf16 model");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(done.folder.join("model.safetensors.index.json")).unwrap()).unwrap();
    assert_eq!(index["weight_map"].as_object().unwrap().len(), done.plan.mappings.len());
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["dtype"], "bfloat16");
    let candle = verify::candle_outputs(&files, done.arch.as_ref(), &probes("bert").inputs).unwrap();
    for report in compare::compare(&candle, &expected_outputs("bert"), Tolerance::rounded_on_one_side(DType::BF16)) {
        eprintln!("bf16 {:<12} rel {:.3e}", report.name, report.max_rel_error);
        assert!(report.pass, "{report:?}");
    }
}
