//! Spawn backtraces cheap enough to take on every spawn: raw return addresses
//! captured in the spawn hook, interned so that identical stacks are stored
//! once, and resolved to symbols only when a task leaks (see `symbolize`).
//!
//! On Linux x86_64/aarch64 with frame pointers forced (`-C
//! force-frame-pointers=yes`, detected by the build script; std ships with
//! them) the capture is a hand-written, bounded frame-pointer walk: no crate
//! offers one that is both safe on arbitrary threads and this cheap (~0.1 µs
//! against ~2–13 µs for DWARF unwinding). It runs inside tokio's spawn hook,
//! where a fault or a panic would take the spawning code down, so the walk
//! never trusts a saved frame pointer: it reads only between the current stack
//! pointer and the top of the current thread's stack (both ends cached per
//! thread), with checked arithmetic at every step, and stops unless each frame
//! lies strictly above the previous one. A frame compiled without frame
//! pointers (C code, a hand-written trampoline) leaves garbage in the chain; the
//! walk then ends early instead of following it. Where the stack pointer is not
//! inside the thread's own stack (a signal handler on `sigaltstack`, a stackful
//! coroutine) the bounds say nothing about the memory in use, and the capture
//! falls back to the unwinder, `backtrace::trace_unsynchronized`, as it does on
//! builds without frame pointers.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::OnceLock;

use parking_lot::RwLock;
use rustc_hash::{FxBuildHasher, FxHashMap};

/// Most return addresses kept per spawn backtrace: the ~13 frames of
/// tokio's spawn path and leakcheck's hook (debug build), then room for 50
/// user frames, so a spawn made through 40 layers of helpers or middleware
/// still shows the test body that started it.
pub(crate) const MAX_FRAMES: usize = 64;

/// Handle to an interned stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StackId(NonZeroU32);

/// Captures the current thread's stack and returns its interned id.
#[inline]
pub(crate) fn capture() -> Option<StackId> {
    let mut frames = [0usize; MAX_FRAMES];
    let len = walk(&mut frames);
    if len == 0 {
        return None;
    }
    intern(&frames[..len])
}

/// The addresses of an interned stack, innermost first.
pub(crate) fn addresses(id: StackId) -> Box<[usize]> {
    let stacks = table().stacks.read();
    stacks
        .get(id.0.get() as usize - 1)
        .map(|frames| Box::from(*frames))
        .unwrap_or_default()
}

#[cfg(leakcheck_fp_walk)]
fn walk(out: &mut [usize; MAX_FRAMES]) -> usize {
    let Some(stack) = thread_stack() else {
        return unwind(out);
    };
    let sp = stack_pointer();
    if !stack.contains(sp) {
        // Not on the thread's own stack: its bounds do not apply.
        return unwind(out);
    }
    // SAFETY: `[sp, stack.high)` is the live part of the current thread's
    // stack: mapped, readable, and owned by this thread for as long as this
    // call runs.
    unsafe { walk_frames(frame_pointer(), sp, stack.high, out) }
}

/// Follows a chain of frame records (`[saved frame pointer, return address]`)
/// starting at `fp`, storing return addresses into `out`; returns how many.
///
/// Every record read lies inside `[low, high)`, is aligned, and sits strictly
/// above the previous one; the walk stops at the first record that does not,
/// so a corrupt or foreign chain ends it instead of being followed.
///
/// # Safety
/// `[low, high)` must be readable memory for the duration of the call.
#[cfg_attr(not(leakcheck_fp_walk), allow(dead_code))]
unsafe fn walk_frames(mut fp: usize, low: usize, high: usize, out: &mut [usize]) -> usize {
    const WORD: usize = std::mem::size_of::<usize>();
    let mut len = 0;
    while len < out.len() {
        if fp < low || fp % WORD != 0 {
            break;
        }
        let Some(record_end) = fp.checked_add(2 * WORD) else {
            break;
        };
        if record_end > high {
            break;
        }
        // SAFETY: `[fp, fp + 2 words)` is aligned and inside `[low, high)`,
        // readable by the caller's contract.
        let (next, ret) = unsafe {
            (
                std::ptr::read_volatile(fp as *const usize),
                std::ptr::read_volatile((fp + WORD) as *const usize),
            )
        };
        if ret == 0 {
            break;
        }
        out[len] = ret;
        len += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    len
}

#[cfg(all(leakcheck_fp_walk, target_arch = "x86_64"))]
#[inline(always)]
fn frame_pointer() -> usize {
    let fp: usize;
    // SAFETY: reads a register, touches no memory.
    unsafe {
        std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags))
    };
    fp
}

