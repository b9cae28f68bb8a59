//! Reactors: one OS thread pinned to each core of the core mask, each running the
//! lightweight threads placed on it (SPDK's `spdk_reactor`).
//!
//! A reactor's loop takes in newly placed threads, polls every thread once (messages,
//! active pollers, due timed pollers), releases threads that have finished exiting, and
//! counts the loop's time as busy or idle.
//!
//! **Interrupt mode.** With [`EngineBuilder::sleep_after_idle`] set (the default, 1 ms),
//! a reactor whose threads have all been idle for that long sleeps in `epoll_wait` on an
//! eventfd and on the fds its threads registered ([`Thread::register_fd`]), with a
//! timeout at the earliest timed poller. A message wakes it through the eventfd: the
//! sender publishes the message, then (after a full fence) reads the reactor's
//! `sleeping` flag; the reactor sets the flag, fences, and looks at the queues once more
//! before it sleeps, so no message is left waiting (a Dekker handshake). With
//! `sleep_after_idle(None)` reactors poll without ever sleeping, as SPDK does by default.

mod cpuset;
pub(crate) mod sys;

pub use cpuset::parse_core_mask;

use crate::Error;
use crate::bdev::BdevRegistry;
use crate::dma::{Iobuf, IobufOpts};
use crate::msg::MSG_QUEUE_DEPTH_DEFAULT;
use crate::thread::{FdRegistrar, Thread, ThreadHandle, ThreadRegistry, ThreadShared, Wake};
use crossbeam::queue::ArrayQueue;
use std::fmt;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::thread::JoinHandle;
use std::time::Duration;
use sys::{Epoll, EventFd, monotonic_ns};

/// New threads waiting to be taken in by one reactor.
pub const REACTOR_INBOX_DEPTH: usize = 256;

/// Builds and starts an [`Engine`].
#[derive(Clone, Debug)]
pub struct EngineBuilder {
    core_mask: String,
    msg_queue_depth: usize,
    sleep_after_idle: Option<Duration>,
    yield_when_idle: bool,
    shutdown_timeout: Duration,
    iobuf: IobufOpts,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            core_mask: "0x1".to_owned(),
            msg_queue_depth: MSG_QUEUE_DEPTH_DEFAULT,
            sleep_after_idle: Some(Duration::from_millis(1)),
            yield_when_idle: true,
            shutdown_timeout: Duration::from_secs(10),
            iobuf: IobufOpts::default(),
        }
    }
}

impl EngineBuilder {
    /// A builder with the defaults: core 0, interrupt mode after 1 ms idle, SPDK's
    /// iobuf pool sizes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cores to run reactors on, as SPDK's `-m`: `0x3`, `[0-1]`, `0-1`.
    pub fn core_mask(mut self, mask: &str) -> Self {
        self.core_mask = mask.to_owned();
        self
    }

    /// Capacity of each thread's message queue (default 4096).
    pub fn msg_queue_depth(mut self, depth: usize) -> Self {
        assert!(depth > 0);
        self.msg_queue_depth = depth;
        self
    }

    /// Sleep after this long with nothing to do (`None`: poll forever).
    pub fn sleep_after_idle(mut self, after: Option<Duration>) -> Self {
        self.sleep_after_idle = after;
        self
    }

    /// Yield the core (`sched_yield`) after a loop with nothing to do (default true), so
    /// a task the scheduler placed on a reactor's core (an io-wq worker, the thread a
    /// reactor just woke) does not wait out the reactor's time slice. Dedicated cores
    /// with nothing else to run can turn it off.
    pub fn yield_when_idle(mut self, y: bool) -> Self {
        self.yield_when_idle = y;
        self
    }

    /// How long shutdown waits for threads to release their pollers and channels.
    pub fn shutdown_timeout(mut self, t: Duration) -> Self {
        self.shutdown_timeout = t;
        self
    }

    /// Sizes of the DMA buffer pools.
    pub fn iobuf(mut self, opts: IobufOpts) -> Self {
        self.iobuf = opts;
        self
    }

