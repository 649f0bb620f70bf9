//! XLM's probes, named as `XLMWithLMHeadModel.forward` takes them (batch-major; the reference
//! reads them as the original's `x`, `lengths` and `langs`):
//! - "input_ids" [B, S]: rows padded on the right, as XLM batches sentences by `lengths`; the
//!   first row is full (every position row is used), the last one token long; padding is
//!   `pad_index`;
//! - "attention_mask" [B, S]: 1 for each row's first `length` positions;
//! - "langs" [B, S], for models with language embeddings: each row in two languages that switch
//!   half way, like a TLM sentence pair (padding gets the first).

use super::XlmConfig;
use crate::probe::{padding_mask, Probes, Rng};
use crate::stage::{Value, Values};

pub fn random(cfg: &XlmConfig, seed: u64, batch: usize, seq_len: usize) -> Probes {
    let mut rng = Rng::new(seed);
    let s = seq_len.max(1);
    let (mut ids, mut langs, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
    for b in 0..batch {
        let len = match b {
            0 => s,
            _ if b == batch - 1 => 1,
            _ => 1 + rng.below(s as u64) as usize,
        };
        let (first, second) = (rng.below(cfg.n_langs as u64) as i64, rng.below(cfg.n_langs as u64) as i64);
        for p in 0..s {
            ids.push(if p < len { rng.below(cfg.n_words as u64) as i64 } else { cfg.pad_index as i64 });
            langs.push(if p < len && p >= len.div_ceil(2) { second } else { first });
        }
        lengths.push(len);
    }
    let mut inputs = Values::default();
    inputs.push("input_ids", Value::Int { shape: vec![batch, s], data: ids });
    inputs.push("attention_mask", padding_mask(&lengths, s));
    if cfg.lang_embeddings() {
        inputs.push("langs", Value::Int { shape: vec![batch, s], data: langs });
    }
    Probes { seed, inputs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n_langs: usize) -> XlmConfig {
        XlmConfig {
            n_words: 30, emb_dim: 8, n_layers: 1, n_heads: 2, n_langs, use_lang_emb: true, gelu_activation: true,
            sinusoidal_embeddings: false, share_inout_emb: true, max_positions: 16, pad_index: 2,
        }
    }

    #[test]
    fn right_padded_rows_in_two_languages() {
        let p = random(&cfg(3), 4, 4, 8);
        assert_eq!(p, random(&cfg(3), 4, 4, 8));
        assert_eq!(p.inputs.names(), ["input_ids", "attention_mask", "langs"]);
        let ints = |n: &str| match p.inputs.get(n) {
            Some(Value::Int { data, shape }) if shape == &[4, 8] => data.clone(),
            other => panic!("{n}: {other:?}"),
        };
        let (ids, mask, langs) = (ints("input_ids"), ints("attention_mask"), ints("langs"));
        for row in 0..4 {
            let r = row * 8..row * 8 + 8;
            let len = mask[r.clone()].iter().sum::<i64>() as usize;
            assert_eq!(len, match row { 0 => 8, 3 => 1, _ => len });
            assert!(mask[r.clone()].iter().enumerate().all(|(s, &m)| m == (s < len) as i64), "right padding");
            assert!(ids[r.clone()].iter().enumerate().all(|(s, &id)| if s < len { (0..30).contains(&id) } else { id == 2 }));
            assert!(langs[r].iter().all(|l| (0..3).contains(l)));
        }
        assert_eq!(random(&cfg(1), 4, 4, 8).inputs.names(), ["input_ids", "attention_mask"]);
    }
}
