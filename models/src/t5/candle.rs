//! T5 in candle on HF's state-dict names, computing as transformers' `T5ForConditionalGeneration`
//! does: pre-norm RMS blocks, unscaled attention with the relative position bias of block 0, the
//! v1.0 output rescale.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{Part, Stack, Sublayer, T5Config};
use crate::probe::{Probes, Rng};
use crate::stage::{Value, Values};

/// The probes: "input_ids" and "attention_mask" [B, S] (rows padded on the right, as T5's
/// inputs are), "decoder_input_ids" [B, T] starting with the start token 0.
pub fn probes(cfg: &T5Config, seed: u64, batch: usize, enc_len: usize, dec_len: usize) -> Probes {
    let mut rng = Rng::new(seed);
    let (s, t) = (enc_len.max(1), dec_len.max(1));
    let (mut ids, mut mask, mut dec) = (Vec::new(), Vec::new(), Vec::new());
    for b in 0..batch {
        let len = match b {
            0 => s,
            _ if b == batch - 1 => 1,
            _ => 1 + rng.below(s as u64) as usize,
        };
        for p in 0..s {
            ids.push(if p < len { 2 + rng.below(cfg.vocab_size as u64 - 2) as i64 } else { 0 });
            mask.push((p < len) as i64);
        }
        for p in 0..t {
            dec.push(if p == 0 { 0 } else { 2 + rng.below(cfg.vocab_size as u64 - 2) as i64 });
        }
    }
    let mut inputs = Values::default();
    inputs.push("input_ids", Value::Int { shape: vec![batch, s], data: ids });
    inputs.push("attention_mask", Value::Int { shape: vec![batch, s], data: mask });
    inputs.push("decoder_input_ids", Value::Int { shape: vec![batch, t], data: dec });
    Probes { seed, inputs }
}

fn block(stack: Stack, b: usize) -> String {
    format!("{}.block.{b}", stack.name())
}

/// The HF tensors `part` loads (a block also reads block 0's relative bias table).
pub fn hf_tensors(cfg: &T5Config, part: Part) -> Vec<String> {
    match part {
        Part::Embeddings(_) => vec!["shared.weight".into()],
        Part::Block(stack, b) => {
            let mut v = vec![format!("{}.layer.0.SelfAttention.relative_attention_bias.weight", block(stack, 0))];
            for &sub in Sublayer::of(stack) {
                let l = format!("{}.layer.{}", block(stack, b), sub.index(stack));
                v.push(format!("{l}.layer_norm.weight"));
                match sub {
                    Sublayer::SelfAttention | Sublayer::EncDecAttention => {
                        let class = if sub == Sublayer::SelfAttention { "SelfAttention" } else { "EncDecAttention" };
                        v.extend(["q", "k", "v", "o"].iter().map(|p| format!("{l}.{class}.{p}.weight")));
                    }
                    Sublayer::DenseReluDense => {
                        let wi: &[&str] = if cfg.gated() { &["wi_0", "wi_1"] } else { &["wi"] };
                        v.extend(wi.iter().chain(&["wo"]).map(|p| format!("{l}.DenseReluDense.{p}.weight")));
                    }
                }
            }
            v
        }
        Part::Output(stack) => vec![format!("{}.final_layer_norm.weight", stack.name())],
        Part::Lm => vec![if cfg.tie_word_embeddings { "shared.weight" } else { "lm_head.weight" }.into()],
    }
}

/// `T5LayerNorm`: x · rsqrt(mean(x²) + eps) · weight, no centring, no bias.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let variance = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
    x.broadcast_mul(&(variance + eps)?.sqrt()?.recip()?)?.broadcast_mul(weight)
}

/// HF's `_relative_position_bucket` for `relative` = key position − query position.
pub fn bucket(relative: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> usize {
    let mut buckets = num_buckets as i64;
    let mut base = 0;
    let n = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            base = buckets;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let exact = buckets / 2;
    if n < exact {
        return (base + n) as usize;
    }
    let large = exact + ((n as f32 / exact as f32).ln() / (max_distance as f32 / exact as f32).ln() * (buckets - exact) as f32) as i64;
    (base + large.min(buckets - 1)) as usize
}

/// The position bias [1, N, Sq, Sk] from block 0's table [buckets, N].
fn position_bias(table: &Tensor, cfg: &T5Config, q_len: usize, k_len: usize, bidirectional: bool, device: &Device) -> Result<Tensor> {
    let ids: Vec<u32> = (0..q_len)
        .flat_map(|i| (0..k_len).map(move |j| (i, j)))
        .map(|(i, j)| bucket(j as i64 - i as i64, bidirectional, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance) as u32)
        .collect();
    let ids = Tensor::from_vec(ids, (q_len * k_len,), device)?;
    table.index_select(&ids, 0)?.reshape((q_len, k_len, cfg.num_heads))?.permute((2, 0, 1))?.unsqueeze(0)
}

/// -1e9 where a key may not be attended to, [B, 1, Sq|1, Sk].
fn padding_mask(mask: &Tensor) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((b, 1, 1, s))
}

fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..t * t).map(|k| if k % t > k / t { -1e9 } else { 0.0 }).collect();
    Tensor::from_vec(data, (1, 1, t, t), device)
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    d_kv: usize,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &T5Config) -> Result<Self> {
        let (d, inner) = (cfg.d_model, cfg.inner());
        let lin = |name: &str, i: usize, o: usize| Ok::<_, candle_core::Error>(Linear::new(vb.get((o, i), &format!("{name}.weight"))?, None));
        Ok(Self { q: lin("q", d, inner)?, k: lin("k", d, inner)?, v: lin("v", d, inner)?, o: lin("o", inner, d)?, heads: cfg.num_heads, d_kv: cfg.d_kv })
    }

    /// `x` attends to `kv`; `bias` [1|B, N|1, Sq|1, Sk] is added to the unscaled scores.
    fn forward(&self, x: &Tensor, kv: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let split = |t: Tensor| -> Result<Tensor> {
            let (b, s, _) = t.dims3()?;
            t.reshape((b, s, self.heads, self.d_kv))?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = (split(self.q.forward(x)?)?, split(self.k.forward(kv)?)?, split(self.v.forward(kv)?)?);
        let scores = q.matmul(&k.transpose(2, 3)?.contiguous()?)?.broadcast_add(bias)?;
        let ctx = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
        let (b, n, s, k) = ctx.dims4()?;
        self.o.forward(&ctx.transpose(1, 2)?.contiguous()?.reshape((b, s, n * k))?)
    }
}

/// Loads `part`'s weights and runs it on `inputs` (in the order of [`Part::inputs`]).
pub fn run_part(vb: &VarBuilder, cfg: &T5Config, part: Part, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let eps = cfg.layer_norm_epsilon;
    Ok(match (part, inputs) {
        (Part::Embeddings(_), [ids]) => vec![candle_nn::embedding(cfg.vocab_size, cfg.d_model, vb.pp("shared"))?.forward(ids)?],
        (Part::Block(stack, b), [x, rest @ ..]) => {
            let device = x.device();
            let len = x.dim(1)?;
            let blk = vb.pp(block(stack, b));
            let table = vb.pp(block(stack, 0)).get((cfg.relative_attention_num_buckets, cfg.num_heads), "layer.0.SelfAttention.relative_attention_bias.weight")?;
            let (self_bias, cross) = match (stack, rest) {
                (Stack::Encoder, [mask]) => (position_bias(&table, cfg, len, len, true, device)?.broadcast_add(&padding_mask(mask)?)?, None),
                (Stack::Decoder, [encoded, mask]) => {
                    let bias = position_bias(&table, cfg, len, len, false, device)?.broadcast_add(&causal_mask(len, device)?)?;
                    (bias, Some((encoded, padding_mask(mask)?)))
                }
                _ => candle_core::bail!("wrong inputs for {}", part.name()),
            };
            let mut h = x.clone();
            for &sub in Sublayer::of(stack) {
                let l = blk.pp(format!("layer.{}", sub.index(stack)));
                let normed = rms_norm(&h, &l.get(cfg.d_model, "layer_norm.weight")?, eps)?;
                let y = match sub {
                    Sublayer::SelfAttention => Attention::load(l.pp("SelfAttention"), cfg)?.forward(&normed, &normed, &self_bias)?,
                    Sublayer::EncDecAttention => {
                        let (encoded, mask) = cross.as_ref().expect("the decoder has the encoder output");
                        Attention::load(l.pp("EncDecAttention"), cfg)?.forward(&normed, encoded, mask)?
                    }
                    Sublayer::DenseReluDense => {
                        let f = l.pp("DenseReluDense");
                        let w = |n: &str, i: usize, o: usize| Ok::<_, candle_core::Error>(Linear::new(f.get((o, i), &format!("{n}.weight"))?, None));
                        let hidden = match cfg.gated() {
                            true => (w("wi_0", cfg.d_model, cfg.d_ff)?.forward(&normed)?.gelu()? * w("wi_1", cfg.d_model, cfg.d_ff)?.forward(&normed)?)?,
                            false => w("wi", cfg.d_model, cfg.d_ff)?.forward(&normed)?.relu()?,
                        };
                        w("wo", cfg.d_ff, cfg.d_model)?.forward(&hidden)?
                    }
                };
                h = (h + y)?;
            }
            vec![h]
        }
        (Part::Output(stack), [x]) => vec![rms_norm(x, &vb.get(cfg.d_model, &format!("{}.final_layer_norm.weight", stack.name()))?, eps)?],
        (Part::Lm, [x]) => match cfg.tie_word_embeddings {
            // v1.0 decodes with the shared embedding, scaling the hidden state by d_model^-0.5.
            true => vec![(x * (cfg.d_model as f64).powf(-0.5))?.broadcast_matmul(&vb.get((cfg.vocab_size, cfg.d_model), "shared.weight")?.t()?)?],
            false => vec![x.broadcast_matmul(&vb.get((cfg.vocab_size, cfg.d_model), "lm_head.weight")?.t()?)?],
        },
        _ => candle_core::bail!("wrong number of inputs ({}) for T5 stage {}", inputs.len(), part.name()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket formula's fixed points (architectures.md §7.5).
    #[test]
    fn buckets_follow_the_documented_formula() {
        // Bidirectional: 16 per direction, exact below 8, logarithmic to 128.
        assert_eq!(bucket(0, true, 32, 128), 0);
        assert_eq!(bucket(-7, true, 32, 128), 7);
        assert_eq!(bucket(7, true, 32, 128), 16 + 7);
        assert_eq!(bucket(-8, true, 32, 128), 8);
        assert_eq!(bucket(-127, true, 32, 128), 15);
        assert_eq!(bucket(-1000, true, 32, 128), 15);
        assert_eq!(bucket(1000, true, 32, 128), 31);
        // Unidirectional: the future is bucket 0; 32 buckets for the past, exact below 16.
        assert_eq!(bucket(5, false, 32, 128), 0);
        assert_eq!(bucket(-15, false, 32, 128), 15);
        assert_eq!(bucket(-16, false, 32, 128), 16);
        assert_eq!(bucket(-500, false, 32, 128), 31);
        // ⌊ln(n/8)/ln(16)·8⌋ + 8 at n = 20: ln(2.5)/ln(16)·8 = 2.64 → 10.
        assert_eq!(bucket(-20, true, 32, 128), 10);
    }
}
