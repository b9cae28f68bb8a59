//! The malloc bdev: blocks kept in RAM.
//!
//! The data lives in one anonymous mapping. Like a disk, the bdev does not order
//! overlapping I/Os from different threads: two writes to the same block in flight at
//! once leave either one's data there, as on any NVMe namespace. In Rust's memory model
//! such overlapping copies from two threads are a data race (the bytes are copied with
//! plain `memcpy`, as SPDK does); a caller that keeps overlapping I/Os apart, as every
//! NVMe host must for a defined result, never causes one. See engine/DESIGN.md.

use super::deferred::DeferredQueue;
use super::{BackendChannel, Bdev, BdevBackend, BdevIo, BdevParams, IoKind, IoStatus};
use crate::Error;
use crate::dma::HostMem;
use crate::thread::{PollStatus, Thread};
use std::sync::Arc;

/// I/Os one malloc channel holds in flight at most.
pub const MALLOC_QUEUE_DEPTH_MAX: usize = 4096;

/// Parameters of `bdev_malloc_create`.
#[derive(Clone, Debug)]
pub struct MallocOpts {
    /// Unique name.
    pub name: String,
    /// Bytes per block (SPDK's default 512).
    pub block_size: u32,
    /// Number of blocks.
    pub num_blocks: u64,
    /// UUID; random when `None`.
    pub uuid: Option<uuid::Uuid>,
}

impl MallocOpts {
    /// A malloc bdev of `size_bytes` bytes in 512-byte blocks.
    pub fn new(name: &str, size_bytes: u64) -> Self {
        MallocOpts {
            name: name.to_owned(),
            block_size: 512,
            num_blocks: size_bytes / 512,
            uuid: None,
        }
    }
}

struct MallocBackend {
    mem: Arc<HostMem>,
    block_size: u64,
}

struct MallocChannel {
    mem: Arc<HostMem>,
    block_size: u64,
    q: DeferredQueue,
}

/// Creates a malloc bdev; its blocks read as zeroes until written.
pub fn create(opts: MallocOpts) -> Result<Arc<Bdev>, Error> {
    let len = (opts.block_size as u64)
        .checked_mul(opts.num_blocks)
        .filter(|&l| l > 0 && l <= isize::MAX as u64)
        .ok_or_else(|| Error::InvalidParam {
            what: "num_blocks".into(),
            why: "the size must be positive and fit in memory".into(),
        })?;
    let mem = Arc::new(HostMem::alloc_pageable(len as usize)?);
    Bdev::new(
        BdevParams {
            name: opts.name,
            uuid: opts.uuid,
            block_size: opts.block_size,
            num_blocks: opts.num_blocks,
            product_name: "Malloc disk",
        },
        Box::new(MallocBackend {
            mem,
            block_size: opts.block_size as u64,
        }),
    )
}

impl BdevBackend for MallocBackend {
    fn open_channel(&self, thread: &Thread) -> Result<Box<dyn BackendChannel>, Error> {
        Ok(Box::new(MallocChannel {
            mem: self.mem.clone(),
            block_size: self.block_size,
            q: DeferredQueue::new(thread, MALLOC_QUEUE_DEPTH_MAX, 0),
        }))
    }
}

impl MallocChannel {
    /// The byte range of the I/O in the mapping; the bdev layer checked it is in range.
    fn range(&self, io: &BdevIo) -> (*mut u8, usize) {
        let off = (io.offset_blocks() * self.block_size) as usize;
        let len = (io.num_blocks() * self.block_size) as usize;
        assert!(off + len <= self.mem.len(), "range checked at submission");
        // SAFETY: off + len is inside the mapping (asserted above).
        (unsafe { self.mem.as_ptr().add(off) }, len)
    }
}

impl BackendChannel for MallocChannel {
    fn submit(&self, mut io: Box<BdevIo>) -> Result<(), Box<BdevIo>> {
        if self.q.is_full() {
            return Err(io);
        }
        let (base, len) = self.range(&io);
        match io.kind() {
            IoKind::Read => {
                let mut at = base;
                for b in io.bufs_mut() {
                    let n = b.len();
                    // SAFETY: `at..at+n` lies inside the I/O's range of the mapping (the
                    // buffers add up to `len`); the buffer is ours and does not overlap it.
                    unsafe {
                        std::ptr::copy_nonoverlapping(at, b.as_mut_slice().as_mut_ptr(), n);
                        at = at.add(n);
                    }
                }
            }
            IoKind::Write => {
                let mut at = base;
                for b in io.bufs() {
                    let n = b.len();
                    // SAFETY: as for reads, the other way round.
                    unsafe {
                        std::ptr::copy_nonoverlapping(b.as_slice().as_ptr(), at, n);
                        at = at.add(n);
                    }
                }
            }
            IoKind::WriteZeroes | IoKind::Unmap => {
                // SAFETY: `base..base+len` is the I/O's range inside the mapping.
                unsafe { std::ptr::write_bytes(base, 0, len) };
            }
            IoKind::Flush => {}
        }
        self.q.push(io, IoStatus::Success)
    }

    fn poll(&self) -> PollStatus {
        self.q.poll()
    }
}
