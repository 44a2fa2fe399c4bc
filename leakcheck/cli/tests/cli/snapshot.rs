//! `leakcheck snapshot`, against one-shot servers on 127.0.0.1.

use crate::support::{Scratch, fixtures, ok_chunked, ok_with_length, run, run_in, serve_once};

fn after_snapshot() -> Vec<u8> {
    std::fs::read(fixtures().join("snapshots/after.json")).expect("fixture")
}

#[test]
fn fetches_debug_tasks_into_a_file_named_after_its_capture_time() {
    let scratch = Scratch::new("snapshot-default-name");
    let body = after_snapshot();
    let (address, server) = serve_once(ok_with_length(&body));
    let run = run_in(scratch.path(), &["snapshot", &format!("http://{address}")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr,
        "leakcheck: wrote snapshot-1790000030000.json (snapshot saved)\n"
    );
    let request = server.join().expect("server thread");
    assert!(
        request.starts_with("GET /debug/tasks HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request
            .to_ascii_lowercase()
            .contains(&format!("host: {address}\r\n")),
        "{request}"
    );
    assert_eq!(
        std::fs::read(scratch.path().join("snapshot-1790000030000.json")).expect("written"),
        body
    );
    assert_eq!(scratch.files(), ["snapshot-1790000030000.json"]);
}

#[test]
fn chunked_answers_are_reassembled_and_the_file_feeds_diff() {
    let scratch = Scratch::new("snapshot-chunked");
    let body = after_snapshot();
    let (address, server) = serve_once(ok_chunked(&body, 100));
    let output = scratch.join("later.json");
    let run = run(&[
        "snapshot",
        &format!("http://{address}/debug/tasks"),
        "-o",
        &output,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    server.join().expect("server thread");
    assert_eq!(std::fs::read(&output).expect("written"), body);
    let diff = crate::support::run(&["diff", "snapshots/before.json", &output]);
    assert_eq!(diff.code, 0, "{}", diff.stderr);
    assert!(
        diff.stdout.contains("+8 tasks in 30.0 s"),
        "{}",
        diff.stdout
    );
}

#[test]
fn an_error_status_is_a_run_error() {
    let (address, server) =
        serve_once(b"HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n\r\nnot found".to_vec());
    let url = format!("http://{address}/debug/nope");
    run(&["snapshot", &url, "-o", "-"])
        .assert_one_line_error(3, &[&url, "404 Not Found", "expected 200"]);
    server.join().expect("server thread");
}

#[test]
fn a_leak_report_is_not_a_snapshot() {
    let report =
        std::fs::read(fixtures().join("clean/server__tests__no_leak.json")).expect("fixture");
    let (address, server) = serve_once(ok_with_length(&report));
    run(&["snapshot", &format!("http://{address}"), "-o", "-"])
        .assert_one_line_error(3, &["served a leak report, expected a snapshot"]);
    server.join().expect("server thread");
}

#[test]
fn a_stalled_answer_times_out() {
    let body = after_snapshot();
    let mut response =
        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
    response.extend_from_slice(&body[..body.len() / 2]);
    let (address, server) = serve_once(response);
    // The server holds the connection open after half the body, so this ends by timeout.
    run(&[
        "snapshot",
        &format!("http://{address}"),
        "-o",
        "-",
        "--timeout",
        "500ms",
    ])
    .assert_one_line_error(3, &["no complete answer within 500 ms"]);
    server.join().expect("server thread");
}

#[test]
fn a_closed_port_is_a_run_error() {
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address");
    // The listener is dropped: nothing listens there now.
    run(&["snapshot", &format!("http://{address}"), "-o", "-"])
        .assert_one_line_error(3, &["cannot connect", "is the server running?"]);
}

#[test]
fn urls_that_are_not_http_are_input_errors() {
    run(&["snapshot", "ftp://127.0.0.1/debug/tasks"])
        .assert_one_line_error(2, &["unsupported scheme \"ftp\""]);
    run(&["snapshot", "127.0.0.1:8080"]).assert_one_line_error(
        2,
        &["expected a URL like http://127.0.0.1:8080/debug/tasks"],
    );
    run(&["snapshot", "http://127.0.0.1:http/"]).assert_one_line_error(2, &["invalid port"]);
}

#[test]
fn a_bearer_token_is_sent_from_the_flag_or_the_environment() {
    let body = after_snapshot();
    let (address, server) = serve_once(ok_with_length(&body));
    let url = format!("http://{address}");
    run(&["snapshot", &url, "-o", "-", "--token", "s3cret"]);
    let request = server.join().expect("server thread").to_ascii_lowercase();
    assert!(
        request.contains("authorization: bearer s3cret\r\n"),
        "{request}"
    );

    let (address, server) = serve_once(ok_with_length(&body));
    let run = crate::support::run_with_env(
        &["snapshot", &format!("http://{address}"), "-o", "-"],
        &[("LEAKCHECK_TOKEN", "from-env")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let request = server.join().expect("server thread").to_ascii_lowercase();
    assert!(
        request.contains("authorization: bearer from-env\r\n"),
        "{request}"
    );
}

#[test]
fn an_unauthorized_answer_says_how_to_pass_a_token() {
    let (address, server) =
        serve_once(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_vec());
    run(&["snapshot", &format!("http://{address}"), "-o", "-"])
        .assert_one_line_error(3, &["401 Unauthorized", "--token or LEAKCHECK_TOKEN"]);
    server.join().expect("server thread");
}

#[test]
fn hostile_chunk_sizes_are_errors_not_panics() {
    // A chunk size of 2^64-1 overflowed the hand-written client's bounds check.
    for size in ["ffffffffffffffff", "fffffffffffffffffffff", "-1", "zz"] {
        let response = format!(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{size}\r\nabc\r\n0\r\n\r\n"
        );
        let (address, server) = serve_once(response.into_bytes());
        let run = run(&[
            "snapshot",
            &format!("http://{address}"),
            "-o",
            "-",
            "--timeout",
            "2s",
        ]);
        assert_eq!(run.code, 3, "chunk size {size}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        server.join().expect("server thread");
    }
}

#[test]
fn timeouts_that_would_overflow_are_refused() {
    for timeout in ["999999999999999999m", "18446744073709551615s", "1e300s"] {
        let run = run(&["snapshot", "http://127.0.0.1:1", "--timeout", timeout]);
        assert_eq!(run.code, 2, "--timeout {timeout}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    run(&["snapshot", "http://127.0.0.1:1", "--timeout", "100000000s"])
        .assert_one_line_error(2, &["--timeout", "out of range"]);
}

#[test]
fn a_redirect_is_refused_naming_where_it_points() {
    let answer =
        std::fs::read(fixtures().join("corpus/http/redirect.http")).expect("corpus answer");
    let (address, server) = serve_once(answer);
    run(&["snapshot", &format!("http://{address}"), "-o", "-"]).assert_one_line_error(
        3,
        &[
            "302 Found",
            "redirects to \"http://127.0.0.1:1/debug/tasks\": give that URL instead",
        ],
    );
    server.join().expect("server thread");
}
