//! Where the next I/O goes and how big it is: sequential and random offsets (uniform
//! over a random map that touches every block once per pass, zipf, pareto, normal), block
//! sizes from `bs`/`bsrange`/`bssplit`, and the read/write mix.

use super::model::{BlockSizes, Distribution, JobSpec};

/// A small, fast PRNG (xorshift64*), seeded per job.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A permutation of 0..n visited without memory: a full-period LCG modulo the next power
/// of two, skipping values beyond n (fio's random map guarantees the same: every block
/// once per pass).
#[derive(Clone, Debug)]
struct Permutation {
    n: u64,
    mask: u64,
    a: u64,
    c: u64,
    x: u64,
    left: u64,
}

impl Permutation {
    fn new(n: u64, rng: &mut Rng) -> Permutation {
        let m = n.max(1).next_power_of_two();
        // a = 1 mod 4 and c odd give a full period modulo a power of two.
        let a = (rng.next_u64() & !3) | 1 | 4;
        let c = rng.next_u64() | 1;
        Permutation {
            n: n.max(1),
            mask: m - 1,
            a,
            c,
            x: rng.next_u64() & (m - 1),
            left: n.max(1),
        }
    }

    fn next(&mut self) -> u64 {
        if self.left == 0 {
            self.left = self.n;
        }
        loop {
            self.x = (self.x.wrapping_mul(self.a).wrapping_add(self.c)) & self.mask;
            if self.x < self.n {
                self.left -= 1;
                return self.x;
            }
        }
    }
}

/// Zipf over 1..=n by inverse transform on a precomputed CDF of up to 1 << 20 points
/// (ranges beyond that are scaled), as fio's zipf does with its own method.
#[derive(Clone, Debug)]
struct Skewed {
    cdf: Vec<f64>,
    scale: u64,
    n: u64,
    spread: u64,
}

impl Skewed {
    fn zipf(n: u64, theta: f64) -> Skewed {
        let points = n.clamp(1, 1 << 20);
        let mut cdf = Vec::with_capacity(points as usize);
        let mut sum = 0.0;
        for i in 1..=points {
            sum += 1.0 / (i as f64).powf(theta);
            cdf.push(sum);
        }
        for v in &mut cdf {
            *v /= sum;
        }
        Skewed {
            cdf,
            scale: n.div_ceil(points),
            n,
            spread: 0x5851_f42d_4c95_7f2d,
        }
    }

    fn pareto(n: u64, h: f64) -> Skewed {
        // Pareto with shape from h (fio's pareto: 0 < h < 1, smaller is more skewed):
        // the CDF of rank i is (i/n)^h.
        let points = n.clamp(1, 1 << 20);
        let cdf = (1..=points)
            .map(|i| (i as f64 / points as f64).powf(h.clamp(0.01, 1.0)))
            .collect();
        Skewed {
            cdf,
            scale: n.div_ceil(points),
            n,
            spread: 0x5851_f42d_4c95_7f2d,
        }
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let rank = self.cdf.partition_point(|&c| c < u) as u64;
        let base = rank * self.scale + rng.below(self.scale);
        // Hot ranks are spread over the range, not packed at its start (as fio hashes).
        base.wrapping_mul(self.spread) % self.n
    }
}

/// Offsets, sizes and directions for one job.
#[derive(Clone, Debug)]
pub struct Generator {
    rng: Rng,
    random: bool,
    dist: Distribution,
    perm: Option<Permutation>,
    skew: Option<Skewed>,
    region_start: u64,
    region_len: u64,
    unit: u64,
    seq_next: [u64; 2],
    rwmixread: u32,
    reads: bool,
    writes: bool,
    bs: [BlockSizes; 2],
}

impl Generator {
    /// For `spec` over `region_len` bytes starting at `region_start`, in units of
    /// `unit` bytes (the device's block size or the smallest `bs`).
    pub fn new(spec: &JobSpec, region_start: u64, region_len: u64, seed: u64) -> Generator {
        let unit = spec.bs_read.min().min(spec.bs_write.min()).max(512);
        let mut rng = Rng::new(seed);
        let slots = (region_len / unit).max(1);
        let (perm, skew) = match spec.random_distribution {
            Distribution::Random if spec.rw.is_random() && !spec.norandommap => {
                (Some(Permutation::new(slots, &mut rng)), None)
            }
            Distribution::Zipf(t) => (None, Some(Skewed::zipf(slots, t))),
            Distribution::Pareto(h) => (None, Some(Skewed::pareto(slots, h))),
            _ => (None, None),
        };
        Generator {
            rng,
            random: spec.rw.is_random(),
            dist: spec.random_distribution,
            perm,
            skew,
            region_start,
            region_len,
            unit,
            seq_next: [0, 0],
            rwmixread: if !spec.rw.writes() {
                100
            } else if !spec.rw.reads() {
                0
            } else {
                spec.rwmixread
            },
            reads: spec.rw.reads(),
            writes: spec.rw.writes(),
            bs: [spec.bs_read.clone(), spec.bs_write.clone()],
        }
    }

