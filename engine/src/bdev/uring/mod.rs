//! The io_uring bdev: a file or block device driven through one io_uring ring per
//! thread.
//!
//! - O_DIRECT where the file system allows it; where it does not, buffered I/O with one
//!   logged warning (and `direct: false` turns it off on purpose).
//! - Registered files: the fd is fixed file 0 of each ring.
//! - Registered buffers from the registration map: each ring is a [`Mapper`]. At
//!   creation it sets up a sparse buffer table of [`MAX_REGIONS`] slots and registers
//!   every DMA region at its slot number; regions registered later are added to every
//!   ring. A one-segment read or write whose buffer resolves for the ring
//!   ([`UringAddr`]) uses `READ_FIXED`/`WRITE_FIXED`; others use `READV`/`WRITEV`.
//! - Submissions are batched: `submit` only queues SQEs; the channel's poller enters the
//!   kernel once per loop (or not at all with SQ polling, unless the SQ thread sleeps).
//! - Flush is `fdatasync`; write-zeroes is `fallocate(ZERO_RANGE)` and unmap is
//!   `fallocate(PUNCH_HOLE)`, each falling back to writing zeroes where the file system
//!   refuses, so both always read back as zeroes.
//! - A short read or write is continued where it stopped; kernel errors map to
//!   [`IoStatus`] ([`IoStatus::from_errno`]).
//! - The ring's eventfd is registered with the reactor, so an idle reactor sleeps while
//!   I/O is in flight and wakes on its completion.

mod sys;

use super::{
    BackendChannel, Bdev, BdevBackend, BdevIo, BdevParams, IoKind, IoStatus, SGL_SEGMENTS_MAX,
};
use crate::Error;
use crate::dma::{
    Domain, HostMem, Initiator, MAX_REGIONS, Mapper, MapperGuard, MemMap, RegionInfo, Segment,
    UringAddr,
};
use crate::reactor::sys::EventFd;
use crate::thread::{FdWatch, PollStatus, Thread};
use io_uring::{IoUring, opcode, squeue, types};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Default SQ entries per ring (and I/Os in flight per channel).
pub const RING_DEPTH_DEFAULT: u32 = 512;

/// Bytes written per step when zeroes must be written by hand.
const ZERO_CHUNK: usize = 1 << 20;

/// Parameters of `bdev_uring_create`.
#[derive(Clone, Debug)]
pub struct UringOpts {
    /// Unique name.
    pub name: String,
    /// The file or block device.
    pub filename: PathBuf,
    /// Bytes per block; default: the logical block size of a block device, 4096 for a
    /// file.
    pub block_size: Option<u32>,
    /// SQ entries per ring; also the I/Os in flight per channel (default 512).
    pub ring_depth: u32,
    /// Kernel-side SQ polling, with the SQ thread's idle time before it sleeps.
    pub sqpoll_idle: Option<Duration>,
    /// Open with O_DIRECT (default true; falls back with a warning where refused).
    pub direct: bool,
    /// Hand every I/O straight to the kernel's io-wq workers (`IOSQE_ASYNC`) instead of
    /// first trying it inline. `None` (the default) decides by file system: on for tmpfs,
    /// whose reads and writes cannot be issued without blocking and so always end in
    /// io-wq (forcing it skips the failed inline attempt and lets several workers run
    /// at once), off elsewhere (a block device completes inline submissions
    /// asynchronously, which is cheaper).
    pub force_async: Option<bool>,
    /// UUID; random when `None`.
    pub uuid: Option<uuid::Uuid>,
}

impl UringOpts {
    /// A bdev over `filename` with the defaults.
    pub fn new(name: &str, filename: impl Into<PathBuf>) -> Self {
        UringOpts {
            name: name.to_owned(),
            filename: filename.into(),
            block_size: None,
            ring_depth: RING_DEPTH_DEFAULT,
            sqpoll_idle: None,
            direct: true,
            force_async: None,
            uuid: None,
        }
    }
}

