//! No false alarms for GPT-2: random small GPT-2 checkpoints written by TensorFlow under
//! `model.py`'s names (some with a fine-tuner's Adam state) must convert and pass `verify` at the
//! default tolerances, chained and isolated, stored as float32, float16 and bfloat16. The worst
//! relative errors seen are printed so they can be recorded.
//!
//! Needs TensorFlow (it writes the checkpoints with SaveV2 and runs the reference): a missing
//! runtime makes this test FAIL, never skip.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestRunner};
use tfconv::convert::{convert, ConvertOptions};
use tfconv::source::DType;
use tfconv::verify::{render_table, verify, Tolerance, VerifyOptions, VerifyReport};
use tfconv_models::gpt2::{self, Gpt2Config};

fn require_tensorflow() {
    if let Err(e) = tfconv::tf_runtime::load() {
        panic!("these tests need the TensorFlow reference runtime: {e}");
    }
}

#[derive(Debug, Clone)]
struct Case {
    cfg: Gpt2Config,
    seed: u64,
    trainer_state: bool,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    // Widths from 1 (a one-wide model, whose kernels reshape rather than squeeze) to 48, but not
    // 2 or 3: LayerNorm over two or three features is ill-conditioned where the values of a row
    // nearly coincide (its output moves up to 0.5/√eps ≈ 160× its input's error), so there the
    // float32 noise that one correct implementation's earlier stages hand the next can exceed
    // the chained tolerance by itself. A width of one normalizes to exactly its bias.
    ((1usize..=4, 1usize..=12, 1usize..=3), (2usize..=80, 1usize..=20), any::<u64>(), any::<bool>())
        .prop_filter("LayerNorm over 2 or 3 features is ill-conditioned", |((heads, head_dim, _), ..)| ![2, 3].contains(&(heads * head_dim)))
        .prop_map(
        |((heads, head_dim, layers), (vocab, positions), seed, trainer_state)| {
            let hparams = serde_json::json!({"n_vocab": vocab, "n_ctx": positions, "n_embd": heads * head_dim, "n_head": heads, "n_layer": layers});
            Case { cfg: gpt2::from_hparams(&hparams).expect("valid hparams"), seed, trainer_state }
        },
    )
}

fn worst(report: &VerifyReport) -> (f64, f64) {
    let chained = report.outputs.iter().map(|o| o.max_rel_error).fold(0.0, f64::max);
    let isolated = report.stages.iter().flat_map(|st| &st.isolated).map(|o| o.max_rel_error).fold(0.0, f64::max);
    (chained, isolated)
}

/// Writes the case as gpt-2 releases it (checkpoint, hparams.json, encoder.json, vocab.bpe),
/// converts it in every stored dtype and verifies each; returns the worst (chained, isolated).
fn check_case(case: &Case) -> Result<(f64, f64), TestCaseError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("original");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hparams.json"), gpt2::synthetic::hparams(&case.cfg).to_string()).unwrap();
    let (encoder, merges) = gpt2::synthetic::tiny_tokenizer(case.cfg.vocab_size);
    std::fs::write(src.join("encoder.json"), encoder).unwrap();
    std::fs::write(src.join("vocab.bpe"), merges).unwrap();
    let prefix = src.join("model.ckpt");
    tfconv::synthetic::write_checkpoint(&prefix, &gpt2::synthetic::checkpoint(&case.cfg, case.seed, case.trainer_state))
        .map_err(|e| TestCaseError::fail(format!("writing the checkpoint: {e}")))?;
    let mut seen = (0f64, 0f64);
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let opts = ConvertOptions { dtype, ..ConvertOptions::new(&prefix, tmp.path().join(dtype.name())) };
        let done = convert(&opts).map_err(|e| TestCaseError::fail(format!("convert: {e}")))?;
        prop_assert_eq!(done.arch.class_name(), "GPT2LMHeadModel");
        prop_assert!(done.notes.is_empty(), "{:?}", done.notes);
        let report = verify(&done.folder, done.checkpoint.as_ref(), done.arch.as_ref(), &done.plan, &VerifyOptions::default())
            .map_err(|e| TestCaseError::fail(format!("verify: {e}")))?;
        prop_assert_eq!(report.tolerance, Tolerance::for_dtype(dtype));
        prop_assert_eq!(report.outputs.len(), case.cfg.n_layer + 3);
        prop_assert!(report.pass, "false alarm on a correct {} conversion of {:?}:\n{}", dtype.name(), case, render_table(&report));
        let (chained, isolated) = worst(&report);
        seen = (seen.0.max(chained), seen.1.max(isolated));
    }
    Ok(seen)
}

#[test]
fn random_correct_conversions_pass_in_every_dtype() {
    require_tensorflow();
    // At least 30 cases; PROPTEST_CASES asks for more.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(30u32).max(30);
    let config = ProptestConfig {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    // (cases passed, worst chained relative error, its case, worst isolated)
    let tally = std::sync::Mutex::new((0usize, 0f64, String::new(), 0f64));
    let result = runner.run(&case_strategy(), |case| {
        let (chained, isolated) = check_case(&case)?;
        let mut t = tally.lock().unwrap();
        t.0 += 1;
        t.3 = t.3.max(isolated);
        if chained > t.1 {
            (t.1, t.2) = (chained, format!("{case:?}"));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (count, chained, case, isolated) = tally.into_inner().unwrap();
    eprintln!("{count} random GPT-2s × float32, float16, bfloat16: worst relative error {chained:.3e} chained (in {case}), {isolated:.3e} isolated");
    assert!(count >= cases as usize, "only {count} cases ran");
}
