//! ALBERT (google-research/albert) → `AlbertForPreTraining`, `AlbertForSequenceClassification`
//! (run_classifier fine-tunes) or `AlbertModel`. Facts: architectures.md §2.
//!
//! ALBERT shares weights: the checkpoint has one set of variables per (group, inner group), and
//! layer ℓ runs every inner group of group `int(ℓ / L · G)`. The embeddings are E wide and are
//! projected to H by `embedding_hidden_mapping_in`, which the original creates only when E ≠ H
//! and HF always has: tfconv writes the identity (and a zero bias) when E == H.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::plan::{Fill, Plan, PlanBuilder, PlanError, SourceVar, Transform};
use crate::probe::Probes;
use crate::roles::role;
use crate::stage::{Stage, Values};

pub mod candle;
pub mod reference;
pub mod synthetic;

/// `albert_config.json` as released; its keys are already HF's `AlbertConfig` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlbertConfig {
    pub vocab_size: usize,
    pub embedding_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    #[serde(default = "one")]
    pub num_hidden_groups: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "one")]
    pub inner_group_num: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// The original hard-codes 1e-12 (contrib layer_norm); HF spells it out.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn one() -> usize {
    1
}
fn default_act() -> String {
    "gelu".into()
}
fn default_positions() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl AlbertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The group layer ℓ runs in the original: `int(layer_idx / num_hidden_layers *
    /// num_hidden_groups)` in Python floats (albert `modeling.py`, `transformer_model`).
    pub fn original_group(&self, layer: usize) -> usize {
        (layer as f64 / self.num_hidden_layers as f64 * self.num_hidden_groups as f64) as usize
    }

    /// The group transformers runs layer ℓ in: `int(i / (num_hidden_layers / num_hidden_groups))`.
    /// The two float formulas disagree for some configs (L = G = 22, layer 15: 14 vs 15).
    pub fn hf_group(&self, layer: usize) -> usize {
        (layer as f64 / (self.num_hidden_layers as f64 / self.num_hidden_groups as f64)) as usize
    }

    /// Whether transformers can run this model as the original does; the reason when not.
    pub fn check_hf_can_run(&self) -> Result<(), String> {
        let (l, g, j) = (self.num_hidden_layers, self.num_hidden_groups, self.inner_group_num);
        if j * g > l {
            return Err(format!(
                "inner_group_num {j} > num_hidden_layers / num_hidden_groups = {l}/{g}: transformers' AlbertLayerGroup \
                 indexes its head mask per group of {} layer(s) and fails with an IndexError on this model (the \
                 original runs it); refusing to write a folder transformers cannot load",
                l / g
            ));
        }
        if let Some(layer) = (0..l).find(|&i| self.original_group(i) != self.hf_group(i)) {
            return Err(format!(
                "with num_hidden_layers {l} and num_hidden_groups {g}, the original runs layer {layer} in group {} \
                 but transformers runs it in group {} (the two round int(ℓ·G/L) differently); refusing to write a \
                 folder that computes another model",
                self.original_group(layer),
                self.hf_group(layer)
            ));
        }
        if let Some(unused) = (0..g).find(|&k| !(0..l).any(|i| self.original_group(i) == k)) {
            return Err(format!(
                "num_hidden_groups {g} with num_hidden_layers {l}: no layer runs group {unused}, so the original has no \
                 variables for it and transformers would initialise it at random"
            ));
        }
        Ok(())
    }
}

/// Which model the checkpoint holds, hence which HF class it converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// `AlbertForPreTraining`: the MLM head and the sentence-order (SOP) head.
    PreTraining,
    /// `AlbertForSequenceClassification` (run_classifier fine-tunes).
    SequenceClassification { num_labels: usize },
    /// `AlbertModel`: the encoder with its pooler.
    Base,
}

impl Head {
    pub fn class_name(self) -> &'static str {
        match self {
            Head::PreTraining => "AlbertForPreTraining",
            Head::SequenceClassification { .. } => "AlbertForSequenceClassification",
            Head::Base => "AlbertModel",
        }
    }
    /// The key prefix of the encoder in HF's state dict for this class.
    pub fn prefix(self) -> &'static str {
        match self {
            Head::Base => "",
            _ => "albert.",
        }
    }
}

