//! XLNet (zihangdai/xlnet) → `XLNetLMHeadModel`, or `XLNetForSequenceClassification` for
//! run_classifier fine-tunes (regression like sts-b, and classification heads HF's converter
//! leaves random). Facts: architectures.md §5.
//!
//! Beyond HF's converter: shared relative biases (`untie_r` false) are copied into every layer,
//! which is what the original computes; a missing `mask_emb`, `lm_loss/bias` or segment
//! embedding becomes zeros (what the original computes without them) rather than random values;
//! and a checkpoint whose head width is not `d_model / n_head` is refused, since HF derives it.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::plan::{Fill, Plan, PlanBuilder, PlanError, SourceVar, Transform};
use crate::probe::Probes;
use crate::roles::role;
use crate::stage::{Stage, Values};

pub mod candle;
pub mod probes;
pub mod reference;
pub mod synthetic;

/// `xlnet_config.json` (xlnet.py `XLNetConfig.keys`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XlnetConfig {
    pub n_token: usize,
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub d_head: usize,
    pub d_inner: usize,
    /// "gelu" (the original's tanh approximation) or "relu".
    pub ff_activation: String,
    pub untie_r: bool,
}

/// The original variables live under `model/transformer`.
const T: &str = "model/transformer";

/// Which model the checkpoint holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// `XLNetLMHeadModel`: pretraining checkpoints, and any checkpoint without a task head.
    LmHead,
    /// `XLNetForSequenceClassification` from `model/regression_{task}` (one label) or
    /// `model/classification_{task}` (`n_class` labels).
    SequenceClassification { task: String, regression: bool, num_labels: usize },
}

impl Head {
    pub fn class_name(&self) -> &'static str {
        match self {
            Head::LmHead => "XLNetLMHeadModel",
            Head::SequenceClassification { .. } => "XLNetForSequenceClassification",
        }
    }

    /// The original scope of the task head's logit layer.
    fn logit_scope(&self) -> Option<String> {
        match self {
            Head::SequenceClassification { task, regression: true, .. } => Some(format!("model/regression_{task}/logit")),
            Head::SequenceClassification { task, regression: false, .. } => Some(format!("model/classification_{task}/logit")),
            Head::LmHead => None,
        }
    }
}

/// The task heads in a checkpoint: `model/{regression,classification}_{task}/logit/kernel`.
fn task_heads(vars: &[SourceVar]) -> Vec<Head> {
    vars.iter()
        .filter_map(|v| {
            let scope = v.name.strip_prefix("model/")?.strip_suffix("/logit/kernel")?;
            let classes = v.shape.get(1).copied().unwrap_or(0);
            if let Some(task) = scope.strip_prefix("regression_") {
                Some(Head::SequenceClassification { task: task.into(), regression: true, num_labels: 1 })
            } else {
                let task = scope.strip_prefix("classification_")?;
                Some(Head::SequenceClassification { task: task.into(), regression: false, num_labels: classes })
            }
        })
        .collect()
}

/// The head of a checkpoint: its task head if it has exactly one (or the one `task` names).
pub fn detect_head(vars: &[SourceVar], task: Option<&str>) -> Result<Head, String> {
    let heads = task_heads(vars);
    let named = |h: &Head| match (h, task) {
        (Head::SequenceClassification { task: t, .. }, Some(want)) => t.eq_ignore_ascii_case(want),
        _ => true,
    };
    let fitting: Vec<&Head> = heads.iter().filter(|h| named(h)).collect();
    match (fitting.as_slice(), task) {
        ([one], _) => Ok((*one).clone()),
        ([], None) => Ok(Head::LmHead),
        ([], Some(want)) if heads.is_empty() => Err(format!(
            "--finetuning_task_name {want}: the checkpoint has no task head (model/regression_{want}/logit or model/classification_{want}/logit); it converts to XLNetLMHeadModel without the flag"
        )),
        ([], Some(want)) => Err(format!("--finetuning_task_name {want}: the checkpoint's task heads are {}", describe(&heads))),
        (many, _) => Err(format!("the checkpoint has several task heads ({}); pass --finetuning_task_name", describe(&many.iter().map(|h| (*h).clone()).collect::<Vec<_>>()))),
    }
}

