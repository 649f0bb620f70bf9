//! Verification: the converted folder, loaded by candle under HF's names, against the original
//! model running in TensorFlow on the original checkpoint. Structure first, then numbers.

pub mod compare;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tfconv_models::arch::Architecture;
use tfconv_models::plan::Plan;
use tfconv_models::probe::{Outputs, Probes};

pub use compare::{OutputReport, Tolerance};

use crate::error::{Error, Result};
use crate::source::{Checkpoint, DType};

/// Probe and tolerance choices; `None` means the default.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub seed: u64,
    pub batch: usize,
    pub seq_len: Option<usize>,
    pub atol: Option<f64>,
    pub rtol: Option<f64>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { seed: 0, batch: 3, seq_len: None, atol: None, rtol: None }
    }
}

/// Everything `verify` found; serialised as the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub pass: bool,
    pub folder: PathBuf,
    pub checkpoint: PathBuf,
    pub class: String,
    pub stored_dtype: String,
    pub tolerance: Tolerance,
    pub probes: Probes,
    pub structural_problems: Vec<String>,
    pub parameters: u64,
    pub outputs: Vec<OutputReport>,
    /// The first output, in forward order, outside tolerance.
    pub first_divergence: Option<String>,
    pub tensorflow_version: String,
    pub seconds_candle: f64,
    pub seconds_tensorflow: f64,
}

/// A stored tensor's dtype and shape.
pub type TensorMeta = (DType, Vec<usize>);

/// Name, dtype and shape of every tensor in an HF folder's weight files.
pub fn folder_tensors(files: &[PathBuf]) -> Result<BTreeMap<String, TensorMeta>> {
    let mut out = BTreeMap::new();
    for file in files {
        out.extend(file_tensors(file)?);
    }
    Ok(out)
}

/// Name, dtype and shape of every tensor in one `.safetensors` or `.bin` file (headers only).
fn file_tensors(file: &Path) -> Result<Vec<(String, TensorMeta)>> {
    let mut out = Vec::new();
    if file.extension().is_some_and(|e| e == "safetensors") {
        let f = std::fs::File::open(file).map_err(|e| Error::io(file, e))?;
        // Mapped rather than read: only the header is touched, whatever the shard's size.
        // SAFETY: the files are ours (just written) or the user's; they are not modified while mapped.
        let bytes = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(file, e))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::input(file, format!("not a valid safetensors file: {e}")))?;
        for (name, info) in meta.tensors() {
            let dtype = safetensors_dtype(info.dtype).ok_or_else(|| Error::tensor(file, &name, "unsupported dtype"))?;
            out.push((name, (dtype, info.shape.clone())));
        }
    } else if file.extension().is_some_and(|e| e == "bin") {
        let infos = candle_core::pickle::read_pth_tensor_info(file, false, None)
            .map_err(|e| Error::input(file, format!("not a readable torch file: {e}")))?;
        for t in infos {
            let dtype = match t.dtype {
                candle_core::DType::F32 => DType::F32,
                candle_core::DType::F16 => DType::F16,
                candle_core::DType::BF16 => DType::BF16,
                candle_core::DType::F64 => DType::F64,
                candle_core::DType::I64 => DType::I64,
                candle_core::DType::U8 => DType::U8,
                other => return Err(Error::tensor(file, &t.name, format!("unexpected dtype {other:?}"))),
            };
            out.push((t.name.clone(), (dtype, t.layout.shape().dims().to_vec())));
        }
    }
    Ok(out)
}

fn safetensors_dtype(d: safetensors::Dtype) -> Option<DType> {
    use safetensors::Dtype as S;
    Some(match d {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F64 => DType::F64,
        S::I64 => DType::I64,
        S::I32 => DType::I32,
        S::I16 => DType::I16,
        S::I8 => DType::I8,
        S::U8 => DType::U8,
        S::BOOL => DType::Bool,
        _ => return None,
    })
}

/// A sharded folder's index: its path and its weight_map (tensor name → shard file name).
pub struct ShardIndex {
    pub path: PathBuf,
    pub weight_map: BTreeMap<String, String>,
}

/// The weight files of an HF folder: the single file, or every shard named by the index.
pub fn weight_files(folder: &Path) -> Result<Vec<PathBuf>> {
    Ok(weight_layout(folder)?.0)
}

