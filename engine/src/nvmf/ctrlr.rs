//! Controller semantics, independent of the transport: properties, admin commands
//! (Identify, Get Log Page, features, Asynchronous Event Requests, Keep Alive, Abort),
//! and the plan of each NVM I/O command.
//!
//! A `Ctrlr` lives on the thread of its admin queue and is driven by that queue's
//! transport: it never blocks, and an Asynchronous Event Request is the only command it
//! holds (the transport completes it when an event comes).

use super::{CtrlrShared, SubsysType, Subsystem, Target, TransportOpts, Trtype};
use crate::bdev::IoKind;
use crate::nvmf::poll_group::PollGroup;
use crate::thread::Nanos;
use pollux_nvme::spec::admin::{
    self, AbortDw, DsmDw, DsmRange, GetLogPageDw, IdentifyDw, NumQueues, RwDw, admin_opc,
    aer_notice, aer_type, cns, dsm_attr, feature, log_id, nvm_opc, sel,
};
use pollux_nvme::spec::cmd::{Sqe, Status};
use pollux_nvme::spec::fabrics::{FabricsCmd, PropertyFields, fctype};
use pollux_nvme::spec::identify::{
    self as id, IdentifyController, IdentifyNamespace, NsList, cntrltype,
};
use pollux_nvme::spec::log::{
    ANA_LSP_RGO, AnaGroup, DiscoveryLogEntry, DiscoveryLogHeader, ana_log_encode, ana_state,
};
use pollux_nvme::spec::regs::offset;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// NVMe version the controller reports (1.3, as SPDK's target).
pub const NVME_VERSION: u32 = 0x0001_0300;
/// Asynchronous Event Requests outstanding at most (AERL + 1).
pub const AER_MAX: usize = 4;
/// KATO of a discovery controller whose host asked for none.
const DISCOVERY_KATO_MS: u32 = 120_000;
/// CAP.TO: worst-case time to become ready, in 500 ms units.
const CAP_TO: u64 = 30;
/// Keep Alive Timer granularity reported in KAS, in 100 ms units.
const KAS: u16 = 10;
/// Status: Invalid Log Page (base 5.16, command specific 09h).
const INVALID_LOG_PAGE: Status = Status::specific(0x09);
/// Status: Asynchronous Event Request Limit Exceeded (command specific 05h).
const AER_LIMIT_EXCEEDED: Status = Status::specific(0x05);
/// Status: Feature Identifier Not Saveable (command specific 0Dh).
const NOT_SAVEABLE: Status = Status::specific(0x0d);
/// ANA Transition Time reported (seconds): states change at once here, but a host
/// waits this long in the change state before it gives up on a path.
const ANATT_SECS: u8 = 10;
/// Status: Invalid Queue Identifier (command specific 01h), for Abort of a bad SQID.
const FEATURE_NOT_CHANGEABLE: Status = Status::specific(0x0e);

/// What an admin command came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AdminOutcome {
    /// Complete it now.
    Done {
        /// Status.
        status: Status,
        /// Completion dword 0.
        dw0: u32,
    },
    /// Held (an Asynchronous Event Request).
    Held,
    /// An Abort that hit a held command `cid`: complete that one as aborted, then
    /// the Abort itself with `dw0`.
    Abort {
        /// The aborted command.
        cid: u16,
        /// The Abort's dword 0.
        dw0: u32,
    },
    /// An Abort of command `cid` of I/O queue `sqid`: held until that queue's thread
    /// says whether it stopped the command.
    AbortIo {
        /// The I/O queue.
        sqid: u16,
        /// The command.
        cid: u16,
    },
}

fn done(status: Status) -> AdminOutcome {
    AdminOutcome::Done { status, dw0: 0 }
}

fn ok(dw0: u32) -> AdminOutcome {
    AdminOutcome::Done {
        status: Status::SUCCESS,
        dw0,
    }
}

/// A controller's state, on its admin queue's thread.
pub(crate) struct Ctrlr {
    shared: Arc<CtrlrShared>,
    subsys: Subsystem,
    opts: TransportOpts,
    /// The transport of its admin queue.
    trtype: Trtype,
    /// The connection's local address (for wildcard listeners in the discovery log).
    local: std::net::SocketAddr,
    kato_ms: u32,
    last_ka: Nanos,
    cc: u32,
    csts: u32,
    aec: u32,
    /// Held AERs: (transport slot, CID).
    aers: Vec<(u16, u16)>,
    events: VecDeque<u32>,
    /// Notices raised and not yet cleared by reading their log page, as AEC bits: no
    /// second event of a kind until then (base 5.2).
    masked: u32,
    changed: Vec<u32>,
    changed_overflow: bool,
    queues_set: bool,
    features: [u32; 16],
}

