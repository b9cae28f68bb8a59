//! Lightweight threads, pollers and per-thread I/O channels (SPDK's `spdk_thread`).
//!
//! A [`Thread`] is a unit of scheduling that lives on exactly one reactor (or in the
//! deterministic [`Harness`]). It owns:
//! - a bounded message queue, reachable from anywhere through a [`ThreadHandle`]
//!   ([`ThreadHandle::send_msg`]);
//! - active pollers, run on every loop, and timed pollers, run at a period; each returns
//!   [`PollStatus::Busy`] or [`PollStatus::Idle`];
//! - the I/O channels opened on it ([`IoChannel`]): one per device per thread, reference
//!   counted.
//!
//! The thread-local parts ([`Thread`], [`Poller`], [`IoChannel`]) are `!Send`: everything
//! on the I/O path runs on one OS thread without locks. The only cross-thread traffic is
//! messages.
//!
//! A thread exits in two steps, as in SPDK: [`Thread::exit`] (or
//! [`ThreadHandle::request_exit`]) marks it exiting; it is released only once all of its
//! pollers are unregistered and all of its channels are dropped.
//!
//! A poller that reports `Idle` while it waits for something outside the thread must make
//! sure a sleeping reactor wakes for it: by an fd registered with [`Thread::register_fd`]
//! (an io_uring eventfd, a socket), by being a timed poller, or with [`Thread::wake_at`].

mod harness;
mod io_channel;

pub use harness::{Harness, POLL_THREADS_LOOPS_MAX};
pub use io_channel::{IoChannel, IoDevice};

use crate::msg::{Msg, MsgQueue, SendError};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Nanoseconds on the clock of the thread's runner: the monotonic clock on a reactor, a
/// virtual clock in the [`Harness`].
pub type Nanos = u64;

/// What one run of a poller (or one loop over a thread) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum PollStatus {
    /// Work was done.
    Busy,
    /// Nothing to do.
    Idle,
}

impl PollStatus {
    /// `Busy` when `busy`, else `Idle`.
    pub fn from_busy(busy: bool) -> Self {
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    /// Whether this is `Busy`.
    pub fn is_busy(self) -> bool {
        self == PollStatus::Busy
    }
}

impl std::ops::BitOr for PollStatus {
    type Output = PollStatus;
    fn bitor(self, rhs: PollStatus) -> PollStatus {
        PollStatus::from_busy(self.is_busy() || rhs.is_busy())
    }
}

/// Messages run per thread per loop before pollers get their turn.
pub const MSG_BATCH_MAX: usize = 64;

/// Something that wakes the runner of a thread (a sleeping reactor) when a message
/// arrives.
pub(crate) trait Wake: Send + Sync {
    fn wake(&self);
}

/// A runner that never sleeps (the harness) needs no waking.
pub(crate) struct NoWake;
impl Wake for NoWake {
    fn wake(&self) {}
}

/// Lets a thread register file descriptors with its runner's interrupt set.
pub(crate) trait FdRegistrar {
    fn add(&self, fd: RawFd) -> std::io::Result<()>;
    fn remove(&self, fd: RawFd);
}

/// A thread's identifier, unique in the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadId(pub u64);

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);

/// The part of a thread other OS threads may touch.
pub(crate) struct ThreadShared {
    id: ThreadId,
    name: String,
    core: Option<usize>,
    msgs: MsgQueue,
    waker: Arc<dyn Wake>,
    exit_requested: AtomicBool,
    exited: AtomicBool,
    registry: Arc<ThreadRegistry>,
}

impl ThreadShared {
    pub(crate) fn new(
        name: &str,
        core: Option<usize>,
        msg_queue_depth: usize,
        waker: Arc<dyn Wake>,
        registry: Arc<ThreadRegistry>,
    ) -> Arc<Self> {
        let shared = Arc::new(ThreadShared {
            id: ThreadId(NEXT_THREAD_ID.fetch_add(1, Ordering::Relaxed)),
            name: name.to_owned(),
            core,
            msgs: MsgQueue::new(msg_queue_depth),
            waker,
            exit_requested: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            registry: registry.clone(),
        });
        registry.add(ThreadHandle {
            shared: shared.clone(),
        });
        shared
    }

