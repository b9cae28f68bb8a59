//! Log pages (base 5.16.1): Supported Log Pages, Error Information, SMART / Health,
//! Firmware Slot, Changed Namespace List, Commands Supported and Effects, Asymmetric
//! Namespace Access, and the
//! Discovery log page of NVMe over Fabrics (base 5.16.1.23; fabrics 5.4) with its entry
//! values and transport specific address subtypes.

use super::identify::{ascii_str, nqn_field, pad_ascii};
use super::{assert_offset, assert_size};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// A 128-bit counter field (e.g. SMART Data Units Read) from a value: 16 bytes, little
/// endian.
pub fn le128(v: u128) -> [u8; 16] {
    v.to_le_bytes()
}

/// The value of a 128-bit little-endian counter field.
pub fn from_le128(field: &[u8; 16]) -> u128 {
    u128::from_le_bytes(*field)
}

/// The Supported Log Pages log page (base 5.16.1.1): one dword per Log Identifier.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SupportedLogPages {
    /// LID Supported and Effects, indexed by Log Identifier, see [`lid_effects`] (base 5.16.1.1).
    pub lids: [U32; 256],
}
assert_size!(SupportedLogPages, 1024);

impl Default for SupportedLogPages {
    /// No log page supported.
    fn default() -> Self {
        FromZeros::new_zeroed()
    }
}

/// LID Supported and Effects bits (base 5.16.1.1).
pub mod lid_effects {
    /// LID Supported (bit 0).
    pub const LSUPP: u32 = 1 << 0;
    /// Index Offset Supported (bit 1).
    pub const IOS: u32 = 1 << 1;
}

/// An Error Information log entry (base 5.16.1.2).
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
pub struct ErrorLogEntry {
    /// Error Count: unique, increasing from 1; 0 marks an invalid entry (base 5.16.1.2, bytes 7:0).
    pub error_count: U64,
    /// Submission Queue ID of the command, FFFFh if none (base 5.16.1.2, bytes 9:8).
    pub sqid: U16,
    /// Command ID of the command, FFFFh if none (base 5.16.1.2, bytes 11:10).
    pub cid: U16,
    /// Status Field of the completion: status in bits 15:1, phase tag in bit 0 (base 5.16.1.2, bytes 13:12).
    pub status: U16,
    /// Parameter Error Location: byte in bits 7:0, bit in bits 10:8, FFFFh if none (base 5.16.1.2, bytes 15:14).
    pub parm_error_location: U16,
    /// First LBA that had the error (base 5.16.1.2, bytes 23:16).
    pub lba: U64,
    /// Namespace of the error, FFFFFFFFh if none (base 5.16.1.2, bytes 27:24).
    pub nsid: U32,
    /// Vendor Specific Information Available: a log page ID, 0 if none (base 5.16.1.2, byte 28).
    pub vs: u8,
    /// Transport Type, see [`trtype`] (base 5.16.1.2, byte 29).
    pub trtype: u8,
    /// Command Set Indicator of the command (2.0 and later; base 5.16.1.2, byte 30).
    pub csi: u8,
    /// Opcode of the command (reserved before 2.0; base 5.16.1.2, byte 31).
    pub opc: u8,
    /// Command Specific Information (base 5.16.1.2, bytes 39:32).
    pub cs: U64,
    /// Transport Type Specific Information (base 5.16.1.2, bytes 41:40).
    pub ttsi: U16,
    /// Reserved (bytes 62:42).
    pub rsvd42: [u8; 21],
    /// Log Page Version (base 5.16.1.2, byte 63).
    pub lpv: u8,
}
assert_size!(ErrorLogEntry, 64);
assert_offset!(ErrorLogEntry, sqid, 8);
assert_offset!(ErrorLogEntry, status, 12);
assert_offset!(ErrorLogEntry, lba, 16);
assert_offset!(ErrorLogEntry, nsid, 24);
assert_offset!(ErrorLogEntry, trtype, 29);
assert_offset!(ErrorLogEntry, cs, 32);
assert_offset!(ErrorLogEntry, ttsi, 40);
assert_offset!(ErrorLogEntry, lpv, 63);

