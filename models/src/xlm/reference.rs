//! The original XLM (facebookresearch/XLM `xlm/model/transformer.py`: `TransformerModel.fwd`,
//! `MultiHeadAttention`, `TransformerFFN`, `gelu`, `PredLayer`) as TensorFlow graphs, one per
//! stage, on the checkpoint's state dict loaded as constants. It follows the original's
//! arithmetic: masks from `lengths` (`arange(slen) < lengths`), scores of masked keys set to
//! -inf, `0.5 · x · (1 + erf(x / √2))`, `nn.LayerNorm` as `(x − mean) / √(var + 1e-12) · w + b`,
//! and `nn.Linear` as `x · Wᵀ + b`. The original is batch-major once past its first transpose,
//! as the stages are.

use anyhow::{bail, Result};
use tensorflow::{DataType, Output};

use super::{Part, Xlm, LAYER_NORM_EPS};
use crate::stage::{Stage, Values};
use crate::tf_graph::{self, GraphBuilder, OriginalWeights, Vars};

/// The original variables `part` reads, under the checkpoint's prefix.
pub fn original_vars(model: &Xlm, part: Part) -> Vec<String> {
    let cfg = &model.cfg;
    let keys: Vec<String> = match part {
        Part::Embeddings => {
            let mut v = vec!["position_embeddings.weight".to_string()];
            if cfg.lang_embeddings() {
                v.push("lang_embeddings.weight".into());
            }
            v.extend(["embeddings.weight", "layer_norm_emb.weight", "layer_norm_emb.bias"].map(String::from));
            v
        }
        Part::Layer(i) => {
            let mut v: Vec<String> = ["q_lin", "k_lin", "v_lin", "out_lin"]
                .iter()
                .flat_map(|m| [format!("attentions.{i}.{m}.weight"), format!("attentions.{i}.{m}.bias")])
                .collect();
            for m in [format!("layer_norm1.{i}"), format!("ffns.{i}.lin1"), format!("ffns.{i}.lin2"), format!("layer_norm2.{i}")] {
                v.extend([format!("{m}.weight"), format!("{m}.bias")]);
            }
            v
        }
        Part::Lm => vec![head_weight(model).to_string(), "pred_layer.proj.bias".into()],
    };
    keys.into_iter().map(|k| format!("{}{k}", model.prefix)).collect()
}

/// PredLayer.proj's weight. With share_inout_emb it is the embedding parameter itself
/// (`self.pred_layer.proj.weight = self.embeddings.weight`), which `state_dict()` saves under
/// both names as one storage: read as `embeddings.weight`, it is rounded as the folder stores
/// the embeddings.
fn head_weight(model: &Xlm) -> &'static str {
    if model.cfg.share_inout_emb {
        "embeddings.weight"
    } else {
        "pred_layer.proj.weight"
    }
}

pub fn stage(model: &Xlm, weights: &OriginalWeights, part: Part, stage: &Stage, inputs: &Values) -> Result<Values> {
    tf_graph::run_stage(weights, stage, inputs, &["input_ids", "attention_mask", "langs"], |g, vars, xs, fed| {
        let shape = fed.0.first().map(|(_, v)| v.shape().to_vec()).unwrap_or_default();
        let (batch, len) = match shape[..] {
            [b, s] | [b, s, _] => (b, s),
            _ => bail!("stage {} is fed {:?}, expected [batch, seq(, dim)]", stage.name, shape),
        };
        Graph { g, vars, model, batch: batch as i32, len: len as i32 }.build(part, xs)
    })
}

struct Graph<'a> {
    g: &'a mut GraphBuilder,
    vars: &'a Vars,
    model: &'a Xlm,
    batch: i32,
    len: i32,
}

