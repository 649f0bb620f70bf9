//! Synthetic XLNet checkpoints under the original names (pretraining, and run_classifier
//! fine-tunes with regression or classification heads), and XLNet's golden cases.

use serde_json::json;

use super::{Head, XlnetConfig, T};
use crate::synthetic::{init_values, moment_slots, GoldenCase, Rng, Variable};

/// What the checkpoint holds besides the transformer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    pub head: Head,
    /// `mask_emb` (pretraining checkpoints; fine-tunes drop it).
    pub mask_emb: bool,
    /// `r_s_bias` and `seg_embed` (everything trained with segment ids).
    pub segments: bool,
    /// Adam's slots and `global_step`.
    pub trainer_state: bool,
}

impl Contents {
    pub fn pretraining() -> Contents {
        Contents { head: Head::LmHead, mask_emb: true, segments: true, trainer_state: true }
    }
}

/// Original variable names and shapes, in creation order.
pub fn xlnet_variables(cfg: &XlnetConfig, contents: &Contents) -> Vec<(String, Vec<usize>)> {
    let (l, d, n, dh) = (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_head);
    let bias_shape = if cfg.untie_r { vec![l, n, dh] } else { vec![n, dh] };
    let mut v = vec![
        (format!("{T}/r_w_bias"), bias_shape.clone()),
        (format!("{T}/r_r_bias"), bias_shape.clone()),
        (format!("{T}/word_embedding/lookup_table"), vec![cfg.n_token, d]),
    ];
    if contents.mask_emb {
        v.push((format!("{T}/mask_emb/mask_emb"), vec![1, 1, d]));
    }
    if contents.segments {
        v.push((format!("{T}/r_s_bias"), bias_shape));
        v.push((format!("{T}/seg_embed"), vec![l, 2, n, dh]));
    }
    for i in 0..l {
        let a = format!("{T}/layer_{i}/rel_attn");
        for k in ["k", "v", "r", "q", "o"] {
            v.push((format!("{a}/{k}/kernel"), vec![d, n, dh]));
        }
        v.push((format!("{a}/LayerNorm/beta"), vec![d]));
        v.push((format!("{a}/LayerNorm/gamma"), vec![d]));
        let f = format!("{T}/layer_{i}/ff");
        v.push((format!("{f}/layer_1/kernel"), vec![d, cfg.d_inner]));
        v.push((format!("{f}/layer_1/bias"), vec![cfg.d_inner]));
        v.push((format!("{f}/layer_2/kernel"), vec![cfg.d_inner, d]));
        v.push((format!("{f}/layer_2/bias"), vec![d]));
        v.push((format!("{f}/LayerNorm/beta"), vec![d]));
        v.push((format!("{f}/LayerNorm/gamma"), vec![d]));
    }
    match &contents.head {
        Head::LmHead => v.push(("model/lm_loss/bias".into(), vec![cfg.n_token])),
        head @ Head::SequenceClassification { num_labels, .. } => {
            v.push(("model/sequnece_summary/summary/kernel".into(), vec![d, d]));
            v.push(("model/sequnece_summary/summary/bias".into(), vec![d]));
            let scope = head.logit_scope().expect("a task head");
            v.push((format!("{scope}/kernel"), vec![d, *num_labels]));
            v.push((format!("{scope}/bias"), vec![*num_labels]));
        }
    }
    v
}

/// An XLNet checkpoint; with trainer state also `tf.train.AdamOptimizer`'s `Adam`/`Adam_1` slots
/// and `global_step`.
pub fn checkpoint(cfg: &XlnetConfig, contents: &Contents, seed: u64) -> Vec<Variable> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for (name, shape) in xlnet_variables(cfg, contents) {
        let last = name.rsplit('/').next().unwrap_or("");
        let numel = shape.iter().product();
        let values = match last {
            // The relative biases and segment embeddings are added to, or dotted with, queries.
            "r_w_bias" | "r_r_bias" | "r_s_bias" => init_values(&mut rng, "bias", numel, 1).iter().map(|x| x * 5.0).collect(),
            "seg_embed" => init_values(&mut rng, "embedding", numel, 1).iter().map(|x| x * 0.5).collect(),
            "mask_emb" => init_values(&mut rng, "embedding", numel, 1),
            _ => init_values(&mut rng, last, numel, shape[0]),
        };
        let var = Variable::f32(name, shape, values);
        if contents.trainer_state {
            out.extend(moment_slots(&mut rng, &var, ["Adam", "Adam_1"]));
        }
        out.push(var);
    }
    if contents.trainer_state {
        out.push(Variable::i64_scalar("global_step", 500_000));
    }
    out
}

/// A stand-in for `spiece.model`, copied as bytes.
pub fn tiny_spiece_model() -> Vec<u8> {
    b"tfconv golden: stand-in for XLNet's SentencePiece model (copied as bytes)\n".to_vec()
}

pub fn config_json(cfg: &XlnetConfig) -> serde_json::Value {
    json!({
        "d_head": cfg.d_head, "d_inner": cfg.d_inner, "d_model": cfg.d_model, "ff_activation": cfg.ff_activation,
        "n_head": cfg.n_head, "n_layer": cfg.n_layer, "n_token": cfg.n_token, "untie_r": cfg.untie_r
    })
}

/// XLNet's golden cases: a pretraining checkpoint with untied biases; an sts-b regression
/// fine-tune with shared (tied) biases and relu; an mnli classification fine-tune.
pub fn golden_cases() -> Vec<GoldenCase> {
    let cfg = |untie_r: bool, act: &str| XlnetConfig {
        n_token: 64, d_model: 32, n_layer: 2, n_head: 4, d_head: 8, d_inner: 48, ff_activation: act.into(), untie_r,
    };
    let fine_tune = |task: &str, regression: bool, num_labels: usize| Contents {
        head: Head::SequenceClassification { task: task.into(), regression, num_labels },
        mask_emb: false,
        segments: true,
        trainer_state: false,
    };
    let cases = [
        ("xlnet", cfg(true, "gelu"), Contents::pretraining(), 31),
        ("xlnet-tied-sts-b", cfg(false, "relu"), fine_tune("sts-b", true, 1), 32),
        ("xlnet-mnli", cfg(true, "gelu"), fine_tune("mnli", false, 3), 33),
    ];
    cases
        .into_iter()
        .map(|(dir, cfg, contents, seed)| GoldenCase {
            dir,
            model_type: "xlnet",
            checkpoint: "xlnet_model.ckpt",
            config_file: Some("xlnet_config.json"),
            config: config_json(&cfg),
            files: vec![("spiece.model", tiny_spiece_model())],
            contents: crate::synthetic::Contents::TfBundle(checkpoint(&cfg, &contents, seed)),
        })
        .collect()
}
