//! Labels (`leakcheck::labeled`): every task spawned under a label, and every
//! descendant, carries it in snapshots and reports, and the tracker says when
//! the last task of a label has ended.

#![cfg(tokio_unstable)]

use std::sync::{Arc, Mutex};

#[test]
fn label_reaches_descendants_and_drains_once() {
    let drained = Arc::new(Mutex::new(Vec::<String>::new()));
    let (drained_tx, mut drained_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let seen = drained.clone();
    let tracker = leakcheck::Tracker::builder()
        .on_label_drained(move |label| {
            seen.lock().unwrap().push(label.to_owned());
            let _ = drained_tx.send(());
        })
        .build();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    tracker.install(builder.worker_threads(2).enable_all());
    let runtime = builder.build().unwrap();
    runtime.block_on(async {
        let (release, wait) = tokio::sync::watch::channel(());
        let (spawned_tx, spawned_rx) = tokio::sync::oneshot::channel::<()>();
        leakcheck::labeled("req-7", async {
            let mut wait = wait.clone();
            tokio::spawn(async move {
                let mut inner = wait.clone();
                // A grandchild, spawned by the child outside the labeled future.
                tokio::spawn(async move { inner.changed().await.ok() });
                spawned_tx.send(()).unwrap();
                wait.changed().await.ok()
            });
        })
        .await;
        spawned_rx.await.unwrap();
        // An unlabeled task alongside.
        let mut other = wait.clone();
        tokio::spawn(async move { other.changed().await.ok() });

        let snapshot = tracker.snapshot();
        let labels: Vec<Option<&str>> = snapshot
            .sites
            .iter()
            .flat_map(|group| group.tasks.iter().map(|t| t.label.as_deref()))
            .collect();
        assert_eq!(
            labels.iter().filter(|l| **l == Some("req-7")).count(),
            2,
            "{snapshot:#?}"
        );
        assert_eq!(
            labels.iter().filter(|l| l.is_none()).count(),
            1,
            "{snapshot:#?}"
        );
        assert!(drained.lock().unwrap().is_empty());

        release.send(()).unwrap();
        drained_rx.recv().await.unwrap();
        assert_eq!(*drained.lock().unwrap(), vec!["req-7".to_owned()]);
    });
}
