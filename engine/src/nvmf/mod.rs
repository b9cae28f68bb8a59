//! The NVMe-over-Fabrics target (SPDK's `nvmf` library).
//!
//! A [`Target`] holds subsystems (an NQN, serial and model numbers, the hosts it
//! serves, its namespaces backed by bdevs, the addresses it listens on), the discovery
//! subsystem, and one poll group per reactor core. A poll group is the target's
//! per-thread channel ([`PollGroup`]): it owns the queue pairs placed on its thread, the
//! bdev channels their I/O goes to, and a copy of each subsystem's namespace table, so
//! the I/O path reads no shared state and takes no lock.
//!
//! Control-path state (subsystems, controllers, listeners) sits behind one mutex and is
//! touched by RPCs, by Connect and by admin commands, never by I/O commands. Changes
//! that poll groups must see (a namespace added or removed, a controller torn down)
//! reach them as messages.
//!
//! Controllers are dynamic (the host connects with controller ID 0xFFFF and gets one).
//! A controller's state lives on the thread of its admin queue: properties, features,
//! keep-alive, asynchronous events. Its I/O queues may sit on any poll group; they find
//! the controller through the target's table at Connect time and are closed by message
//! when it goes.
//!
//! Transports: [`tcp`] (NVMe/TCP) and [`rdma`] (NVMe/RDMA), served at the same time.
//! The command semantics ([`ctrlr`]) and a queue's request handling (`queue`) are
//! transport-independent: a transport moves capsules and data, then hands a command
//! with its buffers to the controller or the namespace's bdev.

pub mod ctrlr;
mod poll_group;
mod queue;
pub mod rdma;
pub mod resv;
pub mod tcp;

pub use poll_group::{PgTransportStats, PollGroup, PollGroupStats};

use crate::bdev::Bdev;
use crate::reactor::EngineHandle;
use crate::thread::ThreadHandle;
use pollux_nvme::spec::fabrics::{DISCOVERY_NQN, validate_nqn};
use pollux_nvme::spec::log::ana_state;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The serial number of a subsystem created without one (SPDK's default).
pub const SERIAL_DEFAULT: &str = "00000000000000000000";
/// The model number of a subsystem created without one.
pub const MODEL_DEFAULT: &str = "Pollux bdev Controller";
/// Namespaces per subsystem when not given (SPDK's default is 32).
pub const MAX_NAMESPACES_DEFAULT: u32 = 32;
/// The most namespaces a subsystem may have (each poll group indexes them by NSID).
pub const MAX_NAMESPACES_LIMIT: u32 = 4096;

/// An error of the target's control path, with a message for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NvmfError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, NvmfError> {
    Err(NvmfError(msg.into()))
}

/// Transport options, with SPDK's names and, per transport, SPDK's defaults
/// (`nvmf_create_transport -t TCP|RDMA`; [`TransportOpts::defaults`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportOpts {
    /// Entries per queue (the largest SQ a host may ask for).
    pub max_queue_depth: u32,
    /// I/O queue pairs per controller.
    pub max_io_qpairs_per_ctrlr: u32,
    /// Bytes of data a command capsule may carry (IOCCSZ is derived from it).
    pub in_capsule_data_size: u32,
    /// The largest I/O in bytes (MDTS is derived from it).
    pub max_io_size: u32,
    /// Bytes per data buffer: a request's data is held in pieces of at most this size
    /// (each an entry of the bdev I/O's scatter list, and on RDMA one SGE), taken from the
    /// small iobuf pool when it fits a small buffer. Whole 4 KiB pages (pieces are not
    /// bounced, and NVMe PRPs and O_DIRECT need page-sized middles), at most the large
    /// buffer size, and `max_io_size` may need at most 16 pieces.
    pub io_unit_size: u32,
    /// Entries of an admin queue.
    pub max_aq_depth: u32,
    /// Shared data buffers the transport expects: its buffers come from the engine's
    /// iobuf pools, so, as in SPDK, a value beyond what those pools hold (the small pool
    /// when `io_unit_size` fits a small buffer, else the smaller of the two) is warned
    /// about at creation; it also sizes `buf_cache_size` = 4294967295.
    pub num_shared_buffers: u32,
    /// Buffers of each size each poll group caches for this transport, apart from its
    /// thread's cache (none of large ones when `io_unit_size` fits a small buffer);
    /// 4294967295 (SPDK's UINT32_MAX) means three quarters of `num_shared_buffers`
    /// shared among the poll groups.
    pub buf_cache_size: u32,
    /// Whether C2HData may carry the SUCCESS flag in place of a response capsule.
    pub c2h_success: bool,
    /// Seconds before an abort gives up (accepted for configs).
    pub abort_timeout_sec: u32,
    /// Socket priority (accepted at 0 only).
    pub sock_priority: u32,
    /// Protection information insert/strip (accepted at false only).
    pub dif_insert_or_strip: bool,
    /// Zero-copy receive (accepted at false only).
    pub zcopy: bool,
    /// Transport acknowledgement timeout (RDMA; accepted for configs).
    pub ack_timeout: u32,
    /// RDMA: entries of each poll group's shared receive queue per device.
    pub max_srq_depth: u32,
    /// RDMA: a receive queue per queue pair instead of the shared one.
    pub no_srq: bool,
    /// RDMA: the listeners' backlog of connect requests.
    pub acceptor_backlog: u32,
    /// RDMA: completion queue entries per poll group and device (0: sized from
    /// `max_srq_depth`).
    pub num_cqe: u32,
    /// RDMA: post each work request alone instead of in batches (accepted for configs).
    pub no_wr_batching: bool,
    /// Data bytes per H2CData PDU the host may send (MAXH2CDATA).
    pub max_h2c_data: u32,
    /// Pollux: data buffers of I/O to namespaces whose device offers its own memory
    /// (an NVMe bdev attached with `cmb_data`) come from that memory, filled by the CPU
    /// straight from the socket, so the SSD reads its own CMB: `off`, `prefer` (host
    /// buffers when the CMB pool is short), or `force` (adding a namespace without
    /// such memory is refused; requests wait for CMB buffers when the pool is short).
    pub cmb_buffers: CmbBuffers,
}

/// Where the TCP transport takes data buffers for namespaces with device memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CmbBuffers {
    /// Host memory always.
    #[default]
    Off,
    /// The device's memory when it has some free, else host memory (counted).
    Prefer,
    /// The device's memory; namespaces without it are refused at configuration, and a
    /// request that finds the pool short waits for it (counted in `cmb_pool_waits`).
    Force,
}

impl Default for TransportOpts {
    fn default() -> Self {
        TransportOpts {
            max_queue_depth: 128,
            max_io_qpairs_per_ctrlr: 127,
            in_capsule_data_size: 4096,
            max_io_size: 131072,
            io_unit_size: 131072,
            max_aq_depth: 128,
            num_shared_buffers: 511,
            buf_cache_size: 32,
            c2h_success: true,
            abort_timeout_sec: 1,
            sock_priority: 0,
            dif_insert_or_strip: false,
            zcopy: false,
            ack_timeout: 0,
            max_srq_depth: 4096,
            no_srq: false,
            acceptor_backlog: 100,
            num_cqe: 0,
            no_wr_batching: false,
            max_h2c_data: 131072,
            cmb_buffers: CmbBuffers::Off,
        }
    }
}

