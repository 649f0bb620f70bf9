//! Verification: the converted folder, loaded by candle under HF's names, against the original
//! model running in TensorFlow on the original checkpoint. Structure first, then numbers.

pub mod compare;
pub mod html;
pub mod junit;
pub mod provenance;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_nn::var_builder::SimpleBackend;
use serde::{Deserialize, Serialize};
use tfconv_models::arch::Architecture;
use tfconv_models::plan::Plan;
use tfconv_models::probe::{Outputs, Probes};
use tfconv_models::stage::{Stage, Value, Values};

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
    /// Where the caller took the reference's config from; recorded in the report as given.
    pub reference_config: ReferenceConfig,
    /// A progress bar over the stages (only ever on a terminal).
    pub progress: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions { seed: 0, batch: 3, seq_len: None, atol: None, rtol: None, reference_config: ReferenceConfig::default(), progress: false }
    }
}

/// The config the TensorFlow reference was built from. A report must say so, because a
/// reference built from the folder's own config.json cannot catch mistakes in that file, and
/// an override (`--hidden-act`) changes what "the original" computes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceConfig {
    /// The file read; None when the caller did not say (library use).
    pub path: Option<PathBuf>,
    /// True when it is the folder's own config.json (`--trust-folder-config`).
    pub trusted_folder_config: bool,
    /// Keys replaced from the command line, with their values.
    pub overrides: BTreeMap<String, serde_json::Value>,
}

/// Everything `verify` found; serialised as the JSON report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    pub pass: bool,
    pub folder: PathBuf,
    pub checkpoint: PathBuf,
    pub class: String,
    pub stored_dtype: String,
    pub tolerance: Tolerance,
    /// The seed and every input tensor by name, so a run can be repeated exactly.
    pub probes: Probes,
    pub reference_config: ReferenceConfig,
    pub structural_problems: Vec<String>,
    pub parameters: u64,
    /// Tolerance of the isolated comparison: one stage on the reference's own inputs, where
    /// nothing has accumulated.
    pub isolated_tolerance: Tolerance,
    /// The end-to-end (chained) comparison of every output, in forward order.
    pub outputs: Vec<OutputReport>,
    /// Both comparisons, stage by stage.
    pub stages: Vec<StageReport>,
    /// The first output outside tolerance: from the isolated comparison when a stage fails
    /// there, else from the chained one; "structure" for structural problems.
    pub first_divergence: Option<String>,
    /// "isolated" or "chained": which comparison named `first_divergence`.
    pub divergence_kind: Option<String>,
    pub tensorflow_version: String,
    pub seconds_candle: f64,
    pub seconds_tensorflow: f64,
    /// File digests, versions and choices; filled by the command line, which knows the files.
    pub provenance: Option<provenance::Provenance>,
}

impl VerifyReport {
    /// A JSON report read back (None when it is not one).
    pub fn from_json(value: &serde_json::Value) -> Option<VerifyReport> {
        serde_json::from_value(value.clone()).ok()
    }
}

/// One stage's two comparisons with the reference.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    pub name: String,
    /// How many original variables TensorFlow restored, and HF tensors candle could read, for it.
    pub original_variables: usize,
    pub hf_tensors: usize,
    /// Candle fed its own previous outputs, as a user runs the model end to end.
    pub chained: Vec<OutputReport>,
    /// Candle fed the reference's inputs to this stage: a fault shows here in its own stage only.
    pub isolated: Vec<OutputReport>,
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
            )
            .because(crate::error::InputFault::Missing));
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

/// The tie aliases a folder holds beside the tensors they are tied to.
#[derive(Debug, Default)]
pub struct Ties {
    /// Aliases with the same dtype, shape and bytes as their tensor: the same parameter twice.
    pub identical: BTreeSet<String>,
    /// Aliases that differ from their tensor; each is named in `problems`.
    pub differing: BTreeSet<String>,
    pub problems: Vec<String>,
}

