//! The NVMe/TCP connection harness of the `tcp_connection` target.
//!
//! A target is started once per process as the integration tests' `Daemon` starts it
//! (one reactor, small pools, the RPC methods, two malloc namespaces of 4 KiB and
//! 512 B blocks, a TCP transport, a subsystem that allows any host, a listener on
//! loopback). The harness keeps one controller of its own connected through the
//! project's host ([`AdminQueue`]), so that an input can open an I/O queue on it.
//!
//! Each input is one connection through the real transport code:
//!
//! - byte 0, `ctl`: bits 1:0 the preamble the harness sends first ([`Preamble`]), bits
//!   3:2 how the connection ends ([`Close`]), bit 4 and 5 the header and data digests
//!   the preamble's ICReq asks for, bits 7:6 its HPDA (0, 1, 3 or 7).
//! - then operations to the end of the input, each a tag byte `t`:
//!   - `t < 0x80` ([`op::RAW`]): the next `t + 1` bytes, sent as they are;
//!   - `0x80..=0xbf` ([`op::CAPSULE`]): a command capsule framed by the harness (right
//!     HLEN, PDO, PLEN and digests for the connection): 64 bytes of SQE, then by the
//!     flags `t & 0x3f`: [`cap::SGL_IN_CAPSULE`] / [`cap::SGL_TRANSPORT`] rewrite the
//!     SGL (the latter's length from 4 more bytes), [`cap::FRESH_CID`] gives it an
//!     unused CID, [`cap::DATA`] adds in-capsule data (2 bytes of length, then the
//!     bytes, zero-padded), [`cap::BAD_HDGST`] and [`cap::BAD_DDGST`] spoil a digest;
//!   - `0xc0..=0xdf` ([`op::H2C`]): H2CData for the oldest R2T the target sent, its
//!     data from the input (zero-padded), varied by `t & 0x1f` ([`h2c`]);
//!   - `0xe0..=0xff` ([`op::PAUSE`]): wait `(t & 0x1f) * 100` µs, reading.
//!
//! Everything the target sends is checked as a host would check it (common header,
//! digests): a target that sends a malformed PDU fails the input. After the close,
//! the harness waits (at most [`IDLE_TIMEOUT`]) until the target accepted the
//! connection and closed it, and every poll group shows `iobuf_outstanding` 0 and
//! `pending_bdev_io` 0: a leak or a hang fails the input.

use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use pollux_engine::rpc::RpcServer;
use pollux_nvme::fabrics::{AdminQueue, FabricOptions};
use pollux_nvme::spec::cmd::{Cqe, SglDescriptor, Sqe, sgl_subtype, sgl_type};
use pollux_nvme::spec::fabrics::{
    ConnectData, ConnectFields, FabricsCmd, OPC_FABRICS, PropertyFields, fctype,
};
use pollux_nvme::spec::identify::nqn_field;
use pollux_nvme::spec::tcp::{
    self as pdu, CapsuleCmd, CapsuleResp, CommonHeader, DIGEST_LEN, DataHeader, IcReq, IcResp,
    Negotiated, PduType, R2t, Receiver,
};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

use crate::input::Reader;

/// The subsystem inputs connect to.
pub const NQN: &str = "nqn.2016-06.io.pollux:fuzz";
/// The host NQN of the harness's own controller, and of the preambles' Connects.
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:f0220000-0000-4000-8000-000000000001";
/// How long the target may take to close a connection and give every buffer back.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the harness waits for an answer to a preamble's PDU.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one input's operations may take.
const OPS_BUDGET: Duration = Duration::from_secs(3);
/// How long a write may wait for the target to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// I/O queues the preamble rotates through on the harness's controller.
const IO_QIDS: u16 = 8;

/// What the harness sends before the input's operations (`ctl & 3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Preamble {
    /// Nothing: the input starts the connection itself.
    None = 0,
    /// A valid ICReq (the ICResp awaited).
    IcReq = 1,
    /// ICReq, an admin Connect (a new controller) and Property Set CC.EN=1.
    AdminEnabled = 2,
    /// ICReq and an I/O queue Connect for the harness's own controller.
    IoQueue = 3,
}

