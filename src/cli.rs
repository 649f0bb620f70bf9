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
    /// Convert an original checkpoint into a Hugging Face folder (optionally verified).
    Convert(ConvertArgs),
    /// Verify an existing Hugging Face folder against the original checkpoint in TensorFlow.
    Verify(VerifyArgs),
    /// Install the pinned TensorFlow used as the verification reference.
    SetupTf,
}

#[derive(clap::Args)]
struct ConvertArgs {
    /// Model type (bert); detected from the variable names when absent.
    #[arg(long, alias = "model_type")]
    model_type: Option<String>,
    /// The original checkpoint: prefix, one of its files, or its directory.
    #[arg(long, alias = "tf_checkpoint")]
    tf_checkpoint: PathBuf,
    /// The original config file (default: bert_config.json beside the checkpoint).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder; a path ending in .bin writes pytorch_model.bin in that folder instead.
    #[arg(long, alias = "pytorch_dump_output")]
    output: PathBuf,
    /// Recorded as `finetuning_task` in config.json.
    #[arg(long, alias = "finetuning_task_name")]
    finetuning_task_name: Option<String>,
    /// Stored dtype of floating-point weights.
    #[arg(long, default_value = "float32", value_parser = ["float32", "float16", "bfloat16"])]
    dtype: String,
    /// Largest weight file before sharding, in HF's units (decimal: 5GB = 5e9 bytes).
    #[arg(long, default_value = "5GB")]
    max_shard_size: String,
    /// Replace an existing output.
    #[arg(long)]
    force: bool,
    /// Override the lower-casing inferred from vocab.txt.
    #[arg(long)]
    do_lower_case: Option<bool>,
    /// Print the mapping plan and exit without writing.
    #[arg(long)]
    print_plan: bool,
    /// Verify the written folder against the original in TensorFlow; exit 1 on mismatch.
    #[arg(long)]
    verify: bool,
    #[command(flatten)]
    verify_args: VerifyFlags,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The Hugging Face folder to check.
    #[arg(long)]
    hf_dir: PathBuf,
    /// The original checkpoint it claims to come from.
    #[arg(long, alias = "tf_checkpoint")]
    tf_checkpoint: PathBuf,
    /// The original config file the reference is built from (default: bert_config.json beside
    /// the checkpoint). The folder's own config.json is what is being checked, not the reference.
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: VerifyFlags,
}

#[derive(clap::Args)]
struct VerifyFlags {
    /// Seed of the probe inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of probe sequences (rows of different lengths).
    #[arg(long, default_value_t = 3)]
    probes: usize,
    /// Probe sequence length (default: the model's max positions).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Absolute tolerance (default by stored dtype).
    #[arg(long)]
    atol: Option<f64>,
    /// Tolerance relative to the largest reference value (default by stored dtype).
    #[arg(long)]
    rtol: Option<f64>,
    /// Write the JSON report here.
    #[arg(long)]
    report: Option<PathBuf>,
}

impl VerifyFlags {
    fn options(&self) -> crate::verify::VerifyOptions {
        crate::verify::VerifyOptions { seed: self.seed, batch: self.probes, seq_len: self.seq_len, atol: self.atol, rtol: self.rtol }
    }
}

fn parse_dtype(s: &str) -> crate::source::DType {
    match s {
        "float16" => crate::source::DType::F16,
        "bfloat16" => crate::source::DType::BF16,
        _ => crate::source::DType::F32,
    }
}

