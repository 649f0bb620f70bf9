//! The original ALBERT (google-research/albert `modeling.py`, `run_pretraining.py`,
//! `classifier_utils.py`) as TensorFlow graphs that restore the ORIGINAL checkpoint by its
//! original names, one graph per stage. It follows the original's grouping (`int(ℓ / L · G)`)
//! and activation semantics (its "gelu" is the tanh approximation), not HF's.

use anyhow::{bail, Context, Result};
use tensorflow::Output;

use super::{inner_group_scope, AlbertConfig, Names, Part};
use crate::stage::{Stage, Values};
use crate::tf_graph::{self, GraphBuilder, OriginalWeights, Vars};

/// The original variables `part` reads, as this checkpoint spells them.
pub fn original_vars(cfg: &AlbertConfig, names: &Names, part: Part) -> Vec<String> {
    let scoped = |scope: &str, vars: &[&str]| -> Vec<String> { vars.iter().map(|v| names.var(&format!("{scope}{v}"))).collect() };
    let pair = |norm: &str| [format!("{norm}/gamma"), format!("{norm}/beta")];
    match part {
        Part::Embeddings => {
            let norm = pair(&names.embedding_norm);
            let mut v = scoped("bert/embeddings/", &["word_embeddings", "token_type_embeddings", "position_embeddings", &norm[0], &norm[1]]);
            if cfg.embedding_size != cfg.hidden_size {
                v.extend(scoped("bert/encoder/embedding_hidden_mapping_in/", &["kernel", "bias"]));
            }
            v
        }
        Part::Layer(l) => {
            let g = cfg.original_group(l);
            (0..cfg.inner_group_num)
                .flat_map(|j| {
                    let [attention_norm, ffn_norm] = names.block_norms[g][j].clone();
                    let (a, f) = (pair(&attention_norm), pair(&ffn_norm));
                    let mut vars: Vec<String> = ["query", "key", "value"]
                        .iter()
                        .flat_map(|p| [format!("attention_1/self/{p}/kernel"), format!("attention_1/self/{p}/bias")])
                        .collect();
                    for m in ["attention_1/output/dense", "ffn_1/intermediate/dense", "ffn_1/intermediate/output/dense"] {
                        vars.extend([format!("{m}/kernel"), format!("{m}/bias")]);
                    }
                    vars.extend(a);
                    vars.extend(f);
                    let scope = format!("{}/", inner_group_scope(g, j));
                    vars.into_iter().map(move |v| format!("{scope}{v}")).collect::<Vec<_>>()
                })
                .map(|v| names.var(&v))
                .collect()
        }
        Part::Pooler => scoped("bert/pooler/dense/", &["kernel", "bias"]),
        Part::Mlm => {
            let norm = pair(&format!("transform/{}", names.mlm_norm));
            let mut v = scoped("cls/predictions/", &["transform/dense/kernel", "transform/dense/bias", &norm[0], &norm[1], "output_bias"]);
            // get_masked_lm_output decodes with the word embedding table itself.
            v.push(names.var("bert/embeddings/word_embeddings"));
            v
        }
        Part::Sop => scoped("cls/seq_relationship/", &["output_weights", "output_bias"]),
        // run_classifier's output layer lives outside a TF-Hub module: never prefixed.
        Part::Classifier => vec!["output_weights".into(), "output_bias".into()],
    }
}

/// The original `get_activation` for an original config's `hidden_act`.
fn activation(g: &mut GraphBuilder, original_act: &str, x: &Output) -> Result<Output> {
    match original_act {
        // albert modeling.gelu: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
        "gelu" => g.gelu_tanh(x),
        "relu" => g.relu(x),
        other => bail!("the original ALBERT activation {other:?} is not supported (supported: gelu, relu)"),
    }
}

/// One stage of the original model, fed `stage.inputs` from `inputs`. `original_act` is the
/// original config's `hidden_act`.
pub fn stage(weights: &OriginalWeights, cfg: &AlbertConfig, original_act: &str, names: &Names, part: Part, stage: &Stage, inputs: &Values) -> Result<Values> {
    tf_graph::run_stage(weights, stage, inputs, &["input_ids", "token_type_ids"], |g, vars, xs, fed| {
        let dims = |i: usize| -> Result<(usize, usize)> {
            let shape = fed.0.get(i).map(|(_, v)| v.shape().to_vec()).unwrap_or_default();
            Ok((*shape.first().context("no batch axis")?, *shape.get(1).context("no sequence axis")?))
        };
        build(g, cfg, original_act, names, part, vars, xs, dims)
    })
}

