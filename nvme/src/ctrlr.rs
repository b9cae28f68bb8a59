//! A PCIe NVMe controller: bring-up, Identify, namespaces, I/O queue pairs, reset,
//! shutdown, Asynchronous Events, and command timeouts (Abort first, then reset).
//!
//! Bring-up follows the NVMe base specification (3.5.1): clear CC.EN and wait for
//! CSTS.RDY=0 within CAP.TO, program the admin queue (AQA, ASQ, ACQ), set CC (NVM
//! command set, 4 KiB pages, 64/16-byte entries) with EN, wait for CSTS.RDY=1, then
//! Identify Controller, Set Features Number of Queues, the active namespace list and
//! each namespace, and Asynchronous Event Requests.
//!
//! The admin queue is used under a lock, on the control path. Each I/O queue pair
//! ([`Qpair`]) belongs to the thread that created it; a reset asks every queue pair to
//! quiesce (each acknowledges on its next poll), disables and re-enables the
//! controller, re-creates the queues with the same memory, and lets each queue pair
//! resubmit or abort what it had in flight ([`ResetPolicy`]).

use crate::cmb::Cmb;
use crate::pci::{Device, DmaMem, Error, NvmeAddr};
use crate::qpair::{
    DataSeg, FAILED, GONE, QUIESCE, QUIESCED, Qpair, QpairParts, QpairShared, QueueMem, RESTART,
    RUNNING, ResetPolicy, SglMode,
};
use crate::spec::admin::{admin_opc, cns, log_id};
use crate::spec::cmd::{Cqe, Sqe, Status};
use crate::spec::identify::{IdentifyController, IdentifyNamespace, ascii_str};
use crate::spec::regs::{Aqa, Cap, Cc, Csts, offset};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use zerocopy::FromBytes;
use zerocopy::little_endian::U32;

/// Controller options (SPDK's `spdk_nvme_ctrlr_opts`, where they overlap).
#[derive(Clone, Debug)]
pub struct CtrlrOpts {
    /// I/O queues to ask for (Set Features Number of Queues).
    pub num_io_queues: u16,
    /// Entries of each I/O queue (bounded by CAP.MQES).
    pub io_queue_entries: u16,
    /// Entries of the admin queue.
    pub admin_queue_entries: u16,
    /// SGLs for data, where the controller supports them.
    pub sgl: SglMode,
    /// Enable the CMB (when the controller has one).
    pub cmb: bool,
    /// Put I/O submission queues in the CMB (where CMBSZ.SQS allows).
    pub cmb_sqs: bool,
    /// Put PRP/SGL lists in the CMB (where CMBSZ.LISTS allows).
    pub cmb_lists: bool,
    /// What a reset does to commands in flight.
    pub reset_policy: ResetPolicy,
    /// I/O command timeout (Abort, then reset); `None` disables it.
    pub io_timeout: Option<Duration>,
    /// Admin command timeout.
    pub admin_timeout: Duration,
}

impl Default for CtrlrOpts {
    fn default() -> Self {
        CtrlrOpts {
            num_io_queues: 64,
            io_queue_entries: 256,
            admin_queue_entries: 32,
            sgl: SglMode::WhenNeeded,
            cmb: true,
            cmb_sqs: false,
            cmb_lists: false,
            reset_policy: ResetPolicy::Retry,
            io_timeout: Some(Duration::from_secs(30)),
            admin_timeout: Duration::from_secs(10),
        }
    }
}

/// An active namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// Its identifier.
    pub nsid: u32,
    /// Bytes per block (the formatted LBA size).
    pub block_size: u32,
    /// Blocks (NSZE).
    pub num_blocks: u64,
    /// Deallocated blocks read as zeroes (DLFEAT).
    pub dealloc_reads_zeroes: bool,
    /// NGUID (zero when not reported).
    pub nguid: [u8; 16],
    /// EUI-64 (zero when not reported).
    pub eui64: [u8; 8],
}

/// What an Asynchronous Event told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Namespaces were attached, detached or changed (the Changed Namespace List); the
    /// namespace table was rescanned.
    NamespacesChanged(Vec<u32>),
    /// Another event: type, information and log page (base Figure 146).
    Other {
        /// Asynchronous Event Type.
        ty: u8,
        /// Asynchronous Event Information.
        info: u8,
        /// The log page to read.
        log: u8,
    },
}

/// Counters of a controller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtrlrStats {
    /// Resets done.
    pub resets: u64,
    /// Abort commands sent for timed-out commands.
    pub aborts: u64,
    /// Asynchronous events received.
    pub events: u64,
}

const AER_TAG: u64 = u64::MAX;

struct Admin {
    q: Qpair,
    buf: DmaMem,
    next_tag: u64,
    aers: u32,
    events: VecDeque<Event>,
    ns_changed: bool,
    /// Data buffers of admin commands that timed out (the controller may still write
    /// them): freed after the next reset.
    retired: Vec<DmaMem>,
    /// An admin command timed out: reset the controller.
    hung: bool,
}

/// A PCIe NVMe controller (see the module documentation).
pub struct Ctrlr {
    dev: Arc<dyn Device>,
    opts: CtrlrOpts,
    cap: Cap,
    cdata: IdentifyController,
    io_queues: u16,
    max_xfer: u32,
    sgl_supported: bool,
    admin: Mutex<Admin>,
    ns: Mutex<BTreeMap<u32, Namespace>>,
    qids: Mutex<Vec<bool>>,
    qpairs: Mutex<Vec<Weak<QpairShared>>>,
    cmb: Option<Arc<Cmb>>,
    resets: AtomicU64,
    aborts: AtomicU64,
    events: AtomicU64,
    shut_down: Mutex<bool>,
    /// Serialises resets against queue creation and deletion.
    reset_lock: Mutex<()>,
}

impl fmt::Debug for Ctrlr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctrlr")
            .field("dev", &self.dev.name())
            .field("model", &self.model())
            .field("io_queues", &self.io_queues)
            .finish()
    }
}

