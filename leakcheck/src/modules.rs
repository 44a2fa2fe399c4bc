//! The module path a source file implies, for functions the debug info names
//! without one.
//!
//! Built with `debug = "line-tables-only"` (a common setting for faster or
//! smaller builds, and this workspace's release profile), the debug info
//! keeps only bare function names (`on_spawn`, `{closure#0}`, `connect_to`)
//! and the symbolizer prefers them to the symbol table. Reports would then
//! keep tokio's and the standard library's frames (plumbing is recognized
//! by crate) and an `ignore = "hyper_util::client"` pattern would match
//! nothing. The file each frame comes from still says where it lives: a
//! registry crate's directory names the crate, the toolchain's `library/`
//! does for std, and any other file lies in a package whose `Cargo.toml`
//! names it; the path below `src/` gives the modules, as Rust's module
//! layout does.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

/// `name` as the debug info gave it when it has a module path; otherwise
/// prefixed with the module path `file` implies (unchanged when none).
pub(crate) fn qualify(name: String, file: Option<&Path>) -> String {
    if has_path(&name) {
        return name;
    }
    match file.and_then(module_of) {
        Some(module) => format!("{module}::{name}"),
        None => name,
    }
}

/// Whether a demangled name carries a path: `a::b`, `<T as a::Trait>::f`;
/// not `f`, `f<a::T>` or `{closure#0}`.
fn has_path(name: &str) -> bool {
    name.starts_with('<')
        || name
            .split('<')
            .next()
            .is_some_and(|head| head.contains("::"))
}

/// The module path of `file`: `crate::a::b` for `.../src/a/b.rs`.
fn module_of(file: &Path) -> Option<String> {
    let file = if file.is_relative() {
        crate::paths::workspace_root().join(file)
    } else {
        file.to_path_buf()
    };
    let parts: Vec<&str> = file
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => part.to_str(),
            _ => None,
        })
        .collect();
    let (krate, below) = toolchain_crate(&parts)
        .or_else(|| registry_crate(&parts))
        .or_else(|| package_crate(&file))?;
    Some(join(&krate, &below))
}

/// `/rustc/<hash>/library/<crate>/src/...` (or a `rust-src` copy under
/// `lib/rustlib/src/rust/`): std, core, alloc and the rest of the
/// toolchain's crates.
fn toolchain_crate(parts: &[&str]) -> Option<(String, Vec<String>)> {
    let at = if parts.first() == Some(&"rustc") && parts.get(2) == Some(&"library") {
        2
    } else {
        parts
            .windows(4)
            .position(|w| w == ["rustlib", "src", "rust", "library"])?
            + 3
    };
    let krate = parts.get(at + 1)?;
    (parts.get(at + 2) == Some(&"src")).then(|| (krate.to_string(), owned(&parts[at + 3..])))
}

/// `.../registry/src/<index>/<name>-<version>/src/...`.
fn registry_crate(parts: &[&str]) -> Option<(String, Vec<String>)> {
    let at = parts
        .windows(2)
        .position(|pair| pair == ["registry", "src"])?;
    let dir = parts.get(at + 3)?;
    let name = strip_version(dir)?;
    let rest = &parts[at + 4..];
    let below = match rest.split_first() {
        Some((&"src", below)) => owned(below),
        _ => Vec::new(),
    };
    Some((name.replace('-', "_"), below))
}

/// `name` of a `name-1.2.3` (or `name-1.2.3-rc.1`) directory.
fn strip_version(dir: &str) -> Option<&str> {
    dir.char_indices().rev().find_map(|(i, c)| {
        let version = &dir[i + 1..];
        let numeric = version.split('.').take(3).count() == 3
            && version
                .split(['.', '-', '+'])
                .take(3)
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        (c == '-' && numeric && i > 0).then(|| &dir[..i])
    })
}

/// Any other file: the package of the nearest `Cargo.toml` above it. Under
/// `src/` the crate is the library (or, for `main.rs` and `bin/`, the
/// binary); a file or directory of `tests/`, `benches/` or `examples/` is
/// its own crate. An approximation where the layout does not say: a module
/// shared by several test crates (`tests/common/mod.rs`) reads `common`.
fn package_crate(file: &Path) -> Option<(String, Vec<String>)> {
    let (dir, package) = file
        .ancestors()
        .skip(1)
        .find_map(|dir| Some((dir, package_name(dir)?)))?;
    let rel = file.strip_prefix(dir).ok()?;
    let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
    let package = package.replace('-', "_");
    match parts.as_slice() {
        ["src", "main.rs"] => Some((package, Vec::new())),
        ["src", "bin", target, rest @ ..] => Some((crate_of_target(target), owned(rest))),
        ["src", rest @ ..] => Some((package, owned(rest))),
        ["tests" | "benches" | "examples", target, rest @ ..] => {
            Some((crate_of_target(target), owned(rest)))
        }
        _ => None,
    }
}

