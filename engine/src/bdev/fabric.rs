//! The nvme bdev module over NVMe-oF: namespaces of remote controllers reached over
//! NVMe/TCP or NVMe/RDMA as bdevs `<name>n<nsid>` (SPDK's `bdev_nvme` with `trtype` TCP
//! or RDMA), on the same host code as pollux-perf ([`pollux_nvme::fabrics`]).
//!
//! A controller name has one or more paths (SPDK's `multipath`): each path is one
//! controller of the same subsystem at its own address. An OS thread per controller
//! name (not a reactor: connecting blocks) owns the paths' admin queues: it keeps them
//! alive, reconnects a lost path (`reconnect_delay_sec` apart, giving up after
//! `ctrlr_loss_timeout_sec`), creates the I/O queue pairs the reactors ask for, and
//! sends the Aborts a command timeout asks for. Each reactor thread has one queue pair
//! per path, shared by the namespaces; it picks a path per I/O (active-passive: the
//! first usable path; active-active: round robin), and an I/O whose path fails is
//! retried on another path, or waits for one until `fast_io_fail_timeout_sec` has
//! passed since the path was lost, then fails with Host Pathing Error. Nothing on the
//! I/O path takes a lock: the path table is re-read only when its version changes.
//!
//! When the target reports Asymmetric Namespace Access, the path thread reads each
//! path's ANA log page on connect and on every ANA Change event, and a namespace's I/O
//! goes to its optimized paths, to non-optimized ones when none is optimized, never to
//! an inaccessible one (as SPDK's bdev_nvme). An I/O failed with an ANA status goes
//! again elsewhere at once, and the path's log page is read again.

use super::{BackendChannel, Bdev, BdevBackend, BdevIo, BdevParams, IoKind, IoStatus};
use crate::Error;
use crate::dma::{gather, scatter};
use crate::thread::{IoChannel, IoDevice, Nanos, PollStatus, Thread};
use crossbeam::channel::{Receiver, Sender, TryRecvError};
use pollux_nvme::fabrics::{
    AdminQueue, Completion, DataBuf, FabricOptions, FabricQpair, STATUS_ABORTED_BY_HOST,
    SubmitError, XferDir,
};
use pollux_nvme::spec::admin::{aec, nvm_opc};
use pollux_nvme::spec::cmd::{Sqe, Status};
use pollux_nvme::spec::log::ana_state;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zerocopy::little_endian::U32;

/// SPDK's I/O error resiliency options (`bdev_nvme_attach_controller`,
/// `bdev_nvme_set_options`), in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Resiliency {
    /// How long a lost path is reconnected before it is given up: -1 forever, 0 one
    /// immediate attempt.
    pub ctrlr_loss_timeout_sec: i64,
    /// The pause between reconnect attempts.
    pub reconnect_delay_sec: u64,
    /// How long I/O waits for a lost path before failing (0: until it is given up).
    pub fast_io_fail_timeout_sec: u64,
}

impl Resiliency {
    /// SPDK's rules for the three values (`bdev_nvme_check_io_error_resiliency_params`).
    pub fn check(&self) -> Result<(), String> {
        let (loss, delay, fast) = (
            self.ctrlr_loss_timeout_sec,
            self.reconnect_delay_sec,
            self.fast_io_fail_timeout_sec,
        );
        match loss {
            l if l < -1 => Err("ctrlr_loss_timeout_sec can't be less than -1".into()),
            0 if delay != 0 || fast != 0 => Err(
                "reconnect_delay_sec and fast_io_fail_timeout_sec must be 0 if ctrlr_loss_timeout_sec is 0"
                    .into(),
            ),
            0 => Ok(()),
            _ if delay == 0 => {
                Err("reconnect_delay_sec can't be 0 if ctrlr_loss_timeout_sec is not 0".into())
            }
            l if l > 0 && delay > l as u64 => {
                Err("reconnect_delay_sec can't be more than ctrlr_loss_timeout_sec".into())
            }
            _ if fast != 0 && fast < delay => {
                Err("reconnect_delay_sec can't be more than fast_io_fail_timeout_sec".into())
            }
            l if l > 0 && fast > l as u64 => {
                Err("fast_io_fail_timeout_sec can't be more than ctrlr_loss_timeout_sec".into())
            }
            _ => Ok(()),
        }
    }
}

/// What a second attach under the same name does (SPDK's `multipath`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multipath {
    /// It is refused: the name exists.
    Disable,
    /// It adds an alternate path, used when the active one fails.
    Failover,
    /// It adds a path that the policy may use at any time.
    Multipath,
}

/// How I/O picks among usable paths (`bdev_nvme_set_multipath_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The first usable path in attach order; the others wait as standbys.
    ActivePassive,
    /// Every usable path in turn, switching every `rr_min_io` I/Os.
    ActiveActive {
        /// I/Os sent on one path before the next.
        rr_min_io: u32,
    },
    /// Every usable path, each I/O on the one with the fewest commands outstanding from
    /// this thread (active-active with SPDK's `queue_depth` selector).
    QueueDepth,
}

/// `policy`'s value for the queue-depth selector (0 is active-passive, others
/// `rr_min_io`).
const POLICY_QUEUE_DEPTH: u32 = u32::MAX;

/// What a command that outlives its timeout causes (`action_on_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutAction {
    /// A warning only.
    None,
    /// Abort (admin command) of that command.
    Abort,
    /// The path is reset (disconnected and reconnected); its I/O goes elsewhere.
    Reset,
}

/// Command timeouts (`bdev_nvme_set_options timeout_us timeout_admin_us
/// action_on_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// I/O commands; `None`: untimed.
    pub io: Option<Duration>,
    /// Admin commands (the host's own limit for each).
    pub admin: Option<Duration>,
    /// What an I/O timeout does.
    pub action: TimeoutAction,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            io: None,
            admin: None,
            action: TimeoutAction::None,
        }
    }
}

/// Parameters of `bdev_nvme_attach_controller` for a fabrics controller.
#[derive(Clone)]
pub struct FabricAttachOpts {
    /// The controller's name; its bdevs are `<name>n<nsid>`.
    pub name: String,
    /// The path: address, subsystem, host identity, digests, keep-alive.
    pub target: FabricOptions,
    /// What attaching under an existing name does.
    pub multipath: Multipath,
    /// Reconnect policy.
    pub resiliency: Resiliency,
    /// Command timeouts.
    pub timeouts: Timeouts,
    /// The engine whose bdev registry gains and loses bdevs when the controller
    /// reports namespaces added or removed (an Asynchronous Event); `None`: only logged.
    pub engine: Option<crate::reactor::EngineHandle>,
}

impl fmt::Debug for FabricAttachOpts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FabricAttachOpts")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("multipath", &self.multipath)
            .field("resiliency", &self.resiliency)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// A path's state, with SPDK's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PathState {
    /// Connected.
    Enabled = 0,
    /// Lost, reconnecting now.
    Resetting = 1,
    /// Lost, waiting `reconnect_delay_sec` for the next attempt.
    ReconnectDelayed = 2,
    /// Given up after `ctrlr_loss_timeout_sec`: its I/O fails.
    Failed = 3,
}

impl PathState {
    fn from_u8(v: u8) -> PathState {
        match v {
            0 => PathState::Enabled,
            1 => PathState::Resetting,
            2 => PathState::ReconnectDelayed,
            _ => PathState::Failed,
        }
    }

    /// SPDK's name (`bdev_nvme_get_controllers`' `state`).
    pub fn name(self) -> &'static str {
        match self {
            PathState::Enabled => "enabled",
            PathState::Resetting => "resetting",
            PathState::ReconnectDelayed => "reconnect_is_delayed",
            PathState::Failed => "failed",
        }
    }
}

