//! One job on one reactor thread: a poller keeps `iodepth` I/Os in flight to a bdev
//! channel or an NVMe-oF queue pair, times each I/O (submission, completion, total),
//! checks verify blocks, and hands its raw counters back when it is done.
//!
//! Nothing here allocates per I/O: `BdevIo`s, buffers and slots are made at start and
//! recycled; histograms are fixed arrays.

use super::hist::LatHist;
use super::model::{JobSpec, VerifyKind};
use super::verify;
use super::workload::Generator;
use pollux_engine::bdev::{Bdev, BdevIo, IoCallback, IoKind};
use pollux_engine::dma::{DmaBuf, Iobuf};
use pollux_engine::thread::{IoChannel, PollStatus, Poller, Thread};
use pollux_nvme::fabrics::FabricQpair;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often bandwidth and IOPS are sampled (fio's default averaging window).
const SAMPLE_MS: u64 = 500;

/// Where a job's I/O goes (built on the control thread, moved to the job's thread).
pub enum Target {
    /// A bdev (null, malloc, uring).
    Bdev(Arc<Bdev>),
    /// An NVMe-oF I/O queue pair on namespace `nsid` of `lba`-byte blocks.
    Nvmf {
        /// The queue pair.
        q: Box<FabricQpair<Vec<u8>>>,
        /// Namespace.
        nsid: u32,
        /// Block size.
        lba: u32,
        /// Where commands past `io_timeout` go to be aborted: (queue ID, CID), to the
        /// thread holding the controller's admin queue.
        aborts: crossbeam::channel::Sender<(u16, u16)>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Bdev(b) => write!(f, "Bdev({})", b.name()),
            Target::Nvmf { nsid, .. } => write!(f, "Nvmf(ns {nsid})"),
        }
    }
}

/// Progress other threads may read (the status line).
#[derive(Debug, Default)]
pub struct Live {
    /// I/Os completed, per direction.
    pub ios: [AtomicU64; 2],
    /// Bytes completed, per direction.
    pub bytes: [AtomicU64; 2],
    /// 0 not started, 1 ramp, 2 running, 3 verifying, 4 done.
    pub phase: AtomicU8,
    /// Set to stop the job early (SIGINT).
    pub stop: AtomicBool,
}

/// A time-stamped log entry: (ms since start, value, ddir, bs, offset).
pub type LogEntry = (u64, u64, u8, u64, u64);

/// What a job measured, raw (merged per group by the caller).
#[derive(Debug, Default)]
pub struct JobRaw {
    /// Per direction (read, write): submission, completion, total latency.
    pub slat: [LatHist; 2],
    /// Completion latency.
    pub clat: [LatHist; 2],
    /// Total latency.
    pub lat: [LatHist; 2],
    /// I/Os and bytes per direction in the measured window.
    pub ios: [u64; 2],
    /// Bytes.
    pub bytes: [u64; 2],
    /// Measured runtime.
    pub runtime: Duration,
    /// Wall time including ramp and verify.
    pub elapsed: Duration,
    /// Bandwidth samples (KiB/s) per direction.
    pub bw_samples: [Vec<f64>; 2],
    /// IOPS samples per direction.
    pub iops_samples: [Vec<f64>; 2],
    /// Errors (I/O or verify), and the first one's text.
    pub errors: u32,
    /// The first error.
    pub first_error: Option<String>,
    /// Submissions seen at depth buckets 1,2,4,8,16,32,>=64.
    pub depth_hist: [u64; 7],
    /// Submit calls by batch size buckets 0,1-4,5-8,9-16,17-32,33-64,>64.
    pub submit_hist: [u64; 7],
    /// Completion reaps by batch size, same buckets.
    pub complete_hist: [u64; 7],
    /// CPU time of the job's thread (user, system) and context switches, faults.
    pub rusage: (Duration, Duration, u64, u64, u64),
    /// Latency log (total latency) entries, if asked for.
    pub lat_log: Vec<LogEntry>,
    /// Completion latency log.
    pub clat_log: Vec<LogEntry>,
    /// Submission latency log.
    pub slat_log: Vec<LogEntry>,
    /// IOPS log entries.
    pub iops_log: Vec<LogEntry>,
    /// IOPS over time (s, IOPS) for the plot, both directions.
    pub iops_curve: Vec<(f64, f64)>,
}

/// A job to start.
pub struct JobStart {
    /// Its spec.
    pub spec: JobSpec,
    /// Where its I/O goes.
    pub target: Target,
    /// Byte range it uses.
    pub region: (u64, u64),
    /// Random seed.
    pub seed: u64,
    /// Progress for the status line.
    pub live: Arc<Live>,
    /// The engine's buffer pools.
    pub iobuf: Arc<Iobuf>,
    /// Where the result goes.
    pub done: crossbeam::channel::Sender<JobRaw>,
    /// Its number among all the run's jobs (the state file's `<n>`).
    pub jobnum: usize,
}

