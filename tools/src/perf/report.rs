//! fio's outputs: the job header line, the normal report, JSON and JSON+, terse
//! version 3, latency and IOPS log lines, the live status line, and an SVG plot.
//!
//! The formats follow fio 3.33 (`stat.c`, `eta.c`, `json.c`, `lib/num2str.c`):
//! the same fields, units, rounding and layout, so tools reading fio's output read
//! ours. Where pollux-perf has nothing to report (disk statistics, zones, latency
//! targets) it prints what fio prints when those are unused.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::model::{BlockSizes, DirResult, JobResult, LatSummary, RwMode};

/// The version string in reports, where fio prints `fio-3.33`.
pub fn version_string() -> String {
    format!("pollux-perf-{}", env!("CARGO_PKG_VERSION"))
}

// ---------------------------------------------------------------------------
// Number formatting (fio's num2str)
// ---------------------------------------------------------------------------

/// Units [`num2str`] appends (fio's `enum n2s_unit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Nothing.
    None,
    /// `/s`.
    PerSec,
    /// `B`.
    Byte,
    /// `bit` (the number is multiplied by 8).
    Bit,
    /// `B/s`.
    BytePerSec,
    /// `bit/s` (the number is multiplied by 8).
    BitPerSec,
}

/// fio's `num2str`: `num` (in units of `base`, e.g. 1024 for KiB) with at most
/// `maxlen` digits (counting the decimal point), scaled by 1000 (`k`, `M`, ...) or
/// by 1024 (`Ki`, `Mi`, ... when `pow2`), followed by `unit`. Rounds as fio does
/// (truncating, with a carry only when no decimals fit).
pub fn num2str(num: u64, maxlen: usize, base: u64, pow2: bool, unit: Unit) -> String {
    const SI: [&str; 6] = ["", "k", "M", "G", "T", "P"];
    const IEC: [&str; 6] = ["", "Ki", "Mi", "Gi", "Ti", "Pi"];
    let prefixes = if pow2 { IEC } else { SI };
    let thousand: u64 = if pow2 { 1024 } else { 1000 };
    let unit_str = match unit {
        Unit::None => "",
        Unit::PerSec => "/s",
        Unit::Byte => "B",
        Unit::Bit => "bit",
        Unit::BytePerSec => "B/s",
        Unit::BitPerSec => "bit/s",
    };
    let mut post = 0usize;
    let mut b = base;
    while b > 1 {
        b /= thousand;
        post += 1;
    }
    let mut num = if matches!(unit, Unit::Bit | Unit::BitPerSec) {
        num.wrapping_mul(8)
    } else {
        num
    };
    let mut modulo = None;
    let mut carry = false;
    while post < prefixes.len() {
        if digits(num) <= maxlen {
            break;
        }
        let m = num % thousand;
        num /= thousand;
        carry = m >= thousand / 2;
        modulo = Some(m);
        post += 1;
    }
    let done = |num: u64, post: usize| {
        let post = if post >= prefixes.len() { 0 } else { post };
        format!("{num}{}{unit_str}", prefixes[post])
    };
    let Some(modulo) = modulo else {
        return done(num, post);
    };
    let len = digits(num);
    if maxlen as i64 - len as i64 <= 1 {
        return done(num + u64::from(carry), post);
    }
    let decimals = maxlen - len - 1;
    let frac = format!("{:.*}", decimals, modulo as f64 / thousand as f64);
    let post = if post >= prefixes.len() { 0 } else { post };
    format!("{num}.{}{}{unit_str}", &frac[2..], prefixes[post])
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |l| l as usize + 1)
}

/// C's `ctime` text of a UNIX time, in UTC, without the newline:
/// `Wed Nov 25 11:32:52 2026`.
pub fn ctime(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {}{:3} {:02}:{:02}:{:02} {}",
        DAYS[(days.rem_euclid(7)) as usize],
        MONTHS[(month - 1) as usize],
        day,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        year
    )
}

fn now() -> (u64, u64) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.as_millis() as u64)
}

// ---------------------------------------------------------------------------
// Groups
// ---------------------------------------------------------------------------

/// One reporting group's totals (fio's `group_run_stats`), per direction
/// (read, write, trim).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupResult {
    /// The group.
    pub groupid: u32,
    /// Bytes transferred by all its jobs.
    pub io_bytes: [u64; 3],
    /// Aggregate bandwidth, bytes/s: all bytes over the longest runtime.
    pub agg_bw: [u64; 3],
    /// The slowest job's bandwidth, bytes/s.
    pub min_bw: [u64; 3],
    /// The fastest job's bandwidth, bytes/s.
    pub max_bw: [u64; 3],
    /// The shortest job runtime, ms.
    pub min_run: [u64; 3],
    /// The longest job runtime, ms (0: nothing ran in that direction).
    pub max_run: [u64; 3],
}

/// The groups of `results`, in increasing group id, computed as fio does: for each
/// direction, over the jobs that ran in it, bandwidths `bytes * 1000 / runtime`,
/// the runtime range, and the aggregate `all bytes * 1000 / longest runtime`.
pub fn groups(results: &[JobResult]) -> Vec<GroupResult> {
    let mut ids: Vec<u32> = results.iter().map(|r| r.groupid).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .map(|g| {
            let mut gr = GroupResult {
                groupid: g,
                ..Default::default()
            };
            for r in results.iter().filter(|r| r.groupid == g) {
                for (d, dir) in r.dirs.iter().enumerate() {
                    let run = dir.runtime_ms;
                    if run == 0 {
                        continue;
                    }
                    let first = gr.max_run[d] == 0;
                    let bw = bw_bytes(dir);
                    if first || run < gr.min_run[d] {
                        gr.min_run[d] = run;
                    }
                    if first || bw < gr.min_bw[d] {
                        gr.min_bw[d] = bw;
                    }
                    gr.max_run[d] = gr.max_run[d].max(run);
                    gr.max_bw[d] = gr.max_bw[d].max(bw);
                    gr.io_bytes[d] += dir.io_bytes;
                }
            }
            for d in 0..3 {
                if gr.max_run[d] > 0 {
                    gr.agg_bw[d] = mul_div(gr.io_bytes[d], 1000, gr.max_run[d]);
                }
            }
            gr
        })
        .collect()
}

fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        0
    } else {
        (a as u128 * b as u128 / c as u128) as u64
    }
}

/// fio's integer bandwidth of a direction, bytes/s.
fn bw_bytes(d: &DirResult) -> u64 {
    mul_div(d.io_bytes, 1000, d.runtime_ms)
}

/// fio's integer IOPS of a direction.
fn iops_int(d: &DirResult) -> u64 {
    mul_div(d.total_ios, 1000, d.runtime_ms)
}

fn group_of(groups: &[GroupResult], id: u32) -> Option<&GroupResult> {
    groups.iter().find(|g| g.groupid == id)
}

// ---------------------------------------------------------------------------
// Shared statistics
// ---------------------------------------------------------------------------

/// min, max, mean, sample stddev and count of bandwidth or IOPS samples, as fio's
/// `calc_lat` on its integer samples.
struct SampleStats {
    min: u64,
    max: u64,
    mean: f64,
    dev: f64,
    n: u64,
}

