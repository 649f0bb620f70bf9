//! Transformer-XL in candle on HF's state-dict names, batch-major: the adaptive embedding,
//! relative attention over memory and segment (rel_shift, clamped sinusoid positions from the
//! stored `inv_freq`), and the adaptive log-softmax over the whole vocabulary.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use super::{HfProj, Part, TxlConfig};
use crate::candle_util::{self, LayerNorm};

const EPS: f64 = 1e-12;

/// The HF key of softmax cluster `i`'s projection, if it has one.
fn out_proj_key(cfg: &TxlConfig, i: usize) -> Option<String> {
    match cfg.hf_out_proj(i) {
        HfProj::None => None,
        HfProj::Own => Some(format!("crit.out_projs.{i}")),
        HfProj::Embedding(j) => Some(format!("transformer.word_emb.emb_projs.{j}")),
    }
}

/// The HF tensors `part` loads.
pub fn hf_tensors(cfg: &TxlConfig, part: Part) -> Vec<String> {
    let mut v = Vec::new();
    match part {
        Part::Embeddings { .. } => {
            for i in 0..cfg.n_clusters() {
                v.push(format!("transformer.word_emb.emb_layers.{i}.weight"));
                if cfg.hf_emb_proj(i) {
                    v.push(format!("transformer.word_emb.emb_projs.{i}"));
                }
            }
        }
        Part::Layer { layer, .. } => {
            let a = format!("transformer.layers.{layer}.dec_attn");
            for k in ["r_w_bias", "r_r_bias", "qkv_net.weight", "r_net.weight", "o_net.weight", "layer_norm.weight", "layer_norm.bias"] {
                v.push(format!("{a}.{k}"));
            }
            for k in ["CoreNet.0.weight", "CoreNet.0.bias", "CoreNet.3.weight", "CoreNet.3.bias", "layer_norm.weight", "layer_norm.bias"] {
                v.push(format!("transformer.layers.{layer}.pos_ff.{k}"));
            }
            if !cfg.untie_r {
                v.extend(["transformer.r_w_bias".into(), "transformer.r_r_bias".into()]);
            }
            v.push("transformer.pos_emb.inv_freq".into());
        }
        Part::LogSoftmax { .. } => {
            for i in 0..cfg.n_clusters() {
                v.push(format!("transformer.word_emb.emb_layers.{i}.weight"));
                if cfg.div_val != 1 || i == 0 {
                    v.push(format!("crit.out_layers.{i}.bias"));
                }
                v.extend(out_proj_key(cfg, i));
            }
            if !cfg.cutoffs.is_empty() {
                v.extend(["crit.cluster_weight".into(), "crit.cluster_bias".into()]);
            }
            v.sort();
            v.dedup();
        }
    }
    v
}

/// `AdaptiveEmbedding`: each id looked up in its cluster's table, projected to d_model, scaled
/// by sqrt(d_model).
fn embed(vb: &VarBuilder, cfg: &TxlConfig, ids: &Tensor) -> Result<Tensor> {
    let (b, s) = ids.dims2()?;
    let ends = cfg.cutoff_ends();
    let e = vb.pp("transformer.word_emb");
    let mut y = Tensor::zeros((b, s, cfg.d_model), DType::F32, ids.device())?;
    for i in 0..cfg.n_clusters() {
        let (lo, hi, dim) = (ends[i], ends[i + 1], cfg.cluster_dim(i));
        let table = e.get((hi - lo, dim), &format!("emb_layers.{i}.weight"))?;
        let ids = ids.to_dtype(DType::I64)?;
        let inside = ids.ge(lo as i64)?.mul(&ids.lt(hi as i64)?)?;
        let local = (ids.to_dtype(DType::F32)? - lo as f64)?.clamp(0f32, (hi - lo - 1) as f32)?.to_dtype(DType::U32)?;
        let mut emb = table.embedding(&local.flatten_all()?)?;
        if cfg.hf_emb_proj(i) {
            let proj = e.get((cfg.d_model, dim), &format!("emb_projs.{i}"))?;
            emb = emb.matmul(&proj.t()?)?;
        }
        let emb = emb.reshape((b, s, cfg.d_model))?;
        y = (y + emb.broadcast_mul(&inside.to_dtype(DType::F32)?.unsqueeze(2)?)?)?;
    }
    y * (cfg.d_model as f64).sqrt()
}

/// HF's `_rel_shift` ([B, N, I, J] with a zero column padded in front), which is the original's.
fn rel_shift(x: &Tensor) -> Result<Tensor> {
    let (b, n, i, j) = x.dims4()?;
    let pad = Tensor::zeros((b, n, i, 1), x.dtype(), x.device())?;
    Tensor::cat(&[&pad, x], 3)?.reshape((b, n, j + 1, i))?.narrow(2, 1, j)?.reshape((b, n, i, j))
}

