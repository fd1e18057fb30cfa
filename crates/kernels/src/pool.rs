//! The thread pool behind the parallel kernels, built for the decode loop.
//!
//! Decode runs about 200 matmuls per token of 10–200 µs each, so a few µs of dispatch per call (waking
//! futex-parked threads, or rayon's job injection and stealing) would cost several percent. Here the
//! workers spin on an epoch counter for a while after each job and only then block on a condvar: calls
//! that follow each other closely cost one cache-line handoff, and an idle process burns no CPU.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
/// returns when all calls have returned. Threads take indices in order from a shared counter, so a
/// thread that loses its core delays only the item it holds. Runs everything on the calling thread
/// when one thread is configured or the pool is busy (another thread's call, or a call from inside
/// `f`). A panic in `f` is re-raised here after every thread has stopped using `f`.
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
    let next = AtomicUsize::new(0);
    let job = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    };
    slot.as_ref().expect("pool was just created").run(&job);
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

/// The job workers run: the `job` closure of `parallel_for` with its lifetime erased.
type Job = *const (dyn Fn() + Sync + 'static);

struct Shared {
    /// Incremented to start a job (and once more to stop the workers).
    epoch: AtomicUsize,
    job: UnsafeCell<Job>,
    /// Workers that have not yet finished the current job.
    pending: AtomicUsize,
    /// Workers blocked (or about to block) on `wake`.
    sleepers: AtomicUsize,
    stop: AtomicBool,
    panicked: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only in `Pool::run`, by the one thread holding POOL's lock, while no worker
// runs (pending == 0) and before the SeqCst increment of `epoch`; workers read it only after loading
// that new epoch. Every other field is a sync primitive.
unsafe impl Sync for Shared {}
// SAFETY: the raw `job` pointer is the only non-Send field; see Sync above.
unsafe impl Send for Shared {}

struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(workers: usize) -> Pool {
        let noop: &'static (dyn Fn() + Sync) = &|| {};
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: UnsafeCell::new(noop),
            pending: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
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

    /// Runs `job` on every worker and on the calling thread; returns once all have finished.
    fn run(&self, job: &(dyn Fn() + Sync)) {
        let s = &*self.shared;
        s.pending.store(self.workers.len(), Ordering::Relaxed);
        // SAFETY: see `impl Sync for Shared` for the write. Erasing the lifetime is sound because this
        // function does not return (or unwind) until `pending` is 0, that is until every worker is done
        // calling `job`.
        unsafe { *s.job.get() = std::mem::transmute::<*const (dyn Fn() + Sync + '_), Job>(job) };
        s.epoch.fetch_add(1, Ordering::SeqCst);
        // A worker registers in `sleepers` before its last look at `epoch` (both SeqCst), so either it
        // sees the new epoch or we see it and notify, under the lock it holds until it waits.
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(PoisonError::into_inner);
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(job));
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            // Workers may have lost their cores to other processes; stop competing with them.
            if spins < 1 << 16 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a kernel panicked on a lowbit-kernels pool thread");
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.stop.store(true, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        drop(s.lock.lock().unwrap_or_else(PoisonError::into_inner));
        s.wake.notify_all();
        for w in self.workers.drain(..) {
            // Workers catch job panics, so joining fails only if the thread itself could not run.
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
        // SAFETY: see `impl Sync for Shared`; `Pool::run` keeps the closure alive until `pending` is 0.
        let job = unsafe { &**s.job.get() };
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

/// Waits until `epoch` differs from `seen` and returns it: spinning for up to SPIN, then blocking.
fn wait_for_epoch(s: &Shared, seen: usize) -> usize {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let e = s.epoch.load(Ordering::Acquire);
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
        let e = s.epoch.load(Ordering::SeqCst);
        if e != seen {
            break e;
        }
        guard = s.wake.wait(guard).unwrap_or_else(PoisonError::into_inner);
    };
    s.sleepers.fetch_sub(1, Ordering::SeqCst);
    e
}
