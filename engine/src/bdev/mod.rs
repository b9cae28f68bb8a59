//! Block devices (SPDK's bdev layer).
//!
//! A [`Bdev`] has a name, a UUID, a block size and a block count, and a backend module
//! ([`null`], [`malloc`], [`uring`], [`nvme`]), or sits on another bdev ([`error`] injects
//! faults, [`delay`] adds latency: SPDK's virtual bdevs). Each thread that does I/O opens the bdev's channel
//! ([`Bdev::channel`], an [`IoChannel`]); the channel registers one poller that reaps the
//! backend's completions. A [`BdevIo`] is read, write, flush, write-zeroes or unmap with a
//! scatter list of [`DmaBuf`]s; it is created by the caller (usually once, and reused),
//! moved into [`IoChannel::submit`], and handed back to the caller's callback, on the
//! submitting thread, when it completes. An I/O in flight owns its buffers.
//!
//! Bad input (an LBA beyond the end, a data length that is not the block count times the
//! block size, a zero-length I/O, an unsupported kind) is refused at submission with a
//! status, never a panic; a backend error fails that I/O alone. Statuses map one-to-one
//! onto NVMe statuses ([`IoStatus::nvme_status`]).

mod client;
mod deferred;
pub mod delay;
pub mod error;
pub mod fabric;
pub mod iostat;
pub mod malloc;
pub mod null;
pub mod nvme;
mod stack;
pub mod uring;

pub use client::{BdevClient, ClientError};

use crate::Error;
use crate::dma::DmaBuf;
use crate::thread::{IoChannel, IoDevice, PollStatus, Poller, Thread};
use arrayvec::ArrayVec;
use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Buffers one [`BdevIo`] carries at most.
pub const SGL_SEGMENTS_MAX: usize = 16;

/// What an I/O does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoKind {
    /// Read blocks into the buffers.
    Read,
    /// Write the buffers to blocks.
    Write,
    /// Make completed writes durable.
    Flush,
    /// Set blocks to zero.
    WriteZeroes,
    /// Deallocate blocks (they read back as zeroes on every module here).
    Unmap,
}

/// How an I/O ended. Each maps to one NVMe status (see [`IoStatus::nvme_status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoStatus {
    /// Done.
    Success,
    /// The bdev does not do this kind of I/O.
    InvalidOpcode,
    /// A field is wrong: zero blocks, or data length not blocks times block size.
    InvalidField,
    /// The range runs past the last block.
    LbaOutOfRange,
    /// The backing store is full.
    CapacityExceeded,
    /// The write failed in the backend.
    WriteFault,
    /// The read failed in the backend.
    UnrecoveredReadError,
    /// The I/O was aborted or cancelled.
    Aborted,
    /// The bdev's queue is full: retry later.
    NoMemory,
    /// Anything else that went wrong in the backend.
    InternalError,
    /// This NVMe status exactly (an NVMe device's, or one the error bdev injects).
    Nvme {
        /// Status Code Type.
        sct: u8,
        /// Status Code.
        sc: u8,
        /// Do Not Retry.
        dnr: bool,
    },
}

impl IoStatus {
    /// The NVMe status this maps to, as (Status Code Type, Status Code, Do Not Retry):
    /// NVMe base specification 2.0, section 4.1.3 (Generic Command Status, SCT 0) and
    /// 4.1.3.3 (Media and Data Integrity Errors, SCT 2).
    pub fn nvme_status(self) -> (u8, u8, bool) {
        match self {
            IoStatus::Success => (0, 0x00, false),
            IoStatus::InvalidOpcode => (0, 0x01, true),
            IoStatus::InvalidField => (0, 0x02, true),
            IoStatus::InternalError => (0, 0x06, false),
            IoStatus::Aborted => (0, 0x07, false),
            IoStatus::NoMemory => (0, 0x21, false), // Command Interrupted: retry
            IoStatus::LbaOutOfRange => (0, 0x80, true),
            IoStatus::CapacityExceeded => (0, 0x81, true),
            IoStatus::WriteFault => (2, 0x80, false),
            IoStatus::UnrecoveredReadError => (2, 0x81, false),
            IoStatus::Nvme { sct, sc, dnr } => (sct, sc, dnr),
        }
    }

