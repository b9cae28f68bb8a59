//! PCIe queue pairs: a submission ring and a completion ring with phase tags, command
//! identifiers, doorbells written after a write barrier and batched per poll, and data
//! pointers (PRP lists, or SGLs where the controller supports them) built from the
//! addresses the caller resolved for this controller when it created the request.
//!
//! A [`Qpair`] belongs to one thread. The admin queue is one too (queue 0), used by
//! [`crate::ctrlr::Ctrlr`] under its lock.

use crate::pci::{Device, NvmeAddr};
use crate::spec::cmd::{Cqe, SglDescriptor, Sqe, Status, sgl_subtype, sgl_type};
use crate::spec::regs::offset;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering, fence};
use std::time::{Duration, Instant};
use zerocopy::IntoBytes;
use zerocopy::little_endian::U16;

/// The controller memory page size this driver programs (CC.MPS = 0).
pub const PAGE: u64 = 4096;
/// PRP entries one list page holds (no chained lists: transfers stay within this).
pub const PRP_LIST_ENTRIES: usize = (PAGE / 8) as usize;
/// SGL data block descriptors one list page holds.
pub const SGL_LIST_ENTRIES: usize = (PAGE / 16) as usize;

/// Memory of a ring or of the PRP/SGL lists: a CPU pointer and the controller's
/// address of the same bytes, in host memory or in the CMB.
pub struct QueueMem {
    ptr: *mut u8,
    addr: NvmeAddr,
    len: usize,
    in_cmb: bool,
    _keep: Option<Box<dyn Send + Sync>>,
}

// SAFETY: the memory is owned through `_keep`; its one user is the owning queue pair.
unsafe impl Send for QueueMem {}

impl fmt::Debug for QueueMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueMem")
            .field("addr", &self.addr)
            .field("len", &self.len)
            .field("in_cmb", &self.in_cmb)
            .finish()
    }
}

impl QueueMem {
    /// Memory at `ptr` for the CPU and `addr` for the controller, kept by `keep`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay valid for reads and writes while `keep` lives, and be
    /// the same bytes the controller reaches at `addr..addr+len`.
    pub unsafe fn new(
        ptr: *mut u8,
        addr: NvmeAddr,
        len: usize,
        in_cmb: bool,
        keep: Box<dyn Send + Sync>,
    ) -> QueueMem {
        QueueMem {
            ptr,
            addr,
            len,
            in_cmb,
            _keep: Some(keep),
        }
    }

    /// Host memory mapped for `dev`.
    pub fn host(dev: &Arc<dyn Device>, len: usize) -> Result<QueueMem, crate::pci::Error> {
        let m = crate::pci::DmaMem::new(dev, len)?;
        // SAFETY: DmaMem keeps its mapping, mapped at `addr` for the device.
        Ok(unsafe { QueueMem::new(m.ptr(0), m.addr(0), m.len(), false, Box::new(m)) })
    }

    /// Whether it lies in the controller's CMB.
    pub fn in_cmb(&self) -> bool {
        self.in_cmb
    }

    /// The controller's address of byte `off`.
    pub fn addr(&self, off: usize) -> NvmeAddr {
        debug_assert!(off <= self.len);
        self.addr.offset(off as u64)
    }

    fn at(&self, off: usize, n: usize) -> *mut u8 {
        assert!(off + n <= self.len, "queue memory access out of bounds");
        // SAFETY: in bounds (asserted).
        unsafe { self.ptr.add(off) }
    }

    /// Never frees the memory (a device may still write it).
    fn leak(&mut self) {
        std::mem::forget(self._keep.take());
    }

    fn zero(&self) {
        // SAFETY: the whole range is ours (see `new`); no device DMA runs into it while
        // its queue does not exist.
        unsafe { std::ptr::write_bytes(self.ptr, 0, self.len) }
    }
}

/// A run of data for one command, at the controller's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataSeg {
    /// Where it is, for this controller.
    pub addr: NvmeAddr,
    /// Bytes.
    pub len: u32,
}

