//! OpenAI GPT in candle on transformers' state-dict names (`OpenAIGPTLMHeadModel`,
//! `OpenAIGPTDoubleHeadsModel`), computing what transformers computes from a folder's config.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder};

use super::{GptConfig, Part};
use crate::candle_util::{self, LayerNorm};
use crate::gpt2::candle::{fused_attention, Conv1D};

/// transformers' openai `ACT_FNS`: "gelu" is the tanh approximation, "swish" and "silu" are
/// `x·sigmoid(x)`.
fn activate(afn: &str, x: &Tensor) -> Result<Tensor> {
    match afn {
        "gelu" => x.gelu(),
        "relu" => x.relu(),
        "swish" | "silu" => x.silu(),
        other => candle_core::bail!("unsupported afn {other:?}"),
    }
}

/// `Block`: post-LN attention, then post-LN MLP.
struct Block {
    c_attn: Conv1D,
    c_proj: Conv1D,
    ln_1: LayerNorm,
    c_fc: Conv1D,
    mlp_proj: Conv1D,
    ln_2: LayerNorm,
    heads: usize,
    scale: f64,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &GptConfig) -> Result<Block> {
        let (e, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        Ok(Block {
            c_attn: Conv1D::load(e, 3 * e, vb.pp("attn.c_attn"))?,
            c_proj: Conv1D::load(e, e, vb.pp("attn.c_proj"))?,
            ln_1: candle_util::layer_norm(e, eps, vb.pp("ln_1"))?,
            c_fc: Conv1D::load(e, 4 * e, vb.pp("mlp.c_fc"))?,
            mlp_proj: Conv1D::load(4 * e, e, vb.pp("mlp.c_proj"))?,
            ln_2: candle_util::layer_norm(e, eps, vb.pp("ln_2"))?,
            heads: cfg.n_head,
            scale: 1.0 / (cfg.head_dim() as f64).sqrt(),
        })
    }

    fn forward(&self, x: &Tensor, afn: &str) -> Result<Tensor> {
        let a = self.c_proj.forward(&fused_attention(&self.c_attn.forward(x)?, self.heads, self.scale)?)?;
        let n = self.ln_1.forward(&(x + a)?)?;
        let m = self.mlp_proj.forward(&activate(afn, &self.c_fc.forward(&n)?)?)?;
        self.ln_2.forward(&(n + m)?)
    }
}

/// The HF tensors `part` loads, exactly as [`run_part`] asks for them.
pub fn hf_tensors(part: Part) -> Vec<String> {
    let wb = |m: &str| [format!("{m}.weight"), format!("{m}.bias")];
    match part {
        Part::Embeddings => vec!["transformer.tokens_embed.weight".into(), "transformer.positions_embed.weight".into()],
        Part::Layer(l) => ["attn.c_attn", "attn.c_proj", "ln_1", "mlp.c_fc", "mlp.c_proj", "ln_2"]
            .iter()
            .flat_map(|m| wb(&format!("transformer.h.{l}.{m}")))
            .collect(),
        Part::LmHead => vec!["transformer.tokens_embed.weight".into()],
        Part::McHead => wb("multiple_choice_head.summary").into(),
    }
}

/// Loads `part`'s weights and runs it on `inputs` (in the order [`super::parts`] gives).
pub fn run_part(vb: &VarBuilder, cfg: &GptConfig, part: Part, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let (e, t) = (cfg.n_embd, vb.pp("transformer"));
    Ok(match (part, inputs) {
        (Part::Embeddings, [ids]) => {
            let (_, s) = ids.dims2()?;
            let tokens = Embedding::new(t.get((cfg.vocab_size, e), "tokens_embed.weight")?, e);
            let positions = Embedding::new(t.get((cfg.n_positions, e), "positions_embed.weight")?, e);
            let at = Tensor::arange(0u32, s as u32, ids.device())?.unsqueeze(0)?;
            vec![tokens.forward(ids)?.broadcast_add(&positions.forward(&at)?)?]
        }
        (Part::Layer(l), [x]) => vec![Block::load(t.pp(format!("h.{l}")), cfg)?.forward(x, &cfg.afn)?],
        (Part::LmHead, [h]) => {
            let w = t.get((cfg.vocab_size, e), "tokens_embed.weight")?;
            let (b, s, _) = h.dims3()?;
            vec![h.reshape((b * s, e))?.matmul(&w.t()?)?.reshape((b, s, cfg.vocab_size))?]
        }
        (Part::McHead, [h]) => {
            // OpenAIGPTSequenceSummary with cls_index None: the last position, Linear(E → 1).
            let (_, s, _) = h.dims3()?;
            let Some(last) = s.checked_sub(1) else { candle_core::bail!("the multiple-choice head needs at least one position") };
            let last = h.narrow(1, last, 1)?.squeeze(1)?;
            let summary = candle_util::linear(e, 1, vb.pp("multiple_choice_head.summary"))?;
            vec![summary.forward(&last)?.squeeze(1)?]
        }
        _ => candle_core::bail!("wrong number of inputs ({}) for OpenAI GPT stage {}", inputs.len(), part.name()),
    })
}
