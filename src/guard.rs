//! Where tfconv may write. Every path a command writes (output folder, weight and companion
//! files, reports) is checked here first, by [`check_target`], before any work is done.
//!
//! The rules: never over, or above, an input; never over or above the current directory; an
//! existing file only with `--force`; an existing folder only with `--force` and only when it
//! holds nothing but files tfconv writes. Paths are compared after resolving symlinks and `..`,
//! so no spelling gets around them.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Files a command reads (and so must never write over or delete), and files it will write.
#[derive(Debug, Default, Clone)]
pub struct Protected {
    inputs: BTreeSet<PathBuf>,
    outputs: BTreeSet<PathBuf>,
}

impl Protected {
    pub fn new() -> Protected {
        Protected::default()
    }

    /// Records an input; paths that do not exist are ignored (they cannot be harmed).
    pub fn add_input(&mut self, path: &Path) {
        if fs::symlink_metadata(path).is_ok() {
            // Both spellings: the link itself must survive too, not only what it points to.
            self.inputs.insert(absolute(path));
            if let Ok(real) = resolve(path) {
                self.inputs.insert(real);
            }
        }
    }

    /// Records every entry of a folder that is read as a whole (an HF folder being verified).
    pub fn add_input_folder(&mut self, dir: &Path) {
        self.add_input(dir);
        if let Ok(entries) = fs::read_dir(dir) {
            for entry in entries.flatten() {
                self.add_input(&entry.path());
            }
        }
    }

    /// Records a path this command writes, so that a second output cannot land on or in it.
    pub fn add_output(&mut self, path: &Path) {
        if let Ok(real) = resolve(path) {
            self.outputs.insert(real);
        }
    }

    pub fn inputs(&self) -> impl Iterator<Item = &Path> {
        self.inputs.iter().map(PathBuf::as_path)
    }
}

/// What is about to be written at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A folder that replaces whatever is at the path (a conversion's output folder).
    Folder,
    /// A single file (a report, or a weight file added to an existing folder).
    File,
}

/// Checks that `path` may be written as `kind`, and returns it resolved (absolute, symlinks in
/// its parents and `..` resolved). `flag` names the option the path came from, for messages.
pub fn check_target(path: &Path, flag: &str, kind: Kind, protected: &Protected, force: bool) -> Result<PathBuf> {
    let refuse = |why: String| Error::Output(format!("{flag} {}: {why}", path.display()));
    if path.as_os_str().is_empty() {
        return Err(refuse("the path is empty".into()));
    }
    // `.`, `..` and `x/..` name folders by where they lead, so they are resolved fully.
    let resolved = match path.file_name() {
        Some(_) => resolve_parent(path),
        None => resolve(path),
    }
    .map_err(|e| refuse(format!("cannot resolve it: {e}")))?;
    if resolved.parent().is_none() {
        return Err(refuse("refusing to write the root folder".into()));
    }
    for input in &protected.inputs {
        if *input == resolved {
            return Err(refuse("this is an input of the command; tfconv never writes over its inputs".into()));
        }
        if input.starts_with(&resolved) {
            return Err(refuse(format!("this folder holds the input {}; tfconv never replaces it", input.display())));
        }
    }
    for output in &protected.outputs {
        if *output == resolved || output.starts_with(&resolved) || resolved.starts_with(output) {
            return Err(refuse(format!("this would overlap the output {} written by the same command", output.display())));
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        if cwd.starts_with(&resolved) {
            return Err(refuse("this is the current directory or one of its parents".into()));
        }
    }
    let meta = match fs::symlink_metadata(&resolved) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(resolved),
        Err(e) => return Err(refuse(e.to_string())),
    };
    if meta.file_type().is_symlink() {
        return Err(refuse(format!(
            "this is a symbolic link (to {}); tfconv does not replace links, give the real path",
            fs::read_link(&resolved).map(|t| t.display().to_string()).unwrap_or_default()
        )));
    }
    match kind {
        Kind::File if meta.is_dir() => Err(refuse("this is a folder; a file path is expected".into())),
        Kind::File if !force => Err(refuse("already exists (use --force to replace it)".into())),
        Kind::File => Ok(resolved),
        Kind::Folder if !meta.is_dir() => Err(refuse(
            "this is a file, not a folder written by tfconv; tfconv replaces only its own output".into(),
        )),
        Kind::Folder => {
            let foreign = foreign_entries(&resolved).map_err(|e| refuse(e.to_string()))?;
            let empty = fs::read_dir(&resolved).map_err(|e| refuse(e.to_string()))?.next().is_none();
            if empty {
                Ok(resolved)
            } else if !force {
                Err(refuse("already exists (use --force to replace a folder tfconv wrote)".into()))
            } else if !foreign.is_empty() {
                Err(refuse(format!(
                    "--force replaces only a folder holding nothing but files tfconv writes, and this one also holds: {}",
                    foreign.join(", ")
                )))
            } else {
                Ok(resolved)
            }
        }
    }
}

