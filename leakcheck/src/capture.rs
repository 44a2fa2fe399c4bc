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

use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

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
        .cloned()
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
    let stop = POLL_FRAME.try_with(std::cell::Cell::get).unwrap_or(0);
    // SAFETY: `[sp, stack.high)` is the live part of the current thread's
    // stack: mapped, readable, and owned by this thread for as long as this
    // call runs.
    unsafe { walk_frames(frame_pointer(), sp, stack.high, stop, out) }
}

#[cfg(leakcheck_fp_walk)]
thread_local! {
    /// The frame record of the tokio function polling the task that runs on
    /// this thread now (0: none, or not known): the walk of a spawn made in
    /// that poll ends there, since everything above it is the scheduler's
    /// loop. Besides saving its loads, the cut keeps one spawn path one
    /// stack: the loop polls a task from half a dozen call sites, each of
    /// which would otherwise make another stack of every spawn path.
    static POLL_FRAME: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the start of a poll of user code: called first thing in a frame
/// whose caller goes on to poll it — the before-poll hook's closure, which
/// tokio calls through a function pointer from the frame that polls the task,
/// or the `#[inline(never)]` function through which the test harness polls
/// a test body. That frame's own record holds its caller's, where the walk
/// of a spawn made in the poll then ends.
#[inline(always)]
pub(crate) fn poll_started() {
    #[cfg(leakcheck_fp_walk)]
    {
        let own = frame_pointer();
        // SAFETY: with frame pointers forced (the cfg), the frame-pointer
        // register of the running function points at its own frame record,
        // whose first word is the caller's record address.
        let caller = unsafe { std::ptr::read_volatile(own as *const usize) };
        let _ = POLL_FRAME.try_with(|frame| frame.set(caller));
    }
}

/// Marks the end of a poll begun by [`poll_started`]; a nested poll on this
/// thread (a runtime driven inside a task) leaves the outer one with no mark,
/// and so with the whole walk, which is always right.
#[inline]
pub(crate) fn poll_ended() {
    #[cfg(leakcheck_fp_walk)]
    let _ = POLL_FRAME.try_with(|frame| frame.set(0));
}

/// Follows a chain of frame records (`[saved frame pointer, return address]`)
/// starting at `fp`, storing return addresses into `out`; returns how many.
/// The record at `stop` (if the chain reaches it) and those above it are
/// left out: an exact match is the live frame that record belongs to, an
/// ancestor of this call; an address no record has cuts nothing.
///
/// Every record read lies inside `[low, high)`, is aligned, and sits strictly
/// above the previous one; the walk stops at the first record that does not,
/// so a corrupt or foreign chain ends it instead of being followed.
///
/// # Safety
/// `[low, high)` must be readable memory for the duration of the call.
#[cfg_attr(not(leakcheck_fp_walk), allow(dead_code))]
unsafe fn walk_frames(
    mut fp: usize,
    low: usize,
    high: usize,
    stop: usize,
    out: &mut [usize],
) -> usize {
    const WORD: usize = std::mem::size_of::<usize>();
    let mut len = 0;
    while len < out.len() {
        if fp == stop || fp < low || fp % WORD != 0 {
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

/// Identity of a stack: two independent keyed hashes of its addresses, so
/// that interning compares 16 bytes found without a lock instead of every
/// address of a stack stored on some other (cold) cache line.
///
/// Stacks are merged on equal digests alone, without comparing addresses; a
/// false merge is possible but provably negligible. Each half is a
/// multilinear hash over the field of the Mersenne prime p = 2⁶¹ − 1,
/// `Σ kᵢ·aᵢ mod p`, with one key per frame position drawn uniformly from
/// [0, p) once per process (from the OS's randomness, through std's
/// `RandomState`), independently of any stack. Two distinct stacks, padded
/// with zeros to `MAX_FRAMES` (a stored address is never zero), differ at
/// some position, so each half collides with probability exactly 1/p and
/// both with 1/p² < 2⁻¹²¹. Over n distinct stacks in a process that is at
/// most n²·2⁻¹²²: below 2⁻⁸¹ for a million stacks, below 2⁻⁵⁸ at the 2³²
/// limit of [`StackId`]. Every address must be below p for the bound;
/// addresses from 2⁶⁰ up (no user-space code lives there on the platforms
/// with a frame-pointer walk) end the stack, like the walk's other signs of
/// a garbage chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Digest([u64; 2]);

const MERSENNE_61: u64 = (1 << 61) - 1;

/// Addresses from here up are not kept (see [`Digest`]).
const ADDRESS_LIMIT: usize = 1 << 60;

/// The per-position keys of [`Digest`], the two halves' keys side by side so
/// that a frame's pair is read from one cache line.
fn digest_keys() -> &'static [[u64; 2]; MAX_FRAMES] {
    static KEYS: OnceLock<[[u64; 2]; MAX_FRAMES]> = OnceLock::new();
    KEYS.get_or_init(|| {
        // SipHash-1-3 keyed with fresh OS randomness, over a counter: a
        // stream independent of every stack. Rejection keeps each key
        // uniform over [0, p).
        let random = std::collections::hash_map::RandomState::new();
        let mut counter = 0u64;
        let mut next_key = || loop {
            counter += 1;
            let candidate = random.hash_one(counter) >> 3;
            if candidate < MERSENNE_61 {
                return candidate;
            }
        };
        std::array::from_fn(|_| [next_key(), next_key()])
    })
}

/// `v mod p` for the sums [`digest`] builds (below 2¹²⁸).
fn reduce(v: u128) -> u64 {
    let p = u128::from(MERSENNE_61);
    // Each fold keeps the value's residue: 2⁶¹ ≡ 1 (mod p).
    let v = (v & p) + (v >> 61);
    let v = (v & p) + (v >> 61);
    let v = v as u64;
    if v >= MERSENNE_61 { v - MERSENNE_61 } else { v }
}

/// The digest of `frames` (at most `MAX_FRAMES`), or `None` if one of them
/// is zero or from [`ADDRESS_LIMIT`] up (see [`usable_len`]).
fn digest(frames: &[usize]) -> Option<Digest> {
    let keys = digest_keys();
    let (mut low, mut high) = (0u128, 0u128);
    let (mut all, mut least) = (0, usize::MAX);
    // Each product is below 2⁶⁰·2⁶¹: 64 of them sum below 2¹²⁷.
    for (&address, &[k0, k1]) in frames.iter().zip(keys.iter()) {
        all |= address;
        least = least.min(address);
        let a = address as u128;
        low += a * u128::from(k0);
        high += a * u128::from(k1);
    }
    (all < ADDRESS_LIMIT && least != 0).then(|| Digest([reduce(low), reduce(high)]))
}

/// How many of `frames` to keep: up to the first address [`digest`] cannot
/// take (zero or from [`ADDRESS_LIMIT`] up), which cannot be a return
/// address into user code.
fn usable_len(frames: &[usize]) -> usize {
    frames
        .iter()
        .position(|&a| a == 0 || a >= ADDRESS_LIMIT)
        .unwrap_or(frames.len())
}

struct StackTable {
    /// Interned stacks; `StackId(n)` is `stacks[n - 1]`. Never freed: an
    /// interned stack is referenced by id from records and reports for the
    /// rest of the process.
    stacks: RwLock<Vec<Box<[usize]>>>,
    /// The current digest table, read without a lock (see [`FastSlot`]).
    /// Replaced by one twice as large when half full (a smaller table keeps
    /// more of its lines in cache); replaced tables are leaked, not freed,
    /// since a lookup may still be reading one (together they stay below the
    /// current one's size).
    fast: AtomicPtr<FastTable>,
    /// The lock every insert takes, and what the largest table has no room
    /// for.
    slow: Mutex<SlowIndex>,
    /// Whether `slow` holds any digest (lookups skip its lock otherwise).
    slow_used: AtomicBool,
}

#[derive(Default)]
struct SlowIndex {
    /// Digests interned once the largest table was half full.
    map: FxHashMap<Digest, StackId>,
    /// Digests in the current table.
    fast_len: usize,
}

/// Slots of the first digest table (32 KiB, taken at the first spawn
/// backtrace), and of the largest (2 MiB, for 32,768 stacks).
const FIRST_FAST_SLOTS: usize = 1_024;
const MAX_FAST_SLOTS: usize = 65_536;

struct FastTable {
    /// Length a power of two; at most half full, so probes stay short.
    slots: Box<[FastSlot]>,
}

/// One digest → id entry, written once and never changed: a reader that sees
/// `tag` (published last, with release) also sees the rest.
#[repr(align(32))]
#[derive(Default)]
struct FastSlot {
    /// The digest's first half with the top bit set; 0 while empty.
    tag: AtomicU64,
    second: AtomicU64,
    id: AtomicU32,
}

const TAGGED: u64 = 1 << 63;

fn table() -> &'static StackTable {
    static TABLE: OnceLock<StackTable> = OnceLock::new();
    TABLE.get_or_init(|| StackTable {
        stacks: RwLock::new(Vec::new()),
        fast: AtomicPtr::new(Box::into_raw(Box::new(FastTable::new(FIRST_FAST_SLOTS)))),
        slow: Mutex::new(SlowIndex::default()),
        slow_used: AtomicBool::new(false),
    })
}

/// Where the probe of a digest found it, or the free slot that ends its
/// probe sequence.
enum Probe {
    Found(StackId),
    Free(usize),
}

impl FastTable {
    fn new(slots: usize) -> FastTable {
        FastTable {
            slots: (0..slots).map(|_| FastSlot::default()).collect(),
        }
    }

    fn probe(&self, digest: Digest) -> Probe {
        let tag = digest.0[0] | TAGGED;
        let mask = self.slots.len() - 1;
        // The low bits of a uniform residue: uniform over the slots. At most
        // half full, a free slot is always reached.
        let mut index = digest.0[0] as usize & mask;
        loop {
            let slot = &self.slots[index];
            match slot.tag.load(Ordering::Acquire) {
                0 => return Probe::Free(index),
                held if held == tag && slot.second.load(Ordering::Relaxed) == digest.0[1] => {
                    let id = NonZeroU32::new(slot.id.load(Ordering::Relaxed))
                        .expect("a published slot holds an id");
                    return Probe::Found(StackId(id));
                }
                _ => index = (index + 1) & mask,
            }
        }
    }

    /// Publishes `digest` → `id` in the free slot `index`; under the insert
    /// lock.
    fn publish(&self, index: usize, digest: Digest, id: StackId) {
        let slot = &self.slots[index];
        slot.second.store(digest.0[1], Ordering::Relaxed);
        slot.id.store(id.0.get(), Ordering::Relaxed);
        slot.tag.store(digest.0[0] | TAGGED, Ordering::Release);
    }
}

impl StackTable {
    fn fast(&self) -> &FastTable {
        // SAFETY: the pointer comes from `Box::into_raw` and tables are never
        // freed.
        unsafe { &*self.fast.load(Ordering::Acquire) }
    }
}

fn intern(mut frames: &[usize]) -> Option<StackId> {
    let digest = match digest(frames) {
        Some(digest) => digest,
        None => {
            frames = &frames[..usable_len(frames)];
            digest(frames)?
        }
    };
    if frames.is_empty() {
        return None;
    }
    let table = table();
    if let Probe::Found(id) = table.fast().probe(digest) {
        return Some(id);
    }
    if table.slow_used.load(Ordering::Acquire) {
        if let Some(&id) = table.slow.lock().map.get(&digest) {
            return Some(id);
        }
    }
    intern_new(table, frames, digest)
}

/// Interns a stack the lock-free lookup did not find (it may have been
/// interned since); `None` once 2³² − 1 distinct stacks are interned: later
/// ones go without.
#[cold]
fn intern_new(table: &StackTable, frames: &[usize], digest: Digest) -> Option<StackId> {
    let mut slow = table.slow.lock();
    let mut fast = table.fast();
    if let Probe::Found(id) = fast.probe(digest) {
        return Some(id);
    }
    if let Some(&id) = slow.map.get(&digest) {
        return Some(id);
    }
    let mut stacks = table.stacks.write();
    let id = StackId(NonZeroU32::new(u32::try_from(stacks.len() + 1).ok()?)?);
    stacks.push(frames.into());
    drop(stacks);
    if slow.fast_len + 1 > fast.slots.len() / 2 && fast.slots.len() < MAX_FAST_SLOTS {
        let larger = FastTable::new(fast.slots.len() * 2);
        for slot in fast.slots.iter() {
            let tag = slot.tag.load(Ordering::Relaxed);
            if tag == 0 {
                continue;
            }
            let old = Digest([tag & !TAGGED, slot.second.load(Ordering::Relaxed)]);
            let id = NonZeroU32::new(slot.id.load(Ordering::Relaxed))
                .expect("a published slot holds an id");
            if let Probe::Free(index) = larger.probe(old) {
                larger.publish(index, old, StackId(id));
            }
        }
        let larger = Box::into_raw(Box::new(larger));
        table.fast.store(larger, Ordering::Release);
        // SAFETY: just leaked, never freed.
        fast = unsafe { &*larger };
    }
    match fast.probe(digest) {
        Probe::Free(index) if slow.fast_len < fast.slots.len() / 2 => {
            fast.publish(index, digest, id);
            slow.fast_len += 1;
        }
        _ => {
            slow.map.insert(digest, id);
            table.slow_used.store(true, Ordering::Release);
        }
    }
    Some(id)
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
        let len = unsafe { walk_frames(base, base, high, 0, &mut out) };
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
        let len = unsafe { walk_frames(base, base, base + 4 * WORD, 0, &mut out) };
        drop(buffer);
        assert_eq!(&out[..len], [0x10]);
    }

    #[test]
    fn a_frame_pointer_near_the_end_of_the_address_space_does_not_overflow() {
        let mut out = [0; MAX_FRAMES];
        for fp in [usize::MAX - 15, usize::MAX - 7, usize::MAX & !7] {
            // SAFETY: nothing is read: no record fits below `usize::MAX`
            // starting at `fp` (that check is what this test pins).
            let len = unsafe { walk_frames(fp, 0, usize::MAX, 0, &mut out) };
            assert_eq!(len, 0, "{fp:#x}");
        }
    }

    #[test]
    fn a_frame_pointer_below_the_stack_pointer_is_not_read() {
        let buffer = [0usize; 4];
        let base = buffer.as_ptr() as usize;
        let mut out = [0; MAX_FRAMES];
        // SAFETY: nothing below `base + 2 words` is read.
        let len = unsafe { walk_frames(base, base + 2 * WORD, base + 4 * WORD, 0, &mut out) };
        assert_eq!(len, 0);
    }

    #[test]
    fn interning_survives_table_growth_and_keeps_stacks_apart() {
        // Forged stacks of three lengths, far more than the first table
        // holds: each gets its own id, the same id again later, and its own
        // addresses back.
        let stacks: Vec<Vec<usize>> = (1..=5_000usize)
            .map(|n| (0..1 + n % 3).map(|i| 0x7000_0000 + n * 16 + i).collect())
            .collect();
        let ids: Vec<StackId> = stacks.iter().map(|s| intern(s).unwrap()).collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), stacks.len());
        for (stack, id) in stacks.iter().zip(&ids) {
            assert_eq!(intern(stack), Some(*id));
            assert_eq!(&*addresses(*id), &stack[..]);
        }
        // A prefix is another stack (zero padding cannot merge them).
        assert_ne!(intern(&stacks[1][..1]), Some(ids[1]));
    }

    #[test]
    fn addresses_the_digest_cannot_take_end_the_stack() {
        assert_eq!(usable_len(&[0x10, 0x20, 0x30]), 3);
        assert_eq!(usable_len(&[0x10, 0, 0x30]), 1);
        assert_eq!(usable_len(&[0x10, 0x20, ADDRESS_LIMIT]), 2);
        assert_eq!(usable_len(&[usize::MAX]), 0);
        assert_eq!(intern(&[usize::MAX, 0x10]), None);
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

    fn function_names(id: StackId) -> Vec<String> {
        let mut names = Vec::new();
        for addr in addresses(id).iter() {
            backtrace::resolve((*addr - 1) as *mut std::ffi::c_void, |symbol| {
                if let Some(name) = symbol.name() {
                    names.push(format!("{name:#}"));
                }
            });
        }
        names
    }

    #[cfg(all(leakcheck_fp_walk, tokio_unstable))]
    #[test]
    fn a_capture_inside_a_task_ends_at_the_poll() {
        let tracker = crate::Tracker::builder()
            .backtrace(crate::BacktraceMode::Full)
            .build();
        let mut builder = tokio::runtime::Builder::new_current_thread();
        tracker.install(&mut builder);
        let runtime = builder.build().unwrap();
        let (in_task, in_body) = runtime.block_on(async {
            let in_task = tokio::spawn(async { capture_here() }).await.unwrap();
            (in_task.unwrap(), capture_here().unwrap())
        });
        let in_task = function_names(in_task);
        let in_body = function_names(in_body);
        let polled_by_block_on = |names: &[String]| names.iter().any(|n| n.contains("block_on"));
        assert!(polled_by_block_on(&in_body), "control: {in_body:#?}");
        assert!(
            !polled_by_block_on(&in_task),
            "the scheduler's frames are cut: {in_task:#?}"
        );
        assert!(
            in_task
                .iter()
                .any(|n| n.contains("a_capture_inside_a_task_ends_at_the_poll")),
            "the task's own frames are kept: {in_task:#?}"
        );
    }

    #[cfg(leakcheck_fp_walk)]
    #[test]
    fn a_capture_in_a_test_body_ends_at_the_harness() {
        let config = crate::harness::TestConfig {
            name: "leakcheck::capture::tests::a_capture_in_a_test_body_ends_at_the_harness",
            flavor: crate::harness::Flavor::CurrentThread,
            grace: None,
            ignore: &[],
            mode: None,
            expects_panic: false,
            named_by_libtest: false,
        };
        let mut in_body = None;
        crate::harness::run_test(
            config,
            tokio::runtime::Builder::new_current_thread(),
            async { in_body = capture_here() },
        );
        let names = function_names(in_body.expect("a stack was captured"));
        // The last frame kept is the harness closure that calls `poll_body`;
        // none of the runtime's, the harness function's or libtest's.
        let above_the_body = |names: &[String]| {
            names.iter().any(|n| {
                n.contains("block_on")
                    || n == "leakcheck::harness::run_test"
                    || n.contains("__rust_begin_short_backtrace")
            })
        };
        assert!(
            !above_the_body(&names),
            "the walk ends at the harness: {names:#?}"
        );
        assert!(
            names
                .iter()
                .any(|n| n.contains("a_capture_in_a_test_body_ends_at_the_harness")),
            "the body's own frames are kept: {names:#?}"
        );
        // Control: the same capture outside the harness reaches both.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let control = function_names(runtime.block_on(async { capture_here() }).unwrap());
        assert!(above_the_body(&control), "control: {control:#?}");
    }

    #[test]
    fn captured_stack_resolves_to_this_test() {
        let id = capture_here().unwrap();
        let addrs = addresses(id);
        assert!(addrs.len() >= 3 && addrs.len() <= MAX_FRAMES);
        let names = function_names(id);
        assert!(
            names
                .iter()
                .any(|n| n.contains("captured_stack_resolves_to_this_test")),
            "the walk reaches the calling test: {names:#?}"
        );
    }
}
