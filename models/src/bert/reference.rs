//! The original BERT (google-research/bert `modeling.py`, `run_pretraining.py`,
//! `run_classifier.py`, `run_squad.py`) rebuilt as one TensorFlow graph that restores the
//! ORIGINAL checkpoint by its ORIGINAL variable names. It is the reference the candle model
//! is compared against, so it follows the original operation order rather than HF's.
//! [`forward_tf2`] does the same for TF Model Garden ≤ v2.3.0's Keras encoder and its TF2
//! object-based checkpoints.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use tensorflow::{DataType, Output};

use super::{tf2_name, BertConfig, Head};
use crate::probe::{Outputs, Probes};
use crate::tf_graph::{Feed, GraphBuilder, OriginalWeights};

/// The original variables this head's forward pass reads.
fn variable_names(cfg: &BertConfig, head: Head) -> Vec<String> {
    let mut v: Vec<String> = ["word_embeddings", "token_type_embeddings", "position_embeddings", "LayerNorm/gamma", "LayerNorm/beta"]
        .iter()
        .map(|n| format!("bert/embeddings/{n}"))
        .collect();
    for i in 0..cfg.num_hidden_layers {
        for n in [
            "attention/self/query/kernel",
            "attention/self/query/bias",
            "attention/self/key/kernel",
            "attention/self/key/bias",
            "attention/self/value/kernel",
            "attention/self/value/bias",
            "attention/output/dense/kernel",
            "attention/output/dense/bias",
            "attention/output/LayerNorm/gamma",
            "attention/output/LayerNorm/beta",
            "intermediate/dense/kernel",
            "intermediate/dense/bias",
            "output/dense/kernel",
            "output/dense/bias",
            "output/LayerNorm/gamma",
            "output/LayerNorm/beta",
        ] {
            v.push(format!("bert/encoder/layer_{i}/{n}"));
        }
    }
    if head.has_pooler() {
        v.extend(["bert/pooler/dense/kernel".into(), "bert/pooler/dense/bias".into()]);
    }
    let head_vars: &[&str] = match head {
        Head::PreTraining => &[
            "cls/predictions/transform/dense/kernel",
            "cls/predictions/transform/dense/bias",
            "cls/predictions/transform/LayerNorm/gamma",
            "cls/predictions/transform/LayerNorm/beta",
            "cls/predictions/output_bias",
            "cls/seq_relationship/output_weights",
            "cls/seq_relationship/output_bias",
        ],
        Head::SequenceClassification { .. } => &["output_weights", "output_bias"],
        Head::QuestionAnswering => &["cls/squad/output_weights", "cls/squad/output_bias"],
        Head::Base => &[],
    };
    v.extend(head_vars.iter().map(|s| s.to_string()));
    v
}

/// Restored float32 variables by original name.
struct Vars(HashMap<String, Output>);

impl Vars {
    /// Restores `names` with one RestoreV2.
    fn restore(g: &mut GraphBuilder, weights: &OriginalWeights, names: Vec<String>) -> Result<Vars> {
        Ok(Vars(g.restore_f32(weights, &names)?))
    }

    fn get(&self, name: &str) -> Result<&Output> {
        self.0.get(name).with_context(|| format!("variable {name} was not restored"))
    }
}

fn check_sizes(cfg: &BertConfig, probes: &Probes) -> Result<()> {
    let (h, n) = (cfg.hidden_size, cfg.num_attention_heads);
    if n == 0 || h % n != 0 {
        bail!("hidden_size {h} is not a multiple of num_attention_heads {n}");
    }
    if probes.seq_len > cfg.max_position_embeddings {
        bail!("probe length {} exceeds max_position_embeddings {}", probes.seq_len, cfg.max_position_embeddings);
    }
    Ok(())
}

/// The probe placeholders: token ids, token type ids (int32) and the float input mask, [B, S].
struct Inputs {
    ids: Output,
    types: Output,
    mask: Output,
}

