//! NVMe/TCP end to end on loopback: the target (configured by RPC as polluxd is) on one
//! polling core with a null namespace, the project's initiator busy-polling on the other
//! core. 4 KiB random reads at QD1, 32 and 128, and 128 KiB sequential reads at QD16:
//! IOPS, MiB/s, mean and p99 latency as the initiator sees them.
//!
//! The peer, measured in the same run on the same cores, is the floor the network sets:
//! a busy-polling loopback TCP server that answers each 72-byte request with the bytes an
//! NVMe/TCP read returns (a 24-byte header and the data), with no NVMe, no bdev, no
//! buffer pool. The ratio says how much of that floor the whole target keeps.
//!
//! `cargo bench -p pollux-benches --bench nvmf_tcp` (POLLUX_BENCH_SECS per workload,
//! default 5). POLLUX_NVMF_TRACE=1 turns the command trace on (`pollux_trace_commands`,
//! every command logged to stderr: redirect it to a file) to measure what it costs on;
//! unset, the trace is compiled in and off.

use pollux_benches::bench_secs;
use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use pollux_engine::rpc::RpcServer;
use pollux_nvme::fabrics::{AdminQueue, FabricOptions, FabricQpair};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.pollux:bench";
const NS_BLOCKS: u64 = 1 << 20;

#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    bs: usize,
    qd: usize,
    random: bool,
}

struct Stats {
    ios: u64,
    secs: f64,
    lat_ns: Vec<u32>,
}

impl Stats {
    fn iops(&self) -> f64 {
        self.ios as f64 / self.secs
    }
    fn mean_us(&self) -> f64 {
        self.lat_ns.iter().map(|&x| x as f64).sum::<f64>() / self.lat_ns.len() as f64 / 1e3
    }
    fn p99_us(&mut self) -> f64 {
        self.lat_ns.sort_unstable();
        let i = ((self.lat_ns.len() as f64) * 0.99) as usize;
        self.lat_ns[i.min(self.lat_ns.len() - 1)] as f64 / 1e3
    }
}

