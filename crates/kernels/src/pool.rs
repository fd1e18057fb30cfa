//! The thread pool behind the parallel kernels, built for the decode loop.
//!
//! Decode runs about 200 matmuls per token of 10–200 µs each, so a few µs of dispatch per call (waking
//! futex-parked threads, or rayon's job injection and stealing) would cost several percent. Here the
//! workers spin on an epoch counter for a while after each job and only then block on a condvar: calls
//! that follow each other closely cost one cache-line handoff, and an idle process burns no CPU.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it blocks. Longer than the gaps between the matmuls of one
/// token (norms, attention, a few µs to a few tens of µs), shorter than a human-visible pause.
const SPIN: Duration = Duration::from_micros(200);

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets the number of threads parallel kernels use, the calling thread included (0 is taken as 1).
/// Takes effect at the next parallel call.
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// The number of threads parallel kernels use; defaults to `std::thread::available_parallelism`.
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            // A concurrent set_threads wins over the default.
            match THREADS.compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => n,
                Err(set) => set,
            }
        }
        n => n,
    }
}

/// Calls `f(i)` once for every i in 0..n on up to [`threads`] threads, the caller among them, and
/// returns when all calls have returned. Threads claim indices in order from a shared counter and the
/// caller waits only for claimed items, never for a worker that has not shown up (one whose core went
/// to another process), so such a worker costs nothing and the caller does its share. Runs everything
/// on the calling thread when one thread is configured or the pool is busy (another thread's call, or
/// a call from inside `f`). A panic in `f` is re-raised here once no thread uses `f` any more.
pub fn parallel_for(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let threads = threads();
    if threads == 1 || n <= 1 {
        return (0..n).for_each(f);
    }
    let mut slot = match POOL.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::WouldBlock) => return (0..n).for_each(f),
        // Only a panic re-raised by `Pool::run` poisons the lock, and it leaves the pool idle and whole.
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
    };
    if slot.as_ref().is_none_or(|p| p.workers.len() != threads - 1) {
        *slot = None; // joins the old workers before new ones start
        *slot = Some(Pool::new(threads - 1));
    }
    slot.as_ref().expect("pool was just created").run(n, f);
}

/// Splits `data` into consecutive chunks of `chunk` elements (the last may be shorter) and calls
/// `f(i, chunk_i)` for each, in parallel as [`parallel_for`] does.
pub fn parallel_chunks_mut<T: Send>(data: &mut [T], chunk: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
    assert!(chunk > 0, "parallel_chunks_mut: chunk must be positive");
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    parallel_for(len.div_ceil(chunk), &|i| {
        let start = i * chunk;
        // SAFETY: parallel_for passes each i exactly once, so the ranges [start, start + len) handed
        // out are disjoint and inside `data`, which stays mutably borrowed until parallel_for returns.
        let part = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), chunk.min(len - start)) };
        f(i, part);
    });
}

