//! The command line: commands, flags and exit codes. Behaviour lives in the library modules.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tfconv_models::arch::model_types;

use crate::error::{Error, InputFault};
use crate::guard::{self, Protected};
use crate::sink::PendingFile;

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const MISMATCH: u8 = 1;
    pub const USAGE: u8 = 2;
    /// An input is corrupt: bytes that do not parse or fail a check.
    pub const INPUT: u8 = 3;
    pub const CONVERSION: u8 = 4;
    pub const OUTPUT: u8 = 5;
    pub const REFERENCE_UNAVAILABLE: u8 = 6;
    /// `verify --attest`: a file changed since the report was written.
    pub const ATTESTATION: u8 = 7;
    /// The output's file system is too full for the output (found before or while writing).
    pub const NO_SPACE: u8 = 8;
    /// A file the input needs is not there (a shard, an index, the path itself).
    pub const INPUT_MISSING: u8 = 9;
    /// An input file is shorter than its index or header says.
    pub const INPUT_TRUNCATED: u8 = 10;
    /// The path holds several checkpoints and nothing says which one.
    pub const INPUT_AMBIGUOUS: u8 = 11;
    /// The system refuses to read an input (link loop, permission, not a regular file).
    pub const INPUT_UNREADABLE: u8 = 12;
    /// A well-formed input of a kind tfconv does not convert.
    pub const INPUT_UNSUPPORTED: u8 = 13;
}

pub fn exit_code(e: &Error) -> u8 {
    if let Some(fault) = e.input_fault() {
        return match fault {
            InputFault::Corrupt => exit::INPUT,
            InputFault::Missing => exit::INPUT_MISSING,
            InputFault::Truncated => exit::INPUT_TRUNCATED,
            InputFault::Ambiguous => exit::INPUT_AMBIGUOUS,
            InputFault::Unreadable => exit::INPUT_UNREADABLE,
            InputFault::Unsupported => exit::INPUT_UNSUPPORTED,
        };
    }
    match e {
        Error::Usage(_) => exit::USAGE,
        Error::Input { .. } | Error::Tensor { .. } | Error::Resolve { .. } | Error::Io { .. } => exit::INPUT,
        Error::Mapping(_) => exit::CONVERSION,
        Error::Output(_) | Error::Write { .. } => exit::OUTPUT,
        Error::ReferenceUnavailable(_) => exit::REFERENCE_UNAVAILABLE,
        Error::NoSpace { .. } => exit::NO_SPACE,
    }
}

