//! `tfconv convert`: open the checkpoint, plan the mapping, stream every tensor into the output
//! folder, then write the config and tokenizer files. The folder appears only when complete.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use tfconv_models::arch::{self, Architecture, TokenizerOptions};
use tfconv_models::plan::{Plan, SourceVar, Transform};

use crate::error::{Error, Result};
use crate::sink::{self, Format, OutputDir, TensorSpec};
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
        }
    }
}

/// What a finished conversion produced.
pub struct Converted {
    pub folder: PathBuf,
    pub files: Vec<PathBuf>,
    pub plan: Plan,
    pub arch: Box<dyn Architecture>,
    pub checkpoint: Box<dyn Checkpoint>,
}

/// The variables of a checkpoint as the mapping tables see them.
pub fn source_vars(ckpt: &dyn Checkpoint) -> Vec<SourceVar> {
    ckpt.tensors().iter().map(|t| SourceVar { name: t.name.clone(), shape: t.shape.clone() }).collect()
}

/// Original config file names, tried beside the checkpoint when `--config` is absent.
const CONFIG_NAMES: &[&str] = &["bert_config.json", "config.json"];

/// The original config file: `explicit`, else the first of [`CONFIG_NAMES`] beside the checkpoint.
pub fn find_config(ckpt_path: &Path, explicit: Option<&Path>) -> Result<(PathBuf, serde_json::Value)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let dir = checkpoint_dir(ckpt_path);
            CONFIG_NAMES.iter().map(|n| dir.join(n)).find(|p| p.is_file()).ok_or_else(|| {
                Error::Resolve(format!(
                    "no config given and none of {} found in {}; pass --config",
                    CONFIG_NAMES.join(", "),
                    dir.display()
                ))
            })?
        }
    };
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let value = serde_json::from_slice(&text).map_err(|e| Error::input(&path, format!("not valid JSON: {e}")))?;
    Ok((path, value))
}

