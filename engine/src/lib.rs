//! # pollux-engine
//!
//! The engine of Pollux, a userspace, polled-mode storage engine in the family of SPDK.
//!
//! ## Architecture
//!
//! - [`reactor`]: one OS thread pinned to each core of a core mask (`0x3`, `[0-1]`). Each
//!   reactor runs the lightweight threads placed on it in a loop, counts busy and idle
//!   time, and in interrupt mode sleeps on epoll when it has had nothing to do for a
//!   while, waking on a message, a timer or a registered fd.
//! - [`thread`]: lightweight threads (SPDK's `spdk_thread`) with active and timed
//!   pollers that return `Busy` or `Idle`, a bounded message queue ([`msg`]), and
//!   per-thread I/O channels of shared devices. Nothing on the I/O path takes a lock; the
//!   only cross-thread traffic is messages. A deterministic [`thread::Harness`] steps
//!   every thread from one OS thread for repeatable tests.
//! - [`dma`]: DMA memory (hugepages, or locked anonymous memory), the registration map
//!   that tells every device mapper about every region, buffer pools with per-thread
//!   caches, and per-initiator address types.
//! - [`bdev`]: block devices with per-thread channels; modules `null`, `malloc` and
//!   `uring` (files and block devices through io_uring).
//!
//! ## One I/O
//!
//! A caller on a reactor thread takes a buffer from its thread's iobuf cache, puts it in
//! a [`bdev::BdevIo`] it allocated once, and submits it on its thread's bdev channel.
//! The bdev checks it, hands it to the backend's queue (an io_uring SQ, a RAM copy), and
//! the channel's poller finds the completion and calls the caller back on the same
//! thread. No lock, no allocation.
//!
//! ## Example
//!
//! Start an engine on two cores, write and read back a block of a RAM-backed bdev from a
//! thread on each reactor, and shut down cleanly:
//!
//! ```
//! use pollux_engine::bdev::{BdevIo, IoCallback, IoKind, malloc};
//! use pollux_engine::dma::IobufOpts;
//! use pollux_engine::reactor::Engine;
//! use std::rc::Rc;
//!
//! let engine = Engine::builder()
//!     .core_mask("0x1")
//!     .iobuf(IobufOpts::small())
//!     .start()?;
//! let bdev = malloc::create(malloc::MallocOpts::new("Malloc0", 1 << 20))?;
//! let iobuf = engine.iobuf().clone();
//! let thread = engine.spawn_thread("app", None)?;
//! let (tx, rx) = std::sync::mpsc::channel();
//! thread.send_msg(move || {
//!     let ch = bdev.channel().unwrap();
//!     let bufs = iobuf.channel().unwrap();
//!     let mut io = BdevIo::new();
//!     let mut buf = bufs.get(512).unwrap();
//!     buf.as_mut_slice().fill(0x5a);
//!     io.push_buf(buf).unwrap();
//!     io.prepare(IoKind::Write, 7, 1);
//!     let done: IoCallback = Rc::new(move |io: Box<BdevIo>| {
//!         tx.send(io.status()).unwrap();
//!     });
//!     ch.submit(io, &done).unwrap();
//! })
//! .unwrap();
//! assert!(rx.recv().unwrap().is_success());
//! assert!(engine.shutdown().pools_full);
//! # Ok::<(), pollux_engine::Error>(())
//! ```
//!
//! `examples/embedded.rs` is the full version: two reactors, a malloc and a uring bdev,
//! verification of every block.

pub mod bdev;
pub mod dma;
pub mod msg;
pub mod nvmf;
pub mod reactor;
pub mod rpc;
pub mod thread;

pub use reactor::{Engine, EngineBuilder, EngineHandle};

/// Errors of the engine. Each message says what went wrong and, where it can, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A core mask that does not parse.
    #[error(
        "core mask {mask:?} is invalid: {why} (use a hex mask such as 0x3 or a list such as [0-1])"
    )]
    CoreMask {
        /// The mask as given.
        mask: String,
        /// What is wrong with it.
        why: String,
    },
    /// A core this process may not use.
    #[error(
        "core {core} is not available to this process (it may use {allowed}); choose other cores with -m"
    )]
    CoreUnavailable {
        /// The core asked for.
        core: usize,
        /// The cores it may use.
        allowed: String,
    },
    /// Pinning a reactor failed.
    #[error("cannot pin a reactor to core {core}: {source}")]
    Pin {
        /// The core.
        core: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Hugepages were required but not there.
    #[error(
        "{len} bytes of hugepages were required but not enough are free; reserve them with: echo 1024 > /proc/sys/vm/nr_hugepages"
    )]
    NoHugepages {
        /// Bytes asked for.
        len: usize,
    },
    /// A DMA region of a size the map does not take.
    #[error("a DMA region of {len} bytes cannot be registered: regions hold 1 byte to {max} bytes")]
    RegionSize {
        /// Its length.
        len: usize,
        /// The largest allowed.
        max: usize,
    },
    /// The registration map is full.
    #[error("the DMA registration map is full ({max} regions): use fewer, larger pools")]
    TooManyRegions {
        /// Its capacity.
        max: usize,
    },
    /// A mapper refused a region.
    #[error("mapper {mapper} refused a DMA region: {why}")]
    Mapper {
        /// Which mapper.
        mapper: String,
        /// Why.
        why: String,
    },
    /// A parameter out of range.
    #[error("invalid {what}: {why}")]
    InvalidParam {
        /// Which parameter.
        what: String,
        /// Why.
        why: String,
    },
    /// Something named that does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What.
        what: String,
    },
    /// The userspace NVMe driver failed (its message says what to do).
    #[error("{0}")]
    Nvme(String),
    /// A name already taken.
    #[error("{what} already exists")]
    Exists {
        /// What.
        what: String,
    },
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// A reactor's inbox of new threads is full.
    #[error("too many threads being placed on core {core} at once; retry")]
    TooManyNewThreads {
        /// The core.
        core: usize,
    },
}
