//! Admin and NVM command set opcodes, the values their command dwords carry (CNS, Log
//! Identifiers, Feature Identifiers, asynchronous events), and typed views of the command
//! dwords that a target decodes and a host encodes.
//!
//! The dword helpers follow one pattern: `from_sqe` reads the fields from an [`Sqe`],
//! `write_to` sets them in an [`Sqe`] (only the dwords they own), and where the opcode is
//! fixed `to_sqe` builds a fresh [`Sqe`] with it.

use super::cmd::Sqe;
use super::{assert_offset, assert_size};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Admin command opcodes (base 5, Opcodes for Admin Commands).
pub mod admin_opc {
    /// Delete I/O Submission Queue (base 5.7).
    pub const DELETE_IO_SQ: u8 = 0x00;
    /// Create I/O Submission Queue (base 5.5).
    pub const CREATE_IO_SQ: u8 = 0x01;
    /// Get Log Page (base 5.16).
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Delete I/O Completion Queue (base 5.6).
    pub const DELETE_IO_CQ: u8 = 0x04;
    /// Create I/O Completion Queue (base 5.4).
    pub const CREATE_IO_CQ: u8 = 0x05;
    /// Identify (base 5.17).
    pub const IDENTIFY: u8 = 0x06;
    /// Abort (base 5.1).
    pub const ABORT: u8 = 0x08;
    /// Set Features (base 5.27).
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features (base 5.15).
    pub const GET_FEATURES: u8 = 0x0a;
    /// Asynchronous Event Request (base 5.2).
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0c;
    /// Namespace Management (base 5.21).
    pub const NAMESPACE_MANAGEMENT: u8 = 0x0d;
    /// Firmware Commit (base 5.12).
    pub const FIRMWARE_COMMIT: u8 = 0x10;
    /// Firmware Image Download (base 5.13).
    pub const FIRMWARE_DOWNLOAD: u8 = 0x11;
    /// Device Self-test (base 5.8).
    pub const DEVICE_SELF_TEST: u8 = 0x14;
    /// Namespace Attachment (base 5.20).
    pub const NAMESPACE_ATTACHMENT: u8 = 0x15;
    /// Keep Alive (base 5.18).
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Directive Send (base 5.10).
    pub const DIRECTIVE_SEND: u8 = 0x19;
    /// Directive Receive (base 5.9).
    pub const DIRECTIVE_RECV: u8 = 0x1a;
    /// Virtualization Management (base 5.28).
    pub const VIRTUALIZATION_MANAGEMENT: u8 = 0x1c;
    /// NVMe-MI Send (base 5.23).
    pub const NVME_MI_SEND: u8 = 0x1d;
    /// NVMe-MI Receive (base 5.22).
    pub const NVME_MI_RECV: u8 = 0x1e;
    /// Capacity Management (base 5.3).
    pub const CAPACITY_MANAGEMENT: u8 = 0x20;
    /// Lockdown (base 5.19).
    pub const LOCKDOWN: u8 = 0x24;
    /// Doorbell Buffer Config (base 5.11; PCIe only).
    pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7c;
    /// Fabrics Commands (fabrics 6.1): the same value as [`crate::spec::fabrics::OPC_FABRICS`].
    pub const FABRICS: u8 = crate::spec::fabrics::OPC_FABRICS;
    /// Format NVM (base 5.14).
    pub const FORMAT_NVM: u8 = 0x80;
    /// Security Send (base 5.26).
    pub const SECURITY_SEND: u8 = 0x81;
    /// Security Receive (base 5.25).
    pub const SECURITY_RECV: u8 = 0x82;
    /// Sanitize (base 5.24).
    pub const SANITIZE: u8 = 0x84;
    /// Get LBA Status (nvm 4; an NVM command set specific admin command).
    pub const GET_LBA_STATUS: u8 = 0x86;
}

/// NVM command set I/O opcodes (nvm 3, Opcodes for NVM Commands; Flush and the
/// reservation commands are common to all I/O command sets, base 7).
pub mod nvm_opc {
    /// Flush (base 7.1).
    pub const FLUSH: u8 = 0x00;
    /// Write (nvm 3.2.6).
    pub const WRITE: u8 = 0x01;
    /// Read (nvm 3.2.4).
    pub const READ: u8 = 0x02;
    /// Write Uncorrectable (nvm 3.2.7).
    pub const WRITE_UNCORRECTABLE: u8 = 0x04;
    /// Compare (nvm 3.2.1).
    pub const COMPARE: u8 = 0x05;
    /// Write Zeroes (nvm 3.2.8).
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management (nvm 3.2.3).
    pub const DATASET_MANAGEMENT: u8 = 0x09;
    /// Verify (nvm 3.2.5).
    pub const VERIFY: u8 = 0x0c;
    /// Reservation Register (base 7.3).
    pub const RESERVATION_REGISTER: u8 = 0x0d;
    /// Reservation Report (base 7.5).
    pub const RESERVATION_REPORT: u8 = 0x0e;
    /// Reservation Acquire (base 7.2).
    pub const RESERVATION_ACQUIRE: u8 = 0x11;
    /// Reservation Release (base 7.4).
    pub const RESERVATION_RELEASE: u8 = 0x15;
    /// Copy (nvm 3.2.2).
    pub const COPY: u8 = 0x19;
}