    pub(crate) fn has_msgs(&self) -> bool {
        !self.msgs.is_empty()
    }
}

/// The threads of one engine (or harness), for [`Thread::for_each_thread`].
#[derive(Default)]
pub(crate) struct ThreadRegistry {
    threads: Mutex<Vec<ThreadHandle>>,
}

impl ThreadRegistry {
    fn add(&self, h: ThreadHandle) {
        self.threads.lock().unwrap().push(h);
    }

    fn remove(&self, id: ThreadId) {
        self.threads.lock().unwrap().retain(|t| t.id() != id);
    }

    pub(crate) fn snapshot(&self) -> Vec<ThreadHandle> {
        self.threads.lock().unwrap().clone()
    }
}

/// A sendable, cloneable reference to a thread: send it messages, ask it to exit.
#[derive(Clone)]
pub struct ThreadHandle {
    shared: Arc<ThreadShared>,
}

impl fmt::Debug for ThreadHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadHandle")
            .field("id", &self.shared.id)
            .field("name", &self.shared.name)
            .finish()
    }
}

impl ThreadHandle {
    pub(crate) fn from_shared(shared: Arc<ThreadShared>) -> Self {
        ThreadHandle { shared }
    }

    /// Forgets a thread that never reached a runner.
    pub(crate) fn release_unstarted(&self) {
        release_shared(&self.shared);
    }

    /// The thread's identifier.
    pub fn id(&self) -> ThreadId {
        self.shared.id
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The core of the reactor it runs on (`None` in the harness).
    pub fn core(&self) -> Option<usize> {
        self.shared.core
    }

    /// Runs `f` on the thread. A full queue or an exited thread hands the message back.
    pub fn send_msg(&self, f: impl FnOnce() + Send + 'static) -> Result<(), SendError> {
        self.send(Box::new(f))
    }

    /// Queues an already boxed message.
    pub fn send(&self, msg: Msg) -> Result<(), SendError> {
        if self.shared.exited.load(Ordering::Acquire) {
            return Err(SendError::Exited(msg));
        }
        self.shared.msgs.push(msg)?;
        // Pairs with the fence in `release_shared`: either the thread drains after our
        // push, or we see it exited and drain ourselves, so no message outlives it (a
        // message dropped unrun drops, say, the reply sender of `call`).
        fence(Ordering::SeqCst);
        if self.shared.exited.load(Ordering::Relaxed) {
            while self.shared.msgs.pop().is_some() {}
            return Ok(());
        }
        self.shared.waker.wake();
        Ok(())
    }

    /// Runs `f` on the thread and waits for its result, from an OS thread that is not a
    /// reactor (the control plane, tests, `main`). From a lightweight thread it could
    /// deadlock (its reactor, blocked here, may be the one that must run `f`), so it is
    /// refused there with a panic; send a message and reply with another instead.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, SendError> {
        assert!(
            Thread::current().is_none(),
            "ThreadHandle::call blocks: call it from a plain OS thread, not a pollux thread"
        );
        let (tx, rx) = crossbeam::channel::bounded(1);
        self.send_msg(move || {
            let _ = tx.send(f());
        })?;
        rx.recv().map_err(|_| SendError::Exited(Box::new(|| {})))
    }

    /// Asks the thread to exit once its pollers and channels are released.
    pub fn request_exit(&self) {
        self.shared.exit_requested.store(true, Ordering::Release);
        self.shared.waker.wake();
    }

    /// Whether the thread has exited.
    pub fn has_exited(&self) -> bool {
        self.shared.exited.load(Ordering::Acquire)
    }
}

