//! Finding, installing and loading the TensorFlow runtime used as the verification reference.
//!
//! tfconv links TensorFlow at run time: the default build never needs it and converting never
//! touches it. The C API ships inside the PyPI `tensorflow-cpu` wheel as `libtensorflow_cc.so.2`;
//! the `tensorflow` crate looks for `libtensorflow.so`, so a small shim directory of symlinks
//! bridges the two names.
//!
//! Before the crate sees a library, tfconv opens it itself and checks the C API is there: the
//! crate resolves functions lazily and panics on the first missing one, so a wrong file would
//! otherwise crash `verify` instead of failing with a message.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
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
/// C API functions checked before the `tensorflow` crate is given a library.
const REQUIRED_SYMBOLS: &[&str] = &[
    "TF_Version",
    "TF_NewStatus",
    "TF_GetCode",
    "TF_Message",
    "TF_NewGraph",
    "TF_NewOperation",
    "TF_FinishOperation",
    "TF_AllocateTensor",
    "TF_NewSessionOptions",
    "TF_NewSession",
    "TF_SessionRun",
];

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

/// `$TFCONV_TF_DIR`, with an empty value counting as unset.
fn tf_dir_var() -> Option<PathBuf> {
    std::env::var_os("TFCONV_TF_DIR").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// A directory holding the wheel's shared libraries, found in order: `$TFCONV_TF_DIR`, the venv
/// that `setup-tf` creates, then whatever TensorFlow `python3` can import. Only checks that the
/// files are there; [`load`] also checks they are TensorFlow.
pub fn find_library_dir() -> Option<PathBuf> {
    let has_libs = |dir: &PathBuf| dir.join(CC_LIB).is_file() && dir.join(FRAMEWORK_LIB).is_file();
    tf_dir_var()
        .filter(has_libs)
        .or_else(|| tensorflow_package_dir(&venv_dir().join("bin").join("python")))
        .or_else(|| tensorflow_package_dir(Path::new("python3")))
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

/// Checks that `dir` holds a loadable TensorFlow C library and leaves it loaded, so the
/// `tensorflow` crate's own `dlopen` of the same file (through the shim) finds it in place.
/// The error says what is wrong, naming the file.
fn open_tensorflow(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Err("no such directory".into());
    }
    if !dir.is_dir() {
        return Err("not a directory".into());
    }
    for lib in [CC_LIB, FRAMEWORK_LIB] {
        if !dir.join(lib).is_file() {
            return Err(format!("no {lib} there"));
        }
    }
    let path = dir.join(CC_LIB);
    let lib = dl::Library::open(&path).map_err(|e| {
        let prefix = format!("{}: ", path.display());
        format!("{} is not a loadable TensorFlow C library: {}", path.display(), e.strip_prefix(&prefix).unwrap_or(&e))
    })?;
    let missing: Vec<&str> = REQUIRED_SYMBOLS.iter().copied().filter(|s| !lib.has(s)).collect();
    if let [first, rest @ ..] = missing.as_slice() {
        let more = if rest.is_empty() { String::new() } else { format!(" and {} more C API functions", rest.len()) };
        return Err(format!("{} is not a TensorFlow C library (it lacks {first}{more})", path.display()));
    }
    Ok(())
}

/// Finds and opens the library directory (see [`find_library_dir`] for the order). A rejected
/// `$TFCONV_TF_DIR` is reported by a warning when another TensorFlow is used instead, and in the
/// error when none is.
fn locate() -> Result<PathBuf, String> {
    let mut rejected = Vec::new();
    if let Some(dir) = tf_dir_var() {
        match open_tensorflow(&dir) {
            Ok(()) => return Ok(dir),
            Err(why) => rejected.push(format!("TFCONV_TF_DIR={}: {why}", dir.display())),
        }
    }
    let venv_python = venv_dir().join("bin").join("python");
    for python in [venv_python.as_path(), Path::new("python3")] {
        let Some(dir) = tensorflow_package_dir(python) else { continue };
        match open_tensorflow(&dir) {
            Ok(()) => {
                if let Some(why) = rejected.first() {
                    eprintln!("warning: ignoring {why}; using the TensorFlow in {}", dir.display());
                }
                return Ok(dir);
            }
            Err(why) => rejected.push(format!("the TensorFlow that {} imports: {}: {why}", python.display(), dir.display())),
        }
    }
    let why = if rejected.is_empty() { String::new() } else { format!(" ({})", rejected.join("; ")) };
    Err(format!("TensorFlow is needed for the reference run but was not found{why}. {}", how_to_get()))
}

/// Points the symlinks of `shim` at `lib_dir`'s libraries, creating it (private to this user when
/// `private`) if needed. Links are replaced by rename, so concurrent runs never see a gap.
fn fill_shim(shim: &Path, lib_dir: &Path, private: bool) -> Result<(), String> {
    let fail = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", shim.display());
    if private {
        match std::fs::DirBuilder::new().mode(0o700).create(shim) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Its name is predictable in a shared directory: reuse it only if it is ours.
                let meta = std::fs::symlink_metadata(shim).map_err(|e| fail("cannot inspect", e))?;
                if !meta.is_dir() || meta.uid() != dl::euid() || meta.mode() & 0o022 != 0 {
                    return Err(format!("{}: exists but is not a private directory of this user", shim.display()));
                }
            }
            Err(e) => return Err(fail("cannot create", e)),
        }
    } else {
        std::fs::create_dir_all(shim).map_err(|e| fail("cannot create", e))?;
    }
    for (link, target) in [("libtensorflow.so", CC_LIB), (FRAMEWORK_LIB, FRAMEWORK_LIB)] {
        let (link, target) = (shim.join(link), lib_dir.join(target));
        if std::fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            let tmp = shim.join(format!(".{}.{}", link.file_name().unwrap().to_string_lossy(), std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&target, &tmp)
                .and_then(|()| std::fs::rename(&tmp, &link))
                .map_err(|e| fail("cannot link", e))?;
        }
    }
    Ok(())
}