fn sample_stats(s: &[f64]) -> Option<SampleStats> {
    if s.is_empty() {
        return None;
    }
    let n = s.len() as f64;
    let mean = s.iter().sum::<f64>() / n;
    let dev = if s.len() > 1 {
        (s.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    Some(SampleStats {
        min: s.iter().copied().fold(f64::INFINITY, f64::min).max(0.0) as u64,
        max: s.iter().copied().fold(0.0, f64::max) as u64,
        mean,
        dev,
        n: s.len() as u64,
    })
}

/// fio's `convert_agg_kbytes_percent`: a job's mean bandwidth (KiB/s, truncated
/// as fio passes it as an int) in percent of the group's aggregate, at most 100.
fn agg_percent(g: Option<&GroupResult>, d: usize, mean_kib: f64) -> f64 {
    match g {
        Some(g) if g.agg_bw[d] > 1024 => {
            (mean_kib.trunc() * 100.0 / (g.agg_bw[d] as f64 / 1024.0)).min(100.0)
        }
        _ => 100.0,
    }
}

/// fio's `stat_calc_dist` display rule: a non-zero share below 0.1 % reads 0.1.
fn clamp_dist(v: f64) -> f64 {
    if v > 0.0 && v < 0.1 { 0.1 } else { v }
}

/// fio's `stat_calc_lat` display rule: a non-zero share below 0.01 % reads 0.01.
fn clamp_lat(v: f64) -> f64 {
    if v > 0.0 && v < 0.01 { 0.01 } else { v }
}

fn members(r: &JobResult) -> u32 {
    r.members.max(1)
}

fn total_run_ms(r: &JobResult) -> u64 {
    let m = r.dirs.iter().map(|d| d.runtime_ms).max().unwrap_or(0);
    if m == 0 { r.elapsed_ms } else { m }
}

/// The percentile entries a summary prints: its own, else (no samples) the job's
/// list, sorted, at 0 ns as fio computes them for an empty histogram.
fn percentile_entries(s: &LatSummary, list: &[f64]) -> Vec<(f64, u64)> {
    if !s.percentiles.is_empty() {
        return s.percentiles.clone();
    }
    let mut v: Vec<f64> = list.iter().copied().filter(|p| *p > 0.0).collect();
    v.sort_by(f64::total_cmp);
    v.into_iter().map(|p| (p, 0)).collect()
}

const DIR_NAMES: [&str; 3] = ["read", "write", "trim"];

// ---------------------------------------------------------------------------
// Header and normal report
// ---------------------------------------------------------------------------

/// fio's name of an `rw` mode.
pub fn rw_name(rw: RwMode) -> &'static str {
    match rw {
        RwMode::Read => "read",
        RwMode::Write => "write",
        RwMode::RandRead => "randread",
        RwMode::RandWrite => "randwrite",
        RwMode::ReadWrite => "rw",
        RwMode::RandRw => "randrw",
    }
}

fn bs_range(b: &BlockSizes) -> String {
    format!(
        "{}-{}",
        num2str(b.min(), 4, 1, true, Unit::Byte),
        num2str(b.max(), 4, 1, true, Unit::Byte)
    )
}

/// The line fio prints for each job before starting (without the newline):
/// `a: (g=0): rw=randrw, bs=(R) 4096B-4096B, (W) 4096B-4096B, (T) 4096B-4096B,
/// ioengine=null, iodepth=8`. Trims use the write sizes, as fio's `bs=r,w` does.
pub fn job_header(r: &JobResult) -> String {
    format!(
        "{}: (g={}): rw={}, bs=(R) {}, (W) {}, (T) {}, ioengine={}, iodepth={}",
        r.name,
        r.groupid,
        rw_name(r.rw),
        bs_range(&r.bs_read),
        bs_range(&r.bs_write),
        bs_range(&r.bs_write),
        r.ioengine_name,
        r.iodepth
    )
}

/// fio's normal (human) report of `results` and their `groups`: a block per job
/// that did I/O, then `Run status group N (all jobs):` per group. Starts with an
/// empty line as fio's does (it follows the `Starting N processes` line).
pub fn normal(results: &[JobResult], groups: &[GroupResult]) -> String {
    let mut out = String::from("\n");
    let (secs, _) = now();
    let date = ctime(secs);
    let pid = std::process::id();
    for r in results {
        normal_job(&mut out, r, group_of(groups, r.groupid), pid, &date);
    }
    for g in groups {
        let _ = writeln!(out, "\nRun status group {} (all jobs):", g.groupid);
        for (d, label) in ["   READ", "  WRITE", "   TRIM"].iter().enumerate() {
            if g.max_run[d] == 0 {
                continue;
            }
            let both =
                |v: u64, unit: Unit| (num2str(v, 4, 1, true, unit), num2str(v, 4, 1, false, unit));
            let (agg, agg_alt) = both(g.agg_bw[d], Unit::BytePerSec);
            let (min, min_alt) = both(g.min_bw[d], Unit::BytePerSec);
            let (max, max_alt) = both(g.max_bw[d], Unit::BytePerSec);
            let (io, io_alt) = both(g.io_bytes[d], Unit::Byte);
            let _ = writeln!(
                out,
                "{label}: bw={agg} ({agg_alt}), {min}-{max} ({min_alt}-{max_alt}), io={io} ({io_alt}), run={}-{}msec",
                g.min_run[d], g.max_run[d]
            );
        }
    }
    out
}

fn normal_job(out: &mut String, r: &JobResult, g: Option<&GroupResult>, pid: u32, date: &str) {
    let ios: u64 = r.dirs.iter().map(|d| d.total_ios).sum();
    let bytes: u64 = r.dirs.iter().map(|d| d.io_bytes).sum();
    if ios == 0 && bytes == 0 {
        return;
    }
    if r.error == 0 {
        let _ = writeln!(
            out,
            "{}: (groupid={}, jobs={}): err={:2}: pid={pid}: {date}",
            r.name,
            r.groupid,
            members(r),
            r.error
        );
    } else {
        let _ = writeln!(
            out,
            "{}: (groupid={}, jobs={}): err={:2} ({}): pid={pid}: {date}",
            r.name,
            r.groupid,
            members(r),
            r.error,
            r.error_text.as_deref().unwrap_or("")
        );
    }
    for (d, dir) in r.dirs.iter().enumerate() {
        if dir.io_bytes > 0 {
            normal_dir(out, r, d, dir, g);
        }
    }
    // Latency distribution.
    const R10: [&str; 10] = [
        "2", "4", "10", "20", "50", "100", "250", "500", "750", "1000",
    ];
    const R12: [&str; 12] = [
        "2", "4", "10", "20", "50", "100", "250", "500", "750", "1000", "2000", ">=2000",
    ];
    show_lat(out, &r.latency_ns, &R10, "nsec");
    show_lat(out, &r.latency_us, &R10, "usec");
    show_lat(out, &r.latency_ms, &R12, "msec");
    let _ = writeln!(
        out,
        "  cpu          : usr={:.2}%, sys={:.2}%, ctx={}, majf={}, minf={}",
        r.usr_cpu, r.sys_cpu, r.ctx, r.majf, r.minf
    );
    let dist = |v: &[f64; 7], labels: [&str; 7]| {
        labels
            .iter()
            .zip(v)
            .map(|(l, x)| format!("{l}={:.1}%", clamp_dist(*x)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "  IO depths    : {}",
        dist(&r.iodepth_level, ["1", "2", "4", "8", "16", "32", ">=64"])
    );
    const SUB: [&str; 7] = ["0", "4", "8", "16", "32", "64", ">=64"];
    let _ = writeln!(out, "     submit    : {}", dist(&r.iodepth_submit, SUB));
    let _ = writeln!(out, "     complete  : {}", dist(&r.iodepth_complete, SUB));
    let _ = writeln!(
        out,
        "     issued rwts: total={},{},{},0 short={},{},{},0 dropped={},{},{},0",
        r.issued[0],
        r.issued[1],
        r.issued[2],
        r.dirs[0].short_ios,
        r.dirs[1].short_ios,
        r.dirs[2].short_ios,
        r.dirs[0].drop_ios,
        r.dirs[1].drop_ios,
        r.dirs[2].drop_ios
    );
    let _ = writeln!(
        out,
        "     latency   : target=0, window=0, percentile=100.00%, depth={}",
        r.iodepth
    );
}

fn normal_dir(out: &mut String, r: &JobResult, d: usize, dir: &DirResult, g: Option<&GroupResult>) {
    if dir.runtime_ms == 0 {
        return;
    }
    let bw = bw_bytes(dir);
    let _ = writeln!(
        out,
        "  {}: IOPS={}, BW={} ({})({}/{}msec){}",
        DIR_NAMES[d],
        num2str(iops_int(dir), 4, 1, false, Unit::None),
        num2str(bw, 4, 1, true, Unit::BytePerSec),
        num2str(bw, 4, 1, false, Unit::BytePerSec),
        num2str(dir.io_bytes, 4, 1, true, Unit::Byte),
        dir.runtime_ms,
        if d == 1 { "; 0 zone resets" } else { "" }
    );
    for (name, s) in [("slat", &dir.slat), ("clat", &dir.clat), (" lat", &dir.lat)] {
        if s.n > 0 {
            display_lat(out, name, s);
        }
    }
    if dir.clat.n > 0 {
        let p = percentile_entries(&dir.clat, &r.percentile_list);
        show_percentiles(out, "clat", &p);
    }
    if let Some(s) = sample_stats(&dir.bw_samples) {
        let per = agg_percent(g, d, s.mean);
        let (mut min, mut max, mut mean, mut dev, mut unit) = (s.min, s.max, s.mean, s.dev, "KiB");
        if mean > 1024.0 * 1024.0 {
            min = (min as f64 / 1024.0) as u64;
            max = (max as f64 / 1024.0) as u64;
            mean /= 1024.0;
            dev /= 1024.0;
            unit = "MiB";
        }
        let _ = writeln!(
            out,
            "   bw ({unit:>5}/s): min={min:5}, max={max:5}, per={per:3.2}%, avg={mean:5.2}, stdev={dev:5.2}, samples={}",
            s.n
        );
    }
    if let Some(s) = sample_stats(&dir.iops_samples) {
        let _ = writeln!(
            out,
            "   iops        : min={:5}, max={:5}, avg={:5.2}, stdev={:5.2}, samples={}",
            s.min, s.max, s.mean, s.dev, s.n
        );
    }
}

/// fio's `display_lat`: the unit is msec or usec when the values are large and
/// spread enough (fio's `nsec_to_msec` / `nsec_to_usec`).
fn display_lat(out: &mut String, name: &str, s: &LatSummary) {
    let (mut min, mut max, mut mean, mut dev) = (s.min, s.max, s.mean, s.stddev);
    let mut base = "(nsec)";
    if min > 2_000_000 && max > 99_999_999 && dev > 1_000_000.0 {
        min /= 1_000_000;
        max /= 1_000_000;
        mean /= 1_000_000.0;
        dev /= 1_000_000.0;
        base = "(msec)";
    } else if min > 2000 && max > 99_999 && dev > 1000.0 {
        min /= 1000;
        max /= 1000;
        mean /= 1000.0;
        dev /= 1000.0;
        base = "(usec)";
    }
    let _ = writeln!(
        out,
        "    {name} {base}: min={}, max={}, avg={mean:5.2}, stdev={dev:5.2}",
        num2str(min, 6, 1, false, Unit::None),
        num2str(max, 6, 1, false, Unit::None)
    );
}

/// Digits after the decimal point needed to print every percentile as given
/// (fio's `percentile_precision`, counted from the option's text).
fn percentile_precision(ps: &[(f64, u64)]) -> usize {
    ps.iter()
        .map(|(p, _)| {
            let s = format!("{p}");
            s.find('.').map_or(0, |i| s.len() - i - 1)
        })
        .max()
        .unwrap_or(0)
        .min(6)
}

/// fio's `show_clat_percentiles` block.
fn show_percentiles(out: &mut String, name: &str, ps: &[(f64, u64)]) {
    if ps.is_empty() {
        return;
    }
    let minv = ps.iter().map(|x| x.1).min().unwrap_or(0);
    let maxv = ps.iter().map(|x| x.1).max().unwrap_or(0);
    let (scale_down, divisor, unit) = if minv > 2_000_000 && maxv > 99_999_999 {
        (2, 1_000_000u64, "msec")
    } else if minv > 2000 && maxv > 99_999 {
        (1, 1000, "usec")
    } else {
        (0, 1, "nsec")
    };
    let _ = write!(out, "    {name} percentiles ({unit}):\n     |");
    let precision = percentile_precision(ps);
    let time_width = (maxv / divisor)
        .checked_ilog10()
        .map_or(5, |l| (l as usize + 1).max(5));
    let per_line = (80 - 7) / (precision + 10 + time_width);
    for (j, &(p, v)) in ps.iter().enumerate() {
        if j != 0 && j % per_line == 0 {
            out.push_str("     |");
        }
        let last = j == ps.len() - 1;
        let mut v = v;
        for _ in 0..scale_down {
            v = v.div_ceil(1000);
        }
        let _ = write!(
            out,
            " {p:w$.precision$}th=[{v:time_width$}]{}",
            if last { '\n' } else { ',' },
            w = precision + 3
        );
        if last {
            break;
        }
        if j % per_line == per_line - 1 {
            out.push('\n');
        }
    }
}

/// fio's `show_lat`: the non-zero buckets, five per line.
fn show_lat(out: &mut String, v: &[f64], ranges: &[&str], unit: &str) {
    let mut in_line = 0;
    let mut shown = false;
    for (x, r) in v.iter().zip(ranges) {
        let x = clamp_lat(*x);
        if x <= 0.0 {
            continue;
        }
        if !shown || in_line == 5 {
            if shown {
                out.push('\n');
            }
            let _ = write!(out, "  lat ({unit})   : ");
            in_line = 0;
        }
        shown = true;
        if in_line > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{r}={x:3.2}%");
        in_line += 1;
    }
    if shown {
        out.push('\n');
    }
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------

/// A JSON value that keeps fio's key order and its integer/float distinction.
#[derive(Clone, Debug, PartialEq)]
enum J {
    Int(u64),
    Float(f64),
    Str(String),
    Obj(Vec<(String, J)>),
    Arr(Vec<J>),
}

fn obj<const N: usize>(pairs: [(&str, J); N]) -> J {
    J::Obj(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

impl J {
    fn push(&mut self, k: &str, v: J) {
        if let J::Obj(p) = self {
            p.push((k.to_string(), v));
        }
    }

    /// As a `serde_json::Value`, floats rounded to the 6 decimals fio prints.
    fn to_value(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            J::Int(i) => Value::from(*i),
            J::Float(f) => {
                let r: f64 = format!("{f:.6}").parse().unwrap_or(0.0);
                serde_json::Number::from_f64(r).map_or(Value::Null, Value::Number)
            }
            J::Str(s) => Value::from(s.as_str()),
            J::Obj(p) => Value::Object(p.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()),
            J::Arr(a) => Value::Array(a.iter().map(J::to_value).collect()),
        }
    }

    /// fio's `json_print_*` layout: two-space indents, `"key" : value`, floats
    /// as `%f`.
    fn write(&self, out: &mut String, level: usize) {
        match self {
            J::Int(i) => {
                let _ = write!(out, "{i}");
            }
            J::Float(f) => {
                let _ = write!(out, "{f:.6}");
            }
            J::Str(s) => write_json_string(out, s),
            J::Obj(p) => {
                out.push_str("{\n");
                for (i, (k, v)) in p.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n");
                    }
                    indent(out, level + 1);
                    write_json_string(out, k);
                    out.push_str(" : ");
                    v.write(out, level + 1);
                }
                out.push('\n');
                indent(out, level);
                out.push('}');
            }
            J::Arr(a) => {
                out.push_str("[\n");
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(",\n");
                    }
                    indent(out, level + 1);
                    v.write(out, level + 1);
                }
                out.push('\n');
                indent(out, level);
                out.push(']');
            }
        }
    }
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("  ");
    }
}