/// How one checkpoint spells ALBERT's variables.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Names {
    /// "module/" for TF-Hub modules used in TF1, else "".
    pub prefix: String,
    /// The two norms of every inner group, in order (attention, FFN): `LayerNorm`/`LayerNorm_1`
    /// as released, or `layer_normalization[_N]` (newer trainers), per (group, inner group).
    pub block_norms: Vec<Vec<[String; 2]>>,
    /// The embeddings' norm scope and the MLM transform's.
    pub embedding_norm: String,
    pub mlm_norm: String,
}

/// The norm scopes directly under `scope`, in creation order: `LayerNorm`, `LayerNorm_1`, … as
/// released, or Keras' `layer_normalization`, `layer_normalization_N` (numbered across the whole
/// model, so only their order within the scope matters).
fn norms_in(vars: &[SourceVar], scope: &str) -> Vec<String> {
    let mut found: Vec<(u8, usize, String)> = vars
        .iter()
        .filter_map(|v| v.name.strip_prefix(scope)?.strip_prefix('/')?.strip_suffix("/gamma"))
        .filter(|n| !n.contains('/'))
        .filter_map(|n| {
            let numbered = |base: &str| -> Option<usize> {
                match n.strip_prefix(base)? {
                    "" => Some(0),
                    rest => rest.strip_prefix('_')?.parse::<usize>().ok().map(|k| k + 1),
                }
            };
            numbered("LayerNorm").map(|k| (0, k, n.to_string())).or_else(|| numbered("layer_normalization").map(|k| (1, k, n.to_string())))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, _, n)| n).collect()
}

impl Names {
    /// Reads the spelling off the variables; where a scope has no norms, the released names are
    /// assumed (the plan then reports them missing).
    pub fn detect(cfg: &AlbertConfig, vars: &[SourceVar]) -> Names {
        let prefix = if vars.iter().any(|v| v.name.starts_with("module/bert/")) { "module/" } else { "" }.to_string();
        let pick = |scope: &str, k: usize, default: &str| -> String {
            norms_in(vars, &format!("{prefix}{scope}")).get(k).cloned().unwrap_or_else(|| default.to_string())
        };
        let block_norms = (0..cfg.num_hidden_groups)
            .map(|g| {
                (0..cfg.inner_group_num)
                    .map(|j| {
                        let scope = inner_group_scope(g, j);
                        [pick(&scope, 0, "LayerNorm"), pick(&scope, 1, "LayerNorm_1")]
                    })
                    .collect()
            })
            .collect();
        Names {
            embedding_norm: pick("bert/embeddings", 0, "LayerNorm"),
            mlm_norm: pick("cls/predictions/transform", 0, "LayerNorm"),
            block_norms,
            prefix,
        }
    }

    /// The released spelling for `cfg`.
    pub fn released(cfg: &AlbertConfig) -> Names {
        Names::detect(cfg, &[])
    }

    /// A variable's full name in this checkpoint.
    pub fn var(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// `bert/encoder/transformer/group_{g}/inner_group_{j}`.
pub fn inner_group_scope(g: usize, j: usize) -> String {
    format!("bert/encoder/transformer/group_{g}/inner_group_{j}")
}

/// Tells the head from the variables: run_pretraining has the MLM head, run_classifier a
/// top-level `output_weights` (created outside a TF-Hub module, so never prefixed).
pub fn detect_head(vars: &[SourceVar], prefix: &str) -> Head {
    let find = |name: &str| vars.iter().find(|v| v.name == name);
    if let Some(w) = find("output_weights") {
        Head::SequenceClassification { num_labels: w.shape.first().copied().unwrap_or(0) }
    } else if find(&format!("{prefix}cls/predictions/output_bias")).is_some() {
        Head::PreTraining
    } else {
        Head::Base
    }
}

/// Whether a checkpoint looks like ALBERT's: its shared-layer scopes.
pub fn looks_like(vars: &[SourceVar]) -> bool {
    vars.iter().any(|v| {
        let name = v.name.strip_prefix("module/").unwrap_or(&v.name);
        name.starts_with("bert/encoder/transformer/group_")
    })
}

/// One stage of ALBERT's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Embeddings, their LayerNorm and the projection to H.
    Embeddings,
    /// Layer ℓ: every inner group of its group, in order.
    Layer(usize),
    Pooler,
    /// `predictions` on every position.
    Mlm,
    /// `sop_classifier` on the pooled output.
    Sop,
    Classifier,
}

impl Part {
    pub fn name(self) -> String {
        match self {
            Part::Embeddings => "embeddings".into(),
            Part::Layer(i) => format!("layer.{i}"),
            Part::Pooler => "pooler".into(),
            Part::Mlm => "mlm".into(),
            Part::Sop => "sop".into(),
            Part::Classifier => "classifier".into(),
        }
    }

