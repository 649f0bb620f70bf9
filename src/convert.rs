//! `tfconv convert`: open the checkpoint, plan the mapping, stream every tensor into the output
//! folder, then write the config and tokenizer files. The folder appears only when complete.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use tfconv_models::arch::{self, Architecture, TokenizerOptions};
use tfconv_models::plan::{Plan, SourceVar, Transform};

use std::fs;

use crate::error::{Error, Result};
use crate::guard::{self, Protected};
use crate::sink::{self, FilesInto, Format, OutputDir, TensorSpec};
use crate::source::{self, Checkpoint, DType};

/// What to convert and how; mirrors the command line.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub checkpoint: PathBuf,
    pub model_type: Option<String>,
    /// The original config file; default: the architecture's usual name beside the checkpoint.
    pub config: Option<PathBuf>,
    /// The output folder, or a `….bin` file path (old `--pytorch_dump_output` usage).
    pub output: PathBuf,
    pub dtype: DType,
    pub max_shard_size: u64,
    pub force: bool,
    pub finetuning_task: Option<String>,
    pub tokenizer: TokenizerOptions,
    pub progress: bool,
    /// Keys replaced in the original config before anything is built from it (`--hidden-act`).
    pub config_overrides: Vec<(String, serde_json::Value)>,
    /// The flag `output` came from, for messages (`--output` or `--pytorch_dump_output`).
    pub output_flag: &'static str,
}

impl ConvertOptions {
    /// The command line's defaults: detected model type, config beside the checkpoint, float32,
    /// HF's 5 GB shards, no overwriting, no progress bar.
    pub fn new(checkpoint: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        ConvertOptions {
            checkpoint: checkpoint.into(),
            model_type: None,
            config: None,
            output: output.into(),
            dtype: DType::F32,
            max_shard_size: 5_000_000_000,
            force: false,
            finetuning_task: None,
            tokenizer: TokenizerOptions::default(),
            progress: false,
            config_overrides: Vec::new(),
            output_flag: "--output",
        }
    }
}

/// What a finished conversion produced.
pub struct Converted {
    /// The folder holding the output (the output folder, or the folder the files were added to).
    pub folder: PathBuf,
    /// Every file written, at its final path.
    pub files: Vec<PathBuf>,
    /// Files left as they were, with the reason (companions already present).
    pub skipped: Vec<(PathBuf, String)>,
    /// Things the user should know (e.g. no tokenizer files found).
    pub notes: Vec<String>,
    pub plan: Plan,
    pub arch: Box<dyn Architecture>,
    pub checkpoint: Box<dyn Checkpoint>,
    /// The original config file the model was built from.
    pub config_path: PathBuf,
}

/// The variables of a checkpoint as the mapping tables see them.
pub fn source_vars(ckpt: &dyn Checkpoint) -> Vec<SourceVar> {
    ckpt.tensors().iter().map(|t| SourceVar { name: t.name.clone(), shape: t.shape.clone() }).collect()
}

/// The original config: `explicit`, else the one the checkpoint carries itself (an XLM `.pth`),
/// else the first of `model_type`'s original config names (`bert_config.json`,
/// `albert_config.json`, then `config.json`) beside the checkpoint. Returns where it was read
/// (the checkpoint's own path for an embedded config) and its value.
pub fn find_config(ckpt: &dyn Checkpoint, explicit: Option<&Path>, model_type: &str) -> Result<(PathBuf, serde_json::Value)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            if let Some(embedded) = ckpt.embedded_config() {
                return Ok((ckpt.path().to_path_buf(), embedded));
            }
            let dir = checkpoint_dir(ckpt.path());
            let names = arch::config_names(model_type);
            match names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) {
                Some(path) => path,
                // A release without a config file: the checkpoint (and the defaults) describe it.
                None => match arch::default_config(model_type) {
                    Some(config) => return Ok((ckpt.path().to_path_buf(), config)),
                    None => {
                        let tried = match names.is_empty() {
                            true => format!("the checkpoint holds no config of its own ({model_type} keeps it inside)"),
                            false => format!("none of {} found in {}", names.join(", "), dir.display()),
                        };
                        return Err(Error::resolve(
                            crate::error::InputFault::Missing,
                            format!("no config given and {tried}; pass --config"),
                        ));
                    }
                },
            }
        }
    };
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let value = arch::read_config(model_type, &name, &text).map_err(|e| Error::input(&path, e))?;
    Ok((path, value))
}

