//! Synthetic "original" checkpoints as data: each architecture lists its variables under the
//! original training code's names with deterministic values, and tfconv writes them with
//! TensorFlow's own SaveV2 (`tfconv::synthetic::write_checkpoint`). Golden fixtures and property
//! tests are built from these; [`GoldenCase`] is one bundled fixture.

/// The probes' SplitMix64, seeded with its raw state, so fixtures are byte-identical on every run.
pub struct Rng(crate::probe::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(crate::probe::Rng::from_state(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    /// Uniform in [-a, a).
    pub fn uniform(&mut self, a: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
}

/// What a synthetic variable holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    /// Stored as bfloat16 (rounded to nearest even), as Mesh TensorFlow stores T5's weights.
    BF16(Vec<f32>),
    I64(Vec<i64>),
    /// A string tensor's elements (e.g. a TF2 checkpoint's serialized object graph).
    Strings(Vec<Vec<u8>>),
}

/// One checkpoint variable: original name, shape, values.
#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Variable {
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Variable {
        Variable { name: name.into(), shape, data: Data::F32(values) }
    }
    /// An int64 scalar, e.g. `global_step`.
    pub fn i64_scalar(name: impl Into<String>, value: i64) -> Variable {
        Variable { name: name.into(), shape: vec![], data: Data::I64(vec![value]) }
    }
}

/// Values with a realistic spread for a variable whose last name segment is `last`: norm scales
/// near 1, biases small but nonzero, kernels scaled by `fan_in` so activations neither vanish nor
/// saturate, embeddings in [-1, 1).
pub fn init_values(rng: &mut Rng, last: &str, numel: usize, fan_in: usize) -> Vec<f32> {
    (0..numel)
        .map(|_| match last {
            "gamma" | "g" => 1.0 + rng.uniform(0.3),
            "beta" | "bias" | "output_bias" | "b" => rng.uniform(0.1),
            "kernel" | "output_weights" | "w" => rng.uniform(1.7 / (fan_in.max(1) as f32).sqrt()),
            _ => rng.uniform(1.0),
        })
        .collect()
}

/// Values for a TF1 variable named `name` (google-research/bert naming: `kernel` [in, out],
/// `output_weights` [out, in]), drawn as for the matrix `as_matrix` it is used as, so the fan-in
/// is right.
pub fn tf1_values(rng: &mut Rng, name: &str, as_matrix: &[usize]) -> Vec<f32> {
    let last = name.rsplit('/').next().unwrap_or("");
    let fan_in = match last {
        "output_weights" => as_matrix.get(1).copied().unwrap_or(1),
        _ => as_matrix.first().copied().unwrap_or(1),
    };
    init_values(rng, last, as_matrix.iter().product(), fan_in)
}

/// Adam-style moment slots (`<name>/<slot>`) for `var`: small values, the second one non-negative.
pub fn moment_slots(rng: &mut Rng, var: &Variable, slots: [&str; 2]) -> Vec<Variable> {
    let n: usize = var.shape.iter().product();
    let m: Vec<f32> = (0..n).map(|_| rng.uniform(1e-3)).collect();
    let v: Vec<f32> = (0..n).map(|_| rng.uniform(1e-6).abs()).collect();
    vec![
        Variable::f32(format!("{}/{}", var.name, slots[0]), var.shape.clone(), m),
        Variable::f32(format!("{}/{}", var.name, slots[1]), var.shape.clone(), v),
    ]
}

/// One bundled golden fixture (`golden/<dir>/`): a tiny checkpoint written by TensorFlow, the
/// original config, the tokenizer files, and (written by `cargo xtask golden`) the probes and
/// the original model's outputs on them.
#[derive(Debug, Clone)]
pub struct GoldenCase {
    /// Folder name under `golden/`.
    pub dir: &'static str,
    /// HF `model_type` of the architecture.
    pub model_type: &'static str,
    /// What `--tf-checkpoint` is given: the prefix of a TF checkpoint ("bert_model.ckpt"), or a
    /// file or folder of `checkpoint_files` for other formats.
    pub checkpoint: &'static str,
    /// File name of the original config beside it, e.g. "bert_config.json"; None when the
    /// checkpoint holds its own config (XLM's `.pth` files carry their `params`).
    pub config_file: Option<&'static str>,
    /// The original config as tfconv reads it; written as JSON to `config_file` unless `files`
    /// holds that file in its own format (T5's `operative_config.gin`); Null when there is none.
    pub config: serde_json::Value,
    /// Other files beside the checkpoint (vocabularies), as (file name, bytes).
    pub files: Vec<(&'static str, Vec<u8>)>,
    pub contents: Contents,
}

/// How a golden checkpoint is stored.
#[derive(Debug, Clone)]
pub enum Contents {
    /// Variables written by TensorFlow's SaveV2 at the case's prefix.
    TfBundle(Vec<Variable>),
    /// A bundle with one data shard per group of variables (SaveV2 per group, then MergeV2).
    TfShards(Vec<Vec<Variable>>),
    /// Files in another format (numpy shards, a torch pickle), as (path in the case folder, bytes).
    Files(Vec<(String, Vec<u8>)>),
    /// OpenAI GPT's release layout in the case's folder: `params_shapes.json`, and the float32
    /// variables in order, concatenated and cut into `shards` files `params_{i}.npy`.
    NumpyShards { variables: Vec<Variable>, shards: usize },
}
