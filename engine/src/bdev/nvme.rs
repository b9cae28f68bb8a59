//! The nvme bdev module: namespaces of PCIe NVMe controllers driven by Pollux's
//! userspace driver (`pollux_nvme`), as bdevs `<name>n<nsid>` (SPDK's `bdev_nvme`).
//!
//! Attaching a controller opens it through VFIO, adds its container to the DMA
//! registration map as a [`Mapper`] (every registered region gets an IOVA, and a slot in
//! a [`RegionTable`]), brings the controller up, and creates one bdev per active
//! namespace. Each thread that does I/O gets one queue pair per controller, shared by
//! the controller's namespaces on that thread. A request's buffers are resolved to the
//! controller's addresses ([`NvmeAddr`]) when it is submitted, by a table look-up; I/Os
//! larger than the controller's transfer limit are split. An OS thread (not a reactor)
//! processes admin completions: Asynchronous Events, timeouts, resets.

use super::deferred::DeferredQueue;
use super::{BackendChannel, Bdev, BdevBackend, BdevIo, BdevParams, IoKind, IoStatus};
use crate::Error;
use crate::dma::{
    DmaRegion, Domain, Initiator, Iobuf, IobufOpts, MAX_REGIONS, Mapper, MapperGuard, MemMap,
    RegionInfo, Segment,
};
use crate::thread::{IoChannel, IoDevice, PollStatus, Thread};
use arrayvec::ArrayVec;
use pollux_nvme::ctrlr::{Ctrlr, CtrlrOpts, Event};
use pollux_nvme::pci::{Device, DmaMem, NvmeAddr, RegionTable, VfioDevice};
use pollux_nvme::qpair::{DataSeg, Qpair, QpairStats, SubmitError};
use pollux_nvme::spec::admin::nvm_opc;
use pollux_nvme::spec::cmd::{Sqe, Status};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use zerocopy::little_endian::U32;

/// A controller's view of host memory: the VFIO container as a mapper of the DMA
/// registration map, and the per-region table that resolves buffers.
struct VfioMapper {
    dev: Arc<dyn Device>,
    table: Arc<RegionTable>,
    /// This controller's device-memory token, and its CMB windows mapped for the CPU:
    /// (CPU address, length, controller address).
    owner: u64,
    cmb_windows: Mutex<Vec<(usize, usize, NvmeAddr)>>,
}

impl Mapper for VfioMapper {
    fn name(&self) -> String {
        format!("vfio {}", self.dev.name())
    }

    fn map(&self, r: &RegionInfo) -> Result<(), Error> {
        match r.domain {
            Domain::Host => {
                let addr = self
                    .dev
                    .map_dma(r.vaddr, r.len)
                    .map_err(|e| Error::Mapper {
                        mapper: self.name(),
                        why: e.to_string(),
                    })?;
                self.table.set(r.id.index(), r.vaddr, r.len, addr);
            }
            Domain::Device { owner } if owner == self.owner => {
                // Our own CMB: the controller reaches it at its controller address.
                let w = self.cmb_windows.lock().unwrap();
                if let Some(&(base, _, addr)) = w
                    .iter()
                    .find(|&&(b, l, _)| r.vaddr >= b && r.vaddr + r.len <= b + l)
                {
                    let at = addr.offset((r.vaddr - base) as u64);
                    self.table.set(r.id.index(), r.vaddr, r.len, at);
                }
            }
            // Another device's memory: no peer-to-peer mapping here; such buffers do
            // not resolve for this controller.
            _ => {}
        }
        Ok(())
    }

    fn unmap(&self, r: &RegionInfo) {
        if let Some((addr, len)) = self.table.clear(r.id.index()) {
            if r.domain == Domain::Host {
                self.dev.unmap_dma(addr, len);
            }
        }
    }
}

/// The NVMe controller as a DMA initiator: a buffer resolves to its IOVA in the
/// controller's VFIO container.
#[derive(Clone, Debug)]
pub struct NvmeInitiator(Arc<RegionTable>);

impl Initiator for NvmeInitiator {
    type Addr = NvmeAddr;
    fn resolve(&self, seg: &Segment) -> Option<NvmeAddr> {
        self.0
            .resolve(seg.region.index(), seg.vaddr, seg.len as usize)
    }
}

