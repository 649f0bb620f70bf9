//! Synthetic BERT checkpoints under the original names (google-research/bert TF1 scopes, and
//! TF Model Garden v2.3.0's object-based TF2 layout), and BERT's golden cases.

use serde_json::json;

use super::{tf2_name, BertConfig, Head, Layout};
use crate::synthetic::{moment_slots, tf1_values, Data, GoldenCase, Rng, Variable};

/// A tiny BERT, large enough that every weight matters: heads of width 12, asymmetric sizes.
pub fn tiny_bert_config() -> serde_json::Value {
    json!({
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 48,
        "initializer_range": 0.02,
        "intermediate_size": 80,
        "max_position_embeddings": 24,
        "num_attention_heads": 4,
        "num_hidden_layers": 3,
        "type_vocab_size": 2,
        "vocab_size": 101
    })
}

/// A lower-cased WordPiece vocabulary of exactly `n` tokens in google-research/bert's layout.
pub fn tiny_vocab(n: usize) -> String {
    let mut tokens: Vec<String> = vec!["[PAD]".into()];
    tokens.extend((0..4).map(|i| format!("[unused{i}]")));
    tokens.extend(["[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from));
    let words = ["the", "of", "and", "a", "to", "in", "is", "was", "he", "for", "it", "with", "as", "his", "on", "be"];
    let mut i = 0;
    while tokens.len() < n {
        let w = words[i % words.len()];
        tokens.push(match i / words.len() {
            0 => w.to_string(),
            1 => format!("##{w}"),
            k => format!("{w}{k}"),
        });
        i += 1;
    }
    tokens.truncate(n);
    tokens.join("\n") + "\n"
}

/// Original variable names and shapes of a BERT checkpoint for `head`, in creation order.
pub fn bert_variables(cfg: &BertConfig, head: Head) -> Vec<(String, Vec<usize>)> {
    let (h, i, v, p, t) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings, cfg.type_vocab_size);
    let mut vars = vec![
        ("bert/embeddings/word_embeddings".to_string(), vec![v, h]),
        ("bert/embeddings/token_type_embeddings".into(), vec![t, h]),
        ("bert/embeddings/position_embeddings".into(), vec![p, h]),
        ("bert/embeddings/LayerNorm/beta".into(), vec![h]),
        ("bert/embeddings/LayerNorm/gamma".into(), vec![h]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let pre = format!("bert/encoder/layer_{l}");
        for proj in ["query", "key", "value"] {
            vars.push((format!("{pre}/attention/self/{proj}/kernel"), vec![h, h]));
            vars.push((format!("{pre}/attention/self/{proj}/bias"), vec![h]));
        }
        vars.push((format!("{pre}/attention/output/dense/kernel"), vec![h, h]));
        vars.push((format!("{pre}/attention/output/dense/bias"), vec![h]));
        vars.push((format!("{pre}/attention/output/LayerNorm/beta"), vec![h]));
        vars.push((format!("{pre}/attention/output/LayerNorm/gamma"), vec![h]));
        vars.push((format!("{pre}/intermediate/dense/kernel"), vec![h, i]));
        vars.push((format!("{pre}/intermediate/dense/bias"), vec![i]));
        vars.push((format!("{pre}/output/dense/kernel"), vec![i, h]));
        vars.push((format!("{pre}/output/dense/bias"), vec![h]));
        vars.push((format!("{pre}/output/LayerNorm/beta"), vec![h]));
        vars.push((format!("{pre}/output/LayerNorm/gamma"), vec![h]));
    }
    // run_squad keeps the pretrained pooler in its graph even though it never uses it.
    vars.push(("bert/pooler/dense/kernel".into(), vec![h, h]));
    vars.push(("bert/pooler/dense/bias".into(), vec![h]));
    match head {
        Head::PreTraining => {
            vars.push(("cls/predictions/transform/dense/kernel".into(), vec![h, h]));
            vars.push(("cls/predictions/transform/dense/bias".into(), vec![h]));
            vars.push(("cls/predictions/transform/LayerNorm/beta".into(), vec![h]));
            vars.push(("cls/predictions/transform/LayerNorm/gamma".into(), vec![h]));
            vars.push(("cls/predictions/output_bias".into(), vec![v]));
            vars.push(("cls/seq_relationship/output_weights".into(), vec![2, h]));
            vars.push(("cls/seq_relationship/output_bias".into(), vec![2]));
        }
        Head::SequenceClassification { num_labels } => {
            vars.push(("output_weights".into(), vec![num_labels, h]));
            vars.push(("output_bias".into(), vec![num_labels]));
        }
        Head::QuestionAnswering => {
            vars.push(("cls/squad/output_weights".into(), vec![2, h]));
            vars.push(("cls/squad/output_bias".into(), vec![2]));
        }
        Head::Base => {}
    }
    vars
}


/// Object paths (after `model/`) and shapes of TF Model Garden v2.3.0's `TransformerEncoder` as
/// `tf.train.Checkpoint(model=encoder)` saves it: Keras numbers the layers that own weights,
/// einsum kernels keep the heads as an axis, and the attention's output projection is saved under
/// the Transformer layer's `_attention_output_dense` alias, its shortest object path.
pub fn bert_tf2_variables(cfg: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v, p, t) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings, cfg.type_vocab_size);
    let (n, dh) = (cfg.num_attention_heads, cfg.head_dim());
    let mut vars = vec![
        ("layer_with_weights-0/embeddings".to_string(), vec![v, h]),
        ("layer_with_weights-1/embeddings".into(), vec![p, h]),
        ("layer_with_weights-2/embeddings".into(), vec![t, h]),
        ("layer_with_weights-3/gamma".into(), vec![h]),
        ("layer_with_weights-3/beta".into(), vec![h]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let pre = format!("layer_with_weights-{}", l + 4);
        for proj in ["_query_dense", "_key_dense", "_value_dense"] {
            vars.push((format!("{pre}/_attention_layer/{proj}/kernel"), vec![h, n, dh]));
            vars.push((format!("{pre}/_attention_layer/{proj}/bias"), vec![n, dh]));
        }
        vars.push((format!("{pre}/_attention_output_dense/kernel"), vec![n, dh, h]));
        vars.push((format!("{pre}/_attention_output_dense/bias"), vec![h]));
        vars.push((format!("{pre}/_attention_layer_norm/gamma"), vec![h]));
        vars.push((format!("{pre}/_attention_layer_norm/beta"), vec![h]));
        vars.push((format!("{pre}/_intermediate_dense/kernel"), vec![h, i]));
        vars.push((format!("{pre}/_intermediate_dense/bias"), vec![i]));
        vars.push((format!("{pre}/_output_dense/kernel"), vec![i, h]));
        vars.push((format!("{pre}/_output_dense/bias"), vec![h]));
        vars.push((format!("{pre}/_output_layer_norm/gamma"), vec![h]));
        vars.push((format!("{pre}/_output_layer_norm/beta"), vec![h]));
    }
    let pooler = format!("layer_with_weights-{}", cfg.num_hidden_layers + 4);
    vars.push((format!("{pooler}/kernel"), vec![h, h]));
    vars.push((format!("{pooler}/bias"), vec![h]));
    vars
}

/// A minimal serialized `TrackableObjectGraph` (root → `model`, `save_counter`): the checkpoint
/// holds proto bytes there, which the converter must skip, never read as a weight.
fn object_graph_bytes() -> Vec<u8> {
    // Protobuf length-delimited field `field` holding `body` (all lengths here are < 128).
    let field = |field: u8, body: &[u8]| [&[field << 3 | 2, body.len() as u8][..], body].concat();
    let child = |id: u8, name: &str| [&[1 << 3, id][..], &field(2, name.as_bytes())].concat();
    let root = [field(1, &child(1, "model")), field(1, &child(2, "save_counter"))].concat();
    field(1, &root)
}

/// A google-research/bert checkpoint for `head`; with `trainer_state` also the
/// AdamWeightDecayOptimizer slots and global_step that released checkpoints carry.
pub fn checkpoint(cfg: &BertConfig, head: Head, seed: u64, trainer_state: bool) -> Vec<Variable> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for (name, shape) in bert_variables(cfg, head) {
        let var = Variable::f32(name.clone(), shape.clone(), tf1_values(&mut rng, &name, &shape));
        if trainer_state {
            out.extend(moment_slots(&mut rng, &var, ["adam_m", "adam_v"]));
        }
        out.push(var);
    }
    if trainer_state {
        out.push(Variable::i64_scalar("global_step", 1_000_000));
    }
    out
}

