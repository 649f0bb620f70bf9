//! XLM (facebookresearch/XLM) → `XLMWithLMHeadModel`. Facts: architectures.md §6.
//!
//! An XLM `.pth` carries its own config: `torch.save` wrote the training `params`, the
//! dictionary (`dico_*`) and the `model` state dict into one file, and tfconv reads them from
//! there (the checkpoint's embedded config, see `Checkpoint::embedded_config`). State-dict keys
//! may carry DataParallel's `module.` prefix, which HF's converter keeps and tfconv strips.
//!
//! Beyond HF's converter: config.json gets `model_type` and `architectures` (without them
//! `AutoModel` fails in transformers 5), `share_inout_emb: false` becomes an untied head
//! (`tie_word_embeddings: false`, which HF's converter ignores), adaptive-softmax heads and
//! product-key memories are refused rather than loaded at random, and merges.txt is built from
//! the BPE codes file shipped beside the checkpoint.

use serde_json::{json, Map, Value as Json};

use crate::plan::{Plan, PlanBuilder, PlanError, SourceVar};
use crate::probe::Probes;
use crate::roles::role;
use crate::stage::{Stage, Values};

pub mod candle;
pub mod probes;
pub mod reference;
pub mod synthetic;
pub mod torch_save;

/// `N_MAX_POSITIONS` of the original, HF's default `max_position_embeddings`.
pub const MAX_POSITIONS: usize = 512;
/// `nn.LayerNorm(dim, eps=1e-12)` everywhere in the original.
pub const LAYER_NORM_EPS: f64 = 1e-12;
/// XLM's dictionary puts `<s>`, `</s>`, `<pad>`, `<unk>` and `<special0>`…`<special9>` first.
pub const SPECIAL_IDS: usize = 14;

/// The model as XLM's `params` (or an HF `XLMConfig`) describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XlmConfig {
    pub n_words: usize,
    pub emb_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_langs: usize,
    pub use_lang_emb: bool,
    /// erf GELU (the original's `gelu`) or ReLU.
    pub gelu_activation: bool,
    /// The position table holds fixed sinusoids (stored in the checkpoint all the same).
    pub sinusoidal_embeddings: bool,
    /// `pred_layer.proj.weight` is `embeddings.weight`.
    pub share_inout_emb: bool,
    /// Rows of the position table.
    pub max_positions: usize,
    pub pad_index: usize,
}

impl XlmConfig {
    /// The original creates `lang_embeddings` (and adds them) only for several languages.
    pub fn lang_embeddings(&self) -> bool {
        self.n_langs > 1 && self.use_lang_emb
    }
    /// The FFN width: the original hard-codes 4 · emb_dim.
    pub fn hidden_dim(&self) -> usize {
        4 * self.emb_dim
    }
    pub fn head_dim(&self) -> usize {
        self.emb_dim / self.n_heads
    }
}

/// A JSON object of XLM's (or HF's) parameter names.
pub type Params = Map<String, Json>;