#[derive(Parser)]
#[command(name = "tfconv", version, about = "Convert original TensorFlow-era checkpoints to Hugging Face folders, verified against TensorFlow")]
struct Cli {
    /// No progress bars (there are none anyway when stderr is not a terminal).
    #[arg(long, global = true)]
    quiet: bool,
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
    /// Model type (bert, albert, gpt2, openai-gpt); detected from the variable names when absent.
    #[arg(long, visible_alias = "model_type")]
    model_type: Option<String>,
    /// The original checkpoint: prefix, one of its files, or its directory.
    #[arg(long, visible_alias = "tf_checkpoint")]
    tf_checkpoint: PathBuf,
    /// The original config file (default: the model's usual name beside the checkpoint:
    /// bert_config.json, albert_config.json, hparams.json, config.json; OpenAI GPT's release
    /// has none and needs none).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder. A path ending in .bin or .safetensors adds pytorch_model.bin or
    /// model.safetensors, with config.json and tokenizer files, to that path's folder instead.
    #[arg(long, required_unless_present_any = ["pytorch_dump_output", "print_plan"])]
    output: Option<PathBuf>,
    /// transformers convert's name for --output (give one of the two).
    #[arg(long = "pytorch_dump_output", visible_alias = "pytorch-dump-output")]
    pytorch_dump_output: Option<PathBuf>,
    /// Recorded as `finetuning_task` in config.json; for OpenAI GPT it asks for
    /// OpenAIGPTDoubleHeadsModel.
    #[arg(long, visible_alias = "finetuning_task_name")]
    finetuning_task_name: Option<String>,
    /// Stored dtype of floating-point weights.
    #[arg(long, default_value = "float32", value_parser = ["float32", "float16", "bfloat16"])]
    dtype: String,
    /// Largest weight file before sharding, in HF's units (decimal: 5GB = 5e9 bytes).
    #[arg(long, default_value = "5GB", value_parser = parse_shard_size)]
    max_shard_size: u64,
    /// Replace tfconv's own earlier output (never anything else).
    #[arg(long)]
    force: bool,
    /// Override the lower-casing inferred from vocab.txt.
    #[arg(long)]
    do_lower_case: Option<bool>,
    /// The activation the training code really used, when the config's name is ambiguous
    /// (BERT: google-research/bert's "gelu" is erf before Feb 2019, tanh after; pass gelu_new
    /// for the latter). Written to config.json; the TensorFlow reference follows it.
    #[arg(long)]
    hidden_act: Option<String>,
    /// Set a key of the original config, repeatable: `--set n_head=12 --set afn=relu`. For a
    /// release that ships no config (OpenAI GPT) or one that says less than the training code
    /// used. VALUE is read as JSON (a number, true, "text") or else as a string. Written to
    /// config.json; the TensorFlow reference follows it.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    set: Vec<(String, serde_json::Value)>,
    /// Print the mapping plan and exit without writing.
    #[arg(long, conflicts_with_all = ["verify", "report"])]
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
    #[arg(long, required_unless_present_any = ["attest", "manifest"])]
    hf_dir: Option<PathBuf>,
    /// The original checkpoint it claims to come from.
    #[arg(long, visible_alias = "tf_checkpoint", required_unless_present_any = ["attest", "manifest"])]
    tf_checkpoint: Option<PathBuf>,
    /// Verify every [[model]] entry of a TOML manifest (checkpoint, config, folder, optional
    /// name and flags), print one summary table, exit non-zero if any entry fails.
    #[arg(long, value_name = "TOML", conflicts_with_all = ["hf_dir", "tf_checkpoint", "config", "attest", "report_html", "hidden_act", "set", "trust_folder_config", "seed", "probes", "seq_len", "atol", "rtol"])]
    manifest: Option<PathBuf>,
    /// Check instead that every file a JSON report recorded still has the recorded SHA-256
    /// (exit 7 naming each changed file); nothing is run again.
    #[arg(long, value_name = "REPORT", conflicts_with_all = ["hf_dir", "tf_checkpoint", "config", "report", "junit", "report_html"])]
    attest: Option<PathBuf>,
    /// The original config file the reference is built from (default: the model's usual name
    /// beside the checkpoint, as for convert). The folder's own config.json is what is being
    /// checked, not the reference.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Replace an existing --report file.
    #[arg(long)]
    force: bool,
    /// The activation the original was trained with, as for `convert --hidden-act`.
    #[arg(long)]
    hidden_act: Option<String>,
    /// Set a key of the original config, as for `convert --set`.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_setting)]
    set: Vec<(String, serde_json::Value)>,
    /// With no original config, build the reference from the folder's own config.json. Mistakes
    /// in that file then go unnoticed, so this must be asked for.
    #[arg(long)]
    trust_folder_config: bool,
    #[command(flatten)]
    flags: VerifyFlags,
}

#[derive(clap::Args)]
struct VerifyFlags {
    /// Seed of the probe inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of probe sequences (rows of different lengths).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    probes: u64,
    /// Probe sequence length (default: the model's max positions).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seq_len: Option<u64>,
    /// Absolute tolerance (default by stored dtype).
    #[arg(long, value_parser = parse_tolerance, allow_negative_numbers = true)]
    atol: Option<f64>,
    /// Tolerance relative to the largest reference value (default by stored dtype).
    #[arg(long, value_parser = parse_tolerance, allow_negative_numbers = true)]
    rtol: Option<f64>,
    /// Write the JSON report here (with convert, needs --verify).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write JUnit XML here: one test case per stage, the numbers in each failure.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a self-contained HTML page here: verdict, error-per-stage chart, table, provenance.
    #[arg(long, value_name = "FILE")]
    report_html: Option<PathBuf>,
    /// A progress bar over the stages (on a terminal); off under the global --quiet.
    #[arg(skip)]
    progress: bool,
}

