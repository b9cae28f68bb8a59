//! Latency histograms with fio's bucket layout and percentile semantics.
//!
//! fio (`stat.h`, `stat.c`) keeps latencies in nanoseconds in 1856 buckets: values
//! below 128 ns have a bucket each; above, every power-of-two range `[2^m, 2^(m+1))`
//! is split into 64 equal buckets, so a bucket is at most 1/64 (1.6 %) of its value
//! wide. Latencies from 2^33 + 63 * 2^27 ns (17.05 s) on share the last bucket.
//! A bucket reports the middle of its range ([`idx_to_val`]); percentiles report
//! the bucket value of the first bucket where the running count reaches the
//! percentile's share of the samples, compared in C's `long double` as fio does
//! ([`LatHist::percentiles`]).
//!
//! Besides the buckets, [`LatHist`] keeps the exact count, minimum, maximum, sum and
//! sum of squares, so the mean and the sample standard deviation (fio's
//! `sqrt(S / (n - 1))`) are exact rather than bucketed.

use super::model::LatSummary;

/// fio's `FIO_IO_U_PLAT_BITS`: each power-of-two group has 2^6 buckets.
pub const PLAT_BITS: u32 = 6;
/// fio's `FIO_IO_U_PLAT_VAL`: buckets per group.
pub const PLAT_VAL: usize = 1 << PLAT_BITS;
/// fio's `FIO_IO_U_PLAT_GROUP_NR`: groups.
pub const PLAT_GROUP_NR: usize = 29;
/// fio's `FIO_IO_U_PLAT_NR`: buckets in all (1856).
pub const PLAT_NR: usize = PLAT_GROUP_NR * PLAT_VAL;

/// The bucket a latency of `ns` nanoseconds goes to (fio's `plat_val_to_idx`).
#[inline]
pub fn val_to_idx(ns: u64) -> usize {
    // Values whose most significant bit is at most PLAT_BITS (below 128) are exact.
    if ns < (PLAT_VAL as u64) << 1 {
        return ns as usize;
    }
    let msb = 63 - ns.leading_zeros();
    let error_bits = msb - PLAT_BITS;
    let base = ((error_bits + 1) as usize) << PLAT_BITS;
    let offset = ((ns >> error_bits) as usize) & (PLAT_VAL - 1);
    (base + offset).min(PLAT_NR - 1)
}

/// The value a bucket reports (fio's `plat_idx_to_val`): the bucket's own value
/// below 128 ns, above that the middle of its range, `base + (k + 0.5) * 2^e`.
///
/// # Panics
///
/// If `idx >= PLAT_NR`.
pub fn idx_to_val(idx: usize) -> u64 {
    assert!(idx < PLAT_NR, "bucket {idx} out of range");
    if idx < PLAT_VAL << 1 {
        return idx as u64;
    }
    let error_bits = (idx >> PLAT_BITS) as u32 - 1;
    let base = 1u64 << (error_bits + PLAT_BITS);
    let k = (idx % PLAT_VAL) as u64;
    // (k + 0.5) * 2^e is an integer because e >= 1: k * 2^e + 2^(e - 1).
    base + (k << error_bits) + (1u64 << (error_bits - 1))
}

/// The smallest and largest latency (ns) that land in bucket `idx`.
///
/// # Panics
///
/// If `idx >= PLAT_NR`.
pub fn idx_range(idx: usize) -> (u64, u64) {
    assert!(idx < PLAT_NR, "bucket {idx} out of range");
    if idx < PLAT_VAL << 1 {
        return (idx as u64, idx as u64);
    }
    let error_bits = (idx >> PLAT_BITS) as u32 - 1;
    let base = 1u64 << (error_bits + PLAT_BITS);
    let k = (idx % PLAT_VAL) as u64;
    let lo = base + (k << error_bits);
    if idx == PLAT_NR - 1 {
        (lo, u64::MAX)
    } else {
        (lo, lo + (1u64 << error_bits) - 1)
    }
}

