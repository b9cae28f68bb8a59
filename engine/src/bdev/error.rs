//! The error bdev (SPDK's `bdev_error_*`): a bdev stacked on another that fails, holds,
//! corrupts or refuses chosen I/Os, for testing what sits above it.
//!
//! `EE_<base>` passes every I/O to its base until a rule is injected
//! ([`ErrorInjector::inject`]): for one I/O type (read, write, unmap, flush), the next
//! `num` I/Os of that type that find at least `queue_depth` of this channel's I/Os already
//! at the base get the error:
//! - `failure`: complete with a generic failure (NVMe Internal Error, 0/06h), as SPDK's
//!   `SPDK_BDEV_IO_STATUS_FAILED` reaches an NVMe-oF host;
//! - `nvme_failure`: complete with the given NVMe status (SCT, SC);
//! - `pending`: held, not completed, until [`ErrorInjector::resume_pending`] sends them on
//!   to the base or [`ErrorInjector::abort_pending`] (also on `bdev_error_delete`)
//!   completes them as aborted;
//! - `corrupt_data`: a write's data has byte `corrupt_offset` XORed with `corrupt_value`
//!   before it goes to the base; a read's after it comes back;
//! - `nomem`: refused as a full queue, so the submitter retries it.
//!
//! Rules live in atomics shared by every channel: an I/O reads one word when no rule is
//! set for its type, and the RPC thread changes rules without a lock.

use super::stack::{BaseChannel, Stacked, StackedModule, check_depth};
use super::{BackendChannel, Bdev, BdevIo, BdevParams, IoKind, IoStatus};
use crate::Error;
use crate::thread::{PollStatus, Thread};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

/// What an injected rule does to the I/Os it hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    /// Complete with a generic failure.
    Failure,
    /// Complete with this NVMe status.
    NvmeFailure {
        /// Status Code Type.
        sct: u8,
        /// Status Code.
        sc: u8,
    },
    /// Hold until resumed or aborted.
    Pending,
    /// XOR byte `offset` of the data with `value`.
    CorruptData {
        /// Byte offset in the I/O's data (wraps at its length).
        offset: u64,
        /// The XOR mask (not 0).
        value: u8,
    },
    /// Refuse as a full queue.
    NoMemory,
}

/// The I/O types a rule can be set for (SPDK checks these four; others pass).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorIoType {
    /// Reads.
    Read,
    /// Writes.
    Write,
    /// Deallocations.
    Unmap,
    /// Flushes.
    Flush,
    /// All four.
    All,
    /// No rule at all any more (every type's count to 0).
    Clear,
}

const NONE: u8 = 0;
const FAILURE: u8 = 1;
const NVME: u8 = 2;
const PENDING: u8 = 3;
const CORRUPT: u8 = 4;
const NOMEM: u8 = 5;

#[derive(Debug, Default)]
struct Rule {
    kind: AtomicU8,
    /// I/Os still to hit.
    num: AtomicU32,
    queue_depth: AtomicU64,
    /// SCT << 8 | SC, or offset << 8 | value.
    arg: AtomicU64,
}

impl Rule {
    /// Whether this I/O gets the error: a rule is set, the queue is deep enough, and
    /// one of its `num` is left (taken).
    fn hits(&self, inflight: u64) -> Option<u8> {
        let kind = self.kind.load(Relaxed);
        if kind == NONE || inflight < self.queue_depth.load(Relaxed) {
            return None;
        }
        self.num
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .ok()
            .map(|_| kind)
    }
}

fn rule_index(kind: IoKind) -> Option<usize> {
    match kind {
        IoKind::Read => Some(0),
        IoKind::Write => Some(1),
        IoKind::Unmap => Some(2),
        IoKind::Flush => Some(3),
        IoKind::WriteZeroes => None,
    }
}

/// An error bdev's rules, shared by its channels and reached by its RPCs through
/// [`Bdev::module`].
#[derive(Debug)]
pub struct ErrorInjector {
    base: Arc<Bdev>,
    rules: [Rule; 4],
    /// Bumped to have every channel send its held I/Os on / abort them.
    resume_gen: AtomicU64,
    abort_gen: AtomicU64,
    /// I/Os held now, over every channel.
    pending: AtomicU64,
}

impl ErrorInjector {
    /// The bdev below.
    pub fn base(&self) -> &Arc<Bdev> {
        &self.base
    }