/// The weight files and, for a sharded folder, its index. A single file wins over an index, as
/// in `from_pretrained`. Every shard the index names must exist: a missing one is an input error
/// naming it, not a pile of "missing weight" lines.
pub fn weight_layout(folder: &Path) -> Result<(Vec<PathBuf>, Option<ShardIndex>)> {
    for (single, index) in [("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json")] {
        if folder.join(single).is_file() {
            return Ok((vec![folder.join(single)], None));
        }
        let path = folder.join(index);
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let json: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| Error::input(&path, format!("not valid JSON: {e}")))?;
        let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::input(&path, "no weight_map"))?;
        let mut weight_map = BTreeMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| Error::input(&path, format!("weight_map[{name:?}] is not a file name")))?;
            weight_map.insert(name.clone(), file.to_string());
        }
        let mut files: Vec<&String> = weight_map.values().collect();
        files.sort();
        files.dedup();
        if files.is_empty() {
            return Err(Error::input(&path, "the weight_map is empty"));
        }
        if let Some(file) = files.iter().find(|f| !folder.join(f).is_file()) {
            let listed: Vec<&String> = weight_map.iter().filter(|(_, f)| f == file).map(|(t, _)| t).collect();
            return Err(Error::input(
                &path,
                format!(
                    "shard {file} is missing: the index lists {} tensor(s) in it (e.g. {}), but {} does not exist",
                    listed.len(),
                    listed[0],
                    folder.join(file).display()
                ),
            ));
        }
        let files = files.into_iter().map(|f| folder.join(f)).collect();
        return Ok((files, Some(ShardIndex { path, weight_map })));
    }
    Err(Error::input(folder, "no model.safetensors, pytorch_model.bin or shard index in this folder"))
}

/// Where the index and the shards disagree: a tensor the index places in a shard that does not
/// hold it, or a tensor a shard holds that the index places elsewhere or nowhere. `from_pretrained`
/// trusts the index, so either would load a different model than the one verified.
pub fn index_problems(index: &ShardIndex, files: &[PathBuf]) -> Result<Vec<String>> {
    let index_name = index.path.file_name().unwrap_or_default().to_string_lossy();
    let mut held: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        let shard = file.file_name().unwrap_or_default().to_string_lossy().into_owned();
        for (name, _) in file_tensors(file)? {
            held.entry(name).or_default().push(shard.clone());
        }
    }
    let mut names: Vec<&String> = index.weight_map.keys().chain(held.keys()).collect();
    names.sort();
    names.dedup();
    let mut problems = Vec::new();
    for name in names {
        let holders = held.get(name).map(Vec::as_slice).unwrap_or_default();
        match index.weight_map.get(name) {
            None => problems.push(format!("{} holds {name}, which {index_name} does not list", holders.join(" and "))),
            Some(listed) if holders.is_empty() => {
                problems.push(format!("{index_name} lists {name} in {listed}, but {listed} does not hold it"))
            }
            Some(listed) if !holders.contains(listed) => problems.push(format!(
                "{index_name} lists {name} in {listed}, but {listed} does not hold it ({} does)",
                holders.join(" and ")
            )),
            Some(listed) => {
                for other in holders.iter().filter(|h| *h != listed) {
                    problems.push(format!("{other} also holds {name}, which {index_name} lists in {listed}"));
                }
            }
        }
    }
    Ok(problems)
}

/// The checks that need no numbers: every planned tensor present with its shape, nothing extra.
pub fn structural_problems(plan: &Plan, found: &BTreeMap<String, (DType, Vec<usize>)>) -> Vec<String> {
    let mut problems = Vec::new();
    for m in &plan.mappings {
        match found.get(&m.target) {
            None => problems.push(format!("missing weight {} (from {})", m.target, m.source)),
            Some((_, shape)) if *shape != m.shape => {
                problems.push(format!("{} has shape {shape:?}, expected {:?}", m.target, m.shape))
            }
            _ => {}
        }
    }
    for name in found.keys() {
        if !plan.mappings.iter().any(|m| &m.target == name) {
            problems.push(format!("unexpected weight {name}"));
        }
    }
    let expected: u64 = plan.mappings.iter().map(|m| m.shape.iter().product::<usize>() as u64).sum();
    let present: u64 = found.values().map(|(_, s)| s.iter().product::<usize>() as u64).sum();
    if expected != present {
        problems.push(format!("the folder holds {present} parameters, the original model has {expected}"));
    }
    problems
}

fn tf_data_type(dtype: DType) -> tensorflow::DataType {
    crate::tf_io::tf_dtype(dtype)
}

/// The architecture the folder's own `config.json` describes: what `from_pretrained` would build.
pub fn folder_architecture(folder: &Path) -> Result<Box<dyn Architecture>> {
    let path = folder.join("config.json");
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let config: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::input(&path, format!("not valid JSON: {e}")))?;
    tfconv_models::arch::from_hf_config(&config).map_err(|e| Error::input(&path, e))
}

