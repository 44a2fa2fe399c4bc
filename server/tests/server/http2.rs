//! HTTP/2 on the TLS port: ALPN, requests and their labels, the preface deadline, the
//! SETTINGS the server announces, graceful shutdown, and the rapid-reset defense with and
//! without `--bug no-h2-reset-limit`; the attacker is the chaos toolkit's.

use std::time::Duration;

use bytes::Bytes;
use chaos::faults::clients::hold_until_closed;
use chaos::faults::h2::{Answer, RapidReset, Reason, alpn_h2, rapid_reset};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use leakcheck_server::http2::PREFACE;
use leakcheck_server::{Bug, Config, RunningServer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::defenses::back_to_baseline;
use crate::support::*;

/// A TLS connection to the server's HTTPS port that negotiated ALPN `h2`.
async fn h2_tls(server: &RunningServer) -> tokio_rustls::client::TlsStream<TcpStream> {
    let stream = TcpStream::connect(server.bound().https).await.unwrap();
    let tls = alpn_h2(&tls_connector(server))
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}

/// An HTTP/2 client connection (hyper's) and its driver task.
async fn h2_client(
    server: &RunningServer,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
) {
    let (sender, connection) = hyper::client::conn::http2::handshake(
        TokioExecutor::new(),
        TokioIo::new(h2_tls(server).await),
    )
    .await
    .expect("HTTP/2 handshake");
    (sender, tokio::spawn(connection))
}

fn get(path: &str, request_id: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("https://localhost{path}"))
        .header("x-request-id", request_id)
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn alpn_h2_serves_a_request_whose_tasks_carry_its_request_id() {
    let server = start(config());
    let baseline = baseline(&server).await;
    let (mut sender, driver) = h2_client(&server).await;
    let response = sender.send_request(get("/work?children=2&ms=400", "h2-labeled"));
    let response = tokio::spawn(response);
    let snapshot = wait_for_tasks(&server, "the request's tasks, labeled", |snapshot| {
        labeled(snapshot, "h2-labeled").len() >= 3
    })
    .await;
    // The lease keeper and both children; the stream task itself is the connection's.
    assert_server_sites(&labeled(&snapshot, "h2-labeled"));
    let streams = spawned_in(&snapshot, "server/src/http2.rs");
    assert_eq!(streams.len(), 1, "one stream task: {snapshot:#?}");
    assert!(streams[0].task.label.is_none(), "{:#?}", streams[0]);
    let response = response.await.unwrap().expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.headers()["x-request-id"], "h2-labeled");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["request_id"], "h2-labeled");
    drop(sender);
    let _ = timeout(PATIENCE, driver)
        .await
        .expect("the connection ends");
    back_to_baseline(&server, baseline).await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_client_without_alpn_is_served_http1_on_the_tls_port() {
    let server = start(config());
    let reply = get_tls(&server, "/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_tls_client_that_sends_no_preface_is_cut_at_the_preface_deadline() {
    let server = start(Config {
        h2_preface_timeout: SHORT,
        ..config()
    });
    let baseline = baseline(&server).await;
    let mut silent = h2_tls(&server).await;
    let closed = time_until_closed(&mut silent)
        .await
        .expect("the server closed the silent connection");
    assert!(
        closed >= SHORT - Duration::from_millis(50) && closed < SHORT * 5,
        "closed after {closed:?}, the preface deadline is {SHORT:?}"
    );
    // Only the preface, no SETTINGS frame: cut as well.
    let mut half = h2_tls(&server).await;
    half.write_all(PREFACE).await.unwrap();
    let closed = time_until_closed(&mut half)
        .await
        .expect("the server closed the preface-only connection");
    assert!(closed < SHORT * 5, "closed after {closed:?}");
    back_to_baseline(&server, baseline).await;
    assert_metric(&server, "leakcheck_server_h2_preface_timeouts_total 2").await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_peer_that_vanishes_after_its_preface_is_freed_by_the_keep_alive_ping() {
    let (interval, wait) = (SHORT, SHORT);
    let server = start(Config {
        h2_keep_alive_interval: interval,
        h2_keep_alive_timeout: wait,
        ..config()
    });
    let baseline = baseline(&server).await;
    let mut vanished = h2_tls(&server).await;
    // A valid start (the preface deadline is met), then silence: no frame, no PING ACK.
    let mut hello = PREFACE.to_vec();
    hello.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    vanished.write_all(&hello).await.unwrap();
    let closed = time_until_closed(&mut vanished)
        .await
        .expect("the server closed the silent connection");
    assert!(
        closed >= interval && closed < (interval + wait) * 4,
        "closed after {closed:?}; keep-alive every {interval:?}, ack within {wait:?}"
    );
    back_to_baseline(&server, baseline).await;
    assert!(stop(server).await.leaks.is_none());
}

/// Reads HTTP/2 frames until the server's first non-ACK SETTINGS frame; its (id, value) pairs.
async fn server_settings(io: &mut (impl AsyncRead + Unpin)) -> Vec<(u16, u32)> {
    loop {
        let mut header = [0u8; 9];
        io.read_exact(&mut header).await.expect("a frame header");
        let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; len];
        io.read_exact(&mut payload).await.expect("a frame payload");
        let (kind, flags) = (header[3], header[4]);
        if kind == 0x4 && flags & 0x1 == 0 {
            return payload
                .chunks_exact(6)
                .map(|entry| {
                    (
                        u16::from_be_bytes([entry[0], entry[1]]),
                        u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]),
                    )
                })
                .collect();
        }
    }
}

