//! The candle BERT (HF-named weights) against the original BERT graph run in TensorFlow on the
//! original checkpoint (written by TF's own SaveV2), per layer and per head, on random small
//! models. Needs TensorFlow (`cargo xtask setup-tf`).

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use tensorflow::DataType;
use tfconv::source::DType;
use tfconv::tf_io::{self, HostTensor, SaveItem};
use tfconv_models::bert::{self, BertConfig, Head};
use tfconv_models::probe::Outputs;

const TOLERANCE: f32 = 1e-4;

fn small_config(hidden_act: &str, tie_word_embeddings: bool) -> BertConfig {
    BertConfig {
        vocab_size: 101,
        hidden_size: 48,
        num_hidden_layers: 3,
        num_attention_heads: 4,
        intermediate_size: 80,
        hidden_act: hidden_act.into(),
        max_position_embeddings: 16,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        tie_word_embeddings,
    }
}

/// splitmix64, uniform in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Element type the checkpoint stores the float variables in.
#[derive(Clone, Copy, Debug)]
enum Stored {
    F32,
    F16,
    BF16,
}

struct Var {
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// The original variables of a checkpoint for `head`, with random values of a realistic scale.
fn original_variables(cfg: &BertConfig, head: Head, seed: u64, stored: Stored) -> Vec<Var> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let mut specs: Vec<(String, Vec<usize>)> = vec![
        ("bert/embeddings/word_embeddings".into(), vec![v, h]),
        ("bert/embeddings/token_type_embeddings".into(), vec![cfg.type_vocab_size, h]),
        ("bert/embeddings/position_embeddings".into(), vec![cfg.max_position_embeddings, h]),
        ("bert/embeddings/LayerNorm/gamma".into(), vec![h]),
        ("bert/embeddings/LayerNorm/beta".into(), vec![h]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("bert/encoder/layer_{l}");
        for (n, shape) in [
            ("attention/self/query/kernel", vec![h, h]),
            ("attention/self/query/bias", vec![h]),
            ("attention/self/key/kernel", vec![h, h]),
            ("attention/self/key/bias", vec![h]),
            ("attention/self/value/kernel", vec![h, h]),
            ("attention/self/value/bias", vec![h]),
            ("attention/output/dense/kernel", vec![h, h]),
            ("attention/output/dense/bias", vec![h]),
            ("attention/output/LayerNorm/gamma", vec![h]),
            ("attention/output/LayerNorm/beta", vec![h]),
            ("intermediate/dense/kernel", vec![h, i]),
            ("intermediate/dense/bias", vec![i]),
            ("output/dense/kernel", vec![i, h]),
            ("output/dense/bias", vec![h]),
            ("output/LayerNorm/gamma", vec![h]),
            ("output/LayerNorm/beta", vec![h]),
        ] {
            specs.push((format!("{p}/{n}"), shape));
        }
    }
    // Every original checkpoint has the pooler, even SQuAD ones (their HF class just drops it).
    specs.push(("bert/pooler/dense/kernel".into(), vec![h, h]));
    specs.push(("bert/pooler/dense/bias".into(), vec![h]));
    match head {
        Head::PreTraining => specs.extend([
            ("cls/predictions/transform/dense/kernel".into(), vec![h, h]),
            ("cls/predictions/transform/dense/bias".into(), vec![h]),
            ("cls/predictions/transform/LayerNorm/gamma".into(), vec![h]),
            ("cls/predictions/transform/LayerNorm/beta".into(), vec![h]),
            ("cls/predictions/output_bias".into(), vec![v]),
            ("cls/seq_relationship/output_weights".into(), vec![2, h]),
            ("cls/seq_relationship/output_bias".into(), vec![2]),
        ]),
        Head::SequenceClassification { num_labels } => specs.extend([
            ("output_weights".into(), vec![num_labels, h]),
            ("output_bias".into(), vec![num_labels]),
        ]),
        Head::QuestionAnswering => specs.extend([
            ("cls/squad/output_weights".into(), vec![2, h]),
            ("cls/squad/output_bias".into(), vec![2]),
        ]),
        Head::Base => {}
    }
    let mut rng = Rng(seed);
    specs
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let (offset, scale) = if name.ends_with("gamma") {
                (1.0, 0.2)
            } else if name.ends_with("beta") || name.ends_with("bias") {
                (0.0, 0.2)
            } else if name.contains("embeddings") {
                (0.0, 0.5)
            } else {
                // Kernels and output weights: keep activations O(1) so attention is not uniform.
                (0.0, 1.7 / (shape[0].min(*shape.last().unwrap()) as f32).sqrt())
            };
            let values = (0..n)
                .map(|_| {
                    let x = offset + scale * rng.next();
                    match stored {
                        Stored::F32 => x,
                        Stored::F16 => half::f16::from_f32(x).to_f32(),
                        Stored::BF16 => half::bf16::from_f32(x).to_f32(),
                    }
                })
                .collect();
            Var { name, shape, values }
        })
        .collect()
}

