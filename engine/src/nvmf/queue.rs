//! A queue pair's request handling, independent of the transport.
//!
//! A transport (NVMe/TCP, NVMe/RDMA) receives a command capsule, takes a request slot
//! ([`Queue::admit`]), gets the command's data into the request's buffers, and calls
//! [`Queue::execute`]. From there this module runs the command: Fabrics commands
//! (Connect, Property Get/Set, Disconnect), admin commands on the controller, NVM
//! commands on the namespace's bdev (with FUA, Compare and Dataset Management). When a
//! command is done its slot, status and dword 0 go into [`Queue::done`]; the transport
//! takes them from there, returns the data (C2H) and the response, and then releases the
//! slot ([`Queue::release`]).
//!
//! All of it runs on the poll group's thread, without locks: a queue lives on one
//! thread.

use super::ctrlr::{self, AdminOutcome, Ctrlr, IoPlan};
use super::poll_group::{PgSubsys, PollGroup};
use super::{CmbBuffers, ConnectRefusal, ConnectReq, CtrlrShared, ListenAddr, TransportOpts};
use crate::bdev::{BdevIo, IoCallback, IoKind, IoStatus};
use crate::thread::{Nanos, PollStatus};
use pollux_nvme::spec::admin;
use pollux_nvme::spec::cmd::{Sqe, Status};
use pollux_nvme::spec::fabrics::{
    ConnectData, ConnectFields, FabricsCmd, NQN_LEN_MAX, OPC_FABRICS, fctype, nqn_str,
};
use pollux_nvme::spec::log::ana_state;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use zerocopy::FromBytes;

/// A connection that has not completed Connect by then is closed.
const CONNECT_DEADLINE_NS: Nanos = 30_000_000_000;

/// A queue pair of a transport, as its poll group drives it.
pub(crate) trait Qpair {
    /// One poll: moves what can move; returns whether anything did, and whether the
    /// queue pair is closed.
    fn poll(&mut self, pg: &PollGroup) -> (PollStatus, bool);
    /// Closes it: every request not in a bdev releases its buffers now, the rest when
    /// their bdev hands them back.
    fn close(&mut self, pg: &PollGroup, why: &str);
    /// Sends what the queue has completed (after an event outside `poll`).
    fn send_done(&mut self, pg: &PollGroup);
    /// Its request handling.
    fn queue(&mut self) -> &mut Queue;
    /// Returns a completed command's data and response the transport's way.
    fn answer_one(&mut self, pg: &PollGroup, slot: u16, status: Status, dw0: u32);

    /// Answers the commands the queue completed.
    fn answer(&mut self, pg: &PollGroup) {
        while let Some((slot, status, dw0)) = self.queue().done.pop_front() {
            self.answer_one(pg, slot, status, dw0);
        }
    }
    /// Takes request `slot`'s buffers and moves it on: runs it, or starts fetching its
    /// host-to-controller data (R2T, RDMA READ); false when the pools are short (nothing
    /// taken).
    fn try_start_transfer(&mut self, pg: &PollGroup, slot: u16) -> bool;

    /// [`Qpair::try_start_transfer`], or the request waits for buffers in order (behind
    /// any already waiting, so small requests never overtake a large one for good).
    fn start_transfer(&mut self, pg: &PollGroup, slot: u16) {
        if !self.queue().need_buf.is_empty() || !self.try_start_transfer(pg, slot) {
            let q = self.queue();
            q.reqs[slot as usize].state = RState::NeedBuf;
            q.need_buf.push_back(slot);
        }
    }

    /// Requests waiting for buffers, in arrival order; stops at the first that still
    /// cannot have them (buffers come back from completions on this thread).
    fn retry_need_buf(&mut self, pg: &PollGroup) -> bool {
        let mut any = false;
        while let Some(&slot) = self.queue().need_buf.front() {
            if !self.try_start_transfer(pg, slot) {
                break;
            }
            self.queue().need_buf.pop_front();
            any = true;
        }
        any
    }
}

/// What a request needs once its buffers are in ([`Queue::start_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Started {
    /// It runs (or ran): its data was there or there is none to move.
    Ran,
    /// Its host-to-controller data must be fetched now (the request awaits it).
    FetchData,
}

/// A shared queue pair as the poll group holds it.
pub(crate) type QpairRef = Rc<RefCell<dyn Qpair>>;

/// The callback bdevs hand a queue pair's finished I/Os to (`me` is the queue pair; once
/// it is gone, the I/O and its buffers just drop).
pub(crate) fn io_callback<C: Qpair + 'static>(
    me: Weak<RefCell<C>>,
    pg: &crate::thread::IoChannel<super::Target>,
) -> IoCallback {
    let pg = pg.clone();
    Rc::new(move |io: Box<BdevIo>| {
        pg.bump(|s| s.pending_bdev_io -= 1);
        if let Some(c) = me.upgrade() {
            let mut c = c.borrow_mut();
            c.queue().io_done(io, &pg);
            c.answer(&pg);
        }
    })
}

/// Keep-alive and connect deadlines of `qp`; returns whether it was closed.
pub(crate) fn housekeeping(qp: &QpairRef, pg: &PollGroup, now: Nanos) -> bool {
    let mut c = qp.borrow_mut();
    let q = c.queue();
    if q.closed {
        return false;
    }
    let why = match &q.role {
        Role::None if now.saturating_sub(q.created) > CONNECT_DEADLINE_NS => {
            "no Connect within 30 s"
        }
        Role::Admin(ctrlr) if ctrlr.keep_alive_expired(now) => {
            pg.bump(|s| s.keep_alive_timeouts += 1);
            tracing::warn!(peer = %q.peer, cntlid = ctrlr.shared().cntlid,
                "keep-alive timeout: the host went silent; tearing the controller down");
            "keep-alive timeout"
        }
        _ => return false,
    };
    c.close(pg, why);
    true
}

