//! The one interface every architecture implements, and the dispatch from a model type name.

use std::path::Path;

use crate::plan::{Plan, PlanError, SourceVar};
use crate::probe::{Outputs, Probes};
use crate::stage::{Stage, Values};
use crate::synthetic::GoldenCase;
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
    /// Tokenizer files found beside the checkpoint (or the config), with notes on them.
    fn tokenizer_files(&self, search_dirs: &[&Path], options: &TokenizerOptions) -> Result<TokenizerFiles, String>;
    /// The original vocabulary files `tokenizer_files` reads from `search_dirs`, for the
    /// report's provenance (their digests). None by default.
    fn vocabulary_sources(&self, _search_dirs: &[&Path]) -> Vec<std::path::PathBuf> {
        Vec::new()
    }
    /// Seeded probe inputs, named as the stages read them; `seq_len` None means the
    /// architecture's default. The same seed gives the same probes.
    fn probes(&self, seed: u64, batch: usize, seq_len: Option<usize>) -> Probes;
    /// The longest sequence the model takes (its positions), if it has a limit.
    fn max_seq_len(&self) -> Option<usize>;
    /// The forward pass as ordered stages; running them in order with [`crate::stage::chain`]
    /// is what `candle_outputs` and `reference_outputs` compute, output for output.
    fn stages(&self) -> Vec<Stage>;
    /// One stage in candle, loading only `stage.hf_tensors` from `vb`; `inputs` holds at least
    /// `stage.inputs`.
    fn candle_stage(&self, stage: &Stage, vb: candle_nn::VarBuilder, inputs: &Values) -> candle_core::Result<Values>;
    /// One stage in TensorFlow: a fresh graph restoring exactly `stage.original_vars`, with
    /// placeholders for `stage.inputs` (picked from `inputs`).
    fn reference_stage(&self, stage: &Stage, weights: &OriginalWeights, inputs: &Values) -> anyhow::Result<Values>;

    /// The candle model on HF-named weights, every stage output in forward order.
    fn candle_outputs(&self, vb: candle_nn::VarBuilder, inputs: &Values) -> candle_core::Result<Outputs> {
        let run = |stage: &Stage, ins: &Values| Ok(self.candle_stage(stage, vb.clone(), ins)?);
        crate::stage::chain(&self.stages(), inputs, run).map(|v| v.to_outputs()).map_err(candle_core::Error::msg)
    }
    /// The original model in TensorFlow, restoring the original checkpoint: every stage in turn.
    fn reference_outputs(&self, weights: &OriginalWeights, inputs: &Values) -> anyhow::Result<Outputs> {
        Ok(crate::stage::chain(&self.stages(), inputs, |stage, ins| self.reference_stage(stage, weights, ins))?.to_outputs())
    }

    /// HF keys of this class that are tied to another key (alias, tied-to), which other
    /// converters may store as a copy; verify accepts such a copy when it is identical.
    fn tied_aliases(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// How transformers' `ModelOutput` of this class names the head outputs, as (tfconv output,
    /// attribute): the interop suite reads the HF model's outputs by these names.
    fn hf_output_fields(&self) -> Vec<(&'static str, &'static str)>;

    /// What the interop suite must know of transformers' support for this class: releases that
    /// lack it, and workarounds for bugs of releases that have it.
    fn hf_support(&self) -> HfSupport {
        HfSupport::default()
    }

    /// The forward calls the interop suite makes to read every output from transformers. By
    /// default one call on all probe inputs, whose `hidden_states` are the embeddings and layer
    /// outputs in order.
    fn hf_passes(&self) -> Vec<HfPass> {
        let hidden_states = self
            .stages()
            .iter()
            .flat_map(|st| st.outputs.iter())
            .filter(|o| *o == "embeddings" || o.strip_prefix("layer.").is_some_and(|i| i.parse::<usize>().is_ok()))
            .cloned()
            .collect();
        vec![HfPass { inputs: None, hidden: vec![("hidden_states", hidden_states)], fields: self.hf_output_fields(), unexposed: Vec::new(), carry: None }]
    }
}

/// The first file named `name` in `search_dirs`, for each of `names`: what a tokenizer reads.
pub fn found_in(search_dirs: &[&Path], names: &[&str]) -> Vec<std::path::PathBuf> {
    names.iter().filter_map(|n| search_dirs.iter().map(|d| d.join(n)).find(|p| p.is_file())).collect()
}

/// One forward call of the HF model in the interop suite.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HfPass {
    /// The probe inputs passed (None: all of them).
    pub inputs: Option<Vec<&'static str>>,
    /// Per hidden-states attribute of the output (`hidden_states`, or T5's
    /// `encoder_hidden_states` and `decoder_hidden_states`), tfconv's names for its entries in order.
    pub hidden: Vec<(&'static str, Vec<String>)>,
    /// (tfconv output, attribute of the class's output) for the head outputs.
    pub fields: Vec<(&'static str, &'static str)>,
    /// Stage outputs transformers computes inside and does not return (XLNet's sequence
    /// summary): compared by `verify` only.
    pub unexposed: Vec<String>,
    /// For a pass that continues the one before (Transformer-XL's second segment): what it takes
    /// from that pass's outputs.
    pub carry: Option<Carry>,
}

/// transformers releases and this class (see [`Architecture::hf_support`]).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HfSupport {
    /// (version prefix, why): releases that cannot load the class at all; the suite reports the
    /// case as skipped there, with the reason.
    pub unsupported: Vec<(&'static str, &'static str)>,
    /// (workaround known to the interop harness, why) applied before the forward calls.
    pub workarounds: Vec<(&'static str, &'static str)>,
}

