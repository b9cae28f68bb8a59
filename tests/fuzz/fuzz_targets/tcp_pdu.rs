//! The NVMe/TCP PDU codec (nvme/src/spec/tcp.rs) on arbitrary bytes.
//!
//! Input: byte 0 picks the receiver and the connection's state (bit 0: the host
//! receives, else the controller; bit 1: the IC exchange is done; bits 2 and 3:
//! header and data digests; bits 4-7 with byte 1: PDA and the largest PDU accepted),
//! the rest is a byte stream read PDU by PDU as a receiver reads it.
//!
//! Checked, for every header `check_header` accepts: the layout lies inside PLEN
//! (header, header digest, padding, data, data digest, in that order), data only on
//! types that carry it, the type-specific header decodes, digests compute over the
//! right bytes; and the sender's side agrees: framing the same type, flags and data
//! length with [`pdu::frame`] gives a header the same receiver accepts with the same
//! data length, digests and PLEN. Then, apart from the input, framing any (type,
//! flags, data length) a sender may send passes the receiver's check.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pollux_fuzz::input::Reader;
use pollux_nvme::spec::cmd::Sqe;
use pollux_nvme::spec::tcp::{
    self as pdu, CapsuleCmd, CapsuleResp, CommonHeader, DIGEST_LEN, DataHeader, IcReq, IcResp,
    Negotiated, PduLayout, PduType, R2t, Receiver, TermReq,
};
use zerocopy::FromBytes;

const PLEN_MAX: [u32; 4] = [0, 4096 + 256, 1 << 20, u32::MAX];

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let a = r.u8();
    let b = r.u8();
    let rx = if a & 1 != 0 {
        Receiver::Host
    } else {
        Receiver::Controller
    };
    let neg = Negotiated {
        established: a & 2 != 0,
        hdgst: a & 4 != 0,
        ddgst: a & 8 != 0,
        pda: (a >> 4) | (b & 1) << 4,
        plen_max: PLEN_MAX[(b >> 1) as usize & 3],
    };
    // The sender's framing on its own: every PDU a sender may produce passes.
    frame_then_check(rx, &neg, b >> 3, r.u16() as usize);
    let stream = r.rest();
    let mut at = 0;
    while stream.len() - at >= 8 {
        let ch = CommonHeader::read_from_bytes(&stream[at..at + 8]).expect("8 bytes");
        let Ok(l) = pdu::check_header(&ch, rx, &neg) else {
            return;
        };
        check_layout(&ch, &l, &neg);
        refame_agrees(&l, rx, &neg);
        if stream.len() - at < l.plen {
            return;
        }
        decode(&stream[at..at + l.plen], &l);
        at += l.plen;
    }
});

/// The layout's parts follow each other inside PLEN.
fn check_layout(ch: &CommonHeader, l: &PduLayout, neg: &Negotiated) {
    assert_eq!(l.hlen, l.pdu_type.hlen() as usize, "{ch:?}");
    assert_eq!(l.plen, ch.plen.get() as usize);
    assert!(l.plen <= neg.plen_max.max(pdu::TERM_REQ_PLEN_MAX) as usize);
    let head = l.hlen + if l.hdgst { DIGEST_LEN } else { 0 };
    assert!(head <= l.plen, "{ch:?} {l:?}");
    if l.data_len == 0 {
        assert_eq!(
            l.plen, head,
            "bytes beyond the header of a PDU without data"
        );
        assert!(!l.ddgst, "a data digest without data: {ch:?}");
    } else {
        assert!(l.pdu_type.carries_data(), "data on a {:?}", l.pdu_type);
        assert!(
            l.data_offset >= head,
            "data inside the header: {ch:?} {l:?}"
        );
        let tail = if l.ddgst { DIGEST_LEN } else { 0 };
        assert_eq!(l.data_offset + l.data_len + tail, l.plen, "{ch:?} {l:?}");
    }
    if l.pdu_type.has_digests() && neg.established {
        assert_eq!(l.hdgst, neg.hdgst, "{ch:?}");
        assert_eq!(l.ddgst, neg.ddgst && l.data_len > 0, "{ch:?}");
    } else {
        assert!(!l.hdgst && !l.ddgst, "digests on a {:?}", l.pdu_type);
    }
}

/// Framing what was received (type, flags, data length) passes the same check.
fn refame_agrees(l: &PduLayout, rx: Receiver, neg: &Negotiated) {
    let flags = l.flags & !(pdu::FLAG_HDGSTF | pdu::FLAG_DDGSTF);
    let Some((ch, framed_len)) = frame(l.pdu_type, flags, neg, l.data_len) else {
        return;
    };
    let back = pdu::check_header(&ch, rx, neg)
        .unwrap_or_else(|e| panic!("framed {ch:?} from accepted {l:?} is refused: {e}"));
    assert_eq!(back.data_len, l.data_len);
    assert_eq!(back.hdgst, l.hdgst);
    assert_eq!(back.ddgst, l.ddgst);
    assert_eq!(back.flags, l.flags);
    if l.data_len > 0 {
        assert_eq!(
            back.data_offset, framed_len,
            "PDO and the padding framed disagree"
        );
        // The sender pads to its alignment: never less than the receiver accepted.
        assert!(back.plen >= l.data_len + l.hlen);
    }
}

