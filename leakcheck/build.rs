//! Detects whether this build forces frame pointers on a target where the
//! spawn hook can walk them (`cfg(leakcheck_fp_walk)`); elsewhere it falls
//! back to DWARF unwinding; and whether tokio's task dump is available
//! (`cfg(leakcheck_taskdump)`).

fn main() {
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo::rustc-check-cfg=cfg(leakcheck_fp_walk)");
    println!("cargo::rustc-check-cfg=cfg(leakcheck_taskdump)");
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let flags: Vec<&str> = flags.split('\x1f').collect();
    let forced = flags.iter().enumerate().any(|(i, flag)| {
        let value = match flag.strip_prefix("-C") {
            Some("") => flags.get(i + 1).copied().unwrap_or(""),
            Some(rest) => rest,
            None => flag.strip_prefix("--codegen=").unwrap_or(""),
        };
        matches!(
            value.trim(),
            "force-frame-pointers"
                | "force-frame-pointers=yes"
                | "force-frame-pointers=on"
                | "force-frame-pointers=true"
                | "force-frame-pointers=y"
        )
    });
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if forced && os == "linux" && (arch == "x86_64" || arch == "aarch64") {
        println!("cargo::rustc-cfg=leakcheck_fp_walk");
    }
    // Mirrors tokio's own gate for `Handle::dump`.
    let unstable = std::env::var_os("CARGO_CFG_TOKIO_UNSTABLE").is_some();
    let feature = std::env::var_os("CARGO_FEATURE_TASKDUMP").is_some();
    if unstable
        && feature
        && os == "linux"
        && matches!(arch.as_str(), "x86" | "x86_64" | "aarch64" | "s390x")
    {
        println!("cargo::rustc-cfg=leakcheck_taskdump");
    }
}
