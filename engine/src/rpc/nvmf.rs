//! The NVMe-oF target's methods, with SPDK's names and parameters (`nvmf_*`), and the
//! option-setting methods SPDK's `save_config` writes for subsystems Pollux has no
//! counterpart of, so that an SPDK config loads unchanged.

use super::methods::parse;
use super::{RpcContext, RpcError, RpcServer};
use crate::nvmf::{
    IoLimits, ListenAddr, NsOpts, NvmfError, SubsysParams, SubsysType, TransportOpts, Trtype,
};
use pollux_nvme::spec::log::ana_state;
use serde::Deserialize;
use serde_json::{Value, json};

impl From<NvmfError> for RpcError {
    fn from(e: NvmfError) -> Self {
        RpcError::invalid_params(e.0)
    }
}

pub(super) fn register(s: &mut RpcServer) {
    s.register("nvmf_create_transport", nvmf_create_transport);
    s.register("nvmf_get_transports", nvmf_get_transports);
    s.register("nvmf_create_subsystem", nvmf_create_subsystem);
    s.register("nvmf_delete_subsystem", nvmf_delete_subsystem);
    s.register("nvmf_get_subsystems", nvmf_get_subsystems);
    s.register("nvmf_subsystem_get_controllers", |ctx, p| {
        let nqn = existing_nqn(ctx, p)?;
        let list: Vec<Value> = ctx
            .nvmf
            .controllers(&nqn)
            .into_iter()
            .map(|c| {
                json!({"cntlid": c.cntlid, "hostnqn": c.hostnqn, "hostid": c.hostid.to_string(),
                    "num_io_qpairs": c.queues.len() - 1})
            })
            .collect();
        Ok(Value::Array(list))
    });
    s.register("nvmf_subsystem_get_qpairs", |ctx, p| {
        let nqn = existing_nqn(ctx, p)?;
        let mut list = Vec::new();
        for c in ctx.nvmf.controllers(&nqn) {
            for (qid, thread) in c.queues {
                list.push(
                    json!({"cntlid": c.cntlid, "qid": qid, "state": "enabled", "thread": thread,
                        "hostnqn": c.hostnqn}),
                );
            }
        }
        Ok(Value::Array(list))
    });
    s.register("nvmf_subsystem_get_listeners", |ctx, p| {
        let nqn = existing_nqn(ctx, p)?;
        let info = ctx.nvmf.info();
        let Some(ss) = info.subsystems.iter().find(|s| s.nqn == nqn) else {
            return Ok(json!([]));
        };
        let list: Vec<Value> = ss
            .listeners
            .iter()
            .map(|l| {
                if !ss.ana_reporting {
                    // Without ANA reporting every listener is optimized for the one
                    // ANA group.
                    return json!({"address": listen_json(l), "ana_state": "optimized",
                        "ana_states": [{"ana_group": 1, "ana_state": "optimized"}]});
                }
                // As SPDK: every group the subsystem may have, 1 to max_namespaces.
                let states: Vec<Value> = (1..=ss.max_namespaces)
                    .map(|g| {
                        json!({"ana_group": g, "ana_state": ana_state::name(ss.ana_state(l, g))})
                    })
                    .collect();
                json!({"address": listen_json(l), "ana_states": states})
            })
            .collect();
        Ok(Value::Array(list))
    });
    s.register("nvmf_subsystem_add_ns", nvmf_subsystem_add_ns);
    s.register(
        "nvmf_subsystem_listener_set_ana_state",
        nvmf_subsystem_listener_set_ana_state,
    );
    s.register("nvmf_subsystem_remove_ns", nvmf_subsystem_remove_ns);
    s.register("nvmf_subsystem_add_listener", |c, p| listener(c, p, true));
    s.register("nvmf_subsystem_remove_listener", |c, p| {
        listener(c, p, false)
    });
    s.register("nvmf_subsystem_add_host", |c, p| host(c, p, true));
    s.register("nvmf_subsystem_remove_host", |c, p| host(c, p, false));
    s.register(
        "nvmf_subsystem_allow_any_host",
        nvmf_subsystem_allow_any_host,
    );
    s.register("nvmf_get_stats", nvmf_get_stats);
    // Pollux's own (SPDK traces into shared memory for spdk_trace instead): every
    // command of a subsystem's I/O queues, or of one host's, logged as it completes.
    s.register("pollux_trace_commands", |ctx, p| {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct P {
            nqn: String,
            host: Option<String>,
            enable: bool,
        }
        let p: P = parse(p)?;
        ctx.nvmf.set_trace(&p.nqn, p.host.as_deref(), p.enable)?;
        tracing::info!(nqn = %p.nqn, host = ?p.host, enable = p.enable, "command trace changed");
        Ok(json!(true))
    });
    // Options of SPDK subsystems that have no counterpart here (socket layer, accel,
    // scheduler) or whose Pollux counterpart is fixed at start (iobuf pools): SPDK's
    // save_config writes them, so they are accepted with SPDK's keys (a misspelled one
    // is refused), each logging that it changed nothing; a value that asks for a feature
    // Pollux lacks is refused by name.
    for spec in OPTION_METHODS {
        s.register(spec.method, move |_, p| {
            let m = match p {
                None | Some(Value::Null) => serde_json::Map::new(),
                Some(Value::Object(m)) => m,
                Some(_) => {
                    return Err(RpcError::invalid_params(format!(
                        "{} takes an object of parameters",
                        spec.method
                    )));
                }
            };
            spec.check(&m).map_err(RpcError::invalid_params)?;
            if spec.method == "bdev_nvme_set_options" {
                // The defaults of NVMe-oF controllers attached from now on.
                super::fabric::set_options(&m).map_err(RpcError::invalid_params)?;
            }
            tracing::info!(
                method = spec.method,
                "accepted for SPDK config compatibility; it changes nothing in Pollux"
            );
            Ok(json!(true))
        });
    }
    register_vmd(s);
}

