//! The thread pool. One test function, so that nothing else in this process uses the pool meanwhile
//! (a busy pool runs work on the caller, which would hide whether the workers run at all).

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use lowbit_kernels::{parallel_chunks_mut, parallel_for, set_threads, threads};

/// Runs 2 items that each wait until both have started: it completes only if two different threads
/// take part. Gives up after 10 s so that a broken pool fails instead of hanging.
fn two_threads_take_part() -> bool {
    let seen = Mutex::new(HashSet::<ThreadId>::new());
    let ok = AtomicUsize::new(0);
    parallel_for(2, &|_| {
        seen.lock().unwrap().insert(std::thread::current().id());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if seen.lock().unwrap().len() == 2 {
                ok.fetch_add(1, Ordering::Relaxed);
                return;
            }
            std::hint::spin_loop();
        }
    });
    ok.load(Ordering::Relaxed) == 2
}

#[test]
fn pool() {
    set_threads(0);
    assert_eq!(threads(), 1, "0 threads is taken as 1");

    // Every index exactly once, for thread counts below, at and above the item count.
    for t in [1, 2, 3, 4] {
        set_threads(t);
        assert_eq!(threads(), t);
        for n in [0, 1, 2, 3, 7, 100, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            parallel_for(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{t} threads, {n} items");
        }
    }

    // Many short jobs back to back: a worker still finishing one job, or just waking for it, must not
    // claim items of the next (each job sees only its own indices, each exactly once).
    set_threads(3);
    for round in 0..20_000usize {
        let n = 1 + round % 5;
        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        parallel_for(n, &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
        });
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "round {round}");
    }

    set_threads(2);
    assert!(two_threads_take_part(), "a worker thread took part");
    // Long enough for the worker to stop spinning and block: the next job must wake it.
    std::thread::sleep(Duration::from_millis(20));
    assert!(two_threads_take_part(), "a blocked worker was woken");

    // Each element once, chunk index and length as documented (the last chunk is short).
    let mut data = vec![0usize; 103];
    parallel_chunks_mut(&mut data, 10, &|i, part| {
        assert_eq!(part.len(), if i == 10 { 3 } else { 10 });
        for (j, v) in part.iter_mut().enumerate() {
            *v += i * 10 + j + 1;
        }
    });
    assert_eq!(data, (1..=103).collect::<Vec<_>>());

    // A call from inside a job runs inline instead of deadlocking.
    let total = AtomicUsize::new(0);
    parallel_for(4, &|_| {
        parallel_for(5, &|_| {
            total.fetch_add(1, Ordering::Relaxed);
        })
    });
    assert_eq!(total.load(Ordering::Relaxed), 20);

    // A panic in any item reaches the caller, and the pool keeps working afterwards.
    for bad in [0, 1, 63] {
        let r = catch_unwind(AssertUnwindSafe(|| {
            parallel_for(64, &|i| {
                assert_ne!(i, bad, "item {bad} panics on purpose");
            })
        }));
        assert!(r.is_err(), "panic in item {bad} was reported");
    }
    assert!(two_threads_take_part(), "the pool works after a panic");

    // Resizing replaces the workers.
    set_threads(3);
    let hits: Vec<AtomicUsize> = (0..50).map(|_| AtomicUsize::new(0)).collect();
    parallel_for(50, &|i| {
        hits[i].fetch_add(1, Ordering::Relaxed);
    });
    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    set_threads(2);
    assert!(two_threads_take_part(), "the pool works after resizing");
}