/// Controller or Namespace Structure values of Identify (base 5.17, CDW10 bits 7:0).
pub mod cns {
    /// Identify Namespace data structure for the NSID (nvm 4.1.5.1).
    pub const NAMESPACE: u8 = 0x00;
    /// Identify Controller data structure (base 5.17.2.1).
    pub const CONTROLLER: u8 = 0x01;
    /// Active Namespace ID list: up to 1024 active NSIDs greater than the NSID (base 5.17.2.2).
    pub const ACTIVE_NS_LIST: u8 = 0x02;
    /// Namespace Identification Descriptor list for the NSID (base 5.17.2.3).
    pub const NS_ID_DESCRIPTORS: u8 = 0x03;
    /// NVM Set List (base 5.17.2.4).
    pub const NVM_SET_LIST: u8 = 0x04;
    /// I/O Command Set specific Identify Namespace (CSI in CDW11).
    pub const CSI_NAMESPACE: u8 = 0x05;
    /// I/O Command Set specific Identify Controller (CSI in CDW11).
    pub const CSI_CONTROLLER: u8 = 0x06;
    /// I/O Command Set specific Active Namespace ID list (CSI in CDW11).
    pub const CSI_ACTIVE_NS_LIST: u8 = 0x07;
    /// I/O Command Set Independent Identify Namespace (base 5.17.2.8).
    pub const CS_INDEPENDENT_NAMESPACE: u8 = 0x08;
    /// Allocated Namespace ID list.
    pub const ALLOCATED_NS_LIST: u8 = 0x10;
    /// Identify Namespace data structure for an allocated NSID.
    pub const ALLOCATED_NAMESPACE: u8 = 0x11;
    /// Controller list: controllers attached to the NSID.
    pub const NS_CONTROLLER_LIST: u8 = 0x12;
    /// Controller list: controllers in the NVM subsystem.
    pub const CONTROLLER_LIST: u8 = 0x13;
    /// Primary Controller Capabilities.
    pub const PRIMARY_CONTROLLER_CAPS: u8 = 0x14;
    /// Secondary Controller list.
    pub const SECONDARY_CONTROLLER_LIST: u8 = 0x15;
    /// Namespace Granularity List.
    pub const NS_GRANULARITY_LIST: u8 = 0x16;
    /// UUID List.
    pub const UUID_LIST: u8 = 0x17;
    /// Domain List.
    pub const DOMAIN_LIST: u8 = 0x18;
    /// Endurance Group List.
    pub const ENDURANCE_GROUP_LIST: u8 = 0x19;
    /// I/O Command Set specific Allocated Namespace ID list.
    pub const CSI_ALLOCATED_NS_LIST: u8 = 0x1a;
    /// I/O Command Set specific Identify Namespace for an allocated NSID.
    pub const CSI_ALLOCATED_NAMESPACE: u8 = 0x1b;
    /// Identify I/O Command Set data structure (the command set combinations).
    pub const IO_COMMAND_SET: u8 = 0x1c;
}

/// Command Set Identifiers (base 5.17, CDW11 bits 31:24; also the CSI descriptor).
pub mod csi {
    /// NVM Command Set.
    pub const NVM: u8 = 0x00;
    /// Key Value Command Set.
    pub const KEY_VALUE: u8 = 0x01;
    /// Zoned Namespace Command Set.
    pub const ZONED: u8 = 0x02;
}

/// Log Page Identifiers (base 5.16, Get Log Page - Log Page Identifiers).
pub mod log_id {
    /// Supported Log Pages (base 5.16.1.1).
    pub const SUPPORTED_LOG_PAGES: u8 = 0x00;
    /// Error Information (base 5.16.1.2).
    pub const ERROR: u8 = 0x01;
    /// SMART / Health Information (base 5.16.1.3).
    pub const SMART: u8 = 0x02;
    /// Firmware Slot Information (base 5.16.1.4).
    pub const FIRMWARE_SLOT: u8 = 0x03;
    /// Changed Namespace List (base 5.16.1.5).
    pub const CHANGED_NS_LIST: u8 = 0x04;
    /// Commands Supported and Effects (base 5.16.1.6).
    pub const COMMANDS_SUPPORTED: u8 = 0x05;
    /// Device Self-test (base 5.16.1.7).
    pub const DEVICE_SELF_TEST: u8 = 0x06;
    /// Telemetry Host-Initiated (base 5.16.1.8).
    pub const TELEMETRY_HOST: u8 = 0x07;
    /// Telemetry Controller-Initiated (base 5.16.1.9).
    pub const TELEMETRY_CONTROLLER: u8 = 0x08;
    /// Endurance Group Information (base 5.16.1.10).
    pub const ENDURANCE_GROUP: u8 = 0x09;
    /// Predictable Latency Per NVM Set (base 5.16.1.11).
    pub const PREDICTABLE_LATENCY: u8 = 0x0a;
    /// Predictable Latency Event Aggregate (base 5.16.1.12).
    pub const PREDICTABLE_LATENCY_AGGREGATE: u8 = 0x0b;
    /// Asymmetric Namespace Access (base 5.16.1.13).
    pub const ANA: u8 = 0x0c;
    /// Persistent Event Log (base 5.16.1.14).
    pub const PERSISTENT_EVENT: u8 = 0x0d;
    /// Endurance Group Event Aggregate (base 5.16.1.16).
    pub const ENDURANCE_GROUP_AGGREGATE: u8 = 0x0f;
    /// Media Unit Status (base 5.16.1.17).
    pub const MEDIA_UNIT_STATUS: u8 = 0x10;
    /// Supported Capacity Configuration List (base 5.16.1.18).
    pub const CAPACITY_CONFIG_LIST: u8 = 0x11;
    /// Feature Identifiers Supported and Effects (base 5.16.1.19).
    pub const FEATURES_SUPPORTED: u8 = 0x12;
    /// NVMe-MI Commands Supported and Effects (base 5.16.1.20).
    pub const MI_COMMANDS_SUPPORTED: u8 = 0x13;
    /// Command and Feature Lockdown (base 5.16.1.21).
    pub const LOCKDOWN: u8 = 0x14;
    /// Boot Partition (base 5.16.1.22).
    pub const BOOT_PARTITION: u8 = 0x15;
    /// Discovery (base 5.16.1.23; fabrics 5.4): only on Discovery controllers.
    pub const DISCOVERY: u8 = 0x70;
    /// Reservation Notification (base 5.16.1.24).
    pub const RESERVATION_NOTIFICATION: u8 = 0x80;
    /// Sanitize Status (base 5.16.1.25).
    pub const SANITIZE_STATUS: u8 = 0x81;
}

