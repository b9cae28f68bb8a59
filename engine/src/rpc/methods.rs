//! The engine's own methods, with SPDK's names and parameters: framework and bdev.
//!
//! Parameters SPDK's `save_config` writes but Pollux does not implement (metadata,
//! protection information) are accepted at their "off" values, so an SPDK config loads
//! unchanged, and refused by name otherwise. Unknown parameters are refused by name.

use super::fabric::{FabricParams, attach_fabric, describe_fabric, socket_addr};
use super::{RpcContext, RpcError, RpcServer};
use crate::bdev::iostat::{IoStat, ResetMode};
use crate::bdev::{Bdev, IoKind, malloc, null, uring};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::Arc;

/// Parameters from a request: absent means an empty object.
pub(crate) fn parse<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    let v = params.unwrap_or_else(|| json!({}));
    serde_json::from_value(v)
        .map_err(|e| RpcError::invalid_params(format!("invalid parameters: {e}")))
}

pub(super) fn register(s: &mut RpcServer) {
    s.register("spdk_get_version", |_, _| {
        let v = env!("CARGO_PKG_VERSION");
        let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        Ok(json!({
            "version": format!("Pollux v{v}"),
            "fields": {"major": parts.next(), "minor": parts.next(), "patch": parts.next(), "suffix": ""},
        }))
    });
    s.register("framework_get_reactors", framework_get_reactors);
    s.register("bdev_malloc_create", bdev_malloc_create);
    s.register("bdev_null_create", bdev_null_create);
    s.register("bdev_null_resize", bdev_null_resize);
    s.register("bdev_uring_create", bdev_uring_create);
    for m in [
        "bdev_malloc_delete",
        "bdev_null_delete",
        "bdev_uring_delete",
    ] {
        let product = match m {
            "bdev_malloc_delete" => "Malloc disk",
            "bdev_null_delete" => "Null disk",
            _ => "URING bdev",
        };
        s.register(m, move |ctx, p| bdev_delete(ctx, p, product));
    }
    s.register("bdev_get_bdevs", bdev_get_bdevs);
    s.register("bdev_get_iostat", bdev_get_iostat);
    s.register("bdev_reset_iostat", bdev_reset_iostat);
    s.register("bdev_nvme_attach_controller", bdev_nvme_attach_controller);
    s.register("bdev_nvme_detach_controller", bdev_nvme_detach_controller);
    s.register("bdev_nvme_get_controllers", bdev_nvme_get_controllers);
    s.register(
        "bdev_nvme_set_multipath_policy",
        super::fabric::bdev_nvme_set_multipath_policy,
    );
    s.register("bdev_nvme_reset_controller", bdev_nvme_reset_controller);
    s.register("save_config", |ctx, _| {
        let subsystems: Vec<Value> = SUBSYSTEMS
            .iter()
            .map(|(name, _)| json!({"subsystem": name, "config": subsystem_config(ctx, name)}))
            .collect();
        Ok(json!({ "subsystems": subsystems }))
    });
    // What SPDK's rpc.py save_config builds its file from.
    s.register("framework_get_subsystems", |_, p| {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct P {}
        let _: P = parse(p)?;
        Ok(Value::Array(
            SUBSYSTEMS
                .iter()
                .map(|(name, deps)| json!({"subsystem": name, "depends_on": deps}))
                .collect(),
        ))
    });
    s.register("framework_get_config", |ctx, p| {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct P {
            name: String,
            /// Pollux's configs have no batches: accepted either way.
            #[allow(dead_code)]
            with_batches: Option<bool>,
        }
        let p: P = parse(p)?;
        if !SUBSYSTEMS.iter().any(|(n, _)| *n == p.name) {
            return Err(RpcError::invalid_params(format!(
                "no subsystem {:?}: framework_get_subsystems lists them",
                p.name
            )));
        }
        Ok(Value::Array(subsystem_config(ctx, &p.name)))
    });
}

/// The configurable subsystems, with what each depends on, in load order.
const SUBSYSTEMS: [(&str, &[&str]); 2] = [("bdev", &[]), ("nvmf", &["bdev"])];