/// One path: a controller of the subsystem at one address.
pub struct FabricPath {
    id: u64,
    target: FabricOptions,
    state: AtomicU8,
    /// Changes whenever the path is lost or reconnected: queue pairs of an older epoch
    /// are stale.
    epoch: AtomicU64,
    cntlid: AtomicU16,
    max_transfer: AtomicU32,
    /// I/O waiting for this path fails (fast_io_fail_timeout_sec passed, or given up).
    io_fail: AtomicBool,
    reconnects: AtomicU64,
    losses: AtomicU64,
    timeouts: AtomicU64,
    aborts: AtomicU64,
    /// ANA state of each namespace through this path, by NSID (empty when the target
    /// does not report ANA: every namespace is optimized).
    ana: Mutex<Vec<(u32, u8)>>,
}

impl fmt::Debug for FabricPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FabricPath")
            .field("addr", &self.target.addr)
            .field("state", &self.state())
            .finish()
    }
}

impl FabricPath {
    /// Its state now.
    pub fn state(&self) -> PathState {
        PathState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// How it is reached.
    pub fn target(&self) -> &FabricOptions {
        &self.target
    }

    /// The controller ID of its current (or last) connection.
    pub fn cntlid(&self) -> u16 {
        self.cntlid.load(Ordering::Relaxed)
    }

    /// Successful reconnects.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Times it was lost.
    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    /// Commands that outlived the I/O timeout, and Aborts sent for them.
    pub fn timeouts(&self) -> (u64, u64) {
        (
            self.timeouts.load(Ordering::Relaxed),
            self.aborts.load(Ordering::Relaxed),
        )
    }

    fn set_state(&self, s: PathState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// The ANA state of each namespace through this path (empty: the target does not
    /// report ANA).
    pub fn ana_states(&self) -> Vec<(u32, u8)> {
        self.ana.lock().unwrap().clone()
    }
}

/// The ANA state of namespace `nsid` in a path's list (optimized when the target does
/// not report ANA, or does not list the namespace).
fn ana_of(list: &[(u32, u8)], nsid: u32) -> u8 {
    list.iter()
        .find(|(n, _)| *n == nsid)
        .map_or(ana_state::OPTIMIZED, |(_, s)| *s)
}

/// The ANA state of every namespace behind `admin`, by NSID (empty when its controller
/// does not report ANA).
fn read_ana(admin: &mut AdminQueue) -> Result<Vec<(u32, u8)>, pollux_nvme::fabrics::Error> {
    if !admin.reports_ana() {
        return Ok(Vec::new());
    }
    let (_, groups) = admin.ana_log()?;
    let mut out: Vec<(u32, u8)> = groups
        .iter()
        .flat_map(|g| g.nsids.iter().map(move |&n| (n, g.state)))
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// A namespace the bdevs stand for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NsInfo {
    nsid: u32,
    block_size: u32,
    num_blocks: u64,
    nguid: [u8; 16],
}

/// Requests to a controller's path thread.
enum Req {
    /// A queue pair on `path` for a reactor thread, while the path is at `epoch`.
    Qpair {
        path: u64,
        epoch: u64,
        reply: Sender<Result<SendQpair, String>>,
    },
    /// A reactor's queue pair on `path` failed: the path is lost.
    Down { path: u64, epoch: u64, why: String },
    /// A command outlived the timeout.
    Timeout {
        path: u64,
        epoch: u64,
        sqid: u16,
        cid: u16,
    },
    /// A reactor closed its queue pair `qid`: the ID may be used again.
    Release { path: u64, epoch: u64, qid: u16 },
    /// A command on `path` failed with an ANA status: read its ANA log page again.
    AnaCheck { path: u64 },
    /// `bdev_nvme_reset_controller`: every connected path reconnects.
    Reset,
    /// A new path, connected.
    Add(Arc<FabricPath>, Box<AdminQueue>),
    /// Remove a path (its admin queue shuts down).
    Remove(u64),
}

/// A new queue pair on its way from the path thread to a reactor.
struct SendQpair(FabricQpair<RemoteBuf>);

// SAFETY: a queue pair that has just connected holds no buffers (the only non-`Send`
// part of a `FabricQpair<RemoteBuf>` is the raw pointers of buffers it carries); it is
// moved to the reactor thread once, never shared.
unsafe impl Send for SendQpair {}

/// A named controller and its paths (SPDK's `nvme_bdev_ctrlr`).
pub struct FabricCtrlr {
    name: String,
    subnqn: String,
    paths: Mutex<Vec<Arc<FabricPath>>>,
    /// Bumped whenever `paths` changes; channels re-read it then.
    version: AtomicU64,
    /// 0: active-passive; n > 0: active-active switching every n I/Os.
    policy: AtomicU32,
    multipath: Multipath,
    resiliency: Resiliency,
    timeouts: Timeouts,
    namespaces: Mutex<Vec<NsInfo>>,
    oncs: u16,
    model: String,
    serial: String,
    bdevs: Mutex<Vec<String>>,
    tx: Sender<Req>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    retried: AtomicU64,
    path_failed: AtomicU64,
    next_path: AtomicU64,
}

impl fmt::Debug for FabricCtrlr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FabricCtrlr")
            .field("name", &self.name)
            .field("subnqn", &self.subnqn)
            .finish()
    }
}

fn controllers() -> &'static Mutex<BTreeMap<String, Arc<FabricCtrlr>>> {
    static C: std::sync::OnceLock<Mutex<BTreeMap<String, Arc<FabricCtrlr>>>> =
        std::sync::OnceLock::new();
    C.get_or_init(Default::default)
}

impl FabricCtrlr {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The subsystem NQN.
    pub fn subnqn(&self) -> &str {
        &self.subnqn
    }

    /// Its paths, in attach order.
    pub fn paths(&self) -> Vec<Arc<FabricPath>> {
        self.paths.lock().unwrap().clone()
    }

    /// Its bdevs' names.
    pub fn bdev_names(&self) -> Vec<String> {
        self.bdevs.lock().unwrap().clone()
    }

    /// The multipath mode it was attached with.
    pub fn multipath(&self) -> Multipath {
        self.multipath
    }

    /// Its reconnect policy.
    pub fn resiliency(&self) -> Resiliency {
        self.resiliency
    }

    /// The path policy.
    pub fn policy(&self) -> Policy {
        match self.policy.load(Ordering::Relaxed) {
            0 => Policy::ActivePassive,
            POLICY_QUEUE_DEPTH => Policy::QueueDepth,
            n => Policy::ActiveActive { rr_min_io: n },
        }
    }

    /// Sets the path policy; reactors follow on their next I/O.
    pub fn set_policy(&self, p: Policy) {
        let v = match p {
            Policy::ActivePassive => 0,
            Policy::ActiveActive { rr_min_io } => rr_min_io.clamp(1, POLICY_QUEUE_DEPTH - 1),
            Policy::QueueDepth => POLICY_QUEUE_DEPTH,
        };
        self.policy.store(v, Ordering::Relaxed);
    }

    /// Model and serial number (of the first path's controller).
    pub fn model_serial(&self) -> (&str, &str) {
        (&self.model, &self.serial)
    }

    /// I/Os retried on another path (or the same one, reconnected) after a path
    /// failed under them, and I/Os failed because no path was left.
    pub fn failover_counts(&self) -> (u64, u64) {
        (
            self.retried.load(Ordering::Relaxed),
            self.path_failed.load(Ordering::Relaxed),
        )
    }

    /// Resets every connected path (disconnect, then reconnect at once), as
    /// `bdev_nvme_reset_controller`; I/O moves to other paths or waits meanwhile.
    pub fn reset(&self) {
        let _ = self.tx.send(Req::Reset);
    }

