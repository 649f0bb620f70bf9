//! OpenAI GPT's mutation suite: convert golden/openai-gpt (numpy shards) with the binary, damage
//! the folder the ways GPT conversions go wrong (a Conv1D kernel transposed as if it were a
//! Linear, the fused q|k|v chunks in another order, `n_positions` not matching the position
//! table, the two block norms swapped, a non-zero multiple-choice head), and check that `tfconv
//! verify` catches each (exit 1) and blames the right place. An undamaged folder passes.
//!
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;

use safetensors::{Dtype, SafeTensors};

const BIN: &str = env!("CARGO_BIN_EXE_tfconv");
const DTYPES: [&str; 3] = ["float32", "float16", "bfloat16"];

fn golden_ckpt() -> PathBuf {
    common::golden("openai-gpt")
}

fn require_tensorflow() {
    if let Err(e) = tfconv::tf_runtime::load() {
        panic!("these tests need the TensorFlow reference runtime: {e}");
    }
}

struct Converted {
    _tmp: tempfile::TempDir,
    folder: PathBuf,
    report: PathBuf,
}

fn convert_golden(dtype: &str) -> Converted {
    convert_golden_as(dtype, &[])
}

/// `extra`: further convert flags (`--finetuning_task_name` for the double-heads class).
fn convert_golden_as(dtype: &str, extra: &[&str]) -> Converted {
    require_tensorflow();
    let tmp = tempfile::tempdir().expect("tempdir");
    let folder = tmp.path().join("openai-gpt");
    let out = Command::new(BIN)
        .args(["convert", "--tf-checkpoint"])
        .arg(golden_ckpt())
        .arg("--output")
        .arg(&folder)
        .args(["--dtype", dtype])
        .args(extra)
        .output()
        .expect("run tfconv convert");
    assert!(out.status.success(), "tfconv convert failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let report = tmp.path().join("report.json");
    Converted { _tmp: tmp, folder, report }
}

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
        self.report["structural_problems"].as_array().map(|a| a.iter().filter_map(|p| p.as_str().map(String::from)).collect()).unwrap_or_default()
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
    let text = std::fs::read(&c.report).unwrap_or_else(|e| panic!("tfconv verify wrote no report ({e}); exit {code}; stderr:\n{stderr}"));
    Verdict { code, stderr, report: serde_json::from_slice(&text).expect("the report is JSON") }
}

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
    /// Elements are moved, never recomputed, so no rounding enters: the bytes are permuted.
    fn permute(&mut self, from: impl Fn(usize) -> usize) {
        let width = self.data.len() / self.shape.iter().product::<usize>();
        let old = self.data.clone();
        for (k, chunk) in self.data.chunks_exact_mut(width).enumerate() {
            chunk.copy_from_slice(&old[from(k) * width..][..width]);
        }
    }
    fn scale(&mut self, by: f32) {
        let values: Vec<f32> = self.f32s().iter().map(|x| x * by).collect();
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

fn damage_weights(c: &Converted, f: impl FnOnce(&mut BTreeMap<String, Tensor>)) {
    let bytes = std::fs::read(weights_path(c)).expect("read model.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut tensors: BTreeMap<String, Tensor> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, Tensor { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data().to_vec() }))
        .collect();
    let before: Vec<(String, Vec<u8>)> = tensors.iter().map(|(n, t)| (n.clone(), t.data.clone())).collect();
    f(&mut tensors);
    let after: Vec<(String, Vec<u8>)> = tensors.iter().map(|(n, t)| (n.clone(), t.data.clone())).collect();
    assert_ne!(before, after, "the damage changed nothing");
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, t)| (name.clone(), safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).expect("consistent tensor")))
        .collect();
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    std::fs::write(weights_path(c), safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

fn damage_config(c: &Converted, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = c.folder.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(config.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// A rows×cols matrix transposed: element k of the result is element `from(k)` of the original.
fn transposed(rows: usize, cols: usize) -> impl Fn(usize) -> usize {
    move |k| (k % rows) * cols + k / rows
}

/// The thinnest margin seen by any numeric mutation in this process, for the summary line.
static THINNEST: std::sync::Mutex<Option<(f64, String)>> = std::sync::Mutex::new(None);

/// A numeric divergence localized by the isolated comparison: exit 1, no structural problem, the
/// first failing output is `expected`, everything before it agrees, only `expected` fails
/// isolated, by at least 5× the allowed error; stderr names it.
fn assert_diverges_at(v: &Verdict, expected: &str, label: &str) {
    assert_eq!(v.code, 1, "expected exit 1 (mismatch); {}", v.describe());
    assert!(v.structural_problems().is_empty(), "expected a numeric divergence; {}", v.describe());
    assert_eq!(v.first_divergence(), Some(expected), "wrong first divergence; {}", v.describe());
    assert_eq!(v.report["divergence_kind"], "isolated", "{}", v.describe());
    let outputs = v.report["outputs"].as_array().expect("outputs");
    let first = outputs.iter().position(|o| o["name"] == expected).expect("the divergent output is reported");
    for o in &outputs[..first] {
        assert_eq!(o["pass"], true, "{} precedes {expected} and should still agree; {}", o["name"], v.describe());
    }
    let isolated: Vec<&serde_json::Value> = v.report["stages"].as_array().unwrap().iter().flat_map(|st| st["isolated"].as_array().unwrap()).collect();
    let failing: Vec<&str> = isolated.iter().filter(|o| o["pass"] == false).filter_map(|o| o["name"].as_str()).collect();
    assert_eq!(failing, [expected], "only the damaged stage fails isolated; {}", v.describe());
    let row = isolated.iter().find(|o| o["name"] == expected).unwrap();
    let margin = row["max_abs_error"].as_f64().unwrap() / row["allowed"].as_f64().unwrap();
    eprintln!("{label}: {expected} isolated max|Δ| {} > allowed {}: margin {margin:.1}×", row["max_abs_error"], row["allowed"]);
    assert!(margin >= 5.0, "{label}: caught by only {margin:.2}×; {}", v.describe());
    assert!(v.stderr.contains(&format!("first divergence at '{expected}'")), "{}", v.describe());
    let mut thinnest = THINNEST.lock().unwrap();
    if thinnest.as_ref().is_none_or(|(m, _)| margin < *m) {
        *thinnest = Some((margin, format!("{label} at {expected}")));
    }
    eprintln!("thinnest margin so far: {:?}", *thinnest);
}

/// A structural failure naming `what` in the report and on stderr.
fn assert_structural(v: &Verdict, what: &[&str]) {
    assert_eq!(v.code, 1, "expected exit 1; {}", v.describe());
    assert_eq!(v.first_divergence(), Some("structure"), "{}", v.describe());
    let problems = v.structural_problems().join("\n");
    for w in what {
        assert!(problems.contains(w), "structural problems do not say {w:?}:\n{problems}");
        assert!(v.stderr.contains(w), "stderr does not say {w:?}; {}", v.describe());
    }
}

#[test]
fn undamaged_conversion_passes() {
    for dtype in DTYPES {
        let v = verify(&convert_golden(dtype));
        assert_eq!(v.code, 0, "{dtype}: an undamaged conversion must pass; {}", v.describe());
        let worst = v.report["outputs"].as_array().unwrap().iter().filter_map(|o| o["max_rel_error"].as_f64()).fold(0.0, f64::max);
        eprintln!("undamaged golden/openai-gpt {dtype}: worst relative error {worst:.3e}");
    }
}

/// A Conv1D kernel handled like a Linear one (transposed to [out, in]): its shape no longer fits.
#[test]
fn transposed_c_attn_is_a_structural_failure_naming_it() {
    for dtype in DTYPES {
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            let w = t.get_mut("transformer.h.1.attn.c_attn.weight").unwrap();
            let (rows, cols) = (w.shape[0], w.shape[1]);
            w.permute(transposed(rows, cols));
            w.shape = vec![cols, rows];
        });
        assert_structural(&verify(&c), &["transformer.h.1.attn.c_attn.weight has shape [144, 48], expected [48, 144]"]);
    }
}

/// The same where the shape hides it: c_attn's values transposed in its own shape, and the
/// square c_proj transposed. Both diverge at their own block.
#[test]
fn transposed_conv1d_values_diverge_at_their_block() {
    for dtype in DTYPES {
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            let w = t.get_mut("transformer.h.1.attn.c_attn.weight").unwrap();
            let (rows, cols) = (w.shape[0], w.shape[1]);
            w.permute(transposed(cols, rows));
        });
        assert_diverges_at(&verify(&c), "layer.1", &format!("{dtype} c_attn values transposed"));

        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            let w = t.get_mut("transformer.h.0.attn.c_proj.weight").unwrap();
            let n = w.shape[0];
            w.permute(transposed(n, n));
        });
        assert_diverges_at(&verify(&c), "layer.0", &format!("{dtype} c_proj transposed"));
    }
}