/// The parts of an original config: XLM's `params`, and the dictionary when the config came
/// from the checkpoint itself (`{"params": …, "dico_word2id": …, …}`); a plain params object
/// given with `--config` has none.
pub fn split_original(config: &Json) -> Result<(&Params, Option<&Params>), String> {
    let obj = config.as_object().ok_or_else(|| format!("the XLM config is not a JSON object: {config}"))?;
    match obj.get("params") {
        Some(Json::Object(params)) => Ok((params, obj.get("dico_word2id").and_then(Json::as_object))),
        Some(other) => Err(format!("the checkpoint's params is {other}, expected a dict of training parameters")),
        None if obj.contains_key("emb_dim") => Ok((obj, None)),
        None => Err(format!(
            "no XLM params: the checkpoint has no `params` entry (keys: {}) and no params were given with --config",
            obj.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
    }
}

fn positive(obj: &Map<String, Json>, field: &str, default: Option<usize>) -> Result<usize, String> {
    match obj.get(field) {
        None => default.ok_or_else(|| format!("{field} is missing")),
        Some(v) => v.as_u64().filter(|&n| n > 0).map(|n| n as usize).ok_or_else(|| format!("{field} must be a positive integer, got {v}")),
    }
}

fn index(obj: &Map<String, Json>, field: &str, default: usize) -> Result<usize, String> {
    match obj.get(field) {
        None => Ok(default),
        Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| format!("{field} must be a non-negative integer, got {v}")),
    }
}

fn flag(obj: &Map<String, Json>, field: &str, default: Option<bool>) -> Result<bool, String> {
    match obj.get(field) {
        None => default.ok_or_else(|| format!("{field} is missing")),
        Some(Json::Bool(b)) => Ok(*b),
        Some(v) => Err(format!("{field} must be true or false, got {v}")),
    }
}

/// Checks XLM's `params` (or an HF config.json, whose keys are the same plus `vocab_size`,
/// `tie_word_embeddings`, `max_position_embeddings`), naming the field and value.
/// `max_positions` is the position table's length when known from the checkpoint.
pub fn validate_params(obj: &Map<String, Json>, max_positions: Option<usize>) -> Result<XlmConfig, String> {
    if flag(obj, "asm", Some(false))? {
        return Err(
            "asm true: the output layer is an adaptive softmax (AdaptiveLogSoftmaxWithLoss), which tfconv does not convert".into(),
        );
    }
    if flag(obj, "use_memory", Some(false))? {
        return Err("use_memory true: product-key memory layers are not part of transformers' XLM, which would drop them".into());
    }
    if flag(obj, "causal", Some(false))? {
        return Err("causal true: tfconv converts XLM's bidirectional encoder (masked language models) only".into());
    }
    if !flag(obj, "is_encoder", Some(true))? {
        return Err("is_encoder false: transformers' XLM is an encoder only".into());
    }
    let n_words = match obj.get("n_words") {
        Some(_) => positive(obj, "n_words", None)?,
        None => positive(obj, "vocab_size", None).map_err(|_| "n_words is missing".to_string())?,
    };
    let cfg = XlmConfig {
        n_words,
        emb_dim: positive(obj, "emb_dim", None)?,
        n_layers: positive(obj, "n_layers", None)?,
        n_heads: positive(obj, "n_heads", None)?,
        n_langs: positive(obj, "n_langs", Some(1))?,
        // The original reads `getattr(params, 'use_lang_emb', True)`: older params lack it.
        use_lang_emb: flag(obj, "use_lang_emb", Some(true))?,
        gelu_activation: flag(obj, "gelu_activation", None)?,
        sinusoidal_embeddings: flag(obj, "sinusoidal_embeddings", Some(false))?,
        share_inout_emb: match obj.get("tie_word_embeddings") {
            Some(_) => flag(obj, "tie_word_embeddings", None)?,
            None => flag(obj, "share_inout_emb", Some(true))?,
        },
        max_positions: match max_positions {
            Some(n) => n,
            None => positive(obj, "max_position_embeddings", Some(MAX_POSITIONS))?,
        },
        pad_index: index(obj, "pad_index", 2)?,
    };
    if !cfg.emb_dim.is_multiple_of(cfg.n_heads) {
        return Err(format!("emb_dim {} must be a multiple of n_heads {}", cfg.emb_dim, cfg.n_heads));
    }
    if let Some(eps) = obj.get("layer_norm_eps") {
        if eps.as_f64() != Some(LAYER_NORM_EPS) {
            return Err(format!("layer_norm_eps {eps}: XLM's layer norms use 1e-12"));
        }
    }
    Ok(cfg)
}

/// Where the state dict's keys start, e.g. "model/" or "model/module." (DataParallel); "" for a
/// file that is a bare state dict.
pub fn detect_prefix(vars: &[SourceVar]) -> Result<String, String> {
    let mut prefixes: Vec<&str> = vars.iter().filter_map(|v| v.name.strip_suffix("layer_norm_emb.weight")).collect();
    prefixes.sort();
    prefixes.dedup();
    let ok = |p: &str| matches!(p, "" | "module." | "model/" | "model/module.");
    match prefixes.as_slice() {
        [one] if ok(one) => Ok(one.to_string()),
        [] => Err("the checkpoint has no layer_norm_emb.weight: not an XLM state dict".into()),
        many if many.iter().any(|p| p.starts_with("encoder/") || p.starts_with("decoder/")) => Err(format!(
            "the checkpoint holds a translation model ({}): transformers' XLMWithLMHeadModel is an encoder with a language \
             model head and has no XLM decoder; only checkpoints with a `model` state dict convert",
            many.iter().map(|p| format!("{p}…")).collect::<Vec<_>>().join(", ")
        )),
        many => Err(format!("the checkpoint holds several XLM state dicts ({}); tfconv converts the one under `model`", many.join(", "))),
    }
}

/// Whether a checkpoint looks like XLM's: a state dict key `layer_norm_emb.weight`, under any
/// top-level entry, with or without `module.`.
pub fn looks_like(vars: &[SourceVar]) -> bool {
    vars.iter().any(|v| {
        let key = v.name.rsplit_once('/').map_or(v.name.as_str(), |(_, k)| k);
        key.strip_prefix("module.").unwrap_or(key) == "layer_norm_emb.weight"
    })
}

/// One stage of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Words, positions and languages, their LayerNorm, padding zeroed.
    Embeddings,
    /// Post-LN attention then post-LN FFN, padding zeroed.
    Layer(usize),
    /// `pred_layer.proj` on every position.
    Lm,
}

