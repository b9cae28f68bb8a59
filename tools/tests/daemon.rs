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

fn start(dir: &Path, extra: &[&str]) -> (KillOnDrop, std::path::PathBuf) {
    let sock = dir.join("pollux.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_polluxd"))
        .args(["-m", "0x1", "--small-pools", "-r"])
        .arg(&sock)
        .args(extra)
        .spawn()
        .unwrap();
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
    assert_eq!(json(&rpc(&sock, &["framework_wait_init"])), false);
    assert_eq!(json(&rpc(&sock, &["framework_start_init"])), true);
    assert_eq!(json(&rpc(&sock, &["bdev_get_bdevs"]))[0]["name"], "Late");
    assert!(!rpc(&sock, &["framework_start_init"]).status.success());
    stop(child, &sock);
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
