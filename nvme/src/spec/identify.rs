//! Identify data structures (base 5.17.2; nvm 4.1.5): Identify Controller with its power
//! state descriptors, Identify Namespace for the NVM command set, the Namespace
//! Identification Descriptor list and the Active Namespace ID list, with the bit values a
//! target sets in them and the helpers that fill their text fields.

use super::{assert_offset, assert_size};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of every Identify data structure (base 5.17.2).
pub const IDENTIFY_LEN: usize = 4096;

/// The Controller ID a Connect asks for to get any controller, and the CNTLID the
/// discovery log reports for subsystems with the dynamic controller model (fabrics 3.3).
pub const CNTLID_DYNAMIC: u16 = 0xffff;
/// The largest Controller ID a controller may have (base 5.17.2.1, CNTLID).
pub const CNTLID_MAX: u16 = 0xffef;

/// The VER field value for specification version `major.minor.tertiary` (base 3.1.4.2,
/// the same layout as the VS register).
pub const fn version(major: u16, minor: u8, tertiary: u8) -> u32 {
    ((major as u32) << 16) | ((minor as u32) << 8) | tertiary as u32
}

/// Fills an ASCII string field (base 1.4.2): left justified and padded with spaces
/// (20h). Bytes outside printable ASCII (20h-7Eh) become `?`; a string longer than the
/// field is cut. SN, MN and FR of Identify Controller, and TRADDR and TRSVCID of the
/// discovery log, are ASCII string fields.
pub fn pad_ascii(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    for (d, &c) in dst.iter_mut().zip(s.as_bytes()) {
        *d = if (0x20..=0x7e).contains(&c) { c } else { b'?' };
    }
}

