//! Churn: 1,000 connect / I/O / disconnect cycles (after 1,000 more to warm up) against one polluxd (two poll groups),
//! ending cleanly and every way a host can go wrong: closes with commands in flight,
//! RSTs, a PDU cut off mid-write, a write whose data never comes, garbage, and
//! controllers left to their keep-alive timeout. Afterwards every buffer is home, no
//! queue pair is left, and the daemon's RSS is where it was after the warm-up.

use pollux_nvme::fabrics::{AdminQueue, FabricOptions, FabricQpair};
use pollux_nvme::spec::admin::nvm_opc;
use pollux_nvme::spec::cmd::Sqe;
use pollux_tests::daemon;
use pollux_tests::raw::Raw;
use serde_json::{Value, json};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.pollux:churn";

fn rpc(sock: &Path, method: &str) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_pollux-rpc"))
        .arg("-s")
        .arg(sock)
        .arg(method)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn sum(stats: &Value, key: &str) -> u64 {
    stats["poll_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[key].as_u64().unwrap())
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Waits until no connection, queue pair, buffer or bdev I/O is left.
fn wait_idle(sock: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = rpc(sock, "nvmf_get_stats");
        let left: u64 = [
            "current_connections",
            "current_admin_qpairs",
            "current_io_qpairs",
            "iobuf_outstanding",
            "pending_bdev_io",
        ]
        .iter()
        .map(|k| sum(&s, k))
        .sum();
        if left == 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "target not idle: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn opts(addr: SocketAddr) -> FabricOptions {
    let mut o = FabricOptions::new(addr, NQN);
    o.io_queues = 2;
    o.kato_ms = 60_000;
    o
}

fn write_sqe(lba: u64, nlb: u32) -> Sqe {
    Sqe::nvm_rw(nvm_opc::WRITE, 1, lba, nlb)
}

/// One cycle of kind `i % 6`.
fn cycle(i: usize, addr: SocketAddr) {
    let data = vec![i as u8; 4096];
    match i % 6 {
        // Clean: connect, write, read back, disconnect.
        0 => {
            let mut a = AdminQueue::connect(&opts(addr)).unwrap();
            let mut q: FabricQpair<Vec<u8>> = a.create_io_qpair(1, 16).unwrap();
            // A few blocks, all written in the warm-up: a malloc bdev's memory is
            // touched (and counted in RSS) the first time each block is written.
            let lba = (i % 64) as u64;
            q.write(1, lba, 1, data.clone(), 1).unwrap();
            q.wait(Duration::from_secs(30), |c| {
                assert!(c.cqe.status().is_success())
            })
            .unwrap();
            q.read(1, lba, 1, vec![0; 4096], 2).unwrap();
            let mut got = None;
            while got.is_none() {
                q.wait(Duration::from_secs(30), |c| got = c.buf).unwrap();
            }
            assert!(got.unwrap() == data);
            drop(q);
            a.shutdown().unwrap();
        }
        // Closed with writes in flight.
        1 => {
            let mut a = AdminQueue::connect(&opts(addr)).unwrap();
            let mut q: FabricQpair<Vec<u8>> = a.create_io_qpair(2, 16).unwrap();
            for k in 0..8u64 {
                q.write(1, k, 1, data.clone(), k).unwrap();
            }
            q.poll(0, |_| {}).unwrap();
        }
        // An admin queue closed with a RST.
        2 => {
            let mut r = Raw::connect(addr);
            r.ic(false, false);
            r.connect_admin(NQN);
            r.enable();
            r.reset();
        }
        // An I/O queue cut off half way through a write capsule, then a RST.
        3 => {
            let mut a = AdminQueue::connect(&opts(addr)).unwrap();
            let mut r = Raw::connect(addr);
            r.ic(false, false);
            r.connect_q(NQN, 1, a.cntlid(), &a.options().hostnqn.clone());
            let pdu = r.capsule(write_sqe(0, 1), &data, 0);
            r.s.write_all(&pdu[..pdu.len() / 2]).unwrap();
            r.reset();
            a.keep_alive().unwrap();
        }
        // A write whose data (after R2T) never comes: the host just goes.
        4 => {
            let a = AdminQueue::connect(&opts(addr)).unwrap();
            let mut r = Raw::connect(addr);
            r.ic(false, false);
            r.connect_q(NQN, 2, a.cntlid(), &a.options().hostnqn.clone());
            r.send_cmd(write_sqe(64, 16), &[], 65536);
            let _r2t = r.recv();
            drop(r);
            drop(a);
        }
        // Garbage after ICReq: a TermReq, then the close.
        _ => {
            let mut r = Raw::connect(addr);
            r.ic(false, false);
            r.s.write_all(&[0xee; 64]).unwrap();
            let _ = r.term();
        }
    }
}

#[test]
fn a_thousand_connect_io_disconnect_cycles_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let port = pollux_tests::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let bdevs = json!([{"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 4096, "block_size": 4096}}]);
    let cfg = daemon::nvmf_config(bdevs, json!({}), NQN, &["M0"], port);
    let cfgp = dir.path().join("config.json");
    std::fs::write(&cfgp, cfg.to_string()).unwrap();
    let sock = dir.path().join("pollux.sock");
    let child = daemon::start(
        env!("CARGO_BIN_EXE_polluxd"),
        &["-m", "0x3", "--small-pools"],
        &cfgp,
        &sock,
        true,
    );
    let pid = child.id();

    // Controllers left silent: the target tears them down at their 1 s keep-alive
    // timeout while the churn goes on.
    let silent: Vec<AdminQueue> = (0..10)
        .map(|_| {
            let mut o = opts(addr);
            o.kato_ms = 1000;
            AdminQueue::connect(&o).unwrap()
        })
        .collect();

    let t0 = Instant::now();
    // A warm-up of 1,000 cycles first: the allocator's arenas settle.
    for i in 0..1000 {
        cycle(i, addr);
    }
    // The silent controllers are gone by now (while their hosts still hold them).
    let s = wait_idle(&sock);
    assert_eq!(sum(&s, "keep_alive_timeouts"), silent.len() as u64);
    let rss_start = rss_kib(pid);
    for i in 1000..2000 {
        cycle(i, addr);
    }
    let stats = wait_idle(&sock);
    let rss_end = rss_kib(pid);
    drop(silent);
    println!(
        "2000 cycles in {:?}; RSS after the warm-up: {rss_start} KiB, after 1000 more: {rss_end} KiB; \
         {} connections accepted, {} protocol errors",
        t0.elapsed(),
        sum(&stats, "connections"),
        sum(&stats, "protocol_errors")
    );
    assert!(
        rss_end <= rss_start + 1024,
        "RSS grew from {rss_start} KiB to {rss_end} KiB over 1000 cycles"
    );
    let mut c = child.take();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    assert!(
        c.wait().unwrap().success(),
        "a clean stop with every pool full"
    );
}
