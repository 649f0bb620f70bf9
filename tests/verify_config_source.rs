//! Where verify's reference config comes from: the original config, with `--hidden-act` when
//! the user knows which GELU the training code used, and the folder's own config.json only when
//! asked for with `--trust-folder-config`.

mod common;

use common::*;

fn config_of(folder: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(folder.join("config.json")).unwrap()).unwrap()
}

#[test]
fn hidden_act_override_reaches_config_json_and_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let ckpt = golden("bert/bert_model.ckpt");
    let (ckpt, out_s) = (ckpt.to_str().unwrap(), out.to_str().unwrap());
    let o = tfconv(&["convert", "--tf-checkpoint", ckpt, "--output", out_s, "--hidden-act", "gelu_new", "--verify"]);
    assert_eq!(o.status.code(), Some(0), "the reference follows --hidden-act: {}", stderr(&o));
    assert_eq!(config_of(&out)["hidden_act"], "gelu_new");

    // The same folder audited against the config's own "gelu" (erf) must diverge...
    let o = tfconv(&["verify", "--hf-dir", out_s, "--tf-checkpoint", ckpt]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("layer.0"), "first divergence in the first layer: {}", stderr(&o));
    // ...and pass when told what the training code used.
    let o = tfconv(&["verify", "--hf-dir", out_s, "--tf-checkpoint", ckpt, "--hidden-act", "gelu_new"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let o = tfconv(&["convert", "--tf-checkpoint", ckpt, "--output", tmp.path().join("x").to_str().unwrap(), "--hidden-act", "swishy"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("hidden_act") && stderr(&o).contains("from the command line"), "{}", stderr(&o));
}

#[test]
fn the_folders_own_config_is_used_only_when_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ckpt");
    let prefix = copy_golden("bert", &dir);
    let out = tmp.path().join("out");
    let o = tfconv(&["convert", "--tf-checkpoint", prefix.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::remove_file(dir.join("bert_config.json")).unwrap();
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "--hf-dir", out.to_str().unwrap(), "--tf-checkpoint", prefix.to_str().unwrap()];
        args.extend_from_slice(extra);
        tfconv(&args)
    };
    let o = verify(&[]);
    assert_eq!(o.status.code(), Some(9), "the original config is missing: {}", stderr(&o));
    assert!(stderr(&o).contains("--trust-folder-config"), "{}", stderr(&o));
    let o = verify(&["--trust-folder-config"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("mistakes in that file cannot be detected"), "{}", stderr(&o));
}