/// A JSON string; fio escapes only `"` and `\`, this also escapes control
/// characters so the output stays valid JSON.
fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn lat_json(s: &LatSummary, plus: bool) -> J {
    let mut o = obj([
        ("min", J::Int(s.min)),
        ("max", J::Int(s.max)),
        ("mean", J::Float(s.mean)),
        ("stddev", J::Float(if s.n > 1 { s.stddev } else { 0.0 })),
        ("N", J::Int(s.n)),
    ]);
    if s.n > 0 && !s.percentiles.is_empty() {
        o.push(
            "percentile",
            J::Obj(
                s.percentiles
                    .iter()
                    .map(|(p, v)| (format!("{p:.6}"), J::Int(*v)))
                    .collect(),
            ),
        );
        if plus {
            o.push(
                "bins",
                J::Obj(
                    s.bins
                        .iter()
                        .map(|(v, c)| (v.to_string(), J::Int(*c)))
                        .collect(),
                ),
            );
        }
    }
    o
}

fn dir_json(r: &JobResult, d: usize, g: Option<&GroupResult>, plus: bool) -> J {
    let dir = &r.dirs[d];
    let bw = bw_bytes(dir);
    let iops = if dir.runtime_ms > 0 {
        1000.0 * dir.total_ios as f64 / dir.runtime_ms as f64
    } else {
        0.0
    };
    let mut o = obj([
        ("io_bytes", J::Int(dir.io_bytes)),
        ("io_kbytes", J::Int(dir.io_bytes >> 10)),
        ("bw_bytes", J::Int(bw)),
        ("bw", J::Int(bw / 1024)),
        ("iops", J::Float(iops)),
        ("runtime", J::Int(dir.runtime_ms)),
        ("total_ios", J::Int(dir.total_ios)),
        ("short_ios", J::Int(dir.short_ios)),
        ("drop_ios", J::Int(dir.drop_ios)),
        ("slat_ns", lat_json(&dir.slat, plus)),
        ("clat_ns", lat_json(&dir.clat, plus)),
        ("lat_ns", lat_json(&dir.lat, plus)),
    ]);
    let (bmin, bmax, agg, bmean, bdev, bn) = match sample_stats(&dir.bw_samples) {
        Some(s) => (s.min, s.max, agg_percent(g, d, s.mean), s.mean, s.dev, s.n),
        None => (0, 0, 0.0, 0.0, 0.0, 0),
    };
    o.push("bw_min", J::Int(bmin));
    o.push("bw_max", J::Int(bmax));
    o.push("bw_agg", J::Float(agg));
    o.push("bw_mean", J::Float(bmean));
    o.push("bw_dev", J::Float(bdev));
    o.push("bw_samples", J::Int(bn));
    let (imin, imax, imean, idev, i_n) = match sample_stats(&dir.iops_samples) {
        Some(s) => (s.min, s.max, s.mean, s.dev, s.n),
        None => (0, 0, 0.0, 0.0, 0),
    };
    o.push("iops_min", J::Int(imin));
    o.push("iops_max", J::Int(imax));
    o.push("iops_mean", J::Float(imean));
    o.push("iops_stddev", J::Float(idev));
    o.push("iops_samples", J::Int(i_n));
    o
}