/// The entries that recreate subsystem `name`'s state.
fn subsystem_config(ctx: &RpcContext, name: &str) -> Vec<Value> {
    match name {
        "bdev" => ctx
            .engine
            .bdevs()
            .saved_config()
            .into_iter()
            .map(|(method, params)| json!({"method": method, "params": params}))
            .collect(),
        "nvmf" => super::nvmf::saved_config(ctx),
        _ => Vec::new(),
    }
}

fn framework_get_reactors(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {}
    let _: P = parse(p)?;
    let threads = ctx.engine.threads();
    let reactors: Vec<Value> = ctx
        .engine
        .reactor_stats()
        .iter()
        .map(|r| {
            let lw: Vec<Value> = threads
                .iter()
                .filter(|t| t.core() == Some(r.core))
                .map(|t| json!({"name": t.name(), "id": t.id().0}))
                .collect();
            json!({
                "lcore": r.core,
                "busy": r.busy_ns,
                "idle": r.idle_ns,
                "sleep": r.sleep_ns,
                "loops": r.loops,
                "sleeps": r.sleeps,
                "in_interrupt": false,
                "lw_threads": lw,
            })
        })
        .collect();
    Ok(json!({"tick_rate": 1_000_000_000u64, "pid": std::process::id(), "reactors": reactors}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RamParams {
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<uuid::Uuid>,
    #[serde(flatten)]
    unsupported: UnsupportedRaw,
}

/// Fields of SPDK's malloc and null creation (written by SPDK's `save_config`) that
/// Pollux takes only at their "off" values. `#[serde(flatten)]` and
/// `deny_unknown_fields` do not mix, so they are spelled out here.
#[derive(Deserialize, Default)]
#[serde(default)]
struct UnsupportedRaw {
    md_size: Option<u32>,
    md_interleave: Option<bool>,
    dif_type: Option<u32>,
    dif_is_head_of_md: Option<bool>,
    dif_pi_format: Option<u32>,
    physical_block_size: Option<u32>,
    /// Advisory: accepted and ignored.
    #[allow(dead_code)]
    optimal_io_boundary: Option<u32>,
    /// The NUMA node of the memory (malloc): -1 is any.
    numa_id: Option<i32>,
    /// Hints a null bdev reports (SPDK's `bdev_null_create`): advisory, taken at 0.
    preferred_write_granularity: Option<u32>,
    preferred_write_alignment: Option<u32>,
    optimal_write_size: Option<u32>,
    preferred_unmap_granularity: Option<u32>,
    preferred_unmap_alignment: Option<u32>,
}

impl UnsupportedRaw {
    fn checked(&self, block_size: u32, method: &str) -> Result<(), RpcError> {
        let refuse = |f: &str| {
            Err(RpcError::invalid_params(format!(
                "{f} is not supported by Pollux: leave it out or at 0"
            )))
        };
        let hints = [
            (
                "preferred_write_granularity",
                self.preferred_write_granularity,
            ),
            ("preferred_write_alignment", self.preferred_write_alignment),
            ("optimal_write_size", self.optimal_write_size),
            (
                "preferred_unmap_granularity",
                self.preferred_unmap_granularity,
            ),
            ("preferred_unmap_alignment", self.preferred_unmap_alignment),
        ];
        for (f, v) in hints {
            match v {
                Some(_) if method != "bdev_null_create" => {
                    return Err(RpcError::invalid_params(format!(
                        "unknown field `{f}`: {method} does not take it"
                    )));
                }
                Some(v) if v != 0 => return refuse(f),
                _ => {}
            }
        }
        match self.numa_id {
            None | Some(-1) => {}
            Some(_) if method != "bdev_malloc_create" => {
                return Err(RpcError::invalid_params(format!(
                    "unknown field `numa_id`: {method} does not take it"
                )));
            }
            Some(n) => {
                return Err(RpcError::invalid_params(format!(
                    "numa_id {n}: Pollux does not place bdev memory on a chosen NUMA node; leave it out or at -1"
                )));
            }
        }
        if self.md_size.unwrap_or(0) != 0 {
            return refuse("md_size");
        }
        if self.dif_type.unwrap_or(0) != 0
            || self.dif_pi_format.unwrap_or(0) != 0
            || self.dif_is_head_of_md.unwrap_or(false)
            || self.md_interleave.unwrap_or(false)
        {
            return refuse("protection information (dif_*, md_interleave)");
        }
        if !matches!(self.physical_block_size, None | Some(0))
            && self.physical_block_size != Some(block_size)
        {
            return refuse("a physical_block_size other than block_size");
        }
        Ok(())
    }
}

fn next_name(ctx: &RpcContext, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| ctx.engine.bdevs().get(n).is_none())
        .expect("an unused name exists")
}

/// Registers `bdev` with the entry that recreates it: `params` plus its name and UUID.
fn register_bdev(
    ctx: &RpcContext,
    bdev: Arc<Bdev>,
    method: &str,
    mut params: Value,
) -> Result<Value, RpcError> {
    let name = bdev.name().to_owned();
    params["name"] = json!(name);
    params["uuid"] = json!(bdev.uuid().to_string());
    ctx.engine
        .bdevs()
        .register_with_config(bdev, method, params)?;
    tracing::info!(bdev = %name, "bdev created");
    Ok(json!(name))
}

/// `bdev_malloc_create` and `bdev_null_create`: the same parameters, another module.
fn ram_bdev_create(
    ctx: &RpcContext,
    p: Option<Value>,
    method: &str,
    prefix: &str,
    make: impl FnOnce(String, &RamParams) -> Result<Arc<Bdev>, crate::Error>,
) -> Result<Value, RpcError> {
    let p: RamParams = parse(p)?;
    p.unsupported.checked(p.block_size, method)?;
    let name = p.name.clone().unwrap_or_else(|| next_name(ctx, prefix));
    let bdev = make(name, &p)?;
    let saved = json!({"num_blocks": p.num_blocks, "block_size": p.block_size});
    register_bdev(ctx, bdev, method, saved)
}

fn bdev_malloc_create(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    ram_bdev_create(ctx, p, "bdev_malloc_create", "Malloc", |name, p| {
        malloc::create(malloc::MallocOpts {
            name,
            block_size: p.block_size,
            num_blocks: p.num_blocks,
            uuid: p.uuid,
        })
    })
}

fn bdev_null_create(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    ram_bdev_create(ctx, p, "bdev_null_create", "Null", |name, p| {
        null::create(null::NullOpts {
            name,
            block_size: p.block_size,
            num_blocks: p.num_blocks,
            uuid: p.uuid,
            latency: std::time::Duration::ZERO,
        })
    })
}

/// SPDK's `bdev_null_resize`: `new_size` in MiB, never smaller than now.
fn bdev_null_resize(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        new_size: u64,
    }
    let p: P = parse(p)?;
    let b = ctx
        .engine
        .bdevs()
        .get(&p.name)
        .filter(|b| b.product_name() == "Null disk")
        .ok_or_else(|| RpcError::invalid_params(format!("no null bdev {}", p.name)))?;
    let blocks = p
        .new_size
        .checked_mul(1 << 20)
        .map(|bytes| bytes / b.block_size() as u64)
        .ok_or_else(|| RpcError::invalid_params("new_size overflows"))?;
    if blocks < b.num_blocks() {
        return Err(RpcError::invalid_params(format!(
            "new_size {} MiB is smaller than {}'s size now ({} blocks of {} bytes)",
            p.new_size,
            p.name,
            b.num_blocks(),
            b.block_size()
        )));
    }
    ctx.engine.bdevs().resize(&p.name, blocks)?;
    Ok(json!(true))
}

fn bdev_uring_create(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        filename: String,
        block_size: Option<u32>,
        uuid: Option<uuid::Uuid>,
    }
    let p: P = parse(p)?;
    let bdev = uring::create(uring::UringOpts {
        block_size: p.block_size.filter(|&b| b != 0),
        uuid: p.uuid,
        ..uring::UringOpts::new(&p.name, &p.filename)
    })?;
    let saved = json!({"filename": p.filename, "block_size": bdev.block_size()});
    register_bdev(ctx, bdev, "bdev_uring_create", saved)
}

