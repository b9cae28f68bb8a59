//! The NVMe/RDMA transport of the target (NVMe over Fabrics 1.1a, section 7.3, RDMA).
//!
//! **Connections.** A listener is an rdma_cm id bound to the listen address, polled by
//! the first poll group. A connect request carries the host's queue (RDMA_CM_REQUEST
//! private data: queue ID, HSQSIZE, HRQSIZE); it is dealt round robin to a poll group,
//! which moves the id's events onto its own event channel, makes an RC queue pair on
//! the device's shared queues and accepts with CRQSIZE. A bad request is rejected with
//! the reason the specification names (RDMA_CM_REJECT private data).
//!
//! **Per device and poll group** (`PgRdma`): one completion queue, armed on a
//! completion channel so that an idle reactor sleeps until work arrives, and one shared
//! receive queue of command buffers (64 bytes of SQE plus `in_capsule_data_size`),
//! registered once. The protection domain is per device and process, and is a mapper
//! of the DMA registration map ([`crate::dma::RdmaMapper`]): every DMA region (the
//! iobuf pools included) is a memory region of it, so a request's buffers resolve to
//! (lkey, address) for this NIC by a slot look-up.
//!
//! **Commands.** A receive completion is a command capsule. Its data is in the capsule
//! (an SGL data block with an offset; copied into the request's buffers) or named by a
//! keyed SGL data block (the host's rkey and address, [`crate::dma::RdmaRemote`]):
//! host-to-controller data is fetched with one RDMA READ into the request's buffers,
//! controller-to-host data is sent with one RDMA WRITE followed by the response SEND
//! (SEND with Invalidate when the host asked for its key to be invalidated). A
//! request's buffers go back when its response SEND completes.
//!
//! **Teardown.** A disconnect, a failed work request or a protocol error closes the
//! queue pair: it is disconnected and destroyed first (nothing more lands in our
//! buffers), then requests not in a bdev release their buffers; those in a bdev do when
//! the bdev hands them back.

use super::poll_group::{PgSubsys, PollGroup};
use super::queue::{
    Dir, OrLen, Qpair, QpairRef, Queue, RState, Role, Started, cmd_dir, io_callback,
};
use super::{CmbBuffers, ListenAddr, NvmfError, Target, TransportOpts, Trtype};
use crate::bdev::{Bdev, SGL_SEGMENTS_MAX};
use crate::dma::{DmaBuf, MapperGuard, MemMap, RdmaInitiator, RdmaMapper, RdmaRemote, Unreachable};
use crate::thread::{FdWatch, IoChannel, PollStatus, Thread, ThreadHandle};
use pollux_nvme::spec::cmd::{Cqe, Sqe, Status, sgl_subtype, sgl_type};
use pollux_nvme::spec::fabrics::OPC_FABRICS;
use pollux_nvme::spec::rdma::{CmRej, CmRep, CmReq, rej_status};
use pollux_rdma::{
    Access, CmEventKind, CmId, CmIdRef, CompChannel, Context, Cq, DeviceAttr, EventChannel,
    Incoming, Listening, Mr, Pd, QpCaps, SendOp, Sge, Srq, Wc,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::{Rc, Weak};
use std::sync::{Arc, Mutex};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, IntoBytes};

/// Work completions reaped per CQ poll.
const CQ_BATCH: usize = 32;
/// Kinds of work request, in the top byte of the work request id.
const WR_RECV: u64 = 1 << 56;
const WR_READ: u64 = 2 << 56;
const WR_SEND: u64 = 3 << 56;
/// A receive on a queue pair's own receive queue (`no_srq`).
const WR_RECV_QP: u64 = 4 << 56;
const WR_KIND: u64 = 0xff << 56;
/// Request slots per queue entry (the queue's `slots_per_entry`): a host may reuse an
/// entry once it has the response, before the response's SEND completion frees the slot.
const SLOTS_PER_ENTRY: usize = 2;
/// How long a closing queue pair waits for its work requests to flush before it is
/// destroyed anyway.
const DRAIN_MAX_NS: u64 = 1_000_000_000;

/// Fails with the reason when this machine cannot serve RDMA.
pub(crate) fn check_available() -> Result<(), NvmfError> {
    match pollux_rdma::devices() {
        Ok(d) if !d.is_empty() => Ok(()),
        Ok(_) => Err(NvmfError(format!(
            "cannot create the RDMA transport: {}",
            pollux_rdma::Error::NoDevice(None)
        ))),
        Err(e) => Err(NvmfError(format!("cannot create the RDMA transport: {e}"))),
    }
}

/// Whether an RDMA NIC can reach `bdev`'s device memory (its CMB buffer pool), or why
/// none can: every RDMA device's protection domain is set up (and so told about the
/// device memory) and asked ([`crate::dma::devmem`]).
pub(crate) fn device_memory_path(bdev: &Arc<Bdev>) -> Result<(), String> {
    let owner = bdev
        .device_memory_owner()
        .ok_or_else(|| format!("bdev {} has no device memory", bdev.name()))?;
    let ctxs = pollux_rdma::cm_contexts().map_err(|e| e.to_string())?;
    if ctxs.is_empty() {
        return Err(pollux_rdma::Error::NoDevice(None).to_string());
    }
    let mut why = Vec::new();
    for ctx in ctxs {
        let d = device(&ctx)?;
        match d.mapper.reaches(owner) {
            Some(Ok(())) => return Ok(()),
            Some(Err(w)) => why.push(format!("{}: {w}", ctx.name())),
            None => why.push(format!(
                "{}: the device memory is not in the DMA map",
                ctx.name()
            )),
        }
    }
    Err(why.join("; "))
}

/// A device as the transport uses it, shared by every poll group: its protection
/// domain, mapped with every DMA region.
struct Device {
    ctx: Arc<Context>,
    pd: Arc<Pd>,
    mapper: Arc<RdmaMapper>,
    initiator: RdmaInitiator,
    attr: DeviceAttr,
    _guard: MapperGuard,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device").field("ctx", &self.ctx).finish()
    }
}

/// The device of rdma_cm context `ctx`, set up on first use.
fn device(ctx: &Arc<Context>) -> Result<Arc<Device>, String> {
    static DEVICES: Mutex<Vec<Arc<Device>>> = Mutex::new(Vec::new());
    let mut devs = DEVICES.lock().unwrap();
    if let Some(d) = devs.iter().find(|d| d.ctx.as_raw() == ctx.as_raw()) {
        return Ok(d.clone());
    }
    // rdma_cm's contexts stay open for the process from here on: the PD outlives any
    // one connection.
    let ctxs = pollux_rdma::cm_contexts().map_err(|e| e.to_string())?;
    let ctx = ctxs
        .into_iter()
        .find(|c| c.as_raw() == ctx.as_raw())
        .unwrap_or_else(|| ctx.clone());
    let attr = ctx.query().map_err(|e| e.to_string())?;
    let pd = Pd::new(&ctx).map_err(|e| e.to_string())?;
    let mapper = RdmaMapper::new(pd.clone());
    let guard = MemMap::global()
        .add_mapper(mapper.clone())
        .map_err(|e| format!("cannot register memory with the NIC: {e}"))?;
    let d = Arc::new(Device {
        ctx,
        pd,
        initiator: mapper.initiator(),
        mapper,
        attr,
        _guard: guard,
    });
    devs.push(d.clone());
    Ok(d)
}

