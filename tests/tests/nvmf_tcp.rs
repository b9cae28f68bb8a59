//! The NVMe/TCP target end to end over loopback: configured by JSON-RPC exactly as
//! polluxd is, driven by the project's own initiator (`pollux_nvme::fabrics`) and by
//! raw PDUs for what a well-behaved host never sends.

use pollux_engine::dma::{HugepagePolicy, IobufOpts};
use pollux_engine::reactor::Engine;
use pollux_engine::rpc::RpcServer;
use pollux_nvme::fabrics::{AdminQueue, Completion, Error, FabricOptions, FabricQpair};
use pollux_nvme::spec::admin::{GetLogPageDw, admin_opc, aer_dw0, feature, log_id};
use pollux_nvme::spec::cmd::{SglDescriptor, Sqe, Status, sgl_subtype, sgl_type};
use pollux_nvme::spec::fabrics::{DISCOVERY_NQN, FabricsCmd, OPC_FABRICS, fctype};
use pollux_nvme::spec::tcp::{
    self as pdu, CapsuleCmd, CommonHeader, DataHeader, IcReq, Negotiated, PduType,
};
use pollux_tests::raw::{RAW_HOST, Raw};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromZeros, IntoBytes};

const NQN: &str = "nqn.2016-06.io.pollux:test";

/// polluxd in-process: an engine, the RPC methods, the target.
struct Daemon {
    engine: Option<Engine>,
    rpc: Arc<RpcServer>,
    addr: SocketAddr,
}

impl Daemon {
    /// Two malloc namespaces (4 KiB and 512 B blocks) in subsystem NQN on a fresh port.
    fn start() -> Daemon {
        Self::start_with(json!({"trtype": "TCP"}), true)
    }

    fn start_with(transport: Value, any_host: bool) -> Daemon {
        Self::start_with_pools(
            transport,
            any_host,
            IobufOpts {
                hugepages: HugepagePolicy::Prefer,
                ..IobufOpts::small()
            },
        )
    }

