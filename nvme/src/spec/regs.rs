//! Controller registers (base 3.1.4, Figure 33), as PCIe MMIO offsets and Fabrics
//! property offsets alike, with their fields as bit-field types.

use bitfield_struct::bitfield;

/// Register offsets (base 3.1.4, Figure 33).
pub mod offset {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version.
    pub const VS: u32 = 0x08;
    /// Interrupt Mask Set (PCIe only).
    pub const INTMS: u32 = 0x0c;
    /// Interrupt Mask Clear (PCIe only).
    pub const INTMC: u32 = 0x10;
    /// Controller Configuration.
    pub const CC: u32 = 0x14;
    /// Controller Status.
    pub const CSTS: u32 = 0x1c;
    /// NVM Subsystem Reset.
    pub const NSSR: u32 = 0x20;
    /// Admin Queue Attributes (PCIe only).
    pub const AQA: u32 = 0x24;
    /// Admin Submission Queue Base Address (8 bytes, PCIe only).
    pub const ASQ: u32 = 0x28;
    /// Admin Completion Queue Base Address (8 bytes, PCIe only).
    pub const ACQ: u32 = 0x30;
    /// Controller Memory Buffer Location.
    pub const CMBLOC: u32 = 0x38;
    /// Controller Memory Buffer Size.
    pub const CMBSZ: u32 = 0x3c;
    /// Controller Memory Buffer Memory Space Control (8 bytes).
    pub const CMBMSC: u32 = 0x50;
    /// Controller Memory Buffer Status.
    pub const CMBSTS: u32 = 0x58;
    /// First doorbell (PCIe): SQ y tail at 0x1000 + (2y) * (4 << CAP.DSTRD).
    pub const DOORBELLS: u32 = 0x1000;
}

/// Controller Capabilities (base 3.1.4.1, Figure 36).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Cap {
    /// Maximum Queue Entries Supported, 0's based.
    pub mqes: u16,
    /// Contiguous Queues Required.
    pub cqr: bool,
    /// Arbitration Mechanism Supported.
    #[bits(2)]
    pub ams: u8,
    #[bits(5)]
    __: u8,
    /// Timeout, in 500 ms units: worst time for CSTS.RDY to follow CC.EN.
    pub to: u8,
    /// Doorbell Stride: doorbells are (4 << DSTRD) bytes apart.
    #[bits(4)]
    pub dstrd: u8,
    /// NVM Subsystem Reset Supported.
    pub nssrs: bool,
    /// Command Sets Supported (bit 0: NVM command set).
    pub css: u8,
    /// Boot Partition Support.
    pub bps: bool,
    /// Controller Power Scope.
    #[bits(2)]
    pub cps: u8,
    /// Memory Page Size Minimum: 2 ^ (12 + MPSMIN).
    #[bits(4)]
    pub mpsmin: u8,
    /// Memory Page Size Maximum: 2 ^ (12 + MPSMAX).
    #[bits(4)]
    pub mpsmax: u8,
    /// Persistent Memory Region Supported.
    pub pmrs: bool,
    /// Controller Memory Buffer Supported.
    pub cmbs: bool,
    /// NVM Subsystem Shutdown Supported.
    pub nsss: bool,
    /// Controller Ready Modes Supported.
    #[bits(2)]
    pub crms: u8,
    #[bits(3)]
    __: u8,
}

/// Controller Configuration (base 3.1.4.5, Figure 41).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cc {
    /// Enable.
    pub en: bool,
    #[bits(3)]
    __: u8,
    /// I/O Command Set Selected.
    #[bits(3)]
    pub css: u8,
    /// Memory Page Size: 2 ^ (12 + MPS).
    #[bits(4)]
    pub mps: u8,
    /// Arbitration Mechanism Selected.
    #[bits(3)]
    pub ams: u8,
    /// Shutdown Notification: 1 normal, 2 abrupt.
    #[bits(2)]
    pub shn: u8,
    /// I/O Submission Queue Entry Size: 2 ^ IOSQES (6 for 64 bytes).
    #[bits(4)]
    pub iosqes: u8,
    /// I/O Completion Queue Entry Size: 2 ^ IOCQES (4 for 16 bytes).
    #[bits(4)]
    pub iocqes: u8,
    /// Controller Ready Independent of Media Enable.
    pub crime: bool,
    #[bits(7)]
    __: u8,
}