fn float_map(keys: &[&str], v: &[f64], clamp: fn(f64) -> f64) -> J {
    J::Obj(
        keys.iter()
            .zip(v)
            .map(|(k, x)| (k.to_string(), J::Float(clamp(*x))))
            .collect(),
    )
}

fn job_json(r: &JobResult, g: Option<&GroupResult>, plus: bool) -> J {
    let zero_lat = obj([
        ("min", J::Int(0)),
        ("max", J::Int(0)),
        ("mean", J::Float(0.0)),
        ("stddev", J::Float(0.0)),
        ("N", J::Int(0)),
    ]);
    const LEVEL: [&str; 7] = ["1", "2", "4", "8", "16", "32", ">=64"];
    const SUB: [&str; 7] = ["0", "4", "8", "16", "32", "64", ">=64"];
    const R10: [&str; 10] = [
        "2", "4", "10", "20", "50", "100", "250", "500", "750", "1000",
    ];
    const R12: [&str; 12] = [
        "2", "4", "10", "20", "50", "100", "250", "500", "750", "1000", "2000", ">=2000",
    ];
    obj([
        ("jobname", J::Str(r.name.clone())),
        ("groupid", J::Int(r.groupid.into())),
        ("error", J::Int(r.error.into())),
        ("eta", J::Int(0)),
        ("elapsed", J::Int(r.elapsed_ms.div_ceil(1000))),
        (
            "job options",
            J::Obj(
                r.options
                    .iter()
                    .map(|(k, v)| (k.clone(), J::Str(v.clone())))
                    .collect(),
            ),
        ),
        ("read", dir_json(r, 0, g, plus)),
        ("write", dir_json(r, 1, g, plus)),
        ("trim", dir_json(r, 2, g, plus)),
        (
            "sync",
            obj([("total_ios", J::Int(0)), ("lat_ns", zero_lat)]),
        ),
        ("job_runtime", J::Int(total_run_ms(r))),
        ("usr_cpu", J::Float(r.usr_cpu)),
        ("sys_cpu", J::Float(r.sys_cpu)),
        ("ctx", J::Int(r.ctx)),
        ("majf", J::Int(r.majf)),
        ("minf", J::Int(r.minf)),
        (
            "iodepth_level",
            float_map(&LEVEL, &r.iodepth_level, clamp_dist),
        ),
        (
            "iodepth_submit",
            float_map(&SUB, &r.iodepth_submit, clamp_dist),
        ),
        (
            "iodepth_complete",
            float_map(&SUB, &r.iodepth_complete, clamp_dist),
        ),
        ("latency_ns", float_map(&R10, &r.latency_ns, clamp_lat)),
        ("latency_us", float_map(&R10, &r.latency_us, clamp_lat)),
        ("latency_ms", float_map(&R12, &r.latency_ms, clamp_lat)),
        ("latency_depth", J::Int(r.iodepth.into())),
        ("latency_target", J::Int(0)),
        ("latency_percentile", J::Float(100.0)),
        ("latency_window", J::Int(0)),
    ])
}

fn report_json(results: &[JobResult], groups: &[GroupResult], plus: bool) -> J {
    let (secs, ms) = now();
    obj([
        ("fio version", J::Str(version_string())),
        ("timestamp", J::Int(secs)),
        ("timestamp_ms", J::Int(ms)),
        ("time", J::Str(ctime(secs))),
        ("global options", J::Obj(Vec::new())),
        (
            "jobs",
            J::Arr(
                results
                    .iter()
                    .map(|r| job_json(r, group_of(groups, r.groupid), plus))
                    .collect(),
            ),
        ),
        ("disk_util", J::Arr(Vec::new())),
    ])
}

/// fio's JSON report (`--output-format=json`, or `json+` with `plus`: completion
/// latency `bins`) as a value: the same structure, field names and integer/float
/// kinds; floats are rounded to the 6 decimals fio prints. `serde_json` sorts
/// object keys; [`json_text`] keeps fio's order and layout.
pub fn json(results: &[JobResult], groups: &[GroupResult], plus: bool) -> serde_json::Value {
    report_json(results, groups, plus).to_value()
}

/// The JSON report as fio prints it: fio's key order, two-space indents,
/// `"key" : value`, floats with 6 decimals, and a final newline.
pub fn json_text(results: &[JobResult], groups: &[GroupResult], plus: bool) -> String {
    let mut out = String::new();
    report_json(results, groups, plus).write(&mut out, 0);
    out.push('\n');
    out
}

// ---------------------------------------------------------------------------
// Terse
// ---------------------------------------------------------------------------

/// fio's terse output, version 3 (`--output-format=terse`, `--minimal`): one
/// semicolon-separated line per job (fields as in fio's man page, TERSE OUTPUT;
/// latencies in usec, bandwidth in KiB/s, 20 percentile fields per direction, no
/// trim section, no disk statistics).
pub fn terse(results: &[JobResult]) -> String {
    let groups = groups(results);
    let mut out = String::new();
    for r in results {
        let g = group_of(&groups, r.groupid);
        let _ = write!(
            out,
            "3;{};{};{};{}",
            version_string(),
            r.name,
            r.groupid,
            r.error
        );
        for d in 0..2 {
            terse_dir(&mut out, r, d, g);
        }
        let _ = write!(
            out,
            ";{:.6}%;{:.6}%;{};{};{}",
            r.usr_cpu, r.sys_cpu, r.ctx, r.majf, r.minf
        );
        for v in r.iodepth_level {
            let _ = write!(out, ";{:.1}%", clamp_dist(v));
        }
        // fio adds every nsec bucket to the first usec one here.
        let ns_total: f64 = r.latency_ns.iter().sum();
        for (i, v) in r.latency_us.iter().enumerate() {
            let v = clamp_lat(*v) + if i == 0 { ns_total } else { 0.0 };
            let _ = write!(out, ";{v:.2}%");
        }
        for v in r.latency_ms {
            let _ = write!(out, ";{:.2}%", clamp_lat(v));
        }
        out.push('\n');
    }
    out
}

fn terse_dir(out: &mut String, r: &JobResult, d: usize, g: Option<&GroupResult>) {
    let dir = &r.dirs[d];
    let _ = write!(
        out,
        ";{};{};{};{}",
        dir.io_bytes >> 10,
        bw_bytes(dir) / 1024,
        iops_int(dir),
        dir.runtime_ms
    );
    let lat = |out: &mut String, s: &LatSummary| {
        if s.n > 0 {
            let _ = write!(
                out,
                ";{};{};{:.6};{:.6}",
                s.min / 1000,
                s.max / 1000,
                s.mean / 1000.0,
                s.stddev / 1000.0
            );
        } else {
            out.push_str(";0;0;0.000000;0.000000");
        }
    };
    lat(out, &dir.slat);
    lat(out, &dir.clat);
    let ps = percentile_entries(&dir.clat, &r.percentile_list);
    for i in 0..20 {
        match ps.get(i) {
            Some((p, v)) => {
                let _ = write!(out, ";{p:.6}%={}", v / 1000);
            }
            None => out.push_str(";0%=0"),
        }
    }
    lat(out, &dir.lat);
    match sample_stats(&dir.bw_samples) {
        Some(s) => {
            // Terse divides by the aggregate in whole KiB/s, unlike the normal report.
            let agg_kib = g.map_or(0, |g| g.agg_bw[d] / 1024);
            let per = if agg_kib > 0 {
                (s.mean * 100.0 / agg_kib as f64).min(100.0)
            } else {
                100.0
            };
            let _ = write!(
                out,
                ";{};{};{per:.6}%;{:.6};{:.6}",
                s.min, s.max, s.mean, s.dev
            );
        }
        None => out.push_str(";0;0;0.000000%;0.000000;0.000000"),
    }
}

