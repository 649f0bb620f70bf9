//! Synthetic XLM `.pth` files as XLM's trainer writes them (`Trainer.save_checkpoint` /
//! `save_model`): the `model` state dict with `nn.Module`'s `_metadata` and the tied
//! `pred_layer.proj.weight` sharing the embeddings' storage, `params` with the tensor and numpy
//! array the trainer leaves in it, the dictionary, and for training checkpoints the epoch
//! counters and Adam's state. Written by [`super::torch_save`] in either container; XLM's golden
//! cases.

use super::torch_save::{self, Py, Storages};
use super::XlmConfig;
use crate::synthetic::{init_values, GoldenCase, Rng};

/// What the file holds besides the model, and how it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The language codes, in id order (one for a monolingual model).
    pub langs: Vec<&'static str>,
    /// DataParallel's `module.` before every state-dict key.
    pub module_prefix: bool,
    /// A training checkpoint: epoch counters and `model_optimizer` besides the model.
    pub trainer_state: bool,
    /// numpy 1's module for `_reconstruct` (2019 files) or numpy 2's.
    pub numpy_module: &'static str,
}

impl Layout {
    /// A released model (`save_model`): model, dictionary, params; no prefix.
    pub fn release(langs: Vec<&'static str>) -> Layout {
        Layout { langs, module_prefix: false, trainer_state: false, numpy_module: "numpy.core.multiarray" }
    }
}

fn s(x: &str) -> Py {
    Py::Str(x.to_string())
}

fn dict(items: Vec<(&str, Py)>) -> Py {
    Py::Dict(items.into_iter().map(|(k, v)| (s(k), v)).collect())
}

/// XLM's dictionary words in id order: the 14 specials, then BPE pieces (`x@@` continues a word),
/// one of them non-ASCII.
pub fn words(n_words: usize) -> Vec<String> {
    let mut w: Vec<String> = ["<s>", "</s>", "<pad>", "<unk>"].map(String::from).to_vec();
    w.extend((0..10).map(|i| format!("<special{i}>")));
    let (consonants, vowels): (Vec<char>, Vec<char>) = ("tnshrdlcmfwypvbgkjxz".chars().collect(), "eaiou".chars().collect());
    // One of 100 syllables per base-100 digit of k: a different base for every k.
    let syllable = |d: usize| format!("{}{}", consonants[d % 20], vowels[(d / 20 + d) % 5]);
    for k in 0..n_words.saturating_sub(w.len()) {
        let (mut base, mut rest) = (syllable(k % 100), k / 100);
        while rest > 0 {
            base.push_str(&syllable(rest % 100));
            rest /= 100;
        }
        w.push(match k % 5 {
            4 if k == 9 => "é@@".to_string(),
            0 | 3 => format!("{base}@@"),
            _ => base,
        });
    }
    w.truncate(n_words);
    w
}

/// A fastBPE codes file (`left right count` per line) for the golden vocabularies.
pub fn codes() -> Vec<u8> {
    b"t e 4096\nn a</w> 3021\ns i 1990\nh o</w> 1501\nr u 1203\nd e</w> 998\n".to_vec()
}

