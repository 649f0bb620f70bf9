//! Probe inputs and named outputs, shared by the candle side and the TF side so that
//! comparison, reporting and "first diverging layer" are written once.

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::stage::{Value, Values};

/// The inputs both sides run on: named integer and float tensors (ids, masks, token types,
/// decoder ids, permutation masks, memories, …) whose names and policy each architecture
/// chooses, with the seed they were drawn from so a report or golden file can be redrawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probes {
    pub seed: u64,
    pub inputs: Values,
}

impl Probes {
    /// The JSON form with one line per input, so golden files stay readable and diff by tensor.
    pub fn to_json_lines(&self) -> String {
        format!("{{\"seed\":{},\"inputs\":[\n{}\n]}}\n", self.seed, self.inputs.json_items().join(",\n"))
    }
}

/// "input_ids [3, 24], attention_mask [3, 24] (seed 0)".
impl fmt::Display for Probes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inputs: Vec<String> = self.inputs.0.iter().map(|(n, v)| format!("{n} {:?}", v.shape())).collect();
        write!(f, "{} (seed {})", inputs.join(", "), self.seed)
    }
}

/// SplitMix64: deterministic on every platform and needs no dependency. Architectures draw
/// their probes from it in a fixed order, so a seed names the same probes forever (golden
/// files rely on that).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng::from_state(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// The generator with its raw internal state (synthetic checkpoints seed it this way).
    pub fn from_state(state: u64) -> Rng {
        Rng(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In [0, n), n > 0. The modulo bias (about n / 2^64) is irrelevant for probes.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An int64 tensor of `shape`, every element drawn from `range` in row-major order.
    pub fn ints(&mut self, shape: &[usize], range: Range<i64>) -> Value {
        let span = range.end.abs_diff(range.start);
        let data = (0..shape.iter().product()).map(|_| range.start.wrapping_add(self.below(span) as i64)).collect();
        Value::Int { shape: shape.to_vec(), data }
    }

    /// A float32 tensor of `shape`, uniform in `range` (24 random bits each).
    pub fn floats(&mut self, shape: &[usize], range: Range<f32>) -> Value {
        let unit = |x: u64| (x >> 40) as f32 / (1u64 << 24) as f32;
        let data = (0..shape.iter().product()).map(|_| range.start + unit(self.next_u64()) * (range.end - range.start)).collect();
        Value::Float { shape: shape.to_vec(), data }
    }
}

/// A [batch, seq_len] mask: 1 for the first `lengths[b]` positions of row b, 0 for padding.
pub fn padding_mask(lengths: &[usize], seq_len: usize) -> Value {
    let data = lengths.iter().flat_map(|&len| (0..seq_len).map(move |s| (s < len) as i64)).collect();
    Value::Int { shape: vec![lengths.len(), seq_len], data }
}

/// A float tensor produced by a model, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Named outputs in forward order ("embeddings", "layer.0", …, heads last). The order defines
/// which divergence is "first".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs(pub Vec<(String, Output)>);

impl Outputs {
    pub fn push(&mut self, name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) {
        self.0.push((name.into(), Output { shape, values }));
    }
    pub fn get(&self, name: &str) -> Option<&Output> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, o)| o)
    }
    pub fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Seeded BERT-style probes ("input_ids", "token_type_ids", "attention_mask", each [batch,
/// seq_len]) of `batch` rows of `seq_len` positions. Row lengths spread between 1 and
/// `seq_len` so padding is exercised: the first row is always full (every position embedding
/// row is used), the last is length 1 when batch > 1, the others random. Real tokens get random
/// ids in [0, vocab), padding id 0; token types switch to 1 half way through each row (when the
/// model has a second type), as a sentence pair would. The draws (each row's length, then its
/// ids) are in a fixed order: the golden probes.json files were drawn this way from seed 7.
pub fn sentence_pairs(vocab_size: usize, type_vocab_size: usize, seed: u64, batch: usize, seq_len: usize) -> Probes {
    let mut rng = Rng::new(seed);
    let (mut lengths, mut ids, mut types) = (Vec::new(), Vec::new(), Vec::new());
    for b in 0..batch {
        let len = if batch == 1 || b == 0 {
            seq_len
        } else if b == batch - 1 {
            1
        } else {
            1 + rng.below(seq_len as u64) as usize
        };
        for s in 0..seq_len {
            let real = s < len;
            ids.push(if real { rng.below(vocab_size as u64) as i64 } else { 0 });
            types.push((real && type_vocab_size > 1 && s >= len.div_ceil(2)) as i64);
        }
        lengths.push(len);
    }
    let shape = vec![batch, seq_len];
    let mut inputs = Values::default();
    inputs.push("input_ids", Value::Int { shape: shape.clone(), data: ids });
    inputs.push("token_type_ids", Value::Int { shape, data: types });
    inputs.push("attention_mask", padding_mask(&lengths, seq_len));
    Probes { seed, inputs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(seed: u64) -> Probes {
        let mut rng = Rng::new(seed);
        let mut inputs = Values::default();
        inputs.push("ids", rng.ints(&[2, 5], 3..9));
        inputs.push("mask", padding_mask(&[5, 2], 5));
        inputs.push("mems", rng.floats(&[2, 3], -1.0..1.0));
        Probes { seed, inputs }
    }

    #[test]
    fn probes_are_deterministic_per_seed_and_differ_across_seeds() {
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7).inputs.get("ids"), draw(8).inputs.get("ids"));
        assert_ne!(draw(7).inputs.get("mems"), draw(8).inputs.get("mems"));
        let p = draw(7);
        let Some(Value::Int { data, .. }) = p.inputs.get("ids") else { panic!() };
        assert!(data.iter().all(|x| (3..9).contains(x)) && data.len() == 10);
        let Some(Value::Float { data, .. }) = p.inputs.get("mems") else { panic!() };
        assert!(data.iter().all(|x| (-1.0..1.0).contains(x)));
        assert_eq!(p.inputs.get("mask"), Some(&Value::Int { shape: vec![2, 5], data: vec![1, 1, 1, 1, 1, 1, 1, 0, 0, 0] }));
        assert_eq!(p.to_string(), "ids [2, 5], mask [2, 5], mems [2, 3] (seed 7)");
    }

    #[test]
    fn probes_round_trip_through_json() {
        let p = draw(3);
        let text = p.to_json_lines();
        assert_eq!(serde_json::from_str::<Probes>(&text).unwrap(), p);
        assert_eq!(serde_json::from_str::<Probes>(&serde_json::to_string(&p).unwrap()).unwrap(), p);
        let first = text.lines().nth(1).unwrap();
        assert!(first.starts_with(r#"{"name":"ids","dtype":"int64","shape":[2,5],"data":["#), "{first}");
        assert!(text.contains(r#""name":"mems","dtype":"float32","shape":[2,3]"#), "{text}");
        // Whole numbers in a float tensor are floats; anything inconsistent is refused by name.
        let v: Value = serde_json::from_str(r#"{"dtype":"float32","shape":[2],"data":[1,2.5]}"#).unwrap();
        assert_eq!(v, Value::Float { shape: vec![2], data: vec![1.0, 2.5] });
        let bad = |json: &str| serde_json::from_str::<Values>(json).unwrap_err().to_string();
        assert!(bad(r#"[{"name":"x","dtype":"int64","shape":[3],"data":[1,2]}]"#).contains("x: shape [3] holds 3 elements, data has 2"));
        assert!(bad(r#"[{"name":"x","dtype":"int64","shape":[1],"data":[0.5]}]"#).contains("x: int64 data holds non-integers"));
        assert!(bad(r#"[{"name":"x","dtype":"int32","shape":[1],"data":[1]}]"#).contains("dtype \"int32\""));
        assert!(bad(r#"[{"dtype":"int64","shape":[1],"data":[1]}]"#).contains("no \"name\""));
        assert!(bad(r#"[{"name":"x","dtype":"int64","shape":[],"data":[1]},{"name":"x","dtype":"int64","shape":[],"data":[1]}]"#).contains("x appears twice"));
    }
}
