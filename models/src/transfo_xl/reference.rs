//! The original Transformer-XL (kimiyoung/transformer-xl `tf/model.py`: `transformer`,
//! `mask_adaptive_embedding_lookup`, `rel_multihead_attn`, `positionwise_FF`, `_create_mask`,
//! `_cache_mem`, and `mask_adaptive_logsoftmax`'s logits taken over the whole vocabulary) as
//! TensorFlow graphs restoring the ORIGINAL checkpoint, one per stage. Inside a stage the layout
//! is the original's time-major [len, bsz, …]; stage inputs and outputs are batch-major.

use anyhow::{bail, Result};
use tensorflow::{DataType, Output};

use super::{original_emb_proj, original_out_proj, table_name, Part, TransfoXl, T};
use crate::stage::{Stage, Values};
use crate::tf_graph::{self, GraphBuilder, OriginalWeights, Vars};

/// The original variables `part` reads.
pub fn original_vars(model: &TransfoXl, part: Part) -> Vec<String> {
    let cfg = &model.cfg;
    let have = |n: &str| model.has(n);
    let mut v = Vec::new();
    match part {
        Part::Embeddings { .. } => {
            for i in 0..cfg.n_clusters() {
                v.push(table_name(cfg, i));
                v.extend(original_emb_proj(cfg, have, i));
            }
        }
        Part::Layer { layer, .. } => {
            let p = format!("{T}/layer_{layer}");
            for k in ["qkv", "r", "o"] {
                v.push(format!("{p}/rel_attn/{k}/kernel"));
            }
            for n in ["rel_attn/LayerNorm", "ff/LayerNorm"] {
                v.extend(["gamma", "beta"].iter().map(|x| format!("{p}/{n}/{x}")));
            }
            for d in ["layer_1", "layer_2"] {
                v.extend(["kernel", "bias"].iter().map(|x| format!("{p}/ff/{d}/{x}")));
            }
            v.extend([format!("{T}/r_w_bias"), format!("{T}/r_r_bias")]);
        }
        Part::LogSoftmax { .. } => {
            for i in 0..cfg.n_clusters() {
                v.push(table_name(cfg, i));
                v.extend(original_out_proj(cfg, have, i));
                if cfg.div_val != 1 {
                    v.push(format!("{T}/adaptive_softmax/cutoff_{i}/b"));
                }
            }
            match cfg.cutoffs.is_empty() {
                true => v.push(format!("{T}/adaptive_softmax/bias")),
                false => v.extend([format!("{T}/adaptive_softmax/cutoff_0/cluster_W"), format!("{T}/adaptive_softmax/cutoff_0/cluster_b")]),
            }
            v.sort();
            v.dedup();
        }
    }
    v
}

/// Runs `part` in TensorFlow on `inputs`.
pub fn stage(model: &TransfoXl, weights: &OriginalWeights, part: Part, stage: &Stage, inputs: &Values) -> Result<Values> {
    tf_graph::run_stage(weights, stage, inputs, &["input_ids", "next.input_ids"], |g, vars, xs, fed| {
        let shape = fed.0.first().map(|(_, v)| v.shape().to_vec()).unwrap_or_default();
        let (batch, len) = (*shape.first().unwrap_or(&0), *shape.get(1).unwrap_or(&0));
        // transformers computes positions from the stored inv_freq buffer, which a half-precision
        // folder stores rounded like every other tensor: the reference rounds it the same way.
        let narrow = weights.round_to.values().next().copied();
        Graph { g, vars, model, batch, len, narrow }.build(part, xs)
    })
}

struct Graph<'a> {
    g: &'a mut GraphBuilder,
    vars: &'a Vars,
    model: &'a TransfoXl,
    batch: usize,
    len: usize,
    /// The folder's float type when narrower than float32.
    narrow: Option<DataType>,
}

