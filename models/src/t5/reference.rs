//! Mesh TensorFlow's T5 (`transformer.py`, `transformer_layers.py`, `attention.py`) as
//! TensorFlow graphs restoring the ORIGINAL checkpoint (bfloat16 variables cast to float32),
//! one per stage: pre-norm RMS sublayers, unscaled attention with the relative position bias of
//! block 0 bucketed by TF ops as `_relative_position_bucket` does, masks of -1e9, and the v1.0
//! decoder's `hidden * d_model^-0.5` before the shared softmax weights.

use anyhow::{bail, Result};
use tensorflow::{DataType, Output};

use super::{Names, Part, Stack, Sublayer, T5Config};
use crate::stage::{Stage, Values};
use crate::tf_graph::{self, GraphBuilder, OriginalWeights, Vars};

/// The original variables `part` reads.
pub fn original_vars(cfg: &T5Config, names: &Names, part: Part) -> Vec<String> {
    match part {
        Part::Embeddings(_) => vec!["shared/embedding".into()],
        Part::Block(stack, b) => {
            let mut v = vec![names.weight(stack, 0, Sublayer::SelfAttention, "relative_attention_bias")];
            for &sub in Sublayer::of(stack) {
                v.push(names.norm(stack, b, sub));
                match sub {
                    Sublayer::DenseReluDense => {
                        let wi: &[&str] = if cfg.gated() { &["wi_0", "wi_1"] } else { &["wi"] };
                        v.extend(wi.iter().chain(&["wo"]).map(|p| names.weight(stack, b, sub, &format!("{p}/kernel"))));
                    }
                    _ => v.extend(["q", "k", "v", "o"].iter().map(|p| names.weight(stack, b, sub, p))),
                }
            }
            v
        }
        Part::Output(stack) => vec![names.final_norm(stack)],
        Part::Lm => vec![if cfg.tie_word_embeddings { "shared/embedding" } else { "decoder/logits/kernel" }.into()],
    }
}

pub fn stage(cfg: &T5Config, names: &Names, weights: &OriginalWeights, part: Part, stage: &Stage, inputs: &Values) -> Result<Values> {
    tf_graph::run_stage(weights, stage, inputs, &["input_ids", "decoder_input_ids"], |g, vars, xs, fed| {
        let shapes: Vec<Vec<usize>> = fed.0.iter().map(|(_, v)| v.shape().to_vec()).collect();
        Graph { g, vars, cfg, names }.build(part, xs, &shapes)
    })
}

struct Graph<'a> {
    g: &'a mut GraphBuilder,
    vars: &'a Vars,
    cfg: &'a T5Config,
    names: &'a Names,
}