/// Compares every tie alias of `arch` (see [`Architecture::tied_aliases`]) that the folder holds
/// (and the plan does not map) with the planned tensor it is tied to: HF's own `transformers
/// convert` torch.save's the full state dict, so its folders hold these aliases as extra tensors.
/// `from_pretrained` keeps one of the two for both names, so they must be bit-identical for the
/// folder to mean one model.
pub fn check_ties(arch: &dyn Architecture, plan: &Plan, found: &BTreeMap<String, TensorMeta>, files: &[PathBuf]) -> Result<Ties> {
    let mut ties = Ties::default();
    let class = arch.class_name();
    let planned = |name: &str| plan.targets().any(|(t, _)| t == name);
    for (alias, target) in arch.tied_aliases() {
        let (alias, target) = (alias.as_str(), target.as_str());
        let (Some(a), Some(t)) = (found.get(alias), found.get(target)) else { continue };
        if planned(alias) || !planned(target) {
            continue;
        }
        let why = if a.0 != t.0 {
            Some(format!("it is stored as {} and {target} as {}", a.0.name(), t.0.name()))
        } else if a.1 != t.1 {
            Some(format!("it has shape {:?} and {target} {:?}", a.1, t.1))
        } else {
            let (x, y) = (tensor_bytes(files, alias)?, tensor_bytes(files, target)?);
            let width = (x.len() / a.1.iter().product::<usize>().max(1)).max(1);
            let differ = x.chunks(width).zip(y.chunks(width)).filter(|(p, q)| p != q).count();
            (differ > 0).then(|| format!("{differ} of {} elements", x.len() / width))
        };
        match why {
            None => ties.identical.insert(alias.to_string()),
            Some(why) => {
                ties.problems.push(format!(
                    "{alias} is tied to {target} in {class}, but the two differ ({why}): from_pretrained keeps one of them or unties the two, depending on the transformers version"
                ));
                ties.differing.insert(alias.to_string())
            }
        };
    }
    Ok(ties)
}

/// The raw bytes of one tensor, from whichever weight file holds it.
fn tensor_bytes(files: &[PathBuf], name: &str) -> Result<Vec<u8>> {
    use safetensors::View;
    for file in files {
        if !file_tensors(file)?.iter().any(|(n, _)| n == name) {
            continue;
        }
        let err = |e: candle_core::Error| Error::tensor(file, name, format!("unreadable: {e}"));
        let tensor = if file.extension().is_some_and(|e| e == "bin") {
            candle_core::pickle::PthTensors::new(file, None).and_then(|p| p.get(name)).map_err(err)?
        } else {
            // SAFETY: as in `file_tensors`.
            let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }.map_err(err)?;
            Some(st.load(name, &candle_core::Device::Cpu).map_err(err)?)
        };
        let tensor = tensor.ok_or_else(|| Error::tensor(file, name, "listed but not readable"))?;
        return Ok(tensor.contiguous().map_err(err)?.data().into_owned());
    }
    Err(Error::input(files.first().map(PathBuf::as_path).unwrap_or(Path::new(".")), format!("no weight file holds {name}")))
}

/// The checks that need no numbers: every planned tensor present with its shape, nothing extra
/// but tie aliases (already judged in `ties`), and as many parameters as the original model.
pub fn structural_problems(plan: &Plan, found: &BTreeMap<String, TensorMeta>, ties: &Ties) -> Vec<String> {
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
    for s in &plan.synthesized {
        match found.get(&s.target) {
            None => problems.push(format!("missing weight {} ({}: {})", s.target, s.fill, s.reason)),
            Some((_, shape)) if *shape != s.shape => problems.push(format!("{} has shape {shape:?}, expected {:?}", s.target, s.shape)),
            _ => {}
        }
    }
    let is_alias = |name: &String| ties.identical.contains(name) || ties.differing.contains(name);
    for name in found.keys().filter(|n| !is_alias(n)) {
        if !plan.targets().any(|(t, _)| t == name) {
            problems.push(format!("unexpected weight {name}"));
        }
    }
    problems.extend(ties.problems.iter().cloned());
    let expected: u64 = plan.targets().map(|(_, shape)| shape.iter().product::<usize>() as u64).sum();
    // A differing alias is already reported above; counting it again would only add noise.
    let present: u64 = found.iter().filter(|(n, _)| !is_alias(n)).map(|(_, (_, s))| s.iter().product::<usize>() as u64).sum();
    if expected != present {
        problems.push(format!("the folder holds {present} parameters, the original model has {expected}"));
    }
    problems
}

