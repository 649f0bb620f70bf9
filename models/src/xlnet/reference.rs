//! The original XLNet (zihangdai/xlnet `modeling.py` `transformer_xl`, `rel_multihead_attn`,
//! `two_stream_rel_attn`, `lm_loss`, `summarize_sequence`; `function_builder.py` heads) as
//! TensorFlow graphs restoring the ORIGINAL checkpoint, one per stage. Inside a stage the layout
//! is the original's time-major [len, bsz, …]; stage inputs and outputs are batch-major, like
//! the candle side's, and transposed at the edges.

use anyhow::{bail, Result};
use tensorflow::{DataType, Output};

use super::{Head, Part, Xlnet, T};
use crate::stage::{Stage, Values};
use crate::tf_graph::{self, GraphBuilder, OriginalWeights, Vars};

/// The original variables `part` reads (those the checkpoint has; what it lacks, the graph
/// replaces with the zeros tfconv writes).
pub fn original_vars(model: &Xlnet, part: Part) -> Vec<String> {
    let mut v = Vec::new();
    match part {
        Part::Embeddings => {
            v.push(format!("{T}/word_embedding/lookup_table"));
            if model.two_stream() && model.has_mask_emb {
                v.push(format!("{T}/mask_emb/mask_emb"));
            }
        }
        Part::Layer(l) => {
            v.extend(["q", "k", "v", "o", "r"].iter().map(|k| format!("{T}/layer_{l}/rel_attn/{k}/kernel")));
            for n in ["rel_attn/LayerNorm", "ff/LayerNorm"] {
                v.extend(["gamma", "beta"].iter().map(|p| format!("{T}/layer_{l}/{n}/{p}")));
            }
            for d in ["layer_1", "layer_2"] {
                v.extend(["kernel", "bias"].iter().map(|p| format!("{T}/layer_{l}/ff/{d}/{p}")));
            }
            v.extend([format!("{T}/r_w_bias"), format!("{T}/r_r_bias")]);
            if model.has_segments {
                v.extend([format!("{T}/r_s_bias"), format!("{T}/seg_embed")]);
            }
        }
        Part::Lm => {
            v.push(format!("{T}/word_embedding/lookup_table"));
            if model.has_lm_bias {
                v.push("model/lm_loss/bias".into());
            }
        }
        Part::Summary => v.extend(["kernel", "bias"].iter().map(|p| format!("model/sequnece_summary/summary/{p}"))),
        Part::Logits => {
            if let Some(scope) = model.head.logit_scope() {
                v.extend(["kernel", "bias"].iter().map(|p| format!("{scope}/{p}")));
            }
        }
    }
    v
}

/// Sizes of a stage's tensors, read off what it is fed.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    len: usize,
    /// P, the number of predictions, when the stage is fed a target mapping.
    predict: usize,
}

pub fn stage(model: &Xlnet, weights: &OriginalWeights, part: Part, stage: &Stage, inputs: &Values) -> Result<Values> {
    tf_graph::run_stage(weights, stage, inputs, &["input_ids", "token_type_ids"], |g, vars, xs, fed| {
        let shape = fed.0.first().map(|(_, v)| v.shape().to_vec()).unwrap_or_default();
        let predict = fed.get("target_mapping").map(|m| m.shape()[1]).unwrap_or(0);
        let dims = Dims { batch: *shape.first().unwrap_or(&0), len: *shape.get(1).unwrap_or(&0), predict };
        Graph { g, vars, model, dims }.build(part, xs)
    })
}

struct Graph<'a> {
    g: &'a mut GraphBuilder,
    vars: &'a Vars,
    model: &'a Xlnet,
    dims: Dims,
}

/// What a layer's attention reads besides its queries.
struct Shared {
    /// Relative position heads per layer come from this [R, B, D] encoding.
    pos_emb: Output,
    /// [S, S, B, 2] one-hot of "different segment", or None when the original has no segments.
    seg_mat: Option<Output>,
}

