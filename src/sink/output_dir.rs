//! An output folder that appears complete or not at all.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A folder filled under a temporary name (`.<name>.tmp-<pid>` beside the target, so on the
/// same file system) and renamed into place by [`commit`](OutputDir::commit).
///
/// Dropping it without committing deletes the temporary folder.
#[derive(Debug)]
pub struct OutputDir {
    target: PathBuf,
    tmp: PathBuf,
    force: bool,
    committed: bool,
}

impl OutputDir {
    /// Prepares to write `target`. Fails at once, naming the path, if `target` exists and `force`
    /// is false, so that no work is wasted. Missing parent folders are created.
    pub fn create(target: &Path, force: bool) -> Result<OutputDir> {
        let name = target
            .file_name()
            .ok_or_else(|| Error::Output(format!("{}: output path must name a folder", target.display())))?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !force && exists(target)? {
            return Err(exists_error(target));
        }
        fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = parent.join(tmp_name);
        fs::create_dir(&tmp).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Error::Output(format!(
                "{}: temporary output folder already exists (another conversion running, or left over from a crash: delete it)",
                tmp.display()
            )),
            _ => Error::io(&tmp, e),
        })?;
        Ok(OutputDir { target: target.to_path_buf(), tmp, force, committed: false })
    }

    /// The temporary folder to write files into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Where the folder will be after `commit`.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes a small file (config, tokenizer files) into the folder; returns its temporary path.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.tmp.join(name);
        fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }

    /// Moves the finished folder to the target path and returns that path.
    ///
    /// If the target exists: without `force`, an error (the temporary folder is removed); with
    /// `force`, the old one is renamed aside, the new one renamed in, and only then the old one
    /// deleted. If renaming the new one in fails, the old one is put back.
    pub fn commit(mut self) -> Result<PathBuf> {
        let target = self.target.clone();
        sync_dir(&self.tmp);
        if exists(&target)? {
            if !self.force {
                return Err(exists_error(&target));
            }
            let mut old_name = std::ffi::OsString::from(".");
            old_name.push(target.file_name().expect("checked in create"));
            old_name.push(format!(".old-{}", std::process::id()));
            let old = self.tmp.with_file_name(old_name);
            fs::rename(&target, &old).map_err(|e| {
                Error::Output(format!(
                    "{}: cannot move the existing output aside to {}: {e}",
                    target.display(),
                    old.display()
                ))
            })?;
            if let Err(e) = fs::rename(&self.tmp, &target) {
                let _ = fs::rename(&old, &target);
                return Err(Error::Output(format!(
                    "{}: cannot move {} into place: {e}",
                    target.display(),
                    self.tmp.display()
                )));
            }
            self.committed = true;
            let removed = if fs::symlink_metadata(&old).map(|m| m.is_dir()).unwrap_or(false) {
                fs::remove_dir_all(&old)
            } else {
                fs::remove_file(&old)
            };
            removed.map_err(|e| {
                Error::Output(format!(
                    "{}: written, but the replaced output could not be deleted from {}: {e}",
                    target.display(),
                    old.display()
                ))
            })?;
        } else {
            fs::rename(&self.tmp, &target).map_err(|e| {
                Error::Output(format!("{}: cannot move {} into place: {e}", target.display(), self.tmp.display()))
            })?;
            self.committed = true;
        }
        if let Some(parent) = self.tmp.parent() {
            sync_dir(parent);
        }
        Ok(target)
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn exists_error(target: &Path) -> Error {
    Error::Output(format!("{}: output already exists (use --force to replace it)", target.display()))
}

/// Best effort: make the renames durable (a no-op where folders cannot be opened).
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_siblings(parent: &Path) -> Vec<String> {
        fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn commit_creates_target() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("nested/out");
        let out = OutputDir::create(&target, false).unwrap();
        assert_eq!(out.path().parent().unwrap(), root.path().join("nested"));
        assert_eq!(out.path().file_name().unwrap().to_str().unwrap(), format!(".out.tmp-{}", std::process::id()));
        out.write_file("config.json", b"{}").unwrap();
        assert!(!target.exists());
        assert_eq!(out.commit().unwrap(), target);
        assert_eq!(fs::read(target.join("config.json")).unwrap(), b"{}");
        assert!(tmp_siblings(&root.path().join("nested")).is_empty());
    }

    #[test]
    fn existing_target_needs_force() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old.txt"), b"old").unwrap();
        let e = OutputDir::create(&target, false).unwrap_err().to_string();
        assert!(e.contains(&target.display().to_string()) && e.contains("exists"), "{e}");
        assert!(tmp_siblings(root.path()).is_empty());

        // Target appearing while writing is caught at commit too.
        let other = root.path().join("late");
        let out = OutputDir::create(&other, false).unwrap();
        fs::create_dir(&other).unwrap();
        let e = out.commit().unwrap_err().to_string();
        assert!(e.contains(&other.display().to_string()), "{e}");
        assert!(tmp_siblings(root.path()).is_empty(), "temp folder removed after failed commit");

        let out = OutputDir::create(&target, true).unwrap();
        out.write_file("new.txt", b"new").unwrap();
        // The old folder is untouched until commit.
        assert!(target.join("old.txt").exists());
        out.commit().unwrap();
        assert!(!target.join("old.txt").exists());
        assert_eq!(fs::read(target.join("new.txt")).unwrap(), b"new");
        assert!(tmp_siblings(root.path()).is_empty(), "no .tmp or .old left: {:?}", tmp_siblings(root.path()));
    }

    #[test]
    fn force_replaces_a_file_too() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        fs::write(&target, b"a file").unwrap();
        let out = OutputDir::create(&target, true).unwrap();
        out.write_file("x", b"1").unwrap();
        out.commit().unwrap();
        assert!(target.is_dir());
        assert!(tmp_siblings(root.path()).is_empty());
    }

    #[test]
    fn drop_without_commit_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        {
            let out = OutputDir::create(&target, false).unwrap();
            fs::create_dir(out.path().join("sub")).unwrap();
            out.write_file("sub/model.safetensors", b"partial").unwrap();
            assert!(out.path().exists());
        }
        assert!(!target.exists());
        assert!(fs::read_dir(root.path()).unwrap().next().is_none(), "parent is empty again");
    }

    #[test]
    fn stale_temp_folder_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        let first = OutputDir::create(&target, false).unwrap();
        let e = OutputDir::create(&target, false).unwrap_err().to_string();
        assert!(e.contains(&first.path().display().to_string()), "{e}");
        drop(first);
    }

    #[test]
    fn rejects_path_without_name() {
        assert!(OutputDir::create(Path::new("/"), true).is_err());
        assert!(OutputDir::create(Path::new(".."), true).is_err());
    }
}
