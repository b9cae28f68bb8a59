//! NVMe over Fabrics commands (fabrics 3.3, 6): the Fabrics command layout, Connect with
//! its data, Property Get/Set and Disconnect.

use super::cmd::Sqe;
use super::{assert_offset, assert_size};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The opcode of every Fabrics command (fabrics 6.1).
pub const OPC_FABRICS: u8 = 0x7f;

/// Fabrics Command Types (fabrics 6.1, Figure 35).
pub mod fctype {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
    /// Authentication Send.
    pub const AUTH_SEND: u8 = 0x05;
    /// Authentication Receive.
    pub const AUTH_RECV: u8 = 0x06;
    /// Disconnect.
    pub const DISCONNECT: u8 = 0x08;
}

/// A Fabrics command: the SQE as Fabrics lays it out (fabrics 6.1, Figure 34).
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
pub struct FabricsCmd {
    /// Opcode: always 0x7F.
    pub opc: u8,
    /// Reserved (PSDT in bits 7:6).
    pub flags: u8,
    /// Command Identifier.
    pub cid: U16,
    /// Fabrics Command Type.
    pub fctype: u8,
    /// Reserved.
    pub rsvd: [u8; 19],
    /// SGL Descriptor 1.
    pub sgl1: [u8; 16],
    /// Fabrics command type specific (bytes 40-63).
    pub specific: [u8; 24],
}
assert_size!(FabricsCmd, 64);
assert_offset!(FabricsCmd, fctype, 4);
assert_offset!(FabricsCmd, sgl1, 24);
assert_offset!(FabricsCmd, specific, 40);

impl FabricsCmd {
    /// The same 64 bytes viewed as a Fabrics command.
    pub fn from_sqe(sqe: &Sqe) -> FabricsCmd {
        FabricsCmd::read_from_bytes(sqe.as_bytes()).expect("64 bytes")
    }

    /// Back to a plain SQE.
    pub fn to_sqe(&self) -> Sqe {
        Sqe::read_from_bytes(self.as_bytes()).expect("64 bytes")
    }
}

/// Connect command specific fields (fabrics 3.3, Figure 20; bytes 40-63).
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
pub struct ConnectFields {
    /// Record Format (0).
    pub recfmt: U16,
    /// Queue ID: 0 for the admin queue.
    pub qid: U16,
    /// Submission Queue Size, 0's based.
    pub sqsize: U16,
    /// Connect Attributes.
    pub cattr: u8,
    /// Reserved.
    pub rsvd: u8,
    /// Keep Alive Timeout in ms (admin queue only; 0 disables).
    pub kato: U32,
    /// Reserved.
    pub rsvd2: [u8; 12],
}
assert_size!(ConnectFields, 24);
assert_offset!(ConnectFields, kato, 8);

/// Connect command data (fabrics 3.3, Figure 21).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ConnectData {
    /// Host Identifier.
    pub hostid: [u8; 16],
    /// Controller ID: 0xFFFF asks for any controller (dynamic model).
    pub cntlid: U16,
    /// Reserved.
    pub rsvd: [u8; 238],
    /// NVM Subsystem NQN, NUL-terminated.
    pub subnqn: [u8; 256],
    /// Host NQN, NUL-terminated.
    pub hostnqn: [u8; 256],
    /// Reserved.
    pub rsvd2: [u8; 256],
}
assert_size!(ConnectData, 1024);
assert_offset!(ConnectData, cntlid, 16);
assert_offset!(ConnectData, subnqn, 256);
assert_offset!(ConnectData, hostnqn, 512);

/// An NQN field's text up to its NUL, if it is UTF-8.
pub fn nqn_str(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    std::str::from_utf8(&field[..end]).ok()
}

/// Property Get/Set specific fields (fabrics 3.4 and 3.5; bytes 40-63).
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
pub struct PropertyFields {
    /// Attributes: bits 2:0 give the size, 0 for 4 bytes, 1 for 8 bytes.
    pub attrib: u8,
    /// Reserved.
    pub rsvd: [u8; 3],
    /// Offset of the property (the register offset).
    pub ofst: U32,
    /// Value to set (Property Set only).
    pub value: U64,
    /// Reserved.
    pub rsvd2: [u8; 8],
}
assert_size!(PropertyFields, 24);
assert_offset!(PropertyFields, ofst, 4);
assert_offset!(PropertyFields, value, 8);

