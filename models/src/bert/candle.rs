//! BERT in candle, reading the converted weights by HF's state-dict names, with every
//! intermediate the verifier compares exposed as a named output.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

use super::{BertConfig, Head};
use crate::candle_util::{self, Activation, LayerNorm};
use crate::probe::{Outputs, Probes};

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
    fn load(vb: VarBuilder, word_embeddings: &Tensor, cfg: &BertConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let t = vb.pp("transform");
        let decoder_weight = if cfg.tie_word_embeddings {
            word_embeddings.clone()
        } else {
            vb.get((cfg.vocab_size, h), "decoder.weight")?
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

enum HeadModule {
    PreTraining { mlm: MlmHead, nsp: Linear },
    Classifier(Linear),
    QuestionAnswering(Linear),
    None,
}

/// Runs BERT with `head` on `probes`, returning "embeddings", "layer.{i}", "pooler" (if the
/// class has one) and the head's logits, all f32.
pub fn forward(vb: VarBuilder, cfg: &BertConfig, head: Head, probes: &Probes) -> Result<Outputs> {
    let vb = vb.set_dtype(DType::F32);
    let device = vb.device().clone();
    let h = cfg.hidden_size;
    let enc = match head.prefix().trim_end_matches('.') {
        "" => vb.clone(),
        p => vb.pp(p),
    };

    let embeddings = Embeddings::load(enc.pp("embeddings"), cfg)?;
    let layers = (0..cfg.num_hidden_layers)
        .map(|i| Layer::load(enc.pp(format!("encoder.layer.{i}")), cfg))
        .collect::<Result<Vec<_>>>()?;
    let pooler = if head.has_pooler() { Some(candle_util::linear(h, h, enc.pp("pooler.dense"))?) } else { None };
    let head_module = match head {
        Head::PreTraining => HeadModule::PreTraining {
            mlm: MlmHead::load(vb.pp("cls.predictions"), embeddings.word.embeddings(), cfg)?,
            nsp: candle_util::linear(h, 2, vb.pp("cls.seq_relationship"))?,
        },
        Head::SequenceClassification { num_labels } => {
            HeadModule::Classifier(candle_util::linear(h, num_labels, vb.pp("classifier"))?)
        }
        Head::QuestionAnswering => HeadModule::QuestionAnswering(candle_util::linear(h, 2, vb.pp("qa_outputs"))?),
        Head::Base => HeadModule::None,
    };

    let (b, s) = (probes.batch, probes.seq_len);
    let ids = candle_util::probe_tensor(&probes.input_ids, b, s, &device)?;
    let types = candle_util::probe_tensor(&probes.token_type_ids, b, s, &device)?;
    let mask = candle_util::additive_mask(&candle_util::probe_tensor(&probes.attention_mask, b, s, &device)?)?;

    let mut outputs = Outputs::default();
    let mut push = |name: String, t: &Tensor| -> Result<()> {
        let (shape, values) = candle_util::to_output(t)?;
        outputs.push(name, shape, values);
        Ok(())
    };

    let mut x = embeddings.forward(&ids, &types)?;
    push("embeddings".into(), &x)?;
    for (i, layer) in layers.iter().enumerate() {
        x = layer.forward(&x, &mask)?;
        push(format!("layer.{i}"), &x)?;
    }
    let pooled = match &pooler {
        Some(dense) => {
            let p = dense.forward(&candle_util::first_token(&x)?)?.tanh()?;
            push("pooler".into(), &p)?;
            Some(p)
        }
        None => None,
    };
    let pooled = || pooled.clone().ok_or_else(|| candle_core::Error::Msg("this head needs the pooler".into()));
    match &head_module {
        HeadModule::PreTraining { mlm, nsp } => {
            push("mlm_logits".into(), &mlm.forward(&x)?)?;
            push("nsp_logits".into(), &nsp.forward(&pooled()?)?)?;
        }
        HeadModule::Classifier(classifier) => push("logits".into(), &classifier.forward(&pooled()?)?)?,
        HeadModule::QuestionAnswering(qa) => {
            let logits = qa.forward(&x)?; // [B, S, 2]
            push("start_logits".into(), &logits.narrow(2, 0, 1)?.squeeze(2)?)?;
            push("end_logits".into(), &logits.narrow(2, 1, 1)?.squeeze(2)?)?;
        }
        HeadModule::None => {}
    }
    Ok(outputs)
}
