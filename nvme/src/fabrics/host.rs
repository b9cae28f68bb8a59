//! The transport-independent host: [`AdminQueue`] and [`FabricQpair`] over a link
//! that is NVMe/TCP ([`super::tcp`]) or NVMe/RDMA ([`super::rdma`]).
//!
//! Both transports give the same interface: submit a command with a buffer the queue
//! pair owns until its completion hands it back, poll for completions, drain on
//! failure. The admin queue's bring-up (Connect, CAP/VS, CC.EN, CSTS.RDY, Identify,
//! Number of Queues) and every admin helper are written once, here.

use super::{Completion, DataBuf, DataDir, Error, SubmitError, XferDir};
use crate::spec::admin::{
    GetLogPageDw, IdentifyDw, NumQueues, admin_opc, cns, feature, log_id, nvm_opc,
};
use crate::spec::cmd::{Cqe, Sqe};
use crate::spec::fabrics::{
    ConnectData, ConnectFields, DISCOVERY_NQN, FabricsCmd, NQN_LEN_MAX, OPC_FABRICS,
    PropertyFields, fctype, validate_nqn,
};
use crate::spec::identify::{
    CNTLID_DYNAMIC, IdentifyController, IdentifyNamespace, NsList, nqn_field,
};
use crate::spec::log::{DiscoveryLogEntry, DiscoveryLogHeader};
use crate::spec::regs::{Cap, Cc, Csts, offset};
use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromZeros, IntoBytes};

/// In-capsule data an admin queue carries (TCP; Linux's target takes 8 KiB).
pub const ADMIN_IN_CAPSULE: u32 = 8192;
/// The most data one admin command moves (RDMA registers this much per admin slot).
const ADMIN_DATA_MAX: u32 = 64 * 1024;
/// Discovery log records this host reads at most.
const DISCOVERY_RECORDS_MAX: u64 = 4096;

/// A Fabrics transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// NVMe/TCP.
    Tcp,
    /// NVMe/RDMA (RoCE, iWARP or InfiniBand, through rdma-core).
    Rdma,
}

/// What the host's poll discipline needs of a transport's connection.
pub(crate) trait Wire<B> {
    /// An error met after completions were already reported, for the next poll.
    fn pending(&mut self) -> &mut Option<Error>;
    /// The error a dead connection reports, if it is dead.
    fn dead_error(&self) -> Option<Error>;
    /// Marks the connection failed (and closes it); returns `e`.
    fn fail(&mut self, e: Error) -> Error;
    /// Moves what can move without blocking, calling `f` for each completed command
    /// (at most `max`, 0 for no limit) and counting them in `n`.
    fn progress<F: FnMut(Completion<B>)>(
        &mut self,
        max: usize,
        f: &mut F,
        n: &mut usize,
    ) -> Result<(), Error>;

