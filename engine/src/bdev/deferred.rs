//! Completions that are ready at once or after a fixed latency, in submission order: the
//! queue of the null and malloc modules.

use super::{BdevIo, IoStatus};
use crate::thread::{Nanos, PollStatus, Thread};
use std::cell::RefCell;
use std::collections::VecDeque;

pub(crate) struct DeferredQueue {
    q: RefCell<VecDeque<(Nanos, Box<BdevIo>)>>,
    depth_max: usize,
    latency_ns: Nanos,
    thread: Thread,
}

impl DeferredQueue {
    pub(crate) fn new(thread: &Thread, depth_max: usize, latency_ns: Nanos) -> Self {
        DeferredQueue {
            q: RefCell::new(VecDeque::with_capacity(depth_max)),
            depth_max,
            latency_ns,
            thread: thread.clone(),
        }
    }

    /// Whether no further I/O fits.
    pub(crate) fn is_full(&self) -> bool {
        self.q.borrow().len() >= self.depth_max
    }

    /// Queues `io` to complete with `status`, or hands it back when full.
    pub(crate) fn push(&self, mut io: Box<BdevIo>, status: IoStatus) -> Result<(), Box<BdevIo>> {
        let mut q = self.q.borrow_mut();
        if q.len() >= self.depth_max {
            return Err(io);
        }
        io.status = status;
        q.push_back((self.thread.now() + self.latency_ns, io));
        Ok(())
    }

    /// Queues `io` to complete with `status` at `due`, behind those already queued
    /// (FIFO: an earlier `due` behind a later one waits for it). Never refuses: the queue
    /// grows past its depth (the delay bdev's completions from below cannot be refused).
    pub(crate) fn push_due(&self, mut io: Box<BdevIo>, status: IoStatus, due: Nanos) {
        io.status = status;
        self.q.borrow_mut().push_back((due, io));
    }

    /// Takes I/O `id` ([`BdevIo::id`]) out of the queue, if it is there.
    pub(crate) fn take(&self, id: usize) -> Option<Box<BdevIo>> {
        let mut q = self.q.borrow_mut();
        let i = q.iter().position(|(_, io)| io.id() == id)?;
        q.remove(i).map(|(_, io)| io)
    }

    /// Completes the I/Os that are due, one at a time with no borrow held. Only those
    /// queued before this poll: one resubmitted from its own callback waits for the next
    /// loop, so the thread's other pollers and messages get their turn.
    pub(crate) fn poll(&self) -> PollStatus {
        let now = self.thread.now();
        let mut busy = false;
        let queued = self.q.borrow().len();
        for _ in 0..queued {
            let io = {
                let mut q = self.q.borrow_mut();
                match q.front() {
                    Some((due, _)) if *due <= now => q.pop_front().map(|(_, io)| io),
                    Some((due, _)) => {
                        // Not yet: make sure a sleeping reactor wakes for it.
                        self.thread.wake_at(*due);
                        None
                    }
                    None => None,
                }
            };
            match io {
                Some(io) => {
                    busy = true;
                    let status = io.status;
                    io.complete(status);
                }
                None => break,
            }
        }
        PollStatus::from_busy(busy)
    }
}

impl Drop for DeferredQueue {
    fn drop(&mut self) {
        let n = self.q.borrow().len();
        if n > 0 {
            tracing::warn!(
                "a bdev channel closed with {n} I/Os not yet completed; they are dropped"
            );
        }
    }
}
