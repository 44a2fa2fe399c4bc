//! Every `--bug`: the defense it removes is gone, and the leak it causes is visible in
//! /debug/tasks or the shutdown verification, named by a spawn site in server code.

use std::time::Duration;

use http::StatusCode;
use leakcheck_server::{Bug, Config, RunningServer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// Long enough past every `SHORT` deadline that a defended server would have cut the client.
const WELL_PAST_THE_DEADLINE: Duration = Duration::from_millis(1200);

/// Connection tasks older than `age`.
fn connections_older_than(snapshot: &TasksSnapshot, age: Duration) -> Vec<LiveTask<'_>> {
    tasks_where(snapshot, |live| {
        live.site.file == "server/src/listener.rs" && live.task.age_ms >= age.as_millis() as u64
    })
}

/// The files named by a leak report's sites, as the chaos toolkit reads the report.
fn report_sites(report: &leakcheck::LeakReport) -> Vec<String> {
    chaos::server::LeakReport::parse(report.to_json().as_bytes())
        .expect("a leak report")
        .sites
        .into_iter()
        .map(|group| group.site.file)
        .collect()
}

async fn silent_client_pins_a_connection(server: &RunningServer, port: std::net::SocketAddr) {
    let _silent = TcpStream::connect(port).await.unwrap();
    let snapshot = wait_for_tasks(
        server,
        "a connection task older than the deadline",
        |snapshot| !connections_older_than(snapshot, WELL_PAST_THE_DEADLINE).is_empty(),
    )
    .await;
    assert_server_sites(&connections_older_than(&snapshot, WELL_PAST_THE_DEADLINE));
}

#[tokio::test]
async fn no_tls_handshake_timeout_pins_a_connection_task() {
    let server = start(with_bug(Bug::NoTlsHandshakeTimeout));
    silent_client_pins_a_connection(&server, server.bound().https).await;
    assert!(
        stop(server).await.leaks.is_none(),
        "shutdown still cancels the pinned connection"
    );
}

#[tokio::test]
async fn no_header_timeout_pins_a_connection_task() {
    let server = start(with_bug(Bug::NoHeaderTimeout));
    silent_client_pins_a_connection(&server, server.bound().http).await;
    assert!(
        stop(server).await.leaks.is_none(),
        "shutdown still cancels the pinned connection"
    );
}

#[tokio::test]
async fn no_dns_timeout_leaks_the_lookup_task_past_shutdown() {
    let silent = silent_dns().await;
    let server = start(Config {
        upstream: Some("http://upstream.test:9/".to_owned()),
        dns_server: Some(silent.addr()),
        request_timeout: Duration::from_millis(500),
        ..with_bug(Bug::NoDnsTimeout)
    });
    let reply = get(&server, "/proxy").await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "only the whole-request deadline answers: {}",
        reply.body
    );
    let snapshot = tasks(&server).await;
    let lookups = spawned_in(&snapshot, "server/src/upstream.rs");
    assert_eq!(
        lookups.len(),
        1,
        "the lookup outlives its request: {snapshot:#?}"
    );
    let report = stop(server)
        .await
        .leaks
        .expect("the hung lookup is reported at shutdown");
    assert!(
        report_sites(&report)
            .iter()
            .any(|file| file == "server/src/upstream.rs"),
        "{report}"
    );
}

