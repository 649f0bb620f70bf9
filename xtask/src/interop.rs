//! The interop suite: every golden case converted in every output form, loaded by real
//! `transformers` (4.57.6 and 5.24.0, pinned) and compared with TensorFlow's golden outputs.
//! The Python environments live in tfconv's cache, outside the clone, so CI reuses them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use crate::run;
use tfconv_models::arch::{self, Architecture};

const TORCH: &str = "torch==2.15.0";
/// The transformers releases checked: the last 4.x and a pinned 5.x.
const TRANSFORMERS: &[&str] = &["4.57.6", "5.24.0"];

fn pip(python: &Path, args: &[&str]) -> Result<()> {
    run(Command::new(python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]).args(args))
}

/// One virtual environment with torch (it is 4 GB with its CUDA libraries, so it is shared),
/// created once and reused. Public because `cargo xtask test` installs it before `cargo test`:
/// tests/verify_hf_folders.rs writes HF-style state dicts with this torch.
pub fn torch_environment() -> Result<PathBuf> {
    let venv = tfconv::tf_runtime::cache_dir().join("interop").join("torch");
    let python = venv.join("bin").join("python");
    let stamp = venv.join("tfconv-installed.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == TORCH) {
        return Ok(python);
    }
    if !python.exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    pip(&python, &[TORCH, "safetensors", "numpy"])?;
    std::fs::write(&stamp, TORCH)?;
    Ok(python)
}

/// One transformers release and its pure-Python dependencies in a folder put first on
/// PYTHONPATH, so that each release is tested against the shared torch.
fn transformers_dir(python: &Path, version: &str) -> Result<PathBuf> {
    let dir = tfconv::tf_runtime::cache_dir().join("interop").join(format!("transformers-{version}"));
    let stamp = dir.join("tfconv-installed.txt");
    if stamp.is_file() {
        return Ok(dir);
    }
    let target = dir.to_string_lossy().into_owned();
    pip(python, &["--target", &target, "--upgrade", &format!("transformers=={version}")])?;
    std::fs::write(&stamp, version)?;
    Ok(dir)
}

/// The architecture a converted folder's `config.json` describes.
fn arch_of(folder: &Path) -> Result<Box<dyn Architecture>> {
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(folder.join("config.json"))?)?;
    arch::from_hf_config(&config).map_err(|e| anyhow!("{}: {e}", folder.display()))
}

/// A case for check.py: the folder, the class it loads as and where its head outputs are found.
fn case_json(name: &str, folder: &Path, golden_dir: &Path) -> Result<serde_json::Value> {
    let model = arch_of(folder)?;
    Ok(json!({
        "name": name,
        "folder": folder,
        "class": model.class_name(),
        "passes": model.hf_passes(),
        "support": model.hf_support(),
        "probes": golden_dir.join("probes.json"),
        "expected": golden_dir.join("expected.safetensors"),
        // The same tolerance as `tfconv verify` for float32 output.
        "atol": 1e-5,
        "rtol": 1e-4,
    }))
}

/// Transposes one square weight in a converted safetensors folder: a silent conversion bug
/// that the suite must catch.
fn break_one_tensor(folder: &Path, name: &str) -> Result<()> {
    rewrite_one_tensor(folder, name, |data, shape| {
        let [rows, cols] = shape else { bail!("{name} is not a matrix") };
        Ok(tfconv::convert::transpose(data, *rows, *cols, 4))
    })
}

/// Replaces one float32 tensor of a converted safetensors folder by `change(bytes, shape)`.
fn rewrite_one_tensor(folder: &Path, name: &str, change: impl Fn(&[u8], &[usize]) -> Result<Vec<u8>>) -> Result<()> {
    let path = folder.join("model.safetensors");
    let bytes = std::fs::read(&path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    for (n, view) in st.tensors() {
        let mut data = view.data().to_vec();
        if n == name {
            data = change(&data, view.shape())?;
        }
        tensors.push((n, data, view.shape().to_vec()));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s)| Ok((n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)?)))
        .collect::<Result<_>>()?;
    let meta = [("format".to_string(), "pt".to_string())].into();
    safetensors::serialize_to_file(views, Some(meta), &path)?;
    Ok(())
}

