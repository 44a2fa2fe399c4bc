//! The spawn hook's frame-pointer walk meets code built without frame
//! pointers: a trampoline that clobbers the frame-pointer register (as a C
//! function compiled with `-fomit-frame-pointer` may) and calls back into Rust,
//! which spawns. The walk must neither fault nor panic (a panic in tokio's
//! spawn hook makes `tokio::spawn` itself panic), and the task must still be
//! tracked with its spawn site.
//!
//! A separate test binary: before the walk was bounded, this crashed the
//! process.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::cell::RefCell;
use std::time::Duration;

use leakcheck::Tracker;

thread_local! {
    static SPAWNED_AT: RefCell<Option<u32>> = const { RefCell::new(None) };
}

/// Spawns a task that never ends, from Rust code called through the trampoline.
extern "C" fn spawn_from_foreign_frame() {
    let line = line!() + 1;
    tokio::spawn(std::future::pending::<()>());
    SPAWNED_AT.with(|at| *at.borrow_mut() = Some(line));
}

/// Calls `callback` with the frame-pointer register holding `garbage`, as a
/// frame without frame pointers that uses it as a general register would.
fn call_with_clobbered_frame_pointer(garbage: usize, callback: extern "C" fn()) {
    // SAFETY: rbp is saved and restored around the call, the stack is
    // realigned to 16 bytes for it (r12, callee-saved, keeps the old stack
    // pointer), and every register the C ABI lets `callback` clobber is
    // declared clobbered.
    unsafe {
        std::arch::asm!(
            "push rbp",
            "mov r12, rsp",
            "and rsp, -16",
            "mov rbp, {garbage}",
            "call {callback}",
            "mov rsp, r12",
            "pop rbp",
            garbage = in(reg) garbage,
            callback = in(reg) callback,
            out("r12") _,
            clobber_abi("C"),
        );
    }
}

#[test]
fn spawn_under_a_frame_without_frame_pointers_is_tracked() {
    // A value near the top of the address space (where `fp + 16` overflowed),
    // one just above the current stack, and a misaligned one.
    let here = &0u8 as *const u8 as usize;
    for garbage in [usize::MAX - 15, here + 4096, 0x1234_5679] {
        let tracker = Tracker::new();
        let mut builder = tokio::runtime::Builder::new_current_thread();
        tracker.install(builder.enable_all());
        let runtime = builder.build().unwrap();
        let report = runtime
            .block_on(async {
                let guard = leakcheck::verify_none().grace(Duration::from_millis(10));
                call_with_clobbered_frame_pointer(garbage, spawn_from_foreign_frame);
                guard.verify().await
            })
            .expect_err("the task spawned through the trampoline is caught");
        let line = SPAWNED_AT.with(|at| at.borrow_mut().take()).unwrap();
        assert_eq!(report.leaked, 1, "{garbage:#x}: {report}");
        assert_eq!(report.sites[0].site.line, line, "{report}");
        assert!(report.sites[0].site.file.ends_with("tests/frame_walk.rs"));
    }
}