    /// Whether this is `Success`.
    pub fn is_success(self) -> bool {
        self == IoStatus::Success
    }

    /// The status for a kernel errno from an I/O of `kind`.
    pub fn from_errno(kind: IoKind, errno: i32) -> IoStatus {
        match errno {
            libc::EIO | libc::ENODATA | libc::EILSEQ => match kind {
                IoKind::Read => IoStatus::UnrecoveredReadError,
                _ => IoStatus::WriteFault,
            },
            libc::ENOSPC | libc::EDQUOT | libc::EFBIG => IoStatus::CapacityExceeded,
            libc::EINVAL => IoStatus::InvalidField,
            libc::EOPNOTSUPP | libc::ENOTTY => IoStatus::InvalidOpcode,
            libc::ECANCELED | libc::EINTR => IoStatus::Aborted,
            libc::ENOMEM | libc::EAGAIN | libc::EBUSY => IoStatus::NoMemory,
            _ => IoStatus::InternalError,
        }
    }
}

/// The callback an I/O is handed back to.
pub type IoCallback = Rc<dyn Fn(Box<BdevIo>)>;

/// One block I/O. Allocate it once ([`BdevIo::new`]) and reuse it.
pub struct BdevIo {
    kind: IoKind,
    offset_blocks: u64,
    num_blocks: u64,
    bufs: ArrayVec<DmaBuf, SGL_SEGMENTS_MAX>,
    status: IoStatus,
    cb: Option<IoCallback>,
    // The channel it was submitted on: an I/O in flight keeps its channel open.
    ch: Option<IoChannel<Bdev>>,
    // The callbacks and channels of the stacked bdevs above the one it is on now, with
    // a word of each one's own (see `stack`).
    frames: ArrayVec<Frame, STACK_DEPTH_MAX>,
    // When it was submitted to the bdev it is on now, in TSC ticks (`iostat`).
    start: u64,
    /// The caller's own tag, untouched by the bdev layer.
    pub ctx: u64,
}

impl fmt::Debug for BdevIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BdevIo")
            .field("kind", &self.kind)
            .field("offset_blocks", &self.offset_blocks)
            .field("num_blocks", &self.num_blocks)
            .field("bufs", &self.bufs.len())
            .field("status", &self.status)
            .field("ctx", &self.ctx)
            .finish()
    }
}

impl BdevIo {
    /// A new, empty read of zero blocks.
    pub fn new() -> Box<BdevIo> {
        Box::new(BdevIo {
            kind: IoKind::Read,
            offset_blocks: 0,
            num_blocks: 0,
            bufs: ArrayVec::new(),
            status: IoStatus::Success,
            cb: None,
            ch: None,
            frames: ArrayVec::new(),
            start: 0,
            ctx: 0,
        })
    }

    /// Sets what the I/O does; keeps its buffers.
    pub fn prepare(&mut self, kind: IoKind, offset_blocks: u64, num_blocks: u64) {
        self.kind = kind;
        self.offset_blocks = offset_blocks;
        self.num_blocks = num_blocks;
        self.status = IoStatus::Success;
    }

    /// Appends a buffer; hands it back when the list is full.
    pub fn push_buf(&mut self, buf: DmaBuf) -> Result<(), DmaBuf> {
        self.bufs.try_push(buf).map_err(|e| e.element())
    }

    /// Drops every buffer (back to its pool).
    pub fn clear_bufs(&mut self) {
        self.bufs.clear();
    }

