//! The NVMe/TCP host (tcp 1.0c; fabrics 1.1a).
//!
//! One connection type does the work for both kinds of queue: a TCP socket in
//! non-blocking mode, a send buffer with a head offset (partial writes resume where they
//! stopped), a receive staging buffer that a resumable state machine parses PDU by PDU
//! with the shared codec ([`crate::spec::tcp`]), and a fixed table of command slots (CID
//! = slot index, with a generation in the high bits so that a stale PDU never matches a
//! newer command). [`super::AdminQueue`] waits on it with poll(2); [`super::FabricQpair`] leaves the
//! waiting to its caller.
//!
//! What the host does on the wire:
//!
//! - ICReq with PFV 0, HPDA 0, MAXR2T 0 (one R2T per command at a time) and the digests
//!   asked for; the ICResp must have PFV 0, CPDA <= 31, MAXH2CDATA >= 4096 and a multiple
//!   of 4, and enable no digest that was not asked for.
//! - Commands go as CapsuleCmd PDUs. Writes no longer than the queue's in-capsule size
//!   carry their data in the capsule (SGL: Data Block, subtype Offset); other data
//!   moves by R2T/H2CData (writes) or C2HData (reads) under a Transport SGL Data Block
//!   descriptor. The admin queue's in-capsule size is 8 KiB, an I/O queue's IOCCSZ * 16
//!   - 64 bytes from Identify Controller.
//! - An R2T is answered with H2CData PDUs of at most MAXH2CDATA bytes that cover its
//!   range exactly, LAST_PDU on the last. C2HData must arrive in order and inside the
//!   command's buffer; one with the SUCCESS flag completes its command.
//! - Anything malformed — a field out of range, a digest that does not match, a PDU for
//!   a CID with no command — ends the connection: the host sends an H2CTermReq with the
//!   Fatal Error Status that fits, closes the socket and reports [`Error::Protocol`].
//!   A data digest error uses FES 03h (the only digest status; tcp Figure 28).
//!
//! Data that goes to the controller is copied into the send buffer when its PDU is
//! queued, so a completion can hand the buffer back at once, even if the controller
//! answers before all of the data went out.

use super::host::{FabricOptions, Wire};
use super::{Completion, DataBuf, Error, STATUS_ABORTED_BY_HOST, SubmitError, XferDir};
use crate::spec::cmd::{Cqe, SglDescriptor, Sqe, Status, sgl_subtype, sgl_type};
use crate::spec::tcp::{
    self as pdu, CapsuleCmd, CommonHeader, DataHeader, Fes, IcReq, IcResp, Negotiated, PduLayout,
    PduType, R2t, Receiver, TermReq,
};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// The smallest MAXH2CDATA a controller may announce (tcp 3.6.2.3).
pub const MAXH2CDATA_MIN: u32 = 4096;

/// Bytes of the receive staging buffer.
const RX_BUF_LEN: usize = 64 * 1024;
/// Bytes of queued PDUs that make a submission send at once rather than at the next poll.
const SEND_BATCH_MAX: usize = 256 * 1024;
/// Staging space for one PDU's header, digest and padding (PDO is at most 255).
const HDR_MAX: usize = 256;
/// Bytes of a common header.
const CH_LEN: usize = 8;
/// Most bytes of the offending header that an H2CTermReq carries (tcp 3.6.2.4).
const TERM_DATA_MAX: usize = 128;
/// Receive buffers read per poll at most, so one busy connection cannot hold its
/// caller for ever.
const FILLS_PER_POLL: usize = 64;
/// How long a failing connection may take to send its H2CTermReq.
const TERM_FLUSH: Duration = Duration::from_millis(200);

/// One command slot of a connection.
#[derive(Debug)]
struct Slot<B> {
    busy: bool,
    /// CID of the command in the slot (or of the last one).
    cid: u16,
    tag: u64,
    buf: Option<B>,
    dir: XferDir,
    /// Bytes the command moves.
    len: u32,
    /// Its data went in the capsule.
    in_capsule: bool,
    /// Next C2HData offset expected.
    c2h_next: u32,
    /// Next R2T offset expected.
    r2t_next: u32,
}

/// A C2HData PDU's data being received.
#[derive(Clone, Copy, Debug)]
struct DataRx {
    slot: usize,
    /// Next buffer offset to fill.
    pos: usize,
    /// End of this PDU's data in the buffer.
    end: usize,
    crc: u32,
    digest: bool,
    dgst: [u8; 4],
    dgst_len: usize,
    success: bool,
    /// The PDU's header length (for an H2CTermReq) and its data digest's offset.
    hlen: usize,
    dgst_off: u32,
}

/// The connection under both queue kinds.
pub(crate) struct Conn<B> {
    pub(crate) sock: TcpStream,
    pub(crate) addr: SocketAddr,
    pub(crate) qid: u16,
    /// Framing of what the host sends: digests, and CPDA for the padding.
    pub(crate) tx_neg: Negotiated,
    /// Checking of what the host receives: digests, and HPDA (0).
    rx_neg: Negotiated,
    pub(crate) maxh2cdata: u32,
    in_capsule: u32,
    /// Largest data per command (MDTS), 0 for no limit.
    pub(crate) max_transfer: u32,
    pub(crate) tx: Vec<u8>,
    pub(crate) tx_head: usize,
    /// Where PDU headers are framed before they join `tx`.
    scratch: Vec<u8>,
    rx: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
    /// Most bytes one read takes (tests shrink it to split PDUs).
    pub(crate) rx_read_max: usize,
    hdr: [u8; HDR_MAX],
    hdr_len: usize,
    hdr_need: usize,
    layout: Option<PduLayout>,
    data: Option<DataRx>,
    slots: Vec<Slot<B>>,
    free: Vec<u16>,
    idx_bits: u32,
    pub(crate) outstanding: usize,
    ic_resp: Option<IcResp>,
    /// An error found while sending from `submit`, reported by the next poll.
    pending: Option<Error>,
    /// Why the connection failed.
    pub(crate) dead: Option<String>,
}

impl<B> fmt::Debug for Conn<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("addr", &self.addr)
            .field("qid", &self.qid)
            .field("slots", &self.slots.len())
            .field("outstanding", &self.outstanding)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