/// Parameters of `bdev_nvme_attach_controller`.
#[derive(Clone, Debug)]
pub struct NvmeAttachOpts {
    /// The controller's name; its bdevs are `<name>n<nsid>`.
    pub name: String,
    /// Its PCI address.
    pub traddr: String,
    /// Driver options.
    pub ctrlr: CtrlrOpts,
    /// Keep a pool of data buffers in the controller's CMB (transports that can fill
    /// it use it for this controller's namespaces). An error when the controller has
    /// no CMB for data.
    pub cmb_data: bool,
}

/// Counters of one controller, over all threads. Each thread counts for itself and
/// adds its counts here from its poller, so the I/O path touches no shared atomics.
#[derive(Debug, Default)]
pub struct NvmeCtrlrCounters {
    /// Commands submitted (resubmissions after a reset included).
    pub submitted: AtomicU64,
    /// Commands completed.
    pub completed: AtomicU64,
    /// Bdev I/Os split into several commands.
    pub split: AtomicU64,
    /// Commands whose data went through a PRP list.
    pub prp_lists: AtomicU64,
    /// Commands whose data went through SGLs.
    pub sgls: AtomicU64,
    /// Commands resubmitted after a reset.
    pub retried: AtomicU64,
    /// Data bytes of I/Os whose buffers lay in the controller's CMB (the SSD moved
    /// them within itself).
    pub cmb_data_bytes: AtomicU64,
    /// Data bytes of I/Os whose buffers lay in host memory (moved by DMA over PCIe).
    pub host_data_bytes: AtomicU64,
    /// Queue pairs whose submission queue lies in the CMB.
    pub sqs_in_cmb: AtomicU64,
    /// Queue pairs whose PRP/SGL lists lie in the CMB.
    pub lists_in_cmb: AtomicU64,
}

/// An attached controller.
pub struct NvmeController {
    name: String,
    traddr: String,
    ctrlr: Arc<Ctrlr>,
    table: Arc<RegionTable>,
    counters: NvmeCtrlrCounters,
    stop: Arc<AtomicBool>,
    admin_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    bdevs: Mutex<Vec<String>>,
    cmb_iobuf: Option<Arc<Iobuf>>,
    /// Its token as the owner of device memory in the DMA map.
    owner: u64,
    _mapper: MapperGuard,
}

impl Drop for NvmeController {
    fn drop(&mut self) {
        crate::dma::unregister_device_memory(self.owner);
    }
}

/// The CMB's data buffer pool as device memory other devices may reach: exported as a
/// dma-buf through VFIO.
struct CmbExport {
    cmb: Arc<pollux_nvme::cmb::Cmb>,
    pci: String,
    /// The pool's regions: (CPU address, length, offset in the CMB).
    windows: Mutex<Vec<(usize, usize, u64)>>,
}

impl crate::dma::DeviceMemory for CmbExport {
    fn pci_address(&self) -> String {
        self.pci.clone()
    }

    fn export(&self, vaddr: usize, len: usize) -> Result<(std::os::fd::OwnedFd, u64), String> {
        let off = self
            .windows
            .lock()
            .unwrap()
            .iter()
            .find(|&&(p, l, _)| vaddr >= p && vaddr + len <= p + l)
            .map(|&(p, _, o)| o + (vaddr - p) as u64)
            .ok_or_else(|| format!("{:#x}+{len} is not in {}'s CMB pool", vaddr, self.pci))?;
        let fd = self
            .cmb
            .export_dma_buf()
            .map_err(|e| format!("{}'s CMB: {e}", self.pci))?;
        Ok((fd, off))
    }
}

impl fmt::Debug for NvmeController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmeController")
            .field("name", &self.name)
            .field("traddr", &self.traddr)
            .finish()
    }
}

fn controllers() -> &'static Mutex<BTreeMap<String, Arc<NvmeController>>> {
    static C: std::sync::OnceLock<Mutex<BTreeMap<String, Arc<NvmeController>>>> =
        std::sync::OnceLock::new();
    C.get_or_init(Default::default)
}

impl NvmeController {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its PCI address.
    pub fn traddr(&self) -> &str {
        &self.traddr
    }

    /// The driver's controller.
    pub fn ctrlr(&self) -> &Arc<Ctrlr> {
        &self.ctrlr
    }

    /// Its bdevs' names.
    pub fn bdev_names(&self) -> Vec<String> {
        self.bdevs.lock().unwrap().clone()
    }

