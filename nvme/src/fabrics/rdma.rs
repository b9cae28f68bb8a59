//! The NVMe/RDMA host (fabrics 1.1a, 7.3), over rdma-core through `pollux-rdma`.
//!
//! One connection per queue: an rdma_cm connection whose RDMA_CM_REQUEST private data
//! names the queue (QID, HSQSIZE, HRQSIZE: [`crate::spec::rdma`], the codec the target
//! uses too), an RC queue pair with one completion queue on a completion channel, and
//! three registered areas:
//!
//! - command capsules, one per slot: the SQE, then in-capsule data for writes no longer
//!   than the queue's in-capsule size (an SGL Data Block with an offset);
//! - data buffers, one per slot, of the queue's largest transfer: other data is named
//!   by a Keyed SGL Data Block (this area's rkey and the slot's address), which the
//!   target reads (writes to it) or writes (reads from it) with RDMA;
//! - response buffers, one receive each, posted before connecting.
//!
//! The caller's buffers ([`super::DataBuf`]) are not registered memory: data is copied
//! into the slot's registered buffer at submission (writes) and out of it at completion
//! (reads). A command completes when both its response has arrived and its capsule's
//! SEND has completed (only then may the slot be reused). The host never asks the
//! target to invalidate its key: the data area is one memory region for the life of
//! the connection.

use super::host::{FabricOptions, Wire};
use super::{Completion, DataBuf, Error, STATUS_ABORTED_BY_HOST, SubmitError, XferDir};
use crate::spec::cmd::{Cqe, SglDescriptor, Sqe, sgl_subtype, sgl_type};
use crate::spec::rdma::{CmRep, CmReq, RECFMT};
use pollux_rdma::{
    Access, Active, CmEventKind, CmId, CompChannel, Cq, EventChannel, Mr, Pd, QpCaps, SendOp, Sge,
    Wc,
};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, IntoBytes};

/// Kinds of work request, in the top byte of the work request id.
const WR_SEND: u64 = 1 << 56;
const WR_RECV: u64 = 2 << 56;
const WR_KIND: u64 = 0xff << 56;
/// Work completions reaped per CQ poll.
const CQ_BATCH: usize = 32;
/// Largest transfer when the controller sets no MDTS.
const TRANSFER_DEFAULT: u32 = 1 << 20;
/// The most one command moves over NVMe/RDMA, in whole pages: a keyed SGL data block's
/// length has 24 bits (base 4.3.2.6), and a larger MDTS must not wrap it.
pub const KEYED_TRANSFER_MAX: u32 = 0x00ff_f000;

/// The most one command moves on a queue asked for `max_transfer` bytes (0: the
/// default).
fn transfer_limit(max_transfer: u32) -> u32 {
    match max_transfer {
        0 => TRANSFER_DEFAULT,
        m => m,
    }
    .min(KEYED_TRANSFER_MAX)
}

/// Registered memory: `count` pieces of `size` bytes.
struct Reg {
    // Before `mem`: the region goes first.
    mr: Mr,
    mem: Box<[u8]>,
    size: usize,
}

impl Reg {
    fn new(pd: &Arc<Pd>, count: usize, size: usize, access: Access) -> Result<Reg, String> {
        let mut mem = vec![0u8; count.max(1) * size.max(1)].into_boxed_slice();
        // SAFETY: `mem` lives in this struct and is dropped after the region.
        let mr =
            unsafe { pd.reg_mr(mem.as_mut_ptr(), mem.len(), access) }.map_err(|e| e.to_string())?;
        Ok(Reg { mr, mem, size })
    }

    fn addr(&self, i: usize) -> u64 {
        self.mr.addr() + (i * self.size) as u64
    }

    fn sge(&self, i: usize, len: usize) -> Sge {
        Sge {
            addr: self.addr(i),
            len: len as u32,
            lkey: self.mr.lkey(),
        }
    }

    fn get(&self, i: usize) -> &[u8] {
        &self.mem[i * self.size..(i + 1) * self.size]
    }

    fn get_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.mem[i * self.size..(i + 1) * self.size]
    }
}

