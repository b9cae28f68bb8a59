//! RPCs of NVMe-oF controllers as bdevs: `bdev_nvme_attach_controller` with `trtype`
//! TCP or RDMA, `bdev_nvme_set_multipath_policy`, the defaults `bdev_nvme_set_options`
//! sets for them, and their `bdev_nvme_get_controllers` entries.

use super::methods::parse;
use super::{RpcContext, RpcError};
use crate::bdev::fabric::{
    self, FabricAttachOpts, FabricCtrlr, Multipath, Policy, Resiliency, TimeoutAction, Timeouts,
};
use pollux_nvme::fabrics::FabricOptions;
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

/// What `bdev_nvme_set_options` sets for controllers attached after it (SPDK's
/// defaults: no reconnect, keep-alive 10 s, no timeouts).
#[derive(Clone, Copy, Debug)]
struct Defaults {
    resiliency: Resiliency,
    timeouts: Timeouts,
    keep_alive_ms: u32,
}

fn defaults() -> &'static Mutex<Defaults> {
    static D: Mutex<Defaults> = Mutex::new(Defaults {
        resiliency: Resiliency {
            ctrlr_loss_timeout_sec: 0,
            reconnect_delay_sec: 0,
            fast_io_fail_timeout_sec: 0,
        },
        timeouts: Timeouts {
            io: None,
            admin: None,
            action: TimeoutAction::None,
        },
        keep_alive_ms: 10_000,
    });
    &D
}

/// Applies the keys of `bdev_nvme_set_options` that fabrics controllers use (the
/// others are checked by the option table).
pub(super) fn set_options(m: &serde_json::Map<String, Value>) -> Result<(), String> {
    let mut d = *defaults().lock().unwrap();
    let int = |k: &str| -> Result<Option<i64>, String> {
        match m.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("{k} must be an integer")),
        }
    };
    let uint = |k: &str| -> Result<Option<u64>, String> {
        match int(k)? {
            Some(v) if v < 0 => Err(format!("{k} must not be negative")),
            v => Ok(v.map(|v| v as u64)),
        }
    };
    if let Some(v) = int("ctrlr_loss_timeout_sec")? {
        d.resiliency.ctrlr_loss_timeout_sec = v;
    }
    if let Some(v) = uint("reconnect_delay_sec")? {
        d.resiliency.reconnect_delay_sec = v;
    }
    if let Some(v) = uint("fast_io_fail_timeout_sec")? {
        d.resiliency.fast_io_fail_timeout_sec = v;
    }
    d.resiliency.check()?;
    if let Some(v) = uint("timeout_us")? {
        d.timeouts.io = (v > 0).then(|| Duration::from_micros(v));
    }
    if let Some(v) = uint("timeout_admin_us")? {
        d.timeouts.admin = (v > 0).then(|| Duration::from_micros(v));
    }
    if d.timeouts.io.is_none() && d.timeouts.admin.is_some() {
        return Err("timeout_admin_us needs timeout_us too (as SPDK)".into());
    }
    if let Some(v) = m.get("action_on_timeout") {
        d.timeouts.action = match v.as_str() {
            Some("none") => TimeoutAction::None,
            Some("abort") => TimeoutAction::Abort,
            Some("reset") => TimeoutAction::Reset,
            _ => return Err("action_on_timeout: one of none, abort, reset".into()),
        };
    }
    if let Some(v) = uint("keep_alive_timeout_ms")? {
        d.keep_alive_ms = v.min(u32::MAX as u64) as u32;
    }
    *defaults().lock().unwrap() = d;
    Ok(())
}

