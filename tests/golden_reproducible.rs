//! Proof that every golden/<case>/expected.safetensors came from TensorFlow: the TF reference,
//! built from the case's original config and variables exactly as `convert`/`verify` build it,
//! rerun on the original checkpoint with the stored probes, reproduces the stored outputs.
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use tfconv::{convert, source, tf_io};
use tfconv_models::probe::{Output, Outputs, Probes};

/// Allowed difference per output: |Δ| ≤ REL · max|stored| + ABS. Same graph, checkpoint and
/// probes, so only f32 rounding may differ: TF's CPU kernels (oneDNN or Eigen, chosen by CPU and
/// `TF_ENABLE_ONEDNN_OPTS`) sum in different orders. Measured here against the stored files:
/// worst 1.06e-6 of scale (18 ulps, the pooler), every encoder layer bit-identical with oneDNN
/// off. REL keeps 10× headroom for other CPUs and stays 10× below verify's f32 rtol (1e-4), so
/// drifted fixtures could not hide a conversion bug; ABS covers all-zero outputs.
const REL: f64 = 1e-5;
const ABS: f64 = 1e-7;

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// The golden model cases every registered architecture bundles, each folder with its probes
/// and expected outputs (a fixture that went missing fails here, not shrinks the loop).
fn golden_cases() -> Vec<PathBuf> {
    let cases: Vec<PathBuf> = tfconv_models::arch::golden_cases().iter().map(|c| golden_root().join(c.dir)).collect();
    for dir in &cases {
        assert!(dir.join("probes.json").is_file() && dir.join("expected.safetensors").is_file(), "{} is incomplete", dir.display());
    }
    assert!(cases.len() >= 8, "expected the BERT and ALBERT golden cases, found {cases:?}");
    cases
}

/// The checkpoint prefix of the golden case in `dir`.
fn golden_checkpoint(dir: &Path) -> PathBuf {
    let case = tfconv_models::arch::golden_cases().into_iter().find(|c| dir.ends_with(c.dir)).expect("a registered case");
    dir.join(case.checkpoint)
}

fn case_name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

fn stored_probes(dir: &Path) -> Probes {
    serde_json::from_slice(&std::fs::read(dir.join("probes.json")).unwrap()).expect("probes.json")
}

