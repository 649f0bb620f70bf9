//! OpenAI GPT (openai/finetune-transformer-lm) → `OpenAIGPTLMHeadModel`, or
//! `OpenAIGPTDoubleHeadsModel` when a fine-tuning task is named. Facts: architectures.md §3.
//!
//! The release is no TF checkpoint but `params_shapes.json` and numpy shards, which the reader
//! names in the release's fixed order (`model/pos_embd`, `model/tok_embd`, then twelve arrays
//! per block `model/h{l}/…`). There is no config file: the shapes give every size, and what they
//! cannot tell (`n_head`, `afn`) takes `train.py`'s defaults (12, gelu) unless a config says
//! otherwise. The blocks are post-LN (`ln_1(x + attn)`, `ln_2(n + mlp)`) with no final norm; the
//! Conv1D kernels are squeezed as GPT-2's are.
//!
//! The original's joint embedding table holds the tokens, then special tokens added for
//! fine-tuning, then the positions; its LM logits run over that whole table and leave out the
//! last position. transformers' logits cover the token rows at every position: each of those
//! is the same dot product, so that is what both sides compute here.

use std::path::Path;

use serde_json::json;

use crate::gpt2::find_bpe;
use crate::plan::{Fill, Plan, PlanBuilder, PlanError, SourceVar, Transform};
use crate::probe::{Probes, Rng};
use crate::roles::role;
use crate::stage::{Stage, Values};

pub mod candle;
pub mod reference;
pub mod synthetic;

/// The activations `train.py` offers (`act_fns`), as transformers names them too.
pub const AFNS: &[&str] = &["gelu", "relu", "swish"];
/// transformers' `ACT_FNS` also knows "silu" (the same function as "swish").
pub const HF_AFNS: &[&str] = &["gelu", "relu", "swish", "silu"];

/// `train.py`'s defaults, which the released model was trained with.
const DEFAULT_N_HEAD: u64 = 12;
const DEFAULT_AFN: &str = "gelu";
/// Sizes of the released model, for a config read without the checkpoint beside it.
const RELEASE_SIZES: [(&str, u64); 4] = [("vocab_size", 40478), ("n_positions", 512), ("n_embd", 768), ("n_layer", 12)];
/// `_norm`'s epsilon in `train.py`.
const ORIGINAL_EPS: f64 = 1e-5;

/// Which class the conversion writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// `OpenAIGPTLMHeadModel`: the LM head tied to the token embedding.
    Lm,
    /// `OpenAIGPTDoubleHeadsModel`: the LM head and a multiple-choice head, which the release
    /// does not have (fine-tuning trains it): it is written as zeros.
    DoubleHeads,
}

impl Head {
    pub fn class_name(self) -> &'static str {
        match self {
            Head::Lm => "OpenAIGPTLMHeadModel",
            Head::DoubleHeads => "OpenAIGPTDoubleHeadsModel",
        }
    }
}

/// The model's sizes and numerics, under transformers' `OpenAIGPTConfig` names.
#[derive(Debug, Clone, PartialEq)]
pub struct GptConfig {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub afn: String,
    pub layer_norm_epsilon: f64,
    pub head: Head,
}

impl GptConfig {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}

type Object = serde_json::Map<String, serde_json::Value>;

fn positive(field: &str, v: &serde_json::Value) -> Result<usize, String> {
    v.as_u64().filter(|&n| n > 0).map(|n| n as usize).ok_or_else(|| format!("{field} must be a positive integer, got {v}"))
}

/// A size spelled `names[0]` (transformers) or `names[1]` (`train.py`), which must agree when
/// both are given.
fn size(obj: &Object, names: &[&str]) -> Result<Option<usize>, String> {
    let mut found: Option<(&str, usize)> = None;
    for name in names {
        if let Some(v) = obj.get(*name) {
            let n = positive(name, v)?;
            match found {
                Some((other, m)) if m != n => return Err(format!("{other} {m} and {name} {n} disagree")),
                _ => found = Some((name, n)),
            }
        }
    }
    Ok(found.map(|(_, n)| n))
}

fn afn(obj: &Object, allowed: &[&str]) -> Result<String, String> {
    match obj.get("afn") {
        None => Ok(DEFAULT_AFN.into()),
        Some(serde_json::Value::String(a)) if allowed.contains(&a.as_str()) => Ok(a.clone()),
        Some(v) => Err(format!("afn {v} is not supported (allowed: {})", allowed.join(", "))),
    }
}

