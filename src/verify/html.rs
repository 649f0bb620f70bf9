//! `--report-html`: one self-contained page (no scripts, fonts or images fetched) with the
//! verdict, a chart of the error per stage against its bound, the table and the provenance.
//! The chart is inline SVG whose marks carry classes, so a test can count and read them.

use std::fmt::Write;

use super::junit::escape;
use super::{OutputReport, StageReport, VerifyReport};

/// Errors below this are drawn at it: an exact match has no logarithm.
const FLOOR: f64 = 1e-12;

/// The output of a stage's comparison nearest to (or furthest past) its bound.
fn worst(outputs: &[OutputReport]) -> Option<&OutputReport> {
    let ratio = |o: &OutputReport| if o.problem.is_some() { f64::INFINITY } else { o.max_abs_error / o.allowed.max(f64::MIN_POSITIVE) };
    outputs.iter().max_by(|a, b| ratio(a).total_cmp(&ratio(b)))
}

/// The stage holding the first divergence, if a stage does.
fn first_divergent_stage(r: &VerifyReport) -> Option<usize> {
    let first = r.first_divergence.as_deref()?;
    r.stages.iter().position(|st| st.isolated.iter().chain(&st.chained).any(|o| o.name == first))
}

fn chart(r: &VerifyReport) -> String {
    let stages: &[StageReport] = &r.stages;
    let mut s = String::new();
    if stages.is_empty() {
        return "<p class=\"no-chart\">No stage was compared (the folder failed the structural checks).</p>".into();
    }
    let values: Vec<f64> = stages
        .iter()
        .flat_map(|st| [worst(&st.chained), worst(&st.isolated)])
        .flatten()
        .flat_map(|o| [o.max_abs_error, o.allowed])
        .filter(|v| v.is_finite())
        .map(|v| v.max(FLOOR))
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min).log10().floor();
    let hi = values.iter().copied().fold(0.0f64, f64::max).log10().ceil().max(lo + 1.0);
    let (left, top, plot_h, step) = (70.0, 20.0, 260.0, 56.0f64.max(600.0 / stages.len() as f64).min(90.0));
    let width = left + step * stages.len() as f64 + 20.0;
    let height = top + plot_h + 110.0;
    let y = |v: f64| top + (hi - v.max(FLOOR).log10().clamp(lo, hi)) / (hi - lo) * plot_h;
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{width:.0}\" height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"max absolute error per stage against the allowed bound, log scale\">"
    );
    let first = first_divergent_stage(r);
    if let Some(i) = first {
        let x = left + step * i as f64;
        let _ = writeln!(
            s,
            "<rect class=\"first-divergence\" data-stage=\"{}\" x=\"{x:.1}\" y=\"{top}\" width=\"{step:.1}\" height=\"{plot_h}\" fill=\"#fde2e2\"/>\
             <text class=\"first-divergence-label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#b00020\">first divergence</text>",
            escape(&stages[i].name),
            x + step / 2.0,
            top - 6.0
        );
    }
    for decade in (lo as i32)..=(hi as i32) {
        let yy = y(10f64.powi(decade));
        let _ = writeln!(
            s,
            "<line class=\"grid\" x1=\"{left}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"11\">1e{decade}</text>",
            width - 20.0,
            left - 6.0,
            yy + 4.0
        );
    }
    let _ = writeln!(s, "<line x1=\"{left}\" x2=\"{left}\" y1=\"{top}\" y2=\"{:.1}\" stroke=\"#333\"/>", top + plot_h);
    for (i, st) in stages.iter().enumerate() {
        let cx = left + step * (i as f64 + 0.5);
        for (kind, list, dx, color) in [("chained", &st.chained, -8.0, "#1f77b4"), ("isolated", &st.isolated, 8.0, "#ff7f0e")] {
            let Some(o) = worst(list) else { continue };
            let x = cx + dx;
            let yb = y(o.allowed);
            let _ = writeln!(
                s,
                "<line class=\"bound {kind}\" data-stage=\"{}\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{yb:.1}\" y2=\"{yb:.1}\" stroke=\"{color}\" stroke-width=\"2\" stroke-dasharray=\"3,2\"><title>{} {kind} allowed {:.3e}</title></line>",
                escape(&st.name),
                x - 7.0,
                x + 7.0,
                escape(&st.name),
                o.allowed
            );
            let fill = if o.pass { color } else { "#d00000" };
            let ye = if o.max_abs_error.is_finite() { y(o.max_abs_error) } else { top };
            let tip = format!("{} {kind}: {} max|Δ| {:.3e}, allowed {:.3e}", st.name, o.name, o.max_abs_error, o.allowed);
            let pass = if o.pass { "pass" } else { "fail" };
            match kind {
                "chained" => {
                    let _ = writeln!(s, "<circle class=\"mark {kind} {pass}\" data-stage=\"{}\" cx=\"{x:.1}\" cy=\"{ye:.1}\" r=\"4.5\" fill=\"{fill}\"><title>{}</title></circle>", escape(&st.name), escape(&tip));
                }
                _ => {
                    let _ = writeln!(s, "<rect class=\"mark {kind} {pass}\" data-stage=\"{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"{fill}\"><title>{}</title></rect>", escape(&st.name), x - 4.0, ye - 4.0, escape(&tip));
                }
            }
        }
        let ly = top + plot_h + 10.0;
        let _ = writeln!(
            s,
            "<text class=\"stage-label\" x=\"{cx:.1}\" y=\"{ly:.1}\" font-size=\"11\" text-anchor=\"end\" transform=\"rotate(-45 {cx:.1} {ly:.1})\">{}</text>",
            escape(&st.name)
        );
    }
    let ly = height - 12.0;
    let _ = writeln!(
        s,
        "<g font-size=\"11\"><circle cx=\"{left}\" cy=\"{:.1}\" r=\"4.5\" fill=\"#1f77b4\"/><text x=\"{:.1}\" y=\"{ly:.1}\">chained max|Δ|</text>\
         <rect x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"#ff7f0e\"/><text x=\"{:.1}\" y=\"{ly:.1}\">isolated max|Δ|</text>\
         <line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#555\" stroke-width=\"2\" stroke-dasharray=\"3,2\"/><text x=\"{:.1}\" y=\"{ly:.1}\">allowed bound</text>\
         <circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4.5\" fill=\"#d00000\"/><text x=\"{:.1}\" y=\"{ly:.1}\">outside the bound</text></g>",
        ly - 4.0,
        left + 8.0,
        left + 110.0,
        ly - 8.0,
        left + 122.0,
        left + 230.0,
        left + 244.0,
        ly - 4.0,
        ly - 4.0,
        left + 250.0,
        left + 350.0,
        ly - 4.0,
        left + 358.0
    );
    s.push_str("</svg>\n");
    s
}

