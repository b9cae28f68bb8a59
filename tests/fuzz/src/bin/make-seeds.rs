//! Writes the seed corpora in `tests/fuzz/seeds/<target>/`: real, valid inputs in each
//! target's format (valid PDUs and command sequences, JSON-RPC requests, SPDK-style
//! configs, the fio job files of `tools/tests/jobs`), so that fuzzing starts from deep
//! states rather than from nothing.
//!
//! `cargo run --manifest-path tests/fuzz/Cargo.toml --features make-seeds --bin make-seeds`
//! (it starts an engine to learn the RPC method list). Existing seed directories are
//! replaced.

use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use pollux_engine::rpc::RpcServer;
use pollux_fuzz::json;
use pollux_fuzz::perf;
use pollux_fuzz::tcp::{self, Close, Preamble, seed};
use pollux_nvme::spec::admin::{admin_opc, cns, feature, log_id};
use pollux_nvme::spec::cmd::{SglDescriptor, Sqe, sgl_subtype};
use pollux_nvme::spec::fabrics::{
    ConnectData, ConnectFields, FabricsCmd, OPC_FABRICS, PropertyFields, fctype,
};
use pollux_nvme::spec::identify::nqn_field;
use pollux_nvme::spec::rdma::CmReq;
use pollux_nvme::spec::tcp::{
    self as pdu, CapsuleCmd, CapsuleResp, DataHeader, IcReq, IcResp, Negotiated, PduType, R2t,
    TermReq,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromZeros, IntoBytes};

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

fn jobs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/tests/jobs")
}

/// One target's seeds, written as `NN-name`.
struct Corpus {
    dir: PathBuf,
    n: usize,
}

impl Corpus {
    fn new(target: &str) -> Corpus {
        let dir = seeds_dir().join(target);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("seed directory");
        Corpus { dir, n: 0 }
    }

    fn add(&mut self, name: &str, bytes: &[u8]) {
        self.n += 1;
        let p = self.dir.join(format!("{:02}-{name}", self.n));
        std::fs::write(p, bytes).expect("a seed");
    }
}

fn main() {
    tcp_pdu();
    tcp_connection();
    rdma_codec();
    let engine = Engine::builder()
        .core_mask("[0]")
        .iobuf(IobufOpts::small())
        .start()
        .expect("an engine");
    let rpc = RpcServer::new(engine.handle());
    let mut methods = rpc.method_names();
    methods.push("rpc_get_methods".into());
    rpc_seeds(&methods);
    config();
    perf_job();
    drop(rpc);
    engine.shutdown();
    println!("seeds written to {}", seeds_dir().display());
}

// --- tcp_pdu -----------------------------------------------------------------------

fn framed(
    ty: PduType,
    header: &mut [u8],
    flags: u8,
    neg: &Negotiated,
    data: &[u8],
    out: &mut Vec<u8>,
) {
    pdu::frame(out, header, ty, flags, neg, data.len());
    out.extend_from_slice(data);
    if neg.ddgst && ty.has_digests() && !data.is_empty() {
        out.extend_from_slice(&pdu::crc32c(data).to_le_bytes());
    }
}

