//! The golden XLNet checkpoints converted and run in candle against TensorFlow's stored outputs
//! (no TensorFlow needed), the keys and values written checked against HF's layout spelled out
//! independently (per-layer slices, shared biases copied, zeros where the original has nothing),
//! the config, and the checkpoints transformers cannot represent refused before writing.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tfconv::convert::{convert, ConvertOptions};
use tfconv::source::{self, DType};
use tfconv::verify::{self, compare, Tolerance};
use tfconv_models::probe::{Outputs, Probes};

const CASES: [&str; 3] = ["xlnet", "xlnet-tied-sts-b", "xlnet-mnli"];

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(case)
}

fn checkpoint(case: &str) -> PathBuf {
    golden(case).join("xlnet_model.ckpt")
}

fn expected_outputs(case: &str) -> Outputs {
    let bytes = std::fs::read(golden(case).join("expected.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let order = meta.metadata().as_ref().unwrap()["order"].clone();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = Outputs::default();
    for name in order.split(',') {
        let t = st.tensor(name).unwrap();
        out.push(name, t.shape().to_vec(), t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect());
    }
    out
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn golden_checkpoints_reproduce_tensorflow_outputs_in_candle() {
    for case in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(checkpoint(case), tmp.path().join("out"))).unwrap();
        let probes: Probes = serde_json::from_slice(&std::fs::read(golden(case).join("probes.json")).unwrap()).unwrap();
        assert_eq!(probes, done.arch.probes(7, 3, None), "{case}: stored probes are the architecture's for seed 7");
        let files = verify::weight_files(&done.folder).unwrap();
        let got = verify::candle_outputs(&files, done.arch.as_ref(), &probes.inputs).unwrap();
        let expected = expected_outputs(case);
        assert_eq!(got.names(), expected.names(), "{case}");
        for report in compare::compare(&got, &expected, Tolerance::for_dtype(DType::F32)) {
            assert!(report.pass, "{case}: {report:?}");
        }
    }
}

/// The keys `save_pretrained` writes (the tied lm_loss.weight omitted).
fn hf_keys(layers: usize, classifier: bool) -> BTreeSet<String> {
    let mut keys = vec!["transformer.word_embedding.weight".to_string(), "transformer.mask_emb".into()];
    for l in 0..layers {
        for k in ["q", "k", "v", "o", "r", "r_r_bias", "r_s_bias", "r_w_bias", "seg_embed", "layer_norm.weight", "layer_norm.bias"] {
            keys.push(format!("transformer.layer.{l}.rel_attn.{k}"));
        }
        for k in ["layer_norm.weight", "layer_norm.bias", "layer_1.weight", "layer_1.bias", "layer_2.weight", "layer_2.bias"] {
            keys.push(format!("transformer.layer.{l}.ff.{k}"));
        }
    }
    match classifier {
        false => keys.push("lm_loss.bias".into()),
        true => keys.extend(["sequence_summary.summary.weight", "sequence_summary.summary.bias", "logits_proj.weight", "logits_proj.bias"].map(String::from)),
    }
    keys.into_iter().collect()
}

#[test]
fn keys_and_values_follow_the_original() {
    for case in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(checkpoint(case), tmp.path().join("out"))).unwrap();
        let bytes = std::fs::read(done.folder.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let written: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
        assert_eq!(written, hf_keys(2, case != "xlnet"), "{case}");
        let ckpt = source::open(&checkpoint(case)).unwrap();
        let original = |name: &str| f32s(&ckpt.read(&format!("model/transformer/{name}")).unwrap());
        let out = |name: &str| f32s(st.tensor(name).unwrap().data());
        let tied = case == "xlnet-tied-sts-b";
        for bias in ["r_w_bias", "r_r_bias", "r_s_bias"] {
            let all = original(bias);
            let n = 4 * 8;
            for l in 0..2 {
                // Untied: layer l's slice of [L, N, Dh]. Tied: the one [N, Dh] bias in every layer.
                let want = if tied { all.clone() } else { all[l * n..(l + 1) * n].to_vec() };
                assert_eq!(out(&format!("transformer.layer.{l}.rel_attn.{bias}")), want, "{case}: {bias} of layer {l}");
            }
        }
        let seg = original("seg_embed");
        assert_eq!(out("transformer.layer.1.rel_attn.seg_embed"), seg[64..128].to_vec(), "{case}");
        // The attention kernels stay [D, N, Dh]; the feed-forward kernels are transposed.
        assert_eq!(out("transformer.layer.1.rel_attn.o"), original("layer_1/rel_attn/o/kernel"), "{case}");
        let k = original("layer_0/ff/layer_1/kernel"); // [32, 48]
        let w = out("transformer.layer.0.ff.layer_1.weight"); // [48, 32]
        assert!((0..48 * 32).all(|i| w[i] == k[(i % 32) * 48 + i / 32]), "{case}: layer_1 kernel not transposed");
        match case {
            "xlnet" => {
                assert_eq!(out("transformer.mask_emb"), original("mask_emb/mask_emb"));
                assert_eq!(out("lm_loss.bias"), f32s(&ckpt.read("model/lm_loss/bias").unwrap()));
                assert!(done.plan.synthesized.is_empty());
            }
            _ => {
                // Fine-tunes drop mask_emb: zeros, named in the plan, where HF leaves random values.
                assert!(out("transformer.mask_emb").iter().all(|&x| x == 0.0), "{case}");
                assert_eq!(done.plan.synthesized.iter().map(|s| s.target.as_str()).collect::<Vec<_>>(), ["transformer.mask_emb"]);
                let head = if case == "xlnet-mnli" { "classification_mnli" } else { "regression_sts-b" };
                let kernel = f32s(&ckpt.read(&format!("model/{head}/logit/kernel")).unwrap());
                let labels = kernel.len() / 32;
                let w = out("logits_proj.weight");
                assert!((0..labels * 32).all(|i| w[i] == kernel[(i % 32) * labels + i / 32]), "{case}: logits_proj");
            }
        }
    }
}

