//! XLNet's mutation suite: golden XLNet conversions damaged the way XLNet converters go wrong
//! (the wrong layer's slice of a relative bias, r_w_bias and r_r_bias swapped, a layer's segment
//! embedding missing, erf GELU instead of the original's tanh), each caught by `tfconv verify`
//! and blamed on the right stage.
//!
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

mod common;

use common::mutation::{assert_diverges_at, convert_golden, damage_config, damage_weights, swap, verify, DTYPES};

#[test]
fn undamaged_conversions_pass() {
    for case in ["xlnet", "xlnet-tied-sts-b", "xlnet-mnli"] {
        for dtype in DTYPES {
            let c = convert_golden(case, dtype);
            let v = verify(&c);
            assert_eq!(v.code, 0, "{case} as {dtype} must pass; {}", v.describe());
            let worst = v.report["outputs"].as_array().unwrap().iter().filter_map(|o| o["max_rel_error"].as_f64()).fold(0.0, f64::max);
            eprintln!("undamaged golden/{case} as {dtype}: worst relative error {worst:.3e}");
        }
    }
}

/// Layer 0 given layer 1's slice of the untied r_w_bias (and the other way round).
#[test]
fn the_wrong_layers_bias_slice_diverges_at_the_first_layer() {
    for dtype in DTYPES {
        let c = convert_golden("xlnet", dtype);
        damage_weights(&c, |t| swap(t, "transformer.layer.0.rel_attn.r_w_bias", "transformer.layer.1.rel_attn.r_w_bias"));
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

#[test]
fn content_and_position_biases_swapped_diverge_at_their_layer() {
    for dtype in DTYPES {
        let c = convert_golden("xlnet", dtype);
        damage_weights(&c, |t| swap(t, "transformer.layer.1.rel_attn.r_w_bias", "transformer.layer.1.rel_attn.r_r_bias"));
        assert_diverges_at(&verify(&c), "layer.1");
    }
}

/// A converter that writes the segment embedding of layer 0 only leaves layer 1's at its random
/// initialisation; one that drops it leaves it missing.
#[test]
fn a_missing_segment_embedding_slice_is_caught() {
    for dtype in DTYPES {
        let c = convert_golden("xlnet", dtype);
        damage_weights(&c, |t| {
            let seg = t.get_mut("transformer.layer.1.rel_attn.seg_embed").expect("seg_embed");
            let mut rng = tfconv::synthetic::Rng::new(9);
            let random: Vec<f32> = seg.f32s().iter().map(|_| rng.uniform(0.02 * 3f32.sqrt())).collect();
            seg.set_f32s(&random);
        });
        assert_diverges_at(&verify(&c), "layer.1");
    }
    let c = convert_golden("xlnet-mnli", "float32");
    damage_weights(&c, |t| {
        t.remove("transformer.layer.1.rel_attn.seg_embed").expect("seg_embed");
    });
    let v = verify(&c);
    assert_eq!(v.code, 1, "{}", v.describe());
    assert!(v.structural_problems().join("\n").contains("missing weight transformer.layer.1.rel_attn.seg_embed"), "{}", v.describe());
}

/// Shared biases (untie_r false) must be copied into every layer: one layer left with another
/// value diverges there.
#[test]
fn a_shared_bias_not_copied_into_a_layer_is_caught() {
    let c = convert_golden("xlnet-tied-sts-b", "float32");
    damage_weights(&c, |t| {
        let bias = t.get_mut("transformer.layer.1.rel_attn.r_r_bias").expect("r_r_bias");
        let zeros = vec![0.0; bias.f32s().len()];
        bias.set_f32s(&zeros);
    });
    assert_diverges_at(&verify(&c), "layer.1");
}

/// The original's "gelu" is the tanh approximation; HF's "gelu" is erf.
#[test]
fn erf_gelu_in_the_config_diverges_at_the_first_layer() {
    for dtype in DTYPES {
        let c = convert_golden("xlnet", dtype);
        damage_config(&c, |cfg| {
            assert_eq!(cfg["ff_activation"], "gelu_new");
            cfg.insert("ff_activation".into(), "gelu".into());
        });
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

/// The query stream starts from mask_emb: damaged, only the query stream's outputs move.
#[test]
fn a_wrong_mask_embedding_diverges_in_the_query_stream() {
    let c = convert_golden("xlnet", "float32");
    damage_weights(&c, |t| {
        let m = t.get_mut("transformer.mask_emb").expect("mask_emb");
        let flipped: Vec<f32> = m.f32s().iter().map(|x| -x).collect();
        m.set_f32s(&flipped);
    });
    assert_diverges_at(&verify(&c), "embeddings.query");
}
