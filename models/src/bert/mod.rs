//! BERT (google-research/bert) → `BertForPreTraining` and its fine-tuned heads; TF Model Garden
//! ≤ v2.3.0 object-based checkpoints of the same encoder → `BertModel`.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::plan::{Plan, PlanBuilder, PlanError, SourceVar, Transform};
use crate::probe::Probes;
use crate::roles::role;
use crate::stage::{Stage, Values};

pub mod candle;
pub mod probes;
pub mod reference;
pub mod synthetic;

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

/// How a checkpoint names BERT's variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// google-research/bert's TF1 variable scopes: `bert/encoder/layer_0/attention/self/query/kernel`.
    Tf1,
    /// A `tf.train.Checkpoint(model=encoder)` of TF Model Garden ≤ v2.3.0's Keras encoder: object
    /// paths such as `model/layer_with_weights-4/_attention_layer/_query_dense/kernel`, each followed
    /// by `/.ATTRIBUTES/VARIABLE_VALUE`.
    Tf2Objects,
}

impl Layout {
    pub fn detect(vars: &[SourceVar]) -> Layout {
        let tf2 = vars.iter().any(|v| v.name.starts_with("model/layer_with_weights-") && v.name.ends_with(TF2_VALUE));
        if tf2 {
            Layout::Tf2Objects
        } else {
            Layout::Tf1
        }
    }
}

const TF2_VALUE: &str = "/.ATTRIBUTES/VARIABLE_VALUE";

/// The checkpoint key of the variable at object path `path` under the saved `model`.
pub fn tf2_name(path: &str) -> String {
    format!("model/{path}{TF2_VALUE}")
}

/// Whether a checkpoint looks like BERT's (used for --model-type detection): TF1 scopes, or a
/// TF2 encoder whose first layer is an embedding and whose layers hold `_attention_layer`s.
pub fn looks_like(vars: &[SourceVar]) -> bool {
    let has = |name: &str| vars.iter().any(|v| v.name == name);
    // ALBERT shares `bert/embeddings`; BERT's own mark is its per-layer scopes.
    (has("bert/embeddings/word_embeddings") && vars.iter().any(|v| v.name.starts_with("bert/encoder/layer_")))
        || (has(&tf2_name("layer_with_weights-0/embeddings")) && vars.iter().any(|v| v.name.contains("/_attention_layer/")))
}

/// One stage of BERT's forward pass (see [`crate::stage`]). Both sides run a part from the same
/// code whether it is alone in a stage or chained into the whole model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Embeddings,
    Layer(usize),
    Pooler,
    /// `cls.predictions` on every position.
    Mlm,
    /// `cls.seq_relationship` on the pooled output.
    Nsp,
    /// run_classifier's output layer on the pooled output.
    Classifier,
    /// run_squad's span logits on every position.
    Qa,
}

impl Part {
    pub fn name(self) -> String {
        match self {
            Part::Embeddings => "embeddings".into(),
            Part::Layer(i) => format!("layer.{i}"),
            Part::Pooler => "pooler".into(),
            Part::Mlm => "mlm".into(),
            Part::Nsp => "nsp".into(),
            Part::Classifier => "classifier".into(),
            Part::Qa => "qa".into(),
        }
    }

    /// What the part reads, in order: probe inputs or earlier parts' outputs. A layer takes the
    /// raw 0/1 mask and makes the additive mask itself, as every layer of the original does from
    /// the same `input_mask`.
    pub fn inputs(self, cfg: &BertConfig) -> Vec<String> {
        let last = match cfg.num_hidden_layers {
            0 => "embeddings".to_string(),
            n => format!("layer.{}", n - 1),
        };
        match self {
            Part::Embeddings => vec!["input_ids".into(), "token_type_ids".into()],
            Part::Layer(0) => vec!["embeddings".into(), "attention_mask".into()],
            Part::Layer(i) => vec![format!("layer.{}", i - 1), "attention_mask".into()],
            Part::Pooler | Part::Mlm | Part::Qa => vec![last],
            Part::Nsp | Part::Classifier => vec!["pooler".into()],
        }
    }

