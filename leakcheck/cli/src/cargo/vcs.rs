//! `adopt`'s safety check, as `cargo fix` does it: refuse to rewrite files
//! outside version control (`--allow-no-vcs`) or with uncommitted changes
//! (`--allow-dirty`), so every change it makes can be reviewed and undone
//! with git.
//!
//! It asks the `git` command line (`rev-parse`, `status --porcelain`)
//! rather than linking a git library: two read-only questions do not
//! justify libgit2's build, and the user's git configuration (safe
//! directories, ignore rules) applies as it does for them.

use std::path::Path;
use std::process::Command;

use crate::error::CliError;

/// How many dirty files the refusal names before "and N more".
pub const DIRTY_FILES_LISTED: usize = 5;

/// What `adopt` may write over.
#[derive(Debug, Clone, Copy)]
pub struct Allow {
    /// `--allow-dirty`.
    pub dirty: bool,
    /// `--allow-no-vcs`.
    pub no_vcs: bool,
}

/// Checks that `root` is inside a git work tree without uncommitted changes
/// (untracked files count; ignored ones do not), unless `allow` says otherwise.
pub fn check(root: &Path, allow: Allow) -> Result<(), CliError> {
    if allow.no_vcs && allow.dirty {
        return Ok(());
    }
    let inside =
        git(root, &["rev-parse", "--is-inside-work-tree"]).is_ok_and(|out| out.trim() == "true");
    if !inside {
        if allow.no_vcs {
            return Ok(());
        }
        return Err(CliError::Usage(format!(
            "{} is not in a git repository, so the rewrite could not be reviewed or undone; commit the workspace to git first, or pass --allow-no-vcs",
            root.display()
        )));
    }
    if allow.dirty {
        return Ok(());
    }
    let status = git(
        root,
        &["status", "--porcelain", "--untracked-files=all", "--", "."],
    )?;
    let dirty: Vec<&str> = status.lines().filter_map(|line| line.get(3..)).collect();
    if dirty.is_empty() {
        return Ok(());
    }
    let mut listed = dirty
        .iter()
        .take(DIRTY_FILES_LISTED)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if dirty.len() > DIRTY_FILES_LISTED {
        listed.push_str(&format!(" and {} more", dirty.len() - DIRTY_FILES_LISTED));
    }
    Err(CliError::Usage(format!(
        "{} has uncommitted changes ({listed}); commit them first so the rewrite can be reviewed on its own, or pass --allow-dirty",
        root.display()
    )))
}

fn git(dir: &Path, args: &[&str]) -> Result<String, CliError> {
    let command = format!("git {}", args.join(" "));
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|err| CliError::Tool {
            command: command.clone(),
            problem: format!("could not be started: {err}"),
        })?;
    if !output.status.success() {
        return Err(CliError::Tool {
            command,
            problem: format!(
                "failed in {}: {}",
                dir.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
