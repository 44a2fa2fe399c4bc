//! Every defense, driven by a hostile client over loopback; afterwards /debug/tasks is back at its baseline.

use std::time::Duration;

use http::StatusCode;
use leakcheck_server::Config;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

/// Waits until the server's live tasks are back at `baseline` and no connection is open.
pub(crate) async fn back_to_baseline(server: &leakcheck_server::RunningServer, baseline: u64) {
    wait_for_tasks(server, "live tasks to return to the baseline", |snapshot| {
        snapshot.live == baseline
    })
    .await;
}

#[tokio::test]
async fn a_silent_client_is_cut_after_the_header_timeout() {
    let server = start(config());
    let baseline = baseline(&server).await;
    let connected = tokio::time::Instant::now();
    let silent = TcpStream::connect(server.bound().http).await.unwrap();
    let mut half_head = TcpStream::connect(server.bound().http).await.unwrap();
    half_head
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    for client in [silent, half_head] {
        time_until_closed(client)
            .await
            .expect("the server closes the connection");
        let took = connected.elapsed();
        assert!(
            took >= SHORT / 2 && took < SHORT * 10,
            "cut after {took:?}, header timeout {SHORT:?}"
        );
    }
    back_to_baseline(&server, baseline).await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let server = start(config());
    let mut stream = TcpStream::connect(server.bound().http).await.unwrap();
    stream
        .write_all(&keep_alive_get_request("/healthz", &[]))
        .await
        .unwrap();
    let took = time_until_closed(stream)
        .await
        .expect("the idle keep-alive connection is closed");
    assert!(took < SHORT * 10, "closed after {took:?}");
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_cut() {
    let server = start(config());
    let baseline = baseline(&server).await;
    let connected = tokio::time::Instant::now();
    let silent = TcpStream::connect(server.bound().https).await.unwrap();
    // A TLS record header announcing 512 bytes of ClientHello, then only a few of them.
    let mut partial = TcpStream::connect(server.bound().https).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .await
        .unwrap();
    for client in [silent, partial] {
        time_until_closed(client)
            .await
            .expect("the server closes the connection");
        let took = connected.elapsed();
        assert!(
            took >= SHORT / 2 && took < SHORT * 10,
            "cut after {took:?}, handshake timeout {SHORT:?}"
        );
    }
    back_to_baseline(&server, baseline).await;
    assert_metric(&server, "leakcheck_server_tls_handshake_timeouts_total 2").await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn dns_against_a_silent_nameserver_times_out_with_504() {
    let silent = silent_dns().await;
    let server = start(Config {
        upstream: Some("http://upstream.test:9/".to_owned()),
        dns_server: Some(silent.addr()),
        ..config()
    });
    let baseline = baseline(&server).await;
    let (reply, took) = timed(get(&server, "/proxy")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
    assert!(
        took < SHORT * 5,
        "504 after {took:?}, DNS timeout {SHORT:?}"
    );
    // The lookup task ends with its deadline too (hickory's own exchange tasks may stay with the resolver).
    wait_for_tasks(&server, "the lookup task to end", |snapshot| {
        spawned_in(snapshot, "server/src/upstream.rs").is_empty()
    })
    .await;
    wait_for_tasks(&server, "no connection but ours", |snapshot| {
        spawned_in(snapshot, "server/src/listener.rs").len() == 1
    })
    .await;
    assert!(tasks(&server).await.live >= baseline);
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_fast() {
    let stalled = stalled_upstream().await;
    let server = start(Config {
        upstream: Some(format!("http://127.0.0.1:{}/", stalled.addr().port())),
        pool_size: 1,
        request_timeout: Duration::from_secs(3),
        ..config()
    });
    let baseline = baseline(&server).await;
    let holder = {
        let http = server.bound().http;
        tokio::spawn(async move {
            raw_exchange(http, &get_request("/proxy", &[("x-request-id", "holder")])).await
        })
    };
    wait_for_tasks(
        &server,
        "the first /proxy to hold the only pool slot",
        |snapshot| !spawned_in(snapshot, "server/src/upstream.rs").is_empty(),
    )
    .await;
    let (reply, took) = timed(get(&server, "/proxy")).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert!(
        took < Duration::from_millis(1500),
        "503 after {took:?}, acquire timeout 200ms"
    );
    assert!(reply.body.contains("pool exhausted"));
    assert_eq!(
        reply
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "a shed request is told when to come back"
    );
    let held = holder
        .await
        .unwrap()
        .expect("the holder is answered at the request deadline");
    assert!(held.starts_with("HTTP/1.1 503"), "{held}");
    back_to_baseline(&server, baseline).await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_slow_reader_is_cut_by_the_write_deadline() {
    let server = start(config());
    let baseline = baseline(&server).await;
    let mut reader = TcpStream::connect(server.bound().http).await.unwrap();
    // 64 MB in 1 MB chunks: far more than the socket buffers hold, and never read.
    let request = get_request(
        "/stream?chunks=64&interval_ms=1&size=1048576",
        &[("x-request-id", "slow-reader")],
    );
    reader.write_all(&request).await.unwrap();
    wait_for_tasks(&server, "the stream to start", |snapshot| {
        !labeled(snapshot, "slow-reader").is_empty()
    })
    .await;
    wait_for_tasks(
        &server,
        "the write deadline to end the slow reader's tasks",
        |snapshot| labeled(snapshot, "slow-reader").is_empty(),
    )
    .await;
    back_to_baseline(&server, baseline).await;
    drop(reader);
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_client_abort_mid_stream_ends_the_requests_tasks() {
    let server = start(config());
    let baseline = baseline(&server).await;
    let mut client = TcpStream::connect(server.bound().http).await.unwrap();
    let request = get_request(
        "/stream?chunks=100000&interval_ms=2&size=64",
        &[("x-request-id", "aborted")],
    );
    client.write_all(&request).await.unwrap();
    let mut first = [0u8; 64];
    tokio::io::AsyncReadExt::read_exact(&mut client, &mut first)
        .await
        .unwrap();
    let snapshot = tasks(&server).await;
    let running = labeled(&snapshot, "aborted");
    assert_eq!(
        running.len(),
        2,
        "lease keeper and producer run under the request id: {snapshot:#?}"
    );
    assert_server_sites(&running);
    drop(client);
    wait_for_tasks(&server, "the aborted request's tasks to end", |snapshot| {
        labeled(snapshot, "aborted").is_empty()
    })
    .await;
    let drained = endpoints(&server).cancellations().await.unwrap();
    let aborted = drained.get("aborted").copied().unwrap_or_default();
    assert!(
        aborted.request_ended_ns.is_some() && aborted.tasks_drained_ns.is_some(),
        "both stages of the aborted request are in /debug/cancellations: {aborted:?}"
    );
    // The tasks ended after the request did: the delay is in the propagation histogram.
    let metrics = get(&server, "/metrics").await.body;
    let observed: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("leakcheck_server_cancel_propagation_seconds_count "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no propagation count in {metrics}"));
    assert!(observed >= 1, "{metrics}");
    back_to_baseline(&server, baseline).await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_stalled_request_body_gets_408() {
    let server = start(config());
    let reply = raw_exchange(
        server.bound().http,
        b"POST /work HTTP/1.1\r\nHost: x\r\ncontent-length: 100\r\n\r\nonly-some",
    )
    .await;
    let reply = reply.expect("the server answers and closes");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn connections_past_the_cap_are_shed() {
    let server = start(Config {
        max_connections: 2,
        header_timeout: Duration::from_secs(5),
        ..config()
    });
    let _first = TcpStream::connect(server.bound().http).await.unwrap();
    let _second = TcpStream::connect(server.bound().http).await.unwrap();
    let shed = raw_exchange(server.bound().http, &get_request("/healthz", &[]))
        .await
        .expect("closed at once");
    assert!(shed.starts_with("HTTP/1.1 503"), "{shed}");
    drop((_first, _second));
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn bad_input_gets_an_error_or_a_close_and_leaks_nothing() {
    let server = start(config());
    let baseline = baseline(&server).await;
    let http = server.bound().http;
    let garbage = raw_exchange(http, b"\x00\xff\x13garbage\r\n\r\n")
        .await
        .expect("closed");
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    let big = "a".repeat(100 * 1024);
    let huge = get_request("/healthz", &[("x-big", &big)]);
    let too_large = raw_exchange(http, &huge).await.expect("closed");
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large:?}");
    let bad_method = raw_exchange(http, b"G\x01T / HTTP/1.1\r\n\r\n")
        .await
        .expect("closed");
    assert!(bad_method.starts_with("HTTP/1.1 400"), "{bad_method:?}");
    let tls_garbage = raw_exchange(server.bound().https, &get_request("/", &[])).await;
    assert!(
        tls_garbage.is_some(),
        "plain HTTP on the TLS port is closed"
    );
    let random: Vec<u8> = (0..4096u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(
        raw_exchange(server.bound().https, &random).await.is_some(),
        "random bytes on the TLS port are closed"
    );
    assert!(
        raw_exchange(http, &random).await.is_some(),
        "random bytes on the HTTP port are closed"
    );
    assert_eq!(get(&server, "/healthz").await.status, StatusCode::OK);
    back_to_baseline(&server, baseline).await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn shutdown_cancels_in_flight_streams_within_the_grace_and_verifies_clean() {
    let server = start(config());
    let mut client = TcpStream::connect(server.bound().http).await.unwrap();
    client
        .write_all(&get_request(
            "/stream?chunks=100000&interval_ms=5&size=16",
            &[],
        ))
        .await
        .unwrap();
    let mut first = [0u8; 16];
    tokio::io::AsyncReadExt::read_exact(&mut client, &mut first)
        .await
        .unwrap();
    let (outcome, took) = timed(stop(server)).await;
    assert!(outcome.verified);
    assert!(outcome.leaks.is_none(), "{}", outcome.leaks.unwrap());
    assert!(
        took < Duration::from_secs(3),
        "shutdown took {took:?} with a 500ms grace"
    );
}

#[tokio::test]
async fn a_slow_reader_over_tls_is_cut_by_the_write_deadline() {
    let server = start(config());
    let baseline = baseline(&server).await;
    let stream = TcpStream::connect(server.bound().https).await.unwrap();
    let mut tls = tls_connector(&server)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            stream,
        )
        .await
        .unwrap();
    let request = get_request(
        "/stream?chunks=64&interval_ms=1&size=1048576",
        &[("x-request-id", "slow-tls")],
    );
    tls.write_all(&request).await.unwrap();
    wait_for_tasks(&server, "the stream to start", |snapshot| {
        !labeled(snapshot, "slow-tls").is_empty()
    })
    .await;
    wait_for_tasks(
        &server,
        "the write deadline to end the TLS slow reader's tasks",
        |snapshot| labeled(snapshot, "slow-tls").is_empty(),
    )
    .await;
    back_to_baseline(&server, baseline).await;
    drop(tls);
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_storm_of_hostile_clients_leaves_the_baseline_intact() {
    let server = start(config());
    let baseline = baseline(&server).await;
    let (http, https) = (server.bound().http, server.bound().https);
    let mut clients = tokio::task::JoinSet::new();
    for n in 0..20u32 {
        // Silent on both ports, half a TLS record, garbage, and a /stream abandoned mid-way.
        clients
            .spawn(async move { time_until_closed(TcpStream::connect(http).await.unwrap()).await });
        clients.spawn(
            async move { time_until_closed(TcpStream::connect(https).await.unwrap()).await },
        );
        clients.spawn(async move {
            let mut stream = TcpStream::connect(https).await.unwrap();
            stream
                .write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01])
                .await
                .unwrap();
            time_until_closed(stream).await
        });
        clients.spawn(async move {
            let mut stream = TcpStream::connect(http).await.unwrap();
            stream
                .write_all(format!("\x16garbage {n}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            time_until_closed(stream).await
        });
        clients.spawn(async move {
            let mut stream = TcpStream::connect(http).await.unwrap();
            let id = format!("storm-{n}");
            let request = get_request(
                "/stream?chunks=100000&interval_ms=1&size=32",
                &[("x-request-id", &id)],
            );
            stream.write_all(&request).await.unwrap();
            let mut first = [0u8; 32];
            tokio::io::AsyncReadExt::read_exact(&mut stream, &mut first)
                .await
                .unwrap();
            Some(Duration::ZERO)
        });
    }
    while let Some(closed) = clients.join_next().await {
        assert!(
            closed.unwrap().is_some(),
            "every hostile connection is closed by the server"
        );
    }
    back_to_baseline(&server, baseline).await;
    assert_eq!(get(&server, "/healthz").await.status, StatusCode::OK);
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_silent_resolver_holds_no_pool_slot() {
    let silent = silent_dns().await;
    let server = start(Config {
        upstream: Some("http://upstream.test:9/".to_owned()),
        dns_server: Some(silent.addr()),
        pool_size: 1,
        ..config()
    });
    // All three wait on one lookup without a slot: each gets the DNS 504, none a pool 503.
    let (first, second, third) = tokio::join!(
        get(&server, "/proxy"),
        get(&server, "/proxy"),
        get(&server, "/proxy")
    );
    for reply in [first, second, third] {
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
        assert!(
            reply.body.contains("resolution timed out"),
            "{}",
            reply.body
        );
    }
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_stalled_upstream_is_cut_by_the_response_deadline_and_frees_its_slot() {
    let stalled = stalled_upstream().await;
    let server = start(Config {
        upstream: Some(format!("http://127.0.0.1:{}/", stalled.addr().port())),
        pool_size: 1,
        upstream_response_timeout: SHORT,
        ..config()
    });
    let baseline = baseline(&server).await;
    for _ in 0..2 {
        // The second request finds the only slot free again: 504, not a pool 503.
        let (reply, took) = timed(get(&server, "/proxy")).await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
        assert!(reply.body.contains("no response head"), "{}", reply.body);
        assert!(took < SHORT * 5, "504 after {took:?}, deadline {SHORT:?}");
    }
    // The wedged connections are dropped with their driver tasks.
    back_to_baseline(&server, baseline).await;
    assert_metric(&server, "leakcheck_server_upstream_timeouts_total 2").await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_stalled_upstream_body_is_cut_by_the_body_deadline() {
    let upstream = upstream().await;
    upstream.stall_body();
    let server = start(Config {
        upstream: Some(format!("http://127.0.0.1:{}/", upstream.addr().port())),
        upstream_body_timeout: SHORT,
        ..config()
    });
    let baseline = baseline(&server).await;
    let (reply, took) = timed(get(&server, "/proxy")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.body);
    assert!(reply.body.contains("body did not arrive"), "{}", reply.body);
    assert!(took < SHORT * 5, "504 after {took:?}, deadline {SHORT:?}");
    back_to_baseline(&server, baseline).await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn an_upstream_that_never_accepts_is_cut_by_the_connect_deadline() {
    // A listener that is never accepted from, with a backlog of 0: once one connection is
    // queued the kernel drops further SYNs, so a connect hangs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(0).unwrap();
    let mut queued = Vec::new();
    let mut hanging = false;
    for _ in 0..8 {
        match tokio::time::timeout(SHORT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => queued.push(stream),
            Ok(Err(error)) => panic!("connect to the full listener failed: {error}"),
            Err(_) => {
                hanging = true;
                break;
            }
        }
    }
    assert!(hanging, "connects to a full backlog did not hang");
    let server = start(Config {
        upstream: Some(format!("http://127.0.0.1:{}/", addr.port())),
        upstream_connect_timeout: SHORT,
        ..config()
    });
    let (reply, took) = timed(get(&server, "/proxy")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.body);
    assert!(reply.body.contains("connect timed out"), "{}", reply.body);
    assert!(took < SHORT * 5, "502 after {took:?}, deadline {SHORT:?}");
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn a_trickle_reader_is_cut_by_the_stream_deadline() {
    let server = start(stream_deadline_config(config()));
    let baseline = baseline(&server).await;
    let Held::Closed { after: took, .. } = trickle_read(&server, "trickle", PATIENCE).await else {
        panic!("the stream deadline did not close the connection");
    };
    assert_cut_by_stream_deadline(took);
    wait_for_tasks(&server, "the trickle request's tasks to end", |snapshot| {
        labeled(snapshot, "trickle").is_empty()
    })
    .await;
    back_to_baseline(&server, baseline).await;
    assert_metric(&server, "leakcheck_server_stream_timeouts_total 1").await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn an_aborted_cpu_bound_child_stops_at_its_next_yield() {
    let server = start(config());
    let baseline = baseline(&server).await;
    let mut client = TcpStream::connect(server.bound().http).await.unwrap();
    // A billion rounds: minutes of CPU if the child ran to the end.
    client
        .write_all(&get_request(
            "/work?children=1&rounds=1000000000",
            &[("x-request-id", "cpu")],
        ))
        .await
        .unwrap();
    wait_for_tasks(&server, "the child to start crunching", |snapshot| {
        labeled(snapshot, "cpu").len() == 2
    })
    .await;
    drop(client);
    let (_, took) = timed(wait_for_tasks(
        &server,
        "the aborted child to stop",
        |snapshot| labeled(snapshot, "cpu").is_empty(),
    ))
    .await;
    assert!(
        took < Duration::from_secs(2),
        "the child stopped after {took:?}"
    );
    back_to_baseline(&server, baseline).await;
    assert!(stop(server).await.leaks.is_none());
}
