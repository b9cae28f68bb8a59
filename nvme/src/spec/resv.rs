//! Reservations (base 8.19): the command dwords of Reservation Register, Acquire and
//! Release, the reservation types, and the Reservation Report data structure (base
//! 7.5, Figures 'Reservation Status Data Structure' and its extended form).

use super::cmd::Sqe;
use zerocopy::little_endian::U32;

/// Reservation types (RTYPE, base 8.19.1).
pub mod rtype {
    /// Write Exclusive.
    pub const WRITE_EXCLUSIVE: u8 = 1;
    /// Exclusive Access.
    pub const EXCLUSIVE_ACCESS: u8 = 2;
    /// Write Exclusive - Registrants Only.
    pub const WE_REGISTRANTS_ONLY: u8 = 3;
    /// Exclusive Access - Registrants Only.
    pub const EA_REGISTRANTS_ONLY: u8 = 4;
    /// Write Exclusive - All Registrants.
    pub const WE_ALL_REGISTRANTS: u8 = 5;
    /// Exclusive Access - All Registrants.
    pub const EA_ALL_REGISTRANTS: u8 = 6;

    /// Whether every registrant holds a reservation of this type.
    pub fn all_registrants(t: u8) -> bool {
        t == WE_ALL_REGISTRANTS || t == EA_ALL_REGISTRANTS
    }

    /// Whether `t` is a defined type.
    pub fn valid(t: u8) -> bool {
        (WRITE_EXCLUSIVE..=EA_ALL_REGISTRANTS).contains(&t)
    }
}

/// Reservation Register actions (RREGA).
pub mod rrega {
    /// Register a reservation key.
    pub const REGISTER: u8 = 0;
    /// Unregister the host's key.
    pub const UNREGISTER: u8 = 1;
    /// Replace the host's key.
    pub const REPLACE: u8 = 2;
}

/// Reservation Acquire actions (RACQA).
pub mod racqa {
    /// Acquire a reservation.
    pub const ACQUIRE: u8 = 0;
    /// Preempt.
    pub const PREEMPT: u8 = 1;
    /// Preempt and abort.
    pub const PREEMPT_AND_ABORT: u8 = 2;
}

/// Reservation Release actions (RRELA).
pub mod rrela {
    /// Release the reservation.
    pub const RELEASE: u8 = 0;
    /// Clear: every registrant and the reservation go.
    pub const CLEAR: u8 = 1;
}

/// Change Persist Through Power Loss State of Reservation Register (CPTPL).
pub mod cptpl {
    /// No change.
    pub const NO_CHANGE: u8 = 0;
    /// Persist Through Power Loss off.
    pub const CLEAR: u8 = 2;
    /// Persist Through Power Loss on.
    pub const SET: u8 = 3;
}

/// Reservation Capabilities of Identify Namespace (RESCAP, byte 31): Persist Through
/// Power Loss (bit 0), the six types (bits 6:1), Ignore Existing Key (bit 7).
pub const RESCAP_ALL_TYPES_IEKEY: u8 = 0b1111_1110;
/// RESCAP bit 0: Persist Through Power Loss.
pub const RESCAP_PTPL: u8 = 1 << 0;

/// CDW10 of Reservation Register, Acquire and Release.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResvDw {
    /// RREGA, RACQA or RRELA (bits 2:0).
    pub action: u8,
    /// Ignore Existing Key (bit 3).
    pub iekey: bool,
    /// Reservation Type (bits 15:8; Acquire and Release).
    pub rtype: u8,
    /// CPTPL (bits 31:30; Register).
    pub cptpl: u8,
}

impl ResvDw {
    /// The fields of an SQE's CDW10.
    pub fn from_sqe(sqe: &Sqe) -> ResvDw {
        let v = sqe.cdw10.get();
        ResvDw {
            action: (v & 0x7) as u8,
            iekey: v & (1 << 3) != 0,
            rtype: (v >> 8) as u8,
            cptpl: (v >> 30) as u8,
        }
    }

    /// CDW10 with these fields.
    pub fn to_dw(self) -> U32 {
        U32::new(
            (self.action as u32 & 0x7)
                | ((self.iekey as u32) << 3)
                | ((self.rtype as u32) << 8)
                | ((self.cptpl as u32 & 0x3) << 30),
        )
    }
}