/// An SPDK option method Pollux accepts without effect: its keys, those it requires,
/// and the check that refuses values asking for what Pollux lacks.
struct OptionMethod {
    method: &'static str,
    keys: &'static [&'static str],
    required: &'static [&'static str],
    refuse: fn(&serde_json::Map<String, Value>) -> Result<(), String>,
}

impl OptionMethod {
    fn check(&self, m: &serde_json::Map<String, Value>) -> Result<(), String> {
        if let Some(k) = m.keys().find(|k| !self.keys.contains(&k.as_str())) {
            return Err(format!(
                "unknown field `{k}`: {} takes {}",
                self.method,
                if self.keys.is_empty() {
                    "no parameters".to_owned()
                } else {
                    self.keys.join(", ")
                }
            ));
        }
        if let Some(k) = self.required.iter().find(|k| !m.contains_key(**k)) {
            return Err(format!("{} needs {k}", self.method));
        }
        (self.refuse)(m)
    }
}

/// `key` is absent or `off`; otherwise `what` is refused.
fn off(
    m: &serde_json::Map<String, Value>,
    key: &str,
    ok: &[Value],
    what: &str,
) -> Result<(), String> {
    match m.get(key) {
        Some(v) if !ok.contains(v) => Err(format!("{key} {v}: {what} is not supported by Pollux")),
        _ => Ok(()),
    }
}

fn nothing_refused(_: &serde_json::Map<String, Value>) -> Result<(), String> {
    Ok(())
}