/// Adds the tied aliases argv[2] (JSON [[alias, tied-to], ...]) to the state dict at argv[1], as
/// HF's converter saves them.
const HF_ALIASES: &str = "import json, sys, torch
p = sys.argv[1]
sd = torch.load(p, weights_only=True)
for alias, target in json.loads(sys.argv[2]):
    sd[alias] = sd[target]
torch.save(sd, p)
";

pub fn run_suite(root: &Path) -> Result<()> {
    let tfconv = root.join("target").join("debug").join("tfconv");
    run(Command::new("cargo").args(["build", "--quiet", "--package", "tfconv", "--bin", "tfconv"]).current_dir(root))?;
    let work = root.join("target").join("interop");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    let mut cases = Vec::new();
    // TFCONV_INTEROP_CASES=transfo-xl,transfo-xl-lm1b: only these golden cases (and the checks
    // built on them); every case by default.
    let only: Option<Vec<String>> = std::env::var("TFCONV_INTEROP_CASES").ok().map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let wanted = |dir: &str| only.as_ref().is_none_or(|o| o.iter().any(|c| c == dir));
    let golden_cases: Vec<_> = arch::golden_cases().into_iter().filter(|c| wanted(c.dir)).collect();
    for case in &golden_cases {
        let (name, golden_dir) = (case.dir, root.join("golden").join(case.dir));
        let forms: [(&str, PathBuf, &[&str]); 3] = [
            ("safetensors", work.join(format!("{name}-safetensors")), &[]),
            ("sharded", work.join(format!("{name}-sharded")), &["--max-shard-size", "60kB"]),
            ("bin", work.join(format!("{name}-bin")).join("pytorch_model.bin"), &[]),
        ];
        for (form, output, extra) in forms {
            let status = Command::new(&tfconv)
                .arg("convert")
                .arg("--tf-checkpoint").arg(golden_dir.join(case.checkpoint))
                .arg("--output").arg(&output)
                .args(extra)
                .status()?;
            if !status.success() {
                bail!("converting {name} as {form} failed");
            }
            let folder = if form == "bin" { output.parent().unwrap().to_path_buf() } else { output };
            cases.push(case_json(&format!("{name}/{form}"), &folder, &golden_dir)?);
        }
    }
    if wanted("bert") && wanted("openai-gpt") && wanted("albert-shared") {
        bespoke_cases(&tfconv, root, &work, &mut cases)?;
    }
    // What `transformers convert` writes: the full state dict, tied aliases saved as the same
    // tensors. `tfconv verify` accepts it, so transformers must load it cleanly too.
    let python = torch_environment()?;
    for case in &golden_cases {
        let converted = work.join(format!("{}-bin", case.dir));
        let aliases = arch_of(&converted)?.tied_aliases();
        if aliases.is_empty() {
            continue;
        }
        let hf_style = work.join(format!("{}-hf-state-dict", case.dir));
        copy_dir(&converted, &hf_style)?;
        run(Command::new(&python).arg("-c").arg(HF_ALIASES).arg(hf_style.join("pytorch_model.bin")).arg(serde_json::to_string(&aliases)?))?;
        cases.push(case_json(&format!("{}/hf-state-dict", case.dir), &hf_style, &root.join("golden").join(case.dir))?);
    }
    let cases_file = work.join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec_pretty(&cases)?)?;

    let script = root.join("tests").join("interop").join("check.py");
    let mut failed = Vec::new();
    for version in TRANSFORMERS {
        let dir = transformers_dir(&python, version)?;
        let status = Command::new(&python).arg(&script).arg(&cases_file).env("PYTHONPATH", &dir).status()?;
        if !status.success() {
            failed.push(*version);
        }
    }
    if !failed.is_empty() {
        bail!("interop failed with transformers {}", failed.join(", "));
    }
    Ok(())
}

