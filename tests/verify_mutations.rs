//! The mutation suite: convert golden/bert with the built binary, damage the converted folder on
//! purpose in the ways real conversion bugs damage it, and check that `tfconv verify` catches
//! every damage (exit 1) and blames the right place (`first_divergence` in the JSON report and
//! the stderr summary). An undamaged folder must pass (exit 0).
//!
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::{Dtype, SafeTensors};

const BIN: &str = env!("CARGO_BIN_EXE_tfconv");

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join("bert")
}

fn golden_ckpt() -> PathBuf {
    golden_dir().join("bert_model.ckpt")
}

/// Fails (not skips) when the reference runtime is missing.
fn require_tensorflow() {
    if let Err(e) = tfconv::tf_runtime::load() {
        panic!("these tests need the TensorFlow reference runtime: {e}");
    }
}

/// A fresh conversion of golden/bert, made by the binary, in its own temporary directory.
struct Converted {
    _tmp: tempfile::TempDir,
    folder: PathBuf,
    report: PathBuf,
}

/// Every mutation is tried on each stored dtype: the reference rounds the original weights as the
/// folder stores them, so half-precision folders must catch the same damage as float32 ones.
const DTYPES: [&str; 3] = ["float32", "float16", "bfloat16"];

fn convert_golden(dtype: &str) -> Converted {
    require_tensorflow();
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join("bert");
    let out = Command::new(BIN)
        .arg("convert")
        .arg("--tf-checkpoint")
        .arg(golden_ckpt())
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
    Converted { _tmp: tmp, folder, report }
}

/// What `tfconv verify` said.
struct Verdict {
    code: i32,
    stderr: String,
    report: serde_json::Value,
}

impl Verdict {
    fn first_divergence(&self) -> Option<&str> {
        self.report["first_divergence"].as_str()
    }
    fn structural_problems(&self) -> Vec<String> {
        self.report["structural_problems"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }
    fn describe(&self) -> String {
        format!("exit {}; first_divergence {:?}\nstderr:\n{}", self.code, self.first_divergence(), self.stderr)
    }
}

fn verify(c: &Converted) -> Verdict {
    let _ = std::fs::remove_file(&c.report);
    let out = Command::new(BIN)
        .arg("verify")
        .arg("--hf-dir")
        .arg(&c.folder)
        .arg("--tf-checkpoint")
        .arg(golden_ckpt())
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
struct Tensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl Tensor {
    fn f32s(&self) -> Vec<f32> {
        let two = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
        match self.dtype {
            Dtype::F32 => self.data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect(),
            Dtype::F16 => self.data.chunks_exact(2).map(|b| half::f16::from_bits(two(b)).to_f32()).collect(),
            Dtype::BF16 => self.data.chunks_exact(2).map(|b| half::bf16::from_bits(two(b)).to_f32()).collect(),
            other => panic!("unexpected stored dtype {other:?}"),
        }
    }
    /// Stores `values` in the tensor's own dtype (rounded to nearest even, as conversion rounds).
    fn set_f32s(&mut self, values: &[f32]) {
        assert_eq!(values.len(), self.f32s().len());
        self.data = match self.dtype {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F16 => values.iter().flat_map(|v| half::f16::from_f32(*v).to_bits().to_le_bytes()).collect(),
            Dtype::BF16 => values.iter().flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes()).collect(),
            other => panic!("unexpected stored dtype {other:?}"),
        };
    }
}

fn weights_path(c: &Converted) -> PathBuf {
    c.folder.join("model.safetensors")
}

fn read_weights(c: &Converted) -> BTreeMap<String, Tensor> {
    let bytes = std::fs::read(weights_path(c)).expect("read model.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| (name, Tensor { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data().to_vec() }))
        .collect()
}

/// Rewrites model.safetensors with `{"format": "pt"}` metadata, as HF writes it.
fn write_weights(c: &Converted, tensors: &BTreeMap<String, Tensor>) {
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
fn damage_weights(c: &Converted, f: impl FnOnce(&mut BTreeMap<String, Tensor>)) {
    let mut tensors = read_weights(c);
    let before: Vec<String> = tensors.keys().cloned().collect();
    f(&mut tensors);
    assert!(!before.is_empty());
    write_weights(c, &tensors);
}

fn damage_config(c: &Converted, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = c.folder.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read config.json")).expect("JSON");
    f(config.as_object_mut().expect("config.json is an object"));
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).expect("write config.json");
}

fn swap(tensors: &mut BTreeMap<String, Tensor>, a: &str, b: &str) {
    let ta = tensors.remove(a).unwrap_or_else(|| panic!("no tensor {a}"));
    let tb = tensors.remove(b).unwrap_or_else(|| panic!("no tensor {b}"));
    assert_eq!(ta.shape, tb.shape, "{a} and {b} must have the same shape to be swapped");
    assert_ne!(ta.data, tb.data, "{a} and {b} are identical; swapping them would be no damage");
    tensors.insert(a.to_string(), tb);
    tensors.insert(b.to_string(), ta);
}

/// A numeric divergence: exit 1, no structural problem, the first failing output is `expected`,
/// every output before it still agrees, and stderr names it.
fn assert_diverges_at(v: &Verdict, expected: &str) {
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

#[test]
fn undamaged_conversion_passes() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        let v = verify(&c);
        assert_eq!(v.code, 0, "an undamaged conversion must pass; {}", v.describe());
        assert_eq!(v.report["pass"], true);
        assert_eq!(v.first_divergence(), None);
        assert!(v.structural_problems().is_empty());
        let outputs = v.report["outputs"].as_array().expect("outputs");
        let names: Vec<&str> = outputs.iter().filter_map(|o| o["name"].as_str()).collect();
        assert_eq!(names, ["embeddings", "layer.0", "layer.1", "layer.2", "pooler", "mlm_logits", "nsp_logits"]);
        let worst = outputs.iter().filter_map(|o| o["max_rel_error"].as_f64()).fold(0.0, f64::max);
        eprintln!("undamaged golden/bert: worst relative error {worst:.3e}");
        assert!(v.stderr.contains("PASS"), "{}", v.describe());
    }
}

#[test]
fn missing_transpose_on_a_square_kernel_diverges_at_its_layer() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            let w = t.get_mut("bert.encoder.layer.1.attention.self.query.weight").expect("query weight");
            let (rows, cols) = (w.shape[0], w.shape[1]);
            assert_eq!(rows, cols, "the damage needs a square kernel so that the shape still fits");
            let v = w.f32s();
            let back: Vec<f32> = (0..rows * cols).map(|k| v[(k % rows) * cols + k / rows]).collect();
            assert_ne!(v, back);
            w.set_f32s(&back);
        });
        let v = verify(&c);
        assert_diverges_at(&v, "layer.1");
        assert!(v.stderr.contains("suspect the weights of encoder layer 1"), "{}", v.describe());
    }
}