/// Runs both sides on the same probes and compares them.
///
/// `arch` and `plan` describe the ORIGINAL model (its own config and variables): they drive the
/// TensorFlow reference and say which tensors the folder must hold. The candle side is built
/// from the folder's own `config.json`, as `from_pretrained` would build it, so that a wrong
/// config (activation, eps, tying, class) diverges instead of being mirrored on both sides.
pub fn verify(
    folder: &Path,
    ckpt: &dyn Checkpoint,
    arch: &dyn Architecture,
    plan: &Plan,
    opts: &VerifyOptions,
) -> Result<VerifyReport> {
    // The folder first: an unreadable folder is an input error whether or not TensorFlow loads.
    let (files, index) = weight_layout(folder)?;
    let found = folder_tensors(&files)?;
    let folder_arch = folder_architecture(folder)?;
    let tf_version = crate::tf_runtime::version()?;
    let mut structural = match &index {
        Some(index) => index_problems(index, &files)?,
        None => Vec::new(),
    };
    if (folder_arch.model_type(), folder_arch.class_name()) != (arch.model_type(), arch.class_name()) {
        structural.push(format!(
            "config.json declares {} ({}), but the checkpoint holds {} ({})",
            folder_arch.class_name(),
            folder_arch.model_type(),
            arch.class_name(),
            arch.model_type()
        ));
    }
    structural.extend(structural_problems(plan, &found));
    let parameters: u64 = found.values().map(|(_, s)| s.iter().product::<usize>() as u64).sum();
    let stored = found.values().map(|(d, _)| *d).find(|d| d.is_float()).unwrap_or(DType::F32);
    let default_tol = Tolerance::for_dtype(stored);
    let tolerance = Tolerance { atol: opts.atol.unwrap_or(default_tol.atol), rtol: opts.rtol.unwrap_or(default_tol.rtol) };
    let probes = arch.probes(opts.seed, opts.batch, opts.seq_len);
    let mut report = VerifyReport {
        pass: false,
        folder: folder.to_path_buf(),
        checkpoint: ckpt.path().to_path_buf(),
        class: arch.class_name().to_string(),
        stored_dtype: stored.name().to_string(),
        tolerance,
        probes: probes.clone(),
        structural_problems: structural,
        parameters,
        outputs: Vec::new(),
        first_divergence: None,
        tensorflow_version: tf_version,
        seconds_candle: 0.0,
        seconds_tensorflow: 0.0,
    };
    if !report.structural_problems.is_empty() {
        report.first_divergence = Some("structure".into());
        return Ok(report);
    }

    let started = Instant::now();
    let candle = candle_outputs(&files, folder_arch.as_ref(), &probes)?;
    report.seconds_candle = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let dtypes: HashMap<String, tensorflow::DataType> =
        ckpt.tensors().iter().map(|t| (t.name.clone(), tf_data_type(t.dtype))).collect();
    let prefix = ckpt.path().to_string_lossy().into_owned();
    let reference = arch
        .reference_outputs(&prefix, &dtypes, &probes)
        .map_err(|e| Error::ReferenceUnavailable(format!("the TensorFlow reference run failed: {e:#}")))?;
    report.seconds_tensorflow = started.elapsed().as_secs_f64();

    report.outputs = compare::compare(&candle, &reference, tolerance);
    report.first_divergence = report.outputs.iter().find(|o| !o.pass).map(|o| o.name.clone());
    report.pass = report.first_divergence.is_none();
    Ok(report)
}

/// Loads the folder's weights into candle under HF's names and runs the architecture.
pub fn candle_outputs(files: &[PathBuf], arch: &dyn Architecture, probes: &Probes) -> Result<Outputs> {
    let device = candle_core::Device::Cpu;
    let first = files.first().ok_or_else(|| Error::input(".", "no weight files to load"))?;
    let load_err = |e: candle_core::Error| Error::input(first, format!("candle could not load the weights: {e}"));
    let vb = if files.iter().all(|f| f.extension().is_some_and(|e| e == "bin")) {
        let shards = PthShards::open(files).map_err(load_err)?;
        candle_nn::VarBuilder::from_backend(Box::new(shards), candle_core::DType::F32, device.clone())
    } else {
        // SAFETY: the files are ours (just written) or the user's; they are not modified while mapped.
        unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(files, candle_core::DType::F32, &device) }.map_err(load_err)?
    };
    arch.candle_outputs(vb, probes)
        .map_err(|e| Error::Mapping(format!("the converted weights do not fit {}: {e}", arch.class_name())))
}