    pub fn inputs(self, cfg: &AlbertConfig) -> Vec<String> {
        let last = match cfg.num_hidden_layers {
            0 => "embeddings".to_string(),
            n => format!("layer.{}", n - 1),
        };
        match self {
            Part::Embeddings => vec!["input_ids".into(), "token_type_ids".into()],
            Part::Layer(0) => vec!["embeddings".into(), "attention_mask".into()],
            Part::Layer(i) => vec![format!("layer.{}", i - 1), "attention_mask".into()],
            Part::Pooler | Part::Mlm => vec![last],
            Part::Sop | Part::Classifier => vec!["pooler".into()],
        }
    }

    pub fn outputs(self) -> Vec<String> {
        match self {
            Part::Embeddings | Part::Layer(_) | Part::Pooler => vec![self.name()],
            Part::Mlm => vec!["mlm_logits".into()],
            Part::Sop => vec!["sop_logits".into()],
            Part::Classifier => vec!["logits".into()],
        }
    }
}

pub fn parts(cfg: &AlbertConfig, head: Head) -> Vec<Part> {
    let mut parts = vec![Part::Embeddings];
    parts.extend((0..cfg.num_hidden_layers).map(Part::Layer));
    parts.push(Part::Pooler);
    parts.extend(match head {
        Head::PreTraining => &[Part::Mlm, Part::Sop][..],
        Head::SequenceClassification { .. } => &[Part::Classifier],
        Head::Base => &[],
    });
    parts
}

/// The HF `hidden_act` for what the original computes: its "gelu" is the tanh approximation
/// (HF `gelu_new`; HF's "gelu" is erf, #2395).
pub fn hf_hidden_act(original: &str) -> String {
    match original {
        "gelu" => "gelu_new".into(),
        other => other.into(),
    }
}

/// The original `hidden_act` values tfconv converts (albert `modeling.get_activation`).
pub const ORIGINAL_ACTS: &[&str] = &["gelu", "relu"];
/// The HF `hidden_act` values `verify` accepts in a folder's config.
pub const HIDDEN_ACTS: &[&str] = &["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"];

/// Checks every field ALBERT needs, naming the field and value (see `bert::validate_config`).
pub fn validate_config(config: &serde_json::Value, acts: &[&str]) -> Result<AlbertConfig, String> {
    let obj = config.as_object().ok_or_else(|| format!("the config is not a JSON object: {config}"))?;
    let size = |field: &str| -> Result<Option<u64>, String> {
        let Some(v) = obj.get(field) else { return Ok(None) };
        v.as_u64().filter(|&n| n > 0).map(Some).ok_or_else(|| format!("{field} must be a positive integer, got {v}"))
    };
    for field in ["vocab_size", "embedding_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"] {
        size(field)?.ok_or_else(|| format!("{field} is missing"))?;
    }
    for field in ["num_hidden_groups", "inner_group_num", "max_position_embeddings", "type_vocab_size"] {
        size(field)?;
    }
    match obj.get("hidden_act") {
        None => {}
        Some(serde_json::Value::String(a)) if acts.contains(&a.as_str()) => {}
        Some(v) => return Err(format!("hidden_act {v} is not supported (allowed: {})", acts.join(", "))),
    }
    if let Some(v) = obj.get("layer_norm_eps") {
        if !v.as_f64().is_some_and(|e| e.is_finite() && e > 0.0) {
            return Err(format!("layer_norm_eps must be a positive finite number, got {v}"));
        }
    }
    let cfg: AlbertConfig = serde_json::from_value(config.clone()).map_err(|e| format!("config: {e}"))?;
    if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
        return Err(format!("hidden_size {} must be a multiple of num_attention_heads {}", cfg.hidden_size, cfg.num_attention_heads));
    }
    cfg.check_hf_can_run()?;
    Ok(cfg)
}