/// Fills a 256-byte NQN field (base 4.5; e.g. SUBNQN): UTF-8, NUL terminated and NUL
/// padded. A name longer than 255 bytes is cut at a character boundary so the field
/// always ends in NUL (valid NQNs are at most 223 bytes).
pub fn nqn_field(dst: &mut [u8; 256], s: &str) {
    dst.fill(0);
    let mut end = s.len().min(dst.len() - 1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    dst[..end].copy_from_slice(&s.as_bytes()[..end]);
}

/// The text of an ASCII string field, up to the first NUL, with trailing spaces removed
/// (`None` if it is not UTF-8). Reads fields padded either way: the specification pads
/// with spaces, some targets (Linux nvmet's discovery log) with NULs.
pub fn ascii_str(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    std::str::from_utf8(&field[..end])
        .ok()
        .map(|s| s.trim_end_matches(' '))
}

/// A power state descriptor (base 5.17.2.1, Figure 276).
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
pub struct PowerState {
    /// Maximum Power, in units of [`psd_flags::MXPS`] (base 5.17.2.1, Figure 276, bytes 1:0).
    pub mp: U16,
    /// Reserved (byte 2).
    pub rsvd2: u8,
    /// Max Power Scale (bit 0) and Non-Operational State (bit 1), see [`psd_flags`] (byte 3).
    pub flags: u8,
    /// Entry Latency in microseconds (base 5.17.2.1, Figure 276, bytes 7:4).
    pub enlat: U32,
    /// Exit Latency in microseconds (base 5.17.2.1, Figure 276, bytes 11:8).
    pub exlat: U32,
    /// Relative Read Throughput, bits 4:0 (base 5.17.2.1, Figure 276, byte 12).
    pub rrt: u8,
    /// Relative Read Latency, bits 4:0 (base 5.17.2.1, Figure 276, byte 13).
    pub rrl: u8,
    /// Relative Write Throughput, bits 4:0 (base 5.17.2.1, Figure 276, byte 14).
    pub rwt: u8,
    /// Relative Write Latency, bits 4:0 (base 5.17.2.1, Figure 276, byte 15).
    pub rwl: u8,
    /// Idle Power (base 5.17.2.1, Figure 276, bytes 17:16).
    pub idlp: U16,
    /// Idle Power Scale, bits 7:6 (base 5.17.2.1, Figure 276, byte 18).
    pub ips: u8,
    /// Reserved (byte 19).
    pub rsvd19: u8,
    /// Active Power (base 5.17.2.1, Figure 276, bytes 21:20).
    pub actp: U16,
    /// Active Power Workload (bits 2:0) and Active Power Scale (bits 7:6) (byte 22).
    pub apw_aps: u8,
    /// Reserved (bytes 31:23).
    pub rsvd23: [u8; 9],
}
assert_size!(PowerState, 32);
assert_offset!(PowerState, flags, 3);
assert_offset!(PowerState, enlat, 4);
assert_offset!(PowerState, exlat, 8);
assert_offset!(PowerState, idlp, 16);
assert_offset!(PowerState, actp, 20);

/// Power state descriptor byte 3 bits (base 5.17.2.1, Figure 276).
pub mod psd_flags {
    /// Max Power Scale: MP is in 0.0001 W units when set, 0.01 W units when clear.
    pub const MXPS: u8 = 1 << 0;
    /// Non-Operational State: no I/O commands are processed in this state.
    pub const NOPS: u8 = 1 << 1;
}

/// The Identify Controller data structure (base 5.17.2.1, Figure 275).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IdentifyController {
    /// PCI Vendor ID (base 5.17.2.1, Figure 275, bytes 1:0).
    pub vid: U16,
    /// PCI Subsystem Vendor ID (base 5.17.2.1, Figure 275, bytes 3:2).
    pub ssvid: U16,
    /// Serial Number, ASCII, space padded: see [`pad_ascii`] (base 5.17.2.1, Figure 275, bytes 23:4).
    pub sn: [u8; 20],
    /// Model Number, ASCII, space padded (base 5.17.2.1, Figure 275, bytes 63:24).
    pub mn: [u8; 40],
    /// Firmware Revision, ASCII, space padded (base 5.17.2.1, Figure 275, bytes 71:64).
    pub fr: [u8; 8],
    /// Recommended Arbitration Burst, a power of two (base 5.17.2.1, Figure 275, byte 72).
    pub rab: u8,
    /// IEEE OUI Identifier, least significant byte first (base 5.17.2.1, Figure 275, bytes 75:73).
    pub ieee: [u8; 3],
    /// Controller Multi-Path I/O and Namespace Sharing Capabilities, see [`cmic`] (base 5.17.2.1, Figure 275, byte 76).
    pub cmic: u8,
    /// Maximum Data Transfer Size: 2^MDTS units of CAP.MPSMIN, 0 for no limit (base 5.17.2.1, Figure 275, byte 77).
    pub mdts: u8,
    /// Controller ID (base 5.17.2.1, Figure 275, bytes 79:78).
    pub cntlid: U16,
    /// Version, see [`version`] (base 5.17.2.1, Figure 275, bytes 83:80).
    pub ver: U32,
    /// RTD3 Resume Latency in microseconds (base 5.17.2.1, Figure 275, bytes 87:84).
    pub rtd3r: U32,
    /// RTD3 Entry Latency in microseconds (base 5.17.2.1, Figure 275, bytes 91:88).
    pub rtd3e: U32,
    /// Optional Asynchronous Events Supported, see [`oaes`] (base 5.17.2.1, Figure 275, bytes 95:92).
    pub oaes: U32,
    /// Controller Attributes, see [`ctratt`] (base 5.17.2.1, Figure 275, bytes 99:96).
    pub ctratt: U32,
    /// Read Recovery Levels Supported (base 5.17.2.1, Figure 275, bytes 101:100).
    pub rrls: U16,
    /// Reserved (bytes 110:102).
    pub rsvd102: [u8; 9],
    /// Controller Type, see [`cntrltype`] (base 5.17.2.1, Figure 275, byte 111).
    pub cntrltype: u8,
    /// FRU Globally Unique Identifier (base 5.17.2.1, Figure 275, bytes 127:112).
    pub fguid: [u8; 16],
    /// Command Retry Delay Time 1, in 100 ms units (base 5.17.2.1, Figure 275, bytes 129:128).
    pub crdt1: U16,
    /// Command Retry Delay Time 2 (base 5.17.2.1, Figure 275, bytes 131:130).
    pub crdt2: U16,
    /// Command Retry Delay Time 3 (base 5.17.2.1, Figure 275, bytes 133:132).
    pub crdt3: U16,
    /// Reserved (bytes 239:134).
    pub rsvd134: [u8; 106],
    /// Reserved for the NVMe Management Interface (bytes 252:240).
    pub rsvd240: [u8; 13],
    /// NVM Subsystem Report (NVMe-MI; base 5.17.2.1, Figure 275, byte 253).
    pub nvmsr: u8,
    /// VPD Write Cycle Information (NVMe-MI; base 5.17.2.1, Figure 275, byte 254).
    pub vwci: u8,
    /// Management Endpoint Capabilities (NVMe-MI; base 5.17.2.1, Figure 275, byte 255).
    pub mec: u8,
    /// Optional Admin Command Support, see [`oacs`] (base 5.17.2.1, Figure 275, bytes 257:256).
    pub oacs: U16,
    /// Abort Command Limit, 0's based (base 5.17.2.1, Figure 275, byte 258).
    pub acl: u8,
    /// Asynchronous Event Request Limit, 0's based (base 5.17.2.1, Figure 275, byte 259).
    pub aerl: u8,
    /// Firmware Updates, see [`frmw`] (base 5.17.2.1, Figure 275, byte 260).
    pub frmw: u8,
    /// Log Page Attributes, see [`lpa`] (base 5.17.2.1, Figure 275, byte 261).
    pub lpa: u8,
    /// Error Log Page Entries, 0's based (base 5.17.2.1, Figure 275, byte 262).
    pub elpe: u8,
    /// Number of Power States Support, 0's based (base 5.17.2.1, Figure 275, byte 263).
    pub npss: u8,
    /// Admin Vendor Specific Command Configuration (base 5.17.2.1, Figure 275, byte 264).
    pub avscc: u8,
    /// Autonomous Power State Transition Attributes (base 5.17.2.1, Figure 275, byte 265).
    pub apsta: u8,
    /// Warning Composite Temperature Threshold in kelvins (base 5.17.2.1, Figure 275, bytes 267:266).
    pub wctemp: U16,
    /// Critical Composite Temperature Threshold in kelvins (base 5.17.2.1, Figure 275, bytes 269:268).
    pub cctemp: U16,
    /// Maximum Time for Firmware Activation, 100 ms units (base 5.17.2.1, Figure 275, bytes 271:270).
    pub mtfa: U16,
    /// Host Memory Buffer Preferred Size, 4 KiB units (base 5.17.2.1, Figure 275, bytes 275:272).
    pub hmpre: U32,
    /// Host Memory Buffer Minimum Size, 4 KiB units (base 5.17.2.1, Figure 275, bytes 279:276).
    pub hmmin: U32,
    /// Total NVM Capacity in bytes, 128-bit little endian (base 5.17.2.1, Figure 275, bytes 295:280).
    pub tnvmcap: [u8; 16],
    /// Unallocated NVM Capacity in bytes, 128-bit little endian (base 5.17.2.1, Figure 275, bytes 311:296).
    pub unvmcap: [u8; 16],
    /// Replay Protected Memory Block Support (base 5.17.2.1, Figure 275, bytes 315:312).
    pub rpmbs: U32,
    /// Extended Device Self-test Time in minutes (base 5.17.2.1, Figure 275, bytes 317:316).
    pub edstt: U16,
    /// Device Self-test Options (base 5.17.2.1, Figure 275, byte 318).
    pub dsto: u8,
    /// Firmware Update Granularity, 4 KiB units (base 5.17.2.1, Figure 275, byte 319).
    pub fwug: u8,
    /// Keep Alive Support: granularity of KATO in 100 ms units, 0 if unsupported (base 5.17.2.1, Figure 275, bytes 321:320).
    pub kas: U16,
    /// Host Controlled Thermal Management Attributes (base 5.17.2.1, Figure 275, bytes 323:322).
    pub hctma: U16,
    /// Minimum Thermal Management Temperature (base 5.17.2.1, Figure 275, bytes 325:324).
    pub mntmt: U16,
    /// Maximum Thermal Management Temperature (base 5.17.2.1, Figure 275, bytes 327:326).
    pub mxtmt: U16,
    /// Sanitize Capabilities (base 5.17.2.1, Figure 275, bytes 331:328).
    pub sanicap: U32,
    /// Host Memory Buffer Minimum Descriptor Entry Size (base 5.17.2.1, Figure 275, bytes 335:332).
    pub hmminds: U32,
    /// Host Memory Maximum Descriptors Entries (base 5.17.2.1, Figure 275, bytes 337:336).
    pub hmmaxd: U16,
    /// NVM Set Identifier Maximum (base 5.17.2.1, Figure 275, bytes 339:338).
    pub nsetidmax: U16,
    /// Endurance Group Identifier Maximum (base 5.17.2.1, Figure 275, bytes 341:340).
    pub endgidmax: U16,
    /// ANA Transition Time in seconds (base 5.17.2.1, Figure 275, byte 342).
    pub anatt: u8,
    /// Asymmetric Namespace Access Capabilities (base 5.17.2.1, Figure 275, byte 343).
    pub anacap: u8,
    /// ANA Group Identifier Maximum (base 5.17.2.1, Figure 275, bytes 347:344).
    pub anagrpmax: U32,
    /// Number of ANA Group Identifiers (base 5.17.2.1, Figure 275, bytes 351:348).
    pub nanagrpid: U32,
    /// Persistent Event Log Size, 64 KiB units (base 5.17.2.1, Figure 275, bytes 355:352).
    pub pels: U32,
    /// Domain Identifier (base 5.17.2.1, Figure 275, bytes 357:356).
    pub domainid: U16,
    /// Reserved (bytes 367:358).
    pub rsvd358: [u8; 10],
    /// Max Endurance Group Capacity in bytes, 128-bit little endian (base 5.17.2.1, Figure 275, bytes 383:368).
    pub megcap: [u8; 16],
    /// Reserved (bytes 511:384).
    pub rsvd384: [u8; 128],
    /// Submission Queue Entry Size: maximum (bits 7:4) and required (bits 3:0), as powers of two (base 5.17.2.1, Figure 275, byte 512).
    pub sqes: u8,
    /// Completion Queue Entry Size: maximum (bits 7:4) and required (bits 3:0), as powers of two (base 5.17.2.1, Figure 275, byte 513).
    pub cqes: u8,
    /// Maximum Outstanding Commands (Fabrics; base 5.17.2.1, Figure 275, bytes 515:514).
    pub maxcmd: U16,
    /// Number of Namespaces: the largest NSID (base 5.17.2.1, Figure 275, bytes 519:516).
    pub nn: U32,
    /// Optional NVM Command Support, see [`oncs`] (base 5.17.2.1, Figure 275, bytes 521:520).
    pub oncs: U16,
    /// Fused Operation Support, see [`fuses`] (base 5.17.2.1, Figure 275, bytes 523:522).
    pub fuses: U16,
    /// Format NVM Attributes, see [`fna`] (base 5.17.2.1, Figure 275, byte 524).
    pub fna: u8,
    /// Volatile Write Cache, see [`vwc`] (base 5.17.2.1, Figure 275, byte 525).
    pub vwc: u8,
    /// Atomic Write Unit Normal, 0's based logical blocks (base 5.17.2.1, Figure 275, bytes 527:526).
    pub awun: U16,
    /// Atomic Write Unit Power Fail, 0's based logical blocks (base 5.17.2.1, Figure 275, bytes 529:528).
    pub awupf: U16,
    /// I/O Command Set Vendor Specific Command Configuration (base 5.17.2.1, Figure 275, byte 530).
    pub icsvscc: u8,
    /// Namespace Write Protection Capabilities (base 5.17.2.1, Figure 275, byte 531).
    pub nwpc: u8,
    /// Atomic Compare & Write Unit, 0's based logical blocks (base 5.17.2.1, Figure 275, bytes 533:532).
    pub acwu: U16,
    /// Optional Copy Formats Supported (base 5.17.2.1, Figure 275, bytes 535:534).
    pub ocfs: U16,
    /// SGL Support, see [`sgls`] (base 5.17.2.1, Figure 275, bytes 539:536).
    pub sgls: U32,
    /// Maximum Number of Allowed Namespaces (base 5.17.2.1, Figure 275, bytes 543:540).
    pub mnan: U32,
    /// Maximum Domain Namespace Attachments, 128-bit little endian (base 5.17.2.1, Figure 275, bytes 559:544).
    pub maxdna: [u8; 16],
    /// Maximum I/O Controller Namespace Attachments (base 5.17.2.1, Figure 275, bytes 563:560).
    pub maxcna: U32,
    /// Reserved (bytes 767:564).
    pub rsvd564: [u8; 204],
    /// NVM Subsystem NVMe Qualified Name, UTF-8, NUL padded: see [`nqn_field`] (base 5.17.2.1, Figure 275, bytes 1023:768).
    pub subnqn: [u8; 256],
    /// Reserved (bytes 1791:1024).
    pub rsvd1024: [u8; 768],
    /// I/O Queue Command Capsule Supported Size, 16-byte units: SQE plus in-capsule data (fabrics; base 5.17.2.1, Figure 275, bytes 1795:1792).
    pub ioccsz: U32,
    /// I/O Queue Response Capsule Supported Size, 16-byte units (fabrics; base 5.17.2.1, Figure 275, bytes 1799:1796).
    pub iorcsz: U32,
    /// In Capsule Data Offset, 16-byte units after the SQE (fabrics; base 5.17.2.1, Figure 275, bytes 1801:1800).
    pub icdoff: U16,
    /// Fabrics Controller Attributes, see [`fcatt`] (base 5.17.2.1, Figure 275, byte 1802).
    pub fcatt: u8,
    /// Maximum SGL Data Block Descriptors, 0 for no limit (fabrics; base 5.17.2.1, Figure 275, byte 1803).
    pub msdbd: u8,
    /// Optional Fabric Commands Support, see [`ofcs`] (base 5.17.2.1, Figure 275, bytes 1805:1804).
    pub ofcs: U16,
    /// Reserved (bytes 2047:1806).
    pub rsvd1806: [u8; 242],
    /// Power State Descriptors 0 to 31 (base 5.17.2.1, Figure 275, bytes 3071:2048).
    pub psd: [PowerState; 32],
    /// Vendor Specific (bytes 4095:3072).
    pub vs: [u8; 1024],
}
assert_size!(IdentifyController, IDENTIFY_LEN);
assert_offset!(IdentifyController, sn, 4);
assert_offset!(IdentifyController, mn, 24);
assert_offset!(IdentifyController, fr, 64);
assert_offset!(IdentifyController, ieee, 73);
assert_offset!(IdentifyController, mdts, 77);
assert_offset!(IdentifyController, cntlid, 78);
assert_offset!(IdentifyController, ver, 80);
assert_offset!(IdentifyController, oaes, 92);
assert_offset!(IdentifyController, ctratt, 96);
assert_offset!(IdentifyController, cntrltype, 111);
assert_offset!(IdentifyController, fguid, 112);
assert_offset!(IdentifyController, crdt1, 128);
assert_offset!(IdentifyController, nvmsr, 253);
assert_offset!(IdentifyController, oacs, 256);
assert_offset!(IdentifyController, lpa, 261);
assert_offset!(IdentifyController, wctemp, 266);
assert_offset!(IdentifyController, tnvmcap, 280);
assert_offset!(IdentifyController, kas, 320);
assert_offset!(IdentifyController, anatt, 342);
assert_offset!(IdentifyController, domainid, 356);
assert_offset!(IdentifyController, megcap, 368);
assert_offset!(IdentifyController, sqes, 512);
assert_offset!(IdentifyController, maxcmd, 514);
assert_offset!(IdentifyController, nn, 516);
assert_offset!(IdentifyController, oncs, 520);
assert_offset!(IdentifyController, fna, 524);
assert_offset!(IdentifyController, vwc, 525);
assert_offset!(IdentifyController, acwu, 532);
assert_offset!(IdentifyController, sgls, 536);
assert_offset!(IdentifyController, mnan, 540);
assert_offset!(IdentifyController, maxcna, 560);
assert_offset!(IdentifyController, subnqn, 768);
assert_offset!(IdentifyController, ioccsz, 1792);
assert_offset!(IdentifyController, iorcsz, 1796);
assert_offset!(IdentifyController, icdoff, 1800);
assert_offset!(IdentifyController, fcatt, 1802);
assert_offset!(IdentifyController, msdbd, 1803);
assert_offset!(IdentifyController, ofcs, 1804);
assert_offset!(IdentifyController, psd, 2048);
assert_offset!(IdentifyController, vs, 3072);