const OPTION_METHODS: &[OptionMethod] = &[
    OptionMethod {
        method: "nvmf_set_config",
        keys: &[
            "admin_cmd_passthru",
            "poll_groups_mask",
            "discovery_filter",
            "dhchap_digests",
            "dhchap_dhgroups",
            "dup_host_policy",
        ],
        required: &[],
        refuse: |m| {
            if let Some(p) = m.get("admin_cmd_passthru") {
                let Some(p) = p.as_object() else {
                    return Err("admin_cmd_passthru must be an object".into());
                };
                const BITS: [&str; 9] = [
                    "identify_ctrlr",
                    "identify_uuid_list",
                    "get_log_page",
                    "get_set_features",
                    "sanitize",
                    "security_send_recv",
                    "fw_update",
                    "nvme_mi",
                    "vendor_specific",
                ];
                for (k, v) in p {
                    if !BITS.contains(&k.as_str()) {
                        return Err(format!("unknown field `admin_cmd_passthru.{k}`"));
                    }
                    if v != &json!(false) {
                        return Err(format!(
                            "admin_cmd_passthru.{k}: admin command passthrough is not supported by Pollux"
                        ));
                    }
                }
            }
            off(
                m,
                "discovery_filter",
                &[json!("match_any")],
                "a filtered discovery log",
            )?;
            off(
                m,
                "dup_host_policy",
                &[json!("allow")],
                "restricting duplicate host NQNs",
            )
        },
    },
    OptionMethod {
        method: "nvmf_set_max_subsystems",
        keys: &["max_subsystems"],
        required: &["max_subsystems"],
        refuse: nothing_refused,
    },
    OptionMethod {
        method: "nvmf_set_crdt",
        keys: &["crdt1", "crdt2", "crdt3"],
        required: &[],
        refuse: |m| {
            for k in ["crdt1", "crdt2", "crdt3"] {
                off(m, k, &[json!(0)], "a Command Retry Delay Time")?;
            }
            Ok(())
        },
    },
    OptionMethod {
        method: "iobuf_set_options",
        keys: &[
            "small_pool_count",
            "large_pool_count",
            "small_bufsize",
            "large_bufsize",
            "enable_numa",
        ],
        required: &[],
        refuse: |m| off(m, "enable_numa", &[json!(false)], "NUMA-local iobuf pools"),
    },
    OptionMethod {
        method: "accel_set_options",
        keys: &[
            "small_cache_size",
            "large_cache_size",
            "task_count",
            "sequence_count",
            "buf_count",
        ],
        required: &[],
        refuse: nothing_refused,
    },
    OptionMethod {
        method: "sock_set_default_impl",
        keys: &["impl_name"],
        required: &["impl_name"],
        refuse: |m| {
            off(
                m,
                "impl_name",
                &[json!("posix")],
                "a socket implementation other than posix",
            )
        },
    },
    OptionMethod {
        method: "sock_impl_set_options",
        keys: &[
            "impl_name",
            "recv_buf_size",
            "send_buf_size",
            "enable_recv_pipe",
            "enable_quickack",
            "enable_placement_id",
            "enable_zerocopy_send_server",
            "enable_zerocopy_send_client",
            "zerocopy_threshold",
            "tls_version",
            "enable_ktls",
        ],
        required: &["impl_name"],
        refuse: |m| off(m, "enable_ktls", &[json!(false)], "kernel TLS"),
    },
    OptionMethod {
        method: "bdev_set_options",
        keys: &[
            "bdev_io_pool_size",
            "bdev_io_cache_size",
            "bdev_auto_examine",
            "iobuf_small_cache_size",
            "iobuf_large_cache_size",
        ],
        required: &[],
        refuse: nothing_refused,
    },
    OptionMethod {
        method: "bdev_raid_set_options",
        keys: &["process_window_size_kb", "process_max_bandwidth_mb_sec"],
        required: &[],
        refuse: nothing_refused,
    },
    OptionMethod {
        method: "bdev_nvme_set_options",
        keys: &[
            "action_on_timeout",
            "timeout_us",
            "timeout_admin_us",
            "keep_alive_timeout_ms",
            "arbitration_burst",
            "low_priority_weight",
            "medium_priority_weight",
            "high_priority_weight",
            "nvme_adminq_poll_period_us",
            "nvme_ioq_poll_period_us",
            "io_queue_requests",
            "delay_cmd_submit",
            "transport_retry_count",
            "bdev_retry_count",
            "transport_ack_timeout",
            "ctrlr_loss_timeout_sec",
            "reconnect_delay_sec",
            "fast_io_fail_timeout_sec",
            "disable_auto_failback",
            "generate_uuids",
            "transport_tos",
            "nvme_error_stat",
            "rdma_srq_size",
            "io_path_stat",
            "allow_accel_sequence",
            "rdma_max_cq_size",
            "rdma_cm_event_timeout_ms",
            "dhchap_digests",
            "dhchap_dhgroups",
            "rdma_umr_per_io",
            "tcp_connect_timeout_ms",
            "enable_flush",
            "multipath_opts",
        ],
        required: &[],
        refuse: |m| {
            off(
                m,
                "generate_uuids",
                &[json!(false)],
                "generated namespace UUIDs",
            )
        },
    },
    OptionMethod {
        method: "bdev_nvme_set_hotplug",
        keys: &["enable", "period_us"],
        required: &["enable"],
        refuse: |m| off(m, "enable", &[json!(false)], "NVMe hotplug monitoring"),
    },
    OptionMethod {
        method: "bdev_wait_for_examine",
        keys: &[],
        required: &[],
        refuse: nothing_refused,
    },
    OptionMethod {
        method: "framework_set_scheduler",
        keys: &[
            "name",
            "period",
            "load_limit",
            "core_limit",
            "core_busy",
            "mappings",
        ],
        required: &["name"],
        refuse: |m| {
            off(
                m,
                "name",
                &[json!("static")],
                "a scheduler other than static",
            )?;
            match m.get("mappings") {
                Some(v) if v != &json!("") => Err(format!(
                    "mappings {v}: moving threads between cores is not supported by Pollux"
                )),
                _ => Ok(()),
            }
        },
    },
    OptionMethod {
        method: "keyring_linux_set_options",
        keys: &["enable"],
        required: &[],
        refuse: |m| off(m, "enable", &[json!(false)], "the Linux keyring"),
    },
];