/// Data of an admin command.
#[derive(Debug)]
pub enum AdminData<'a> {
    /// None.
    None,
    /// The controller fills it.
    In(&'a mut [u8]),
    /// It goes to the controller.
    Out(&'a [u8]),
}

const ADMIN_BUF: usize = 64 << 10;

fn wait_csts(
    dev: &Arc<dyn Device>,
    what: &str,
    timeout: Duration,
    done: impl Fn(Csts) -> bool,
) -> Result<Csts, Error> {
    let t0 = Instant::now();
    loop {
        let csts = Csts::from(dev.read32(offset::CSTS));
        if done(csts) {
            return Ok(csts);
        }
        if csts.cfs() && what != "CSTS.RDY=0" {
            return Err(Error::Fatal {
                ctrlr: dev.name().into(),
                what: what.into(),
            });
        }
        if t0.elapsed() > timeout {
            return Err(Error::Timeout {
                ctrlr: dev.name().into(),
                what: format!(
                    "{what} not reached within {} ms (CAP.TO)",
                    timeout.as_millis()
                ),
                csts: csts.into(),
            });
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl Ctrlr {
    /// Brings up the controller behind `dev`.
    pub fn attach(dev: Arc<dyn Device>, opts: CtrlrOpts) -> Result<Arc<Ctrlr>, Error> {
        let cap = Cap::from(dev.read64(offset::CAP));
        if cap.mpsmin() != 0 {
            return Err(Error::Unsupported {
                ctrlr: dev.name().into(),
                what: format!(
                    "its smallest memory page is {} KiB (CAP.MPSMIN); this driver uses 4 KiB pages",
                    4u32 << cap.mpsmin()
                ),
            });
        }
        if cap.css() & 1 == 0 {
            return Err(Error::Unsupported {
                ctrlr: dev.name().into(),
                what: "the controller does not support the NVM command set (CAP.CSS)".into(),
            });
        }
        let to = Duration::from_millis(500 * cap.to().max(1) as u64);
        disable(&dev, to)?;
        let cmb = if opts.cmb { Cmb::enable(&dev)? } else { None };
        let entries = queue_entries(opts.admin_queue_entries, cap);
        let q = Self::admin_qpair(&dev, entries, cap)?;
        let buf = DmaMem::new(&dev, ADMIN_BUF)?;
        let mut admin = Admin {
            q,
            buf,
            next_tag: 1,
            aers: 0,
            events: VecDeque::new(),
            ns_changed: false,
            retired: Vec::new(),
            hung: false,
        };
        enable(&dev, &admin.q, entries, to)?;
        let mut raw = vec![0u8; 4096];
        Self::admin_cmd_locked(
            &dev,
            &opts,
            &mut admin,
            identify_sqe(cns::CONTROLLER, 0),
            AdminData::In(&mut raw),
        )?;
        let cdata = IdentifyController::read_from_bytes(&raw).expect("4096 bytes");
        let mdts = cdata.mdts;
        let page_min = 4096u64 << cap.mpsmin();
        let limit = (crate::qpair::PRP_LIST_ENTRIES as u64) * crate::qpair::PAGE;
        let max_xfer = match page_min.checked_shl(mdts as u32) {
            Some(m) if mdts != 0 && m != 0 => m.min(limit),
            _ => limit,
        } as u32;
        let n = opts.num_io_queues.max(1) - 1;
        let cqe = Self::admin_cmd_locked(
            &dev,
            &opts,
            &mut admin,
            Sqe {
                opc: admin_opc::SET_FEATURES,
                cdw10: U32::new(0x07),
                cdw11: U32::new(n as u32 | (n as u32) << 16),
                ..Default::default()
            },
            AdminData::None,
        )?;
        let granted = (cqe.dw0.get() & 0xffff).min(cqe.dw0.get() >> 16) as u16 + 1;
        let io_queues = granted.min(opts.num_io_queues);
        // Namespace attribute notices.
        let _ = Self::admin_cmd_locked(
            &dev,
            &opts,
            &mut admin,
            Sqe {
                opc: admin_opc::SET_FEATURES,
                cdw10: U32::new(0x0b),
                cdw11: U32::new(1 << 8),
                ..Default::default()
            },
            AdminData::None,
        );
        let sgl_supported = cdata.sgls.get() & 0x3 != 0;
        let c = Ctrlr {
            dev,
            opts,
            cap,
            cdata,
            io_queues,
            max_xfer,
            sgl_supported,
            admin: Mutex::new(admin),
            ns: Mutex::new(BTreeMap::new()),
            qids: Mutex::new(vec![false; io_queues as usize + 1]),
            qpairs: Mutex::new(Vec::new()),
            cmb,
            resets: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
            events: AtomicU64::new(0),
            shut_down: Mutex::new(false),
            reset_lock: Mutex::new(()),
        };
        c.scan_namespaces()?;
        c.submit_aers();
        tracing::info!(
            ctrlr = c.dev.name(),
            model = c.model(),
            serial = c.serial(),
            firmware = c.firmware(),
            io_queues,
            max_xfer,
            sgl = sgl_supported,
            namespaces = c.ns.lock().unwrap().len(),
            "NVMe controller attached"
        );
        Ok(Arc::new(c))
    }

    fn admin_qpair(dev: &Arc<dyn Device>, entries: u16, cap: Cap) -> Result<Qpair, Error> {
        Ok(Qpair::new(QpairParts {
            dev: dev.clone(),
            qid: 0,
            entries,
            dstrd: cap.dstrd(),
            sq: QueueMem::host(dev, entries as usize * 64)?,
            cq: QueueMem::host(dev, entries as usize * 16)?,
            lists: QueueMem::host(dev, entries as usize * 4096)?,
            sgl: SglMode::Never,
            policy: ResetPolicy::Abort,
            timeout: None,
        }))
    }

    /// The device (its name is the PCI address).
    pub fn device(&self) -> &Arc<dyn Device> {
        &self.dev
    }

    /// Identify Controller data.
    pub fn identify(&self) -> &IdentifyController {
        &self.cdata
    }

    /// Model number.
    pub fn model(&self) -> &str {
        ascii_str(&self.cdata.mn).unwrap_or("?")
    }

    /// Serial number.
    pub fn serial(&self) -> &str {
        ascii_str(&self.cdata.sn).unwrap_or("?")
    }

    /// Firmware revision.
    pub fn firmware(&self) -> &str {
        ascii_str(&self.cdata.fr).unwrap_or("?")
    }

    /// CAP.
    pub fn cap(&self) -> Cap {
        self.cap
    }

    /// I/O queues granted.
    pub fn io_queues(&self) -> u16 {
        self.io_queues
    }

    /// The most bytes one command moves (MDTS, and one PRP list page).
    pub fn max_transfer(&self) -> u32 {
        self.max_xfer
    }

    /// Whether the controller takes SGLs for I/O data.
    pub fn sgl_supported(&self) -> bool {
        self.sgl_supported
    }

    /// The enabled CMB, if any.
    pub fn cmb(&self) -> Option<&Arc<Cmb>> {
        self.cmb.as_ref()
    }

    /// The active namespaces.
    pub fn namespaces(&self) -> Vec<Namespace> {
        self.ns.lock().unwrap().values().cloned().collect()
    }

    /// Namespace `nsid`, if active.
    pub fn namespace(&self, nsid: u32) -> Option<Namespace> {
        self.ns.lock().unwrap().get(&nsid).cloned()
    }

    /// Its counters.
    pub fn stats(&self) -> CtrlrStats {
        CtrlrStats {
            resets: self.resets.load(Ordering::Relaxed),
            aborts: self.aborts.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
        }
    }

    /// Runs an admin command and waits for it (at most the admin timeout).
    pub fn admin_command(&self, sqe: Sqe, data: AdminData<'_>) -> Result<Cqe, Error> {
        let mut a = self.admin.lock().unwrap();
        let r = Self::admin_cmd_locked(&self.dev, &self.opts, &mut a, sqe, data);
        drop(a);
        self.after_admin();
        r
    }

    fn admin_cmd_locked(
        dev: &Arc<dyn Device>,
        opts: &CtrlrOpts,
        a: &mut Admin,
        sqe: Sqe,
        mut data: AdminData<'_>,
    ) -> Result<Cqe, Error> {
        let what = admin_name(sqe.opc);
        let len = match &data {
            AdminData::None => 0,
            AdminData::In(b) => b.len(),
            AdminData::Out(b) => b.len(),
        };
        if len > ADMIN_BUF {
            return Err(Error::Invalid(format!(
                "{what}: {len} bytes of data, at most {ADMIN_BUF}"
            )));
        }
        if let AdminData::Out(b) = &data {
            // SAFETY: the scratch buffer is used by one admin command at a time (the lock).
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), a.buf.ptr(0), b.len()) };
        }
        let seg = [DataSeg {
            addr: a.buf.addr(0),
            len: len as u32,
        }];
        let tag = a.next_tag;
        a.next_tag += 1;
        a.q.submit(sqe, if len == 0 { &[] } else { &seg }, tag)
            .map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
        let t0 = Instant::now();
        let mut result = None;
        while result.is_none() {
            let events = &mut a.events;
            let aers = &mut a.aers;
            let ns_changed = &mut a.ns_changed;
            a.q.poll(0, |t, cqe| {
                if t == tag {
                    result = Some(*cqe);
                } else if t == AER_TAG {
                    *aers -= 1;
                    if let Some(ev) = decode_aer(cqe) {
                        if matches!(ev, Event::NamespacesChanged(_)) {
                            *ns_changed = true;
                        } else {
                            events.push_back(ev);
                        }
                    }
                }
            });
            if result.is_none() {
                if t0.elapsed() > opts.admin_timeout {
                    // The controller may still write the data buffer: retire it (a
                    // fresh one serves the next command) and reset at the next chance.
                    if let Ok(fresh) = DmaMem::new(dev, ADMIN_BUF) {
                        let old = std::mem::replace(&mut a.buf, fresh);
                        a.retired.push(old);
                    }
                    a.hung = true;
                    return Err(Error::Timeout {
                        ctrlr: dev.name().into(),
                        what: format!("{what} got no completion"),
                        csts: dev.read32(offset::CSTS),
                    });
                }
                std::hint::spin_loop();
            }
        }
        let cqe = result.unwrap();
        let st = cqe.status();
        if !st.is_success() {
            return Err(Error::Command {
                what: what.into(),
                status: st,
            });
        }
        if let AdminData::In(b) = &mut data {
            // SAFETY: the command completed; the controller is done with the buffer.
            unsafe { std::ptr::copy_nonoverlapping(a.buf.ptr(0), b.as_mut_ptr(), b.len()) };
        }
        Ok(cqe)
    }

    /// Work left by admin completions: a namespace change seen while waiting for another
    /// command is handled here, outside the admin lock.
    fn after_admin(&self) {
        let changed = std::mem::take(&mut self.admin.lock().unwrap().ns_changed);
        if changed {
            self.handle_ns_change();
        }
    }

    fn handle_ns_change(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let mut raw = vec![0u8; 4096];
        let list: Vec<u32> = match self.admin_command(
            Sqe {
                opc: admin_opc::GET_LOG_PAGE,
                cdw10: U32::new(log_id::CHANGED_NS_LIST as u32 | ((4096 / 4 - 1) << 16)),
                ..Default::default()
            },
            AdminData::In(&mut raw),
        ) {
            Ok(_) => raw
                .chunks(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .take_while(|&n| n != 0)
                .collect(),
            Err(e) => {
                tracing::warn!(ctrlr = self.dev.name(), error = %e, "reading the Changed Namespace List failed");
                Vec::new()
            }
        };
        if let Err(e) = self.scan_namespaces() {
            tracing::warn!(ctrlr = self.dev.name(), error = %e, "namespace rescan failed");
        }
        tracing::info!(ctrlr = self.dev.name(), changed = ?list, "namespace attributes changed");
        self.admin
            .lock()
            .unwrap()
            .events
            .push_back(Event::NamespacesChanged(list));
        self.submit_aers();
    }

    fn submit_aers(&self) {
        let want = (self.cdata.aerl as u32 + 1).min(4);
        let mut a = self.admin.lock().unwrap();
        while a.aers < want {
            let sqe = Sqe {
                opc: admin_opc::ASYNC_EVENT_REQUEST,
                ..Default::default()
            };
            if a.q.submit(sqe, &[], AER_TAG).is_err() {
                break;
            }
            a.aers += 1;
        }
        a.q.ring();
    }

    /// Reads the active namespace list and every namespace's Identify data.
    pub fn scan_namespaces(&self) -> Result<(), Error> {
        let mut raw = vec![0u8; 4096];
        self.admin_command(
            identify_sqe(cns::ACTIVE_NS_LIST, 0),
            AdminData::In(&mut raw),
        )?;
        let ids: Vec<u32> = raw
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .take_while(|&n| n != 0)
            .collect();
        let mut table = BTreeMap::new();
        for nsid in ids {
            let mut raw = vec![0u8; 4096];
            self.admin_command(identify_sqe(cns::NAMESPACE, nsid), AdminData::In(&mut raw))?;
            let id = IdentifyNamespace::read_from_bytes(&raw).expect("4096 bytes");
            if id.nsze.get() == 0 {
                continue;
            }
            table.insert(
                nsid,
                Namespace {
                    nsid,
                    block_size: id.block_size() as u32,
                    num_blocks: id.nsze.get(),
                    dealloc_reads_zeroes: id.dlfeat & 0x7 == 1,
                    nguid: id.nguid,
                    eui64: id.eui64,
                },
            );
        }
        *self.ns.lock().unwrap() = table;
        Ok(())
    }

    /// Reaps admin completions (Asynchronous Events), aborts timed-out commands and
    /// resets the controller when an aborted command still hangs. Returns the events
    /// seen since the last call. Call it periodically from one thread (SPDK's
    /// `spdk_nvme_ctrlr_process_admin_completions`).
    pub fn process_admin(&self) -> Vec<Event> {
        {
            let mut a = self.admin.lock().unwrap();
            let mut evs = Vec::new();
            let mut done_aers = 0;
            let mut changed = false;
            a.q.poll(0, |t, cqe| {
                if t == AER_TAG {
                    done_aers += 1;
                    match decode_aer(cqe) {
                        Some(Event::NamespacesChanged(_)) => changed = true,
                        Some(e) => evs.push(e),
                        None => {}
                    }
                }
            });
            a.aers -= done_aers;
            a.ns_changed |= changed;
            a.events.extend(evs);
        }
        self.after_admin();
        let other = {
            let mut a = self.admin.lock().unwrap();
            let n = a
                .events
                .iter()
                .filter(|e| !matches!(e, Event::NamespacesChanged(_)))
                .count();
            self.events.fetch_add(n as u64, Ordering::Relaxed);
            a.events.drain(..).collect::<Vec<_>>()
        };
        self.submit_aers();
        // Timeouts.
        let live: Vec<Arc<QpairShared>> = self.live_qpairs();
        let mut reset = false;
        for q in &live {
            let cids = std::mem::take(&mut *q.timed_out.lock().unwrap());
            for cid in cids {
                let cid = cid as u32;
                self.aborts.fetch_add(1, Ordering::Relaxed);
                let r = self.admin_command(
                    Sqe {
                        opc: admin_opc::ABORT,
                        cdw10: U32::new(q.qid as u32 | cid << 16),
                        ..Default::default()
                    },
                    AdminData::None,
                );
                tracing::warn!(ctrlr = self.dev.name(), qid = q.qid, cid, result = ?r.map(|c| c.dw0.get() & 1 == 0), "Abort sent for a timed-out command");
            }
            reset |= q.want_reset.swap(0, Ordering::AcqRel) != 0;
        }
        reset |= std::mem::take(&mut self.admin.lock().unwrap().hung);
        if reset {
            if let Err(e) = self.reset() {
                tracing::error!(ctrlr = self.dev.name(), error = %e, "controller reset failed");
            }
        }
        other
    }

    fn live_qpairs(&self) -> Vec<Arc<QpairShared>> {
        let mut qs = self.qpairs.lock().unwrap();
        qs.retain(|w| {
            w.upgrade()
                .is_some_and(|q| q.state.load(Ordering::Acquire) != GONE)
        });
        qs.iter().filter_map(Weak::upgrade).collect()
    }

    /// Creates an I/O queue pair for the calling thread.
    pub fn create_io_qpair(self: &Arc<Self>) -> Result<Qpair, Error> {
        let qid = {
            let mut ids = self.qids.lock().unwrap();
            let q = (1..ids.len())
                .find(|&i| !ids[i])
                .ok_or_else(|| Error::Unsupported {
                    ctrlr: self.dev.name().into(),
                    what: format!("all {} I/O queues are in use", self.io_queues),
                })?;
            ids[q] = true;
            q as u16
        };
        let r = self.create_io_qpair_with(qid);
        if r.is_err() {
            self.qids.lock().unwrap()[qid as usize] = false;
        }
        r
    }

    fn create_io_qpair_with(self: &Arc<Self>, qid: u16) -> Result<Qpair, Error> {
        let entries = queue_entries(self.opts.io_queue_entries, self.cap);
        let cmb = self.cmb.as_ref();
        let sq = match cmb.filter(|c| self.opts.cmb_sqs && c.supports_sqs()) {
            Some(c) => cmb_mem(c, entries as usize * 64)?,
            None => QueueMem::host(&self.dev, entries as usize * 64)?,
        };
        let cq = QueueMem::host(&self.dev, entries as usize * 16)?;
        let lists_len = (entries as usize - 1) * 4096;
        let lists = match cmb.filter(|c| self.opts.cmb_lists && c.supports_lists()) {
            Some(c) => cmb_mem(c, lists_len)?,
            None => QueueMem::host(&self.dev, lists_len)?,
        };
        let sgl = if self.sgl_supported {
            self.opts.sgl
        } else {
            SglMode::Never
        };
        let mut q = Qpair::new(QpairParts {
            dev: self.dev.clone(),
            qid,
            entries,
            dstrd: self.cap.dstrd(),
            sq,
            cq,
            lists,
            sgl,
            policy: self.opts.reset_policy,
            timeout: self.opts.io_timeout,
        });
        {
            // Not while a reset re-creates queues.
            let _r = self.reset_lock.lock().unwrap();
            self.create_queues(q.shared())?;
            self.qpairs.lock().unwrap().push(Arc::downgrade(q.shared()));
        }
        let weak = Arc::downgrade(self);
        q.set_on_drop(Box::new(move |qid| match weak.upgrade() {
            Some(c) => c.delete_queues(qid),
            // The controller is gone (shut down): nothing uses the queues any more.
            None => true,
        }));
        tracing::debug!(
            ctrlr = self.dev.name(),
            qid,
            entries,
            sq_in_cmb = q.sq_in_cmb(),
            lists_in_cmb = q.lists_in_cmb(),
            "I/O queue pair created"
        );
        Ok(q)
    }

    fn create_queues(&self, q: &QpairShared) -> Result<(), Error> {
        let size = (q.entries as u32 - 1) << 16;
        self.admin_command(
            Sqe {
                opc: admin_opc::CREATE_IO_CQ,
                dptr: prp1(q.cq_addr),
                cdw10: U32::new(q.qid as u32 | size),
                // Physically contiguous, interrupts off: the queue is polled.
                cdw11: U32::new(1),
                ..Default::default()
            },
            AdminData::None,
        )?;
        let r = self.admin_command(
            Sqe {
                opc: admin_opc::CREATE_IO_SQ,
                dptr: prp1(q.sq_addr),
                cdw10: U32::new(q.qid as u32 | size),
                cdw11: U32::new(1 | (q.qid as u32) << 16),
                ..Default::default()
            },
            AdminData::None,
        );
        if r.is_err() {
            let _ = self.delete_cmd(admin_opc::DELETE_IO_CQ, q.qid);
        }
        r.map(|_| ())
    }

    fn delete_cmd(&self, opc: u8, qid: u16) -> Result<Cqe, Error> {
        self.admin_command(
            Sqe {
                opc,
                cdw10: U32::new(qid as u32),
                ..Default::default()
            },
            AdminData::None,
        )
    }

    /// Deletes queue pair `qid`'s queues; false when the controller may still use
    /// their memory (a deletion failed: the memory must then be kept).
    fn delete_queues(&self, qid: u16) -> bool {
        let _r = self.reset_lock.lock().unwrap();
        let mut clean = true;
        if !*self.shut_down.lock().unwrap() {
            if let Err(e) = self.delete_cmd(admin_opc::DELETE_IO_SQ, qid) {
                tracing::warn!(ctrlr = self.dev.name(), qid, error = %e, "Delete I/O SQ failed: its memory is kept");
                clean = false;
            }
            if let Err(e) = self.delete_cmd(admin_opc::DELETE_IO_CQ, qid) {
                tracing::warn!(ctrlr = self.dev.name(), qid, error = %e, "Delete I/O CQ failed: its memory is kept");
                clean = false;
            }
        }
        if clean {
            self.qids.lock().unwrap()[qid as usize] = false;
        }
        clean
    }

    /// Resets the controller: every queue pair quiesces (on its next poll), the
    /// controller is disabled and enabled again, the queues are re-created, and what
    /// was in flight is resubmitted or aborted by the [`ResetPolicy`].
    pub fn reset(&self) -> Result<(), Error> {
        let _r = self.reset_lock.lock().unwrap();
        let live = self.live_qpairs();
        for q in &live {
            // A queue pair being dropped (GONE) is left alone.
            let _ = q
                .state
                .compare_exchange(RUNNING, QUIESCE, Ordering::AcqRel, Ordering::Relaxed);
        }
        let t0 = Instant::now();
        while live.iter().any(|q| {
            let s = q.state.load(Ordering::Acquire);
            s != QUIESCED && s != GONE && s != FAILED
        }) {
            if t0.elapsed() > Duration::from_secs(5) {
                tracing::warn!(
                    ctrlr = self.dev.name(),
                    "a queue pair did not quiesce in 5 s (is its thread polling?); resetting anyway"
                );
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        match self.reset_locked(&live) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Nothing will bring the queues back: what was in flight completes as
                // aborted and submissions fail, rather than waiting forever.
                for q in &live {
                    if q.state.load(Ordering::Acquire) != GONE {
                        q.state.store(FAILED, Ordering::Release);
                    }
                }
                tracing::error!(ctrlr = self.dev.name(), error = %e, "controller reset failed: its queue pairs fail");
                Err(e)
            }
        }
    }

    fn reset_locked(&self, live: &[Arc<QpairShared>]) -> Result<(), Error> {
        let to = Duration::from_millis(500 * self.cap.to().max(1) as u64);
        {
            let mut a = self.admin.lock().unwrap();
            disable(&self.dev, to)?;
            // Disabled: no DMA any more to retired admin buffers.
            a.retired.clear();
            a.hung = false;
            a.q.reinit();
            a.aers = 0;
            let entries = queue_entries(self.opts.admin_queue_entries, self.cap);
            enable(&self.dev, &a.q, entries, to)?;
        }
        let n = self.io_queues - 1;
        self.admin_command(
            Sqe {
                opc: admin_opc::SET_FEATURES,
                cdw10: U32::new(0x07),
                cdw11: U32::new(n as u32 | (n as u32) << 16),
                ..Default::default()
            },
            AdminData::None,
        )?;
        // Features are back at their defaults: namespace attribute notices again.
        let _ = self.admin_command(
            Sqe {
                opc: admin_opc::SET_FEATURES,
                cdw10: U32::new(0x0b),
                cdw11: U32::new(1 << 8),
                ..Default::default()
            },
            AdminData::None,
        );
        for q in live {
            if q.state.load(Ordering::Acquire) == GONE {
                continue;
            }
            self.create_queues(q)?;
            q.state.store(RESTART, Ordering::Release);
        }
        self.submit_aers();
        self.resets.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            ctrlr = self.dev.name(),
            queues = live.len(),
            "controller reset done"
        );
        Ok(())
    }

    /// Shuts the controller down (CC.SHN normal, wait for CSTS.SHST complete) so that
    /// it is left clean for the next driver. I/O queue pairs should be gone first.
    pub fn shutdown(&self) -> Result<(), Error> {
        let mut done = self.shut_down.lock().unwrap();
        if *done {
            return Ok(());
        }
        *done = true;
        let _a = self.admin.lock().unwrap();
        let cc = Cc::from(self.dev.read32(offset::CC)).with_shn(1);
        self.dev.write32(offset::CC, cc.into());
        let rtd3e = Duration::from_micros(self.cdata.rtd3e.get() as u64);
        let to = rtd3e.max(Duration::from_secs(10));
        wait_csts(&self.dev, "CSTS.SHST=complete", to, |c| c.shst() == 2)?;
        tracing::info!(ctrlr = self.dev.name(), "controller shut down");
        Ok(())
    }
}

impl Drop for Ctrlr {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(ctrlr = self.dev.name(), error = %e, "shutdown failed");
        }
    }
}

