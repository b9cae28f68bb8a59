//! The fault-injection bdevs' methods, with SPDK's names and parameters:
//! `bdev_error_create`, `bdev_error_delete`, `bdev_error_inject_error`,
//! `bdev_error_resume_pending`, `bdev_delay_create`, `bdev_delay_delete`,
//! `bdev_delay_update_latency`.

use super::methods::parse;
use super::{RpcContext, RpcError, RpcServer};
use crate::bdev::delay::{self, DelayLatencies, LatencyType};
use crate::bdev::error::{self, ErrorInjector, ErrorIoType, ErrorType};
use crate::bdev::{Bdev, BdevRegistry};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

pub(super) fn register(s: &mut RpcServer) {
    s.register("bdev_error_create", bdev_error_create);
    s.register("bdev_error_delete", |ctx, p| {
        let name = delete_name(p)?;
        if forget_waiting(ctx, &name) {
            return Ok(json!(true));
        }
        let b = module_bdev::<ErrorInjector>(ctx, &name, "an error bdev")?;
        ctx.engine.bdevs().remove(&name);
        // Held I/Os complete as aborted, as SPDK's reset of an error bdev does.
        b.module::<ErrorInjector>()
            .expect("checked")
            .abort_pending();
        tracing::info!(bdev = %name, "bdev deleted");
        Ok(json!(true))
    });
    s.register("bdev_error_inject_error", bdev_error_inject_error);
    s.register("bdev_error_resume_pending", |ctx, p| {
        let name = delete_name(p)?;
        let b = module_bdev::<ErrorInjector>(ctx, &name, "an error bdev")?;
        b.module::<ErrorInjector>()
            .expect("checked")
            .resume_pending();
        Ok(json!(true))
    });
    s.register("bdev_delay_create", bdev_delay_create);
    s.register("bdev_delay_delete", |ctx, p| {
        let name = delete_name(p)?;
        if forget_waiting(ctx, &name) {
            return Ok(json!(true));
        }
        module_bdev::<DelayLatencies>(ctx, &name, "a delay bdev")?;
        ctx.engine.bdevs().remove(&name);
        tracing::info!(bdev = %name, "bdev deleted");
        Ok(json!(true))
    });
    s.register("bdev_delay_update_latency", bdev_delay_update_latency);
}

fn delete_name(p: Option<Value>) -> Result<String, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
    }
    Ok(parse::<P>(p)?.name)
}

/// Bdev `name`, which must be of module `T`.
fn module_bdev<T: 'static>(
    ctx: &RpcContext,
    name: &str,
    what: &str,
) -> Result<Arc<Bdev>, RpcError> {
    let b = ctx
        .engine
        .bdevs()
        .get(name)
        .ok_or_else(|| RpcError::invalid_params(format!("no bdev named {name}")))?;
    if b.module::<T>().is_none() {
        return Err(RpcError::invalid_params(format!(
            "bdev {name} is a {}, not {what}",
            b.product_name()
        )));
    }
    Ok(b)
}

/// Drops the creation of bdev `name` if it still waits for its base.
fn forget_waiting(ctx: &RpcContext, name: &str) -> bool {
    let reg = ctx.engine.bdevs();
    if !reg.is_waiting(name) {
        return false;
    }
    reg.remove(name);
    tracing::info!(bdev = %name, "waiting bdev forgotten");
    true
}

/// Registers stacked bdev `name` on `base`, or has it wait for `base` (logged).
fn stacked(
    reg: &BdevRegistry,
    base: &str,
    name: &str,
    method: &str,
    params: Value,
    make: crate::bdev::MakeStacked,
) -> Result<(), RpcError> {
    match reg.register_stacked(base, name, method, params, make)? {
        Some(_) => tracing::info!(bdev = %name, base = %base, "{method}: bdev created"),
        None => tracing::info!(bdev = %name, base = %base,
            "{method}: no bdev {base} yet; {name} is created when it appears"),
    }
    Ok(())
}

fn bdev_error_create(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        base_name: String,
        uuid: Option<uuid::Uuid>,
    }
    let p: P = parse(p)?;
    // The UUID is fixed now, so that a saved config recreates the same one.
    let uuid = p.uuid.unwrap_or_else(uuid::Uuid::new_v4);
    let saved = json!({"base_name": p.base_name, "uuid": uuid.to_string()});
    stacked(
        ctx.engine.bdevs(),
        &p.base_name,
        &error::name_on(&p.base_name),
        "bdev_error_create",
        saved,
        Box::new(move |base| error::create(base, Some(uuid))),
    )?;
    Ok(json!(true))
}

