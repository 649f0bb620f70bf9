//! Synthetic Transformer-XL checkpoints under the original names, created by the rules of
//! `tf/model.py` (which projections exist depends on `div_val`, `proj_same_dim` and `tie_projs`),
//! and Transformer-XL's golden cases.

use serde_json::json;

use super::{TxlConfig, T};
use crate::synthetic::{init_values, moment_slots, GoldenCase, Rng, Variable};

/// A model as the training script's flags describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub cfg: TxlConfig,
    /// Whether a cluster whose width is d_model still gets a projection (lm1b: false).
    pub proj_same_dim: bool,
    /// Adam's slots and `global_step`.
    pub trainer_state: bool,
}

/// Original variable names, shapes and fan-ins, in creation order.
pub fn variables(spec: &Spec) -> Vec<(String, Vec<usize>, usize)> {
    let cfg = &spec.cfg;
    let (l, d, n, dh) = (cfg.n_layer, cfg.d_model, cfg.n_head, cfg.d_head);
    let bias_shape = if cfg.untie_r { vec![l, n, dh] } else { vec![n, dh] };
    let mut v = vec![(format!("{T}/r_w_bias"), bias_shape.clone(), 1), (format!("{T}/r_r_bias"), bias_shape, 1)];
    let ends = cfg.cutoff_ends();
    let e = format!("{T}/adaptive_embed");
    if cfg.div_val == 1 {
        v.push((format!("{e}/lookup_table"), vec![cfg.vocab_size, cfg.d_embed], 1));
        if cfg.d_embed != d {
            v.push((format!("{e}/proj_W"), vec![cfg.d_embed, d], cfg.d_embed));
        }
    } else {
        for i in 0..cfg.n_clusters() {
            let di = cfg.cluster_dim(i);
            v.push((format!("{e}/cutoff_{i}/lookup_table"), vec![ends[i + 1] - ends[i], di], 1));
            if di != d || spec.proj_same_dim {
                v.push((format!("{e}/cutoff_{i}/proj_W"), vec![di, d], di));
            }
        }
    }
    for i in 0..l {
        let p = format!("{T}/layer_{i}");
        v.push((format!("{p}/rel_attn/qkv/kernel"), vec![d, 3 * n * dh], d));
        v.push((format!("{p}/rel_attn/r/kernel"), vec![d, n * dh], d));
        v.push((format!("{p}/rel_attn/o/kernel"), vec![n * dh, d], n * dh));
        v.push((format!("{p}/rel_attn/LayerNorm/beta"), vec![d], 1));
        v.push((format!("{p}/rel_attn/LayerNorm/gamma"), vec![d], 1));
        v.push((format!("{p}/ff/layer_1/kernel"), vec![d, cfg.d_inner], d));
        v.push((format!("{p}/ff/layer_1/bias"), vec![cfg.d_inner], 1));
        v.push((format!("{p}/ff/layer_2/kernel"), vec![cfg.d_inner, d], cfg.d_inner));
        v.push((format!("{p}/ff/layer_2/bias"), vec![d], 1));
        v.push((format!("{p}/ff/LayerNorm/beta"), vec![d], 1));
        v.push((format!("{p}/ff/LayerNorm/gamma"), vec![d], 1));
    }
    let s = format!("{T}/adaptive_softmax");
    if cfg.cutoffs.is_empty() {
        v.push((format!("{s}/bias"), vec![cfg.vocab_size], 1));
    } else {
        for i in 0..cfg.n_clusters() {
            let di = cfg.cluster_dim(i);
            v.push((format!("{s}/cutoff_{i}/b"), vec![ends[i + 1] - ends[i]], 1));
            let no_proj = (cfg.div_val == 1 || !spec.proj_same_dim) && di == d;
            if !cfg.tie_proj(i) && !no_proj {
                v.push((format!("{s}/cutoff_{i}/proj"), vec![di, d], d));
            }
            if i == 0 {
                v.push((format!("{s}/cutoff_0/cluster_W"), vec![cfg.cutoffs.len(), cfg.d_embed], 1));
                v.push((format!("{s}/cutoff_0/cluster_b"), vec![cfg.cutoffs.len()], 1));
            }
        }
    }
    v
}

/// A Transformer-XL checkpoint with values of a realistic spread.
pub fn checkpoint(spec: &Spec, seed: u64) -> Vec<Variable> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for (name, shape, fan_in) in variables(spec) {
        let last = name.rsplit('/').next().unwrap_or("");
        let numel = shape.iter().product();
        let values = match last {
            // The relative biases are added to the queries: large enough to matter.
            // The original initialises the tables with stddev 0.02 and scales looked-up rows by
            // sqrt(d_proj). Drawn in ±1 instead, layer 0 of a 1024-wide model saw inputs of ±32,
            // its attention went one-hot, and float32 noise in the logits alone exceeded the
            // isolated bound (1.2×, measured); at this spread every stage agrees to ~1e-6.
            "lookup_table" => init_values(&mut rng, "", numel, 1).iter().map(|x| x * 0.05).collect(),
            "r_w_bias" | "r_r_bias" => init_values(&mut rng, "bias", numel, 1).iter().map(|x| x * 5.0).collect(),
            "proj_W" | "proj" => init_values(&mut rng, "kernel", numel, fan_in),
            "cluster_b" => init_values(&mut rng, "bias", numel, 1).iter().map(|x| x * 10.0).collect(),
            _ => init_values(&mut rng, last, numel, fan_in),
        };
        let var = Variable::f32(name, shape, values);
        if spec.trainer_state {
            out.extend(moment_slots(&mut rng, &var, ["Adam", "Adam_1"]));
        }
        out.push(var);
    }
    if spec.trainer_state {
        out.push(Variable::i64_scalar("global_step", 200_000));
    }
    out
}

