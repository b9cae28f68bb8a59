//! Running a [`RunSpec`]: reactors on the jobs' cores, one lightweight thread per job
//! clone, reporting groups one after another (`stonewall`), the status line on a
//! terminal, then fio's reports, logs and plot.

use super::hist::LatHist;
use super::job::{self, JobRaw, Live, Target};
use super::model::{DirResult, IoEngine, JobResult, JobSpec, OutputFormat, RunSpec};
use super::report;
use pollux_engine::bdev::{Bdev, malloc, null, uring};
use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use pollux_nvme::fabrics::{AdminQueue, FabricOptions, FabricQpair, Transport};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set by SIGINT: jobs stop early and the report is still printed (as fio does).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// A job clone ready to run.
#[derive(Debug)]
struct Clone_ {
    spec: JobSpec,
    groupid: u32,
    jobnum: usize,
    core: usize,
}

/// An NVMe-oF transport ID (SPDK's string form): `trtype:tcp|rdma adrfam:ipv4
/// traddr:127.0.0.1 trsvcid:4420 subnqn:nqn... [hostnqn:...] [ns:1]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportId {
    /// TCP or RDMA.
    pub transport: Transport,
    /// Address and port.
    pub addr: std::net::SocketAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN, if given.
    pub hostnqn: Option<String>,
    /// Namespace ID (default 1).
    pub nsid: u32,
}

impl TransportId {
    /// Parses SPDK's transport ID string.
    pub fn parse(s: &str) -> Result<TransportId, String> {
        let mut kv = BTreeMap::new();
        for part in s.split_whitespace() {
            let (k, v) = part
                .split_once(':')
                .or_else(|| part.split_once('='))
                .ok_or_else(|| format!("target: {part:?} is not key:value"))?;
            kv.insert(k.to_ascii_lowercase(), v.to_owned());
        }
        let trtype = kv.remove("trtype").unwrap_or_else(|| "tcp".into());
        let transport = if trtype.eq_ignore_ascii_case("tcp") {
            Transport::Tcp
        } else if trtype.eq_ignore_ascii_case("rdma") {
            Transport::Rdma
        } else {
            return Err(format!(
                "target: trtype {trtype} is not NVMe-oF (tcp or rdma; PCIe is ioengine=nvme)"
            ));
        };
        let traddr = kv
            .remove("traddr")
            .ok_or("target: traddr is missing (e.g. traddr:127.0.0.1)")?;
        let port = kv.remove("trsvcid").unwrap_or_else(|| "4420".into());
        let subnqn = kv
            .remove("subnqn")
            .ok_or("target: subnqn is missing (the subsystem's NQN)")?;
        let nsid = match kv.remove("ns").or_else(|| kv.remove("nsid")) {
            Some(n) => n
                .parse()
                .map_err(|_| format!("target: ns {n:?} is not a number"))?,
            None => 1,
        };
        let hostnqn = kv.remove("hostnqn");
        kv.remove("adrfam");
        if let Some(k) = kv.keys().next() {
            return Err(format!("target: unknown key {k:?}"));
        }
        let ip = traddr.trim_start_matches('[').trim_end_matches(']');
        let addr = format!(
            "{}:{port}",
            if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.into()
            }
        )
        .parse()
        .map_err(|_| format!("target: {traddr} port {port} is not an address"))?;
        Ok(TransportId {
            transport,
            addr,
            subnqn,
            hostnqn,
            nsid,
        })
    }
}

