//! I/O statistics of a bdev (SPDK's `bdev_get_iostat` / `bdev_reset_iostat`).
//!
//! Each channel counts its own I/Os (bytes, operations, latency in TSC ticks: total, max,
//! min, and failures by status) in a block only its thread writes: a relaxed load and a
//! relaxed store per field, no read-modify-write and no line shared with another core on
//! the I/O path. Readers on other threads add the channels up; a reset is a message to
//! each channel's thread, which clears its own block. A closed channel's counts move into
//! the bdev's retired block, so nothing counted is lost.

use super::{IoKind, IoStatus};
use crate::thread::ThreadHandle;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

/// The kinds of I/O counted (SPDK counts reads, writes and unmaps; Pollux has no copy).
const KINDS: usize = 3;
/// Per kind: bytes, operations, latency ticks total, max and min (0: none yet).
const FIELDS: usize = 5;
const BYTES: usize = 0;
const OPS: usize = 1;
const LAT: usize = 2;
const MAX: usize = 3;
const MIN: usize = 4;

/// Latency histogram buckets: bucket `i` counts latencies below 2^(i + 10) ns (the
/// first also those below, the last everything above): powers of two of nanoseconds,
/// the same on every machine, so the bucket is one multiply and one `leading_zeros`;
/// from 1.024 us to 4.3 s.
pub const HIST_BUCKETS: usize = 24;
/// log2 of the first bucket's bound in ns, minus one.
const HIST_SHIFT: u32 = 9;

/// Nanoseconds per tick in 32.32 fixed point (0 until [`tick_rate`] has run).
static NS_PER_TICK: AtomicU64 = AtomicU64::new(0);

#[inline]
fn bucket(lat_ticks: u64) -> usize {
    let f = NS_PER_TICK.load(Relaxed);
    let ns = if f == 0 {
        lat_ticks
    } else {
        ((lat_ticks as u128 * f as u128) >> 32) as u64
    };
    let log2 = 63 - (ns | 1).leading_zeros();
    (log2.saturating_sub(HIST_SHIFT) as usize).min(HIST_BUCKETS - 1)
}

/// The upper bound of bucket `i`, in nanoseconds (`None`: the last, unbounded).
pub fn bucket_bound_ns(i: usize) -> Option<u64> {
    (i + 1 < HIST_BUCKETS).then(|| 1u64 << (i as u32 + HIST_SHIFT + 1))
}

/// Failed I/Os by SPDK's status names.
pub const ERROR_NAMES: [&str; 4] = ["failed", "nvme_error", "nomem", "aborted"];

/// The TSC (or the monotonic clock in nanoseconds where there is none).
#[inline]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no preconditions on x86-64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static T0: OnceLock<std::time::Instant> = OnceLock::new();
        T0.get_or_init(std::time::Instant::now).elapsed().as_nanos() as u64
    }
}

/// Ticks per second of [`ticks`], measured once against the monotonic clock (20 ms).
pub fn tick_rate() -> u64 {
    static RATE: OnceLock<u64> = OnceLock::new();
    *RATE.get_or_init(|| {
        if !cfg!(target_arch = "x86_64") {
            return 1_000_000_000;
        }
        let (t0, c0) = (std::time::Instant::now(), ticks());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (dt, dc) = (t0.elapsed(), ticks().wrapping_sub(c0));
        let rate = (dc as u128 * 1_000_000_000 / dt.as_nanos().max(1)) as u64;
        NS_PER_TICK.store(
            ((1_000_000_000u128 << 32) / rate.max(1) as u128) as u64,
            Relaxed,
        );
        rate
    })
}

/// What one channel counted, written by its thread alone.
#[derive(Debug, Default)]
pub struct ChannelStat {
    v: [[AtomicU64; FIELDS]; KINDS],
    errors: [AtomicU64; ERROR_NAMES.len()],
    hist: [[AtomicU64; HIST_BUCKETS]; KINDS],
}

#[inline]
fn bump(a: &AtomicU64, by: u64) {
    a.store(a.load(Relaxed).wrapping_add(by), Relaxed);
}

