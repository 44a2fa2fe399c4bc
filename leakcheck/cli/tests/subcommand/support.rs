//! Running `cargo-leakcheck`, copying fixture workspaces, and git.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Variables that would change what cargo or git do in the scratch copy.
const SCRUBBED_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "LEAKCHECK_BASELINE",
    "LEAKCHECK_REPORT_DIR",
    "LEAKCHECK_MODE",
    "GITHUB_ACTIONS",
];

/// Runs `cargo-leakcheck leakcheck <args>` in `dir`, as cargo would.
pub fn cargo_leakcheck(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cargo-leakcheck"));
    command.arg("leakcheck").args(args).current_dir(dir);
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    let output = command
        .envs(env.iter().copied())
        .output()
        .expect("cargo-leakcheck runs");
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// This repository's leakcheck crate, for `--path` and path dependencies.
pub fn leakcheck_crate() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the leakcheck crate directory")
}

/// A copy of a fixture workspace in a fresh directory, removed when dropped.
pub struct Copy {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Copy {
    /// Copies `tests/fixtures/<name>` (without git).
    pub fn of(name: &str) -> Copy {
        let dir = tempfile::tempdir().expect("scratch dir");
        let root = dir.path().join(Path::new(name).file_name().unwrap());
        copy_dir(&fixture(name), &root);
        Copy { _dir: dir, root }
    }

    /// Copies the fixture and commits it to a new git repository.
    pub fn committed(name: &str) -> Copy {
        let copy = Copy::of(name);
        copy.git(&["init", "--quiet"]);
        copy.git(&["add", "--all"]);
        copy.git(&["commit", "--quiet", "-m", "fixture"]);
        copy
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.root.join(file)).expect("read a file of the copy")
    }

    pub fn write(&self, file: &str, text: &str) {
        std::fs::write(self.root.join(file), text).expect("write a file of the copy");
    }

    /// Runs git in the copy, with an identity for commits.
    pub fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.invalid",
            ])
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&self.root)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .output()
            .expect("git runs");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 git output")
    }

    /// Every file of the copy (outside `.git` and `target`) with its text.
    pub fn snapshot(&self) -> Vec<(PathBuf, String)> {
        let mut files: Vec<(PathBuf, String)> = walkdir::WalkDir::new(&self.root)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git" && e.file_name() != "target")
            .map(|e| e.expect("walk the copy"))
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).expect("read");
                (e.path().to_owned(), text)
            })
            .collect();
        files.sort();
        files
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.expect("walk the fixture");
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).expect("create dir");
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}