/// The folder a checkpoint lives in (a prefix's parent, or the folder itself).
pub fn checkpoint_dir(path: &Path) -> PathBuf {
    if path.is_dir() {
        return path.to_path_buf();
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Where the folder goes and which weight format: a path ending in `.bin` means
/// `pytorch_model.bin` inside that path's parent folder, as the old converters wrote it.
pub fn output_layout(output: &Path) -> (PathBuf, Format) {
    if output.extension().is_some_and(|e| e == "bin") {
        (checkpoint_dir(output), Format::PytorchBin)
    } else {
        (output.to_path_buf(), Format::Safetensors)
    }
}

/// Opens the checkpoint and picks the architecture; no output is touched.
pub fn prepare(opts: &ConvertOptions) -> Result<(Box<dyn Checkpoint>, Box<dyn Architecture>, Plan)> {
    let ckpt = source::open(&opts.checkpoint)?;
    let vars = source_vars(ckpt.as_ref());
    let model_type = match &opts.model_type {
        Some(t) => t.clone(),
        None => arch::detect_model_type(&vars).map_err(|e| Error::Mapping(format!("{}: {e}", ckpt.path().display())))?.to_string(),
    };
    let (config_path, config) = find_config(ckpt.path(), opts.config.as_deref())?;
    let arch = arch::from_original(&model_type, &config, &vars).map_err(|e| Error::input(&config_path, e))?;
    let plan = arch
        .plan(&vars)
        .map_err(|e| Error::Mapping(format!("{} as {}: {e}", ckpt.path().display(), arch.class_name())))?;
    Ok((ckpt, arch, plan))
}

pub fn convert(opts: &ConvertOptions) -> Result<Converted> {
    let (ckpt, arch, plan) = prepare(opts)?;
    let (folder, format) = output_layout(&opts.output);
    // The old `--pytorch_dump_output dir/pytorch_model.bin` usage names a folder the user made
    // beforehand; an empty one is not worth protecting.
    let empty_dir = std::fs::read_dir(&folder).is_ok_and(|mut d| d.next().is_none());
    let out = OutputDir::create(&folder, opts.force || empty_dir)?;

    let specs: Vec<TensorSpec> = plan
        .mappings
        .iter()
        .map(|m| {
            let src = ckpt.info(&m.source).expect("planned from this checkpoint");
            let dtype = if src.dtype.is_float() { opts.dtype } else { src.dtype };
            TensorSpec::new(&m.target, dtype, m.shape.clone())
        })
        .collect();
    let mut sink = sink::create_sink(out.path(), format, specs.clone(), Some(opts.max_shard_size))?;
    let progress = Progress::new(opts.progress, plan.mappings.len());
    for (m, spec) in plan.mappings.iter().zip(&specs) {
        let src = ckpt.info(&m.source).expect("planned from this checkpoint").clone();
        let bytes = ckpt.read(&m.source)?;
        let moved = apply_transforms(bytes, src.dtype, &src.shape, &m.transforms)
            .map_err(|e| Error::tensor(ckpt.path(), &m.source, e))?;
        let cast = sink::cast(&moved, src.dtype, spec.dtype)?;
        sink.write_tensor(&m.target, &cast)?;
        progress.tick(&m.target);
    }
    let mut files = sink.finish()?;
    progress.finish();

    let config = arch.hf_config(spec_dtype_name(opts.dtype), opts.finetuning_task.as_deref());
    let config_bytes = serde_json::to_vec_pretty(&config).expect("JSON of plain values");
    files.push(out.write_file("config.json", &config_bytes)?);
    let mut search = vec![checkpoint_dir(ckpt.path())];
    if let Some(c) = &opts.config {
        search.push(checkpoint_dir(c));
    }
    let search: Vec<&Path> = search.iter().map(PathBuf::as_path).collect();
    let tokenizer = arch.tokenizer_files(&search, &opts.tokenizer).map_err(Error::Mapping)?;
    for (name, bytes) in &tokenizer {
        files.push(out.write_file(name, bytes)?);
    }
    let folder = out.commit()?;
    let files = files.into_iter().map(|f| folder.join(f.file_name().expect("written files have names"))).collect();
    Ok(Converted { folder, files, plan, arch, checkpoint: ckpt })
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
    assert_eq!(src.len(), rows * cols * elem, "transpose: byte length does not match the shape");
    let mut dst = vec![0u8; src.len()];
    match elem {
        1 => transpose_tiled::<[u8; 1]>(src, &mut dst, rows, cols),
        2 => transpose_tiled::<[u8; 2]>(src, &mut dst, rows, cols),
        4 => transpose_tiled::<[u8; 4]>(src, &mut dst, rows, cols),
        8 => transpose_tiled::<[u8; 8]>(src, &mut dst, rows, cols),
        _ => unreachable!("element sizes are 1, 2, 4 or 8 bytes"),
    }
    dst
}

/// The tiled loop, monomorphised per element size so each move is one fixed-size copy.
fn transpose_tiled<E: Copy>(src: &[u8], dst: &mut [u8], rows: usize, cols: usize) {
    const TILE: usize = 32;
    let size = std::mem::size_of::<E>();
    let load = |i: usize| -> E {
        let bytes = &src[i * size..(i + 1) * size];
        // SAFETY: `bytes` is exactly size_of::<E>() long and E is a byte array (no alignment, any bits valid).
        unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const E) }
    };
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for c in c0..(c0 + TILE).min(cols) {
                for r in r0..(r0 + TILE).min(rows) {
                    let value = load(r * cols + c);
                    let d = (c * rows + r) * size;
                    let out = &mut dst[d..d + size];
                    // SAFETY: `out` is exactly size_of::<E>() long; E is a byte array.
                    unsafe { std::ptr::write_unaligned(out.as_mut_ptr() as *mut E, value) };
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
    fn output_ending_in_bin_means_pytorch_model_bin_in_its_folder() {
        assert_eq!(output_layout(Path::new("out/pytorch_model.bin")), (PathBuf::from("out"), Format::PytorchBin));
        assert_eq!(output_layout(Path::new("out/bert")), (PathBuf::from("out/bert"), Format::Safetensors));
    }
}
