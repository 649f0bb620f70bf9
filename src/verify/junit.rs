//! JUnit XML for CI systems (GitHub, GitLab, Jenkins): one test suite per verified folder, one
//! test case per stage (plus `structure`), the numbers in each failure message. It follows the
//! Apache Ant JUnit schema, the strictest of the common ones, so every consumer reads it.

use std::fmt::Write;

use super::{OutputReport, VerifyReport};

/// XML text with the five special characters escaped, and the control characters XML 1.0
/// cannot hold dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// One verification's outcome for the XML: a report, or an error that kept it from running.
pub enum Outcome<'a> {
    Report(&'a VerifyReport),
    /// (what was being verified, why it could not be).
    Error(String, String),
}

/// "max|Δ| 1.234e-3 > allowed 3.333e-5 (37.0× over, rel 1.2e-3, at flat index 17)".
fn numbers(o: &OutputReport) -> String {
    if let Some(problem) = &o.problem {
        return problem.clone();
    }
    let relation = if o.pass { "≤" } else { ">" };
    format!(
        "max|Δ| {:.3e} {relation} allowed {:.3e} ({:.2}× the bound, rel {:.2e}, cosine {:.6}, at flat index {})",
        o.max_abs_error,
        o.allowed,
        o.max_abs_error / o.allowed.max(f64::MIN_POSITIVE),
        o.max_rel_error,
        o.cosine_similarity,
        o.worst_index
    )
}

/// A `<testcase>`, failing with `failure` = (message, body) when given.
fn case(xml: &mut String, name: &str, class: &str, seconds: f64, failure: Option<(String, String)>, kind: &str) {
    let _ = write!(xml, "    <testcase name=\"{}\" classname=\"{}\" time=\"{seconds:.3}\"", escape(name), escape(class));
    match failure {
        None => xml.push_str("/>\n"),
        Some((message, body)) => {
            let _ = write!(xml, ">\n      <{kind} message=\"{}\" type=\"{kind}\">{}</{kind}>\n    </testcase>\n", escape(&message), escape(&body));
        }
    }
}

/// Writes one `<testsuite>` (the `id`-th).
pub fn suite(xml: &mut String, id: usize, name: &str, outcome: &Outcome, timestamp: &str, hostname: &str) {
    let mut cases = String::new();
    let (mut tests, mut failures, mut errors) = (0, 0, 0);
    let mut seconds = 0.0;
    let mut properties: Vec<(String, String)> = Vec::new();
    let mut out = String::new();
    match outcome {
        Outcome::Error(what, why) => {
            let class = format!("tfconv.verify.{}", name);
            tests += 1;
            errors += 1;
            case(&mut cases, "setup", &class, 0.0, Some((format!("{what}: {why}"), why.clone())), "error");
            out.push_str(&format!("{what}: {why}\n"));
        }
        Outcome::Report(r) => {
            let class = format!("tfconv.verify.{}", r.class);
            properties.extend([
                ("folder".to_string(), r.folder.display().to_string()),
                ("checkpoint".to_string(), r.checkpoint.display().to_string()),
                ("class".to_string(), r.class.clone()),
                ("stored_dtype".to_string(), r.stored_dtype.clone()),
                ("tensorflow_version".to_string(), r.tensorflow_version.clone()),
                ("tfconv_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                ("probe_seed".to_string(), r.probes.seed.to_string()),
                ("tolerance".to_string(), format!("chained {:e} + {:e}·max|ref|, isolated {:e} + {:e}·max|ref|", r.tolerance.atol, r.tolerance.rtol, r.isolated_tolerance.atol, r.isolated_tolerance.rtol)),
            ]);
            if let Some(p) = &r.provenance {
                properties.push(("onednn".into(), p.onednn.map(|b| b.to_string()).unwrap_or_else(|| "unknown".into())));
            }
            tests += 1;
            let structure = (!r.structural_problems.is_empty()).then(|| {
                (format!("{} structural problem(s): {}", r.structural_problems.len(), r.structural_problems[0]), r.structural_problems.join("\n"))
            });
            failures += structure.is_some() as usize;
            case(&mut cases, "structure", &class, 0.0, structure, "failure");
            let first = r.first_divergence.as_deref();
            for st in &r.stages {
                tests += 1;
                let stage_seconds = st.seconds_candle + st.seconds_tensorflow;
                seconds += stage_seconds;
                let mut lines = Vec::new();
                let mut failing = Vec::new();
                for (kind, list) in [("isolated", &st.isolated), ("chained", &st.chained)] {
                    for o in list.iter() {
                        lines.push(format!("{} {kind}: {}{}", o.name, numbers(o), if o.pass { "" } else { "  FAIL" }));
                        if !o.pass {
                            failing.push(format!("{} {kind}: {}", o.name, numbers(o)));
                        }
                    }
                }
                out.push_str(&format!("stage {}:\n  {}\n", st.name, lines.join("\n  ")));
                let failure = (!failing.is_empty()).then(|| {
                    let is_first = st.isolated.iter().chain(&st.chained).any(|o| Some(o.name.as_str()) == first);
                    let prefix = if is_first { format!("first divergence at '{}': ", first.unwrap_or_default()) } else { String::new() };
                    (format!("{prefix}{}", failing.join("; ")), lines.join("\n"))
                });
                failures += failure.is_some() as usize;
                case(&mut cases, &st.name, &class, stage_seconds, failure, "failure");
            }
            out.push_str(&format!(
                "{}\n",
                match first {
                    None => "PASS".to_string(),
                    Some(f) => format!("FAIL: first divergence at '{f}'"),
                }
            ));
        }
    }
    let _ = write!(
        xml,
        "  <testsuite package=\"tfconv\" id=\"{id}\" name=\"{}\" timestamp=\"{timestamp}\" hostname=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{seconds:.3}\">\n    <properties>\n",
        escape(name),
        escape(hostname)
    );
    for (k, v) in &properties {
        let _ = writeln!(xml, "      <property name=\"{}\" value=\"{}\"/>", escape(k), escape(v));
    }
    xml.push_str("    </properties>\n");
    xml.push_str(&cases);
    let _ = write!(xml, "    <system-out>{}</system-out>\n    <system-err></system-err>\n  </testsuite>\n", escape(&out));
}

/// A whole document: one suite per (name, outcome).
pub fn document(suites: &[(String, Outcome)]) -> String {
    let (timestamp, hostname) = (utc_timestamp(std::time::SystemTime::now()), hostname());
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for (id, (name, outcome)) in suites.iter().enumerate() {
        suite(&mut xml, id, name, outcome, &timestamp, &hostname);
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// The suite name of one folder's verification.
pub fn suite_name(report: &VerifyReport) -> String {
    format!("verify {}", report.folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| report.folder.display().to_string()))
}

/// "2026-12-02T13:45:07" (UTC, no zone: the Ant schema's pattern).
pub fn utc_timestamp(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        let at = |s: u64| utc_timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(at(1_796_190_097), "2026-12-02T05:41:37");
    }

    #[test]
    fn escapes_markup_and_drops_what_xml_cannot_hold() {
        assert_eq!(escape("a<b & \"c\" 'd'>\u{1}\n"), "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;\n");
    }
}