impl std::fmt::Debug for JobStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobStart")
            .field("name", &self.spec.name)
            .field("target", &self.target)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Delay,
    Ramp,
    Run,
    Verify,
    Drain,
    Done,
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    read: bool,
    offset: u64,
    len: u64,
    t0: u64,
    t_sub: u64,
    check: bool,
    /// The seed a verify read expects (the block's last write).
    expect: Option<u32>,
    live: bool,
    /// Submitted while measuring (ramp I/Os are not counted when they complete).
    counted: bool,
    /// A flush (`fsync`), not a read or a write.
    flush: bool,
    /// A write's seed.
    seed: u32,
}

enum Backend {
    Bdev {
        bdev: Arc<Bdev>,
        ch: IoChannel<Bdev>,
        bufs: IoChannel<Iobuf>,
        cb: IoCallback,
        // Boxed: a BdevIo moves in and out of the bdev layer as a Box.
        #[allow(clippy::vec_box)]
        ios: Vec<Box<BdevIo>>,
    },
    Nvmf {
        q: Box<FabricQpair<Vec<u8>>>,
        nsid: u32,
        lba: u32,
        free: Vec<Vec<u8>>,
        done: Vec<pollux_nvme::fabrics::Completion<Vec<u8>>>,
        aborts: crossbeam::channel::Sender<(u16, u16)>,
        /// When to look for commands past `io_timeout` next (ns of the job's clock).
        next_check: u64,
    },
}

struct Job {
    spec: JobSpec,
    workload: Generator,
    backend: Backend,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    inflight: u32,
    phase: Phase,
    base: Instant,
    start_ns: u64,
    ramp_end_ns: u64,
    run_start_ns: u64,
    run_end_ns: Option<u64>,
    io_limit: u64,
    issued_bytes: u64,
    region: (u64, u64),
    seed: u32,
    raw: JobRaw,
    live: Arc<Live>,
    done_tx: crossbeam::channel::Sender<JobRaw>,
    /// Blocks written (offset -> length, seed of the write), for the verify pass.
    written: BTreeMap<u64, (u64, u32)>,
    verify_list: Vec<(u64, (u64, u32))>,
    /// Writes issued: each write's seed differs, so a lost overwrite is caught.
    write_gen: u32,
    /// The seed of the last write submitted.
    last_seed: u32,
    /// The seed the next verify read expects.
    next_expect: Option<u32>,
    verify_pos: usize,
    backlog: u64,
    sample_next_ns: u64,
    sample_ios: [u64; 2],
    sample_bytes: [u64; 2],
    iops_log_next_ns: u64,
    iops_log_ios: [u64; 2],
    rate_issued: [u64; 2],
    reaped_since_fill: u32,
    /// Why a submission can never succeed (the job stops).
    refused: Option<String>,
    /// log_avg_msec windows of the latency logs: (sum of lat, clat, slat, count) per
    /// direction, and when the window ends.
    lat_win: [(u64, u64, u64, u64); 2],
    lat_win_end: u64,
    ru0: (Duration, Duration, u64, u64, u64),
    poller: Option<Poller>,
    jobnum: usize,
    /// Writes submitted since the last flush (`fsync`).
    writes_since_flush: u64,
    /// Writes acknowledged since the last flush was submitted (`verify_state_save`).
    unflushed: Vec<(u64, (u64, u32))>,
    /// Those the flush in flight makes durable.
    flushing: Vec<(u64, (u64, u32))>,
    /// Writes acknowledged before a completed flush: offset -> (length, seed).
    durable: BTreeMap<u64, (u64, u32)>,
}

fn bucket_depth(d: u32) -> usize {
    match d {
        0..=1 => 0,
        2..=3 => 1,
        4..=7 => 2,
        8..=15 => 3,
        16..=31 => 4,
        32..=63 => 5,
        _ => 6,
    }
}

fn bucket_batch(n: u32) -> usize {
    match n {
        0 => 0,
        1..=4 => 1,
        5..=8 => 2,
        9..=16 => 3,
        17..=32 => 4,
        33..=64 => 5,
        _ => 6,
    }
}

/// This thread's CPU times, context switches and faults (getrusage RUSAGE_THREAD).
pub fn thread_rusage() -> (Duration, Duration, u64, u64, u64) {
    // SAFETY: a zeroed rusage is a valid out-parameter; getrusage writes only it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        tv(ru.ru_utime),
        tv(ru.ru_stime),
        (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
        ru.ru_majflt as u64,
        ru.ru_minflt as u64,
    )
}

