//! The original BERT (google-research/bert `modeling.py`, `run_pretraining.py`,
//! `run_classifier.py`, `run_squad.py`) rebuilt as one TensorFlow graph that restores the
//! ORIGINAL checkpoint by its ORIGINAL variable names. It is the reference the candle model
//! is compared against, so it follows the original operation order rather than HF's.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use tensorflow::{DataType, Output};

use super::{BertConfig, Head};
use crate::probe::{Outputs, Probes};
use crate::tf_graph::{Feed, GraphBuilder};

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
    fn get(&self, name: &str) -> Result<&Output> {
        self.0.get(name).with_context(|| format!("variable {name} was not restored"))
    }
}

/// Runs the original BERT graph in TensorFlow on `probes`, reading the checkpoint at
/// `checkpoint_prefix`. `variable_dtypes` gives the stored dtype of each variable (absent ones
/// are taken as float32); non-float32 variables are cast to float32 after restoring.
pub fn forward(
    checkpoint_prefix: &str,
    variable_dtypes: &HashMap<String, DataType>,
    cfg: &BertConfig,
    head: Head,
    probes: &Probes,
) -> Result<Outputs> {
    let (b, s, h) = (probes.batch, probes.seq_len, cfg.hidden_size);
    let (n, dh) = (cfg.num_attention_heads, cfg.head_dim());
    if n == 0 || n * dh != h {
        bail!("hidden_size {h} is not a multiple of num_attention_heads {n}");
    }
    if s > cfg.max_position_embeddings {
        bail!("probe length {s} exceeds max_position_embeddings {}", cfg.max_position_embeddings);
    }
    let bs = (b * s) as i32;

    let mut g = GraphBuilder::new();
    let requests: Vec<(String, DataType)> = variable_names(cfg, head)
        .into_iter()
        .map(|name| {
            let dtype = variable_dtypes.get(&name).copied().unwrap_or(DataType::Float);
            (name, dtype)
        })
        .collect();
    let vars = Vars(g.restore_f32(checkpoint_prefix, &requests)?);
    let var = |name: &str| vars.get(name).cloned();

    let ids_ph = g.placeholder("input_ids", DataType::Int32)?;
    let types_ph = g.placeholder("token_type_ids", DataType::Int32)?;
    let mask_ph = g.placeholder("input_mask", DataType::Float)?;

    let mut fetches: Vec<(String, Output)> = Vec::new();

    // embedding_postprocessor(embedding_lookup(...)): word + token type, then + positions, then LayerNorm.
    let word_table = var("bert/embeddings/word_embeddings")?;
    let words = g.gather(&word_table, &ids_ph)?; // [B, S, H]
    let types = g.gather(&var("bert/embeddings/token_type_embeddings")?, &types_ph)?;
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
    let adder = g.attention_adder(&mask_ph, b, s)?;
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

    let to_i32 = |v: &[i64]| -> Result<Vec<i32>> {
        v.iter().map(|&x| i32::try_from(x).context("probe id does not fit in int32")).collect()
    };
    let ids = Feed::i32(&[b, s], &to_i32(&probes.input_ids)?)?;
    let types = Feed::i32(&[b, s], &to_i32(&probes.token_type_ids)?)?;
    let mask_values: Vec<f32> = probes.attention_mask.iter().map(|&m| m as f32).collect();
    let mask = Feed::f32(&[b, s], &mask_values)?;

    let fetch_refs: Vec<&Output> = fetches.iter().map(|(_, o)| o).collect();
    let results = g.run(&[(&ids_ph, &ids), (&types_ph, &types), (&mask_ph, &mask)], &fetch_refs)?;
    let mut outputs = Outputs::default();
    for ((name, _), (shape, values)) in fetches.iter().zip(results) {
        outputs.push(name.clone(), shape, values);
    }
    Ok(outputs)
}
