//! Labels for tasks, such as a request id: every task spawned while a
//! [`Labeled`] future is polled, and every descendant of such a task, carries
//! the label in snapshots and reports.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use crate::registry::Label;

thread_local! {
    /// The label of the [`Labeled`] future being polled on this thread,
    /// borrowed from it: it holds the `Arc` for as long as its poll runs.
    static CURRENT: Cell<Option<NonNull<Label>>> = const { Cell::new(None) };
}

/// Set once any label is polled, so trackers of programs that never label
/// skip the parent lookup labels need.
static EVER_USED: AtomicBool = AtomicBool::new(false);

/// Runs `future` with `label` attached to the tasks it spawns.
///
/// ```no_run
/// # async fn handle() {}
/// # async fn serve(request_id: String) {
/// leakcheck::labeled(request_id, handle()).await;
/// # }
/// ```
pub fn labeled<F: Future>(label: impl Into<Arc<str>>, future: F) -> Labeled<F> {
    Labeled {
        label: Arc::new(Label::new(label.into())),
        future,
    }
}

/// A future whose spawned tasks carry a label; see [`labeled`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Labeled<F> {
    label: Arc<Label>,
    future: F,
}

impl<F: Future> Future for Labeled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of
        // `self`, and `Labeled` has no Drop impl or Unpin impl of its own.
        let this = unsafe { self.get_unchecked_mut() };
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        EVER_USED.store(true, Ordering::Relaxed);
        let label = Some(NonNull::from(&*this.label));
        let previous = CURRENT.with(|current| current.replace(label));
        // Restore the outer label even if the inner future panics.
        struct Restore(Option<NonNull<Label>>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let _ = CURRENT.try_with(|current| current.set(self.0));
            }
        }
        let _restore = Restore(previous);
        future.poll(cx)
    }
}

/// The label of the future being polled on this thread, if any, borrowed:
/// valid until that poll returns (so for the whole of a spawn hook run in it).
pub(crate) fn current() -> Option<NonNull<Label>> {
    if !EVER_USED.load(Ordering::Relaxed) {
        return None;
    }
    CURRENT.try_with(Cell::get).ok().flatten()
}

pub(crate) fn ever_used() -> bool {
    EVER_USED.load(Ordering::Relaxed)
}