/// Replaces keys of an original config: the user knows something the file does not say (which
/// GELU the training code used). Both the reference and config.json then follow it.
pub fn apply_overrides(config: &mut serde_json::Value, overrides: &[(String, serde_json::Value)]) {
    if let Some(map) = config.as_object_mut() {
        for (key, value) in overrides {
            map.insert(key.clone(), value.clone());
        }
    }
}

/// The folder a checkpoint lives in (a prefix's parent, or the folder itself).
pub fn checkpoint_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    guard::parent_dir(path)
}

/// Where `--output` puts things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputLayout {
    /// A folder of its own, which appears complete or not at all.
    Folder { path: PathBuf, format: Format },
    /// Weight and companion files added to a folder that may hold other files (the documented
    /// `--pytorch_dump_output DIR/pytorch_model.bin`, or `DIR/model.safetensors`).
    Files { dir: PathBuf, format: Format },
}

impl OutputLayout {
    pub fn format(&self) -> Format {
        match self {
            OutputLayout::Folder { format, .. } | OutputLayout::Files { format, .. } => *format,
        }
    }
}

/// A path ending in `.bin` or `.safetensors` names a weight file: `pytorch_model.bin` or
/// `model.safetensors` (the names `from_pretrained` loads) go into that path's folder. Any
/// other path is a folder of its own.
pub fn output_layout(output: &Path, flag: &str) -> Result<OutputLayout> {
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // `d/.bin` is a weight file path missing its name, not a hidden folder to create.
    if name == ".bin" || name == ".safetensors" {
        return Err(Error::Usage(format!(
            "{flag} {}: '{name}' has no file name; give a folder, or a path ending in pytorch_model.bin or model.safetensors",
            output.display()
        )));
    }
    let dir = || guard::parent_dir(output);
    Ok(match output.extension().and_then(|e| e.to_str()) {
        Some("bin") => OutputLayout::Files { dir: dir(), format: Format::PytorchBin },
        Some("safetensors") => OutputLayout::Files { dir: dir(), format: Format::Safetensors },
        _ => OutputLayout::Folder { path: output.to_path_buf(), format: Format::Safetensors },
    })
}

/// An opened checkpoint with its architecture and mapping plan.
pub struct Prepared {
    pub checkpoint: Box<dyn Checkpoint>,
    pub arch: Box<dyn Architecture>,
    pub plan: Plan,
    /// The original config file the architecture was built from.
    pub config_path: PathBuf,
}

/// Opens the checkpoint and picks the architecture; no output is touched.
pub fn prepare(opts: &ConvertOptions) -> Result<Prepared> {
    let ckpt = source::open(&opts.checkpoint)?;
    let vars = source_vars(ckpt.as_ref());
    let model_type = match &opts.model_type {
        Some(t) => t.clone(),
        None => arch::detect_model_type(&vars).map_err(|e| Error::Mapping(format!("{}: {e}", ckpt.path().display())))?.to_string(),
    };
    let (config_path, config) = find_config(ckpt.as_ref(), opts.config.as_deref(), &model_type)?;
    // The task name picks the head where it decides the class: XLNet's heads are named by task,
    // OpenAI GPT's double-heads class exists only for a fine-tuning task.
    let mut overrides = opts.config_overrides.clone();
    if let Some(task) = &opts.finetuning_task {
        overrides.push((FINETUNING_TASK.into(), task.as_str().into()));
    }
    let (arch, plan) = original_model(ckpt.as_ref(), &vars, &model_type, &config_path, config, &overrides)?;
    Ok(Prepared { checkpoint: ckpt, arch, plan, config_path })
}

/// The config key `--finetuning_task_name` sets (HF's `finetuning_task`).
pub const FINETUNING_TASK: &str = "finetuning_task";

