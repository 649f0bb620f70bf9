//! Golden fixtures per architecture (golden/<case>/): a tiny checkpoint written by TensorFlow
//! with the original variable names, the original config and vocabulary, probe inputs, and the
//! outputs of the original model run in TensorFlow on that checkpoint. The cases come from the
//! architecture registry (`tfconv_models::arch::golden_cases`).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tfconv::tf_io;
use tfconv_models::arch;
use tfconv_models::plan::SourceVar;
use tfconv_models::probe::Outputs;

/// Seed of the probes stored with every golden case.
pub const PROBE_SEED: u64 = 7;

/// Stores named outputs as a safetensors file (f32), in forward order recorded in the metadata.
pub fn write_outputs(path: &Path, outputs: &Outputs) -> Result<()> {
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = outputs
        .0
        .iter()
        .map(|(n, o)| (n.clone(), o.values.iter().flat_map(|v| v.to_le_bytes()).collect(), o.shape.clone()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, b, s)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    let order = outputs.names().join(",");
    let meta: HashMap<String, String> = [("order".to_string(), order)].into();
    safetensors::serialize_to_file(views, Some(meta), path)?;
    Ok(())
}

/// Writes every registered golden case: checkpoint (TF SaveV2), config, tokenizer files, the
/// probes, and the original model's outputs on them computed by TensorFlow.
/// TFCONV_GOLDEN_CASES=transfo-xl,transfo-xl-lm1b writes only those cases.
pub fn write_all(root: &Path) -> Result<()> {
    let only: Option<Vec<String>> = std::env::var("TFCONV_GOLDEN_CASES").ok().map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    for case in arch::golden_cases().into_iter().filter(|c| only.as_ref().is_none_or(|o| o.iter().any(|d| d == c.dir))) {
        let dir = root.join(case.dir);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let prefix = tfconv::synthetic::write_case(&dir, &case)?;
        let ckpt = tfconv::source::open(&prefix)?;
        let vars: Vec<SourceVar> = ckpt.tensors().iter().map(|t| SourceVar { name: t.name.clone(), shape: t.shape.clone() }).collect();
        // The config as convert finds it: the file written beside the checkpoint, or the one inside it.
        let (_, config) = tfconv::convert::find_config(ckpt.as_ref(), None, case.model_type)?;
        let model = arch::from_original(case.model_type, &config, &vars).map_err(|e| anyhow!("golden/{}: {e}", case.dir))?;
        let probes = model.probes(PROBE_SEED, 3, None);
        fs::write(dir.join("probes.json"), probes.to_json_lines())?;
        let weights = tf_io::original_weights(ckpt.as_ref())?;
        let outputs = model.reference_outputs(&weights, &probes.inputs).with_context(|| format!("golden/{}", case.dir))?;
        write_outputs(&dir.join("expected.safetensors"), &outputs)?;
        println!("golden/{}: {} outputs from TensorFlow {}", case.dir, outputs.0.len(), tfconv::tf_runtime::version()?);
    }
    Ok(())
}