impl Inputs {
    fn new(g: &mut GraphBuilder) -> Result<Inputs> {
        Ok(Inputs {
            ids: g.placeholder("input_ids", DataType::Int32)?,
            types: g.placeholder("token_type_ids", DataType::Int32)?,
            mask: g.placeholder("input_mask", DataType::Float)?,
        })
    }

    /// Feeds `probes` and fetches the named outputs.
    fn run(&self, g: &GraphBuilder, probes: &Probes, fetches: &[(String, Output)]) -> Result<Outputs> {
        let (b, s) = (probes.batch, probes.seq_len);
        let to_i32 = |v: &[i64]| -> Result<Vec<i32>> {
            v.iter().map(|&x| i32::try_from(x).context("probe id does not fit in int32")).collect()
        };
        let ids = Feed::i32(&[b, s], &to_i32(&probes.input_ids)?)?;
        let types = Feed::i32(&[b, s], &to_i32(&probes.token_type_ids)?)?;
        let mask_values: Vec<f32> = probes.attention_mask.iter().map(|&m| m as f32).collect();
        let mask = Feed::f32(&[b, s], &mask_values)?;
        let fetch_refs: Vec<&Output> = fetches.iter().map(|(_, o)| o).collect();
        let results = g.run(&[(&self.ids, &ids), (&self.types, &types), (&self.mask, &mask)], &fetch_refs)?;
        let mut outputs = Outputs::default();
        for ((name, _), (shape, values)) in fetches.iter().zip(results) {
            outputs.push(name.clone(), shape, values);
        }
        Ok(outputs)
    }
}

