//! XLM's mutation suite: golden XLM conversions damaged the way XLM converters go wrong (the
//! languages' embeddings in another order, sinusoids laid out as another model lays them out, an
//! `nn.Linear` weight transposed as if it were a TF kernel, queries and keys swapped, the output
//! bias lost, an untied head left at random, the activation flag flipped, language embeddings
//! dropped from the config), each caught by `tfconv verify` and blamed on the stage it damages.
//!
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

mod common;

use common::mutation::{assert_diverges_at, convert_golden, damage_config, damage_weights, swap, verify, Tensor, DTYPES};

#[test]
fn undamaged_conversions_pass() {
    for case in ["xlm", "xlm-legacy"] {
        for dtype in DTYPES {
            let c = convert_golden(case, dtype);
            let v = verify(&c);
            assert_eq!(v.code, 0, "{case} as {dtype} must pass; {}", v.describe());
            let worst = v.report["outputs"].as_array().unwrap().iter().filter_map(|o| o["max_rel_error"].as_f64()).fold(0.0, f64::max);
            eprintln!("undamaged golden/{case} as {dtype}: worst relative error {worst:.3e}");
        }
    }
}

/// Rows `a` and `b` of a matrix exchanged.
fn swap_rows(t: &mut Tensor, a: usize, b: usize) {
    let cols = t.shape[1];
    let mut v = t.f32s();
    for j in 0..cols {
        v.swap(a * cols + j, b * cols + j);
    }
    t.set_f32s(&v);
}

/// `lang2id` read in another order (fr = 0): each language gets the other's embedding.
#[test]
fn language_embeddings_in_another_order_diverge_at_the_embeddings() {
    for dtype in DTYPES {
        let c = convert_golden("xlm", dtype);
        damage_weights(&c, |t| swap_rows(t.get_mut("transformer.lang_embeddings.weight").unwrap(), 0, 1));
        assert_diverges_at(&verify(&c), "embeddings");
    }
}

/// Sinusoids as XLNet lays them out (all sines, then all cosines) instead of XLM's interleaving.
#[test]
fn sinusoids_laid_out_by_halves_diverge_at_the_embeddings() {
    for dtype in DTYPES {
        let c = convert_golden("xlm-legacy", dtype);
        damage_weights(&c, |t| {
            let table = t.get_mut("transformer.position_embeddings.weight").unwrap();
            let (rows, d) = (table.shape[0], table.shape[1]);
            let mut halves = Vec::with_capacity(rows * d);
            for pos in 0..rows {
                let angle = |j: usize| pos as f64 / 10000f64.powf((2 * j) as f64 / d as f64);
                halves.extend((0..d / 2).map(|j| angle(j).sin() as f32));
                halves.extend((0..d / 2).map(|j| angle(j).cos() as f32));
            }
            table.set_f32s(&halves);
        });
        assert_diverges_at(&verify(&c), "embeddings");
    }
}

/// A converter that treats `nn.Linear` weights like TF kernels and transposes them.
#[test]
fn a_transposed_linear_weight_diverges_at_its_layer() {
    for dtype in DTYPES {
        let c = convert_golden("xlm", dtype);
        damage_weights(&c, |t| {
            let w = t.get_mut("transformer.attentions.1.out_lin.weight").unwrap();
            let n = w.shape[0];
            let v = w.f32s();
            let transposed: Vec<f32> = (0..n * n).map(|i| v[(i % n) * n + i / n]).collect();
            w.set_f32s(&transposed);
        });
        assert_diverges_at(&verify(&c), "layer.1");
    }
}

#[test]
fn queries_and_keys_swapped_diverge_at_their_layer() {
    for dtype in DTYPES {
        let c = convert_golden("xlm-legacy", dtype);
        damage_weights(&c, |t| swap(t, "transformer.attentions.0.q_lin.weight", "transformer.attentions.0.k_lin.weight"));
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

/// The head declared untied and left at a random initialisation (what HF's converter would give
/// for share_inout_emb without the tie): the folder contradicts the original's tie, a structural
/// problem found before any number is compared.
#[test]
fn an_untied_random_head_is_structural() {
    let c = convert_golden("xlm", "float32");
    damage_config(&c, |cfg| {
        assert_eq!(cfg["tie_word_embeddings"], true);
        cfg.insert("tie_word_embeddings".into(), false.into());
    });
    damage_weights(&c, |t| {
        let mut head = t["transformer.embeddings.weight"].clone();
        let mut rng = tfconv::synthetic::Rng::new(4);
        let random: Vec<f32> = head.f32s().iter().map(|_| rng.uniform(0.02 * 3f32.sqrt())).collect();
        head.set_f32s(&random);
        t.insert("pred_layer.proj.weight".into(), head);
    });
    let v = verify(&c);
    assert_eq!((v.code, v.first_divergence()), (1, Some("structure")), "{}", v.describe());
    let problems = v.structural_problems().join("\n");
    assert!(problems.contains("pred_layer.proj.weight is tied to transformer.embeddings.weight") && problems.contains("differ"), "{}", v.describe());
}

/// The output bias lost (left at HF's zero initialisation): only the logits move.
#[test]
fn a_missing_output_bias_diverges_at_the_logits() {
    for dtype in DTYPES {
        let c = convert_golden("xlm-legacy", dtype);
        damage_weights(&c, |t| {
            let b = t.get_mut("pred_layer.proj.bias").unwrap();
            let zeros = vec![0.0; b.f32s().len()];
            b.set_f32s(&zeros);
        });
        assert_diverges_at(&verify(&c), "lm_logits");
    }
}

/// gelu_activation flipped: ReLU where the original has erf GELU, and the other way round.
#[test]
fn the_wrong_activation_diverges_at_the_first_layer() {
    for (case, was) in [("xlm", true), ("xlm-legacy", false)] {
        let c = convert_golden(case, "float32");
        damage_config(&c, |cfg| {
            assert_eq!(cfg["gelu_activation"], was);
            cfg.insert("gelu_activation".into(), (!was).into());
        });
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

/// A config.json without language embeddings leaves them unused: a structural problem, found
/// before any number is compared.
#[test]
fn dropping_the_language_embeddings_from_the_config_is_structural() {
    let c = convert_golden("xlm", "float32");
    damage_config(&c, |cfg| {
        cfg.insert("use_lang_emb".into(), false.into());
    });
    let v = verify(&c);
    assert_eq!((v.code, v.first_divergence()), (1, Some("structure")), "{}", v.describe());
    assert!(v.structural_problems().join("\n").contains("transformer.lang_embeddings.weight"), "{}", v.describe());
}
