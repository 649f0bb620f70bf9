//! Project tasks: `cargo xtask <task>`.

use anyhow::{bail, Result};

mod fixtures;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("setup-tf") => {
            let dir = tfconv::tf_runtime::install()?;
            tfconv::tf_runtime::load()?;
            println!("TensorFlow {} ready in {}", tfconv::tf_runtime::version()?, dir.display());
        }
        Some("fixtures") => fixtures::write_all(&workspace_root().join("golden").join("formats"))?,
        _ => bail!("usage: cargo xtask <setup-tf|fixtures>"),
    }
    Ok(())
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}
