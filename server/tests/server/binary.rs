//! The real binary: the "listening" line, --help, flag errors, SIGTERM exit codes and --leak-report.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chaos::server::{ServerProcess, Shutdown};

const BINARY: &str = env!("CARGO_BIN_EXE_leakcheck-server");

/// Where a test's server writes its leak report (one file per test and process).
fn report_path(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "leakcheck-server-{test}-{}.json",
        std::process::id()
    ))
}

/// Starts the binary through the chaos runner, which checks the `listening` line.
async fn launch(extra: &[&str], report: &Path) -> ServerProcess {
    let args: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
        "--shutdown-grace",
        "500ms",
    ]
    .iter()
    .chain(extra)
    .map(|arg| (*arg).to_owned())
    .collect();
    let server = ServerProcess::start(Path::new(BINARY), &args, report)
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_ne!(server.endpoints().http.port(), 0);
    assert_ne!(server.endpoints().https.port(), 0);
    server
}

/// Sends SIGTERM and waits (10 s at most) for an exit, not a kill.
async fn terminate(server: ServerProcess) -> Shutdown {
    let shutdown = server.terminate(Duration::from_secs(10)).await;
    assert!(
        !shutdown.killed && shutdown.exit_code.is_some(),
        "no exit within 10s of SIGTERM: {shutdown:?}"
    );
    shutdown
}

/// The status of `GET path`.
async fn status(server: &ServerProcess, path: &str) -> u16 {
    chaos::http::get(server.endpoints().http, path, &[], Duration::from_secs(10))
        .await
        .unwrap_or_else(|error| panic!("GET {path}: {error}"))
        .head
        .status
}

#[tokio::test]
async fn sigterm_after_clean_traffic_exits_0() {
    let report = report_path("clean");
    let server = launch(&[], &report).await;
    assert_eq!(status(&server, "/work").await, 200);
    let shutdown = terminate(server).await;
    assert_eq!(shutdown.exit_code, Some(0), "{}", shutdown.stderr);
}

#[tokio::test]
async fn sigterm_right_after_the_listening_line_is_a_verified_shutdown() {
    // The handlers are installed before the line is printed: a signal sent at once must not
    // meet the default action (killed, no exit code).
    let report = report_path("at-once");
    let shutdown = terminate(launch(&[], &report).await).await;
    assert_eq!(shutdown.exit_code, Some(0), "{}", shutdown.stderr);
}

#[tokio::test]
async fn sigterm_with_a_leak_exits_3_with_the_report() {
    let report = report_path("leak");
    let server = launch(&["--bug", "detached-request-task"], &report).await;
    assert_eq!(status(&server, "/work").await, 200);
    let shutdown = terminate(server).await;
    assert_eq!(shutdown.exit_code, Some(3), "{}", shutdown.stderr);
    assert!(
        shutdown.stderr.contains("server/src/routes.rs"),
        "the report names the spawn site: {}",
        shutdown.stderr
    );
    // The chaos toolkit's reader checks the schema and that it is a leak report.
    let leaks = shutdown
        .leak_report
        .unwrap_or_else(|| panic!("{:?}", shutdown.leak_report_error));
    assert_eq!(leaks.sites[0].site.file, "server/src/routes.rs");
    std::fs::remove_file(report).unwrap();
}

#[test]
fn help_documents_every_bug() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for bug in [
        "no-tls-handshake-timeout",
        "no-header-timeout",
        "no-dns-timeout",
        "no-pool-acquire-timeout",
        "detached-request-task",
        "no-write-timeout",
        "uncaught-panic-in-child",
    ] {
        let line = help
            .lines()
            .find(|line| {
                line.trim_start()
                    .trim_start_matches("- ")
                    .starts_with(&format!("{bug}:"))
            })
            .unwrap_or_else(|| panic!("{bug} missing from --help:\n{help}"));
        assert!(
            line.len() > bug.len() + 20,
            "{bug} has no description: {line}"
        );
    }
}

#[test]
fn bad_flags_fail_with_a_clear_message() {
    for (args, expected) in [
        (&["--header-timeout", "5"][..], "has no unit"),
        (&["--bug", "no-such-bug"][..], "no-such-bug"),
        (&["--pool-size", "0"][..], "positive"),
        (
            &[
                "--cert",
                "/nonexistent/cert.pem",
                "--key",
                "/nonexistent/key.pem",
                "--listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
            ][..],
            "/nonexistent/cert.pem",
        ),
        (
            &[
                "--upstream",
                "ftp://x/",
                "--listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
            ][..],
            "http scheme",
        ),
    ] {
        let output = Command::new(BINARY).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
