//! Finding the sibling binaries the CLI starts (`trellisd`, `trellis-proxy`, the demo's apps): next
//! to the running `trellis` first, so a build's own binaries win, then on `PATH`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Where binaries are looked for: the running executable's folder, then the `PATH` entries.
pub fn search_dirs() -> Vec<PathBuf> {
    let own = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_owned));
    own.into_iter().chain(path_dirs(std::env::var_os("PATH").as_deref())).collect()
}

/// The entries of a `PATH` value (empty entries skipped).
pub fn path_dirs(path: Option<&OsStr>) -> Vec<PathBuf> {
    path.map(|p| std::env::split_paths(p).filter(|d| !d.as_os_str().is_empty()).collect()).unwrap_or_default()
}

/// The first `dirs` entry holding a file called `name`.
pub fn locate(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// `name` next to the running executable, else on `PATH`.
pub fn find(name: &str) -> Option<PathBuf> {
    locate(name, &search_dirs())
}