struct UringBackend {
    file: File,
    force_async: bool,
    block_size: u64,
    ring_depth: u32,
    sqpoll_idle_ms: Option<u32>,
    zeroes: Arc<HostMem>,
}

/// Creates an io_uring bdev over a file or block device.
pub fn create(opts: UringOpts) -> Result<Arc<Bdev>, Error> {
    let path = opts.filename.display().to_string();
    match std::fs::metadata(&opts.filename) {
        Ok(m) if m.is_file() || m.file_type().is_block_device() => {}
        Ok(_) => {
            return Err(Error::InvalidParam {
                what: "filename".into(),
                why: format!("{path} is neither a regular file nor a block device"),
            });
        }
        Err(source) => {
            return Err(Error::Io {
                what: format!("open {path}"),
                source,
            });
        }
    }
    let open = |direct: bool| {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if direct {
            o.custom_flags(libc::O_DIRECT);
        }
        o.open(&opts.filename)
    };
    let (file, direct) = match open(opts.direct) {
        Ok(f) => (f, opts.direct),
        Err(e) if opts.direct && e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(file = %path, "O_DIRECT refused by the file system; using buffered I/O");
            let f = open(false).map_err(|source| Error::Io {
                what: format!("open {path}"),
                source,
            })?;
            (f, false)
        }
        Err(source) => {
            return Err(Error::Io {
                what: format!("open {path}"),
                source,
            });
        }
    };
    let meta = file.metadata().map_err(|source| Error::Io {
        what: format!("stat {path}"),
        source,
    })?;
    let fd = file.as_raw_fd();
    let (size, detected_bs) = if meta.file_type().is_block_device() {
        let io_err = |source| Error::Io {
            what: format!("read the geometry of {path}"),
            source,
        };
        (
            sys::blkdev_size(fd).map_err(io_err)?,
            sys::blkdev_logical_block_size(fd).map_err(io_err)?,
        )
    } else if meta.file_type().is_file() {
        (meta.len(), 4096)
    } else {
        return Err(Error::InvalidParam {
            what: "filename".into(),
            why: format!("{path} is neither a regular file nor a block device"),
        });
    };
    let block_size = opts.block_size.unwrap_or(detected_bs);
    if direct && block_size < detected_bs {
        return Err(Error::InvalidParam {
            what: "block_size".into(),
            why: format!(
                "{block_size} is below the device's logical block size {detected_bs}, which O_DIRECT needs"
            ),
        });
    }
    let num_blocks = size / block_size.max(1) as u64;
    if num_blocks == 0 {
        return Err(Error::InvalidParam {
            what: "filename".into(),
            why: format!("{path} holds {size} bytes, less than one block of {block_size}"),
        });
    }
    // As SPDK: a size that is not whole blocks is refused, not cut short.
    if size % block_size.max(1) as u64 != 0 {
        return Err(Error::InvalidParam {
            what: "block_size".into(),
            why: format!(
                "{path} holds {size} bytes, not a multiple of the block size {block_size}"
            ),
        });
    }
    if !(2..=32768).contains(&opts.ring_depth) {
        return Err(Error::InvalidParam {
            what: "ring_depth".into(),
            why: format!("{} is outside 2..=32768", opts.ring_depth),
        });
    }
    let force_async = opts
        .force_async
        .unwrap_or_else(|| sys::is_tmpfs(fd).unwrap_or(false));
    tracing::info!(name = %opts.name, file = %path, block_size, num_blocks, direct, force_async, "uring bdev created");
    Bdev::new(
        BdevParams {
            name: opts.name,
            uuid: opts.uuid,
            block_size,
            num_blocks,
            product_name: "URING bdev",
        },
        Box::new(UringBackend {
            file,
            force_async,
            block_size: block_size as u64,
            ring_depth: opts.ring_depth,
            sqpoll_idle_ms: opts
                .sqpoll_idle
                .map(|d| d.as_millis().clamp(1, u32::MAX as u128) as u32),
            zeroes: Arc::new(HostMem::alloc_pageable(ZERO_CHUNK)?),
        }),
    )
}

