//! Project tasks: `cargo xtask <task>`.

use anyhow::{bail, Result};

mod fixtures;
mod golden;

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
        _ => bail!("usage: cargo xtask <setup-tf|golden>"),
    }
    Ok(())
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}
