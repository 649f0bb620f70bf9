//! T5 from Mesh TensorFlow checkpoints (v1.0 and v1.1) → `T5ForConditionalGeneration`.
//! Facts: architectures.md §7.
//!
//! Variables are bfloat16 across many shards, Adafactor's slots are skipped unread, and the
//! names come in two norm spellings (`layer_norm`/`final_layer_norm` or `rms_norm`) and two
//! sublayer spellings (`layer_00N/SelfAttention` or `self_attention/SelfAttention`). The config is
//! read from `operative_config.gin` (or an HF-style JSON); the vocabulary size from the embedding.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::plan::{Plan, PlanBuilder, PlanError, SourceVar, Transform};
use crate::probe::Probes;
use crate::roles::role;
use crate::stage::{Stage, Values};

pub mod candle;
pub mod gin;
pub mod reference;
pub mod synthetic;

/// T5's config, in HF's `T5Config` names (the gin is translated into these).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "default_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// "relu" (v1.0) or "gated-gelu" (v1.1).
    #[serde(default = "default_ff")]
    pub feed_forward_proj: String,
    /// v1.0 decodes with the shared embedding (and rescales); v1.1 has its own head.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Filled from the embedding's shape.
    #[serde(default)]
    pub vocab_size: usize,
}

fn default_buckets() -> usize {
    32
}
fn default_distance() -> usize {
    128
}
fn default_eps() -> f64 {
    1e-6
}
fn default_ff() -> String {
    "relu".into()
}
fn default_true() -> bool {
    true
}

impl T5Config {
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }
    pub fn gated(&self) -> bool {
        self.feed_forward_proj == "gated-gelu"
    }
    pub fn inner(&self) -> usize {
        self.num_heads * self.d_kv
    }
}

/// Reads `operative_config.gin` or a JSON config.
pub fn read_config(name: &str, bytes: &[u8]) -> Result<serde_json::Value, String> {
    if name.ends_with(".gin") {
        gin::to_config(&String::from_utf8_lossy(bytes))
    } else {
        crate::arch::json_config(name, bytes)
    }
}

/// Checks a config (HF T5Config names), naming the field and value.
pub fn validate_config(config: &serde_json::Value) -> Result<T5Config, String> {
    let obj = config.as_object().ok_or_else(|| format!("the config is not a JSON object: {config}"))?;
    for field in ["d_model", "d_kv", "d_ff", "num_layers", "num_heads"] {
        let v = obj.get(field).ok_or_else(|| format!("{field} is missing"))?;
        if v.as_u64().is_none_or(|n| n == 0) {
            return Err(format!("{field} must be a positive integer, got {v}"));
        }
    }
    for field in ["num_decoder_layers", "relative_attention_num_buckets", "relative_attention_max_distance"] {
        if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
            if v.as_u64().is_none_or(|n| n == 0) {
                return Err(format!("{field} must be a positive integer, got {v}"));
            }
        }
    }
    match obj.get("feed_forward_proj") {
        None => {}
        Some(serde_json::Value::String(f)) if f == "relu" || f == "gated-gelu" => {}
        Some(v) => return Err(format!("feed_forward_proj {v} is not supported (allowed: relu, gated-gelu)")),
    }
    let cfg: T5Config = serde_json::from_value(config.clone()).map_err(|e| format!("config: {e}"))?;
    if cfg.relative_attention_num_buckets < 4 {
        return Err(format!("relative_attention_num_buckets {} is too small (at least 4)", cfg.relative_attention_num_buckets));
    }
    if !(cfg.layer_norm_epsilon.is_finite() && cfg.layer_norm_epsilon > 0.0) {
        return Err(format!("layer_norm_epsilon must be a positive finite number, got {}", cfg.layer_norm_epsilon));
    }
    Ok(cfg)
}

/// The two stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    Encoder,
    Decoder,
}

impl Stack {
    pub fn name(self) -> &'static str {
        match self {
            Stack::Encoder => "encoder",
            Stack::Decoder => "decoder",
        }
    }
}

