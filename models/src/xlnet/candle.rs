//! XLNet in candle on HF's state-dict names, batch-major as transformers computes it: relative
//! attention with content, position (rel_shift) and segment terms, and the query stream.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{Head, Part, Xlnet, XlnetConfig};
use crate::candle_util::{self, Activation, LayerNorm};

const EPS: f64 = 1e-12;

/// The HF tensors `part` loads.
pub fn hf_tensors(part: Part) -> Vec<String> {
    let wb = |m: &str| [format!("{m}.weight"), format!("{m}.bias")];
    match part {
        // Every XLNet class holds `mask_emb`; only the query stream reads its values, but the
        // stage loads it either way (checking its shape), so no folder tensor goes unexamined.
        Part::Embeddings => vec!["transformer.word_embedding.weight".into(), "transformer.mask_emb".into()],
        Part::Layer(l) => {
            let a = format!("transformer.layer.{l}.rel_attn");
            let mut v: Vec<String> = ["q", "k", "v", "o", "r", "r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"].iter().map(|k| format!("{a}.{k}")).collect();
            v.extend(wb(&format!("{a}.layer_norm")));
            for m in ["layer_1", "layer_2", "layer_norm"] {
                v.extend(wb(&format!("transformer.layer.{l}.ff.{m}")));
            }
            v
        }
        Part::Lm => vec!["transformer.word_embedding.weight".into(), "lm_loss.bias".into()],
        Part::Summary => wb("sequence_summary.summary").into(),
        Part::Logits => wb("logits_proj").into(),
    }
}

/// The sinusoid encoding of relative positions klen … -qlen+1 (attn_type "bi"), [klen+qlen, D].
pub fn positions(qlen: usize, klen: usize, d_model: usize, device: &candle_core::Device) -> Result<Tensor> {
    let half = d_model / 2;
    let inv_freq: Vec<f32> = (0..half).map(|k| 1.0 / 10000f32.powf((2 * k) as f32 / d_model as f32)).collect();
    let mut data = Vec::with_capacity((klen + qlen) * d_model);
    for step in 0..klen + qlen {
        let pos = klen as f32 - step as f32;
        let angles: Vec<f32> = inv_freq.iter().map(|f| pos * f).collect();
        data.extend(angles.iter().map(|a| a.sin()));
        data.extend(angles.iter().map(|a| a.cos()));
    }
    Tensor::from_vec(data, (klen + qlen, d_model), device)
}

/// `XLNetRelativeAttention` and `XLNetFeedForward` of one layer.
struct Layer {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    r: Tensor,
    r_w_bias: Tensor,
    r_r_bias: Tensor,
    r_s_bias: Tensor,
    seg_embed: Tensor,
    attention_norm: LayerNorm,
    layer_1: Linear,
    act: Activation,
    layer_2: Linear,
    ff_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
}

