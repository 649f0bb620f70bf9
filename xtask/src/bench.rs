//! `cargo xtask bench`: converting a BERT-base-sized checkpoint (110M parameters, 440 MB,
//! written by TensorFlow), timed against a durable copy of the same bytes in the same run, with peak RSS
//! against the largest tensor; then `convert --verify` on BERT-base, on BERT-large (24 layers,
//! hidden 1024, 340M parameters, 1.3 GB) and on a 12-layer model of BERT-large's width, whose
//! peak RSS shows whether verify's memory grows with depth.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tfconv_models::bert::{BertConfig, Head};

/// A google-research/bert config of the given depth and width (BERT-base: 12 × 768).
fn bert_config(layers: usize, hidden: usize) -> serde_json::Value {
    serde_json::json!({
        "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": 4 * hidden,
        "max_position_embeddings": 512, "num_attention_heads": hidden / 64, "num_hidden_layers": layers,
        "type_vocab_size": 2, "vocab_size": 30522
    })
}

/// The checkpoint prefix of a synthetic BERT written by TensorFlow under `dir/name`, written once.
fn synthetic_bert(dir: &Path, name: &str, layers: usize, hidden: usize) -> Result<std::path::PathBuf> {
    let ckpt_dir = dir.join(name);
    let prefix = ckpt_dir.join("bert_model.ckpt");
    let config = bert_config(layers, hidden);
    if !prefix.with_extension("ckpt.index").is_file() {
        std::fs::create_dir_all(&ckpt_dir)?;
        let cfg: BertConfig = serde_json::from_value(config.clone())?;
        tfconv::synthetic::write_checkpoint(&prefix, &tfconv_models::bert::synthetic::checkpoint(&cfg, Head::PreTraining, 11, false))?;
        std::fs::write(ckpt_dir.join("bert_config.json"), config.to_string())?;
    }
    Ok(prefix)
}

/// Runs a command under `/usr/bin/time`, returning (seconds, peak RSS in MB).
fn measure(cmd: &mut Command) -> Result<(f64, f64)> {
    let rss_file = tempfile_path("rss");
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%M").arg("-o").arg(&rss_file).arg(cmd.get_program()).args(cmd.get_args());
    let start = Instant::now();
    let status = timed.status().context("running /usr/bin/time")?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    let kb: f64 = std::fs::read_to_string(&rss_file)?.trim().lines().last().unwrap_or("0").parse()?;
    Ok((secs, kb / 1024.0))
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("tfconv-bench-{}-{name}", std::process::id()))
}

pub fn run(root: &Path) -> Result<()> {
    tfconv::tf_runtime::install()?;
    run_cmd(Command::new("cargo").args(["build", "--release", "--quiet", "--package", "tfconv", "--bin", "tfconv"]).current_dir(root))?;
    let tfconv = root.join("target").join("release").join("tfconv");
    let dir = root.join("target").join("bench");
    let prefix = synthetic_bert(&dir, "bert-base", 12, 768)?;
    let ckpt_dir = prefix.parent().context("prefix has a folder")?.to_path_buf();
    let data = ckpt_dir.join("bert_model.ckpt.data-00000-of-00001");
    let bytes = std::fs::metadata(&data)?.len() as f64;
    // Warm the page cache so both runs read from memory.
    std::fs::read(&data)?;

    // Baseline: a durable copy of the same bytes (tfconv also syncs its output before the rename).
    let copy = dir.join("copy.bin");
    let start = Instant::now();
    std::fs::copy(&data, &copy)?;
    std::fs::File::open(&copy)?.sync_all()?;
    let cp_secs = start.elapsed().as_secs_f64();
    std::fs::remove_file(&copy)?;
    let out = dir.join("out");
    let convert = |extra: &[&str]| -> Result<(f64, f64)> {
        measure(
            Command::new(&tfconv)
                .arg("convert").arg("--tf-checkpoint").arg(&prefix).arg("--output").arg(&out).arg("--force")
                .args(extra),
        )
    };
    let (conv_secs, conv_rss) = convert(&[])?;
    let largest = 30522.0 * 768.0 * 4.0 / 1e6;
    println!("BERT-base checkpoint: {:.0} MB of weights, largest tensor {largest:.0} MB", bytes / 1e6);
    println!("copy + fsync of the data {cp_secs:>7.2} s");
    println!("tfconv convert           {conv_secs:>7.2} s   peak RSS {conv_rss:>6.0} MiB   time ratio to the copy {:.2}", conv_secs / cp_secs);

    // Verify: wall time and peak RSS by depth and width, probes 3 × 128.
    let mut peaks = Vec::new();
    for (name, layers, hidden) in [("bert-base", 12, 768), ("bert-large-12-layers", 12, 1024), ("bert-large", 24, 1024)] {
        let prefix = synthetic_bert(&dir, name, layers, hidden)?;
        let bytes = std::fs::metadata(prefix.with_extension("ckpt.data-00000-of-00001"))?.len() as f64;
        let out = dir.join(format!("{name}-out"));
        // Twice: the faster wall time (the first run may still be paying for cold caches or the
        // previous step's write-back), the larger peak RSS.
        let mut runs = Vec::new();
        for _ in 0..2 {
            runs.push(measure(
                Command::new(&tfconv)
                    .arg("convert").arg("--tf-checkpoint").arg(&prefix).arg("--output").arg(&out).arg("--force")
                    .args(["--verify", "--seq-len", "128"]),
            )?);
        }
        let secs = runs.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
        let rss = runs.iter().map(|r| r.1).fold(0.0, f64::max);
        std::fs::remove_dir_all(&out)?;
        println!("convert --verify {name:<22} {layers:>2} × {hidden:<4} {:>6.0} MB   {secs:>7.2} s   peak RSS {rss:>6.0} MiB", bytes / 1e6);
        peaks.push(rss);
    }
    println!("verify peak RSS, 24 layers ÷ 12 layers of the same width: {:.2}", peaks[2] / peaks[1]);
    Ok(())
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status()?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
