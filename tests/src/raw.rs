//! A host made of raw NVMe/TCP PDUs, for what a well-behaved initiator never sends:
//! shared by the loopback tests, the churn test and the fuzzers' seeds.

use pollux_nvme::spec::admin::admin_opc;
use pollux_nvme::spec::cmd::{Cqe, SglDescriptor, Sqe, sgl_subtype, sgl_type};
use pollux_nvme::spec::fabrics::{
    ConnectData, ConnectFields, FabricsCmd, OPC_FABRICS, PropertyFields, fctype,
};
use pollux_nvme::spec::identify::nqn_field;
use pollux_nvme::spec::tcp::{
    self as pdu, CapsuleCmd, CapsuleResp, CommonHeader, DataHeader, IcReq, Negotiated, PduType,
    TermReq,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// The host NQN raw hosts connect with.
pub const RAW_HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001";

/// A host made of raw PDUs, for what the initiator never sends.
#[derive(Debug)]
pub struct Raw {
    /// The connection.
    pub s: TcpStream,
    /// What ICReq/ICResp agreed.
    pub neg: Negotiated,
    /// The last command ID used.
    pub cid: u16,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            neg: Negotiated::default(),
            cid: 100,
        }
    }

    pub fn ic(&mut self, hd: bool, dd: bool) {
        let mut req = IcReq::new_zeroed();
        req.dgst = hd as u8 | (dd as u8) << 1;
        let mut out = Vec::new();
        pdu::frame(
            &mut out,
            req.as_mut_bytes(),
            PduType::IcReq,
            0,
            &self.neg,
            0,
        );
        self.s.write_all(&out).unwrap();
        let (ch, _) = self.recv();
        assert_eq!(ch.pdu_type, PduType::IcResp as u8);
        self.neg = Negotiated {
            established: true,
            hdgst: hd,
            ddgst: dd,
            pda: 0,
            plen_max: 1 << 20,
        };
    }

    /// One whole PDU (header and all); panics on a timeout.
    pub fn recv(&mut self) -> (CommonHeader, Vec<u8>) {
        let mut head = [0u8; 8];
        self.s.read_exact(&mut head).expect("a PDU from the target");
        let ch = CommonHeader::read_from_bytes(&head).unwrap();
        let mut rest = vec![0u8; ch.plen.get() as usize - 8];
        self.s.read_exact(&mut rest).unwrap();
        let mut all = head.to_vec();
        all.extend(rest);
        (ch, all)
    }

    /// What the target sends next: a TermReq's FES, or None when it just closed.
    pub fn term(&mut self) -> Option<u16> {
        let mut head = [0u8; 8];
        match self.s.read_exact(&mut head) {
            Err(_) => None,
            Ok(()) => {
                let ch = CommonHeader::read_from_bytes(&head).unwrap();
                assert_eq!(ch.pdu_type, PduType::C2hTermReq as u8, "{ch:?}");
                let mut rest = vec![0u8; ch.plen.get() as usize - 8];
                self.s.read_exact(&mut rest).unwrap();
                let mut all = head.to_vec();
                all.extend(rest);
                let t = TermReq::read_from_bytes(&all[..24]).unwrap();
                // Then the connection closes.
                let mut b = [0u8; 1];
                assert_eq!(self.s.read(&mut b).unwrap_or(0), 0);
                Some(t.fes.get())
            }
        }
    }

    /// Sends a command capsule: `data` in the capsule, or else a transport SGL for
    /// `ttag_len` bytes (R2T/C2H data). A zero CID gets the next one.
    pub fn send_cmd(&mut self, sqe: Sqe, data: &[u8], ttag_len: u32) {
        let out = self.capsule(sqe, data, ttag_len);
        self.s.write_all(&out).unwrap();
    }

    /// The bytes [`Raw::send_cmd`] would send (to send only part of them).
    pub fn capsule(&mut self, mut sqe: Sqe, data: &[u8], ttag_len: u32) -> Vec<u8> {
        if sqe.cid.get() == 0 {
            self.cid += 1;
            sqe.cid = U16::new(self.cid);
        }
        let sgl = if !data.is_empty() {
            SglDescriptor::new(
                sgl_type::DATA_BLOCK,
                sgl_subtype::OFFSET,
                0,
                data.len() as u32,
            )
        } else {
            SglDescriptor::new(
                sgl_type::TRANSPORT_DATA_BLOCK,
                sgl_subtype::TRANSPORT,
                0,
                ttag_len,
            )
        };
        sqe.set_sgl(&sgl);
        let mut cmd = CapsuleCmd {
            sqe,
            ..Default::default()
        };
        let mut out = Vec::new();
        pdu::frame(
            &mut out,
            cmd.as_mut_bytes(),
            PduType::CapsuleCmd,
            0,
            &self.neg,
            data.len(),
        );
        out.extend_from_slice(data);
        if self.neg.ddgst && !data.is_empty() {
            out.extend_from_slice(&pdu::crc32c(data).to_le_bytes());
        }
        out
    }

    /// Closes with a TCP RST (SO_LINGER 0) rather than a FIN.
    pub fn reset(self) {
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on our own socket with a valid linger of the right size.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }

    pub fn recv_resp(&mut self) -> Cqe {
        loop {
            let (ch, all) = self.recv();
            if ch.pdu_type == PduType::CapsuleResp as u8 {
                return CapsuleResp::read_from_bytes(&all[..24]).unwrap().cqe;
            }
        }
    }

    pub fn command(&mut self, sqe: Sqe, data: &[u8], len: u32) -> Cqe {
        self.send_cmd(sqe, data, len);
        self.recv_resp()
    }

    pub fn command_read(&mut self, sqe: Sqe, len: u32) -> (Cqe, Vec<u8>) {
        self.send_cmd(sqe, &[], len);
        let mut data = vec![0u8; len as usize];
        loop {
            let (ch, all) = self.recv();
            match PduType::from_u8(ch.pdu_type).unwrap() {
                PduType::C2hData => {
                    let h = DataHeader::read_from_bytes(&all[..24]).unwrap();
                    let off = h.datao.get() as usize;
                    let n = h.datal.get() as usize;
                    let p = ch.pdo as usize;
                    data[off..off + n].copy_from_slice(&all[p..p + n]);
                    if ch.flags & pdu::FLAG_SUCCESS != 0 {
                        return (Cqe::default(), data);
                    }
                }
                PduType::CapsuleResp => {
                    return (CapsuleResp::read_from_bytes(&all[..24]).unwrap().cqe, data);
                }
                t => panic!("unexpected {t:?}"),
            }
        }
    }

    pub fn connect_admin(&mut self, subnqn: &str) -> u16 {
        self.connect_q(subnqn, 0, 0xffff, RAW_HOST)
    }

    pub fn connect_q(&mut self, subnqn: &str, qid: u16, cntlid: u16, hostnqn: &str) -> u16 {
        let cqe = self.try_connect(subnqn, qid, cntlid, hostnqn, 31, [1; 16]);
        assert!(cqe.status().is_success(), "{:?}", cqe.status());
        cqe.dw0.get() as u16
    }

    /// Connect with every field chosen; the response as it came.
    pub fn try_connect(
        &mut self,
        subnqn: &str,
        qid: u16,
        cntlid: u16,
        hostnqn: &str,
        sqsize: u16,
        hostid: [u8; 16],
    ) -> Cqe {
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
        let mut data = ConnectData::new_zeroed();
        data.cntlid = U16::new(cntlid);
        data.hostid = hostid;
        nqn_field(&mut data.subnqn, subnqn);
        nqn_field(&mut data.hostnqn, hostnqn);
        self.command(f.to_sqe(), data.as_bytes(), 0)
    }

    pub fn enable(&mut self) {
        let mut f = FabricsCmd {
            opc: OPC_FABRICS,
            fctype: fctype::PROPERTY_SET,
            ..Default::default()
        };
        let p = PropertyFields {
            ofst: U32::new(0x14),
            value: U64::new(0x0046_0001),
            ..Default::default()
        };
        f.specific.copy_from_slice(p.as_bytes());
        assert!(self.command(f.to_sqe(), &[], 0).status().is_success());
    }
}

impl Raw {
    /// The controller ID of this admin connection (Identify Controller's CNTLID).
    pub fn cmd_cntlid(&mut self) -> u16 {
        let mut idf = Sqe {
            opc: admin_opc::IDENTIFY,
            ..Default::default()
        };
        idf.cdw10 = U32::new(1);
        let (_, data) = self.command_read(idf, 4096);
        u16::from_le_bytes([data[78], data[79]])
    }
}
