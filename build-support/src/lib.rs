//! Build-script helpers shared by the workspace's binaries: linking a binary with its recorded code
//! layout.
//!
//! A binary's resident code is the pages of code it touches, each mapped in with the kernel's
//! fault-around (64 KiB at a time, larger folios on some file systems), and the default layout
//! scatters the functions a binary runs through all of its code. [`link_with_code_layout`] links the
//! binaries of the calling crate with `lld` and its `--symbol-ordering-file`, placing the functions
//! listed in the crate's order file (the ones it runs, hottest first, recorded under callgrind by the
//! `make *-layout` targets) together at the start of `.text`. A listed function missing from the
//! build is skipped, so a stale list costs memory, never correctness. Only the target and profile the
//! list was recorded for are affected (symbol names differ per target); everything else links as usual.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The profile the layout applies to.
const RELEASE_PROFILE: &str = "release";

/// Which build of a crate's binaries gets a recorded code layout, and from where.
#[derive(Debug, Clone, Copy)]
pub struct CodeLayout<'a> {
    /// The ordering file, relative to the crate (`CARGO_MANIFEST_DIR`).
    pub order_file: &'a str,
    /// The target triple the list was recorded for, or `None` for the host's own target (the plain
    /// `cargo build --release`).
    pub target: Option<&'a str>,
    /// Set to any value to link without the recorded layout.
    pub disable_env: &'a str,
    /// Pack the relative relocations (RELR): only where the loader reads them (musl >= 1.2.4,
    /// glibc >= 2.36).
    pub pack_relative_relocs: bool,
}

/// Prints the cargo directives that link the calling crate's binaries (its release build for
/// `layout.target`) with `lld` in the order of `layout.order_file`; prints nothing else, so other
/// builds link as usual. Call it from the crate's `build.rs`.
pub fn link_with_code_layout(layout: &CodeLayout<'_>) {
    println!("cargo:rerun-if-changed={}", layout.order_file);
    println!("cargo:rerun-if-env-changed={}", layout.disable_env);
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let wanted = layout.target.unwrap_or(&host);
    if target != wanted || profile != RELEASE_PROFILE || std::env::var_os(layout.disable_env).is_some() {
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let order = manifest.join(layout.order_file);
    if !order.is_file() {
        return;
    }
    let package = std::env::var("CARGO_PKG_NAME").unwrap_or_default();
    let Some(lld_dir) = lld_wrapper_dir() else {
        println!("cargo:warning=no ld.lld next to rustc: linking {package} without its recorded code layout");
        return;
    };
    println!("cargo:rustc-link-arg-bins=-B{}", lld_dir.display());
    println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
    println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    if layout.pack_relative_relocs {
        // The relative relocations of a PIE in the compact RELR form: hundreds of KiB of `.rela.dyn`,
        // read once at start and resident after, become a few KiB.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The folder of rustup's `ld.lld` wrapper for `gcc -fuse-ld=lld` (`<sysroot>/lib/rustlib/<host>/bin/gcc-ld`).
fn lld_wrapper_dir() -> Option<PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let host = std::env::var("HOST").ok()?;
    let out = Command::new(rustc).args(["--print", "sysroot"]).output().ok()?;
    let sysroot = String::from_utf8(out.stdout).ok()?;
    let dir = Path::new(sysroot.trim()).join("lib/rustlib").join(host).join("bin/gcc-ld");
    dir.join("ld.lld").is_file().then_some(dir)
}