/// The SMART / Health Information log page (base 5.16.1.3).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SmartLog {
    /// Critical Warning, see [`smart_cw`] (base 5.16.1.3, byte 0).
    pub critical_warning: u8,
    /// Composite Temperature in kelvins (base 5.16.1.3, bytes 2:1).
    pub composite_temperature: U16,
    /// Available Spare, percent (base 5.16.1.3, byte 3).
    pub avail_spare: u8,
    /// Available Spare Threshold, percent (base 5.16.1.3, byte 4).
    pub avail_spare_threshold: u8,
    /// Percentage Used of the rated life, may exceed 100 (base 5.16.1.3, byte 5).
    pub percentage_used: u8,
    /// Endurance Group Critical Warning Summary (base 5.16.1.3, byte 6).
    pub endurance_group_cw: u8,
    /// Reserved (bytes 31:7).
    pub rsvd7: [u8; 25],
    /// Data Units Read, thousands of 512-byte units rounded up, see [`data_units`] (base 5.16.1.3, bytes 47:32).
    pub data_units_read: [u8; 16],
    /// Data Units Written, thousands of 512-byte units rounded up (base 5.16.1.3, bytes 63:48).
    pub data_units_written: [u8; 16],
    /// Host Read Commands completed (base 5.16.1.3, bytes 79:64).
    pub host_read_commands: [u8; 16],
    /// Host Write Commands completed (base 5.16.1.3, bytes 95:80).
    pub host_write_commands: [u8; 16],
    /// Controller Busy Time in minutes (base 5.16.1.3, bytes 111:96).
    pub controller_busy_time: [u8; 16],
    /// Power Cycles (base 5.16.1.3, bytes 127:112).
    pub power_cycles: [u8; 16],
    /// Power On Hours (base 5.16.1.3, bytes 143:128).
    pub power_on_hours: [u8; 16],
    /// Unsafe Shutdowns (base 5.16.1.3, bytes 159:144).
    pub unsafe_shutdowns: [u8; 16],
    /// Media and Data Integrity Errors (base 5.16.1.3, bytes 175:160).
    pub media_errors: [u8; 16],
    /// Number of Error Information Log Entries over the life of the controller (base 5.16.1.3, bytes 191:176).
    pub num_error_log_entries: [u8; 16],
    /// Warning Composite Temperature Time in minutes (base 5.16.1.3, bytes 195:192).
    pub warning_temp_time: U32,
    /// Critical Composite Temperature Time in minutes (base 5.16.1.3, bytes 199:196).
    pub critical_temp_time: U32,
    /// Temperature Sensors 1 to 8 in kelvins, 0 if absent (base 5.16.1.3, bytes 215:200).
    pub temp_sensor: [U16; 8],
    /// Thermal Management Temperature 1 Transition Count (base 5.16.1.3, bytes 219:216).
    pub tmt1_transition_count: U32,
    /// Thermal Management Temperature 2 Transition Count (base 5.16.1.3, bytes 223:220).
    pub tmt2_transition_count: U32,
    /// Total Time For Thermal Management Temperature 1, seconds (base 5.16.1.3, bytes 227:224).
    pub tmt1_total_time: U32,
    /// Total Time For Thermal Management Temperature 2, seconds (base 5.16.1.3, bytes 231:228).
    pub tmt2_total_time: U32,
    /// Reserved (bytes 511:232).
    pub rsvd232: [u8; 280],
}
assert_size!(SmartLog, 512);
assert_offset!(SmartLog, composite_temperature, 1);
assert_offset!(SmartLog, endurance_group_cw, 6);
assert_offset!(SmartLog, data_units_read, 32);
assert_offset!(SmartLog, data_units_written, 48);
assert_offset!(SmartLog, host_read_commands, 64);
assert_offset!(SmartLog, power_on_hours, 128);
assert_offset!(SmartLog, media_errors, 160);
assert_offset!(SmartLog, num_error_log_entries, 176);
assert_offset!(SmartLog, warning_temp_time, 192);
assert_offset!(SmartLog, temp_sensor, 200);
assert_offset!(SmartLog, tmt1_transition_count, 216);
assert_offset!(SmartLog, tmt2_total_time, 228);

impl Default for SmartLog {
    /// All zeroes.
    fn default() -> Self {
        FromZeros::new_zeroed()
    }
}

/// SMART Data Units for `bytes` of data (base 5.16.1.3): thousands of 512-byte units,
/// rounded up.
pub fn data_units(bytes: u128) -> u128 {
    bytes.div_ceil(512 * 1000)
}

/// SMART Critical Warning bits (base 5.16.1.3, byte 0).
pub mod smart_cw {
    /// Available spare below its threshold (bit 0).
    pub const SPARE_BELOW_THRESHOLD: u8 = 1 << 0;
    /// Temperature beyond a threshold (bit 1).
    pub const TEMPERATURE: u8 = 1 << 1;
    /// Reliability degraded by media or internal errors (bit 2).
    pub const RELIABILITY: u8 = 1 << 2;
    /// All media read only (bit 3).
    pub const READ_ONLY: u8 = 1 << 3;
    /// Volatile memory backup device failed (bit 4).
    pub const VOLATILE_BACKUP_FAILED: u8 = 1 << 4;
    /// Persistent Memory Region read only or unreliable (bit 5).
    pub const PMR_READ_ONLY: u8 = 1 << 5;
}

