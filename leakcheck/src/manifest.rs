//! Crate-wide settings from the test's `Cargo.toml`: the
//! `[package.metadata.leakcheck]` table of the package under test and the
//! `[workspace.metadata.leakcheck]` table of its workspace root.
//!
//! ```toml
//! [workspace.metadata.leakcheck]
//! grace = "500ms"                      # time tasks get to finish after each test body
//! ignore = ["hyper_util::client::legacy::pool", "src/metrics.rs"]
//! ```
//!
//! The test process finds its package through `CARGO_MANIFEST_DIR` (set by
//! `cargo test` and cargo-nextest); without it there are no crate-wide
//! settings. The files are read once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

/// The crate-wide settings found in the manifests, package over workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CrateSettings {
    /// `grace`: the package's, else the workspace's.
    pub(crate) grace: Option<Duration>,
    /// `ignore`: the workspace's patterns followed by the package's.
    pub(crate) ignore: Vec<String>,
}

/// A `[*.metadata.leakcheck]` table leakcheck cannot use, or a manifest it
/// cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestError {
    pub(crate) file: PathBuf,
    pub(crate) problem: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.problem)
    }
}

/// The settings of the package in `CARGO_MANIFEST_DIR`, read once.
pub(crate) fn crate_settings() -> Result<&'static CrateSettings, &'static ManifestError> {
    static SETTINGS: OnceLock<Result<CrateSettings, ManifestError>> = OnceLock::new();
    SETTINGS
        .get_or_init(|| match std::env::var_os("CARGO_MANIFEST_DIR") {
            Some(dir) => load(Path::new(&dir)),
            None => Ok(CrateSettings::default()),
        })
        .as_ref()
}

/// Reads the package manifest in `package_dir` and its workspace root's.
pub(crate) fn load(package_dir: &Path) -> Result<CrateSettings, ManifestError> {
    let package_file = package_dir.join("Cargo.toml");
    let Some(package) = read(&package_file)? else {
        return Ok(CrateSettings::default());
    };
    let own = table(&package, &package_file, "package")?;
    let workspace = if package.contains_key("workspace") {
        table(&package, &package_file, "workspace")?
    } else {
        match workspace_manifest(&package, package_dir)? {
            Some((file, manifest)) => table(&manifest, &file, "workspace")?,
            None => LeakcheckTable::default(),
        }
    };
    let mut ignore = workspace.ignore.map(Patterns::into_vec).unwrap_or_default();
    ignore.extend(own.ignore.map(Patterns::into_vec).unwrap_or_default());
    Ok(CrateSettings {
        grace: own.grace.or(workspace.grace),
        ignore,
    })
}

/// The workspace root's manifest: `package.workspace` when the package names
/// it, else the nearest ancestor manifest with a `[workspace]` table.
fn workspace_manifest(
    package: &toml::Table,
    package_dir: &Path,
) -> Result<Option<(PathBuf, toml::Table)>, ManifestError> {
    let named = package
        .get("package")
        .and_then(|p| p.get("workspace"))
        .and_then(toml::Value::as_str);
    if let Some(root) = named {
        let file = package_dir.join(root).join("Cargo.toml");
        return Ok(read(&file)?.map(|manifest| (file, manifest)));
    }
    for dir in package_dir.ancestors().skip(1) {
        let file = dir.join("Cargo.toml");
        match read(&file)? {
            Some(manifest) if manifest.contains_key("workspace") => {
                return Ok(Some((file, manifest)));
            }
            _ => {}
        }
    }
    Ok(None)
}

fn read(file: &Path) -> Result<Option<toml::Table>, ManifestError> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(ManifestError {
                file: file.to_owned(),
                problem: format!("cannot be read: {err}"),
            });
        }
    };
    text.parse::<toml::Table>()
        .map(Some)
        .map_err(|err| ManifestError {
            file: file.to_owned(),
            problem: format!("is not valid TOML: {}", err.message()),
        })
}

/// The `[<section>.metadata.leakcheck]` table of `manifest`, or an empty one.
fn table(
    manifest: &toml::Table,
    file: &Path,
    section: &str,
) -> Result<LeakcheckTable, ManifestError> {
    let Some(value) = manifest
        .get(section)
        .and_then(|s| s.get("metadata"))
        .and_then(|m| m.get("leakcheck"))
    else {
        return Ok(LeakcheckTable::default());
    };
    let problem = |what: String| ManifestError {
        file: file.to_owned(),
        problem: format!("[{section}.metadata.leakcheck] {what}"),
    };
    let raw = RawTable::deserialize(value.clone()).map_err(|err| {
        problem(format!(
            "is not valid: {}; expected `grace = \"250ms\"` and `ignore = [\"pattern\", …]`",
            err.message().trim_end()
        ))
    })?;
    let grace = match raw.grace {
        None => None,
        Some(text) => Some(crate::duration::parse_duration(&text).ok_or_else(|| {
            problem(format!(
                "grace = {text:?} is not valid: expected a duration such as `250ms`, `2s` or `0`"
            ))
        })?),
    };
    if let Some(empty) = raw.ignore.as_ref().and_then(Patterns::find_empty) {
        return Err(problem(format!(
            "ignore has an empty pattern at position {empty}: it would ignore every task; remove it"
        )));
    }
    Ok(LeakcheckTable {
        grace,
        ignore: raw.ignore,
    })
}

