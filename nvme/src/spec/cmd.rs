//! Submission and completion queue entries, SGL descriptors and status codes.

use super::{assert_offset, assert_size};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A submission queue entry (base 4.2, Figure 88: Common Command Format).
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
pub struct Sqe {
    /// Opcode (base 4.2, CDW0 bits 7:0).
    pub opc: u8,
    /// Fused operation (bits 1:0) and PRP or SGL for Data Transfer, PSDT (bits 7:6) (base 4.2, CDW0).
    pub flags: u8,
    /// Command Identifier (base 4.2, CDW0 bits 31:16).
    pub cid: U16,
    /// Namespace Identifier (base 4.2, CDW1).
    pub nsid: U32,
    /// Command Dword 2 (base 4.2).
    pub cdw2: U32,
    /// Command Dword 3 (base 4.2).
    pub cdw3: U32,
    /// Metadata Pointer (base 4.2, CDW4-5).
    pub mptr: U64,
    /// Data Pointer: PRP1/PRP2 or SGL1 (base 4.2, CDW6-9).
    pub dptr: [u8; 16],
    /// Command Dword 10 (command specific).
    pub cdw10: U32,
    /// Command Dword 11 (command specific).
    pub cdw11: U32,
    /// Command Dword 12 (command specific).
    pub cdw12: U32,
    /// Command Dword 13 (command specific).
    pub cdw13: U32,
    /// Command Dword 14 (command specific).
    pub cdw14: U32,
    /// Command Dword 15 (command specific).
    pub cdw15: U32,
}
assert_size!(Sqe, 64);
assert_offset!(Sqe, cid, 2);
assert_offset!(Sqe, nsid, 4);
assert_offset!(Sqe, mptr, 16);
assert_offset!(Sqe, dptr, 24);
assert_offset!(Sqe, cdw10, 40);
assert_offset!(Sqe, cdw15, 60);

/// PSDT value: SGLs with the metadata pointer as an address (base 4.2, CDW0 bits 7:6).
pub const PSDT_SGL_MPTR_CONTIGUOUS: u8 = 0b01 << 6;

impl Sqe {
    /// An NVM command on blocks `slba..slba+nlb` of `nsid` (Read, Write, Write Zeroes,
    /// Compare: SLBA in CDW10-11, 0's based NLB in CDW12; nvm 3.2). `nlb` is 1 to 65536.
    pub fn nvm_rw(opc: u8, nsid: u32, slba: u64, nlb: u32) -> Sqe {
        debug_assert!((1..=65536).contains(&nlb));
        Sqe {
            opc,
            nsid: U32::new(nsid),
            cdw10: U32::new(slba as u32),
            cdw11: U32::new((slba >> 32) as u32),
            cdw12: U32::new(nlb - 1),
            ..Default::default()
        }
    }

    /// Fabrics Command Type, byte 4 of a Fabrics command (fabrics 6.1).
    pub fn fctype(&self) -> u8 {
        self.nsid.get().to_le_bytes()[0]
    }

    /// The data pointer as an SGL descriptor.
    pub fn sgl(&self) -> SglDescriptor {
        SglDescriptor::read_from_bytes(&self.dptr).expect("16 bytes")
    }

    /// Sets the data pointer to an SGL descriptor and PSDT to SGLs.
    pub fn set_sgl(&mut self, sgl: &SglDescriptor) {
        self.dptr.copy_from_slice(sgl.as_bytes());
        self.flags = (self.flags & 0x3f) | PSDT_SGL_MPTR_CONTIGUOUS;
    }
}

/// A completion queue entry (base 4.6, Figure 89: Common Completion Queue Entry).
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
pub struct Cqe {
    /// Command specific Dword 0 (base 4.6).
    pub dw0: U32,
    /// Command specific Dword 1 (base 4.6).
    pub dw1: U32,
    /// SQ Head Pointer (base 4.6, DW2 bits 15:0).
    pub sqhd: U16,
    /// SQ Identifier (base 4.6, DW2 bits 31:16).
    pub sqid: U16,
    /// Command Identifier (base 4.6, DW3 bits 15:0).
    pub cid: U16,
    /// Phase Tag (bit 0) and Status (bits 15:1) (base 4.6.1).
    pub status: U16,
}
assert_size!(Cqe, 16);
assert_offset!(Cqe, sqhd, 8);
assert_offset!(Cqe, cid, 12);
assert_offset!(Cqe, status, 14);