/// `bdev_nvme_attach_controller`: SPDK's parameters for a PCIe controller, and
/// Pollux's driver options.
fn bdev_nvme_attach_controller(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    use crate::bdev::nvme;
    use pollux_nvme::ctrlr::CtrlrOpts;
    use pollux_nvme::qpair::{ResetPolicy, SglMode};
    #[derive(Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        trtype: String,
        traddr: String,
        // SPDK's fields for fabrics controllers, accepted and meaningless for PCIe.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        adrfam: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trsvcid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subnqn: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostnqn: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prchk_reftag: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prchk_guard: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ctrlr_loss_timeout_sec: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reconnect_delay_sec: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fast_io_fail_timeout_sec: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        multipath: Option<String>,
        // rpc.py always sends these three, false unless asked for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hdgst: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ddgst: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        allow_unrecognized_csi: Option<bool>,
        // SPDK's save_config writes these.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fabrics_connect_timeout_us: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        multipath_opts: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_bdevs: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        priority: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostaddr: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostsvcid: Option<String>,
        // Keys for TLS and in-band authentication: refused by name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        psk: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dhchap_key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dhchap_ctrlr_key: Option<String>,
        // Pollux's driver options.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        num_io_queues: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        io_queue_size: Option<u16>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cmb: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cmb_sqs: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cmb_lists: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cmb_data: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sgl: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        io_timeout_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reset_policy: Option<String>,
    }
    let raw = p.clone();
    let p: P = parse(p)?;
    if p.trtype.eq_ignore_ascii_case("tcp") || p.trtype.eq_ignore_ascii_case("rdma") {
        return attach_fabric(
            ctx,
            FabricParams {
                name: &p.name,
                trtype: &p.trtype,
                traddr: &p.traddr,
                adrfam: p.adrfam.as_deref(),
                trsvcid: p.trsvcid.as_deref(),
                subnqn: p.subnqn.as_deref(),
                hostnqn: p.hostnqn.as_deref(),
                hdgst: p.hdgst.unwrap_or(false),
                ddgst: p.ddgst.unwrap_or(false),
                ctrlr_loss_timeout_sec: p.ctrlr_loss_timeout_sec,
                reconnect_delay_sec: p.reconnect_delay_sec,
                fast_io_fail_timeout_sec: p.fast_io_fail_timeout_sec,
                multipath: p.multipath.as_deref(),
                multipath_opts: p.multipath_opts.as_ref(),
                fabrics_connect_timeout_us: p.fabrics_connect_timeout_us,
                refused: [
                    (
                        p.prchk_reftag == Some(true),
                        "prchk_reftag: protection information checks",
                    ),
                    (
                        p.prchk_guard == Some(true),
                        "prchk_guard: protection information checks",
                    ),
                    (p.psk.is_some(), "psk: TLS"),
                    (
                        p.dhchap_key.is_some() || p.dhchap_ctrlr_key.is_some(),
                        "dhchap_key: DH-HMAC-CHAP",
                    ),
                    (
                        p.hostaddr.as_deref().is_some_and(|a| !a.is_empty())
                            || p.hostsvcid.as_deref().is_some_and(|a| !a.is_empty()),
                        "hostaddr/hostsvcid: a chosen source address",
                    ),
                    (
                        p.cmb.is_some()
                            || p.cmb_sqs.is_some()
                            || p.cmb_lists.is_some()
                            || p.cmb_data.is_some()
                            || p.sgl.is_some()
                            || p.reset_policy.is_some()
                            || p.io_timeout_ms.is_some(),
                        "cmb/sgl/reset_policy/io_timeout_ms (PCIe driver options)",
                    ),
                ],
                num_io_queues: p.num_io_queues,
                io_queue_size: p.io_queue_size,
            },
            raw,
        );
    }
    if !p.trtype.eq_ignore_ascii_case("pcie") {
        return Err(RpcError::invalid_params(format!(
            "trtype {}: one of PCIe, TCP, RDMA",
            p.trtype
        )));
    }
    for (on, what) in [
        (
            p.prchk_reftag == Some(true),
            "prchk_reftag: protection information checks are",
        ),
        (
            p.prchk_guard == Some(true),
            "prchk_guard: protection information checks are",
        ),
        (
            p.hdgst == Some(true),
            "hdgst: a header digest (NVMe/TCP) is",
        ),
        (p.ddgst == Some(true), "ddgst: a data digest (NVMe/TCP) is"),
        (p.psk.is_some(), "psk: TLS is"),
        (
            p.dhchap_key.is_some() || p.dhchap_ctrlr_key.is_some(),
            "dhchap_key: DH-HMAC-CHAP is",
        ),
    ] {
        if on {
            return Err(RpcError::invalid_params(format!(
                "{what} not supported for a PCIe controller by Pollux"
            )));
        }
    }
    if let Some(m) = p.multipath.as_deref() {
        if !matches!(m, "disable" | "failover" | "multipath") {
            return Err(RpcError::invalid_params(format!(
                "multipath {m:?}: one of disable, failover, multipath"
            )));
        }
    }
    let mut o = CtrlrOpts::default();
    if let Some(n) = p.num_io_queues {
        if !(1..=65536).contains(&n) {
            return Err(RpcError::invalid_params(format!(
                "num_io_queues {n}: 1 to 65536"
            )));
        }
        o.num_io_queues = n.min(u16::MAX as u32) as u16;
    }
    if let Some(n) = p.io_queue_size {
        o.io_queue_entries = n.clamp(2, 4096);
    }
    let cmb_data = p.cmb_data.unwrap_or(false);
    o.cmb =
        p.cmb.unwrap_or(o.cmb) || p.cmb_sqs == Some(true) || p.cmb_lists == Some(true) || cmb_data;
    o.cmb_sqs = p.cmb_sqs.unwrap_or(false);
    o.cmb_lists = p.cmb_lists.unwrap_or(false);
    o.sgl = match p.sgl.as_deref() {
        None | Some("when_needed") => SglMode::WhenNeeded,
        Some("never") => SglMode::Never,
        Some("always") => SglMode::Always,
        Some(x) => {
            return Err(RpcError::invalid_params(format!(
                "sgl {x:?}: one of never, when_needed, always"
            )));
        }
    };
    if let Some(ms) = p.io_timeout_ms {
        o.io_timeout = (ms > 0).then(|| std::time::Duration::from_millis(ms));
    }
    o.reset_policy = match p.reset_policy.as_deref() {
        None | Some("retry") => ResetPolicy::Retry,
        Some("abort") => ResetPolicy::Abort,
        Some(x) => {
            return Err(RpcError::invalid_params(format!(
                "reset_policy {x:?}: retry or abort"
            )));
        }
    };
    let (_c, bdevs) = nvme::attach(nvme::NvmeAttachOpts {
        name: p.name.clone(),
        traddr: p.traddr.clone(),
        ctrlr: o,
        cmb_data,
    })?;
    let mut names = Vec::new();
    for (i, b) in bdevs.into_iter().enumerate() {
        names.push(b.name().to_owned());
        // The first namespace carries the attach call that recreates them all.
        let r = if i == 0 {
            ctx.engine.bdevs().register_with_config(
                b,
                "bdev_nvme_attach_controller",
                raw.clone().unwrap_or(Value::Null),
            )
        } else {
            ctx.engine.bdevs().register(b)
        };
        r?;
    }
    tracing::info!(ctrlr = %p.name, traddr = %p.traddr, bdevs = ?names, "NVMe controller attached");
    Ok(json!(names))
}

