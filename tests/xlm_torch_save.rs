//! The `torch.save` writer behind XLM's golden files, checked against torch itself (torch 2.15 of
//! the interop environment, in a Python process without TensorFlow):
//! - for the legacy format, torch given the same object writes the same bytes, byte for byte
//!   (the storage keys, memory addresses in torch, taken from torch's file);
//! - torch loads both containers as written, with the values tfconv's reader reads.
//!
//! Needs the interop torch environment: a missing one makes these tests FAIL, never skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value as Json};
use tfconv::source::pickle::{self, Value};
use tfconv::source::{Checkpoint, PthCheckpoint};
use tfconv_models::xlm::synthetic::{self, Layout};
use tfconv_models::xlm::torch_save::{self, Py, StorageType, Storages};

fn torch_python() -> PathBuf {
    let python = tfconv::tf_runtime::cache_dir().join("interop/torch/bin/python");
    assert!(python.is_file(), "{} does not exist: run `cargo xtask interop` once to install the torch environment", python.display());
    python
}

/// Runs a Python script with torch; returns stdout.
fn python(script: &str, args: &[&Path]) -> String {
    let out = Command::new(torch_python()).arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A tagged JSON form of the object Python rebuilds it from.
fn describe(v: &Py) -> Json {
    let pairs = |kv: &[(Py, Py)]| Json::Array(kv.iter().map(|(k, x)| json!([describe(k), describe(x)])).collect());
    match v {
        Py::None => json!({"t": "none"}),
        Py::Bool(b) => json!({"t": "bool", "v": b}),
        Py::Int(i) => json!({"t": "int", "v": i}),
        Py::Float(f) => json!({"t": "float", "v": f}),
        Py::Str(s) => json!({"t": "str", "v": s}),
        Py::Tuple(xs) => json!({"t": "tuple", "v": xs.iter().map(describe).collect::<Vec<_>>()}),
        Py::List(xs) => json!({"t": "list", "v": xs.iter().map(describe).collect::<Vec<_>>()}),
        Py::Dict(kv) => json!({"t": "dict", "v": pairs(kv)}),
        Py::OrderedDict { items, metadata } => json!({"t": "odict", "v": pairs(items), "meta": metadata.as_ref().map(|m| pairs(m))}),
        Py::Tensor(t) => json!({"t": "tensor", "storage": t.storage, "offset": t.offset, "size": t.size, "stride": t.stride}),
        Py::NdArrayF64 { values, .. } => json!({"t": "ndarray", "v": values}),
        Py::Call { .. } => panic!("calls are not rebuilt"),
    }
}

/// Rebuilds the described object: every string interned (equal strings are one object, the
/// writer's model), every container fresh, tensors as views of one base tensor per storage.
const REBUILD: &str = r#"
import collections, json, sys
import numpy as np
import torch

desc = json.load(open(sys.argv[1]))
bases = []
for s in desc["storages"]:
    dtype = torch.float32 if s["kind"] == "float" else torch.int64
    bases.append(torch.frombuffer(bytearray(bytes.fromhex(s["hex"])), dtype=dtype).clone())

def build(v):
    t = v["t"]
    if t == "none": return None
    if t in ("bool", "int"): return v["v"]
    if t == "float": return float(v["v"])
    if t == "str": return sys.intern(v["v"])
    if t == "tuple": return tuple([build(x) for x in v["v"]])
    if t == "list": return [build(x) for x in v["v"]]
    if t == "dict": return {build(k): build(x) for k, x in v["v"]}
    if t == "odict":
        d = collections.OrderedDict((build(k), build(x)) for k, x in v["v"])
        if v["meta"] is not None:
            d._metadata = collections.OrderedDict((build(k), build(x)) for k, x in v["meta"])
        return d
    if t == "tensor": return bases[v["storage"]].as_strided(v["size"], v["stride"], v["offset"])
    if t == "ndarray": return np.array(v["v"], dtype=np.float64)
    raise ValueError(t)

torch.save(build(desc["obj"]), sys.argv[2], _use_new_zipfile_serialization=False)
"#;

fn storages_json(st: &Storages) -> Json {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Json::Array(
        st.0.iter().map(|s| json!({"kind": if s.kind == StorageType::Float { "float" } else { "long" }, "hex": hex(&s.bytes)})).collect(),
    )
}

/// The storage keys of a legacy file's object pickle, in order of first reference.
fn legacy_keys_in_reference_order(bytes: &[u8]) -> Vec<String> {
    let mut at = 15;
    let mut object = Value::None;
    for _ in 0..3 {
        let (v, end) = pickle::parse(bytes, at).unwrap();
        (object, at) = (v, end);
    }
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::PersistentId(pid) => {
                if let Some(Value::Str(key)) = pid.as_seq().and_then(|t| t.get(2)) {
                    if !out.contains(key) {
                        out.push(key.clone());
                    }
                }
            }
            Value::Tuple(xs) | Value::List(xs) => xs.iter().for_each(|x| walk(x, out)),
            Value::Dict(kv) => kv.iter().for_each(|(k, x)| {
                walk(k, out);
                walk(x, out)
            }),
            Value::Object(o) => {
                walk(&o.args, out);
                o.items.iter().for_each(|(k, x)| {
                    walk(k, out);
                    walk(x, out)
                });
            }
            _ => {}
        }
    }
    let mut keys = Vec::new();
    walk(&object, &mut keys);
    keys
}