/// Controller Status (base 3.1.4.6, Figure 42).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Csts {
    /// Ready.
    pub rdy: bool,
    /// Controller Fatal Status.
    pub cfs: bool,
    /// Shutdown Status: 0 normal operation, 1 occurring, 2 complete.
    #[bits(2)]
    pub shst: u8,
    /// NVM Subsystem Reset Occurred.
    pub nssro: bool,
    /// Processing Paused.
    pub pp: bool,
    /// Shutdown Type.
    pub st: bool,
    #[bits(25)]
    __: u32,
}

/// Admin Queue Attributes (base 3.1.4.8, Figure 44); sizes are 0's based.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Aqa {
    /// Admin Submission Queue Size.
    #[bits(12)]
    pub asqs: u16,
    #[bits(4)]
    __: u8,
    /// Admin Completion Queue Size.
    #[bits(12)]
    pub acqs: u16,
    #[bits(4)]
    __: u8,
}

/// Controller Memory Buffer Location (base 3.1.4.11, Figure 47).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cmbloc {
    /// Base Indicator Register: the BAR that holds the CMB.
    #[bits(3)]
    pub bir: u8,
    /// CMB Queue Mixed Memory Support.
    pub cqmms: bool,
    /// CMB Queue Physically Discontiguous Support.
    pub cqpds: bool,
    /// CMB Data Pointer Mixed Locations Support.
    pub cdpmls: bool,
    /// CMB Data Pointer and Command Independent Locations Support.
    pub cdpcils: bool,
    /// CMB Data Metadata Mixed Memory Support.
    pub cdmmms: bool,
    /// CMB Queue Dword Alignment.
    pub cqda: bool,
    #[bits(3)]
    __: u8,
    /// Offset into the BAR, in CMBSZ.SZU units.
    #[bits(20)]
    pub ofst: u32,
}

/// Controller Memory Buffer Size (base 3.1.4.12, Figure 48).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cmbsz {
    /// Submission Queue Support.
    pub sqs: bool,
    /// Completion Queue Support.
    pub cqs: bool,
    /// PRP SGL List Support.
    pub lists: bool,
    /// Read Data Support.
    pub rds: bool,
    /// Write Data Support.
    pub wds: bool,
    #[bits(3)]
    __: u8,
    /// Size Units: 4 KiB * 16 ^ SZU.
    #[bits(4)]
    pub szu: u8,
    /// Size, in SZU units.
    #[bits(20)]
    pub sz: u32,
}

impl Cmbsz {
    /// The CMB's size in bytes.
    pub fn bytes(self) -> u64 {
        (self.sz() as u64) << (12 + 4 * self.szu() as u32)
    }
}

/// Controller Memory Buffer Memory Space Control (base 3.1.4.15, Figure 51).
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Cmbmsc {
    /// Capabilities Registers Enabled: CMBLOC and CMBSZ read as non-zero.
    pub cre: bool,
    /// Controller Memory Space Enable.
    pub cmse: bool,
    #[bits(10)]
    __: u16,
    /// Controller Base Address, in 4 KiB units: where the controller sees the CMB.
    #[bits(52)]
    pub cba: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_qemu_7_2_reports() {
        // Values read from QEMU 7.2's emulated controller with a 64 MiB CMB (the lab).
        let cap = Cap::from(0x0240_1820_0f01_07ff);
        assert_eq!(cap.mqes(), 2047);
        assert!(cap.cqr());
        assert_eq!(cap.to(), 15);
        assert_eq!(cap.dstrd(), 0);
        assert_eq!(cap.css() & 1, 1, "NVM command set");
        assert!(cap.cmbs());
        let loc = Cmbloc::from(0x62);
        assert_eq!(loc.bir(), 2);
        let sz = Cmbsz::from(0x0004_021d);
        assert!(sz.sqs() && !sz.cqs() && sz.lists() && sz.rds() && sz.wds());
        assert_eq!(sz.bytes(), 64 << 20);
        let msc = Cmbmsc::from(0xf800_0003);
        assert!(msc.cre() && msc.cmse());
        assert_eq!(msc.cba() << 12, 0xf800_0000);
    }

    #[test]
    fn builds_what_a_driver_writes() {
        let cc = Cc::new().with_en(true).with_iosqes(6).with_iocqes(4);
        assert_eq!(u32::from(cc), 0x0046_0001);
        let aqa = Aqa::new().with_asqs(31).with_acqs(31);
        assert_eq!(u32::from(aqa), 0x001f_001f);
        let csts = Csts::from(0b1001);
        assert!(csts.rdy());
        assert_eq!(csts.shst(), 2);
    }
}
