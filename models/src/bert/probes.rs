//! BERT's probe inputs: "input_ids", "token_type_ids" and "attention_mask", each [batch, seq].

use super::BertConfig;
use crate::probe::{sentence_pairs, Probes};

/// BERT's probes: [`sentence_pairs`] over its vocabulary and token types.
pub fn random(cfg: &BertConfig, seed: u64, batch: usize, seq_len: usize) -> Probes {
    sentence_pairs(cfg.vocab_size, cfg.type_vocab_size, seed, batch, seq_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::Value;

    fn cfg(vocab: usize, types: usize) -> BertConfig {
        serde_json::from_value(serde_json::json!({
            "vocab_size": vocab, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 12, "max_position_embeddings": 6, "type_vocab_size": types
        }))
        .unwrap()
    }

    fn ints<'a>(p: &'a Probes, name: &str) -> &'a [i64] {
        match p.inputs.get(name) {
            Some(Value::Int { shape, data }) if shape == &[4, 6] => data,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn rows_are_padded_from_full_to_one_token_with_sentence_pair_types() {
        let p = random(&cfg(10, 2), 5, 4, 6);
        assert_eq!(p.inputs.names(), ["input_ids", "token_type_ids", "attention_mask"]);
        assert_eq!(p, random(&cfg(10, 2), 5, 4, 6));
        assert_ne!(ints(&p, "input_ids"), ints(&random(&cfg(10, 2), 6, 4, 6), "input_ids"));
        let (ids, types, mask) = (ints(&p, "input_ids"), ints(&p, "token_type_ids"), ints(&p, "attention_mask"));
        for row in 0..4 {
            let r = row * 6..row * 6 + 6;
            let len = mask[r.clone()].iter().sum::<i64>() as usize;
            assert_eq!(&mask[r.clone()], (0..6).map(|s| (s < len) as i64).collect::<Vec<_>>().as_slice());
            assert!(ids[r.clone()].iter().enumerate().all(|(s, &id)| if s < len { (0..10).contains(&id) } else { id == 0 }));
            let want: Vec<i64> = (0..6).map(|s| (s < len && s >= len.div_ceil(2)) as i64).collect();
            assert_eq!(&types[r], want.as_slice());
            match row {
                0 => assert_eq!(len, 6),
                3 => assert_eq!(len, 1),
                _ => assert!((1..=6).contains(&len)),
            }
        }
        // One token type: every type is 0.
        assert!(ints(&random(&cfg(10, 1), 5, 4, 6), "token_type_ids").iter().all(|&t| t == 0));
    }
}