/// The sizes the checkpoint's arrays give: (vocab_size, n_positions, n_embd, n_layer).
fn sizes_of(vars: &[SourceVar]) -> [Option<usize>; 4] {
    let shape = |name: &str| vars.iter().find(|v| v.name == name).map(|v| v.shape.clone());
    let tok = shape(&var("tok_embd"));
    let pos = shape(&var("pos_embd"));
    let blocks = blocks_in(vars);
    [
        tok.as_ref().and_then(|s| s.first().copied()),
        pos.as_ref().and_then(|s| s.first().copied()),
        tok.as_ref().and_then(|s| s.get(1).copied()),
        (!blocks.is_empty()).then_some(blocks.len()),
    ]
}

/// The original model: sizes from the config where it gives them (transformers' or
/// `train.py`'s names), else from the checkpoint's arrays, else the release's; `n_head` and
/// `afn` from the config, else `train.py`'s defaults. The config may be absent: the release's
/// `params_shapes.json` (a JSON list) stands for it. `finetuning_task` names the double-heads
/// class. The original always normalizes with eps 1e-5, whatever a config says.
pub fn original_config(config: &serde_json::Value, vars: &[SourceVar], finetuning_task: bool) -> Result<GptConfig, String> {
    let empty = Object::new();
    let obj = match config {
        serde_json::Value::Array(_) => &empty,
        serde_json::Value::Object(o) => o,
        other => return Err(format!("the config is not a JSON object: {other}")),
    };
    let from_vars = sizes_of(vars);
    let spellings: [&[&str]; 4] = [&["vocab_size", "n_vocab"], &["n_positions", "n_ctx"], &["n_embd"], &["n_layer"]];
    let mut sizes = [0usize; 4];
    for (k, names) in spellings.iter().enumerate() {
        sizes[k] = match size(obj, names)? {
            Some(n) => n,
            None => from_vars[k].unwrap_or(RELEASE_SIZES[k].1 as usize),
        };
    }
    let [vocab_size, n_positions, n_embd, n_layer] = sizes;
    let n_head = size(obj, &["n_head"])?.unwrap_or(DEFAULT_N_HEAD as usize);
    if !n_embd.is_multiple_of(n_head) {
        let given = if obj.contains_key("n_head") { "" } else { " (train.py's default; give n_head in a config file)" };
        return Err(format!("n_embd {n_embd} must be a multiple of n_head {n_head}{given}"));
    }
    let head = if finetuning_task { Head::DoubleHeads } else { Head::Lm };
    Ok(GptConfig { vocab_size, n_positions, n_embd, n_layer, n_head, afn: afn(obj, AFNS)?, layer_norm_epsilon: ORIGINAL_EPS, head })
}

/// A transformers `config.json` for OpenAI GPT, read as `from_pretrained` reads it.
pub fn from_hf(config: &serde_json::Value) -> Result<GptConfig, String> {
    let obj = config.as_object().ok_or_else(|| format!("the config is not a JSON object: {config}"))?;
    let get = |field: &str, default: u64| obj.get(field).map(|v| positive(field, v)).unwrap_or(Ok(default as usize));
    let (vocab_size, n_positions, n_embd, n_layer) = (get("vocab_size", 40478)?, get("n_positions", 512)?, get("n_embd", 768)?, get("n_layer", 12)?);
    let n_head = get("n_head", DEFAULT_N_HEAD)?;
    if !n_embd.is_multiple_of(n_head) {
        return Err(format!("n_embd {n_embd} must be a multiple of n_head {n_head}"));
    }
    let layer_norm_epsilon = match obj.get("layer_norm_epsilon") {
        None => ORIGINAL_EPS,
        Some(v) => v.as_f64().filter(|e| e.is_finite() && *e > 0.0).ok_or_else(|| format!("layer_norm_epsilon must be a positive finite number, got {v}"))?,
    };
    let class = config.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).unwrap_or("OpenAIGPTLMHeadModel");
    let head = match class {
        "OpenAIGPTLMHeadModel" => Head::Lm,
        "OpenAIGPTDoubleHeadsModel" => Head::DoubleHeads,
        other => return Err(format!("OpenAI GPT class '{other}' is not supported (tfconv writes OpenAIGPTLMHeadModel and OpenAIGPTDoubleHeadsModel)")),
    };
    Ok(GptConfig { vocab_size, n_positions, n_embd, n_layer, n_head, afn: afn(obj, HF_AFNS)?, layer_norm_epsilon, head })
}

