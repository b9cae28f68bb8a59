use super::*;
use crate::dma::{HugepagePolicy, IobufOpts};
use crate::reactor::Engine;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream as StdStream;
use std::time::Duration;

struct Fixture {
    engine: Option<Engine>,
    path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<std::thread::JoinHandle<()>>,
    server: Arc<RpcServer>,
}

impl Fixture {
    fn new() -> Fixture {
        let engine = Engine::builder()
            .core_mask("0x1")
            .iobuf(IobufOpts {
                hugepages: HugepagePolicy::Never,
                ..IobufOpts::small()
            })
            .start()
            .unwrap();
        let path = std::env::temp_dir().join(format!(
            "pollux-rpc-test-{}-{:?}.sock",
            std::process::id(),
            std::thread::current().id()
        ));
        let server = Arc::new(RpcServer::new(engine.handle()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (s, p) = (server.clone(), path.clone());
        let join = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                s.serve(&p, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        for _ in 0..3000 {
            if StdStream::connect(&path).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Fixture {
            engine: Some(engine),
            path,
            stop: Some(tx),
            join: Some(join),
            server,
        }
    }

    fn connect(&self) -> (StdStream, BufReader<StdStream>) {
        let s = StdStream::connect(&self.path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = BufReader::new(s.try_clone().unwrap());
        (s, r)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.join.take().unwrap().join().unwrap();
        assert!(!self.path.exists(), "the socket is removed at shutdown");
        assert!(self.engine.take().unwrap().shutdown().pools_full);
    }
}

fn reply(r: &mut BufReader<StdStream>) -> Value {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

fn call(f: &Fixture, method: &str, params: Value) -> Value {
    let (mut s, mut r) = f.connect();
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    s.write_all(req.to_string().as_bytes()).unwrap();
    reply(&mut r)
}

#[test]
fn bdevs_are_created_listed_and_deleted_with_spdk_names() {
    let f = Fixture::new();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&f.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "owner-only socket");
    }
    let r = call(
        &f,
        "bdev_malloc_create",
        json!({"num_blocks": 2048, "block_size": 512}),
    );
    assert_eq!(r["result"], "Malloc0");
    // SPDK's save_config writes these; they load at their defaults.
    let r = call(
        &f,
        "bdev_null_create",
        json!({"name": "Null0", "num_blocks": 4096, "block_size": 4096, "md_size": 0, "dif_type": 0,
               "dif_is_head_of_md": false, "physical_block_size": 4096, "optimal_io_boundary": 0,
               "uuid": "4a1e7a6c-2a94-4b1c-9a51-0a5f1f0f6a11"}),
    );
    assert_eq!(r["result"], "Null0", "{r}");
    let r = call(&f, "bdev_get_bdevs", json!({"name": "Null0"}));
    let b = &r["result"][0];
    assert_eq!(b["product_name"], "Null disk");
    assert_eq!(b["block_size"], 4096);
    assert_eq!(b["uuid"], "4a1e7a6c-2a94-4b1c-9a51-0a5f1f0f6a11");
    let r = call(&f, "bdev_get_bdevs", json!({}));
    assert_eq!(r["result"].as_array().unwrap().len(), 2);
    // Wrong module, then the right one.
    let r = call(&f, "bdev_null_delete", json!({"name": "Malloc0"}));
    assert_eq!(r["error"]["code"], code::INVALID_PARAMS);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Malloc disk"),
        "{r}"
    );
    assert_eq!(
        call(&f, "bdev_malloc_delete", json!({"name": "Malloc0"}))["result"],
        true
    );
    let r = call(&f, "bdev_get_bdevs", json!({"name": "Malloc0"}));
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no bdev named Malloc0")
    );
    // A name taken twice.
    let r = call(
        &f,
        "bdev_null_create",
        json!({"name": "Null0", "num_blocks": 8, "block_size": 512}),
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{r}"
    );
}

#[test]
fn framework_methods_answer() {
    let f = Fixture::new();
    let r = call(&f, "framework_get_reactors", json!({}));
    let reactors = r["result"]["reactors"].as_array().unwrap();
    assert_eq!(reactors.len(), 1);
    assert_eq!(reactors[0]["lcore"], 0);
    let r = call(&f, "rpc_get_methods", json!({}));
    let names: Vec<&str> = r["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for m in [
        "rpc_get_methods",
        "spdk_get_version",
        "bdev_malloc_create",
        "bdev_uring_create",
        "bdev_get_bdevs",
    ] {
        assert!(names.contains(&m), "{m} missing from {names:?}");
    }
    assert!(
        call(&f, "spdk_get_version", json!({}))["result"]["version"]
            .as_str()
            .unwrap()
            .starts_with("Pollux")
    );
}

#[test]
fn bad_requests_get_clear_errors() {
    let f = Fixture::new();
    let cases = [
        (
            json!({"jsonrpc": "2.0", "id": 1, "method": "no_such_method"}),
            code::METHOD_NOT_FOUND,
            "does not exist",
        ),
        (
            json!({"jsonrpc": "1.0", "id": 2, "method": "rpc_get_methods"}),
            code::INVALID_REQUEST,
            "jsonrpc",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 3, "method": 7}),
            code::INVALID_REQUEST,
            "method",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 4, "method": "bdev_get_bdevs", "params": 5}),
            code::INVALID_REQUEST,
            "params",
        ),
        (json!([]), code::INVALID_REQUEST, "empty batch"),
        (
            json!({"jsonrpc": "2.0", "id": 5, "method": "bdev_malloc_create", "params": {"num_blocks": 8, "block_size": 512, "colour": "red"}}),
            code::INVALID_PARAMS,
            "colour",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 6, "method": "bdev_malloc_create", "params": {"block_size": 512}}),
            code::INVALID_PARAMS,
            "num_blocks",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 7, "method": "bdev_malloc_create", "params": {"num_blocks": 8, "block_size": 512, "md_size": 8}}),
            code::INVALID_PARAMS,
            "md_size",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 8, "method": "bdev_malloc_create", "params": {"num_blocks": 8, "block_size": 1000}}),
            code::INTERNAL_ERROR,
            "power of two",
        ),
        (
            json!({"jsonrpc": "2.0", "id": 9, "method": "bdev_uring_create", "params": {"name": "U", "filename": "/nonexistent"}}),
            code::INTERNAL_ERROR,
            "/nonexistent",
        ),
    ];
    // All on one connection, back to back without separators: it stays usable.
    let (mut s, mut r) = f.connect();
    let mut all = String::new();
    for (req, _, _) in &cases {
        all.push_str(&req.to_string());
    }
    // Split mid-object to check reassembly.
    let (a, b) = all.split_at(all.len() / 2 + 3);
    s.write_all(a.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    s.write_all(b.as_bytes()).unwrap();
    for (req, want, text) in &cases {
        let v = reply(&mut r);
        assert_eq!(v["error"]["code"], *want, "{req} -> {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(text),
            "{req} -> {v}"
        );
    }
    // A notification (no id) gets no answer; the next request still does.
    s.write_all(br#"{"jsonrpc":"2.0","method":"spdk_get_version"}{"jsonrpc":"2.0","id":"x","method":"spdk_get_version"}"#)
        .unwrap();
    assert_eq!(reply(&mut r)["id"], "x");
    // Garbage: a parse error, then the connection closes.
    s.write_all(b"{\"jsonrpc\": nonsense}").unwrap();
    let v = reply(&mut r);
    assert_eq!(v["error"]["code"], code::PARSE_ERROR);
    let mut rest = String::new();
    assert_eq!(
        r.read_line(&mut rest).unwrap(),
        0,
        "closed after a parse error"
    );
    // The server keeps serving others.
    assert!(call(&f, "rpc_get_methods", json!({}))["result"].is_array());
}

#[test]
fn an_oversized_request_is_refused_and_random_bytes_do_not_hurt() {
    let f = Fixture::new();
    let (mut s, mut r) = f.connect();
    let mut big = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\"a\":\"".to_vec();
    big.resize(RPC_REQUEST_LEN_MAX + 100_000, b'a');
    let _ = s.write_all(&big);
    let v = reply(&mut r);
    assert_eq!(v["error"]["code"], code::INVALID_REQUEST);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..50 {
        let (mut s, _r) = f.connect();
        let bytes: Vec<u8> = (0..512)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let _ = s.write_all(&bytes);
    }
    assert!(call(&f, "spdk_get_version", json!({}))["result"].is_object());
}

#[test]
fn spdk_configs_load_in_order_and_name_the_failing_entry() {
    let f = Fixture::new();
    let cfg = json!({"subsystems": [
        {"subsystem": "bdev", "config": [
            {"method": "bdev_malloc_create", "params": {"name": "M0", "num_blocks": 64, "block_size": 512}},
            {"method": "bdev_null_create", "params": {"name": "N0", "num_blocks": 64, "block_size": 512}}
        ]},
        {"subsystem": "accel", "config": null},
    ]});
    assert_eq!(f.server.load_config(&cfg).unwrap(), 2);
    let bad = json!({"subsystems": [{"subsystem": "bdev", "config": [
        {"method": "bdev_null_create", "params": {"name": "N1", "num_blocks": 64, "block_size": 512}},
        {"method": "bdev_frobnicate", "params": {}}
    ]}]});
    let e = f.server.load_config(&bad).unwrap_err();
    assert!(e.message.contains("entry 1 (bdev_frobnicate)"), "{e}");
}

#[test]
fn save_config_loads_back_to_the_same_state() {
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(1 << 20).unwrap();
    let path = file.path().display().to_string();
    let saved = {
        let f = Fixture::new();
        call(
            &f,
            "bdev_malloc_create",
            json!({"name": "M", "num_blocks": 64, "block_size": 4096}),
        );
        call(
            &f,
            "bdev_null_create",
            json!({"num_blocks": 128, "block_size": 512}),
        );
        call(
            &f,
            "bdev_uring_create",
            json!({"name": "U", "filename": path}),
        );
        call(
            &f,
            "bdev_null_create",
            json!({"name": "Gone", "num_blocks": 8, "block_size": 512}),
        );
        call(&f, "bdev_null_delete", json!({"name": "Gone"}));
        let before = call(&f, "bdev_get_bdevs", json!({}))["result"].clone();
        (call(&f, "save_config", json!({}))["result"].clone(), before)
    };
    let f = Fixture::new();
    assert_eq!(f.server.load_config(&saved.0).unwrap(), 3);
    let after = call(&f, "bdev_get_bdevs", json!({}))["result"].clone();
    assert_eq!(after, saved.1, "same bdevs, names, sizes and UUIDs");
}

/// The requests SPDK v26.05's `scripts/rpc.py` sends for the NVMe-oF setup of SPDK's
/// documentation (captured from rpc.py itself against a recording socket: the fields it
/// always sends, false unless asked for, included), then its `save_config`
/// (framework_get_subsystems, then framework_get_config per subsystem) and its
/// `load_config` (rpc_get_methods current) into a fresh target: the same config back.
#[test]
fn spdk_rpc_py_requests_set_up_a_target_and_round_trip_its_config() {
    let nqn = "nqn.2016-06.io.spdk:cnode1";
    let setup = [
        (
            "bdev_malloc_create",
            json!({"num_blocks": 65536, "block_size": 512, "name": "Malloc0",
                "md_interleave": false, "dif_is_head_of_md": false}),
        ),
        (
            "nvmf_create_transport",
            json!({"no_srq": false, "c2h_success": true, "trtype": "TCP",
                "max_io_qpairs_per_ctrlr": 8, "in_capsule_data_size": 8192, "io_unit_size": 16384,
                "zcopy": false, "dif_insert_or_strip": false, "no_wr_batching": false,
                "disable_mappable_bar0": false, "disable_adaptive_irq": false,
                "disable_shadow_doorbells": false, "disable_command_passthru": false}),
        ),
        (
            "nvmf_create_subsystem",
            json!({"nqn": nqn, "serial_number": "SPDK00000000000001",
                "model_number": "SPDK_Controller1", "allow_any_host": true,
                "ana_reporting": false, "passthrough": false, "enable_nssr": false}),
        ),
        (
            "nvmf_subsystem_add_ns",
            json!({"nqn": nqn, "namespace": {"bdev_name": "Malloc0",
                "no_auto_visible": false, "hide_metadata": false}}),
        ),
        (
            "nvmf_subsystem_add_listener",
            json!({"nqn": nqn, "secure_channel": false,
                "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "0"}}),
        ),
        (
            "nvmf_subsystem_add_host",
            json!({"nqn": nqn, "host": "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555"}),
        ),
    ];
    let saved = {
        let f = Fixture::new();
        for (m, p) in &setup {
            let r = call(&f, m, p.clone());
            assert!(r.get("error").is_none(), "{m}: {r}");
        }
        // A feature Pollux lacks is refused by name, not as an unknown field.
        let r = call(
            &f,
            "nvmf_create_subsystem",
            json!({"nqn": "nqn.2016-06.io.spdk:cnode2", "enable_nssr": true}),
        );
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("enable_nssr: NVM Subsystem Reset is not supported"),
            "{r}"
        );
        let subs = call(&f, "framework_get_subsystems", json!({}))["result"].clone();
        let names: Vec<&str> = subs
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["subsystem"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["bdev", "nvmf"]);
        assert_eq!(subs[1]["depends_on"], json!(["bdev"]));
        let mut out = Vec::new();
        for n in names {
            let c = call(
                &f,
                "framework_get_config",
                json!({"name": n, "with_batches": false}),
            );
            out.push(json!({"subsystem": n, "config": c["result"]}));
        }
        assert_eq!(
            json!({ "subsystems": out }),
            call(&f, "save_config", json!({}))["result"]
        );
        json!({ "subsystems": out })
    };
    let f = Fixture::new();
    let methods = call(
        &f,
        "rpc_get_methods",
        json!({"current": true, "include_aliases": false}),
    );
    let methods = methods["result"].as_array().unwrap();
    for s in saved["subsystems"].as_array().unwrap() {
        for e in s["config"].as_array().unwrap() {
            assert!(methods.contains(&e["method"]), "{} not listed", e["method"]);
            let r = call(&f, e["method"].as_str().unwrap(), e["params"].clone());
            assert!(r.get("error").is_none(), "{e}: {r}");
        }
    }
    assert_eq!(call(&f, "save_config", json!({}))["result"], saved);
}

/// One request as rpc.py sends it: no `params` key when it has none.
fn call_rpc_py(f: &Fixture, method: &str, params: Option<Value>) -> Value {
    let (mut s, mut r) = f.connect();
    let mut req = json!({"jsonrpc": "2.0", "id": 1, "method": method});
    if let Some(p) = params {
        req["params"] = p;
    }
    s.write_all(serde_json::to_string_pretty(&req).unwrap().as_bytes())
        .unwrap();
    reply(&mut r)
}

/// Every method polluxd supports, with the request SPDK v26.05's rpc.py builds when the
/// user gives only what is required (the keys it always sends included, as its argparse
/// defaults make them), answered with SPDK's result shape.
#[test]
fn rpc_py_minimal_requests_of_every_supported_method_get_spdk_result_shapes() {
    let f = Fixture::new();
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(1 << 20).unwrap();
    let fname = file.path().to_str().unwrap().to_owned();
    let nqn = "nqn.2016-06.io.spdk:cnode1";
    let host = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
    let la = json!({"trtype": "tcp", "traddr": "127.0.0.1", "trsvcid": "0"});
    #[derive(Debug)]
    enum Shape {
        True,
        Str(&'static str),
        Num(u64),
        Object,
        Array,
    }
    use Shape::*;
    let none = None;
    let steps: Vec<(&str, Option<Value>, Shape)> = vec![
        ("spdk_get_version", none.clone(), Object),
        (
            "rpc_get_methods",
            Some(json!({"current": false, "include_aliases": false})),
            Array,
        ),
        ("framework_get_reactors", none.clone(), Object),
        ("framework_get_subsystems", none.clone(), Array),
        (
            "framework_set_scheduler",
            Some(json!({"name": "static"})),
            True,
        ),
        (
            "iobuf_set_options",
            Some(json!({"enable_numa": false})),
            True,
        ),
        (
            "sock_set_default_impl",
            Some(json!({"impl_name": "posix"})),
            True,
        ),
        (
            "sock_impl_set_options",
            Some(json!({"impl_name": "posix"})),
            True,
        ),
        ("accel_set_options", none.clone(), True),
        ("bdev_set_options", none.clone(), True),
        ("bdev_raid_set_options", none.clone(), True),
        (
            "keyring_linux_set_options",
            Some(json!({"enable": false})),
            True,
        ),
        ("vmd_enable", none.clone(), True),
        ("nvmf_set_config", none.clone(), True),
        (
            "nvmf_set_max_subsystems",
            Some(json!({"max_subsystems": 1024})),
            True,
        ),
        ("nvmf_set_crdt", none.clone(), True),
        (
            "bdev_nvme_set_options",
            Some(
                json!({"delay_cmd_submit": true, "disable_auto_failback": false,
            "generate_uuids": false, "nvme_error_stat": false, "io_path_stat": false,
            "allow_accel_sequence": false, "enable_flush": false}),
            ),
            True,
        ),
        (
            "bdev_nvme_set_hotplug",
            Some(json!({"enable": false})),
            True,
        ),
        (
            "bdev_malloc_create",
            Some(json!({"num_blocks": 2048, "block_size": 512,
            "md_interleave": false, "dif_is_head_of_md": false})),
            Str("Malloc0"),
        ),
        (
            "bdev_null_create",
            Some(
                json!({"name": "Null0", "num_blocks": 256, "block_size": 4096,
            "dif_is_head_of_md": false}),
            ),
            Str("Null0"),
        ),
        (
            "bdev_uring_create",
            Some(json!({"filename": fname, "name": "Uring0"})),
            Str("Uring0"),
        ),
        (
            "bdev_error_create",
            Some(json!({"base_name": "Null0"})),
            True,
        ),
        (
            "bdev_error_inject_error",
            Some(json!({"name": "EE_Null0", "io_type": "read",
            "error_type": "failure"})),
            True,
        ),
        (
            "bdev_delay_create",
            Some(json!({"base_bdev_name": "Malloc0", "name": "Delay0",
            "avg_read_latency": 10, "p99_read_latency": 20, "avg_write_latency": 10,
            "p99_write_latency": 20})),
            Str("Delay0"),
        ),
        (
            "bdev_delay_update_latency",
            Some(json!({"delay_bdev_name": "Delay0",
            "latency_type": "avg_read", "latency_us": 15})),
            True,
        ),
        ("bdev_wait_for_examine", none.clone(), True),
        ("bdev_get_bdevs", none.clone(), Array),
        (
            "bdev_get_iostat",
            Some(json!({"per_channel": false})),
            Object,
        ),
        ("bdev_reset_iostat", none.clone(), True),
        ("bdev_nvme_get_controllers", none.clone(), Array),
        (
            "nvmf_create_transport",
            Some(json!({"trtype": "TCP", "zcopy": false, "no_srq": false,
            "c2h_success": true, "dif_insert_or_strip": false, "no_wr_batching": false,
            "disable_mappable_bar0": false, "disable_adaptive_irq": false,
            "disable_shadow_doorbells": false, "disable_command_passthru": false})),
            True,
        ),
        ("nvmf_get_transports", none.clone(), Array),
        (
            "nvmf_create_subsystem",
            Some(json!({"nqn": nqn, "allow_any_host": false,
            "ana_reporting": false, "passthrough": false, "enable_nssr": false})),
            True,
        ),
        (
            "nvmf_subsystem_add_ns",
            Some(json!({"nqn": nqn, "namespace": {"bdev_name": "Malloc0",
            "no_auto_visible": false, "hide_metadata": false}})),
            Num(1),
        ),
        (
            "nvmf_subsystem_add_ns",
            Some(json!({"nqn": nqn, "namespace": {"bdev_name": "Delay0",
            "no_auto_visible": false, "hide_metadata": false}})),
            Num(2),
        ),
        (
            "nvmf_subsystem_remove_ns",
            Some(json!({"nqn": nqn, "nsid": 2})),
            True,
        ),
        (
            "nvmf_subsystem_add_listener",
            Some(json!({"nqn": nqn, "listen_address": la,
            "secure_channel": false})),
            True,
        ),
        (
            "nvmf_subsystem_add_host",
            Some(json!({"nqn": nqn, "host": host})),
            True,
        ),
        (
            "nvmf_subsystem_remove_host",
            Some(json!({"nqn": nqn, "host": host})),
            True,
        ),
        (
            "nvmf_subsystem_allow_any_host",
            Some(json!({"nqn": nqn, "allow_any_host": true})),
            True,
        ),
        (
            "nvmf_subsystem_get_controllers",
            Some(json!({"nqn": nqn})),
            Array,
        ),
        (
            "nvmf_subsystem_get_qpairs",
            Some(json!({"nqn": nqn})),
            Array,
        ),
        (
            "nvmf_subsystem_get_listeners",
            Some(json!({"nqn": nqn})),
            Array,
        ),
        ("nvmf_get_subsystems", none.clone(), Array),
        ("nvmf_get_stats", none.clone(), Object),
        ("log_get_flags", none.clone(), Object),
        ("log_get_level", none.clone(), Str("NOTICE")),
        ("log_get_print_level", none.clone(), Str("NOTICE")),
        (
            "framework_get_config",
            Some(json!({"name": "bdev", "with_batches": false})),
            Array,
        ),
        ("bdev_error_delete", Some(json!({"name": "EE_Null0"})), True),
        ("nvmf_delete_subsystem", Some(json!({"nqn": nqn})), True),
        ("bdev_delay_delete", Some(json!({"name": "Delay0"})), True),
        ("bdev_uring_delete", Some(json!({"name": "Uring0"})), True),
        ("bdev_null_delete", Some(json!({"name": "Null0"})), True),
        ("bdev_malloc_delete", Some(json!({"name": "Malloc0"})), True),
    ];
    for (m, p, shape) in steps {
        let r = call_rpc_py(&f, m, p.clone());
        let v = &r["result"];
        let ok = match shape {
            True => v == &json!(true),
            Str(s) => v == &json!(s),
            Num(n) => v == &json!(n),
            Object => v.is_object(),
            Array => v.is_array(),
        };
        assert!(ok, "{m} {p:?}: wanted {shape:?}, got {r}");
    }
    // This test program installs no reloadable filter: the log setters say so and change
    // nothing (polluxd's are tested in tools/tests/daemon.rs).
    for (m, p) in [
        ("log_set_level", json!({"level": "INFO"})),
        ("log_set_flag", json!({"flag": "nvmf"})),
    ] {
        let r = call_rpc_py(&f, m, Some(p));
        assert!(
            r["error"]["message"]
                .as_str()
                .unwrap()
                .contains("log filter"),
            "{r}"
        );
    }
    assert_eq!(call_rpc_py(&f, "log_get_level", None)["result"], "NOTICE");
    assert_eq!(
        call_rpc_py(&f, "log_get_flags", None)["result"]["nvmf"],
        false
    );
    // rpc.py -b: a batch gets an array of answers in order.
    let (mut s, mut rd) = f.connect();
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "spdk_get_version"},
        {"jsonrpc": "2.0", "id": 2, "method": "bdev_get_bdevs", "params": {"name": "nope"}},
        {"jsonrpc": "2.0", "method": "framework_get_subsystems"},
    ]);
    s.write_all(batch.to_string().as_bytes()).unwrap();
    let r = reply(&mut rd);
    let r = r.as_array().unwrap();
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0]["id"], 1);
    assert!(r[1]["error"]["message"].as_str().unwrap().contains("nope"));
    // Misspelled keys of option methods are refused; features Pollux lacks by name.
    for (m, p, needle) in [
        (
            "sock_impl_set_options",
            json!({"impl_name": "posix", "recv_buff_size": 1}),
            "recv_buff_size",
        ),
        ("bdev_nvme_set_hotplug", json!({"enable": true}), "hotplug"),
        (
            "framework_set_scheduler",
            json!({"name": "dynamic"}),
            "scheduler",
        ),
        (
            "nvmf_set_config",
            json!({"admin_cmd_passthru": {"identify_ctrlr": true}}),
            "passthrough",
        ),
        (
            "bdev_malloc_create",
            json!({"num_blocks": 8, "block_size": 512, "numa_id": 0}),
            "numa_id",
        ),
    ] {
        let r = call_rpc_py(&f, m, Some(p));
        let msg = r["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{m}: {r}");
    }
}