/// Binds and listens on `addr` and starts accepting on `thread`'s poll group.
pub(crate) fn listen(
    addr: ListenAddr,
    backlog: u32,
    thread: &ThreadHandle,
    tgt: &Arc<Target>,
) -> std::io::Result<super::Listener> {
    let ch = EventChannel::new().map_err(std::io::Error::other)?;
    let id = CmId::listen(&ch, addr.addr, backlog.min(i32::MAX as u32) as i32)
        .map_err(std::io::Error::other)?;
    let t = tgt.clone();
    thread
        .send_msg(move || {
            if let Some(pg) = PollGroup::current(&t) {
                match pg.thread.register_fd(ch.fd()) {
                    Ok(w) => pg.rdma.borrow_mut().acceptors.push(Acceptor {
                        id,
                        ch,
                        addr,
                        _watch: w,
                    }),
                    Err(e) => tracing::error!(%addr, error = %e, "cannot watch listener"),
                }
            }
        })
        .map_err(|_| std::io::Error::other("poll group gone"))?;
    Ok(super::Listener::new(addr, thread, tgt))
}

/// The poll-group side of a listener.
pub(crate) struct Acceptor {
    id: CmId<Listening>,
    ch: Arc<EventChannel>,
    addr: ListenAddr,
    _watch: FdWatch,
}

impl Acceptor {
    /// Takes the connect requests waiting and deals them to poll groups.
    fn poll(&self, pg: &PollGroup) -> bool {
        let mut any = false;
        loop {
            let ev = match self.ch.get() {
                Ok(Some(ev)) => ev,
                Ok(None) => return any,
                Err(e) => {
                    tracing::warn!(addr = %self.addr, error = %e, "rdma_cm event channel failed");
                    return any;
                }
            };
            any = true;
            let Some(inc) = self.id.incoming(&ev) else {
                tracing::debug!(addr = %self.addr, kind = ?ev.kind, "rdma_cm event on the listener");
                continue;
            };
            let req = match CmReq::parse(&ev.private_data) {
                Ok(r) => r,
                Err(sts) => {
                    tracing::warn!(addr = %self.addr, peer = ?inc.peer_addr(), sts,
                        "NVMe/RDMA connect request refused: bad private data");
                    let _ = inc.reject(CmRej::new(sts).as_bytes());
                    continue;
                }
            };
            let Some(t) = pg.tgt.next_poll_group() else {
                let _ = inc.reject(CmRej::new(rej_status::NO_RESOURCES).as_bytes());
                continue;
            };
            let tgt = pg.tgt.clone();
            let addr = self.addr;
            // The host's initiator depth, as the connection manager reports it to the
            // passive side (what Linux's target takes too).
            let ird = ev.initiator_depth;
            let r = t.send_msg(move || {
                if let Some(pg) = PollGroup::current(&tgt) {
                    accept(&pg, inc, req, addr, ird);
                }
            });
            if r.is_err() {
                tracing::warn!(addr = %self.addr, "poll group gone; connect request dropped");
            }
        }
    }
}

/// Command buffers of a shared receive queue: `count` of `size` bytes, registered.
struct RecvBufs {
    // Declared before `mem`: the region goes before the memory it covers.
    mr: Mr,
    mem: Box<[u8]>,
    size: usize,
}

impl RecvBufs {
    fn new(pd: &Arc<Pd>, count: usize, size: usize) -> Result<RecvBufs, String> {
        let mut mem = vec![0u8; count * size].into_boxed_slice();
        // SAFETY: `mem` lives in this struct and outlives the region (dropped after it).
        let mr = unsafe { pd.reg_mr(mem.as_mut_ptr(), mem.len(), Access::LOCAL) }
            .map_err(|e| e.to_string())?;
        Ok(RecvBufs { mr, mem, size })
    }

    fn sge(&self, i: usize) -> Sge {
        Sge {
            addr: self.mr.addr() + (i * self.size) as u64,
            len: self.size as u32,
            lkey: self.mr.lkey(),
        }
    }

    fn get(&self, i: usize, len: usize) -> &[u8] {
        &self.mem[i * self.size..i * self.size + len.min(self.size)]
    }
}

/// A device's queues on one poll group.
struct DevQueues {
    dev: Arc<Device>,
    cq: Arc<Cq>,
    comp: Arc<CompChannel>,
    /// The shared receive queue and its command buffers (none with `no_srq`).
    shared: Option<(Arc<Srq>, RecvBufs)>,
    capsule_size: usize,
    /// CQ entries promised to queue pairs (their work requests) and the SRQ.
    cq_size: u32,
    cq_reserved: Cell<u32>,
    _watch: FdWatch,
}

impl DevQueues {
    fn new(dev: Arc<Device>, opts: &TransportOpts, thread: &Thread) -> Result<DevQueues, String> {
        let a = &dev.attr;
        let srq_depth = opts.max_srq_depth.min(a.max_srq_wr.max(1));
        let cq_size = if opts.num_cqe > 0 {
            opts.num_cqe
        } else {
            (srq_depth * 4).max(4096)
        }
        .min(a.max_cqe.max(1));
        let comp = CompChannel::new(&dev.ctx).map_err(|e| e.to_string())?;
        let cq = Cq::with_channel(&dev.ctx, cq_size, &comp).map_err(|e| e.to_string())?;
        let size = 64 + opts.in_capsule_data_size as usize;
        let shared = if opts.no_srq {
            None
        } else {
            let srq = Srq::new(&dev.pd, srq_depth, 1).map_err(|e| e.to_string())?;
            let recv = RecvBufs::new(&dev.pd, srq_depth as usize, size)?;
            for i in 0..srq_depth as usize {
                srq.post_recv(WR_RECV | i as u64, &[recv.sge(i)])
                    .map_err(|e| e.to_string())?;
            }
            Some((srq, recv))
        };
        let srq_depth = if opts.no_srq { 0 } else { srq_depth };
        let watch = thread
            .register_fd(comp.fd())
            .map_err(|e| format!("cannot watch the completion channel: {e}"))?;
        tracing::info!(
            srq_depth,
            cq_size,
            capsule = size,
            "NVMe/RDMA queues of a device set up on a poll group"
        );
        Ok(DevQueues {
            dev,
            cq,
            comp,
            shared,
            capsule_size: size,
            cq_size,
            cq_reserved: Cell::new(srq_depth),
            _watch: watch,
        })
    }