fn tcp_pdu() {
    let mut c = Corpus::new("tcp_pdu");
    for (hd, dd, pda) in [(false, false, 0u8), (true, true, 0), (true, false, 7)] {
        let neg = Negotiated {
            established: true,
            hdgst: hd,
            ddgst: dd,
            pda,
            plen_max: 1 << 20,
        };
        // a: bit 0 host receives, bit 1 established, bits 2-3 digests, bits 4-7 + b bit 0
        // PDA; b bits 1-2: plen_max (1 << 20), bits 3+: flags for the framing check.
        let a_ctl = 2 | (hd as u8) << 2 | (dd as u8) << 3 | (pda & 0xf) << 4;
        let b = (pda >> 4) | 2 << 1;
        // To the controller: a capsule with data, H2CData, H2CTermReq.
        let mut s = vec![a_ctl, b];
        s.extend_from_slice(&512u16.to_le_bytes());
        let mut cmd = CapsuleCmd::default();
        cmd.sqe.opc = 0x01;
        cmd.sqe
            .set_sgl(&SglDescriptor::new(0, sgl_subtype::OFFSET, 0, 512));
        framed(
            PduType::CapsuleCmd,
            cmd.as_mut_bytes(),
            0,
            &neg,
            &[0xa5; 512],
            &mut s,
        );
        let mut h = DataHeader {
            datal: U32::new(4096),
            ..Default::default()
        };
        framed(
            PduType::H2cData,
            h.as_mut_bytes(),
            pdu::FLAG_LAST_PDU,
            &neg,
            &[7; 4096],
            &mut s,
        );
        let mut t = TermReq {
            fes: U16::new(1),
            ..Default::default()
        };
        framed(
            PduType::H2cTermReq,
            t.as_mut_bytes(),
            0,
            &neg,
            &[0; 24],
            &mut s,
        );
        c.add(&format!("to-controller-hd{hd}-dd{dd}-pda{pda}"), &s);
        // To the host: R2T, C2HData with SUCCESS, a response, C2HTermReq.
        let mut s = vec![a_ctl | 1, b];
        s.extend_from_slice(&4096u16.to_le_bytes());
        let mut r = R2t {
            r2tl: U32::new(8192),
            ..Default::default()
        };
        framed(PduType::R2t, r.as_mut_bytes(), 0, &neg, &[], &mut s);
        let mut h = DataHeader {
            datal: U32::new(1000),
            ..Default::default()
        };
        framed(
            PduType::C2hData,
            h.as_mut_bytes(),
            pdu::FLAG_LAST_PDU | pdu::FLAG_SUCCESS,
            &neg,
            &[3; 1000],
            &mut s,
        );
        let mut resp = CapsuleResp::default();
        framed(
            PduType::CapsuleResp,
            resp.as_mut_bytes(),
            0,
            &neg,
            &[],
            &mut s,
        );
        let mut t = TermReq::default();
        framed(
            PduType::C2hTermReq,
            t.as_mut_bytes(),
            0,
            &neg,
            &[1; 8],
            &mut s,
        );
        c.add(&format!("to-host-hd{hd}-dd{dd}-pda{pda}"), &s);
    }
    // The IC exchange, before it is established.
    let none = Negotiated::default();
    let mut s = vec![0, 2 << 1, 0, 0];
    let mut req = IcReq::new_zeroed();
    req.dgst = 3;
    framed(PduType::IcReq, req.as_mut_bytes(), 0, &none, &[], &mut s);
    c.add("icreq", &s);
    let mut s = vec![1, 2 << 1, 0, 0];
    let mut resp = IcResp::new_zeroed();
    resp.maxh2cdata = U32::new(131072);
    framed(PduType::IcResp, resp.as_mut_bytes(), 0, &none, &[], &mut s);
    c.add("icresp", &s);
}

// --- tcp_connection ----------------------------------------------------------------

fn fabrics(fctype: u8, specific: &[u8]) -> Sqe {
    let mut f = FabricsCmd {
        opc: OPC_FABRICS,
        fctype,
        ..Default::default()
    };
    f.specific[..specific.len()].copy_from_slice(specific);
    f.to_sqe()
}

fn connect_sqe(qid: u16) -> (Sqe, Vec<u8>) {
    let c = ConnectFields {
        qid: U16::new(qid),
        sqsize: U16::new(31),
        ..Default::default()
    };
    let mut d = ConnectData::new_zeroed();
    d.cntlid = U16::new(0xffff);
    nqn_field(&mut d.subnqn, tcp::NQN);
    nqn_field(&mut d.hostnqn, tcp::HOSTNQN);
    (
        fabrics(fctype::CONNECT, c.as_bytes()),
        d.as_bytes().to_vec(),
    )
}

fn property(set: bool, ofst: u32, value: u64, eight: bool) -> Sqe {
    let p = PropertyFields {
        attrib: eight as u8,
        ofst: U32::new(ofst),
        value: U64::new(value),
        ..Default::default()
    };
    fabrics(
        if set {
            fctype::PROPERTY_SET
        } else {
            fctype::PROPERTY_GET
        },
        p.as_bytes(),
    )
}

fn admin(opc: u8, cdw10: u32, cdw11: u32) -> Sqe {
    Sqe {
        opc,
        nsid: U32::new(0),
        cdw10: U32::new(cdw10),
        cdw11: U32::new(cdw11),
        ..Default::default()
    }
}