/// One ring's registered-buffer table, as a mapper in the registration map and as the
/// initiator that resolves buffers to [`UringAddr`]s.
struct RingMapper {
    ring_fd: RawFd,
    registered: Box<[AtomicBool]>,
    warned: AtomicBool,
}

impl Mapper for RingMapper {
    fn name(&self) -> String {
        format!("io_uring ring fd {}", self.ring_fd)
    }

    fn map(&self, r: &RegionInfo) -> Result<(), Error> {
        if r.domain != Domain::Host {
            return Ok(());
        }
        let iov = libc::iovec {
            iov_base: r.vaddr as *mut libc::c_void,
            iov_len: r.len,
        };
        match sys::update_registered_buffer(self.ring_fd, r.id.index() as u32, &iov) {
            Ok(()) => self.registered[r.id.index()].store(true, Ordering::Release),
            // Registered buffers are an optimisation: without them I/O still works.
            Err(e) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "io_uring cannot register DMA memory ({e}); using unregistered reads \
                         and writes (raise `ulimit -l` or run as root)"
                    );
                }
            }
        }
        Ok(())
    }

    fn unmap(&self, r: &RegionInfo) {
        if self.registered[r.id.index()].swap(false, Ordering::AcqRel) {
            let empty = libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            };
            let _ = sys::update_registered_buffer(self.ring_fd, r.id.index() as u32, &empty);
        }
    }
}

impl Initiator for RingMapper {
    type Addr = UringAddr;
    fn resolve(&self, seg: &Segment) -> Option<UringAddr> {
        self.registered[seg.region.index()]
            .load(Ordering::Acquire)
            .then(|| UringAddr::new(seg.region.index() as u16, seg.vaddr))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Read or write of the buffers; `done` bytes so far.
    Data,
    /// fsync or fallocate: one SQE.
    Single,
    /// Writing zeroes by hand from `file_off` for `remaining` bytes.
    ZeroFill,
}

struct Slot {
    io: Option<Box<BdevIo>>,
    iov: [libc::iovec; SGL_SEGMENTS_MAX],
    niov: usize,
    first_iov: usize,
    file_off: u64,
    remaining: u64,
    phase: Phase,
}

struct ChanState {
    slots: Vec<Slot>,
    free: Vec<u32>,
    inflight: u32,
    unsubmitted: u32,
}

struct UringChannel {
    // Field order is drop order: leave the registration map before the ring closes.
    _map_guard: Option<MapperGuard>,
    _watch: Option<FdWatch>,
    mapper: Arc<RingMapper>,
    st: RefCell<ChanState>,
    ring: RefCell<IoUring>,
    _efd: EventFd,
    block_size: u64,
    force_async: bool,
    zeroes: Arc<HostMem>,
    thread: Thread,
    watch_missing: bool,
}

impl BdevBackend for UringBackend {
    fn open_channel(&self, thread: &Thread) -> Result<Box<dyn BackendChannel>, Error> {
        let build = |coop: bool| {
            let mut b = IoUring::builder();
            if let Some(ms) = self.sqpoll_idle_ms {
                b.setup_sqpoll(ms);
            }
            if coop {
                // Completions from io-wq workers arrive as task work. Without these flags
                // the kernel interrupts the polling reactor to run it; with them the
                // reactor runs it when the SQ flags say there is some (Linux 5.19+).
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            b.build(self.ring_depth)
        };
        let ring = build(true)
            .or_else(|_| build(false))
            .map_err(|source| Error::Io {
                what: format!("set up an io_uring ring of {} entries", self.ring_depth),
                source,
            })?;
        let io_err = |what: &str| {
            let what = what.to_owned();
            move |source| Error::Io { what, source }
        };
        ring.submitter()
            .register_files(&[self.file.as_raw_fd()])
            .map_err(io_err("register the file with io_uring"))?;
        let efd = EventFd::new().map_err(io_err("create an eventfd"))?;
        ring.submitter()
            .register_eventfd(efd.raw())
            .map_err(io_err("register an eventfd with io_uring"))?;
        let watch = match thread.register_fd(efd.raw()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch the io_uring eventfd ({e}); the reactor stays awake while I/O is in flight"
                );
                None
            }
        };
        let watch_missing = watch.is_none();
        let mapper = Arc::new(RingMapper {
            ring_fd: ring.as_raw_fd(),
            registered: (0..MAX_REGIONS).map(|_| AtomicBool::new(false)).collect(),
            warned: AtomicBool::new(false),
        });
        let map_guard = match ring.submitter().register_buffers_sparse(MAX_REGIONS as u32) {
            Ok(()) => Some(MemMap::global().add_mapper(mapper.clone())?),
            Err(e) => {
                tracing::warn!(
                    "io_uring has no sparse buffer tables here ({e}); using unregistered buffers"
                );
                None
            }
        };
        let depth = self.ring_depth as usize;
        let slots = (0..depth)
            .map(|_| Slot {
                io: None,
                iov: [libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; SGL_SEGMENTS_MAX],
                niov: 0,
                first_iov: 0,
                file_off: 0,
                remaining: 0,
                phase: Phase::Idle,
            })
            .collect();
        Ok(Box::new(UringChannel {
            _map_guard: map_guard,
            _watch: watch,
            mapper,
            st: RefCell::new(ChanState {
                slots,
                free: (0..depth as u32).rev().collect(),
                inflight: 0,
                unsubmitted: 0,
            }),
            ring: RefCell::new(ring),
            _efd: efd,
            block_size: self.block_size,
            force_async: self.force_async,
            zeroes: self.zeroes.clone(),
            thread: thread.clone(),
            watch_missing,
        }))
    }
}

