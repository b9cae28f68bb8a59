//! polluxd as a user runs it: a config file, pollux-rpc calls, --wait-for-rpc, and a
//! clean stop on SIGTERM.

use pollux_tests::KillOnDrop;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn rpc(sock: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pollux-rpc"))
        .arg("-s")
        .arg(sock)
        .args(args)
        .output()
        .unwrap()
}

/// examples/quickstart.json in `dir`, on a free port: (port, config path).
fn quickstart(dir: &Path) -> (u16, std::path::PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = pollux_tests::free_port();
    let text = std::fs::read_to_string(root.join("examples/quickstart.json"))
        .unwrap()
        .replace("\"4420\"", &format!("\"{port}\""));
    let cfg = dir.join("quickstart.json");
    std::fs::write(&cfg, text).unwrap();
    (port, cfg)
}

fn start(dir: &Path, extra: &[&str]) -> (KillOnDrop, std::path::PathBuf) {
    start_logging_to(dir, extra, None)
}

/// `start`, with polluxd's log in file `log` (RUST_LOG unset) when given.
fn start_logging_to(
    dir: &Path,
    extra: &[&str],
    log: Option<&Path>,
) -> (KillOnDrop, std::path::PathBuf) {
    let sock = dir.join("pollux.sock");
    let mut c = Command::new(env!("CARGO_BIN_EXE_polluxd"));
    c.args(["-m", "0x1", "--small-pools", "-r"])
        .arg(&sock)
        .args(extra);
    if let Some(log) = log {
        c.env_remove("RUST_LOG")
            .stderr(std::fs::File::create(log).unwrap());
    }
    let child = c.spawn().unwrap();
    let child = KillOnDrop::new(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "polluxd did not open its socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, sock)
}

fn stop(child: KillOnDrop, sock: &Path) {
    let mut child = child.take();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "polluxd exit status {status}");
    assert!(!sock.exists(), "socket removed on exit");
}

/// Writes an SPDK config whose bdev subsystem holds `entries` (JSON objects).
fn write_config(dir: &Path, file: &str, entries: &str) -> std::path::PathBuf {
    let cfg = dir.join(file);
    let text = format!(r#"{{"subsystems": [{{"subsystem": "bdev", "config": [{entries}]}}]}}"#);
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn config_then_rpc_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "config.json",
        r#"{"method": "bdev_malloc_create", "params": {"name": "Malloc0", "num_blocks": 2048, "block_size": 512}}"#,
    );
    let (child, sock) = start(dir.path(), &["-c", cfg.to_str().unwrap()]);
    let bdevs = json(&rpc(&sock, &["bdev_get_bdevs"]));
    assert_eq!(bdevs[0]["name"], "Malloc0");
    let name = json(&rpc(
        &sock,
        &[
            "bdev_null_create",
            "name=Null0",
            "num_blocks=64",
            "block_size=4096",
        ],
    ));
    assert_eq!(name, "Null0");
    let got = json(&rpc(
        &sock,
        &["bdev_get_bdevs", "--json", r#"{"name": "Null0"}"#],
    ));
    assert_eq!(got[0]["block_size"], 4096);
    let bad = rpc(
        &sock,
        &[
            "bdev_null_create",
            "name=Null0",
            "num_blocks=64",
            "block_size=4096",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("already exists"));
    let reactors = json(&rpc(&sock, &["framework_get_reactors"]));
    assert_eq!(reactors["reactors"].as_array().unwrap().len(), 1);
    stop(child, &sock);
}

#[test]
fn wait_for_rpc_loads_the_config_at_framework_start_init() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "config.json",
        r#"{"method": "bdev_null_create", "params": {"name": "Late", "num_blocks": 8, "block_size": 512}}"#,
    );
    let (child, sock) = start(dir.path(), &["--wait-for-rpc", "-c", cfg.to_str().unwrap()]);
    assert_eq!(
        json(&rpc(&sock, &["bdev_get_bdevs"]))
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // As SPDK's, framework_wait_init answers once the framework is initialized.
    let waiter = {
        let sock = sock.clone();
        std::thread::spawn(move || json(&rpc(&sock, &["framework_wait_init"])))
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !waiter.is_finished(),
        "framework_wait_init answered before the framework started"
    );
    assert_eq!(json(&rpc(&sock, &["framework_start_init"])), true);
    assert_eq!(waiter.join().unwrap(), true);
    assert_eq!(json(&rpc(&sock, &["bdev_get_bdevs"]))[0]["name"], "Late");
    assert!(!rpc(&sock, &["framework_start_init"]).status.success());
    stop(child, &sock);
}

/// A framework_wait_init still waiting does not hold up SIGTERM.
#[test]
fn sigterm_stops_polluxd_with_a_framework_wait_init_pending() {
    let dir = tempfile::tempdir().unwrap();
    let (child, sock) = start(dir.path(), &["--wait-for-rpc"]);
    let waiter = {
        let sock = sock.clone();
        std::thread::spawn(move || rpc(&sock, &["framework_wait_init"]))
    };
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    stop(child, &sock);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "stopped in {:?}",
        t0.elapsed()
    );
    assert!(!waiter.join().unwrap().status.success());
}