impl Default for IdentifyController {
    /// All zeroes.
    fn default() -> Self {
        FromZeros::new_zeroed()
    }
}

/// CMIC bits (base 5.17.2.1, Figure 275, byte 76).
pub mod cmic {
    /// The NVM subsystem may have two or more ports (bit 0).
    pub const MULTI_PORT: u8 = 1 << 0;
    /// The NVM subsystem may have two or more controllers (bit 1).
    pub const MULTI_CONTROLLER: u8 = 1 << 1;
    /// The controller is an SR-IOV virtual function (bit 2).
    pub const SRIOV: u8 = 1 << 2;
    /// Asymmetric Namespace Access Reporting (bit 3).
    pub const ANA_REPORTING: u8 = 1 << 3;
}

/// OAES bits (base 5.17.2.1, Figure 275, bytes 95:92).
pub mod oaes {
    /// Namespace Attribute Notices, with the Changed Namespace List log page (bit 8).
    pub const NS_ATTRIBUTE_NOTICES: u32 = 1 << 8;
    /// Firmware Activation Notices (bit 9).
    pub const FIRMWARE_ACTIVATION_NOTICES: u32 = 1 << 9;
    /// Asymmetric Namespace Access Change Notices (bit 11).
    pub const ANA_CHANGE_NOTICES: u32 = 1 << 11;
    /// Predictable Latency Event Aggregate Log Change Notices (bit 12).
    pub const PREDICTABLE_LATENCY_NOTICES: u32 = 1 << 12;
    /// LBA Status Information Notices (bit 13).
    pub const LBA_STATUS_NOTICES: u32 = 1 << 13;
    /// Endurance Group Event Aggregate Log Page Change Notices (bit 14).
    pub const ENDURANCE_GROUP_NOTICES: u32 = 1 << 14;
    /// Normal NVM Subsystem Shutdown Notices (bit 15).
    pub const NORMAL_SHUTDOWN_NOTICES: u32 = 1 << 15;
    /// Zone Descriptor Changed Notices (bit 27).
    pub const ZONE_DESCRIPTOR_NOTICES: u32 = 1 << 27;
    /// Discovery Log Page Change Notification (bit 31).
    pub const DISCOVERY_LOG_CHANGE_NOTICES: u32 = 1 << 31;
}