/// `vmd_enable` ignores its parameters in SPDK too.
fn register_vmd(s: &mut RpcServer) {
    s.register("vmd_enable", |_, _| {
        tracing::info!(
            method = "vmd_enable",
            "accepted for SPDK config compatibility; Pollux does not enumerate VMD domains"
        );
        Ok(json!(true))
    });
}

/// Parameters of `nvmf_create_transport`: SPDK decodes them leniently (unknown keys
/// ignored), so RDMA-only keys in a TCP entry are fine.
#[derive(Deserialize)]
struct TransportParams {
    trtype: String,
    #[serde(default)]
    tgt_name: Option<String>,
    #[serde(flatten)]
    rest: serde_json::Map<String, Value>,
}

/// The `nqn` of a query method's parameters, which must name a subsystem.
fn existing_nqn(ctx: &RpcContext, p: Option<Value>) -> Result<String, RpcError> {
    let p: NqnOnly = parse(p)?;
    no_tgt_name(&p.tgt_name)?;
    if !ctx.nvmf.info().subsystems.iter().any(|s| s.nqn == p.nqn) {
        return Err(RpcError::invalid_params(format!(
            "subsystem {} does not exist",
            p.nqn
        )));
    }
    Ok(p.nqn)
}

fn no_tgt_name(t: &Option<String>) -> Result<(), RpcError> {
    match t {
        None => Ok(()),
        Some(n) => Err(RpcError::failed(format!(
            "Unable to find a target: Pollux has one target; drop tgt_name {n:?}"
        ))),
    }
}

fn nvmf_create_transport(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    let p: TransportParams = parse(p)?;
    no_tgt_name(&p.tgt_name)?;
    let trtype = Trtype::parse(&p.trtype).map_err(|_| {
        RpcError::invalid_params(format!(
            "Invalid transport type '{}': this target serves TCP and RDMA",
            p.trtype
        ))
    })?;
    // Take the keys the options know, over this transport's defaults; ignore other
    // keys as SPDK does.
    let mut known = match serde_json::to_value(TransportOpts::defaults(trtype)) {
        Ok(Value::Object(m)) => m,
        _ => unreachable!("options serialize to an object"),
    };
    for (k, v) in p.rest {
        if known.contains_key(&k) {
            known.insert(k, v);
        } else {
            tracing::info!(key = %k, %trtype, "nvmf_create_transport: option ignored (not an option of Pollux)");
        }
    }
    let opts: TransportOpts = serde_json::from_value(Value::Object(known))
        .map_err(|e| RpcError::invalid_params(format!("invalid parameters: {e}")))?;
    ctx.nvmf.create_transport(trtype, opts).map_err(|e| {
        if e.0.contains("already exists") {
            RpcError::failed(format!("Transport type '{trtype}' already exists"))
        } else {
            RpcError::invalid_params(e.0)
        }
    })?;
    tracing::info!(%trtype, "NVMe-oF transport created");
    Ok(json!(true))
}

fn transport_json(t: Trtype, o: &TransportOpts) -> Value {
    let mut v = serde_json::to_value(o).expect("serializable");
    let m = v.as_object_mut().expect("an object");
    let mut out = serde_json::Map::new();
    out.insert("trtype".into(), json!(t.as_str()));
    out.append(m);
    Value::Object(out)
}

fn nvmf_get_transports(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct P {
        trtype: Option<String>,
        tgt_name: Option<String>,
    }
    let p: P = parse(p.filter(|v| !v.is_null()))?;
    no_tgt_name(&p.tgt_name)?;
    let all = ctx.nvmf.info().transports;
    let out: Vec<Value> = match &p.trtype {
        Some(want) => {
            let t = Trtype::parse(want).ok();
            let found: Vec<Value> = all
                .iter()
                .filter(|(x, _)| Some(*x) == t)
                .map(|(x, o)| transport_json(*x, o))
                .collect();
            if found.is_empty() {
                return Err(RpcError {
                    code: -19,
                    message: format!("No such device: no {want} transport"),
                });
            }
            found
        }
        None => all.iter().map(|(x, o)| transport_json(*x, o)).collect(),
    };
    Ok(Value::Array(out))
}

