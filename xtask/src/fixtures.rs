//! Format fixtures written by TensorFlow itself (golden/formats/): every dtype, scalars and
//! empty tensors, strings, a multi-shard bundle, partitioned variables and a V1 file.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use tfconv::source::DType;
use tfconv::synthetic::Rng;
use tfconv::tf_io::{self, HostTensor, SaveItem};

const ALL_DTYPES: [DType; 13] = [
    DType::F32, DType::F16, DType::BF16, DType::F64, DType::I8, DType::U8, DType::I16, DType::U16,
    DType::I32, DType::U32, DType::I64, DType::U64, DType::Bool,
];

fn random_tensor(rng: &mut Rng, dtype: DType, shape: &[usize]) -> HostTensor {
    let n: usize = shape.iter().product();
    let data = if dtype == DType::Bool {
        (0..n).map(|_| (rng.next_u64() & 1) as u8).collect()
    } else {
        rng.bytes(n * dtype.size().unwrap())
    };
    HostTensor::new(dtype, shape.to_vec(), data)
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn prefix(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

pub fn write_all(root: &Path) -> Result<()> {
    let mut rng = Rng::new(0x7f_c0_4e);

    // Every fixed-size dtype as a matrix, a scalar and an empty tensor, plus string tensors.
    let dir = root.join("dtypes");
    fresh_dir(&dir)?;
    let mut named: Vec<(String, HostTensor)> = Vec::new();
    for dtype in ALL_DTYPES {
        named.push((format!("{}/matrix", dtype.name()), random_tensor(&mut rng, dtype, &[3, 5])));
        named.push((format!("{}/scalar", dtype.name()), random_tensor(&mut rng, dtype, &[])));
        named.push((format!("{}/empty", dtype.name()), random_tensor(&mut rng, dtype, &[0, 4])));
    }
    let floats = [1.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE / 4.0, f32::MAX, 3.25];
    named.push(("float32/special".into(), HostTensor::f32(vec![2, 4], &floats)));
    named.push(("string/vector".into(), HostTensor::strings(vec![3], vec![b"hi".to_vec(), b"".to_vec(), b"world".to_vec()])));
    named.push(("string/scalar".into(), HostTensor::strings(vec![], vec!["ünïcode ✓".as_bytes().to_vec()])));
    named.push(("global_step".into(), HostTensor::new(DType::I64, vec![], 1000i64.to_le_bytes().to_vec())));
    let items: Vec<SaveItem> = named.iter().map(|(n, t)| SaveItem { name: n, slice_spec: "", tensor: t }).collect();
    tf_io::save_v2(&prefix(&dir, "ckpt"), &items)?;

    // Three bundles merged into one three-shard bundle.
    let dir = root.join("sharded");
    fresh_dir(&dir)?;
    let mut parts = Vec::new();
    for shard in 0..3 {
        let tensors: Vec<(String, HostTensor)> = (0..4)
            .map(|i| (format!("layer_{shard}/w{i}"), random_tensor(&mut rng, DType::F32, &[4 + i, 3])))
            .collect();
        let items: Vec<SaveItem> = tensors.iter().map(|(n, t)| SaveItem { name: n, slice_spec: "", tensor: t }).collect();
        let p = prefix(&dir, &format!("part-{shard}"));
        tf_io::save_v2(&p, &items)?;
        parts.push(p);
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    tf_io::merge_v2(&refs, &prefix(&dir, "ckpt"))?;

    // Partitioned variables: split on axis 0 in three, on the last axis in two, and one split
    // across two shards. (TF's sliced restore rejects f16, so the shard-split one is f32.)
    let dir = root.join("partitioned");
    fresh_dir(&dir)?;
    let part0 = [random_tensor(&mut rng, DType::F32, &[4, 4]), random_tensor(&mut rng, DType::F32, &[3, 4]), random_tensor(&mut rng, DType::F32, &[3, 4])];
    let part1 = [random_tensor(&mut rng, DType::F64, &[2, 3, 2]), random_tensor(&mut rng, DType::F64, &[2, 3, 3])];
    let whole = random_tensor(&mut rng, DType::F32, &[5]);
    let items = vec![
        SaveItem { name: "part", slice_spec: "10 4 0,4:0,4", tensor: &part0[0] },
        SaveItem { name: "part", slice_spec: "10 4 4,3:0,4", tensor: &part0[1] },
        SaveItem { name: "part", slice_spec: "10 4 7,3:-", tensor: &part0[2] },
        SaveItem { name: "cols", slice_spec: "2 3 5 -:-:0,2", tensor: &part1[0] },
        SaveItem { name: "cols", slice_spec: "2 3 5 -:-:2,3", tensor: &part1[1] },
        SaveItem { name: "whole", slice_spec: "", tensor: &whole },
    ];
    tf_io::save_v2(&prefix(&dir, "ckpt"), &items)?;
    let halves = [random_tensor(&mut rng, DType::F32, &[3, 6]), random_tensor(&mut rng, DType::F32, &[3, 6])];
    let a = prefix(&dir, "tmp-a");
    let b = prefix(&dir, "tmp-b");
    tf_io::save_v2(&a, &[SaveItem { name: "emb", slice_spec: "6 6 0,3:-", tensor: &halves[0] }])?;
    tf_io::save_v2(&b, &[SaveItem { name: "emb", slice_spec: "6 6 3,3:-", tensor: &halves[1] }])?;
    tf_io::merge_v2(&[&a, &b], &prefix(&dir, "sharded"))?;

    // A V1 tensor-slice file, with a whole tensor per dtype TF can write in V1 and one sliced tensor.
    let dir = root.join("v1");
    fresh_dir(&dir)?;
    let mut named: Vec<(String, String, HostTensor)> = Vec::new();
    for dtype in [DType::F32, DType::F64, DType::I32, DType::I64, DType::I8, DType::U8, DType::I16, DType::Bool, DType::F16] {
        named.push((format!("{}/matrix", dtype.name()), String::new(), random_tensor(&mut rng, dtype, &[2, 3])));
    }
    named.push(("scalar".into(), String::new(), HostTensor::f32(vec![], &[2.5])));
    named.push(("sliced".into(), "6 2 0,2:-".into(), random_tensor(&mut rng, DType::F32, &[2, 2])));
    named.push(("sliced".into(), "6 2 2,4:-".into(), random_tensor(&mut rng, DType::F32, &[4, 2])));
    let items: Vec<SaveItem> = named.iter().map(|(n, s, t)| SaveItem { name: n, slice_spec: s, tensor: t }).collect();
    tf_io::save_v1(&prefix(&dir, "model.ckpt"), &items)?;
    println!("fixtures written to {}", root.display());
    Ok(())
}
