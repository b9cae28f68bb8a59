//! The null bdev: completes every I/O at once, or after a configured latency; reads
//! return zeroes, writes go nowhere. A baseline for measuring the layers above it.

use super::deferred::DeferredQueue;
use super::{BackendChannel, Bdev, BdevBackend, BdevIo, BdevParams, IoKind, IoStatus};
use crate::Error;
use crate::thread::{PollStatus, Thread};
use std::sync::Arc;
use std::time::Duration;

/// I/Os one null channel holds in flight at most.
pub const NULL_QUEUE_DEPTH_MAX: usize = 4096;

/// Parameters of `bdev_null_create`.
#[derive(Clone, Debug)]
pub struct NullOpts {
    /// Unique name.
    pub name: String,
    /// Bytes per block (default 512).
    pub block_size: u32,
    /// Number of blocks.
    pub num_blocks: u64,
    /// UUID; random when `None`.
    pub uuid: Option<uuid::Uuid>,
    /// Time from submission to completion (default none).
    pub latency: Duration,
}

impl NullOpts {
    /// A null bdev of `size_bytes` bytes in 512-byte blocks.
    pub fn new(name: &str, size_bytes: u64) -> Self {
        NullOpts {
            name: name.to_owned(),
            block_size: 512,
            num_blocks: size_bytes / 512,
            uuid: None,
            latency: Duration::ZERO,
        }
    }
}

struct NullBackend {
    latency_ns: u64,
}

struct NullChannel {
    q: DeferredQueue,
}

/// Creates a null bdev.
pub fn create(opts: NullOpts) -> Result<Arc<Bdev>, Error> {
    Bdev::new(
        BdevParams {
            name: opts.name,
            uuid: opts.uuid,
            block_size: opts.block_size,
            num_blocks: opts.num_blocks,
            product_name: "Null disk",
        },
        Box::new(NullBackend {
            latency_ns: opts.latency.as_nanos() as u64,
        }),
    )
}

impl BdevBackend for NullBackend {
    fn open_channel(&self, thread: &Thread) -> Result<Box<dyn BackendChannel>, Error> {
        Ok(Box::new(NullChannel {
            q: DeferredQueue::new(thread, NULL_QUEUE_DEPTH_MAX, self.latency_ns),
        }))
    }
}

impl BackendChannel for NullChannel {
    fn submit(&self, mut io: Box<BdevIo>) -> Result<(), Box<BdevIo>> {
        if io.kind() == IoKind::Read {
            for b in io.bufs_mut() {
                b.as_mut_slice().fill(0);
            }
        }
        self.q.push(io, IoStatus::Success)
    }

    fn poll(&self) -> PollStatus {
        self.q.poll()
    }
}
