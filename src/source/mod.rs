//! Checkpoint readers. Every format is opened into a [`Checkpoint`]: a list of tensors with
//! their names, dtypes and shapes, plus access to each tensor's raw little-endian bytes.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::error::Result;

mod dtype;
pub use dtype::DType;

pub mod bundle;
mod mapped;
pub mod numpy;
mod names;
pub mod ordered_code;
pub mod pickle;
pub mod proto;
pub mod pth;
pub mod resolve;
pub mod slices;
pub mod sstable;
pub mod testing;
pub mod tf_v1;

pub use bundle::Bundle;
pub use numpy::NumpyShards;
pub use pth::PthCheckpoint;
pub use resolve::{resolve, Resolved};
pub use tf_v1::V1Checkpoint;

/// Resolves a user-given path (prefix, `.index`/`.data-*`/`.meta` file, directory with a
/// `checkpoint` state file or a single checkpoint, V1 file, OpenAI GPT numpy folder, `torch.save`
/// file) and opens the checkpoint.
pub fn open(path: &Path) -> Result<Box<dyn Checkpoint>> {
    Ok(match resolve(path)? {
        Resolved::BundleV2 { prefix } => Box::new(Bundle::open(&prefix)?),
        Resolved::TensorSliceV1 { file } => Box::new(V1Checkpoint::open(&file)?),
        Resolved::NumpyShards { dir } => Box::new(NumpyShards::open(&dir)?),
        Resolved::TorchPickle { file } => Box::new(PthCheckpoint::open(&file)?),
    })
}

/// A tensor present in a checkpoint that the reader cannot represent (e.g. complex or quantized
/// dtype). It is not listed in [`Checkpoint::tensors`]; reading it returns an error with `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedTensor {
    pub name: String,
    /// TF `DataType` number, if the entry could be decoded that far.
    pub tf_dtype: Option<i32>,
    /// Why it cannot be read, e.g. "dtype DT_COMPLEX64 (DataType 8) is not supported".
    pub reason: String,
}

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
    /// Every file the checkpoint's data is read from (index and data shards, or V1 shards).
    fn files(&self) -> Vec<PathBuf>;
    /// All tensors, sorted by name. Internal bookkeeping keys (bundle header, slice entries) are not listed.
    fn tensors(&self) -> &[TensorInfo];
    /// Raw bytes of a fixed-size tensor in little-endian, row-major order, checksum verified.
    /// Borrowed straight from the mmap where possible.
    fn read(&self, name: &str) -> Result<Cow<'_, [u8]>>;
    /// Elements of a string tensor.
    fn read_strings(&self, name: &str) -> Result<Vec<Vec<u8>>>;

    /// A hint that `name` has been consumed: the reader may drop its pages from memory, so that
    /// a conversion's resident memory follows the tensor in hand, not the whole checkpoint.
    fn release(&self, _name: &str) {}

    /// Tensors that exist in the file but cannot be read by this reader (not in `tensors()`).
    fn unsupported(&self) -> &[UnsupportedTensor] {
        &[]
    }

    /// What the file says about the model besides its tensors, for formats that store the
    /// original config inside the checkpoint (a `torch.save` file's other entries: XLM's
    /// `params` and dictionary), as JSON. None where the config is a separate file.
    fn embedded_config(&self) -> Option<serde_json::Value> {
        None
    }

    fn info(&self, name: &str) -> Option<&TensorInfo> {
        let all = self.tensors();
        all.binary_search_by(|t| t.name.as_str().cmp(name)).ok().map(|i| &all[i])
    }
}