/// The original model for `config` (with command-line `overrides` applied) and its mapping
/// plan for `vars`: what both `convert` and `verify` build the reference and the plan from.
pub fn original_model(
    ckpt: &dyn Checkpoint,
    vars: &[SourceVar],
    model_type: &str,
    config_path: &Path,
    mut config: serde_json::Value,
    overrides: &[(String, serde_json::Value)],
) -> Result<(Box<dyn Architecture>, Plan)> {
    apply_overrides(&mut config, overrides);
    let arch = arch::from_original(model_type, &config, vars).map_err(|e| {
        let given: Vec<String> = overrides.iter().map(|(k, v)| format!("{k}={v}")).collect();
        match given.is_empty() {
            true => Error::input(config_path, e),
            false => Error::input(config_path, format!("{e} (with {} from the command line)", given.join(", "))),
        }
    })?;
    let plan = arch
        .plan(vars)
        .map_err(|e| Error::Mapping(format!("{} as {}: {e}", ckpt.path().display(), arch.class_name())))?;
    Ok((arch, plan))
}

/// The files a command reads from an original checkpoint and its config: the checkpoint's
/// files, its `.meta` graph and `checkpoint` state file, and the original config.
pub fn checkpoint_inputs(ckpt: &dyn Checkpoint, config_path: &Path) -> Protected {
    let mut protected = Protected::new();
    for file in ckpt.files() {
        protected.add_input(&file);
    }
    protected.add_input(&crate::source::bundle::with_suffix(ckpt.path(), ".meta"));
    protected.add_input(&checkpoint_dir(ckpt.path()).join(crate::source::resolve::STATE_FILE));
    protected.add_input(config_path);
    protected
}

/// Elements cast and written at a time (4 MiB of float32).
const CAST_CHUNK_ELEMENTS: usize = 1 << 20;

/// What happens to one file of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Write,
    /// Left as it is, with the reason.
    Skip(String),
}

/// A conversion checked and ready to write: every output path has passed [`guard::check_target`]
/// and nothing has been written yet.
pub struct Conversion {
    prepared: Prepared,
    layout: OutputLayout,
    force: bool,
    staging: Option<Staging>,
    specs: Vec<TensorSpec>,
    max_shard_size: u64,
    weight_names: Vec<String>,
    /// config.json and tokenizer files, with what to do with each.
    companions: Vec<(String, Vec<u8>, Action)>,
    protected: Protected,
    notes: Vec<String>,
    progress: bool,
    /// Bytes the output will take (see [`planned_bytes`]), checked against the free space.
    planned_bytes: u64,
    space_check: bool,
}

impl Conversion {
    /// The command's inputs and the outputs it will write, for checking further output paths.
    pub fn protected(&self) -> &Protected {
        &self.protected
    }

    pub fn arch(&self) -> &dyn Architecture {
        self.prepared.arch.as_ref()
    }

    /// Bytes the output will take on disk, from above: what the free-space check compares.
    pub fn planned_bytes(&self) -> u64 {
        self.planned_bytes
    }

    /// Turns the free-space check of [`claim`](Conversion::claim) off, so that a test can make
    /// the file system fill up mid-write (a race with another writer does the same for real).
    pub fn skip_space_check(&mut self) {
        self.space_check = false;
    }

    /// The output path the user named: the folder, or the folder the files go into.
    fn target(&self) -> &Path {
        match &self.layout {
            OutputLayout::Folder { path, .. } => path,
            OutputLayout::Files { dir, .. } => dir,
        }
    }
}

/// The output's size from above: every tensor's data, the companions, and for headers (names,
/// dtypes, shapes, offsets; zip entries for `.bin`) 256 bytes plus three copies of the name per
/// tensor, and a file-system block per file.
fn planned_bytes(specs: &[TensorSpec], companions: &[(String, Vec<u8>, Action)], files: usize) -> u64 {
    let tensors: u64 = specs.iter().map(|s| s.nbytes().unwrap_or(0) + 256 + 3 * s.name.len() as u64).sum();
    let written: Vec<u64> = companions.iter().filter(|c| c.2 == Action::Write).map(|c| c.1.len() as u64).collect();
    tensors + written.iter().sum::<u64>() + 4096 * (files + written.len() + 1) as u64
}

/// An I/O error meaning the disk is full, as [`Error::NoSpace`] naming `target`; others as they are.
fn no_space_error(e: Error, target: &Path, needed: u64) -> Error {
    match e {
        Error::Write { path, source } if crate::error::is_no_space(&source) => Error::NoSpace {
            path: target.to_path_buf(),
            needed,
            // Measured after the partial output is gone, where the output was to go.
            available: sink::free_space(&guard::parent_dir(target)).unwrap_or(0),
            detail: Some(format!(
                "the file system filled up while writing {}: {source}; the partial output was removed",
                path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
            )),
        },
        e => e,
    }
}

