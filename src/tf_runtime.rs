//! Finding, installing and loading the TensorFlow runtime used as the verification reference.
//!
//! tfconv links TensorFlow at run time: the default build never needs it and converting never
//! touches it. The C API ships inside the PyPI `tensorflow-cpu` wheel as `libtensorflow_cc.so.2`;
//! the `tensorflow` crate looks for `libtensorflow.so`, so a small shim directory of symlinks
//! bridges the two names.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The TensorFlow release the reference is pinned to.
pub const TF_VERSION: &str = "2.21.0";
/// The PyPI package providing it.
pub const TF_PACKAGE: &str = "tensorflow-cpu";

const CC_LIB: &str = "libtensorflow_cc.so.2";
const FRAMEWORK_LIB: &str = "libtensorflow_framework.so.2";

/// Where tfconv keeps what it installs: `$TFCONV_CACHE`, else `$XDG_CACHE_HOME/tfconv`, else `~/.cache/tfconv`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TFCONV_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("tfconv");
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("tfconv")
}

/// The virtual environment that `tfconv setup-tf` creates.
pub fn venv_dir() -> PathBuf {
    cache_dir().join(format!("{TF_PACKAGE}-{TF_VERSION}")).join("venv")
}

/// How a user gets the reference runtime; appended to every "TensorFlow unavailable" error.
pub fn how_to_get() -> String {
    format!(
        "Install the pinned reference runtime with `tfconv setup-tf` (or `cargo xtask setup-tf` in a \
         checkout); it creates a virtual environment under {} with {TF_PACKAGE}=={TF_VERSION} from PyPI. \
         Alternatively `pip install {TF_PACKAGE}=={TF_VERSION}` into any Python, or point TFCONV_TF_DIR \
         at a directory holding {CC_LIB}.",
        cache_dir().display()
    )
}

/// A directory holding the wheel's shared libraries, found in order: `$TFCONV_TF_DIR`, the venv
/// that `setup-tf` creates, then whatever TensorFlow `python3` can import.
pub fn find_library_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TFCONV_TF_DIR") {
        let dir = PathBuf::from(dir);
        return dir.join(CC_LIB).is_file().then_some(dir);
    }
    let venv = venv_dir();
    if let Some(dir) = tensorflow_package_dir(&venv.join("bin").join("python")) {
        return Some(dir);
    }
    tensorflow_package_dir(Path::new("python3"))
}

/// Asks a Python interpreter where its `tensorflow` package lives, without importing it.
fn tensorflow_package_dir(python: &Path) -> Option<PathBuf> {
    if python.is_absolute() && !python.exists() {
        return None;
    }
    let script = "import importlib.util as u; s = u.find_spec('tensorflow'); \
                  print(s.submodule_search_locations[0] if s and s.submodule_search_locations else '')";
    let out = Command::new(python).args(["-c", script]).output().ok()?;
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    (!dir.as_os_str().is_empty() && dir.join(CC_LIB).is_file()).then_some(dir)
}

/// Creates (or refreshes) the shim directory of symlinks the `tensorflow` crate's finder expects.
fn shim_dir(lib_dir: &Path) -> Result<PathBuf> {
    let shim = cache_dir().join("tf-shim");
    std::fs::create_dir_all(&shim).map_err(|e| Error::io(&shim, e))?;
    for (link, target) in [("libtensorflow.so", CC_LIB), (FRAMEWORK_LIB, FRAMEWORK_LIB)] {
        let link = shim.join(link);
        let target = lib_dir.join(target);
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link).map_err(|e| Error::io(&link, e))?;
        }
    }
    Ok(shim)
}

/// Loads TensorFlow once per process. Every later call returns the first result.
pub fn load() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let lib_dir = find_library_dir()
                .ok_or_else(|| format!("TensorFlow is needed for the reference run but was not found. {}", how_to_get()))?;
            let shim = shim_dir(&lib_dir).map_err(|e| e.to_string())?;
            // The crate's finder reads TENSORFLOW_DIR; set it before any thread could read the environment.
            std::env::set_var("TENSORFLOW_DIR", &shim);
            // TF's C++ logging is noise for our users; respect an explicit choice.
            if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
                std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "2");
            }
            tensorflow::library::load()
                .map_err(|e| format!("could not load TensorFlow from {}: {e}. {}", lib_dir.display(), how_to_get()))
        })
        .clone()
        .map_err(Error::ReferenceUnavailable)
}

/// The version string of the loaded TensorFlow, e.g. "2.21.0".
pub fn version() -> Result<String> {
    load()?;
    tensorflow::version().map_err(|e| Error::ReferenceUnavailable(format!("TF_Version failed: {e}")))
}

/// Installs the pinned `tensorflow-cpu` into tfconv's own virtual environment. Idempotent.
pub fn install() -> Result<PathBuf> {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    if let Some(dir) = tensorflow_package_dir(&python) {
        if installed_version(&python).as_deref() == Some(TF_VERSION) {
            return Ok(dir);
        }
    }
    let run = |cmd: &mut Command| -> Result<()> {
        let status = cmd.status().map_err(|e| Error::ReferenceUnavailable(format!("could not run {cmd:?}: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::ReferenceUnavailable(format!("{cmd:?} failed with {status}")))
        }
    };
    if !python.exists() {
        eprintln!("creating virtual environment {}", venv.display());
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    eprintln!("installing {TF_PACKAGE}=={TF_VERSION} into {}", venv.display());
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .arg(format!("{TF_PACKAGE}=={TF_VERSION}")))?;
    tensorflow_package_dir(&python)
        .ok_or_else(|| Error::ReferenceUnavailable(format!("{TF_PACKAGE} installed but {CC_LIB} not found in {}", venv.display())))
}

fn installed_version(python: &Path) -> Option<String> {
    let script = format!("import importlib.metadata as m; print(m.version('{TF_PACKAGE}'))");
    let out = Command::new(python).args(["-c", &script]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
