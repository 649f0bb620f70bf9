use serde_json::json;

use super::*;
use crate::arch::Architecture;

fn vars_of(cfg: &GptConfig) -> Vec<SourceVar> {
    synthetic::gpt_arrays(cfg).into_iter().map(|(name, shape)| SourceVar { name, shape }).collect()
}

fn tiny(head: Head) -> GptConfig {
    GptConfig { vocab_size: 10, n_positions: 6, n_embd: 8, n_layer: 2, n_head: 2, afn: "gelu".into(), layer_norm_epsilon: 1e-5, head }
}

#[test]
fn without_a_config_sizes_come_from_the_arrays_and_the_rest_from_train_py() {
    let cfg = tiny(Head::Lm);
    let vars = vars_of(&GptConfig { n_embd: 24, ..cfg.clone() });
    let got = original_config(&json!({}), &vars, false).unwrap();
    assert_eq!((got.vocab_size, got.n_positions, got.n_embd, got.n_layer, got.n_head, got.afn.as_str()), (10, 6, 24, 2, 12, "gelu"));
    // The release's params_shapes.json standing for the config reads the same way.
    assert_eq!(original_config(&synthetic::shapes(&got), &vars, false).unwrap(), got);
    // Neither config nor arrays: the released model's sizes.
    let release = original_config(&json!({}), &[], false).unwrap();
    assert_eq!((release.vocab_size, release.n_positions, release.n_embd, release.n_layer, release.n_head), (40478, 512, 768, 12, 12));
    // 12 heads do not divide a width of 8: the message says where 12 came from.
    let e = original_config(&json!({}), &vars_of(&cfg), false).unwrap_err();
    assert_eq!(e, "n_embd 8 must be a multiple of n_head 12 (train.py's default; give n_head in a config file)");
    let given = original_config(&json!({"n_head": 2, "afn": "swish"}), &vars_of(&cfg), true).unwrap();
    assert_eq!((given.n_head, given.afn.as_str(), given.head), (2, "swish", Head::DoubleHeads));
}

#[test]
fn bad_config_values_are_refused_naming_field_and_value() {
    let vars = vars_of(&tiny(Head::Lm));
    let refused = |c: serde_json::Value| original_config(&c, &vars, false).unwrap_err();
    for field in ["n_vocab", "vocab_size", "n_ctx", "n_positions", "n_embd", "n_layer", "n_head"] {
        for bad in [json!(0), json!(-1), json!(1.5), json!("8")] {
            assert_eq!(refused(json!({field: bad})), format!("{field} must be a positive integer, got {bad}"));
        }
    }
    assert_eq!(refused(json!({"n_head": 2, "n_ctx": 6, "n_positions": 7})), "n_positions 7 and n_ctx 6 disagree");
    assert_eq!(refused(json!({"n_head": 2, "afn": "tanh"})), "afn \"tanh\" is not supported (allowed: gelu, relu, swish)");
    assert_eq!(refused(json!("x")), "the config is not a JSON object: \"x\"");
    let hf = hf_config(&tiny(Head::Lm), "float32", None);
    let mut c = hf.clone();
    c["afn"] = json!("silu");
    assert_eq!(from_hf(&c).unwrap().afn, "silu", "transformers knows silu");
    c["layer_norm_epsilon"] = json!(-1.0);
    assert_eq!(from_hf(&c).unwrap_err(), "layer_norm_epsilon must be a positive finite number, got -1.0");
    c["layer_norm_epsilon"] = json!(1e-5);
    c["architectures"] = json!(["OpenAIGPTModel"]);
    assert!(from_hf(&c).unwrap_err().contains("'OpenAIGPTModel' is not supported"));
}

#[test]
fn the_hf_config_reads_back_as_the_same_model() {
    for head in [Head::Lm, Head::DoubleHeads] {
        let cfg = tiny(head);
        let hf = hf_config(&cfg, "float32", Some("rocstories"));
        assert_eq!(hf["architectures"][0], head.class_name());
        assert_eq!(hf["model_type"], "openai-gpt");
        assert_eq!(hf["finetuning_task"], "rocstories");
        assert_eq!(from_hf(&hf).unwrap(), cfg);
        // With --trust-folder-config the folder's config.json is the original's config too.
        assert_eq!(original_config(&hf, &vars_of(&cfg), head == Head::DoubleHeads).unwrap(), cfg);
    }
}

