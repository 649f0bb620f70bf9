//! GPT-2 (openai/gpt-2) → `GPT2LMHeadModel`. Facts: architectures.md §4.
//!
//! The original keeps every projection as a `Conv1D` kernel `[1, in, out]`, which transformers
//! also stores in `[in, out]` order: the kernels are squeezed, never transposed, and the fused
//! `c_attn` stays fused (transformers splits its output into q, k, v in the original's order).
//! The language-model head is the token embedding itself (`lm_head.weight` is tied to
//! `transformer.wte.weight` and not written).
//!
//! Probes: the original has no padding mask (`model.py` takes only token ids), so the probes are
//! full-length rows of token ids without an `attention_mask`: what both implementations compute
//! the same way. With right padding and the causal mask the real positions would agree too, but
//! the padded positions would not (transformers masks them out, the original attends to them),
//! so padding would only add outputs that must be ignored.

use std::path::Path;

use serde_json::json;

use crate::plan::{Plan, PlanBuilder, PlanError, SourceVar, Transform};
use crate::probe::{Probes, Rng};
use crate::roles::role;
use crate::stage::{Stage, Values};

pub mod candle;
pub mod reference;
pub mod synthetic;

/// The model's sizes and numerics, under transformers' `GPT2Config` names.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    /// The positions (`wpe` rows): the original's `n_ctx`.
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// The MLP width: 4·n_embd in the original; HF's `n_inner` when a folder sets it.
    pub n_inner: usize,
    /// HF's `activation_function`; the original's GELU is the tanh approximation (`gelu_new`).
    pub activation_function: String,
    pub layer_norm_epsilon: f64,
    /// Scores divided by √head_dim (the original always does).
    pub scale_attn_weights: bool,
    /// Scores also divided by layer index + 1 (the original never does).
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Whether the LM head reads the token embedding (`lm_head.weight` otherwise).
    pub tie_word_embeddings: bool,
}

/// `default_hparams()` of gpt-2 `model.py`; `n_vocab` has no usable default (0).
const ORIGINAL_DEFAULTS: [(&str, u64); 4] = [("n_ctx", 1024), ("n_embd", 768), ("n_head", 12), ("n_layer", 12)];
/// `GPT2Config`'s defaults, which `from_pretrained` applies to a key config.json lacks.
const HF_DEFAULTS: [(&str, u64); 5] = [("vocab_size", 50257), ("n_positions", 1024), ("n_embd", 768), ("n_head", 12), ("n_layer", 12)];
/// What the original computes: eps 1e-5 (`norm`), the tanh GELU (`gelu`).
const ORIGINAL_EPS: f64 = 1e-5;
const ORIGINAL_ACT: &str = "gelu_new";
/// `activation_function` values a folder may name that candle computes.
pub const HF_ACTS: &[&str] = &["gelu_new", "gelu_pytorch_tanh", "gelu", "relu"];

impl Gpt2Config {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// The original model of these sizes.
    fn original(vocab_size: usize, n_positions: usize, n_embd: usize, n_head: usize, n_layer: usize) -> Gpt2Config {
        Gpt2Config {
            vocab_size,
            n_positions,
            n_embd,
            n_layer,
            n_head,
            n_inner: 4 * n_embd,
            activation_function: ORIGINAL_ACT.into(),
            layer_norm_epsilon: ORIGINAL_EPS,
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            tie_word_embeddings: true,
        }
    }
}

type Object = serde_json::Map<String, serde_json::Value>;

fn object(config: &serde_json::Value) -> Result<&Object, String> {
    config.as_object().ok_or_else(|| format!("the config is not a JSON object: {config}"))
}

/// A positive integer field, `default` when absent (None: required).
fn size(obj: &Object, field: &str, default: Option<u64>) -> Result<usize, String> {
    match obj.get(field) {
        None => default.map(|d| d as usize).ok_or_else(|| format!("{field} is missing")),
        Some(v) => v.as_u64().filter(|&n| n > 0).map(|n| n as usize).ok_or_else(|| format!("{field} must be a positive integer, got {v}")),
    }
}