/// A raw pointer that may cross threads; users guarantee disjoint access.
struct SendPtr<T>(*mut T);
// SAFETY: only used by parallel_chunks_mut, which hands each thread a disjoint part of a `&mut [T]`
// with T: Send.
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    // A method rather than field access so closures capture the whole (Sync) wrapper.
    fn get(&self) -> *mut T {
        self.0
    }
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// The function of the current job, its lifetime erased (see `Pool::run`).
type Job = *const (dyn Fn(usize) + Sync + 'static);

/// `Shared::state` packs the job's epoch (high 32 bits) with the next unclaimed item (low 32 bits), so
/// one compare-and-swap claims an item of one particular job. Item bits all set mark an epoch whose job
/// is still being set up.
const ITEM_BITS: u32 = 32;
const ITEM_MASK: u64 = (1 << ITEM_BITS) - 1;

struct Shared {
    state: AtomicU64,
    /// Number of items of the current job.
    items: AtomicUsize,
    job: UnsafeCell<Job>,
    /// Items of the current job that have returned (or panicked).
    done: AtomicUsize,
    /// Set when an item panicked: the remaining items are claimed and counted but not run.
    panicked: AtomicBool,
    /// What the first panicking item panicked with.
    payload: Mutex<Option<Box<dyn Any + Send>>>,
    /// Workers blocked (or about to block) on `wake`.
    sleepers: AtomicUsize,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only in `Pool::run`, by the one thread holding POOL's lock, once every item
// of the previous job has been counted in `done` and the previous epoch closed (so nobody can claim one
// of its items any more), and before the store to `state` that opens the new epoch. Workers read it
// only after claiming an item of that epoch with an Acquire compare-and-swap on `state`, and `run`
// does not return, so does not write it again, before that item is counted in `done`. Every other
// field is a sync primitive.
unsafe impl Sync for Shared {}
// SAFETY: the raw `job` pointer is the only non-Send field; see Sync above.
unsafe impl Send for Shared {}

impl Shared {
    /// Claims and runs items of `epoch` until none are left (or a newer epoch has started).
    fn work(&self, epoch: u64) {
        loop {
            let cur = self.state.load(Ordering::Acquire);
            if cur >> ITEM_BITS != epoch {
                return;
            }
            if cur & ITEM_MASK == ITEM_MASK {
                // `run` is filling in this epoch's job: a few stores away.
                std::hint::spin_loop();
                continue;
            }
            let item = (cur & ITEM_MASK) as usize;
            // Acquire pairs with the Release store in `run`: a value of `items` newer than `cur`
            // guarantees that the compare-and-swap below sees `state` closed and fails.
            if item >= self.items.load(Ordering::Acquire) {
                return;
            }
            if self.state.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                continue;
            }
            if !self.panicked.load(Ordering::Relaxed) {
                // SAFETY: see `impl Sync for Shared`: this item of the current epoch is claimed and not
                // yet counted in `done`, so `run` is still waiting and `job` is its live `f`.
                let f = unsafe { &**self.job.get() };
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(item))) {
                    if !self.panicked.swap(true, Ordering::Relaxed) {
                        *self.payload.lock().unwrap_or_else(PoisonError::into_inner) = Some(payload);
                    }
                }
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(workers: usize) -> Pool {
        let noop: &'static (dyn Fn(usize) + Sync) = &|_| {};
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            items: AtomicUsize::new(0),
            job: UnsafeCell::new(noop),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            payload: Mutex::new(None),
            sleepers: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (0..workers)
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("lowbit-kernels-{}", i + 1))
                    .spawn(move || worker(&s))
                    .expect("spawning a kernel thread")
            })
            .collect();
        Pool { shared, workers }
    }

    /// Runs f(0..n) on the workers and the calling thread; returns once every item has returned.
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!((n as u64) < ITEM_MASK, "parallel_for: {n} items");
        let s = &*self.shared;
        let epoch = (s.state.load(Ordering::Relaxed) >> ITEM_BITS) + 1;
        // Close the previous epoch before touching `items`: a late worker that read the old state
        // fails its compare-and-swap instead of claiming an item past the old end.
        s.state.store(epoch << ITEM_BITS | ITEM_MASK, Ordering::SeqCst);
        s.items.store(n, Ordering::Release);
        s.done.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        // SAFETY: see `impl Sync for Shared` for the write. Erasing the lifetime is sound because this
        // function does not return (or unwind) until `done` == n, after which no thread can claim an
        // item of this epoch and so none dereferences `f`.
        unsafe { *s.job.get() = std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f) };
        s.state.store(epoch << ITEM_BITS, Ordering::SeqCst);
        // A worker registers in `sleepers` before its last look at `state` (both SeqCst), so either it
        // sees the new epoch or we see it and notify, under the lock it holds until it waits.
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        s.work(epoch);
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) != n {
            // Spin for about the tail of a typical item (1024 pauses, tens of µs); past that the
            // worker holding the last item has likely lost its core to another process, so give it
            // ours.
            if spins < 1 << 10 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if s.panicked.load(Ordering::Relaxed) {
            let payload = s.payload.lock().unwrap_or_else(PoisonError::into_inner).take();
            resume_unwind(payload.unwrap_or_else(|| Box::new("parallel_for: an item panicked")));
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.stop.store(true, Ordering::SeqCst);
        s.state.fetch_add(1 << ITEM_BITS, Ordering::SeqCst);
        drop(s.lock.lock().unwrap_or_else(PoisonError::into_inner));
        s.wake.notify_all();
        for w in self.workers.drain(..) {
            // Workers catch panics from items, so joining fails only if the thread itself could not run.
            let _ = w.join();
        }
    }
}

fn worker(s: &Shared) {
    let mut seen = 0;
    loop {
        seen = wait_for_epoch(s, seen);
        if s.stop.load(Ordering::SeqCst) {
            return;
        }
        s.work(seen);
    }
}

/// Waits until the epoch in `state` differs from `seen` and returns it: spinning for up to SPIN, then
/// blocking.
fn wait_for_epoch(s: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let e = s.state.load(Ordering::Acquire) >> ITEM_BITS;
        if e != seen {
            return e;
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(1024) && start.elapsed() > SPIN {
            break;
        }
    }
    let mut guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
    s.sleepers.fetch_add(1, Ordering::SeqCst);
    let e = loop {
        let e = s.state.load(Ordering::SeqCst) >> ITEM_BITS;
        if e != seen {
            break e;
        }
        guard = s.wake.wait(guard).unwrap_or_else(PoisonError::into_inner);
    };
    s.sleepers.fetch_sub(1, Ordering::SeqCst);
    e
}
