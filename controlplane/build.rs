//! Code layout of the shipped trellisd binary (the static musl release build, what
//! `make bench-controlplane` runs: bench/controlplane-build.sh): linked with `lld` in the order of
//! `layout/symbol-order.txt` (the functions trellisd runs, hottest first, recorded by
//! `make controlplane-layout`), with packed relocations (RELR, read by musl's start-up code since
//! 1.2.4). How and why: `trellis-build-support`. Other targets and profiles link as usual.

use trellis_build_support::{CodeLayout, link_with_code_layout};

/// The ordering file, relative to this crate.
const ORDER_FILE: &str = "layout/symbol-order.txt";
/// The target the layout is recorded for (symbol names differ per target).
const LAYOUT_TARGET: &str = "x86_64-unknown-linux-musl";
/// Set to any value to link without the recorded layout.
const DISABLE_ENV: &str = "TRELLISD_NO_LAYOUT";

fn main() {
    link_with_code_layout(&CodeLayout {
        order_file: ORDER_FILE,
        target: Some(LAYOUT_TARGET),
        disable_env: DISABLE_ENV,
        pack_relative_relocs: true,
    });
}