    /// Resolves buffers for this controller.
    pub fn initiator(&self) -> NvmeInitiator {
        NvmeInitiator(self.table.clone())
    }

    /// The data buffer pool in its CMB, when attached with `cmb_data`.
    pub fn cmb_iobuf(&self) -> Option<&Arc<Iobuf>> {
        self.cmb_iobuf.as_ref()
    }

    /// Counters over all threads.
    pub fn counters(&self) -> &NvmeCtrlrCounters {
        &self.counters
    }

    /// The attached controller called `name`.
    pub fn get(name: &str) -> Option<Arc<NvmeController>> {
        controllers().lock().unwrap().get(name).cloned()
    }

    /// Every attached controller.
    pub fn list() -> Vec<Arc<NvmeController>> {
        controllers().lock().unwrap().values().cloned().collect()
    }
}

/// Attaches the controller at `opts.traddr` and creates a bdev per active namespace.
/// The caller registers the bdevs.
pub fn attach(opts: NvmeAttachOpts) -> Result<(Arc<NvmeController>, Vec<Arc<Bdev>>), Error> {
    if controllers().lock().unwrap().contains_key(&opts.name) {
        return Err(Error::Exists {
            what: format!("NVMe controller {}", opts.name),
        });
    }
    if let Some(c) = NvmeController::list()
        .iter()
        .find(|c| c.traddr == opts.traddr)
    {
        return Err(Error::Exists {
            what: format!("a controller at {} ({})", opts.traddr, c.name),
        });
    }
    let dev: Arc<dyn Device> =
        Arc::new(VfioDevice::open(&opts.traddr).map_err(|e| Error::Nvme(e.to_string()))?);
    attach_device(opts, dev)
}

/// [`attach`] with the device already open (the unit tests' twin, for one).
pub fn attach_device(
    opts: NvmeAttachOpts,
    dev: Arc<dyn Device>,
) -> Result<(Arc<NvmeController>, Vec<Arc<Bdev>>), Error> {
    let nvme = |e: pollux_nvme::pci::Error| Error::Nvme(e.to_string());
    let table = Arc::new(RegionTable::new(MAX_REGIONS));
    static OWNERS: AtomicU64 = AtomicU64::new(1);
    let owner = OWNERS.fetch_add(1, Ordering::Relaxed);
    let mapper = Arc::new(VfioMapper {
        dev: dev.clone(),
        table: table.clone(),
        owner,
        cmb_windows: Mutex::new(Vec::new()),
    });
    let guard = MemMap::global().add_mapper(mapper.clone())?;
    let ctrlr = Ctrlr::attach(dev.clone(), opts.ctrlr.clone()).map_err(nvme)?;
    let cmb_iobuf = if opts.cmb_data {
        let cmb = ctrlr
            .cmb()
            .filter(|c| c.supports_data())
            .ok_or_else(|| Error::InvalidParam {
                what: "cmb_data".into(),
                why: format!(
                    "controller {} has no CMB for data (CMBSZ.RDS and WDS), or it is disabled",
                    dev.name()
                ),
            })?
            .clone();
        // Known as device memory before its regions are registered: RDMA mappers
        // decide, when told about each region, whether their NIC reaches it.
        let export = Arc::new(CmbExport {
            cmb: cmb.clone(),
            pci: dev.name().to_owned(),
            windows: Mutex::new(Vec::new()),
        });
        crate::dma::register_device_memory(owner, export.clone());
        let pool = Iobuf::new_in(&cmb_iobuf_opts(cmb.size()), &mut |len| {
            let b = cmb.alloc(len).ok_or_else(|| Error::InvalidParam {
                what: "cmb_data".into(),
                why: format!("the CMB has no {len} bytes left for data buffers"),
            })?;
            let (ptr, addr) = (b.as_ptr(), b.nvme_addr());
            mapper
                .cmb_windows
                .lock()
                .unwrap()
                .push((ptr as usize, b.len(), addr));
            export
                .windows
                .lock()
                .unwrap()
                .push((ptr as usize, b.len(), b.offset()));
            // SAFETY: the CMB buffer keeps its part of the BAR mapping alive.
            unsafe { DmaRegion::external(ptr, len, Domain::Device { owner }, Box::new(b)) }
        })?;
        tracing::info!(ctrlr = %opts.name, bytes = cmb.used(), "data buffer pool in the CMB");
        Some(pool)
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let c = Arc::new(NvmeController {
        name: opts.name.clone(),
        traddr: dev.name().to_owned(),
        ctrlr: ctrlr.clone(),
        table,
        counters: NvmeCtrlrCounters::default(),
        stop: stop.clone(),
        admin_thread: Mutex::new(None),
        bdevs: Mutex::new(Vec::new()),
        cmb_iobuf,
        owner,
        _mapper: guard,
    });
    let mut bdevs = Vec::new();
    for ns in ctrlr.namespaces() {
        let uuid = (ns.nguid != [0; 16]).then(|| uuid::Uuid::from_bytes(ns.nguid));
        let b = Bdev::new(
            BdevParams {
                name: format!("{}n{}", opts.name, ns.nsid),
                uuid,
                block_size: ns.block_size,
                num_blocks: ns.num_blocks,
                product_name: "NVMe disk",
            },
            Box::new(NvmeBackend {
                ctrl: c.clone(),
                nsid: ns.nsid,
                shift: ns.block_size.trailing_zeros(),
            }),
        )?;
        bdevs.push(b);
    }
    *c.bdevs.lock().unwrap() = bdevs.iter().map(|b| b.name().to_owned()).collect();
    // Admin completions (events, timeouts, resets) on a thread of their own: a reset
    // waits for every reactor's queue pair to quiesce, so it must not run on one.
    let weak = Arc::downgrade(&ctrlr);
    let name = opts.name.clone();
    let h = std::thread::Builder::new()
        .name(format!("nvme-admin-{name}"))
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Some(c) = weak.upgrade() else { break };
                for ev in c.process_admin() {
                    if let Event::NamespacesChanged(list) = &ev {
                        tracing::info!(ctrlr = %name, changed = ?list, "namespaces changed (new namespaces need a new attach)");
                    }
                }
                drop(c);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        })
        .map_err(|e| Error::Io {
            what: "spawn the NVMe admin thread".into(),
            source: e,
        })?;
    *c.admin_thread.lock().unwrap() = Some(h);
    controllers()
        .lock()
        .unwrap()
        .insert(opts.name.clone(), c.clone());
    Ok((c, bdevs))
}