const FIXED_FILE: types::Fixed = types::Fixed(0);

impl UringChannel {
    /// Queues one SQE, entering the kernel first if the SQ is full.
    fn push(&self, st: &mut ChanState, sqe: squeue::Entry) {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: every pointer in the SQE (buffers, the slot's iovec array) stays
            // valid until its CQE is reaped: the buffers are owned by the I/O parked in
            // the slot, and the slot vector is never resized.
            if unsafe { ring.submission().push(&sqe) }.is_ok() {
                st.unsubmitted += 1;
                return;
            }
            match ring.submit() {
                Ok(n) => st.unsubmitted = st.unsubmitted.saturating_sub(n as u32),
                Err(e) => tracing::error!("io_uring submit failed: {e}"),
            }
        }
    }

    /// The SQE that moves the slot's I/O forward from its current state.
    fn next_sqe(&self, slot_idx: u32, s: &mut Slot) -> squeue::Entry {
        let io = s.io.as_ref().expect("slot holds its I/O");
        let sqe = match s.phase {
            Phase::Data => {
                let iov = &s.iov[s.first_iov..s.niov];
                let fixed = if iov.len() == 1 && s.first_iov == 0 {
                    // After a short transfer the iovec starts further into the buffer:
                    // the registered address moves with it.
                    let buf = &io.bufs()[0];
                    let moved = iov[0].iov_base as usize - buf.cpu_addr().as_ptr() as usize;
                    buf.resolve(&*self.mapper).map(|a| a.advanced(moved))
                } else {
                    None
                };
                match (io.kind(), fixed) {
                    (IoKind::Read, Some(a)) => opcode::ReadFixed::new(
                        FIXED_FILE,
                        a.addr() as *mut u8,
                        iov[0].iov_len as u32,
                        a.buf_index(),
                    )
                    .offset(s.file_off)
                    .build(),
                    (IoKind::Write, Some(a)) => opcode::WriteFixed::new(
                        FIXED_FILE,
                        a.addr() as *const u8,
                        iov[0].iov_len as u32,
                        a.buf_index(),
                    )
                    .offset(s.file_off)
                    .build(),
                    (IoKind::Read, None) => {
                        opcode::Readv::new(FIXED_FILE, iov.as_ptr(), iov.len() as u32)
                            .offset(s.file_off)
                            .build()
                    }
                    _ => opcode::Writev::new(FIXED_FILE, iov.as_ptr(), iov.len() as u32)
                        .offset(s.file_off)
                        .build(),
                }
            }
            Phase::Single => match io.kind() {
                IoKind::Flush => opcode::Fsync::new(FIXED_FILE)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
                IoKind::WriteZeroes => opcode::Fallocate::new(FIXED_FILE, s.remaining)
                    .offset(s.file_off)
                    .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
                    .build(),
                _ => opcode::Fallocate::new(FIXED_FILE, s.remaining)
                    .offset(s.file_off)
                    .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                    .build(),
            },
            Phase::ZeroFill => {
                let n = s.remaining.min(ZERO_CHUNK as u64) as u32;
                opcode::Write::new(FIXED_FILE, self.zeroes.as_ptr(), n)
                    .offset(s.file_off)
                    .build()
            }
            Phase::Idle => unreachable!("an idle slot has no SQE"),
        };
        let sqe = sqe.user_data(slot_idx as u64);
        if self.force_async {
            sqe.flags(squeue::Flags::ASYNC)
        } else {
            sqe
        }
    }