/// What `from_pretrained` would warn about when the folder's config.json and its weights
/// disagree: stored tensors a model built from config.json never asks for (unexpected keys),
/// and tensors it asks for that the folder lacks. Layer-indexed names are grouped per layer and
/// blamed on config.json's layer count.
fn config_findings(config: &serde_json::Value, unused: &[&str], lacking: &[&str]) -> Vec<String> {
    // The layer-count key, whatever the model calls it (num_hidden_layers, n_layer, num_layers).
    let layer_key = config
        .as_object()
        .and_then(|o| o.iter().find(|(k, v)| k.contains("layer") && v.is_u64()))
        .map(|(k, v)| format!("config.json {k}={v}"));
    // "bert.encoder.layer.2.output.dense.bias" → ("bert.encoder.layer", 2).
    let layer_of = |name: &str| {
        let parts: Vec<&str> = name.split('.').collect();
        parts.iter().position(|p| p.parse::<usize>().is_ok()).map(|i| (parts[..i].join("."), parts[i].parse::<usize>().unwrap()))
    };
    // Tensors grouped by numbered block ("layers 2, 10: encoder.layer.2.*, encoder.layer.10.*"), and
    // the rest. Only a block named as a layer is blamed on the layer count; others (ALBERT's
    // shared `albert_layer_groups.1`) are named by their own stem.
    let is_layer_stem = |stem: &str| matches!(stem.rsplit('.').next(), Some("layer" | "layers" | "h" | "block"));
    let group = |names: &[&str]| -> (Option<(String, usize, bool)>, Vec<String>) {
        let mut per_layer: BTreeMap<(String, usize), usize> = BTreeMap::new();
        let mut other = Vec::new();
        for name in names {
            match layer_of(name) {
                Some(key) => *per_layer.entry(key).or_default() += 1,
                None => other.push(name.to_string()),
            }
        }
        let layers: Vec<String> = per_layer.keys().map(|(_, l)| l.to_string()).collect();
        let globs: Vec<String> = per_layer.keys().map(|(stem, l)| format!("{stem}.{l}.*")).collect();
        let all_layers = per_layer.keys().all(|(stem, _)| is_layer_stem(stem));
        let which = (!layers.is_empty()).then(|| {
            let what = match all_layers {
                true => format!("{} {}: {}", if layers.len() == 1 { "layer" } else { "layers" }, layers.join(", "), globs.join(", ")),
                false => globs.join(", "),
            };
            (what, per_layer.values().sum(), all_layers)
        });
        (which, other)
    };
    let blame = |what: String, layers: bool| match (&layer_key, layers) {
        (Some(key), true) => format!("{key}, but {what}"),
        _ => what,
    };
    let mut findings = Vec::new();
    let (layers, other) = group(unused);
    if let Some((which, count, is_layers)) = layers {
        findings.push(blame(format!("the folder holds weights for {which} ({count} tensors unused by a model built from config.json)"), is_layers));
    }
    if !other.is_empty() {
        findings.push(format!("{} tensor(s) the folder holds are unused by a model built from config.json: {}", other.len(), other.join(", ")));
    }
    let (layers, other) = group(lacking);
    if let Some((which, count, is_layers)) = layers {
        findings.push(blame(format!("the folder holds no weights for {which} ({count} tensors a model built from config.json needs)"), is_layers));
    }
    if !other.is_empty() {
        findings.push(format!("a model built from config.json needs {}, which the folder does not hold", other.join(", ")));
    }
    findings
}

fn tf_data_type(dtype: DType) -> tensorflow::DataType {
    crate::tf_io::tf_dtype(dtype)
}

/// The architecture the folder's own `config.json` describes: what `from_pretrained` would build.
pub fn folder_architecture(folder: &Path) -> Result<Box<dyn Architecture>> {
    architecture_of(&folder_config(folder)?, folder)
}

