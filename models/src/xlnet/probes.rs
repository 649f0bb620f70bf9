//! XLNet's probes, named as `XLNetLMHeadModel.forward` takes them (batch-major; the reference
//! transposes to the original's time-major layout):
//! - "input_ids", "token_type_ids", "attention_mask" [B, S]: rows padded on the LEFT as XLNet's
//!   data pipeline pads (its summary reads the last position), segment ids as run_classifier
//!   makes them (A = 0, B = 1, the final `<cls>` = 2, padding = 4);
//! - with two streams, "perm_mask" [B, S, S] and "target_mapping" [B, P, S]: a random
//!   factorisation order per row whose last tokens are prediction targets (at most P, fewer
//!   in short rows, whose spare mapping rows stay zero), as XLNet's pretraining builds them.

use super::XlnetConfig;
use crate::probe::{Probes, Rng};
use crate::stage::{Value, Values};

/// Default probe length (the model has no position limit).
pub const DEFAULT_LEN: usize = 12;

pub fn random(cfg: &XlnetConfig, two_stream: bool, seed: u64, batch: usize, seq_len: usize) -> Probes {
    let mut rng = Rng::new(seed);
    let s = seq_len.max(1);
    let (mut ids, mut types, mut mask, mut lengths) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for b in 0..batch {
        let len = match b {
            0 => s,
            _ if b == batch - 1 => 1,
            _ => 1 + rng.below(s as u64) as usize,
        };
        let pad = s - len;
        for p in 0..s {
            let real = p >= pad;
            ids.push(if real { rng.below(cfg.n_token as u64) as i64 } else { 5 });
            let k = p.saturating_sub(pad);
            types.push(match (real, k) {
                (false, _) => 4,
                _ if p == s - 1 => 2,
                _ if k < len / 2 => 0,
                _ => 1,
            });
            mask.push(real as i64);
        }
        lengths.push(len);
    }
    let mut inputs = Values::default();
    inputs.push("input_ids", Value::Int { shape: vec![batch, s], data: ids });
    inputs.push("token_type_ids", Value::Int { shape: vec![batch, s], data: types });
    inputs.push("attention_mask", Value::Int { shape: vec![batch, s], data: mask });
    if two_stream {
        let predict = (s / 4).max(1);
        let mut perm = vec![0f32; batch * s * s];
        let mut mapping = vec![0f32; batch * predict * s];
        for (b, &len) in lengths.iter().enumerate() {
            let pad = s - len;
            // A random order of the row's real positions (Fisher–Yates).
            let mut order: Vec<usize> = (pad..s).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let mut rank = vec![0usize; s];
            for (r, &p) in order.iter().enumerate() {
                rank[p] = r;
            }
            // The last targets in the order are predicted; at least one real token is not, so
            // every query sees something.
            let targets = predict.min(len - 1);
            let first_target = len - targets;
            for i in 0..s {
                for j in pad..s {
                    let j_is_target = rank[j] >= first_target;
                    // A query may not see a target at or after itself in the order.
                    let hidden = j_is_target && (i < pad || rank[j] >= rank[i]);
                    perm[(b * s + i) * s + j] = hidden as u8 as f32;
                }
            }
            for (m, &p) in order[first_target..].iter().enumerate() {
                mapping[(b * predict + m) * s + p] = 1.0;
            }
        }
        inputs.push("perm_mask", Value::Float { shape: vec![batch, s, s], data: perm });
        inputs.push("target_mapping", Value::Float { shape: vec![batch, predict, s], data: mapping });
    }
    Probes { seed, inputs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> XlnetConfig {
        XlnetConfig { n_token: 30, d_model: 8, n_layer: 1, n_head: 2, d_head: 4, d_inner: 12, ff_activation: "gelu".into(), untie_r: true }
    }

    #[test]
    fn rows_are_left_padded_and_targets_are_hidden_from_what_precedes_them() {
        let p = random(&cfg(), true, 3, 4, 8);
        assert_eq!(p.inputs.names(), ["input_ids", "token_type_ids", "attention_mask", "perm_mask", "target_mapping"]);
        assert_eq!(p, random(&cfg(), true, 3, 4, 8));
        let get = |n: &str| p.inputs.get(n).unwrap().clone();
        let (Value::Int { data: mask, .. }, Value::Float { data: perm, .. }, Value::Float { data: map, shape }) = (get("attention_mask"), get("perm_mask"), get("target_mapping")) else {
            panic!("dtypes")
        };
        assert_eq!(shape, [4, 2, 8]);
        for b in 0..4 {
            let row = &mask[b * 8..b * 8 + 8];
            let len = row.iter().sum::<i64>() as usize;
            assert!(row[..8 - len].iter().all(|&m| m == 0) && row[8 - len..].iter().all(|&m| m == 1), "left padding: {row:?}");
            // Every mapping row is one-hot on a real position or zero; a target never sees itself.
            for m in 0..2 {
                let r = &map[(b * 2 + m) * 8..(b * 2 + m + 1) * 8];
                let ones: Vec<usize> = (0..8).filter(|&k| r[k] == 1.0).collect();
                assert!(ones.len() <= 1 && ones.iter().all(|&k| k >= 8 - len));
                for &t in &ones {
                    assert_eq!(perm[(b * 8 + t) * 8 + t], 1.0);
                }
            }
            // Every query sees at least one real key.
            for i in 0..8 {
                assert!((8 - len..8).any(|j| perm[(b * 8 + i) * 8 + j] == 0.0), "row {b} query {i} sees nothing");
            }
        }
        assert!(!random(&cfg(), false, 3, 4, 8).inputs.names().contains(&"perm_mask"));
    }
}
