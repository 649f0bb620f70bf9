//! GPT-2 in candle on transformers' state-dict names (`GPT2LMHeadModel`), computing what
//! transformers computes from a folder's config.json. Each [`Part`] loads only its own weights.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::{Gpt2Config, Part};
use crate::candle_util::{self, Activation, LayerNorm};

/// transformers' `Conv1D`: `weight` is [in, out] (the original's layout) and `y = x·W + b`.
#[derive(Debug, Clone)]
pub struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    pub fn load(nx: usize, nf: usize, vb: VarBuilder) -> Result<Conv1D> {
        Ok(Conv1D { weight: vb.get((nx, nf), "weight")?, bias: vb.get(nf, "bias")? })
    }
}

impl Module for Conv1D {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (nx, nf) = self.weight.dims2()?;
        let rows = x.elem_count() / nx;
        let y = x.reshape((rows, nx))?.matmul(&self.weight)?.broadcast_add(&self.bias)?;
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = nf;
        }
        y.reshape(out)
    }
}

/// The causal mask as an additive [1, 1, S, S] term: 0 where position i may see j ≤ i, and a
/// value that makes softmax give exactly 0 elsewhere (transformers replaces those scores by the
/// dtype's minimum; anything this far below the row's maximum underflows to 0 the same way).
pub fn causal_mask(seq: usize, device: &candle_core::Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..seq).flat_map(|i| (0..seq).map(move |j| if j <= i { 0.0 } else { -1e10 })).collect();
    Tensor::from_vec(data, (1, 1, seq, seq), device)
}

/// Multi-head causal self-attention over a fused q|k|v projection, as transformers' GPT-2 and
/// OpenAI GPT both split it: the three thirds of the last axis, in that order.
pub fn fused_attention(qkv: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    let (_, s, three_e) = qkv.dims3()?;
    let e = three_e / 3;
    let third = |k: usize| candle_util::split_heads(&qkv.narrow(2, k * e, e)?, heads);
    let mask = causal_mask(s, qkv.device())?;
    candle_util::attention(&third(0)?, &third(1)?, &third(2)?, Some(&mask), scale)
}

/// `GPT2Block`: pre-LN attention and pre-LN MLP, each added to the residual.
struct Block {
    ln_1: LayerNorm,
    c_attn: Conv1D,
    c_proj: Conv1D,
    ln_2: LayerNorm,
    c_fc: Conv1D,
    act: Activation,
    mlp_proj: Conv1D,
    heads: usize,
    scale: f64,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &Gpt2Config, layer: usize) -> Result<Block> {
        let (e, inner, eps) = (cfg.n_embd, cfg.n_inner, cfg.layer_norm_epsilon);
        let mut scale = if cfg.scale_attn_weights { 1.0 / (cfg.head_dim() as f64).sqrt() } else { 1.0 };
        if cfg.scale_attn_by_inverse_layer_idx {
            scale /= (layer + 1) as f64;
        }
        Ok(Block {
            ln_1: candle_util::layer_norm(e, eps, vb.pp("ln_1"))?,
            c_attn: Conv1D::load(e, 3 * e, vb.pp("attn.c_attn"))?,
            c_proj: Conv1D::load(e, e, vb.pp("attn.c_proj"))?,
            ln_2: candle_util::layer_norm(e, eps, vb.pp("ln_2"))?,
            c_fc: Conv1D::load(e, inner, vb.pp("mlp.c_fc"))?,
            act: Activation::from_hf_name(&cfg.activation_function)?,
            mlp_proj: Conv1D::load(inner, e, vb.pp("mlp.c_proj"))?,
            heads: cfg.n_head,
            scale,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)?)?;
        let attended = self.c_proj.forward(&fused_attention(&qkv, self.heads, self.scale)?)?;
        let x = (attended + x)?;
        let mlp = self.mlp_proj.forward(&self.act.forward(&self.c_fc.forward(&self.ln_2.forward(&x)?)?)?)?;
        mlp + x
    }
}

/// The LM head's weight: the token embedding when tied (as the original always is).
fn lm_weight(cfg: &Gpt2Config) -> &'static str {
    match cfg.tie_word_embeddings {
        true => "transformer.wte.weight",
        false => "lm_head.weight",
    }
}

/// The HF tensors `part` loads, exactly as [`run_part`] asks for them.
pub fn hf_tensors(cfg: &Gpt2Config, part: Part) -> Vec<String> {
    let wb = |m: &str| [format!("{m}.weight"), format!("{m}.bias")];
    match part {
        Part::Embeddings => vec!["transformer.wte.weight".into(), "transformer.wpe.weight".into()],
        Part::Layer(l) => ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]
            .iter()
            .flat_map(|m| wb(&format!("transformer.h.{l}.{m}")))
            .collect(),
        Part::LnF => wb("transformer.ln_f").into(),
        Part::LmHead => vec![lm_weight(cfg).into()],
    }
}

/// Loads `part`'s weights and runs it on `inputs` (in the order [`super::parts`] gives).
pub fn run_part(vb: &VarBuilder, cfg: &Gpt2Config, part: Part, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let (e, t) = (cfg.n_embd, vb.pp("transformer"));
    Ok(match (part, inputs) {
        (Part::Embeddings, [ids]) => {
            let (_, s) = ids.dims2()?;
            let wte = Embedding::new(t.get((cfg.vocab_size, e), "wte.weight")?, e);
            let wpe = Embedding::new(t.get((cfg.n_positions, e), "wpe.weight")?, e);
            let positions = Tensor::arange(0u32, s as u32, ids.device())?.unsqueeze(0)?;
            vec![wte.forward(ids)?.broadcast_add(&wpe.forward(&positions)?)?]
        }
        (Part::Layer(l), [x]) => vec![Block::load(t.pp(format!("h.{l}")), cfg, l)?.forward(x)?],
        (Part::LnF, [x]) => vec![candle_util::layer_norm(e, cfg.layer_norm_epsilon, t.pp("ln_f"))?.forward(x)?],
        (Part::LmHead, [x]) => {
            let w = vb.get((cfg.vocab_size, e), lm_weight(cfg))?;
            let (b, s, _) = x.dims3()?;
            let logits = x.reshape((b * s, e))?.matmul(&w.t()?)?;
            vec![logits.reshape((b, s, cfg.vocab_size))?]
        }
        _ => candle_core::bail!("wrong number of inputs ({}) for GPT-2 stage {}", inputs.len(), part.name()),
    })
}