/// Runs the original BERT graph in TensorFlow on `probes`, restoring the original checkpoint
/// (`weights`); every variable is computed on in float32.
pub fn forward(
    weights: &OriginalWeights,
    cfg: &BertConfig,
    head: Head,
    probes: &Probes,
) -> Result<Outputs> {
    check_sizes(cfg, probes)?;
    let (b, s, h) = (probes.batch, probes.seq_len, cfg.hidden_size);
    let (n, dh) = (cfg.num_attention_heads, cfg.head_dim());
    let bs = (b * s) as i32;

    let mut g = GraphBuilder::new();
    let vars = Vars::restore(&mut g, weights, variable_names(cfg, head))?;
    let var = |name: &str| vars.get(name).cloned();
    let inputs = Inputs::new(&mut g)?;

    let mut fetches: Vec<(String, Output)> = Vec::new();

    // embedding_postprocessor(embedding_lookup(...)): word + token type, then + positions, then LayerNorm.
    let word_table = var("bert/embeddings/word_embeddings")?;
    let words = g.gather(&word_table, &inputs.ids)?; // [B, S, H]
    let types = g.gather(&var("bert/embeddings/token_type_embeddings")?, &inputs.types)?;
    let x = g.add(&words, &types)?;
    let positions = g.slice(&var("bert/embeddings/position_embeddings")?, &[0, 0], &[s as i32, -1])?;
    let positions = g.reshape(&positions, &[1, s as i32, h as i32])?;
    let x = g.add(&x, &positions)?;
    let x = g.layer_norm(
        &x,
        &var("bert/embeddings/LayerNorm/gamma")?,
        &var("bert/embeddings/LayerNorm/beta")?,
        cfg.layer_norm_eps,
    )?;
    fetches.push(("embeddings".into(), x.clone()));

    // transformer_model: everything as [B·S, H] matrices.
    let adder = g.attention_adder(&inputs.mask, b, s)?;
    let scale = (1.0 / (dh as f64).sqrt()) as f32;
    let mut prev = g.reshape(&x, &[bs, h as i32])?;
    for i in 0..cfg.num_hidden_layers {
        let p = |n: &str| format!("bert/encoder/layer_{i}/{n}");
        let dense = |g: &mut GraphBuilder, x: &Output, scope: &str| -> Result<Output> {
            g.dense(x, &var(&p(&format!("{scope}/kernel")))?, Some(&var(&p(&format!("{scope}/bias")))?))
        };
        let q = dense(&mut g, &prev, "attention/self/query")?;
        let k = dense(&mut g, &prev, "attention/self/key")?;
        let v = dense(&mut g, &prev, "attention/self/value")?;
        let ctx = g.attention(&q, &k, &v, Some(&adder), b, s, s, n, dh, scale)?;
        let attn = dense(&mut g, &ctx, "attention/output/dense")?;
        let attn = g.add(&attn, &prev)?;
        let attn = g.layer_norm(
            &attn,
            &var(&p("attention/output/LayerNorm/gamma"))?,
            &var(&p("attention/output/LayerNorm/beta"))?,
            cfg.layer_norm_eps,
        )?;
        let inter = dense(&mut g, &attn, "intermediate/dense")?;
        let inter = g.activation(&cfg.hidden_act, &inter)?;
        let out = dense(&mut g, &inter, "output/dense")?;
        let out = g.add(&out, &attn)?;
        let out = g.layer_norm(
            &out,
            &var(&p("output/LayerNorm/gamma"))?,
            &var(&p("output/LayerNorm/beta"))?,
            cfg.layer_norm_eps,
        )?;
        fetches.push((format!("layer.{i}"), g.reshape(&out, &[b as i32, s as i32, h as i32])?));
        prev = out;
    }
    let sequence_output = g.reshape(&prev, &[b as i32, s as i32, h as i32])?;

    // Pooler: tanh(dense(first token)).
    let pooled = if head.has_pooler() {
        let first = g.slice(&sequence_output, &[0, 0, 0], &[-1, 1, -1])?;
        let first = g.reshape(&first, &[b as i32, h as i32])?;
        let d = g.dense(&first, &var("bert/pooler/dense/kernel")?, Some(&var("bert/pooler/dense/bias")?))?;
        let pooled = g.tanh(&d)?;
        fetches.push(("pooler".into(), pooled.clone()));
        Some(pooled)
    } else {
        None
    };
    let pooled = || pooled.clone().context("this head needs the pooler");

    match head {
        Head::PreTraining => {
            // get_masked_lm_output, on every position instead of the gathered masked ones.
            let t = g.dense(
                &prev,
                &var("cls/predictions/transform/dense/kernel")?,
                Some(&var("cls/predictions/transform/dense/bias")?),
            )?;
            let t = g.activation(&cfg.hidden_act, &t)?;
            let t = g.layer_norm(
                &t,
                &var("cls/predictions/transform/LayerNorm/gamma")?,
                &var("cls/predictions/transform/LayerNorm/beta")?,
                cfg.layer_norm_eps,
            )?;
            let logits = g.matmul(&t, &word_table, false, true)?;
            let logits = g.bias_add(&logits, &var("cls/predictions/output_bias")?)?;
            let logits = g.reshape(&logits, &[b as i32, s as i32, cfg.vocab_size as i32])?;
            fetches.push(("mlm_logits".into(), logits));
            // get_next_sentence_output.
            let nsp = g.matmul(&pooled()?, &var("cls/seq_relationship/output_weights")?, false, true)?;
            let nsp = g.bias_add(&nsp, &var("cls/seq_relationship/output_bias")?)?;
            fetches.push(("nsp_logits".into(), nsp));
        }
        Head::SequenceClassification { .. } => {
            // run_classifier.create_model.
            let logits = g.matmul(&pooled()?, &var("output_weights")?, false, true)?;
            let logits = g.bias_add(&logits, &var("output_bias")?)?;
            fetches.push(("logits".into(), logits));
        }
        Head::QuestionAnswering => {
            // run_squad.create_model.
            let logits = g.matmul(&prev, &var("cls/squad/output_weights")?, false, true)?;
            let logits = g.bias_add(&logits, &var("cls/squad/output_bias")?)?;
            let logits = g.reshape(&logits, &[b as i32, s as i32, 2])?;
            let logits = g.transpose(&logits, &[2, 0, 1])?;
            let parts = g.unstack(&logits, 2, 0)?;
            fetches.push(("start_logits".into(), parts[0].clone()));
            fetches.push(("end_logits".into(), parts[1].clone()));
        }
        Head::Base => {}
    }
    inputs.run(&g, probes, &fetches)
}