fn nvmf_create_subsystem(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        nqn: String,
        serial_number: Option<String>,
        model_number: Option<String>,
        #[serde(default)]
        allow_any_host: bool,
        #[serde(default)]
        max_namespaces: u32,
        #[serde(default)]
        min_cntlid: u16,
        #[serde(default)]
        max_cntlid: u16,
        #[serde(default)]
        ana_reporting: bool,
        tgt_name: Option<String>,
        // SPDK's rpc.py always sends these three, false unless asked for.
        #[serde(default)]
        passthrough: bool,
        #[serde(default)]
        enable_nssr: bool,
        // The limits reported to hosts: rpc.py's (in KiB) or save_config's.
        max_discard_size_kib: Option<u64>,
        dmrsl: Option<u32>,
        max_write_zeroes_size_kib: Option<u64>,
        wzsl: Option<u8>,
    }
    let p: P = parse(p)?;
    no_tgt_name(&p.tgt_name)?;
    for (on, what) in [
        (p.passthrough, "passthrough: NVMe passthrough is"),
        (p.enable_nssr, "enable_nssr: NVM Subsystem Reset is"),
    ] {
        if on {
            return Err(RpcError::invalid_params(format!(
                "{what} not supported by Pollux: leave it out or false/0"
            )));
        }
    }
    let mut limits = IoLimits {
        dmrsl: p.dmrsl.unwrap_or(0),
        wzsl: p.wzsl.unwrap_or(0),
    };
    // As SPDK: KiB over 512-byte blocks, and a power of two of at least 8 KiB.
    if let Some(kib) = p.max_discard_size_kib {
        limits.dmrsl = u32::try_from(kib.saturating_mul(2)).map_err(|_| {
            RpcError::invalid_params(format!(
                "max_discard_size_kib {kib}: at most {} KiB",
                u32::MAX / 2
            ))
        })?;
    }
    if let Some(kib) = p.max_write_zeroes_size_kib {
        limits.wzsl = match kib {
            0 => 0,
            k if k >= 8 && k.is_power_of_two() => (k >> 2).trailing_zeros() as u8,
            k => {
                return Err(RpcError::invalid_params(format!(
                    "max_write_zeroes_size_kib {k}: 0 (no limit) or a power of two of at least 8"
                )));
            }
        };
    }
    ctx.nvmf.create_subsystem(SubsysParams {
        nqn: p.nqn.clone(),
        serial: p.serial_number,
        model: p.model_number,
        allow_any_host: p.allow_any_host,
        max_namespaces: p.max_namespaces,
        min_cntlid: p.min_cntlid,
        max_cntlid: p.max_cntlid,
        limits,
        ana_reporting: p.ana_reporting,
    })?;
    tracing::info!(nqn = %p.nqn, "subsystem created");
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NqnOnly {
    nqn: String,
    tgt_name: Option<String>,
}