    /// One poll: an earlier error first, then progress; an error met after some
    /// completions is reported by the next call (the caller has seen them).
    fn poll<F: FnMut(Completion<B>)>(&mut self, max: usize, f: &mut F) -> Result<usize, Error> {
        if let Some(e) = self.pending().take() {
            return Err(e);
        }
        if let Some(e) = self.dead_error() {
            return Err(e);
        }
        let mut n = 0;
        match self.progress(max, f, &mut n) {
            Ok(()) => Ok(n),
            Err(e) => {
                let e = self.fail(e);
                if n > 0 {
                    *self.pending() = Some(e);
                    Ok(n)
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// A queue's connection: the one transport-specific piece under both queue kinds.
// One per queue, held inline so that the per-I/O calls take no extra indirection.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Link<B> {
    Tcp(super::tcp::Conn<B>),
    Rdma(super::rdma::Conn<B>),
}

macro_rules! each {
    ($s:expr, $c:ident => $e:expr) => {
        match $s {
            Link::Tcp($c) => $e,
            Link::Rdma($c) => $e,
        }
    };
}

impl<B: DataBuf> Link<B> {
    /// Connects queue `qid` (its transport handshake); `slots` commands may be
    /// outstanding, writes up to `in_capsule` bytes go in the capsule, and no command
    /// moves more than `max_transfer` bytes (0: no limit).
    fn open(
        opts: &FabricOptions,
        qid: u16,
        slots: usize,
        in_capsule: u32,
        max_transfer: u32,
    ) -> Result<Link<B>, Error> {
        opts.validate()?;
        Ok(match opts.transport {
            Transport::Tcp => {
                let mut c = super::tcp::Conn::open(opts, qid, slots, in_capsule)?;
                c.max_transfer = max_transfer;
                Link::Tcp(c)
            }
            // No in-capsule data on an RDMA admin queue, as Linux's host does: targets
            // post small receive buffers there (Linux's take the SQE only).
            Transport::Rdma => Link::Rdma(super::rdma::Conn::open(
                opts,
                qid,
                slots,
                if qid == 0 { 0 } else { in_capsule },
                max_transfer,
            )?),
        })
    }

    /// Checks a command's buffer against the direction and the largest transfer, then
    /// hands it to the transport.
    fn submit(
        &mut self,
        sqe: Sqe,
        buf: Option<B>,
        dir: XferDir,
        tag: u64,
    ) -> Result<(), SubmitError<B>> {
        if each!(self, c => c.dead.is_some()) {
            return Err(SubmitError::Dead(buf));
        }
        let len = match (&buf, dir) {
            (_, XferDir::None) => 0,
            (None, _) => {
                return Err(SubmitError::Invalid {
                    why: "a data transfer needs a buffer".into(),
                    buf,
                });
            }
            (Some(b), _) => b.as_slice().len(),
        };
        let max = match each!(self, c => c.max_transfer) {
            0 => u32::MAX,
            m => m,
        };
        if len > max as usize {
            return Err(SubmitError::Invalid {
                why: format!(
                    "{len} bytes is more than one command moves on this controller ({max} bytes, MDTS)"
                ),
                buf,
            });
        }
        each!(self, c => c.submit(sqe, buf, len as u32, dir, tag))
    }

    fn poll<F: FnMut(Completion<B>)>(&mut self, max: usize, f: &mut F) -> Result<usize, Error> {
        each!(self, c => c.poll(max, f))
    }

    fn wait_io(&mut self, deadline: Instant) -> Result<(), Error> {
        each!(self, c => c.wait_io(deadline))
    }

    fn drain<F: FnMut(Completion<B>)>(&mut self, f: &mut F) -> usize {
        each!(self, c => c.drain(f))
    }

    fn fail(&mut self, e: Error) -> Error {
        each!(self, c => c.fail(e))
    }

    /// Blocks until the command tagged `tag` completes; other completions go to
    /// `other` (an Asynchronous Event Request's, say).
    fn run(
        &mut self,
        tag: u64,
        what: &str,
        timeout: Duration,
        other: &mut dyn FnMut(Completion<B>),
    ) -> Result<Completion<B>, Error> {
        let deadline = Instant::now() + timeout;
        let mut got = None;
        loop {
            self.poll(0, &mut |c: Completion<B>| {
                if c.tag == tag {
                    got = Some(c);
                } else {
                    other(c);
                }
            })?;
            if let Some(c) = got.take() {
                return Ok(c);
            }
            if Instant::now() >= deadline {
                let addr = self.addr();
                return Err(self.fail(Error::Timeout {
                    addr,
                    what: what.into(),
                    after: timeout,
                }));
            }
            self.wait_io(deadline)?;
        }
    }

    /// Sends a Connect for this connection's queue and returns the controller ID.
    fn fabric_connect(
        &mut self,
        opts: &FabricOptions,
        sqsize: u16,
        kato_ms: u32,
        cntlid: u16,
    ) -> Result<u16, Error> {
        const TAG: u64 = u64::MAX;
        let (qid, addr) = (self.qid(), self.addr());
        let (sqe, d) = connect_command(opts, qid, sqsize, kato_ms, cntlid);
        each!(self, c => c.send_connect(sqe, d.as_bytes(), TAG))?;
        let c = self.run(TAG, "Connect", opts.timeout, &mut |_| {})?;
        connect_result(&c.cqe, qid, addr).map_err(|e| self.fail(e))
    }

    fn close(&mut self) {
        each!(self, c => c.close())
    }

    fn outstanding(&self) -> usize {
        each!(self, c => c.outstanding)
    }

    fn for_each_busy(&self, f: impl FnMut(usize, u16, u64)) {
        each!(self, c => c.for_each_busy(f))
    }

    fn qid(&self) -> u16 {
        each!(self, c => c.qid)
    }

    fn addr(&self) -> SocketAddr {
        each!(self, c => c.addr)
    }

    fn dead(&self) -> Option<String> {
        each!(self, c => c.dead.clone())
    }

    fn raw_fd(&self) -> RawFd {
        each!(self, c => c.raw_fd())
    }

    fn wants_write(&self) -> bool {
        match self {
            Link::Tcp(c) => c.tx_head < c.tx.len(),
            Link::Rdma(_) => false,
        }
    }
}

/// The Connect command for queue `qid` with `sqsize` (0's based) entries, and its data.
fn connect_command(
    opts: &FabricOptions,
    qid: u16,
    sqsize: u16,
    kato_ms: u32,
    cntlid: u16,
) -> (Sqe, ConnectData) {
    let mut f = FabricsCmd {
        opc: OPC_FABRICS,
        fctype: fctype::CONNECT,
        ..Default::default()
    };
    let fields = ConnectFields {
        recfmt: U16::new(0),
        qid: U16::new(qid),
        sqsize: U16::new(sqsize),
        kato: U32::new(kato_ms),
        ..Default::default()
    };
    f.specific.copy_from_slice(fields.as_bytes());
    let mut d = ConnectData::new_zeroed();
    d.hostid = opts.hostid;
    d.cntlid = U16::new(cntlid);
    nqn_field(&mut d.subnqn, &opts.subnqn);
    nqn_field(&mut d.hostnqn, &opts.hostnqn);
    (f.to_sqe(), d)
}

/// The controller ID from a Connect's completion, or why the Connect failed.
fn connect_result(cqe: &Cqe, qid: u16, addr: SocketAddr) -> Result<u16, Error> {
    let status = cqe.status();
    let dw0 = cqe.dw0.get();
    if !status.is_success() {
        return Err(Error::ConnectRejected { qid, status, dw0 });
    }
    if (dw0 >> 16) & 0x3 != 0 {
        return Err(Error::Controller {
            addr,
            why: format!(
                "requires in-band authentication (Connect AUTHREQ {:#x}), which this host does not support",
                (dw0 >> 16) & 0x3
            ),
        });
    }
    Ok(dw0 as u16)
}

/// How to reach and identify to an NVMe-oF subsystem, over TCP or RDMA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FabricOptions {
    /// The transport.
    pub transport: Transport,
    /// The target's address (NVMe-oF's port is 4420; discovery also listens on 8009).
    pub addr: SocketAddr,
    /// The subsystem to connect to ([`DISCOVERY_NQN`] for the discovery controller).
    pub subnqn: String,
    /// This host's NQN.
    pub hostnqn: String,
    /// This host's identifier (a UUID), sent in the Connect data.
    pub hostid: [u8; 16],
    /// Ask for header digests (TCP).
    pub hdgst: bool,
    /// Ask for data digests (TCP).
    pub ddgst: bool,
    /// Keep Alive Timeout in ms for the admin queue; 0 disables it. With it on, call
    /// [`AdminQueue::keep_alive_if_due`] more often than this.
    pub kato_ms: u32,
    /// Admin queue entries (2 to 4096).
    pub admin_queue_size: u16,
    /// I/O queue entries that [`AdminQueue::create_io_qpair`] uses when given depth 0.
    pub io_queue_size: u16,
    /// I/O queues to ask the controller for (Set Features Number of Queues); 0 sends no
    /// Set Features and takes the count Get Features Number of Queues reports.
    pub io_queues: u16,
    /// How long to wait for the TCP connection, each admin command, and controller
    /// state changes (CSTS.RDY is given at least CAP.TO).
    pub timeout: Duration,
}

impl FabricOptions {
    /// Options for `subnqn` at `addr`: a random host identity (hostnqn
    /// `nqn.2014-08.org.nvmexpress:uuid:<uuid>` with the same UUID as hostid), no
    /// digests, a keep-alive timeout of 5 s (0 for the discovery controller), 32 admin
    /// entries, 128 entries per I/O queue, as many I/O queues as CPUs, a 10 s timeout.
    pub fn new(addr: SocketAddr, subnqn: impl Into<String>) -> FabricOptions {
        let subnqn = subnqn.into();
        let id = uuid::Uuid::new_v4();
        let io_queues = std::thread::available_parallelism()
            .map(|n| n.get().min(u16::MAX as usize) as u16)
            .unwrap_or(1);
        FabricOptions {
            transport: Transport::Tcp,
            addr,
            kato_ms: if subnqn == DISCOVERY_NQN { 0 } else { 5_000 },
            subnqn,
            hostnqn: format!("nqn.2014-08.org.nvmexpress:uuid:{id}"),
            hostid: *id.as_bytes(),
            hdgst: false,
            ddgst: false,
            admin_queue_size: 32,
            io_queue_size: 128,
            io_queues,
            timeout: Duration::from_secs(10),
        }
    }

    /// The same, over NVMe/RDMA.
    pub fn rdma(addr: SocketAddr, subnqn: impl Into<String>) -> FabricOptions {
        FabricOptions {
            transport: Transport::Rdma,
            ..FabricOptions::new(addr, subnqn)
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.transport == Transport::Rdma && (self.hdgst || self.ddgst) {
            return Err(Error::InvalidArgument(
                "digests are an NVMe/TCP feature: RDMA has none".into(),
            ));
        }
        for (what, nqn) in [("subnqn", &self.subnqn), ("hostnqn", &self.hostnqn)] {
            validate_nqn(nqn)
                .map_err(|why| Error::InvalidArgument(format!("{what} {nqn:?}: {why}")))?;
            debug_assert!(nqn.len() <= NQN_LEN_MAX);
        }
        if !(2..=4096).contains(&self.admin_queue_size) {
            return Err(Error::InvalidArgument(format!(
                "admin_queue_size {} is not in 2..=4096",
                self.admin_queue_size
            )));
        }
        if self.timeout.is_zero() {
            return Err(Error::InvalidArgument("timeout is zero".into()));
        }
        Ok(())
    }
}

/// Bytes of a property (base 3.1.4, Figure 33): CAP, ASQ, ACQ, BPMBL and CMBMSC are 8
/// bytes, the others 4.
fn property_size(ofst: u32) -> usize {
    match ofst {
        offset::CAP | offset::ASQ | offset::ACQ | 0x48 | offset::CMBMSC => 8,
        _ => 4,
    }
}

/// The admin queue of a controller reached over NVMe/TCP: blocking, used from one
/// thread, one command at a time.
pub struct AdminQueue {
    conn: Link<Vec<u8>>,
    opts: FabricOptions,
    cntlid: u16,
    cap: Cap,
    vs: u32,
    cc: Cc,
    identify: Box<IdentifyController>,
    io_in_capsule: u32,
    max_transfer: u32,
    io_queues: u16,
    next_tag: u64,
    last_command: Instant,
    scratch: Vec<u8>,
    /// Completed Asynchronous Event Requests not yet taken by [`Self::async_events`].
    events: Vec<Cqe>,
}

/// The tag of the Asynchronous Event Request an admin queue keeps outstanding (other
/// commands' tags stay below it).
const AER_TAG: u64 = u64::MAX;

/// An Asynchronous Event (base 5.2, completion dword 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncEvent {
    /// Asynchronous Event Type (0 error, 1 SMART/health, 2 notice, 6 I/O command set,
    /// 7 vendor).
    pub kind: u8,
    /// Asynchronous Event Information (for notices: 0 Namespace Attribute Changed, 3
    /// ANA Change, ...).
    pub info: u8,
    /// The log page to read to clear it.
    pub log_page: u8,
}

impl AsyncEvent {
    /// Namespace Attribute Changed (notice 00h): read the Changed Namespace List.
    pub fn namespaces_changed(&self) -> bool {
        self.kind == 2 && self.info == 0
    }

    /// Asymmetric Namespace Access Change (notice 03h): read the ANA log page.
    pub fn ana_changed(&self) -> bool {
        self.kind == 2 && self.info == crate::spec::admin::aer_notice::ANA_CHANGE
    }
}

impl fmt::Debug for AdminQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminQueue")
            .field("addr", &self.opts.addr)
            .field("subnqn", &self.opts.subnqn)
            .field("cntlid", &self.cntlid)
            .field("io_queues", &self.io_queues)
            .finish_non_exhaustive()
    }
}

impl AdminQueue {
    /// Connects to the subsystem and brings its controller up: ICReq, Connect (dynamic
    /// controller, KATO from `opts`), CAP and VS, CC.EN=1, CSTS.RDY within CAP.TO,
    /// Identify Controller, and — but for the discovery controller — Set Features
    /// Number of Queues for `opts.io_queues`.
    pub fn connect(opts: &FabricOptions) -> Result<AdminQueue, Error> {
        opts.validate()?;
        let slots = opts.admin_queue_size as usize - 1;
        let mut conn = Link::open(opts, 0, slots, ADMIN_IN_CAPSULE, ADMIN_DATA_MAX)?;
        let cntlid = conn.fabric_connect(
            opts,
            opts.admin_queue_size - 1,
            opts.kato_ms,
            CNTLID_DYNAMIC,
        )?;
        let mut a = AdminQueue {
            conn,
            opts: opts.clone(),
            cntlid,
            cap: Cap::new(),
            vs: 0,
            cc: Cc::new(),
            identify: Box::default(),
            io_in_capsule: 0,
            max_transfer: 0,
            io_queues: 0,
            next_tag: 0,
            last_command: Instant::now(),
            scratch: Vec::new(),
            events: Vec::new(),
        };
        a.cap = Cap::from(a.property_get_for(offset::CAP, "Property Get CAP")?);
        a.vs = a.property_get_for(offset::VS, "Property Get VS")? as u32;
        a.enable()?;
        let mut id = IdentifyController::new_zeroed();
        let cqe = a.command(
            IdentifyDw {
                cns: cns::CONTROLLER,
                ..Default::default()
            }
            .to_sqe(0),
            DataDir::ToHost(id.as_mut_bytes()),
        )?;
        a.check(cqe, "Identify Controller")?;
        a.identify = Box::new(id);
        let page = 1u64 << (12 + a.cap.mpsmin() as u32);
        a.max_transfer = match a.identify.mdts {
            0 => 0,
            m => (page << m.min(20)).min(u32::MAX as u64) as u32,
        };
        a.io_in_capsule = if a.identify.icdoff.get() != 0 {
            // In-capsule data at an offset is not something this host sends.
            0
        } else {
            a.identify
                .ioccsz
                .get()
                .saturating_mul(16)
                .saturating_sub(size_of::<Sqe>() as u32)
        };
        if opts.subnqn != DISCOVERY_NQN {
            let n = opts.io_queues as u32;
            // Without a count to ask for, the host takes what Get Features reports:
            // the controller's maximum (a host need not set the feature at all).
            let cqe = if n > 0 {
                a.set_features(
                    feature::NUMBER_OF_QUEUES,
                    NumQueues::from_counts(n, n).to_dw(),
                )?
            } else {
                a.get_features(feature::NUMBER_OF_QUEUES, 0)?
            };
            if cqe.status().is_success() {
                let got = NumQueues::from_dw(cqe.dw0.get());
                let granted = got.sq_count().min(got.cq_count());
                let n = if n > 0 { granted.min(n) } else { granted };
                a.io_queues = n.min(u16::MAX as u32) as u16;
            }
        }
        Ok(a)
    }