/// The first difference of two byte strings, with context, for a failure message.
fn first_difference(a: &[u8], b: &[u8]) -> String {
    let i = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let window = |x: &[u8]| format!("{:?}", String::from_utf8_lossy(&x[i.saturating_sub(40)..(i + 40).min(x.len())]));
    format!("lengths {} and {}; first difference at byte {i}:\n  ours:  {}\n  torch: {}", a.len(), b.len(), window(a), window(b))
}

/// The golden legacy checkpoint's object, with numpy 2's module name (the interop numpy).
fn legacy_object() -> (Py, Storages) {
    let [_, (_, cfg, layout, _, seed)] = synthetic::golden_configs();
    synthetic::checkpoint(&cfg, &Layout { numpy_module: "numpy._core.multiarray", ..layout }, seed)
}

#[test]
fn legacy_files_are_byte_for_byte_what_torch_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = vec![("xlm-legacy checkpoint", legacy_object())];
    // A release (no trainer state, two languages) and a bare state dict with the module prefix.
    let [(_, enfr, enfr_layout, _, seed), (_, mono, _, _, _)] = synthetic::golden_configs();
    cases.push(("release", synthetic::checkpoint(&enfr, &Layout { numpy_module: "numpy._core.multiarray", ..enfr_layout }, seed)));
    let (full, st) = synthetic::checkpoint(&mono, &Layout { langs: vec!["en"], module_prefix: true, trainer_state: false, numpy_module: "numpy._core.multiarray" }, 5);
    let Py::Dict(top) = &full else { panic!() };
    let model = top.iter().find(|(k, _)| *k == Py::Str("model".into())).unwrap().1.clone();
    cases.push(("bare state dict", (model, st)));
    for (name, (obj, st)) in cases {
        let desc = tmp.path().join("desc.json");
        std::fs::write(&desc, serde_json::to_vec(&json!({"obj": describe(&obj), "storages": storages_json(&st)})).unwrap()).unwrap();
        let torch_file = tmp.path().join("torch.pth");
        python(REBUILD, &[&desc, &torch_file]);
        let theirs = std::fs::read(&torch_file).unwrap();
        // Storage i is the i-th storage referred to in both pickles.
        let torch_keys = legacy_keys_in_reference_order(&theirs);
        let order = torch_save::first_references(&obj);
        assert_eq!(torch_keys.len(), order.len(), "{name}: storages referred to");
        let mut keys = vec![String::new(); st.0.len()];
        for (rank, &i) in order.iter().enumerate() {
            keys[i] = torch_keys[rank].clone();
        }
        let ours = torch_save::legacy(&obj, &st, &keys);
        assert!(ours == theirs, "{name}: {}", first_difference(&ours, &theirs));
    }
}

/// torch.load reads what the writer writes, in both containers, with the values tfconv reads.
#[test]
fn torch_loads_both_containers_as_tfconv_reads_them() {
    const DUMP: &str = r#"
import json, sys, torch
obj = torch.load(sys.argv[1], weights_only=False)
out = {k: [list(t.shape), t.contiguous().numpy().tobytes().hex()] for k, t in obj["model"].items()}
print(json.dumps({"model": out, "params": {k: v for k, v in obj["params"].items() if isinstance(v, (int, float, str, bool))},
                  "words": len(obj["dico_word2id"]), "tied": obj["model"]["embeddings.weight"].data_ptr() == obj["model"]["pred_layer.proj.weight"].data_ptr()}))
"#;
    let tmp = tempfile::tempdir().unwrap();
    let [(_, cfg, layout, _, seed), _] = synthetic::golden_configs();
    for zip in [true, false] {
        let path = tmp.path().join(if zip { "zip.pth" } else { "legacy.pth" });
        std::fs::write(&path, synthetic::pth_bytes(&cfg, &layout, seed, zip)).unwrap();
        let loaded: Json = serde_json::from_str(&python(DUMP, &[&path])).unwrap();
        let ck = PthCheckpoint::open(&path).unwrap();
        assert_eq!(ck.is_zip(), zip);
        let model = loaded["model"].as_object().unwrap();
        assert_eq!(model.len(), ck.tensors().len(), "zip {zip}");
        for t in ck.tensors() {
            let key = t.name.strip_prefix("model/").unwrap();
            let hex: String = ck.read(&t.name).unwrap().iter().map(|x| format!("{x:02x}")).collect();
            assert_eq!(model[key], json!([t.shape, hex]), "zip {zip}: {key}");
        }
        assert_eq!(loaded["tied"], json!(true), "zip {zip}: the head's weight is the embeddings' storage");
        assert_eq!(loaded["words"], json!(cfg.n_words));
        let meta = ck.metadata();
        for (k, v) in loaded["params"].as_object().unwrap() {
            assert_eq!(&meta["params"][k], v, "zip {zip}: params.{k}");
        }
    }
}