/// The stored outputs by name, and the forward order recorded in the file's metadata.
fn stored_outputs(dir: &Path) -> (BTreeMap<String, Output>, Vec<String>) {
    let bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("expected.safetensors");
    let mut outputs = BTreeMap::new();
    for (name, t) in st.tensors() {
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{}: {name} is not f32", dir.display());
        let values = t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        outputs.insert(name, Output { shape: t.shape().to_vec(), values });
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let order = meta.metadata().as_ref().and_then(|m| m.get("order")).expect("an 'order' entry in the metadata");
    (outputs, order.split(',').map(String::from).collect())
}

/// The TF reference for the checkpoint in `dir`, set up as `tfconv verify` sets it up: model type
/// detected from the variables, architecture from the original config beside the checkpoint,
/// and each variable's dtype from the checkpoint itself.
fn tf_reference(dir: &Path, probes: &Probes) -> Outputs {
    tfconv::tf_runtime::load().unwrap_or_else(|e| panic!("this test needs the TensorFlow reference runtime: {e}"));
    let ckpt = source::open(&golden_checkpoint(dir)).expect("open the golden checkpoint");
    let vars = convert::source_vars(ckpt.as_ref());
    let model_type = tfconv_models::arch::detect_model_type(&vars).expect("model type");
    let (_, config) = convert::find_config(ckpt.path(), None, model_type).expect("original config");
    let arch = tfconv_models::arch::from_original(model_type, &config, &vars).expect("architecture");
    let read = |name: &str| tf_io::read_f32(ckpt.as_ref(), name);
    let weights = tf_io::original_weights(ckpt.as_ref(), &read);
    arch.reference_outputs(&weights, &probes.inputs).expect("TensorFlow reference run")
}

/// The worst output of a successful comparison.
#[derive(Debug)]
struct Worst {
    name: String,
    max_abs: f64,
    /// max_abs / max|stored|.
    rel: f64,
    /// max_abs / allowed: below 1 passes.
    ratio: f64,
    bit_identical: usize,
}

/// Compares fresh TF outputs with the stored ones. Err names every output outside the bound with
/// its worst element, or the name or shape mismatch.
fn compare(stored: &BTreeMap<String, Output>, fresh: &Outputs) -> Result<Worst, String> {
    let fresh_names: BTreeSet<&str> = fresh.names().into_iter().collect();
    let stored_names: BTreeSet<&str> = stored.keys().map(String::as_str).collect();
    if fresh_names != stored_names {
        return Err(format!("output names differ: stored {stored_names:?}, TensorFlow now {fresh_names:?}"));
    }
    let mut worst = Worst { name: String::new(), max_abs: 0.0, rel: 0.0, ratio: 0.0, bit_identical: 0 };
    let mut beyond = Vec::new();
    for (name, now) in &fresh.0 {
        let then = &stored[name];
        if then.shape != now.shape || then.values.len() != now.values.len() {
            return Err(format!("{name}: stored shape {:?}, TensorFlow now {:?}", then.shape, now.shape));
        }
        let scale = then.values.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
        let allowed = REL * scale + ABS;
        // NaN counts as infinitely far, so a NaN on either side fails.
        let delta = |i: usize| Some((then.values[i] as f64 - now.values[i] as f64).abs()).filter(|d| !d.is_nan()).unwrap_or(f64::INFINITY);
        let (i, max_abs) = (0..then.values.len()).map(|i| (i, delta(i))).fold((0, 0.0), |w, e| if e.1 > w.1 { e } else { w });
        if max_abs > allowed {
            beyond.push(format!(
                "{name}[{i}]: stored {:e}, TensorFlow now {:e}, |Δ| {max_abs:.3e} > allowed {allowed:.3e}",
                then.values[i], now.values[i]
            ));
        }
        if then.values.iter().zip(&now.values).all(|(a, b)| a.to_bits() == b.to_bits()) {
            worst.bit_identical += 1;
        }
        if max_abs / allowed >= worst.ratio {
            (worst.name, worst.max_abs, worst.rel, worst.ratio) = (name.clone(), max_abs, max_abs / scale, max_abs / allowed);
        }
    }
    if beyond.is_empty() {
        Ok(worst)
    } else {
        Err(beyond.join("; "))
    }
}

#[test]
fn stored_expected_outputs_are_what_tensorflow_computes() {
    let mut failures = Vec::new();
    for dir in golden_cases() {
        let case = case_name(&dir);
        let (stored, order) = stored_outputs(&dir);
        let fresh = tf_reference(&dir, &stored_probes(&dir));
        // golden_bert compares candle with these outputs in this order; it must be TF's order.
        if order != fresh.names() {
            failures.push(format!("{case}: stored order {order:?}, TensorFlow's forward order {:?}", fresh.names()));
        }
        match compare(&stored, &fresh) {
            Ok(w) => eprintln!(
                "{case}: {} outputs, {} bit-identical; worst {} max|Δ| {:.3e}, rel {:.2e} ({:.2} of the bound)",
                fresh.0.len(),
                w.bit_identical,
                w.name,
                w.max_abs,
                w.rel,
                w.ratio
            ),
            Err(why) => failures.push(format!("{case}: {why}")),
        }
    }
    assert!(failures.is_empty(), "stored golden outputs are not reproduced by TensorFlow:\n{}", failures.join("\n"));
}

/// The comparison above must be able to fail: a single stored value moved by a few times the
/// bound, or a missing output, is reported by name.
#[test]
fn comparison_catches_one_perturbed_value_and_a_missing_output() {
    let dir = golden_root().join("bert");
    let (stored, _) = stored_outputs(&dir);
    let fresh = tf_reference(&dir, &stored_probes(&dir));
    compare(&stored, &fresh).expect("the untouched fixture agrees");

    let mut perturbed = stored.clone();
    let out = perturbed.get_mut("layer.1").expect("golden/bert has layer.1");
    let scale = out.values.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    let i = out.values.len() / 2;
    out.values[i] += (4.0 * (REL * scale + ABS)) as f32;
    let why = compare(&perturbed, &fresh).expect_err("a perturbed value must be reported");
    assert!(why.starts_with(&format!("layer.1[{i}]:")), "wrong blame: {why}");

    let mut missing = stored.clone();
    missing.remove("nsp_logits");
    let why = compare(&missing, &fresh).expect_err("a missing output must be reported");
    assert!(why.contains("output names differ") && why.contains("nsp_logits"), "{why}");
}
