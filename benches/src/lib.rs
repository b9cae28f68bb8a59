//! Helpers shared by the benchmarks: a queue-depth load loop on a reactor, CPU time, and
//! fio as a peer measured in the same run.

use pollux_engine::bdev::{Bdev, BdevIo, IoCallback, IoKind};
use pollux_engine::dma::Iobuf;
use pollux_engine::thread::{PollStatus, Poller, Thread, ThreadHandle};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a load run measured.
#[derive(Clone, Copy, Debug)]
pub struct LoadResult {
    /// I/Os completed in the measured window.
    pub ios: u64,
    /// The window.
    pub elapsed: Duration,
    /// Failed I/Os.
    pub errors: u64,
}

impl LoadResult {
    /// I/Os per second.
    pub fn iops(&self) -> f64 {
        self.ios as f64 / self.elapsed.as_secs_f64()
    }
}

/// A queue-depth load: `qd` I/Os of `bs` bytes at random offsets, kept in flight for
/// `warmup + duration`, completions counted in the last `duration`.
#[derive(Clone, Copy, Debug)]
pub struct LoadSpec {
    /// Random reads or random writes.
    pub kind: IoKind,
    /// I/Os in flight.
    pub qd: usize,
    /// Bytes per I/O.
    pub bs: usize,
    /// Time before counting starts.
    pub warmup: Duration,
    /// Time counted.
    pub duration: Duration,
}

/// Runs `spec` on `bdev` from `thread`.
pub fn random_load(
    thread: &ThreadHandle,
    bdev: &Arc<Bdev>,
    iobuf: &Arc<Iobuf>,
    spec: LoadSpec,
) -> LoadResult {
    let LoadSpec {
        kind,
        qd,
        bs,
        warmup,
        duration,
    } = spec;
    let (tx, rx) = crossbeam::channel::bounded(1);
    let (bdev, iobuf) = (bdev.clone(), iobuf.clone());
    thread
        .send_msg(move || {
            let ch = bdev.channel().unwrap();
            let bufs = iobuf.channel().unwrap();
            let per_io = (bs / bdev.block_size() as usize) as u64;
            let slots = bdev.num_blocks() / per_io;
            let state = Rc::new(LoadState {
                rng: Cell::new(0x9e37_79b9_7f4a_7c15),
                counted: Cell::new(0),
                errors: Cell::new(0),
                stop: Cell::new(false),
                inflight: Cell::new(0),
                counting: Cell::new(false),
            });
            let cb_slot: Rc<RefCell<Option<IoCallback>>> = Rc::new(RefCell::new(None));
            let (st, slot, ch2) = (state.clone(), cb_slot.clone(), ch.clone());
            let cb: IoCallback = Rc::new(move |mut io: Box<BdevIo>| {
                if st.counting.get() {
                    st.counted.set(st.counted.get() + 1);
                }
                if !io.status().is_success() {
                    st.errors.set(st.errors.get() + 1);
                }
                if st.stop.get() {
                    st.inflight.set(st.inflight.get() - 1);
                    return;
                }
                io.prepare(kind, st.next(slots) * per_io, per_io);
                let me = slot.borrow().clone().unwrap();
                if ch2.submit(io, &me).is_err() {
                    st.inflight.set(st.inflight.get() - 1);
                }
            });
            *cb_slot.borrow_mut() = Some(cb.clone());
            for _ in 0..qd {
                let mut io = BdevIo::new();
                io.push_buf(bufs.get(bs).expect("a buffer per slot"))
                    .unwrap();
                io.prepare(kind, state.next(slots) * per_io, per_io);
                state.inflight.set(state.inflight.get() + 1);
                ch.submit(io, &cb).unwrap();
            }
            // A timed poller runs the clock: warm-up, measure, stop, report.
            let t0 = Instant::now();
            let begin: Cell<Option<Instant>> = Cell::new(None);
            let result: Cell<Option<LoadResult>> = Cell::new(None);
            let poller_slot: Rc<RefCell<Option<Poller>>> = Rc::new(RefCell::new(None));
            let ps = poller_slot.clone();
            let p = Thread::current().unwrap().register_timed_poller(
                "load_clock",
                Duration::from_millis(1),
                move || {
                    let now = Instant::now();
                    if begin.get().is_none() && now - t0 >= warmup {
                        begin.set(Some(now));
                        state.counting.set(true);
                    }
                    if let Some(b) = begin.get() {
                        if result.get().is_none() && now - b >= duration {
                            state.counting.set(false);
                            state.stop.set(true);
                            result.set(Some(LoadResult {
                                ios: state.counted.get(),
                                elapsed: now - b,
                                errors: state.errors.get(),
                            }));
                        }
                    }
                    if let Some(r) = result.get() {
                        if state.inflight.get() == 0 {
                            cb_slot.borrow_mut().take();
                            let _ = tx.send(r);
                            ps.borrow_mut().take();
                        }
                    }
                    PollStatus::Idle
                },
            );
            *poller_slot.borrow_mut() = Some(p);
        })
        .unwrap();
    rx.recv().unwrap()
}

struct LoadState {
    rng: Cell<u64>,
    counted: Cell<u64>,
    errors: Cell<u64>,
    stop: Cell<bool>,
    inflight: Cell<usize>,
    counting: Cell<bool>,
}

impl LoadState {
    fn next(&self, n: u64) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x % n
    }
}

/// User plus system CPU time of this process.
pub fn process_cpu_time() -> Duration {
    // SAFETY: rusage is plain data; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs fio with `args` and JSON output; returns the first job's read and write IOPS.
pub fn fio_iops(args: &[String]) -> Result<(f64, f64), String> {
    let out = std::process::Command::new("fio")
        .args(args)
        .arg("--output-format=json")
        .output()
        .map_err(|e| format!("cannot run fio ({e}); install it: apt-get install -y fio"))?;
    if !out.status.success() {
        return Err(format!(
            "fio failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("fio's JSON does not parse: {e}"))?;
    let job = &v["jobs"][0];
    Ok((
        job["read"]["iops"].as_f64().unwrap_or(0.0),
        job["write"]["iops"].as_f64().unwrap_or(0.0),
    ))
}

/// fio's options for a timed random-I/O job pinned to `core`: `specific` (engine, file,
/// pattern) followed by what every comparison here shares (no random map, a fresh
/// random sequence, `ramp_s` of ramp, `secs` measured, one thread).
pub fn fio_timed_job(specific: Vec<String>, core: usize, ramp_s: u64, secs: u64) -> Vec<String> {
    let mut args = specific;
    args.extend([
        "--norandommap".to_owned(),
        "--randrepeat=0".to_owned(),
        "--time_based".to_owned(),
        format!("--ramp_time={ramp_s}"),
        format!("--runtime={secs}"),
        format!("--cpus_allowed={core}"),
        "--thread".to_owned(),
    ]);
    args
}

/// Seconds per measured side, from POLLUX_BENCH_SECS.
pub fn bench_secs(default: u64) -> u64 {
    std::env::var("POLLUX_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