    /// Applies one CQE to its slot; returns the I/O when it is finished.
    fn on_cqe(
        &self,
        st: &mut ChanState,
        slot_idx: u32,
        res: i32,
    ) -> Option<(Box<BdevIo>, IoStatus)> {
        let s = &mut st.slots[slot_idx as usize];
        let kind = s.io.as_ref().expect("CQE for a busy slot").kind();
        let status = if res < 0 {
            let errno = -res;
            let refused = matches!(errno, libc::EOPNOTSUPP | libc::EINVAL | libc::ENOTTY);
            if s.phase == Phase::Single && kind != IoKind::Flush && refused {
                // The file system cannot zero or punch: write the zeroes ourselves.
                s.phase = Phase::ZeroFill;
                let sqe = self.next_sqe(slot_idx, s);
                self.push(st, sqe);
                return None;
            }
            Some(IoStatus::from_errno(kind, errno))
        } else {
            let n = res as u64;
            match s.phase {
                Phase::Data if n == 0 => Some(IoStatus::from_errno(kind, libc::EIO)),
                Phase::Data if n < s.remaining => {
                    // Short transfer: continue after the bytes already moved.
                    s.remaining -= n;
                    s.file_off += n;
                    let mut left = n as usize;
                    while left > 0 {
                        let v = &mut s.iov[s.first_iov];
                        if left >= v.iov_len {
                            left -= v.iov_len;
                            s.first_iov += 1;
                        } else {
                            // SAFETY: advancing inside the same buffer, by less than its length.
                            v.iov_base = unsafe { v.iov_base.cast::<u8>().add(left) }.cast();
                            v.iov_len -= left;
                            left = 0;
                        }
                    }
                    let sqe = self.next_sqe(slot_idx, s);
                    self.push(st, sqe);
                    None
                }
                Phase::ZeroFill if n == 0 => Some(IoStatus::from_errno(kind, libc::EIO)),
                Phase::ZeroFill if n < s.remaining => {
                    s.remaining -= n;
                    s.file_off += n;
                    let sqe = self.next_sqe(slot_idx, s);
                    self.push(st, sqe);
                    None
                }
                _ => Some(IoStatus::Success),
            }
        };
        let status = status?;
        let s = &mut st.slots[slot_idx as usize];
        s.phase = Phase::Idle;
        let io = s.io.take().expect("finished slot holds its I/O");
        st.free.push(slot_idx);
        st.inflight -= 1;
        Some((io, status))
    }
}