impl Graph<'_> {
    fn build(&mut self, part: Part, xs: &[Output], shapes: &[Vec<usize>]) -> Result<Vec<Output>> {
        let cfg = self.cfg;
        let d = cfg.d_model as i32;
        Ok(match (part, xs) {
            (Part::Embeddings(_), [ids]) => vec![self.g.gather(&self.vars.get("shared/embedding")?, ids)?],
            (Part::Block(stack, b), [x, rest @ ..]) => {
                let (batch, len) = (shapes[0][0], shapes[0][1]);
                let self_bias = self.position_bias(stack, len)?;
                let (self_bias, cross) = match (stack, rest) {
                    (Stack::Encoder, [mask]) => {
                        let m = self.key_padding(mask, batch, len)?;
                        (self.g.add(&self_bias, &m)?, None)
                    }
                    (Stack::Decoder, [encoded, mask]) => {
                        // Autoregressive: a query sees keys at or before itself.
                        let future: Vec<f32> = (0..len * len).map(|k| if k % len > k / len { -1e9 } else { 0.0 }).collect();
                        let future = self.g.const_f32(&[1, 1, len, len], &future)?;
                        let enc_len = shapes[1][1];
                        let m = self.key_padding(mask, batch, enc_len)?;
                        (self.g.add(&self_bias, &future)?, Some((encoded.clone(), enc_len, m)))
                    }
                    _ => bail!("wrong inputs for {}", part.name()),
                };
                let mut h = x.clone();
                for &sub in Sublayer::of(stack) {
                    let normed = self.rms_norm(&h, &self.names.norm(stack, b, sub))?;
                    let y = match sub {
                        Sublayer::SelfAttention => self.attention(stack, b, sub, &normed, &normed, batch, len, len, &self_bias)?,
                        Sublayer::EncDecAttention => {
                            let (encoded, enc_len, mask) = cross.as_ref().expect("the decoder has the encoder output");
                            self.attention(stack, b, sub, &normed, encoded, batch, len, *enc_len, mask)?
                        }
                        Sublayer::DenseReluDense => self.dense_relu_dense(stack, b, &normed, batch, len)?,
                    };
                    h = self.g.add(&h, &y)?;
                }
                vec![h]
            }
            (Part::Output(stack), [x]) => vec![self.rms_norm(x, &self.names.final_norm(stack))?],
            (Part::Lm, [x]) => {
                let (batch, len) = (shapes[0][0] as i32, shapes[0][1] as i32);
                let flat = self.g.reshape(x, &[-1, d])?;
                let logits = match cfg.tie_word_embeddings {
                    true => {
                        // VocabEmbedding.hidden_to_logits: hidden * d_model^-0.5, then the embedding.
                        let scale = self.g.scalar_f32((cfg.d_model as f32).powf(-0.5))?;
                        let scaled = self.g.mul(&flat, &scale)?;
                        self.g.matmul(&scaled, &self.vars.get("shared/embedding")?, false, true)?
                    }
                    false => self.g.matmul(&flat, &self.vars.get("decoder/logits/kernel")?, false, false)?,
                };
                vec![self.g.reshape(&logits, &[batch, len, cfg.vocab_size as i32])?]
            }
            _ => bail!("wrong number of inputs ({}) for T5 stage {}", xs.len(), part.name()),
        })
    }

    /// sublayer_rms_norm: x · rsqrt(mean(x²) + ε) · scale.
    fn rms_norm(&mut self, x: &Output, scale: &str) -> Result<Output> {
        let sq = self.g.mul(x, x)?;
        let variance = self.g.mean(&sq, &[-1], true)?;
        let eps = self.g.scalar_f32(self.cfg.layer_norm_epsilon as f32)?;
        let v = self.g.add(&variance, &eps)?;
        let inv = self.g.rsqrt(&v)?;
        let y = self.g.mul(x, &inv)?;
        self.g.mul(&y, &self.vars.get(scale)?)
    }

    /// (1 − mask) · −1e9 on the keys, [B, 1, 1, S].
    fn key_padding(&mut self, mask: &Output, batch: usize, len: usize) -> Result<Output> {
        let m = self.g.reshape(mask, &[batch as i32, 1, 1, len as i32])?;
        let one = self.g.scalar_f32(1.0)?;
        let inv = self.g.sub(&one, &m)?;
        let big = self.g.scalar_f32(-1e9)?;
        self.g.mul(&inv, &big)
    }

    /// The relative position bias [1, N, S, S] of a stack's self-attention: block 0's table
    /// [N, buckets] indexed by `_relative_position_bucket(key − query)`.
    fn position_bias(&mut self, stack: Stack, len: usize) -> Result<Output> {
        let cfg = self.cfg;
        let bidirectional = stack == Stack::Encoder;
        // n = −(memory_position − query_position).
        let n: Vec<i32> = (0..len * len).map(|k| (k / len) as i32 - (k % len) as i32).collect();
        let n = self.g.const_i32(&n)?;
        let mut buckets = cfg.relative_attention_num_buckets as i32;
        let zero = self.g.scalar_i32(0)?;
        let (base, n) = if bidirectional {
            buckets /= 2;
            let negative = self.g.apply("Less", &[&n, &zero])?;
            let negative = self.g.cast(&negative, DataType::Int32)?;
            let half = self.g.scalar_i32(buckets)?;
            let base = self.g.mul(&negative, &half)?;
            (Some(base), self.g.apply("Abs", &[&n])?)
        } else {
            (None, self.g.apply("Maximum", &[&n, &zero])?)
        };
        let exact = buckets / 2;
        let exact_t = self.g.scalar_i32(exact)?;
        let small = self.g.apply("Less", &[&n, &exact_t])?;
        let nf = self.g.cast(&n, DataType::Float)?;
        let exact_f = self.g.scalar_f32(exact as f32)?;
        let ratio = self.g.apply("RealDiv", &[&nf, &exact_f])?;
        let log = self.g.apply("Log", &[&ratio])?;
        let denominator = self.g.scalar_f32((cfg.relative_attention_max_distance as f64 / exact as f64).ln() as f32)?;
        let scaled = self.g.apply("RealDiv", &[&log, &denominator])?;
        let span = self.g.scalar_f32((buckets - exact) as f32)?;
        let scaled = self.g.mul(&scaled, &span)?;
        let large = self.g.cast(&scaled, DataType::Int32)?;
        let large = self.g.add(&exact_t, &large)?;
        let last = self.g.scalar_i32(buckets - 1)?;
        let large = self.g.apply("Minimum", &[&large, &last])?;
        let mut bucket = self.g.apply("SelectV2", &[&small, &n, &large])?;
        if let Some(base) = base {
            bucket = self.g.add(&base, &bucket)?;
        }
        let table = self.vars.get(&self.names.weight(stack, 0, Sublayer::SelfAttention, "relative_attention_bias"))?;
        let by_bucket = self.g.transpose(&table, &[1, 0])?; // [buckets, N]
        let bias = self.g.gather(&by_bucket, &bucket)?; // [S·S, N]
        let bias = self.g.reshape(&bias, &[len as i32, len as i32, cfg.num_heads as i32])?;
        let bias = self.g.transpose(&bias, &[2, 0, 1])?;
        self.g.reshape(&bias, &[1, cfg.num_heads as i32, len as i32, len as i32])
    }

    /// Unscaled multi-head attention of `x` [B, Sq, D] over `kv` [B, Sk, D] plus `bias`.
    #[allow(clippy::too_many_arguments)]
    fn attention(&mut self, stack: Stack, b: usize, sub: Sublayer, x: &Output, kv: &Output, batch: usize, q_len: usize, k_len: usize, bias: &Output) -> Result<Output> {
        let cfg = self.cfg;
        let (d, n, k) = (cfg.d_model as i32, cfg.num_heads as i32, cfg.d_kv as i32);
        let w = |g: &mut Graph, p: &str| g.vars.get(&g.names.weight(stack, b, sub, p));
        let x2 = self.g.reshape(x, &[-1, d])?;
        let kv2 = self.g.reshape(kv, &[-1, d])?;
        let heads = |g: &mut Graph, t: &Output, weight: Output, len: usize| -> Result<Output> {
            let y = g.g.matmul(t, &weight, false, false)?;
            let y = g.g.reshape(&y, &[batch as i32, len as i32, n, k])?;
            g.g.transpose(&y, &[0, 2, 1, 3])
        };
        let (wq, wk, wv) = (w(self, "q")?, w(self, "k")?, w(self, "v")?);
        let q = heads(self, &x2, wq, q_len)?;
        let kk = heads(self, &kv2, wk, k_len)?;
        let v = heads(self, &kv2, wv, k_len)?;
        let logits = self.g.batch_matmul(&q, &kk, false, true)?;
        let logits = self.g.add(&logits, bias)?;
        let weights = self.g.softmax(&logits)?;
        let ctx = self.g.batch_matmul(&weights, &v, false, false)?;
        let ctx = self.g.transpose(&ctx, &[0, 2, 1, 3])?;
        let ctx = self.g.reshape(&ctx, &[-1, n * k])?;
        let wo = w(self, "o")?;
        let out = self.g.matmul(&ctx, &wo, false, false)?;
        self.g.reshape(&out, &[batch as i32, q_len as i32, d])
    }

    /// DenseReluDense: relu(x·wi)·wo, or (v1.1) gelu(x·wi_0) ⊙ (x·wi_1) · wo with mtf's tanh gelu.
    fn dense_relu_dense(&mut self, stack: Stack, b: usize, x: &Output, batch: usize, len: usize) -> Result<Output> {
        let cfg = self.cfg;
        let d = cfg.d_model as i32;
        let w = |g: &mut Graph, p: &str| g.vars.get(&g.names.weight(stack, b, Sublayer::DenseReluDense, &format!("{p}/kernel")));
        let x2 = self.g.reshape(x, &[-1, d])?;
        let hidden = match cfg.gated() {
            true => {
                let (w0, w1) = (w(self, "wi_0")?, w(self, "wi_1")?);
                let a = self.g.matmul(&x2, &w0, false, false)?;
                let a = self.g.gelu_tanh(&a)?;
                let lin = self.g.matmul(&x2, &w1, false, false)?;
                self.g.mul(&a, &lin)?
            }
            false => {
                let wi = w(self, "wi")?;
                let a = self.g.matmul(&x2, &wi, false, false)?;
                self.g.relu(&a)?
            }
        };
        let wo = w(self, "wo")?;
        let out = self.g.matmul(&hidden, &wo, false, false)?;
        self.g.reshape(&out, &[batch as i32, len as i32, d])
    }
}