/// A latency histogram in nanoseconds with fio's buckets, plus exact count, min,
/// max, sum and sum of squares.
///
/// [`LatHist::add`] is a handful of integer instructions and never allocates; the
/// bucket array (15 KiB) is allocated once by [`LatHist::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct LatHist {
    buckets: Box<[u64; PLAT_NR]>,
    n: u64,
    min: u64,
    max: u64,
    sum: u128,
    sum_sq: u128,
}

impl Default for LatHist {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LatHist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatHist")
            .field("n", &self.n)
            .field("min", &self.min())
            .field("max", &self.max)
            .field("mean", &self.mean())
            .finish_non_exhaustive()
    }
}

impl LatHist {
    /// An empty histogram.
    pub fn new() -> Self {
        LatHist {
            buckets: Box::new([0; PLAT_NR]),
            n: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
            sum_sq: 0,
        }
    }

    /// Records one latency of `ns` nanoseconds.
    #[inline]
    pub fn add(&mut self, ns: u64) {
        self.buckets[val_to_idx(ns)] += 1;
        self.n += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
        self.sum += ns as u128;
        self.sum_sq += (ns as u128) * (ns as u128);
    }

    /// Adds every sample of `other` (exact: as if they had been added here).
    pub fn merge(&mut self, other: &LatHist) {
        if other.n == 0 {
            return;
        }
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.n += other.n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
    }