#[cfg(all(leakcheck_fp_walk, target_arch = "aarch64"))]
#[inline(always)]
fn frame_pointer() -> usize {
    let fp: usize;
    // SAFETY: reads a register, touches no memory.
    unsafe {
        std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags))
    };
    fp
}

/// An address inside the current frame: a lower bound for every live frame
/// record above it.
#[cfg(leakcheck_fp_walk)]
#[inline(always)]
fn stack_pointer() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// The address range of a thread's own stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(leakcheck_fp_walk), allow(dead_code))]
struct StackBounds {
    low: usize,
    high: usize,
}

impl StackBounds {
    #[cfg_attr(not(leakcheck_fp_walk), allow(dead_code))]
    fn contains(&self, addr: usize) -> bool {
        self.low <= addr && addr < self.high
    }
}

/// Bounds of the current thread's stack, queried once per thread; `None` when
/// the system cannot tell (the walk then falls back to the unwinder).
#[cfg(leakcheck_fp_walk)]
fn thread_stack() -> Option<StackBounds> {
    use std::cell::Cell;
    /// Not yet queried.
    const UNKNOWN: Option<Option<StackBounds>> = None;
    thread_local! {
        static BOUNDS: Cell<Option<Option<StackBounds>>> = const { Cell::new(UNKNOWN) };
    }
    BOUNDS
        .try_with(|bounds| match bounds.get() {
            Some(known) => known,
            None => {
                let queried = query_thread_stack();
                bounds.set(Some(queried));
                queried
            }
        })
        .ok()
        .flatten()
}

#[cfg(leakcheck_fp_walk)]
fn query_thread_stack() -> Option<StackBounds> {
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread; it is
    // destroyed before returning.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return None;
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        let low = addr as usize;
        let high = low.checked_add(size)?;
        (ok && low < high).then_some(StackBounds { low, high })
    }
}

/// The unwinder's capture, for stacks the frame-pointer walk cannot vouch for.
fn unwind(out: &mut [usize; MAX_FRAMES]) -> usize {
    let mut len = 0;
    // SAFETY: the unwinder used on the supported platforms is thread-safe;
    // `trace_unsynchronized` only skips backtrace's global lock, which would
    // otherwise serialize every spawn in the process.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let Some(slot) = out.get_mut(len) else {
                return false;
            };
            *slot = frame.ip() as usize;
            len += 1;
            len < MAX_FRAMES
        });
    }
    len
}

#[cfg(not(leakcheck_fp_walk))]
fn walk(out: &mut [usize; MAX_FRAMES]) -> usize {
    unwind(out)
}

/// Shards of the intern index, picked by the stack's hash, so that misses of
/// the per-thread caches on two workers rarely take the same lock.
const INDEX_SHARDS: usize = 16;

struct StackTable {
    /// Interned stacks; `StackId(n)` is `stacks[n - 1]`. Never freed: an
    /// interned stack is referenced by id from records and reports for the
    /// rest of the process, so its addresses are leaked into `&'static`
    /// slices that the index and the per-thread caches share.
    stacks: RwLock<Vec<&'static [usize]>>,
    index: [IndexShard; INDEX_SHARDS],
}

#[repr(align(128))]
#[derive(Default)]
struct IndexShard(RwLock<FxHashMap<&'static [usize], StackId>>);

fn table() -> &'static StackTable {
    static TABLE: OnceLock<StackTable> = OnceLock::new();
    TABLE.get_or_init(|| StackTable {
        stacks: RwLock::new(Vec::new()),
        index: std::array::from_fn(|_| IndexShard::default()),
    })
}

/// Entries of the per-thread cache in front of the shared index: enough for
/// a thousand distinct stacks (a server's request paths, a test spawning
/// from many helpers) at 32 bytes each.
const CACHE_SLOTS: usize = 1024;

