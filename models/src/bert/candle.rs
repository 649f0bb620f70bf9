//! BERT in candle, reading the converted weights by HF's state-dict names, with every
//! intermediate the verifier compares exposed as a named output. Each [`Part`] loads only its
//! own weights, so a stage runs alone and the whole model is every part in turn.

use std::collections::HashMap;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

use super::{parts, BertConfig, Head, Part};
use crate::candle_util::{self, Activation, LayerNorm};
use crate::probe::Outputs;
use crate::stage::{Stage, Values};

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            word: candle_nn::embedding(cfg.vocab_size, h, vb.pp("word_embeddings"))?,
            position: candle_nn::embedding(cfg.max_position_embeddings, h, vb.pp("position_embeddings"))?,
            token_type: candle_nn::embedding(cfg.type_vocab_size, h, vb.pp("token_type_embeddings"))?,
            norm: candle_util::layer_norm(h, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, ids: &Tensor, types: &Tensor) -> Result<Tensor> {
        let (_, s) = ids.dims2()?;
        let positions = Tensor::arange(0u32, s as u32, ids.device())?.unsqueeze(0)?;
        let x = (self.word.forward(ids)? + self.token_type.forward(types)?)?;
        let x = x.broadcast_add(&self.position.forward(&positions)?)?;
        self.norm.forward(&x)
    }
}

struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    heads: usize,
    scale: f64,
}