impl ChannelStat {
    /// Counts a completed I/O (on the channel's thread).
    #[inline]
    pub(crate) fn record(&self, kind: IoKind, status: IoStatus, bytes: u64, lat: u64) {
        if !status.is_success() {
            let i = match status {
                IoStatus::Nvme { .. } => 1,
                IoStatus::NoMemory => 2,
                IoStatus::Aborted => 3,
                _ => 0,
            };
            bump(&self.errors[i], 1);
            return;
        }
        let k = match kind {
            IoKind::Read => 0,
            IoKind::Write => 1,
            IoKind::Unmap => 2,
            // As SPDK: flushes and write-zeroes are not counted.
            _ => return,
        };
        let v = &self.v[k];
        bump(&v[BYTES], bytes);
        bump(&v[OPS], 1);
        bump(&v[LAT], lat);
        bump(&self.hist[k][bucket(lat)], 1);
        let lat = lat.max(1);
        if lat > v[MAX].load(Relaxed) {
            v[MAX].store(lat, Relaxed);
        }
        let min = v[MIN].load(Relaxed);
        if min == 0 || lat < min {
            v[MIN].store(lat, Relaxed);
        }
    }

    /// Clears the counters `mode` names; on the channel's thread.
    pub(crate) fn reset(&self, mode: ResetMode) {
        let mut s = self.snapshot();
        s.reset(mode);
        for (k, v) in s.v.iter().enumerate() {
            for (f, x) in v.iter().enumerate() {
                self.v[k][f].store(*x, Relaxed);
            }
        }
        for (i, e) in s.errors.iter().enumerate() {
            self.errors[i].store(*e, Relaxed);
        }
        for (k, h) in s.hist.iter().enumerate() {
            for (b, x) in h.iter().enumerate() {
                self.hist[k][b].store(*x, Relaxed);
            }
        }
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> IoStat {
        IoStat {
            v: std::array::from_fn(|k| std::array::from_fn(|f| self.v[k][f].load(Relaxed))),
            errors: std::array::from_fn(|i| self.errors[i].load(Relaxed)),
            hist: std::array::from_fn(|k| std::array::from_fn(|b| self.hist[k][b].load(Relaxed))),
        }
    }
}

/// What `bdev_reset_iostat` clears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetMode {
    /// Everything.
    All,
    /// The maximum and minimum latencies.
    MaxMin,
    /// The failure counts.
    Error,
}

/// Counters of one channel or of a whole bdev, copied out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoStat {
    v: [[u64; FIELDS]; KINDS],
    errors: [u64; ERROR_NAMES.len()],
    hist: [[u64; HIST_BUCKETS]; KINDS],
}

impl Default for IoStat {
    fn default() -> IoStat {
        IoStat {
            v: Default::default(),
            errors: Default::default(),
            hist: [[0; HIST_BUCKETS]; KINDS],
        }
    }
}

impl IoStat {
    /// Clears what `mode` names (SPDK's rules: `all` clears everything).
    pub fn reset(&mut self, mode: ResetMode) {
        if matches!(mode, ResetMode::All | ResetMode::Error) {
            self.errors = Default::default();
        }
        if mode == ResetMode::All {
            self.hist = [[0; HIST_BUCKETS]; KINDS];
        }
        for v in &mut self.v {
            match mode {
                ResetMode::All => *v = Default::default(),
                ResetMode::MaxMin => (v[MAX], v[MIN]) = (0, 0),
                ResetMode::Error => {}
            }
        }
    }