fn nvm(opc: u8, nsid: u32, slba: u64, nlb: u32) -> Sqe {
    Sqe::nvm_rw(opc, nsid, slba, nlb)
}

fn tcp_connection() {
    let mut c = Corpus::new("tcp_connection");
    let ic = |hd, dd| {
        let mut req = IcReq::new_zeroed();
        req.dgst = hd as u8 | (dd as u8) << 1;
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
    };
    // No preamble: the input's own ICReq, Connect, enable, Identify.
    let mut s = vec![seed::ctl(Preamble::None, Close::Linger, false, false)];
    seed::raw(&mut s, &ic(false, false));
    seed::pause(&mut s, 10);
    let (sqe, data) = connect_sqe(0);
    seed::capsule(&mut s, &sqe, &data);
    seed::capsule(&mut s, &property(true, 0x14, 0x0046_0001, false), &[]);
    seed::capsule_r2t(
        &mut s,
        &admin(admin_opc::IDENTIFY, cns::CONTROLLER as u32, 0),
        4096,
    );
    c.add("raw-icreq-connect-identify", &s);
    // Discovery: Connect to the discovery subsystem, its log page.
    let mut s = vec![seed::ctl(Preamble::IcReq, Close::HalfClose, false, false)];
    let c_f = ConnectFields {
        sqsize: U16::new(31),
        ..Default::default()
    };
    let mut d = ConnectData::new_zeroed();
    d.cntlid = U16::new(0xffff);
    nqn_field(&mut d.subnqn, pollux_nvme::spec::fabrics::DISCOVERY_NQN);
    nqn_field(&mut d.hostnqn, tcp::HOSTNQN);
    seed::capsule(
        &mut s,
        &fabrics(fctype::CONNECT, c_f.as_bytes()),
        d.as_bytes(),
    );
    seed::capsule(&mut s, &property(true, 0x14, 0x0046_0001, false), &[]);
    let numd = (4096u32 / 4) - 1;
    seed::capsule_r2t(
        &mut s,
        &admin(
            admin_opc::GET_LOG_PAGE,
            log_id::DISCOVERY as u32 | numd << 16,
            0,
        ),
        4096,
    );
    c.add("discovery-log-page", &s);
    // An enabled admin queue: what hosts ask first.
    for (hd, dd) in [(false, false), (true, true)] {
        let mut s = vec![seed::ctl(Preamble::AdminEnabled, Close::Linger, hd, dd)];
        seed::capsule(&mut s, &property(false, 0x00, 0, true), &[]);
        seed::capsule(&mut s, &property(false, 0x1c, 0, false), &[]);
        seed::capsule_r2t(
            &mut s,
            &admin(admin_opc::IDENTIFY, cns::CONTROLLER as u32, 0),
            4096,
        );
        seed::capsule_r2t(
            &mut s,
            &admin(admin_opc::IDENTIFY, cns::ACTIVE_NS_LIST as u32, 0),
            4096,
        );
        let mut id_ns = admin(admin_opc::IDENTIFY, cns::NAMESPACE as u32, 0);
        id_ns.nsid = U32::new(1);
        seed::capsule_r2t(&mut s, &id_ns, 4096);
        seed::capsule(
            &mut s,
            &admin(
                admin_opc::SET_FEATURES,
                feature::NUMBER_OF_QUEUES as u32,
                0x0003_0003,
            ),
            &[],
        );
        seed::capsule(
            &mut s,
            &admin(admin_opc::GET_FEATURES, feature::NUMBER_OF_QUEUES as u32, 0),
            &[],
        );
        seed::capsule(&mut s, &admin(admin_opc::ASYNC_EVENT_REQUEST, 0, 0), &[]);
        seed::capsule(&mut s, &admin(admin_opc::KEEP_ALIVE, 0, 0), &[]);
        let numd = (512u32 / 4) - 1;
        seed::capsule_r2t(
            &mut s,
            &admin(
                admin_opc::GET_LOG_PAGE,
                log_id::SMART as u32 | numd << 16,
                0,
            ),
            512,
        );
        seed::capsule(&mut s, &admin(admin_opc::ABORT, 1, 0), &[]);
        // Shutdown notification, then Disconnect.
        seed::capsule(&mut s, &property(true, 0x14, 0x0046_4001, false), &[]);
        seed::capsule(&mut s, &fabrics(fctype::DISCONNECT, &[]), &[]);
        c.add(&format!("admin-enabled-hd{hd}-dd{dd}"), &s);
    }
    // An I/O queue: writes (in the capsule and by R2T), reads, the rest of the NVM
    // command set, on both namespaces.
    for (hd, dd, close) in [
        (false, false, Close::Linger),
        (true, true, Close::Reset),
        (false, true, Close::HalfClose),
    ] {
        let mut s = vec![seed::ctl(Preamble::IoQueue, close, hd, dd)];
        seed::capsule(&mut s, &nvm(0x01, 1, 8, 1), &[0x5a; 4096]);
        seed::capsule_r2t(&mut s, &nvm(0x02, 1, 8, 1), 4096);
        seed::capsule_r2t(&mut s, &nvm(0x01, 1, 16, 4), 16384);
        seed::h2c_data(&mut s, &[0xc3; 16384]);
        seed::capsule_r2t(&mut s, &nvm(0x02, 1, 16, 4), 16384);
        seed::capsule(&mut s, &nvm(0x01, 2, 0, 2), &[0x11; 1024]);
        seed::capsule_r2t(&mut s, &nvm(0x02, 2, 0, 2), 1024);
        seed::capsule(&mut s, &nvm(0x00, 1, 0, 1), &[]);
        seed::capsule(&mut s, &nvm(0x08, 1, 8, 1), &[]);
        seed::capsule(&mut s, &nvm(0x05, 2, 0, 2), &[0x11; 1024]);
        let mut dsm = nvm(0x09, 1, 0, 1);
        dsm.cdw10 = U32::new(0);
        dsm.cdw11 = U32::new(1 << 2);
        dsm.cdw12 = U32::new(0);
        let mut range = [0u8; 16];
        range[4..8].copy_from_slice(&1u32.to_le_bytes());
        range[8..16].copy_from_slice(&9u64.to_le_bytes());
        seed::capsule(&mut s, &dsm, &range);
        seed::capsule_r2t(&mut s, &nvm(0x02, 1, 4095, 2), 8192);
        seed::pause(&mut s, 20);
        c.add(&format!("io-queue-hd{hd}-dd{dd}"), &s);
    }
    // A write whose data comes in small H2CData pieces.
    let mut s = vec![seed::ctl(Preamble::IoQueue, Close::Linger, false, false)];
    seed::capsule_r2t(&mut s, &nvm(0x01, 1, 32, 2), 8192);
    s.push(tcp::op::H2C | tcp::h2c::PIECES);
    s.extend_from_slice(&1024u16.to_le_bytes());
    s.extend_from_slice(&[0x42; 8192]);
    seed::capsule_r2t(&mut s, &nvm(0x02, 1, 32, 2), 8192);
    c.add("io-queue-h2c-pieces", &s);
}

