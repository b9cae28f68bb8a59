//! Poll groups: the target's per-thread channel. Each owns the queue pairs placed on
//! its thread, the bdev channels they submit to and a local copy of every subsystem's
//! namespace table, so I/O commands look nothing up in shared state.

use super::queue::{self, Qpair, QpairRef};
use super::tcp::Acceptor;
use super::{Target, TransportOpts, Trtype, lock};
use crate::Error;
use crate::bdev::{Bdev, SGL_SEGMENTS_MAX};
use crate::dma::{DmaBuf, Iobuf, IobufPoolStats};
use crate::thread::{IoChannel, IoDevice, PollStatus, Poller, Thread};
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::rc::{Rc, Weak};
use std::sync::Arc;

/// Period of the poll group's housekeeping (keep-alive and connect deadlines).
const HOUSEKEEPING_PERIOD_NS: u64 = 50_000_000;

/// A namespace as a poll group sees it: the bdev and this thread's channel to it.
pub(crate) struct PgNs {
    pub(crate) bdev: Arc<Bdev>,
    /// Its ANA group.
    pub(crate) anagrpid: u32,
    resv: Arc<super::resv::Reservations>,
    /// This thread's copy of the reservations, with their version.
    resv_view: RefCell<(u64, super::resv::ResvView)>,
    pub(crate) ch: IoChannel<Bdev>,
    /// This thread's cache of the device's own buffer pool (an NVMe CMB), if any.
    pub(crate) dev_iobuf: Option<IoChannel<crate::dma::Iobuf>>,
}

impl PgNs {
    /// Whether host `host` may read (`write` false) or change the namespace under its
    /// reservations; takes a new copy of them only when they changed.
    pub(crate) fn resv_allows(&self, host: &[u8; 16], write: bool) -> bool {
        let v = self.resv.version();
        let mut c = self.resv_view.borrow_mut();
        if c.0 != v {
            *c = (v, self.resv.view());
        }
        c.1.allows(host, write)
    }

    /// Its reservations.
    pub(crate) fn resv(&self) -> &super::resv::Reservations {
        &self.resv
    }
}

/// ANA states of one listener on this thread, indexed by ANAGRPID - 1; the I/O queues
/// of controllers that connected through it share them.
pub(crate) type PgAna = Rc<RefCell<Vec<u8>>>;

/// A subsystem's namespaces on this thread, indexed by NSID - 1.
#[derive(Default)]
pub(crate) struct PgSubsys {
    pub(crate) ns: RefCell<Vec<Option<Rc<PgNs>>>>,
    /// Whether the subsystem reports ANA (then I/O checks the states below).
    ana_reporting: bool,
    ana: RefCell<HashMap<super::ListenAddr, PgAna>>,
}

impl PgSubsys {
    /// The namespace `nsid`, if active.
    pub(crate) fn get(&self, nsid: u32) -> Option<Rc<PgNs>> {
        let i = (nsid as usize).checked_sub(1)?;
        self.ns.borrow().get(i).cloned().flatten()
    }

    /// The ANA states an I/O queue that connected through `l` checks, if the subsystem
    /// reports ANA.
    pub(crate) fn ana_of(&self, l: super::ListenAddr) -> Option<PgAna> {
        if !self.ana_reporting {
            return None;
        }
        Some(self.ana.borrow_mut().entry(l).or_default().clone())
    }

    fn set_ana(&self, l: super::ListenAddr, states: &[u8]) {
        let a = self.ana.borrow_mut().entry(l).or_default().clone();
        let mut a = a.borrow_mut();
        a.clear();
        a.extend_from_slice(states);
    }

    fn set(&self, nsid: u32, ns: Option<super::Namespace>) {
        let i = nsid as usize - 1;
        let mut v = self.ns.borrow_mut();
        if v.len() <= i {
            v.resize_with(i + 1, || None);
        }
        v[i] = match ns {
            None => None,
            Some(ns) => match ns.bdev.channel() {
                Ok(ch) => {
                    let b = ns.bdev;
                    let dev_iobuf = b.preferred_iobuf().and_then(|p| p.channel().ok());
                    Some(Rc::new(PgNs {
                        bdev: b,
                        anagrpid: ns.anagrpid,
                        resv_view: RefCell::new((0, Default::default())),
                        resv: ns.resv,
                        ch,
                        dev_iobuf,
                    }))
                }
                Err(e) => {
                    tracing::error!(nsid, error = %e, "cannot open a channel to the namespace's bdev");
                    None
                }
            },
        };
    }
}