impl Part {
    pub fn name(self) -> String {
        match self {
            Part::Embeddings => "embeddings".into(),
            Part::Layer(i) => format!("layer.{i}"),
            Part::Lm => "lm".into(),
        }
    }

    pub fn inputs(self, cfg: &XlmConfig) -> Vec<String> {
        let previous = |i: usize| if i == 0 { "embeddings".to_string() } else { format!("layer.{}", i - 1) };
        match self {
            Part::Embeddings if cfg.lang_embeddings() => vec!["input_ids".into(), "attention_mask".into(), "langs".into()],
            Part::Embeddings => vec!["input_ids".into(), "attention_mask".into()],
            Part::Layer(i) => vec![previous(i), "attention_mask".into()],
            Part::Lm => vec![previous(cfg.n_layers)],
        }
    }

    pub fn outputs(self) -> Vec<String> {
        match self {
            Part::Lm => vec!["lm_logits".into()],
            _ => vec![self.name()],
        }
    }
}

pub fn parts(cfg: &XlmConfig) -> Vec<Part> {
    let mut parts = vec![Part::Embeddings];
    parts.extend((0..cfg.n_layers).map(Part::Layer));
    parts.push(Part::Lm);
    parts
}

/// The explicit original → HF table (architectures.md §6.3): `pred_layer.*` keep their names,
/// everything else moves under `transformer.`; no transposes (both sides are `nn.Linear`).
pub fn plan(cfg: &XlmConfig, prefix: &str, vars: &[SourceVar]) -> Result<Plan, PlanError> {
    let (d, h, v) = (cfg.emb_dim, cfg.hidden_dim(), cfg.n_words);
    let mut b = PlanBuilder::new(vars);
    let same = |b: &mut PlanBuilder, key: &str, shape: Vec<usize>| {
        let target = if key.starts_with("pred_layer.") { key.to_string() } else { format!("transformer.{key}") };
        b.map(target, format!("{prefix}{key}"), vec![], shape);
    };
    same(&mut b, "position_embeddings.weight", vec![cfg.max_positions, d]);
    if cfg.lang_embeddings() {
        same(&mut b, "lang_embeddings.weight", vec![cfg.n_langs, d]);
    }
    same(&mut b, "embeddings.weight", vec![v, d]);
    same(&mut b, "layer_norm_emb.weight", vec![d]);
    same(&mut b, "layer_norm_emb.bias", vec![d]);
    // HF's state-dict order: each ModuleList in turn.
    for i in 0..cfg.n_layers {
        for m in ["q_lin", "k_lin", "v_lin", "out_lin"] {
            same(&mut b, &format!("attentions.{i}.{m}.weight"), vec![d, d]);
            same(&mut b, &format!("attentions.{i}.{m}.bias"), vec![d]);
        }
    }
    for norm in ["layer_norm1", "ffns", "layer_norm2"] {
        for i in 0..cfg.n_layers {
            if norm == "ffns" {
                same(&mut b, &format!("ffns.{i}.lin1.weight"), vec![h, d]);
                same(&mut b, &format!("ffns.{i}.lin1.bias"), vec![h]);
                same(&mut b, &format!("ffns.{i}.lin2.weight"), vec![d, h]);
                same(&mut b, &format!("ffns.{i}.lin2.bias"), vec![d]);
            } else {
                same(&mut b, &format!("{norm}.{i}.weight"), vec![d]);
                same(&mut b, &format!("{norm}.{i}.bias"), vec![d]);
            }
        }
    }
    let head = format!("{prefix}pred_layer.proj.weight");
    match (cfg.share_inout_emb, b.has(&head)) {
        (true, true) => b.drop_unused(
            &head,
            "the same parameter as embeddings.weight (share_inout_emb); XLMWithLMHeadModel ties pred_layer.proj.weight to transformer.embeddings.weight",
        ),
        (true, false) => {}
        (false, _) => same(&mut b, "pred_layer.proj.weight", vec![v, d]),
    }
    same(&mut b, "pred_layer.proj.bias", vec![v]);
    b.finish(role)
}

