//! The mutation harness: convert a golden case with the built binary, damage the folder the
//! way real conversion bugs do, run `tfconv verify` and read what it blamed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::{Dtype, SafeTensors};

const BIN: &str = env!("CARGO_BIN_EXE_tfconv");

/// Fails (not skips) when the reference runtime is missing.
pub fn require_tensorflow() {
    if let Err(e) = tfconv::tf_runtime::load() {
        panic!("these tests need the TensorFlow reference runtime: {e}");
    }
}

/// A fresh conversion of a golden case, made by the binary, in its own temporary directory.
pub struct Converted {
    _tmp: tempfile::TempDir,
    pub folder: PathBuf,
    pub report: PathBuf,
    /// The original checkpoint it was converted from.
    pub checkpoint: PathBuf,
}

/// Every mutation is tried on each stored dtype: the reference rounds the original weights as the
/// folder stores them, so half-precision folders must catch the same damage as float32 ones.
pub const DTYPES: [&str; 3] = ["float32", "float16", "bfloat16"];

/// Converts golden/`case` (a registered golden case) stored as `dtype`.
pub fn convert_golden(case: &str, dtype: &str) -> Converted {
    require_tensorflow();
    let golden = tfconv_models::arch::golden_cases().into_iter().find(|c| c.dir == case).unwrap_or_else(|| panic!("no golden case {case}"));
    let checkpoint = Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(case).join(golden.checkpoint);
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join(case);
    let out = Command::new(BIN)
        .arg("convert")
        .arg("--tf-checkpoint")
        .arg(&checkpoint)
        .arg("--output")
        .arg(&folder)
        .args(["--dtype", dtype])
        .output()
        .expect("run tfconv convert");
    assert!(
        out.status.success(),
        "tfconv convert failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(folder.join("model.safetensors").is_file(), "no model.safetensors in {}", folder.display());
    let report = tmp.path().join("report.json");
    Converted { _tmp: tmp, folder, report, checkpoint }
}

/// What `tfconv verify` said.
pub struct Verdict {
    pub code: i32,
    pub stderr: String,
    pub report: serde_json::Value,
}

impl Verdict {
    pub fn first_divergence(&self) -> Option<&str> {
        self.report["first_divergence"].as_str()
    }
    pub fn structural_problems(&self) -> Vec<String> {
        self.report["structural_problems"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }
    pub fn describe(&self) -> String {
        format!("exit {}; first_divergence {:?}\nstderr:\n{}", self.code, self.first_divergence(), self.stderr)
    }
}

pub fn verify(c: &Converted) -> Verdict {
    let _ = std::fs::remove_file(&c.report);
    let out = Command::new(BIN)
        .arg("verify")
        .arg("--hf-dir")
        .arg(&c.folder)
        .arg("--tf-checkpoint")
        .arg(&c.checkpoint)
        .arg("--report")
        .arg(&c.report)
        .output()
        .expect("run tfconv verify");
    let code = out.status.code().expect("tfconv verify exited by a signal");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = std::fs::read(&c.report).unwrap_or_else(|e| {
        panic!("tfconv verify wrote no report ({e}); exit {code}; stderr:\n{stderr}")
    });
    let report = serde_json::from_slice(&text).expect("the report is JSON");
    Verdict { code, stderr, report }
}

/// One tensor of a safetensors file, owned.
#[derive(Clone)]
pub struct Tensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn f32s(&self) -> Vec<f32> {
        let two = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
        match self.dtype {
            Dtype::F32 => self.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::F16 => self.data.chunks_exact(2).map(|b| half::f16::from_bits(two(b)).to_f32()).collect(),
            Dtype::BF16 => self.data.chunks_exact(2).map(|b| half::bf16::from_bits(two(b)).to_f32()).collect(),
            other => panic!("unexpected stored dtype {other:?}"),
        }
    }
    /// Stores `values` in the tensor's own dtype (rounded to nearest even, as conversion rounds).
    pub fn set_f32s(&mut self, values: &[f32]) {
        assert_eq!(values.len(), self.f32s().len());
        self.data = match self.dtype {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes()).collect(),
            Dtype::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes()).collect(),
            other => panic!("unexpected stored dtype {other:?}"),
        };
    }
}