/// The fused projection's thirds in the order k, v, q, in the weight's columns and the bias.
#[test]
fn rotated_qkv_chunks_diverge_at_their_block() {
    for dtype in DTYPES {
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            for p in ["weight", "bias"] {
                let x = t.get_mut(&format!("transformer.h.1.attn.c_attn.{p}")).unwrap();
                let cols = *x.shape.last().unwrap();
                let third = cols / 3;
                x.permute(|k| (k / cols) * cols + (k % cols + third) % cols);
            }
        });
        assert_diverges_at(&verify(&c), "layer.1", &format!("{dtype} q/k/v rotated"));
    }
}

#[test]
fn ln_1_and_ln_2_swapped_diverge_at_their_block() {
    for dtype in DTYPES {
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            for p in ["weight", "bias"] {
                let (a, b) = (format!("transformer.h.0.ln_1.{p}"), format!("transformer.h.0.ln_2.{p}"));
                let (ta, tb) = (t.remove(&a).unwrap(), t.remove(&b).unwrap());
                assert_ne!(ta.data, tb.data);
                t.insert(a, tb);
                t.insert(b, ta);
            }
        });
        assert_diverges_at(&verify(&c), "layer.0", &format!("{dtype} ln_1/ln_2 swapped"));
    }
}

/// config.json with transformers' default n_positions (512) while the position table has the
/// release's 12 rows: transformers refuses to load it; verify names the table and the stage.
#[test]
fn n_positions_that_do_not_fit_the_table_are_a_structural_failure_at_the_embeddings() {
    for dtype in DTYPES {
        let c = convert_golden(dtype);
        damage_config(&c, |cfg| {
            assert_eq!(cfg["n_positions"], 12);
            cfg.insert("n_positions".into(), 512.into());
        });
        assert_structural(&verify(&c), &["in stage embeddings", "transformer.positions_embed.weight", "[512, 48]", "[12, 48]"]);
    }
}