/// The SGL of a command moving `len` bytes in direction `dir`: in the capsule (a data
/// block at offset 0) for writes up to `in_capsule` bytes, else a keyed data block of
/// the slot's registered buffer at `addr` (key `rkey`), or a null keyed block without
/// data (as Linux sends). Also whether the data goes in the capsule. Public for the
/// fuzz targets (tests/fuzz) only.
#[doc(hidden)]
pub fn capsule_sgl(
    dir: XferDir,
    len: u32,
    in_capsule: u32,
    addr: u64,
    rkey: u32,
) -> (SglDescriptor, bool) {
    let inline = dir == XferDir::HostToCtrl && len > 0 && len <= in_capsule;
    assert!(
        inline || len <= KEYED_TRANSFER_MAX,
        "{len} bytes is more than a keyed SGL names (the queue's transfer limit is checked first)"
    );
    if inline {
        (
            SglDescriptor::new(sgl_type::DATA_BLOCK, sgl_subtype::OFFSET, 0, len),
            true,
        )
    } else if len > 0 {
        (
            SglDescriptor::keyed(addr, len, rkey, sgl_subtype::ADDRESS),
            false,
        )
    } else {
        (SglDescriptor::keyed(0, 0, 0, sgl_subtype::ADDRESS), false)
    }
}

#[derive(Debug)]
struct Slot<B> {
    busy: bool,
    cid: u16,
    tag: u64,
    buf: Option<B>,
    dir: XferDir,
    len: u32,
    /// The capsule's SEND completed.
    sent: bool,
    /// The response, once it arrived.
    resp: Option<Cqe>,
}

/// One NVMe/RDMA queue's connection.
pub(crate) struct Conn<B> {
    // Field order is drop order: the id (and its queue pair) before the memory.
    id: Option<CmId<Active>>,
    ch: Arc<EventChannel>,
    cq: Arc<Cq>,
    comp: Arc<CompChannel>,
    cmds: Reg,
    data: Reg,
    resps: Reg,
    pub(crate) addr: SocketAddr,
    pub(crate) qid: u16,
    pub(crate) outstanding: usize,
    pub(crate) dead: Option<String>,
    in_capsule: u32,
    pub(crate) max_transfer: u32,
    slots: Vec<Slot<B>>,
    free: Vec<u16>,
    idx_bits: u32,
    pending: Option<Error>,
    armed: bool,
    next_events: Instant,
}

impl<B> std::fmt::Debug for Conn<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("addr", &self.addr)
            .field("qid", &self.qid)
            .field("outstanding", &self.outstanding)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

fn rdma_err(addr: SocketAddr, e: impl std::fmt::Display) -> Error {
    Error::Rdma {
        addr,
        why: e.to_string(),
    }
}

impl<B: DataBuf> Conn<B> {
    /// Calls `f(slot, cid, tag)` for each command outstanding.
    pub(crate) fn for_each_busy(&self, mut f: impl FnMut(usize, u16, u64)) {
        for (i, s) in self.slots.iter().enumerate() {
            if s.busy {
                f(i, s.cid, s.tag);
            }
        }
    }

