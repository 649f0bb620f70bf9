//! The golden XLM checkpoints (a multilingual release in torch's zip format; a DataParallel
//! training checkpoint in the legacy format, `module.` keys) converted and run in candle against
//! TensorFlow's stored outputs (no TensorFlow needed); the keys and values written checked
//! against HF's layout spelled out independently; config.json, vocab.json and merges.txt; and the
//! checkpoints tfconv must not convert refused before anything is written.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};
use tfconv::convert::{convert, ConvertOptions};
use tfconv::source::{self, DType};
use tfconv::verify::{self, compare, Tolerance};
use tfconv_models::probe::{Outputs, Probes};
use tfconv_models::xlm::synthetic::{self, golden_configs, Layout};
use tfconv_models::xlm::torch_save::{self, Py};

const CASES: [&str; 2] = ["xlm", "xlm-legacy"];

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join(case)
}

fn checkpoint(case: &str) -> PathBuf {
    let c = tfconv_models::arch::golden_cases().into_iter().find(|c| c.dir == case).unwrap();
    golden(case).join(c.checkpoint)
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

fn read_json(path: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The golden .pth files are exactly what the test helper writes (zip: torch ≥ 1.6's container;
/// legacy: the 2019 releases', byte for byte as torch writes it, tests/xlm_torch_save.rs).
#[test]
fn golden_files_are_the_writers_output() {
    for (dir, cfg, layout, zip, seed) in golden_configs() {
        let stored = std::fs::read(checkpoint(dir)).unwrap();
        assert!(stored == synthetic::pth_bytes(&cfg, &layout, seed, zip), "golden/{dir} differs from the writer's output");
        let magic: &[u8] = if zip { b"PK\x03\x04" } else { &tfconv::source::pth::LEGACY_MAGIC };
        assert!(stored.starts_with(magic), "{dir}");
    }
}

#[test]
fn golden_checkpoints_reproduce_tensorflow_outputs_in_candle() {
    for case in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(checkpoint(case), tmp.path().join("out"))).unwrap();
        let probes: Probes = serde_json::from_slice(&std::fs::read(golden(case).join("probes.json")).unwrap()).unwrap();
        assert_eq!(probes, done.arch.probes(7, 3, None), "{case}: stored probes are the architecture's for seed 7");
        assert_eq!(probes.inputs.get("langs").is_some(), case == "xlm", "{case}: language ids only for language embeddings");
        let files = verify::weight_files(&done.folder).unwrap();
        let got = verify::candle_outputs(&files, done.arch.as_ref(), &probes.inputs).unwrap();
        let expected = expected_outputs(case);
        assert_eq!(got.names(), ["embeddings", "layer.0", "layer.1", "lm_logits"], "{case}");
        assert_eq!(got.names(), expected.names(), "{case}");
        for report in compare::compare(&got, &expected, Tolerance::for_dtype(DType::F32)) {
            assert!(report.pass, "{case}: {report:?}");
        }
    }
}

/// `save_pretrained`'s keys for XLMWithLMHeadModel (the tied pred_layer.proj.weight omitted).
fn hf_keys(layers: usize, langs: bool) -> BTreeSet<String> {
    let mut keys: Vec<String> = ["position_embeddings.weight", "embeddings.weight", "layer_norm_emb.weight", "layer_norm_emb.bias"]
        .map(|k| format!("transformer.{k}"))
        .to_vec();
    if langs {
        keys.push("transformer.lang_embeddings.weight".into());
    }
    for i in 0..layers {
        for m in ["attentions.{i}.q_lin", "attentions.{i}.k_lin", "attentions.{i}.v_lin", "attentions.{i}.out_lin", "layer_norm1.{i}", "ffns.{i}.lin1", "ffns.{i}.lin2", "layer_norm2.{i}"] {
            let m = m.replace("{i}", &i.to_string());
            keys.extend([format!("transformer.{m}.weight"), format!("transformer.{m}.bias")]);
        }
    }
    keys.push("pred_layer.proj.bias".into());
    keys.into_iter().collect()
}

#[test]
fn keys_and_values_follow_the_original() {
    for (case, original_prefix, langs) in [("xlm", "model/", true), ("xlm-legacy", "model/module.", false)] {
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(checkpoint(case), tmp.path().join("out"))).unwrap();
        let bytes = std::fs::read(done.folder.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let written: BTreeSet<String> = st.names().into_iter().map(String::from).collect();
        assert_eq!(written, hf_keys(2, langs), "{case}");
        // Every tensor as stored, no transposes: `pred_layer.*` keep their names, the rest gain
        // `transformer.`, and the DataParallel prefix is gone.
        let ckpt = source::open(&checkpoint(case)).unwrap();
        for name in &written {
            let key = name.strip_prefix("transformer.").unwrap_or(name);
            let original = ckpt.read(&format!("{original_prefix}{key}")).unwrap();
            assert_eq!(st.tensor(name).unwrap().data(), &original[..], "{case}: {name}");
        }
        // The head is tied: its weight in the checkpoint is the embeddings' storage, dropped.
        let head = format!("{original_prefix}pred_layer.proj.weight");
        assert_eq!(ckpt.read(&head).unwrap(), ckpt.read(&format!("{original_prefix}embeddings.weight")).unwrap());
        assert_eq!(done.plan.dropped.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), [head.as_str()]);
        assert!(done.plan.synthesized.is_empty() && done.plan.skipped.is_empty(), "{case}: optimizer state is not listed at all");
    }
}