    /// The attached fabrics controller called `name`.
    pub fn get(name: &str) -> Option<Arc<FabricCtrlr>> {
        controllers().lock().unwrap().get(name).cloned()
    }

    /// Every attached fabrics controller.
    pub fn list() -> Vec<Arc<FabricCtrlr>> {
        controllers().lock().unwrap().values().cloned().collect()
    }

    /// The controller whose bdev is `bdev`.
    pub fn of_bdev(bdev: &str) -> Option<Arc<FabricCtrlr>> {
        FabricCtrlr::list()
            .into_iter()
            .find(|c| c.bdevs.lock().unwrap().iter().any(|b| b == bdev))
    }
}

/// The active namespaces of the controller behind `admin`.
fn namespaces(admin: &mut AdminQueue) -> Result<Vec<NsInfo>, Error> {
    let e = |e: pollux_nvme::fabrics::Error| Error::Nvme(e.to_string());
    let mut out = Vec::new();
    for nsid in admin.active_namespaces().map_err(e)? {
        let ns = admin.identify_namespace(nsid).map_err(e)?;
        if ns.nsze.get() == 0 {
            continue;
        }
        out.push(NsInfo {
            nsid,
            block_size: ns.block_size() as u32,
            num_blocks: ns.nsze.get(),
            nguid: ns.nguid,
        });
    }
    Ok(out)
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_owned()
}

fn new_path(
    id: u64,
    target: FabricOptions,
    admin: &AdminQueue,
    ana: Vec<(u32, u8)>,
) -> Arc<FabricPath> {
    Arc::new(FabricPath {
        id,
        target,
        state: AtomicU8::new(PathState::Enabled as u8),
        epoch: AtomicU64::new(1),
        cntlid: AtomicU16::new(admin.cntlid()),
        max_transfer: AtomicU32::new(admin.max_transfer()),
        io_fail: AtomicBool::new(false),
        reconnects: AtomicU64::new(0),
        losses: AtomicU64::new(0),
        timeouts: AtomicU64::new(0),
        aborts: AtomicU64::new(0),
        ana: Mutex::new(ana),
    })
}

/// Attaches a path. A new name connects, creates a bdev per active namespace and
/// returns them (the caller registers them); an existing name with `multipath`
/// failover or multipath gains this path (its namespaces must be the same ones) and
/// returns no new bdev.
pub fn attach(opts: FabricAttachOpts) -> Result<(Arc<FabricCtrlr>, Vec<Arc<Bdev>>), Error> {
    opts.resiliency.check().map_err(|why| Error::InvalidParam {
        what: "ctrlr_loss_timeout_sec, reconnect_delay_sec, fast_io_fail_timeout_sec".into(),
        why,
    })?;
    let mut target = opts.target.clone();
    if let Some(t) = opts.timeouts.admin {
        target.timeout = t;
    }
    if let Some(c) = FabricCtrlr::get(&opts.name) {
        if opts.multipath == Multipath::Disable {
            return Err(Error::Exists {
                what: format!(
                    "NVMe controller {} (multipath failover or multipath adds a path to it)",
                    opts.name
                ),
            });
        }
        if c.subnqn != target.subnqn {
            return Err(Error::InvalidParam {
                what: "subnqn".into(),
                why: format!(
                    "{} is a path to {}, not {}",
                    opts.name, c.subnqn, target.subnqn
                ),
            });
        }
        if c.paths()
            .iter()
            .any(|p| p.target.addr == target.addr && p.target.transport == target.transport)
        {
            return Err(Error::Exists {
                what: format!("a path of {} at {}", opts.name, target.addr),
            });
        }
        let mut admin = AdminQueue::connect(&target)
            .map_err(|e| Error::Nvme(format!("{}: {e}", target.addr)))?;
        let ns = namespaces(&mut admin)?;
        if !same_namespaces(&c.namespaces.lock().unwrap(), &ns) {
            let _ = admin.shutdown();
            return Err(Error::InvalidParam {
                what: "traddr".into(),
                why: format!(
                    "the controller at {} has other namespaces than {}'s paths (NSIDs, sizes or NGUIDs differ)",
                    target.addr, opts.name
                ),
            });
        }
        let ana = read_ana(&mut admin).map_err(|e| Error::Nvme(format!("{}: {e}", target.addr)))?;
        let p = new_path(
            c.next_path.fetch_add(1, Ordering::Relaxed),
            target,
            &admin,
            ana,
        );
        c.paths.lock().unwrap().push(p.clone());
        c.version.fetch_add(1, Ordering::Release);
        let _ = c.tx.send(Req::Add(p, Box::new(admin)));
        tracing::info!(ctrlr = %c.name, addr = %opts.target.addr, paths = c.paths().len(), "path added");
        return Ok((c, Vec::new()));
    }
    let mut admin =
        AdminQueue::connect(&target).map_err(|e| Error::Nvme(format!("{}: {e}", target.addr)))?;
    let ns = namespaces(&mut admin)?;
    let ana = read_ana(&mut admin).map_err(|e| Error::Nvme(format!("{}: {e}", target.addr)))?;
    let id = admin.identify();
    let (oncs, model, serial) = (id.oncs.get(), ascii(&id.mn), ascii(&id.sn));
    let (tx, rx) = crossbeam::channel::unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let path = new_path(0, target.clone(), &admin, ana);
    let c = Arc::new(FabricCtrlr {
        name: opts.name.clone(),
        subnqn: target.subnqn.clone(),
        paths: Mutex::new(vec![path.clone()]),
        version: AtomicU64::new(1),
        policy: AtomicU32::new(0),
        multipath: opts.multipath,
        resiliency: opts.resiliency,
        timeouts: opts.timeouts,
        namespaces: Mutex::new(ns.clone()),
        oncs,
        model,
        serial,
        bdevs: Mutex::new(Vec::new()),
        tx,
        stop: stop.clone(),
        thread: Mutex::new(None),
        retried: AtomicU64::new(0),
        path_failed: AtomicU64::new(0),
        next_path: AtomicU64::new(1),
    });
    let mut bdevs = Vec::new();
    for n in &ns {
        bdevs.push(ns_bdev(&c, n)?);
    }
    *c.bdevs.lock().unwrap() = bdevs.iter().map(|b| b.name().to_owned()).collect();
    let mut pt = PathThread {
        name: opts.name.clone(),
        resiliency: opts.resiliency,
        timeouts: opts.timeouts,
        ctrl: Arc::downgrade(&c),
        engine: opts.engine.clone(),
        paths: vec![PathSlot::new(path, admin)],
    };
    let h = std::thread::Builder::new()
        .name(format!("nvmf-paths-{}", opts.name))
        .spawn(move || pt.run(&rx, &stop))
        .map_err(|e| Error::Io {
            what: "spawn the NVMe-oF path thread".into(),
            source: e,
        })?;
    *c.thread.lock().unwrap() = Some(h);
    controllers()
        .lock()
        .unwrap()
        .insert(opts.name.clone(), c.clone());
    Ok((c, bdevs))
}

/// The bdev `<name>n<nsid>` of namespace `n` of controller `c`.
fn ns_bdev(c: &Arc<FabricCtrlr>, n: &NsInfo) -> Result<Arc<Bdev>, Error> {
    Bdev::new(
        BdevParams {
            name: format!("{}n{}", c.name, n.nsid),
            uuid: (n.nguid != [0; 16]).then(|| uuid::Uuid::from_bytes(n.nguid)),
            block_size: n.block_size,
            num_blocks: n.num_blocks,
            product_name: "NVMe disk",
        },
        Box::new(FabricBackend {
            ctrl: c.clone(),
            nsid: n.nsid,
            shift: n.block_size.trailing_zeros(),
        }),
    )
}