    /// CC.EN=1 (NVM command set, or admin-only for controllers without I/O command
    /// sets), then waits for CSTS.RDY.
    fn enable(&mut self) -> Result<(), Error> {
        let css = self.cap.css();
        let cc_css = if css & (1 << 6) != 0 {
            0b110
        } else if css & 1 == 0 && css & (1 << 7) != 0 {
            0b111
        } else {
            0
        };
        self.cc = Cc::new()
            .with_en(true)
            .with_css(cc_css)
            .with_mps(self.cap.mpsmin())
            .with_iosqes(6)
            .with_iocqes(4);
        self.property_set_for(offset::CC, u32::from(self.cc) as u64, "Property Set CC")?;
        let limit = Duration::from_millis(500 * self.cap.to().max(1) as u64).max(self.opts.timeout);
        self.wait_csts(limit, "become ready (CSTS.RDY) after CC.EN=1", |c| c.rdy())
    }

    /// Polls CSTS until `done` or `limit` passes, failing on CSTS.CFS.
    fn wait_csts(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(Csts) -> bool,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + limit;
        let mut nap = Duration::from_millis(1);
        loop {
            let csts = Csts::from(self.property_get_for(offset::CSTS, "Property Get CSTS")? as u32);
            if csts.cfs() {
                return Err(Error::Controller {
                    addr: self.opts.addr,
                    why: format!("reports a fatal status (CSTS.CFS) while waiting to {what}"),
                });
            }
            if done(csts) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Controller {
                    addr: self.opts.addr,
                    why: format!(
                        "did not {what} within {limit:?} (CSTS {:#x})",
                        u32::from(csts)
                    ),
                });
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(50));
        }
    }

    fn check(&self, cqe: Cqe, what: &str) -> Result<Cqe, Error> {
        let status = cqe.status();
        if status.is_success() {
            Ok(cqe)
        } else {
            Err(Error::Command {
                what: what.into(),
                status,
            })
        }
    }

    /// The controller ID the Connect returned.
    pub fn cntlid(&self) -> u16 {
        self.cntlid
    }

    /// Identify Controller, as read at connect.
    pub fn identify(&self) -> &IdentifyController {
        &self.identify
    }

    /// The controller's capabilities (CAP).
    pub fn cap(&self) -> Cap {
        self.cap
    }

    /// The controller's version (VS).
    pub fn vs(&self) -> u32 {
        self.vs
    }

    /// I/O queues the controller granted (0 for a discovery controller, or when Set
    /// Features Number of Queues failed).
    pub fn io_queues(&self) -> u16 {
        self.io_queues
    }

    /// Bytes of in-capsule data an I/O queue takes (IOCCSZ * 16 - 64).
    pub fn io_in_capsule(&self) -> u32 {
        self.io_in_capsule
    }

    /// Most bytes one command moves (MDTS), 0 for no limit.
    pub fn max_transfer(&self) -> u32 {
        self.max_transfer
    }

    /// The options it was connected with.
    pub fn options(&self) -> &FabricOptions {
        &self.opts
    }

    /// Runs one admin command and waits for it (at most `FabricOptions::timeout`). A
    /// completion with an error status is `Ok`: the caller reads the status. `Err` means
    /// the transport failed or timed out, and the admin queue is then unusable.
    pub fn command(&mut self, sqe: Sqe, data: DataDir<'_>) -> Result<Cqe, Error> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let (dir, len) = match &data {
            DataDir::None => (XferDir::None, 0),
            DataDir::ToHost(b) => (XferDir::CtrlToHost, b.len()),
            DataDir::ToController(b) => {
                buf.extend_from_slice(b);
                (XferDir::HostToCtrl, b.len())
            }
        };
        buf.resize(len, 0);
        self.next_tag = self.next_tag.wrapping_add(1) % (u64::MAX - 1);
        let tag = self.next_tag;
        let addr = self.opts.addr;
        self.conn
            .submit(sqe, Some(buf), dir, tag)
            .map_err(|e| match e {
                SubmitError::Invalid { why, .. } => Error::InvalidArgument(why),
                SubmitError::QueueFull(_) | SubmitError::Dead(_) => Error::Dead {
                    addr,
                    why: self
                        .conn
                        .dead()
                        .unwrap_or_else(|| "the admin queue is full".into()),
                },
            })?;
        let what = format!("admin command {:#04x}", sqe.opc);
        let events = &mut self.events;
        let c = self.conn.run(tag, &what, self.opts.timeout, &mut |c| {
            if c.tag == AER_TAG {
                events.push(c.cqe);
            }
        })?;
        self.last_command = Instant::now();
        if let Some(b) = c.buf {
            if let DataDir::ToHost(out) = data {
                out.copy_from_slice(&b[..out.len()]);
            }
            self.scratch = b;
        }
        Ok(c.cqe)
    }

    /// Identify Namespace (CNS 00h) for `nsid`.
    pub fn identify_namespace(&mut self, nsid: u32) -> Result<IdentifyNamespace, Error> {
        let mut ns = IdentifyNamespace::new_zeroed();
        let cqe = self.command(
            IdentifyDw {
                cns: cns::NAMESPACE,
                ..Default::default()
            }
            .to_sqe(nsid),
            DataDir::ToHost(ns.as_mut_bytes()),
        )?;
        self.check(cqe, &format!("Identify Namespace {nsid}"))?;
        Ok(ns)
    }

    /// The active namespace IDs, in increasing order (Identify CNS 02h, as many lists as
    /// it takes).
    pub fn active_namespaces(&mut self) -> Result<Vec<u32>, Error> {
        let mut ids = Vec::new();
        let mut after = 0u32;
        loop {
            let mut list = NsList::default();
            let cqe = self.command(
                IdentifyDw {
                    cns: cns::ACTIVE_NS_LIST,
                    ..Default::default()
                }
                .to_sqe(after),
                DataDir::ToHost(list.as_mut_bytes()),
            )?;
            self.check(cqe, "Identify Active Namespace ID list")?;
            let before = ids.len();
            for id in list.iter() {
                if id <= after || id >= 0xffff_fffe {
                    return Err(Error::Controller {
                        addr: self.opts.addr,
                        why: format!(
                            "returned NSID {id:#x} in an active namespace list after {after:#x}"
                        ),
                    });
                }
                ids.push(id);
                after = id;
            }
            if ids.len() - before < list.ids.len() {
                return Ok(ids);
            }
        }
    }

    /// Get Log Page `lid` for `nsid` into `buf` from byte `offset` of the page (both
    /// multiples of 4), split into commands of at most MDTS bytes. Returns the first
    /// completion that failed, else the last.
    pub fn get_log_page(
        &mut self,
        lid: u8,
        nsid: u32,
        buf: &mut [u8],
        offset: u64,
    ) -> Result<Cqe, Error> {
        if buf.is_empty() || buf.len() % 4 != 0 || offset % 4 != 0 {
            return Err(Error::InvalidArgument(format!(
                "Get Log Page of {} bytes at offset {offset}: both must be multiples of 4, the length non-zero",
                buf.len()
            )));
        }
        let chunk = match self.max_transfer {
            0 => 1 << 20,
            m => (m as usize).min(1 << 20),
        };
        let mut cqe = Cqe::default();
        for (i, part) in buf.chunks_mut(chunk).enumerate() {
            let mut sqe =
                GetLogPageDw::new(lid, part.len() as u32, offset + (i * chunk) as u64).to_sqe();
            sqe.nsid = U32::new(nsid);
            cqe = self.command(sqe, DataDir::ToHost(part))?;
            if !cqe.status().is_success() {
                break;
            }
        }
        Ok(cqe)
    }

    /// The discovery log (on a discovery controller): its header and its entries, read
    /// again from the start if the generation counter moved while reading.
    pub fn discovery_log(&mut self) -> Result<(DiscoveryLogHeader, Vec<DiscoveryLogEntry>), Error> {
        const TRIES: usize = 5;
        for _ in 0..TRIES {
            let mut h = DiscoveryLogHeader::new_zeroed();
            let cqe = self.get_log_page(log_id::DISCOVERY, 0, h.as_mut_bytes(), 0)?;
            self.check(cqe, "Get Log Page (discovery log header)")?;
            let n = h.numrec.get();
            if n > DISCOVERY_RECORDS_MAX {
                return Err(Error::Controller {
                    addr: self.opts.addr,
                    why: format!(
                        "reports {n} discovery log records, more than this host reads ({DISCOVERY_RECORDS_MAX})"
                    ),
                });
            }
            let mut entries = vec![DiscoveryLogEntry::new_zeroed(); n as usize];
            if n > 0 {
                let cqe = self.get_log_page(
                    log_id::DISCOVERY,
                    0,
                    entries.as_mut_slice().as_mut_bytes(),
                    size_of::<DiscoveryLogHeader>() as u64,
                )?;
                self.check(cqe, "Get Log Page (discovery log entries)")?;
            }
            let mut again = [0u8; 16];
            let cqe = self.get_log_page(log_id::DISCOVERY, 0, &mut again, 0)?;
            self.check(cqe, "Get Log Page (discovery log header)")?;
            if again[..8] == h.genctr.as_bytes()[..] {
                return Ok((h, entries));
            }
        }
        Err(Error::Controller {
            addr: self.opts.addr,
            why: format!("changed its discovery log (GENCTR) during each of {TRIES} reads"),
        })
    }

    /// Keep Alive.
    pub fn keep_alive(&mut self) -> Result<(), Error> {
        let cqe = self.command(
            Sqe {
                opc: admin_opc::KEEP_ALIVE,
                ..Default::default()
            },
            DataDir::None,
        )?;
        self.check(cqe, "Keep Alive").map(|_| ())
    }

    /// Enables the Asynchronous Events in `config` (Set Features Asynchronous Event
    /// Configuration; bit 8: Namespace Attribute notices, bit 11: ANA Change) and keeps
    /// one Asynchronous Event Request outstanding from then on.
    pub fn enable_async_events(&mut self, config: u32) -> Result<(), Error> {
        let cqe = self.set_features(feature::ASYNC_EVENT_CONFIG, config)?;
        self.check(cqe, "Set Features Asynchronous Event Configuration")?;
        self.submit_aer()
    }

    fn submit_aer(&mut self) -> Result<(), Error> {
        let sqe = Sqe {
            opc: admin_opc::ASYNC_EVENT_REQUEST,
            ..Default::default()
        };
        let addr = self.opts.addr;
        self.conn
            .submit(sqe, None, XferDir::None, AER_TAG)
            .map_err(|e| Error::Dead {
                addr,
                why: format!("Asynchronous Event Request: {e}"),
            })
    }

    /// The Asynchronous Events reported since the last call (never blocking); each
    /// one's request is sent again. `Err` is a transport failure of the admin queue.
    pub fn async_events(&mut self) -> Result<Vec<AsyncEvent>, Error> {
        let mut got = std::mem::take(&mut self.events);
        self.conn.poll(0, &mut |c: Completion<Vec<u8>>| {
            if c.tag == AER_TAG {
                got.push(c.cqe);
            }
        })?;
        let mut out = Vec::new();
        for cqe in got {
            if !cqe.status().is_success() {
                // Aborted (a reset) or refused: not re-armed.
                continue;
            }
            let dw0 = cqe.dw0.get();
            out.push(AsyncEvent {
                kind: (dw0 & 0x7) as u8,
                info: (dw0 >> 8) as u8,
                log_page: (dw0 >> 16) as u8,
            });
            self.submit_aer()?;
        }
        Ok(out)
    }

    /// The Changed Namespace List (log page 04h), which also clears a Namespace
    /// Attribute Changed event: the NSIDs, or `None` when more than 1024 changed.
    pub fn changed_namespaces(&mut self) -> Result<Option<Vec<u32>>, Error> {
        let mut l = crate::spec::log::ChangedNsList::default();
        let cqe = self.get_log_page(log_id::CHANGED_NS_LIST, 0xffff_ffff, l.as_mut_bytes(), 0)?;
        self.check(cqe, "Get Log Page Changed Namespace List")?;
        Ok((!l.overflowed()).then(|| l.iter().collect()))
    }

    /// Whether the controller reports Asymmetric Namespace Access (CMIC bit 3).
    pub fn reports_ana(&self) -> bool {
        self.identify.cmic & crate::spec::identify::cmic::ANA_REPORTING != 0
    }

    /// The ANA log page (0Ch), which also clears an ANA Change event: the change
    /// count and every group with its state and namespaces. Sized by the controller's
    /// NANAGRPID and MNAN (NN when MNAN is 0), as Linux sizes it.
    pub fn ana_log(&mut self) -> Result<(u64, Vec<crate::spec::log::AnaGroup>), Error> {
        let id = &self.identify;
        let groups = id.nanagrpid.get().min(4096) as usize;
        let nsids = match id.mnan.get() {
            0 => id.nn.get(),
            m => m,
        }
        .min(1 << 16) as usize;
        let mut page = vec![0u8; 16 + groups * 32 + nsids * 4];
        let cqe = self.get_log_page(log_id::ANA, 0xffff_ffff, &mut page, 0)?;
        self.check(cqe, "Get Log Page Asymmetric Namespace Access")?;
        let addr = self.opts.addr;
        crate::spec::log::ana_log_decode(&page).map_err(|why| Error::Controller {
            addr,
            why: format!("sent a malformed ANA log page: {why}"),
        })
    }

    /// Sends Keep Alive if half the keep-alive timeout passed since the last admin
    /// command; says whether it did. Call it from the caller's loop when KATO is on.
    pub fn keep_alive_if_due(&mut self) -> Result<bool, Error> {
        let kato = self.opts.kato_ms;
        if kato == 0 || self.last_command.elapsed() < Duration::from_millis(kato as u64 / 2) {
            return Ok(false);
        }
        self.keep_alive().map(|()| true)
    }

    /// Set Features `fid` with CDW11 `cdw11`.
    pub fn set_features(&mut self, fid: u8, cdw11: u32) -> Result<Cqe, Error> {
        self.command(
            Sqe {
                opc: admin_opc::SET_FEATURES,
                cdw10: U32::new(fid as u32),
                cdw11: U32::new(cdw11),
                ..Default::default()
            },
            DataDir::None,
        )
    }

    /// Get Features `fid` (current value) with CDW11 `cdw11`.
    pub fn get_features(&mut self, fid: u8, cdw11: u32) -> Result<Cqe, Error> {
        self.command(
            Sqe {
                opc: admin_opc::GET_FEATURES,
                cdw10: U32::new(fid as u32),
                cdw11: U32::new(cdw11),
                ..Default::default()
            },
            DataDir::None,
        )
    }

    fn property_cmd(ofst: u32, fc: u8, value: u64) -> Sqe {
        let mut f = FabricsCmd {
            opc: OPC_FABRICS,
            fctype: fc,
            ..Default::default()
        };
        let p = PropertyFields {
            attrib: if property_size(ofst) == 8 { 1 } else { 0 },
            ofst: U32::new(ofst),
            value: zerocopy::little_endian::U64::new(value),
            ..Default::default()
        };
        f.specific.copy_from_slice(p.as_bytes());
        f.to_sqe()
    }

    /// Property Get of the register at `ofst` (see [`offset`]); 8-byte properties (CAP,
    /// ASQ, ACQ, BPMBL, CMBMSC) are read whole. A failed status is an error.
    pub fn property_get(&mut self, ofst: u32) -> Result<u64, Error> {
        self.property_get_for(ofst, &format!("Property Get {ofst:#x}"))
    }

    fn property_get_for(&mut self, ofst: u32, what: &str) -> Result<u64, Error> {
        let cqe = self.command(
            Self::property_cmd(ofst, fctype::PROPERTY_GET, 0),
            DataDir::None,
        )?;
        let cqe = self.check(cqe, what)?;
        let lo = cqe.dw0.get() as u64;
        Ok(if property_size(ofst) == 8 {
            lo | ((cqe.dw1.get() as u64) << 32)
        } else {
            lo
        })
    }

    /// Property Set of the register at `ofst` to `value`. A failed status is an error.
    pub fn property_set(&mut self, ofst: u32, value: u64) -> Result<(), Error> {
        self.property_set_for(ofst, value, &format!("Property Set {ofst:#x}"))
    }

    fn property_set_for(&mut self, ofst: u32, value: u64, what: &str) -> Result<(), Error> {
        let cqe = self.command(
            Self::property_cmd(ofst, fctype::PROPERTY_SET, value),
            DataDir::None,
        )?;
        self.check(cqe, what).map(|_| ())
    }

    /// Creates I/O queue pair `qid` (1 to [`Self::io_queues`]) with `depth` entries (0
    /// for `FabricOptions::io_queue_size`; at most CAP.MQES + 1) on a new connection:
    /// ICReq, then Connect with this controller's ID. `depth - 1` commands can be
    /// outstanding on it.
    pub fn create_io_qpair<B: DataBuf>(
        &mut self,
        qid: u16,
        depth: u16,
    ) -> Result<FabricQpair<B>, Error> {
        let depth = if depth == 0 {
            self.opts.io_queue_size
        } else {
            depth
        };
        if qid == 0 || qid > self.io_queues {
            return Err(Error::InvalidArgument(format!(
                "I/O queue ID {qid}: the controller granted queues 1..={}",
                self.io_queues
            )));
        }
        let mqes = self.cap.mqes() as u32 + 1;
        if depth < 2 || depth as u32 > mqes {
            return Err(Error::InvalidArgument(format!(
                "I/O queue depth {depth}: it must be 2..={mqes} (CAP.MQES + 1)"
            )));
        }
        FabricQpair::connect(
            &self.opts,
            qid,
            depth,
            self.cntlid,
            self.io_in_capsule,
            self.max_transfer,
        )
    }

    /// Aborts command `cid` of queue `sqid` (Abort, base 5.1); true when the controller
    /// says it aborted it (the command then completes as Command Abort Requested), false
    /// when it let it run.
    pub fn abort(&mut self, sqid: u16, cid: u16) -> Result<bool, Error> {
        let cqe = self.command(
            Sqe {
                opc: admin_opc::ABORT,
                cdw10: U32::new((cid as u32) << 16 | sqid as u32),
                ..Default::default()
            },
            DataDir::None,
        )?;
        let cqe = self.check(cqe, "Abort")?;
        Ok(cqe.dw0.get() & crate::spec::admin::ABORT_DW0_NOT_ABORTED == 0)
    }

    /// Shuts the controller down (CC.SHN = normal, then CSTS.SHST = complete) and closes
    /// the connection. Drop the I/O queue pairs first.
    pub fn shutdown(mut self) -> Result<(), Error> {
        let cc = self.cc.with_shn(0b01);
        self.property_set_for(offset::CC, u32::from(cc) as u64, "Property Set CC.SHN")?;
        let rtd3e = Duration::from_micros(self.identify.rtd3e.get() as u64);
        let limit = rtd3e.max(self.opts.timeout);
        self.wait_csts(limit, "finish shutting down (CSTS.SHST)", |c| {
            c.shst() == 0b10
        })?;
        self.conn.close();
        Ok(())
    }
}