/// Data direction of a command (base 4.2: opcode bits 1:0; Fabrics: FCTYPE bits 1:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    None,
    H2c,
    C2h,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RState {
    Free,
    /// Waiting for data buffers.
    NeedBuf,
    /// R2T sent; H2CData expected at `h2c_off`.
    AwaitH2c,
    /// In a bdev or held by the controller (AER).
    Exec,
    /// Completed; its data is still being sent from its buffers.
    Sending,
}

/// What a request is doing beyond a plain bdev I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Plain,
    /// Deallocate: range `next` of `count` comes next.
    Dsm {
        next: u32,
        count: u32,
    },
    /// Compare: the host's data is in `aux`, the read goes into `io`.
    Compare,
    /// A write with Force Unit Access: a flush follows.
    Fua,
}

pub(crate) struct Req {
    pub(crate) state: RState,
    pub(crate) sqe: Sqe,
    pub(crate) dir: Dir,
    pub(crate) len: u32,
    pub(crate) h2c_off: u32,
    pub(crate) dw1: u32,
    pub(crate) io: Option<Box<BdevIo>>,
    pub(crate) aux: Vec<crate::dma::DmaBuf>,
    /// In-capsule data that arrived while the pools were empty (rare; allocated then).
    pub(crate) stash: Vec<u8>,
    pub(crate) op: Op,
    /// Its I/O's [`BdevIo::id`] while the I/O is in a bdev (for Abort).
    pub(crate) bdev_io: usize,
    /// When it arrived, in TSC ticks, while its queue is traced.
    pub(crate) start: u64,
}

pub(crate) enum Role {
    /// Before Connect.
    None,
    Admin(Box<Ctrlr>),
    Io {
        ctrlr: Arc<CtrlrShared>,
        qid: u16,
        subsys: Rc<PgSubsys>,
        /// The ANA states of its controller's listener, when the subsystem reports ANA.
        ana: Option<super::poll_group::PgAna>,
    },
}

pub(crate) fn new_req() -> Req {
    Req {
        state: RState::Free,
        sqe: Sqe::default(),
        dir: Dir::None,
        len: 0,
        h2c_off: 0,
        dw1: 0,
        io: Some(BdevIo::new()),
        aux: Vec::new(),
        stash: Vec::new(),
        op: Op::Plain,
        bdev_io: 0,
        start: 0,
    }
}

pub(crate) fn cmd_dir(sqe: &Sqe) -> Dir {
    let bits = if sqe.opc == OPC_FABRICS {
        sqe.fctype() & 3
    } else {
        sqe.opc & 3
    };
    match bits {
        1 => Dir::H2c,
        2 => Dir::C2h,
        // 3 (bidirectional) is not used by any command this target serves.
        _ => Dir::None,
    }
}

/// One queue pair's commands.
pub(crate) struct Queue {
    /// The host's address, for logs.
    pub(crate) peer: String,
    /// The listener the host came in through.
    pub(crate) local: ListenAddr,
    /// The connection's own local address (the listener's may be a wildcard).
    pub(crate) local_sock: SocketAddr,
    pub(crate) opts: TransportOpts,
    me: Weak<RefCell<dyn Qpair>>,
    /// Called by bdevs with finished I/Os (set by the transport, which owns the queue).
    pub(crate) cb: IoCallback,
    pub(crate) reqs: Vec<Req>,
    pub(crate) free: Vec<u16>,
    /// Requests waiting for data buffers, in arrival order.
    pub(crate) need_buf: VecDeque<u16>,
    /// I/Os a full bdev queue refused, in order.
    pub(crate) io_wait: VecDeque<u16>,
    pub(crate) role: Role,
    pub(crate) sqhd: u16,
    pub(crate) sqsize: u16,
    pub(crate) sqflow_off: bool,
    /// Disconnect was received: close once its response is sent.
    pub(crate) disconnecting: bool,
    pub(crate) closed: bool,
    pub(crate) created: Nanos,
    /// Completed commands for the transport to answer: (slot, status, dword 0).
    pub(crate) done: VecDeque<(u16, Status, u32)>,
    /// Whether the first use of CMB buffers, and of a fallback, was logged.
    pub(crate) cmb_logged: Cell<bool>,
    pub(crate) cmb_fallback_logged: Cell<bool>,
    /// What the transport already agreed for this queue (NVMe/RDMA's connection
    /// request: queue ID and entries); Connect must match it.
    pub(crate) agreed: Option<(u16, u32)>,
    /// Request slots per SQ entry. NVMe/RDMA takes 2: a host may reuse a command's
    /// entry once it has the response, before the target has seen its own SEND of that
    /// response complete and freed the slot (Linux's target does the same).
    pub(crate) slots_per_entry: usize,
}

impl Queue {
    /// A queue before Connect (one slot: the Connect command's).
    pub(crate) fn new(
        peer: String,
        local: ListenAddr,
        local_sock: SocketAddr,
        opts: TransportOpts,
        me: Weak<RefCell<dyn Qpair>>,
        cb: IoCallback,
        now: Nanos,
    ) -> Queue {
        Queue {
            peer,
            local,
            local_sock,
            opts,
            me,
            cb,
            reqs: vec![new_req()],
            free: vec![0],
            need_buf: VecDeque::new(),
            io_wait: VecDeque::new(),
            role: Role::None,
            sqhd: 0,
            sqsize: 1,
            sqflow_off: false,
            disconnecting: false,
            closed: false,
            created: now,
            done: VecDeque::new(),
            cmb_logged: Cell::new(false),
            cmb_fallback_logged: Cell::new(false),
            agreed: None,
            slots_per_entry: 1,
        }
    }