/// CTRATT bits (base 5.17.2.1, Figure 275, bytes 99:96).
pub mod ctratt {
    /// 128-bit Host Identifier support (bit 0).
    pub const HOST_ID_128: u32 = 1 << 0;
    /// Non-Operational Power State Permissive Mode (bit 1).
    pub const NOPS_PERMISSIVE: u32 = 1 << 1;
    /// NVM Sets (bit 2).
    pub const NVM_SETS: u32 = 1 << 2;
    /// Read Recovery Levels (bit 3).
    pub const READ_RECOVERY_LEVELS: u32 = 1 << 3;
    /// Endurance Groups (bit 4).
    pub const ENDURANCE_GROUPS: u32 = 1 << 4;
    /// Predictable Latency Mode (bit 5).
    pub const PREDICTABLE_LATENCY: u32 = 1 << 5;
    /// Traffic Based Keep Alive (bit 6).
    pub const TBKAS: u32 = 1 << 6;
    /// Namespace Granularity (bit 7).
    pub const NS_GRANULARITY: u32 = 1 << 7;
    /// SQ Associations (bit 8).
    pub const SQ_ASSOCIATIONS: u32 = 1 << 8;
    /// UUID List (bit 9).
    pub const UUID_LIST: u32 = 1 << 9;
    /// Multi-Domain Subsystem (bit 10).
    pub const MULTI_DOMAIN: u32 = 1 << 10;
    /// Fixed Capacity Management (bit 11).
    pub const FIXED_CAPACITY: u32 = 1 << 11;
    /// Variable Capacity Management (bit 12).
    pub const VARIABLE_CAPACITY: u32 = 1 << 12;
    /// Delete Endurance Group (bit 13).
    pub const DELETE_ENDURANCE_GROUP: u32 = 1 << 13;
    /// Delete NVM Set (bit 14).
    pub const DELETE_NVM_SET: u32 = 1 << 14;
    /// Extended LBA Formats Supported (bit 15).
    pub const ELBAS: u32 = 1 << 15;
}

/// CNTRLTYPE values (base 5.17.2.1, Figure 275, byte 111).
pub mod cntrltype {
    /// Not reported (controllers older than 1.4).
    pub const NOT_REPORTED: u8 = 0;
    /// I/O controller.
    pub const IO: u8 = 1;
    /// Discovery controller.
    pub const DISCOVERY: u8 = 2;
    /// Administrative controller.
    pub const ADMIN: u8 = 3;
}

/// OACS bits (base 5.17.2.1, Figure 275, bytes 257:256).
pub mod oacs {
    /// Security Send and Security Receive (bit 0).
    pub const SECURITY: u16 = 1 << 0;
    /// Format NVM (bit 1).
    pub const FORMAT_NVM: u16 = 1 << 1;
    /// Firmware Commit and Firmware Image Download (bit 2).
    pub const FIRMWARE: u16 = 1 << 2;
    /// Namespace Management and Namespace Attachment (bit 3).
    pub const NS_MANAGEMENT: u16 = 1 << 3;
    /// Device Self-test (bit 4).
    pub const DEVICE_SELF_TEST: u16 = 1 << 4;
    /// Directives (bit 5).
    pub const DIRECTIVES: u16 = 1 << 5;
    /// NVMe-MI Send and NVMe-MI Receive (bit 6).
    pub const NVME_MI: u16 = 1 << 6;
    /// Virtualization Management (bit 7).
    pub const VIRTUALIZATION: u16 = 1 << 7;
    /// Doorbell Buffer Config (bit 8).
    pub const DOORBELL_BUFFER_CONFIG: u16 = 1 << 8;
    /// Get LBA Status (bit 9).
    pub const GET_LBA_STATUS: u16 = 1 << 9;
    /// Command and Feature Lockdown (bit 10).
    pub const LOCKDOWN: u16 = 1 << 10;
}

/// FRMW bits (base 5.17.2.1, Figure 275, byte 260).
pub mod frmw {
    /// Firmware slot 1 is read only (bit 0).
    pub const SLOT1_READ_ONLY: u8 = 1 << 0;
    /// Shift of the number of firmware slots (bits 3:1, 1 to 7).
    pub const SLOTS_SHIFT: u8 = 1;
    /// Mask of the number of firmware slots, after the shift.
    pub const SLOTS_MASK: u8 = 0x7;
    /// Firmware activation without reset (bit 4).
    pub const ACTIVATION_WITHOUT_RESET: u8 = 1 << 4;
    /// Support Multiple Update Detection (bit 5).
    pub const MULTIPLE_UPDATE_DETECTION: u8 = 1 << 5;
}