    fn start_with_pools(transport: Value, any_host: bool, pools: IobufOpts) -> Daemon {
        let n = std::thread::available_parallelism().unwrap().get().min(2);
        let engine = Engine::builder()
            .core_mask(if n == 2 { "0-1" } else { "[0]" })
            .iobuf(pools)
            .start()
            .unwrap();
        let rpc = Arc::new(RpcServer::new(engine.handle()));
        let d = Daemon::bare(engine, rpc, transport, any_host);
        d.call(
            "bdev_malloc_create",
            json!({"name": "M0", "num_blocks": 4096, "block_size": 4096}),
        );
        d.call(
            "bdev_malloc_create",
            json!({"name": "M1", "num_blocks": 16384, "block_size": 512}),
        );
        d.call(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "M0"}}),
        );
        d.call(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "M1"}}),
        );
        d
    }

    /// The controller twin attached as NVMe bdev `name` with a CMB data pool, its
    /// namespace added to NQN: (the twin, the controller, the NSID).
    fn twin_with_cmb_data(
        &self,
        name: &str,
    ) -> (
        Arc<pollux_nvme::pci::twin::Twin>,
        Arc<pollux_engine::bdev::nvme::NvmeController>,
        u32,
    ) {
        let (twin, ctrl) = self.attach_twin(name);
        let nsid = self
            .call(
                "nvmf_subsystem_add_ns",
                json!({"nqn": NQN, "namespace": {"bdev_name": format!("{name}n1")}}),
            )
            .as_u64()
            .unwrap() as u32;
        (twin, ctrl, nsid)
    }

    /// The controller twin attached as NVMe bdev `name` with a CMB data pool.
    fn attach_twin(
        &self,
        name: &str,
    ) -> (
        Arc<pollux_nvme::pci::twin::Twin>,
        Arc<pollux_engine::bdev::nvme::NvmeController>,
    ) {
        use pollux_engine::bdev::nvme;
        let twin = Arc::new(pollux_nvme::pci::twin::Twin::new());
        let (ctrl, bdevs) = nvme::attach_device(
            nvme::NvmeAttachOpts {
                name: name.into(),
                traddr: "twin".into(),
                ctrlr: Default::default(),
                cmb_data: true,
            },
            twin.clone(),
        )
        .unwrap();
        for b in bdevs {
            self.rpc.nvmf().engine().bdevs().register(b).unwrap();
        }
        (twin, ctrl)
    }

    /// One poll group, small pools, the transport and subsystem, no namespace.
    fn one_core(transport: Value) -> Daemon {
        let engine = Engine::builder()
            .core_mask("[0]")
            .iobuf(IobufOpts::small())
            .start()
            .unwrap();
        let rpc = Arc::new(RpcServer::new(engine.handle()));
        Daemon::bare(engine, rpc, transport, true)
    }

    /// The transport and subsystem NQN, listening on a fresh port (and in discovery),
    /// with no namespace yet.
    fn bare(engine: Engine, rpc: Arc<RpcServer>, transport: Value, any_host: bool) -> Daemon {
        let port = pollux_tests::free_port();
        let d = Daemon {
            engine: Some(engine),
            rpc,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
        };
        d.call("nvmf_create_transport", transport);
        d.call(
            "nvmf_create_subsystem",
            json!({"nqn": NQN, "allow_any_host": any_host, "serial_number": "PX123", "model_number": "Pollux test"}),
        );
        let la = json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()});
        d.call(
            "nvmf_subsystem_add_listener",
            json!({"nqn": NQN, "listen_address": la}),
        );
        d.call(
            "nvmf_subsystem_add_listener",
            json!({"nqn": "discovery", "listen_address": la}),
        );
        d
    }

    fn call(&self, method: &str, params: Value) -> Value {
        self.rpc
            .call(method, Some(params))
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    fn opts(&self) -> FabricOptions {
        let mut o = FabricOptions::new(self.addr, NQN);
        o.io_queues = 4;
        o.timeout = Duration::from_secs(10);
        // Tests that keep the admin queue silent while a loaded machine works through
        // their I/O must not meet the keep-alive timeout; its own test sets a short one.
        o.kato_ms = 60_000;
        o
    }

    fn stats(&self) -> Vec<Value> {
        self.call("nvmf_get_stats", json!({}))["poll_groups"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn stat(&self, key: &str) -> u64 {
        self.stats().iter().map(|p| p[key].as_u64().unwrap()).sum()
    }

    /// Waits until no connection is open and every data buffer is back.
    fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.stats();
            let open: u64 = s
                .iter()
                .map(|p| p["current_connections"].as_u64().unwrap())
                .sum();
            let bufs: u64 = s
                .iter()
                .map(|p| p["iobuf_outstanding"].as_u64().unwrap())
                .sum();
            let pending: u64 = s
                .iter()
                .map(|p| p["pending_bdev_io"].as_u64().unwrap())
                .sum();
            if open == 0 && bufs == 0 && pending == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "target not idle: {s:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.rpc.nvmf().shutdown(Duration::from_secs(30));
        if let Some(e) = self.engine.take() {
            let r = e.shutdown();
            if !std::thread::panicking() {
                assert!(r.pools_full, "buffers missing at shutdown: {r:?}");
            }
        }
    }
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The completion of the one command outstanding on `q`.
fn wait_one(q: &mut FabricQpair<Vec<u8>>) -> Completion<Vec<u8>> {
    let mut out = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.is_none() {
        q.wait(Duration::from_millis(100), |c| {
            assert!(
                out.is_none(),
                "wait_one with more than one command outstanding"
            );
            out = Some(c)
        })
        .unwrap();
        assert!(Instant::now() < deadline, "no completion");
    }
    out.unwrap()
}

/// Writes then reads back, on every queue pair and namespace, sizes from one block to
/// 128 KiB (R2T for everything above the in-capsule size).
fn write_read_verify(admin: &mut AdminQueue, qpairs: &mut [FabricQpair<Vec<u8>>]) {
    let nss = admin.active_namespaces().unwrap();
    assert_eq!(nss, vec![1, 2]);
    for (qi, q) in qpairs.iter_mut().enumerate() {
        for &nsid in &nss {
            let bs = admin.identify_namespace(nsid).unwrap().block_size() as usize;
            let mut lba = (qi as u64) * 1024;
            for len in [bs, 4096, 8192, 65536, 131072] {
                let nlb = (len / bs) as u32;
                let data = pattern(len, lba ^ nsid as u64 ^ (qi as u64) << 20);
                q.write(nsid, lba, nlb, data.clone(), 1).unwrap();
                let c = wait_one(q);
                assert!(
                    c.cqe.status().is_success(),
                    "write {len}: {:?}",
                    c.cqe.status()
                );
                q.read(nsid, lba, nlb, vec![0; len], 2).unwrap();
                let c = wait_one(q);
                assert!(
                    c.cqe.status().is_success(),
                    "read {len}: {:?}",
                    c.cqe.status()
                );
                assert!(c.buf.unwrap() == data, "data mismatch: ns {nsid} len {len}");
                lba += nlb as u64;
            }
        }
    }
    // Many in flight at once: a full queue of 4 KiB writes then reads.
    let q = &mut qpairs[0];
    let depth = 32u64;
    for i in 0..depth {
        q.write(1, 2048 + i, 1, pattern(4096, 77 + i), i).unwrap();
    }
    let mut done = 0;
    while done < depth {
        q.wait(Duration::from_secs(10), |c| {
            assert!(c.cqe.status().is_success());
            done += 1;
        })
        .unwrap();
    }
    for i in 0..depth {
        q.read(1, 2048 + i, 1, vec![0; 4096], i).unwrap();
    }
    let mut done = 0;
    while done < depth {
        q.wait(Duration::from_secs(10), |c| {
            assert!(c.cqe.status().is_success());
            assert!(c.buf.unwrap() == pattern(4096, 77 + c.tag));
            done += 1;
        })
        .unwrap();
    }
}

#[test]
fn configured_by_rpc_then_data_verifies_over_several_queues_and_namespaces() {
    let d = Daemon::start();
    for (hd, dd) in [(false, false), (true, true), (true, false)] {
        let mut o = d.opts();
        o.hdgst = hd;
        o.ddgst = dd;
        let mut admin = AdminQueue::connect(&o).unwrap();
        let id = admin.identify();
        assert_eq!(
            pollux_nvme::spec::identify::ascii_str(&id.sn),
            Some("PX123")
        );
        assert_eq!(
            pollux_nvme::spec::identify::ascii_str(&id.mn),
            Some("Pollux test")
        );
        let mut qs: Vec<FabricQpair<Vec<u8>>> = (1..=3)
            .map(|q| admin.create_io_qpair(q, 64).unwrap())
            .collect();
        write_read_verify(&mut admin, &mut qs);
        // Flush, write zeroes, deallocate, compare.
        let q = &mut qs[0];
        q.flush(1, 9).unwrap();
        assert!(wait_one(q).cqe.status().is_success());
        drop(qs);
        admin.shutdown().unwrap();
    }
    d.wait_idle();
    assert_eq!(d.stat("protocol_errors"), 0);
}

#[test]
fn compare_write_zeroes_and_deallocate() {
    let d = Daemon::start();
    let mut admin = AdminQueue::connect(&d.opts()).unwrap();
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 32).unwrap();
    let data = pattern(8192, 5);
    q.write(1, 10, 2, data.clone(), 0).unwrap();
    assert!(wait_one(&mut q).cqe.status().is_success());
    let rw = |opc: u8, slba: u64, nlb0: u16| {
        let mut s = Sqe {
            opc,
            nsid: U32::new(1),
            ..Default::default()
        };
        s.cdw10 = U32::new(slba as u32);
        s.cdw12 = U32::new(nlb0 as u32);
        s
    };
    use pollux_nvme::fabrics::XferDir;
    // Compare: equal, then different.
    q.submit(rw(0x05, 10, 1), Some(data.clone()), XferDir::HostToCtrl, 1)
        .unwrap();
    assert!(wait_one(&mut q).cqe.status().is_success());
    let mut other = data.clone();
    other[100] ^= 1;
    q.submit(rw(0x05, 10, 1), Some(other), XferDir::HostToCtrl, 2)
        .unwrap();
    assert_eq!(wait_one(&mut q).cqe.status(), Status::COMPARE_FAILURE);
    // Write Zeroes on the first block.
    q.submit(rw(0x08, 10, 0), None, XferDir::None, 3).unwrap();
    assert!(wait_one(&mut q).cqe.status().is_success());
    q.read(1, 10, 2, vec![1; 8192], 4).unwrap();
    let back = wait_one(&mut q).buf.unwrap();
    assert!(back[..4096].iter().all(|&b| b == 0));
    assert!(back[4096..] == data[4096..]);
    // Deallocate the second block: reads back as zeroes on malloc.
    let mut range = vec![0u8; 16];
    range[4..8].copy_from_slice(&1u32.to_le_bytes());
    range[8..16].copy_from_slice(&11u64.to_le_bytes());
    let mut dsm = rw(0x09, 0, 0);
    dsm.cdw10 = U32::new(0);
    dsm.cdw11 = U32::new(1 << 2);
    q.submit(dsm, Some(range), XferDir::HostToCtrl, 5).unwrap();
    assert!(wait_one(&mut q).cqe.status().is_success());
    q.read(1, 10, 2, vec![1; 8192], 6).unwrap();
    assert!(wait_one(&mut q).buf.unwrap().iter().all(|&b| b == 0));
    // Beyond the end; an unknown namespace; an unknown opcode.
    q.read(1, 4095, 2, vec![0; 8192], 7).unwrap();
    assert_eq!(wait_one(&mut q).cqe.status(), Status::LBA_OUT_OF_RANGE);
    q.read(9, 0, 1, vec![0; 4096], 8).unwrap();
    assert_eq!(wait_one(&mut q).cqe.status(), Status::INVALID_NAMESPACE);
    q.submit(rw(0x7e, 0, 0), None, XferDir::None, 9).unwrap();
    assert_eq!(wait_one(&mut q).cqe.status(), Status::INVALID_OPCODE);
    drop(q);
    admin.shutdown().unwrap();
    d.wait_idle();
}

/// Runs `depth` 128 KiB writes and 4 KiB writes at once on each of `queues` queue pairs
/// of namespace `nsid`, then reads everything back.
fn flood(d: &Daemon, nsid: u32, queues: u16, depth: u64) {
    let mut admin = AdminQueue::connect(&d.opts()).unwrap();
    let bs = admin.identify_namespace(nsid).unwrap().block_size();
    let mut qs: Vec<FabricQpair<Vec<u8>>> = (1..=queues)
        .map(|q| admin.create_io_qpair(q, 64).unwrap())
        .collect();
    let per = |len: u64| (len / bs) as u32;
    for (qi, q) in qs.iter_mut().enumerate() {
        for i in 0..depth {
            let base = (qi as u64 * depth + i) * 36 * 4096 / bs;
            q.write(nsid, base, per(131072), pattern(131072, base), 0)
                .unwrap();
            q.write(
                nsid,
                base + per(131072) as u64,
                per(4096),
                pattern(4096, base + 1),
                0,
            )
            .unwrap();
        }
    }
    for q in qs.iter_mut() {
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        while n < 2 * depth {
            q.wait(Duration::from_millis(200), |c| {
                assert!(c.cqe.status().is_success(), "{:?}", c.cqe.status());
                n += 1;
            })
            .unwrap();
            assert!(
                Instant::now() < deadline,
                "writes stuck: {n} of {}",
                2 * depth
            );
        }
    }
    for (qi, q) in qs.iter_mut().enumerate() {
        for i in 0..depth {
            let base = (qi as u64 * depth + i) * 36 * 4096 / bs;
            q.read(nsid, base, per(131072), vec![0; 131072], base)
                .unwrap();
        }
        let mut n = 0;
        while n < depth {
            q.wait(Duration::from_secs(30), |c| {
                assert!(c.cqe.status().is_success());
                assert!(
                    c.buf.unwrap() == pattern(131072, c.tag),
                    "data at {}",
                    c.tag
                );
                n += 1;
            })
            .unwrap();
        }
    }
    drop(qs);
    admin.shutdown().unwrap();
    d.wait_idle();
}

#[test]
fn io_unit_size_and_buf_cache_size_shape_the_data_buffers() {
    // 8 KiB units: a 128 KiB request is sixteen small buffers, each a piece of the bdev
    // I/O's scatter list; the poll group's cache for TCP keeps eight small ones.
    let d = Daemon::start_with(
        json!({"trtype": "TCP", "io_unit_size": 8192, "buf_cache_size": 8}),
        true,
    );
    let mut admin = AdminQueue::connect(&d.opts()).unwrap();
    let mut qs: Vec<FabricQpair<Vec<u8>>> = (1..=2)
        .map(|q| admin.create_io_qpair(q, 64).unwrap())
        .collect();
    write_read_verify(&mut admin, &mut qs);
    drop(qs);
    admin.shutdown().unwrap();
    d.wait_idle();
    let pgs = d.stats();
    let trs: Vec<&Value> = pgs
        .iter()
        .map(|p| &p["transports"][0])
        .filter(|t| {
            t["small_pool"]["cache"].as_u64().unwrap() + t["small_pool"]["main"].as_u64().unwrap()
                > 0
        })
        .collect();
    assert!(!trs.is_empty(), "no poll group used its cache: {pgs:?}");
    for t in trs {
        assert_eq!(t["trtype"], "TCP");
        assert_eq!(t["buf_cache_small"], 8, "{t}");
        assert_eq!(t["buf_cache_large"], 0, "units fit small buffers: {t}");
        assert!(t["small_pool"]["cache"].as_u64().unwrap() > 0, "{t}");
        assert_eq!(t["large_pool"]["cache"], 0, "{t}");
        assert_eq!(t["large_pool"]["main"], 0, "{t}");
    }
    // Units the pools or a request cannot carry are refused when the transport is made.
    let e = d
        .rpc
        .call(
            "nvmf_create_transport",
            Some(json!({"trtype": "TCP", "io_unit_size": 262144})),
        )
        .unwrap_err();
    assert!(e.to_string().contains("io_unit_size"), "{e}");
    let e = d
        .rpc
        .call(
            "nvmf_create_transport",
            Some(json!({"trtype": "TCP", "io_unit_size": 4096, "max_io_size": 131072})),
        )
        .unwrap_err();
    assert!(e.to_string().contains("needs 32 buffers"), "{e}");
    let e = d
        .rpc
        .call(
            "nvmf_create_transport",
            Some(json!({"trtype": "TCP", "io_unit_size": 5000})),
        )
        .unwrap_err();
    assert!(e.to_string().contains("multiple of 4096"), "{e}");
    // Forcing CMB buffers is checked against the namespaces already there too.
    let e = d
        .rpc
        .call(
            "nvmf_create_transport",
            Some(json!({"trtype": "TCP", "cmb_buffers": "force"})),
        )
        .unwrap_err();
    assert!(e.to_string().contains("has no device memory"), "{e}");
}

#[test]
fn starved_buffer_pools_slow_the_target_down_but_never_stall_it() {
    // Eight large and sixteen small buffers for three queues of 48 writes each.
    let d = Daemon::start_with_pools(
        json!({"trtype": "TCP"}),
        true,
        IobufOpts {
            small_pool_count: 16,
            large_pool_count: 8,
            small_cache_size: 2,
            large_cache_size: 2,
            ..IobufOpts::small()
        },
    );
    flood(&d, 1, 3, 24);
    assert_eq!(d.stat("protocol_errors"), 0);
}

#[test]
fn a_full_bdev_queue_makes_commands_wait_not_fail() {
    let d = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("u0");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // A ring of four entries per thread: most of each burst waits for room.
    let mut o = pollux_engine::bdev::uring::UringOpts::new("U0", &path);
    o.ring_depth = 4;
    let b = pollux_engine::bdev::uring::create(o).unwrap();
    d.rpc.nvmf().engine().bdevs().register(b).unwrap();
    let nsid = d.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "U0"}}),
    );
    flood(&d, nsid.as_u64().unwrap() as u32, 2, 24);
}

