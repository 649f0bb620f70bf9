//! Transformer-XL (kimiyoung/transformer-xl `tf/model.py`) → `TransfoXLLMHeadModel`
//! (transformers 4.x only; 5.x has no Transformer-XL). Facts: architectures.md §8.
//!
//! The release ships no model config (its hyper-parameters lived in shell scripts), so every
//! size is read from the tensors: layers, heads, head width, widths, the adaptive clusters (their
//! row counts give the cutoffs and the vocabulary), `div_val`, `untie_r` and which softmax
//! projections are tied. A `corpus-info.json` beside the checkpoint, and `--set` flags, must agree
//! with them; `mem_len` and `clamp_len` (evaluation settings, not weights) come from them.
//!
//! Beyond HF's converter: identity projections where the original has none (`proj_same_dim`
//! false, as lm1b); shared relative biases written under every alias transformers ties them by;
//! no-cutoff models (enwik8/text8) written as the `adaptive` class without clusters; and the
//! persistent `pos_emb.inv_freq` buffer.

use serde_json::json;

use crate::plan::{Fill, Plan, PlanBuilder, PlanError, SourceVar, Transform};
use crate::probe::Probes;
use crate::roles::role;
use crate::stage::{Stage, Values};

pub mod candle;
pub mod probes;
pub mod reference;
pub mod synthetic;

/// The original variables live under `transformer`.
pub const T: &str = "transformer";

/// The model's sizes and evaluation settings, named as transformers' `TransfoXLConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct TxlConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_embed: usize,
    pub n_head: usize,
    pub d_head: usize,
    pub d_inner: usize,
    pub n_layer: usize,
    pub div_val: usize,
    /// The inner cutoffs (HF's form: without 0 and the vocabulary size).
    pub cutoffs: Vec<usize>,
    pub untie_r: bool,
    pub proj_share_all_but_first: bool,
    pub mem_len: usize,
    /// Relative positions beyond this are clamped to it; 0 or less: no clamp.
    pub clamp_len: i64,
}

impl TxlConfig {
    /// Cluster boundaries [0, c1, …, V].
    pub fn cutoff_ends(&self) -> Vec<usize> {
        let mut v = vec![0];
        v.extend(&self.cutoffs);
        v.push(self.vocab_size);
        v
    }
    pub fn n_clusters(&self) -> usize {
        self.cutoffs.len() + 1
    }
    /// The embedding width of cluster `i`.
    pub fn cluster_dim(&self, i: usize) -> usize {
        self.d_embed / self.div_val.pow(i as u32)
    }
    /// Whether HF's softmax reads cluster `i`'s projection from the embedding (`tie_projs`).
    pub fn tie_proj(&self, i: usize) -> bool {
        i > 0 && self.proj_share_all_but_first
    }
    /// What HF's `ProjectedAdaptiveLogSoftmax` projects cluster `i` with.
    pub fn hf_out_proj(&self, i: usize) -> HfProj {
        match (self.div_val, self.tie_proj(i)) {
            (1, _) if self.d_embed == self.d_model => HfProj::None,
            (1, true) => HfProj::Embedding(0),
            (_, true) => HfProj::Embedding(i),
            _ => HfProj::Own,
        }
    }
    /// Whether HF's `AdaptiveEmbedding` has a projection for cluster `i`.
    pub fn hf_emb_proj(&self, i: usize) -> bool {
        self.div_val != 1 || (i == 0 && self.d_embed != self.d_model)
    }
}

/// Where HF reads a softmax cluster's projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HfProj {
    None,
    /// `crit.out_projs.{i}`.
    Own,
    /// Tied to `transformer.word_emb.emb_projs.{j}` (save_pretrained omits the alias).
    Embedding(usize),
}

/// Default evaluation settings (transformers' `TransfoXLConfig`, wt103's test script).
const DEFAULT_MEM_LEN: usize = 1600;
const DEFAULT_CLAMP_LEN: i64 = 1000;

/// Keys an original config (corpus-info.json, or `--set`) may hold.
const KNOWN_KEYS: &[&str] = &[
    "vocab_size", "n_token", "cutoffs", "dataset", "d_model", "d_embed", "n_head", "d_head", "d_inner", "n_layer", "div_val",
    "untie_r", "proj_share_all_but_first", "proj_same_dim", "mem_len", "clamp_len", "same_length", "tgt_len", "finetuning_task",
];