/// Entries of a queue: what was asked, within 2..=4096 and CAP.MQES (0's based, so up
/// to 65536).
fn queue_entries(want: u16, cap: Cap) -> u16 {
    (want.clamp(2, 4096) as u32).min(cap.mqes() as u32 + 1) as u16
}

fn cmb_mem(c: &Arc<Cmb>, len: usize) -> Result<QueueMem, Error> {
    let b = c
        .alloc(len)
        .ok_or_else(|| Error::Invalid(format!("the CMB has no {len} bytes left")))?;
    let (ptr, addr, n) = (b.as_ptr(), b.nvme_addr(), b.len());
    // SAFETY: the CMB buffer stays allocated (and mapped) in the box; the controller
    // reaches the same bytes at its CMB address.
    Ok(unsafe { QueueMem::new(ptr, addr, n, true, Box::new(b)) })
}

fn prp1(a: NvmeAddr) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&a.get().to_le_bytes());
    d
}

fn identify_sqe(cns: u8, nsid: u32) -> Sqe {
    Sqe {
        opc: admin_opc::IDENTIFY,
        nsid: U32::new(nsid),
        cdw10: U32::new(cns as u32),
        ..Default::default()
    }
}

fn disable(dev: &Arc<dyn Device>, to: Duration) -> Result<(), Error> {
    let cc = Cc::from(dev.read32(offset::CC));
    if cc.en() {
        // A controller still becoming ready must get there before it may be disabled
        // (base 3.5.3: CC.EN 1 -> 0 while CSTS.RDY is 0 is undefined).
        let _ = wait_csts(dev, "CSTS.RDY=1 before disabling", to, |c| {
            c.rdy() || c.cfs()
        });
        dev.write32(offset::CC, cc.with_en(false).into());
    }
    wait_csts(dev, "CSTS.RDY=0", to, |c| !c.rdy())?;
    Ok(())
}