/// An NVMe/TCP I/O queue pair: a non-blocking connection of its own. Submissions queue
/// PDUs; [`FabricQpair::poll`] sends them (all submitted since the last poll in one go) and
/// does all other progress.
/// Buffers belong to the queue pair from submission to completion. Dropping it closes
/// the connection and drops the buffers of commands still outstanding; take them back
/// first with [`FabricQpair::drain_failed`] if they matter.
pub struct FabricQpair<B: DataBuf> {
    conn: Link<B>,
    depth: u16,
    /// Per slot, the command [`FabricQpair::overdue`] last saw there: (CID, first seen,
    /// reported).
    seen: Vec<Option<(u16, Instant, bool)>>,
}

impl<B: DataBuf> fmt::Debug for FabricQpair<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FabricQpair")
            .field("addr", &self.conn.addr())
            .field("qid", &self.conn.qid())
            .field("depth", &self.depth)
            .field("outstanding", &self.conn.outstanding())
            .field("dead", &self.conn.dead())
            .finish()
    }
}

impl<B: DataBuf> FabricQpair<B> {
    /// Opens queue `qid` of controller `cntlid` with `depth` entries (the transport's
    /// handshake, then Connect); commands move at most `max_transfer` bytes (0: no
    /// limit; RDMA needs one).
    pub(crate) fn connect(
        opts: &FabricOptions,
        qid: u16,
        depth: u16,
        cntlid: u16,
        in_capsule: u32,
        max_transfer: u32,
    ) -> Result<FabricQpair<B>, Error> {
        let mut conn = Link::open(opts, qid, depth as usize - 1, in_capsule, max_transfer)?;
        conn.fabric_connect(opts, depth - 1, 0, cntlid)?;
        Ok(FabricQpair {
            conn,
            depth,
            seen: Vec::new(),
        })
    }