    /// Forgets every sample.
    pub fn clear(&mut self) {
        self.buckets.fill(0);
        self.n = 0;
        self.min = u64::MAX;
        self.max = 0;
        self.sum = 0;
        self.sum_sq = 0;
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Smallest sample (0 when empty, as fio prints it).
    pub fn min(&self) -> u64 {
        if self.n == 0 { 0 } else { self.min }
    }

    /// Largest sample (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Sum of the samples.
    pub fn sum(&self) -> u128 {
        self.sum
    }

    /// Mean (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum as f64 / self.n as f64
        }
    }

    /// Sample standard deviation, `sqrt(sum((x - mean)^2) / (n - 1))`, the
    /// definition fio's Welford accumulator reports; 0 for fewer than two samples.
    pub fn stddev(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        let n = self.n as u128;
        // n * sum(x^2) - (sum x)^2 = n * sum((x - mean)^2), exact when it fits.
        let exact = n
            .checked_mul(self.sum_sq)
            .zip(self.sum.checked_mul(self.sum))
            .map(|(a, b)| a.saturating_sub(b));
        let var = match exact {
            Some(m2n) => m2n as f64 / (self.n as f64 * (self.n - 1) as f64),
            None => {
                let mean = self.mean();
                ((self.sum_sq as f64 - mean * self.sum as f64) / (self.n - 1) as f64).max(0.0)
            }
        };
        var.sqrt()
    }

    /// Count in bucket `idx`.
    ///
    /// # Panics
    ///
    /// If `idx >= PLAT_NR`.
    pub fn bucket(&self, idx: usize) -> u64 {
        self.buckets[idx]
    }

    /// Percentiles as fio's `calc_clat_percentiles` computes them: the list is
    /// sorted; walking the buckets in order, percentile `p` gets the value
    /// ([`idx_to_val`]) of the first bucket after which the running count `sum`
    /// satisfies `sum >= (long double) p / 100.0 * n`. fio evaluates that in C's
    /// `long double` (x87 80-bit on x86-64), which rounds differently from `f64`
    /// (30 % of 100 samples needs 31 of them there); this reproduces the target's
    /// `long double` rounding exactly.
    ///
    /// Entries that are not above 0 are dropped and entries above 100 count as 100.
    /// With no samples every percentile is 0 (fio's terse output prints that).
    pub fn percentiles(&self, list: &[f64]) -> Vec<(f64, u64)> {
        let mut ps: Vec<f64> = list
            .iter()
            .copied()
            .filter(|p| *p > 0.0)
            .map(|p| p.min(100.0))
            .collect();
        ps.sort_by(f64::total_cmp);
        if self.n == 0 || ps.is_empty() {
            return ps.into_iter().map(|p| (p, 0)).collect();
        }
        let need: Vec<u128> = ps
            .iter()
            .map(|&p| min_count(p, self.n, LONG_DOUBLE_BITS))
            .collect();
        let mut out = Vec::with_capacity(ps.len());
        let mut sum = 0u64;
        let mut j = 0;
        'walk: for (i, &c) in self.buckets.iter().enumerate() {
            sum += c;
            while u128::from(sum) >= need[j] {
                out.push((ps[j], idx_to_val(i)));
                j += 1;
                if j == ps.len() {
                    break 'walk;
                }
            }
        }
        // Unreachable when the buckets add up to n (thresholds never exceed n).
        while j < ps.len() {
            out.push((ps[j], idx_to_val(val_to_idx(self.max))));
            j += 1;
        }
        out
    }

    /// Non-empty buckets as (bucket value in ns, count), in increasing value: fio's
    /// json+ `bins`.
    pub fn bins(&self) -> Vec<(u64, u64)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (idx_to_val(i), *c))
            .collect()
    }

    /// fio's latency distribution lines (`lat (nsec)`, `lat (usec)`, `lat (msec)`;
    /// JSON `latency_ns`, `latency_us`, `latency_ms`) in percent of the samples:
    /// bucket "X" holds latencies below X and at least the previous edge (the
    /// "250" nsec bucket holds 100..=249 ns; the last msec bucket, ">=2000", 2 s and
    /// more). fio fills them with completion latencies (clat) of reads and writes
    /// together: merge those histograms and call this. A sample is placed by its
    /// bucket's value, so buckets above 128 ns straddling an edge go to one side.
    /// Non-zero shares below 0.01 % read 0.01, as fio prints them.
    pub fn latency_distribution(&self) -> ([f64; 10], [f64; 10], [f64; 12]) {
        const EDGES: [u64; 11] = [2, 4, 10, 20, 50, 100, 250, 500, 750, 1000, 2000];
        let mut counts = ([0u64; 10], [0u64; 10], [0u64; 12]);
        let slot = |v: u64, nr: usize| EDGES[..nr].iter().position(|&e| v < e).unwrap_or(nr);
        for (i, &c) in self.buckets.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let v = idx_to_val(i);
            if v < 1000 {
                counts.0[slot(v, 9)] += c;
            } else if v < 1_000_000 {
                counts.1[slot(v / 1000, 9)] += c;
            } else {
                counts.2[slot(v / 1_000_000, 11)] += c;
            }
        }
        let pct = |c: u64| {
            if self.n == 0 || c == 0 {
                0.0
            } else {
                (c as f64 * 100.0 / self.n as f64).max(0.01)
            }
        };
        (counts.0.map(pct), counts.1.map(pct), counts.2.map(pct))
    }

    /// Everything fio prints about these latencies: min, max, mean, stddev, count,
    /// the given percentiles (none when `percentiles` is empty, as for fio's slat
    /// and lat) and the non-empty buckets (json+ prints them where it prints
    /// percentiles).
    pub fn summary(&self, percentiles: &[f64]) -> LatSummary {
        LatSummary {
            min: self.min(),
            max: self.max(),
            mean: self.mean(),
            stddev: self.stddev(),
            n: self.n,
            percentiles: if percentiles.is_empty() {
                Vec::new()
            } else {
                self.percentiles(percentiles)
            },
            bins: self.bins(),
        }
    }
}

/// Significand bits of C's `long double` where fio is built for this target:
/// x87 extended (64) on x86, IEEE quad (113) on 64-bit Arm and RISC-V Linux,
/// otherwise `double` (53).
pub const LONG_DOUBLE_BITS: u32 = if cfg!(any(target_arch = "x86", target_arch = "x86_64")) {
    64
} else if cfg!(all(
    any(target_arch = "aarch64", target_arch = "riscv64"),
    not(target_vendor = "apple"),
    not(target_os = "windows")
)) {
    113
} else {
    53
};