/// What happens to commands in flight when their controller is reset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResetPolicy {
    /// Submit them again once the queues are back (up to three times).
    #[default]
    Retry,
    /// Complete them with Command Aborted due to SQ Deletion.
    Abort,
}

/// Why a submission was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// Every slot is busy, or the controller is being reset: poll and retry.
    Busy,
    /// The command cannot be carried as given (what is wrong).
    Invalid(String),
    /// The controller failed (a reset did not bring it back).
    Failed,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Busy => f.write_str("the queue pair is full or resetting: poll and retry"),
            SubmitError::Invalid(w) => write!(f, "command refused: {w}"),
            SubmitError::Failed => f.write_str("the controller failed and was not brought back"),
        }
    }
}

impl std::error::Error for SubmitError {}

pub(crate) const RUNNING: u8 = 0;
pub(crate) const QUIESCE: u8 = 1;
pub(crate) const QUIESCED: u8 = 2;
pub(crate) const RESTART: u8 = 3;
pub(crate) const GONE: u8 = 4;
/// The controller could not be brought back: everything in flight completes aborted.
pub(crate) const FAILED: u8 = 5;

/// What a queue pair shares with its controller (which resets and re-creates it).
#[derive(Debug)]
pub(crate) struct QpairShared {
    pub qid: u16,
    pub entries: u16,
    pub sq_addr: NvmeAddr,
    pub cq_addr: NvmeAddr,
    pub state: AtomicU8,
    /// Commands (CIDs) that timed out and should be aborted (a rare path: a lock).
    pub timed_out: std::sync::Mutex<Vec<u16>>,
    /// Set when an aborted command still did not complete: reset the controller.
    pub want_reset: AtomicU8,
}

/// Counters of a queue pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QpairStats {
    /// Commands submitted (retries included).
    pub submitted: u64,
    /// Commands completed to the caller.
    pub completed: u64,
    /// SQ tail doorbell writes.
    pub sq_doorbells: u64,
    /// Commands whose data went through a PRP list.
    pub prp_lists: u64,
    /// Commands whose data went through SGLs.
    pub sgls: u64,
    /// Commands submitted again after a controller reset.
    pub retried: u64,
    /// Commands completed with an abort status by a reset.
    pub aborted_by_reset: u64,
    /// Commands that timed out.
    pub timeouts: u64,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    tag: u64,
    busy: bool,
    sqe: Sqe,
    at: Option<Instant>,
    abort_sent: bool,
    retries: u8,
}

/// A queue pair (see the module documentation).
pub struct Qpair {
    dev: Arc<dyn Device>,
    shared: Arc<QpairShared>,
    sq: QueueMem,
    cq: QueueMem,
    lists: QueueMem,
    entries: u16,
    sq_tail: u16,
    cq_head: u16,
    phase: bool,
    sq_db: u32,
    cq_db: u32,
    sq_pending: bool,
    slots: Box<[Slot]>,
    free: Vec<u16>,
    sgl: SglMode,
    policy: ResetPolicy,
    timeout: Option<Duration>,
    now: Instant,
    polls: u32,
    stats: QpairStats,
    on_drop: Option<Box<dyn FnOnce(u16) -> bool + Send>>,
    /// Commands to complete with an abort status (after a reset), handed out by poll.
    aborts: Vec<u16>,
    /// Completions the controller posted before a reset, handed out by poll.
    done_early: Vec<(u16, Cqe)>,
}

impl fmt::Debug for Qpair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qpair")
            .field("qid", &self.shared.qid)
            .field("entries", &self.entries)
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

/// When a queue pair uses SGLs for data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SglMode {
    /// Never (PRPs only).
    #[default]
    Never,
    /// Only for data PRPs cannot describe.
    WhenNeeded,
    /// Always.
    Always,
}

/// How a queue pair is built (by [`crate::ctrlr::Ctrlr`]).
pub(crate) struct QpairParts {
    pub dev: Arc<dyn Device>,
    pub qid: u16,
    pub entries: u16,
    pub dstrd: u8,
    pub sq: QueueMem,
    pub cq: QueueMem,
    pub lists: QueueMem,
    pub sgl: SglMode,
    pub policy: ResetPolicy,
    pub timeout: Option<Duration>,
}

