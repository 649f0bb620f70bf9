//! Turns what the user typed into a checkpoint location (docs/checkpoint-formats.md §3):
//! a V2 bundle prefix, a V1 checkpoint file, an OpenAI GPT numpy folder (§4), or a
//! `torch.save` file (§5, §8).
//!
//! Accepted: the prefix itself; any of `<prefix>.index`, `<prefix>.data-SSSSS-of-NNNNN`,
//! `<prefix>.meta`; a V1 file; a directory with a `checkpoint` state file (text proto; relative
//! paths are joined to the directory, an absolute path that does not exist is retried as its
//! base name inside the directory); the `checkpoint` file itself; a directory holding exactly
//! one checkpoint. A folder holding `params_shapes.json` is the OpenAI GPT numpy layout, named by
//! the folder, its `params_shapes.json` or any `params_N.npy`. A file is a `torch.save` file
//! (XLM `.pth`) by its content: a zip archive with a `<name>/data.pkl` member, or the legacy
//! magic number. Failures are [`Error::Resolve`] and say what was looked for and what was found.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, InputFault, Result};
use crate::source::names;
use crate::source::bundle::with_suffix;
use crate::source::numpy::{self, SHAPES_FILE};
use crate::source::pth::{self, Sniff};
use crate::source::sstable::{FOOTER_LEN, MAGIC};
use crate::source::tf_v1::parse_shard_suffix;

/// Name of TF's checkpoint state file.
pub const STATE_FILE: &str = "checkpoint";
/// Largest `checkpoint` state file we read.
const MAX_STATE_FILE: u64 = 1 << 20;
/// Directory entries examined when scanning for checkpoints.
const MAX_DIR_ENTRIES: usize = 100_000;

/// Where a checkpoint is and which format it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// V2 tensor bundle: `<prefix>.index` + `<prefix>.data-*`.
    BundleV2 { prefix: PathBuf },
    /// V1 tensor-slice checkpoint file (the first shard if sharded).
    TensorSliceV1 { file: PathBuf },
    /// OpenAI GPT numpy folder: `params_shapes.json` + `params_0.npy …`.
    NumpyShards { dir: PathBuf },
    /// A `torch.save` file, zip or legacy (XLM `.pth`).
    TorchPickle { file: PathBuf },
}

impl Resolved {
    /// The prefix (V2), file (V1, torch) or folder (numpy shards).
    pub fn path(&self) -> &Path {
        match self {
            Resolved::BundleV2 { prefix } => prefix,
            Resolved::TensorSliceV1 { file } | Resolved::TorchPickle { file } => file,
            Resolved::NumpyShards { dir } => dir,
        }
    }

    /// Same names as [`crate::source::Checkpoint::format`].
    pub fn format(&self) -> &'static str {
        match self {
            Resolved::BundleV2 { .. } => "tf-bundle-v2",
            Resolved::TensorSliceV1 { .. } => "tf-checkpoint-v1",
            Resolved::NumpyShards { .. } => numpy::FORMAT,
            Resolved::TorchPickle { .. } => pth::FORMAT,
        }
    }

    fn describe(&self) -> String {
        match self {
            Resolved::BundleV2 { prefix } => format!("{} (V2 bundle prefix)", prefix.display()),
            Resolved::TensorSliceV1 { file } => format!("{} (V1 checkpoint file)", file.display()),
            Resolved::NumpyShards { dir } => format!("{} (OpenAI GPT numpy shards)", dir.display()),
            Resolved::TorchPickle { file } => format!("{} (torch.save file)", file.display()),
        }
    }
}

fn err(fault: InputFault, msg: String) -> Error {
    Error::resolve(fault, msg)
}

/// Whether `path` is a file ending with the SSTable magic (a V1 checkpoint or an index).
pub fn has_sstable_magic(path: &Path) -> bool {
    // Regular files only: opening a FIFO for reading blocks until someone writes to it.
    if !path.is_file() {
        return false;
    }
    let Ok(mut f) = File::open(path) else { return false };
    let Ok(len) = f.metadata().map(|m| m.len()) else { return false };
    if len < FOOTER_LEN as u64 || f.seek(SeekFrom::End(-8)).is_err() {
        return false;
    }
    let mut buf = [0u8; 8];
    f.read_exact(&mut buf).is_ok() && buf == MAGIC.to_le_bytes()
}