/// Whether two paths show the same namespaces: NSIDs and sizes, and NGUIDs where both
/// report one.
fn same_namespaces(a: &[NsInfo], b: &[NsInfo]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.nsid == y.nsid
                && x.block_size == y.block_size
                && x.num_blocks == y.num_blocks
                && (x.nguid == [0; 16] || y.nguid == [0; 16] || x.nguid == y.nguid)
        })
}

/// Detaches controller `name`: every path, or only the one at `addr`. Returns the bdev
/// names for the caller to unregister (none when paths remain).
pub fn detach(name: &str, addr: Option<std::net::SocketAddr>) -> Result<Vec<String>, Error> {
    let c = FabricCtrlr::get(name).ok_or_else(|| Error::NotFound {
        what: format!("NVMe controller {name}"),
    })?;
    if let Some(a) = addr {
        let mut paths = c.paths.lock().unwrap();
        let i = paths
            .iter()
            .position(|p| p.target.addr == a)
            .ok_or_else(|| Error::NotFound {
                what: format!("a path of {name} at {a}"),
            })?;
        if paths.len() > 1 {
            let p = paths.remove(i);
            drop(paths);
            c.version.fetch_add(1, Ordering::Release);
            let _ = c.tx.send(Req::Remove(p.id));
            return Ok(Vec::new());
        }
    }
    controllers().lock().unwrap().remove(name);
    c.stop.store(true, Ordering::Relaxed);
    if let Some(h) = c.thread.lock().unwrap().take() {
        let _ = h.join();
    }
    Ok(c.bdev_names())
}

/// Detaches every fabrics controller, for a clean exit.
pub fn shutdown_all() {
    let names: Vec<String> = controllers().lock().unwrap().keys().cloned().collect();
    for n in names {
        let _ = detach(&n, None);
    }
}

/// A path as its thread keeps it.
struct PathSlot {
    path: Arc<FabricPath>,
    admin: Option<Box<AdminQueue>>,
    /// I/O queue IDs free for the current connection.
    free_qids: Vec<u16>,
    lost_at: Option<Instant>,
    next_try: Instant,
}

impl PathSlot {
    fn new(path: Arc<FabricPath>, admin: AdminQueue) -> PathSlot {
        let mut s = PathSlot {
            path,
            admin: None,
            free_qids: Vec::new(),
            lost_at: None,
            next_try: Instant::now(),
        };
        s.connected(Box::new(admin));
        s
    }

    fn connected(&mut self, mut admin: Box<AdminQueue>) {
        // Namespace Attribute notices (namespaces added, removed or resized) and ANA
        // Change notices.
        let mut aec = aec::NS_ATTRIBUTE_NOTICES;
        if admin.reports_ana() {
            aec |= aec::ANA_CHANGE_NOTICES;
        }
        if let Err(e) = admin.enable_async_events(aec) {
            tracing::debug!(addr = %self.path.target.addr, error = %e, "no asynchronous events");
        }
        self.free_qids = (1..=admin.io_queues()).rev().collect();
        self.path.cntlid.store(admin.cntlid(), Ordering::Relaxed);
        self.path
            .max_transfer
            .store(admin.max_transfer(), Ordering::Relaxed);
        self.admin = Some(admin);
        self.lost_at = None;
        self.path.io_fail.store(false, Ordering::Relaxed);
        self.path.epoch.fetch_add(1, Ordering::AcqRel);
        self.path.set_state(PathState::Enabled);
    }
}

/// The thread that owns a controller's admin queues.
struct PathThread {
    name: String,
    resiliency: Resiliency,
    timeouts: Timeouts,
    ctrl: std::sync::Weak<FabricCtrlr>,
    /// Where namespaces that appear or go are registered or removed as bdevs.
    engine: Option<crate::reactor::EngineHandle>,
    paths: Vec<PathSlot>,
}