/// How the connection ends (`(ctl >> 2) & 3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Close {
    /// Closed (FIN) at once.
    Drop = 0,
    /// Half-closed for writing, read until the target closes (bounded), then closed.
    HalfClose = 1,
    /// Reset (SO_LINGER 0).
    Reset = 2,
    /// Read for a while (answers to what was sent), then closed.
    Linger = 3,
}

/// Operation tags.
pub mod op {
    /// Raw bytes: `t + 1` of them follow.
    pub const RAW: u8 = 0x00;
    /// A framed command capsule; flags in the low 6 bits.
    pub const CAPSULE: u8 = 0x80;
    /// H2CData for the oldest open R2T; variations in the low 5 bits.
    pub const H2C: u8 = 0xc0;
    /// A pause of `(t & 0x1f) * 100` µs.
    pub const PAUSE: u8 = 0xe0;
}

/// Capsule flags.
pub mod cap {
    /// The SGL becomes a data block at offset 0 covering the in-capsule data.
    pub const SGL_IN_CAPSULE: u8 = 1;
    /// The SGL becomes a transport data block; its length follows (4 bytes).
    pub const SGL_TRANSPORT: u8 = 2;
    /// The harness gives the command a CID no other command used.
    pub const FRESH_CID: u8 = 4;
    /// In-capsule data follows: 2 bytes of length, then the bytes.
    pub const DATA: u8 = 8;
    /// The header digest (if on) is wrong.
    pub const BAD_HDGST: u8 = 16;
    /// The data digest (if on) is wrong.
    pub const BAD_DDGST: u8 = 32;
}

/// H2CData variations.
pub mod h2c {
    /// Pieces of a size that follows (2 bytes; at least 4), not of MAXH2CDATA.
    pub const PIECES: u8 = 1;
    /// LAST_PDU on the wrong piece.
    pub const WRONG_LAST: u8 = 2;
    /// The offset is off by a signed byte that follows.
    pub const SHIFT: u8 = 4;
    /// The data digest (if on) is wrong.
    pub const BAD_DDGST: u8 = 8;
    /// Only the first piece is sent (the transfer stays open).
    pub const FIRST_ONLY: u8 = 16;
}

/// The process's target and the harness's own controller on it.
pub struct Harness {
    _engine: Engine,
    rpc: Arc<RpcServer>,
    addr: SocketAddr,
    admin: Mutex<Option<AdminQueue>>,
    next_qid: AtomicU16,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

/// The process's harness, started on first use.
pub fn harness() -> &'static Harness {
    HARNESS.get_or_init(Harness::start)
}

