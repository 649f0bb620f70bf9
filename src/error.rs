//! One error type for the library, grouped into the categories the CLI maps to exit codes.

use std::path::PathBuf;

/// What went wrong, with enough context (file, tensor, expectation) for a user to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file is corrupt, missing, truncated, unreadable or of an unsupported kind.
    #[error("{path}: {msg}")]
    Input { path: PathBuf, msg: String, fault: InputFault },

    /// A tensor inside an otherwise readable checkpoint is bad (checksum, size, dtype).
    #[error("{path}: tensor '{tensor}': {msg}")]
    Tensor { path: PathBuf, tensor: String, msg: String, fault: InputFault },

    /// The command line asks for something impossible (bad flag value or combination).
    #[error("{0}")]
    Usage(String),

    /// The checkpoint path could not be resolved to one checkpoint. `msg` names what was
    /// looked for and what was found.
    #[error("{msg}")]
    Resolve { msg: String, fault: InputFault },

    /// The checkpoint and the architecture's mapping table disagree.
    #[error("{0}")]
    Mapping(String),

    /// Writing the output failed or would clobber something.
    #[error("{0}")]
    Output(String),

    /// TensorFlow is needed for this operation but could not be loaded.
    #[error("{0}")]
    ReferenceUnavailable(String),

    /// Reading an input failed in the operating system; the fault follows from the error kind.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// Writing an output (or standard output) failed.
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },

    /// The output's file system cannot hold the output: found before writing (free space
    /// below the planned size) or when a write failed with ENOSPC/EDQUOT. `path` is the output
    /// the user named; `needed` the planned size of everything written; `available` the free
    /// space when it was found out.
    #[error(
        "{path}: not enough space on its file system: the output needs {} and {} is free{}",
        human_bytes(*needed),
        human_bytes(*available),
        detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
    )]
    NoSpace { path: PathBuf, needed: u64, available: u64, detail: Option<String> },
}

/// `440.2 MB (440213504 bytes)`: readable, and exact for scripts.
pub fn human_bytes(n: u64) -> String {
    let mb = n as f64 / 1e6;
    match mb >= 1000.0 {
        true => format!("{:.2} GB ({n} bytes)", mb / 1000.0),
        false => format!("{mb:.1} MB ({n} bytes)"),
    }
}

/// Whether an I/O error means the device (or the user's quota) is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.kind() == std::io::ErrorKind::QuotaExceeded
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an input could not be used. Each has its own exit code (README, "Exit codes"), so a
/// script can tell a download that is still missing a shard from one that is corrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputFault {
    /// Bytes that do not parse or fail a check: a checksum, a magic number, a header, a
    /// protocol buffer, a value outside its range.
    Corrupt,
    /// A file the input needs is not there: the path itself, a data shard, the index of a
    /// data file, what a `checkpoint` state file or a symbolic link points to, the original
    /// config.
    Missing,
    /// A file is shorter than what describes it: a data shard cut short, or an index entry
    /// pointing past the end of its shard (the same disagreement seen from the other side).
    Truncated,
    /// The path holds more than one checkpoint and nothing says which one is meant.
    Ambiguous,
    /// The operating system will not hand over the bytes: a symbolic-link loop, a permission,
    /// a directory, FIFO or device where a file belongs, an I/O error.
    Unreadable,
    /// Well-formed, but not something tfconv converts (a data type, a byte order, a format).
    Unsupported,
}

impl InputFault {
    /// What an operating-system error means for an input.
    pub fn of_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            NotFound => InputFault::Missing,
            UnexpectedEof => InputFault::Truncated,
            _ => InputFault::Unreadable,
        }
    }
}

impl Error {
    /// A corrupt input file; [`Error::because`] names another fault.
    pub fn input(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Input { path: path.into(), msg: msg.into(), fault: InputFault::Corrupt }
    }
    /// A corrupt tensor; [`Error::because`] names another fault.
    pub fn tensor(path: impl Into<PathBuf>, tensor: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { path: path.into(), tensor: tensor.into(), msg: msg.into(), fault: InputFault::Corrupt }
    }
    /// A checkpoint path that does not lead to one checkpoint.
    pub fn resolve(fault: InputFault, msg: impl Into<String>) -> Self {
        Error::Resolve { msg: msg.into(), fault }
    }
    /// Reading an input failed.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    /// Writing an output failed.
    pub fn write(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Write { path: path.into(), source }
    }

    /// The same input error, for another reason than the default one. Other errors are
    /// returned unchanged.
    pub fn because(mut self, why: InputFault) -> Self {
        if let Error::Input { fault, .. } | Error::Tensor { fault, .. } | Error::Resolve { fault, .. } = &mut self {
            *fault = why;
        }
        self
    }

    /// Why an input could not be used, for the errors that are about an input.
    pub fn input_fault(&self) -> Option<InputFault> {
        match self {
            Error::Input { fault, .. } | Error::Tensor { fault, .. } | Error::Resolve { fault, .. } => Some(*fault),
            Error::Io { source, .. } => Some(InputFault::of_io(source)),
            _ => None,
        }
    }
}