/// The explicit original → HF table (architectures.md §2.3), in HF state-dict order.
pub fn plan(cfg: &AlbertConfig, head: Head, names: &Names, vars: &[SourceVar]) -> Result<Plan, PlanError> {
    use Transform::Transpose;
    let (e, h, i, v) = (cfg.embedding_size, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let pre = head.prefix();
    let var = |n: &str| names.var(n);
    let mut b = PlanBuilder::new(vars);
    let emb = "bert/embeddings";
    b.map(format!("{pre}embeddings.word_embeddings.weight"), var(&format!("{emb}/word_embeddings")), vec![], vec![v, e]);
    b.map(format!("{pre}embeddings.position_embeddings.weight"), var(&format!("{emb}/position_embeddings")), vec![], vec![cfg.max_position_embeddings, e]);
    b.map(format!("{pre}embeddings.token_type_embeddings.weight"), var(&format!("{emb}/token_type_embeddings")), vec![], vec![cfg.type_vocab_size, e]);
    b.map(format!("{pre}embeddings.LayerNorm.weight"), var(&format!("{emb}/{}/gamma", names.embedding_norm)), vec![], vec![e]);
    b.map(format!("{pre}embeddings.LayerNorm.bias"), var(&format!("{emb}/{}/beta", names.embedding_norm)), vec![], vec![e]);
    let projection = var("bert/encoder/embedding_hidden_mapping_in/kernel");
    let target = format!("{pre}encoder.embedding_hidden_mapping_in");
    if e == h && !b.has(&projection) {
        let why = "embedding_size == hidden_size: the original applies no projection";
        b.synthesize(format!("{target}.weight"), vec![h, e], Fill::Identity, why);
        b.synthesize(format!("{target}.bias"), vec![h], Fill::Zeros, why);
    } else {
        b.map(format!("{target}.weight"), projection, vec![Transpose], vec![h, e]);
        b.map(format!("{target}.bias"), var("bert/encoder/embedding_hidden_mapping_in/bias"), vec![], vec![h]);
    }
    for g in 0..cfg.num_hidden_groups {
        for j in 0..cfg.inner_group_num {
            let src = var(&inner_group_scope(g, j));
            let dst = format!("{pre}encoder.albert_layer_groups.{g}.albert_layers.{j}");
            let dense = |b: &mut PlanBuilder, to: &str, from: &str, out: usize, inp: usize| {
                b.map(format!("{dst}.{to}.weight"), format!("{src}/{from}/kernel"), vec![Transpose], vec![out, inp]);
                b.map(format!("{dst}.{to}.bias"), format!("{src}/{from}/bias"), vec![], vec![out]);
            };
            let norm = |b: &mut PlanBuilder, to: &str, from: &str| {
                b.map(format!("{dst}.{to}.weight"), format!("{src}/{from}/gamma"), vec![], vec![h]);
                b.map(format!("{dst}.{to}.bias"), format!("{src}/{from}/beta"), vec![], vec![h]);
            };
            let [attention_norm, ffn_norm] = &names.block_norms[g][j];
            norm(&mut b, "full_layer_layer_norm", ffn_norm);
            for proj in ["query", "key", "value"] {
                dense(&mut b, &format!("attention.{proj}"), &format!("attention_1/self/{proj}"), h, h);
            }
            dense(&mut b, "attention.dense", "attention_1/output/dense", h, h);
            norm(&mut b, "attention.LayerNorm", attention_norm);
            dense(&mut b, "ffn", "ffn_1/intermediate/dense", i, h);
            dense(&mut b, "ffn_output", "ffn_1/intermediate/output/dense", h, i);
        }
    }
    b.map(format!("{pre}pooler.weight"), var("bert/pooler/dense/kernel"), vec![Transpose], vec![h, h]);
    b.map(format!("{pre}pooler.bias"), var("bert/pooler/dense/bias"), vec![], vec![h]);
    let has_mlm = b.has(&var("cls/predictions/output_bias"));
    match head {
        Head::PreTraining => {
            let p = "cls/predictions";
            b.map("predictions.bias", var(&format!("{p}/output_bias")), vec![], vec![v]);
            b.map("predictions.dense.weight", var(&format!("{p}/transform/dense/kernel")), vec![Transpose], vec![e, h]);
            b.map("predictions.dense.bias", var(&format!("{p}/transform/dense/bias")), vec![], vec![e]);
            b.map("predictions.LayerNorm.weight", var(&format!("{p}/transform/{}/gamma", names.mlm_norm)), vec![], vec![e]);
            b.map("predictions.LayerNorm.bias", var(&format!("{p}/transform/{}/beta", names.mlm_norm)), vec![], vec![e]);
            b.map("sop_classifier.classifier.weight", var("cls/seq_relationship/output_weights"), vec![], vec![2, h]);
            b.map("sop_classifier.classifier.bias", var("cls/seq_relationship/output_bias"), vec![], vec![2]);
        }
        Head::SequenceClassification { num_labels } => {
            b.map("classifier.weight", "output_weights", vec![], vec![num_labels, h]);
            b.map("classifier.bias", "output_bias", vec![], vec![num_labels]);
            // A fine-tune restored from a pretraining checkpoint keeps the pretraining heads.
            if has_mlm {
                for n in ["output_bias", "transform/dense/kernel", "transform/dense/bias"] {
                    b.drop_unused(&var(&format!("cls/predictions/{n}")), "pretraining head; AlbertForSequenceClassification has no MLM head");
                }
                for n in ["gamma", "beta"] {
                    b.drop_unused(&var(&format!("cls/predictions/transform/{}/{n}", names.mlm_norm)), "pretraining head");
                }
            }
            for n in ["output_weights", "output_bias"] {
                let sop = var(&format!("cls/seq_relationship/{n}"));
                if b.has(&sop) {
                    b.drop_unused(&sop, "pretraining head; AlbertForSequenceClassification has no SOP head");
                }
            }
        }
        Head::Base => {}
    }
    b.finish(role)
}

/// HF `config.json` (architectures.md §2.4).
pub fn hf_config(original: &serde_json::Value, cfg: &AlbertConfig, head: Head, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
    let mut c = original.as_object().cloned().unwrap_or_default();
    c.insert("model_type".into(), json!("albert"));
    c.insert("architectures".into(), json!([head.class_name()]));
    c.insert("hidden_act".into(), json!(cfg.hidden_act));
    for (k, v) in [
        ("embedding_size", json!(cfg.embedding_size)),
        ("num_hidden_groups", json!(cfg.num_hidden_groups)),
        ("inner_group_num", json!(cfg.inner_group_num)),
        ("max_position_embeddings", json!(cfg.max_position_embeddings)),
        ("type_vocab_size", json!(cfg.type_vocab_size)),
    ] {
        c.insert(k.into(), v);
    }
    c.insert("layer_norm_eps".into(), json!(cfg.layer_norm_eps));
    for (k, v) in [("pad_token_id", json!(0)), ("bos_token_id", json!(2)), ("eos_token_id", json!(3)), ("classifier_dropout_prob", json!(0.1))] {
        c.entry(k).or_insert(v);
    }
    c.insert("dtype".into(), json!(dtype));
    if let Head::SequenceClassification { num_labels } = head {
        let ids: serde_json::Map<String, serde_json::Value> = (0..num_labels).map(|i| (i.to_string(), json!(format!("LABEL_{i}")))).collect();
        let labels: serde_json::Map<String, serde_json::Value> = (0..num_labels).map(|i| (format!("LABEL_{i}"), json!(i))).collect();
        c.insert("id2label".into(), serde_json::Value::Object(ids));
        c.insert("label2id".into(), serde_json::Value::Object(labels));
        if let Some(task) = finetuning_task {
            c.insert("finetuning_task".into(), json!(task));
        }
    }
    serde_json::Value::Object(c)
}

/// An ALBERT checkpoint (or HF folder) as tfconv converts and verifies it.
#[derive(Debug, Clone)]
pub struct Albert {
    /// The config with HF's `hidden_act`; the reference reads `original_act`.
    pub cfg: AlbertConfig,
    pub head: Head,
    pub names: Names,
    /// The original config's `hidden_act`, which the reference computes; `None` for a model
    /// described by an HF folder, which never drives the reference.
    original_act: Option<String>,
    original: serde_json::Value,
}

impl Albert {
    pub fn from_original(config: &serde_json::Value, vars: &[SourceVar]) -> Result<Albert, String> {
        let mut cfg = validate_config(config, ORIGINAL_ACTS)?;
        let original_act = cfg.hidden_act.clone();
        cfg.hidden_act = hf_hidden_act(&original_act);
        let names = Names::detect(&cfg, vars);
        let head = detect_head(vars, &names.prefix);
        Ok(Albert { cfg, head, names, original_act: Some(original_act), original: config.clone() })
    }

    pub fn from_hf_config(config: &serde_json::Value) -> Result<Albert, String> {
        let cfg = validate_config(config, HIDDEN_ACTS)?;
        let class = config.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).unwrap_or("AlbertModel");
        let head = match class {
            "AlbertForPreTraining" => Head::PreTraining,
            "AlbertForSequenceClassification" => {
                let num_labels = config.get("id2label").and_then(|m| m.as_object()).map(|m| m.len()).unwrap_or(2);
                Head::SequenceClassification { num_labels }
            }
            "AlbertModel" => Head::Base,
            other => return Err(format!("ALBERT class '{other}' is not supported")),
        };
        Ok(Albert { names: Names::released(&cfg), cfg, head, original_act: None, original: config.clone() })
    }

    fn part(&self, stage: &Stage) -> Result<Part, String> {
        parts(&self.cfg, self.head)
            .into_iter()
            .find(|p| p.name() == stage.name)
            .ok_or_else(|| format!("{} has no stage {:?}", self.head.class_name(), stage.name))
    }
}