/// LPA bits (base 5.17.2.1, Figure 275, byte 261).
pub mod lpa {
    /// SMART / Health log page per namespace (bit 0).
    pub const SMART_PER_NS: u8 = 1 << 0;
    /// Commands Supported and Effects log page (bit 1).
    pub const COMMANDS_EFFECTS: u8 = 1 << 1;
    /// Extended data for Get Log Page: NUMDU, LPOL/LPOU offsets (bit 2).
    pub const EXTENDED_DATA: u8 = 1 << 2;
    /// Telemetry Host-Initiated and Controller-Initiated log pages (bit 3).
    pub const TELEMETRY: u8 = 1 << 3;
    /// Persistent Event log (bit 4).
    pub const PERSISTENT_EVENT: u8 = 1 << 4;
    /// Supported Log Pages, Feature Identifiers Supported and Effects and NVMe-MI
    /// Commands Supported and Effects log pages (bit 5).
    pub const SUPPORTED_LOG_PAGES: u8 = 1 << 5;
    /// Telemetry Data Area 4 (bit 6).
    pub const TELEMETRY_DA4: u8 = 1 << 6;
}

/// SQES and CQES values (base 5.17.2.1, Figure 275, bytes 513:512).
pub mod qes {
    /// SQES for 64-byte entries, required and maximum (2^6).
    pub const SQES_64: u8 = 0x66;
    /// CQES for 16-byte entries, required and maximum (2^4).
    pub const CQES_16: u8 = 0x44;
}

/// ONCS bits (base 5.17.2.1, Figure 275, bytes 521:520).
pub mod oncs {
    /// Compare (bit 0).
    pub const COMPARE: u16 = 1 << 0;
    /// Write Uncorrectable (bit 1).
    pub const WRITE_UNCORRECTABLE: u16 = 1 << 1;
    /// Dataset Management (bit 2).
    pub const DSM: u16 = 1 << 2;
    /// Write Zeroes (bit 3).
    pub const WRITE_ZEROES: u16 = 1 << 3;
    /// Save field in Set Features and Select field in Get Features (bit 4).
    pub const SAVE_SELECT: u16 = 1 << 4;
    /// Reservations (bit 5).
    pub const RESERVATIONS: u16 = 1 << 5;
    /// Timestamp feature (bit 6).
    pub const TIMESTAMP: u16 = 1 << 6;
    /// Verify (bit 7).
    pub const VERIFY: u16 = 1 << 7;
    /// Copy (bit 8).
    pub const COPY: u16 = 1 << 8;
}

/// FUSES bits (base 5.17.2.1, Figure 275, bytes 523:522).
pub mod fuses {
    /// Compare and Write fused operation (bit 0).
    pub const COMPARE_AND_WRITE: u16 = 1 << 0;
}

/// FNA bits (base 5.17.2.1, Figure 275, byte 524).
pub mod fna {
    /// Format applies to all namespaces (bit 0).
    pub const FORMAT_ALL: u8 = 1 << 0;
    /// Secure erase applies to all namespaces (bit 1).
    pub const SECURE_ERASE_ALL: u8 = 1 << 1;
    /// Cryptographic erase supported (bit 2).
    pub const CRYPTO_ERASE: u8 = 1 << 2;
}

/// VWC bits (base 5.17.2.1, Figure 275, byte 525).
pub mod vwc {
    /// A volatile write cache is present (bit 0).
    pub const PRESENT: u8 = 1 << 0;
    /// Flush with NSID FFFFFFFFh: mask of bits 2:1.
    pub const FLUSH_BROADCAST_MASK: u8 = 0b11 << 1;
    /// Flush with NSID FFFFFFFFh is not supported (bits 2:1 = 10b).
    pub const FLUSH_BROADCAST_UNSUPPORTED: u8 = 0b10 << 1;
    /// Flush with NSID FFFFFFFFh is supported (bits 2:1 = 11b).
    pub const FLUSH_BROADCAST_SUPPORTED: u8 = 0b11 << 1;
}

/// SGLS bits (base 5.17.2.1, Figure 275, bytes 539:536).
pub mod sgls {
    /// Mask of the SGL Support field (bits 1:0).
    pub const SUPPORT_MASK: u32 = 0b11;
    /// SGLs supported, no alignment requirement (bits 1:0 = 01b).
    pub const SUPPORTED: u32 = 0b01;
    /// SGLs supported, data blocks dword aligned (bits 1:0 = 10b).
    pub const SUPPORTED_DWORD_ALIGNED: u32 = 0b10;
    /// Keyed SGL Data Block descriptor (bit 2; RDMA).
    pub const KEYED_DATA_BLOCK: u32 = 1 << 2;
    /// SGL Bit Bucket descriptor (bit 16).
    pub const BIT_BUCKET: u32 = 1 << 16;
    /// Byte aligned contiguous physical buffer of metadata (bit 17).
    pub const BYTE_ALIGNED_METADATA: u32 = 1 << 17;
    /// An SGL longer than the data to transfer is allowed (bit 18).
    pub const LONGER_THAN_DATA: u32 = 1 << 18;
    /// MPTR may hold an SGL descriptor (bit 19).
    pub const METADATA_SGL: u32 = 1 << 19;
    /// Address field as an offset: in-capsule data on Fabrics (bit 20).
    pub const ADDRESS_AS_OFFSET: u32 = 1 << 20;
    /// Transport SGL Data Block descriptor (bit 21; TCP).
    pub const TRANSPORT_DATA_BLOCK: u32 = 1 << 21;
}

/// FCATT bits (fabrics; base 5.17.2.1, Figure 275, byte 1802).
pub mod fcatt {
    /// Static controller model (bit 0 set); clear for the dynamic model.
    pub const STATIC_CONTROLLER_MODEL: u8 = 1 << 0;
}

/// OFCS bits (fabrics; base 5.17.2.1, Figure 275, bytes 1805:1804).
pub mod ofcs {
    /// Disconnect command supported (bit 0).
    pub const DISCONNECT: u16 = 1 << 0;
}

/// An LBA Format (nvm 4.1.5.1, LBA Format Data Structure).
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
pub struct LbaFormat {
    /// Metadata Size in bytes per logical block (nvm 4.1.5.1, bytes 1:0).
    pub ms: U16,
    /// LBA Data Size as a power of two, at least 9; 0 if the format is unavailable (nvm 4.1.5.1, byte 2).
    pub lbads: u8,
    /// Relative Performance, bits 1:0: 0 best, 3 degraded (nvm 4.1.5.1, byte 3).
    pub rp: u8,
}
assert_size!(LbaFormat, 4);
assert_offset!(LbaFormat, lbads, 2);

impl LbaFormat {
    /// A format of `block_size` bytes (a power of two) and `ms` bytes of metadata.
    pub fn new(block_size: u32, ms: u16) -> Self {
        debug_assert!(block_size.is_power_of_two() && block_size >= 512);
        LbaFormat {
            ms: U16::new(ms),
            lbads: block_size.trailing_zeros() as u8,
            rp: 0,
        }
    }