    /// Allocates the buffer pools and starts one pinned reactor per core.
    pub fn start(self) -> Result<Engine, Error> {
        // The TSC's rate, measured once per process, so that bdev latencies (counted in
        // ticks) fill their nanosecond histogram buckets from the first I/O.
        crate::bdev::iostat::tick_rate();
        let cores = parse_core_mask(&self.core_mask)?;
        let allowed = sys::allowed_cores().map_err(|source| Error::Io {
            what: "read this process's CPU affinity".into(),
            source,
        })?;
        if let Some(&c) = cores.iter().find(|c| !allowed.contains(c)) {
            return Err(Error::CoreUnavailable {
                core: c,
                allowed: format!("{allowed:?}"),
            });
        }
        let iobuf = Iobuf::new(&self.iobuf)?;
        let registry = Arc::new(ThreadRegistry::default());
        let mut reactors = Vec::new();
        for (index, &core) in cores.iter().enumerate() {
            reactors.push(Arc::new(ReactorShared {
                index,
                core,
                inbox: ArrayQueue::new(REACTOR_INBOX_DEPTH),
                waker: Arc::new(ReactorWaker {
                    efd: EventFd::new().map_err(|source| Error::Io {
                        what: "create a reactor eventfd".into(),
                        source,
                    })?,
                    sleeping: AtomicBool::new(false),
                }),
                stats: ReactorCounters::default(),
                stop: AtomicBool::new(false),
            }));
        }
        let shared = Arc::new(EngineShared {
            reactors,
            registry,
            iobuf,
            bdevs: BdevRegistry::default(),
            rr: AtomicUsize::new(0),
            msg_queue_depth: self.msg_queue_depth,
        });
        // Built first: if a later reactor fails to start, dropping it stops and joins
        // the ones already running.
        let mut engine = Engine {
            handle: EngineHandle {
                shared: shared.clone(),
            },
            joins: Vec::new(),
            shut_down: false,
        };
        for r in &shared.reactors {
            let r = r.clone();
            let epoll = Epoll::new().map_err(|source| Error::Io {
                what: "create a reactor epoll set".into(),
                source,
            })?;
            let cfg = LoopConfig {
                sleep_after_idle_ns: self.sleep_after_idle.map(|d| d.as_nanos() as u64),
                yield_when_idle: self.yield_when_idle,
                shutdown_timeout_ns: self.shutdown_timeout.as_nanos() as u64,
            };
            let (tx, rx) = crossbeam::channel::bounded(1);
            let join = std::thread::Builder::new()
                .name(format!("reactor_{}", r.core))
                .spawn(move || {
                    if let Err(e) = sys::pin_to_core(r.core) {
                        let _ = tx.send(Err(Error::Pin {
                            core: r.core,
                            source: e,
                        }));
                        return;
                    }
                    let _ = tx.send(Ok(()));
                    run_reactor(&r, epoll, cfg);
                })
                .map_err(|source| Error::Io {
                    what: "spawn a reactor OS thread".into(),
                    source,
                })?;
            rx.recv().expect("reactor reports its start")?;
            engine.joins.push(join);
        }
        tracing::info!(cores = ?cores, "engine started");
        Ok(engine)
    }
}

#[derive(Default)]
struct ReactorCounters {
    busy_ns: AtomicU64,
    idle_ns: AtomicU64,
    sleep_ns: AtomicU64,
    loops: AtomicU64,
    sleeps: AtomicU64,
    threads: AtomicU64,
}

/// A reactor's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReactorStats {
    /// The reactor's position in the core list.
    pub index: usize,
    /// The core it is pinned to.
    pub core: usize,
    /// Time in loops that did work, ns.
    pub busy_ns: u64,
    /// Time in loops that found nothing to do, sleep included, ns.
    pub idle_ns: u64,
    /// Of `idle_ns`, time asleep in `epoll_wait`, ns.
    pub sleep_ns: u64,
    /// Loops run.
    pub loops: u64,
    /// Times it went to sleep.
    pub sleeps: u64,
    /// Lightweight threads it runs now.
    pub threads: u64,
}

struct ReactorWaker {
    efd: EventFd,
    sleeping: AtomicBool,
}

impl Wake for ReactorWaker {
    fn wake(&self) {
        // Pairs with the fence in `try_sleep`: either the reactor sees our message, or we
        // see it sleeping and signal it.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            self.efd.signal();
        }
    }
}

struct ReactorShared {
    index: usize,
    core: usize,
    inbox: ArrayQueue<Arc<ThreadShared>>,
    waker: Arc<ReactorWaker>,
    stats: ReactorCounters,
    stop: AtomicBool,
}

impl ReactorShared {
    fn snapshot(&self) -> ReactorStats {
        let s = &self.stats;
        ReactorStats {
            index: self.index,
            core: self.core,
            busy_ns: s.busy_ns.load(Ordering::Relaxed),
            idle_ns: s.idle_ns.load(Ordering::Relaxed),
            sleep_ns: s.sleep_ns.load(Ordering::Relaxed),
            loops: s.loops.load(Ordering::Relaxed),
            sleeps: s.sleeps.load(Ordering::Relaxed),
            threads: s.threads.load(Ordering::Relaxed),
        }
    }
}

