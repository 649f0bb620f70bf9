//! `cargo xtask bench [convert|bert|albert|xlnet|t5|xlm]`: converting a checkpoint written by
//! TensorFlow, timed against `cp` + `sync` of the same bytes in the same run (medians of
//! alternating runs, `TFCONV_BENCH_RUNS`, default 5), with peak RSS against the largest tensor.
//! convert: BERT-base (440 MB) and a 24 × 1600 BERT (3.2 GB), the I/O floor and memory bound of
//! issue 15 (time within 1.3× of the copy, peak RSS within 2 × largest tensor + 64 MiB). BERT: (110M parameters, 440 MB), then `convert --verify` on BERT-base, on
//! BERT-large (24 layers, hidden 1024, 340M parameters, 1.3 GB) and on a 12-layer model of
//! BERT-large's width, whose peak RSS shows whether verify's memory grows with depth. ALBERT:
//! an xxlarge-width model (E 128, H 4096, I 16384) with two groups, 1.7 GB, converted, then
//! verified on short probes (verify's memory follows its largest stage, one group). XLM: a legacy
//! `.pth` of mlm_xnli15_1024's shape (12 × 1024, 15 languages, 100k words, 1 GB) written by the
//! test helper's `torch.save` writer (TensorFlow cannot write one), converted and verified.
//!
//! `TFCONV_BENCH_DEBUG=1` measures the debug build instead of building a release one, for
//! machines where a release build is not wanted (the numbers are then pessimistic);
//! `TFCONV_BENCH_DIR` writes the checkpoints and outputs there instead of `target/bench`.

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