fn nvmf_delete_subsystem(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    let p: NqnOnly = parse(p)?;
    no_tgt_name(&p.tgt_name)?;
    ctx.nvmf.delete_subsystem(&p.nqn)?;
    tracing::info!(nqn = %p.nqn, "subsystem deleted");
    Ok(json!(true))
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fn parse_hex<const N: usize>(what: &str, s: &str) -> Result<[u8; N], RpcError> {
    let clean: String = s.chars().filter(|c| *c != '-').collect();
    let bad =
        || RpcError::invalid_params(format!("{what} {s:?} must be {} hexadecimal digits", N * 2));
    // Digits only: a multi-byte character must not be sliced through (found by the
    // config fuzz target).
    if clean.len() != N * 2 || !clean.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&clean[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn listen_json(l: &ListenAddr) -> Value {
    json!({
        "trtype": l.trtype.as_str(),
        "transport": l.trtype.as_str(),
        "adrfam": l.adrfam.as_str(),
        "traddr": l.addr.ip().to_string(),
        "trsvcid": l.addr.port().to_string(),
    })
}

fn nvmf_get_subsystems(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct P {
        nqn: Option<String>,
        tgt_name: Option<String>,
    }
    let p: P = parse(p.filter(|v| !v.is_null()))?;
    no_tgt_name(&p.tgt_name)?;
    let info = ctx.nvmf.info();
    let mut out = Vec::new();
    for ss in &info.subsystems {
        if p.nqn.as_deref().is_some_and(|n| n != ss.nqn) {
            continue;
        }
        let mut v = json!({
            "nqn": ss.nqn,
            "subtype": match ss.subtype { SubsysType::Discovery => "Discovery", SubsysType::Nvme => "NVMe" },
            "listen_addresses": ss.listeners.iter().map(listen_json).collect::<Vec<_>>(),
            "allow_any_host": ss.allow_any_host,
            "hosts": ss.hosts.iter().map(|h| json!({"nqn": h})).collect::<Vec<_>>(),
        });
        if ss.subtype == SubsysType::Nvme {
            let m = v.as_object_mut().expect("an object");
            m.insert("serial_number".into(), json!(ss.serial));
            m.insert("model_number".into(), json!(ss.model));
            m.insert("max_namespaces".into(), json!(ss.max_namespaces));
            m.insert("min_cntlid".into(), json!(ss.min_cntlid));
            m.insert("max_cntlid".into(), json!(ss.max_cntlid));
            m.insert("dmrsl".into(), json!(ss.limits.dmrsl));
            m.insert("wzsl".into(), json!(ss.limits.wzsl));
            m.insert("ana_reporting".into(), json!(ss.ana_reporting));
            let ns: Vec<Value> = ss
                .namespaces
                .values()
                .map(|n| {
                    let mut j = json!({
                        "nsid": n.nsid,
                        "bdev_name": n.bdev.name(),
                        "name": n.bdev.name(),
                        "uuid": n.uuid.to_string(),
                    });
                    if let Some(g) = n.nguid {
                        j["nguid"] = json!(hex_upper(&g));
                    }
                    if let Some(e) = n.eui64 {
                        j["eui64"] = json!(hex_upper(&e));
                    }
                    if ss.ana_reporting {
                        j["anagrpid"] = json!(n.anagrpid);
                    }
                    if let Some(f) = n.resv.ptpl_file() {
                        j["ptpl_file"] = json!(f);
                    }
                    j
                })
                .collect();
            m.insert("namespaces".into(), json!(ns));
        }
        out.push(v);
    }
    if let Some(n) = &p.nqn {
        if out.is_empty() {
            return Err(RpcError {
                code: -19,
                message: format!("No such device: subsystem {n} does not exist"),
            });
        }
    }
    Ok(Value::Array(out))
}

fn nvmf_subsystem_add_ns(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ns {
        bdev_name: String,
        #[serde(default)]
        nsid: u32,
        nguid: Option<String>,
        eui64: Option<String>,
        uuid: Option<String>,
        ptpl_file: Option<String>,
        anagrpid: Option<u32>,
        no_auto_visible: Option<bool>,
        /// SPDK's rpc.py always sends it. No Pollux bdev has metadata, so hiding it
        /// changes nothing either way.
        #[allow(dead_code)]
        hide_metadata: Option<bool>,
    }
    #[derive(Deserialize)]
    struct P {
        nqn: String,
        namespace: Ns,
        tgt_name: Option<String>,
    }
    let p: P = parse(p)?;
    no_tgt_name(&p.tgt_name)?;
    let ns = p.namespace;
    if ns.no_auto_visible == Some(true) {
        return Err(RpcError::invalid_params(
            "no_auto_visible is not supported by Pollux",
        ));
    }
    let bdev =
        ctx.engine.bdevs().get(&ns.bdev_name).ok_or_else(|| {
            RpcError::invalid_params(format!("bdev {} does not exist", ns.bdev_name))
        })?;
    let nguid = ns
        .nguid
        .as_deref()
        .map(|s| parse_hex::<16>("nguid", s))
        .transpose()?;
    let eui64 = ns
        .eui64
        .as_deref()
        .map(|s| parse_hex::<8>("eui64", s))
        .transpose()?;
    let uuid = ns
        .uuid
        .as_deref()
        .map(|s| {
            uuid::Uuid::parse_str(s)
                .map_err(|_| RpcError::invalid_params(format!("uuid {s:?} is not a UUID")))
        })
        .transpose()?;
    if ns.anagrpid == Some(0) {
        return Err(RpcError::invalid_params("anagrpid 0 is not an ANA group"));
    }
    let o = NsOpts {
        nsid: ns.nsid,
        uuid,
        nguid,
        eui64,
        anagrpid: ns.anagrpid.unwrap_or(0),
        ptpl_file: ns.ptpl_file.map(Into::into),
    };
    let nsid = ctx.nvmf.add_ns(&p.nqn, bdev, o)?;
    tracing::info!(nqn = %p.nqn, nsid, bdev = %ns.bdev_name, "namespace added");
    Ok(json!(nsid))
}

fn nvmf_subsystem_remove_ns(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        nqn: String,
        nsid: u32,
        tgt_name: Option<String>,
    }
    let p: P = parse(p)?;
    no_tgt_name(&p.tgt_name)?;
    ctx.nvmf.remove_ns(&p.nqn, p.nsid)?;
    tracing::info!(nqn = %p.nqn, nsid = p.nsid, "namespace removed");
    Ok(json!(true))
}

fn resolve_nqn(nqn: &str) -> &str {
    // SPDK's rpc.py accepts "discovery" for the discovery subsystem.
    if nqn == "discovery" {
        pollux_nvme::spec::fabrics::DISCOVERY_NQN
    } else {
        nqn
    }
}

/// A `listen_address` (SPDK decodes it strictly, the rest of the call leniently).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct La {
    trtype: String,
    adrfam: Option<String>,
    traddr: String,
    trsvcid: Option<String>,
}

impl La {
    fn addr(&self) -> Result<ListenAddr, NvmfError> {
        ListenAddr::parse(
            &self.trtype,
            self.adrfam.as_deref(),
            &self.traddr,
            self.trsvcid.as_deref().unwrap_or("4420"),
        )
    }
}

fn listener(ctx: &RpcContext, p: Option<Value>, add: bool) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    struct P {
        nqn: String,
        listen_address: La,
        tgt_name: Option<String>,
        #[serde(default)]
        secure_channel: bool,
        ana_state: Option<String>,
        sock_impl: Option<String>,
    }
    let p: P = parse(p)?;
    no_tgt_name(&p.tgt_name)?;
    let ana = p.ana_state.as_deref().map(settable_ana_state).transpose()?;
    if let Some(i) = p.sock_impl.as_deref().filter(|i| *i != "posix") {
        return Err(RpcError::invalid_params(format!(
            "sock_impl {i:?}: Pollux's listeners are plain sockets (posix); TLS (ssl) is not supported"
        )));
    }
    if p.secure_channel {
        return Err(RpcError::invalid_params(
            "secure_channel (TLS) is not supported by Pollux",
        ));
    }
    let addr = p.listen_address.addr()?;
    let nqn = resolve_nqn(&p.nqn);
    if add {
        ctx.nvmf.add_listener(nqn, addr)?;
        // Listeners start optimized; another first state applies to every group, and
        // needs ANA reporting (as SPDK).
        if let Some(st) = ana.filter(|&s| s != ana_state::OPTIMIZED) {
            if let Err(e) = ctx.nvmf.set_ana_state(nqn, addr, st, 0) {
                let _ = ctx.nvmf.remove_listener(nqn, addr);
                return Err(e.into());
            }
        }
    } else {
        ctx.nvmf.remove_listener(nqn, addr)?;
    }
    Ok(json!(true))
}