/// The Firmware Slot Information log page (base 5.16.1.4).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FirmwareSlotLog {
    /// Active Firmware Info: active slot in bits 2:0, next-reset slot in bits 6:4 (base 5.16.1.4, byte 0).
    pub afi: u8,
    /// Reserved (bytes 7:1).
    pub rsvd1: [u8; 7],
    /// Firmware Revision for slots 1 to 7, ASCII, space padded; zero if empty (base 5.16.1.4, bytes 63:8).
    pub frs: [[u8; 8]; 7],
    /// Reserved (bytes 511:64).
    pub rsvd64: [u8; 448],
}
assert_size!(FirmwareSlotLog, 512);
assert_offset!(FirmwareSlotLog, frs, 8);

impl Default for FirmwareSlotLog {
    /// All zeroes.
    fn default() -> Self {
        FromZeros::new_zeroed()
    }
}

/// The Changed Namespace List log page (base 5.16.1.5): up to 1024 NSIDs whose
/// Identify Namespace data changed since the page was last read, increasing, the rest
/// zero; a first entry of FFFFFFFFh (the rest zero) says more than 1024 changed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ChangedNsList {
    /// The NSIDs (base 5.16.1.5).
    pub ids: [U32; 1024],
}
assert_size!(ChangedNsList, 4096);

impl Default for ChangedNsList {
    /// No namespace changed.
    fn default() -> Self {
        FromZeros::new_zeroed()
    }
}

impl ChangedNsList {
    /// The first entry when more than 1024 namespaces changed.
    pub const OVERFLOW: u32 = 0xffff_ffff;

    /// The page for the changed `ids` (increasing): listed if they fit, the overflow marker if not.
    pub fn from_ids(ids: &[u32]) -> Self {
        let mut l = ChangedNsList::default();
        if ids.len() > l.ids.len() {
            l.ids[0] = U32::new(Self::OVERFLOW);
        } else {
            for (slot, &id) in l.ids.iter_mut().zip(ids) {
                *slot = U32::new(id);
            }
        }
        l
    }

    /// Whether more than 1024 namespaces changed (the host must rescan them all).
    pub fn overflowed(&self) -> bool {
        self.ids[0].get() == Self::OVERFLOW
    }

    /// The listed NSIDs up to the first zero (none if the list overflowed).
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let skip = self.overflowed();
        self.ids
            .iter()
            .map(|v| v.get())
            .take_while(move |&id| id != 0 && !skip)
    }
}

/// ANA states (base 8.1.3, and the ANA Group Descriptor's ANA State, base 5.16.1.13).
pub mod ana_state {
    /// ANA Optimized.
    pub const OPTIMIZED: u8 = 0x01;
    /// ANA Non-Optimized.
    pub const NON_OPTIMIZED: u8 = 0x02;
    /// ANA Inaccessible.
    pub const INACCESSIBLE: u8 = 0x03;
    /// ANA Persistent Loss.
    pub const PERSISTENT_LOSS: u8 = 0x04;
    /// ANA Change (in transition).
    pub const CHANGE: u8 = 0x0f;

    /// SPDK's name of a state (`optimized`, `non_optimized`, `inaccessible`,
    /// `persistent_loss`, `change`).
    pub fn name(s: u8) -> &'static str {
        match s {
            OPTIMIZED => "optimized",
            NON_OPTIMIZED => "non_optimized",
            INACCESSIBLE => "inaccessible",
            PERSISTENT_LOSS => "persistent_loss",
            CHANGE => "change",
            _ => "unknown",
        }
    }

    /// The state SPDK's `name` stands for.
    pub fn parse(name: &str) -> Option<u8> {
        [
            OPTIMIZED,
            NON_OPTIMIZED,
            INACCESSIBLE,
            PERSISTENT_LOSS,
            CHANGE,
        ]
        .into_iter()
        .find(|&s| self::name(s) == name)
    }

    /// Whether commands to a namespace in this state are processed (optimized and
    /// non-optimized; the others fail with an ANA status).
    pub fn accessible(s: u8) -> bool {
        s == OPTIMIZED || s == NON_OPTIMIZED
    }
}

/// The Asymmetric Namespace Access log page's header (base 5.16.1.13, 16 bytes).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct AnaLogHeader {
    /// Change Count: changes to the page since the controller was reset.
    pub chgcnt: U64,
    /// Number of ANA Group Descriptors.
    pub ngrps: U16,
    /// Reserved.
    pub rsvd: [u8; 6],
}
assert_size!(AnaLogHeader, 16);

/// An ANA Group Descriptor (base 5.16.1.13, 32 bytes), followed in the page by its
/// `nnsids` NSIDs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct AnaGroupDescHeader {
    /// ANA Group ID.
    pub anagrpid: U32,
    /// Number of NSID Values listed after the descriptor.
    pub nnsids: U32,
    /// Change Count of this group.
    pub chgcnt: U64,
    /// ANA State (bits 3:0), see [`ana_state`].
    pub state: u8,
    /// Reserved.
    pub rsvd: [u8; 15],
}
assert_size!(AnaGroupDescHeader, 32);

/// One ANA group of the page, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnaGroup {
    /// ANA Group ID.
    pub anagrpid: u32,
    /// Change Count.
    pub chgcnt: u64,
    /// ANA state, see [`ana_state`].
    pub state: u8,
    /// The active namespaces of the group (none when the page was read with Return
    /// Groups Only).
    pub nsids: Vec<u32>,
}