    /// Whether it is an I/O queue of controller `cntlid` of subsystem `sid`.
    pub(crate) fn belongs_to(&self, sid: u32, cntlid: u16) -> bool {
        match &self.role {
            Role::Io { ctrlr, .. } => ctrlr.subsys_id == sid && ctrlr.cntlid == cntlid,
            _ => false,
        }
    }

    /// Takes a slot for command `sqe` moving `len` bytes in direction `dir` (the
    /// request is set up to execute); `None` when the host sent more commands than
    /// its queue has entries.
    pub(crate) fn admit(&mut self, sqe: &Sqe, dir: Dir, len: u32) -> Option<u16> {
        let slot = self.free.pop()?;
        self.sqhd = (self.sqhd + 1) % self.sqsize.max(1);
        let traced = self.traced().is_some();
        let r = &mut self.reqs[slot as usize];
        r.sqe = *sqe;
        r.dir = dir;
        r.len = len;
        r.h2c_off = 0;
        r.dw1 = 0;
        r.op = Op::Plain;
        r.state = RState::Exec;
        if traced {
            r.start = crate::bdev::iostat::ticks();
        }
        Some(slot)
    }

    /// The controller and queue ID of an I/O queue whose commands are traced now.
    fn traced(&self) -> Option<(&CtrlrShared, u16)> {
        match &self.role {
            Role::Io { ctrlr, qid, .. }
                if ctrlr.trace.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                Some((ctrlr, *qid))
            }
            _ => None,
        }
    }

    /// Puts `bufs` in request `slot` and runs it if its data is here (none to move, or
    /// in-capsule data that waited for buffers, copied now); else it awaits its data.
    pub(crate) fn start_with(
        &mut self,
        pg: &PollGroup,
        slot: u16,
        bufs: impl IntoIterator<Item = crate::dma::DmaBuf>,
    ) -> Started {
        let r = &mut self.reqs[slot as usize];
        let io = r.io.as_mut().expect("a free request owns its I/O");
        for b in bufs {
            let _ = io.push_buf(b);
        }
        if !r.stash.is_empty() {
            copy_into(io.bufs_mut(), 0, &r.stash);
            r.stash.clear();
        } else if r.dir == Dir::H2c {
            r.state = RState::AwaitH2c;
            return Started::FetchData;
        }
        r.state = RState::Exec;
        self.execute(pg, slot);
        Started::Ran
    }

    /// Runs request `slot` whose in-capsule `data` goes into `bufs`.
    pub(crate) fn run_in_capsule(
        &mut self,
        pg: &PollGroup,
        slot: u16,
        bufs: impl IntoIterator<Item = crate::dma::DmaBuf>,
        data: &[u8],
    ) {
        let io = self.reqs[slot as usize]
            .io
            .as_mut()
            .expect("a free request owns its I/O");
        for b in bufs {
            let _ = io.push_buf(b);
        }
        copy_into(io.bufs_mut(), 0, data);
        self.execute(pg, slot);
    }

    /// Keeps request `slot`'s in-capsule `data` aside until buffers come back (the
    /// stream behind it keeps moving); it waits in order for them.
    pub(crate) fn stash(&mut self, slot: u16, data: &[u8]) {
        let r = &mut self.reqs[slot as usize];
        r.stash.clear();
        r.stash.extend_from_slice(data);
        r.state = RState::NeedBuf;
        self.need_buf.push_back(slot);
    }

    /// The command in `slot` is done: the transport answers it.
    pub(crate) fn finish(&mut self, slot: u16, status: Status, dw0: u32) {
        if let Some((c, qid)) = self.traced() {
            let r = &self.reqs[slot as usize];
            let q = &r.sqe;
            let lat = crate::bdev::iostat::ticks().wrapping_sub(r.start);
            let us = lat as f64 * 1e6 / crate::bdev::iostat::tick_rate() as f64;
            tracing::info!(
                target: "pollux_engine::nvmf::trace",
                nqn = %c.subnqn,
                host = %c.hostnqn,
                cntlid = c.cntlid,
                qid,
                cid = q.cid.get(),
                opc = q.opc,
                nsid = q.nsid.get(),
                slba = q.cdw10.get() as u64 | (q.cdw11.get() as u64) << 32,
                nlb = (q.cdw12.get() & 0xffff) + 1,
                sct = status.sct,
                sc = status.sc,
                us = format_args!("{us:.1}"),
                "command"
            );
        }
        self.done.push_back((slot, status, dw0));
    }

    /// Closes the queue's side: buffers of requests not in a bdev go back now, the
    /// controller or I/O queue is given up.
    pub(crate) fn close(&mut self, pg: &PollGroup, why: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        tracing::info!(peer = %self.peer, listener = %self.local, why, "queue pair closed");
        for r in &mut self.reqs {
            if r.state != RState::Exec || r.io.is_some() {
                if let Some(io) = r.io.as_mut() {
                    io.clear_bufs();
                }
                r.aux.clear();
            }
        }
        self.need_buf.clear();
        for slot in std::mem::take(&mut self.io_wait) {
            if let Some(io) = self.reqs[slot as usize].io.as_mut() {
                io.clear_bufs();
            }
            self.reqs[slot as usize].aux.clear();
        }
        self.done.clear();
        pg.bump(|s| s.current_connections -= 1);
        match std::mem::replace(&mut self.role, Role::None) {
            Role::None => {}
            Role::Admin(ctrlr) => {
                let sh = ctrlr.shared().clone();
                pg.unregister_admin(sh.subsys_id, sh.cntlid);
                pg.bump(|s| s.current_admin_qpairs -= 1);
                pg.tgt.ctrlr_gone(&sh);
            }
            Role::Io { ctrlr, qid, .. } => {
                pg.bump(|s| s.current_io_qpairs -= 1);
                pg.tgt.io_qpair_gone(&ctrlr, qid);
            }
        }
    }

    /// Releases a request whose data has all been sent.
    pub(crate) fn release(&mut self, slot: u16) {
        let r = &mut self.reqs[slot as usize];
        if let Some(io) = r.io.as_mut() {
            io.clear_bufs();
        }
        r.aux.clear();
        r.state = RState::Free;
        self.free.push(slot);
    }

    /// Data buffers for command `sqe` of `len` bytes: from the namespace's device
    /// memory (an NVMe CMB) when the transport is set to and the pool has room, else
    /// from the host pools; counted either way. `None` when the pools are short. `retry`:
    /// the request already waited (its wait is not counted again).
    pub(crate) fn bufs_for(
        &self,
        pg: &PollGroup,
        sqe: &Sqe,
        len: u32,
        retry: bool,
    ) -> Option<arrayvec::ArrayVec<crate::dma::DmaBuf, { crate::bdev::SGL_SEGMENTS_MAX }>> {
        let mut short = false;
        if self.opts.cmb_buffers != CmbBuffers::Off && sqe.opc != OPC_FABRICS {
            if let Role::Io { subsys, .. } = &self.role {
                if let Some(d) = subsys
                    .get(sqe.nsid.get())
                    .and_then(|ns| ns.dev_iobuf.clone())
                {
                    if let Some(b) = d.get_sgl(len as usize) {
                        pg.bump(|s| s.cmb_buffer_bytes += len as u64);
                        if !self.cmb_logged.replace(true) {
                            tracing::info!(peer = %self.peer, nsid = sqe.nsid.get(), "data buffers from the namespace's CMB");
                        }
                        return Some(b);
                    }
                    if self.opts.cmb_buffers == CmbBuffers::Force {
                        // Forced: wait for the device's memory (the request is retried
                        // as buffers come back), never host memory.
                        if !retry {
                            pg.bump(|s| s.cmb_pool_waits += 1);
                        }
                        return None;
                    }
                    short = true;
                }
            }
        }
        let b = pg.data_bufs(self.local.trtype, &self.opts, len)?;
        pg.bump(|s| s.host_buffer_bytes += len as u64);
        if short {
            // Counted once the host buffers are had (a retry does not count twice).
            pg.bump(|s| s.cmb_fallback_pool_empty += 1);
            if !self.cmb_fallback_logged.replace(true) {
                tracing::info!(peer = %self.peer, nsid = sqe.nsid.get(), "the CMB buffer pool is short: host buffers for now (counted in cmb_fallback_pool_empty)");
            }
        }
        Some(b)
    }

    /// What a transfer for request `slot` needs: its command, its data length, and
    /// whether it already waited for buffers.
    pub(crate) fn transfer_of(&self, slot: u16) -> (Sqe, u32, bool) {
        let r = &self.reqs[slot as usize];
        (r.sqe, r.len, r.state == RState::NeedBuf)
    }

    /// I/Os a full bdev queue refused, resubmitted in order.
    pub(crate) fn retry_io_wait(&mut self, pg: &PollGroup) -> bool {
        let mut any = false;
        while let Some(&slot) = self.io_wait.front() {
            let Role::Io { subsys, .. } = &self.role else {
                self.io_wait.clear();
                break;
            };
            let r = &mut self.reqs[slot as usize];
            let Some(ns) = subsys.get(r.sqe.nsid.get()) else {
                self.io_wait.pop_front();
                self.finish(slot, Status::INVALID_NAMESPACE, 0);
                continue;
            };
            let io = r.io.take().expect("a waiting I/O is parked in its request");
            if !self.try_submit(pg, slot, io, &ns.ch) {
                break;
            }
            self.io_wait.pop_front();
            any = true;
        }
        any
    }

    /// Runs a command whose data (if any) is in its buffers.
    pub(crate) fn execute(&mut self, pg: &PollGroup, slot: u16) {
        let sqe = self.reqs[slot as usize].sqe;
        if sqe.opc == OPC_FABRICS {
            self.fabrics(pg, slot);
            return;
        }
        match &mut self.role {
            Role::None => {
                // Anything but Connect before Connect.
                self.finish(slot, Status::COMMAND_SEQUENCE_ERROR, 0);
            }
            Role::Admin(_) => self.admin(pg, slot),
            Role::Io { .. } => self.io_cmd(pg, slot),
        }
    }

    pub(crate) fn admin(&mut self, pg: &PollGroup, slot: u16) {
        let now = pg.thread.now();
        let Role::Admin(ctrlr) = &mut self.role else {
            unreachable!("admin() on an admin queue");
        };
        let r = &mut self.reqs[slot as usize];
        let io =
            r.io.as_mut()
                .expect("an executing admin command owns its I/O");
        if r.dir == Dir::C2h {
            // Nothing of earlier I/Os may reach the host beyond what the command fills.
            for b in io.bufs_mut() {
                b.as_mut_slice().fill(0);
            }
        }
        let data = io.bufs_mut().first_mut().map(|b| b.as_mut_slice());
        // Admin data fits one buffer (8 KiB in capsule, or one iobuf).
        match ctrlr.admin(&pg.tgt, pg, &r.sqe, data, slot, now) {
            AdminOutcome::Done { status, dw0 } => self.finish(slot, status, dw0),
            AdminOutcome::Held => {}
            AdminOutcome::Abort { cid, dw0 } => {
                // Complete the aborted command (an AER) first.
                if let Some(s) = ctrlr.take_aer_by_cid(cid) {
                    self.finish(s, Status::ABORT_REQUESTED, 0);
                }
                self.finish(slot, Status::SUCCESS, dw0);
            }
            AdminOutcome::AbortIo { sqid, cid } => {
                let shared = ctrlr.shared().clone();
                if !pg.abort_io_async(&shared, sqid, cid, slot) {
                    self.finish(slot, Status::SUCCESS, admin::ABORT_DW0_NOT_ABORTED);
                }
            }
        }
    }

    /// Whether it is I/O queue `qid` of controller `cntlid` of subsystem `sid`.
    pub(crate) fn is_io_queue(&self, sid: u32, cntlid: u16, qid: u16) -> bool {
        matches!(&self.role, Role::Io { ctrlr, qid: q, .. }
            if ctrlr.subsys_id == sid && ctrlr.cntlid == cntlid && *q == qid)
    }

    /// Abort of command `cid` on this I/O queue: one waiting for room in its bdev's
    /// queue completes as aborted now; one in a bdev that can stop it (a delay or error
    /// bdev holding it) completes as aborted when the bdev hands it back. Returns
    /// whether the command is being aborted.
    pub(crate) fn abort_cid(&mut self, cid: u16) -> bool {
        let Some(slot) = self
            .reqs
            .iter()
            .position(|r| r.state == RState::Exec && r.sqe.cid.get() == cid)
        else {
            return false;
        };
        if let Some(i) = self.io_wait.iter().position(|&s| s as usize == slot) {
            self.io_wait.remove(i);
            self.finish(slot as u16, Status::ABORT_REQUESTED, 0);
            return true;
        }
        let r = &self.reqs[slot];
        if r.io.is_some() {
            // Not in a bdev: moving data, or between two steps.
            return false;
        }
        let Role::Io { subsys, .. } = &self.role else {
            return false;
        };
        match subsys.get(r.sqe.nsid.get()) {
            Some(ns) => ns.ch.abort(r.bdev_io),
            None => false,
        }
    }

    pub(crate) fn io_cmd(&mut self, pg: &PollGroup, slot: u16) {
        let Role::Io {
            subsys, ana, ctrlr, ..
        } = &self.role
        else {
            unreachable!("io_cmd() on an I/O queue");
        };
        let host = ctrlr.hostid;
        let r = &mut self.reqs[slot as usize];
        let sqe = r.sqe;
        let Some(ns) = subsys.get(sqe.nsid.get()) else {
            self.finish(slot, Status::INVALID_NAMESPACE, 0);
            return;
        };
        if let Some(a) = ana {
            // A group a listener never had a state for is optimized (new listeners
            // start so, and every change brings the whole list).
            let i = (ns.anagrpid as usize).wrapping_sub(1);
            let st = a.borrow().get(i).copied().unwrap_or(ana_state::OPTIMIZED);
            if !ana_state::accessible(st) {
                self.finish(slot, ctrlr::ana_status(st), 0);
                return;
            }
        }
        use pollux_nvme::spec::admin::nvm_opc;
        match sqe.opc {
            nvm_opc::RESERVATION_REGISTER
            | nvm_opc::RESERVATION_REPORT
            | nvm_opc::RESERVATION_ACQUIRE
            | nvm_opc::RESERVATION_RELEASE => {
                let len = r.len as usize;
                let io = r.io.as_mut().expect("an executing command owns its I/O");
                let mut data = [0u8; 16];
                if sqe.opc != nvm_opc::RESERVATION_REPORT {
                    crate::dma::gather(io.bufs_mut(), 0, &mut data[..len.min(16)]);
                }
                let mut out = Vec::new();
                let st = ns
                    .resv()
                    .command(&sqe, &host, &data[..len.min(16)], &mut out);
                if st.is_success() && sqe.opc == nvm_opc::RESERVATION_REPORT {
                    out.resize(len, 0);
                    crate::dma::scatter(io.bufs_mut(), 0, &out);
                }
                self.finish(slot, st, 0);
                return;
            }
            _ => {}
        }
        let write = !matches!(sqe.opc, nvm_opc::READ | nvm_opc::COMPARE);
        if !ns.resv_allows(&host, write) {
            self.finish(slot, Status::RESERVATION_CONFLICT, 0);
            return;
        }
        let bs = ns.bdev.block_size();
        let plan = ctrlr::plan_io(&sqe, bs, ns.bdev.num_blocks(), r.len);
        let mut io = r.io.take().expect("an executing command owns its I/O");
        io.ctx = slot as u64;
        match plan {
            IoPlan::Complete(s) => {
                r.io = Some(io);
                self.finish(slot, s, 0);
                return;
            }
            IoPlan::Submit {
                kind,
                slba,
                nlb,
                fua,
            } => {
                if kind == IoKind::Flush && !ns.bdev.supports(IoKind::Flush) {
                    r.io = Some(io);
                    self.finish(slot, Status::SUCCESS, 0);
                    return;
                }
                if fua && ns.bdev.supports(IoKind::Flush) {
                    r.op = Op::Fua;
                }
                io.prepare(kind, slba, nlb);
            }
            IoPlan::Compare { slba, nlb } => {
                // The host's data moves aside; fresh buffers take the read.
                r.aux = io.take_bufs().collect();
                let Some(bufs) = (match &ns.dev_iobuf {
                    Some(d) if self.opts.cmb_buffers != CmbBuffers::Off => d
                        .get_sgl(r.len as usize)
                        .or_else(|| pg.data_bufs(self.local.trtype, &self.opts, r.len)),
                    _ => pg.data_bufs(self.local.trtype, &self.opts, r.len),
                }) else {
                    r.aux.clear();
                    r.io = Some(io);
                    self.finish(slot, Status::generic(0x06, false), 0);
                    return;
                };
                for b in bufs {
                    let _ = io.push_buf(b);
                }
                r.op = Op::Compare;
                io.prepare(IoKind::Read, slba, nlb);
            }
            IoPlan::Dsm { ranges } => {
                r.aux = io.take_bufs().collect();
                r.op = Op::Dsm {
                    next: 0,
                    count: ranges,
                };
                r.io = Some(io);
                self.dsm_next(pg, slot, Status::SUCCESS);
                return;
            }
        }
        self.submit(pg, slot, io, &ns.ch);
    }

    pub(crate) fn submit(
        &mut self,
        pg: &PollGroup,
        slot: u16,
        io: Box<BdevIo>,
        ch: &crate::thread::IoChannel<crate::bdev::Bdev>,
    ) {
        if !self.io_wait.is_empty() {
            // Keep the order: behind those already waiting.
            self.reqs[slot as usize].io = Some(io);
            self.io_wait.push_back(slot);
        } else if !self.try_submit(pg, slot, io, ch) {
            self.io_wait.push_back(slot);
        }
    }

    /// Submits `io` for request `slot`: true when it is in the bdev or the command has
    /// completed with the bdev's refusal; false when the bdev's queue is full (the I/O is
    /// parked in its request to wait for a completion: the host would see an error after
    /// a few retries if it failed now).
    pub(crate) fn try_submit(
        &mut self,
        pg: &PollGroup,
        slot: u16,
        io: Box<BdevIo>,
        ch: &crate::thread::IoChannel<crate::bdev::Bdev>,
    ) -> bool {
        let id = io.id();
        match ch.submit(io, &self.cb) {
            Ok(()) => {
                self.reqs[slot as usize].bdev_io = id;
                pg.bump(|s| s.pending_bdev_io += 1);
                true
            }
            Err(e) if e.status == IoStatus::NoMemory => {
                self.reqs[slot as usize].io = Some(e.io);
                false
            }
            Err(e) => {
                let st = nvme_status(e.status);
                self.reqs[slot as usize].io = Some(e.io);
                self.finish(slot, st, 0);
                true
            }
        }
    }

    /// Deallocates the next DSM range, or completes the command.
    pub(crate) fn dsm_next(&mut self, pg: &PollGroup, slot: u16, last: Status) {
        let Role::Io { subsys, .. } = &self.role else {
            return;
        };
        let r = &mut self.reqs[slot as usize];
        let Op::Dsm { next, count } = r.op else {
            return;
        };
        let ns = subsys.get(r.sqe.nsid.get());
        if !last.is_success() || next >= count || ns.is_none() {
            let st = if ns.is_none() {
                Status::INVALID_NAMESPACE
            } else {
                last
            };
            r.aux.clear();
            self.finish(slot, st, 0);
            return;
        }
        let ns = ns.expect("checked");
        let mut range = [0u8; 16];
        copy_from(&r.aux, next as usize * 16, &mut range);
        let (slba, nlb) = ctrlr::dsm_range(&range);
        r.op = Op::Dsm {
            next: next + 1,
            count,
        };
        if nlb == 0 {
            return self.dsm_next(pg, slot, Status::SUCCESS);
        }
        if !ns.bdev.supports(IoKind::Unmap) {
            // Deallocate is advisory (base 3.3.3.2.1): succeed without doing it.
            return self.dsm_next(pg, slot, Status::SUCCESS);
        }
        let mut io = r.io.take().expect("DSM owns its I/O between ranges");
        io.ctx = slot as u64;
        io.prepare(IoKind::Unmap, slba, nlb);
        let ch = ns.ch.clone();
        self.submit(pg, slot, io, &ch);
    }

    /// A bdev handed an I/O back.
    pub(crate) fn io_done(&mut self, io: Box<BdevIo>, pg: &PollGroup) {
        let slot = io.ctx as u16;
        let st = nvme_status(io.status());
        let r = &mut self.reqs[slot as usize];
        r.io = Some(io);
        if self.closed {
            let r = &mut self.reqs[slot as usize];
            r.io.as_mut().expect("just put back").clear_bufs();
            r.aux.clear();
            return;
        }
        match r.op {
            Op::Plain => self.finish(slot, st, 0),
            Op::Fua if st.is_success() => {
                // The write is done; make it durable before acknowledging it.
                r.op = Op::Plain;
                let Role::Io { subsys, .. } = &self.role else {
                    return;
                };
                let Some(ns) = subsys.get(r.sqe.nsid.get()) else {
                    self.finish(slot, Status::INVALID_NAMESPACE, 0);
                    return;
                };
                let mut io = r.io.take().expect("just put back");
                io.clear_bufs();
                io.prepare(IoKind::Flush, 0, 0);
                self.submit(pg, slot, io, &ns.ch);
            }
            Op::Fua => self.finish(slot, st, 0),
            Op::Dsm { .. } => self.dsm_next(pg, slot, st),
            Op::Compare => {
                let same = st.is_success() && {
                    let io = r.io.as_ref().expect("just put back");
                    bufs_equal(io.bufs(), &r.aux)
                };
                r.aux.clear();
                // The read data is not the host's to see.
                r.io.as_mut().expect("just put back").clear_bufs();
                r.dir = Dir::None;
                let st = if !st.is_success() {
                    st
                } else if same {
                    Status::SUCCESS
                } else {
                    Status::COMPARE_FAILURE
                };
                self.finish(slot, st, 0)
            }
        }
    }

    pub(crate) fn fabrics(&mut self, pg: &PollGroup, slot: u16) {
        let sqe = self.reqs[slot as usize].sqe;
        let f = FabricsCmd::from_sqe(&sqe);
        match f.fctype {
            fctype::CONNECT => self.connect(pg, slot, &f),
            fctype::PROPERTY_GET | fctype::PROPERTY_SET => {
                let Role::Admin(ctrlr) = &mut self.role else {
                    let s = if matches!(self.role, Role::None) {
                        Status::COMMAND_SEQUENCE_ERROR
                    } else {
                        // Properties only on the admin queue.
                        Status::INVALID_FIELD
                    };
                    self.finish(slot, s, 0);
                    return;
                };
                let (st, val) = ctrlr.property(&f, pg.thread.now());
                self.reqs[slot as usize].dw1 = (val >> 32) as u32;
                self.finish(slot, st, val as u32);
            }
            fctype::DISCONNECT => {
                if matches!(self.role, Role::None) {
                    self.finish(slot, Status::COMMAND_SEQUENCE_ERROR, 0);
                    return;
                }
                self.finish(slot, Status::SUCCESS, 0);
                self.disconnecting = true;
            }
            _ => self.finish(slot, Status::INVALID_OPCODE, 0),
        }
    }

    pub(crate) fn connect(&mut self, pg: &PollGroup, slot: u16, f: &FabricsCmd) {
        // Offsets of Connect's fields in the SQE (fabrics 3.3, Figure 20).
        const OFF_RECFMT: u16 = 40;
        const OFF_SQSIZE: u16 = 44;
        if !matches!(self.role, Role::None) {
            self.finish(slot, Status::COMMAND_SEQUENCE_ERROR, 0);
            return;
        }
        let cf = ConnectFields::read_from_bytes(&f.specific).expect("24 bytes");
        let r = &mut self.reqs[slot as usize];
        let io = r.io.as_ref().expect("an executing command owns its I/O");
        let mut raw = [0u8; 1024];
        if r.len != 1024 || io.data_len() != 1024 {
            self.finish(slot, Status::SGL_LENGTH_INVALID, 0);
            return;
        }
        copy_from(io.bufs(), 0, &mut raw);
        let data = ConnectData::read_from_bytes(&raw).expect("1024 bytes");
        if cf.recfmt.get() != 0 {
            self.finish(
                slot,
                Status::CONNECT_INCOMPATIBLE_FORMAT,
                invalid_cmd(OFF_RECFMT),
            );
            return;
        }
        let qid = cf.qid.get();
        let sqsize = cf.sqsize.get() as u32;
        let depth_max = if qid == 0 {
            self.opts.max_aq_depth
        } else {
            self.opts.max_queue_depth
        };
        // At least 2 entries on any queue (SQSIZE 0 is invalid); SPDK's target and Linux's
        // nvmet take admin queues smaller than the 32 entries hosts usually ask for.
        if sqsize == 0 || sqsize + 1 > depth_max {
            self.finish(
                slot,
                Status::CONNECT_INVALID_PARAMETERS,
                invalid_cmd(OFF_SQSIZE),
            );
            return;
        }
        if let Some((aqid, entries)) = self.agreed {
            // The transport sized its resources for the queue it agreed to.
            const OFF_QID: u16 = 42;
            let off = if qid != aqid {
                Some(OFF_QID)
            } else if sqsize + 1 > entries {
                Some(OFF_SQSIZE)
            } else {
                None
            };
            if let Some(off) = off {
                tracing::warn!(peer = %self.peer, qid, aqid, sqsize, entries,
                    "Connect does not match the queue the transport connection was made for");
                self.finish(slot, Status::CONNECT_INVALID_PARAMETERS, invalid_cmd(off));
                return;
            }
        }
        // Each NQN ends with a NUL within its first NQN_LEN_MAX + 1 bytes (base 4.5).
        fn nqn(f: &[u8]) -> Option<&str> {
            f[..=NQN_LEN_MAX].contains(&0).then(|| nqn_str(f)).flatten()
        }
        let Some(subnqn) = nqn(&data.subnqn) else {
            self.finish(slot, Status::CONNECT_INVALID_PARAMETERS, invalid_data(256));
            return;
        };
        let Some(hostnqn) = nqn(&data.hostnqn) else {
            self.finish(slot, Status::CONNECT_INVALID_PARAMETERS, invalid_data(512));
            return;
        };
        let creq = ConnectReq {
            subnqn,
            hostnqn,
            hostid: data.hostid,
            qid,
            cntlid: data.cntlid.get(),
            local: self.local,
        };
        let me = pg.thread.handle();
        let (shared, subsys) = match pg.tgt.connect(&creq, &me) {
            Ok(x) => x,
            Err(refusal) => {
                let (st, dw0) = match refusal {
                    ConnectRefusal::InvalidData(o) => {
                        (Status::CONNECT_INVALID_PARAMETERS, invalid_data(o))
                    }
                    ConnectRefusal::InvalidCmd(o) => {
                        (Status::CONNECT_INVALID_PARAMETERS, invalid_cmd(o))
                    }
                    ConnectRefusal::InvalidHost => {
                        (Status::CONNECT_INVALID_HOST, invalid_data(512))
                    }
                    ConnectRefusal::Busy => (Status::CONNECT_CONTROLLER_BUSY, 0),
                };
                tracing::warn!(peer = %self.peer, subnqn, hostnqn, qid, ?refusal, "Connect refused");
                self.finish(slot, st, dw0);
                return;
            }
        };
        let cntlid = shared.cntlid;
        // Connect attributes bit 2: the host disabled SQ flow control (fabrics 3.3).
        self.sqflow_off = cf.cattr & (1 << 2) != 0;
        self.sqsize = (sqsize + 1) as u16;
        let slots = (sqsize as usize + 1) * self.slots_per_entry.max(1);
        self.reqs.resize_with(slots, new_req);
        self.free = (1..slots as u16).rev().collect();
        if qid == 0 {
            let kato = cf.kato.get();
            let ctrlr = Ctrlr::new(
                shared.clone(),
                subsys,
                kato,
                self.opts.clone(),
                self.local.trtype,
                self.local_sock,
                pg.thread.now(),
            );
            self.role = Role::Admin(Box::new(ctrlr));
            pg.register_admin(shared.subsys_id, cntlid, self.me.clone());
            pg.bump(|s| {
                s.admin_qpairs += 1;
                s.current_admin_qpairs += 1;
            });
        } else {
            let subsys = pg.subsys(shared.subsys_id);
            let ana = subsys.ana_of(shared.listener);
            self.role = Role::Io {
                ctrlr: shared,
                qid,
                subsys,
                ana,
            };
            pg.bump(|s| {
                s.io_qpairs += 1;
                s.current_io_qpairs += 1;
            });
        }
        tracing::info!(peer = %self.peer, subnqn, hostnqn, qid, cntlid, "host connected");
        self.finish(slot, Status::SUCCESS, cntlid as u32);
    }

    /// A namespace of this admin queue's controller changed.
    pub(crate) fn ns_changed(&mut self, nsid: u32) {
        let Role::Admin(ctrlr) = &mut self.role else {
            return;
        };
        if let Some((slot, dw0)) = ctrlr.ns_changed(nsid) {
            self.finish(slot, Status::SUCCESS, dw0);
        }
    }

    /// The ANA states this admin queue's controller sees changed.
    pub(crate) fn ana_changed(&mut self) {
        let Role::Admin(ctrlr) = &mut self.role else {
            return;
        };
        if let Some((slot, dw0)) = ctrlr.ana_changed() {
            self.finish(slot, Status::SUCCESS, dw0);
        }
    }

    pub(crate) fn qid(&self) -> u16 {
        match &self.role {
            Role::Io { qid, .. } => *qid,
            _ => 0,
        }
    }
}

