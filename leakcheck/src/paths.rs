//! Workspace-relative paths, so reports say `server/src/conn.rs` rather than
//! an absolute path that differs between a laptop and a CI runner.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The innermost ancestor of the current directory whose `Cargo.toml` declares
/// a `[workspace]`, else the current directory. Tests run in their package's
/// directory, so this finds the workspace that `file!()` paths are relative to.
pub(crate) fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        cwd.ancestors()
            .find(|dir| {
                std::fs::read_to_string(dir.join("Cargo.toml"))
                    .is_ok_and(|manifest| manifest.lines().any(|l| l.trim() == "[workspace]"))
            })
            .unwrap_or(&cwd)
            .to_path_buf()
    })
}

/// `path` relative to the workspace root when it lies inside it; unchanged
/// otherwise (registry crates, std).
pub(crate) fn relative(path: &str) -> String {
    let root = workspace_root();
    match Path::new(path).strip_prefix(root) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => path.to_owned(),
    }
}
