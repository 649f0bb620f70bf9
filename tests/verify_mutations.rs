//! The mutation suite: convert golden/bert with the built binary, damage the converted folder on
//! purpose in the ways real conversion bugs damage it, and check that `tfconv verify` catches
//! every damage (exit 1) and blames the right place (`first_divergence` in the JSON report and
//! the stderr summary). An undamaged folder must pass (exit 0).
//!
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

mod common;

use common::mutation::{assert_diverges_at, damage_config, damage_weights, swap, verify, Converted, DTYPES};

fn convert_golden(dtype: &str) -> Converted {
    common::mutation::convert_golden("bert", dtype)
}

#[test]
fn undamaged_conversion_passes() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        let v = verify(&c);
        assert_eq!(v.code, 0, "an undamaged conversion must pass; {}", v.describe());
        assert_eq!(v.report["pass"], true);
        assert_eq!(v.first_divergence(), None);
        assert!(v.structural_problems().is_empty());
        let outputs = v.report["outputs"].as_array().expect("outputs");
        let names: Vec<&str> = outputs.iter().filter_map(|o| o["name"].as_str()).collect();
        assert_eq!(names, ["embeddings", "layer.0", "layer.1", "layer.2", "pooler", "mlm_logits", "nsp_logits"]);
        let worst = outputs.iter().filter_map(|o| o["max_rel_error"].as_f64()).fold(0.0, f64::max);
        eprintln!("undamaged golden/bert: worst relative error {worst:.3e}");
        assert!(v.stderr.contains("PASS"), "{}", v.describe());
    }
}

#[test]
fn missing_transpose_on_a_square_kernel_diverges_at_its_layer() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            let w = t.get_mut("bert.encoder.layer.1.attention.self.query.weight").expect("query weight");
            let (rows, cols) = (w.shape[0], w.shape[1]);
            assert_eq!(rows, cols, "the damage needs a square kernel so that the shape still fits");
            let v = w.f32s();
            let back: Vec<f32> = (0..rows * cols).map(|k| v[(k % rows) * cols + k / rows]).collect();
            assert_ne!(v, back);
            w.set_f32s(&back);
        });
        let v = verify(&c);
        assert_diverges_at(&v, "layer.1");
        assert!(v.stderr.contains("suspect the weights of encoder layer 1"), "{}", v.describe());
    }
}

#[test]
fn query_and_key_swapped_diverge_at_their_layer() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            for p in ["weight", "bias"] {
                swap(t, &format!("bert.encoder.layer.0.attention.self.query.{p}"), &format!("bert.encoder.layer.0.attention.self.key.{p}"));
            }
        });
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

#[test]
fn one_zeroed_bias_diverges_at_its_layer() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            let b = t.get_mut("bert.encoder.layer.2.output.dense.bias").expect("bias");
            assert!(b.f32s().iter().any(|&x| x != 0.0));
            let zeros = vec![0f32; b.f32s().len()];
            b.set_f32s(&zeros);
        });
        assert_diverges_at(&verify(&c), "layer.2");
    }
}

#[test]
fn layer_norm_gamma_and_beta_swapped_diverge_at_the_embeddings() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| swap(t, "bert.embeddings.LayerNorm.weight", "bert.embeddings.LayerNorm.bias"));
        let v = verify(&c);
        assert_diverges_at(&v, "embeddings");
        assert!(v.stderr.contains("suspect the embedding tables or their LayerNorm"), "{}", v.describe());
    }
}

#[test]
fn two_layers_swapped_diverge_at_the_first() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            let (l0, l1) = ("bert.encoder.layer.0.", "bert.encoder.layer.1.");
            let names: Vec<String> = t.keys().filter(|k| k.starts_with(l0)).cloned().collect();
            assert_eq!(names.len(), 16, "a BERT layer has 16 tensors");
            for name in names {
                swap(t, &name, &name.replacen(l0, l1, 1));
            }
        });
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

#[test]
fn tanh_gelu_in_the_config_diverges_at_the_first_layer() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_config(&c, |cfg| {
            assert_eq!(cfg["hidden_act"], "gelu");
            cfg.insert("hidden_act".into(), "gelu_new".into());
        });
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

#[test]
fn dropped_mlm_bias_is_a_structural_failure() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            t.remove("cls.predictions.bias").expect("cls.predictions.bias");
        });
        let v = verify(&c);
        assert_eq!(v.code, 1, "expected exit 1; {}", v.describe());
        assert_eq!(v.report["pass"], false);
        assert_eq!(v.first_divergence(), Some("structure"), "{}", v.describe());
        let problems = v.structural_problems();
        assert!(
            problems.iter().any(|p| p.contains("cls.predictions.bias")),
            "structural problems do not name cls.predictions.bias: {problems:?}"
        );
        assert!(v.stderr.contains("cls.predictions.bias"), "{}", v.describe());
    }
}

#[test]
fn broken_tie_between_embeddings_and_decoder_is_caught() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_config(&c, |cfg| {
            cfg.insert("tie_word_embeddings".into(), false.into());
        });
        damage_weights(&c, |t| {
            let words = t["bert.embeddings.word_embeddings.weight"].clone();
            let (v, h) = (words.shape[0], words.shape[1]);
            let rows = words.f32s();
            // A decoder that is the word embeddings with rows rotated by one: a plausible off-by-one.
            let permuted: Vec<f32> = (0..v).flat_map(|r| rows[((r + 1) % v) * h..][..h].to_vec()).collect();
            let mut decoder = words.clone();
            decoder.set_f32s(&permuted);
            assert_ne!(decoder.data, words.data);
            t.insert("cls.predictions.decoder.weight".into(), decoder);
        });
        let v = verify(&c);
        assert_eq!(v.code, 1, "expected exit 1; {}", v.describe());
        assert_eq!(v.report["pass"], false);
        let named_structurally = v.structural_problems().iter().any(|p| p.contains("cls.predictions.decoder.weight"));
        let named_numerically = v.first_divergence() == Some("mlm_logits");
        assert!(
            named_structurally || named_numerically,
            "neither cls.predictions.decoder.weight nor mlm_logits is blamed: problems {:?}; {}",
            v.structural_problems(),
            v.describe()
        );
        if named_numerically {
            assert_diverges_at(&v, "mlm_logits");
        }
    }
}

#[test]
fn one_layer_norm_gamma_scaled_by_one_percent_diverges_at_its_layer() {
    for dtype in DTYPES {
        eprintln!("--- stored as {dtype}");
        let c = convert_golden(dtype);
        damage_weights(&c, |t| {
            let g = t.get_mut("bert.encoder.layer.1.output.LayerNorm.weight").expect("gamma");
            let scaled: Vec<f32> = g.f32s().iter().map(|x| x * 1.01).collect();
            g.set_f32s(&scaled);
        });
        assert_diverges_at(&verify(&c), "layer.1");
    }
}
