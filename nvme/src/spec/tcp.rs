//! NVMe/TCP PDUs (tcp 3.6) and the one codec that target and host share: header
//! validation for whichever side receives, framing for whichever side sends, and the
//! CRC32C header and data digests (hardware-accelerated where the CPU has it).
//!
//! A PDU is: a header of `hlen` bytes (common header + type-specific part), a 4-byte
//! header digest when HDGSTF is set, padding up to `pdo`, `plen - pdo - ddgst` bytes of
//! data, and a 4-byte data digest when DDGSTF is set.

use super::cmd::{Cqe, Sqe};
use super::{assert_offset, assert_size};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// PDU types (tcp 3.6.1, Figure 22).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PduType {
    /// Initialize Connection Request.
    IcReq = 0x00,
    /// Initialize Connection Response.
    IcResp = 0x01,
    /// Host to Controller Terminate Connection Request.
    H2cTermReq = 0x02,
    /// Controller to Host Terminate Connection Request.
    C2hTermReq = 0x03,
    /// Command Capsule.
    CapsuleCmd = 0x04,
    /// Response Capsule.
    CapsuleResp = 0x05,
    /// Host to Controller Data.
    H2cData = 0x06,
    /// Controller to Host Data.
    C2hData = 0x07,
    /// Ready to Transfer.
    R2t = 0x09,
}

impl PduType {
    /// The type for a wire value.
    pub fn from_u8(v: u8) -> Option<PduType> {
        Some(match v {
            0x00 => PduType::IcReq,
            0x01 => PduType::IcResp,
            0x02 => PduType::H2cTermReq,
            0x03 => PduType::C2hTermReq,
            0x04 => PduType::CapsuleCmd,
            0x05 => PduType::CapsuleResp,
            0x06 => PduType::H2cData,
            0x07 => PduType::C2hData,
            0x09 => PduType::R2t,
            _ => return None,
        })
    }

    /// The fixed header length of this type (tcp 3.6.2).
    pub fn hlen(self) -> u8 {
        match self {
            PduType::IcReq | PduType::IcResp => 128,
            PduType::CapsuleCmd => 72,
            _ => 24,
        }
    }

    /// Whether a host sends it (H2C) rather than a controller.
    pub fn is_h2c(self) -> bool {
        matches!(
            self,
            PduType::IcReq | PduType::H2cTermReq | PduType::CapsuleCmd | PduType::H2cData
        )
    }

    /// Whether it may carry data.
    pub fn carries_data(self) -> bool {
        matches!(
            self,
            PduType::CapsuleCmd
                | PduType::H2cData
                | PduType::C2hData
                | PduType::H2cTermReq
                | PduType::C2hTermReq
        )
    }

    /// Whether digests apply (not to IC and TermReq PDUs, tcp 3.6.2.2).
    pub fn has_digests(self) -> bool {
        !matches!(
            self,
            PduType::IcReq | PduType::IcResp | PduType::H2cTermReq | PduType::C2hTermReq
        )
    }
}

/// Common header flag: a header digest follows the header (tcp 3.6.1, CH.FLAGS bit 0).
pub const FLAG_HDGSTF: u8 = 1 << 0;
/// Common header flag: a data digest follows the data (CH.FLAGS bit 1).
pub const FLAG_DDGSTF: u8 = 1 << 1;
/// H2CData/C2HData flag: last PDU of the transfer (bit 2).
pub const FLAG_LAST_PDU: u8 = 1 << 2;
/// C2HData flag: the command succeeded, no response capsule follows (bit 3).
pub const FLAG_SUCCESS: u8 = 1 << 3;

/// ICReq/ICResp DGST field: header digest enable (bit 0).
pub const DGST_HDGST_ENABLE: u8 = 1 << 0;
/// ICReq/ICResp DGST field: data digest enable (bit 1).
pub const DGST_DDGST_ENABLE: u8 = 1 << 1;

/// Bytes of a digest.
pub const DIGEST_LEN: usize = 4;
/// The largest TermReq PDU, header and data (tcp 3.6.2.4 and 3.6.2.5).
pub const TERM_REQ_PLEN_MAX: u32 = 152;
/// The largest value of HPDA and CPDA (0's based dwords).
pub const PDA_MAX: u8 = 31;