struct EpollRegistrar(Epoll);

impl FdRegistrar for EpollRegistrar {
    fn add(&self, fd: RawFd) -> std::io::Result<()> {
        self.0.add(fd)
    }
    fn remove(&self, fd: RawFd) {
        self.0.remove(fd)
    }
}

#[derive(Clone, Copy)]
struct LoopConfig {
    sleep_after_idle_ns: Option<u64>,
    yield_when_idle: bool,
    shutdown_timeout_ns: u64,
}

fn run_reactor(r: &ReactorShared, epoll: Epoll, cfg: LoopConfig) {
    let registrar = Rc::new(EpollRegistrar(epoll));
    let mut cfg = cfg;
    if let Err(e) = registrar.0.add(r.waker.efd.raw()) {
        tracing::error!(
            core = r.core,
            "cannot watch the reactor eventfd, so it polls without sleeping: {e}"
        );
        cfg.sleep_after_idle_ns = None;
    }
    let dyn_registrar: Rc<dyn FdRegistrar> = registrar.clone();
    let mut threads: Vec<Thread> = Vec::with_capacity(64);
    let mut last_busy = monotonic_ns();
    let mut stop_deadline: Option<u64> = None;
    loop {
        while let Some(shared) = r.inbox.pop() {
            threads.push(Thread::new(shared, Some(dyn_registrar.clone())));
            r.stats
                .threads
                .store(threads.len() as u64, Ordering::Relaxed);
        }
        let start = monotonic_ns();
        let mut busy = false;
        for t in &threads {
            busy |= t.poll(start).is_busy();
        }
        if threads.iter().any(|t| t.ready_to_exit()) {
            threads.retain(|t| {
                let done = t.ready_to_exit();
                if done {
                    t.release();
                }
                !done
            });
            r.stats
                .threads
                .store(threads.len() as u64, Ordering::Relaxed);
        }
        let end = monotonic_ns();
        let s = &r.stats;
        s.loops.fetch_add(1, Ordering::Relaxed);
        if busy {
            s.busy_ns.fetch_add(end - start, Ordering::Relaxed);
            last_busy = end;
        } else {
            s.idle_ns.fetch_add(end - start, Ordering::Relaxed);
        }

        if r.stop.load(Ordering::Acquire) {
            // Threads placed while shutdown began were not in its list: ask them too.
            for t in &threads {
                t.exit();
            }
            if threads.is_empty() && r.inbox.is_empty() {
                break;
            }
            let deadline = *stop_deadline.get_or_insert(end + cfg.shutdown_timeout_ns);
            if end > deadline {
                for t in &threads {
                    tracing::error!(
                        core = r.core,
                        "forced shutdown of {}",
                        t.describe_leftovers()
                    );
                    t.release();
                }
                break;
            }
            // While stopping, keep polling so exiting threads finish quickly.
            continue;
        }

        if !busy && cfg.yield_when_idle {
            // Let another task that the scheduler put on this core (often the one this
            // reactor just woke up) run now rather than after our time slice.
            std::thread::yield_now();
        }
        if let Some(idle_ns) = cfg.sleep_after_idle_ns {
            if !busy && end - last_busy >= idle_ns {
                let slept = try_sleep(r, &registrar.0, &threads);
                if slept > 0 {
                    s.sleep_ns.fetch_add(slept, Ordering::Relaxed);
                    s.idle_ns.fetch_add(slept, Ordering::Relaxed);
                    last_busy = monotonic_ns();
                }
            }
        }
    }
    // A thread placed after the last look at the inbox never ran: forget it.
    while let Some(shared) = r.inbox.pop() {
        ThreadHandle::from_shared(shared).release_unstarted();
    }
    r.stats.threads.store(0, Ordering::Relaxed);
}

/// Sleeps until a message, a registered fd or the earliest timer; returns the time
/// slept (0 when there was a reason not to sleep).
fn try_sleep(r: &ReactorShared, epoll: &Epoll, threads: &[Thread]) -> u64 {
    r.waker.sleeping.store(true, Ordering::Relaxed);
    // Pairs with the fence in `ReactorWaker::wake`.
    fence(Ordering::SeqCst);
    let now = monotonic_ns();
    let pending = !r.inbox.is_empty()
        || r.stop.load(Ordering::Acquire)
        || threads
            .iter()
            .any(|t| t.shared().has_msgs() || t.ready_to_exit());
    let deadline = threads.iter().filter_map(|t| t.next_deadline()).min();
    let timeout_ms: i32 = match deadline {
        None => -1,
        Some(d) if d <= now => 0,
        Some(d) => ((d - now).div_ceil(1_000_000)).min(i32::MAX as u64) as i32,
    };
    if pending || timeout_ms == 0 {
        r.waker.sleeping.store(false, Ordering::Relaxed);
        return 0;
    }
    // Counted before the wait, so an observer sees a reactor that sleeps right now.
    r.stats.sleeps.fetch_add(1, Ordering::Relaxed);
    epoll.wait(timeout_ms);
    r.waker.sleeping.store(false, Ordering::Relaxed);
    r.waker.efd.drain();
    (monotonic_ns() - now).max(1)
}

