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
        request.contains(&format!("Host: {address}\r\n")),
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
        .assert_one_line_error(3, &["cannot connect to", "is the server running?"]);
}

#[test]
fn urls_that_are_not_plain_http_are_input_errors() {
    run(&["snapshot", "https://127.0.0.1:8443/debug/tasks"])
        .assert_one_line_error(2, &["https is not supported"]);
    run(&["snapshot", "127.0.0.1:8080"]).assert_one_line_error(
        2,
        &["expected a URL like http://127.0.0.1:8080/debug/tasks"],
    );
}