#[test]
fn an_ipv6_listener_serves_and_shows_in_discovery() {
    let d = Daemon::start();
    let port = pollux_tests::free_port();
    let la =
        json!({"trtype": "TCP", "adrfam": "IPv6", "traddr": "::1", "trsvcid": port.to_string()});
    d.call(
        "nvmf_subsystem_add_listener",
        json!({"nqn": NQN, "listen_address": la}),
    );
    let subs = d.call("nvmf_get_subsystems", json!({"nqn": NQN}));
    let las = subs[0]["listen_addresses"].as_array().unwrap();
    assert!(
        las.iter()
            .any(|l| l["adrfam"] == "IPv6" && l["traddr"] == "::1"),
        "{las:?}"
    );
    let mut o = d.opts();
    o.addr = format!("[::1]:{port}").parse().unwrap();
    let mut admin = AdminQueue::connect(&o).unwrap();
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 8).unwrap();
    q.write(1, 7, 1, pattern(4096, 6), 0).unwrap();
    assert!(wait_one(&mut q).cqe.status().is_success());
    q.read(1, 7, 1, vec![0; 4096], 0).unwrap();
    assert!(wait_one(&mut q).buf.unwrap() == pattern(4096, 6));
    drop(q);
    admin.shutdown().unwrap();
    // The IPv4 discovery listener lists the IPv6 address too (adrfam 2).
    let mut disc_o = FabricOptions::new(d.addr, DISCOVERY_NQN);
    disc_o.timeout = Duration::from_secs(10);
    let mut disc = AdminQueue::connect(&disc_o).unwrap();
    let (_, entries) = disc.discovery_log().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.adrfam == 2 && e.traddr_str() == Some("::1")),
        "{entries:?}"
    );
    disc.shutdown().unwrap();
    // Removing it closes the port.
    d.call(
        "nvmf_subsystem_remove_listener",
        json!({"nqn": NQN, "listen_address": la}),
    );
    assert!(std::net::TcpStream::connect(o.addr).is_err());
    d.wait_idle();
}