struct EngineShared {
    reactors: Vec<Arc<ReactorShared>>,
    registry: Arc<ThreadRegistry>,
    iobuf: Arc<Iobuf>,
    bdevs: BdevRegistry,
    rr: AtomicUsize,
    msg_queue_depth: usize,
}

/// A running set of reactors and the DMA buffer pools they share. It dereferences to an
/// [`EngineHandle`]; dropping it (or [`Engine::shutdown`]) stops the reactors.
pub struct Engine {
    handle: EngineHandle,
    joins: Vec<JoinHandle<()>>,
    shut_down: bool,
}

impl std::ops::Deref for Engine {
    type Target = EngineHandle;
    fn deref(&self) -> &EngineHandle {
        &self.handle
    }
}

/// A cloneable, sendable reference to a running engine, for the control plane.
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<EngineShared>,
}

impl fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineHandle")
            .field("cores", &self.cores())
            .finish()
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("cores", &self.cores())
            .finish()
    }
}

/// What shutdown found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Whether every buffer of every pool was back in its pool.
    pub pools_full: bool,
    /// Free buffers per pool, as `(name, free, total)`.
    pub pools: Vec<(String, usize, usize)>,
}

impl Engine {
    /// A builder with the defaults.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::new()
    }

    /// A cloneable reference for the control plane.
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Asks every thread to exit, waits for the reactors to finish, and reports whether
    /// every DMA buffer came back to its pool.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop_and_join();
        let pools = self.shared.iobuf.pool_levels();
        ShutdownReport {
            pools_full: pools.iter().all(|(_, free, total)| free == total),
            pools,
        }
    }

    fn stop_and_join(&mut self) {
        if self.shut_down {
            return;
        }
        self.shut_down = true;
        for t in self.shared.registry.snapshot() {
            t.request_exit();
        }
        for r in &self.shared.reactors {
            r.stop.store(true, Ordering::Release);
            r.waker.wake();
            r.waker.efd.signal();
        }
        for j in self.joins.drain(..) {
            let _ = j.join();
        }
        tracing::info!("engine stopped");
    }
}

impl EngineHandle {
    /// The bdevs registered with this engine.
    pub fn bdevs(&self) -> &BdevRegistry {
        &self.shared.bdevs
    }

    /// The cores that run reactors, in order.
    pub fn cores(&self) -> Vec<usize> {
        self.shared.reactors.iter().map(|r| r.core).collect()
    }

    /// The DMA buffer pools.
    pub fn iobuf(&self) -> &Arc<Iobuf> {
        &self.shared.iobuf
    }

    /// Every reactor's counters.
    pub fn reactor_stats(&self) -> Vec<ReactorStats> {
        self.shared.reactors.iter().map(|r| r.snapshot()).collect()
    }

    /// Every live lightweight thread.
    pub fn threads(&self) -> Vec<ThreadHandle> {
        self.shared.registry.snapshot()
    }

    /// Places a new lightweight thread on the reactor of `core` (`None`: round robin).
    pub fn spawn_thread(&self, name: &str, core: Option<usize>) -> Result<ThreadHandle, Error> {
        let reactors = &self.shared.reactors;
        let r = match core {
            Some(c) => {
                reactors
                    .iter()
                    .find(|r| r.core == c)
                    .ok_or_else(|| Error::CoreUnavailable {
                        core: c,
                        allowed: format!("{:?}", self.cores()),
                    })?
            }
            None => &reactors[self.shared.rr.fetch_add(1, Ordering::Relaxed) % reactors.len()],
        };
        if r.stop.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let shared = ThreadShared::new(
            name,
            Some(r.core),
            self.shared.msg_queue_depth,
            r.waker.clone(),
            self.shared.registry.clone(),
        );
        let handle = ThreadHandle::from_shared(shared.clone());
        if r.inbox.push(shared).is_err() {
            handle.release_unstarted();
            return Err(Error::TooManyNewThreads { core: r.core });
        }
        r.waker.wake();
        Ok(handle)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests;