#[allow(clippy::too_many_arguments)]
fn build(
    g: &mut GraphBuilder,
    cfg: &AlbertConfig,
    original_act: &str,
    names: &Names,
    part: Part,
    vars: &Vars,
    inputs: &[Output],
    dims: impl Fn(usize) -> Result<(usize, usize)>,
) -> Result<Vec<Output>> {
    let var = |n: &str| vars.get(&names.var(n));
    let (h, e, eps) = (cfg.hidden_size as i32, cfg.embedding_size as i32, cfg.layer_norm_eps);
    Ok(match (part, inputs) {
        (Part::Embeddings, [ids, types]) => {
            let (b, s) = dims(0)?;
            if s > cfg.max_position_embeddings {
                bail!("probe length {s} exceeds max_position_embeddings {}", cfg.max_position_embeddings);
            }
            // embedding_lookup, then embedding_postprocessor: + token types, + positions, LayerNorm.
            let emb = |n: &str| var(&format!("bert/embeddings/{n}"));
            let words = g.gather(&emb("word_embeddings")?, ids)?;
            let types = g.gather(&emb("token_type_embeddings")?, types)?;
            let x = g.add(&words, &types)?;
            let positions = g.slice(&emb("position_embeddings")?, &[0, 0], &[s as i32, -1])?;
            let positions = g.reshape(&positions, &[1, s as i32, e])?;
            let x = g.add(&x, &positions)?;
            let norm = &names.embedding_norm;
            let x = g.layer_norm(&x, &emb(&format!("{norm}/gamma"))?, &emb(&format!("{norm}/beta"))?, eps)?;
            // transformer_model projects to H only when the widths differ.
            if cfg.embedding_size != cfg.hidden_size {
                let x = g.reshape(&x, &[(b * s) as i32, e])?;
                let p = "bert/encoder/embedding_hidden_mapping_in";
                let y = g.dense(&x, &var(&format!("{p}/kernel"))?, Some(&var(&format!("{p}/bias"))?))?;
                vec![g.reshape(&y, &[b as i32, s as i32, h])?]
            } else {
                vec![x]
            }
        }
        (Part::Layer(l), [x, mask]) => {
            let (b, s) = dims(0)?;
            let group = cfg.original_group(l);
            let adder = g.attention_adder(mask, b, s)?;
            let (n, dh) = (cfg.num_attention_heads, cfg.head_dim());
            let mut prev = g.reshape(x, &[(b * s) as i32, h])?;
            for j in 0..cfg.inner_group_num {
                let scope = inner_group_scope(group, j);
                let w = |n: &str| var(&format!("{scope}/{n}"));
                let dense = |g: &mut GraphBuilder, x: &Output, m: &str| g.dense(x, &w(&format!("{m}/kernel"))?, Some(&w(&format!("{m}/bias"))?));
                let [attention_norm, ffn_norm] = &names.block_norms[group][j];
                // attention_ffn_block: post-LN attention, then post-LN feed-forward.
                let q = dense(g, &prev, "attention_1/self/query")?;
                let k = dense(g, &prev, "attention_1/self/key")?;
                let v = dense(g, &prev, "attention_1/self/value")?;
                let ctx = g.attention(&q, &k, &v, Some(&adder), b, s, s, n, dh, (1.0 / (dh as f64).sqrt()) as f32)?;
                let attn = dense(g, &ctx, "attention_1/output/dense")?;
                let attn = g.add(&attn, &prev)?;
                let attn = g.layer_norm(&attn, &w(&format!("{attention_norm}/gamma"))?, &w(&format!("{attention_norm}/beta"))?, eps)?;
                let inner = dense(g, &attn, "ffn_1/intermediate/dense")?;
                let inner = activation(g, original_act, &inner)?;
                let out = dense(g, &inner, "ffn_1/intermediate/output/dense")?;
                let out = g.add(&out, &attn)?;
                prev = g.layer_norm(&out, &w(&format!("{ffn_norm}/gamma"))?, &w(&format!("{ffn_norm}/beta"))?, eps)?;
            }
            vec![g.reshape(&prev, &[b as i32, s as i32, h])?]
        }
        (Part::Pooler, [x]) => {
            let (b, _) = dims(0)?;
            let first = g.slice(x, &[0, 0, 0], &[-1, 1, -1])?;
            let first = g.reshape(&first, &[b as i32, h])?;
            let d = g.dense(&first, &var("bert/pooler/dense/kernel")?, Some(&var("bert/pooler/dense/bias")?))?;
            vec![g.tanh(&d)?]
        }
        (Part::Mlm, [x]) => {
            // get_masked_lm_output on every position: dense H→E with the activation, LayerNorm,
            // then the word embeddings transposed, plus the output bias.
            let (b, s) = dims(0)?;
            let p = |n: &str| var(&format!("cls/predictions/{n}"));
            let x = g.reshape(x, &[(b * s) as i32, h])?;
            let t = g.dense(&x, &p("transform/dense/kernel")?, Some(&p("transform/dense/bias")?))?;
            let t = activation(g, original_act, &t)?;
            let norm = format!("transform/{}", names.mlm_norm);
            let t = g.layer_norm(&t, &p(&format!("{norm}/gamma"))?, &p(&format!("{norm}/beta"))?, eps)?;
            let logits = g.matmul(&t, &var("bert/embeddings/word_embeddings")?, false, true)?;
            let logits = g.bias_add(&logits, &p("output_bias")?)?;
            vec![g.reshape(&logits, &[b as i32, s as i32, cfg.vocab_size as i32])?]
        }
        // get_sentence_order_output and classifier_utils.create_model: pooled · Wᵀ + b.
        (Part::Sop | Part::Classifier, [pooled]) => {
            let [w, b] = match part {
                Part::Sop => ["cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias"].map(|n| names.var(n)),
                _ => ["output_weights", "output_bias"].map(String::from),
            };
            let logits = g.matmul(pooled, &vars.get(&w)?, false, true)?;
            vec![g.bias_add(&logits, &vars.get(&b)?)?]
        }
        _ => bail!("wrong number of inputs ({}) for ALBERT stage {}", inputs.len(), part.name()),
    })
}