/// The smallest running count `c` for which fio's test
/// `c >= (long double) p / 100.0 * n` holds, the arithmetic done in a binary
/// floating point type with `bits` significand bits (53 ≤ bits ≤ 113) rounding to
/// nearest, ties to even. `p` is finite and in [0, 100].
pub fn min_count(p: f64, n: u64, bits: u32) -> u128 {
    debug_assert!((53..=113).contains(&bits));
    if p.is_nan() || p <= 0.0 || n == 0 {
        return 0;
    }
    // p = m * 2^e exactly.
    let raw = p.to_bits();
    let exp_field = ((raw >> 52) & 0x7ff) as i32;
    let frac = raw & ((1u64 << 52) - 1);
    let (m, e) = if exp_field == 0 {
        (frac, -1074)
    } else {
        (frac | (1u64 << 52), exp_field - 1075)
    };
    // q = RN(p / 100) = qm * 2^qe with qm in [2^(bits-1), 2^bits).
    let mbits = 64 - m.leading_zeros() as i32;
    let mut s = bits as i32 + 7 - mbits;
    let top = 1u128 << bits;
    if ((m as u128) << s) / 100 >= top {
        s -= 1;
    }
    let num = (m as u128) << s;
    let mut qm = num / 100;
    let rem = num % 100;
    if rem * 2 > 100 || (rem * 2 == 100 && qm & 1 == 1) {
        qm += 1;
    }
    if qm == top {
        qm >>= 1;
        s -= 1;
    }
    let qe = e - s;
    // t = RN(q * n) = tm * 2^te.
    let prod = mul_u128_u64(qm, n);
    let len = bit_len(&prod);
    let (tm, te) = if len <= bits {
        (low_u128(&prod), qe)
    } else {
        let k = len - bits;
        let mut tm = shr_u128(&prod, k);
        let round = bit(&prod, k - 1);
        let sticky = any_below(&prod, k - 1);
        if round && (sticky || tm & 1 == 1) {
            tm += 1;
        }
        let mut te = qe + k as i32;
        if tm == top {
            tm >>= 1;
            te += 1;
        }
        (tm, te)
    };
    // ceil(tm * 2^te).
    if te >= 0 {
        tm << te
    } else {
        let sh = (-te) as u32;
        if sh >= 128 {
            1
        } else {
            (tm >> sh) + u128::from(tm & ((1u128 << sh) - 1) != 0)
        }
    }
}

/// 256-bit unsigned integer as little-endian 64-bit limbs.
type U256 = [u64; 4];

fn mul_u128_u64(a: u128, b: u64) -> U256 {
    let p0 = (a as u64 as u128) * (b as u128);
    let p1 = ((a >> 64) as u64 as u128) * (b as u128);
    let mid = (p0 >> 64) + (p1 as u64 as u128);
    [p0 as u64, mid as u64, ((p1 >> 64) + (mid >> 64)) as u64, 0]
}

fn bit_len(x: &U256) -> u32 {
    for i in (0..4).rev() {
        if x[i] != 0 {
            return i as u32 * 64 + 64 - x[i].leading_zeros();
        }
    }
    0
}

fn bit(x: &U256, i: u32) -> bool {
    (x[(i / 64) as usize] >> (i % 64)) & 1 == 1
}

/// Whether any bit below `k` is set.
fn any_below(x: &U256, k: u32) -> bool {
    let full = (k / 64) as usize;
    if x[..full].iter().any(|&l| l != 0) {
        return true;
    }
    let r = k % 64;
    r != 0 && x[full] & ((1u64 << r) - 1) != 0
}

/// `x >> k`, which must fit 128 bits.
fn shr_u128(x: &U256, k: u32) -> u128 {
    let mut out = 0u128;
    for b in 0..128u32 {
        let i = k + b;
        if i < 256 && bit(x, i) {
            out |= 1u128 << b;
        }
    }
    out
}