fn architecture_of(config: &serde_json::Value, folder: &Path) -> Result<Box<dyn Architecture>> {
    tfconv_models::arch::from_hf_config(config).map_err(|e| Error::input(folder.join("config.json"), e))
}

/// An HF folder's `config.json`, parsed.
pub fn folder_config(folder: &Path) -> Result<serde_json::Value> {
    let path = folder.join("config.json");
    let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_slice(&text).map_err(|e| Error::input(&path, format!("not valid JSON: {e}")))
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
    let config = folder_config(folder)?;
    let folder_arch = architecture_of(&config, folder)?;
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
    let ties = check_ties(arch, plan, &found, &files)?;
    structural.extend(structural_problems(plan, &found, &ties));
    // Each distinct tensor once: an identical tie alias is the same parameter under a second name.
    let parameters: u64 =
        found.iter().filter(|(n, _)| !ties.identical.contains(*n)).map(|(_, (_, s))| s.iter().product::<usize>() as u64).sum();
    let stored = found.values().map(|(d, _)| *d).find(|d| d.is_float()).unwrap_or(DType::F32);
    let default_tol = Tolerance::for_dtype(stored);
    let tolerance = Tolerance { atol: opts.atol.unwrap_or(default_tol.atol), rtol: opts.rtol.unwrap_or(default_tol.rtol) };
    let isolated_tolerance = Tolerance::isolated_stage(stored);
    let probes = arch.probes(opts.seed, opts.batch, opts.seq_len);
    let mut report = VerifyReport {
        pass: false,
        folder: folder.to_path_buf(),
        checkpoint: ckpt.path().to_path_buf(),
        class: arch.class_name().to_string(),
        stored_dtype: stored.name().to_string(),
        tolerance,
        isolated_tolerance,
        probes: probes.clone(),
        reference_config: opts.reference_config.clone(),
        structural_problems: structural,
        parameters,
        outputs: Vec::new(),
        stages: Vec::new(),
        first_divergence: None,
        divergence_kind: None,
        tensorflow_version: tf_version,
        seconds_candle: 0.0,
        seconds_tensorflow: 0.0,
        provenance: None,
    };
    if !report.structural_problems.is_empty() {
        report.first_divergence = Some("structure".into());
        return Ok(report);
    }

    // The candle side is built from config.json as from_pretrained builds it, so the tensors its
    // stages declare are the folder's expected keys.
    let candle_stages = folder_arch.stages();
    let expected: BTreeSet<&str> = candle_stages.iter().flat_map(|st| st.hf_tensors.iter().map(String::as_str)).collect();
    let lacking: Vec<&str> = expected.iter().filter(|n| !found.contains_key(**n)).copied().collect();
    let unused: Vec<&str> =
        found.keys().map(String::as_str).filter(|n| !expected.contains(n) && !ties.identical.contains(*n)).collect();
    let findings = config_findings(&config, &unused, &lacking);
    if !findings.is_empty() {
        report.structural_problems = findings;
        report.first_divergence = Some("structure".into());
        return Ok(report);
    }

    let mut weights = crate::tf_io::original_weights(ckpt)?;
    // Each original variable rounded as the folder stores it, so a float16 or bfloat16 folder is
    // held to float32 noise: any difference left is the conversion's, not the rounding's.
    weights.round_to = plan
        .mappings
        .iter()
        .filter_map(|m| found.get(&m.target).filter(|(d, _)| d.is_float()).map(|(d, _)| (m.source.clone(), tf_data_type(*d))))
        .collect();

    let tf_stages = arch.stages();
    let names = |stages: &[Stage]| stages.iter().map(|st| (st.name.clone(), st.outputs.clone())).collect::<Vec<_>>();
    if names(&tf_stages) != names(&candle_stages) {
        report.structural_problems.push(format!(
            "config.json describes the stages {:?}, but the original model has {:?}",
            candle_stages.iter().map(|st| st.name.as_str()).collect::<Vec<_>>(),
            tf_stages.iter().map(|st| st.name.as_str()).collect::<Vec<_>>()
        ));
        report.first_divergence = Some("structure".into());
        return Ok(report);
    }
    release_freed_memory();
    let (mut tf_known, mut candle_known) = (probes.inputs.clone(), probes.inputs);
    let progress = crate::progress::Progress::new(opts.progress, tf_stages.len(), "verify");
    for (i, (tf_stage, candle_stage)) in tf_stages.iter().zip(&candle_stages).enumerate() {
        progress.start(&tf_stage.name);
        // Later stages' inputs are kept; every other output is compared and dropped at once, so
        // memory holds one stage's tensors (the MLM logits are 47 MB at BERT size), not all.
        let later: BTreeSet<&str> = tf_stages[i + 1..].iter().flat_map(|st| st.inputs.iter().map(String::as_str)).collect();
        let stage_err = |e: String| Error::Mapping(format!("stage {}: {e}", tf_stage.name));
        let tf_in = tf_known.pick(&tf_stage.inputs).map_err(stage_err)?;
        let started = Instant::now();
        let tf_out = crate::tf_runtime::quietly(|| arch.reference_stage(tf_stage, &weights, &tf_in))
            .map_err(|e| Error::ReferenceUnavailable(format!("the TensorFlow reference failed in stage {}: {e:#}", tf_stage.name)))?;
        let seconds_tensorflow = started.elapsed().as_secs_f64();
        let (reference, tf_kept) = split_outputs(tf_out, &later);
        tf_known.0.extend(tf_kept.0);

        // Only this stage's tensors, from a mapping opened for it and dropped with it.
        let started = Instant::now();
        let chained_in = candle_known.pick(&candle_stage.inputs).map_err(stage_err)?;
        let run = |ins: &Values| -> Result<Values> {
            let vb = stage_weights(&files, &candle_stage.hf_tensors)?;
            folder_arch
                .candle_stage(candle_stage, vb, ins)
                .map_err(|e| Error::Mapping(format!("the converted weights do not fit {} in stage {}: {e}", arch.class_name(), candle_stage.name)))
        };
        let chained_out = match run(&chained_in) {
            Ok(out) => out,
            // The folder's weights do not fit the model its config.json describes (a tensor of
            // another shape, e.g. `n_positions` left at a default the position table does not
            // have): from_pretrained would refuse it too. A finding about the folder, named by
            // stage and tensor, not a failure of verify.
            Err(Error::Mapping(why)) => {
                report.structural_problems.push(why);
                report.first_divergence = Some("structure".into());
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        let chained = {
            let (outputs, kept) = split_outputs(chained_out, &later);
            candle_known.0.extend(kept.0);
            compare::compare(&outputs, &reference, tolerance)
        };
        // The first stage reads only probe inputs, which both sides share.
        let isolated = if chained_in == tf_in {
            chained.iter().cloned().map(|o| o.rescore(isolated_tolerance)).collect()
        } else {
            compare::compare(&split_outputs(run(&tf_in)?, &BTreeSet::new()).0, &reference, isolated_tolerance)
        };
        let seconds_candle = started.elapsed().as_secs_f64();
        report.seconds_candle += seconds_candle;
        report.seconds_tensorflow += seconds_tensorflow;
        release_freed_memory();
        report.outputs.extend(chained.iter().cloned());
        report.stages.push(StageReport {
            name: tf_stage.name.clone(),
            original_variables: tf_stage.original_vars.len(),
            hf_tensors: candle_stage.hf_tensors.len(),
            chained,
            isolated,
            seconds_candle,
            seconds_tensorflow,
        });
        progress.step();
    }
    progress.finish();
    // A fault shows in exactly one isolated stage; an error that only accumulates shows chained.
    let isolated = report.stages.iter().flat_map(|st| st.isolated.iter()).find(|o| !o.pass);
    let chained = report.outputs.iter().find(|o| !o.pass);
    report.first_divergence = isolated.or(chained).map(|o| o.name.clone());
    report.divergence_kind = match (isolated, chained) {
        (Some(_), _) => Some("isolated".into()),
        (None, Some(_)) => Some("chained".into()),
        _ => None,
    };
    report.pass = report.first_divergence.is_none();
    Ok(report)
}

/// Hands memory freed by the finished stage back to the system. TensorFlow and candle free
/// their tensors, but glibc keeps freed heap pages for reuse, so without this the process's
/// memory would grow toward the sum of the stages instead of the largest one.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only returns free heap memory to the kernel; it has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// A stage's float outputs for comparison (moved), and copies of the values `keep` names.
fn split_outputs(values: Values, keep: &BTreeSet<&str>) -> (Outputs, Values) {
    let mut kept = Values::default();
    let mut outputs = Outputs::default();
    for (name, value) in values.0 {
        if keep.contains(name.as_str()) {
            kept.push(name.clone(), value.clone());
        }
        if let Value::Float { shape, data } = value {
            outputs.push(name, shape, data);
        }
    }
    (outputs, kept)
}

/// The folder's weight files as one candle backend (memory-mapped safetensors, or torch files
/// read tensor by tensor).
fn weight_backend(files: &[PathBuf]) -> Result<Box<dyn SimpleBackend>> {
    let first = files.first().ok_or_else(|| Error::input(".", "no weight files to load"))?;
    let load_err = |e: candle_core::Error| Error::input(first, format!("candle could not load the weights: {e}"));
    Ok(if files.iter().all(|f| f.extension().is_some_and(|e| e == "bin")) {
        Box::new(PthShards::open(files).map_err(load_err)?)
    } else {
        // SAFETY: the files are ours (just written) or the user's; they are not modified while mapped.
        Box::new(unsafe { candle_core::safetensors::MmapedSafetensors::multi(files) }.map_err(load_err)?)
    })
}

/// One stage's tensors, read as float32 and held on their own: the files are unmapped before the
/// stage runs, so its memory is its weights once, not its weights plus their file pages. A
/// tensor the stage uses without declaring it is then an error, not a silent extra read.
fn stage_weights(files: &[PathBuf], names: &[String]) -> Result<candle_nn::VarBuilder<'static>> {
    let backend = weight_backend(files)?;
    let (dtype, device) = (candle_core::DType::F32, candle_core::Device::Cpu);
    let tensors = names
        .iter()
        .filter(|n| backend.contains_tensor(n))
        .map(|n| Ok((n.clone(), backend.get_unchecked(n, dtype, &device)?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()
        .map_err(|e| Error::input(&files[0], format!("candle could not load the weights: {e}")))?;
    drop(backend);
    Ok(candle_nn::VarBuilder::from_tensors(tensors, dtype, &device))
}

/// Loads the folder's weights into candle under HF's names and runs the whole architecture.
pub fn candle_outputs(files: &[PathBuf], arch: &dyn Architecture, inputs: &Values) -> Result<Outputs> {
    let vb = candle_nn::VarBuilder::from_backend(weight_backend(files)?, candle_core::DType::F32, candle_core::Device::Cpu);
    arch.candle_outputs(vb, inputs)
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
    // oneDNN kernels round differently from Eigen's, so the numbers below depend on it.
    let onednn = match report.provenance.as_ref().and_then(|p| p.onednn) {
        Some(true) => " (oneDNN on)",
        Some(false) => " (oneDNN off)",
        None => "",
    };
    let _ = writeln!(
        s,
        "verify {} ({}, stored {}) against TensorFlow {}{onednn} on {}",
        report.folder.display(),
        report.class,
        report.stored_dtype,
        report.tensorflow_version,
        report.checkpoint.display()
    );
    let _ = writeln!(
        s,
        "probes: {}; {} parameters; staged: each stage compared chained \
         (|Δ| ≤ {:.0e} + {:.0e}·max|ref|) and isolated on the reference's inputs (|Δ| ≤ {:.0e} + {:.0e}·max|ref|)",
        report.probes,
        report.parameters,
        report.tolerance.atol,
        report.tolerance.rtol,
        report.isolated_tolerance.atol,
        report.isolated_tolerance.rtol
    );
    for p in &report.structural_problems {
        let _ = writeln!(s, "  structure: {p}");
    }
    let rows: Vec<(&OutputReport, Option<&OutputReport>)> = report
        .stages
        .iter()
        .flat_map(|st| st.chained.iter().map(move |c| (c, st.isolated.iter().find(|i| i.name == c.name))))
        .collect();
    if !rows.is_empty() {
        let w = rows.iter().map(|(o, _)| o.name.len()).max().unwrap_or(6).max(6);
        let _ = writeln!(
            s,
            "  {:<w$}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>9}  {:>7}  result",
            "output", "chained Δ", "allowed", "rel", "isolated Δ", "allowed", "cosine", "argmax"
        );
        for (o, iso) in rows {
            let argmax = o.argmax_agreement.map(|a| format!("{:.1}%", a * 100.0)).unwrap_or_else(|| "-".into());
            let result = match (o.problem.as_ref().or(iso.and_then(|i| i.problem.as_ref())), iso.is_none_or(|i| i.pass), o.pass) {
                (Some(p), _, _) => format!("FAIL ({p})"),
                (None, false, _) => "FAIL (isolated)".into(),
                (None, true, false) => "FAIL (chained)".into(),
                (None, true, true) => "ok".into(),
            };
            let (iso_err, iso_allowed) = iso.map(|i| (i.max_abs_error, i.allowed)).unwrap_or((f64::NAN, f64::NAN));
            let _ = writeln!(
                s,
                "  {:<w$}  {:>10.3e}  {:>10.3e}  {:>10.3e}  {:>10.3e}  {:>10.3e}  {:>9.6}  {:>7}  {result}",
                o.name, o.max_abs_error, o.allowed, o.max_rel_error, iso_err, iso_allowed, o.cosine_similarity, argmax
            );
        }
    }
    match &report.first_divergence {
        None => {
            let worst = report.outputs.iter().map(|o| o.max_rel_error).fold(0.0, f64::max);
            let _ = writeln!(
                s,
                "PASS: {} outputs agree in {} stages (worst relative error {worst:.2e})",
                report.outputs.len(),
                report.stages.len()
            );
        }
        Some(first) if first == "structure" => {
            let _ = writeln!(s, "FAIL: the folder's weights do not match the plan or its config.json ({} problem(s))", report.structural_problems.len());
        }
        Some(first) => {
            let kind = report.divergence_kind.as_deref().unwrap_or("chained");
            let pool: Vec<&OutputReport> = match kind {
                "isolated" => report.stages.iter().flat_map(|st| st.isolated.iter()).collect(),
                _ => report.outputs.iter().collect(),
            };
            let o = pool.into_iter().find(|o| &o.name == first).expect("named from the reports");
            let _ = writeln!(
                s,
                "FAIL: first divergence at '{first}' ({kind}: max |Δ| {:.3e} > allowed {:.3e}, {:.1}× over, at flat index {}){}",
                o.max_abs_error,
                o.allowed,
                o.max_abs_error / o.allowed.max(f64::MIN_POSITIVE),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_findings_group_unused_weights_by_layer_and_blame_the_layer_count() {
        let config = serde_json::json!({"layer_norm_eps": 1e-12, "num_hidden_layers": 2, "hidden_size": 8});
        let unused = ["encoder.layer.10.output.dense.bias", "encoder.layer.2.output.dense.bias", "encoder.layer.2.output.dense.weight", "extra.weight"];
        let findings = config_findings(&config, &unused, &[]);
        assert_eq!(
            findings,
            [
                "config.json num_hidden_layers=2, but the folder holds weights for layers 2, 10: encoder.layer.2.*, encoder.layer.10.* (3 tensors unused by a model built from config.json)",
                "1 tensor(s) the folder holds are unused by a model built from config.json: extra.weight",
            ]
        );
        let lacking = config_findings(&config, &[], &["encoder.layer.2.attention.self.query.weight", "encoder.layer.2.output.dense.bias"]);
        assert_eq!(
            lacking,
            ["config.json num_hidden_layers=2, but the folder holds no weights for layer 2: encoder.layer.2.* (2 tensors a model built from config.json needs)"]
        );
        assert!(config_findings(&config, &[], &[]).is_empty());
    }
}