/// Whether transport `t` with `cmb_buffers` = `force` (options `o`) can serve `bdev`: its
/// data must have device memory to go to, a pool that holds the largest request (forced
/// requests wait for it) and, on RDMA, a NIC that reaches it.
fn forced_cmb_check(t: Trtype, o: &TransportOpts, bdev: &Arc<Bdev>) -> Result<(), NvmfError> {
    let Some(pool) = bdev.preferred_iobuf() else {
        return err(format!(
            "cmb_buffers is force on the {t} transport, and bdev {} has no device memory for data (attach its NVMe controller with cmb_data)",
            bdev.name()
        ));
    };
    let need = (o.max_io_size as usize).div_ceil(pool.large_bufsize());
    let have = pool.pool_levels()[1].2;
    if have < need || need > crate::bdev::SGL_SEGMENTS_MAX {
        return err(format!(
            "cmb_buffers is force on the {t} transport, and bdev {}'s device memory pool has {have} large buffers of {} bytes: a request of max_io_size {} needs {need} (at most {} in one request)",
            bdev.name(),
            pool.large_bufsize(),
            o.max_io_size,
            crate::bdev::SGL_SEGMENTS_MAX
        ));
    }
    if t == Trtype::Rdma {
        if let Err(why) = rdma::device_memory_path(bdev) {
            return err(format!(
                "cmb_buffers is force on the RDMA transport, and no RDMA device can reach bdev {}'s device memory: {why}",
                bdev.name()
            ));
        }
    }
    Ok(())
}

/// `buf_cache_size` asking for a share of `num_shared_buffers` (SPDK's UINT32_MAX).
pub const BUF_CACHE_SIZE_AUTO: u32 = u32::MAX;

impl TransportOpts {
    /// The buffers of each size one of `poll_groups` poll groups caches for this
    /// transport, as (small, large).
    pub fn buf_cache(&self, poll_groups: usize, small_bufsize: usize) -> (usize, usize) {
        let n = if self.buf_cache_size == BUF_CACHE_SIZE_AUTO {
            (self.num_shared_buffers as usize * 3 / 4) / poll_groups.max(1)
        } else {
            self.buf_cache_size as usize
        };
        if self.io_unit_size as usize <= small_bufsize {
            (n, 0)
        } else {
            (n, n)
        }
    }

    /// SPDK's defaults for `trtype`.
    pub fn defaults(trtype: Trtype) -> TransportOpts {
        match trtype {
            Trtype::Tcp => TransportOpts::default(),
            Trtype::Rdma => TransportOpts {
                io_unit_size: 8192,
                num_shared_buffers: 4095,
                c2h_success: false,
                ..TransportOpts::default()
            },
        }
    }
}

/// A transport type.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Trtype {
    /// NVMe/TCP.
    #[serde(rename = "TCP")]
    Tcp,
    /// NVMe/RDMA.
    #[serde(rename = "RDMA")]
    Rdma,
}

impl Trtype {
    /// From SPDK's spelling (any case).
    pub fn parse(s: &str) -> Result<Trtype, NvmfError> {
        if s.eq_ignore_ascii_case("tcp") {
            Ok(Trtype::Tcp)
        } else if s.eq_ignore_ascii_case("rdma") {
            Ok(Trtype::Rdma)
        } else {
            err(format!(
                "transport type {s:?} is not served (this target serves TCP and RDMA)"
            ))
        }
    }

    /// A small index per transport type (0 for TCP, 1 for RDMA).
    pub fn index(self) -> usize {
        match self {
            Trtype::Tcp => 0,
            Trtype::Rdma => 1,
        }
    }

    /// SPDK's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Trtype::Tcp => "TCP",
            Trtype::Rdma => "RDMA",
        }
    }
}

impl fmt::Display for Trtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TransportOpts {
    /// Checks the options against what the transport can do with these buffer pools.
    pub fn validate(&self, iobuf: &crate::dma::Iobuf) -> Result<(), NvmfError> {
        let large_bufsize = iobuf.large_bufsize();
        if !(2..=4096).contains(&self.max_queue_depth) {
            return err("max_queue_depth must be 2 to 4096");
        }
        if !(32..=4096).contains(&self.max_aq_depth) {
            // Hosts connect admin queues of 32 entries (fabrics 3.3: ASQSZ at least 32).
            return err("max_aq_depth must be 32 to 4096");
        }
        if self.max_io_qpairs_per_ctrlr == 0 || self.max_io_qpairs_per_ctrlr > 65535 {
            return err("max_io_qpairs_per_ctrlr must be 1 to 65535");
        }
        if self.in_capsule_data_size % 16 != 0 || self.in_capsule_data_size > 131072 {
            return err("in_capsule_data_size must be a multiple of 16, at most 131072");
        }
        if self.max_io_size < 4096
            || !self.max_io_size.is_power_of_two()
            || self.max_io_size as usize > large_bufsize * crate::bdev::SGL_SEGMENTS_MAX
        {
            return err(format!(
                "max_io_size must be a power of two from 4096 to {} (16 large iobufs)",
                large_bufsize * crate::bdev::SGL_SEGMENTS_MAX
            ));
        }
        // Whole pages: every piece but the last must end on a page for NVMe PRPs and
        // O_DIRECT (Pollux does not bounce).
        if self.io_unit_size == 0
            || self.io_unit_size % 4096 != 0
            || self.io_unit_size as usize > large_bufsize
        {
            return err(format!(
                "io_unit_size {} must be a multiple of 4096, at most the iobuf large buffer size ({large_bufsize})",
                self.io_unit_size
            ));
        }
        // The largest request: an I/O of max_io_size, or admin data.
        let largest = self.max_io_size.max(tcp::ADMIN_ICD_SIZE);
        let pieces = largest.div_ceil(self.io_unit_size) as usize;
        if pieces > crate::bdev::SGL_SEGMENTS_MAX {
            return err(format!(
                "max_io_size {} in pieces of io_unit_size {} needs {pieces} buffers; at most {} fit one request",
                self.max_io_size,
                self.io_unit_size,
                crate::bdev::SGL_SEGMENTS_MAX
            ));
        }
        if self.max_h2c_data < 4096 || self.max_h2c_data % 4 != 0 || self.max_h2c_data > 1 << 20 {
            return err("max_h2c_data must be a multiple of 4 from 4096 to 1048576");
        }
        if self.max_srq_depth == 0 || self.max_srq_depth > 65536 {
            return err("max_srq_depth must be 1 to 65536");
        }
        if self.sock_priority != 0 || self.dif_insert_or_strip || self.zcopy {
            return err("sock_priority, dif_insert_or_strip and zcopy are not supported");
        }
        Ok(())
    }
}

/// Address family of a listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdrFam {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl AdrFam {
    /// SPDK's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AdrFam::Ipv4 => "IPv4",
            AdrFam::Ipv6 => "IPv6",
        }
    }
}

/// A listen address of a transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenAddr {
    /// Transport.
    pub trtype: Trtype,
    /// Family.
    pub adrfam: AdrFam,
    /// Address and port.
    pub addr: SocketAddr,
}