fn var<'a>(vars: &'a [SourceVar], name: &str) -> Option<&'a SourceVar> {
    vars.iter().find(|v| v.name == name)
}

/// Whether a checkpoint looks like Transformer-XL's.
pub fn looks_like(vars: &[SourceVar]) -> bool {
    vars.iter().any(|v| v.name == format!("{T}/layer_0/rel_attn/qkv/kernel"))
}

/// The adaptive embedding tables: (rows, width) per cluster, and whether they live in `cutoff_i`
/// scopes (div_val > 1) or form one table (div_val 1).
fn embedding_tables(vars: &[SourceVar]) -> Result<(Vec<(usize, usize)>, bool), String> {
    let shape2 = |v: &SourceVar| match v.shape[..] {
        [r, c] => Ok((r, c)),
        _ => Err(format!("{} has shape {:?}, expected a matrix [rows, width]", v.name, v.shape)),
    };
    if let Some(v) = var(vars, &format!("{T}/adaptive_embed/lookup_table")) {
        return Ok((vec![shape2(v)?], false));
    }
    let mut tables = Vec::new();
    while let Some(v) = var(vars, &format!("{T}/adaptive_embed/cutoff_{}/lookup_table", tables.len())) {
        tables.push(shape2(v)?);
    }
    if tables.is_empty() {
        return Err(format!("no {T}/adaptive_embed/lookup_table or {T}/adaptive_embed/cutoff_0/lookup_table in the checkpoint"));
    }
    Ok((tables, true))
}

/// The model as its tensors describe it (evaluation settings at their defaults).
pub fn from_tensors(vars: &[SourceVar]) -> Result<TxlConfig, String> {
    let shape = |name: &str| var(vars, name).map(|v| v.shape.clone()).ok_or_else(|| format!("{name} is missing from the checkpoint"));
    let n_layer = (0..).take_while(|l| var(vars, &format!("{T}/layer_{l}/rel_attn/qkv/kernel")).is_some()).count();
    if n_layer == 0 {
        return Err(format!("no {T}/layer_0/rel_attn/qkv/kernel in the checkpoint"));
    }
    let r_w = shape(&format!("{T}/r_w_bias"))?;
    let (untie_r, n_head, d_head) = match r_w[..] {
        [l, n, dh] if l == n_layer => (true, n, dh),
        [l, _, _] => return Err(format!("{T}/r_w_bias has shape {r_w:?}: {l} layers, but the checkpoint has {n_layer} (layer_0 … layer_{})", n_layer - 1)),
        [n, dh] => (false, n, dh),
        _ => return Err(format!("{T}/r_w_bias has shape {r_w:?}, expected [n_head, d_head] or [n_layer, n_head, d_head]")),
    };
    let qkv = shape(&format!("{T}/layer_0/rel_attn/qkv/kernel"))?;
    let [d_model, fused] = qkv[..] else { return Err(format!("{T}/layer_0/rel_attn/qkv/kernel has shape {qkv:?}, expected [d_model, 3·n_head·d_head]")) };
    if fused != 3 * n_head * d_head {
        return Err(format!(
            "{T}/layer_0/rel_attn/qkv/kernel has {fused} columns, but r_w_bias gives n_head {n_head} × d_head {d_head} (3 × {} expected)",
            n_head * d_head
        ));
    }
    let ff = shape(&format!("{T}/layer_0/ff/layer_1/kernel"))?;
    let d_inner = *ff.get(1).ok_or_else(|| format!("{T}/layer_0/ff/layer_1/kernel has shape {ff:?}"))?;
    let (tables, scoped) = embedding_tables(vars)?;
    let d_embed = tables[0].1;
    let vocab_size = tables.iter().map(|t| t.0).sum();
    let mut cutoffs: Vec<usize> = tables.iter().scan(0, |acc, t| { *acc += t.0; Some(*acc) }).collect();
    cutoffs.pop();
    let div_val = match (scoped, tables.get(1)) {
        (false, _) => 1,
        (true, None) => {
            return Err(format!("{T}/adaptive_embed has a single cutoff_0 table: an adaptive model without cutoffs stores one lookup_table (div_val 1)"))
        }
        (true, Some(&(_, d1))) if d1 > 0 && d_embed % d1 == 0 && d_embed / d1 > 1 => d_embed / d1,
        (true, Some(&(_, d1))) => return Err(format!("cluster widths {d_embed} and {d1} do not give an integer div_val > 1")),
    };
    for (i, &(_, d)) in tables.iter().enumerate() {
        let want = d_embed / div_val.pow(i as u32);
        if d != want {
            return Err(format!("{T}/adaptive_embed/cutoff_{i}/lookup_table is {d} wide; d_embed {d_embed} / div_val {div_val}^{i} = {want}"));
        }
    }
    if !scoped && var(vars, &format!("{T}/adaptive_softmax/cutoff_0/b")).is_some() {
        return Err(format!(
            "{T}/adaptive_softmax has cutoff clusters over one lookup_table (div_val 1 with cutoffs): transformers keeps one bias for it, \
             which tfconv does not assemble from the clusters' biases; not supported"
        ));
    }
    // Tied softmax projections: HF ties all clusters after the first, or none.
    let (mut own, mut tied) = (Vec::new(), Vec::new());
    for i in 1..tables.len() {
        let has_own = var(vars, &format!("{T}/adaptive_softmax/cutoff_{i}/proj")).is_some();
        let has_emb = var(vars, &format!("{T}/adaptive_embed/cutoff_{i}/proj_W")).is_some();
        match (has_own, has_emb) {
            (true, _) => own.push(i),
            (false, true) => tied.push(i),
            (false, false) => {}
        }
    }
    if !own.is_empty() && !tied.is_empty() {
        return Err(format!(
            "the softmax has its own projections for clusters {own:?} but shares the embedding's for {tied:?}; transformers' \
             proj_share_all_but_first ties all clusters after the first or none"
        ));
    }
    Ok(TxlConfig {
        vocab_size,
        d_model,
        d_embed,
        n_head,
        d_head,
        d_inner,
        n_layer,
        div_val,
        cutoffs,
        untie_r,
        proj_share_all_but_first: own.is_empty(),
        mem_len: DEFAULT_MEM_LEN,
        clamp_len: DEFAULT_CLAMP_LEN,
    })
}