/// The common header (tcp 3.6.1, Figure 21).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct CommonHeader {
    /// PDU-Type.
    pub pdu_type: u8,
    /// FLAGS, type specific.
    pub flags: u8,
    /// Header Length, without the header digest.
    pub hlen: u8,
    /// PDU Data Offset from the start of the PDU (0: no data).
    pub pdo: u8,
    /// PDU Length: all bytes of the PDU, digests included.
    pub plen: U32,
}
assert_size!(CommonHeader, 8);
assert_offset!(CommonHeader, plen, 4);

/// ICReq (tcp 3.6.2.2, Figure 26).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IcReq {
    /// Common header.
    pub ch: CommonHeader,
    /// PDU Format Version (0).
    pub pfv: U16,
    /// Host PDU Data Alignment, 0's based dwords.
    pub hpda: u8,
    /// Digests the host asks for.
    pub dgst: u8,
    /// Maximum outstanding R2Ts per command, 0's based.
    pub maxr2t: U32,
    /// Reserved.
    pub rsvd: [u8; 112],
}
assert_size!(IcReq, 128);
assert_offset!(IcReq, hpda, 10);
assert_offset!(IcReq, maxr2t, 12);

/// ICResp (tcp 3.6.2.3, Figure 27).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IcResp {
    /// Common header.
    pub ch: CommonHeader,
    /// PDU Format Version (0).
    pub pfv: U16,
    /// Controller PDU Data Alignment, 0's based dwords.
    pub cpda: u8,
    /// Digests enabled for the connection.
    pub dgst: u8,
    /// Maximum H2C data bytes per H2CData PDU.
    pub maxh2cdata: U32,
    /// Reserved.
    pub rsvd: [u8; 112],
}
assert_size!(IcResp, 128);
assert_offset!(IcResp, cpda, 10);
assert_offset!(IcResp, maxh2cdata, 12);

/// H2CTermReq and C2HTermReq header (tcp 3.6.2.4, 3.6.2.5); up to 128 bytes of the
/// offending PDU header follow as data.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct TermReq {
    /// Common header.
    pub ch: CommonHeader,
    /// Fatal Error Status.
    pub fes: U16,
    /// Fatal Error Information: for an invalid header field, its byte offset.
    pub fei: U32,
    /// Reserved.
    pub rsvd: [u8; 10],
}
assert_size!(TermReq, 24);
assert_offset!(TermReq, fes, 8);
assert_offset!(TermReq, fei, 10);

/// Fatal Error Status values of a TermReq (tcp 3.6.2.4, Figure 28).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Fes {
    /// Invalid PDU Header Field (FEI: the field's byte offset).
    InvalidHeaderField = 0x01,
    /// PDU Sequence Error.
    PduSequenceError = 0x02,
    /// Header Digest Error.
    HeaderDigestError = 0x03,
    /// Data Transfer Out of Range.
    DataTransferOutOfRange = 0x04,
    /// R2T Limit Exceeded (H2C) / Data Transfer Limit Exceeded.
    DataTransferLimitExceeded = 0x05,
    /// Unsupported Parameter (FEI: the field's byte offset).
    UnsupportedParameter = 0x06,
}

/// CapsuleCmd header (tcp 3.6.2.6, Figure 30): the common header and the SQE.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct CapsuleCmd {
    /// Common header.
    pub ch: CommonHeader,
    /// Command Capsule SQE.
    pub sqe: Sqe,
}
assert_size!(CapsuleCmd, 72);
assert_offset!(CapsuleCmd, sqe, 8);

/// CapsuleResp (tcp 3.6.2.7, Figure 31): the common header and the CQE.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct CapsuleResp {
    /// Common header.
    pub ch: CommonHeader,
    /// Response Capsule CQE.
    pub cqe: Cqe,
}
assert_size!(CapsuleResp, 24);
assert_offset!(CapsuleResp, cqe, 8);

/// H2CData and C2HData headers (tcp 3.6.2.8, 3.6.2.9); `ttag` is reserved in C2HData.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct DataHeader {
    /// Common header.
    pub ch: CommonHeader,
    /// Command Capsule CID.
    pub cccid: U16,
    /// Transfer Tag (H2CData, echoed from R2T); reserved in C2HData.
    pub ttag: U16,
    /// Data Offset within the command's data.
    pub datao: U32,
    /// Data Length of this PDU.
    pub datal: U32,
    /// Reserved.
    pub rsvd: [u8; 4],
}
assert_size!(DataHeader, 24);
assert_offset!(DataHeader, cccid, 8);
assert_offset!(DataHeader, ttag, 10);
assert_offset!(DataHeader, datao, 12);
assert_offset!(DataHeader, datal, 16);

