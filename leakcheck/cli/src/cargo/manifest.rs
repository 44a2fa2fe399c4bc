//! The manifest half of `cargo leakcheck adopt`: the leakcheck
//! dev-dependency added with `toml_edit`, which keeps every other byte of the
//! manifest (comments, order, formatting) as it was.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, InlineTable, Item, Table, value};

use crate::cargo::workspace::LEAKCHECK_PACKAGE;

/// The version requirement `adopt` writes without `--path`.
pub const DEFAULT_REQUIREMENT: &str = "0.1";

/// Where the dependency comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// crates.io, `leakcheck = "0.1"`.
    Registry,
    /// `leakcheck = { path = "…" }` (`--path`): a local checkout.
    Path(PathBuf),
}

impl Source {
    fn item(&self) -> Item {
        match self {
            Source::Registry => value(DEFAULT_REQUIREMENT),
            Source::Path(path) => {
                let mut table = InlineTable::new();
                table.insert("path", path.to_string_lossy().as_ref().into());
                value(table)
            }
        }
    }
}

/// A manifest that is not valid TOML, or whose dependency table is not a table.
#[derive(Debug, PartialEq, Eq)]
pub struct ManifestError(pub String);

/// Parses a manifest for editing.
pub fn parse(text: &str) -> Result<DocumentMut, ManifestError> {
    text.parse::<DocumentMut>()
        .map_err(|err| ManifestError(format!("is not valid TOML: {}", err.message())))
}

/// Whether the manifest has a `[workspace.dependencies]` table.
pub fn has_workspace_dependencies(document: &DocumentMut) -> bool {
    document
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .is_some_and(Item::is_table_like)
}

/// Adds `leakcheck` to `[workspace.dependencies]` unless it is there;
/// returns whether it added it.
pub fn add_workspace_dependency(
    document: &mut DocumentMut,
    source: &Source,
) -> Result<bool, ManifestError> {
    let dependencies = document
        .get_mut("workspace")
        .and_then(|w| w.get_mut("dependencies"))
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| ManifestError("has no [workspace.dependencies] table".to_owned()))?;
    if dependencies.contains_key(LEAKCHECK_PACKAGE) {
        return Ok(false);
    }
    dependencies.insert(LEAKCHECK_PACKAGE, source.item());
    Ok(true)
}

/// Adds the leakcheck dev-dependency: `leakcheck.workspace = true` when
/// `inherit`, else `source`'s form. `[dev-dependencies]` is created at the
/// end of the file when missing.
pub fn add_dev_dependency(
    document: &mut DocumentMut,
    source: &Source,
    inherit: bool,
) -> Result<(), ManifestError> {
    let table = document.as_table_mut();
    if !table.contains_key("dev-dependencies") {
        table.insert("dev-dependencies", Item::Table(Table::new()));
    }
    let dev = table
        .get_mut("dev-dependencies")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| ManifestError("has a `dev-dependencies` that is not a table".to_owned()))?;
    let item = if inherit {
        let mut inherited = Table::new();
        inherited.set_dotted(true);
        inherited.insert("workspace", value(true));
        Item::Table(inherited)
    } else {
        source.item()
    };
    dev.insert(LEAKCHECK_PACKAGE, item);
    Ok(())
}

/// The leakcheck package directory named by `--path`: absolute, and holding
/// a manifest of the `leakcheck` package.
pub fn check_leakcheck_path(path: &Path) -> Result<PathBuf, String> {
    let dir = std::fs::canonicalize(path)
        .map_err(|err| format!("cannot be used as the leakcheck crate directory: {err}"))?;
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).map_err(|err| {
        format!("has no readable Cargo.toml ({err}): pass the leakcheck crate's directory, e.g. `--path ../leakcheck/leakcheck`")
    })?;
    let name = text
        .parse::<DocumentMut>()
        .ok()
        .and_then(|d| d.get("package")?.get("name")?.as_str().map(str::to_owned));
    if name.as_deref() != Some(LEAKCHECK_PACKAGE) {
        return Err(format!(
            "holds package {name:?}, not `leakcheck`: pass the leakcheck crate's directory (the one with `name = \"leakcheck\"` in its Cargo.toml)"
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_dependency_keeps_the_manifest_as_it_was() {
        let text = "[package]\nname = \"app\" # the app\n\n[dev-dependencies]\n# test helpers\ntokio = { version = \"1\", features = [\"full\"] }\n\n[features]\nx = []\n";
        let mut document = parse(text).unwrap();
        add_dev_dependency(&mut document, &Source::Registry, false).unwrap();
        assert_eq!(
            document.to_string(),
            "[package]\nname = \"app\" # the app\n\n[dev-dependencies]\n# test helpers\ntokio = { version = \"1\", features = [\"full\"] }\nleakcheck = \"0.1\"\n\n[features]\nx = []\n"
        );
    }

    #[test]
    fn a_missing_table_is_created_and_inheritance_is_dotted() {
        let mut document = parse("[package]\nname = \"app\"\n").unwrap();
        add_dev_dependency(&mut document, &Source::Registry, true).unwrap();
        assert_eq!(
            document.to_string(),
            "[package]\nname = \"app\"\n\n[dev-dependencies]\nleakcheck.workspace = true\n"
        );
    }

    #[test]
    fn workspace_dependencies_get_one_entry() {
        let mut document =
            parse("[workspace]\nmembers = [\"a\"]\n\n[workspace.dependencies]\nserde = \"1\"\n")
                .unwrap();
        assert!(has_workspace_dependencies(&document));
        let source = Source::Path(PathBuf::from("/src/leakcheck"));
        assert!(add_workspace_dependency(&mut document, &source).unwrap());
        assert!(!add_workspace_dependency(&mut document, &source).unwrap());
        assert_eq!(
            document.to_string(),
            "[workspace]\nmembers = [\"a\"]\n\n[workspace.dependencies]\nserde = \"1\"\nleakcheck = { path = \"/src/leakcheck\" }\n"
        );
    }
}