fn enable(dev: &Arc<dyn Device>, admin: &Qpair, entries: u16, to: Duration) -> Result<(), Error> {
    let shared = admin.shared();
    dev.write32(
        offset::AQA,
        Aqa::new()
            .with_asqs(entries - 1)
            .with_acqs(entries - 1)
            .into(),
    );
    dev.write64(offset::ASQ, shared.sq_addr.get());
    dev.write64(offset::ACQ, shared.cq_addr.get());
    let cc = Cc::new().with_en(true).with_iosqes(6).with_iocqes(4);
    dev.write32(offset::CC, cc.into());
    wait_csts(dev, "CSTS.RDY=1", to, |c| c.rdy())?;
    Ok(())
}

fn decode_aer(cqe: &Cqe) -> Option<Event> {
    if !cqe.status().is_success() {
        // Aborted at reset or shutdown.
        return None;
    }
    let dw0 = cqe.dw0.get();
    let (ty, info, log) = ((dw0 & 0x7) as u8, (dw0 >> 8) as u8, (dw0 >> 16) as u8);
    Some(if ty == 2 && info == 0 {
        Event::NamespacesChanged(Vec::new())
    } else {
        Event::Other { ty, info, log }
    })
}

fn admin_name(opc: u8) -> &'static str {
    match opc {
        admin_opc::IDENTIFY => "Identify",
        admin_opc::SET_FEATURES => "Set Features",
        admin_opc::GET_FEATURES => "Get Features",
        admin_opc::CREATE_IO_CQ => "Create I/O Completion Queue",
        admin_opc::CREATE_IO_SQ => "Create I/O Submission Queue",
        admin_opc::DELETE_IO_CQ => "Delete I/O Completion Queue",
        admin_opc::DELETE_IO_SQ => "Delete I/O Submission Queue",
        admin_opc::ABORT => "Abort",
        admin_opc::GET_LOG_PAGE => "Get Log Page",
        admin_opc::NAMESPACE_ATTACHMENT => "Namespace Attachment",
        _ => "admin command",
    }
}

