//! The NVMe/TCP transport of the target (NVMe/TCP transport specification 1.0c).
//!
//! A listener's acceptor runs as a poller on the first poll group and deals accepted
//! sockets round robin to the poll groups. Each connection is one queue pair, polled by
//! its poll group on a non-blocking socket registered with the reactor's wake set, and
//! lives on that thread only.
//!
//! Receive: bytes land in a per-connection buffer large enough for the largest PDU the
//! connection accepts; each PDU's common header is checked with the codec shared with
//! the host ([`pollux_nvme::spec::tcp::check_header`]), digests are verified, and a
//! protocol error gets a C2HTermReq with its Fatal Error Status before the connection
//! closes. Data (in-capsule or H2CData) is copied into the request's iobufs.
//!
//! Commands: a capsule takes a request slot (one per SQ entry the host connected with);
//! its data buffers come from the engine's iobuf pools. Writes larger than the
//! in-capsule size get one R2T for the whole transfer, which the host answers with
//! H2CData PDUs of at most MAXH2CDATA bytes. Reads return C2HData, with the SUCCESS
//! flag in place of a response capsule when the transport allows it and the host
//! disabled SQ flow control.
//!
//! Closing: requests in flight in a bdev keep their buffers until the bdev hands them
//! back; the connection is gone by then and they go straight back to their pools.

use super::ctrlr::{self, AdminOutcome, Ctrlr, IoPlan};
use super::poll_group::{PgSubsys, PollGroup};
use super::{CmbBuffers, ConnectRefusal, ConnectReq, CtrlrShared, ListenAddr, Target, TcpOpts};
use crate::bdev::{BdevIo, IoCallback, IoKind, IoStatus};
use crate::thread::{FdWatch, IoChannel, Nanos, PollStatus, Thread, ThreadHandle};
use pollux_nvme::spec::cmd::{Cqe, Sqe, Status, sgl_subtype, sgl_type};
use pollux_nvme::spec::fabrics::{
    ConnectData, ConnectFields, FabricsCmd, OPC_FABRICS, fctype, nqn_str,
};
use pollux_nvme::spec::tcp::{
    self as pdu, CapsuleCmd, CapsuleResp, CommonHeader, DIGEST_LEN, DataHeader, Fes, IcReq, IcResp,
    Negotiated, PduError, PduLayout, PduType, R2t, Receiver, TermReq,
};
use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// In-capsule data accepted on an admin queue (Linux sends up to 8 KiB there).
pub const ADMIN_ICD_SIZE: u32 = 8192;
/// A connection that has not completed Connect by then is closed.
const CONNECT_DEADLINE_NS: Nanos = 30_000_000_000;
/// Connections accepted per acceptor poll.
const ACCEPT_BATCH: usize = 16;
/// Bytes read per `read` call at most (a large PDU takes several).
const READ_CHUNK: usize = 256 * 1024;

/// A listening socket of the transport (control-path handle).
#[derive(Debug)]
pub(crate) struct Listener {
    addr: ListenAddr,
    thread: ThreadHandle,
    tgt: std::sync::Weak<Target>,
}

impl Listener {
    /// Binds `addr` and starts accepting on `thread`'s poll group.
    pub(crate) fn start(
        addr: ListenAddr,
        thread: &ThreadHandle,
        tgt: &Arc<Target>,
    ) -> io::Result<Listener> {
        let l = TcpListener::bind(addr.addr)?;
        l.set_nonblocking(true)?;
        let t = tgt.clone();
        thread
            .send_msg(move || {
                if let Some(pg) = PollGroup::current(&t) {
                    match Acceptor::new(l, addr, &pg.thread) {
                        Ok(a) => pg.add_acceptor(a),
                        Err(e) => tracing::error!(%addr, error = %e, "cannot watch listener"),
                    }
                }
            })
            .map_err(|_| io::Error::other("poll group gone"))?;
        tracing::info!(%addr, "NVMe/TCP target listening");
        Ok(Listener {
            addr,
            thread: thread.clone(),
            tgt: Arc::downgrade(tgt),
        })
    }

    /// Stops accepting and closes the socket (before it returns, from a control
    /// thread; by message from a reactor thread).
    pub(crate) fn stop(self) {
        let Some(tgt) = self.tgt.upgrade() else {
            return;
        };
        let addr = self.addr.addr;
        let f = move || {
            if let Some(pg) = PollGroup::current(&tgt) {
                pg.remove_acceptor(addr);
            }
        };
        if Thread::current().is_none() {
            let _ = self.thread.call(f);
        } else {
            let _ = self.thread.send_msg(f);
        }
        tracing::info!(addr = %self.addr, "NVMe/TCP target stopped listening");
    }
}

/// The poll-group side of a listener.
pub(crate) struct Acceptor {
    l: TcpListener,
    addr: ListenAddr,
    _watch: FdWatch,
    next_try: std::cell::Cell<Nanos>,
}

