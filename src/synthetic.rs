//! Writes synthetic "original" checkpoints (see `tfconv_models::synthetic`) with TensorFlow's own
//! SaveV2, so fixtures and property tests read exactly what TF writes. Needs TensorFlow (`tf_io`).

use std::path::Path;

pub use tfconv_models::synthetic::{Contents, Data, GoldenCase, Rng, Variable};

use crate::error::{Error, Result};
use crate::source::DType;
use crate::tf_io::{self, HostTensor, SaveItem};

/// Writes `variables` as a V2 bundle at `prefix` with TF's SaveV2.
pub fn write_checkpoint(prefix: &Path, variables: &[Variable]) -> Result<()> {
    let tensors: Vec<HostTensor> = variables
        .iter()
        .map(|v| match &v.data {
            Data::F32(values) => HostTensor::f32(v.shape.clone(), values),
            Data::BF16(values) => {
                HostTensor::new(DType::BF16, v.shape.clone(), values.iter().flat_map(|x| half::bf16::from_f32(*x).to_bits().to_le_bytes()).collect())
            }
            Data::I64(values) => HostTensor::new(DType::I64, v.shape.clone(), values.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Data::Strings(items) => HostTensor::strings(v.shape.clone(), items.clone()),
        })
        .collect();
    let items: Vec<SaveItem> = variables.iter().zip(&tensors).map(|(v, t)| SaveItem { name: &v.name, slice_spec: "", tensor: t }).collect();
    let prefix = prefix.to_str().ok_or_else(|| Error::Output(format!("{}: path is not UTF-8", prefix.display())))?;
    tf_io::save_v2(prefix, &items)
}

/// Writes `variables` (float32, in order) as OpenAI GPT's release does: `params_shapes.json`
/// and the values concatenated and cut into `shards` nearly equal `params_{i}.npy` files, so
/// that variables straddle shards as in the release.
pub fn write_numpy_shards(dir: &Path, variables: &[Variable], shards: usize) -> Result<()> {
    let mut values = Vec::new();
    let mut shapes = Vec::new();
    for v in variables {
        let Data::F32(data) = &v.data else {
            return Err(Error::Output(format!("{}: the numpy layout holds float32 values only", v.name)));
        };
        values.extend(data.iter().flat_map(|x| x.to_le_bytes()));
        shapes.push(v.shape.clone());
    }
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).map_err(|e| Error::write(dir.join(name), e));
    write(crate::source::numpy::SHAPES_FILE, serde_json::to_string(&shapes).expect("JSON of plain values").as_bytes())?;
    let numel = values.len() / 4;
    let per_shard = numel.div_ceil(shards.max(1));
    for i in 0..shards.max(1) {
        let (from, to) = ((i * per_shard).min(numel), ((i + 1) * per_shard).min(numel));
        let bytes = crate::source::numpy::npy_bytes("<f4", &[to - from], &values[from * 4..to * 4]);
        write(&crate::source::numpy::shard_name(i), &bytes)?;
    }
    Ok(())
}

/// Writes one bundle at `prefix` whose data is split into one shard per group of variables.
pub fn write_sharded_checkpoint(prefix: &Path, groups: &[Vec<Variable>]) -> Result<()> {
    let dir = prefix.parent().unwrap_or(Path::new("."));
    let parts: Vec<std::path::PathBuf> = (0..groups.len()).map(|i| dir.join(format!(".part-{i}-of-{}", groups.len()))).collect();
    for (part, group) in parts.iter().zip(groups) {
        write_checkpoint(part, group)?;
    }
    let utf8 = |p: &Path| p.to_str().map(String::from).ok_or_else(|| Error::Output(format!("{}: path is not UTF-8", p.display())));
    let sources: Vec<String> = parts.iter().map(|p| utf8(p)).collect::<Result<_>>()?;
    let refs: Vec<&str> = sources.iter().map(String::as_str).collect();
    tf_io::merge_v2(&refs, &utf8(prefix)?)
}

/// Writes a golden case's checkpoint, config and tokenizer files into `dir`; returns the prefix.
pub fn write_case(dir: &Path, case: &GoldenCase) -> Result<std::path::PathBuf> {
    let prefix = dir.join(case.checkpoint);
    match &case.contents {
        Contents::TfBundle(variables) => write_checkpoint(&prefix, variables)?,
        Contents::TfShards(groups) => write_sharded_checkpoint(&prefix, groups)?,
        Contents::NumpyShards { variables, shards } => write_numpy_shards(dir, variables, *shards)?,
        Contents::Files(files) => {
            for (name, bytes) in files {
                let path = dir.join(name);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::write(parent, e))?;
                }
                std::fs::write(&path, bytes).map_err(|e| Error::write(&path, e))?;
            }
        }
    }
    if let Some(file) = case.config_file.filter(|f| !case.files.iter().any(|(name, _)| name == f)) {
        let config = serde_json::to_string_pretty(&case.config).expect("a JSON value serializes") + "\n";
        std::fs::write(dir.join(file), config).map_err(|e| Error::write(dir.join(file), e))?;
    }
    for (name, bytes) in &case.files {
        std::fs::write(dir.join(name), bytes).map_err(|e| Error::write(dir.join(name), e))?;
    }
    Ok(prefix)
}