fn flag(obj: &Object, field: &str, default: bool) -> Result<bool, String> {
    match obj.get(field) {
        None => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| format!("{field} must be true or false, got {v}")),
    }
}

fn check_heads(n_embd: usize, n_head: usize) -> Result<(), String> {
    match n_embd.is_multiple_of(n_head) {
        true => Ok(()),
        false => Err(format!("n_embd {n_embd} must be a multiple of n_head {n_head}")),
    }
}

/// gpt-2's `hparams.json` (`n_vocab`, `n_ctx`, `n_embd`, `n_head`, `n_layer`), missing keys
/// taking `default_hparams()` as `model.py` does, except `n_vocab`, which must be given.
pub fn from_hparams(config: &serde_json::Value) -> Result<Gpt2Config, String> {
    let obj = object(config)?;
    let get = |field: &str| size(obj, field, ORIGINAL_DEFAULTS.iter().find(|(f, _)| *f == field).map(|(_, d)| *d));
    let (n_vocab, n_ctx, n_embd, n_head, n_layer) = (get("n_vocab")?, get("n_ctx")?, get("n_embd")?, get("n_head")?, get("n_layer")?);
    check_heads(n_embd, n_head)?;
    Ok(Gpt2Config::original(n_vocab, n_ctx, n_embd, n_head, n_layer))
}

/// A transformers `config.json` for GPT-2, read as `from_pretrained` reads it: `n_ctx` is not
/// a `GPT2Config` field (only `n_positions` sizes `wpe`), and a missing key takes HF's default.
pub fn from_hf(config: &serde_json::Value) -> Result<Gpt2Config, String> {
    let obj = object(config)?;
    let get = |field: &str| size(obj, field, HF_DEFAULTS.iter().find(|(f, _)| *f == field).map(|(_, d)| *d));
    let (vocab_size, n_positions, n_embd, n_head, n_layer) = (get("vocab_size")?, get("n_positions")?, get("n_embd")?, get("n_head")?, get("n_layer")?);
    check_heads(n_embd, n_head)?;
    let n_inner = match obj.get("n_inner") {
        None | Some(serde_json::Value::Null) => 4 * n_embd,
        Some(_) => size(obj, "n_inner", None)?,
    };
    let activation_function = match obj.get("activation_function") {
        None => ORIGINAL_ACT.to_string(),
        Some(serde_json::Value::String(a)) if HF_ACTS.contains(&a.as_str()) => a.clone(),
        Some(v) => return Err(format!("activation_function {v} is not supported (allowed: {})", HF_ACTS.join(", "))),
    };
    let layer_norm_epsilon = match obj.get("layer_norm_epsilon") {
        None => ORIGINAL_EPS,
        Some(v) => v.as_f64().filter(|e| e.is_finite() && *e > 0.0).ok_or_else(|| format!("layer_norm_epsilon must be a positive finite number, got {v}"))?,
    };
    if flag(obj, "add_cross_attention", false)? {
        return Err("add_cross_attention true is not supported: GPT-2 checkpoints have no cross-attention".into());
    }
    Ok(Gpt2Config {
        vocab_size,
        n_positions,
        n_embd,
        n_layer,
        n_head,
        n_inner,
        activation_function,
        layer_norm_epsilon,
        scale_attn_weights: flag(obj, "scale_attn_weights", true)?,
        scale_attn_by_inverse_layer_idx: flag(obj, "scale_attn_by_inverse_layer_idx", false)?,
        tie_word_embeddings: flag(obj, "tie_word_embeddings", true)?,
    })
}

/// The original model an original config describes: `hparams.json`, or a transformers
/// `config.json` (one with a `model_type`, e.g. a folder's own with `--trust-folder-config`),
/// of which only the sizes count: the original always computes the tanh GELU, eps 1e-5 and
/// √head_dim scaling, whatever such a file says.
pub fn original_config(config: &serde_json::Value) -> Result<Gpt2Config, String> {
    if object(config)?.contains_key("model_type") {
        let hf = from_hf(config)?;
        if hf.n_inner != 4 * hf.n_embd {
            return Err(format!("n_inner {} is not supported: the original GPT-2's MLP is 4·n_embd = {} wide", hf.n_inner, 4 * hf.n_embd));
        }
        Ok(Gpt2Config::original(hf.vocab_size, hf.n_positions, hf.n_embd, hf.n_head, hf.n_layer))
    } else {
        from_hparams(config)
    }
}

