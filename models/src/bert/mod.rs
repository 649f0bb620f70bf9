//! BERT (google-research/bert) → `BertForPreTraining` and its fine-tuned heads.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::plan::{Plan, PlanBuilder, PlanError, SourceVar, Transform};
use crate::probe::Probes;
use crate::roles::role;

pub mod candle;
pub mod reference;

/// `bert_config.json` as released, which is also a valid HF `config.json` for BERT (HF adds keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Original BERT hard-codes 1e-12 (tf.contrib.layers.layer_norm); HF spells it out.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// HF's flag; when false the MLM decoder has its own weight instead of the word embeddings.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
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
fn default_true() -> bool {
    true
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Which model the checkpoint holds, hence which HF class it converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// `BertForPreTraining`: MLM and next-sentence heads.
    PreTraining,
    /// `BertForSequenceClassification` (run_classifier fine-tunes).
    SequenceClassification { num_labels: usize },
    /// `BertForQuestionAnswering` (run_squad fine-tunes); HF's class has no pooler.
    QuestionAnswering,
    /// `BertModel`: the encoder with its pooler.
    Base,
}

impl Head {
    pub fn has_pooler(self) -> bool {
        !matches!(self, Head::QuestionAnswering)
    }
    /// The key prefix of the encoder in HF's state dict for this class.
    pub fn prefix(self) -> &'static str {
        match self {
            Head::Base => "",
            _ => "bert.",
        }
    }
}

/// Tells the head from the variables a checkpoint holds: the heads' own variables are unique to
/// each training script (run_pretraining, run_classifier, run_squad).
pub fn detect_head(vars: &[SourceVar]) -> Head {
    let find = |name: &str| vars.iter().find(|v| v.name == name);
    if find("cls/squad/output_weights").is_some() {
        Head::QuestionAnswering
    } else if let Some(w) = find("output_weights") {
        Head::SequenceClassification { num_labels: w.shape.first().copied().unwrap_or(0) }
    } else if find("cls/predictions/output_bias").is_some() {
        Head::PreTraining
    } else {
        Head::Base
    }
}

/// Whether a checkpoint looks like BERT's (used for --model-type detection).
pub fn looks_like(vars: &[SourceVar]) -> bool {
    vars.iter().any(|v| v.name == "bert/embeddings/word_embeddings")
}

impl Head {
    pub fn class_name(self) -> &'static str {
        match self {
            Head::PreTraining => "BertForPreTraining",
            Head::SequenceClassification { .. } => "BertForSequenceClassification",
            Head::QuestionAnswering => "BertForQuestionAnswering",
            Head::Base => "BertModel",
        }
    }
}

