use serde_json::json;

use super::*;
use crate::arch::Architecture;
use crate::roles::Role;

fn tiny() -> Gpt2Config {
    from_hparams(&json!({"n_vocab": 10, "n_ctx": 6, "n_embd": 8, "n_head": 2, "n_layer": 2})).unwrap()
}

fn vars_of(cfg: &Gpt2Config, trainer_state: bool) -> Vec<SourceVar> {
    synthetic::checkpoint(cfg, 1, trainer_state).into_iter().map(|v| SourceVar { name: v.name, shape: v.shape }).collect()
}

#[test]
fn hparams_translate_to_hf_names_and_the_original_numerics() {
    let cfg = tiny();
    assert_eq!((cfg.vocab_size, cfg.n_positions, cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.n_inner), (10, 6, 8, 2, 2, 32));
    let hf = hf_config(&cfg, "float32", None);
    assert_eq!(hf["vocab_size"], 10);
    assert_eq!(hf["n_positions"], 6);
    assert_eq!(hf["n_ctx"], 6);
    assert_eq!(hf["activation_function"], "gelu_new");
    assert_eq!(hf["layer_norm_epsilon"], 1e-5);
    assert_eq!(hf["architectures"], json!(["GPT2LMHeadModel"]));
    assert_eq!((hf["bos_token_id"].clone(), hf["eos_token_id"].clone()), (json!(9), json!(9)));
    assert!(hf.get("n_vocab").is_none(), "n_vocab is not a GPT2Config field");
    // The folder's config.json reads back as the same model, and as the same original.
    assert_eq!(from_hf(&hf).unwrap(), cfg);
    assert_eq!(original_config(&hf).unwrap(), cfg);
    // Missing hparams take model.py's defaults; n_vocab has none.
    let defaults = from_hparams(&json!({"n_vocab": 5})).unwrap();
    assert_eq!((defaults.n_positions, defaults.n_embd, defaults.n_head, defaults.n_layer), (1024, 768, 12, 12));
}

#[test]
fn every_bad_config_field_is_refused_naming_field_and_value() {
    let base = json!({"n_vocab": 10, "n_ctx": 6, "n_embd": 8, "n_head": 2, "n_layer": 2});
    for field in ["n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"] {
        for bad in [json!(0), json!(-1), json!(2.5), json!("8"), json!(null)] {
            let mut c = base.clone();
            c[field] = bad.clone();
            assert_eq!(from_hparams(&c).unwrap_err(), format!("{field} must be a positive integer, got {bad}"));
        }
    }
    let mut c = base.clone();
    c.as_object_mut().unwrap().remove("n_vocab");
    assert_eq!(from_hparams(&c).unwrap_err(), "n_vocab is missing");
    let mut c = base.clone();
    c["n_head"] = json!(3);
    assert_eq!(from_hparams(&c).unwrap_err(), "n_embd 8 must be a multiple of n_head 3");
    assert!(from_hparams(&json!([1])).unwrap_err().starts_with("the config is not a JSON object"));

    let hf = hf_config(&tiny(), "float32", None);
    let refused = |field: &str, value: serde_json::Value| {
        let mut c = hf.clone();
        c[field] = value;
        from_hf(&c).unwrap_err()
    };
    for field in ["vocab_size", "n_positions", "n_embd", "n_head", "n_layer", "n_inner"] {
        assert_eq!(refused(field, json!(-2)), format!("{field} must be a positive integer, got -2"));
    }
    assert_eq!(refused("activation_function", json!("swish")), "activation_function \"swish\" is not supported (allowed: gelu_new, gelu_pytorch_tanh, gelu, relu)");
    assert_eq!(refused("layer_norm_epsilon", json!(0.0)), "layer_norm_epsilon must be a positive finite number, got 0.0");
    assert_eq!(refused("scale_attn_weights", json!("yes")), "scale_attn_weights must be true or false, got \"yes\"");
    assert!(refused("add_cross_attention", json!(true)).starts_with("add_cross_attention true is not supported"));
    let mut c = hf.clone();
    c["n_inner"] = json!(12);
    assert!(from_hf(&c).is_ok(), "a folder may set n_inner; its weights must then fit it");
    assert_eq!(original_config(&c).unwrap_err(), "n_inner 12 is not supported: the original GPT-2's MLP is 4·n_embd = 32 wide");
    c["architectures"] = json!(["GPT2Model"]);
    assert!(Gpt2::from_hf_config(&c).unwrap_err().contains("'GPT2Model' is not supported"));
}

