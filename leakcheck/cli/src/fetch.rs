//! `leakcheck snapshot`: fetch a running server's `/debug/tasks`, check that
//! it is a leakcheck snapshot this version reads, and save it for `diff`.

use std::path::PathBuf;
use std::time::Duration;

use crate::document::{self, Document};
use crate::error::CliError;
use crate::http::{self, HttpUrl};
use crate::output;

/// Fetches the snapshot and writes it, byte for byte as served, to `output`
/// (default `snapshot-<captured_at_unix_ms>.json`). Returns the path written.
pub fn run(url: &str, output: Option<PathBuf>, timeout: Duration) -> Result<PathBuf, CliError> {
    let fetch_error = |problem: String| CliError::Fetch {
        url: url.to_owned(),
        problem,
    };
    let parsed =
        HttpUrl::parse(url).map_err(|problem| CliError::Usage(format!("{url}: {problem}")))?;
    let body = http::get(&parsed, timeout).map_err(fetch_error)?;
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