#[tokio::test]
async fn no_pool_acquire_timeout_queues_requests_until_the_request_deadline() {
    let stalled = stalled_upstream().await;
    let server = start(Config {
        upstream: Some(format!("http://127.0.0.1:{}/", stalled.addr().port())),
        pool_size: 1,
        request_timeout: Duration::from_secs(2),
        ..with_bug(Bug::NoPoolAcquireTimeout)
    });
    let http = server.bound().http;
    let holder = tokio::spawn(async move { raw_exchange(http, &get_request("/proxy", &[])).await });
    wait_for_tasks(
        &server,
        "the first /proxy to hold the only slot",
        |snapshot| !spawned_in(snapshot, "server/src/upstream.rs").is_empty(),
    )
    .await;
    let queued = tokio::spawn(async move { raw_exchange(http, &get_request("/proxy", &[])).await });
    // Well past the 200 ms acquire deadline, the queued request's connection is still parked.
    let snapshot = wait_for_tasks(
        &server,
        "two /proxy connections parked past the acquire deadline",
        |snapshot| connections_older_than(snapshot, Duration::from_millis(800)).len() >= 2,
    )
    .await;
    assert_server_sites(&connections_older_than(
        &snapshot,
        Duration::from_millis(800),
    ));
    for reply in [holder.await.unwrap(), queued.await.unwrap()] {
        let reply = reply.expect("answered at the request deadline");
        assert!(
            reply.starts_with("HTTP/1.1 503") && !reply.contains("pool exhausted"),
            "{reply}"
        );
    }
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn detached_request_task_outlives_the_response_and_the_server() {
    let server = start(with_bug(Bug::DetachedRequestTask));
    let reply = get_with_id(&server, "/work?children=2", "detached").await;
    assert_eq!(reply.status, StatusCode::OK);
    let snapshot = tasks(&server).await;
    let left = labeled(&snapshot, "detached");
    assert_eq!(
        left.len(),
        1,
        "the lease keeper runs on after the response: {snapshot:#?}"
    );
    assert_server_sites(&left);
    let report = stop(server)
        .await
        .leaks
        .expect("the detached lease keeper is reported at shutdown");
    assert_eq!(report_sites(&report), ["server/src/routes.rs"], "{report}");
}

#[tokio::test]
async fn no_write_timeout_lets_a_slow_reader_pin_the_request() {
    let server = start(with_bug(Bug::NoWriteTimeout));
    let mut reader = TcpStream::connect(server.bound().http).await.unwrap();
    let request = get_request(
        "/stream?chunks=64&interval_ms=1&size=1048576",
        &[("x-request-id", "stuck")],
    );
    reader.write_all(&request).await.unwrap();
    let snapshot = wait_for_tasks(
        &server,
        "the stuck stream's tasks to outlive the write deadline",
        |snapshot| {
            let stuck = labeled(snapshot, "stuck");
            stuck.len() == 2
                && stuck
                    .iter()
                    .all(|live| live.task.age_ms >= WELL_PAST_THE_DEADLINE.as_millis() as u64)
        },
    )
    .await;
    assert_server_sites(&labeled(&snapshot, "stuck"));
    drop(reader);
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn uncaught_panic_in_child_hangs_the_request_and_its_tasks() {
    let server = start(Config {
        request_timeout: Duration::from_secs(2),
        ..with_bug(Bug::UncaughtPanicInChild)
    });
    let http = server.bound().http;
    let request = tokio::spawn(async move {
        raw_exchange(
            http,
            &get_request("/panic?child=1", &[("x-request-id", "orphaned")]),
        )
        .await
    });
    let snapshot = wait_for_tasks(
        &server,
        "the request's lease keeper to outlive the child's panic",
        |snapshot| {
            labeled(snapshot, "orphaned")
                .iter()
                .any(|live| live.task.age_ms >= 1000)
        },
    )
    .await;
    assert_server_sites(&labeled(&snapshot, "orphaned"));
    let reply = request
        .await
        .unwrap()
        .expect("answered at the request deadline");
    assert!(
        reply.starts_with("HTTP/1.1 503"),
        "the panic went unnoticed until the deadline: {reply}"
    );
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn no_upstream_timeouts_hold_the_slot_and_connection_until_the_request_deadline() {
    let stalled = stalled_upstream().await;
    let server = start(Config {
        upstream: Some(format!("http://127.0.0.1:{}/", stalled.addr().port())),
        upstream_response_timeout: SHORT,
        request_timeout: Duration::from_secs(2),
        ..with_bug(Bug::NoUpstreamTimeouts)
    });
    let waiting = tokio::spawn({
        let http = server.bound().http;
        async move { raw_exchange(http, &get_request("/proxy", &[])).await }
    });
    // Well past the response deadline the pooled connection's driver is still there.
    let snapshot = wait_for_tasks(
        &server,
        "the pooled driver to outlive the response deadline",
        |snapshot| {
            tasks_where(snapshot, |live| {
                live.site.file == "server/src/upstream.rs"
                    && live.task.age_ms > SHORT.as_millis() as u64 * 3
            })
            .len()
                == 1
        },
    )
    .await;
    assert_server_sites(&spawned_in(&snapshot, "server/src/upstream.rs"));
    let reply = waiting
        .await
        .unwrap()
        .expect("answered at the request deadline");
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn no_stream_timeout_lets_a_trickle_reader_pin_the_request() {
    let server = start(stream_deadline_config(with_bug(Bug::NoStreamTimeout)));
    let Held::Open(reader) = trickle_read(&server, "pinned", STREAM_DEADLINE * 3).await else {
        panic!("the stream ended although no stream deadline was set");
    };
    let snapshot = tasks(&server).await;
    let pinned = labeled(&snapshot, "pinned");
    assert_eq!(
        pinned.len(),
        2,
        "lease keeper and producer still run: {snapshot:#?}"
    );
    assert_server_sites(&pinned);
    drop(reader);
    assert!(stop(server).await.leaks.is_none());
}
