//! The golden T5 checkpoints converted and run in candle against TensorFlow's stored outputs (no
//! TensorFlow needed); the keys and values against HF's layout spelled out independently; the
//! config from the gin; `--dtype bfloat16` keeping the original bits; and the checkpoint's
//! Adafactor slots never read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tfconv::convert::{convert, ConvertOptions};
use tfconv::source::{self, DType};
use tfconv::verify::{self, compare, Tolerance};
use tfconv_models::probe::{Outputs, Probes};

const CASES: [(&str, &str); 3] = [("t5-v1_0", "model.ckpt-1000000"), ("t5-v1_1", "model.ckpt-1000000"), ("t5-named-sublayers", "model.ckpt-500")];

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(case)
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

#[test]
fn golden_checkpoints_reproduce_tensorflow_outputs_in_candle() {
    for (case, ckpt) in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(golden(case).join(ckpt), tmp.path().join("out"))).unwrap();
        let probes: Probes = serde_json::from_slice(&std::fs::read(golden(case).join("probes.json")).unwrap()).unwrap();
        assert_eq!(probes, done.arch.probes(7, 3, None), "{case}");
        let files = verify::weight_files(&done.folder).unwrap();
        let got = verify::candle_outputs(&files, done.arch.as_ref(), &probes.inputs).unwrap();
        let expected = expected_outputs(case);
        assert_eq!(got.names(), expected.names(), "{case}");
        for report in compare::compare(&got, &expected, Tolerance::for_dtype(DType::F32)) {
            assert!(report.pass, "{case}: {report:?}");
        }
    }
}

/// The keys `save_pretrained` writes (the tied embed_tokens omitted; lm_head only when untied).
fn hf_keys(gated: bool, decoder_layers: usize) -> BTreeSet<String> {
    let mut keys = vec!["shared.weight".to_string()];
    for (stack, layers) in [("encoder", 2), ("decoder", decoder_layers)] {
        for b in 0..layers {
            let subs: &[(&str, usize)] = if stack == "encoder" { &[("SelfAttention", 0), ("ff", 1)] } else { &[("SelfAttention", 0), ("EncDecAttention", 1), ("ff", 2)] };
            for &(sub, i) in subs {
                keys.push(format!("{stack}.block.{b}.layer.{i}.layer_norm.weight"));
                match sub {
                    "ff" => {
                        let wi: &[&str] = if gated { &["wi_0", "wi_1", "wo"] } else { &["wi", "wo"] };
                        keys.extend(wi.iter().map(|w| format!("{stack}.block.{b}.layer.{i}.DenseReluDense.{w}.weight")));
                    }
                    _ => keys.extend(["q", "k", "v", "o"].iter().map(|p| format!("{stack}.block.{b}.layer.{i}.{sub}.{p}.weight"))),
                }
            }
        }
        keys.push(format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"));
        keys.push(format!("{stack}.final_layer_norm.weight"));
    }
    if gated {
        keys.push("lm_head.weight".into());
    }
    keys.into_iter().collect()
}

#[test]
fn keys_config_and_bfloat16_bits() {
    for (case, ckpt, gated, decoder_layers) in [("t5-v1_0", "model.ckpt-1000000", false, 2), ("t5-v1_1", "model.ckpt-1000000", true, 3)] {
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions { dtype: DType::BF16, ..ConvertOptions::new(golden(case).join(ckpt), tmp.path().join("out")) }).unwrap();
        let bytes = std::fs::read(done.folder.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let written: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
        assert_eq!(written, hf_keys(gated, decoder_layers), "{case}");
        let c: serde_json::Value = serde_json::from_slice(&std::fs::read(done.folder.join("config.json")).unwrap()).unwrap();
        let want = if gated { ("gated-gelu", "gelu_new", true, false) } else { ("relu", "relu", false, true) };
        assert_eq!(
            (c["feed_forward_proj"].as_str(), c["dense_act_fn"].as_str(), c["is_gated_act"].as_bool(), c["tie_word_embeddings"].as_bool()),
            (Some(want.0), Some(want.1), Some(want.2), Some(want.3)),
            "{case}"
        );
        assert_eq!((c["vocab_size"].as_u64(), c["decoder_start_token_id"].as_u64(), c["num_decoder_layers"].as_u64()), (Some(128), Some(0), Some(decoder_layers as u64)));
        let original = source::open(&golden(case).join(ckpt)).unwrap();
        if case == "t5-v1_1" {
            // bfloat16 in, bfloat16 out: the original bits exactly (q transposed [D, N·K] → [N·K, D]).
            let name = "encoder/block_001/layer_000/SelfAttention/q";
            assert_eq!(original.info(name).unwrap().dtype, DType::BF16);
            let src = original.read(name).unwrap();
            let out = st.tensor("encoder.block.1.layer.0.SelfAttention.q.weight").unwrap();
            assert_eq!(out.dtype(), safetensors::Dtype::BF16);
            let (d, inner) = (32, 32);
            let two = |b: &[u8], i: usize| [b[2 * i], b[2 * i + 1]];
            assert!((0..d * inner).all(|i| two(out.data(), i) == two(&src, (i % d) * inner + i / d)), "bits changed");
            // Adafactor's slots are skipped by name, never read.
            assert!(done.plan.skipped.iter().any(|(n, _)| n.ends_with("_slot_vr")));
        }
    }
}

#[test]
fn the_gin_decides_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(golden("t5-v1_0")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let gin = std::fs::read_to_string(dir.join("operative_config.gin")).unwrap();
    std::fs::write(dir.join("operative_config.gin"), gin.replace("num_heads = 4", "num_heads = 3")).unwrap();
    let e = convert(&ConvertOptions::new(dir.join("model.ckpt-1000000"), tmp.path().join("out"))).err().expect("4 heads in the weights");
    assert!(e.to_string().contains("relative_attention_bias has shape [4, 32]"), "{e}");
    std::fs::write(dir.join("operative_config.gin"), gin.replace("num_heads = 4", "num_heads = %heads")).unwrap();
    let e = convert(&ConvertOptions::new(dir.join("model.ckpt-1000000"), tmp.path().join("out"))).err().expect("unbound macro");
    assert!(e.to_string().contains("operative_config.gin") && e.to_string().contains("macro %heads is not bound"), "{e}");
}
