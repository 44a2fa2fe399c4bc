//! `leakcheck::service` (feature `tower`): the request-label layer labels what
//! a handler spawns with the request's id, and the tasks service serves the
//! live tasks as JSON.

#![cfg(tokio_unstable)]

use std::convert::Infallible;

use http::{Request, Response, StatusCode};
use leakcheck::service::{MAX_LABEL_LEN, RequestLabelLayer, TasksService};
use tower::{Layer, ServiceExt, service_fn};

/// A handler that leaves one task behind, and a child of it.
async fn leaky(_: Request<()>) -> Result<Response<()>, Infallible> {
    tokio::spawn(async {
        tokio::spawn(std::future::pending::<()>());
        std::future::pending::<()>().await
    });
    Ok(Response::new(()))
}

fn request(id: Option<&str>) -> Request<()> {
    let mut builder = Request::builder().uri("/work");
    if let Some(id) = id {
        builder = builder.header("x-request-id", id);
    }
    builder.body(()).unwrap()
}

/// Labels of the live tasks, sorted.
fn live_labels(tracker: &leakcheck::Tracker) -> Vec<Option<String>> {
    let mut labels: Vec<Option<String>> = tracker
        .snapshot()
        .sites
        .iter()
        .flat_map(|group| group.tasks.iter().map(|task| task.label.clone()))
        .collect();
    labels.sort();
    labels
}

#[test]
fn tasks_spawned_under_a_request_carry_its_id() {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    let too_long = "x".repeat(MAX_LABEL_LEN + 1);
    builder.build().unwrap().block_on(async {
        let service = RequestLabelLayer::x_request_id().layer(service_fn(leaky));
        for id in [
            Some("req-41"),
            None,
            Some("bad id"),
            Some(too_long.as_str()),
        ] {
            let reply = service.clone().oneshot(request(id)).await.unwrap();
            assert_eq!(reply.status(), StatusCode::OK);
        }
        tokio::task::yield_now().await;
        let labelled = Some("req-41".to_owned());
        assert_eq!(
            live_labels(&tracker),
            [vec![None; 6], vec![labelled.clone(), labelled]].concat(),
            "the request's task and its child carry the id; no id, an id with a space and a \
             too long one give no label"
        );
    });
}

#[test]
fn the_tasks_service_serves_the_live_tasks_as_json() {
    let tracker = leakcheck::Tracker::new();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    tracker.install(builder.worker_threads(2).enable_all());
    builder.build().unwrap().block_on(async {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let kept = tokio::spawn(async move {
            let _ = stopped.await;
        });
        let reply = TasksService::new(tracker.clone())
            .oneshot(Request::new(()))
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(reply.headers()["content-type"], "application/json");
        let snapshot: leakcheck::Snapshot = serde_json::from_str(reply.body()).unwrap();
        let sites: Vec<&str> = snapshot
            .sites
            .iter()
            .map(|group| group.site.file.as_str())
            .collect();
        assert!(
            sites.contains(&"leakcheck/tests/service.rs"),
            "the kept task is listed with its spawn site: {sites:?}"
        );
        stop.send(()).unwrap();
        kept.await.unwrap();
    });
}