/// `traddr` (an IP address: a name would block the RPC thread in a resolver) and
/// `trsvcid` as a socket address.
pub(super) fn socket_addr(traddr: &str, trsvcid: Option<&str>) -> Result<SocketAddr, RpcError> {
    let port: u16 = trsvcid
        .unwrap_or("4420")
        .parse()
        .map_err(|_| RpcError::invalid_params(format!("trsvcid {trsvcid:?}: a port number")))?;
    let ip: std::net::IpAddr = traddr.parse().map_err(|_| {
        RpcError::invalid_params(format!("traddr {traddr:?}: an IPv4 or IPv6 address"))
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// `bdev_nvme_attach_controller`'s parameters that a fabrics controller uses.
pub(super) struct FabricParams<'a> {
    pub name: &'a str,
    pub trtype: &'a str,
    pub traddr: &'a str,
    pub adrfam: Option<&'a str>,
    pub trsvcid: Option<&'a str>,
    pub subnqn: Option<&'a str>,
    pub hostnqn: Option<&'a str>,
    pub hdgst: bool,
    pub ddgst: bool,
    pub ctrlr_loss_timeout_sec: Option<i64>,
    pub reconnect_delay_sec: Option<u64>,
    pub fast_io_fail_timeout_sec: Option<u64>,
    pub multipath: Option<&'a str>,
    pub multipath_opts: Option<&'a Value>,
    pub fabrics_connect_timeout_us: Option<u64>,
    /// Options Pollux refuses for a fabrics controller: (asked for, what).
    pub refused: [(bool, &'static str); 6],
    pub num_io_queues: Option<u32>,
    pub io_queue_size: Option<u16>,
}

fn policy_of(
    policy: &str,
    selector: Option<&str>,
    min_io: Option<u64>,
) -> Result<Policy, RpcError> {
    match (policy, selector) {
        ("active_passive", _) => Ok(Policy::ActivePassive),
        ("active_active", None | Some("round_robin")) => {
            let n = min_io.unwrap_or(1);
            if n == 0 {
                return Err(RpcError::invalid_params("rr_min_io must be non-zero"));
            }
            Ok(Policy::ActiveActive {
                rr_min_io: n.min(u32::MAX as u64) as u32,
            })
        }
        ("active_active", Some("queue_depth")) => Ok(Policy::QueueDepth),
        (p, s) => Err(RpcError::invalid_params(format!(
            "policy {p:?} selector {s:?}: policy active_passive or active_active, selector round_robin or queue_depth"
        ))),
    }
}

pub(super) fn attach_fabric(
    ctx: &RpcContext,
    p: FabricParams<'_>,
    raw: Option<Value>,
) -> Result<Value, RpcError> {
    for (on, what) in p.refused {
        if on {
            return Err(RpcError::invalid_params(format!(
                "{what}: not supported for an NVMe-oF controller by Pollux"
            )));
        }
    }
    let subnqn = p
        .subnqn
        .ok_or_else(|| RpcError::invalid_params("subnqn is required for trtype TCP and RDMA"))?;
    if let Some(f) = p.adrfam {
        if !matches!(f.to_ascii_lowercase().as_str(), "ipv4" | "ipv6") {
            return Err(RpcError::invalid_params(format!(
                "adrfam {f}: IPv4 or IPv6"
            )));
        }
    }
    let addr = socket_addr(p.traddr, p.trsvcid)?;
    let d = *defaults().lock().unwrap();
    let mut target = if p.trtype.eq_ignore_ascii_case("rdma") {
        FabricOptions::rdma(addr, subnqn)
    } else {
        FabricOptions::new(addr, subnqn)
    };
    if let Some(h) = p.hostnqn {
        target.hostnqn = h.to_owned();
    }
    target.hdgst = p.hdgst;
    target.ddgst = p.ddgst;
    target.kato_ms = d.keep_alive_ms;
    if let Some(us) = p.fabrics_connect_timeout_us.filter(|&us| us > 0) {
        target.timeout = Duration::from_micros(us);
    }
    if let Some(n) = p.num_io_queues {
        target.io_queues = n.clamp(1, u16::MAX as u32) as u16;
    }
    if let Some(n) = p.io_queue_size {
        target.io_queue_size = n.clamp(2, 4096);
    }
    let multipath = match p.multipath {
        None | Some("multipath") => Multipath::Multipath,
        Some("failover") => Multipath::Failover,
        Some("disable") => Multipath::Disable,
        Some(m) => {
            return Err(RpcError::invalid_params(format!(
                "multipath {m:?}: one of disable, failover, multipath"
            )));
        }
    };
    let policy = match p.multipath_opts {
        None => None,
        Some(o) => {
            let s = |k: &str| o.get(k).and_then(Value::as_str);
            match s("policy") {
                None => None,
                Some(pol) => Some(policy_of(
                    pol,
                    s("selector"),
                    o.get("min_io").and_then(Value::as_u64),
                )?),
            }
        }
    };
    let resiliency = Resiliency {
        ctrlr_loss_timeout_sec: p
            .ctrlr_loss_timeout_sec
            .unwrap_or(d.resiliency.ctrlr_loss_timeout_sec),
        reconnect_delay_sec: p
            .reconnect_delay_sec
            .unwrap_or(d.resiliency.reconnect_delay_sec),
        fast_io_fail_timeout_sec: p
            .fast_io_fail_timeout_sec
            .unwrap_or(d.resiliency.fast_io_fail_timeout_sec),
    };
    let (c, bdevs) = fabric::attach(FabricAttachOpts {
        name: p.name.to_owned(),
        target,
        multipath,
        resiliency,
        timeouts: d.timeouts,
        engine: Some(ctx.engine.clone()),
    })?;
    if let Some(pol) = policy {
        c.set_policy(pol);
    }
    let raw = raw.unwrap_or(Value::Null);
    if bdevs.is_empty() {
        // Another path: saved after the first, under the first bdev.
        if let Some(first) = c.bdev_names().first() {
            ctx.engine
                .bdevs()
                .add_config(first, "bdev_nvme_attach_controller", raw);
        }
        return Ok(json!(c.bdev_names()));
    }
    let mut names = Vec::new();
    for (i, b) in bdevs.into_iter().enumerate() {
        names.push(b.name().to_owned());
        let r = if i == 0 {
            ctx.engine
                .bdevs()
                .register_with_config(b, "bdev_nvme_attach_controller", raw.clone())
        } else {
            ctx.engine.bdevs().register(b)
        };
        if let Err(e) = r {
            let _ = fabric::detach(p.name, None);
            for n in &names {
                ctx.engine.bdevs().remove(n);
            }
            return Err(e.into());
        }
    }
    tracing::info!(ctrlr = %p.name, %addr, subnqn, bdevs = ?names, "NVMe-oF controller attached");
    Ok(json!(names))
}

/// `bdev_nvme_set_multipath_policy`: for the controller of bdev `name`.
pub(super) fn bdev_nvme_set_multipath_policy(
    _ctx: &RpcContext,
    p: Option<Value>,
) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        policy: String,
        #[serde(default)]
        selector: Option<String>,
        #[serde(default)]
        rr_min_io: Option<u64>,
    }
    let p: P = parse(Some(p.unwrap_or(Value::Null)))?;
    let c = FabricCtrlr::of_bdev(&p.name)
        .ok_or_else(|| RpcError::invalid_params(format!("no NVMe-oF bdev named {}", p.name)))?;
    let pol = policy_of(&p.policy, p.selector.as_deref(), p.rr_min_io)?;
    c.set_policy(pol);
    tracing::info!(bdev = %p.name, policy = ?pol, "multipath policy set");
    Ok(json!(true))
}

fn trid(c: &FabricCtrlr, t: &FabricOptions) -> Value {
    json!({
        "trtype": match t.transport {
            pollux_nvme::fabrics::Transport::Rdma => "RDMA",
            _ => "TCP",
        },
        "adrfam": if t.addr.is_ipv4() { "IPv4" } else { "IPv6" },
        "traddr": t.addr.ip().to_string(),
        "trsvcid": t.addr.port().to_string(),
        "subnqn": c.subnqn(),
    })
}

/// A fabrics controller as `bdev_nvme_get_controllers` shows it: SPDK's shape (one
/// `ctrlrs` entry per path; a failover controller's standbys as `alternate_trids`),
/// with Pollux's counters.
pub(super) fn describe_fabric(c: &FabricCtrlr) -> Value {
    let (retried, failed) = c.failover_counts();
    let (model, serial) = c.model_serial();
    let entry = |p: &fabric::FabricPath| {
        let (timeouts, aborts) = p.timeouts();
        json!({
            "state": p.state().name(),
            "trid": trid(c, p.target()),
            "cntlid": p.cntlid(),
            "host": {"nqn": p.target().hostnqn, "addr": "", "svcid": "", "no_shn_notification": false},
            "model_number": model,
            "serial_number": serial,
            "bdevs": c.bdev_names(),
            // The namespaces' ANA states through this path (empty: the target does
            // not report ANA).
            "ana_states": p.ana_states().iter().map(|(nsid, st)| {
                json!({"nsid": nsid, "ana_state": pollux_nvme::spec::log::ana_state::name(*st)})
            }).collect::<Vec<_>>(),
            "stats": {
                "reconnects": p.reconnects(),
                "path_losses": p.losses(),
                "timeouts": timeouts,
                "aborts": aborts,
            },
        })
    };
    let paths = c.paths();
    let ctrlrs: Vec<Value> = match c.multipath() {
        fabric::Multipath::Failover if !paths.is_empty() => {
            let mut e = entry(&paths[0]);
            if paths.len() > 1 {
                e["alternate_trids"] = paths[1..].iter().map(|p| trid(c, p.target())).collect();
                e["alternate_states"] =
                    paths[1..].iter().map(|p| json!(p.state().name())).collect();
            }
            vec![e]
        }
        _ => paths.iter().map(|p| entry(p)).collect(),
    };
    let policy = match c.policy() {
        Policy::ActivePassive => json!({"policy": "active_passive"}),
        Policy::QueueDepth => {
            json!({"policy": "active_active", "selector": "queue_depth"})
        }
        Policy::ActiveActive { rr_min_io } => {
            json!({"policy": "active_active", "selector": "round_robin", "rr_min_io": rr_min_io})
        }
    };
    let r = c.resiliency();
    json!({
        "name": c.name(),
        "ctrlrs": ctrlrs,
        "multipath_policy": policy,
        "ctrlr_loss_timeout_sec": r.ctrlr_loss_timeout_sec,
        "reconnect_delay_sec": r.reconnect_delay_sec,
        "fast_io_fail_timeout_sec": r.fast_io_fail_timeout_sec,
        "io_retried_on_path_failure": retried,
        "io_failed_without_path": failed,
    })
}