/// Frames a PDU of `ty` (an all-zero type-specific header) and returns its common
/// header and the bytes framed (header, digest, padding); `None` where no sender
/// may send it (see [`sendable`]).
fn frame(
    ty: PduType,
    flags: u8,
    neg: &Negotiated,
    data_len: usize,
) -> Option<(CommonHeader, usize)> {
    // PLEN has 32 bits: no sender frames more (frame panics; its unit test says so).
    if data_len > u32::MAX as usize - 256 {
        return None;
    }
    let mut header = vec![0u8; ty.hlen() as usize];
    let mut out = Vec::new();
    let ch = pdu::frame(&mut out, &mut header, ty, flags, neg, data_len);
    // The header as framed is the header appended.
    assert_eq!(&out[..8], zerocopy::IntoBytes::as_bytes(&ch));
    assert_eq!(&out[..header.len()], &header[..]);
    if ch.flags & pdu::FLAG_HDGSTF != 0 {
        let d = u32::from_le_bytes(out[header.len()..header.len() + 4].try_into().expect("4"));
        assert_eq!(d, pdu::crc32c(&header));
    }
    let tail = if ch.flags & pdu::FLAG_DDGSTF != 0 {
        DIGEST_LEN
    } else {
        0
    };
    if data_len > 0 {
        assert_eq!(ch.plen.get() as usize, out.len() + data_len + tail);
    } else {
        assert_eq!(ch.plen.get() as usize, out.len());
    }
    sendable(ty, neg, ch.plen.get(), data_len).then_some((ch, out.len()))
}

/// What a sender may send on a connection in state `neg`: data only on types that
/// carry it, TermReqs of at most 152 bytes, PDUs the receiver takes.
fn sendable(ty: PduType, neg: &Negotiated, plen: u32, data_len: usize) -> bool {
    let is_ic = matches!(ty, PduType::IcReq | PduType::IcResp);
    let is_term = matches!(ty, PduType::H2cTermReq | PduType::C2hTermReq);
    (data_len == 0 || ty.carries_data())
        && !(is_ic && data_len > 0)
        && !(is_term && plen > pdu::TERM_REQ_PLEN_MAX)
        && plen <= neg.plen_max.max(pdu::TERM_REQ_PLEN_MAX)
        && is_ic != neg.established
}

/// Every (type, flags) a sender may frame with `data_len` bytes passes the check.
fn frame_then_check(rx: Receiver, neg: &Negotiated, flag_bits: u8, data_len: usize) {
    let flags = match flag_bits & 3 {
        0 => 0,
        1 => pdu::FLAG_LAST_PDU,
        2 => pdu::FLAG_LAST_PDU | pdu::FLAG_SUCCESS,
        _ => flag_bits & 0xf0,
    };
    for v in [0x00u8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x09] {
        let ty = PduType::from_u8(v).expect("a type");
        if ty.is_h2c() != (rx == Receiver::Controller) {
            continue;
        }
        let Some((ch, framed)) = frame(ty, flags, neg, data_len) else {
            continue;
        };
        let l = pdu::check_header(&ch, rx, neg).unwrap_or_else(|e| {
            panic!("{ty:?} framed on {neg:?} with {data_len} bytes: {ch:?} refused: {e}")
        });
        assert_eq!(l.data_len, data_len, "{ch:?}");
        if data_len > 0 {
            assert_eq!(l.data_offset, framed);
            let align = (neg.pda as usize + 1) * 4;
            let is_term = matches!(ty, PduType::H2cTermReq | PduType::C2hTermReq);
            assert!(
                is_term || l.data_offset.is_multiple_of(align),
                "data at {} is not at the sender's alignment {align}",
                l.data_offset
            );
        }
        check_layout(&ch, &l, neg);
    }
}

/// The type-specific header decodes, and digests compute, over a whole PDU.
fn decode(p: &[u8], l: &PduLayout) {
    let h = &p[..l.hlen];
    match l.pdu_type {
        PduType::IcReq => {
            let x = IcReq::read_from_bytes(h).expect("IcReq");
            std::hint::black_box((x.pfv.get(), x.hpda, x.dgst, x.maxr2t.get()));
        }
        PduType::IcResp => {
            let x = IcResp::read_from_bytes(h).expect("IcResp");
            std::hint::black_box((x.pfv.get(), x.cpda, x.maxh2cdata.get()));
        }
        PduType::H2cTermReq | PduType::C2hTermReq => {
            let x = TermReq::read_from_bytes(h).expect("TermReq");
            std::hint::black_box((x.fes.get(), x.fei.get()));
        }
        PduType::CapsuleCmd => {
            let x = CapsuleCmd::read_from_bytes(h).expect("CapsuleCmd");
            let s: Sqe = x.sqe;
            let sgl = s.sgl();
            std::hint::black_box((
                sgl.ty(),
                sgl.subtype(),
                sgl.keyed_len(),
                sgl.key(),
                s.fctype(),
            ));
        }
        PduType::CapsuleResp => {
            let x = CapsuleResp::read_from_bytes(h).expect("CapsuleResp");
            std::hint::black_box(x.cqe.status());
        }
        PduType::H2cData | PduType::C2hData => {
            let x = DataHeader::read_from_bytes(h).expect("DataHeader");
            std::hint::black_box((x.cccid.get(), x.datao.get(), x.datal.get()));
        }
        PduType::R2t => {
            let x = R2t::read_from_bytes(h).expect("R2t");
            std::hint::black_box((x.r2to.get(), x.r2tl.get()));
        }
    }
    if l.hdgst {
        let want = u32::from_le_bytes(p[l.hlen..l.hlen + 4].try_into().expect("4"));
        std::hint::black_box(pdu::crc32c(h) == want);
    }
    if l.data_len > 0 {
        let d = &p[l.data_offset..l.data_offset + l.data_len];
        // CRC32C over pieces equals CRC32C over the whole.
        let mid = d.len() / 2;
        assert_eq!(
            pdu::crc32c_append(pdu::crc32c(&d[..mid]), &d[mid..]),
            pdu::crc32c(d)
        );
    }
}