/// The explicit original → HF table (architectures.md §1.3), in HF state-dict order.
pub fn plan(cfg: &BertConfig, head: Head, vars: &[SourceVar]) -> Result<Plan, PlanError> {
    use Transform::Transpose;
    let (h, i, v, p, t) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings, cfg.type_vocab_size);
    if cfg.num_attention_heads == 0 || h % cfg.num_attention_heads != 0 {
        return Err(PlanError::Other(format!(
            "hidden_size {h} is not a multiple of num_attention_heads {}",
            cfg.num_attention_heads
        )));
    }
    let pre = head.prefix();
    let mut b = PlanBuilder::new(vars);
    let emb = "bert/embeddings";
    b.map(format!("{pre}embeddings.word_embeddings.weight"), format!("{emb}/word_embeddings"), vec![], vec![v, h]);
    b.map(format!("{pre}embeddings.position_embeddings.weight"), format!("{emb}/position_embeddings"), vec![], vec![p, h]);
    b.map(format!("{pre}embeddings.token_type_embeddings.weight"), format!("{emb}/token_type_embeddings"), vec![], vec![t, h]);
    b.map(format!("{pre}embeddings.LayerNorm.weight"), format!("{emb}/LayerNorm/gamma"), vec![], vec![h]);
    b.map(format!("{pre}embeddings.LayerNorm.bias"), format!("{emb}/LayerNorm/beta"), vec![], vec![h]);
    for l in 0..cfg.num_hidden_layers {
        let src = format!("bert/encoder/layer_{l}");
        let dst = format!("{pre}encoder.layer.{l}");
        for proj in ["query", "key", "value"] {
            b.map(format!("{dst}.attention.self.{proj}.weight"), format!("{src}/attention/self/{proj}/kernel"), vec![Transpose], vec![h, h]);
            b.map(format!("{dst}.attention.self.{proj}.bias"), format!("{src}/attention/self/{proj}/bias"), vec![], vec![h]);
        }
        let dense = |b: &mut PlanBuilder, dst_mod: &str, src_mod: &str, out: usize, inp: usize| {
            b.map(format!("{dst}.{dst_mod}.weight"), format!("{src}/{src_mod}/kernel"), vec![Transpose], vec![out, inp]);
            b.map(format!("{dst}.{dst_mod}.bias"), format!("{src}/{src_mod}/bias"), vec![], vec![out]);
        };
        let norm = |b: &mut PlanBuilder, dst_mod: &str, src_mod: &str| {
            b.map(format!("{dst}.{dst_mod}.weight"), format!("{src}/{src_mod}/gamma"), vec![], vec![h]);
            b.map(format!("{dst}.{dst_mod}.bias"), format!("{src}/{src_mod}/beta"), vec![], vec![h]);
        };
        dense(&mut b, "attention.output.dense", "attention/output/dense", h, h);
        norm(&mut b, "attention.output.LayerNorm", "attention/output/LayerNorm");
        dense(&mut b, "intermediate.dense", "intermediate/dense", i, h);
        dense(&mut b, "output.dense", "output/dense", h, i);
        norm(&mut b, "output.LayerNorm", "output/LayerNorm");
    }
    if head.has_pooler() {
        b.map(format!("{pre}pooler.dense.weight"), "bert/pooler/dense/kernel", vec![Transpose], vec![h, h]);
        b.map(format!("{pre}pooler.dense.bias"), "bert/pooler/dense/bias", vec![], vec![h]);
    } else {
        // run_squad keeps the pretrained pooler in its graph; HF's QA class has none.
        for name in ["bert/pooler/dense/kernel", "bert/pooler/dense/bias"] {
            if b.has(name) {
                b.drop_unused(name, "BertForQuestionAnswering has no pooler");
            }
        }
    }
    match head {
        Head::PreTraining => {
            b.map("cls.predictions.bias", "cls/predictions/output_bias", vec![], vec![v]);
            b.map("cls.predictions.transform.dense.weight", "cls/predictions/transform/dense/kernel", vec![Transpose], vec![h, h]);
            b.map("cls.predictions.transform.dense.bias", "cls/predictions/transform/dense/bias", vec![], vec![h]);
            b.map("cls.predictions.transform.LayerNorm.weight", "cls/predictions/transform/LayerNorm/gamma", vec![], vec![h]);
            b.map("cls.predictions.transform.LayerNorm.bias", "cls/predictions/transform/LayerNorm/beta", vec![], vec![h]);
            // output_weights is used with transpose_b=True, so it already is [out, in].
            b.map("cls.seq_relationship.weight", "cls/seq_relationship/output_weights", vec![], vec![2, h]);
            b.map("cls.seq_relationship.bias", "cls/seq_relationship/output_bias", vec![], vec![2]);
        }
        Head::SequenceClassification { num_labels } => {
            b.map("classifier.weight", "output_weights", vec![], vec![num_labels, h]);
            b.map("classifier.bias", "output_bias", vec![], vec![num_labels]);
        }
        Head::QuestionAnswering => {
            b.map("qa_outputs.weight", "cls/squad/output_weights", vec![], vec![2, h]);
            b.map("qa_outputs.bias", "cls/squad/output_bias", vec![], vec![2]);
        }
        Head::Base => {}
    }
    b.finish(role)
}

/// HF's config.json: every original key kept, plus what HF needs to reproduce the original's
/// numerics and pick the class (architectures.md §1.4).
pub fn hf_config(original: &serde_json::Value, cfg: &BertConfig, head: Head, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
    let mut out = original.as_object().cloned().unwrap_or_default();
    let mut set = |k: &str, v: serde_json::Value| {
        out.insert(k.to_string(), v);
    };
    set("architectures", json!([head.class_name()]));
    set("model_type", json!("bert"));
    set("hidden_act", json!(cfg.hidden_act));
    set("layer_norm_eps", json!(cfg.layer_norm_eps));
    set("max_position_embeddings", json!(cfg.max_position_embeddings));
    set("type_vocab_size", json!(cfg.type_vocab_size));
    set("pad_token_id", json!(0));
    set("position_embedding_type", json!("absolute"));
    set("tie_word_embeddings", json!(cfg.tie_word_embeddings));
    set("dtype", json!(dtype));
    if let Head::SequenceClassification { num_labels } = head {
        let id2label: serde_json::Map<String, serde_json::Value> =
            (0..num_labels).map(|k| (k.to_string(), json!(format!("LABEL_{k}")))).collect();
        let label2id: serde_json::Map<String, serde_json::Value> =
            (0..num_labels).map(|k| (format!("LABEL_{k}"), json!(k))).collect();
        set("id2label", serde_json::Value::Object(id2label));
        set("label2id", serde_json::Value::Object(label2id));
    }
    if let Some(task) = finetuning_task {
        set("finetuning_task", json!(task));
    }
    serde_json::Value::Object(out)
}