impl Graph<'_> {
    fn var(&self, key: &str) -> Result<Output> {
        self.vars.get(&format!("{}{key}", self.model.prefix))
    }

    /// `nn.Linear` on [B, S, in]: `x · Wᵀ + b` with W [out, in].
    fn linear(&mut self, x: &Output, module: &str) -> Result<Output> {
        let w = self.var(&format!("{module}.weight"))?;
        let b = self.var(&format!("{module}.bias"))?;
        let d_in = self.g.reshape(x, &[self.batch * self.len, -1])?;
        let y = self.g.matmul(&d_in, &w, false, true)?;
        let y = self.g.bias_add(&y, &b)?;
        self.g.reshape(&y, &[self.batch, self.len, -1])
    }

    /// `nn.LayerNorm(dim, eps=1e-12)`: (x − mean) / √(biased var + eps) · weight + bias.
    fn layer_norm(&mut self, x: &Output, module: &str) -> Result<Output> {
        let (w, b) = (self.var(&format!("{module}.weight"))?, self.var(&format!("{module}.bias"))?);
        let mean = self.g.mean(x, &[-1], true)?;
        let centered = self.g.sub(x, &mean)?;
        let sq = self.g.mul(&centered, &centered)?;
        let var = self.g.mean(&sq, &[-1], true)?;
        let eps = self.g.scalar_f32(LAYER_NORM_EPS as f32)?;
        let var = self.g.add(&var, &eps)?;
        let inv = self.g.rsqrt(&var)?;
        let normed = self.g.mul(&centered, &inv)?;
        let scaled = self.g.mul(&normed, &w)?;
        self.g.add(&scaled, &b)
    }

    /// `get_masks`: `arange(slen) < lengths`, [B, S] bool, with `lengths` the sum of the mask.
    fn mask(&mut self, attention_mask: &Output) -> Result<Output> {
        let axis = self.g.const_i32(&[1])?;
        let lengths = self.g.op("Sum", &[attention_mask, &axis], |nd| Ok(nd.set_attr_bool("keep_dims", true)?))?;
        let lengths = Output { operation: lengths, index: 0 };
        let alen: Vec<i32> = (0..self.len).collect();
        let alen = self.g.const_i32(&alen)?;
        let alen = self.g.reshape(&alen, &[1, self.len])?;
        self.g.apply("Less", &[&alen, &lengths])
    }

    /// `tensor *= mask.unsqueeze(-1)`.
    fn zero_padding(&mut self, x: &Output, mask: &Output) -> Result<Output> {
        let m = self.g.cast(mask, DataType::Float)?;
        let m = self.g.reshape(&m, &[self.batch, self.len, 1])?;
        self.g.mul(x, &m)
    }

    /// [B, S, D] → [B, N, S, Dh].
    fn heads(&mut self, x: &Output) -> Result<Output> {
        let (n, dh) = (self.model.cfg.n_heads as i32, self.model.cfg.head_dim() as i32);
        let x = self.g.reshape(x, &[self.batch, self.len, n, dh])?;
        self.g.transpose(&x, &[0, 2, 1, 3])
    }

    /// The original `gelu`: `0.5 * x * (1.0 + erf(x / sqrt(2.0)))`, in that order.
    fn gelu(&mut self, x: &Output) -> Result<Output> {
        let half = self.g.scalar_f32(0.5)?;
        let half_x = self.g.mul(&half, x)?;
        let sqrt2 = self.g.scalar_f32(std::f64::consts::SQRT_2 as f32)?;
        let scaled = self.g.apply("RealDiv", &[x, &sqrt2])?;
        let e = self.g.erf(&scaled)?;
        let one = self.g.scalar_f32(1.0)?;
        let s = self.g.add(&one, &e)?;
        self.g.mul(&half_x, &s)
    }

    fn build(&mut self, part: Part, xs: &[Output]) -> Result<Vec<Output>> {
        let cfg = self.model.cfg.clone();
        Ok(match (part, xs) {
            (Part::Embeddings, [ids, attention_mask, langs @ ..]) => {
                if self.len as usize > cfg.max_positions {
                    bail!("probe length {} exceeds the model's {} positions", self.len, cfg.max_positions);
                }
                let words = self.g.gather(&self.var("embeddings.weight")?, ids)?;
                // positions = arange(slen).unsqueeze(0), looked up and broadcast over the batch.
                let positions: Vec<i32> = (0..self.len).collect();
                let positions = self.g.const_i32(&positions)?;
                let positions = self.g.reshape(&positions, &[1, self.len])?;
                let positions = self.g.gather(&self.var("position_embeddings.weight")?, &positions)?;
                let mut x = self.g.add(&words, &positions)?;
                if let [langs] = langs {
                    let l = self.g.gather(&self.var("lang_embeddings.weight")?, langs)?;
                    x = self.g.add(&x, &l)?;
                }
                let x = self.layer_norm(&x, "layer_norm_emb")?;
                let mask = self.mask(attention_mask)?;
                vec![self.zero_padding(&x, &mask)?]
            }
            (Part::Layer(i), [x, attention_mask]) => {
                let mask = self.mask(attention_mask)?;
                let a = format!("attentions.{i}");
                let q = self.linear(x, &format!("{a}.q_lin"))?;
                let q = self.heads(&q)?;
                let sqrt_dh = self.g.scalar_f32((cfg.head_dim() as f64).sqrt() as f32)?;
                let q = self.g.apply("RealDiv", &[&q, &sqrt_dh])?;
                let k = self.linear(x, &format!("{a}.k_lin"))?;
                let k = self.heads(&k)?;
                let v = self.linear(x, &format!("{a}.v_lin"))?;
                let v = self.heads(&v)?;
                let scores = self.g.batch_matmul(&q, &k, false, true)?;
                // scores.masked_fill_(mask == 0, -inf) for keys past each row's length.
                let visible = self.g.reshape(&mask, &[self.batch, 1, 1, self.len])?;
                let minus_inf = self.g.scalar_f32(f32::NEG_INFINITY)?;
                let scores = self.g.apply("SelectV2", &[&visible, &scores, &minus_inf])?;
                let weights = self.g.softmax(&scores)?;
                let context = self.g.batch_matmul(&weights, &v, false, false)?;
                let context = self.g.transpose(&context, &[0, 2, 1, 3])?;
                let context = self.g.reshape(&context, &[self.batch, self.len, cfg.emb_dim as i32])?;
                let attn = self.linear(&context, &format!("{a}.out_lin"))?;
                let x = self.g.add(x, &attn)?;
                let x = self.layer_norm(&x, &format!("layer_norm1.{i}"))?;
                let h = self.linear(&x, &format!("ffns.{i}.lin1"))?;
                let h = if cfg.gelu_activation { self.gelu(&h)? } else { self.g.relu(&h)? };
                let h = self.linear(&h, &format!("ffns.{i}.lin2"))?;
                let x = self.g.add(&x, &h)?;
                let x = self.layer_norm(&x, &format!("layer_norm2.{i}"))?;
                vec![self.zero_padding(&x, &mask)?]
            }
            (Part::Lm, [x]) => {
                let w = self.var(head_weight(self.model))?;
                let b = self.var("pred_layer.proj.bias")?;
                let flat = self.g.reshape(x, &[self.batch * self.len, cfg.emb_dim as i32])?;
                let scores = self.g.matmul(&flat, &w, false, true)?;
                let scores = self.g.bias_add(&scores, &b)?;
                vec![self.g.reshape(&scores, &[self.batch, self.len, cfg.n_words as i32])?]
            }
            _ => bail!("wrong number of inputs ({}) for XLM stage {}", xs.len(), part.name()),
        })
    }
}
