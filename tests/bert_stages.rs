//! BERT's forward pass as stages (groundwork for a staged, bounded-memory verify, issue 8): on
//! every golden checkpoint, stages chained on each side reproduce that side's whole-model
//! forward, each candle stage fed TensorFlow's inputs agrees with TensorFlow's stage, a damaged
//! layer fails its own stage alone, and every stage declares exactly the weights it uses.
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use tfconv::convert::{convert, ConvertOptions, Converted};
use tfconv::verify::compare::{self, Tolerance};
use tfconv_models::probe::{Output, Outputs, Probes};
use tfconv_models::stage::{self, Stage, Values};
use tfconv_models::tf_graph::OriginalWeights;

const CASES: [&str; 5] = ["bert", "bert-classifier", "bert-squad", "bert-encoder", "bert-tf2"];

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(case)
}

/// A golden case converted to float32, with what both sides need.
struct Case {
    name: &'static str,
    _dir: tempfile::TempDir,
    done: Converted,
    /// Every tensor of the converted model.safetensors.
    tensors: HashMap<String, Tensor>,
    weights: OriginalWeights<'static>,
    probes: Probes,
}

impl Case {
    fn new(name: &'static str) -> Case {
        tfconv::tf_runtime::load().unwrap_or_else(|e| panic!("this test needs the TensorFlow reference runtime: {e}"));
        let dir = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(golden(name).join("bert_model.ckpt"), dir.path().join("out"))).unwrap();
        let tensors = candle_core::safetensors::load(done.folder.join("model.safetensors"), &Device::Cpu).unwrap();
        let ckpt = done.checkpoint.as_ref();
        let dtypes = ckpt.tensors().iter().map(|t| (t.name.clone(), tfconv::tf_io::tf_dtype(t.dtype))).collect();
        let weights = OriginalWeights::new(ckpt.path().to_string_lossy(), dtypes);
        let probes = serde_json::from_slice(&std::fs::read(golden(name).join("probes.json")).unwrap()).unwrap();
        Case { name, _dir: dir, done, tensors, weights, probes }
    }

    fn stages(&self) -> Vec<Stage> {
        self.done.arch.stages()
    }

    fn inputs(&self) -> Values {
        self.probes.inputs.clone()
    }

    /// Runs `stage` in candle with a VarBuilder holding only its declared tensors (taken from
    /// `tensors`); returns its outputs and the names the model asked for.
    fn candle_stage(&self, tensors: &HashMap<String, Tensor>, stage: &Stage, inputs: &Values) -> candle_core::Result<(Values, BTreeSet<String>)> {
        let own = stage.hf_tensors.iter().map(|n| (n.clone(), tensors[n].clone())).collect();
        let asked = Arc::new(Mutex::new(BTreeSet::new()));
        let vb = VarBuilder::from_backend(Box::new(Recording { inner: own, asked: asked.clone() }), DType::F32, Device::Cpu);
        let out = self.done.arch.candle_stage(stage, vb, inputs)?;
        let asked = asked.lock().unwrap().clone();
        Ok((out, asked))
    }

    /// Every stage in candle, each fed candle's own previous outputs.
    fn candle_chained(&self, tensors: &HashMap<String, Tensor>) -> Outputs {
        let out = stage::chain(&self.stages(), &self.inputs(), |s, ins| Ok(self.candle_stage(tensors, s, ins)?.0));
        out.unwrap_or_else(|e| panic!("{}: candle stages: {e:#}", self.name)).to_outputs()
    }

    /// Every stage in TensorFlow, each fed TensorFlow's own previous outputs.
    fn tf_chained(&self) -> Values {
        let arch = self.done.arch.as_ref();
        stage::chain(&self.stages(), &self.inputs(), |s, ins| arch.reference_stage(s, &self.weights, ins))
            .unwrap_or_else(|e| panic!("{}: TensorFlow stages: {e:#}", self.name))
    }

    /// Each candle stage fed TensorFlow's inputs for it, compared with TensorFlow's outputs at
    /// verify's float32 tolerance; one (stage, reports) row per stage.
    fn isolated(&self, tensors: &HashMap<String, Tensor>, tf: &Values) -> Vec<(String, Vec<compare::OutputReport>)> {
        let mut known = self.inputs();
        known.0.extend(tf.0.iter().cloned());
        let tf = tf.to_outputs();
        self.stages()
            .iter()
            .map(|s| {
                let (out, _) = self.candle_stage(tensors, s, &known).unwrap_or_else(|e| panic!("{}: candle {}: {e}", self.name, s.name));
                let reference = Outputs(s.outputs.iter().map(|n| (n.clone(), tf.get(n).unwrap().clone())).collect());
                (s.name.clone(), compare::compare(&out.to_outputs(), &reference, Tolerance::for_dtype(tfconv::source::DType::F32)))
            })
            .collect()
    }
}

