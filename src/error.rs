//! One error type for the library, grouped into the categories the CLI maps to exit codes.

use std::path::PathBuf;

/// What went wrong, with enough context (file, tensor, expectation) for a user to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input file is unreadable, truncated, corrupt or of an unsupported kind.
    #[error("{path}: {msg}")]
    Input { path: PathBuf, msg: String },

    /// A tensor inside an otherwise readable checkpoint is bad (checksum, size, dtype).
    #[error("{path}: tensor '{tensor}': {msg}")]
    Tensor { path: PathBuf, tensor: String, msg: String },

    /// The command line asks for something impossible (bad flag value or combination).
    #[error("{0}")]
    Usage(String),

    /// The checkpoint path could not be resolved to a checkpoint.
    #[error("{0}")]
    Resolve(String),

    /// The checkpoint and the architecture's mapping table disagree.
    #[error("{0}")]
    Mapping(String),

    /// Writing the output failed or would clobber something.
    #[error("{0}")]
    Output(String),

    /// TensorFlow is needed for this operation but could not be loaded.
    #[error("{0}")]
    ReferenceUnavailable(String),

    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

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

impl Error {
    pub fn input(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Input { path: path.into(), msg: msg.into() }
    }
    pub fn tensor(path: impl Into<PathBuf>, tensor: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { path: path.into(), tensor: tensor.into(), msg: msg.into() }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