/// `data/corpus-info.json` as `tf/data_utils.py` writes it (cutoffs with 0 and the vocabulary size).
pub fn corpus_info(cfg: &TxlConfig, dataset: &str) -> serde_json::Value {
    json!({ "vocab_size": cfg.vocab_size, "cutoffs": cfg.cutoff_ends(), "dataset": dataset })
}

/// Transformer-XL's golden cases: a wt103-style model (div_val 2, three cutoffs, shared
/// projections, per-layer biases) with its corpus-info.json and short memory and clamp; an
/// lm1b-style one (proj_same_dim false: no head-cluster projections, own softmax projections,
/// shared biases) without any config file, at the default evaluation settings.
pub fn golden_cases() -> Vec<GoldenCase> {
    let wt103 = Spec {
        cfg: TxlConfig {
            vocab_size: 50, d_model: 16, d_embed: 16, n_head: 2, d_head: 8, d_inner: 32, n_layer: 2, div_val: 2,
            cutoffs: vec![10, 20, 35], untie_r: true, proj_share_all_but_first: true, mem_len: 4, clamp_len: 7,
        },
        proj_same_dim: true,
        trainer_state: true,
    };
    let lm1b = Spec {
        cfg: TxlConfig {
            vocab_size: 40, d_model: 16, d_embed: 16, n_head: 4, d_head: 4, d_inner: 24, n_layer: 2, div_val: 2,
            cutoffs: vec![8, 24], untie_r: false, proj_share_all_but_first: false, mem_len: 1600, clamp_len: 1000,
        },
        proj_same_dim: false,
        trainer_state: false,
    };
    // enwik8/text8: no cutoffs (div_val 1, one table and one softmax bias), which HF's converter
    // fails on; d_embed ≠ d_model here so the one projection is exercised on both sides.
    let enwik8 = Spec {
        cfg: TxlConfig {
            vocab_size: 30, d_model: 16, d_embed: 12, n_head: 2, d_head: 8, d_inner: 24, n_layer: 2, div_val: 1,
            cutoffs: vec![], untie_r: false, proj_share_all_but_first: true, mem_len: 5, clamp_len: 6,
        },
        proj_same_dim: true,
        trainer_state: false,
    };
    let mut enwik8_info = corpus_info(&enwik8.cfg, "enwik8");
    enwik8_info["cutoffs"] = json!([]);
    enwik8_info["mem_len"] = json!(enwik8.cfg.mem_len);
    enwik8_info["clamp_len"] = json!(enwik8.cfg.clamp_len);
    let mut info = corpus_info(&wt103.cfg, "wt103");
    info["mem_len"] = json!(wt103.cfg.mem_len);
    info["clamp_len"] = json!(wt103.cfg.clamp_len);
    vec![
        GoldenCase {
            dir: "transfo-xl",
            model_type: "transfo-xl",
            checkpoint: "model.ckpt-200000",
            config_file: Some("corpus-info.json"),
            config: info,
            files: vec![],
            contents: crate::synthetic::Contents::TfBundle(checkpoint(&wt103, 41)),
        },
        GoldenCase {
            dir: "transfo-xl-lm1b",
            model_type: "transfo-xl",
            checkpoint: "model.ckpt-100000",
            config_file: None,
            config: serde_json::Value::Null,
            files: vec![],
            contents: crate::synthetic::Contents::TfBundle(checkpoint(&lm1b, 42)),
        },
        GoldenCase {
            dir: "transfo-xl-enwik8",
            model_type: "transfo-xl",
            checkpoint: "model.ckpt-400000",
            config_file: Some("corpus-info.json"),
            config: enwik8_info,
            files: vec![],
            contents: crate::synthetic::Contents::TfBundle(checkpoint(&enwik8, 43)),
        },
    ]
}

/// A random small model for property tests: any cutoffs, div_val, widths, tying and biases.
pub fn random_spec(seed: u64) -> Spec {
    let mut rng = crate::probe::Rng::new(seed);
    let mut pick = |lo: usize, hi: usize| lo + rng.below((hi - lo + 1) as u64) as usize;
    let n_head = pick(1, 3);
    let d_head = 2 * pick(1, 4);
    let d_model = 2 * pick(2, 10);
    let no_cutoffs = pick(0, 4) == 0;
    let (div_val, d_embed, cutoffs, vocab_size) = if no_cutoffs {
        let d_embed = if pick(0, 1) == 0 { d_model } else { 2 * pick(2, 8) };
        (1, d_embed, vec![], pick(5, 40))
    } else {
        let clusters = pick(1, 3);
        let div_val = pick(2, 3);
        let d_embed = div_val.pow(clusters as u32) * pick(1, 2) * if pick(0, 1) == 0 { 1 } else { 2 };
        let d_embed = if pick(0, 2) == 0 { d_model.max(d_embed) } else { d_embed };
        let d_embed = d_embed - d_embed % div_val.pow(clusters as u32);
        let mut cutoffs = Vec::new();
        let mut at = 0;
        for _ in 0..clusters {
            at += pick(2, 12);
            cutoffs.push(at);
        }
        (div_val, d_embed.max(div_val.pow(clusters as u32)), cutoffs, at + pick(2, 12))
    };
    let proj_same_dim = pick(0, 1) == 0;
    let cfg = TxlConfig {
        vocab_size, d_model, d_embed, n_head, d_head, d_inner: pick(4, 40), n_layer: pick(1, 3), div_val, cutoffs,
        untie_r: pick(0, 1) == 0, proj_share_all_but_first: pick(0, 1) == 0, mem_len: pick(0, 9), clamp_len: pick(0, 12) as i64 - 1,
    };
    Spec { cfg, proj_same_dim, trainer_state: pick(0, 1) == 0 }
}