fn bdev_nvme_detach_controller(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        // A path of a fabrics controller (SPDK's trid fields); the whole controller
        // when absent.
        #[serde(default)]
        trtype: Option<String>,
        #[serde(default)]
        traddr: Option<String>,
        #[serde(default)]
        adrfam: Option<String>,
        #[serde(default)]
        trsvcid: Option<String>,
        #[serde(default)]
        subnqn: Option<String>,
        #[serde(default)]
        hostaddr: Option<String>,
        #[serde(default)]
        hostsvcid: Option<String>,
    }
    let p: P = parse(p)?;
    let _ = (&p.trtype, &p.adrfam, &p.subnqn, &p.hostaddr, &p.hostsvcid);
    if let Some(c) = crate::bdev::fabric::FabricCtrlr::get(&p.name) {
        let addr = match &p.traddr {
            Some(a) => Some(socket_addr(a, p.trsvcid.as_deref())?),
            None => None,
        };
        let first = c.bdev_names().first().cloned().unwrap_or_default();
        let names = crate::bdev::fabric::detach(&p.name, addr)?;
        if let (Some(a), true) = (addr, names.is_empty()) {
            // That path's saved attach goes with it.
            ctx.engine.bdevs().retain_configs(|n, m, v| {
                !(n == first
                    && m == "bdev_nvme_attach_controller"
                    && v.get("traddr").and_then(Value::as_str) == Some(&a.ip().to_string())
                    && v.get("trsvcid").and_then(Value::as_str).unwrap_or("4420")
                        == a.port().to_string())
            });
            tracing::info!(ctrlr = %p.name, path = %a, "path detached");
            return Ok(json!(true));
        }
        for n in names {
            ctx.engine.bdevs().remove(&n);
        }
        tracing::info!(ctrlr = %p.name, "NVMe-oF controller detached");
        return Ok(json!(true));
    }
    let names = crate::bdev::nvme::detach(&p.name)?;
    for n in names {
        ctx.engine.bdevs().remove(&n);
    }
    tracing::info!(ctrlr = %p.name, "NVMe controller detached");
    Ok(json!(true))
}

