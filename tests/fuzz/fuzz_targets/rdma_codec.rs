//! NVMe/RDMA without a device: the target's data placement of a command capsule
//! (engine/src/nvmf/rdma.rs), the host's SGL choice (nvme/src/fabrics/rdma.rs), and the
//! RDMA_CM private data codec (nvme/src/spec/rdma.rs).
//!
//! Input: byte 0 picks the part; then
//! - 0: a capsule (64 bytes of SQE, then in-capsule data up to 8 KiB) and the largest
//!   transfer (4 bytes) for the target's placement: the placement lies inside the
//!   in-capsule data, its length within the largest transfer, data only where the
//!   opcode moves some;
//! - 1: a host command (direction, length, in-capsule limit, address, rkey, largest
//!   transfer): the SGL the host writes, read by the target, names the same bytes in
//!   the same place (in the capsule or at the host's address and key), or the target
//!   refuses a length over its largest transfer (lengths are those a host queue lets
//!   through: at most [`KEYED_TRANSFER_MAX`]);
//! - 2: private data for RDMA_CM_REQUEST: parsing gives a request that encodes back
//!   to the same 32 bytes, or the reject status the bytes deserve; and a request built
//!   from (qid, entries, hrqsize, cntlid) parses back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pollux_engine::nvmf::rdma::fuzzing::{self, Placement};
use pollux_fuzz::input::Reader;
use pollux_nvme::fabrics::XferDir;
use pollux_nvme::fabrics::rdma::{KEYED_TRANSFER_MAX, capsule_sgl};
use pollux_nvme::spec::cmd::{Sqe, Status, sgl_subtype, sgl_type};
use pollux_nvme::spec::rdma::{CmRej, CmRep, CmReq, RECFMT, rej_status};
use zerocopy::{FromBytes, IntoBytes};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    match r.u8() % 3 {
        0 => placement(&mut r),
        1 => host_and_target_agree(&mut r),
        _ => private_data(&mut r),
    }
});

fn placement(r: &mut Reader<'_>) {
    let sqe = Sqe::read_from_bytes(&r.array::<64>()).expect("64 bytes");
    let max = r.u32();
    let icd_len = r.len().min(8192);
    let (len, p) = fuzzing::data_place(&sqe, icd_len, max);
    let sgl = sqe.sgl();
    let dir = fuzzing::direction(&sqe);
    match p {
        Ok(Placement::None) => assert_eq!(len, 0, "no data, yet a length: {sgl:?}"),
        Ok(Placement::InCapsule(range)) => {
            assert!(
                range.end <= icd_len,
                "{range:?} beyond {icd_len} bytes of capsule data"
            );
            assert_eq!(range.len(), len as usize);
            assert!(len > 0 && len <= max);
            assert_eq!(dir, XferDir::HostToCtrl, "in-capsule data for {dir:?}");
            assert_eq!(
                (sgl.ty(), sgl.subtype()),
                (sgl_type::DATA_BLOCK, sgl_subtype::OFFSET)
            );
        }
        Ok(Placement::Keyed { rkey, addr, .. }) => {
            assert!(len > 0 && len <= max);
            assert_ne!(
                dir,
                XferDir::None,
                "keyed data on a command that moves none"
            );
            assert_eq!(sgl.ty(), sgl_type::KEYED_DATA_BLOCK);
            assert_eq!(
                (rkey, addr, len),
                (sgl.key(), sgl.addr.get(), sgl.keyed_len())
            );
        }
        Err(s) => assert!(!s.is_success(), "a failure with a success status"),
    }
}

fn host_and_target_agree(r: &mut Reader<'_>) {
    let (dir, opc) = match r.u8() % 3 {
        0 => (XferDir::None, 0x00u8),
        1 => (XferDir::HostToCtrl, 0x01),
        _ => (XferDir::CtrlToHost, 0x02),
    };
    // The queue refuses longer transfers before the SGL is chosen (its transfer limit).
    let len = if dir == XferDir::None {
        0
    } else {
        r.u32() % (KEYED_TRANSFER_MAX + 1)
    };
    let in_capsule = r.u32() % (1 << 20);
    let addr = r.u64();
    let rkey = r.u32();
    let max = r.u32();
    let (sgl, inline) = capsule_sgl(dir, len, in_capsule, addr, rkey);
    let mut sqe = Sqe {
        opc,
        ..Default::default()
    };
    sqe.set_sgl(&sgl);
    assert_eq!(fuzzing::direction(&sqe), dir);
    let icd_len = if inline { len as usize } else { 0 };
    let (got_len, p) = fuzzing::data_place(&sqe, icd_len, max);
    assert_eq!(
        got_len, len,
        "the host wrote {len} bytes into {sgl:?}; the target reads {got_len}"
    );
    if len > max {
        assert_eq!(p, Err(Status::SGL_LENGTH_INVALID));
        return;
    }
    let want = if len == 0 {
        Placement::None
    } else if inline {
        Placement::InCapsule(0..len as usize)
    } else {
        Placement::Keyed {
            rkey,
            addr,
            invalidate: false,
        }
    };
    assert_eq!(
        p,
        Ok(want),
        "host {dir:?} {len} bytes, in-capsule up to {in_capsule}"
    );
}

fn private_data(r: &mut Reader<'_>) {
    let (qid, entries, hrqsize, cntlid) = (r.u16(), r.u16(), r.u16(), r.u16());
    let built = CmReq::new(qid, entries, hrqsize, cntlid);
    assert_eq!(built.hsqsize.get(), entries.saturating_sub(1));
    let mut b = built.as_bytes().to_vec();
    b.extend_from_slice(&[0; 24]);
    assert_eq!(CmReq::parse(&b), Ok(built));
    let rep = CmRep::new(entries);
    assert_eq!(
        CmRep::read_from_bytes(rep.as_bytes()).expect("32 bytes"),
        rep
    );
    assert_eq!(rep.recfmt.get(), RECFMT);
    let rej = CmRej::new(hrqsize);
    assert_eq!(rej.as_bytes()[2..4], hrqsize.to_le_bytes());
    let private = r.rest();
    match CmReq::parse(private) {
        Ok(req) => {
            assert_eq!(req.as_bytes(), &private[..32]);
            assert_eq!(req.recfmt.get(), RECFMT);
        }
        Err(rej_status::INVALID_PRIVATE_DATA_LENGTH) => assert!(private.len() < 32),
        Err(rej_status::INVALID_RECFMT) => {
            assert!(private.len() >= 32);
            assert_ne!(u16::from_le_bytes([private[0], private[1]]), RECFMT);
        }
        Err(s) => panic!("reject status {s} for {private:02x?}"),
    }
}