/// A weight backend that records every name asked for.
struct Recording {
    inner: HashMap<String, Tensor>,
    asked: Arc<Mutex<BTreeSet<String>>>,
}

impl SimpleBackend for Recording {
    fn get(&self, shape: candle_core::Shape, name: &str, init: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.asked.lock().unwrap().insert(name.to_string());
        SimpleBackend::get(&self.inner, shape, name, init, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.asked.lock().unwrap().insert(name.to_string());
        SimpleBackend::get_unchecked(&self.inner, name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        SimpleBackend::contains_tensor(&self.inner, name)
    }
}

fn max_abs(o: &Output) -> f64 {
    o.values.iter().fold(0f64, |m, &v| m.max((v as f64).abs()))
}

/// Largest |a − b| (NaN counts as infinite); the shapes must agree.
fn max_delta(a: &Output, b: &Output) -> f64 {
    assert_eq!(a.shape, b.shape);
    a.values.iter().zip(&b.values).map(|(&x, &y)| (x as f64 - y as f64).abs()).map(|d| if d.is_nan() { f64::INFINITY } else { d }).fold(0.0, f64::max)
}

/// Compares `chained` with `whole` output by output under |Δ| ≤ rel·max|whole| + abs; returns
/// the worst Δ/max|whole| and how many outputs are bit-identical.
fn agree(label: &str, chained: &Outputs, whole: &Outputs, rel: f64, abs: f64) -> (f64, usize) {
    assert_eq!(chained.names(), whole.names(), "{label}: output names and order");
    let (mut worst, mut identical) = (0f64, 0);
    for ((name, c), (_, w)) in chained.0.iter().zip(&whole.0) {
        let (delta, scale) = (max_delta(c, w), max_abs(w));
        assert!(delta <= rel * scale + abs, "{label} {name}: |Δ| {delta:.3e} > {rel:e}·{scale:.3e} + {abs:e}");
        worst = worst.max(delta / scale.max(f64::MIN_POSITIVE));
        identical += c.values.iter().zip(&w.values).all(|(x, y)| x.to_bits() == y.to_bits()) as usize;
    }
    (worst, identical)
}

#[test]
fn chained_stages_reproduce_each_sides_whole_model_forward() {
    for name in CASES {
        let case = Case::new(name);
        let arch = case.done.arch.as_ref();
        let vb = VarBuilder::from_tensors(case.tensors.clone(), DType::F32, &Device::Cpu);
        let whole = arch.candle_outputs(vb, &case.probes.inputs).unwrap();
        let (worst, identical) = agree(&format!("{name} candle"), &case.candle_chained(&case.tensors), &whole, 1e-6, 0.0);
        eprintln!("{name}: candle chained vs whole: {identical}/{} outputs bit-identical, worst rel {worst:.2e}", whole.0.len());

        let whole = arch.reference_outputs(&case.weights, &case.probes.inputs).unwrap();
        let (worst, identical) = agree(&format!("{name} TensorFlow"), &case.tf_chained().to_outputs(), &whole, 1e-5, 1e-7);
        eprintln!("{name}: TF chained vs whole: {identical}/{} outputs bit-identical, worst rel {worst:.2e}", whole.0.len());
    }
}

#[test]
fn isolated_candle_stages_agree_with_tensorflow_stages() {
    for name in CASES {
        let case = Case::new(name);
        let tf = case.tf_chained();
        for (stage, reports) in case.isolated(&case.tensors, &tf) {
            for r in &reports {
                eprintln!("{name} {stage:<10} {:<12} max|Δ| {:.3e} rel {:.3e} allowed {:.3e}", r.name, r.max_abs_error, r.max_rel_error, r.allowed);
                assert!(r.pass, "{name} stage {stage}: {r:?}");
            }
        }
    }
}

#[test]
fn a_damaged_layer_fails_only_its_own_stage_in_isolation() {
    for name in CASES {
        let case = Case::new(name);
        let damaged_name = format!("{}encoder.layer.1.attention.self.query.weight", if name == "bert-encoder" || name == "bert-tf2" { "" } else { "bert." });
        let mut damaged = case.tensors.clone();
        let w = damaged.get_mut(&damaged_name).unwrap_or_else(|| panic!("{name}: no {damaged_name}"));
        *w = (&*w * 1.01).unwrap();
        let tf = case.tf_chained();
        let isolated = case.isolated(&damaged, &tf);
        let failing: Vec<&str> = isolated.iter().filter(|(_, reports)| reports.iter().any(|r| !r.pass)).map(|(s, _)| s.as_str()).collect();
        assert_eq!(failing, ["layer.1"], "{name}: isolated stages failing with {damaged_name} scaled by 1.01");
        // How far each side of the bound the stages land: max|Δ| / allowed.
        let ratio = |keep: fn(&str) -> bool| {
            isolated.iter().filter(|(s, _)| keep(s)).flat_map(|(_, r)| r).map(|r| r.max_abs_error / r.allowed).fold(0.0, f64::max)
        };
        let (damaged_ratio, others_ratio) = (ratio(|s| s == "layer.1"), ratio(|s| s != "layer.1"));
        // Chained, the damage propagates: the first failure is the same stage, but later ones
        // may fail too, which is what isolation avoids.
        let chained = compare::compare(&case.candle_chained(&damaged), &tf.to_outputs(), Tolerance::for_dtype(tfconv::source::DType::F32));
        let chained_failing: Vec<&str> = chained.iter().filter(|r| !r.pass).map(|r| r.name.as_str()).collect();
        assert_eq!(chained_failing.first(), Some(&"layer.1"), "{name}: chained");
        let rel = |s: &str| chained.iter().find(|r| r.name == s).unwrap().max_rel_error;
        eprintln!(
            "{name}: isolated: layer.1 at {damaged_ratio:.1}× its bound, every other stage within {others_ratio:.4}×; \
             chained failing {chained_failing:?} (layer.1 rel {:.2e})",
            rel("layer.1")
        );
    }
}

#[test]
fn each_stage_declares_exactly_the_weights_it_uses_and_together_they_cover_the_plan() {
    for name in CASES {
        let case = Case::new(name);
        let arch = case.done.arch.as_ref();
        let stages = case.stages();
        let tf = case.tf_chained();
        let mut known = case.inputs();
        known.0.extend(tf.0.iter().cloned());

        for s in &stages {
            // candle: a VarBuilder holding only the declared tensors suffices, and each is read.
            let declared: BTreeSet<String> = s.hf_tensors.iter().cloned().collect();
            assert_eq!(declared.len(), s.hf_tensors.len(), "{name} {}: a tensor declared twice", s.name);
            let (_, asked) = case.candle_stage(&case.tensors, s, &known).unwrap_or_else(|e| panic!("{name} {}: {e}", s.name));
            assert_eq!(asked, declared, "{name} {}: tensors read vs declared", s.name);

            // TensorFlow: restoring only the declared variables suffices; dropping any one fails
            // naming it; restoring one more than the stage reads fails too.
            arch.reference_stage(s, &case.weights, &known).unwrap_or_else(|e| panic!("{name} {}: {e:#}", s.name));
            for i in 0..s.original_vars.len() {
                let mut fewer = s.clone();
                let gone = fewer.original_vars.remove(i);
                let e = arch.reference_stage(&fewer, &case.weights, &known).expect_err(&format!("{name} {} without {gone}", s.name));
                assert!(format!("{e:#}").contains(&format!("variable {gone} was not restored")), "{name} {}: {e:#}", s.name);
            }
            let other = stages.iter().flat_map(|o| &o.original_vars).find(|v| !s.original_vars.contains(v)).unwrap().clone();
            let mut more = s.clone();
            more.original_vars.push(other.clone());
            let e = arch.reference_stage(&more, &case.weights, &known).expect_err(&format!("{name} {} with {other}", s.name));
            assert!(format!("{e:#}").contains(&format!("restored but never read: {other}")), "{name} {}: {e:#}", s.name);
        }

        // Together: the plan's targets and sources, nothing else. The one weight two stages
        // share is the word embedding matrix, which the MLM decoder is tied to.
        let plan = &case.done.plan;
        let hf: BTreeSet<&str> = stages.iter().flat_map(|s| s.hf_tensors.iter().map(String::as_str)).collect();
        let targets: BTreeSet<&str> = plan.mappings.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(hf, targets, "{name}: stage tensors vs plan targets");
        let original: BTreeSet<&str> = stages.iter().flat_map(|s| s.original_vars.iter().map(String::as_str)).collect();
        let sources: BTreeSet<&str> = plan.mappings.iter().map(|m| m.source.as_str()).collect();
        assert_eq!(original, sources, "{name}: stage variables vs plan sources");
        let shared: BTreeSet<&str> = hf.iter().copied().filter(|t| stages.iter().filter(|s| s.hf_tensors.iter().any(|n| n == t)).count() > 1).collect();
        let expected_shared: BTreeSet<&str> = match name {
            "bert" => ["bert.embeddings.word_embeddings.weight"].into(),
            _ => BTreeSet::new(),
        };
        assert_eq!(shared, expected_shared, "{name}: tensors loaded by more than one stage");

        // The folder's own config.json (what verify builds candle from) gives the same stages
        // on the HF side, so a staged verify can pair them by name.
        let folder_arch = tfconv::verify::folder_architecture(&case.done.folder).unwrap();
        let hf_side = |s: &Stage| (s.name.clone(), s.hf_tensors.clone(), s.inputs.clone(), s.outputs.clone());
        assert_eq!(
            folder_arch.stages().iter().map(hf_side).collect::<Vec<_>>(),
            stages.iter().map(hf_side).collect::<Vec<_>>(),
            "{name}: stages from config.json"
        );
        let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        eprintln!("{name}: stages {names:?}, {} HF tensors, {} original variables", hf.len(), original.len());
    }
}