    /// What the part produces, named as the whole-model outputs.
    pub fn outputs(self) -> Vec<String> {
        match self {
            Part::Embeddings | Part::Layer(_) | Part::Pooler => vec![self.name()],
            Part::Mlm => vec!["mlm_logits".into()],
            Part::Nsp => vec!["nsp_logits".into()],
            Part::Classifier => vec!["logits".into()],
            Part::Qa => vec!["start_logits".into(), "end_logits".into()],
        }
    }
}

/// The parts of the model with `head`, in forward order.
pub fn parts(cfg: &BertConfig, head: Head) -> Vec<Part> {
    let mut parts = vec![Part::Embeddings];
    parts.extend((0..cfg.num_hidden_layers).map(Part::Layer));
    if head.has_pooler() {
        parts.push(Part::Pooler);
    }
    parts.extend(match head {
        Head::PreTraining => &[Part::Mlm, Part::Nsp][..],
        Head::SequenceClassification { .. } => &[Part::Classifier],
        Head::QuestionAnswering => &[Part::Qa],
        Head::Base => &[],
    });
    parts
}

/// The spelling of each layer's attention output projection in a Model Garden checkpoint, given
/// which variables it has: v2.3.0's Transformer layer keeps that projection also as
/// `_attention_output_dense`, and a checkpoint names each variable by its shortest object path,
/// so that alias wins; layers without the alias save `_attention_layer/_output_dense`.
pub fn tf2_attention_outputs(layers: usize, has: impl Fn(&str) -> bool) -> Vec<&'static str> {
    (0..layers)
        .map(|l| {
            ["_attention_output_dense", "_attention_layer/_output_dense"]
                .into_iter()
                .find(|o| has(&tf2_name(&format!("layer_with_weights-{}/{o}/kernel", l + 4))))
                .unwrap_or("_attention_output_dense")
        })
        .collect()
}

/// The HF `hidden_act` for what the original code computes for its config's `hidden_act`. Model
/// Garden's `tf_utils.get_activation("gelu")` is `official.modeling.activations.gelu`, which up to
/// v2.3.0 is the tanh approximation (HF `gelu_new`), not the erf GELU HF's "gelu" means; HF's own
/// TF2 converter keeps "gelu" and so changes the model it converts.
pub fn hf_hidden_act(layout: Layout, original: &str) -> String {
    match (layout, original) {
        (Layout::Tf2Objects, "gelu") => "gelu_new".into(),
        _ => original.into(),
    }
}

/// The `hidden_act` values tfconv converts: names transformers' `ACT2FN` knows that tfconv's
/// candle model (`candle_util::Activation`) and TF reference (`GraphBuilder::activation`) both
/// compute. `tanh` and `linear` are valid in ACT2FN and original BERT, but neither side has them.
pub const HIDDEN_ACTS: &[&str] = &["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"];

/// The original `hidden_act` values of a Model Garden checkpoint that the TF2 reference computes
/// (`model_garden_activation`); `hf_hidden_act` maps each into [`HIDDEN_ACTS`].
pub const MODEL_GARDEN_ACTS: &[&str] = &["gelu", "relu"];

