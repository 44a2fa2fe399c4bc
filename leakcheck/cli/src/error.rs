//! The CLI's error type: every failure names the file, URL or flag involved and what is wrong.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::exit;

/// Why a command failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CliError {
    /// An input path is missing, unreadable, or not a leakcheck document this
    /// version understands.
    Input {
        /// The file or directory as given (or found in a given directory).
        path: PathBuf,
        /// What is wrong with it, as a sentence fragment.
        problem: String,
    },
    /// A report directory is empty or was never created: no tests leaked, or
    /// the reports went elsewhere (`--allow-empty` takes it as no leaks).
    NoReports {
        /// The directory as given.
        path: PathBuf,
        /// What was found, as a sentence fragment.
        problem: String,
    },
    /// The inputs are valid one by one but cannot be used together.
    Usage(String),
    /// An output file could not be written.
    Output {
        /// The output path as given.
        path: PathBuf,
        /// The underlying failure.
        source: io::Error,
    },
    /// A program `cargo leakcheck` runs (cargo, git) could not be started or
    /// failed.
    Tool {
        /// The command, as a user would type it.
        command: String,
        /// What went wrong, as a sentence fragment.
        problem: String,
    },
    /// A snapshot could not be fetched.
    Fetch {
        /// The URL as given.
        url: String,
        /// What went wrong, as a sentence fragment.
        problem: String,
    },
}

impl CliError {
    /// Shorthand for [`CliError::Input`].
    pub fn input(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        CliError::Input {
            path: path.into(),
            problem: problem.into(),
        }
    }

    /// The process exit code for this error (see [`crate::exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Input { .. } | CliError::Usage(_) => exit::INPUT_ERROR,
            CliError::Output { .. } | CliError::Fetch { .. } | CliError::Tool { .. } => {
                exit::RUN_ERROR
            }
            CliError::NoReports { .. } => exit::NO_REPORTS,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Input { path, problem } => write!(f, "{}: {problem}", path.display()),
            CliError::NoReports { path, problem } => write!(
                f,
                "{}: {problem}; no reports to read (the tests wrote none here: check LEAKCHECK_REPORT_DIR, or pass --allow-empty if no reports means no leaks)",
                path.display()
            ),
            CliError::Usage(message) => f.write_str(message),
            CliError::Output { path, source } => {
                write!(f, "{}: cannot write output: {source}", path.display())
            }
            CliError::Fetch { url, problem } => write!(f, "{url}: {problem}"),
            CliError::Tool { command, problem } => write!(f, "`{command}` {problem}"),
        }
    }
}

impl std::error::Error for CliError {}