/// Log Specific Parameter of the ANA log page: Return Groups Only (bit 0).
pub const ANA_LSP_RGO: u8 = 1 << 0;

/// The ANA log page for `groups`; with `rgo` (Return Groups Only) no NSIDs are listed.
pub fn ana_log_encode(chgcnt: u64, groups: &[AnaGroup], rgo: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + groups.len() * 32);
    let h = AnaLogHeader {
        chgcnt: U64::new(chgcnt),
        ngrps: U16::new(groups.len().min(u16::MAX as usize) as u16),
        rsvd: [0; 6],
    };
    v.extend_from_slice(h.as_bytes());
    for g in groups.iter().take(u16::MAX as usize) {
        let n = if rgo { 0 } else { g.nsids.len() };
        let d = AnaGroupDescHeader {
            anagrpid: U32::new(g.anagrpid),
            nnsids: U32::new(n as u32),
            chgcnt: U64::new(g.chgcnt),
            state: g.state & 0x0f,
            rsvd: [0; 15],
        };
        v.extend_from_slice(d.as_bytes());
        for id in &g.nsids[..n] {
            v.extend_from_slice(&id.to_le_bytes());
        }
    }
    v
}

/// The change count and groups of an ANA log page; `Err` names what is malformed (a
/// descriptor or NSID list running past the data read).
pub fn ana_log_decode(page: &[u8]) -> Result<(u64, Vec<AnaGroup>), &'static str> {
    let (h, mut rest) =
        AnaLogHeader::read_from_prefix(page).map_err(|_| "shorter than its header")?;
    let mut groups = Vec::with_capacity(h.ngrps.get() as usize);
    for _ in 0..h.ngrps.get() {
        let (d, r) = AnaGroupDescHeader::read_from_prefix(rest)
            .map_err(|_| "a group descriptor runs past the page")?;
        let n = d.nnsids.get() as usize;
        let ids = r
            .get(..n.checked_mul(4).ok_or("NSID count overflows")?)
            .ok_or("a group's NSID list runs past the page")?;
        groups.push(AnaGroup {
            anagrpid: d.anagrpid.get(),
            chgcnt: d.chgcnt.get(),
            state: d.state & 0x0f,
            nsids: ids
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        });
        rest = &r[n * 4..];
    }
    Ok((h.chgcnt.get(), groups))
}

/// The Commands Supported and Effects log page (base 5.16.1.6).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct CommandEffectsLog {
    /// Admin Command Supported, indexed by opcode, see [`cmd_effects`] (base 5.16.1.6, bytes 1023:0).
    pub acs: [U32; 256],
    /// I/O Command Supported, indexed by opcode (base 5.16.1.6, bytes 2047:1024).
    pub iocs: [U32; 256],
    /// Reserved (bytes 4095:2048).
    pub rsvd2048: [u8; 2048],
}
assert_size!(CommandEffectsLog, 4096);
assert_offset!(CommandEffectsLog, iocs, 1024);

impl Default for CommandEffectsLog {
    /// No command listed.
    fn default() -> Self {
        FromZeros::new_zeroed()
    }
}

/// Commands Supported and Effects entry bits (base 5.16.1.6).
pub mod cmd_effects {
    /// Command Supported (bit 0).
    pub const CSUPP: u32 = 1 << 0;
    /// Logical Block Content Change (bit 1).
    pub const LBCC: u32 = 1 << 1;
    /// Namespace Capability Change (bit 2).
    pub const NCC: u32 = 1 << 2;
    /// Namespace Inventory Change (bit 3).
    pub const NIC: u32 = 1 << 3;
    /// Controller Capability Change (bit 4).
    pub const CCC: u32 = 1 << 4;
}

/// Transport Types (base 5.16.1.23, TRTYPE; fabrics 5.4).
pub mod trtype {
    /// RDMA Transport.
    pub const RDMA: u8 = 1;
    /// Fibre Channel Transport.
    pub const FC: u8 = 2;
    /// TCP Transport.
    pub const TCP: u8 = 3;
    /// Intra-host Transport (loopback).
    pub const LOOP: u8 = 254;
}

/// Address Families (base 5.16.1.23, ADRFAM).
pub mod adrfam {
    /// IPv4 (AF_INET).
    pub const IPV4: u8 = 1;
    /// IPv6 (AF_INET6).
    pub const IPV6: u8 = 2;
    /// InfiniBand (AF_IB).
    pub const IB: u8 = 3;
    /// Fibre Channel.
    pub const FC: u8 = 4;
    /// Intra-host.
    pub const LOOP: u8 = 254;
}