impl Qpair {
    pub(crate) fn new(p: QpairParts) -> Qpair {
        let stride = 4u32 << p.dstrd;
        let shared = Arc::new(QpairShared {
            qid: p.qid,
            entries: p.entries,
            sq_addr: p.sq.addr(0),
            cq_addr: p.cq.addr(0),
            state: AtomicU8::new(RUNNING),
            timed_out: std::sync::Mutex::new(Vec::new()),
            want_reset: AtomicU8::new(0),
        });
        // One slot fewer than entries: a full ring would look empty.
        let n = p.entries as usize - 1;
        Qpair {
            dev: p.dev,
            shared,
            sq: p.sq,
            cq: p.cq,
            lists: p.lists,
            entries: p.entries,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            sq_db: offset::DOORBELLS + 2 * p.qid as u32 * stride,
            cq_db: offset::DOORBELLS + (2 * p.qid as u32 + 1) * stride,
            sq_pending: false,
            slots: vec![Slot::default(); n].into_boxed_slice(),
            free: (0..n as u16).rev().collect(),
            sgl: p.sgl,
            policy: p.policy,
            timeout: p.timeout,
            now: Instant::now(),
            polls: 0,
            stats: QpairStats::default(),
            on_drop: None,
            aborts: Vec::with_capacity(n),
            done_early: Vec::with_capacity(n),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<QpairShared> {
        &self.shared
    }

    /// `f(qid)` runs on drop; when it returns false (the controller could not delete the
    /// queues), the queues' memory is leaked rather than freed under the device.
    pub(crate) fn set_on_drop(&mut self, f: Box<dyn FnOnce(u16) -> bool + Send>) {
        self.on_drop = Some(f);
    }

    /// The queue identifier.
    pub fn qid(&self) -> u16 {
        self.shared.qid
    }

    /// Commands in flight.
    pub fn outstanding(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Commands it holds in flight at most.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Its counters.
    pub fn stats(&self) -> QpairStats {
        self.stats
    }

    /// Whether its submission ring lies in the CMB.
    pub fn sq_in_cmb(&self) -> bool {
        self.sq.in_cmb()
    }

    /// Whether its PRP/SGL lists lie in the CMB.
    pub fn lists_in_cmb(&self) -> bool {
        self.lists.in_cmb()
    }

    /// Queues `sqe` (its CID and data pointer are filled in here) with `data`; the
    /// doorbell is written by the next [`Self::poll`] or [`Self::ring`]. `tag` comes
    /// back with the completion.
    pub fn submit(&mut self, mut sqe: Sqe, data: &[DataSeg], tag: u64) -> Result<(), SubmitError> {
        match self.shared.state.load(Ordering::Acquire) {
            RUNNING => {}
            FAILED => return Err(SubmitError::Failed),
            _ => return Err(SubmitError::Busy),
        }
        let Some(&cid) = self.free.last() else {
            return Err(SubmitError::Busy);
        };
        self.set_data_pointer(cid, &mut sqe, data)
            .map_err(SubmitError::Invalid)?;
        self.free.pop();
        sqe.cid = U16::new(cid);
        self.slots[cid as usize] = Slot {
            tag,
            busy: true,
            sqe,
            at: self.timeout.map(|_| self.now),
            abort_sent: false,
            retries: 0,
        };
        self.push_sqe(&sqe);
        Ok(())
    }

    fn push_sqe(&mut self, sqe: &Sqe) {
        let at = self.sq.at(self.sq_tail as usize * 64, 64);
        // SAFETY: one 64-byte entry of the ring, which the controller reads only after
        // the doorbell moves past it.
        unsafe { std::ptr::copy_nonoverlapping(sqe.as_bytes().as_ptr(), at, 64) };
        self.sq_tail = (self.sq_tail + 1) % self.entries;
        self.sq_pending = true;
        self.stats.submitted += 1;
    }

    /// Writes the SQ tail doorbell if commands were queued since the last one.
    pub fn ring(&mut self) {
        if self.sq_pending {
            // The entries must be visible to the controller before the doorbell.
            fence(Ordering::SeqCst);
            self.dev.write32(self.sq_db, self.sq_tail as u32);
            self.sq_pending = false;
            self.stats.sq_doorbells += 1;
        }
    }

    /// Sets PRP1/PRP2 (or SGL1) of `sqe` for `data`, using slot `cid`'s list page.
    fn set_data_pointer(
        &mut self,
        cid: u16,
        sqe: &mut Sqe,
        data: &[DataSeg],
    ) -> Result<(), String> {
        let total: u64 = data.iter().map(|d| d.len as u64).sum();
        if total == 0 {
            // No data: the caller's data pointer stays (queue creation puts the queue's
            // address in PRP1).
            return Ok(());
        }
        sqe.dptr = [0; 16];
        sqe.flags &= 0x3f;
        let prp_ok = prp_compatible(data);
        let use_sgl = match self.sgl {
            SglMode::Always => true,
            SglMode::WhenNeeded => !prp_ok,
            SglMode::Never => false,
        };
        let list_off = cid as usize * PAGE as usize;
        if use_sgl {
            if data.len() == 1 {
                let d = SglDescriptor::new(
                    sgl_type::DATA_BLOCK,
                    sgl_subtype::ADDRESS,
                    data[0].addr.get(),
                    data[0].len,
                );
                sqe.set_sgl(&d);
            } else {
                if data.len() > SGL_LIST_ENTRIES {
                    return Err(format!(
                        "{} segments: an SGL list holds {SGL_LIST_ENTRIES}",
                        data.len()
                    ));
                }
                for (i, s) in data.iter().enumerate() {
                    let d = SglDescriptor::new(
                        sgl_type::DATA_BLOCK,
                        sgl_subtype::ADDRESS,
                        s.addr.get(),
                        s.len,
                    );
                    let p = self.lists.at(list_off + i * 16, 16);
                    // SAFETY: slot `cid`'s list page, unused by the controller until this
                    // command is submitted.
                    unsafe { std::ptr::copy_nonoverlapping(d.as_bytes().as_ptr(), p, 16) };
                }
                // Last Segment descriptor (type 3) pointing at the list.
                let seg = SglDescriptor::new(
                    0x3,
                    sgl_subtype::ADDRESS,
                    self.lists.addr(list_off).get(),
                    data.len() as u32 * 16,
                );
                sqe.set_sgl(&seg);
            }
            self.stats.sgls += 1;
            return Ok(());
        }
        if !prp_ok {
            return Err(
                "the data cannot be described by PRPs (a segment other than the first starts, or one other than the last ends, inside a page) and SGLs are off"
                    .into(),
            );
        }
        let mut prp1 = None;
        let mut n = 0usize;
        let mut first_entry = 0u64;
        for s in data {
            let mut a = s.addr.get();
            let end = a + s.len as u64;
            while a < end {
                if prp1.is_none() {
                    prp1 = Some(a);
                } else {
                    if n == PRP_LIST_ENTRIES {
                        return Err(format!(
                            "{total} bytes need more than {} PRP entries",
                            PRP_LIST_ENTRIES + 1
                        ));
                    }
                    if n == 0 {
                        first_entry = a;
                    }
                    let p = self.lists.at(list_off + n * 8, 8);
                    // SAFETY: slot `cid`'s list page, as above.
                    unsafe { std::ptr::copy_nonoverlapping(a.to_le_bytes().as_ptr(), p, 8) };
                    n += 1;
                }
                a = (a & !(PAGE - 1)) + PAGE;
            }
        }
        let prp2 = match n {
            0 => 0,
            1 => first_entry,
            _ => {
                self.stats.prp_lists += 1;
                self.lists.addr(list_off).get()
            }
        };
        sqe.dptr[..8].copy_from_slice(&prp1.unwrap_or(0).to_le_bytes());
        sqe.dptr[8..].copy_from_slice(&prp2.to_le_bytes());
        Ok(())
    }

    /// Rings the doorbell for queued commands, then reaps at most `max` completions
    /// (0: all there are) and calls `f(tag, cqe)` for each. Returns how many.
    pub fn poll(&mut self, max: usize, mut f: impl FnMut(u64, &Cqe)) -> usize {
        let max = if max == 0 { usize::MAX } else { max };
        match self.shared.state.load(Ordering::Acquire) {
            RUNNING => {}
            QUIESCE => {
                // Only from QUIESCE: a RESTART or FAILED set meanwhile stands.
                let _ = self.shared.state.compare_exchange(
                    QUIESCE,
                    QUIESCED,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                return 0;
            }
            RESTART => self.restart(),
            FAILED => {
                self.fail_all();
                return self.drain_aborts(max, &mut f);
            }
            _ => return 0,
        }
        let mut n = self.drain_aborts(max, &mut f);
        while n < max {
            let Some((_, cqe)) = self.done_early.pop() else {
                break;
            };
            if let Some(tag) = self.finish(&cqe) {
                n += 1;
                f(tag, &cqe);
            }
        }
        self.ring();
        self.polls = self.polls.wrapping_add(1);
        if self.timeout.is_some() && self.polls % 64 == 0 {
            self.now = Instant::now();
            if self.polls % 4096 == 0 {
                self.check_timeouts();
            }
        }
        let mut reaped = false;
        while n < max {
            let Some(cqe) = self.next_cqe() else { break };
            reaped = true;
            if let Some(tag) = self.finish(&cqe) {
                n += 1;
                f(tag, &cqe);
            }
        }
        if reaped {
            self.dev.write32(self.cq_db, self.cq_head as u32);
        }
        // Commands submitted from the callbacks go out now.
        self.ring();
        n
    }

    /// The next posted completion entry, if the controller wrote one.
    fn next_cqe(&mut self) -> Option<Cqe> {
        let at = self.cq.at(self.cq_head as usize * 16, 16);
        // SAFETY: one 16-byte entry of the completion ring; the status word is read
        // first (volatile: the controller writes it), then, after a barrier, the rest.
        let status = unsafe { std::ptr::read_volatile(at.add(14) as *const u16) };
        if (status & 1 != 0) != self.phase {
            return None;
        }
        fence(Ordering::Acquire);
        let mut cqe = Cqe::default();
        // SAFETY: as above; the entry is complete once its phase tag flipped.
        unsafe { std::ptr::copy_nonoverlapping(at, cqe.as_mut_bytes().as_mut_ptr(), 16) };
        self.cq_head += 1;
        if self.cq_head == self.entries {
            self.cq_head = 0;
            self.phase = !self.phase;
        }
        Some(cqe)
    }

    /// Frees the slot of a completion; its tag, or `None` for a CID not in flight.
    fn finish(&mut self, cqe: &Cqe) -> Option<u64> {
        let cid = cqe.cid.get() as usize;
        let Some(slot) = self.slots.get_mut(cid).filter(|s| s.busy) else {
            tracing::warn!(
                qid = self.shared.qid,
                cid,
                "completion for a command not in flight, ignored"
            );
            return None;
        };
        slot.busy = false;
        let tag = slot.tag;
        self.free.push(cid as u16);
        self.stats.completed += 1;
        Some(tag)
    }

    /// Completes up to `max` commands queued for an abort status (after a reset).
    fn drain_aborts(&mut self, max: usize, f: &mut impl FnMut(u64, &Cqe)) -> usize {
        let mut n = 0;
        while n < max {
            let Some(cid) = self.aborts.pop() else { break };
            let mut cqe = Cqe {
                cid: U16::new(cid),
                sqid: U16::new(self.shared.qid),
                ..Default::default()
            };
            cqe.set_status(Status::ABORTED_SQ_DELETION);
            if let Some(tag) = self.finish(&cqe) {
                self.stats.aborted_by_reset += 1;
                n += 1;
                f(tag, &cqe);
            }
        }
        n
    }

    /// The controller failed: every command in flight completes as aborted, and
    /// submissions are refused.
    fn fail_all(&mut self) {
        for cid in 0..self.slots.len() {
            if self.slots[cid].busy && !self.aborts.contains(&(cid as u16)) {
                self.aborts.push(cid as u16);
            }
        }
    }

    fn check_timeouts(&mut self) {
        let Some(t) = self.timeout else { return };
        for (cid, s) in self.slots.iter_mut().enumerate() {
            let Some(at) = s.at.filter(|_| s.busy) else {
                continue;
            };
            if self.now.duration_since(at) < t {
                continue;
            }
            if !s.abort_sent {
                s.abort_sent = true;
                s.at = Some(self.now);
                self.stats.timeouts += 1;
                tracing::warn!(
                    qid = self.shared.qid,
                    cid,
                    opc = s.sqe.opc,
                    "command timed out: aborting it"
                );
                self.shared.timed_out.lock().unwrap().push(cid as u16);
            } else {
                tracing::warn!(
                    qid = self.shared.qid,
                    cid,
                    "aborted command still outstanding: resetting the controller"
                );
                self.shared.want_reset.store(1, Ordering::Release);
            }
        }
    }

    /// After the controller re-created this queue: what the controller completed before
    /// it was disabled is reaped (those entries are final), the rings start afresh, and
    /// the commands still in flight are submitted again or queued to complete as
    /// aborted (handed out by the next polls, `max` at a time).
    fn restart(&mut self) {
        while let Some(cqe) = self.next_cqe() {
            let cid = cqe.cid.get();
            if self.slots.get(cid as usize).is_some_and(|s| s.busy) {
                // Done before the reset: complete it as it was, not again.
                self.done_early.push((cid, cqe));
            }
        }
        // The controller posts nothing to the re-created queue before it gets a
        // command, so stale entries (with either phase) can be cleared now.
        self.cq.zero();
        self.sq_tail = 0;
        self.cq_head = 0;
        self.phase = true;
        self.sq_pending = false;
        let early: Vec<u16> = self.done_early.iter().map(|e| e.0).collect();
        for cid in 0..self.slots.len() {
            let s = self.slots[cid];
            if !s.busy || early.contains(&(cid as u16)) {
                continue;
            }
            if self.policy == ResetPolicy::Retry && s.retries < 3 {
                self.slots[cid].retries += 1;
                self.slots[cid].at = self.timeout.map(|_| self.now);
                self.slots[cid].abort_sent = false;
                self.stats.retried += 1;
                self.push_sqe(&s.sqe);
            } else {
                self.aborts.push(cid as u16);
            }
        }
        let _ = self.shared.state.compare_exchange(
            RESTART,
            RUNNING,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        self.ring();
    }

    /// Back to empty rings with no command in flight (the admin queue, after the
    /// controller was disabled).
    pub(crate) fn reinit(&mut self) {
        self.sq.zero();
        self.cq.zero();
        self.sq_tail = 0;
        self.cq_head = 0;
        self.phase = true;
        self.sq_pending = false;
        let n = self.slots.len();
        self.slots.iter_mut().for_each(|s| s.busy = false);
        self.free = (0..n as u16).rev().collect();
    }
}

impl Drop for Qpair {
    fn drop(&mut self) {
        self.shared.state.store(GONE, Ordering::Release);
        if let Some(f) = self.on_drop.take() {
            if !f(self.shared.qid) {
                self.sq.leak();
                self.cq.leak();
                self.lists.leak();
            }
        }
    }
}

/// Whether PRPs can describe `data`: only the first segment may start inside a page
/// (at a dword), and only the last may end inside one.
pub fn prp_compatible(data: &[DataSeg]) -> bool {
    let last = data.len().saturating_sub(1);
    data.iter().enumerate().all(|(i, s)| {
        let a = s.addr.get();
        let start_ok = if i == 0 { a % 4 == 0 } else { a % PAGE == 0 };
        let end_ok = i == last || (a + s.len as u64) % PAGE == 0;
        start_ok && end_ok && s.len > 0
    })
}