impl Graph<'_> {
    fn var(&self, name: &str) -> Result<Output> {
        self.vars.get(name)
    }

    /// [B, S, …] ↔ [S, B, …].
    fn swap01(&mut self, x: &Output, rank: usize) -> Result<Output> {
        let mut perm: Vec<i32> = (0..rank as i32).collect();
        perm.swap(0, 1);
        self.g.transpose(x, &perm)
    }

    fn build(&mut self, part: Part, xs: &[Output]) -> Result<Vec<Output>> {
        Ok(vec![match (part, xs) {
            (Part::Embeddings { .. }, [ids]) => {
                let ids = self.swap01(ids, 2)?;
                let y = self.embed(&ids)?;
                self.swap01(&y, 3)?
            }
            (Part::Layer { layer, .. }, [h, rest @ ..]) => {
                let w = self.swap01(h, 3)?;
                let previous = match rest {
                    [p] => Some(self.swap01(p, 3)?),
                    _ => None,
                };
                let mems = self.memory(previous.as_ref())?;
                let out = self.layer(layer, &w, mems.as_ref())?;
                self.swap01(&out, 3)?
            }
            (Part::LogSoftmax { .. }, [h]) => {
                let hidden = self.swap01(h, 3)?;
                let out = self.log_softmax(&hidden)?;
                self.swap01(&out, 3)?
            }
            _ => bail!("wrong number of inputs ({}) for Transformer-XL stage {}", xs.len(), part.name()),
        }])
    }

    /// mask_adaptive_embedding_lookup: each id looked up in its cluster (ids outside the cluster
    /// masked to zero rather than gathered apart, the same sums), projected, scaled by sqrt(D).
    fn embed(&mut self, x: &Output) -> Result<Output> {
        let model = self.model;
        let cfg = &model.cfg;
        let (s, b, d) = (self.len as i32, self.batch as i32, cfg.d_model);
        let have = |n: &str| model.has(n);
        let mut y: Option<Output> = None;
        let ends = cfg.cutoff_ends();
        for i in 0..cfg.n_clusters() {
            let (lo, hi) = (ends[i] as i32, ends[i + 1] as i32);
            let table = self.var(&table_name(cfg, i))?;
            let proj = original_emb_proj(cfg, have, i);
            let cur = if cfg.div_val == 1 {
                self.g.gather(&table, x)?
            } else {
                let lo_t = self.g.scalar_i32(lo)?;
                let hi_t = self.g.scalar_i32(hi)?;
                let ge = self.g.apply("GreaterEqual", &[x, &lo_t])?;
                let lt = self.g.apply("Less", &[x, &hi_t])?;
                let inside = self.g.apply("LogicalAnd", &[&ge, &lt])?;
                let inside = self.g.cast(&inside, DataType::Float)?;
                let inside = self.g.reshape(&inside, &[s, b, 1])?;
                let local = self.g.apply("Sub", &[x, &lo_t])?;
                let (zero, top) = (self.g.scalar_i32(0)?, self.g.scalar_i32(hi - lo - 1)?);
                let local = self.g.apply("ClipByValue", &[&local, &zero, &top])?;
                let rows = self.g.gather(&table, &local)?;
                let rows = match &proj {
                    Some(p) => self.g.einsum("ibe,ed->ibd", &rows, &self.var(p)?)?,
                    None => rows,
                };
                self.g.mul(&rows, &inside)?
            };
            let cur = match (&proj, cfg.div_val) {
                (Some(p), 1) => self.g.einsum("ibe,ed->ibd", &cur, &self.var(p)?)?,
                _ => cur,
            };
            y = Some(match y {
                None => cur,
                Some(acc) => self.g.add(&acc, &cur)?,
            });
        }
        let scale = self.g.scalar_f32((d as f32).sqrt())?;
        self.g.mul(&y.expect("at least one cluster"), &scale)
    }

    /// The memory a layer attends to: `_cache_mem` of what it read in the segment before onto the
    /// zero memories an evaluation starts from, [mem_len, B, D]; None when mem_len is 0.
    fn memory(&mut self, previous: Option<&Output>) -> Result<Option<Output>> {
        let model = self.model;
        let cfg = &model.cfg;
        let m = cfg.mem_len;
        if m == 0 {
            return Ok(None);
        }
        let zeros = self.g.const_f32(&[m, self.batch, cfg.d_model], &vec![0.0; m * self.batch * cfg.d_model])?;
        Ok(Some(match previous {
            None => zeros,
            Some(p) => {
                let all = self.g.concat(&[zeros, p.clone()], 0)?;
                self.g.slice(&all, &[self.len as i32, 0, 0], &[m as i32, -1, -1])?
            }
        }))
    }

    /// The relative position encoding: pos_seq klen-1 … 0 clamped to clamp_len, [klen, 1, D].
    fn pos_emb(&mut self, klen: usize) -> Result<Output> {
        let model = self.model;
        let cfg = &model.cfg;
        let d = cfg.d_model;
        let pos: Vec<f32> = (0..klen).rev().map(|p| p as f32).collect();
        let mut pos_seq = self.g.const_f32(&[klen], &pos)?;
        if cfg.clamp_len > 0 {
            let clamp = self.g.scalar_f32(cfg.clamp_len as f32)?;
            pos_seq = self.g.apply("Minimum", &[&pos_seq, &clamp])?;
        }
        let freq: Vec<f32> = (0..d).step_by(2).map(|k| k as f32).collect();
        let freq = self.g.const_f32(&[freq.len()], &freq)?;
        let d_model = self.g.scalar_f32(d as f32)?;
        let exponent = self.g.apply("RealDiv", &[&freq, &d_model])?;
        let base = self.g.scalar_f32(10000.0)?;
        let power = self.g.pow(&base, &exponent)?;
        let one = self.g.scalar_f32(1.0)?;
        let mut inv_freq = self.g.apply("RealDiv", &[&one, &power])?;
        if let Some(dtype) = self.narrow {
            let rounded = self.g.cast(&inv_freq, dtype)?;
            inv_freq = self.g.cast(&rounded, DataType::Float)?;
        }
        let angles = self.g.einsum("i,j->ij", &pos_seq, &inv_freq)?;
        let (sin, cos) = (self.g.sin(&angles)?, self.g.cos(&angles)?);
        let pos_emb = self.g.concat(&[sin, cos], -1)?;
        self.g.reshape(&pos_emb, &[klen as i32, 1, d as i32])
    }

    /// r_w_bias or r_r_bias of layer `l`: its slice when untied, else the shared one.
    fn bias(&mut self, name: &str, l: usize) -> Result<Output> {
        let model = self.model;
        let cfg = &model.cfg;
        let v = self.var(&format!("{T}/{name}"))?;
        if !cfg.untie_r {
            return Ok(v);
        }
        let slice = self.g.slice(&v, &[l as i32, 0, 0], &[1, -1, -1])?;
        self.g.reshape(&slice, &[cfg.n_head as i32, cfg.d_head as i32])
    }

    /// rel_multihead_attn then positionwise_FF; `w` [S, B, D], `mems` [M, B, D].
    fn layer(&mut self, l: usize, w: &Output, mems: Option<&Output>) -> Result<Output> {
        let model = self.model;
        let cfg = &model.cfg;
        let (s, b, d, n, dh) = (self.len as i32, self.batch as i32, cfg.d_model as i32, cfg.n_head as i32, cfg.d_head as i32);
        let mlen = if mems.is_some() { cfg.mem_len as i32 } else { 0 };
        let klen = mlen + s;
        let p = format!("{T}/layer_{l}");
        let cat = match mems {
            Some(m) => self.g.concat(&[m.clone(), w.clone()], 0)?,
            None => w.clone(),
        };
        let w_heads = self.g.einsum("ibh,hk->ibk", &cat, &self.var(&format!("{p}/rel_attn/qkv/kernel"))?)?;
        let r = self.pos_emb(klen as usize)?;
        let r_head_k = self.g.einsum("ibh,hk->ibk", &r, &self.var(&format!("{p}/rel_attn/r/kernel"))?)?;
        let r_head_k = self.g.reshape(&r_head_k, &[klen, n, dh])?;
        // tf.split(w_heads, 3, -1), then the last qlen queries.
        let q = self.g.slice(&w_heads, &[mlen, 0, 0], &[s, -1, n * dh])?;
        let k = self.g.slice(&w_heads, &[0, 0, n * dh], &[-1, -1, n * dh])?;
        let v = self.g.slice(&w_heads, &[0, 0, 2 * n * dh], &[-1, -1, n * dh])?;
        let q = self.g.reshape(&q, &[s, b, n, dh])?;
        let k = self.g.reshape(&k, &[klen, b, n, dh])?;
        let v = self.g.reshape(&v, &[klen, b, n, dh])?;
        let r_w = self.bias("r_w_bias", l)?;
        let r_r = self.bias("r_r_bias", l)?;
        let rw_q = self.g.add(&q, &r_w)?;
        let rr_q = self.g.add(&q, &r_r)?;
        let ac = self.g.einsum("ibnd,jbnd->ijbn", &rw_q, &k)?;
        let bd = self.g.einsum("ibnd,jnd->ijbn", &rr_q, &r_head_k)?;
        // rel_shift: pad one zero row in front of axis 1, view as [J+1, I], drop the first row.
        let pads = self.g.const_i32(&[0, 0, 1, 0, 0, 0, 0, 0])?;
        let pads = self.g.reshape(&pads, &[4, 2])?;
        let bd = self.g.apply("Pad", &[&bd, &pads])?;
        let bd = self.g.reshape(&bd, &[klen + 1, s, b, n])?;
        let bd = self.g.slice(&bd, &[1, 0, 0, 0], &[-1, -1, -1, -1])?;
        let bd = self.g.reshape(&bd, &[s, klen, b, n])?;
        let score = self.g.add(&ac, &bd)?;
        let scale = self.g.scalar_f32(1.0 / (cfg.d_head as f32).sqrt())?;
        let score = self.g.mul(&score, &scale)?;
        // _create_mask(qlen, mlen): 1 where key j lies after query i.
        let mask: Vec<f32> = (0..s).flat_map(|i| (0..klen).map(move |j| (j > mlen + i) as u8 as f32)).collect();
        let mask = self.g.const_f32(&[s as usize, klen as usize, 1, 1], &mask)?;
        let one = self.g.scalar_f32(1.0)?;
        let keep = self.g.sub(&one, &mask)?;
        let big = self.g.scalar_f32(1e30)?;
        let score = self.g.mul(&score, &keep)?;
        let masked = self.g.mul(&big, &mask)?;
        let score = self.g.sub(&score, &masked)?;
        // softmax over j (axis 1).
        let score = self.g.transpose(&score, &[0, 2, 3, 1])?;
        let prob = self.g.softmax(&score)?;
        let prob = self.g.transpose(&prob, &[0, 3, 1, 2])?;
        let vec = self.g.einsum("ijbn,jbnd->ibnd", &prob, &v)?;
        let vec = self.g.reshape(&vec, &[s, b, n * dh])?;
        let out = self.g.einsum("ibk,kh->ibh", &vec, &self.var(&format!("{p}/rel_attn/o/kernel"))?)?;
        let out = self.g.add(&out, w)?;
        let ln = format!("{p}/rel_attn/LayerNorm");
        let out = self.g.layer_norm(&out, &self.var(&format!("{ln}/gamma"))?, &self.var(&format!("{ln}/beta"))?, 1e-12)?;
        // positionwise_FF.
        let flat = self.g.reshape(&out, &[-1, d])?;
        let f = format!("{p}/ff");
        let y = self.g.dense(&flat, &self.var(&format!("{f}/layer_1/kernel"))?, Some(&self.var(&format!("{f}/layer_1/bias"))?))?;
        let y = self.g.relu(&y)?;
        let y = self.g.dense(&y, &self.var(&format!("{f}/layer_2/kernel"))?, Some(&self.var(&format!("{f}/layer_2/bias"))?))?;
        let y = self.g.add(&y, &flat)?;
        let y = self.g.layer_norm(&y, &self.var(&format!("{f}/LayerNorm/gamma"))?, &self.var(&format!("{f}/LayerNorm/beta"))?, 1e-12)?;
        self.g.reshape(&y, &[s, b, d])
    }

    /// mask_adaptive_logsoftmax's `_logit`: x projected by `proj` [e, d] when given, then W [n, e].
    fn logit(&mut self, x: &Output, w: &Output, bias: &Output, proj: Option<&str>) -> Result<Output> {
        let y = match proj {
            Some(p) => self.g.einsum("ibd,ed->ibe", x, &self.var(p)?)?,
            None => x.clone(),
        };
        let y = self.g.einsum("ibd,nd->ibn", &y, w)?;
        self.g.add(&y, bias)
    }

    /// The adaptive log-softmax's log-probabilities of every token: head tokens from the head,
    /// cluster i's tokens as head log-prob of cluster i plus the tail's own, [S, B, V].
    fn log_softmax(&mut self, hidden: &Output) -> Result<Output> {
        let model = self.model;
        let cfg = &model.cfg;
        let have = |n: &str| model.has(n);
        let projs: Vec<Option<String>> = (0..cfg.n_clusters()).map(|i| original_out_proj(cfg, have, i)).collect();
        if cfg.cutoffs.is_empty() {
            let table = self.var(&table_name(cfg, 0))?;
            let bias = self.var(&format!("{T}/adaptive_softmax/bias"))?;
            let logit = self.logit(hidden, &table, &bias, projs[0].as_deref())?;
            return self.g.apply("LogSoftmax", &[&logit]);
        }
        let ends = cfg.cutoff_ends();
        let n0 = ends[1] as i32;
        let s0 = format!("{T}/adaptive_softmax/cutoff_0");
        let head_w = self.g.concat(&[self.var(&table_name(cfg, 0))?, self.var(&format!("{s0}/cluster_W"))?], 0)?;
        let head_b = self.g.concat(&[self.var(&format!("{s0}/b"))?, self.var(&format!("{s0}/cluster_b"))?], 0)?;
        let head = self.logit(hidden, &head_w, &head_b, projs[0].as_deref())?;
        let head = self.g.apply("LogSoftmax", &[&head])?;
        let mut parts = vec![self.g.slice(&head, &[0, 0, 0], &[-1, -1, n0])?];
        for (i, proj) in projs.iter().enumerate().skip(1) {
            let table = self.var(&table_name(cfg, i))?;
            let b = self.var(&format!("{T}/adaptive_softmax/cutoff_{i}/b"))?;
            let tail = self.logit(hidden, &table, &b, proj.as_deref())?;
            let tail = self.g.apply("LogSoftmax", &[&tail])?;
            let cluster = self.g.slice(&head, &[0, 0, n0 + i as i32 - 1], &[-1, -1, 1])?;
            parts.push(self.g.add(&tail, &cluster)?);
        }
        self.g.concat(&parts, -1)
    }
}