/// `model/{name}`, as the numpy reader names the release's arrays.
pub fn var(name: &str) -> String {
    format!("model/{name}")
}

pub fn block_scope(layer: usize) -> String {
    format!("model/h{layer}")
}

/// Whether a checkpoint looks like OpenAI GPT's: its token table `model/tok_embd` (GPT-2 has
/// `model/wte` instead).
pub fn looks_like(vars: &[SourceVar]) -> bool {
    vars.iter().any(|v| v.name == var("tok_embd"))
}

fn blocks_in(vars: &[SourceVar]) -> Vec<usize> {
    let mut found: Vec<usize> = vars.iter().filter_map(|v| v.name.strip_prefix("model/h")?.split('/').next()?.parse().ok()).collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Where the config and the checkpoint disagree on a size, said with the config's field.
pub fn size_mismatches(cfg: &GptConfig, vars: &[SourceVar]) -> Vec<String> {
    let mut problems = Vec::new();
    for (table, rows, field) in [("tok_embd", cfg.vocab_size, "vocab_size (n_vocab)"), ("pos_embd", cfg.n_positions, "n_positions (n_ctx)")] {
        if let Some(v) = vars.iter().find(|v| v.name == var(table)) {
            if v.shape != [rows, cfg.n_embd] {
                problems.push(format!("{field} {rows} and n_embd {} need {} of shape [{rows}, {}], but the checkpoint's is {:?}", cfg.n_embd, v.name, cfg.n_embd, v.shape));
            }
        }
    }
    let blocks = blocks_in(vars);
    if !blocks.is_empty() && blocks != (0..cfg.n_layer).collect::<Vec<_>>() {
        let listed: Vec<String> = blocks.iter().map(|b| format!("h{b}")).collect();
        problems.push(format!("n_layer is {}, but the checkpoint holds the blocks {}", cfg.n_layer, listed.join(", ")));
    }
    problems
}

/// The explicit original → HF table (architectures.md §3.3), in state-dict order.
pub fn plan(cfg: &GptConfig, vars: &[SourceVar]) -> Result<Plan, PlanError> {
    let problems = size_mismatches(cfg, vars);
    if !problems.is_empty() {
        return Err(PlanError::Other(format!("the config does not describe this checkpoint:\n  {}", problems.join("\n  "))));
    }
    let e = cfg.n_embd;
    // As for GPT-2: squeeze [1, in, out] to [in, out], or reshape when a width of 1 would go too.
    let conv = |shape: &[usize]| match e {
        1 => Transform::Reshape(shape.to_vec()),
        _ => Transform::Squeeze,
    };
    let mut b = PlanBuilder::new(vars);
    b.map("transformer.tokens_embed.weight", var("tok_embd"), vec![], vec![cfg.vocab_size, e]);
    b.map("transformer.positions_embed.weight", var("pos_embd"), vec![], vec![cfg.n_positions, e]);
    for l in 0..cfg.n_layer {
        let (src, dst) = (block_scope(l), format!("transformer.h.{l}"));
        let conv1d = |b: &mut PlanBuilder, name: &str, nx: usize, nf: usize| {
            let to = format!("{dst}.{}", name.replace('/', "."));
            b.map(format!("{to}.weight"), format!("{src}/{name}/w"), vec![conv(&[nx, nf])], vec![nx, nf]);
            b.map(format!("{to}.bias"), format!("{src}/{name}/b"), vec![], vec![nf]);
        };
        let norm = |b: &mut PlanBuilder, name: &str| {
            b.map(format!("{dst}.{name}.weight"), format!("{src}/{name}/g"), vec![], vec![e]);
            b.map(format!("{dst}.{name}.bias"), format!("{src}/{name}/b"), vec![], vec![e]);
        };
        conv1d(&mut b, "attn/c_attn", e, 3 * e);
        conv1d(&mut b, "attn/c_proj", e, e);
        norm(&mut b, "ln_1");
        conv1d(&mut b, "mlp/c_fc", e, 4 * e);
        conv1d(&mut b, "mlp/c_proj", 4 * e, e);
        norm(&mut b, "ln_2");
    }
    if cfg.head == Head::DoubleHeads {
        let why = "the multiple-choice head is not in the release (fine-tuning trains it); written as zeros so that it is deterministic";
        b.synthesize("multiple_choice_head.summary.weight", vec![1, e], Fill::Zeros, why);
        b.synthesize("multiple_choice_head.summary.bias", vec![1], Fill::Zeros, why);
    }
    b.finish(role)
}

/// HF `config.json`: `OpenAIGPTConfig`'s fields for this model (architectures.md §3.4).
pub fn hf_config(cfg: &GptConfig, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
    let mut c = json!({
        "afn": cfg.afn,
        "architectures": [cfg.head.class_name()],
        "attn_pdrop": 0.1,
        "embd_pdrop": 0.1,
        "initializer_range": 0.02,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "model_type": "openai-gpt",
        "n_embd": cfg.n_embd,
        "n_head": cfg.n_head,
        "n_layer": cfg.n_layer,
        "n_positions": cfg.n_positions,
        "resid_pdrop": 0.1,
        "summary_activation": null,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": true,
        "summary_type": "cls_index",
        "summary_use_proj": true,
        "tie_word_embeddings": true,
        "vocab_size": cfg.vocab_size,
        "dtype": dtype,
    });
    if let Some(task) = finetuning_task {
        c["finetuning_task"] = json!(task);
    }
    c
}

/// One stage of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `tok_embd[ids] + pos_embd[positions]`.
    Embeddings,
    /// Block ℓ: `n = ln_1(x + attn(x))`, `ln_2(n + mlp(n))`.
    Layer(usize),
    /// Logits against the (tied) token embedding.
    LmHead,
    /// The double-heads class's multiple-choice head on the last position (transformers'
    /// default `cls_index`): the zeros the conversion writes, which the reference computes as
    /// such, so a folder holding anything else diverges here.
    McHead,
}

