//! `tfconv verify --manifest releases.toml`: verifies every release a manifest lists, each as
//! its own `tfconv verify` process (a broken entry cannot take the others down, and each
//! reports exactly what the single command would), then prints one summary table.
//!
//! ```toml
//! [[model]]
//! name = "bert-base"                       # optional; default: the folder's name
//! checkpoint = "ckpt/bert_model.ckpt"      # as --tf-checkpoint
//! config = "ckpt/bert_config.json"         # optional, as --config
//! folder = "release/bert-base"             # as --hf-dir
//! flags = ["--hidden-act", "gelu_new"]     # optional, any other `tfconv verify` flags
//! ```
//! Relative paths are taken from the manifest's own folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Option<String>,
    checkpoint: PathBuf,
    config: Option<PathBuf>,
    folder: PathBuf,
    #[serde(default)]
    flags: Vec<String>,
}

/// One entry's outcome.
#[derive(Debug)]
pub struct Row {
    pub name: String,
    pub class: String,
    pub worst_rel_error: Option<f64>,
    /// "PASS", "FAIL (…)" or "ERROR (…)".
    pub result: String,
    pub seconds: f64,
    /// The process's exit code (0 pass, 1 mismatch, others an error), or None for an entry
    /// that could not be run at all.
    pub code: Option<i32>,
    /// The entry's JSON report, when it produced one.
    pub report: Option<serde_json::Value>,
    /// What kept the entry from producing a report.
    pub error: Option<String>,
}

impl Row {
    pub fn passed(&self) -> bool {
        self.code == Some(0)
    }
}

/// The entries of a manifest, each parsed on its own: a bad entry is an error naming it.
fn entries(path: &Path) -> Result<Vec<(String, std::result::Result<Entry, String>)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::input(path, format!("not a valid TOML manifest: {}", e.message())))?;
    if let Some(other) = table.keys().find(|k| *k != "model") {
        return Err(Error::input(path, format!("unknown key '{other}' (a manifest is a list of [[model]] entries)")));
    }
    let Some(toml::Value::Array(models)) = table.get("model") else {
        return Err(Error::input(path, "no [[model]] entries"));
    };
    Ok(models
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let fallback = format!("model #{}", i + 1);
            let label = value.get("name").and_then(|n| n.as_str()).map(str::to_string).unwrap_or(fallback.clone());
            let entry = Entry::deserialize(value.clone()).map_err(|e| format!("{}: {}", fallback, e.message().trim()));
            (label, entry)
        })
        .collect())
}

/// The folders and files the manifest's entries read (checkpoint folders, configs, release
/// folders), which the batch's own reports must never land on.
pub fn read_paths(path: &Path) -> Result<Vec<PathBuf>> {
    let base = base_dir(path);
    let at = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    let mut out = Vec::new();
    for entry in entries(path)?.into_iter().filter_map(|(_, e)| e.ok()) {
        out.push(crate::convert::checkpoint_dir(&at(&entry.checkpoint)));
        out.extend(entry.config.map(|c| at(&c)));
        out.push(at(&entry.folder));
    }
    Ok(out)
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
}