    /// Takes the buffers out.
    pub fn take_bufs(&mut self) -> impl Iterator<Item = DmaBuf> + '_ {
        self.bufs.drain(..)
    }

    /// The buffers.
    pub fn bufs(&self) -> &[DmaBuf] {
        &self.bufs
    }

    /// The buffers, writable.
    pub fn bufs_mut(&mut self) -> &mut [DmaBuf] {
        &mut self.bufs
    }

    /// Its identity while in flight (its address: an I/O moves as one box through
    /// every bdev it passes), for [`IoChannel::abort`].
    pub fn id(&self) -> usize {
        self as *const BdevIo as usize
    }

    /// Total bytes in the buffers.
    pub fn data_len(&self) -> usize {
        self.bufs.iter().map(|b| b.len()).sum()
    }

    /// What it does.
    pub fn kind(&self) -> IoKind {
        self.kind
    }

    /// First block.
    pub fn offset_blocks(&self) -> u64 {
        self.offset_blocks
    }

    /// Number of blocks.
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    /// How it ended (meaningful in the callback).
    pub fn status(&self) -> IoStatus {
        self.status
    }

    /// Hands the I/O back to its submitter with `status`.
    pub(crate) fn complete(mut self: Box<Self>, status: IoStatus) {
        self.status = status;
        let cb = self.cb.take().expect("a submitted I/O has a callback");
        // Held until the callback returns: the channel may be closing with this I/O.
        let _ch = self.ch.take();
        if let Some(ch) = &_ch {
            let bytes = self.num_blocks * ch.device().block_size as u64;
            let lat = iostat::ticks().wrapping_sub(self.start);
            ch.stat.record(self.kind, status, bytes, lat);
        }
        cb(self);
    }
}

/// Bdevs stacked on one another at most (an error bdev on a delay bdev on a malloc bdev
/// is three).
pub const STACK_DEPTH_MAX: usize = 4;

/// A stacked bdev's saved callback, channel and word while its I/O is below it.
struct Frame {
    cb: IoCallback,
    ch: IoChannel<Bdev>,
    word: u64,
    start: u64,
}

/// A refused submission: the I/O comes back with the reason.
pub struct SubmitError {
    /// The I/O, untouched but for its status.
    pub io: Box<BdevIo>,
    /// Why: [`IoStatus::NoMemory`] means the queue is full (retry after a completion);
    /// anything else means the I/O itself is wrong.
    pub status: IoStatus,
}

impl fmt::Debug for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitError")
            .field("status", &self.status)
            .field("io", &self.io)
            .finish()
    }
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "I/O refused: {:?} ({:?})", self.status, self.io)
    }
}

impl std::error::Error for SubmitError {}

/// A backend module's side of a bdev.
pub trait BdevBackend: Send + Sync + 'static {
    /// Opens this thread's backend channel.
    fn open_channel(&self, thread: &Thread) -> Result<Box<dyn BackendChannel>, Error>;
    /// Whether it does this kind of I/O.
    fn supports(&self, kind: IoKind) -> bool {
        let _ = kind;
        true
    }
    /// A buffer pool the device reaches best (an NVMe controller's CMB), for callers
    /// that can fill buffers there; `None`: the host pools.
    fn preferred_iobuf(&self) -> Option<Arc<crate::dma::Iobuf>> {
        None
    }

    /// The owner token of that pool's device memory in the DMA map
    /// ([`crate::dma::Domain::Device`]), if it is device memory.
    fn device_memory_owner(&self) -> Option<u64> {
        None
    }

    /// Bdevs below this one (0 for a module with its own storage).
    fn stack_depth(&self) -> usize {
        0
    }

    /// The module's own state, for its RPCs ([`Bdev::module`]).
    fn as_any(&self) -> Option<&dyn Any> {
        None
    }
}