/// One registrant of a Reservation Report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Registrant {
    /// Controller ID (FFFFh in the dynamic controller model).
    pub cntlid: u16,
    /// Whether it holds the reservation (RCSTS bit 0).
    pub holds: bool,
    /// Host Identifier (128-bit; the 64-bit form carries the first 8 bytes).
    pub hostid: [u8; 16],
    /// Reservation key.
    pub rkey: u64,
}

/// The Reservation Status data structure: a 24-byte header and 24-byte registrant
/// entries, or with `extended` (EDS) a 64-byte header and 64-byte entries with 128-bit
/// host identifiers.
pub fn report_encode(
    generation: u32,
    rtype: u8,
    ptpls: bool,
    regs: &[Registrant],
    extended: bool,
) -> Vec<u8> {
    let (hlen, elen) = if extended { (64, 64) } else { (24, 24) };
    let mut v = vec![0u8; hlen + elen * regs.len()];
    v[0..4].copy_from_slice(&generation.to_le_bytes());
    v[4] = rtype;
    v[5..7].copy_from_slice(&(regs.len().min(u16::MAX as usize) as u16).to_le_bytes());
    v[9] = ptpls as u8;
    for (i, r) in regs.iter().enumerate() {
        let e = &mut v[hlen + i * elen..hlen + (i + 1) * elen];
        e[0..2].copy_from_slice(&r.cntlid.to_le_bytes());
        e[2] = r.holds as u8;
        if extended {
            e[8..16].copy_from_slice(&r.rkey.to_le_bytes());
            e[16..32].copy_from_slice(&r.hostid);
        } else {
            e[8..16].copy_from_slice(&r.hostid[..8]);
            e[16..24].copy_from_slice(&r.rkey.to_le_bytes());
        }
    }
    v
}

/// The generation, type, PTPL state and registrants of a Reservation Status data
/// structure (`extended`: read with EDS); `None` if it is cut short.
pub fn report_decode(d: &[u8], extended: bool) -> Option<(u32, u8, bool, Vec<Registrant>)> {
    let (hlen, elen) = if extended { (64, 64) } else { (24, 24) };
    let h = d.get(..hlen)?;
    let n = u16::from_le_bytes([h[5], h[6]]) as usize;
    let mut regs = Vec::with_capacity(n);
    for i in 0..n {
        let e = d.get(hlen + i * elen..hlen + (i + 1) * elen)?;
        let mut hostid = [0u8; 16];
        let rkey;
        if extended {
            rkey = u64::from_le_bytes(e[8..16].try_into().expect("8 bytes"));
            hostid.copy_from_slice(&e[16..32]);
        } else {
            hostid[..8].copy_from_slice(&e[8..16]);
            rkey = u64::from_le_bytes(e[16..24].try_into().expect("8 bytes"));
        }
        regs.push(Registrant {
            cntlid: u16::from_le_bytes([e[0], e[1]]),
            holds: e[2] & 1 != 0,
            hostid,
            rkey,
        });
    }
    Some((
        u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")),
        h[4],
        h[9] & 1 != 0,
        regs,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dwords_and_report_layout() {
        let d = ResvDw {
            action: 2,
            iekey: true,
            rtype: rtype::EA_ALL_REGISTRANTS,
            cptpl: cptpl::SET,
        };
        let sqe = Sqe {
            cdw10: d.to_dw(),
            ..Default::default()
        };
        assert_eq!(sqe.cdw10.get(), 0xc000_060a);
        assert_eq!(ResvDw::from_sqe(&sqe), d);
        let r = Registrant {
            cntlid: 0xffff,
            holds: true,
            hostid: [7; 16],
            rkey: 0x1122,
        };
        for ext in [false, true] {
            let b = report_encode(3, rtype::WRITE_EXCLUSIVE, true, &[r, r], ext);
            assert_eq!(b.len(), if ext { 192 } else { 72 });
            assert_eq!((b[0], b[4], b[5], b[9]), (3, 1, 2, 1));
            let (g, t, p, regs) = report_decode(&b, ext).unwrap();
            assert_eq!((g, t, p), (3, 1, true));
            let mut want = r;
            if !ext {
                want.hostid[8..].fill(0);
            }
            assert_eq!(regs, [want, want]);
            assert!(report_decode(&b[..b.len() - 1], ext).is_none());
        }
    }
}