    fn repost(&self, i: usize) {
        if let Some((srq, recv)) = &self.shared {
            if let Err(e) = srq.post_recv(WR_RECV | i as u64, &[recv.sge(i)]) {
                tracing::error!(error = %e, "cannot repost a command buffer to the shared receive queue");
            }
        }
    }
}

/// One device's share of a poll group.
struct PgDev {
    q: Rc<DevQueues>,
    conns: HashMap<u32, Rc<RefCell<Conn>>>,
    armed: bool,
}

/// The RDMA transport's state on a poll group.
#[derive(Default)]
pub(crate) struct PgRdma {
    acceptors: Vec<Acceptor>,
    /// When listener and connection events are looked at next.
    next_events: u64,
    /// The event channel of this poll group's connections, and its watch.
    events: Option<(Arc<EventChannel>, FdWatch)>,
    devs: Vec<PgDev>,
}

impl fmt::Debug for PgRdma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgRdma")
            .field("devices", &self.devs.len())
            .finish()
    }
}

impl PgRdma {
    /// Stops the acceptor of `addr`.
    pub(crate) fn remove_acceptor(&mut self, addr: ListenAddr) {
        self.acceptors.retain(|a| a.addr != addr);
    }

    /// Polls listeners, connection events and completion queues.
    pub(crate) fn poll(pg: &PollGroup) -> bool {
        let mut busy = false;
        // Listener and connection events are rare: looked at every 100 us at most (a
        // sleeping reactor is woken by their channels).
        let now = pg.thread.now();
        if now >= pg.rdma.borrow().next_events {
            pg.rdma.borrow_mut().next_events = now + 100_000;
            {
                let r = pg.rdma.borrow();
                for a in &r.acceptors {
                    busy |= a.poll(pg);
                }
            }
            busy |= Self::cm_events(pg);
        }
        let mut wcs = [Wc::default(); CQ_BATCH];
        let ndev = pg.rdma.borrow().devs.len();
        for i in 0..ndev {
            let (dq, mut armed) = {
                let r = pg.rdma.borrow();
                (r.devs[i].q.clone(), r.devs[i].armed)
            };
            // Notifications come only while armed (that is, idle): a busy poll reads
            // no channel.
            if armed && dq.comp.drain() > 0 {
                armed = false;
            }
            let mut reaped = 0;
            loop {
                let n = match dq.cq.poll(&mut wcs) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!(error = %e, "ibv_poll_cq failed");
                        break;
                    }
                };
                for wc in &wcs[..n] {
                    Self::dispatch(pg, i, &dq, wc);
                }
                reaped += n;
                if n < CQ_BATCH {
                    if n == 0 && reaped == 0 && !armed {
                        // Going idle: ask for a notification, then look once more (a
                        // completion that came before arming does not notify).
                        if dq.cq.arm().is_ok() {
                            armed = true;
                        }
                        continue;
                    }
                    break;
                }
            }
            busy |= reaped > 0;
            if let Some(d) = pg.rdma.borrow_mut().devs.get_mut(i) {
                d.armed = armed;
            }
        }
        busy
    }

    /// Forgets the queue pairs that closed (the poll group saw one close).
    pub(crate) fn forget_closed(pg: &PollGroup) {
        for d in &mut pg.rdma.borrow_mut().devs {
            d.conns.retain(|_, c| !c.borrow().q.closed);
        }
    }

    /// Hands a work completion to its connection.
    fn dispatch(pg: &PollGroup, dev: usize, dq: &Rc<DevQueues>, wc: &Wc) {
        let kind = wc.wr_id() & WR_KIND;
        let low = (wc.wr_id() & 0xffff_ffff) as usize;
        let conn = pg
            .rdma
            .borrow()
            .devs
            .get(dev)
            .and_then(|d| d.conns.get(&wc.qp_num()).cloned());
        if kind == WR_RECV_QP {
            // A queue pair's own receive buffer; flushed ones go with their queue pair.
            if let Some(c) = conn.filter(|_| wc.ok()) {
                let mut c = c.borrow_mut();
                if let Some(own) = c.own_recv.take() {
                    c.capsule(pg, own.get(low, wc.byte_len() as usize));
                    if let Some(qp) = c.id.as_ref().and_then(|id| id.qp()) {
                        let _ = qp.post_recv(WR_RECV_QP | low as u64, &[own.sge(low)]);
                    }
                    c.own_recv = Some(own);
                    c.answer(pg);
                }
            }
            return;
        }
        if kind == WR_RECV {
            match conn {
                Some(c) if wc.ok() => {
                    let mut c = c.borrow_mut();
                    let len = wc.byte_len() as usize;
                    // The capsule is copied out before the buffer is posted again.
                    if let Some((_, recv)) = &dq.shared {
                        c.capsule(pg, recv.get(low, len));
                    }
                    dq.repost(low);
                    c.answer(pg);
                }
                _ => {
                    if !wc.ok() && !wc.flushed() {
                        tracing::warn!(status = wc.status(), qp = wc.qp_num(), "receive failed");
                    }
                    dq.repost(low);
                }
            }
            return;
        }
        let Some(c) = conn else {
            return;
        };
        let mut c = c.borrow_mut();
        if kind != 0 {
            c.wrs = c.wrs.saturating_sub(1);
        }
        if !wc.ok() {
            if !c.q.closed && c.draining.is_none() {
                tracing::warn!(peer = %c.q.peer, status = wc.status(), kind = kind >> 56,
                    "RDMA work request failed; closing the queue pair");
                c.close(pg, "an RDMA work request failed");
            }
            return;
        }
        match kind {
            WR_READ => c.read_done(pg, low as u16),
            WR_SEND => c.send_done(pg, low as u16),
            _ => {}
        }
    }

    /// Connection events of this poll group's queue pairs.
    fn cm_events(pg: &PollGroup) -> bool {
        let Some(ch) = pg.rdma.borrow().events.as_ref().map(|(c, _)| c.clone()) else {
            return false;
        };
        let mut any = false;
        loop {
            let ev = match ch.get() {
                Ok(Some(ev)) => ev,
                Ok(None) => return any,
                Err(e) => {
                    tracing::warn!(error = %e, "rdma_cm event channel failed");
                    return any;
                }
            };
            any = true;
            let why = match ev.kind {
                CmEventKind::Disconnected => "the host disconnected",
                CmEventKind::DeviceRemoval => "the RDMA device went away",
                CmEventKind::Established | CmEventKind::TimewaitExit => continue,
                CmEventKind::Other(_) => "a connection error",
                _ => continue,
            };
            if let Some(c) = Self::conn_of(pg, ev.id) {
                c.borrow_mut().close(pg, why);
            }
        }
    }

    fn conn_of(pg: &PollGroup, id: CmIdRef) -> Option<Rc<RefCell<Conn>>> {
        let r = pg.rdma.borrow();
        r.devs
            .iter()
            .flat_map(|d| d.conns.values())
            .find(|c| c.borrow().id.as_ref().map(|i| i.id()) == Some(id))
            .cloned()
    }

    /// This poll group's queues of `dev` and its connection event channel, made on
    /// first use.
    fn queues(
        pg: &PollGroup,
        dev: &Arc<Device>,
        opts: &TransportOpts,
    ) -> Result<(usize, Rc<DevQueues>, Arc<EventChannel>), String> {
        let mut r = pg.rdma.borrow_mut();
        if r.events.is_none() {
            let ch = EventChannel::new().map_err(|e| e.to_string())?;
            let w = pg
                .thread
                .register_fd(ch.fd())
                .map_err(|e| format!("cannot watch the event channel: {e}"))?;
            r.events = Some((ch, w));
        }
        let ch = r.events.as_ref().expect("just made").0.clone();
        if let Some(i) = r.devs.iter().position(|d| Arc::ptr_eq(&d.q.dev, dev)) {
            return Ok((i, r.devs[i].q.clone(), ch));
        }
        let q = Rc::new(DevQueues::new(dev.clone(), opts, &pg.thread)?);
        r.devs.push(PgDev {
            q: q.clone(),
            conns: HashMap::new(),
            armed: false,
        });
        Ok((r.devs.len() - 1, q, ch))
    }

    /// Closes every connection and drops the queues (the poll group is stopping).
    pub(crate) fn stop(pg: &PollGroup) {
        let conns: Vec<Rc<RefCell<Conn>>> = pg
            .rdma
            .borrow()
            .devs
            .iter()
            .flat_map(|d| d.conns.values().cloned())
            .collect();
        for c in conns {
            let mut c = c.borrow_mut();
            c.close(pg, "the target is shutting down");
            c.finish_close(pg);
        }
        *pg.rdma.borrow_mut() = PgRdma::default();
    }
}