// ---------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------

/// A line of a fio 3.33 log (`write_lat_log`, `write_bw_log`, `write_iops_log`),
/// without the newline: `time (ms), value, ddir, bs[, offset], priority`. fio
/// writes the offset column only with `log_offset=1`; the priority column is 0
/// here (no I/O priorities). Averaged entries (`log_avg_msec`) have `bs` 0.
pub fn log_line(t_ms: u64, value: u64, ddir: u8, bs: u64, offset: Option<u64>) -> String {
    match offset {
        Some(off) => format!("{t_ms}, {value}, {ddir}, {bs}, {off}, 0"),
        None => format!("{t_ms}, {value}, {ddir}, {bs}, 0"),
    }
}

/// A latency log line with the offset: `time, latency ns, ddir, bs, offset, 0`,
/// fio's format under `log_offset=1`.
pub fn lat_log_line(t_ms: u64, value: u64, ddir: u8, bs: u64, offset: u64) -> String {
    log_line(t_ms, value, ddir, bs, Some(offset))
}

/// An IOPS log line in fio's default format: `time, iops, ddir, bs, 0` (per-I/O
/// entries log 1 with the block size; `log_avg_msec` windows log the IOPS with
/// `bs` 0).
pub fn iops_log_line(t_ms: u64, iops: u64, ddir: u8, bs: u64) -> String {
    log_line(t_ms, iops, ddir, bs, None)
}

// ---------------------------------------------------------------------------
// Status line
// ---------------------------------------------------------------------------

/// fio's ETA text: `MMm:SSs`, with `HHh:` from one hour and `DDd:` from one day.
pub fn eta_to_str(secs: u64) -> String {
    let (s, m, h, d) = (secs % 60, secs / 60 % 60, secs / 3600 % 24, secs / 86400);
    let mut out = String::new();
    if d > 0 {
        let _ = write!(out, "{d:02}d:");
    }
    if h > 0 || d > 0 {
        let _ = write!(out, "{h:02}h:");
    }
    let _ = write!(out, "{m:02}m:{s:02}s");
    out
}

/// fio's condensed job states: runs of the same state as `c(n)`, comma-separated
/// (`rr_` gives `r(2),_(1)`).
pub fn condense_states(states: &str) -> String {
    let mut out = Vec::new();
    let mut it = states.chars().peekable();
    while let Some(c) = it.next() {
        let mut n = 1;
        while it.peek() == Some(&c) {
            it.next();
            n += 1;
        }
        out.push(format!("{c}({n})"));
    }
    out.join(",")
}

/// The live line fio prints on a terminal (without the leading or trailing `\r`):
/// `Jobs: 1 (f=1): [r(1)][45.0%][r=3070MiB/s][r=786k IOPS][eta 00m:06s]`.
///
/// `running` jobs each hold one open target (`f=`); `states` has one fio state
/// character per job (`R`/`r` reading, `W`/`w` writing, `M`/`m` mixed — upper case
/// sequential —, `/` ramping, `V` verifying, `_` done, `P` not started), condensed
/// as fio does; `percent_done` is NaN while unknown (printed `-.-%`); bandwidths
/// are bytes/s and IOPS per second over the last interval; directions with
/// neither are left out, and the rate brackets when both are idle.
#[allow(clippy::too_many_arguments)]
pub fn status_line(
    running: usize,
    states: &str,
    percent_done: f64,
    read_bw: f64,
    write_bw: f64,
    read_iops: f64,
    write_iops: f64,
    eta_secs: u64,
) -> String {
    let mut out = format!("Jobs: {running} (f={running})");
    if running == 0 {
        return out;
    }
    let perc = if percent_done.is_finite() && percent_done >= 0.0 {
        format!("{:.1}%", percent_done.min(100.0))
    } else {
        "-.-%".to_string()
    };
    let _ = write!(out, ": [{}][{perc}]", condense_states(states));
    let kib = |bw: f64| (bw.max(0.0) / 1024.0) as u64;
    let rates = [
        ('r', kib(read_bw), read_iops.max(0.0) as u64),
        ('w', kib(write_bw), write_iops.max(0.0) as u64),
    ];
    let shown: Vec<_> = rates.iter().filter(|r| r.1 > 0 || r.2 > 0).collect();
    if !shown.is_empty() {
        let bw: Vec<String> = shown
            .iter()
            .map(|(c, b, _)| format!("{c}={}", num2str(*b, 4, 1024, true, Unit::BytePerSec)))
            .collect();
        let io: Vec<String> = shown
            .iter()
            .map(|(c, _, i)| format!("{c}={}", num2str(*i, 4, 1, false, Unit::None)))
            .collect();
        let _ = write!(out, "[{}][{} IOPS]", bw.join(","), io.join(","));
    }
    let _ = write!(out, "[eta {}]", eta_to_str(eta_secs));
    out
}

// ---------------------------------------------------------------------------
// SVG plot
// ---------------------------------------------------------------------------

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) for about `n` ticks to `max`.
fn nice_step(max: f64, n: f64) -> f64 {
    if max.is_nan() || max <= 0.0 {
        return 1.0;
    }
    let raw = max / n;
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn short_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", trim_float(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim_float(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim_float(v / 1e3))
    } else if a >= 1.0 || a == 0.0 {
        trim_float(v)
    } else {
        // Three significant digits below 1.
        let d = (-a.log10().floor()) as usize + 2;
        let s = format!("{v:.d$}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// A self-contained SVG (no scripts, fonts or links): IOPS over time as a line
/// chart (`iops_over_time` as (seconds, IOPS)), and below it the completion
/// latency percentiles of `clat` as bars with their values, in ns, us or ms as
/// fits.
pub fn plot_svg(iops_over_time: &[(f64, f64)], clat: &LatSummary, title: &str) -> String {
    const W: f64 = 800.0;
    const H: f64 = 620.0;
    const L: f64 = 80.0;
    const R: f64 = 20.0;
    let pw = W - L - R;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        W / 2.0,
        xml_escape(title)
    );

    // Panel 1: IOPS over time.
    let (top, ph) = (50.0, 220.0);
    let pts: Vec<(f64, f64)> = iops_over_time
        .iter()
        .copied()
        .filter(|(t, v)| t.is_finite() && v.is_finite())
        .collect();
    let tmax = pts.iter().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let vmax_raw = pts.iter().map(|p| p.1).fold(0.0, f64::max);
    let ystep = nice_step(vmax_raw, 5.0);
    let vmax = ((vmax_raw / ystep).ceil() * ystep).max(ystep);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">IOPS over time</text>"#,
        L + pw / 2.0,
        top - 8.0
    );
    axes(&mut s, L, top, pw, ph);
    let mut y = 0.0;
    while y <= vmax + ystep / 2.0 {
        let py = top + ph - y / vmax * ph;
        let _ = writeln!(
            s,
            "<line x1=\"{L}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            L + pw,
            L - 6.0,
            py + 4.0,
            short_num(y)
        );
        y += ystep;
    }
    let xstep = nice_step(tmax, 8.0);
    let mut x = 0.0;
    while x <= tmax + xstep / 2.0 {
        let px = L + x / tmax * pw;
        let _ = writeln!(
            s,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            top + ph + 16.0,
            trim_float(x)
        );
        x += xstep;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">time (s)</text>"#,
        L + pw / 2.0,
        top + ph + 34.0
    );
    if pts.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#888">no samples</text>"##,
            L + pw / 2.0,
            top + ph / 2.0
        );
    } else {
        let line: Vec<String> = pts
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", L + t / tmax * pw, top + ph - v / vmax * ph))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
            line.join(" ")
        );
    }

    // Panel 2: latency percentiles, on a log scale (tails are decades away).
    let (top, ph) = (350.0, 220.0);
    let ps = &clat.percentiles;
    let lmax = ps.iter().map(|p| p.1).max().unwrap_or(clat.max);
    let (div, unit) = if lmax >= 10_000_000 {
        (1e6, "ms")
    } else if lmax >= 10_000 {
        (1e3, "us")
    } else {
        (1.0, "ns")
    };
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">Completion latency percentiles ({unit}, log scale); n={}, mean={} {unit}, max={} {unit}</text>"#,
        L + pw / 2.0,
        top - 8.0,
        clat.n,
        short_num(clat.mean / div),
        short_num(clat.max as f64 / div)
    );
    axes(&mut s, L, top, pw, ph);
    let vals: Vec<f64> = ps.iter().map(|p| p.1 as f64 / div).collect();
    let vmin = vals
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let vmax = vals.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if vmin.is_finite() {
        // A value on a decade still gets a visible bar.
        let lo = (vmin.log10() - 1e-9).floor();
        let hi = vmax.log10().ceil().max(lo + 1.0);
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let y_of = |v: f64| {
        if v > 0.0 {
            top + ph - ((v.log10() - lo) / (hi - lo)).clamp(0.0, 1.0) * ph
        } else {
            top + ph
        }
    };
    let mut e = lo;
    while e <= hi + 0.5 {
        let py = y_of(10f64.powf(e));
        let _ = writeln!(
            s,
            "<line x1=\"{L}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            L + pw,
            L - 6.0,
            py + 4.0,
            short_num(10f64.powf(e))
        );
        e += 1.0;
    }
    if ps.is_empty() {
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#888">no samples</text>"##,
            L + pw / 2.0,
            top + ph / 2.0
        );
    }
    let slot = pw / ps.len().max(1) as f64;
    for (i, (p, v)) in ps.iter().enumerate() {
        let val = *v as f64 / div;
        let bh = top + ph - y_of(val);
        let x = L + i as f64 * slot + slot * 0.15;
        let _ = writeln!(
            s,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="#ff7f0e"><title>p{} = {} {unit}</title></rect>"##,
            top + ph - bh,
            slot * 0.7,
            trim_float(*p),
            short_num(val)
        );
        let cx = L + (i as f64 + 0.5) * slot;
        let _ = writeln!(
            s,
            r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text><text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
            top + ph - bh - 3.0,
            short_num(val),
            top + ph + 14.0,
            trim_float(*p)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        L + pw / 2.0,
        top + ph + 32.0
    );
    s.push_str("</svg>\n");
    s
}