/// Starts a job on the calling thread (send it there in a message).
pub fn start(js: JobStart) {
    let thread = Thread::expect_current();
    let spec = js.spec;
    let depth = spec.iodepth.max(1) as usize;
    let max_bs = spec.bs_read.max().max(spec.bs_write.max()) as usize;
    let (start, len) = js.region;
    let backend = match js.target {
        Target::Bdev(bdev) => {
            let ch = match bdev.channel() {
                Ok(c) => c,
                Err(e) => {
                    let raw = JobRaw {
                        errors: 1,
                        first_error: Some(format!("cannot open {}: {e}", bdev.name())),
                        ..Default::default()
                    };
                    let _ = js.done.send(raw);
                    thread.exit();
                    return;
                }
            };
            let bufs = js.iobuf.channel().expect("the iobuf device opens");
            Backend::Bdev {
                bdev,
                ch,
                bufs,
                cb: Rc::new(|_| {}),
                ios: (0..depth).map(|_| BdevIo::new()).collect(),
            }
        }
        Target::Nvmf {
            q,
            nsid,
            lba,
            aborts,
        } => Backend::Nvmf {
            q,
            nsid,
            lba,
            free: (0..depth).map(|_| Vec::with_capacity(max_bs)).collect(),
            done: Vec::with_capacity(depth),
            aborts,
            next_check: 0,
        },
    };
    let base = Instant::now();
    let io_limit = spec.io_size.unwrap_or(len);
    let startdelay = spec.startdelay.as_nanos() as u64;
    let job = Rc::new({
        RefCell::new(Job {
            workload: Generator::new(&spec, start, len, js.seed),
            backend,
            slots: vec![Slot::default(); depth],
            free_slots: (0..depth as u32).rev().collect(),
            inflight: 0,
            phase: Phase::Delay,
            base,
            start_ns: startdelay,
            ramp_end_ns: startdelay + spec.ramp_time.as_nanos() as u64,
            run_start_ns: 0,
            run_end_ns: None,
            io_limit,
            issued_bytes: 0,
            region: js.region,
            seed: js.seed as u32,
            raw: JobRaw::default(),
            live: js.live,
            done_tx: js.done,
            written: BTreeMap::new(),
            verify_list: Vec::new(),
            write_gen: 0,
            last_seed: 0,
            next_expect: None,
            verify_pos: 0,
            backlog: 0,
            sample_next_ns: 0,
            sample_ios: [0; 2],
            sample_bytes: [0; 2],
            iops_log_next_ns: 0,
            iops_log_ios: [0; 2],
            rate_issued: [0; 2],
            reaped_since_fill: 0,
            refused: None,
            lat_win: [(0, 0, 0, 0); 2],
            lat_win_end: 0,
            ru0: thread_rusage(),
            poller: None,
            jobnum: js.jobnum,
            writes_since_flush: 0,
            unflushed: Vec::new(),
            flushing: Vec::new(),
            durable: BTreeMap::new(),
            spec,
        })
    });
    if job.borrow().spec.verify_state_load {
        let mut j = job.borrow_mut();
        let path = j.state_path();
        match read_state(&path, j.spec.verify) {
            Ok(w) => j.written = w,
            Err(why) => {
                let why = format!("verify_state_load: {}: {why}", path.display());
                j.error(why.clone());
                j.refused = Some(why);
            }
        }
    }
    {
        let mut j = job.borrow_mut();
        if let Backend::Bdev { cb, .. } = &mut j.backend {
            let w = Rc::downgrade(&job);
            *cb = Rc::new(move |io: Box<BdevIo>| {
                if let Some(j) = w.upgrade() {
                    let mut j = j.borrow_mut();
                    j.bdev_done(io);
                    j.fill();
                }
            });
        }
    }
    // The poller owns the job; dropping the poller (when the job is done) frees it.
    let j = job.clone();
    let p = thread.register_poller("perf_job", move || j.borrow_mut().poll());
    job.borrow_mut().poller = Some(p);
}

impl Job {
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn measuring(&self) -> bool {
        matches!(self.phase, Phase::Run | Phase::Verify | Phase::Drain)
    }

    fn poll(&mut self) -> PollStatus {
        let now = self.now();
        // Several transitions may be due at once (no start delay, no ramp).
        loop {
            let before = self.phase;
            self.advance(now);
            if self.phase == before {
                break;
            }
        }
        let mut busy = false;
        if let Backend::Nvmf { .. } = self.backend {
            busy |= self.nvmf_poll();
        }
        busy |= self.fill() > 0;
        self.sample(now);
        if self.phase == Phase::Done {
            self.finish();
        }
        PollStatus::from_busy(busy)
    }