impl SelfAttention {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        if cfg.num_attention_heads == 0 || !h.is_multiple_of(cfg.num_attention_heads) {
            candle_core::bail!("hidden_size {h} is not a multiple of num_attention_heads {}", cfg.num_attention_heads);
        }
        Ok(Self {
            query: candle_util::linear(h, h, vb.pp("query"))?,
            key: candle_util::linear(h, h, vb.pp("key"))?,
            value: candle_util::linear(h, h, vb.pp("value"))?,
            heads: cfg.num_attention_heads,
            scale: 1.0 / (cfg.head_dim() as f64).sqrt(),
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let q = candle_util::split_heads(&self.query.forward(x)?, self.heads)?;
        let k = candle_util::split_heads(&self.key.forward(x)?, self.heads)?;
        let v = candle_util::split_heads(&self.value.forward(x)?, self.heads)?;
        candle_util::attention(&q, &k, &v, Some(mask), self.scale)
    }
}

/// A dense projection followed by residual + LayerNorm (HF's `BertSelfOutput` / `BertOutput`).
struct DenseResidualNorm {
    dense: Linear,
    norm: LayerNorm,
}

impl DenseResidualNorm {
    fn load(vb: VarBuilder, in_dim: usize, cfg: &BertConfig) -> Result<Self> {
        Ok(Self {
            dense: candle_util::linear(in_dim, cfg.hidden_size, vb.pp("dense"))?,
            norm: candle_util::layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.norm.forward(&(self.dense.forward(x)? + residual)?)
    }
}

struct Layer {
    attention: SelfAttention,
    attention_output: DenseResidualNorm,
    intermediate: Linear,
    act: Activation,
    output: DenseResidualNorm,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &BertConfig) -> Result<Self> {
        Ok(Self {
            attention: SelfAttention::load(vb.pp("attention.self"), cfg)?,
            attention_output: DenseResidualNorm::load(vb.pp("attention.output"), cfg.hidden_size, cfg)?,
            intermediate: candle_util::linear(cfg.hidden_size, cfg.intermediate_size, vb.pp("intermediate.dense"))?,
            act: Activation::from_hf_name(&cfg.hidden_act)?,
            output: DenseResidualNorm::load(vb.pp("output"), cfg.intermediate_size, cfg)?,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let attended = self.attention_output.forward(&self.attention.forward(x, mask)?, x)?;
        let inner = self.act.forward(&self.intermediate.forward(&attended)?)?;
        self.output.forward(&inner, &attended)
    }
}

/// `cls.predictions`: transform (dense + act + LayerNorm), then the decoder onto the vocabulary.
struct MlmHead {
    dense: Linear,
    act: Activation,
    norm: LayerNorm,
    decoder: Linear,
}

impl MlmHead {
    fn load(vb: VarBuilder, word_embeddings: &VarBuilder, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let t = vb.pp("transform");
        let decoder_weight = match cfg.tie_word_embeddings {
            true => word_embeddings.get((cfg.vocab_size, h), "weight")?,
            false => vb.get((cfg.vocab_size, h), "decoder.weight")?,
        };
        Ok(Self {
            dense: candle_util::linear(h, h, t.pp("dense"))?,
            act: Activation::from_hf_name(&cfg.hidden_act)?,
            norm: candle_util::layer_norm(h, cfg.layer_norm_eps, t.pp("LayerNorm"))?,
            decoder: Linear::new(decoder_weight, Some(vb.get(cfg.vocab_size, "bias")?)),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let t = self.norm.forward(&self.act.forward(&self.dense.forward(x)?)?)?;
        self.decoder.forward(&t)
    }
}

/// The prefix of the encoder's keys in the HF state dict of `head`'s class.
fn encoder<'a>(vb: &VarBuilder<'a>, head: Head) -> VarBuilder<'a> {
    match head.prefix().trim_end_matches('.') {
        "" => vb.clone(),
        p => vb.pp(p),
    }
}

/// The HF tensors `part` loads, exactly as [`PartModule::load`] asks for them.
pub fn hf_tensors(cfg: &BertConfig, head: Head, part: Part) -> Vec<String> {
    let pre = head.prefix();
    let wb = |m: &str| [format!("{m}.weight"), format!("{m}.bias")];
    match part {
        Part::Embeddings => {
            let e = format!("{pre}embeddings");
            [format!("{e}.word_embeddings.weight"), format!("{e}.position_embeddings.weight"), format!("{e}.token_type_embeddings.weight")]
                .into_iter()
                .chain(wb(&format!("{e}.LayerNorm")))
                .collect()
        }
        Part::Layer(i) => [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ]
        .iter()
        .flat_map(|m| wb(&format!("{pre}encoder.layer.{i}.{m}")))
        .collect(),
        Part::Pooler => wb(&format!("{pre}pooler.dense")).into(),
        Part::Mlm => {
            let mut v: Vec<String> = ["dense", "LayerNorm"].iter().flat_map(|m| wb(&format!("cls.predictions.transform.{m}"))).collect();
            v.push(match cfg.tie_word_embeddings {
                true => format!("{pre}embeddings.word_embeddings.weight"),
                false => "cls.predictions.decoder.weight".into(),
            });
            v.push("cls.predictions.bias".into());
            v
        }
        Part::Nsp => wb("cls.seq_relationship").into(),
        Part::Classifier => wb("classifier").into(),
        Part::Qa => wb("qa_outputs").into(),
    }
}

/// The weights of one part, loaded on their own.
enum PartModule {
    Embeddings(Embeddings),
    Layer(Layer),
    Pooler(Linear),
    Mlm(MlmHead),
    /// NSP and classifier: a linear map of the pooled output.
    Pooled(Linear),
    Qa(Linear),
}

impl PartModule {
    fn load(vb: &VarBuilder, cfg: &BertConfig, head: Head, part: Part) -> Result<Self> {
        let (enc, h) = (encoder(vb, head), cfg.hidden_size);
        Ok(match part {
            Part::Embeddings => Self::Embeddings(Embeddings::load(enc.pp("embeddings"), cfg)?),
            Part::Layer(i) => Self::Layer(Layer::load(enc.pp(format!("encoder.layer.{i}")), cfg)?),
            Part::Pooler => Self::Pooler(candle_util::linear(h, h, enc.pp("pooler.dense"))?),
            Part::Mlm => {
                // Tied: the decoder is the word embedding matrix, read under its own name.
                let words = enc.pp("embeddings.word_embeddings");
                Self::Mlm(MlmHead::load(vb.pp("cls.predictions"), &words, cfg)?)
            }
            Part::Nsp => Self::Pooled(candle_util::linear(h, 2, vb.pp("cls.seq_relationship"))?),
            Part::Classifier => {
                let Head::SequenceClassification { num_labels } = head else {
                    candle_core::bail!("{} has no classifier", head.class_name())
                };
                Self::Pooled(candle_util::linear(h, num_labels, vb.pp("classifier"))?)
            }
            Part::Qa => Self::Qa(candle_util::linear(h, 2, vb.pp("qa_outputs"))?),
        })
    }

    /// `inputs` in the order of [`Part::inputs`]; outputs in the order of [`Part::outputs`].
    fn forward(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        Ok(match (self, inputs) {
            (Self::Embeddings(e), [ids, types]) => vec![e.forward(ids, types)?],
            (Self::Layer(l), [x, mask]) => vec![l.forward(x, &candle_util::additive_mask(mask)?)?],
            (Self::Pooler(dense), [x]) => vec![dense.forward(&candle_util::first_token(x)?)?.tanh()?],
            (Self::Mlm(mlm), [x]) => vec![mlm.forward(x)?],
            (Self::Pooled(dense), [pooled]) => vec![dense.forward(pooled)?],
            (Self::Qa(qa), [x]) => {
                let logits = qa.forward(x)?; // [B, S, 2]
                vec![logits.narrow(2, 0, 1)?.squeeze(2)?, logits.narrow(2, 1, 1)?.squeeze(2)?]
            }
            _ => candle_core::bail!("wrong number of inputs ({}) for this BERT stage", inputs.len()),
        })
    }
}

/// Loads `part`'s weights from `vb` and runs it on `inputs` (in the order of [`Part::inputs`]).
fn run_part(vb: &VarBuilder, cfg: &BertConfig, head: Head, part: Part, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    PartModule::load(vb, cfg, head, part)?.forward(inputs)
}

/// One stage on `inputs` (at least `stage.inputs`), loading only that stage's weights.
pub fn stage(vb: VarBuilder, cfg: &BertConfig, head: Head, part: Part, stage: &Stage, inputs: &Values) -> Result<Values> {
    candle_util::run_stage(vb, stage, inputs, |vb, xs| run_part(vb, cfg, head, part, xs))
}

/// Runs BERT with `head` on the probe `inputs` (see [`super::probes`]), returning "embeddings",
/// "layer.{i}", "pooler" (if the class has one) and the head's logits, all f32: every part in
/// order, each on the tensors the parts before it produced.
pub fn forward(vb: VarBuilder, cfg: &BertConfig, head: Head, inputs: &Values) -> Result<Outputs> {
    let vb = vb.set_dtype(DType::F32);
    let mut known: HashMap<String, Tensor> = HashMap::new();
    for (name, value) in &inputs.0 {
        known.insert(name.clone(), value.to_tensor(vb.device())?);
    }
    let mut outputs = Outputs::default();
    for part in parts(cfg, head) {
        let inputs = part
            .inputs(cfg)
            .iter()
            .map(|n| known.get(n).cloned().ok_or_else(|| candle_core::Error::msg(format!("no value {n} for {}", part.name()))))
            .collect::<Result<Vec<_>>>()?;
        for (name, t) in part.outputs().into_iter().zip(run_part(&vb, cfg, head, part, &inputs)?) {
            let (shape, values) = candle_util::to_output(&t)?;
            outputs.push(name.clone(), shape, values);
            known.insert(name, t);
        }
    }
    Ok(outputs)
}