/// The report files of one verification, each claimed (a temporary file beside it) before any work.
#[derive(Default)]
struct ReportFiles {
    json: Option<PendingFile>,
    junit: Option<PendingFile>,
    html: Option<PendingFile>,
}

impl VerifyFlags {
    fn report_paths(&self) -> [(&'static str, Option<&PathBuf>); 3] {
        [("--report", self.report.as_ref()), ("--junit", self.junit.as_ref()), ("--report-html", self.report_html.as_ref())]
    }
}

impl VerifyFlags {
    fn options(&self, reference_config: crate::verify::ReferenceConfig) -> crate::verify::VerifyOptions {
        crate::verify::VerifyOptions {
            progress: self.progress,
            seed: self.seed,
            batch: self.probes as usize,
            seq_len: self.seq_len.map(|n| n as usize),
            atol: self.atol,
            rtol: self.rtol,
            reference_config,
        }
    }
}

/// What the report says about the reference's config: the file, whether it is the folder's
/// own, and the command-line overrides applied to it.
fn reference_config(path: &std::path::Path, trusted_folder_config: bool, overrides: Vec<(String, serde_json::Value)>) -> crate::verify::ReferenceConfig {
    crate::verify::ReferenceConfig { path: Some(path.to_path_buf()), trusted_folder_config, overrides: overrides.into_iter().collect() }
}

/// The original-config keys the command line sets: `--hidden-act`, then each `--set`.
fn overrides(hidden_act: &Option<String>, set: &[(String, serde_json::Value)]) -> Vec<(String, serde_json::Value)> {
    let act = hidden_act.iter().map(|a| ("hidden_act".to_string(), serde_json::Value::from(a.as_str())));
    act.chain(set.iter().cloned()).collect()
}

/// `KEY=VALUE`, VALUE as JSON when it parses, else as a string.
fn parse_setting(s: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = s.split_once('=').ok_or_else(|| format!("'{s}' is not KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("'{s}' has no key"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::from(value));
    Ok((key.to_string(), value))
}

fn parse_shard_size(s: &str) -> Result<u64, String> {
    crate::sink::parse_size(s).map_err(|e| e.to_string())
}

fn parse_tolerance(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(_) => Err(format!("'{s}' must be a finite number ≥ 0")),
        Err(e) => Err(format!("'{s}': {e}")),
    }
}

fn parse_dtype(s: &str) -> crate::source::DType {
    match s {
        "float16" => crate::source::DType::F16,
        "bfloat16" => crate::source::DType::BF16,
        _ => crate::source::DType::F32,
    }
}

/// Checks `--report`, `--junit` and `--report-html` like every other output path (and against
/// each other), then claims them, so an unwritable location fails before any work.
fn claim_reports(flags: &VerifyFlags, protected: &Protected, force: bool) -> crate::Result<ReportFiles> {
    let mut protected = protected.clone();
    let mut checked = Vec::new();
    for (flag, path) in flags.report_paths() {
        let Some(path) = path else { checked.push(None); continue };
        // Each claimed path is an output the next one may not overlap.
        let resolved = guard::check_target(path, flag, guard::Kind::File, &protected, force)?;
        protected.add_output(&resolved);
        checked.push(Some(resolved));
    }
    let claim = |i: usize| checked[i].as_ref().map(|p| PendingFile::create(p)).transpose();
    Ok(ReportFiles { json: claim(0)?, junit: claim(1)?, html: claim(2)? })
}

/// Refuses a `--seq-len` the model cannot take, rather than silently using less.
fn check_seq_len(arch: &dyn tfconv_models::arch::Architecture, flags: &VerifyFlags) -> crate::Result<()> {
    let (Some(asked), Some(max)) = (flags.seq_len, arch.max_seq_len()) else { return Ok(()) };
    if asked as usize > max {
        return Err(Error::Usage(format!("--seq-len {asked} is longer than the model's {max} positions; use at most {max}")));
    }
    Ok(())
}

/// The files a verification reads, by role, for the report's provenance: the checkpoint's
/// files, the original config and the vocabulary files beside either.
fn input_files(ckpt: &dyn crate::source::Checkpoint, arch: &dyn tfconv_models::arch::Architecture, config: &std::path::Path) -> Vec<(&'static str, Vec<PathBuf>)> {
    let mut dirs = vec![crate::convert::checkpoint_dir(ckpt.path())];
    dirs.push(crate::convert::checkpoint_dir(config));
    let dirs: Vec<&std::path::Path> = dirs.iter().map(PathBuf::as_path).collect();
    let config = if config.is_file() { vec![config.to_path_buf()] } else { Vec::new() };
    vec![("checkpoint", ckpt.files()), ("config", config), ("vocabulary", arch.vocabulary_sources(&dirs))]
}

fn run_verify(
    folder: &std::path::Path,
    ckpt: &dyn crate::source::Checkpoint,
    arch: &dyn tfconv_models::arch::Architecture,
    plan: &tfconv_models::plan::Plan,
    flags: &VerifyFlags,
    reference: crate::verify::ReferenceConfig,
    report_files: ReportFiles,
) -> crate::Result<u8> {
    // Hashed before the run: the report attests the bytes that were verified.
    let config_path = reference.path.clone().unwrap_or_default();
    let (inputs, outputs) = crate::verify::provenance::collect(&input_files(ckpt, arch, &config_path), folder)?;
    let mut report = crate::verify::verify(folder, ckpt, arch, plan, &flags.options(reference))?;
    report.provenance = Some(crate::verify::provenance::Provenance {
        tfconv_version: env!("CARGO_PKG_VERSION").to_string(),
        tensorflow_version: report.tensorflow_version.clone(),
        onednn: crate::tf_runtime::onednn_enabled(),
        probe_seed: report.probes.seed,
        tolerance: report.tolerance,
        isolated_tolerance: report.isolated_tolerance,
        inputs,
        outputs,
    });
    eprint!("{}", crate::verify::render_table(&report));
    write_reports(&report, report_files)?;
    Ok(if report.pass { exit::OK } else { exit::MISMATCH })
}

fn write_reports(report: &crate::verify::VerifyReport, files: ReportFiles) -> crate::Result<()> {
    if let Some(file) = files.json {
        let json = serde_json::to_vec_pretty(report).expect("JSON of plain values");
        eprintln!("report: {}", file.commit(&json)?.display());
    }
    if let Some(file) = files.junit {
        let outcome = crate::verify::junit::Outcome::Report(report);
        let xml = crate::verify::junit::document(&[(crate::verify::junit::suite_name(report), outcome)]);
        eprintln!("junit: {}", file.commit(xml.as_bytes())?.display());
    }
    if let Some(file) = files.html {
        let html = crate::verify::html::page(report);
        eprintln!("report-html: {}", file.commit(html.as_bytes())?.display());
    }
    Ok(())
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    crate::interrupt::install();
    match run(cli.command, cli.quiet) {
        Ok(code) => ExitCode::from(code),
        // A reader that went away (`tfconv inspect … | head`) is not an error, as for any Unix tool.
        Err(Error::Write { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn run(command: Command, quiet: bool) -> crate::Result<u8> {
    match command {
        Command::Inspect { path, json } => {
            let ckpt = crate::source::open(&path)?;
            let mut stdout = std::io::stdout().lock();
            if json {
                let text = serde_json::to_string_pretty(&crate::inspect::to_json(ckpt.as_ref())).expect("JSON of plain values");
                writeln!(stdout, "{text}").map_err(|e| Error::write("<stdout>", e))?;
            } else {
                crate::inspect::print_table(ckpt.as_ref(), &mut stdout)?;
            }
        }
        Command::Convert(mut args) => {
            args.verify_args.progress = !quiet;
            return convert(args, quiet);
        }
        Command::Verify(mut args) => {
            args.flags.progress = !quiet;
            return verify(args, quiet);
        }
        Command::SetupTf => {
            let dir = crate::tf_runtime::install()?;
            println!("TensorFlow {} ready in {}", crate::tf_runtime::version()?, dir.display());
        }
    }
    Ok(exit::OK)
}

fn convert(args: ConvertArgs, quiet: bool) -> crate::Result<u8> {
    if let Some(t) = &args.model_type {
        if !model_types().contains(&t.as_str()) {
            return Err(Error::Usage(format!("--model-type {t}: not supported (supported: {})", model_types().join(", "))));
        }
    }
    for (flag, path) in args.verify_args.report_paths() {
        if path.is_some() && !args.verify {
            return Err(Error::Usage(format!("{flag} writes the verification report, so it needs --verify")));
        }
    }
    let output = match (&args.output, &args.pytorch_dump_output) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage(
                "--output and --pytorch_dump_output are the same option (the second is transformers' name for it); give one".into(),
            ))
        }
        (Some(p), None) => (p.clone(), "--output"),
        (None, Some(p)) => (p.clone(), "--pytorch_dump_output"),
        (None, None) => (PathBuf::new(), "--output"),
    };
    let (output, output_flag) = output;
    let opts = crate::convert::ConvertOptions {
        checkpoint: args.tf_checkpoint.clone(),
        model_type: args.model_type.clone(),
        config: args.config.clone(),
        output,
        dtype: parse_dtype(&args.dtype),
        max_shard_size: args.max_shard_size,
        force: args.force,
        finetuning_task: args.finetuning_task_name.clone(),
        tokenizer: tfconv_models::arch::TokenizerOptions { do_lower_case: args.do_lower_case },
        progress: !quiet,
        config_overrides: overrides(&args.hidden_act, &args.set),
        output_flag,
    };
    if args.print_plan {
        let prepared = crate::convert::prepare(&opts)?;
        let plan = &prepared.plan;
        let mut stdout = std::io::stdout().lock();
        let mut out = |line: String| writeln!(stdout, "{line}").map_err(|e| Error::write("<stdout>", e));
        out(format!("# {} ({} tensors, {} skipped, {} dropped)", prepared.arch.class_name(), plan.mappings.len() + plan.synthesized.len(), plan.skipped.len(), plan.dropped.len()))?;
        for m in &plan.mappings {
            let t: Vec<String> = m.transforms.iter().map(|t| t.to_string()).collect();
            out(format!("{} <- {} [{}] {:?}", m.target, m.source, t.join(", "), m.shape))?;
        }
        for s in &plan.synthesized {
            out(format!("{} <- {} {:?} ({})", s.target, s.fill, s.shape, s.reason))?;
        }
        for (name, role) in &plan.skipped {
            out(format!("skip {name} ({role})"))?;
        }
        for (name, why) in &plan.dropped {
            out(format!("drop {name} ({why})"))?;
        }
        return Ok(exit::OK);
    }
    // Every check before any write: inputs, output paths, report path, the reference runtime.
    let mut conversion = crate::convert::check(&opts)?;
    if args.verify {
        check_seq_len(conversion.arch(), &args.verify_args)?;
    }
    let report_files = claim_reports(&args.verify_args, conversion.protected(), args.force)?;
    conversion.claim()?;
    if args.verify {
        crate::tf_runtime::load()?;
    }
    let done = conversion.write()?;
    eprintln!(
        "converted {} as {} ({} tensors, {} optimizer/bookkeeping variables skipped) into {}",
        done.checkpoint.path().display(),
        done.arch.class_name(),
        done.plan.mappings.len() + done.plan.synthesized.len(),
        done.plan.skipped.len(),
        done.folder.display()
    );
    for s in &done.plan.synthesized {
        eprintln!("  made {} as {} ({})", s.target, s.fill, s.reason);
    }
    for (name, why) in &done.plan.dropped {
        eprintln!("  dropped {name} ({why})");
    }
    for file in &done.files {
        eprintln!("  wrote {}", file.display());
    }
    for (file, why) in &done.skipped {
        eprintln!("  skipped {}: {why}", file.display());
    }
    for note in &done.notes {
        eprintln!("note: {note}");
    }
    if args.verify {
        let reference = reference_config(&done.config_path, false, overrides(&args.hidden_act, &args.set));
        return run_verify(&done.folder, done.checkpoint.as_ref(), done.arch.as_ref(), &done.plan, &args.verify_args, reference, report_files);
    }
    Ok(exit::OK)
}

/// `verify --attest REPORT`: re-hashes every file the report recorded.
fn attest(report: &std::path::Path) -> crate::Result<u8> {
    let found = crate::verify::provenance::attest(report)?;
    for c in &found.changed {
        eprintln!("changed: {} ({}): {}", c.path.display(), c.role, c.why);
    }
    if let Some(first) = found.changed.first() {
        eprintln!(
            "error: attestation failed: {} of the {} files recorded in {} changed since it was written, first {}",
            found.changed.len(),
            found.files,
            report.display(),
            first.path.display()
        );
        return Ok(exit::ATTESTATION);
    }
    if !found.pass {
        eprintln!("error: the {} files are those {} recorded, but that report records a FAILED verification of {}", found.files, report.display(), found.class);
        return Ok(exit::MISMATCH);
    }
    eprintln!("attested: the {} files recorded in {} are unchanged; it records a passed verification of {}", found.files, report.display(), found.class);
    Ok(exit::OK)
}

/// `verify --manifest`: every entry in its own process, one table, JUnit and JSON summaries.
fn verify_manifest(manifest: &std::path::Path, flags: &VerifyFlags, force: bool, quiet: bool) -> crate::Result<u8> {
    let mut protected = Protected::new();
    protected.add_input(manifest);
    for path in crate::manifest::read_paths(manifest)? {
        protected.add_input_folder(&path);
    }
    let files = claim_reports(flags, &protected, force)?;
    let rows = crate::manifest::run(manifest, quiet)?;
    eprint!("{}", crate::manifest::render(&rows));
    if let Some(file) = files.json {
        let entries: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| serde_json::json!({"name": r.name, "class": r.class, "result": r.result, "passed": r.passed(), "exit_code": r.code, "seconds": r.seconds, "worst_rel_error": r.worst_rel_error, "error": r.error, "report": r.report}))
            .collect();
        let json = serde_json::json!({"manifest": std::path::absolute(manifest).unwrap_or(manifest.to_path_buf()), "pass": rows.iter().all(|r| r.passed()), "entries": entries});
        eprintln!("report: {}", file.commit(&serde_json::to_vec_pretty(&json).expect("JSON of plain values"))?.display());
    }
    if let Some(file) = files.junit {
        // The entries' reports come back as JSON; typed again for the XML writer.
        let reports: Vec<Option<crate::verify::VerifyReport>> = rows.iter().map(|r| r.report.as_ref().and_then(crate::verify::VerifyReport::from_json)).collect();
        let suites: Vec<(String, crate::verify::junit::Outcome)> = rows
            .iter()
            .zip(&reports)
            .map(|(row, report)| match report {
                Some(report) => (row.name.clone(), crate::verify::junit::Outcome::Report(report)),
                None => (row.name.clone(), crate::verify::junit::Outcome::Error(row.name.clone(), row.error.clone().unwrap_or_else(|| row.result.clone()))),
            })
            .collect();
        eprintln!("junit: {}", file.commit(crate::verify::junit::document(&suites).as_bytes())?.display());
    }
    Ok(match rows.iter().find(|r| !r.passed()) {
        None => exit::OK,
        Some(_) if rows.iter().any(|r| r.code == Some(exit::MISMATCH as i32)) => exit::MISMATCH,
        Some(r) => r.code.and_then(|c| u8::try_from(c).ok()).filter(|&c| c != 0).unwrap_or(exit::INPUT),
    })
}

fn verify(args: VerifyArgs, quiet: bool) -> crate::Result<u8> {
    if let Some(report) = &args.attest {
        return attest(report);
    }
    if let Some(manifest) = &args.manifest {
        return verify_manifest(manifest, &args.flags, args.force, quiet);
    }
    let (Some(hf_dir), Some(tf_checkpoint)) = (args.hf_dir.clone(), args.tf_checkpoint.clone()) else {
        return Err(Error::Usage("verify needs --hf-dir and --tf-checkpoint (or --attest REPORT)".into()));
    };
    // Inputs first: a missing folder is an input error whether or not TensorFlow is there.
    let config_path = hf_dir.join("config.json");
    if !hf_dir.is_dir() {
        return Err(Error::input(&hf_dir, "no such folder (--hf-dir must be a converted Hugging Face folder)")
            .because(InputFault::Missing));
    }
    let config = crate::verify::folder_config(&hf_dir)?;
    let ckpt = crate::source::open(&tf_checkpoint)?;
    let vars = crate::convert::source_vars(ckpt.as_ref());
    // The reference (and the plan of what the folder must hold) is the ORIGINAL model: its own
    // config and variables. Taking it from the folder's config.json would mirror any mistake in
    // that file on both sides, where it could never diverge.
    let folder_type = config.get("model_type").and_then(|t| t.as_str()).map(str::to_string);
    let model_type = match &folder_type {
        Some(t) if !model_types().contains(&t.as_str()) => {
            return Err(Error::input(
                &config_path,
                format!("model_type '{t}' is not supported by tfconv verify (supported: {})", model_types().join(", ")),
            )
            .because(InputFault::Unsupported))
        }
        Some(t) => t.clone(),
        None => tfconv_models::arch::detect_model_type(&vars)
            .map_err(|e| Error::Mapping(format!("{}: {e}", ckpt.path().display())))?
            .to_string(),
    };
    let (original_path, original, trusted) = match crate::convert::find_config(ckpt.as_ref(), args.config.as_deref(), &model_type) {
        Ok((path, value)) => (path, value, false),
        Err(Error::Resolve { msg: why, .. }) if args.trust_folder_config => {
            eprintln!("warning: {why}; the reference uses the folder's own config.json (--trust-folder-config), so mistakes in that file cannot be detected");
            (config_path.clone(), config.clone(), true)
        }
        Err(Error::Resolve { msg: why, fault }) => {
            return Err(Error::resolve(fault, format!(
                "{why}. The reference must come from the original config, or a mistake in the folder's config.json \
                 would be mirrored on both sides; pass --trust-folder-config to use the folder's config.json anyway"
            )))
        }
        Err(e) => return Err(e),
    };
    // The folder's finetuning_task is what it was converted for (the class OpenAI GPT's folder
    // holds), a choice made on the command line, not a fact of the original: taken as given.
    let mut settings = overrides(&args.hidden_act, &args.set);
    if let Some(task) = config.get(crate::convert::FINETUNING_TASK).filter(|t| !t.is_null()) {
        settings.push((crate::convert::FINETUNING_TASK.into(), task.clone()));
    }
    let (arch, plan) = crate::convert::original_model(ckpt.as_ref(), &vars, &model_type, &original_path, original, &settings)?;
    check_seq_len(arch.as_ref(), &args.flags)?;
    let mut protected = crate::convert::checkpoint_inputs(ckpt.as_ref(), &original_path);
    // The vocabulary beside the checkpoint is read too (its hashes go into the report).
    for file in input_files(ckpt.as_ref(), arch.as_ref(), &original_path).into_iter().flat_map(|(_, files)| files) {
        protected.add_input(&file);
    }
    protected.add_input_folder(&hf_dir);
    let report_files = claim_reports(&args.flags, &protected, args.force)?;
    crate::tf_runtime::load()?;
    let reference = reference_config(&original_path, trusted, overrides(&args.hidden_act, &args.set));
    run_verify(&hf_dir, ckpt.as_ref(), arch.as_ref(), &plan, &args.flags, reference, report_files)
}
