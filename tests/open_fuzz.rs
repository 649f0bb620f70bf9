//! The fuzz target of the whole open path, on real files: `source::open` (path resolution, the
//! `checkpoint` state file, the bundle and V1 readers) and then reading every tensor, on folders
//! built and damaged on disk, plus the state-file parser on its own. No input may panic or hang,
//! and every failure must be an input error, with the exit code of its fault (corrupt 3, missing
//! 9, truncated 10, ambiguous 11, unreadable 12, unsupported 13), naming a path inside the
//! folder.
//!
//! Each case is a fresh folder holding a V2 bundle (1–3 data shards, float, int and string
//! tensors) under a name that may not be UTF-8, maybe a second checkpoint (V2 or V1) and maybe a
//! `checkpoint` state file (naming the bundle, the other one, a missing file, an absolute path
//! from another machine, a non-UTF-8 name through octal escapes, or mutated bytes), then damaged:
//! shards truncated or missing, index entries pointing past the end of their shard, index bytes
//! flipped or cut, files replaced by symlink loops, dangling links, directories or FIFOs. The
//! path opened is the folder, the prefix, the index, a shard, the state file or a link.
//!
//! The long run, one million cases (`FUZZ_INPUTS`, `FUZZ_SEED` to change):
//!     cargo test --release --test open_fuzz -- --ignored --nocapture
//! CI runs `fuzz_open_path_ci` (50,000 cases) and the parser target with 200,000 inputs.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tfconv::source::resolve::parse_text_proto;
use tfconv::source::testing::{BundleBuilder, V1Builder};
use tfconv::source::{self, DType};
use tfconv::synthetic::Rng;
use tfconv::{Error, InputFault};

fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn chance(rng: &mut Rng, one_in: usize) -> bool {
    below(rng, one_in) == 0
}

const INTERESTING: [u64; 10] = [0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, 0x7fff_ffff_ffff_ffff, u64::MAX];

/// Byte flips, extreme integers, cuts, deleted and duplicated spans.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    for _ in 0..1 + below(rng, 4) {
        if b.is_empty() {
            b.push(rng.next_u64() as u8);
            continue;
        }
        let at = below(rng, b.len());
        match below(rng, 6) {
            0 | 1 => b[at] = rng.next_u64() as u8,
            2 => {
                let v = INTERESTING[below(rng, INTERESTING.len())].to_le_bytes();
                let n = (1 + below(rng, 8)).min(b.len() - at);
                b[at..at + n].copy_from_slice(&v[..n]);
            }
            3 => b.truncate(at),
            4 => {
                let end = (at + 1 + below(rng, 16)).min(b.len());
                b.drain(at..end);
            }
            _ => {
                let end = (at + 1 + below(rng, 16)).min(b.len());
                let span = b[at..end].to_vec();
                let to = below(rng, b.len());
                b.splice(to..to, span);
            }
        }
    }
}

/// A small bundle: float, int and string tensors spread over `shards` data files.
fn bundle(rng: &mut Rng, shards: usize) -> BundleBuilder {
    let mut b = BundleBuilder::new(shards);
    let n = 2 + below(rng, 5);
    for i in 0..n {
        let rows = 1 + below(rng, 6);
        let cols = 1 + below(rng, 9);
        let values: Vec<f32> = (0..rows * cols).map(|k| (k as f32) * 0.5 - i as f32).collect();
        b.add_f32(&format!("layer_{i}/kernel"), &[rows as i64, cols as i64], &values);
    }
    let ints: Vec<u8> = (0..4i32).flat_map(|v| v.to_le_bytes()).collect();
    b.add("global_step", DType::I32, &[4], &ints);
    if chance(rng, 2) {
        b.add_strings("names", &[2], &[b"a", b"bc"]);
    }
    b
}