/// ALBERT's line in the registry.
pub const FAMILY: crate::arch::Family = crate::arch::Family {
    model_type: "albert",
    config_names: &["albert_config.json", "config.json"],
    read_config: crate::arch::json_config,
    default_config: None,
    looks_like,
    from_original: |config, vars| Ok(Box::new(Albert::from_original(config, vars)?)),
    from_hf_config: |config| Ok(Box::new(Albert::from_hf_config(config)?)),
    golden_cases: synthetic::golden_cases,
};

/// The SentencePiece model files an ALBERT release ships, in order of preference.
const SPIECE_NAMES: &[&str] = &["spiece.model", "30k-clean.model"];

impl crate::arch::Architecture for Albert {
    fn model_type(&self) -> &'static str {
        "albert"
    }
    fn class_name(&self) -> &'static str {
        self.head.class_name()
    }
    fn plan(&self, vars: &[SourceVar]) -> Result<Plan, PlanError> {
        plan(&self.cfg, self.head, &self.names, vars)
    }
    fn hf_config(&self, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
        hf_config(&self.original, &self.cfg, self.head, dtype, finetuning_task)
    }
    fn vocabulary_sources(&self, search_dirs: &[&std::path::Path]) -> Vec<std::path::PathBuf> {
        search_dirs.iter().flat_map(|d| SPIECE_NAMES.iter().map(move |n| d.join(n))).find(|p| p.is_file()).into_iter().collect()
    }
    fn tokenizer_files(&self, search_dirs: &[&std::path::Path], options: &crate::arch::TokenizerOptions) -> Result<crate::arch::TokenizerFiles, String> {
        let found = search_dirs.iter().flat_map(|d| SPIECE_NAMES.iter().map(move |n| d.join(n))).find(|p| p.is_file());
        let Some(path) = found else { return Ok(Default::default()) };
        let model = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // ALBERT's SentencePiece models were trained on lower-cased text (albert tokenization.py).
        let tokenizer_config = json!({
            "tokenizer_class": "AlbertTokenizer",
            "do_lower_case": options.do_lower_case.unwrap_or(true),
            "keep_accents": false,
            "remove_space": true,
            "model_max_length": self.cfg.max_position_embeddings,
            "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]",
            "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]",
        });
        let special = json!({
            "bos_token": "[CLS]", "eos_token": "[SEP]", "unk_token": "<unk>", "sep_token": "[SEP]",
            "pad_token": "<pad>", "cls_token": "[CLS]", "mask_token": "[MASK]",
        });
        Ok(vec![
            ("spiece.model".into(), model),
            ("tokenizer_config.json".into(), serde_json::to_vec_pretty(&tokenizer_config).unwrap()),
            ("special_tokens_map.json".into(), serde_json::to_vec_pretty(&special).unwrap()),
        ]
        .into())
    }
    fn probes(&self, seed: u64, batch: usize, seq_len: Option<usize>) -> Probes {
        let max = self.cfg.max_position_embeddings;
        crate::probe::sentence_pairs(self.cfg.vocab_size, self.cfg.type_vocab_size, seed, batch, seq_len.unwrap_or(max).min(max))
    }
    fn max_seq_len(&self) -> Option<usize> {
        Some(self.cfg.max_position_embeddings)
    }
    fn stages(&self) -> Vec<Stage> {
        parts(&self.cfg, self.head)
            .into_iter()
            .map(|part| Stage {
                name: part.name(),
                original_vars: reference::original_vars(&self.cfg, &self.names, part),
                hf_tensors: candle::hf_tensors(&self.cfg, self.head, part),
                inputs: part.inputs(&self.cfg),
                outputs: part.outputs(),
            })
            .collect()
    }
    fn candle_stage(&self, stage: &Stage, vb: candle_nn::VarBuilder, inputs: &Values) -> candle_core::Result<Values> {
        let part = self.part(stage).map_err(candle_core::Error::msg)?;
        crate::candle_util::run_stage(vb, stage, inputs, |vb, xs| candle::run_part(vb, &self.cfg, self.head, part, xs))
    }
    fn reference_stage(&self, stage: &Stage, weights: &crate::tf_graph::OriginalWeights, inputs: &Values) -> anyhow::Result<Values> {
        let part = self.part(stage).map_err(anyhow::Error::msg)?;
        let act = self.original_act.as_deref().context("the TensorFlow reference runs from the original config, not an HF folder's")?;
        reference::stage(weights, &self.cfg, act, &self.names, part, stage, inputs)
    }
    fn tied_aliases(&self) -> Vec<(String, String)> {
        match self.head {
            Head::PreTraining => vec![
                ("predictions.decoder.weight".into(), "albert.embeddings.word_embeddings.weight".into()),
                ("predictions.decoder.bias".into(), "predictions.bias".into()),
            ],
            _ => Vec::new(),
        }
    }
    fn hf_output_fields(&self) -> Vec<(&'static str, &'static str)> {
        match self.head {
            Head::PreTraining => vec![("mlm_logits", "prediction_logits"), ("sop_logits", "sop_logits")],
            Head::SequenceClassification { .. } => vec![("logits", "logits")],
            Head::Base => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str) -> SourceVar {
        SourceVar { name: name.into(), shape: vec![4] }
    }

    fn cfg(layers: usize, groups: usize, inner: usize) -> AlbertConfig {
        serde_json::from_value(json!({
            "vocab_size": 10, "embedding_size": 4, "hidden_size": 8, "num_hidden_layers": layers,
            "num_hidden_groups": groups, "inner_group_num": inner, "num_attention_heads": 2, "intermediate_size": 12
        }))
        .unwrap()
    }

    #[test]
    fn norms_are_read_in_creation_order_in_either_spelling() {
        let scope = "bert/encoder/transformer/group_0/inner_group_0";
        let released = [var(&format!("{scope}/LayerNorm_1/gamma")), var(&format!("{scope}/LayerNorm/gamma")), var(&format!("{scope}/LayerNorm/beta"))];
        assert_eq!(norms_in(&released, scope), ["LayerNorm", "LayerNorm_1"]);
        // Keras numbers across the model: _10 comes after _9, not after _1.
        let keras = [var(&format!("{scope}/layer_normalization_10/gamma")), var(&format!("{scope}/layer_normalization_9/gamma"))];
        assert_eq!(norms_in(&keras, scope), ["layer_normalization_9", "layer_normalization_10"]);
        let nested = [var(&format!("{scope}/ffn_1/LayerNorm/gamma"))];
        assert!(norms_in(&nested, scope).is_empty(), "only norms directly under the scope count");
        let names = Names::detect(&cfg(1, 1, 1), &[var("module/bert/embeddings/layer_normalization/gamma"), var(&format!("module/{scope}/layer_normalization_1/gamma")), var(&format!("module/{scope}/layer_normalization_2/gamma"))]);
        assert_eq!(names.prefix, "module/");
        assert_eq!(names.embedding_norm, "layer_normalization");
        assert_eq!(names.block_norms, vec![vec![["layer_normalization_1".to_string(), "layer_normalization_2".to_string()]]]);
        assert_eq!(names.mlm_norm, "LayerNorm", "absent: the released name, which the plan then reports missing");
    }

    #[test]
    fn groups_follow_the_original_and_hf_disagreements_are_refused() {
        let c = cfg(12, 3, 1);
        let groups: Vec<usize> = (0..12).map(|l| c.original_group(l)).collect();
        assert_eq!(groups, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert!(c.check_hf_can_run().is_ok());
        assert!(cfg(4, 2, 3).check_hf_can_run().unwrap_err().contains("IndexError"));
        let e = cfg(22, 22, 1).check_hf_can_run().unwrap_err();
        assert!(e.contains("layer 15 in group 14 but transformers runs it in group 15"), "{e}");
        // Exhaustively, for the depths released models use: agreement means every group is run.
        for l in 1..=24 {
            for g in 1..=l {
                let c = cfg(l, g, 1);
                if c.check_hf_can_run().is_ok() {
                    assert!((0..g).all(|k| (0..l).any(|i| c.original_group(i) == k)), "L={l} G={g}");
                }
            }
        }
    }

    #[test]
    fn detection_tells_albert_from_bert_and_names_ambiguity() {
        let albert = [var("bert/embeddings/word_embeddings"), var("bert/encoder/transformer/group_0/inner_group_0/attention_1/self/query/kernel")];
        let bert = [var("bert/embeddings/word_embeddings"), var("bert/encoder/layer_0/attention/self/query/kernel")];
        assert_eq!(crate::arch::detect_model_type(&albert), Ok("albert"));
        assert_eq!(crate::arch::detect_model_type(&bert), Ok("bert"));
        let hub: Vec<SourceVar> = albert.iter().map(|v| var(&format!("module/{}", v.name))).collect();
        assert_eq!(crate::arch::detect_model_type(&hub), Ok("albert"));
        let both: Vec<SourceVar> = albert.iter().chain(&bert).cloned().collect();
        assert_eq!(crate::arch::detect_model_type(&both).unwrap_err(), "the variable names fit several model types (bert, albert); pass --model-type");
    }

    #[test]
    fn config_json_says_what_the_original_computes() {
        let original = json!({
            "vocab_size": 10, "embedding_size": 4, "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 12, "hidden_act": "gelu", "down_scale_factor": 1
        });
        let albert = Albert::from_original(&original, &[var("output_weights")]).unwrap();
        let hf = crate::arch::Architecture::hf_config(&albert, "float32", Some("sst-2"));
        assert_eq!((hf["hidden_act"].as_str(), hf["model_type"].as_str()), (Some("gelu_new"), Some("albert")));
        assert_eq!((hf["num_hidden_groups"].as_u64(), hf["inner_group_num"].as_u64()), (Some(1), Some(1)));
        assert_eq!(hf["architectures"][0], "AlbertForSequenceClassification");
        assert_eq!(hf["finetuning_task"], "sst-2");
        // The converted config reads back as the same model.
        let back = Albert::from_hf_config(&hf).unwrap();
        assert_eq!((back.cfg, back.head), (albert.cfg.clone(), albert.head));
        let mut relu = original.clone();
        relu["hidden_act"] = json!("relu");
        let relu = Albert::from_original(&relu, &[]).unwrap();
        assert_eq!(crate::arch::Architecture::hf_config(&relu, "float32", None)["hidden_act"], "relu");
    }
}
