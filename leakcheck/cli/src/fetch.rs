//! `leakcheck snapshot`: fetch a running server's `/debug/tasks`, check that
//! it is a leakcheck snapshot this version reads, and save it for `diff`.

use std::path::PathBuf;

use crate::document::{self, Document};
use crate::error::CliError;
use crate::http::{Client, ClientOptions};
use crate::output;

/// Fetches the snapshot and writes it, byte for byte as served, to `output`
/// (default `snapshot-<captured_at_unix_ms>.json`). Returns the path written.
pub fn run(
    url: &str,
    output: Option<PathBuf>,
    options: &ClientOptions,
) -> Result<PathBuf, CliError> {
    let client = Client::new(url, options)?;
    let fetch_error = |problem: String| CliError::Fetch {
        url: client.url().to_owned(),
        problem,
    };
    let body = client.get().map_err(fetch_error)?;
    let snapshot = match document::parse(&body).map_err(fetch_error)? {
        Document::Snapshot(snapshot) => snapshot,
        Document::Report(_) => {
            return Err(fetch_error(
                "served a leak report, expected a snapshot (is this /debug/tasks?)".to_owned(),
            ));
        }
    };
    let path = output.unwrap_or_else(|| {
        PathBuf::from(format!("snapshot-{}.json", snapshot.captured_at_unix_ms))
    });
    output::write(&path, &body)?;
    Ok(path)
}