/// A block's sublayers, in order: the feed-forward is always the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sublayer {
    SelfAttention,
    EncDecAttention,
    DenseReluDense,
}

impl Sublayer {
    pub fn index(self, stack: Stack) -> usize {
        match (self, stack) {
            (Sublayer::SelfAttention, _) => 0,
            (Sublayer::EncDecAttention, _) => 1,
            (Sublayer::DenseReluDense, Stack::Encoder) => 1,
            (Sublayer::DenseReluDense, Stack::Decoder) => 2,
        }
    }
    fn class(self) -> &'static str {
        match self {
            Sublayer::SelfAttention => "SelfAttention",
            Sublayer::EncDecAttention => "EncDecAttention",
            Sublayer::DenseReluDense => "DenseReluDense",
        }
    }
    fn named_scope(self) -> &'static str {
        match self {
            Sublayer::SelfAttention => "self_attention",
            Sublayer::EncDecAttention => "enc_dec_attention",
            Sublayer::DenseReluDense => "dense_relu_dense",
        }
    }
    pub fn of(stack: Stack) -> &'static [Sublayer] {
        match stack {
            Stack::Encoder => &[Sublayer::SelfAttention, Sublayer::DenseReluDense],
            Stack::Decoder => &[Sublayer::SelfAttention, Sublayer::EncDecAttention, Sublayer::DenseReluDense],
        }
    }
}

/// How a checkpoint spells T5's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// `rms_norm` (mtf's default, mT5) instead of the legacy `layer_norm` / `final_layer_norm`.
    pub rms_norm: bool,
    /// Sublayers scoped by role (`self_attention/SelfAttention/q`, #5851) instead of `layer_00N`.
    pub named_sublayers: bool,
}

impl Names {
    pub fn detect(vars: &[SourceVar]) -> Names {
        Names {
            rms_norm: vars.iter().any(|v| v.name.ends_with("/rms_norm/scale")),
            named_sublayers: vars.iter().any(|v| v.name.contains("/self_attention/SelfAttention/")),
        }
    }

    /// The scope of a block's sublayer, e.g. `encoder/block_003/layer_001`.
    fn sublayer(&self, stack: Stack, block: usize, sub: Sublayer) -> String {
        match self.named_sublayers {
            true => format!("{}/block_{block:03}/{}", stack.name(), sub.named_scope()),
            false => format!("{}/block_{block:03}/layer_{:03}", stack.name(), sub.index(stack)),
        }
    }

    /// A sublayer's weight: `…/SelfAttention/q`, `…/DenseReluDense/wi_0/kernel`.
    pub fn weight(&self, stack: Stack, block: usize, sub: Sublayer, name: &str) -> String {
        format!("{}/{}/{name}", self.sublayer(stack, block, sub), sub.class())
    }

    /// A sublayer's pre-norm scale.
    pub fn norm(&self, stack: Stack, block: usize, sub: Sublayer) -> String {
        format!("{}/{}/scale", self.sublayer(stack, block, sub), if self.rms_norm { "rms_norm" } else { "layer_norm" })
    }

    /// A stack's final norm scale.
    pub fn final_norm(&self, stack: Stack) -> String {
        format!("{}/{}/scale", stack.name(), if self.rms_norm { "rms_norm" } else { "final_layer_norm" })
    }
}

/// Whether a checkpoint looks like Mesh-TF T5's.
pub fn looks_like(vars: &[SourceVar]) -> bool {
    vars.iter().any(|v| v.name == "shared/embedding") && vars.iter().any(|v| v.name.starts_with("encoder/block_000/"))
}

/// One stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Embeddings(Stack),
    Block(Stack, usize),
    /// The final norm of a stack.
    Output(Stack),
    /// The LM head on the decoder output.
    Lm,
}

impl Part {
    pub fn name(self) -> String {
        match self {
            Part::Embeddings(s) => format!("{}.embeddings", s.name()),
            Part::Block(s, b) => format!("{}.layer.{b}", s.name()),
            Part::Output(s) => format!("{}.output", s.name()),
            Part::Lm => "lm".into(),
        }
    }