impl Harness {
    fn start() -> Harness {
        let engine = Engine::builder()
            .core_mask("[0]")
            .iobuf(IobufOpts::small())
            .start()
            .expect("the engine starts");
        let rpc = Arc::new(RpcServer::new(engine.handle()));
        let port = pollux_tests::free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("an address");
        let call = |m: &str, p: Value| rpc.call(m, Some(p)).unwrap_or_else(|e| panic!("{m}: {e}"));
        call("nvmf_create_transport", json!({"trtype": "TCP"}));
        call(
            "nvmf_create_subsystem",
            json!({"nqn": NQN, "allow_any_host": true, "serial_number": "PXFUZZ", "model_number": "Pollux fuzz"}),
        );
        call(
            "bdev_malloc_create",
            json!({"name": "M0", "num_blocks": 4096, "block_size": 4096}),
        );
        call(
            "bdev_malloc_create",
            json!({"name": "M1", "num_blocks": 16384, "block_size": 512}),
        );
        for b in ["M0", "M1"] {
            call(
                "nvmf_subsystem_add_ns",
                json!({"nqn": NQN, "namespace": {"bdev_name": b}}),
            );
        }
        let la = json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()});
        call(
            "nvmf_subsystem_add_listener",
            json!({"nqn": NQN, "listen_address": la}),
        );
        call(
            "nvmf_subsystem_add_listener",
            json!({"nqn": "discovery", "listen_address": la}),
        );
        Harness {
            _engine: engine,
            rpc,
            addr,
            admin: Mutex::new(None),
            next_qid: AtomicU16::new(0),
        }
    }

    fn host_opts(&self) -> FabricOptions {
        let mut o = FabricOptions::new(self.addr, NQN);
        o.hostnqn = HOSTNQN.into();
        o.io_queues = IO_QIDS;
        // No keep-alive: the controller stays while inputs run for as long as they do.
        o.kato_ms = 0;
        o.timeout = ANSWER_TIMEOUT;
        o
    }

    /// The harness's controller's CNTLID, connecting it anew when it is gone.
    fn admin_cntlid(&self) -> u16 {
        let mut a = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(q) = a.as_mut()
            && q.keep_alive().is_err()
        {
            *a = None;
        }
        if a.is_none() {
            *a = Some(AdminQueue::connect(&self.host_opts()).expect("the harness's controller"));
        }
        a.as_ref().expect("connected").cntlid()
    }

    fn stats(&self) -> Vec<Value> {
        let v = self
            .rpc
            .call("nvmf_get_stats", None)
            .expect("nvmf_get_stats");
        v["poll_groups"].as_array().expect("poll groups").clone()
    }

    fn sum(stats: &[Value], key: &str) -> u64 {
        stats
            .iter()
            .map(|p| p[key].as_u64().unwrap_or_else(|| panic!("no {key}")))
            .sum()
    }

    /// Runs one input (see the module's format).
    pub fn run(&self, data: &[u8]) {
        let mut r = Reader::new(data);
        let ctl = r.u8();
        let preamble = match ctl & 3 {
            0 => Preamble::None,
            1 => Preamble::IcReq,
            2 => Preamble::AdminEnabled,
            _ => Preamble::IoQueue,
        };
        let close = match (ctl >> 2) & 3 {
            0 => Close::Drop,
            1 => Close::HalfClose,
            2 => Close::Reset,
            _ => Close::Linger,
        };
        let (hd, dd) = (ctl & 0x10 != 0, ctl & 0x20 != 0);
        let hpda = [0u8, 1, 3, 7][(ctl >> 6) as usize];
        let cntlid = (preamble == Preamble::IoQueue).then(|| self.admin_cntlid());
        let before = Self::sum(&self.stats(), "connections");
        let mut c = Client::open(self.addr);
        if preamble != Preamble::None {
            c.ic_req(hd, dd, hpda);
        }
        match preamble {
            Preamble::AdminEnabled => {
                let cqe = c.connect(0, 0xffff, 31);
                assert!(
                    cqe.status().is_success(),
                    "admin Connect: {:?}",
                    cqe.status()
                );
                let cqe = c.property_set(0x14, 0x0046_0001);
                assert!(cqe.status().is_success(), "CC.EN=1: {:?}", cqe.status());
            }
            Preamble::IoQueue => {
                let qid = 1 + self.next_qid.fetch_add(1, Ordering::Relaxed) % IO_QIDS;
                let cqe = c.connect(qid, cntlid.expect("a controller"), 31);
                assert!(
                    cqe.status().is_success(),
                    "I/O queue {qid} Connect to the harness's controller: {:?}",
                    cqe.status()
                );
            }
            _ => {}
        }
        // Inputs stay well inside libFuzzer's per-input limit however slowly the
        // target answers: the operations get OPS_BUDGET, the idle wait IDLE_TIMEOUT.
        let budget = Instant::now() + OPS_BUDGET;
        while !r.is_empty() && !c.closed && Instant::now() < budget {
            let t = r.u8();
            match t {
                0x00..=0x7f => {
                    let b = r.take(t as usize + 1);
                    c.send(b);
                }
                0x80..=0xbf => c.capsule(t & 0x3f, &mut r),
                0xc0..=0xdf => c.h2c(t & 0x1f, &mut r),
                _ => {
                    std::thread::sleep(Duration::from_micros(100 * (t & 0x1f) as u64));
                }
            }
            c.drain();
        }
        c.finish(close);
        self.wait_idle(before);
    }

    /// Waits until the input's connection was accepted and closed and no buffer or
    /// bdev I/O is out; panics after [`IDLE_TIMEOUT`].
    fn wait_idle(&self, connections_before: u64) {
        let deadline = Instant::now() + IDLE_TIMEOUT;
        loop {
            let s = self.stats();
            let mine = self
                .admin
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some() as u64;
            let accepted = Self::sum(&s, "connections") > connections_before;
            if accepted
                && Self::sum(&s, "current_connections") <= mine
                && Self::sum(&s, "iobuf_outstanding") == 0
                && Self::sum(&s, "pending_bdev_io") == 0
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the target is not idle {IDLE_TIMEOUT:?} after the connection closed (a leak or a hang): {s:?}"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Whether `POLLUX_FUZZ_DEBUG` is set: the harness then prints the PDUs it receives
/// (to see what an input does: run the target binary on it).
fn debug() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("POLLUX_FUZZ_DEBUG").is_some())
}

