//! polluxd: the Pollux daemon. Reactors on the cores of `-m`, configured by SPDK-style
//! JSON-RPC on a UNIX socket and by SPDK-format JSON config files.
//!
//! It serves NVMe-over-Fabrics (TCP and RDMA) subsystems configured with SPDK's `nvmf_*` methods,
//! on top of the engine's bdevs. `examples/quickstart.json` is a complete config: a RAM
//! namespace on 127.0.0.1:4420 for any host.

use clap::Parser;
use pollux_engine::dma::IobufOpts;
use pollux_engine::reactor::Engine;
use pollux_engine::rpc::{RPC_SOCKET_DEFAULT, RpcError, RpcServer};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "polluxd",
    version,
    about = "Pollux storage daemon (SPDK-compatible JSON-RPC)"
)]
struct Args {
    /// Cores to run reactors on: a hex mask (0x3) or a list ([0-1], 0,2-3).
    #[arg(short = 'm', long = "cpumask", default_value = "0x1")]
    cpumask: String,
    /// A JSON config in SPDK's format, loaded at start-up (after framework_start_init
    /// with --wait-for-rpc).
    #[arg(short = 'c', long = "json")]
    config: Option<PathBuf>,
    /// The RPC socket.
    #[arg(short = 'r', long = "rpc-socket", default_value = RPC_SOCKET_DEFAULT)]
    rpc_socket: PathBuf,
    /// Serve RPC but load the config only when framework_start_init is called.
    #[arg(long = "wait-for-rpc")]
    wait_for_rpc: bool,
    /// Poll without ever sleeping (reactors use 100% of their cores, for the lowest
    /// latency); by default an idle reactor sleeps after 1 ms.
    #[arg(long = "poll-only")]
    poll_only: bool,
    /// Size the DMA buffer pools small (for machines with little memory to spare).
    #[arg(long = "small-pools")]
    small_pools: bool,
    /// Enable a log flag (SPDK's names: log_get_flags lists them; `all`, or a glob),
    /// with debug messages shown, as SPDK's -L does; may be repeated.
    #[arg(short = 'L', long = "logflag")]
    logflag: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (127.0.0.1:9464, say); off by
    /// default.
    #[arg(long = "metrics")]
    metrics: Option<std::net::SocketAddr>,
}

fn main() {
    pollux_tools::init_logging();
    let args = Args::parse();
    for f in &args.logflag {
        if let Err(e) = pollux_engine::rpc::log::enable_flag_at_start(f) {
            eprintln!("polluxd: -L {f}: {e}");
            std::process::exit(1);
        }
    }
    if let Err(e) = run(args) {
        tracing::error!("{e}");
        eprintln!("polluxd: {e}");
        std::process::exit(1);
    }
}

fn load(server: &RpcServer, path: &PathBuf) -> Result<usize, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| format!("config {} is not JSON: {e}", path.display()))?;
    server
        .load_config(&cfg)
        .map_err(|e| format!("config {}: {}", path.display(), e.message))
}

fn run(args: Args) -> Result<(), String> {
    let engine = Engine::builder()
        .core_mask(&args.cpumask)
        .sleep_after_idle(if args.poll_only {
            None
        } else {
            Some(Duration::from_millis(1))
        })
        .iobuf(if args.small_pools {
            IobufOpts::small()
        } else {
            IobufOpts::default()
        })
        .start()
        .map_err(|e| e.to_string())?;
    let mut server = RpcServer::new(engine.handle());
    let initialized = Arc::new(AtomicBool::new(!args.wait_for_rpc));
    let stopping = Arc::new(AtomicBool::new(false));
    // framework_start_init needs the server itself (to load the config through it):
    // it is registered with a slot filled once the server is built.
    let slot: Arc<Mutex<Option<Arc<RpcServer>>>> = Arc::default();
    {
        let (init, slot, config) = (initialized.clone(), slot.clone(), args.config.clone());
        server.register("framework_start_init", move |_, _| {
            if init.swap(true, Ordering::AcqRel) {
                return Err(RpcError::failed("the framework is already initialized"));
            }
            if let (Some(path), Some(s)) = (&config, slot.lock().unwrap().clone()) {
                load(&s, path).map_err(RpcError::failed)?;
            }
            Ok(json!(true))
        });
        let (init, stop) = (initialized.clone(), stopping.clone());
        // As SPDK: answers once the framework is initialized (or the daemon stops).
        server.register("framework_wait_init", move |_, _| {
            while !init.load(Ordering::Acquire) {
                if stop.load(Ordering::Acquire) {
                    return Err(RpcError::failed("polluxd is stopping"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(json!(true))
        });
        let init = initialized.clone();
        server.set_callable_now(move |m| {
            m != "framework_start_init" || !init.load(Ordering::Acquire)
        });
    }
    let server = Arc::new(server);
    *slot.lock().unwrap() = Some(server.clone());
    if !args.wait_for_rpc {
        if let Some(path) = &args.config {
            match load(&server, path) {
                Ok(n) => tracing::info!(entries = n, config = %path.display(), "config loaded"),
                Err(e) => {
                    // What the config set up so far stops in order, as on SIGTERM.
                    slot.lock().unwrap().take();
                    server.nvmf().shutdown(Duration::from_secs(5));
                    drop(server);
                    engine.shutdown();
                    pollux_engine::bdev::fabric::shutdown_all();
                    pollux_engine::bdev::nvme::shutdown_all();
                    return Err(e);
                }
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the control-plane runtime: {e}"))?;
    let served = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
        let stop = async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            }
        };
        let (metrics_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some(addr) = args.metrics {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
            tracing::info!("metrics at http://{addr}/metrics");
            tokio::spawn(pollux_tools::metrics::serve(l, server.clone(), async {
                let _ = stopped.await;
            }));
        }
        let served = server
            .clone()
            .serve(&args.rpc_socket, stop)
            .await
            .map_err(|e| e.to_string());
        let _ = metrics_stop.send(());
        served
    });
    // A request still being answered (framework_wait_init before the framework
    // started) ends now; none holds the stop up.
    stopping.store(true, Ordering::Release);
    rt.shutdown_timeout(Duration::from_secs(1));
    slot.lock().unwrap().take();
    // Connections close and poll groups stop before the reactors do.
    server.nvmf().shutdown(Duration::from_secs(5));
    drop(server);
    let report = engine.shutdown();
    // NVMe controllers of the userspace driver: CC.SHN, so the next driver finds them clean.
    pollux_engine::bdev::fabric::shutdown_all();
    pollux_engine::bdev::nvme::shutdown_all();
    if !report.pools_full {
        tracing::warn!(pools = ?report.pools, "DMA buffers missing from their pools at shutdown");
    }
    served
}