/// The variable scope of `model.py`.
const SCOPE: &str = "model";

/// `model/h{layer}`.
pub fn block_scope(layer: usize) -> String {
    format!("{SCOPE}/h{layer}")
}

/// `model/{name}`.
pub fn var(name: &str) -> String {
    format!("{SCOPE}/{name}")
}

/// Whether a checkpoint looks like gpt-2's: its token embedding `model/wte` (OpenAI GPT's
/// numpy layout has `model/h0/...` too, but `tok_embd`; BERT's TF2 objects live under
/// `model/layer_with_weights-N`).
pub fn looks_like(vars: &[SourceVar]) -> bool {
    vars.iter().any(|v| v.name == var("wte"))
}

/// The block indices `h{i}` the checkpoint holds, sorted.
fn blocks_in(vars: &[SourceVar]) -> Vec<usize> {
    let mut found: Vec<usize> = vars
        .iter()
        .filter_map(|v| v.name.strip_prefix("model/h")?.split('/').next()?.parse().ok())
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// Where the config and the checkpoint disagree on a size, said with the config's field: the
/// usual cause is a config for another model (or transformers' converter's habit of leaving
/// `n_positions` at 1024 when given `hparams.json`).
pub fn size_mismatches(cfg: &Gpt2Config, vars: &[SourceVar]) -> Vec<String> {
    let shape = |name: &str| vars.iter().find(|v| v.name == name).map(|v| v.shape.clone());
    let mut problems = Vec::new();
    let rows = |table: &str, rows: usize, field: &str, problems: &mut Vec<String>| {
        if let Some(s) = shape(&var(table)) {
            if s.len() != 2 || s[0] != rows || s[1] != cfg.n_embd {
                problems.push(format!("{field} {rows} and n_embd {} need {} of shape [{rows}, {}], but the checkpoint's is {s:?}", cfg.n_embd, var(table), cfg.n_embd));
            }
        }
    };
    rows("wte", cfg.vocab_size, "n_vocab (vocab_size)", &mut problems);
    rows("wpe", cfg.n_positions, "n_ctx (n_positions)", &mut problems);
    let blocks = blocks_in(vars);
    if !blocks.is_empty() && blocks != (0..cfg.n_layer).collect::<Vec<_>>() {
        let listed: Vec<String> = blocks.iter().map(|b| format!("h{b}")).collect();
        problems.push(format!("n_layer is {}, but the checkpoint holds the blocks {}", cfg.n_layer, listed.join(", ")));
    }
    problems
}

/// The explicit original → HF table (architectures.md §4.3), in `GPT2LMHeadModel` state-dict
/// order. `lm_head.weight` is tied to `transformer.wte.weight` and not written.
pub fn plan(cfg: &Gpt2Config, vars: &[SourceVar]) -> Result<Plan, PlanError> {
    let problems = size_mismatches(cfg, vars);
    if !problems.is_empty() {
        return Err(PlanError::Other(format!("the config does not describe this checkpoint:\n  {}", problems.join("\n  "))));
    }
    let (e, inner) = (cfg.n_embd, cfg.n_inner);
    // Conv1D kernels are [1, in, out] and HF keeps [in, out]; a squeeze would also drop a width
    // of 1, so a one-wide model reshapes to the exact target instead (the same bytes either way).
    let conv = |shape: &[usize]| match e {
        1 => Transform::Reshape(shape.to_vec()),
        _ => Transform::Squeeze,
    };
    let mut b = PlanBuilder::new(vars);
    b.map("transformer.wte.weight", var("wte"), vec![], vec![cfg.vocab_size, e]);
    b.map("transformer.wpe.weight", var("wpe"), vec![], vec![cfg.n_positions, e]);
    for l in 0..cfg.n_layer {
        let (src, dst) = (block_scope(l), format!("transformer.h.{l}"));
        let norm = |b: &mut PlanBuilder, name: &str| {
            b.map(format!("{dst}.{name}.weight"), format!("{src}/{name}/g"), vec![], vec![e]);
            b.map(format!("{dst}.{name}.bias"), format!("{src}/{name}/b"), vec![], vec![e]);
        };
        let conv1d = |b: &mut PlanBuilder, name: &str, nx: usize, nf: usize| {
            b.map(format!("{dst}.{}.weight", name.replace('/', ".")), format!("{src}/{name}/w"), vec![conv(&[nx, nf])], vec![nx, nf]);
            b.map(format!("{dst}.{}.bias", name.replace('/', ".")), format!("{src}/{name}/b"), vec![], vec![nf]);
        };
        norm(&mut b, "ln_1");
        conv1d(&mut b, "attn/c_attn", e, 3 * e);
        conv1d(&mut b, "attn/c_proj", e, e);
        norm(&mut b, "ln_2");
        conv1d(&mut b, "mlp/c_fc", e, inner);
        conv1d(&mut b, "mlp/c_proj", inner, e);
    }
    b.map("transformer.ln_f.weight", var("ln_f/g"), vec![], vec![e]);
    b.map("transformer.ln_f.bias", var("ln_f/b"), vec![], vec![e]);
    b.finish(role)
}

/// HF `config.json` (architectures.md §4.4): `n_vocab` → `vocab_size`, `n_ctx` → `n_positions`
/// (and `n_ctx` kept for older readers), with what the original computes spelled out.
/// `<|endoftext|>` is the last id of GPT-2's vocabulary, hence bos/eos = vocab_size − 1.
pub fn hf_config(cfg: &Gpt2Config, dtype: &str, finetuning_task: Option<&str>) -> serde_json::Value {
    let eot = cfg.vocab_size - 1;
    let mut c = json!({
        "activation_function": cfg.activation_function,
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": eot,
        "embd_pdrop": 0.1,
        "eos_token_id": eot,
        "initializer_range": 0.02,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "model_type": "gpt2",
        "n_ctx": cfg.n_positions,
        "n_embd": cfg.n_embd,
        "n_head": cfg.n_head,
        "n_inner": null,
        "n_layer": cfg.n_layer,
        "n_positions": cfg.n_positions,
        "reorder_and_upcast_attn": false,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": false,
        "scale_attn_weights": true,
        "summary_activation": null,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": true,
        "summary_type": "cls_index",
        "summary_use_proj": true,
        "tie_word_embeddings": true,
        "use_cache": true,
        "vocab_size": cfg.vocab_size,
        "dtype": dtype,
    });
    if let Some(task) = finetuning_task {
        c["finetuning_task"] = json!(task);
    }
    c
}

/// One stage of GPT-2's forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `wte[ids] + wpe[positions]`.
    Embeddings,
    /// Block ℓ: pre-LN attention, then pre-LN MLP, each added to the residual.
    Layer(usize),
    /// The final LayerNorm.
    LnF,
    /// Logits against the (tied) token embedding.
    LmHead,
}