/// The object path of every variable Model Garden ≤ v2.3.0's `TransformerEncoder` holds, as
/// `tf.train.Checkpoint(model=encoder)` names it; `attention_output` is the spelling of the
/// attention's output projection this checkpoint uses (see `bert::plan_tf2`).
fn tf2_variable_names(cfg: &BertConfig, attention_output: &str) -> Vec<String> {
    let mut v: Vec<String> = ["0/embeddings", "1/embeddings", "2/embeddings", "3/gamma", "3/beta"]
        .iter()
        .map(|n| format!("layer_with_weights-{n}"))
        .collect();
    for l in 0..cfg.num_hidden_layers {
        for n in ["_query_dense", "_key_dense", "_value_dense"] {
            for w in ["kernel", "bias"] {
                v.push(format!("layer_with_weights-{}/_attention_layer/{n}/{w}", l + 4));
            }
        }
        for n in [
            &format!("{attention_output}/kernel"),
            &format!("{attention_output}/bias"),
            "_attention_layer_norm/gamma",
            "_attention_layer_norm/beta",
            "_intermediate_dense/kernel",
            "_intermediate_dense/bias",
            "_output_dense/kernel",
            "_output_dense/bias",
            "_output_layer_norm/gamma",
            "_output_layer_norm/beta",
        ] {
            v.push(format!("layer_with_weights-{}/{n}", l + 4));
        }
    }
    let pooler = cfg.num_hidden_layers + 4;
    v.extend([format!("layer_with_weights-{pooler}/kernel"), format!("layer_with_weights-{pooler}/bias")]);
    v.into_iter().map(|path| tf2_name(&path)).collect()
}

/// Model Garden's `tf_utils.get_activation` for a config's `hidden_act`: its "gelu" is
/// `official.modeling.activations.gelu`, the tanh approximation up to v2.3.0; other names are
/// Keras activations.
fn model_garden_activation(g: &mut GraphBuilder, name: &str, x: &Output) -> Result<Output> {
    match name {
        "gelu" => g.gelu_tanh(x),
        "relu" => g.relu(x),
        other => bail!("Model Garden activation {other:?} is not supported (supported: gelu, relu)"),
    }
}