/// The suite's own cases beyond the golden conversions: BERT converted beside its checkpoint,
/// OpenAI GPT's double-heads class, and the conversions it must catch as wrong.
fn bespoke_cases(tfconv: &Path, root: &Path, work: &Path, cases: &mut Vec<serde_json::Value>) -> Result<()> {
    // The command transformers documents: pytorch_model.bin written into the checkpoint's own
    // folder, beside the original files, which must load as a folder of its own.
    let golden_bert = root.join("golden").join("bert");
    let beside = work.join("bert-beside-checkpoint");
    copy_dir(&golden_bert, &beside)?;
    let status = Command::new(&tfconv)
        .arg("convert")
        .args(["--model_type", "bert"])
        .arg("--tf_checkpoint").arg(beside.join("bert_model.ckpt"))
        .arg("--config").arg(beside.join("bert_config.json"))
        .arg("--pytorch_dump_output").arg(beside.join("pytorch_model.bin"))
        .status()?;
    if !status.success() {
        bail!("converting bert beside its checkpoint failed");
    }
    cases.push(case_json("bert/beside-checkpoint", &beside, &golden_bert)?);
    // OpenAI GPT's double-heads class, which --finetuning_task_name asks for: its multiple-choice
    // head is not in the release and is written as zeros, so transformers must load it without
    // initializing anything, and compute the LM outputs TensorFlow computed.
    let golden_gpt = root.join("golden").join("openai-gpt");
    let double = work.join("openai-gpt-double-heads");
    let status = Command::new(&tfconv)
        .arg("convert")
        .arg("--tf-checkpoint").arg(&golden_gpt)
        .args(["--finetuning_task_name", "rocstories"])
        .arg("--output").arg(&double)
        .status()?;
    if !status.success() {
        bail!("converting openai-gpt as OpenAIGPTDoubleHeadsModel failed");
    }
    let mut case = case_json("openai-gpt/double-heads", &double, &golden_gpt)?;
    // The golden outputs are the LM model's: mc_logits (zeros by construction) is not among them.
    case["passes"][0]["fields"] = json!([["lm_logits", "logits"]]);
    cases.push(case);
    // The suite must fail on a silently wrong conversion: one square kernel left transposed. It
    // loads cleanly, so it must fail on the numbers, first at the layer it belongs to.
    let broken = work.join("bert-broken");
    copy_dir(&work.join("bert-safetensors"), &broken)?;
    break_one_tensor(&broken, "bert.encoder.layer.1.attention.self.query.weight")?;
    // A folder whose config cannot be read back is still described as BERT's golden model.
    let bert_fields = case_json("bert", &work.join("bert-safetensors"), &golden_bert)?;
    let must_fail = |name: &str, folder: &Path, why: &str| {
        let mut case = bert_fields.clone();
        case["name"] = json!(name);
        case["folder"] = json!(folder);
        case["expect_failure"] = json!(why);
        case
    };
    let mut case = must_fail("bert/transposed-query (must fail)", &broken, "numeric");
    case["expect_divergence_at"] = json!("layer.1");
    cases.push(case);
    // ALBERT with E == H: what HF's own converter leaves behind, the projection at its random
    // initialisation instead of the identity. It loads cleanly and must fail at the embeddings.
    let random_projection = work.join("albert-shared-random-projection");
    copy_dir(&work.join("albert-shared-safetensors"), &random_projection)?;
    rewrite_one_tensor(&random_projection, "albert.encoder.embedding_hidden_mapping_in.weight", |data, _| {
        let mut rng = tfconv::synthetic::Rng::new(3);
        Ok((0..data.len() / 4).flat_map(|_| (rng.uniform(0.02 * 3f32.sqrt())).to_le_bytes()).collect())
    })?;
    let mut case = case_json("albert-shared/random-projection (must fail)", &random_projection, &root.join("golden").join("albert-shared"))?;
    case["expect_failure"] = json!("numeric");
    case["expect_divergence_at"] = json!("embeddings");
    cases.push(case);
    // And the harness must read transformers' log: a config.json with one layer fewer or more
    // than the weights leaves weights unused or newly initialized, which only the log reports.
    for layers in [2, 4] {
        let folder = work.join(format!("bert-config-{layers}-layers"));
        copy_dir(&work.join("bert-safetensors"), &folder)?;
        let path = folder.join("config.json");
        let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        config["num_hidden_layers"] = json!(layers);
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        cases.push(must_fail(&format!("bert/config-{layers}-layers (must fail)"), &folder, "load"));
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}
