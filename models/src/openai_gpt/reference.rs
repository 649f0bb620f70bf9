//! The original OpenAI GPT (openai/finetune-transformer-lm `train.py`) as TensorFlow graphs, one
//! per stage, op for op: `embed` (tokens + positions), post-LN `block`s with `_norm`, `conv1d`
//! as a reshaped matmul, keys transposed before `matmul(q, k)`, the mask `w·b + -1e9·(1 − b)`
//! and `tf.nn.softmax`. The release's arrays are no TF checkpoint: the graph holds them as
//! constants (`OriginalWeights::arrays`).

use anyhow::{bail, Context, Result};
use tensorflow::Output;

use super::{block_scope, var, GptConfig, Part};
use crate::gpt2::reference::{conv1d, gelu};
use crate::stage::{Stage, Values};
use crate::tf_graph::{self, GraphBuilder, OriginalWeights, Vars};

/// The original arrays `part` reads.
pub fn original_vars(part: Part) -> Vec<String> {
    match part {
        Part::Embeddings => vec![var("tok_embd"), var("pos_embd")],
        Part::Layer(l) => crate::openai_gpt::synthetic::LAYER_ARRAYS.iter().map(|v| format!("{}/{v}", block_scope(l))).collect(),
        Part::LmHead => vec![var("tok_embd")],
        // The release has no multiple-choice head: nothing to read.
        Part::McHead => Vec::new(),
    }
}

pub fn stage(weights: &OriginalWeights, cfg: &GptConfig, part: Part, stage: &Stage, inputs: &Values) -> Result<Values> {
    tf_graph::run_stage(weights, stage, inputs, &["input_ids"], |g, vars, xs, fed| {
        let shape = fed.0.first().map(|(_, v)| v.shape().to_vec()).unwrap_or_default();
        let (b, s) = (*shape.first().context("no batch axis")?, *shape.get(1).context("no sequence axis")?);
        build(g, cfg, part, vars, xs, b, s)
    })
}

fn build(g: &mut GraphBuilder, cfg: &GptConfig, part: Part, vars: &Vars, inputs: &[Output], b: usize, s: usize) -> Result<Vec<Output>> {
    let e = cfg.n_embd;
    Ok(match (part, inputs) {
        (Part::Embeddings, [ids]) => {
            if s > cfg.n_positions {
                bail!("probe length {s} exceeds n_ctx {}", cfg.n_positions);
            }
            // embed(): the token row plus the position row of the joint table.
            let tokens = g.gather(&vars.get(&var("tok_embd"))?, ids)?;
            let range: Vec<i32> = (0..s as i32).collect();
            let at = g.const_i32(&range)?;
            let positions = g.gather(&vars.get(&var("pos_embd"))?, &at)?;
            vec![g.add(&tokens, &positions)?]
        }
        (Part::Layer(l), [x]) => {
            let w = |n: &str| vars.get(&format!("{}/{n}", block_scope(l)));
            // block(): n = ln_1(x + attn(x)); ln_2(n + mlp(n)).
            let c = conv1d(g, x, &w("attn/c_attn/w")?, &w("attn/c_attn/b")?, e, 3 * e, &[b, s])?;
            let a = attention(g, &c, cfg, b, s)?;
            let a = conv1d(g, &a, &w("attn/c_proj/w")?, &w("attn/c_proj/b")?, e, e, &[b, s])?;
            let sum = g.add(x, &a)?;
            let n = norm(g, &sum, &w("ln_1/g")?, &w("ln_1/b")?)?;
            let h = conv1d(g, &n, &w("mlp/c_fc/w")?, &w("mlp/c_fc/b")?, e, 4 * e, &[b, s])?;
            let h = activation(g, &cfg.afn, &h)?;
            let m = conv1d(g, &h, &w("mlp/c_proj/w")?, &w("mlp/c_proj/b")?, 4 * e, e, &[b, s])?;
            let sum = g.add(&n, &m)?;
            vec![norm(g, &sum, &w("ln_2/g")?, &w("ln_2/b")?)?]
        }
        (Part::LmHead, [h]) => {
            // lm_logits = matmul(reshape(h, [-1, n_embd]), we, transpose_b): the token rows.
            let flat = g.reshape(h, &[(b * s) as i32, e as i32])?;
            let logits = g.matmul(&flat, &vars.get(&var("tok_embd"))?, false, true)?;
            vec![g.reshape(&logits, &[b as i32, s as i32, cfg.vocab_size as i32])?]
        }
        (Part::McHead, [h]) => {
            // A linear classifier on the last position, with the zero weights the conversion writes.
            let last = g.slice(h, &[0, s as i32 - 1, 0], &[-1, 1, -1])?;
            let last = g.reshape(&last, &[b as i32, e as i32])?;
            let w = g.const_f32(&[e, 1], &vec![0.0; e])?;
            let bias = g.const_f32(&[1], &[0.0])?;
            let logits = g.matmul(&last, &w, false, false)?;
            let logits = g.add(&logits, &bias)?;
            vec![g.reshape(&logits, &[b as i32])?]
        }
        _ => bail!("wrong number of inputs ({}) for OpenAI GPT stage {}", inputs.len(), part.name()),
    })
}

