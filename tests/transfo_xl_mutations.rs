//! Transformer-XL's mutation suite: golden conversions damaged the way Transformer-XL converters
//! go wrong (a tail cluster's projection stored untransposed, the wrong layer's r_r_bias slice,
//! the fused qkv kernel's chunks rotated, the cluster bias dropped), each caught by `tfconv
//! verify` and blamed on the right stage by a margin.
//!
//! Needs TensorFlow: a missing runtime makes these tests FAIL, never skip.

mod common;

use common::mutation::{assert_diverges_at, convert_golden, damage_weights, swap, verify, DTYPES};

#[test]
fn undamaged_conversions_pass() {
    for case in ["transfo-xl", "transfo-xl-lm1b"] {
        for dtype in DTYPES {
            let c = convert_golden(case, dtype);
            let v = verify(&c);
            assert_eq!(v.code, 0, "{case} as {dtype} must pass; {}", v.describe());
            let worst = v.report["outputs"].as_array().unwrap().iter().filter_map(|o| o["max_rel_error"].as_f64()).fold(0.0, f64::max);
            eprintln!("undamaged golden/{case} as {dtype}: worst relative error {worst:.3e}");
        }
    }
}

/// lm1b's last cluster has its own softmax projection, [16, 4] in HF's layout: a converter that
/// copies the original's [4, 16] bytes without transposing them.
#[test]
fn a_tail_projection_not_transposed_diverges_at_the_softmax() {
    for dtype in DTYPES {
        let c = convert_golden("transfo-xl-lm1b", dtype);
        damage_weights(&c, |t| {
            let p = t.get_mut("crit.out_projs.2").expect("crit.out_projs.2");
            let (rows, cols) = (p.shape[0], p.shape[1]);
            let w = p.f32s();
            let untransposed: Vec<f32> = (0..rows * cols).map(|i| w[(i % rows) * cols + i / rows]).collect();
            p.set_f32s(&untransposed);
        });
        assert_diverges_at(&verify(&c), "log_probs");
    }
}

#[test]
fn the_wrong_layers_r_r_bias_slice_diverges_at_the_first_layer() {
    for dtype in DTYPES {
        let c = convert_golden("transfo-xl", dtype);
        damage_weights(&c, |t| swap(t, "transformer.layers.0.dec_attn.r_r_bias", "transformer.layers.1.dec_attn.r_r_bias"));
        assert_diverges_at(&verify(&c), "layer.0");
    }
}

/// q, k, v chunks of the fused kernel rotated (k, v, q): a converter that split and re-fused.
#[test]
fn rotated_qkv_chunks_diverge_at_their_layer() {
    for dtype in DTYPES {
        let c = convert_golden("transfo-xl", dtype);
        damage_weights(&c, |t| {
            let w = t.get_mut("transformer.layers.1.dec_attn.qkv_net.weight").expect("qkv_net");
            let (rows, cols) = (w.shape[0], w.shape[1]);
            let v = w.f32s();
            let chunk = rows / 3 * cols;
            let rotated: Vec<f32> = v[chunk..].iter().chain(&v[..chunk]).copied().collect();
            w.set_f32s(&rotated);
        });
        assert_diverges_at(&verify(&c), "layer.1");
    }
}

/// The cluster bias zeroed (a converter that built the head without it) moves every tail
/// token's log-probability; dropped, it is a missing weight.
#[test]
fn a_dropped_cluster_bias_is_caught() {
    for dtype in DTYPES {
        let c = convert_golden("transfo-xl", dtype);
        damage_weights(&c, |t| {
            let b = t.get_mut("crit.cluster_bias").expect("cluster_bias");
            let zeros = vec![0.0; b.f32s().len()];
            b.set_f32s(&zeros);
        });
        assert_diverges_at(&verify(&c), "log_probs");
    }
    let c = convert_golden("transfo-xl", "float32");
    damage_weights(&c, |t| {
        t.remove("crit.cluster_bias").expect("cluster_bias");
    });
    let v = verify(&c);
    assert_eq!(v.code, 1, "{}", v.describe());
    assert!(v.structural_problems().join("\n").contains("missing weight crit.cluster_bias"), "{}", v.describe());
}