/// Accepts a connect request on this poll group (or rejects it with the reason).
fn accept(
    pg: &IoChannel<Target>,
    mut inc: CmId<Incoming>,
    req: CmReq,
    listen: ListenAddr,
    ird: u8,
) {
    let peer = inc
        .peer_addr()
        .map_or_else(|| "?".to_owned(), |a| a.to_string());
    let refuse = |inc: CmId<Incoming>, sts: u16, why: &str| {
        tracing::warn!(%peer, qid = req.qid.get(), sts, why, "NVMe/RDMA connect request rejected");
        let _ = inc.reject(CmRej::new(sts).as_bytes());
    };
    let Some(opts) = pg.tgt.transport(Trtype::Rdma) else {
        return refuse(inc, rej_status::NO_RESOURCES, "no RDMA transport");
    };
    let qid = req.qid.get();
    let entries = req.hsqsize.get() as u32 + 1;
    let max = if qid == 0 {
        opts.max_aq_depth
    } else {
        opts.max_queue_depth
    };
    if entries < 2 || entries > max {
        return refuse(
            inc,
            rej_status::INVALID_HSQSIZE,
            &format!("HSQSIZE asks for {entries} entries; this queue takes 2 to {max}"),
        );
    }
    if (req.hrqsize.get() as u32) < 1 {
        return refuse(inc, rej_status::INVALID_HRQSIZE, "HRQSIZE is 0");
    }
    let Some(ctx) = inc.context() else {
        return refuse(inc, rej_status::NO_RESOURCES, "the id has no device");
    };
    let dev = match device(&ctx) {
        Ok(d) => d,
        Err(e) => return refuse(inc, rej_status::NO_RESOURCES, &e),
    };
    let (dev_i, dq, ch) = match PgRdma::queues(pg, &dev, &opts) {
        Ok(x) => x,
        Err(e) => return refuse(inc, rej_status::NO_RESOURCES, &e),
    };
    // A request has its data moved by as many work requests as its buffers need at the
    // NIC's scatter-gather limits (RDMA READ's may be lower), then its response SEND.
    let send_sge = (SGL_SEGMENTS_MAX as u32).min(dev.attr.max_sge).max(1);
    let read_sge = send_sge.min(dev.attr.max_sge_rd).max(1);
    let wr_per_req = (SGL_SEGMENTS_MAX as u32).div_ceil(read_sge) + 1;
    let send_wr = entries * SLOTS_PER_ENTRY as u32 * wr_per_req;
    // With `no_srq`, the queue pair's own receive queue: one command buffer per entry.
    let recv_wr = if dq.shared.is_none() { entries } else { 0 };
    let cq_share = send_wr + recv_wr;
    if dq.cq_reserved.get() + cq_share > dq.cq_size || send_wr > dev.attr.max_qp_wr {
        return refuse(
            inc,
            rej_status::NO_RESOURCES,
            "the completion queue is full (num_cqe)",
        );
    }
    if let Err(e) = inc.migrate(&ch) {
        return refuse(inc, rej_status::NO_RESOURCES, &e.to_string());
    }
    let caps = QpCaps {
        max_send_wr: send_wr,
        max_recv_wr: recv_wr,
        max_send_sge: send_sge,
        max_recv_sge: 1,
    };
    let own_recv = if recv_wr > 0 {
        match RecvBufs::new(&dev.pd, recv_wr as usize, dq.capsule_size) {
            Ok(r) => Some(r),
            Err(e) => return refuse(inc, rej_status::NO_RESOURCES, &e),
        }
    } else {
        None
    };
    let srq = dq.shared.as_ref().map(|(srq, _)| srq);
    let qp_num = match inc.create_qp(&dev.pd, &dq.cq, &dq.cq, srq, caps) {
        Ok(qp) => {
            let mut posted = Ok(());
            if let Some(r) = &own_recv {
                for i in 0..recv_wr as usize {
                    posted = posted.and(qp.post_recv(WR_RECV_QP | i as u64, &[r.sge(i)]));
                }
            }
            match posted {
                Ok(()) => qp.qp_num(),
                Err(e) => return refuse(inc, rej_status::NO_RESOURCES, &e.to_string()),
            }
        }
        Err(e) => return refuse(inc, rej_status::NO_RESOURCES, &e.to_string()),
    };
    // We issue RDMA READs (initiator); hosts never read from us.
    let ord = ird.min(dev.attr.max_qp_init_rd_atom.min(255) as u8).max(1);
    let local_sock = inc.local_addr().unwrap_or(listen.addr);
    let id = match inc.accept(CmRep::new(entries as u16).as_bytes(), 0, ord) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "rdma_accept failed");
            return;
        }
    };
    dq.cq_reserved.set(dq.cq_reserved.get() + cq_share);
    let conn = match Conn::new(
        id,
        qp_num,
        dq.clone(),
        (cq_share, own_recv),
        peer.clone(),
        listen,
        local_sock,
        (qid, entries),
        (send_sge as usize, read_sge as usize),
        pg,
    ) {
        Ok(c) => c,
        Err(e) => {
            dq.cq_reserved
                .set(dq.cq_reserved.get().saturating_sub(cq_share));
            tracing::warn!(%peer, error = %e, "cannot set up an NVMe/RDMA queue pair");
            return;
        }
    };
    if let Some(d) = pg.rdma.borrow_mut().devs.get_mut(dev_i) {
        d.conns.insert(qp_num, conn.clone());
    }
    pg.add_conn(conn as QpairRef);
    tracing::info!(%peer, %listen, qid, entries, ord, "NVMe/RDMA queue pair accepted");
}

