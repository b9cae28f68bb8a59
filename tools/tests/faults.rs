//! Faults injected under polluxd with SPDK's error and delay bdevs, seen by pollux-perf
//! over NVMe/TCP as a fio user sees them: failed I/Os counted with their NVMe status,
//! never a silent success; held I/Os that finish once released; delayed completions that
//! arrive late and intact; writes held past the host's `io_timeout` aborted (Abort) and
//! reported failed; and a clean crc32c verify pass after each fault run.

use pollux_tests::{KillOnDrop, daemon};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.pollux:faults";

struct Daemon {
    child: Option<KillOnDrop>,
    sock: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// polluxd on one core with `bdevs` (config entries) exported in that order.
    fn start(bdevs: Value, namespaces: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = pollux_tests::free_port();
        let cfg = daemon::nvmf_config(bdevs, json!({}), NQN, namespaces, port);
        let cfgp = dir.path().join("config.json");
        std::fs::write(&cfgp, cfg.to_string()).unwrap();
        let sock = dir.path().join("pollux.sock");
        let child = daemon::start(
            env!("CARGO_BIN_EXE_polluxd"),
            &["-m", "0x1", "--small-pools"],
            &cfgp,
            &sock,
            false,
        );
        Daemon {
            child: Some(child),
            sock,
            port,
            _dir: dir,
        }
    }

    fn rpc(&self, method: &str, params: Value) -> Value {
        let o = Command::new(env!("CARGO_BIN_EXE_pollux-rpc"))
            .arg("-s")
            .arg(&self.sock)
            .args([method, "--json", &params.to_string()])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn target(&self, nsid: u32) -> String {
        format!(
            "--target=trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:{} subnqn:{NQN} ns:{nsid}",
            self.port
        )
    }

    /// Waits for no connection and every buffer home, as after each run.
    fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.rpc("nvmf_get_stats", json!({}));
            let pg = &s["poll_groups"][0];
            if pg["current_connections"] == 0
                && pg["iobuf_outstanding"] == 0
                && pg["pending_bdev_io"] == 0
            {
                return;
            }
            assert!(Instant::now() < deadline, "target not idle: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(mut self) {
        daemon::stop(self.child.take().unwrap());
    }
}

/// What pollux-perf said: its JSON report's jobs (name, error count), the report, and
/// its log (the first error of each job is logged).
struct Run {
    ok: bool,
    jobs: Vec<(String, i64)>,
    json: Value,
    stderr: String,
}

impl Run {
    fn errors(&self) -> i64 {
        self.jobs.iter().map(|j| j.1).sum()
    }
}

fn perf(args: &[&str]) -> Run {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_pollux-perf"))
        .args(args)
        .arg("--output-format=json")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let start = text
        .find('{')
        .unwrap_or_else(|| panic!("no JSON report: {}", String::from_utf8_lossy(&o.stderr)));
    let v: Value = serde_json::from_str(&text[start..]).unwrap();
    let jobs = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["jobname"].as_str().unwrap().to_owned(),
                j["error"].as_i64().unwrap(),
            )
        })
        .collect();
    Run {
        ok: o.status.success(),
        jobs,
        json: v,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// A verified write pass over the first 8 MiB of `nsid`, then its verify reads.
fn verified_writes(d: &Daemon, nsid: u32, extra: &[&str]) -> Run {
    let t = d.target(nsid);
    let mut a = vec![
        "--ioengine=nvmf",
        t.as_str(),
        "--name=w",
        "--rw=randwrite",
        "--bsrange=4k-64k",
        "--iodepth=16",
        "--size=8m",
        "--verify=crc32c",
    ];
    a.extend_from_slice(extra);
    perf(&a)
}

fn ram(name: &str) -> Value {
    json!({"method": "bdev_malloc_create", "params": {"name": name, "num_blocks": 4096, "block_size": 4096}})
}

#[test]
fn injected_errors_reach_the_host_as_their_nvme_statuses_and_are_counted() {
    let d = Daemon::start(
        json!([ram("M0"), {"method": "bdev_error_create", "params": {"base_name": "M0"}}]),
        &["EE_M0"],
    );
    let r = verified_writes(&d, 1, &[]);
    assert!(
        r.ok && r.errors() == 0,
        "clean before any fault: {}",
        r.stderr
    );
    d.wait_idle();

    // Three writes fail with Write Fault (SCT 2, SC 80h): three errors, named, and the
    // job fails; nothing is reported as written that was not.
    d.rpc(
        "bdev_error_inject_error",
        json!({"name": "EE_M0", "io_type": "write", "error_type": "nvme_failure", "num": 3, "nvme_sct": 2, "nvme_sc": 128}),
    );
    let r = verified_writes(&d, 1, &[]);
    assert!(!r.ok, "a run with failed writes fails");
    assert_eq!(r.errors(), 3, "{:?}", r.jobs);
    assert!(
        r.stderr.contains("failed: sct=2 sc=0x80 (write fault"),
        "{}",
        r.stderr
    );
    d.wait_idle();

    // Two reads fail with a generic failure: Internal Error (0/06h), as from SPDK.
    d.rpc(
        "bdev_error_inject_error",
        json!({"name": "EE_M0", "io_type": "read", "error_type": "failure", "num": 2}),
    );
    let t = d.target(1);
    let r = perf(&[
        "--ioengine=nvmf",
        &t,
        "--name=r",
        "--rw=randread",
        "--bs=4k",
        "--iodepth=8",
        "--size=2m",
    ]);
    assert!(!r.ok);
    assert_eq!(r.errors(), 2, "{:?}", r.jobs);
    assert!(
        r.stderr.contains("failed: sct=0 sc=0x06 (internal error"),
        "{}",
        r.stderr
    );
    d.wait_idle();

    // Corrupted read data is caught by verify, never passed as good.
    d.rpc(
        "bdev_error_inject_error",
        json!({"name": "EE_M0", "io_type": "read", "error_type": "corrupt_data", "num": 1, "corrupt_offset": 100, "corrupt_value": 255}),
    );
    let r = verified_writes(&d, 1, &[]);
    assert!(!r.ok);
    assert_eq!(r.errors(), 1, "{:?}", r.jobs);
    d.wait_idle();

    // nomem: the target waits and retries; the host sees nothing.
    d.rpc(
        "bdev_error_inject_error",
        json!({"name": "EE_M0", "io_type": "all", "error_type": "nomem", "num": 50}),
    );
    let r = verified_writes(&d, 1, &[]);
    assert!(r.ok && r.errors() == 0, "{}", r.stderr);
    d.wait_idle();

    // Held writes finish once resumed, with their data.
    d.rpc(
        "bdev_error_inject_error",
        json!({"name": "EE_M0", "io_type": "write", "error_type": "pending", "num": 4}),
    );
    let sock = d.sock.clone();
    let rpc_bin = env!("CARGO_BIN_EXE_pollux-rpc");
    let resumer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let o = Command::new(rpc_bin)
            .arg("-s")
            .arg(&sock)
            .args([
                "bdev_error_resume_pending",
                "--json",
                r#"{"name": "EE_M0"}"#,
            ])
            .output()
            .unwrap();
        assert!(o.status.success());
    });
    let t0 = Instant::now();
    let r = verified_writes(&d, 1, &[]);
    resumer.join().unwrap();
    assert!(r.ok && r.errors() == 0, "{}", r.stderr);
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "held until resumed"
    );
    d.wait_idle();

    // Cleared: a last verified pass is clean, and the pools are full.
    d.rpc(
        "bdev_error_inject_error",
        json!({"name": "EE_M0", "io_type": "clear", "error_type": "failure"}),
    );
    let r = verified_writes(&d, 1, &[]);
    assert!(r.ok && r.errors() == 0, "{}", r.stderr);
    d.wait_idle();
    // The error bdev is in save_config.
    let saved = d.rpc("save_config", json!({}));
    let bdev = saved["subsystems"][0]["config"].as_array().unwrap();
    assert!(
        bdev.iter()
            .any(|e| e["method"] == "bdev_error_create" && e["params"]["base_name"] == "M0")
    );
    d.stop();
}