    /// Connects queue `qid`: `slots` commands may be outstanding, writes up to
    /// `in_capsule` bytes go in the capsule, none moves more than `max_transfer` bytes.
    pub(crate) fn open(
        opts: &FabricOptions,
        qid: u16,
        slots: usize,
        in_capsule: u32,
        max_transfer: u32,
    ) -> Result<Self, Error> {
        let addr = opts.addr;
        let slots = slots.clamp(1, 4095);
        let entries = slots as u16 + 1;
        let max_transfer = transfer_limit(max_transfer);
        // No RDMA here is a normal condition: say so by name rather than as an
        // rdma_cm failure.
        match pollux_rdma::devices() {
            Ok(d) if d.is_empty() => {
                return Err(rdma_err(addr, pollux_rdma::Error::NoDevice(None)));
            }
            Err(e) => return Err(rdma_err(addr, e)),
            Ok(_) => {}
        }
        let ch = EventChannel::new().map_err(|e| rdma_err(addr, e))?;
        let req = CmReq::new(qid, entries, entries, 0);
        struct Made {
            cq: Arc<Cq>,
            comp: Arc<CompChannel>,
            cmds: Reg,
            data: Reg,
            resps: Reg,
        }
        let mut made: Option<Made> = None;
        let (id, ev) = CmId::connect(&ch, addr, req.as_bytes(), opts.timeout, |id, ctx| {
            let attr = ctx.query()?;
            let pd = Pd::new(ctx)?;
            let comp = CompChannel::new(ctx)?;
            let cq = Cq::with_channel(ctx, (slots * 3 + 2) as u32, &comp)?;
            let reg = |count, size, access| {
                Reg::new(&pd, count, size, access).map_err(pollux_rdma::Error::Cm)
            };
            let cmds = reg(slots, 64 + in_capsule as usize, Access::LOCAL)?;
            let data = reg(slots, max_transfer as usize, Access::REMOTE)?;
            let resps = reg(slots + 1, 16, Access::LOCAL)?;
            let qp = id.create_qp(
                &pd,
                &cq,
                &cq,
                None,
                QpCaps {
                    max_send_wr: slots as u32 + 1,
                    max_recv_wr: slots as u32 + 1,
                    max_send_sge: 1,
                    max_recv_sge: 1,
                },
            )?;
            for i in 0..=slots {
                qp.post_recv(WR_RECV | i as u64, &[resps.sge(i, 16)])?;
            }
            made = Some(Made {
                cq,
                comp,
                cmds,
                data,
                resps,
            });
            // The target reads our data (responder resources), we never read its.
            Ok((attr.max_qp_rd_atom.clamp(1, 16) as u8, 0))
        })
        .map_err(|e| match e {
            pollux_rdma::Error::Cm(m) if m.contains("rejected") => Error::Controller {
                addr,
                why: format!("rejected the NVMe/RDMA connection of queue {qid}: {m}"),
            },
            e => rdma_err(addr, e),
        })?;
        let m = made.expect("the queue pair was made before connecting");
        let rep = ev
            .private_data
            .get(..32)
            .and_then(|b| CmRep::read_from_bytes(b).ok());
        let crqsize = match rep {
            Some(r) if r.recfmt.get() == RECFMT => r.crqsize.get() as usize,
            _ => {
                return Err(Error::Controller {
                    addr,
                    why: format!(
                        "accepted queue {qid} without a valid RDMA_CM_ACCEPT ({:02x?})",
                        ev.private_data
                    ),
                });
            }
        };
        // No more commands outstanding than the target has receive room for.
        let slots = slots.min(crqsize.max(1));
        let idx_bits = usize::BITS - (slots.max(2) - 1).leading_zeros();
        Ok(Conn {
            id: Some(id),
            ch,
            cq: m.cq,
            comp: m.comp,
            cmds: m.cmds,
            data: m.data,
            resps: m.resps,
            addr,
            qid,
            outstanding: 0,
            dead: None,
            in_capsule,
            max_transfer,
            slots: (0..slots)
                .map(|i| Slot {
                    busy: false,
                    cid: (i as u16).wrapping_sub(1 << idx_bits),
                    tag: 0,
                    buf: None,
                    dir: XferDir::None,
                    len: 0,
                    sent: false,
                    resp: None,
                })
                .collect(),
            free: (0..slots as u16).rev().collect(),
            idx_bits,
            pending: None,
            armed: false,
            next_events: Instant::now(),
        })
    }

    /// Takes a command moving `len` bytes (checked by the caller: [`super::host`]),
    /// copies its data and posts its capsule.
    pub(crate) fn submit(
        &mut self,
        sqe: Sqe,
        buf: Option<B>,
        len: u32,
        dir: XferDir,
        tag: u64,
    ) -> Result<(), SubmitError<B>> {
        if self.free.is_empty() {
            return Err(SubmitError::QueueFull(buf));
        }
        let out = match (&buf, dir) {
            (Some(b), XferDir::HostToCtrl) => Some(b.as_slice()),
            _ => None,
        };
        match self.post(sqe, out, len, dir, tag) {
            Some(i) => {
                self.slots[i].buf = buf;
                Ok(())
            }
            None => Err(SubmitError::Dead(buf)),
        }
    }

