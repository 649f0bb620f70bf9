//! No false alarms for T5: random small Mesh-TF T5s (v1.0 or v1.1 shape, both norm and sublayer
//! spellings, float32 or bfloat16 over one to three shards, with or without Adafactor slots,
//! encoder and decoder depths apart) written by TensorFlow with their operative_config.gin,
//! converted in every stored dtype and verified chained and isolated at the default tolerances.
//!
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestRunner};
use tfconv::convert::{convert, ConvertOptions};
use tfconv::source::DType;
use tfconv::verify::{verify, VerifyOptions};
use tfconv_models::t5::synthetic::{checkpoint, operative_config};
use tfconv_models::t5::{Names, T5Config};

#[derive(Debug, Clone)]
struct Case {
    cfg: T5Config,
    names: Names,
    bf16: bool,
    shards: usize,
    trainer_state: bool,
    dtype: DType,
    seq_len: usize,
    seed: u64,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (1usize..=3, 1usize..=3, 1usize..=4, 2usize..=8, 4usize..=40, 2usize..=24),
        (any::<bool>(), 1usize..=3, prop_oneof![Just(8usize), Just(16), Just(32)], 3usize..=130),
        (any::<bool>(), any::<bool>(), any::<bool>(), 1usize..=3, any::<bool>()),
        (prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)], 1usize..=12, any::<u64>()),
    )
        .prop_map(|((enc, dec, heads, d_kv, d_model, d_ff), (gated, _, buckets, vocab), (rms, named, bf16, shards, trainer_state), (dtype, seq_len, seed))| Case {
            cfg: T5Config {
                d_model, d_kv, d_ff, num_layers: enc, num_decoder_layers: Some(dec), num_heads: heads,
                relative_attention_num_buckets: buckets, relative_attention_max_distance: 128, layer_norm_epsilon: 1e-6,
                feed_forward_proj: if gated { "gated-gelu" } else { "relu" }.into(), tie_word_embeddings: !gated, vocab_size: vocab,
            },
            names: Names { rms_norm: rms || named, named_sublayers: named },
            bf16,
            shards,
            trainer_state,
            dtype,
            seq_len,
            seed,
        })
}

fn check_case(case: &Case, dir: &std::path::Path) -> Result<f64, TestCaseError> {
    std::fs::write(dir.join("operative_config.gin"), operative_config(&case.cfg, &case.names)).unwrap();
    let prefix = dir.join("model.ckpt-1000");
    let groups = checkpoint(&case.cfg, &case.names, case.bf16, case.shards, case.trainer_state, case.seed);
    tfconv::synthetic::write_sharded_checkpoint(&prefix, &groups).map_err(|e| TestCaseError::fail(format!("writing the checkpoint: {e}")))?;
    let done = convert(&ConvertOptions { dtype: case.dtype, ..ConvertOptions::new(&prefix, dir.join("out")) })
        .map_err(|e| TestCaseError::fail(format!("convert: {e}")))?;
    let options = VerifyOptions { seq_len: Some(case.seq_len), ..VerifyOptions::default() };
    let report = verify(&done.folder, done.checkpoint.as_ref(), done.arch.as_ref(), &done.plan, &options)
        .map_err(|e| TestCaseError::fail(format!("verify: {e}")))?;
    prop_assert!(report.pass, "false alarm on a correct conversion of {:?}:\n{}", case, tfconv::verify::render_table(&report));
    prop_assert_eq!(report.stages.len(), case.cfg.num_layers + case.cfg.decoder_layers() + 5);
    Ok(report.outputs.iter().map(|o| o.max_rel_error).fold(0.0, f64::max))
}

#[test]
fn random_correct_t5_conversions_pass() {
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
    eprintln!("{count} random T5s: worst relative error {worst:.3e} (in {case})");
    assert!(count >= cases as usize, "only {count} cases ran");
}