/// R2T (tcp 3.6.2.10, Figure 34).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct R2t {
    /// Common header.
    pub ch: CommonHeader,
    /// Command Capsule CID.
    pub cccid: U16,
    /// Transfer Tag.
    pub ttag: U16,
    /// Requested data offset.
    pub r2to: U32,
    /// Requested data length.
    pub r2tl: U32,
    /// Reserved.
    pub rsvd: [u8; 4],
}
assert_size!(R2t, 24);
assert_offset!(R2t, r2to, 12);
assert_offset!(R2t, r2tl, 16);

/// CRC32C, as NVMe/TCP digests use it (initial value and final XOR all ones).
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// CRC32C continued over another piece of the same data.
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, bytes)
}

/// Which side is reading PDUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receiver {
    /// The controller (target): it accepts H2C PDUs.
    Controller,
    /// The host: it accepts C2H PDUs.
    Host,
}

/// What the connection negotiated (or, before ICReq/ICResp, nothing yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// The IC exchange is done; only then may digests and non-IC PDUs appear.
    pub established: bool,
    /// Header digests on.
    pub hdgst: bool,
    /// Data digests on.
    pub ddgst: bool,
    /// The sender's data alignment, 0's based dwords (CPDA for H2C, HPDA for C2H).
    pub pda: u8,
    /// The largest PDU the receiver accepts, header to data digest.
    pub plen_max: u32,
}

/// Where the parts of a received PDU lie, from its validated common header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PduLayout {
    /// The type.
    pub pdu_type: PduType,
    /// Flags as received.
    pub flags: u8,
    /// Header length.
    pub hlen: usize,
    /// Whether a header digest follows the header.
    pub hdgst: bool,
    /// Offset of the data (meaningful when `data_len > 0`).
    pub data_offset: usize,
    /// Bytes of data.
    pub data_len: usize,
    /// Whether a data digest follows the data.
    pub ddgst: bool,
    /// Total bytes of the PDU.
    pub plen: usize,
}

/// Why a received header is refused: the TermReq to send back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("NVMe/TCP protocol error {fes:?} at header byte {fei}")]
pub struct PduError {
    /// Fatal Error Status.
    pub fes: Fes,
    /// Fatal Error Information (the offending field's byte offset where it applies).
    pub fei: u32,
}

fn invalid(fei: u32) -> PduError {
    PduError {
        fes: Fes::InvalidHeaderField,
        fei,
    }
}

