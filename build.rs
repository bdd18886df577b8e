//! Link settings of the `leadpipe` binary on x86-64 Linux with glibc, where the Rust
//! toolchain links with its own LLD (docs/BENCHMARKS.md, "seventh pass").
//!
//! - The functions the daemon runs while it starts and serves intake are laid out next to
//!   each other, in the order `deploy/leadpipe.link-order` gives (made by
//!   `scripts/link-order.sh`). The kernel maps a program's code 64 KiB at a time around
//!   each page it runs, so code run once at start-up but scattered over the whole
//!   binary kept most of it resident; packed together it keeps 8 MiB less.
//! - Relative relocations are packed (`DT_RELR`, glibc 2.36 or later), so the loader
//!   reads a table of a few kilobytes instead of 1.4 MB at every start.
//!
//! `LEADPIPE_LINK_ORDER=off` links without both, for a linker other than LLD.

use std::env;
use std::path::Path;

const ORDER_FILE: &str = "deploy/leadpipe.link-order";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=LEADPIPE_LINK_ORDER");
    let target = |key: &str| env::var(key).unwrap_or_default();
    let lld_by_default = target("CARGO_CFG_TARGET_OS") == "linux"
        && target("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && target("CARGO_CFG_TARGET_ENV") == "gnu";
    if !lld_by_default || env::var("LEADPIPE_LINK_ORDER").as_deref() == Ok("off") {
        return;
    }
    let order = Path::new(&target("CARGO_MANIFEST_DIR")).join(ORDER_FILE);
    // The linker reads a copy kept with this script's output, not the clone's file:
    // clones sharing one build directory (scripts/test.sh's cache) reuse this output, and
    // a path into a clone since deleted would fail every later link.
    let copy = Path::new(&target("OUT_DIR")).join("leadpipe.link-order");
    if order.is_file() && std::fs::copy(&order, &copy).is_ok() {
        // A symbol the list names but this build lacks (a renamed function, another
        // toolchain's standard library) is skipped: the list only ever costs locality.
        println!(
            "cargo:rustc-link-arg-bin=leadpipe=-Wl,--symbol-ordering-file={}",
            copy.display()
        );
        println!("cargo:rustc-link-arg-bin=leadpipe=-Wl,--no-warn-symbol-ordering");
    }
    println!("cargo:rustc-link-arg-bin=leadpipe=-Wl,-z,pack-relative-relocs");
}