/// The config from the tensors, checked against the original config's keys (corpus-info.json
/// and `--set`), which also give the evaluation settings.
pub fn resolve(config: &serde_json::Value, vars: &[SourceVar]) -> Result<TxlConfig, String> {
    let obj = match config {
        serde_json::Value::Null => serde_json::Map::new(),
        serde_json::Value::Object(o) => o.clone(),
        other => return Err(format!("the config is not a JSON object: {other}")),
    };
    if obj.contains_key("model_type") || obj.contains_key("architectures") {
        return Err("this is a transformers config.json, not the original's corpus-info.json; Transformer-XL needs no config (the checkpoint's tensors describe it)".into());
    }
    let unknown: Vec<&String> = obj.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())).collect();
    if !unknown.is_empty() {
        return Err(format!("unknown Transformer-XL setting(s) {unknown:?} (known: {})", KNOWN_KEYS.join(", ")));
    }
    let mut cfg = from_tensors(vars)?;
    let uint = |k: &str| -> Result<Option<usize>, String> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| format!("{k} must be a non-negative integer, got {v}")),
        }
    };
    let boolean = |k: &str| -> Result<Option<bool>, String> {
        match obj.get(k) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| format!("{k} must be true or false, got {v}")),
        }
    };
    let disagree = |k: &str, said: String, tensors: String| Err(format!("{k} is {said} in the config, but the checkpoint's tensors give {tensors}"));
    for (k, have) in [
        ("vocab_size", cfg.vocab_size),
        ("n_token", cfg.vocab_size),
        ("d_model", cfg.d_model),
        ("d_embed", cfg.d_embed),
        ("n_head", cfg.n_head),
        ("d_head", cfg.d_head),
        ("d_inner", cfg.d_inner),
        ("n_layer", cfg.n_layer),
        ("div_val", cfg.div_val),
    ] {
        if let Some(said) = uint(k)? {
            if said != have {
                return disagree(k, said.to_string(), have.to_string());
            }
        }
    }
    if let Some(v) = obj.get("cutoffs") {
        let said: Vec<usize> = serde_json::from_value(v.clone()).map_err(|_| format!("cutoffs must be a list of integers, got {v}"))?;
        // corpus-info.json lists [0, …, V]; HF the inner ones.
        let full = cfg.cutoff_ends();
        if said != cfg.cutoffs && said != full {
            return disagree("cutoffs", format!("{said:?}"), format!("{:?} (corpus-info form {full:?})", cfg.cutoffs));
        }
    }
    if let Some(said) = boolean("untie_r")? {
        if said != cfg.untie_r {
            return disagree("untie_r", said.to_string(), format!("{} (r_w_bias {})", cfg.untie_r, if cfg.untie_r { "per layer" } else { "shared" }));
        }
    }
    if let Some(said) = boolean("proj_share_all_but_first")? {
        let has_own = (1..cfg.n_clusters()).any(|i| var(vars, &format!("{T}/adaptive_softmax/cutoff_{i}/proj")).is_some());
        let has_tied = (1..cfg.n_clusters()).any(|i| {
            var(vars, &format!("{T}/adaptive_softmax/cutoff_{i}/proj")).is_none() && var(vars, &format!("{T}/adaptive_embed/cutoff_{i}/proj_W")).is_some()
        });
        if (said && has_own) || (!said && has_tied) {
            return disagree("proj_share_all_but_first", said.to_string(), format!("{} (softmax projections {})", !said, if has_own { "present" } else { "shared" }));
        }
        cfg.proj_share_all_but_first = said;
    }
    if boolean("same_length")? == Some(true) {
        return Err(
            "same_length true is not supported: transformers' same_length mask keeps one key fewer than the original's, so no folder could match it; \
             evaluate with same_length false"
                .into(),
        );
    }
    if let Some(m) = uint("mem_len")? {
        cfg.mem_len = m;
    }
    if let Some(v) = obj.get("clamp_len") {
        cfg.clamp_len = v.as_i64().ok_or_else(|| format!("clamp_len must be an integer, got {v}"))?;
    }
    Ok(cfg)
}