/// The shim directory of symlinks the `tensorflow` crate's finder expects: in the cache directory,
/// else (read-only home, unwritable cache) in a per-user directory under the system temp dir.
fn shim_dir(lib_dir: &Path) -> Result<PathBuf, String> {
    let shim = cache_dir().join("tf-shim");
    let Err(first) = fill_shim(&shim, lib_dir, false) else { return Ok(shim) };
    let fallback = std::env::temp_dir().join(format!("tfconv-tf-shim-{}", dl::euid()));
    fill_shim(&fallback, lib_dir, true)
        .map(|()| fallback)
        .map_err(|second| format!("cannot create the TensorFlow shim directory: {first}; {second}. Set TFCONV_CACHE to a writable directory."))
}

/// Loads TensorFlow once per process. Every later call returns the first result.
pub fn load() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED.get_or_init(load_once).clone().map_err(Error::ReferenceUnavailable)
}

/// The directory TensorFlow was loaded from.
static LIBRARY_DIR: OnceLock<PathBuf> = OnceLock::new();
/// Set when TensorFlow announced at load time that its oneDNN kernels are on.
static ONEDNN_ANNOUNCED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// TensorFlow's own answer to "are the oneDNN (MKL) kernels on?": `bool tensorflow::IsMklEnabled()`.
const IS_MKL_ENABLED: &str = "_ZN10tensorflow12IsMklEnabledEv";

/// TensorFlow's answer from `IsMklEnabled()`, asked once right after loading (under the stderr
/// filter: its first call logs the oneDNN notice); None when the library does not export it.
static MKL_ENABLED: OnceLock<Option<bool>> = OnceLock::new();

/// Whether the loaded TensorFlow runs its oneDNN kernels, which round floats differently from
/// the default Eigen ones (so a report must say): TensorFlow's own `IsMklEnabled()` when the
/// library exports it, else whether it announced them at load. None before [`load`] succeeded.
pub fn onednn_enabled() -> Option<bool> {
    LIBRARY_DIR.get()?;
    Some(MKL_ENABLED.get().copied().flatten().unwrap_or_else(|| ONEDNN_ANNOUNCED.load(std::sync::atomic::Ordering::Relaxed)))
}

fn ask_is_mkl_enabled(dir: &Path) -> Option<bool> {
    for lib in [FRAMEWORK_LIB, CC_LIB] {
        let Ok(handle) = dl::Library::open(&dir.join(lib)) else { continue };
        if let Some(address) = handle.symbol(IS_MKL_ENABLED) {
            // SAFETY: the symbol is TensorFlow's `bool IsMklEnabled()`, which takes no arguments;
            // a no-argument function returning bool is called the same way from C and C++ on
            // the platforms TensorFlow ships for.
            let is_mkl_enabled: extern "C" fn() -> bool = unsafe { std::mem::transmute(address) };
            return Some(is_mkl_enabled());
        }
    }
    None
}