pub(crate) fn nvme_status(s: IoStatus) -> Status {
    let (sct, sc, dnr) = s.nvme_status();
    Status {
        sct,
        sc,
        more: false,
        dnr,
    }
}

/// Copies `src` into the scatter list at byte `off`.
pub(crate) fn copy_into(bufs: &mut [crate::dma::DmaBuf], mut off: usize, mut src: &[u8]) {
    for b in bufs {
        let n = b.len();
        if off >= n {
            off -= n;
            continue;
        }
        let k = (n - off).min(src.len());
        b.as_mut_slice()[off..off + k].copy_from_slice(&src[..k]);
        src = &src[k..];
        off = 0;
        if src.is_empty() {
            return;
        }
    }
}

/// Copies from the scatter list at byte `off` into `dst`.
pub(crate) fn copy_from(bufs: &[crate::dma::DmaBuf], mut off: usize, mut dst: &mut [u8]) {
    for b in bufs {
        let n = b.len();
        if off >= n {
            off -= n;
            continue;
        }
        let k = (n - off).min(dst.len());
        dst[..k].copy_from_slice(&b.as_slice()[off..off + k]);
        dst = &mut dst[k..];
        off = 0;
        if dst.is_empty() {
            return;
        }
    }
}

pub(crate) fn bufs_equal(a: &[crate::dma::DmaBuf], b: &[crate::dma::DmaBuf]) -> bool {
    let mut ia = a.iter().flat_map(|x| x.as_slice().iter());
    let mut ib = b.iter().flat_map(|x| x.as_slice().iter());
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

/// Connect response DW0 for an invalid parameter in the Connect data (fabrics 3.3.2,
/// Figure 22: IPO, the byte offset, in bits 15:0; IATTR bit 16 set for the data).
pub(crate) fn invalid_data(off: u16) -> u32 {
    (1 << 16) | off as u32
}

/// As above, for a field of the command itself (IATTR clear).
pub(crate) fn invalid_cmd(off: u16) -> u32 {
    off as u32
}

pub(crate) trait OrLen {
    fn or_len(self, len_wrong: bool) -> Status;
}

impl OrLen for Status {
    /// The offset is right but the length is not: a length error instead.
    fn or_len(self, len_wrong: bool) -> Status {
        if len_wrong {
            Status::SGL_LENGTH_INVALID
        } else {
            self
        }
    }
}