/// Checks every field BERT needs before anything is built from the config, so a value that
/// transformers cannot load or tfconv cannot compute fails here, naming the field and value,
/// instead of producing an unloadable folder or a panic in verify. Done on the JSON rather than
/// the parsed struct so that a negative or fractional size is named too (serde only says
/// "expected usize"). `acts` are the allowed `hidden_act` values.
pub fn validate_config(config: &serde_json::Value, acts: &[&str]) -> Result<(), String> {
    let obj = config.as_object().ok_or_else(|| format!("the config is not a JSON object: {config}"))?;
    let size = |field: &str| -> Result<Option<u64>, String> {
        let Some(v) = obj.get(field) else { return Ok(None) };
        v.as_u64().filter(|&n| n > 0).map(Some).ok_or_else(|| format!("{field} must be a positive integer, got {v}"))
    };
    for field in ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"] {
        size(field)?.ok_or_else(|| format!("{field} is missing"))?;
    }
    // These two have defaults (512 and 2) when absent.
    size("max_position_embeddings")?;
    size("type_vocab_size")?;
    if let (Some(h), Some(n)) = (size("hidden_size")?, size("num_attention_heads")?) {
        if h % n != 0 {
            return Err(format!("hidden_size {h} must be a multiple of num_attention_heads {n}"));
        }
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
    // transformers initialises any weight it has to create (a fresh head when fine-tuning) with
    // `normal_(std=initializer_range)`, which rejects a negative std.
    if let Some(v) = obj.get("initializer_range") {
        if !v.as_f64().is_some_and(|r| r.is_finite() && r >= 0.0) {
            return Err(format!("initializer_range must be a non-negative finite number, got {v}"));
        }
    }
    Ok(())
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

/// The TF2 object-name table (architectures.md §1.3) into `BertModel`: Model Garden ≤ v2.3.0
/// checkpoints hold the encoder only. Its attention projections are einsum kernels that keep the
/// heads as an axis (query/key/value [H, N, Dh] with biases [N, Dh], output [N, Dh, H]); read
/// row-major they are the TF1 [in, out] matrices, so a reshape precedes the usual transpose.
pub fn plan_tf2(cfg: &BertConfig, vars: &[SourceVar]) -> Result<Plan, PlanError> {
    use Transform::{Reshape, Transpose};
    let (h, i, v, p, t) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings, cfg.type_vocab_size);
    if cfg.num_attention_heads == 0 || h % cfg.num_attention_heads != 0 {
        return Err(PlanError::Other(format!(
            "hidden_size {h} is not a multiple of num_attention_heads {}",
            cfg.num_attention_heads
        )));
    }
    let layer = |k: usize, path: &str| tf2_name(&format!("layer_with_weights-{k}/{path}"));
    let attention_outputs = tf2_attention_outputs(cfg.num_hidden_layers, |name| vars.iter().any(|v| v.name == name));
    let mut b = PlanBuilder::new(vars);
    b.map("embeddings.word_embeddings.weight", layer(0, "embeddings"), vec![], vec![v, h]);
    b.map("embeddings.position_embeddings.weight", layer(1, "embeddings"), vec![], vec![p, h]);
    b.map("embeddings.token_type_embeddings.weight", layer(2, "embeddings"), vec![], vec![t, h]);
    b.map("embeddings.LayerNorm.weight", layer(3, "gamma"), vec![], vec![h]);
    b.map("embeddings.LayerNorm.bias", layer(3, "beta"), vec![], vec![h]);
    for (l, &out) in attention_outputs.iter().enumerate() {
        let k = l + 4;
        let dst = format!("encoder.layer.{l}");
        for (proj, src) in [("query", "_query_dense"), ("key", "_key_dense"), ("value", "_value_dense")] {
            let src = format!("_attention_layer/{src}");
            b.map(format!("{dst}.attention.self.{proj}.weight"), layer(k, &format!("{src}/kernel")), vec![Reshape(vec![h, h]), Transpose], vec![h, h]);
            b.map(format!("{dst}.attention.self.{proj}.bias"), layer(k, &format!("{src}/bias")), vec![Reshape(vec![h])], vec![h]);
        }
        b.map(format!("{dst}.attention.output.dense.weight"), layer(k, &format!("{out}/kernel")), vec![Reshape(vec![h, h]), Transpose], vec![h, h]);
        b.map(format!("{dst}.attention.output.dense.bias"), layer(k, &format!("{out}/bias")), vec![], vec![h]);
        let dense = |b: &mut PlanBuilder, dst_mod: &str, src_mod: &str, out: usize, inp: usize| {
            b.map(format!("{dst}.{dst_mod}.weight"), layer(k, &format!("{src_mod}/kernel")), vec![Transpose], vec![out, inp]);
            b.map(format!("{dst}.{dst_mod}.bias"), layer(k, &format!("{src_mod}/bias")), vec![], vec![out]);
        };
        let norm = |b: &mut PlanBuilder, dst_mod: &str, src_mod: &str| {
            b.map(format!("{dst}.{dst_mod}.weight"), layer(k, &format!("{src_mod}/gamma")), vec![], vec![h]);
            b.map(format!("{dst}.{dst_mod}.bias"), layer(k, &format!("{src_mod}/beta")), vec![], vec![h]);
        };
        norm(&mut b, "attention.output.LayerNorm", "_attention_layer_norm");
        dense(&mut b, "intermediate.dense", "_intermediate_dense", i, h);
        dense(&mut b, "output.dense", "_output_dense", h, i);
        norm(&mut b, "output.LayerNorm", "_output_layer_norm");
    }
    let pooler = cfg.num_hidden_layers + 4;
    b.map("pooler.dense.weight", layer(pooler, "kernel"), vec![Transpose], vec![h, h]);
    b.map("pooler.dense.bias", layer(pooler, "bias"), vec![], vec![h]);
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

/// BERT for one checkpoint: its HF config, head, variable layout and the original config file's
/// contents.
pub struct Bert {
    pub cfg: BertConfig,
    pub head: Head,
    pub layout: Layout,
    original: serde_json::Value,
    /// Per layer, the attention output's spelling in a Model Garden checkpoint (empty for TF1).
    tf2_attention_outputs: Vec<&'static str>,
}

impl Bert {
    pub fn from_original(original: &serde_json::Value, vars: &[SourceVar]) -> Result<Bert, String> {
        let layout = Layout::detect(vars);
        // A Model Garden config's hidden_act is read by Model Garden, so it has its own list.
        validate_config(original, if layout == Layout::Tf2Objects { MODEL_GARDEN_ACTS } else { HIDDEN_ACTS })?;
        let mut cfg: BertConfig = serde_json::from_value(original.clone()).map_err(|e| format!("bert config: {e}"))?;
        cfg.hidden_act = hf_hidden_act(layout, &cfg.hidden_act);
        let head = match layout {
            Layout::Tf1 => detect_head(vars),
            Layout::Tf2Objects => Head::Base,
        };
        let tf2_attention_outputs = match layout {
            Layout::Tf1 => Vec::new(),
            Layout::Tf2Objects => tf2_attention_outputs(cfg.num_hidden_layers, |name| vars.iter().any(|v| v.name == name)),
        };
        Ok(Bert { cfg, head, layout, original: original.clone(), tf2_attention_outputs })
    }

    /// The config the reference computes with: Model Garden reads the original config's
    /// `hidden_act` (its "gelu" is HF's "gelu_new"); for google-research/bert the HF config
    /// already names what the original computes.
    fn reference_config(&self) -> anyhow::Result<BertConfig> {
        Ok(match self.layout {
            Layout::Tf1 => self.cfg.clone(),
            Layout::Tf2Objects => serde_json::from_value(self.original.clone())?,
        })
    }

    /// The part a stage of this model runs.
    fn part(&self, stage: &Stage) -> Result<Part, String> {
        parts(&self.cfg, self.head)
            .into_iter()
            .find(|p| p.name() == stage.name)
            .ok_or_else(|| format!("{} has no stage {:?}", self.head.class_name(), stage.name))
    }

    pub fn from_hf_config(config: &serde_json::Value) -> Result<Bert, String> {
        validate_config(config, HIDDEN_ACTS)?;
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
        // The layout only matters for reading a checkpoint, which an HF folder is not.
        Ok(Bert { cfg, head, layout: Layout::Tf1, original: config.clone(), tf2_attention_outputs: Vec::new() })
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

/// BERT's line in the registry.
pub const FAMILY: crate::arch::Family = crate::arch::Family {
    model_type: "bert",
    config_names: &["bert_config.json", "config.json"],
    read_config: crate::arch::json_config,
    default_config: None,
    looks_like,
    from_original: |config, vars| Ok(Box::new(Bert::from_original(config, vars)?)),
    from_hf_config: |config| Ok(Box::new(Bert::from_hf_config(config)?)),
    golden_cases: synthetic::golden_cases,
};

impl crate::arch::Architecture for Bert {
    fn model_type(&self) -> &'static str {
        "bert"
    }
    fn class_name(&self) -> &'static str {
        self.head.class_name()
    }
    fn plan(&self, vars: &[SourceVar]) -> Result<Plan, PlanError> {
        match self.layout {
            Layout::Tf1 => plan(&self.cfg, self.head, vars),
            Layout::Tf2Objects => plan_tf2(&self.cfg, vars),
        }
    }
    fn hf_config(&self, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
        hf_config(&self.original, &self.cfg, self.head, dtype, finetuning_task)
    }
    fn vocabulary_sources(&self, search_dirs: &[&std::path::Path]) -> Vec<std::path::PathBuf> {
        crate::arch::found_in(search_dirs, &["vocab.txt"])
    }
    fn tokenizer_files(
        &self,
        search_dirs: &[&std::path::Path],
        options: &crate::arch::TokenizerOptions,
    ) -> Result<crate::arch::TokenizerFiles, String> {
        let Some(path) = search_dirs.iter().map(|d| d.join("vocab.txt")).find(|p| p.is_file()) else {
            return Ok(Default::default());
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
        ]
        .into())
    }
    fn probes(&self, seed: u64, batch: usize, seq_len: Option<usize>) -> Probes {
        // Full length by default, so every position embedding row is exercised.
        let max = self.cfg.max_position_embeddings;
        probes::random(&self.cfg, seed, batch, seq_len.unwrap_or(max).min(max))
    }
    fn max_seq_len(&self) -> Option<usize> {
        Some(self.cfg.max_position_embeddings)
    }
    fn candle_outputs(&self, vb: candle_nn::VarBuilder, inputs: &Values) -> candle_core::Result<crate::probe::Outputs> {
        candle::forward(vb, &self.cfg, self.head, inputs)
    }
    fn reference_outputs(&self, weights: &crate::tf_graph::OriginalWeights, inputs: &Values) -> anyhow::Result<crate::probe::Outputs> {
        let cfg = self.reference_config()?;
        match self.layout {
            Layout::Tf1 => reference::forward(weights, &cfg, self.head, inputs),
            Layout::Tf2Objects => reference::forward_tf2(weights, &cfg, inputs),
        }
    }
    fn tied_aliases(&self) -> Vec<(String, String)> {
        match self.head {
            Head::PreTraining => vec![
                ("cls.predictions.decoder.weight".into(), "bert.embeddings.word_embeddings.weight".into()),
                ("cls.predictions.decoder.bias".into(), "cls.predictions.bias".into()),
            ],
            _ => Vec::new(),
        }
    }
    fn hf_output_fields(&self) -> Vec<(&'static str, &'static str)> {
        match self.head {
            Head::PreTraining => vec![("mlm_logits", "prediction_logits"), ("nsp_logits", "seq_relationship_logits")],
            Head::SequenceClassification { .. } => vec![("logits", "logits")],
            Head::QuestionAnswering => vec![("start_logits", "start_logits"), ("end_logits", "end_logits")],
            Head::Base => Vec::new(),
        }
    }
    fn stages(&self) -> Vec<Stage> {
        parts(&self.cfg, self.head)
            .into_iter()
            .map(|part| Stage {
                name: part.name(),
                original_vars: match self.layout {
                    Layout::Tf1 => reference::original_vars(part),
                    Layout::Tf2Objects => reference::tf2_original_vars(&self.cfg, part, &self.tf2_attention_outputs),
                },
                hf_tensors: candle::hf_tensors(&self.cfg, self.head, part),
                inputs: part.inputs(&self.cfg),
                outputs: part.outputs(),
            })
            .collect()
    }
    fn candle_stage(&self, stage: &Stage, vb: candle_nn::VarBuilder, inputs: &Values) -> candle_core::Result<Values> {
        let part = self.part(stage).map_err(candle_core::Error::msg)?;
        candle::stage(vb, &self.cfg, self.head, part, stage, inputs)
    }
    fn reference_stage(&self, stage: &Stage, weights: &crate::tf_graph::OriginalWeights, inputs: &Values) -> anyhow::Result<Values> {
        let part = self.part(stage).map_err(anyhow::Error::msg)?;
        let original = match self.layout {
            Layout::Tf1 => reference::Original::Tf1,
            Layout::Tf2Objects => reference::Original::Tf2 { attention_outputs: &self.tf2_attention_outputs },
        };
        reference::stage(weights, &self.reference_config()?, original, part, stage, inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BertConfig {
        serde_json::from_value(json!({
            "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 12, "max_position_embeddings": 6
        }))
        .unwrap()
    }

    /// A Model Garden encoder's variables with the attention output saved under `attention_output`.
    fn tf2_vars(attention_output: &str) -> Vec<SourceVar> {
        let var = |path: &str, shape: &[usize]| SourceVar { name: tf2_name(path), shape: shape.to_vec() };
        let mut vars = vec![
            var("layer_with_weights-0/embeddings", &[10, 8]),
            var("layer_with_weights-1/embeddings", &[6, 8]),
            var("layer_with_weights-2/embeddings", &[2, 8]),
            var("layer_with_weights-3/gamma", &[8]),
            var("layer_with_weights-3/beta", &[8]),
            var("layer_with_weights-5/kernel", &[8, 8]),
            var("layer_with_weights-5/bias", &[8]),
            SourceVar { name: "_CHECKPOINTABLE_OBJECT_GRAPH".into(), shape: vec![] },
            SourceVar { name: "save_counter/.ATTRIBUTES/VARIABLE_VALUE".into(), shape: vec![] },
        ];
        for p in ["_query_dense", "_key_dense", "_value_dense"] {
            vars.push(var(&format!("layer_with_weights-4/_attention_layer/{p}/kernel"), &[8, 2, 4]));
            vars.push(var(&format!("layer_with_weights-4/_attention_layer/{p}/bias"), &[2, 4]));
        }
        vars.push(var(&format!("layer_with_weights-4/{attention_output}/kernel"), &[2, 4, 8]));
        vars.push(var(&format!("layer_with_weights-4/{attention_output}/bias"), &[8]));
        for (m, w, shape) in [("_intermediate_dense", "kernel", [8, 12]), ("_output_dense", "kernel", [12, 8])] {
            vars.push(var(&format!("layer_with_weights-4/{m}/{w}"), &shape));
            vars.push(var(&format!("layer_with_weights-4/{m}/bias"), &shape[1..]));
        }
        for n in ["_attention_layer_norm", "_output_layer_norm"] {
            vars.push(var(&format!("layer_with_weights-4/{n}/gamma"), &[8]));
            vars.push(var(&format!("layer_with_weights-4/{n}/beta"), &[8]));
        }
        vars
    }

    #[test]
    fn tf2_layout_is_detected_and_both_attention_output_spellings_map() {
        for spelling in ["_attention_output_dense", "_attention_layer/_output_dense"] {
            let vars = tf2_vars(spelling);
            assert!(looks_like(&vars));
            let bert = Bert::from_original(&serde_json::to_value(tiny()).unwrap(), &vars).unwrap();
            assert_eq!((bert.layout, bert.head, bert.cfg.hidden_act.as_str()), (Layout::Tf2Objects, Head::Base, "gelu_new"));
            let plan = crate::arch::Architecture::plan(&bert, &vars).unwrap();
            let out = plan.mappings.iter().find(|m| m.target == "encoder.layer.0.attention.output.dense.weight").unwrap();
            assert!(out.source.contains(spelling), "{spelling}: {}", out.source);
            assert_eq!(out.transforms, vec![Transform::Reshape(vec![8, 8]), Transform::Transpose]);
            assert_eq!(plan.mappings.len(), 5 + 16 + 2);
            assert_eq!(plan.skipped.len(), 2);
        }
    }

    /// The tiny config as JSON with `edit` applied (`None` removes the field).
    fn edited(field: &str, value: Option<serde_json::Value>) -> serde_json::Value {
        let mut c = serde_json::to_value(tiny()).unwrap();
        let obj = c.as_object_mut().unwrap();
        match value {
            Some(v) => obj.insert(field.into(), v),
            None => obj.remove(field),
        };
        c
    }

    fn rejected(config: &serde_json::Value, vars: &[SourceVar]) -> String {
        let original = Bert::from_original(config, vars).err().unwrap_or_else(|| panic!("accepted {config}"));
        // An HF config.json with the same value is refused the same way (verify reads those).
        if Layout::detect(vars) == Layout::Tf1 {
            assert_eq!(Bert::from_hf_config(config).err().as_deref(), Some(original.as_str()));
        }
        original
    }

    #[test]
    fn every_bad_config_field_is_refused_naming_field_and_value() {
        let sizes = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "max_position_embeddings", "type_vocab_size"];
        for field in sizes {
            for bad in [json!(0), json!(-1), json!(2.5), json!("8"), json!(null)] {
                let e = rejected(&edited(field, Some(bad.clone())), &[]);
                assert_eq!(e, format!("{field} must be a positive integer, got {bad}"));
            }
        }
        for field in &sizes[..5] {
            assert_eq!(rejected(&edited(field, None), &[]), format!("{field} is missing"));
        }
        let e = rejected(&edited("num_attention_heads", Some(json!(3))), &[]);
        assert_eq!(e, "hidden_size 8 must be a multiple of num_attention_heads 3");
        for bad in [json!("foo"), json!("tanh"), json!("GELU"), json!(1)] {
            let e = rejected(&edited("hidden_act", Some(bad.clone())), &[]);
            assert_eq!(e, format!("hidden_act {bad} is not supported (allowed: gelu, gelu_new, gelu_pytorch_tanh, relu)"));
        }
        for bad in [json!(0.0), json!(-1e-12), json!("1e-12"), json!(null)] {
            let e = rejected(&edited("layer_norm_eps", Some(bad.clone())), &[]);
            assert_eq!(e, format!("layer_norm_eps must be a positive finite number, got {bad}"));
        }
        // JSON cannot spell NaN or infinity (serde_json turns them into null), so null stands in.
        for bad in [json!(-0.02), json!("0.02"), json!(null)] {
            let e = rejected(&edited("initializer_range", Some(bad.clone())), &[]);
            assert_eq!(e, format!("initializer_range must be a non-negative finite number, got {bad}"));
        }
        assert!(rejected(&json!([1, 2]), &[]).starts_with("the config is not a JSON object"));
        // Model Garden reads its own hidden_act, and knows no "gelu_new".
        let e = rejected(&edited("hidden_act", Some(json!("gelu_new"))), &tf2_vars("_attention_output_dense"));
        assert_eq!(e, "hidden_act \"gelu_new\" is not supported (allowed: gelu, relu)");
    }

    #[test]
    fn allowed_activations_are_computed_by_the_candle_model() {
        for act in HIDDEN_ACTS {
            assert!(crate::candle_util::Activation::from_hf_name(act).is_ok(), "{act}");
        }
        for act in MODEL_GARDEN_ACTS {
            assert!(HIDDEN_ACTS.contains(&hf_hidden_act(Layout::Tf2Objects, act).as_str()), "{act}");
        }
    }

    #[test]
    fn golden_configs_and_their_converted_configs_are_accepted() {
        let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../golden");
        let mut seen = 0;
        for case in std::fs::read_dir(&golden).unwrap() {
            let path = case.unwrap().path().join("bert_config.json");
            let Ok(text) = std::fs::read(&path) else { continue };
            let original: serde_json::Value = serde_json::from_slice(&text).unwrap();
            let vars = if path.parent().unwrap().ends_with("bert-tf2") { tf2_vars("_attention_output_dense") } else { Vec::new() };
            let bert = Bert::from_original(&original, &vars).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let hf = crate::arch::Architecture::hf_config(&bert, "float32", None);
            Bert::from_hf_config(&hf).unwrap_or_else(|e| panic!("{} converted: {e}", path.display()));
            seen += 1;
        }
        assert!(seen >= 5, "expected the golden BERT cases, found {seen}");
    }
}