/// Subsystem Types (base 5.16.1.23, SUBTYPE).
pub mod subtype {
    /// A referral to another Discovery subsystem.
    pub const REFERRAL: u8 = 1;
    /// An NVM subsystem (I/O controllers).
    pub const NVME: u8 = 2;
    /// The Discovery subsystem this log page came from.
    pub const CURRENT_DISCOVERY: u8 = 3;
}

/// Transport Requirements (base 5.16.1.23, TREQ).
pub mod treq {
    /// Mask of the Secure Channel requirement (bits 1:0).
    pub const SECURE_CHANNEL_MASK: u8 = 0b11;
    /// Secure channel: not specified (00b).
    pub const SECURE_CHANNEL_NOT_SPECIFIED: u8 = 0b00;
    /// Secure channel: required (01b).
    pub const SECURE_CHANNEL_REQUIRED: u8 = 0b01;
    /// Secure channel: not required (10b).
    pub const SECURE_CHANNEL_NOT_REQUIRED: u8 = 0b10;
    /// The NVM subsystem supports disabling SQ flow control: the host may ask for it in
    /// Connect (bit 2).
    pub const DISABLE_SQFLOW: u8 = 1 << 2;
}

/// Entry Flags (base 5.16.1.23, EFLAGS; 2.0 and later).
pub mod eflags {
    /// Duplicate Returned Information: the subsystem port is also reported elsewhere (bit 0).
    pub const DUPRETINFO: u16 = 1 << 0;
    /// Explicit Persistent Connection Support for Discovery (bit 1).
    pub const EPCSD: u16 = 1 << 1;
    /// No CDC Connectivity (bit 2).
    pub const NCC: u16 = 1 << 2;
}

/// NVMe/TCP Security Types, TSAS byte 0 for TCP (tcp 3.4; base 5.16.1.23).
pub mod sectype {
    /// No security.
    pub const NONE: u8 = 0;
    /// TLS 1.2.
    pub const TLS12: u8 = 1;
    /// TLS 1.3.
    pub const TLS13: u8 = 2;
}

/// RDMA QP Service Types, RDMA TSAS byte 0 (base 5.16.1.23).
pub mod rdma_qptype {
    /// Reliable Connected.
    pub const CONNECTED: u8 = 1;
    /// Reliable Datagram.
    pub const DATAGRAM: u8 = 2;
}

/// RDMA Provider Types, RDMA TSAS byte 1 (base 5.16.1.23).
pub mod rdma_prtype {
    /// No provider specified.
    pub const NOT_SPECIFIED: u8 = 1;
    /// InfiniBand.
    pub const IB: u8 = 2;
    /// RoCE v1.
    pub const ROCE: u8 = 3;
    /// RoCE v2.
    pub const ROCEV2: u8 = 4;
    /// iWARP.
    pub const IWARP: u8 = 5;
}

/// RDMA Connection Management Services, RDMA TSAS byte 2 (base 5.16.1.23).
pub mod rdma_cms {
    /// The RDMA_CM.
    pub const RDMA_CM: u8 = 1;
}

/// The Discovery log page header (base 5.16.1.23; fabrics 5.4); entries follow at
/// byte 1024, 1024 bytes each.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DiscoveryLogHeader {
    /// Generation Counter: changes whenever the page changes (base 5.16.1.23, bytes 7:0).
    pub genctr: U64,
    /// Number of Records (base 5.16.1.23, bytes 15:8).
    pub numrec: U64,
    /// Record Format: 0 (base 5.16.1.23, bytes 17:16).
    pub recfmt: U16,
    /// Reserved (bytes 1023:18).
    pub rsvd18: [u8; 1006],
}
assert_size!(DiscoveryLogHeader, 1024);
assert_offset!(DiscoveryLogHeader, numrec, 8);
assert_offset!(DiscoveryLogHeader, recfmt, 16);

impl Default for DiscoveryLogHeader {
    /// All zeroes.
    fn default() -> Self {
        FromZeros::new_zeroed()
    }
}

impl DiscoveryLogHeader {
    /// A header for `numrec` records at generation `genctr`.
    pub fn new(genctr: u64, numrec: u64) -> Self {
        DiscoveryLogHeader {
            genctr: U64::new(genctr),
            numrec: U64::new(numrec),
            ..Default::default()
        }
    }
}