impl PropertyFields {
    /// Bytes of the property: 4 or 8 (`None` for a reserved size).
    pub fn size(&self) -> Option<usize> {
        match self.attrib & 0x7 {
            0 => Some(4),
            1 => Some(8),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_round_trips_through_an_sqe() {
        let mut f = FabricsCmd {
            opc: OPC_FABRICS,
            cid: U16::new(7),
            fctype: fctype::CONNECT,
            ..Default::default()
        };
        let c = ConnectFields {
            qid: U16::new(1),
            sqsize: U16::new(127),
            kato: U32::new(15_000),
            ..Default::default()
        };
        f.specific.copy_from_slice(c.as_bytes());
        let sqe = f.to_sqe();
        assert_eq!(sqe.opc, OPC_FABRICS);
        assert_eq!(sqe.fctype(), fctype::CONNECT);
        let back = FabricsCmd::from_sqe(&sqe);
        let c2 = ConnectFields::read_from_bytes(&back.specific).unwrap();
        assert_eq!(c2.sqsize.get(), 127);
        assert_eq!(c2.kato.get(), 15_000);
        // qid sits at SQE byte 42, sqsize at 44 (fabrics Figure 20).
        assert_eq!(&sqe.as_bytes()[42..46], &[1, 0, 127, 0]);
    }

    #[test]
    fn nqns_read_to_their_nul() {
        let mut d = ConnectData::new_zeroed_data();
        d.hostnqn[..9].copy_from_slice(b"nqn.host1");
        assert_eq!(nqn_str(&d.hostnqn), Some("nqn.host1"));
        assert_eq!(nqn_str(&d.subnqn), Some(""));
        d.subnqn[0] = 0xff;
        assert_eq!(nqn_str(&d.subnqn), None);
    }

    #[test]
    fn property_sizes() {
        let p = PropertyFields {
            attrib: 1,
            ofst: U32::new(0),
            ..Default::default()
        };
        assert_eq!(p.size(), Some(8));
        assert_eq!(PropertyFields { attrib: 3, ..p }.size(), None);
    }

    impl ConnectData {
        fn new_zeroed_data() -> ConnectData {
            <ConnectData as zerocopy::FromZeros>::new_zeroed()
        }
    }
}

/// The well-known discovery subsystem NQN (base 4.5.1).
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// The longest NQN, in bytes (base 4.5).
pub const NQN_LEN_MAX: usize = 223;

/// Checks an NVMe Qualified Name (base 4.5): `nqn.yyyy-mm.<reverse domain>:<string>`,
/// the UUID form `nqn.2014-08.org.nvmexpress:uuid:<uuid>`, or the discovery NQN; UTF-8,
/// at most 223 bytes. The error says what is wrong.
pub fn validate_nqn(nqn: &str) -> Result<(), String> {
    if nqn.len() > NQN_LEN_MAX {
        return Err(format!(
            "NQN is {} bytes long; the limit is {NQN_LEN_MAX}",
            nqn.len()
        ));
    }
    if nqn == DISCOVERY_NQN {
        return Ok(());
    }
    if let Some(u) = nqn.strip_prefix("nqn.2014-08.org.nvmexpress:uuid:") {
        let ok = u.len() == 36
            && u.char_indices().all(|(i, c)| {
                if matches!(i, 8 | 13 | 18 | 23) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            });
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "{u:?} is not a UUID of the form 8-4-4-4-12 hex digits"
            ))
        };
    }
    let rest = nqn
        .strip_prefix("nqn.")
        .ok_or_else(|| "an NQN starts with \"nqn.\"".to_owned())?;
    let date = rest
        .get(..7)
        .ok_or_else(|| "an NQN needs a date, nqn.yyyy-mm.".to_owned())?;
    let d = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| d[r].iter().all(u8::is_ascii_digit);
    let month = (d[5].wrapping_sub(b'0') as u32) * 10 + d[6].wrapping_sub(b'0') as u32;
    let date_ok = digits(0..4) && d[4] == b'-' && digits(5..7) && (1..=12).contains(&month);
    if !date_ok {
        return Err(format!("{date:?} is not a date of the form yyyy-mm"));
    }
    let rest = rest[7..]
        .strip_prefix('.')
        .ok_or_else(|| "the date is followed by '.' and a reverse domain name".to_owned())?;
    let (domain, user) = rest
        .split_once(':')
        .ok_or_else(|| "the reverse domain name is followed by ':' and a name".to_owned())?;
    if domain.is_empty() {
        return Err("the reverse domain name is empty".into());
    }
    for label in domain.split('.') {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b[0].is_ascii_alphabetic()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && *b.last().unwrap() != b'-';
        if !ok {
            return Err(format!(
                "domain label {label:?} must start with a letter, hold letters, digits and '-', and not end with '-'"
            ));
        }
    }
    if user.is_empty() {
        return Err("nothing follows the ':'".into());
    }
    Ok(())
}

#[cfg(test)]
mod nqn_tests {
    use super::*;

    #[test]
    fn good_nqns() {
        for n in [
            "nqn.2016-06.io.spdk:cnode1",
            "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            DISCOVERY_NQN,
            "nqn.2024-01.io.pollux:host-é",
        ] {
            validate_nqn(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
    }

    #[test]
    fn bad_nqns_say_why() {
        for (n, why) in [
            ("iqn.2016-06.io.spdk:x", "starts with"),
            ("nqn.16-06.io.spdk:x", "date"),
            ("nqn.2016-13.io.spdk:x", "date"),
            ("nqn.2016-06io.spdk:x", "followed by '.'"),
            ("nqn.2016-06.io.spdk", "followed by ':'"),
            ("nqn.2016-06.:x", "empty"),
            ("nqn.2016-06.1io.spdk:x", "start with a letter"),
            ("nqn.2016-06.io-.spdk:x", "not end with"),
            ("nqn.2016-06.io.spdk:", "nothing follows"),
            ("nqn.2014-08.org.nvmexpress:uuid:1234", "UUID"),
        ] {
            let e = validate_nqn(n).unwrap_err();
            assert!(e.contains(why), "{n}: {e}");
        }
        let long = format!("nqn.2016-06.io.spdk:{}", "x".repeat(300));
        assert!(validate_nqn(&long).unwrap_err().contains("223"));
    }
}