impl Part {
    pub fn name(self) -> String {
        match self {
            Part::Embeddings => "embeddings".into(),
            Part::Layer(i) => format!("layer.{i}"),
            Part::LmHead => "lm_head".into(),
            Part::McHead => "mc_head".into(),
        }
    }

    pub fn outputs(self) -> Vec<String> {
        match self {
            Part::LmHead => vec!["lm_logits".into()],
            Part::McHead => vec!["mc_logits".into()],
            _ => vec![self.name()],
        }
    }
}

/// The parts in forward order, each with what it reads.
pub fn parts(cfg: &GptConfig) -> Vec<(Part, Vec<String>)> {
    let mut parts = vec![(Part::Embeddings, vec!["input_ids".to_string()])];
    let mut previous = "embeddings".to_string();
    for l in 0..cfg.n_layer {
        parts.push((Part::Layer(l), vec![previous]));
        previous = Part::Layer(l).name();
    }
    parts.push((Part::LmHead, vec![previous.clone()]));
    if cfg.head == Head::DoubleHeads {
        parts.push((Part::McHead, vec![previous]));
    }
    parts
}

/// Full-length rows of token ids: `train.py`'s model has no padding mask (its mask only
/// weights the loss), as GPT-2's has none.
pub fn probes(cfg: &GptConfig, seed: u64, batch: usize, seq_len: usize) -> Probes {
    let mut rng = Rng::new(seed);
    let mut inputs = Values::default();
    inputs.push("input_ids", rng.ints(&[batch, seq_len], 0..cfg.vocab_size as i64));
    Probes { seed, inputs }
}

/// The release's list of array shapes, which stands for its config.
pub const SHAPES_FILE: &str = "params_shapes.json";

/// The release's BPE files (in `model/`, beside the shards).
const ENCODER: &str = "encoder_bpe_40000.json";
const MERGES: &str = "vocab_40000.bpe";

/// OpenAI GPT for one checkpoint (or HF folder).
#[derive(Debug, Clone)]
pub struct OpenAiGpt {
    pub cfg: GptConfig,
}

impl OpenAiGpt {
    fn part(&self, stage: &Stage) -> Result<Part, String> {
        parts(&self.cfg)
            .into_iter()
            .map(|(p, _)| p)
            .find(|p| p.name() == stage.name)
            .ok_or_else(|| format!("{} has no stage {:?}", self.cfg.head.class_name(), stage.name))
    }
}

/// The config key that asks for the double-heads class (`--finetuning_task_name`, which
/// `convert` puts into the original config as this key).
pub const TASK_KEY: &str = "finetuning_task";