    /// Logical block size in bytes (0 if the format is unavailable).
    pub fn block_size(&self) -> u64 {
        if self.lbads == 0 || self.lbads >= 64 {
            0
        } else {
            1 << self.lbads
        }
    }
}

/// The Identify Namespace data structure of the NVM command set (nvm 4.1.5.1).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IdentifyNamespace {
    /// Namespace Size in logical blocks (nvm 4.1.5.1, bytes 7:0).
    pub nsze: U64,
    /// Namespace Capacity in logical blocks (nvm 4.1.5.1, bytes 15:8).
    pub ncap: U64,
    /// Namespace Utilization in logical blocks (nvm 4.1.5.1, bytes 23:16).
    pub nuse: U64,
    /// Namespace Features, see [`nsfeat`] (nvm 4.1.5.1, byte 24).
    pub nsfeat: u8,
    /// Number of LBA Formats, 0's based (nvm 4.1.5.1, byte 25).
    pub nlbaf: u8,
    /// Formatted LBA Size, see [`flbas`] (nvm 4.1.5.1, byte 26).
    pub flbas: u8,
    /// Metadata Capabilities (nvm 4.1.5.1, byte 27).
    pub mc: u8,
    /// End-to-end Data Protection Capabilities (nvm 4.1.5.1, byte 28).
    pub dpc: u8,
    /// End-to-end Data Protection Type Settings (nvm 4.1.5.1, byte 29).
    pub dps: u8,
    /// Namespace Multi-path I/O and Namespace Sharing Capabilities, see [`nmic`] (nvm 4.1.5.1, byte 30).
    pub nmic: u8,
    /// Reservation Capabilities (nvm 4.1.5.1, byte 31).
    pub rescap: u8,
    /// Format Progress Indicator (nvm 4.1.5.1, byte 32).
    pub fpi: u8,
    /// Deallocate Logical Block Features, see [`dlfeat`] (nvm 4.1.5.1, byte 33).
    pub dlfeat: u8,
    /// Namespace Atomic Write Unit Normal, 0's based (nvm 4.1.5.1, bytes 35:34).
    pub nawun: U16,
    /// Namespace Atomic Write Unit Power Fail, 0's based (nvm 4.1.5.1, bytes 37:36).
    pub nawupf: U16,
    /// Namespace Atomic Compare & Write Unit, 0's based (nvm 4.1.5.1, bytes 39:38).
    pub nacwu: U16,
    /// Namespace Atomic Boundary Size Normal, 0's based (nvm 4.1.5.1, bytes 41:40).
    pub nabsn: U16,
    /// Namespace Atomic Boundary Offset (nvm 4.1.5.1, bytes 43:42).
    pub nabo: U16,
    /// Namespace Atomic Boundary Size Power Fail, 0's based (nvm 4.1.5.1, bytes 45:44).
    pub nabspf: U16,
    /// Namespace Optimal I/O Boundary in logical blocks (nvm 4.1.5.1, bytes 47:46).
    pub noiob: U16,
    /// NVM Capacity in bytes, 128-bit little endian (nvm 4.1.5.1, bytes 63:48).
    pub nvmcap: [u8; 16],
    /// Namespace Preferred Write Granularity, 0's based (nvm 4.1.5.1, bytes 65:64).
    pub npwg: U16,
    /// Namespace Preferred Write Alignment, 0's based (nvm 4.1.5.1, bytes 67:66).
    pub npwa: U16,
    /// Namespace Preferred Deallocate Granularity, 0's based (nvm 4.1.5.1, bytes 69:68).
    pub npdg: U16,
    /// Namespace Preferred Deallocate Alignment, 0's based (nvm 4.1.5.1, bytes 71:70).
    pub npda: U16,
    /// Namespace Optimal Write Size, 0's based (nvm 4.1.5.1, bytes 73:72).
    pub nows: U16,
    /// Maximum Single Source Range Length for Copy (nvm 4.1.5.1, bytes 75:74).
    pub mssrl: U16,
    /// Maximum Copy Length (nvm 4.1.5.1, bytes 79:76).
    pub mcl: U32,
    /// Maximum Source Range Count for Copy, 0's based (nvm 4.1.5.1, byte 80).
    pub msrc: u8,
    /// Reserved (byte 81).
    pub rsvd81: u8,
    /// Number of Unique Attribute LBA Formats (nvm 4.1.5.1, byte 82).
    pub nulbaf: u8,
    /// Reserved (bytes 91:83).
    pub rsvd83: [u8; 9],
    /// ANA Group Identifier (nvm 4.1.5.1, bytes 95:92).
    pub anagrpid: U32,
    /// Reserved (bytes 98:96).
    pub rsvd96: [u8; 3],
    /// Namespace Attributes: bit 0 write protected (nvm 4.1.5.1, byte 99).
    pub nsattr: u8,
    /// NVM Set Identifier (nvm 4.1.5.1, bytes 101:100).
    pub nvmsetid: U16,
    /// Endurance Group Identifier (nvm 4.1.5.1, bytes 103:102).
    pub endgid: U16,
    /// Namespace Globally Unique Identifier, big endian as the spec prints it (nvm 4.1.5.1, bytes 119:104).
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier, big endian (nvm 4.1.5.1, bytes 127:120).
    pub eui64: [u8; 8],
    /// LBA Format 0 to 63 Support (nvm 4.1.5.1, bytes 383:128).
    pub lbaf: [LbaFormat; 64],
    /// Vendor Specific (bytes 4095:384).
    pub vs: [u8; 3712],
}
assert_size!(IdentifyNamespace, IDENTIFY_LEN);
assert_offset!(IdentifyNamespace, nsfeat, 24);
assert_offset!(IdentifyNamespace, flbas, 26);
assert_offset!(IdentifyNamespace, dlfeat, 33);
assert_offset!(IdentifyNamespace, nawun, 34);
assert_offset!(IdentifyNamespace, noiob, 46);
assert_offset!(IdentifyNamespace, nvmcap, 48);
assert_offset!(IdentifyNamespace, npwg, 64);
assert_offset!(IdentifyNamespace, nows, 72);
assert_offset!(IdentifyNamespace, mcl, 76);
assert_offset!(IdentifyNamespace, nulbaf, 82);
assert_offset!(IdentifyNamespace, anagrpid, 92);
assert_offset!(IdentifyNamespace, nsattr, 99);
assert_offset!(IdentifyNamespace, nvmsetid, 100);
assert_offset!(IdentifyNamespace, nguid, 104);
assert_offset!(IdentifyNamespace, eui64, 120);
assert_offset!(IdentifyNamespace, lbaf, 128);
assert_offset!(IdentifyNamespace, vs, 384);

impl Default for IdentifyNamespace {
    /// All zeroes (what a controller returns for an inactive NSID).
    fn default() -> Self {
        FromZeros::new_zeroed()
    }
}