fn describe(heads: &[Head]) -> String {
    heads
        .iter()
        .filter_map(|h| h.logit_scope())
        .map(|s| s.trim_start_matches("model/").trim_end_matches("/logit").to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a checkpoint looks like XLNet's.
pub fn looks_like(vars: &[SourceVar]) -> bool {
    vars.iter().any(|v| v.name == format!("{T}/word_embedding/lookup_table"))
}

/// One stage. With two streams (`XLNetLMHeadModel`), the embeddings also give the query stream's
/// start (`mask_emb` for each prediction), every layer also runs both streams under the
/// permutation mask, and the LM head also reads the query stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Embeddings,
    Layer(usize),
    Lm,
    /// The sequence summary (last position, dense, tanh).
    Summary,
    /// `logits_proj` on the summary.
    Logits,
}

impl Part {
    pub fn name(self) -> String {
        match self {
            Part::Embeddings => "embeddings".into(),
            Part::Layer(i) => format!("layer.{i}"),
            Part::Lm => "lm".into(),
            Part::Summary => "summary".into(),
            Part::Logits => "logits".into(),
        }
    }

    fn previous(layer: usize) -> String {
        match layer {
            0 => "embeddings".into(),
            i => format!("layer.{}", i - 1),
        }
    }

    pub fn inputs(self, cfg: &XlnetConfig, two_stream: bool) -> Vec<String> {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let last = Part::previous(cfg.n_layer);
        match (self, two_stream) {
            (Part::Embeddings, false) => strings(&["input_ids"]),
            (Part::Embeddings, true) => strings(&["input_ids", "target_mapping"]),
            (Part::Layer(i), false) => vec![Part::previous(i), "token_type_ids".into(), "attention_mask".into()],
            (Part::Layer(i), true) => {
                let prev = Part::previous(i);
                let perm = if i == 0 { prev.clone() } else { format!("{prev}.perm") };
                let mut v = vec![prev.clone(), "token_type_ids".into(), "attention_mask".into(), perm, format!("{prev}.query")];
                v.extend(strings(&["perm_mask", "target_mapping"]));
                v
            }
            (Part::Lm, false) => vec![last],
            (Part::Lm, true) => vec![last.clone(), format!("{last}.query")],
            (Part::Summary, _) => vec![last],
            (Part::Logits, _) => strings(&["summary"]),
        }
    }

    pub fn outputs(self, two_stream: bool) -> Vec<String> {
        match (self, two_stream) {
            (Part::Embeddings, false) => vec!["embeddings".into()],
            (Part::Embeddings, true) => vec!["embeddings".into(), "embeddings.query".into()],
            (Part::Layer(i), false) => vec![format!("layer.{i}")],
            (Part::Layer(i), true) => vec![format!("layer.{i}"), format!("layer.{i}.perm"), format!("layer.{i}.query")],
            (Part::Lm, false) => vec!["lm_logits".into()],
            (Part::Lm, true) => vec!["lm_logits".into(), "lm_logits.query".into()],
            (Part::Summary, _) => vec!["summary".into()],
            (Part::Logits, _) => vec!["logits".into()],
        }
    }
}

pub fn parts(cfg: &XlnetConfig, head: &Head) -> Vec<Part> {
    let mut parts = vec![Part::Embeddings];
    parts.extend((0..cfg.n_layer).map(Part::Layer));
    match head {
        Head::LmHead => parts.push(Part::Lm),
        Head::SequenceClassification { .. } => parts.extend([Part::Summary, Part::Logits]),
    }
    parts
}

/// The HF `ff_activation` for the original's: its "gelu" is the tanh approximation.
pub fn hf_activation(original: &str) -> String {
    match original {
        "gelu" => "gelu_new".into(),
        other => other.into(),
    }
}

pub const ORIGINAL_ACTS: &[&str] = &["gelu", "relu"];
pub const HF_ACTS: &[&str] = &["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"];

/// Checks an `xlnet_config.json` (original key names; an HF config.json is read through
/// [`from_hf_json`] first), naming the field and value.
pub fn validate_config(config: &serde_json::Value, acts: &[&str]) -> Result<XlnetConfig, String> {
    let obj = config.as_object().ok_or_else(|| format!("the config is not a JSON object: {config}"))?;
    for field in ["n_token", "d_model", "n_layer", "n_head", "d_head", "d_inner"] {
        let v = obj.get(field).ok_or_else(|| format!("{field} is missing"))?;
        if v.as_u64().is_none_or(|n| n == 0) {
            return Err(format!("{field} must be a positive integer, got {v}"));
        }
    }
    match obj.get("ff_activation") {
        Some(serde_json::Value::String(a)) if acts.contains(&a.as_str()) => {}
        Some(v) => return Err(format!("ff_activation {v} is not supported (allowed: {})", acts.join(", "))),
        None => return Err("ff_activation is missing".into()),
    }
    if !obj.get("untie_r").is_some_and(|v| v.is_boolean()) {
        return Err(format!("untie_r must be true or false, got {}", obj.get("untie_r").cloned().unwrap_or(serde_json::Value::Null)));
    }
    let cfg: XlnetConfig = serde_json::from_value(config.clone()).map_err(|e| format!("config: {e}"))?;
    if !cfg.d_model.is_multiple_of(2) {
        return Err(format!("d_model {} is odd: the sinusoid position encoding has d_model / 2 frequencies", cfg.d_model));
    }
    if cfg.n_head * cfg.d_head != cfg.d_model {
        return Err(format!(
            "d_head {} × n_head {} ≠ d_model {}: transformers' XLNetConfig derives d_head as d_model / n_head and cannot \
             represent this model (the original can); refusing to write a folder transformers cannot load",
            cfg.d_head, cfg.n_head, cfg.d_model
        ));
    }
    Ok(cfg)
}

/// The original config read from an HF `config.json` (vocab_size is `n_token`; HF always unties).
pub fn from_hf_json(config: &serde_json::Value) -> serde_json::Value {
    let mut c = config.as_object().cloned().unwrap_or_default();
    if let Some(v) = c.get("vocab_size").cloned() {
        c.entry("n_token").or_insert(v);
    }
    c.entry("untie_r").or_insert(json!(true));
    serde_json::Value::Object(c)
}

/// Checks the kernels against the config: their head width is the model's truth.
fn check_kernels(cfg: &XlnetConfig, vars: &[SourceVar]) -> Result<(), String> {
    for v in vars.iter().filter(|v| v.name.starts_with(&format!("{T}/layer_")) && v.name.contains("/rel_attn/")) {
        if let [d, n, dh] = v.shape[..] {
            if (d, n, dh) != (cfg.d_model, cfg.n_head, cfg.d_head) {
                let hf = if n > 0 && d % n == 0 { format!(" (transformers would assume d_head {})", d / n) } else { String::new() };
                return Err(format!(
                    "{} has shape [{d}, {n}, {dh}]: d_model {d}, n_head {n}, d_head {dh}, but the config says {}, {}, {}{hf}; \
                     transformers' XLNetConfig requires d_head = d_model / n_head",
                    v.name, cfg.d_model, cfg.n_head, cfg.d_head
                ));
            }
        }
    }
    Ok(())
}

/// The explicit original → HF table (architectures.md §5.3).
pub fn plan(cfg: &XlnetConfig, head: &Head, vars: &[SourceVar]) -> Result<Plan, PlanError> {
    use Transform::{Select, Transpose};
    check_kernels(cfg, vars).map_err(PlanError::Other)?;
    let (v, d, n, dh, inner) = (cfg.n_token, cfg.d_model, cfg.n_head, cfg.d_head, cfg.d_inner);
    let mut b = PlanBuilder::new(vars);
    b.map("transformer.word_embedding.weight", format!("{T}/word_embedding/lookup_table"), vec![], vec![v, d]);
    let mask_emb = format!("{T}/mask_emb/mask_emb");
    if b.has(&mask_emb) {
        b.map("transformer.mask_emb", mask_emb, vec![], vec![1, 1, d]);
    } else {
        b.synthesize("transformer.mask_emb", vec![1, 1, d], Fill::Zeros, "the checkpoint has no mask_emb (fine-tuned checkpoints drop it); it only feeds the query stream");
    }
    let has_segments = b.has(&format!("{T}/seg_embed"));
    for l in 0..cfg.n_layer {
        let src = format!("{T}/layer_{l}");
        let dst = format!("transformer.layer.{l}");
        for k in ["q", "k", "v", "o", "r"] {
            b.map(format!("{dst}.rel_attn.{k}"), format!("{src}/rel_attn/{k}/kernel"), vec![], vec![d, n, dh]);
        }
        for bias in ["r_w_bias", "r_r_bias", "r_s_bias"] {
            let target = format!("{dst}.rel_attn.{bias}");
            match (bias, has_segments, cfg.untie_r) {
                ("r_s_bias", false, _) => b.synthesize(target, vec![n, dh], Fill::Zeros, "no segment embedding in the checkpoint: the original adds no segment term"),
                (_, _, true) => b.map(target, format!("{T}/{bias}"), vec![Select { axis: 0, index: l }], vec![n, dh]),
                // untie_r false: one bias shared by every layer, which HF keeps per layer.
                (_, _, false) => b.map(target, format!("{T}/{bias}"), vec![], vec![n, dh]),
            }
        }
        let seg = format!("{dst}.rel_attn.seg_embed");
        match has_segments {
            true => b.map(seg, format!("{T}/seg_embed"), vec![Select { axis: 0, index: l }], vec![2, n, dh]),
            false => b.synthesize(seg, vec![2, n, dh], Fill::Zeros, "no segment embedding in the checkpoint: the original adds no segment term"),
        }
        b.map(format!("{dst}.rel_attn.layer_norm.weight"), format!("{src}/rel_attn/LayerNorm/gamma"), vec![], vec![d]);
        b.map(format!("{dst}.rel_attn.layer_norm.bias"), format!("{src}/rel_attn/LayerNorm/beta"), vec![], vec![d]);
        b.map(format!("{dst}.ff.layer_norm.weight"), format!("{src}/ff/LayerNorm/gamma"), vec![], vec![d]);
        b.map(format!("{dst}.ff.layer_norm.bias"), format!("{src}/ff/LayerNorm/beta"), vec![], vec![d]);
        b.map(format!("{dst}.ff.layer_1.weight"), format!("{src}/ff/layer_1/kernel"), vec![Transpose], vec![inner, d]);
        b.map(format!("{dst}.ff.layer_1.bias"), format!("{src}/ff/layer_1/bias"), vec![], vec![inner]);
        b.map(format!("{dst}.ff.layer_2.weight"), format!("{src}/ff/layer_2/kernel"), vec![Transpose], vec![d, inner]);
        b.map(format!("{dst}.ff.layer_2.bias"), format!("{src}/ff/layer_2/bias"), vec![], vec![d]);
    }
    let lm_bias = "model/lm_loss/bias";
    let summary = "model/sequnece_summary/summary";
    match head {
        Head::LmHead => {
            if b.has(lm_bias) {
                b.map("lm_loss.bias", lm_bias, vec![], vec![v]);
            } else {
                b.synthesize("lm_loss.bias", vec![v], Fill::Zeros, "the checkpoint has no lm_loss/bias (fine-tuned checkpoints drop it)");
            }
            // A fine-tune converted as a language model keeps its summary unused.
            for name in [format!("{summary}/kernel"), format!("{summary}/bias")] {
                if b.has(&name) {
                    b.drop_unused(&name, "sequence summary of a fine-tune; XLNetLMHeadModel has none");
                }
            }
        }
        Head::SequenceClassification { num_labels, .. } => {
            b.map("sequence_summary.summary.weight", format!("{summary}/kernel"), vec![Transpose], vec![d, d]);
            b.map("sequence_summary.summary.bias", format!("{summary}/bias"), vec![], vec![d]);
            let logit = head.logit_scope().expect("a task head has a logit scope");
            b.map("logits_proj.weight", format!("{logit}/kernel"), vec![Transpose], vec![*num_labels, d]);
            b.map("logits_proj.bias", format!("{logit}/bias"), vec![], vec![*num_labels]);
            if b.has(lm_bias) {
                b.drop_unused(lm_bias, "pretraining LM bias; XLNetForSequenceClassification has no LM head");
            }
        }
    }
    b.finish(role)
}

/// HF `config.json` (architectures.md §5.4).
pub fn hf_config(original: &serde_json::Value, cfg: &XlnetConfig, head: &Head, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
    let mut c = original.as_object().cloned().unwrap_or_default();
    c.remove("n_token");
    for (k, v) in [
        ("model_type", json!("xlnet")),
        ("architectures", json!([head.class_name()])),
        ("vocab_size", json!(cfg.n_token)),
        ("d_model", json!(cfg.d_model)),
        ("n_layer", json!(cfg.n_layer)),
        ("n_head", json!(cfg.n_head)),
        ("d_head", json!(cfg.d_head)),
        ("d_inner", json!(cfg.d_inner)),
        ("ff_activation", json!(hf_activation(&cfg.ff_activation))),
        // Shared biases are written into every layer.
        ("untie_r", json!(true)),
        ("attn_type", json!("bi")),
        ("layer_norm_eps", json!(1e-12)),
        ("dtype", json!(dtype)),
    ] {
        c.insert(k.into(), v);
    }
    for (k, v) in [
        ("pad_token_id", json!(5)),
        ("bos_token_id", json!(1)),
        ("eos_token_id", json!(2)),
        ("summary_type", json!("last")),
        ("summary_use_proj", json!(true)),
        ("summary_activation", json!("tanh")),
        ("summary_last_dropout", json!(0.1)),
    ] {
        c.entry(k).or_insert(v);
    }
    if let Head::SequenceClassification { task, num_labels, .. } = head {
        let ids: serde_json::Map<String, serde_json::Value> = (0..*num_labels).map(|i| (i.to_string(), json!(format!("LABEL_{i}")))).collect();
        let labels: serde_json::Map<String, serde_json::Value> = (0..*num_labels).map(|i| (format!("LABEL_{i}"), json!(i))).collect();
        c.insert("id2label".into(), serde_json::Value::Object(ids));
        c.insert("label2id".into(), serde_json::Value::Object(labels));
        c.insert("finetuning_task".into(), json!(finetuning_task.unwrap_or(task)));
    } else if let Some(task) = finetuning_task {
        c.insert("finetuning_task".into(), json!(task));
    }
    serde_json::Value::Object(c)
}

/// An XLNet checkpoint (or HF folder) as tfconv converts and verifies it.
#[derive(Debug, Clone)]
pub struct Xlnet {
    /// The original config (its `ff_activation` is the original's).
    pub cfg: XlnetConfig,
    pub head: Head,
    /// HF's activation name, which the candle side computes.
    pub hf_act: String,
    /// Whether the original has these (else the reference uses what tfconv writes: zeros).
    pub has_mask_emb: bool,
    pub has_segments: bool,
    pub has_lm_bias: bool,
    from_folder: bool,
    original: serde_json::Value,
}

impl Xlnet {
    pub fn from_original(config: &serde_json::Value, vars: &[SourceVar]) -> Result<Xlnet, String> {
        let cfg = validate_config(config, ORIGINAL_ACTS)?;
        check_kernels(&cfg, vars)?;
        let task = config.get("finetuning_task").and_then(|t| t.as_str());
        let head = detect_head(vars, task)?;
        let has = |name: &str| vars.iter().any(|v| v.name == name);
        Ok(Xlnet {
            hf_act: hf_activation(&cfg.ff_activation),
            has_mask_emb: has(&format!("{T}/mask_emb/mask_emb")),
            has_segments: has(&format!("{T}/seg_embed")),
            has_lm_bias: has("model/lm_loss/bias"),
            cfg,
            head,
            from_folder: false,
            original: config.clone(),
        })
    }

    pub fn from_hf_config(config: &serde_json::Value) -> Result<Xlnet, String> {
        let original = from_hf_json(config);
        let cfg = validate_config(&original, HF_ACTS)?;
        let class = config.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).unwrap_or("XLNetLMHeadModel");
        let head = match class {
            "XLNetLMHeadModel" => Head::LmHead,
            "XLNetForSequenceClassification" => {
                let num_labels = config.get("id2label").and_then(|m| m.as_object()).map(|m| m.len()).unwrap_or(2);
                let task = config.get("finetuning_task").and_then(|t| t.as_str()).unwrap_or("").to_string();
                Head::SequenceClassification { task, regression: num_labels == 1, num_labels }
            }
            other => return Err(format!("XLNet class '{other}' is not supported")),
        };
        Ok(Xlnet { hf_act: cfg.ff_activation.clone(), cfg, head, has_mask_emb: true, has_segments: true, has_lm_bias: true, from_folder: true, original: config.clone() })
    }

    /// The two streams run for the language model; a classifier reads the content stream only.
    pub fn two_stream(&self) -> bool {
        self.head == Head::LmHead
    }

    fn part(&self, stage: &Stage) -> Result<Part, String> {
        parts(&self.cfg, &self.head)
            .into_iter()
            .find(|p| p.name() == stage.name)
            .ok_or_else(|| format!("{} has no stage {:?}", self.head.class_name(), stage.name))
    }
}