/// Statuses a caller may see, for messages.
pub fn is_lba_out_of_range(s: Status) -> bool {
    s.sct == 0 && s.sc == 0x80
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::twin::{self, Twin};
    use crate::spec::admin::nvm_opc;
    use crate::spec::cmd::Status;

    fn rw(opc: u8, slba: u64, nlb: u32) -> Sqe {
        Sqe::nvm_rw(opc, 1, slba, nlb)
    }

    fn setup(opts: CtrlrOpts) -> (Arc<Twin>, Arc<dyn Device>, Arc<Ctrlr>) {
        let t = Arc::new(Twin::new());
        let dev: Arc<dyn Device> = t.clone();
        let c = Ctrlr::attach(dev.clone(), opts).unwrap();
        (t, dev, c)
    }

    /// Polls until `n` completions came, returning (tag, status) in completion order.
    fn reap(q: &mut Qpair, n: usize) -> Vec<(u64, Status)> {
        let mut out = Vec::new();
        let t0 = Instant::now();
        while out.len() < n {
            q.poll(0, |t, c| out.push((t, c.status())));
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "completions missing: {out:?}"
            );
        }
        out
    }

    fn fill(m: &DmaMem, off: usize, len: usize, seed: u8) {
        for i in 0..len {
            // SAFETY: inside the test's own DMA memory, no command in flight.
            unsafe { *m.ptr(off + i) = seed.wrapping_add((i * 7 % 251) as u8) };
        }
    }

    /// A scatter list over `m` of (offset, length) pieces, each filled with its own
    /// pattern; returns it and the bytes it carries, in order.
    fn scatter(m: &DmaMem, pieces: &[(usize, usize)]) -> (Vec<DataSeg>, Vec<u8>) {
        let mut want = Vec::new();
        let segs = pieces
            .iter()
            .enumerate()
            .map(|(i, &(off, len))| {
                fill(m, off, len, i as u8 + 1);
                want.extend(bytes(m, off, len));
                DataSeg {
                    addr: m.addr(off),
                    len: len as u32,
                }
            })
            .collect();
        (segs, want)
    }

    fn bytes(m: &DmaMem, off: usize, len: usize) -> Vec<u8> {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(m.ptr(off), len).to_vec() }
    }

    #[test]
    fn bring_up_identifies_the_controller_and_its_namespaces() {
        let (_t, dev, c) = setup(CtrlrOpts::default());
        assert_eq!(c.model(), "Pollux twin controller");
        assert_eq!(c.serial(), "twin-1");
        assert_eq!(c.firmware(), "1.0");
        assert_eq!(c.max_transfer(), 4096 << twin::MDTS);
        assert_eq!(c.io_queues(), 8);
        assert!(c.sgl_supported());
        let ns = c.namespaces();
        assert_eq!(ns.len(), 1);
        assert_eq!(
            (ns[0].nsid, ns[0].block_size, ns[0].num_blocks),
            (1, 512, twin::BLOCKS)
        );
        assert!(ns[0].dealloc_reads_zeroes);
        assert!(Csts::from(dev.read32(offset::CSTS)).rdy());
        assert!(c.cmb().is_some(), "the twin's CMB is enabled by default");
    }

    #[test]
    fn prps_single_page_two_pages_and_lists_round_trip() {
        let (t, dev, c) = setup(CtrlrOpts {
            sgl: SglMode::Never,
            ..Default::default()
        });
        let mut q = c.create_io_qpair().unwrap();
        let m = DmaMem::new(&dev, 256 << 10).unwrap();
        // (offset in m, length): one page; dword-aligned start crossing a page (PRP2 is
        // the next page); 64 KiB through a list; the largest transfer.
        let cases = [(0, 4096), (512, 4096), (8192, 64 << 10), (0, 128 << 10)];
        for (i, &(off, len)) in cases.iter().enumerate() {
            fill(&m, off, len, i as u8);
            let want = bytes(&m, off, len);
            let seg = [DataSeg {
                addr: m.addr(off),
                len: len as u32,
            }];
            q.submit(rw(nvm_opc::WRITE, 64, len as u32 / 512), &seg, 1)
                .unwrap();
            assert_eq!(reap(&mut q, 1), vec![(1, Status::SUCCESS)]);
            assert_eq!(t.ns_bytes(64, len), want, "case {i}");
            fill(&m, off, len, 0xaa);
            q.submit(rw(nvm_opc::READ, 64, len as u32 / 512), &seg, 2)
                .unwrap();
            assert_eq!(reap(&mut q, 1), vec![(2, Status::SUCCESS)]);
            assert_eq!(bytes(&m, off, len), want, "case {i} read back");
        }
        assert!(q.stats().prp_lists >= 2);
        // A scatter list PRPs can carry: page-aligned middle segments.
        let (segs, want) = scatter(&m, &[(3072, 1024), (16384, 8192), (65536, 1024)]);
        q.submit(rw(nvm_opc::WRITE, 200, 20), &segs, 3).unwrap();
        assert_eq!(reap(&mut q, 1), vec![(3, Status::SUCCESS)]);
        assert_eq!(t.ns_bytes(200, 10240), want);
        // One PRPs cannot: refused with SGLs off.
        let bad = [
            DataSeg {
                addr: m.addr(0),
                len: 512,
            },
            DataSeg {
                addr: m.addr(4096 + 512),
                len: 512,
            },
        ];
        assert!(matches!(
            q.submit(rw(nvm_opc::WRITE, 0, 2), &bad, 4),
            Err(crate::qpair::SubmitError::Invalid(_))
        ));
        assert_eq!(q.outstanding(), 0);
    }

    #[test]
    fn sgls_carry_what_prps_cannot() {
        let (t, dev, c) = setup(CtrlrOpts::default());
        let mut q = c.create_io_qpair().unwrap();
        let m = DmaMem::new(&dev, 64 << 10).unwrap();
        let (segs, want) = scatter(&m, &[(400, 512), (8704, 1024), (20000, 512)]);
        q.submit(rw(nvm_opc::WRITE, 10, 4), &segs, 9).unwrap();
        assert_eq!(reap(&mut q, 1), vec![(9, Status::SUCCESS)]);
        assert_eq!(t.ns_bytes(10, 2048), want);
        assert_eq!(q.stats().sgls, 1);
    }

    #[test]
    fn doorbells_are_batched_per_poll_and_statuses_decoded() {
        let (t, dev, c) = setup(CtrlrOpts::default());
        let mut q = c.create_io_qpair().unwrap();
        let m = DmaMem::new(&dev, 64 << 10).unwrap();
        let before = t.doorbells.load(std::sync::atomic::Ordering::Relaxed);
        for i in 0..8u64 {
            let seg = [DataSeg {
                addr: m.addr(i as usize * 4096),
                len: 4096,
            }];
            q.submit(rw(nvm_opc::READ, i * 8, 8), &seg, i).unwrap();
        }
        let got = reap(&mut q, 8);
        assert_eq!(got.len(), 8);
        // One SQ doorbell for the eight, one CQ head doorbell for their completions.
        assert_eq!(
            t.doorbells.load(std::sync::atomic::Ordering::Relaxed) - before,
            2
        );
        assert_eq!(q.stats().sq_doorbells, 1);
        let seg = [DataSeg {
            addr: m.addr(0),
            len: 4096,
        }];
        q.submit(rw(nvm_opc::READ, twin::BLOCKS - 4, 8), &seg, 20)
            .unwrap();
        let st = reap(&mut q, 1)[0].1;
        assert!(is_lba_out_of_range(st) && st.dnr, "{st:?}");
        // The ring wraps many times over.
        for i in 0..2000u64 {
            q.submit(rw(nvm_opc::READ, 0, 8), &seg, i).unwrap();
            assert_eq!(reap(&mut q, 1), vec![(i, Status::SUCCESS)]);
        }
    }

    #[test]
    fn a_full_queue_says_busy() {
        let (_t, dev, c) = setup(CtrlrOpts {
            io_queue_entries: 4,
            ..Default::default()
        });
        let mut q = c.create_io_qpair().unwrap();
        let m = DmaMem::new(&dev, 4096).unwrap();
        let seg = [DataSeg {
            addr: m.addr(0),
            len: 4096,
        }];
        for i in 0..3 {
            q.submit(rw(nvm_opc::READ, 0, 8), &seg, i).unwrap();
        }
        assert_eq!(
            q.submit(rw(nvm_opc::READ, 0, 8), &seg, 3),
            Err(crate::qpair::SubmitError::Busy)
        );
        assert_eq!(reap(&mut q, 3).len(), 3);
    }

    fn reset_during_io(policy: ResetPolicy) -> (Vec<(u64, Status)>, Arc<Twin>, DmaMem) {
        let (t, dev, c) = setup(CtrlrOpts {
            reset_policy: policy,
            ..Default::default()
        });
        let mut q = c.create_io_qpair().unwrap();
        let m = DmaMem::new(&dev, 64 << 10).unwrap();
        fill(&m, 0, 64 << 10, 9);
        t.hold_io.store(true, std::sync::atomic::Ordering::Relaxed);
        for i in 0..16u64 {
            let seg = [DataSeg {
                addr: m.addr(i as usize * 4096),
                len: 4096,
            }];
            q.submit(rw(nvm_opc::WRITE, i * 8, 8), &seg, i).unwrap();
        }
        q.poll(0, |_, _| panic!("held"));
        let c2 = c.clone();
        let t2 = t.clone();
        let resetter = std::thread::spawn(move || {
            t2.hold_io
                .store(false, std::sync::atomic::Ordering::Relaxed);
            c2.reset().unwrap();
        });
        let got = reap(&mut q, 16);
        resetter.join().unwrap();
        assert_eq!(c.stats().resets, 1);
        // Nothing more comes: no duplicates.
        for _ in 0..100 {
            q.poll(0, |t, _| panic!("duplicate completion of {t}"));
        }
        // The queue works after the reset.
        let seg = [DataSeg {
            addr: m.addr(0),
            len: 4096,
        }];
        q.submit(rw(nvm_opc::READ, 0, 8), &seg, 99).unwrap();
        assert_eq!(reap(&mut q, 1), vec![(99, Status::SUCCESS)]);
        (got, t, m)
    }

    #[test]
    fn a_reset_retries_what_was_in_flight_exactly_once() {
        let (mut got, t, m) = reset_during_io(ResetPolicy::Retry);
        got.sort_by_key(|g| g.0);
        assert_eq!(
            got,
            (0..16).map(|i| (i, Status::SUCCESS)).collect::<Vec<_>>()
        );
        assert_eq!(t.ns_bytes(0, 64 << 10), bytes(&m, 0, 64 << 10));
    }

    #[test]
    fn a_reset_can_abort_what_was_in_flight() {
        let (mut got, _t, _m) = reset_during_io(ResetPolicy::Abort);
        got.sort_by_key(|g| g.0);
        assert_eq!(
            got,
            (0..16)
                .map(|i| (i, Status::ABORTED_SQ_DELETION))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn completions_posted_before_a_reset_are_delivered_once_not_retried() {
        let (_t, dev, c) = setup(CtrlrOpts::default());
        let mut q = c.create_io_qpair().unwrap();
        let m = DmaMem::new(&dev, 64 << 10).unwrap();
        for i in 0..8u64 {
            let seg = [DataSeg {
                addr: m.addr(i as usize * 4096),
                len: 4096,
            }];
            q.submit(rw(nvm_opc::READ, i * 8, 8), &seg, i).unwrap();
        }
        // The twin completes them at the doorbell; nobody reaped them yet.
        q.ring();
        let c2 = c.clone();
        let resetter = std::thread::spawn(move || c2.reset().unwrap());
        let mut got = reap(&mut q, 8);
        resetter.join().unwrap();
        got.sort_by_key(|g| g.0);
        assert_eq!(
            got,
            (0..8).map(|i| (i, Status::SUCCESS)).collect::<Vec<_>>()
        );
        assert_eq!(q.stats().retried, 0, "finished commands are not run again");
        for _ in 0..50 {
            q.poll(0, |t, _| panic!("duplicate completion of {t}"));
        }
    }

    #[test]
    fn aborts_after_a_reset_respect_the_poll_budget() {
        let (t, dev, c) = setup(CtrlrOpts {
            reset_policy: ResetPolicy::Abort,
            ..Default::default()
        });
        let mut q = c.create_io_qpair().unwrap();
        let m = DmaMem::new(&dev, 4096).unwrap();
        t.hold_io.store(true, std::sync::atomic::Ordering::Relaxed);
        let seg = [DataSeg {
            addr: m.addr(0),
            len: 4096,
        }];
        for i in 0..100u64 {
            q.submit(rw(nvm_opc::READ, 0, 8), &seg, i).unwrap();
        }
        q.ring();
        let c2 = c.clone();
        let resetter = std::thread::spawn(move || c2.reset().unwrap());
        let mut seen = std::collections::BTreeSet::new();
        let t0 = Instant::now();
        while seen.len() < 100 {
            let n = q.poll(4, |tag, cqe| {
                assert_eq!(cqe.status(), Status::ABORTED_SQ_DELETION);
                assert!(seen.insert(tag), "{tag} twice");
            });
            assert!(n <= 4, "poll handed out {n} > 4");
            assert!(t0.elapsed() < Duration::from_secs(10));
        }
        resetter.join().unwrap();
    }

    #[test]
    fn a_hung_command_is_aborted_then_the_controller_reset() {
        let (t, dev, c) = setup(CtrlrOpts {
            io_timeout: Some(Duration::from_millis(20)),
            ..Default::default()
        });
        let mut q = c.create_io_qpair().unwrap();
        let m = DmaMem::new(&dev, 4096).unwrap();
        t.hold_io.store(true, std::sync::atomic::Ordering::Relaxed);
        let seg = [DataSeg {
            addr: m.addr(0),
            len: 4096,
        }];
        q.submit(rw(nvm_opc::READ, 0, 8), &seg, 7).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c2, t2, stop2) = (c.clone(), t.clone(), stop.clone());
        let admin = std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                c2.process_admin();
                if c2.stats().resets > 0 {
                    t2.hold_io
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let got = reap(&mut q, 1);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        admin.join().unwrap();
        assert_eq!(got, vec![(7, Status::SUCCESS)]);
        let s = c.stats();
        assert!(s.aborts >= 1 && s.resets >= 1, "{s:?}");
        assert!(q.stats().timeouts >= 1);
    }

    #[test]
    fn namespace_changes_arrive_as_events_and_rescan() {
        let (t, _dev, c) = setup(CtrlrOpts::default());
        assert!(c.process_admin().is_empty());
        t.attach_ns2();
        let ev = c.process_admin();
        assert_eq!(ev, vec![Event::NamespacesChanged(vec![2])]);
        assert_eq!(
            c.namespaces().iter().map(|n| n.nsid).collect::<Vec<_>>(),
            vec![1, 2]
        );
        // AERs were submitted again: a second change is seen too.
        t.attach_ns2();
        assert_eq!(c.process_admin(), vec![Event::NamespacesChanged(vec![2])]);
    }

    #[test]
    fn cmb_queues_lists_and_data() {
        let (t, dev, c) = setup(CtrlrOpts {
            cmb_sqs: true,
            cmb_lists: true,
            sgl: SglMode::Never,
            ..Default::default()
        });
        let cmb = c.cmb().unwrap().clone();
        assert_eq!(cmb.controller_base().get(), twin::CMB_BAR_ADDR);
        let mut q = c.create_io_qpair().unwrap();
        assert!(q.sq_in_cmb() && q.lists_in_cmb());
        let mut wbuf = cmb.alloc(64 << 10).unwrap();
        let pattern: Vec<u8> = (0..64 << 10).map(|i| (i % 253) as u8).collect();
        wbuf.write(0, &pattern);
        let seg = [DataSeg {
            addr: wbuf.nvme_addr(),
            len: 64 << 10,
        }];
        q.submit(rw(nvm_opc::WRITE, 100, 128), &seg, 1).unwrap();
        assert_eq!(reap(&mut q, 1), vec![(1, Status::SUCCESS)]);
        assert_eq!(t.ns_bytes(100, 64 << 10), pattern);
        let rbuf = cmb.alloc(64 << 10).unwrap();
        let seg = [DataSeg {
            addr: rbuf.nvme_addr(),
            len: 64 << 10,
        }];
        q.submit(rw(nvm_opc::READ, 100, 128), &seg, 2).unwrap();
        assert_eq!(reap(&mut q, 1), vec![(2, Status::SUCCESS)]);
        let mut back = vec![0u8; 64 << 10];
        rbuf.read(0, &mut back);
        assert_eq!(back, pattern);
        assert!(t.cmb_sqes.load(std::sync::atomic::Ordering::Relaxed) >= 2);
        assert_eq!(t.cmb_commands.load(std::sync::atomic::Ordering::Relaxed), 2);
        // Host memory and CMB in one command is refused by the controller.
        let m = DmaMem::new(&dev, 4096).unwrap();
        let mixed = [
            DataSeg {
                addr: m.addr(0),
                len: 4096,
            },
            DataSeg {
                addr: rbuf.nvme_addr(),
                len: 4096,
            },
        ];
        q.submit(rw(nvm_opc::READ, 0, 16), &mixed, 3).unwrap();
        assert_eq!(reap(&mut q, 1)[0].1.sc, 0x12);
        let used = cmb.used();
        drop(wbuf);
        assert_eq!(cmb.used(), used - (64 << 10));
    }

    #[test]
    fn queue_pairs_give_their_queue_back_and_shutdown_is_clean() {
        let (_t, dev, c) = setup(CtrlrOpts::default());
        let q1 = c.create_io_qpair().unwrap();
        let q2 = c.create_io_qpair().unwrap();
        assert_eq!((q1.qid(), q2.qid()), (1, 2));
        drop(q1);
        let q3 = c.create_io_qpair().unwrap();
        assert_eq!(q3.qid(), 1, "the deleted queue's id is reused");
        drop((q2, q3));
        c.shutdown().unwrap();
        assert_eq!(Csts::from(dev.read32(offset::CSTS)).shst(), 2);
    }
}