/// A backend's per-thread queue.
pub trait BackendChannel {
    /// Starts a validated I/O, or hands it back when the queue is full. It must never
    /// complete the I/O from inside this call (the caller may hold borrows).
    fn submit(&self, io: Box<BdevIo>) -> Result<(), Box<BdevIo>>;
    /// Reaps completions and calls their callbacks, with no borrow of its own state
    /// held during a callback (a callback may submit again).
    fn poll(&self) -> PollStatus;
    /// Asks that I/O `id` ([`BdevIo::id`]), submitted here and not yet completed,
    /// complete as [`IoStatus::Aborted`] on a later poll (never inside this call); false
    /// when it cannot be stopped (it is at its device): it completes on its own.
    fn abort(&self, id: usize) -> bool {
        let _ = id;
        false
    }
}

/// What a bdev is made of, given by its module.
#[derive(Clone, Debug)]
pub struct BdevParams {
    /// Unique name.
    pub name: String,
    /// UUID; a random one when `None`.
    pub uuid: Option<uuid::Uuid>,
    /// Bytes per block: a power of two from 512 to 64 KiB.
    pub block_size: u32,
    /// Number of blocks.
    pub num_blocks: u64,
    /// The module's product name (`Null disk`, `Malloc disk`, `URING bdev`).
    pub product_name: &'static str,
}

/// A block device.
pub struct Bdev {
    name: String,
    uuid: uuid::Uuid,
    block_size: u32,
    /// Changes only through [`BdevRegistry::resize`].
    num_blocks: AtomicU64,
    product_name: &'static str,
    backend: Box<dyn BdevBackend>,
    stats: Arc<iostat::BdevStats>,
}

impl fmt::Debug for Bdev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bdev")
            .field("name", &self.name)
            .field("uuid", &self.uuid)
            .field("block_size", &self.block_size)
            .field("num_blocks", &self.num_blocks())
            .field("product_name", &self.product_name)
            .finish()
    }
}

impl Bdev {
    /// Makes a bdev from its module's parameters and backend.
    pub fn new(params: BdevParams, backend: Box<dyn BdevBackend>) -> Result<Arc<Bdev>, Error> {
        let bs = params.block_size;
        if !(512..=65536).contains(&bs) || !bs.is_power_of_two() {
            return Err(Error::InvalidParam {
                what: "block_size".into(),
                why: format!("{bs} is not a power of two from 512 to 65536"),
            });
        }
        if params.num_blocks == 0 {
            return Err(Error::InvalidParam {
                what: "num_blocks".into(),
                why: "a bdev needs at least one block".into(),
            });
        }
        if params.name.is_empty() {
            return Err(Error::InvalidParam {
                what: "name".into(),
                why: "a bdev needs a name".into(),
            });
        }
        Ok(Arc::new(Bdev {
            name: params.name,
            uuid: params.uuid.unwrap_or_else(uuid::Uuid::new_v4),
            block_size: bs,
            num_blocks: AtomicU64::new(params.num_blocks),
            product_name: params.product_name,
            backend,
            stats: Arc::default(),
        }))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        self.uuid
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Number of blocks.
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks.load(Ordering::Relaxed)
    }