#[derive(Debug, Default)]
struct LeakcheckTable {
    grace: Option<Duration>,
    ignore: Option<Patterns>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    grace: Option<String>,
    ignore: Option<Patterns>,
}

/// `ignore = "one"` or `ignore = ["one", "two"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
enum Patterns {
    One(String),
    Many(Vec<String>),
}

impl Patterns {
    fn into_vec(self) -> Vec<String> {
        match self {
            Patterns::One(pattern) => vec![pattern],
            Patterns::Many(patterns) => patterns,
        }
    }

    /// 1-based position of the first blank pattern.
    fn find_empty(&self) -> Option<usize> {
        match self {
            Patterns::One(pattern) => pattern.trim().is_empty().then_some(1),
            Patterns::Many(patterns) => patterns
                .iter()
                .position(|p| p.trim().is_empty())
                .map(|i| i + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const ROOT: &str = "[workspace]\nmembers = [\"app\"]\n\n[workspace.metadata.leakcheck]\ngrace = \"1s\"\nignore = [\"src/metrics.rs\"]\n";

    #[test]
    fn package_overrides_workspace_grace_and_adds_patterns() {
        let dir = workspace(&[
            ("Cargo.toml", ROOT),
            (
                "app/Cargo.toml",
                "[package]\nname = \"app\"\n\n[package.metadata.leakcheck]\ngrace = \"50ms\"\nignore = \"hyper_util::client\"\n",
            ),
        ]);
        let settings = load(&dir.path().join("app")).unwrap();
        assert_eq!(settings.grace, Some(Duration::from_millis(50)));
        assert_eq!(settings.ignore, ["src/metrics.rs", "hyper_util::client"]);
    }

    #[test]
    fn workspace_table_applies_to_packages_without_one() {
        let dir = workspace(&[
            ("Cargo.toml", ROOT),
            ("app/Cargo.toml", "[package]\nname = \"app\"\n"),
        ]);
        let settings = load(&dir.path().join("app")).unwrap();
        assert_eq!(settings.grace, Some(Duration::from_secs(1)));
        assert_eq!(settings.ignore, ["src/metrics.rs"]);
    }

    #[test]
    fn a_root_package_reads_its_own_workspace_table() {
        let dir = workspace(&[(
            "Cargo.toml",
            "[package]\nname = \"solo\"\n[workspace]\n[workspace.metadata.leakcheck]\ngrace = \"2s\"\n",
        )]);
        let settings = load(dir.path()).unwrap();
        assert_eq!(settings.grace, Some(Duration::from_secs(2)));
    }

    #[test]
    fn no_tables_means_no_settings() {
        let dir = workspace(&[("Cargo.toml", "[package]\nname = \"solo\"\n")]);
        assert_eq!(load(dir.path()).unwrap(), CrateSettings::default());
    }

    #[test]
    fn a_bad_table_names_the_file_and_the_key() {
        let dir = workspace(&[
            (
                "Cargo.toml",
                "[workspace]\n[workspace.metadata.leakcheck]\ngrace = \"soon\"\n",
            ),
            ("app/Cargo.toml", "[package]\nname = \"app\"\n"),
        ]);
        let err = load(&dir.path().join("app")).unwrap_err();
        assert_eq!(err.file, dir.path().join("Cargo.toml"));
        assert_eq!(
            err.problem,
            "[workspace.metadata.leakcheck] grace = \"soon\" is not valid: expected a duration such as `250ms`, `2s` or `0`"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        let dir = workspace(&[(
            "Cargo.toml",
            "[package]\nname = \"solo\"\n[package.metadata.leakcheck]\ngrace_period = \"1s\"\n",
        )]);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("[package.metadata.leakcheck] is not valid"),
            "{err}"
        );
        assert!(err.contains("grace_period"), "{err}");

        let dir = workspace(&[(
            "Cargo.toml",
            "[package]\nname = \"solo\"\n[package.metadata.leakcheck]\nignore = 3\n",
        )]);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("a string or an array of strings"), "{err}");

        let dir = workspace(&[(
            "Cargo.toml",
            "[package]\nname = \"solo\"\n[package.metadata.leakcheck]\nignore = [\"a\", \"\"]\n",
        )]);
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("empty pattern at position 2"), "{err}");
    }

    #[test]
    fn malformed_toml_names_the_file() {
        let dir = workspace(&[("Cargo.toml", "[package\nname = \"solo\"\n")]);
        let err = load(dir.path()).unwrap_err();
        assert_eq!(err.file, dir.path().join("Cargo.toml"));
        assert!(err.problem.starts_with("is not valid TOML"), "{err}");
    }
}