/// One registered poller.
struct PollerInner {
    name: String,
    f: RefCell<Box<dyn FnMut() -> PollStatus>>,
    period_ns: Nanos,
    next_due: Cell<Nanos>,
    alive: Cell<bool>,
    runs: Cell<u64>,
    busy: Cell<u64>,
}

impl PollerInner {
    fn run(&self) -> PollStatus {
        let status = (self.f.borrow_mut())();
        self.runs.set(self.runs.get() + 1);
        if status.is_busy() {
            self.busy.set(self.busy.get() + 1);
        }
        status
    }
}

/// A registered poller; dropping it (or [`Poller::unregister`]) unregisters it.
#[must_use = "dropping a Poller unregisters it"]
pub struct Poller {
    inner: Rc<PollerInner>,
    thread: Weak<ThreadInner>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller")
            .field("name", &self.inner.name)
            .field("period_ns", &self.inner.period_ns)
            .field("runs", &self.inner.runs.get())
            .finish()
    }
}

impl Poller {
    /// Unregisters the poller; it never runs again.
    pub fn unregister(self) {}

    /// How many times it has run.
    pub fn runs(&self) -> u64 {
        self.inner.runs.get()
    }

    /// How many of those runs reported `Busy`.
    pub fn busy_runs(&self) -> u64 {
        self.inner.busy.get()
    }

    /// The poller's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.inner.alive.set(false);
        if let Some(t) = self.thread.upgrade() {
            t.pollers_dirty.set(true);
        }
    }
}

/// An fd registered with the runner's interrupt set; dropping it removes it.
pub struct FdWatch {
    fd: RawFd,
    registrar: Option<Rc<dyn FdRegistrar>>,
}

impl fmt::Debug for FdWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FdWatch").field("fd", &self.fd).finish()
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        if let Some(r) = &self.registrar {
            r.remove(self.fd);
        }
    }
}

/// Counters of one thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadStats {
    /// Loops in which the thread did work.
    pub busy_loops: u64,
    /// Loops in which it had nothing to do.
    pub idle_loops: u64,
    /// Messages run.
    pub msgs: u64,
}

pub(crate) struct ThreadInner {
    shared: Arc<ThreadShared>,
    now: Cell<Nanos>,
    active: RefCell<Vec<Rc<PollerInner>>>,
    timed: RefCell<Vec<Rc<PollerInner>>>,
    pollers_dirty: Cell<bool>,
    channels: RefCell<Vec<(usize, Weak<dyn Any>)>>,
    registrar: Option<Rc<dyn FdRegistrar>>,
    wake_hint: Cell<Option<Nanos>>,
    stats: Cell<ThreadStats>,
}

impl Drop for ThreadInner {
    fn drop(&mut self) {
        release_shared(&self.shared);
    }
}

/// Marks a thread exited and forgets it; idempotent.
fn release_shared(shared: &ThreadShared) {
    if !shared.exited.swap(true, Ordering::SeqCst) {
        shared.registry.remove(shared.id);
    }
    fence(Ordering::SeqCst);
    // Messages that raced with the exit are dropped without running.
    while shared.msgs.pop().is_some() {}
}

/// A lightweight thread, as seen from the OS thread that runs it.
#[derive(Clone)]
pub struct Thread {
    inner: Rc<ThreadInner>,
}

impl fmt::Debug for Thread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Thread")
            .field("id", &self.inner.shared.id)
            .field("name", &self.inner.shared.name)
            .finish()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Thread>> = const { RefCell::new(None) };
}

/// Makes a thread current for the scope of the guard, restoring the previous one.
pub(crate) struct CurrentGuard {
    prev: Option<Thread>,
}

impl CurrentGuard {
    pub(crate) fn enter(t: &Thread) -> CurrentGuard {
        let prev = CURRENT.with(|c| c.borrow_mut().replace(t.clone()));
        CurrentGuard { prev }
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}

impl Thread {
    pub(crate) fn new(shared: Arc<ThreadShared>, registrar: Option<Rc<dyn FdRegistrar>>) -> Self {
        Thread {
            inner: Rc::new(ThreadInner {
                shared,
                now: Cell::new(0),
                active: RefCell::new(Vec::with_capacity(16)),
                timed: RefCell::new(Vec::with_capacity(16)),
                pollers_dirty: Cell::new(false),
                channels: RefCell::new(Vec::with_capacity(16)),
                registrar,
                wake_hint: Cell::new(None),
                stats: Cell::new(ThreadStats::default()),
            }),
        }
    }