impl ListenAddr {
    /// From SPDK's fields (`adrfam` optional: taken from the address).
    pub fn parse(
        trtype: &str,
        adrfam: Option<&str>,
        traddr: &str,
        trsvcid: &str,
    ) -> Result<ListenAddr, NvmfError> {
        let trtype = Trtype::parse(trtype)?;
        let ip: std::net::IpAddr = traddr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| NvmfError(format!("traddr {traddr:?} is not an IP address")))?;
        let port: u16 = trsvcid
            .parse()
            .map_err(|_| NvmfError(format!("trsvcid {trsvcid:?} is not a port number")))?;
        let fam = if ip.is_ipv4() {
            AdrFam::Ipv4
        } else {
            AdrFam::Ipv6
        };
        if let Some(a) = adrfam {
            let want = match a.to_ascii_lowercase().as_str() {
                "ipv4" => AdrFam::Ipv4,
                "ipv6" => AdrFam::Ipv6,
                _ => return err(format!("adrfam {a:?} is not IPv4 or IPv6")),
            };
            if want != fam {
                return err(format!("adrfam {a} does not match traddr {traddr}"));
            }
        }
        Ok(ListenAddr {
            trtype,
            adrfam: fam,
            addr: SocketAddr::new(ip, port),
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.trtype {
            Trtype::Tcp => write!(f, "{}", self.addr),
            Trtype::Rdma => write!(f, "{} (RDMA)", self.addr),
        }
    }
}

/// A transport's listener (control-path handle): its acceptor runs on a poll group's
/// thread; stopping the listener removes it there.
#[derive(Debug)]
pub(crate) struct Listener {
    addr: ListenAddr,
    thread: ThreadHandle,
    tgt: std::sync::Weak<Target>,
}

impl Listener {
    pub(crate) fn new(addr: ListenAddr, thread: &ThreadHandle, tgt: &Arc<Target>) -> Listener {
        tracing::info!(%addr, "NVMe-oF target listening");
        Listener {
            addr,
            thread: thread.clone(),
            tgt: Arc::downgrade(tgt),
        }
    }

    /// Stops accepting (before it returns, from a control thread; by message from a
    /// reactor thread).
    fn stop(self) {
        let Some(tgt) = self.tgt.upgrade() else {
            return;
        };
        let addr = self.addr;
        let f = move || {
            if let Some(pg) = PollGroup::current(&tgt) {
                pg.remove_acceptor(addr);
            }
        };
        if crate::thread::Thread::current().is_none() {
            let _ = self.thread.call(f);
        } else {
            let _ = self.thread.send_msg(f);
        }
        tracing::info!(%addr, "NVMe-oF target stopped listening");
    }
}

/// A namespace: a bdev with an ID.
#[derive(Clone, Debug)]
pub struct Namespace {
    /// Namespace ID (1-based).
    pub nsid: u32,
    /// The bdev behind it.
    pub bdev: Arc<Bdev>,
    /// Namespace UUID (the bdev's unless given).
    pub uuid: uuid::Uuid,
    /// Namespace Globally Unique Identifier, if given.
    pub nguid: Option<[u8; 16]>,
    /// IEEE Extended Unique Identifier, if given.
    pub eui64: Option<[u8; 8]>,
    /// ANA group (its NSID unless given).
    pub anagrpid: u32,
    /// Its reservations.
    pub resv: Arc<resv::Reservations>,
}

/// What `nvmf_subsystem_add_ns` may give besides the bdev.
#[derive(Clone, Debug, Default)]
pub struct NsOpts {
    /// Namespace ID (0: the lowest free one).
    pub nsid: u32,
    /// Namespace UUID (the bdev's unless given).
    pub uuid: Option<uuid::Uuid>,
    /// NGUID.
    pub nguid: Option<[u8; 16]>,
    /// EUI-64.
    pub eui64: Option<[u8; 8]>,
    /// ANA group (0: the NSID).
    pub anagrpid: u32,
    /// Where reservations persist through power loss when a host asks (SPDK's
    /// `ptpl_file`).
    pub ptpl_file: Option<std::path::PathBuf>,
}

/// A listener's ANA states, as a subsystem reports them to controllers that connected
/// through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerAna {
    /// State of each ANA group, indexed by ANAGRPID - 1 (see
    /// `pollux_nvme::spec::log::ana_state`).
    pub states: Vec<u8>,
    /// Changes since the listener was added (the ANA log page's Change Count).
    pub change_count: u64,
}

impl ListenerAna {
    fn new(groups: u32, state: u8) -> ListenerAna {
        ListenerAna {
            states: vec![state; groups as usize],
            change_count: 0,
        }
    }

    /// The state of group `anagrpid`.
    pub fn state(&self, anagrpid: u32) -> u8 {
        (anagrpid as usize)
            .checked_sub(1)
            .and_then(|i| self.states.get(i).copied())
            .unwrap_or(ana_state::INACCESSIBLE)
    }
}

/// What a subsystem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubsysType {
    /// The discovery subsystem.
    Discovery,
    /// An NVM subsystem.
    Nvme,
}

/// A subsystem's configuration.
#[derive(Clone, Debug)]
pub struct Subsystem {
    /// Target-local ID.
    pub id: u32,
    /// NVMe Qualified Name.
    pub nqn: String,
    /// Discovery or NVM.
    pub subtype: SubsysType,
    /// Serial number (20 ASCII characters at most).
    pub serial: String,
    /// Model number (40 ASCII characters at most).
    pub model: String,
    /// Whether any host may connect.
    pub allow_any_host: bool,
    /// The host NQNs allowed when `allow_any_host` is off.
    pub hosts: BTreeSet<String>,
    /// Namespaces at most.
    pub max_namespaces: u32,
    /// Lowest controller ID handed out.
    pub min_cntlid: u16,
    /// Highest controller ID handed out.
    pub max_cntlid: u16,
    /// The limits it reports to hosts (I/O Command Set specific Identify Controller).
    pub limits: IoLimits,
    /// Whose commands are traced: `None` nobody's, an empty set every host's.
    pub trace: Option<BTreeSet<String>>,
    /// Namespaces by ID.
    pub namespaces: BTreeMap<u32, Namespace>,
    /// Where it listens.
    pub listeners: BTreeSet<ListenAddr>,
    /// Whether it reports Asymmetric Namespace Access (SPDK's `ana_reporting`).
    pub ana_reporting: bool,
    /// ANA states of each listener (kept with or without `ana_reporting`).
    pub ana: BTreeMap<ListenAddr, ListenerAna>,
    next_cntlid: u16,
}

impl Subsystem {
    /// Whether `hostnqn` may connect.
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        self.allow_any_host || self.hosts.contains(hostnqn)
    }

    /// The ANA state of namespace group `anagrpid` through listener `l`: optimized when
    /// the subsystem does not report ANA.
    pub fn ana_state(&self, l: &ListenAddr, anagrpid: u32) -> u8 {
        if !self.ana_reporting {
            return ana_state::OPTIMIZED;
        }
        self.ana
            .get(l)
            .map_or(ana_state::INACCESSIBLE, |a| a.state(anagrpid))
    }

    /// The ANA groups that have namespaces, with those namespaces, in increasing order.
    pub fn ana_groups(&self) -> BTreeMap<u32, Vec<u32>> {
        let mut g: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for ns in self.namespaces.values() {
            g.entry(ns.anagrpid).or_default().push(ns.nsid);
        }
        g
    }
}

/// Parameters of `nvmf_create_subsystem`.
#[derive(Clone, Debug, Default)]
pub struct SubsysParams {
    /// NQN.
    pub nqn: String,
    /// Serial number.
    pub serial: Option<String>,
    /// Model number.
    pub model: Option<String>,
    /// Any host may connect.
    pub allow_any_host: bool,
    /// Namespaces at most (0: the default).
    pub max_namespaces: u32,
    /// Lowest controller ID.
    pub min_cntlid: u16,
    /// Highest controller ID.
    pub max_cntlid: u16,
    /// The limits it reports to hosts.
    pub limits: IoLimits,
    /// Report Asymmetric Namespace Access.
    pub ana_reporting: bool,
}