    /// The module's product name.
    pub fn product_name(&self) -> &'static str {
        self.product_name
    }

    /// The buffer pool its device reaches best, if not the host's (see
    /// [`BdevBackend::preferred_iobuf`]).
    pub fn preferred_iobuf(&self) -> Option<Arc<crate::dma::Iobuf>> {
        self.backend.preferred_iobuf()
    }

    /// The owner token of that pool's device memory, if any (see
    /// [`BdevBackend::device_memory_owner`]).
    pub fn device_memory_owner(&self) -> Option<u64> {
        self.backend.device_memory_owner()
    }

    /// Whether it does this kind of I/O.
    pub fn supports(&self, kind: IoKind) -> bool {
        self.backend.supports(kind)
    }

    /// Its module's state, if the module is `T` (the error bdev's injector, say).
    pub fn module<T: 'static>(&self) -> Option<&T> {
        self.backend.as_any()?.downcast_ref()
    }

    /// Its I/O statistics (`bdev_get_iostat`).
    pub fn stats(&self) -> &iostat::BdevStats {
        &self.stats
    }

    /// Bdevs stacked below it.
    pub fn stack_depth(&self) -> usize {
        self.backend.stack_depth()
    }

    /// The current thread's channel, opened on first use.
    pub fn channel(self: &Arc<Self>) -> Result<IoChannel<Bdev>, Error> {
        Thread::expect_current().get_io_channel(self)
    }

    fn check(&self, io: &BdevIo) -> IoStatus {
        if !self.supports(io.kind) {
            return IoStatus::InvalidOpcode;
        }
        let end = io.offset_blocks.checked_add(io.num_blocks);
        match io.kind {
            IoKind::Flush if io.num_blocks == 0 => return IoStatus::Success,
            _ if io.num_blocks == 0 => return IoStatus::InvalidField,
            _ => {}
        }
        match end {
            Some(end) if end <= self.num_blocks() => {}
            _ => return IoStatus::LbaOutOfRange,
        }
        if matches!(io.kind, IoKind::Read | IoKind::Write) {
            let want = io.num_blocks.checked_mul(self.block_size as u64);
            if io.bufs.is_empty() || want != Some(io.data_len() as u64) {
                return IoStatus::InvalidField;
            }
        }
        IoStatus::Success
    }
}

/// A bdev's per-thread state: the backend's queue and the poller that reaps it.
pub struct BdevChannelState {
    backend: Rc<dyn BackendChannel>,
    _poller: Poller,
    stat: Arc<iostat::ChannelStat>,
    stats: Arc<iostat::BdevStats>,
}

impl Drop for BdevChannelState {
    fn drop(&mut self) {
        self.stats.close(&self.stat);
    }
}

impl fmt::Debug for BdevChannelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BdevChannelState").finish_non_exhaustive()
    }
}

impl IoDevice for Bdev {
    type Channel = BdevChannelState;

    fn create_channel(self: &Arc<Self>, thread: &Thread) -> Result<BdevChannelState, Error> {
        let backend: Rc<dyn BackendChannel> = Rc::from(self.backend.open_channel(thread)?);
        let b = backend.clone();
        let poller = thread.register_poller(&format!("bdev_{}", self.name), move || b.poll());
        Ok(BdevChannelState {
            backend,
            _poller: poller,
            stat: self.stats.open(thread.handle()),
            stats: self.stats.clone(),
        })
    }
}

impl IoChannel<Bdev> {
    /// Asks that I/O `id` (see [`BdevIo::id`]) complete as aborted; false when the bdev
    /// cannot stop it (it then completes on its own). Modules that hold I/Os (delay,
    /// error) stop those they hold.
    pub fn abort(&self, id: usize) -> bool {
        self.backend.abort(id)
    }

    /// Submits `io`; `cb` gets it back on this thread when it completes. A refused I/O
    /// comes back at once in the error, with the reason.
    pub fn submit(&self, mut io: Box<BdevIo>, cb: &IoCallback) -> Result<(), SubmitError> {
        let status = self.device().check(&io);
        if !status.is_success() {
            io.status = status;
            return Err(SubmitError { io, status });
        }
        io.cb = Some(cb.clone());
        io.ch = Some(self.clone());
        io.start = iostat::ticks();
        self.backend.submit(io).map_err(|mut io| {
            io.cb = None;
            io.ch = None;
            io.status = IoStatus::NoMemory;
            SubmitError {
                io,
                status: IoStatus::NoMemory,
            }
        })
    }
}

/// The bdevs of an engine, by name (control path), with the configuration entry that
/// recreates each one, in creation order, for `save_config`.
#[derive(Default)]
pub struct BdevRegistry {
    inner: Mutex<RegistryInner>,
    /// Told the name of each bdev [`BdevRegistry::resize`] resized.
    resize_watchers: Mutex<Vec<ResizeWatcher>>,
}

/// What is told of a resized bdev (its name).
pub type ResizeWatcher = Box<dyn Fn(&str) + Send + Sync>;

