//! ALBERT's mutation suite: the golden ALBERT conversions damaged the way ALBERT converters go
//! wrong (a layer run in the wrong group, the E == H projection missing or left random, a TF-Hub
//! `module/` prefix not stripped, erf GELU instead of the original's tanh), each caught by
//! `tfconv verify` and blamed on the right stage.
//!
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

mod common;

use common::mutation::{assert_diverges_at, convert_golden, damage_config, damage_weights, swap, verify, DTYPES};

#[test]
fn undamaged_conversions_pass() {
    for case in ["albert", "albert-shared", "albert-hub-classifier"] {
        for dtype in DTYPES {
            let c = convert_golden(case, dtype);
            let v = verify(&c);
            assert_eq!(v.code, 0, "{case} as {dtype} must pass; {}", v.describe());
            let worst = v.report["outputs"].as_array().unwrap().iter().filter_map(|o| o["max_rel_error"].as_f64()).fold(0.0, f64::max);
            eprintln!("undamaged golden/{case} as {dtype}: worst relative error {worst:.3e}");
        }
    }
}

/// golden/albert has 4 layers in 2 groups: layers 0–1 run group 0, layers 2–3 group 1. A
/// converter that numbers the groups the wrong way round puts group 1's weights where layer 0
/// reads them.
#[test]
fn groups_swapped_diverge_at_the_first_layer() {
    for dtype in DTYPES {
        let c = convert_golden("albert", dtype);
        damage_weights(&c, |t| {
            let names: Vec<String> = t.keys().filter(|k| k.contains("albert_layer_groups.0.")).cloned().collect();
            assert_eq!(names.len(), 2 * 16, "two inner layers of 16 tensors in group 0");
            for name in names {
                swap(t, &name, &name.replace("albert_layer_groups.0.", "albert_layer_groups.1."));
            }
        });
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

/// Layers run with the wrong weights: a group's inner layers in the wrong order (layer 2 is the
/// first to run group 1), and a folder config with one group fewer, so that transformers runs
/// layers 2–3 in group 0 and group 1's weights are left over.
#[test]
fn a_layer_in_the_wrong_group_is_caught() {
    let c = convert_golden("albert", "float32");
    damage_weights(&c, |t| {
        let names: Vec<String> = t.keys().filter(|k| k.contains("albert_layer_groups.1.albert_layers.0.")).cloned().collect();
        for name in names {
            swap(t, &name, &name.replace("albert_layers.0.", "albert_layers.1."));
        }
    });
    assert_diverges_at(&verify(&c), "layer.2");

    let c = convert_golden("albert", "float32");
    damage_config(&c, |cfg| {
        cfg.insert("num_hidden_groups".into(), 1.into());
    });
    let v = verify(&c);
    assert_eq!(v.code, 1, "{}", v.describe());
    let problems = v.structural_problems().join("\n");
    assert!(
        problems.contains("the folder holds weights for albert.encoder.albert_layer_groups.1.* (32 tensors unused by a model built from config.json)"),
        "{}",
        v.describe()
    );
}

/// E == H: the original has no projection, HF always has one. Left random (what HF's own loader
/// does) it is a numeric divergence at the embeddings; missing, a structural failure naming it.
#[test]
fn missing_identity_projection_is_caught() {
    for dtype in DTYPES {
        let c = convert_golden("albert-shared", dtype);
        damage_weights(&c, |t| {
            let w = t.get_mut("albert.encoder.embedding_hidden_mapping_in.weight").expect("the synthesized projection");
            let n = w.f32s().len();
            let mut rng = tfconv::synthetic::Rng::new(5);
            let random: Vec<f32> = (0..n).map(|_| rng.uniform(0.02 * 3f32.sqrt())).collect();
            w.set_f32s(&random);
        });
        assert_diverges_at(&verify(&c), "embeddings");
    }
    let c = convert_golden("albert-shared", "float32");
    damage_weights(&c, |t| {
        t.remove("albert.encoder.embedding_hidden_mapping_in.weight").expect("projection weight");
        t.remove("albert.encoder.embedding_hidden_mapping_in.bias").expect("projection bias");
    });
    let v = verify(&c);
    assert_eq!(v.code, 1, "{}", v.describe());
    let problems = v.structural_problems().join("\n");
    assert!(problems.contains("missing weight albert.encoder.embedding_hidden_mapping_in.weight (identity"), "{problems}");
}

/// A converter that keeps TF-Hub's `module/` in the names writes keys transformers does not
/// know: every weight is reported, none is silently taken.
#[test]
fn unstripped_module_prefix_is_a_structural_failure() {
    let c = convert_golden("albert-hub-classifier", "float32");
    damage_weights(&c, |t| {
        let names: Vec<String> = t.keys().filter(|k| k.starts_with("albert.")).cloned().collect();
        for name in names {
            let tensor = t.remove(&name).unwrap();
            t.insert(format!("module.{name}"), tensor);
        }
    });
    let v = verify(&c);
    assert_eq!(v.code, 1, "{}", v.describe());
    let problems = v.structural_problems().join("\n");
    assert!(problems.contains("missing weight albert.embeddings.word_embeddings.weight"), "{problems}");
    assert!(problems.contains("unexpected weight module.albert.embeddings.word_embeddings.weight"), "{problems}");
}

/// The original's "gelu" is the tanh approximation; a config.json saying "gelu" (erf, HF's
/// meaning) changes every layer's feed-forward.
#[test]
fn erf_gelu_in_the_config_diverges_at_the_first_layer() {
    for dtype in DTYPES {
        let c = convert_golden("albert", dtype);
        let config: serde_json::Value = serde_json::from_slice(&std::fs::read(c.folder.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["hidden_act"], "gelu_new", "converted config");
        damage_config(&c, |cfg| {
            cfg.insert("hidden_act".into(), "gelu".into());
        });
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

/// The SOP head stored transposed would not even fit; with its two rows swapped (labels
/// reversed) it fits and must still be caught at `sop`.
#[test]
fn sop_rows_swapped_diverge_at_sop() {
    let c = convert_golden("albert", "float32");
    damage_weights(&c, |t| {
        let w = t.get_mut("sop_classifier.classifier.weight").expect("SOP weight");
        let v = w.f32s();
        let h = v.len() / 2;
        let swapped: Vec<f32> = v[h..].iter().chain(&v[..h]).copied().collect();
        w.set_f32s(&swapped);
    });
    assert_diverges_at(&verify(&c), "sop_logits");
}

/// A folder holding HF's tied aliases (as `transformers convert` saves the full state dict)
/// passes when each alias is its tensor, and fails naming both when it is not.
#[test]
fn tied_decoder_aliases_pass_when_identical_and_fail_when_not() {
    let c = convert_golden("albert", "float32");
    damage_weights(&c, |t| {
        let words = t["albert.embeddings.word_embeddings.weight"].clone();
        let bias = t["predictions.bias"].clone();
        t.insert("predictions.decoder.weight".into(), words);
        t.insert("predictions.decoder.bias".into(), bias);
    });
    let v = verify(&c);
    assert_eq!(v.code, 0, "identical tied aliases must pass; {}", v.describe());

    damage_weights(&c, |t| {
        let alias = t.get_mut("predictions.decoder.bias").unwrap();
        let mut values = alias.f32s();
        values[0] += 1.0;
        alias.set_f32s(&values);
    });
    let v = verify(&c);
    assert_eq!(v.code, 1, "{}", v.describe());
    let problems = v.structural_problems().join("\n");
    assert!(problems.contains("predictions.decoder.bias is tied to predictions.bias in AlbertForPreTraining, but the two differ (1 of 97 elements)"), "{problems}");
}