    /// Adds `o` in (sums, the larger maximum, the smaller minimum).
    pub fn merge(&mut self, o: &IoStat) {
        for (a, b) in self.v.iter_mut().zip(&o.v) {
            for f in [BYTES, OPS, LAT] {
                a[f] = a[f].wrapping_add(b[f]);
            }
            a[MAX] = a[MAX].max(b[MAX]);
            if b[MIN] != 0 && (a[MIN] == 0 || b[MIN] < a[MIN]) {
                a[MIN] = b[MIN];
            }
        }
        for (a, b) in self.errors.iter_mut().zip(&o.errors) {
            *a = a.wrapping_add(*b);
        }
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.wrapping_add(*y);
            }
        }
    }

    /// Latency ticks total and the histogram's counts of `kind` (read, write, unmap).
    pub fn latency(&self, kind: IoKind) -> Option<(u64, [u64; HIST_BUCKETS])> {
        let k = match kind {
            IoKind::Read => 0,
            IoKind::Write => 1,
            IoKind::Unmap => 2,
            _ => return None,
        };
        Some((self.v[k][LAT], self.hist[k]))
    }

    /// Bytes and operations of `kind` (read, write or unmap).
    pub fn bytes_ops(&self, kind: IoKind) -> (u64, u64) {
        match kind {
            IoKind::Read => (self.v[0][BYTES], self.v[0][OPS]),
            IoKind::Write => (self.v[1][BYTES], self.v[1][OPS]),
            IoKind::Unmap => (self.v[2][BYTES], self.v[2][OPS]),
            _ => (0, 0),
        }
    }

    /// Failed I/Os by [`ERROR_NAMES`].
    pub fn errors(&self) -> [u64; ERROR_NAMES.len()] {
        self.errors
    }

    /// SPDK's fields, into `m`.
    pub fn write_json(&self, m: &mut serde_json::Map<String, serde_json::Value>) {
        use serde_json::json;
        for (k, name, verb) in [
            (0, "read", "read"),
            (1, "write", "written"),
            (2, "unmap", "unmapped"),
        ] {
            let v = &self.v[k];
            m.insert(format!("bytes_{verb}"), json!(v[BYTES]));
            m.insert(format!("num_{name}_ops"), json!(v[OPS]));
            m.insert(format!("{name}_latency_ticks"), json!(v[LAT]));
            m.insert(format!("max_{name}_latency_ticks"), json!(v[MAX]));
            m.insert(format!("min_{name}_latency_ticks"), json!(v[MIN]));
        }
        for f in [
            "bytes_copied",
            "num_copy_ops",
            "copy_latency_ticks",
            "max_copy_latency_ticks",
            "min_copy_latency_ticks",
        ] {
            m.insert(f.into(), json!(0));
        }
        let errors: serde_json::Map<_, _> = ERROR_NAMES
            .iter()
            .zip(self.errors)
            .filter(|(_, n)| *n != 0)
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect();
        m.insert("io_error".into(), serde_json::Value::Object(errors));
    }
}

/// A bdev's channels' counters and what closed channels counted.
#[derive(Debug, Default)]
pub struct BdevStats {
    inner: Mutex<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    open: Vec<(ThreadHandle, Arc<ChannelStat>)>,
    retired: IoStat,
}

impl BdevStats {
    /// A new channel's block, on `thread`.
    pub(crate) fn open(&self, thread: ThreadHandle) -> Arc<ChannelStat> {
        let s = Arc::new(ChannelStat::default());
        self.inner.lock().unwrap().open.push((thread, s.clone()));
        s
    }

    /// A closing channel's counts move to the retired block.
    pub(crate) fn close(&self, s: &Arc<ChannelStat>) {
        let mut g = self.inner.lock().unwrap();
        g.open.retain(|(_, c)| !Arc::ptr_eq(c, s));
        let snap = s.snapshot();
        g.retired.merge(&snap);
    }

    /// The bdev's totals.
    pub fn total(&self) -> IoStat {
        let g = self.inner.lock().unwrap();
        let mut t = g.retired;
        for (_, c) in &g.open {
            t.merge(&c.snapshot());
        }
        t
    }

    /// Each open channel's counters, with its thread.
    pub fn per_channel(&self) -> Vec<(ThreadHandle, IoStat)> {
        let g = self.inner.lock().unwrap();
        g.open
            .iter()
            .map(|(t, c)| (t.clone(), c.snapshot()))
            .collect()
    }

    /// Clears the counters: each channel's on its own thread (waiting for them when
    /// called from outside the engine's threads), the retired ones here.
    pub fn reset(&self, mode: ResetMode) {
        let open: Vec<_> = {
            let mut g = self.inner.lock().unwrap();
            g.retired.reset(mode);
            g.open.clone()
        };
        let outside = crate::thread::Thread::current().is_none();
        for (t, c) in open {
            let c2 = c.clone();
            let sent = if outside {
                t.call(move || c2.reset(mode)).is_ok()
            } else {
                t.send_msg(move || c2.reset(mode)).is_ok()
            };
            if !sent {
                // The thread is gone: no writer is left.
                c.reset(mode);
            }
        }
    }
}
