//! Puts `memory.x` on the linker's search path, where cortex-m-rt's `link.x` includes it, and
//! passes the linker scripts (`link.x` of cortex-m-rt, `defmt.x` of defmt) to the binary's link
//! only, so that a user's `RUSTFLAGS` neither needs them nor breaks them.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
}