/// The config read back from an HF `config.json` (for `tfconv verify`).
pub fn from_hf_json(config: &serde_json::Value) -> Result<TxlConfig, String> {
    let get = |k: &str| config.get(k).ok_or_else(|| format!("config.json has no {k}"));
    let uint = |k: &str| get(k)?.as_u64().map(|n| n as usize).ok_or_else(|| format!("config.json {k} must be a non-negative integer"));
    let cutoffs: Vec<usize> = serde_json::from_value(get("cutoffs")?.clone()).map_err(|e| format!("config.json cutoffs: {e}"))?;
    let cfg = TxlConfig {
        vocab_size: uint("vocab_size")?,
        d_model: uint("d_model")?,
        d_embed: uint("d_embed")?,
        n_head: uint("n_head")?,
        d_head: uint("d_head")?,
        d_inner: uint("d_inner")?,
        n_layer: uint("n_layer")?,
        div_val: uint("div_val")?,
        cutoffs,
        untie_r: config.get("untie_r").and_then(|v| v.as_bool()).unwrap_or(true),
        proj_share_all_but_first: config.get("proj_share_all_but_first").and_then(|v| v.as_bool()).unwrap_or(true),
        mem_len: uint("mem_len")?,
        clamp_len: get("clamp_len")?.as_i64().ok_or("config.json clamp_len must be an integer")?,
    };
    if config.get("same_length").and_then(|v| v.as_bool()) == Some(true) {
        return Err("config.json same_length true: transformers' mask differs from the original's; tfconv verifies same_length false".into());
    }
    if config.get("adaptive").and_then(|v| v.as_bool()) == Some(false) {
        return Err("config.json adaptive false is not supported".into());
    }
    if cfg.div_val == 1 && !cfg.cutoffs.is_empty() {
        return Err("div_val 1 with cutoffs is not supported".into());
    }
    Ok(cfg)
}

/// What the original softmax projects cluster `i` with: its own `proj`, the embedding's
/// `proj_W`, or nothing (an identity).
pub fn original_out_proj(cfg: &TxlConfig, vars_have: impl Fn(&str) -> bool, i: usize) -> Option<String> {
    if cfg.div_val == 1 {
        let w = format!("{T}/adaptive_embed/proj_W");
        return vars_have(&w).then_some(w);
    }
    let own = format!("{T}/adaptive_softmax/cutoff_{i}/proj");
    let emb = format!("{T}/adaptive_embed/cutoff_{i}/proj_W");
    if vars_have(&own) {
        Some(own)
    } else if cfg.tie_proj(i) && vars_have(&emb) {
        Some(emb)
    } else {
        None
    }
}

