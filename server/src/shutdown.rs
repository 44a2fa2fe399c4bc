//! Shutdown triggers (SIGTERM, Ctrl-C), the shutdown watchdog, and writing the leak report file.

use std::io;
use std::path::Path;
use std::time::Duration;

/// Listens for SIGTERM and Ctrl-C (SIGINT) from now on, and resolves on the first. The handlers
/// are installed by this call, not when the future is first polled, so a signal sent as soon as
/// the server has announced itself is never left to the default action (which kills the process
/// without a verified shutdown). Call it inside the runtime.
pub fn signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM/SIGINT; only Ctrl-C stops the server");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Exits the process with `code` if it is still running `limit` from now: the last resort when
/// a task ignores cancellation or a worker thread is blocked, so a SIGTERM always ends the server.
pub fn exit_if_stuck(limit: Duration, code: u8) {
    let watchdog = std::thread::Builder::new().name("shutdown-watchdog".to_owned()).spawn(move || {
        std::thread::sleep(limit);
        eprintln!(
            "leakcheck-server: shutdown did not finish within {limit:?}: a task ignores cancellation \
             or a worker thread is blocked; exiting with {code}"
        );
        std::process::exit(code.into());
    });
    if let Err(error) = watchdog {
        tracing::warn!(%error, "cannot start the shutdown watchdog; shutdown is unbounded");
    }
}

/// Writes `json` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomically(path: &Path, json: &str) -> io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut temporary_name = file_name.to_owned();
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    std::fs::write(&temporary, json)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_replaced_whole() {
        let dir =
            std::env::temp_dir().join(format!("leakcheck-server-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("report.json");
        write_atomically(&path, "{\"old\":1}").unwrap();
        write_atomically(&path, "{\"new\":2}").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"new\":2}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file is left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