#[derive(Clone, Copy)]
struct CacheSlot {
    hash: u64,
    /// The interned addresses themselves, not a copy: filling a slot writes
    /// 32 bytes.
    frames: &'static [usize],
    id: Option<StackId>,
}

thread_local! {
    // A spawn loop hits the same stacks again and again: a direct-mapped
    // cache per thread answers those without touching the shared index.
    static CACHE: RefCell<Vec<CacheSlot>> = const { RefCell::new(Vec::new()) };
}

fn intern(frames: &[usize]) -> Option<StackId> {
    let hash = FxBuildHasher.hash_one(frames);
    let slot = (hash as usize) % CACHE_SLOTS;
    let cached = CACHE.try_with(|cache| {
        let cache = cache.try_borrow().ok()?;
        let entry = cache.get(slot)?;
        (entry.hash == hash && entry.frames == frames)
            .then_some(entry.id)
            .flatten()
    });
    if let Ok(Some(id)) = cached {
        return Some(id);
    }
    let (id, interned) = intern_shared(frames, hash)?;
    let _ = CACHE.try_with(|cache| {
        let Ok(mut cache) = cache.try_borrow_mut() else {
            return;
        };
        if cache.is_empty() {
            let empty = CacheSlot {
                hash: 0,
                frames: &[],
                id: None,
            };
            cache.resize(CACHE_SLOTS, empty);
        }
        cache[slot] = CacheSlot {
            hash,
            frames: interned,
            id: Some(id),
        };
    });
    Some(id)
}