impl Part {
    pub fn name(self) -> String {
        match self {
            Part::Embeddings => "embeddings".into(),
            Part::Layer(i) => format!("layer.{i}"),
            Part::LnF => "ln_f".into(),
            Part::LmHead => "lm_head".into(),
        }
    }

    pub fn outputs(self) -> Vec<String> {
        match self {
            Part::LmHead => vec!["lm_logits".into()],
            _ => vec![self.name()],
        }
    }
}

/// The stages' parts in forward order, each with what it reads (probe inputs or the previous
/// part's output).
pub fn parts(cfg: &Gpt2Config) -> Vec<(Part, Vec<String>)> {
    let mut parts = vec![(Part::Embeddings, vec!["input_ids".to_string()])];
    let mut previous = "embeddings".to_string();
    for l in 0..cfg.n_layer {
        parts.push((Part::Layer(l), vec![previous]));
        previous = Part::Layer(l).name();
    }
    parts.push((Part::LnF, vec![previous]));
    parts.push((Part::LmHead, vec!["ln_f".to_string()]));
    parts
}

/// Full-length rows of random token ids (see the module comment for why there is no mask).
pub fn probes(cfg: &Gpt2Config, seed: u64, batch: usize, seq_len: usize) -> Probes {
    let mut rng = Rng::new(seed);
    let mut inputs = Values::default();
    inputs.push("input_ids", rng.ints(&[batch, seq_len], 0..cfg.vocab_size as i64));
    Probes { seed, inputs }
}