/// Timed runs of each command, alternating, in one benchmark run (`TFCONV_BENCH_RUNS`).
fn runs() -> usize {
    std::env::var("TFCONV_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(5)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() % 2 {
        1 => v[v.len() / 2],
        _ => (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0,
    }
}

fn spread(values: &[f64]) -> String {
    let (lo, hi) = values.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    format!("{lo:.2}–{hi:.2}")
}

/// Converts the checkpoint at `prefix` (data files `data`) against the baseline of `cp` of the
/// same files followed by `sync` of the copies (tfconv fsyncs its output before the rename, so
/// the copy is made as durable), alternating, [`runs`] times each with a warm cache. Prints both
/// medians with their spread, the ratio of the medians, and tfconv's peak RSS against the bound
/// of the issue: twice the largest tensor plus 64 MiB.
fn convert_against_copy(tfconv: &Path, dir: &Path, label: &str, prefix: &Path, data: &[std::path::PathBuf], largest_bytes: f64) -> Result<()> {
    let bytes: u64 = data.iter().map(|p| std::fs::metadata(p).map(|m| m.len())).sum::<std::io::Result<u64>>()?;
    for file in data {
        // Warm the page cache so both commands read from memory.
        std::io::copy(&mut std::fs::File::open(file)?, &mut std::io::sink())?;
    }
    let copy_dir = dir.join("copy");
    let out = dir.join("out");
    let mut copy_cmd = Command::new("sh");
    copy_cmd.arg("-c").arg(r#"d="$1"; shift; cp -- "$@" "$d"/ && sync -- "$d"/*"#).arg("sh").arg(&copy_dir).args(data);
    let (mut cp, mut conv, mut cp_rss, mut conv_rss) = (Vec::new(), Vec::new(), 0.0f64, 0.0f64);
    for _ in 0..runs() {
        std::fs::create_dir_all(&copy_dir)?;
        let (secs, rss) = measure(&mut copy_cmd)?;
        std::fs::remove_dir_all(&copy_dir)?;
        cp.push(secs);
        cp_rss = cp_rss.max(rss);
        let (secs, rss) = measure(Command::new(tfconv).arg("convert").arg("--tf-checkpoint").arg(prefix).arg("--output").arg(&out).arg("--force"))?;
        std::fs::remove_dir_all(&out)?;
        conv.push(secs);
        conv_rss = conv_rss.max(rss);
    }
    let ratio = median(&conv) / median(&cp);
    let bound = 2.0 * largest_bytes / (1 << 20) as f64 + 64.0;
    let verdict = |ok: bool| if ok { "within" } else { "OVER" };
    println!(
        "{label}: {:.0} MB of weights in {} data file(s), largest tensor {:.0} MB; {} runs each, alternating, on {}",
        bytes as f64 / 1e6,
        data.len(),
        largest_bytes / 1e6,
        cp.len(),
        dir.display()
    );
    println!("  cp + sync of the data files   median {:>6.2} s  (runs {})   peak RSS {cp_rss:>5.0} MiB", median(&cp), spread(&cp));
    println!("  tfconv convert                median {:>6.2} s  (runs {})   peak RSS {conv_rss:>5.0} MiB", median(&conv), spread(&conv));
    let per_run: Vec<String> = conv.iter().zip(&cp).map(|(c, p)| format!("{:.2}", c / p)).collect();
    println!("  tfconv/cp wall, ratio of the medians {ratio:.2} ({} the 1.3 bound); per run {}", verdict(ratio <= 1.3), per_run.join(" "));
    println!(
        "  peak RSS {conv_rss:.0} MiB, bound 2 × largest tensor + 64 MiB = {bound:.0} MiB ({})",
        verdict(conv_rss <= bound)
    );
    Ok(())
}

/// BERT-base, then a BERT of 24 layers at width 1600 (3.2 GB in six data files, largest tensor
/// the 195 MB word embeddings), each converted against its copy baseline: the I/O bench.
fn convert_sizes(tfconv: &Path, dir: &Path) -> Result<()> {
    let prefix = synthetic_bert(dir, "bert-base", 12, 768)?;
    let data = vec![prefix.with_extension("ckpt.data-00000-of-00001")];
    convert_against_copy(tfconv, dir, "BERT-base", &prefix, &data, 30522.0 * 768.0 * 4.0)?;

    let (layers, hidden) = (24, 1600);
    let ckpt_dir = dir.join("bert-3gb");
    let prefix = ckpt_dir.join("bert_model.ckpt");
    if !ckpt_dir.join("bert_model.ckpt.index").is_file() {
        std::fs::create_dir_all(&ckpt_dir)?;
        let config = serde_json::json!({
            "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "hidden_size": hidden, "initializer_range": 0.02, "intermediate_size": 4 * hidden,
            "max_position_embeddings": 512, "num_attention_heads": 25, "num_hidden_layers": layers,
            "type_vocab_size": 2, "vocab_size": 30522
        });
        let cfg: BertConfig = serde_json::from_value(config.clone())?;
        // Written as six data files of about 550 MB (SaveV2 per group, then MergeV2), as a
        // large TF checkpoint is, and so that the writer never holds two copies of 3 GB.
        let mut groups: Vec<Vec<tfconv::synthetic::Variable>> = vec![Vec::new()];
        let mut in_group = 0usize;
        for v in tfconv_models::bert::synthetic::checkpoint(&cfg, Head::PreTraining, 11, false) {
            let size = v.shape.iter().product::<usize>() * 4;
            if in_group + size > 550_000_000 && !groups.last().is_some_and(Vec::is_empty) {
                groups.push(Vec::new());
                in_group = 0;
            }
            in_group += size;
            groups.last_mut().expect("one group at least").push(v);
        }
        tfconv::synthetic::write_sharded_checkpoint(&prefix, &groups)?;
        std::fs::write(ckpt_dir.join("bert_config.json"), config.to_string())?;
    }
    let mut data: Vec<std::path::PathBuf> = std::fs::read_dir(&ckpt_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".data-")))
        .collect();
    data.sort();
    convert_against_copy(tfconv, dir, "BERT 24 × 1600 (3 GB)", &prefix, &data, 30522.0 * hidden as f64 * 4.0)
}