    pub fn inputs(self, cfg: &T5Config) -> Vec<String> {
        let prev = |s: Stack, b: usize| match b {
            0 => format!("{}.embeddings", s.name()),
            b => format!("{}.layer.{}", s.name(), b - 1),
        };
        let layers = |s: Stack| if s == Stack::Encoder { cfg.num_layers } else { cfg.decoder_layers() };
        match self {
            Part::Embeddings(Stack::Encoder) => vec!["input_ids".into()],
            Part::Embeddings(Stack::Decoder) => vec!["decoder_input_ids".into()],
            Part::Block(Stack::Encoder, b) => vec![prev(Stack::Encoder, b), "attention_mask".into()],
            // The decoder reads the encoder's output as a side input, masked by the encoder's padding.
            Part::Block(Stack::Decoder, b) => vec![prev(Stack::Decoder, b), "encoder.output".into(), "attention_mask".into()],
            Part::Output(s) => vec![prev(s, layers(s))],
            Part::Lm => vec!["decoder.output".into()],
        }
    }

    pub fn outputs(self) -> Vec<String> {
        match self {
            Part::Lm => vec!["lm_logits".into()],
            p => vec![p.name()],
        }
    }
}

pub fn parts(cfg: &T5Config) -> Vec<Part> {
    let mut parts = vec![Part::Embeddings(Stack::Encoder)];
    parts.extend((0..cfg.num_layers).map(|b| Part::Block(Stack::Encoder, b)));
    parts.push(Part::Output(Stack::Encoder));
    parts.push(Part::Embeddings(Stack::Decoder));
    parts.extend((0..cfg.decoder_layers()).map(|b| Part::Block(Stack::Decoder, b)));
    parts.extend([Part::Output(Stack::Decoder), Part::Lm]);
    parts
}

/// The explicit original → HF table (architectures.md §7.3).
pub fn plan(cfg: &T5Config, names: &Names, vars: &[SourceVar]) -> Result<Plan, PlanError> {
    use Transform::Transpose;
    let (v, d, inner, ff, heads, buckets) = (cfg.vocab_size, cfg.d_model, cfg.inner(), cfg.d_ff, cfg.num_heads, cfg.relative_attention_num_buckets);
    let mut b = PlanBuilder::new(vars);
    b.map("shared.weight", "shared/embedding", vec![], vec![v, d]);
    for stack in [Stack::Encoder, Stack::Decoder] {
        let layers = if stack == Stack::Encoder { cfg.num_layers } else { cfg.decoder_layers() };
        for block in 0..layers {
            for &sub in Sublayer::of(stack) {
                let dst = format!("{}.block.{block}.layer.{}", stack.name(), sub.index(stack));
                b.map(format!("{dst}.layer_norm.weight"), names.norm(stack, block, sub), vec![], vec![d]);
                let w = |n: &str| names.weight(stack, block, sub, n);
                match sub {
                    Sublayer::SelfAttention | Sublayer::EncDecAttention => {
                        let class = sub.class();
                        for p in ["q", "k", "v"] {
                            b.map(format!("{dst}.{class}.{p}.weight"), w(p), vec![Transpose], vec![inner, d]);
                        }
                        b.map(format!("{dst}.{class}.o.weight"), w("o"), vec![Transpose], vec![d, inner]);
                        if block == 0 && sub == Sublayer::SelfAttention {
                            b.map(format!("{dst}.{class}.relative_attention_bias.weight"), w("relative_attention_bias"), vec![Transpose], vec![buckets, heads]);
                        }
                    }
                    Sublayer::DenseReluDense => {
                        let wi: &[&str] = if cfg.gated() { &["wi_0", "wi_1"] } else { &["wi"] };
                        for p in wi {
                            b.map(format!("{dst}.DenseReluDense.{p}.weight"), w(&format!("{p}/kernel")), vec![Transpose], vec![ff, d]);
                        }
                        b.map(format!("{dst}.DenseReluDense.wo.weight"), w("wo/kernel"), vec![Transpose], vec![d, ff]);
                    }
                }
            }
        }
        b.map(format!("{}.final_layer_norm.weight", stack.name()), names.final_norm(stack), vec![], vec![d]);
    }
    if !cfg.tie_word_embeddings {
        b.map("lm_head.weight", "decoder/logits/kernel", vec![Transpose], vec![v, d]);
    }
    b.finish(role)
}

