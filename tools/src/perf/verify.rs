//! Verification blocks: each written I/O carries a header (magic, offset, length, seed,
//! checksum) and a payload derived from its offset and the run's seed, so a read can tell
//! a block that is right from one that is stale, misplaced or corrupt, and say which.
//!
//! Layout (little-endian): magic `PLXV` (4), kind (1), reserved (3), offset (8), length
//! (4), seed (4), checksum (16: CRC32C in the first 4 bytes, or MD5), payload.

use super::model::VerifyKind;
use md5::{Digest, Md5};

/// Bytes of the header.
pub const HEADER_LEN: usize = 40;
const MAGIC: [u8; 4] = *b"PLXV";

fn payload_fill(buf: &mut [u8], offset: u64, seed: u32, pattern: &[u8], kind: VerifyKind) {
    if kind == VerifyKind::Pattern && !pattern.is_empty() {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = pattern[i % pattern.len()];
        }
        return;
    }
    let mut x = (offset ^ ((seed as u64) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn checksum(kind: VerifyKind, payload: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    match kind {
        VerifyKind::Md5 => out.copy_from_slice(&Md5::digest(payload)),
        VerifyKind::Crc32c => out[..4].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes()),
        VerifyKind::Pattern | VerifyKind::None => {}
    }
    out
}

/// Fills `buf` (one I/O of `buf.len()` bytes at byte `offset`) with a verify block.
pub fn fill(buf: &mut [u8], offset: u64, seed: u32, kind: VerifyKind, pattern: &[u8]) {
    if buf.len() < HEADER_LEN {
        payload_fill(buf, offset, seed, pattern, kind);
        return;
    }
    let (h, payload) = buf.split_at_mut(HEADER_LEN);
    payload_fill(payload, offset, seed, pattern, kind);
    h[..4].copy_from_slice(&MAGIC);
    h[4] = kind as u8;
    h[5..8].fill(0);
    h[8..16].copy_from_slice(&offset.to_le_bytes());
    h[16..20].copy_from_slice(&(buf_len_u32(payload.len() + HEADER_LEN)).to_le_bytes());
    h[20..24].copy_from_slice(&seed.to_le_bytes());
    h[24..40].copy_from_slice(&checksum(kind, payload));
}

fn buf_len_u32(n: usize) -> u32 {
    n.min(u32::MAX as usize) as u32
}

/// What is wrong with a block read back, for the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError(pub String);

/// Checks a block read at byte `offset`; `expect_seed`, when known, is the seed of the
/// last write of that block (an older copy of the block fails).
pub fn check(
    buf: &[u8],
    offset: u64,
    kind: VerifyKind,
    pattern: &[u8],
    expect_seed: Option<u32>,
) -> Result<(), VerifyError> {
    let len = buf.len();
    if len < HEADER_LEN {
        let mut want = vec![0u8; len];
        payload_fill(&mut want, offset, 0, pattern, kind);
        return if want == buf {
            Ok(())
        } else {
            Err(VerifyError(format!(
                "verify: bad data at offset {offset}, length {len}"
            )))
        };
    }
    let (h, payload) = buf.split_at(HEADER_LEN);
    if h[..4] != MAGIC {
        return Err(VerifyError(format!(
            "verify: bad magic header at offset {offset}, length {len}: expected {:02x?}, found {:02x?} (never written, or overwritten)",
            MAGIC,
            &h[..4]
        )));
    }
    let at = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
    if at != offset {
        return Err(VerifyError(format!(
            "verify: block at offset {offset} carries offset {at} (misplaced write)"
        )));
    }
    let wlen = u32::from_le_bytes(h[16..20].try_into().expect("4 bytes")) as usize;
    if wlen != len {
        return Err(VerifyError(format!(
            "verify: block at offset {offset} was written {wlen} bytes long, read {len}"
        )));
    }
    let seed = u32::from_le_bytes(h[20..24].try_into().expect("4 bytes"));
    if let Some(want) = expect_seed {
        if want != seed {
            return Err(VerifyError(format!(
                "verify: stale block at offset {offset}, length {len}: written by write {seed:#010x}, expected the later write {want:#010x} (a lost write)"
            )));
        }
    }
    match kind {
        VerifyKind::Crc32c | VerifyKind::Md5 => {
            let want = &h[24..40];
            let got = checksum(kind, payload);
            if want != got {
                let n = if kind == VerifyKind::Md5 { 16 } else { 4 };
                return Err(VerifyError(format!(
                    "verify: bad {} at offset {offset}, length {len}: expected {}, found {}",
                    if kind == VerifyKind::Md5 {
                        "md5"
                    } else {
                        "crc32c"
                    },
                    hex(&want[..n]),
                    hex(&got[..n])
                )));
            }
        }
        VerifyKind::Pattern => {
            let mut want = vec![0u8; payload.len()];
            payload_fill(&mut want, offset, seed, pattern, kind);
            if let Some(i) = want.iter().zip(payload).position(|(a, b)| a != b) {
                return Err(VerifyError(format!(
                    "verify: pattern mismatch at offset {}, expected {:#04x}, found {:#04x}",
                    offset + (HEADER_LEN + i) as u64,
                    want[i],
                    payload[i]
                )));
            }
        }
        VerifyKind::None => {}
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    let mut s = String::from("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_verifies_and_each_corruption_is_named() {
        for kind in [VerifyKind::Crc32c, VerifyKind::Md5, VerifyKind::Pattern] {
            let mut b = vec![0u8; 4096];
            fill(&mut b, 8192, 42, kind, &[0xde, 0xad]);
            check(&b, 8192, kind, &[0xde, 0xad], Some(42)).unwrap();
            assert!(
                check(&b, 8192, kind, &[0xde, 0xad], Some(43))
                    .unwrap_err()
                    .0
                    .contains("stale")
            );
            let e = check(&b, 4096, kind, &[0xde, 0xad], None).unwrap_err();
            assert!(e.0.contains("misplaced"), "{e:?}");
            let mut c = b.clone();
            c[1000] ^= 1;
            let e = check(&c, 8192, kind, &[0xde, 0xad], None).unwrap_err();
            assert!(
                e.0.contains("offset 8192") || e.0.contains("offset 9192"),
                "{e:?}"
            );
            let e = check(&[0u8; 4096], 8192, kind, &[], None).unwrap_err();
            assert!(e.0.contains("magic"), "{e:?}");
        }
    }
}