/// Names of the files tfconv writes into an output folder. Anything else in a folder makes it
/// someone else's, which `--force` must not delete.
pub fn is_output_file_name(name: &str) -> bool {
    const FIXED: &[&str] = &[
        "config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "spiece.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
    ];
    if FIXED.contains(&name) {
        return true;
    }
    // Shards: model-00001-of-00003.safetensors, pytorch_model-00001-of-00003.bin.
    let shard = |stem: &str, ext: &str| {
        name.strip_prefix(stem).and_then(|r| r.strip_suffix(ext)).is_some_and(|mid| {
            let b = mid.as_bytes();
            b.len() == 14 && &b[5..9] == b"-of-" && b[..5].iter().chain(&b[9..]).all(u8::is_ascii_digit)
        })
    };
    shard("model-", ".safetensors") || shard("pytorch_model-", ".bin")
}

/// Entries of `dir` that tfconv does not write (sorted; sub-folders end in `/`).
fn foreign_entries(dir: &Path) -> io::Result<Vec<String>> {
    let mut foreign = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type()?.is_file();
        if !is_file {
            foreign.push(format!("{name}/"));
        } else if !is_output_file_name(&name) {
            foreign.push(name);
        }
    }
    foreign.sort();
    Ok(foreign)
}

/// `path` made absolute against the current directory, `.` and `..` removed lexically.
pub fn absolute(path: &Path) -> PathBuf {
    let mut out = if path.is_absolute() { PathBuf::new() } else { std::env::current_dir().unwrap_or_default() };
    path.components().for_each(|c| push_lexically(&mut out, c));
    out
}

/// Appends one component, with `.` dropped and `..` taken as "up one".
fn push_lexically(out: &mut PathBuf, c: Component) {
    match c {
        Component::CurDir => {}
        Component::ParentDir => {
            out.pop();
        }
        other => out.push(other),
    }
}

/// `path` with every symlink and `..` resolved: the longest existing prefix is canonicalized and
/// the rest appended, so paths that do not exist yet resolve too.
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let joined = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir()?.join(path) };
    let mut existing = PathBuf::new();
    let mut rest = Vec::new();
    for c in joined.components() {
        let candidate = existing.join(c);
        if rest.is_empty() && fs::symlink_metadata(&candidate).is_ok() {
            existing = fs::canonicalize(&candidate)?;
        } else {
            rest.push(c);
        }
    }
    let mut out = existing;
    rest.into_iter().for_each(|c| push_lexically(&mut out, c));
    Ok(out)
}

/// Like [`resolve`], but the last component is kept as it is (a symlink at the path is the
/// thing that would be replaced, so it is reported rather than followed).
fn resolve_parent(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().expect("checked by the caller");
    Ok(resolve(&parent_dir(path))?.join(name))
}

/// The folder `path` is in: its parent, or `.` for a bare name.
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes `.NAME.tmp-PID` and `.NAME.old-PID` entries in `dir` left by tfconv processes that no
/// longer run. A stale `.old` whose `NAME` is missing is the previous output of a run that died
/// mid-replace: it is put back rather than deleted. Returns one line per action, for the user.
pub fn clear_stale(dir: &Path, name: &str) -> Vec<String> {
    let mut said = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return said };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some((kind, pid)) = temp_entry(&file_name, name) else { continue };
        if pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let path = entry.path();
        let target = dir.join(name);
        if kind == "old" && fs::symlink_metadata(&target).is_err() {
            if fs::rename(&path, &target).is_ok() {
                said.push(format!("restored {} from {} (left by process {pid}, which died while replacing it)", target.display(), path.display()));
            }
            continue;
        }
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
        if removed.is_ok() {
            said.push(format!("removed {} left by process {pid}, which no longer runs", path.display()));
        }
    }
    said
}