    /// The thread running on this OS thread right now, if any.
    pub fn current() -> Option<Thread> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// The current thread; panics when called outside of one (a programming error).
    pub fn expect_current() -> Thread {
        Thread::current().expect("this must run on a pollux thread (a reactor or the harness)")
    }

    /// A sendable handle to this thread.
    pub fn handle(&self) -> ThreadHandle {
        ThreadHandle {
            shared: self.inner.shared.clone(),
        }
    }

    /// The thread's identifier.
    pub fn id(&self) -> ThreadId {
        self.inner.shared.id
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.inner.shared.name
    }

    /// The time of the current loop, in nanoseconds of the runner's clock.
    pub fn now(&self) -> Nanos {
        self.inner.now.get()
    }

    /// The time now, not the loop's: the monotonic clock read again on a reactor (a
    /// timer that must not fire early counts from here); the loop's time in the harness,
    /// whose clock is its own.
    pub fn now_precise(&self) -> Nanos {
        match self.inner.shared.core {
            Some(_) => crate::reactor::sys::monotonic_ns().max(self.now()),
            None => self.now(),
        }
    }

    /// The thread's counters.
    pub fn stats(&self) -> ThreadStats {
        self.inner.stats.get()
    }

    /// Registers a poller run on every loop.
    pub fn register_poller(&self, name: &str, f: impl FnMut() -> PollStatus + 'static) -> Poller {
        self.add_poller(name, 0, Box::new(f))
    }

    /// Registers a poller run once per `period` (at the first loop after it is due).
    pub fn register_timed_poller(
        &self,
        name: &str,
        period: Duration,
        f: impl FnMut() -> PollStatus + 'static,
    ) -> Poller {
        let period_ns = (period.as_nanos() as u64).max(1);
        self.add_poller(name, period_ns, Box::new(f))
    }

    fn add_poller(
        &self,
        name: &str,
        period_ns: Nanos,
        f: Box<dyn FnMut() -> PollStatus>,
    ) -> Poller {
        let inner = Rc::new(PollerInner {
            name: name.to_owned(),
            f: RefCell::new(f),
            period_ns,
            next_due: Cell::new(self.now().saturating_add(period_ns)),
            alive: Cell::new(true),
            runs: Cell::new(0),
            busy: Cell::new(0),
        });
        if period_ns == 0 {
            self.inner.active.borrow_mut().push(inner.clone());
        } else {
            self.inner.timed.borrow_mut().push(inner.clone());
        }
        Poller {
            inner,
            thread: Rc::downgrade(&self.inner),
        }
    }

    /// Number of registered pollers, active and timed.
    pub fn poller_count(&self) -> usize {
        let alive = |v: &Vec<Rc<PollerInner>>| v.iter().filter(|p| p.alive.get()).count();
        alive(&self.inner.active.borrow()) + alive(&self.inner.timed.borrow())
    }

    /// Number of I/O channels open on this thread.
    pub fn channel_count(&self) -> usize {
        self.inner
            .channels
            .borrow()
            .iter()
            .filter(|(_, w)| w.strong_count() > 0)
            .count()
    }

    /// Registers `fd` with the runner's interrupt set: a sleeping reactor wakes when it
    /// becomes readable (edge-triggered: a poller that reports `Idle` must have drained
    /// it). In the harness, which never sleeps, this is a no-op.
    pub fn register_fd(&self, fd: RawFd) -> std::io::Result<FdWatch> {
        if let Some(r) = &self.inner.registrar {
            r.add(fd)?;
        }
        Ok(FdWatch {
            fd,
            registrar: self.inner.registrar.clone(),
        })
    }