/// Writes the original checkpoint with TF's SaveV2; returns the dtype of every variable.
fn save_checkpoint(prefix: &str, vars: &[Var], stored: Stored) -> HashMap<String, DataType> {
    let (dtype, tf_dtype) = match stored {
        Stored::F32 => (DType::F32, DataType::Float),
        Stored::F16 => (DType::F16, DataType::Half),
        Stored::BF16 => (DType::BF16, DataType::BFloat16),
    };
    let hosts: Vec<HostTensor> = vars
        .iter()
        .map(|v| {
            let bytes: Vec<u8> = match stored {
                Stored::F32 => v.values.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Stored::F16 => v.values.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
                Stored::BF16 => v.values.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
            };
            HostTensor::new(dtype, v.shape.clone(), bytes)
        })
        .collect();
    let global_step = HostTensor::new(DType::I64, vec![], 1234i64.to_le_bytes().to_vec());
    let mut items: Vec<SaveItem> =
        vars.iter().zip(&hosts).map(|(v, t)| SaveItem { name: &v.name, slice_spec: "", tensor: t }).collect();
    items.push(SaveItem { name: "global_step", slice_spec: "", tensor: &global_step });
    tf_io::save_v2(prefix, &items).expect("TensorFlow SaveV2");
    let mut dtypes: HashMap<String, DataType> = vars.iter().map(|v| (v.name.clone(), tf_dtype)).collect();
    dtypes.insert("global_step".into(), DataType::Int64);
    dtypes
}

/// The HF key of an original variable for `head`'s class, and whether it is transposed
/// (architectures.md §1.3; run_classifier/run_squad heads to `classifier` / `qa_outputs`).
fn hf_key(name: &str, head: Head) -> Option<(String, bool)> {
    let direct = match name {
        "cls/predictions/output_bias" => Some("cls.predictions.bias"),
        "cls/seq_relationship/output_weights" => Some("cls.seq_relationship.weight"),
        "cls/seq_relationship/output_bias" => Some("cls.seq_relationship.bias"),
        "output_weights" => Some("classifier.weight"),
        "output_bias" => Some("classifier.bias"),
        "cls/squad/output_weights" => Some("qa_outputs.weight"),
        "cls/squad/output_bias" => Some("qa_outputs.bias"),
        _ => None,
    };
    if let Some(k) = direct {
        return Some((k.into(), false));
    }
    let (prefix, rest) = if let Some(rest) = name.strip_prefix("bert/") {
        if rest.starts_with("pooler/") && !head.has_pooler() {
            return None;
        }
        (head.prefix(), rest)
    } else {
        ("", name)
    };
    let mut parts: Vec<String> = Vec::new();
    let mut transpose = false;
    for seg in rest.split('/') {
        match seg {
            "kernel" => {
                parts.push("weight".into());
                transpose = true;
            }
            "gamma" => parts.push("weight".into()),
            "beta" => parts.push("bias".into()),
            s if s.starts_with("layer_") => {
                parts.push("layer".into());
                parts.push(s["layer_".len()..].into());
            }
            s => parts.push(s.into()),
        }
    }
    if rest.starts_with("embeddings/") && rest.ends_with("_embeddings") {
        parts.push("weight".into());
    }
    Some((format!("{prefix}{}", parts.join(".")), transpose))
}