/// A position table cut to a mis-sized n_ctx, config.json agreeing: not the original's 12 rows.
#[test]
fn a_position_table_cut_to_a_wrong_n_ctx_is_a_structural_failure() {
    let c = convert_golden("float32");
    damage_weights(&c, |t| {
        let w = t.get_mut("transformer.positions_embed.weight").unwrap();
        let cols = w.shape[1];
        w.data.truncate(8 * cols * 4);
        w.shape = vec![8, cols];
    });
    damage_config(&c, |cfg| {
        cfg.insert("n_positions".into(), 8.into());
    });
    assert_structural(&verify(&c), &["transformer.positions_embed.weight has shape [8, 48], expected [12, 48]"]);
}

/// The double-heads class's multiple-choice head is zeros by construction: anything else there
/// (a head from elsewhere, random initialization) diverges at mc_logits.
#[test]
fn a_multiple_choice_head_that_is_not_zeros_diverges_at_mc_logits() {
    let c = convert_golden_as("float32", &["--finetuning_task_name", "rocstories"]);
    assert_eq!(verify(&c).code, 0, "the double-heads conversion itself passes");
    damage_weights(&c, |t| {
        let w = t.get_mut("transformer.tokens_embed.weight").unwrap().clone();
        let head = t.get_mut("multiple_choice_head.summary.weight").unwrap();
        // The first token's embedding as the classifier: a plausible stray weight.
        head.data = w.data[..head.data.len()].to_vec();
    });
    assert_diverges_at(&verify(&c), "mc_logits", "float32 non-zero multiple-choice head");
}

/// One norm's gain one percent off: the subtlest damage here, still blamed on its block.
#[test]
fn a_scaled_layer_norm_gain_diverges_at_its_block() {
    for dtype in DTYPES {
        let c = convert_golden(dtype);
        damage_weights(&c, |t| t.get_mut("transformer.h.1.ln_2.weight").unwrap().scale(1.01));
        assert_diverges_at(&verify(&c), "layer.1", &format!("{dtype} ln_2 gain scaled"));
    }
}