/// One or more `pytorch_model*.bin` files as one candle backend. Each tensor is read from the
/// shard that holds it when the model asks for it (candle's `PthTensors` keeps only the headers
/// and reopens the zip per tensor), so memory stays at the model's size, not the shards'.
struct PthShards {
    shards: Vec<candle_core::pickle::PthTensors>,
    owner: HashMap<String, usize>,
}

impl PthShards {
    fn open(files: &[PathBuf]) -> candle_core::Result<PthShards> {
        let shards = files.iter().map(|f| candle_core::pickle::PthTensors::new(f, None)).collect::<candle_core::Result<Vec<_>>>()?;
        let owner = shards.iter().enumerate().flat_map(|(i, s)| s.tensor_infos().keys().map(move |k| (k.clone(), i))).collect();
        Ok(PthShards { shards, owner })
    }

    fn shard(&self, name: &str) -> candle_core::Result<&candle_core::pickle::PthTensors> {
        match self.owner.get(name) {
            Some(&i) => Ok(&self.shards[i]),
            None => Err(candle_core::Error::CannotFindTensor { path: name.to_string() }.bt()),
        }
    }
}

impl candle_nn::var_builder::SimpleBackend for PthShards {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        init: candle_nn::Init,
        dtype: candle_core::DType,
        dev: &candle_core::Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        candle_nn::var_builder::SimpleBackend::get(self.shard(name)?, shape, name, init, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: candle_core::DType, dev: &candle_core::Device) -> candle_core::Result<candle_core::Tensor> {
        candle_nn::var_builder::SimpleBackend::get_unchecked(self.shard(name)?, name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.owner.contains_key(name)
    }
}

/// The human summary, for stderr.
pub fn render_table(report: &VerifyReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "verify {} ({}, stored {}) against TensorFlow {} on {}",
        report.folder.display(),
        report.class,
        report.stored_dtype,
        report.tensorflow_version,
        report.checkpoint.display()
    );
    let _ = writeln!(
        s,
        "probes: batch {} × seq {} (seed in report); tolerance |Δ| ≤ {:.0e} + {:.0e}·max|ref|; {} parameters",
        report.probes.batch, report.probes.seq_len, report.tolerance.atol, report.tolerance.rtol, report.parameters
    );
    for p in &report.structural_problems {
        let _ = writeln!(s, "  structure: {p}");
    }
    if !report.outputs.is_empty() {
        let w = report.outputs.iter().map(|o| o.name.len()).max().unwrap_or(6).max(6);
        let _ = writeln!(s, "  {:<w$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>9}  {:>7}  result", "output", "max|Δ|", "allowed", "rel", "mean|Δ|", "cosine", "argmax");
        for o in &report.outputs {
            let argmax = o.argmax_agreement.map(|a| format!("{:.1}%", a * 100.0)).unwrap_or_else(|| "-".into());
            let result = match (&o.problem, o.pass) {
                (Some(p), _) => format!("FAIL ({p})"),
                (None, true) => "ok".into(),
                (None, false) => "FAIL".into(),
            };
            let _ = writeln!(
                s,
                "  {:<w$}  {:>10.3e}  {:>10.3e}  {:>10.3e}  {:>10.3e}  {:>9.6}  {:>7}  {result}",
                o.name, o.max_abs_error, o.allowed, o.max_rel_error, o.mean_abs_error, o.cosine_similarity, argmax
            );
        }
    }
    match &report.first_divergence {
        None => {
            let worst = report.outputs.iter().map(|o| o.max_rel_error).fold(0.0, f64::max);
            let _ = writeln!(s, "PASS: {} outputs agree (worst relative error {worst:.2e})", report.outputs.len());
        }
        Some(first) if first == "structure" => {
            let _ = writeln!(s, "FAIL: the folder's weights do not match the plan ({} problem(s))", report.structural_problems.len());
        }
        Some(first) => {
            let o = report.outputs.iter().find(|o| &o.name == first).expect("named from outputs");
            let _ = writeln!(
                s,
                "FAIL: first divergence at '{first}' (max |Δ| {:.3e} > allowed {:.3e} at flat index {}){}",
                o.max_abs_error,
                o.allowed,
                o.worst_index,
                suspect_weights(first)
            );
        }
    }
    s
}

/// Where to look for the cause of a divergence in a named output.
fn suspect_weights(output: &str) -> String {
    if let Some(layer) = output.strip_prefix("layer.") {
        format!("; suspect the weights of encoder layer {layer}")
    } else if output == "embeddings" {
        "; suspect the embedding tables or their LayerNorm".into()
    } else {
        format!("; suspect the weights feeding '{output}'")
    }
}