/// The id and interned addresses of `frames`; `None` once 2³² − 1 distinct
/// stacks are interned: later ones go without.
fn intern_shared(frames: &[usize], hash: u64) -> Option<(StackId, &'static [usize])> {
    let table = table();
    // The high half: the low bits already picked the per-thread cache slot.
    let shard = &table.index[(hash >> 32) as usize % INDEX_SHARDS].0;
    if let Some((interned, id)) = shard.read().get_key_value(frames) {
        return Some((*id, *interned));
    }
    let mut index = shard.write();
    if let Some((interned, id)) = index.get_key_value(frames) {
        return Some((*id, *interned));
    }
    let mut stacks = table.stacks.write();
    let id = StackId(NonZeroU32::new(u32::try_from(stacks.len() + 1).ok()?)?);
    let interned: &'static [usize] = Box::leak(frames.into());
    stacks.push(interned);
    drop(stacks);
    index.insert(interned, id);
    Some((id, interned))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORD: usize = std::mem::size_of::<usize>();

    /// Walks a forged stack: `records` are `(saved frame pointer, return
    /// address)` pairs laid out two words apart in one buffer, the saved frame
    /// pointer given as `Ok(index of another record)` or `Err(raw value)`.
    fn walk_forged(records: &[(Result<usize, usize>, usize)], cap: usize) -> Vec<usize> {
        let mut buffer: Vec<usize> = vec![0; records.len() * 2];
        let start = buffer.as_mut_ptr();
        let base = start as usize;
        for (i, (next, ret)) in records.iter().enumerate() {
            let next = match next {
                Ok(index) => base + index * 2 * WORD,
                Err(raw) => *raw,
            };
            // SAFETY: both words are inside `buffer`.
            unsafe {
                start.add(2 * i).write(next);
                start.add(2 * i + 1).write(*ret);
            }
        }
        let mut out = vec![0; cap];
        let high = base + buffer.len() * WORD;
        // SAFETY: `[base, high)` is `buffer`, alive until the end of this call.
        let len = unsafe { walk_frames(base, base, high, &mut out) };
        drop(buffer);
        out.truncate(len);
        out
    }

    #[test]
    fn forged_chain_is_followed_to_its_end() {
        let records = [(Ok(1), 0x10), (Ok(2), 0x20), (Err(0), 0x30)];
        assert_eq!(walk_forged(&records, MAX_FRAMES), [0x10, 0x20, 0x30]);
    }

    #[test]
    fn walk_stops_at_the_output_capacity() {
        let records = [(Ok(1), 0x10), (Ok(2), 0x20), (Err(0), 0x30)];
        assert_eq!(walk_forged(&records, 2), [0x10, 0x20]);
    }

    #[test]
    fn garbage_saved_frame_pointers_end_the_walk() {
        let beyond_the_stack = (Ok(1), 0x10);
        // A frame built without frame pointers leaves whatever the register
        // held: a huge value (where `fp + 16` used to overflow), a misaligned
        // one, one pointing back down the stack or at itself.
        for garbage in [usize::MAX - 15, usize::MAX - 7, 0x1234_5679, 1] {
            let records = [beyond_the_stack, (Err(garbage), 0x20)];
            assert_eq!(
                walk_forged(&records, MAX_FRAMES),
                [0x10, 0x20],
                "{garbage:#x}"
            );
        }
        let records = [(Ok(1), 0x10), (Ok(0), 0x20), (Ok(1), 0x30)];
        assert_eq!(walk_forged(&records, MAX_FRAMES), [0x10, 0x20], "a cycle");
        let records = [(Ok(1), 0x10), (Ok(1), 0x20)];
        assert_eq!(
            walk_forged(&records, MAX_FRAMES),
            [0x10, 0x20],
            "a self-loop"
        );
    }

    #[test]
    fn a_record_straddling_the_top_of_the_stack_is_not_read() {
        // One record at word 0 whose saved frame pointer names word 3: a
        // record there would end one word past the top of the stack.
        let stack = walk_forged(&[(Ok(1), 0x10), (Err(0), 0x20)], MAX_FRAMES);
        assert_eq!(stack, [0x10, 0x20], "control: the same chain in bounds");
        let mut buffer = vec![0usize; 4];
        let start = buffer.as_mut_ptr();
        let base = start as usize;
        // SAFETY: words 0 and 1 are inside `buffer`.
        unsafe {
            start.write(base + 3 * WORD);
            start.add(1).write(0x10);
        }
        let mut out = [0; MAX_FRAMES];
        // SAFETY: `[base, base + 4 words)` is `buffer`.
        let len = unsafe { walk_frames(base, base, base + 4 * WORD, &mut out) };
        drop(buffer);
        assert_eq!(&out[..len], [0x10]);
    }

    #[test]
    fn a_frame_pointer_near_the_end_of_the_address_space_does_not_overflow() {
        let mut out = [0; MAX_FRAMES];
        for fp in [usize::MAX - 15, usize::MAX - 7, usize::MAX & !7] {
            // SAFETY: nothing is read: no record fits below `usize::MAX`
            // starting at `fp` (that check is what this test pins).
            let len = unsafe { walk_frames(fp, 0, usize::MAX, &mut out) };
            assert_eq!(len, 0, "{fp:#x}");
        }
    }

    #[test]
    fn a_frame_pointer_below_the_stack_pointer_is_not_read() {
        let buffer = [0usize; 4];
        let base = buffer.as_ptr() as usize;
        let mut out = [0; MAX_FRAMES];
        // SAFETY: nothing below `base + 2 words` is read.
        let len = unsafe { walk_frames(base, base + 2 * WORD, base + 4 * WORD, &mut out) };
        assert_eq!(len, 0);
    }

    #[inline(never)]
    fn capture_here() -> Option<StackId> {
        capture()
    }

    #[test]
    fn identical_stacks_share_one_id() {
        let ids: Vec<_> = (0..3).map(|_| capture_here()).collect();
        assert!(ids[0].is_some(), "a stack was captured");
        assert_eq!(ids[0], ids[1]);
        assert_eq!(ids[1], ids[2]);
    }

    #[test]
    fn different_stacks_get_different_ids() {
        #[inline(never)]
        fn deeper() -> Option<StackId> {
            std::hint::black_box(capture_here())
        }
        assert_ne!(capture_here(), deeper());
    }

    #[test]
    fn captured_stack_resolves_to_this_test() {
        let id = capture_here().unwrap();
        let addrs = addresses(id);
        assert!(addrs.len() >= 3 && addrs.len() <= MAX_FRAMES);
        let mut names = Vec::new();
        for addr in addrs.iter() {
            backtrace::resolve((*addr - 1) as *mut std::ffi::c_void, |symbol| {
                if let Some(name) = symbol.name() {
                    names.push(format!("{name:#}"));
                }
            });
        }
        assert!(
            names
                .iter()
                .any(|n| n.contains("captured_stack_resolves_to_this_test")),
            "the walk reaches the calling test: {names:#?}"
        );
    }
}