/// An ANA state a listener may be set to, by SPDK's name.
fn settable_ana_state(s: &str) -> Result<u8, RpcError> {
    match ana_state::parse(s) {
        Some(st @ (ana_state::OPTIMIZED | ana_state::NON_OPTIMIZED | ana_state::INACCESSIBLE)) => {
            Ok(st)
        }
        _ => Err(RpcError::invalid_params(format!(
            "ana_state {s:?}: one of optimized, non_optimized, inaccessible"
        ))),
    }
}

/// SPDK's `nvmf_subsystem_listener_set_ana_state`.
fn nvmf_subsystem_listener_set_ana_state(
    ctx: &RpcContext,
    p: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        nqn: String,
        listen_address: La,
        ana_state: String,
        #[serde(default)]
        anagrpid: u32,
        tgt_name: Option<String>,
    }
    let p: P = parse(p)?;
    no_tgt_name(&p.tgt_name)?;
    let st = settable_ana_state(&p.ana_state)?;
    let addr = p.listen_address.addr()?;
    ctx.nvmf.set_ana_state(&p.nqn, addr, st, p.anagrpid)?;
    Ok(json!(true))
}

fn host(ctx: &RpcContext, p: Option<Value>, add: bool) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    struct P {
        nqn: String,
        host: String,
        tgt_name: Option<String>,
        psk: Option<String>,
        dhchap_key: Option<String>,
        dhchap_ctrlr_key: Option<String>,
    }
    let p: P = parse(p)?;
    no_tgt_name(&p.tgt_name)?;
    if p.psk.is_some() || p.dhchap_key.is_some() || p.dhchap_ctrlr_key.is_some() {
        return Err(RpcError::invalid_params(
            "psk and DH-HMAC-CHAP keys are not supported by Pollux",
        ));
    }
    if add {
        ctx.nvmf.add_host(&p.nqn, &p.host)?;
    } else {
        ctx.nvmf.remove_host(&p.nqn, &p.host)?;
    }
    Ok(json!(true))
}

