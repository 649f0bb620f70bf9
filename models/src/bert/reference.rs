//! The original BERT (google-research/bert `modeling.py`, `run_pretraining.py`,
//! `run_classifier.py`, `run_squad.py`) rebuilt as one TensorFlow graph that restores the
//! ORIGINAL checkpoint by its ORIGINAL variable names. It is the reference the candle model
//! is compared against, so it follows the original operation order rather than HF's.
//! [`forward_tf2`] does the same for TF Model Garden ≤ v2.3.0's Keras encoder and its TF2
//! object-based checkpoints. Each [`Part`] is built by one function whether it runs alone (a
//! stage: its own graph, its inputs fed through placeholders) or chained into the whole model.

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Context, Result};
use tensorflow::{DataType, Output, Shape};

use super::{parts, tf2_name, BertConfig, Head, Part};
use crate::probe::Outputs;
use crate::stage::{Stage, Value, Values};
use crate::tf_graph::{feed, Feed, GraphBuilder, OriginalWeights, Vars};

/// The original google-research/bert variables `part` reads.
pub fn original_vars(part: Part) -> Vec<String> {
    let scoped = |scope: &str, names: &[&str]| names.iter().map(|n| format!("{scope}{n}")).collect();
    match part {
        Part::Embeddings => scoped(
            "bert/embeddings/",
            &["word_embeddings", "token_type_embeddings", "position_embeddings", "LayerNorm/gamma", "LayerNorm/beta"],
        ),
        Part::Layer(i) => scoped(
            &format!("bert/encoder/layer_{i}/"),
            &[
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
            ],
        ),
        Part::Pooler => scoped("bert/pooler/dense/", &["kernel", "bias"]),
        // get_masked_lm_output decodes with the word embedding table itself.
        Part::Mlm => scoped(
            "",
            &[
                "cls/predictions/transform/dense/kernel",
                "cls/predictions/transform/dense/bias",
                "cls/predictions/transform/LayerNorm/gamma",
                "cls/predictions/transform/LayerNorm/beta",
                "bert/embeddings/word_embeddings",
                "cls/predictions/output_bias",
            ],
        ),
        Part::Nsp => scoped("cls/seq_relationship/", &["output_weights", "output_bias"]),
        Part::Classifier => scoped("", &["output_weights", "output_bias"]),
        Part::Qa => scoped("cls/squad/", &["output_weights", "output_bias"]),
    }
}

/// The checkpoint keys of the Model Garden ≤ v2.3.0 `TransformerEncoder` variables `part` reads,
/// as `tf.train.Checkpoint(model=encoder)` names them; `attention_outputs` is each layer's
/// spelling of its attention output projection (see [`super::tf2_attention_outputs`]). The
/// encoder has no heads, so a head part reads nothing (and is refused when built).
pub fn tf2_original_vars(cfg: &BertConfig, part: Part, attention_outputs: &[&str]) -> Vec<String> {
    let paths: Vec<String> = match part {
        Part::Embeddings => ["0/embeddings", "1/embeddings", "2/embeddings", "3/gamma", "3/beta"].map(String::from).into(),
        Part::Layer(l) => {
            let out = attention_outputs.get(l).copied().unwrap_or("_attention_output_dense");
            [
                "_attention_layer/_query_dense/kernel",
                "_attention_layer/_query_dense/bias",
                "_attention_layer/_key_dense/kernel",
                "_attention_layer/_key_dense/bias",
                "_attention_layer/_value_dense/kernel",
                "_attention_layer/_value_dense/bias",
                &format!("{out}/kernel"),
                &format!("{out}/bias"),
                "_attention_layer_norm/gamma",
                "_attention_layer_norm/beta",
                "_intermediate_dense/kernel",
                "_intermediate_dense/bias",
                "_output_dense/kernel",
                "_output_dense/bias",
                "_output_layer_norm/gamma",
                "_output_layer_norm/beta",
            ]
            .iter()
            .map(|p| format!("{}/{p}", l + 4))
            .collect()
        }
        Part::Pooler => ["kernel", "bias"].iter().map(|p| format!("{}/{p}", cfg.num_hidden_layers + 4)).collect(),
        Part::Mlm | Part::Nsp | Part::Classifier | Part::Qa => Vec::new(),
    };
    paths.iter().map(|p| tf2_name(&format!("layer_with_weights-{p}"))).collect()
}