    fn advance(&mut self, now: u64) {
        let stop = self.live.stop.load(Ordering::Relaxed) || self.refused.is_some();
        if stop && matches!(self.phase, Phase::Delay | Phase::Ramp) {
            // Stopped before measuring: nothing was counted.
            self.run_start_ns = now;
            self.end_run(now);
            self.phase = Phase::Drain;
            return;
        }
        match self.phase {
            Phase::Delay if now >= self.start_ns => {
                self.phase = Phase::Ramp;
                self.live.phase.store(1, Ordering::Relaxed);
            }
            Phase::Ramp if now >= self.ramp_end_ns => {
                // Measuring starts: what the ramp did is not counted.
                self.raw = JobRaw::default();
                self.run_start_ns = now;
                self.sample_next_ns = now + SAMPLE_MS * 1_000_000;
                self.iops_log_next_ns = now;
                self.sample_ios = [0; 2];
                self.sample_bytes = [0; 2];
                self.rate_issued = [0; 2];
                self.issued_bytes = 0;
                if let Some(r) = self.spec.runtime {
                    self.run_end_ns = Some(now + r.as_nanos() as u64);
                }
                self.phase = Phase::Run;
                self.live.phase.store(2, Ordering::Relaxed);
            }
            Phase::Run => {
                let time_up = self.run_end_ns.is_some_and(|e| now >= e);
                let bytes_done = self.spec.verify_only
                    || (!self.spec.time_based && self.issued_bytes >= self.io_limit);
                let fatal = self.spec.verify_fatal && self.raw.errors > 0;
                if stop || fatal {
                    self.end_run(now);
                    self.phase = Phase::Drain;
                } else if (time_up || bytes_done) && self.inflight == 0 {
                    // The run is over (fill issues nothing more); verify what it wrote.
                    self.end_run(now);
                    self.start_verify_or_drain();
                }
            }
            Phase::Verify => {
                let fatal = self.spec.verify_fatal && self.raw.errors > 0;
                if stop || fatal {
                    self.phase = Phase::Drain;
                } else if self.verify_pos >= self.verify_list.len() && self.inflight == 0 {
                    let over = self.run_end_ns.is_some_and(|e| now >= e)
                        || (!self.spec.time_based && self.issued_bytes >= self.io_limit);
                    if self.backlog > 0 && !over {
                        // A backlog verify pass inside the run: back to writing.
                        self.backlog = 0;
                        self.phase = Phase::Run;
                    } else {
                        self.phase = Phase::Drain;
                    }
                }
            }
            Phase::Drain if self.inflight == 0 => self.phase = Phase::Done,
            _ => {}
        }
    }

    fn end_run(&mut self, now: u64) {
        if self.run_end_ns.is_none_or(|e| e > now) {
            self.run_end_ns = Some(now);
        }
    }

    fn start_verify_or_drain(&mut self) {
        if self.spec.verify != VerifyKind::None && self.spec.do_verify && !self.written.is_empty() {
            self.verify_list = std::mem::take(&mut self.written).into_iter().collect();
            self.verify_pos = 0;
            self.phase = Phase::Verify;
            self.live.phase.store(3, Ordering::Relaxed);
        } else {
            self.phase = Phase::Drain;
        }
    }

    /// Submits until the queue is full or nothing may be issued; returns how many.
    fn fill(&mut self) -> u32 {
        let depth = self.spec.iodepth.max(1);
        // iodepth_batch_complete_min: reap at least this many before submitting again
        // (unless nothing is in flight); iodepth_batch_submit: submit in batches this big.
        let reap_min = self.spec.iodepth_batch_complete_min.clamp(1, depth);
        if self.inflight > 0 && self.reaped_since_fill < reap_min {
            return 0;
        }
        let batch = self.spec.iodepth_batch_submit.clamp(1, depth);
        if self.inflight > 0 && depth - self.inflight < batch {
            return 0;
        }
        self.reaped_since_fill = 0;
        let mut n = 0;
        while self.inflight < depth && !self.free_slots.is_empty() {
            let next = match self.phase {
                Phase::Run => {
                    if self.spec.verify_only {
                        break;
                    }
                    if !self.spec.time_based && self.issued_bytes >= self.io_limit {
                        break;
                    }
                    if self.spec.fsync > 0 && self.writes_since_flush >= self.spec.fsync {
                        // The flush covers every write before it: wait for them.
                        if self.inflight == 0 && self.submit_flush() {
                            self.writes_since_flush = 0;
                            n += 1;
                        }
                        break;
                    }
                    if self.run_end_ns.is_some_and(|e| self.now() >= e) {
                        break;
                    }
                    if self.spec.verify_backlog > 0
                        && self.backlog >= self.spec.verify_backlog
                        && self.spec.verify != VerifyKind::None
                    {
                        if self.inflight == 0 {
                            self.verify_list =
                                std::mem::take(&mut self.written).into_iter().collect();
                            self.verify_pos = 0;
                            self.phase = Phase::Verify;
                        }
                        break;
                    }
                    let read = self.workload.next_is_read();
                    let d = if read { 0 } else { 1 };
                    if !self.rate_ok(d) {
                        break;
                    }
                    let len = self.workload.next_bs(d).min(self.region.1);
                    let off = self.workload.next_offset(d, len);
                    // Plain reads are checked only when the job never writes (as fio):
                    // in a mixed job a read may find a block not yet written.
                    let check =
                        read && self.spec.verify != VerifyKind::None && !self.spec.rw.writes();
                    (read, off, len, check)
                }
                Phase::Ramp => {
                    let read = self.workload.next_is_read();
                    let d = if read { 0 } else { 1 };
                    let len = self.workload.next_bs(d).min(self.region.1);
                    (read, self.workload.next_offset(d, len), len, false)
                }
                Phase::Verify => {
                    let Some(&(off, (len, seed))) = self.verify_list.get(self.verify_pos) else {
                        break;
                    };
                    self.verify_pos += 1;
                    self.next_expect = Some(seed);
                    (true, off, len, true)
                }
                _ => break,
            };
            let (read, off, len, check) = next;
            if self.spec.verify != VerifyKind::None && self.overlaps_inflight(off, len) {
                // Two I/Os in flight on the same bytes finish in any order: what a
                // verify read would expect is undefined. Wait for the first.
                if self.phase == Phase::Verify {
                    self.verify_pos -= 1;
                }
                self.next_expect = None;
                break;
            }
            let verifying = self.phase == Phase::Verify;
            if !self.submit(read, off, len, check) {
                if verifying {
                    self.verify_pos -= 1;
                }
                break;
            }
            if self.phase == Phase::Run && !read {
                self.writes_since_flush += 1;
            }
            if self.phase == Phase::Run && !read && self.spec.verify != VerifyKind::None {
                // The newest write of each byte is what verify expects: blocks it
                // overlaps are forgotten (as fio's io_piece log does).
                self.forget_overlaps(off, len);
                self.written.insert(off, (len, self.last_seed));
                self.backlog += 1;
            }
            n += 1;
        }
        if n > 0 {
            self.raw.submit_hist[bucket_batch(n)] += 1;
        }
        n
    }