/// The crate of a target file or directory (`detect.rs`, `detect/`).
fn crate_of_target(target: &str) -> String {
    target.trim_end_matches(".rs").replace('-', "_")
}

/// `[package] name` of `dir/Cargo.toml`, read once per directory.
fn package_name(dir: &Path) -> Option<String> {
    static NAMES: OnceLock<Mutex<FxHashMap<PathBuf, Option<String>>>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    if let Some(known) = names.lock().get(dir) {
        return known.clone();
    }
    let name = std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|manifest| {
            let package = manifest.get("package")?.as_table()?;
            Some(package.get("name")?.as_str()?.to_owned())
        });
    names.lock().insert(dir.to_path_buf(), name.clone());
    name
}

/// `krate::a::b` from the file's parts below its crate's root directory:
/// `lib.rs`, `main.rs` and `mod.rs` name their directory's module.
fn join(krate: &str, below: &[String]) -> String {
    let mut path = vec![krate.to_owned()];
    if let Some((file, dirs)) = below.split_last() {
        path.extend(dirs.iter().cloned());
        let stem = file.trim_end_matches(".rs");
        if !matches!(stem, "lib" | "main" | "mod") {
            path.push(stem.to_owned());
        }
    }
    path.join("::")
}

fn owned(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| (*p).to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(path: &str) -> Option<String> {
        module_of(Path::new(path))
    }

    #[test]
    fn registry_crates_are_named_by_their_directory() {
        let registry = "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
        assert_eq!(
            module(&format!("{registry}/tokio-1.54.1/src/runtime/task/core.rs")).as_deref(),
            Some("tokio::runtime::task::core")
        );
        assert_eq!(
            module(&format!(
                "{registry}/hyper-util-0.1.19/src/client/legacy/connect/mod.rs"
            ))
            .as_deref(),
            Some("hyper_util::client::legacy::connect")
        );
        assert_eq!(
            module(&format!("{registry}/h2-0.4.12/src/lib.rs")).as_deref(),
            Some("h2")
        );
        assert_eq!(
            module(&format!("{registry}/tokio-1.0.0-rc.1/src/task.rs")).as_deref(),
            Some("tokio::task")
        );
    }

    #[test]
    fn toolchain_crates_are_named_by_library() {
        assert_eq!(
            module(
                "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/future/mod.rs"
            )
            .as_deref(),
            Some("core::future")
        );
        assert_eq!(
            module("/rustc/59807616e/library/std/src/panicking.rs").as_deref(),
            Some("std::panicking")
        );
    }

    #[test]
    fn package_files_are_named_by_their_package_and_target() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("my-app");
        std::fs::create_dir_all(root.join("src/net")).unwrap();
        std::fs::write(
            root.join("Cargo.toml"),
            "[package]\nname = \"my-app\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        let at = |rel: &str| module_of(&root.join(rel));
        assert_eq!(at("src/lib.rs").as_deref(), Some("my_app"));
        assert_eq!(at("src/net/conn.rs").as_deref(), Some("my_app::net::conn"));
        assert_eq!(at("src/net/mod.rs").as_deref(), Some("my_app::net"));
        assert_eq!(at("tests/detect.rs").as_deref(), Some("detect"));
        assert_eq!(at("src/bin/tool.rs").as_deref(), Some("tool"));
        assert_eq!(at("build.rs"), None);
    }

    #[test]
    fn only_bare_names_are_qualified() {
        let tokio = Path::new("/c/registry/src/i/tokio-1.54.1/src/task/spawn.rs");
        assert_eq!(
            qualify("spawn_inner<F>".to_owned(), Some(tokio)),
            "tokio::task::spawn::spawn_inner<F>"
        );
        assert_eq!(
            qualify("{closure#0}".to_owned(), Some(tokio)),
            "tokio::task::spawn::{closure#0}"
        );
        for full in [
            "tokio::task::spawn::spawn_inner",
            "<tokio::task::JoinHandle<T> as core::future::Future>::poll",
        ] {
            assert_eq!(qualify(full.to_owned(), Some(tokio)), full);
        }
        assert_eq!(qualify("on_spawn".to_owned(), None), "on_spawn");
    }
}