#[test]
fn plan_maps_every_array_squeezing_conv1d_kernels() {
    let cfg = tiny(Head::Lm);
    let vars = vars_of(&cfg);
    let plan = plan(&cfg, &vars).unwrap();
    assert_eq!(plan.mappings.len(), vars.len(), "every array is mapped");
    assert!(plan.skipped.is_empty() && plan.synthesized.is_empty());
    let m = plan.mappings.iter().find(|m| m.target == "transformer.h.1.mlp.c_fc.weight").unwrap();
    assert_eq!((m.source.as_str(), m.transforms.as_slice(), m.shape.as_slice()), ("model/h1/mlp/c_fc/w", &[Transform::Squeeze][..], &[8, 32][..]));
    let targets: Vec<&str> = plan.mappings.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(&targets[..4], ["transformer.tokens_embed.weight", "transformer.positions_embed.weight", "transformer.h.0.attn.c_attn.weight", "transformer.h.0.attn.c_attn.bias"]);
    // The double-heads class adds the multiple-choice head as zeros, with the reason.
    let plan = super::plan(&tiny(Head::DoubleHeads), &vars).unwrap();
    let names: Vec<(&str, &[usize])> = plan.synthesized.iter().map(|s| (s.target.as_str(), s.shape.as_slice())).collect();
    assert_eq!(names, [("multiple_choice_head.summary.weight", &[1, 8][..]), ("multiple_choice_head.summary.bias", &[1][..])]);
    assert!(plan.synthesized.iter().all(|s| s.fill == Fill::Zeros && s.reason.contains("not in the release")));
}

#[test]
fn sizes_that_do_not_fit_are_named_and_unknown_arrays_refused() {
    let cfg = tiny(Head::Lm);
    let vars = vars_of(&cfg);
    let e = plan(&GptConfig { n_positions: 512, ..cfg.clone() }, &vars).unwrap_err().to_string();
    assert!(e.contains("n_positions (n_ctx) 512 and n_embd 8 need model/pos_embd of shape [512, 8], but the checkpoint's is [6, 8]"), "{e}");
    let e = plan(&GptConfig { n_layer: 3, ..cfg.clone() }, &vars).unwrap_err().to_string();
    assert!(e.contains("n_layer is 3, but the checkpoint holds the blocks h0, h1"), "{e}");
    let mut extra = vars.clone();
    extra.push(SourceVar { name: "model/clf/w".into(), shape: vec![8, 1] });
    assert_eq!(plan(&cfg, &extra).unwrap_err(), PlanError::Unmapped(vec!["model/clf/w".into()]));
}

#[test]
fn detection_tells_gpt_from_gpt2() {
    let vars = vars_of(&tiny(Head::Lm));
    assert_eq!(crate::arch::detect_model_type(&vars), Ok("openai-gpt"));
    let gpt2 = vec![SourceVar { name: "model/wte".into(), shape: vec![10, 8] }, SourceVar { name: "model/h0/attn/c_attn/w".into(), shape: vec![1, 8, 24] }];
    assert_eq!(crate::arch::detect_model_type(&gpt2), Ok("gpt2"));
}

#[test]
fn stages_and_outputs_per_class() {
    let lm = OpenAiGpt { cfg: tiny(Head::Lm) };
    let names: Vec<String> = lm.stages().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["embeddings", "layer.0", "layer.1", "lm_head"]);
    let passes = lm.hf_passes();
    assert_eq!(passes[0].hidden[0].1, ["embeddings", "layer.0", "layer.1"], "transformers records each block's output");
    let double = OpenAiGpt { cfg: tiny(Head::DoubleHeads) };
    let stages = double.stages();
    let last = stages.last().unwrap();
    assert_eq!((last.name.as_str(), last.inputs.as_slice(), last.outputs.as_slice()), ("mc_head", &["layer.1".to_string()][..], &["mc_logits".to_string()][..]));
    assert!(last.original_vars.is_empty());
    assert_eq!(double.hf_output_fields(), [("lm_logits", "logits"), ("mc_logits", "mc_logits")]);
    let mut read: Vec<String> = lm.stages().iter().flat_map(|s| s.original_vars.clone()).collect();
    read.sort();
    read.dedup();
    let mut all: Vec<String> = vars_of(&tiny(Head::Lm)).into_iter().map(|v| v.name).collect();
    all.sort();
    assert_eq!(read, all, "every array is read by a stage");
}

#[test]
fn the_tiny_tokenizer_is_a_consistent_bpe() {
    for n in [5, 52, 60, 200] {
        let (encoder, merges) = synthetic::tiny_tokenizer(n);
        let ids: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&encoder).unwrap();
        assert_eq!(ids.len(), n);
        let text = String::from_utf8(merges).unwrap();
        for line in text.lines().skip(1) {
            let (a, b) = line.split_once(' ').unwrap();
            assert!([a.to_string(), b.to_string(), format!("{a}{b}")].iter().all(|t| ids.contains_key(t)), "{line}");
        }
    }
}