/// A host may connect I/O queues without Set Features Number of Queues, as SPDK's target
/// and Linux's nvmet allow: Get Features then reports the controller's maximum
/// (`max_io_qpairs_per_ctrlr`), every QID up to it connects, and one past it is refused
/// at the QID. Nor does Connect insist on what the two peers do not: an NQN of the
/// standard form for the host, 32 admin entries, or the same host ID on every queue.
#[test]
fn io_queues_connect_without_set_features_number_of_queues() {
    let d = Daemon::start_with(json!({"trtype": "TCP", "max_io_qpairs_per_ctrlr": 4}), true);
    let mut o = d.opts();
    o.io_queues = 0;
    let mut admin = AdminQueue::connect(&o).unwrap();
    assert_eq!(admin.io_queues(), 4, "Get Features reports the maximum");
    let cqe = admin.get_features(feature::NUMBER_OF_QUEUES, 0).unwrap();
    assert_eq!(cqe.dw0.get(), 0x0003_0003, "NSQA and NCQA, 0's based");
    let mut qs: Vec<FabricQpair<Vec<u8>>> = (1..=4)
        .map(|q| admin.create_io_qpair(q, 64).unwrap())
        .collect();
    write_read_verify(&mut admin, &mut qs);
    drop(qs);
    admin.shutdown().unwrap();

    // A plain host: a host NQN not of the nqn.yyyy-mm form, a 4-entry admin queue, no
    // Set Features, and another host ID on its I/O queues.
    let host = "plain-host";
    let mut a = Raw::connect(d.addr);
    a.ic(false, false);
    let cqe = a.try_connect(NQN, 0, 0xffff, host, 3, [7; 16]);
    assert!(cqe.status().is_success(), "{:?}", cqe.status());
    let cntlid = cqe.dw0.get() as u16;
    a.enable();
    let mut ios = Vec::new();
    for qid in [4, 1] {
        let mut io = Raw::connect(d.addr);
        io.ic(false, false);
        let cqe = io.try_connect(NQN, qid, cntlid, host, 15, [9; 16]);
        assert!(cqe.status().is_success(), "qid {qid}: {:?}", cqe.status());
        ios.push(io);
    }
    let mut io = Raw::connect(d.addr);
    io.ic(false, false);
    let cqe = io.try_connect(NQN, 5, cntlid, host, 15, [7; 16]);
    assert_eq!(cqe.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(cqe.dw0.get(), 42, "IPO: the QID in the command");
    // No host NQN at all, as SPDK's host sends unless given one: a subsystem open to
    // any host takes it.
    let mut e = Raw::connect(d.addr);
    e.ic(false, false);
    let cqe = e.try_connect(NQN, 0, 0xffff, "", 31, [3; 16]);
    assert!(
        cqe.status().is_success(),
        "empty host NQN: {:?}",
        cqe.status()
    );
    drop(e);
    // SQSIZE 0 is still refused, at its offset.
    let cqe = io.try_connect(NQN, 2, cntlid, host, 0, [7; 16]);
    assert_eq!(cqe.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(cqe.dw0.get(), 44, "IPO: SQSIZE");
    // A host NQN with no NUL in its first 224 bytes is refused at the host NQN.
    let long = "h".repeat(230);
    let cqe = io.try_connect(NQN, 2, cntlid, &long, 15, [7; 16]);
    assert_eq!(cqe.status(), Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(cqe.dw0.get(), 0x0001_0200, "IPO: the host NQN in the data");
    drop((a, ios, io));
    d.wait_idle();
    assert_eq!(d.stat("protocol_errors"), 0);
}

#[test]
fn a_host_not_on_the_allow_list_is_refused_with_invalid_host() {
    let d = Daemon::start_with(json!({"trtype": "TCP"}), false);
    let allowed = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
    d.call(
        "nvmf_subsystem_add_host",
        json!({"nqn": NQN, "host": allowed}),
    );
    match AdminQueue::connect(&d.opts()) {
        Err(Error::ConnectRejected { status, dw0, .. }) => {
            assert_eq!(status, Status::CONNECT_INVALID_HOST);
            // IATTR set, IPO 512: the host NQN in the Connect data.
            assert_eq!(dw0, 0x0001_0200);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut o = d.opts();
    o.hostnqn = allowed.into();
    let admin = AdminQueue::connect(&o).unwrap();
    admin.shutdown().unwrap();
    // Removing the host tears its controller down.
    let admin = AdminQueue::connect(&o).unwrap();
    d.call(
        "nvmf_subsystem_remove_host",
        json!({"nqn": NQN, "host": allowed}),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while d.stat("current_admin_qpairs") != 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(admin);
    d.wait_idle();
}

#[test]
fn discovery_lists_the_subsystem_for_allowed_hosts() {
    let d = Daemon::start();
    let mut o = FabricOptions::new(d.addr, DISCOVERY_NQN);
    o.timeout = Duration::from_secs(10);
    let mut disc = AdminQueue::connect(&o).unwrap();
    let (hdr, entries) = disc.discovery_log().unwrap();
    assert_eq!(hdr.numrec.get() as usize, entries.len());
    let nvme: Vec<_> = entries.iter().filter(|e| e.subtype == 2).collect();
    assert_eq!(nvme.len(), 1, "{entries:?}");
    let e = nvme[0];
    assert_eq!(e.trtype, 3);
    assert_eq!(e.subnqn_str(), Some(NQN));
    assert_eq!(e.traddr_str(), Some("127.0.0.1"));
    assert_eq!(e.trsvcid_str(), Some(d.addr.port().to_string().as_str()));
    assert_eq!(e.cntlid.get(), 0xffff);
    disc.shutdown().unwrap();
    // A host that may not use the subsystem does not see it.
    d.call(
        "nvmf_subsystem_allow_any_host",
        json!({"nqn": NQN, "allow_any_host": false}),
    );
    let mut disc = AdminQueue::connect(&o).unwrap();
    let (_, entries) = disc.discovery_log().unwrap();
    assert!(entries.iter().all(|e| e.subtype != 2), "{entries:?}");
    disc.shutdown().unwrap();
    d.wait_idle();
}

#[test]
fn a_silent_controller_is_torn_down_after_kato() {
    let d = Daemon::start();
    let mut o = d.opts();
    o.kato_ms = 500;
    let mut admin = AdminQueue::connect(&o).unwrap();
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 16).unwrap();
    let start = Instant::now();
    // Silence on the admin queue; the I/O queue goes with its controller.
    let err = loop {
        match q.poll(0, |_| {}) {
            Err(e) => break e,
            Ok(_) => {
                assert!(start.elapsed() < Duration::from_secs(10), "not torn down");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    assert!(start.elapsed() >= Duration::from_millis(450), "{err}");
    assert_eq!(d.stat("keep_alive_timeouts"), 1);
    drop(q);
    drop(admin);
    d.wait_idle();
    // A host that keeps the controller alive keeps it (with room for a late wake-up).
    o.kato_ms = 3_000;
    let mut admin = AdminQueue::connect(&o).unwrap();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        admin.keep_alive().unwrap();
    }
    admin.shutdown().unwrap();
    assert_eq!(d.stat("keep_alive_timeouts"), 1);
}

#[test]
fn a_connection_killed_mid_io_returns_every_buffer() {
    let d = Daemon::start();
    for _ in 0..5 {
        let mut admin = AdminQueue::connect(&d.opts()).unwrap();
        let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 64).unwrap();
        for i in 0..48u64 {
            q.write(1, i * 32, 32, pattern(131072, i), i).unwrap();
        }
        let _ = q.poll(0, |_| {});
        // Gone without a goodbye: sockets close with writes waiting for R2T data.
        drop(q);
        drop(admin);
    }
    d.wait_idle();
    // And the raw way: a write whose data the host never sends after the R2T.
    let mut r = Raw::connect(d.addr);
    r.ic(false, false);
    r.connect_admin(NQN);
    r.enable();
    let mut sf = Sqe {
        opc: admin_opc::SET_FEATURES,
        ..Default::default()
    };
    sf.cdw10 = U32::new(feature::NUMBER_OF_QUEUES as u32);
    assert!(r.command(sf, &[], 0).status().is_success());
    let cntlid = r.cmd_cntlid();
    let mut io = Raw::connect(d.addr);
    io.ic(false, false);
    io.connect_q(NQN, 1, cntlid, RAW_HOST);
    let mut w = Sqe {
        opc: 0x01,
        nsid: U32::new(1),
        ..Default::default()
    };
    w.cdw12 = U32::new(31);
    io.send_cmd(w, &[], 131072);
    let (ch, _) = io.recv();
    assert_eq!(ch.pdu_type, PduType::R2t as u8);
    assert!(d.stat("iobuf_outstanding") > 0);
    drop(io);
    drop(r);
    d.wait_idle();
}

#[test]
fn namespace_changes_raise_an_asynchronous_event() {
    let d = Daemon::start();
    let mut r = Raw::connect(d.addr);
    r.ic(false, false);
    r.connect_admin(NQN);
    r.enable();
    // Ask for namespace attribute notices, then park an AER.
    let mut sf = Sqe {
        opc: admin_opc::SET_FEATURES,
        ..Default::default()
    };
    sf.cdw10 = U32::new(feature::ASYNC_EVENT_CONFIG as u32);
    sf.cdw11 = U32::new(1 << 8);
    assert!(r.command(sf, &[], 0).status().is_success());
    let aer = Sqe {
        opc: admin_opc::ASYNC_EVENT_REQUEST,
        cid: U16::new(31),
        ..Default::default()
    };
    r.send_cmd(aer, &[], 0);
    d.call(
        "bdev_malloc_create",
        json!({"name": "M2", "num_blocks": 64, "block_size": 4096}),
    );
    let nsid = d.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "M2"}}),
    );
    assert_eq!(nsid, json!(3));
    let cqe = r.recv_resp();
    assert_eq!(cqe.cid.get(), 31);
    assert_eq!(cqe.dw0.get(), aer_dw0(2, 0, log_id::CHANGED_NS_LIST));
    assert_eq!(cqe.dw0.get(), 0x0004_0002);
    // The Changed Namespace List names it, and reading it (RAE clear) re-arms.
    let mut glp = GetLogPageDw::new(log_id::CHANGED_NS_LIST, 4096, 0).to_sqe();
    glp.opc = admin_opc::GET_LOG_PAGE;
    glp.nsid = U32::new(0xffff_ffff);
    let (cqe, data) = r.command_read(glp, 4096);
    assert!(cqe.status().is_success());
    assert_eq!(&data[..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
    r.send_cmd(aer, &[], 0);
    d.call("nvmf_subsystem_remove_ns", json!({"nqn": NQN, "nsid": 3}));
    let cqe = r.recv_resp();
    assert_eq!((cqe.cid.get(), cqe.dw0.get()), (31, 0x0004_0002));
    // An Abort of a parked AER completes it as aborted.
    r.send_cmd(aer, &[], 0);
    let mut ab = Sqe {
        opc: admin_opc::ABORT,
        cid: U16::new(7),
        ..Default::default()
    };
    ab.cdw10 = U32::new(31 << 16);
    r.send_cmd(ab, &[], 0);
    let a = r.recv_resp();
    let b = r.recv_resp();
    let (aer_c, abort_c) = if a.cid.get() == 31 { (a, b) } else { (b, a) };
    assert_eq!(aer_c.status(), Status::ABORT_REQUESTED);
    assert!(abort_c.status().is_success());
    drop(r);
    d.wait_idle();
}

#[test]
fn save_config_loads_back_to_the_same_state() {
    let (saved, subsystems) = {
        let d = Daemon::start();
        d.call(
            "nvmf_subsystem_add_host",
            json!({"nqn": NQN, "host": "nqn.2014-08.io.example:h1"}),
        );
        (
            d.call("save_config", json!({})),
            d.call("nvmf_get_subsystems", json!({})),
        )
    };
    let n = std::thread::available_parallelism().unwrap().get().min(2);
    let engine = Engine::builder()
        .core_mask(if n == 2 { "0-1" } else { "[0]" })
        .iobuf(IobufOpts::small())
        .start()
        .unwrap();
    let rpc = Arc::new(RpcServer::new(engine.handle()));
    let d = Daemon {
        engine: Some(engine),
        rpc,
        addr: "127.0.0.1:1".parse().unwrap(),
    };
    d.rpc.load_config(&saved).unwrap();
    assert_eq!(d.call("nvmf_get_subsystems", json!({})), subsystems);
    assert_eq!(d.call("save_config", json!({})), saved);
}

#[test]
fn spdk_option_methods_and_bad_rpc_params_are_handled() {
    let d = Daemon::start();
    // What SPDK's save_config writes for its other subsystems loads.
    let spdk = json!({"subsystems": [
        {"subsystem": "iobuf", "config": [{"method": "iobuf_set_options", "params": {"small_pool_count": 8192, "large_pool_count": 1024, "small_bufsize": 8192, "large_bufsize": 135168}}]},
        {"subsystem": "sock", "config": [{"method": "sock_set_default_impl", "params": {"impl_name": "posix"}},
            {"method": "sock_impl_set_options", "params": {"impl_name": "posix", "recv_buf_size": 2097152, "send_buf_size": 2097152, "enable_recv_pipe": true}}]},
        {"subsystem": "scsi", "config": null},
        {"subsystem": "nvmf", "config": [{"method": "nvmf_set_config", "params": {"discovery_filter": "match_any", "admin_cmd_passthru": {"identify_ctrlr": false}}},
            {"method": "nvmf_set_max_subsystems", "params": {"max_subsystems": 1024}},
            {"method": "nvmf_set_crdt", "params": {"crdt1": 0, "crdt2": 0, "crdt3": 0}}]},
        {"subsystem": "bdev", "config": [{"method": "bdev_set_options", "params": {"bdev_io_pool_size": 65535, "bdev_io_cache_size": 256, "bdev_auto_examine": true}}, {"method": "bdev_wait_for_examine"}]}
    ]});
    d.rpc.load_config(&spdk).unwrap();
    for (m, p, needle) in [
        ("nvmf_create_subsystem", json!({"nqn": "not-an-nqn"}), "NQN"),
        (
            "nvmf_create_subsystem",
            json!({"nqn": NQN}),
            "already exists",
        ),
        (
            "nvmf_create_subsystem",
            json!({"nqn": "nqn.2016-06.io.pollux:x", "bogus": 1}),
            "bogus",
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "nope"}}),
            "nope",
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "M0"}}),
            "already",
        ),
        (
            "nvmf_subsystem_remove_ns",
            json!({"nqn": NQN, "nsid": 77}),
            "77",
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": NQN, "listen_address": {"trtype": "RDMA", "traddr": "1.2.3.4", "trsvcid": "4420"}}),
            "RDMA",
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": NQN, "listen_address": {"trtype": "TCP", "traddr": "not-ip", "trsvcid": "4420"}}),
            "not-ip",
        ),
        (
            "nvmf_create_transport",
            json!({"trtype": "TCP"}),
            "already exists",
        ),
        // This machine has no RDMA device (the lab's guest has rxe): the transport is
        // refused at configuration, by name.
        (
            "nvmf_create_transport",
            json!({"trtype": "RDMA"}),
            "cannot create the RDMA transport: no RDMA",
        ),
        (
            "nvmf_create_transport",
            json!({"trtype": "FC"}),
            "serves TCP and RDMA",
        ),
        (
            "nvmf_delete_subsystem",
            json!({"nqn": "nqn.2016-06.io.pollux:none"}),
            "does not exist",
        ),
    ] {
        let e = d.rpc.call(m, Some(p)).unwrap_err();
        assert!(e.message.contains(needle), "{m}: {}", e.message);
    }
    let t = d.call("nvmf_get_transports", json!({}));
    assert_eq!(t[0]["trtype"], "TCP");
    assert_eq!(t[0]["in_capsule_data_size"], 4096);
}