    /// Submits a command: the queue pair assigns its CID and SGL. The data length is
    /// `buf`'s length; `dir` says which way it moves. On refusal the buffer comes back.
    pub fn submit(
        &mut self,
        sqe: Sqe,
        buf: Option<B>,
        dir: XferDir,
        tag: u64,
    ) -> Result<(), SubmitError<B>> {
        self.conn.submit(sqe, buf, dir, tag)
    }

    fn rw(
        &mut self,
        opc: u8,
        nsid: u32,
        slba: u64,
        nlb: u32,
        buf: B,
        tag: u64,
    ) -> Result<(), SubmitError<B>> {
        let dir = if opc == nvm_opc::READ {
            XferDir::CtrlToHost
        } else {
            XferDir::HostToCtrl
        };
        if !(1..=65536).contains(&nlb) {
            return Err(SubmitError::Invalid {
                why: format!("{nlb} blocks: one command moves 1 to 65536"),
                buf: Some(buf),
            });
        }
        self.submit(Sqe::nvm_rw(opc, nsid, slba, nlb), Some(buf), dir, tag)
    }

    /// Reads `nlb` blocks (1-based count) at `slba` of `nsid` into `buf`, whose length
    /// must be `nlb` times the namespace's block size.
    pub fn read(
        &mut self,
        nsid: u32,
        slba: u64,
        nlb: u32,
        buf: B,
        tag: u64,
    ) -> Result<(), SubmitError<B>> {
        self.rw(nvm_opc::READ, nsid, slba, nlb, buf, tag)
    }

