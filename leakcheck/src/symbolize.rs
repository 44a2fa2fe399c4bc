//! Turns interned spawn stacks into frames a person can read: symbols resolved
//! once per stack (only for tasks that are reported), frames of tokio,
//! leakcheck, the standard library and the test harness trimmed away, paths
//! made workspace-relative.

use std::sync::OnceLock;

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::capture::{self, StackId};
use crate::report::Frame;

/// Most frames kept per resolved stack, after trimming: every user frame
/// [`capture::MAX_FRAMES`] leaves room for. The text report folds repeated
/// ones (see `report`); the JSON keeps them all.
const MAX_USER_FRAMES: usize = 52;

/// Crates whose frames say nothing about where the user spawned.
const PLUMBING_CRATES: &[&str] = &[
    "tokio",
    "leakcheck",
    "core",
    "std",
    "alloc",
    "backtrace",
    "test",
    "futures_util",
    "futures_core",
    "futures_executor",
    "tracing",
    "tracing_futures",
    "parking_lot",
];

/// The user's frames of `stack`, innermost (the caller of `spawn`) first.
pub(crate) fn resolve(stack: StackId) -> Vec<Frame> {
    static CACHE: OnceLock<Mutex<FxHashMap<StackId, Vec<Frame>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(frames) = cache.lock().get(&stack) {
        return frames.clone();
    }
    let frames = resolve_uncached(stack);
    cache.lock().insert(stack, frames.clone());
    frames
}

fn resolve_uncached(stack: StackId) -> Vec<Frame> {
    let mut frames = Vec::new();
    for &addr in capture::addresses(stack).iter() {
        // A return address points after the call; step back into it so the
        // line is the call's, not the next statement's.
        let pc = addr.saturating_sub(1) as *mut std::ffi::c_void;
        backtrace::resolve(pc, |symbol| {
            let Some(name) = symbol.name() else { return };
            let file = symbol.filename();
            let function = crate::modules::qualify(format!("{name:#}"), file);
            if is_plumbing(&function) {
                return;
            }
            frames.push(Frame {
                function,
                file: file.map(|f| crate::paths::relative(&f.to_string_lossy())),
                line: symbol.lineno(),
            });
        });
    }
    // Repeated frames (recursion) are kept: the text report folds them.
    frames.truncate(MAX_USER_FRAMES);
    frames
}

/// Whether a demangled function path belongs to runtime or harness plumbing.
pub(crate) fn is_plumbing(function: &str) -> bool {
    let path = function
        .trim_start_matches('<')
        .trim_start_matches('&')
        .trim_start_matches("dyn ");
    let krate = path.split("::").next().unwrap_or(path);
    PLUMBING_CRATES.contains(&krate)
        || path.starts_with("__")
        || path.starts_with("_start")
        || path.starts_with("start_thread")
        || path.starts_with("clone")
        || path.starts_with("main")
        // libtest's `<fn() -> Result<(), String> as FnOnce<()>>::call_once`.
        || path.starts_with("fn(")
}

#[cfg(test)]
mod tests {
    use super::is_plumbing;

    #[test]
    fn plumbing_is_recognised() {
        assert!(is_plumbing("tokio::runtime::task::core::Core<T,S>::poll"));
        assert!(is_plumbing(
            "<core::pin::Pin<P> as core::future::future::Future>::poll"
        ));
        assert!(is_plumbing("std::panicking::try"));
        assert!(is_plumbing("leakcheck::tracker::Inner::on_spawn"));
        assert!(is_plumbing(
            "<fn() -> core::result::Result<(), alloc::string::String> as core::ops::function::FnOnce<()>>::call_once"
        ));
        assert!(!is_plumbing("my_server::conn::accept_loop::{{closure}}"));
        assert!(!is_plumbing(
            "<my_server::Body as core::future::Future>::poll"
        ));
    }
}
