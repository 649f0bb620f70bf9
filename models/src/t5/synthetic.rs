//! Synthetic Mesh-TF T5 checkpoints (v1.0 and v1.1, both norm and sublayer spellings, bfloat16,
//! several shards, Adafactor slots) with their `operative_config.gin`, and T5's golden cases.

use serde_json::json;

use super::{Names, Stack, Sublayer, T5Config};
use crate::synthetic::{init_values, Contents, Data, GoldenCase, Rng, Variable};

/// Original names and shapes, in creation order.
pub fn t5_variables(cfg: &T5Config, names: &Names) -> Vec<(String, Vec<usize>)> {
    let (d, inner, ff) = (cfg.d_model, cfg.inner(), cfg.d_ff);
    let mut v = vec![("shared/embedding".to_string(), vec![cfg.vocab_size, d])];
    for stack in [Stack::Encoder, Stack::Decoder] {
        let layers = if stack == Stack::Encoder { cfg.num_layers } else { cfg.decoder_layers() };
        for b in 0..layers {
            for &sub in Sublayer::of(stack) {
                match sub {
                    Sublayer::DenseReluDense => {
                        let wi: &[&str] = if cfg.gated() { &["wi_0", "wi_1"] } else { &["wi"] };
                        for p in wi {
                            v.push((names.weight(stack, b, sub, &format!("{p}/kernel")), vec![d, ff]));
                        }
                        v.push((names.weight(stack, b, sub, "wo/kernel"), vec![ff, d]));
                    }
                    _ => {
                        for p in ["q", "k", "v"] {
                            v.push((names.weight(stack, b, sub, p), vec![d, inner]));
                        }
                        v.push((names.weight(stack, b, sub, "o"), vec![inner, d]));
                        if b == 0 && sub == Sublayer::SelfAttention {
                            v.push((names.weight(stack, b, sub, "relative_attention_bias"), vec![cfg.num_heads, cfg.relative_attention_num_buckets]));
                        }
                    }
                }
                v.push((names.norm(stack, b, sub), vec![d]));
            }
        }
        v.push((names.final_norm(stack), vec![d]));
    }
    if !cfg.tie_word_embeddings {
        v.push(("decoder/logits/kernel".into(), vec![d, cfg.vocab_size]));
    }
    v
}

/// A checkpoint: bfloat16 weights when `bf16` (Adafactor's slots stay float32), split over
/// `shards` data files; with `trainer_state` also the slots and `global_step`.
pub fn checkpoint(cfg: &T5Config, names: &Names, bf16: bool, shards: usize, trainer_state: bool, seed: u64) -> Vec<Vec<Variable>> {
    let mut rng = Rng::new(seed);
    let mut all: Vec<Variable> = t5_variables(cfg, names).into_iter().flat_map(|(name, shape)| variable(&mut rng, cfg, name, shape, bf16, trainer_state)).collect();
    if trainer_state {
        all.push(Variable::i64_scalar("global_step", 1_000_000));
    }
    let per = all.len().div_ceil(shards.max(1));
    all.chunks(per.max(1)).map(|c| c.to_vec()).collect()
}

/// One weight with realistic values (and, with `trainer_state`, its Adafactor slots first).
pub fn variable(rng: &mut Rng, cfg: &T5Config, name: String, shape: Vec<usize>, bf16: bool, trainer_state: bool) -> Vec<Variable> {
    let d_kv = cfg.d_kv;
    let last = name.rsplit('/').nth(if name.ends_with("/kernel") { 1 } else { 0 }).unwrap_or("");
    let numel: usize = shape.iter().product();
    let values = match last {
        "scale" => init_values(rng, "gamma", numel, 1),
        // Mesh TF folds attention's 1/√d_kv into q's initialiser (there is no scaling at run
        // time): without it the scores are d_kv times too sharp and a deep model turns chaotic.
        "q" => {
            init_values(rng, "kernel", numel, shape[0]).iter().map(|x| x / (d_kv as f32).sqrt()).collect()
        }
        "k" | "v" | "o" | "wi" | "wi_0" | "wi_1" | "wo" | "logits" => init_values(rng, "kernel", numel, shape[0]),
        "relative_attention_bias" => init_values(rng, "embedding", numel, 1).iter().map(|x| x * 0.5).collect(),
        _ => init_values(rng, "embedding", numel, 1),
    };
    let mut out = Vec::new();
    if trainer_state {
        // Adafactor factors a matrix's second moment into row and column slots.
        let slots: Vec<(&str, Vec<usize>)> = match shape.as_slice() {
            [r, c] => vec![("slot_vr", vec![*r]), ("slot_vc", vec![*c])],
            s => vec![("slot_v", s.to_vec())],
        };
        for (slot, s) in slots {
            let n: usize = s.iter().product();
            out.push(Variable::f32(format!("{name}_{slot}"), s, (0..n).map(|_| rng.uniform(1e-3).abs()).collect()));
        }
    }
    let data = if bf16 { Data::BF16(values) } else { Data::F32(values) };
    out.push(Variable { name, shape, data });
    out
}

