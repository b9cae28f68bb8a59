//! # pollux-tools
//!
//! What Pollux's programs share. The programs (`polluxd`, the NVMe-oF target daemon;
//! `pollux-perf`, the fio-compatible load generator; `pollux-rpc`, the JSON-RPC client;
//! `pollux-setup`, which readies vfio-pci, the IOMMU and hugepages) share this library;
//! [`perf`] holds pollux-perf's option parser, histograms and reports; [`setup`] holds
//! pollux-setup's sysfs work (vfio-pci binding, IOMMU groups, hugepages).

pub mod metrics;
pub mod perf;
pub mod setup;

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (default `info`); the
/// filter can be replaced at run time by SPDK's log methods
/// ([`pollux_engine::rpc::log`]).
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, reload};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    // Colours only on a terminal: a log file or journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        pollux_engine::rpc::log::install_filter(move |d| {
            let f = EnvFilter::try_new(d).map_err(|e| format!("log filter {d:?}: {e}"))?;
            handle.reload(f).map_err(|e| e.to_string())
        });
    }
}