/// An ICReq PDU of format version `pfv`.
fn ic_req(pfv: u16) -> Vec<u8> {
    let mut req = IcReq::new_zeroed();
    req.pfv = U16::new(pfv);
    let mut out = Vec::new();
    pdu::frame(
        &mut out,
        req.as_mut_bytes(),
        PduType::IcReq,
        0,
        &Negotiated::default(),
        0,
    );
    out
}

/// Every malformed input gets a TermReq, an NVMe error or a close; the target keeps
/// serving, and no buffer stays out.
#[test]
fn malformed_input_gets_a_protocol_error_and_the_target_keeps_serving() {
    let d = Daemon::start();
    // A healthy host stays connected across all of it.
    let mut admin = AdminQueue::connect(&d.opts()).unwrap();
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 16).unwrap();
    let raw_header = |ty: u8, hlen: u8, pdo: u8, plen: u32| {
        let ch = CommonHeader {
            pdu_type: ty,
            flags: 0,
            hlen,
            pdo,
            plen: U32::new(plen),
        };
        let mut v = ch.as_bytes().to_vec();
        v.resize(hlen.max(8) as usize, 0);
        v
    };
    // (what, bytes after ICReq (None: before it), expected FES or None for close)
    let fes_invalid = 1u16;
    let fes_seq = 2u16;
    let fes_hdgst = 3u16;
    let fes_range = 4u16;
    let fes_limit = 5u16;
    let cases: Vec<(&str, bool, Vec<u8>, Option<u16>)> = vec![
        (
            "unknown PDU type",
            true,
            raw_header(0x08, 24, 0, 24),
            Some(fes_invalid),
        ),
        (
            "a C2H type from the host",
            true,
            raw_header(0x07, 24, 0, 24),
            Some(fes_invalid),
        ),
        (
            "wrong HLEN",
            true,
            raw_header(0x04, 70, 0, 70),
            Some(fes_invalid),
        ),
        (
            "PLEN 0xFFFFFFFF",
            true,
            raw_header(0x04, 72, 72, u32::MAX),
            Some(fes_limit),
        ),
        (
            "PLEN shorter than the header",
            true,
            raw_header(0x04, 72, 0, 10),
            Some(fes_invalid),
        ),
        (
            "capsule before ICReq",
            false,
            raw_header(0x04, 72, 0, 72),
            Some(fes_seq),
        ),
        ("second ICReq", true, ic_req(0), Some(fes_seq)),
        ("ICReq with PFV 1", false, ic_req(1), Some(6)),
        (
            "H2CData without R2T",
            true,
            {
                let mut h = DataHeader {
                    datal: U32::new(4),
                    ..Default::default()
                };
                h.ch = CommonHeader {
                    pdu_type: PduType::H2cData as u8,
                    flags: pdu::FLAG_LAST_PDU,
                    hlen: 24,
                    pdo: 24,
                    plen: U32::new(28),
                };
                let mut v = h.as_bytes().to_vec();
                v.extend([0u8; 4]);
                v
            },
            Some(fes_invalid),
        ),
    ];
    for (what, after_ic, bytes, want) in cases {
        let mut r = Raw::connect(d.addr);
        if after_ic {
            r.ic(false, false);
        }
        r.s.write_all(&bytes).unwrap();
        assert_eq!(r.term(), want, "{what}");
    }
    // A bad header digest.
    let mut r = Raw::connect(d.addr);
    r.ic(true, false);
    let mut cmd = CapsuleCmd::default();
    let mut out = Vec::new();
    pdu::frame(
        &mut out,
        cmd.as_mut_bytes(),
        PduType::CapsuleCmd,
        0,
        &r.neg,
        0,
    );
    let n = out.len();
    out[n - 1] ^= 0xff;
    r.s.write_all(&out).unwrap();
    assert_eq!(r.term(), Some(fes_hdgst), "bad header digest");
    // A bad data digest on in-capsule data: the command fails, the connection lives.
    let mut r = Raw::connect(d.addr);
    r.ic(false, true);
    let mut f = FabricsCmd {
        opc: OPC_FABRICS,
        fctype: fctype::CONNECT,
        ..Default::default()
    };
    f.specific[4] = 31;
    let mut sqe = f.to_sqe();
    sqe.cid = U16::new(1);
    sqe.set_sgl(&SglDescriptor::new(
        sgl_type::DATA_BLOCK,
        sgl_subtype::OFFSET,
        0,
        1024,
    ));
    let mut cmd = CapsuleCmd {
        sqe,
        ..Default::default()
    };
    let mut out = Vec::new();
    pdu::frame(
        &mut out,
        cmd.as_mut_bytes(),
        PduType::CapsuleCmd,
        0,
        &r.neg,
        1024,
    );
    out.extend([0u8; 1024]);
    out.extend(0xdead_beefu32.to_le_bytes());
    r.s.write_all(&out).unwrap();
    assert_eq!(r.recv_resp().status(), Status::TRANSIENT_TRANSPORT_ERROR);
    drop(r);
    // Commands before Connect get an NVMe error, and the connection stays.
    let mut r = Raw::connect(d.addr);
    r.ic(false, false);
    let idf = Sqe {
        opc: admin_opc::IDENTIFY,
        ..Default::default()
    };
    assert_eq!(
        r.command(idf, &[], 4096).status(),
        Status::COMMAND_SEQUENCE_ERROR
    );
    r.connect_admin(NQN);
    // Admin commands before CC.EN=1.
    assert_eq!(
        r.command(idf, &[], 4096).status(),
        Status::COMMAND_SEQUENCE_ERROR
    );
    r.enable();
    // H2CData beyond what the R2T asked for.
    let mut io = Raw::connect(d.addr);
    io.ic(false, false);
    let mut sf = Sqe {
        opc: admin_opc::SET_FEATURES,
        ..Default::default()
    };
    sf.cdw10 = U32::new(feature::NUMBER_OF_QUEUES as u32);
    assert!(r.command(sf, &[], 0).status().is_success());
    let cntlid = r.cmd_cntlid();
    io.connect_q(NQN, 1, cntlid, RAW_HOST);
    let mut w = Sqe {
        opc: 0x01,
        nsid: U32::new(1),
        ..Default::default()
    };
    w.cdw12 = U32::new(1);
    w.cid = U16::new(5);
    io.send_cmd(w, &[], 8192);
    let (ch, all) = io.recv();
    assert_eq!(ch.pdu_type, PduType::R2t as u8);
    let ttag = u16::from_le_bytes([all[10], all[11]]);
    let mut h = DataHeader {
        cccid: U16::new(5),
        ttag: U16::new(ttag),
        datao: U32::new(4096),
        datal: U32::new(8192),
        ..Default::default()
    };
    let mut out = Vec::new();
    pdu::frame(
        &mut out,
        h.as_mut_bytes(),
        PduType::H2cData,
        pdu::FLAG_LAST_PDU,
        &io.neg,
        8192,
    );
    out.extend(vec![0u8; 8192]);
    io.s.write_all(&out).unwrap();
    assert_eq!(io.term(), Some(fes_range), "H2CData out of range");
    drop(r);
    // Random bytes.
    for seed in 0..20u64 {
        let mut r = Raw::connect(d.addr);
        let junk = pattern(300, seed);
        let _ = r.s.write_all(&junk);
        // A TermReq or a close, never a hang.
        let mut buf = [0u8; 512];
        let _ = r.s.read(&mut buf);
    }
    // Hundreds of rapid connects, some left open a moment.
    let mut keep = Vec::new();
    for i in 0..300 {
        let s = TcpStream::connect(d.addr).unwrap();
        if i % 10 == 0 {
            keep.push(s);
        }
    }
    drop(keep);
    // The healthy host never noticed.
    q.write(1, 0, 1, pattern(4096, 1), 1).unwrap();
    assert!(wait_one(&mut q).cqe.status().is_success());
    q.read(1, 0, 1, vec![0; 4096], 2).unwrap();
    assert!(wait_one(&mut q).buf.unwrap() == pattern(4096, 1));
    admin.keep_alive().unwrap();
    drop(q);
    admin.shutdown().unwrap();
    d.wait_idle();
    assert!(d.stat("protocol_errors") >= 12);
}

