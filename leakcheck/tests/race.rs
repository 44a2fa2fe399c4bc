//! Tasks that end exactly as the body returns are not leaks. On a
//! multi-thread runtime tokio fires the terminate hook after waking the
//! JoinHandle, so a single look right after `.await` would see them alive;
//! verify must wait for the event instead. Repeated to catch the race.

#![cfg(tokio_unstable)]

mod common;

use std::time::Duration;

use common::{Flavor, scoped};

const ROUNDS: usize = 300;

#[test]
fn joined_just_before_return_never_alarms() {
    for round in 0..ROUNDS {
        let verdict = scoped(Flavor::Multi, Duration::from_millis(250), || async {
            let handles: Vec<_> = (0..8).map(|i| tokio::spawn(async move { i * 2 })).collect();
            for handle in handles {
                handle.await.unwrap();
            }
        });
        if let Err(report) = verdict {
            panic!("false alarm in round {round}:\n{report}");
        }
    }
}

#[test]
fn released_as_the_body_returns_never_alarms() {
    for round in 0..ROUNDS {
        let verdict = scoped(Flavor::Multi, Duration::from_millis(250), || async {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let _ = rx.await;
            });
            tokio::task::yield_now().await;
            // The task ends on another worker while verify starts.
            tx.send(()).unwrap();
        });
        if let Err(report) = verdict {
            panic!("false alarm in round {round}:\n{report}");
        }
    }
}