impl IdentifyNamespace {
    /// The index of the formatted LBA format: FLBAS bits 3:0, and bits 6:5 as bits 5:4.
    pub fn lba_format_index(&self) -> usize {
        ((self.flbas & flbas::INDEX_LOW_MASK) | ((self.flbas & flbas::INDEX_HIGH_MASK) >> 1))
            as usize
    }

    /// Sets the formatted LBA format index (0 to 63), keeping FLBAS bit 4.
    pub fn set_lba_format_index(&mut self, index: usize) {
        debug_assert!(index < 64);
        let i = index as u8 & 0x3f;
        self.flbas = (self.flbas & flbas::EXTENDED_METADATA)
            | (i & flbas::INDEX_LOW_MASK)
            | ((i << 1) & flbas::INDEX_HIGH_MASK);
    }

    /// The formatted LBA format.
    pub fn lba_format(&self) -> LbaFormat {
        self.lbaf[self.lba_format_index()]
    }

    /// Logical block size in bytes of the formatted LBA format.
    pub fn block_size(&self) -> u64 {
        self.lba_format().block_size()
    }
}

/// NSFEAT bits (nvm 4.1.5.1, byte 24).
pub mod nsfeat {
    /// Thin provisioning: NCAP may be less than NSZE (bit 0).
    pub const THIN_PROVISIONING: u8 = 1 << 0;
    /// NAWUN, NAWUPF and NACWU are valid (bit 1).
    pub const NS_ATOMICS: u8 = 1 << 1;
    /// Deallocated or Unwritten Logical Block error supported (bit 2).
    pub const DEALLOCATED_ERROR: u8 = 1 << 2;
    /// NGUID and EUI64 are never reused (bit 3).
    pub const UID_REUSE: u8 = 1 << 3;
    /// NPWG, NPWA, NPDG, NPDA and NOWS are valid (bit 4).
    pub const OPTIMAL_PERFORMANCE: u8 = 1 << 4;
}

/// FLBAS bits (nvm 4.1.5.1, byte 26).
pub mod flbas {
    /// Format index, low four bits (bits 3:0).
    pub const INDEX_LOW_MASK: u8 = 0x0f;
    /// Metadata at the end of each block, extended LBA (bit 4); else in a separate buffer.
    pub const EXTENDED_METADATA: u8 = 1 << 4;
    /// Format index, high two bits (bits 6:5), when more than 16 formats exist.
    pub const INDEX_HIGH_MASK: u8 = 0b11 << 5;
}

/// NMIC bits (nvm 4.1.5.1, byte 30).
pub mod nmic {
    /// The namespace may be attached to two or more controllers (bit 0).
    pub const SHARED: u8 = 1 << 0;
}

/// DLFEAT values (nvm 4.1.5.1, byte 33).
pub mod dlfeat {
    /// Mask of what a read of a deallocated block returns (bits 2:0).
    pub const READ_MASK: u8 = 0b111;
    /// Read of deallocated blocks: not reported (000b).
    pub const READ_NOT_REPORTED: u8 = 0b000;
    /// Read of deallocated blocks returns all zeroes (001b).
    pub const READ_ZEROES: u8 = 0b001;
    /// Read of deallocated blocks returns all ones, FFh bytes (010b).
    pub const READ_ONES: u8 = 0b010;
    /// Write Zeroes supports the Deallocate bit (bit 3).
    pub const WRITE_ZEROES_DEALLOCATE: u8 = 1 << 3;
    /// The guard of deallocated blocks is the CRC of their data (bit 4).
    pub const GUARD_CRC: u8 = 1 << 4;
}

/// Namespace Identification Descriptor header (base 5.17.2.3); NIDL bytes of
/// identifier follow it.
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
pub struct NsIdDescHeader {
    /// Namespace Identifier Type, see [`nidt`] (base 5.17.2.3, byte 0).
    pub nidt: u8,
    /// Namespace Identifier Length, see [`nidl`] (base 5.17.2.3, byte 1).
    pub nidl: u8,
    /// Reserved (bytes 3:2).
    pub rsvd: [u8; 2],
}
assert_size!(NsIdDescHeader, 4);

/// Namespace Identifier Types (base 5.17.2.3).
pub mod nidt {
    /// IEEE Extended Unique Identifier.
    pub const EUI64: u8 = 1;
    /// Namespace Globally Unique Identifier.
    pub const NGUID: u8 = 2;
    /// Namespace UUID.
    pub const UUID: u8 = 3;
    /// Command Set Identifier.
    pub const CSI: u8 = 4;
}

/// Namespace Identifier Lengths, by type (base 5.17.2.3).
pub mod nidl {
    /// Length of an EUI64.
    pub const EUI64: u8 = 8;
    /// Length of an NGUID.
    pub const NGUID: u8 = 16;
    /// Length of a UUID.
    pub const UUID: u8 = 16;
    /// Length of a CSI.
    pub const CSI: u8 = 1;
}

/// Builds a Namespace Identification Descriptor list (base 5.17.2.3): one descriptor per
/// identifier given, in type order, the rest of the 4 KiB zero (a zero NIDL ends the
/// list). Returns the bytes used.
pub fn ns_id_descriptors(
    out: &mut [u8; IDENTIFY_LEN],
    eui64: Option<[u8; 8]>,
    nguid: Option<[u8; 16]>,
    uuid: Option<[u8; 16]>,
    csi: Option<u8>,
) -> usize {
    out.fill(0);
    let csi = csi.map(|c| [c]);
    let items: [(u8, Option<&[u8]>); 4] = [
        (nidt::EUI64, eui64.as_ref().map(|v| &v[..])),
        (nidt::NGUID, nguid.as_ref().map(|v| &v[..])),
        (nidt::UUID, uuid.as_ref().map(|v| &v[..])),
        (nidt::CSI, csi.as_ref().map(|v| &v[..])),
    ];
    let mut at = 0;
    for (ty, id) in items {
        let Some(id) = id else { continue };
        let h = NsIdDescHeader {
            nidt: ty,
            nidl: id.len() as u8,
            rsvd: [0; 2],
        };
        out[at..at + 4].copy_from_slice(h.as_bytes());
        out[at + 4..at + 4 + id.len()].copy_from_slice(id);
        at += 4 + id.len();
    }
    at
}

/// The (type, identifier) pairs of a Namespace Identification Descriptor list (base
/// 5.17.2.3), up to the first zero-length descriptor or a descriptor that overruns the
/// buffer.
pub fn ns_id_descriptor_iter(buf: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let (h, _) = NsIdDescHeader::read_from_prefix(buf.get(at..)?).ok()?;
        let len = h.nidl as usize;
        let id = buf.get(at + 4..at + 4 + len).filter(|_| len > 0)?;
        at += 4 + len;
        Some((h.nidt, id))
    })
}

/// An Active Namespace ID list (base 5.17.2.2): up to 1024 NSIDs in increasing order,
/// the rest zero.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct NsList {
    /// The NSIDs, zero after the last (base 5.17.2.2).
    pub ids: [U32; 1024],
}
assert_size!(NsList, IDENTIFY_LEN);