    fn overlaps_inflight(&self, off: u64, len: u64) -> bool {
        self.slots
            .iter()
            .any(|s| s.live && s.offset < off + len && off < s.offset + s.len)
    }

    fn forget_overlaps(&mut self, off: u64, len: u64) {
        let max = self.spec.bs_read.max().max(self.spec.bs_write.max());
        forget_overlaps(&mut self.written, off, len, max);
    }

    /// Submits a flush (`fsync`) in a slot of its own; false when refused for now.
    fn submit_flush(&mut self) -> bool {
        let Some(slot) = self.free_slots.pop() else {
            return false;
        };
        let ok = match &mut self.backend {
            Backend::Bdev { ch, cb, ios, .. } => {
                let mut io = ios.pop().expect("one BdevIo per slot");
                io.ctx = slot as u64;
                io.prepare(IoKind::Flush, 0, 0);
                match ch.submit(io, cb) {
                    Ok(()) => true,
                    Err(e) => {
                        ios.push(e.io);
                        false
                    }
                }
            }
            Backend::Nvmf { q, nsid, .. } => q.flush(*nsid, slot as u64).is_ok(),
        };
        if !ok {
            self.free_slots.push(slot);
            return false;
        }
        let now = self.now();
        self.slots[slot as usize] = Slot {
            t0: now,
            t_sub: now,
            live: true,
            flush: true,
            ..Slot::default()
        };
        self.flushing = std::mem::take(&mut self.unflushed);
        self.inflight += 1;
        true
    }

    /// `local-<name>-<n>-verify.state` in the working directory, as fio names it.
    fn state_path(&self) -> std::path::PathBuf {
        format!("local-{}-{}-verify.state", self.spec.name, self.jobnum).into()
    }

    /// Writes the durable writes to the state file (whole, or not at all).
    fn save_state(&mut self) {
        let path = self.state_path();
        let mut text = format!("{STATE_MAGIC}\nverify {:?}\n", self.spec.verify);
        for (off, (len, seed)) in &self.durable {
            text.push_str(&format!("{off} {len} {seed}\n"));
        }
        let tmp = path.with_extension("state.tmp");
        let r = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
        match r {
            Ok(()) => tracing::info!(
                "{}: {} durable writes saved to {}",
                self.spec.name,
                self.durable.len(),
                path.display()
            ),
            Err(e) => self.error(format!("verify_state_save: {}: {e}", path.display())),
        }
    }

    fn rate_ok(&mut self, d: usize) -> bool {
        let rate = if d == 0 {
            self.spec.rate_iops_read
        } else {
            self.spec.rate_iops_write
        };
        if rate == 0 {
            return true;
        }
        let elapsed = self.now().saturating_sub(self.run_start_ns) as f64 / 1e9;
        let allowed = (elapsed * rate as f64) as u64 + 1;
        if self.rate_issued[d] >= allowed {
            return false;
        }
        self.rate_issued[d] += 1;
        true
    }