/// An `operative_config.gin` for `cfg`, as Mesh TensorFlow writes the model's bindings.
pub fn operative_config(cfg: &T5Config, names: &Names) -> String {
    let activation = if cfg.gated() { "['gelu', 'linear']" } else { "'relu'" };
    let mut gin = format!(
        "import mesh_tensorflow.optimize\nimport t5.models.mesh_transformer\n\n# Macros:\n# ==============================================================================\nd_ff = {}\nd_kv = {}\nd_model = {}\ndropout_rate = 0.0\nnum_heads = {}\nnum_layers = {}\n\n# Parameters for DenseReluDense:\n# ==============================================================================\nDenseReluDense.activation = {activation}\nDenseReluDense.dropout_rate = %dropout_rate\n\n# Parameters for SelfAttention:\nSelfAttention.relative_attention_num_buckets = {}\n",
        cfg.d_ff, cfg.d_kv, cfg.d_model, cfg.num_heads, cfg.num_layers, cfg.relative_attention_num_buckets
    );
    if cfg.decoder_layers() != cfg.num_layers {
        gin.push_str(&format!("decoder/make_layer_stack.num_layers = {}\n", cfg.decoder_layers()));
    }
    if !cfg.tie_word_embeddings {
        gin.push_str("decoder/Unitransformer.shared_embedding_and_softmax_weights = False\n");
    }
    gin.push_str(&format!("sublayer_rms_norm.epsilon = {:e}\n", cfg.layer_norm_epsilon));
    gin.push_str(if names.rms_norm { "make_layer_stack.use_rms_norm_naming = True\n" } else { "" });
    gin.push_str("get_variable_dtype.master_dtype = 'bfloat16'\nmake_layer_stack.layers = \\\n    [@mesh_tensorflow.transformer.transformer_layers.SelfAttention,\n     @mesh_tensorflow.transformer.transformer_layers.DenseReluDense]\n");
    gin
}

/// HF's documented `t5_config.json` for `cfg` (what `transformers convert --config` takes).
pub fn json_config(cfg: &T5Config) -> serde_json::Value {
    json!({
        "d_model": cfg.d_model, "d_kv": cfg.d_kv, "d_ff": cfg.d_ff, "num_layers": cfg.num_layers,
        "num_decoder_layers": cfg.decoder_layers(), "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets, "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "feed_forward_proj": cfg.feed_forward_proj, "tie_word_embeddings": cfg.tie_word_embeddings, "vocab_size": cfg.vocab_size
    })
}

pub fn tiny_spiece_model() -> Vec<u8> {
    b"tfconv golden: stand-in for T5's SentencePiece model (copied as bytes)\n".to_vec()
}

/// T5's golden cases: v1.0 (legacy `layer_norm` names, relu, shared softmax weights, float32);
/// v1.1 (`rms_norm` names, gated gelu, own head, bfloat16 over 3 shards, Adafactor slots); and
/// the named-sublayer variant (#5851) with an HF-style JSON config.
pub fn golden_cases() -> Vec<GoldenCase> {
    let cfg = |gated: bool, decoder_layers: usize| T5Config {
        d_model: 32, d_kv: 8, d_ff: 48, num_layers: 2, num_decoder_layers: Some(decoder_layers), num_heads: 4,
        relative_attention_num_buckets: 32, relative_attention_max_distance: 128, layer_norm_epsilon: 1e-6,
        feed_forward_proj: if gated { "gated-gelu" } else { "relu" }.into(), tie_word_embeddings: !gated, vocab_size: 128,
    };
    let legacy = Names { rms_norm: false, named_sublayers: false };
    let rms = Names { rms_norm: true, named_sublayers: false };
    let named = Names { rms_norm: true, named_sublayers: true };
    let (v10, v11) = (cfg(false, 2), cfg(true, 3));
    let gin = |c: &T5Config, n: &Names| ("operative_config.gin", operative_config(c, n).into_bytes());
    // The config the architecture is built from is what tfconv reads from the gin.
    let parsed = |c: &T5Config, n: &Names| super::gin::to_config(&operative_config(c, n)).expect("the written gin parses");
    vec![
        GoldenCase {
            dir: "t5-v1_0",
            model_type: "t5",
            checkpoint: "model.ckpt-1000000",
            config_file: Some("operative_config.gin"),
            config: parsed(&v10, &legacy),
            files: vec![gin(&v10, &legacy), ("spiece.model", tiny_spiece_model())],
            contents: Contents::TfBundle(checkpoint(&v10, &legacy, false, 1, false, 41).concat()),
        },
        GoldenCase {
            dir: "t5-v1_1",
            model_type: "t5",
            checkpoint: "model.ckpt-1000000",
            config_file: Some("operative_config.gin"),
            config: parsed(&v11, &rms),
            files: vec![gin(&v11, &rms), ("spiece.model", tiny_spiece_model())],
            contents: Contents::TfShards(checkpoint(&v11, &rms, true, 3, true, 42)),
        },
        GoldenCase {
            dir: "t5-named-sublayers",
            model_type: "t5",
            checkpoint: "model.ckpt-500",
            config_file: Some("t5_config.json"),
            config: json_config(&v11),
            files: vec![],
            contents: Contents::TfShards(checkpoint(&v11, &named, true, 2, false, 43)),
        },
    ]
}