impl Cqe {
    /// The status (without the phase tag).
    pub fn status(&self) -> Status {
        Status::from_field(self.status.get())
    }

    /// The phase tag.
    pub fn phase(&self) -> bool {
        self.status.get() & 1 != 0
    }

    /// Sets the status, keeping the phase tag.
    pub fn set_status(&mut self, s: Status) {
        let phase = self.status.get() & 1;
        self.status = U16::new(s.to_field() | phase);
    }
}

/// An NVMe status (base 4.6.1, Figure 92: Completion Queue Entry: Status Field), as
/// data: what a command returns to its initiator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Status {
    /// Status Code Type (bits 11:9 of the field).
    pub sct: u8,
    /// Status Code (bits 8:1).
    pub sc: u8,
    /// More: more information in the Error log (bit 14).
    pub more: bool,
    /// Do Not Retry (bit 15).
    pub dnr: bool,
}

impl Status {
    /// Successful Completion.
    pub const SUCCESS: Status = Status::generic(0x00, false);
    /// Invalid Command Opcode.
    pub const INVALID_OPCODE: Status = Status::generic(0x01, true);
    /// Invalid Field in Command.
    pub const INVALID_FIELD: Status = Status::generic(0x02, true);
    /// Command ID Conflict.
    pub const CID_CONFLICT: Status = Status::generic(0x03, true);
    /// Data Transfer Error.
    pub const DATA_TRANSFER_ERROR: Status = Status::generic(0x04, false);
    /// Internal Error.
    pub const INTERNAL_ERROR: Status = Status::generic(0x06, false);
    /// Command Abort Requested.
    pub const ABORT_REQUESTED: Status = Status::generic(0x07, false);
    /// Command Aborted due to SQ Deletion.
    pub const ABORTED_SQ_DELETION: Status = Status::generic(0x08, false);
    /// Invalid Namespace or Format.
    pub const INVALID_NAMESPACE: Status = Status::generic(0x0b, true);
    /// Command Sequence Error.
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::generic(0x0c, true);
    /// Data SGL Length Invalid.
    pub const SGL_LENGTH_INVALID: Status = Status::generic(0x0f, true);
    /// SGL Descriptor Type Invalid.
    pub const SGL_DESCRIPTOR_TYPE_INVALID: Status = Status::generic(0x11, true);
    /// SGL Offset Invalid.
    pub const SGL_OFFSET_INVALID: Status = Status::generic(0x16, true);
    /// Command Interrupted: the host may retry.
    pub const COMMAND_INTERRUPTED: Status = Status::generic(0x21, false);
    /// Transient Transport Error: retry may succeed (base 4.1.3.2, 22h).
    pub const TRANSIENT_TRANSPORT_ERROR: Status = Status::generic(0x22, false);
    /// LBA Out of Range.
    pub const LBA_OUT_OF_RANGE: Status = Status::generic(0x80, true);
    /// Capacity Exceeded.
    pub const CAPACITY_EXCEEDED: Status = Status::generic(0x81, true);
    /// Namespace Not Ready.
    pub const NAMESPACE_NOT_READY: Status = Status::generic(0x82, false);
    /// Connect: Incompatible Format (fabrics 3.3, SCT 1).
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = Status::specific(0x80);
    /// Connect: Controller Busy.
    pub const CONNECT_CONTROLLER_BUSY: Status = Status::specific(0x81);
    /// Connect: Invalid Parameters.
    pub const CONNECT_INVALID_PARAMETERS: Status = Status::specific(0x82);
    /// Connect: Restart Discovery.
    pub const CONNECT_RESTART_DISCOVERY: Status = Status::specific(0x83);
    /// Connect: Invalid Host.
    pub const CONNECT_INVALID_HOST: Status = Status::specific(0x84);
    /// Write Fault (SCT 2, media errors).
    pub const WRITE_FAULT: Status = Status::media(0x80);
    /// Unrecovered Read Error.
    pub const UNRECOVERED_READ_ERROR: Status = Status::media(0x81);
    /// Compare Failure.
    pub const COMPARE_FAILURE: Status = Status::media(0x85);

    /// A Generic Command Status (SCT 0).
    pub const fn generic(sc: u8, dnr: bool) -> Status {
        Status {
            sct: 0,
            sc,
            more: false,
            dnr,
        }
    }

    /// A Command Specific Status (SCT 1), Do Not Retry set.
    pub const fn specific(sc: u8) -> Status {
        Status {
            sct: 1,
            sc,
            more: false,
            dnr: true,
        }
    }