// --- rdma_codec --------------------------------------------------------------------

fn rdma_codec() {
    let mut c = Corpus::new("rdma_codec");
    // Placement: a keyed read, an in-capsule write, a null keyed block.
    let keyed = SglDescriptor::keyed(0x7000_0000, 65536, 0xabcd, sgl_subtype::INVALIDATE_KEY);
    for (name, opc, sgl, icd) in [
        ("keyed-read", 0x02u8, keyed, 0usize),
        (
            "in-capsule-write",
            0x01,
            SglDescriptor::new(0, sgl_subtype::OFFSET, 0, 4096),
            4096,
        ),
        (
            "null-keyed-flush",
            0x00,
            SglDescriptor::keyed(0, 0, 0, sgl_subtype::ADDRESS),
            0,
        ),
    ] {
        let mut sqe = Sqe {
            opc,
            ..Default::default()
        };
        sqe.set_sgl(&sgl);
        let mut s = vec![0];
        s.extend_from_slice(sqe.as_bytes());
        s.extend_from_slice(&131072u32.to_le_bytes());
        s.extend(std::iter::repeat_n(0x5a, icd));
        c.add(&format!("place-{name}"), &s);
    }
    // Host and target: a write that fits the capsule, one that does not, a read.
    for (dir, len) in [(1u8, 4096u32), (1, 65536), (2, 8192), (0, 0)] {
        let mut s = vec![1, dir];
        if dir != 0 {
            s.extend_from_slice(&len.to_le_bytes());
        }
        s.extend_from_slice(&8192u32.to_le_bytes());
        s.extend_from_slice(&0x1000_0000u64.to_le_bytes());
        s.extend_from_slice(&0x1234u32.to_le_bytes());
        s.extend_from_slice(&131072u32.to_le_bytes());
        c.add(&format!("host-dir{dir}-{len}"), &s);
    }
    // Private data: a request for an admin queue and one for an I/O queue.
    for (qid, entries) in [(0u16, 32u16), (1, 128)] {
        let mut s = vec![2];
        for v in [qid, entries, entries, 1] {
            s.extend_from_slice(&v.to_le_bytes());
        }
        s.extend_from_slice(CmReq::new(qid, entries, entries, 1).as_bytes());
        c.add(&format!("cm-req-qid{qid}"), &s);
    }
}

