//! The workspace as cargo sees it (`cargo metadata`): its root, its target
//! directory (so a user's `CARGO_TARGET_DIR` or `build.target-dir` is
//! honoured), and each member's manifest, targets and dependencies.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::cargo::rewrite::TOKIO;
use crate::error::CliError;

/// The package name of leakcheck's core crate.
pub const LEAKCHECK_PACKAGE: &str = "leakcheck";

/// What `cargo leakcheck` needs to know about the workspace.
#[derive(Debug)]
pub struct Workspace {
    /// The directory of the workspace's root manifest.
    pub root: PathBuf,
    /// The target directory cargo would build into.
    pub target_dir: PathBuf,
    /// The members, in cargo's order.
    pub members: Vec<Member>,
}

/// One workspace member.
#[derive(Debug)]
pub struct Member {
    /// The package name.
    pub name: String,
    /// Its `Cargo.toml`.
    pub manifest: PathBuf,
    /// The root source file of each of its targets except build scripts.
    pub target_roots: Vec<PathBuf>,
    /// Whether it already depends on leakcheck (any kind, any name).
    pub depends_on_leakcheck: bool,
    /// The names tokio goes by in it: `tokio` and its renames.
    pub tokio_names: Vec<String>,
}

impl Workspace {
    /// The root manifest, `<root>/Cargo.toml`.
    pub fn root_manifest(&self) -> PathBuf {
        self.root.join("Cargo.toml")
    }

    /// `path` relative to the workspace root, for output.
    pub fn relative<'a>(&self, path: &'a Path) -> std::borrow::Cow<'a, str> {
        match path.strip_prefix(&self.root) {
            Ok(relative) => relative.to_string_lossy(),
            Err(_) => path.to_string_lossy(),
        }
    }
}

/// Runs `cargo metadata --no-deps` (with `--manifest-path` and the user's
/// `--config` arguments, which can move the target directory) and keeps what
/// `cargo leakcheck` uses.
pub fn load(manifest_path: Option<&Path>, config_args: &[OsString]) -> Result<Workspace, CliError> {
    let mut command = cargo_metadata::MetadataCommand::new();
    command.no_deps();
    if let Some(path) = manifest_path {
        command.manifest_path(path);
    }
    let options: Vec<String> = config_args
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    command.other_options(options);
    let metadata = command.exec().map_err(|err| CliError::Tool {
        command: "cargo metadata".to_owned(),
        problem: match err {
            cargo_metadata::Error::CargoMetadata { stderr } => {
                format!("failed: {}", stderr.trim().replace('\n', " "))
            }
            other => format!("failed: {other}"),
        },
    })?;
    let members = metadata
        .workspace_packages()
        .into_iter()
        .map(|package| Member {
            name: package.name.to_string(),
            manifest: package.manifest_path.clone().into_std_path_buf(),
            target_roots: package
                .targets
                .iter()
                .filter(|target| !target.is_custom_build())
                .map(|target| target.src_path.clone().into_std_path_buf())
                .collect(),
            depends_on_leakcheck: package
                .dependencies
                .iter()
                .any(|dependency| dependency.name == LEAKCHECK_PACKAGE),
            tokio_names: std::iter::once(TOKIO.to_owned())
                .chain(package.dependencies.iter().filter_map(|dependency| {
                    (dependency.name == TOKIO)
                        .then(|| dependency.rename.as_ref().map(|r| r.replace('-', "_")))
                        .flatten()
                }))
                .collect(),
        })
        .collect();
    Ok(Workspace {
        root: metadata.workspace_root.into_std_path_buf(),
        target_dir: metadata.target_directory.into_std_path_buf(),
        members,
    })
}