/// Detaches controller `name`: its admin thread stops; the controller shuts down once
/// its bdevs (and their channels) are gone. Returns its bdev names for the caller to
/// unregister.
pub fn detach(name: &str) -> Result<Vec<String>, Error> {
    let c = controllers()
        .lock()
        .unwrap()
        .remove(name)
        .ok_or_else(|| Error::NotFound {
            what: format!("NVMe controller {name}"),
        })?;
    c.stop.store(true, Ordering::Relaxed);
    if let Some(h) = c.admin_thread.lock().unwrap().take() {
        let _ = h.join();
    }
    Ok(c.bdev_names())
}

struct NvmeBackend {
    ctrl: Arc<NvmeController>,
    nsid: u32,
    shift: u32,
}

impl BdevBackend for NvmeBackend {
    fn preferred_iobuf(&self) -> Option<Arc<Iobuf>> {
        self.ctrl.cmb_iobuf.clone()
    }

    fn device_memory_owner(&self) -> Option<u64> {
        self.ctrl.cmb_iobuf.as_ref().map(|_| self.ctrl.owner)
    }

    fn open_channel(&self, thread: &Thread) -> Result<Box<dyn BackendChannel>, Error> {
        let ch = thread.get_io_channel(&self.ctrl)?;
        Ok(Box::new(NvmeChannel {
            failed: DeferredQueue::new(thread, 1024, 0),
            ch,
            nsid: self.nsid,
            shift: self.shift,
        }))
    }
}

/// One bdev I/O in flight: its commands still outstanding and the worst status.
struct Pending {
    io: Option<Box<BdevIo>>,
    left: u32,
    status: IoStatus,
}

/// A thread's queue pair on one controller, shared by its namespaces' bdev channels.
pub struct CtrlrChannel {
    q: RefCell<Qpair>,
    pending: RefCell<Vec<Pending>>,
    free: RefCell<Vec<u32>>,
    dsm: DmaMem,
    initiator: NvmeInitiator,
    max_xfer: u64,
    ctrl: Arc<NvmeController>,
    /// This thread's counts, added to the controller's counters by `poll` (no shared
    /// atomics per I/O), and what was added last time.
    local: Cell<ChannelCounts>,
    folded: Cell<(QpairStats, ChannelCounts)>,
}