fn table(r: &VerifyReport) -> String {
    let mut s = String::from(
        "<table class=\"outputs\"><thead><tr><th>stage</th><th>output</th><th>chained max|Δ|</th><th>allowed</th><th>rel</th>\
         <th>isolated max|Δ|</th><th>allowed</th><th>cosine</th><th>result</th></tr></thead><tbody>\n",
    );
    for st in &r.stages {
        for o in &st.chained {
            let iso = st.isolated.iter().find(|i| i.name == o.name);
            let pass = o.pass && iso.is_none_or(|i| i.pass);
            let first = r.first_divergence.as_deref() == Some(o.name.as_str());
            let (ie, ia) = iso.map(|i| (format!("{:.3e}", i.max_abs_error), format!("{:.3e}", i.allowed))).unwrap_or_default();
            let result = match o.problem.as_ref().or(iso.and_then(|i| i.problem.as_ref())) {
                Some(p) => format!("FAIL ({})", escape(p)),
                None if pass => "ok".into(),
                None => "FAIL".into(),
            };
            let _ = writeln!(
                s,
                "<tr class=\"{}{}\"><td>{}</td><td>{}</td><td>{:.3e}</td><td>{:.3e}</td><td>{:.3e}</td><td>{ie}</td><td>{ia}</td><td>{:.6}</td><td>{result}{}</td></tr>",
                if pass { "pass" } else { "fail" },
                if first { " first-divergence" } else { "" },
                escape(&st.name),
                escape(&o.name),
                o.max_abs_error,
                o.allowed,
                o.max_rel_error,
                o.cosine_similarity,
                if first { " ← first divergence" } else { "" }
            );
        }
    }
    s.push_str("</tbody></table>\n");
    s
}