fn load_once() -> Result<(), String> {
    // TF's C++ logging is noise for our users; respect an explicit choice. It is read at each log
    // call, so it quiets what TF logs later (sessions, kernels), but not what is printed below.
    if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
        std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "2");
    }
    let _quiet = QuietGuard::enter();
    let lib_dir = locate()?;
    let shim = shim_dir(&lib_dir)?;
    // The crate's finder reads TENSORFLOW_DIR; set it before any thread could read the environment.
    std::env::set_var("TENSORFLOW_DIR", &shim);
    tensorflow::library::load()
        .map_err(|e| format!("could not load TensorFlow from {}: {e}. {}", lib_dir.display(), how_to_get()))?;
    let _ = MKL_ENABLED.set(ask_is_mkl_enabled(&lib_dir));
    let _ = LIBRARY_DIR.set(lib_dir);
    Ok(())
}

/// Runs `f` (a TensorFlow session run) with TensorFlow's logging noise kept off the terminal,
/// as during the load: some kernels log at error level on their first use without anything
/// having failed ("oneDNN supports DT_INT32 only on platforms with AVX-512. Falling back to the
/// default Eigen-based implementation"), which `TF_CPP_MIN_LOG_LEVEL` 2 lets through. Real
/// failures come back as the session's status, not as log lines.
pub fn quietly<T>(f: impl FnOnce() -> T) -> T {
    let _quiet = QuietGuard::enter();
    f()
}

/// The version string of the loaded TensorFlow, e.g. "2.21.0".
pub fn version() -> Result<String> {
    load()?;
    // `load` checked that TF_Version exists, so this cannot hit the crate's missing-function panic.
    tensorflow::version().map_err(|e| Error::ReferenceUnavailable(format!("TF_Version failed: {e}")))
}

/// The one stderr filter of the process, shared by every thread inside [`quietly`] or the load:
/// installed by the first to enter, removed by the last to leave. Each filter saves and restores
/// fd 2, so overlapping ones would save each other's pipes, and a forwarder whose pipe a saved
/// copy keeps open never sees its end (a test binary verifying on several threads hung so).
static QUIET: std::sync::Mutex<(usize, Option<QuietStderr>)> = std::sync::Mutex::new((0, None));

struct QuietGuard;

impl QuietGuard {
    fn enter() -> QuietGuard {
        let mut quiet = QUIET.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if quiet.0 == 0 {
            quiet.1 = QuietStderr::install();
        }
        quiet.0 += 1;
        QuietGuard
    }
}

impl Drop for QuietGuard {
    fn drop(&mut self) {
        let mut quiet = QUIET.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        quiet.0 -= 1;
        if quiet.0 == 0 {
            // Restores fd 2 and drains the forwarder (which never takes this lock).
            quiet.1 = None;
        }
    }
}

/// While alive, sends file descriptor 2 through a pipe and drops TensorFlow's log lines below
/// `TF_CPP_MIN_LOG_LEVEL`, forwarding everything else to the real stderr.
///
/// Why: loading the library runs static initialisers that log through absl before TensorFlow's
/// level check applies, so `TF_CPP_MIN_LOG_LEVEL` cannot hide them ("WARNING: All log messages
/// before absl::InitializeLog() ..." and "I0000 ... port.cc] oneDNN custom operations are on ...").
/// The oneDNN advice (`TF_ENABLE_ONEDNN_OPTS=0`) is not taken: it would change the reference's
/// numerics. The filter covers only the load; later logging obeys `TF_CPP_MIN_LOG_LEVEL`.
struct QuietStderr {
    saved: OwnedFd,
    forwarder: Option<std::thread::JoinHandle<()>>,
}