fn next_cid(prev: u16, idx_bits: u32) -> u16 {
    if idx_bits >= 16 {
        return prev;
    }
    let step = 1u16 << idx_bits;
    let mut cid = prev.wrapping_add(step);
    if cid == 0xffff {
        // 0xFFFF means "no command" in the Error Information log.
        cid = cid.wrapping_add(step);
    }
    cid
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

    /// Connects the socket and exchanges ICReq/ICResp; `slots` commands may be
    /// outstanding.
    pub(crate) fn open(
        opts: &FabricOptions,
        qid: u16,
        slots: usize,
        in_capsule: u32,
    ) -> Result<Self, Error> {
        let addr = opts.addr;
        let sock = TcpStream::connect_timeout(&addr, opts.timeout).map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionRefused => Error::Refused { addr },
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout {
                addr,
                what: "TCP connect".into(),
                after: opts.timeout,
            },
            _ => Error::Connect { addr, source: e },
        })?;
        let mut c = Conn::new(sock, addr, qid, slots, in_capsule)?;
        c.handshake(opts.hdgst, opts.ddgst, opts.timeout)?;
        Ok(c)
    }

    fn new(
        sock: TcpStream,
        addr: SocketAddr,
        qid: u16,
        slots: usize,
        in_capsule: u32,
    ) -> Result<Self, Error> {
        sock.set_nodelay(true)
            .and_then(|()| sock.set_nonblocking(true))
            .map_err(|source| Error::Io { addr, source })?;
        let slots = slots.clamp(1, 1 << 16);
        let idx_bits = usize::BITS - (slots - 1).leading_zeros();
        Ok(Conn {
            sock,
            addr,
            qid,
            tx_neg: Negotiated::default(),
            rx_neg: Negotiated::default(),
            maxh2cdata: MAXH2CDATA_MIN,
            in_capsule,
            max_transfer: 0,
            tx: Vec::with_capacity(64 * 1024),
            tx_head: 0,
            scratch: Vec::with_capacity(HDR_MAX + TERM_DATA_MAX),
            rx: vec![0; RX_BUF_LEN].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
            rx_read_max: RX_BUF_LEN,
            hdr: [0; HDR_MAX],
            hdr_len: 0,
            hdr_need: CH_LEN,
            layout: None,
            data: None,
            slots: (0..slots)
                .map(|i| Slot {
                    busy: false,
                    // The first command of slot i gets generation 0.
                    cid: (i as u16).wrapping_sub(if idx_bits >= 16 { 0 } else { 1 << idx_bits }),
                    tag: 0,
                    buf: None,
                    dir: XferDir::None,
                    len: 0,
                    in_capsule: false,
                    c2h_next: 0,
                    r2t_next: 0,
                })
                .collect(),
            free: (0..slots as u32).rev().map(|i| i as u16).collect(),
            idx_bits,
            outstanding: 0,
            ic_resp: None,
            pending: None,
            dead: None,
        })
    }

    /// ICReq, then wait for and check the ICResp.
    fn handshake(&mut self, hdgst: bool, ddgst: bool, timeout: Duration) -> Result<(), Error> {
        let asked = if hdgst { pdu::DGST_HDGST_ENABLE } else { 0 }
            | if ddgst { pdu::DGST_DDGST_ENABLE } else { 0 };
        let mut req = IcReq::new_zeroed();
        req.pfv = U16::new(0);
        req.hpda = 0;
        req.dgst = asked;
        req.maxr2t = U32::new(0);
        self.scratch.clear();
        pdu::frame(
            &mut self.scratch,
            req.as_mut_bytes(),
            PduType::IcReq,
            0,
            &self.tx_neg,
            0,
        );
        self.tx.extend_from_slice(&self.scratch);
        let deadline = Instant::now() + timeout;
        let r = loop {
            self.poll(0, &mut |_| {})?;
            if let Some(r) = self.ic_resp.take() {
                break r;
            }
            if Instant::now() >= deadline {
                return Err(self.fail(Error::Timeout {
                    addr: self.addr,
                    what: "waiting for the ICResp".into(),
                    after: timeout,
                }));
            }
            self.wait_io(deadline)?;
        };
        let check = if r.pfv.get() != 0 {
            Err((
                Fes::UnsupportedParameter,
                8,
                format!("PDU format version {} (this host speaks 0)", r.pfv.get()),
            ))
        } else if r.cpda > pdu::PDA_MAX {
            Err((
                Fes::InvalidHeaderField,
                10,
                format!("CPDA {} is above {}", r.cpda, pdu::PDA_MAX),
            ))
        } else if r.dgst & !asked != 0 {
            Err((
                Fes::InvalidHeaderField,
                11,
                format!(
                    "it enables digests {:#x} that were not asked for ({asked:#x})",
                    r.dgst
                ),
            ))
        } else if r.maxh2cdata.get() < MAXH2CDATA_MIN || r.maxh2cdata.get() % 4 != 0 {
            Err((
                Fes::InvalidHeaderField,
                12,
                format!(
                    "MAXH2CDATA {} (it must be at least {MAXH2CDATA_MIN} and a multiple of 4)",
                    r.maxh2cdata.get()
                ),
            ))
        } else {
            Ok(())
        };
        if let Err((fes, fei, why)) = check {
            self.send_term_req(fes, fei, size_of::<IcResp>());
            return Err(self.fail(Error::IcResp {
                addr: self.addr,
                why,
            }));
        }
        let (h, d) = (
            r.dgst & pdu::DGST_HDGST_ENABLE != 0,
            r.dgst & pdu::DGST_DDGST_ENABLE != 0,
        );
        self.tx_neg = Negotiated {
            established: true,
            hdgst: h,
            ddgst: d,
            pda: r.cpda,
            plen_max: 0,
        };
        self.rx_neg = Negotiated {
            established: true,
            hdgst: h,
            ddgst: d,
            pda: 0,
            // C2HData goes straight to its command's buffer and is bounded by it.
            plen_max: u32::MAX,
        };
        self.maxh2cdata = r.maxh2cdata.get();
        Ok(())
    }

    /// Sends a Connect, its data in the capsule (whatever the queue's in-capsule size).
    pub(crate) fn send_connect(&mut self, sqe: Sqe, data: &[u8], tag: u64) -> Result<(), Error> {
        if self.free.is_empty() || self.dead.is_some() {
            return Err(self.dead_error());
        }
        self.enqueue(sqe, data.len() as u32, XferDir::HostToCtrl, tag, Some(data));
        Ok(())
    }

    /// Closes the socket (the queue pair is dead from then on).
    pub(crate) fn close(&mut self) {
        let _ = self.sock.shutdown(Shutdown::Both);
    }

    /// The socket's descriptor.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    pub(crate) fn dead_error(&self) -> Error {
        Error::Dead {
            addr: self.addr,
            why: self
                .dead
                .clone()
                .unwrap_or_else(|| "no command slot is free".into()),
        }
    }

    /// Marks the connection failed and closes the socket; returns `e`.
    pub(crate) fn fail(&mut self, e: Error) -> Error {
        if self.dead.is_none() {
            self.dead = Some(e.to_string());
        }
        let _ = self.sock.shutdown(Shutdown::Both);
        e
    }

    /// Slot of `cid`, if a command with that CID is outstanding.
    fn lookup(&self, cid: u16) -> Option<usize> {
        let mask = if self.idx_bits >= 16 {
            0xffff
        } else {
            (1u32 << self.idx_bits) as u16 - 1
        };
        let i = (cid & mask) as usize;
        let s = self.slots.get(i)?;
        (s.busy && s.cid == cid).then_some(i)
    }

    /// Takes a command moving `len` bytes (checked by the caller: [`super::host`]) and
    /// queues its PDU (sent by the next poll).
    pub(crate) fn submit(
        &mut self,
        sqe: Sqe,
        buf: Option<B>,
        len: u32,
        dir: XferDir,
        tag: u64,
    ) -> Result<(), SubmitError<B>> {
        let len = len as usize;
        if self.free.is_empty() {
            return Err(SubmitError::QueueFull(buf));
        }
        let inline = dir == XferDir::HostToCtrl && len > 0 && len as u32 <= self.in_capsule;
        let data = match (&buf, inline) {
            (Some(b), true) => Some(b.as_slice()),
            _ => None,
        };
        // The in-capsule bytes are copied from `buf` before it moves into the slot.
        let idx = self.enqueue(sqe, len as u32, dir, tag, data);
        self.slots[idx].buf = buf;
        // Sent by the next poll, with whatever else is submitted before it: one send
        // for a batch (as SPDK's sock layer flushes per poll). A large backlog goes now.
        if self.tx.len() - self.tx_head >= SEND_BATCH_MAX {
            if let Err(e) = self.flush() {
                let e = self.fail(e);
                self.pending = Some(e);
            }
        }
        Ok(())
    }

    /// Takes a free slot (the caller checked there is one), gives the command its CID
    /// and SGL, and appends its CapsuleCmd PDU, with `capsule` as in-capsule data, to
    /// the send buffer. Returns the slot.
    fn enqueue(
        &mut self,
        mut sqe: Sqe,
        len: u32,
        dir: XferDir,
        tag: u64,
        capsule: Option<&[u8]>,
    ) -> usize {
        let idx = self.free.pop().expect("the caller checked for a free slot") as usize;
        let s = &mut self.slots[idx];
        s.cid = next_cid(s.cid, self.idx_bits);
        s.busy = true;
        s.tag = tag;
        s.dir = dir;
        s.len = len;
        s.in_capsule = capsule.is_some();
        s.c2h_next = 0;
        s.r2t_next = 0;
        sqe.cid = U16::new(s.cid);
        let sgl = match capsule {
            Some(d) => {
                SglDescriptor::new(sgl_type::DATA_BLOCK, sgl_subtype::OFFSET, 0, d.len() as u32)
            }
            None => SglDescriptor::new(
                sgl_type::TRANSPORT_DATA_BLOCK,
                sgl_subtype::TRANSPORT,
                0,
                if dir == XferDir::None { 0 } else { len },
            ),
        };
        sqe.set_sgl(&sgl);
        let mut cmd = CapsuleCmd {
            ch: CommonHeader::default(),
            sqe,
        };
        let data = capsule.unwrap_or(&[]);
        // Framed apart: frame() pads relative to the start of the buffer it is given.
        self.scratch.clear();
        pdu::frame(
            &mut self.scratch,
            cmd.as_mut_bytes(),
            PduType::CapsuleCmd,
            0,
            &self.tx_neg,
            data.len(),
        );
        self.tx.extend_from_slice(&self.scratch);
        if !data.is_empty() {
            self.tx.extend_from_slice(data);
            if self.tx_neg.ddgst {
                self.tx.extend_from_slice(&pdu::crc32c(data).to_le_bytes());
            }
        }
        self.outstanding += 1;
        idx
    }

    /// A socket error as the error to report: a reset or broken pipe is the
    /// controller closing the connection.
    fn io_error(&self, source: io::Error) -> Error {
        match source.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => Error::Closed {
                addr: self.addr,
                outstanding: self.outstanding,
            },
            _ => Error::Io {
                addr: self.addr,
                source,
            },
        }
    }

    /// Sends what the socket takes without blocking.
    fn flush(&mut self) -> Result<(), Error> {
        while self.tx_head < self.tx.len() {
            match (&self.sock).write(&self.tx[self.tx_head..]) {
                Ok(0) => {
                    return Err(Error::Closed {
                        addr: self.addr,
                        outstanding: self.outstanding,
                    });
                }
                Ok(n) => self.tx_head += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
        if self.tx_head == self.tx.len() {
            self.tx.clear();
            self.tx_head = 0;
        } else if self.tx_head >= 64 * 1024 && self.tx_head * 2 >= self.tx.len() {
            self.tx.drain(..self.tx_head);
            self.tx_head = 0;
        }
        Ok(())
    }

    /// Waits (poll(2)) until the socket is readable, or writable while bytes wait to be
    /// sent, or `deadline` passes.
    pub(crate) fn wait_io(&self, deadline: Instant) -> Result<(), Error> {
        let now = Instant::now();
        if now >= deadline {
            return Ok(());
        }
        let ms = (deadline - now)
            .as_micros()
            .div_ceil(1000)
            .min(i32::MAX as u128) as i32;
        let mut events = libc::POLLIN;
        if self.tx_head < self.tx.len() {
            events |= libc::POLLOUT;
        }
        let mut pfd = libc::pollfd {
            fd: self.sock.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is a valid, initialized pollfd that lives across the call, and
        // the count passed is 1, so poll(2) reads and writes only that struct.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::Io {
                    addr: self.addr,
                    source: e,
                });
            }
        }
        Ok(())
    }

    /// Best effort: sends an H2CTermReq carrying the first `hdr_bytes` bytes of the
    /// offending header after what is already queued, for at most [`TERM_FLUSH`].
    fn send_term_req(&mut self, fes: Fes, fei: u32, hdr_bytes: usize) {
        let n = hdr_bytes.min(TERM_DATA_MAX);
        let mut t = TermReq {
            fes: U16::new(fes as u16),
            fei: U32::new(fei),
            ..Default::default()
        };
        self.scratch.clear();
        pdu::frame(
            &mut self.scratch,
            t.as_mut_bytes(),
            PduType::H2cTermReq,
            0,
            &self.tx_neg,
            n,
        );
        self.tx.extend_from_slice(&self.scratch);
        self.tx.extend_from_slice(&self.hdr[..n]);
        let deadline = Instant::now() + TERM_FLUSH;
        while self.tx_head < self.tx.len() && Instant::now() < deadline {
            if self.flush().is_err() || self.wait_io(deadline).is_err() {
                break;
            }
        }
    }

    /// A fatal protocol error: H2CTermReq, close, and the error to report.
    fn protocol(&mut self, fes: Fes, fei: u32, hdr_bytes: usize, what: String) -> Error {
        self.send_term_req(fes, fei, hdr_bytes);
        self.fail(Error::Protocol {
            addr: self.addr,
            what,
            fes,
        })
    }

    /// Sends and receives what the socket allows without blocking.
    fn poll_inner<F: FnMut(Completion<B>)>(
        &mut self,
        max: usize,
        f: &mut F,
        n: &mut usize,
    ) -> Result<(), Error> {
        let budget = if max == 0 { usize::MAX } else { max };
        self.flush()?;
        for _ in 0..FILLS_PER_POLL {
            *n += self.parse(budget - *n, f)?;
            if *n >= budget || self.rx_start < self.rx_end || !self.fill()? {
                break;
            }
        }
        // R2Ts met while parsing queued H2CData.
        self.flush()
    }

    /// Reads what the socket has into the (empty) staging buffer; false when nothing.
    fn fill(&mut self) -> Result<bool, Error> {
        debug_assert_eq!(self.rx_start, self.rx_end);
        self.rx_start = 0;
        self.rx_end = 0;
        let max = self.rx_read_max.clamp(1, self.rx.len());
        loop {
            match (&self.sock).read(&mut self.rx[..max]) {
                Ok(0) => {
                    return Err(Error::Closed {
                        addr: self.addr,
                        outstanding: self.outstanding,
                    });
                }
                Ok(n) => {
                    self.rx_end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    /// Parses staged bytes; returns the commands completed (at most `budget`).
    fn parse<F: FnMut(Completion<B>)>(&mut self, budget: usize, f: &mut F) -> Result<usize, Error> {
        let mut n = 0;
        while n < budget && self.rx_start < self.rx_end {
            if self.data.is_some() {
                n += self.parse_data(f)?;
                continue;
            }
            let take = (self.hdr_need - self.hdr_len).min(self.rx_end - self.rx_start);
            self.hdr[self.hdr_len..self.hdr_len + take]
                .copy_from_slice(&self.rx[self.rx_start..self.rx_start + take]);
            self.hdr_len += take;
            self.rx_start += take;
            if self.hdr_len < self.hdr_need {
                break;
            }
            if self.layout.is_none() {
                self.common_header()?;
                if self.hdr_len < self.hdr_need {
                    continue;
                }
            }
            n += self.header(f)?;
            if self.ic_resp.is_some() && !self.rx_neg.established {
                // Nothing after the ICResp can be parsed before it is applied.
                break;
            }
        }
        Ok(n)
    }

    /// A common header is staged: validates it and says how much header to stage.
    fn common_header(&mut self) -> Result<(), Error> {
        let ch = CommonHeader::read_from_bytes(&self.hdr[..CH_LEN]).expect("8 bytes");
        let l = match pdu::check_header(&ch, Receiver::Host, &self.rx_neg) {
            Ok(l) => l,
            Err(e) => {
                let what = format!(
                    "a PDU header that fails validation (type {:#04x}, flags {:#04x}, hlen {}, pdo {}, plen {}: {:?} at byte {})",
                    ch.pdu_type,
                    ch.flags,
                    ch.hlen,
                    ch.pdo,
                    ch.plen.get(),
                    e.fes,
                    e.fei
                );
                return Err(self.protocol(e.fes, e.fei, CH_LEN, what));
            }
        };
        if l.pdu_type == PduType::C2hData && l.data_len > 0 && self.rx_neg.ddgst && !l.ddgst {
            return Err(self.protocol(
                Fes::InvalidHeaderField,
                1,
                CH_LEN,
                "a C2HData PDU without the data digest the connection negotiated".into(),
            ));
        }
        let need = if l.pdu_type == PduType::C2hData && l.data_len > 0 {
            l.data_offset
        } else {
            l.plen
        };
        if need > HDR_MAX || need < l.hlen {
            return Err(self.protocol(
                Fes::InvalidHeaderField,
                4,
                CH_LEN,
                format!("a {:?} PDU of {} header bytes", l.pdu_type, need),
            ));
        }
        self.layout = Some(l);
        self.hdr_need = need;
        Ok(())
    }

    /// A PDU's header (and, but for C2HData, all of it) is staged: acts on it.
    fn header<F: FnMut(Completion<B>)>(&mut self, f: &mut F) -> Result<usize, Error> {
        let l = self
            .layout
            .take()
            .expect("layout set with the common header");
        self.hdr_len = 0;
        self.hdr_need = CH_LEN;
        if l.hdgst {
            let want = pdu::crc32c(&self.hdr[..l.hlen]);
            let got = u32::from_le_bytes(
                self.hdr[l.hlen..l.hlen + pdu::DIGEST_LEN]
                    .try_into()
                    .expect("4 bytes"),
            );
            if want != got {
                return Err(self.protocol(
                    Fes::HeaderDigestError,
                    0,
                    l.hlen,
                    format!(
                        "a {:?} PDU whose header digest is {got:#010x}, not {want:#010x}",
                        l.pdu_type
                    ),
                ));
            }
        }
        match l.pdu_type {
            PduType::IcResp => {
                self.ic_resp = Some(IcResp::read_from_bytes(&self.hdr[..l.hlen]).expect("128"));
                Ok(0)
            }
            PduType::C2hTermReq => {
                let t =
                    TermReq::read_from_bytes(&self.hdr[..size_of::<TermReq>()]).expect("24 bytes");
                Err(Error::TermReq {
                    addr: self.addr,
                    fes: t.fes.get(),
                    fei: t.fei.get(),
                })
            }
            PduType::CapsuleResp => {
                let cqe = Cqe::read_from_bytes(&self.hdr[CH_LEN..CH_LEN + 16]).expect("16");
                let cid = cqe.cid.get();
                let Some(i) = self.lookup(cid) else {
                    return Err(self.protocol(
                        Fes::InvalidHeaderField,
                        20,
                        l.hlen,
                        format!("a response for CID {cid:#06x}, which has no command outstanding"),
                    ));
                };
                self.complete(i, cqe, f);
                Ok(1)
            }
            PduType::C2hData => {
                self.c2h_data(&l)?;
                Ok(0)
            }
            PduType::R2t => {
                self.r2t(&l)?;
                Ok(0)
            }
            other => Err(self.protocol(
                Fes::InvalidHeaderField,
                0,
                l.hlen,
                format!("a {other:?} PDU, which a host never receives"),
            )),
        }
    }

    /// A C2HData header: checks it against its command and starts taking the data.
    fn c2h_data(&mut self, l: &PduLayout) -> Result<(), Error> {
        let h = DataHeader::read_from_bytes(&self.hdr[..l.hlen]).expect("24 bytes");
        let cid = h.cccid.get();
        let (datao, datal) = (h.datao.get(), h.datal.get());
        let bad = |fes, fei, what: String| Some((fes, fei, what));
        let mut err = None;
        let slot = self.lookup(cid);
        match slot.map(|i| &self.slots[i]) {
            None => {
                err = bad(
                    Fes::InvalidHeaderField,
                    8,
                    format!("C2HData for CID {cid:#06x}, which has no command outstanding"),
                )
            }
            Some(s) if s.dir != XferDir::CtrlToHost || s.len == 0 => {
                err = bad(
                    Fes::InvalidHeaderField,
                    8,
                    format!("C2HData for CID {cid:#06x}, which reads no data"),
                )
            }
            Some(_) if l.data_len == 0 || datal as usize != l.data_len => {
                err = bad(
                    Fes::InvalidHeaderField,
                    16,
                    format!(
                        "C2HData with DATAL {datal} but {} bytes of data in the PDU",
                        l.data_len
                    ),
                )
            }
            Some(s) if datao as u64 + datal as u64 > s.len as u64 => {
                err = bad(
                    Fes::DataTransferOutOfRange,
                    16,
                    format!(
                        "C2HData for bytes {datao}..{} of a command that reads {}",
                        datao as u64 + datal as u64,
                        s.len
                    ),
                )
            }
            Some(s) if datao != s.c2h_next => {
                err = bad(
                    Fes::DataTransferOutOfRange,
                    12,
                    format!(
                        "C2HData at offset {datao} where {} was due (data comes in order)",
                        s.c2h_next
                    ),
                )
            }
            Some(_) if l.flags & pdu::FLAG_SUCCESS != 0 && l.flags & pdu::FLAG_LAST_PDU == 0 => {
                err = bad(
                    Fes::InvalidHeaderField,
                    1,
                    "C2HData with the SUCCESS flag but not LAST_PDU".into(),
                )
            }
            Some(_) => {}
        }
        if let Some((fes, fei, what)) = err {
            return Err(self.protocol(fes, fei, l.hlen, what));
        }
        self.data = Some(DataRx {
            slot: slot.expect("checked"),
            pos: datao as usize,
            end: datao as usize + datal as usize,
            crc: 0,
            digest: l.ddgst,
            dgst: [0; 4],
            dgst_len: 0,
            success: l.flags & pdu::FLAG_SUCCESS != 0,
            hlen: l.hlen,
            dgst_off: (l.plen - pdu::DIGEST_LEN) as u32,
        });
        Ok(())
    }

    /// Takes staged C2HData bytes into the command's buffer; at the end of the PDU,
    /// checks the digest and completes the command on SUCCESS.
    fn parse_data<F: FnMut(Completion<B>)>(&mut self, f: &mut F) -> Result<usize, Error> {
        let mut d = self.data.expect("in a data phase");
        if d.pos < d.end {
            let take = (d.end - d.pos).min(self.rx_end - self.rx_start);
            let src = &self.rx[self.rx_start..self.rx_start + take];
            let dst = self.slots[d.slot]
                .buf
                .as_mut()
                .and_then(|b| b.as_mut_slice().get_mut(d.pos..d.pos + take));
            let Some(dst) = dst else {
                self.data = None;
                return Err(self.fail(Error::InvalidArgument(
                    "a read buffer changed its length while its command ran".into(),
                )));
            };
            dst.copy_from_slice(src);
            if d.digest {
                d.crc = pdu::crc32c_append(d.crc, src);
            }
            d.pos += take;
            self.rx_start += take;
        }
        if d.pos == d.end && d.digest && d.dgst_len < pdu::DIGEST_LEN {
            let take = (pdu::DIGEST_LEN - d.dgst_len).min(self.rx_end - self.rx_start);
            d.dgst[d.dgst_len..d.dgst_len + take]
                .copy_from_slice(&self.rx[self.rx_start..self.rx_start + take]);
            d.dgst_len += take;
            self.rx_start += take;
        }
        if d.pos < d.end || (d.digest && d.dgst_len < pdu::DIGEST_LEN) {
            self.data = Some(d);
            return Ok(0);
        }
        self.data = None;
        let cid = self.slots[d.slot].cid;
        if d.digest && u32::from_le_bytes(d.dgst) != d.crc {
            return Err(self.protocol(
                Fes::HeaderDigestError,
                d.dgst_off,
                d.hlen,
                format!(
                    "C2HData for CID {cid:#06x} whose data digest is {:#010x}, not {:#010x}",
                    u32::from_le_bytes(d.dgst),
                    d.crc
                ),
            ));
        }
        let s = &mut self.slots[d.slot];
        s.c2h_next = d.end as u32;
        if !d.success {
            return Ok(0);
        }
        // SUCCESS: no response capsule follows. Data short of the command's length is
        // a failed transfer, not a success.
        let status = if s.c2h_next == s.len {
            Status::SUCCESS
        } else {
            Status::DATA_TRANSFER_ERROR
        };
        let mut cqe = Cqe {
            sqid: U16::new(self.qid),
            cid: U16::new(cid),
            ..Default::default()
        };
        cqe.set_status(status);
        self.complete(d.slot, cqe, f);
        Ok(1)
    }

    /// An R2T: checks it and queues the H2CData PDUs that answer it.
    fn r2t(&mut self, l: &PduLayout) -> Result<(), Error> {
        let r = R2t::read_from_bytes(&self.hdr[..l.hlen]).expect("24 bytes");
        let cid = r.cccid.get();
        let (r2to, r2tl) = (r.r2to.get(), r.r2tl.get());
        let slot = self.lookup(cid);
        let err = match slot.map(|i| &self.slots[i]) {
            None => Some((
                Fes::InvalidHeaderField,
                8,
                format!("an R2T for CID {cid:#06x}, which has no command outstanding"),
            )),
            Some(s) if s.dir != XferDir::HostToCtrl || s.in_capsule || s.len == 0 => Some((
                Fes::InvalidHeaderField,
                8,
                format!("an R2T for CID {cid:#06x}, which has no data waiting for one"),
            )),
            Some(_) if r2tl == 0 => {
                Some((Fes::InvalidHeaderField, 16, "an R2T for 0 bytes".into()))
            }
            Some(s) if r2to as u64 + r2tl as u64 > s.len as u64 => Some((
                Fes::DataTransferOutOfRange,
                16,
                format!(
                    "an R2T for bytes {r2to}..{} of a command that writes {}",
                    r2to as u64 + r2tl as u64,
                    s.len
                ),
            )),
            Some(s) if r2to != s.r2t_next => Some((
                Fes::InvalidHeaderField,
                12,
                format!(
                    "an R2T at offset {r2to} where {} was due (R2Ts come in order)",
                    s.r2t_next
                ),
            )),
            Some(_) => None,
        };
        if let Some((fes, fei, what)) = err {
            return Err(self.protocol(fes, fei, l.hlen, what));
        }
        let i = slot.expect("checked");
        let Some(data) = self.slots[i]
            .buf
            .as_ref()
            .and_then(|b| b.as_slice().get(r2to as usize..(r2to + r2tl) as usize))
        else {
            return Err(self.fail(Error::InvalidArgument(
                "a write buffer changed its length while its command ran".into(),
            )));
        };
        let mut off = 0usize;
        while off < data.len() {
            let chunk = (data.len() - off).min(self.maxh2cdata as usize);
            let last = off + chunk == data.len();
            let mut h = DataHeader {
                cccid: U16::new(cid),
                ttag: r.ttag,
                datao: U32::new(r2to + off as u32),
                datal: U32::new(chunk as u32),
                ..Default::default()
            };
            self.scratch.clear();
            pdu::frame(
                &mut self.scratch,
                h.as_mut_bytes(),
                PduType::H2cData,
                if last { pdu::FLAG_LAST_PDU } else { 0 },
                &self.tx_neg,
                chunk,
            );
            self.tx.extend_from_slice(&self.scratch);
            let part = &data[off..off + chunk];
            self.tx.extend_from_slice(part);
            if self.tx_neg.ddgst {
                self.tx.extend_from_slice(&pdu::crc32c(part).to_le_bytes());
            }
            off += chunk;
        }
        self.slots[i].r2t_next = r2to + r2tl;
        Ok(())
    }

    /// Frees slot `i` and hands its command's completion to `f`.
    fn complete<F: FnMut(Completion<B>)>(&mut self, i: usize, cqe: Cqe, f: &mut F) {
        let s = &mut self.slots[i];
        s.busy = false;
        let c = Completion {
            tag: s.tag,
            cqe,
            buf: s.buf.take(),
        };
        self.free.push(i as u16);
        self.outstanding -= 1;
        f(c);
    }

    /// Fails every outstanding command with [`STATUS_ABORTED_BY_HOST`], handing the
    /// buffers to `f`. Closes the connection first if it still works.
    pub(crate) fn drain<F: FnMut(Completion<B>)>(&mut self, f: &mut F) -> usize {
        if self.dead.is_none() {
            self.dead = Some("the host drained the queue pair".into());
            let _ = self.sock.shutdown(Shutdown::Both);
        }
        self.data = None;
        let mut n = 0;
        for i in 0..self.slots.len() {
            if self.slots[i].busy {
                let mut cqe = Cqe {
                    sqid: U16::new(self.qid),
                    cid: U16::new(self.slots[i].cid),
                    ..Default::default()
                };
                cqe.set_status(STATUS_ABORTED_BY_HOST);
                self.complete(i, cqe, f);
                n += 1;
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

    fn progress<F: FnMut(Completion<B>)>(
        &mut self,
        max: usize,
        f: &mut F,
        n: &mut usize,
    ) -> Result<(), Error> {
        self.poll_inner(max, f, n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AdminQueue, FabricQpair};
    use super::*;
    use crate::spec::admin::GetLogPageDw;
    use crate::spec::admin::{IdentifyDw, admin_opc, cns, feature, log_id, nvm_opc};
    use crate::spec::fabrics::{
        ConnectData, ConnectFields, FabricsCmd, OPC_FABRICS, PropertyFields, fctype, validate_nqn,
    };
    use crate::spec::identify::IDENTIFY_LEN;
    use crate::spec::identify::{IdentifyController, IdentifyNamespace, NsList};
    use crate::spec::log::{DiscoveryLogEntry, DiscoveryLogHeader};
    use crate::spec::regs::{Cap, Cc, Csts, offset};
    use crate::spec::tcp::CapsuleResp;
    use std::net::TcpListener;
    use std::thread::JoinHandle;
    use zerocopy::little_endian::U64;

    const SUBNQN: &str = "nqn.2016-06.io.pollux:test";

    /// A scripted controller end of one connection, for tests: blocking socket, the
    /// shared codec to frame and to check what the host sends.
    struct Fake {
        s: TcpStream,
        /// What the fake sends: digests (HPDA 0 as the host asked).
        tx: Negotiated,
        /// What it receives: digests and the CPDA it announced.
        rx: Negotiated,
    }

    /// A PDU the host sent, checked (header and data digests verified).
    struct Got {
        l: PduLayout,
        bytes: Vec<u8>,
    }

    impl Got {
        fn data(&self) -> &[u8] {
            &self.bytes[self.l.data_offset..self.l.data_offset + self.l.data_len]
        }
        fn sqe(&self) -> Sqe {
            assert_eq!(self.l.pdu_type, PduType::CapsuleCmd);
            Sqe::read_from_bytes(&self.bytes[8..72]).unwrap()
        }
        fn data_header(&self) -> DataHeader {
            DataHeader::read_from_bytes(&self.bytes[..24]).unwrap()
        }
    }

    fn ic_resp(dgst: u8, cpda: u8, maxh2cdata: u32) -> IcResp {
        let mut r = IcResp::new_zeroed();
        r.dgst = dgst;
        r.cpda = cpda;
        r.maxh2cdata = U32::new(maxh2cdata);
        r
    }

    impl Fake {
        fn new(s: TcpStream) -> Fake {
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Fake {
                s,
                tx: Negotiated::default(),
                rx: Negotiated::default(),
            }
        }

        /// Reads one PDU, or `None` at EOF.
        fn recv_opt(&mut self) -> Option<Got> {
            let mut bytes = vec![0u8; CH_LEN];
            match self.s.read_exact(&mut bytes) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return None,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("fake controller read: {e}"),
            }
            let ch = CommonHeader::read_from_bytes(&bytes).unwrap();
            let l = pdu::check_header(&ch, Receiver::Controller, &self.rx)
                .unwrap_or_else(|e| panic!("host sent a bad header {ch:?}: {e}"));
            bytes.resize(l.plen, 0);
            self.s.read_exact(&mut bytes[CH_LEN..]).unwrap();
            if l.hdgst {
                let got = u32::from_le_bytes(bytes[l.hlen..l.hlen + 4].try_into().unwrap());
                assert_eq!(got, pdu::crc32c(&bytes[..l.hlen]), "header digest");
            }
            if l.ddgst {
                let d = &bytes[l.data_offset..l.data_offset + l.data_len];
                let got = u32::from_le_bytes(bytes[l.plen - 4..].try_into().unwrap());
                assert_eq!(got, pdu::crc32c(d), "data digest");
            }
            if self.rx.ddgst && l.data_len > 0 && l.pdu_type.has_digests() {
                assert!(l.ddgst, "data without the negotiated digest");
            }
            Some(Got { l, bytes })
        }

        fn recv(&mut self) -> Got {
            self.recv_opt().expect("the host closed the connection")
        }

        /// Answers the ICReq with `resp`; returns the ICReq.
        fn ic(&mut self, mut resp: IcResp) -> IcReq {
            let g = self.recv();
            assert_eq!(g.l.pdu_type, PduType::IcReq);
            let req = IcReq::read_from_bytes(&g.bytes).unwrap();
            let mut out = Vec::new();
            pdu::frame(
                &mut out,
                resp.as_mut_bytes(),
                PduType::IcResp,
                0,
                &self.tx,
                0,
            );
            self.s.write_all(&out).unwrap();
            let (h, d) = (resp.dgst & 1 != 0, resp.dgst & 2 != 0);
            self.tx = Negotiated {
                established: true,
                hdgst: h,
                ddgst: d,
                pda: 0,
                plen_max: 0,
            };
            self.rx = Negotiated {
                established: true,
                hdgst: h,
                ddgst: d,
                pda: resp.cpda,
                plen_max: 1 << 24,
            };
            req
        }

        /// A framed PDU with `data` (and its digest when negotiated).
        fn pdu(&self, ty: PduType, header: &mut [u8], flags: u8, data: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            pdu::frame(&mut out, header, ty, flags, &self.tx, data.len());
            out.extend_from_slice(data);
            if self.tx.ddgst && !data.is_empty() {
                out.extend_from_slice(&pdu::crc32c(data).to_le_bytes());
            }
            out
        }

        fn resp_bytes(&self, cid: u16, status: Status, dw0: u32) -> Vec<u8> {
            let mut r = CapsuleResp::default();
            r.cqe.cid = U16::new(cid);
            r.cqe.dw0 = U32::new(dw0);
            r.cqe.set_status(status);
            self.pdu(PduType::CapsuleResp, r.as_mut_bytes(), 0, &[])
        }

        fn c2h_bytes(&self, cid: u16, datao: u32, data: &[u8], flags: u8) -> Vec<u8> {
            let mut h = DataHeader {
                cccid: U16::new(cid),
                datao: U32::new(datao),
                datal: U32::new(data.len() as u32),
                ..Default::default()
            };
            self.pdu(PduType::C2hData, h.as_mut_bytes(), flags, data)
        }

        fn r2t_bytes(&self, cid: u16, ttag: u16, r2to: u32, r2tl: u32) -> Vec<u8> {
            let mut r = R2t {
                cccid: U16::new(cid),
                ttag: U16::new(ttag),
                r2to: U32::new(r2to),
                r2tl: U32::new(r2tl),
                ..Default::default()
            };
            self.pdu(PduType::R2t, r.as_mut_bytes(), 0, &[])
        }

        fn send(&mut self, bytes: &[u8]) {
            self.s.write_all(bytes).unwrap();
        }

        /// Takes the Connect and accepts it as controller `cntlid`; returns its SQE and
        /// data.
        fn connect(&mut self, cntlid: u16) -> (Sqe, ConnectData) {
            let g = self.recv();
            let sqe = g.sqe();
            assert_eq!((sqe.opc, sqe.fctype()), (OPC_FABRICS, fctype::CONNECT));
            let sgl = sqe.sgl();
            assert_eq!(
                (sgl.ty(), sgl.subtype(), sgl.len.get()),
                (sgl_type::DATA_BLOCK, sgl_subtype::OFFSET, 1024)
            );
            let d = ConnectData::read_from_bytes(g.data()).unwrap();
            let r = self.resp_bytes(sqe.cid.get(), Status::SUCCESS, cntlid as u32);
            self.send(&r);
            (sqe, d)
        }
    }

    /// A listener and a fake controller thread running `script` on the first
    /// connection.
    fn serve<T: Send + 'static>(
        script: impl FnOnce(Fake) -> T + Send + 'static,
    ) -> (SocketAddr, JoinHandle<T>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            script(Fake::new(s))
        });
        (addr, h)
    }

    fn opts(addr: SocketAddr) -> FabricOptions {
        let mut o = FabricOptions::new(addr, SUBNQN);
        o.timeout = Duration::from_secs(10);
        o
    }

    /// An I/O queue pair on a fake controller (qid 1, depth 8, `in_capsule` bytes).
    fn qpair(o: &FabricOptions, in_capsule: u32) -> FabricQpair<Vec<u8>> {
        FabricQpair::connect(o, 1, 8, 5, in_capsule, 0).unwrap()
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn wait_all(qp: &mut FabricQpair<Vec<u8>>) -> Vec<Completion<Vec<u8>>> {
        let mut done = Vec::new();
        qp.wait(Duration::from_secs(10), |c| done.push(c)).unwrap();
        assert_eq!(qp.outstanding(), 0, "timed out");
        done
    }

    #[test]
    fn icreq_asks_and_a_good_icresp_connects() {
        let (addr, h) = serve(|mut f| {
            let req = f.ic(ic_resp(pdu::DGST_HDGST_ENABLE, 0, 8192));
            let (sqe, d) = f.connect(5);
            (req, sqe, d)
        });
        let mut o = opts(addr);
        o.hdgst = true;
        let mut qp = qpair(&o, 0);
        let (req, sqe, d) = h.join().unwrap();
        assert_eq!(req.pfv.get(), 0);
        assert_eq!(req.hpda, 0);
        assert_eq!(req.maxr2t.get(), 0, "one R2T per command");
        assert_eq!(req.dgst, pdu::DGST_HDGST_ENABLE);
        let c = ConnectFields::read_from_bytes(&FabricsCmd::from_sqe(&sqe).specific).unwrap();
        assert_eq!((c.qid.get(), c.sqsize.get(), c.kato.get()), (1, 7, 0));
        assert_eq!(d.cntlid.get(), 5);
        assert_eq!(d.hostid, o.hostid);
        assert_eq!(
            crate::spec::fabrics::nqn_str(&d.subnqn),
            Some(SUBNQN),
            "subnqn"
        );
        assert_eq!(
            crate::spec::fabrics::nqn_str(&d.hostnqn),
            Some(o.hostnqn.as_str())
        );
        assert!(o.hostnqn.starts_with("nqn.2014-08.org.nvmexpress:uuid:"));
        validate_nqn(&o.hostnqn).unwrap();
        assert_eq!(qp.depth(), 8);
        assert_eq!(qp.tcp_mut().maxh2cdata, 8192);
        assert!(qp.tcp_mut().tx_neg.hdgst && !qp.tcp_mut().tx_neg.ddgst);
    }

    #[test]
    fn unusable_icresps_are_refused_with_a_term_req() {
        for (resp, needle, fes, fei) in [
            (
                {
                    let mut r = ic_resp(0, 0, 8192);
                    r.pfv = U16::new(1);
                    r
                },
                "PDU format version 1",
                Fes::UnsupportedParameter,
                8,
            ),
            (
                ic_resp(0, 0, 1000),
                "MAXH2CDATA 1000",
                Fes::InvalidHeaderField,
                12,
            ),
            (
                ic_resp(0, 0, 4098),
                "MAXH2CDATA 4098",
                Fes::InvalidHeaderField,
                12,
            ),
            (ic_resp(0, 32, 8192), "CPDA 32", Fes::InvalidHeaderField, 10),
            (
                ic_resp(pdu::DGST_DDGST_ENABLE, 0, 8192),
                "not asked for",
                Fes::InvalidHeaderField,
                11,
            ),
        ] {
            let (addr, h) = serve(move |mut f| {
                f.ic(resp);
                // The host's H2CTermReq, then EOF.
                f.rx.established = false;
                let mut b = vec![0u8; 24];
                f.s.read_exact(&mut b).unwrap();
                let t = TermReq::read_from_bytes(&b).unwrap();
                let mut rest = Vec::new();
                f.s.read_to_end(&mut rest).unwrap();
                (t, rest.len())
            });
            let e = FabricQpair::<Vec<u8>>::connect(&opts(addr), 1, 8, 5, 0, 0).unwrap_err();
            assert!(matches!(e, Error::IcResp { .. }), "{e:?}");
            assert!(e.to_string().contains(needle), "{e}");
            let (t, data) = h.join().unwrap();
            assert_eq!(t.ch.pdu_type, PduType::H2cTermReq as u8);
            assert_eq!((t.fes.get(), t.fei.get()), (fes as u16, fei), "{needle}");
            assert_eq!(t.ch.plen.get() as usize, 24 + data);
            assert_eq!(data, 128, "the ICResp header rides along");
        }
    }

    #[test]
    fn a_refused_connect_says_why() {
        let (addr, h) = serve(|mut f| {
            f.ic(ic_resp(0, 0, 8192));
            let sqe = f.recv().sqe();
            let r = f.resp_bytes(sqe.cid.get(), Status::CONNECT_INVALID_HOST, 0);
            f.send(&r);
        });
        let e = FabricQpair::<Vec<u8>>::connect(&opts(addr), 1, 8, 5, 0, 0).unwrap_err();
        h.join().unwrap();
        assert_eq!(
            e.to_string(),
            "Connect failed: status sct=1 sc=0x84 (host not allowed by the subsystem)"
        );
        // Nothing listens any more.
        let e = FabricQpair::<Vec<u8>>::connect(&opts(addr), 1, 8, 5, 0, 0).unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e:?}");
        assert!(e.to_string().contains("is polluxd listening?"));
    }

    #[test]
    fn a_read_completes_with_c2h_data_success() {
        let (addr, h) = serve(|mut f| {
            f.ic(ic_resp(0, 0, 8192));
            f.connect(5);
            let g = f.recv();
            let sqe = g.sqe();
            assert_eq!(g.l.data_len, 0);
            let sgl = sqe.sgl();
            assert_eq!(sqe.bytes_sgl_id(), 0x5a, "transport data block");
            assert_eq!(sgl.len.get(), 4096);
            assert_eq!((sqe.opc, sqe.nsid.get()), (nvm_opc::READ, 1));
            assert_eq!((sqe.cdw10.get(), sqe.cdw11.get()), (0x89ab_cdef, 0x1));
            assert_eq!(sqe.cdw12.get(), 7, "0's based block count");
            let c2h = f.c2h_bytes(
                sqe.cid.get(),
                0,
                &pattern(4096, 1),
                pdu::FLAG_LAST_PDU | pdu::FLAG_SUCCESS,
            );
            f.send(&c2h);
            sqe.cid.get()
        });
        let mut qp = qpair(&opts(addr), 0);
        qp.read(1, 0x1_89ab_cdef, 8, vec![0; 4096], 42).unwrap();
        assert_eq!(qp.outstanding(), 1);
        let done = wait_all(&mut qp);
        let cid = h.join().unwrap();
        assert_eq!(done.len(), 1);
        let c = &done[0];
        assert_eq!(c.tag, 42);
        assert!(c.cqe.status().is_success());
        assert_eq!((c.cqe.cid.get(), c.cqe.sqid.get()), (cid, 1));
        assert_eq!(c.buf.as_deref(), Some(&pattern(4096, 1)[..]));
    }

    trait SglId {
        fn bytes_sgl_id(&self) -> u8;
    }

    impl SglId for Sqe {
        fn bytes_sgl_id(&self) -> u8 {
            assert_eq!(self.flags >> 6, 0b01, "PSDT: SGL");
            self.sgl().id
        }
    }

    #[test]
    fn pdus_split_into_single_bytes_still_parse() {
        let (addr, h) = serve(|mut f| {
            f.ic(ic_resp(0, 0, 8192));
            f.connect(5);
            let read = f.recv().sqe();
            let flush = f.recv().sqe();
            assert_eq!(flush.opc, nvm_opc::FLUSH);
            assert_eq!(flush.bytes_sgl_id(), 0x5a);
            assert_eq!(flush.sgl().len.get(), 0, "no data");
            let data = pattern(3000, 9);
            let mut all = f.c2h_bytes(read.cid.get(), 0, &data[..1000], 0);
            all.extend(f.resp_bytes(flush.cid.get(), Status::SUCCESS, 0));
            all.extend(f.c2h_bytes(read.cid.get(), 1000, &data[1000..], pdu::FLAG_LAST_PDU));
            all.extend(f.resp_bytes(read.cid.get(), Status::SUCCESS, 0));
            for b in all {
                f.send(&[b]);
            }
        });
        let mut qp = qpair(&opts(addr), 0);
        qp.tcp_mut().rx_read_max = 1;
        qp.read(1, 0, 6, vec![0; 3000], 1).unwrap();
        qp.flush(1, 2).unwrap();
        let done = wait_all(&mut qp);
        h.join().unwrap();
        let tags: Vec<u64> = done.iter().map(|c| c.tag).collect();
        assert_eq!(tags, [2, 1], "completions in the order they came");
        assert!(done.iter().all(|c| c.cqe.status().is_success()));
        assert_eq!(done[1].buf.as_deref(), Some(&pattern(3000, 9)[..]));
        assert_eq!(done[0].buf, None);
    }

    /// H2CData PDUs seen: (DATAO, DATAL, TTAG, FLAGS).
    type H2cSeen = Vec<(u32, u32, u16, u8)>;

    /// Serves a write of `len` bytes through R2Ts of `r2ts` (offset, length) each;
    /// returns the H2CData headers and the data received.
    fn take_r2t_write(f: &mut Fake, len: u32, r2ts: &[(u32, u32)]) -> (H2cSeen, Vec<u8>) {
        let g = f.recv();
        let sqe = g.sqe();
        assert_eq!(g.l.data_len, 0, "no in-capsule data");
        assert_eq!(sqe.bytes_sgl_id(), 0x5a);
        assert_eq!(sqe.sgl().len.get(), len);
        let cid = sqe.cid.get();
        let mut headers = Vec::new();
        let mut data = vec![0u8; len as usize];
        for (k, &(o, l)) in r2ts.iter().enumerate() {
            let ttag = 100 + k as u16;
            let r = f.r2t_bytes(cid, ttag, o, l);
            f.send(&r);
            let mut got = 0;
            while got < l {
                let p = f.recv();
                assert_eq!(p.l.pdu_type, PduType::H2cData);
                let h = p.data_header();
                assert_eq!(h.cccid.get(), cid);
                assert_eq!(h.datal.get() as usize, p.l.data_len);
                let at = h.datao.get() as usize;
                data[at..at + p.l.data_len].copy_from_slice(p.data());
                got += h.datal.get();
                headers.push((h.datao.get(), h.datal.get(), h.ttag.get(), p.l.flags));
            }
        }
        let r = f.resp_bytes(cid, Status::SUCCESS, 0);
        f.send(&r);
        (headers, data)
    }

    #[test]
    fn a_write_follows_r2ts_in_h2c_data_of_at_most_maxh2cdata() {
        let (addr, h) = serve(|mut f| {
            f.ic(ic_resp(0, 0, 4096));
            f.connect(5);
            // Small: in the capsule.
            let g = f.recv();
            let sqe = g.sqe();
            assert_eq!(sqe.opc, nvm_opc::WRITE);
            assert_eq!(sqe.bytes_sgl_id(), 0x01, "data block, offset");
            assert_eq!(sqe.sgl().len.get(), 512);
            assert_eq!(sqe.sgl().addr.get(), 0);
            assert_eq!(g.data(), &pattern(512, 3)[..]);
            let r = f.resp_bytes(sqe.cid.get(), Status::SUCCESS, 0);
            f.send(&r);
            take_r2t_write(&mut f, 10_000, &[(0, 6000), (6000, 4000)])
        });
        let mut qp = qpair(&opts(addr), 4096);
        qp.write(1, 0, 1, pattern(512, 3), 1).unwrap();
        assert_eq!(wait_all(&mut qp).len(), 1);
        qp.write(1, 8, 20, pattern(10_000, 4), 2).unwrap();
        let done = wait_all(&mut qp);
        assert_eq!(done[0].tag, 2);
        assert_eq!(done[0].buf.as_deref(), Some(&pattern(10_000, 4)[..]));
        let (headers, data) = h.join().unwrap();
        let last = pdu::FLAG_LAST_PDU;
        assert_eq!(
            headers,
            [
                (0, 4096, 100, 0),
                (4096, 1904, 100, last),
                (6000, 4000, 101, last)
            ]
        );
        assert_eq!(data, pattern(10_000, 4));
    }

    #[test]
    fn digests_are_sent_right_and_checked() {
        let (addr, h) = serve(|mut f| {
            // Both digests, and CPDA 3: the host pads its data to 16 bytes.
            f.ic(ic_resp(3, 3, 4096));
            f.connect(5);
            let g = f.recv();
            assert!(g.l.hdgst && g.l.ddgst);
            assert_eq!(g.l.data_offset, 80, "72 + 4 rounded up to 16");
            assert_eq!(g.data(), &pattern(600, 5)[..]);
            let r = f.resp_bytes(g.sqe().cid.get(), Status::SUCCESS, 0);
            f.send(&r);
            let (headers, data) = take_r2t_write(&mut f, 5000, &[(0, 5000)]);
            assert_eq!(headers.len(), 2);
            assert!(headers.iter().all(|h| h.3 & pdu::FLAG_DDGSTF != 0));
            assert_eq!(data, pattern(5000, 6));
            let read = f.recv().sqe();
            let mut b = f.c2h_bytes(read.cid.get(), 0, &pattern(1000, 7), pdu::FLAG_LAST_PDU);
            b.extend(f.resp_bytes(read.cid.get(), Status::SUCCESS, 0));
            f.send(&b);
        });
        let mut o = opts(addr);
        o.hdgst = true;
        o.ddgst = true;
        let mut qp = qpair(&o, 4096);
        qp.write(1, 0, 1, pattern(600, 5), 1).unwrap();
        qp.write(1, 0, 10, pattern(5000, 6), 2).unwrap();
        let mut done = wait_all(&mut qp);
        qp.read(1, 0, 2, vec![0; 1000], 3).unwrap();
        done.extend(wait_all(&mut qp));
        h.join().unwrap();
        assert!(done.iter().all(|c| c.cqe.status().is_success()));
        let read = done.iter().find(|c| c.tag == 3).unwrap();
        assert_eq!(read.buf.as_deref(), Some(&pattern(1000, 7)[..]));
    }

    #[test]
    fn a_bad_data_digest_kills_the_qpair_and_buffers_come_back() {
        let (addr, h) = serve(|mut f| {
            f.ic(ic_resp(pdu::DGST_DDGST_ENABLE, 0, 4096));
            f.connect(5);
            let a = f.recv().sqe();
            let _b = f.recv().sqe();
            let mut c2h = f.c2h_bytes(a.cid.get(), 0, &pattern(512, 1), pdu::FLAG_LAST_PDU);
            let n = c2h.len();
            c2h[n - 1] ^= 0xff;
            f.send(&c2h);
            // The H2CTermReq, then EOF.
            let t = f.recv();
            assert!(f.recv_opt().is_none());
            t
        });
        let mut o = opts(addr);
        o.ddgst = true;
        let mut qp = qpair(&o, 0);
        qp.read(1, 0, 1, vec![0; 512], 10).unwrap();
        qp.read(1, 1, 2, vec![0; 1024], 11).unwrap();
        let e = qp
            .wait(Duration::from_secs(10), |_| panic!("no completion"))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::Protocol {
                    fes: Fes::HeaderDigestError,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("data digest"), "{e}");
        let t = h.join().unwrap();
        assert_eq!(t.l.pdu_type, PduType::H2cTermReq);
        let tr = TermReq::read_from_bytes(&t.bytes[..24]).unwrap();
        assert_eq!(tr.fes.get(), Fes::HeaderDigestError as u16);
        assert_eq!(
            &t.bytes[24..26],
            &[
                PduType::C2hData as u8,
                pdu::FLAG_LAST_PDU | pdu::FLAG_DDGSTF
            ]
        );
        assert!(qp.is_dead());
        // The qpair is dead: every buffer comes back, aborted.
        let mut back = Vec::new();
        assert_eq!(qp.drain_failed(|c| back.push(c)), 2);
        back.sort_by_key(|c| c.tag);
        assert_eq!(back.iter().map(|c| c.tag).collect::<Vec<_>>(), [10, 11]);
        assert!(
            back.iter()
                .all(|c| c.cqe.status() == STATUS_ABORTED_BY_HOST)
        );
        assert_eq!(back[1].buf.as_ref().map(Vec::len), Some(1024));
        assert_eq!(qp.outstanding(), 0);
        assert!(matches!(qp.poll(0, |_| {}), Err(Error::Dead { .. })));
        match qp.read(1, 0, 1, vec![1; 512], 12) {
            Err(SubmitError::Dead(Some(b))) => assert_eq!(b.len(), 512),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_pdus_end_the_connection() {
        // Each case: what the fake sends for an outstanding 4 KiB read with CID `cid`.
        type Case = fn(&Fake, u16) -> Vec<u8>;
        let cases: [(Case, &str, Fes); 5] = [
            (
                |f, cid| f.c2h_bytes(cid, 4000, &[0; 200], pdu::FLAG_LAST_PDU),
                "of a command that reads 4096",
                Fes::DataTransferOutOfRange,
            ),
            (
                |f, cid| f.c2h_bytes(cid, 100, &[0; 100], 0),
                "in order",
                Fes::DataTransferOutOfRange,
            ),
            (
                |f, cid| f.resp_bytes(cid ^ 0x4000, Status::SUCCESS, 0),
                "no command outstanding",
                Fes::InvalidHeaderField,
            ),
            (
                |f, cid| f.c2h_bytes(cid, 0, &[0; 100], pdu::FLAG_SUCCESS),
                "SUCCESS flag but not LAST_PDU",
                Fes::InvalidHeaderField,
            ),
            (
                |f, cid| f.r2t_bytes(cid, 1, 0, 4096),
                "no data waiting",
                Fes::InvalidHeaderField,
            ),
        ];
        for (make, needle, fes) in cases {
            let (addr, h) = serve(move |mut f| {
                f.ic(ic_resp(0, 0, 4096));
                f.connect(5);
                let cid = f.recv().sqe().cid.get();
                let b = make(&f, cid);
                f.send(&b);
                let t = f.recv();
                TermReq::read_from_bytes(&t.bytes[..24]).unwrap().fes.get()
            });
            let mut qp = qpair(&opts(addr), 0);
            qp.read(1, 0, 8, vec![0; 4096], 1).unwrap();
            let e = qp.wait(Duration::from_secs(10), |_| {}).unwrap_err();
            assert!(e.to_string().contains(needle), "{needle}: {e}");
            assert_eq!(h.join().unwrap(), fes as u16, "{needle}");
            assert_eq!(qp.drain_failed(|_| {}), 1);
        }
    }

    #[test]
    fn a_term_req_from_the_controller_is_reported() {
        let (addr, h) = serve(|mut f| {
            f.ic(ic_resp(0, 0, 4096));
            f.connect(5);
            let _ = f.recv();
            let mut t = TermReq {
                fes: U16::new(Fes::PduSequenceError as u16),
                fei: U32::new(0),
                ..Default::default()
            };
            let b = f.pdu(PduType::C2hTermReq, t.as_mut_bytes(), 0, &[]);
            f.send(&b);
        });
        let mut qp = qpair(&opts(addr), 0);
        qp.flush(1, 1).unwrap();
        let e = qp.wait(Duration::from_secs(10), |_| {}).unwrap_err();
        h.join().unwrap();
        assert!(e.to_string().contains("PDU sequence error"), "{e}");
        let mut n = 0;
        qp.drain_failed(|c| {
            assert_eq!(c.tag, 1);
            n += 1;
        });
        assert_eq!(n, 1);
    }

    #[test]
    fn queue_full_hands_the_buffer_back_and_cids_are_reused_with_a_new_generation() {
        let (addr, h) = serve(|mut f| {
            f.ic(ic_resp(0, 0, 4096));
            f.connect(5);
            let mut cids = Vec::new();
            for _ in 0..2 {
                for _ in 0..7 {
                    let cid = f.recv().sqe().cid.get();
                    cids.push(cid);
                    let r = f.resp_bytes(cid, Status::SUCCESS, 0);
                    f.send(&r);
                }
            }
            cids
        });
        let mut qp = qpair(&opts(addr), 0);
        for round in 0..2u64 {
            for i in 0..7 {
                qp.flush(1, round * 10 + i).unwrap();
            }
            match qp.read(1, 0, 1, vec![7; 512], 99) {
                Err(SubmitError::QueueFull(Some(b))) => assert_eq!(b, vec![7; 512]),
                other => panic!("{other:?}"),
            }
            assert_eq!(wait_all(&mut qp).len(), 7);
        }
        let cids = h.join().unwrap();
        let mut unique = cids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 14, "a reused slot gets a new CID: {cids:x?}");
        assert!(cids.iter().all(|&c| (c & 7) < 7));
    }

    /// A fake controller for the admin path and one I/O queue: serves a 64-block
    /// namespace of 512-byte blocks kept in memory, and a discovery log of two
    /// entries.
    fn serve_controller() -> (SocketAddr, JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let disk = std::sync::Arc::new(std::sync::Mutex::new(vec![0u8; 64 * 512]));
            let mut threads = Vec::new();
            for _ in 0..2 {
                let (s, _) = l.accept().unwrap();
                let disk = disk.clone();
                threads.push(std::thread::spawn(move || controller(Fake::new(s), &disk)));
            }
            for t in threads {
                t.join().unwrap();
            }
        });
        (addr, h)
    }

    fn controller(mut f: Fake, disk: &std::sync::Mutex<Vec<u8>>) {
        f.ic(ic_resp(0, 0, 8192));
        let mut cc = Cc::new();
        let mut log = vec![0u8; 1024 * 3];
        log[..1024].copy_from_slice(DiscoveryLogHeader::new(7, 2).as_bytes());
        for i in 0..2 {
            let mut e = DiscoveryLogEntry::new_zeroed();
            e.portid = U16::new(i + 1);
            e.set_traddr("127.0.0.1");
            let at = 1024 * (i as usize + 1);
            log[at..at + 1024].copy_from_slice(e.as_bytes());
        }
        let mut qid = None;
        while let Some(g) = f.recv_opt() {
            if g.l.pdu_type == PduType::H2cTermReq {
                panic!("host terminated");
            }
            let sqe = g.sqe();
            let cid = sqe.cid.get();
            let ok = |f: &Fake, dw0: u32| f.resp_bytes(cid, Status::SUCCESS, dw0);
            let admin = qid == Some(0);
            let reply: Vec<u8> = match (sqe.opc, sqe.fctype()) {
                (OPC_FABRICS, fctype::CONNECT) => {
                    let c = ConnectFields::read_from_bytes(&FabricsCmd::from_sqe(&sqe).specific)
                        .unwrap();
                    qid = Some(c.qid.get());
                    ok(&f, 3)
                }
                (OPC_FABRICS, fctype::PROPERTY_GET) => {
                    let p = PropertyFields::read_from_bytes(&FabricsCmd::from_sqe(&sqe).specific)
                        .unwrap();
                    let v: u64 = match p.ofst.get() {
                        offset::CAP => {
                            assert_eq!(p.attrib, 1, "CAP is 8 bytes");
                            u64::from(Cap::new().with_mqes(31).with_to(1).with_css(1))
                        }
                        offset::VS => 0x0002_0000,
                        offset::CSTS => {
                            u32::from(Csts::new().with_rdy(cc.en()).with_shst(if cc.shn() == 1 {
                                2
                            } else {
                                0
                            })) as u64
                        }
                        o => panic!("property {o:#x}"),
                    };
                    let mut r = CapsuleResp::default();
                    r.cqe.cid = U16::new(cid);
                    r.cqe.dw0 = U32::new(v as u32);
                    r.cqe.dw1 = U32::new((v >> 32) as u32);
                    f.pdu(PduType::CapsuleResp, r.as_mut_bytes(), 0, &[])
                }
                (OPC_FABRICS, fctype::PROPERTY_SET) => {
                    let p = PropertyFields::read_from_bytes(&FabricsCmd::from_sqe(&sqe).specific)
                        .unwrap();
                    assert_eq!(p.ofst.get(), offset::CC);
                    cc = Cc::from(p.value.get() as u32);
                    assert_eq!((cc.iosqes(), cc.iocqes()), (6, 4));
                    ok(&f, 0)
                }
                (admin_opc::IDENTIFY, _)
                    if admin && g.l.data_len == 0 && sqe.sgl().len.get() == 4096 =>
                {
                    let id = IdentifyDw::from_sqe(&sqe);
                    let mut page = vec![0u8; IDENTIFY_LEN];
                    match id.cns {
                        cns::CONTROLLER => {
                            let c = IdentifyController {
                                cntlid: U16::new(3),
                                mdts: 5,
                                ioccsz: U32::new(260),
                                rtd3e: U32::new(1000),
                                ..Default::default()
                            };
                            page.copy_from_slice(c.as_bytes());
                        }
                        cns::ACTIVE_NS_LIST => {
                            let l = NsList::active_after(sqe.nsid.get(), [1, 2]);
                            page.copy_from_slice(l.as_bytes());
                        }
                        cns::NAMESPACE => {
                            let n = IdentifyNamespace {
                                nsze: U64::new(64),
                                ..Default::default()
                            };
                            page.copy_from_slice(n.as_bytes());
                        }
                        other => panic!("cns {other}"),
                    }
                    let flags = pdu::FLAG_LAST_PDU | pdu::FLAG_SUCCESS;
                    f.c2h_bytes(cid, 0, &page, flags)
                }
                (admin_opc::SET_FEATURES, _) if admin => {
                    assert_eq!(sqe.cdw10.get(), feature::NUMBER_OF_QUEUES as u32);
                    assert_eq!(sqe.cdw11.get(), 0x0001_0001, "two queues asked");
                    ok(&f, 0x0003_0003)
                }
                (admin_opc::KEEP_ALIVE, _) if admin => ok(&f, 0),
                (admin_opc::GET_LOG_PAGE, _) if admin => {
                    let g = GetLogPageDw::from_sqe(&sqe);
                    assert_eq!(g.lid, log_id::DISCOVERY);
                    let (o, n) = (g.offset as usize, g.bytes() as usize);
                    // Data, then a response capsule (no SUCCESS flag).
                    let mut b = f.c2h_bytes(cid, 0, &log[o..o + n], pdu::FLAG_LAST_PDU);
                    b.extend(ok(&f, 0));
                    b
                }
                (nvm_opc::WRITE | nvm_opc::READ, _) if !admin => {
                    let rw = crate::spec::admin::RwDw::from_sqe(&sqe);
                    let (at, len) = (rw.slba as usize * 512, rw.blocks() as usize * 512);
                    if sqe.opc == nvm_opc::WRITE {
                        let data = if g.l.data_len > 0 {
                            g.data().to_vec()
                        } else {
                            let r = f.r2t_bytes(cid, 1, 0, len as u32);
                            f.send(&r);
                            let mut d = Vec::new();
                            while d.len() < len {
                                d.extend_from_slice(f.recv().data());
                            }
                            d
                        };
                        disk.lock().unwrap()[at..at + len].copy_from_slice(&data);
                        ok(&f, 0)
                    } else {
                        let d = disk.lock().unwrap()[at..at + len].to_vec();
                        f.c2h_bytes(cid, 0, &d, pdu::FLAG_LAST_PDU | pdu::FLAG_SUCCESS)
                    }
                }
                other => panic!("unexpected command {other:x?}"),
            };
            f.send(&reply);
        }
    }

    #[test]
    fn admin_queue_brings_the_controller_up_and_creates_an_io_qpair() {
        let (addr, h) = serve_controller();
        let mut o = opts(addr);
        o.io_queues = 2;
        let mut a = AdminQueue::connect(&o).unwrap();
        assert_eq!(a.cntlid(), 3);
        assert_eq!(a.identify().cntlid.get(), 3);
        assert_eq!(a.cap().mqes(), 31);
        assert_eq!(a.vs(), 0x0002_0000);
        assert_eq!(a.io_queues(), 2, "asked 2, granted 4");
        assert_eq!(a.io_in_capsule(), 260 * 16 - 64);
        assert_eq!(a.max_transfer(), 4096 << 5);
        assert_eq!(a.active_namespaces().unwrap(), [1, 2]);
        assert_eq!(a.identify_namespace(1).unwrap().nsze.get(), 64);
        let (hdr, entries) = a.discovery_log().unwrap();
        assert_eq!((hdr.genctr.get(), hdr.numrec.get()), (7, 2));
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].portid.get(), 2);
        a.keep_alive().unwrap();
        assert!(!a.keep_alive_if_due().unwrap(), "just sent one");
        assert!(matches!(
            a.create_io_qpair::<Vec<u8>>(3, 8),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            a.create_io_qpair::<Vec<u8>>(1, 64),
            Err(Error::InvalidArgument(_))
        ));
        let mut qp = a.create_io_qpair::<Box<[u8]>>(1, 16).unwrap();
        // Small writes go in the capsule, large ones by R2T; both read back.
        let small = pattern(1024, 1).into_boxed_slice();
        let large = pattern(16 * 512, 2).into_boxed_slice();
        qp.write(1, 0, 2, small.clone(), 1).unwrap();
        qp.write(1, 8, 16, large.clone(), 2).unwrap();
        let mut n = 0;
        qp.wait(Duration::from_secs(10), |c| {
            assert!(c.cqe.status().is_success(), "{:?}", c.cqe.status());
            n += 1;
        })
        .unwrap();
        assert_eq!(n, 2);
        qp.read(1, 0, 2, vec![0; 1024].into_boxed_slice(), 3)
            .unwrap();
        qp.read(1, 8, 16, vec![0; 16 * 512].into_boxed_slice(), 4)
            .unwrap();
        let mut got = Vec::new();
        qp.wait(Duration::from_secs(10), |c| got.push(c)).unwrap();
        got.sort_by_key(|c| c.tag);
        assert_eq!(got[0].buf.as_deref(), Some(&small[..]));
        assert_eq!(got[1].buf.as_deref(), Some(&large[..]));
        drop(qp);
        a.shutdown().unwrap();
        h.join().unwrap();
    }
}
