//! Core masks in SPDK's notation: `0x3` (hex mask), `3` (hex, as SPDK reads it), or a
//! list `[0-1]`, `0-1`, `0,2-3`.

use crate::Error;

/// Parses a core mask or list into sorted, distinct core numbers.
pub fn parse_core_mask(spec: &str) -> Result<Vec<usize>, Error> {
    let bad = |why: &str| Error::CoreMask {
        mask: spec.to_owned(),
        why: why.to_owned(),
    };
    let s = spec.trim();
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut cores = Vec::new();
    let list = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
    if list.is_some() || s.contains(['-', ',']) {
        for part in list.unwrap_or(s).split(',') {
            let part = part.trim();
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let a: usize = a
                .parse()
                .map_err(|_| bad("a list entry is not a core number"))?;
            let b: usize = b
                .parse()
                .map_err(|_| bad("a list entry is not a core number"))?;
            if a > b {
                return Err(bad("a range runs backwards"));
            }
            if b >= 1024 {
                return Err(bad("core numbers stop at 1023"));
            }
            cores.extend(a..=b);
        }
    } else {
        let hex = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if hex.is_empty() || hex.len() > 256 {
            return Err(bad("a hex mask needs 1 to 256 digits"));
        }
        for (pos, ch) in hex.chars().rev().enumerate() {
            let nib = ch
                .to_digit(16)
                .ok_or_else(|| bad("a hex mask may hold only hex digits"))?;
            for bit in 0..4 {
                if nib & (1 << bit) != 0 {
                    cores.push(pos * 4 + bit);
                }
            }
        }
    }
    cores.sort_unstable();
    cores.dedup();
    if cores.is_empty() {
        return Err(bad("it selects no core"));
    }
    Ok(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_lists() {
        assert_eq!(parse_core_mask("0x3").unwrap(), vec![0, 1]);
        assert_eq!(parse_core_mask("3").unwrap(), vec![0, 1]);
        assert_eq!(parse_core_mask("0x10").unwrap(), vec![4]);
        assert_eq!(parse_core_mask("[0-1]").unwrap(), vec![0, 1]);
        assert_eq!(parse_core_mask("0-1").unwrap(), vec![0, 1]);
        assert_eq!(parse_core_mask("0,2-3,2").unwrap(), vec![0, 2, 3]);
        assert_eq!(parse_core_mask("[5]").unwrap(), vec![5]);
    }

    #[test]
    fn bad_masks_say_why() {
        for bad in ["", "0x", "0x0", "zz", "3-1", "[a]", "0-5000"] {
            let e = parse_core_mask(bad).unwrap_err().to_string();
            assert!(e.contains("core mask"), "{bad}: {e}");
        }
    }
}