pub fn weights_path(c: &Converted) -> PathBuf {
    c.folder.join("model.safetensors")
}

pub fn read_weights(c: &Converted) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(weights_path(c)).expect("read model.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| (name, Tensor { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data().to_vec() }))
        .collect()
}

/// Rewrites model.safetensors with `{"format": "pt"}` metadata, as HF writes it.
pub fn write_weights(c: &Converted, tensors: &BTreeMap<String, Tensor>) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, t)| {
            (name.clone(), safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).expect("consistent tensor"))
        })
        .collect();
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = safetensors::serialize(views, Some(metadata)).expect("serialize safetensors");
    std::fs::write(weights_path(c), bytes).expect("write model.safetensors");
}

/// Reads, changes and rewrites the weights.
pub fn damage_weights(c: &Converted, f: impl FnOnce(&mut BTreeMap<String, Tensor>)) {
    let mut tensors = read_weights(c);
    let before: Vec<String> = tensors.keys().cloned().collect();
    f(&mut tensors);
    assert!(!before.is_empty());
    write_weights(c, &tensors);
}

pub fn damage_config(c: &Converted, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = c.folder.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read config.json")).expect("JSON");
    f(config.as_object_mut().expect("config.json is an object"));
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).expect("write config.json");
}

pub fn swap(tensors: &mut BTreeMap<String, Tensor>, a: &str, b: &str) {
    let ta = tensors.remove(a).unwrap_or_else(|| panic!("no tensor {a}"));
    let tb = tensors.remove(b).unwrap_or_else(|| panic!("no tensor {b}"));
    assert_eq!(ta.shape, tb.shape, "{a} and {b} must have the same shape to be swapped");
    assert_ne!(ta.data, tb.data, "{a} and {b} are identical; swapping them would be no damage");
    tensors.insert(a.to_string(), tb);
    tensors.insert(b.to_string(), ta);
}

/// A numeric divergence: exit 1, no structural problem, the first failing output is `expected`,
/// every output before it still agrees, and stderr names it.
pub fn assert_diverges_at(v: &Verdict, expected: &str) {
    assert_eq!(v.code, 1, "expected exit 1 (mismatch); {}", v.describe());
    assert_eq!(v.report["pass"], false, "{}", v.describe());
    assert!(v.structural_problems().is_empty(), "expected a numeric divergence, got structural problems; {}", v.describe());
    assert_eq!(v.first_divergence(), Some(expected), "wrong first divergence; {}", v.describe());
    let outputs = v.report["outputs"].as_array().expect("outputs");
    let first = outputs.iter().position(|o| o["name"] == expected).expect("the divergent output is reported");
    for o in &outputs[..first] {
        assert_eq!(o["pass"], true, "{} precedes {expected} and should still agree; {}", o["name"], v.describe());
    }
    // Localized by the isolated comparison: only the damaged stage fails there, by a margin.
    assert_eq!(v.report["divergence_kind"], "isolated", "{}", v.describe());
    let isolated: Vec<&serde_json::Value> =
        v.report["stages"].as_array().expect("stages").iter().flat_map(|st| st["isolated"].as_array().expect("isolated")).collect();
    let failing: Vec<&str> = isolated.iter().filter(|o| o["pass"] == false).filter_map(|o| o["name"].as_str()).collect();
    assert_eq!(failing.first(), Some(&expected), "isolated failures {failing:?}; {}", v.describe());
    let row = isolated.iter().find(|o| o["name"] == expected).expect("isolated row");
    let margin = row["max_abs_error"].as_f64().unwrap() / row["allowed"].as_f64().unwrap();
    eprintln!(
        "{expected}: isolated max|Δ| {} > allowed {}: margin {margin:.1}× (rel {}, cosine {})",
        row["max_abs_error"], row["allowed"], row["max_rel_error"], row["cosine_similarity"]
    );
    assert!(margin >= 5.0, "{expected}: the mutation is caught by only {margin:.2}×; {}", v.describe());
    assert!(
        v.stderr.contains(&format!("first divergence at '{expected}'")),
        "stderr does not name {expected}; {}",
        v.describe()
    );
}