    /// Writes `buf` (`nlb` blocks, 1-based count) at `slba` of `nsid`.
    pub fn write(
        &mut self,
        nsid: u32,
        slba: u64,
        nlb: u32,
        buf: B,
        tag: u64,
    ) -> Result<(), SubmitError<B>> {
        self.rw(nvm_opc::WRITE, nsid, slba, nlb, buf, tag)
    }

    /// Flushes `nsid`'s volatile write cache.
    pub fn flush(&mut self, nsid: u32, tag: u64) -> Result<(), SubmitError<B>> {
        let sqe = Sqe {
            opc: nvm_opc::FLUSH,
            nsid: U32::new(nsid),
            ..Default::default()
        };
        self.submit(sqe, None, XferDir::None, tag)
    }

    /// Sends pending bytes, reads what the socket has (never blocking) and calls `f`
    /// for each completed command, at most `max` of them (0: no limit). Returns how
    /// many completed. `Err` is a fatal transport error (C2HTermReq, digest or protocol
    /// error, the connection closed): the queue pair is dead from then on, and
    /// [`Self::drain_failed`] hands back the outstanding buffers. A call that completed
    /// commands before meeting such an error returns `Ok` with their count; the next
    /// call returns the error.
    pub fn poll(&mut self, max: usize, mut f: impl FnMut(Completion<B>)) -> Result<usize, Error> {
        self.conn.poll(max, &mut f)
    }