    /// Sets the rule for `io_type`: the next `num` I/Os of that type that find at
    /// least `queue_depth` I/Os of their channel at the base get `error`.
    pub fn inject(&self, io_type: ErrorIoType, error: ErrorType, num: u32, queue_depth: u64) {
        let types: &[usize] = match io_type {
            ErrorIoType::Read => &[0],
            ErrorIoType::Write => &[1],
            ErrorIoType::Unmap => &[2],
            ErrorIoType::Flush => &[3],
            ErrorIoType::All => &[0, 1, 2, 3],
            ErrorIoType::Clear => {
                for r in &self.rules {
                    r.num.store(0, Relaxed);
                }
                return;
            }
        };
        let (kind, arg) = match error {
            ErrorType::Failure => (FAILURE, 0),
            ErrorType::NvmeFailure { sct, sc } => (NVME, (sct as u64) << 8 | sc as u64),
            ErrorType::Pending => (PENDING, 0),
            ErrorType::CorruptData { offset, value } => (CORRUPT, offset << 8 | value as u64),
            ErrorType::NoMemory => (NOMEM, 0),
        };
        for &i in types {
            let r = &self.rules[i];
            // No I/O sees a half-set rule take effect: the count goes last.
            r.num.store(0, Relaxed);
            r.kind.store(kind, Relaxed);
            r.arg.store(arg, Relaxed);
            r.queue_depth.store(queue_depth, Relaxed);
            r.num.store(num, std::sync::atomic::Ordering::Release);
        }
    }

    /// Ends every `pending` rule and sends the held I/Os on to the base (SPDK's
    /// `bdev_error_resume_pending`).
    pub fn resume_pending(&self) {
        for r in &self.rules {
            if r.kind.load(Relaxed) == PENDING {
                r.num.store(0, Relaxed);
            }
        }
        self.resume_gen.fetch_add(1, Relaxed);
    }

    /// Completes every held I/O as aborted (as SPDK's reset of an error bdev does).
    pub fn abort_pending(&self) {
        self.abort_gen.fetch_add(1, Relaxed);
    }

    /// I/Os held now.
    pub fn pending(&self) -> u64 {
        self.pending.load(Relaxed)
    }

    /// How many more I/Os of each type (read, write, unmap, flush) a rule will hit.
    pub fn remaining(&self) -> [u32; 4] {
        std::array::from_fn(|i| self.rules[i].num.load(Relaxed))
    }
}

/// The name of the error bdev on bdev `base`: `EE_<base>`.
pub fn name_on(base: &str) -> String {
    format!("EE_{base}")
}

/// Creates `EE_<base>` on `base`.
pub fn create(base: Arc<Bdev>, uuid: Option<uuid::Uuid>) -> Result<Arc<Bdev>, Error> {
    check_depth(&base)?;
    let inj = Arc::new(ErrorInjector {
        base: base.clone(),
        rules: Default::default(),
        resume_gen: AtomicU64::new(0),
        abort_gen: AtomicU64::new(0),
        pending: AtomicU64::new(0),
    });
    Bdev::new(
        BdevParams {
            name: name_on(base.name()),
            uuid,
            block_size: base.block_size(),
            num_blocks: base.num_blocks(),
            product_name: "Error Injection Disk",
        },
        Box::new(Stacked(inj)),
    )
}

struct ErrorChannel {
    inj: Arc<ErrorInjector>,
    base: BaseChannel,
    /// This channel's I/Os at the base now.
    inflight: Rc<Cell<u64>>,
    /// Failed I/Os, to complete on the next poll (never inside `submit`).
    failed: RefCell<VecDeque<Box<BdevIo>>>,
    held: RefCell<VecDeque<Box<BdevIo>>>,
    seen_resume: Cell<u64>,
    seen_abort: Cell<u64>,
}

/// The word an I/O carries down: a read to corrupt on its way up (flag, offset, value).
const CORRUPT_READ: u64 = 1 << 63;

fn corrupt(io: &mut BdevIo, offset: u64, value: u8) {
    let len = io.data_len() as u64;
    if len == 0 {
        return;
    }
    let mut at = (offset % len) as usize;
    for b in io.bufs_mut() {
        let s = b.as_mut_slice();
        if at < s.len() {
            s[at] ^= value;
            return;
        }
        at -= s.len();
    }
}

impl StackedModule for ErrorInjector {
    fn base_bdev(&self) -> &Arc<Bdev> {
        &self.base
    }