#[tokio::test]
async fn the_servers_settings_carry_max_concurrent_streams() {
    let server = start(Config {
        h2_max_concurrent_streams: 7,
        ..config()
    });
    let mut tls = h2_tls(&server).await;
    // The preface and an empty SETTINGS frame.
    let mut hello = PREFACE.to_vec();
    hello.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    tls.write_all(&hello).await.unwrap();
    let settings = timeout(PATIENCE, server_settings(&mut tls))
        .await
        .expect("SETTINGS within PATIENCE");
    const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
    assert!(
        settings.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, 7)),
        "{settings:?}"
    );
    drop(tls);
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn shutdown_sends_goaway_and_drains_an_open_stream() {
    let server = start(Config {
        shutdown_grace: Duration::from_secs(3),
        ..config()
    });
    let (mut sender, driver) = h2_client(&server).await;
    let response = tokio::spawn(sender.send_request(get("/slow?ms=600", "h2-draining")));
    wait_for_tasks(&server, "the /slow request", |snapshot| {
        !labeled(snapshot, "h2-draining").is_empty()
            || !spawned_in(snapshot, "server/src/http2.rs").is_empty()
    })
    .await;
    let stopping = tokio::spawn(stop(server));
    let response = response.await.unwrap().expect("the open stream is drained");
    assert_eq!(response.status(), StatusCode::OK);
    // GOAWAY: the connection ends once its last stream did, and the client can open no more.
    timeout(PATIENCE, driver)
        .await
        .expect("the connection ends after the drain")
        .unwrap()
        .expect("a clean GOAWAY");
    assert!(sender.send_request(get("/healthz", "late")).await.is_err());
    assert!(stopping.await.unwrap().leaks.is_none());
}

#[tokio::test]
async fn a_stream_the_client_stops_reading_is_cut_by_the_stream_deadline() {
    let server = start(stream_deadline_config(config()));
    let baseline = baseline(&server).await;
    let (mut sender, driver) = h2_client(&server).await;
    let started = Instant::now();
    let response = sender
        .send_request(get(
            "/stream?chunks=100000&interval_ms=1&size=16384",
            "h2-unread",
        ))
        .await
        .expect("the response head");
    assert_eq!(response.status(), StatusCode::OK);
    // The body is never read: flow control stops the server's writes, not the deadline.
    let ended = timeout(PATIENCE, driver)
        .await
        .expect("the stream deadline cuts the connection");
    let took = started.elapsed();
    assert!(
        ended.unwrap().is_err(),
        "the connection was cut, not closed"
    );
    assert_cut_by_stream_deadline(took);
    drop(response);
    back_to_baseline(&server, baseline).await;
    assert!(stop(server).await.leaks.is_none());
}