impl PathThread {
    fn run(&mut self, rx: &Receiver<Req>, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(r) = rx.recv_timeout(Duration::from_millis(10)) {
                self.handle(r);
                while let Ok(r) = rx.try_recv() {
                    self.handle(r);
                }
            }
            for i in 0..self.paths.len() {
                self.tend(i);
            }
        }
        for s in &mut self.paths {
            if let Some(a) = s.admin.take() {
                let _ = a.shutdown();
            }
        }
    }

    fn slot(&mut self, id: u64) -> Option<usize> {
        self.paths.iter().position(|s| s.path.id == id)
    }

    fn handle(&mut self, r: Req) {
        match r {
            Req::Qpair { path, epoch, reply } => {
                let Some(i) = self.slot(path) else {
                    let _ = reply.send(Err("the path was removed".into()));
                    return;
                };
                let s = &mut self.paths[i];
                let current = s.path.epoch.load(Ordering::Acquire) == epoch;
                let Some(admin) = s.admin.as_mut().filter(|_| current) else {
                    let _ = reply.send(Err("the path is not connected".into()));
                    return;
                };
                let Some(qid) = s.free_qids.pop() else {
                    let _ = reply.send(Err(format!(
                        "the controller granted {} I/O queues, all in use",
                        admin.io_queues()
                    )));
                    return;
                };
                match admin.create_io_qpair::<RemoteBuf>(qid, 0) {
                    Ok(q) => {
                        let _ = reply.send(Ok(SendQpair(q)));
                    }
                    Err(e) => {
                        let why = format!("I/O queue {qid}: {e}");
                        let _ = reply.send(Err(why.clone()));
                        self.lose(i, &why);
                    }
                }
            }
            Req::Down { path, epoch, why } => {
                if let Some(i) = self.slot(path) {
                    if self.paths[i].path.epoch.load(Ordering::Acquire) == epoch {
                        self.lose(i, &why);
                    }
                }
            }
            Req::Release { path, epoch, qid } => {
                if let Some(i) = self.slot(path) {
                    let s = &mut self.paths[i];
                    if s.path.epoch.load(Ordering::Acquire) == epoch && s.admin.is_some() {
                        s.free_qids.push(qid);
                    }
                }
            }
            Req::Timeout {
                path,
                epoch,
                sqid,
                cid,
            } => {
                let Some(i) = self.slot(path) else { return };
                let s = &mut self.paths[i];
                if s.path.epoch.load(Ordering::Acquire) != epoch {
                    return;
                }
                s.path.timeouts.fetch_add(1, Ordering::Relaxed);
                let addr = s.path.target.addr;
                match self.timeouts.action {
                    TimeoutAction::None => {
                        tracing::warn!(ctrlr = %self.name, %addr, sqid, cid, "I/O command timed out");
                    }
                    TimeoutAction::Abort => {
                        let Some(a) = s.admin.as_mut() else { return };
                        s.path.aborts.fetch_add(1, Ordering::Relaxed);
                        match a.abort(sqid, cid) {
                            Ok(done) => {
                                tracing::warn!(ctrlr = %self.name, %addr, sqid, cid, aborted = done, "I/O command timed out: Abort sent")
                            }
                            Err(e) => self.lose(i, &format!("Abort after a timeout: {e}")),
                        }
                    }
                    TimeoutAction::Reset => {
                        self.lose(
                            i,
                            &format!("command {cid} of queue {sqid} timed out: resetting"),
                        );
                    }
                }
            }
            Req::AnaCheck { path } => {
                if let Some(i) = self.slot(path) {
                    self.reread_ana(i, "an I/O failed with an ANA status");
                }
            }
            Req::Add(path, admin) => self.paths.push(PathSlot::new(path, *admin)),
            Req::Reset => {
                for i in 0..self.paths.len() {
                    self.lose(i, "reset (bdev_nvme_reset_controller)");
                }
            }
            Req::Remove(id) => {
                if let Some(i) = self.slot(id) {
                    let mut s = self.paths.remove(i);
                    s.path.epoch.fetch_add(1, Ordering::AcqRel);
                    s.path.set_state(PathState::Failed);
                    s.path.io_fail.store(true, Ordering::Relaxed);
                    if let Some(a) = s.admin.take() {
                        let _ = a.shutdown();
                    }
                }
            }
        }
    }

    /// The controller's namespaces are `now`: a bdev for each new one, none for each
    /// one gone, the new size for each resized one (its block size must stay).
    fn rescan(&mut self, now: Vec<NsInfo>) {
        let Some(c) = self.ctrl.upgrade() else { return };
        let old = std::mem::replace(&mut *c.namespaces.lock().unwrap(), now.clone());
        if old == now {
            return;
        }
        let name = |n: &NsInfo| format!("{}n{}", self.name, n.nsid);
        for o in old.iter().filter(|o| !now.iter().any(|n| n.nsid == o.nsid)) {
            let b = name(o);
            c.bdevs.lock().unwrap().retain(|x| *x != b);
            if let Some(e) = &self.engine {
                e.bdevs().remove(&b);
            }
            tracing::info!(ctrlr = %self.name, nsid = o.nsid, bdev = %b, "namespace removed: bdev removed");
        }
        for n in &now {
            match old.iter().find(|o| o.nsid == n.nsid) {
                Some(o) if o.block_size != n.block_size => {
                    tracing::error!(ctrlr = %self.name, nsid = n.nsid, was = o.block_size, now = n.block_size, "namespace reformatted to another block size: its bdev keeps the old one and fails I/O; detach and attach again");
                }
                Some(o) if o.num_blocks != n.num_blocks => {
                    let r = self
                        .engine
                        .as_ref()
                        .map(|e| e.bdevs().resize(&name(n), n.num_blocks));
                    match r {
                        Some(Err(e)) => {
                            tracing::error!(ctrlr = %self.name, nsid = n.nsid, error = %e, "namespace resized: the bdev could not follow")
                        }
                        _ => {
                            tracing::info!(ctrlr = %self.name, nsid = n.nsid, blocks = o.num_blocks, now = n.num_blocks, "namespace resized: bdev resized")
                        }
                    }
                }
                Some(_) => {}
                None => {
                    let b = ns_bdev(&c, n);
                    let r = match (&self.engine, b) {
                        (Some(e), Ok(b)) => e.bdevs().register(b),
                        (None, Ok(_)) => Ok(()),
                        (_, Err(e)) => Err(e),
                    };
                    match r {
                        Ok(()) => {
                            c.bdevs.lock().unwrap().push(name(n));
                            tracing::info!(ctrlr = %self.name, nsid = n.nsid, bdev = %name(n), "namespace added: bdev created");
                        }
                        Err(e) => {
                            tracing::error!(ctrlr = %self.name, nsid = n.nsid, error = %e, "namespace added: no bdev for it")
                        }
                    }
                }
            }
        }
    }

    /// Reads path `i`'s ANA log page again; channels re-read the states (even when
    /// they did not change: it clears what a channel marked after an ANA status).
    fn reread_ana(&mut self, i: usize, why: &str) {
        let s = &mut self.paths[i];
        let Some(a) = s.admin.as_mut() else { return };
        match read_ana(a) {
            Ok(now) => {
                let old = std::mem::replace(&mut *s.path.ana.lock().unwrap(), now.clone());
                if old != now {
                    let states: Vec<String> = now
                        .iter()
                        .map(|(n, st)| format!("{n}:{}", ana_state::name(*st)))
                        .collect();
                    tracing::info!(ctrlr = %self.name, addr = %s.path.target.addr, why, states = %states.join(","), "ANA states changed");
                }
                if let Some(c) = self.ctrl.upgrade() {
                    c.version.fetch_add(1, Ordering::Release);
                }
            }
            Err(e) => self.lose(i, &format!("ANA log page: {e}")),
        }
    }

    /// Path `i` is lost: its queue pairs are stale from now on, and it reconnects.
    fn lose(&mut self, i: usize, why: &str) {
        let s = &mut self.paths[i];
        if s.admin.take().is_none() {
            return;
        }
        s.path.losses.fetch_add(1, Ordering::Relaxed);
        s.path.epoch.fetch_add(1, Ordering::AcqRel);
        s.lost_at = Some(Instant::now());
        s.next_try = Instant::now();
        s.path.set_state(PathState::Resetting);
        tracing::warn!(ctrlr = %self.name, addr = %s.path.target.addr, why, "path lost; reconnecting");
    }

    /// Keep-alive of a connected path; reconnect attempts and time limits of a lost one.
    fn tend(&mut self, i: usize) {
        let now = Instant::now();
        let r = self.resiliency;
        let s = &mut self.paths[i];
        if let Some(a) = s.admin.as_mut() {
            if let Err(e) = a.keep_alive_if_due() {
                let why = format!("keep alive: {e}");
                self.lose(i, &why);
                return;
            }
            let (changed, ana) = match a.async_events() {
                Ok(ev) => (
                    ev.iter().any(|e| e.namespaces_changed()),
                    ev.iter().any(|e| e.ana_changed()),
                ),
                Err(e) => {
                    self.lose(i, &format!("asynchronous events: {e}"));
                    return;
                }
            };
            if ana {
                self.reread_ana(i, "ANA Change event");
            }
            let Some(a) = self.paths[i].admin.as_mut() else {
                return;
            };
            if changed {
                let r = a
                    .changed_namespaces()
                    .map_err(|e| Error::Nvme(e.to_string()));
                match r.and_then(|list| namespaces(a).map(|ns| (list, ns))) {
                    Ok((list, ns)) => {
                        tracing::info!(ctrlr = %self.name, changed = ?list, "namespaces changed");
                        self.rescan(ns);
                    }
                    Err(e) => self.lose(i, &format!("after a namespace change: {e}")),
                }
            }
            return;
        }
        let Some(lost) = s.lost_at else { return };
        if s.path.state() == PathState::Failed {
            return;
        }
        let gone = now.duration_since(lost);
        if r.fast_io_fail_timeout_sec > 0
            && gone >= Duration::from_secs(r.fast_io_fail_timeout_sec)
            && !s.path.io_fail.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(ctrlr = %self.name, addr = %s.path.target.addr, "fast_io_fail_timeout_sec passed: I/O waiting for this path fails");
        }
        if now < s.next_try {
            return;
        }
        let tried_once = s.path.state() == PathState::ReconnectDelayed;
        let give_up = match r.ctrlr_loss_timeout_sec {
            -1 => false,
            0 => tried_once,
            l => gone >= Duration::from_secs(l as u64),
        };
        if give_up {
            s.path.io_fail.store(true, Ordering::Relaxed);
            s.path.set_state(PathState::Failed);
            tracing::error!(ctrlr = %self.name, addr = %s.path.target.addr, after_ms = gone.as_millis() as u64, "path given up (ctrlr_loss_timeout_sec): its I/O fails; bdev_nvme_detach_controller removes it");
            return;
        }
        match AdminQueue::connect(&s.path.target).and_then(|mut a| {
            let ns = namespaces(&mut a)
                .map_err(|e| pollux_nvme::fabrics::Error::InvalidArgument(e.to_string()))?;
            let ana = read_ana(&mut a)?;
            Ok((a, ns, ana))
        }) {
            Ok((a, ns, ana)) => {
                *s.path.ana.lock().unwrap() = ana;
                s.connected(Box::new(a));
                // Namespaces that changed while the path was away.
                self.rescan(ns);
                let s = &mut self.paths[i];
                s.path.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(ctrlr = %self.name, addr = %s.path.target.addr, after_ms = gone.as_millis() as u64, cntlid = s.path.cntlid(), "path reconnected");
            }
            Err(e) => {
                tracing::debug!(ctrlr = %self.name, addr = %s.path.target.addr, error = %e, "reconnect failed");
                s.path.set_state(PathState::ReconnectDelayed);
                s.next_try = now + Duration::from_secs(r.reconnect_delay_sec);
            }
        }
    }
}