/// Relative positions klen-1 … 0, clamped, as [sin, cos] rows [klen, D].
fn positions(inv_freq: &Tensor, klen: usize, clamp_len: i64, device: &Device) -> Result<Tensor> {
    let pos: Vec<f32> = (0..klen).rev().map(|p| (if clamp_len > 0 { p.min(clamp_len as usize) } else { p }) as f32).collect();
    let pos = Tensor::from_vec(pos, (klen, 1), device)?;
    let angles = pos.broadcast_mul(&inv_freq.unsqueeze(0)?)?;
    Tensor::cat(&[&angles.sin()?, &angles.cos()?], 1)
}

/// One `RelPartialLearnableDecoderLayer` on `h` [B, S, D] with memory `mem` [B, M, D].
fn layer(vb: &VarBuilder, cfg: &TxlConfig, l: usize, h: &Tensor, mem: Option<&Tensor>) -> Result<Tensor> {
    let (d, n, dh) = (cfg.d_model, cfg.n_head, cfg.d_head);
    let (b, s, _) = h.dims3()?;
    let t = vb.pp("transformer");
    let a = t.pp(format!("layers.{l}.dec_attn"));
    let (r_w_bias, r_r_bias) = (a.get((n, dh), "r_w_bias")?, a.get((n, dh), "r_r_bias")?);
    if !cfg.untie_r {
        // The shared parameter's aliases must agree, or transformers loads one of them.
        for (name, per_layer) in [("r_w_bias", &r_w_bias), ("r_r_bias", &r_r_bias)] {
            let shared = t.get((n, dh), name)?;
            if (shared - per_layer)?.abs()?.max_all()?.to_scalar::<f32>()? != 0.0 {
                candle_core::bail!("transformer.{name} and transformer.layers.{l}.dec_attn.{name} are one shared parameter but differ");
            }
        }
    }
    let inv_freq = t.get(d / 2, "pos_emb.inv_freq")?;
    let cat = match mem {
        Some(m) => Tensor::cat(&[m, h], 1)?,
        None => h.clone(),
    };
    let klen = cat.dim(1)?;
    let mlen = klen - s;
    let heads = cat.broadcast_matmul(&a.get((3 * n * dh, d), "qkv_net.weight")?.t()?)?;
    let split = |x: &Tensor, len: usize| x.reshape((b, len, n, dh))?.transpose(1, 2)?.contiguous(); // [B, N, L, Dh]
    let q = heads.narrow(2, 0, n * dh)?.narrow(1, mlen, s)?;
    let k = split(&heads.narrow(2, n * dh, n * dh)?, klen)?;
    let v = split(&heads.narrow(2, 2 * n * dh, n * dh)?, klen)?;
    let pos = positions(&inv_freq, klen, cfg.clamp_len, h.device())?;
    let r = pos.matmul(&a.get((n * dh, d), "r_net.weight")?.t()?)?.reshape((klen, n, dh))?.transpose(0, 1)?.contiguous()?; // [N, K, Dh]
    let q = q.reshape((b, s, n, dh))?;
    let biased = |bias: &Tensor| q.broadcast_add(bias)?.transpose(1, 2)?.contiguous();
    let ac = biased(&r_w_bias)?.matmul(&k.transpose(2, 3)?.contiguous()?)?;
    let r_t = r.transpose(1, 2)?.unsqueeze(0)?.broadcast_as((b, n, dh, klen))?.contiguous()?;
    let bd = rel_shift(&biased(&r_r_bias)?.matmul(&r_t)?)?;
    let score = ((ac + bd)? * (1.0 / (dh as f64).sqrt()))?;
    // Key j is hidden from query i when it lies after it: j > mlen + i.
    let mask: Vec<f32> = (0..s).flat_map(|i| (0..klen).map(move |j| (j > mlen + i) as u8 as f32)).collect();
    let mask = Tensor::from_vec(mask, (1, 1, s, klen), h.device())?.broadcast_as(score.shape())?;
    let score = ((score * mask.affine(-1.0, 1.0)?)? - (mask * 1e30)?)?;
    let prob = candle_nn::ops::softmax_last_dim(&score)?;
    let vec = prob.matmul(&v)?.transpose(1, 2)?.reshape((b, s, n * dh))?;
    let out = vec.broadcast_matmul(&a.get((d, n * dh), "o_net.weight")?.t()?)?;
    let norm = |vb: VarBuilder| -> Result<LayerNorm> { candle_util::layer_norm(d, EPS, vb) };
    let h = norm(a.pp("layer_norm"))?.forward(&(out + h)?)?;
    let ff = t.pp(format!("layers.{l}.pos_ff"));
    let y = candle_util::linear(d, cfg.d_inner, ff.pp("CoreNet.0"))?.forward(&h)?.relu()?;
    let y = candle_util::linear(cfg.d_inner, d, ff.pp("CoreNet.3"))?.forward(&y)?;
    norm(ff.pp("layer_norm"))?.forward(&(y + h)?)
}