/// A TF2 object-based BERT checkpoint under Model Garden v2.3.0's names, with the object graph
/// and `save_counter` every `tf.train.Checkpoint` holds; with `trainer_state` also Adam's `iter`
/// and the `m`/`v` slots of the first and last variables.
pub fn tf2_checkpoint(cfg: &BertConfig, seed: u64, trainer_state: bool) -> Vec<Variable> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let vars = bert_tf2_variables(cfg);
    let with_slots = if trainer_state { vec![vars[0].0.clone(), vars[vars.len() - 1].0.clone()] } else { Vec::new() };
    for (path, shape) in vars {
        // Draw values as for the TF1 matrix the einsum kernel flattens to, so fan-in is right:
        // [H, N, Dh] contracts its first axis, the attention output [N, Dh, H] its first two.
        let as_matrix = match shape.as_slice() {
            [a, b, c] if path.contains("_attention_output") => vec![a * b, *c],
            [a, b, c] => vec![*a, b * c],
            s => s.to_vec(),
        };
        let values = tf1_values(&mut rng, &path, &as_matrix);
        if with_slots.contains(&path) {
            for slot in ["m", "v"] {
                let slot_values: Vec<f32> = values.iter().map(|_| rng.uniform(1e-3).abs()).collect();
                out.push(Variable::f32(tf2_name(&format!("{path}/.OPTIMIZER_SLOT/optimizer/{slot}")), shape.clone(), slot_values));
            }
        }
        out.push(Variable::f32(tf2_name(&path), shape, values));
    }
    if trainer_state {
        out.push(Variable::i64_scalar("optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE", 10_000));
    }
    out.push(Variable::i64_scalar("save_counter/.ATTRIBUTES/VARIABLE_VALUE", 1));
    out.push(Variable { name: "_CHECKPOINTABLE_OBJECT_GRAPH".into(), shape: vec![], data: Data::Strings(vec![object_graph_bytes()]) });
    out
}