    /// Submits one I/O; false when the backend refused it for now.
    fn submit(&mut self, read: bool, off: u64, len: u64, check: bool) -> bool {
        let slot = self.free_slots.pop().expect("checked by the caller");
        let t0 = self.now();
        let vk = self.spec.verify;
        let write_fill = !read && vk != VerifyKind::None;
        let seed = if write_fill {
            self.write_gen = self.write_gen.wrapping_add(1);
            self.seed ^ self.write_gen.wrapping_mul(0x9e37_79b9)
        } else {
            self.seed
        };
        self.last_seed = seed;
        let expect = self.next_expect.take();
        let mut refused: Option<String> = None;
        let ok = match &mut self.backend {
            Backend::Bdev {
                bdev,
                ch,
                bufs,
                cb,
                ios,
            } => {
                let mut io = ios.pop().expect("one BdevIo per slot");
                let bs = bdev.block_size() as u64;
                let large = bufs.device().large_bufsize() as u64;
                let segs = pollux_engine::bdev::SGL_SEGMENTS_MAX;
                let mut ok = false;
                if len > large * segs as u64 {
                    refused = Some(format!(
                        "{len} bytes need more than {segs} buffers of {large} bytes"
                    ));
                } else if let Some(sgl) =
                    bufs.get_sgl::<{ pollux_engine::bdev::SGL_SEGMENTS_MAX }>(len as usize)
                {
                    for b in sgl {
                        let _ = io.push_buf(b);
                    }
                    ok = true;
                }
                if !ok {
                    io.clear_bufs();
                    ios.push(io);
                    false
                } else {
                    if write_fill {
                        fill_bufs(io.bufs_mut(), off, seed, vk, &self.spec.verify_pattern);
                    }
                    io.ctx = slot as u64;
                    io.prepare(
                        if read { IoKind::Read } else { IoKind::Write },
                        off / bs,
                        len / bs,
                    );
                    match ch.submit(io, cb) {
                        Ok(()) => true,
                        Err(e) => {
                            if e.status != pollux_engine::bdev::IoStatus::NoMemory {
                                refused = Some(format!(
                                    "{} refused a {} of {len} bytes at offset {off}: {:?}",
                                    bdev.name(),
                                    if read { "read" } else { "write" },
                                    e.status
                                ));
                            }
                            let mut io = e.io;
                            io.clear_bufs();
                            ios.push(io);
                            false
                        }
                    }
                }
            }
            Backend::Nvmf {
                q, nsid, lba, free, ..
            } => {
                let mut buf = free.pop().expect("one buffer per slot");
                buf.resize(len as usize, 0);
                if write_fill {
                    verify::fill(&mut buf, off, seed, vk, &self.spec.verify_pattern);
                }
                let lba = *lba as u64;
                let nlb = (len / lba) as u32;
                let r = if read {
                    q.read(*nsid, off / lba, nlb, buf, slot as u64)
                } else {
                    q.write(*nsid, off / lba, nlb, buf, slot as u64)
                };
                match r {
                    Ok(()) => true,
                    Err(e) => {
                        if !matches!(e, pollux_nvme::fabrics::SubmitError::QueueFull(_)) {
                            refused = Some(format!(
                                "the queue pair refused a {} of {len} bytes at offset {off}: {e}",
                                if read { "read" } else { "write" }
                            ));
                        }
                        if let Some(b) = e.into_buf() {
                            free.push(b);
                        }
                        false
                    }
                }
            }
        };
        if !ok {
            self.free_slots.push(slot);
            if let Some(why) = refused {
                // Never going to work: an error, and the job stops.
                self.error(why.clone());
                self.refused = Some(why);
            }
            return false;
        }
        let t_sub = self.now();
        self.slots[slot as usize] = Slot {
            read,
            offset: off,
            len,
            t0,
            t_sub,
            check,
            expect,
            live: true,
            counted: self.measuring(),
            flush: false,
            seed,
        };
        self.raw.depth_hist[bucket_depth(self.inflight + 1)] += 1;
        self.inflight += 1;
        if matches!(self.phase, Phase::Run) {
            self.issued_bytes += len;
        }
        true
    }

    fn bdev_done(&mut self, mut io: Box<BdevIo>) {
        let slot = io.ctx as u32;
        let ok = io.status().is_success();
        let s = self.slots[slot as usize];
        let verr = if ok && s.check {
            let mut err = None;
            if let Backend::Bdev { .. } = self.backend {
                let mut whole;
                let data: &[u8] = if io.bufs().len() == 1 {
                    io.bufs()[0].as_slice()
                } else {
                    whole = Vec::with_capacity(s.len as usize);
                    for b in io.bufs() {
                        whole.extend_from_slice(b.as_slice());
                    }
                    &whole
                };
                err = verify::check(
                    data,
                    s.offset,
                    self.spec.verify,
                    &self.spec.verify_pattern,
                    s.expect,
                )
                .err()
                .map(|e| e.0);
            }
            err
        } else {
            None
        };
        io.clear_bufs();
        if let Backend::Bdev { ios, .. } = &mut self.backend {
            ios.push(io);
        }
        let err = if ok {
            verr
        } else {
            Some(format!(
                "I/O error on {} of {} bytes at offset {}",
                if s.read { "read" } else { "write" },
                s.len,
                s.offset
            ))
        };
        self.completed(slot, err);
        self.raw.complete_hist[bucket_batch(1)] += 1;
    }