fn bdev_error_inject_error(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        io_type: String,
        error_type: String,
        #[serde(default = "one")]
        num: u32,
        #[serde(default)]
        queue_depth: u64,
        #[serde(default)]
        corrupt_offset: u64,
        #[serde(default)]
        corrupt_value: u8,
        #[serde(default)]
        nvme_sct: u32,
        #[serde(default)]
        nvme_sc: u32,
    }
    fn one() -> u32 {
        1
    }
    let p: P = parse(p)?;
    let b = module_bdev::<ErrorInjector>(ctx, &p.name, "an error bdev")?;
    let io_type = match p.io_type.as_str() {
        "read" => ErrorIoType::Read,
        "write" => ErrorIoType::Write,
        "unmap" => ErrorIoType::Unmap,
        "flush" => ErrorIoType::Flush,
        "all" => ErrorIoType::All,
        "clear" => ErrorIoType::Clear,
        t => {
            return Err(RpcError::invalid_params(format!(
                "io_type {t:?}: one of read, write, unmap, flush, all, clear"
            )));
        }
    };
    let nvme = p.nvme_sct != 0 || p.nvme_sc != 0;
    let error = match p.error_type.as_str() {
        "failure" => ErrorType::Failure,
        "pending" => ErrorType::Pending,
        "nomem" => ErrorType::NoMemory,
        "corrupt_data" => {
            if p.corrupt_value == 0 {
                return Err(RpcError::invalid_params(
                    "corrupt_data needs a corrupt_value other than 0",
                ));
            }
            ErrorType::CorruptData {
                offset: p.corrupt_offset,
                value: p.corrupt_value,
            }
        }
        "nvme_failure" => {
            if !nvme {
                return Err(RpcError::invalid_params(
                    "nvme_failure needs nvme_sct or nvme_sc other than 0",
                ));
            }
            if p.nvme_sct > 7 || p.nvme_sc > 0xff {
                return Err(RpcError::invalid_params(format!(
                    "nvme_sct {} / nvme_sc {}: SCT is 0 to 7 and SC 0 to 255",
                    p.nvme_sct, p.nvme_sc
                )));
            }
            ErrorType::NvmeFailure {
                sct: p.nvme_sct as u8,
                sc: p.nvme_sc as u8,
            }
        }
        t => {
            return Err(RpcError::invalid_params(format!(
                "error_type {t:?}: one of failure, nvme_failure, pending, corrupt_data, nomem"
            )));
        }
    };
    if nvme && !matches!(error, ErrorType::NvmeFailure { .. }) {
        return Err(RpcError::invalid_params(format!(
            "nvme_sct and nvme_sc are for error_type nvme_failure, not {}",
            p.error_type
        )));
    }
    let inj = b.module::<ErrorInjector>().expect("checked");
    inj.inject(io_type, error, p.num, p.queue_depth);
    tracing::info!(bdev = %p.name, io_type = %p.io_type, error_type = %p.error_type,
        num = p.num, queue_depth = p.queue_depth, "error injected");
    Ok(json!(true))
}

fn us(v: u64) -> Duration {
    Duration::from_micros(v)
}

/// A delay bdev as SPDK writes it: its creation parameters, with the latencies now.
pub(super) fn delay_saved(b: &Bdev, lat: &DelayLatencies) -> Value {
    let us = |t| lat.get(t).as_micros() as u64;
    json!({
        "name": b.name(),
        "base_bdev_name": lat.base().name(),
        "uuid": b.uuid().to_string(),
        "avg_read_latency": us(LatencyType::AvgRead),
        "p99_read_latency": us(LatencyType::P99Read),
        "avg_write_latency": us(LatencyType::AvgWrite),
        "p99_write_latency": us(LatencyType::P99Write),
    })
}

fn bdev_delay_create(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        name: String,
        base_bdev_name: String,
        uuid: Option<uuid::Uuid>,
        avg_read_latency: u64,
        p99_read_latency: u64,
        avg_write_latency: u64,
        p99_write_latency: u64,
    }
    let p: P = parse(p)?;
    let opts = delay::DelayOpts {
        name: p.name.clone(),
        uuid: Some(p.uuid.unwrap_or_else(uuid::Uuid::new_v4)),
        avg_read: us(p.avg_read_latency),
        p99_read: us(p.p99_read_latency),
        avg_write: us(p.avg_write_latency),
        p99_write: us(p.p99_write_latency),
    };
    opts.check()?;
    let saved = json!({
        "name": p.name,
        "base_bdev_name": p.base_bdev_name,
        "uuid": opts.uuid.expect("set").to_string(),
        "avg_read_latency": p.avg_read_latency,
        "p99_read_latency": p.p99_read_latency,
        "avg_write_latency": p.avg_write_latency,
        "p99_write_latency": p.p99_write_latency,
    });
    stacked(
        ctx.engine.bdevs(),
        &p.base_bdev_name,
        &p.name,
        "bdev_delay_create",
        saved,
        Box::new(move |base| delay::create(base, opts)),
    )?;
    Ok(json!(p.name))
}

fn bdev_delay_update_latency(ctx: &RpcContext, p: Option<Value>) -> Result<Value, RpcError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct P {
        delay_bdev_name: String,
        latency_type: String,
        latency_us: u64,
    }
    let p: P = parse(p)?;
    let b = module_bdev::<DelayLatencies>(ctx, &p.delay_bdev_name, "a delay bdev")?;
    let t = LatencyType::from_name(&p.latency_type).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "latency_type {:?}: one of avg_read, p99_read, avg_write, p99_write",
            p.latency_type
        ))
    })?;
    let lat: &DelayLatencies = b.module().expect("checked");
    lat.set(t, us(p.latency_us));
    ctx.engine
        .bdevs()
        .update_config(b.name(), delay_saved(&b, lat));
    tracing::info!(bdev = %p.delay_bdev_name, latency_type = %p.latency_type,
        latency_us = p.latency_us, "delay latency updated");
    Ok(json!(true))
}