// --- rpc and config ----------------------------------------------------------------

/// Requests that configure a target as polluxd's users do, then look at it.
fn requests() -> Vec<(&'static str, Value)> {
    let nqn = "nqn.2016-06.io.pollux:cnode1";
    let la = json!({"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "0"});
    vec![
        (
            "bdev_malloc_create",
            json!({"name": "Malloc0", "num_blocks": 256, "block_size": 4096}),
        ),
        (
            "bdev_null_create",
            json!({"name": "Null0", "num_blocks": 1024, "block_size": 512}),
        ),
        (
            "bdev_uring_create",
            json!({"name": "U0", "filename": "@file"}),
        ),
        (
            "bdev_delay_create",
            json!({"base_bdev_name": "Malloc0", "name": "Delay0", "avg_read_latency": 10, "p99_read_latency": 20, "avg_write_latency": 10, "p99_write_latency": 20}),
        ),
        ("bdev_error_create", json!({"base_name": "Null0"})),
        (
            "nvmf_create_transport",
            json!({"trtype": "TCP", "max_queue_depth": 64, "in_capsule_data_size": 8192}),
        ),
        (
            "nvmf_create_subsystem",
            json!({"nqn": nqn, "allow_any_host": false, "serial_number": "POLLUX00000000000001", "model_number": "Pollux fuzz", "max_namespaces": 8}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": nqn, "namespace": {"bdev_name": "Malloc0", "nsid": 1, "nguid": "000102030405060708090A0B0C0D0E0F", "eui64": "0001020304050607", "uuid": "6f7d8a52-3c9e-4b1a-9f0e-2d5c4b3a2918"}}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": nqn, "namespace": {"bdev_name": "Null0"}}),
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn, "listen_address": la}),
        ),
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": nqn, "host": "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001"}),
        ),
        (
            "nvmf_subsystem_allow_any_host",
            json!({"nqn": nqn, "allow_any_host": true}),
        ),
        ("nvmf_get_subsystems", json!({})),
        ("nvmf_get_transports", json!({})),
        ("nvmf_get_stats", json!({})),
        ("bdev_get_bdevs", json!({"name": "Malloc0"})),
        ("framework_get_reactors", json!({})),
        ("save_config", json!({})),
        ("nvmf_subsystem_remove_ns", json!({"nqn": nqn, "nsid": 2})),
        ("nvmf_delete_subsystem", json!({"nqn": nqn})),
        ("bdev_malloc_delete", json!({"name": "Malloc0"})),
    ]
}

