//! Writing results: files atomically (through the core's
//! [`leakcheck::write_atomically`], so a reader never sees half a file), `-`
//! as standard output.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::CliError;

/// The output path that means standard output.
pub const STDOUT: &str = "-";

/// Writes `bytes` to `path` (or standard output for [`STDOUT`]).
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    if path.as_os_str() == STDOUT {
        return write_stdout(bytes);
    }
    write_atomically(path, bytes).map_err(|source| CliError::Output {
        path: path.to_owned(),
        source,
    })
}

/// Prints to standard output; a closed pipe (`| head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(CliError::Output {
            path: PathBuf::from("<stdout>"),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if path.file_name().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        ));
    }
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !directory.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("directory {} does not exist", directory.display()),
        ));
    }
    leakcheck::write_atomically(path, bytes)
}
