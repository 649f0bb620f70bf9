//! tfconv as a release gate: provenance and `--attest`, JUnit XML validated against the Ant
//! JUnit schema, the HTML report's chart, and `--manifest` batches, all through the binary.
//!
//! Needs TensorFlow (and python3 for the schema check): a missing one makes these FAIL, never skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use common::mutation::{convert_golden, damage_weights, require_tensorflow, Converted};
use common::{golden, stderr};

const BIN: &str = env!("CARGO_BIN_EXE_tfconv");

fn tfconv(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(BIN).args(args).output().expect("run tfconv")
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).expect("JSON")
}

fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(path).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `tfconv verify` of a converted case, with extra flags.
fn verify(c: &Converted, extra: &[&std::ffi::OsStr]) -> Output {
    let mut args = vec![os("verify"), os("--hf-dir"), c.folder.as_os_str(), os("--tf-checkpoint"), c.checkpoint.as_os_str()];
    args.extend_from_slice(extra);
    tfconv(&args)
}

/// golden/bert converted, with layer 1's output LayerNorm gain scaled by 1.01 (caught ~950×).
fn damaged_bert() -> Converted {
    let c = convert_golden("bert", "float32");
    damage_weights(&c, |t| {
        let w = t.get_mut("bert.encoder.layer.1.output.LayerNorm.weight").expect("LayerNorm gain");
        let scaled: Vec<f32> = w.f32s().iter().map(|v| v * 1.01).collect();
        w.set_f32s(&scaled);
    });
    c
}

#[test]
fn the_report_records_digests_and_attest_names_a_changed_weight_file() {
    require_tensorflow();
    let tmp = tempfile::tempdir().unwrap();
    let (folder, report) = (tmp.path().join("bert"), tmp.path().join("report.json"));
    let ckpt = golden("bert/bert_model.ckpt");
    let o = tfconv(&[os("convert"), os("--tf-checkpoint"), ckpt.as_os_str(), os("--output"), folder.as_os_str(), os("--verify"), os("--report"), report.as_os_str()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r = read_json(&report);
    let p = &r["provenance"];
    assert_eq!(p["tfconv_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(p["tensorflow_version"], r["tensorflow_version"]);
    assert!(p["tensorflow_version"].as_str().is_some_and(|v| v.starts_with("2.")), "{p}");
    assert!(p["onednn"].is_boolean(), "oneDNN state not determined: {p}");
    assert_eq!(p["probe_seed"], 0);
    assert_eq!(p["tolerance"], serde_json::json!({"atol": 1e-5, "rtol": 1e-4}));
    assert_eq!(p["isolated_tolerance"], serde_json::json!({"atol": 1e-6, "rtol": 1e-5}));
    let listed = |key: &str| -> Vec<(String, String, String)> {
        p[key].as_array().unwrap().iter().map(|f| (f["role"].as_str().unwrap().into(), f["path"].as_str().unwrap().into(), f["sha256"].as_str().unwrap().into())).collect()
    };
    let inputs = listed("inputs");
    let dir = golden("bert");
    let expected_inputs = [
        ("checkpoint", dir.join("bert_model.ckpt.data-00000-of-00001")),
        ("checkpoint", dir.join("bert_model.ckpt.index")),
        ("config", dir.join("bert_config.json")),
        ("vocabulary", dir.join("vocab.txt")),
    ];
    for (role, path) in &expected_inputs {
        let found = inputs.iter().find(|(_, p, _)| Path::new(p) == path).unwrap_or_else(|| panic!("{} not among the inputs {inputs:?}", path.display()));
        assert_eq!((found.0.as_str(), found.2.clone()), (*role, sha256(path)), "{}", path.display());
    }
    assert_eq!(inputs.len(), expected_inputs.len(), "{inputs:?}");
    let outputs = listed("outputs");
    let names: Vec<&str> = outputs.iter().map(|(_, p, _)| Path::new(p).file_name().unwrap().to_str().unwrap()).collect();
    assert_eq!(names, ["config.json", "model.safetensors", "special_tokens_map.json", "tokenizer_config.json", "vocab.txt"]);
    for (role, path, digest) in &outputs {
        assert_eq!((role.as_str(), digest.clone()), ("output", sha256(Path::new(path))), "{path}");
    }

    let attest = || tfconv(&[os("verify"), os("--attest"), report.as_os_str()]);
    let o = attest();
    assert_eq!(o.status.code(), Some(0), "an untouched folder must attest: {}", stderr(&o));
    assert!(stderr(&o).contains("attested: the 9 files recorded"), "{}", stderr(&o));

    // One byte of the weights, same size: only the digest can tell.
    let weights = folder.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&weights, &bytes).unwrap();
    let o = attest();
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let text = stderr(&o);
    let line = format!("changed: {} (output): SHA-256 ", weights.display());
    assert!(text.contains(&line), "expected {line:?} in:\n{text}");
    assert_eq!(text.matches("changed: ").count(), 1, "only the weights changed:\n{text}");
    assert!(text.contains(&format!("1 of the 9 files recorded in {} changed since it was written, first {}", report.display(), weights.display())), "{text}");
}

/// Python with `xmlschema`, in a venv under tfconv's cache, created once.
fn xsd_python() -> PathBuf {
    static ONCE: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut done = ONCE.lock().unwrap();
    if let Some(p) = done.as_ref() {
        return p.clone();
    }
    let venv = tfconv::tf_runtime::cache_dir().join("junit-xsd");
    let python = venv.join("bin").join("python");
    let stamp = venv.join("xmlschema-4.3.2");
    if !stamp.is_file() {
        let run = |cmd: &mut Command| assert!(cmd.status().expect("run python3").success(), "{cmd:?} failed");
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "xmlschema==4.3.2"]));
        std::fs::write(&stamp, "").unwrap();
    }
    *done = Some(python.clone());
    python
}