/// A command's data: straight in the I/O's buffer, or in a bounce buffer when the I/O's
/// data lies in several buffers (`off`: where it starts in the I/O's data).
enum RemoteBuf {
    Direct { ptr: *mut u8, len: usize },
    Bounce { data: Vec<u8>, off: usize },
}

impl DataBuf for RemoteBuf {
    fn as_slice(&self) -> &[u8] {
        match self {
            // SAFETY: the I/O owning these bytes stays in its channel slot until the
            // command's completion hands this buffer back (or the queue pair drops it).
            RemoteBuf::Direct { ptr, len } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            RemoteBuf::Bounce { data, .. } => data,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            // SAFETY: as above; the channel touches the I/O's data only after the
            // command completed.
            RemoteBuf::Direct { ptr, len } => unsafe { std::slice::from_raw_parts_mut(*ptr, *len) },
            RemoteBuf::Bounce { data, .. } => data,
        }
    }
}

struct FabricBackend {
    ctrl: Arc<FabricCtrlr>,
    nsid: u32,
    shift: u32,
}

impl BdevBackend for FabricBackend {
    fn open_channel(&self, thread: &Thread) -> Result<Box<dyn BackendChannel>, Error> {
        Ok(Box::new(NsChannel {
            ch: thread.get_io_channel(&self.ctrl)?,
            nsid: self.nsid,
            shift: self.shift,
        }))
    }

    fn supports(&self, kind: IoKind) -> bool {
        match kind {
            IoKind::WriteZeroes => self.ctrl.oncs & (1 << 3) != 0,
            IoKind::Unmap => self.ctrl.oncs & (1 << 2) != 0,
            _ => true,
        }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(&*self.ctrl)
    }
}

/// An I/O in flight on this thread: its commands outstanding, the worst status, and
/// whether a path failure asks for it to be sent again.
struct Slot {
    io: Option<Box<BdevIo>>,
    nsid: u32,
    shift: u32,
    left: u32,
    status: IoStatus,
    retry: bool,
    tries: u32,
}

/// An I/O waiting for a path.
struct Waiting {
    io: Box<BdevIo>,
    nsid: u32,
    shift: u32,
    tries: u32,
}

/// Sends of one I/O before it fails even though paths keep failing under it.
const MAX_TRIES: u32 = 16;

/// Host Pathing Error (SCT 3h, SC 70h): no path can take the I/O.
const NO_PATH: IoStatus = IoStatus::Nvme {
    sct: 3,
    sc: 0x70,
    dnr: false,
};

struct ChPath {
    path: Arc<FabricPath>,
    q: Option<FabricQpair<RemoteBuf>>,
    epoch: u64,
    asking: Option<Receiver<Result<SendQpair, String>>>,
    /// The path's ANA states, as of the last refresh.
    ana: Vec<(u32, u8)>,
    /// Namespaces whose I/O failed here with an ANA status since: not used until the
    /// path thread has read the log page again.
    ana_stale: Vec<u32>,
}

impl ChPath {
    fn new(path: Arc<FabricPath>) -> ChPath {
        let ana = path.ana_states();
        ChPath {
            path,
            q: None,
            epoch: 0,
            asking: None,
            ana,
            ana_stale: Vec::new(),
        }
    }

    /// The ANA state of namespace `nsid` through this path as this thread knows it
    /// (change while a re-read is pending).
    fn ana(&self, nsid: u32) -> u8 {
        if self.ana_stale.contains(&nsid) {
            ana_state::CHANGE
        } else {
            ana_of(&self.ana, nsid)
        }
    }

    fn ready(&self) -> bool {
        self.q.as_ref().is_some_and(|q| !q.is_dead())
            && self.epoch == self.path.epoch.load(Ordering::Acquire)
    }
}

/// A thread's queue pairs on one controller's paths, shared by its namespaces.
pub struct FabricChannel {
    ctrl: Arc<FabricCtrlr>,
    thread: Thread,
    paths: RefCell<Vec<ChPath>>,
    version: Cell<u64>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    waiting: RefCell<VecDeque<Waiting>>,
    done: RefCell<VecDeque<(Box<BdevIo>, IoStatus)>>,
    rr: Cell<(usize, u32)>,
    next_check: Cell<Nanos>,
    /// Completions of one poll (path index; whether the queue pair failed), overdue
    /// commands of one poll, and the commands of one I/O: kept to reuse their memory.
    got: RefCell<Vec<(Completion<RemoteBuf>, bool, usize)>>,
    overdue: RefCell<Vec<(u64, u64, u16, u16)>>,
    cmds: RefCell<Vec<Cmd>>,
}

impl IoDevice for FabricCtrlr {
    type Channel = FabricChannel;

    fn create_channel(self: &Arc<Self>, thread: &Thread) -> Result<FabricChannel, Error> {
        let ch = FabricChannel {
            ctrl: self.clone(),
            thread: thread.clone(),
            paths: RefCell::new(Vec::new()),
            version: Cell::new(0),
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            waiting: RefCell::new(VecDeque::new()),
            done: RefCell::new(VecDeque::new()),
            rr: Cell::new((0, 0)),
            next_check: Cell::new(0),
            got: RefCell::new(Vec::new()),
            overdue: RefCell::new(Vec::new()),
            cmds: RefCell::new(Vec::new()),
        };
        ch.refresh();
        Ok(ch)
    }
}

impl Drop for FabricChannel {
    fn drop(&mut self) {
        for p in self.paths.get_mut().drain(..) {
            if let Some(q) = p.q {
                let _ = self.ctrl.tx.send(Req::Release {
                    path: p.path.id,
                    epoch: p.epoch,
                    qid: q.qid(),
                });
            }
        }
    }
}

impl fmt::Debug for FabricChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FabricChannel")
            .field("ctrlr", &self.ctrl.name)
            .finish()
    }
}

/// What one command of an I/O sends.
struct Cmd {
    sqe: Sqe,
    buf: Option<RemoteBuf>,
    dir: XferDir,
}

/// Whether a failed command should go again on another path: path-related statuses and
/// commands the host aborted because their connection failed, unless Do Not Retry.
fn path_error(st: Status) -> bool {
    st.sct == 3 && !st.dnr
}

fn io_status(st: Status) -> IoStatus {
    if st.is_success() {
        IoStatus::Success
    } else {
        IoStatus::Nvme {
            sct: st.sct,
            sc: st.sc,
            dnr: st.dnr,
        }
    }
}

impl FabricChannel {
    /// Takes the controller's path list anew when it changed.
    fn refresh(&self) {
        let v = self.ctrl.version.load(Ordering::Acquire);
        if v == self.version.get() {
            return;
        }
        let now = self.ctrl.paths();
        let mut mine = self.paths.borrow_mut();
        let mut old: Vec<ChPath> = mine.drain(..).collect();
        for p in now {
            match old.iter().position(|c| Arc::ptr_eq(&c.path, &p)) {
                Some(i) => {
                    let mut c = old.swap_remove(i);
                    c.ana = c.path.ana_states();
                    c.ana_stale.clear();
                    mine.push(c);
                }
                None => mine.push(ChPath::new(p)),
            }
        }
        drop(mine);
        // Removed paths: their I/O goes again elsewhere.
        for mut c in old {
            if let Some(mut q) = c.q.take() {
                let mut got = Vec::new();
                q.drain_failed(|c| got.push(c));
                for c in got {
                    self.completed(c, true, None);
                }
            }
        }
        self.version.set(v);
    }