/// The original embedding projection of cluster `i`, if it has one.
pub fn original_emb_proj(cfg: &TxlConfig, vars_have: impl Fn(&str) -> bool, i: usize) -> Option<String> {
    let name = match cfg.div_val {
        1 => format!("{T}/adaptive_embed/proj_W"),
        _ => format!("{T}/adaptive_embed/cutoff_{i}/proj_W"),
    };
    vars_have(&name).then_some(name)
}

pub fn table_name(cfg: &TxlConfig, i: usize) -> String {
    match cfg.div_val {
        1 => format!("{T}/adaptive_embed/lookup_table"),
        _ => format!("{T}/adaptive_embed/cutoff_{i}/lookup_table"),
    }
}

/// The explicit original → HF table (architectures.md §8.3).
pub fn plan(cfg: &TxlConfig, vars: &[SourceVar]) -> Result<Plan, PlanError> {
    use Transform::{Select, Transpose};
    let (d, n, dh, inner) = (cfg.d_model, cfg.n_head, cfg.d_head, cfg.d_inner);
    let mut b = PlanBuilder::new(vars);
    let have = |name: &str| vars.iter().any(|v| v.name == name);
    let ends = cfg.cutoff_ends();
    // A projection the original omits is the identity; one it cannot omit is reported missing.
    fn identity_or_missing(b: &mut PlanBuilder, target: String, d: usize, dim: usize, missing: String, why: &str) {
        match dim == d {
            true => b.synthesize(target, vec![d, dim], Fill::Identity, why),
            false => b.map(target, missing, vec![Transform::Transpose], vec![d, dim]),
        }
    }
    for i in 0..cfg.n_clusters() {
        let (rows, dim) = (ends[i + 1] - ends[i], cfg.cluster_dim(i));
        b.map(format!("transformer.word_emb.emb_layers.{i}.weight"), table_name(cfg, i), vec![], vec![rows, dim]);
        if cfg.hf_emb_proj(i) {
            let target = format!("transformer.word_emb.emb_projs.{i}");
            match original_emb_proj(cfg, have, i) {
                Some(src) => b.map(target, src, vec![Transpose], vec![d, dim]),
                None => identity_or_missing(&mut b, target, d, dim, format!("{T}/adaptive_embed/cutoff_{i}/proj_W"), "the original embeds this cluster without a projection (proj_same_dim false); transformers always projects"),
            }
        }
        if cfg.hf_out_proj(i) == HfProj::Own {
            let target = format!("crit.out_projs.{i}");
            match original_out_proj(cfg, have, i) {
                Some(src) => b.map(target, src, vec![Transpose], vec![d, dim]),
                None => identity_or_missing(&mut b, target, d, dim, format!("{T}/adaptive_softmax/cutoff_{i}/proj"), "the original's softmax has no projection for this cluster (proj_same_dim false); transformers always projects"),
            }
        }
        match cfg.div_val {
            1 => b.map("crit.out_layers.0.bias", format!("{T}/adaptive_softmax/bias"), vec![], vec![cfg.vocab_size]),
            _ => b.map(format!("crit.out_layers.{i}.bias"), format!("{T}/adaptive_softmax/cutoff_{i}/b"), vec![], vec![rows]),
        }
    }
    if !cfg.cutoffs.is_empty() {
        let c = cfg.cutoffs.len();
        b.map("crit.cluster_weight", format!("{T}/adaptive_softmax/cutoff_0/cluster_W"), vec![], vec![c, cfg.d_embed]);
        b.map("crit.cluster_bias", format!("{T}/adaptive_softmax/cutoff_0/cluster_b"), vec![], vec![c]);
    }
    for bias in ["r_w_bias", "r_r_bias"] {
        if !cfg.untie_r {
            // One parameter shared by every layer: transformers' state dict lists it under the
            // model's key and each layer's, and loads it right only when the file has all of them.
            b.map(format!("transformer.{bias}"), format!("{T}/{bias}"), vec![], vec![n, dh]);
        }
    }
    for l in 0..cfg.n_layer {
        let src = format!("{T}/layer_{l}");
        let dst = format!("transformer.layers.{l}");
        for bias in ["r_w_bias", "r_r_bias"] {
            let transforms = if cfg.untie_r { vec![Select { axis: 0, index: l }] } else { vec![] };
            b.map(format!("{dst}.dec_attn.{bias}"), format!("{T}/{bias}"), transforms, vec![n, dh]);
        }
        // q, k and v stay fused: TF and HF split them in the same order.
        b.map(format!("{dst}.dec_attn.qkv_net.weight"), format!("{src}/rel_attn/qkv/kernel"), vec![Transpose], vec![3 * n * dh, d]);
        b.map(format!("{dst}.dec_attn.r_net.weight"), format!("{src}/rel_attn/r/kernel"), vec![Transpose], vec![n * dh, d]);
        b.map(format!("{dst}.dec_attn.o_net.weight"), format!("{src}/rel_attn/o/kernel"), vec![Transpose], vec![d, n * dh]);
        b.map(format!("{dst}.dec_attn.layer_norm.weight"), format!("{src}/rel_attn/LayerNorm/gamma"), vec![], vec![d]);
        b.map(format!("{dst}.dec_attn.layer_norm.bias"), format!("{src}/rel_attn/LayerNorm/beta"), vec![], vec![d]);
        b.map(format!("{dst}.pos_ff.CoreNet.0.weight"), format!("{src}/ff/layer_1/kernel"), vec![Transpose], vec![inner, d]);
        b.map(format!("{dst}.pos_ff.CoreNet.0.bias"), format!("{src}/ff/layer_1/bias"), vec![], vec![inner]);
        b.map(format!("{dst}.pos_ff.CoreNet.3.weight"), format!("{src}/ff/layer_2/kernel"), vec![Transpose], vec![d, inner]);
        b.map(format!("{dst}.pos_ff.CoreNet.3.bias"), format!("{src}/ff/layer_2/bias"), vec![], vec![d]);
        b.map(format!("{dst}.pos_ff.layer_norm.weight"), format!("{src}/ff/LayerNorm/gamma"), vec![], vec![d]);
        b.map(format!("{dst}.pos_ff.layer_norm.bias"), format!("{src}/ff/LayerNorm/beta"), vec![], vec![d]);
    }
    b.synthesize(
        "transformer.pos_emb.inv_freq",
        vec![d / 2],
        Fill::InverseFrequencies,
        "a persistent buffer of transformers' PositionalEmbedding (the original computes it in the graph)",
    );
    b.finish(role)
}