/// Limits a subsystem reports in the NVM Command Set specific Identify Controller data
/// (nvm 4.1.5.2, CNS 06h CSI 00h), SPDK's `dmrsl` and `wzsl`. They tell hosts how to
/// size their commands (Linux sizes its discards by them); a command beyond them is
/// still carried out in full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoLimits {
    /// Dataset Management Range Size Limit in logical blocks (0: none); with a limit,
    /// one range per command (DMRL 1), as SPDK reports.
    pub dmrsl: u32,
    /// Write Zeroes Size Limit: 2^wzsl minimum-page (4 KiB) units (0: none).
    pub wzsl: u8,
}

/// A live controller, as other threads see it.
#[derive(Debug)]
pub struct CtrlrShared {
    /// Controller ID.
    pub cntlid: u16,
    /// Its subsystem's ID.
    pub subsys_id: u32,
    /// The subsystem's NQN.
    pub subnqn: String,
    /// The listener its admin queue connected through (its I/O queues must too when
    /// the subsystem reports ANA; its ANA states are this listener's).
    pub listener: ListenAddr,
    /// The host's NQN.
    pub hostnqn: String,
    /// The host's identifier.
    pub hostid: [u8; 16],
    /// The thread of its admin queue.
    pub admin_thread: ThreadHandle,
    /// CC.EN, as last set by the host.
    pub enabled: AtomicBool,
    /// I/O queues granted by Set Features Number of Queues (0: not set; Get Features
    /// then reports `max_io_queues`). A host need not send the feature before it
    /// connects I/O queues, as on SPDK's target and Linux's nvmet.
    pub io_queues: AtomicU16,
    /// The most I/O queues it may have (the transport's `max_io_qpairs_per_ctrlr`):
    /// the bound on an I/O Connect's QID.
    pub max_io_queues: u16,
    /// Set once it is being torn down: no queue may join it any more.
    pub gone: AtomicBool,
    /// Connected I/O queues, by queue ID, with their threads.
    qpairs: Mutex<BTreeMap<u16, ThreadHandle>>,
    /// Bytes of in-capsule data its I/O queues accept.
    pub icd_size: AtomicU32,
    /// Whether its I/O queues log each command they complete (`pollux_trace_commands`).
    pub trace: AtomicBool,
    target: std::sync::Weak<Target>,
}

impl CtrlrShared {
    /// The I/O queues connected now.
    pub fn io_qpair_count(&self) -> usize {
        lock(&self.qpairs).len()
    }

    /// The thread of I/O queue `qid`, if it is connected.
    pub(crate) fn io_thread(&self, qid: u16) -> Option<ThreadHandle> {
        lock(&self.qpairs).get(&qid).cloned()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic on another thread while holding the lock leaves the data usable: every
    // update below is a single insert or remove.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a transport needs to know when a host connects.
#[derive(Debug)]
pub(crate) struct ConnectReq<'a> {
    pub subnqn: &'a str,
    pub hostnqn: &'a str,
    pub hostid: [u8; 16],
    pub qid: u16,
    pub cntlid: u16,
    pub local: ListenAddr,
}

/// Why a Connect fails: the status and, for an invalid parameter, where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnectRefusal {
    /// A field of the Connect data (byte offset).
    InvalidData(u16),
    /// A field of the Connect command (byte offset in the SQE).
    InvalidCmd(u16),
    /// The host is not allowed.
    InvalidHost,
    /// The controller cannot take another queue.
    Busy,
}

struct TargetState {
    transports: BTreeMap<Trtype, TransportOpts>,
    subsystems: BTreeMap<String, Subsystem>,
    next_subsys_id: u32,
    discovery_genctr: u64,
    ctrlrs: HashMap<(u32, u16), Arc<CtrlrShared>>,
    listeners: BTreeMap<ListenAddr, Listener>,
    poll_groups: Vec<ThreadHandle>,
    next_pg: usize,
    qpairs_accepted: u64,
}