/// Counts one channel keeps for itself between folds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ChannelCounts {
    split: u64,
    cmb_bytes: u64,
    host_bytes: u64,
}

impl fmt::Debug for CtrlrChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CtrlrChannel")
            .field("ctrlr", &self.ctrl.name)
            .field("qpair", &*self.q.borrow())
            .finish()
    }
}

impl IoDevice for NvmeController {
    type Channel = CtrlrChannel;

    fn create_channel(self: &Arc<Self>, _thread: &Thread) -> Result<CtrlrChannel, Error> {
        let q = self
            .ctrlr
            .create_io_qpair()
            .map_err(|e| Error::Nvme(e.to_string()))?;
        let n = q.capacity();
        let dsm =
            DmaMem::new(self.ctrlr.device(), n * 16).map_err(|e| Error::Nvme(e.to_string()))?;
        tracing::info!(ctrlr = %self.name, qid = q.qid(), sq_in_cmb = q.sq_in_cmb(), lists_in_cmb = q.lists_in_cmb(), "queue pair for this thread");
        if q.sq_in_cmb() {
            self.counters.sqs_in_cmb.fetch_add(1, Ordering::Relaxed);
        }
        if q.lists_in_cmb() {
            self.counters.lists_in_cmb.fetch_add(1, Ordering::Relaxed);
        }
        Ok(CtrlrChannel {
            q: RefCell::new(q),
            pending: RefCell::new(
                (0..n)
                    .map(|_| Pending {
                        io: None,
                        left: 0,
                        status: IoStatus::Success,
                    })
                    .collect(),
            ),
            free: RefCell::new((0..n as u32).rev().collect()),
            dsm,
            initiator: self.initiator(),
            max_xfer: self.ctrlr.max_transfer() as u64,
            ctrl: self.clone(),
            local: Cell::new(ChannelCounts::default()),
            folded: Cell::new(Default::default()),
        })
    }
}

impl CtrlrChannel {
    /// Adds what this thread counted since the last fold to the controller's counters.
    fn fold(&self) {
        let (q, l) = (self.q.borrow().stats(), self.local.get());
        let (fq, fl) = self.folded.get();
        if (q, l) == (fq, fl) {
            return;
        }
        let k = &self.ctrl.counters;
        let add = |a: &AtomicU64, now: u64, then: u64| {
            if now != then {
                a.fetch_add(now - then, Ordering::Relaxed);
            }
        };
        add(&k.submitted, q.submitted, fq.submitted);
        add(&k.completed, q.completed, fq.completed);
        add(&k.prp_lists, q.prp_lists, fq.prp_lists);
        add(&k.sgls, q.sgls, fq.sgls);
        add(&k.retried, q.retried, fq.retried);
        add(&k.split, l.split, fl.split);
        add(&k.cmb_data_bytes, l.cmb_bytes, fl.cmb_bytes);
        add(&k.host_data_bytes, l.host_bytes, fl.host_bytes);
        self.folded.set((q, l));
    }
}

struct NvmeChannel {
    ch: IoChannel<NvmeController>,
    failed: DeferredQueue,
    nsid: u32,
    shift: u32,
}

fn io_status(s: Status) -> IoStatus {
    match (s.sct, s.sc) {
        (0, 0x00) => IoStatus::Success,
        (0, 0x01) => IoStatus::InvalidOpcode,
        (0, 0x02) => IoStatus::InvalidField,
        (0, 0x07) | (0, 0x08) => IoStatus::Aborted,
        (0, 0x80) => IoStatus::LbaOutOfRange,
        (0, 0x81) => IoStatus::CapacityExceeded,
        (2, 0x80) => IoStatus::WriteFault,
        (2, 0x81) => IoStatus::UnrecoveredReadError,
        _ => IoStatus::InternalError,
    }
}

/// The CMB data pool for a CMB of `size` bytes: small (8 KiB) buffers in an eighth of
/// it and large (128 KiB) ones in a quarter, at most 256 and 128 (18 MiB); the rest is
/// left to queues and lists. No thread caches: buffers this scarce must not sit idle on
/// one thread while another waits for them (`cmb_buffers=force` waits).
fn cmb_iobuf_opts(size: u64) -> IobufOpts {
    let size = size as usize;
    IobufOpts {
        small_pool_count: (size / 8 / (8 << 10)).clamp(1, 256),
        large_pool_count: (size / 4 / (128 << 10)).clamp(1, 128),
        small_bufsize: 8 << 10,
        large_bufsize: 128 << 10,
        small_cache_size: 0,
        large_cache_size: 0,
        hugepages: crate::dma::HugepagePolicy::Never,
    }
}