    /// The commands `io` needs on a path moving at most `max_xfer` bytes per command.
    fn plan(
        io: &mut BdevIo,
        nsid: u32,
        shift: u32,
        max_xfer: u32,
        out: &mut Vec<Cmd>,
    ) -> Result<(), IoStatus> {
        let slba = io.offset_blocks();
        let nlb = io.num_blocks();
        match io.kind() {
            IoKind::Flush => out.push(Cmd {
                sqe: Sqe {
                    opc: nvm_opc::FLUSH,
                    nsid: U32::new(nsid),
                    ..Default::default()
                },
                buf: None,
                dir: XferDir::None,
            }),
            IoKind::WriteZeroes => {
                let mut at = 0;
                while at < nlb {
                    let n = (nlb - at).min(1 << 16);
                    out.push(Cmd {
                        sqe: Sqe::nvm_rw(nvm_opc::WRITE_ZEROES, nsid, slba + at, n as u32),
                        buf: None,
                        dir: XferDir::None,
                    });
                    at += n;
                }
            }
            IoKind::Unmap => {
                if nlb > u32::MAX as u64 {
                    return Err(IoStatus::InvalidField);
                }
                let mut r = vec![0u8; 16];
                r[4..8].copy_from_slice(&(nlb as u32).to_le_bytes());
                r[8..16].copy_from_slice(&slba.to_le_bytes());
                out.push(Cmd {
                    sqe: Sqe {
                        opc: nvm_opc::DATASET_MANAGEMENT,
                        nsid: U32::new(nsid),
                        cdw11: U32::new(1 << 2),
                        ..Default::default()
                    },
                    buf: Some(RemoteBuf::Bounce { data: r, off: 0 }),
                    dir: XferDir::HostToCtrl,
                });
            }
            IoKind::Read | IoKind::Write => {
                let read = io.kind() == IoKind::Read;
                let (opc, dir) = if read {
                    (nvm_opc::READ, XferDir::CtrlToHost)
                } else {
                    (nvm_opc::WRITE, XferDir::HostToCtrl)
                };
                let total = io.data_len();
                let mut chunk = (1usize << 16) << shift;
                if max_xfer > 0 {
                    chunk = chunk.min(max_xfer as usize);
                }
                let bufs = io.bufs_mut();
                let single = bufs.len() == 1;
                let base = if single {
                    bufs[0].as_mut_slice().as_mut_ptr()
                } else {
                    std::ptr::null_mut()
                };
                let mut off = 0;
                while off < total {
                    let n = (total - off).min(chunk);
                    let buf = if single {
                        // SAFETY: `off` is within the buffer's `total` bytes.
                        let ptr = unsafe { base.add(off) };
                        RemoteBuf::Direct { ptr, len: n }
                    } else {
                        let mut data = vec![0u8; n];
                        if !read {
                            gather(bufs, off, &mut data);
                        }
                        RemoteBuf::Bounce { data, off }
                    };
                    out.push(Cmd {
                        sqe: Sqe::nvm_rw(
                            opc,
                            nsid,
                            slba + (off >> shift) as u64,
                            (n >> shift) as u32,
                        ),
                        buf: Some(buf),
                        dir,
                    });
                    off += n;
                }
            }
        }
        Ok(())
    }

    /// The path for the next I/O to namespace `nsid`: an index with a working queue
    /// pair, among the optimized paths, or the non-optimized ones when none is
    /// optimized; `None` when there is neither.
    fn pick(&self, paths: &[ChPath], nsid: u32) -> Option<usize> {
        let best = if paths
            .iter()
            .any(|c| c.ready() && c.ana(nsid) == ana_state::OPTIMIZED)
        {
            ana_state::OPTIMIZED
        } else {
            ana_state::NON_OPTIMIZED
        };
        let ready = |c: &ChPath| c.ready() && c.ana(nsid) == best;
        match self.ctrl.policy() {
            Policy::ActivePassive => paths.iter().position(ready),
            Policy::QueueDepth => paths
                .iter()
                .enumerate()
                .filter(|(_, c)| ready(c))
                .min_by_key(|(_, c)| c.q.as_ref().map_or(0, |q| q.outstanding()))
                .map(|(i, _)| i),
            Policy::ActiveActive { rr_min_io } => {
                let (mut at, mut sent) = self.rr.get();
                for _ in 0..paths.len() {
                    at %= paths.len().max(1);
                    if ready(&paths[at]) {
                        sent += 1;
                        let pick = at;
                        if sent >= rr_min_io {
                            at += 1;
                            sent = 0;
                        }
                        self.rr.set((at, sent));
                        return Some(pick);
                    }
                    at += 1;
                    sent = 0;
                }
                None
            }
        }
    }

    /// Whether I/O to `nsid` without a usable path should fail now rather than wait:
    /// every path is given up, past fast_io_fail_timeout_sec, or connected with the
    /// namespace inaccessible (or lost) through it, as SPDK's bdev_nvme decides.
    fn hopeless(&self, paths: &[ChPath], nsid: u32) -> bool {
        paths.iter().all(|c| {
            c.path.io_fail.load(Ordering::Relaxed)
                || (c.ready()
                    && matches!(
                        c.ana(nsid),
                        ana_state::INACCESSIBLE | ana_state::PERSISTENT_LOSS
                    ))
        })
    }

    /// Sends `w` on a path. `Err` gives it back: no path now, or the queue is full.
    fn start(&self, w: Waiting) -> Result<(), Waiting> {
        let mut cmds = std::mem::take(&mut *self.cmds.borrow_mut());
        let r = self.start_with(w, &mut cmds);
        cmds.clear();
        *self.cmds.borrow_mut() = cmds;
        r
    }

    fn start_with(&self, mut w: Waiting, cmds: &mut Vec<Cmd>) -> Result<(), Waiting> {
        let mut paths = self.paths.borrow_mut();
        let Some(pi) = self.pick(&paths, w.nsid) else {
            return Err(w);
        };
        let max_xfer = paths[pi].path.max_transfer.load(Ordering::Relaxed);
        if let Err(st) = Self::plan(&mut w.io, w.nsid, w.shift, max_xfer, cmds) {
            drop(paths);
            self.done.borrow_mut().push_back((w.io, st));
            return Ok(());
        }
        let q = paths[pi]
            .q
            .as_mut()
            .expect("picked paths have a queue pair");
        if (q.depth() as usize - 1) < cmds.len() {
            drop(paths);
            tracing::error!(ctrlr = %self.ctrl.name, commands = cmds.len(), "an I/O needs more commands than the queue pair holds");
            self.done
                .borrow_mut()
                .push_back((w.io, IoStatus::InvalidField));
            return Ok(());
        }
        if (q.depth() as usize - 1) - q.outstanding() < cmds.len() {
            return Err(w);
        }
        let slot = match self.free.borrow_mut().pop() {
            Some(s) => s,
            None => {
                let mut s = self.slots.borrow_mut();
                s.push(Slot {
                    io: None,
                    nsid: 0,
                    shift: 0,
                    left: 0,
                    status: IoStatus::Success,
                    retry: false,
                    tries: 0,
                });
                (s.len() - 1) as u32
            }
        };
        let mut sent = 0;
        let mut retry = false;
        for c in cmds.drain(..) {
            match q.submit(c.sqe, c.buf, c.dir, slot as u64) {
                Ok(()) => sent += 1,
                Err(SubmitError::Invalid { why, .. }) => {
                    tracing::error!(ctrlr = %self.ctrl.name, %why, "command refused");
                    break;
                }
                Err(_) => {
                    retry = true;
                    break;
                }
            }
        }
        drop(paths);
        if sent == 0 {
            self.free.borrow_mut().push(slot);
            if retry {
                return Err(w);
            }
            self.done
                .borrow_mut()
                .push_back((w.io, IoStatus::InvalidField));
            return Ok(());
        }
        self.slots.borrow_mut()[slot as usize] = Slot {
            io: Some(w.io),
            nsid: w.nsid,
            shift: w.shift,
            left: sent,
            status: IoStatus::Success,
            retry,
            tries: w.tries + 1,
        };
        Ok(())
    }

