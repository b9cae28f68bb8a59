//! Per-initiator DMA addresses.
//!
//! A DMA address means something only to the device that issues the DMA. So each
//! *initiator* (something that reaches memory: the CPU, the kernel through an io_uring
//! ring, later an NVMe controller behind an IOMMU or an RDMA protection domain) has its
//! own address type, and a buffer [`Segment`] is *resolved* for a given initiator into
//! that type. Code that programs a device takes only that device's type.
//!
//! Handing one initiator's address to another device does not compile:
//!
//! ```compile_fail
//! use pollux_engine::dma::{CpuAddr, UringAddr};
//! // An io_uring registered-buffer address is not a CPU pointer.
//! fn program_fixed_read(addr: UringAddr) -> UringAddr { addr }
//! fn cpu_to_uring(a: CpuAddr) -> UringAddr { program_fixed_read(a) }
//! ```
//!
//! and neither does the other way round:
//!
//! ```compile_fail
//! use pollux_engine::dma::{CpuAddr, UringAddr};
//! fn memcpy_target(a: CpuAddr) -> CpuAddr { a }
//! fn uring_to_cpu(u: UringAddr) -> CpuAddr { memcpy_target(u) }
//! ```
//!
//! The same function with matching types compiles:
//!
//! ```
//! use pollux_engine::dma::UringAddr;
//! fn program_fixed_read(addr: UringAddr) -> UringAddr { addr }
//! fn pass(u: UringAddr) -> UringAddr { program_fixed_read(u) }
//! ```

use super::map::RegionId;
use std::fmt;

/// A run of registered memory: its region and its CPU virtual range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The region it lies in.
    pub region: RegionId,
    /// CPU virtual address of its first byte.
    pub vaddr: usize,
    /// Length in bytes.
    pub len: u32,
}

/// A device, or the CPU, that reaches memory at addresses of its own.
pub trait Initiator {
    /// The address this initiator uses.
    type Addr: Copy + fmt::Debug + Eq;

    /// The address of `seg` for this initiator, or `None` when it cannot reach it.
    fn resolve(&self, seg: &Segment) -> Option<Self::Addr>;
}

/// The CPU, which reaches memory through virtual addresses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

/// A CPU virtual address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuAddr(usize);

impl CpuAddr {
    /// As a pointer.
    pub fn as_ptr(self) -> *mut u8 {
        self.0 as *mut u8
    }
}

impl Initiator for Cpu {
    type Addr = CpuAddr;
    fn resolve(&self, seg: &Segment) -> Option<CpuAddr> {
        Some(CpuAddr(seg.vaddr))
    }
}

/// An address in an io_uring ring's registered-buffer table: the table index and the
/// user address inside that buffer, as `IORING_OP_READ_FIXED` wants them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UringAddr {
    buf_index: u16,
    addr: usize,
}

impl UringAddr {
    /// Only a ring that registered the region makes one.
    pub(crate) fn new(buf_index: u16, addr: usize) -> Self {
        UringAddr { buf_index, addr }
    }

    /// The registered-buffer index.
    pub fn buf_index(self) -> u16 {
        self.buf_index
    }

    /// The address inside the registered buffer.
    pub fn addr(self) -> usize {
        self.addr
    }

    /// The address `n` bytes further into the same registered buffer.
    pub fn advanced(self, n: usize) -> UringAddr {
        UringAddr {
            buf_index: self.buf_index,
            addr: self.addr + n,
        }
    }
}