fn reduce_mean_last(g: &mut GraphBuilder, x: &Output) -> Result<Output> {
    g.mean(x, &[-1], true)
}

/// `_norm()`: `(x − u) · rsqrt(mean((x − u)²) + 1e-5) · g + b`.
fn norm(g: &mut GraphBuilder, x: &Output, gamma: &Output, beta: &Output) -> Result<Output> {
    let u = reduce_mean_last(g, x)?;
    let centered = g.sub(x, &u)?;
    let sq = g.apply("Square", &[&centered])?;
    let var = reduce_mean_last(g, &sq)?;
    let eps = g.scalar_f32(super::ORIGINAL_EPS as f32)?;
    let var = g.add(&var, &eps)?;
    let inv = g.rsqrt(&var)?;
    let x = g.mul(&centered, &inv)?;
    let x = g.mul(&x, gamma)?;
    g.add(&x, beta)
}

/// `act_fns[afn]`: gelu (tanh approximation, as GPT-2's), `tf.nn.relu`, or `x·sigmoid(x)`.
fn activation(g: &mut GraphBuilder, afn: &str, x: &Output) -> Result<Output> {
    match afn {
        "gelu" => gelu(g, x),
        "relu" => g.relu(x),
        "swish" => {
            let sig = g.apply("Sigmoid", &[x])?;
            g.mul(x, &sig)
        }
        other => bail!("the original afn {other:?} is not supported (train.py has gelu, relu, swish)"),
    }
}

/// `attn()` from the fused projection `c` [B, S, 3E] to the merged heads [B, S, E].
fn attention(g: &mut GraphBuilder, c: &Output, cfg: &GptConfig, b: usize, s: usize) -> Result<Output> {
    let (n, dh) = (cfg.n_head as i32, cfg.head_dim() as i32);
    let axis = g.scalar_i32(2)?;
    let split = g.op("Split", &[&axis, c], |nd| Ok(nd.set_attr_int("num_split", 3)?))?;
    let part = |k: i32| Output { operation: split.clone(), index: k };
    let heads = |g: &mut GraphBuilder, x: &Output, perm: &[i32]| -> Result<Output> {
        let x = g.reshape(x, &[b as i32, s as i32, n, dh])?;
        g.transpose(&x, perm)
    };
    // split_heads: q and v [B, H, S, Dh]; k [B, H, Dh, S].
    let q = heads(g, &part(0), &[0, 2, 1, 3])?;
    let k = heads(g, &part(1), &[0, 2, 3, 1])?;
    let v = heads(g, &part(2), &[0, 2, 1, 3])?;
    let w = g.batch_matmul(&q, &k, false, false)?;
    let width = g.scalar_f32(dh as f32)?;
    let scale = g.rsqrt(&width)?;
    let w = g.mul(&w, &scale)?;
    // mask_attn_weights(): w·b + -1e9·(1 − b), b the lower triangle.
    let ones: Vec<f32> = (0..s).flat_map(|i| (0..s).map(move |j| if j <= i { 1.0 } else { 0.0 })).collect();
    let band = g.const_f32(&[1, 1, s, s], &ones)?;
    let kept = g.mul(&w, &band)?;
    let one = g.scalar_f32(1.0)?;
    let masked = g.sub(&one, &band)?;
    let big = g.scalar_f32(-1e9)?;
    let penalty = g.mul(&big, &masked)?;
    let w = g.add(&kept, &penalty)?;
    let w = g.softmax(&w)?;
    let a = g.batch_matmul(&w, &v, false, false)?;
    let a = g.transpose(&a, &[0, 2, 1, 3])?;
    g.reshape(&a, &[b as i32, s as i32, n * dh])
}