#[test]
fn cmb_buffers_carry_the_data_of_an_nvme_namespace_with_a_cmb() {
    use pollux_engine::bdev::nvme;
    // "prefer": namespaces with device memory use it, the malloc ones host memory.
    // ("force", which refuses namespaces without it, is what the lab's cmb-tcp runs.)
    let d = Daemon::start_with(json!({"trtype": "TCP", "cmb_buffers": "prefer"}), true);
    let (twin, ctrl, nsid) = d.twin_with_cmb_data("TwinCmb");
    let mut admin = AdminQueue::connect(&d.opts()).unwrap();
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 32).unwrap();
    for (i, len) in [512usize, 4096, 65536, 131072].into_iter().enumerate() {
        let lba = i as u64 * 512;
        let data = pattern(len, 900 + i as u64);
        q.write(nsid, lba, (len / 512) as u32, data.clone(), 1)
            .unwrap();
        assert!(wait_one(&mut q).cqe.status().is_success());
        assert_eq!(twin.ns_bytes(lba, len), data, "on the device, {len} bytes");
        q.read(nsid, lba, (len / 512) as u32, vec![0; len], 2)
            .unwrap();
        let c = wait_one(&mut q);
        assert!(c.cqe.status().is_success());
        assert!(c.buf.unwrap() == data, "read back {len}");
    }
    // Every data byte went through the CMB: the twin saw CMB data pointers only.
    assert_eq!(
        twin.cmb_commands.load(std::sync::atomic::Ordering::Relaxed),
        8
    );
    let total: u64 = 2 * (512 + 4096 + 65536 + 131072);
    assert_eq!(d.stat("cmb_buffer_bytes"), total);
    assert_eq!(d.stat("cmb_fallback_pool_empty"), 0);
    let k = ctrl.counters();
    assert_eq!(
        k.cmb_data_bytes.load(std::sync::atomic::Ordering::Relaxed),
        total
    );
    assert_eq!(
        k.host_data_bytes.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    drop(ctrl);
    // The malloc namespace's data goes through host buffers.
    let host = d.stat("host_buffer_bytes");
    q.write(1, 0, 1, pattern(4096, 1), 3).unwrap();
    assert!(wait_one(&mut q).cqe.status().is_success());
    assert_eq!(d.stat("host_buffer_bytes"), host + 4096);
    assert_eq!(d.stat("cmb_buffer_bytes"), total);
    drop(q);
    admin.shutdown().unwrap();
    d.wait_idle();
    nvme::detach("TwinCmb").unwrap();
}

#[test]
fn forced_cmb_buffers_wait_for_a_short_pool_and_never_use_host_memory() {
    use pollux_engine::bdev::nvme;
    // The twin's 4 MiB CMB gives eight large buffers; 16 writes of 128 KiB at once find
    // the pool short, and with "force" they wait for CMB buffers instead of host ones.
    let d = Daemon::one_core(json!({"trtype": "TCP", "cmb_buffers": "force"}));
    let (twin, ctrl, nsid) = d.twin_with_cmb_data("TwinForce");
    let mut admin = AdminQueue::connect(&d.opts()).unwrap();
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 64).unwrap();
    let len = 131072usize;
    let nlb = (len / 512) as u32;
    for i in 0..16u64 {
        q.write(nsid, i * nlb as u64, nlb, pattern(len, 500 + i), i)
            .unwrap();
    }
    let mut done = 0;
    while done < 16 {
        q.wait(Duration::from_secs(10), |c| {
            assert!(c.cqe.status().is_success(), "{:?}", c.cqe.status());
            done += 1;
        })
        .unwrap();
    }
    for i in 0..16u64 {
        assert_eq!(
            twin.ns_bytes(i * nlb as u64, len),
            pattern(len, 500 + i),
            "write {i} on the device"
        );
    }
    assert!(d.stat("cmb_pool_waits") > 0, "{:?}", d.stats());
    assert_eq!(d.stat("cmb_fallback_pool_empty"), 0);
    assert_eq!(d.stat("cmb_buffer_bytes"), 16 * len as u64);
    let k = ctrl.counters();
    assert_eq!(
        k.host_data_bytes.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    drop(ctrl);
    drop(q);
    admin.shutdown().unwrap();
    d.wait_idle();
    nvme::detach("TwinForce").unwrap();
}

#[test]
fn forcing_cmb_buffers_a_pool_cannot_hold_a_request_in_is_refused_at_add_ns() {
    use pollux_engine::bdev::nvme;
    // 2 MiB requests need 16 large buffers; the twin's CMB pool has 8.
    let d =
        Daemon::one_core(json!({"trtype": "TCP", "cmb_buffers": "force", "max_io_size": 2097152}));
    let _twin = d.attach_twin("TwinSmall");
    let e = d
        .rpc
        .call(
            "nvmf_subsystem_add_ns",
            Some(json!({"nqn": NQN, "namespace": {"bdev_name": "TwinSmalln1"}})),
        )
        .unwrap_err();
    assert!(e.to_string().contains("has 8 large buffers"), "{e}");
    assert!(e.to_string().contains("needs 16"), "{e}");
    nvme::detach("TwinSmall").unwrap();
}