/// OpenAI GPT's line in the registry. The release has no config file: without one, the sizes
/// come from the arrays and the rest from `train.py`'s defaults.
pub const FAMILY: crate::arch::Family = crate::arch::Family {
    model_type: "openai-gpt",
    config_names: &["config.json"],
    read_config: crate::arch::json_config,
    default_config: Some(|| json!({})),
    looks_like,
    from_original: |config, vars| {
        let task = config.get(TASK_KEY).is_some_and(|t| !t.is_null());
        Ok(Box::new(OpenAiGpt { cfg: original_config(config, vars, task)? }))
    },
    from_hf_config: |config| Ok(Box::new(OpenAiGpt { cfg: from_hf(config)? })),
    golden_cases: synthetic::golden_cases,
};

impl crate::arch::Architecture for OpenAiGpt {
    fn model_type(&self) -> &'static str {
        "openai-gpt"
    }
    fn class_name(&self) -> &'static str {
        self.cfg.head.class_name()
    }
    fn plan(&self, vars: &[SourceVar]) -> Result<Plan, PlanError> {
        plan(&self.cfg, vars)
    }
    fn hf_config(&self, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
        hf_config(&self.cfg, dtype, finetuning_task)
    }
    fn vocabulary_sources(&self, search_dirs: &[&Path]) -> Vec<std::path::PathBuf> {
        crate::arch::found_in(search_dirs, &[ENCODER, MERGES])
    }
    fn tokenizer_files(&self, search_dirs: &[&Path], _: &crate::arch::TokenizerOptions) -> Result<crate::arch::TokenizerFiles, String> {
        let Some(bpe) = find_bpe(search_dirs, ENCODER, MERGES, self.cfg.vocab_size)? else { return Ok(Default::default()) };
        if bpe.vocab.is_empty() {
            return Ok(crate::arch::TokenizerFiles { files: Vec::new(), notes: bpe.notes });
        }
        let tokenizer_config = json!({"tokenizer_class": "OpenAIGPTTokenizer", "model_max_length": self.cfg.n_positions});
        Ok(crate::arch::TokenizerFiles {
            files: vec![
                ("vocab.json".into(), bpe.vocab),
                ("merges.txt".into(), bpe.merges),
                ("tokenizer_config.json".into(), serde_json::to_vec_pretty(&tokenizer_config).expect("JSON of plain values")),
            ],
            notes: bpe.notes,
        })
    }
    fn probes(&self, seed: u64, batch: usize, seq_len: Option<usize>) -> Probes {
        let max = self.cfg.n_positions;
        probes(&self.cfg, seed, batch, seq_len.unwrap_or(max).min(max))
    }
    fn max_seq_len(&self) -> Option<usize> {
        Some(self.cfg.n_positions)
    }
    fn stages(&self) -> Vec<Stage> {
        parts(&self.cfg)
            .into_iter()
            .map(|(part, inputs)| Stage {
                name: part.name(),
                original_vars: reference::original_vars(part),
                hf_tensors: candle::hf_tensors(part),
                inputs,
                outputs: part.outputs(),
            })
            .collect()
    }
    fn candle_stage(&self, stage: &Stage, vb: candle_nn::VarBuilder, inputs: &Values) -> candle_core::Result<Values> {
        let part = self.part(stage).map_err(candle_core::Error::msg)?;
        crate::candle_util::run_stage(vb, stage, inputs, |vb, xs| candle::run_part(vb, &self.cfg, part, xs))
    }
    fn reference_stage(&self, stage: &Stage, weights: &crate::tf_graph::OriginalWeights, inputs: &Values) -> anyhow::Result<Values> {
        let part = self.part(stage).map_err(anyhow::Error::msg)?;
        reference::stage(weights, &self.cfg, part, stage, inputs)
    }
    fn tied_aliases(&self) -> Vec<(String, String)> {
        vec![("lm_head.weight".into(), "transformer.tokens_embed.weight".into())]
    }
    fn hf_output_fields(&self) -> Vec<(&'static str, &'static str)> {
        match self.cfg.head {
            Head::Lm => vec![("lm_logits", "logits")],
            Head::DoubleHeads => vec![("lm_logits", "logits"), ("mc_logits", "mc_logits")],
        }
    }
}

#[cfg(test)]
mod tests;
