//! The fuzz target of the `.pth` readers: one million inputs (`FUZZ_INPUTS` to change) through
//! the restricted pickle parser and the `torch.save` container readers (zip and legacy), with no
//! panic, no hang and no runaway allocation: a counting allocator bounds what each input makes
//! the reader hold at its peak by its length (`ALLOWED`), so a size read from the file cannot
//! make it reserve gigabytes.
//!
//! Ignored by default (about three and a half minutes in a debug build):
//!     cargo test --test pth_fuzz -- --ignored --nocapture
//!
//! Inputs, from a seeded generator (`FUZZ_SEED`): random bytes behind each magic number; byte
//! flips, "interesting" integers (0, ±1, 2^31, 2^63, …) written over 1–8 bytes, truncations,
//! deleted and duplicated spans, applied to torch-written fixtures (golden/formats/pth) and to
//! small XLM checkpoints written by the test helper in both containers; and the same mutations
//! of their pickles alone, for the pickle parser.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tfconv::source::pickle;
use tfconv::source::{Checkpoint, PthCheckpoint};
use tfconv::synthetic::Rng;
use tfconv_models::xlm::synthetic::{pth_bytes, Layout as PthLayout};
use tfconv_models::xlm::XlmConfig;

/// Bytes currently allocated, and the peak since the last reset.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = CURRENT.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak extra memory an input may cost: its own copy, the pickle machine's nodes (tens of bytes
/// per opcode byte) and the tree copy bounded by the parser's budget, with room to spare. A
/// reader trusting a size field would exceed it by orders of magnitude.
fn allowed(len: usize) -> usize {
    (16 << 20) + 400 * len
}

const INTERESTING: [u64; 12] =
    [0, 1, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x7fff_ffff_ffff_ffff, u64::MAX];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let below = |rng: &mut Rng, n: usize| (rng.next_u64() % n.max(1) as u64) as usize;
    for _ in 0..1 + below(rng, 4) {
        if b.is_empty() {
            break;
        }
        let at = below(rng, b.len());
        match below(rng, 6) {
            0 | 1 => b[at] = rng.next_u64() as u8,
            2 => {
                let v = INTERESTING[below(rng, INTERESTING.len())].to_le_bytes();
                let n = [1, 2, 4, 8][below(rng, 4)].min(b.len() - at);
                b[at..at + n].copy_from_slice(&v[..n]);
            }
            3 => b.truncate(at),
            4 => {
                let end = (at + 1 + below(rng, 64)).min(b.len());
                b.drain(at..end);
            }
            _ => {
                let end = (at + 1 + below(rng, 64)).min(b.len());
                let span = b[at..end].to_vec();
                b.splice(at..at, span);
            }
        }
    }
    b
}

/// Everything a caller may do with an opened file; every listed tensor must read.
fn exercise_file(bytes: Vec<u8>) -> bool {
    let Ok(ck) = PthCheckpoint::from_bytes("fuzz.pth", bytes) else { return false };
    let _ = serde_json::to_string(ck.metadata());
    let _ = ck.embedded_config();
    for t in ck.tensors() {
        let data = ck.read(&t.name).expect("an opened checkpoint reads every listed tensor");
        assert_eq!(Some(data.len()), t.nbytes());
        ck.release(&t.name);
    }
    true
}

/// The object pickle of a torch file: data.pkl of a zip, the stream after the magic of a legacy file.
fn pickle_of(file: &[u8]) -> Vec<u8> {
    if file.starts_with(b"PK") {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(file)).unwrap();
        let i = z.file_names_raw().position(|n| n.ends_with(b"/data.pkl")).unwrap();
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut z.by_index(i).unwrap(), &mut out).unwrap();
        out
    } else {
        file[15..].to_vec()
    }
}

#[test]
#[ignore = "a million inputs: run with --ignored"]
fn a_million_inputs_no_panic_no_runaway_allocation() {
    let total: usize = std::env::var("FUZZ_INPUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(20_240_601);
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/formats/pth");
    let mut files: Vec<Vec<u8>> = ["xlm-zip.pth", "xlm-legacy.pth", "state-dict.pth"].iter().map(|f| std::fs::read(fixtures.join(f)).unwrap()).collect();
    // Tiny XLMs with every entry a trainer writes, in both containers, as the helper writes them.
    let cfg = XlmConfig {
        n_words: 16, emb_dim: 4, n_layers: 1, n_heads: 2, n_langs: 2, use_lang_emb: true, gelu_activation: true,
        sinusoidal_embeddings: false, share_inout_emb: true, max_positions: 4, pad_index: 2,
    };
    let layout = PthLayout { langs: vec!["en", "fr"], module_prefix: true, trainer_state: true, numpy_module: "numpy.core.multiarray" };
    files.push(pth_bytes(&cfg, &layout, 1, true));
    files.push(pth_bytes(&cfg, &layout, 1, false));
    let pickles: Vec<Vec<u8>> = files.iter().map(|f| pickle_of(f)).collect();
    for f in &files {
        assert!(exercise_file(f.clone()), "every seed file opens");
    }

    let mut rng = Rng::new(seed);
    let (mut opened, mut parsed, mut worst_extra, mut worst_len) = (0usize, 0usize, 0usize, 0usize);
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    for i in 0..total {
        let kind = rng.next_u64() % 10;
        let input = match kind {
            0 => {
                let magic: &[u8] = if rng.next_u64().is_multiple_of(2) { b"PK\x03\x04" } else { &tfconv::source::pth::LEGACY_MAGIC };
                let n = (rng.next_u64() % 512) as usize;
                [magic, &rng.bytes(n)].concat()
            }
            1..=6 => {
                let pick = (rng.next_u64() % files.len() as u64) as usize;
                mutate(&mut rng, &files[pick])
            }
            _ => {
                let pick = (rng.next_u64() % pickles.len() as u64) as usize;
                mutate(&mut rng, &pickles[pick])
            }
        };
        let len = input.len();
        let base = CURRENT.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        let t = Instant::now();
        if kind < 7 {
            opened += usize::from(exercise_file(input));
        } else {
            parsed += usize::from(pickle::parse(&input, 0).is_ok());
        }
        slowest = slowest.max(t.elapsed());
        let extra = PEAK.load(Ordering::Relaxed).saturating_sub(base);
        if extra > worst_extra {
            (worst_extra, worst_len) = (extra, len);
        }
        assert!(extra <= allowed(len), "input #{i} ({len} bytes, kind {kind}) made the reader hold {extra} bytes at its peak");
        if (i + 1) % 100_000 == 0 {
            eprintln!("{} inputs, {:.0} s", i + 1, start.elapsed().as_secs_f64());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "{total} inputs in {secs:.1} s ({:.0}/s): {opened} files opened and read in full, {parsed} pickles parsed; \
         peak extra allocation {worst_extra} bytes (for a {worst_len}-byte input); slowest input {slowest:?}",
        total as f64 / secs
    );
    assert!(slowest < Duration::from_secs(5), "an input took {slowest:?}");
    assert!(opened > 0 && parsed > 0, "the mutations must also reach the readers' success paths");
}
