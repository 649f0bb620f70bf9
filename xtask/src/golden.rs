//! Golden fixtures per architecture (golden/<case>/): a tiny checkpoint written by TensorFlow
//! with the original variable names, the original config and vocabulary, probe inputs, and the
//! outputs of the original model run in TensorFlow on that checkpoint.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use tfconv::tf_io;
use tfconv_models::bert::{self, BertConfig, Head, Layout};
use tfconv_models::probe::Outputs;
use tfconv_models::stage::Values;
use tfconv_models::tf_graph::OriginalWeights;

use tfconv::synthetic::{tiny_bert_config, tiny_vocab, write_bert_checkpoint, write_bert_tf2_checkpoint};

/// Seed of the probes stored with every golden case.
pub const PROBE_SEED: u64 = 7;

/// Runs the TF reference for a BERT checkpoint of `layout`; `cfg` is the original config.
pub fn bert_reference(prefix: &Path, layout: Layout, cfg: &BertConfig, head: Head, inputs: &Values) -> Result<Outputs> {
    let ckpt = tfconv::source::open(prefix)?;
    let dtypes: HashMap<String, tensorflow::DataType> =
        ckpt.tensors().iter().map(|t| (t.name.clone(), tf_io::tf_dtype(t.dtype))).collect();
    let weights = OriginalWeights::new(prefix.to_str().context("non-UTF-8 path")?, dtypes);
    match layout {
        Layout::Tf1 => bert::reference::forward(&weights, cfg, head, inputs),
        Layout::Tf2Objects => bert::reference::forward_tf2(&weights, cfg, inputs),
    }
}

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

struct BertCase {
    dir: &'static str,
    layout: Layout,
    head: Head,
    trainer_state: bool,
    seed: u64,
}

const BERT_CASES: &[BertCase] = &[
    BertCase { dir: "bert", layout: Layout::Tf1, head: Head::PreTraining, trainer_state: true, seed: 1 },
    BertCase { dir: "bert-classifier", layout: Layout::Tf1, head: Head::SequenceClassification { num_labels: 3 }, trainer_state: false, seed: 2 },
    BertCase { dir: "bert-squad", layout: Layout::Tf1, head: Head::QuestionAnswering, trainer_state: false, seed: 3 },
    BertCase { dir: "bert-encoder", layout: Layout::Tf1, head: Head::Base, trainer_state: false, seed: 4 },
    BertCase { dir: "bert-tf2", layout: Layout::Tf2Objects, head: Head::Base, trainer_state: true, seed: 5 },
];

/// The golden case folders, for tasks that walk them.
pub const CASES: &[&str] = &["bert", "bert-classifier", "bert-squad", "bert-encoder", "bert-tf2"];

pub fn write_all(root: &Path) -> Result<()> {
    let config = tiny_bert_config();
    let cfg: BertConfig = serde_json::from_value(config.clone())?;
    for case in BERT_CASES {
        let dir = root.join(case.dir);
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let prefix = dir.join("bert_model.ckpt");
        match case.layout {
            Layout::Tf1 => write_bert_checkpoint(&prefix, &cfg, case.head, case.seed, case.trainer_state)?,
            Layout::Tf2Objects => write_bert_tf2_checkpoint(&prefix, &cfg, case.seed, case.trainer_state)?,
        }
        fs::write(dir.join("bert_config.json"), serde_json::to_string_pretty(&config)? + "\n")?;
        fs::write(dir.join("vocab.txt"), tiny_vocab(cfg.vocab_size))?;
        let probes = bert::probes::random(&cfg, PROBE_SEED, 3, cfg.max_position_embeddings);
        fs::write(dir.join("probes.json"), probes.to_json_lines())?;
        let outputs = bert_reference(&prefix, case.layout, &cfg, case.head, &probes.inputs)?;
        write_outputs(&dir.join("expected.safetensors"), &outputs)?;
        println!("golden/{}: {} outputs from TensorFlow {}", case.dir, outputs.0.len(), tfconv::tf_runtime::version()?);
    }
    Ok(())
}