impl Graph<'_> {
    fn var(&self, name: &str) -> Result<Output> {
        self.vars.get(name)
    }

    fn zeros(&mut self, shape: &[usize]) -> Result<Output> {
        self.g.const_f32(shape, &vec![0.0; shape.iter().product()])
    }

    /// [B, S, …] ↔ [S, B, …].
    fn swap01(&mut self, x: &Output, rank: usize) -> Result<Output> {
        let mut perm: Vec<i32> = (0..rank as i32).collect();
        perm.swap(0, 1);
        self.g.transpose(x, &perm)
    }

    fn build(&mut self, part: Part, xs: &[Output]) -> Result<Vec<Output>> {
        let cfg = &self.model.cfg;
        let (b, s, d) = (self.dims.batch as i32, self.dims.len as i32, cfg.d_model as i32);
        Ok(match (part, xs) {
            (Part::Embeddings, [ids, rest @ ..]) => {
                // embedding_lookup on the time-major ids.
                let ids = self.swap01(ids, 2)?;
                let table = self.var(&format!("{T}/word_embedding/lookup_table"))?;
                let words = self.g.gather(&table, &ids)?;
                let mut out = vec![self.swap01(&words, 3)?];
                if let [_mapping] = rest {
                    // word_emb_q = tile(mask_emb, [P, bsz, 1]).
                    let predict = self.dims.predict as i32;
                    let mask_emb = match self.model.has_mask_emb {
                        true => self.var(&format!("{T}/mask_emb/mask_emb"))?,
                        false => self.zeros(&[1, 1, cfg.d_model])?,
                    };
                    let q = self.g.tile(&mask_emb, &[predict, b, 1])?;
                    out.push(self.swap01(&q, 3)?);
                }
                out
            }
            (Part::Layer(l), [h, types, mask]) => {
                let shared = self.shared(types)?;
                let input_mask = self.input_mask(mask)?;
                let (_, non_tgt) = self.masks(&input_mask, None)?;
                let h = self.swap01(h, 3)?;
                let out = self.layer(l, &h, &shared, &non_tgt)?;
                vec![self.swap01(&out, 3)?]
            }
            (Part::Layer(l), [h, types, mask, h_perm, query, perm, mapping]) => {
                let shared = self.shared(types)?;
                let input_mask = self.input_mask(mask)?;
                let (_, non_tgt) = self.masks(&input_mask, None)?;
                let content = self.swap01(h, 3)?;
                let content = self.layer(l, &content, &shared, &non_tgt)?;
                // perm_mask [B, S, S] and target_mapping [B, P, S] → the original's [S, S, B], [P, S, B].
                let perm = self.g.transpose(perm, &[1, 2, 0])?;
                let mapping = self.g.transpose(mapping, &[1, 2, 0])?;
                let (attn_mask, non_tgt) = self.masks(&input_mask, Some(&perm))?;
                let (h_perm, query) = (self.swap01(h_perm, 3)?, self.swap01(query, 3)?);
                let (h_out, g_out) = self.two_stream(l, &h_perm, &query, &mapping, &shared, &non_tgt, &attn_mask)?;
                vec![self.swap01(&content, 3)?, self.swap01(&h_out, 3)?, self.swap01(&g_out, 3)?]
            }
            (Part::Lm, streams) => {
                // lm_loss: einsum('ibd,nd->ibn', hidden, lookup_table) + bias, tied to the table.
                let table = self.var(&format!("{T}/word_embedding/lookup_table"))?;
                let bias = match self.model.has_lm_bias {
                    true => self.var("model/lm_loss/bias")?,
                    false => self.zeros(&[cfg.n_token])?,
                };
                let mut out = Vec::new();
                for x in streams {
                    let hidden = self.swap01(x, 3)?;
                    let logits = self.g.einsum("ibd,nd->ibn", &hidden, &table)?;
                    let logits = self.g.add(&logits, &bias)?;
                    out.push(self.swap01(&logits, 3)?);
                }
                out
            }
            (Part::Summary, [h]) => {
                // summarize_sequence("last"): hidden[-1], then dense(d_model, tanh) named "summary".
                let hidden = self.swap01(h, 3)?;
                let last = self.g.slice(&hidden, &[s - 1, 0, 0], &[1, -1, -1])?;
                let last = self.g.reshape(&last, &[b, d])?;
                let scope = "model/sequnece_summary/summary";
                let y = self.g.dense(&last, &self.var(&format!("{scope}/kernel"))?, Some(&self.var(&format!("{scope}/bias"))?))?;
                vec![self.g.tanh(&y)?]
            }
            (Part::Logits, [summary]) => {
                // classification_loss / regression_loss: dense(n_class or 1) named "logit".
                let Head::SequenceClassification { .. } = &self.model.head else { bail!("XLNetLMHeadModel has no task head") };
                let scope = self.model.head.logit_scope().expect("a task head");
                vec![self.g.dense(summary, &self.var(&format!("{scope}/kernel"))?, Some(&self.var(&format!("{scope}/bias"))?))?]
            }
            _ => bail!("wrong number of inputs ({}) for XLNet stage {}", xs.len(), part.name()),
        })
    }

    /// The original's `input_mask` (1 for padding, time-major) from HF's `attention_mask`.
    fn input_mask(&mut self, attention_mask: &Output) -> Result<Output> {
        let one = self.g.scalar_f32(1.0)?;
        let m = self.swap01(attention_mask, 2)?;
        self.g.sub(&one, &m)
    }

    /// transformer_xl's masks for attn_type "bi": `attn_mask` [S, S, B, 1] (1 = may not attend;
    /// the query stream's) and `non_tgt_mask` (the content stream's: a position may see itself).
    fn masks(&mut self, input_mask: &Output, perm: Option<&Output>) -> Result<(Output, Output)> {
        let (s, b) = (self.dims.len as i32, self.dims.batch as i32);
        let data = self.g.reshape(input_mask, &[1, s, b])?;
        let data = match perm {
            Some(p) => self.g.add(&data, p)?,
            None => data,
        };
        let data = self.g.reshape(&data, &[-1, s, b, 1])?;
        let zero = self.g.scalar_f32(0.0)?;
        let attn = self.g.greater(&data, &zero)?;
        let attn = self.g.cast(&attn, DataType::Float)?;
        let eye: Vec<f32> = (0..s * s).map(|k| -((k / s == k % s) as u8 as f32)).collect();
        let eye = self.g.const_f32(&[s as usize, s as usize, 1, 1], &eye)?;
        let non_tgt = self.g.add(&attn, &eye)?;
        let non_tgt = self.g.greater(&non_tgt, &zero)?;
        let non_tgt = self.g.cast(&non_tgt, DataType::Float)?;
        Ok((attn, non_tgt))
    }

    /// The position encoding and segment matrix every layer of a pass shares.
    fn shared(&mut self, types: &Output) -> Result<Shared> {
        let (s, b, d) = (self.dims.len, self.dims.batch as i32, self.model.cfg.d_model);
        // relative_positional_encoding: inv_freq = 1 / 10000^(range(0, d, 2) / d), positions
        // klen … -qlen+1, [sin, cos], tiled over the batch.
        let freq: Vec<f32> = (0..d).step_by(2).map(|k| k as f32).collect();
        let freq = self.g.const_f32(&[freq.len()], &freq)?;
        let d_model = self.g.scalar_f32(d as f32)?;
        let exponent = self.g.apply("RealDiv", &[&freq, &d_model])?;
        let base = self.g.scalar_f32(10000.0)?;
        let power = self.g.pow(&base, &exponent)?;
        let one = self.g.scalar_f32(1.0)?;
        let inv_freq = self.g.apply("RealDiv", &[&one, &power])?;
        let pos: Vec<f32> = (0..2 * s).map(|k| s as f32 - k as f32).collect();
        let pos = self.g.const_f32(&[2 * s], &pos)?;
        let angles = self.g.einsum("i,d->id", &pos, &inv_freq)?;
        let (sin, cos) = (self.g.sin(&angles)?, self.g.cos(&angles)?);
        let pos_emb = self.g.concat(&[sin, cos], -1)?;
        let pos_emb = self.g.reshape(&pos_emb, &[2 * s as i32, 1, d as i32])?;
        let pos_emb = self.g.tile(&pos_emb, &[1, b, 1])?;
        let seg_mat = match self.model.has_segments {
            false => None,
            true => {
                // `1` where query and key are in different segments, one-hot over {same, other}.
                let seg = self.swap01(types, 2)?;
                let rows = self.g.reshape(&seg, &[s as i32, 1, b])?;
                let cols = self.g.reshape(&seg, &[1, s as i32, b])?;
                let same = self.g.equal(&rows, &cols)?;
                let other = self.g.logical_not(&same)?;
                let other = self.g.cast(&other, DataType::Int32)?;
                Some(self.g.one_hot(&other, 2)?)
            }
        };
        Ok(Shared { pos_emb, seg_mat })
    }

    fn head(&mut self, x: &Output, l: usize, name: &str) -> Result<Output> {
        let w = self.var(&format!("{T}/layer_{l}/rel_attn/{name}/kernel"))?;
        self.g.einsum("ibh,hnd->ibnd", x, &w)
    }

    /// r_w_bias, r_r_bias or r_s_bias for layer `l`: its slice when untied, else the shared one.
    fn bias(&mut self, name: &str, l: usize) -> Result<Output> {
        let cfg = &self.model.cfg;
        let v = self.var(&format!("{T}/{name}"))?;
        if !cfg.untie_r {
            return Ok(v);
        }
        let slice = self.g.slice(&v, &[l as i32, 0, 0], &[1, -1, -1])?;
        self.g.reshape(&slice, &[cfg.n_head as i32, cfg.d_head as i32])
    }

    /// rel_attn_core: q [I, B, N, Dh] against k, v [J, B, N, Dh] and position heads kr [R, B, N, Dh].
    #[allow(clippy::too_many_arguments)]
    fn core(&mut self, l: usize, q: &Output, k: &Output, v: &Output, kr: &Output, shared: &Shared, mask: &Output) -> Result<Output> {
        let cfg = &self.model.cfg;
        let (s, b, n) = (self.dims.len as i32, self.dims.batch as i32, cfg.n_head as i32);
        let q_w = { let bias = self.bias("r_w_bias", l)?; self.g.add(q, &bias)? };
        let ac = self.g.einsum("ibnd,jbnd->ijbn", &q_w, k)?;
        let q_r = { let bias = self.bias("r_r_bias", l)?; self.g.add(q, &bias)? };
        let bd = self.g.einsum("ibnd,jbnd->ijbn", &q_r, kr)?;
        // rel_shift: reshape [R, I, B, N], drop the first row, reshape [I, R-1, B, N], keep klen.
        let r = 2 * s;
        let bd = self.g.reshape(&bd, &[r, s, b, n])?;
        let bd = self.g.slice(&bd, &[1, 0, 0, 0], &[-1, -1, -1, -1])?;
        let bd = self.g.reshape(&bd, &[s, r - 1, b, n])?;
        let bd = self.g.slice(&bd, &[0, 0, 0, 0], &[-1, s, -1, -1])?;
        let mut score = self.g.add(&ac, &bd)?;
        if let Some(seg_mat) = &shared.seg_mat {
            let q_s = { let bias = self.bias("r_s_bias", l)?; self.g.add(q, &bias)? };
            let seg_embed = self.var(&format!("{T}/seg_embed"))?;
            let seg_i = self.g.slice(&seg_embed, &[l as i32, 0, 0, 0], &[1, -1, -1, -1])?;
            let seg_i = self.g.reshape(&seg_i, &[2, n, cfg.d_head as i32])?;
            let ef = self.g.einsum("ibnd,snd->ibns", &q_s, &seg_i)?;
            let ef = self.g.einsum("ijbs,ibns->ijbn", seg_mat, &ef)?;
            score = self.g.add(&score, &ef)?;
        }
        let scale = self.g.scalar_f32((1.0 / (cfg.d_head as f64).sqrt()) as f32)?;
        let score = self.g.mul(&score, &scale)?;
        let big = self.g.scalar_f32(1e30)?;
        let masked = self.g.mul(&big, mask)?;
        let score = self.g.sub(&score, &masked)?;
        // softmax over j (axis 1).
        let score = self.g.transpose(&score, &[0, 2, 3, 1])?;
        let prob = self.g.softmax(&score)?;
        let prob = self.g.transpose(&prob, &[0, 3, 1, 2])?;
        self.g.einsum("ijbn,jbnd->ibnd", &prob, v)
    }

    /// post_attention: `o` projection, residual, LayerNorm.
    fn post(&mut self, l: usize, residual: &Output, vec: &Output) -> Result<Output> {
        let o = self.var(&format!("{T}/layer_{l}/rel_attn/o/kernel"))?;
        let out = self.g.einsum("ibnd,hnd->ibh", vec, &o)?;
        let out = self.g.add(&out, residual)?;
        let n = format!("{T}/layer_{l}/rel_attn/LayerNorm");
        self.g.layer_norm(&out, &self.var(&format!("{n}/gamma"))?, &self.var(&format!("{n}/beta"))?, 1e-12)
    }

    /// positionwise_ffn on a time-major [len, B, D] tensor.
    fn ffn(&mut self, l: usize, x: &Output, len: usize) -> Result<Output> {
        let cfg = &self.model.cfg;
        let d = cfg.d_model as i32;
        let f = format!("{T}/layer_{l}/ff");
        let flat = self.g.reshape(x, &[-1, d])?;
        let y = self.g.dense(&flat, &self.var(&format!("{f}/layer_1/kernel"))?, Some(&self.var(&format!("{f}/layer_1/bias"))?))?;
        let y = match cfg.ff_activation.as_str() {
            // xlnet modeling.gelu: the tanh approximation.
            "gelu" => self.g.gelu_tanh(&y)?,
            "relu" => self.g.relu(&y)?,
            other => bail!("the original XLNet activation {other:?} is not supported (gelu, relu)"),
        };
        let y = self.g.dense(&y, &self.var(&format!("{f}/layer_2/kernel"))?, Some(&self.var(&format!("{f}/layer_2/bias"))?))?;
        let y = self.g.add(&y, &flat)?;
        let y = self.g.layer_norm(&y, &self.var(&format!("{f}/LayerNorm/gamma"))?, &self.var(&format!("{f}/LayerNorm/beta"))?, 1e-12)?;
        self.g.reshape(&y, &[len as i32, self.dims.batch as i32, d])
    }

    /// rel_multihead_attn followed by positionwise_ffn: the content stream alone.
    fn layer(&mut self, l: usize, h: &Output, shared: &Shared, mask: &Output) -> Result<Output> {
        let (q, k, v, kr) = (self.head(h, l, "q")?, self.head(h, l, "k")?, self.head(h, l, "v")?, self.head(&shared.pos_emb, l, "r")?);
        let vec = self.core(l, &q, &k, &v, &kr, shared, mask)?;
        let out = self.post(l, h, &vec)?;
        self.ffn(l, &out, self.dims.len)
    }

    /// two_stream_rel_attn then positionwise_ffn on both streams.
    #[allow(clippy::too_many_arguments)]
    fn two_stream(&mut self, l: usize, h: &Output, g: &Output, mapping: &Output, shared: &Shared, mask_h: &Output, mask_g: &Output) -> Result<(Output, Output)> {
        let (k, v, kr) = (self.head(h, l, "k")?, self.head(h, l, "v")?, self.head(&shared.pos_emb, l, "r")?);
        let q_h = self.head(h, l, "q")?;
        let vec_h = self.core(l, &q_h, &k, &v, &kr, shared, mask_h)?;
        let out_h = self.post(l, h, &vec_h)?;
        let q_g = self.head(g, l, "q")?;
        let q_g = self.g.einsum("mbnd,mlb->lbnd", &q_g, mapping)?;
        let vec_g = self.core(l, &q_g, &k, &v, &kr, shared, mask_g)?;
        let vec_g = self.g.einsum("lbnd,mlb->mbnd", &vec_g, mapping)?;
        let out_g = self.post(l, g, &vec_g)?;
        Ok((self.ffn(l, &out_h, self.dims.len)?, self.ffn(l, &out_g, self.dims.predict)?))
    }
}
