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

use super::poll_group::PollGroup;
use super::queue::{
    Dir, OrLen, Qpair, QpairRef, Queue, RState, Role, Started, cmd_dir, copy_into, io_callback,
};
use super::{ListenAddr, Target, Trtype};
use crate::thread::{FdWatch, IoChannel, Nanos, PollStatus, Thread, ThreadHandle};
use pollux_nvme::spec::cmd::{Cqe, Status, sgl_subtype, sgl_type};
use pollux_nvme::spec::fabrics::OPC_FABRICS;
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
/// Connections accepted per acceptor poll.
const ACCEPT_BATCH: usize = 16;
/// Bytes read per `read` call at most (a large PDU takes several).
const READ_CHUNK: usize = 256 * 1024;

/// Binds `addr` and starts accepting on `thread`'s poll group.
pub(crate) fn listen(
    addr: ListenAddr,
    thread: &ThreadHandle,
    tgt: &Arc<Target>,
) -> io::Result<super::Listener> {
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
    Ok(super::Listener::new(addr, thread, tgt))
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
                    let local = self.addr;
                    let r = t.send_msg(move || {
                        if let Some(pg) = PollGroup::current(&tgt) {
                            match Conn::new(s, peer, local, &pg) {
                                Ok(c) => pg.add_conn(c as QpairRef),
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

/// One NVMe/TCP connection: one queue pair.
pub(crate) struct Conn {
    sock: TcpStream,
    _watch: Option<FdWatch>,
    q: Queue,
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
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.q.peer)
            .field("closed", &self.q.closed)
            .finish()
    }
}

impl Qpair for Conn {
    /// One poll: send what is pending, read and handle what arrived.
    fn poll(&mut self, pg: &PollGroup) -> (PollStatus, bool) {
        if self.q.closed {
            return (PollStatus::Idle, true);
        }
        let mut busy = self.flush(pg);
        busy |= self.retry_need_buf(pg);
        busy |= self.q.retry_io_wait(pg);
        busy |= self.receive(pg);
        self.answer(pg);
        busy |= self.flush(pg);
        // Unsent bytes or requests waiting for buffers or a bdev queue: the sockets are
        // watched for input only, so keep polling rather than sleep on them.
        busy |= !self.sq.is_empty() || !self.q.need_buf.is_empty() || !self.q.io_wait.is_empty();
        if self.q.disconnecting && self.sq.is_empty() {
            self.close(pg, "the host disconnected");
        }
        (PollStatus::from_busy(busy), self.q.closed)
    }

    /// Closes the connection: the socket goes, every request not in a bdev releases its
    /// buffers now, the rest when their bdev hands them back.
    fn close(&mut self, pg: &PollGroup, why: &str) {
        if self.q.closed {
            return;
        }
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        self._watch = None;
        self.rbuf = Vec::new();
        self.sbuf = Vec::new();
        self.sq.clear();
        self.marked = 0;
        self.front_off = 0;
        self.q.close(pg, why);
    }

    fn send_done(&mut self, pg: &PollGroup) {
        self.answer(pg);
        let _ = self.flush(pg);
    }

    fn queue(&mut self) -> &mut Queue {
        &mut self.q
    }

    fn answer_one(&mut self, pg: &PollGroup, slot: u16, status: Status, dw0: u32) {
        self.complete(pg, slot, status, dw0);
    }

    fn try_start_transfer(&mut self, pg: &PollGroup, slot: u16) -> bool {
        let (sqe, len, retry) = self.q.transfer_of(slot);
        let Some(bufs) = self.q.bufs_for(pg, &sqe, len, retry) else {
            return false;
        };
        if self.q.start_with(pg, slot, bufs) == Started::FetchData {
            self.r2t(slot);
        }
        true
    }
}

impl Conn {
    pub(crate) fn new(
        sock: TcpStream,
        peer: SocketAddr,
        local: ListenAddr,
        pg: &IoChannel<Target>,
    ) -> io::Result<Rc<RefCell<Conn>>> {
        sock.set_nonblocking(true)?;
        sock.set_nodelay(true)?;
        let opts = pg.tgt.transport(Trtype::Tcp).unwrap_or_default();
        let icd = opts.in_capsule_data_size.max(ADMIN_ICD_SIZE) as usize;
        let data_max = icd.max(opts.max_h2c_data as usize);
        // The largest PDU: a capsule header or data header, digests, padding, data.
        let plen_max = 72 + DIGEST_LEN + 128 + data_max + DIGEST_LEN;
        let watch = pg.thread.register_fd(sock.as_raw_fd())?;
        let local_sock = sock.local_addr().unwrap_or(local.addr);
        let conn = Rc::new_cyclic(|me: &Weak<RefCell<Conn>>| {
            let cb = io_callback(me.clone(), pg);
            let me: Weak<RefCell<dyn Qpair>> = me.clone();
            RefCell::new(Conn {
                sock,
                _watch: Some(watch),
                q: Queue::new(
                    peer.to_string(),
                    local,
                    local_sock,
                    opts,
                    me,
                    cb,
                    pg.thread.now(),
                ),
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
            })
        });
        tracing::debug!(%peer, "NVMe/TCP connection accepted");
        Ok(conn)
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

    /// Sends what the socket takes: one `writev` of up to 64 segments at a time, data
    /// straight from the requests' buffers.
    fn flush(&mut self, pg: &PollGroup) -> bool {
        let mut progress = false;
        loop {
            while let Some(&Seg::Release(slot)) = self.sq.front() {
                self.sq.pop_front();
                self.q.release(slot);
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
                            let io = self.q.reqs[slot as usize]
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
                    tracing::debug!(peer = %self.q.peer, error = %e, "send failed");
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
                    self.q.release(slot);
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
            if self.q.closed || self.q.disconnecting {
                return busy;
            }
            // Handle every whole PDU buffered.
            busy |= self.parse(pg);
            if self.q.closed {
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
                    tracing::debug!(peer = %self.q.peer, error = %e, "receive failed");
                    self.close(pg, "receive failed");
                    return true;
                }
            }
        }
    }

    /// Handles the whole PDUs in the receive buffer; returns whether there were any.
    fn parse(&mut self, pg: &PollGroup) -> bool {
        let mut any = false;
        while self.rend - self.rstart >= 8 && !self.q.closed && !self.q.disconnecting {
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
        tracing::warn!(peer = %self.q.peer, fes = ?e.fes, fei = e.fei,
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
                tracing::warn!(peer = %self.q.peer, fes = t.fes.get(), fei = t.fei.get(),
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
                    tracing::warn!(peer = %self.q.peer, "data digest error in a command capsule");
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
                    tracing::warn!(peer = %self.q.peer, "data digest error in H2CData; closing");
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
        resp.maxh2cdata = U32::new(self.q.opts.max_h2c_data);
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
        let icd_max = match self.q.role {
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
        if bad.is_none() && len > self.q.opts.max_io_size.max(ADMIN_ICD_SIZE) {
            bad = Some(Status::SGL_LENGTH_INVALID);
        }
        // Buffers first, so a capsule whose data is here is only consumed when it
        // can be copied out.
        let mut bufs = None;
        let mut stash = false;
        if bad.is_none() && len > 0 && in_capsule && !self.q.need_buf.is_empty() {
            // Behind requests already waiting for buffers, in arrival order.
            stash = true;
        } else if bad.is_none() && len > 0 && in_capsule {
            match self.q.bufs_for(pg, &sqe, len, false) {
                Some(b) => bufs = Some(b),
                // The data is kept aside so the stream behind it (H2CData for writes
                // holding buffers) keeps moving.
                None => stash = true,
            }
        }
        let Some(slot) = self.q.admit(&sqe, dir, len) else {
            // The host sent more commands than its queue has entries.
            return Err(PduError {
                fes: Fes::PduSequenceError,
                fei: 0,
            });
        };
        if let Some(s) = bad {
            self.q.finish(slot, s, 0);
            return Ok(());
        }
        if stash {
            self.q.stash(slot, icd);
            return Ok(());
        }
        if let Some(b) = bufs {
            self.q.run_in_capsule(pg, slot, b, icd);
            return Ok(());
        }
        if len == 0 {
            self.q.execute(pg, slot);
            return Ok(());
        }
        self.start_transfer(pg, slot);
        Ok(())
    }

    /// Sends the R2T for request `slot`'s whole transfer.
    fn r2t(&mut self, slot: u16) {
        let r = &self.q.reqs[slot as usize];
        let mut t = R2t {
            cccid: r.sqe.cid,
            ttag: U16::new(slot),
            r2to: U32::new(0),
            r2tl: U32::new(r.len),
            ..Default::default()
        };
        let neg = self.tx;
        pdu::frame(&mut self.sbuf, t.as_mut_bytes(), PduType::R2t, 0, &neg, 0);
        self.mark();
    }

    fn h2c_data(&mut self, pg: &PollGroup, start: usize, l: &PduLayout) -> Result<(), PduError> {
        // Offsets in the H2CData header (tcp 3.6.2.8).
        const OFF_CCCID: u32 = 8;
        const OFF_TTAG: u32 = 10;
        const OFF_DATAO: u32 = 12;
        const OFF_DATAL: u32 = 16;
        let h = DataHeader::read_from_bytes(&self.rbuf[start..start + 24]).expect("24 bytes");
        let slot = h.ttag.get();
        let Some(r) = self.q.reqs.get_mut(slot as usize) else {
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
        if datal > self.q.opts.max_h2c_data {
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
            self.q.execute(pg, slot);
        }
        Ok(())
    }
    /// Sends the command's data (C2H) and its response; frees the slot.
    fn complete(&mut self, pg: &PollGroup, slot: u16, status: Status, dw0: u32) {
        pg.bump(|s| s.completed_nvme_io += 1);
        let qid = self.q.qid();
        let r = &mut self.q.reqs[slot as usize];
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
            let success = self.q.opts.c2h_success && self.q.sqflow_off && dw0 == 0 && r.dw1 == 0;
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
                sqhd: U16::new(if self.q.sqflow_off {
                    0xffff
                } else {
                    self.q.sqhd
                }),
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
            self.q.reqs[slot as usize].state = RState::Sending;
            self.sq.push_back(Seg::Release(slot));
        } else {
            self.q.release(slot);
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