/// What every layer of a pass shares: the position encoding, segment differences, masks.
struct Context {
    positions: Tensor,
    /// [B, 1, S, S] u8: 1 where query and key are in different segments.
    other_segment: Tensor,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &XlnetConfig, act: &str) -> Result<Self> {
        let (d, n, dh) = (cfg.d_model, cfg.n_head, cfg.d_head);
        let a = vb.pp("rel_attn");
        // HF keeps the original's [D, N, Dh] kernels; as matrices they are [D, N·Dh].
        let kernel = |k: &str| a.get((d, n, dh), k)?.reshape((d, n * dh));
        let ff = vb.pp("ff");
        Ok(Self {
            q: kernel("q")?,
            k: kernel("k")?,
            v: kernel("v")?,
            o: kernel("o")?,
            r: kernel("r")?,
            r_w_bias: a.get((n, dh), "r_w_bias")?,
            r_r_bias: a.get((n, dh), "r_r_bias")?,
            r_s_bias: a.get((n, dh), "r_s_bias")?,
            seg_embed: a.get((2, n, dh), "seg_embed")?,
            attention_norm: candle_util::layer_norm(d, EPS, a.pp("layer_norm"))?,
            layer_1: candle_util::linear(d, cfg.d_inner, ff.pp("layer_1"))?,
            act: Activation::from_hf_name(act)?,
            layer_2: candle_util::linear(cfg.d_inner, d, ff.pp("layer_2"))?,
            ff_norm: candle_util::layer_norm(d, EPS, ff.pp("layer_norm"))?,
            heads: n,
            head_dim: dh,
        })
    }

    /// [B, L, D] → [B, L, N, Dh] through a kernel.
    fn project(&self, x: &Tensor, kernel: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        x.broadcast_matmul(kernel)?.reshape((b, l, self.heads, self.head_dim))
    }

    /// `rel_attn_core`: q [B, I, N, Dh] against keys and values [B, J, N, Dh]; `mask` [B, 1, I, J]
    /// is 1 where attention is not allowed. Returns [B, I, N, Dh].
    fn core(&self, q: &Tensor, k: &Tensor, v: &Tensor, kr: &Tensor, ctx: &Context, mask: &Tensor) -> Result<Tensor> {
        let (b, i, n, dh) = q.dims4()?;
        let klen = k.dim(1)?;
        let heads_first = |x: &Tensor| x.transpose(1, 2)?.contiguous(); // [B, N, L, Dh]
        let biased = |bias: &Tensor| heads_first(&q.broadcast_add(bias)?);
        let ac = biased(&self.r_w_bias)?.matmul(&heads_first(k)?.transpose(2, 3)?.contiguous()?)?;
        // Position term against every relative distance, then shifted so column j is distance i - j.
        let kr_t = kr.permute((1, 2, 0))?.unsqueeze(0)?.broadcast_as((b, n, dh, kr.dim(0)?))?.contiguous()?;
        let bd = rel_shift(&biased(&self.r_r_bias)?.matmul(&kr_t)?, klen)?;
        // Segment term: one of two learned scores per pair, by whether the segments differ.
        let seg_t = self.seg_embed.permute((1, 2, 0))?.unsqueeze(0)?.broadcast_as((b, n, dh, 2))?.contiguous()?;
        let ef = biased(&self.r_s_bias)?.matmul(&seg_t)?; // [B, N, I, 2]
        let shape = (b, n, i, klen);
        let same = ef.narrow(3, 0, 1)?.broadcast_as(shape)?;
        let other = ef.narrow(3, 1, 1)?.broadcast_as(shape)?;
        let ef = ctx.other_segment.broadcast_as(shape)?.where_cond(&other, &same)?;
        let score = (((ac + bd)? + ef)? * (1.0 / (dh as f64).sqrt()))?;
        let score = (score - mask.broadcast_as(shape)? * 1e30)?;
        let prob = candle_nn::ops::softmax_last_dim(&score)?;
        prob.matmul(&heads_first(v)?)?.transpose(1, 2)?.contiguous()
    }

    /// `post_attention`: the output projection, residual, LayerNorm.
    fn post(&self, residual: &Tensor, vec: &Tensor) -> Result<Tensor> {
        let (b, l, n, dh) = vec.dims4()?;
        let out = vec.reshape((b, l, n * dh))?.broadcast_matmul(&self.o.t()?)?;
        self.attention_norm.forward(&(out + residual)?)
    }

    fn ff(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.layer_2.forward(&self.act.forward(&self.layer_1.forward(x)?)?)?;
        self.ff_norm.forward(&(y + x)?)
    }

    /// The content stream alone.
    fn forward(&self, h: &Tensor, ctx: &Context, mask: &Tensor) -> Result<Tensor> {
        let kr = self.project(&ctx.positions.unsqueeze(0)?, &self.r)?.squeeze(0)?;
        let vec = self.core(&self.project(h, &self.q)?, &self.project(h, &self.k)?, &self.project(h, &self.v)?, &kr, ctx, mask)?;
        self.ff(&self.post(h, &vec)?)
    }

    /// Both streams: the query stream `g` [B, P, D] attends to the content stream's keys at the
    /// positions `mapping` [B, P, S] names.
    fn forward_two(&self, h: &Tensor, g: &Tensor, mapping: &Tensor, ctx: &Context, mask_h: &Tensor, mask_g: &Tensor) -> Result<(Tensor, Tensor)> {
        let kr = self.project(&ctx.positions.unsqueeze(0)?, &self.r)?.squeeze(0)?;
        let (k, v) = (self.project(h, &self.k)?, self.project(h, &self.v)?);
        let vec_h = self.core(&self.project(h, &self.q)?, &k, &v, &kr, ctx, mask_h)?;
        let h_out = self.ff(&self.post(h, &vec_h)?)?;
        let (b, p, n, dh) = self.project(g, &self.q)?.dims4()?;
        let s = h.dim(1)?;
        let q_g = self.project(g, &self.q)?.reshape((b, p, n * dh))?;
        let q_g = mapping.transpose(1, 2)?.contiguous()?.matmul(&q_g)?.reshape((b, s, n, dh))?;
        let vec_g = self.core(&q_g, &k, &v, &kr, ctx, mask_g)?.reshape((b, s, n * dh))?;
        let vec_g = mapping.matmul(&vec_g)?.reshape((b, p, n, dh))?;
        let g_out = self.ff(&self.post(g, &vec_g)?)?;
        Ok((h_out, g_out))
    }
}

/// HF's `rel_shift_bnij`: [B, N, I, R] → [B, N, I, klen], column j holding relative distance i - j.
fn rel_shift(x: &Tensor, klen: usize) -> Result<Tensor> {
    let (b, n, i, r) = x.dims4()?;
    x.reshape((b, n, r, i))?.narrow(2, 1, r - 1)?.reshape((b, n, i, r - 1))?.narrow(3, 0, klen)?.contiguous()
}

