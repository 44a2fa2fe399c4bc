//! The real binary: the "listening" line, --help, flag errors, SIGTERM exit codes and --leak-report.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_leakcheck-server");

struct Server {
    child: Child,
    http: SocketAddr,
}

fn launch(extra: &[&str]) -> Server {
    let mut child = Command::new(BINARY)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
            "--shutdown-grace",
            "500ms",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .expect("a line on stdout");
    let fields: Vec<&str> = line.trim_end().split(' ').collect();
    assert_eq!(fields.len(), 3, "{line:?}");
    assert_eq!(fields[0], "listening");
    let http = fields[1]
        .strip_prefix("http=")
        .expect("http=ADDR")
        .parse()
        .unwrap();
    let https: SocketAddr = fields[2]
        .strip_prefix("https=")
        .expect("https=ADDR")
        .parse()
        .unwrap();
    assert_ne!(https.port(), 0);
    Server { child, http }
}

/// Sends SIGTERM and returns (exit code, stderr), bounded in time.
fn terminate(mut server: Server) -> (i32, String) {
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status.code().expect("exited, not killed");
        }
        assert!(Instant::now() < deadline, "no exit within 10s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    server
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (code, stderr)
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn sigterm_after_clean_traffic_exits_0() {
    let server = launch(&[]);
    assert!(http_get(server.http, "/work").starts_with("HTTP/1.1 200"));
    let (code, stderr) = terminate(server);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn sigterm_right_after_the_listening_line_is_a_verified_shutdown() {
    // The handlers are installed before the line is printed: a signal sent at once must not
    // meet the default action (killed, no exit code).
    let (code, stderr) = terminate(launch(&[]));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn sigterm_with_a_leak_exits_3_with_the_report() {
    let report = std::env::temp_dir().join(format!(
        "leakcheck-server-report-{}.json",
        std::process::id()
    ));
    let server = launch(&[
        "--bug",
        "detached-request-task",
        "--leak-report",
        report.to_str().unwrap(),
    ]);
    assert!(http_get(server.http, "/work").starts_with("HTTP/1.1 200"));
    let (code, stderr) = terminate(server);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("server/src/routes.rs"),
        "the report names the spawn site: {stderr}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["kind"], "leak_report");
    assert_eq!(json["sites"][0]["site"]["file"], "server/src/routes.rs");
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
