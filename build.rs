//! Builds the in-kernel relay (`bpf/forward.c`) with clang, when there is
//! one. Without it chorus still builds: it says at start that kernel
//! forwarding was not built in and relays in userspace.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/forward.c");
    println!("cargo:rerun-if-env-changed=CHORUS_CLANG");
    println!("cargo:rustc-check-cfg=cfg(chorus_bpf)");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("forward.o");
    let clang = std::env::var("CHORUS_CLANG").unwrap_or_else(|_| "clang".into());
    // linux/bpf.h includes asm/types.h, which Debian keeps per architecture.
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64-linux-gnu",
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "",
    };
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{arch}"))
        .args(["-c", "bpf/forward.c", "-o"])
        .arg(&out)
        .output();
    match result {
        Ok(o) if o.status.success() => println!("cargo:rustc-cfg=chorus_bpf"),
        Ok(o) => println!(
            "cargo:warning=kernel forwarding not built: {clang} failed: {}",
            String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("")
        ),
        Err(e) => println!(
            "cargo:warning=kernel forwarding not built: cannot run {clang} ({e}); scripts/build-deps installs it"
        ),
    }
}