/// 1 where a query may not attend to a key, [B, 1, S, S]: keys that are padding (`attention_mask`
/// 0) or hidden by `perm`; the content stream (`content`) may always see its own position.
fn attention_mask(attention_mask: &Tensor, perm: Option<&Tensor>, content: bool) -> Result<Tensor> {
    let (b, s) = attention_mask.dims2()?;
    let padding = (1.0 - attention_mask.to_dtype(DType::F32)?)?.reshape((b, 1, s))?.broadcast_as((b, s, s))?;
    let mut data = match perm {
        Some(p) => (padding + p)?,
        None => padding.contiguous()?,
    };
    data = data.gt(0.0)?.to_dtype(DType::F32)?;
    if content {
        let eye = Tensor::eye(s, DType::F32, attention_mask.device())?;
        data = data.broadcast_sub(&eye)?.gt(0.0)?.to_dtype(DType::F32)?;
    }
    data.unsqueeze(1)
}

fn context(types: &Tensor, d_model: usize) -> Result<Context> {
    let (b, s) = types.dims2()?;
    let rows = types.reshape((b, s, 1))?.broadcast_as((b, s, s))?;
    let cols = types.reshape((b, 1, s))?.broadcast_as((b, s, s))?;
    Ok(Context { positions: positions(s, s, d_model, types.device())?, other_segment: rows.ne(&cols)?.unsqueeze(1)? })
}

/// Loads `part`'s weights and runs it on `inputs` (in the order of [`Part::inputs`]).
pub fn run_part(vb: &VarBuilder, model: &Xlnet, part: Part, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let cfg = &model.cfg;
    let t = vb.pp("transformer");
    Ok(match (part, inputs) {
        (Part::Embeddings, [ids]) => {
            t.get((1, 1, cfg.d_model), "mask_emb")?;
            vec![candle_nn::embedding(cfg.n_token, cfg.d_model, t.pp("word_embedding"))?.forward(ids)?]
        }
        (Part::Embeddings, [ids, mapping]) => {
            let words = candle_nn::embedding(cfg.n_token, cfg.d_model, t.pp("word_embedding"))?.forward(ids)?;
            let (b, p, _) = mapping.dims3()?;
            let query = t.get((1, 1, cfg.d_model), "mask_emb")?.broadcast_as((b, p, cfg.d_model))?.contiguous()?;
            vec![words, query]
        }
        (Part::Layer(l), [h, types, mask]) => {
            let layer = Layer::load(t.pp(format!("layer.{l}")), cfg, &model.hf_act)?;
            vec![layer.forward(h, &context(types, cfg.d_model)?, &attention_mask(mask, None, true)?)?]
        }
        (Part::Layer(l), [h, types, mask, h_perm, g, perm, mapping]) => {
            let layer = Layer::load(t.pp(format!("layer.{l}")), cfg, &model.hf_act)?;
            let ctx = context(types, cfg.d_model)?;
            let content = layer.forward(h, &ctx, &attention_mask(mask, None, true)?)?;
            let (mask_h, mask_g) = (attention_mask(mask, Some(perm), true)?, attention_mask(mask, Some(perm), false)?);
            let (h_perm, g) = layer.forward_two(h_perm, g, mapping, &ctx, &mask_h, &mask_g)?;
            vec![content, h_perm, g]
        }
        (Part::Lm, streams) => {
            let words = t.get((cfg.n_token, cfg.d_model), "word_embedding.weight")?;
            let lm = Linear::new(words, Some(vb.get(cfg.n_token, "lm_loss.bias")?));
            streams.iter().map(|x| lm.forward(x)).collect::<Result<_>>()?
        }
        (Part::Summary, [h]) => {
            let last = h.narrow(1, h.dim(1)? - 1, 1)?.squeeze(1)?;
            vec![candle_util::linear(cfg.d_model, cfg.d_model, vb.pp("sequence_summary.summary"))?.forward(&last)?.tanh()?]
        }
        (Part::Logits, [summary]) => {
            let Head::SequenceClassification { num_labels, .. } = model.head else { candle_core::bail!("{} has no logits_proj", model.head.class_name()) };
            vec![candle_util::linear(cfg.d_model, num_labels, vb.pp("logits_proj"))?.forward(summary)?]
        }
        _ => candle_core::bail!("wrong number of inputs ({}) for XLNet stage {}", inputs.len(), part.name()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rel_shift moves row i's window so that column j holds relative distance i - j: with the
    /// positions klen … -qlen+1 laid out per row, the shifted score for (i, j) is the one computed
    /// against distance i - j.
    #[test]
    fn rel_shift_aligns_relative_distances() {
        let (i, klen) = (3usize, 3usize);
        let r = klen + i;
        // x[.., q, c] = the distance column c stands for: klen - c.
        let data: Vec<f32> = (0..i).flat_map(|_| (0..r).map(|c| klen as f32 - c as f32)).collect();
        let x = Tensor::from_vec(data, (1, 1, i, r), &candle_core::Device::Cpu).unwrap();
        let shifted = rel_shift(&x, klen).unwrap().squeeze(0).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        for (q, row) in shifted.iter().enumerate() {
            for (k, &d) in row.iter().enumerate() {
                assert_eq!(d, q as f32 - k as f32, "query {q} key {k}");
            }
        }
    }
}
