//! XLM in candle on HF's state-dict names, as transformers' `XLMModel` computes it: embeddings
//! summed and normalised, post-LN layers, padded positions zeroed after the embeddings and after
//! every layer, masked keys filled with the dtype's minimum.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use super::{Part, XlmConfig, LAYER_NORM_EPS};
use crate::candle_util::{self, Activation};

/// The HF tensors `part` loads, exactly as [`run_part`] asks for them.
pub fn hf_tensors(cfg: &XlmConfig, part: Part) -> Vec<String> {
    let wb = |m: &str| [format!("{m}.weight"), format!("{m}.bias")];
    let t = "transformer";
    match part {
        Part::Embeddings => {
            let mut v = vec![format!("{t}.position_embeddings.weight")];
            if cfg.lang_embeddings() {
                v.push(format!("{t}.lang_embeddings.weight"));
            }
            v.push(format!("{t}.embeddings.weight"));
            v.extend(wb(&format!("{t}.layer_norm_emb")));
            v
        }
        Part::Layer(i) => {
            let mut v: Vec<String> = ["q_lin", "k_lin", "v_lin", "out_lin"].iter().flat_map(|m| wb(&format!("{t}.attentions.{i}.{m}"))).collect();
            v.extend(wb(&format!("{t}.layer_norm1.{i}")));
            v.extend(wb(&format!("{t}.ffns.{i}.lin1")));
            v.extend(wb(&format!("{t}.ffns.{i}.lin2")));
            v.extend(wb(&format!("{t}.layer_norm2.{i}")));
            v
        }
        Part::Lm => {
            let weight = if cfg.share_inout_emb { format!("{t}.embeddings.weight") } else { "pred_layer.proj.weight".into() };
            vec![weight, "pred_layer.proj.bias".into()]
        }
    }
}

/// [B, S] 0/1 → [B, S, 1] float, to zero padded positions.
fn keep(mask: &Tensor) -> Result<Tensor> {
    mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)
}

/// `MultiHeadAttention`, `TransformerFFN` and the two norms of layer `i`.
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm1: candle_util::LayerNorm,
    lin1: Linear,
    act: Activation,
    lin2: Linear,
    norm2: candle_util::LayerNorm,
    heads: usize,
}

impl Layer {
    fn load(t: &VarBuilder, cfg: &XlmConfig, i: usize) -> Result<Self> {
        let (d, h) = (cfg.emb_dim, cfg.hidden_dim());
        let a = t.pp(format!("attentions.{i}"));
        let f = t.pp(format!("ffns.{i}"));
        Ok(Layer {
            q: candle_util::linear(d, d, a.pp("q_lin"))?,
            k: candle_util::linear(d, d, a.pp("k_lin"))?,
            v: candle_util::linear(d, d, a.pp("v_lin"))?,
            out: candle_util::linear(d, d, a.pp("out_lin"))?,
            norm1: candle_util::layer_norm(d, LAYER_NORM_EPS, t.pp(format!("layer_norm1.{i}")))?,
            lin1: candle_util::linear(d, h, f.pp("lin1"))?,
            act: if cfg.gelu_activation { Activation::GeluErf } else { Activation::Relu },
            lin2: candle_util::linear(h, d, f.pp("lin2"))?,
            norm2: candle_util::layer_norm(d, LAYER_NORM_EPS, t.pp(format!("layer_norm2.{i}")))?,
            heads: cfg.n_heads,
        })
    }

    fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, s, d) = x.dims3()?;
        let heads = |l: &Linear| candle_util::split_heads(&l.forward(x)?, self.heads);
        let dh = d / self.heads;
        // q / √dh before the product, as both the original and HF scale it.
        let q = (heads(&self.q)? / (dh as f64).sqrt())?;
        let scores = q.matmul(&heads(&self.k)?.t()?.contiguous()?)?;
        let shape = scores.shape().clone();
        let visible = mask.ne(0i64)?.reshape((b, 1, 1, s))?.broadcast_as(&shape)?;
        let lowest = Tensor::new(f32::MIN, x.device())?.broadcast_as(&shape)?;
        let probs = candle_nn::ops::softmax_last_dim(&visible.where_cond(&scores, &lowest)?)?;
        let ctx = probs.matmul(&heads(&self.v)?)?.transpose(1, 2)?.contiguous()?.reshape((b, s, d))?;
        let x = self.norm1.forward(&(x + self.out.forward(&ctx)?)?)?;
        let ffn = self.lin2.forward(&self.act.forward(&self.lin1.forward(&x)?)?)?;
        self.norm2.forward(&(x + ffn)?)?.broadcast_mul(&keep(mask)?)
    }
}

/// Loads `part`'s weights and runs it on `inputs` (in the order of [`Part::inputs`]).
pub fn run_part(vb: &VarBuilder, cfg: &XlmConfig, part: Part, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let t = vb.pp("transformer");
    let d = cfg.emb_dim;
    Ok(match (part, inputs) {
        (Part::Embeddings, [ids, mask, langs @ ..]) => {
            let (_, s) = ids.dims2()?;
            if s > cfg.max_positions {
                candle_core::bail!("probe length {s} exceeds the model's {} positions", cfg.max_positions);
            }
            let positions = t.get((cfg.max_positions, d), "position_embeddings.weight")?.narrow(0, 0, s)?;
            let mut x = candle_nn::embedding(cfg.n_words, d, t.pp("embeddings"))?.forward(ids)?.broadcast_add(&positions)?;
            if let [langs] = langs {
                x = (x + candle_nn::embedding(cfg.n_langs, d, t.pp("lang_embeddings"))?.forward(langs)?)?;
            }
            let norm = candle_util::layer_norm(d, LAYER_NORM_EPS, t.pp("layer_norm_emb"))?;
            vec![norm.forward(&x)?.broadcast_mul(&keep(mask)?)?]
        }
        (Part::Layer(i), [x, mask]) => vec![Layer::load(&t, cfg, i)?.forward(x, mask)?],
        (Part::Lm, [x]) => {
            let weight = match cfg.share_inout_emb {
                true => t.get((cfg.n_words, d), "embeddings.weight")?,
                false => vb.get((cfg.n_words, d), "pred_layer.proj.weight")?,
            };
            vec![Linear::new(weight, Some(vb.get(cfg.n_words, "pred_layer.proj.bias")?)).forward(x)?]
        }
        _ => candle_core::bail!("wrong number of inputs ({}) for XLM stage {}", inputs.len(), part.name()),
    })
}