/// HF `config.json` (architectures.md §7.4): all three of `feed_forward_proj`, `dense_act_fn`
/// and `is_gated_act` written consistently, and `tie_word_embeddings` false with `lm_head.weight`
/// for v1.1 (transformers 5 otherwise ties the head and rescales).
pub fn hf_config(cfg: &T5Config, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
    let mut c = json!({
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.d_kv,
        "d_ff": cfg.d_ff,
        "num_layers": cfg.num_layers,
        "num_decoder_layers": cfg.decoder_layers(),
        "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "feed_forward_proj": cfg.feed_forward_proj,
        "dense_act_fn": if cfg.gated() { "gelu_new" } else { "relu" },
        "is_gated_act": cfg.gated(),
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "is_encoder_decoder": true,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "dropout_rate": 0.1,
        "dtype": dtype,
    });
    if let Some(task) = finetuning_task {
        c["finetuning_task"] = json!(task);
    }
    c
}

/// A T5 checkpoint (or HF folder) as tfconv converts and verifies it.
#[derive(Debug, Clone)]
pub struct T5 {
    pub cfg: T5Config,
    pub names: Names,
    from_folder: bool,
}

impl T5 {
    pub fn from_original(config: &serde_json::Value, vars: &[SourceVar]) -> Result<T5, String> {
        let mut cfg = validate_config(config)?;
        let embedding = vars.iter().find(|v| v.name == "shared/embedding").ok_or("the checkpoint has no shared/embedding")?;
        cfg.vocab_size = *embedding.shape.first().ok_or("shared/embedding is a scalar")?;
        // A separate head in the checkpoint decides v1.1 even when a JSON config forgot to say so.
        if vars.iter().any(|v| v.name == "decoder/logits/kernel") {
            cfg.tie_word_embeddings = false;
        }
        Ok(T5 { cfg, names: Names::detect(vars), from_folder: false })
    }

    pub fn from_hf_config(config: &serde_json::Value) -> Result<T5, String> {
        let mut cfg = validate_config(config)?;
        cfg.vocab_size = config.get("vocab_size").and_then(|v| v.as_u64()).ok_or("config.json has no vocab_size")? as usize;
        // transformers reads dense_act_fn / is_gated_act over feed_forward_proj: so does verify.
        if let Some(gated) = config.get("is_gated_act").and_then(|g| g.as_bool()) {
            cfg.feed_forward_proj = if gated { "gated-gelu".into() } else { "relu".into() };
        }
        Ok(T5 { cfg, names: Names { rms_norm: false, named_sublayers: false }, from_folder: true })
    }

    fn part(&self, stage: &Stage) -> Result<Part, String> {
        parts(&self.cfg).into_iter().find(|p| p.name() == stage.name).ok_or_else(|| format!("T5 has no stage {:?}", stage.name))
    }
}

/// T5's line in the registry.
pub const FAMILY: crate::arch::Family = crate::arch::Family {
    model_type: "t5",
    config_names: &["operative_config.gin", "t5_config.json", "config.json"],
    default_config: None,
    read_config,
    looks_like,
    from_original: |config, vars| Ok(Box::new(T5::from_original(config, vars)?)),
    from_hf_config: |config| Ok(Box::new(T5::from_hf_config(config)?)),
    golden_cases: synthetic::golden_cases,
};

/// Default probe lengths: encoder, decoder.
pub const PROBE_LEN: (usize, usize) = (10, 7);

