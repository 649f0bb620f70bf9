//! Project tasks: `cargo xtask <task>`.

use std::process::Command;

use anyhow::{bail, Result};

mod bench;
mod fixtures;
mod golden;
mod interop;
mod wheel;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("setup-tf") => {
            let dir = tfconv::tf_runtime::install()?;
            tfconv::tf_runtime::load()?;
            println!("TensorFlow {} ready in {}", tfconv::tf_runtime::version()?, dir.display());
        }
        Some("golden") => {
            tfconv::tf_runtime::install()?;
            let root = workspace_root().join("golden");
            fixtures::write_all(&root.join("formats"))?;
            golden::write_all(&root)?;
        }
        Some("demo") => demo()?,
        Some("test") => {
            tfconv::tf_runtime::install()?;
            interop::torch_environment()?;
            run(Command::new("cargo").args(["test", "--workspace"]).args(&args[1..]))?;
            interop::run_suite(&workspace_root())?;
            wheel::check(&workspace_root())?;
        }
        Some("interop") => interop::run_suite(&workspace_root())?,
        Some("wheel") => wheel::check(&workspace_root())?,
        Some("bench") => bench::run(&workspace_root(), args.get(1).map(String::as_str))?,
        _ => bail!("usage: cargo xtask <setup-tf|golden|demo|test|interop|wheel|bench [convert|bert|albert|xlnet|t5|xlm|transfo-xl]>"),
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", format!("{cmd:?}").replace('"', ""));
    let status = cmd.status()?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// The main job on the bundled golden checkpoints: convert each one and verify it against
/// TensorFlow, exactly as a user would run the binary.
fn demo() -> Result<()> {
    tfconv::tf_runtime::install()?;
    let root = workspace_root();
    run(Command::new("cargo").args(["build", "--quiet", "--package", "tfconv", "--bin", "tfconv"]).current_dir(&root))?;
    let tfconv = root.join("target").join("debug").join("tfconv");
    let out = root.join("target").join("demo");
    let mut failed = Vec::new();
    let cases = tfconv_models::arch::golden_cases();
    for case in &cases {
        let ckpt = root.join("golden").join(case.dir).join(case.checkpoint);
        let dest = out.join(case.dir);
        let report = out.join(format!("{}.report.json", case.dir));
        let status = Command::new(&tfconv)
            .arg("convert")
            .arg("--tf-checkpoint").arg(&ckpt)
            .arg("--output").arg(&dest)
            .arg("--force").arg("--verify")
            .arg("--report").arg(&report)
            .status()?;
        if !status.success() {
            failed.push(case.dir.to_string());
        }
    }
    if !failed.is_empty() {
        bail!("verification failed for: {}", failed.join(", "));
    }
    println!("all {} golden checkpoints converted and verified; folders in {}", cases.len(), out.display());
    Ok(())
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}