fn low_u128(x: &U256) -> u128 {
    (x[0] as u128) | ((x[1] as u128) << 64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::model::DEFAULT_PERCENTILES;

    /// fio's plat_idx_to_val with its floating point expression.
    fn fio_idx_to_val(idx: usize) -> u64 {
        if idx < 128 {
            return idx as u64;
        }
        let error_bits = (idx >> 6) as u32 - 1;
        let base = 1u64 << (error_bits + 6);
        let k = (idx % 64) as f64;
        (base as f64 + (k + 0.5) * (1u64 << error_bits) as f64) as u64
    }

    #[test]
    fn bucket_math_matches_fio_formulas_by_hand() {
        // Exact below 128.
        for v in 0..128 {
            assert_eq!(val_to_idx(v), v as usize);
            assert_eq!(idx_to_val(v as usize), v);
        }
        // 128: msb 7, error bits 1, base (1+1)<<6 = 128, offset (128>>1)&63 = 0.
        assert_eq!(val_to_idx(128), 128);
        assert_eq!(val_to_idx(129), 128);
        assert_eq!(val_to_idx(130), 129);
        assert_eq!(val_to_idx(255), 191);
        // 256: msb 8, error bits 2, base 192, offset (256>>2)&63 = 0.
        assert_eq!(val_to_idx(256), 192);
        // 1000 ns: msb 9, e = 3, base 256, offset (1000>>3)&63 = 125&63 = 61.
        assert_eq!(val_to_idx(1000), 317);
        // Bucket 317: e = 317/64 - 1 = 3, base 512, k = 61: 512 + 61.5*8 = 1004.
        assert_eq!(idx_to_val(317), 1004);
        // 1 ms = 1_000_000 ns: msb 19, e = 13, base 14*64 = 896,
        // offset (1e6 >> 13) & 63 = 122 & 63 = 58 -> 954; value 2^19 + 58.5*2^13.
        assert_eq!(val_to_idx(1_000_000), 954);
        assert_eq!(idx_to_val(954), 524_288 + 58 * 8192 + 4096);
        // Values fio reported in a real json+ run (bins 211, 262) are bucket values.
        assert_eq!(idx_to_val(val_to_idx(211)), 211);
        assert_eq!(idx_to_val(val_to_idx(262)), 262);
        assert_eq!(idx_to_val(val_to_idx(9920)), 9920);
        // Everything from 2^34 ns on shares the last bucket.
        assert_eq!(val_to_idx((1 << 34) - 1), PLAT_NR - 1);
        assert_eq!(val_to_idx(1 << 34), PLAT_NR - 1);
        assert_eq!(val_to_idx(u64::MAX), PLAT_NR - 1);
        // Integer form == fio's floating form, ranges tile the line, values inside.
        let mut next = 0u64;
        for idx in 0..PLAT_NR {
            assert_eq!(idx_to_val(idx), fio_idx_to_val(idx), "bucket {idx}");
            let (lo, hi) = idx_range(idx);
            assert_eq!(lo, next, "bucket {idx}");
            assert!(lo <= idx_to_val(idx) && idx_to_val(idx) <= hi);
            assert_eq!(val_to_idx(lo), idx);
            assert_eq!(val_to_idx(hi), idx);
            next = hi.wrapping_add(1);
        }
        assert_eq!(next, 0);
    }

    #[test]
    fn long_double_thresholds_match_gcc() {
        // Computed with gcc on x86-64: the smallest c with
        // (long double)c >= (long double)p / 100.0 * n.
        let ps = DEFAULT_PERCENTILES;
        let want: [(u64, [u128; 17]); 4] = [
            (
                100,
                [
                    1, 5, 10, 20, 31, 40, 50, 61, 70, 80, 90, 95, 99, 100, 100, 100, 100,
                ],
            ),
            (
                1000,
                [
                    10, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950, 990, 995, 1000, 1000,
                    1000,
                ],
            ),
            (
                1_000_000,
                [
                    10000, 50000, 100000, 200000, 300000, 400000, 500000, 600000, 700000, 800000,
                    900000, 950000, 990000, 995000, 999001, 999501, 999900,
                ],
            ),
            (
                12345,
                [
                    124, 618, 1235, 2469, 3704, 4938, 6173, 7408, 8642, 9876, 11111, 11728, 12222,
                    12284, 12333, 12339, 12344,
                ],
            ),
        ];
        for (n, counts) in want {
            for (p, c) in ps.iter().zip(counts) {
                assert_eq!(min_count(*p, n, 64), c, "p={p} n={n}");
            }
        }
    }

    #[test]
    fn emulated_double_matches_native_double() {
        // With 53 bits the emulation must agree with f64 arithmetic.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let p = (x % 100_000) as f64 / 1000.0 + 0.001;
            let n = (x >> 20) % (1 << 40) + 1;
            let t = p / 100.0 * n as f64;
            let want = t.ceil() as u128;
            assert_eq!(min_count(p, n, 53), want, "p={p} n={n}");
        }
        assert_eq!(min_count(100.0, u64::MAX, 64), u64::MAX as u128);
        assert_eq!(min_count(0.0, 10, 64), 0);
    }

    fn hist_of(values: impl IntoIterator<Item = u64>) -> LatHist {
        let mut h = LatHist::new();
        for v in values {
            h.add(v);
        }
        h
    }

    #[test]
    fn uniform_1_to_1000_us() {
        let h = hist_of((1..=1000).map(|us| us * 1000));
        assert_eq!(h.count(), 1000);
        assert_eq!(h.min(), 1000);
        assert_eq!(h.max(), 1_000_000);
        assert!((h.mean() - 500_500.0).abs() < 1e-9);
        // Sample stddev of 1..=1000 is sqrt(1000 * 1001 / 12) = 288.8194...; in ns x1000.
        let sd = (1000.0f64 * 1001.0 / 12.0).sqrt() * 1000.0;
        assert!((h.stddev() - sd).abs() < 1e-6, "{} vs {sd}", h.stddev());
        let p = h.percentiles(&DEFAULT_PERCENTILES);
        // The k-th percentile is the bucket of the (k * 10)-th value, k*10 us.
        for &(pc, v) in &p {
            let rank = min_count(pc, 1000, LONG_DOUBLE_BITS) as u64;
            let want = idx_to_val(val_to_idx(rank * 1000));
            assert_eq!(v, want, "p{pc}");
        }
        // By hand: 50 % -> 500th value, 500_000 ns, msb 18, e = 12, base 832,
        // offset (500000 >> 12) & 63 = 122 & 63 = 58: bucket 890 reports
        // 2^18 + 58.5 * 4096 = 501_760.
        assert_eq!(p[6], (50.0, 501_760));
        // 99.99 % -> the 1000th value, 1_000_000 ns, bucket 954.
        assert_eq!(p[16], (99.99, idx_to_val(954)));
        // 1 % -> the 10th value, 10_000 ns: msb 13, e 7, base 512,
        // offset (10000 >> 7) & 63 = 78 & 63 = 14 -> bucket 526 = 8192 + 14.5*128.
        assert_eq!(p[0], (1.0, 10_048));
    }

    /// Expected values from a C transcription of fio's plat_val_to_idx,
    /// plat_idx_to_val and calc_clat_percentiles built with gcc on x86-64.
    #[test]
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    fn percentiles_match_fio_code_compiled_with_gcc() {
        let uniform = hist_of((1..=1000).map(|us| us * 1000));
        let want: [u64; 17] = [
            10048, 49920, 99840, 199680, 301056, 399360, 501760, 602112, 700416, 798720, 897024,
            946176, 987136, 995328, 1003520, 1003520, 1003520,
        ];
        let got: Vec<u64> = uniform
            .percentiles(&DEFAULT_PERCENTILES)
            .iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(got, want);
        // 100 samples: the 30th and 60th percentiles need 31 and 61 samples in
        // long double (30 and 60 in double).
        let hundred = hist_of((0..100).map(|i| 1000 + i * 37));
        let want: [u64; 17] = [
            1004, 1144, 1336, 1704, 2096, 2448, 2800, 3216, 3568, 3920, 4320, 4448, 4640, 4640,
            4640, 4640, 4640,
        ];
        let got: Vec<u64> = hundred
            .percentiles(&DEFAULT_PERCENTILES)
            .iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(got, want);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = LatHist::new();
        for _ in 0..123_457 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            random.add((x % 5_000_000) >> (x % 20));
        }
        let want: [u64; 17] = [
            0, 4, 9, 38, 153, 612, 2448, 9664, 39168, 160768, 716800, 1662976, 3981312, 4489216,
            4882432, 4947968, 5013504,
        ];
        let got: Vec<u64> = random
            .percentiles(&DEFAULT_PERCENTILES)
            .iter()
            .map(|x| x.1)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn single_value() {
        let h = hist_of([777]);
        assert_eq!((h.count(), h.min(), h.max()), (1, 777, 777));
        assert_eq!(h.mean(), 777.0);
        assert_eq!(h.stddev(), 0.0);
        let v = idx_to_val(val_to_idx(777));
        // 777: msb 9, e 3, base 256, offset (777 >> 3) & 63 = 97 & 63 = 33 -> 289;
        // value 512 + 33.5 * 8 = 780.
        assert_eq!(v, 780);
        for (p, x) in h.percentiles(&[1.0, 50.0, 99.99, 100.0]) {
            assert_eq!(x, 780, "p{p}");
        }
        assert_eq!(h.bins(), vec![(780, 1)]);
    }

    #[test]
    fn two_clusters() {
        // 900 samples at 10 us, 100 at 5 ms.
        let h =
            hist_of(std::iter::repeat_n(10_000, 900).chain(std::iter::repeat_n(5_000_000, 100)));
        let fast = idx_to_val(val_to_idx(10_000));
        let slow = idx_to_val(val_to_idx(5_000_000));
        let p = h.percentiles(&[50.0, 90.0, 90.1, 99.0]);
        assert_eq!(
            p,
            vec![(50.0, fast), (90.0, fast), (90.1, slow), (99.0, slow)]
        );
        let mean = (900.0 * 10_000.0 + 100.0 * 5_000_000.0) / 1000.0;
        assert!((h.mean() - mean).abs() < 1e-9);
        let var = (900.0 * (10_000.0f64 - mean).powi(2) + 100.0 * (5_000_000.0f64 - mean).powi(2))
            / 999.0;
        assert!((h.stddev() - var.sqrt()).abs() / var.sqrt() < 1e-12);
        assert_eq!(h.bins(), vec![(fast, 900), (slow, 100)]);
        let (ns, us, ms) = h.latency_distribution();
        assert_eq!(ns, [0.0; 10]);
        // 10 us goes to "20" (10..=19 us); 5 ms to "10" (4..=9 ms).
        assert_eq!(us[3], 90.0);
        assert_eq!(ms[2], 10.0);
    }

    #[test]
    fn percentiles_sort_and_empty() {
        let h = hist_of(1..=10);
        assert_eq!(
            h.percentiles(&[90.0, 10.0, 0.0, 50.0]),
            vec![(10.0, 1), (50.0, 5), (90.0, 9)]
        );
        let e = LatHist::new();
        assert_eq!(e.percentiles(&[50.0, 1.0]), vec![(1.0, 0), (50.0, 0)]);
        assert_eq!((e.min(), e.max(), e.mean(), e.stddev()), (0, 0, 0.0, 0.0));
        let s = e.summary(&[]);
        assert_eq!(s, LatSummary::default());
    }

    #[test]
    fn merge_is_exact() {
        let a = hist_of((1..=500).map(|x| x * 37));
        let b = hist_of((501..=1000).map(|x| x * 37));
        let all = hist_of((1..=1000).map(|x| x * 37));
        let mut m = a.clone();
        m.merge(&b);
        m.merge(&LatHist::new());
        assert_eq!(m, all);
        assert_eq!(
            m.summary(&DEFAULT_PERCENTILES),
            all.summary(&DEFAULT_PERCENTILES)
        );
        let mut c = m.clone();
        c.clear();
        assert_eq!(c, LatHist::new());
    }

    #[test]
    fn stddev_large_values_stay_accurate() {
        // Mean 1e12 with spread 1: catastrophic cancellation in naive f64.
        let h = hist_of([1_000_000_000_000, 1_000_000_000_001, 1_000_000_000_002]);
        assert!((h.stddev() - 1.0).abs() < 1e-9, "{}", h.stddev());
    }
}
