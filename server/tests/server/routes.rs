//! Every route over loopback, plain and TLS.

use std::net::Ipv4Addr;

use http::StatusCode;
use leakcheck_server::labels::DNS_LOOKUP_LABEL;
use leakcheck_server::{Config, RunningServer};

use crate::support::*;

#[tokio::test]
async fn healthz_over_http_and_https_with_request_ids() {
    let server = start(config());
    let plain = get(&server, "/healthz").await;
    assert_eq!(
        (plain.status, plain.body.as_str()),
        (StatusCode::OK, "ok\n")
    );
    assert!(
        plain.request_id.starts_with("req-"),
        "a request id is generated: {plain:?}"
    );
    let secure = get_tls(&server, "/healthz").await;
    assert_eq!(
        (secure.status, secure.body.as_str()),
        (StatusCode::OK, "ok\n")
    );
    assert_ne!(secure.request_id, plain.request_id);
    let given = get_with_id(&server, "/healthz", "client-chose-this").await;
    assert_eq!(
        given.request_id, "client-chose-this",
        "a given request id is echoed"
    );
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn work_runs_children_labeled_with_the_request_id() {
    let server = start(config());
    let reply = get_with_id(&server, "/work?children=5&rounds=10", "work-1").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        (body["request_id"].as_str(), body["children"].as_u64()),
        (Some("work-1"), Some(5))
    );
    // The request's tasks carried its label: their end is recorded under its id.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let drained = endpoints(&server).cancellations().await.unwrap();
        let work = drained.get("work-1").copied().unwrap_or_default();
        if work.tasks_drained_ns.is_some() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "work-1 never drained: {drained:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(labeled(&tasks(&server).await, "work-1").is_empty());
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn stream_sends_every_chunk_over_tls() {
    let server = start(config());
    let reply = get_tls(&server, "/stream?chunks=20&interval_ms=1&size=100").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 2000);
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn proxy_resolves_by_name_and_reuses_pooled_connections() {
    let dns = fake_dns(Ipv4Addr::LOCALHOST).await;
    let upstream = upstream().await;
    let server = start(Config {
        upstream: Some(format!(
            "http://upstream.test:{}/base/",
            upstream.addr().port()
        )),
        dns_server: Some(dns.addr()),
        ..config()
    });
    for _ in 0..3 {
        let reply = get(&server, "/proxy?path=/hello").await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
        assert_eq!(upstream.last_target(), "/base/hello");
    }
    // A lookup's task ends after the lookup's result wakes the request
    // (tokio runs the terminate hook after waking the JoinHandle), so wait for
    // the lookups to end before counting what upstream.rs left running.
    // (The resolver's own background task, spawned inside the first lookup,
    // carries its label too, and lives as long as the resolver.)
    let snapshot = wait_for_tasks(&server, "the DNS lookup tasks to end", |snapshot| {
        tasks_where(snapshot, |live| {
            live.site.file == "server/src/upstream.rs"
                && live.task.label.as_deref() == Some(DNS_LOOKUP_LABEL)
        })
        .is_empty()
    })
    .await;
    assert_eq!(
        spawned_in(&snapshot, "server/src/upstream.rs").len(),
        1,
        "one pooled connection served all three: {snapshot:#?}"
    );
    assert!(
        stop(server).await.leaks.is_none(),
        "the pool's connection tasks end at shutdown"
    );
}

#[tokio::test]
async fn proxy_without_upstream_is_502() {
    let server = start(config());
    let reply = get(&server, "/proxy").await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply.body.contains("--upstream"), "{}", reply.body);
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn slow_answers_within_and_503s_past_the_request_deadline() {
    let server = start(Config {
        request_timeout: std::time::Duration::from_millis(400),
        ..config()
    });
    assert_eq!(get(&server, "/slow?ms=20").await.status, StatusCode::OK);
    let (reply, took) = timed(get(&server, "/slow?ms=60000")).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        took < std::time::Duration::from_secs(3),
        "cut at the request deadline, took {took:?}"
    );
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn panics_are_500s_and_the_server_lives() {
    let server = start(config());
    assert_eq!(
        get(&server, "/panic").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let child = get_with_id(&server, "/panic?child=1", "panicky").await;
    assert_eq!(child.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(child.body.contains("child task panicked"), "{}", child.body);
    assert_eq!(get(&server, "/healthz").await.status, StatusCode::OK);
    wait_for_tasks(
        &server,
        "the panicking request's tasks to end",
        |snapshot| labeled(snapshot, "panicky").is_empty(),
    )
    .await;
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn debug_and_metrics_endpoints() {
    let server = start(config());
    let snapshot = tasks(&server).await;
    assert_eq!(snapshot.schema_version, leakcheck::SCHEMA_VERSION);
    assert_eq!(snapshot.kind, "snapshot");
    let accept_loops = spawned_in(&snapshot, "server/src/lib.rs");
    assert_eq!(
        accept_loops.len(),
        2,
        "both accept loops are live and named: {snapshot:#?}"
    );
    assert!(snapshot.live >= 3);

    let dump = get(&server, "/debug/dump").await;
    assert_eq!(dump.status, StatusCode::OK);
    assert!(dump.body.contains("task"), "{}", dump.body);

    let metrics = get(&server, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(
        metrics.headers["content-type"],
        leakcheck_server::metrics::CONTENT_TYPE,
        "OpenMetrics, as prometheus-client writes it"
    );
    assert!(metrics.body.ends_with("# EOF\n"), "{}", metrics.body);
    for name in [
        "leakcheck_live_tasks",
        "leakcheck_server_runtime_workers",
        "leakcheck_server_route_polls_total{route=\"debug\"}",
        "leakcheck_server_connections_open",
        "leakcheck_live_tasks_by_site{site=\"server/src/",
        "leakcheck_server_cancel_propagation_seconds_bucket{le=\"+Inf\"}",
    ] {
        assert!(
            metrics.body.contains(name),
            "/metrics lacks {name}:\n{}",
            metrics.body
        );
    }
    assert_eq!(
        get(&server, "/debug/nothing").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&server, "/nothing").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&server, "/work?children=lots").await.status,
        StatusCode::BAD_REQUEST
    );
    assert!(stop(server).await.leaks.is_none());
}

#[tokio::test]
async fn tracking_off_serves_without_a_tracker() {
    let server = start(Config {
        tracking: leakcheck_server::Tracking::Off,
        ..config()
    });
    assert_eq!(get(&server, "/work").await.status, StatusCode::OK);
    assert_eq!(
        get(&server, "/debug/tasks").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let outcome = stop(server).await;
    assert!(!outcome.verified && outcome.leaks.is_none());
}

#[tokio::test]
async fn certificates_from_pem_files() {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("leakcheck-server-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let server = start(Config {
        cert: leakcheck_server::CertSource::Files { cert, key },
        ..config()
    });
    assert_eq!(
        server.bound().certificate.as_ref(),
        generated.cert.der().as_ref(),
        "the file's certificate is served"
    );
    assert_eq!(get_tls(&server, "/healthz").await.status, StatusCode::OK);
    assert!(stop(server).await.leaks.is_none());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn proxy_retries_a_get_once_when_a_pooled_connection_drops_it() {
    let upstream = upstream().await;
    upstream.drop_reused();
    let server = start(Config {
        upstream: Some(format!("http://127.0.0.1:{}/", upstream.addr().port())),
        ..config()
    });
    for _ in 0..5 {
        let reply = get(&server, "/proxy").await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
    }
    assert!(stop(server).await.leaks.is_none());
}

/// Opens `n` streams that stay parked between chunks: a connection, a producer and a lease keeper
/// each.
async fn open_streams(server: &RunningServer, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut stream = tokio::net::TcpStream::connect(server.bound().http)
            .await
            .unwrap();
        stream
            .write_all(&get_request(
                "/stream?chunks=100000&interval_ms=50&size=8",
                &[],
            ))
            .await
            .unwrap();
        let mut first = [0u8; 8];
        stream.read_exact(&mut first).await.unwrap();
        streams.push(stream);
    }
    streams
}

#[tokio::test]
async fn a_multi_thread_server_is_dumped_once_with_at_most_128_tasks() {
    let server = start(config());
    let dump_count =
        |body: &str| body.matches("\ntask ").count() + usize::from(body.starts_with("task "));
    // 50 streams, ~150 tasks: past leakcheck::MAX_DUMPED_TASKS_MULTI_THREAD, refused with the
    // reason, never a wedged runtime.
    let mut streams = open_streams(&server, 50).await;
    let refused = get(&server, "/debug/dump").await;
    assert_ne!(refused.status, StatusCode::OK, "{}", refused.body);
    let limit = format!(
        "at most {} on a multi-thread runtime",
        leakcheck::MAX_DUMPED_TASKS_MULTI_THREAD
    );
    assert!(
        refused.body.contains(&limit) && refused.body.contains("use /debug/tasks"),
        "{}",
        refused.body
    );
    // 30 streams, ~90 tasks: dumped, every stream's tasks in it.
    streams.truncate(30);
    wait_for_tasks(&server, "the dropped streams' tasks to end", |snapshot| {
        snapshot.live <= 100
    })
    .await;
    let dump = get(&server, "/debug/dump").await;
    assert_eq!(dump.status, StatusCode::OK, "{}", dump.body);
    let traced = dump_count(&dump.body);
    assert!(
        traced >= 90,
        "every stream's tasks are in the dump: {traced}"
    );
    // That was the runtime's one dump: tokio 1.54 can wedge a worker on the next.
    let again = get(&server, "/debug/dump").await;
    assert_ne!(again.status, StatusCode::OK, "{}", again.body);
    assert!(
        again.body.contains("had its one task dump"),
        "{}",
        again.body
    );
    assert_eq!(get(&server, "/healthz").await.status, StatusCode::OK);
    drop(streams);
    assert!(stop(server).await.leaks.is_none());
}
