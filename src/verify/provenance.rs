//! What a report attests: the exact bytes (SHA-256) of every file the verification read and
//! every file of the folder it judged, and the versions and choices that produced its numbers.
//! `tfconv verify --attest REPORT` re-hashes the files and names any that changed since.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Tolerance;
use crate::error::{Error, Result};

/// One file and its digest. `role`: "checkpoint", "config", "vocabulary" or "output".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDigest {
    pub path: PathBuf,
    pub role: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The provenance block of a JSON report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provenance {
    pub tfconv_version: String,
    pub tensorflow_version: String,
    /// Whether TensorFlow ran with its oneDNN kernels, which round floats differently from the
    /// plain Eigen ones; None when it could not be told.
    pub onednn: Option<bool>,
    pub probe_seed: u64,
    pub tolerance: Tolerance,
    pub isolated_tolerance: Tolerance,
    /// The original checkpoint's files, the original config and the vocabulary files.
    pub inputs: Vec<FileDigest>,
    /// Every file of the judged folder (except inputs that live in it).
    pub outputs: Vec<FileDigest>,
}

/// SHA-256 of a file as lower-case hex, streamed (a shard can be many GB), and its size.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()))
}

/// Digests of `files` (absolute paths, each once, in the order given) under `role`.
pub fn digests<'a>(files: impl IntoIterator<Item = &'a Path>, role: &str) -> Result<Vec<FileDigest>> {
    let mut out: Vec<FileDigest> = Vec::new();
    for file in files {
        let path = std::path::absolute(file).map_err(|e| Error::io(file, e))?;
        if out.iter().any(|d| d.path == path) {
            continue;
        }
        let (bytes, sha256) = sha256_file(&path)?;
        out.push(FileDigest { path, role: role.to_string(), bytes, sha256 });
    }
    Ok(out)
}

/// Every regular, non-hidden file directly in `folder`, sorted (hidden names are tfconv's and
/// other tools' temporary files, which are not part of what is published).
pub fn folder_files(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(|e| Error::io(folder, e))? {
        let entry = entry.map_err(|e| Error::io(folder, e))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.file_type().map_err(|e| Error::io(entry.path(), e))?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The input digests by role, then every file of `folder` that is not an input.
pub fn collect(inputs: &[(&str, Vec<PathBuf>)], folder: &Path) -> Result<(Vec<FileDigest>, Vec<FileDigest>)> {
    let mut input_digests: Vec<FileDigest> = Vec::new();
    for (role, files) in inputs {
        for d in digests(files.iter().map(PathBuf::as_path), role)? {
            if !input_digests.iter().any(|i| i.path == d.path) {
                input_digests.push(d);
            }
        }
    }
    let outputs: Vec<PathBuf> = folder_files(folder)?
        .into_iter()
        .filter(|f| std::path::absolute(f).map(|p| !input_digests.iter().any(|i| i.path == p)).unwrap_or(true))
        .collect();
    let output_digests = digests(outputs.iter().map(PathBuf::as_path), "output")?;
    Ok((input_digests, output_digests))
}

/// A file whose bytes are no longer those the report recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Changed {
    pub path: PathBuf,
    pub role: String,
    pub why: String,
}

/// What `--attest` found.
#[derive(Debug)]
pub struct Attestation {
    pub files: usize,
    pub changed: Vec<Changed>,
    /// The report's own verdict.
    pub pass: bool,
    pub class: String,
}

/// Re-hashes every file the report at `report_path` recorded.
pub fn attest(report_path: &Path) -> Result<Attestation> {
    let text = std::fs::read(report_path).map_err(|e| Error::io(report_path, e))?;
    let report: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::input(report_path, format!("not a JSON report: {e}")))?;
    let provenance = report.get("provenance").filter(|p| p.is_object()).ok_or_else(|| {
        Error::input(report_path, "the report has no provenance (it was written by a tfconv without file digests); verify again with --report")
    })?;
    let mut files = Vec::new();
    for key in ["inputs", "outputs"] {
        let list = provenance.get(key).cloned().unwrap_or(serde_json::Value::Null);
        let list: Vec<FileDigest> = serde_json::from_value(list)
            .map_err(|e| Error::input(report_path, format!("provenance.{key} is not a list of file digests: {e}")))?;
        files.extend(list);
    }
    if files.is_empty() {
        return Err(Error::input(report_path, "the report's provenance lists no files"));
    }
    let mut changed = Vec::new();
    for f in &files {
        let why = match sha256_file(&f.path) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Some("missing".to_string()),
            Err(e) => Some(format!("unreadable: {e}")),
            Ok((bytes, _)) if bytes != f.bytes => Some(format!("{bytes} bytes, the report recorded {}", f.bytes)),
            Ok((_, sha)) if sha != f.sha256 => Some(format!("SHA-256 {sha}, the report recorded {}", f.sha256)),
            Ok(_) => None,
        };
        if let Some(why) = why {
            changed.push(Changed { path: f.path.clone(), role: f.role.clone(), why });
        }
    }
    Ok(Attestation {
        files: files.len(),
        changed,
        pass: report.get("pass").and_then(|p| p.as_bool()).unwrap_or(false),
        class: report.get("class").and_then(|c| c.as_str()).unwrap_or("?").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_sha256_of_the_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("abc");
        std::fs::write(&f, b"abc").unwrap();
        // FIPS 180-2's test vector for "abc".
        assert_eq!(sha256_file(&f).unwrap(), (3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string()));
    }

    #[test]
    fn attest_names_changed_and_missing_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
        for (p, bytes) in [(&a, &b"one"[..]), (&b, b"two"), (&c, b"three")] {
            std::fs::write(p, bytes).unwrap();
        }
        let inputs = digests([a.as_path()], "checkpoint").unwrap();
        let outputs = digests([b.as_path(), c.as_path()], "output").unwrap();
        let report = tmp.path().join("report.json");
        let json = serde_json::json!({"pass": true, "class": "X", "provenance": {"inputs": inputs, "outputs": outputs}});
        std::fs::write(&report, json.to_string()).unwrap();
        let ok = attest(&report).unwrap();
        assert_eq!((ok.files, ok.changed.len(), ok.pass), (3, 0, true));
        std::fs::write(&b, b"twO").unwrap();
        std::fs::remove_file(&c).unwrap();
        let bad = attest(&report).unwrap();
        let named: Vec<(&Path, &str)> = bad.changed.iter().map(|c| (c.path.as_path(), c.why.as_str())).collect();
        assert_eq!(named.len(), 2, "{named:?}");
        assert_eq!(named[0].0, b.as_path());
        assert!(named[0].1.starts_with("SHA-256 "), "{named:?}");
        assert_eq!(named[1], (c.as_path(), "missing"));
        std::fs::write(&report, br#"{"pass": true}"#).unwrap();
        assert!(attest(&report).unwrap_err().to_string().contains("no provenance"));
    }
}
