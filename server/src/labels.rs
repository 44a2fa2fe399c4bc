//! Labels of the server's shared infrastructure tasks (pooled upstream connections, DNS
//! lookups), so they never carry the id of whichever request happened to start them.
//!
//! leakcheck labels a task with the label of the future spawning it, else its parent's; a
//! pooled connection dialled by request A serves requests B, C… afterwards, so its driver
//! must not be A's. [`spawn_labeled`] is written here because leakcheck only offers labels
//! as a future wrapper: it polls a [`leakcheck::labeled`] future once, around the spawn.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Label of a pooled upstream connection's driver task.
pub const UPSTREAM_CONNECTION_LABEL: &str = "upstream-connection";
/// Label of a shared DNS lookup task (and of the resolver tasks it starts).
pub const DNS_LOOKUP_LABEL: &str = "dns-lookup";

/// Runs `spawn` (which spawns) with `label` as the current label, so the tasks it spawns
/// carry `label` instead of the caller's. Their spawn site is where `spawn` calls `spawn`.
pub fn spawn_labeled<T>(label: &'static str, spawn: impl FnOnce() -> T) -> T {
    let mut spawn = Some(spawn);
    let once = std::future::poll_fn(move |_| Poll::Ready(spawn.take().map(|spawn| spawn())));
    let mut labeled = pin!(leakcheck::labeled(label, once));
    match labeled
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Some(spawned)) => spawned,
        // `once` is ready on its first poll and polled only once.
        Poll::Ready(None) | Poll::Pending => unreachable!("a ready future polled once"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawned_tasks_carry_the_shared_label_not_the_callers() {
        let tracker = leakcheck::Tracker::new();
        let mut builder = tokio::runtime::Builder::new_current_thread();
        tracker.install(builder.enable_all());
        let runtime = builder.build().unwrap();
        runtime.block_on(leakcheck::labeled("req-1", async {
            let (release, wait) = tokio::sync::oneshot::channel::<()>();
            let shared = spawn_labeled(UPSTREAM_CONNECTION_LABEL, || {
                tokio::spawn(async move {
                    let _ = wait.await;
                })
            });
            let snapshot = tracker.snapshot();
            let labels: Vec<_> = snapshot
                .sites
                .iter()
                .flat_map(|site| &site.tasks)
                .map(|task| task.label.clone())
                .collect();
            assert_eq!(labels, vec![Some(UPSTREAM_CONNECTION_LABEL.to_owned())]);
            assert!(snapshot.sites[0].site.file.ends_with("labels.rs"));
            let _ = release.send(());
            shared.await.unwrap();
        }));
    }
}