/// A `params` value tfconv can write to config.json: everything but the tensors and numpy
/// arrays the trainer stores there (`pred_probs`, `mask_scores`), which HF's converter drops too.
fn plain(value: &Json) -> bool {
    !matches!(value, Json::String(s) if s.starts_with("<tensor ") || s == "<tensor>" || s.starts_with("<ndarray"))
}

/// HF `config.json` (architectures.md §6.4): the plain params plus what transformers needs.
pub fn hf_config(params: &Map<String, Json>, cfg: &XlmConfig, dtype: &str, finetuning_task: Option<&str>) -> Json {
    let mut c: Map<String, Json> = params.iter().filter(|(_, v)| plain(v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let int = |k: &str, default: usize| params.get(k).and_then(Json::as_u64).map_or(default as u64, |v| v);
    for (k, v) in [
        ("model_type", json!("xlm")),
        ("architectures", json!(["XLMWithLMHeadModel"])),
        ("vocab_size", json!(cfg.n_words)),
        ("n_words", json!(cfg.n_words)),
        ("emb_dim", json!(cfg.emb_dim)),
        ("n_layers", json!(cfg.n_layers)),
        ("n_heads", json!(cfg.n_heads)),
        ("n_langs", json!(cfg.n_langs)),
        ("use_lang_emb", json!(cfg.use_lang_emb)),
        ("gelu_activation", json!(cfg.gelu_activation)),
        ("sinusoidal_embeddings", json!(cfg.sinusoidal_embeddings)),
        ("share_inout_emb", json!(cfg.share_inout_emb)),
        ("tie_word_embeddings", json!(cfg.share_inout_emb)),
        ("asm", json!(false)),
        ("causal", json!(false)),
        ("is_encoder", json!(true)),
        ("max_position_embeddings", json!(cfg.max_positions)),
        ("layer_norm_eps", json!(LAYER_NORM_EPS)),
        ("pad_index", json!(cfg.pad_index)),
        ("pad_token_id", json!(cfg.pad_index)),
        ("bos_token_id", json!(int("bos_index", 0))),
        ("eos_token_id", json!(int("eos_index", 1))),
        ("mask_token_id", json!(int("mask_index", 5))),
        ("dtype", json!(dtype)),
    ] {
        c.insert(k.into(), v);
    }
    if let Some(task) = finetuning_task {
        c.insert("finetuning_task".into(), json!(task));
    }
    Json::Object(c)
}

/// The vocabulary as HF's `XLMTokenizer` reads it (architectures.md §6.4): `dico_word2id` with
/// each BPE piece rewritten, `x@@` (continued) → `x` and a word-final `x` → `x</w>`, except the
/// 14 specials. Refused when the dictionary does not fit the model or two ids would share a token.
pub fn vocab_json(dico: &Map<String, Json>, n_words: usize) -> Result<Vec<u8>, String> {
    let mut by_id: Vec<Option<String>> = vec![None; n_words];
    for (word, id) in dico {
        let id = id.as_u64().map(|i| i as usize).filter(|&i| i < n_words).ok_or_else(|| {
            format!("dico_word2id maps {word:?} to {id}, outside the model's {n_words} words")
        })?;
        let token = if word.contains("@@") {
            word.replace("@@", "")
        } else if id >= SPECIAL_IDS {
            format!("{word}</w>")
        } else {
            word.clone()
        };
        if let Some(other) = &by_id[id] {
            return Err(format!("dico_word2id maps two words to id {id} ({other:?} and {token:?})"));
        }
        by_id[id] = Some(token);
    }
    let missing: Vec<usize> = (0..n_words).filter(|&i| by_id[i].is_none()).collect();
    if !missing.is_empty() {
        return Err(format!(
            "dico_word2id has {} words, the model {n_words}: no word for id(s) {}",
            dico.len(),
            missing.iter().take(10).map(usize::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    let mut vocab = Map::new();
    for (id, token) in by_id.into_iter().enumerate() {
        let token = token.expect("checked above");
        if vocab.contains_key(&token) {
            return Err(format!("two words of dico_word2id become the same BPE token {token:?} (HF's rewriting would drop one)"));
        }
        vocab.insert(token, json!(id));
    }
    Ok(serde_json::to_vec_pretty(&Json::Object(vocab)).expect("JSON of plain values"))
}

/// merges.txt from a fastBPE codes file (`codes_*`: lines `left right count`), which
/// `XLMTokenizer` reads as its merges (first two fields per line). Every line is checked, and the
/// file ends with a newline because the tokenizer drops the text after the last one.
pub fn merges_txt(codes: &[u8], name: &str) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(codes).map_err(|e| format!("{name} is not UTF-8: {e}"))?;
    let mut out = String::with_capacity(text.len() + 1);
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, _] => {}
            [_, _, count] if count.parse::<u64>().is_ok() => {}
            _ => return Err(format!("{name} line {}: {line:?} is not a BPE merge (`left right count`)", n + 1)),
        }
        out.push_str(line);
        out.push('\n');
    }
    if out.is_empty() {
        return Err(format!("{name} holds no BPE merges"));
    }
    Ok(out.into_bytes())
}

/// The BPE codes file beside the checkpoint: `codes` or `codes_*` (XLM's releases name them
/// `codes_en`, `codes_xnli_15`, …). Several are ambiguous.
fn find_codes(dirs: &[&std::path::Path]) -> Result<Option<std::path::PathBuf>, String> {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut found: Vec<std::path::PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == "codes" || n.starts_with("codes_") || n.starts_with("codes.")))
            .collect();
        found.sort();
        match found.len() {
            0 => continue,
            1 => return Ok(found.pop()),
            _ => {
                return Err(format!(
                    "several BPE codes files in {} ({}): keep only the one this model was trained with",
                    dir.display(),
                    found.iter().filter_map(|p| p.file_name()).map(|n| n.to_string_lossy()).collect::<Vec<_>>().join(", ")
                ))
            }
        }
    }
    Ok(None)
}

