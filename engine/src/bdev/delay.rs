//! The delay bdev (SPDK's `bdev_delay_*`): a bdev stacked on another that holds each
//! read's and write's completion for a set latency before handing it up, without
//! blocking its reactor.
//!
//! As in SPDK, the delay starts when the base completes the I/O; each read (write) gets
//! the p99 read (write) latency with a chance of one in a hundred and the average one
//! otherwise; the four kinds (average read, p99 read, average write, p99 write) complete
//! in order within their own queue, so one long delay holds back only its kind. Unmap,
//! flush and write zeroes are not delayed. A latency changed at run time
//! ([`DelayLatencies::set`]) applies to I/Os the base completes afterwards.

use super::deferred::DeferredQueue;
use super::stack::{BaseChannel, Stacked, StackedModule, check_depth};
use super::{BackendChannel, Bdev, BdevIo, BdevParams, IoKind, IoStatus};
use crate::Error;
use crate::thread::{PollStatus, Thread};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Which latency (SPDK's `latency_type` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyType {
    /// Most reads.
    AvgRead,
    /// One read in a hundred.
    P99Read,
    /// Most writes.
    AvgWrite,
    /// One write in a hundred.
    P99Write,
}

impl LatencyType {
    /// SPDK's name for it.
    pub fn name(self) -> &'static str {
        match self {
            LatencyType::AvgRead => "avg_read",
            LatencyType::P99Read => "p99_read",
            LatencyType::AvgWrite => "avg_write",
            LatencyType::P99Write => "p99_write",
        }
    }

    /// The type called `name`.
    pub fn from_name(name: &str) -> Option<LatencyType> {
        [
            LatencyType::AvgRead,
            LatencyType::P99Read,
            LatencyType::AvgWrite,
            LatencyType::P99Write,
        ]
        .into_iter()
        .find(|t| t.name() == name)
    }
}

/// Parameters of `bdev_delay_create`.
#[derive(Clone, Debug)]
pub struct DelayOpts {
    /// The new bdev's name.
    pub name: String,
    /// UUID; random when `None`.
    pub uuid: Option<uuid::Uuid>,
    /// Average read latency.
    pub avg_read: Duration,
    /// p99 read latency (at least the average).
    pub p99_read: Duration,
    /// Average write latency.
    pub avg_write: Duration,
    /// p99 write latency (at least the average).
    pub p99_write: Duration,
}

/// A delay bdev's latencies, shared by its channels, reached through [`Bdev::module`].
#[derive(Debug)]
pub struct DelayLatencies {
    base: Arc<Bdev>,
    /// In ns, by [`LatencyType`] order.
    ns: [AtomicU64; 4],
}

impl DelayLatencies {
    /// The bdev below.
    pub fn base(&self) -> &Arc<Bdev> {
        &self.base
    }

    /// One latency.
    pub fn get(&self, t: LatencyType) -> Duration {
        Duration::from_nanos(self.ns[t as usize].load(Relaxed))
    }

    /// Changes one latency, for I/Os completed by the base from now on.
    pub fn set(&self, t: LatencyType, d: Duration) {
        self.ns[t as usize].store(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }
}

impl DelayOpts {
    /// Whether the latencies make sense (no p99 below its average).
    pub fn check(&self) -> Result<(), Error> {
        for (what, avg, p99) in [
            ("read", self.avg_read, self.p99_read),
            ("write", self.avg_write, self.p99_write),
        ] {
            if p99 < avg {
                return Err(Error::InvalidParam {
                    what: format!("p99_{what}_latency"),
                    why: format!("{p99:?} is below the average {avg:?}"),
                });
            }
        }
        Ok(())
    }
}

/// Creates a delay bdev on `base`.
pub fn create(base: Arc<Bdev>, opts: DelayOpts) -> Result<Arc<Bdev>, Error> {
    check_depth(&base)?;
    opts.check()?;
    let lat = Arc::new(DelayLatencies {
        base: base.clone(),
        ns: Default::default(),
    });
    lat.set(LatencyType::AvgRead, opts.avg_read);
    lat.set(LatencyType::P99Read, opts.p99_read);
    lat.set(LatencyType::AvgWrite, opts.avg_write);
    lat.set(LatencyType::P99Write, opts.p99_write);
    Bdev::new(
        BdevParams {
            name: opts.name,
            uuid: opts.uuid,
            block_size: base.block_size(),
            num_blocks: base.num_blocks(),
            product_name: "delay",
        },
        Box::new(Stacked(lat)),
    )
}

struct DelayChannel {
    base: BaseChannel,
    queues: Rc<[DeferredQueue; 4]>,
    /// Aborted I/Os, completed on the next poll.
    aborted: DeferredQueue,
}

/// I/Os one queue holds without growing.
const QUEUE_DEPTH: usize = 1024;

impl StackedModule for DelayLatencies {
    fn base_bdev(&self) -> &Arc<Bdev> {
        &self.base
    }

    fn open(self: &Arc<Self>, thread: &Thread) -> Result<Box<dyn BackendChannel>, Error> {
        let queues: Rc<[DeferredQueue; 4]> = Rc::new(std::array::from_fn(|_| {
            DeferredQueue::new(thread, QUEUE_DEPTH, 0)
        }));
        let (q, lat, t) = (queues.clone(), self.clone(), thread.clone());
        // xorshift64, seeded per channel: which I/Os get the p99 latency.
        let rng = Cell::new(thread.now() | 1);
        let base = BaseChannel::open(&self.base, thread, move |io, _| {
            let avg = match io.kind() {
                IoKind::Read => LatencyType::AvgRead,
                IoKind::Write => LatencyType::AvgWrite,
                _ => {
                    let st = io.status();
                    return io.complete(st);
                }
            };
            let mut x = rng.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            rng.set(x);
            // p99 is the next type after its average.
            let which = avg as usize + usize::from(x % 100 == 0);
            // From the base's completion itself, as SPDK's ticks: the loop's time may be
            // microseconds old, and the delay must not come out short.
            let due = t.now_precise() + lat.ns[which].load(Relaxed);
            let st = io.status();
            q[which].push_due(io, st, due);
        })?;
        Ok(Box::new(DelayChannel {
            base,
            queues,
            aborted: DeferredQueue::new(thread, 0, 0),
        }))
    }
}

impl BackendChannel for DelayChannel {
    fn submit(&self, io: Box<BdevIo>) -> Result<(), Box<BdevIo>> {
        self.base.submit(io, 0)
    }

    fn poll(&self) -> PollStatus {
        let mut busy = self.aborted.poll().is_busy();
        for q in self.queues.iter() {
            busy |= q.poll().is_busy();
        }
        PollStatus::from_busy(busy)
    }

    /// An I/O waiting out its delay completes as aborted at once (SPDK's delay bdev
    /// does the same); one still at the base is the base's to stop.
    fn abort(&self, id: usize) -> bool {
        for q in self.queues.iter() {
            if let Some(io) = q.take(id) {
                self.aborted.push_due(io, IoStatus::Aborted, 0);
                return true;
            }
        }
        self.base.abort(id)
    }
}