/// HF `config.json` (architectures.md §8.4).
pub fn hf_config(cfg: &TxlConfig, dtype: &str) -> serde_json::Value {
    json!({
        "model_type": "transfo-xl",
        "architectures": ["TransfoXLLMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "cutoffs": cfg.cutoffs,
        "d_model": cfg.d_model,
        "d_embed": cfg.d_embed,
        "n_head": cfg.n_head,
        "d_head": cfg.d_head,
        "d_inner": cfg.d_inner,
        "div_val": cfg.div_val,
        "pre_lnorm": false,
        "n_layer": cfg.n_layer,
        "mem_len": cfg.mem_len,
        "clamp_len": cfg.clamp_len,
        "same_length": false,
        "proj_share_all_but_first": cfg.proj_share_all_but_first,
        "attn_type": 0,
        "sample_softmax": -1,
        "adaptive": true,
        "dropout": 0.1,
        "dropatt": 0.0,
        "untie_r": cfg.untie_r,
        "init": "normal",
        "init_range": 0.01,
        "proj_init_std": 0.01,
        "init_std": 0.02,
        // The original normalizes with contrib layer_norm's 1e-12 (HF's default is 1e-5).
        "layer_norm_epsilon": 1e-12,
        "eos_token_id": 0,
        "tie_word_embeddings": true,
        "dtype": dtype,
    })
}

/// One stage. The probes are two consecutive segments; the second attends to the first's
/// memory, so every layer of the second segment reads its own input of the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Embeddings { segment: usize },
    Layer { segment: usize, layer: usize },
    LogSoftmax { segment: usize },
}