pub fn run(root: &Path, which: Option<&str>) -> Result<()> {
    tfconv::tf_runtime::install()?;
    let debug = std::env::var("TFCONV_BENCH_DEBUG").is_ok_and(|v| v == "1");
    let profile = if debug { &[][..] } else { &["--release"][..] };
    run_cmd(Command::new("cargo").arg("build").args(profile).args(["--quiet", "--package", "tfconv", "--bin", "tfconv"]).current_dir(root))?;
    let tfconv = root.join("target").join(if debug { "debug" } else { "release" }).join("tfconv");
    // TFCONV_BENCH_DIR puts the checkpoints elsewhere (a tmpfs when the disk is short of space).
    let dir = std::env::var_os("TFCONV_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| root.join("target").join("bench"));
    match which {
        None => {
            convert_sizes(&tfconv, &dir)?;
            bert(&tfconv, &dir)?;
            albert(&tfconv, &dir)?;
            xlnet(&tfconv, &dir)?;
            t5(&tfconv, &dir)
        }
        Some("convert") => convert_sizes(&tfconv, &dir),
        Some("bert") => bert(&tfconv, &dir),
        Some("albert") => albert(&tfconv, &dir),
        Some("xlnet") => xlnet(&tfconv, &dir),
        Some("t5") => t5(&tfconv, &dir),
        Some("xlm") => xlm(&tfconv, &dir),
        Some("transfo-xl") => transfo_xl(&tfconv, &dir),
        Some(other) => bail!("unknown benchmark {other} (convert, bert, albert, xlnet, t5, xlm, transfo-xl)"),
    }
}

/// XLM at mlm_xnli15_1024's shape with a 100k-word dictionary, so the file passes 1 GB, in the
/// legacy container of the released files.
fn xlm(tfconv: &Path, dir: &Path) -> Result<()> {
    use tfconv_models::xlm::{synthetic, XlmConfig};
    let ckpt_dir = dir.join("xlm-xnli15-1024");
    let pth = ckpt_dir.join("mlm_xnli15_1024.pth");
    let cfg = XlmConfig {
        n_words: 100_000, emb_dim: 1024, n_layers: 12, n_heads: 8, n_langs: 15, use_lang_emb: true, gelu_activation: true,
        sinusoidal_embeddings: false, share_inout_emb: true, max_positions: 512, pad_index: 2,
    };
    if !pth.is_file() {
        std::fs::create_dir_all(&ckpt_dir)?;
        let langs = vec!["ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh"];
        std::fs::write(&pth, synthetic::pth_bytes(&cfg, &synthetic::Layout::release(langs), 15, false))?;
    }
    convert_against_copy(tfconv, dir, "XLM, mlm_xnli15_1024's shape (legacy .pth)", &pth, &[pth.clone()], cfg.n_words as f64 * 1024.0 * 4.0)?;
    let out = dir.join("xlm-out");
    let (secs, rss) = measure(
        Command::new(tfconv)
            .arg("convert").arg("--tf-checkpoint").arg(&pth).arg("--output").arg(&out).arg("--force")
            .args(["--verify", "--seq-len", "16"]),
    )?;
    std::fs::remove_dir_all(&out)?;
    println!("convert --verify (probes 3 × 16)   {secs:>7.2} s   peak RSS {rss:>6.0} MiB");
    Ok(())
}

/// Transformer-XL at wt103's shape (18 × 1024, d_inner 4096, 267,735 tokens in four clusters,
/// div_val 4: 1.13 GB), as training saves it without optimizer slots.
fn transfo_xl(tfconv: &Path, dir: &Path) -> Result<()> {
    use tfconv_models::transfo_xl::{synthetic, TxlConfig};
    let cfg = TxlConfig {
        vocab_size: 267_735, d_model: 1024, d_embed: 1024, n_head: 16, d_head: 64, d_inner: 4096, n_layer: 18, div_val: 4,
        cutoffs: vec![20_000, 40_000, 200_000], untie_r: true, proj_share_all_but_first: true, mem_len: 1600, clamp_len: 1000,
    };
    let ckpt_dir = dir.join("transfo-xl-wt103");
    let prefix = ckpt_dir.join("model.ckpt-0");
    if !ckpt_dir.join("model.ckpt-0.index").is_file() {
        std::fs::create_dir_all(&ckpt_dir)?;
        let spec = synthetic::Spec { cfg: cfg.clone(), proj_same_dim: true, trainer_state: false };
        tfconv::synthetic::write_checkpoint(&prefix, &synthetic::checkpoint(&spec, 14))?;
        std::fs::write(ckpt_dir.join("corpus-info.json"), synthetic::corpus_info(&cfg, "wt103").to_string())?;
    }
    let data = ckpt_dir.join("model.ckpt-0.data-00000-of-00001");
    convert_against_copy(tfconv, dir, "Transformer-XL, wt103's shape", &prefix, &[data], 20_000.0 * 1024.0 * 4.0)?;
    let out = dir.join("transfo-xl-out");
    let (secs, rss) = measure(
        Command::new(tfconv)
            .arg("convert").arg("--tf-checkpoint").arg(&prefix).arg("--output").arg(&out).arg("--force")
            .args(["--verify", "--seq-len", "16", "--set", "mem_len=32"]),
    )?;
    std::fs::remove_dir_all(&out)?;
    println!("convert --verify (2 segments of 3 × 16, mem_len 32)   {secs:>7.2} s   peak RSS {rss:>6.0} MiB");
    Ok(())
}

/// ALBERT-xxlarge's widths with two groups, so the checkpoint passes 1 GB.
fn albert(tfconv: &Path, dir: &Path) -> Result<()> {
    use tfconv_models::albert::{synthetic, AlbertConfig, Head};
    let config = serde_json::json!({
        "attention_probs_dropout_prob": 0.0, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "embedding_size": 128, "hidden_size": 4096, "initializer_range": 0.01, "intermediate_size": 16384,
        "max_position_embeddings": 512, "num_attention_heads": 64, "num_hidden_layers": 12,
        "num_hidden_groups": 2, "inner_group_num": 1, "type_vocab_size": 2, "vocab_size": 30000
    });
    let ckpt_dir = dir.join("albert-xxlarge-2-groups");
    let prefix = ckpt_dir.join("model.ckpt-best");
    if !ckpt_dir.join("model.ckpt-best.index").is_file() {
        std::fs::create_dir_all(&ckpt_dir)?;
        let cfg: AlbertConfig = serde_json::from_value(config.clone())?;
        let vars = synthetic::checkpoint(&cfg, Head::PreTraining, synthetic::Spelling::default(), 12, false);
        tfconv::synthetic::write_checkpoint(&prefix, &vars)?;
        std::fs::write(ckpt_dir.join("albert_config.json"), config.to_string())?;
    }
    let data = ckpt_dir.join("model.ckpt-best.data-00000-of-00001");
    convert_against_copy(tfconv, dir, "ALBERT-xxlarge width, 2 groups", &prefix, &[data], 4096.0 * 16384.0 * 4.0)?;
    let out = dir.join("albert-out");
    let (secs, rss) = measure(
        Command::new(tfconv)
            .arg("convert").arg("--tf-checkpoint").arg(&prefix).arg("--output").arg(&out).arg("--force")
            .args(["--verify", "--seq-len", "16"]),
    )?;
    std::fs::remove_dir_all(&out)?;
    println!("convert --verify (probes 3 × 16)   {secs:>7.2} s   peak RSS {rss:>6.0} MiB");
    Ok(())
}

/// XLNet-large (24 × 1024, 16 heads, d_inner 4096, 1.4 GB) as pretraining saves it.
fn xlnet(tfconv: &Path, dir: &Path) -> Result<()> {
    use tfconv_models::xlnet::{synthetic, XlnetConfig};
    let cfg = XlnetConfig { n_token: 32000, d_model: 1024, n_layer: 24, n_head: 16, d_head: 64, d_inner: 4096, ff_activation: "gelu".into(), untie_r: true };
    let ckpt_dir = dir.join("xlnet-large");
    let prefix = ckpt_dir.join("xlnet_model.ckpt");
    if !ckpt_dir.join("xlnet_model.ckpt.index").is_file() {
        std::fs::create_dir_all(&ckpt_dir)?;
        let contents = synthetic::Contents { trainer_state: false, ..synthetic::Contents::pretraining() };
        tfconv::synthetic::write_checkpoint(&prefix, &synthetic::checkpoint(&cfg, &contents, 13))?;
        std::fs::write(ckpt_dir.join("xlnet_config.json"), synthetic::config_json(&cfg).to_string())?;
    }
    let data = ckpt_dir.join("xlnet_model.ckpt.data-00000-of-00001");
    convert_against_copy(tfconv, dir, "XLNet-large", &prefix, &[data], 32000.0 * 1024.0 * 4.0)?;
    let out = dir.join("xlnet-out");
    let (secs, rss) = measure(
        Command::new(tfconv)
            .arg("convert").arg("--tf-checkpoint").arg(&prefix).arg("--output").arg(&out).arg("--force")
            .args(["--verify", "--seq-len", "32"]),
    )?;
    std::fs::remove_dir_all(&out)?;
    println!("convert --verify (probes 3 × 32, both streams)   {secs:>7.2} s   peak RSS {rss:>6.0} MiB");
    Ok(())
}

/// A T5 v1.1 of XL width (d_model 2048, d_ff 5120, 32 heads) with 16 + 16 blocks: 3.9 GB of
/// bfloat16 over several data shards, as Mesh TensorFlow saves it. Written a few blocks at a
/// time (one SaveV2 per shard, then MergeV2) so the writer's memory stays small.
fn t5(tfconv: &Path, dir: &Path) -> Result<()> {
    use tfconv_models::t5::{synthetic, Names, T5Config};
    let cfg = T5Config {
        d_model: 2048, d_kv: 64, d_ff: 5120, num_layers: 16, num_decoder_layers: Some(16), num_heads: 32,
        relative_attention_num_buckets: 32, relative_attention_max_distance: 128, layer_norm_epsilon: 1e-6,
        feed_forward_proj: "gated-gelu".into(), tie_word_embeddings: false, vocab_size: 32128,
    };
    let names = Names { rms_norm: true, named_sublayers: false };
    let ckpt_dir = dir.join("t5-xl-width");
    let prefix = ckpt_dir.join("model.ckpt-1000000");
    if !ckpt_dir.join("model.ckpt-1000000.index").is_file() {
        std::fs::create_dir_all(&ckpt_dir)?;
        let mut rng = tfconv::synthetic::Rng::new(17);
        let (mut group, mut bytes, mut parts) = (Vec::new(), 0usize, Vec::new());
        let vars = synthetic::t5_variables(&cfg, &names);
        let count = vars.len();
        for (i, (name, shape)) in vars.into_iter().enumerate() {
            bytes += shape.iter().product::<usize>() * 2;
            group.extend(synthetic::variable(&mut rng, &cfg, name, shape, true, false));
            if bytes > 600_000_000 || i + 1 == count {
                let part = ckpt_dir.join(format!(".part-{}", parts.len()));
                tfconv::synthetic::write_checkpoint(&part, &std::mem::take(&mut group))?;
                parts.push(part.to_string_lossy().into_owned());
                bytes = 0;
            }
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        tfconv::tf_io::merge_v2(&refs, prefix.to_str().context("UTF-8 path")?)?;
        std::fs::write(ckpt_dir.join("operative_config.gin"), synthetic::operative_config(&cfg, &names))?;
    }
    let shards: Vec<std::path::PathBuf> = std::fs::read_dir(&ckpt_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".data-")))
        .collect();
    let total: u64 = shards.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    for shard in &shards {
        std::fs::read(shard)?;
    }
    let copy = dir.join("copy.bin");
    let start = Instant::now();
    for shard in &shards {
        std::fs::copy(shard, &copy)?;
        std::fs::File::open(&copy)?.sync_all()?;
    }
    let cp_secs = start.elapsed().as_secs_f64();
    std::fs::remove_file(&copy)?;
    let largest = 32128.0 * 2048.0 * 2.0 / 1e6;
    let out = dir.join("t5-out");
    for (dtype, factor) in [("bfloat16", 1.0), ("float32", 2.0)] {
        let (secs, rss) = measure(
            Command::new(tfconv).arg("convert").arg("--tf-checkpoint").arg(&prefix).arg("--output").arg(&out).arg("--force").args(["--dtype", dtype]),
        )?;
        std::fs::remove_dir_all(&out)?;
        let bound = 1.5 * largest * factor + 100.0;
        println!(
            "T5 {:.0} MB bf16 in {} shards, largest tensor {largest:.0} MB stored ({:.0} MB as {dtype}): copy + fsync {cp_secs:.2} s; \
             convert --dtype {dtype} {secs:.2} s (ratio {:.2}), peak RSS {rss:.0} MiB (bound 1.5 × largest output tensor + 100 MB = {bound:.0} MB)",
            total as f64 / 1e6,
            shards.len(),
            largest * factor,
            secs / cp_secs
        );
    }
    let (secs, rss) = measure(
        Command::new(tfconv)
            .arg("convert").arg("--tf-checkpoint").arg(&prefix).arg("--output").arg(&out).arg("--force")
            .args(["--verify", "--seq-len", "16"]),
    )?;
    std::fs::remove_dir_all(&out)?;
    println!("convert --verify (encoder probes 3 × 16)   {secs:>7.2} s   peak RSS {rss:>6.0} MiB");
    Ok(())
}

fn bert(tfconv: &Path, dir: &Path) -> Result<()> {
    // Verify: wall time and peak RSS by depth and width, probes 3 × 128.
    let mut peaks = Vec::new();
    for (name, layers, hidden) in [("bert-base", 12, 768), ("bert-large-12-layers", 12, 1024), ("bert-large", 24, 1024)] {
        let prefix = synthetic_bert(dir, name, layers, hidden)?;
        let bytes = std::fs::metadata(prefix.with_extension("ckpt.data-00000-of-00001"))?.len() as f64;
        let out = dir.join(format!("{name}-out"));
        // Twice: the faster wall time (the first run may still be paying for cold caches or the
        // previous step's write-back), the larger peak RSS.
        let mut runs = Vec::new();
        for _ in 0..2 {
            runs.push(measure(
                Command::new(tfconv)
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
