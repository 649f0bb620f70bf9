//! Synthetic OpenAI GPT releases: the arrays in `params_shapes.json` order (written as numpy
//! shards by `tfconv::synthetic::write_numpy_shards`), a tiny BPE in the release's formats, and
//! OpenAI GPT's golden cases.

use serde_json::json;

use super::{block_scope, var, GptConfig};
use crate::synthetic::{init_values, Contents, GoldenCase, Rng, Variable};

/// The twelve arrays of one block, in the release's order (`params_shapes.json`).
pub const LAYER_ARRAYS: [&str; 12] = [
    "attn/c_attn/w",
    "attn/c_attn/b",
    "attn/c_proj/w",
    "attn/c_proj/b",
    "ln_1/g",
    "ln_1/b",
    "mlp/c_fc/w",
    "mlp/c_fc/b",
    "mlp/c_proj/w",
    "mlp/c_proj/b",
    "ln_2/g",
    "ln_2/b",
];

/// The release's arrays with their shapes, in order: positions, tokens, then every block.
pub fn gpt_arrays(cfg: &GptConfig) -> Vec<(String, Vec<usize>)> {
    let e = cfg.n_embd;
    let mut arrays = vec![(var("pos_embd"), vec![cfg.n_positions, e]), (var("tok_embd"), vec![cfg.vocab_size, e])];
    for l in 0..cfg.n_layer {
        let shapes = [vec![1, e, 3 * e], vec![3 * e], vec![1, e, e], vec![e], vec![e], vec![e], vec![1, e, 4 * e], vec![4 * e], vec![1, 4 * e, e], vec![e], vec![e], vec![e]];
        arrays.extend(LAYER_ARRAYS.iter().zip(shapes).map(|(name, shape)| (format!("{}/{name}", block_scope(l)), shape)));
    }
    arrays
}

/// The release's arrays with values, in order.
pub fn arrays(cfg: &GptConfig, seed: u64) -> Vec<Variable> {
    let mut rng = Rng::new(seed);
    gpt_arrays(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let last = name.rsplit('/').next().unwrap_or("");
            let fan_in = if shape.len() == 3 { shape[1] } else { shape[0] };
            let values = init_values(&mut rng, last, shape.iter().product(), fan_in);
            Variable::f32(name, shape, values)
        })
        .collect()
}

/// `params_shapes.json` for `cfg`.
pub fn shapes(cfg: &GptConfig) -> serde_json::Value {
    json!(gpt_arrays(cfg).into_iter().map(|(_, s)| s).collect::<Vec<_>>())
}

/// A BPE vocabulary of `n_vocab` tokens in the release's formats (`encoder_bpe_40000.json`,
/// `vocab_40000.bpe`): letters, letters ending a word (`</w>`), then letter pairs as merges
/// make them.
pub fn tiny_tokenizer(n_vocab: usize) -> (Vec<u8>, Vec<u8>) {
    let letters: Vec<String> = ('a'..='z').map(String::from).collect();
    let mut tokens: Vec<String> = letters.clone();
    tokens.extend(letters.iter().map(|l| format!("{l}</w>")));
    let mut merges = Vec::new();
    'pairs: for a in &letters {
        for b in &letters {
            if tokens.len() >= n_vocab {
                break 'pairs;
            }
            tokens.push(format!("{a}{b}"));
            merges.push(format!("{a} {b}"));
        }
    }
    tokens.truncate(n_vocab);
    merges.retain(|m| m.split(' ').all(|p| tokens.iter().any(|t| t == p)));
    let encoder: serde_json::Map<String, serde_json::Value> = tokens.into_iter().enumerate().map(|(i, t)| (t, json!(i))).collect();
    let mut bpe = "#version: 0.2\n".to_string();
    for m in merges {
        bpe.push_str(&m);
        bpe.push('\n');
    }
    (serde_json::to_vec(&encoder).expect("JSON of plain values"), bpe.into_bytes())
}

/// The golden cases: the release as published (no config file: sizes from the shapes, 12
/// heads and gelu from train.py's defaults), and one with a config file naming 4 heads and swish.
pub fn golden_cases() -> Vec<GoldenCase> {
    let release = super::original_config(&json!({"n_vocab": 60, "n_ctx": 12, "n_embd": 48, "n_layer": 2}), &[], false).expect("valid");
    let swish = super::original_config(&json!({"n_vocab": 70, "n_ctx": 10, "n_embd": 32, "n_layer": 3, "n_head": 4, "afn": "swish"}), &[], false).expect("valid");
    let case = |dir: &'static str, cfg: &GptConfig, config_file: &'static str, config: serde_json::Value, shards: usize, seed: u64| {
        let (encoder, merges) = tiny_tokenizer(cfg.vocab_size);
        GoldenCase {
            dir,
            model_type: "openai-gpt",
            checkpoint: crate::openai_gpt::SHAPES_FILE,
            config_file: Some(config_file),
            config,
            files: vec![(super::ENCODER, encoder), (super::MERGES, merges)],
            contents: Contents::NumpyShards { variables: arrays(cfg, seed), shards },
        }
    };
    vec![
        case("openai-gpt", &release, crate::openai_gpt::SHAPES_FILE, shapes(&release), 3, 41),
        case("openai-gpt-swish", &swish, "config.json", json!({"n_head": 4, "afn": "swish"}), 4, 42),
    ]
}
