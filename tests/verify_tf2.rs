//! `--verify` on a TF2 object-based checkpoint (TF Model Garden layout, golden/bert-tf2), through
//! the real binary: the conversion passes as BertModel, and a folder damaged at encoder layer 1
//! fails with layer.1 as the first divergence. Needs TensorFlow: a missing runtime FAILS.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::{Dtype, SafeTensors};

const BIN: &str = env!("CARGO_BIN_EXE_tfconv");

/// HF key of the damaged weight: BertModel has no "bert." prefix.
const DAMAGED: &str = "encoder.layer.1.attention.self.query.weight";

fn ckpt() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/bert-tf2/bert_model.ckpt")
}

fn run(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out: Output = Command::new(BIN).args(args).output().expect("run tfconv");
    (out.status.code().expect("tfconv exited by a signal"), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn read_report(path: &Path, stderr: &str) -> serde_json::Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("no report at {} ({e}); stderr:\n{stderr}", path.display()));
    serde_json::from_slice(&text).expect("the report is JSON")
}

/// Multiplies one f32 tensor of a safetensors file by `factor`, keeping every other tensor and
/// the metadata byte for byte.
fn scale_tensor(file: &Path, name: &str, factor: f32) {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    let target = tensors.iter_mut().find(|t| t.0 == name).unwrap_or_else(|| panic!("no {name} in {}", file.display()));
    assert_eq!(target.1, Dtype::F32, "{name}: a default conversion stores float32");
    for c in target.3.chunks_exact_mut(4) {
        let v = f32::from_le_bytes(c.try_into().unwrap()) * factor;
        c.copy_from_slice(&v.to_le_bytes());
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, meta.metadata().clone(), file).unwrap();
}

#[test]
fn tf2_checkpoint_verifies_as_bert_model_and_damage_at_layer_1_is_blamed_there() {
    if let Err(e) = tfconv::tf_runtime::load() {
        panic!("this test needs the TensorFlow reference runtime: {e}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let (out, report) = (tmp.path().join("out"), tmp.path().join("r.json"));

    let (code, stderr) = run(&[
        "convert".as_ref(), "--tf-checkpoint".as_ref(), ckpt().as_os_str(), "--output".as_ref(), out.as_os_str(),
        "--verify".as_ref(), "--report".as_ref(), report.as_os_str(),
    ]);
    assert_eq!(code, 0, "convert --verify failed:\n{stderr}");
    let r = read_report(&report, &stderr);
    assert_eq!(r["pass"], true, "{r:#}");
    assert_eq!(r["class"], "BertModel");
    assert!(r["first_divergence"].is_null(), "{r:#}");
    // The encoder-only model still has every layer and the pooler to compare, each passing.
    let names: Vec<&str> = r["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["embeddings", "layer.0", "layer.1", "layer.2", "pooler"]);
    assert!(r["outputs"].as_array().unwrap().iter().all(|o| o["pass"] == true), "{r:#}");

    // 1% on one query kernel: small enough to look plausible, far above f32 noise.
    scale_tensor(&out.join("model.safetensors"), DAMAGED, 1.01);
    let damaged_report = tmp.path().join("damaged.json");
    let (code, stderr) = run(&[
        "verify".as_ref(), "--hf-dir".as_ref(), out.as_os_str(), "--tf-checkpoint".as_ref(), ckpt().as_os_str(),
        "--report".as_ref(), damaged_report.as_os_str(),
    ]);
    assert_eq!(code, 1, "a damaged folder must fail verification:\n{stderr}");
    let r = read_report(&damaged_report, &stderr);
    assert_eq!(r["pass"], false);
    assert!(r["structural_problems"].as_array().unwrap().is_empty(), "names and shapes are intact: {r:#}");
    assert_eq!(r["first_divergence"], "layer.1", "stderr:\n{stderr}");
    assert!(stderr.contains("first divergence at 'layer.1'"), "stderr does not blame layer.1:\n{stderr}");
    // Upstream of the damage nothing moved.
    for o in r["outputs"].as_array().unwrap().iter().take(2) {
        assert_eq!(o["pass"], true, "{} should be untouched: {o:#}", o["name"]);
    }
}