/// An R2T the target sent.
#[derive(Clone, Copy, Debug)]
struct R2tSeen {
    cccid: u16,
    ttag: u16,
    r2to: u32,
    r2tl: u32,
}

/// The host side of one fuzzed connection.
struct Client {
    s: TcpStream,
    /// How the harness frames what it sends (digests from the ICResp, CPDA).
    tx: Negotiated,
    /// How the target's PDUs are checked.
    rx: Negotiated,
    maxh2cdata: u32,
    buf: Vec<u8>,
    r2ts: VecDeque<R2tSeen>,
    resps: VecDeque<Cqe>,
    /// A capsule whose data the target may ask for by R2T was sent since the last wait.
    r2t_due: bool,
    cid: u16,
    /// The target closed (or the socket failed): nothing more is sent.
    closed: bool,
}

impl Client {
    fn open(addr: SocketAddr) -> Client {
        let s = TcpStream::connect_timeout(&addr, ANSWER_TIMEOUT).expect("connect to the target");
        s.set_nodelay(true).expect("nodelay");
        s.set_nonblocking(true).expect("non-blocking");
        Client {
            s,
            tx: Negotiated::default(),
            rx: Negotiated {
                plen_max: 1 << 24,
                ..Negotiated::default()
            },
            maxh2cdata: 0,
            buf: Vec::new(),
            r2ts: VecDeque::new(),
            resps: VecDeque::new(),
            r2t_due: false,
            cid: 0,
            closed: false,
        }
    }