    /// A Media and Data Integrity Error (SCT 2).
    pub const fn media(sc: u8) -> Status {
        Status {
            sct: 2,
            sc,
            more: false,
            dnr: false,
        }
    }

    /// A Path Related Status (SCT 3), Do Not Retry clear: the command may succeed on
    /// another path (base 4.2.3.2.4).
    pub const fn path(sc: u8) -> Status {
        Status {
            sct: 3,
            sc,
            more: false,
            dnr: false,
        }
    }

    /// Reservation Conflict (SCT 0h, SC 83h).
    pub const RESERVATION_CONFLICT: Status = Status::generic(0x83, false);
    /// Host Identifier Inconsistent Format (SCT 0h, SC 18h).
    pub const HOST_ID_INCONSISTENT_FORMAT: Status = Status::generic(0x18, true);

    /// Asymmetric Access Persistent Loss (SCT 3h, SC 01h).
    pub const ANA_PERSISTENT_LOSS: Status = Status::path(0x01);
    /// Asymmetric Access Inaccessible (SCT 3h, SC 02h).
    pub const ANA_INACCESSIBLE: Status = Status::path(0x02);
    /// Asymmetric Access Transition (SCT 3h, SC 03h).
    pub const ANA_TRANSITION: Status = Status::path(0x03);

    /// Whether this is one of the three ANA statuses: the path's ANA state no longer
    /// allows the command, and the host should read the ANA log page.
    pub fn is_ana_error(self) -> bool {
        self.sct == 3 && (0x01..=0x03).contains(&self.sc)
    }

    /// Whether this is Successful Completion.
    pub fn is_success(self) -> bool {
        self.sct == 0 && self.sc == 0
    }

    /// From the 16-bit field of a CQE (the phase tag is ignored).
    pub fn from_field(f: u16) -> Status {
        Status {
            sc: (f >> 1) as u8,
            sct: ((f >> 9) & 0x7) as u8,
            more: f & (1 << 14) != 0,
            dnr: f & (1 << 15) != 0,
        }
    }

    /// To the 16-bit field of a CQE, phase tag clear.
    pub fn to_field(self) -> u16 {
        ((self.sc as u16) << 1)
            | (((self.sct & 0x7) as u16) << 9)
            | ((self.more as u16) << 14)
            | ((self.dnr as u16) << 15)
    }
}

/// SGL descriptor types (base 4.1.2.1, Figure 113), in the high nibble of byte 15.
pub mod sgl_type {
    /// SGL Data Block.
    pub const DATA_BLOCK: u8 = 0x0;
    /// Keyed SGL Data Block (RDMA).
    pub const KEYED_DATA_BLOCK: u8 = 0x4;
    /// Transport SGL Data Block (TCP: data moves by R2T/H2CData or C2HData).
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5;
}

/// SGL descriptor subtypes (base 4.1.2.1, Figure 114), in the low nibble of byte 15.
pub mod sgl_subtype {
    /// Address.
    pub const ADDRESS: u8 = 0x0;
    /// Offset: the address is an offset into the in-capsule data.
    pub const OFFSET: u8 = 0x1;
    /// Transport specific (NVMe/TCP uses 0xA for transport data blocks).
    pub const TRANSPORT: u8 = 0xa;
    /// Keyed data block: invalidate the key once the command completes (RDMA).
    pub const INVALIDATE_KEY: u8 = 0xf;
}

/// An SGL descriptor (base 4.1.2, Figure 112).
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
pub struct SglDescriptor {
    /// Address, or offset into in-capsule data (bytes 7:0).
    pub addr: U64,
    /// Length in bytes (bytes 11:8).
    pub len: U32,
    /// Reserved, or for keyed data blocks the high byte of the length and the key.
    pub rsvd: [u8; 3],
    /// Type (bits 7:4) and subtype (bits 3:0) (byte 15).
    pub id: u8,
}
assert_size!(SglDescriptor, 16);
assert_offset!(SglDescriptor, len, 8);
assert_offset!(SglDescriptor, id, 15);

impl SglDescriptor {
    /// A descriptor of `ty` and `subtype` for `len` bytes at `addr`.
    pub fn new(ty: u8, subtype: u8, addr: u64, len: u32) -> Self {
        SglDescriptor {
            addr: U64::new(addr),
            len: U32::new(len),
            rsvd: [0; 3],
            id: (ty << 4) | (subtype & 0xf),
        }
    }