fn provenance(r: &VerifyReport) -> String {
    let mut s = String::new();
    let Some(p) = &r.provenance else { return "<p>No provenance recorded.</p>".into() };
    let onednn = match p.onednn {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    };
    let _ = writeln!(
        s,
        "<dl class=\"versions\"><dt>tfconv</dt><dd>{}</dd><dt>TensorFlow</dt><dd>{} (oneDNN {onednn})</dd><dt>probe seed</dt><dd>{}</dd>\
         <dt>tolerance</dt><dd>chained |Δ| ≤ {:e} + {:e}·max|ref|; isolated |Δ| ≤ {:e} + {:e}·max|ref|</dd></dl>",
        escape(&p.tfconv_version),
        escape(&p.tensorflow_version),
        p.probe_seed,
        p.tolerance.atol,
        p.tolerance.rtol,
        p.isolated_tolerance.atol,
        p.isolated_tolerance.rtol
    );
    s.push_str("<table class=\"files\"><thead><tr><th>role</th><th>file</th><th>bytes</th><th>SHA-256</th></tr></thead><tbody>\n");
    for f in p.inputs.iter().chain(&p.outputs) {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            escape(&f.role),
            escape(&f.path.display().to_string()),
            f.bytes,
            escape(&f.sha256)
        );
    }
    s.push_str("</tbody></table>\n");
    s
}

/// The whole page.
pub fn page(r: &VerifyReport) -> String {
    let verdict = match (r.pass, r.first_divergence.as_deref()) {
        (true, _) => {
            let worst = r.outputs.iter().map(|o| o.max_rel_error).fold(0.0, f64::max);
            format!("PASS: {} outputs agree in {} stages (worst relative error {worst:.2e})", r.outputs.len(), r.stages.len())
        }
        (false, Some("structure")) => format!("FAIL: {} structural problem(s)", r.structural_problems.len()),
        (false, Some(first)) => format!("FAIL: first divergence at '{first}' ({})", r.divergence_kind.as_deref().unwrap_or("chained")),
        (false, None) => "FAIL".into(),
    };
    let problems: String = r.structural_problems.iter().map(|p| format!("<li>{}</li>", escape(p))).collect();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tfconv verify: {title}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; color: #222; }} .verdict {{ padding: .6em 1em; font-size: 1.3em; font-weight: bold; }}\n\
         .verdict.pass {{ background: #dff5e1; color: #17602a; }} .verdict.fail {{ background: #fde2e2; color: #b00020; }}\n\
         table {{ border-collapse: collapse; margin: 1em 0; font-size: .9em; }} td, th {{ border: 1px solid #ccc; padding: .2em .5em; text-align: right; }}\n\
         td:first-child, td:nth-child(2), th {{ text-align: left; }} tr.fail td {{ color: #b00020; }} tr.first-divergence td {{ background: #fde2e2; font-weight: bold; }}\n\
         table.files td {{ text-align: left; }} code {{ font-size: .85em; }} dt {{ font-weight: bold; float: left; width: 9em; }} dd {{ margin-left: 10em; }}\n\
         </style></head><body>\n<h1>{class} against TensorFlow</h1>\n<p>{folder} verified against {checkpoint} (stored {dtype}, {params} parameters, probes {probes})</p>\n\
         <div class=\"verdict {status}\">{verdict}</div>\n<ul class=\"problems\">{problems}</ul>\n\
         <h2>Error per stage</h2>\n<p>Worst output of each stage: max|Δ| (marks) against the allowed bound (dashes), log scale; \
         chained = each side feeds its own previous outputs, isolated = the stage run on the reference's inputs.</p>\n{chart}\
         <h2>Outputs</h2>\n{table}<h2>Provenance</h2>\n{provenance}</body></html>\n",
        title = escape(&r.class),
        class = escape(&r.class),
        folder = escape(&r.folder.display().to_string()),
        checkpoint = escape(&r.checkpoint.display().to_string()),
        dtype = escape(&r.stored_dtype),
        params = r.parameters,
        probes = escape(&r.probes.to_string()),
        status = if r.pass { "pass" } else { "fail" },
        verdict = escape(&verdict),
        chart = chart(r),
        table = table(r),
        provenance = provenance(r),
    )
}