/// Response capsules of a queue pair, one per slot, registered.
struct RespBufs {
    mr: Mr,
    mem: Box<[Cqe]>,
}

/// Where a request's data is on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Keyed {
    remote: RdmaRemote,
    invalidate: bool,
}

/// One NVMe/RDMA queue pair.
pub(crate) struct Conn {
    /// The connection (its queue pair); `None` once closed.
    id: Option<CmId<pollux_rdma::Active>>,
    q: Queue,
    dq: Rc<DevQueues>,
    qp_num: u32,
    /// CQ entries this queue pair reserved (its work requests).
    cq_share: u32,
    /// Its own receive queue's command buffers (`no_srq`).
    own_recv: Option<RecvBufs>,
    keyed: Vec<Option<Keyed>>,
    resp: RespBufs,
    /// Signaled work requests posted and not yet completed.
    wrs: u32,
    /// Scatter-gather entries per RDMA WRITE, and per RDMA READ.
    send_sge: usize,
    read_sge: usize,
    /// Closing: disconnected, waiting for its work requests to flush (since when, why).
    draining: Option<(u64, String)>,
    /// The slot of a Fabrics Disconnect whose response is being sent.
    disconnect_slot: Option<u16>,
    /// Whether this NIC reaches namespace N's device memory, or why not (decided on
    /// first use, logged then).
    dev_mem: RefCell<HashMap<u32, Result<(), Unreachable>>>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.q.peer)
            .field("qp_num", &self.qp_num)
            .field("closed", &self.q.closed)
            .finish()
    }
}

impl Qpair for Conn {
    fn poll(&mut self, pg: &PollGroup) -> (PollStatus, bool) {
        if self.q.closed {
            return (PollStatus::Idle, true);
        }
        if let Some((since, _)) = &self.draining {
            // Every work request flushed, or it took too long: nothing more will touch
            // our buffers once the queue pair is destroyed.
            if self.wrs == 0 || pg.thread.now().saturating_sub(*since) > DRAIN_MAX_NS {
                self.finish_close(pg);
            }
            return (PollStatus::Busy, self.q.closed);
        }
        let mut busy = self.retry_need_buf(pg);
        busy |= self.q.retry_io_wait(pg);
        self.answer(pg);
        // Requests waiting for buffers or a bdev queue: no completion will wake us.
        busy |= !self.q.need_buf.is_empty() || !self.q.io_wait.is_empty();
        (PollStatus::from_busy(busy), self.q.closed)
    }

    /// Disconnects: the queue pair goes to error and its work requests flush; once
    /// they have (`poll`), it is destroyed and the requests' buffers go back.
    fn close(&mut self, pg: &PollGroup, why: &str) {
        if self.q.closed || self.draining.is_some() {
            return;
        }
        if let Some(id) = &self.id {
            let _ = id.disconnect();
        }
        self.draining = Some((pg.thread.now(), why.to_owned()));
    }

    fn send_done(&mut self, pg: &PollGroup) {
        self.answer(pg);
    }

    fn queue(&mut self) -> &mut Queue {
        &mut self.q
    }

    fn answer_one(&mut self, pg: &PollGroup, slot: u16, status: Status, dw0: u32) {
        self.complete(pg, slot, status, dw0);
    }

    fn try_start_transfer(&mut self, pg: &PollGroup, slot: u16) -> bool {
        let (sqe, len, retry) = self.q.transfer_of(slot);
        let Some(bufs) = self.bufs_for(pg, &sqe, len, retry) else {
            return false;
        };
        if self.q.start_with(pg, slot, bufs) == Started::FetchData {
            self.fetch(pg, slot);
        }
        true
    }
}

impl Conn {
    /// Destroys the queue pair (with its id: nothing more lands in our buffers), then
    /// closes the queue: requests not in a bdev release their buffers.
    fn finish_close(&mut self, pg: &PollGroup) {
        if self.q.closed {
            return;
        }
        if let Some(id) = self.id.take() {
            if self.draining.is_none() {
                let _ = id.disconnect();
            }
            drop(id);
            self.dq
                .cq_reserved
                .set(self.dq.cq_reserved.get().saturating_sub(self.cq_share));
        }
        let why = self
            .draining
            .take()
            .map_or_else(|| "closed".to_owned(), |(_, w)| w);
        self.q.close(pg, &why);
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        id: CmId<pollux_rdma::Active>,
        qp_num: u32,
        dq: Rc<DevQueues>,
        (cq_share, own_recv): (u32, Option<RecvBufs>),
        peer: String,
        listen: ListenAddr,
        local_sock: std::net::SocketAddr,
        (qid, entries): (u16, u32),
        (send_sge, read_sge): (usize, usize),
        pg: &IoChannel<Target>,
    ) -> Result<Rc<RefCell<Conn>>, String> {
        let slots = entries as usize * SLOTS_PER_ENTRY;
        let opts = pg.tgt.transport(Trtype::Rdma).unwrap_or_default();
        let mut mem = vec![Cqe::default(); slots].into_boxed_slice();
        // SAFETY: `mem` lives in the same struct and is dropped after the region.
        let mr = unsafe {
            dq.dev.pd.reg_mr(
                mem.as_mut_ptr() as *mut u8,
                std::mem::size_of_val(&*mem),
                Access::LOCAL,
            )
        }
        .map_err(|e| e.to_string())?;
        let now = pg.thread.now();
        Ok(Rc::new_cyclic(|me: &Weak<RefCell<Conn>>| {
            let cb = io_callback(me.clone(), pg);
            let me: Weak<RefCell<dyn Qpair>> = me.clone();
            let mut q = Queue::new(peer, listen, local_sock, opts, me, cb, now);
            q.agreed = Some((qid, entries));
            q.slots_per_entry = SLOTS_PER_ENTRY;
            RefCell::new(Conn {
                id: Some(id),
                q,
                dq,
                qp_num,
                cq_share,
                own_recv,
                keyed: vec![None; slots],
                resp: RespBufs { mr, mem },
                wrs: 0,
                send_sge,
                read_sge,
                draining: None,
                disconnect_slot: None,
                dev_mem: RefCell::new(HashMap::new()),
            })
        }))
    }