fn pin(core: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; sched_setaffinity
    // reads it for the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

struct Offsets {
    x: u64,
    next_seq: u64,
    blocks: u64,
    random: bool,
}

impl Offsets {
    fn next(&mut self) -> u64 {
        if self.random {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            (self.x % (NS_BLOCKS / self.blocks)) * self.blocks
        } else {
            let o = self.next_seq;
            self.next_seq = (o + self.blocks) % NS_BLOCKS;
            o
        }
    }
}

/// Keeps `qd` reads in flight for `secs` (after a 1 s warm-up) on one queue pair.
fn run_pollux(q: &mut FabricQpair<Vec<u8>>, w: Workload, secs: u64) -> Stats {
    let blocks = (w.bs / 4096) as u64;
    let mut off = Offsets {
        x: 0x1234_5678,
        next_seq: 0,
        blocks,
        random: w.random,
    };
    let t0 = Instant::now();
    let warm = Duration::from_secs(1);
    let end = warm + Duration::from_secs(secs);
    let mut lat = Vec::with_capacity(4 << 20);
    let mut ios = 0u64;
    let mut free: Vec<Vec<u8>> = (0..w.qd).map(|_| vec![0u8; w.bs]).collect();
    let mut measuring_from = None;
    loop {
        let now = t0.elapsed();
        if now >= end {
            break;
        }
        while let Some(b) = free.pop() {
            let tag = t0.elapsed().as_nanos() as u64;
            if let Err(e) = q.read(1, off.next(), blocks as u32, b, tag) {
                free.push(e.into_buf().expect("a refused read hands its buffer back"));
                break;
            }
        }
        let in_window = now >= warm;
        if in_window && measuring_from.is_none() {
            measuring_from = Some(now);
        }
        q.poll(0, |c| {
            assert!(c.cqe.status().is_success(), "{:?}", c.cqe.status());
            if in_window {
                let done = t0.elapsed().as_nanos() as u64;
                lat.push((done - c.tag).min(u32::MAX as u64) as u32);
                ios += 1;
            }
            free.push(c.buf.expect("reads carry their buffer"));
        })
        .expect("the queue pair stays up");
    }
    let secs = (t0.elapsed() - measuring_from.unwrap_or(warm)).as_secs_f64();
    // Let the last reads finish before the next workload.
    while q.outstanding() > 0 {
        q.wait(Duration::from_secs(5), |_| {}).unwrap();
    }
    Stats {
        ios,
        secs,
        lat_ns: lat,
    }
}

/// The network floor: a busy-polling server on `core` answering 72-byte requests
/// with 24 + `bs` bytes.
fn run_peer(core: usize, w: Workload, secs: u64) -> Stats {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let bs = w.bs;
    let server = std::thread::spawn(move || {
        pin(core);
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut rbuf = vec![0u8; 64 * 1024];
        let (mut have, mut pending) = (0usize, 0usize);
        let resp = vec![0x5au8; 24 + bs];
        let mut sbuf: Vec<u8> = Vec::with_capacity(1 << 20);
        let mut spos = 0;
        while !st.load(Ordering::Relaxed) {
            match s.read(&mut rbuf[have..]) {
                Ok(0) => break,
                Ok(n) => have += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            while have >= 72 {
                rbuf.copy_within(72..have, 0);
                have -= 72;
                pending += 1;
            }
            for _ in 0..pending {
                sbuf.extend_from_slice(&resp);
            }
            pending = 0;
            while spos < sbuf.len() {
                match s.write(&sbuf[spos..]) {
                    Ok(n) => spos += n,
                    Err(_) => break,
                }
            }
            if spos == sbuf.len() {
                sbuf.clear();
                spos = 0;
            }
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_nonblocking(true).unwrap();
    let req = [0u8; 72];
    let resp_len = 24 + w.bs;
    let mut rbuf = vec![0u8; 1 << 20];
    let mut have = 0usize;
    let mut inflight: std::collections::VecDeque<u64> = Default::default();
    let t0 = Instant::now();
    let warm = Duration::from_secs(1);
    let end = warm + Duration::from_secs(secs);
    let mut lat = Vec::with_capacity(4 << 20);
    let mut ios = 0u64;
    let mut measuring_from = None;
    let mut sbuf: Vec<u8> = Vec::new();
    while t0.elapsed() < end {
        while inflight.len() < w.qd {
            inflight.push_back(t0.elapsed().as_nanos() as u64);
            sbuf.extend_from_slice(&req);
        }
        while !sbuf.is_empty() {
            match c.write(&sbuf) {
                Ok(n) => {
                    sbuf.drain(..n);
                }
                Err(_) => break,
            }
        }
        match c.read(&mut rbuf[have..]) {
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        let now = t0.elapsed();
        let in_window = now >= warm;
        if in_window && measuring_from.is_none() {
            measuring_from = Some(now);
        }
        let mut used = 0;
        while have - used >= resp_len {
            used += resp_len;
            let sent = inflight.pop_front().unwrap();
            if in_window {
                lat.push((now.as_nanos() as u64 - sent).min(u32::MAX as u64) as u32);
                ios += 1;
            }
        }
        rbuf.copy_within(used..have, 0);
        have -= used;
    }
    let secs = (t0.elapsed() - measuring_from.unwrap_or(warm)).as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(c);
    server.join().unwrap();
    Stats {
        ios,
        secs,
        lat_ns: lat,
    }
}

fn start_target(core: usize) -> (Engine, RpcServer, SocketAddr) {
    let engine = Engine::builder()
        .core_mask(&format!("[{core}]"))
        .sleep_after_idle(None)
        .iobuf(IobufOpts::small())
        .start()
        .unwrap();
    let rpc = RpcServer::new(engine.handle());
    let port = pollux_tests::free_port();
    let cfg = json!({"subsystems": [
        {"subsystem": "bdev", "config": [
            {"method": "bdev_null_create", "params": {"name": "Null0", "num_blocks": NS_BLOCKS, "block_size": 4096}}]},
        {"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
            {"method": "nvmf_create_subsystem", "params": {"nqn": NQN, "allow_any_host": true}},
            {"method": "nvmf_subsystem_add_ns", "params": {"nqn": NQN, "namespace": {"bdev_name": "Null0"}}},
            {"method": "nvmf_subsystem_add_listener", "params": {"nqn": NQN, "listen_address":
                {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}}]}
    ]});
    rpc.load_config(&cfg).unwrap();
    if std::env::var_os("POLLUX_NVMF_TRACE").is_some() {
        rpc.call(
            "pollux_trace_commands",
            Some(json!({"nqn": NQN, "enable": true})),
        )
        .unwrap();
    }
    (engine, rpc, format!("127.0.0.1:{port}").parse().unwrap())
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let secs = bench_secs(5);
    if std::env::var_os("POLLUX_NVMF_TRACE").is_some() {
        pollux_tools::init_logging();
    }
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (tcore, hcore) = if ncpu >= 2 { (0, 1) } else { (0, 0) };
    let workloads = [
        Workload {
            name: "4 KiB randread QD1",
            bs: 4096,
            qd: 1,
            random: true,
        },
        Workload {
            name: "4 KiB randread QD32",
            bs: 4096,
            qd: 32,
            random: true,
        },
        Workload {
            name: "4 KiB randread QD128",
            bs: 4096,
            qd: 127,
            random: true,
        },
        Workload {
            name: "128 KiB seqread QD16",
            bs: 131072,
            qd: 16,
            random: false,
        },
    ];
    println!(
        "NVMe/TCP over loopback: target on core {tcore} (null namespace, polling), initiator on core {hcore}, {secs} s per workload"
    );
    println!(
        "{:<22} {:>10} {:>9} {:>9} {:>9} | {:>10} {:>9} {:>9} | {:>6}",
        "workload",
        "IOPS",
        "MiB/s",
        "mean us",
        "p99 us",
        "floor IOPS",
        "mean us",
        "p99 us",
        "ratio"
    );
    // POLLUX_NVMF_ONLY=<substring> runs the matching workloads only.
    let only = std::env::var("POLLUX_NVMF_ONLY").unwrap_or_default();
    for w in workloads.into_iter().filter(|w| w.name.contains(&only)) {
        let (engine, rpc, addr) = start_target(tcore);
        let mut s = {
            let h = std::thread::spawn(move || {
                pin(hcore);
                let mut o = FabricOptions::new(addr, NQN);
                o.io_queues = 1;
                o.kato_ms = 0;
                let mut admin = AdminQueue::connect(&o).unwrap();
                let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 128).unwrap();
                let s = run_pollux(&mut q, w, secs);
                drop(q);
                admin.shutdown().unwrap();
                s
            });
            h.join().unwrap()
        };
        rpc.nvmf().shutdown(Duration::from_secs(5));
        drop(rpc);
        engine.shutdown();
        if std::env::var_os("POLLUX_NVMF_NO_PEER").is_some() {
            let mib = s.iops() * w.bs as f64 / (1 << 20) as f64;
            let (mean, p99) = (s.mean_us(), s.p99_us());
            println!(
                "{:<22} {:>10.0} {mib:>9.1} {mean:>9.1} {p99:>9.1}",
                w.name,
                s.iops()
            );
            continue;
        }
        let mut p = {
            let h = std::thread::spawn(move || {
                pin(hcore);
                run_peer(tcore, w, secs)
            });
            h.join().unwrap()
        };
        let mib = s.iops() * w.bs as f64 / (1 << 20) as f64;
        println!(
            "{:<22} {:>10.0} {:>9.1} {:>9.1} {:>9.1} | {:>10.0} {:>9.1} {:>9.1} | {:>6.2}",
            w.name,
            s.iops(),
            mib,
            s.mean_us(),
            s.p99_us(),
            p.iops(),
            p.mean_us(),
            p.p99_us(),
            s.iops() / p.iops()
        );
    }
}
