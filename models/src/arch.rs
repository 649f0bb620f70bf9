//! The one interface every architecture implements, and the dispatch from a model type name.

use std::path::Path;

use crate::plan::{Plan, PlanError, SourceVar};
use crate::probe::{Outputs, Probes};
use crate::stage::{Stage, Values};
use crate::tf_graph::OriginalWeights;

/// Everything tfconv needs from one architecture, for one checkpoint.
pub trait Architecture: Send + Sync {
    /// HF's `model_type`, e.g. "bert".
    fn model_type(&self) -> &'static str;
    /// The HF class the output loads as, e.g. "BertForPreTraining".
    fn class_name(&self) -> &'static str;
    /// The explicit original → HF table applied to the checkpoint's variables.
    fn plan(&self, vars: &[SourceVar]) -> Result<Plan, PlanError>;
    /// HF `config.json` for the output, with `dtype` the stored dtype ("float32", …).
    fn hf_config(&self, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value;
    /// Tokenizer files found beside the checkpoint (or the config), as (file name, bytes).
    fn tokenizer_files(&self, search_dirs: &[&Path], options: &TokenizerOptions) -> Result<Vec<(String, Vec<u8>)>, String>;
    /// Seeded probe inputs, named as the stages read them; `seq_len` None means the
    /// architecture's default. The same seed gives the same probes.
    fn probes(&self, seed: u64, batch: usize, seq_len: Option<usize>) -> Probes;
    /// The longest sequence the model takes (its positions), if it has a limit.
    fn max_seq_len(&self) -> Option<usize>;
    /// The candle model on HF-named weights, per-layer outputs in forward order.
    fn candle_outputs(&self, vb: candle_nn::VarBuilder, inputs: &Values) -> candle_core::Result<Outputs>;
    /// The original model in TensorFlow, restoring the original checkpoint.
    fn reference_outputs(&self, weights: &OriginalWeights, inputs: &Values) -> anyhow::Result<Outputs>;

    /// The forward pass as ordered stages; running them in order with [`crate::stage::chain`]
    /// is what `candle_outputs` and `reference_outputs` compute, output for output.
    fn stages(&self) -> Vec<Stage>;
    /// One stage in candle, loading only `stage.hf_tensors` from `vb`; `inputs` holds at least
    /// `stage.inputs`.
    fn candle_stage(&self, stage: &Stage, vb: candle_nn::VarBuilder, inputs: &Values) -> candle_core::Result<Values>;
    /// One stage in TensorFlow: a fresh graph restoring exactly `stage.original_vars`, with
    /// placeholders for `stage.inputs` (picked from `inputs`).
    fn reference_stage(&self, stage: &Stage, weights: &OriginalWeights, inputs: &Values) -> anyhow::Result<Values>;
}

/// User choices about tokenizer files.
#[derive(Debug, Clone, Default)]
pub struct TokenizerOptions {
    /// Overrides the inferred lower-casing (BERT-style WordPiece vocabularies).
    pub do_lower_case: Option<bool>,
}

/// Model types tfconv knows, for messages.
pub const MODEL_TYPES: &[&str] = &["bert"];

/// Guesses the model type from variable names; an error says why when it cannot.
pub fn detect_model_type(vars: &[SourceVar]) -> Result<&'static str, String> {
    let mut hits = Vec::new();
    if crate::bert::looks_like(vars) {
        hits.push("bert");
    }
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "could not tell the model type from the variable names (first few: {}); pass --model-type (one of: {})",
            vars.iter().take(5).map(|v| v.name.as_str()).collect::<Vec<_>>().join(", "),
            MODEL_TYPES.join(", ")
        )),
        many => Err(format!("the variable names fit several model types ({}); pass --model-type", many.join(", "))),
    }
}

/// An architecture for an original checkpoint: its original config and its variables.
pub fn from_original(model_type: &str, original_config: &serde_json::Value, vars: &[SourceVar]) -> Result<Box<dyn Architecture>, String> {
    match model_type {
        "bert" => Ok(Box::new(crate::bert::Bert::from_original(original_config, vars)?)),
        other => Err(format!("unknown model type '{other}' (known: {})", MODEL_TYPES.join(", "))),
    }
}

/// An architecture for an existing HF folder's `config.json` (for `tfconv verify`).
pub fn from_hf_config(config: &serde_json::Value) -> Result<Box<dyn Architecture>, String> {
    let model_type = config.get("model_type").and_then(|v| v.as_str()).ok_or("config.json has no model_type")?;
    match model_type {
        "bert" => Ok(Box::new(crate::bert::Bert::from_hf_config(config)?)),
        other => Err(format!("model_type '{other}' is not supported (known: {})", MODEL_TYPES.join(", "))),
    }
}