/// A recurrent model's state handed from one forward call to the next in the interop suite.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Carry {
    /// The attribute of the previous call's output (`mems`).
    pub output: &'static str,
    /// The keyword argument it is passed as (`mems`).
    pub argument: &'static str,
    /// Probe inputs passed under another keyword, as (probe name, argument): the second
    /// segment's `next.input_ids` is `input_ids` to the model.
    pub rename: Vec<(&'static str, &'static str)>,
}

/// The tokenizer files to write, as (file name, bytes), and what the user should know about
/// them: a vocabulary that does not fit the model is written anyway, with a note.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenizerFiles {
    pub files: Vec<(String, Vec<u8>)>,
    pub notes: Vec<String>,
}

impl From<Vec<(String, Vec<u8>)>> for TokenizerFiles {
    fn from(files: Vec<(String, Vec<u8>)>) -> Self {
        TokenizerFiles { files, notes: Vec::new() }
    }
}

/// User choices about tokenizer files.
#[derive(Debug, Clone, Default)]
pub struct TokenizerOptions {
    /// Overrides the inferred lower-casing (BERT-style WordPiece vocabularies).
    pub do_lower_case: Option<bool>,
}

/// What building an architecture gives: the model, or why the config or checkpoint cannot be one.
pub type Built = Result<Box<dyn Architecture>, String>;

/// One architecture family as the registry knows it.
pub struct Family {
    /// HF's `model_type`.
    pub model_type: &'static str,
    /// Original config file names, tried beside the checkpoint when no config is given.
    pub config_names: &'static [&'static str],
    /// Reads an original config file (file name, bytes) as JSON: [`json_config`] for families
    /// whose configs are JSON; T5 also reads Mesh TensorFlow's `operative_config.gin`.
    pub read_config: fn(&str, &[u8]) -> Result<serde_json::Value, String>,
    /// The config when none of `config_names` is there, for releases that ship none (OpenAI
    /// GPT): the architecture then takes what it can from the checkpoint and the rest from the
    /// original training script's defaults. None: a config is required.
    pub default_config: Option<fn() -> serde_json::Value>,
    /// Whether a checkpoint's variable names are this family's (for --model-type detection).
    pub looks_like: fn(&[SourceVar]) -> bool,
    /// The architecture for an original config and the checkpoint's variables.
    pub from_original: fn(&serde_json::Value, &[SourceVar]) -> Built,
    /// The architecture for an HF folder's `config.json` (for `tfconv verify`).
    pub from_hf_config: fn(&serde_json::Value) -> Built,
    /// The bundled golden fixtures (`cargo xtask golden` writes them).
    pub golden_cases: fn() -> Vec<GoldenCase>,
}

/// Every architecture tfconv converts: one line each.
pub const FAMILIES: &[Family] = &[
    crate::bert::FAMILY,
    crate::albert::FAMILY,
    crate::gpt2::FAMILY,
    crate::openai_gpt::FAMILY,
    crate::xlnet::FAMILY,
    crate::xlm::FAMILY,
    crate::t5::FAMILY,
    crate::transfo_xl::FAMILY,
];

/// Model types tfconv knows, for messages.
pub fn model_types() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.model_type).collect()
}

/// A JSON config file.
pub fn json_config(_name: &str, bytes: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))
}

/// Reads the original config file `name` of `model_type` (JSON for an unknown type).
pub fn read_config(model_type: &str, name: &str, bytes: &[u8]) -> Result<serde_json::Value, String> {
    (family(model_type).map(|f| f.read_config).unwrap_or(json_config))(name, bytes)
}

/// The original config file names of `model_type` (every family's, for an unknown type).
pub fn config_names(model_type: &str) -> Vec<&'static str> {
    match family(model_type) {
        Some(f) => f.config_names.to_vec(),
        None => FAMILIES.iter().flat_map(|f| f.config_names.iter().copied()).collect(),
    }
}

/// The config `model_type` takes when no config file is found, if it may go without one.
pub fn default_config(model_type: &str) -> Option<serde_json::Value> {
    family(model_type).and_then(|f| f.default_config).map(|f| f())
}

fn family(model_type: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.model_type == model_type)
}

/// Every bundled golden case, in registry order.
pub fn golden_cases() -> Vec<GoldenCase> {
    FAMILIES.iter().flat_map(|f| (f.golden_cases)()).collect()
}

/// Guesses the model type from variable names; an error says why when it cannot.
pub fn detect_model_type(vars: &[SourceVar]) -> Result<&'static str, String> {
    let hits: Vec<&'static str> = FAMILIES.iter().filter(|f| (f.looks_like)(vars)).map(|f| f.model_type).collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "could not tell the model type from the variable names (first few: {}); pass --model-type (one of: {})",
            vars.iter().take(5).map(|v| v.name.as_str()).collect::<Vec<_>>().join(", "),
            model_types().join(", ")
        )),
        many => Err(format!("the variable names fit several model types ({}); pass --model-type", many.join(", "))),
    }
}

/// An architecture for an original checkpoint: its original config and its variables.
pub fn from_original(model_type: &str, original_config: &serde_json::Value, vars: &[SourceVar]) -> Result<Box<dyn Architecture>, String> {
    let f = family(model_type).ok_or_else(|| format!("unknown model type '{model_type}' (known: {})", model_types().join(", ")))?;
    (f.from_original)(original_config, vars)
}

/// An architecture for an existing HF folder's `config.json` (for `tfconv verify`).
pub fn from_hf_config(config: &serde_json::Value) -> Result<Box<dyn Architecture>, String> {
    let model_type = config.get("model_type").and_then(|v| v.as_str()).ok_or("config.json has no model_type")?;
    let f = family(model_type).ok_or_else(|| format!("model_type '{model_type}' is not supported (known: {})", model_types().join(", ")))?;
    (f.from_hf_config)(config)
}