    /// Completes every outstanding command with [`super::STATUS_ABORTED_BY_HOST`] through `f`,
    /// buffers included, and returns how many there were. Meant for a queue pair that
    /// failed; on a working one it closes the connection first.
    pub fn drain_failed(&mut self, mut f: impl FnMut(Completion<B>)) -> usize {
        self.conn.drain(&mut f)
    }

    /// Polls, sleeping in poll(2) on the socket between rounds, until no command is
    /// outstanding or `timeout` passes (then `outstanding()` is not 0). Returns how many
    /// completed; errors are those of [`Self::poll`].
    pub fn wait(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(Completion<B>),
    ) -> Result<usize, Error> {
        let deadline = Instant::now() + timeout;
        let mut n = 0;
        loop {
            n += self.conn.poll(0, &mut f)?;
            if self.conn.outstanding() == 0 || Instant::now() >= deadline {
                return Ok(n);
            }
            self.conn.wait_io(deadline)?;
        }
    }

    /// Commands submitted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.conn.outstanding()
    }

    /// Calls `f(cid, tag)` once for each command outstanding for `timeout` or longer, as
    /// this call sees them: a command is timed from the first call that finds it, so
    /// call it more often than the precision wanted (every 10 ms, say). Nothing is
    /// timed on the I/O path. Abort a reported command with [`AdminQueue::abort`].
    pub fn overdue(&mut self, timeout: Duration, mut f: impl FnMut(u16, u64)) {
        let now = Instant::now();
        let seen = &mut self.seen;
        self.conn.for_each_busy(|i, cid, tag| {
            if seen.len() <= i {
                seen.resize(i + 1, None);
            }
            match &mut seen[i] {
                Some((c, since, reported)) if *c == cid => {
                    if !*reported && now.duration_since(*since) >= timeout {
                        *reported = true;
                        f(cid, tag);
                    }
                }
                e => *e = Some((cid, now, false)),
            }
        });
    }

    /// The queue's entries; `depth - 1` commands can be outstanding.
    pub fn depth(&self) -> u16 {
        self.depth
    }

    /// The queue ID.
    pub fn qid(&self) -> u16 {
        self.conn.qid()
    }

    /// Whether a fatal error ended the queue pair.
    pub fn is_dead(&self) -> bool {
        self.conn.dead().is_some()
    }

    /// The file descriptor to wait on with poll(2) or epoll next to other work: the
    /// socket (TCP) or the completion channel (RDMA, readable after a completion only
    /// once armed, which [`Self::wait`] does). Readable means [`Self::poll`] has something
    /// to do; so does writable when [`Self::wants_write`] (TCP).
    pub fn as_raw_fd(&self) -> RawFd {
        self.conn.raw_fd()
    }

    /// Whether bytes wait to be sent (TCP: the socket's buffer was full).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// The transport it runs on.
    pub fn transport(&self) -> Transport {
        match self.conn {
            Link::Tcp(_) => Transport::Tcp,
            Link::Rdma(_) => Transport::Rdma,
        }
    }

    #[cfg(test)]
    pub(crate) fn tcp_mut(&mut self) -> &mut super::tcp::Conn<B> {
        match &mut self.conn {
            Link::Tcp(c) => c,
            Link::Rdma(_) => panic!("not a TCP queue pair"),
        }
    }
}

impl<B: DataBuf> AsRawFd for FabricQpair<B> {
    fn as_raw_fd(&self) -> RawFd {
        self.conn.raw_fd()
    }
}