/// Commands of at most this many blocks (Write Zeroes' NLB field is 16 bits).
const NLB_MAX: u64 = 1 << 16;

fn sqe(opc: u8, nsid: u32, slba: u64, nlb: u64) -> Sqe {
    Sqe::nvm_rw(opc, nsid, slba, nlb as u32)
}

impl NvmeChannel {
    /// The commands `io` needs, with their data: each (sqe, segments).
    fn plan(
        &self,
        c: &CtrlrChannel,
        io: &BdevIo,
        slot: u32,
        out: &mut ArrayVec<(Sqe, ArrayVec<DataSeg, 20>), 64>,
    ) -> Result<(), IoStatus> {
        let slba = io.offset_blocks();
        let nlb = io.num_blocks();
        match io.kind() {
            IoKind::Flush => out.push((
                Sqe {
                    opc: nvm_opc::FLUSH,
                    nsid: U32::new(self.nsid),
                    ..Default::default()
                },
                ArrayVec::new(),
            )),
            IoKind::WriteZeroes => {
                let mut at = 0;
                while at < nlb {
                    let n = (nlb - at).min(NLB_MAX);
                    out.try_push((
                        sqe(nvm_opc::WRITE_ZEROES, self.nsid, slba + at, n),
                        ArrayVec::new(),
                    ))
                    .map_err(|_| IoStatus::InvalidField)?;
                    at += n;
                }
            }
            IoKind::Unmap => {
                // One Dataset Management range (NLB is 32 bits) in this slot's 16 bytes.
                if nlb > u32::MAX as u64 {
                    return Err(IoStatus::InvalidField);
                }
                let off = slot as usize * 16;
                let mut r = [0u8; 16];
                r[4..8].copy_from_slice(&(nlb as u32).to_le_bytes());
                r[8..16].copy_from_slice(&slba.to_le_bytes());
                // SAFETY: this slot's 16 bytes; no command uses them (the slot is free).
                unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), c.dsm.ptr(off), 16) };
                let mut segs = ArrayVec::new();
                segs.push(DataSeg {
                    addr: c.dsm.addr(off),
                    len: 16,
                });
                out.push((
                    Sqe {
                        opc: nvm_opc::DATASET_MANAGEMENT,
                        nsid: U32::new(self.nsid),
                        cdw11: U32::new(1 << 2),
                        ..Default::default()
                    },
                    segs,
                ));
            }
            IoKind::Read | IoKind::Write => {
                let opc = if io.kind() == IoKind::Read {
                    nvm_opc::READ
                } else {
                    nvm_opc::WRITE
                };
                // The data, resolved for this controller, cut into commands of at most
                // the transfer limit (and 65536 blocks).
                let chunk = c.max_xfer.min(NLB_MAX << self.shift);
                let mut cur: ArrayVec<DataSeg, 20> = ArrayVec::new();
                let mut cur_len = 0u64;
                let mut lba = slba;
                for b in io.bufs() {
                    let Some(base) = b.resolve(&c.initiator) else {
                        tracing::error!(ctrlr = %c.ctrl.name, "a buffer outside the registered DMA regions");
                        return Err(IoStatus::InternalError);
                    };
                    let mut off = 0u64;
                    let len = b.len() as u64;
                    while off < len {
                        let n = (len - off).min(chunk - cur_len);
                        cur.try_push(DataSeg {
                            addr: base.offset(off),
                            len: n as u32,
                        })
                        .map_err(|_| IoStatus::InvalidField)?;
                        cur_len += n;
                        off += n;
                        if cur_len == chunk {
                            let blocks = cur_len >> self.shift;
                            out.try_push((
                                sqe(opc, self.nsid, lba, blocks),
                                std::mem::take(&mut cur),
                            ))
                            .map_err(|_| IoStatus::InvalidField)?;
                            lba += blocks;
                            cur_len = 0;
                        }
                    }
                }
                if cur_len > 0 {
                    let blocks = cur_len >> self.shift;
                    out.try_push((sqe(opc, self.nsid, lba, blocks), cur))
                        .map_err(|_| IoStatus::InvalidField)?;
                }
            }
        }
        Ok(())
    }
}