/// Probe and output names of segment `s` (0: "input_ids", "layer.0"; 1: "next.input_ids", …).
pub fn seg_name(segment: usize, name: &str) -> String {
    match segment {
        0 => name.to_string(),
        _ => format!("next.{name}"),
    }
}

impl Part {
    pub fn name(self) -> String {
        match self {
            Part::Embeddings { segment } => seg_name(segment, "embeddings"),
            Part::Layer { segment, layer } => seg_name(segment, &format!("layer.{layer}")),
            Part::LogSoftmax { segment } => seg_name(segment, "log_probs"),
        }
    }

    /// The input of layer `layer` in `segment`.
    fn layer_input(segment: usize, layer: usize) -> String {
        match layer {
            0 => seg_name(segment, "embeddings"),
            l => seg_name(segment, &format!("layer.{}", l - 1)),
        }
    }

    pub fn inputs(self, cfg: &TxlConfig) -> Vec<String> {
        match self {
            Part::Embeddings { segment } => vec![seg_name(segment, "input_ids")],
            Part::Layer { segment: 0, layer } => vec![Part::layer_input(0, layer)],
            // The memory: what this layer read in the segment before.
            Part::Layer { segment, layer } => vec![Part::layer_input(segment, layer), Part::layer_input(segment - 1, layer)],
            Part::LogSoftmax { segment } => vec![seg_name(segment, &format!("layer.{}", cfg.n_layer - 1))],
        }
    }

    pub fn outputs(self) -> Vec<String> {
        vec![self.name()]
    }
}

/// Probe segments: one without memory of real tokens, one continuing it.
pub const SEGMENTS: usize = 2;

pub fn parts(cfg: &TxlConfig) -> Vec<Part> {
    let mut parts = Vec::new();
    for segment in 0..SEGMENTS {
        parts.push(Part::Embeddings { segment });
        parts.extend((0..cfg.n_layer).map(|layer| Part::Layer { segment, layer }));
        parts.push(Part::LogSoftmax { segment });
    }
    parts
}

/// A Transformer-XL checkpoint (or HF folder) as tfconv converts and verifies it.
#[derive(Debug, Clone)]
pub struct TransfoXl {
    pub cfg: TxlConfig,
    /// The original's variable names (the reference reads what exists; empty for a folder).
    pub original_vars: Vec<String>,
    from_folder: bool,
}

impl TransfoXl {
    pub fn from_original(config: &serde_json::Value, vars: &[SourceVar]) -> Result<TransfoXl, String> {
        let cfg = resolve(config, vars)?;
        Ok(TransfoXl { cfg, original_vars: vars.iter().map(|v| v.name.clone()).collect(), from_folder: false })
    }

    pub fn from_hf_config(config: &serde_json::Value) -> Result<TransfoXl, String> {
        Ok(TransfoXl { cfg: from_hf_json(config)?, original_vars: Vec::new(), from_folder: true })
    }

    pub fn has(&self, name: &str) -> bool {
        self.original_vars.iter().any(|v| v == name)
    }

    fn part(&self, stage: &Stage) -> Result<Part, String> {
        parts(&self.cfg).into_iter().find(|p| p.name() == stage.name).ok_or_else(|| format!("TransfoXLLMHeadModel has no stage {:?}", stage.name))
    }
}

/// Transformer-XL's line in the registry.
pub const FAMILY: crate::arch::Family = crate::arch::Family {
    model_type: "transfo-xl",
    // The release's data folder holds corpus-info.json; never a config.json (that would be HF's).
    config_names: &["corpus-info.json"],
    default_config: Some(|| serde_json::Value::Object(Default::default())),
    read_config: crate::arch::json_config,
    looks_like,
    from_original: |config, vars| Ok(Box::new(TransfoXl::from_original(config, vars)?)),
    from_hf_config: |config| Ok(Box::new(TransfoXl::from_hf_config(config)?)),
    golden_cases: synthetic::golden_cases,
};

