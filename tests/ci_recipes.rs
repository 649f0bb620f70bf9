//! The CI recipes in examples/ci/ run here, so they cannot rot: every shell line of the GitHub
//! workflow and of the GitLab job is executed in order (with their variables), in a project
//! folder holding a releases.toml of converted golden checkpoints. Only the install line is
//! replaced: the binary under test is put on PATH (the wheel that `pip install tfconv` installs
//! is built and tried by `cargo xtask test`). The gate must pass, write its reports, and block
//! once a folder is damaged.
//!
//! Needs TensorFlow: a missing runtime makes these FAIL, never skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::mutation::require_tensorflow;
use common::{golden, stderr};

const INSTALL: &str = "python -m pip install tfconv";

fn recipe(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci").join(name)).unwrap()
}

/// The `run:` commands of a GitHub Actions workflow, in order (the recipe uses one-line runs).
fn github_steps(yaml: &str) -> Vec<String> {
    yaml.lines().filter_map(|l| l.trim_start().strip_prefix("run: ")).map(str::to_string).collect()
}

/// The `script:` lines and `variables:` of a GitLab CI job.
fn gitlab_job(yaml: &str) -> (Vec<String>, Vec<(String, String)>) {
    let (mut script, mut variables) = (Vec::new(), Vec::new());
    let mut section = "";
    for line in yaml.lines().filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty()) {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if indent == 2 {
            section = text.trim_end_matches(':');
            continue;
        }
        match section {
            "script" => script.push(text.strip_prefix("- ").expect("a script list item").to_string()),
            "variables" => {
                let (k, v) = text.split_once(": ").expect("KEY: value");
                variables.push((k.to_string(), v.trim_matches('"').to_string()));
            }
            _ => {}
        }
    }
    (script, variables)
}

/// A project folder with golden/bert and golden/gpt2 converted under release/ and a manifest.
fn project() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut manifest = String::new();
    for case in ["bert", "gpt2"] {
        let golden_case = tfconv_models::arch::golden_cases().into_iter().find(|c| c.dir == case).unwrap();
        let ckpt = golden(case).join(golden_case.checkpoint);
        let out = tmp.path().join("release").join(case);
        let o = Command::new(env!("CARGO_BIN_EXE_tfconv")).arg("convert").arg("--tf-checkpoint").arg(&ckpt).arg("--output").arg(&out).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        manifest.push_str(&format!("[[model]]\nname = \"{case}\"\ncheckpoint = {:?}\nfolder = \"release/{case}\"\n\n", ckpt.display().to_string()));
    }
    std::fs::write(tmp.path().join("releases.toml"), manifest).unwrap();
    tmp
}

/// A folder holding only a `tfconv` link to the binary under test, for PATH.
fn bin_dir(tmp: &Path) -> PathBuf {
    let dir = tmp.join(".bin");
    std::fs::create_dir_all(&dir).unwrap();
    let _ = std::fs::remove_file(dir.join("tfconv"));
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tfconv"), dir.join("tfconv")).unwrap();
    dir
}

/// Runs each line as the CI runner would (bash, stop on error); returns each exit code.
fn run_steps(dir: &Path, steps: &[String], env: &[(String, String)], remove: &[&str]) -> Vec<(String, i32, String)> {
    let path = format!("{}:{}", bin_dir(dir).display(), std::env::var("PATH").unwrap_or_default());
    let mut results = Vec::new();
    for step in steps {
        if step == INSTALL {
            continue;
        }
        let mut cmd = Command::new("bash");
        cmd.args(["-eo", "pipefail", "-c", step]).current_dir(dir).env("PATH", &path).envs(env.iter().map(|(k, v)| (k, v)));
        for key in remove {
            cmd.env_remove(key);
        }
        let o = cmd.output().unwrap();
        let code = o.status.code().unwrap_or(-1);
        let failed = code != 0;
        results.push((step.clone(), code, stderr(&o)));
        if failed {
            break;
        }
    }
    results
}

