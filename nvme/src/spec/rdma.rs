//! NVMe/RDMA: the private data of the RDMA connection manager's messages (fabrics 7.3,
//! "RDMA Transport", the RDMA_CM_REQUEST, RDMA_CM_ACCEPT and RDMA_CM_REJECT layouts).
//!
//! Command capsules travel as RDMA SENDs (an SQE, then in-capsule data), responses as
//! SENDs of one CQE; data moves by RDMA READ and WRITE named by keyed SGL data blocks
//! ([`super::cmd::SglDescriptor::keyed`]).

use super::{assert_offset, assert_size};
use zerocopy::little_endian::U16;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The only Record Format defined (fabrics 7.3.2).
pub const RECFMT: u16 = 0;

/// RDMA_CM_REQUEST private data: what the host asks for a queue (fabrics 7.3.2).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct CmReq {
    /// Record Format: 0.
    pub recfmt: U16,
    /// Queue ID (0: admin).
    pub qid: U16,
    /// Host Receive Queue Size: response capsules the host can take at once.
    pub hrqsize: U16,
    /// Host Send Queue Size, 0's based: the SQ's entries minus one.
    pub hsqsize: U16,
    /// Controller ID (I/O queues; some hosts leave it 0).
    pub cntlid: U16,
    /// Reserved.
    pub rsvd: [u8; 22],
}
assert_size!(CmReq, 32);
assert_offset!(CmReq, hsqsize, 6);

/// RDMA_CM_ACCEPT private data (fabrics 7.3.3).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct CmRep {
    /// Record Format: 0.
    pub recfmt: U16,
    /// Controller Receive Queue Size: command capsules the target can take at once.
    pub crqsize: U16,
    /// Reserved.
    pub rsvd: [u8; 28],
}
assert_size!(CmRep, 32);

/// RDMA_CM_REJECT private data (fabrics 7.3.4).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct CmRej {
    /// Record Format: 0.
    pub recfmt: U16,
    /// Why, see [`rej_status`].
    pub sts: U16,
}
assert_size!(CmRej, 4);

/// Reasons of an RDMA_CM_REJECT (fabrics 7.3.4, Figure 62).
pub mod rej_status {
    /// The private data's length is wrong.
    pub const INVALID_PRIVATE_DATA_LENGTH: u16 = 1;
    /// RECFMT is not 0.
    pub const INVALID_RECFMT: u16 = 2;
    /// The queue ID is not valid.
    pub const INVALID_QID: u16 = 3;
    /// HSQSIZE is not valid.
    pub const INVALID_HSQSIZE: u16 = 4;
    /// HRQSIZE is not valid.
    pub const INVALID_HRQSIZE: u16 = 5;
    /// The target lacks the resources.
    pub const NO_RESOURCES: u16 = 6;
    /// IRD is not valid.
    pub const INVALID_IRD: u16 = 7;
    /// ORD is not valid.
    pub const INVALID_ORD: u16 = 8;
}

impl CmReq {
    /// A request for queue `qid` of `entries` SQ entries (hsqsize = entries - 1), taking
    /// `hrqsize` responses at once.
    pub fn new(qid: u16, entries: u16, hrqsize: u16, cntlid: u16) -> CmReq {
        let mut r = CmReq::new_zeroed();
        r.recfmt = U16::new(RECFMT);
        r.qid = U16::new(qid);
        r.hrqsize = U16::new(hrqsize);
        r.hsqsize = U16::new(entries.saturating_sub(1));
        r.cntlid = U16::new(cntlid);
        r
    }

    /// Reads a request from private data (which may carry trailing bytes: the
    /// connection manager pads it); `Err` with the reject status when it cannot be one.
    pub fn parse(private: &[u8]) -> Result<CmReq, u16> {
        let Some(b) = private.get(..32) else {
            return Err(rej_status::INVALID_PRIVATE_DATA_LENGTH);
        };
        let r = CmReq::read_from_bytes(b).expect("32 bytes");
        if r.recfmt.get() != RECFMT {
            return Err(rej_status::INVALID_RECFMT);
        }
        Ok(r)
    }
}

impl CmRep {
    /// An accept with room for `crqsize` commands.
    pub fn new(crqsize: u16) -> CmRep {
        let mut r = CmRep::new_zeroed();
        r.crqsize = U16::new(crqsize);
        r
    }
}

impl CmRej {
    /// A reject for reason `sts`.
    pub fn new(sts: u16) -> CmRej {
        CmRej {
            recfmt: U16::new(RECFMT),
            sts: U16::new(sts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_bad_ones_say_why() {
        let r = CmReq::new(3, 128, 128, 1);
        assert_eq!(r.hsqsize.get(), 127);
        let mut b = r.as_bytes().to_vec();
        // rdma_cm pads private data to the transport's size: extra bytes are fine.
        b.extend_from_slice(&[0; 24]);
        assert_eq!(CmReq::parse(&b), Ok(r));
        assert_eq!(
            CmReq::parse(&b[..16]),
            Err(rej_status::INVALID_PRIVATE_DATA_LENGTH)
        );
        b[0] = 1;
        assert_eq!(CmReq::parse(&b), Err(rej_status::INVALID_RECFMT));
        assert_eq!(CmRep::new(32).as_bytes()[2..4], [32, 0]);
        assert_eq!(
            CmRej::new(rej_status::NO_RESOURCES).as_bytes(),
            &[0, 0, 6, 0]
        );
    }
}
