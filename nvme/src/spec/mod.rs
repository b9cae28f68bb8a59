//! NVMe structures, declared once and shared by target and host.
//!
//! Every wire structure is `#[repr(C)]`, built from byte-order-explicit little-endian
//! fields (zerocopy's `U16`/`U32`/`U64`, alignment 1), so it can be read from and written
//! to any byte buffer without `unsafe`, and its size and field offsets are checked at
//! compile time. Each field's doc names the section of the specification it comes from:
//! NVM Express Base Specification 2.0c ("base"), NVMe over Fabrics 1.1a ("fabrics"),
//! NVMe/TCP Transport Specification 1.0c ("tcp").
//!
//! - [`cmd`]: submission and completion queue entries, SGL descriptors, status codes.
//! - [`regs`]: controller registers (CAP, CC, CSTS, AQA, CMBLOC, CMBSZ, CMBMSC...),
//!   MMIO offsets on PCIe and property offsets on Fabrics.
//! - [`fabrics`]: Fabrics commands: Connect and its data, Property Get/Set, Disconnect.
//! - [`tcp`]: NVMe/TCP PDUs, their validation and digests: the one codec that the
//!   target's transport and the host's queue pairs both use.

pub mod cmd;
pub mod fabrics;
pub mod regs;
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