/// Feature Identifiers (base 5.27.1, Feature Identifiers).
pub mod feature {
    /// Arbitration.
    pub const ARBITRATION: u8 = 0x01;
    /// Power Management.
    pub const POWER_MANAGEMENT: u8 = 0x02;
    /// LBA Range Type (NVM command set, namespace specific).
    pub const LBA_RANGE_TYPE: u8 = 0x03;
    /// Temperature Threshold.
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    /// Error Recovery (namespace specific; DULBE, TLER).
    pub const ERROR_RECOVERY: u8 = 0x05;
    /// Volatile Write Cache: CDW11 bit 0 is WCE.
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    /// Number of Queues: see [`super::NumQueues`].
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    /// Interrupt Coalescing (PCIe).
    pub const INTERRUPT_COALESCING: u8 = 0x08;
    /// Interrupt Vector Configuration (PCIe).
    pub const INTERRUPT_VECTOR_CONFIG: u8 = 0x09;
    /// Write Atomicity Normal.
    pub const WRITE_ATOMICITY: u8 = 0x0a;
    /// Asynchronous Event Configuration: see [`super::aec`].
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0b;
    /// Autonomous Power State Transition.
    pub const AUTONOMOUS_POWER_STATE_TRANSITION: u8 = 0x0c;
    /// Host Memory Buffer (PCIe).
    pub const HOST_MEMORY_BUFFER: u8 = 0x0d;
    /// Timestamp.
    pub const TIMESTAMP: u8 = 0x0e;
    /// Keep Alive Timer: CDW11 is KATO in milliseconds.
    pub const KEEP_ALIVE_TIMER: u8 = 0x0f;
    /// Host Controlled Thermal Management.
    pub const HOST_THERMAL_MANAGEMENT: u8 = 0x10;
    /// Non-Operational Power State Config.
    pub const NON_OP_POWER_STATE_CONFIG: u8 = 0x11;
    /// Read Recovery Level Config.
    pub const READ_RECOVERY_LEVEL: u8 = 0x12;
    /// Predictable Latency Mode Config.
    pub const PREDICTABLE_LATENCY_CONFIG: u8 = 0x13;
    /// Predictable Latency Mode Window.
    pub const PREDICTABLE_LATENCY_WINDOW: u8 = 0x14;
    /// Host Behavior Support.
    pub const HOST_BEHAVIOR_SUPPORT: u8 = 0x16;
    /// Sanitize Config.
    pub const SANITIZE_CONFIG: u8 = 0x17;
    /// Endurance Group Event Configuration.
    pub const ENDURANCE_GROUP_EVENT_CONFIG: u8 = 0x18;
    /// I/O Command Set Profile.
    pub const IO_COMMAND_SET_PROFILE: u8 = 0x19;
    /// Spinup Control.
    pub const SPINUP_CONTROL: u8 = 0x1a;
    /// Enhanced Controller Metadata.
    pub const ENHANCED_CONTROLLER_METADATA: u8 = 0x7d;
    /// Controller Metadata.
    pub const CONTROLLER_METADATA: u8 = 0x7e;
    /// Namespace Metadata.
    pub const NAMESPACE_METADATA: u8 = 0x7f;
    /// Software Progress Marker.
    pub const SOFTWARE_PROGRESS_MARKER: u8 = 0x80;
    /// Host Identifier: 8 bytes, or 16 with CDW11 bit 0 (EXHID) set.
    pub const HOST_IDENTIFIER: u8 = 0x81;
    /// Reservation Notification Mask.
    pub const RESERVATION_NOTIFICATION_MASK: u8 = 0x82;
    /// Reservation Persistence.
    pub const RESERVATION_PERSISTENCE: u8 = 0x83;
    /// Namespace Write Protection Config.
    pub const NS_WRITE_PROTECTION: u8 = 0x84;
}

/// Get Features Select values (base 5.15, CDW10 bits 10:8).
pub mod sel {
    /// Current value.
    pub const CURRENT: u8 = 0b000;
    /// Default value.
    pub const DEFAULT: u8 = 0b001;
    /// Saved value.
    pub const SAVED: u8 = 0b010;
    /// Supported capabilities: see [`super::feature_caps`].
    pub const SUPPORTED: u8 = 0b011;
}

