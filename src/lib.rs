//! tfconv: original TensorFlow-era checkpoints to Hugging Face folders, verified against TensorFlow.

pub mod cli;
pub mod convert;
pub mod error;
pub mod guard;
pub mod inspect;
pub mod interrupt;
pub mod manifest;
pub mod progress;
pub use tfconv_models::roles;
pub mod sink;
pub mod source;
pub mod synthetic;
pub mod tf_io;
pub mod tf_runtime;
pub mod verify;

pub use error::{Error, InputFault, Result};
