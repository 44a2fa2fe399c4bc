//! The source files of a workspace member, found as rustc finds them: from
//! each target's root file (lib, bins, tests, benches, examples) through its
//! `mod name;` declarations (`name.rs`, `name/mod.rs`, `#[path = "…"]`,
//! nested inline modules), each file parsed and rewritten once.
//!
//! Following modules instead of globbing `src/` and `tests/` keeps files
//! that are not part of any target out: trybuild fixtures under `tests/ui`,
//! which may be invalid Rust on purpose and whose expected output must not
//! change. Modules declared only by a macro or `include!` are not found.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::cargo::rewrite::{self, ModuleDecl, Rewritten};
use crate::error::CliError;

/// One source file and what the codemod would make of it.
#[derive(Debug)]
pub struct SourceFile {
    /// The file.
    pub path: PathBuf,
    /// Its text as read.
    pub original: String,
    /// The rewrite.
    pub rewritten: Rewritten,
}

/// Every module file reachable from `roots`, skipping those in `seen` (a
/// file shared by two targets or packages is rewritten once) and adding
/// the new ones to it. A file that cannot be read or parsed is an error
/// naming it; a declared module whose file does not exist (one compiled
/// out by `cfg`) is skipped, as rustc would not read it either.
pub fn module_files(
    roots: &[PathBuf],
    tokio_names: &[String],
    seen: &mut BTreeSet<PathBuf>,
) -> Result<Vec<SourceFile>, CliError> {
    let mut files = Vec::new();
    // A target root owns its directory like a `mod.rs`.
    let mut queue: Vec<(PathBuf, bool)> = roots.iter().rev().map(|r| (r.clone(), true)).collect();
    while let Some((path, owns_directory)) = queue.pop() {
        let key = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if !seen.insert(key) {
            continue;
        }
        let original = std::fs::read_to_string(&path)
            .map_err(|err| CliError::input(&path, format!("cannot be read: {err}")))?;
        let rewritten = rewrite::rewrite(&original, tokio_names).map_err(|err| {
            CliError::input(
                &path,
                format!(
                    "is not valid Rust at line {}, column {}: {}; fix it (or check that it builds) and run `cargo leakcheck adopt` again; nothing was changed",
                    err.line, err.column, err.message
                ),
            )
        })?;
        let mut next: Vec<(PathBuf, bool)> = rewritten
            .modules
            .iter()
            .filter_map(|decl| resolve(&path, owns_directory, decl))
            .collect();
        next.reverse();
        queue.extend(next);
        files.push(SourceFile {
            path,
            original,
            rewritten,
        });
    }
    Ok(files)
}

/// The file of module `decl` declared in `file`, and whether it owns its
/// directory (a `mod.rs` or a `#[path]` file); `None` when it does not exist.
fn resolve(file: &Path, owns_directory: bool, decl: &ModuleDecl) -> Option<(PathBuf, bool)> {
    let parent = file.parent().unwrap_or(Path::new("."));
    let owns_directory = owns_directory || file.file_name().is_some_and(|n| n == "mod.rs");
    let base = if owns_directory {
        parent.to_path_buf()
    } else {
        parent.join(file.file_stem().unwrap_or_default())
    };
    let candidates = match (&decl.path, decl.within.is_empty()) {
        // Outside inline modules a `#[path]` is relative to the file's own directory.
        (Some(path), true) => vec![(parent.join(path), true)],
        (Some(path), false) => vec![(nested(&base, &decl.within).join(path), true)],
        (None, _) => {
            let dir = nested(&base, &decl.within);
            vec![
                (dir.join(format!("{}.rs", decl.name)), false),
                (dir.join(&decl.name).join("mod.rs"), true),
            ]
        }
    };
    candidates.into_iter().find(|(path, _)| path.is_file())
}

fn nested(base: &Path, within: &[String]) -> PathBuf {
    within.iter().fold(base.to_path_buf(), |dir, m| dir.join(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokio() -> Vec<String> {
        vec![rewrite::TOKIO.to_owned()]
    }

    fn write(dir: &Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn modules_are_followed_as_rustc_does_and_fixtures_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(
            root,
            "src/lib.rs",
            "mod a;\nmod b;\n#[path = \"odd/place.rs\"]\nmod c;\nmod inline { mod d; }\n#[cfg(windows)]\nmod missing;\n",
        );
        write(root, "src/a.rs", "mod a_child;\n");
        write(root, "src/a/a_child.rs", "");
        write(root, "src/b/mod.rs", "mod b_child;\n");
        write(root, "src/b/b_child.rs", "");
        write(root, "src/odd/place.rs", "mod c_child;\n");
        write(root, "src/odd/c_child.rs", "");
        write(root, "src/inline/d.rs", "");
        write(root, "tests/ui/broken.rs", "fn (");
        let mut seen = BTreeSet::new();
        let files = module_files(&[root.join("src/lib.rs")], &tokio(), &mut seen).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.path.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "src/lib.rs",
                "src/a.rs",
                "src/a/a_child.rs",
                "src/b/mod.rs",
                "src/b/b_child.rs",
                "src/odd/place.rs",
                "src/odd/c_child.rs",
                "src/inline/d.rs"
            ]
        );
        // A second target sharing the files reads none of them again.
        assert!(
            module_files(&[root.join("src/lib.rs")], &tokio(), &mut seen)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_unparsable_module_names_its_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "src/lib.rs", "mod bad;\n");
        write(dir.path(), "src/bad.rs", "fn (");
        let err = module_files(
            &[dir.path().join("src/lib.rs")],
            &tokio(),
            &mut BTreeSet::new(),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("bad.rs: is not valid Rust at line 1"),
            "{message}"
        );
    }
}