/// Completion DW0 bits of Get Features with [`sel::SUPPORTED`] (base 5.15, completion DW0).
pub mod feature_caps {
    /// The feature is saveable.
    pub const SAVEABLE: u32 = 1 << 0;
    /// The feature is namespace specific.
    pub const NS_SPECIFIC: u32 = 1 << 1;
    /// The feature is changeable.
    pub const CHANGEABLE: u32 = 1 << 2;
}

/// Set Features Save bit (base 5.27, CDW10 bit 31).
pub const SET_FEATURES_SV: u32 = 1 << 31;
/// Volatile Write Cache feature: Volatile Write Cache Enable (base 5.27.1, CDW11 bit 0).
pub const VWC_WCE: u32 = 1 << 0;

/// The Feature Identifier of a Get or Set Features command (base 5.15 and 5.27,
/// CDW10 bits 7:0).
pub fn features_fid(sqe: &Sqe) -> u8 {
    sqe.cdw10.get() as u8
}

/// The Select field of a Get Features command (base 5.15, CDW10 bits 10:8).
pub fn get_features_sel(sqe: &Sqe) -> u8 {
    ((sqe.cdw10.get() >> 8) & 0x7) as u8
}

/// Whether a Set Features command asks to save the value (base 5.27, CDW10 bit 31).
pub fn set_features_sv(sqe: &Sqe) -> bool {
    sqe.cdw10.get() & SET_FEATURES_SV != 0
}

/// Asynchronous Event Types (base 5.2.1, completion DW0 bits 2:0).
pub mod aer_type {
    /// Error status.
    pub const ERROR: u8 = 0;
    /// SMART / Health status.
    pub const SMART: u8 = 1;
    /// Notice.
    pub const NOTICE: u8 = 2;
    /// Immediate.
    pub const IMMEDIATE: u8 = 3;
    /// One-Shot.
    pub const ONE_SHOT: u8 = 4;
    /// I/O Command Set specific status.
    pub const IO_COMMAND_SPECIFIC: u8 = 6;
    /// Vendor specific.
    pub const VENDOR: u8 = 7;
}

/// Asynchronous Event Information for [`aer_type::ERROR`] (base 5.2.1).
pub mod aer_error {
    /// Write to Invalid Doorbell Register.
    pub const INVALID_DOORBELL: u8 = 0x00;
    /// Invalid Doorbell Write Value.
    pub const INVALID_DOORBELL_VALUE: u8 = 0x01;
    /// Diagnostic Failure.
    pub const DIAGNOSTIC_FAILURE: u8 = 0x02;
    /// Persistent Internal Error.
    pub const PERSISTENT_INTERNAL: u8 = 0x03;
    /// Transient Internal Error.
    pub const TRANSIENT_INTERNAL: u8 = 0x04;
    /// Firmware Image Load Error.
    pub const FIRMWARE_IMAGE_LOAD: u8 = 0x05;
}

/// Asynchronous Event Information for [`aer_type::SMART`] (base 5.2.1).
pub mod aer_smart {
    /// NVM subsystem Reliability.
    pub const RELIABILITY: u8 = 0x00;
    /// Temperature Threshold.
    pub const TEMPERATURE: u8 = 0x01;
    /// Spare Below Threshold.
    pub const SPARE_BELOW_THRESHOLD: u8 = 0x02;
}

/// Asynchronous Event Information for [`aer_type::NOTICE`] (base 5.2.1).
pub mod aer_notice {
    /// Namespace Attribute Changed: read the Changed Namespace List log page.
    pub const NS_ATTRIBUTE_CHANGED: u8 = 0x00;
    /// Firmware Activation Starting.
    pub const FIRMWARE_ACTIVATION: u8 = 0x01;
    /// Telemetry Log Changed.
    pub const TELEMETRY_LOG_CHANGED: u8 = 0x02;
    /// Asymmetric Namespace Access Change.
    pub const ANA_CHANGE: u8 = 0x03;
    /// Predictable Latency Event Aggregate Log Change.
    pub const PREDICTABLE_LATENCY_CHANGE: u8 = 0x04;
    /// LBA Status Information Alert.
    pub const LBA_STATUS_ALERT: u8 = 0x05;
    /// Endurance Group Event Aggregate Log Page Change.
    pub const ENDURANCE_GROUP_CHANGE: u8 = 0x06;
    /// Normal NVM Subsystem Shutdown.
    pub const NORMAL_SUBSYSTEM_SHUTDOWN: u8 = 0x07;
    /// Zone Descriptor Changed (Zoned Namespace command set).
    pub const ZONE_DESCRIPTOR_CHANGED: u8 = 0xef;
    /// Discovery Log Page Change (Discovery controllers).
    pub const DISCOVERY_LOG_CHANGE: u8 = 0xf0;
}

/// Asynchronous Event Information for [`aer_type::IO_COMMAND_SPECIFIC`] (base 5.2.1).
pub mod aer_io {
    /// Reservation Log Page Available.
    pub const RESERVATION_LOG_AVAILABLE: u8 = 0x00;
    /// Sanitize Operation Completed.
    pub const SANITIZE_COMPLETED: u8 = 0x01;
    /// Sanitize Operation Completed With Unexpected Deallocation.
    pub const SANITIZE_UNEXPECTED_DEALLOCATION: u8 = 0x02;
}

