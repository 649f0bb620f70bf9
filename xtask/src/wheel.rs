//! `pip install tfconv`, checked: the wheel maturin builds (binary packaging: the wheel holds the
//! `tfconv` executable and nothing else) is installed into a fresh virtual environment, and the
//! `tfconv` it puts on PATH converts and verifies a golden checkpoint.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Result};

use crate::run;

const MATURIN: &str = "maturin==1.16.0";

/// maturin in its own virtual environment under tfconv's cache, installed once.
fn maturin() -> Result<PathBuf> {
    let venv = tfconv::tf_runtime::cache_dir().join("maturin");
    let stamp = venv.join("tfconv-installed.txt");
    let bin = venv.join("bin");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == MATURIN) {
        return Ok(bin.join("maturin"));
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(bin.join("python")).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", MATURIN]))?;
    std::fs::write(&stamp, MATURIN)?;
    Ok(bin.join("maturin"))
}

/// Builds the wheel with the dev profile (CI's test build already compiled it, so this mostly
/// packages) and returns its path.
pub fn build(root: &Path, out: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(out);
    run(Command::new(maturin()?)
        .args(["build", "--quiet", "--profile", "dev", "--compatibility", "linux", "--manifest-path"])
        .arg(root.join("Cargo.toml"))
        .arg("--out")
        .arg(out))?;
    let wheels: Vec<PathBuf> = std::fs::read_dir(out)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "whl")).collect();
    match wheels.as_slice() {
        [one] => Ok(one.clone()),
        other => bail!("expected one wheel in {}, found {other:?}", out.display()),
    }
}

/// The whole check, in `target/wheel-check`.
pub fn check(root: &Path) -> Result<()> {
    let work = root.join("target").join("wheel-check");
    let wheel = build(root, &work.join("dist"))?;
    let venv = work.join("venv");
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin").join("python"))
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index", "--no-deps"])
        .arg(&wheel))?;
    let tfconv = venv.join("bin").join("tfconv");
    if !tfconv.is_file() {
        bail!("the wheel {} put no tfconv in {}", wheel.display(), venv.join("bin").display());
    }
    let version = Command::new(&tfconv).arg("--version").output()?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if version != format!("tfconv {}", env!("CARGO_PKG_VERSION")) {
        bail!("{} --version says {version:?}", tfconv.display());
    }
    let out = work.join("bert");
    let report = work.join("bert.report.json");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(&report);
    // Run from the venv's PATH, as a user who activated it would.
    let path = format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    run(Command::new("tfconv")
        .env("PATH", &path)
        .args(["convert", "--verify", "--tf-checkpoint"])
        .arg(root.join("golden/bert/bert_model.ckpt"))
        .arg("--output")
        .arg(&out)
        .arg("--report")
        .arg(&report))?;
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
    if json["pass"] != true {
        return Err(anyhow!("the wheel's tfconv did not pass golden/bert: {}", report.display()));
    }
    println!("wheel {} installs {version} and converts and verifies golden/bert", wheel.file_name().unwrap_or_default().to_string_lossy());
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
