//! Cleaning up on SIGINT, SIGTERM and SIGHUP: temporary files and folders registered here are
//! removed before the process exits, so an interrupted conversion leaves nothing behind.
//!
//! A handler thread (not an async-signal context) does the removal; it holds the registry lock
//! while it works, and the writers hold it while they rename, so an interrupt never lands
//! between "moved the old output aside" and "moved the new one in".

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

fn registry() -> &'static Mutex<Vec<PathBuf>> {
    static PENDING: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    PENDING.get_or_init(|| Mutex::new(Vec::new()))
}

/// The registry, locked: push a temporary path while holding it, right after creating it, so an
/// interrupt never finds it created but unregistered; hold it across a rename that must not be
/// interrupted half way.
pub fn lock() -> MutexGuard<'static, Vec<PathBuf>> {
    registry().lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `path` is no longer temporary (renamed into place, or already removed).
pub fn untrack(path: &Path) {
    lock().retain(|p| p != path);
}

/// Installs the handler once per process; later calls do nothing.
pub fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else { return };
        std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let pending = lock();
                for path in pending.iter() {
                    remove(path);
                }
                eprintln!("interrupted: removed {} temporary output(s)", pending.len());
                std::process::exit(128 + signal);
            }
        });
    });
}

/// Removes a file or folder; a writer may still be adding files to a folder, so retry briefly.
fn remove(path: &Path) {
    for _ in 0..20 {
        let result = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(_) => return,
        };
        if result.is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