/// The output's temporary place, claimed by [`check`] so that an unwritable location fails
/// before any work.
enum Staging {
    Folder(OutputDir),
    Files(FilesInto),
}

/// Reads the inputs, plans the output and checks every path it will write. Changes nothing on
/// disk; [`Conversion::claim`] then takes the output's temporary place.
pub fn check(opts: &ConvertOptions) -> Result<Conversion> {
    let layout = output_layout(&opts.output, opts.output_flag)?;
    let prepared = prepare(opts)?;
    let (ckpt, arch, plan) = (prepared.checkpoint.as_ref(), prepared.arch.as_ref(), &prepared.plan);
    let format = layout.format();
    let specs: Vec<TensorSpec> = plan
        .mappings
        .iter()
        .map(|m| {
            let src = ckpt.info(&m.source).expect("planned from this checkpoint");
            let dtype = if src.dtype.is_float() { opts.dtype } else { src.dtype };
            TensorSpec::new(&m.target, dtype, m.shape.clone())
        })
        .chain(plan.synthesized.iter().map(|s| TensorSpec::new(&s.target, opts.dtype, s.shape.clone())))
        .collect();
    let shards = sink::plan_shards(&specs, Some(opts.max_shard_size))?;
    let mut weight_names = shards.file_names(format);
    if shards.is_sharded() {
        weight_names.push(format.index_file_name());
    }

    let mut search_dirs = vec![checkpoint_dir(ckpt.path())];
    if let Some(c) = &opts.config {
        search_dirs.push(checkpoint_dir(c));
    }
    let search: Vec<&Path> = search_dirs.iter().map(PathBuf::as_path).collect();
    let arch::TokenizerFiles { files: tokenizer, mut notes } = arch.tokenizer_files(&search, &opts.tokenizer).map_err(Error::Mapping)?;
    if tokenizer.is_empty() && notes.is_empty() {
        notes.push(format!(
            "no tokenizer files written: no vocabulary found in {}",
            search_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    let mut protected = checkpoint_inputs(ckpt, &prepared.config_path);
    for dir in &search_dirs {
        for (name, _) in &tokenizer {
            protected.add_input(&dir.join(name));
        }
    }

    let config = arch.hf_config(spec_dtype_name(opts.dtype), opts.finetuning_task.as_deref());
    let config_bytes = serde_json::to_vec_pretty(&config).expect("JSON of plain values");
    // config.json last: a folder looks loadable only once its weights are in place.
    let mut companions: Vec<(String, Vec<u8>)> = tokenizer;
    companions.push(("config.json".into(), config_bytes));

    let (layout, companions) = match layout {
        OutputLayout::Folder { path, format } => {
            let resolved = guard::check_target(&path, opts.output_flag, guard::Kind::Folder, &protected, opts.force)?;
            protected.add_output(&resolved);
            let companions = companions.into_iter().map(|(n, b)| (n, b, Action::Write)).collect();
            (OutputLayout::Folder { path: resolved, format }, companions)
        }
        OutputLayout::Files { dir, format } => {
            let dir = guard::resolve(&dir).map_err(|e| Error::Output(format!("{} {}: {e}", opts.output_flag, opts.output.display())))?;
            if fs::metadata(&dir).is_ok_and(|m| !m.is_dir()) {
                return Err(Error::Output(format!("{} {}: {} is not a folder", opts.output_flag, opts.output.display(), dir.display())));
            }
            for name in &weight_names {
                let path = dir.join(name);
                guard::check_target(&path, opts.output_flag, guard::Kind::File, &protected, opts.force)?;
            }
            let mut planned = Vec::new();
            for (name, bytes) in companions {
                let path = dir.join(&name);
                let action = match fs::read(&path) {
                    Ok(existing) if existing == bytes => Action::Skip("already there with the same content".into()),
                    Ok(_) if !opts.force && !protected.inputs().any(|i| i == path) => {
                        Action::Skip("already there with different content; kept (--force replaces it)".into())
                    }
                    _ => {
                        guard::check_target(&path, opts.output_flag, guard::Kind::File, &protected, true)?;
                        Action::Write
                    }
                };
                planned.push((name, bytes, action));
            }
            // from_pretrained picks model.safetensors over pytorch_model.bin, whatever is newer.
            for other in [Format::Safetensors, Format::PytorchBin].into_iter().filter(|f| *f != format) {
                let stale = [other.single_file_name(), other.index_file_name()].map(|n| dir.join(n));
                for path in stale.iter().filter(|p| p.exists()) {
                    notes.push(format!(
                        "{} is also in this folder; from_pretrained loads model.safetensors before pytorch_model.bin, \
                         so it may load that file instead of the one written now",
                        path.display()
                    ));
                }
            }
            for name in weight_names.iter().chain(planned.iter().filter(|c| c.2 == Action::Write).map(|c| &c.0)) {
                protected.add_output(&dir.join(name));
            }
            (OutputLayout::Files { dir, format }, planned)
        }
    };
    let planned_bytes = planned_bytes(&specs, &companions, weight_names.len());
    Ok(Conversion {
        prepared,
        layout,
        force: opts.force,
        staging: None,
        specs,
        max_shard_size: opts.max_shard_size,
        weight_names,
        companions,
        protected,
        notes,
        progress: opts.progress,
        planned_bytes,
        space_check: true,
    })
}

/// Checks, then writes: [`check`] followed by [`Conversion::write`].
pub fn convert(opts: &ConvertOptions) -> Result<Converted> {
    check(opts)?.write()
}

impl Conversion {
    /// Takes the output's temporary place (`.NAME.tmp-PID`) and checks that its file system has
    /// room for the planned output, so that an unwritable or too full location fails before any
    /// work. Dropping the conversion removes the temporary place again.
    pub fn claim(&mut self) -> Result<()> {
        if self.staging.is_none() {
            let staging = match &self.layout {
                OutputLayout::Folder { path, .. } => {
                    let empty = fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
                    Staging::Folder(OutputDir::create(path, self.force || empty)?)
                }
                OutputLayout::Files { dir, .. } => Staging::Files(FilesInto::create(dir, &self.weight_names[0])?),
            };
            let tmp = match &staging {
                Staging::Folder(out) => out.path(),
                Staging::Files(out) => out.path(),
            };
            // A replaced output is deleted only after the new one is in place, so it gets no credit.
            if self.space_check {
                let free = sink::free_space(tmp).map_err(|e| Error::write(tmp, e))?;
                if free < self.planned_bytes {
                    return Err(Error::NoSpace {
                        path: self.target().to_path_buf(),
                        needed: self.planned_bytes,
                        available: free,
                        detail: Some("checked before writing; nothing was written".into()),
                    });
                }
            }
            self.staging = Some(staging);
        }
        Ok(())
    }

    /// Streams every tensor into the output, then the companions, and puts them in place. A full
    /// disk is [`Error::NoSpace`]; whatever fails, the temporary output is removed.
    pub fn write(mut self) -> Result<Converted> {
        self.claim()?;
        let (target, needed) = (self.target().to_path_buf(), self.planned_bytes);
        self.write_claimed().map_err(|e| no_space_error(e, &target, needed))
    }

    fn write_claimed(self) -> Result<Converted> {
        let Conversion { prepared, layout, staging, specs, max_shard_size, weight_names, companions, notes, progress, .. } = self;
        let format = layout.format();
        let staging = staging.expect("claimed above");
        let Prepared { checkpoint: ckpt, arch, plan, config_path } = prepared;
        let stream = |dir: &Path| -> Result<()> {
            let progress = Progress::new(progress, specs.len());
            stream_tensors(ckpt.as_ref(), &plan, &specs, |specs| sink::create_sink(dir, format, specs, Some(max_shard_size)), &progress)?;
            progress.finish();
            Ok(())
        };
        let mut skipped = Vec::new();
        let (folder, files) = match staging {
            Staging::Folder(out) => {
                stream(out.path())?;
                for (name, bytes, _) in &companions {
                    out.write_file(name, bytes)?;
                }
                let folder = out.commit()?;
                let names = weight_names.iter().chain(companions.iter().map(|c| &c.0));
                let files = names.map(|n| folder.join(n)).collect();
                (folder, files)
            }
            Staging::Files(out) => {
                stream(out.path())?;
                let dir = out.dir().to_path_buf();
                let mut names = weight_names.clone();
                for (name, bytes, action) in &companions {
                    match action {
                        Action::Write => {
                            out.write_file(name, bytes)?;
                            names.push(name.clone());
                        }
                        Action::Skip(why) => skipped.push((dir.join(name), why.clone())),
                    }
                }
                let files = out.commit(&names)?;
                (dir, files)
            }
        };
        Ok(Converted { folder, files, skipped, notes, plan, arch, checkpoint: ckpt, config_path })
    }
}

/// One piece of a tensor's output bytes on its way to the writer thread.
enum Piece<'a> {
    /// Straight from the input mapping (no transform, no cast): never copied.
    Borrowed(&'a [u8]),
    /// Transposed or cast here; the writer hands the buffer back for reuse.
    Owned(Vec<u8>),
    /// The tensor is complete.
    End,
}

/// Why the reading side stopped early.
enum Stop {
    /// The writer hung up: its own error says why.
    Writer,
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Failed(e)
    }
}

/// Pieces queued between the two threads: with the one being written and the one being made,
/// at most five slabs (20 MiB for float32) are in flight.
const QUEUED_PIECES: usize = 3;

/// Streams every planned tensor from `ckpt` into the sink `create_sink` makes, on two threads:
/// this one reads (checksum), transposes and casts each tensor a slab at a time, while a writer
/// thread writes the previous slabs and, once a tensor is written, drops its input pages. A
/// slab that needs no change is handed over as a slice of the input mapping, not copied. Memory
/// follows the largest tensor as stored (its mapped pages) plus the slabs in flight.
fn stream_tensors(
    ckpt: &dyn Checkpoint,
    plan: &Plan,
    specs: &[TensorSpec],
    create_sink: impl FnOnce(Vec<TensorSpec>) -> Result<Box<dyn sink::TensorSink>> + Send,
    progress: &Progress,
) -> Result<Vec<PathBuf>> {
    use std::sync::mpsc;
    let (tx, rx) = mpsc::sync_channel::<Piece>(QUEUED_PIECES);
    let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<Vec<PathBuf>> {
            let mut sink = create_sink(specs.to_vec())?;
            for (i, spec) in specs.iter().enumerate() {
                sink.write_tensor_with(&spec.name, &mut |w| loop {
                    match rx.recv() {
                        Ok(Piece::Borrowed(bytes)) => w.write_all(bytes)?,
                        Ok(Piece::Owned(buf)) => {
                            w.write_all(&buf)?;
                            let _ = back_tx.send(buf);
                        }
                        Ok(Piece::End) => return Ok(()),
                        Err(_) => return Err(std::io::Error::other("the reading side stopped")),
                    }
                })?;
                if let Some(m) = plan.mappings.get(i) {
                    ckpt.release(&m.source);
                }
                progress.tick(&spec.name);
            }
            sink.finish()
        });
        let produced = produce(ckpt, plan, specs, &tx, &back_rx);
        drop(tx);
        let written = writer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        match (produced, written) {
            (Err(Stop::Failed(e)), _) => Err(e),
            (_, Err(e)) => Err(e),
            (Ok(()), Ok(files)) => Ok(files),
            (Err(Stop::Writer), Ok(_)) => Err(Error::Output("the writer stopped without an error".into())),
        }
    })
}

