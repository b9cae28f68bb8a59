//! A deterministic runner: every lightweight thread stepped from one OS thread, on a
//! virtual clock (SPDK's `ut_multithread.c`).
//!
//! Tests of cross-thread logic use it to get the same interleaving on every run: messages
//! are delivered only when the test polls, and time moves only when the test advances it.

use super::{CurrentGuard, NoWake, PollStatus, Thread, ThreadRegistry, ThreadShared};
use crate::msg::MSG_QUEUE_DEPTH_DEFAULT;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Runs a fixed set of lightweight threads in the calling OS thread.
pub struct Harness {
    threads: Vec<Thread>,
    now: u64,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("threads", &self.threads.len())
            .field("now", &self.now)
            .finish()
    }
}

/// Loops of [`Harness::poll_threads`] before it declares a livelock.
pub const POLL_THREADS_LOOPS_MAX: usize = 1_000_000;

impl Harness {
    /// Creates `n` threads named `ut0`, `ut1`, ...
    pub fn new(n: usize) -> Self {
        let registry = Arc::new(ThreadRegistry::default());
        let threads = (0..n)
            .map(|i| {
                let shared = ThreadShared::new(
                    &format!("ut{i}"),
                    None,
                    MSG_QUEUE_DEPTH_DEFAULT,
                    Arc::new(NoWake),
                    registry.clone(),
                );
                Thread::new(shared, None)
            })
            .collect();
        Harness { threads, now: 0 }
    }

    /// Thread `i`.
    pub fn thread(&self, i: usize) -> &Thread {
        &self.threads[i]
    }

    /// Number of threads.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether the harness has no threads.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// The virtual clock, in nanoseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Runs `f` as if on thread `i` (its channels, pollers and `Thread::current`).
    pub fn run_on<R>(&self, i: usize, f: impl FnOnce() -> R) -> R {
        let _g = CurrentGuard::enter(&self.threads[i]);
        f()
    }

    /// One loop of thread `i`.
    pub fn poll_thread(&self, i: usize) -> PollStatus {
        self.threads[i].poll(self.now)
    }

    /// Loops over every thread until a whole round finds nothing to do; returns the
    /// number of rounds. Panics on a livelock (a poller that is never idle).
    pub fn poll_threads(&self) -> usize {
        for round in 1..=POLL_THREADS_LOOPS_MAX {
            let mut busy = false;
            for t in &self.threads {
                busy |= t.poll(self.now).is_busy();
            }
            if !busy {
                return round;
            }
        }
        panic!("poll_threads: threads still busy after {POLL_THREADS_LOOPS_MAX} rounds");
    }

    /// Moves the virtual clock forward, then polls every thread until idle.
    pub fn advance_time(&mut self, d: Duration) {
        self.now += d.as_nanos() as u64;
        self.poll_threads();
    }

    /// Polls every thread until `done()` holds, for work that completes outside the
    /// threads (the kernel's io_uring, a socket peer); panics after `timeout` of real
    /// time.
    pub fn poll_until(&self, timeout: Duration, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "poll_until: condition not met within {timeout:?}"
            );
            for t in &self.threads {
                let _ = t.poll(self.now);
            }
        }
    }

    /// Asks every thread to exit, polls until each can be released, releases them, and
    /// reports the threads that could not be (with what keeps them).
    pub fn shutdown(self) -> Result<(), Vec<String>> {
        for t in &self.threads {
            t.exit();
        }
        self.poll_threads();
        let stuck: Vec<String> = self
            .threads
            .iter()
            .filter(|t| !t.ready_to_exit())
            .map(|t| t.describe_leftovers())
            .collect();
        for t in &self.threads {
            t.release();
        }
        if stuck.is_empty() { Ok(()) } else { Err(stuck) }
    }
}
