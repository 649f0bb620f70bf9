//! Numeric comparison of candle outputs against the TensorFlow reference, output by output.

use serde::{Deserialize, Serialize};
use tfconv_models::probe::{Output, Outputs};

use crate::source::DType;

/// Allowed error: |candle − tf| ≤ atol + rtol · scale, where scale is the largest |value| of the
/// reference output. Relative to the output's scale, not per element, so that near-zero
/// elements don't demand impossible relative precision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Tolerance {
    /// Defaults by stored dtype: the same for all. The two implementations differ only in
    /// summation order (observed ~1e-6 of scale). Half-precision folders get no more room,
    /// because the reference rounds each original weight to the stored dtype and back (as the
    /// conversion did) and both sides then compute in float32 on identical values.
    pub fn for_dtype(_stored: DType) -> Tolerance {
        Tolerance { atol: 1e-5, rtol: 1e-4 }
    }

    /// One stage fed the reference's own inputs: only that stage's rounding differs, with
    /// nothing accumulated from earlier stages, so ten times tighter than end to end.
    pub fn isolated_stage(_stored: DType) -> Tolerance {
        Tolerance { atol: 1e-6, rtol: 1e-5 }
    }

    /// For a half-precision model against outputs computed on the UNROUNDED weights (the golden
    /// outputs): every weight is rounded on one side only, and that compounds over layers, so a
    /// few ε of the stored type: float16 keeps 11 significant bits (ε ≈ 1e-3), bfloat16 8
    /// (ε ≈ 4e-3). `verify` never needs this; it rounds the reference's weights instead.
    pub fn rounded_on_one_side(stored: DType) -> Tolerance {
        match stored {
            DType::F16 => Tolerance { atol: 1e-3, rtol: 1e-2 },
            DType::BF16 => Tolerance { atol: 1e-2, rtol: 5e-2 },
            _ => Tolerance::for_dtype(stored),
        }
    }
}

/// Agreement of one named output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputReport {
    pub name: String,
    pub shape: Vec<usize>,
    // JSON has no infinity (an output that could not be compared has infinite errors, written
    // as null), so a report read back takes null as infinity.
    #[serde(deserialize_with = "null_as_infinity")]
    pub max_abs_error: f64,
    /// max_abs_error / scale.
    #[serde(deserialize_with = "null_as_infinity")]
    pub max_rel_error: f64,
    #[serde(deserialize_with = "null_as_infinity")]
    pub mean_abs_error: f64,
    /// Largest |reference| value.
    pub scale: f64,
    pub cosine_similarity: f64,
    /// Fraction of rows (over the last axis) whose argmax agrees; logits outputs only.
    pub argmax_agreement: Option<f64>,
    /// Flat index of the worst element.
    pub worst_index: usize,
    pub allowed: f64,
    pub pass: bool,
    /// Set when the output could not be compared at all (missing, shape mismatch, non-finite).
    pub problem: Option<String>,
}

fn null_as_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

impl OutputReport {
    /// The same errors judged against another tolerance.
    pub fn rescore(mut self, tol: Tolerance) -> OutputReport {
        self.allowed = tol.atol + tol.rtol * self.scale;
        self.pass = self.problem.is_none() && self.max_abs_error <= self.allowed;
        self
    }
}

fn is_logits(name: &str) -> bool {
    name.ends_with("logits")
}