#[test]
fn a_delay_bdev_delays_completions_and_the_data_stays_intact() {
    let d = Daemon::start(
        json!([ram("M1"), {"method": "bdev_delay_create", "params": {
            "name": "D0", "base_bdev_name": "M1",
            "avg_read_latency": 2000, "p99_read_latency": 50000,
            "avg_write_latency": 2000, "p99_write_latency": 50000}}]),
        &["D0"],
    );
    let r = verified_writes(&d, 1, &["--iodepth=32"]);
    assert!(r.ok && r.errors() == 0, "{}", r.stderr);
    let w = &r.json["jobs"][0]["write"]["clat_ns"];
    let (min, max) = (w["min"].as_f64().unwrap(), w["max"].as_f64().unwrap());
    assert!(min >= 2.0e6, "every write waits its 2 ms: min {min} ns");
    assert!(max >= 50.0e6, "some write got the p99 50 ms: max {max} ns");
    d.wait_idle();
    // A latency of seconds: the writes wait it out, none lost or duplicated (verify).
    d.rpc(
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "D0", "latency_type": "avg_write", "latency_us": 1_500_000}),
    );
    d.rpc(
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "D0", "latency_type": "p99_write", "latency_us": 1_500_000}),
    );
    let t = d.target(1);
    let r = perf(&[
        "--ioengine=nvmf",
        &t,
        "--name=slow",
        "--rw=write",
        "--bs=64k",
        "--iodepth=8",
        "--size=1m",
        "--verify=crc32c",
    ]);
    assert!(r.ok && r.errors() == 0, "{}", r.stderr);
    let w = &r.json["jobs"][0]["write"]["clat_ns"];
    assert!(w["min"].as_f64().unwrap() >= 1.5e9, "{w}");
    // Writes held 5 s, a host that waits 1 s: pollux-perf aborts them (Abort), the
    // target stops them in the delay bdev, and they come back as Command Abort
    // Requested, counted as errors: none hangs, none is reported written.
    for t in ["avg_write", "p99_write"] {
        d.rpc(
            "bdev_delay_update_latency",
            json!({"delay_bdev_name": "D0", "latency_type": t, "latency_us": 5_000_000}),
        );
    }
    let r = perf(&[
        "--ioengine=nvmf",
        &t,
        "--name=timeouts",
        "--rw=write",
        "--bs=64k",
        "--iodepth=4",
        "--size=256k",
        "--io_timeout=1s",
    ]);
    assert!(!r.ok);
    assert_eq!(r.errors(), 4, "{}", r.stderr);
    assert_eq!(r.stderr.matches(" aborted").count(), 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("(command abort requested"),
        "{}",
        r.stderr
    );
    d.wait_idle();
    let saved = d.rpc("save_config", json!({}));
    let e = saved["subsystems"][0]["config"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["method"] == "bdev_delay_create")
        .cloned()
        .unwrap();
    assert_eq!(e["params"]["avg_write_latency"], 5_000_000);
    assert_eq!(e["params"]["base_bdev_name"], "M1");
    d.wait_idle();
    d.stop();
}
