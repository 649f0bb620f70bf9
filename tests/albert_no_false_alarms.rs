//! No false alarms for ALBERT: random small ALBERTs (embedding and hidden widths equal or not,
//! any groups and inner groups transformers can run, every head, the TF-Hub and Keras
//! spellings, gelu and relu), written by TensorFlow, converted in every stored dtype and verified
//! chained and isolated at the default tolerances.
//!
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestRunner};
use serde_json::json;
use tfconv::convert::{convert, ConvertOptions};
use tfconv::source::DType;
use tfconv::verify::{verify, VerifyOptions, VerifyReport};
use tfconv_models::albert::synthetic::{checkpoint, tiny_spiece_model, Spelling};
use tfconv_models::albert::{AlbertConfig, Head};

#[derive(Debug, Clone)]
struct Case {
    cfg: AlbertConfig,
    head: Head,
    spelling: Spelling,
    dtype: DType,
    seed: u64,
    trainer_state: bool,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    // L layers in G groups of J inner layers, with J·G ≤ L (transformers' limit).
    let shape = (1usize..=6).prop_flat_map(|layers| (Just(layers), 1..=layers)).prop_flat_map(|(layers, groups)| (Just(layers), Just(groups), 1..=layers / groups));
    (
        shape,
        // Norm widths of 4 or more: a LayerNorm over 2 or 3 features turns float32 noise in a
        // near-zero deviation into an O(1) change of its output (seen as a 1.5× false alarm at
        // width 2), a property of such configs, not of the conversion.
        (1usize..=4, 4usize..=8, prop_oneof![Just(None), (4usize..=24).prop_map(Some)], 4usize..=32),
        (10usize..=60, 4usize..=16, 1usize..=3),
        (prop_oneof![Just("gelu"), Just("relu")], prop_oneof![Just(Head::PreTraining), (1usize..=4).prop_map(|n| Head::SequenceClassification { num_labels: n }), Just(Head::Base)]),
        (any::<bool>(), any::<bool>(), prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)]),
        (any::<u64>(), any::<bool>()),
    )
        .prop_map(|((layers, groups, inner), (heads, head_dim, embedding, intermediate), (vocab, positions, types), (act, head), (hub_module, keras_norms, dtype), (seed, trainer_state))| {
            let hidden = heads * head_dim;
            Case {
                cfg: AlbertConfig {
                    vocab_size: vocab,
                    // None: E == H, so the checkpoint has no projection.
                    embedding_size: embedding.unwrap_or(hidden),
                    hidden_size: hidden,
                    num_hidden_layers: layers,
                    num_hidden_groups: groups,
                    num_attention_heads: heads,
                    intermediate_size: intermediate,
                    inner_group_num: inner,
                    hidden_act: act.into(),
                    max_position_embeddings: positions,
                    type_vocab_size: types,
                    layer_norm_eps: 1e-12,
                },
                head,
                spelling: Spelling { hub_module, keras_norms },
                dtype,
                seed,
                trainer_state,
            }
        })
}

/// `albert_config.json` as google-research/albert writes it.
fn original_config(cfg: &AlbertConfig) -> serde_json::Value {
    json!({
        "attention_probs_dropout_prob": 0.1, "hidden_dropout_prob": 0.1, "initializer_range": 0.02, "down_scale_factor": 1,
        "hidden_act": cfg.hidden_act, "embedding_size": cfg.embedding_size, "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size, "max_position_embeddings": cfg.max_position_embeddings,
        "num_attention_heads": cfg.num_attention_heads, "num_hidden_layers": cfg.num_hidden_layers,
        "num_hidden_groups": cfg.num_hidden_groups, "inner_group_num": cfg.inner_group_num,
        "type_vocab_size": cfg.type_vocab_size, "vocab_size": cfg.vocab_size
    })
}

fn worst(report: &VerifyReport) -> (f64, f64) {
    let chained = report.outputs.iter().map(|o| o.max_rel_error).fold(0.0, f64::max);
    let isolated = report.stages.iter().flat_map(|st| &st.isolated).map(|o| o.max_rel_error).fold(0.0, f64::max);
    (chained, isolated)
}

fn check_case(case: &Case, dir: &Path) -> Result<(f64, f64), TestCaseError> {
    std::fs::write(dir.join("albert_config.json"), serde_json::to_vec_pretty(&original_config(&case.cfg)).unwrap()).unwrap();
    std::fs::write(dir.join("30k-clean.model"), tiny_spiece_model()).unwrap();
    let prefix = dir.join("model.ckpt-best");
    tfconv::synthetic::write_checkpoint(&prefix, &checkpoint(&case.cfg, case.head, case.spelling, case.seed, case.trainer_state))
        .map_err(|e| TestCaseError::fail(format!("writing the checkpoint: {e}")))?;
    let opts = ConvertOptions { dtype: case.dtype, ..ConvertOptions::new(&prefix, dir.join("out")) };
    let done = convert(&opts).map_err(|e| TestCaseError::fail(format!("convert: {e}")))?;
    prop_assert_eq!(done.arch.class_name(), case.head.class_name());
    prop_assert_eq!(done.plan.synthesized.is_empty(), case.cfg.embedding_size != case.cfg.hidden_size);
    let report = verify(&done.folder, done.checkpoint.as_ref(), done.arch.as_ref(), &done.plan, &VerifyOptions::default())
        .map_err(|e| TestCaseError::fail(format!("verify: {e}")))?;
    prop_assert!(report.pass, "false alarm on a correct conversion of {:?}:\n{}", case, tfconv::verify::render_table(&report));
    prop_assert_eq!(report.stages.len(), case.cfg.num_hidden_layers + 2 + match case.head {
        Head::PreTraining => 2,
        Head::SequenceClassification { .. } => 1,
        Head::Base => 0,
    });
    Ok(worst(&report))
}

#[test]
fn random_correct_albert_conversions_pass() {
    if let Err(e) = tfconv::tf_runtime::load() {
        panic!("this test needs the TensorFlow reference runtime: {e}");
    }
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(30u32).max(30);
    let config = ProptestConfig {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let seen = std::sync::Mutex::new((0usize, 0f64, 0f64, String::new()));
    let result = runner.run(&case_strategy(), |case| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (chained, isolated) = check_case(&case, tmp.path())?;
        let mut s = seen.lock().unwrap();
        s.0 += 1;
        s.2 = s.2.max(isolated);
        if chained > s.1 {
            (s.1, s.3) = (chained, format!("{case:?}"));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (count, chained, isolated, case) = seen.into_inner().unwrap();
    eprintln!("{count} random ALBERTs: worst relative error {chained:.3e} chained (in {case}), {isolated:.3e} isolated");
    assert!(count >= cases as usize, "only {count} cases ran");
}