/// Validates `xml` against the vendored Ant JUnit schema and returns its test cases as
/// (suite, case, failure or error message).
fn validated_cases(xml: &Path) -> Vec<(String, String, Option<String>)> {
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/junit/JUnit.xsd");
    let script = r#"
import json, sys, xmlschema, xml.etree.ElementTree as ET
xmlschema.XMLSchema(sys.argv[1]).validate(sys.argv[2])
cases = []
for suite in ET.parse(sys.argv[2]).getroot().iter("testsuite"):
    for case in suite.iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        cases.append([suite.get("name"), case.get("name"), None if bad is None else bad.get("message")])
print(json.dumps(cases))
"#;
    let o = Command::new(xsd_python()).arg("-c").arg(script).arg(&xsd).arg(xml).output().unwrap();
    assert!(o.status.success(), "{} does not validate against JUnit.xsd:\n{}", xml.display(), stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn junit_validates_and_a_failing_verification_fails_the_first_diverging_stage() {
    require_tensorflow();
    let good = convert_golden("bert", "float32");
    let xml = good.report.with_extension("xml");
    let o = verify(&good, &[os("--junit"), xml.as_os_str()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let cases = validated_cases(&xml);
    let names: Vec<&str> = cases.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(names, ["structure", "embeddings", "layer.0", "layer.1", "layer.2", "pooler", "mlm", "nsp"]);
    assert!(cases.iter().all(|c| c.2.is_none()), "{cases:?}");

    let bad = damaged_bert();
    let xml = bad.report.with_extension("xml");
    let o = verify(&bad, &[os("--junit"), xml.as_os_str()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let cases = validated_cases(&xml);
    let failing: Vec<&(String, String, Option<String>)> = cases.iter().filter(|c| c.2.is_some()).collect();
    let first = failing.first().expect("a failing test case");
    assert_eq!(first.1, "layer.1", "{cases:?}");
    let message = first.2.as_deref().unwrap();
    assert!(message.starts_with("first divergence at 'layer.1': layer.1 isolated: max|Δ| "), "{message}");
    assert!(message.contains(" > allowed ") && message.contains("× the bound"), "{message}");
    let before: Vec<&str> = cases.iter().take_while(|c| c.1 != "layer.1").map(|c| c.1.as_str()).collect();
    assert_eq!(before, ["structure", "embeddings", "layer.0"]);
}

#[test]
fn the_html_report_charts_every_stage_and_marks_the_first_divergence() {
    require_tensorflow();
    let bad = damaged_bert();
    let html = bad.report.with_extension("html");
    let o = verify(&bad, &[os("--report"), bad.report.as_os_str(), os("--report-html"), html.as_os_str()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let page = std::fs::read_to_string(&html).unwrap();
    let report = read_json(&bad.report);
    let stages: Vec<&str> = report["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(stages.len(), 7);
    for kind in ["chained", "isolated"] {
        assert_eq!(page.matches(&format!("class=\"mark {kind} ")).count(), stages.len(), "{kind} marks");
        assert_eq!(page.matches(&format!("class=\"bound {kind}\"")).count(), stages.len(), "{kind} bounds");
        for st in &stages {
            assert!(page.contains(&format!("class=\"bound {kind}\" data-stage=\"{st}\"")), "{kind} bound of {st}");
        }
    }
    // The damaged stage's isolated mark is outside its bound; the stages before it are inside.
    assert!(page.contains("class=\"mark isolated fail\" data-stage=\"layer.1\""), "layer.1 isolated mark not failing");
    for st in ["embeddings", "layer.0"] {
        assert!(page.contains(&format!("class=\"mark isolated pass\" data-stage=\"{st}\"")), "{st}");
        assert!(page.contains(&format!("class=\"mark chained pass\" data-stage=\"{st}\"")), "{st}");
    }
    assert_eq!(page.matches("class=\"first-divergence\"").count(), 1);
    assert!(page.contains("<rect class=\"first-divergence\" data-stage=\"layer.1\""), "the first diverging stage is not marked");
    assert!(page.contains("<tr class=\"fail first-divergence\"><td>layer.1</td>"), "the table row is not marked");
    assert!(page.contains("FAIL: first divergence at &apos;layer.1&apos;"));
    // Self-contained: nothing is fetched.
    for fetch in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!page.contains(fetch), "the page contains {fetch:?}");
    }
    // The provenance is on the page.
    let weights_digest = sha256(&bad.folder.join("model.safetensors"));
    assert!(page.contains(&weights_digest), "the weights' SHA-256 is not on the page");
}

#[test]
fn a_manifest_of_five_golden_cases_and_one_broken_folder_fails_only_that_one() {
    require_tensorflow();
    let tmp = tempfile::tempdir().unwrap();
    let cases = ["bert", "albert", "gpt2", "xlnet", "t5-v1_1"];
    let mut manifest = String::new();
    for case in cases {
        let golden_case = tfconv_models::arch::golden_cases().into_iter().find(|c| c.dir == case).unwrap();
        let ckpt = golden(case).join(golden_case.checkpoint);
        let out = tmp.path().join(case);
        let o = tfconv(&[os("convert"), os("--tf-checkpoint"), ckpt.as_os_str(), os("--output"), out.as_os_str()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        manifest.push_str(&format!("[[model]]\nname = \"{case}\"\ncheckpoint = {:?}\nfolder = \"{case}\"\n\n", ckpt.display().to_string()));
    }
    let broken = damaged_bert();
    manifest.push_str(&format!("[[model]]\nname = \"broken\"\ncheckpoint = {:?}\nfolder = {:?}\n\n", broken.checkpoint.display().to_string(), broken.folder.display().to_string()));
    manifest.push_str("[[model]]\nname = \"typo\"\ncheckpoint = \"x\"\nfodler = \"y\"\n");
    let path = tmp.path().join("releases.toml");
    std::fs::write(&path, manifest).unwrap();
    let (report, xml) = (tmp.path().join("summary.json"), tmp.path().join("junit.xml"));
    let o = tfconv(&[os("verify"), os("--manifest"), path.as_os_str(), os("--report"), report.as_os_str(), os("--junit"), xml.as_os_str()]);
    let text = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let summary = read_json(&report);
    let entries = summary["entries"].as_array().unwrap();
    let results: Vec<(&str, &str)> = entries.iter().map(|e| (e["name"].as_str().unwrap(), e["result"].as_str().unwrap())).collect();
    assert_eq!(results.len(), 7, "{results:?}");
    for (i, case) in cases.iter().enumerate() {
        assert_eq!(results[i], (*case, "PASS"), "{text}");
        assert!(entries[i]["worst_rel_error"].as_f64().unwrap() < 1e-4);
    }
    assert_eq!(results[5], ("broken", "FAIL (first divergence at 'layer.1')"));
    assert!(results[6].0 == "typo" && results[6].1.starts_with("ERROR (model #7: ") && results[6].1.contains("fodler"), "{results:?}");
    // The table: one row per entry with model, class, worst relative error, result, seconds.
    let table_start = text.find("model  ").expect("a summary table");
    let table: Vec<&str> = text[table_start..].lines().collect();
    assert!(table[0].contains("class") && table[0].contains("worst rel err") && table[0].contains("seconds") && table[0].ends_with("result"), "{}", table[0]);
    assert!(table[1].starts_with("bert ") && table[1].contains("BertForPreTraining") && table[1].ends_with("PASS"), "{}", table[1]);
    assert!(table[6].starts_with("broken ") && table[6].contains("FAIL"), "{}", table[6]);
    assert_eq!(table[8], "5 of 7 passed");
    // JUnit: one suite per entry, valid, the broken one failing at layer.1, the typo an error.
    let cases_xml = validated_cases(&xml);
    let failing: Vec<(&str, &str)> = cases_xml.iter().filter(|c| c.2.is_some()).map(|c| (c.0.as_str(), c.1.as_str())).collect();
    assert_eq!(failing.first(), Some(&("broken", "layer.1")), "{failing:?}");
    assert_eq!(failing.last(), Some(&("typo", "setup")), "{failing:?}");
}

#[test]
fn the_report_says_whether_onednn_was_on_and_tensorflow_stays_quiet() {
    require_tensorflow();
    // Transformer-XL's graph has int32 kernels, for which oneDNN logs an error-level "falling
    // back to Eigen" line on first use, mid-run rather than at load.
    for (case, setting, expected) in [("bert", "0", false), ("bert", "1", true), ("transfo-xl", "1", true)] {
        let c = convert_golden(case, "float32");
        let o = Command::new(BIN)
            .args(["verify", "--hf-dir"])
            .arg(&c.folder)
            .arg("--tf-checkpoint")
            .arg(&c.checkpoint)
            .arg("--report")
            .arg(&c.report)
            .arg("--force")
            .env("TF_ENABLE_ONEDNN_OPTS", setting)
            .env_remove("TF_CPP_MIN_LOG_LEVEL")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(read_json(&c.report)["provenance"]["onednn"], expected, "TF_ENABLE_ONEDNN_OPTS={setting}");
        let said = if expected { "(oneDNN on)" } else { "(oneDNN off)" };
        assert!(stderr(&o).contains(&format!("against TensorFlow 2.21.0 {said} on ")), "{}", stderr(&o));
        for noise in ["oneDNN custom operations", "absl::InitializeLog", "cpu_feature_guard", "I0000", "W0000", "E0000", "Eigen-based"] {
            assert!(!stderr(&o).contains(noise), "{noise:?} reached stderr:\n{}", stderr(&o));
        }
    }
}

/// Runs tfconv with stderr on a pseudo-terminal (util-linux `script`); returns what it drew.
fn on_a_terminal(args: &[&str]) -> String {
    let command: Vec<String> = std::iter::once(BIN.to_string()).chain(args.iter().map(|a| format!("'{a}'"))).collect();
    let o = Command::new("script").args(["-qec", &command.join(" "), "/dev/null"]).output().expect("util-linux script");
    assert!(o.status.success(), "{}\n{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn progress_bars_only_on_a_terminal_and_never_under_quiet() {
    require_tensorflow();
    let c = convert_golden("bert", "float32");
    let (folder, ckpt) = (c.folder.to_str().unwrap(), c.checkpoint.to_str().unwrap());
    let verify = ["verify", "--hf-dir", folder, "--tf-checkpoint", ckpt];
    let drawn = on_a_terminal(&verify);
    assert!(drawn.contains("PASS"), "{drawn}");
    assert!(drawn.contains("verify ") && drawn.contains(" 1/7 "), "no stage bar on a terminal:\n{drawn}");
    let quiet = on_a_terminal(&[&["--quiet"][..], &verify].concat());
    assert!(quiet.contains("PASS") && !quiet.contains("/7 "), "a bar under --quiet:\n{quiet}");
    let piped = verify_output(&c);
    assert!(piped.contains("PASS") && !piped.contains("/7 ") && !piped.contains('\u{1b}'), "a bar when stderr is not a terminal:\n{piped}");
}

fn verify_output(c: &Converted) -> String {
    stderr(&verify(c, &[]))
}

#[test]
fn the_new_flags_keep_the_exit_code_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let ckpt = golden("bert/bert_model.ckpt");
    let folder = t.join("bert");
    let o = tfconv(&[os("convert"), os("--tf-checkpoint"), ckpt.as_os_str(), os("--output"), folder.as_os_str()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let old_report = t.join("old.json");
    std::fs::write(&old_report, br#"{"pass": true, "class": "BertForPreTraining"}"#).unwrap();
    let manifest = t.join("releases.toml");
    std::fs::write(&manifest, format!("[[model]]\ncheckpoint = {:?}\nfolder = \"bert\"\n", ckpt.display().to_string())).unwrap();
    let same = t.join("same.out");
    let verify_folder = [os("verify"), os("--hf-dir"), folder.as_os_str(), os("--tf-checkpoint"), ckpt.as_os_str()];
    let cases: Vec<(&str, Vec<&std::ffi::OsStr>, i32, String)> = vec![
        ("junit without --verify", vec![os("convert"), os("--tf-checkpoint"), ckpt.as_os_str(), os("--output"), t.join("x").into_os_string().leak(), os("--junit"), os("j.xml")], 2, "--junit writes the verification report, so it needs --verify".into()),
        ("html without --verify", vec![os("convert"), os("--tf-checkpoint"), ckpt.as_os_str(), os("--output"), t.join("x").into_os_string().leak(), os("--report-html"), os("r.html")], 2, "--report-html writes the verification report, so it needs --verify".into()),
        ("verify with nothing to verify", vec![os("verify")], 2, "--hf-dir".into()),
        ("attest a missing report", vec![os("verify"), os("--attest"), t.join("none.json").into_os_string().leak()], 9, t.join("none.json").display().to_string()),
        ("attest a report without provenance", vec![os("verify"), os("--attest"), old_report.as_os_str()], 3, "has no provenance".into()),
        ("attest and a folder", [&verify_folder[..], &[os("--attest"), old_report.as_os_str()]].concat(), 2, "--attest".into()),
        ("manifest and a folder", [&verify_folder[..], &[os("--manifest"), manifest.as_os_str()]].concat(), 2, "--manifest".into()),
        ("a missing manifest", vec![os("verify"), os("--manifest"), t.join("none.toml").into_os_string().leak()], 9, t.join("none.toml").display().to_string()),
        ("a report over the manifest", vec![os("verify"), os("--manifest"), manifest.as_os_str(), os("--report"), manifest.as_os_str(), os("--force")], 5, "this is an input of the command".into()),
        ("one file for two reports", [&verify_folder[..], &[os("--report"), same.as_os_str(), os("--junit"), same.as_os_str()]].concat(), 5, "would overlap the output".into()),
        ("html inside the verified folder", [&verify_folder[..], &[os("--report-html"), folder.join("config.json").into_os_string().leak(), os("--force")]].concat(), 5, "this is an input of the command".into()),
    ];
    let mut failures = Vec::new();
    for (what, args, code, says) in &cases {
        let o = tfconv(args);
        let err = stderr(&o);
        if o.status.code() != Some(*code) || !err.contains(says.as_str()) || err.contains("panicked") {
            failures.push(format!("{what}: exit {:?} (want {code}), stderr:\n{err}", o.status.code()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    assert!(!same.exists() && !t.join("x").exists());
    assert_eq!(std::fs::read_to_string(&manifest).unwrap().lines().count(), 3, "the manifest was not replaced");
}