/// Which original code a graph follows.
#[derive(Debug, Clone, Copy)]
pub enum Original<'a> {
    /// google-research/bert's `modeling.py` and its training scripts' heads.
    Tf1,
    /// Model Garden ≤ v2.3.0's encoder; per layer, the spelling of the attention output.
    Tf2 { attention_outputs: &'a [&'static str] },
}

/// Batch size and sequence length of a graph, read off the values fed to it (restored variables
/// have no static shape, so TF cannot infer them). Every value between BERT's stages is [B, S]
/// (ids, mask) or [B, S, H] (hidden states), except the pooled output, [B, H]: a graph fed only
/// that has no sequence axis and needs none.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    seq: Option<usize>,
}

impl Dims {
    fn of(inputs: &Values) -> Result<Dims> {
        let axis = |v: &Value, i: usize| v.shape().get(i).copied();
        let batch = inputs.0.first().and_then(|(_, v)| axis(v, 0)).context("a stage needs at least one input with a batch axis")?;
        let seq = inputs.0.iter().find(|(n, _)| n != "pooler").and_then(|(_, v)| axis(v, 1));
        Ok(Dims { batch, seq })
    }

    /// (B, S), for the parts that have a sequence axis.
    fn bs(self) -> Result<(usize, usize)> {
        Ok((self.batch, self.seq.context("this part needs the sequence length, but was fed only the pooled output")?))
    }
}

/// Ids are int32 (as the original feeds them); hidden states and the mask are float.
fn placeholder_dtype(name: &str) -> DataType {
    match name {
        "input_ids" | "token_type_ids" => DataType::Int32,
        _ => DataType::Float,
    }
}

/// Builds one graph that restores exactly `restore`, feeds `inputs` through placeholders and runs
/// `parts` in order, each on the probe inputs and earlier parts' outputs it names; fetches every
/// part's outputs. The whole model is all parts on the probes; a stage is one part on its inputs.
fn run_parts(
    weights: &OriginalWeights,
    cfg: &BertConfig,
    original: Original,
    restore: &[String],
    parts: &[Part],
    inputs: &Values,
) -> Result<Values> {
    let (h, n) = (cfg.hidden_size, cfg.num_attention_heads);
    if n == 0 || h % n != 0 {
        bail!("hidden_size {h} is not a multiple of num_attention_heads {n}");
    }
    let dims = Dims::of(inputs)?;
    let mut g = GraphBuilder::new();
    let vars = Vars::restore(&mut g, weights, restore)?;
    let mut known: HashMap<String, Output> = HashMap::new();
    let mut feeds = Vec::new();
    for (name, value) in &inputs.0 {
        let dtype = placeholder_dtype(name);
        let shape = Shape::from(Some(value.shape().iter().map(|&d| Some(d as i64)).collect()));
        let op = g.op("Placeholder", &[], |nd| {
            nd.set_attr_type("dtype", dtype)?;
            Ok(nd.set_attr_shape("shape", &shape)?)
        })?;
        let placeholder = Output { operation: op, index: 0 };
        feeds.push((placeholder.clone(), feed(name, value, dtype)?));
        known.insert(name.clone(), placeholder);
    }
    let mut fetches: Vec<(String, Output)> = Vec::new();
    for &part in parts {
        let ins = part
            .inputs(cfg)
            .iter()
            .map(|n| known.get(n).cloned().with_context(|| format!("no value {n} for {}", part.name())))
            .collect::<Result<Vec<_>>>()?;
        let outs = match original {
            Original::Tf1 => build_tf1(&mut g, cfg, dims, part, &vars, &ins),
            Original::Tf2 { attention_outputs } => build_tf2(&mut g, cfg, dims, part, &vars, &ins, attention_outputs),
        }
        .with_context(|| format!("building {}", part.name()))?;
        for (name, out) in part.outputs().into_iter().zip(outs) {
            known.insert(name.clone(), out.clone());
            fetches.push((name, out));
        }
    }
    vars.check_all_read()?;
    let feed_refs: Vec<(&Output, &Feed)> = feeds.iter().map(|(o, f)| (o, f)).collect();
    let fetch_refs: Vec<&Output> = fetches.iter().map(|(_, o)| o).collect();
    let results = g.run(&feed_refs, &fetch_refs)?;
    Ok(Values(fetches.into_iter().zip(results).map(|((name, _), (shape, data))| (name, Value::Float { shape, data })).collect()))
}