#[test]
fn a_bad_config_stops_the_daemon_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "bad.json",
        r#"{"method": "bdev_malloc_create", "params": {"block_size": 512}}"#,
    );
    let out = Command::new(env!("CARGO_BIN_EXE_polluxd"))
        .args(["-m", "0x1", "--small-pools", "-r"])
        .arg(dir.path().join("s.sock"))
        .arg("-c")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("num_blocks") && err.contains("bad.json"),
        "{err}"
    );
}

#[test]
fn quickstart_serves_nvme_tcp_and_pollux_rpc_configures_the_target() {
    use pollux_nvme::fabrics::{AdminQueue, FabricOptions, FabricQpair};
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = root.join("examples/quickstart.json");
    // The quickstart listens on 4420; this test moves it to a free port.
    let port = pollux_tests::free_port();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\"4420\"", &format!("\"{port}\""));
    let cfg = dir.path().join("quickstart.json");
    std::fs::write(&cfg, text).unwrap();
    let (child, sock) = start(dir.path(), &["-c", cfg.to_str().unwrap()]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let nqn = "nqn.2016-06.io.pollux:quickstart";
    let subs = json(&rpc(&sock, &["nvmf_get_subsystems"]));
    assert_eq!(subs[1]["nqn"], nqn);
    assert_eq!(subs[1]["namespaces"][0]["bdev_name"], "Malloc0");
    // A second namespace and a second listener, with pollux-rpc's flags.
    json(&rpc(
        &sock,
        &[
            "bdev_null_create",
            "name=Null0",
            "num_blocks=1024",
            "block_size=4096",
        ],
    ));
    let nsid = json(&rpc(
        &sock,
        &[
            "nvmf_subsystem_add_ns",
            "--nqn",
            nqn,
            "--bdev-name",
            "Null0",
        ],
    ));
    assert_eq!(nsid, 2);
    let port2 = pollux_tests::free_port();
    let p2 = port2.to_string();
    json(&rpc(
        &sock,
        &[
            "nvmf_subsystem_add_listener",
            "--nqn",
            nqn,
            "--trtype",
            "tcp",
            "--traddr",
            "127.0.0.1",
            "--trsvcid",
            &p2,
        ],
    ));
    let mut o = FabricOptions::new(addr, nqn);
    o.io_queues = 1;
    let mut admin = AdminQueue::connect(&o).unwrap();
    assert_eq!(admin.active_namespaces().unwrap(), vec![1, 2]);
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 8).unwrap();
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
    q.write(1, 3, 2, data.clone(), 0).unwrap();
    let mut got = None;
    while got.is_none() {
        q.wait(Duration::from_secs(5), |c| got = Some(c)).unwrap();
    }
    assert!(got.unwrap().cqe.status().is_success());
    q.read(1, 3, 2, vec![0; 8192], 1).unwrap();
    let mut got = None;
    while got.is_none() {
        q.wait(Duration::from_secs(5), |c| got = Some(c)).unwrap();
    }
    assert!(got.unwrap().buf.unwrap() == data);
    let stats = json(&rpc(&sock, &["nvmf_get_stats"]));
    assert_eq!(stats["poll_groups"][0]["current_io_qpairs"], 1);
    drop(q);
    admin.shutdown().unwrap();
    // save_config carries the target; SIGTERM stops cleanly with a host connected.
    let saved = json(&rpc(&sock, &["save_config"]));
    let nvmf = &saved["subsystems"][1];
    assert_eq!(nvmf["subsystem"], "nvmf");
    assert!(nvmf["config"].as_array().unwrap().len() >= 6);
    let _held = AdminQueue::connect(&o).unwrap();
    stop(child, &sock);
}