/// Counters of a poll group, as `nvmf_get_stats` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PollGroupStats {
    /// Admin queue pairs ever connected.
    pub admin_qpairs: u64,
    /// I/O queue pairs ever connected.
    pub io_qpairs: u64,
    /// Admin queue pairs connected now.
    pub current_admin_qpairs: u64,
    /// I/O queue pairs connected now.
    pub current_io_qpairs: u64,
    /// Bdev I/Os in flight.
    pub pending_bdev_io: u64,
    /// NVMe commands completed.
    pub completed_nvme_io: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// TCP connections open now.
    pub current_connections: u64,
    /// Connections closed for a protocol error (TermReq sent or received).
    pub protocol_errors: u64,
    /// Controllers torn down because their host went silent past KATO.
    pub keep_alive_timeouts: u64,
    /// Data buffers this thread holds now (0 when idle: every buffer is back).
    pub iobuf_outstanding: u64,
    /// Data bytes of requests whose buffers came from device memory (an NVMe CMB).
    pub cmb_buffer_bytes: u64,
    /// Data bytes of requests whose buffers came from host memory.
    pub host_buffer_bytes: u64,
    /// Requests that wanted device memory and got host memory: its pool was short.
    pub cmb_fallback_pool_empty: u64,
    /// Times a request wanted device memory, found its pool short and waited for it
    /// (`cmb_buffers` = `force`: the data never goes through host memory).
    pub cmb_pool_waits: u64,
    /// RDMA: data bytes moved between the NIC and device memory (an NVMe CMB) by
    /// peer-to-peer DMA, without host memory.
    pub p2p_bytes: u64,
    /// RDMA: data bytes of namespaces with device memory that went through host
    /// memory instead (a fallback; its reasons are counted below and in
    /// `cmb_fallback_pool_empty`).
    pub bounce_bytes: u64,
    /// RDMA: requests that wanted device memory and got host memory because there is
    /// no peer-to-peer route between the NIC and the device (see docs/p2p.md).
    pub cmb_fallback_no_route: u64,
    /// RDMA: ... because the device memory could not be exported as a dma-buf (or,
    /// for a software NIC, its CPU mapping registered).
    pub cmb_fallback_no_dmabuf: u64,
    /// RDMA: ... because the NIC's driver refused a memory region over the dma-buf.
    pub cmb_fallback_refused: u64,
}

/// A transport's data buffer cache on one poll group, as `nvmf_get_stats` reports it
/// (under the poll group's `transports`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PgTransportStats {
    /// The transport.
    pub trtype: Trtype,
    /// The most small buffers the cache keeps (`buf_cache_size`, bounded by the pool).
    pub buf_cache_small: u64,
    /// The most large buffers the cache keeps (0 when `io_unit_size` fits a small one).
    pub buf_cache_large: u64,
    /// Where its small buffers came from.
    pub small_pool: IobufPoolStats,
    /// Where its large buffers came from.
    pub large_pool: IobufPoolStats,
}

pub(crate) struct PgInner {
    pub(crate) conns: Vec<QpairRef>,
    subsys: HashMap<u32, Rc<PgSubsys>>,
    admins: HashMap<(u32, u16), Weak<RefCell<dyn Qpair>>>,
    acceptors: Vec<Acceptor>,
    pollers: Vec<Poller>,
}

/// One thread's share of the target (the target's I/O channel).
pub struct PollGroup {
    pub(crate) tgt: Arc<Target>,
    pub(crate) thread: Thread,
    pub(crate) iobuf: IoChannel<Iobuf>,
    /// Each transport's data buffer cache (by [`Trtype::index`]), made on first use.
    bufs: [OnceCell<IoChannel<Iobuf>>; 2],
    pub(crate) inner: RefCell<PgInner>,
    pub(crate) rdma: RefCell<super::rdma::PgRdma>,
    pub(crate) stats: Cell<PollGroupStats>,
}

impl fmt::Debug for PollGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PollGroup")
            .field("thread", &self.thread.name())
            .field("stats", &self.stats.get())
            .finish()
    }
}

impl IoDevice for Target {
    type Channel = PollGroup;