/// The union of `parts`' variables, each once, in order.
fn all_vars(parts: &[Part], vars_of: impl Fn(Part) -> Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    parts.iter().flat_map(|&p| vars_of(p)).filter(|n| seen.insert(n.clone())).collect()
}

fn check_length(cfg: &BertConfig, s: usize) -> Result<()> {
    if s > cfg.max_position_embeddings {
        bail!("probe length {s} exceeds max_position_embeddings {}", cfg.max_position_embeddings);
    }
    Ok(())
}

/// One google-research/bert part on `inputs` (in the order of [`Part::inputs`]).
fn build_tf1(g: &mut GraphBuilder, cfg: &BertConfig, dims: Dims, part: Part, vars: &Vars, inputs: &[Output]) -> Result<Vec<Output>> {
    let (h, eps) = (cfg.hidden_size as i32, cfg.layer_norm_eps);
    Ok(match (part, inputs) {
        (Part::Embeddings, [ids, types]) => {
            let (_, s) = dims.bs()?;
            check_length(cfg, s)?;
            let e = |n: &str| vars.get(&format!("bert/embeddings/{n}"));
            // embedding_postprocessor(embedding_lookup(...)): word + token type, then + positions, then LayerNorm.
            let words = g.gather(&e("word_embeddings")?, ids)?; // [B, S, H]
            let types = g.gather(&e("token_type_embeddings")?, types)?;
            let x = g.add(&words, &types)?;
            let positions = g.slice(&e("position_embeddings")?, &[0, 0], &[s as i32, -1])?;
            let positions = g.reshape(&positions, &[1, s as i32, h])?;
            let x = g.add(&x, &positions)?;
            vec![g.layer_norm(&x, &e("LayerNorm/gamma")?, &e("LayerNorm/beta")?, eps)?]
        }
        (Part::Layer(i), [x, mask]) => {
            let (b, s) = dims.bs()?;
            let w = |n: &str| vars.get(&format!("bert/encoder/layer_{i}/{n}"));
            let dense = |g: &mut GraphBuilder, x: &Output, scope: &str| g.dense(x, &w(&format!("{scope}/kernel"))?, Some(&w(&format!("{scope}/bias"))?));
            // transformer_model: the additive mask from input_mask, everything as [B·S, H] matrices.
            let adder = g.attention_adder(mask, b, s)?;
            let prev = g.reshape(x, &[(b * s) as i32, h])?;
            let (n, dh) = (cfg.num_attention_heads, cfg.head_dim());
            let q = dense(g, &prev, "attention/self/query")?;
            let k = dense(g, &prev, "attention/self/key")?;
            let v = dense(g, &prev, "attention/self/value")?;
            let ctx = g.attention(&q, &k, &v, Some(&adder), b, s, s, n, dh, (1.0 / (dh as f64).sqrt()) as f32)?;
            let attn = dense(g, &ctx, "attention/output/dense")?;
            let attn = g.add(&attn, &prev)?;
            let attn = g.layer_norm(&attn, &w("attention/output/LayerNorm/gamma")?, &w("attention/output/LayerNorm/beta")?, eps)?;
            let inter = dense(g, &attn, "intermediate/dense")?;
            let inter = g.activation(&cfg.hidden_act, &inter)?;
            let out = dense(g, &inter, "output/dense")?;
            let out = g.add(&out, &attn)?;
            let out = g.layer_norm(&out, &w("output/LayerNorm/gamma")?, &w("output/LayerNorm/beta")?, eps)?;
            vec![g.reshape(&out, &[b as i32, s as i32, h])?]
        }
        (Part::Pooler, [x]) => {
            // tanh(dense(first token)).
            let b = dims.batch;
            let first = g.slice(x, &[0, 0, 0], &[-1, 1, -1])?;
            let first = g.reshape(&first, &[b as i32, h])?;
            let d = g.dense(&first, &vars.get("bert/pooler/dense/kernel")?, Some(&vars.get("bert/pooler/dense/bias")?))?;
            vec![g.tanh(&d)?]
        }
        (Part::Mlm, [x]) => {
            // get_masked_lm_output, on every position instead of the gathered masked ones.
            let (b, s) = dims.bs()?;
            let p = |n: &str| vars.get(&format!("cls/predictions/{n}"));
            let x = g.reshape(x, &[(b * s) as i32, h])?;
            let t = g.dense(&x, &p("transform/dense/kernel")?, Some(&p("transform/dense/bias")?))?;
            let t = g.activation(&cfg.hidden_act, &t)?;
            let t = g.layer_norm(&t, &p("transform/LayerNorm/gamma")?, &p("transform/LayerNorm/beta")?, eps)?;
            let logits = g.matmul(&t, &vars.get("bert/embeddings/word_embeddings")?, false, true)?;
            let logits = g.bias_add(&logits, &p("output_bias")?)?;
            vec![g.reshape(&logits, &[b as i32, s as i32, cfg.vocab_size as i32])?]
        }
        // get_next_sentence_output and run_classifier.create_model: pooled · Wᵀ + b.
        (Part::Nsp | Part::Classifier, [pooled]) => {
            let scope = if part == Part::Nsp { "cls/seq_relationship/" } else { "" };
            let logits = g.matmul(pooled, &vars.get(&format!("{scope}output_weights"))?, false, true)?;
            vec![g.bias_add(&logits, &vars.get(&format!("{scope}output_bias"))?)?]
        }
        (Part::Qa, [x]) => {
            // run_squad.create_model.
            let (b, s) = dims.bs()?;
            let x = g.reshape(x, &[(b * s) as i32, h])?;
            let logits = g.matmul(&x, &vars.get("cls/squad/output_weights")?, false, true)?;
            let logits = g.bias_add(&logits, &vars.get("cls/squad/output_bias")?)?;
            let logits = g.reshape(&logits, &[b as i32, s as i32, 2])?;
            let logits = g.transpose(&logits, &[2, 0, 1])?;
            g.unstack(&logits, 2, 0)?
        }
        _ => bail!("wrong number of inputs ({})", inputs.len()),
    })
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

/// One part of Model Garden ≤ v2.3.0's encoder (networks/transformer_encoder.py with
/// layers/transformer.py and layers/attention.py) on `inputs`.
fn build_tf2(
    g: &mut GraphBuilder,
    cfg: &BertConfig,
    dims: Dims,
    part: Part,
    vars: &Vars,
    inputs: &[Output],
    attention_outputs: &[&str],
) -> Result<Vec<Output>> {
    let var = |k: usize, path: &str| vars.get(&tf2_name(&format!("layer_with_weights-{k}/{path}")));
    let (h, eps) = (cfg.hidden_size as i32, cfg.layer_norm_eps);
    Ok(match (part, inputs) {
        (Part::Embeddings, [ids, types]) => {
            // Add()([word, position, type]) sums left to right, then LayerNormalization(epsilon=1e-12).
            // The type embedding uses one_hot·table, which selects rows exactly as a gather does.
            let (_, s) = dims.bs()?;
            check_length(cfg, s)?;
            let words = g.gather(&var(0, "embeddings")?, ids)?;
            let positions = g.slice(&var(1, "embeddings")?, &[0, 0], &[s as i32, -1])?;
            let positions = g.reshape(&positions, &[1, s as i32, h])?;
            let types = g.gather(&var(2, "embeddings")?, types)?;
            let x = g.add(&words, &positions)?;
            let x = g.add(&x, &types)?;
            vec![g.layer_norm(&x, &var(3, "gamma")?, &var(3, "beta")?, eps)?]
        }
        (Part::Layer(l), [x, mask]) => {
            let (b, s) = dims.bs()?;
            let w = |name: &str| var(l + 4, name);
            // EinsumDense / DenseEinsum: einsum with the kernel, then `+= bias` (broadcast, not BiasAdd).
            let einsum_dense = |g: &mut GraphBuilder, eq: &str, x: &Output, scope: &str| -> Result<Output> {
                let y = g.einsum(eq, x, &w(&format!("{scope}/kernel"))?)?;
                g.add(&y, &w(&format!("{scope}/bias"))?)
            };
            // SelfAttentionMask + MaskedSoftmax: (1 - mask) · -10000 added to the [B, N, S, S] scores.
            let adder = g.attention_adder(mask, b, s)?;
            let scale = g.scalar_f32((1.0 / (cfg.head_dim() as f64).sqrt()) as f32)?;
            let q = einsum_dense(g, "abc,cde->abde", x, "_attention_layer/_query_dense")?;
            let key = einsum_dense(g, "abc,cde->abde", x, "_attention_layer/_key_dense")?;
            let v = einsum_dense(g, "abc,cde->abde", x, "_attention_layer/_value_dense")?;
            let scores = g.einsum("aecd,abcd->acbe", &key, &q)?;
            let scores = g.mul(&scores, &scale)?;
            let scores = g.add(&scores, &adder)?;
            let probs = g.softmax(&scores)?;
            let ctx = g.einsum("acbe,aecd->abcd", &probs, &v)?;
            let out_scope = attention_outputs.get(l).copied().unwrap_or("_attention_output_dense");
            let attn = einsum_dense(g, "abcd,cde->abe", &ctx, out_scope)?;
            let attn = g.add(x, &attn)?;
            let attn = g.layer_norm(&attn, &w("_attention_layer_norm/gamma")?, &w("_attention_layer_norm/beta")?, eps)?;
            let inter = einsum_dense(g, "abc,cd->abd", &attn, "_intermediate_dense")?;
            let inter = model_garden_activation(g, &cfg.hidden_act, &inter)?;
            let out = einsum_dense(g, "abc,cd->abd", &inter, "_output_dense")?;
            let out = g.add(&out, &attn)?;
            vec![g.layer_norm(&out, &w("_output_layer_norm/gamma")?, &w("_output_layer_norm/beta")?, eps)?]
        }
        (Part::Pooler, [x]) => {
            // Dense(tanh) on the first token.
            let b = dims.batch;
            let first = g.slice(x, &[0, 0, 0], &[-1, 1, -1])?;
            let first = g.reshape(&first, &[b as i32, h])?;
            let k = cfg.num_hidden_layers + 4;
            let d = g.dense(&first, &var(k, "kernel")?, Some(&var(k, "bias")?))?;
            vec![g.tanh(&d)?]
        }
        (Part::Embeddings | Part::Layer(_) | Part::Pooler, _) => bail!("wrong number of inputs ({})", inputs.len()),
        (head, _) => bail!("Model Garden's encoder has no {} head", head.name()),
    })
}

/// Runs the original BERT graph in TensorFlow on the probe `inputs`, restoring the original
/// checkpoint (`weights`); every variable is computed on in float32. One graph: every part in
/// order.
pub fn forward(weights: &OriginalWeights, cfg: &BertConfig, head: Head, inputs: &Values) -> Result<Outputs> {
    let parts = parts(cfg, head);
    let restore = all_vars(&parts, original_vars);
    Ok(run_parts(weights, cfg, Original::Tf1, &restore, &parts, inputs)?.to_outputs())
}

/// Runs Model Garden ≤ v2.3.0's BERT encoder in TensorFlow on the probe `inputs`, restoring the
/// TF2 object-based checkpoint (`weights`) by its own names. `cfg` is the original
/// `bert_config.json`; its `hidden_act` is read as Model Garden reads it. Outputs are named as
/// the TF1 encoder's: "embeddings", "layer.{i}", "pooler".
pub fn forward_tf2(weights: &OriginalWeights, cfg: &BertConfig, inputs: &Values) -> Result<Outputs> {
    let attention_outputs = super::tf2_attention_outputs(cfg.num_hidden_layers, |name| weights.dtypes.contains_key(name));
    let parts = parts(cfg, Head::Base);
    let restore = all_vars(&parts, |p| tf2_original_vars(cfg, p, &attention_outputs));
    let original = Original::Tf2 { attention_outputs: &attention_outputs };
    Ok(run_parts(weights, cfg, original, &restore, &parts, inputs)?.to_outputs())
}

/// One stage alone: a fresh graph restoring exactly `stage.original_vars`, fed `stage.inputs`
/// (picked from `inputs`) through placeholders. `cfg` is the config the original code reads.
pub fn stage(weights: &OriginalWeights, cfg: &BertConfig, original: Original, part: Part, stage: &Stage, inputs: &Values) -> Result<Values> {
    let inputs = inputs.pick(&stage.inputs).map_err(anyhow::Error::msg)?;
    let values = run_parts(weights, cfg, original, &stage.original_vars, &[part], &inputs)
        .with_context(|| format!("TensorFlow stage {}", stage.name))?;
    if values.0.len() != stage.outputs.len() {
        bail!("stage {} produced {} outputs, but declares {:?}", stage.name, values.0.len(), stage.outputs);
    }
    Ok(Values(stage.outputs.iter().cloned().zip(values.0.into_iter().map(|(_, v)| v)).collect()))
}
