//! The original GPT-2 (openai/gpt-2 `src/model.py`) as TensorFlow graphs that restore the
//! ORIGINAL checkpoint by its original names, one graph per stage, op for op: its own `norm`,
//! `softmax` and `gelu` (not TF's fused kernels), `conv1d` as a reshaped matmul, and the causal
//! mask `w·b − 1e10·(1 − b)`. It always computes what `model.py` computes (tanh GELU, eps 1e-5,
//! scores scaled by 1/√head_dim), whatever a config says about numerics.

use anyhow::{bail, Context, Result};
use tensorflow::Output;

use super::{block_scope, var, Gpt2Config, Part};
use crate::stage::{Stage, Values};
use crate::tf_graph::{self, GraphBuilder, OriginalWeights, Vars};

/// The original variables `part` reads.
pub fn original_vars(part: Part) -> Vec<String> {
    match part {
        Part::Embeddings => vec![var("wte"), var("wpe")],
        Part::Layer(l) => {
            let scope = block_scope(l);
            ["ln_1/g", "ln_1/b", "attn/c_attn/w", "attn/c_attn/b", "attn/c_proj/w", "attn/c_proj/b", "ln_2/g", "ln_2/b", "mlp/c_fc/w", "mlp/c_fc/b", "mlp/c_proj/w", "mlp/c_proj/b"]
                .iter()
                .map(|v| format!("{scope}/{v}"))
                .collect()
        }
        Part::LnF => vec![var("ln_f/g"), var("ln_f/b")],
        // The logits are `h · wteᵀ`: the LM head is the token embedding.
        Part::LmHead => vec![var("wte")],
    }
}

/// One stage of the original model, fed `stage.inputs` from `inputs`.
pub fn stage(weights: &OriginalWeights, cfg: &Gpt2Config, part: Part, stage: &Stage, inputs: &Values) -> Result<Values> {
    tf_graph::run_stage(weights, stage, inputs, &["input_ids"], |g, vars, xs, fed| {
        let shape = fed.0.first().map(|(_, v)| v.shape().to_vec()).unwrap_or_default();
        let (b, s) = (*shape.first().context("no batch axis")?, *shape.get(1).context("no sequence axis")?);
        build(g, cfg, part, vars, xs, b, s)
    })
}

fn build(g: &mut GraphBuilder, cfg: &Gpt2Config, part: Part, vars: &Vars, inputs: &[Output], b: usize, s: usize) -> Result<Vec<Output>> {
    let e = cfg.n_embd;
    Ok(match (part, inputs) {
        (Part::Embeddings, [ids]) => {
            if s > cfg.n_positions {
                bail!("probe length {s} exceeds n_ctx {}", cfg.n_positions);
            }
            // tf.gather(wte, X) + tf.gather(wpe, positions_for(X, 0)).
            let tokens = g.gather(&vars.get(&var("wte"))?, ids)?;
            let range: Vec<i32> = (0..s as i32).collect();
            let positions = g.const_i32(&range)?;
            let positions = g.gather(&vars.get(&var("wpe"))?, &positions)?;
            vec![g.add(&tokens, &positions)?]
        }
        (Part::Layer(l), [x]) => {
            let w = |n: &str| vars.get(&format!("{}/{n}", block_scope(l)));
            // block(): x + attn(norm(x)), then + mlp(norm(x)).
            let h = norm(g, x, &w("ln_1/g")?, &w("ln_1/b")?)?;
            let c = conv1d(g, &h, &w("attn/c_attn/w")?, &w("attn/c_attn/b")?, e, 3 * e, &[b, s])?;
            let a = attention(g, &c, cfg, b, s)?;
            let a = conv1d(g, &a, &w("attn/c_proj/w")?, &w("attn/c_proj/b")?, e, e, &[b, s])?;
            let x = g.add(x, &a)?;
            let h = norm(g, &x, &w("ln_2/g")?, &w("ln_2/b")?)?;
            let h = conv1d(g, &h, &w("mlp/c_fc/w")?, &w("mlp/c_fc/b")?, e, 4 * e, &[b, s])?;
            let h = gelu(g, &h)?;
            let m = conv1d(g, &h, &w("mlp/c_proj/w")?, &w("mlp/c_proj/b")?, 4 * e, e, &[b, s])?;
            vec![g.add(&x, &m)?]
        }
        (Part::LnF, [x]) => vec![norm(g, x, &vars.get(&var("ln_f/g"))?, &vars.get(&var("ln_f/b"))?)?],
        (Part::LmHead, [h]) => {
            let flat = g.reshape(h, &[(b * s) as i32, e as i32])?;
            let logits = g.matmul(&flat, &vars.get(&var("wte"))?, false, true)?;
            vec![g.reshape(&logits, &[b as i32, s as i32, cfg.vocab_size as i32])?]
        }
        _ => bail!("wrong number of inputs ({}) for GPT-2 stage {}", inputs.len(), part.name()),
    })
}

/// A reduction over the last axis, keeping it.
fn reduce_last(g: &mut GraphBuilder, op: &str, x: &Output) -> Result<Output> {
    let axis = g.const_i32(&[-1])?;
    let reduced = g.op(op, &[x, &axis], |nd| Ok(nd.set_attr_bool("keep_dims", true)?))?;
    Ok(Output { operation: reduced, index: 0 })
}