/// The reading side of [`stream_tensors`]: every tensor's output bytes, in order, as pieces.
fn produce<'a>(
    ckpt: &'a dyn Checkpoint,
    plan: &Plan,
    specs: &[TensorSpec],
    tx: &std::sync::mpsc::SyncSender<Piece<'a>>,
    spare: &std::sync::mpsc::Receiver<Vec<u8>>,
) -> std::result::Result<(), Stop> {
    let send = |piece: Piece<'a>| tx.send(piece).map_err(|_| Stop::Writer);
    // A reused slab buffer of `len` bytes (contents arbitrary).
    let buffer = |len: usize| {
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.resize(len, 0);
        buf
    };
    for (m, spec) in plan.mappings.iter().zip(specs) {
        let src = ckpt.info(&m.source).expect("planned from this checkpoint");
        let elem = src.dtype.size().unwrap_or(1);
        let bytes = ckpt.read(&m.source)?;
        let cast = |piece: Vec<u8>| -> Result<Vec<u8>> {
            match src.dtype == spec.dtype {
                true => Ok(piece),
                false => Ok(sink::cast(&piece, src.dtype, spec.dtype)?.into_owned()),
            }
        };
        match (m.transforms.as_slice(), src.shape.as_slice()) {
            // A transpose a slab of output rows at a time, so it never holds the whole result.
            ([Transform::Transpose], &[rows, cols]) if bytes.len() == rows * cols * elem => {
                let slab = (CAST_CHUNK_ELEMENTS / rows.max(1)).max(1);
                for c0 in (0..cols).step_by(slab) {
                    let columns = c0..(c0 + slab).min(cols);
                    let mut buf = buffer(columns.len() * rows * elem);
                    transpose_columns_into(&bytes, rows, cols, elem, columns, &mut buf);
                    send(Piece::Owned(cast(buf)?))?;
                }
            }
            _ => {
                let moved = apply_transforms(bytes, src.dtype, &src.shape, &m.transforms).map_err(|e| Error::tensor(ckpt.path(), &m.source, e))?;
                let chunk = CAST_CHUNK_ELEMENTS * elem;
                match moved {
                    Cow::Borrowed(all) if src.dtype == spec.dtype => {
                        for piece in all.chunks(chunk) {
                            send(Piece::Borrowed(piece))?;
                        }
                    }
                    moved => {
                        for piece in moved.chunks(chunk) {
                            let mut buf = buffer(piece.len());
                            buf.copy_from_slice(piece);
                            send(Piece::Owned(cast(buf)?))?;
                        }
                    }
                }
            }
        }
        send(Piece::End)?;
    }
    for (s, spec) in plan.synthesized.iter().zip(&specs[plan.mappings.len()..]) {
        let values: Vec<u8> = s.fill.values(&s.shape).iter().flat_map(|v| v.to_le_bytes()).collect();
        send(Piece::Owned(sink::cast(&values, DType::F32, spec.dtype)?.into_owned()))?;
        send(Piece::End)?;
    }
    Ok(())
}