    /// Asks a sleeping runner to wake no later than `at` (this loop only): for pollers
    /// that wait on time without being timed pollers.
    pub fn wake_at(&self, at: Nanos) {
        let hint = match self.inner.wake_hint.get() {
            Some(h) => h.min(at),
            None => at,
        };
        self.inner.wake_hint.set(Some(hint));
    }

    /// Marks the thread exiting: it is released once its pollers and channels are gone.
    pub fn exit(&self) {
        self.inner
            .shared
            .exit_requested
            .store(true, Ordering::Release);
    }

    /// Whether the thread has been asked to exit.
    pub fn is_exiting(&self) -> bool {
        self.inner.shared.exit_requested.load(Ordering::Acquire)
    }

    /// Whether the thread has exited.
    pub fn has_exited(&self) -> bool {
        self.inner.shared.exited.load(Ordering::Acquire)
    }

    /// Runs `f` on every thread of this engine, one after another, then `done` on this
    /// thread (SPDK's `spdk_for_each_thread`).
    pub fn for_each_thread(
        &self,
        f: impl Fn() + Send + Sync + 'static,
        done: impl FnOnce() + Send + 'static,
    ) {
        let ctx = Arc::new(ForEach {
            threads: self.inner.shared.registry.snapshot(),
            f: Box::new(f),
            done: Mutex::new(Some(Box::new(done))),
            origin: self.handle(),
        });
        ForEach::step(ctx, 0);
    }

    /// Sends `msg` to `to`; when its queue is full, retries from a timed poller on this
    /// thread until it fits (or the target exits, which drops the message).
    pub fn send_msg_retry(&self, to: &ThreadHandle, msg: Msg) {
        send_msg_retry(to, msg);
    }

    /// One loop over the thread: messages, active pollers, due timed pollers.
    pub(crate) fn poll(&self, now: Nanos) -> PollStatus {
        let inner = &*self.inner;
        inner.now.set(now);
        inner.wake_hint.set(None);
        let _current = CurrentGuard::enter(self);
        let mut busy = false;
        let mut stats = inner.stats.get();

        for _ in 0..MSG_BATCH_MAX {
            match inner.shared.msgs.pop() {
                Some(m) => {
                    m();
                    busy = true;
                    stats.msgs += 1;
                }
                None => break,
            }
        }

        let mut i = 0;
        loop {
            let p = match inner.active.borrow().get(i) {
                Some(p) => p.clone(),
                None => break,
            };
            i += 1;
            if p.alive.get() && p.run().is_busy() {
                busy = true;
            }
        }

        let mut i = 0;
        loop {
            let p = match inner.timed.borrow().get(i) {
                Some(p) => p.clone(),
                None => break,
            };
            i += 1;
            if p.alive.get() && p.next_due.get() <= now {
                p.next_due.set(now.saturating_add(p.period_ns));
                if p.run().is_busy() {
                    busy = true;
                }
            }
        }

        if inner.pollers_dirty.replace(false) {
            inner.active.borrow_mut().retain(|p| p.alive.get());
            inner.timed.borrow_mut().retain(|p| p.alive.get());
        }

        if busy {
            stats.busy_loops += 1;
        } else {
            stats.idle_loops += 1;
        }
        inner.stats.set(stats);
        PollStatus::from_busy(busy)
    }

    /// Marks the thread exited and forgets it (its runner drops it next).
    pub(crate) fn release(&self) {
        release_shared(&self.inner.shared);
    }

    /// Whether the thread may be released: asked to exit, no pollers, no channels, no
    /// messages.
    pub(crate) fn ready_to_exit(&self) -> bool {
        self.is_exiting()
            && self.poller_count() == 0
            && self.channel_count() == 0
            && !self.inner.shared.has_msgs()
    }

