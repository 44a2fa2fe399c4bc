//! `leakcheck watch` and https `snapshot` against the reference server
//! (leakcheck-server, in this process, on 127.0.0.1).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use leakcheck_server::{Bug, Config, RunningServer};

use crate::support::{Scratch, run};

/// Most requests the load thread sends, whatever happens.
const MAX_REQUESTS: usize = 200;
/// Pause between two requests: a steady trickle, as a service sees.
const REQUEST_INTERVAL: Duration = Duration::from_millis(40);

fn start(bugs: Vec<Bug>) -> RunningServer {
    leakcheck_server::spawn(Config {
        bugs,
        shutdown_grace: Duration::from_millis(200),
        ..Config::default()
    })
    .expect("server starts")
}

/// Sends `GET /work` requests to `address` until `stop` is set (or
/// [`MAX_REQUESTS`]); returns how many were answered.
fn trickle(address: SocketAddr, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut answered = 0;
        for _ in 0..MAX_REQUESTS {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut stream = TcpStream::connect(address).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            stream
                .write_all(
                    b"GET /work?children=1&rounds=1 HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n",
                )
                .expect("send");
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            if answer.starts_with(b"HTTP/1.1 200") {
                answered += 1;
            }
            std::thread::sleep(REQUEST_INTERVAL);
        }
        answered
    })
}

/// What one `leakcheck watch` of a server under a steady trickle of `/work`
/// requests printed, and whether the server leaked at shutdown.
struct Watched {
    run: crate::support::Run,
    leaked_at_shutdown: bool,
}

fn watch_under_load(bugs: Vec<Bug>, extra: &[&str]) -> Watched {
    let server = start(bugs);
    let address = server.bound().http;
    // The first /debug/tasks loads this (debug) binary's symbols, which
    // takes seconds; the watch below should sample a warm server.
    let warm_up = run(&[
        "snapshot",
        &format!("http://{address}"),
        "-o",
        "-",
        "--timeout",
        "60s",
    ]);
    assert_eq!(warm_up.code, 0, "{}", warm_up.stderr);
    let stop = Arc::new(AtomicBool::new(false));
    let load = trickle(address, Arc::clone(&stop));
    let url = format!("http://{address}");
    let mut args = vec![
        "watch",
        url.as_str(),
        "--every",
        "200ms",
        "--for",
        "3s",
        "--window",
        "4",
        "--fail-on-growth",
    ];
    args.extend_from_slice(extra);
    let watch = run(&args);
    stop.store(true, Ordering::Relaxed);
    let answered = load.join().expect("load thread");
    let outcome = server.shutdown().expect("server ran");
    assert!(answered > 10, "only {answered} requests answered");
    Watched {
        run: watch,
        leaked_at_shutdown: outcome.leaks.is_some(),
    }
}

#[test]
fn watch_flags_the_detached_request_task_of_a_buggy_server() {
    let scratch = Scratch::new("watch-bug");
    let page = scratch.join("watch.html");
    let Watched {
        run: watch,
        leaked_at_shutdown,
    } = watch_under_load(vec![Bug::DetachedRequestTask], &["-o", &page]);
    assert!(leaked_at_shutdown, "the bug leaks at shutdown too");

    assert_eq!(watch.code, 1, "{}{}", watch.stdout, watch.stderr);
    let flagged: Vec<&str> = watch
        .stdout
        .lines()
        .filter(|line| line.starts_with("leakcheck watch: growing: "))
        .collect();
    assert_eq!(flagged.len(), 1, "only the keeper grows: {}", watch.stdout);
    assert!(
        flagged[0].starts_with("leakcheck watch: growing: server/src/routes.rs:"),
        "{}",
        flagged[0]
    );
    assert!(flagged[0].contains("start_lease_keeper"), "{}", flagged[0]);
    assert!(flagged[0].contains("over 4 samples"), "{}", flagged[0]);
    assert!(
        watch.stdout.contains("1 spawn site kept growing:"),
        "closing table: {}",
        watch.stdout
    );
    let html = std::fs::read_to_string(&page).expect("page written");
    assert!(html.contains("<polyline class=\"live\""), "{html}");
    assert!(html.contains("<strong>growing</strong>"), "{html}");
}

#[test]
fn watch_flags_nothing_on_the_server_with_every_defense() {
    let Watched {
        run: watch,
        leaked_at_shutdown,
    } = watch_under_load(Vec::new(), &[]);
    assert!(!leaked_at_shutdown);
    assert_eq!(watch.code, 0, "{}{}", watch.stdout, watch.stderr);
    assert!(
        watch.stdout.ends_with("no spawn site kept growing\n"),
        "{}",
        watch.stdout
    );
}

#[test]
fn watch_refuses_options_it_cannot_honour() {
    run(&["watch", "http://127.0.0.1:1", "--every", "1ms"])
        .assert_one_line_error(2, &["--every", "too short"]);
    run(&[
        "watch",
        "http://127.0.0.1:1",
        "--every",
        "1s",
        "--for",
        "2s",
    ])
    .assert_one_line_error(2, &["fewer than --window 5 samples"]);
    run(&["watch", "http://127.0.0.1:1", "--for", "99999999m"])
        .assert_one_line_error(2, &["--for", "too long"]);
    run(&[
        "watch",
        "http://127.0.0.1:1",
        "--every",
        "100ms",
        "--for",
        "1s",
    ])
    .assert_one_line_error(3, &["cannot connect"]);
}

#[test]
fn snapshot_works_over_https_with_the_servers_certificate() {
    let scratch = Scratch::new("snapshot-https");
    let server = start(Vec::new());
    let https = format!("https://127.0.0.1:{}", server.bound().https.port());
    let ca = scratch.join("server.der");
    std::fs::write(&ca, server.bound().certificate.as_ref()).expect("write certificate");
    let output = scratch.join("snapshot.json");

    let fetched = run(&["snapshot", &https, "--ca-cert", &ca, "-o", &output]);
    assert_eq!(fetched.code, 0, "{}", fetched.stderr);
    let snapshot = std::fs::read_to_string(&output).expect("written");
    assert!(
        snapshot.contains("\"kind\":\"snapshot\"") || snapshot.contains("\"kind\": \"snapshot\"")
    );

    // Without the certificate the web roots do not trust it.
    let untrusted = run(&["snapshot", &https, "-o", "-"]);
    assert_eq!(untrusted.code, 3, "{}", untrusted.stderr);
    assert!(
        untrusted
            .stderr
            .to_ascii_lowercase()
            .contains("certificate"),
        "{}",
        untrusted.stderr
    );
    server.shutdown().expect("server ran");
}