fn run_verify(
    folder: &std::path::Path,
    ckpt: &dyn crate::source::Checkpoint,
    arch: &dyn tfconv_models::arch::Architecture,
    plan: &tfconv_models::plan::Plan,
    flags: &VerifyFlags,
) -> crate::Result<u8> {
    let report = crate::verify::verify(folder, ckpt, arch, plan, &flags.options())?;
    eprint!("{}", crate::verify::render_table(&report));
    if let Some(path) = &flags.report {
        let json = serde_json::to_vec_pretty(&report).expect("JSON of plain values");
        std::fs::write(path, json).map_err(|e| Error::io(path, e))?;
    }
    Ok(if report.pass { exit::OK } else { exit::MISMATCH })
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
        Command::Convert(args) => {
            let opts = crate::convert::ConvertOptions {
                checkpoint: args.tf_checkpoint.clone(),
                model_type: args.model_type.clone(),
                config: args.config.clone(),
                output: args.output.clone(),
                dtype: parse_dtype(&args.dtype),
                max_shard_size: crate::sink::parse_size(&args.max_shard_size)?,
                force: args.force,
                finetuning_task: args.finetuning_task_name.clone(),
                tokenizer: tfconv_models::arch::TokenizerOptions { do_lower_case: args.do_lower_case },
                progress: true,
            };
            if args.print_plan {
                let (_, arch, plan) = crate::convert::prepare(&opts)?;
                println!("# {} ({} tensors, {} skipped, {} dropped)", arch.class_name(), plan.mappings.len(), plan.skipped.len(), plan.dropped.len());
                for m in &plan.mappings {
                    let t: Vec<String> = m.transforms.iter().map(|t| t.to_string()).collect();
                    println!("{} <- {} [{}] {:?}", m.target, m.source, t.join(", "), m.shape);
                }
                for (name, role) in &plan.skipped {
                    println!("skip {name} ({role})");
                }
                for (name, why) in &plan.dropped {
                    println!("drop {name} ({why})");
                }
                return Ok(exit::OK);
            }
            if args.verify {
                // Fail before writing anything when the reference cannot run.
                crate::tf_runtime::load()?;
            }
            let done = crate::convert::convert(&opts)?;
            eprintln!(
                "wrote {} ({}, {} tensors, {} optimizer/bookkeeping variables skipped)",
                done.folder.display(),
                done.arch.class_name(),
                done.plan.mappings.len(),
                done.plan.skipped.len()
            );
            if args.verify {
                return run_verify(&done.folder, done.checkpoint.as_ref(), done.arch.as_ref(), &done.plan, &args.verify_args);
            }
        }
        Command::Verify(args) => {
            crate::tf_runtime::load()?;
            let config_path = args.hf_dir.join("config.json");
            let text = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
            let config: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| Error::input(&config_path, format!("not valid JSON: {e}")))?;
            let ckpt = crate::source::open(&args.tf_checkpoint)?;
            let vars = crate::convert::source_vars(ckpt.as_ref());
            // The reference (and the plan of what the folder must hold) is the ORIGINAL model: its
            // own config and variables. Taking it from the folder's config.json would mirror any
            // mistake in that file on both sides, where it could never diverge.
            let model_type = match config.get("model_type").and_then(|t| t.as_str()) {
                Some(t) => t.to_string(),
                None => tfconv_models::arch::detect_model_type(&vars)
                    .map_err(|e| Error::Mapping(format!("{}: {e}", ckpt.path().display())))?
                    .to_string(),
            };
            let (original_path, original) = match crate::convert::find_config(ckpt.path(), args.config.as_deref()) {
                Ok(found) => found,
                Err(Error::Resolve(why)) => {
                    eprintln!(
                        "warning: {why}; the reference uses the folder's own config.json, so mistakes in that file cannot be detected"
                    );
                    (config_path.clone(), config.clone())
                }
                Err(e) => return Err(e),
            };
            let arch = tfconv_models::arch::from_original(&model_type, &original, &vars)
                .map_err(|e| Error::input(&original_path, e))?;
            let plan = arch
                .plan(&vars)
                .map_err(|e| Error::Mapping(format!("{} as {}: {e}", ckpt.path().display(), arch.class_name())))?;
            return run_verify(&args.hf_dir, ckpt.as_ref(), arch.as_ref(), &plan, &args.flags);
        }
        Command::SetupTf => {
            let dir = crate::tf_runtime::install()?;
            println!("TensorFlow {} ready in {}", crate::tf_runtime::version()?, dir.display());
        }
    }
    Ok(exit::OK)
}