    /// The earliest time a sleeping runner must wake for this thread.
    pub(crate) fn next_deadline(&self) -> Option<Nanos> {
        let timed = self
            .inner
            .timed
            .borrow()
            .iter()
            .filter(|p| p.alive.get())
            .map(|p| p.next_due.get())
            .min();
        match (timed, self.inner.wake_hint.get()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<ThreadShared> {
        &self.inner.shared
    }

    pub(crate) fn channels(&self) -> &RefCell<Vec<(usize, Weak<dyn Any>)>> {
        &self.inner.channels
    }

    /// Describes what keeps the thread alive, for shutdown diagnostics.
    pub(crate) fn describe_leftovers(&self) -> String {
        let names: Vec<String> = self
            .inner
            .active
            .borrow()
            .iter()
            .chain(self.inner.timed.borrow().iter())
            .filter(|p| p.alive.get())
            .map(|p| p.name.clone())
            .collect();
        format!(
            "thread {} ({}): pollers {:?}, {} channels",
            self.id(),
            self.name(),
            names,
            self.channel_count()
        )
    }
}

fn send_msg_retry(to: &ThreadHandle, msg: Msg) {
    let msg = match to.send(msg) {
        Ok(()) => return,
        Err(SendError::Exited(_)) => return,
        Err(SendError::Full(m)) => m,
    };
    match Thread::current() {
        Some(cur) => {
            let pending = Rc::new(RefCell::new(Some(msg)));
            let slot: Rc<RefCell<Option<Poller>>> = Rc::new(RefCell::new(None));
            let (to, p2, s2) = (to.clone(), pending.clone(), slot.clone());
            let poller =
                cur.register_timed_poller("msg_retry", Duration::from_micros(100), move || {
                    let Some(m) = p2.borrow_mut().take() else {
                        return PollStatus::Idle;
                    };
                    match to.send(m) {
                        Ok(()) | Err(SendError::Exited(_)) => {
                            s2.borrow_mut().take();
                            PollStatus::Busy
                        }
                        Err(SendError::Full(m)) => {
                            *p2.borrow_mut() = Some(m);
                            PollStatus::Idle
                        }
                    }
                });
            *slot.borrow_mut() = Some(poller);
        }
        None => {
            let mut m = msg;
            loop {
                match to.send(m) {
                    Ok(()) | Err(SendError::Exited(_)) => return,
                    Err(SendError::Full(back)) => {
                        m = back;
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
}

type DoneFn = Box<dyn FnOnce() + Send>;

struct ForEach {
    threads: Vec<ThreadHandle>,
    f: Box<dyn Fn() + Send + Sync>,
    done: Mutex<Option<DoneFn>>,
    origin: ThreadHandle,
}

impl ForEach {
    fn step(ctx: Arc<ForEach>, i: usize) {
        if i == ctx.threads.len() {
            let done = ctx.done.lock().unwrap().take();
            if let Some(done) = done {
                let origin = ctx.origin.clone();
                send_msg_retry(&origin, done);
            }
            return;
        }
        let target = ctx.threads[i].clone();
        let mut guard = ForEachStep {
            ctx: Some(ctx.clone()),
            i,
        };
        let msg: Msg = Box::new(move || {
            let c = guard.ctx.take().expect("a step runs once");
            (c.f)();
            ForEach::step(c, i + 1);
        });
        match target.send(msg) {
            Ok(()) => {}
            // A thread that exited meanwhile is skipped: dropping the message drops its
            // guard, which moves on to the next thread.
            Err(SendError::Exited(_)) => {}
            Err(SendError::Full(m)) => send_msg_retry(&target, m),
        }
    }
}

/// A step of `for_each_thread` in flight: if its message is dropped unrun (its thread
/// exited meanwhile), the walk goes on with the next thread instead of stopping.
struct ForEachStep {
    ctx: Option<Arc<ForEach>>,
    i: usize,
}

impl Drop for ForEachStep {
    fn drop(&mut self) {
        if let Some(c) = self.ctx.take() {
            ForEach::step(c, self.i + 1);
        }
    }
}

#[cfg(test)]
mod tests;