/// `("tmp" | "old", pid)` when `file_name` is `.{name}.tmp-{pid}` or `.{name}.old-{pid}`.
fn temp_entry<'a>(file_name: &'a str, name: &str) -> Option<(&'a str, u32)> {
    let rest = file_name.strip_prefix('.')?.strip_prefix(name)?.strip_prefix('.')?;
    let (kind, pid) = rest.split_once('-')?;
    if kind != "tmp" && kind != "old" {
        return None;
    }
    Some((kind, pid.parse().ok()?))
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_file_names() {
        for ok in ["config.json", "model.safetensors", "model-00001-of-00002.safetensors", "pytorch_model-00010-of-00012.bin", "vocab.txt"] {
            assert!(is_output_file_name(ok), "{ok}");
        }
        for foreign in ["bert_model.ckpt.index", "model-1-of-2.safetensors", "model-0000a-of-00002.safetensors", "notes.txt", "checkpoint"] {
            assert!(!is_output_file_name(foreign), "{foreign}");
        }
    }

    #[test]
    fn resolve_handles_links_and_dotdot() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, root.path().join("link")).unwrap();
        let want = fs::canonicalize(&real).unwrap().join("new/out");
        assert_eq!(resolve(&root.path().join("link/new/x/../out")).unwrap(), want);
        assert_eq!(resolve(&root.path().join("real/../link/./new/out")).unwrap(), want);
    }

    #[test]
    fn inputs_and_their_folders_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        fs::create_dir(&dir).unwrap();
        let input = dir.join("model.ckpt.index");
        fs::write(&input, b"x").unwrap();
        let mut p = Protected::new();
        p.add_input(&input);
        for (path, force) in [(input.clone(), true), (dir.clone(), true), (root.path().to_path_buf(), true), (dir.join("../ckpt"), false)] {
            for kind in [Kind::File, Kind::Folder] {
                let e = check_target(&path, "--output", kind, &p, force).unwrap_err().to_string();
                assert!(e.contains("input"), "{path:?}: {e}");
            }
        }
        assert!(check_target(&dir.join("out"), "--output", Kind::Folder, &p, false).is_ok());
        assert_eq!(fs::read(&input).unwrap(), b"x");
    }

    #[test]
    fn force_replaces_only_tfconv_folders() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("config.json"), b"{}").unwrap();
        fs::write(out.join("model.safetensors"), b"").unwrap();
        let p = Protected::new();
        let e = check_target(&out, "--output", Kind::Folder, &p, false).unwrap_err().to_string();
        assert!(e.contains("--force"), "{e}");
        assert!(check_target(&out, "--output", Kind::Folder, &p, true).is_ok());
        fs::write(out.join("notes.txt"), b"mine").unwrap();
        fs::create_dir(out.join("sub")).unwrap();
        let e = check_target(&out, "--output", Kind::Folder, &p, true).unwrap_err().to_string();
        assert!(e.contains("notes.txt, sub/"), "{e}");
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_cleared() {
        let root = tempfile::tempdir().unwrap();
        // A pid far above any pid_max in use here: no such process.
        let dead = 4_000_000u32;
        fs::create_dir(root.path().join(format!(".out.tmp-{dead}"))).unwrap();
        fs::create_dir(root.path().join(format!(".out.old-{dead}"))).unwrap();
        fs::write(root.path().join(format!(".out.tmp-{}", std::process::id())), b"ours").unwrap();
        fs::write(root.path().join(".other.tmp-1"), b"not this name").unwrap();
        let said = clear_stale(root.path(), "out");
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(root.path().join("out").is_dir(), "the .old folder was restored");
        assert!(!root.path().join(format!(".out.tmp-{dead}")).exists());
        assert!(root.path().join(format!(".out.tmp-{}", std::process::id())).exists());
        assert!(root.path().join(".other.tmp-1").exists());
    }
}