    fn open(self: &Arc<Self>, thread: &Thread) -> Result<Box<dyn BackendChannel>, Error> {
        let inflight = Rc::new(Cell::new(0u64));
        let inf = inflight.clone();
        let base = BaseChannel::open(&self.base, thread, move |mut io, word| {
            inf.set(inf.get() - 1);
            if word & CORRUPT_READ != 0 && io.status().is_success() {
                let w = word & !CORRUPT_READ;
                corrupt(&mut io, w >> 8, w as u8);
            }
            let st = io.status();
            io.complete(st);
        })?;
        let g = (self.resume_gen.load(Relaxed), self.abort_gen.load(Relaxed));
        Ok(Box::new(ErrorChannel {
            inj: self.clone(),
            base,
            inflight,
            failed: RefCell::new(VecDeque::new()),
            held: RefCell::new(VecDeque::new()),
            seen_resume: Cell::new(g.0),
            seen_abort: Cell::new(g.1),
        }))
    }
}

impl ErrorChannel {
    fn pass(&self, io: Box<BdevIo>, word: u64) -> Result<(), Box<BdevIo>> {
        self.base.submit(io, word)?;
        self.inflight.set(self.inflight.get() + 1);
        Ok(())
    }

    fn fail(&self, mut io: Box<BdevIo>, status: IoStatus) -> Result<(), Box<BdevIo>> {
        io.status = status;
        self.failed.borrow_mut().push_back(io);
        Ok(())
    }
}

impl BackendChannel for ErrorChannel {
    fn submit(&self, mut io: Box<BdevIo>) -> Result<(), Box<BdevIo>> {
        let Some(i) = rule_index(io.kind()) else {
            return self.pass(io, 0);
        };
        let rule = &self.inj.rules[i];
        let Some(kind) = rule.hits(self.inflight.get()) else {
            return self.pass(io, 0);
        };
        let arg = rule.arg.load(Relaxed);
        match kind {
            FAILURE => self.fail(io, IoStatus::InternalError),
            NVME => self.fail(
                io,
                IoStatus::Nvme {
                    sct: (arg >> 8) as u8 & 0x7,
                    sc: arg as u8,
                    dnr: false,
                },
            ),
            PENDING => {
                self.inj.pending.fetch_add(1, Relaxed);
                self.held.borrow_mut().push_back(io);
                Ok(())
            }
            CORRUPT if io.kind() == IoKind::Write => {
                corrupt(&mut io, arg >> 8, arg as u8);
                self.pass(io, 0)
            }
            CORRUPT if io.kind() == IoKind::Read => self.pass(io, CORRUPT_READ | arg),
            NOMEM => Err(io),
            // Corrupting an unmap or a flush: nothing to corrupt.
            _ => self.pass(io, 0),
        }
    }

    fn poll(&self) -> PollStatus {
        let mut busy = false;
        let abort = self.inj.abort_gen.load(Relaxed);
        let resume = self.inj.resume_gen.load(Relaxed);
        if abort != self.seen_abort.get() || resume != self.seen_resume.get() {
            let aborting = abort != self.seen_abort.get();
            self.seen_abort.set(abort);
            self.seen_resume.set(resume);
            let held = std::mem::take(&mut *self.held.borrow_mut());
            for io in held {
                busy = true;
                self.inj.pending.fetch_sub(1, Relaxed);
                if aborting {
                    io.complete(IoStatus::Aborted);
                } else if let Err(io) = self.pass(io, 0) {
                    // The base is full: back in line for the next resume.
                    self.inj.pending.fetch_add(1, Relaxed);
                    self.held.borrow_mut().push_back(io);
                    self.seen_resume.set(resume.wrapping_sub(1));
                }
            }
        }
        // Only those failed before this poll: one resubmitted from its callback waits.
        let n = self.failed.borrow().len();
        for _ in 0..n {
            let Some(io) = self.failed.borrow_mut().pop_front() else {
                break;
            };
            busy = true;
            let st = io.status();
            io.complete(st);
        }
        PollStatus::from_busy(busy)
    }

    /// A held I/O completes as aborted on the next poll; one at the base is the base's
    /// to stop.
    fn abort(&self, id: usize) -> bool {
        let held = {
            let mut h = self.held.borrow_mut();
            h.iter()
                .position(|io| io.id() == id)
                .and_then(|i| h.remove(i))
        };
        match held {
            Some(mut io) => {
                self.inj.pending.fetch_sub(1, Relaxed);
                io.status = IoStatus::Aborted;
                self.failed.borrow_mut().push_back(io);
                true
            }
            None => self.base.abort(id),
        }
    }
}

impl Drop for ErrorChannel {
    fn drop(&mut self) {
        let n = self.held.borrow().len() + self.failed.borrow().len();
        if n > 0 {
            tracing::warn!("an error bdev channel closed with {n} I/Os held; they are dropped");
        }
    }
}