/// Validates a common header received by `rx` on a connection in state `neg`, and
/// says where the header digest, data and data digest lie (tcp 3.6.1 and 3.6.2).
pub fn check_header(
    ch: &CommonHeader,
    rx: Receiver,
    neg: &Negotiated,
) -> Result<PduLayout, PduError> {
    const OFF_TYPE: u32 = 0;
    const OFF_FLAGS: u32 = 1;
    const OFF_HLEN: u32 = 2;
    const OFF_PDO: u32 = 3;
    const OFF_PLEN: u32 = 4;
    let ty = PduType::from_u8(ch.pdu_type).ok_or(invalid(OFF_TYPE))?;
    if ty.is_h2c() != (rx == Receiver::Controller) {
        return Err(invalid(OFF_TYPE));
    }
    let is_ic = matches!(ty, PduType::IcReq | PduType::IcResp);
    if is_ic == neg.established {
        // An IC PDU after the exchange, or anything else before it.
        return Err(PduError {
            fes: Fes::PduSequenceError,
            fei: 0,
        });
    }
    if ch.hlen != ty.hlen() {
        return Err(invalid(OFF_HLEN));
    }
    let hlen = ch.hlen as usize;
    let plen = ch.plen.get() as usize;
    let hdgst = ch.flags & FLAG_HDGSTF != 0;
    let ddgst = ch.flags & FLAG_DDGSTF != 0;
    if ty.has_digests() {
        // A PDU carries exactly the digests negotiated (a data digest only with data).
        if hdgst != neg.hdgst || (ddgst && !neg.ddgst) {
            return Err(invalid(OFF_FLAGS));
        }
    } else if hdgst || ddgst {
        return Err(invalid(OFF_FLAGS));
    }
    let head = hlen + if hdgst { DIGEST_LEN } else { 0 };
    if is_ic {
        if ch.pdo != 0 || plen != hlen {
            return Err(invalid(if ch.pdo != 0 { OFF_PDO } else { OFF_PLEN }));
        }
    } else if matches!(ty, PduType::H2cTermReq | PduType::C2hTermReq)
        && plen as u32 > TERM_REQ_PLEN_MAX
    {
        return Err(invalid(OFF_PLEN));
    }
    if plen < head || plen as u64 > neg.plen_max.max(TERM_REQ_PLEN_MAX) as u64 {
        return Err(if plen < head {
            invalid(OFF_PLEN)
        } else {
            PduError {
                fes: Fes::DataTransferLimitExceeded,
                fei: OFF_PLEN,
            }
        });
    }
    let (data_offset, data_len) = if plen == head {
        if ch.pdo != 0 || ddgst {
            return Err(invalid(if ddgst { OFF_FLAGS } else { OFF_PDO }));
        }
        (0, 0)
    } else {
        if !ty.carries_data() {
            return Err(invalid(OFF_PLEN));
        }
        let pdo = if matches!(ty, PduType::H2cTermReq | PduType::C2hTermReq) {
            // TermReq data follows the header directly; PDO is reserved.
            hlen
        } else {
            let pdo = ch.pdo as usize;
            let align = (neg.pda as usize + 1) * 4;
            if pdo < head || (pdo % align != 0 && pdo != head) {
                return Err(invalid(OFF_PDO));
            }
            pdo
        };
        if ty.has_digests() && ddgst != neg.ddgst {
            // With data digests on, every data-bearing PDU carries one.
            return Err(invalid(OFF_FLAGS));
        }
        let tail = if ddgst { DIGEST_LEN } else { 0 };
        if plen <= pdo + tail {
            return Err(invalid(OFF_PLEN));
        }
        (pdo, plen - pdo - tail)
    };
    Ok(PduLayout {
        pdu_type: ty,
        flags: ch.flags,
        hlen,
        hdgst,
        data_offset,
        data_len,
        ddgst,
        plen,
    })
}

