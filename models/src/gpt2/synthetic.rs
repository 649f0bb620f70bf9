//! Synthetic GPT-2 checkpoints under `model.py`'s names, a tiny byte-level BPE tokenizer in the
//! release's file formats, and GPT-2's golden case.

use serde_json::json;

use super::{block_scope, var, Gpt2Config};
use crate::synthetic::{init_values, moment_slots, GoldenCase, Rng, Variable};

/// Original variable names and shapes, in `model.py`'s creation order.
pub fn gpt2_variables(cfg: &Gpt2Config) -> Vec<(String, Vec<usize>)> {
    let e = cfg.n_embd;
    let mut vars = vec![(var("wpe"), vec![cfg.n_positions, e]), (var("wte"), vec![cfg.vocab_size, e])];
    for l in 0..cfg.n_layer {
        let scope = block_scope(l);
        let mut add = |name: &str, shape: Vec<usize>| vars.push((format!("{scope}/{name}"), shape));
        add("ln_1/g", vec![e]);
        add("ln_1/b", vec![e]);
        add("attn/c_attn/w", vec![1, e, 3 * e]);
        add("attn/c_attn/b", vec![3 * e]);
        add("attn/c_proj/w", vec![1, e, e]);
        add("attn/c_proj/b", vec![e]);
        add("ln_2/g", vec![e]);
        add("ln_2/b", vec![e]);
        add("mlp/c_fc/w", vec![1, e, 4 * e]);
        add("mlp/c_fc/b", vec![4 * e]);
        add("mlp/c_proj/w", vec![1, 4 * e, e]);
        add("mlp/c_proj/b", vec![e]);
    }
    vars.push((var("ln_f/g"), vec![e]));
    vars.push((var("ln_f/b"), vec![e]));
    vars
}

/// A GPT-2 checkpoint; with `trainer_state` also what fine-tuning with `tf.train.AdamOptimizer`
/// leaves beside the weights (`<var>/Adam`, `<var>/Adam_1`, `beta1_power`, `beta2_power`,
/// `global_step`): the variables transformers' own loader crashes on.
pub fn checkpoint(cfg: &Gpt2Config, seed: u64, trainer_state: bool) -> Vec<Variable> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for (name, shape) in gpt2_variables(cfg) {
        let last = name.rsplit('/').next().unwrap_or("");
        // A Conv1D kernel [1, in, out] has fan-in `in`.
        let fan_in = if shape.len() == 3 { shape[1] } else { shape[0] };
        let var = Variable::f32(name.clone(), shape.clone(), init_values(&mut rng, last, shape.iter().product(), fan_in));
        if trainer_state {
            out.extend(moment_slots(&mut rng, &var, ["Adam", "Adam_1"]));
        }
        out.push(var);
    }
    if trainer_state {
        out.push(Variable::f32("beta1_power", vec![], vec![0.9f32.powi(40)]));
        out.push(Variable::f32("beta2_power", vec![], vec![0.999f32.powi(40)]));
        out.push(Variable::i64_scalar("global_step", 40));
    }
    out
}

/// A byte-level BPE vocabulary of `n_vocab` tokens in GPT-2's formats: `encoder.json` (token →
/// id) and `vocab.bpe` (`#version: 0.2`, then one merge per line in priority order). Tokens are
/// the letters, `Ġ` (GPT-2's stand-in for a space), `Ġ`+letter and letter pairs, as merges
/// make them, then `<|endoftext|>` as the last id, where GPT-2 has it.
pub fn tiny_tokenizer(n_vocab: usize) -> (Vec<u8>, Vec<u8>) {
    let letters: Vec<String> = ('a'..='z').map(String::from).collect();
    let mut tokens: Vec<String> = letters.clone();
    tokens.push("Ġ".into());
    let mut merges: Vec<(String, String)> = letters.iter().map(|l| ("Ġ".to_string(), l.clone())).collect();
    merges.extend(letters.iter().flat_map(|a| letters.iter().map(move |b| (a.clone(), b.clone()))));
    let wanted = n_vocab.saturating_sub(1);
    let mut used = Vec::new();
    for (a, b) in merges {
        if tokens.len() >= wanted {
            break;
        }
        tokens.push(format!("{a}{b}"));
        used.push(format!("{a} {b}"));
    }
    tokens.truncate(wanted);
    // Merges whose parts were cut off are dropped with them (only when n_vocab < 28).
    used.retain(|m| m.split(' ').all(|p| tokens.iter().any(|t| t == p)));
    tokens.push(super::END_OF_TEXT.into());
    let encoder: serde_json::Map<String, serde_json::Value> = tokens.into_iter().enumerate().map(|(i, t)| (t, json!(i))).collect();
    let mut bpe = "#version: 0.2\n".to_string();
    for m in used {
        bpe.push_str(&m);
        bpe.push('\n');
    }
    (serde_json::to_vec(&encoder).expect("JSON of plain values"), bpe.into_bytes())
}

/// `hparams.json` as gpt-2's `download_model.py` fetches it.
pub fn hparams(cfg: &Gpt2Config) -> serde_json::Value {
    json!({"n_vocab": cfg.vocab_size, "n_ctx": cfg.n_positions, "n_embd": cfg.n_embd, "n_head": cfg.n_head, "n_layer": cfg.n_layer})
}

/// GPT-2's golden case: three blocks, a vocabulary and context far from transformers' defaults
/// (which its own converter would leave in place), and a fine-tuner's Adam state.
pub fn golden_cases() -> Vec<GoldenCase> {
    let config = json!({"n_vocab": 64, "n_ctx": 16, "n_embd": 32, "n_head": 4, "n_layer": 3});
    let cfg = super::from_hparams(&config).expect("the golden hparams are valid");
    let (encoder, merges) = tiny_tokenizer(cfg.vocab_size);
    vec![GoldenCase {
        dir: "gpt2",
        model_type: "gpt2",
        checkpoint: "model.ckpt",
        config_file: "hparams.json",
        variables: checkpoint(&cfg, 31, true),
        config,
        files: vec![("encoder.json", encoder), ("vocab.bpe", merges)],
        storage: crate::synthetic::Storage::TfBundle,
    }]
}
