//! `cargo leakcheck adopt`: every `#[tokio::test]` of the workspace's
//! targets becomes `#[leakcheck::test]` ([`super::rewrite`]), and each member
//! that then uses leakcheck without depending on it gets the dev-dependency
//! ([`super::manifest`]). Everything is read and parsed before anything is
//! written, so a file that does not parse stops the run with nothing
//! changed; each file is then replaced atomically.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use toml_edit::DocumentMut;

use crate::cargo::manifest::{self, Source};
use crate::cargo::sources::{self, SourceFile};
use crate::cargo::vcs::{self, Allow};
use crate::cargo::workspace::{self, Workspace};
use crate::error::CliError;
use crate::{exit, output, text};

/// What `adopt` was asked to do.
#[derive(Debug)]
pub struct AdoptOptions {
    /// `--check`: write nothing, exit 1 when something would change.
    pub check: bool,
    /// `--allow-dirty` / `--allow-no-vcs`.
    pub allow: Allow,
    /// `--path`: a path dependency on this leakcheck checkout.
    pub path: Option<PathBuf>,
    /// `--manifest-path`.
    pub manifest_path: Option<PathBuf>,
}

/// A manifest being edited.
struct ManifestEdit {
    original: String,
    document: DocumentMut,
    changes: Vec<String>,
}

/// Runs the codemod; returns the exit code.
pub fn run(options: &AdoptOptions) -> Result<u8, CliError> {
    let source = match &options.path {
        Some(path) => Source::Path(
            manifest::check_leakcheck_path(path)
                .map_err(|problem| CliError::input(path, problem))?,
        ),
        None => Source::Registry,
    };
    let workspace = workspace::load(options.manifest_path.as_deref(), &[])?;
    if !options.check {
        vcs::check(&workspace.root, options.allow)?;
    }

    let mut seen = BTreeSet::new();
    let mut files: Vec<SourceFile> = Vec::new();
    let mut needing_dependency = Vec::new();
    for member in &workspace.members {
        let member_files =
            sources::module_files(&member.target_roots, &member.tokio_names, &mut seen)?;
        let uses_leakcheck = member_files
            .iter()
            .any(|f| f.rewritten.rewritten + f.rewritten.already_leakcheck > 0);
        if uses_leakcheck && !member.depends_on_leakcheck {
            needing_dependency.push(member);
        }
        files.extend(member_files);
    }

    let mut manifests: BTreeMap<PathBuf, ManifestEdit> = BTreeMap::new();
    if !needing_dependency.is_empty() {
        let root_manifest = workspace.root_manifest();
        let inherit = {
            let root = edit(&mut manifests, &root_manifest)?;
            let inherit = manifest::has_workspace_dependencies(&root.document);
            if inherit
                && manifest::add_workspace_dependency(&mut root.document, &source)
                    .map_err(|e| CliError::input(&root_manifest, e.0))?
            {
                root.changes
                    .push("leakcheck added to [workspace.dependencies]".to_owned());
            }
            inherit
        };
        for member in &needing_dependency {
            let entry = edit(&mut manifests, &member.manifest)?;
            manifest::add_dev_dependency(&mut entry.document, &source, inherit)
                .map_err(|e| CliError::input(&member.manifest, e.0))?;
            let form = if inherit {
                "leakcheck.workspace = true".to_owned()
            } else {
                match &source {
                    Source::Registry => {
                        format!("leakcheck = \"{}\"", manifest::DEFAULT_REQUIREMENT)
                    }
                    Source::Path(path) => {
                        format!("leakcheck = {{ path = \"{}\" }}", path.display())
                    }
                }
            };
            entry.changes.push(format!(
                "dev-dependency added for package `{}`: {form}",
                member.name
            ));
        }
    }

    report_macro_attributes(&workspace, &files);
    let changed_files: Vec<&SourceFile> =
        files.iter().filter(|f| f.rewritten.rewritten > 0).collect();
    let changed_manifests: Vec<(&PathBuf, &ManifestEdit)> = manifests
        .iter()
        .filter(|(_, m)| m.document.to_string() != m.original)
        .collect();
    let listing = listing(&workspace, &changed_files, &changed_manifests);
    if changed_files.is_empty() && changed_manifests.is_empty() {
        output::write_stdout(b"cargo leakcheck adopt: nothing to change\n")?;
        return Ok(exit::OK);
    }
    if options.check {
        output::write_stdout(
            format!("cargo leakcheck adopt --check: would change\n{listing}").as_bytes(),
        )?;
        return Ok(exit::LEAKS_FOUND);
    }
    for file in &changed_files {
        write(&file.path, file.rewritten.text.as_bytes())?;
    }
    for (path, edit) in &changed_manifests {
        write(path, edit.document.to_string().as_bytes())?;
    }
    let attributes: usize = changed_files.iter().map(|f| f.rewritten.rewritten).sum();
    output::write_stdout(
        format!(
            "{listing}cargo leakcheck adopt: rewrote {} in {}, edited {}; run `cargo leakcheck test`\n",
            text::count(attributes, "attribute"),
            text::count(changed_files.len(), "file"),
            text::count(changed_manifests.len(), "manifest"),
        )
        .as_bytes(),
    )?;
    Ok(exit::OK)
}

/// The manifest at `path`, parsed once for all its edits.
fn edit<'a>(
    manifests: &'a mut BTreeMap<PathBuf, ManifestEdit>,
    path: &Path,
) -> Result<&'a mut ManifestEdit, CliError> {
    if !manifests.contains_key(path) {
        let original = std::fs::read_to_string(path)
            .map_err(|err| CliError::input(path, format!("cannot be read: {err}")))?;
        let document = manifest::parse(&original).map_err(|e| CliError::input(path, e.0))?;
        manifests.insert(
            path.to_owned(),
            ManifestEdit {
                original,
                document,
                changes: Vec::new(),
            },
        );
    }
    Ok(manifests.get_mut(path).expect("inserted above"))
}

/// One line per changed file and per manifest change.
fn listing(
    workspace: &Workspace,
    files: &[&SourceFile],
    manifests: &[(&PathBuf, &ManifestEdit)],
) -> String {
    let mut out = String::new();
    for file in files {
        let _ = writeln!(
            out,
            "  {}: {} #[tokio::test] → #[leakcheck::test]",
            workspace.relative(&file.path),
            text::count(file.rewritten.rewritten, "attribute")
        );
    }
    for (path, edit) in manifests {
        for change in &edit.changes {
            let _ = writeln!(out, "  {}: {change}", workspace.relative(path));
        }
    }
    out
}

/// Warns about `#[tokio::test]` attributes inside macro bodies, which a
/// syntax-tree rewrite cannot reach.
fn report_macro_attributes(workspace: &Workspace, files: &[SourceFile]) {
    for file in files {
        for line in &file.rewritten.inside_macros {
            eprintln!(
                "cargo leakcheck adopt: warning: {}:{line}: #[tokio::test] inside a macro body was not rewritten; change it to #[leakcheck::test] by hand",
                workspace.relative(&file.path)
            );
        }
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    leakcheck::write_atomically(path, bytes).map_err(|source| CliError::Output {
        path: path.to_owned(),
        source,
    })
}