/// A Discovery log page entry (base 5.16.1.23; fabrics 5.4).
///
/// TRADDR and TRSVCID are ASCII strings, which base 1.4.2 says are left justified and
/// padded with spaces: SPDK's target pads them with spaces, Linux nvmet sends them NUL
/// padded, and hosts (libnvme) stop at a NUL and strip trailing spaces, so both read.
/// The setters here pad with spaces as the specification says; [`Self::traddr_str`] and
/// [`Self::trsvcid_str`] read either. SUBNQN is an NQN: UTF-8, NUL padded.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DiscoveryLogEntry {
    /// Transport Type, see [`trtype`] (base 5.16.1.23, byte 0).
    pub trtype: u8,
    /// Address Family, see [`adrfam`] (base 5.16.1.23, byte 1).
    pub adrfam: u8,
    /// Subsystem Type, see [`subtype`] (base 5.16.1.23, byte 2).
    pub subtype: u8,
    /// Transport Requirements, see [`treq`] (base 5.16.1.23, byte 3).
    pub treq: u8,
    /// Port ID of the NVM subsystem port (base 5.16.1.23, bytes 5:4).
    pub portid: U16,
    /// Controller ID: FFFFh for the dynamic controller model (base 5.16.1.23, bytes 7:6).
    pub cntlid: U16,
    /// Admin Max SQ Size, at least 32 (base 5.16.1.23, bytes 9:8).
    pub asqsz: U16,
    /// Entry Flags, see [`eflags`] (2.0; base 5.16.1.23, bytes 11:10).
    pub eflags: U16,
    /// Reserved (bytes 31:12).
    pub rsvd12: [u8; 20],
    /// Transport Service Identifier, ASCII, space padded; for TCP and RDMA the port number in decimal (base 5.16.1.23, bytes 63:32).
    pub trsvcid: [u8; 32],
    /// Reserved (bytes 255:64).
    pub rsvd64: [u8; 192],
    /// NVM Subsystem Qualified Name, UTF-8, NUL padded (base 5.16.1.23, bytes 511:256).
    pub subnqn: [u8; 256],
    /// Transport Address, ASCII, space padded; for IP families the address in text form (base 5.16.1.23, bytes 767:512).
    pub traddr: [u8; 256],
    /// Transport Specific Address Subtype: [`TcpTsas`] or [`RdmaTsas`] (base 5.16.1.23, bytes 1023:768).
    pub tsas: [u8; 256],
}
assert_size!(DiscoveryLogEntry, 1024);
assert_offset!(DiscoveryLogEntry, portid, 4);
assert_offset!(DiscoveryLogEntry, cntlid, 6);
assert_offset!(DiscoveryLogEntry, asqsz, 8);
assert_offset!(DiscoveryLogEntry, eflags, 10);
assert_offset!(DiscoveryLogEntry, trsvcid, 32);
assert_offset!(DiscoveryLogEntry, subnqn, 256);
assert_offset!(DiscoveryLogEntry, traddr, 512);
assert_offset!(DiscoveryLogEntry, tsas, 768);

impl Default for DiscoveryLogEntry {
    /// All zeroes.
    fn default() -> Self {
        FromZeros::new_zeroed()
    }
}

impl DiscoveryLogEntry {
    /// Sets TRADDR, space padded.
    pub fn set_traddr(&mut self, s: &str) {
        pad_ascii(&mut self.traddr, s);
    }

    /// Sets TRSVCID, space padded.
    pub fn set_trsvcid(&mut self, s: &str) {
        pad_ascii(&mut self.trsvcid, s);
    }

    /// Sets SUBNQN, NUL padded.
    pub fn set_subnqn(&mut self, s: &str) {
        nqn_field(&mut self.subnqn, s);
    }

    /// TRADDR without its padding (spaces or NULs).
    pub fn traddr_str(&self) -> Option<&str> {
        ascii_str(&self.traddr)
    }

    /// TRSVCID without its padding (spaces or NULs).
    pub fn trsvcid_str(&self) -> Option<&str> {
        ascii_str(&self.trsvcid)
    }

    /// SUBNQN up to its NUL.
    pub fn subnqn_str(&self) -> Option<&str> {
        super::fabrics::nqn_str(&self.subnqn)
    }

    /// TSAS read as the TCP layout.
    pub fn tcp_tsas(&self) -> TcpTsas {
        TcpTsas::read_from_bytes(&self.tsas).expect("256 bytes")
    }

    /// Sets TSAS to the TCP layout.
    pub fn set_tcp_tsas(&mut self, t: &TcpTsas) {
        self.tsas.copy_from_slice(t.as_bytes());
    }

    /// TSAS read as the RDMA layout.
    pub fn rdma_tsas(&self) -> RdmaTsas {
        RdmaTsas::read_from_bytes(&self.tsas).expect("256 bytes")
    }

    /// Sets TSAS to the RDMA layout.
    pub fn set_rdma_tsas(&mut self, t: &RdmaTsas) {
        self.tsas.copy_from_slice(t.as_bytes());
    }
}

/// The TSAS of a TCP entry (base 5.16.1.23, Transport Specific Address Subtype for TCP).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TcpTsas {
    /// Security Type, see [`sectype`] (base 5.16.1.23, TSAS byte 0).
    pub sectype: u8,
    /// Reserved (TSAS bytes 255:1).
    pub rsvd1: [u8; 255],
}
assert_size!(TcpTsas, 256);

impl TcpTsas {
    /// A TSAS with security type `sectype`.
    pub fn new(sectype: u8) -> Self {
        let mut t: TcpTsas = FromZeros::new_zeroed();
        t.sectype = sectype;
        t
    }
}