/// The NVMe-oF target of one engine.
pub struct Target {
    me: std::sync::Weak<Target>,
    engine: EngineHandle,
    state: Mutex<TargetState>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("Target")
            .field("subsystems", &s.subsystems.keys().collect::<Vec<_>>())
            .field("listeners", &s.listeners.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A snapshot of what the target has, for RPC output.
#[derive(Clone, Debug)]
pub struct TargetInfo {
    /// The transports created, with their options.
    pub transports: Vec<(Trtype, TransportOpts)>,
    /// Subsystems, discovery first.
    pub subsystems: Vec<Subsystem>,
    /// Controllers by subsystem ID: (cntlid, hostnqn, I/O queues).
    pub ctrlrs: Vec<(u32, u16, String, usize)>,
}

/// A controller as `nvmf_subsystem_get_controllers` and `_get_qpairs` show it.
#[derive(Clone, Debug)]
pub struct CtrlrInfo {
    /// Controller ID.
    pub cntlid: u16,
    /// The host's NQN.
    pub hostnqn: String,
    /// The host's identifier.
    pub hostid: uuid::Uuid,
    /// Its queues (0: the admin queue), each with its poll group's thread.
    pub queues: Vec<(u16, String)>,
}

impl Target {
    /// A target with only the discovery subsystem. Poll groups start with the transport.
    pub fn new(engine: EngineHandle) -> Arc<Target> {
        let mut subsystems = BTreeMap::new();
        subsystems.insert(
            DISCOVERY_NQN.to_owned(),
            Subsystem {
                id: 0,
                nqn: DISCOVERY_NQN.to_owned(),
                subtype: SubsysType::Discovery,
                serial: SERIAL_DEFAULT.to_owned(),
                model: MODEL_DEFAULT.to_owned(),
                allow_any_host: true,
                hosts: BTreeSet::new(),
                max_namespaces: 0,
                min_cntlid: 1,
                max_cntlid: 0xffef,
                limits: IoLimits::default(),
                trace: None,
                namespaces: BTreeMap::new(),
                listeners: BTreeSet::new(),
                ana_reporting: false,
                ana: BTreeMap::new(),
                next_cntlid: 1,
            },
        );
        let tgt = Arc::new_cyclic(|me| Target {
            me: me.clone(),
            engine,
            state: Mutex::new(TargetState {
                transports: BTreeMap::new(),
                subsystems,
                next_subsys_id: 1,
                discovery_genctr: 0,
                ctrlrs: HashMap::new(),
                listeners: BTreeMap::new(),
                poll_groups: Vec::new(),
                next_pg: 0,
                qpairs_accepted: 0,
            }),
        });
        // A namespace's bdev that changes size: its hosts get Namespace Attribute
        // Changed (as SPDK's target on a bdev resize event).
        let me = Arc::downgrade(&tgt);
        tgt.engine.bdevs().on_resize(Box::new(move |name| {
            if let Some(t) = me.upgrade() {
                t.bdev_resized(name);
            }
        }));
        tgt
    }

    /// Bdev `name` changed size: every namespace on it is changed.
    fn bdev_resized(&self, name: &str) {
        let hit: Vec<(u32, u32)> = lock(&self.state)
            .subsystems
            .values()
            .flat_map(|ss| {
                ss.namespaces
                    .values()
                    .filter(|n| n.bdev.name() == name)
                    .map(|n| (ss.id, n.nsid))
            })
            .collect();
        for (sid, nsid) in hit {
            tracing::info!(bdev = name, nsid, "namespace resized: hosts are told");
            self.notify_ns_change(sid, nsid);
        }
    }

    /// The engine it runs on.
    pub fn engine(&self) -> &EngineHandle {
        &self.engine
    }

    /// Creates a transport; the first one starts one poll group per reactor core.
    pub fn create_transport(
        self: &Arc<Self>,
        trtype: Trtype,
        opts: TransportOpts,
    ) -> Result<(), NvmfError> {
        let iobuf = self.engine.iobuf();
        opts.validate(iobuf)?;
        let levels = iobuf.pool_levels();
        let count = if opts.io_unit_size as usize <= iobuf.small_bufsize() {
            levels[0].2
        } else {
            levels[0].2.min(levels[1].2)
        };
        if opts.num_shared_buffers as usize > count {
            tracing::warn!(
                %trtype,
                num_shared_buffers = opts.num_shared_buffers,
                pool = count,
                "num_shared_buffers is larger than the iobuf pools hold: raise them with iobuf_set_options (or polluxd without --small-pools)"
            );
        }
        if trtype == Trtype::Rdma {
            rdma::check_available()?;
        }
        if opts.cmb_buffers == CmbBuffers::Force {
            // What add_ns checks for namespaces added later, for those already there.
            let bdevs: Vec<Arc<Bdev>> = lock(&self.state)
                .subsystems
                .values()
                .flat_map(|ss| ss.namespaces.values().map(|n| n.bdev.clone()))
                .collect();
            for b in &bdevs {
                forced_cmb_check(trtype, &opts, b)?;
            }
        }
        let mut s = lock(&self.state);
        if s.transports.contains_key(&trtype) {
            return err(format!("transport {trtype} already exists"));
        }
        if s.poll_groups.is_empty() {
            let mut pgs = Vec::new();
            for core in self.engine.cores() {
                let name = format!("nvmf_tgt_poll_group_{:03}", pgs.len());
                let t = self
                    .engine
                    .spawn_thread(&name, Some(core))
                    .map_err(|e| NvmfError(format!("cannot start poll group: {e}")))?;
                let tgt = self.clone();
                t.send_msg(move || PollGroup::start(&tgt))
                    .map_err(|_| NvmfError("cannot start poll group: thread gone".into()))?;
                pgs.push(t);
            }
            s.poll_groups = pgs;
        }
        s.transports.insert(trtype, opts);
        Ok(())
    }

    /// A transport's options, if it was created.
    pub fn transport(&self, trtype: Trtype) -> Option<TransportOpts> {
        lock(&self.state).transports.get(&trtype).cloned()
    }

    /// The poll groups' threads.
    pub fn poll_groups(&self) -> Vec<ThreadHandle> {
        lock(&self.state).poll_groups.clone()
    }

    /// Creates a subsystem.
    pub fn create_subsystem(&self, p: SubsysParams) -> Result<(), NvmfError> {
        validate_nqn(&p.nqn).map_err(|e| NvmfError(format!("invalid NQN {:?}: {e}", p.nqn)))?;
        let serial = p.serial.unwrap_or_else(|| SERIAL_DEFAULT.to_owned());
        let model = p.model.unwrap_or_else(|| MODEL_DEFAULT.to_owned());
        if serial.len() > 20 || !serial.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return err(format!(
                "serial number {serial:?} must be at most 20 printable ASCII characters"
            ));
        }
        if model.len() > 40 || !model.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return err(format!(
                "model number {model:?} must be at most 40 printable ASCII characters"
            ));
        }
        if p.max_namespaces > MAX_NAMESPACES_LIMIT {
            return err(format!(
                "max_namespaces {} is above the limit of {MAX_NAMESPACES_LIMIT}",
                p.max_namespaces
            ));
        }
        let (min_cntlid, max_cntlid) = (
            if p.min_cntlid == 0 { 1 } else { p.min_cntlid },
            if p.max_cntlid == 0 {
                0xffef
            } else {
                p.max_cntlid
            },
        );
        if min_cntlid > max_cntlid || max_cntlid > 0xffef {
            return err("min_cntlid and max_cntlid must satisfy 1 <= min <= max <= 65519");
        }
        let mut s = lock(&self.state);
        if s.subsystems.contains_key(&p.nqn) {
            return err(format!("subsystem {} already exists", p.nqn));
        }
        let id = s.next_subsys_id;
        s.next_subsys_id += 1;
        s.subsystems.insert(
            p.nqn.clone(),
            Subsystem {
                id,
                nqn: p.nqn,
                subtype: SubsysType::Nvme,
                serial,
                model,
                allow_any_host: p.allow_any_host,
                hosts: BTreeSet::new(),
                max_namespaces: if p.max_namespaces == 0 {
                    MAX_NAMESPACES_DEFAULT
                } else {
                    p.max_namespaces
                },
                min_cntlid,
                max_cntlid,
                limits: p.limits,
                trace: None,
                namespaces: BTreeMap::new(),
                listeners: BTreeSet::new(),
                ana_reporting: p.ana_reporting,
                ana: BTreeMap::new(),
                next_cntlid: min_cntlid,
            },
        );
        s.discovery_genctr += 1;
        Ok(())
    }