impl crate::arch::Architecture for TransfoXl {
    fn model_type(&self) -> &'static str {
        "transfo-xl"
    }
    fn class_name(&self) -> &'static str {
        "TransfoXLLMHeadModel"
    }
    fn plan(&self, vars: &[SourceVar]) -> Result<Plan, PlanError> {
        plan(&self.cfg, vars)
    }
    fn hf_config(&self, dtype: &str, _finetuning_task: Option<&str>) -> serde_json::Value {
        hf_config(&self.cfg, dtype)
    }
    fn tokenizer_files(&self, _search_dirs: &[&std::path::Path], _options: &crate::arch::TokenizerOptions) -> Result<crate::arch::TokenizerFiles, String> {
        // The vocabulary lives in cache.pkl, a Python-2 pickle of the whole corpus; transformers'
        // TransfoXLTokenizer needs trust_remote_code to unpickle it. Not converted.
        Ok(crate::arch::TokenizerFiles {
            files: Vec::new(),
            notes: vec!["no tokenizer files written: the release keeps its vocabulary in data/cache.pkl (a pickled corpus)".into()],
        })
    }
    fn probes(&self, seed: u64, batch: usize, seq_len: Option<usize>) -> Probes {
        probes::random(&self.cfg, seed, batch, seq_len.unwrap_or(probes::DEFAULT_LEN))
    }
    fn max_seq_len(&self) -> Option<usize> {
        None
    }
    fn stages(&self) -> Vec<Stage> {
        parts(&self.cfg)
            .into_iter()
            .map(|part| Stage {
                name: part.name(),
                original_vars: reference::original_vars(self, part),
                hf_tensors: candle::hf_tensors(&self.cfg, part),
                inputs: part.inputs(&self.cfg),
                outputs: part.outputs(),
            })
            .collect()
    }
    fn candle_stage(&self, stage: &Stage, vb: candle_nn::VarBuilder, inputs: &Values) -> candle_core::Result<Values> {
        let part = self.part(stage).map_err(candle_core::Error::msg)?;
        crate::candle_util::run_stage(vb, stage, inputs, |vb, xs| candle::run_part(vb, &self.cfg, part, xs))
    }
    fn reference_stage(&self, stage: &Stage, weights: &crate::tf_graph::OriginalWeights, inputs: &Values) -> anyhow::Result<Values> {
        if self.from_folder {
            anyhow::bail!("the TensorFlow reference runs from the original checkpoint, not an HF folder");
        }
        let part = self.part(stage).map_err(anyhow::Error::msg)?;
        reference::stage(self, weights, part, stage, inputs)
    }
    fn tied_aliases(&self) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for i in 0..self.cfg.n_clusters() {
            v.push((format!("crit.out_layers.{i}.weight"), format!("transformer.word_emb.emb_layers.{i}.weight")));
            if let HfProj::Embedding(j) = self.cfg.hf_out_proj(i) {
                v.push((format!("crit.out_projs.{i}"), format!("transformer.word_emb.emb_projs.{j}")));
            }
        }
        v
    }
    fn hf_output_fields(&self) -> Vec<(&'static str, &'static str)> {
        vec![("log_probs", "prediction_scores")]
    }
    fn hf_support(&self) -> crate::arch::HfSupport {
        crate::arch::HfSupport {
            unsupported: vec![("5.", "transformers 5 removed Transformer-XL (deprecated since 4.36); only 4.x loads TransfoXLLMHeadModel")],
            workarounds: vec![(
                "tensor_type_as_dtype",
                "transformers 4.57's TransfoXLModel.forward calls Tensor.type_as(dtype=...), which torch rejects (transformers#29650); \
                 the harness lets type_as take a dtype for the forward calls",
            )],
        }
    }
    /// The first segment from empty (zero) memories, then the second with the first's `mems`.
    fn hf_passes(&self) -> Vec<crate::arch::HfPass> {
        let hidden = |s: usize| -> Vec<String> { std::iter::once(seg_name(s, "embeddings")).chain((0..self.cfg.n_layer).map(|l| seg_name(s, &format!("layer.{l}")))).collect() };
        vec![
            crate::arch::HfPass {
                inputs: Some(vec!["input_ids"]),
                hidden: vec![("hidden_states", hidden(0))],
                fields: vec![("log_probs", "prediction_scores")],
                unexposed: Vec::new(),
                carry: None,
            },
            crate::arch::HfPass {
                inputs: Some(vec!["next.input_ids"]),
                hidden: vec![("hidden_states", hidden(1))],
                fields: vec![("next.log_probs", "prediction_scores")],
                unexposed: Vec::new(),
                carry: Some(crate::arch::Carry { output: "mems", argument: "mems", rename: vec![("next.input_ids", "input_ids")] }),
            },
        ]
    }
}