/// The memory a layer attends to: the last `mem_len` of what it read before, after the zeros an
/// evaluation starts from (`init_mems`). None when `mem_len` is 0.
fn memory(cfg: &TxlConfig, previous: Option<&Tensor>, like: &Tensor) -> Result<Option<Tensor>> {
    let m = cfg.mem_len;
    if m == 0 {
        return Ok(None);
    }
    let (b, _, d) = like.dims3()?;
    let zeros = Tensor::zeros((b, m, d), DType::F32, like.device())?;
    Ok(Some(match previous {
        None => zeros,
        Some(p) => {
            let all = Tensor::cat(&[&zeros, p], 1)?;
            all.narrow(1, all.dim(1)? - m, m)?
        }
    }))
}

/// `ProjectedAdaptiveLogSoftmax` without labels: log-probabilities over the whole vocabulary.
fn log_softmax(vb: &VarBuilder, cfg: &TxlConfig, hidden: &Tensor) -> Result<Tensor> {
    let (b, s, d) = hidden.dims3()?;
    let h = hidden.reshape((b * s, d))?;
    let ends = cfg.cutoff_ends();
    let logit = |i: usize, weight: &Tensor, bias: &Tensor| -> Result<Tensor> {
        let x = match out_proj_key(cfg, i) {
            Some(key) => h.matmul(&vb.get((d, cfg.cluster_dim(i)), &key)?)?,
            None => h.clone(),
        };
        Linear::new(weight.clone(), Some(bias.clone())).forward(&x)
    };
    let table = |i: usize| vb.get((ends[i + 1] - ends[i], cfg.cluster_dim(i)), &format!("transformer.word_emb.emb_layers.{i}.weight"));
    let out = if cfg.cutoffs.is_empty() {
        let bias = vb.get(cfg.vocab_size, "crit.out_layers.0.bias")?;
        candle_nn::ops::log_softmax(&logit(0, &table(0)?, &bias)?, D::Minus1)?
    } else {
        let c = cfg.cutoffs.len();
        let n0 = ends[1];
        let head_w = Tensor::cat(&[&table(0)?, &vb.get((c, cfg.d_embed), "crit.cluster_weight")?], 0)?;
        let head_b = Tensor::cat(&[&vb.get(n0, "crit.out_layers.0.bias")?, &vb.get(c, "crit.cluster_bias")?], 0)?;
        let head = candle_nn::ops::log_softmax(&logit(0, &head_w, &head_b)?, D::Minus1)?;
        let mut parts = vec![head.narrow(1, 0, n0)?];
        for i in 1..cfg.n_clusters() {
            let bias = vb.get(ends[i + 1] - ends[i], &format!("crit.out_layers.{i}.bias"))?;
            let tail = candle_nn::ops::log_softmax(&logit(i, &table(i)?, &bias)?, D::Minus1)?;
            parts.push(tail.broadcast_add(&head.narrow(1, n0 + i - 1, 1)?)?);
        }
        Tensor::cat(&parts, 1)?
    };
    out.reshape((b, s, cfg.vocab_size))
}

/// Loads `part`'s weights and runs it on `inputs` (in the order of [`Part::inputs`]).
pub fn run_part(vb: &VarBuilder, cfg: &TxlConfig, part: Part, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(vec![match (part, inputs) {
        (Part::Embeddings { .. }, [ids]) => embed(vb, cfg, ids)?,
        (Part::Layer { layer, .. }, [h]) => layer_fn(vb, cfg, layer, h, None)?,
        (Part::Layer { layer, .. }, [h, previous]) => layer_fn(vb, cfg, layer, h, Some(previous))?,
        (Part::LogSoftmax { .. }, [h]) => log_softmax(vb, cfg, h)?,
        _ => candle_core::bail!("wrong number of inputs ({}) for Transformer-XL stage {}", inputs.len(), part.name()),
    }])
}

fn layer_fn(vb: &VarBuilder, cfg: &TxlConfig, l: usize, h: &Tensor, previous: Option<&Tensor>) -> Result<Tensor> {
    let mem = memory(cfg, previous, h)?;
    layer(vb, cfg, l, h, mem.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After rel_shift, query i's score for key j is the one computed against relative distance
    /// (klen-1 … 0 laid out per column) mlen + i - j, for every visible key.
    #[test]
    fn rel_shift_aligns_relative_distances() {
        let (i, klen) = (3usize, 5usize);
        let mlen = klen - i;
        let data: Vec<f32> = (0..i).flat_map(|_| (0..klen).map(|c| (klen - 1 - c) as f32)).collect();
        let x = Tensor::from_vec(data, (1, 1, i, klen), &Device::Cpu).unwrap();
        let shifted = rel_shift(&x).unwrap().flatten_to(2).unwrap().to_vec2::<f32>().unwrap();
        for (q, row) in shifted.iter().enumerate() {
            for (k, &dist) in row.iter().enumerate().filter(|(k, _)| *k <= mlen + q) {
                assert_eq!(dist, (mlen + q - k) as f32, "query {q} key {k}");
            }
        }
    }
}