fn cores_of(spec: &RunSpec) -> Vec<usize> {
    let all: Vec<usize> =
        (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    let mut want: Vec<usize> = spec
        .jobs
        .iter()
        .filter_map(|j| j.cpus_allowed.clone())
        .flatten()
        .collect();
    want.sort_unstable();
    want.dedup();
    if want.is_empty() { all } else { want }
}

/// Runs everything; writes the reports; returns the process exit code (non-zero when a
/// job saw an error, as fio).
pub fn run(spec: &RunSpec) -> Result<i32, String> {
    // SAFETY: installing an async-signal-safe handler that only stores to an atomic.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let cores = match &spec.core_mask {
        Some(m) => pollux_engine::reactor::parse_core_mask(m).map_err(|e| e.to_string())?,
        None => cores_of(spec),
    };
    let mask = format!(
        "[{}]",
        cores
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let max_depth_bytes: u64 = spec
        .jobs
        .iter()
        .map(|j| j.iodepth as u64 * j.bs_read.max().max(j.bs_write.max()) * j.numjobs as u64)
        .sum();
    // Enough large buffers for every job's queue (SPDK's defaults hold 128 MiB).
    let mut iobuf = IobufOpts::default();
    let large_needed = (max_depth_bytes / iobuf.large_bufsize as u64 + 64) as usize;
    iobuf.large_pool_count = iobuf.large_pool_count.max(large_needed.min(1 << 16));
    let engine = Engine::builder()
        .core_mask(&mask)
        .sleep_after_idle(None)
        .iobuf(iobuf)
        .start()
        .map_err(|e| format!("cannot start reactors on {mask}: {e}"))?;
    let result = run_on(&engine, spec, &cores);
    engine.shutdown();
    pollux_engine::bdev::nvme::shutdown_all();
    result
}

struct Nvmf {
    admin: AdminQueue,
    next_qid: u16,
    lba: u32,
    ns_bytes: u64,
    /// Commands of its queues past `io_timeout`, to abort: (queue ID, CID).
    aborts: (AbortTx, crossbeam::channel::Receiver<(u16, u16)>),
}

/// Where a job sends its commands past `io_timeout`: (queue ID, CID).
type AbortTx = crossbeam::channel::Sender<(u16, u16)>;

fn run_on(engine: &Engine, spec: &RunSpec, cores: &[usize]) -> Result<i32, String> {
    // Expand numjobs and groups.
    let mut clones = Vec::new();
    let mut group = 0u32;
    let mut rr = 0usize;
    for (i, j) in spec.jobs.iter().enumerate() {
        if i > 0 && j.new_group {
            group += 1;
        }
        for _ in 0..j.numjobs.max(1) {
            let allowed = j.cpus_allowed.clone().unwrap_or_else(|| cores.to_vec());
            let core = allowed[rr % allowed.len()];
            rr += 1;
            clones.push(Clone_ {
                spec: j.clone(),
                groupid: group,
                jobnum: clones.len(),
                core,
            });
        }
    }
    let normal = spec.formats.is_empty() || spec.formats.contains(&OutputFormat::Normal);
    let mut out: Box<dyn Write> = match &spec.output {
        Some(p) => Box::new(
            std::fs::File::create(p).map_err(|e| format!("cannot create output {p}: {e}"))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    // NVMe-oF controllers, one per target string, with a queue pair per clone.
    let mut nvmf: BTreeMap<String, Nvmf> = BTreeMap::new();
    for c in &clones {
        if c.spec.ioengine != IoEngine::Nvmf {
            continue;
        }
        let t = c
            .spec
            .target
            .clone()
            .ok_or("ioengine=nvmf needs --target")?;
        if nvmf.contains_key(&t) {
            continue;
        }
        let tid = TransportId::parse(&t)?;
        let users = clones
            .iter()
            .filter(|x| x.spec.target.as_deref() == Some(&t))
            .count() as u16;
        let mut o = match tid.transport {
            Transport::Tcp => FabricOptions::new(tid.addr, &tid.subnqn),
            Transport::Rdma => FabricOptions::rdma(tid.addr, &tid.subnqn),
        };
        if let Some(h) = &tid.hostnqn {
            o.hostnqn = h.clone();
        }
        o.io_queues = users;
        let mut admin = AdminQueue::connect(&o).map_err(|e| format!("{t}: {e}"))?;
        let ns = admin
            .identify_namespace(tid.nsid)
            .map_err(|e| format!("{t}: Identify Namespace {}: {e}", tid.nsid))?;
        if ns.nsze.get() == 0 {
            return Err(format!("{t}: namespace {} is not active", tid.nsid));
        }
        let lba = ns.block_size() as u32;
        nvmf.insert(
            t,
            Nvmf {
                admin,
                next_qid: 1,
                lba,
                ns_bytes: ns.nsze.get() * lba as u64,
                aborts: crossbeam::channel::unbounded(),
            },
        );
    }
    let mut uring_bdevs: BTreeMap<String, Arc<Bdev>> = BTreeMap::new();
    let mut raws: Vec<(usize, JobRaw)> = Vec::new();
    let groups: Vec<u32> = {
        let mut g: Vec<u32> = clones.iter().map(|c| c.groupid).collect();
        g.dedup();
        g
    };
    if normal {
        let mut seen = std::collections::BTreeSet::new();
        for c in &clones {
            if seen.insert(c.spec.name.clone() + &c.groupid.to_string()) {
                let r = skeleton(&c.spec, c.groupid);
                let _ = writeln!(out, "{}", report::job_header(&r));
            }
        }
        let _ = writeln!(
            out,
            "pollux-perf-{}\nStarting {} thread{}",
            env!("CARGO_PKG_VERSION"),
            clones.len(),
            if clones.len() == 1 { "" } else { "s" }
        );
    }
    let tty = std::io::stderr().is_terminal();
    let status = match spec.eta.as_deref() {
        Some("always") => true,
        Some("never") => false,
        _ => tty,
    };
    for g in groups {
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
        let members: Vec<&Clone_> = clones.iter().filter(|c| c.groupid == g).collect();
        // Every target first: a setup error leaves no job of the group running.
        let mut targets = Vec::new();
        for c in &members {
            targets.push(make_target(engine, c, &mut nvmf, &mut uring_bdevs)?);
        }
        let mut targets = targets.into_iter();
        let (tx, rx) = crossbeam::channel::unbounded::<(usize, JobRaw)>();
        let mut lives = Vec::new();
        for c in &members {
            let (target, region) = targets.next().expect("one target per member");
            let live = Arc::new(Live::default());
            lives.push((c.jobnum, live.clone(), c.spec.clone()));
            let (jtx, jrx) = crossbeam::channel::bounded::<JobRaw>(1);
            let tx = tx.clone();
            let jobnum = c.jobnum;
            std::thread::spawn(move || {
                if let Ok(r) = jrx.recv() {
                    let _ = tx.send((jobnum, r));
                }
            });
            let js = job::JobStart {
                spec: c.spec.clone(),
                target,
                region,
                seed: if c.spec.randrepeat {
                    c.spec.randseed.unwrap_or(0x5eed) ^ (c.jobnum as u64) << 32
                } else {
                    c.spec.randseed.unwrap_or_else(|| {
                        Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64
                    }) ^ (c.jobnum as u64) << 32
                },
                live,
                iobuf: engine.iobuf().clone(),
                done: jtx,
                jobnum: c.jobnum,
            };
            let t = engine
                .spawn_thread(&format!("{}.{}", c.spec.name, c.jobnum), Some(c.core))
                .map_err(|e| e.to_string())?;
            t.send_msg(move || job::start(js))
                .map_err(|_| "a job thread is gone".to_string())?;
        }
        drop(tx);
        let started = Instant::now();
        let mut last_status = Instant::now();
        let mut last_ka = Instant::now();
        let mut got = 0;
        let mut prev = [0u64; 4];
        while got < members.len() {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => {
                    raws.push(r);
                    got += 1;
                }
                Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
            if INTERRUPTED.load(Ordering::Relaxed) {
                for (_, l, _) in &lives {
                    l.stop.store(true, Ordering::Relaxed);
                }
            }
            for (t, n) in nvmf.iter_mut() {
                while let Ok((qid, cid)) = n.aborts.1.try_recv() {
                    match n.admin.abort(qid, cid) {
                        Ok(true) => tracing::warn!("{t}: command {cid:#x} on queue {qid} aborted"),
                        Ok(false) => tracing::warn!(
                            "{t}: the target did not abort command {cid:#x} on queue {qid}: it runs on"
                        ),
                        Err(e) => {
                            tracing::warn!("{t}: Abort of command {cid:#x} on queue {qid}: {e}")
                        }
                    }
                }
            }
            if last_ka.elapsed() >= Duration::from_secs(1) {
                for (t, n) in nvmf.iter_mut() {
                    if let Err(e) = n.admin.keep_alive_if_due() {
                        tracing::warn!("{t}: keep alive: {e}");
                    }
                }
                last_ka = Instant::now();
            }
            if status && last_status.elapsed() >= Duration::from_secs(1) {
                let el = last_status.elapsed().as_secs_f64();
                last_status = Instant::now();
                let mut now = [0u64; 4];
                let mut states = String::new();
                let mut running = 0;
                for (_, l, s) in &lives {
                    for d in 0..2 {
                        now[d] += l.ios[d].load(Ordering::Relaxed);
                        now[2 + d] += l.bytes[d].load(Ordering::Relaxed);
                    }
                    let ph = l.phase.load(Ordering::Relaxed);
                    if ph < 4 {
                        running += 1;
                    }
                    states.push(match ph {
                        0 | 1 => '/',
                        2 => state_char(s),
                        3 => 'V',
                        _ => '_',
                    });
                }
                let rate = |i: usize| (now[i] - prev[i]) as f64 / el;
                let total = members
                    .iter()
                    .map(|c| {
                        (c.spec.startdelay + c.spec.ramp_time + c.spec.runtime.unwrap_or_default())
                            .as_secs_f64()
                    })
                    .fold(0.0, f64::max);
                let elapsed = started.elapsed().as_secs_f64();
                let pct = if total > 0.0 {
                    (elapsed / total * 100.0).min(99.9)
                } else {
                    0.0
                };
                let eta = (total - elapsed).max(0.0) as u64;
                let line = report::status_line(
                    running,
                    &states,
                    pct,
                    rate(2),
                    rate(3),
                    rate(0),
                    rate(1),
                    eta,
                );
                eprint!("\r{line}");
                let _ = std::io::stderr().flush();
                prev = now;
            }
        }
        if status {
            eprintln!();
        }
    }
    for (_, n) in std::mem::take(&mut nvmf) {
        let _ = n.admin.shutdown();
    }
    raws.sort_by_key(|r| r.0);
    let mut results = Vec::new();
    let mut errors = 0;
    // group_reporting merges the clones of each group into one result.
    let mut i = 0;
    while i < raws.len() {
        let c = &clones[raws[i].0];
        let mut j = i + 1;
        if c.spec.group_reporting {
            while j < raws.len() && clones[raws[j].0].groupid == c.groupid {
                j += 1;
            }
        }
        let merged = merge(raws[i..j].iter().map(|(_, r)| r));
        errors += merged.errors;
        write_logs(c, &merged)?;
        results.push((c, merged, j - i));
        i = j;
    }
    let job_results: Vec<JobResult> = results
        .iter()
        .map(|(c, r, members)| {
            let mut jr = to_result(&c.spec, c.groupid, r);
            jr.members = *members as u32;
            jr
        })
        .collect();
    let groups = report::groups(&job_results);
    for f in if spec.formats.is_empty() {
        vec![OutputFormat::Normal]
    } else {
        spec.formats.clone()
    } {
        let text = match f {
            OutputFormat::Normal => report::normal(&job_results, &groups),
            OutputFormat::Json | OutputFormat::JsonPlus => {
                report::json_text(&job_results, &groups, f == OutputFormat::JsonPlus)
            }
            OutputFormat::Terse => report::terse(&job_results),
        };
        out.write_all(text.as_bytes())
            .map_err(|e| format!("cannot write the report: {e}"))?;
    }
    if let Some(p) = &spec.plot {
        let curve: Vec<(f64, f64)> = results
            .iter()
            .flat_map(|(_, r, _)| r.iops_curve.iter().copied())
            .collect();
        let mut all = LatHist::new();
        for (_, r, _) in &results {
            for d in 0..2 {
                all.merge(&r.clat[d]);
            }
        }
        let title = results
            .first()
            .map(|(c, _, _)| c.spec.name.clone())
            .unwrap_or_default();
        let svg = report::plot_svg(
            &curve,
            &all.summary(&super::model::DEFAULT_PERCENTILES),
            &title,
        );
        std::fs::write(p, svg).map_err(|e| format!("cannot write the plot {p}: {e}"))?;
    }
    Ok(if errors > 0 { 1 } else { 0 })
}

fn state_char(s: &JobSpec) -> char {
    use super::model::RwMode::*;
    match s.rw {
        Read => 'R',
        Write => 'W',
        RandRead => 'r',
        RandWrite => 'w',
        ReadWrite => 'M',
        RandRw => 'm',
    }
}

fn make_target(
    engine: &Engine,
    c: &Clone_,
    nvmf: &mut BTreeMap<String, Nvmf>,
    uring_bdevs: &mut BTreeMap<String, Arc<Bdev>>,
) -> Result<(Target, (u64, u64)), String> {
    let s = &c.spec;
    let _ = engine;
    let min_bs = s.bs_read.min().min(s.bs_write.min());
    let bdev_bs = if min_bs % 4096 == 0 { 4096 } else { 512 };
    let region = |total: u64| -> Result<(u64, u64), String> {
        let len = s.size.unwrap_or(total.saturating_sub(s.offset));
        if s.offset + len > total {
            return Err(format!(
                "{}: offset {} + size {len} is beyond the end ({total} bytes)",
                s.name, s.offset
            ));
        }
        let max = s.bs_read.max().max(s.bs_write.max());
        if len < max {
            return Err(format!(
                "{}: the region ({len} bytes) is smaller than the block size ({max})",
                s.name
            ));
        }
        Ok((s.offset, len))
    };
    match s.ioengine {
        IoEngine::Null | IoEngine::Malloc => {
            let size = s.size.ok_or_else(|| {
                format!(
                    "{}: ioengine={} needs size (the in-memory device's size)",
                    s.name, s.ioengine_name
                )
            })? + s.offset;
            let name = format!("perf_{}_{}", s.ioengine_name, c.jobnum);
            let b = if s.ioengine == IoEngine::Null {
                null::create(null::NullOpts {
                    block_size: bdev_bs,
                    num_blocks: size / bdev_bs as u64,
                    ..null::NullOpts::new(&name, size)
                })
            } else {
                malloc::create(malloc::MallocOpts {
                    block_size: bdev_bs,
                    num_blocks: size / bdev_bs as u64,
                    ..malloc::MallocOpts::new(&name, size)
                })
            }
            .map_err(|e| format!("{}: {e}", s.name))?;
            let total = b.num_blocks() * b.block_size() as u64;
            Ok((Target::Bdev(b), region(total)?))
        }
        IoEngine::Uring => {
            let f = s.filename.clone().ok_or_else(|| {
                format!("{}: ioengine={} needs filename", s.name, s.ioengine_name)
            })?;
            let key = format!("{f}|{}|{}", min_bs % 4096 != 0, s.direct);
            if let Some(b) = uring_bdevs.get(&key) {
                let total = b.num_blocks() * b.block_size() as u64;
                return Ok((Target::Bdev(b.clone()), region(total)?));
            }
            let path = std::path::Path::new(&f);
            if !path.exists() {
                // As fio lays out a missing file: created at the job's size.
                let size = s.size.ok_or_else(|| {
                    format!(
                        "{}: {f} does not exist and no size was given to create it",
                        s.name
                    )
                })? + s.offset;
                let file = std::fs::File::create(path)
                    .map_err(|e| format!("{}: cannot create {f}: {e}", s.name))?;
                file.set_len(size)
                    .map_err(|e| format!("{}: cannot size {f}: {e}", s.name))?;
            } else if let (Some(size), Ok(m)) = (s.size, std::fs::metadata(path)) {
                if m.is_file() && m.len() < size + s.offset {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(path)
                        .and_then(|file| file.set_len(size + s.offset))
                        .map_err(|e| format!("{}: cannot extend {f}: {e}", s.name))?;
                }
            }
            let mut o = uring::UringOpts::new(&format!("perf_uring_{}", uring_bdevs.len()), path);
            o.direct = s.direct;
            if min_bs % 4096 != 0 {
                o.block_size = Some(512);
            }
            let b = uring::create(o).map_err(|e| format!("{}: {e}", s.name))?;
            uring_bdevs.insert(key, b.clone());
            let total = b.num_blocks() * b.block_size() as u64;
            Ok((Target::Bdev(b), region(total)?))
        }
        IoEngine::Nvme => {
            let t = s.target.clone().ok_or("ioengine=nvme needs --target")?;
            let (traddr, nsid) = parse_pcie_target(&t)?;
            let key = format!("pcie|{traddr}");
            let name = match uring_bdevs.keys().find(|k| k.starts_with(&key)) {
                Some(k) => k[key.len() + 1..]
                    .split('|')
                    .next()
                    .unwrap_or("")
                    .to_owned(),
                None => {
                    let name = format!(
                        "perf_nvme{}",
                        pollux_engine::bdev::nvme::NvmeController::list().len()
                    );
                    let mut o = pollux_nvme::ctrlr::CtrlrOpts::default();
                    o.io_queue_entries = o.io_queue_entries.max((s.iodepth + 1).min(4096) as u16);
                    let (_c, bdevs) = pollux_engine::bdev::nvme::attach(
                        pollux_engine::bdev::nvme::NvmeAttachOpts {
                            name: name.clone(),
                            traddr: traddr.clone(),
                            ctrlr: o,
                            cmb_data: false,
                        },
                    )
                    .map_err(|e| format!("{t}: {e}"))?;
                    for b in bdevs {
                        uring_bdevs.insert(format!("{key}|{name}|{}", b.name()), b);
                    }
                    name
                }
            };
            let bname = format!("{name}n{nsid}");
            let b = uring_bdevs
                .iter()
                .find(|(k, _)| k.starts_with(&key) && k.ends_with(&format!("|{bname}")))
                .map(|(_, b)| b.clone())
                .ok_or_else(|| format!("{t}: the controller has no active namespace {nsid}"))?;
            let total = b.num_blocks() * b.block_size() as u64;
            if min_bs % b.block_size() as u64 != 0 {
                return Err(format!(
                    "{}: bs must be a multiple of the namespace's block size ({})",
                    s.name,
                    b.block_size()
                ));
            }
            Ok((Target::Bdev(b), region(total)?))
        }
        IoEngine::Nvmf => {
            let t = s.target.clone().ok_or("ioengine=nvmf needs --target")?;
            let tid = TransportId::parse(&t)?;
            let n = nvmf.get_mut(&t).expect("connected above");
            let qid = n.next_qid;
            n.next_qid += 1;
            let depth = (s.iodepth + 1).clamp(2, n.admin.cap().mqes() as u32 + 1) as u16;
            let q: FabricQpair<Vec<u8>> = n
                .admin
                .create_io_qpair(qid, depth)
                .map_err(|e| format!("{t}: I/O queue {qid}: {e}"))?;
            let r = region(n.ns_bytes)?;
            if min_bs % n.lba as u64 != 0 {
                return Err(format!(
                    "{}: bs must be a multiple of the namespace's block size ({})",
                    s.name, n.lba
                ));
            }
            Ok((
                Target::Nvmf {
                    q: Box::new(q),
                    nsid: tid.nsid,
                    lba: n.lba,
                    aborts: n.aborts.0.clone(),
                },
                r,
            ))
        }
    }
}

/// `trtype:pcie traddr:0000:00:04.0 [ns:N]`: the PCI address and the namespace (1 by
/// default).
pub fn parse_pcie_target(s: &str) -> Result<(String, u32), String> {
    let mut traddr = None;
    let mut nsid = 1;
    let mut pcie = false;
    for kv in s.split_whitespace() {
        let (k, v) = kv
            .split_once(':')
            .ok_or_else(|| format!("target: {kv:?} is not key:value"))?;
        match k.to_ascii_lowercase().as_str() {
            "trtype" => pcie = v.eq_ignore_ascii_case("pcie"),
            "traddr" => traddr = Some(v.to_owned()),
            "ns" => nsid = v.parse().map_err(|_| format!("target: bad ns {v:?}"))?,
            other => return Err(format!("target: unknown key {other:?} for trtype:pcie")),
        }
    }
    if !pcie {
        return Err(format!("target {s:?}: ioengine=nvme needs trtype:pcie"));
    }
    let traddr = traddr.ok_or_else(|| format!("target {s:?}: no traddr (the PCI address)"))?;
    let traddr = pollux_nvme::pci::normalize_bdf(&traddr).map_err(|e| e.to_string())?;
    Ok((traddr, nsid))
}

/// Merges clones' raw results (group_reporting).
fn merge<'a>(raws: impl Iterator<Item = &'a JobRaw>) -> JobRaw {
    let mut m = JobRaw::default();
    for r in raws {
        for d in 0..2 {
            m.slat[d].merge(&r.slat[d]);
            m.clat[d].merge(&r.clat[d]);
            m.lat[d].merge(&r.lat[d]);
            m.ios[d] += r.ios[d];
            m.bytes[d] += r.bytes[d];
            merge_samples(&mut m.bw_samples[d], &r.bw_samples[d]);
            merge_samples(&mut m.iops_samples[d], &r.iops_samples[d]);
        }
        m.runtime = m.runtime.max(r.runtime);
        m.elapsed = m.elapsed.max(r.elapsed);
        m.errors += r.errors;
        if m.first_error.is_none() {
            m.first_error = r.first_error.clone();
        }
        for i in 0..7 {
            m.depth_hist[i] += r.depth_hist[i];
            m.submit_hist[i] += r.submit_hist[i];
            m.complete_hist[i] += r.complete_hist[i];
        }
        m.rusage.0 += r.rusage.0;
        m.rusage.1 += r.rusage.1;
        m.rusage.2 += r.rusage.2;
        m.rusage.3 += r.rusage.3;
        m.rusage.4 += r.rusage.4;
        m.lat_log.extend_from_slice(&r.lat_log);
        m.clat_log.extend_from_slice(&r.clat_log);
        m.slat_log.extend_from_slice(&r.slat_log);
        m.iops_log.extend_from_slice(&r.iops_log);
        if m.iops_curve.is_empty() {
            m.iops_curve = r.iops_curve.clone();
        } else {
            for (a, b) in m.iops_curve.iter_mut().zip(&r.iops_curve) {
                a.1 += b.1;
            }
        }
    }
    m
}

fn merge_samples(into: &mut Vec<f64>, from: &[f64]) {
    if into.is_empty() {
        into.extend_from_slice(from);
    } else {
        for (a, b) in into.iter_mut().zip(from) {
            *a += b;
        }
    }
}

fn pct(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| {
            if total == 0 {
                0.0
            } else {
                c as f64 * 100.0 / total as f64
            }
        })
        .collect()
}

/// An empty result with the job's identity (for the header line).
fn skeleton(s: &JobSpec, groupid: u32) -> JobResult {
    JobResult {
        name: s.name.clone(),
        groupid,
        options: s.options.clone(),
        iodepth: s.iodepth,
        rw: s.rw,
        bs_read: s.bs_read.clone(),
        bs_write: s.bs_write.clone(),
        ioengine_name: s.ioengine_name.clone(),
        percentile_list: s.percentile_list.clone(),
        ..Default::default()
    }
}

fn to_result(s: &JobSpec, groupid: u32, r: &JobRaw) -> JobResult {
    let mut out = skeleton(s, groupid);
    out.error = r.errors;
    out.error_text = r.first_error.clone();
    out.elapsed_ms = r.elapsed.as_millis() as u64;
    let runtime_ms = r.runtime.as_millis().max(1) as u64;
    for d in 0..2 {
        out.dirs[d] = DirResult {
            io_bytes: r.bytes[d],
            total_ios: r.ios[d],
            runtime_ms: if r.ios[d] > 0 { runtime_ms } else { 0 },
            slat: r.slat[d].summary(&[]),
            clat: r.clat[d].summary(&s.percentile_list),
            lat: r.lat[d].summary(&[]),
            bw_samples: r.bw_samples[d].clone(),
            iops_samples: r.iops_samples[d].clone(),
            ..Default::default()
        };
    }
    let el = r.runtime.as_secs_f64().max(1e-9);
    let el = r.elapsed.as_secs_f64().max(el);
    out.usr_cpu = r.rusage.0.as_secs_f64() / el * 100.0;
    out.sys_cpu = r.rusage.1.as_secs_f64() / el * 100.0;
    out.ctx = r.rusage.2;
    out.majf = r.rusage.3;
    out.minf = r.rusage.4;
    let dl = pct(&r.depth_hist);
    out.iodepth_level.copy_from_slice(&dl);
    let sub = pct(&r.submit_hist);
    out.iodepth_submit.copy_from_slice(&sub);
    let comp = pct(&r.complete_hist);
    out.iodepth_complete.copy_from_slice(&comp);
    out.issued = [r.ios[0], r.ios[1], 0];
    // fio's lat (nsec/usec/msec) lines are completion latency shares.
    let mut all = LatHist::new();
    all.merge(&r.clat[0]);
    all.merge(&r.clat[1]);
    let (ns, us, ms) = all.latency_distribution();
    out.latency_ns = ns;
    out.latency_us = us;
    out.latency_ms = ms;
    out
}

fn write_logs(c: &Clone_, r: &JobRaw) -> Result<(), String> {
    let n = c.jobnum + 1;
    let w = |path: String, entries: &[job::LogEntry]| -> Result<(), String> {
        let mut text = String::with_capacity(entries.len() * 24);
        let mut sorted = entries.to_vec();
        sorted.sort_by_key(|e| e.0);
        for &(t, v, d, bs, off) in &sorted {
            text.push_str(&report::lat_log_line(t, v, d, bs, off));
            text.push('\n');
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {path}: {e}"))
    };
    if let Some(p) = &c.spec.write_lat_log {
        w(format!("{p}_lat.{n}.log"), &r.lat_log)?;
        w(format!("{p}_clat.{n}.log"), &r.clat_log)?;
        w(format!("{p}_slat.{n}.log"), &r.slat_log)?;
    }
    if let Some(p) = &c.spec.write_iops_log {
        w(format!("{p}_iops.{n}.log"), &r.iops_log)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_ids_parse_as_spdk_writes_them() {
        let t = TransportId::parse(
            "trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2016-06.io.spdk:cnode1 ns:2",
        )
        .unwrap();
        assert_eq!(t.addr, "127.0.0.1:4420".parse().unwrap());
        assert_eq!(t.subnqn, "nqn.2016-06.io.spdk:cnode1");
        assert_eq!(t.nsid, 2);
        let r = TransportId::parse("trtype:RDMA traddr:10.0.2.15 trsvcid:4420 subnqn:x").unwrap();
        assert_eq!(r.transport, Transport::Rdma);
        assert_eq!(r.addr, "10.0.2.15:4420".parse().unwrap());
        assert!(TransportId::parse("trtype:fc traddr:1.2.3.4 subnqn:x").is_err());
        assert!(
            TransportId::parse("traddr:1.2.3.4")
                .unwrap_err()
                .contains("subnqn")
        );
        assert!(TransportId::parse("traddr:1.2.3.4 subnqn:x bogus:1").is_err());
        let v6 = TransportId::parse("traddr:::1 trsvcid:4420 subnqn:x").unwrap();
        assert_eq!(v6.addr, "[::1]:4420".parse().unwrap());
    }
}
