//! A full disk, for real: each test mounts a small tmpfs and converts onto it. Too little room
//! is found before writing (exit 8, nothing created); a file system that fills up mid-write
//! (the check skipped, as when another writer races us) fails with the same error naming the
//! output and the space needed, and leaves neither a folder nor a temporary file behind.
//!
//! Mounting needs root (or CAP_SYS_ADMIN). Where it is refused the tests say so on stderr and
//! skip; `TFCONV_REQUIRE_TMPFS=1` turns that into a failure, for CI machines that can mount.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use tfconv::convert::{check, ConvertOptions};
use tfconv::sink::free_space;
use tfconv::Error;

/// A tmpfs of a fixed size mounted on a temporary folder, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0755"), "tfconv-no-space"])
            .arg(dir.path())
            .output();
        match o {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => format!("cannot run mount: {e}"),
                };
                if std::env::var("TFCONV_REQUIRE_TMPFS").is_ok_and(|v| v == "1") {
                    panic!("TFCONV_REQUIRE_TMPFS=1 but mounting a tmpfs failed: {why}");
                }
                eprintln!("\n*** SKIPPED: this test needs to mount a small tmpfs (root or CAP_SYS_ADMIN), and mount said: {why} ***\n");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Every entry left on the file system, hidden ones included.
    fn entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// golden/bert with a 20000-word vocabulary: about 4 MB of weights.
fn four_mb_bert(dir: &Path) -> PathBuf {
    let vocab = 20_000i64;
    let ckpt = edited_bert(dir, |vars| {
        for v in vars.iter_mut() {
            if v.0 == "bert/embeddings/word_embeddings" {
                v.1 = vec![vocab, 48];
                v.2 = (0..vocab as usize * 48).map(|i| i as f32 * 1e-3).collect();
            } else if v.0 == "cls/predictions/output_bias" {
                v.1 = vec![vocab];
                v.2 = vec![0.25; vocab as usize];
            }
        }
    });
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("bert_config.json")).unwrap()).unwrap();
    config["vocab_size"] = vocab.into();
    std::fs::write(dir.join("bert_config.json"), config.to_string()).unwrap();
    std::fs::remove_file(dir.join("vocab.txt")).unwrap();
    ckpt
}

fn convert_cli(ckpt: &Path, flag: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["convert", "--tf-checkpoint", ckpt.to_str().unwrap(), flag, out.to_str().unwrap()];
    args.extend_from_slice(extra);
    tfconv(&args)
}

/// Bytes used by the files under `dir` (what the output really took).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() { du(&e.path()) } else { m.len() };
    }
    total
}

#[test]
fn too_little_room_is_found_before_writing() {
    let src = tempfile::tempdir().unwrap();
    let ckpt = four_mb_bert(src.path());
    let Some(fs) = Tmpfs::mount(2 << 20) else { return };
    for (flag, out, rest) in [
        ("--output", fs.path().join("bert"), vec![]),
        ("--pytorch_dump_output", fs.path().join("dump/pytorch_model.bin"), vec![]),
        ("--output", fs.path().join("sharded"), vec!["--max-shard-size", "1MB"]),
    ] {
        let o = convert_cli(&ckpt, flag, &out, &rest);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(8), "{flag} {}: {err}", out.display());
        let named = if flag == "--output" { out.clone() } else { out.parent().unwrap().to_path_buf() };
        assert!(err.contains(&format!("{}: not enough space on its file system: the output needs ", named.display())), "{err}");
        assert!(err.contains("checked before writing; nothing was written"), "{err}");
        let needed: u64 = err.split("needs ").nth(1).and_then(|r| r.split('(').nth(1)).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
        assert!(needed > 4_000_000, "planned {needed} bytes for about 4 MB of weights: {err}");
        assert!(!out.exists(), "{}", out.display());
        // The folder of a file output is created before the check (it is where the temporary
        // files go); it is left empty.
        let left: Vec<String> = fs.entries().into_iter().filter(|n| n != "dump").collect();
        assert!(left.is_empty(), "left on the file system: {left:?}");
        if flag == "--pytorch_dump_output" {
            assert_eq!(std::fs::read_dir(fs.path().join("dump")).unwrap().count(), 0);
            std::fs::remove_dir(fs.path().join("dump")).unwrap();
        }
    }
}

