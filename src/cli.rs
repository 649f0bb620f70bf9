//! The command line: commands, flags and exit codes. Behaviour lives in the library modules.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::Error;

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const MISMATCH: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INPUT: u8 = 3;
    pub const CONVERSION: u8 = 4;
    pub const OUTPUT: u8 = 5;
    pub const REFERENCE_UNAVAILABLE: u8 = 6;
}

pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Input { .. } | Error::Tensor { .. } | Error::Resolve(_) => exit::INPUT,
        Error::Io { .. } => exit::INPUT,
        Error::Mapping(_) => exit::CONVERSION,
        Error::Output(_) => exit::OUTPUT,
        Error::ReferenceUnavailable(_) => exit::REFERENCE_UNAVAILABLE,
    }
}

#[derive(Parser)]
#[command(name = "tfconv", version, about = "Convert original TensorFlow-era checkpoints to Hugging Face folders, verified against TensorFlow")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the tensors of a checkpoint: name, dtype, shape, bytes and role.
    Inspect {
        /// A checkpoint prefix, one of its files, or a directory holding one checkpoint.
        path: PathBuf,
        /// Print machine-readable JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Install the pinned TensorFlow used as the verification reference.
    SetupTf,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn run(command: Command) -> crate::Result<u8> {
    match command {
        Command::Inspect { path, json } => {
            let ckpt = crate::source::open(&path)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&crate::inspect::to_json(ckpt.as_ref())).expect("JSON of plain values"));
            } else {
                crate::inspect::print_table(ckpt.as_ref(), &mut std::io::stdout().lock())?;
            }
        }
        Command::SetupTf => {
            let dir = crate::tf_runtime::install()?;
            println!("TensorFlow {} ready in {}", crate::tf_runtime::version()?, dir.display());
        }
    }
    Ok(exit::OK)
}