/// Abort of an I/O command (base 5.1): a write held by a delay bdev is stopped and
/// completes as Command Abort Requested, the Abort says it aborted it (dword 0 bit 0
/// clear); an Abort of a command no longer in flight says it did not. The queue goes
/// on serving, and the pools are full afterwards.
#[test]
fn abort_stops_a_write_a_delay_bdev_holds() {
    use pollux_nvme::spec::admin::nvm_opc;
    let d = Daemon::start();
    d.call(
        "bdev_malloc_create",
        json!({"name": "M2", "num_blocks": 1024, "block_size": 4096}),
    );
    let lat = |w: u64| {
        json!({"name": "D2", "base_bdev_name": "M2", "avg_read_latency": 0, "p99_read_latency": 0,
            "avg_write_latency": w, "p99_write_latency": w})
    };
    d.call("bdev_delay_create", lat(30_000_000));
    let nsid = d
        .call(
            "nvmf_subsystem_add_ns",
            json!({"nqn": NQN, "namespace": {"bdev_name": "D2"}}),
        )
        .as_u64()
        .unwrap() as u32;
    let mut a = Raw::connect(d.addr);
    a.ic(false, false);
    let cntlid = a.connect_admin(NQN);
    a.enable();
    let mut io = Raw::connect(d.addr);
    io.ic(false, false);
    io.connect_q(NQN, 1, cntlid, RAW_HOST);
    io.send_cmd(Sqe::nvm_rw(nvm_opc::WRITE, nsid, 0, 1), &[0x5a; 4096], 0);
    let cid = io.cid;
    // Held for 30 s: give it time to reach the delay bdev, then abort it.
    std::thread::sleep(Duration::from_millis(200));
    let abort = |cid: u16| Sqe {
        opc: admin_opc::ABORT,
        cdw10: U32::new((cid as u32) << 16 | 1),
        ..Default::default()
    };
    let cqe = a.command(abort(cid), &[], 0);
    assert!(cqe.status().is_success(), "{:?}", cqe.status());
    assert_eq!(cqe.dw0.get() & 1, 0, "the Abort aborted the write");
    let r = io.recv_resp();
    assert_eq!(r.cid.get(), cid);
    assert_eq!(r.status(), Status::ABORT_REQUESTED);
    // Nothing of that command is left to abort.
    let cqe = a.command(abort(cid), &[], 0);
    assert_eq!(
        cqe.dw0.get() & 1,
        1,
        "not aborted: no such command in flight"
    );
    // The queue goes on: fast again, a write and its read-back.
    d.call(
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "D2", "latency_type": "avg_write", "latency_us": 0}),
    );
    d.call(
        "bdev_delay_update_latency",
        json!({"delay_bdev_name": "D2", "latency_type": "p99_write", "latency_us": 0}),
    );
    let r = io.command(Sqe::nvm_rw(nvm_opc::WRITE, nsid, 0, 1), &[0x77; 4096], 0);
    assert!(r.status().is_success(), "{:?}", r.status());
    let (r, data) = io.command_read(Sqe::nvm_rw(nvm_opc::READ, nsid, 0, 1), 4096);
    assert!(r.status().is_success());
    assert_eq!(data, vec![0x77; 4096]);
    drop((a, io));
    d.wait_idle();
}

/// The query methods operators' scripts call, with SPDK's shapes: the connected
/// controller, its queue pairs on their poll groups, and the subsystem's listeners.
#[test]
fn subsystem_controllers_qpairs_and_listeners_are_listed() {
    let d = Daemon::start();
    let o = d.opts();
    let mut admin = AdminQueue::connect(&o).unwrap();
    let qs: Vec<FabricQpair<Vec<u8>>> = (1..=2)
        .map(|q| admin.create_io_qpair(q, 16).unwrap())
        .collect();
    let c = d.call("nvmf_subsystem_get_controllers", json!({"nqn": NQN}));
    assert_eq!(c.as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c[0]["cntlid"], admin.cntlid());
    assert_eq!(c[0]["hostnqn"], o.hostnqn);
    // The default host NQN carries the host ID's UUID.
    let hostid = c[0]["hostid"].as_str().unwrap();
    assert!(o.hostnqn.ends_with(&format!(":uuid:{hostid}")), "{hostid}");
    assert_eq!(c[0]["num_io_qpairs"], 2);
    let q = d.call("nvmf_subsystem_get_qpairs", json!({"nqn": NQN}));
    let qids: Vec<u64> = q
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["qid"].as_u64().unwrap())
        .collect();
    assert_eq!(qids, [0, 1, 2], "{q}");
    assert!(q.as_array().unwrap().iter().all(|x| x["state"] == "enabled"
        && x["cntlid"] == admin.cntlid()
        && !x["thread"].as_str().unwrap().is_empty()));
    let l = d.call("nvmf_subsystem_get_listeners", json!({"nqn": NQN}));
    assert_eq!(l[0]["address"]["trsvcid"], d.addr.port().to_string(), "{l}");
    assert_eq!(l[0]["ana_state"], "optimized");
    let e = d
        .rpc
        .call(
            "nvmf_subsystem_get_qpairs",
            Some(json!({"nqn": "nqn.2016-06.io.pollux:none"})),
        )
        .unwrap_err();
    assert!(e.message.contains("does not exist"));
    drop(qs);
    admin.shutdown().unwrap();
    d.wait_idle();
    let c = d.call("nvmf_subsystem_get_controllers", json!({"nqn": NQN}));
    assert_eq!(c, json!([]));
}