/// `<base>` as a file name: plain, with spaces, or not UTF-8.
fn checkpoint_name(rng: &mut Rng) -> OsString {
    match below(rng, 4) {
        0 => OsString::from_vec(b"mod\xffel.ckpt-\xfe1".to_vec()),
        1 => OsString::from("my model.ckpt-1000"),
        _ => OsString::from("model.ckpt-1000"),
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// `name` as a text-proto string body: printable bytes as they are, others as octal escapes.
fn escaped(name: &[u8]) -> String {
    name.iter().map(|&c| if c.is_ascii_graphic() && c != b'"' && c != b'\\' || c == b' ' { (c as char).to_string() } else { format!("\\{c:03o}") }).collect()
}

/// What a case did, for the summary.
#[derive(Default)]
struct Tally {
    cases: u64,
    opened: u64,
    tensors_read: u64,
    errors: BTreeMap<String, u64>,
    /// The first message of each kind, for the summary.
    samples: BTreeMap<String, String>,
    /// Failures by fault (exit code).
    faults: BTreeMap<String, u64>,
}

fn variant(e: &Error) -> &'static str {
    match e {
        Error::Input { .. } => "Input",
        Error::Tensor { .. } => "Tensor",
        Error::Resolve { .. } => "Resolve",
        Error::Io { .. } => "Io",
        Error::Write { .. } => "Write",
        Error::Usage(_) => "Usage",
        Error::Mapping(_) => "Mapping",
        Error::Output(_) => "Output",
        Error::ReferenceUnavailable(_) => "ReferenceUnavailable",
        Error::NoSpace { .. } => "NoSpace",
    }
}

/// The exit code of each input fault (README, "Exit codes").
fn fault_code(fault: InputFault) -> u8 {
    match fault {
        InputFault::Corrupt => 3,
        InputFault::Missing => 9,
        InputFault::Truncated => 10,
        InputFault::Ambiguous => 11,
        InputFault::Unreadable => 12,
        InputFault::Unsupported => 13,
    }
}

/// Checks a failure: an input error, with its fault's exit code, naming something in the
/// case's folder.
fn check_error(e: &Error, dir: &Path, what: &str, tally: &mut Tally) {
    let fault = e.input_fault().unwrap_or_else(|| panic!("{what}: {} error {e} is not about the input", variant(e)));
    let code = tfconv::cli::exit_code(e);
    assert_eq!(code, fault_code(fault), "{what}: {fault:?} error {e} has exit code {code}");
    let msg = e.to_string();
    assert!(msg.contains(&dir.display().to_string()), "{what}: the error does not name a path in {}: {msg}", dir.display());
    let kind = format!("{}/{fault:?}", variant(e));
    *tally.errors.entry(kind.clone()).or_default() += 1;
    tally.samples.entry(kind).or_insert(msg);
    *tally.faults.entry(format!("{fault:?}")).or_default() += 1;
}

/// Builds one case in `dir` (empty), opens it, reads everything.
fn run_case(rng: &mut Rng, dir: &Path, tally: &mut Tally) {
    let name = checkpoint_name(rng);
    let prefix = dir.join(&name);
    let shards = 1 + below(rng, 3);
    let mut b = bundle(rng, shards);
    let mut what = vec![format!("bundle {:?} with {shards} shard(s)", name)];

    // An entry pointing past the end of its shard, or into another shard.
    if chance(rng, 4) {
        let keys: Vec<Vec<u8>> = b.entries.keys().cloned().collect();
        let key = String::from_utf8(keys[below(rng, keys.len())].clone()).unwrap();
        let e = b.entry_mut(&key);
        match below(rng, 4) {
            0 => e.offset += 1 + below(rng, 64) as i64,
            1 => e.size += 1 + below(rng, 64) as i64,
            2 => e.offset = INTERESTING[below(rng, INTERESTING.len())] as i64,
            _ => e.shard_id = below(rng, 5) as i32,
        }
        what.push(format!("entry {key} edited to {e:?}"));
    }
    let mut index = b.index_bytes();
    if chance(rng, 5) {
        mutate(rng, &mut index);
        what.push("index bytes mutated".into());
    }
    std::fs::write(with_suffix(&prefix, ".index"), &index).unwrap();
    let mut shard_paths = Vec::new();
    for (i, data) in b.shards.iter().enumerate() {
        let p = BundleBuilder::shard_path(&prefix, i, shards);
        std::fs::write(&p, data).unwrap();
        shard_paths.push(p);
    }

    // Damage to the files themselves.
    for _ in 0..below(rng, 3) {
        let victim = match below(rng, 4) {
            0 => with_suffix(&prefix, ".index"),
            _ => shard_paths[below(rng, shard_paths.len())].clone(),
        };
        let _ = std::fs::remove_file(&victim);
        let _ = std::fs::remove_dir(&victim);
        match below(rng, 7) {
            0 => what.push(format!("{} missing", victim.display())),
            1 => {
                std::os::unix::fs::symlink(&victim, &victim).unwrap();
                what.push(format!("{} is a symlink to itself", victim.display()));
            }
            2 => {
                let other = dir.join("loop-b");
                let _ = std::os::unix::fs::symlink(&victim, &other);
                std::os::unix::fs::symlink(&other, &victim).unwrap();
                what.push(format!("{} is a symlink loop through loop-b", victim.display()));
            }
            3 => {
                std::os::unix::fs::symlink(dir.join("gone/away"), &victim).unwrap();
                what.push(format!("{} is a dangling link", victim.display()));
            }
            4 => {
                std::fs::create_dir(&victim).unwrap();
                what.push(format!("{} is a directory", victim.display()));
            }
            5 => {
                let c = std::ffi::CString::new(victim.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: a NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo {}", victim.display());
                what.push(format!("{} is a FIFO", victim.display()));
            }
            _ => {
                let data = b.shards.first().cloned().unwrap_or_default();
                let cut = below(rng, data.len() + 1);
                std::fs::write(&victim, &data[..cut]).unwrap();
                what.push(format!("{} truncated to {cut} bytes", victim.display()));
            }
        }
    }

    // A second checkpoint beside it.
    let other = dir.join("other.ckpt");
    match below(rng, 5) {
        0 => {
            bundle(rng, 1).write(&other).unwrap();
            what.push("a second V2 bundle other.ckpt".into());
        }
        1 => {
            let mut v1 = V1Builder::new();
            v1.add_f32("w", &[2], &[1.0, 2.0]);
            let mut bytes = v1.bytes();
            if chance(rng, 3) {
                mutate(rng, &mut bytes);
            }
            std::fs::write(&other, bytes).unwrap();
            what.push("a V1 file other.ckpt".into());
        }
        _ => {}
    }

    // The state file.
    let state = dir.join("checkpoint");
    if chance(rng, 2) {
        let target: Vec<u8> = match below(rng, 6) {
            0 => name.clone().into_vec(),
            1 => b"other.ckpt".to_vec(),
            2 => b"missing.ckpt-7".to_vec(),
            3 => [b"/home/someone/run/".as_slice(), name.as_encoded_bytes()].concat(),
            4 => b"other.ckpt-?????-of-00002".to_vec(),
            _ => dir.join("loop-b").into_os_string().into_vec(),
        };
        let mut text = format!("model_checkpoint_path: \"{}\"\nall_model_checkpoint_paths: \"{}\"\n", escaped(&target), escaped(&target)).into_bytes();
        if chance(rng, 3) {
            mutate(rng, &mut text);
        }
        std::fs::write(&state, &text).unwrap();
        what.push(format!("state file {:?}", String::from_utf8_lossy(&text)));
    }

    // A link to its own folder: a path through it resolves until the kernel's 40-link limit.
    std::os::unix::fs::symlink(".", dir.join("self")).unwrap();
    let path = match below(rng, 8) {
        0 | 1 => dir.to_path_buf(),
        2 => prefix.clone(),
        3 => with_suffix(&prefix, ".index"),
        4 => shard_paths[0].clone(),
        5 => state.clone(),
        6 => dir.join("loop-b"),
        _ => {
            let mut p = dir.to_path_buf();
            for _ in 0..below(rng, 48) {
                p.push("self");
            }
            if chance(rng, 2) { p.join(&name) } else { p }
        }
    };
    what.push(format!("opened {}", path.display()));
    let what = what.join("; ");

    match source::open(&path) {
        Err(e) => check_error(&e, dir, &what, tally),
        Ok(ckpt) => {
            tally.opened += 1;
            for t in ckpt.tensors() {
                let read = match t.dtype {
                    DType::String => ckpt.read_strings(&t.name).map(|_| ()),
                    _ => ckpt.read(&t.name).map(|bytes| assert_eq!(Some(bytes.len()), t.nbytes(), "{what}: {}", t.name)),
                };
                match read {
                    Ok(()) => tally.tensors_read += 1,
                    Err(e) => check_error(&e, dir, &what, tally),
                }
                ckpt.release(&t.name);
            }
        }
    }
    tally.cases += 1;
}

/// Runs `cases` cases from `seed` in folders under a scratch directory (on /dev/shm when there
/// is one, to spare the disk); a case that takes over 10 s aborts the run, naming it.
fn fuzz_open(cases: u64, seed: u64) -> Tally {
    let root = match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let current = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, done) = (current.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut last, mut since) = (u64::MAX, Instant::now());
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let now = current.load(Ordering::Relaxed);
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > Duration::from_secs(10) {
                    eprintln!("open_fuzz: case {now} (seed {seed}) has run for over 10 s: a hang");
                    std::process::abort();
                }
            }
        })
    };
    let mut tally = Tally::default();
    for i in 0..cases {
        current.store(i, Ordering::Relaxed);
        let mut rng = Rng::new(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let dir = root.path().join(format!("case-{i}"));
        std::fs::create_dir(&dir).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&mut rng, &dir, &mut tally)));
        if let Err(panic) = result {
            let msg = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("open_fuzz case {i} (seed {seed}) failed: {}", msg.unwrap_or_default());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    tally
}