#[test]
fn plan_squeezes_conv1d_kernels_keeps_c_attn_fused_and_skips_adam_state() {
    let cfg = tiny();
    let vars = vars_of(&cfg, true);
    let plan = plan(&cfg, &vars).unwrap();
    assert_eq!(plan.mappings.len(), 2 + 12 * 2 + 2);
    let c_attn = plan.mappings.iter().find(|m| m.target == "transformer.h.1.attn.c_attn.weight").unwrap();
    assert_eq!((c_attn.source.as_str(), c_attn.transforms.as_slice(), c_attn.shape.as_slice()), ("model/h1/attn/c_attn/w", &[Transform::Squeeze][..], &[8, 24][..]));
    let mlp_out = plan.mappings.iter().find(|m| m.target == "transformer.h.0.mlp.c_proj.weight").unwrap();
    assert_eq!(mlp_out.shape, vec![32, 8]);
    assert!(plan.mappings.iter().all(|m| !m.transforms.contains(&Transform::Transpose)), "Conv1D keeps [in, out]: nothing is transposed");
    assert!(plan.mappings.iter().all(|m| m.target != "lm_head.weight"), "the LM head is tied, not written");
    // Every Adam slot, both beta powers and global_step are skipped by role.
    assert_eq!(plan.skipped.len(), 2 * (vars.len() - 3) / 3 + 3);
    for (name, role) in [("beta1_power", Role::Bookkeeping), ("global_step", Role::Bookkeeping), ("model/wte/Adam_1", Role::OptimizerSlot)] {
        assert!(plan.skipped.contains(&(name.to_string(), role)), "{name}");
    }
}

#[test]
fn a_one_wide_model_reshapes_instead_of_squeezing_its_width_away() {
    let cfg = from_hparams(&json!({"n_vocab": 4, "n_ctx": 3, "n_embd": 1, "n_head": 1, "n_layer": 1})).unwrap();
    let plan = plan(&cfg, &vars_of(&cfg, false)).unwrap();
    let c_proj = plan.mappings.iter().find(|m| m.target == "transformer.h.0.attn.c_proj.weight").unwrap();
    assert_eq!((c_proj.transforms.clone(), c_proj.shape.clone()), (vec![Transform::Reshape(vec![1, 1])], vec![1, 1]));
}

#[test]
fn sizes_the_config_gets_wrong_are_named_by_field() {
    let cfg = tiny();
    let vars = vars_of(&cfg, false);
    let mut wrong = cfg.clone();
    wrong.n_positions = 1024;
    let e = plan(&wrong, &vars).unwrap_err().to_string();
    assert!(e.contains("n_ctx (n_positions) 1024 and n_embd 8 need model/wpe of shape [1024, 8], but the checkpoint's is [6, 8]"), "{e}");
    let mut wrong = cfg.clone();
    wrong.n_layer = 1;
    let e = plan(&wrong, &vars).unwrap_err().to_string();
    assert!(e.contains("n_layer is 1, but the checkpoint holds the blocks h0, h1"), "{e}");
    wrong.vocab_size = 11;
    let e = plan(&wrong, &vars).unwrap_err().to_string();
    assert!(e.contains("n_vocab (vocab_size) 11") && e.contains("n_layer is 1"), "every mismatch is listed: {e}");
    // A variable the table does not know is an error naming it, never dropped.
    let mut extra = vars.clone();
    extra.push(SourceVar { name: "model/h0/attn/extra".into(), shape: vec![8] });
    assert_eq!(plan(&cfg, &extra).unwrap_err(), PlanError::Unmapped(vec!["model/h0/attn/extra".into()]));
}

#[test]
fn detection_is_unique_among_the_families() {
    let vars = vars_of(&tiny(), true);
    assert_eq!(crate::arch::detect_model_type(&vars), Ok("gpt2"));
    let bert = vec![
        SourceVar { name: "bert/embeddings/word_embeddings".into(), shape: vec![10, 8] },
        SourceVar { name: "bert/encoder/layer_0/output/dense/bias".into(), shape: vec![8] },
    ];
    assert!(!looks_like(&bert));
    // OpenAI GPT's numpy layout shares the block names but has no `model/wte`.
    let gpt = vec![SourceVar { name: "model/tok_embd".into(), shape: vec![10, 8] }, SourceVar { name: "model/h0/attn/c_attn/w".into(), shape: vec![1, 8, 24] }];
    assert!(!looks_like(&gpt));
}