impl BackendChannel for UringChannel {
    fn submit(&self, io: Box<BdevIo>) -> Result<(), Box<BdevIo>> {
        let mut st = self.st.borrow_mut();
        let Some(slot_idx) = st.free.pop() else {
            return Err(io);
        };
        let bs = self.block_size;
        let s = &mut st.slots[slot_idx as usize];
        s.first_iov = 0;
        match io.kind() {
            IoKind::Read | IoKind::Write => {
                for (i, b) in io.bufs().iter().enumerate() {
                    s.iov[i] = libc::iovec {
                        iov_base: b.cpu_addr().as_ptr().cast(),
                        iov_len: b.len(),
                    };
                }
                s.niov = io.bufs().len();
                s.remaining = io.data_len() as u64;
                s.file_off = io.offset_blocks() * bs;
                s.phase = Phase::Data;
            }
            IoKind::Flush => {
                s.phase = Phase::Single;
                s.remaining = 0;
                s.file_off = 0;
            }
            IoKind::WriteZeroes | IoKind::Unmap => {
                s.file_off = io.offset_blocks() * bs;
                s.remaining = io.num_blocks() * bs;
                s.phase = Phase::Single;
            }
        }
        s.io = Some(io);
        let sqe = self.next_sqe(slot_idx, s);
        st.inflight += 1;
        self.push(&mut st, sqe);
        Ok(())
    }

    fn poll(&self) -> PollStatus {
        let mut busy = self.flush();
        if self.st.borrow().inflight == 0 {
            return PollStatus::from_busy(busy);
        }
        if self.watch_missing {
            // Nothing wakes a sleeping reactor for this ring: keep it awake while I/O runs.
            let t = &self.thread;
            t.wake_at(t.now());
        }
        // One pass over what has completed, at most a ring's worth: I/Os that callbacks
        // resubmit are reaped on the next loop, so other work on this thread gets its turn.
        let limit = self.st.borrow().slots.len();
        let mut reaped = 0;
        let mut entered = false;
        while reaped < limit {
            let mut batch = [(0u32, 0i32); 32];
            let n = {
                let mut ring = self.ring.borrow_mut();
                let mut n = 0;
                for cqe in ring.completion().take(batch.len().min(limit - reaped)) {
                    batch[n] = (cqe.user_data() as u32, cqe.result());
                    n += 1;
                }
                n
            };
            if n == 0 {
                let mut ring = self.ring.borrow_mut();
                if entered || !ring.submission().taskrun() {
                    break;
                }
                // Completions wait as task work: enter the kernel once to have them posted.
                entered = true;
                if let Err(e) = ring.submit() {
                    tracing::error!("io_uring enter failed: {e}");
                    break;
                }
                continue;
            }
            reaped += n;
            for &(slot, res) in &batch[..n] {
                let done = self.on_cqe(&mut self.st.borrow_mut(), slot, res);
                if let Some((io, status)) = done {
                    io.complete(status);
                }
            }
        }
        busy |= reaped > 0;
        busy |= self.flush();
        PollStatus::from_busy(busy)
    }
}

impl UringChannel {
    /// Enters the kernel once for the SQEs queued since the last time; whatever the
    /// kernel did not take stays queued for the next poll.
    fn flush(&self) -> bool {
        let mut st = self.st.borrow_mut();
        if st.unsubmitted == 0 {
            return false;
        }
        match self.ring.borrow_mut().submit() {
            Ok(n) => st.unsubmitted = st.unsubmitted.saturating_sub(n as u32),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => {}
            Err(e) => tracing::error!("io_uring submit failed: {e}"),
        }
        true
    }
}

impl Drop for UringChannel {
    // Every I/O in flight holds its bdev channel, so in normal operation this runs with
    // nothing in flight. A thread released by force at shutdown with I/O in flight leaks
    // its ring and those I/Os instead (the kernel may still write their buffers); the
    // wait below covers any other path.
    fn drop(&mut self) {
        let inflight = self.st.borrow().inflight;
        if inflight > 0 {
            tracing::warn!(
                "a uring bdev channel closed with {inflight} I/Os in flight; waiting for them"
            );
            let mut ring = self.ring.borrow_mut();
            let mut left = inflight;
            while left > 0 {
                let _ = ring.submit_and_wait(1);
                let reaped: Vec<u32> = ring.completion().map(|c| c.user_data() as u32).collect();
                for slot in reaped {
                    let s = &mut self.st.borrow_mut().slots[slot as usize];
                    if s.phase != Phase::Idle {
                        s.phase = Phase::Idle;
                        s.io = None;
                        left -= 1;
                    }
                }
            }
        }
    }
}
