//! Load: 64 connections at queue depth 128 on one poll group, with data verified, while
//! the RPC socket is hammered with `nvmf_get_stats` and subsystems are created and
//! deleted: no error, no I/O and no RPC waiting a second or more; the maximum
//! latencies seen are printed.

use pollux_tests::daemon;
use serde_json::{Value, json};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const NQN: &str = "nqn.2016-06.io.pollux:load";

/// A JSON-RPC client on the UNIX socket: one request, one response, timed.
struct Rpc {
    s: UnixStream,
    id: u64,
}

impl Rpc {
    fn connect(sock: &Path) -> Rpc {
        Rpc {
            s: UnixStream::connect(sock).unwrap(),
            id: 0,
        }
    }

    fn call(&mut self, method: &str, params: Value) -> (Result<Value, Value>, Duration) {
        self.id += 1;
        let req = json!({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params});
        let t = Instant::now();
        self.s.write_all(req.to_string().as_bytes()).unwrap();
        let v: Value = serde_json::Deserializer::from_reader(&self.s)
            .into_iter::<Value>()
            .next()
            .expect("a response")
            .expect("JSON");
        let took = t.elapsed();
        assert_eq!(v["id"], self.id);
        match v.get("error") {
            Some(e) => (Err(e.clone()), took),
            None => (Ok(v["result"].clone()), took),
        }
    }
}

#[test]
fn sixty_four_connections_at_qd128_and_a_busy_rpc_socket_never_stall() {
    let dir = tempfile::tempdir().unwrap();
    let port = pollux_tests::free_port();
    let bdevs = json!([
        {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 16384, "block_size": 4096}},
        {"method": "bdev_null_create", "params": {"name": "N1", "num_blocks": 1024, "block_size": 4096}}]);
    let transport = json!({"max_queue_depth": 256});
    let cfg = daemon::nvmf_config(bdevs, transport, NQN, &["M0"], port);
    let cfgp = dir.path().join("config.json");
    std::fs::write(&cfgp, cfg.to_string()).unwrap();
    let sock = dir.path().join("pollux.sock");
    let child = daemon::start(
        env!("CARGO_BIN_EXE_polluxd"),
        &["-m", "0x1"],
        &cfgp,
        &sock,
        true,
    );

    let done = Arc::new(AtomicBool::new(false));
    // Two RPC clients: one asking for statistics, one adding and removing subsystems.
    let stats = {
        let (sock, done) = (sock.clone(), done.clone());
        std::thread::spawn(move || {
            let mut c = Rpc::connect(&sock);
            let (mut n, mut max) = (0u64, Duration::ZERO);
            while !done.load(Ordering::Relaxed) {
                let (r, took) = c.call("nvmf_get_stats", json!({}));
                r.expect("nvmf_get_stats");
                max = max.max(took);
                n += 1;
            }
            (n, max)
        })
    };
    let churn = {
        let (sock, done) = (sock.clone(), done.clone());
        std::thread::spawn(move || {
            let mut c = Rpc::connect(&sock);
            let (mut n, mut max) = (0u64, Duration::ZERO);
            let p2 = pollux_tests::free_port().to_string();
            while !done.load(Ordering::Relaxed) {
                let nqn = format!("nqn.2016-06.io.pollux:extra{n}");
                for (m, p) in [
                    (
                        "nvmf_create_subsystem",
                        json!({"nqn": nqn, "allow_any_host": true}),
                    ),
                    (
                        "nvmf_subsystem_add_ns",
                        json!({"nqn": nqn, "namespace": {"bdev_name": "N1"}}),
                    ),
                    (
                        "nvmf_subsystem_add_listener",
                        json!({"nqn": nqn, "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": p2}}),
                    ),
                    ("nvmf_delete_subsystem", json!({"nqn": nqn})),
                ] {
                    let (r, took) = c.call(m, p);
                    r.unwrap_or_else(|e| panic!("{m}: {e}"));
                    max = max.max(took);
                }
                n += 1;
            }
            (n, max)
        })
    };

    let target = format!(
        "--target=trtype:tcp adrfam:ipv4 traddr:127.0.0.1 trsvcid:{port} subnqn:{NQN} ns:1"
    );
    // One job per connection, each on a region of its own (verify needs it: blocks
    // two jobs both wrote have no one expected content).
    let mut args: Vec<String> = [
        "--ioengine=nvmf",
        target.as_str(),
        "--iodepth=128",
        "--rw=randrw",
        "--bs=4k",
        "--size=1m",
        "--verify=crc32c",
        "--verify_backlog=256",
        "--runtime=8",
        "--time_based",
        "--group_reporting",
        "--output-format=json",
    ]
    .map(String::from)
    .to_vec();
    for i in 0..64 {
        args.push(format!("--name=load{i}"));
        args.push(format!("--offset={}", i << 20));
    }
    let o = Command::new(env!("CARGO_BIN_EXE_pollux-perf"))
        .args(&args)
        .output()
        .unwrap();
    done.store(true, Ordering::Relaxed);
    let (stat_calls, stat_max) = stats.join().unwrap();
    let (subsystems, churn_max) = churn.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let v: Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    let j = &v["jobs"][0];
    assert_eq!(j["error"], 0);
    let max_ns = |d: &str| j[d]["lat_ns"]["max"].as_f64().unwrap();
    let io_max = max_ns("read").max(max_ns("write"));
    let iops = j["read"]["iops"].as_f64().unwrap() + j["write"]["iops"].as_f64().unwrap();
    println!(
        "64 x QD128: {iops:.0} IOPS, max I/O latency {:.1} ms; {stat_calls} nvmf_get_stats, \
         max {stat_max:?}; {subsystems} subsystems added and deleted, slowest call {churn_max:?}",
        io_max / 1e6
    );
    assert!(io_max < 1e9, "an I/O took {:.3} s", io_max / 1e9);
    assert!(
        stat_max < Duration::from_secs(1),
        "nvmf_get_stats took {stat_max:?}"
    );
    assert!(
        churn_max < Duration::from_secs(1),
        "a subsystem RPC took {churn_max:?}"
    );
    assert!(stat_calls > 0 && subsystems > 0);
    let s = Rpc::connect(&sock)
        .call("nvmf_get_stats", json!({}))
        .0
        .unwrap();
    assert_eq!(
        s["poll_groups"].as_array().unwrap().len(),
        1,
        "one poll group"
    );
    daemon::stop(child);
}
