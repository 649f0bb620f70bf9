//! T5's mutation suite: golden T5 conversions damaged the way T5 converters go wrong, each caught
//! by `tfconv verify` and blamed on the right stage: the relative bias not transposed, `wi_0` and
//! `wi_1` swapped, the v1.0 output rescale omitted, the v1.1 head tied, the encoder's and
//! decoder's block-0 biases swapped.
//!
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

mod common;

use common::mutation::{assert_diverges_at, convert_golden, damage_config, damage_weights, swap, verify, DTYPES};

#[test]
fn undamaged_conversions_pass() {
    for case in ["t5-v1_0", "t5-v1_1", "t5-named-sublayers"] {
        for dtype in DTYPES {
            let c = convert_golden(case, dtype);
            let v = verify(&c);
            assert_eq!(v.code, 0, "{case} as {dtype} must pass; {}", v.describe());
            let worst = v.report["outputs"].as_array().unwrap().iter().filter_map(|o| o["max_rel_error"].as_f64()).fold(0.0, f64::max);
            eprintln!("undamaged golden/{case} as {dtype}: worst relative error {worst:.3e}");
        }
    }
}

/// The table is [N, buckets] in Mesh TF and [buckets, N] in HF; with as many heads as buckets
/// a missing transpose still fits, so the golden models' 4 × 32 table is reshaped instead, as a
/// converter reading it in the wrong order would.
#[test]
fn relative_bias_not_transposed_diverges_at_the_first_block() {
    for dtype in DTYPES {
        let c = convert_golden("t5-v1_1", dtype);
        damage_weights(&c, |t| {
            let table = t.get_mut("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight").expect("table");
            let (buckets, heads) = (table.shape[0], table.shape[1]);
            let v = table.f32s();
            // The [N, buckets] bytes read as [buckets, N]: element (b, h) takes the value at b·N + h
            // of the transposed (original) layout.
            let untransposed: Vec<f32> = (0..buckets * heads).map(|i| v[(i % buckets) * heads + i / buckets]).collect();
            table.set_f32s(&untransposed);
        });
        assert_diverges_at(&verify(&c), "encoder.layer.0");
    }
}

#[test]
fn gate_and_linear_projections_swapped_diverge_at_their_block() {
    for dtype in DTYPES {
        let c = convert_golden("t5-v1_1", dtype);
        damage_weights(&c, |t| swap(t, "decoder.block.1.layer.2.DenseReluDense.wi_0.weight", "decoder.block.1.layer.2.DenseReluDense.wi_1.weight"));
        assert_diverges_at(&verify(&c), "decoder.layer.1");
    }
}

/// v1.0 decodes with the shared embedding after `hidden * d_model^-0.5`; a folder that unties
/// the head (a copy of the embedding) loses the rescale.
#[test]
fn v1_0_output_rescale_omitted_diverges_at_the_logits() {
    for dtype in DTYPES {
        let c = convert_golden("t5-v1_0", dtype);
        damage_weights(&c, |t| {
            let shared = t["shared.weight"].clone();
            t.insert("lm_head.weight".into(), shared);
        });
        damage_config(&c, |cfg| {
            cfg.insert("tie_word_embeddings".into(), false.into());
        });
        assert_diverges_at(&verify(&c), "lm_logits");
    }
}

/// v1.1 has its own head and no rescale; a config saying the head is tied (what transformers 5
/// assumes when `tie_word_embeddings` is left out) decodes with the embedding instead.
#[test]
fn v1_1_head_tied_diverges_at_the_logits() {
    let c = convert_golden("t5-v1_1", "float32");
    damage_config(&c, |cfg| {
        assert_eq!(cfg["tie_word_embeddings"], false);
        cfg.insert("tie_word_embeddings".into(), true.into());
    });
    let v = verify(&c);
    assert_eq!(v.code, 1, "{}", v.describe());
    assert!(v.structural_problems().join("\n").contains("lm_head.weight"), "the untied head is left unused; {}", v.describe());
    // A folder holding no head at all, as a tying converter writes it, is missing the original's.
    damage_weights(&c, |t| {
        t.remove("lm_head.weight").expect("lm_head");
    });
    let v = verify(&c);
    assert_eq!(v.code, 1, "{}", v.describe());
    assert!(v.structural_problems().join("\n").contains("missing weight lm_head.weight (from decoder/logits/kernel)"), "{}", v.describe());
}

#[test]
fn encoder_and_decoder_position_biases_swapped_diverge_at_the_encoder() {
    for dtype in DTYPES {
        let c = convert_golden("t5-v1_0", dtype);
        damage_weights(&c, |t| {
            swap(t, "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
        });
        assert_diverges_at(&verify(&c), "encoder.layer.0");
    }
}
