//! ALBERT in candle on HF's state-dict names (`AlbertForPreTraining` and friends). Each
//! [`Part`] loads only its own weights; a layer loads the inner layers of the group it runs.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

use super::{AlbertConfig, Head, Part};
use crate::candle_util::{self, Activation, LayerNorm};

/// Word + position + token type embeddings, LayerNorm (E wide), then the projection to H.
struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
    projection: Linear,
}

impl Embeddings {
    fn load(vb: &VarBuilder, cfg: &AlbertConfig) -> Result<Self> {
        let (e, emb) = (cfg.embedding_size, vb.pp("embeddings"));
        Ok(Self {
            word: candle_nn::embedding(cfg.vocab_size, e, emb.pp("word_embeddings"))?,
            position: candle_nn::embedding(cfg.max_position_embeddings, e, emb.pp("position_embeddings"))?,
            token_type: candle_nn::embedding(cfg.type_vocab_size, e, emb.pp("token_type_embeddings"))?,
            norm: candle_util::layer_norm(e, cfg.layer_norm_eps, emb.pp("LayerNorm"))?,
            projection: candle_util::linear(e, cfg.hidden_size, vb.pp("encoder.embedding_hidden_mapping_in"))?,
        })
    }

    fn forward(&self, ids: &Tensor, types: &Tensor) -> Result<Tensor> {
        let (_, s) = ids.dims2()?;
        let positions = Tensor::arange(0u32, s as u32, ids.device())?.unsqueeze(0)?;
        let x = (self.word.forward(ids)? + self.token_type.forward(types)?)?;
        let x = x.broadcast_add(&self.position.forward(&positions)?)?;
        self.projection.forward(&self.norm.forward(&x)?)
    }
}

/// `AlbertLayer`: post-LN attention then post-LN feed-forward.
struct AlbertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    attention_norm: LayerNorm,
    ffn: Linear,
    act: Activation,
    ffn_output: Linear,
    full_norm: LayerNorm,
    heads: usize,
    scale: f64,
}

