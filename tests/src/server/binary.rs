//! Finding the `leakcheck-server` binary, building it with cargo when it is missing or stale.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Environment variable naming a server binary to use instead of building one.
pub const SERVER_BIN_ENV: &str = "CHAOS_SERVER_BIN";

/// The workspace root (the parent of this package's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The cargo target directory this executable was built into, and its profile directory name
/// (`debug`, `release`, …): `target/<profile>/chaos` or `target/<profile>/deps/<test>`.
pub fn build_location() -> Result<(PathBuf, String)> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::ServerBinary(format!("cannot locate the running executable: {e}")))?;
    let mut profile_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if profile_dir.file_name().is_some_and(|name| name == "deps") {
        profile_dir.pop();
    }
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::ServerBinary(format!("{} is not in a cargo target dir", exe.display()))
        })?;
    let target = profile_dir.parent().map(Path::to_path_buf).ok_or_else(|| {
        Error::ServerBinary(format!("{} is not in a cargo target dir", exe.display()))
    })?;
    Ok((target, profile))
}

/// The server binary to run: `$CHAOS_SERVER_BIN` if set, otherwise
/// `target/<profile>/leakcheck-server` after `cargo build -p leakcheck-server` in the same
/// target dir and profile as this executable (a no-op when it is up to date). Built once per
/// process.
pub fn server_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            find_or_build().map_err(|error| match error {
                Error::ServerBinary(message) => message,
                other => other.to_string(),
            })
        })
        .clone()
        .map_err(Error::ServerBinary)
}

fn find_or_build() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(SERVER_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::ServerBinary(format!(
                "{SERVER_BIN_ENV}={} is not a file; unset it to build the server",
                path.display()
            )))
        };
    }
    let (target, profile) = build_location()?;
    let binary = target.join(&profile).join("leakcheck-server");
    if is_newer_than_sources(&binary, &workspace_root()) {
        return Ok(binary);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let cargo_profile = if profile == "debug" {
        "dev"
    } else {
        profile.as_str()
    };
    eprintln!(
        "chaos: building leakcheck-server ({cargo_profile} profile) into {}",
        target.display()
    );
    let status = std::process::Command::new(&cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "leakcheck-server",
            "--bin",
            "leakcheck-server",
        ])
        .args(["--profile", cargo_profile])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() && binary.is_file() => Ok(binary),
        Ok(status) => Err(Error::ServerBinary(format!(
            "`cargo build -p leakcheck-server --profile {cargo_profile}` failed ({status}); \
             fix the build or set {SERVER_BIN_ENV}"
        ))),
        Err(error) if binary.is_file() => {
            eprintln!(
                "chaos: cannot run cargo ({error}); using the existing {}",
                binary.display()
            );
            Ok(binary)
        }
        Err(error) => Err(Error::ServerBinary(format!(
            "cannot run cargo to build it ({error}); set {SERVER_BIN_ENV}"
        ))),
    }
}

/// Whether `binary` exists and is newer than every file it is built from (the server's and
/// leakcheck's sources and manifests, the workspace manifest and lock file). A workspace
/// `cargo test` has just built it: asking cargo again could rebuild it with a different
/// feature set for nothing.
fn is_newer_than_sources(binary: &Path, root: &Path) -> bool {
    let Some(built) = modified(binary) else {
        return false;
    };
    let mut pending: Vec<PathBuf> = ["server", "leakcheck", "Cargo.toml", "Cargo.lock"]
        .iter()
        .map(|name| root.join(name))
        .collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                return false;
            };
            pending.extend(
                entries
                    .filter_map(|entry| entry.ok())
                    .map(|entry| entry.path()),
            );
        } else if modified(&path).is_none_or(|changed| changed > built) {
            return false;
        }
    }
    true
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_binary_older_than_a_source_is_stale() {
        let root = std::env::temp_dir().join(format!("chaos-fresh-{}", std::process::id()));
        std::fs::create_dir_all(root.join("server/src")).unwrap();
        std::fs::create_dir_all(root.join("leakcheck/src")).unwrap();
        for file in [
            "server/src/lib.rs",
            "leakcheck/src/lib.rs",
            "Cargo.toml",
            "Cargo.lock",
        ] {
            std::fs::write(root.join(file), "").unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        let binary = root.join("leakcheck-server");
        std::fs::write(&binary, "").unwrap();
        assert!(is_newer_than_sources(&binary, &root));
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(root.join("server/src/lib.rs"), "// changed").unwrap();
        assert!(!is_newer_than_sources(&binary, &root));
        assert!(!is_newer_than_sources(&root.join("missing"), &root));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_build_location_is_a_profile_dir_inside_a_target_dir() {
        let (target, profile) = build_location().unwrap();
        assert!(target.join(&profile).is_dir());
    }
}