    /// Gives a free slot the command (CID, SGL, data) and posts its capsule; `None` when
    /// posting failed (the connection is then dead).
    fn post(
        &mut self,
        mut sqe: Sqe,
        out: Option<&[u8]>,
        len: u32,
        dir: XferDir,
        tag: u64,
    ) -> Option<usize> {
        let i = self.free.pop()? as usize;
        let cid = self.slots[i].cid.wrapping_add(1 << self.idx_bits);
        sqe.cid = U16::new(cid);
        let (sgl, inline) = capsule_sgl(
            dir,
            len,
            self.in_capsule,
            self.data.addr(i),
            self.data.mr.rkey(),
        );
        if !inline && len > 0 {
            if let Some(d) = out {
                self.data.get_mut(i)[..d.len()].copy_from_slice(d);
            }
        }
        sqe.set_sgl(&sgl);
        let cap = self.cmds.get_mut(i);
        cap[..64].copy_from_slice(sqe.as_bytes());
        let mut send_len = 64;
        if inline {
            if let Some(d) = out {
                cap[64..64 + d.len()].copy_from_slice(d);
                send_len += d.len();
            }
        }
        let s = &mut self.slots[i];
        *s = Slot {
            busy: true,
            cid,
            tag,
            buf: None,
            dir,
            len,
            sent: false,
            resp: None,
        };
        self.outstanding += 1;
        let sge = self.cmds.sge(i, send_len);
        let r = self
            .id
            .as_ref()
            .and_then(|id| id.qp())
            .map(|qp| qp.post_send(WR_SEND | i as u64, SendOp::Send, &[sge], true));
        match r {
            Some(Ok(())) => Some(i),
            Some(Err(e)) => {
                let e = self.fail(rdma_err(self.addr, e));
                self.pending = Some(e);
                Some(i)
            }
            None => None,
        }
    }

    /// Sends a Connect whose data (1024 bytes) the target fetches by RDMA READ.
    pub(crate) fn send_connect(&mut self, sqe: Sqe, data: &[u8], tag: u64) -> Result<(), Error> {
        if self.dead.is_some() || self.free.is_empty() {
            return Err(self.dead_error());
        }
        self.post(sqe, Some(data), data.len() as u32, XferDir::HostToCtrl, tag)
            .map(|_| ())
            .ok_or_else(|| self.dead_error())
    }

    fn dead_error(&self) -> Error {
        Error::Dead {
            addr: self.addr,
            why: self
                .dead
                .clone()
                .unwrap_or_else(|| "no command slot is free".into()),
        }
    }

    /// Marks the connection failed and disconnects it; returns `e`.
    pub(crate) fn fail(&mut self, e: Error) -> Error {
        if self.dead.is_none() {
            self.dead = Some(e.to_string());
        }
        self.close();
        e
    }

    /// Disconnects (the queue pair stops; it is destroyed with the connection).
    pub(crate) fn close(&mut self) {
        if let Some(id) = &self.id {
            let _ = id.disconnect();
        }
    }