/// Frames an outgoing PDU on a connection in state `neg` (its digests; `pda` is the
/// receiver's alignment): fills in the common header of `header` (whose first 8 bytes
/// are the common header and whose length is the type's HLEN), appends the header,
/// its digest and the padding to `out`, and returns the common header as sent.
/// `data_len` bytes of data (and their digest, computed with [`crc32c()`]) follow.
///
/// # Panics
///
/// When the PDU would be longer than PLEN can say (4 GiB): the caller bounds its data.
pub fn frame(
    out: &mut Vec<u8>,
    header: &mut [u8],
    ty: PduType,
    flags: u8,
    neg: &Negotiated,
    data_len: usize,
) -> CommonHeader {
    let (hdgst, ddgst, pda) = (neg.hdgst, neg.ddgst, neg.pda);
    assert_eq!(
        header.len(),
        ty.hlen() as usize,
        "header of the type's length"
    );
    let hlen = header.len();
    let start = out.len();
    let digests = ty.has_digests();
    let hd = digests && hdgst;
    let dd = digests && ddgst && data_len > 0;
    let head = hlen + if hd { DIGEST_LEN } else { 0 };
    let pdo = if data_len == 0 {
        0
    } else if matches!(ty, PduType::H2cTermReq | PduType::C2hTermReq) {
        hlen
    } else {
        let align = (pda as usize + 1) * 4;
        head.div_ceil(align) * align
    };
    let plen = if data_len == 0 {
        head
    } else {
        pdo + data_len + if dd { DIGEST_LEN } else { 0 }
    };
    // PLEN is 32 bits: a longer PDU must not go out with a PLEN that wrapped.
    let plen = u32::try_from(plen).expect("a PDU's length fits PLEN (32 bits)");
    let ch = CommonHeader {
        pdu_type: ty as u8,
        flags: flags | if hd { FLAG_HDGSTF } else { 0 } | if dd { FLAG_DDGSTF } else { 0 },
        hlen: hlen as u8,
        pdo: if matches!(ty, PduType::H2cTermReq | PduType::C2hTermReq) {
            0
        } else {
            pdo as u8
        },
        plen: U32::new(plen),
    };
    header[..8].copy_from_slice(ch.as_bytes());
    out.extend_from_slice(header);
    if hd {
        out.extend_from_slice(&crc32c(header).to_le_bytes());
    }
    if data_len > 0 && start + pdo > out.len() {
        out.resize(start + pdo, 0);
    }
    ch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(hdgst: bool, ddgst: bool) -> Negotiated {
        Negotiated {
            established: true,
            hdgst,
            ddgst,
            pda: 0,
            plen_max: 1 << 20,
        }
    }

    #[test]
    fn crc32c_known_answer() {
        // The standard CRC-32C check value.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c_append(crc32c(b"1234"), b"56789"), 0xe306_9283);
    }

    #[test]
    fn framed_pdus_pass_the_receivers_check() {
        for (hd, dd) in [(false, false), (true, false), (false, true), (true, true)] {
            for data_len in [0usize, 1, 4096] {
                let mut cmd = CapsuleCmd::default();
                let mut out = Vec::new();
                let ch = frame(
                    &mut out,
                    cmd.as_mut_bytes(),
                    PduType::CapsuleCmd,
                    0,
                    &Negotiated {
                        established: true,
                        hdgst: hd,
                        ddgst: dd,
                        pda: 0,
                        plen_max: 0,
                    },
                    data_len,
                );
                out.extend(std::iter::repeat_n(0xab, data_len));
                if dd && data_len > 0 {
                    let d = crc32c(&out[out.len() - data_len..]);
                    out.extend_from_slice(&d.to_le_bytes());
                }
                assert_eq!(out.len(), ch.plen.get() as usize);
                let l = check_header(&ch, Receiver::Controller, &est(hd, dd)).unwrap();
                assert_eq!(l.data_len, data_len, "{hd} {dd}");
                assert_eq!(l.hdgst, hd);
                if hd {
                    let got = u32::from_le_bytes(out[72..76].try_into().unwrap());
                    assert_eq!(got, crc32c(&out[..72]));
                }
                if data_len > 0 {
                    assert_eq!(
                        &out[l.data_offset..l.data_offset + data_len],
                        &vec![0xab; data_len][..]
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "fits PLEN")]
    fn a_pdu_longer_than_plen_can_say_is_refused_not_wrapped() {
        // Found by the tcp_pdu fuzz target: 4 GiB of data framed with a PLEN of 43.
        let mut h = DataHeader::default();
        frame(
            &mut Vec::new(),
            h.as_mut_bytes(),
            PduType::C2hData,
            0,
            &est(false, false),
            u32::MAX as usize,
        );
    }

    #[test]
    fn data_is_placed_at_the_senders_alignment() {
        let mut h = DataHeader::default();
        let mut out = Vec::new();
        // CPDA 7: data on 32-byte boundaries.
        let ch = frame(
            &mut out,
            h.as_mut_bytes(),
            PduType::H2cData,
            FLAG_LAST_PDU,
            &Negotiated {
                established: true,
                hdgst: true,
                ddgst: false,
                pda: 7,
                plen_max: 0,
            },
            100,
        );
        assert_eq!(ch.pdo, 32);
        assert_eq!(out.len(), 32);
        let neg = Negotiated {
            pda: 7,
            ..est(true, false)
        };
        let l = check_header(&ch, Receiver::Controller, &neg).unwrap();
        assert_eq!((l.data_offset, l.data_len), (32, 100));
    }

    #[test]
    fn malformed_headers_get_the_right_fatal_error() {
        let neg = est(false, false);
        let ok = CommonHeader {
            pdu_type: PduType::CapsuleCmd as u8,
            flags: 0,
            hlen: 72,
            pdo: 72,
            plen: U32::new(72 + 512),
        };
        check_header(&ok, Receiver::Controller, &neg).unwrap();
        let cases: Vec<(CommonHeader, Receiver, Negotiated, Fes, u32)> = vec![
            // Unknown type.
            (
                CommonHeader {
                    pdu_type: 0x08,
                    ..ok
                },
                Receiver::Controller,
                neg,
                Fes::InvalidHeaderField,
                0,
            ),
            // A C2H type sent to the controller.
            (
                CommonHeader {
                    pdu_type: 0x07,
                    hlen: 24,
                    pdo: 24,
                    ..ok
                },
                Receiver::Controller,
                neg,
                Fes::InvalidHeaderField,
                0,
            ),
            // Wrong HLEN.
            (
                CommonHeader { hlen: 70, ..ok },
                Receiver::Controller,
                neg,
                Fes::InvalidHeaderField,
                2,
            ),
            // PDO inside the header.
            (
                CommonHeader { pdo: 8, ..ok },
                Receiver::Controller,
                neg,
                Fes::InvalidHeaderField,
                3,
            ),
            // PLEN shorter than the header.
            (
                CommonHeader {
                    plen: U32::new(10),
                    pdo: 0,
                    ..ok
                },
                Receiver::Controller,
                neg,
                Fes::InvalidHeaderField,
                4,
            ),
            // PLEN of 0xFFFFFFFF.
            (
                CommonHeader {
                    plen: U32::new(u32::MAX),
                    ..ok
                },
                Receiver::Controller,
                neg,
                Fes::DataTransferLimitExceeded,
                4,
            ),
            // A header digest that was not negotiated.
            (
                CommonHeader {
                    flags: FLAG_HDGSTF,
                    ..ok
                },
                Receiver::Controller,
                neg,
                Fes::InvalidHeaderField,
                1,
            ),
            // No header digest where one was negotiated.
            (
                ok,
                Receiver::Controller,
                est(true, false),
                Fes::InvalidHeaderField,
                1,
            ),
            // A command before ICReq.
            (
                ok,
                Receiver::Controller,
                Negotiated::default(),
                Fes::PduSequenceError,
                0,
            ),
            // An ICReq after the exchange.
            (
                CommonHeader {
                    pdu_type: 0,
                    hlen: 128,
                    pdo: 0,
                    plen: U32::new(128),
                    flags: 0,
                },
                Receiver::Controller,
                neg,
                Fes::PduSequenceError,
                0,
            ),
            // Data on an R2T (which never carries any), seen by the host.
            (
                CommonHeader {
                    pdu_type: PduType::R2t as u8,
                    hlen: 24,
                    pdo: 24,
                    plen: U32::new(48),
                    flags: 0,
                },
                Receiver::Host,
                neg,
                Fes::InvalidHeaderField,
                4,
            ),
            // A TermReq longer than 152 bytes.
            (
                CommonHeader {
                    pdu_type: PduType::H2cTermReq as u8,
                    hlen: 24,
                    pdo: 0,
                    plen: U32::new(200),
                    flags: 0,
                },
                Receiver::Controller,
                neg,
                Fes::InvalidHeaderField,
                4,
            ),
        ];
        for (i, (ch, rx, n, fes, fei)) in cases.into_iter().enumerate() {
            let e = check_header(&ch, rx, &n).unwrap_err();
            assert_eq!((e.fes, e.fei), (fes, fei), "case {i}: {ch:?}");
        }
    }

    #[test]
    fn ic_pdus_check_before_the_exchange() {
        let mut req = <IcReq as zerocopy::FromZeros>::new_zeroed();
        let mut out = Vec::new();
        let ch = frame(
            &mut out,
            req.as_mut_bytes(),
            PduType::IcReq,
            0,
            &Negotiated {
                established: true,
                hdgst: true,
                ddgst: true,
                pda: 0,
                plen_max: 0,
            },
            0,
        );
        assert_eq!(ch.plen.get(), 128);
        assert_eq!(ch.flags, 0, "no digests on IC PDUs");
        let l = check_header(&ch, Receiver::Controller, &Negotiated::default()).unwrap();
        assert_eq!(l.pdu_type, PduType::IcReq);
        assert_eq!(l.plen, 128);
    }

    #[test]
    fn any_bytes_give_a_verdict_not_a_panic() {
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ch = CommonHeader::read_from_bytes(&x.to_le_bytes()).unwrap();
            for rx in [Receiver::Controller, Receiver::Host] {
                for n in [Negotiated::default(), est(true, true), est(false, false)] {
                    if let Ok(l) = check_header(&ch, rx, &n) {
                        assert!(l.data_offset + l.data_len <= l.plen);
                        assert!(l.hlen <= l.plen);
                    }
                }
            }
        }
    }
}