/// HF's spelling of a stored dtype in config.json.
pub fn spec_dtype_name(dtype: DType) -> &'static str {
    dtype.name()
}

/// Applies a mapping's transforms to raw row-major bytes. Only transposes and selections move
/// bytes; squeezes and reshapes keep them as they are.
pub fn apply_transforms<'a>(bytes: Cow<'a, [u8]>, dtype: DType, shape: &[usize], transforms: &[Transform]) -> std::result::Result<Cow<'a, [u8]>, String> {
    let elem = dtype.size().ok_or("string tensors cannot be converted as weights")?;
    let mut bytes = bytes;
    let mut shape = shape.to_vec();
    for t in transforms {
        let next_shape = t.apply_shape(&shape)?;
        match t {
            Transform::Transpose => bytes = Cow::Owned(transpose(&bytes, shape[0], shape[1], elem)),
            Transform::Select { axis, index } => {
                let outer: usize = shape[..*axis].iter().product();
                let inner: usize = shape[axis + 1..].iter().product::<usize>() * elem;
                let mut out = Vec::with_capacity(outer * inner);
                for o in 0..outer {
                    let start = (o * shape[*axis] + index) * inner;
                    out.extend_from_slice(&bytes[start..start + inner]);
                }
                bytes = Cow::Owned(out);
            }
            Transform::Squeeze | Transform::Reshape(_) => {}
        }
        shape = next_shape;
    }
    Ok(bytes)
}

