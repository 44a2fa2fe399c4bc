//! Extra heap bytes per live tracked task: 100,000 pending tasks on an
//! untracked runtime and on tracked ones (spawn sites only, full
//! backtraces), counted by a global allocator wrapper in this one process.
//! `cargo bench -p leakcheck --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use leakcheck::{BacktraceMode, Tracker};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TASKS: usize = 100_000;

/// Heap bytes held while `TASKS` pending tasks are alive, minus before.
fn held_bytes(tracker: Option<Tracker>) -> isize {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    if let Some(tracker) = &tracker {
        tracker.install(&mut builder);
    }
    let runtime = builder.build().unwrap();
    let (release, wait) = tokio::sync::watch::channel(());
    let held = runtime.block_on(async {
        let guard = tracker.as_ref().map(|_| leakcheck::verify_none());
        let before = LIVE_BYTES.load(Ordering::SeqCst);
        let handles: Vec<_> = (0..TASKS)
            .map(|_| {
                let mut wait = wait.clone();
                tokio::spawn(async move { wait.changed().await.ok() })
            })
            .collect();
        tokio::task::yield_now().await;
        let held = LIVE_BYTES.load(Ordering::SeqCst) - before;
        release.send(()).unwrap();
        for handle in handles {
            handle.await.unwrap();
        }
        if let Some(guard) = guard {
            guard.verify().await.unwrap();
        }
        held
    });
    drop(runtime);
    held
}

fn main() {
    // Warm up lazily initialised statics (stack table, runtime map).
    held_bytes(Some(
        Tracker::builder().backtrace(BacktraceMode::Full).build(),
    ));
    let untracked = held_bytes(None);
    let sites = held_bytes(Some(
        Tracker::builder().backtrace(BacktraceMode::Off).build(),
    ));
    let full = held_bytes(Some(
        Tracker::builder().backtrace(BacktraceMode::Full).build(),
    ));
    let per_task = |bytes: isize| bytes as f64 / TASKS as f64;
    println!("live tasks: {TASKS}");
    println!(
        "untracked:            {:>8.1} bytes/task",
        per_task(untracked)
    );
    println!(
        "leakcheck sites:      {:>8.1} bytes/task (+{:.1})",
        per_task(sites),
        per_task(sites - untracked)
    );
    println!(
        "leakcheck backtraces: {:>8.1} bytes/task (+{:.1})",
        per_task(full),
        per_task(full - untracked)
    );
    println!("target: at most +160 bytes per live tracked task");
}
