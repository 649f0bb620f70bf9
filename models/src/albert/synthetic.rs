//! Synthetic ALBERT checkpoints under the original names, in the variants released and seen in
//! the wild (TF-Hub's `module/` prefix, Keras' `layer_normalization_N` norms), and ALBERT's
//! golden cases.

use serde_json::json;

use super::{inner_group_scope, AlbertConfig, Head};
use crate::synthetic::{moment_slots, tf1_values, GoldenCase, Rng, Variable};

/// How a synthetic checkpoint spells its variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spelling {
    /// `module/` before every variable of the model (a TF-Hub module used in TF1).
    pub hub_module: bool,
    /// Norms named by Keras' global counter (`layer_normalization`, `layer_normalization_1`, …)
    /// instead of `LayerNorm` / `LayerNorm_1`.
    pub keras_norms: bool,
}

/// Original variable names and shapes, in creation order (so Keras' norm counter runs as the
/// original would).
pub fn albert_variables(cfg: &AlbertConfig, head: Head, spelling: Spelling) -> Vec<(String, Vec<usize>)> {
    let (v, e, h, i) = (cfg.vocab_size, cfg.embedding_size, cfg.hidden_size, cfg.intermediate_size);
    let module = if spelling.hub_module { "module/" } else { "" };
    let mut norms = 0;
    let mut norm = |released: &str| -> String {
        if !spelling.keras_norms {
            return released.to_string();
        }
        let name = match norms {
            0 => "layer_normalization".to_string(),
            k => format!("layer_normalization_{k}"),
        };
        norms += 1;
        name
    };
    let mut vars: Vec<(String, Vec<usize>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>| vars.push((format!("{module}{name}"), shape));
    add("bert/embeddings/word_embeddings".into(), vec![v, e]);
    add("bert/embeddings/token_type_embeddings".into(), vec![cfg.type_vocab_size, e]);
    add("bert/embeddings/position_embeddings".into(), vec![cfg.max_position_embeddings, e]);
    let n = norm("LayerNorm");
    add(format!("bert/embeddings/{n}/beta"), vec![e]);
    add(format!("bert/embeddings/{n}/gamma"), vec![e]);
    if e != h {
        add("bert/encoder/embedding_hidden_mapping_in/kernel".into(), vec![e, h]);
        add("bert/encoder/embedding_hidden_mapping_in/bias".into(), vec![h]);
    }
    let mut created = Vec::new();
    for layer in 0..cfg.num_hidden_layers {
        let g = cfg.original_group(layer);
        if created.contains(&g) {
            continue;
        }
        created.push(g);
        for j in 0..cfg.inner_group_num {
            let scope = inner_group_scope(g, j);
            for p in ["query", "key", "value"] {
                add(format!("{scope}/attention_1/self/{p}/kernel"), vec![h, h]);
                add(format!("{scope}/attention_1/self/{p}/bias"), vec![h]);
            }
            add(format!("{scope}/attention_1/output/dense/kernel"), vec![h, h]);
            add(format!("{scope}/attention_1/output/dense/bias"), vec![h]);
            let n = norm("LayerNorm");
            add(format!("{scope}/{n}/beta"), vec![h]);
            add(format!("{scope}/{n}/gamma"), vec![h]);
            add(format!("{scope}/ffn_1/intermediate/dense/kernel"), vec![h, i]);
            add(format!("{scope}/ffn_1/intermediate/dense/bias"), vec![i]);
            add(format!("{scope}/ffn_1/intermediate/output/dense/kernel"), vec![i, h]);
            add(format!("{scope}/ffn_1/intermediate/output/dense/bias"), vec![h]);
            let n = norm("LayerNorm_1");
            add(format!("{scope}/{n}/beta"), vec![h]);
            add(format!("{scope}/{n}/gamma"), vec![h]);
        }
    }
    add("bert/pooler/dense/kernel".into(), vec![h, h]);
    add("bert/pooler/dense/bias".into(), vec![h]);
    match head {
        Head::PreTraining => {
            add("cls/predictions/transform/dense/kernel".into(), vec![h, e]);
            add("cls/predictions/transform/dense/bias".into(), vec![e]);
            let n = norm("LayerNorm");
            add(format!("cls/predictions/transform/{n}/beta"), vec![e]);
            add(format!("cls/predictions/transform/{n}/gamma"), vec![e]);
            add("cls/predictions/output_bias".into(), vec![v]);
            add("cls/seq_relationship/output_weights".into(), vec![2, h]);
            add("cls/seq_relationship/output_bias".into(), vec![2]);
        }
        Head::SequenceClassification { num_labels } => {
            // run_classifier creates the output layer outside the (hub) module.
            vars.push(("output_weights".into(), vec![num_labels, h]));
            vars.push(("output_bias".into(), vec![num_labels]));
        }
        Head::Base => {}
    }
    vars
}

/// An ALBERT checkpoint; with `trainer_state` also the LAMB `adam_m`/`adam_v` slots and
/// `global_step` that released checkpoints carry.
pub fn checkpoint(cfg: &AlbertConfig, head: Head, spelling: Spelling, seed: u64, trainer_state: bool) -> Vec<Variable> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for (name, shape) in albert_variables(cfg, head, spelling) {
        let var = Variable::f32(name.clone(), shape.clone(), tf1_values(&mut rng, &name, &shape));
        if trainer_state {
            out.extend(moment_slots(&mut rng, &var, ["adam_m", "adam_v"]));
        }
        out.push(var);
    }
    if trainer_state {
        out.push(Variable::i64_scalar("global_step", 125_000));
    }
    out
}