    /// A command capsule arrived (an SQE, then in-capsule data).
    fn capsule(&mut self, pg: &PollGroup, bytes: &[u8]) {
        if self.q.closed || self.draining.is_some() {
            return;
        }
        let Some((sqe, icd)) = bytes
            .split_at_checked(64)
            .map(|(a, b)| (Sqe::read_from_bytes(a).expect("64 bytes"), b))
        else {
            tracing::warn!(peer = %self.q.peer, len = bytes.len(),
                "NVMe/RDMA protocol error: a capsule shorter than an SQE; closing");
            pg.bump(|s| s.protocol_errors += 1);
            self.close(pg, "protocol error");
            return;
        };
        let dir = cmd_dir(&sqe);
        let max = self.q.opts.max_io_size.max(super::tcp::ADMIN_ICD_SIZE);
        let (len, place) = data_place(&sqe, dir, icd.len(), max);
        let (bad, keyed, in_capsule) = match place {
            Ok(Place::None) => (None, None, None),
            Ok(Place::InCapsule(r)) => (None, None, Some(r)),
            Ok(Place::Keyed(k)) => (None, Some(k), None),
            Err(s) => (Some(s), None, None),
        };
        let Some(slot) = self.q.admit(&sqe, dir, len) else {
            tracing::warn!(peer = %self.q.peer,
                "NVMe/RDMA protocol error: more commands than the queue's entries; closing");
            pg.bump(|s| s.protocol_errors += 1);
            self.close(pg, "protocol error");
            return;
        };
        self.keyed[slot as usize] = keyed;
        if let Some(s) = bad {
            self.q.finish(slot, s, 0);
            return;
        }
        if len == 0 {
            self.q.execute(pg, slot);
            return;
        }
        if let Some(range) = in_capsule {
            // Behind requests already waiting for buffers, in arrival order.
            let bufs = match self.q.need_buf.is_empty() {
                true => self.bufs_for(pg, &sqe, len, false),
                false => None,
            };
            match bufs {
                Some(b) => self.q.run_in_capsule(pg, slot, b, &icd[range]),
                // Kept aside until buffers come back: the receive buffer is reposted.
                None => self.q.stash(slot, &icd[range]),
            }
            return;
        }
        self.start_transfer(pg, slot);
    }

    /// Posts the RDMA READ of request `slot`'s data from the host.
    fn fetch(&mut self, pg: &PollGroup, slot: u16) {
        let len = self.q.reqs[slot as usize].len;
        let k = self.keyed[slot as usize].expect("H2C data named by a keyed SGL");
        let Some((sges, n)) = self.sges(slot, len) else {
            self.q.finish(slot, Status::DATA_TRANSFER_ERROR, 0);
            return;
        };
        self.transfer(pg, slot, k.remote, &sges[..n], true);
    }

    /// Moves request `slot`'s data between `sges` and the host's memory at `remote`:
    /// RDMA READs (`read`) or WRITEs of at most the NIC's entries each. Only the last
    /// READ is signaled (an RC queue pair completes work requests in order); WRITEs are
    /// not (the response SEND behind them is). False when posting failed.
    fn transfer(
        &mut self,
        pg: &PollGroup,
        slot: u16,
        remote: RdmaRemote,
        sges: &[Sge],
        read: bool,
    ) -> bool {
        let per_wr = if read { self.read_sge } else { self.send_sge };
        let chunks = sges.len().div_ceil(per_wr);
        let mut off = 0u64;
        for (i, c) in sges.chunks(per_wr).enumerate() {
            let r = remote.offset(off);
            let (op, wr_id) = if read {
                let op = SendOp::Read {
                    remote_addr: r.addr(),
                    rkey: r.rkey(),
                };
                let id = if i + 1 == chunks {
                    WR_READ | slot as u64
                } else {
                    k_unsignaled(slot)
                };
                (op, id)
            } else {
                let op = SendOp::Write {
                    remote_addr: r.addr(),
                    rkey: r.rkey(),
                };
                (op, k_unsignaled(slot))
            };
            if !self.post(pg, wr_id, op, c) {
                return false;
            }
            off += c.iter().map(|s| s.len as u64).sum::<u64>();
        }
        true
    }

    /// Scatter-gather entries for the first `len` bytes of the request's buffers, as
    /// this NIC addresses them; `None` if a buffer is not registered with it.
    fn sges(&self, slot: u16, len: u32) -> Option<([Sge; SGL_SEGMENTS_MAX], usize)> {
        let io = self.q.reqs[slot as usize].io.as_ref()?;
        let mut out = [Sge::default(); SGL_SEGMENTS_MAX];
        let mut n = 0;
        let mut left = len as usize;
        for b in io.bufs() {
            if left == 0 {
                break;
            }
            let k = b.len().min(left);
            let Some(a) = b.resolve(&self.dq.dev.initiator) else {
                tracing::error!(peer = %self.q.peer, "a data buffer is not registered with the NIC");
                return None;
            };
            out[n] = a.sge(k as u32);
            n += 1;
            left -= k;
        }
        Some((out, n))
    }

    fn post(&mut self, pg: &PollGroup, wr_id: u64, op: SendOp, sges: &[Sge]) -> bool {
        let Some(id) = self.id.as_ref().filter(|_| self.draining.is_none()) else {
            return false;
        };
        let signaled = wr_id & WR_KIND != 0;
        let r = id
            .qp()
            .expect("an accepted id has its queue pair")
            .post_send(wr_id, op, sges, signaled);
        if let Err(e) = r {
            tracing::warn!(peer = %self.q.peer, error = %e, "ibv_post_send failed; closing");
            self.close(pg, "posting a work request failed");
            return false;
        }
        if signaled {
            self.wrs += 1;
        }
        true
    }

    /// The RDMA READ of request `slot`'s data completed.
    fn read_done(&mut self, pg: &PollGroup, slot: u16) {
        let Some(r) = self.q.reqs.get_mut(slot as usize) else {
            return;
        };
        if r.state != RState::AwaitH2c || self.q.closed || self.draining.is_some() {
            return;
        }
        r.state = RState::Exec;
        self.q.execute(pg, slot);
        self.answer(pg);
    }

    /// The response SEND of request `slot` completed: its buffers go back.
    fn send_done(&mut self, pg: &PollGroup, slot: u16) {
        let Some(r) = self.q.reqs.get(slot as usize) else {
            return;
        };
        if r.state != RState::Sending || self.q.closed || self.draining.is_some() {
            return;
        }
        self.keyed[slot as usize] = None;
        self.q.release(slot);
        if self.disconnect_slot == Some(slot) {
            self.close(pg, "the host disconnected");
        }
    }