/// BERT for one checkpoint: its config, head and the original config file's contents.
pub struct Bert {
    pub cfg: BertConfig,
    pub head: Head,
    original: serde_json::Value,
}

impl Bert {
    pub fn from_original(original: &serde_json::Value, vars: &[SourceVar]) -> Result<Bert, String> {
        let cfg: BertConfig = serde_json::from_value(original.clone()).map_err(|e| format!("bert config: {e}"))?;
        Ok(Bert { cfg, head: detect_head(vars), original: original.clone() })
    }

    pub fn from_hf_config(config: &serde_json::Value) -> Result<Bert, String> {
        let cfg: BertConfig = serde_json::from_value(config.clone()).map_err(|e| format!("config.json: {e}"))?;
        let class = config.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).unwrap_or("BertModel");
        let head = match class {
            "BertForPreTraining" => Head::PreTraining,
            "BertForSequenceClassification" => {
                let num_labels = config.get("id2label").and_then(|m| m.as_object()).map(|m| m.len()).unwrap_or(2);
                Head::SequenceClassification { num_labels }
            }
            "BertForQuestionAnswering" => Head::QuestionAnswering,
            "BertModel" => Head::Base,
            other => return Err(format!("BERT class '{other}' is not supported")),
        };
        Ok(Bert { cfg, head, original: config.clone() })
    }
}

/// Whether a WordPiece vocabulary was built from lower-cased text: cased vocabularies hold
/// capitalised word pieces; special tokens like [CLS] and [unused0] don't count.
pub fn vocab_is_lowercase(vocab: &str) -> bool {
    !vocab
        .lines()
        .filter(|t| !(t.starts_with('[') && t.ends_with(']')))
        .any(|t| t.chars().any(|c| c.is_uppercase()))
}

impl crate::arch::Architecture for Bert {
    fn model_type(&self) -> &'static str {
        "bert"
    }
    fn class_name(&self) -> &'static str {
        self.head.class_name()
    }
    fn plan(&self, vars: &[SourceVar]) -> Result<Plan, PlanError> {
        plan(&self.cfg, self.head, vars)
    }
    fn hf_config(&self, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
        hf_config(&self.original, &self.cfg, self.head, dtype, finetuning_task)
    }
    fn tokenizer_files(
        &self,
        search_dirs: &[&std::path::Path],
        options: &crate::arch::TokenizerOptions,
    ) -> Result<Vec<(String, Vec<u8>)>, String> {
        let Some(path) = search_dirs.iter().map(|d| d.join("vocab.txt")).find(|p| p.is_file()) else {
            return Ok(Vec::new());
        };
        let vocab = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&vocab);
        let lines = text.lines().count();
        if lines != self.cfg.vocab_size {
            return Err(format!(
                "{}: {lines} tokens, but the config's vocab_size is {}",
                path.display(),
                self.cfg.vocab_size
            ));
        }
        let lower = options.do_lower_case.unwrap_or_else(|| vocab_is_lowercase(&text));
        let tokenizer_config = json!({
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": lower,
            "model_max_length": self.cfg.max_position_embeddings,
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
        });
        let special = json!({"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"});
        Ok(vec![
            ("vocab.txt".into(), vocab),
            ("tokenizer_config.json".into(), serde_json::to_vec_pretty(&tokenizer_config).unwrap()),
            ("special_tokens_map.json".into(), serde_json::to_vec_pretty(&special).unwrap()),
        ])
    }
    fn probes(&self, seed: u64, batch: usize, seq_len: Option<usize>) -> Probes {
        let seq = seq_len.unwrap_or(self.cfg.max_position_embeddings.min(16)).min(self.cfg.max_position_embeddings);
        Probes::random(seed, batch, seq, self.cfg.vocab_size, self.cfg.type_vocab_size)
    }
    fn candle_outputs(&self, vb: candle_nn::VarBuilder, probes: &Probes) -> candle_core::Result<crate::probe::Outputs> {
        candle::forward(vb, &self.cfg, self.head, probes)
    }
    fn reference_outputs(
        &self,
        prefix: &str,
        dtypes: &std::collections::HashMap<String, tensorflow::DataType>,
        probes: &Probes,
    ) -> anyhow::Result<crate::probe::Outputs> {
        reference::forward(prefix, dtypes, &self.cfg, self.head, probes)
    }
}