fn attack(streams: usize) -> RapidReset {
    RapidReset {
        streams,
        path: "/work?children=2&ms=1000".to_owned(),
        request_id_prefix: "rapid-".to_owned(),
        linger: Duration::from_millis(500),
        deadline: Instant::now() + PATIENCE,
    }
}

#[tokio::test]
async fn a_rapid_reset_attack_gets_goaway_enhance_your_calm_and_leaves_no_task() {
    let server = start(config());
    let baseline = baseline(&server).await;
    let connector = alpn_h2(&tls_connector(&server));
    let report = rapid_reset(server.bound().https, &connector, &attack(20_000))
        .await
        .expect("the attack runs");
    match report.answer {
        Answer::GoAway(reason) => assert_eq!(reason, Reason::ENHANCE_YOUR_CALM),
        other => panic!("expected GOAWAY ENHANCE_YOUR_CALM, got {other:?}"),
    }
    // Cut off within a few batches (those already on their way when the GOAWAY was sent).
    assert!(
        report.streams_sent < 2_000,
        "cut off after {} streams",
        report.streams_sent
    );
    back_to_baseline(&server, baseline).await;
    // A well-behaved client is still served.
    assert_eq!(get_tls(&server, "/healthz").await.status, StatusCode::OK);
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn without_the_preface_deadline_a_silent_tls_client_pins_its_connection() {
    let server = start(Config {
        h2_preface_timeout: SHORT,
        ..with_bug(Bug::NoH2PrefaceDeadline)
    });
    let baseline = baseline(&server).await;
    let silent = h2_tls(&server).await;
    let Held::Open(silent) = hold_until_closed(silent, Instant::now() + SHORT * 4).await else {
        panic!("the server closed a silent HTTP/2 client without a preface deadline");
    };
    // Its connection task is still there (the connection serving /debug/tasks aside).
    let snapshot = tasks(&server).await;
    assert!(
        snapshot.live > baseline,
        "no connection task outlived the deadline: {snapshot:#?}"
    );
    assert!(
        !spawned_in(&snapshot, "server/src/listener.rs").is_empty(),
        "{snapshot:#?}"
    );
    drop(silent);
    back_to_baseline(&server, baseline).await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn without_the_reset_limit_the_attackers_connection_stays_served() {
    let server = start(with_bug(Bug::NoH2ResetLimit));
    let baseline = baseline(&server).await;
    let connector = alpn_h2(&tls_connector(&server));
    let report = rapid_reset(server.bound().https, &connector, &attack(2_000))
        .await
        .expect("the attack runs");
    assert_eq!(report.streams_sent, 2_000, "every stream was sent");
    let Answer::StillServed(still_served) = report.answer else {
        panic!(
            "expected the connection to stay served, got {:?}",
            report.answer
        );
    };
    // Its connection task is still there (the connection serving /debug/tasks aside).
    let snapshot = wait_for_tasks(&server, "the attacker's connection task", |snapshot| {
        snapshot.live > baseline
    })
    .await;
    let connections = spawned_in(&snapshot, "server/src/listener.rs");
    assert!(connections.len() >= 2, "{snapshot:#?}");
    assert_server_sites(&connections);
    assert!(
        connections.iter().all(|task| task.task.label.is_none()),
        "connection tasks carry no request id: {snapshot:#?}"
    );
    drop(still_served);
    back_to_baseline(&server, baseline).await;
    assert!(stop(server).await.leaks.is_none());
}