impl QuietStderr {
    fn install() -> Option<Self> {
        // Installed at level 0 too, forwarding every line, to see whether oneDNN is announced.
        let min_level = std::env::var("TF_CPP_MIN_LOG_LEVEL").ok().and_then(|l| l.trim().parse::<u8>().ok()).unwrap_or(0);
        let saved = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
        let mut real = std::fs::File::from(saved.try_clone().ok()?);
        let (reader, writer) = std::io::pipe().ok()?;
        let forwarder = std::thread::spawn(move || {
            for line in BufReader::new(reader).split(b'\n') {
                let Ok(mut line) = line else { break };
                if line.windows(ONEDNN_ON.len()).any(|w| w == ONEDNN_ON) {
                    ONEDNN_ANNOUNCED.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if min_level == 0 || !is_tf_noise(&line, min_level) {
                    line.push(b'\n');
                    let _ = real.write_all(&line);
                }
            }
        });
        // On failure `writer` is dropped here, which ends the forwarder.
        dl::redirect(writer.as_raw_fd(), 2).ok()?;
        Some(Self { saved, forwarder: Some(forwarder) })
    }
}

impl Drop for QuietStderr {
    fn drop(&mut self) {
        // Restoring fd 2 closes the pipe's last write end, so the forwarder drains it and ends.
        if dl::redirect(self.saved.as_raw_fd(), 2).is_ok() {
            if let Some(forwarder) = self.forwarder.take() {
                let _ = forwarder.join();
            }
        }
    }
}

/// What TensorFlow logs at load when its oneDNN kernels are on.
const ONEDNN_ON: &[u8] = b"oneDNN custom operations are on";

/// Whether a stderr line is TensorFlow logging below `min_level` (0 info, 1 warning, 2 error):
/// an absl/glog line such as `I0000 00:00:1712.123   42 port.cc:153] ...`, or absl's notice
/// about logging before `InitializeLog`.
fn is_tf_noise(line: &[u8], min_level: u8) -> bool {
    if line.starts_with(b"WARNING: All log messages before absl::InitializeLog() is called") {
        return true;
    }
    let severity = match line.first() {
        Some(b'I') => 0,
        Some(b'W') => 1,
        Some(b'E') => 2,
        _ => return false,
    };
    let is_log_line = line.len() > 5 && line[1..5].iter().all(u8::is_ascii_digit) && line[5] == b' ';
    is_log_line && (severity < min_level || (min_level >= 2 && is_onednn_fallback(line)))
}

/// oneDNN's notice, logged at error level, that a kernel runs on Eigen for a dtype or CPU it
/// does not cover: informational, as the rest of the line says.
fn is_onednn_fallback(line: &[u8]) -> bool {
    let has = |needle: &[u8]| line.windows(needle.len()).any(|w| w == needle);
    has(b"oneDNN supports") && has(b"Falling back to the default Eigen-based implementation")
}

/// The few libc calls std does not wrap. The symbols are always linked on Linux (std and the
/// `tensorflow` crate's loader use them); declaring them avoids a direct dependency for five calls.
mod dl {
    use super::*;

    extern "C" {
        fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
        fn dlerror() -> *mut c_char;
        fn dup2(old: c_int, new: c_int) -> c_int;
        fn geteuid() -> u32;
    }
    const RTLD_LAZY: c_int = 1;

    /// A `dlopen` handle. Never closed: unloading code whose static initialisers ran is unsafe
    /// (TensorFlow registers itself globally; a rejected library may be part TensorFlow), and an
    /// accepted library must stay loaded for the `tensorflow` crate, whose `dlopen` reuses it.
    pub struct Library(*mut c_void);

    impl Library {
        pub fn open(path: &Path) -> Result<Self, String> {
            let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            // SAFETY: a valid C string; dlerror's result is copied before the next dl call.
            let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_LAZY) };
            if handle.is_null() {
                let err = unsafe { dlerror() };
                return Err(if err.is_null() {
                    "dlopen failed".into()
                } else {
                    unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned()
                });
            }
            Ok(Library(handle))
        }

        pub fn has(&self, symbol: &str) -> bool {
            self.symbol(symbol).is_some()
        }