/// The TSAS of an RDMA entry (base 5.16.1.23, Transport Specific Address Subtype for RDMA).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct RdmaTsas {
    /// RDMA QP Service Type, see [`rdma_qptype`] (base 5.16.1.23, TSAS byte 0).
    pub qptype: u8,
    /// RDMA Provider Type, see [`rdma_prtype`] (base 5.16.1.23, TSAS byte 1).
    pub prtype: u8,
    /// RDMA Connection Management Service, see [`rdma_cms`] (base 5.16.1.23, TSAS byte 2).
    pub cms: u8,
    /// Reserved (TSAS bytes 7:3).
    pub rsvd3: [u8; 5],
    /// RDMA Partition Key, InfiniBand only (base 5.16.1.23, TSAS bytes 9:8).
    pub pkey: U16,
    /// Reserved (TSAS bytes 255:10).
    pub rsvd10: [u8; 246],
}
assert_size!(RdmaTsas, 256);
assert_offset!(RdmaTsas, pkey, 8);

impl RdmaTsas {
    /// A TSAS of `qptype`, `prtype` and `cms`, with no partition key.
    pub fn new(qptype: u8, prtype: u8, cms: u8) -> Self {
        let mut t: RdmaTsas = FromZeros::new_zeroed();
        t.qptype = qptype;
        t.prtype = prtype;
        t.cms = cms;
        t
    }
}

/// The whole Discovery log page for `entries` at generation `genctr`: the header, then
/// each entry (base 5.16.1.23). The host reads the part it asks for with Get Log Page
/// offsets.
pub fn discovery_log_page(genctr: u64, entries: &[DiscoveryLogEntry]) -> Vec<u8> {
    let mut page = Vec::with_capacity(1024 * (1 + entries.len()));
    page.extend_from_slice(DiscoveryLogHeader::new(genctr, entries.len() as u64).as_bytes());
    for e in entries {
        page.extend_from_slice(e.as_bytes());
    }
    page
}