    /// Writes all of `b` (reading meanwhile, so the target never blocks on us), unless
    /// the target closes or stops reading for [`WRITE_TIMEOUT`].
    fn send(&mut self, mut b: &[u8]) {
        let deadline = Instant::now() + WRITE_TIMEOUT;
        while !b.is_empty() && !self.closed {
            match self.s.write(b) {
                Ok(0) => self.closed = true,
                Ok(n) => b = &b[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.drain();
                    if Instant::now() > deadline {
                        // The target stopped reading; what follows is dropped and the
                        // close below must still end it.
                        return;
                    }
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }

    /// Reads what arrived and checks every whole PDU in it.
    fn drain(&mut self) {
        let mut chunk = [0u8; 64 << 10];
        loop {
            match self.s.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        self.parse();
    }

    /// Checks and takes in the whole PDUs received, as a host does.
    fn parse(&mut self) {
        let mut at = 0;
        while self.buf.len() - at >= 8 {
            let ch = CommonHeader::read_from_bytes(&self.buf[at..at + 8]).expect("8 bytes");
            let is_term = ch.pdu_type == PduType::C2hTermReq as u8;
            // A C2HTermReq may come before the IC exchange too.
            let rx = Negotiated {
                established: self.rx.established || is_term,
                ..self.rx
            };
            let l = pdu::check_header(&ch, Receiver::Host, &rx).unwrap_or_else(|e| {
                panic!(
                    "the target sent a PDU a host must refuse ({e}): {ch:?}, {:02x?}",
                    &self.buf[at..self.buf.len().min(at + 32)]
                )
            });
            if self.buf.len() - at < l.plen {
                break;
            }
            let p = &self.buf[at..at + l.plen];
            if l.hdgst {
                let want = u32::from_le_bytes(p[l.hlen..l.hlen + 4].try_into().expect("4"));
                assert_eq!(
                    pdu::crc32c(&p[..l.hlen]),
                    want,
                    "the target's header digest is wrong: {ch:?}"
                );
            }
            if l.ddgst && l.data_len > 0 {
                let d = &p[l.data_offset..l.data_offset + l.data_len];
                let e = l.data_offset + l.data_len;
                let want = u32::from_le_bytes(p[e..e + 4].try_into().expect("4"));
                assert_eq!(
                    pdu::crc32c(d),
                    want,
                    "the target's data digest is wrong: {ch:?}"
                );
            }
            if debug() {
                eprintln!("<- {:?} flags {:#x} plen {}", l.pdu_type, l.flags, l.plen);
            }
            match l.pdu_type {
                PduType::IcResp => {
                    let resp = IcResp::read_from_bytes(&p[..128]).expect("128 bytes");
                    let hd = resp.dgst & pdu::DGST_HDGST_ENABLE != 0;
                    let dd = resp.dgst & pdu::DGST_DDGST_ENABLE != 0;
                    assert!(resp.cpda <= pdu::PDA_MAX, "CPDA {}", resp.cpda);
                    self.tx = Negotiated {
                        established: true,
                        hdgst: hd,
                        ddgst: dd,
                        pda: resp.cpda,
                        plen_max: 0,
                    };
                    self.rx.established = true;
                    self.rx.hdgst = hd;
                    self.rx.ddgst = dd;
                    self.maxh2cdata = resp.maxh2cdata.get();
                    assert!(
                        self.maxh2cdata >= 4096,
                        "MAXH2CDATA {} is below 4096",
                        self.maxh2cdata
                    );
                }
                PduType::R2t => {
                    let t = R2t::read_from_bytes(&p[..24]).expect("24 bytes");
                    self.r2ts.push_back(R2tSeen {
                        cccid: t.cccid.get(),
                        ttag: t.ttag.get(),
                        r2to: t.r2to.get(),
                        r2tl: t.r2tl.get(),
                    });
                }
                PduType::CapsuleResp => {
                    let c = CapsuleResp::read_from_bytes(&p[..24]).expect("24 bytes");
                    if debug() {
                        eprintln!("   cid {} {:?}", c.cqe.cid.get(), c.cqe.status());
                    }
                    self.resps.push_back(c.cqe);
                }
                PduType::C2hData => {
                    let h = DataHeader::read_from_bytes(&p[..24]).expect("24 bytes");
                    assert_eq!(
                        h.datal.get() as usize,
                        l.data_len,
                        "C2HData DATAL and PLEN disagree"
                    );
                }
                PduType::C2hTermReq => {}
                t => panic!("the target sent a {t:?}"),
            }
            at += l.plen;
        }
        self.buf.drain(..at);
        // Keep what a host would: bounded by the largest PDU it accepts.
        assert!(
            self.buf.len() <= 1 << 24,
            "an unbounded PDU from the target"
        );
    }

    /// Reads until `done` holds; panics after [`ANSWER_TIMEOUT`].
    fn await_until(&mut self, what: &str, mut done: impl FnMut(&mut Client) -> bool) {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            self.drain();
            if done(self) {
                return;
            }
            assert!(
                !self.closed,
                "the target closed the connection before {what}"
            );
            assert!(Instant::now() < deadline, "no {what} in {ANSWER_TIMEOUT:?}");
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    fn ic_req(&mut self, hd: bool, dd: bool, hpda: u8) {
        let mut req = IcReq::new_zeroed();
        req.hpda = hpda;
        req.dgst = hd as u8 | (dd as u8) << 1;
        let mut out = Vec::new();
        pdu::frame(
            &mut out,
            req.as_mut_bytes(),
            PduType::IcReq,
            0,
            &Negotiated::default(),
            0,
        );
        self.rx.pda = hpda;
        self.send(&out);
        self.await_until("ICResp", |c| c.tx.established);
    }

    /// Frames and sends a capsule of `sqe` with `data` in it.
    fn send_capsule(&mut self, sqe: Sqe, data: &[u8], bad_hdgst: bool, bad_ddgst: bool) {
        let mut cmd = CapsuleCmd {
            sqe,
            ..Default::default()
        };
        let mut out = Vec::with_capacity(128 + data.len());
        let neg = self.tx;
        pdu::frame(
            &mut out,
            cmd.as_mut_bytes(),
            PduType::CapsuleCmd,
            0,
            &neg,
            data.len(),
        );
        if bad_hdgst && neg.hdgst {
            out[72] ^= 1;
        }
        out.extend_from_slice(data);
        if neg.ddgst && !data.is_empty() {
            let d = pdu::crc32c(data) ^ bad_ddgst as u32;
            out.extend_from_slice(&d.to_le_bytes());
        }
        self.send(&out);
    }

    /// A command and its response (the preambles').
    fn command(&mut self, mut sqe: Sqe, data: &[u8]) -> Cqe {
        self.cid = self.cid.wrapping_add(1);
        sqe.cid = U16::new(self.cid);
        let sgl = if data.is_empty() {
            SglDescriptor::new(sgl_type::TRANSPORT_DATA_BLOCK, sgl_subtype::TRANSPORT, 0, 0)
        } else {
            SglDescriptor::new(
                sgl_type::DATA_BLOCK,
                sgl_subtype::OFFSET,
                0,
                data.len() as u32,
            )
        };
        sqe.set_sgl(&sgl);
        self.send_capsule(sqe, data, false, false);
        self.await_until("a response", |c| !c.resps.is_empty());
        self.resps.pop_front().expect("a response")
    }

    fn connect(&mut self, qid: u16, cntlid: u16, sqsize: u16) -> Cqe {
        let mut f = FabricsCmd {
            opc: OPC_FABRICS,
            fctype: fctype::CONNECT,
            ..Default::default()
        };
        let c = ConnectFields {
            qid: U16::new(qid),
            sqsize: U16::new(sqsize),
            ..Default::default()
        };
        f.specific.copy_from_slice(c.as_bytes());
        let mut d = ConnectData::new_zeroed();
        d.hostid = [0xf0; 16];
        d.cntlid = U16::new(cntlid);
        nqn_field(&mut d.subnqn, NQN);
        nqn_field(&mut d.hostnqn, HOSTNQN);
        self.command(f.to_sqe(), d.as_bytes())
    }

    fn property_set(&mut self, ofst: u32, value: u64) -> Cqe {
        let mut f = FabricsCmd {
            opc: OPC_FABRICS,
            fctype: fctype::PROPERTY_SET,
            ..Default::default()
        };
        let p = PropertyFields {
            ofst: U32::new(ofst),
            value: U64::new(value),
            ..Default::default()
        };
        f.specific.copy_from_slice(p.as_bytes());
        self.command(f.to_sqe(), &[])
    }

    /// The [`op::CAPSULE`] operation.
    fn capsule(&mut self, flags: u8, r: &mut Reader<'_>) {
        let mut sqe = Sqe::read_from_bytes(&r.array::<64>()).expect("64 bytes");
        let transport_len = if flags & 3 == cap::SGL_TRANSPORT {
            r.u32() & 0x3_ffff
        } else {
            0
        };
        if flags & cap::FRESH_CID != 0 {
            self.cid = self.cid.wrapping_add(1);
            sqe.cid = U16::new(self.cid);
        }
        let mut data = Vec::new();
        if flags & cap::DATA != 0 {
            let n = (r.u16() & 0x3fff) as usize;
            data.extend_from_slice(r.take(n));
            data.resize(n, 0);
        }
        match flags & 3 {
            cap::SGL_IN_CAPSULE => sqe.set_sgl(&SglDescriptor::new(
                sgl_type::DATA_BLOCK,
                sgl_subtype::OFFSET,
                0,
                data.len() as u32,
            )),
            cap::SGL_TRANSPORT => sqe.set_sgl(&SglDescriptor::new(
                sgl_type::TRANSPORT_DATA_BLOCK,
                sgl_subtype::TRANSPORT,
                0,
                transport_len,
            )),
            _ => {}
        }
        // Only data to the controller is asked for by R2T (the direction is in the
        // opcode, or in the Fabrics command type).
        let bits = if sqe.opc == OPC_FABRICS {
            sqe.fctype()
        } else {
            sqe.opc
        };
        self.r2t_due |= bits & 3 == 1
            && sqe.sgl().ty() == sgl_type::TRANSPORT_DATA_BLOCK
            && sqe.sgl().len.get() > 0;
        self.send_capsule(
            sqe,
            &data,
            flags & cap::BAD_HDGST != 0,
            flags & cap::BAD_DDGST != 0,
        );
    }

    /// The [`op::H2C`] operation.
    fn h2c(&mut self, v: u8, r: &mut Reader<'_>) {
        if self.r2ts.is_empty() && std::mem::take(&mut self.r2t_due) {
            // The R2T for the last transport-SGL capsule may be on its way: wait a
            // little for it.
            let deadline = Instant::now() + Duration::from_millis(20);
            while self.r2ts.is_empty() && !self.closed && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(50));
                self.drain();
            }
        }
        let Some(t) = self.r2ts.pop_front() else {
            return;
        };
        let piece = if v & h2c::PIECES != 0 {
            (r.u16() as u32).max(4)
        } else {
            self.maxh2cdata.max(4096)
        };
        let shift = if v & h2c::SHIFT != 0 {
            r.u8() as i8 as i64
        } else {
            0
        };
        let neg = self.tx;
        let mut off = 0u32;
        while off < t.r2tl && !self.closed {
            let n = piece.min(t.r2tl - off);
            let mut last = off + n == t.r2tl;
            if v & h2c::WRONG_LAST != 0 {
                last = !last;
            }
            let mut h = DataHeader {
                cccid: U16::new(t.cccid),
                ttag: U16::new(t.ttag),
                datao: U32::new((t.r2to as i64 + off as i64 + shift) as u32),
                datal: U32::new(n),
                ..Default::default()
            };
            let mut out = Vec::new();
            pdu::frame(
                &mut out,
                h.as_mut_bytes(),
                PduType::H2cData,
                if last { pdu::FLAG_LAST_PDU } else { 0 },
                &neg,
                n as usize,
            );
            let start = out.len();
            out.extend_from_slice(r.take(n as usize));
            out.resize(start + n as usize, 0);
            if neg.ddgst {
                let d = pdu::crc32c(&out[start..]) ^ (v & h2c::BAD_DDGST != 0) as u32;
                out.extend_from_slice(&d.to_le_bytes());
            }
            debug_assert!(out.len() <= n as usize + 24 + 2 * DIGEST_LEN + 128);
            self.send(&out);
            self.drain();
            off += n;
            if v & h2c::FIRST_ONLY != 0 {
                break;
            }
        }
    }

    /// Ends the connection as `how` says.
    fn finish(mut self, how: Close) {
        match how {
            Close::Drop => {}
            Close::HalfClose => {
                let _ = self.s.shutdown(std::net::Shutdown::Write);
                let deadline = Instant::now() + Duration::from_millis(200);
                while !self.closed && Instant::now() < deadline {
                    self.drain();
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            Close::Reset => {
                let l = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: SO_LINGER with a valid `linger` of the right size on a socket
                // this client owns.
                unsafe {
                    libc::setsockopt(
                        self.s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&l as *const libc::linger).cast(),
                        size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
            }
            Close::Linger => {
                let deadline = Instant::now() + Duration::from_millis(5);
                while !self.closed && Instant::now() < deadline {
                    self.drain();
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
    }
}

/// Seed-writing helpers: inputs in this module's format.
pub mod seed {
    use super::*;

    /// `ctl` for a preamble, a close and the digests.
    pub fn ctl(p: Preamble, c: Close, hd: bool, dd: bool) -> u8 {
        p as u8 | (c as u8) << 2 | (hd as u8) << 4 | (dd as u8) << 5
    }

    /// Raw bytes, as [`op::RAW`] operations.
    pub fn raw(out: &mut Vec<u8>, mut b: &[u8]) {
        while !b.is_empty() {
            let n = b.len().min(128);
            out.push(op::RAW | (n - 1) as u8);
            out.extend_from_slice(&b[..n]);
            b = &b[n..];
        }
    }

    /// A capsule of `sqe` with in-capsule `data` (SGL set to match, fresh CID).
    pub fn capsule(out: &mut Vec<u8>, sqe: &Sqe, data: &[u8]) {
        let mut f = cap::FRESH_CID;
        if !data.is_empty() {
            f |= cap::DATA | cap::SGL_IN_CAPSULE;
        }
        out.push(op::CAPSULE | f);
        out.extend_from_slice(sqe.as_bytes());
        if !data.is_empty() {
            out.extend_from_slice(&(data.len() as u16).to_le_bytes());
            out.extend_from_slice(data);
        }
    }

    /// A capsule of `sqe` whose `len` bytes of data the target fetches by R2T.
    pub fn capsule_r2t(out: &mut Vec<u8>, sqe: &Sqe, len: u32) {
        out.push(op::CAPSULE | cap::FRESH_CID | cap::SGL_TRANSPORT);
        out.extend_from_slice(sqe.as_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }

    /// H2CData answering the oldest R2T with `data` (zero-padded).
    pub fn h2c_data(out: &mut Vec<u8>, data: &[u8]) {
        out.push(op::H2C);
        out.extend_from_slice(data);
    }

    /// A pause of `n` × 100 µs.
    pub fn pause(out: &mut Vec<u8>, n: u8) {
        out.push(op::PAUSE | (n & 0x1f));
    }
}