/// `<prefix>` if `name` ends with `.data-SSSSS-of-NNNNN`.
fn strip_data_suffix(name: &OsStr) -> Option<&OsStr> {
    let (prefix, tail) = names::rsplit_once(name, ".data-")?;
    let (a, b) = tail.split_once("-of-")?;
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit());
    (digits(a) && digits(b)).then_some(prefix)
}

fn is_bookkeeping_name(name: &OsStr) -> bool {
    names::ends_with(name, ".index")
        || names::ends_with(name, ".meta")
        || strip_data_suffix(name).is_some()
        || name == STATE_FILE
}

/// Resolves a user-given path to a checkpoint.
pub fn resolve(path: &Path) -> Result<Resolved> {
    // (a) a V2 prefix
    if with_suffix(path, ".index").is_file() {
        return Ok(Resolved::BundleV2 { prefix: path.to_path_buf() });
    }
    if path.is_dir() {
        return resolve_dir(path);
    }
    let name = names::file_name(path);
    if path.is_file() {
        // (c) one of the bundle's own files
        if let Some(prefix) = names::strip_suffix(name, ".index") {
            return Ok(Resolved::BundleV2 { prefix: path.with_file_name(prefix) });
        }
        if let Some(prefix) = strip_data_suffix(name) {
            let prefix = path.with_file_name(prefix);
            let index = with_suffix(&prefix, ".index");
            if index.is_file() {
                return Ok(Resolved::BundleV2 { prefix });
            }
            return Err(err(InputFault::Missing, format!(
                "{} is a checkpoint data file, but its index {} is missing; the .index file is needed to read it",
                path.display(),
                index.display()
            )));
        }
        if let Some(prefix) = names::strip_suffix(name, ".meta") {
            let prefix = path.with_file_name(prefix);
            if with_suffix(&prefix, ".index").is_file() {
                return Ok(Resolved::BundleV2 { prefix });
            }
            if has_sstable_magic(&prefix) {
                return Ok(Resolved::TensorSliceV1 { file: prefix });
            }
            return Err(err(InputFault::Missing, format!(
                "{} is a graph (.meta) file, but neither {}.index (V2) nor {} (V1) exists next to it",
                path.display(),
                prefix.display(),
                prefix.display()
            )));
        }
        if name == SHAPES_FILE || name.to_str().and_then(numpy::parse_shard_name).is_some() {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if dir.join(SHAPES_FILE).is_file() {
                return Ok(Resolved::NumpyShards { dir: dir.to_path_buf() });
            }
            return Err(err(InputFault::Missing, format!(
                "{} looks like an OpenAI GPT numpy shard, but {} is missing next to it",
                path.display(),
                dir.join(SHAPES_FILE).display()
            )));
        }
        // (b) a V1 file
        if has_sstable_magic(path) {
            return Ok(Resolved::TensorSliceV1 { file: path.to_path_buf() });
        }
        match pth::sniff(path) {
            Sniff::Zip | Sniff::Legacy => return Ok(Resolved::TorchPickle { file: path.to_path_buf() }),
            Sniff::ZipWithoutPickle => {
                return Err(err(InputFault::Unsupported, format!(
                    "{} is a zip archive without a <name>/data.pkl member, so not a torch.save file",
                    path.display()
                )))
            }
            Sniff::NotTorch if names::ends_with(name, ".pth") => {
                return Err(err(InputFault::Unsupported, format!(
                    "{} is named .pth but is not a torch.save file: neither a zip archive nor the legacy format's \
                     magic number",
                    path.display()
                )))
            }
            Sniff::NotTorch => {}
        }
        if name == STATE_FILE {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            return resolve_dir(dir);
        }
        return Err(err(InputFault::Unsupported, format!(
            "{} is not a TensorFlow checkpoint: it is not a .index/.data/.meta file of a V2 checkpoint, there is no {}.index, \
             and it has no SSTable magic (so it is not a V1 checkpoint)",
            path.display(),
            path.display()
        )));
    }
    if let Some((fault, what)) = not_a_file(path) {
        return Err(err(fault, format!("{}: {what}", path.display())));
    }
    // Nothing at `path`: a sharded V1 pattern, or a typo.
    if let Some(r) = v1_pattern(path) {
        return Ok(r);
    }
    let mut msg = format!(
        "no checkpoint at {}: neither {}.index (V2 checkpoint) nor {} (V1 checkpoint or directory) exists",
        path.display(),
        path.display(),
        path.display()
    );
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let name = name.as_encoded_bytes();
        let similar: Vec<String> = list_dir(dir)
            .into_iter()
            .filter(|n| {
                let n = n.as_encoded_bytes();
                !name.is_empty() && n != name && (n.starts_with(name) || name.starts_with(n))
            })
            .take(10)
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        if !similar.is_empty() {
            msg.push_str(&format!("; similar names in {}: {}", dir.display(), similar.join(", ")));
        } else if !dir.is_dir() {
            msg.push_str(&format!("; the directory {} does not exist", dir.display()));
        }
    }
    Err(err(InputFault::Missing, msg))
}