/// The gate passed and left its reports; then a damaged folder makes the same steps fail.
fn check_gate(dir: &Path, steps: &[String], env: &[(String, String)], remove: &[&str]) {
    let results = run_steps(dir, steps, env, remove);
    for (step, code, err) in &results {
        assert_eq!(*code, 0, "`{step}` failed:\n{err}");
    }
    assert_eq!(results.len(), steps.len() - 1, "every step but the install ran");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("gate-report.json")).unwrap()).unwrap();
    assert_eq!(report["pass"], true);
    let results_by_model: Vec<(&str, &str)> =
        report["entries"].as_array().unwrap().iter().map(|e| (e["name"].as_str().unwrap(), e["result"].as_str().unwrap())).collect();
    assert_eq!(results_by_model, [("bert", "PASS"), ("gpt2", "PASS")]);
    let junit = std::fs::read_to_string(dir.join("gate-junit.xml")).unwrap();
    assert_eq!(junit.matches("<testsuite ").count(), 2);

    // A release whose weights changed after conversion: the gate must stop the pipeline.
    let weights = dir.join("release/gpt2/model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (start, len) = {
        let v = st.tensor("transformer.h.0.ln_1.weight").unwrap();
        (v.data().as_ptr() as usize - bytes.as_ptr() as usize, v.data().len())
    };
    let mut damaged = bytes.clone();
    for b in damaged[start..start + len].chunks_exact_mut(4) {
        let v = f32::from_le_bytes(b.try_into().unwrap()) * 1.5;
        b.copy_from_slice(&v.to_le_bytes());
    }
    std::fs::write(&weights, &damaged).unwrap();
    // A fresh job: the earlier run's reports are not in a new checkout.
    for report in ["gate-report.json", "gate-junit.xml"] {
        std::fs::remove_file(dir.join(report)).unwrap();
    }
    let results = run_steps(dir, steps, env, remove);
    let (step, code, err) = results.last().unwrap();
    assert!(step.contains("--manifest") && *code == 1, "the gate did not block a damaged release: `{step}` exited {code}:\n{err}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("gate-report.json")).unwrap()).unwrap();
    assert_eq!(report["entries"][1]["result"], "FAIL (first divergence at 'layer.0')", "{err}");
    std::fs::write(&weights, &bytes).unwrap();
}

#[test]
fn the_github_actions_workflow_gates_the_golden_releases() {
    require_tensorflow();
    let steps = github_steps(&recipe("github-actions.yml"));
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0], INSTALL);
    let yaml = recipe("github-actions.yml");
    assert!(yaml.contains("path: ~/.cache/tfconv"), "the workflow must cache tfconv's runtime directory");
    let dir = project();
    check_gate(dir.path(), &steps, &[], &[]);
}

#[test]
fn the_gitlab_job_gates_the_golden_releases_from_its_cache() {
    require_tensorflow();
    let (script, variables) = gitlab_job(&recipe("gitlab-ci.yml"));
    assert_eq!(script.len(), 3, "{script:?}");
    assert_eq!(script[0], INSTALL);
    let dir = project();
    // The job's cache, restored: .cache/tfconv in the project holds the installed runtime.
    std::fs::create_dir_all(dir.path().join(".cache")).unwrap();
    std::os::unix::fs::symlink(tfconv::tf_runtime::cache_dir(), dir.path().join(".cache/tfconv")).unwrap();
    let project_dir = dir.path().display().to_string();
    let env: Vec<(String, String)> = variables.iter().map(|(k, v)| (k.clone(), v.replace("$CI_PROJECT_DIR", &project_dir))).collect();
    assert_eq!(env, [("XDG_CACHE_HOME".to_string(), format!("{project_dir}/.cache"))]);
    let yaml = recipe("gitlab-ci.yml");
    assert!(yaml.contains("- .cache/tfconv"), "the job must cache the folder tfconv uses under XDG_CACHE_HOME");
    check_gate(dir.path(), &script, &env, &["TFCONV_CACHE"]);
}