/// The converted (HF-named) tensors, stored in `stored`'s dtype. `forget_transpose` names one
/// HF key whose kernel is deliberately left untransposed.
fn hf_tensors(vars: &[Var], cfg: &BertConfig, head: Head, stored: Stored, forget_transpose: Option<&str>) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let mut out = HashMap::new();
    for v in vars {
        let Some((key, transpose)) = hf_key(&v.name, head) else { continue };
        let mut t = Tensor::from_slice(&v.values, v.shape.as_slice(), &dev).unwrap();
        if transpose && forget_transpose != Some(key.as_str()) {
            t = t.t().unwrap().contiguous().unwrap();
        }
        let t = match stored {
            Stored::F32 => t,
            Stored::F16 => t.to_dtype(candle_core::DType::F16).unwrap(),
            Stored::BF16 => t.to_dtype(candle_core::DType::BF16).unwrap(),
        };
        out.insert(key, t);
    }
    if head == Head::PreTraining && !cfg.tie_word_embeddings {
        let w = out[&format!("{}embeddings.word_embeddings.weight", head.prefix())].clone();
        out.insert("cls.predictions.decoder.weight".into(), w);
    }
    out
}

/// Per output: (name, max abs error, max |reference|).
fn compare(candle: &Outputs, reference: &Outputs) -> Vec<(String, f32, f32)> {
    assert_eq!(candle.names(), reference.names(), "output names and order");
    reference
        .0
        .iter()
        .map(|(name, r)| {
            let c = candle.get(name).unwrap();
            assert_eq!(c.shape, r.shape, "shape of {name}");
            assert_eq!(c.values.len(), r.values.len(), "length of {name}");
            let err = c.values.iter().zip(&r.values).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let scale = r.values.iter().map(|x| x.abs()).fold(0f32, f32::max);
            assert!(err.is_finite() && scale.is_finite(), "{name}: non-finite values");
            (name.clone(), err, scale)
        })
        .collect()
}

fn expected_names(cfg: &BertConfig, head: Head) -> Vec<String> {
    let mut names = vec!["embeddings".to_string()];
    names.extend((0..cfg.num_hidden_layers).map(|i| format!("layer.{i}")));
    if head.has_pooler() {
        names.push("pooler".into());
    }
    let tail: &[&str] = match head {
        Head::PreTraining => &["mlm_logits", "nsp_logits"],
        Head::SequenceClassification { .. } => &["logits"],
        Head::QuestionAnswering => &["start_logits", "end_logits"],
        Head::Base => &[],
    };
    names.extend(tail.iter().map(|s| s.to_string()));
    names
}

/// Builds a random model for `head`, runs both sides and returns (candle, reference) outputs.
fn run_both(cfg: &BertConfig, head: Head, stored: Stored, seed: u64, forget_transpose: Option<&str>) -> (Outputs, Outputs) {
    tfconv::tf_runtime::load().expect("TensorFlow runtime");
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("bert_model.ckpt");
    let prefix = prefix.to_str().unwrap();
    let vars = original_variables(cfg, head, seed, stored);
    let dtypes = save_checkpoint(prefix, &vars, stored);
    let probes = bert::probes::random(cfg, seed, 3, 12);

    let weights = tfconv_models::tf_graph::OriginalWeights::new(prefix, dtypes);
    let reference = bert::reference::forward(&weights, cfg, head, &probes.inputs).expect("reference forward");
    let tensors = hf_tensors(&vars, cfg, head, stored, forget_transpose);
    let vb = VarBuilder::from_tensors(tensors, candle_core::DType::F32, &Device::Cpu);
    let candle = bert::candle::forward(vb, cfg, head, &probes.inputs).expect("candle forward");
    (candle, reference)
}

