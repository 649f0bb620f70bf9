//! Transformer-XL's probes: two consecutive segments of token ids [B, S], "input_ids" then
//! "next.input_ids", as an evaluation loop feeds them (no padding: the model has no padding mask).
//! The ids are drawn so that every adaptive cluster is used in the first row of each segment.

use super::TxlConfig;
use crate::probe::{Probes, Rng};
use crate::stage::{Value, Values};

/// Default segment length (the model has no position limit).
pub const DEFAULT_LEN: usize = 6;

pub fn random(cfg: &TxlConfig, seed: u64, batch: usize, seq_len: usize) -> Probes {
    let mut rng = Rng::new(seed);
    let s = seq_len.max(1);
    let ends = cfg.cutoff_ends();
    let mut inputs = Values::default();
    for name in ["input_ids", "next.input_ids"] {
        let data = (0..batch * s)
            .map(|k| {
                // Position k < clusters of a segment's first row takes a token of cluster k.
                let cluster = if k < s && k < ends.len() - 1 { k } else { rng.below(ends.len() as u64 - 1) as usize };
                (ends[cluster] as u64 + rng.below((ends[cluster + 1] - ends[cluster]) as u64)) as i64
            })
            .collect();
        inputs.push(name, Value::Int { shape: vec![batch, s], data });
    }
    Probes { seed, inputs }
}