/// Completion DW0 of an Asynchronous Event Request (base 5.2.1): type in bits 2:0,
/// information in bits 15:8, the Log Page Identifier to read in bits 23:16.
pub fn aer_dw0(ty: u8, info: u8, log_page: u8) -> u32 {
    (ty as u32 & 0x7) | ((info as u32) << 8) | ((log_page as u32) << 16)
}

/// The (type, information, log page) of an Asynchronous Event Request's DW0 (base 5.2.1).
pub fn aer_dw0_fields(dw0: u32) -> (u8, u8, u8) {
    ((dw0 & 0x7) as u8, (dw0 >> 8) as u8, (dw0 >> 16) as u8)
}

/// Asynchronous Event Configuration bits (base 5.27.1, Asynchronous Event Configuration,
/// CDW11), which say which events the host wants reported.
pub mod aec {
    /// SMART / Health Critical Warnings: one bit per Critical Warning bit (bits 7:0).
    pub const SMART_CRITICAL_WARNINGS: u32 = 0xff;
    /// Namespace Attribute Notices (bit 8).
    pub const NS_ATTRIBUTE_NOTICES: u32 = 1 << 8;
    /// Firmware Activation Notices (bit 9).
    pub const FIRMWARE_ACTIVATION_NOTICES: u32 = 1 << 9;
    /// Telemetry Log Notices (bit 10).
    pub const TELEMETRY_LOG_NOTICES: u32 = 1 << 10;
    /// Asymmetric Namespace Access Change Notices (bit 11).
    pub const ANA_CHANGE_NOTICES: u32 = 1 << 11;
    /// Predictable Latency Event Aggregate Log Change Notices (bit 12).
    pub const PREDICTABLE_LATENCY_NOTICES: u32 = 1 << 12;
    /// LBA Status Information Notices (bit 13).
    pub const LBA_STATUS_NOTICES: u32 = 1 << 13;
    /// Endurance Group Event Aggregate Log Change Notices (bit 14).
    pub const ENDURANCE_GROUP_NOTICES: u32 = 1 << 14;
    /// Normal NVM Subsystem Shutdown Notices (bit 15).
    pub const NORMAL_SHUTDOWN_NOTICES: u32 = 1 << 15;
    /// Zone Descriptor Changed Notices (bit 27).
    pub const ZONE_DESCRIPTOR_NOTICES: u32 = 1 << 27;
    /// Discovery Log Page Change Notification (bit 31; Discovery controllers).
    pub const DISCOVERY_LOG_CHANGE_NOTICES: u32 = 1 << 31;
}

/// Get Log Page command dwords (base 5.16, CDW10-CDW14).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetLogPageDw {
    /// Log Page Identifier (CDW10 bits 7:0).
    pub lid: u8,
    /// Log Specific Parameter (CDW10 bits 14:8).
    pub lsp: u8,
    /// Retain Asynchronous Event (CDW10 bit 15).
    pub rae: bool,
    /// Number of Dwords, 0's based: NUMDL in CDW10 bits 31:16, NUMDU in CDW11 bits 15:0.
    pub numd: u32,
    /// Log Specific Identifier (CDW11 bits 31:16).
    pub lsi: u16,
    /// Log Page Offset in bytes, dword aligned: LPOL in CDW12, LPOU in CDW13.
    pub offset: u64,
    /// Command Set Identifier (CDW14 bits 31:24).
    pub csi: u8,
}

impl GetLogPageDw {
    /// The dwords to read `len` bytes (a non-zero multiple of 4) of log `lid` from `offset`.
    pub fn new(lid: u8, len: u32, offset: u64) -> Self {
        debug_assert!(len >= 4 && len % 4 == 0, "log page length {len}");
        GetLogPageDw {
            lid,
            numd: len / 4 - 1,
            offset,
            ..Default::default()
        }
    }

    /// Reads the fields from a Get Log Page SQE.
    pub fn from_sqe(sqe: &Sqe) -> Self {
        let (c10, c11) = (sqe.cdw10.get(), sqe.cdw11.get());
        GetLogPageDw {
            lid: c10 as u8,
            lsp: ((c10 >> 8) & 0x7f) as u8,
            rae: c10 & (1 << 15) != 0,
            numd: (c10 >> 16) | ((c11 & 0xffff) << 16),
            lsi: (c11 >> 16) as u16,
            offset: sqe.cdw12.get() as u64 | ((sqe.cdw13.get() as u64) << 32),
            csi: (sqe.cdw14.get() >> 24) as u8,
        }
    }

    /// Sets CDW10-CDW13 and CSI in CDW14 (its UUID Index and Offset Type bits are kept).
    pub fn write_to(&self, sqe: &mut Sqe) {
        sqe.cdw10 = U32::new(
            self.lid as u32
                | ((self.lsp as u32 & 0x7f) << 8)
                | ((self.rae as u32) << 15)
                | ((self.numd & 0xffff) << 16),
        );
        sqe.cdw11 = U32::new((self.numd >> 16) | ((self.lsi as u32) << 16));
        sqe.cdw12 = U32::new(self.offset as u32);
        sqe.cdw13 = U32::new((self.offset >> 32) as u32);
        sqe.cdw14 = U32::new((sqe.cdw14.get() & 0x00ff_ffff) | ((self.csi as u32) << 24));
    }