fn assert_agree(label: &str, cfg: &BertConfig, head: Head, stored: Stored, seed: u64) {
    let (candle, reference) = run_both(cfg, head, stored, seed, None);
    assert_eq!(reference.names(), expected_names(cfg, head), "{label}: reference output names");
    // Shapes of the named outputs.
    let (b, s, h) = (3, 12, cfg.hidden_size);
    for (name, out) in &reference.0 {
        let expected: Vec<usize> = match name.as_str() {
            "pooler" | "nsp_logits" | "logits" => {
                let n = match name.as_str() {
                    "pooler" => h,
                    "nsp_logits" => 2,
                    _ => match head {
                        Head::SequenceClassification { num_labels } => num_labels,
                        _ => unreachable!(),
                    },
                };
                vec![b, n]
            }
            "mlm_logits" => vec![b, s, cfg.vocab_size],
            "start_logits" | "end_logits" => vec![b, s],
            _ => vec![b, s, h],
        };
        assert_eq!(out.shape, expected, "{label}: shape of {name}");
    }
    let mut failures = Vec::new();
    for (name, err, scale) in compare(&candle, &reference) {
        let tol = TOLERANCE * scale.max(1.0);
        eprintln!("[{label}] {name:>13}: max abs err {err:.3e}  (max|ref| {scale:.3}, tol {tol:.1e})");
        if err > tol {
            failures.push(format!("{name}: {err:.3e} > {tol:.1e}"));
        }
    }
    assert!(failures.is_empty(), "{label}: candle and TF disagree: {failures:?}");
}

#[test]
fn pretraining_gelu_f32_agrees() {
    assert_agree("pretraining/gelu/f32", &small_config("gelu", true), Head::PreTraining, Stored::F32, 1);
}

#[test]
fn pretraining_untied_decoder_agrees() {
    assert_agree("pretraining/untied/f32", &small_config("gelu", false), Head::PreTraining, Stored::F32, 2);
}

#[test]
fn classifier_gelu_new_agrees() {
    let head = Head::SequenceClassification { num_labels: 3 };
    assert_agree("classifier/gelu_new/f32", &small_config("gelu_new", true), head, Stored::F32, 3);
}

#[test]
fn squad_f16_checkpoint_agrees() {
    assert_agree("squad/gelu/f16", &small_config("gelu", true), Head::QuestionAnswering, Stored::F16, 4);
}

#[test]
fn base_relu_bf16_checkpoint_agrees() {
    assert_agree("base/relu/bf16", &small_config("relu", true), Head::Base, Stored::BF16, 5);
}

/// A conversion mistake (one square kernel not transposed) must show up, first at that layer.
#[test]
fn untransposed_kernel_is_caught_at_its_layer() {
    let cfg = small_config("gelu", true);
    let k = 1;
    let key = format!("bert.encoder.layer.{k}.attention.self.query.weight");
    let (candle, reference) = run_both(&cfg, Head::PreTraining, Stored::F32, 6, Some(&key));
    let errors = compare(&candle, &reference);
    for (name, err, scale) in &errors {
        eprintln!("[mistake: {key} untransposed] {name:>13}: max abs err {err:.3e} (max|ref| {scale:.3})");
    }
    let first_bad = errors.iter().find(|(_, err, scale)| *err > TOLERANCE * scale.max(1.0)).map(|e| e.0.clone());
    assert_eq!(first_bad.as_deref(), Some(format!("layer.{k}").as_str()), "first diverging output");
    let (_, err, scale) = errors.iter().find(|e| e.0 == format!("layer.{k}")).unwrap();
    assert!(*err > 1000.0 * TOLERANCE * scale.max(1.0), "layer.{k} diverges only by {err:.3e}");
}