fn axes(s: &mut String, l: f64, top: f64, w: f64, h: f64) {
    let _ = writeln!(
        s,
        "<path d=\"M{l},{top} V{} H{}\" fill=\"none\" stroke=\"#333\"/>",
        top + h,
        l + w
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perf::hist::LatHist;
    use crate::perf::model::DEFAULT_PERCENTILES;
    use serde_json::Value;

    #[test]
    fn num2str_matches_fio() {
        // Values seen in fio 3.33's output.
        assert_eq!(num2str(4096, 4, 1, true, Unit::Byte), "4096B");
        assert_eq!(num2str(65536, 4, 1, true, Unit::Byte), "64.0KiB");
        assert_eq!(num2str(262144, 4, 1, true, Unit::Byte), "256KiB");
        assert_eq!(num2str(1048576, 4, 1, true, Unit::Byte), "1024KiB");
        assert_eq!(num2str(3 << 20, 4, 1, true, Unit::Byte), "3072KiB");
        assert_eq!(num2str(1536, 4, 1, true, Unit::Byte), "1536B");
        assert_eq!(num2str(1_252_000, 4, 1, false, Unit::None), "1252k");
        assert_eq!(num2str(1021300, 6, 1, false, Unit::None), "1021.3k");
        assert_eq!(num2str(616877, 6, 1, false, Unit::None), "616877");
        // 9787 MiB of 4 KiB I/Os in 2001 ms: bw = io * 1000 / 2001.
        let io = 2_505_547u64 * 4096;
        let bw = io * 1000 / 2001;
        assert_eq!(num2str(bw, 4, 1, true, Unit::BytePerSec), "4891MiB/s");
        assert_eq!(num2str(bw, 4, 1, false, Unit::BytePerSec), "5129MB/s");
        assert_eq!(num2str(io, 4, 1, true, Unit::Byte), "9787MiB");
        assert_eq!(num2str(io, 4, 1, false, Unit::Byte), "10.3GB");
        assert_eq!(
            num2str(7998 * 1024, 4, 1, true, Unit::BytePerSec),
            "7998KiB/s"
        );
        // Status line rates are in KiB/s (base 1024).
        assert_eq!(
            num2str(3070 * 1024, 4, 1024, true, Unit::BytePerSec),
            "3070MiB/s"
        );
        assert_eq!(num2str(786_000, 4, 1, false, Unit::None), "786k");
        assert_eq!(num2str(0, 4, 1, false, Unit::None), "0");
    }

    #[test]
    fn ctime_is_c_ctime() {
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
        // fio's JSON: "timestamp" : 1795606377 with "time" : "Wed Nov 25 11:32:57 2026".
        assert_eq!(ctime(1_795_606_377), "Wed Nov 25 11:32:57 2026");
        assert_eq!(ctime(951_782_400), "Tue Feb 29 00:00:00 2000");
    }

    fn lat(values: impl IntoIterator<Item = u64>, ps: &[f64]) -> LatSummary {
        let mut h = LatHist::new();
        for v in values {
            h.add(v);
        }
        h.summary(ps)
    }

    /// A job that read 1000 I/Os of 4 KiB in 2 s, with 1..=1000 us latencies.
    fn sample_job() -> JobResult {
        let mut r = JobResult {
            name: "a".into(),
            rw: RwMode::RandRead,
            iodepth: 8,
            ioengine_name: "null".into(),
            percentile_list: DEFAULT_PERCENTILES.to_vec(),
            options: vec![
                ("name".into(), "a".into()),
                ("rw".into(), "randread".into()),
                ("iodepth".into(), "8".into()),
            ],
            elapsed_ms: 2100,
            usr_cpu: 12.5,
            sys_cpu: 1.25,
            ctx: 19,
            minf: 11,
            issued: [1000, 0, 0],
            iodepth_level: [0.0, 0.0, 0.0, 100.0, 0.0, 0.0, 0.0],
            iodepth_submit: [0.0, 100.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            iodepth_complete: [0.0, 99.999, 0.001, 0.0, 0.0, 0.0, 0.0],
            latency_us: [0.1, 0.2, 0.5, 1.0, 3.0, 5.0, 15.0, 25.0, 25.0, 25.2],
            latency_ms: [0.005, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            ..Default::default()
        };
        r.dirs[0] = DirResult {
            io_bytes: 1000 * 4096,
            total_ios: 1000,
            runtime_ms: 2000,
            slat: lat((1..=1000).map(|x| 100 + x), &[]),
            clat: lat((1..=1000).map(|x| x * 1000), &DEFAULT_PERCENTILES),
            lat: lat((1..=1000).map(|x| x * 1000 + 100 + x), &[]),
            bw_samples: vec![1900.0, 2100.0, 2000.0, 2000.0],
            iops_samples: vec![475.0, 525.0, 500.0, 500.0],
            ..Default::default()
        };
        r
    }

    #[test]
    fn header_line() {
        let r = sample_job();
        assert_eq!(
            job_header(&r),
            "a: (g=0): rw=randread, bs=(R) 4096B-4096B, (W) 4096B-4096B, (T) 4096B-4096B, ioengine=null, iodepth=8"
        );
        let mut r = r;
        r.bs_write = BlockSizes::Range {
            min: 512,
            max: 256 << 10,
        };
        r.rw = RwMode::ReadWrite;
        assert!(
            job_header(&r).contains("rw=rw, bs=(R) 4096B-4096B, (W) 512B-256KiB, (T) 512B-256KiB")
        );
    }

    #[test]
    fn groups_like_fio() {
        let mut a = sample_job();
        let mut b = sample_job();
        b.dirs[0].runtime_ms = 1000;
        b.dirs[0].io_bytes = 3000 * 4096;
        a.groupid = 0;
        b.groupid = 0;
        let mut c = sample_job();
        c.groupid = 1;
        c.dirs[0] = DirResult::default();
        c.dirs[1] = DirResult {
            io_bytes: 1 << 20,
            total_ios: 256,
            runtime_ms: 500,
            ..Default::default()
        };
        let g = groups(&[a, b, c]);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].io_bytes[0], 4000 * 4096);
        assert_eq!(g[0].max_run[0], 2000);
        assert_eq!(g[0].min_run[0], 1000);
        assert_eq!(g[0].agg_bw[0], 4000 * 4096 * 1000 / 2000);
        assert_eq!(g[0].min_bw[0], 1000 * 4096 * 1000 / 2000);
        assert_eq!(g[0].max_bw[0], 3000 * 4096 * 1000 / 1000);
        assert_eq!(g[0].max_run[1], 0);
        assert_eq!(g[1].groupid, 1);
        assert_eq!(g[1].agg_bw[1], 2 << 20);
    }

    #[test]
    fn normal_report_layout() {
        let r = sample_job();
        let g = groups(std::slice::from_ref(&r));
        let text = normal(std::slice::from_ref(&r), &g);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "");
        assert!(
            lines[1].starts_with("a: (groupid=0, jobs=1): err= 0: pid="),
            "{}",
            lines[1]
        );
        let want = [
            "  read: IOPS=500, BW=2000KiB/s (2048kB/s)(4000KiB/2000msec)",
            "    slat (nsec): min=101, max=1100, avg=600.50, stdev=288.82",
            "    clat (nsec): min=1000, max=1000.0k, avg=500500.00, stdev=288819.44",
            "     lat (nsec): min=1101, max=1001.1k, avg=501100.50, stdev=289108.26",
            "    clat percentiles (usec):",
            "     |  1.00th=[   11],  5.00th=[   50], 10.00th=[  100], 20.00th=[  200],",
            "     | 30.00th=[  302], 40.00th=[  400], 50.00th=[  502], 60.00th=[  603],",
            "     | 70.00th=[  701], 80.00th=[  799], 90.00th=[  898], 95.00th=[  947],",
            "     | 99.00th=[  988], 99.50th=[  996], 99.90th=[ 1004], 99.95th=[ 1004],",
            "     | 99.99th=[ 1004]",
            "   bw (  KiB/s): min= 1900, max= 2100, per=100.00%, avg=2000.00, stdev=81.65, samples=4",
            "   iops        : min=  475, max=  525, avg=500.00, stdev=20.41, samples=4",
            "  lat (usec)   : 2=0.10%, 4=0.20%, 10=0.50%, 20=1.00%, 50=3.00%",
            "  lat (usec)   : 100=5.00%, 250=15.00%, 500=25.00%, 750=25.00%, 1000=25.20%",
            "  lat (msec)   : 2=0.01%",
            "  cpu          : usr=12.50%, sys=1.25%, ctx=19, majf=0, minf=11",
            "  IO depths    : 1=0.0%, 2=0.0%, 4=0.0%, 8=100.0%, 16=0.0%, 32=0.0%, >=64=0.0%",
            "     submit    : 0=0.0%, 4=100.0%, 8=0.0%, 16=0.0%, 32=0.0%, 64=0.0%, >=64=0.0%",
            "     complete  : 0=0.0%, 4=100.0%, 8=0.1%, 16=0.0%, 32=0.0%, 64=0.0%, >=64=0.0%",
            "     issued rwts: total=1000,0,0,0 short=0,0,0,0 dropped=0,0,0,0",
            "     latency   : target=0, window=0, percentile=100.00%, depth=8",
            "",
            "Run status group 0 (all jobs):",
            "   READ: bw=2000KiB/s (2048kB/s), 2000KiB/s-2000KiB/s (2048kB/s-2048kB/s), io=4000KiB (4096kB), run=2000-2000msec",
        ];
        assert_eq!(&lines[2..], &want[..], "\n{text}");
    }

    #[test]
    fn percentile_block_widths_and_units() {
        let mut out = String::new();
        show_percentiles(&mut out, "clat", &[(50.0, 20), (99.0, 31), (99.999, 13760)]);
        assert_eq!(
            out,
            "    clat percentiles (nsec):\n     | 50.000th=[   20], 99.000th=[   31], 99.999th=[13760]\n"
        );
        let mut out = String::new();
        show_percentiles(&mut out, "clat", &[(50.0, 31), (99.0, 50)]);
        assert_eq!(
            out,
            "    clat percentiles (nsec):\n     |  50th=[   31],  99th=[   50]\n"
        );
        // msec, rounded up; the width follows the largest value.
        let v: Vec<(f64, u64)> = [1.0, 5.0, 99.5, 99.95]
            .iter()
            .map(|&p| (p, 3_000_000_000 + p as u64))
            .collect();
        let mut out = String::new();
        show_percentiles(&mut out, "clat", &v);
        assert_eq!(
            out,
            "    clat percentiles (msec):\n     |  1.00th=[ 3001],  5.00th=[ 3001], 99.50th=[ 3001], 99.95th=[ 3001]\n"
        );
        // Eight digits leave room for three per line.
        let v: Vec<(f64, u64)> = [1.0, 5.0, 99.5, 99.95]
            .iter()
            .map(|&p| (p, 12_345_678_901_234))
            .collect();
        let mut out = String::new();
        show_percentiles(&mut out, "clat", &v);
        assert_eq!(
            out,
            "    clat percentiles (msec):\n     |  1.00th=[12345679],  5.00th=[12345679], 99.50th=[12345679],\n     | 99.95th=[12345679]\n"
        );
    }

    #[test]
    fn status_line_like_fio() {
        assert_eq!(
            status_line(1, "r", 45.0, 3070.0 * 1048576.0, 0.0, 786_000.0, 0.0, 6),
            "Jobs: 1 (f=1): [r(1)][45.0%][r=3070MiB/s][r=786k IOPS][eta 00m:06s]"
        );
        assert_eq!(
            status_line(
                1,
                "m",
                f64::NAN,
                7492.0 * 1048576.0,
                7483.0 * 1048576.0,
                1_918_000.0,
                1_916_000.0,
                0
            ),
            "Jobs: 1 (f=1): [m(1)][-.-%][r=7492MiB/s,w=7483MiB/s][r=1918k,w=1916k IOPS][eta 00m:00s]"
        );
        assert_eq!(
            status_line(2, "RR_", 10.0, 0.0, 0.0, 0.0, 0.0, 3725),
            "Jobs: 2 (f=2): [R(2),_(1)][10.0%][eta 01h:02m:05s]"
        );
        assert_eq!(eta_to_str(90_061), "01d:01h:01m:01s");
        assert_eq!(
            status_line(0, "__", 100.0, 0.0, 0.0, 0.0, 0.0, 0),
            "Jobs: 0 (f=0)"
        );
    }

    #[test]
    fn log_lines() {
        assert_eq!(
            lat_log_line(12, 15549, 0, 4096, 45056),
            "12, 15549, 0, 4096, 45056, 0"
        );
        assert_eq!(iops_log_line(500, 1591524, 1, 0), "500, 1591524, 1, 0, 0");
        assert_eq!(log_line(0, 331, 0, 4096, None), "0, 331, 0, 4096, 0");
    }

    #[test]
    fn json_fields() {
        let r = sample_job();
        let g = groups(std::slice::from_ref(&r));
        let v = json(std::slice::from_ref(&r), &g, false);
        assert_eq!(v["fio version"], version_string());
        assert!(v["timestamp"].is_u64() && v["timestamp_ms"].is_u64());
        assert!(v["global options"].is_object());
        assert!(v["disk_util"].as_array().unwrap().is_empty());
        let j = &v["jobs"][0];
        assert_eq!(j["jobname"], "a");
        assert_eq!(j["groupid"], 0);
        assert_eq!(j["elapsed"], 3);
        assert_eq!(j["job options"]["rw"], "randread");
        let rd = &j["read"];
        assert_eq!(rd["io_bytes"], 4_096_000);
        assert_eq!(rd["io_kbytes"], 4000);
        assert_eq!(rd["bw_bytes"], 2_048_000);
        assert_eq!(rd["bw"], 2000);
        assert!(rd["iops"].is_f64());
        assert_eq!(rd["iops"].as_f64(), Some(500.0));
        assert_eq!(rd["runtime"], 2000);
        assert_eq!(rd["total_ios"], 1000);
        let clat = &rd["clat_ns"];
        assert_eq!(clat["min"], 1000);
        assert_eq!(clat["max"], 1_000_000);
        assert_eq!(clat["N"], 1000);
        assert_eq!(clat["mean"].as_f64(), Some(500_500.0));
        assert_eq!(clat["percentile"]["99.000000"], 987_136);
        assert_eq!(clat["percentile"]["50.000000"], 501_760);
        assert_eq!(clat["percentile"].as_object().unwrap().len(), 17);
        assert!(clat.get("bins").is_none());
        assert!(rd["slat_ns"].get("percentile").is_none());
        assert_eq!(rd["bw_min"], 1900);
        assert_eq!(rd["bw_agg"].as_f64(), Some(100.0));
        assert_eq!(rd["bw_dev"].as_f64(), Some(81.649658));
        assert_eq!(rd["iops_samples"], 4);
        let wr = &j["write"];
        assert_eq!(wr["io_bytes"], 0);
        assert!(wr["iops"].is_f64());
        assert!(wr["clat_ns"].get("percentile").is_none());
        assert_eq!(j["trim"]["bw_agg"].as_f64(), Some(0.0));
        assert_eq!(j["sync"]["lat_ns"]["N"], 0);
        assert_eq!(j["job_runtime"], 2000);
        assert_eq!(j["usr_cpu"].as_f64(), Some(12.5));
        assert_eq!(j["iodepth_level"]["8"].as_f64(), Some(100.0));
        assert_eq!(j["iodepth_complete"]["8"].as_f64(), Some(0.1));
        assert_eq!(j["latency_ms"][">=2000"].as_f64(), Some(0.0));
        assert_eq!(j["latency_ms"]["2"].as_f64(), Some(0.01));
        assert_eq!(j["latency_depth"], 8);
        assert_eq!(j["latency_percentile"].as_f64(), Some(100.0));

        let plus = json(std::slice::from_ref(&r), &g, true);
        let bins = plus["jobs"][0]["read"]["clat_ns"]["bins"]
            .as_object()
            .unwrap();
        let total: u64 = bins.values().map(|c| c.as_u64().unwrap()).sum();
        assert_eq!(total, 1000);
        assert!(plus["jobs"][0]["read"]["lat_ns"].get("bins").is_none());
    }

    #[test]
    fn json_text_is_fio_layout() {
        let r = sample_job();
        let g = groups(std::slice::from_ref(&r));
        let text = json_text(std::slice::from_ref(&r), &g, false);
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["jobs"][0]["read"]["clat_ns"]["percentile"]["99.000000"],
            987_136
        );
        assert!(text.starts_with("{\n  \"fio version\" : \"pollux-perf-"));
        assert!(text.contains("\n  \"jobs\" : [\n    {\n      \"jobname\" : \"a\",\n"));
        assert!(text.contains("        \"iops\" : 500.000000,\n"));
        assert!(text.contains("          \"percentile\" : {\n            \"1.000000\" : 10048,\n"));
        assert!(text.contains("\"global options\" : {\n\n  },"));
        assert!(text.ends_with("  \"disk_util\" : [\n\n  ]\n}\n"));
        // Key order follows fio's.
        let keys = [
            "\"jobname\"",
            "\"groupid\"",
            "\"error\"",
            "\"eta\"",
            "\"elapsed\"",
            "\"job options\"",
            "\"read\"",
            "\"write\"",
            "\"trim\"",
            "\"sync\"",
            "\"job_runtime\"",
            "\"usr_cpu\"",
            "\"latency_window\"",
        ];
        let pos: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{pos:?}");
    }

    #[test]
    fn terse_v3_fields() {
        let r = sample_job();
        let t = terse(std::slice::from_ref(&r));
        assert!(t.ends_with('\n'));
        let f: Vec<&str> = t.trim_end().split(';').collect();
        // 5 general + 2 x 41 per direction + 5 cpu + 7 depth + 10 us + 12 ms, as
        // fio 3.33's 121.
        assert_eq!(f.len(), 121, "{t}");
        assert_eq!(&f[..5], &["3", version_string().as_str(), "a", "0", "0"]);
        // read: kb, bw KiB/s, iops, runtime.
        assert_eq!(&f[5..9], &["4000", "2000", "500", "2000"]);
        // slat in usec: 101 ns -> 0, 1100 ns -> 1.
        assert_eq!(&f[9..13], &["0", "1", "0.600500", "0.288819"]);
        assert_eq!(&f[13..15], &["1", "1000"]);
        assert_eq!(f[17], "1.000000%=10");
        assert_eq!(f[29], "99.000000%=987");
        // Percentiles in usec, truncated (the normal report rounds up).
        assert_eq!(f[33], "99.990000%=1003");
        assert_eq!(&f[34..37], &["0%=0", "0%=0", "0%=0"]);
        assert_eq!(
            &f[41..46],
            &["1900", "2100", "100.000000%", "2000.000000", "81.649658"]
        );
        // write: nothing, percentiles at 0 like fio's.
        assert_eq!(&f[46..50], &["0", "0", "0", "0"]);
        assert_eq!(f[58], "1.000000%=0");
        assert_eq!(&f[82..87], &["0", "0", "0.000000%", "0.000000", "0.000000"]);
        assert_eq!(&f[87..92], &["12.500000%", "1.250000%", "19", "0", "11"]);
        assert_eq!(
            &f[92..99],
            &["0.0%", "0.0%", "0.0%", "100.0%", "0.0%", "0.0%", "0.0%"]
        );
        assert_eq!(f[99], "0.10%");
        assert_eq!(f[108], "25.20%");
        assert_eq!(f[109], "0.01%");
        assert_eq!(f[120], "0.00%");
    }

    #[test]
    fn plot_is_svg() {
        let r = sample_job();
        let svg = plot_svg(
            &[(0.0, 100.0), (1.0, 450.0), (2.0, 500.0)],
            &r.dirs[0].clat,
            "a & <b>",
        );
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("a &amp; &lt;b&gt;"));
        assert!(svg.contains("<polyline"));
        assert_eq!(svg.matches("<rect x=").count(), 17);
        let empty = plot_svg(&[], &LatSummary::default(), "");
        assert!(empty.contains("no samples"));
    }

    /// What a script reading fio's JSON takes from it.
    #[derive(Debug)]
    struct Seen {
        jobname: String,
        read_iops: f64,
        clat_percentiles: Vec<(f64, u64)>,
        options: Vec<(String, String)>,
    }

    fn read_fio_json(text: &str) -> Vec<Seen> {
        let v: Value = serde_json::from_str(text).expect("valid JSON");
        assert!(v["fio version"].is_string());
        v["jobs"]
            .as_array()
            .expect("jobs")
            .iter()
            .map(|j| Seen {
                jobname: j["jobname"].as_str().unwrap().to_string(),
                read_iops: j["read"]["iops"].as_f64().unwrap(),
                clat_percentiles: j["read"]["clat_ns"]["percentile"]
                    .as_object()
                    .map(|m| {
                        let mut p: Vec<(f64, u64)> = m
                            .iter()
                            .map(|(k, v)| (k.parse().unwrap(), v.as_u64().unwrap()))
                            .collect();
                        p.sort_by(|a, b| a.0.total_cmp(&b.0));
                        p
                    })
                    .unwrap_or_default(),
                options: j["job options"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect()
    }

    #[test]
    fn fio_and_pollux_json_read_alike() {
        let fio = read_fio_json(include_str!("../../tests/data/fio-null.json"));
        assert_eq!(fio.len(), 1);
        assert_eq!(fio[0].jobname, "a");
        assert!(fio[0].read_iops > 0.0);
        assert_eq!(fio[0].clat_percentiles.len(), 17);
        assert!(
            fio[0]
                .options
                .contains(&("rw".to_string(), "randrw".to_string()))
        );

        let r = sample_job();
        let g = groups(std::slice::from_ref(&r));
        let ours = read_fio_json(&json_text(std::slice::from_ref(&r), &g, false));
        let ours_value = read_fio_json(&json(std::slice::from_ref(&r), &g, false).to_string());
        for o in [&ours[0], &ours_value[0]] {
            assert_eq!(o.jobname, "a");
            assert_eq!(o.read_iops, 500.0);
            let fio_keys: Vec<f64> = fio[0].clat_percentiles.iter().map(|p| p.0).collect();
            let our_keys: Vec<f64> = o.clat_percentiles.iter().map(|p| p.0).collect();
            assert_eq!(fio_keys, our_keys);
            assert!(
                o.options
                    .contains(&("rw".to_string(), "randread".to_string()))
            );
        }
        // Percentiles are non-decreasing in both.
        for s in [&fio[0], &ours[0]] {
            assert!(s.clat_percentiles.windows(2).all(|w| w[0].1 <= w[1].1));
        }
    }
}