#[test]
fn config_json_says_what_the_original_computes() {
    for (case, act, class, labels) in [
        ("xlnet", "gelu_new", "XLNetLMHeadModel", None),
        ("xlnet-tied-sts-b", "relu", "XLNetForSequenceClassification", Some(1)),
        ("xlnet-mnli", "gelu_new", "XLNetForSequenceClassification", Some(3)),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(checkpoint(case), tmp.path().join("out"))).unwrap();
        let c: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("config.json")).unwrap()).unwrap();
        assert_eq!(c["model_type"], "xlnet");
        assert_eq!(c["architectures"][0], class);
        assert_eq!(c["ff_activation"], act, "{case}: the original's gelu is the tanh approximation");
        assert_eq!((c["vocab_size"].as_u64(), c["d_head"].as_u64(), c["untie_r"].as_bool()), (Some(64), Some(8), Some(true)), "{case}");
        assert!(c.get("n_token").is_none());
        assert_eq!(c["id2label"].as_object().map(|m| m.len()), labels, "{case}");
        assert!(done.folder.join("spiece.model").is_file());
    }
}

#[test]
fn checkpoints_transformers_cannot_represent_are_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |edit: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>), extra: &[&str]| -> (bool, String) {
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        let prefix = common::copy_golden("xlnet-mnli", dir.path());
        let path = dir.path().join("xlnet_config.json");
        let mut c: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(c.as_object_mut().unwrap());
        std::fs::write(&path, serde_json::to_vec(&c).unwrap()).unwrap();
        let out = dir.path().join("out");
        let mut args = vec!["convert", "--tf-checkpoint", prefix.to_str().unwrap(), "--output", out.to_str().unwrap()];
        args.extend(extra);
        let o = common::tfconv(&args);
        if !o.status.success() {
            assert!(!out.exists(), "nothing may be written");
        }
        (o.status.success(), common::stderr(&o))
    };
    // A config whose d_head is not d_model / n_head: transformers derives it.
    let (ok, e) = run(&|c| {
        c.insert("d_head".into(), 4.into());
    }, &[]);
    assert!(!ok && e.contains("d_head 4 × n_head 4 ≠ d_model 32") && e.contains("transformers' XLNetConfig derives d_head"), "{e}");
    // A config that agrees with itself but not with the kernels.
    let (ok, e) = run(&|c| {
        c.insert("d_head".into(), 4.into());
        c.insert("n_head".into(), 8.into());
    }, &[]);
    assert!(!ok && e.contains("model/transformer/layer_0/rel_attn/") && e.contains("has shape [32, 4, 8]"), "{e}");
    // The task head is found by its scope; naming another task is refused.
    let (ok, e) = run(&|_| {}, &["--finetuning_task_name", "cola"]);
    assert!(!ok && e.contains("--finetuning_task_name cola: the checkpoint's task heads are classification_mnli"), "{e}");
    let (ok, e) = run(&|_| {}, &["--finetuning_task_name", "MNLI"]);
    assert!(ok, "{e}");
}