#[test]
fn query_and_key_swapped_diverge_at_their_layer() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            for p in ["weight", "bias"] {
                swap(t, &format!("bert.encoder.layer.0.attention.self.query.{p}"), &format!("bert.encoder.layer.0.attention.self.key.{p}"));
            }
        });
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

#[test]
fn one_zeroed_bias_diverges_at_its_layer() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            let b = t.get_mut("bert.encoder.layer.2.output.dense.bias").expect("bias");
            assert!(b.f32s().iter().any(|&x| x != 0.0));
            let zeros = vec![0f32; b.f32s().len()];
            b.set_f32s(&zeros);
        });
        assert_diverges_at(&verify(&c), "layer.2");
    }
}

#[test]
fn layer_norm_gamma_and_beta_swapped_diverge_at_the_embeddings() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| swap(t, "bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"));
        let v = verify(&c);
        assert_diverges_at(&v, "embeddings");
        assert!(v.stderr.contains("suspect the embedding tables or their LayerNorm"), "{}", v.describe());
    }
}

#[test]
fn two_layers_swapped_diverge_at_the_first() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            let (l0, l1) = ("bert.encoder.layer.0.", "bert.encoder.layer.1.");
            let names: Vec<String> = t.keys().filter(|k| k.starts_with(l0)).cloned().collect();
            assert_eq!(names.len(), 16, "a BERT layer has 16 tensors");
            for name in names {
                swap(t, &name, &name.replacen(l0, l1, 1));
            }
        });
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

#[test]
fn tanh_gelu_in_the_config_diverges_at_the_first_layer() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_config(&c, |cfg| {
            assert_eq!(cfg["hidden_act"], "gelu");
            cfg.insert("hidden_act".into(), "gelu_new".into());
        });
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

#[test]
fn dropped_mlm_bias_is_a_structural_failure() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            t.remove("cls.predictions.bias").expect("cls.predictions.bias");
        });
        let v = verify(&c);
        assert_eq!(v.code, 1, "expected exit 1; {}", v.describe());
        assert_eq!(v.report["pass"], false);
        assert_eq!(v.first_divergence(), Some("structure"), "{}", v.describe());
        let problems = v.structural_problems();
        assert!(
            problems.iter().any(|p| p.contains("cls.predictions.bias")),
            "structural problems do not name cls.predictions.bias: {problems:?}"
        );
        assert!(v.stderr.contains("cls.predictions.bias"), "{}", v.describe());
    }
}

#[test]
fn broken_tie_between_embeddings_and_decoder_is_caught() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_config(&c, |cfg| {
            cfg.insert("tie_word_embeddings".into(), false.into());
        });
        damage_weights(&c, |t| {
            let words = t["bert.embeddings.word_embeddings.weight"].clone();
            let (v, h) = (words.shape[0], words.shape[1]);
            let rows = words.f32s();
            // A decoder that is the word embeddings with rows rotated by one: a plausible off-by-one.
            let permuted: Vec<f32> = (0..v).flat_map(|r| rows[((r + 1) % v) * h..][..h].to_vec()).collect();
            let mut decoder = words.clone();
            decoder.set_f32s(&permuted);
            assert_ne!(decoder.data, words.data);
            t.insert("cls.predictions.decoder.weight".into(), decoder);
        });
        let v = verify(&c);
        assert_eq!(v.code, 1, "expected exit 1; {}", v.describe());
        assert_eq!(v.report["pass"], false);
        let named_structurally = v.structural_problems().iter().any(|p| p.contains("cls.predictions.decoder.weight"));
        let named_numerically = v.first_divergence() == Some("mlm_logits");
        assert!(
            named_structurally || named_numerically,
            "neither cls.predictions.decoder.weight nor mlm_logits is blamed: problems {:?}; {}",
            v.structural_problems(),
            v.describe()
        );
        if named_numerically {
            assert_diverges_at(&v, "mlm_logits");
        }
    }
}

#[test]
fn one_layer_norm_gamma_scaled_by_one_percent_diverges_at_its_layer() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            let g = t.get_mut("bert.encoder.layer.1.output.LayerNorm.weight").expect("gamma");
            let scaled: Vec<f32> = g.f32s().iter().map(|x| x * 1.01).collect();
            g.set_f32s(&scaled);
        });
        assert_diverges_at(&verify(&c), "layer.1");
    }
}