/// XLNet's line in the registry.
pub const FAMILY: crate::arch::Family = crate::arch::Family {
    model_type: "xlnet",
    config_names: &["xlnet_config.json", "config.json"],
    default_config: None,
    read_config: crate::arch::json_config,
    looks_like,
    from_original: |config, vars| Ok(Box::new(Xlnet::from_original(config, vars)?)),
    from_hf_config: |config| Ok(Box::new(Xlnet::from_hf_config(config)?)),
    golden_cases: synthetic::golden_cases,
};

impl crate::arch::Architecture for Xlnet {
    fn model_type(&self) -> &'static str {
        "xlnet"
    }
    fn class_name(&self) -> &'static str {
        self.head.class_name()
    }
    fn plan(&self, vars: &[SourceVar]) -> Result<Plan, PlanError> {
        plan(&self.cfg, &self.head, vars)
    }
    fn hf_config(&self, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
        hf_config(&self.original, &self.cfg, &self.head, dtype, finetuning_task)
    }
    fn vocabulary_sources(&self, search_dirs: &[&std::path::Path]) -> Vec<std::path::PathBuf> {
        crate::arch::found_in(search_dirs, &["spiece.model"])
    }
    fn tokenizer_files(&self, search_dirs: &[&std::path::Path], options: &crate::arch::TokenizerOptions) -> Result<crate::arch::TokenizerFiles, String> {
        let Some(path) = search_dirs.iter().map(|d| d.join("spiece.model")).find(|p| p.is_file()) else { return Ok(Default::default()) };
        let model = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // The released models are cased (cased_L-24_H-1024_A-16).
        let special = json!({
            "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "<sep>",
            "pad_token": "<pad>", "cls_token": "<cls>", "mask_token": "<mask>", "additional_special_tokens": ["<eop>", "<eod>"],
        });
        let mut tokenizer_config = special.clone();
        let obj = tokenizer_config.as_object_mut().expect("an object");
        obj.insert("tokenizer_class".into(), json!("XLNetTokenizer"));
        obj.insert("do_lower_case".into(), json!(options.do_lower_case.unwrap_or(false)));
        obj.insert("remove_space".into(), json!(true));
        obj.insert("keep_accents".into(), json!(false));
        obj.insert("padding_side".into(), json!("left"));
        Ok(vec![
            ("spiece.model".into(), model),
            ("tokenizer_config.json".into(), serde_json::to_vec_pretty(&tokenizer_config).unwrap()),
            ("special_tokens_map.json".into(), serde_json::to_vec_pretty(&special).unwrap()),
        ]
        .into())
    }
    fn probes(&self, seed: u64, batch: usize, seq_len: Option<usize>) -> Probes {
        probes::random(&self.cfg, self.two_stream(), seed, batch, seq_len.unwrap_or(probes::DEFAULT_LEN))
    }
    fn max_seq_len(&self) -> Option<usize> {
        None
    }
    fn stages(&self) -> Vec<Stage> {
        let two = self.two_stream();
        parts(&self.cfg, &self.head)
            .into_iter()
            .map(|part| Stage {
                name: part.name(),
                original_vars: reference::original_vars(self, part),
                hf_tensors: candle::hf_tensors(part),
                inputs: part.inputs(&self.cfg, two),
                outputs: part.outputs(two),
            })
            .collect()
    }
    fn candle_stage(&self, stage: &Stage, vb: candle_nn::VarBuilder, inputs: &Values) -> candle_core::Result<Values> {
        let part = self.part(stage).map_err(candle_core::Error::msg)?;
        crate::candle_util::run_stage(vb, stage, inputs, |vb, xs| candle::run_part(vb, self, part, xs))
    }
    fn reference_stage(&self, stage: &Stage, weights: &crate::tf_graph::OriginalWeights, inputs: &Values) -> anyhow::Result<Values> {
        if self.from_folder {
            anyhow::bail!("the TensorFlow reference runs from the original config, not an HF folder's");
        }
        let part = self.part(stage).map_err(anyhow::Error::msg)?;
        reference::stage(self, weights, part, stage, inputs)
    }
    fn tied_aliases(&self) -> Vec<(String, String)> {
        match self.head {
            Head::LmHead => vec![("lm_loss.weight".into(), "transformer.word_embedding.weight".into())],
            _ => Vec::new(),
        }
    }
    fn hf_output_fields(&self) -> Vec<(&'static str, &'static str)> {
        match self.head {
            Head::LmHead => vec![("lm_logits", "logits")],
            Head::SequenceClassification { .. } => vec![("logits", "logits")],
        }
    }
    /// The content stream alone, then both streams: transformers returns each layer's (h, g)
    /// pair in `hidden_states` and the query stream's logits when given a target mapping.
    fn hf_passes(&self) -> Vec<crate::arch::HfPass> {
        let layers = 0..self.cfg.n_layer;
        let content = crate::arch::HfPass {
            inputs: Some(vec!["input_ids", "token_type_ids", "attention_mask"]),
            hidden: vec![("hidden_states", std::iter::once("embeddings".to_string()).chain(layers.clone().map(|i| format!("layer.{i}"))).collect())],
            fields: self.hf_output_fields(),
            unexposed: if self.two_stream() { Vec::new() } else { vec!["summary".into()] },
            carry: None,
        };
        if !self.two_stream() {
            return vec![content];
        }
        let mut both = vec!["embeddings".to_string(), "embeddings.query".to_string()];
        both.extend(layers.flat_map(|i| [format!("layer.{i}.perm"), format!("layer.{i}.query")]));
        vec![content, crate::arch::HfPass { inputs: None, hidden: vec![("hidden_states", both)], fields: vec![("lm_logits.query", "logits")], unexposed: Vec::new(), carry: None }]
    }
}