/// The header and entries of a Discovery log page read from `buf`: the entries the
/// header counts that `buf` holds in full (`None` if `buf` is shorter than the header).
pub fn read_discovery_log(buf: &[u8]) -> Option<(DiscoveryLogHeader, Vec<DiscoveryLogEntry>)> {
    let (hdr, rest) = DiscoveryLogHeader::read_from_prefix(buf).ok()?;
    let n = usize::try_from(hdr.numrec.get()).unwrap_or(usize::MAX);
    let entries = rest
        .chunks_exact(1024)
        .take(n)
        .map(|c| DiscoveryLogEntry::read_from_bytes(c).expect("1024 bytes"))
        .collect();
    Some((hdr, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ana_log_round_trip_and_bytes() {
        let groups = vec![
            AnaGroup {
                anagrpid: 1,
                chgcnt: 7,
                state: ana_state::OPTIMIZED,
                nsids: vec![1, 3],
            },
            AnaGroup {
                anagrpid: 2,
                chgcnt: 7,
                state: ana_state::INACCESSIBLE,
                nsids: vec![2],
            },
        ];
        let p = ana_log_encode(7, &groups, false);
        assert_eq!(p.len(), 16 + 32 + 8 + 32 + 4);
        assert_eq!(p[0], 7);
        assert_eq!(u16::from_le_bytes([p[8], p[9]]), 2);
        assert_eq!(u32::from_le_bytes([p[16], p[17], p[18], p[19]]), 1);
        assert_eq!(u32::from_le_bytes([p[20], p[21], p[22], p[23]]), 2);
        assert_eq!(p[32], ana_state::OPTIMIZED);
        assert_eq!(ana_log_decode(&p), Ok((7, groups.clone())));
        let g = ana_log_encode(7, &groups, true);
        assert_eq!(g.len(), 16 + 64);
        let (_, d) = ana_log_decode(&g).unwrap();
        assert!(d.iter().all(|g| g.nsids.is_empty()));
        assert!(ana_log_decode(&p[..p.len() - 2]).is_err());
        assert!(ana_log_decode(&p[..10]).is_err());
        assert_eq!(
            ana_state::parse("non_optimized"),
            Some(ana_state::NON_OPTIMIZED)
        );
        assert_eq!(ana_state::parse("bogus"), None);
    }

    #[test]
    fn error_log_entry_bytes() {
        let e = ErrorLogEntry {
            error_count: U64::new(3),
            sqid: U16::new(1),
            cid: U16::new(0x22),
            status: U16::new(0x4004),
            parm_error_location: U16::new(0xffff),
            nsid: U32::new(1),
            trtype: trtype::TCP,
            lpv: 1,
            ..Default::default()
        };
        let b = e.as_bytes();
        assert_eq!(b[0], 3);
        assert_eq!(&b[8..12], &[1, 0, 0x22, 0]);
        assert_eq!(&b[12..14], &[0x04, 0x40]);
        assert_eq!(b[29], 3);
        assert_eq!(b[63], 1);
        assert_eq!(ErrorLogEntry::read_from_bytes(b).unwrap(), e);
    }

    #[test]
    fn smart_counters_are_128_bit_little_endian() {
        let mut s = SmartLog {
            composite_temperature: U16::new(310),
            avail_spare: 100,
            ..Default::default()
        };
        let big = (1u128 << 64) + 5;
        s.data_units_read = le128(big);
        s.power_on_hours = le128(data_units(512_001));
        let b = s.as_bytes();
        assert_eq!(&b[1..3], &[0x36, 0x01]);
        assert_eq!(b[32], 5);
        assert_eq!(b[40], 1);
        assert_eq!(
            b[128], 2,
            "512001 bytes round up to two thousand-unit steps"
        );
        let back = SmartLog::read_from_bytes(b).unwrap();
        assert_eq!(from_le128(&back.data_units_read), big);
        assert_eq!(data_units(0), 0);
        assert_eq!(data_units(512_000), 1);
    }

    #[test]
    fn changed_ns_list_overflows_to_ffffffff() {
        let l = ChangedNsList::from_ids(&[2, 5]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![2, 5]);
        assert!(!l.overflowed());
        let ids: Vec<u32> = (1..=1025).collect();
        let l = ChangedNsList::from_ids(&ids);
        assert!(l.overflowed());
        assert_eq!(&l.as_bytes()[..8], &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(l.iter().count(), 0);
        assert_eq!(ChangedNsList::from_ids(&ids[..1024]).iter().count(), 1024);
    }

    #[test]
    fn discovery_entry_layout_and_padding() {
        let mut e = DiscoveryLogEntry {
            trtype: trtype::TCP,
            adrfam: adrfam::IPV4,
            subtype: subtype::NVME,
            treq: treq::SECURE_CHANNEL_NOT_REQUIRED | treq::DISABLE_SQFLOW,
            portid: U16::new(1),
            cntlid: U16::new(0xffff),
            asqsz: U16::new(128),
            ..Default::default()
        };
        e.set_trsvcid("4420");
        e.set_traddr("192.168.1.10");
        e.set_subnqn("nqn.2024-01.io.pollux:sub1");
        e.set_tcp_tsas(&TcpTsas::new(sectype::NONE));
        let b = e.as_bytes();
        assert_eq!(&b[0..4], &[3, 1, 2, 0x06]);
        assert_eq!(&b[4..10], &[1, 0, 0xff, 0xff, 128, 0]);
        assert_eq!(&b[32..37], b"4420 ");
        assert_eq!(b[63], b' ');
        assert_eq!(&b[256..260], b"nqn.");
        assert_eq!(b[511], 0);
        assert_eq!(&b[512..525], b"192.168.1.10 ");
        assert_eq!(b[767], b' ');
        assert_eq!(b[768], 0);
        assert_eq!(e.traddr_str(), Some("192.168.1.10"));
        assert_eq!(e.trsvcid_str(), Some("4420"));
        assert_eq!(e.subnqn_str(), Some("nqn.2024-01.io.pollux:sub1"));

        // A NUL-padded TRADDR (as Linux nvmet sends it) reads the same.
        e.traddr.fill(0);
        e.traddr[..12].copy_from_slice(b"192.168.1.10");
        assert_eq!(e.traddr_str(), Some("192.168.1.10"));

        e.set_rdma_tsas(&RdmaTsas {
            pkey: U16::new(0xffff),
            ..RdmaTsas::new(
                rdma_qptype::CONNECTED,
                rdma_prtype::NOT_SPECIFIED,
                rdma_cms::RDMA_CM,
            )
        });
        assert_eq!(
            &e.as_bytes()[768..778],
            &[1, 1, 1, 0, 0, 0, 0, 0, 0xff, 0xff]
        );
        assert_eq!(e.rdma_tsas().cms, rdma_cms::RDMA_CM);
    }

    #[test]
    fn discovery_page_round_trips() {
        let mut a = DiscoveryLogEntry {
            subtype: subtype::CURRENT_DISCOVERY,
            ..Default::default()
        };
        a.set_subnqn(crate::spec::fabrics::DISCOVERY_NQN);
        let b = DiscoveryLogEntry {
            subtype: subtype::NVME,
            portid: U16::new(2),
            ..Default::default()
        };
        let page = discovery_log_page(7, &[a, b]);
        assert_eq!(page.len(), 3 * 1024);
        assert_eq!(
            &page[0..18],
            &[7, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(page[1024 + 2], subtype::CURRENT_DISCOVERY);
        assert_eq!(page[2048 + 4], 2);
        let (hdr, entries) = read_discovery_log(&page).unwrap();
        assert_eq!(hdr.genctr.get(), 7);
        assert_eq!(entries, vec![a, b]);
        // A short read (header and one entry) gives what it holds.
        let (_, entries) = read_discovery_log(&page[..2048]).unwrap();
        assert_eq!(entries.len(), 1);
        assert!(read_discovery_log(&page[..1000]).is_none());
    }
}