    fn nvmf_poll(&mut self) -> bool {
        if let (Some(t), Backend::Nvmf { .. }) = (self.spec.io_timeout, &self.backend) {
            let now = self.now();
            if let Backend::Nvmf {
                q,
                aborts,
                next_check,
                ..
            } = &mut self.backend
            {
                // Every 10 ms: a command is timed from the first look that finds it.
                if now >= *next_check {
                    *next_check = now + 10_000_000;
                    let qid = q.qid();
                    q.overdue(t, |cid, _| {
                        tracing::warn!(
                            "{}: I/O timeout: command {cid:#x} on queue {qid} outstanding for {t:?}; aborting it",
                            self.spec.name
                        );
                        let _ = aborts.send((qid, cid));
                    });
                }
            }
        }
        let (mut done, res) = match &mut self.backend {
            Backend::Nvmf { q, done, .. } => {
                let mut d = std::mem::take(done);
                let r = q.poll(0, |c| d.push(c));
                (d, r)
            }
            Backend::Bdev { .. } => return false,
        };
        if let Err(e) = res {
            self.error(format!("NVMe-oF queue pair failed: {e}"));
            // The queue pair is dead: hand every buffer back and stop.
            if let Backend::Nvmf { q, .. } = &mut self.backend {
                q.drain_failed(|c| done.push(c));
            }
            self.live.stop.store(true, Ordering::Relaxed);
        }
        let n = done.len() as u32;
        for c in done.drain(..) {
            let slot = c.tag as u32;
            let s = self.slots[slot as usize];
            let ok = c.cqe.status().is_success();
            let buf = c.buf;
            let err = if !ok {
                Some(format!(
                    "{} of {} bytes at offset {} failed: {}",
                    if s.read { "read" } else { "write" },
                    s.len,
                    s.offset,
                    pollux_nvme::fabrics::describe(c.cqe.status())
                ))
            } else if s.check {
                buf.as_ref().and_then(|b| {
                    verify::check(
                        b,
                        s.offset,
                        self.spec.verify,
                        &self.spec.verify_pattern,
                        s.expect,
                    )
                    .err()
                    .map(|e| e.0)
                })
            } else {
                None
            };
            if let (Some(b), Backend::Nvmf { free, .. }) = (buf, &mut self.backend) {
                free.push(b);
            }
            self.completed(slot, err);
        }
        if n > 0 {
            self.raw.complete_hist[bucket_batch(n)] += 1;
        }
        if let Backend::Nvmf { done: d, .. } = &mut self.backend {
            *d = done;
        }
        n > 0
    }

    fn error(&mut self, e: String) {
        if self.raw.first_error.is_none() {
            tracing::error!("{}: {e}", self.spec.name);
            self.raw.first_error = Some(e);
        }
        self.raw.errors += 1;
    }

    fn completed(&mut self, slot: u32, err: Option<String>) {
        let now = self.now();
        let s = self.slots[slot as usize];
        debug_assert!(s.live);
        self.slots[slot as usize].live = false;
        self.free_slots.push(slot);
        self.inflight -= 1;
        self.reaped_since_fill += 1;
        if s.flush {
            let covered = std::mem::take(&mut self.flushing);
            if err.is_none() {
                for (off, (len, seed)) in covered {
                    let max = self.spec.bs_write.max();
                    forget_overlaps(&mut self.durable, off, len, max);
                    self.durable.insert(off, (len, seed));
                }
            }
        } else if !s.read && err.is_none() && self.spec.verify_state_save {
            self.unflushed.push((s.offset, (s.len, s.seed)));
        }
        if let Some(e) = err {
            self.error(e);
        }
        if !self.measuring() || !s.counted {
            return;
        }
        let d = if s.read { 0 } else { 1 };
        let (slat, clat, lat) = (s.t_sub - s.t0, now - s.t_sub, now - s.t0);
        self.raw.slat[d].add(slat);
        self.raw.clat[d].add(clat);
        self.raw.lat[d].add(lat);
        self.raw.ios[d] += 1;
        self.raw.bytes[d] += s.len;
        self.sample_ios[d] += 1;
        self.sample_bytes[d] += s.len;
        self.iops_log_ios[d] += 1;
        self.live.ios[d].fetch_add(1, Ordering::Relaxed);
        self.live.bytes[d].fetch_add(s.len, Ordering::Relaxed);
        let t_ms = (now - self.run_start_ns) / 1_000_000;
        if self.spec.write_lat_log.is_some() {
            let avg = self.spec.log_avg_msec * 1_000_000;
            if avg == 0 {
                let e = |v| (t_ms, v, d as u8, s.len, s.offset);
                self.raw.lat_log.push(e(lat));
                self.raw.clat_log.push(e(clat));
                self.raw.slat_log.push(e(slat));
            } else {
                // fio's log_avg_msec: one averaged entry per window and direction.
                if now >= self.lat_win_end {
                    self.flush_lat_window(now);
                    self.lat_win_end = now + avg;
                }
                let w = &mut self.lat_win[d];
                *w = (w.0 + lat, w.1 + clat, w.2 + slat, w.3 + 1);
            }
        }
    }

    fn flush_lat_window(&mut self, now: u64) {
        let t_ms = now.saturating_sub(self.run_start_ns) / 1_000_000;
        for d in 0..2 {
            let (l, c, sl, n) = self.lat_win[d];
            if let (Some(l), Some(c), Some(sl)) =
                (l.checked_div(n), c.checked_div(n), sl.checked_div(n))
            {
                self.raw.lat_log.push((t_ms, l, d as u8, 0, 0));
                self.raw.clat_log.push((t_ms, c, d as u8, 0, 0));
                self.raw.slat_log.push((t_ms, sl, d as u8, 0, 0));
            }
        }
        self.lat_win = [(0, 0, 0, 0); 2];
    }