    /// A Keyed SGL Data Block (RDMA, base 4.3.2.6): `len` bytes (at most 2^24 - 1) at
    /// `addr` of the peer's memory region `key`; subtype [`sgl_subtype::ADDRESS`], or
    /// [`sgl_subtype::INVALIDATE_KEY`] to ask the target to invalidate `key` with its
    /// response.
    pub fn keyed(addr: u64, len: u32, key: u32, subtype: u8) -> Self {
        let k = key.to_le_bytes();
        SglDescriptor {
            addr: U64::new(addr),
            len: U32::new((len & 0x00ff_ffff) | (k[0] as u32) << 24),
            rsvd: [k[1], k[2], k[3]],
            id: (sgl_type::KEYED_DATA_BLOCK << 4) | (subtype & 0xf),
        }
    }

    /// A keyed data block's length (bytes 10:8).
    pub fn keyed_len(&self) -> u32 {
        self.len.get() & 0x00ff_ffff
    }

    /// A keyed data block's key (bytes 14:11).
    pub fn key(&self) -> u32 {
        u32::from_le_bytes([
            (self.len.get() >> 24) as u8,
            self.rsvd[0],
            self.rsvd[1],
            self.rsvd[2],
        ])
    }

    /// The type (high nibble of byte 15).
    pub fn ty(&self) -> u8 {
        self.id >> 4
    }

    /// The subtype (low nibble of byte 15).
    pub fn subtype(&self) -> u8 {
        self.id & 0xf
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_keyed_sgl_packs_its_24_bit_length_and_key_as_the_spec_lays_them_out() {
        let d = SglDescriptor::keyed(0x1122_3344_5566_7788, 0x0012_3456, 0xaabb_ccdd, 0xf);
        let b = d.as_bytes();
        assert_eq!(&b[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[8..11], &[0x56, 0x34, 0x12]);
        assert_eq!(&b[11..15], &[0xdd, 0xcc, 0xbb, 0xaa]);
        assert_eq!(b[15], 0x4f);
        assert_eq!(d.keyed_len(), 0x0012_3456);
        assert_eq!(d.key(), 0xaabb_ccdd);
        assert_eq!(d.ty(), sgl_type::KEYED_DATA_BLOCK);
        assert_eq!(d.subtype(), sgl_subtype::INVALIDATE_KEY);
    }

    use super::*;

    #[test]
    fn status_field_round_trips() {
        for s in [
            Status::SUCCESS,
            Status::LBA_OUT_OF_RANGE,
            Status::CONNECT_INVALID_HOST,
            Status::UNRECOVERED_READ_ERROR,
            Status {
                sct: 7,
                sc: 0xff,
                more: true,
                dnr: true,
            },
        ] {
            assert_eq!(Status::from_field(s.to_field()), s);
            assert_eq!(Status::from_field(s.to_field() | 1), s, "phase ignored");
        }
        // LBA Out of Range with DNR: SC 0x80 at bits 8:1, DNR at bit 15.
        assert_eq!(Status::LBA_OUT_OF_RANGE.to_field(), 0x8100);
        // Connect Invalid Host: SCT 1, SC 0x84.
        assert_eq!(
            Status::CONNECT_INVALID_HOST.to_field(),
            0x8000 | 0x200 | 0x108
        );
    }

    #[test]
    fn cqe_keeps_its_phase() {
        let mut c = Cqe {
            status: U16::new(1),
            ..Default::default()
        };
        c.set_status(Status::INVALID_FIELD);
        assert!(c.phase());
        assert_eq!(c.status(), Status::INVALID_FIELD);
    }

    #[test]
    fn sqe_bytes_and_sgl() {
        let mut sqe = Sqe {
            opc: 0x02,
            cid: U16::new(0x1234),
            nsid: U32::new(1),
            ..Default::default()
        };
        sqe.set_sgl(&SglDescriptor::new(
            sgl_type::TRANSPORT_DATA_BLOCK,
            sgl_subtype::TRANSPORT,
            0,
            8192,
        ));
        let b = sqe.as_bytes();
        assert_eq!(b[0], 0x02);
        assert_eq!(&b[2..4], &[0x34, 0x12]);
        assert_eq!(b[24 + 15], 0x5a, "transport data block, transport subtype");
        assert_eq!(b[1] >> 6, 0b01, "PSDT says SGL");
        let back = Sqe::read_from_bytes(b).unwrap();
        assert_eq!(back.sgl().len.get(), 8192);
        assert_eq!(back.sgl().ty(), sgl_type::TRANSPORT_DATA_BLOCK);
    }
}
