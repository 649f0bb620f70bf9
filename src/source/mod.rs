//! Checkpoint readers. Every format is opened into a [`Checkpoint`]: a list of tensors with
//! their names, dtypes and shapes, plus access to each tensor's raw little-endian bytes.

use std::borrow::Cow;
use std::path::Path;

use crate::error::Result;

mod dtype;
pub use dtype::DType;

/// Name, dtype and shape of one tensor in a checkpoint (shape is row-major, outermost first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Bytes of the tensor's data; `None` for variable-size dtypes (strings).
    pub fn nbytes(&self) -> Option<usize> {
        self.dtype.size().map(|s| s * self.numel())
    }
}

/// An opened checkpoint in any supported format.
pub trait Checkpoint: Send + Sync {
    /// The path the user gave, resolved (prefix for TF bundles, the file otherwise).
    fn path(&self) -> &Path;
    /// Short name of the format, e.g. "tf-bundle-v2".
    fn format(&self) -> &'static str;
    /// All tensors, sorted by name. Internal bookkeeping keys (bundle header, slice entries) are not listed.
    fn tensors(&self) -> &[TensorInfo];
    /// Raw bytes of a fixed-size tensor in little-endian, row-major order, checksum verified.
    /// Borrowed straight from the mmap where possible.
    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>>;
    /// Elements of a string tensor.
    fn read_strings(&self, name: &str) -> Result<Vec<Vec<u8>>>;

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        let all = self.tensors();
        all.binary_search_by(|t| t.name.as_str().cmp(name)).ok().map(|i| &all[i])
    }
}