/// Runs one entry as `tfconv verify`, with its JSON report in `scratch`.
fn run_entry(exe: &Path, base: &Path, entry: &Entry, scratch: &Path, index: usize) -> (Option<i32>, Option<serde_json::Value>, String) {
    let at = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    let report = scratch.join(format!("entry-{index}.json"));
    let mut cmd = Command::new(exe);
    cmd.arg("verify").arg("--hf-dir").arg(at(&entry.folder)).arg("--tf-checkpoint").arg(at(&entry.checkpoint));
    if let Some(config) = &entry.config {
        cmd.arg("--config").arg(at(config));
    }
    cmd.args(&entry.flags).arg("--report").arg(&report).current_dir(base);
    match cmd.output() {
        Err(e) => (None, None, format!("could not run {}: {e}", exe.display())),
        Ok(out) => {
            let report = std::fs::read(&report).ok().and_then(|b| serde_json::from_slice(&b).ok());
            (out.status.code(), report, String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// Verifies every entry of the manifest at `path`, printing each one's output as it finishes.
pub fn run(path: &Path, quiet: bool) -> Result<Vec<Row>> {
    let base = base_dir(path);
    let list = entries(path)?;
    let exe = std::env::current_exe().map_err(|e| Error::write("tfconv", e))?;
    let scratch = tempfile_dir()?;
    let mut rows = Vec::new();
    for (i, (label, entry)) in list.into_iter().enumerate() {
        let started = Instant::now();
        let entry = match entry {
            Ok(entry) => entry,
            Err(why) => {
                eprintln!("== {label}: bad entry in {}: {why}", path.display());
                rows.push(Row { name: label, class: "-".into(), worst_rel_error: None, result: format!("ERROR ({why})"), seconds: 0.0, code: None, report: None, error: Some(why) });
                continue;
            }
        };
        let name = entry.name.clone().unwrap_or_else(|| entry.folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or(label));
        let (code, report, stderr) = run_entry(&exe, &base, &entry, scratch.path(), i);
        let seconds = started.elapsed().as_secs_f64();
        if !quiet || code != Some(0) {
            eprintln!("== {name}");
            eprint!("{stderr}");
        }
        let class = report.as_ref().and_then(|r| r["class"].as_str()).unwrap_or("-").to_string();
        let worst_rel_error = report.as_ref().and_then(|r| r["outputs"].as_array()).map(|o| o.iter().filter_map(|o| o["max_rel_error"].as_f64()).fold(0.0, f64::max));
        let last_error = stderr.lines().rev().find(|l| l.starts_with("error: ")).map(|l| l.trim_start_matches("error: ").to_string());
        let (result, error) = match (code, report.as_ref()) {
            (Some(0), Some(_)) => ("PASS".to_string(), None),
            (Some(1), Some(r)) => {
                let first = r["first_divergence"].as_str().unwrap_or("?");
                (format!("FAIL (first divergence at '{first}')"), None)
            }
            (code, _) => {
                let why = last_error.unwrap_or_else(|| match code {
                    Some(c) => format!("tfconv verify exited with {c}"),
                    None => "tfconv verify was killed by a signal".into(),
                });
                (format!("ERROR ({why})"), Some(why))
            }
        };
        rows.push(Row { name, class, worst_rel_error, result, seconds, code, report, error });
    }
    Ok(rows)
}

/// A private scratch folder for the entries' reports, removed when dropped.
fn tempfile_dir() -> Result<ScratchDir> {
    let dir = std::env::temp_dir().join(format!("tfconv-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::write(&dir, e))?;
    Ok(ScratchDir(dir))
}

struct ScratchDir(PathBuf);

impl ScratchDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The summary table.
pub fn render(rows: &[Row]) -> String {
    use std::fmt::Write;
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    let c = rows.iter().map(|r| r.class.len()).max().unwrap_or(5).max(5);
    let mut s = String::new();
    let _ = writeln!(s, "{:<w$}  {:<c$}  {:>14}  {:>8}  result", "model", "class", "worst rel err", "seconds");
    for r in rows {
        let rel = r.worst_rel_error.map(|e| format!("{e:.2e}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "{:<w$}  {:<c$}  {rel:>14}  {:>8.1}  {}", r.name, r.class, r.seconds, r.result);
    }
    let passed = rows.iter().filter(|r| r.passed()).count();
    let _ = writeln!(s, "{passed} of {} passed", rows.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_entry_is_parsed_on_its_own_and_named_when_bad() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("releases.toml");
        std::fs::write(
            &path,
            r#"
[[model]]
name = "good"
checkpoint = "a/model.ckpt"
folder = "out/a"

[[model]]
name = "typo"
checkpoint = "b/model.ckpt"
fodler = "out/b"

[[model]]
folder = "out/c"
"#,
        )
        .unwrap();
        let list = entries(&path).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].0, "good");
        assert!(list[0].1.as_ref().is_ok_and(|e| e.folder == Path::new("out/a") && e.flags.is_empty()));
        let typo = list[1].1.as_ref().unwrap_err();
        assert!(typo.starts_with("model #2: ") && typo.contains("fodler"), "{typo}");
        let missing = list[2].1.as_ref().unwrap_err();
        assert!(missing.starts_with("model #3: ") && missing.contains("checkpoint"), "{missing}");
        std::fs::write(&path, "[[model]\n").unwrap();
        assert!(entries(&path).unwrap_err().to_string().contains("not a valid TOML manifest"));
    }
}
