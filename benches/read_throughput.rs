//! Read throughput of the TF bundle reader on a 440 MB checkpoint (BERT-base sized), as a
//! ratio to `cat` reading the same bytes, both from a warm page cache, in one run.
//! `cargo bench --bench read_throughput`

use std::process::Command;
use std::time::{Duration, Instant};

use tfconv::source::{self, testing::BundleBuilder};

const TENSORS: usize = 20;
const FLOATS_PER_TENSOR: usize = 5_500_000; // 20 × 22 MB = 440 MB

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("model.ckpt");
    let mut b = BundleBuilder::new(1);
    for t in 0..TENSORS {
        let values: Vec<f32> = (0..FLOATS_PER_TENSOR).map(|i| (i ^ t) as f32 * 1e-3).collect();
        b.add_f32(&format!("layer_{t:02}/kernel"), &[FLOATS_PER_TENSOR as i64 / 1000, 1000], &values);
    }
    b.write(&prefix).unwrap();
    let data = dir.path().join("model.ckpt.data-00000-of-00001");
    let bytes = std::fs::metadata(&data).unwrap().len();

    let cat = || {
        let start = Instant::now();
        let status = Command::new("cat").arg(&data).stdout(std::process::Stdio::null()).status().unwrap();
        assert!(status.success());
        start.elapsed()
    };
    let ours = || {
        let start = Instant::now();
        let ckpt = source::open(&prefix).unwrap();
        let mut checksum = 0u64;
        for t in ckpt.tensors() {
            let data = ckpt.read(&t.name).unwrap(); // CRC32C verified on every read
            checksum = checksum.wrapping_add(data[data.len() / 2] as u64);
        }
        std::hint::black_box(checksum);
        start.elapsed()
    };
    cat(); // warm the page cache for both
    let runs = 5;
    let cat_t = median((0..runs).map(|_| cat()).collect());
    let ours_t = median((0..runs).map(|_| ours()).collect());
    let gbps = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    println!("bundle: {} tensors, {:.0} MB", TENSORS, bytes as f64 / 1e6);
    println!("cat      {:>8.1} ms  {:>6.2} GB/s", cat_t.as_secs_f64() * 1e3, gbps(cat_t));
    println!("tfconv   {:>8.1} ms  {:>6.2} GB/s  (open + read + CRC32C of every tensor)", ours_t.as_secs_f64() * 1e3, gbps(ours_t));
    println!("ratio tfconv/cat time: {:.2}", ours_t.as_secs_f64() / cat_t.as_secs_f64());
}