/// What is at `path` when it is neither a regular file nor a directory (after following
/// symbolic links), so the error says that instead of "does not exist". `None` when nothing is
/// there at all. Only metadata is read: opening a FIFO would block.
fn not_a_file(path: &Path) -> Option<(InputFault, String)> {
    let link = std::fs::symlink_metadata(path);
    if let Err(e) = &link {
        // "x/y" where x is a file is as absent as a typo; other failures (permissions) are not.
        let absent = matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory);
        return (!absent).then(|| (InputFault::Unreadable, format!("cannot be examined: {e}")));
    }
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => {
            let target = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
            return Some(match e.kind() {
                std::io::ErrorKind::NotFound => {
                    (InputFault::Missing, format!("a symbolic link to {target}, which does not exist"))
                }
                _ => (InputFault::Unreadable, format!("a symbolic link to {target}, which cannot be followed: {e}")),
            });
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            return Some((InputFault::Unreadable, "is a FIFO, not a checkpoint file".into()));
        }
        let kind = if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "an unknown kind of file"
        };
        Some((InputFault::Unreadable, format!("not a regular file or directory ({kind})")))
    }
    #[cfg(not(unix))]
    Some((InputFault::Unreadable, format!("not a regular file or directory ({:?})", meta.file_type())))
}

/// `prefix-?????-of-NNNNN` as written in `checkpoint` files by TF's sharded V1 saver.
fn v1_pattern(path: &Path) -> Option<Resolved> {
    let first = path.with_file_name(names::replace_once(names::file_name(path), "-?????-of-", "-00000-of-")?);
    (parse_shard_suffix(names::file_name(&first)).is_some() && has_sstable_magic(&first)).then_some(Resolved::TensorSliceV1 { file: first })
}

/// A candidate checkpoint path (from a `checkpoint` file): V2 prefix or V1 file.
fn try_candidate(c: &Path) -> Option<Resolved> {
    if with_suffix(c, ".index").is_file() {
        return Some(Resolved::BundleV2 { prefix: c.to_path_buf() });
    }
    if c.is_file() && has_sstable_magic(c) {
        return Some(Resolved::TensorSliceV1 { file: c.to_path_buf() });
    }
    v1_pattern(c)
}