/// The position table: the original's sinusoids (computed in float64 as numpy does, then
/// rounded) when the params ask for them, else learned values.
fn positions(cfg: &XlmConfig, rng: &mut Rng) -> Vec<f32> {
    let d = cfg.emb_dim;
    if !cfg.sinusoidal_embeddings {
        return init_values(rng, "embedding", cfg.max_positions * d, 1);
    }
    let mut out = Vec::with_capacity(cfg.max_positions * d);
    for pos in 0..cfg.max_positions {
        for j in 0..d {
            let angle = pos as f64 / 10000f64.powf((2 * (j / 2)) as f64 / d as f64);
            out.push(if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    out
}

/// The state dict in `TransformerModel`'s registration order, with `_metadata`.
fn state_dict(cfg: &XlmConfig, st: &mut Storages, rng: &mut Rng, module: bool) -> Py {
    let (d, h, v) = (cfg.emb_dim, cfg.hidden_dim(), cfg.n_words);
    let pre = if module { "module." } else { "" };
    let mut items: Vec<(Py, Py)> = Vec::new();
    let mut modules: Vec<String> = vec![String::new()];
    if module {
        modules.push("module".into());
    }
    let mut add = |key: &str, value: Py| items.push((s(&format!("{pre}{key}")), value));
    let tensor = |st: &mut Storages, rng: &mut Rng, shape: Vec<usize>, kind: &str, fan_in: usize| {
        let values = init_values(rng, kind, shape.iter().product(), fan_in);
        st.f32(&shape, &values)
    };
    let positions = positions(cfg, rng);
    add("position_embeddings.weight", st.f32(&[cfg.max_positions, d], &positions));
    modules.push("position_embeddings".into());
    if cfg.lang_embeddings() {
        add("lang_embeddings.weight", tensor(st, rng, vec![cfg.n_langs, d], "embedding", 1));
        modules.push("lang_embeddings".into());
    }
    // The padding row stays at its zero initialisation: it never receives a gradient.
    let mut words = init_values(rng, "embedding", v * d, 1);
    words[cfg.pad_index * d..(cfg.pad_index + 1) * d].fill(0.0);
    let embeddings = st.f32(&[v, d], &words);
    add("embeddings.weight", embeddings.clone());
    add("layer_norm_emb.weight", tensor(st, rng, vec![d], "gamma", 1));
    add("layer_norm_emb.bias", tensor(st, rng, vec![d], "beta", 1));
    modules.extend(["embeddings", "layer_norm_emb", "attentions"].map(String::from));
    for i in 0..cfg.n_layers {
        modules.push(format!("attentions.{i}"));
        for m in ["q_lin", "k_lin", "v_lin", "out_lin"] {
            add(&format!("attentions.{i}.{m}.weight"), tensor(st, rng, vec![d, d], "kernel", d));
            add(&format!("attentions.{i}.{m}.bias"), tensor(st, rng, vec![d], "bias", 1));
            modules.push(format!("attentions.{i}.{m}"));
        }
    }
    for list in ["layer_norm1", "ffns", "layer_norm2"] {
        modules.push(list.into());
        for i in 0..cfg.n_layers {
            modules.push(format!("{list}.{i}"));
            if list == "ffns" {
                add(&format!("ffns.{i}.lin1.weight"), tensor(st, rng, vec![h, d], "kernel", d));
                add(&format!("ffns.{i}.lin1.bias"), tensor(st, rng, vec![h], "bias", 1));
                add(&format!("ffns.{i}.lin2.weight"), tensor(st, rng, vec![d, h], "kernel", h));
                add(&format!("ffns.{i}.lin2.bias"), tensor(st, rng, vec![d], "bias", 1));
                modules.extend([format!("ffns.{i}.lin1"), format!("ffns.{i}.lin2")]);
            } else {
                add(&format!("{list}.{i}.weight"), tensor(st, rng, vec![d], "gamma", 1));
                add(&format!("{list}.{i}.bias"), tensor(st, rng, vec![d], "beta", 1));
            }
        }
    }
    // share_inout_emb: the head's weight IS the embedding parameter, saved under both names.
    let head = if cfg.share_inout_emb { embeddings } else { tensor(st, rng, vec![v, d], "kernel", d) };
    add("pred_layer.proj.weight", head);
    add("pred_layer.proj.bias", tensor(st, rng, vec![v], "bias", 1));
    modules.extend(["memories", "pred_layer", "pred_layer.proj"].map(String::from));
    let version = || Py::Dict(vec![(s("version"), Py::Int(1))]);
    let metadata = modules.iter().map(|m| {
        let name = match (module, m.as_str()) {
            (_, "") | (true, "module") => m.clone(),
            (true, _) => format!("module.{m}"),
            (false, _) => m.clone(),
        };
        (s(&name), version())
    });
    Py::OrderedDict { items, metadata: Some(metadata.collect()) }
}

/// The trainer's `params.__dict__`: the architecture's keys among the many training ones, the
/// `pred_probs` tensor and the `mask_scores` array.
fn params(cfg: &XlmConfig, layout: &Layout, st: &mut Storages, counts: &[i64]) -> Py {
    let langs = &layout.langs;
    let lgs = langs.join("-");
    let mono: Vec<(Py, Py)> = langs
        .iter()
        .map(|l| (s(l), dict(["train", "valid", "test"].iter().map(|sp| (*sp, s(&format!("./data/processed/{lgs}/{sp}.{l}.pth")))).collect())))
        .collect();
    let sample_alpha = 0.0f64;
    let mask_scores: Vec<f64> = counts.iter().map(|&c| (c.max(1) as f64).powf(-sample_alpha)).collect();
    dict(vec![
        ("dump_path", s("./dumped/")),
        ("exp_name", s(&format!("xlm_{}", langs.join("")))),
        ("save_periodic", Py::Int(0)),
        ("exp_id", s("x1lmq7pz2v")),
        ("fp16", Py::Bool(false)),
        ("amp", Py::Int(-1)),
        ("encoder_only", Py::Bool(true)),
        ("emb_dim", Py::Int(cfg.emb_dim as i64)),
        ("n_layers", Py::Int(cfg.n_layers as i64)),
        ("n_heads", Py::Int(cfg.n_heads as i64)),
        ("dropout", Py::Float(0.1)),
        ("attention_dropout", Py::Float(0.1)),
        ("gelu_activation", Py::Bool(cfg.gelu_activation)),
        ("share_inout_emb", Py::Bool(cfg.share_inout_emb)),
        ("sinusoidal_embeddings", Py::Bool(cfg.sinusoidal_embeddings)),
        ("use_lang_emb", Py::Bool(cfg.use_lang_emb)),
        ("use_memory", Py::Bool(false)),
        ("mem_enc_positions", Py::List(vec![])),
        ("mem_dec_positions", Py::List(vec![])),
        ("asm", Py::Bool(false)),
        ("asm_cutoffs", s("8000,20000")),
        ("asm_div_value", Py::Float(4.0)),
        ("context_size", Py::Int(0)),
        ("word_pred", Py::Float(0.15)),
        ("sample_alpha", Py::Float(sample_alpha)),
        ("word_mask_keep_rand", s("0.8,0.1,0.1")),
        ("data_path", s(&format!("./data/processed/{lgs}/"))),
        ("lgs", s(&lgs)),
        ("max_vocab", Py::Int(-1)),
        ("min_count", Py::Int(0)),
        ("lg_sampling_factor", Py::Float(-1.0)),
        ("bptt", Py::Int(256)),
        ("max_len", Py::Int(100)),
        ("group_by_size", Py::Bool(true)),
        ("batch_size", Py::Int(32)),
        ("tokens_per_batch", Py::Int(-1)),
        ("optimizer", s("adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.0001")),
        ("clip_grad_norm", Py::Float(5.0)),
        ("epoch_size", Py::Int(300_000)),
        ("max_epoch", Py::Int(100_000)),
        ("stopping_criterion", s("_valid_mlm_ppl,10")),
        ("validation_metrics", s("_valid_mlm_ppl")),
        ("accumulate_gradients", Py::Int(1)),
        ("lambda_mlm", s("1")),
        ("clm_steps", Py::List(vec![])),
        ("mlm_steps", Py::List(langs.iter().map(|l| Py::Tuple(vec![s(l), Py::None])).collect())),
        ("mt_steps", Py::List(vec![])),
        ("reload_model", s("")),
        ("beam_size", Py::Int(1)),
        ("length_penalty", Py::Float(1.0)),
        ("eval_only", Py::Bool(false)),
        ("debug_train", Py::Bool(false)),
        ("debug_slurm", Py::Bool(false)),
        ("debug", Py::Bool(false)),
        ("local_rank", Py::Int(0)),
        ("master_port", Py::Int(-1)),
        ("n_nodes", Py::Int(1)),
        ("global_rank", Py::Int(0)),
        ("world_size", Py::Int(8)),
        ("n_gpu_per_node", Py::Int(8)),
        ("is_master", Py::Bool(true)),
        ("multi_gpu", Py::Bool(true)),
        ("command", s(&format!("python train.py --exp_name xlm_{} --emb_dim {} --gelu_activation {} --exp_id \"x1lmq7pz2v\"", langs.join(""), cfg.emb_dim, cfg.gelu_activation))),
        ("langs", Py::List(langs.iter().map(|l| s(l)).collect())),
        ("id2lang", Py::Dict(langs.iter().enumerate().map(|(i, l)| (Py::Int(i as i64), s(l))).collect())),
        ("lang2id", Py::Dict(langs.iter().enumerate().map(|(i, l)| (s(l), Py::Int(i as i64))).collect())),
        ("n_langs", Py::Int(cfg.n_langs as i64)),
        ("mono_dataset", Py::Dict(mono)),
        ("para_dataset", Py::Dict(vec![])),
        ("word_mask", Py::Float(0.8)),
        ("word_keep", Py::Float(0.1)),
        ("word_rand", Py::Float(0.1)),
        ("pred_probs", st.f32(&[3], &[0.8, 0.1, 0.1])),
        ("mask_scores", Py::NdArrayF64 { module: layout.numpy_module, values: mask_scores }),
        ("n_words", Py::Int(cfg.n_words as i64)),
        ("bos_index", Py::Int(0)),
        ("eos_index", Py::Int(1)),
        ("pad_index", Py::Int(cfg.pad_index as i64)),
        ("unk_index", Py::Int(3)),
        ("mask_index", Py::Int(5)),
    ])
}

fn adam_state(st: &mut Storages, shape: &[usize]) -> Py {
    let n = shape.iter().product();
    dict(vec![("step", Py::Int(1_048_576)), ("exp_avg", st.f32(shape, &vec![1e-3; n])), ("exp_avg_sq", st.f32(shape, &vec![1e-6; n]))])
}

/// The saved dict and its storages: `save_model`'s layout, or `save_checkpoint`'s with the
/// trainer state.
pub fn checkpoint(cfg: &XlmConfig, layout: &Layout, seed: u64) -> (Py, Storages) {
    assert_eq!(layout.langs.len(), cfg.n_langs, "one language code per language");
    let mut rng = Rng::new(seed);
    let mut st = Storages::default();
    let words = words(cfg.n_words);
    let counts: Vec<i64> = (0..cfg.n_words).map(|i| if i < super::SPECIAL_IDS { 0 } else { 10_000 / i as i64 }).collect();
    let mut top: Vec<(&str, Py)> = Vec::new();
    if layout.trainer_state {
        top.extend([
            ("epoch", Py::Int(12)),
            ("n_total_iter", Py::Int(1_048_576)),
            ("best_metrics", dict(vec![("_valid_mlm_ppl", Py::Float(14.53125))])),
            ("best_stopping_criterion", Py::Float(-1e12)),
        ]);
    }
    top.push(("model", state_dict(cfg, &mut st, &mut rng, layout.module_prefix)));
    if layout.trainer_state {
        // Adam's state for two parameters: enough to show it is skipped, not converted.
        let positions = adam_state(&mut st, &[cfg.max_positions, cfg.emb_dim]);
        let norm = adam_state(&mut st, &[cfg.emb_dim]);
        let group = dict(vec![
            ("lr", Py::Float(1e-4)),
            ("betas", Py::Tuple(vec![Py::Float(0.9), Py::Float(0.98)])),
            ("eps", Py::Float(1e-8)),
            ("weight_decay", Py::Int(0)),
            ("amsgrad", Py::Bool(false)),
            ("params", Py::List((0..2).map(Py::Int).collect())),
        ]);
        top.push(("model_optimizer", dict(vec![("state", Py::Dict(vec![(Py::Int(0), positions), (Py::Int(1), norm)])), ("param_groups", Py::List(vec![group]))])));
    }
    top.push(("dico_id2word", Py::Dict(words.iter().enumerate().map(|(i, w)| (Py::Int(i as i64), s(w))).collect())));
    top.push(("dico_word2id", Py::Dict(words.iter().enumerate().map(|(i, w)| (s(w), Py::Int(i as i64))).collect())));
    top.push(("dico_counts", Py::Dict(words.iter().zip(&counts).map(|(w, &c)| (s(w), Py::Int(c))).collect())));
    let p = params(cfg, layout, &mut st, &counts);
    top.push(("params", p));
    (dict(top), st)
}

/// Legacy storage keys as torch writes them: decimal addresses, here drawn at random (so the
/// sorted key order, which the storages follow, differs from the order of reference).
pub fn legacy_keys(n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut keys: Vec<String> = Vec::new();
    while keys.len() < n {
        let k = (94_000_000_000_000u64 + (rng.next_u64() % 1_000_000_000) * 64).to_string();
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys
}

/// The bytes of a synthetic `.pth`: zip (torch ≥ 1.6) or legacy.
pub fn pth_bytes(cfg: &XlmConfig, layout: &Layout, seed: u64, zip: bool) -> Vec<u8> {
    let (obj, st) = checkpoint(cfg, layout, seed);
    match zip {
        true => torch_save::zip(&obj, &st, "archive"),
        false => torch_save::legacy(&obj, &st, &legacy_keys(st.0.len(), seed ^ 0x5eed)),
    }
}

/// The golden configs: `xlm`, an English–French MLM with language embeddings (zip, as a torch
/// ≥ 1.6 re-save of a release); `xlm-legacy`, a monolingual training checkpoint saved under
/// DataParallel (legacy format, `module.` keys) with sinusoidal positions and ReLU.
pub fn golden_configs() -> [(&'static str, XlmConfig, Layout, bool, u64); 2] {
    let cfg = |n_words, emb_dim, n_layers, n_heads, n_langs, gelu, sinusoidal| XlmConfig {
        n_words, emb_dim, n_layers, n_heads, n_langs, use_lang_emb: true, gelu_activation: gelu, sinusoidal_embeddings: sinusoidal,
        share_inout_emb: true, max_positions: super::MAX_POSITIONS, pad_index: 2,
    };
    let legacy = Layout { langs: vec!["en"], module_prefix: true, trainer_state: true, numpy_module: "numpy.core.multiarray" };
    [
        ("xlm", cfg(72, 32, 2, 4, 2, true, false), Layout::release(vec!["en", "fr"]), true, 41),
        ("xlm-legacy", cfg(60, 24, 2, 3, 1, false, true), legacy, false, 42),
    ]
}

/// XLM's golden cases. The config is inside the `.pth`; the multilingual case ships the BPE
/// codes its merges.txt comes from.
pub fn golden_cases() -> Vec<GoldenCase> {
    golden_configs()
        .into_iter()
        .map(|(dir, cfg, layout, zip, seed)| {
            let (checkpoint, files) = match zip {
                true => ("mlm_enfr_1024.pth", vec![("codes_enfr", codes())]),
                false => ("checkpoint.pth", vec![]),
            };
            GoldenCase {
                dir,
                model_type: "xlm",
                checkpoint,
                config_file: None,
                config: serde_json::Value::Null,
                files,
                contents: crate::synthetic::Contents::Files(vec![(checkpoint.to_string(), pth_bytes(&cfg, &layout, seed, zip))]),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_unique_and_specials_first() {
        let w = words(60);
        assert_eq!(w.len(), 60);
        assert_eq!((w[0].as_str(), w[2].as_str(), w[5].as_str(), w[13].as_str()), ("<s>", "<pad>", "<special1>", "<special9>"));
        let unique = |w: &[String]| w.iter().collect::<std::collections::HashSet<_>>().len();
        assert_eq!(unique(&w), 60);
        assert_eq!(unique(&words(30_000)), 30_000, "unique for large dictionaries too");
        assert!(w.iter().any(|x| x.ends_with("@@")) && w.iter().any(|x| !x.is_ascii()));
    }

    #[test]
    fn sinusoids_follow_the_original_formula() {
        let cfg = golden_configs()[1].1.clone();
        let table = positions(&cfg, &mut Rng::new(0));
        let d = cfg.emb_dim;
        assert_eq!(table[0..4], [0.0, 1.0, 0.0, 1.0]);
        // Row 3, columns 2 and 3: sin/cos of 3 / 10000^(2/d).
        let angle = 3.0 / 10000f64.powf(2.0 / d as f64);
        assert_eq!((table[3 * d + 2], table[3 * d + 3]), (angle.sin() as f32, angle.cos() as f32));
    }
}
