//! Golden fixtures per architecture (golden/<case>/): a tiny checkpoint written by TensorFlow
//! with the original variable names, the original config and vocabulary, probe inputs, and the
//! outputs of the original model run in TensorFlow on that checkpoint.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;
use tfconv::source::DType;
use tfconv::tf_io::{self, HostTensor, SaveItem};
use tfconv_models::bert::{self, BertConfig, Head};
use tfconv_models::probe::{Outputs, Probes};

use crate::fixtures::Rng;

/// Seed of the probes stored with every golden case.
pub const PROBE_SEED: u64 = 7;

impl Rng {
    /// Uniform in [-a, a).
    fn uniform(&mut self, a: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
}

/// A tiny BERT, large enough that every weight matters: heads of width 12, asymmetric sizes.
pub fn tiny_bert_config() -> serde_json::Value {
    json!({
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 48,
        "initializer_range": 0.02,
        "intermediate_size": 80,
        "max_position_embeddings": 24,
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "type_vocab_size": 2,
        "vocab_size": 101
    })
}

/// A lower-cased WordPiece vocabulary of exactly `n` tokens in google-research/bert's layout.
pub fn tiny_vocab(n: usize) -> String {
    let mut tokens: Vec<String> = vec!["[PAD]".into()];
    tokens.extend((0..4).map(|i| format!("[unused{i}]")));
    tokens.extend(["[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from));
    let words = ["the", "of", "and", "a", "to", "in", "is", "was", "he", "for", "it", "with", "as", "his", "on", "be"];
    let mut i = 0;
    while tokens.len() < n {
        let w = words[i % words.len()];
        tokens.push(match i / words.len() {
            0 => w.to_string(),
            1 => format!("##{w}"),
            k => format!("{w}{k}"),
        });
        i += 1;
    }
    tokens.truncate(n);
    tokens.join("\n") + "\n"
}

/// Original variable names and shapes of a BERT checkpoint for `head`, in creation order.
pub fn bert_variables(cfg: &BertConfig, head: Head) -> Vec<(String, Vec<usize>)> {
    let (h, i, v, p, t) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings, cfg.type_vocab_size);
    let mut vars = vec![
        ("bert/embeddings/word_embeddings".to_string(), vec![v, h]),
        ("bert/embeddings/token_type_embeddings".into(), vec![t, h]),
        ("bert/embeddings/position_embeddings".into(), vec![p, h]),
        ("bert/embeddings/LayerNorm/beta".into(), vec![h]),
        ("bert/embeddings/LayerNorm/gamma".into(), vec![h]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let pre = format!("bert/encoder/layer_{l}");
        for proj in ["query", "key", "value"] {
            vars.push((format!("{pre}/attention/self/{proj}/kernel"), vec![h, h]));
            vars.push((format!("{pre}/attention/self/{proj}/bias"), vec![h]));
        }
        vars.push((format!("{pre}/attention/output/dense/kernel"), vec![h, h]));
        vars.push((format!("{pre}/attention/output/dense/bias"), vec![h]));
        vars.push((format!("{pre}/attention/output/LayerNorm/beta"), vec![h]));
        vars.push((format!("{pre}/attention/output/LayerNorm/gamma"), vec![h]));
        vars.push((format!("{pre}/intermediate/dense/kernel"), vec![h, i]));
        vars.push((format!("{pre}/intermediate/dense/bias"), vec![i]));
        vars.push((format!("{pre}/output/dense/kernel"), vec![i, h]));
        vars.push((format!("{pre}/output/dense/bias"), vec![h]));
        vars.push((format!("{pre}/output/LayerNorm/beta"), vec![h]));
        vars.push((format!("{pre}/output/LayerNorm/gamma"), vec![h]));
    }
    // run_squad keeps the pretrained pooler in its graph even though it never uses it.
    vars.push(("bert/pooler/dense/kernel".into(), vec![h, h]));
    vars.push(("bert/pooler/dense/bias".into(), vec![h]));
    match head {
        Head::PreTraining => {
            vars.push(("cls/predictions/transform/dense/kernel".into(), vec![h, h]));
            vars.push(("cls/predictions/transform/dense/bias".into(), vec![h]));
            vars.push(("cls/predictions/transform/LayerNorm/beta".into(), vec![h]));
            vars.push(("cls/predictions/transform/LayerNorm/gamma".into(), vec![h]));
            vars.push(("cls/predictions/output_bias".into(), vec![v]));
            vars.push(("cls/seq_relationship/output_weights".into(), vec![2, h]));
            vars.push(("cls/seq_relationship/output_bias".into(), vec![2]));
        }
        Head::SequenceClassification { num_labels } => {
            vars.push(("output_weights".into(), vec![num_labels, h]));
            vars.push(("output_bias".into(), vec![num_labels]));
        }
        Head::QuestionAnswering => {
            vars.push(("cls/squad/output_weights".into(), vec![2, h]));
            vars.push(("cls/squad/output_bias".into(), vec![2]));
        }
        Head::Base => {}
    }
    vars
}

/// Values with a realistic spread: LayerNorm gammas near 1, betas and biases small but nonzero,
/// kernels scaled by fan-in so activations neither vanish nor saturate.
fn init_values(rng: &mut Rng, name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let last = name.rsplit('/').next().unwrap_or("");
    (0..n)
        .map(|_| match last {
            "gamma" => 1.0 + rng.uniform(0.3),
            "beta" | "bias" | "output_bias" => rng.uniform(0.1),
            "kernel" => rng.uniform(1.7 / (shape[0] as f32).sqrt()),
            "output_weights" => rng.uniform(1.7 / (shape[1] as f32).sqrt()),
            _ => rng.uniform(1.0), // embeddings
        })
        .collect()
}

/// Writes a BERT checkpoint with TF's SaveV2 under the original names; with `trainer_state`
/// also the AdamWeightDecayOptimizer slots and global_step that released checkpoints carry.
pub fn write_bert_checkpoint(prefix: &Path, cfg: &BertConfig, head: Head, seed: u64, trainer_state: bool) -> Result<()> {
    let mut rng = Rng::new(seed);
    let mut tensors: Vec<(String, HostTensor)> = Vec::new();
    for (name, shape) in bert_variables(cfg, head) {
        let values = init_values(&mut rng, &name, &shape);
        if trainer_state {
            let m: Vec<f32> = values.iter().map(|_| rng.uniform(1e-3)).collect();
            let v: Vec<f32> = values.iter().map(|_| rng.uniform(1e-6).abs()).collect();
            tensors.push((format!("{name}/adam_m"), HostTensor::f32(shape.clone(), &m)));
            tensors.push((format!("{name}/adam_v"), HostTensor::f32(shape.clone(), &v)));
        }
        tensors.push((name, HostTensor::f32(shape, &values)));
    }
    if trainer_state {
        tensors.push(("global_step".into(), HostTensor::new(DType::I64, vec![], 1_000_000i64.to_le_bytes().to_vec())));
    }
    let items: Vec<SaveItem> = tensors.iter().map(|(n, t)| SaveItem { name: n, slice_spec: "", tensor: t }).collect();
    tf_io::save_v2(prefix.to_str().context("non-UTF-8 path")?, &items)?;
    Ok(())
}

/// Runs the TF reference for a BERT checkpoint.
pub fn bert_reference(prefix: &Path, cfg: &BertConfig, head: Head, probes: &Probes) -> Result<Outputs> {
    let ckpt = tfconv::source::open(prefix)?;
    let dtypes: HashMap<String, tensorflow::DataType> =
        ckpt.tensors().iter().map(|t| (t.name.clone(), tf_io::tf_dtype(t.dtype))).collect();
    bert::reference::forward(prefix.to_str().context("non-UTF-8 path")?, &dtypes, cfg, head, probes)
}

/// Stores named outputs as a safetensors file (f32), in forward order recorded in the metadata.
pub fn write_outputs(path: &Path, outputs: &Outputs) -> Result<()> {
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = outputs
        .0
        .iter()
        .map(|(n, o)| (n.clone(), o.values.iter().flat_map(|v| v.to_le_bytes()).collect(), o.shape.clone()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, b, s)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    let order = outputs.names().join(",");
    let meta: HashMap<String, String> = [("order".to_string(), order)].into();
    safetensors::serialize_to_file(views, Some(meta), path)?;
    Ok(())
}

struct BertCase {
    dir: &'static str,
    head: Head,
    trainer_state: bool,
    seed: u64,
}

const BERT_CASES: &[BertCase] = &[
    BertCase { dir: "bert", head: Head::PreTraining, trainer_state: true, seed: 1 },
    BertCase { dir: "bert-classifier", head: Head::SequenceClassification { num_labels: 3 }, trainer_state: false, seed: 2 },
    BertCase { dir: "bert-squad", head: Head::QuestionAnswering, trainer_state: false, seed: 3 },
    BertCase { dir: "bert-encoder", head: Head::Base, trainer_state: false, seed: 4 },
];

/// The golden case folders, for tasks that walk them.
pub const CASES: &[&str] = &["bert", "bert-classifier", "bert-squad", "bert-encoder"];

pub fn write_all(root: &Path) -> Result<()> {
    let config = tiny_bert_config();
    let cfg: BertConfig = serde_json::from_value(config.clone())?;
    for case in BERT_CASES {
        let dir = root.join(case.dir);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let prefix = dir.join("bert_model.ckpt");
        write_bert_checkpoint(&prefix, &cfg, case.head, case.seed, case.trainer_state)?;
        fs::write(dir.join("bert_config.json"), serde_json::to_string_pretty(&config)? + "\n")?;
        fs::write(dir.join("vocab.txt"), tiny_vocab(cfg.vocab_size))?;
        let probes = Probes::random(PROBE_SEED, 3, 16, cfg.vocab_size, cfg.type_vocab_size);
        fs::write(dir.join("probes.json"), serde_json::to_string(&probes)? + "\n")?;
        let outputs = bert_reference(&prefix, &cfg, case.head, &probes)?;
        write_outputs(&dir.join("expected.safetensors"), &outputs)?;
        println!("golden/{}: {} outputs from TensorFlow {}", case.dir, outputs.0.len(), tfconv::tf_runtime::version()?);
    }
    Ok(())
}