        pub fn symbol(&self, symbol: &str) -> Option<*mut c_void> {
            let name = CString::new(symbol).ok()?;
            // SAFETY: a live handle and a valid C string.
            let address = unsafe { dlsym(self.0, name.as_ptr()) };
            (!address.is_null()).then_some(address)
        }
    }

    /// `dup2(old, new)`.
    pub fn redirect(old: c_int, new: c_int) -> std::io::Result<()> {
        // SAFETY: plain descriptor numbers; an invalid one makes dup2 fail with EBADF.
        if unsafe { dup2(old, new) } < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }

    pub fn euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { geteuid() }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A real shared library that is not TensorFlow.
    fn libz() -> PathBuf {
        ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib64", "/lib64", "/usr/lib", "/lib"]
            .iter()
            .map(|d| Path::new(d).join("libz.so.1"))
            .find(|p| p.is_file())
            .expect("these tests need a non-TensorFlow shared library: libz.so.1")
    }

    #[test]
    fn rejects_what_is_not_tensorflow_and_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let reason = |d: &Path| open_tensorflow(d).unwrap_err();
        assert_eq!(reason(&dir.join("missing")), "no such directory");
        std::fs::write(dir.join("file"), b"").unwrap();
        assert_eq!(reason(&dir.join("file")), "not a directory");
        assert_eq!(reason(dir), format!("no {CC_LIB} there"));
        std::fs::copy(libz(), dir.join(CC_LIB)).unwrap();
        assert_eq!(reason(dir), format!("no {FRAMEWORK_LIB} there"));
        std::fs::copy(libz(), dir.join(FRAMEWORK_LIB)).unwrap();
        let lib = dir.join(CC_LIB).display().to_string();
        assert_eq!(
            reason(dir),
            format!("{lib} is not a TensorFlow C library (it lacks TF_Version and {} more C API functions)", REQUIRED_SYMBOLS.len() - 1)
        );
        // A fresh directory: the library above stays mapped, so its file must not be overwritten.
        let garbage = dir.join("garbage");
        std::fs::create_dir(&garbage).unwrap();
        for name in [CC_LIB, FRAMEWORK_LIB] {
            std::fs::write(garbage.join(name), b"not an ELF file").unwrap();
        }
        let why = reason(&garbage);
        let lib = garbage.join(CC_LIB).display().to_string();
        assert!(why.starts_with(&format!("{lib} is not a loadable TensorFlow C library: ")), "{why}");
    }

    #[test]
    fn private_shim_is_created_reused_and_refused_when_foreign() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let (lib_dir, shim) = (tmp.path().join("tf"), tmp.path().join("shim"));
        for _ in 0..2 {
            fill_shim(&shim, &lib_dir, true).unwrap();
            assert_eq!(std::fs::read_link(shim.join("libtensorflow.so")).unwrap(), lib_dir.join(CC_LIB));
            assert_eq!(std::fs::read_link(shim.join(FRAMEWORK_LIB)).unwrap(), lib_dir.join(FRAMEWORK_LIB));
        }
        assert_eq!(std::fs::metadata(&shim).unwrap().permissions().mode() & 0o777, 0o700);
        // Relinked to another TensorFlow without leftovers.
        fill_shim(&shim, &tmp.path().join("other"), true).unwrap();
        assert_eq!(std::fs::read_link(shim.join("libtensorflow.so")).unwrap(), tmp.path().join("other").join(CC_LIB));
        assert_eq!(std::fs::read_dir(&shim).unwrap().count(), 2);
        // A world-writable directory or a symlink under the predictable name is not reused.
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(fill_shim(&shim, &lib_dir, true).unwrap_err().contains("not a private directory"));
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        assert!(fill_shim(&link, &lib_dir, true).unwrap_err().contains("not a private directory"));
        // Under a regular file nothing can be created, whoever runs the test.
        std::fs::write(tmp.path().join("afile"), b"").unwrap();
        let why = fill_shim(&tmp.path().join("afile").join("shim"), &lib_dir, false).unwrap_err();
        assert!(why.contains("afile/shim: cannot create"), "{why}");
    }

    #[test]
    fn overlapping_quiet_sections_on_many_threads_all_end() {
        let (done, finished) = std::sync::mpsc::channel();
        for t in 0..8 {
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    quietly(|| {
                        eprintln!("thread {t} pass {i}");
                        std::thread::sleep(std::time::Duration::from_micros(300 * (t as u64 % 3)));
                    });
                }
                done.send(t).unwrap();
            });
        }
        for _ in 0..8 {
            // Before the shared filter, an inner section's saved copy of an outer one's pipe kept
            // the outer forwarder waiting forever.
            finished.recv_timeout(std::time::Duration::from_secs(60)).expect("a quiet section never ended");
        }
        assert_eq!(QUIET.lock().unwrap().0, 0);
    }

    #[test]
    fn only_tensorflow_log_lines_below_the_level_are_noise() {
        let absl = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR";
        let info = b"I0000 00:00:1796190097.873171   11005 port.cc:153] oneDNN custom operations are on.";
        let warning = b"W0000 00:00:1796190097.873171   11005 cpu_feature_guard.cc:227] something";
        let error = b"E0000 00:00:1796190097.873171   11005 session.cc:12] a real problem";
        assert!(is_tf_noise(absl, 2) && is_tf_noise(info, 2) && is_tf_noise(warning, 2));
        assert!(!is_tf_noise(error, 2));
        assert!(is_tf_noise(info, 1) && !is_tf_noise(warning, 1));
        assert!(is_tf_noise(error, 3));
        let fallback = b"E0000 00:00:1796223790.995365    9949 util.cc:131] oneDNN supports DT_INT32 only on platforms with AVX-512. Falling back to the default Eigen-based implementation if present.";
        assert!(is_tf_noise(fallback, 2) && !is_tf_noise(fallback, 1));
        for ours in [&b"error: TensorFlow is needed"[..], b"Illegal instruction", b"I1", b"", b"warning: ignoring TFCONV_TF_DIR=x"] {
            assert!(!is_tf_noise(ours, 3), "{}", String::from_utf8_lossy(ours));
        }
    }
}
