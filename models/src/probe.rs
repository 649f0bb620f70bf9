//! Probe inputs and named outputs, shared by the candle side and the TF side so that
//! comparison, reporting and "first diverging layer" are written once.

/// Token-level probe inputs, row-major [batch, seq_len].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Probes {
    pub batch: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
}

impl Probes {
    /// Seeded, deterministic probes: row `b` has a length spread between 1 and `seq_len`
    /// (the first row is always full, the last always length 1 when batch > 1), random ids in
    /// [0, vocab), and token types switching to 1 half way through each row.
    pub fn random(seed: u64, batch: usize, seq_len: usize, vocab: usize, type_vocab: usize) -> Probes {
        let mut state = seed ^ 0x5851_f42d_4c95_7f2d;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut p = Probes { batch, seq_len, input_ids: vec![], token_type_ids: vec![], attention_mask: vec![] };
        for b in 0..batch {
            let len = if batch == 1 || b == 0 {
                seq_len
            } else if b == batch - 1 {
                1
            } else {
                1 + (next() as usize) % seq_len
            };
            for s in 0..seq_len {
                let real = s < len;
                p.input_ids.push(if real { (next() % vocab as u64) as i64 } else { 0 });
                p.token_type_ids.push(if real && type_vocab > 1 && s >= len.div_ceil(2) { 1 } else { 0 });
                p.attention_mask.push(real as i64);
            }
        }
        p
    }
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