impl fmt::Debug for BdevRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BdevRegistry")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct RegistryInner {
    map: BTreeMap<String, Arc<Bdev>>,
    /// (bdev name, method, params), oldest first.
    configs: Vec<(String, String, serde_json::Value)>,
    /// Stacked bdevs whose base does not exist yet.
    waiting: Vec<Waiting>,
}

/// A constructor of a stacked bdev from its base.
pub type MakeStacked = Box<dyn FnOnce(Arc<Bdev>) -> Result<Arc<Bdev>, Error> + Send>;

/// A stacked bdev waiting for its base, as SPDK defers a virtual bdev whose base has
/// not arrived: SPDK's `save_config` writes a delay or error bdev before the malloc
/// bdev below it.
struct Waiting {
    base: String,
    name: String,
    make: MakeStacked,
}

impl fmt::Debug for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiting")
            .field("base", &self.base)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl BdevRegistry {
    /// Adds a bdev; its name must be new.
    pub fn register(&self, bdev: Arc<Bdev>) -> Result<(), Error> {
        self.insert(bdev, None)
    }

    /// Adds a bdev with the method and parameters that recreate it.
    pub fn register_with_config(
        &self,
        bdev: Arc<Bdev>,
        method: &str,
        params: serde_json::Value,
    ) -> Result<(), Error> {
        self.insert(bdev, Some((method.to_owned(), params)))
    }

    fn insert(
        &self,
        bdev: Arc<Bdev>,
        config: Option<(String, serde_json::Value)>,
    ) -> Result<(), Error> {
        let mut g = self.inner.lock().unwrap();
        if g.map.contains_key(bdev.name()) {
            return Err(Error::Exists {
                what: format!("bdev {}", bdev.name()),
            });
        }
        if let Some((m, p)) = config {
            g.configs.push((bdev.name().to_owned(), m, p));
        }
        g.map.insert(bdev.name().to_owned(), bdev.clone());
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut g.waiting)
            .into_iter()
            .partition(|w| w.base == bdev.name());
        g.waiting = waiting;
        drop(g);
        // The bdevs that waited for this one: their config entries are in place.
        for w in ready {
            let made = (w.make)(bdev.clone()).and_then(|b| {
                let name = b.name().to_owned();
                self.insert(b, None).map(|()| name)
            });
            match made {
                Ok(name) => tracing::info!(bdev = %name, base = %w.base, "deferred bdev created"),
                Err(e) => {
                    tracing::error!(bdev = %w.name, base = %w.base, "deferred bdev not created: {e}");
                    let mut g = self.inner.lock().unwrap();
                    g.configs.retain(|(n, _, _)| *n != w.name);
                }
            }
        }
        Ok(())
    }

    /// Adds bdev `name`, made by `make` on bdev `base`, with the method and parameters
    /// that recreate it. When `base` does not exist yet the creation waits for it (and
    /// is in [`saved_config`](Self::saved_config) meanwhile): `None` then.
    pub fn register_stacked(
        &self,
        base: &str,
        name: &str,
        method: &str,
        params: serde_json::Value,
        make: MakeStacked,
    ) -> Result<Option<Arc<Bdev>>, Error> {
        let mut g = self.inner.lock().unwrap();
        if g.map.contains_key(name) || g.waiting.iter().any(|w| w.name == name) {
            return Err(Error::Exists {
                what: format!("bdev {name}"),
            });
        }
        match g.map.get(base).cloned() {
            Some(b) => {
                drop(g);
                let bdev = make(b)?;
                self.insert(bdev.clone(), Some((method.to_owned(), params)))?;
                Ok(Some(bdev))
            }
            None => {
                g.configs.push((name.to_owned(), method.to_owned(), params));
                g.waiting.push(Waiting {
                    base: base.to_owned(),
                    name: name.to_owned(),
                    make,
                });
                Ok(None)
            }
        }
    }

    /// The bdevs waiting for their bases, by name.
    pub fn waiting(&self) -> Vec<String> {
        let g = self.inner.lock().unwrap();
        g.waiting.iter().map(|w| w.name.clone()).collect()
    }

    /// Whether bdev `name` waits for its base.
    pub fn is_waiting(&self, name: &str) -> bool {
        let g = self.inner.lock().unwrap();
        g.waiting.iter().any(|w| w.name == name)
    }

    /// The bdev called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Bdev>> {
        self.inner.lock().unwrap().map.get(name).cloned()
    }

    /// Removes and returns the bdev called `name`; channels still open keep it alive
    /// until they close.
    pub fn remove(&self, name: &str) -> Option<Arc<Bdev>> {
        let mut g = self.inner.lock().unwrap();
        g.configs.retain(|(n, _, _)| n != name);
        g.waiting.retain(|w| w.name != name);
        g.map.remove(name)
    }

    /// Every bdev, by name.
    pub fn list(&self) -> Vec<Arc<Bdev>> {
        self.inner.lock().unwrap().map.values().cloned().collect()
    }

    /// Replaces the parameters that recreate bdev `name` (after a change such as
    /// `bdev_delay_update_latency`).
    pub fn update_config(&self, name: &str, params: serde_json::Value) {
        let mut g = self.inner.lock().unwrap();
        if let Some(e) = g.configs.iter_mut().find(|(n, _, _)| n == name) {
            e.2 = params;
        }
    }

    /// Adds another entry that recreates part of bdev `name` (a second path of a
    /// controller), saved after the entries before it and dropped with the bdev.
    pub fn add_config(&self, name: &str, method: &str, params: serde_json::Value) {
        let mut g = self.inner.lock().unwrap();
        g.configs.push((name.to_owned(), method.to_owned(), params));
    }

    /// Keeps the saved entries for which `keep(bdev, method, params)` holds.
    pub fn retain_configs(&self, keep: impl Fn(&str, &str, &serde_json::Value) -> bool) {
        let mut g = self.inner.lock().unwrap();
        g.configs.retain(|(n, m, p)| keep(n, m, p));
    }

    /// Calls `f` with the name of every bdev resized from now on (the NVMe-oF target
    /// raises Namespace Attribute Changed for namespaces on it).
    pub fn on_resize(&self, f: ResizeWatcher) {
        self.resize_watchers.lock().unwrap().push(f);
    }

    /// Sets bdev `name`'s size to `num_blocks` (its module changed it: a remote
    /// namespace resized, `bdev_null_resize`); I/O checks the new bound at once, and
    /// the watchers are told. The saved entry's `num_blocks`, if it has one, follows.
    pub fn resize(&self, name: &str, num_blocks: u64) -> Result<(), Error> {
        let b = self.get(name).ok_or_else(|| Error::NotFound {
            what: format!("bdev {name}"),
        })?;
        if num_blocks == 0 {
            return Err(Error::InvalidParam {
                what: "num_blocks".into(),
                why: "a bdev needs at least one block".into(),
            });
        }
        let old = b.num_blocks.swap(num_blocks, Ordering::Relaxed);
        {
            let mut g = self.inner.lock().unwrap();
            if let Some(e) = g.configs.iter_mut().find(|(n, _, _)| n == name) {
                if let Some(v) = e.2.get_mut("num_blocks") {
                    *v = serde_json::json!(num_blocks);
                }
            }
        }
        tracing::info!(bdev = name, old, num_blocks, "bdev resized");
        for w in self.resize_watchers.lock().unwrap().iter() {
            w(name);
        }
        Ok(())
    }

    /// The (method, params) entries that recreate the bdevs, oldest first.
    pub fn saved_config(&self) -> Vec<(String, serde_json::Value)> {
        let g = self.inner.lock().unwrap();
        g.configs
            .iter()
            .map(|(_, m, p)| (m.clone(), p.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
