//! Small candle helpers shared by the candle models of every architecture: activations by HF
//! name, LayerNorm with an explicit eps, the additive attention mask, attention.

use candle_core::{DType, Result, Tensor};

use crate::stage::{Stage, Value, Values};
use candle_nn::{Linear, Module, VarBuilder};

/// An activation named the way HF's `hidden_act` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: exact, `0.5·x·(1 + erf(x/√2))`.
    GeluErf,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn from_hf_name(name: &str) -> Result<Activation> {
        match name {
            "gelu" => Ok(Activation::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => candle_core::bail!(
                "unsupported hidden_act {other:?} (supported: gelu, gelu_new, gelu_pytorch_tanh, relu)"
            ),
        }
    }
}

impl Module for Activation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Activation::GeluErf => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
            Activation::Relu => xs.relu(),
        }
    }
}

/// LayerNorm over the last axis, with the variance computed in two passes (the mean, then the
/// mean of squared deviations) as TF's `moments`/`squared_difference` and PyTorch do.
/// `candle_nn::LayerNorm` takes a fused CPU kernel for contiguous input that computes
/// `E[x²] − E[x]²` in f32, which cancels catastrophically when a row's |mean| is large against
/// its spread: the verifier then blames correct weights (a false alarm in the embeddings).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> LayerNorm {
        LayerNorm { weight, bias, eps }
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        let xs = xs.to_dtype(DType::F32)?;
        let size = xs.dim(candle_core::D::Minus1)? as f64;
        let mean = (xs.sum_keepdim(candle_core::D::Minus1)? / size)?;
        let centered = xs.broadcast_sub(&mean)?;
        let variance = (centered.sqr()?.sum_keepdim(candle_core::D::Minus1)? / size)?;
        let normed = centered.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

/// A LayerNorm over the last axis reading HF's `weight`/`bias` under `vb`, with the given eps.
pub fn layer_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    let weight = vb.get(size, "weight")?;
    let bias = vb.get(size, "bias")?;
    Ok(LayerNorm::new(weight, bias, eps))
}

/// A torch-style Linear (`weight` [out, in], `bias` [out]) under `vb`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear(in_dim, out_dim, vb)
}

/// `(1 - mask) · -10000` shaped [B, 1, 1, S] (f32) from a [B, S] mask of 0/1, the additive mask
/// of the original TF models. (HF uses the dtype's minimum; the result after softmax is the
/// same for every row with at least one real token.)
pub fn additive_mask(mask: &Tensor) -> Result<Tensor> {
    let (b, s) = mask.dims2()?;
    let m = mask.to_dtype(DType::F32)?.reshape((b, 1, 1, s))?;
    (m.ones_like()? - m)? * -10000.0
}

/// Splits the last axis into heads and moves heads before the sequence: [B, S, N·Dh] → [B, N, S, Dh].
pub fn split_heads(xs: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, s, h) = xs.dims3()?;
    xs.reshape((b, s, heads, h / heads))?.transpose(1, 2)?.contiguous()
}

/// Scaled dot-product attention on [B, N, Sq, Dh] / [B, N, Sk, Dh] tensors with an optional
/// additive mask broadcastable to [B, N, Sq, Sk]; returns [B, Sq, N·Dh].
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let ctx = probs.matmul(v)?; // [B, N, Sq, Dh]
    let (b, n, sq, dh) = ctx.dims4()?;
    ctx.transpose(1, 2)?.contiguous()?.reshape((b, sq, n * dh))
}

/// Flattens a tensor to (shape, f32 values) for `probe::Outputs`.
pub fn to_output(xs: &Tensor) -> Result<(Vec<usize>, Vec<f32>)> {
    let shape = xs.dims().to_vec();
    let values = xs.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    Ok((shape, values))
}

/// The first position of [B, S, H] as [B, H].
pub fn first_token(xs: &Tensor) -> Result<Tensor> {
    xs.narrow(1, 0, 1)?.squeeze(1)
}

/// Runs one stage in candle: picks `stage.inputs` from `inputs`, runs `part` on them (in that
/// order) with float32 weights from `vb`, and names its outputs as `stage.outputs`.
pub fn run_stage(
    vb: VarBuilder,
    stage: &Stage,
    inputs: &Values,
    part: impl FnOnce(&VarBuilder, &[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Values> {
    let vb = vb.set_dtype(DType::F32);
    let inputs = inputs.pick(&stage.inputs).map_err(candle_core::Error::msg)?;
    let tensors = inputs.0.iter().map(|(_, v)| v.to_tensor(vb.device())).collect::<Result<Vec<_>>>()?;
    let outputs = part(&vb, &tensors)?;
    if outputs.len() != stage.outputs.len() {
        candle_core::bail!("stage {} produced {} outputs, but declares {:?}", stage.name, outputs.len(), stage.outputs);
    }
    let values = outputs.iter().map(Value::from_tensor).collect::<Result<Vec<_>>>()?;
    Ok(Values(stage.outputs.iter().cloned().zip(values).collect()))
}