fn bdev_nvme_reset_controller(_ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
    }
    let p: P = parse(p)?;
    if let Some(c) = crate::bdev::fabric::FabricCtrlr::get(&p.name) {
        // Every connected path disconnects and reconnects; its I/O moves meanwhile.
        c.reset();
        return Ok(json!(true));
    }
    let c = crate::bdev::nvme::NvmeController::get(&p.name)
        .ok_or_else(|| RpcError::invalid_params(format!("no NVMe controller named {}", p.name)))?;
    c.ctrlr()
        .reset()
        .map_err(|e| RpcError::failed(e.to_string()))?;
    Ok(json!(true))
}

fn bdev_nvme_get_controllers(_ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    use crate::bdev::nvme::NvmeController;
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct P {
        #[serde(default)]
        name: Option<String>,
    }
    let p: P = if p.is_some() { parse(p)? } else { P::default() };
    let fabric = match &p.name {
        Some(n) => crate::bdev::fabric::FabricCtrlr::get(n)
            .into_iter()
            .collect(),
        None => crate::bdev::fabric::FabricCtrlr::list(),
    };
    let list = match &p.name {
        Some(_) if !fabric.is_empty() => Vec::new(),
        Some(n) => vec![
            NvmeController::get(n)
                .ok_or_else(|| RpcError::invalid_params(format!("no NVMe controller named {n}")))?,
        ],
        None => NvmeController::list(),
    };
    let fabric: Vec<Value> = fabric.iter().map(|c| describe_fabric(c)).collect();
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Value::Array(
        list.iter()
            .map(|c| {
                let k = c.counters();
                let d = c.ctrlr();
                let s = d.stats();
                let cmb = d.cmb().map(|m| {
                    json!({
                        "size": m.size(),
                        "used": m.used(),
                        "controller_base": format!("{:#x}", m.controller_base().get()),
                        "sqs": m.supports_sqs(),
                        "lists": m.supports_lists(),
                        "data": m.supports_data(),
                    })
                });
                json!({
                    "name": c.name(),
                    "ctrlrs": [{
                        "state": "enabled",
                        "trid": {"trtype": "PCIe", "traddr": c.traddr()},
                        "cntlid": d.identify().cntlid.get(),
                        "model_number": d.model(),
                        "serial_number": d.serial(),
                        "firmware_revision": d.firmware(),
                        "max_transfer_bytes": d.max_transfer(),
                        "io_queues": d.io_queues(),
                        "sgl": d.sgl_supported(),
                        "cmb": cmb,
                        "cmb_data_pool": c.cmb_iobuf().map(|p| json!(p.pool_levels())),
                        "bdevs": c.bdev_names(),
                        "stats": {
                            "commands_submitted": ld(&k.submitted),
                            "commands_completed": ld(&k.completed),
                            "split_ios": ld(&k.split),
                            "prp_lists": ld(&k.prp_lists),
                            "sgls": ld(&k.sgls),
                            "retried_after_reset": ld(&k.retried),
                            "cmb_data_bytes": ld(&k.cmb_data_bytes),
                            "host_data_bytes": ld(&k.host_data_bytes),
                            "qpairs_with_sq_in_cmb": ld(&k.sqs_in_cmb),
                            "qpairs_with_lists_in_cmb": ld(&k.lists_in_cmb),
                            "resets": s.resets,
                            "aborts": s.aborts,
                            "async_events": s.events,
                        },
                    }],
                })
            })
            .chain(fabric)
            .collect(),
    ))
}