/// The state-file parser alone: mutations of real state files and random bytes.
fn fuzz_state_parser(inputs: u64, seed: u64) -> (u64, u64) {
    let seeds: [&[u8]; 3] = [
        b"model_checkpoint_path: \"model.ckpt-1000\"\nall_model_checkpoint_paths: \"model.ckpt-500\"\nall_model_checkpoint_paths: \"model.ckpt-1000\"\n",
        b"model_checkpoint_path: \"/gs/bucket/run\\303\\251/model.ckpt-9\"\nall_model_checkpoint_timestamps: 1571234567.5\nlast_preserved_timestamp: 1571234000.25\n",
        b"# comment\nmodel_checkpoint_path: 'a\\x41\\n\\'b'\n",
    ];
    let mut rng = Rng::new(seed);
    let mut parsed = 0;
    for i in 0..inputs {
        let mut text = match i % 8 {
            0 => (0..below(&mut rng, 200)).map(|_| rng.next_u64() as u8).collect(),
            _ => seeds[below(&mut rng, seeds.len())].to_vec(),
        };
        mutate(&mut rng, &mut text);
        parsed += parse_text_proto(&text).is_ok() as u64;
    }
    (inputs, parsed)
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

fn report(tally: &Tally, started: Instant) {
    eprintln!(
        "open_fuzz: {} cases in {:.1?}: {} opened ({} tensors read), errors by kind {:?}",
        tally.cases,
        started.elapsed(),
        tally.opened,
        tally.tensors_read,
        tally.errors
    );
    for (kind, msg) in &tally.samples {
        eprintln!("  e.g. {kind}: {msg}");
    }
}

#[test]
fn fuzz_open_path_ci() {
    let started = Instant::now();
    let tally = fuzz_open(env("FUZZ_CI_INPUTS", 50_000), env("FUZZ_SEED", 15));
    report(&tally, started);
    // The generator must reach both outcomes and every fault its damage aims at: corrupt
    // bytes, missing files, truncation, two checkpoints, links and FIFOs (it writes nothing
    // well-formed that tfconv does not support).
    assert!(tally.opened > tally.cases / 20, "too few cases opened: {}", tally.opened);
    for fault in ["Corrupt", "Missing", "Truncated", "Ambiguous", "Unreadable"] {
        assert!(tally.faults.get(fault).is_some_and(|&n| n > 0), "no {fault} failure reached: {:?}", tally.errors);
    }
}

#[test]
fn fuzz_state_file_parser_ci() {
    let (n, parsed) = fuzz_state_parser(200_000, env("FUZZ_SEED", 15));
    assert!(parsed > n / 20 && parsed < n, "{parsed} of {n} parsed");
}

#[test]
#[ignore]
fn fuzz_open_path_million() {
    let started = Instant::now();
    let tally = fuzz_open(env("FUZZ_INPUTS", 1_000_000), env("FUZZ_SEED", 15));
    report(&tally, started);
    let started = Instant::now();
    let (n, parsed) = fuzz_state_parser(env("FUZZ_INPUTS", 1_000_000), env("FUZZ_SEED", 15));
    eprintln!("state-file parser: {n} inputs in {:.1?}, {parsed} parsed, no panic", started.elapsed());
}