/// GPT-2's byte-level BPE files as released, and its end-of-text token.
const ENCODER: &str = "encoder.json";
const MERGES: &str = "vocab.bpe";
const END_OF_TEXT: &str = "<|endoftext|>";

/// A BPE vocabulary found beside a checkpoint: the token → id file and the merges, as bytes to
/// write under transformers' names (`vocab.json`, `merges.txt`), the ids, and notes on whatever
/// does not fit the model.
pub struct Bpe {
    pub vocab: Vec<u8>,
    pub merges: Vec<u8>,
    pub ids: serde_json::Map<String, serde_json::Value>,
    /// Where the vocabulary came from, for notes.
    pub source: std::path::PathBuf,
    pub notes: Vec<String>,
}

/// Finds `encoder` and `merges` in `search_dirs` and checks the ids against the model's
/// `rows` embedding rows. None when neither is there; a note (and no files) when one is
/// missing; an error only when the vocabulary cannot be read at all. The weights are converted
/// regardless: a vocabulary that does not fit is the tokenizer's problem, not theirs.
pub fn find_bpe(search_dirs: &[&Path], encoder: &str, merges: &str, rows: usize) -> Result<Option<Bpe>, String> {
    let find = |name: &str| search_dirs.iter().map(|d| d.join(name)).find(|p| p.is_file());
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let (encoder_path, merges_path) = match (find(encoder), find(merges)) {
        (None, None) => return Ok(None),
        (Some(e), Some(m)) => (e, m),
        (one, _) => {
            let (have, lack) = if one.is_some() { (encoder, merges) } else { (merges, encoder) };
            let note = format!("no tokenizer files written: found {have} but no {lack} beside it, and the tokenizer needs both");
            return Ok(Some(Bpe { vocab: Vec::new(), merges: Vec::new(), ids: Default::default(), source: one.unwrap_or_default(), notes: vec![note] }));
        }
    };
    let vocab = read(&encoder_path)?;
    let ids: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&vocab).map_err(|e| format!("{}: not a JSON object of token ids: {e}", encoder_path.display()))?;
    let mut max_id = 0;
    let mut beyond = 0;
    for (token, id) in &ids {
        let id = id.as_u64().ok_or_else(|| format!("{}: the id of {token:?} is not a non-negative integer: {id}", encoder_path.display()))?;
        max_id = max_id.max(id);
        beyond += usize::from(id >= rows as u64);
    }
    let mut notes = Vec::new();
    if beyond > 0 {
        notes.push(format!(
            "{} holds {beyond} token id(s) at or above the model's {rows} embedding rows (largest {max_id}): the tokenizer does not fit this model, \
             and those tokens would index past the embedding; the weights are converted as they are",
            encoder_path.display(),
        ));
    }
    Ok(Some(Bpe { vocab, merges: read(&merges_path)?, ids, source: encoder_path, notes }))
}