/// An XLM checkpoint (or HF folder) as tfconv converts and verifies it.
#[derive(Debug, Clone)]
pub struct Xlm {
    pub cfg: XlmConfig,
    /// Where the state-dict keys start ("model/", "model/module.", …).
    pub prefix: String,
    params: Map<String, Json>,
    dico: Option<Map<String, Json>>,
    from_folder: bool,
}

impl Xlm {
    pub fn from_original(config: &Json, vars: &[SourceVar]) -> Result<Xlm, String> {
        let (params, dico) = split_original(config)?;
        let prefix = detect_prefix(vars)?;
        let positions = vars.iter().find(|v| v.name == format!("{prefix}position_embeddings.weight")).and_then(|v| v.shape.first().copied());
        let cfg = validate_params(params, positions.or(Some(MAX_POSITIONS)))?;
        Ok(Xlm {
            cfg,
            prefix,
            params: params.clone(),
            dico: dico.cloned(),
            from_folder: false,
        })
    }

    pub fn from_hf_config(config: &Json) -> Result<Xlm, String> {
        let obj = config.as_object().ok_or_else(|| format!("config.json is not a JSON object: {config}"))?;
        let class = config.get("architectures").and_then(|a| a.get(0)).and_then(Json::as_str).unwrap_or("XLMWithLMHeadModel");
        if class != "XLMWithLMHeadModel" {
            return Err(format!("XLM class '{class}' is not supported (tfconv writes XLMWithLMHeadModel)"));
        }
        let cfg = validate_params(obj, None)?;
        Ok(Xlm { cfg, prefix: String::new(), params: obj.clone(), dico: None, from_folder: true })
    }

