//! Remote namespaces as bdevs, with multipath and reconnect: two polluxd targets (A and
//! B) export one shared backing file as the same namespace; a third polluxd (C) attaches
//! both as two paths of one NVMe-oF controller (`bdev_nvme_attach_controller` trtype
//! TCP, `multipath`) and re-exports its bdev. pollux-perf writes with crc32c verify
//! through C while A is killed and restarted, then B: I/O moves to the other path, the
//! lost path reconnects, and verify finds no error. With both targets gone, I/O fails
//! with Host Pathing Error once fast_io_fail_timeout_sec has passed, instead of hanging.

use pollux_tests::{KillOnDrop, daemon, free_port};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BACK: &str = "nqn.2016-06.io.pollux:backend";
const FRONT: &str = "nqn.2016-06.io.pollux:front";
const NGUID: &str = "0123456789ABCDEF0123456789ABCDEF";

fn rpc(sock: &Path, method: &str, params: Value) -> Value {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_pollux-rpc"))
        .arg("-s")
        .arg(sock)
        .arg(method)
        .arg("--json")
        .arg(params.to_string())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{method}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// A backend target on `file`, listening on `port`.
fn backend(dir: &Path, tag: &str, file: &Path, port: u16) -> (KillOnDrop, PathBuf) {
    let bdevs = json!([
        {"method": "bdev_uring_create", "params": {"name": "U0", "filename": file, "block_size": 4096}}]);
    backend_with(dir, tag, bdevs, "U0", port)
}

/// A backend target exporting bdev `ns` of `bdevs`, listening on `port`.
fn backend_with(dir: &Path, tag: &str, bdevs: Value, ns: &str, port: u16) -> (KillOnDrop, PathBuf) {
    let ss = json!({"nqn": BACK, "allow_any_host": true, "serial_number": "POLLUXMP"});
    backend_ss(dir, tag, bdevs, ns, port, ss)
}

/// A backend target with subsystem parameters `ss`.
fn backend_ss(
    dir: &Path,
    tag: &str,
    bdevs: Value,
    ns: &str,
    port: u16,
    ss: Value,
) -> (KillOnDrop, PathBuf) {
    let cfg = json!({"subsystems": [
        {"subsystem": "bdev", "config": bdevs},
        {"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
            {"method": "nvmf_create_subsystem", "params": ss},
            {"method": "nvmf_subsystem_add_ns", "params": {"nqn": BACK, "namespace": {"bdev_name": ns, "nguid": NGUID}}},
            {"method": "nvmf_subsystem_add_listener", "params": {"nqn": BACK, "listen_address":
                {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}}]}
    ]});
    let path = dir.join(format!("{tag}.json"));
    std::fs::write(&path, cfg.to_string()).unwrap();
    let sock = dir.join(format!("{tag}.sock"));
    let _ = std::fs::remove_file(&sock);
    let d = daemon::start(
        env!("CARGO_BIN_EXE_polluxd"),
        &["-m", "0x1", "--small-pools"],
        &path,
        &sock,
        true,
    );
    (d, sock)
}

/// polluxd C: `bdevs` (config entries), and when `port` is given subsystem FRONT
/// exporting Remoten1 there.
fn front(dir: &Path, bdevs: Value, port: Option<u16>, quiet: bool) -> (KillOnDrop, PathBuf) {
    let mut subsystems = vec![json!({"subsystem": "bdev", "config": bdevs})];
    if let Some(pc) = port {
        subsystems.push(json!({"subsystem": "nvmf", "config": [
            {"method": "nvmf_create_transport", "params": {"trtype": "TCP"}},
            {"method": "nvmf_create_subsystem", "params": {"nqn": FRONT, "allow_any_host": true}},
            {"method": "nvmf_subsystem_add_ns", "params": {"nqn": FRONT, "namespace": {"bdev_name": "Remoten1"}}},
            {"method": "nvmf_subsystem_add_listener", "params": {"nqn": FRONT, "listen_address":
                {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": pc.to_string()}}}]}));
    }
    let cpath = dir.join("c.json");
    std::fs::write(&cpath, json!({ "subsystems": subsystems }).to_string()).unwrap();
    let csock = dir.join("c.sock");
    let c = daemon::start(
        env!("CARGO_BIN_EXE_polluxd"),
        &["-m", "0x2", "--small-pools"],
        &cpath,
        &csock,
        quiet,
    );
    (c, csock)
}

fn kill(d: KillOnDrop) {
    let mut c = d.take();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
    let _ = c.wait();
}

fn perf(port: u16, args: &[&str]) -> std::process::Child {
    let target = format!(
        "--target=trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{FRONT} ns:1"
    );
    Command::new(env!("CARGO_BIN_EXE_pollux-perf"))
        .args([
            "--name=mp",
            "--ioengine=nvmf",
            &target,
            "--output-format=json",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A short read through C, which must fail with Host Pathing Error: how long it took.
fn read_fails_without_path(pc: u16) -> Duration {
    let t0 = Instant::now();
    let o = perf(
        pc,
        &[
            "--rw=randread",
            "--bs=4k",
            "--iodepth=4",
            "--size=4m",
            "--runtime=2",
        ],
    )
    .wait_with_output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("host pathing error"),
        "I/O without a path: {err}"
    );
    t0.elapsed()
}

fn report(o: &Output) -> Value {
    let text = String::from_utf8_lossy(&o.stdout);
    let start = text
        .find('{')
        .unwrap_or_else(|| panic!("no JSON report: {}", String::from_utf8_lossy(&o.stderr)));
    serde_json::from_str(&text[start..]).unwrap()
}

fn paths(sock: &Path) -> Vec<Value> {
    let v = rpc(sock, "bdev_nvme_get_controllers", json!({"name": "Remote"}));
    v[0]["ctrlrs"].as_array().unwrap().clone()
}

fn wait_enabled(sock: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = paths(sock);
        if p.iter().filter(|c| c["state"] == "enabled").count() == n {
            return;
        }
        assert!(Instant::now() < deadline, "paths not enabled: {p:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn io_survives_the_loss_of_each_path_in_turn_and_fails_cleanly_without_any() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let (a, _) = backend(dir.path(), "a", &file, pa);
    let (b, _) = backend(dir.path(), "b", &file, pb);
    let attach = |port: u16| {
        json!({"method": "bdev_nvme_attach_controller", "params": {
            "name": "Remote", "trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
            "trsvcid": port.to_string(), "subnqn": BACK, "multipath": "multipath",
            "ctrlr_loss_timeout_sec": 8, "reconnect_delay_sec": 1, "fast_io_fail_timeout_sec": 3}})
    };
    let (c, csock) = front(dir.path(), json!([attach(pa), attach(pb)]), Some(pc), false);
    let p = paths(&csock);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().all(|c| c["state"] == "enabled"), "{p:?}");
    // The saved config recreates both paths.
    let saved = rpc(&csock, "save_config", Value::Null).to_string();
    assert_eq!(saved.matches("bdev_nvme_attach_controller").count(), 2);

    // Writes with verify after every 64, through C, for 12 s, while the paths fail.
    let run = perf(
        pc,
        &[
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=8",
            "--size=32m",
            "--time_based",
            "--runtime=12",
            "--verify=crc32c",
            "--verify_backlog=64",
            "--rate_iops=4000",
        ],
    );
    std::thread::sleep(Duration::from_secs(2));
    kill(a);
    std::thread::sleep(Duration::from_secs(2));
    let (a, _) = backend(dir.path(), "a2", &file, pa);
    wait_enabled(&csock, 2);
    std::thread::sleep(Duration::from_secs(1));
    kill(b);
    std::thread::sleep(Duration::from_secs(2));
    let (b, _) = backend(dir.path(), "b2", &file, pb);
    let o = run.wait_with_output().unwrap();
    let v = report(&o);
    let j = &v["jobs"][0];
    assert!(
        o.status.success() && j["error"] == 0,
        "pollux-perf failed through path loss: {}\n{j}",
        String::from_utf8_lossy(&o.stderr)
    );
    let ios = j["write"]["total_ios"].as_u64().unwrap();
    let reads = j["read"]["total_ios"].as_u64().unwrap();
    assert!(
        ios > 10_000 && reads > 10_000,
        "{ios} writes, {reads} verify reads"
    );
    let stall_ms = j["write"]["clat_ns"]["max"].as_f64().unwrap() / 1e6;
    eprintln!(
        "multipath: {ios} writes and {reads} verify reads, zero errors; longest write (the failover stall) {stall_ms:.1} ms"
    );
    wait_enabled(&csock, 2);
    let p = paths(&csock);
    for c in &p {
        assert!(c["stats"]["reconnects"].as_u64().unwrap() >= 1, "{c}");
        assert!(c["stats"]["path_losses"].as_u64().unwrap() >= 1, "{c}");
    }
    let ctrl = &rpc(
        &csock,
        "bdev_nvme_get_controllers",
        json!({"name": "Remote"}),
    )[0];
    assert!(
        ctrl["io_retried_on_path_failure"].as_u64().is_some(),
        "{ctrl}"
    );
    // bdev_nvme_reset_controller: both paths reconnect.
    let before: u64 = p
        .iter()
        .map(|c| c["stats"]["reconnects"].as_u64().unwrap())
        .sum();
    rpc(
        &csock,
        "bdev_nvme_reset_controller",
        json!({"name": "Remote"}),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = paths(&csock);
        let now: u64 = p
            .iter()
            .map(|c| c["stats"]["reconnects"].as_u64().unwrap())
            .sum();
        if now >= before + 2 && p.iter().all(|c| c["state"] == "enabled") {
            break;
        }
        assert!(Instant::now() < deadline, "reset did not reconnect: {p:?}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Both targets gone: I/O fails with Host Pathing Error after fast_io_fail_timeout_sec
    // (3 s), not hanging.
    kill(a);
    kill(b);
    let took = read_fails_without_path(pc);
    assert!(took < Duration::from_secs(30), "failing took {took:?}");
    eprintln!("no path: I/O failed with Host Pathing Error after {took:?}");
    let p = paths(&csock);
    assert!(p.iter().all(|c| c["state"] != "enabled"), "{p:?}");
    // Past ctrlr_loss_timeout_sec (8 s) the paths are given up: "failed", and I/O fails
    // at once.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !paths(&csock).iter().all(|c| c["state"] == "failed") {
        assert!(
            Instant::now() < deadline,
            "paths not given up: {:?}",
            paths(&csock)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = read_fails_without_path(pc);
    eprintln!("paths given up: I/O failed with Host Pathing Error after {took:?}");
    // Detaching the controller removes its bdev: the front namespace goes with it.
    rpc(
        &csock,
        "bdev_nvme_detach_controller",
        json!({"name": "Remote"}),
    );
    assert_eq!(
        rpc(&csock, "bdev_nvme_get_controllers", Value::Null),
        json!([])
    );
    daemon::stop(c);
}

/// `action_on_timeout` abort: a read that a delay bdev holds for 4 s on the remote
/// target outlives `timeout_us` (0.5 s); the path thread sends an Abort, the remote
/// target aborts it, and the host sees Command Abort Requested, counted on the path.
#[test]
fn a_command_past_timeout_us_is_aborted_on_the_remote_target() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pc) = (free_port(), free_port());
    let bdevs = json!([
        {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 4096, "block_size": 4096}},
        {"method": "bdev_delay_create", "params": {"base_bdev_name": "M0", "name": "D0",
            "avg_read_latency": 4000000, "p99_read_latency": 4000000,
            "avg_write_latency": 0, "p99_write_latency": 0}}]);
    let (_a, _) = backend_with(dir.path(), "a", bdevs, "D0", pa);
    let bdevs = json!([
        {"method": "bdev_nvme_set_options", "params": {"timeout_us": 500000, "action_on_timeout": "abort"}},
        {"method": "bdev_nvme_attach_controller", "params": {
            "name": "Remote", "trtype": "TCP", "traddr": "127.0.0.1",
            "trsvcid": pa.to_string(), "subnqn": BACK}}]);
    let (c, csock) = front(dir.path(), bdevs, Some(pc), true);
    let t0 = Instant::now();
    let o = perf(pc, &["--rw=read", "--bs=4k", "--iodepth=1", "--size=4k"])
        .wait_with_output()
        .unwrap();
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("abort"), "{err}");
    assert!(
        took < Duration::from_secs(4),
        "the read was not aborted: {took:?}"
    );
    let p = paths(&csock);
    assert!(p[0]["stats"]["timeouts"].as_u64().unwrap() >= 1, "{p:?}");
    assert!(p[0]["stats"]["aborts"].as_u64().unwrap() >= 1, "{p:?}");
    assert_eq!(p[0]["state"], "enabled", "{p:?}");
    eprintln!("timeout: read aborted after {took:?}");
    daemon::stop(c);
}

/// Namespaces added to, removed from and resized in the remote subsystem reach the
/// bdevs through the Namespace Attribute Changed event: a bdev appears, goes, grows.
#[test]
fn namespaces_added_and_removed_remotely_become_and_stop_being_bdevs() {
    let dir = tempfile::tempdir().unwrap();
    let pa = free_port();
    let bdevs = json!([
        {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 2048, "block_size": 4096}},
        {"method": "bdev_malloc_create", "params": {"name": "M1", "num_blocks": 1024, "block_size": 4096}}]);
    let (_a, asock) = backend_with(dir.path(), "a", bdevs, "M0", pa);
    let bdevs = json!([
        {"method": "bdev_nvme_attach_controller", "params": {
            "name": "Remote", "trtype": "TCP", "traddr": "127.0.0.1",
            "trsvcid": pa.to_string(), "subnqn": BACK}}]);
    let (c, csock) = front(dir.path(), bdevs, None, true);
    let names = || -> Vec<String> {
        rpc(&csock, "bdev_get_bdevs", Value::Null)
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let wait_for = |want: &[&str]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while names() != want {
            assert!(
                Instant::now() < deadline,
                "bdevs {:?}, not {want:?}",
                names()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(&["Remoten1"]);
    rpc(
        &asock,
        "nvmf_subsystem_add_ns",
        json!({"nqn": BACK, "namespace": {"bdev_name": "M1", "nsid": 2}}),
    );
    wait_for(&["Remoten1", "Remoten2"]);
    let b = &rpc(&csock, "bdev_get_bdevs", json!({"name": "Remoten2"}))[0];
    assert_eq!(b["num_blocks"], 1024, "{b}");
    rpc(
        &asock,
        "nvmf_subsystem_remove_ns",
        json!({"nqn": BACK, "nsid": 2}),
    );
    wait_for(&["Remoten1"]);
    let ctrl = &rpc(
        &csock,
        "bdev_nvme_get_controllers",
        json!({"name": "Remote"}),
    )[0];
    assert_eq!(ctrl["ctrlrs"][0]["bdevs"], json!(["Remoten1"]), "{ctrl}");
    // A namespace resized remotely (bdev_null_resize on the target): the bdev follows.
    rpc(
        &asock,
        "bdev_null_create",
        json!({"name": "N0", "num_blocks": 2048, "block_size": 4096}),
    );
    rpc(
        &asock,
        "nvmf_subsystem_add_ns",
        json!({"nqn": BACK, "namespace": {"bdev_name": "N0", "nsid": 3}}),
    );
    wait_for(&["Remoten1", "Remoten3"]);
    rpc(
        &asock,
        "bdev_null_resize",
        json!({"name": "N0", "new_size": 16}),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let b = &rpc(&csock, "bdev_get_bdevs", json!({"name": "Remoten3"}))[0];
        if b["num_blocks"] == 4096 {
            break;
        }
        assert!(Instant::now() < deadline, "Remoten3 not resized: {b}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Shrinking a null bdev is refused, as SPDK does.
    let o = Command::new(env!("CARGO_BIN_EXE_pollux-rpc"))
        .arg("-s")
        .arg(&asock)
        .args([
            "bdev_null_resize",
            "--json",
            r#"{"name": "N0", "new_size": 1}"#,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success(), "shrinking was accepted");
    daemon::stop(c);
}

/// Writes of bdev U0 on a backend so far.
fn writes(sock: &Path) -> u64 {
    rpc(sock, "bdev_get_iostat", json!({"name": "U0"}))["bdevs"][0]["num_write_ops"]
        .as_u64()
        .unwrap()
}

/// Sets the ANA state of every group of a backend's listener.
fn set_ana(sock: &Path, port: u16, state: &str) {
    rpc(
        sock,
        "nvmf_subsystem_listener_set_ana_state",
        json!({"nqn": BACK, "ana_state": state, "listen_address":
            {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}),
    );
}

/// Waits until C's paths show these ANA states for namespace 1 (in path order).
fn wait_ana(csock: &Path, want: [&str; 2]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = paths(csock);
        let got: Vec<String> = p
            .iter()
            .map(|c| {
                c["ana_states"][0]["ana_state"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "ANA states {got:?}, not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whose writes grow over a second: (A's, B's).
fn growth(asock: &Path, bsock: &Path) -> (u64, u64) {
    let (a0, b0) = (writes(asock), writes(bsock));
    std::thread::sleep(Duration::from_secs(1));
    (writes(asock) - a0, writes(bsock) - b0)
}

/// Two gateways with `ana_reporting` and their own controller ID ranges export one
/// shared file; C attaches both as paths. I/O follows the ANA states the gateways
/// report: to the optimized path only (even when it is the second), over to the other
/// when a state changes (an ANA Change event re-reads the log page), and verify finds
/// no error. With every path inaccessible, I/O fails with Host Pathing Error at once.
#[test]
fn io_follows_the_ana_states_the_targets_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let gateway = |tag: &str, port: u16, min: u16| {
        let bdevs = json!([{"method": "bdev_uring_create", "params":
            {"name": "U0", "filename": file, "block_size": 4096}}]);
        let ss = json!({"nqn": BACK, "allow_any_host": true, "serial_number": "POLLUXANA",
            "ana_reporting": true, "min_cntlid": min, "max_cntlid": min + 99});
        backend_ss(dir.path(), tag, bdevs, "U0", port, ss)
    };
    let (_a, asock) = gateway("a", pa, 1);
    let (_b, bsock) = gateway("b", pb, 100);
    set_ana(&asock, pa, "non_optimized");
    let attach = |port: u16| {
        json!({"method": "bdev_nvme_attach_controller", "params": {
            "name": "Remote", "trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1",
            "trsvcid": port.to_string(), "subnqn": BACK, "multipath": "multipath"}})
    };
    let (c, csock) = front(dir.path(), json!([attach(pa), attach(pb)]), Some(pc), true);
    let p = paths(&csock);
    assert!(p[0]["cntlid"].as_u64().unwrap() < 100, "{p:?}");
    assert!(p[1]["cntlid"].as_u64().unwrap() >= 100, "{p:?}");
    wait_ana(&csock, ["non_optimized", "optimized"]);

    let run = perf(
        pc,
        &[
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=8",
            "--size=16m",
            "--time_based",
            "--runtime=9",
            "--verify=crc32c",
            "--verify_backlog=64",
            "--rate_iops=3000",
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let (ga, gb) = growth(&asock, &bsock);
    assert!(
        ga == 0 && gb > 0,
        "A non-optimized, B optimized: writes {ga} on A, {gb} on B"
    );
    // A optimized, then B inaccessible: the writes move to A.
    set_ana(&asock, pa, "optimized");
    set_ana(&bsock, pb, "inaccessible");
    let t0 = Instant::now();
    wait_ana(&csock, ["optimized", "inaccessible"]);
    eprintln!("ana: the host saw the new states after {:?}", t0.elapsed());
    std::thread::sleep(Duration::from_millis(300));
    let (ga, gb) = growth(&asock, &bsock);
    assert!(
        ga > 0 && gb == 0,
        "B inaccessible: writes {ga} on A, {gb} on B"
    );
    // Both optimized: active-passive keeps to the first.
    set_ana(&bsock, pb, "optimized");
    wait_ana(&csock, ["optimized", "optimized"]);
    // Round robin across the optimized paths.
    rpc(
        &csock,
        "bdev_nvme_set_multipath_policy",
        json!({"name": "Remoten1", "policy": "active_active"}),
    );
    std::thread::sleep(Duration::from_millis(300));
    let (ga, gb) = growth(&asock, &bsock);
    assert!(
        ga > 0 && gb > 0,
        "active-active: writes {ga} on A, {gb} on B"
    );
    // The queue-depth selector: the path with the fewest commands outstanding.
    rpc(
        &csock,
        "bdev_nvme_set_multipath_policy",
        json!({"name": "Remoten1", "policy": "active_active", "selector": "queue_depth"}),
    );
    let ctrl = &rpc(
        &csock,
        "bdev_nvme_get_controllers",
        json!({"name": "Remote"}),
    )[0];
    assert_eq!(
        ctrl["multipath_policy"]["selector"], "queue_depth",
        "{ctrl}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (ga, gb) = growth(&asock, &bsock);
    assert!(ga > 0 && gb > 0, "queue_depth: writes {ga} on A, {gb} on B");
    let o = run.wait_with_output().unwrap();
    let v = report(&o);
    let j = &v["jobs"][0];
    assert!(
        o.status.success() && j["error"] == 0,
        "pollux-perf failed across ANA changes: {}\n{j}",
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "ana: {} writes and {} verify reads across the ANA changes, zero errors; longest write {:.1} ms",
        j["write"]["total_ios"],
        j["read"]["total_ios"],
        j["write"]["clat_ns"]["max"].as_f64().unwrap() / 1e6
    );
    // No accessible path: I/O fails at once, it does not wait.
    set_ana(&asock, pa, "inaccessible");
    set_ana(&bsock, pb, "inaccessible");
    wait_ana(&csock, ["inaccessible", "inaccessible"]);
    let took = read_fails_without_path(pc);
    assert!(took < Duration::from_secs(5), "{took:?}");
    daemon::stop(c);
}