    fn sample(&mut self, now: u64) {
        if !self.measuring() {
            return;
        }
        if self.spec.write_iops_log.is_some() && now >= self.iops_log_next_ns {
            // One entry per log_avg_msec (default 500 ms) and direction.
            let win_ms = if self.spec.log_avg_msec > 0 {
                self.spec.log_avg_msec
            } else {
                SAMPLE_MS
            };
            if self.iops_log_next_ns > self.run_start_ns {
                let t_ms = (now - self.run_start_ns) / 1_000_000;
                for d in 0..2 {
                    if self.iops_log_ios[d] > 0 {
                        let iops = self.iops_log_ios[d] * 1000 / win_ms;
                        self.raw.iops_log.push((t_ms, iops, d as u8, 0, 0));
                    }
                }
            }
            self.iops_log_ios = [0; 2];
            self.iops_log_next_ns = now + win_ms * 1_000_000;
        }
        if now < self.sample_next_ns {
            return;
        }
        let win = SAMPLE_MS as f64 / 1000.0;
        let t = (now - self.run_start_ns) as f64 / 1e9;
        let mut total = 0.0;
        for d in 0..2 {
            let iops = self.sample_ios[d] as f64 / win;
            total += iops;
            if self.sample_ios[d] > 0 || self.spec.rw.reads() == (d == 0) {
                self.raw.iops_samples[d].push(iops);
                self.raw.bw_samples[d].push(self.sample_bytes[d] as f64 / 1024.0 / win);
            }
        }
        self.raw.iops_curve.push((t, total));
        self.sample_ios = [0; 2];
        self.sample_bytes = [0; 2];
        self.sample_next_ns += SAMPLE_MS * 1_000_000;
    }

    fn finish(&mut self) {
        if self.spec.verify_state_save {
            self.save_state();
        }
        let now = self.now();
        if self.spec.log_avg_msec > 0 && self.spec.write_lat_log.is_some() {
            self.flush_lat_window(now);
        }
        let end = self.run_end_ns.unwrap_or(now).min(now);
        self.raw.runtime = Duration::from_nanos(end.saturating_sub(self.run_start_ns));
        // Verify time counts as run time, as fio's does.
        if self.verify_pos > 0 {
            self.raw.runtime = Duration::from_nanos(now.saturating_sub(self.run_start_ns));
        }
        self.raw.elapsed = Duration::from_nanos(now);
        let ru = thread_rusage();
        self.raw.rusage = (
            ru.0.saturating_sub(self.ru0.0),
            ru.1.saturating_sub(self.ru0.1),
            ru.2.saturating_sub(self.ru0.2),
            ru.3.saturating_sub(self.ru0.3),
            ru.4.saturating_sub(self.ru0.4),
        );
        self.live.phase.store(4, Ordering::Relaxed);
        let raw = std::mem::take(&mut self.raw);
        let _ = self.done_tx.send(raw);
        // Stop polling; the job's memory goes with its last reference.
        self.poller.take();
        if let Backend::Bdev { cb, .. } = &mut self.backend {
            *cb = Rc::new(|_| {});
        }
        self.phase = Phase::Done;
        // The job's thread goes once its poller and channels are released.
        Thread::expect_current().exit();
    }
}

/// The first line of a verify state file.
const STATE_MAGIC: &str = "pollux-perf verify state 1";

/// Forgets the blocks of `map` (offset -> (length, seed)) that overlap `off..off+len`;
/// no block is longer than `max`.
fn forget_overlaps(map: &mut BTreeMap<u64, (u64, u32)>, off: u64, len: u64, max: u64) {
    let end = off + len;
    let from = off.saturating_sub(max);
    let hit: Vec<u64> = map
        .range(from..end)
        .filter(|(o, (l, _))| **o + *l > off)
        .map(|(o, _)| *o)
        .collect();
    for o in hit {
        map.remove(&o);
    }
}

/// Reads a verify state file written with `verify`.
fn read_state(
    path: &std::path::Path,
    verify: VerifyKind,
) -> Result<BTreeMap<u64, (u64, u32)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut lines = text.lines();
    if lines.next() != Some(STATE_MAGIC) {
        return Err(format!(
            "not a verify state file (no \"{STATE_MAGIC}\" line)"
        ));
    }
    let want = format!("verify {verify:?}");
    match lines.next() {
        Some(l) if l == want => {}
        other => {
            return Err(format!(
                "saved with {:?}, loaded with {want:?}",
                other.unwrap_or("")
            ));
        }
    }
    let mut out = BTreeMap::new();
    for (i, l) in lines.enumerate() {
        let f: Vec<u64> = l
            .split(' ')
            .map(|x| x.parse::<u64>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("line {}: {e}", i + 3))?;
        let [off, len, seed] = f[..] else {
            return Err(format!("line {}: three numbers expected", i + 3));
        };
        let seed = u32::try_from(seed).map_err(|e| format!("line {}: {e}", i + 3))?;
        out.insert(off, (len, seed));
    }
    Ok(out)
}

fn fill_bufs(bufs: &mut [DmaBuf], off: u64, seed: u32, kind: VerifyKind, pattern: &[u8]) {
    if bufs.len() == 1 {
        verify::fill(bufs[0].as_mut_slice(), off, seed, kind, pattern);
        return;
    }
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut whole = vec![0u8; total];
    verify::fill(&mut whole, off, seed, kind, pattern);
    let mut at = 0;
    for b in bufs {
        let n = b.len();
        b.as_mut_slice().copy_from_slice(&whole[at..at + n]);
        at += n;
    }
}