fn rpc_seeds(methods: &[String]) {
    let mut c = Corpus::new("rpc");
    let reqs = requests();
    // Raw: the requests back to back, as rpc.py writes them; one per write; a batch
    // array; a notification; bad JSON; a request that is JSON but not a request.
    let text = |i: usize, m: &str, p: &Value| {
        serde_json::to_string(&json!({"jsonrpc": "2.0", "id": i, "method": m, "params": p}))
            .expect("JSON")
    };
    let mut all = vec![8u8 * 2];
    for (i, (m, p)) in reqs.iter().enumerate() {
        all.extend_from_slice(text(i, m, p).as_bytes());
    }
    c.add("raw-configure-everything", &all);
    let mut s = vec![0u8];
    s.extend_from_slice(
        br#"{"jsonrpc":"2.0","method":"spdk_get_version"}{"jsonrpc":"2.0","id":"a","method":"rpc_get_methods"}
{"jsonrpc":"2.0","id":null,"method":"bdev_get_bdevs","params":[]}"#,
    );
    c.add("raw-notification-and-ids", &s);
    let mut s = vec![2u8];
    s.extend_from_slice(br#"{"jsonrpc":"1.0","id":1,"method":"x"}[{"jsonrpc":"2.0","id":2,"method":"nvmf_get_stats"}]{"id":3,"method":7}{"jsonrpc":"2.0","id":{},"method":"a"}{"jsonrpc":"2.0","id":4,"method":"save_config","params":5}{"jsonrpc":"2.0","id":5,"method":"nope"} {bad"#);
    c.add("raw-invalid-requests", &s);
    // Structured: every request as its own call, then sequences that build a target.
    let call = |out: &mut Vec<u8>, m: &str, p: &Value| {
        let i = methods
            .iter()
            .position(|x| x == m)
            .unwrap_or_else(|| panic!("no method {m}"));
        out.push(i as u8);
        out.push(1);
        out.extend_from_slice(&json::encode(p));
    };
    for chunk in reqs.chunks(5) {
        let mut s = vec![1u8];
        for (m, p) in chunk {
            call(&mut s, m, p);
        }
        c.add(&format!("calls-{}", chunk[0].0), &s);
    }
    for (m, p) in &reqs {
        let mut s = vec![1u8];
        if m.starts_with("nvmf_subsystem") || *m == "nvmf_delete_subsystem" {
            call(&mut s, "bdev_malloc_create", &reqs[0].1);
            call(&mut s, "nvmf_create_transport", &json!({"trtype": "TCP"}));
            call(&mut s, "nvmf_create_subsystem", &reqs[6].1);
        }
        call(&mut s, m, p);
        c.add(&format!("call-{m}"), &s);
    }
}

fn config() {
    let mut c = Corpus::new("config");
    let quickstart = include_str!("../../../../examples/quickstart.json");
    c.add("quickstart.json", quickstart.as_bytes());
    let entries: Vec<Value> = requests()
        .into_iter()
        .filter(|(m, _)| {
            !m.starts_with("nvmf_get")
                && !matches!(
                    *m,
                    "save_config"
                        | "bdev_get_bdevs"
                        | "framework_get_reactors"
                        | "nvmf_delete_subsystem"
                        | "bdev_malloc_delete"
                        | "nvmf_subsystem_remove_ns"
                )
        })
        .map(|(m, p)| json!({"method": m, "params": p}))
        .collect();
    // SPDK's save_config shape: subsystems Pollux accepts without a counterpart too.
    let spdk = json!({"subsystems": [
        {"subsystem": "iobuf", "config": [{"method": "iobuf_set_options", "params": {"small_pool_count": 8192, "large_pool_count": 1024, "small_bufsize": 8192, "large_bufsize": 135168}}]},
        {"subsystem": "sock", "config": [{"method": "sock_set_default_impl", "params": {"impl_name": "posix"}}, {"method": "sock_impl_set_options", "params": {"impl_name": "posix", "recv_buf_size": 2097152}}]},
        {"subsystem": "vmd", "config": []},
        {"subsystem": "accel", "config": [{"method": "accel_set_options", "params": {"small_cache_size": 128}}]},
        {"subsystem": "scheduler", "config": [{"method": "framework_set_scheduler", "params": {"name": "static"}}]},
        {"subsystem": "bdev", "config": [
            {"method": "bdev_set_options", "params": {"bdev_io_pool_size": 65535, "bdev_io_cache_size": 256}},
            {"method": "bdev_nvme_set_options", "params": {"action_on_timeout": "none"}},
            {"method": "bdev_malloc_create", "params": {"name": "Malloc1", "num_blocks": 131072, "block_size": 512, "physical_block_size": 512, "uuid": "00010203-0405-0607-0809-0a0b0c0d0e0f", "optimal_io_boundary": 0, "md_size": 0, "dif_type": 0, "dif_is_head_of_md": false, "dif_pi_format": 0}},
            {"method": "bdev_nvme_set_hotplug", "params": {"period_us": 100000, "enable": false}},
            {"method": "bdev_wait_for_examine"}
        ]},
        {"subsystem": "nvmf", "config": [
            {"method": "nvmf_set_config", "params": {"discovery_filter": "match_any"}},
            {"method": "nvmf_set_max_subsystems", "params": {"max_subsystems": 1024}},
            {"method": "nvmf_set_crdt", "params": {"crdt1": 0}},
            {"method": "nvmf_create_transport", "params": {"trtype": "TCP", "max_queue_depth": 128, "max_io_qpairs_per_ctrlr": 127, "in_capsule_data_size": 4096, "max_io_size": 131072, "io_unit_size": 131072, "max_aq_depth": 128, "num_shared_buffers": 511, "buf_cache_size": 4294967295u32, "dif_insert_or_strip": false, "zcopy": false, "c2h_success": true, "sock_priority": 0, "abort_timeout_sec": 1, "ack_timeout": 0, "data_wr_pool_size": 0}},
            {"method": "nvmf_create_subsystem", "params": {"nqn": "nqn.2016-06.io.spdk:cnode1", "allow_any_host": true, "serial_number": "SPDK00000000000001", "model_number": "SPDK bdev Controller", "max_namespaces": 32, "min_cntlid": 1, "max_cntlid": 65519, "ana_reporting": false}},
            {"method": "nvmf_subsystem_add_listener", "params": {"nqn": "nqn.2016-06.io.spdk:cnode1", "listen_address": {"trtype": "TCP", "adrfam": "IPv4", "traddr": "127.0.0.1", "trsvcid": "0"}}},
            {"method": "nvmf_subsystem_add_ns", "params": {"nqn": "nqn.2016-06.io.spdk:cnode1", "namespace": {"nsid": 1, "bdev_name": "Malloc1", "nguid": "000102030405060708090A0B0C0D0E0F", "uuid": "00010203-0405-0607-0809-0a0b0c0d0e0f", "no_auto_visible": false}}}
        ]}
    ]});
    let text = serde_json::to_string_pretty(&spdk).expect("JSON");
    c.add("spdk-save-config.json", text.as_bytes());
    let ours = json!({"subsystems": [
        {"subsystem": "bdev", "config": entries[..5].to_vec()},
        {"subsystem": "nvmf", "config": entries[5..].to_vec()},
    ]});
    let text = serde_json::to_string_pretty(&ours).expect("JSON");
    c.add("pollux-everything.json", text.as_bytes());
    let mut s = vec![0u8];
    s.extend_from_slice(&json::encode(&ours));
    c.add("pollux-everything-structured", &s);
    let mut s = vec![0u8];
    s.extend_from_slice(&json::encode(&spdk));
    c.add("spdk-save-config-structured", &s);
}

// --- perf_job ----------------------------------------------------------------------

fn perf_job() {
    let mut c = Corpus::new("perf_job");
    let mut files: Vec<PathBuf> = std::fs::read_dir(jobs_dir())
        .expect("tools/tests/jobs")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "fio"))
        .collect();
    files.sort();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("a job file");
        let name = f
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        c.add(&name, &perf::input(&[], &text));
    }
    let basic = std::fs::read_to_string(jobs_dir().join("basic.fio")).expect("basic.fio");
    c.add(
        "command-line-and-basic.fio",
        &perf::input(
            &[
                "--ioengine=null",
                "--size=16m",
                "--name=cl",
                "--rw=randrw",
                "--rwmixread=30",
                "--bsrange=4k-32k",
                "--iodepth",
                "8",
                "--runtime=1",
                "--time_based",
                "--output-format=json,normal",
            ],
            &basic,
        ),
    );
    c.add(
        "command-line-zipf",
        &perf::input(
            &[
                "--name=z",
                "--ioengine=malloc",
                "--size=1g",
                "--offset=4k",
                "--rw=randread",
                "--random_distribution=zipf:1.1",
                "--bssplit=4k/70:64k/30",
                "--verify=crc32c",
            ],
            "",
        ),
    );
}