/// The tokenizer beside the checkpoint (`encoder.json` + `vocab.bpe` → `vocab.json` +
/// `merges.txt`, a `GPT2Tokenizer`), with notes for whatever does not fit the model.
pub fn tokenizer_files(cfg: &Gpt2Config, search_dirs: &[&Path]) -> Result<crate::arch::TokenizerFiles, String> {
    let Some(Bpe { vocab, merges, ids, source, mut notes }) = find_bpe(search_dirs, ENCODER, MERGES, cfg.vocab_size)? else {
        return Ok(Default::default());
    };
    if vocab.is_empty() {
        return Ok(crate::arch::TokenizerFiles { files: Vec::new(), notes });
    }
    let special = match ids.get(END_OF_TEXT).and_then(|v| v.as_u64()) {
        Some(id) => {
            if id != cfg.vocab_size as u64 - 1 {
                notes.push(format!(
                    "{END_OF_TEXT} has id {id} in {}, but config.json's bos/eos_token_id are {} (the last row, as in GPT-2's vocabulary)",
                    source.display(),
                    cfg.vocab_size - 1
                ));
            }
            json!({"bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT})
        }
        None => {
            notes.push(format!("{} has no {END_OF_TEXT} token: the tokenizer is written without special tokens", source.display()));
            json!({})
        }
    };
    let mut tokenizer_config = json!({
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": false,
        "model_max_length": cfg.n_positions,
    });
    if let (Some(t), Some(s)) = (tokenizer_config.as_object_mut(), special.as_object()) {
        t.extend(s.clone());
    }
    Ok(crate::arch::TokenizerFiles {
        files: vec![
            ("vocab.json".into(), vocab),
            ("merges.txt".into(), merges),
            ("tokenizer_config.json".into(), serde_json::to_vec_pretty(&tokenizer_config).expect("JSON of plain values")),
            ("special_tokens_map.json".into(), serde_json::to_vec_pretty(&special).expect("JSON of plain values")),
        ],
        notes,
    })
}

/// A GPT-2 checkpoint (or HF folder) as tfconv converts and verifies it.
#[derive(Debug, Clone)]
pub struct Gpt2 {
    pub cfg: Gpt2Config,
}

impl Gpt2 {
    pub fn from_original(config: &serde_json::Value) -> Result<Gpt2, String> {
        Ok(Gpt2 { cfg: original_config(config)? })
    }

    pub fn from_hf_config(config: &serde_json::Value) -> Result<Gpt2, String> {
        let class = config.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()).unwrap_or("GPT2LMHeadModel");
        if class != "GPT2LMHeadModel" {
            return Err(format!("GPT-2 class '{class}' is not supported (tfconv writes GPT2LMHeadModel)"));
        }
        Ok(Gpt2 { cfg: from_hf(config)? })
    }

    fn part(&self, stage: &Stage) -> Result<Part, String> {
        parts(&self.cfg)
            .into_iter()
            .map(|(p, _)| p)
            .find(|p| p.name() == stage.name)
            .ok_or_else(|| format!("GPT2LMHeadModel has no stage {:?}", stage.name))
    }
}

/// GPT-2's line in the registry.
pub const FAMILY: crate::arch::Family = crate::arch::Family {
    model_type: "gpt2",
    config_names: &["hparams.json", "config.json"],
    read_config: crate::arch::json_config,
    default_config: None,
    looks_like,
    from_original: |config, _| Ok(Box::new(Gpt2::from_original(config)?)),
    from_hf_config: |config| Ok(Box::new(Gpt2::from_hf_config(config)?)),
    golden_cases: synthetic::golden_cases,
};

impl crate::arch::Architecture for Gpt2 {
    fn model_type(&self) -> &'static str {
        "gpt2"
    }
    fn class_name(&self) -> &'static str {
        "GPT2LMHeadModel"
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
        tokenizer_files(&self.cfg, search_dirs)
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
                hf_tensors: candle::hf_tensors(&self.cfg, part),
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
        vec![("lm_head.weight".into(), "transformer.wte.weight".into())]
    }
    fn hf_output_fields(&self) -> Vec<(&'static str, &'static str)> {
        vec![("lm_logits", "logits")]
    }
    fn hf_passes(&self) -> Vec<crate::arch::HfPass> {
        // transformers' GPT2Model records each block's input, then ln_f's output last: the last
        // block's own output is not among them.
        let mut names = vec!["embeddings".to_string()];
        names.extend((0..self.cfg.n_layer.saturating_sub(1)).map(|l| format!("layer.{l}")));
        names.push("ln_f".into());
        let last = self.cfg.n_layer.checked_sub(1).map(|l| format!("layer.{l}")).into_iter().collect();
        vec![crate::arch::HfPass { inputs: None, hidden: vec![("hidden_states", names)], fields: self.hf_output_fields(), unexposed: last, carry: None }]
    }
}

#[cfg(test)]
mod tests;
