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
        let parent = crate::guard::parent_dir(target);
        if !force && exists(target)? {
            return Err(exists_error(target));
        }
        let tmp = temp_path(&parent, name, target)?;
        make_temp_dir(&tmp, target)?;
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
        write_synced(&self.tmp.join(name), bytes)
    }

    /// Moves the finished folder to the target path and returns that path.
    ///
    /// If the target exists: without `force`, an error (the temporary folder is removed); with
    /// `force`, the old one is renamed aside, the new one renamed in, and only then the old one
    /// deleted. If renaming the new one in fails, the old one is put back.
    pub fn commit(mut self) -> Result<PathBuf> {
        let target = self.target.clone();
        sync_dir(&self.tmp);
        let _no_interrupt = crate::interrupt::lock();
        if exists(&target)? {
            if !self.force {
                return Err(exists_error(&target));
            }
            let old = self.tmp.with_file_name(temp_name(target.file_name().expect("checked in create"), "old"));
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
        drop(_no_interrupt);
        crate::interrupt::untrack(&self.tmp);
        Ok(target)
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
        crate::interrupt::untrack(&self.tmp);
    }
}

/// Files added to a folder that may hold other files: the checkpoint's own folder, in the
/// documented `--pytorch_dump_output DIR/pytorch_model.bin` form. Everything is written into a
/// temporary folder inside `DIR`, then renamed into place file by file, so each file appears
/// whole and nothing else in `DIR` is touched.
///
/// Dropping it without committing deletes the temporary folder.
#[derive(Debug)]
pub struct FilesInto {
    dir: PathBuf,
    tmp: PathBuf,
}

impl FilesInto {
    /// Prepares to add files to `dir` (created if missing); `name` names the temporary folder
    /// (`.NAME.tmp-PID`), normally after the weight file.
    pub fn create(dir: &Path, name: &str) -> Result<FilesInto> {
        let tmp = temp_path(dir, name.as_ref(), dir)?;
        make_temp_dir(&tmp, &dir.join(name))?;
        Ok(FilesInto { dir: dir.to_path_buf(), tmp })
    }

    /// The temporary folder to write files into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The folder the files go into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes a small file into the temporary folder; returns its temporary path.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        write_synced(&self.tmp.join(name), bytes)
    }

    /// Renames `names`, in this order, from the temporary folder into the folder (replacing
    /// files of the same name), then removes the temporary folder. Returns the final paths.
    pub fn commit(self, names: &[String]) -> Result<Vec<PathBuf>> {
        let mut placed = Vec::with_capacity(names.len());
        {
            let _no_interrupt = crate::interrupt::lock();
            for name in names {
                let (from, to) = (self.tmp.join(name), self.dir.join(name));
                fs::rename(&from, &to)
                    .map_err(|e| Error::Output(format!("{}: cannot move {} into place: {e}", to.display(), from.display())))?;
                placed.push(to);
            }
            sync_dir(&self.dir);
        }
        Ok(placed)
    }
}

impl Drop for FilesInto {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.tmp);
        crate::interrupt::untrack(&self.tmp);
    }
}

/// One file (a report) written under a temporary name beside it and renamed into place. The
/// temporary file is created at once, so an unwritable location fails before any work.
#[derive(Debug)]
pub struct PendingFile {
    target: PathBuf,
    tmp: PathBuf,
}

impl PendingFile {
    pub fn create(target: &Path) -> Result<PendingFile> {
        let name = target.file_name().ok_or_else(|| Error::Output(format!("{}: not a file path", target.display())))?;
        let parent = crate::guard::parent_dir(target);
        let tmp = temp_path(&parent, name, target)?;
        let mut pending = crate::interrupt::lock();
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::Output(format!("{}: cannot write here: {e}", target.display())))?;
        pending.push(tmp.clone());
        Ok(PendingFile { target: target.to_path_buf(), tmp })
    }

    /// Writes `bytes`, syncs, and renames the file into place.
    pub fn commit(self, bytes: &[u8]) -> Result<PathBuf> {
        write_synced(&self.tmp, bytes).map_err(|e| Error::Output(format!("{}: {e}", self.target.display())))?;
        let _no_interrupt = crate::interrupt::lock();
        fs::rename(&self.tmp, &self.target)
            .map_err(|e| Error::Output(format!("{}: cannot move {} into place: {e}", self.target.display(), self.tmp.display())))?;
        if let Some(parent) = self.target.parent() {
            sync_dir(parent);
        }
        Ok(self.target.clone())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
        crate::interrupt::untrack(&self.tmp);
    }
}

fn exists(path: &Path) -> Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::write(path, e)),
    }
}

fn exists_error(target: &Path) -> Error {
    Error::Output(format!("{}: output already exists (use --force to replace it)", target.display()))
}

/// `.NAME.KIND-PID`: hidden, beside its target (so on the same file system), and recognisable
/// by [`crate::guard::clear_stale`] once this process is gone.
fn temp_name(name: &std::ffi::OsStr, kind: &str) -> std::ffi::OsString {
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{kind}-{}", std::process::id()));
    tmp
}

/// `parent/.NAME.tmp-PID`, with `parent` created and leftovers of dead runs for `name` cleared
/// (and said). `target` names the output in messages.
fn temp_path(parent: &Path, name: &std::ffi::OsStr, target: &Path) -> Result<PathBuf> {
    create_parent(parent, target)?;
    for line in crate::guard::clear_stale(parent, &name.to_string_lossy()) {
        eprintln!("note: {line}");
    }
    Ok(parent.join(temp_name(name, "tmp")))
}

/// Creates the temporary folder and registers it for removal on interrupt, as one step.
fn make_temp_dir(tmp: &Path, target: &Path) -> Result<()> {
    let mut pending = crate::interrupt::lock();
    fs::create_dir(tmp).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => Error::Output(format!(
            "{}: temporary output folder already exists (another conversion running, or left over from a crash: delete it)",
            tmp.display()
        )),
        _ => Error::Output(format!("{}: cannot write here: {e}", target.display())),
    })?;
    pending.push(tmp.to_path_buf());
    Ok(())
}

/// Creates the output's parent folders; failures name the user's path, not a temporary one.
fn create_parent(parent: &Path, target: &Path) -> Result<()> {
    fs::create_dir_all(parent).map_err(|e| {
        Error::Output(format!("{}: cannot create its folder {}: {e}", target.display(), parent.display()))
    })
}

/// Writes a whole file and syncs it to disk before returning.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    use std::io::Write;
    let mut f = fs::File::create(path).map_err(|e| Error::write(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::write(path, e))?;
    Ok(path.to_path_buf())
}

/// Bytes an ordinary writer may still use on the file system holding `path` (statvfs's
/// `f_bavail × f_frsize`: blocks reserved for root are not counted, so the check errs on the
/// safe side when run as root).
#[cfg(unix)]
pub fn free_space(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is NUL-terminated and `st` is written by the call before it is read.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
pub fn free_space(_path: &Path) -> io::Result<u64> {
    Ok(u64::MAX)
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