    /// The completion channel's descriptor (readable after a completion once armed).
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.comp.fd()
    }

    fn reap<F: FnMut(Completion<B>)>(
        &mut self,
        max: usize,
        f: &mut F,
        n: &mut usize,
    ) -> Result<(), Error> {
        let mut wcs = [Wc::default(); CQ_BATCH];
        loop {
            let want = if max == 0 {
                CQ_BATCH
            } else {
                (max - *n).min(CQ_BATCH)
            };
            if want == 0 {
                return Ok(());
            }
            let got = self
                .cq
                .poll(&mut wcs[..want])
                .map_err(|e| rdma_err(self.addr, e))?;
            // Every completion of the batch is handled (the successful ones complete
            // their commands) before the first error is reported.
            let mut first_err = None;
            for wc in &wcs[..got] {
                if let Err(e) = self.work_completion(wc, f, n) {
                    first_err.get_or_insert(e);
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
            if got < want {
                return Ok(());
            }
        }
    }

    fn work_completion<F: FnMut(Completion<B>)>(
        &mut self,
        wc: &Wc,
        f: &mut F,
        n: &mut usize,
    ) -> Result<(), Error> {
        if !wc.ok() {
            return Err(Error::Rdma {
                addr: self.addr,
                why: format!(
                    "a work request failed (ibv_wc_status {}){}",
                    wc.status(),
                    if wc.flushed() {
                        ": the queue pair was flushed (disconnected)"
                    } else {
                        ""
                    }
                ),
            });
        }
        let low = (wc.wr_id() & 0xffff) as usize;
        match wc.wr_id() & WR_KIND {
            WR_SEND => {
                if let Some(s) = self.slots.get_mut(low) {
                    s.sent = true;
                }
                self.try_complete(low, f, n);
            }
            WR_RECV => {
                if (wc.byte_len() as usize) < 16 {
                    return Err(self.protocol(format!(
                        "a response of {} bytes (a CQE is 16)",
                        wc.byte_len()
                    )));
                }
                let cqe = Cqe::read_from_bytes(&self.resps.get(low)[..16]).expect("16 bytes");
                if let Some(qp) = self.id.as_ref().and_then(|id| id.qp()) {
                    qp.post_recv(WR_RECV | low as u64, &[self.resps.sge(low, 16)])
                        .map_err(|e| rdma_err(self.addr, e))?;
                }
                let cid = cqe.cid.get();
                let Some(i) = self.lookup(cid) else {
                    return Err(
                        self.protocol(format!("a response for CID {cid:#x}, which has no command"))
                    );
                };
                self.slots[i].resp = Some(cqe);
                self.try_complete(i, f, n);
            }
            _ => {}
        }
        Ok(())
    }

    fn protocol(&self, what: String) -> Error {
        Error::Controller {
            addr: self.addr,
            why: format!("broke the NVMe/RDMA protocol: {what}; the host disconnected"),
        }
    }

    fn lookup(&self, cid: u16) -> Option<usize> {
        let i = (cid & ((1u32 << self.idx_bits) - 1) as u16) as usize;
        let s = self.slots.get(i)?;
        (s.busy && s.cid == cid && s.resp.is_none()).then_some(i)
    }

    /// Completes slot `i` if both its SEND and its response are done.
    fn try_complete<F: FnMut(Completion<B>)>(&mut self, i: usize, f: &mut F, n: &mut usize) {
        let Some(s) = self.slots.get_mut(i) else {
            return;
        };
        if !s.busy || !s.sent || s.resp.is_none() {
            return;
        }
        let cqe = s.resp.take().expect("checked");
        s.busy = false;
        let mut buf = s.buf.take();
        if s.dir == XferDir::CtrlToHost && cqe.status().is_success() {
            if let Some(b) = buf.as_mut() {
                let out = b.as_mut_slice();
                let k = out.len().min(s.len as usize);
                out[..k].copy_from_slice(&self.data.get(i)[..k]);
            }
        }
        let tag = s.tag;
        self.free.push(i as u16);
        self.outstanding -= 1;
        *n += 1;
        f(Completion { tag, cqe, buf });
    }

    /// Connection events: a disconnect from the target ends the queue.
    fn cm_events(&mut self) -> Result<(), Error> {
        while let Some(ev) = self.ch.get().map_err(|e| rdma_err(self.addr, e))? {
            match ev.kind {
                CmEventKind::Disconnected | CmEventKind::DeviceRemoval => {
                    return Err(Error::Closed {
                        addr: self.addr,
                        outstanding: self.outstanding,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Sleeps until a completion may be there or `deadline` passes (at most 10 ms, so
    /// connection events are seen too).
    pub(crate) fn wait_io(&mut self, deadline: Instant) -> Result<(), Error> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        if !self.armed {
            self.cq.arm().map_err(|e| rdma_err(self.addr, e))?;
            self.armed = true;
            // Whatever came before arming does not notify: let the caller poll first.
            return Ok(());
        }
        let ms = (deadline - now).as_millis().clamp(1, 10) as i32;
        let mut pfd = libc::pollfd {
            fd: self.comp.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd that lives across the call.
        unsafe { libc::poll(&mut pfd, 1, ms) };
        Ok(())
    }

    /// Fails every outstanding command with [`STATUS_ABORTED_BY_HOST`], handing the
    /// buffers to `f`. Disconnects first if the connection still works.
    pub(crate) fn drain<F: FnMut(Completion<B>)>(&mut self, f: &mut F) -> usize {
        if self.dead.is_none() {
            self.dead = Some("the host drained the queue pair".into());
            self.close();
        }
        let mut n = 0;
        for i in 0..self.slots.len() {
            if self.slots[i].busy {
                let s = &mut self.slots[i];
                s.busy = false;
                let mut cqe = Cqe {
                    sqid: U16::new(self.qid),
                    cid: U16::new(s.cid),
                    ..Default::default()
                };
                cqe.set_status(STATUS_ABORTED_BY_HOST);
                let c = Completion {
                    tag: s.tag,
                    cqe,
                    buf: s.buf.take(),
                };
                self.free.push(i as u16);
                self.outstanding -= 1;
                n += 1;
                f(c);
            }
        }
        n
    }
}

impl<B: DataBuf> Wire<B> for Conn<B> {
    fn pending(&mut self) -> &mut Option<Error> {
        &mut self.pending
    }

    fn dead_error(&self) -> Option<Error> {
        self.dead.is_some().then(|| Conn::dead_error(self))
    }

    fn fail(&mut self, e: Error) -> Error {
        Conn::fail(self, e)
    }

    /// Reaps completions, then connection events.
    fn progress<F: FnMut(Completion<B>)>(
        &mut self,
        max: usize,
        f: &mut F,
        n: &mut usize,
    ) -> Result<(), Error> {
        // Notifications come only while armed (after `wait_io`): a busy poll reads no
        // channel, and connection events are looked at every millisecond at most.
        if self.armed && self.comp.drain() > 0 {
            self.armed = false;
        }
        self.reap(max, f, n)?;
        let now = Instant::now();
        if now >= self.next_events {
            self.next_events = now + Duration::from_millis(1);
            self.cm_events()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AdminQueue, FabricOptions};
    use super::*;

    #[test]
    fn writes_that_fit_go_in_the_capsule_and_the_rest_by_keyed_sgl() {
        let (s, inl) = capsule_sgl(XferDir::HostToCtrl, 4096, 4096, 0x1000, 7);
        assert!(inl);
        assert_eq!(
            (s.ty(), s.subtype(), s.addr.get(), s.len.get()),
            (0, 1, 0, 4096)
        );
        let (s, inl) = capsule_sgl(XferDir::HostToCtrl, 8192, 4096, 0x1000, 7);
        assert!(!inl);
        assert_eq!(
            (s.ty(), s.keyed_len(), s.key(), s.addr.get()),
            (4, 8192, 7, 0x1000)
        );
        // Reads always by keyed SGL, never asking the target to invalidate our key.
        let (s, inl) = capsule_sgl(XferDir::CtrlToHost, 512, 4096, 0x2000, 9);
        assert!(!inl);
        assert_eq!((s.ty(), s.subtype(), s.keyed_len()), (4, 0, 512));
        let (s, _) = capsule_sgl(XferDir::None, 0, 4096, 0x2000, 9);
        assert_eq!((s.ty(), s.keyed_len(), s.key(), s.addr.get()), (4, 0, 0, 0));
    }

    #[test]
    fn no_transfer_is_larger_than_a_keyed_sgl_names() {
        // Found by the rdma_codec fuzz target: an MDTS of 13 (32 MiB transfers) wrapped
        // the 24-bit keyed length, so the target moved 32 MiB mod 16 MiB bytes.
        assert_eq!(transfer_limit(0), TRANSFER_DEFAULT);
        assert_eq!(transfer_limit(1 << 20), 1 << 20);
        assert_eq!(transfer_limit(32 << 20), KEYED_TRANSFER_MAX);
        let (s, inl) = capsule_sgl(XferDir::CtrlToHost, KEYED_TRANSFER_MAX, 0, 0x1000, 7);
        assert!(!inl);
        assert_eq!(s.keyed_len(), KEYED_TRANSFER_MAX);
    }

    #[test]
    fn without_an_rdma_device_connecting_says_so_by_name() {
        // This machine has no RDMA device (the lab's guest has rxe, where the lab's
        // rdma-pollux-host scenario connects for real).
        let o = FabricOptions::rdma("10.0.2.15:4420".parse().unwrap(), "nqn.2016-06.io.pollux:x");
        let e = AdminQueue::connect(&o).unwrap_err().to_string();
        assert!(e.starts_with("NVMe/RDMA to 10.0.2.15:4420: no RDMA"), "{e}");
        let mut o = o;
        o.hdgst = true;
        let e = AdminQueue::connect(&o).unwrap_err().to_string();
        assert!(e.contains("digests are an NVMe/TCP feature"), "{e}");
    }
}