/// Transposes a rows×cols matrix of `elem`-byte elements, in cache-sized tiles so that large
/// kernels don't thrash (a naive loop falls to ~0.1 GB/s on 16k² matrices).
pub fn transpose(src: &[u8], rows: usize, cols: usize, elem: usize) -> Vec<u8> {
    transpose_columns(src, rows, cols, elem, 0..cols)
}

/// Rows `columns` of the transpose of the row-major `rows × cols` matrix `src`: the transposed
/// matrix a slab at a time, so a large kernel is never copied whole.
pub fn transpose_columns(src: &[u8], rows: usize, cols: usize, elem: usize, columns: std::ops::Range<usize>) -> Vec<u8> {
    let mut dst = vec![0u8; columns.len() * rows * elem];
    transpose_columns_into(src, rows, cols, elem, columns, &mut dst);
    dst
}

/// [`transpose_columns`] into `dst`, which must be `columns.len() * rows * elem` bytes long.
pub fn transpose_columns_into(src: &[u8], rows: usize, cols: usize, elem: usize, columns: std::ops::Range<usize>, dst: &mut [u8]) {
    assert_eq!(src.len(), rows * cols * elem, "transpose: byte length does not match the shape");
    assert!(columns.end <= cols, "transpose: columns {columns:?} out of {cols}");
    assert_eq!(dst.len(), columns.len() * rows * elem, "transpose: destination size");
    match elem {
        1 => transpose_tiled::<[u8; 1]>(src, dst, rows, cols, columns),
        2 => transpose_tiled::<[u8; 2]>(src, dst, rows, cols, columns),
        4 => transpose_tiled::<[u8; 4]>(src, dst, rows, cols, columns),
        8 => transpose_tiled::<[u8; 8]>(src, dst, rows, cols, columns),
        _ => unreachable!("element sizes are 1, 2, 4 or 8 bytes"),
    }
}