    /// Whether the next I/O reads (else it writes).
    pub fn next_is_read(&mut self) -> bool {
        if !self.writes {
            return true;
        }
        if !self.reads {
            return false;
        }
        self.rng.below(100) < self.rwmixread as u64
    }

    /// The next size for direction `d` (0 read, 1 write).
    pub fn next_bs(&mut self, d: usize) -> u64 {
        match &self.bs[d] {
            BlockSizes::Fixed(b) => *b,
            BlockSizes::Range { min, max } => {
                let steps = (max - min) / min + 1;
                min + self.rng.below(steps) * min
            }
            BlockSizes::Split(v) => {
                let mut p = self.rng.below(100) as u32;
                for &(b, pct) in v {
                    if p < pct {
                        return b;
                    }
                    p -= pct;
                }
                v.last().map(|x| x.0).unwrap_or(4096)
            }
        }
    }

    /// The next offset (bytes, absolute) for an I/O of `len` bytes in direction `d`.
    pub fn next_offset(&mut self, d: usize, len: u64) -> u64 {
        let len = len.min(self.region_len);
        if !self.random {
            let mut o = self.seq_next[d];
            if o + len > self.region_len {
                o = 0;
            }
            self.seq_next[d] = o + len;
            return self.region_start + o;
        }
        let slots = (self.region_len - len) / self.unit + 1;
        let slot = if let Some(p) = &mut self.perm {
            // The permutation covers every unit; sizes above one unit round down.
            p.next() % slots
        } else if let Some(s) = &self.skew {
            s.sample(&mut self.rng) % slots
        } else if let Distribution::Normal(dev) = self.dist {
            // Box-Muller around the middle, `dev` percent of the range wide.
            let (u1, u2) = (self.rng.unit().max(1e-12), self.rng.unit());
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let mid = slots as f64 / 2.0;
            let x = mid + z * (dev / 100.0) * slots as f64;
            (x.max(0.0) as u64).min(slots - 1)
        } else {
            self.rng.below(slots)
        };
        self.region_start + slot * self.unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::model::RwMode;

    #[test]
    fn the_random_map_touches_every_block_once_per_pass() {
        let spec = JobSpec {
            rw: RwMode::RandRead,
            ..Default::default()
        };
        let mut g = Generator::new(&spec, 4096, 1000 * 4096, 7);
        let mut seen = vec![false; 1000];
        for _ in 0..1000 {
            let o = g.next_offset(0, 4096);
            let i = ((o - 4096) / 4096) as usize;
            assert!(!seen[i], "block {i} twice in one pass");
            seen[i] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let spec = JobSpec {
            rw: RwMode::RandRead,
            random_distribution: Distribution::Zipf(1.2),
            ..Default::default()
        };
        let mut g = Generator::new(&spec, 0, 10_000 * 4096, 1);
        let mut counts = std::collections::HashMap::new();
        for _ in 0..100_000 {
            let o = g.next_offset(0, 4096);
            assert!(o < 10_000 * 4096 && o % 4096 == 0);
            *counts.entry(o).or_insert(0u32) += 1;
        }
        let max = *counts.values().max().unwrap();
        // The hottest block takes far more than a uniform share (10).
        assert!(max > 1000, "{max}");
    }

    #[test]
    fn sizes_and_mix() {
        let spec = JobSpec {
            rw: RwMode::RandRw,
            rwmixread: 70,
            bs_read: BlockSizes::Split(vec![(4096, 50), (65536, 50)]),
            bs_write: BlockSizes::Range {
                min: 4096,
                max: 16384,
            },
            ..Default::default()
        };
        let mut g = Generator::new(&spec, 0, 1 << 30, 3);
        let reads = (0..10_000).filter(|_| g.next_is_read()).count();
        assert!((6500..7500).contains(&reads), "{reads}");
        for _ in 0..1000 {
            let b = g.next_bs(0);
            assert!(b == 4096 || b == 65536);
            let w = g.next_bs(1);
            assert!(w % 4096 == 0 && (4096..=16384).contains(&w));
        }
    }

    #[test]
    fn sequential_wraps_at_the_end_of_the_region() {
        let spec = JobSpec::default();
        let mut g = Generator::new(&spec, 0, 3 * 4096, 0);
        let v: Vec<u64> = (0..4).map(|_| g.next_offset(0, 4096)).collect();
        assert_eq!(v, vec![0, 4096, 8192, 0]);
    }
}