fn resolve_dir(dir: &Path) -> Result<Resolved> {
    let state = dir.join(STATE_FILE);
    if state.is_file() {
        let size = state.metadata().map(|m| m.len()).unwrap_or(0);
        if size > MAX_STATE_FILE {
            return Err(err(InputFault::Unsupported, format!("{} is {size} bytes, too large for a checkpoint state file", state.display())));
        }
        let bytes = crate::source::mapped::read_regular(&state)?;
        let fields = parse_text_proto(&bytes)
            .map_err(|m| err(InputFault::Corrupt, format!("cannot parse the checkpoint state file {}: {m}", state.display())))?;
        let pick = |k: &str| fields.iter().rev().find(|(key, v)| key == k && !v.is_empty()).map(|(_, v)| v.clone());
        let Some(target) = pick("model_checkpoint_path").or_else(|| pick("all_model_checkpoint_paths")) else {
            return Err(err(InputFault::Corrupt, format!(
                "the checkpoint state file {} names no checkpoint (model_checkpoint_path is missing or empty){}",
                state.display(),
                found_suffix(dir)
            )));
        };
        let target = bytes_to_path(&target);
        let joined = if target.is_absolute() { target.clone() } else { dir.join(&target) };
        if let Some(r) = try_candidate(&joined) {
            return Ok(r);
        }
        let mut tried = vec![joined.display().to_string()];
        if let Some(base) = target.file_name() {
            let alt = dir.join(base);
            if alt != joined {
                if let Some(r) = try_candidate(&alt) {
                    return Ok(r);
                }
                tried.push(alt.display().to_string());
            }
        }
        return Err(err(InputFault::Missing, format!(
            "the checkpoint state file {} points to {}, which is not a checkpoint (looked for {}){}; \
             pass the checkpoint prefix explicitly",
            state.display(),
            target.display(),
            tried.iter().map(|t| format!("{t}.index and {t}")).collect::<Vec<_>>().join(", then "),
            found_suffix(dir)
        )));
    }
    let found = scan_dir(dir);
    match found.len() {
        1 => Ok(found.into_iter().next().unwrap_or_else(|| unreachable!())),
        0 => {
            let names = list_dir(dir);
            let shown: Vec<String> = names.iter().take(20).map(|n| n.to_string_lossy().into_owned()).collect();
            let more = if names.len() > 20 { format!(", … ({} entries)", names.len()) } else { String::new() };
            Err(err(InputFault::Missing, format!(
                "no TensorFlow checkpoint in directory {}: no `checkpoint` state file, no *.index file and no V1 \
                 checkpoint file; it contains: {}{more}",
                dir.display(),
                if shown.is_empty() { "nothing".to_string() } else { shown.join(", ") }
            )))
        }
        n => Err(err(InputFault::Ambiguous, format!(
            "directory {} has no `checkpoint` state file and holds {n} checkpoints: {}; pass one prefix explicitly",
            dir.display(),
            found.iter().take(20).map(Resolved::describe).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn found_suffix(dir: &Path) -> String {
    let found = scan_dir(dir);
    if found.is_empty() {
        format!("; no checkpoints found in {}", dir.display())
    } else {
        format!(
            "; checkpoints found in {}: {}",
            dir.display(),
            found.iter().take(20).map(Resolved::describe).collect::<Vec<_>>().join(", ")
        )
    }
}

/// Sorted names of a directory's entries (bounded).
fn list_dir(dir: &Path) -> Vec<OsString> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<OsString> = rd.take(MAX_DIR_ENTRIES).filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
    names.sort();
    names
}

/// Checkpoints directly inside `dir`: one per `*.index`, one per V1 file (one per sharded V1 set),
/// the folder itself if it holds `params_shapes.json`.
pub fn scan_dir(dir: &Path) -> Vec<Resolved> {
    let mut out = Vec::new();
    for name in list_dir(dir) {
        let p = dir.join(&name);
        if name == SHAPES_FILE {
            if p.is_file() {
                out.push(Resolved::NumpyShards { dir: dir.to_path_buf() });
            }
            continue;
        }
        if let Some(prefix) = names::strip_suffix(&name, ".index") {
            if p.is_file() {
                out.push(Resolved::BundleV2 { prefix: dir.join(prefix) });
            }
            continue;
        }
        if is_bookkeeping_name(&name) || name.as_encoded_bytes().starts_with(b".") || !p.is_file() {
            continue;
        }
        if let Some((_, i, _)) = parse_shard_suffix(&name) {
            if i != 0 {
                continue;
            }
        }
        if has_sstable_magic(&p) {
            out.push(Resolved::TensorSliceV1 { file: p });
        }
    }
    out
}

#[cfg(unix)]
fn bytes_to_path(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

#[cfg(not(unix))]
fn bytes_to_path(b: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(b).into_owned())
}

/// Minimal protobuf text-format reader for `key: "string"` lines (C escapes). Numeric fields are
/// skipped. Returns (key, unescaped value) in file order.
pub fn parse_text_proto(text: &[u8]) -> std::result::Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    for (ln, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let colon =
            line.iter().position(|&b| b == b':').ok_or_else(|| format!("line {}: expected `key: value`", ln + 1))?;
        let key = std::str::from_utf8(line[..colon].trim_ascii())
            .map_err(|_| format!("line {}: key is not UTF-8", ln + 1))?
            .to_string();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("line {}: bad field name '{key}'", ln + 1));
        }
        let value = line[colon + 1..].trim_ascii();
        // Numbers (timestamps) and anything else unquoted are not needed.
        if let Some(&q @ (b'"' | b'\'')) = value.first() {
            let s = unescape(&value[1..], q).map_err(|m| format!("line {}: {m}", ln + 1))?;
            out.push((key, s));
        }
    }
    Ok(out)
}

/// Unescapes a quoted string body up to the closing quote `q`.
fn unescape(s: &[u8], q: u8) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == q {
            return Ok(out);
        }
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *s.get(i + 1).ok_or("unterminated escape")?;
        i += 2;
        match e {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' | b'\'' | b'"' | b'?' => out.push(e),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut k = 0;
                while k < 2 && i < s.len() && (b'0'..=b'7').contains(&s[i]) {
                    v = v * 8 + u32::from(s[i] - b'0');
                    i += 1;
                    k += 1;
                }
                out.push(v as u8);
            }
            b'x' | b'X' => {
                let mut v = 0u32;
                let mut k = 0;
                while k < 2 && i < s.len() && s[i].is_ascii_hexdigit() {
                    v = v * 16 + (s[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    k += 1;
                }
                if k == 0 {
                    return Err("\\x without hex digits".into());
                }
                out.push(v as u8);
            }
            other => return Err(format!("unknown escape \\{}", other as char)),
        }
    }
    Err("unterminated string".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::testing::{BundleBuilder, V1Builder};

    fn bundle(prefix: &Path) {
        let mut b = BundleBuilder::new(1);
        b.add_f32("w", &[1], &[1.0]);
        b.write(prefix).unwrap();
        std::fs::write(with_suffix(prefix, ".meta"), b"graph").unwrap();
    }

    fn v2(p: &Path) -> Resolved {
        Resolved::BundleV2 { prefix: p.to_path_buf() }
    }

    fn rerr(p: &Path) -> String {
        match resolve(p) {
            Err(Error::Resolve { msg, .. }) => msg,
            other => panic!("expected a Resolve error for {}, got {other:?}", p.display()),
        }
    }

    #[test]
    fn prefix_and_bundle_files() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("model.ckpt-1000");
        bundle(&prefix);
        assert_eq!(resolve(&prefix).unwrap(), v2(&prefix));
        for suffix in [".index", ".data-00000-of-00001", ".meta"] {
            assert_eq!(resolve(&with_suffix(&prefix, suffix)).unwrap(), v2(&prefix), "{suffix}");
        }
        // Single checkpoint in a directory without a state file.
        assert_eq!(resolve(dir.path()).unwrap(), v2(&prefix));
        // Data file without its index.
        std::fs::remove_file(with_suffix(&prefix, ".index")).unwrap();
        let e = rerr(&with_suffix(&prefix, ".data-00000-of-00001"));
        assert!(e.contains("model.ckpt-1000.index") && e.contains("missing"), "{e}");
        let e = rerr(&with_suffix(&prefix, ".meta"));
        assert!(e.contains(".meta") && e.contains("neither"), "{e}");
        let e = rerr(&prefix);
        assert!(
            e.contains("no checkpoint at") && e.contains("similar names") && e.contains("model.ckpt-1000.meta"),
            "{e}"
        );
        let e = rerr(dir.path());
        assert!(e.contains("no TensorFlow checkpoint in directory") && e.contains("model.ckpt-1000.meta"), "{e}");
    }

    #[test]
    fn state_file_relative_absolute_and_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("model.ckpt-1");
        let b = dir.path().join("model.ckpt-2");
        bundle(&a);
        bundle(&b);
        // Two checkpoints, no state file: ambiguous, both listed.
        let e = rerr(dir.path());
        assert!(e.contains("2 checkpoints") && e.contains("model.ckpt-1 (V2") && e.contains("model.ckpt-2 (V2"), "{e}");
        let state = dir.path().join("checkpoint");
        std::fs::write(&state, "model_checkpoint_path: \"model.ckpt-2\"\nall_model_checkpoint_paths: \"model.ckpt-1\"\nall_model_checkpoint_paths: \"model.ckpt-2\"\nall_model_checkpoint_timestamps: 1.5\n").unwrap();
        assert_eq!(resolve(dir.path()).unwrap(), v2(&b));
        // Passing the state file itself works too.
        assert_eq!(resolve(&state).unwrap(), v2(&b));
        // Absolute path that exists.
        std::fs::write(&state, format!("model_checkpoint_path: \"{}\"\n", a.display())).unwrap();
        assert_eq!(resolve(dir.path()).unwrap(), v2(&a));
        // Absolute path from the author's machine: falls back to the base name.
        std::fs::write(&state, "model_checkpoint_path: \"/home/someone/runs/bert/model.ckpt-1\"\n").unwrap();
        assert_eq!(resolve(dir.path()).unwrap(), v2(&a));
        // Escapes.
        std::fs::write(&state, "model_checkpoint_path: \"model\\056ckpt-2\"\n").unwrap();
        assert_eq!(resolve(dir.path()).unwrap(), v2(&b));
        // Points nowhere: error lists what was tried and what exists.
        std::fs::write(&state, "model_checkpoint_path: \"/gone/model.ckpt-9\"\n").unwrap();
        let e = rerr(dir.path());
        assert!(
            e.contains("/gone/model.ckpt-9") && e.contains("model.ckpt-9.index") && e.contains("model.ckpt-1 (V2"),
            "{e}"
        );
        std::fs::write(&state, "model_checkpoint_path: \"\"\n").unwrap();
        let e = rerr(dir.path());
        assert!(e.contains("names no checkpoint"), "{e}");
        std::fs::write(&state, "this is not a text proto\n").unwrap();
        let e = rerr(dir.path());
        assert!(e.contains("cannot parse") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn v1_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = V1Builder::new();
        b.add_f32("w", &[1], &[1.0]);
        let f = dir.path().join("model.ckpt");
        std::fs::write(&f, b.bytes()).unwrap();
        std::fs::write(dir.path().join("model.ckpt.meta"), b"graph").unwrap();
        let want = Resolved::TensorSliceV1 { file: f.clone() };
        assert_eq!(resolve(&f).unwrap(), want);
        assert_eq!(resolve(&dir.path().join("model.ckpt.meta")).unwrap(), want);
        assert_eq!(resolve(dir.path()).unwrap(), want);
        std::fs::write(dir.path().join("checkpoint"), "model_checkpoint_path: \"model.ckpt\"\n").unwrap();
        assert_eq!(resolve(dir.path()).unwrap(), want);
        // Sharded V1 as named by TF's saver in the state file.
        std::fs::write(dir.path().join("s.ckpt-00000-of-00001"), b.bytes()).unwrap();
        std::fs::write(dir.path().join("checkpoint"), "model_checkpoint_path: \"s.ckpt-?????-of-00001\"\n").unwrap();
        assert_eq!(
            resolve(dir.path()).unwrap(),
            Resolved::TensorSliceV1 { file: dir.path().join("s.ckpt-00000-of-00001") }
        );
        // A random file is not a checkpoint.
        let junk = dir.path().join("vocab.txt");
        std::fs::write(&junk, "hello").unwrap();
        let e = rerr(&junk);
        assert!(e.contains("vocab.txt") && e.contains("not a TensorFlow checkpoint"), "{e}");
    }

    #[test]
    fn text_proto_parser() {
        let t =
            parse_text_proto(b"# comment\nmodel_checkpoint_path: \"a\\\"b\\\\c\\x41\\101\\n\"\n  k2 : 'x'\nnum: 3\n")
                .unwrap();
        assert_eq!(
            t,
            [("model_checkpoint_path".to_string(), b"a\"b\\cAA\n".to_vec()), ("k2".to_string(), b"x".to_vec())]
        );
        assert!(parse_text_proto(b"k: \"unterminated\n").is_err());
        assert!(parse_text_proto(b"k: \"bad \\q\"\n").is_err());
        assert!(parse_text_proto(b"no colon here\n").is_err());
        assert_eq!(strip_data_suffix(OsStr::new("m.ckpt.data-00001-of-00016")), Some(OsStr::new("m.ckpt")));
        assert_eq!(strip_data_suffix(OsStr::new("m.ckpt.data-x-of-00016")), None);
        assert_eq!(strip_data_suffix(OsStr::new("m.data")), None);
    }

    /// Runs `resolve` on another thread and fails if it does not return promptly, so a test of a
    /// FIFO fails instead of hanging when something opens it.
    fn rerr_within_seconds(p: &Path) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        let p = p.to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(rerr(&p));
        });
        rx.recv_timeout(std::time::Duration::from_secs(10)).expect("resolve blocked (opened a FIFO?)")
    }

    #[cfg(unix)]
    #[test]
    fn special_files_and_dangling_links_say_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(rerr(Path::new("/dev/null")), "/dev/null: not a regular file or directory (a character device)");

        let fifo = dir.path().join("model.ckpt");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
        assert!(made.success());
        assert_eq!(rerr_within_seconds(&fifo), format!("{}: is a FIFO, not a checkpoint file", fifo.display()));
        // Named like a V1 shard, a FIFO is skipped when scanning and never opened.
        let shard = dir.path().join("s.ckpt-00000-of-00001");
        assert!(std::process::Command::new("mkfifo").arg(&shard).status().unwrap().success());
        let e = rerr_within_seconds(&dir.path().join("s.ckpt-?????-of-00001"));
        assert!(e.starts_with("no checkpoint at"), "{e}");
        let e = rerr_within_seconds(dir.path());
        assert!(e.contains("no TensorFlow checkpoint in directory"), "{e}");

        let link = dir.path().join("bert_model.ckpt");
        let target = dir.path().join("gone/bert_model.ckpt");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(rerr(&link), format!("{}: a symbolic link to {}, which does not exist", link.display(), target.display()));
        // A link to a special file is described by what it points to.
        let to_null = dir.path().join("null-link");
        std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
        assert!(rerr(&to_null).ends_with("not a regular file or directory (a character device)"));
        // A path under a regular file is simply absent.
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"").unwrap();
        let e = rerr(&plain.join("under"));
        assert!(e.starts_with("no checkpoint at"), "{e}");
    }

    #[test]
    fn numpy_folder_by_folder_shapes_file_or_shard() {
        let dir = tempfile::tempdir().unwrap();
        let want = Resolved::NumpyShards { dir: dir.path().to_path_buf() };
        std::fs::write(dir.path().join("params_0.npy"), b"").unwrap();
        let e = rerr(&dir.path().join("params_0.npy"));
        assert!(e.contains("params_0.npy looks like an OpenAI GPT numpy shard") && e.contains("params_shapes.json is missing"), "{e}");
        std::fs::write(dir.path().join(SHAPES_FILE), b"[]").unwrap();
        for p in [dir.path().to_path_buf(), dir.path().join(SHAPES_FILE), dir.path().join("params_0.npy")] {
            assert_eq!(resolve(&p).unwrap(), want, "{}", p.display());
        }
        assert_eq!(want.format(), "openai-gpt-numpy");
        // Beside a TF checkpoint the folder is ambiguous, and both are listed.
        bundle(&dir.path().join("model.ckpt"));
        let e = rerr(dir.path());
        assert!(e.contains("2 checkpoints") && e.contains("(OpenAI GPT numpy shards)") && e.contains("model.ckpt (V2"), "{e}");
    }

    #[test]
    fn a_missing_path_lists_similar_names_but_not_itself() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.ckpt-1.meta"), b"graph").unwrap();
        std::fs::write(dir.path().join("model.ckpt-10"), b"").unwrap();
        let missing = dir.path().join("model.ckpt-1");
        let e = rerr(&missing);
        assert!(e.ends_with(&format!("similar names in {}: model.ckpt-1.meta, model.ckpt-10", dir.path().display())), "{e}");
    }
}