    fn subsys_mut<'a>(s: &'a mut TargetState, nqn: &str) -> Result<&'a mut Subsystem, NvmfError> {
        match s.subsystems.get_mut(nqn) {
            Some(ss) if ss.subtype == SubsysType::Nvme => Ok(ss),
            Some(_) => err("the discovery subsystem cannot be changed"),
            None => err(format!("subsystem {nqn} does not exist")),
        }
    }

    /// Deletes a subsystem: its controllers are torn down.
    pub fn delete_subsystem(&self, nqn: &str) -> Result<(), NvmfError> {
        let mut stop = Vec::new();
        let (id, ctrlrs) = {
            let mut s = lock(&self.state);
            let ss = Self::subsys_mut(&mut s, nqn)?;
            let id = ss.id;
            let listeners: Vec<ListenAddr> = ss.listeners.iter().copied().collect();
            s.subsystems.remove(nqn);
            for l in listeners {
                stop.extend(Self::release_listener(&mut s, l));
            }
            s.discovery_genctr += 1;
            let ctrlrs: Vec<Arc<CtrlrShared>> = s
                .ctrlrs
                .values()
                .filter(|c| c.subsys_id == id)
                .cloned()
                .collect();
            (id, ctrlrs)
        };
        // Outside the lock: stopping waits for the poll group, which may want it.
        for l in stop {
            l.stop();
        }
        for c in ctrlrs {
            self.teardown_ctrlr(&c, "its subsystem was deleted");
        }
        self.broadcast(move |pg| pg.drop_subsystem(id));
        Ok(())
    }

    /// Adds a namespace; returns its ID.
    pub fn add_ns(&self, nqn: &str, bdev: Arc<Bdev>, o: NsOpts) -> Result<u32, NvmfError> {
        let NsOpts {
            nsid,
            uuid,
            nguid,
            eui64,
            anagrpid,
            ptpl_file,
        } = o;
        let resv = Arc::new(resv::Reservations::new(ptpl_file)?);
        let forced: Vec<(Trtype, TransportOpts)> = lock(&self.state)
            .transports
            .iter()
            .filter(|(_, o)| o.cmb_buffers == CmbBuffers::Force)
            .map(|(t, o)| (*t, o.clone()))
            .collect();
        for (t, o) in &forced {
            forced_cmb_check(*t, o, &bdev)?;
        }
        let (id, ns) = {
            let mut s = lock(&self.state);
            let ss = Self::subsys_mut(&mut s, nqn)?;
            let nsid = if nsid == 0 {
                (1..=ss.max_namespaces)
                    .find(|i| !ss.namespaces.contains_key(i))
                    .ok_or_else(|| {
                        NvmfError(format!(
                            "subsystem {nqn} is full ({} namespaces)",
                            ss.max_namespaces
                        ))
                    })?
            } else {
                nsid
            };
            if nsid > ss.max_namespaces || nsid == 0xffff_ffff {
                return err(format!(
                    "nsid {nsid} is beyond the subsystem's max_namespaces {}",
                    ss.max_namespaces
                ));
            }
            if ss.namespaces.contains_key(&nsid) {
                return err(format!("nsid {nsid} is already in use in {nqn}"));
            }
            if let Some(o) = ss
                .namespaces
                .values()
                .find(|n| n.bdev.name() == bdev.name())
            {
                return err(format!(
                    "bdev {} is already namespace {} of {nqn}",
                    bdev.name(),
                    o.nsid
                ));
            }
            if anagrpid > ss.max_namespaces {
                return err(format!(
                    "anagrpid {anagrpid} is beyond the subsystem's max_namespaces {}",
                    ss.max_namespaces
                ));
            }
            let ns = Namespace {
                nsid,
                uuid: uuid.unwrap_or_else(|| bdev.uuid()),
                bdev,
                nguid,
                eui64,
                anagrpid: if anagrpid == 0 { nsid } else { anagrpid },
                resv,
            };
            ss.namespaces.insert(nsid, ns.clone());
            (ss.id, ns)
        };
        let nsid = ns.nsid;
        self.broadcast(move |pg| pg.set_ns(id, nsid, Some(ns.clone())));
        self.notify_ns_change(id, nsid);
        Ok(nsid)
    }

    /// Removes a namespace.
    pub fn remove_ns(&self, nqn: &str, nsid: u32) -> Result<(), NvmfError> {
        let id = {
            let mut s = lock(&self.state);
            let ss = Self::subsys_mut(&mut s, nqn)?;
            if ss.namespaces.remove(&nsid).is_none() {
                return err(format!("subsystem {nqn} has no namespace {nsid}"));
            }
            ss.id
        };
        self.broadcast(move |pg| pg.set_ns(id, nsid, None));
        self.notify_ns_change(id, nsid);
        Ok(())
    }

    /// Adds a listen address to a subsystem (and starts listening on it).
    pub fn add_listener(&self, nqn: &str, addr: ListenAddr) -> Result<(), NvmfError> {
        let mut s = lock(&self.state);
        if !s.transports.contains_key(&addr.trtype) {
            return err(format!(
                "create the {t} transport first (nvmf_create_transport -t {t})",
                t = addr.trtype
            ));
        }
        {
            let ss = s
                .subsystems
                .get(nqn)
                .ok_or_else(|| NvmfError(format!("subsystem {nqn} does not exist")))?;
            if ss.listeners.contains(&addr) {
                return err(format!("{nqn} already listens on {addr}"));
            }
        }
        if !s.listeners.contains_key(&addr) {
            let pg = s.poll_groups[0].clone();
            let l = match addr.trtype {
                Trtype::Tcp => tcp::listen(addr, &pg, &self.self_arc()),
                Trtype::Rdma => {
                    let backlog = s.transports[&Trtype::Rdma].acceptor_backlog;
                    rdma::listen(addr, backlog, &pg, &self.self_arc())
                }
            }
            .map_err(|e| NvmfError(format!("cannot listen on {addr}: {e}")))?;
            s.listeners.insert(addr, l);
        }
        let ss = s.subsystems.get_mut(nqn).expect("checked above");
        ss.listeners.insert(addr);
        let groups = ss.max_namespaces;
        ss.ana
            .insert(addr, ListenerAna::new(groups, ana_state::OPTIMIZED));
        s.discovery_genctr += 1;
        Ok(())
    }

    /// Removes a listen address from a subsystem; the port closes when no subsystem
    /// listens on it. Connections already made stay.
    pub fn remove_listener(&self, nqn: &str, addr: ListenAddr) -> Result<(), NvmfError> {
        let stop = {
            let mut s = lock(&self.state);
            let ss = s
                .subsystems
                .get_mut(nqn)
                .ok_or_else(|| NvmfError(format!("subsystem {nqn} does not exist")))?;
            if !ss.listeners.remove(&addr) {
                return err(format!("{nqn} does not listen on {addr}"));
            }
            ss.ana.remove(&addr);
            s.discovery_genctr += 1;
            Self::release_listener(&mut s, addr)
        };
        if let Some(l) = stop {
            l.stop();
        }
        Ok(())
    }

    /// Sets the ANA state of group `anagrpid` (0: every group) seen through listener
    /// `addr` (SPDK's `nvmf_subsystem_listener_set_ana_state`). Controllers connected
    /// through it get an ANA Change event, and their I/O queues follow at once.
    pub fn set_ana_state(
        &self,
        nqn: &str,
        addr: ListenAddr,
        state: u8,
        anagrpid: u32,
    ) -> Result<(), NvmfError> {
        if !matches!(
            state,
            ana_state::OPTIMIZED | ana_state::NON_OPTIMIZED | ana_state::INACCESSIBLE
        ) {
            return err(format!(
                "ANA state {} cannot be set (optimized, non_optimized or inaccessible)",
                ana_state::name(state)
            ));
        }
        let (sid, states, ctrlrs) = {
            let mut s = lock(&self.state);
            let ss = Self::subsys_mut(&mut s, nqn)?;
            if !ss.ana_reporting {
                return err(format!(
                    "{nqn} does not report ANA (create it with ana_reporting)"
                ));
            }
            if anagrpid > ss.max_namespaces {
                return err(format!(
                    "anagrpid {anagrpid} is beyond the subsystem's max_namespaces {}",
                    ss.max_namespaces
                ));
            }
            let sid = ss.id;
            let a = ss
                .ana
                .get_mut(&addr)
                .ok_or_else(|| NvmfError(format!("{nqn} does not listen on {addr}")))?;
            if anagrpid != 0 && a.state(anagrpid) == state {
                return Ok(());
            }
            for (i, st) in a.states.iter_mut().enumerate() {
                if anagrpid == 0 || i as u32 + 1 == anagrpid {
                    *st = state;
                }
            }
            a.change_count += 1;
            let states = a.states.clone();
            let ctrlrs: Vec<Arc<CtrlrShared>> = s
                .ctrlrs
                .values()
                .filter(|c| c.subsys_id == sid && c.listener == addr)
                .cloned()
                .collect();
            (sid, states, ctrlrs)
        };
        tracing::info!(nqn, %addr, anagrpid, state = ana_state::name(state), "ANA state set");
        let states = Arc::new(states);
        self.broadcast(move |pg| pg.set_ana(sid, addr, &states));
        for c in ctrlrs {
            let tgt = self.self_arc();
            let cntlid = c.cntlid;
            let _ = c.admin_thread.send_msg(move || {
                if let Some(pg) = PollGroup::current(&tgt) {
                    pg.ana_changed(sid, cntlid);
                }
            });
        }
        Ok(())
    }

    /// The listener to stop (outside the lock) when no subsystem uses `addr` any more.
    fn release_listener(s: &mut TargetState, addr: ListenAddr) -> Option<Listener> {
        if s.subsystems.values().any(|ss| ss.listeners.contains(&addr)) {
            return None;
        }
        s.listeners.remove(&addr)
    }

    /// Allows a host NQN.
    pub fn add_host(&self, nqn: &str, host: &str) -> Result<(), NvmfError> {
        validate_nqn(host).map_err(|e| NvmfError(format!("invalid host NQN {host:?}: {e}")))?;
        let mut s = lock(&self.state);
        let ss = Self::subsys_mut(&mut s, nqn)?;
        if !ss.hosts.insert(host.to_owned()) {
            return err(format!("host {host} is already allowed on {nqn}"));
        }
        s.discovery_genctr += 1;
        Ok(())
    }

    /// Disallows a host NQN; its controllers are torn down.
    pub fn remove_host(&self, nqn: &str, host: &str) -> Result<(), NvmfError> {
        let ctrlrs: Vec<Arc<CtrlrShared>> = {
            let mut s = lock(&self.state);
            let ss = Self::subsys_mut(&mut s, nqn)?;
            if !ss.hosts.remove(host) {
                return err(format!("host {host} is not allowed on {nqn}"));
            }
            let (id, any) = (ss.id, ss.allow_any_host);
            s.discovery_genctr += 1;
            if any {
                Vec::new()
            } else {
                s.ctrlrs
                    .values()
                    .filter(|c| c.subsys_id == id && c.hostnqn == host)
                    .cloned()
                    .collect()
            }
        };
        for c in ctrlrs {
            self.teardown_ctrlr(&c, "its host was removed from the subsystem");
        }
        Ok(())
    }

    /// Sets whether any host may connect.
    pub fn allow_any_host(&self, nqn: &str, allow: bool) -> Result<(), NvmfError> {
        let mut s = lock(&self.state);
        let ss = Self::subsys_mut(&mut s, nqn)?;
        ss.allow_any_host = allow;
        s.discovery_genctr += 1;
        Ok(())
    }

    /// A snapshot for RPC output.
    pub fn info(&self) -> TargetInfo {
        let s = lock(&self.state);
        let mut subsystems: Vec<Subsystem> = s.subsystems.values().cloned().collect();
        subsystems.sort_by_key(|ss| ss.id);
        TargetInfo {
            transports: s.transports.iter().map(|(t, o)| (*t, o.clone())).collect(),
            subsystems,
            ctrlrs: s
                .ctrlrs
                .values()
                .map(|c| (c.subsys_id, c.cntlid, c.hostnqn.clone(), c.io_qpair_count()))
                .collect(),
        }
    }

    /// The controllers of subsystem `nqn` now, by controller ID.
    pub fn controllers(&self, nqn: &str) -> Vec<CtrlrInfo> {
        let s = lock(&self.state);
        let Some(id) = s.subsystems.get(nqn).map(|ss| ss.id) else {
            return Vec::new();
        };
        let mut out: Vec<CtrlrInfo> = s
            .ctrlrs
            .values()
            .filter(|c| c.subsys_id == id)
            .map(|c| CtrlrInfo {
                cntlid: c.cntlid,
                hostnqn: c.hostnqn.clone(),
                hostid: uuid::Uuid::from_bytes(c.hostid),
                queues: std::iter::once((0, c.admin_thread.name().to_owned()))
                    .chain(
                        lock(&c.qpairs)
                            .iter()
                            .map(|(q, t)| (*q, t.name().to_owned())),
                    )
                    .collect(),
            })
            .collect();
        out.sort_by_key(|c| c.cntlid);
        out
    }

    /// A subsystem's configuration, by ID.
    pub(crate) fn subsystem_by_id(&self, id: u32) -> Option<Subsystem> {
        lock(&self.state)
            .subsystems
            .values()
            .find(|s| s.id == id)
            .cloned()
    }

    /// The discovery log's generation counter and entries for `hostnqn`: every
    /// (subsystem, listener) pair the host may use.
    pub(crate) fn discovery_entries(&self, hostnqn: &str) -> (u64, Vec<(Subsystem, ListenAddr)>) {
        let s = lock(&self.state);
        let mut out = Vec::new();
        for ss in s.subsystems.values() {
            if ss.subtype == SubsysType::Discovery {
                for l in &ss.listeners {
                    out.push((ss.clone(), *l));
                }
                continue;
            }
            if !ss.host_allowed(hostnqn) {
                continue;
            }
            for l in &ss.listeners {
                out.push((ss.clone(), *l));
            }
        }
        (s.discovery_genctr, out)
    }

    /// Picks the poll group for a new connection (round robin).
    pub(crate) fn next_poll_group(&self) -> Option<ThreadHandle> {
        let mut s = lock(&self.state);
        if s.poll_groups.is_empty() {
            return None;
        }
        let i = s.next_pg % s.poll_groups.len();
        s.next_pg += 1;
        s.qpairs_accepted += 1;
        Some(s.poll_groups[i].clone())
    }

    /// Traces the commands of subsystem `nqn`'s I/O queues (each one logged as it
    /// completes: opcode, CID, LBA, blocks, status, latency), of host `host` only or of
    /// every host; or stops (`on` false: every host). Controllers connected now follow
    /// at once, later ones when they connect.
    pub fn set_trace(&self, nqn: &str, host: Option<&str>, on: bool) -> Result<(), NvmfError> {
        let mut s = lock(&self.state);
        let Some(ss) = s.subsystems.get_mut(nqn) else {
            return err(format!("subsystem {nqn} does not exist"));
        };
        ss.trace = match (on, host, ss.trace.take()) {
            (false, _, _) => None,
            (true, None, _) => Some(BTreeSet::new()),
            // Every host's already: stays so.
            (true, Some(_), Some(all)) if all.is_empty() => Some(all),
            (true, Some(h), set) => {
                let mut set = set.unwrap_or_default();
                set.insert(h.to_owned());
                Some(set)
            }
        };
        let (id, rule) = (ss.id, ss.trace.clone());
        for ((sid, _), c) in &s.ctrlrs {
            if *sid == id {
                let t = rule
                    .as_ref()
                    .is_some_and(|h| h.is_empty() || h.contains(&c.hostnqn));
                c.trace.store(t, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Admits a Connect: for the admin queue creates the controller, for an I/O queue
    /// joins it. Returns the controller and its subsystem's ID.
    pub(crate) fn connect(
        &self,
        req: &ConnectReq<'_>,
        thread: &ThreadHandle,
    ) -> Result<(Arc<CtrlrShared>, Subsystem), ConnectRefusal> {
        // Offsets in the Connect data (fabrics 3.3, Figure 20) and command.
        const OFF_CNTLID: u16 = 16;
        const OFF_SUBNQN: u16 = 256;
        const OFF_HOSTNQN: u16 = 512;
        const OFF_QID: u16 = 42;
        let mut s = lock(&self.state);
        let ss = s
            .subsystems
            .get(req.subnqn)
            .ok_or(ConnectRefusal::InvalidData(OFF_SUBNQN))?;
        // The host NQN's form is not checked here, and it may be empty (SPDK's host
        // sends none unless given one; SPDK's target and Linux's nvmet take it): the
        // transport checked it ends within NQN_LEN_MAX bytes, and the allow list decides.
        let listening = ss.listeners.contains(&req.local)
            || (ss.subtype == SubsysType::Discovery && s.listeners.contains_key(&req.local));
        if !listening {
            // The subsystem does not listen where the host came in.
            return Err(ConnectRefusal::InvalidData(OFF_SUBNQN));
        }
        if !ss.host_allowed(req.hostnqn) {
            return Err(ConnectRefusal::InvalidHost);
        }
        let subsys = ss.clone();
        let ss_trace = ss
            .trace
            .as_ref()
            .is_some_and(|h| h.is_empty() || h.contains(req.hostnqn));
        if req.qid == 0 {
            if req.cntlid != 0xffff {
                // Only dynamic controllers.
                return Err(ConnectRefusal::InvalidData(OFF_CNTLID));
            }
            let id = ss.id;
            let (min, max) = (ss.min_cntlid, ss.max_cntlid);
            let mut cntlid = ss.next_cntlid;
            let span = (max - min) as u32 + 1;
            let mut tries = 0;
            while s.ctrlrs.contains_key(&(id, cntlid)) {
                cntlid = if cntlid >= max { min } else { cntlid + 1 };
                tries += 1;
                if tries > span {
                    return Err(ConnectRefusal::Busy);
                }
            }
            let next = if cntlid >= max { min } else { cntlid + 1 };
            let transport = s.transports.get(&req.local.trtype).cloned();
            let transport = transport.as_ref();
            s.subsystems
                .get_mut(req.subnqn)
                .expect("looked up above")
                .next_cntlid = next;
            let c = Arc::new(CtrlrShared {
                cntlid,
                subsys_id: id,
                subnqn: req.subnqn.to_owned(),
                listener: req.local,
                hostnqn: req.hostnqn.to_owned(),
                hostid: req.hostid,
                admin_thread: thread.clone(),
                enabled: AtomicBool::new(false),
                io_queues: AtomicU16::new(0),
                max_io_queues: transport
                    .map(|t| t.max_io_qpairs_per_ctrlr.min(u16::MAX as u32) as u16)
                    .unwrap_or(1),
                gone: AtomicBool::new(false),
                qpairs: Mutex::new(BTreeMap::new()),
                icd_size: AtomicU32::new(transport.map(|t| t.in_capsule_data_size).unwrap_or(0)),
                trace: AtomicBool::new(ss_trace),
                target: self.me.clone(),
            });
            s.ctrlrs.insert((id, cntlid), c.clone());
            return Ok((c, subsys));
        }
        if ss.subtype == SubsysType::Discovery {
            return Err(ConnectRefusal::InvalidCmd(OFF_QID));
        }
        let c = s
            .ctrlrs
            .get(&(ss.id, req.cntlid))
            .cloned()
            .ok_or(ConnectRefusal::InvalidData(OFF_CNTLID))?;
        drop(s);
        if c.hostnqn != req.hostnqn {
            return Err(ConnectRefusal::InvalidData(OFF_HOSTNQN));
        }
        // With ANA, a controller's queues share its listener and so its ANA states (as
        // on SPDK's target).
        if subsys.ana_reporting && c.listener != req.local {
            return Err(ConnectRefusal::InvalidCmd(OFF_QID));
        }
        if !c.enabled.load(Ordering::Acquire) {
            return Err(ConnectRefusal::InvalidCmd(OFF_QID));
        }
        // The bound is the controller's maximum whatever Set Features Number of Queues
        // granted, or if it never came: SPDK's target and Linux's nvmet do the same.
        if req.qid > c.max_io_queues {
            return Err(ConnectRefusal::InvalidCmd(OFF_QID));
        }
        // `gone` is read and the queue joins under the queue lock, which ctrlr_gone also
        // takes to set `gone`: a queue joins before the teardown sees the list, or not
        // at all.
        let mut q = lock(&c.qpairs);
        if c.gone.load(Ordering::Acquire) {
            return Err(ConnectRefusal::InvalidData(OFF_CNTLID));
        }
        if q.contains_key(&req.qid) {
            return Err(ConnectRefusal::InvalidCmd(OFF_QID));
        }
        q.insert(req.qid, thread.clone());
        drop(q);
        Ok((c, subsys))
    }

    /// An I/O queue of `c` went away.
    pub(crate) fn io_qpair_gone(&self, c: &CtrlrShared, qid: u16) {
        lock(&c.qpairs).remove(&qid);
    }

    /// The admin queue of `c` went away: the controller goes, and its I/O queues are
    /// closed.
    pub(crate) fn ctrlr_gone(&self, c: &Arc<CtrlrShared>) {
        lock(&self.state).ctrlrs.remove(&(c.subsys_id, c.cntlid));
        let qs: Vec<ThreadHandle> = {
            let q = lock(&c.qpairs);
            c.gone.store(true, Ordering::Release);
            q.values().cloned().collect()
        };
        let mut seen = BTreeSet::new();
        for t in qs {
            if seen.insert(t.id().0) {
                let (sid, cntlid) = (c.subsys_id, c.cntlid);
                let tgt = self.self_arc();
                let _ = t.send_msg(move || {
                    if let Some(pg) = PollGroup::current(&tgt) {
                        pg.close_ctrlr_qpairs(sid, cntlid);
                    }
                });
            }
        }
    }

    /// Tears a controller down from any thread: its admin queue's thread closes it.
    pub(crate) fn teardown_ctrlr(&self, c: &Arc<CtrlrShared>, why: &'static str) {
        let tgt = self.self_arc();
        let (sid, cntlid) = (c.subsys_id, c.cntlid);
        let _ = c.admin_thread.send_msg(move || {
            if let Some(pg) = PollGroup::current(&tgt) {
                pg.close_admin(sid, cntlid, why);
            }
        });
    }

    fn notify_ns_change(&self, sid: u32, nsid: u32) {
        let ctrlrs: Vec<Arc<CtrlrShared>> = lock(&self.state)
            .ctrlrs
            .values()
            .filter(|c| c.subsys_id == sid)
            .cloned()
            .collect();
        for c in ctrlrs {
            let tgt = self.self_arc();
            let cntlid = c.cntlid;
            let _ = c.admin_thread.send_msg(move || {
                if let Some(pg) = PollGroup::current(&tgt) {
                    pg.ns_changed(sid, cntlid, nsid);
                }
            });
        }
    }

    fn broadcast(&self, f: impl Fn(&PollGroup) + Send + Sync + 'static) {
        let pgs = lock(&self.state).poll_groups.clone();
        let f = Arc::new(f);
        for t in pgs {
            let tgt = self.self_arc();
            let f = f.clone();
            let _ = t.send_msg(move || {
                if let Some(pg) = PollGroup::current(&tgt) {
                    f(&pg);
                }
            });
        }
    }

    fn self_arc(&self) -> Arc<Target> {
        self.me
            .upgrade()
            .expect("a target is used only while alive")
    }

    /// Stops listening, closes every connection and stops the poll groups; returns when
    /// they have exited (or after `timeout`).
    pub fn shutdown(self: &Arc<Self>, timeout: std::time::Duration) {
        let (listeners, pgs) = {
            let mut s = lock(&self.state);
            let l: Vec<Listener> = std::mem::take(&mut s.listeners).into_values().collect();
            (l, std::mem::take(&mut s.poll_groups))
        };
        for l in listeners {
            l.stop();
        }
        for t in &pgs {
            let tgt = self.clone();
            let _ = t.send_msg(move || {
                if let Some(pg) = PollGroup::current(&tgt) {
                    pg.stop();
                }
            });
        }
        let deadline = std::time::Instant::now() + timeout;
        while pgs.iter().any(|t| !t.has_exited()) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}