fn bdev_delete(ctx: &RpcContext, p: Option<Value>, product: &str) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
    }
    let p: P = parse(p)?;
    match ctx.engine.bdevs().get(&p.name) {
        Some(b) if b.product_name() == product => {}
        Some(b) => {
            return Err(RpcError::invalid_params(format!(
                "bdev {} is a {}, not a {product}",
                p.name,
                b.product_name()
            )));
        }
        None => {
            return Err(RpcError::invalid_params(format!(
                "no bdev named {}",
                p.name
            )));
        }
    }
    ctx.engine.bdevs().remove(&p.name);
    tracing::info!(bdev = %p.name, "bdev deleted");
    Ok(json!(true))
}

/// One bdev as `bdev_get_bdevs` describes it (SPDK's fields that apply).
pub(crate) fn describe_bdev(b: &Bdev) -> Value {
    use crate::bdev::delay::DelayLatencies;
    use crate::bdev::error::ErrorInjector;
    let io = |k| b.supports(k);
    let driver = if let Some(d) = b.module::<DelayLatencies>() {
        json!({"delay": super::vbdev::delay_saved(b, d)})
    } else if let Some(e) = b.module::<ErrorInjector>() {
        json!({"error_disk": {"base_bdev": e.base().name()}})
    } else {
        json!({})
    };
    json!({
        "name": b.name(),
        "aliases": [],
        "product_name": b.product_name(),
        "block_size": b.block_size(),
        "num_blocks": b.num_blocks(),
        "uuid": b.uuid().to_string(),
        "preferred_write_alignment": 0,
        "preferred_write_granularity": 0,
        "optimal_write_size": 0,
        "preferred_unmap_alignment": 0,
        "preferred_unmap_granularity": 0,
        "assigned_rate_limits": {
            "rw_ios_per_sec": 0,
            "rw_mbytes_per_sec": 0,
            "r_mbytes_per_sec": 0,
            "w_mbytes_per_sec": 0,
        },
        "claimed": false,
        "zoned": false,
        "supported_io_types": {
            "read": io(IoKind::Read),
            "write": io(IoKind::Write),
            "unmap": io(IoKind::Unmap),
            "write_zeroes": io(IoKind::WriteZeroes),
            "flush": io(IoKind::Flush),
            "reset": false,
            "compare": false,
            "compare_and_write": false,
            "abort": false,
            "nvme_admin": false,
            "nvme_io": false,
            "nvme_io_md": false,
            "zcopy": false,
            "get_zone_info": false,
            "zone_management": false,
            "zone_append": false,
            "seek_hole": false,
            "seek_data": false,
            "copy": false,
            "nvme_iov_md": false,
            "nvme_nssr": false,
            "write_uncorrectable": false,
        },
        "driver_specific": driver,
    })
}