    /// A command of slot `c.tag` completed on path `path` (`failed`: its queue pair
    /// failed under it).
    fn completed(&self, c: Completion<RemoteBuf>, failed: bool, path: Option<usize>) {
        let st = if failed {
            STATUS_ABORTED_BY_HOST
        } else {
            c.cqe.status()
        };
        if let Some(pi) = path.filter(|_| st.is_ana_error()) {
            // The path's ANA state changed before its log page said so: stop using it
            // for the namespace until the path thread has read the page again.
            let nsid = self.slots.borrow()[c.tag as usize].nsid;
            let mut paths = self.paths.borrow_mut();
            if let Some(p) = paths.get_mut(pi) {
                if !p.ana_stale.contains(&nsid) {
                    p.ana_stale.push(nsid);
                    let _ = self.ctrl.tx.send(Req::AnaCheck { path: p.path.id });
                }
            }
        }
        let finished = {
            let mut slots = self.slots.borrow_mut();
            let s = &mut slots[c.tag as usize];
            if let (Some(RemoteBuf::Bounce { data, off }), Some(io)) = (&c.buf, s.io.as_mut()) {
                if st.is_success() && io.kind() == IoKind::Read {
                    scatter(io.bufs_mut(), *off, data);
                }
            }
            if path_error(st) {
                s.retry = true;
            } else if !st.is_success() && s.status == IoStatus::Success {
                s.status = io_status(st);
            }
            s.left -= 1;
            if s.left == 0 {
                s.io.take()
                    .map(|io| (io, s.nsid, s.shift, s.status, s.retry, s.tries))
            } else {
                None
            }
        };
        let Some((io, nsid, shift, status, retry, tries)) = finished else {
            return;
        };
        self.free.borrow_mut().push(c.tag as u32);
        if retry && status == IoStatus::Success && tries < MAX_TRIES {
            self.ctrl.retried.fetch_add(1, Ordering::Relaxed);
            self.waiting.borrow_mut().push_front(Waiting {
                io,
                nsid,
                shift,
                tries,
            });
        } else if retry && status == IoStatus::Success {
            self.ctrl.path_failed.fetch_add(1, Ordering::Relaxed);
            self.done.borrow_mut().push_back((io, NO_PATH));
        } else {
            self.done.borrow_mut().push_back((io, status));
        }
    }

    fn poll_paths(&self) -> bool {
        let mut busy = false;
        let mut got = std::mem::take(&mut *self.got.borrow_mut());
        let mut overdue = std::mem::take(&mut *self.overdue.borrow_mut());
        let check = self.ctrl.timeouts.io.filter(|_| {
            let now = self.thread.now();
            let due = now >= self.next_check.get();
            if due {
                self.next_check.set(now + 10_000_000);
            }
            due
        });
        {
            let mut paths = self.paths.borrow_mut();
            for (pi, c) in paths.iter_mut().enumerate() {
                let epoch = c.path.epoch.load(Ordering::Acquire);
                let stale = c.q.as_ref().is_some_and(|q| q.is_dead())
                    || (c.q.is_some() && c.epoch != epoch);
                if stale {
                    let mut q = c.q.take().expect("checked");
                    if c.epoch == epoch {
                        let _ = self.ctrl.tx.send(Req::Down {
                            path: c.path.id,
                            epoch,
                            why: format!("I/O queue {} failed", q.qid()),
                        });
                    }
                    q.drain_failed(|x| got.push((x, true, pi)));
                    busy = true;
                }
                if let Some(rx) = &c.asking {
                    busy = true;
                    match rx.try_recv() {
                        Ok(Ok(SendQpair(q))) => {
                            c.asking = None;
                            if c.epoch == epoch {
                                c.q = Some(q);
                            }
                        }
                        Ok(Err(why)) => {
                            tracing::debug!(ctrlr = %self.ctrl.name, addr = %c.path.target.addr, %why, "no queue pair");
                            c.asking = None;
                        }
                        Err(TryRecvError::Empty) => {}
                        Err(TryRecvError::Disconnected) => c.asking = None,
                    }
                }
                if c.q.is_none() && c.asking.is_none() && c.path.state() == PathState::Enabled {
                    let (tx, rx) = crossbeam::channel::bounded(1);
                    c.epoch = epoch;
                    if self
                        .ctrl
                        .tx
                        .send(Req::Qpair {
                            path: c.path.id,
                            epoch,
                            reply: tx,
                        })
                        .is_ok()
                    {
                        c.asking = Some(rx);
                    }
                }
                if let Some(q) = c.q.as_mut() {
                    if q.outstanding() > 0 {
                        busy = true;
                    }
                    let _ = q.poll(0, |x| got.push((x, false, pi)));
                    if let Some(t) = check {
                        let (id, ep, qid) = (c.path.id, c.epoch, q.qid());
                        q.overdue(t, |cid, _| overdue.push((id, ep, qid, cid)));
                    }
                }
            }
        }
        busy |= !got.is_empty();
        for (c, failed, pi) in got.drain(..) {
            self.completed(c, failed, Some(pi));
        }
        for (path, epoch, sqid, cid) in overdue.drain(..) {
            let _ = self.ctrl.tx.send(Req::Timeout {
                path,
                epoch,
                sqid,
                cid,
            });
        }
        // The buffers go back for the next poll (no allocation per poll).
        *self.got.borrow_mut() = got;
        *self.overdue.borrow_mut() = overdue;
        busy
    }

    fn poll(&self) -> PollStatus {
        self.refresh();
        let mut busy = self.poll_paths();
        // Waiting I/O: onto a path, or failed when no path can come back in time.
        loop {
            let Some(w) = self.waiting.borrow_mut().pop_front() else {
                break;
            };
            busy = true;
            match self.start(w) {
                Ok(()) => {}
                Err(w) => {
                    if self.hopeless(&self.paths.borrow(), w.nsid) {
                        self.ctrl.path_failed.fetch_add(1, Ordering::Relaxed);
                        self.done.borrow_mut().push_back((w.io, NO_PATH));
                        continue;
                    }
                    self.waiting.borrow_mut().push_front(w);
                    break;
                }
            }
        }
        loop {
            let Some((io, st)) = self.done.borrow_mut().pop_front() else {
                break;
            };
            busy = true;
            io.complete(st);
        }
        if busy || !self.waiting.borrow().is_empty() {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

struct NsChannel {
    ch: IoChannel<FabricCtrlr>,
    nsid: u32,
    shift: u32,
}

impl BackendChannel for NsChannel {
    fn submit(&self, io: Box<BdevIo>) -> Result<(), Box<BdevIo>> {
        let c: &FabricChannel = &self.ch;
        let w = Waiting {
            io,
            nsid: self.nsid,
            shift: self.shift,
            tries: 0,
        };
        if !c.waiting.borrow().is_empty() {
            // Keep the order: behind what waits already.
            c.waiting.borrow_mut().push_back(w);
            return Ok(());
        }
        match c.start(w) {
            Ok(()) => Ok(()),
            Err(w) => {
                let no_path = c.pick(&c.paths.borrow(), self.nsid).is_none();
                if no_path {
                    // Waits for a path (or fails on a later poll when none comes).
                    c.waiting.borrow_mut().push_back(w);
                    Ok(())
                } else {
                    Err(w.io)
                }
            }
        }
    }

    fn poll(&self) -> PollStatus {
        self.ch.poll()
    }
}
