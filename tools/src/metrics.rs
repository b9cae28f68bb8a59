//! polluxd's metrics endpoint (`polluxd --metrics 127.0.0.1:9464`, off by default):
//! `GET /metrics` in Prometheus' text exposition format (0.0.4), for Prometheus,
//! VictoriaMetrics or anything that scrapes it.
//!
//! What it serves, all read from counters the engine keeps anyway (nothing is counted
//! for the endpoint's sake): per bdev, the `bdev_get_iostat` counters and latency
//! histograms (powers of two of TSC ticks, given in seconds); per reactor, busy, idle
//! and sleeping time and loops; per NVMe-oF poll group, `nvmf_get_stats`' counters
//! (connections, queue pairs, commands, protocol errors, buffers in use, ...); per
//! subsystem, its namespaces, controllers and listeners; the iobuf pools' free buffers.
//! `docs/grafana-pollux.json` is a dashboard on these names.

use pollux_engine::bdev::IoKind;
use pollux_engine::bdev::iostat::{ERROR_NAMES, HIST_BUCKETS, bucket_bound_ns, tick_rate};
use pollux_engine::rpc::RpcServer;
use serde_json::Value;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest request head taken (a scrape's is a few hundred bytes).
const REQUEST_HEAD_MAX: usize = 8192;

/// Prometheus' label value escaping: backslash, double quote, newline.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Metric families written in order, each with its HELP and TYPE once.
struct Out {
    text: String,
    current: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        if self.current != name {
            let _ = writeln!(self.text, "# HELP {name} {help}");
            let _ = writeln!(self.text, "# TYPE {name} {kind}");
            self.current = name.to_owned();
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if l.is_empty() {
            let _ = writeln!(self.text, "{name} {v}");
        } else {
            let _ = writeln!(self.text, "{name}{{{}}} {v}", l.join(","));
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, labels: &[(&str, &str)], v: u64) {
        self.family(name, kind, help);
        self.sample(name, labels, v);
    }
}

/// The metrics now, as text.
pub fn render(server: &RpcServer) -> String {
    let mut o = Out {
        text: String::with_capacity(16 << 10),
        current: String::new(),
    };
    o.one(
        "pollux_build_info",
        "gauge",
        "Pollux's version.",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    let rate = tick_rate() as f64;
    let engine = server.engine();
    // Bdevs: one family at a time over every bdev, as the format wants.
    let bdevs: Vec<_> = engine
        .bdevs()
        .list()
        .into_iter()
        .map(|b| (b.name().to_owned(), b.stats().total()))
        .collect();
    for (kind, what, verb) in [
        (IoKind::Read, "read", "read"),
        (IoKind::Write, "write", "written"),
        (IoKind::Unmap, "unmap", "unmapped"),
    ] {
        let name = format!("pollux_bdev_{verb}_bytes_total");
        o.family(&name, "counter", &format!("Bytes {verb} (completed I/Os)."));
        for (b, st) in &bdevs {
            o.sample(&name, &[("bdev", b)], st.bytes_ops(kind).0);
        }
        let name = format!("pollux_bdev_{what}_ops_total");
        o.family(&name, "counter", &format!("Completed {what} I/Os."));
        for (b, st) in &bdevs {
            o.sample(&name, &[("bdev", b)], st.bytes_ops(kind).1);
        }
        let name = format!("pollux_bdev_{what}_latency_seconds");
        o.family(
            &name,
            "histogram",
            &format!("Latency of {what} I/Os, submission to completion."),
        );
        for (b, st) in &bdevs {
            let (ticks, hist) = st.latency(kind).expect("a counted kind");
            let mut cum = 0u64;
            for (i, n) in hist.iter().enumerate().take(HIST_BUCKETS) {
                cum += n;
                let le = match bucket_bound_ns(i) {
                    Some(ns) => format!("{}", ns as f64 / 1e9),
                    None => "+Inf".to_owned(),
                };
                o.sample(&format!("{name}_bucket"), &[("bdev", b), ("le", &le)], cum);
            }
            o.sample(&format!("{name}_sum"), &[("bdev", b)], ticks as f64 / rate);
            o.sample(&format!("{name}_count"), &[("bdev", b)], cum);
        }
    }
    o.family(
        "pollux_bdev_io_errors_total",
        "counter",
        "Failed I/Os by SPDK's status names.",
    );
    for (b, st) in &bdevs {
        for (status, n) in ERROR_NAMES.iter().zip(st.errors()) {
            o.sample(
                "pollux_bdev_io_errors_total",
                &[("bdev", b), ("status", status)],
                n,
            );
        }
    }
    // Reactors.
    let reactors = engine.reactor_stats();
    for (name, help, f) in [
        (
            "pollux_reactor_busy_seconds_total",
            "Time in loops that did work.",
            0,
        ),
        (
            "pollux_reactor_idle_seconds_total",
            "Time in loops that found nothing to do, sleep included.",
            1,
        ),
        (
            "pollux_reactor_sleep_seconds_total",
            "Time asleep in epoll_wait (interrupt mode).",
            2,
        ),
    ] {
        o.family(name, "counter", help);
        for r in &reactors {
            let ns = [r.busy_ns, r.idle_ns, r.sleep_ns][f];
            o.sample(name, &[("core", &r.core.to_string())], ns as f64 / 1e9);
        }
    }
    o.family("pollux_reactor_loops_total", "counter", "Reactor loops.");
    for r in &reactors {
        o.sample(
            "pollux_reactor_loops_total",
            &[("core", &r.core.to_string())],
            r.loops,
        );
    }
    o.family(
        "pollux_reactor_sleeps_total",
        "counter",
        "Times a reactor went to sleep.",
    );
    for r in &reactors {
        o.sample(
            "pollux_reactor_sleeps_total",
            &[("core", &r.core.to_string())],
            r.sleeps,
        );
    }
    // Poll groups: nvmf_get_stats' numbers; "current_*" and what is held now are gauges.
    if let Ok(stats) = server.call("nvmf_get_stats", None) {
        let groups = stats["poll_groups"].as_array().cloned().unwrap_or_default();
        let mut fields: Vec<String> = Vec::new();
        for g in &groups {
            for (k, v) in g.as_object().into_iter().flatten() {
                if v.is_u64() && !fields.contains(k) {
                    fields.push(k.clone());
                }
            }
        }
        for f in fields {
            let gauge =
                f.starts_with("current_") || f == "pending_bdev_io" || f == "iobuf_outstanding";
            let (name, kind) = if gauge {
                (format!("pollux_nvmf_poll_group_{f}"), "gauge")
            } else {
                (format!("pollux_nvmf_poll_group_{f}_total"), "counter")
            };
            o.family(&name, kind, &format!("nvmf_get_stats {f}."));
            for g in &groups {
                let pg = g["name"].as_str().unwrap_or("?");
                if let Some(v) = g.get(&f).and_then(Value::as_u64) {
                    o.sample(&name, &[("poll_group", pg)], v);
                }
            }
        }
    }
    // Subsystems.
    let info = server.nvmf().info();
    let subs: Vec<_> = info
        .subsystems
        .iter()
        .filter(|s| !s.namespaces.is_empty() || !s.listeners.is_empty())
        .collect();
    o.family(
        "pollux_nvmf_subsystem_namespaces",
        "gauge",
        "Namespaces of a subsystem.",
    );
    for s in &subs {
        o.sample(
            "pollux_nvmf_subsystem_namespaces",
            &[("nqn", &s.nqn)],
            s.namespaces.len(),
        );
    }
    o.family(
        "pollux_nvmf_subsystem_listeners",
        "gauge",
        "Listeners of a subsystem.",
    );
    for s in &subs {
        o.sample(
            "pollux_nvmf_subsystem_listeners",
            &[("nqn", &s.nqn)],
            s.listeners.len(),
        );
    }
    o.family(
        "pollux_nvmf_subsystem_controllers",
        "gauge",
        "Controllers connected to a subsystem.",
    );
    for s in &subs {
        let n = server.nvmf().controllers(&s.nqn).len();
        o.sample("pollux_nvmf_subsystem_controllers", &[("nqn", &s.nqn)], n);
    }
    // iobuf pools.
    let levels = engine.iobuf().pool_levels();
    o.family(
        "pollux_iobuf_free_buffers",
        "gauge",
        "Buffers in an iobuf pool (thread caches not counted).",
    );
    for (pool, free, _) in &levels {
        o.sample("pollux_iobuf_free_buffers", &[("pool", pool)], free);
    }
    o.family(
        "pollux_iobuf_buffers",
        "gauge",
        "Buffers an iobuf pool was made with.",
    );
    for (pool, _, total) in &levels {
        o.sample("pollux_iobuf_buffers", &[("pool", pool)], total);
    }
    o.text
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves. Anything else gets
/// 404 or 405; a request head over 8 KiB or slower than 5 s is dropped.
pub async fn serve(
    listener: TcpListener,
    server: Arc<RpcServer>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let s = server.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, s)).await;
                });
            }
        }
    }
}

async fn answer(mut stream: TcpStream, server: Arc<RpcServer>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > REQUEST_HEAD_MAX {
            return reply(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request head too long\n",
            )
            .await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let s = server.clone();
            let body = tokio::task::spawn_blocking(move || render(&s))
                .await
                .unwrap_or_default();
            reply(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        (_, "/metrics") => {
            reply(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "GET only\n",
            )
            .await
        }
        _ => {
            reply(
                &mut stream,
                "404 Not Found",
                "text/plain",
                "metrics are at /metrics\n",
            )
            .await
        }
    }
}

async fn reply(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
