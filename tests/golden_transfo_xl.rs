//! The golden Transformer-XL checkpoints converted and run in candle against TensorFlow's stored
//! outputs (no TensorFlow needed; both segments, the second through the first's memory), the
//! keys and values written checked against HF's layout spelled out independently (per-layer and
//! shared biases under every alias, identity projections where lm1b has none, the inv_freq
//! buffer), the config derived from the tensors, and contradictions refused.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tfconv::convert::{convert, ConvertOptions};
use tfconv::source;
use tfconv::source::DType;
use tfconv::verify::{self, compare, Tolerance};
use tfconv_models::probe::{Outputs, Probes};

const CASES: [(&str, &str); 2] = [("transfo-xl", "model.ckpt-200000"), ("transfo-xl-lm1b", "model.ckpt-100000")];
/// With the no-cutoff (enwik8-style) case, which the numeric check covers too.
const ALL: [(&str, &str); 3] = [CASES[0], CASES[1], ("transfo-xl-enwik8", "model.ckpt-400000")];

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(case)
}

fn checkpoint(case: &str) -> PathBuf {
    golden(case).join(ALL.iter().find(|c| c.0 == case).unwrap().1)
}

fn expected_outputs(case: &str) -> Outputs {
    let bytes = std::fs::read(golden(case).join("expected.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let order = meta.metadata().as_ref().unwrap()["order"].clone();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = Outputs::default();
    for name in order.split(',') {
        let t = st.tensor(name).unwrap();
        out.push(name, t.shape().to_vec(), f32s(t.data()));
    }
    out
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn converted(case: &str, dir: &Path) -> tfconv::convert::Converted {
    convert(&ConvertOptions::new(checkpoint(case), dir.join("out"))).unwrap()
}

#[test]
fn golden_checkpoints_reproduce_tensorflow_outputs_in_candle() {
    for (case, _) in ALL {
        let tmp = tempfile::tempdir().unwrap();
        let done = converted(case, tmp.path());
        assert_eq!(done.arch.model_type(), "transfo-xl", "{case}: detected from the variable names");
        let probes: Probes = serde_json::from_slice(&std::fs::read(golden(case).join("probes.json")).unwrap()).unwrap();
        assert_eq!(probes, done.arch.probes(7, 3, None), "{case}: stored probes are the architecture's for seed 7");
        let files = verify::weight_files(&done.folder).unwrap();
        let got = verify::candle_outputs(&files, done.arch.as_ref(), &probes.inputs).unwrap();
        let expected = expected_outputs(case);
        assert_eq!(got.names(), expected.names(), "{case}");
        assert!(expected.names().contains(&"next.log_probs") && expected.names().contains(&"next.layer.1"), "{case}: both segments");
        let mut worst = 0f64;
        for report in compare::compare(&got, &expected, Tolerance::for_dtype(DType::F32)) {
            assert!(report.pass, "{case}: {report:?}");
            worst = worst.max(report.max_rel_error);
        }
        eprintln!("golden/{case}: worst relative error against TensorFlow {worst:.3e}");
        // Log-probabilities over the whole vocabulary: each row sums to one.
        let lp = expected.get("next.log_probs").unwrap();
        let v = *lp.shape.last().unwrap();
        for row in lp.values.chunks(v) {
            let total: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
            assert!((total - 1.0).abs() < 1e-4, "{case}: probabilities sum to {total}");
        }
    }
}

/// HF's TransfoXLLMHeadModel state dict minus what save_pretrained omits as tied.
fn hf_keys(layers: usize, clusters: usize, untie_r: bool, own_out_projs: &[usize]) -> BTreeSet<String> {
    let mut keys = vec!["transformer.pos_emb.inv_freq".to_string(), "crit.cluster_weight".into(), "crit.cluster_bias".into()];
    for i in 0..clusters {
        keys.push(format!("transformer.word_emb.emb_layers.{i}.weight"));
        keys.push(format!("transformer.word_emb.emb_projs.{i}"));
        keys.push(format!("crit.out_layers.{i}.bias"));
    }
    keys.extend(own_out_projs.iter().map(|i| format!("crit.out_projs.{i}")));
    if !untie_r {
        keys.extend(["transformer.r_w_bias".to_string(), "transformer.r_r_bias".into()]);
    }
    for l in 0..layers {
        for k in ["r_w_bias", "r_r_bias", "qkv_net.weight", "r_net.weight", "o_net.weight", "layer_norm.weight", "layer_norm.bias"] {
            keys.push(format!("transformer.layers.{l}.dec_attn.{k}"));
        }
        for k in ["CoreNet.0.weight", "CoreNet.0.bias", "CoreNet.3.weight", "CoreNet.3.bias", "layer_norm.weight", "layer_norm.bias"] {
            keys.push(format!("transformer.layers.{l}.pos_ff.{k}"));
        }
    }
    keys.into_iter().collect()
}

#[test]
fn keys_and_values_follow_the_original() {
    for (case, _) in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let done = converted(case, tmp.path());
        let bytes = std::fs::read(done.folder.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let written: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
        let ckpt = source::open(&checkpoint(case)).unwrap();
        let original = |name: &str| f32s(&ckpt.read(&format!("transformer/{name}")).unwrap());
        let out = |name: &str| f32s(st.tensor(name).unwrap().data());
        let transposed = |w: &[f32], rows: usize, cols: usize| (0..rows * cols).map(|i| w[(i % cols) * rows + i / cols]).collect::<Vec<f32>>();
        let identity = |n: usize| (0..n * n).map(|i| (i / n == i % n) as u8 as f32).collect::<Vec<f32>>();
        let inv_freq: Vec<f32> = (0..8).map(|i| 1.0 / 10000f32.powf((2 * i) as f32 / 16.0)).collect();
        assert_eq!(out("transformer.pos_emb.inv_freq"), inv_freq, "{case}");
        match case {
            "transfo-xl" => {
                // div_val 2, 3 cutoffs, shared tail projections (written once, on the embedding side).
                assert_eq!(written, hf_keys(2, 4, true, &[0]), "{case}");
                let all = original("r_r_bias");
                for l in 0..2 {
                    assert_eq!(out(&format!("transformer.layers.{l}.dec_attn.r_r_bias")), all[l * 16..(l + 1) * 16].to_vec(), "layer {l}'s slice");
                }
                // cutoff_3 is 2 wide: proj_W [2, 16] → emb_projs.3 [16, 2].
                assert_eq!(out("transformer.word_emb.emb_projs.3"), transposed(&original("adaptive_embed/cutoff_3/proj_W"), 16, 2));
                assert_eq!(out("crit.out_projs.0"), transposed(&original("adaptive_softmax/cutoff_0/proj"), 16, 16));
                assert_eq!(out("crit.cluster_bias"), original("adaptive_softmax/cutoff_0/cluster_b"));
                assert!(done.plan.synthesized.iter().all(|s| s.target == "transformer.pos_emb.inv_freq"));
            }
            _ => {
                // lm1b: no head-cluster projections (identity), own tail projections, shared biases.
                assert_eq!(written, hf_keys(2, 3, false, &[0, 1, 2]), "{case}");
                assert_eq!(out("transformer.word_emb.emb_projs.0"), identity(16));
                assert_eq!(out("crit.out_projs.0"), identity(16));
                assert_eq!(out("crit.out_projs.2"), transposed(&original("adaptive_softmax/cutoff_2/proj"), 16, 4));
                for bias in ["r_w_bias", "r_r_bias"] {
                    // Every alias of the one shared parameter holds it.
                    assert_eq!(out(&format!("transformer.{bias}")), original(bias));
                    for l in 0..2 {
                        assert_eq!(out(&format!("transformer.layers.{l}.dec_attn.{bias}")), original(bias), "{bias} alias of layer {l}");
                    }
                }
                let synthesized: BTreeSet<&str> = done.plan.synthesized.iter().map(|s| s.target.as_str()).collect();
                assert_eq!(synthesized, BTreeSet::from(["transformer.pos_emb.inv_freq", "transformer.word_emb.emb_projs.0", "crit.out_projs.0"]));
            }
        }
        // The fused qkv kernel is transposed whole, q, k, v in the original's order.
        let qkv = original("layer_1/rel_attn/qkv/kernel");
        // Both cases have 3 · n_head · d_head = 48.
        assert_eq!(out("transformer.layers.1.dec_attn.qkv_net.weight"), transposed(&qkv, 48, 16), "{case}");
    }
}

#[test]
fn config_json_comes_from_the_tensors() {
    for (case, cutoffs, share, untie, mem, clamp) in
        [("transfo-xl", vec![10, 20, 35], true, true, 4, 7), ("transfo-xl-lm1b", vec![8, 24], false, false, 1600, 1000)]
    {
        let tmp = tempfile::tempdir().unwrap();
        let done = converted(case, tmp.path());
        let c: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("config.json")).unwrap()).unwrap();
        assert_eq!(c["model_type"], "transfo-xl");
        assert_eq!(c["architectures"][0], "TransfoXLLMHeadModel");
        assert_eq!(c["layer_norm_epsilon"], 1e-12);
        assert_eq!(c["cutoffs"], serde_json::json!(cutoffs), "{case}");
        assert_eq!(c["div_val"], 2);
        assert_eq!(c["proj_share_all_but_first"], share, "{case}");
        assert_eq!(c["untie_r"], untie, "{case}");
        assert_eq!((c["mem_len"].as_u64(), c["clamp_len"].as_i64()), (Some(mem), Some(clamp)), "{case}");
        assert_eq!(c["same_length"], false);
        assert_eq!(c["n_layer"], 2);
        assert_eq!(c["d_model"], 16);
    }
}

/// corpus-info.json and --set must agree with the tensors; an HF config.json beside the
/// checkpoint is not read as the original config; a config file is never required.
#[test]
fn settings_that_contradict_the_tensors_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wt103");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(golden("transfo-xl")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    let prefix = dir.join("model.ckpt-200000");
    let run = |overrides: Vec<(String, serde_json::Value)>, out: &str| {
        convert(&ConvertOptions { config_overrides: overrides, ..ConvertOptions::new(&prefix, tmp.path().join(out)) })
    };
    let err = run(vec![("vocab_size".into(), 51.into())], "a").err().unwrap().to_string();
    assert!(err.contains("vocab_size is 51") && err.contains("50"), "{err}");
    let err = run(vec![("untie_r".into(), false.into())], "b").err().unwrap().to_string();
    assert!(err.contains("untie_r"), "{err}");
    let err = run(vec![("proj_share_all_but_first".into(), false.into())], "c").err().unwrap().to_string();
    assert!(err.contains("proj_share_all_but_first"), "{err}");
    let err = run(vec![("same_length".into(), true.into())], "d").err().unwrap().to_string();
    assert!(err.contains("same_length"), "{err}");
    assert!(!tmp.path().join("a").exists() && !tmp.path().join("d").exists(), "nothing half-written");
    // corpus-info.json disagreeing with the tables.
    let info = dir.join("corpus-info.json");
    let good = std::fs::read(&info).unwrap();
    std::fs::write(&info, br#"{"vocab_size": 50, "cutoffs": [0, 10, 25, 35, 50], "dataset": "wt103"}"#).unwrap();
    let err = run(vec![], "e").err().unwrap().to_string();
    assert!(err.contains("cutoffs"), "{err}");
    // No corpus-info.json, a foreign config.json beside it: the tensors alone, evaluation defaults.
    std::fs::remove_file(&info).unwrap();
    std::fs::write(dir.join("config.json"), br#"{"model_type": "bert", "vocab_size": 3}"#).unwrap();
    let done = run(vec![("mem_len".into(), 3.into())], "f").unwrap();
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("config.json")).unwrap()).unwrap();
    assert_eq!((c["vocab_size"].as_u64(), c["mem_len"].as_u64(), c["clamp_len"].as_i64()), (Some(50), Some(3), Some(1000)));
    std::fs::write(&info, good).unwrap();
}