impl BackendChannel for NvmeChannel {
    fn submit(&self, io: Box<BdevIo>) -> Result<(), Box<BdevIo>> {
        let c: &CtrlrChannel = &self.ch;
        let Some(&slot) = c.free.borrow().last() else {
            return Err(io);
        };
        let mut cmds = ArrayVec::new();
        if let Err(st) = self.plan(c, &io, slot, &mut cmds) {
            return self.failed.push(io, st);
        }
        let mut q = c.q.borrow_mut();
        if cmds.len() > q.capacity() {
            // It would wait for room that never comes.
            drop(q);
            tracing::error!(ctrlr = %c.ctrl.name, commands = cmds.len(), "an I/O needs more commands than the queue pair holds");
            return self.failed.push(io, IoStatus::InvalidField);
        }
        if q.capacity() - q.outstanding() < cmds.len() {
            return Err(io);
        }
        c.free.borrow_mut().pop();
        let mut k = c.local.get();
        if let Some(first) = cmds.iter().find_map(|(_, segs)| segs.first()) {
            let n = io.data_len() as u64;
            if c.ctrl.ctrlr.cmb().is_some_and(|m| m.contains(first.addr)) {
                k.cmb_bytes += n;
            } else if io.kind() != IoKind::Unmap {
                k.host_bytes += n;
            }
        }
        k.split += (cmds.len() > 1) as u64;
        c.local.set(k);
        let mut sent = 0;
        let mut status = IoStatus::Success;
        for (sqe, segs) in &cmds {
            match q.submit(*sqe, segs, slot as u64) {
                Ok(()) => sent += 1,
                Err(SubmitError::Busy) => {
                    // Resetting: what was sent completes later; the rest is retried by
                    // the caller only if nothing was sent.
                    status = IoStatus::NoMemory;
                    break;
                }
                Err(SubmitError::Failed) => {
                    status = IoStatus::Aborted;
                    break;
                }
                Err(SubmitError::Invalid(why)) => {
                    tracing::error!(ctrlr = %c.ctrl.name, %why, "command refused");
                    status = IoStatus::InvalidField;
                    break;
                }
            }
        }
        drop(q);
        if sent == 0 {
            c.free.borrow_mut().push(slot);
            if status == IoStatus::NoMemory {
                return Err(io);
            }
            return self.failed.push(io, status);
        }
        let mut p = c.pending.borrow_mut();
        p[slot as usize] = Pending {
            io: Some(io),
            left: sent,
            status: if status == IoStatus::NoMemory {
                IoStatus::InternalError
            } else {
                status
            },
        };
        Ok(())
    }

    fn poll(&self) -> PollStatus {
        let c: &CtrlrChannel = &self.ch;
        let mut busy = self.failed.poll() == PollStatus::Busy;
        loop {
            let mut done: ArrayVec<(u64, Status), 64> = ArrayVec::new();
            c.q.borrow_mut()
                .poll(64, |tag, cqe| done.push((tag, cqe.status())));
            if done.is_empty() {
                break;
            }
            busy = true;
            for (tag, st) in done {
                let finished = {
                    let mut p = c.pending.borrow_mut();
                    let e = &mut p[tag as usize];
                    if !st.is_success() && e.status == IoStatus::Success {
                        e.status = io_status(st);
                    }
                    e.left -= 1;
                    if e.left == 0 {
                        e.io.take().map(|io| (io, e.status))
                    } else {
                        None
                    }
                };
                if let Some((io, status)) = finished {
                    c.free.borrow_mut().push(tag as u32);
                    io.complete(status);
                }
            }
        }
        c.fold();
        // Commands in flight: keep polling (the reactor must not sleep on them).
        if busy || c.q.borrow().outstanding() > 0 {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

/// Detaches every controller and shuts each down (CC.SHN), for a clean exit: call it
/// after the engine stopped (no queue pair in use).
pub fn shutdown_all() {
    let names: Vec<String> = controllers().lock().unwrap().keys().cloned().collect();
    for n in names {
        let c = NvmeController::get(&n);
        let _ = detach(&n);
        if let Some(c) = c {
            if let Err(e) = c.ctrlr.shutdown() {
                tracing::warn!(ctrlr = %n, error = %e, "controller shutdown failed");
            }
        }
    }
}