impl AlbertLayer {
    fn load(vb: VarBuilder, cfg: &AlbertConfig) -> Result<Self> {
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let a = vb.pp("attention");
        Ok(Self {
            query: candle_util::linear(h, h, a.pp("query"))?,
            key: candle_util::linear(h, h, a.pp("key"))?,
            value: candle_util::linear(h, h, a.pp("value"))?,
            dense: candle_util::linear(h, h, a.pp("dense"))?,
            attention_norm: candle_util::layer_norm(h, eps, a.pp("LayerNorm"))?,
            ffn: candle_util::linear(h, i, vb.pp("ffn"))?,
            act: Activation::from_hf_name(&cfg.hidden_act)?,
            ffn_output: candle_util::linear(i, h, vb.pp("ffn_output"))?,
            full_norm: candle_util::layer_norm(h, eps, vb.pp("full_layer_layer_norm"))?,
            heads: cfg.num_attention_heads,
            scale: 1.0 / (cfg.head_dim() as f64).sqrt(),
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let heads = |l: &Linear| candle_util::split_heads(&l.forward(x)?, self.heads);
        let ctx = candle_util::attention(&heads(&self.query)?, &heads(&self.key)?, &heads(&self.value)?, Some(mask), self.scale)?;
        let attended = self.attention_norm.forward(&(self.dense.forward(&ctx)? + x)?)?;
        let ffn = self.ffn_output.forward(&self.act.forward(&self.ffn.forward(&attended)?)?)?;
        self.full_norm.forward(&(ffn + attended)?)
    }
}

/// `predictions`: dense H→E, activation, LayerNorm, then the decoder tied to the word embeddings.
struct MlmHead {
    dense: Linear,
    act: Activation,
    norm: LayerNorm,
    decoder: Linear,
}

impl MlmHead {
    fn load(vb: &VarBuilder, cfg: &AlbertConfig) -> Result<Self> {
        let (e, p) = (cfg.embedding_size, vb.pp("predictions"));
        let words = vb.pp("albert.embeddings.word_embeddings").get((cfg.vocab_size, e), "weight")?;
        Ok(Self {
            dense: candle_util::linear(cfg.hidden_size, e, p.pp("dense"))?,
            act: Activation::from_hf_name(&cfg.hidden_act)?,
            norm: candle_util::layer_norm(e, cfg.layer_norm_eps, p.pp("LayerNorm"))?,
            decoder: Linear::new(words, Some(p.get(cfg.vocab_size, "bias")?)),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.decoder.forward(&self.norm.forward(&self.act.forward(&self.dense.forward(x)?)?)?)
    }
}

/// The encoder's keys under `head`'s class.
fn encoder<'a>(vb: &VarBuilder<'a>, head: Head) -> VarBuilder<'a> {
    match head.prefix().trim_end_matches('.') {
        "" => vb.clone(),
        p => vb.pp(p),
    }
}

/// The HF tensors `part` loads, exactly as [`run_part`] asks for them.
pub fn hf_tensors(cfg: &AlbertConfig, head: Head, part: Part) -> Vec<String> {
    let pre = head.prefix();
    let wb = |m: &str| [format!("{m}.weight"), format!("{m}.bias")];
    match part {
        Part::Embeddings => {
            let e = format!("{pre}embeddings");
            let mut v = vec![format!("{e}.word_embeddings.weight"), format!("{e}.position_embeddings.weight"), format!("{e}.token_type_embeddings.weight")];
            v.extend(wb(&format!("{e}.LayerNorm")));
            v.extend(wb(&format!("{pre}encoder.embedding_hidden_mapping_in")));
            v
        }
        Part::Layer(l) => {
            let g = cfg.hf_group(l);
            let modules = ["attention.query", "attention.key", "attention.value", "attention.dense", "attention.LayerNorm", "ffn", "ffn_output", "full_layer_layer_norm"];
            (0..cfg.inner_group_num)
                .flat_map(|j| modules.iter().flat_map(move |m| wb(&format!("{pre}encoder.albert_layer_groups.{g}.albert_layers.{j}.{m}"))))
                .collect()
        }
        Part::Pooler => wb(&format!("{pre}pooler")).into(),
        Part::Mlm => {
            let mut v: Vec<String> = ["predictions.dense", "predictions.LayerNorm"].iter().flat_map(|m| wb(m)).collect();
            v.push("albert.embeddings.word_embeddings.weight".into());
            v.push("predictions.bias".into());
            v
        }
        Part::Sop => wb("sop_classifier.classifier").into(),
        Part::Classifier => wb("classifier").into(),
    }
}

/// Loads `part`'s weights and runs it on `inputs` (in the order of [`Part::inputs`]).
pub fn run_part(vb: &VarBuilder, cfg: &AlbertConfig, head: Head, part: Part, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let (enc, h) = (encoder(vb, head), cfg.hidden_size);
    Ok(match (part, inputs) {
        (Part::Embeddings, [ids, types]) => vec![Embeddings::load(&enc, cfg)?.forward(ids, types)?],
        (Part::Layer(l), [x, mask]) => {
            // transformers' grouping, which `check_hf_can_run` has made the original's.
            let group = enc.pp(format!("encoder.albert_layer_groups.{}.albert_layers", cfg.hf_group(l)));
            let mask = candle_util::additive_mask(mask)?;
            let mut x = x.clone();
            for j in 0..cfg.inner_group_num {
                x = AlbertLayer::load(group.pp(j), cfg)?.forward(&x, &mask)?;
            }
            vec![x]
        }
        (Part::Pooler, [x]) => vec![candle_util::linear(h, h, enc.pp("pooler"))?.forward(&candle_util::first_token(x)?)?.tanh()?],
        (Part::Mlm, [x]) => vec![MlmHead::load(vb, cfg)?.forward(x)?],
        (Part::Sop, [pooled]) => vec![candle_util::linear(h, 2, vb.pp("sop_classifier.classifier"))?.forward(pooled)?],
        (Part::Classifier, [pooled]) => {
            let Head::SequenceClassification { num_labels } = head else { candle_core::bail!("{} has no classifier", head.class_name()) };
            vec![candle_util::linear(h, num_labels, vb.pp("classifier"))?.forward(pooled)?]
        }
        _ => candle_core::bail!("wrong number of inputs ({}) for ALBERT stage {}", inputs.len(), part.name()),
    })
}