/// BERT's golden cases: every head of google-research/bert, and a Model Garden TF2 encoder.
pub fn golden_cases() -> Vec<GoldenCase> {
    let config = tiny_bert_config();
    let cfg: BertConfig = serde_json::from_value(config.clone()).expect("the tiny config is a BertConfig");
    let cases: [(&'static str, Layout, Head, bool, u64); 5] = [
        ("bert", Layout::Tf1, Head::PreTraining, true, 1),
        ("bert-classifier", Layout::Tf1, Head::SequenceClassification { num_labels: 3 }, false, 2),
        ("bert-squad", Layout::Tf1, Head::QuestionAnswering, false, 3),
        ("bert-encoder", Layout::Tf1, Head::Base, false, 4),
        ("bert-tf2", Layout::Tf2Objects, Head::Base, true, 5),
    ];
    cases
        .into_iter()
        .map(|(dir, layout, head, trainer_state, seed)| GoldenCase {
            dir,
            model_type: "bert",
            checkpoint: "bert_model.ckpt",
            config_file: "bert_config.json",
            config: config.clone(),
            files: vec![("vocab.txt", tiny_vocab(cfg.vocab_size).into_bytes())],
            storage: crate::synthetic::Storage::TfBundle,
            variables: match layout {
                Layout::Tf1 => checkpoint(&cfg, head, seed, trainer_state),
                Layout::Tf2Objects => tf2_checkpoint(&cfg, seed, trainer_state),
            },
        })
        .collect()
}
