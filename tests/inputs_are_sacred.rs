//! No command, under any flags, writes over, renames or deletes a file tfconv did not write:
//! the documented `transformers convert` command form beside the checkpoint, output paths aimed
//! at inputs, their folders and the current directory, `--force`, reports, random layouts, and
//! interrupts at several points of a 440 MB conversion.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use proptest::prelude::*;

fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().canonicalize().unwrap();
    (dir, real)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every change under `root` is a file the command reported writing, or a folder it created
/// for one.
fn assert_only_reported_changes(before: &std::collections::BTreeMap<PathBuf, String>, root: &Path, o: &Output) {
    let after = snapshot(root);
    let reported = reported_outputs(o);
    for path in changed(before, &after) {
        let allowed = reported.iter().any(|r| r == &path || (r.starts_with(&path) && !before.contains_key(&path)));
        assert!(allowed, "{} changed but was not reported as written; stderr:\n{}", path.display(), stderr(o));
    }
}

fn assert_untouched(before: &std::collections::BTreeMap<PathBuf, String>, root: &Path, o: &Output) {
    let after = snapshot(root);
    assert!(changed(before, &after).is_empty(), "changed: {:?}\nstderr:\n{}", changed(before, &after), stderr(o));
}

#[test]
fn documented_command_writes_beside_the_checkpoint_and_keeps_every_input() {
    for case in ["bert", "bert-tf2"] {
        for weights in ["pytorch_model.bin", "model.safetensors"] {
            let (_keep, root) = scratch();
            let dir = root.join("model");
            let prefix = copy_golden(case, &dir);
            std::fs::write(dir.join("notes.txt"), b"the user's own file").unwrap();
            let inputs = snapshot(&dir);
            let target = dir.join(weights);
            let config = dir.join("bert_config.json");
            let command = |force: bool| {
                let mut args = vec!["convert", "--model_type", "bert", "--tf_checkpoint", s(&prefix)];
                args.extend(["--config", s(&config), "--pytorch_dump_output", s(&target)]);
                if force {
                    args.push("--force");
                }
                tfconv(&args)
            };

            let before = snapshot(&root);
            let o = command(false);
            assert_eq!(o.status.code(), Some(0), "{case} {weights}: {}", stderr(&o));
            assert_only_reported_changes(&before, &root, &o);
            for name in [weights, "config.json", "tokenizer_config.json", "special_tokens_map.json"] {
                assert!(dir.join(name).is_file(), "{case}: {name} written");
            }
            assert!(stderr(&o).contains(&format!("skipped {}: already there with the same content", dir.join("vocab.txt").display())), "{}", stderr(&o));
            let after = snapshot(&root);
            for (path, hash) in &inputs {
                assert_eq!(after.get(path), Some(hash), "{case}: input {} changed", path.display());
            }

            // Again: the weights exist, so only --force may replace them.
            let o = command(false);
            assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
            assert!(stderr(&o).contains("already exists (use --force"), "{}", stderr(&o));
            assert_untouched(&after, &root, &o);

            let o = command(true);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            assert_only_reported_changes(&after, &root, &o);
            let last = snapshot(&root);
            for (path, hash) in &inputs {
                assert_eq!(last.get(path), Some(hash), "{case}: input {} changed under --force", path.display());
            }
            assert!(!last.keys().any(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp-")), "no temporaries left");
        }
    }
}

#[test]
fn a_users_own_companion_is_kept_unless_force_and_an_input_never_replaced() {
    let (_keep, root) = scratch();
    let dir = root.join("model");
    let prefix = copy_golden("bert", &dir);
    std::fs::write(dir.join("config.json"), b"{\"mine\": true}").unwrap();
    let bin = dir.join("pytorch_model.bin");
    let config = dir.join("bert_config.json");
    let args = |force: bool| {
        let mut a = vec!["convert", "--tf-checkpoint", s(&prefix), "--config", s(&config), "--output", s(&bin)];
        if force {
            a.push("--force");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| Command::new(env!("CARGO_BIN_EXE_tfconv")).args(a).output().unwrap();
    let o = run(args(false));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("config.json: already there with different content; kept (--force replaces it)"), "{}", stderr(&o));
    assert_eq!(std::fs::read(dir.join("config.json")).unwrap(), b"{\"mine\": true}");
    let o = run(args(true));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8(std::fs::read(dir.join("config.json")).unwrap()).unwrap().contains("\"model_type\": \"bert\""));

    // When config.json is the original config itself (no bert_config.json), it is an input.
    let (_keep2, root2) = scratch();
    let dir2 = root2.join("model");
    let prefix2 = copy_golden("bert", &dir2);
    std::fs::rename(dir2.join("bert_config.json"), dir2.join("config.json")).unwrap();
    let before = snapshot(&root2);
    for force in [false, true] {
        let mut a = vec!["convert", "--tf-checkpoint", s(&prefix2), "--pytorch_dump_output"];
        let out = dir2.join("pytorch_model.bin");
        a.push(s(&out));
        if force {
            a.push("--force");
        }
        let o = tfconv(&a);
        assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
        assert!(stderr(&o).contains("config.json") && stderr(&o).contains("input"), "{}", stderr(&o));
        assert_untouched(&before, &root2, &o);
    }
}

#[test]
fn outputs_and_reports_aimed_at_inputs_their_folders_or_the_current_directory_are_refused() {
    let (_keep, root) = scratch();
    let dir = root.join("ckpt");
    let prefix = copy_golden("bert", &dir);
    let before = snapshot(&root);
    let inputs = ["bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001", "bert_config.json", "vocab.txt"];
    let mut targets: Vec<String> = inputs.iter().map(|n| s(&dir.join(n)).to_string()).collect();
    targets.extend([s(&dir).to_string(), format!("{}/../ckpt", s(&dir)), s(&root).to_string(), ".".into(), "../ckpt".into(), "..".into()]);
    for target in &targets {
        for flag in ["--output", "--pytorch_dump_output"] {
            for force in [false, true] {
                let mut args = vec!["convert", "--tf-checkpoint", s(&prefix), flag, target.as_str()];
                if force {
                    args.push("--force");
                }
                let o = tfconv_in(&dir, &args);
                assert_eq!(o.status.code(), Some(5), "{flag} {target} force={force}: {}", stderr(&o));
                let msg = stderr(&o);
                assert!(msg.contains("input") || msg.contains("current directory"), "{msg}");
                assert_untouched(&before, &root, &o);
            }
        }
        // The report is checked (and refused) before any conversion or TensorFlow work.
        let fresh = root.join("fresh");
        for force in [false, true] {
            let mut args = vec!["convert", "--tf-checkpoint", s(&prefix), "--output", s(&fresh), "--verify", "--report", target.as_str()];
            if force {
                args.push("--force");
            }
            let o = tfconv_in(&dir, &args);
            assert_eq!(o.status.code(), Some(5), "--report {target}: {}", stderr(&o));
            assert!(!fresh.exists());
            assert_untouched(&before, &root, &o);
        }
    }
    // The spelling "<cwd>/../<cwd>" of the current directory, from inside it.
    let o = tfconv_in(&dir, &["convert", "--tf-checkpoint", s(&prefix), "--output", "../ckpt/../ckpt", "--force"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_untouched(&before, &root, &o);
}

#[test]
fn verify_never_writes_a_report_over_an_input_even_with_force() {
    let (_keep, root) = scratch();
    let dir = root.join("ckpt");
    let prefix = copy_golden("bert", &dir);
    let folder = root.join("out");
    let o = tfconv(&["convert", "--tf-checkpoint", s(&prefix), "--output", s(&folder)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = snapshot(&root);
    // vocab.txt is read by verify too: its hash goes into the report's provenance.
    let inputs = ["bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001", "bert_config.json", "vocab.txt"];
    let mut targets: Vec<PathBuf> = inputs.iter().map(|n| dir.join(n)).collect();
    targets.push(folder.join("model.safetensors"));
    for target in &targets {
        for flag in ["--report", "--junit", "--report-html"] {
            let o = tfconv(&["verify", "--hf-dir", s(&folder), "--tf-checkpoint", s(&prefix), flag, s(target), "--force"]);
            assert_eq!(o.status.code(), Some(5), "{flag} {}: {}", target.display(), stderr(&o));
            assert_untouched(&before, &root, &o);
        }
    }
}

#[test]
fn a_report_never_lands_on_the_output_or_an_existing_file() {
    let (_keep, root) = scratch();
    let out = root.join("out");
    let mine = root.join("mine.json");
    std::fs::write(&mine, b"keep").unwrap();
    let before = snapshot(&root);
    let ckpt = golden("bert/bert_model.ckpt");
    for report in [out.join("config.json"), out.clone(), mine.clone()] {
        let o = tfconv(&["convert", "--tf-checkpoint", s(&ckpt), "--output", s(&out), "--verify", "--report", s(&report)]);
        assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
        assert_untouched(&before, &root, &o);
    }
    let o = tfconv(&["convert", "--tf-checkpoint", s(&ckpt), "--output", s(&out), "--report", s(&root.join("r.json"))]);
    assert_eq!(o.status.code(), Some(2), "--report without --verify is a usage error: {}", stderr(&o));
    assert_untouched(&before, &root, &o);
}

#[test]
fn force_replaces_a_tfconv_folder_but_not_one_holding_other_files() {
    let (_keep, root) = scratch();
    let out = root.join("out");
    let ckpt = golden("bert/bert_model.ckpt");
    let o = tfconv(&["convert", "--tf-checkpoint", s(&ckpt), "--output", s(&out), "--max-shard-size", "100kB"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = tfconv(&["convert", "--tf-checkpoint", s(&ckpt), "--output", s(&out), "--force"]);
    assert_eq!(o.status.code(), Some(0), "a previous conversion is replaced: {}", stderr(&o));
    assert!(out.join("model.safetensors").is_file() && !out.join("model.safetensors.index.json").exists());

    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    std::fs::create_dir(out.join("runs")).unwrap();
    let before = snapshot(&root);
    let o = tfconv(&["convert", "--tf-checkpoint", s(&ckpt), "--output", s(&out), "--force"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert!(stderr(&o).contains("notes.txt, runs/"), "lists what is not tfconv's: {}", stderr(&o));
    assert_untouched(&before, &root, &o);
}

/// Where the property test puts the output.
#[derive(Debug, Clone)]
enum Target {
    CheckpointFolder,
    BesideCheckpoint(&'static str),
    ParentOfCheckpoint,
    Fresh,
    InsideCheckpointFolder,
    Existing { foreign: bool },
    CurrentDir,
    Input(&'static str),
}

#[derive(Debug, Clone)]
enum Report {
    None,
    Fresh,
    Input(&'static str),
    InsideOutput,
}

fn layouts() -> impl Strategy<Value = (usize, bool, bool, Target, bool, Report)> {
    let target = prop_oneof![
        Just(Target::CheckpointFolder),
        Just(Target::BesideCheckpoint("pytorch_model.bin")),
        Just(Target::BesideCheckpoint("model.safetensors")),
        Just(Target::ParentOfCheckpoint),
        Just(Target::Fresh),
        Just(Target::InsideCheckpointFolder),
        any::<bool>().prop_map(|foreign| Target::Existing { foreign }),
        Just(Target::CurrentDir),
        prop::sample::select(vec!["bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001", "bert_config.json", "vocab.txt"]).prop_map(Target::Input),
    ];
    let report = prop_oneof![
        4 => Just(Report::None),
        1 => Just(Report::Fresh),
        1 => prop::sample::select(vec!["bert_model.ckpt.index", "bert_config.json"]).prop_map(Report::Input),
        1 => Just(Report::InsideOutput),
    ];
    // (checkpoint depth, extra user files, run from inside the checkpoint folder, target, --force, report)
    (1usize..4, any::<bool>(), any::<bool>(), target, any::<bool>(), report)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_layout_lets_a_command_touch_what_it_did_not_write((depth, extras, inside, target, force, report) in layouts()) {
        let (_keep, root) = scratch();
        let mut dir = root.clone();
        for d in 0..depth {
            dir = dir.join(format!("d{d}"));
        }
        let prefix = copy_golden("bert", &dir);
        if extras {
            std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
            std::fs::write(root.join("README"), b"mine").unwrap();
        }
        let out = match &target {
            Target::CheckpointFolder => dir.clone(),
            Target::BesideCheckpoint(name) => dir.join(name),
            Target::ParentOfCheckpoint => dir.parent().unwrap().to_path_buf(),
            Target::Fresh => root.join("out"),
            Target::InsideCheckpointFolder => dir.join("hf"),
            Target::Existing { foreign } => {
                let out = root.join("out");
                let o = tfconv(&["convert", "--tf-checkpoint", s(&prefix), "--output", s(&out)]);
                prop_assert_eq!(o.status.code(), Some(0));
                if *foreign {
                    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
                }
                out
            }
            Target::CurrentDir => PathBuf::from("."),
            Target::Input(name) => dir.join(name),
        };
        let cwd = if inside { dir.clone() } else { root.clone() };
        let report_path = match &report {
            Report::None => None,
            Report::Fresh => Some(root.join("report.json")),
            Report::Input(name) => Some(dir.join(name)),
            Report::InsideOutput => Some(cwd.join(&out).join("config.json")),
        };
        let inputs = snapshot(&dir);
        let before = snapshot(&root);
        let mut args: Vec<String> = ["convert", "--tf-checkpoint", s(&prefix), "--output", s(&out)].map(String::from).to_vec();
        if force {
            args.push("--force".into());
        }
        if let Some(r) = &report_path {
            args.extend(["--verify".into(), "--report".into(), s(r).to_string()]);
        }
        let o = Command::new(env!("CARGO_BIN_EXE_tfconv")).current_dir(&cwd).args(&args).output().unwrap();
        let code = o.status.code();
        prop_assert!(code.is_some() && code != Some(101), "crashed: {:?}\n{}", code, stderr(&o));
        let after = snapshot(&root);
        for (path, hash) in &inputs {
            prop_assert_eq!(after.get(path), Some(hash), "input {} changed by {:?}\n{}", path.display(), args, stderr(&o));
        }
        let reported = reported_outputs(&o);
        for path in changed(&before, &after) {
            let allowed = reported.iter().any(|r| r == &path || (r.starts_with(&path) && !before.contains_key(&path)));
            prop_assert!(allowed, "{} changed but was not reported; {:?}\n{}", path.display(), args, stderr(&o));
        }
        // What must be refused is refused.
        let must_refuse = matches!(target, Target::CheckpointFolder | Target::ParentOfCheckpoint | Target::CurrentDir | Target::Input(_))
            || matches!(target, Target::Existing { foreign: true })
            || (matches!(target, Target::Existing { .. }) && !force)
            || matches!(report, Report::Input(_) | Report::InsideOutput);
        if must_refuse {
            prop_assert!(code == Some(5), "expected a refusal (exit 5), got {:?}: {:?}\n{}", code, args, stderr(&o));
        }
    }
}

/// Waits until `ready` holds for the folder `dir`, polling; fails if the child ends first.
fn wait_until(child: &mut std::process::Child, what: &str, ready: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !ready() {
        assert!(child.try_wait().unwrap().is_none(), "the conversion finished before: {what}");
        assert!(started.elapsed().as_secs() < 120, "timed out waiting for: {what}");
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Bytes in the temporary entries (`.NAME.tmp-PID`) directly in `dir`.
fn temp_bytes(dir: &Path) -> Option<u64> {
    let mut total = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if entry.file_name().to_string_lossy().contains(".tmp-") {
            let mut sum = 0;
            if let Ok(files) = std::fs::read_dir(entry.path()) {
                sum += files.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum::<u64>();
            }
            total = Some(total.unwrap_or(0) + sum);
        }
    }
    total
}

#[test]
fn interrupts_at_several_points_leave_nothing_behind() {
    let (_keep, root) = scratch();
    let dir = root.join("ckpt");
    std::fs::create_dir_all(&dir).unwrap();
    let prefix = big_bert(&dir);
    let size = std::fs::metadata(dir.join("bert_model.ckpt.data-00000-of-00001")).unwrap().len();
    assert!(size >= 400_000_000, "checkpoint is {size} bytes");
    let before = snapshot(&root);
    let points: [(&str, f64); 3] = [("temporary output created", 0.0), ("a quarter written", 0.25), ("three quarters written", 0.75)];
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        for (point, fraction) in points {
            for output in [root.join("out"), dir.join("pytorch_model.bin")] {
                let mut child = Command::new(env!("CARGO_BIN_EXE_tfconv"))
                    .args(["convert", "--tf-checkpoint", s(&prefix), "--output", s(&output)])
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let watch = output.parent().unwrap().to_path_buf();
                let threshold = (size as f64 * fraction) as u64;
                wait_until(&mut child, point, || temp_bytes(&watch).is_some_and(|b| b >= threshold));
                let sent = Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().unwrap();
                assert!(sent.success());
                let o = child.wait_with_output().unwrap();
                assert_eq!(o.status.code(), Some(code), "SIG{signal} at '{point}' for {}: {}", output.display(), stderr(&o));
                let after = snapshot(&root);
                assert!(
                    changed(&before, &after).is_empty(),
                    "SIG{signal} at '{point}' for {} left {:?}",
                    output.display(),
                    changed(&before, &after)
                );
            }
        }
    }

    // A conversion killed without warning leaves its temporary folder; the next run removes it.
    let out = root.join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tfconv")).args(["convert", "--tf-checkpoint", s(&prefix), "--output", s(&out)]).spawn().unwrap();
    wait_until(&mut child, "a quarter written", || temp_bytes(&root).is_some_and(|b| b >= size / 4));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(temp_bytes(&root).is_some() && !out.exists(), "SIGKILL leaves the temporary folder, and no output");
    let o = tfconv(&["convert", "--tf-checkpoint", s(&prefix), "--output", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("which no longer runs"), "the stale folder is removed and reported: {}", stderr(&o));
    assert!(temp_bytes(&root).is_none(), "no temporary entries remain");
}