impl Acceptor {
    fn new(l: TcpListener, addr: ListenAddr, thread: &Thread) -> io::Result<Acceptor> {
        let watch = thread.register_fd(l.as_raw_fd())?;
        Ok(Acceptor {
            l,
            addr,
            _watch: watch,
            next_try: std::cell::Cell::new(0),
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.addr.addr
    }

    /// Accepts what is waiting (at most every 100 us while the reactor is busy; a
    /// sleeping reactor is woken by the listening socket).
    pub(crate) fn poll(&self, pg: &PollGroup) -> bool {
        let now = pg.thread.now();
        if now < self.next_try.get() {
            return false;
        }
        self.next_try.set(now + 100_000);
        let mut any = false;
        for _ in 0..ACCEPT_BATCH {
            match self.l.accept() {
                Ok((s, peer)) => {
                    any = true;
                    let Some(t) = pg.tgt.next_poll_group() else {
                        return any;
                    };
                    let tgt = pg.tgt.clone();
                    let local = self.addr.addr;
                    let r = t.send_msg(move || {
                        if let Some(pg) = PollGroup::current(&tgt) {
                            match Conn::new(s, peer, local, &pg) {
                                Ok(c) => pg.add_conn(c),
                                Err(e) => {
                                    tracing::warn!(%peer, error = %e, "cannot set up connection")
                                }
                            }
                        }
                    });
                    if r.is_err() {
                        tracing::warn!(%peer, "poll group gone; connection dropped");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(addr = %self.addr, error = %e, "accept failed");
                    break;
                }
            }
        }
        any
    }
}

/// Data direction of a command (base 4.2: opcode bits 1:0; Fabrics: FCTYPE bits 1:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    None,
    H2c,
    C2h,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RState {
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
enum Op {
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

struct Req {
    state: RState,
    sqe: Sqe,
    dir: Dir,
    len: u32,
    h2c_off: u32,
    dw1: u32,
    io: Option<Box<BdevIo>>,
    aux: Vec<crate::dma::DmaBuf>,
    /// In-capsule data that arrived while the pools were empty (rare; allocated then).
    stash: Vec<u8>,
    op: Op,
}

enum Role {
    /// Before Connect.
    None,
    Admin(Box<Ctrlr>),
    Io {
        ctrlr: Arc<CtrlrShared>,
        qid: u16,
        subsys: Rc<PgSubsys>,
    },
}

/// One NVMe/TCP connection: one queue pair.
pub(crate) struct Conn {
    sock: TcpStream,
    _watch: Option<FdWatch>,
    peer: SocketAddr,
    local: SocketAddr,
    me: Weak<RefCell<Conn>>,
    cb: IoCallback,
    opts: TcpOpts,
    rx: Negotiated,
    tx: Negotiated,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    /// PDU headers, digests and small data, in send order; `sq` says what to send.
    sbuf: Vec<u8>,
    /// End of the bytes of `sbuf` already in `sq`.
    marked: usize,
    /// What to send: ranges of `sbuf` and data straight from requests' buffers.
    sq: std::collections::VecDeque<Seg>,
    /// Bytes of the front segment already sent.
    front_off: usize,
    reqs: Vec<Req>,
    free: Vec<u16>,
    need_buf: std::collections::VecDeque<u16>,
    io_wait: std::collections::VecDeque<u16>,
    role: Role,
    sqhd: u16,
    sqsize: u16,
    sqflow_off: bool,
    closed: bool,
    closing_after_flush: bool,
    created: Nanos,
    /// Whether the first use of CMB buffers, and of a fallback, was logged.
    cmb_logged: std::cell::Cell<bool>,
    cmb_fallback_logged: std::cell::Cell<bool>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("closed", &self.closed)
            .finish()
    }
}

fn new_req() -> Req {
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
    }
}

fn cmd_dir(sqe: &Sqe) -> Dir {
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

impl Conn {
    pub(crate) fn new(
        sock: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        pg: &IoChannel<Target>,
    ) -> io::Result<Rc<RefCell<Conn>>> {
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        let opts = pg.tgt.transport().unwrap_or_default();
        let icd = opts.in_capsule_data_size.max(ADMIN_ICD_SIZE) as usize;
        let data_max = icd.max(opts.max_h2c_data as usize);
        // The largest PDU: a capsule header or data header, digests, padding, data.
        let plen_max = 72 + DIGEST_LEN + 128 + data_max + DIGEST_LEN;
        let watch = pg.thread.register_fd(sock.as_raw_fd())?;
        let conn = Rc::new_cyclic(|me: &Weak<RefCell<Conn>>| {
            let w = me.clone();
            let pgc = pg.clone();
            let cb: IoCallback = Rc::new(move |io: Box<BdevIo>| {
                pgc.bump(|s| s.pending_bdev_io -= 1);
                if let Some(c) = w.upgrade() {
                    c.borrow_mut().io_done(io, &pgc);
                }
                // Otherwise the connection is gone: the I/O and its buffers drop here.
            });
            RefCell::new(Conn {
                sock,
                _watch: Some(watch),
                peer,
                local,
                me: me.clone(),
                cb,
                rx: Negotiated {
                    established: false,
                    hdgst: false,
                    ddgst: false,
                    pda: 0,
                    plen_max: plen_max as u32,
                },
                tx: Negotiated::default(),
                rbuf: vec![0; plen_max + READ_CHUNK],
                rstart: 0,
                rend: 0,
                sbuf: Vec::with_capacity(64 * 1024),
                marked: 0,
                sq: std::collections::VecDeque::with_capacity(256),
                front_off: 0,
                reqs: vec![new_req()],
                free: vec![0],
                need_buf: std::collections::VecDeque::new(),
                io_wait: std::collections::VecDeque::new(),
                role: Role::None,
                sqhd: 0,
                sqsize: 1,
                sqflow_off: false,
                closed: false,
                closing_after_flush: false,
                created: pg.thread.now(),
                cmb_logged: std::cell::Cell::new(false),
                cmb_fallback_logged: std::cell::Cell::new(false),
                opts,
            })
        });
        tracing::debug!(%peer, "NVMe/TCP connection accepted");
        Ok(conn)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    pub(crate) fn belongs_to(&self, sid: u32, cntlid: u16) -> bool {
        match &self.role {
            Role::Io { ctrlr, .. } => ctrlr.subsys_id == sid && ctrlr.cntlid == cntlid,
            _ => false,
        }
    }

    /// One poll: send what is pending, read and handle what arrived.
    pub(crate) fn poll(this: &Rc<RefCell<Conn>>, pg: &PollGroup) -> (PollStatus, bool) {
        let mut c = this.borrow_mut();
        if c.closed {
            return (PollStatus::Idle, true);
        }
        let mut busy = c.flush(pg);
        busy |= c.retry_need_buf(pg);
        busy |= c.retry_io_wait(pg);
        busy |= c.receive(pg);
        busy |= c.flush(pg);
        // Unsent bytes or requests waiting for buffers or a bdev queue: the sockets are
        // watched for input only, so keep polling rather than sleep on them.
        busy |= !c.sq.is_empty() || !c.need_buf.is_empty() || !c.io_wait.is_empty();
        if c.closing_after_flush && c.sq.is_empty() {
            c.close(pg, "the host disconnected");
        }
        (PollStatus::from_busy(busy), c.closed)
    }

    /// Keep-alive and connect deadlines; returns whether anything happened.
    pub(crate) fn housekeeping(this: &Rc<RefCell<Conn>>, pg: &PollGroup, now: Nanos) -> bool {
        let mut c = this.borrow_mut();
        if c.closed {
            return false;
        }
        match &c.role {
            Role::None if now.saturating_sub(c.created) > CONNECT_DEADLINE_NS => {
                c.close(pg, "no Connect within 30 s");
                true
            }
            Role::Admin(ctrlr) if ctrlr.keep_alive_expired(now) => {
                pg.bump(|s| s.keep_alive_timeouts += 1);
                tracing::warn!(peer = %c.peer, cntlid = ctrlr.shared().cntlid,
                    "keep-alive timeout: the host went silent; tearing the controller down");
                c.close(pg, "keep-alive timeout");
                true
            }
            _ => false,
        }
    }

    /// Closes the connection: the socket goes, every request not in a bdev releases its
    /// buffers now, the rest when their bdev hands them back.
    pub(crate) fn close(&mut self, pg: &PollGroup, why: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        tracing::info!(peer = %self.peer, why, "NVMe/TCP connection closed");
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        self._watch = None;
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
        self.rbuf = Vec::new();
        self.sbuf = Vec::new();
        self.sq.clear();
        self.marked = 0;
        self.front_off = 0;
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

    /// Puts the bytes appended to `sbuf` since the last call in the send queue.
    fn mark(&mut self) {
        let end = self.sbuf.len();
        if end == self.marked {
            return;
        }
        match self.sq.back_mut() {
            Some(Seg::Bytes(_, e)) if *e == self.marked => *e = end,
            _ => self.sq.push_back(Seg::Bytes(self.marked, end)),
        }
        self.marked = end;
    }

    /// Releases a request whose data has all been sent.
    fn release(&mut self, slot: u16) {
        let r = &mut self.reqs[slot as usize];
        if let Some(io) = r.io.as_mut() {
            io.clear_bufs();
        }
        r.aux.clear();
        r.state = RState::Free;
        self.free.push(slot);
    }

    /// Sends what the socket takes: one `writev` of up to 64 segments at a time, data
    /// straight from the requests' buffers.
    fn flush(&mut self, pg: &PollGroup) -> bool {
        let mut progress = false;
        loop {
            while let Some(&Seg::Release(slot)) = self.sq.front() {
                self.sq.pop_front();
                self.release(slot);
            }
            if self.sq.is_empty() {
                self.sbuf.clear();
                self.marked = 0;
                self.front_off = 0;
                return progress;
            }
            let res = {
                let mut iov: arrayvec::ArrayVec<io::IoSlice<'_>, 64> = arrayvec::ArrayVec::new();
                for (i, seg) in self.sq.iter().enumerate() {
                    let skip = if i == 0 { self.front_off } else { 0 };
                    let bytes: &[u8] = match *seg {
                        Seg::Bytes(a, b) => &self.sbuf[a + skip..b],
                        Seg::Data { slot, buf, len } => {
                            let io = self.reqs[slot as usize]
                                .io
                                .as_ref()
                                .expect("a request being sent owns its buffers");
                            &io.bufs()[buf as usize].as_slice()[skip..len as usize]
                        }
                        Seg::Release(_) => continue,
                    };
                    if iov.try_push(io::IoSlice::new(bytes)).is_err() {
                        break;
                    }
                }
                (&self.sock).write_vectored(&iov)
            };
            match res {
                Ok(0) => {
                    self.close(pg, "the peer stopped reading");
                    return true;
                }
                Ok(n) => {
                    progress = true;
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "send failed");
                    self.close(pg, "send failed");
                    return true;
                }
            }
        }
        // A queue that never empties must not grow `sbuf` forever: drop what was sent.
        let first = self
            .sq
            .iter()
            .find_map(|s| match *s {
                Seg::Bytes(a, _) => Some(a),
                _ => None,
            })
            .unwrap_or(self.marked);
        if first >= 256 * 1024 {
            self.sbuf.drain(..first);
            self.marked -= first;
            for s in self.sq.iter_mut() {
                if let Seg::Bytes(a, b) = s {
                    *a -= first;
                    *b -= first;
                }
            }
        }
        progress
    }

    /// Drops `n` sent bytes from the front of the send queue.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let Some(&front) = self.sq.front() else {
                return;
            };
            let len = match front {
                Seg::Bytes(a, b) => b - a,
                Seg::Data { len, .. } => len as usize,
                Seg::Release(slot) => {
                    self.sq.pop_front();
                    self.release(slot);
                    continue;
                }
            };
            let rest = len - self.front_off;
            if n >= rest {
                n -= rest;
                self.sq.pop_front();
                self.front_off = 0;
            } else {
                self.front_off += n;
                n = 0;
            }
        }
    }

    fn receive(&mut self, pg: &PollGroup) -> bool {
        let mut busy = false;
        loop {
            if self.closed || self.closing_after_flush {
                return busy;
            }
            // Handle every whole PDU buffered.
            busy |= self.parse(pg);
            if self.closed {
                return true;
            }
            if self.rstart == self.rend {
                self.rstart = 0;
                self.rend = 0;
            } else if self.rend + 4096 > self.rbuf.len() && self.rstart > 0 {
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                self.rend -= self.rstart;
                self.rstart = 0;
            }
            let end = self.rbuf.len().min(self.rend + READ_CHUNK);
            if end == self.rend {
                // Full of an incomplete PDU: cannot happen, as the buffer holds the
                // largest PDU accepted plus a read's worth.
                return busy;
            }
            match self.sock.read(&mut self.rbuf[self.rend..end]) {
                Ok(0) => {
                    self.close(pg, "the host closed the connection");
                    return true;
                }
                Ok(n) => {
                    self.rend += n;
                    busy = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return busy,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "receive failed");
                    self.close(pg, "receive failed");
                    return true;
                }
            }
        }
    }

    /// Handles the whole PDUs in the receive buffer; returns whether there were any.
    fn parse(&mut self, pg: &PollGroup) -> bool {
        let mut any = false;
        while self.rend - self.rstart >= 8 && !self.closed && !self.closing_after_flush {
            let ch = CommonHeader::read_from_bytes(&self.rbuf[self.rstart..self.rstart + 8])
                .expect("8 bytes");
            let layout = match pdu::check_header(&ch, Receiver::Controller, &self.rx) {
                Ok(l) => l,
                Err(e) => {
                    let hdr_len = (self.rend - self.rstart).min(ch.hlen.max(8) as usize);
                    let hdr = self.rbuf[self.rstart..self.rstart + hdr_len].to_vec();
                    self.fatal(pg, e, &hdr);
                    return true;
                }
            };
            if self.rend - self.rstart < layout.plen {
                break;
            }
            let start = self.rstart;
            match self.handle_pdu(pg, start, &layout) {
                Ok(()) => {
                    self.rstart += layout.plen;
                    any = true;
                }
                Err(e) => {
                    let hdr = self.rbuf[start..start + layout.hlen].to_vec();
                    self.fatal(pg, e, &hdr);
                    return true;
                }
            }
        }
        any
    }

    /// Sends a C2HTermReq for `e` (with the offending header) and closes.
    fn fatal(&mut self, pg: &PollGroup, e: PduError, hdr: &[u8]) {
        tracing::warn!(peer = %self.peer, fes = ?e.fes, fei = e.fei,
            "NVMe/TCP protocol error; sending C2HTermReq and closing");
        pg.bump(|s| s.protocol_errors += 1);
        let data = &hdr[..hdr.len().min((pdu::TERM_REQ_PLEN_MAX - 24) as usize)];
        let mut t = TermReq {
            fes: U16::new(e.fes as u16),
            fei: U32::new(e.fei),
            ..Default::default()
        };
        let neg = self.tx;
        pdu::frame(
            &mut self.sbuf,
            t.as_mut_bytes(),
            PduType::C2hTermReq,
            0,
            &neg,
            data.len(),
        );
        self.sbuf.extend_from_slice(data);
        self.mark();
        self.flush(pg);
        self.close(pg, "protocol error");
    }

    fn check_digests(&self, start: usize, l: &PduLayout) -> Result<(), DigestErr> {
        let b = &self.rbuf[start..start + l.plen];
        if l.hdgst {
            let want = u32::from_le_bytes(b[l.hlen..l.hlen + 4].try_into().expect("4 bytes"));
            if pdu::crc32c(&b[..l.hlen]) != want {
                return Err(DigestErr::Header);
            }
        }
        if l.ddgst && l.data_len > 0 {
            let d = &b[l.data_offset..l.data_offset + l.data_len];
            let at = l.data_offset + l.data_len;
            let want = u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
            if pdu::crc32c(d) != want {
                return Err(DigestErr::Data);
            }
        }
        Ok(())
    }

    fn handle_pdu(&mut self, pg: &PollGroup, start: usize, l: &PduLayout) -> Result<(), PduError> {
        match l.pdu_type {
            PduType::IcReq => self.ic_req(start),
            PduType::H2cTermReq => {
                let t = TermReq::read_from_bytes(&self.rbuf[start..start + 24]).expect("24");
                tracing::warn!(peer = %self.peer, fes = t.fes.get(), fei = t.fei.get(),
                    "the host terminated the connection (H2CTermReq)");
                pg.bump(|s| s.protocol_errors += 1);
                self.close(pg, "H2CTermReq received");
                Ok(())
            }
            PduType::CapsuleCmd => match self.check_digests(start, l) {
                Ok(()) => self.capsule(pg, start, l, false),
                Err(DigestErr::Header) => Err(HDGST_ERROR),
                // The command completes with a transient transport error (tcp 7.4.6.1);
                // the connection lives on.
                Err(DigestErr::Data) => {
                    tracing::warn!(peer = %self.peer, "data digest error in a command capsule");
                    self.capsule(pg, start, l, true)
                }
            },
            PduType::H2cData => match self.check_digests(start, l) {
                Ok(()) => self.h2c_data(pg, start, l),
                Err(DigestErr::Header) => Err(HDGST_ERROR),
                Err(DigestErr::Data) => {
                    // The command's data cannot be trusted and the host's transfer
                    // state cannot be resynchronised: as Linux's target does, drop
                    // the connection (the host reconnects and retries).
                    tracing::warn!(peer = %self.peer, "data digest error in H2CData; closing");
                    pg.bump(|s| s.protocol_errors += 1);
                    self.close(pg, "data digest error");
                    Ok(())
                }
            },
            // check_header admits only H2C types on the controller side.
            _ => Err(PduError {
                fes: Fes::InvalidHeaderField,
                fei: 0,
            }),
        }
    }

    fn ic_req(&mut self, start: usize) -> Result<(), PduError> {
        let req = IcReq::read_from_bytes(&self.rbuf[start..start + 128]).expect("128 bytes");
        if req.pfv.get() != 0 {
            return Err(PduError {
                fes: Fes::UnsupportedParameter,
                fei: 8,
            });
        }
        if req.hpda > pdu::PDA_MAX {
            return Err(PduError {
                fes: Fes::InvalidHeaderField,
                fei: 10,
            });
        }
        let hd = req.dgst & pdu::DGST_HDGST_ENABLE != 0;
        let dd = req.dgst & pdu::DGST_DDGST_ENABLE != 0;
        let mut resp = IcResp::new_zeroed();
        resp.cpda = 0;
        resp.dgst = req.dgst & (pdu::DGST_HDGST_ENABLE | pdu::DGST_DDGST_ENABLE);
        resp.maxh2cdata = U32::new(self.opts.max_h2c_data);
        let neg = self.tx;
        pdu::frame(
            &mut self.sbuf,
            resp.as_mut_bytes(),
            PduType::IcResp,
            0,
            &neg,
            0,
        );
        self.mark();
        self.rx.established = true;
        self.rx.hdgst = hd;
        self.rx.ddgst = dd;
        self.tx = Negotiated {
            established: true,
            hdgst: hd,
            ddgst: dd,
            pda: req.hpda,
            plen_max: 0,
        };
        Ok(())
    }

    fn capsule(
        &mut self,
        pg: &PollGroup,
        start: usize,
        l: &PduLayout,
        ddgst_bad: bool,
    ) -> Result<(), PduError> {
        let cmd = CapsuleCmd::read_from_bytes(&self.rbuf[start..start + 72]).expect("72 bytes");
        let sqe = cmd.sqe;
        let icd = &self.rbuf[start + l.data_offset..start + l.data_offset + l.data_len];
        // Fabrics commands and admin writes may carry 8 KiB in the capsule on any
        // queue (Linux sends Connect data so on I/O queues too).
        let icd_max = match self.role {
            Role::Io { ref ctrlr, .. } if sqe.opc != OPC_FABRICS => {
                ctrlr.icd_size.load(Ordering::Relaxed)
            }
            _ => ADMIN_ICD_SIZE,
        } as usize;
        if l.data_len > icd_max {
            return Err(PduError {
                fes: Fes::DataTransferLimitExceeded,
                fei: 0,
            });
        }
        let dir = cmd_dir(&sqe);
        let sgl = sqe.sgl();
        let len = sgl.len.get();
        // Where the data is: in the capsule or moved by the transport.
        let mut bad: Option<Status> = ddgst_bad.then_some(Status::TRANSIENT_TRANSPORT_ERROR);
        let in_capsule = if len == 0 {
            false
        } else if sgl.ty() == sgl_type::DATA_BLOCK && sgl.subtype() == sgl_subtype::OFFSET {
            let off = sgl.addr.get();
            if dir != Dir::H2c {
                bad = Some(Status::SGL_DESCRIPTOR_TYPE_INVALID);
            } else if off != 0 || len as usize != l.data_len {
                bad = Some(Status::SGL_OFFSET_INVALID.or_len(off == 0));
            }
            true
        } else if sgl.ty() == sgl_type::TRANSPORT_DATA_BLOCK {
            if l.data_len != 0 {
                bad = Some(Status::SGL_DESCRIPTOR_TYPE_INVALID);
            }
            false
        } else {
            bad = Some(Status::SGL_DESCRIPTOR_TYPE_INVALID);
            false
        };
        let bad = bad.or(ddgst_bad.then_some(Status::TRANSIENT_TRANSPORT_ERROR));
        let mut bad = bad;
        if bad.is_none() && len > 0 && dir == Dir::None {
            bad = Some(Status::INVALID_FIELD);
        }
        if bad.is_none() && len > self.opts.max_io_size.max(ADMIN_ICD_SIZE) {
            bad = Some(Status::SGL_LENGTH_INVALID);
        }
        // Buffers first, so a capsule whose data is here is only consumed when it
        // can be copied out.
        let mut bufs = None;
        let mut stash = false;
        if bad.is_none() && len > 0 && in_capsule {
            match self.bufs_for(pg, &sqe, len) {
                Some(b) => bufs = Some(b),
                // The data is kept aside so the stream behind it (H2CData for writes
                // holding buffers) keeps moving.
                None => stash = true,
            }
        }
        let Some(slot) = self.free.pop() else {
            // The host sent more commands than its queue has entries.
            return Err(PduError {
                fes: Fes::PduSequenceError,
                fei: 0,
            });
        };
        self.sqhd = (self.sqhd + 1) % self.sqsize.max(1);
        let r = &mut self.reqs[slot as usize];
        r.sqe = sqe;
        r.dir = dir;
        r.len = len;
        r.h2c_off = 0;
        r.dw1 = 0;
        r.op = Op::Plain;
        r.state = RState::Exec;
        if let Some(s) = bad {
            self.complete(pg, slot, s, 0);
            return Ok(());
        }
        if stash {
            r.stash.clear();
            r.stash.extend_from_slice(icd);
            r.state = RState::NeedBuf;
            self.need_buf.push_back(slot);
            return Ok(());
        }
        if let Some(b) = bufs {
            let io = r.io.as_mut().expect("a free request owns its I/O");
            let mut off = 0;
            for mut buf in b {
                let n = buf.len();
                buf.as_mut_slice().copy_from_slice(&icd[off..off + n]);
                off += n;
                let _ = io.push_buf(buf);
            }
            self.execute(pg, slot);
            return Ok(());
        }
        if len == 0 {
            self.execute(pg, slot);
            return Ok(());
        }
        self.start_transfer(pg, slot);
        Ok(())
    }

    /// Takes buffers for a transport-moved transfer and starts it (R2T or execution).
    fn start_transfer(&mut self, pg: &PollGroup, slot: u16) {
        if !self.try_start_transfer(pg, slot) {
            self.reqs[slot as usize].state = RState::NeedBuf;
            self.need_buf.push_back(slot);
        }
    }

    /// Takes the request's buffers and moves it on (R2T, or execution); false when the
    /// pools are short (nothing taken).
    fn try_start_transfer(&mut self, pg: &PollGroup, slot: u16) -> bool {
        let len = self.reqs[slot as usize].len;
        let sqe = self.reqs[slot as usize].sqe;
        let Some(bufs) = self.bufs_for(pg, &sqe, len) else {
            return false;
        };
        let r = &mut self.reqs[slot as usize];
        let io = r.io.as_mut().expect("a free request owns its I/O");
        for b in bufs {
            let _ = io.push_buf(b);
        }
        if !r.stash.is_empty() {
            // In-capsule data that waited for buffers.
            copy_into(io.bufs_mut(), 0, &r.stash);
            r.stash.clear();
            r.state = RState::Exec;
            self.execute(pg, slot);
        } else if r.dir == Dir::H2c {
            r.state = RState::AwaitH2c;
            let mut t = R2t {
                cccid: r.sqe.cid,
                ttag: U16::new(slot),
                r2to: U32::new(0),
                r2tl: U32::new(len),
                ..Default::default()
            };
            let neg = self.tx;
            pdu::frame(&mut self.sbuf, t.as_mut_bytes(), PduType::R2t, 0, &neg, 0);
            self.mark();
        } else {
            r.state = RState::Exec;
            self.execute(pg, slot);
        }
        true
    }

    /// Data buffers for command `sqe` of `len` bytes: from the namespace's device
    /// memory (an NVMe CMB) when the transport is set to and the pool has room, else
    /// from the host pools; counted either way. `None` when the pools are short.
    fn bufs_for(
        &self,
        pg: &PollGroup,
        sqe: &Sqe,
        len: u32,
    ) -> Option<arrayvec::ArrayVec<crate::dma::DmaBuf, { crate::bdev::SGL_SEGMENTS_MAX }>> {
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
                    pg.bump(|s| s.cmb_fallback_pool_empty += 1);
                    if !self.cmb_fallback_logged.replace(true) {
                        tracing::info!(peer = %self.peer, nsid = sqe.nsid.get(), "the CMB buffer pool is short: host buffers for now (counted in cmb_fallback_pool_empty)");
                    }
                }
            }
        }
        let b = alloc_bufs_for(pg, len)?;
        pg.bump(|s| s.host_buffer_bytes += len as u64);
        Some(b)
    }

    /// Requests waiting for buffers, in arrival order; stops at the first that still
    /// cannot have them (buffers come back from completions on this thread).
    fn retry_need_buf(&mut self, pg: &PollGroup) -> bool {
        let mut any = false;
        while let Some(&slot) = self.need_buf.front() {
            if !self.try_start_transfer(pg, slot) {
                break;
            }
            self.need_buf.pop_front();
            any = true;
        }
        any
    }

    /// I/Os a full bdev queue refused, resubmitted in order.
    fn retry_io_wait(&mut self, pg: &PollGroup) -> bool {
        let mut any = false;
        while let Some(&slot) = self.io_wait.front() {
            let Role::Io { subsys, .. } = &self.role else {
                self.io_wait.clear();
                break;
            };
            let r = &mut self.reqs[slot as usize];
            let Some(ns) = subsys.get(r.sqe.nsid.get()) else {
                self.io_wait.pop_front();
                self.complete(pg, slot, Status::INVALID_NAMESPACE, 0);
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

    fn h2c_data(&mut self, pg: &PollGroup, start: usize, l: &PduLayout) -> Result<(), PduError> {
        // Offsets in the H2CData header (tcp 3.6.2.8).
        const OFF_CCCID: u32 = 8;
        const OFF_TTAG: u32 = 10;
        const OFF_DATAO: u32 = 12;
        const OFF_DATAL: u32 = 16;
        let h = DataHeader::read_from_bytes(&self.rbuf[start..start + 24]).expect("24 bytes");
        let slot = h.ttag.get();
        let Some(r) = self.reqs.get_mut(slot as usize) else {
            return Err(PduError {
                fes: Fes::InvalidHeaderField,
                fei: OFF_TTAG,
            });
        };
        if r.state != RState::AwaitH2c {
            return Err(PduError {
                fes: Fes::InvalidHeaderField,
                fei: OFF_TTAG,
            });
        }
        if r.sqe.cid != h.cccid {
            return Err(PduError {
                fes: Fes::InvalidHeaderField,
                fei: OFF_CCCID,
            });
        }
        let (datao, datal) = (h.datao.get(), h.datal.get());
        if datal as usize != l.data_len || datal == 0 {
            return Err(PduError {
                fes: Fes::InvalidHeaderField,
                fei: OFF_DATAL,
            });
        }
        if datal > self.opts.max_h2c_data {
            return Err(PduError {
                fes: Fes::DataTransferLimitExceeded,
                fei: OFF_DATAL,
            });
        }
        if datao != r.h2c_off {
            return Err(PduError {
                fes: Fes::DataTransferOutOfRange,
                fei: OFF_DATAO,
            });
        }
        if datao as u64 + datal as u64 > r.len as u64 {
            return Err(PduError {
                fes: Fes::DataTransferOutOfRange,
                fei: OFF_DATAL,
            });
        }
        let last = l.flags & pdu::FLAG_LAST_PDU != 0;
        let end = datao + datal;
        if last != (end == r.len) {
            // LAST_PDU must mark exactly the PDU that completes the R2T.
            return Err(PduError {
                fes: Fes::InvalidHeaderField,
                fei: 1,
            });
        }
        let src = &self.rbuf[start + l.data_offset..start + l.data_offset + l.data_len];
        copy_into(
            r.io.as_mut()
                .expect("awaiting data owns its I/O")
                .bufs_mut(),
            datao as usize,
            src,
        );
        r.h2c_off = end;
        if end == r.len {
            r.state = RState::Exec;
            self.execute(pg, slot);
        }
        Ok(())
    }

    /// Runs a command whose data (if any) is in its buffers.
    fn execute(&mut self, pg: &PollGroup, slot: u16) {
        let sqe = self.reqs[slot as usize].sqe;
        if sqe.opc == OPC_FABRICS {
            self.fabrics(pg, slot);
            return;
        }
        match &mut self.role {
            Role::None => {
                // Anything but Connect before Connect.
                self.complete(pg, slot, Status::COMMAND_SEQUENCE_ERROR, 0);
            }
            Role::Admin(_) => self.admin(pg, slot),
            Role::Io { .. } => self.io_cmd(pg, slot),
        }
    }

    fn admin(&mut self, pg: &PollGroup, slot: u16) {
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
            AdminOutcome::Done { status, dw0 } => self.complete(pg, slot, status, dw0),
            AdminOutcome::Held => {}
            AdminOutcome::Abort { cid, dw0 } => {
                // Complete the aborted command (an AER) first.
                if let Some(s) = ctrlr.take_aer_by_cid(cid) {
                    self.complete(pg, s, Status::ABORT_REQUESTED, 0);
                }
                self.complete(pg, slot, Status::SUCCESS, dw0);
            }
        }
    }

    fn io_cmd(&mut self, pg: &PollGroup, slot: u16) {
        let Role::Io { subsys, .. } = &self.role else {
            unreachable!("io_cmd() on an I/O queue");
        };
        let r = &mut self.reqs[slot as usize];
        let sqe = r.sqe;
        let Some(ns) = subsys.get(sqe.nsid.get()) else {
            self.complete(pg, slot, Status::INVALID_NAMESPACE, 0);
            return;
        };
        let bs = ns.bdev.block_size();
        let plan = ctrlr::plan_io(&sqe, bs, ns.bdev.num_blocks(), r.len);
        let mut io = r.io.take().expect("an executing command owns its I/O");
        io.ctx = slot as u64;
        match plan {
            IoPlan::Complete(s) => {
                r.io = Some(io);
                self.complete(pg, slot, s, 0);
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
                    self.complete(pg, slot, Status::SUCCESS, 0);
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
                        .or_else(|| alloc_bufs_for(pg, r.len)),
                    _ => alloc_bufs_for(pg, r.len),
                }) else {
                    r.aux.clear();
                    r.io = Some(io);
                    self.complete(pg, slot, Status::generic(0x06, false), 0);
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

    fn submit(
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
    fn try_submit(
        &mut self,
        pg: &PollGroup,
        slot: u16,
        io: Box<BdevIo>,
        ch: &crate::thread::IoChannel<crate::bdev::Bdev>,
    ) -> bool {
        match ch.submit(io, &self.cb) {
            Ok(()) => {
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
                self.complete(pg, slot, st, 0);
                true
            }
        }
    }

    /// Deallocates the next DSM range, or completes the command.
    fn dsm_next(&mut self, pg: &PollGroup, slot: u16, last: Status) {
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
            self.complete(pg, slot, st, 0);
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
    fn io_done(&mut self, io: Box<BdevIo>, pg: &PollGroup) {
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
            Op::Plain => self.complete(pg, slot, st, 0),
            Op::Fua if st.is_success() => {
                // The write is done; make it durable before acknowledging it.
                r.op = Op::Plain;
                let Role::Io { subsys, .. } = &self.role else {
                    return;
                };
                let Some(ns) = subsys.get(r.sqe.nsid.get()) else {
                    self.complete(pg, slot, Status::INVALID_NAMESPACE, 0);
                    return;
                };
                let mut io = r.io.take().expect("just put back");
                io.clear_bufs();
                io.prepare(IoKind::Flush, 0, 0);
                self.submit(pg, slot, io, &ns.ch);
            }
            Op::Fua => self.complete(pg, slot, st, 0),
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
                self.complete(pg, slot, st, 0)
            }
        }
    }

    fn fabrics(&mut self, pg: &PollGroup, slot: u16) {
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
                    self.complete(pg, slot, s, 0);
                    return;
                };
                let (st, val) = ctrlr.property(&f, pg.thread.now());
                self.reqs[slot as usize].dw1 = (val >> 32) as u32;
                self.complete(pg, slot, st, val as u32);
            }
            fctype::DISCONNECT => {
                if matches!(self.role, Role::None) {
                    self.complete(pg, slot, Status::COMMAND_SEQUENCE_ERROR, 0);
                    return;
                }
                self.complete(pg, slot, Status::SUCCESS, 0);
                self.closing_after_flush = true;
            }
            _ => self.complete(pg, slot, Status::INVALID_OPCODE, 0),
        }
    }

    fn connect(&mut self, pg: &PollGroup, slot: u16, f: &FabricsCmd) {
        // Offsets of Connect's fields in the SQE (fabrics 3.3, Figure 20).
        const OFF_RECFMT: u16 = 40;
        const OFF_SQSIZE: u16 = 44;
        if !matches!(self.role, Role::None) {
            self.complete(pg, slot, Status::COMMAND_SEQUENCE_ERROR, 0);
            return;
        }
        let cf = ConnectFields::read_from_bytes(&f.specific).expect("24 bytes");
        let r = &mut self.reqs[slot as usize];
        let io = r.io.as_ref().expect("an executing command owns its I/O");
        let mut raw = [0u8; 1024];
        if r.len != 1024 || io.data_len() != 1024 {
            self.complete(pg, slot, Status::SGL_LENGTH_INVALID, 0);
            return;
        }
        copy_from(io.bufs(), 0, &mut raw);
        let data = ConnectData::read_from_bytes(&raw).expect("1024 bytes");
        if cf.recfmt.get() != 0 {
            self.complete(
                pg,
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
        // An admin SQ has at least 32 entries (fabrics 3.3), an I/O SQ at least 2.
        let depth_min = if qid == 0 { 32 } else { 2 };
        if sqsize + 1 < depth_min || sqsize + 1 > depth_max {
            self.complete(
                pg,
                slot,
                Status::CONNECT_INVALID_PARAMETERS,
                invalid_cmd(OFF_SQSIZE),
            );
            return;
        }
        let (Some(subnqn), Some(hostnqn)) = (nqn_str(&data.subnqn), nqn_str(&data.hostnqn)) else {
            self.complete(
                pg,
                slot,
                Status::CONNECT_INVALID_PARAMETERS,
                invalid_data(256),
            );
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
                self.complete(pg, slot, st, dw0);
                return;
            }
        };
        let cntlid = shared.cntlid;
        // Connect attributes bit 2: the host disabled SQ flow control (fabrics 3.3).
        self.sqflow_off = cf.cattr & (1 << 2) != 0;
        self.sqsize = (sqsize + 1) as u16;
        self.reqs.resize_with(sqsize as usize + 1, new_req);
        self.free = (1..=sqsize as u16).rev().collect();
        if qid == 0 {
            let kato = cf.kato.get();
            let ctrlr = Ctrlr::new(
                shared.clone(),
                subsys,
                kato,
                self.opts.clone(),
                self.sock.local_addr().unwrap_or(self.local),
                pg.thread.now(),
            );
            self.role = Role::Admin(Box::new(ctrlr));
            if let Some(me) = self.me.upgrade() {
                pg.register_admin(shared.subsys_id, cntlid, &me);
            }
            pg.bump(|s| {
                s.admin_qpairs += 1;
                s.current_admin_qpairs += 1;
            });
        } else {
            let subsys = pg.subsys(shared.subsys_id);
            self.role = Role::Io {
                ctrlr: shared,
                qid,
                subsys,
            };
            pg.bump(|s| {
                s.io_qpairs += 1;
                s.current_io_qpairs += 1;
            });
        }
        tracing::info!(peer = %self.peer, subnqn, hostnqn, qid, cntlid, "host connected");
        self.complete(pg, slot, Status::SUCCESS, cntlid as u32);
    }

    /// A namespace of this admin queue's controller changed.
    pub(crate) fn ns_changed(&mut self, pg: &PollGroup, nsid: u32) {
        let Role::Admin(ctrlr) = &mut self.role else {
            return;
        };
        if let Some((slot, dw0)) = ctrlr.ns_changed(nsid) {
            self.complete(pg, slot, Status::SUCCESS, dw0);
            let _ = self.flush(pg);
        }
    }

    /// Sends the command's data (C2H) and its response; frees the slot.
    fn complete(&mut self, pg: &PollGroup, slot: u16, status: Status, dw0: u32) {
        pg.bump(|s| s.completed_nvme_io += 1);
        let qid = self.qid();
        let r = &mut self.reqs[slot as usize];
        let neg = self.tx;
        let mut resp_needed = true;
        let mut zero_copy = false;
        if status.is_success() && r.dir == Dir::C2h && r.len > 0 {
            let io = r.io.as_ref().expect("a completing command owns its I/O");
            let bufs = io.bufs();
            let total: usize = bufs
                .iter()
                .map(|b| b.len())
                .sum::<usize>()
                .min(r.len as usize);
            // SUCCESS drops the CQE: only when it carries nothing (dwords 0 and 1 zero).
            let success = self.opts.c2h_success && self.sqflow_off && dw0 == 0 && r.dw1 == 0;
            let mut off = 0usize;
            for (i, b) in bufs.iter().enumerate() {
                if off >= total {
                    break;
                }
                let n = b.len().min(total - off);
                let last = off + n == total || i + 1 == bufs.len();
                let mut h = DataHeader {
                    cccid: r.sqe.cid,
                    datao: U32::new(off as u32),
                    datal: U32::new(n as u32),
                    ..Default::default()
                };
                let mut flags = 0;
                if last {
                    flags |= pdu::FLAG_LAST_PDU;
                    if success {
                        flags |= pdu::FLAG_SUCCESS;
                    }
                }
                pdu::frame(
                    &mut self.sbuf,
                    h.as_mut_bytes(),
                    PduType::C2hData,
                    flags,
                    &neg,
                    n,
                );
                let data = &b.as_slice()[..n];
                if n >= ZERO_COPY_MIN {
                    // Sent from the buffer itself; the request is released once it is.
                    let end = self.sbuf.len();
                    match self.sq.back_mut() {
                        Some(Seg::Bytes(_, e)) if *e == self.marked => *e = end,
                        _ => self.sq.push_back(Seg::Bytes(self.marked, end)),
                    }
                    self.marked = end;
                    self.sq.push_back(Seg::Data {
                        slot,
                        buf: i as u8,
                        len: n as u32,
                    });
                    zero_copy = true;
                } else {
                    self.sbuf.extend_from_slice(data);
                }
                if neg.ddgst {
                    self.sbuf
                        .extend_from_slice(&pdu::crc32c(data).to_le_bytes());
                }
                off += n;
            }
            resp_needed = !success;
        }
        if resp_needed {
            let mut cqe = Cqe {
                dw0: U32::new(dw0),
                dw1: U32::new(r.dw1),
                // With SQ flow control disabled SQHD is reserved: 0xFFFF, as Linux's
                // target reports it.
                sqhd: U16::new(if self.sqflow_off { 0xffff } else { self.sqhd }),
                sqid: U16::new(qid),
                cid: r.sqe.cid,
                ..Default::default()
            };
            cqe.set_status(status);
            let mut resp = CapsuleResp {
                cqe,
                ..Default::default()
            };
            pdu::frame(
                &mut self.sbuf,
                resp.as_mut_bytes(),
                PduType::CapsuleResp,
                0,
                &neg,
                0,
            );
        }
        self.mark();
        if zero_copy {
            self.reqs[slot as usize].state = RState::Sending;
            self.sq.push_back(Seg::Release(slot));
        } else {
            self.release(slot);
        }
    }

    fn qid(&self) -> u16 {
        match &self.role {
            Role::Io { qid, .. } => *qid,
            _ => 0,
        }
    }
}

/// C2H data of at least this many bytes is sent from its buffer rather than copied.
const ZERO_COPY_MIN: usize = 2048;

/// One piece of the send queue.
#[derive(Clone, Copy, Debug)]
enum Seg {
    /// Bytes `a..b` of the send buffer.
    Bytes(usize, usize),
    /// `len` bytes of buffer `buf` of request `slot`.
    Data { slot: u16, buf: u8, len: u32 },
    /// Request `slot` is sent: release it.
    Release(u16),
}

enum DigestErr {
    Header,
    Data,
}

const HDGST_ERROR: PduError = PduError {
    fes: Fes::HeaderDigestError,
    fei: 0,
};

/// Buffers for `len` bytes (`None` when the pools are short).
fn alloc_bufs_for(
    pg: &PollGroup,
    len: u32,
) -> Option<arrayvec::ArrayVec<crate::dma::DmaBuf, { crate::bdev::SGL_SEGMENTS_MAX }>> {
    pg.iobuf.get_sgl(len as usize)
}

fn nvme_status(s: IoStatus) -> Status {
    let (sct, sc, dnr) = s.nvme_status();
    Status {
        sct,
        sc,
        more: false,
        dnr,
    }
}

/// Copies `src` into the scatter list at byte `off`.
fn copy_into(bufs: &mut [crate::dma::DmaBuf], mut off: usize, mut src: &[u8]) {
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
fn copy_from(bufs: &[crate::dma::DmaBuf], mut off: usize, mut dst: &mut [u8]) {
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

fn bufs_equal(a: &[crate::dma::DmaBuf], b: &[crate::dma::DmaBuf]) -> bool {
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
fn invalid_data(off: u16) -> u32 {
    (1 << 16) | off as u32
}

/// As above, for a field of the command itself (IATTR clear).
fn invalid_cmd(off: u16) -> u32 {
    off as u32
}

trait OrLen {
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