/// Runs Model Garden ≤ v2.3.0's BERT encoder (networks/transformer_encoder.py with
/// layers/transformer.py and layers/attention.py) in TensorFlow on `probes`, restoring the TF2
/// object-based checkpoint (`weights`) by its own names. `cfg` is the original
/// `bert_config.json`; its `hidden_act` is read as Model Garden reads it. Outputs are named as
/// the TF1 encoder's: "embeddings", "layer.{i}", "pooler".
pub fn forward_tf2(
    weights: &OriginalWeights,
    cfg: &BertConfig,
    probes: &Probes,
) -> Result<Outputs> {
    check_sizes(cfg, probes)?;
    let (b, s, h) = (probes.batch, probes.seq_len, cfg.hidden_size);
    let attention_output = ["_attention_output_dense", "_attention_layer/_output_dense"]
        .into_iter()
        .find(|o| weights.dtypes.contains_key(&tf2_name(&format!("layer_with_weights-4/{o}/kernel"))))
        .unwrap_or("_attention_output_dense");

    let mut g = GraphBuilder::new();
    let vars = Vars::restore(&mut g, weights, tf2_variable_names(cfg, attention_output))?;
    let var = |k: usize, path: &str| vars.get(&tf2_name(&format!("layer_with_weights-{k}/{path}"))).cloned();
    let inputs = Inputs::new(&mut g)?;
    let mut fetches: Vec<(String, Output)> = Vec::new();

    // Add()([word, position, type]) sums left to right, then LayerNormalization(epsilon=1e-12).
    // The type embedding uses one_hot·table, which selects rows exactly as a gather does.
    let words = g.gather(&var(0, "embeddings")?, &inputs.ids)?;
    let positions = g.slice(&var(1, "embeddings")?, &[0, 0], &[s as i32, -1])?;
    let positions = g.reshape(&positions, &[1, s as i32, h as i32])?;
    let types = g.gather(&var(2, "embeddings")?, &inputs.types)?;
    let x = g.add(&words, &positions)?;
    let x = g.add(&x, &types)?;
    let mut x = g.layer_norm(&x, &var(3, "gamma")?, &var(3, "beta")?, cfg.layer_norm_eps)?;
    fetches.push(("embeddings".into(), x.clone()));

    // SelfAttentionMask + MaskedSoftmax: (1 - mask) · -10000 added to the [B, N, S, S] scores.
    let adder = g.attention_adder(&inputs.mask, b, s)?;
    let scale = g.scalar_f32((1.0 / (cfg.head_dim() as f64).sqrt()) as f32)?;
    for l in 0..cfg.num_hidden_layers {
        let k = l + 4;
        let w = |name: &str| var(k, name);
        // EinsumDense / DenseEinsum: einsum with the kernel, then `+= bias` (broadcast, not BiasAdd).
        let einsum_dense = |g: &mut GraphBuilder, eq: &str, x: &Output, scope: &str| -> Result<Output> {
            let y = g.einsum(eq, x, &w(&format!("{scope}/kernel"))?)?;
            g.add(&y, &w(&format!("{scope}/bias"))?)
        };
        let q = einsum_dense(&mut g, "abc,cde->abde", &x, "_attention_layer/_query_dense")?;
        let key = einsum_dense(&mut g, "abc,cde->abde", &x, "_attention_layer/_key_dense")?;
        let v = einsum_dense(&mut g, "abc,cde->abde", &x, "_attention_layer/_value_dense")?;
        let scores = g.einsum("aecd,abcd->acbe", &key, &q)?;
        let scores = g.mul(&scores, &scale)?;
        let scores = g.add(&scores, &adder)?;
        let probs = g.softmax(&scores)?;
        let ctx = g.einsum("acbe,aecd->abcd", &probs, &v)?;
        let attn = einsum_dense(&mut g, "abcd,cde->abe", &ctx, attention_output)?;
        let attn = g.add(&x, &attn)?;
        let attn = g.layer_norm(&attn, &w("_attention_layer_norm/gamma")?, &w("_attention_layer_norm/beta")?, cfg.layer_norm_eps)?;
        let inter = einsum_dense(&mut g, "abc,cd->abd", &attn, "_intermediate_dense")?;
        let inter = model_garden_activation(&mut g, &cfg.hidden_act, &inter)?;
        let out = einsum_dense(&mut g, "abc,cd->abd", &inter, "_output_dense")?;
        let out = g.add(&out, &attn)?;
        x = g.layer_norm(&out, &w("_output_layer_norm/gamma")?, &w("_output_layer_norm/beta")?, cfg.layer_norm_eps)?;
        fetches.push((format!("layer.{l}"), x.clone()));
    }

    // Pooler: Dense(tanh) on the first token.
    let first = g.slice(&x, &[0, 0, 0], &[-1, 1, -1])?;
    let first = g.reshape(&first, &[b as i32, h as i32])?;
    let pooler = cfg.num_hidden_layers + 4;
    let d = g.dense(&first, &var(pooler, "kernel")?, Some(&var(pooler, "bias")?))?;
    fetches.push(("pooler".into(), g.tanh(&d)?));
    inputs.run(&g, probes, &fetches)
}