/// `norm()`: `n = x − mean(x)`, `n · rsqrt(mean(n²) + 1e-5) · g + b`.
pub fn norm(g: &mut GraphBuilder, x: &Output, gamma: &Output, beta: &Output) -> Result<Output> {
    let u = reduce_last(g, "Mean", x)?;
    let n = g.sub(x, &u)?;
    let sq = g.apply("Square", &[&n])?;
    let var = reduce_last(g, "Mean", &sq)?;
    let eps = g.scalar_f32(super::ORIGINAL_EPS as f32)?;
    let var = g.add(&var, &eps)?;
    let inv = g.rsqrt(&var)?;
    let x = g.mul(&n, &inv)?;
    let x = g.mul(&x, gamma)?;
    g.add(&x, beta)
}

/// `conv1d()`: `reshape(matmul(reshape(x, [-1, nx]), reshape(w, [-1, nf])) + b, start + [nf])`.
#[allow(clippy::too_many_arguments)]
pub fn conv1d(g: &mut GraphBuilder, x: &Output, w: &Output, bias: &Output, nx: usize, nf: usize, start: &[usize]) -> Result<Output> {
    let x = g.reshape(x, &[-1, nx as i32])?;
    let w = g.reshape(w, &[-1, nf as i32])?;
    let y = g.matmul(&x, &w, false, false)?;
    let y = g.add(&y, bias)?;
    let shape: Vec<i32> = start.iter().map(|&d| d as i32).chain([nf as i32]).collect();
    g.reshape(&y, &shape)
}

/// `gelu()`: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, in the original's operation order.
pub fn gelu(g: &mut GraphBuilder, x: &Output) -> Result<Output> {
    let half = g.scalar_f32(0.5)?;
    let half_x = g.mul(&half, x)?;
    let three = g.scalar_f32(3.0)?;
    let cube = g.pow(x, &three)?;
    let c = g.scalar_f32(0.044715)?;
    let t = g.mul(&c, &cube)?;
    let inner = g.add(x, &t)?;
    let k = g.scalar_f32((2.0f64 / std::f64::consts::PI).sqrt() as f32)?;
    let inner = g.mul(&k, &inner)?;
    let th = g.tanh(&inner)?;
    let one = g.scalar_f32(1.0)?;
    let s = g.add(&one, &th)?;
    g.mul(&half_x, &s)
}

/// `softmax()`: `exp(x − max(x)) / sum(exp(x − max(x)))` over the last axis.
pub fn softmax(g: &mut GraphBuilder, x: &Output) -> Result<Output> {
    let max = reduce_last(g, "Max", x)?;
    let x = g.sub(x, &max)?;
    let ex = g.apply("Exp", &[&x])?;
    let sum = reduce_last(g, "Sum", &ex)?;
    g.apply("RealDiv", &[&ex, &sum])
}

/// `attention_mask(nd, ns)` for nd = ns = `seq`, as [1, 1, seq, seq]: 1 where i ≥ j.
fn causal_ones(g: &mut GraphBuilder, seq: usize) -> Result<Output> {
    let values: Vec<f32> = (0..seq).flat_map(|i| (0..seq).map(move |j| if i >= j { 1.0 } else { 0.0 })).collect();
    g.const_f32(&[1, 1, seq, seq], &values)
}

/// `attn()` from its fused projection `c` [B, S, 3E] to the merged heads [B, S, E] (before
/// `c_proj`): split in three on the last axis, heads, scaled scores, the causal mask, softmax.
fn attention(g: &mut GraphBuilder, c: &Output, cfg: &Gpt2Config, b: usize, s: usize) -> Result<Output> {
    let (n, dh) = (cfg.n_head as i32, cfg.head_dim() as i32);
    let axis = g.scalar_i32(2)?;
    let split = g.op("Split", &[&axis, c], |nd| Ok(nd.set_attr_int("num_split", 3)?))?;
    let mut qkv = Vec::new();
    for k in 0..3 {
        let part = Output { operation: split.clone(), index: k };
        let heads = g.reshape(&part, &[b as i32, s as i32, n, dh])?;
        qkv.push(g.transpose(&heads, &[0, 2, 1, 3])?);
    }
    let w = g.batch_matmul(&qkv[0], &qkv[1], false, true)?;
    let width = g.scalar_f32(dh as f32)?;
    let scale = g.rsqrt(&width)?;
    let w = g.mul(&w, &scale)?;
    // mask_attn_weights(): w·b − 1e10·(1 − b).
    let ones = causal_ones(g, s)?;
    let kept = g.mul(&w, &ones)?;
    let one = g.scalar_f32(1.0)?;
    let masked = g.sub(&one, &ones)?;
    let big = g.scalar_f32(1e10)?;
    let penalty = g.mul(&big, &masked)?;
    let w = g.sub(&kept, &penalty)?;
    let w = softmax(g, &w)?;
    let a = g.batch_matmul(&w, &qkv[2], false, false)?;
    let a = g.transpose(&a, &[0, 2, 1, 3])?;
    g.reshape(&a, &[b as i32, s as i32, n * dh])
}