fn bdev_get_bdevs(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: Option<String>,
        /// Milliseconds to wait for bdev `name` to appear (SPDK's `-t`).
        timeout: Option<u64>,
    }
    let p: P = parse(p)?;
    let list: Vec<Value> = match p.name {
        Some(n) => {
            let deadline = std::time::Instant::now()
                + std::time::Duration::from_millis(p.timeout.unwrap_or(0).min(600_000));
            let b = loop {
                match ctx.engine.bdevs().get(&n) {
                    Some(b) => break b,
                    None if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    None => return Err(RpcError::invalid_params(format!("no bdev named {n}"))),
                }
            };
            vec![describe_bdev(&b)]
        }
        None => ctx
            .engine
            .bdevs()
            .list()
            .iter()
            .map(|b| describe_bdev(b))
            .collect(),
    };
    Ok(Value::Array(list))
}

/// `reset_mode` / `mode` of the iostat methods: SPDK's names; `none` is no reset.
fn reset_mode(m: Option<&str>, default: Option<ResetMode>) -> Result<Option<ResetMode>, RpcError> {
    Ok(match m {
        None => default,
        Some("all") => Some(ResetMode::All),
        Some("maxmin") => Some(ResetMode::MaxMin),
        Some("error") => Some(ResetMode::Error),
        Some("none") => None,
        Some(x) => {
            return Err(RpcError::invalid_params(format!(
                "mode {x:?}: one of all, maxmin, error, none"
            )));
        }
    })
}