pub fn compare_output(name: &str, candle: Option<&Output>, reference: &Output, tol: Tolerance) -> OutputReport {
    let mut report = OutputReport {
        name: name.to_string(),
        shape: reference.shape.clone(),
        max_abs_error: f64::INFINITY,
        max_rel_error: f64::INFINITY,
        mean_abs_error: f64::INFINITY,
        scale: 0.0,
        cosine_similarity: 0.0,
        argmax_agreement: None,
        worst_index: 0,
        allowed: 0.0,
        pass: false,
        problem: None,
    };
    let Some(candle) = candle else {
        report.problem = Some("the converted model produced no such output".into());
        return report;
    };
    if candle.shape != reference.shape || candle.values.len() != reference.values.len() {
        report.problem = Some(format!("shape {:?} but TensorFlow gives {:?}", candle.shape, reference.shape));
        return report;
    }
    let (a, b) = (&candle.values, &reference.values);
    let scale = b.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    let (mut max_abs, mut sum_abs, mut worst) = (0f64, 0f64, 0usize);
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    let mut non_finite = 0usize;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let (x, y) = (x as f64, y as f64);
        if !x.is_finite() || !y.is_finite() {
            non_finite += 1;
            continue;
        }
        let d = (x - y).abs();
        if d > max_abs {
            max_abs = d;
            worst = i;
        }
        sum_abs += d;
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    report.scale = scale;
    report.max_abs_error = max_abs;
    report.max_rel_error = if scale > 0.0 { max_abs / scale } else { max_abs };
    report.mean_abs_error = if a.is_empty() { 0.0 } else { sum_abs / a.len() as f64 };
    report.cosine_similarity = if na > 0.0 && nb > 0.0 { dot / (na.sqrt() * nb.sqrt()) } else if na == nb { 1.0 } else { 0.0 };
    report.worst_index = worst;
    report.allowed = tol.atol + tol.rtol * scale;
    if is_logits(name) {
        let width = *reference.shape.last().unwrap_or(&1);
        if width > 1 {
            let rows = a.len() / width;
            let argmax = |v: &[f32]| v.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (i, &x)| if x > m.1 { (i, x) } else { m }).0;
            let agree = (0..rows).filter(|r| argmax(&a[r * width..][..width]) == argmax(&b[r * width..][..width])).count();
            report.argmax_agreement = Some(if rows == 0 { 1.0 } else { agree as f64 / rows as f64 });
        }
    }
    if non_finite > 0 {
        report.problem = Some(format!("{non_finite} non-finite value(s)"));
        return report;
    }
    report.pass = max_abs <= report.allowed;
    report
}

/// Compares every reference output, in forward order.
pub fn compare(candle: &Outputs, reference: &Outputs, tol: Tolerance) -> Vec<OutputReport> {
    let mut reports: Vec<OutputReport> =
        reference.0.iter().map(|(name, r)| compare_output(name, candle.get(name), r, tol)).collect();
    for (name, _) in &candle.0 {
        if reference.get(name).is_none() {
            let mut r = compare_output(name, None, &Output { shape: vec![], values: vec![] }, tol);
            r.problem = Some("TensorFlow produced no such output".into());
            reports.push(r);
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(values: &[f32]) -> Output {
        Output { shape: vec![values.len()], values: values.to_vec() }
    }

    #[test]
    fn error_is_judged_against_the_reference_scale() {
        let tol = Tolerance { atol: 0.0, rtol: 1e-3 };
        let r = compare_output("h", Some(&out(&[100.0, 0.0501])), &out(&[100.0, 0.05]), tol);
        assert!(r.pass, "{r:?}");
        let r = compare_output("h", Some(&out(&[100.2, 0.05])), &out(&[100.0, 0.05]), tol);
        assert!(!r.pass && r.worst_index == 0, "{r:?}");
    }

    #[test]
    fn shape_mismatch_and_non_finite_values_fail() {
        let tol = Tolerance { atol: 1.0, rtol: 1.0 };
        let r = compare_output("h", Some(&out(&[1.0])), &out(&[1.0, 2.0]), tol);
        assert!(!r.pass && r.problem.is_some());
        let r = compare_output("h", Some(&out(&[f32::NAN, 2.0])), &out(&[1.0, 2.0]), tol);
        assert!(!r.pass && r.problem.unwrap().contains("non-finite"));
    }

    #[test]
    fn an_uncomparable_output_survives_the_json_round_trip() {
        let r = compare_output("h", None, &out(&[1.0]), Tolerance { atol: 0.0, rtol: 0.0 });
        let back: OutputReport = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!((back.max_abs_error, back.pass, back.problem), (f64::INFINITY, false, r.problem));
    }

    #[test]
    fn argmax_agreement_counts_rows_of_logits() {
        let a = Output { shape: vec![2, 3], values: vec![0.0, 1.0, 0.0, 5.0, 0.0, 0.0] };
        let b = Output { shape: vec![2, 3], values: vec![0.0, 1.0, 0.0, 0.0, 0.0, 5.0] };
        let r = compare_output("mlm_logits", Some(&a), &b, Tolerance { atol: 0.0, rtol: 0.0 });
        assert_eq!(r.argmax_agreement, Some(0.5));
    }
}
