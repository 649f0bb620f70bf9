//! No false alarms for Transformer-XL: random small models (any cutoffs and div_val, no cutoffs,
//! proj_same_dim either way, shared or own softmax projections, untied or shared biases, memory
//! lengths 0 to 9, clamped or not) written by TensorFlow, converted in every stored dtype and
//! verified chained and isolated at the default tolerances, the memory-using second segment
//! included.
//!
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestRunner};
use tfconv::convert::{convert, ConvertOptions};
use tfconv::source::DType;
use tfconv::verify::{verify, VerifyOptions};
use tfconv_models::transfo_xl::synthetic::{checkpoint, corpus_info, random_spec, Spec};

#[derive(Debug, Clone)]
struct Case {
    spec: Spec,
    dtype: DType,
    seq_len: usize,
    seed: u64,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (any::<u64>(), prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)], 1usize..=8, any::<u64>())
        .prop_map(|(spec_seed, dtype, seq_len, seed)| Case { spec: random_spec(spec_seed), dtype, seq_len, seed })
}

fn check_case(case: &Case, dir: &std::path::Path) -> Result<f64, TestCaseError> {
    let cfg = &case.spec.cfg;
    let mut info = corpus_info(cfg, "random");
    info["mem_len"] = cfg.mem_len.into();
    info["clamp_len"] = cfg.clamp_len.into();
    std::fs::write(dir.join("corpus-info.json"), serde_json::to_vec(&info).unwrap()).unwrap();
    let prefix = dir.join("model.ckpt-1");
    tfconv::synthetic::write_checkpoint(&prefix, &checkpoint(&case.spec, case.seed)).map_err(|e| TestCaseError::fail(format!("writing the checkpoint: {e}")))?;
    let done = convert(&ConvertOptions { dtype: case.dtype, ..ConvertOptions::new(&prefix, dir.join("out")) })
        .map_err(|e| TestCaseError::fail(format!("convert: {e}")))?;
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("config.json")).unwrap()).unwrap();
    prop_assert_eq!(written["cutoffs"].clone(), serde_json::json!(cfg.cutoffs));
    prop_assert_eq!(written["untie_r"].as_bool(), Some(cfg.untie_r));
    let options = VerifyOptions { seq_len: Some(case.seq_len), ..VerifyOptions::default() };
    let report = verify(&done.folder, done.checkpoint.as_ref(), done.arch.as_ref(), &done.plan, &options)
        .map_err(|e| TestCaseError::fail(format!("verify: {e}")))?;
    prop_assert!(report.pass, "false alarm on a correct conversion of {:?}:\n{}", case, tfconv::verify::render_table(&report));
    prop_assert!(report.outputs.iter().any(|o| o.name == "next.log_probs"), "the second segment is compared");
    Ok(report.outputs.iter().map(|o| o.max_rel_error).fold(0.0, f64::max))
}

#[test]
fn random_correct_transfo_xl_conversions_pass() {
    if let Err(e) = tfconv::tf_runtime::load() {
        panic!("this test needs the TensorFlow reference runtime: {e}");
    }
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(24u32).max(20);
    let config = ProptestConfig {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let seen = std::sync::Mutex::new((0usize, 0f64, String::new()));
    let result = runner.run(&case_strategy(), |case| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let worst = check_case(&case, tmp.path())?;
        let mut s = seen.lock().unwrap();
        s.0 += 1;
        if worst > s.1 {
            (s.1, s.2) = (worst, format!("{case:?}"));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (count, worst, case) = seen.into_inner().unwrap();
    eprintln!("{count} random Transformer-XLs: worst relative error {worst:.3e} (in {case})");
    assert!(count >= cases as usize, "only {count} cases ran");
}