impl Default for NsList {
    /// An empty list.
    fn default() -> Self {
        FromZeros::new_zeroed()
    }
}

impl NsList {
    /// The list an Identify with CNS 02h and NSID `after` returns: the first 1024 of `ids`
    /// (increasing) that are greater than `after`.
    pub fn active_after(after: u32, ids: impl IntoIterator<Item = u32>) -> Self {
        let mut l = NsList::default();
        let ids = ids.into_iter().filter(|&id| id > after);
        for (slot, id) in l.ids.iter_mut().zip(ids) {
            *slot = U32::new(id);
        }
        l
    }

    /// The NSIDs up to the first zero.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids.iter().map(|v| v.get()).take_while(|&id| id != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_controller_offsets_in_bytes() {
        let mut id = IdentifyController {
            vid: U16::new(0x1b36),
            cntlid: U16::new(0x1234),
            mdts: 5,
            ver: U32::new(version(2, 0, 0)),
            oacs: U16::new(oacs::FORMAT_NVM),
            sqes: qes::SQES_64,
            cqes: qes::CQES_16,
            nn: U32::new(32),
            oncs: U16::new(oncs::DSM | oncs::WRITE_ZEROES),
            vwc: vwc::PRESENT,
            sgls: U32::new(sgls::SUPPORTED | sgls::KEYED_DATA_BLOCK | sgls::ADDRESS_AS_OFFSET),
            ioccsz: U32::new(260),
            ..Default::default()
        };
        pad_ascii(&mut id.sn, "SN1");
        pad_ascii(&mut id.mn, "Pollux");
        pad_ascii(&mut id.fr, "0.1");
        nqn_field(&mut id.subnqn, "nqn.2024-01.io.pollux:sub");
        id.psd[0].mp = U16::new(2500);
        let b = id.as_bytes();
        assert_eq!(&b[0..2], &[0x36, 0x1b]);
        assert_eq!(&b[4..8], b"SN1 ");
        assert_eq!(b[23], b' ');
        assert_eq!(&b[24..31], b"Pollux ");
        assert_eq!(&b[64..68], b"0.1 ");
        assert_eq!(b[77], 5);
        assert_eq!(&b[78..80], &[0x34, 0x12]);
        assert_eq!(&b[80..84], &[0, 0, 2, 0]);
        assert_eq!(b[256], 0x02);
        assert_eq!(b[512], 0x66);
        assert_eq!(b[513], 0x44);
        assert_eq!(b[516], 32);
        assert_eq!(b[520], 0x0c);
        assert_eq!(b[525], 1);
        assert_eq!(&b[536..540], &[0x05, 0x00, 0x10, 0x00]);
        assert_eq!(&b[768..772], b"nqn.");
        assert_eq!(b[1023], 0);
        assert_eq!(&b[1792..1796], &[4, 1, 0, 0]);
        assert_eq!(&b[2048..2050], &[0xc4, 0x09]);
        let back = IdentifyController::read_from_bytes(b).unwrap();
        assert_eq!(back, id);
        assert_eq!(ascii_str(&back.mn), Some("Pollux"));
    }

    #[test]
    fn identify_namespace_offsets_and_format_index() {
        let mut ns = IdentifyNamespace {
            nsze: U64::new(1 << 20),
            nlbaf: 1,
            nsfeat: nsfeat::THIN_PROVISIONING,
            dlfeat: dlfeat::READ_ZEROES | dlfeat::WRITE_ZEROES_DEALLOCATE,
            nguid: [0xaa; 16],
            eui64: [0xbb; 8],
            ..Default::default()
        };
        ns.lbaf[0] = LbaFormat::new(512, 0);
        ns.lbaf[1] = LbaFormat::new(4096, 8);
        ns.set_lba_format_index(1);
        let b = ns.as_bytes();
        assert_eq!(&b[0..8], &[0, 0, 0x10, 0, 0, 0, 0, 0]);
        assert_eq!(b[24], 1);
        assert_eq!(b[26], 1);
        assert_eq!(b[33], 0x09);
        assert_eq!(&b[104..120], &[0xaa; 16]);
        assert_eq!(&b[120..128], &[0xbb; 8]);
        assert_eq!(&b[128..132], &[0, 0, 9, 0]);
        assert_eq!(&b[132..136], &[8, 0, 12, 0]);
        assert_eq!(ns.block_size(), 4096);
        assert_eq!(IdentifyNamespace::read_from_bytes(b).unwrap(), ns);

        // Index 0x25: low nibble 5 in bits 3:0, high bits 10b in bits 6:5.
        ns.flbas = flbas::EXTENDED_METADATA;
        ns.set_lba_format_index(0x25);
        assert_eq!(ns.flbas, 0x05 | 0x10 | 0x40);
        assert_eq!(ns.lba_format_index(), 0x25);
    }

    #[test]
    fn text_fields() {
        let mut f = [0u8; 8];
        pad_ascii(&mut f, "abcdefghij");
        assert_eq!(&f, b"abcdefgh");
        pad_ascii(&mut f, "é\t");
        assert_eq!(&f, b"???     ", "two bytes of UTF-8 and a tab");
        let mut n = [0xffu8; 256];
        nqn_field(&mut n, &"é".repeat(200));
        assert_eq!(n[254], 0, "a two-byte char does not fit at 254");
        assert_eq!(n[255], 0);
        assert!(std::str::from_utf8(&n[..254]).is_ok());
        assert_eq!(ascii_str(b"4420    "), Some("4420"));
        assert_eq!(ascii_str(b"4420\0\0\0\0"), Some("4420"));
    }

    #[test]
    fn ns_id_descriptor_list() {
        let mut out = [0xffu8; IDENTIFY_LEN];
        let used = ns_id_descriptors(&mut out, None, Some([7; 16]), Some([9; 16]), Some(0));
        assert_eq!(used, 20 + 20 + 5);
        assert_eq!(&out[0..4], &[nidt::NGUID, 16, 0, 0]);
        assert_eq!(&out[4..20], &[7; 16]);
        assert_eq!(&out[20..24], &[nidt::UUID, 16, 0, 0]);
        assert_eq!(&out[40..45], &[nidt::CSI, 1, 0, 0, 0]);
        assert!(out[45..].iter().all(|&b| b == 0));
        let got: Vec<_> = ns_id_descriptor_iter(&out).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], (nidt::UUID, &[9u8; 16][..]));
        assert_eq!(got[2], (nidt::CSI, &[0u8][..]));
    }

    #[test]
    fn active_namespace_list() {
        let l = NsList::active_after(2, [1, 2, 3, 7, 9]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![3, 7, 9]);
        assert_eq!(&l.as_bytes()[..8], &[3, 0, 0, 0, 7, 0, 0, 0]);
        let full = NsList::active_after(0, 1..=5000);
        assert_eq!(full.iter().count(), 1024);
        assert_eq!(full.ids[1023].get(), 1024);
    }
}