/// A subsystem with `ana_reporting`: Identify shows the ANA capabilities and groups,
/// the ANA log page lists each group's state and namespaces, a state set by
/// `nvmf_subsystem_listener_set_ana_state` raises an ANA Change event, and I/O to an
/// inaccessible group fails with Asymmetric Access Inaccessible while the other group
/// still serves.
#[test]
fn ana_states_reach_the_log_page_the_event_and_the_io_status() {
    use pollux_nvme::spec::admin::aec;
    use pollux_nvme::spec::log::ana_state;
    const ANA: &str = "nqn.2016-06.io.pollux:ana";
    let d = Daemon::one_core(json!({"trtype": "TCP"}));
    let port = pollux_tests::free_port();
    let la = json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": port.to_string()});
    d.call(
        "nvmf_create_subsystem",
        json!({"nqn": ANA, "allow_any_host": true, "ana_reporting": true,
            "min_cntlid": 100, "max_cntlid": 199}),
    );
    for (name, grp) in [("A0", None), ("A1", Some(5))] {
        d.call(
            "bdev_malloc_create",
            json!({"name": name, "num_blocks": 256, "block_size": 4096}),
        );
        let mut ns = json!({"bdev_name": name});
        if let Some(g) = grp {
            ns["anagrpid"] = json!(g);
        }
        d.call(
            "nvmf_subsystem_add_ns",
            json!({"nqn": ANA, "namespace": ns}),
        );
    }
    d.call(
        "nvmf_subsystem_add_listener",
        json!({"nqn": ANA, "listen_address": la}),
    );
    let mut o = FabricOptions::new(format!("127.0.0.1:{port}").parse().unwrap(), ANA);
    o.io_queues = 1;
    o.kato_ms = 60_000;
    let mut admin = AdminQueue::connect(&o).unwrap();
    let id = *admin.identify();
    assert!(admin.reports_ana());
    assert!((100..=199).contains(&admin.cntlid()), "{}", admin.cntlid());
    assert_eq!((id.anatt, id.anacap & 0x7), (10, 0x7));
    assert_eq!((id.anagrpmax.get(), id.nanagrpid.get()), (32, 32));
    assert_ne!(id.oaes.get() & (1 << 11), 0);
    let (count, groups) = admin.ana_log().unwrap();
    assert_eq!(count, 0);
    let g: Vec<(u32, u8, Vec<u32>)> = groups
        .iter()
        .map(|g| (g.anagrpid, g.state, g.nsids.clone()))
        .collect();
    assert_eq!(
        g,
        [
            (1, ana_state::OPTIMIZED, vec![1]),
            (5, ana_state::OPTIMIZED, vec![2])
        ]
    );
    assert_eq!(admin.identify_namespace(2).unwrap().anagrpid.get(), 5);
    admin
        .enable_async_events(aec::ANA_CHANGE_NOTICES | aec::NS_ATTRIBUTE_NOTICES)
        .unwrap();
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 16).unwrap();

    // Group 5 inaccessible through this listener.
    d.call(
        "nvmf_subsystem_listener_set_ana_state",
        json!({"nqn": ANA, "listen_address": la, "ana_state": "inaccessible", "anagrpid": 5}),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !admin
        .async_events()
        .unwrap()
        .iter()
        .any(|e| e.ana_changed())
    {
        assert!(Instant::now() < deadline, "no ANA Change event");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (count, groups) = admin.ana_log().unwrap();
    assert_eq!(count, 1);
    assert_eq!(groups[1].state, ana_state::INACCESSIBLE);
    assert_eq!(groups[1].chgcnt, 1);
    assert_eq!(admin.identify_namespace(2).unwrap().nuse.get(), 0);
    q.write(2, 0, 1, pattern(4096, 1), 1).unwrap();
    let c = wait_one(&mut q);
    assert_eq!(c.cqe.status(), Status::ANA_INACCESSIBLE);
    q.write(1, 0, 1, pattern(4096, 2), 2).unwrap();
    assert!(wait_one(&mut q).cqe.status().is_success());
    let l = d.call("nvmf_subsystem_get_listeners", json!({"nqn": ANA}));
    let states = l[0]["ana_states"].as_array().unwrap();
    assert_eq!(states.len(), 32, "{l}");
    assert_eq!(
        states[4],
        json!({"ana_group": 5, "ana_state": "inaccessible"})
    );
    assert_eq!(states[0]["ana_state"], "optimized");
    // The saved config brings the state and the group back.
    let saved = d.call("save_config", Value::Null).to_string();
    assert!(
        saved.contains(r#""anagrpid":5"#)
            && saved.contains("nvmf_subsystem_listener_set_ana_state")
            && saved.contains(r#""ana_reporting":true"#),
        "{saved}"
    );
    // States that cannot be set, and subsystems without ANA, are refused.
    for (nqn, st) in [
        (ANA, "change"),
        (ANA, "persistent_loss"),
        (NQN, "optimized"),
    ] {
        let mut la = la.clone();
        if nqn == NQN {
            la["trsvcid"] = json!(d.addr.port().to_string());
        }
        let e = d
            .rpc
            .call(
                "nvmf_subsystem_listener_set_ana_state",
                Some(json!({"nqn": nqn, "listen_address": la, "ana_state": st})),
            )
            .unwrap_err();
        assert_eq!(e.code, -32602, "{nqn} {st}: {e:?}");
    }
    // Every group non-optimized, then optimized: I/O is served again.
    for st in ["non_optimized", "optimized"] {
        d.call(
            "nvmf_subsystem_listener_set_ana_state",
            json!({"nqn": ANA, "listen_address": la, "ana_state": st}),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        q.write(2, 0, 1, pattern(4096, 3), 3).unwrap();
        if wait_one(&mut q).cqe.status().is_success() {
            break;
        }
        assert!(Instant::now() < deadline, "group 5 not accessible again");
    }
    let (count, groups) = admin.ana_log().unwrap();
    assert_eq!(count, 3);
    assert!(groups.iter().all(|g| g.state == ana_state::OPTIMIZED));
    drop(q);
    admin.shutdown().unwrap();
    d.wait_idle();
}

/// A namespace's bdev resized (`bdev_null_resize`): hosts get Namespace Attribute
/// Changed with the NSID in the Changed Namespace List, Identify Namespace shows the
/// new size, and I/O reaches the new blocks.
#[test]
fn a_resized_bdev_raises_namespace_attribute_changed() {
    use pollux_nvme::spec::admin::aec;
    let d = Daemon::one_core(json!({"trtype": "TCP"}));
    d.call(
        "bdev_null_create",
        json!({"name": "N0", "num_blocks": 256, "block_size": 4096}),
    );
    d.call(
        "nvmf_subsystem_add_ns",
        json!({"nqn": NQN, "namespace": {"bdev_name": "N0", "nsid": 4}}),
    );
    let mut admin = AdminQueue::connect(&d.opts()).unwrap();
    admin
        .enable_async_events(aec::NS_ATTRIBUTE_NOTICES)
        .unwrap();
    let mut q: FabricQpair<Vec<u8>> = admin.create_io_qpair(1, 8).unwrap();
    q.write(4, 300, 1, pattern(4096, 9), 1).unwrap();
    assert_eq!(wait_one(&mut q).cqe.status(), Status::LBA_OUT_OF_RANGE);
    d.call("bdev_null_resize", json!({"name": "N0", "new_size": 2}));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !admin
        .async_events()
        .unwrap()
        .iter()
        .any(|e| e.namespaces_changed())
    {
        assert!(Instant::now() < deadline, "no Namespace Attribute Changed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(admin.changed_namespaces().unwrap(), Some(vec![4]));
    assert_eq!(admin.identify_namespace(4).unwrap().nsze.get(), 512);
    q.write(4, 300, 1, pattern(4096, 9), 2).unwrap();
    assert!(wait_one(&mut q).cqe.status().is_success());
    drop(q);
    admin.shutdown().unwrap();
    d.wait_idle();
}

/// Persistent Reservations between two hosts on one namespace: host 1 registers and
/// takes Write Exclusive; host 2's writes meet Reservation Conflict while its reads
/// pass; the report (extended) lists both; host 2 preempts host 1 and then writes;
/// Reservation Persistence is refused without a ptpl_file.
#[test]
fn reservations_fence_another_hosts_writes() {
    use pollux_nvme::fabrics::XferDir;
    use pollux_nvme::spec::admin::nvm_opc;
    use pollux_nvme::spec::resv::{ResvDw, report_decode, rtype};
    let d = Daemon::start();
    let resv = |q: &mut FabricQpair<Vec<u8>>, opc: u8, dw: ResvDw, keys: &[u64]| {
        let data: Vec<u8> = keys.iter().flat_map(|k| k.to_le_bytes()).collect();
        let sqe = Sqe {
            opc,
            nsid: U32::new(1),
            cdw10: dw.to_dw(),
            ..Default::default()
        };
        q.submit(sqe, Some(data), XferDir::HostToCtrl, 7).unwrap();
        wait_one(q).cqe.status()
    };
    let report = |q: &mut FabricQpair<Vec<u8>>, eds: bool| {
        let sqe = Sqe {
            opc: nvm_opc::RESERVATION_REPORT,
            nsid: U32::new(1),
            cdw10: U32::new(4096 / 4 - 1),
            cdw11: U32::new(eds as u32),
            ..Default::default()
        };
        q.submit(sqe, Some(vec![0; 4096]), XferDir::CtrlToHost, 8)
            .unwrap();
        let c = wait_one(q);
        (c.cqe.status(), c.buf.unwrap())
    };
    let connect = || {
        let mut a = AdminQueue::connect(&d.opts()).unwrap();
        let q: FabricQpair<Vec<u8>> = a.create_io_qpair(1, 8).unwrap();
        (a, q)
    };
    let (mut a1, mut q1) = connect();
    let (a2, mut q2) = connect();
    let id = a1.identify_namespace(1).unwrap();
    assert_eq!(
        id.rescap, 0xfe,
        "all six types and IEKEY, no PTPL without a file"
    );
    assert_ne!(a1.identify().oncs.get() & (1 << 5), 0);
    let reg = ResvDw::default();
    let we = ResvDw {
        rtype: rtype::WRITE_EXCLUSIVE,
        ..Default::default()
    };
    assert!(resv(&mut q1, nvm_opc::RESERVATION_REGISTER, reg, &[0, 0xa1]).is_success());
    assert!(resv(&mut q2, nvm_opc::RESERVATION_REGISTER, reg, &[0, 0xb2]).is_success());
    assert!(resv(&mut q1, nvm_opc::RESERVATION_ACQUIRE, we, &[0xa1, 0]).is_success());
    q2.write(1, 0, 1, pattern(4096, 1), 1).unwrap();
    assert_eq!(wait_one(&mut q2).cqe.status(), Status::RESERVATION_CONFLICT);
    q2.read(1, 0, 1, vec![0; 4096], 2).unwrap();
    assert!(wait_one(&mut q2).cqe.status().is_success());
    q1.write(1, 0, 1, pattern(4096, 2), 3).unwrap();
    assert!(wait_one(&mut q1).cqe.status().is_success());
    // The report needs EDS on fabrics (128-bit host identifiers).
    assert_eq!(
        report(&mut q2, false).0,
        Status::HOST_ID_INCONSISTENT_FORMAT
    );
    let (st, data) = report(&mut q2, true);
    assert!(st.is_success());
    let (gen_, t, _, regs) = report_decode(&data, true).unwrap();
    assert_eq!((gen_, t, regs.len()), (2, rtype::WRITE_EXCLUSIVE, 2));
    let holder = regs.iter().find(|r| r.holds).unwrap();
    assert_eq!(holder.rkey, 0xa1);
    // Host 2 preempts host 1: host 1's writes now conflict, host 2's pass.
    let preempt = ResvDw { action: 1, ..we };
    assert!(
        resv(
            &mut q2,
            nvm_opc::RESERVATION_ACQUIRE,
            preempt,
            &[0xb2, 0xa1]
        )
        .is_success()
    );
    q1.write(1, 0, 1, pattern(4096, 3), 4).unwrap();
    assert_eq!(wait_one(&mut q1).cqe.status(), Status::RESERVATION_CONFLICT);
    q2.write(1, 0, 1, pattern(4096, 4), 5).unwrap();
    assert!(wait_one(&mut q2).cqe.status().is_success());
    // Host 1 is no registrant any more: its Acquire conflicts.
    assert_eq!(
        resv(&mut q1, nvm_opc::RESERVATION_ACQUIRE, we, &[0xa1, 0]),
        Status::RESERVATION_CONFLICT
    );
    // No ptpl_file: Persist Through Power Loss cannot be set.
    let sf = Sqe {
        opc: admin_opc::SET_FEATURES,
        nsid: U32::new(1),
        cdw10: U32::new(feature::RESERVATION_PERSISTENCE as u32),
        cdw11: U32::new(1),
        ..Default::default()
    };
    let c = a1.command(sf, pollux_nvme::fabrics::DataDir::None).unwrap();
    assert_eq!(c.status(), Status::INVALID_FIELD);
    let clear = ResvDw {
        action: 1,
        ..Default::default()
    };
    assert!(resv(&mut q2, nvm_opc::RESERVATION_RELEASE, clear, &[0xb2]).is_success());
    q1.write(1, 0, 1, pattern(4096, 5), 6).unwrap();
    assert!(wait_one(&mut q1).cqe.status().is_success());
    drop((q1, q2));
    a1.shutdown().unwrap();
    a2.shutdown().unwrap();
    d.wait_idle();
}