impl Ctrlr {
    pub(crate) fn new(
        shared: Arc<CtrlrShared>,
        subsys: Subsystem,
        kato_ms: u32,
        opts: TransportOpts,
        trtype: Trtype,
        local: std::net::SocketAddr,
        now: Nanos,
    ) -> Ctrlr {
        // A discovery controller connected without KATO still goes after 2 minutes of
        // silence, as on Linux's target, so abandoned connections do not pile up.
        let kato_ms = if kato_ms == 0 && subsys.subtype == SubsysType::Discovery {
            DISCOVERY_KATO_MS
        } else {
            kato_ms
        };
        let mut features = [0u32; 16];
        // Temperature threshold: 343 K (70 C) over-temperature (base 5.27.1.4).
        features[feature::TEMPERATURE_THRESHOLD as usize] = 343;
        features[feature::VOLATILE_WRITE_CACHE as usize] = admin::VWC_WCE;
        // ANA Change notices are on from the start when the subsystem reports ANA, as
        // on SPDK's target.
        let aec = if subsys.ana_reporting {
            admin::aec::ANA_CHANGE_NOTICES
        } else {
            0
        };
        Ctrlr {
            shared,
            subsys,
            opts,
            trtype,
            local,
            kato_ms,
            last_ka: now,
            cc: 0,
            csts: 0,
            aec,
            aers: Vec::with_capacity(AER_MAX),
            events: VecDeque::new(),
            masked: 0,
            changed: Vec::new(),
            changed_overflow: false,
            queues_set: false,
            features,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<CtrlrShared> {
        &self.shared
    }

    fn is_discovery(&self) -> bool {
        self.subsys.subtype == SubsysType::Discovery
    }

    /// Whether the host has been silent for longer than KATO.
    pub(crate) fn keep_alive_expired(&self, now: Nanos) -> bool {
        self.kato_ms != 0 && now.saturating_sub(self.last_ka) > self.kato_ms as u64 * 1_000_000
    }

    fn cap(&self) -> u64 {
        let mqes = (self.opts.max_queue_depth - 1) as u64;
        // MQES, CQR (contiguous queues required), TO, CSS: NVM command set (bit 37).
        mqes | (1 << 16) | (CAP_TO << 24) | (1 << 37)
    }

    /// Property Get or Set (fabrics 3.4, 3.5): the status and the value read.
    pub(crate) fn property(&mut self, f: &FabricsCmd, now: Nanos) -> (Status, u64) {
        self.last_ka = now;
        let p = PropertyFields::read_from_bytes(&f.specific).expect("24 bytes");
        let Some(size) = p.size() else {
            return (Status::INVALID_FIELD, 0);
        };
        let ofst = p.ofst.get();
        let want = if ofst == offset::CAP { 8 } else { 4 };
        if f.fctype == fctype::PROPERTY_GET {
            let v = match ofst {
                offset::CAP => self.cap(),
                offset::VS => NVME_VERSION as u64,
                offset::CC => self.cc as u64,
                offset::CSTS => self.csts as u64,
                _ => return (Status::INVALID_FIELD, 0),
            };
            // An 8-byte read of a 4-byte property is allowed to read zeroes above.
            if size < want {
                return (Status::INVALID_FIELD, 0);
            }
            return (Status::SUCCESS, v);
        }
        if ofst != offset::CC || size != 4 {
            return (Status::INVALID_FIELD, 0);
        }
        let new = p.value.get() as u32;
        self.set_cc(new);
        (Status::SUCCESS, 0)
    }

    fn set_cc(&mut self, new: u32) {
        const EN: u32 = 1;
        const SHN_SHIFT: u32 = 14;
        const RDY: u32 = 1;
        const SHST_COMPLETE: u32 = 0b10 << 2;
        const CFS: u32 = 1 << 1;
        let old = self.cc;
        self.cc = new;
        let (iosqes, iocqes) = ((new >> 16) & 0xf, (new >> 20) & 0xf);
        if new & EN != 0 && old & EN == 0 && !self.is_discovery() && (iosqes != 6 || iocqes != 4) {
            // Queue entry sizes other than 64/16 bytes: controller fatal status.
            self.csts |= CFS;
            return;
        }
        if new & EN != 0 && old & EN == 0 {
            self.csts |= RDY;
            self.shared.enabled.store(true, Ordering::Release);
            tracing::debug!(cntlid = self.shared.cntlid, "controller enabled");
        } else if new & EN == 0 && old & EN != 0 {
            // A reset: the I/O queues go (the host reconnects them).
            self.csts &= !RDY;
            self.shared.enabled.store(false, Ordering::Release);
            self.drop_io_queues();
        }
        if (new >> SHN_SHIFT) & 0b11 != 0 {
            // Normal or abrupt shutdown: nothing volatile to write back, so at once.
            self.csts |= SHST_COMPLETE;
            self.drop_io_queues();
        } else {
            self.csts &= !SHST_COMPLETE;
        }
    }

    fn drop_io_queues(&mut self) {
        self.shared.enabled.store(false, Ordering::Release);
        let tgt_threads: Vec<_> = self.shared.io_threads();
        let (sid, cntlid) = (self.shared.subsys_id, self.shared.cntlid);
        for (t, tgt) in tgt_threads {
            let _ = t.send_msg(move || {
                if let Some(pg) = PollGroup::current(&tgt) {
                    pg.close_ctrlr_qpairs(sid, cntlid);
                }
            });
        }
        self.queues_set = false;
        self.shared.io_queues.store(0, Ordering::Release);
    }

    /// Runs an admin command. `data` is the command's buffer: filled for commands that
    /// return data, read for those that carry it.
    pub(crate) fn admin(
        &mut self,
        tgt: &Arc<Target>,
        _pg: &PollGroup,
        sqe: &Sqe,
        data: Option<&mut [u8]>,
        slot: u16,
        now: Nanos,
    ) -> AdminOutcome {
        // Any admin command restarts the keep-alive timer.
        self.last_ka = now;
        if self.cc & 1 == 0 || self.csts & 1 == 0 {
            // Not enabled: only Fabrics commands (handled by the transport).
            return done(Status::COMMAND_SEQUENCE_ERROR);
        }
        let discovery = self.is_discovery();
        match sqe.opc {
            admin_opc::IDENTIFY => self.identify(tgt, sqe, data),
            admin_opc::GET_LOG_PAGE => self.get_log_page(tgt, sqe, data),
            admin_opc::KEEP_ALIVE => ok(0),
            admin_opc::ASYNC_EVENT_REQUEST => {
                if self.aers.len() >= AER_MAX {
                    return done(AER_LIMIT_EXCEEDED);
                }
                if let Some(ev) = self.events.pop_front() {
                    return ok(ev);
                }
                self.aers.push((slot, sqe.cid.get()));
                AdminOutcome::Held
            }
            admin_opc::SET_FEATURES => self.set_features(tgt, sqe, data),
            admin_opc::GET_FEATURES => self.get_features(tgt, sqe, data),
            admin_opc::ABORT if !discovery => {
                let a = AbortDw::from_sqe(sqe);
                if a.sqid != 0 {
                    return AdminOutcome::AbortIo {
                        sqid: a.sqid,
                        cid: a.cid,
                    };
                }
                if self.aers.iter().any(|&(_, cid)| cid == a.cid) {
                    return AdminOutcome::Abort { cid: a.cid, dw0: 0 };
                }
                // Other admin commands finish on their own; the spec allows that.
                ok(admin::ABORT_DW0_NOT_ABORTED)
            }
            _ => done(Status::INVALID_OPCODE),
        }
    }

    /// Takes the held AER with command ID `cid`; returns its transport slot.
    pub(crate) fn take_aer_by_cid(&mut self, cid: u16) -> Option<u16> {
        let i = self.aers.iter().position(|&(_, c)| c == cid)?;
        Some(self.aers.remove(i).0)
    }

    /// A namespace of the subsystem was added or removed: records it in the Changed
    /// Namespace List and, when the host asked for such notices, raises the event.
    /// Returns the held AER to complete now, with its dword 0.
    pub(crate) fn ns_changed(&mut self, nsid: u32) -> Option<(u16, u32)> {
        if !self.changed_overflow && !self.changed.contains(&nsid) {
            if self.changed.len() >= 1024 {
                self.changed_overflow = true;
                self.changed.clear();
            } else {
                self.changed.push(nsid);
            }
        }
        self.notice(
            admin::aec::NS_ATTRIBUTE_NOTICES,
            aer_notice::NS_ATTRIBUTE_CHANGED,
            log_id::CHANGED_NS_LIST,
        )
    }

    /// The ANA states this controller sees changed: raises the ANA Change event when
    /// the host asked for it. Returns the held AER to complete now, with its dword 0.
    pub(crate) fn ana_changed(&mut self) -> Option<(u16, u32)> {
        self.notice(
            admin::aec::ANA_CHANGE_NOTICES,
            aer_notice::ANA_CHANGE,
            log_id::ANA,
        )
    }

    /// A notice of the kind AEC bit `bit` enables, cleared by log page `lid`: raised
    /// when the host asked for it and none of its kind is pending.
    fn notice(&mut self, bit: u32, info: u8, lid: u8) -> Option<(u16, u32)> {
        if self.aec & bit == 0 || self.masked & bit != 0 {
            return None;
        }
        self.masked |= bit;
        self.raise(admin::aer_dw0(aer_type::NOTICE, info, lid))
    }

    /// An event: completes a held AER with it, or queues it for the next one.
    fn raise(&mut self, dw0: u32) -> Option<(u16, u32)> {
        if self.aers.is_empty() {
            self.events.push_back(dw0);
            return None;
        }
        let (slot, _) = self.aers.remove(0);
        Some((slot, dw0))
    }

    fn identify(&mut self, tgt: &Arc<Target>, sqe: &Sqe, data: Option<&mut [u8]>) -> AdminOutcome {
        let d = IdentifyDw::from_sqe(sqe);
        let nsid = sqe.nsid.get();
        let mut out = [0u8; id::IDENTIFY_LEN];
        let subsys = match tgt.subsystem_by_id(self.shared.subsys_id) {
            Some(s) => s,
            None => return done(Status::INTERNAL_ERROR),
        };
        match d.cns {
            cns::CONTROLLER => {
                let c = self.identify_controller(&subsys);
                out.copy_from_slice(c.as_bytes());
            }
            _ if self.is_discovery() => return done(Status::INVALID_FIELD),
            cns::NAMESPACE => {
                if nsid == 0 || (nsid > subsys.max_namespaces && nsid != 0xffff_ffff) {
                    return done(Status::INVALID_NAMESPACE);
                }
                // An inactive NSID reads as zeroes (base 5.17.2.1).
                if let Some(ns) = subsys.namespaces.get(&nsid) {
                    let mut n = identify_namespace(ns);
                    n.rescap = pollux_nvme::spec::resv::RESCAP_ALL_TYPES_IEKEY;
                    if ns.resv.ptpl_file().is_some() {
                        n.rescap |= pollux_nvme::spec::resv::RESCAP_PTPL;
                    }
                    if subsys.ana_reporting {
                        n.anagrpid = U32::new(ns.anagrpid);
                        let st = subsys.ana_state(&self.shared.listener, ns.anagrpid);
                        if matches!(st, ana_state::INACCESSIBLE | ana_state::PERSISTENT_LOSS) {
                            n.nuse = U64::new(0);
                        }
                    }
                    out.copy_from_slice(n.as_bytes());
                }
            }
            cns::ACTIVE_NS_LIST => {
                if nsid >= 0xffff_fffe {
                    return done(Status::INVALID_NAMESPACE);
                }
                let l = NsList::active_after(nsid, subsys.namespaces.keys().copied());
                out.copy_from_slice(l.as_bytes());
            }
            // NVM Command Set specific Identify Controller (nvm 4.1.5.2): VSL, WZSL,
            // WUSL, DMRL, DMRSL, DMSL. No other command set is supported.
            cns::CSI_CONTROLLER => {
                let l = subsys.limits;
                if d.csi == admin::csi::NVM {
                    out[1] = l.wzsl;
                    let dmrl = u8::from(l.dmrsl != 0);
                    out[3] = dmrl;
                    out[4..8].copy_from_slice(&l.dmrsl.to_le_bytes());
                    out[8..16].copy_from_slice(&(dmrl as u64 * l.dmrsl as u64).to_le_bytes());
                } else {
                    return done(Status::INVALID_FIELD);
                }
            }
            cns::NS_ID_DESCRIPTORS => {
                let Some(ns) = subsys.namespaces.get(&nsid) else {
                    return done(Status::INVALID_NAMESPACE);
                };
                id::ns_id_descriptors(
                    &mut out,
                    ns.eui64,
                    ns.nguid,
                    Some(*ns.uuid.as_bytes()),
                    Some(admin::csi::NVM),
                );
            }
            _ => return done(Status::INVALID_FIELD),
        }
        if let Some(d) = data {
            let n = d.len().min(out.len());
            d[..n].copy_from_slice(&out[..n]);
        }
        ok(0)
    }

    fn identify_controller(&self, subsys: &Subsystem) -> IdentifyController {
        let mut c = IdentifyController::default();
        id::pad_ascii(&mut c.sn, &subsys.serial);
        id::pad_ascii(&mut c.mn, &subsys.model);
        id::pad_ascii(&mut c.fr, env!("CARGO_PKG_VERSION"));
        c.rab = 6;
        c.cmic = id::cmic::MULTI_CONTROLLER;
        // MDTS in units of the minimum page size (4 KiB, CAP.MPSMIN = 0).
        c.mdts = (self.opts.max_io_size / 4096).trailing_zeros() as u8;
        c.cntlid = U16::new(self.shared.cntlid);
        c.ver = U32::new(NVME_VERSION);
        c.ctratt = U32::new(id::ctratt::HOST_ID_128);
        c.aerl = (AER_MAX - 1) as u8;
        // Extended data (offsets) for Get Log Page.
        c.lpa = id::lpa::EXTENDED_DATA;
        c.kas = U16::new(KAS);
        c.sqes = 0x66;
        c.cqes = 0x44;
        c.maxcmd = U16::new(self.opts.max_queue_depth as u16);
        // RDMA moves data by keyed SGL data blocks (one per command: MSDBD 1).
        let keyed = match self.trtype {
            Trtype::Rdma => id::sgls::KEYED_DATA_BLOCK,
            Trtype::Tcp => 0,
        };
        c.sgls = U32::new(id::sgls::SUPPORTED | id::sgls::ADDRESS_AS_OFFSET | keyed);
        id::nqn_field(&mut c.subnqn, &subsys.nqn);
        c.iorcsz = U32::new(1);
        c.msdbd = 1;
        if self.is_discovery() {
            c.cntrltype = cntrltype::DISCOVERY;
            c.ioccsz = U32::new(4);
        } else {
            c.cntrltype = cntrltype::IO;
            c.oaes = U32::new(id::oaes::NS_ATTRIBUTE_NOTICES);
            c.frmw = 0b11;
            c.nn = U32::new(subsys.max_namespaces);
            c.mnan = U32::new(subsys.max_namespaces);
            c.oncs = U16::new(
                id::oncs::COMPARE | id::oncs::DSM | id::oncs::WRITE_ZEROES | id::oncs::RESERVATIONS,
            );
            c.vwc = id::vwc::PRESENT;
            c.ioccsz = U32::new((64 + self.opts.in_capsule_data_size) / 16);
            if subsys.ana_reporting {
                c.cmic |= id::cmic::ANA_REPORTING;
                c.oaes = U32::new(c.oaes.get() | id::oaes::ANA_CHANGE_NOTICES);
                c.anatt = ANATT_SECS;
                // Optimized, non-optimized and inaccessible states; ANAGRPID does not
                // change while the namespace is attached (bit 6).
                c.anacap = 0b0100_0111;
                c.anagrpmax = U32::new(subsys.max_namespaces);
                c.nanagrpid = U32::new(subsys.max_namespaces);
            }
        }
        c
    }

    fn get_log_page(
        &mut self,
        tgt: &Arc<Target>,
        sqe: &Sqe,
        data: Option<&mut [u8]>,
    ) -> AdminOutcome {
        let g = GetLogPageDw::from_sqe(sqe);
        let page: Vec<u8> = match g.lid {
            log_id::DISCOVERY if self.is_discovery() => {
                let (genctr, entries) = tgt.discovery_entries(&self.shared.hostnqn);
                let mut v = vec![0u8; 1024 * (entries.len() + 1)];
                let h = DiscoveryLogHeader::new(genctr, entries.len() as u64);
                v[..1024].copy_from_slice(h.as_bytes());
                for (i, (ss, l)) in entries.iter().enumerate() {
                    let e = discovery_entry(ss, l, self.opts.max_aq_depth, self.local);
                    v[1024 * (i + 1)..1024 * (i + 2)].copy_from_slice(e.as_bytes());
                }
                v
            }
            _ if self.is_discovery() => return done(INVALID_LOG_PAGE),
            log_id::ERROR => vec![0u8; 64],
            log_id::SMART => vec![0u8; 512],
            log_id::FIRMWARE_SLOT => {
                let mut v = vec![0u8; 512];
                // Active firmware in slot 1; its revision in FRS1 (base 5.16.1.4).
                v[0] = 1;
                id::pad_ascii(&mut v[8..16], env!("CARGO_PKG_VERSION"));
                v
            }
            log_id::CHANGED_NS_LIST => {
                let mut v = vec![0u8; 4096];
                if self.changed_overflow {
                    v[..4].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
                } else {
                    let mut ids = self.changed.clone();
                    ids.sort_unstable();
                    for (i, n) in ids.iter().enumerate() {
                        v[i * 4..i * 4 + 4].copy_from_slice(&n.to_le_bytes());
                    }
                }
                if !g.rae {
                    self.changed.clear();
                    self.changed_overflow = false;
                    self.masked &= !admin::aec::NS_ATTRIBUTE_NOTICES;
                }
                v
            }
            log_id::ANA => {
                let Some(ss) = tgt
                    .subsystem_by_id(self.shared.subsys_id)
                    .filter(|s| s.ana_reporting)
                else {
                    return done(INVALID_LOG_PAGE);
                };
                let l = &self.shared.listener;
                let count = ss.ana.get(l).map_or(0, |a| a.change_count);
                let groups: Vec<AnaGroup> = ss
                    .ana_groups()
                    .into_iter()
                    .map(|(anagrpid, nsids)| AnaGroup {
                        anagrpid,
                        chgcnt: count,
                        state: ss.ana_state(l, anagrpid),
                        nsids,
                    })
                    .collect();
                if !g.rae {
                    self.masked &= !admin::aec::ANA_CHANGE_NOTICES;
                }
                ana_log_encode(count, &groups, g.lsp & ANA_LSP_RGO != 0)
            }
            _ => return done(INVALID_LOG_PAGE),
        };
        let len = g.bytes();
        if g.offset % 4 != 0 {
            return done(Status::INVALID_FIELD);
        }
        let Some(d) = data else {
            return done(if len == 0 {
                Status::SUCCESS
            } else {
                Status::DATA_TRANSFER_ERROR
            });
        };
        let n = (d.len() as u64).min(len) as usize;
        d[..n].fill(0);
        if g.offset < page.len() as u64 {
            let src = &page[g.offset as usize..];
            let k = src.len().min(n);
            d[..k].copy_from_slice(&src[..k]);
        }
        ok(0)
    }

    /// Namespace `nsid`'s reservations, for the Reservation Persistence feature.
    fn resv_of(&self, tgt: &Arc<Target>, nsid: u32) -> Option<Arc<super::resv::Reservations>> {
        let ss = tgt.subsystem_by_id(self.shared.subsys_id)?;
        ss.namespaces.get(&nsid).map(|n| n.resv.clone())
    }

    fn set_features(
        &mut self,
        tgt: &Arc<Target>,
        sqe: &Sqe,
        data: Option<&mut [u8]>,
    ) -> AdminOutcome {
        let _ = data;
        let fid = admin::features_fid(sqe);
        let v = sqe.cdw11.get();
        if admin::set_features_sv(sqe) {
            return done(NOT_SAVEABLE);
        }
        match fid {
            feature::KEEP_ALIVE_TIMER => {
                self.kato_ms = v;
                ok(0)
            }
            feature::ASYNC_EVENT_CONFIG => {
                self.aec = v;
                ok(0)
            }
            _ if self.is_discovery() => done(Status::INVALID_FIELD),
            feature::NUMBER_OF_QUEUES => {
                if self.shared.io_qpair_count() > 0 {
                    return done(Status::COMMAND_SEQUENCE_ERROR);
                }
                let req = NumQueues::from_dw(v);
                if req.nsqr == 0xffff || req.ncqr == 0xffff {
                    return done(Status::INVALID_FIELD);
                }
                let max = self.opts.max_io_qpairs_per_ctrlr;
                let n = req.sq_count().min(req.cq_count()).min(max).max(1);
                self.shared.io_queues.store(n as u16, Ordering::Release);
                self.queues_set = true;
                ok(NumQueues::from_counts(n, n).to_dw())
            }
            feature::ARBITRATION
            | feature::TEMPERATURE_THRESHOLD
            | feature::ERROR_RECOVERY
            | feature::WRITE_ATOMICITY => {
                self.features[fid as usize] = v;
                ok(0)
            }
            feature::VOLATILE_WRITE_CACHE => {
                self.features[fid as usize] = v & admin::VWC_WCE;
                ok(0)
            }
            feature::POWER_MANAGEMENT => {
                if v & 0x1f != 0 {
                    // Only power state 0 exists.
                    return done(Status::INVALID_FIELD);
                }
                ok(0)
            }
            feature::HOST_IDENTIFIER => done(Status::COMMAND_SEQUENCE_ERROR),
            feature::RESERVATION_PERSISTENCE => match self.resv_of(tgt, sqe.nsid.get()) {
                Some(r) => done(r.set_ptpl(v & 1 != 0)),
                None => done(Status::INVALID_NAMESPACE),
            },
            feature::INTERRUPT_COALESCING | feature::INTERRUPT_VECTOR_CONFIG => {
                done(Status::INVALID_FIELD)
            }
            feature::TIMESTAMP => done(FEATURE_NOT_CHANGEABLE),
            _ => done(Status::INVALID_FIELD),
        }
    }

    fn get_features(
        &mut self,
        tgt: &Arc<Target>,
        sqe: &Sqe,
        data: Option<&mut [u8]>,
    ) -> AdminOutcome {
        let fid = admin::features_fid(sqe);
        let s = admin::get_features_sel(sqe);
        let supported = |changeable: bool| {
            if changeable {
                admin::feature_caps::CHANGEABLE
            } else {
                0
            }
        };
        let (value, changeable) = match fid {
            feature::KEEP_ALIVE_TIMER => (self.kato_ms, true),
            feature::ASYNC_EVENT_CONFIG => (self.aec, true),
            _ if self.is_discovery() => return done(Status::INVALID_FIELD),
            feature::NUMBER_OF_QUEUES => {
                let n = self.shared.io_queues.load(Ordering::Acquire) as u32;
                let n = if n == 0 {
                    self.opts.max_io_qpairs_per_ctrlr
                } else {
                    n
                };
                (NumQueues::from_counts(n, n).to_dw(), true)
            }
            feature::ARBITRATION
            | feature::TEMPERATURE_THRESHOLD
            | feature::ERROR_RECOVERY
            | feature::WRITE_ATOMICITY
            | feature::VOLATILE_WRITE_CACHE => (self.features[fid as usize], true),
            feature::POWER_MANAGEMENT => (0, true),
            feature::RESERVATION_PERSISTENCE => match self.resv_of(tgt, sqe.nsid.get()) {
                Some(r) => (r.ptpl() as u32, r.ptpl_file().is_some()),
                None => return done(Status::INVALID_NAMESPACE),
            },
            feature::HOST_IDENTIFIER => {
                // 128-bit host identifier only (EXHID, CDW11 bit 0).
                if sqe.cdw11.get() & 1 == 0 {
                    return done(Status::INVALID_FIELD);
                }
                if let Some(d) = data {
                    let n = d.len().min(16);
                    d[..n].copy_from_slice(&self.shared.hostid[..n]);
                }
                (1, false)
            }
            _ => return done(Status::INVALID_FIELD),
        };
        match s {
            sel::CURRENT | sel::DEFAULT | sel::SAVED => ok(value),
            sel::SUPPORTED => ok(supported(changeable)),
            _ => done(Status::INVALID_FIELD),
        }
    }
}

impl CtrlrShared {
    /// The threads of its I/O queues (each once), with the target to reach them.
    pub(crate) fn io_threads(&self) -> Vec<(crate::thread::ThreadHandle, Arc<Target>)> {
        let tgt = match self.target.upgrade() {
            Some(t) => t,
            None => return Vec::new(),
        };
        let mut seen = std::collections::BTreeSet::new();
        super::lock(&self.qpairs)
            .values()
            .filter(|t| seen.insert(t.id().0))
            .map(|t| (t.clone(), tgt.clone()))
            .collect()
    }
}

/// The status of a command to a namespace in ANA state `st` (not an accessible one).
pub(crate) fn ana_status(st: u8) -> Status {
    match st {
        ana_state::PERSISTENT_LOSS => Status::ANA_PERSISTENT_LOSS,
        ana_state::CHANGE => Status::ANA_TRANSITION,
        _ => Status::ANA_INACCESSIBLE,
    }
}

/// Identify Namespace for a namespace (nvm 4.1.5.1).
fn identify_namespace(ns: &super::Namespace) -> IdentifyNamespace {
    let mut n = IdentifyNamespace::default();
    let blocks = ns.bdev.num_blocks();
    n.nsze = U64::new(blocks);
    n.ncap = U64::new(blocks);
    n.nuse = U64::new(blocks);
    n.nlbaf = 0;
    n.flbas = 0;
    n.nmic = id::nmic::SHARED;
    n.lbaf[0].lbads = ns.bdev.block_size().trailing_zeros() as u8;
    if let Some(g) = ns.nguid {
        n.nguid = g;
    }
    if let Some(e) = ns.eui64 {
        n.eui64 = e;
    }
    n
}

/// A Discovery Log Page entry for a subsystem reached through a listener (base
/// 5.16.1.23).
fn discovery_entry(
    ss: &Subsystem,
    l: &super::ListenAddr,
    qdepth: u32,
    local: std::net::SocketAddr,
) -> DiscoveryLogEntry {
    use pollux_nvme::spec::log::{
        RdmaTsas, adrfam, rdma_cms, rdma_prtype, rdma_qptype, subtype, treq, trtype,
    };
    let mut e = DiscoveryLogEntry {
        trtype: match l.trtype {
            Trtype::Tcp => trtype::TCP,
            Trtype::Rdma => trtype::RDMA,
        },
        adrfam: match l.adrfam {
            super::AdrFam::Ipv4 => adrfam::IPV4,
            super::AdrFam::Ipv6 => adrfam::IPV6,
        },
        subtype: match ss.subtype {
            SubsysType::Discovery => subtype::CURRENT_DISCOVERY,
            SubsysType::Nvme => subtype::NVME,
        },
        // Secure channel "not specified" (newer libnvme starts TLS on "required" and
        // "not required" alike); SQ flow control may be disabled by the host.
        treq: treq::SECURE_CHANNEL_NOT_SPECIFIED | treq::DISABLE_SQFLOW,
        ..Default::default()
    };
    e.portid = U16::new(l.addr.port());
    e.cntlid = U16::new(0xffff);
    e.asqsz = U16::new(qdepth.min(0xffff) as u16);
    e.set_trsvcid(&l.addr.port().to_string());
    // A wildcard listener is reached at the address the host used for discovery (as
    // Linux's target does).
    let ip = if l.addr.ip().is_unspecified() {
        local.ip()
    } else {
        l.addr.ip()
    };
    e.set_traddr(&ip.to_string());
    e.set_subnqn(&ss.nqn);
    if l.trtype == Trtype::Rdma {
        // Reliable connected queue pairs set up by the RDMA connection manager, as
        // Linux's target describes its RDMA ports.
        let mut t = RdmaTsas::new_zeroed();
        t.qptype = rdma_qptype::CONNECTED;
        t.prtype = rdma_prtype::NOT_SPECIFIED;
        t.cms = rdma_cms::RDMA_CM;
        e.set_rdma_tsas(&t);
    }
    e
}

/// What an NVM command does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IoPlan {
    /// Nothing to do in a bdev: complete with this status.
    Complete(Status),
    /// A bdev I/O.
    Submit {
        /// Kind.
        kind: IoKind,
        /// First block.
        slba: u64,
        /// Blocks.
        nlb: u64,
        /// Force Unit Access: flush after a write.
        fua: bool,
    },
    /// Read and compare with the host's data.
    Compare {
        /// First block.
        slba: u64,
        /// Blocks.
        nlb: u64,
    },
    /// Deallocate these many ranges (from the command's data).
    Dsm {
        /// Ranges.
        ranges: u32,
    },
}

/// Plans an NVM command on a namespace of `bs`-byte blocks, `blocks` long, whose data
/// is `len` bytes.
pub(crate) fn plan_io(sqe: &Sqe, bs: u32, blocks: u64, len: u32) -> IoPlan {
    let rw = |kind: IoKind| {
        let d = RwDw::from_sqe(sqe);
        let nlb = d.blocks() as u64;
        if nlb * bs as u64 != len as u64 {
            return IoPlan::Complete(Status::SGL_LENGTH_INVALID);
        }
        match d.slba.checked_add(nlb) {
            Some(end) if end <= blocks => {}
            _ => return IoPlan::Complete(Status::LBA_OUT_OF_RANGE),
        }
        if kind == IoKind::Read && sqe.opc == nvm_opc::COMPARE {
            return IoPlan::Compare { slba: d.slba, nlb };
        }
        IoPlan::Submit {
            kind,
            slba: d.slba,
            nlb,
            fua: kind == IoKind::Write && d.fua,
        }
    };
    match sqe.opc {
        nvm_opc::READ => rw(IoKind::Read),
        nvm_opc::WRITE => rw(IoKind::Write),
        nvm_opc::COMPARE => rw(IoKind::Read),
        nvm_opc::FLUSH => IoPlan::Submit {
            kind: IoKind::Flush,
            slba: 0,
            nlb: 0,
            fua: false,
        },
        nvm_opc::WRITE_ZEROES => {
            if len != 0 {
                return IoPlan::Complete(Status::INVALID_FIELD);
            }
            let d = RwDw::from_sqe(sqe);
            let nlb = d.blocks() as u64;
            match d.slba.checked_add(nlb) {
                Some(end) if end <= blocks => {}
                _ => return IoPlan::Complete(Status::LBA_OUT_OF_RANGE),
            }
            IoPlan::Submit {
                kind: IoKind::WriteZeroes,
                slba: d.slba,
                nlb,
                fua: d.fua,
            }
        }
        nvm_opc::DATASET_MANAGEMENT => {
            let d = DsmDw::from_sqe(sqe);
            let ranges = d.nr as u32 + 1;
            if len < ranges * 16 {
                return IoPlan::Complete(Status::SGL_LENGTH_INVALID);
            }
            if d.attrs & dsm_attr::AD == 0 {
                // Only hints: nothing to do.
                return IoPlan::Complete(Status::SUCCESS);
            }
            IoPlan::Dsm { ranges }
        }
        _ => IoPlan::Complete(Status::INVALID_OPCODE),
    }
}

/// A DSM range's first block and block count.
pub(crate) fn dsm_range(raw: &[u8; 16]) -> (u64, u64) {
    let r = DsmRange::read_from_bytes(raw).expect("16 bytes");
    (r.slba.get(), r.nlb.get() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pollux_nvme::spec::admin::rw_cdw12;

    fn rw(opc: u8, slba: u64, nlb0: u16, fua: bool) -> Sqe {
        let mut s = Sqe {
            opc,
            ..Default::default()
        };
        s.cdw10 = U32::new(slba as u32);
        s.cdw11 = U32::new((slba >> 32) as u32);
        s.cdw12 = U32::new(nlb0 as u32 | if fua { rw_cdw12::FUA } else { 0 });
        s
    }

    #[test]
    fn io_plans() {
        let p = plan_io(&rw(nvm_opc::READ, 10, 7, false), 512, 100, 4096);
        assert_eq!(
            p,
            IoPlan::Submit {
                kind: IoKind::Read,
                slba: 10,
                nlb: 8,
                fua: false
            }
        );
        assert_eq!(
            plan_io(&rw(nvm_opc::READ, 10, 7, false), 512, 100, 512),
            IoPlan::Complete(Status::SGL_LENGTH_INVALID)
        );
        assert_eq!(
            plan_io(&rw(nvm_opc::WRITE, 95, 7, true), 512, 100, 4096),
            IoPlan::Complete(Status::LBA_OUT_OF_RANGE)
        );
        assert_eq!(
            plan_io(&rw(nvm_opc::WRITE, u64::MAX, 0, true), 512, 100, 512),
            IoPlan::Complete(Status::LBA_OUT_OF_RANGE)
        );
        assert!(matches!(
            plan_io(&rw(nvm_opc::WRITE, 0, 0, true), 512, 100, 512),
            IoPlan::Submit { fua: true, .. }
        ));
        assert_eq!(
            plan_io(&rw(nvm_opc::COMPARE, 0, 0, false), 512, 100, 512),
            IoPlan::Compare { slba: 0, nlb: 1 }
        );
        assert_eq!(
            plan_io(&rw(0x7e, 0, 0, false), 512, 100, 0),
            IoPlan::Complete(Status::INVALID_OPCODE)
        );
        let mut dsm = Sqe {
            opc: nvm_opc::DATASET_MANAGEMENT,
            ..Default::default()
        };
        dsm.cdw10 = U32::new(1);
        dsm.cdw11 = U32::new(dsm_attr::AD);
        assert_eq!(plan_io(&dsm, 512, 100, 32), IoPlan::Dsm { ranges: 2 });
        assert_eq!(
            plan_io(&dsm, 512, 100, 16),
            IoPlan::Complete(Status::SGL_LENGTH_INVALID)
        );
    }
}