#[test]
fn config_and_tokenizer_files() {
    for (case, cfg, layout) in golden_configs().map(|(dir, cfg, layout, _, _)| (dir, cfg, layout)) {
        let tmp = tempfile::tempdir().unwrap();
        let done = convert(&ConvertOptions::new(checkpoint(case), tmp.path().join("out"))).unwrap();
        assert_eq!(done.config_path, checkpoint(case), "{case}: the config comes from inside the checkpoint");
        let c = read_json(&done.folder.join("config.json"));
        for (k, v) in [
            ("model_type", json!("xlm")),
            ("architectures", json!(["XLMWithLMHeadModel"])),
            ("vocab_size", json!(cfg.n_words)),
            ("n_words", json!(cfg.n_words)),
            ("emb_dim", json!(cfg.emb_dim)),
            ("n_langs", json!(cfg.n_langs)),
            ("gelu_activation", json!(cfg.gelu_activation)),
            ("sinusoidal_embeddings", json!(cfg.sinusoidal_embeddings)),
            ("tie_word_embeddings", json!(true)),
            ("max_position_embeddings", json!(512)),
            ("layer_norm_eps", json!(1e-12)),
            ("pad_token_id", json!(2)),
            ("dtype", json!("float32")),
            // Training params are kept as HF's converter keeps them; ids of languages become strings.
            ("exp_name", json!(format!("xlm_{}", layout.langs.join("")))),
            ("id2lang", json!(layout.langs.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect::<serde_json::Map<_, _>>())),
            ("mlm_steps", json!(layout.langs.iter().map(|l| json!([l, null])).collect::<Vec<_>>())),
        ] {
            assert_eq!(c[k], v, "{case}: config.json {k}");
        }
        assert!(c.get("pred_probs").is_none() && c.get("mask_scores").is_none(), "{case}: tensors and arrays are not config");
        // vocab.json: the dictionary with HF's rewriting.
        let vocab = read_json(&done.folder.join("vocab.json"));
        let vocab = vocab.as_object().unwrap();
        assert_eq!(vocab.len(), cfg.n_words);
        for (id, word) in synthetic::words(cfg.n_words).iter().enumerate() {
            let token = match word.strip_suffix("@@") {
                Some(piece) => piece.to_string(),
                None if id < 14 => word.clone(),
                None => format!("{word}</w>"),
            };
            assert_eq!(vocab[&token], json!(id), "{case}: {word}");
        }
        let merges = done.folder.join("merges.txt");
        match case {
            "xlm" => {
                assert_eq!(std::fs::read(&merges).unwrap(), synthetic::codes(), "merges.txt is the BPE codes file");
                let t = read_json(&done.folder.join("tokenizer_config.json"));
                assert_eq!((t["tokenizer_class"].as_str(), t["mask_token"].as_str()), (Some("XLMTokenizer"), Some("<special1>")));
                assert_eq!(t["lang2id"], json!({"en": 0, "fr": 1}));
            }
            _ => {
                // No codes beside it: vocab.json alone (XLMTokenizer needs merges, so no tokenizer config).
                assert!(!merges.exists() && !done.folder.join("tokenizer_config.json").exists());
            }
        }
        assert!(done.notes.is_empty(), "{case}: {:?}", done.notes);
    }
}

