//! NVMe structures, declared once and shared by target and host.
//!
//! Every wire structure is `#[repr(C)]`, built from byte-order-explicit little-endian
//! fields (zerocopy's `U16`/`U32`/`U64`, alignment 1), so it can be read from and written
//! to any byte buffer without `unsafe`, and its size and field offsets are checked at
//! compile time. Each field's doc names the section of the specification it comes from:
//! NVM Express Base Specification 2.0c ("base"), NVM Command Set Specification 1.0c
//! ("nvm"), NVMe over Fabrics 1.1a ("fabrics"), NVMe/TCP Transport Specification 1.0c
//! ("tcp").
//!
//! - [`cmd`]: submission and completion queue entries, SGL descriptors, status codes.
//! - [`admin`]: admin and NVM opcodes; CNS, Log Identifiers, Feature Identifiers and
//!   asynchronous events; typed command dwords (Get Log Page, Identify, Number of Queues,
//!   Abort, Read/Write, Dataset Management) and the DSM range.
//! - [`identify`]: Identify Controller (with power states), Identify Namespace, the
//!   Namespace Identification Descriptor list, the Active Namespace ID list, and the
//!   helpers that fill their ASCII and NQN fields.
//! - [`log`]: log pages: Supported Log Pages, Error Information, SMART / Health,
//!   Firmware Slot, Changed Namespace List, Commands Supported and Effects, ANA, and the
//!   Discovery log page with its entry values.
//! - [`regs`]: controller registers (CAP, CC, CSTS, AQA, CMBLOC, CMBSZ, CMBMSC...),
//!   MMIO offsets on PCIe and property offsets on Fabrics.
//! - [`fabrics`]: Fabrics commands: Connect and its data, Property Get/Set, Disconnect.
//! - [`tcp`]: NVMe/TCP PDUs, their validation and digests: the one codec that the
//!   target's transport and the host's queue pairs both use.
//! - [`resv`]: Reservations: Register, Acquire and Release dwords, the types, the
//!   Reservation Status data structure.
//! - [`rdma`]: the NVMe/RDMA connection manager's private data (request, accept,
//!   reject), likewise shared by target and host.

pub mod admin;
pub mod cmd;
pub mod fabrics;
pub mod identify;
pub mod log;
pub mod rdma;
pub mod regs;
pub mod resv;
pub mod tcp;

/// Checks a field's offset inside a struct at compile time.
macro_rules! assert_offset {
    ($t:ty, $field:ident, $off:expr) => {
        const _: () = assert!(::core::mem::offset_of!($t, $field) == $off);
    };
}
pub(crate) use assert_offset;

/// Checks a struct's size at compile time.
macro_rules! assert_size {
    ($t:ty, $size:expr) => {
        const _: () = assert!(::core::mem::size_of::<$t>() == $size);
    };
}
pub(crate) use assert_size;