impl crate::arch::Architecture for T5 {
    fn model_type(&self) -> &'static str {
        "t5"
    }
    fn class_name(&self) -> &'static str {
        "T5ForConditionalGeneration"
    }
    fn plan(&self, vars: &[SourceVar]) -> Result<Plan, PlanError> {
        plan(&self.cfg, &self.names, vars)
    }
    fn hf_config(&self, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
        hf_config(&self.cfg, dtype, finetuning_task)
    }
    fn vocabulary_sources(&self, search_dirs: &[&std::path::Path]) -> Vec<std::path::PathBuf> {
        let names = ["spiece.model", "sentencepiece.model"];
        search_dirs.iter().flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.is_file()).into_iter().collect()
    }
    fn tokenizer_files(&self, search_dirs: &[&std::path::Path], _options: &crate::arch::TokenizerOptions) -> Result<crate::arch::TokenizerFiles, String> {
        let names = ["spiece.model", "sentencepiece.model"];
        let Some(path) = search_dirs.iter().flat_map(|d| names.iter().map(move |n| d.join(n))).find(|p| p.is_file()) else { return Ok(Default::default()) };
        let model = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // T5's vocabulary: the SentencePiece pieces plus 100 sentinels, padded to a multiple of 128.
        let extra = 100;
        let tokenizer_config = json!({
            "tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
            "extra_ids": extra, "model_max_length": 512,
        });
        let special = json!({"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"});
        Ok(vec![
            ("spiece.model".into(), model),
            ("tokenizer_config.json".into(), serde_json::to_vec_pretty(&tokenizer_config).unwrap()),
            ("special_tokens_map.json".into(), serde_json::to_vec_pretty(&special).unwrap()),
        ]
        .into())
    }
    fn probes(&self, seed: u64, batch: usize, seq_len: Option<usize>) -> Probes {
        let (enc, dec) = match seq_len {
            Some(s) => (s, s.div_ceil(2).max(1)),
            None => PROBE_LEN,
        };
        candle::probes(&self.cfg, seed, batch, enc, dec)
    }
    fn max_seq_len(&self) -> Option<usize> {
        None
    }
    fn stages(&self) -> Vec<Stage> {
        parts(&self.cfg)
            .into_iter()
            .map(|part| Stage {
                name: part.name(),
                original_vars: reference::original_vars(&self.cfg, &self.names, part),
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
            anyhow::bail!("the TensorFlow reference runs from the original config, not an HF folder's");
        }
        let part = self.part(stage).map_err(anyhow::Error::msg)?;
        reference::stage(&self.cfg, &self.names, weights, part, stage, inputs)
    }
    fn tied_aliases(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("encoder.embed_tokens.weight".to_string(), "shared.weight".to_string()),
            ("decoder.embed_tokens.weight".into(), "shared.weight".into()),
        ];
        if self.cfg.tie_word_embeddings {
            v.push(("lm_head.weight".into(), "shared.weight".into()));
        }
        v
    }
    fn hf_output_fields(&self) -> Vec<(&'static str, &'static str)> {
        vec![("lm_logits", "logits")]
    }
    /// transformers returns each stack's hidden states before every block and, last, after the
    /// final norm: the last block's raw output is not among them.
    fn hf_passes(&self) -> Vec<crate::arch::HfPass> {
        let stack = |s: Stack, layers: usize| -> (&'static str, Vec<String>) {
            let mut names = vec![format!("{}.embeddings", s.name())];
            names.extend((0..layers.saturating_sub(1)).map(|b| format!("{}.layer.{b}", s.name())));
            names.push(format!("{}.output", s.name()));
            (if s == Stack::Encoder { "encoder_hidden_states" } else { "decoder_hidden_states" }, names)
        };
        let (last_enc, last_dec) = (format!("encoder.layer.{}", self.cfg.num_layers - 1), format!("decoder.layer.{}", self.cfg.decoder_layers() - 1));
        vec![crate::arch::HfPass {
            inputs: None,
            hidden: vec![stack(Stack::Encoder, self.cfg.num_layers), stack(Stack::Decoder, self.cfg.decoder_layers())],
            fields: self.hf_output_fields(),
            unexposed: vec![last_enc, last_dec],
            carry: None,
        }]
    }
}
