//! tfconv: original TensorFlow-era checkpoints to Hugging Face folders, verified against TensorFlow.

pub mod error;
pub mod source;

pub use error::{Error, Result};
