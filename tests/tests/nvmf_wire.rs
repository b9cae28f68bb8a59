//! The wire format checked by a dissector no one here wrote: a session between the
//! project's initiator and target on loopback, captured and decoded by Wireshark's
//! `nvme-tcp` dissector (Debian's tshark), with header and data digests on and checked.
//! Needs root (to capture) and tshark (`tests/run-all` installs it).

use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use pollux_engine::rpc::RpcServer;
use pollux_nvme::fabrics::{AdminQueue, FabricOptions, FabricQpair};
use serde_json::json;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("tshark runs");
    assert!(out.status.success(), "tshark {args:?} failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_captured_session_decodes_as_nvme_tcp_without_errors() {
    assert!(
        Command::new("tshark").arg("-v").output().is_ok(),
        "tshark is missing: apt-get install tshark (tests/run-all installs it as root)"
    );
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "capturing on loopback needs root: run the tests as root (tests/run-all)"
    );
    let engine = Engine::builder()
        .core_mask("[0]")
        .iobuf(IobufOpts::small())
        .start()
        .unwrap();
    let rpc = RpcServer::new(engine.handle());
    let port = pollux_tests::free_port();
    let nqn = "nqn.2016-06.io.pollux:wire";
    for (m, p) in [
        (
            "bdev_malloc_create",
            json!({"name": "M0", "num_blocks": 1024, "block_size": 4096}),
        ),
        (
            "nvmf_create_transport",
            json!({"trtype": "TCP", "in_capsule_data_size": 4096}),
        ),
        (
            "nvmf_create_subsystem",
            json!({"nqn": nqn, "allow_any_host": true}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": nqn, "namespace": {"bdev_name": "M0"}}),
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn, "listen_address": {"trtype": "TCP", "traddr": "127.0.0.1", "trsvcid": port.to_string()}}),
        ),
    ] {
        rpc.call(m, Some(p)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("session.pcapng");
    let mut cap = Command::new("tshark")
        .args(["-i", "lo", "-f", &format!("tcp port {port}"), "-w"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // tshark says "Capturing on 'Loopback'" once it is ready.
    {
        use std::io::Read;
        let mut err = cap.stderr.take().unwrap();
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut b = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("Capturing on") {
            assert!(Instant::now() < deadline, "tshark did not start capturing");
            let n = err.read(&mut b).unwrap();
            assert!(n > 0, "tshark exited: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&b[..n]);
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut o = FabricOptions::new(format!("127.0.0.1:{port}").parse().unwrap(), nqn);
    o.hdgst = true;
    o.ddgst = true;
    o.io_queues = 1;
    let mut admin = AdminQueue::connect(&o).unwrap();
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 16).unwrap();
    // In-capsule (4 KiB) and R2T (64 KiB) writes, reads back.
    for (lba, len) in [(0u64, 4096usize), (8, 65536)] {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
        q.write(1, lba, (len / 4096) as u32, data.clone(), 0)
            .unwrap();
        let mut ok = false;
        while !ok {
            q.wait(Duration::from_secs(5), |c| ok = c.cqe.status().is_success())
                .unwrap();
        }
        q.read(1, lba, (len / 4096) as u32, vec![0; len], 1)
            .unwrap();
        let mut back = None;
        while back.is_none() {
            q.wait(Duration::from_secs(5), |c| back = c.buf).unwrap();
        }
        assert!(back.unwrap() == data);
    }
    drop(q);
    admin.shutdown().unwrap();
    // Let the capture catch up: a starved dumpcap may still be writing the session's tail.
    let size = || std::fs::metadata(&pcap).map(|m| m.len()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = size();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = size();
        if (now == last && now > 0) || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(cap.id() as i32, libc::SIGINT) };
    cap.wait().unwrap();
    rpc.nvmf().shutdown(Duration::from_secs(5));
    drop(rpc);
    assert!(engine.shutdown().pools_full);

    let f = pcap.to_str().unwrap();
    let decode = format!("tcp.port=={port},nvme-tcp");
    let base = [
        "-r",
        f,
        "-d",
        &decode,
        "-o",
        "nvme-tcp.check_hdgst:TRUE",
        "-o",
        "nvme-tcp.check_ddgst:TRUE",
    ];
    let types = tshark(
        &[
            &base[..],
            &["-Y", "nvme-tcp", "-T", "fields", "-e", "nvme-tcp.type"],
        ]
        .concat(),
    );
    let seen: BTreeSet<u32> = types
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|t| t.parse().ok())
        .collect();
    // ICReq, ICResp, CapsuleCommand, CapsuleResponse, H2CData, C2HData, R2T.
    for t in [0u32, 1, 4, 5, 6, 7, 9] {
        assert!(seen.contains(&t), "PDU type {t} not decoded; saw {seen:?}");
    }
    let bad = tshark(
        &[
            &base[..],
            &[
                "-Y",
                "_ws.malformed || _ws.expert.severity >= 8388608 || nvme-tcp.hdgst.status == 0 || nvme-tcp.ddgst.status == 0",
            ],
        ]
        .concat(),
    );
    assert!(bad.trim().is_empty(), "tshark flags these packets:\n{bad}");
    // Digests were present and checked good.
    let good = tshark(&[&base[..], &["-Y", "nvme-tcp.hdgst.status == 1"]].concat());
    assert!(!good.trim().is_empty(), "no header digest was verified");
    let good = tshark(&[&base[..], &["-Y", "nvme-tcp.ddgst.status == 1"]].concat());
    assert!(!good.trim().is_empty(), "no data digest was verified");
}