/// The tiled loop, monomorphised per element size so each move is one fixed-size copy. Reads
/// stride through a tile of source rows while writes run along one destination row; the loop
/// indexes raw pointers because per-element bounds checks cost more than the moves themselves.
fn transpose_tiled<E: Copy>(src: &[u8], dst: &mut [u8], rows: usize, cols: usize, columns: std::ops::Range<usize>) {
    const TILE: usize = 32;
    let size = std::mem::size_of::<E>();
    // The bounds every index below stays within (checked by the caller, asserted again here
    // because the loop relies on them for memory safety).
    assert!(src.len() >= rows * cols * size && columns.end <= cols && dst.len() >= columns.len() * rows * size);
    let (from, to) = (src.as_ptr() as *const E, dst.as_mut_ptr() as *mut E);
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in columns.clone().step_by(TILE) {
            for c in c0..(c0 + TILE).min(columns.end) {
                let out_row = (c - columns.start) * rows;
                for r in r0..r1 {
                    // SAFETY: r < rows and c < cols, so r * cols + c < rows * cols elements of
                    // `src`; c - columns.start < columns.len() and r < rows, so out_row + r <
                    // columns.len() * rows elements of `dst` (both asserted above). E is a byte
                    // array: any alignment and any bits are valid.
                    unsafe { to.add(out_row + r).write_unaligned(from.add(r * cols + c).read_unaligned()) };
                }
            }
        }
    }
}

/// A progress bar on stderr when it is a terminal; nothing otherwise.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(enabled: bool, total: usize) -> Progress {
        use std::io::IsTerminal;
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {wide_msg}").expect("static template"),
        );
        Progress(Some(bar))
    }
    fn tick(&self, name: &str) {
        if let Some(b) = &self.0 {
            b.set_message(name.to_string());
            b.inc(1);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiled_transpose_matches_the_definition() {
        for elem in [1, 2, 4, 8] {
            for (rows, cols) in [(1, 1), (3, 5), (33, 65), (64, 31)] {
                let src: Vec<u8> = (0..rows * cols * elem).map(|i| (i * 7 + i / elem) as u8).collect();
                let dst = transpose(&src, rows, cols, elem);
                for r in 0..rows {
                    for c in 0..cols {
                        let want = &src[(r * cols + c) * elem..][..elem];
                        assert_eq!(&dst[(c * rows + r) * elem..][..elem], want, "elem {elem}, {rows}x{cols} at ({r},{c})");
                    }
                }
            }
        }
    }

    #[test]
    fn select_takes_one_index_of_an_axis() {
        // shape [2, 3, 2] of u8 values 0..12; select axis 1 index 2 → [[4,5],[10,11]]
        let src: Vec<u8> = (0..12).collect();
        let out = apply_transforms(Cow::Borrowed(&src), DType::U8, &[2, 3, 2], &[Transform::Select { axis: 1, index: 2 }]).unwrap();
        assert_eq!(out.as_ref(), &[4, 5, 10, 11]);
    }

    #[test]
    fn output_ending_in_a_weight_file_name_means_files_in_its_folder() {
        let files = |dir: &str, format| OutputLayout::Files { dir: PathBuf::from(dir), format };
        assert_eq!(output_layout(Path::new("out/pytorch_model.bin"), "--output").unwrap(), files("out", Format::PytorchBin));
        assert_eq!(output_layout(Path::new("model.safetensors"), "--output").unwrap(), files(".", Format::Safetensors));
        assert_eq!(
            output_layout(Path::new("out/bert"), "--output").unwrap(),
            OutputLayout::Folder { path: PathBuf::from("out/bert"), format: Format::Safetensors }
        );
        assert!(output_layout(Path::new("out/.bin"), "--output").is_err());
    }
}