/// A stand-in for `30k-clean.model`: tfconv copies the SentencePiece model as bytes, so its
/// content only has to be recognisably the file given.
pub fn tiny_spiece_model() -> Vec<u8> {
    b"tfconv golden: stand-in for a SentencePiece model (copied as bytes)\n".to_vec()
}

fn config(e: usize, h: usize, layers: usize, groups: usize, inner: usize, act: &str) -> serde_json::Value {
    json!({
        "attention_probs_dropout_prob": 0.0,
        "hidden_act": act,
        "hidden_dropout_prob": 0.0,
        "embedding_size": e,
        "hidden_size": h,
        "initializer_range": 0.02,
        "intermediate_size": 2 * h - 8,
        "max_position_embeddings": 20,
        "num_attention_heads": 4,
        "num_hidden_layers": layers,
        "num_hidden_groups": groups,
        "inner_group_num": inner,
        "down_scale_factor": 1,
        "type_vocab_size": 2,
        "vocab_size": 97
    })
}

/// ALBERT's golden cases: E ≠ H with two groups of two inner layers; E == H (no projection in
/// the checkpoint, relu); and a TF-Hub-prefixed classifier fine-tune with Keras-named norms.
pub fn golden_cases() -> Vec<GoldenCase> {
    let cases: [(&'static str, serde_json::Value, Head, Spelling, bool, u64); 3] = [
        ("albert", config(24, 48, 4, 2, 2, "gelu"), Head::PreTraining, Spelling::default(), true, 21),
        ("albert-shared", config(32, 32, 3, 1, 1, "relu"), Head::PreTraining, Spelling::default(), false, 22),
        (
            "albert-hub-classifier",
            config(16, 40, 2, 1, 1, "gelu"),
            Head::SequenceClassification { num_labels: 3 },
            Spelling { hub_module: true, keras_norms: true },
            true,
            23,
        ),
    ];
    cases
        .into_iter()
        .map(|(dir, config, head, spelling, trainer_state, seed)| {
            let cfg: AlbertConfig = serde_json::from_value(config.clone()).expect("the golden configs are AlbertConfigs");
            GoldenCase {
                dir,
                model_type: "albert",
                checkpoint: "model.ckpt-best",
                config_file: "albert_config.json",
                variables: checkpoint(&cfg, head, spelling, seed, trainer_state),
                config,
                files: vec![("30k-clean.model", tiny_spiece_model())],
                storage: crate::synthetic::Storage::TfBundle,
            }
        })
        .collect()
}