#[test]
fn inspect_lists_the_state_dict() {
    let o = common::tfconv(&["inspect", checkpoint("xlm-legacy").to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in ["torch-pth", "model/module.embeddings.weight", "model/module.pred_layer.proj.weight"] {
        assert!(out.contains(want), "{want} not in:\n{out}");
    }
}

/// The golden multilingual checkpoint's object and storages, to edit.
fn golden_object() -> (Py, torch_save::Storages) {
    let [(_, cfg, layout, _, seed), _] = golden_configs();
    synthetic::checkpoint(&cfg, &layout, seed)
}

fn entry<'a>(obj: &'a mut Py, key: &str) -> &'a mut Py {
    let items = match obj {
        Py::Dict(items) => items,
        Py::OrderedDict { items, .. } => items,
        other => panic!("not a dict: {other:?}"),
    };
    &mut items.iter_mut().find(|(k, _)| *k == Py::Str(key.into())).unwrap_or_else(|| panic!("no {key}")).1
}

/// Converts a checkpoint made by `edit` from the golden one (zip, with codes beside it); returns
/// whether it succeeded and stderr. A failure must leave no output behind.
fn convert_edited(edit: impl FnOnce(&mut Py, &mut torch_save::Storages, &Path)) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut obj, mut st) = golden_object();
    std::fs::write(tmp.path().join("codes_enfr"), synthetic::codes()).unwrap();
    edit(&mut obj, &mut st, tmp.path());
    let pth = tmp.path().join("mlm.pth");
    std::fs::write(&pth, torch_save::zip(&obj, &st, "archive")).unwrap();
    let out = tmp.path().join("out");
    let o = common::tfconv(&["convert", "--tf-checkpoint", pth.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    if !o.status.success() {
        assert!(!out.exists(), "nothing may be written:\n{}", common::stderr(&o));
    }
    (o.status.success(), common::stderr(&o))
}

#[test]
fn checkpoints_tfconv_must_not_convert_are_refused_before_writing() {
    let param = |key: &'static str, value: Py| move |obj: &mut Py, _: &mut torch_save::Storages, _: &Path| *entry(entry(obj, "params"), key) = value;
    let (ok, e) = convert_edited(|_, _, _| {});
    assert!(ok, "the unedited checkpoint converts: {e}");
    for (edit, want) in [
        (param("asm", Py::Bool(true)), "asm true: the output layer is an adaptive softmax"),
        (param("use_memory", Py::Bool(true)), "use_memory true: product-key memory layers"),
        (param("n_heads", Py::Int(5)), "emb_dim 32 must be a multiple of n_heads 5"),
        (param("gelu_activation", Py::Str("yes".into())), "gelu_activation must be true or false, got \"yes\""),
        (param("n_words", Py::Int(80)), "model/embeddings.weight has shape [72, 32]; transformer.embeddings.weight needs [80, 32]"),
    ] {
        let (ok, e) = convert_edited(edit);
        assert!(!ok && e.contains(want) && e.contains("mlm.pth"), "want {want:?}:\n{e}");
    }
    // A dictionary that does not fit the model.
    let (ok, e) = convert_edited(|obj, _, _| {
        let Py::Dict(words) = entry(obj, "dico_word2id") else { panic!() };
        words.pop();
    });
    assert!(!ok && e.contains("dico_word2id has 71 words, the model 72: no word for id(s) 71"), "{e}");
    // Weights the model has no place for are named (product-key memory values, say).
    let (ok, e) = convert_edited(|obj, st, _| {
        let t = st.f32(&[4, 32], &[0.5; 128]);
        let Py::OrderedDict { items, .. } = entry(obj, "model") else { panic!() };
        items.push((Py::Str("memories.0_in.values.weight".into()), t));
    });
    assert!(!ok && e.contains("neither mapped nor known optimizer/bookkeeping slots: model/memories.0_in.values.weight"), "{e}");
    // A translation model: encoder and decoder state dicts, no `model`.
    let (ok, e) = convert_edited(|obj, _, _| {
        let Py::Dict(top) = obj else { panic!() };
        let i = top.iter().position(|(k, _)| *k == Py::Str("model".into())).unwrap();
        let model = top[i].1.clone();
        top[i].0 = Py::Str("encoder".into());
        top.insert(i + 1, (Py::Str("decoder".into()), model));
    });
    assert!(!ok && e.contains("translation model (decoder/…, encoder/…)"), "{e}");
    // Two BPE codes files: which one the model was trained with is not guessed.
    let (ok, e) = convert_edited(|_, _, dir| std::fs::write(dir.join("codes_en"), synthetic::codes()).unwrap());
    assert!(!ok && e.contains("several BPE codes files") && e.contains("codes_en, codes_enfr"), "{e}");
    // A pickle that calls os.system is refused by the reader, naming the global, and never runs.
    let (ok, e) = convert_edited(|obj, _, dir| {
        let command = format!("touch {}", dir.join("pwned").display());
        *entry(entry(obj, "params"), "exp_name") = Py::Call { module: "os", name: "system", args: vec![Py::Str(command)] };
    });
    assert!(!ok && e.contains("GLOBAL at byte") && e.contains("names os.system, which torch.save does not write"), "{e}");
}

/// A bare state dict has no params of its own: they come from a file given with --config.
#[test]
fn a_bare_state_dict_takes_its_params_from_config() {
    let tmp = tempfile::tempdir().unwrap();
    let [(_, cfg, layout, _, seed), _] = golden_configs();
    let (obj, st) = synthetic::checkpoint(&cfg, &Layout { module_prefix: true, ..layout }, seed);
    let Py::Dict(top) = &obj else { panic!() };
    let model = top.iter().find(|(k, _)| *k == Py::Str("model".into())).unwrap().1.clone();
    let pth = tmp.path().join("state_dict.pth");
    std::fs::write(&pth, torch_save::zip(&model, &st, "state_dict")).unwrap();
    let out = tmp.path().join("out");
    let o = common::tfconv(&["convert", "--tf-checkpoint", pth.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(!o.status.success() && common::stderr(&o).contains("the checkpoint holds no config of its own (xlm keeps it inside); pass --config"), "{}", common::stderr(&o));
    let params = source::PthCheckpoint::open(checkpoint("xlm")).unwrap().metadata()["params"].clone();
    let config = tmp.path().join("params.json");
    std::fs::write(&config, serde_json::to_vec(&params).unwrap()).unwrap();
    let o = common::tfconv(&["convert", "--tf-checkpoint", pth.to_str().unwrap(), "--config", config.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let c = read_json(&out.join("config.json"));
    assert_eq!((c["model_type"].as_str(), c["n_langs"].as_u64()), (Some("xlm"), Some(2)));
    assert!(common::stderr(&o).contains("no tokenizer files written"), "no dictionary without the checkpoint's own entries");
}