fn nvmf_subsystem_allow_any_host(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        nqn: String,
        allow_any_host: bool,
        tgt_name: Option<String>,
    }
    let p: P = parse(p)?;
    no_tgt_name(&p.tgt_name)?;
    ctx.nvmf.allow_any_host(&p.nqn, p.allow_any_host)?;
    Ok(json!(true))
}

fn nvmf_get_stats(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct P {
        tgt_name: Option<String>,
    }
    let p: P = parse(p.filter(|v| !v.is_null()))?;
    no_tgt_name(&p.tgt_name)?;
    let pgs: Vec<Value> = ctx
        .nvmf
        .poll_group_stats()
        .into_iter()
        .map(|(name, s, trs)| {
            let mut v = serde_json::to_value(s).expect("serializable");
            v["name"] = json!(name);
            v["transports"] = serde_json::to_value(trs).expect("serializable");
            v
        })
        .collect();
    Ok(json!({"tick_rate": 1_000_000_000u64, "poll_groups": pgs}))
}

/// The `nvmf` section of `save_config`: transport, then per subsystem its creation,
/// listeners, hosts and namespaces (SPDK's order).
pub(super) fn saved_config(ctx: &RpcContext) -> Vec<Value> {
    let info = ctx.nvmf.info();
    let mut out = Vec::new();
    for (t, o) in &info.transports {
        out.push(json!({"method": "nvmf_create_transport", "params": transport_json(*t, o)}));
    }
    for ss in &info.subsystems {
        if ss.subtype == SubsysType::Discovery {
            for l in &ss.listeners {
                out.push(json!({"method": "nvmf_subsystem_add_listener", "params": {
                    "nqn": ss.nqn, "listen_address": listen_json_saved(l)}}));
            }
            continue;
        }
        out.push(json!({"method": "nvmf_create_subsystem", "params": {
            "nqn": ss.nqn,
            "allow_any_host": ss.allow_any_host,
            "serial_number": ss.serial,
            "model_number": ss.model,
            "max_namespaces": ss.max_namespaces,
            "min_cntlid": ss.min_cntlid,
            "max_cntlid": ss.max_cntlid,
            "ana_reporting": ss.ana_reporting,
            "dmrsl": ss.limits.dmrsl,
            "wzsl": ss.limits.wzsl,
        }}));
        for l in &ss.listeners {
            out.push(json!({"method": "nvmf_subsystem_add_listener", "params": {
                "nqn": ss.nqn, "listen_address": listen_json_saved(l)}}));
            // States other than the first one (optimized), group by group.
            for g in (1..=ss.max_namespaces).filter(|_| ss.ana_reporting) {
                let st = ss.ana_state(l, g);
                if st != ana_state::OPTIMIZED {
                    out.push(
                        json!({"method": "nvmf_subsystem_listener_set_ana_state", "params": {
                        "nqn": ss.nqn, "listen_address": listen_json_saved(l),
                        "ana_state": ana_state::name(st), "anagrpid": g}}),
                    );
                }
            }
        }
        for h in &ss.hosts {
            out.push(
                json!({"method": "nvmf_subsystem_add_host", "params": {"nqn": ss.nqn, "host": h}}),
            );
        }
        for n in ss.namespaces.values() {
            let mut ns =
                json!({"nsid": n.nsid, "bdev_name": n.bdev.name(), "uuid": n.uuid.to_string()});
            if let Some(g) = n.nguid {
                ns["nguid"] = json!(hex_upper(&g));
            }
            if let Some(e) = n.eui64 {
                ns["eui64"] = json!(hex_upper(&e));
            }
            if ss.ana_reporting {
                ns["anagrpid"] = json!(n.anagrpid);
            }
            if let Some(f) = n.resv.ptpl_file() {
                ns["ptpl_file"] = json!(f);
            }
            out.push(json!({"method": "nvmf_subsystem_add_ns", "params": {"nqn": ss.nqn, "namespace": ns}}));
        }
    }
    out
}

fn listen_json_saved(l: &ListenAddr) -> Value {
    json!({
        "trtype": l.trtype.as_str(),
        "adrfam": l.adrfam.as_str(),
        "traddr": l.addr.ip().to_string(),
        "trsvcid": l.addr.port().to_string(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_ids_take_digits_only_and_never_slice_a_character() {
        let nguid = format!("a\u{e9}{}", "0".repeat(29));
        assert_eq!(nguid.len(), 32, "as long as 32 digits, in bytes");
        assert!(super::parse_hex::<16>("nguid", &nguid).is_err());
        let ok = super::parse_hex::<8>("eui64", "00-11-22-33-44-55-66-77").unwrap();
        assert_eq!(ok, [0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
    }
}