    /// Returns the command's data (RDMA WRITE) and its response (SEND).
    fn complete(&mut self, pg: &PollGroup, slot: u16, status: Status, dw0: u32) {
        pg.bump(|s| s.completed_nvme_io += 1);
        if self.q.closed || self.draining.is_some() {
            // Nothing of it is on the NIC (it was in a bdev or the controller).
            self.q.release(slot);
            return;
        }
        if self.q.disconnecting && self.disconnect_slot.is_none() {
            let sqe = &self.q.reqs[slot as usize].sqe;
            if sqe.opc == OPC_FABRICS
                && sqe.fctype() == pollux_nvme::spec::fabrics::fctype::DISCONNECT
            {
                self.disconnect_slot = Some(slot);
            }
        }
        let (dir, len, cid, dw1) = {
            let r = &self.q.reqs[slot as usize];
            (r.dir, r.len, r.sqe.cid, r.dw1)
        };
        let keyed = self.keyed[slot as usize];
        if status.is_success() && dir == Dir::C2h && len > 0 {
            let Some(k) = keyed else {
                unreachable!("C2H data is always named by a keyed SGL");
            };
            let io = self.q.reqs[slot as usize]
                .io
                .as_ref()
                .expect("owns its I/O");
            let total = (io.data_len() as u32).min(len);
            match self.sges(slot, total) {
                Some((sges, n)) => {
                    if !self.transfer(pg, slot, k.remote, &sges[..n], false) {
                        return;
                    }
                }
                None => {
                    return self.complete(pg, slot, Status::DATA_TRANSFER_ERROR, 0);
                }
            }
        }
        let mut cqe = Cqe {
            dw0: U32::new(dw0),
            dw1: U32::new(dw1),
            sqhd: U16::new(self.q.sqhd),
            sqid: U16::new(self.q.qid()),
            cid,
            ..Default::default()
        };
        cqe.set_status(status);
        self.resp.mem[slot as usize] = cqe;
        let sge = Sge {
            addr: self.resp.mr.addr() + slot as u64 * 16,
            len: 16,
            lkey: self.resp.mr.lkey(),
        };
        let op = match keyed {
            Some(k) if k.invalidate => SendOp::SendInvalidate(k.remote.rkey()),
            _ => SendOp::Send,
        };
        self.q.reqs[slot as usize].state = RState::Sending;
        self.post(pg, WR_SEND | slot as u64, op, &[sge]);
    }

    /// Data buffers for command `sqe` of `len` bytes: from the namespace's device
    /// memory where this NIC reaches it and the transport is set to, else from the host
    /// pools; counted either way. `None` when the pools are short.
    fn bufs_for(
        &self,
        pg: &PollGroup,
        sqe: &Sqe,
        len: u32,
        retry: bool,
    ) -> Option<arrayvec::ArrayVec<DmaBuf, SGL_SEGMENTS_MAX>> {
        let mut bounce = None;
        if self.q.opts.cmb_buffers != CmbBuffers::Off && sqe.opc != OPC_FABRICS {
            if let Role::Io { subsys, .. } = &self.q.role {
                match self.device_bufs(pg, subsys, sqe.nsid.get(), len) {
                    DevBufs::Got(b) => return Some(b),
                    DevBufs::Wait => {
                        if !retry {
                            pg.bump(|s| s.cmb_pool_waits += 1);
                        }
                        return None;
                    }
                    DevBufs::Host(why) => bounce = why,
                }
            }
        }
        let b = pg.data_bufs(Trtype::Rdma, &self.q.opts, len)?;
        pg.bump(|s| {
            s.host_buffer_bytes += len as u64;
            // Counted once the host buffers are had (a retry does not count twice).
            if let Some(why) = bounce {
                s.bounce_bytes += len as u64;
                match why {
                    Bounce::PoolEmpty => s.cmb_fallback_pool_empty += 1,
                    Bounce::NoRoute => s.cmb_fallback_no_route += 1,
                    Bounce::NoDmaBuf => s.cmb_fallback_no_dmabuf += 1,
                    Bounce::Refused => s.cmb_fallback_refused += 1,
                }
            }
        });
        Some(b)
    }

    /// Buffers in the namespace's device memory, if this NIC reaches it (decided once
    /// per namespace and queue pair, logged, and counted per request either way).
    fn device_bufs(&self, pg: &PollGroup, subsys: &Rc<PgSubsys>, nsid: u32, len: u32) -> DevBufs {
        let Some(ns) = subsys.get(nsid) else {
            return DevBufs::Host(None);
        };
        let Some(pool) = ns.dev_iobuf.as_ref() else {
            return DevBufs::Host(None);
        };
        let reach = self
            .dev_mem
            .borrow_mut()
            .entry(nsid)
            .or_insert_with(|| {
                let r = match ns.bdev.device_memory_owner() {
                    Some(owner) => self.dq.dev.mapper.reaches(owner).unwrap_or_else(|| {
                        Err(Unreachable::NoDmaBuf("not in the DMA map".into()))
                    }),
                    None => Err(Unreachable::NoDmaBuf("no device memory owner".into())),
                };
                match &r {
                    Ok(()) => tracing::info!(peer = %self.q.peer, nsid,
                        "data buffers in the namespace's CMB: NIC <-> CMB by peer-to-peer DMA (counted in p2p_bytes)"),
                    Err(why) => tracing::info!(peer = %self.q.peer, nsid, reason = %why,
                        "the NIC cannot reach the namespace's CMB: host buffers (counted in bounce_bytes and the cmb_fallback_* of the reason)"),
                }
                r
            })
            .clone();
        if let Err(why) = reach {
            return DevBufs::Host(Some(match why {
                Unreachable::NoRoute(_) => Bounce::NoRoute,
                Unreachable::NoDmaBuf(_) => Bounce::NoDmaBuf,
                Unreachable::Refused(_) => Bounce::Refused,
            }));
        }
        match pool.get_sgl(len as usize) {
            Some(b) => {
                pg.bump(|s| s.p2p_bytes += len as u64);
                DevBufs::Got(b)
            }
            None if self.q.opts.cmb_buffers == CmbBuffers::Force => DevBufs::Wait,
            None => DevBufs::Host(Some(Bounce::PoolEmpty)),
        }
    }
}

/// What device memory a request gets.
// Returned once per request and taken apart at once: boxing the buffers would allocate
// on the I/O path.
#[allow(clippy::large_enum_variant)]
enum DevBufs {
    /// Buffers in the device's memory.
    Got(arrayvec::ArrayVec<DmaBuf, SGL_SEGMENTS_MAX>),
    /// None now; the request waits for some (`cmb_buffers` = `force`).
    Wait,
    /// None: host memory instead; why, when the namespace has device memory (it is
    /// counted once the host buffers are had).
    Host(Option<Bounce>),
}

/// Why data of a namespace with device memory goes through host memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bounce {
    /// Its pool was short (`prefer`).
    PoolEmpty,
    /// No peer-to-peer route from the NIC.
    NoRoute,
    /// No dma-buf of it.
    NoDmaBuf,
    /// The NIC's driver refused a memory region over it.
    Refused,
}

/// Where a command's data is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Place {
    /// No data.
    None,
    /// In the capsule, at these bytes of the in-capsule data.
    InCapsule(std::ops::Range<usize>),
    /// In the host's memory, moved by RDMA READ or WRITE.
    Keyed(Keyed),
}