/// The bdevs `names` lists (every bdev when `None`), each of which must exist.
fn named_bdevs(ctx: &RpcContext, names: Option<Vec<String>>) -> Result<Vec<Arc<Bdev>>, RpcError> {
    match names {
        None => Ok(ctx.engine.bdevs().list()),
        Some(names) => names
            .iter()
            .map(|n| {
                ctx.engine
                    .bdevs()
                    .get(n)
                    .ok_or_else(|| RpcError::invalid_params(format!("no bdev named {n}")))
            })
            .collect(),
    }
}

/// `st` as SPDK writes it, after the field `key`: `value` (the bdev's name, or the
/// channel's thread).
fn iostat_json(key: &str, value: Value, st: &IoStat) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(key.into(), value);
    st.write_json(&mut m);
    Value::Object(m)
}

/// `bdev_get_iostat`: SPDK's shape; counted per channel (see [`crate::bdev::iostat`]).
fn bdev_get_iostat(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        /// SPDK before v24.01 named one bdev so.
        name: Option<String>,
        names: Option<Vec<String>>,
        #[serde(default)]
        per_channel: bool,
        reset_mode: Option<String>,
    }
    let p: P = parse(p)?;
    let reset = reset_mode(p.reset_mode.as_deref(), None)?;
    let names = match (p.name, p.names) {
        (Some(n), None) => Some(vec![n]),
        (None, n) => n,
        (Some(_), Some(_)) => {
            return Err(RpcError::invalid_params("give name or names, not both"));
        }
    };
    let bdevs = named_bdevs(ctx, names)?;
    let rate = crate::bdev::iostat::tick_rate();
    let now = crate::bdev::iostat::ticks();
    let out = if p.per_channel {
        let [b] = bdevs.as_slice() else {
            return Err(RpcError::invalid_params(
                "per_channel needs exactly one bdev (names with one name)",
            ));
        };
        let channels: Vec<Value> = b
            .stats()
            .per_channel()
            .iter()
            .map(|(t, st)| iostat_json("thread_id", json!(t.id().0), st))
            .collect();
        json!({"tick_rate": rate, "ticks": now, "name": b.name(), "channels": channels})
    } else {
        let list: Vec<Value> = bdevs
            .iter()
            .map(|b| iostat_json("name", json!(b.name()), &b.stats().total()))
            .collect();
        json!({"tick_rate": rate, "ticks": now, "bdevs": list})
    };
    if let Some(m) = reset {
        for b in &bdevs {
            b.stats().reset(m);
        }
    }
    Ok(out)
}

fn bdev_reset_iostat(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: Option<String>,
        mode: Option<String>,
    }
    let p: P = parse(p)?;
    let mode = reset_mode(p.mode.as_deref(), Some(ResetMode::All))?;
    let bdevs = named_bdevs(ctx, p.name.map(|n| vec![n]))?;
    if let Some(m) = mode {
        for b in &bdevs {
            b.stats().reset(m);
        }
    }
    Ok(json!(true))
}