#[test]
fn stages_chain_from_ids_to_logits_and_name_what_transformers_records() {
    let model = Gpt2 { cfg: tiny() };
    let stages = model.stages();
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["embeddings", "layer.0", "layer.1", "ln_f", "lm_head"]);
    assert_eq!(stages[3].inputs, ["layer.1"]);
    assert_eq!(stages[4].outputs, ["lm_logits"]);
    assert_eq!(stages[4].hf_tensors, ["transformer.wte.weight"]);
    assert_eq!(stages[4].original_vars, ["model/wte"]);
    let passes = model.hf_passes();
    assert_eq!(passes[0].hidden, [("hidden_states", vec!["embeddings".to_string(), "layer.0".into(), "ln_f".into()])]);
    assert_eq!(passes[0].unexposed, ["layer.1"]);
    // Every original variable is read by exactly one stage, apart from the tied embedding.
    let mut read: Vec<String> = stages.iter().flat_map(|s| s.original_vars.clone()).collect();
    read.sort();
    read.dedup();
    let mut all: Vec<String> = synthetic::gpt2_variables(&tiny()).into_iter().map(|(n, _)| n).collect();
    all.sort();
    assert_eq!(read, all);
}

#[test]
fn probes_are_full_rows_of_ids_within_the_vocabulary() {
    let model = Gpt2 { cfg: tiny() };
    let p = model.probes(3, 4, None);
    assert_eq!(p.inputs.names(), ["input_ids"]);
    let Some(crate::stage::Value::Int { shape, data }) = p.inputs.get("input_ids") else { panic!() };
    assert_eq!(shape, &[4, 6]);
    assert!(data.iter().all(|id| (0..10).contains(id)));
    assert_eq!(p, model.probes(3, 4, None));
    assert_eq!(model.probes(3, 2, Some(100)).inputs.get("input_ids").unwrap().shape(), &[2, 6], "capped at n_ctx");
}

fn tokenizer_in(dir: &Path, encoder: &[u8], merges: Option<&[u8]>) -> crate::arch::TokenizerFiles {
    std::fs::write(dir.join("encoder.json"), encoder).unwrap();
    if let Some(m) = merges {
        std::fs::write(dir.join("vocab.bpe"), m).unwrap();
    }
    tokenizer_files(&tiny(), &[dir]).unwrap()
}

#[test]
fn the_release_tokenizer_is_written_under_transformers_names() {
    let dir = std::env::temp_dir().join(format!("tfconv-gpt2-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (encoder, merges) = synthetic::tiny_tokenizer(10);
    let out = tokenizer_in(&dir, &encoder, Some(&merges));
    let names: Vec<&str> = out.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"]);
    assert_eq!(out.files[0].1, encoder);
    assert_eq!(out.files[1].1, merges);
    assert!(out.notes.is_empty(), "{:?}", out.notes);
    let config: serde_json::Value = serde_json::from_slice(&out.files[2].1).unwrap();
    assert_eq!((config["tokenizer_class"].as_str(), config["eos_token"].as_str(), config["model_max_length"].as_u64()), (Some("GPT2Tokenizer"), Some("<|endoftext|>"), Some(6)));

    // Ids beyond the embedding rows: written, with a note saying so.
    let mut big: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&encoder).unwrap();
    big.insert("zz".into(), json!(12));
    let out = tokenizer_in(&dir, &serde_json::to_vec(&big).unwrap(), Some(&merges));
    assert_eq!(out.files.len(), 4);
    assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
    assert!(out.notes[0].contains("holds 1 token id(s) at or above the model's 10 embedding rows (largest 12)"), "{}", out.notes[0]);

    // Half a tokenizer is not written, and the note says which half is missing.
    std::fs::remove_file(dir.join("vocab.bpe")).unwrap();
    let out = tokenizer_in(&dir, &encoder, None);
    assert!(out.files.is_empty());
    assert_eq!(out.notes, ["no tokenizer files written: found encoder.json but no vocab.bpe beside it, and the tokenizer needs both"]);
    std::fs::write(dir.join("encoder.json"), b"[1, 2]").unwrap();
    std::fs::write(dir.join("vocab.bpe"), &merges).unwrap();
    assert!(tokenizer_files(&tiny(), &[&dir]).unwrap_err().contains("not a JSON object of token ids"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_tiny_tokenizer_is_a_consistent_bpe() {
    for n in [5, 28, 64, 300] {
        let (encoder, merges) = synthetic::tiny_tokenizer(n);
        let ids: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&encoder).unwrap();
        assert_eq!(ids.len(), n);
        assert_eq!(ids["<|endoftext|>"], n - 1);
        let mut seen: Vec<u64> = ids.values().map(|v| v.as_u64().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..n as u64).collect::<Vec<_>>());
        let text = String::from_utf8(merges).unwrap();
        assert_eq!(text.lines().next(), Some("#version: 0.2"));
        for line in text.lines().skip(1) {
            let (a, b) = line.split_once(' ').unwrap();
            for token in [a.to_string(), b.to_string(), format!("{a}{b}")] {
                assert!(ids.contains_key(&token), "{n}: merge {line:?} uses {token:?}, not in the vocabulary");
            }
        }
    }
}
