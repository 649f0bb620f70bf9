//! The command-line contract, as a table: each case is a command a user might type, the exit
//! code the README documents for it, and a fragment of the message that must name the cause.
//! Then random flag combinations, which must never panic nor write outside the output.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use proptest::prelude::*;

struct Case {
    what: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    code: i32,
    says: String,
}

fn case(what: &'static str, args: &[&str], code: i32, says: &str) -> Case {
    Case { what, args: args.iter().map(|s| s.to_string()).collect(), env: vec![], code, says: says.into() }
}

fn run(c: &Case, cwd: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tfconv"));
    cmd.current_dir(cwd).args(&c.args);
    for (k, v) in &c.env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn every_documented_exit_code_with_a_message_naming_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().canonicalize().unwrap();
    let ckpt = golden("bert/bert_model.ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let a_file = t.join("a-file");
    std::fs::write(&a_file, b"not a folder").unwrap();
    let under_file = a_file.join("out");
    let under_file = under_file.to_str().unwrap();
    let out = t.join("out");
    let out = out.to_str().unwrap();
    // A folder whose config.json claims another model type.
    let llama_folder = t.join("llama-folder");
    std::fs::create_dir(&llama_folder).unwrap();
    std::fs::write(llama_folder.join("config.json"), br#"{"model_type": "llama"}"#).unwrap();
    // A BERT checkpoint without vocab.txt.
    let no_vocab = t.join("no-vocab");
    let no_vocab_ckpt = copy_golden("bert", &no_vocab);
    std::fs::remove_file(no_vocab.join("vocab.txt")).unwrap();
    let bad_act = t.join("bad-act");
    let bad_act_ckpt = copy_golden("bert", &bad_act);
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(bad_act.join("bert_config.json")).unwrap()).unwrap();
    config["hidden_act"] = "foo".into();
    std::fs::write(bad_act.join("bert_config.json"), config.to_string()).unwrap();
    // Special files and a dangling link where a checkpoint is expected.
    let fifo = t.join("a-fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let dangling = t.join("dangling");
    std::os::unix::fs::symlink(t.join("nowhere"), &dangling).unwrap();
    // A converted folder, and a "TensorFlow" directory holding some other library.
    let folder = t.join("converted");
    let o = tfconv(&["convert", "--tf-checkpoint", ckpt, "--output", folder.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let fake_tf = t.join("fake-tf");
    std::fs::create_dir(&fake_tf).unwrap();
    let libz = not_tensorflow_library();
    for name in ["libtensorflow_cc.so.2", "libtensorflow_framework.so.2"] {
        std::fs::copy(&libz, fake_tf.join(name)).unwrap();
    }
    let verify_folder: Vec<String> = ["verify", "--hf-dir", folder.to_str().unwrap(), "--tf-checkpoint", ckpt].map(String::from).to_vec();
    let fake_tf_case = Case {
        what: "a library that is not TensorFlow",
        args: verify_folder.clone(),
        env: vec![("TFCONV_TF_DIR", fake_tf.display().to_string()), ("TFCONV_CACHE", t.join("empty-cache").display().to_string()), ("PATH", t.join("no-bin").display().to_string())],
        code: 6,
        says: format!("{}/libtensorflow_cc.so.2 is not a TensorFlow C library", fake_tf.display()),
    };
    let empty_tf_dir = Case {
        what: "an empty TFCONV_TF_DIR counts as unset",
        args: verify_folder.clone(),
        env: vec![("TFCONV_TF_DIR", String::new())],
        code: 0,
        says: "PASS".into(),
    };
    let no_tf = |mut c: Case| {
        c.env = vec![("TFCONV_TF_DIR", t.join("no-tf").display().to_string()), ("TFCONV_CACHE", t.join("empty-cache").display().to_string())];
        c
    };

    let convert = |extra: &[&str]| -> Vec<String> {
        ["convert", "--tf-checkpoint", ckpt, "--output", out].iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let with = |what, args: Vec<String>, code, says: &str| Case { what, args, env: vec![], code, says: says.into() };
    let cases = vec![
        with("max shard size not a size", convert(&["--max-shard-size", "abc"]), 2, "invalid size 'abc'"),
        with("max shard size unit unknown", convert(&["--max-shard-size", "5G"]), 2, "invalid size '5G'"),
        with("max shard size zero", convert(&["--max-shard-size", "0"]), 2, "invalid size '0'"),
        with("unsupported model type", convert(&["--model_type", "llama"]), 2, "--model-type llama: not supported (supported: bert, albert, gpt2"),
        with("negative atol", convert(&["--verify", "--atol", "-1"]), 2, "must be a finite number"),
        with("nan atol", convert(&["--verify", "--atol", "nan"]), 2, "must be a finite number"),
        with("infinite rtol", convert(&["--verify", "--rtol", "inf"]), 2, "must be a finite number"),
        with("negative rtol", convert(&["--verify", "--rtol", "-0.5"]), 2, "must be a finite number"),
        with("zero probes", convert(&["--verify", "--probes", "0"]), 2, "--probes"),
        with("zero seq len", convert(&["--verify", "--seq-len", "0"]), 2, "--seq-len"),
        with("seq len above the maximum", convert(&["--verify", "--seq-len", "100"]), 2, "--seq-len 100 is longer than the model's 24 positions"),
        with("report without verify", convert(&["--report", t.join("r.json").to_str().unwrap()]), 2, "needs --verify"),
        with("print plan with verify", convert(&["--print-plan", "--verify"]), 2, "--print-plan"),
        with("both output spellings", convert(&["--pytorch_dump_output", "x/pytorch_model.bin"]), 2, "same option"),
        with(
            "hidden output name",
            ["convert", "--tf-checkpoint", ckpt, "--output", t.join("d/.bin").to_str().unwrap()].map(String::from).to_vec(),
            2,
            "'.bin' has no file name",
        ),
        case("print plan needs no output", &["convert", "--tf-checkpoint", ckpt, "--print-plan"], 0, ""),
        case(
            "the transformers spelling is named in messages",
            &["convert", "--tf-checkpoint", ckpt, "--pytorch_dump_output", golden("bert/bert_config.json").to_str().unwrap()],
            5,
            "--pytorch_dump_output",
        ),
        case("output under a regular file", &["convert", "--tf-checkpoint", ckpt, "--output", under_file], 5, under_file),
        case("output parent not writable", &["convert", "--tf-checkpoint", ckpt, "--output", "/sys/tfconv-out"], 5, "/sys/tfconv-out"),
        with("report under a regular file", convert(&["--verify", "--report", under_file]), 5, under_file),
        with("report in an unwritable folder", convert(&["--verify", "--report", "/sys/tfconv-report.json"]), 5, "/sys/tfconv-report.json"),
        no_tf(case("verify a missing folder without TensorFlow", &["verify", "--hf-dir", t.join("missing").to_str().unwrap(), "--tf-checkpoint", ckpt], 9, "no such folder")),
        no_tf(case(
            "verify a folder of another model type",
            &["verify", "--hf-dir", llama_folder.to_str().unwrap(), "--tf-checkpoint", ckpt],
            13,
            "llama-folder/config.json: model_type 'llama' is not supported",
        )),
        case(
            "missing vocab.txt is reported",
            &["convert", "--tf-checkpoint", no_vocab_ckpt.to_str().unwrap(), "--output", t.join("nv").to_str().unwrap()],
            0,
            "no tokenizer files written: no vocabulary found in",
        ),
        case(
            "unsupported hidden_act",
            &["convert", "--tf-checkpoint", bad_act_ckpt.to_str().unwrap(), "--output", t.join("ba").to_str().unwrap()],
            3,
            "hidden_act",
        ),
        case("unknown flag", &["convert", "--no-such-flag"], 2, "--no-such-flag"),
        case("inspect a character device", &["inspect", "/dev/null"], 12, "/dev/null: not a regular file or directory (a character device)"),
        case("inspect a FIFO", &["inspect", fifo.to_str().unwrap()], 12, "is a FIFO, not a checkpoint file"),
        case("inspect a dangling link", &["inspect", dangling.to_str().unwrap()], 9, "which does not exist"),
        fake_tf_case,
        empty_tf_dir,
        case("inspect a missing path", &["inspect", t.join("missing").to_str().unwrap()], 9, "missing"),
    ];
    let mut failures = Vec::new();
    for c in &cases {
        let o = run(c, &t);
        let err = stderr(&o);
        if o.status.code() != Some(c.code) || !err.contains(&c.says) || err.contains(".tmp-") || err.contains("panicked") {
            failures.push(format!("{}: exit {:?} (want {}), stderr:\n{err}", c.what, o.status.code(), c.code));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
    assert!(!Path::new(out).exists(), "no case wrote the output");
    assert!(!t.join("ba").exists() && !t.join("r.json").exists());
}

#[test]
fn help_lists_the_transformers_convert_spellings() {
    let o = tfconv(&["convert", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in ["--model_type", "--tf_checkpoint", "--pytorch_dump_output", "--finetuning_task_name"] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
}

#[test]
fn inspect_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    // Enough rows that the output cannot fit in a pipe buffer.
    let ckpt = edited_bert(dir.path(), |vars| {
        for i in 0..4000 {
            vars.push((format!("extra/a_rather_long_variable_name_to_fill_the_pipe/{i}"), vec![1], vec![0.0]));
        }
    });
    let script = format!("set -o pipefail; '{}' inspect '{}' | head -n 1 > /dev/null", env!("CARGO_BIN_EXE_tfconv"), ckpt.display());
    let o = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "no message for a closed pipe: {}", stderr(&o));
}

const FLAGS: &[&str] = &[
    "--force", "--verify", "--print-plan", "--dtype", "--max-shard-size", "--report", "--seq-len", "--probes", "--atol",
    "--rtol", "--seed", "--model_type", "--config", "--do-lower-case", "--finetuning_task_name", "--output",
    "--pytorch_dump_output",
];
const VALUES: &[&str] = &[
    "0", "-1", "1", "3", "8", "nan", "1e-3", "5GB", "60kB", "abc", "float16", "bfloat16", "true", "bert", "gpt2", "out",
    "out/pytorch_model.bin", "out/model.safetensors", "ckpt", "ckpt/bert_config.json", "ckpt/bert_model.ckpt.index", ".",
    "..", "report.json", "out/config.json", "", "ckpt/pytorch_model.bin", "ckpt/vocab.txt",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_flags_never_panic_nor_write_outside_the_output(
        picks in prop::collection::vec((0..FLAGS.len(), prop::option::of(0..VALUES.len())), 0..6),
        with_output in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let prefix = copy_golden("bert", &root.join("ckpt"));
        let mut args: Vec<String> = vec!["convert".into(), "--tf-checkpoint".into(), prefix.to_str().unwrap().into()];
        if with_output {
            args.extend(["--output".into(), "fresh".into()]);
        }
        for (flag, value) in &picks {
            args.push(FLAGS[*flag].into());
            if let Some(v) = value {
                args.push(VALUES[*v].into());
            }
        }
        // Keep the TensorFlow side short when a combination reaches it.
        if args.iter().any(|a| a == "--verify") && !args.iter().any(|a| a == "--seq-len") {
            args.extend(["--seq-len".into(), "8".into()]);
        }
        let inputs = snapshot(&root.join("ckpt"));
        let before = snapshot(&root);
        let o = Command::new(env!("CARGO_BIN_EXE_tfconv")).current_dir(&root).args(&args).output().unwrap();
        let code = o.status.code();
        prop_assert!(matches!(code, Some(0..=6)), "exit {:?} for {:?}\n{}", code, args, stderr(&o));
        prop_assert!(!stderr(&o).contains("panicked"), "{:?}\n{}", args, stderr(&o));
        let after = snapshot(&root);
        for (path, hash) in &inputs {
            prop_assert_eq!(after.get(path), Some(hash), "input {} changed by {:?}", path.display(), args);
        }
        let reported = reported_outputs(&o);
        for path in changed(&before, &after) {
            let ok = reported.iter().any(|r| r == &path || (r.starts_with(&path) && !before.contains_key(&path)));
            prop_assert!(ok, "{} changed but was not reported by {:?}\n{}", path.display(), args, stderr(&o));
        }
    }
}
