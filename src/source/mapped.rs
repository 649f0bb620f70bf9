//! Read-only file contents for the readers that borrow tensors straight from their files:
//! memory-mapped, or owned (empty files cannot be mapped; in-memory inputs for tests and fuzzing).

use std::fs::File;
use std::path::Path;

use crate::error::{Error, InputFault, Result};

pub(crate) enum FileBytes {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// Opens a checkpoint file for reading, refusing anything but a regular file. Opened without
/// blocking, so a FIFO swapped in after the path was checked cannot hang the reader; the flag
/// means nothing for a regular file.
pub(crate) fn open_regular(path: &Path) -> Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file = options.open(path).map_err(|e| Error::io(path, e))?;
    let kind = file.metadata().map_err(|e| Error::io(path, e))?.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() { "a directory" } else { "not a regular file" };
        return Err(Error::input(path, format!("is {what}, where a checkpoint file was expected"))
            .because(InputFault::Unreadable));
    }
    Ok(file)
}

/// The whole of a small file (an index, a state file), read through [`open_regular`].
pub(crate) fn read_regular(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    open_regular(path)?.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

impl FileBytes {
    pub(crate) fn map(path: &Path) -> Result<FileBytes> {
        let file = open_regular(path)?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(FileBytes::Owned(Vec::new()));
        }
        // SAFETY: the mapping is read-only. As with every mmap-based reader, the file must not be
        // truncated or modified by another process while the checkpoint is open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(FileBytes::Mmap(map))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            FileBytes::Mmap(m) => m,
            FileBytes::Owned(v) => v,
        }
    }

    /// Drops the pages of `[offset, offset + len)` from memory (a hint; errors are ignored).
    pub(crate) fn release(&self, offset: usize, len: usize) {
        if let FileBytes::Mmap(map) = self {
            if len == 0 || offset.checked_add(len).is_none_or(|end| end > map.len()) {
                return;
            }
            // SAFETY: the map is read-only and shared, so dropping its pages loses nothing:
            // a later read faults them in from the file again.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) };
        }
    }
}
