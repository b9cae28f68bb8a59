//! Messages between lightweight threads.
//!
//! A message is a closure that runs once on its destination thread. Each thread owns one
//! bounded, lock-free multi-producer queue ([`MsgQueue`], a crossbeam `ArrayQueue`); a
//! full queue is reported to the sender as [`SendError::Full`] with the message handed
//! back, so back-pressure is a value the caller handles, never a panic and never an
//! unbounded allocation.
//!
//! Messages are for the control path and for cross-thread hand-offs; the I/O path of a
//! single thread never sends one, so boxing the closure is not an allocation per I/O.

use crossbeam::queue::ArrayQueue;
use std::fmt;

/// A message: a closure that runs once on its destination thread.
pub type Msg = Box<dyn FnOnce() + Send + 'static>;

/// Default capacity of one thread's message queue.
pub const MSG_QUEUE_DEPTH_DEFAULT: usize = 4096;

/// Why a message was not queued.
pub enum SendError {
    /// The destination queue is full; the message is handed back for a later retry.
    Full(Msg),
    /// The destination thread has exited; the message is handed back.
    Exited(Msg),
}

impl SendError {
    /// Takes the message back, whatever the reason.
    pub fn into_msg(self) -> Msg {
        match self {
            SendError::Full(m) | SendError::Exited(m) => m,
        }
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full(_) => "SendError::Full",
            SendError::Exited(_) => "SendError::Exited",
        })
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Full(_) => f.write_str(
                "the destination thread's message queue is full: retry later or raise msg_queue_depth",
            ),
            SendError::Exited(_) => f.write_str("the destination thread has exited"),
        }
    }
}

impl std::error::Error for SendError {}

/// A bounded multi-producer, single-consumer queue of messages.
pub struct MsgQueue {
    q: ArrayQueue<Msg>,
}

impl fmt::Debug for MsgQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MsgQueue")
            .field("len", &self.q.len())
            .field("capacity", &self.q.capacity())
            .finish()
    }
}

impl MsgQueue {
    /// Creates a queue holding at most `depth` messages.
    pub fn new(depth: usize) -> Self {
        assert!(
            depth > 0,
            "a message queue needs room for at least one message"
        );
        MsgQueue {
            q: ArrayQueue::new(depth),
        }
    }

    /// Queues `msg`, or hands it back when the queue is full.
    pub fn push(&self, msg: Msg) -> Result<(), SendError> {
        self.q.push(msg).map_err(SendError::Full)
    }

    /// Takes the oldest message, if any.
    pub fn pop(&self) -> Option<Msg> {
        self.q.pop()
    }

    /// Number of messages waiting.
    pub fn len(&self) -> usize {
        self.q.len()
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// The most messages the queue holds.
    pub fn capacity(&self) -> usize {
        self.q.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn full_queue_hands_the_message_back() {
        let q = MsgQueue::new(2);
        let hits = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let h = hits.clone();
            q.push(Box::new(move || {
                h.fetch_add(1, Ordering::Relaxed);
            }))
            .unwrap();
        }
        let h = hits.clone();
        let err = q
            .push(Box::new(move || {
                h.fetch_add(10, Ordering::Relaxed);
            }))
            .unwrap_err();
        assert!(matches!(err, SendError::Full(_)));
        // The message handed back is intact and still runnable.
        (err.into_msg())();
        while let Some(m) = q.pop() {
            m();
        }
        assert_eq!(hits.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn many_producers_one_consumer() {
        let q = Arc::new(MsgQueue::new(64));
        let sum = Arc::new(AtomicUsize::new(0));
        let producers: Vec<_> = (0..4)
            .map(|_| {
                let q = q.clone();
                let sum = sum.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let s = sum.clone();
                        let mut m: Msg = Box::new(move || {
                            s.fetch_add(i, Ordering::Relaxed);
                        });
                        loop {
                            match q.push(m) {
                                Ok(()) => break,
                                Err(e) => {
                                    m = e.into_msg();
                                    std::thread::yield_now();
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        let mut got = 0;
        while got < 4000 {
            if let Some(m) = q.pop() {
                m();
                got += 1;
            } else {
                std::thread::yield_now();
            }
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(sum.load(Ordering::Relaxed), 4 * (999 * 1000 / 2));
    }
}