#[test]
fn filling_up_mid_write_names_the_output_and_leaves_nothing() {
    let src = tempfile::tempdir().unwrap();
    let ckpt = four_mb_bert(src.path());
    // Room for the first tensors but not for the 3.8 MB embeddings.
    let Some(fs) = Tmpfs::mount(2 << 20) else { return };
    for (out, shard) in [
        (fs.path().join("bert"), None),
        (fs.path().join("sharded"), Some(1_000_000)),
        (fs.path().join("dump/pytorch_model.bin"), None),
        (fs.path().join("dump/pytorch_model.bin"), Some(1_000_000)),
    ] {
        let mut opts = ConvertOptions::new(&ckpt, &out);
        if let Some(s) = shard {
            opts.max_shard_size = s;
        }
        let mut conversion = check(&opts).unwrap_or_else(|e| panic!("{e}"));
        conversion.skip_space_check();
        let planned = conversion.planned_bytes();
        let e = match conversion.write() {
            Err(e) => e,
            Ok(_) => panic!("{}: a 4 MB output fitted on a 2 MiB file system", out.display()),
        };
        let named = if out.extension().is_some_and(|x| x == "bin") { out.parent().unwrap().to_path_buf() } else { out.clone() };
        match &e {
            Error::NoSpace { path, needed, available, detail } => {
                assert_eq!(path, &named);
                assert_eq!(*needed, planned);
                assert!(*available > 1 << 20, "the partial output is gone before the free space is measured: {available}");
                assert!(detail.as_deref().unwrap_or("").contains("filled up while writing"), "{e}");
            }
            other => panic!("{}: expected NoSpace, got {other:?}", out.display()),
        }
        assert_eq!(tfconv::cli::exit_code(&e), 8);
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{}: not enough space", named.display())) && msg.contains("partial output was removed"), "{msg}");
        assert!(!out.exists(), "{}", out.display());
        let left: Vec<String> = fs.entries().into_iter().filter(|n| n != "dump").collect();
        assert!(left.is_empty(), "left on the file system: {left:?}");
        if fs.path().join("dump").exists() {
            assert_eq!(std::fs::read_dir(fs.path().join("dump")).unwrap().count(), 0, "dump/ holds files after a failed write");
        }
        assert!(free_space(fs.path()).unwrap() > (2 << 20) - (64 << 10), "space not given back");
    }
}

/// The plan is an upper bound (the check never refuses an output that fits by more than its
/// margins) and close (a few blocks per file, not a multiple of the size).
#[test]
fn the_planned_size_bounds_what_is_written() {
    let src = tempfile::tempdir().unwrap();
    let ckpt = four_mb_bert(src.path());
    let Some(fs) = Tmpfs::mount(16 << 20) else { return };
    for name in ["st", "st-sharded", "bin", "bin-sharded"] {
        let out = fs.path().join(name);
        let mut opts = ConvertOptions::new(&ckpt, &out);
        if name.ends_with("sharded") {
            opts.max_shard_size = 1_000_000;
        }
        if name.starts_with("bin") {
            opts.output = out.join("pytorch_model.bin");
            opts.output_flag = "--pytorch_dump_output";
        }
        let conversion = check(&opts).unwrap();
        let planned = conversion.planned_bytes();
        let done = conversion.write().unwrap_or_else(|e| panic!("{name}: {e}"));
        let used = du(&done.folder);
        assert!(planned >= used, "{name}: planned {planned} < written {used}");
        assert!(planned < used + 200_000, "{name}: planned {planned} is far above written {used}");
    }
}