/// Reads a command's SGL: its data length and where the data is, or the status that
/// fails the command (`icd_len` bytes came in the capsule; `max` is the largest
/// transfer).
fn data_place(sqe: &Sqe, dir: Dir, icd_len: usize, max: u32) -> (u32, Result<Place, Status>) {
    let sgl = sqe.sgl();
    let (len, place) = match (sgl.ty(), sgl.subtype()) {
        (sgl_type::DATA_BLOCK, sgl_subtype::OFFSET) => {
            let (off, len) = (sgl.addr.get(), sgl.len.get());
            let p = if len > 0 && dir != Dir::H2c {
                Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)
            } else if off
                .checked_add(len as u64)
                .is_none_or(|end| end > icd_len as u64)
            {
                Err(Status::SGL_OFFSET_INVALID.or_len(off == 0))
            } else if len == 0 {
                Ok(Place::None)
            } else {
                Ok(Place::InCapsule(off as usize..off as usize + len as usize))
            };
            (len, p)
        }
        (sgl_type::KEYED_DATA_BLOCK, st)
            if st == sgl_subtype::ADDRESS || st == sgl_subtype::INVALIDATE_KEY =>
        {
            let len = sgl.keyed_len();
            let k = Keyed {
                remote: RdmaRemote::from_wire(sgl.key(), sgl.addr.get()),
                invalidate: st == sgl_subtype::INVALIDATE_KEY,
            };
            (
                len,
                Ok(if len == 0 {
                    Place::None
                } else {
                    Place::Keyed(k)
                }),
            )
        }
        _ => (0, Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)),
    };
    let place = place.and_then(|p| {
        if len > 0 && dir == Dir::None {
            Err(Status::INVALID_FIELD)
        } else if len > max {
            Err(Status::SGL_LENGTH_INVALID)
        } else {
            Ok(p)
        }
    });
    (len, place)
}

/// The placement code as the fuzz targets (tests/fuzz) reach it, without an RDMA
/// device; not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::{Place, cmd_dir};
    use pollux_nvme::fabrics::XferDir;
    use pollux_nvme::spec::cmd::{Sqe, Status};

    /// Where a command's data is, in plain values.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum Placement {
        /// No data.
        None,
        /// These bytes of the in-capsule data.
        InCapsule(std::ops::Range<usize>),
        /// In the host's memory, by RDMA READ or WRITE.
        Keyed {
            /// The host's remote key.
            rkey: u32,
            /// The host's address.
            addr: u64,
            /// Whether the host asked for the key to be invalidated.
            invalidate: bool,
        },
    }

    /// The direction the target gives `sqe`'s data (from its opcode).
    pub fn direction(sqe: &Sqe) -> XferDir {
        match cmd_dir(sqe) {
            super::Dir::H2c => XferDir::HostToCtrl,
            super::Dir::C2h => XferDir::CtrlToHost,
            super::Dir::None => XferDir::None,
        }
    }

    /// What the target makes of a capsule of `sqe` with `icd_len` bytes of in-capsule
    /// data, transfers of at most `max` bytes: the data length, and where the data is
    /// or the status that fails the command.
    pub fn data_place(sqe: &Sqe, icd_len: usize, max: u32) -> (u32, Result<Placement, Status>) {
        let (len, p) = super::data_place(sqe, cmd_dir(sqe), icd_len, max);
        let p = p.map(|p| match p {
            Place::None => Placement::None,
            Place::InCapsule(r) => Placement::InCapsule(r),
            Place::Keyed(k) => Placement::Keyed {
                rkey: k.remote.rkey(),
                addr: k.remote.addr(),
                invalidate: k.invalidate,
            },
        });
        (len, p)
    }
}

/// The work request id of an unsignaled RDMA WRITE (never seen in a completion).
fn k_unsignaled(slot: u16) -> u64 {
    slot as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollux_nvme::spec::cmd::SglDescriptor;

    fn sqe(opc: u8, sgl: SglDescriptor) -> Sqe {
        let mut s = Sqe {
            opc,
            ..Default::default()
        };
        s.set_sgl(&sgl);
        s
    }

    #[test]
    fn capsules_say_where_their_data_is_or_why_the_command_fails() {
        const WRITE: u8 = 0x01;
        const READ: u8 = 0x02;
        const MAX: u32 = 131072;
        let place = |opc, sgl, icd| {
            let s = sqe(opc, sgl);
            data_place(&s, cmd_dir(&s), icd, MAX)
        };
        let keyed = |len, st| SglDescriptor::keyed(0x7000_0000, len, 0xabcd, st);
        // Linux's in-capsule write: an offset data block covering the capsule's data.
        let inline = SglDescriptor::new(sgl_type::DATA_BLOCK, sgl_subtype::OFFSET, 0, 4096);
        assert_eq!(
            place(WRITE, inline, 4096),
            (4096, Ok(Place::InCapsule(0..4096)))
        );
        // ... longer than what came: the offset and length are checked against it.
        assert_eq!(place(WRITE, inline, 512).1, Err(Status::SGL_LENGTH_INVALID));
        let at = SglDescriptor::new(sgl_type::DATA_BLOCK, sgl_subtype::OFFSET, 4096, 16);
        assert_eq!(place(WRITE, at, 4096).1, Err(Status::SGL_OFFSET_INVALID));
        // In-capsule data for a read makes no sense.
        assert_eq!(
            place(READ, inline, 4096).1,
            Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)
        );
        // Keyed data blocks: the host's rkey and address, invalidation asked or not.
        let r = RdmaRemote::from_wire(0xabcd, 0x7000_0000);
        assert_eq!(
            place(READ, keyed(65536, sgl_subtype::INVALIDATE_KEY), 0),
            (
                65536,
                Ok(Place::Keyed(Keyed {
                    remote: r,
                    invalidate: true
                }))
            )
        );
        assert_eq!(
            place(WRITE, keyed(8192, sgl_subtype::ADDRESS), 0).1,
            Ok(Place::Keyed(Keyed {
                remote: r,
                invalidate: false
            }))
        );
        // A command without data: Linux sends a null keyed block.
        assert_eq!(
            place(0x00, keyed(0, sgl_subtype::ADDRESS), 0),
            (0, Ok(Place::None))
        );
        // Data on a command that moves none, too much data, NVMe/TCP's descriptor.
        assert_eq!(
            place(0x00, keyed(4096, sgl_subtype::ADDRESS), 0).1,
            Err(Status::INVALID_FIELD)
        );
        assert_eq!(
            place(READ, keyed(MAX + 4096, sgl_subtype::ADDRESS), 0).1,
            Err(Status::SGL_LENGTH_INVALID)
        );
        let tcp = SglDescriptor::new(
            sgl_type::TRANSPORT_DATA_BLOCK,
            sgl_subtype::TRANSPORT,
            0,
            4096,
        );
        assert_eq!(
            place(READ, tcp, 0).1,
            Err(Status::SGL_DESCRIPTOR_TYPE_INVALID)
        );
    }
}