    fn part(&self, stage: &Stage) -> Result<Part, String> {
        parts(&self.cfg).into_iter().find(|p| p.name() == stage.name).ok_or_else(|| format!("XLMWithLMHeadModel has no stage {:?}", stage.name))
    }
}

/// XLM's line in the registry. Its config is inside the checkpoint; no file is looked for.
pub const FAMILY: crate::arch::Family = crate::arch::Family {
    model_type: "xlm",
    config_names: &[],
    default_config: None,
    read_config: crate::arch::json_config,
    looks_like,
    from_original: |config, vars| Ok(Box::new(Xlm::from_original(config, vars)?)),
    from_hf_config: |config| Ok(Box::new(Xlm::from_hf_config(config)?)),
    golden_cases: synthetic::golden_cases,
};

impl crate::arch::Architecture for Xlm {
    fn model_type(&self) -> &'static str {
        "xlm"
    }
    fn class_name(&self) -> &'static str {
        "XLMWithLMHeadModel"
    }
    fn plan(&self, vars: &[SourceVar]) -> Result<Plan, PlanError> {
        plan(&self.cfg, &self.prefix, vars)
    }
    fn hf_config(&self, dtype: &str, finetuning_task: Option<&str>) -> Json {
        hf_config(&self.params, &self.cfg, dtype, finetuning_task)
    }
    /// vocab.json from the checkpoint's dictionary; with a BPE codes file beside the checkpoint
    /// also merges.txt and the tokenizer config (`XLMTokenizer` cannot load without merges).
    fn vocabulary_sources(&self, search_dirs: &[&std::path::Path]) -> Vec<std::path::PathBuf> {
        find_codes(search_dirs).ok().flatten().into_iter().collect()
    }
    fn tokenizer_files(&self, search_dirs: &[&std::path::Path], options: &crate::arch::TokenizerOptions) -> Result<crate::arch::TokenizerFiles, String> {
        let Some(dico) = &self.dico else { return Ok(Default::default()) };
        let mut files = vec![("vocab.json".to_string(), vocab_json(dico, self.cfg.n_words)?)];
        let Some(codes) = find_codes(search_dirs)? else { return Ok(files.into()) };
        let name = codes.display().to_string();
        let bytes = std::fs::read(&codes).map_err(|e| format!("{name}: {e}"))?;
        files.push(("merges.txt".into(), merges_txt(&bytes, &name)?));
        let specials: Vec<String> = (0..10).map(|i| format!("<special{i}>")).collect();
        let special = json!({
            "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>", "pad_token": "<pad>",
            "cls_token": "</s>", "mask_token": "<special1>", "additional_special_tokens": specials,
        });
        let mut tokenizer_config = special.clone();
        let obj = tokenizer_config.as_object_mut().expect("an object");
        obj.insert("tokenizer_class".into(), json!("XLMTokenizer"));
        // XLM's English and XNLI models were trained on lower-cased, accent-stripped text (HF's default).
        obj.insert("do_lowercase_and_remove_accent".into(), json!(options.do_lower_case.unwrap_or(true)));
        obj.insert("model_max_length".into(), json!(self.cfg.max_positions));
        for key in ["lang2id", "id2lang"] {
            if let Some(v) = self.params.get(key) {
                obj.insert(key.into(), v.clone());
            }
        }
        files.push(("tokenizer_config.json".into(), serde_json::to_vec_pretty(&tokenizer_config).unwrap()));
        files.push(("special_tokens_map.json".into(), serde_json::to_vec_pretty(&special).unwrap()));
        Ok(files.into())
    }

    fn probes(&self, seed: u64, batch: usize, seq_len: Option<usize>) -> Probes {
        let max = self.cfg.max_positions;
        probes::random(&self.cfg, seed, batch, seq_len.unwrap_or(max).min(max))
    }
    fn max_seq_len(&self) -> Option<usize> {
        Some(self.cfg.max_positions)
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
            anyhow::bail!("the TensorFlow reference runs from the checkpoint's own params, not an HF folder's config");
        }
        let part = self.part(stage).map_err(anyhow::Error::msg)?;
        reference::stage(self, weights, part, stage, inputs)
    }
    fn tied_aliases(&self) -> Vec<(String, String)> {
        match self.cfg.share_inout_emb {
            true => vec![("pred_layer.proj.weight".into(), "transformer.embeddings.weight".into())],
            false => Vec::new(),
        }
    }
    fn hf_output_fields(&self) -> Vec<(&'static str, &'static str)> {
        vec![("lm_logits", "logits")]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &str, shape: &[usize]) -> SourceVar {
        SourceVar { name: name.into(), shape: shape.to_vec() }
    }

    fn params() -> Json {
        json!({"emb_dim": 8, "n_layers": 1, "n_heads": 2, "n_words": 20, "n_langs": 2, "gelu_activation": true,
               "sinusoidal_embeddings": false, "share_inout_emb": true, "use_lang_emb": true, "asm": false,
               "pred_probs": "<tensor float32 [3]>", "mask_scores": "<ndarray f8 [20]>", "lang2id": {"en": 0, "fr": 1}})
    }

    #[test]
    fn prefixes_and_detection() {
        for p in ["", "module.", "model/", "model/module."] {
            let vars = [var(&format!("{p}layer_norm_emb.weight"), &[8])];
            assert_eq!(detect_prefix(&vars).unwrap(), p);
            assert_eq!(crate::arch::detect_model_type(&vars), Ok("xlm"));
        }
        let mt = [var("encoder/layer_norm_emb.weight", &[8]), var("decoder/layer_norm_emb.weight", &[8])];
        assert!(looks_like(&mt));
        assert!(detect_prefix(&mt).unwrap_err().contains("translation model (decoder/…, encoder/…)"));
        assert!(detect_prefix(&[var("embeddings.weight", &[3, 8])]).unwrap_err().contains("no layer_norm_emb.weight"));
        assert!(!looks_like(&[var("bert/embeddings/word_embeddings", &[3, 8])]));
    }

    #[test]
    fn params_are_checked_by_name() {
        let (p, _) = split_original(&params()).map(|(p, d)| (p.clone(), d.cloned())).unwrap();
        let cfg = validate_params(&p, None).unwrap();
        assert_eq!((cfg.emb_dim, cfg.max_positions, cfg.lang_embeddings(), cfg.hidden_dim()), (8, 512, true, 32));
        let bad = |k: &str, v: Json| {
            let mut q = p.clone();
            q.insert(k.into(), v);
            validate_params(&q, None).unwrap_err()
        };
        assert_eq!(bad("emb_dim", json!(0)), "emb_dim must be a positive integer, got 0");
        assert_eq!(bad("n_heads", json!(3)), "emb_dim 8 must be a multiple of n_heads 3");
        assert_eq!(bad("gelu_activation", json!("yes")), "gelu_activation must be true or false, got \"yes\"");
        assert!(bad("asm", json!(true)).contains("adaptive softmax"));
        assert!(bad("use_memory", json!(true)).contains("product-key memory"));
        let mut q = p.clone();
        q.remove("gelu_activation");
        assert_eq!(validate_params(&q, None).unwrap_err(), "gelu_activation is missing");
        assert!(split_original(&json!({"epoch": 3})).unwrap_err().contains("no `params` entry (keys: epoch)"));
    }

    #[test]
    fn config_json_keeps_plain_params_and_reads_back() {
        let original = json!({"params": params(), "dico_word2id": {"<s>": 0}});
        let vars = [var("model/layer_norm_emb.weight", &[8]), var("model/position_embeddings.weight", &[40, 8])];
        let xlm = Xlm::from_original(&original, &vars).unwrap();
        let hf = crate::arch::Architecture::hf_config(&xlm, "float32", None);
        assert_eq!((hf["model_type"].as_str(), hf["vocab_size"].as_u64(), hf["max_position_embeddings"].as_u64()), (Some("xlm"), Some(20), Some(40)));
        assert!(hf.get("pred_probs").is_none() && hf.get("mask_scores").is_none());
        assert_eq!(hf["lang2id"], json!({"en": 0, "fr": 1}));
        assert_eq!(Xlm::from_hf_config(&hf).unwrap().cfg, xlm.cfg);
    }

    #[test]
    fn vocab_rewrites_bpe_pieces_and_refuses_misfits() {
        let mut dico = Map::new();
        for (i, w) in ["<s>", "</s>", "<pad>", "<unk>"].iter().enumerate() {
            dico.insert(w.to_string(), json!(i));
        }
        for i in 4..14 {
            dico.insert(format!("<special{}>", i - 4), json!(i));
        }
        dico.insert("hel@@".into(), json!(14));
        dico.insert("lo".into(), json!(15));
        let v: Map<String, Json> = serde_json::from_slice(&vocab_json(&dico, 16).unwrap()).unwrap();
        assert_eq!((v["hel"].as_u64(), v["lo</w>"].as_u64(), v["<s>"].as_u64(), v["<special1>"].as_u64()), (Some(14), Some(15), Some(0), Some(5)));
        assert!(vocab_json(&dico, 17).unwrap_err().contains("no word for id(s) 16"));
        assert!(vocab_json(&dico, 15).unwrap_err().contains("outside the model's 15 words"));
        dico.insert("lo@@</w>".into(), json!(16));
        dico.insert("lo".into(), json!(15));
        assert!(vocab_json(&dico, 17).unwrap_err().contains("same BPE token \"lo</w>\""));
    }

    #[test]
    fn merges_are_checked_line_by_line() {
        assert_eq!(merges_txt(b"t h 10\nth e</w> 9", "codes").unwrap(), b"t h 10\nth e</w> 9\n");
        assert!(merges_txt(b"t h 10\nbroken\n", "codes_en").unwrap_err().contains("codes_en line 2: \"broken\""));
        assert!(merges_txt(b"", "codes").unwrap_err().contains("no BPE merges"));
    }
}