    /// A Get Log Page SQE with these dwords (NSID, CID and data pointer left zero).
    pub fn to_sqe(&self) -> Sqe {
        let mut sqe = Sqe {
            opc: admin_opc::GET_LOG_PAGE,
            ..Default::default()
        };
        self.write_to(&mut sqe);
        sqe
    }

    /// Bytes to transfer: (NUMD + 1) dwords.
    pub fn bytes(&self) -> u64 {
        (self.numd as u64 + 1) * 4
    }
}

/// Identify command dwords (base 5.17, CDW10 and CDW11).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentifyDw {
    /// Controller or Namespace Structure, see [`cns`] (CDW10 bits 7:0).
    pub cns: u8,
    /// Controller Identifier (CDW10 bits 31:16).
    pub cntid: u16,
    /// CNS Specific Identifier (CDW11 bits 15:0).
    pub cnssid: u16,
    /// Command Set Identifier, see [`csi`] (CDW11 bits 31:24).
    pub csi: u8,
}

impl IdentifyDw {
    /// Reads the fields from an Identify SQE.
    pub fn from_sqe(sqe: &Sqe) -> Self {
        let (c10, c11) = (sqe.cdw10.get(), sqe.cdw11.get());
        IdentifyDw {
            cns: c10 as u8,
            cntid: (c10 >> 16) as u16,
            cnssid: c11 as u16,
            csi: (c11 >> 24) as u8,
        }
    }

    /// Sets CDW10 and CDW11.
    pub fn write_to(&self, sqe: &mut Sqe) {
        sqe.cdw10 = U32::new(self.cns as u32 | ((self.cntid as u32) << 16));
        sqe.cdw11 = U32::new(self.cnssid as u32 | ((self.csi as u32) << 24));
    }

    /// An Identify SQE for `nsid` with these dwords (CID and data pointer left zero).
    pub fn to_sqe(&self, nsid: u32) -> Sqe {
        let mut sqe = Sqe {
            opc: admin_opc::IDENTIFY,
            nsid: U32::new(nsid),
            ..Default::default()
        };
        self.write_to(&mut sqe);
        sqe
    }
}

/// Number of Queues feature value (base 5.27.1, Number of Queues): CDW11 of Set
/// Features and completion DW0 of both Set and Get Features. Both counts are 0's based
/// (0 means one queue) and do not count the admin queue; 0xFFFF may not be requested.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NumQueues {
    /// Number of I/O Submission Queues Requested or Allocated, 0's based (bits 15:0).
    pub nsqr: u16,
    /// Number of I/O Completion Queues Requested or Allocated, 0's based (bits 31:16).
    pub ncqr: u16,
}

impl NumQueues {
    /// From the dword.
    pub fn from_dw(dw: u32) -> Self {
        NumQueues {
            nsqr: dw as u16,
            ncqr: (dw >> 16) as u16,
        }
    }

    /// To the dword.
    pub fn to_dw(self) -> u32 {
        self.nsqr as u32 | ((self.ncqr as u32) << 16)
    }

    /// From counts of queues (1-based, at least 1, at most 65535).
    pub fn from_counts(sqs: u32, cqs: u32) -> Self {
        debug_assert!((1..=0xffff).contains(&sqs) && (1..=0xffff).contains(&cqs));
        NumQueues {
            nsqr: (sqs.clamp(1, 0xffff) - 1) as u16,
            ncqr: (cqs.clamp(1, 0xffff) - 1) as u16,
        }
    }

    /// Number of I/O submission queues (1-based).
    pub fn sq_count(self) -> u32 {
        self.nsqr as u32 + 1
    }

    /// Number of I/O completion queues (1-based).
    pub fn cq_count(self) -> u32 {
        self.ncqr as u32 + 1
    }
}

/// Abort command dwords (base 5.1, CDW10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AbortDw {
    /// Submission Queue Identifier of the command to abort (bits 15:0).
    pub sqid: u16,
    /// Command Identifier of the command to abort (bits 31:16).
    pub cid: u16,
}

/// Abort completion DW0 bit 0 (base 5.1.1): set when the command was not aborted.
pub const ABORT_DW0_NOT_ABORTED: u32 = 1 << 0;

impl AbortDw {
    /// Reads the fields from an Abort SQE.
    pub fn from_sqe(sqe: &Sqe) -> Self {
        let c10 = sqe.cdw10.get();
        AbortDw {
            sqid: c10 as u16,
            cid: (c10 >> 16) as u16,
        }
    }

    /// Sets CDW10.
    pub fn write_to(&self, sqe: &mut Sqe) {
        sqe.cdw10 = U32::new(self.sqid as u32 | ((self.cid as u32) << 16));
    }

    /// An Abort SQE with these dwords (CID left zero).
    pub fn to_sqe(&self) -> Sqe {
        let mut sqe = Sqe {
            opc: admin_opc::ABORT,
            ..Default::default()
        };
        self.write_to(&mut sqe);
        sqe
    }
}

/// Read, Write, Compare, Write Zeroes and Verify CDW12 bits (nvm 3.2).
pub mod rw_cdw12 {
    /// Number of Logical Blocks, 0's based (bits 15:0).
    pub const NLB_MASK: u32 = 0xffff;
    /// Deallocate (Write Zeroes only, bit 25).
    pub const DEAC: u32 = 1 << 25;
    /// Force Unit Access (bit 30).
    pub const FUA: u32 = 1 << 30;
    /// Limited Retry (bit 31).
    pub const LR: u32 = 1 << 31;
}

