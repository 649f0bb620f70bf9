//! The OpenAI GPT numpy and torch `.pth` readers through the public API (`tfconv::source::open`
//! on the paths users type) and through `tfconv inspect`, which only knows the generic
//! `Checkpoint` trait.

mod common;

use std::path::Path;

use common::*;
use tfconv::source::numpy::{npy_bytes, shard_name, SHAPES_FILE};
use tfconv::source::{open, DType};

fn f32_le(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A one-layer GPT (width 4, 14 pieces, 276 values `i / 4`) cut into three shards of unequal length.
fn write_gpt(dir: &Path) {
    let shapes = "[[3,4],[5,4],[1,4,12],[12],[1,4,4],[4],[4],[4],[1,4,16],[16],[1,16,4],[4],[4],[4]]";
    std::fs::write(dir.join(SHAPES_FILE), shapes).unwrap();
    for (i, (a, b)) in [(0, 100), (100, 107), (107, 276)].into_iter().enumerate() {
        let data = f32_le((a..b).map(|v| v as f32 / 4.0));
        std::fs::write(dir.join(shard_name(i)), npy_bytes("<f4", &[b - a], &data)).unwrap();
    }
}

#[test]
fn numpy_folder_opens_from_any_of_its_paths() {
    let dir = tempfile::tempdir().unwrap();
    write_gpt(dir.path());
    for p in [dir.path().to_path_buf(), dir.path().join(SHAPES_FILE), dir.path().join("params_1.npy")] {
        let ck = open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(ck.format(), "openai-gpt-numpy");
        assert_eq!(ck.path(), dir.path());
        assert_eq!(ck.tensors().len(), 14);
        let info = ck.info("model/h0/attn/c_attn/w").unwrap();
        assert_eq!((info.dtype, info.shape.as_slice()), (DType::F32, [1, 4, 12].as_slice()));
        // Elements 92..108 span all three shards.
        assert_eq!(&*ck.read("model/h0/attn/c_proj/w").unwrap(), f32_le((92..108).map(|v| v as f32 / 4.0)).as_slice());
    }
}

#[test]
fn inspect_lists_a_numpy_folder() {
    let dir = tempfile::tempdir().unwrap();
    write_gpt(dir.path());
    let o = tfconv(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(openai-gpt-numpy)"), "{out}");
    let row = out.lines().find(|l| l.starts_with("model/h0/mlp/c_fc/w ")).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("float32") && row.contains("[1, 4, 16]") && row.contains("256 B"), "{row}");
    assert!(out.lines().any(|l| l.starts_with("total") && l.contains("14 tensors")), "{out}");

    let o = tfconv(&["inspect", "--json", dir.path().join("params_2.npy").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "openai-gpt-numpy");
    assert_eq!(v["tensors"].as_array().unwrap().len(), 14);
    assert_eq!(v["totals"]["weight"]["elements"], 276);

    // A big-endian shard: exit code 13 (unsupported input), the message names the shard and why.
    let bad = npy_bytes(">f4", &[7], &[0; 28]);
    std::fs::write(dir.path().join("params_1.npy"), bad).unwrap();
    let o = tfconv(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(13), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("params_1.npy") && e.contains("big-endian float32 ('>f4')"), "{e}");
    // A shard alone, without params_shapes.json: a resolution error saying what is missing.
    std::fs::remove_file(dir.path().join(SHAPES_FILE)).unwrap();
    let o = tfconv(&["inspect", dir.path().join("params_0.npy").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(9), "{}", stderr(&o));
    assert!(stderr(&o).contains("params_shapes.json is missing next to it"), "{}", stderr(&o));
}

#[test]
fn pth_files_open_in_both_containers() {
    for (file, zip) in [("xlm-zip.pth", true), ("xlm-legacy.pth", false)] {
        let path = golden("formats/pth").join(file);
        let ck = open(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((ck.format(), ck.path()), ("torch-pth", path.as_path()));
        assert_eq!(ck.tensors().len(), 17, "{file}");
        assert!(ck.tensors().iter().all(|t| t.name.starts_with("model/")), "{file}");
        // k_lin is base.t() for base = arange(12).reshape(3, 4) - 5.5: element (i, j) = base[j][i].
        let want = f32_le((0..12).map(|k| ((k % 3) * 4 + k / 3) as f32 - 5.5));
        assert_eq!(&*ck.read("model/attentions.0.k_lin.weight").unwrap(), want.as_slice(), "{file}");
        let pth = tfconv::source::PthCheckpoint::open(&path).unwrap();
        assert_eq!(pth.is_zip(), zip);
        assert_eq!(pth.metadata()["params"]["n_words"], 6);
        assert_eq!(pth.metadata()["dico_id2word"]["4"], "hello@@");
    }
}

#[test]
fn inspect_lists_a_pth_file() {
    let path = golden("formats/pth/xlm-legacy.pth");
    let o = tfconv(&["inspect", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(torch-pth)"), "{out}");
    let row = out.lines().find(|l| l.starts_with("model/dtypes.bfloat16 ")).unwrap_or_else(|| panic!("{out}"));
    assert!(row.contains("bfloat16") && row.contains("[4]") && row.contains("8 B"), "{row}");
    assert!(!out.lines().any(|l| l.starts_with("model_optimizer") || l.contains("pred_probs")), "{out}");

    let o = tfconv(&["inspect", "--json", golden("formats/pth/xlm-zip.pth").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "torch-pth");
    assert_eq!(v["tensors"].as_array().unwrap().len(), 17);

    // A truncated legacy file: exit code 10, the file and the storage named.
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("mlm_tiny.pth");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    let o = tfconv(&["inspect", cut.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(10), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("mlm_tiny.pth") && e.contains("file is truncated: storage"), "{e}");
}