/// A config SPDK v26.05's own `rpc.py save_config` wrote (nvmf_tgt after the documented
/// setup, plus null, delay and error bdevs and a second subsystem) loads unchanged: its
/// option methods, the delay and error bdevs written before their bases, the subsystem
/// limits. The namespaces serve I/O, iostat counts it at every level of a stack, and
/// what polluxd saves from it loads back to the same config.
#[test]
fn a_config_saved_by_spdk_loads_and_serves_its_namespaces() {
    use pollux_nvme::fabrics::{AdminQueue, DataDir, FabricOptions, FabricQpair};
    use pollux_nvme::spec::admin::{IdentifyDw, cns, csi};
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (p1, p2) = (pollux_tests::free_port(), pollux_tests::free_port());
    let text = std::fs::read_to_string(root.join("tests/data/spdk-v26.05-save_config.json"))
        .unwrap()
        .replace("\"4421\"", &format!("\"{p1}\""))
        .replace("\"4422\"", &format!("\"{p2}\""));
    let cfg = dir.path().join("spdk.json");
    std::fs::write(&cfg, text).unwrap();
    let (child, sock) = start(dir.path(), &["-c", cfg.to_str().unwrap()]);
    let bdevs = json(&rpc(&sock, &["bdev_get_bdevs"]));
    let names: Vec<&str> = bdevs
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Delay0", "EE_Null0", "Malloc0", "Malloc1", "Null0"]);
    let delay = &bdevs[0];
    assert_eq!(delay["uuid"], "8a00366f-eec6-50cd-8b1a-68fea016e497");
    assert_eq!(delay["num_blocks"], 8192);
    let subs = json(&rpc(&sock, &["nvmf_get_subsystems"]));
    let c1 = &subs[1];
    assert_eq!(c1["nqn"], "nqn.2016-06.io.spdk:cnode1");
    assert_eq!(c1["model_number"], "SPDK_Controller1");
    assert_eq!(
        c1["hosts"][0]["nqn"],
        "nqn.2014-08.org.nvmexpress:uuid:2b6f9f8a-1c1e-4b1a-9c64-0f3c1e1d2a11"
    );
    assert_eq!(
        (c1["dmrsl"].as_u64(), c1["wzsl"].as_u64()),
        (Some(2097152), Some(12))
    );
    let c2 = &subs[2];
    assert_eq!(c2["namespaces"][1]["nsid"], 3);
    assert_eq!(c2["namespaces"][1]["bdev_name"], "Delay0");
    assert_eq!(c2["allow_any_host"], false);

    // cnode1 reports SPDK's limits in the NVM Identify Controller (CNS 06h, CSI 0).
    let a1: std::net::SocketAddr = format!("127.0.0.1:{p1}").parse().unwrap();
    let mut o = FabricOptions::new(a1, "nqn.2016-06.io.spdk:cnode1");
    o.io_queues = 1;
    let mut admin = AdminQueue::connect(&o).unwrap();
    let mut id = [0u8; 4096];
    let sqe = IdentifyDw {
        cns: cns::CSI_CONTROLLER,
        csi: csi::NVM,
        ..Default::default()
    }
    .to_sqe(0);
    let cqe = admin.command(sqe, DataDir::ToHost(&mut id)).unwrap();
    assert!(cqe.status().is_success());
    assert_eq!((id[1], id[3]), (12, 1), "WZSL, DMRL");
    assert_eq!(u32::from_le_bytes(id[4..8].try_into().unwrap()), 2097152);
    admin.shutdown().unwrap();

    // cnode2 admits its hosts only: open it, then write and read through the delay bdev.
    json(&rpc(
        &sock,
        &[
            "nvmf_subsystem_allow_any_host",
            "--json",
            r#"{"nqn": "nqn.2016-06.io.spdk:cnode2", "allow_any_host": true}"#,
        ],
    ));
    let a2: std::net::SocketAddr = format!("127.0.0.1:{p2}").parse().unwrap();
    let mut o = FabricOptions::new(a2, "nqn.2016-06.io.spdk:cnode2");
    o.io_queues = 1;
    let mut admin = AdminQueue::connect(&o).unwrap();
    assert_eq!(admin.active_namespaces().unwrap(), vec![1, 3]);
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 8).unwrap();
    let data: Vec<u8> = (0..16384u32).map(|i| (i * 13) as u8).collect();
    let done = |q: &mut FabricQpair<Vec<u8>>| {
        let mut got = None;
        while got.is_none() {
            q.wait(Duration::from_secs(5), |c| got = Some(c)).unwrap();
        }
        let c = got.unwrap();
        assert!(c.cqe.status().is_success());
        c.buf
    };
    for i in 0..8u64 {
        q.write(3, i * 4, 4, data.clone(), i).unwrap();
        done(&mut q);
        q.read(3, i * 4, 4, vec![0; 16384], i).unwrap();
        assert!(done(&mut q).unwrap() == data);
    }
    drop(q);
    admin.shutdown().unwrap();

    // Both levels of the stack counted the same I/Os; reset clears them.
    let st = json(&rpc(
        &sock,
        &[
            "bdev_get_iostat",
            "--json",
            r#"{"names": ["Delay0", "Malloc1"]}"#,
        ],
    ));
    assert!(st["tick_rate"].as_u64().unwrap() > 1_000_000, "{st}");
    for b in st["bdevs"].as_array().unwrap() {
        assert_eq!(b["num_write_ops"], 8, "{b}");
        assert_eq!(b["num_read_ops"], 8, "{b}");
        assert_eq!(b["bytes_written"], 8 * 16384, "{b}");
        assert!(b["min_read_latency_ticks"].as_u64().unwrap() > 0, "{b}");
    }
    // The delay bdev adds at least its 9 us average read latency.
    let ticks_per_us = st["tick_rate"].as_f64().unwrap() / 1e6;
    let mean = |b: &serde_json::Value| {
        b["read_latency_ticks"].as_f64().unwrap()
            / b["num_read_ops"].as_f64().unwrap()
            / ticks_per_us
    };
    assert!(mean(&st["bdevs"][0]) >= 9.0, "{st}");
    assert!(mean(&st["bdevs"][0]) > mean(&st["bdevs"][1]), "{st}");
    json(&rpc(
        &sock,
        &["bdev_reset_iostat", "--json", r#"{"name": "Delay0"}"#],
    ));
    let st = json(&rpc(
        &sock,
        &["bdev_get_iostat", "--json", r#"{"names": ["Delay0"]}"#],
    ));
    assert_eq!(st["bdevs"][0]["num_read_ops"], 0, "{st}");

    // What polluxd saves from SPDK's config loads into another polluxd and saves the same.
    let saved = json(&rpc(&sock, &["save_config"]));
    stop(child, &sock);
    let again = dir.path().join("again");
    std::fs::create_dir(&again).unwrap();
    let cfg2 = again.join("saved.json");
    std::fs::write(&cfg2, saved.to_string()).unwrap();
    let (child, sock) = start(&again, &["-c", cfg2.to_str().unwrap()]);
    assert_eq!(json(&rpc(&sock, &["save_config"])), saved);
    stop(child, &sock);
}

/// SPDK's log methods change what polluxd writes while it runs: a flag with the DEBUG
/// print level shows that component's debug messages; clearing it hides them again.
#[test]
fn log_flags_and_levels_change_the_running_filter() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("polluxd.log");
    let (child, sock) = start_logging_to(dir.path(), &[], Some(&log));
    let debug_lines = |method: &str| {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("DEBUG") && l.contains("RPC answered") && l.contains(method))
            .count()
    };
    assert_eq!(json(&rpc(&sock, &["log_get_print_level"])), "NOTICE");
    let flags = json(&rpc(&sock, &["log_get_flags"]));
    assert_eq!(flags["rpc"], false);
    assert_eq!(flags["nvmf_tcp"], false);
    json(&rpc(&sock, &["spdk_get_version"]));
    assert_eq!(debug_lines("spdk_get_version"), 0);
    // The flag alone is not enough, as in SPDK: the level must be DEBUG too.
    json(&rpc(
        &sock,
        &["log_set_flag", "--json", r#"{"flag": "rpc"}"#],
    ));
    json(&rpc(&sock, &["bdev_get_bdevs"]));
    assert_eq!(debug_lines("bdev_get_bdevs"), 0);
    json(&rpc(
        &sock,
        &["log_set_print_level", "--json", r#"{"level": "DEBUG"}"#],
    ));
    assert_eq!(json(&rpc(&sock, &["log_get_print_level"])), "DEBUG");
    assert_eq!(json(&rpc(&sock, &["log_get_flags"]))["rpc"], true);
    json(&rpc(&sock, &["framework_get_reactors"]));
    assert_eq!(debug_lines("framework_get_reactors"), 1);
    json(&rpc(
        &sock,
        &["log_clear_flag", "--json", r#"{"flag": "all"}"#],
    ));
    json(&rpc(&sock, &["nvmf_get_subsystems"]));
    assert_eq!(debug_lines("nvmf_get_subsystems"), 0);
    // Unknown flags and levels are refused by name.
    let o = rpc(
        &sock,
        &["log_set_flag", "--json", r#"{"flag": "nvmf_tpc"}"#],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nvmf_tpc"));
    let o = rpc(&sock, &["log_set_level", "--json", r#"{"level": "LOUD"}"#]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("LOUD"));
    stop(child, &sock);
}

/// `polluxd --metrics`: the scrape parses with Prometheus' own Python client parser
/// (Debian's python3-prometheus-client, which tests/run-all installs) and counts the I/O a host did, per bdev, in
/// the counters and the latency histogram alike.
#[test]
fn metrics_endpoint_parses_as_prometheus_text_and_counts_io() {
    use pollux_nvme::fabrics::{AdminQueue, FabricOptions, FabricQpair};
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (port, cfg) = quickstart(dir.path());
    let mport = pollux_tests::free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let (child, sock) = start(
        dir.path(),
        &["-c", cfg.to_str().unwrap(), "--metrics", &maddr],
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut o = FabricOptions::new(addr, "nqn.2016-06.io.pollux:quickstart");
    o.io_queues = 1;
    let mut admin = AdminQueue::connect(&o).unwrap();
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 8).unwrap();
    for i in 0..10u64 {
        q.write(1, i * 8, 1, vec![i as u8; 4096], i).unwrap();
        let mut got = None;
        while got.is_none() {
            q.wait(Duration::from_secs(5), |c| got = Some(c)).unwrap();
        }
        assert!(got.unwrap().cqe.status().is_success());
    }
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&maddr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let r = get("/metrics");
    assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
    assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
    let body = r.split("\r\n\r\n").nth(1).unwrap().to_owned();
    assert!(get("/other").starts_with("HTTP/1.1 404"));
    // Prometheus' parser reads every family; the samples come back as JSON.
    let script = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.exit("python3-prometheus-client is missing (apt-get install python3-prometheus-client; tests/run-all installs it)")
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        key = s.name + "|" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[key] = [fam.type, s.value]
print(json.dumps(out))
"#;
    // Debian's Python, where Debian's package is (a pyenv python3 may come first).
    let mut py = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    py.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let val = |k: &str| {
        m.get(k)
            .unwrap_or_else(|| panic!("{k} missing from the scrape:\n{body}"))[1]
            .as_f64()
            .unwrap()
    };
    assert_eq!(val("pollux_bdev_write_ops_total|bdev=Malloc0"), 10.0);
    assert_eq!(val("pollux_bdev_written_bytes_total|bdev=Malloc0"), 40960.0);
    assert_eq!(
        m["pollux_bdev_write_latency_seconds|bdev=Malloc0"],
        serde_json::Value::Null
    );
    assert_eq!(
        val("pollux_bdev_write_latency_seconds_count|bdev=Malloc0"),
        10.0
    );
    assert_eq!(
        val("pollux_bdev_write_latency_seconds_bucket|bdev=Malloc0,le=+Inf"),
        10.0
    );
    assert!(val("pollux_bdev_write_latency_seconds_sum|bdev=Malloc0") > 0.0);
    assert_eq!(
        val("pollux_nvmf_poll_group_current_io_qpairs|poll_group=nvmf_tgt_poll_group_000"),
        1.0
    );
    assert_eq!(
        val("pollux_nvmf_subsystem_controllers|nqn=nqn.2016-06.io.pollux:quickstart"),
        1.0
    );
    assert!(val("pollux_reactor_loops_total|core=0") > 0.0);
    // docs/grafana-pollux.json asks only for what the scrape has.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dash = std::fs::read_to_string(root.join("docs/grafana-pollux.json")).unwrap();
    let names: std::collections::BTreeSet<&str> = m
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.split('|').next().unwrap())
        .collect();
    let mut asked = 0;
    for (i, _) in dash.match_indices("pollux_") {
        let n: String = dash[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if n == "pollux_" {
            continue;
        }
        asked += 1;
        assert!(
            names.contains(n.as_str()),
            "the dashboard asks for {n}, which the scrape lacks"
        );
    }
    assert!(asked > 10, "{asked}");
    drop(q);
    admin.shutdown().unwrap();
    stop(child, &sock);
}

/// `pollux_trace_commands`: each command of a traced subsystem's I/O queues is logged as
/// it completes (opcode, CID, LBA, blocks, status, latency), for one host or all, and
/// nothing once it is off.
#[test]
fn command_trace_logs_each_io_of_the_traced_subsystem_and_host() {
    use pollux_nvme::fabrics::{AdminQueue, FabricOptions, FabricQpair};
    let dir = tempfile::tempdir().unwrap();
    let (port, cfg) = quickstart(dir.path());
    let log = dir.path().join("polluxd.log");
    let (child, sock) = start_logging_to(dir.path(), &["-c", cfg.to_str().unwrap()], Some(&log));
    let nqn = "nqn.2016-06.io.pollux:quickstart";
    let traced = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("pollux_engine::nvmf::trace"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut o = FabricOptions::new(addr, nqn);
    o.io_queues = 1;
    let mut admin = AdminQueue::connect(&o).unwrap();
    let host = o.hostnqn.clone();
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 8).unwrap();
    let write = |q: &mut FabricQpair<Vec<u8>>, lba: u64| {
        q.write(1, lba, 1, vec![7; 4096], lba).unwrap();
        let mut got = None;
        while got.is_none() {
            q.wait(Duration::from_secs(5), |c| got = Some(c)).unwrap();
        }
        assert!(got.unwrap().cqe.status().is_success());
    };
    let trace = |p: &str| json(&rpc(&sock, &["pollux_trace_commands", "--json", p]));
    write(&mut q, 1);
    assert!(traced().is_empty());
    // Another host's trace leaves this one's commands out.
    trace(&format!(
        r#"{{"nqn": "{nqn}", "host": "nqn.2014-08.org.example:other", "enable": true}}"#
    ));
    write(&mut q, 2);
    assert!(traced().is_empty());
    trace(&format!(
        r#"{{"nqn": "{nqn}", "host": "{host}", "enable": true}}"#
    ));
    for lba in [10, 11, 12] {
        write(&mut q, lba);
    }
    let lines = traced();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (l, lba) in lines.iter().zip([10, 11, 12]) {
        for f in [
            "opc=1",
            &format!("slba={lba}"),
            "nlb=1",
            "sc=0",
            "qid=1",
            "us=",
        ] {
            assert!(l.contains(f), "{f} missing from {l}");
        }
    }
    trace(&format!(r#"{{"nqn": "{nqn}", "enable": false}}"#));
    write(&mut q, 20);
    assert_eq!(traced().len(), 3);
    let o = rpc(
        &sock,
        &[
            "pollux_trace_commands",
            "--json",
            r#"{"nqn": "nqn.2016-06.io.x:none", "enable": true}"#,
        ],
    );
    assert!(!o.status.success());
    drop(q);
    admin.shutdown().unwrap();
    stop(child, &sock);
}