    fn create_channel(self: &Arc<Self>, thread: &Thread) -> Result<PollGroup, Error> {
        Ok(PollGroup {
            tgt: self.clone(),
            thread: thread.clone(),
            iobuf: thread.get_io_channel(self.engine.iobuf())?,
            bufs: Default::default(),
            inner: RefCell::new(PgInner {
                conns: Vec::new(),
                subsys: HashMap::new(),
                admins: HashMap::new(),
                acceptors: Vec::new(),
                pollers: Vec::new(),
            }),
            rdma: RefCell::new(Default::default()),
            stats: Cell::new(PollGroupStats::default()),
        })
    }
}

impl PollGroup {
    /// Starts the poll group of the calling thread.
    pub(crate) fn start(tgt: &Arc<Target>) {
        let thread = Thread::expect_current();
        let pg = match thread.get_io_channel(tgt) {
            Ok(pg) => pg,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a poll group");
                return;
            }
        };
        let p = pg.clone();
        let poller = thread.register_poller("nvmf_poll_group", move || p.poll());
        let p = pg.clone();
        let house = thread.register_timed_poller(
            "nvmf_housekeeping",
            std::time::Duration::from_nanos(HOUSEKEEPING_PERIOD_NS),
            move || p.housekeeping(),
        );
        let mut inner = pg.inner.borrow_mut();
        inner.pollers.push(poller);
        inner.pollers.push(house);
    }

    /// The poll group of the calling thread.
    pub(crate) fn current(tgt: &Arc<Target>) -> Option<IoChannel<Target>> {
        let t = Thread::current()?;
        let pg = t.get_io_channel(tgt).ok()?;
        if pg.inner.borrow().pollers.is_empty() {
            // Not a started poll group (or one that stopped).
            return None;
        }
        Some(pg)
    }

    pub(crate) fn bump(&self, f: impl FnOnce(&mut PollGroupStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// The counters.
    pub fn stats(&self) -> PollGroupStats {
        let mut s = self.stats.get();
        s.iobuf_outstanding = self.iobuf.outstanding() as u64
            + self
                .bufs
                .iter()
                .filter_map(|c| c.get())
                .map(|c| c.outstanding() as u64)
                .sum::<u64>();
        s
    }

    /// Each created transport's buffer cache on this poll group.
    pub fn transport_stats(&self) -> Vec<PgTransportStats> {
        let trs: Vec<Trtype> = lock(&self.tgt.state).transports.keys().copied().collect();
        trs.into_iter()
            .map(|trtype| {
                let c = self.bufs[trtype.index()].get();
                let (small, large) = c.map(|c| c.capacity()).unwrap_or_default();
                let [small_pool, large_pool] = c.map(|c| c.stats()).unwrap_or_default();
                PgTransportStats {
                    trtype,
                    buf_cache_small: small as u64,
                    buf_cache_large: large as u64,
                    small_pool,
                    large_pool,
                }
            })
            .collect()
    }

    /// Data buffers for `len` bytes of a request on transport `trtype`: pieces of at
    /// most `io_unit_size` from this poll group's cache for the transport. `None` when
    /// the pools are short.
    pub(crate) fn data_bufs(
        &self,
        trtype: Trtype,
        opts: &TransportOpts,
        len: u32,
    ) -> Option<arrayvec::ArrayVec<DmaBuf, SGL_SEGMENTS_MAX>> {
        self.bufs[trtype.index()]
            .get_or_init(|| self.transport_cache(trtype, opts))
            .get_sgl_unit(len as usize, opts.io_unit_size as usize)
    }

    /// The transport's buffer cache for this poll group, of `buf_cache_size` buffers.
    fn transport_cache(&self, trtype: Trtype, opts: &TransportOpts) -> IoChannel<Iobuf> {
        let iobuf = self.tgt.engine.iobuf();
        // One poll group per core.
        let pgs = self.tgt.engine.cores().len().max(1);
        let want = opts.buf_cache(pgs, iobuf.small_bufsize());
        let levels = iobuf.pool_levels();
        // Each transport's caches on all poll groups together keep at most a quarter of
        // a pool (both transports half), so buffers idle in caches cannot starve the
        // rest of the engine.
        let fair = |count: usize| count / (4 * pgs);
        let got = (want.0.min(fair(levels[0].2)), want.1.min(fair(levels[1].2)));
        if got != want {
            tracing::info!(
                %trtype,
                buf_cache_size = opts.buf_cache_size,
                small = got.0,
                large = got.1,
                "buffer cache cut to a fair share of the iobuf pools"
            );
        }
        iobuf.module_cache(got.0, got.1)
    }

    fn poll(&self) -> PollStatus {
        let mut busy = false;
        let mut i = 0;
        let mut closed = false;
        loop {
            let c = {
                let inner = self.inner.borrow();
                match inner.conns.get(i) {
                    Some(c) => c.clone(),
                    None => break,
                }
            };
            let (st, done) = c.borrow_mut().poll(self);
            busy |= st.is_busy();
            closed |= done;
            i += 1;
        }
        let accepted = {
            let inner = self.inner.borrow();
            inner.acceptors.iter().any(|a| a.poll(self))
        };
        busy |= super::rdma::PgRdma::poll(self);
        if closed {
            self.inner
                .borrow_mut()
                .conns
                .retain(|c| !c.borrow_mut().queue().closed);
            super::rdma::PgRdma::forget_closed(self);
        }
        PollStatus::from_busy(busy || accepted || closed)
    }

    fn housekeeping(&self) -> PollStatus {
        let now = self.thread.now();
        let conns: Vec<QpairRef> = self.inner.borrow().conns.clone();
        let mut busy = false;
        for c in conns {
            busy |= queue::housekeeping(&c, self, now);
        }
        PollStatus::from_busy(busy)
    }

    /// Takes a new connection.
    pub(crate) fn add_conn(&self, conn: QpairRef) {
        self.bump(|s| {
            s.connections += 1;
            s.current_connections += 1;
        });
        self.inner.borrow_mut().conns.push(conn);
    }

    pub(crate) fn add_acceptor(&self, a: Acceptor) {
        self.inner.borrow_mut().acceptors.push(a);
    }

    pub(crate) fn remove_acceptor(&self, addr: super::ListenAddr) {
        match addr.trtype {
            super::Trtype::Tcp => self
                .inner
                .borrow_mut()
                .acceptors
                .retain(|a| a.local_addr() != addr.addr),
            super::Trtype::Rdma => self.rdma.borrow_mut().remove_acceptor(addr),
        }
    }

    /// This thread's namespace table of subsystem `sid`, built on first use.
    pub(crate) fn subsys(&self, sid: u32) -> Rc<PgSubsys> {
        if let Some(s) = self.inner.borrow().subsys.get(&sid) {
            return s.clone();
        }
        let mut table = PgSubsys::default();
        if let Some(ss) = self.tgt.subsystem_by_id(sid) {
            table.ana_reporting = ss.ana_reporting;
            for (l, a) in &ss.ana {
                table.set_ana(*l, &a.states);
            }
            for ns in ss.namespaces.values() {
                table.set(ns.nsid, Some(ns.clone()));
            }
        }
        let table = Rc::new(table);
        self.inner.borrow_mut().subsys.insert(sid, table.clone());
        table
    }

    pub(crate) fn set_ns(&self, sid: u32, nsid: u32, ns: Option<super::Namespace>) {
        let t = self.inner.borrow().subsys.get(&sid).cloned();
        if let Some(t) = t {
            t.set(nsid, ns);
        }
    }

    /// Listener `l` of subsystem `sid` has new ANA states.
    pub(crate) fn set_ana(&self, sid: u32, l: super::ListenAddr, states: &[u8]) {
        let t = self.inner.borrow().subsys.get(&sid).cloned();
        if let Some(t) = t {
            t.set_ana(l, states);
        }
    }

    pub(crate) fn drop_subsystem(&self, sid: u32) {
        self.inner.borrow_mut().subsys.remove(&sid);
    }

    pub(crate) fn register_admin(&self, sid: u32, cntlid: u16, conn: Weak<RefCell<dyn Qpair>>) {
        self.inner.borrow_mut().admins.insert((sid, cntlid), conn);
    }

    pub(crate) fn unregister_admin(&self, sid: u32, cntlid: u16) {
        self.inner.borrow_mut().admins.remove(&(sid, cntlid));
    }

    fn admin_conn(&self, sid: u32, cntlid: u16) -> Option<QpairRef> {
        self.inner
            .borrow()
            .admins
            .get(&(sid, cntlid))
            .and_then(|w| w.upgrade())
    }

    pub(crate) fn ns_changed(&self, sid: u32, cntlid: u16, nsid: u32) {
        if let Some(c) = self.admin_conn(sid, cntlid) {
            let mut c = c.borrow_mut();
            c.queue().ns_changed(nsid);
            c.send_done(self);
        }
    }

    /// The ANA states controller `cntlid` sees changed.
    pub(crate) fn ana_changed(&self, sid: u32, cntlid: u16) {
        if let Some(c) = self.admin_conn(sid, cntlid) {
            let mut c = c.borrow_mut();
            c.queue().ana_changed();
            c.send_done(self);
        }
    }

    /// Starts an Abort of command `cid` of I/O queue `sqid` of `c`, asked for by admin
    /// request `slot` of this thread: the queue's thread tries, and this thread answers
    /// the Abort. False when the queue is not connected (the Abort answers at once).
    pub(crate) fn abort_io_async(
        &self,
        c: &super::CtrlrShared,
        sqid: u16,
        cid: u16,
        slot: u16,
    ) -> bool {
        let Some(io_thread) = c.io_thread(sqid) else {
            return false;
        };
        let (sid, cntlid) = (c.subsys_id, c.cntlid);
        let (tgt, admin) = (self.tgt.clone(), self.thread.handle());
        io_thread
            .send_msg(move || {
                let aborted =
                    PollGroup::current(&tgt).is_some_and(|pg| pg.abort_io(sid, cntlid, sqid, cid));
                let t = tgt.clone();
                let _ = admin.send_msg(move || {
                    if let Some(pg) = PollGroup::current(&t) {
                        pg.abort_answer(sid, cntlid, slot, aborted);
                    }
                });
            })
            .is_ok()
    }

    fn abort_io(&self, sid: u32, cntlid: u16, qid: u16, cid: u16) -> bool {
        let conns: Vec<QpairRef> = self.inner.borrow().conns.clone();
        for c in conns {
            let mut c = c.borrow_mut();
            if c.queue().is_io_queue(sid, cntlid, qid) {
                let aborted = c.queue().abort_cid(cid);
                c.send_done(self);
                tracing::info!(cntlid, qid, cid, aborted, "Abort");
                return aborted;
            }
        }
        false
    }

    fn abort_answer(&self, sid: u32, cntlid: u16, slot: u16, aborted: bool) {
        if let Some(c) = self.admin_conn(sid, cntlid) {
            let mut c = c.borrow_mut();
            let dw0 = if aborted {
                0
            } else {
                pollux_nvme::spec::admin::ABORT_DW0_NOT_ABORTED
            };
            c.queue()
                .finish(slot, pollux_nvme::spec::cmd::Status::SUCCESS, dw0);
            c.send_done(self);
        }
    }

    pub(crate) fn close_admin(&self, sid: u32, cntlid: u16, why: &'static str) {
        if let Some(c) = self.admin_conn(sid, cntlid) {
            c.borrow_mut().close(self, why);
        }
    }

    pub(crate) fn close_ctrlr_qpairs(&self, sid: u32, cntlid: u16) {
        let conns: Vec<QpairRef> = self.inner.borrow().conns.clone();
        for c in conns {
            let mine = c.borrow_mut().queue().belongs_to(sid, cntlid);
            if mine {
                c.borrow_mut().close(self, "its controller went away");
            }
        }
    }

    /// Closes every connection and stops polling; the thread then exits.
    pub(crate) fn stop(&self) {
        let conns: Vec<QpairRef> = std::mem::take(&mut self.inner.borrow_mut().conns);
        for c in &conns {
            c.borrow_mut().close(self, "the target is shutting down");
        }
        drop(conns);
        super::rdma::PgRdma::stop(self);
        let (pollers, acceptors) = {
            let mut inner = self.inner.borrow_mut();
            inner.subsys.clear();
            inner.admins.clear();
            (
                std::mem::take(&mut inner.pollers),
                std::mem::take(&mut inner.acceptors),
            )
        };
        drop(acceptors);
        drop(pollers);
        self.thread.exit();
    }
}

impl Target {
    /// Every poll group's counters, gathered by message.
    pub fn poll_group_stats(
        self: &Arc<Self>,
    ) -> Vec<(String, PollGroupStats, Vec<PgTransportStats>)> {
        let pgs = lock(&self.state).poll_groups.clone();
        let mut out = Vec::new();
        for t in pgs {
            let tgt = self.clone();
            let name = t.name().to_owned();
            let r = t.call(move || {
                PollGroup::current(&tgt).map(|pg| (pg.stats(), pg.transport_stats()))
            });
            if let Ok(Some((s, trs))) = r {
                out.push((name, s, trs));
            }
        }
        out
    }
}
