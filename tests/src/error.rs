//! The chaos suite's error type: every failure names what it was doing and what to check.

use std::io;
use std::path::PathBuf;

/// A failure of the harness itself (not a failed verdict: those are results).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The server binary could not be found or built.
    ServerBinary(String),
    /// The server process did not start as the contract says.
    ServerStart(String),
    /// A server endpoint answered something the contract does not allow.
    Endpoint {
        /// The request path.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A fault (fake DNS, upstream, proxy, client) could not be set up.
    Fault {
        /// Which fault.
        what: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A result file could not be written.
    Output {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::ServerBinary(message) => write!(f, "leakcheck-server binary: {message}"),
            Error::ServerStart(message) => write!(f, "leakcheck-server did not start: {message}"),
            Error::Endpoint { path, message } => write!(f, "GET {path}: {message}"),
            Error::Fault { what, source } => write!(f, "could not set up {what}: {source}"),
            Error::Output { path, source } => {
                write!(f, "could not write {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Fault { source, .. } | Error::Output { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Shorthand for the suite's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