/// Read / Write / Compare / Write Zeroes / Verify command dwords (nvm 3.2.4, 3.2.6:
/// CDW10-CDW12). Protection information fields (CDW12 bits 29:26, CDW14, CDW15) and the
/// directive fields are left to the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RwDw {
    /// Starting LBA: CDW10 (low) and CDW11 (high).
    pub slba: u64,
    /// Number of Logical Blocks, 0's based (CDW12 bits 15:0).
    pub nlb: u16,
    /// Force Unit Access (CDW12 bit 30).
    pub fua: bool,
    /// Limited Retry (CDW12 bit 31).
    pub lr: bool,
    /// Deallocate (Write Zeroes only, CDW12 bit 25).
    pub deac: bool,
}

impl RwDw {
    /// Reads the fields from an I/O SQE.
    pub fn from_sqe(sqe: &Sqe) -> Self {
        let c12 = sqe.cdw12.get();
        RwDw {
            slba: sqe.cdw10.get() as u64 | ((sqe.cdw11.get() as u64) << 32),
            nlb: (c12 & rw_cdw12::NLB_MASK) as u16,
            fua: c12 & rw_cdw12::FUA != 0,
            lr: c12 & rw_cdw12::LR != 0,
            deac: c12 & rw_cdw12::DEAC != 0,
        }
    }

    /// Sets CDW10 and CDW11, and in CDW12 NLB, DEAC, FUA and LR (other bits are kept).
    pub fn write_to(&self, sqe: &mut Sqe) {
        sqe.cdw10 = U32::new(self.slba as u32);
        sqe.cdw11 = U32::new((self.slba >> 32) as u32);
        let keep =
            sqe.cdw12.get() & !(rw_cdw12::NLB_MASK | rw_cdw12::DEAC | rw_cdw12::FUA | rw_cdw12::LR);
        let mut c12 = keep | self.nlb as u32;
        if self.deac {
            c12 |= rw_cdw12::DEAC;
        }
        if self.fua {
            c12 |= rw_cdw12::FUA;
        }
        if self.lr {
            c12 |= rw_cdw12::LR;
        }
        sqe.cdw12 = U32::new(c12);
    }

    /// An I/O SQE of opcode `opc` (see [`nvm_opc`]) for `nsid` with these dwords.
    pub fn to_sqe(&self, opc: u8, nsid: u32) -> Sqe {
        let mut sqe = Sqe {
            opc,
            nsid: U32::new(nsid),
            ..Default::default()
        };
        self.write_to(&mut sqe);
        sqe
    }

    /// Number of logical blocks (1-based).
    pub fn blocks(&self) -> u32 {
        self.nlb as u32 + 1
    }
}

/// Dataset Management attributes (nvm 3.2.3, CDW11).
pub mod dsm_attr {
    /// Integral Dataset for Read (bit 0).
    pub const IDR: u32 = 1 << 0;
    /// Integral Dataset for Write (bit 1).
    pub const IDW: u32 = 1 << 1;
    /// Deallocate (bit 2).
    pub const AD: u32 = 1 << 2;
}

/// Dataset Management command dwords (nvm 3.2.3, CDW10 and CDW11).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DsmDw {
    /// Number of Ranges, 0's based (CDW10 bits 7:0): up to 256 [`DsmRange`]s follow.
    pub nr: u8,
    /// Attributes, see [`dsm_attr`] (CDW11).
    pub attrs: u32,
}

impl DsmDw {
    /// Reads the fields from a Dataset Management SQE.
    pub fn from_sqe(sqe: &Sqe) -> Self {
        DsmDw {
            nr: sqe.cdw10.get() as u8,
            attrs: sqe.cdw11.get(),
        }
    }

    /// Sets CDW10 and CDW11.
    pub fn write_to(&self, sqe: &mut Sqe) {
        sqe.cdw10 = U32::new(self.nr as u32);
        sqe.cdw11 = U32::new(self.attrs);
    }

    /// Number of ranges (1-based).
    pub fn ranges(&self) -> usize {
        self.nr as usize + 1
    }

    /// Whether the ranges are to be deallocated.
    pub fn deallocate(&self) -> bool {
        self.attrs & dsm_attr::AD != 0
    }
}

/// A Dataset Management range (nvm 3.2.3, Dataset Management - Range Definition).
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
pub struct DsmRange {
    /// Context Attributes: access frequency, latency, sequential hints (nvm 3.2.3, bytes 3:0).
    pub cattr: U32,
    /// Length in logical blocks, 1-based (nvm 3.2.3, bytes 7:4).
    pub nlb: U32,
    /// Starting LBA (nvm 3.2.3, bytes 15:8).
    pub slba: U64,
}
assert_size!(DsmRange, 16);
assert_offset!(DsmRange, nlb, 4);
assert_offset!(DsmRange, slba, 8);

