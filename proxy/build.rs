//! Code layout of the shipped proxy binary (the static musl release build).
//!
//! The proxy's resident set is half executable code: each page of code the proxy touches is mapped in
//! (with the kernel's fault-around, 64 KiB at a time), and the default layout scatters the ~3 MB the
//! proxy runs through ~11 MB of code. For the musl release build this script links with `lld` and its
//! `--symbol-ordering-file`, placing the functions listed in `layout/symbol-order.txt` (the ones the
//! proxy runs, hottest first, recorded by `make proxy-layout`) together at the start of `.text`.
//! A listed function missing from the build is skipped, so a stale list costs memory, never
//! correctness. It also packs the relocations (RELR). Other targets and profiles link as usual.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The ordering file, relative to this crate.
const ORDER_FILE: &str = "layout/symbol-order.txt";
/// The target the layout is recorded for (symbol names differ per target).
const LAYOUT_TARGET: &str = "x86_64-unknown-linux-musl";
/// Set to any value to link without the recorded layout.
const DISABLE_ENV: &str = "TRELLIS_PROXY_NO_LAYOUT";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed={DISABLE_ENV}");
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    if target != LAYOUT_TARGET || profile != "release" || std::env::var_os(DISABLE_ENV).is_some() {
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let order = manifest.join(ORDER_FILE);
    if !order.is_file() {
        return;
    }
    let Some(lld_dir) = lld_wrapper_dir() else {
        println!("cargo:warning=no ld.lld next to rustc: linking trellis-proxy without its recorded code layout");
        return;
    };
    println!("cargo:rustc-link-arg-bins=-B{}", lld_dir.display());
    println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
    println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    // The ~18,000 relative relocations of a static PIE in the compact RELR form (musl's start-up code
    // reads it since 1.2.4): 430 KiB of `.rela.dyn`, read once at start and resident after, become a few KiB.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
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
