//! Labels (`leakcheck::labeled`): every task spawned under a label, and every
//! descendant, carries it in snapshots and reports, and the tracker says when
//! the last task of a label has ended. Also: the hooks a user passes through
//! the builder still run (tokio keeps one hook per runtime).

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

#[test]
fn users_own_hooks_are_chained() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let spawned = Arc::new(AtomicUsize::new(0));
    let terminated = Arc::new(AtomicUsize::new(0));
    let (on_spawn, on_terminate) = (spawned.clone(), terminated.clone());
    let tracker = leakcheck::Tracker::builder()
        .on_task_spawn(move |_| {
            on_spawn.fetch_add(1, Ordering::SeqCst);
        })
        .on_task_terminate(move |_| {
            on_terminate.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    tracker.install(builder.enable_all());
    let runtime = builder.build().unwrap();
    runtime.block_on(async {
        let guard = leakcheck::verify_none();
        for _ in 0..3 {
            tokio::spawn(async {}).await.unwrap();
        }
        guard.verify().await.unwrap();
    });
    drop(runtime);
    // Three tasks, plus leakcheck's own registration probe if it ran.
    assert!(spawned.load(Ordering::SeqCst) >= 3);
    assert_eq!(
        spawned.load(Ordering::SeqCst),
        terminated.load(Ordering::SeqCst)
    );
}