/// The largest number of ranges in one Dataset Management command (nvm 3.2.3).
pub const DSM_RANGES_MAX: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_log_page_numd_splits_across_cdw10_and_cdw11() {
        // 0x12345 dwords, 0's based 0x12344: NUMDL 0x2344, NUMDU 0x0001.
        let g = GetLogPageDw {
            lid: log_id::SMART,
            lsp: 0x7f,
            rae: true,
            numd: 0x1_2344,
            lsi: 0xbeef,
            offset: 0x1_0000_0200,
            csi: csi::ZONED,
        };
        let sqe = g.to_sqe();
        assert_eq!(sqe.opc, admin_opc::GET_LOG_PAGE);
        assert_eq!(sqe.cdw10.get(), 0x2344_0000 | 0x8000 | 0x7f00 | 0x02);
        assert_eq!(sqe.cdw11.get(), 0xbeef_0001);
        assert_eq!(sqe.cdw12.get(), 0x200);
        assert_eq!(sqe.cdw13.get(), 1);
        assert_eq!(sqe.cdw14.get() >> 24, 2);
        assert_eq!(GetLogPageDw::from_sqe(&sqe), g);
        assert_eq!(g.bytes(), 0x1_2345 * 4);

        let small = GetLogPageDw::new(log_id::DISCOVERY, 1024, 0);
        assert_eq!(small.numd, 255);
        let s = small.to_sqe();
        assert_eq!(s.cdw10.get(), (255 << 16) | 0x70);
        assert_eq!(s.cdw11.get(), 0);
        assert_eq!(GetLogPageDw::from_sqe(&s).bytes(), 1024);
    }

    #[test]
    fn aer_dw0_layout() {
        let dw0 = aer_dw0(
            aer_type::NOTICE,
            aer_notice::NS_ATTRIBUTE_CHANGED,
            log_id::CHANGED_NS_LIST,
        );
        assert_eq!(dw0, 0x0004_0002);
        let dw0 = aer_dw0(
            aer_type::NOTICE,
            aer_notice::DISCOVERY_LOG_CHANGE,
            log_id::DISCOVERY,
        );
        assert_eq!(dw0, 0x0070_f002);
        assert_eq!(aer_dw0_fields(dw0), (2, 0xf0, 0x70));
    }

    #[test]
    fn number_of_queues_is_zeros_based() {
        let n = NumQueues::from_dw(0x0003_0007);
        assert_eq!(n.sq_count(), 8);
        assert_eq!(n.cq_count(), 4);
        assert_eq!(n.to_dw(), 0x0003_0007);
        assert_eq!(NumQueues::from_counts(8, 4), n);
        assert_eq!(NumQueues::from_counts(1, 1).to_dw(), 0);
    }

    #[test]
    fn rw_dwords() {
        let rw = RwDw {
            slba: 0x1_2345_6789,
            nlb: 7,
            fua: true,
            ..Default::default()
        };
        let mut sqe = rw.to_sqe(nvm_opc::WRITE, 1);
        assert_eq!(sqe.cdw10.get(), 0x2345_6789);
        assert_eq!(sqe.cdw11.get(), 1);
        assert_eq!(sqe.cdw12.get(), (1 << 30) | 7);
        assert_eq!(RwDw::from_sqe(&sqe), rw);
        assert_eq!(rw.blocks(), 8);
        // PRINFO bits survive a rewrite.
        sqe.cdw12 = U32::new(sqe.cdw12.get() | (0xf << 26));
        RwDw { nlb: 0, ..rw }.write_to(&mut sqe);
        assert_eq!(sqe.cdw12.get(), (1 << 30) | (0xf << 26));
    }

    #[test]
    fn abort_identify_features_dsm() {
        let a = AbortDw { sqid: 3, cid: 0x55 };
        let sqe = a.to_sqe();
        assert_eq!(sqe.cdw10.get(), 0x0055_0003);
        assert_eq!(AbortDw::from_sqe(&sqe), a);

        let id = IdentifyDw {
            cns: cns::CONTROLLER,
            cntid: 9,
            cnssid: 0,
            csi: csi::NVM,
        };
        let sqe = id.to_sqe(0);
        assert_eq!(sqe.cdw10.get(), 0x0009_0001);
        assert_eq!(IdentifyDw::from_sqe(&sqe), id);

        let mut sqe = Sqe {
            opc: admin_opc::GET_FEATURES,
            cdw10: U32::new(((sel::SUPPORTED as u32) << 8) | feature::KEEP_ALIVE_TIMER as u32),
            ..Default::default()
        };
        assert_eq!(features_fid(&sqe), feature::KEEP_ALIVE_TIMER);
        assert_eq!(get_features_sel(&sqe), sel::SUPPORTED);
        sqe.cdw10 = U32::new(SET_FEATURES_SV | feature::NUMBER_OF_QUEUES as u32);
        assert!(set_features_sv(&sqe));

        let mut sqe = Sqe::default();
        DsmDw {
            nr: 1,
            attrs: dsm_attr::AD,
        }
        .write_to(&mut sqe);
        let d = DsmDw::from_sqe(&sqe);
        assert_eq!(d.ranges(), 2);
        assert!(d.deallocate());
        assert_eq!(sqe.cdw11.get(), 4);
    }

    #[test]
    fn dsm_range_bytes() {
        let r = DsmRange {
            cattr: U32::new(0),
            nlb: U32::new(8),
            slba: U64::new(0x1000),
        };
        let b = r.as_bytes();
        assert_eq!(&b[4..8], &[8, 0, 0, 0]);
        assert_eq!(&b[8..10], &[0x00, 0x10]);
        assert_eq!(DsmRange::read_from_bytes(b).unwrap(), r);
    }
}
