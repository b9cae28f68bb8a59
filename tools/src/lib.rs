//! # pollux-tools
//!
//! What Pollux's programs share. The programs (`polluxd`, the NVMe-oF target daemon;
//! `pollux-perf`, the fio-compatible load generator; `pollux-rpc`, the JSON-RPC client;
//! `pollux-setup`, which readies vfio-pci, the IOMMU and hugepages) share this library;
//! [`perf`] holds pollux-perf's option parser, histograms and reports; [`setup`] holds
//! pollux-setup's sysfs work (vfio-pci binding, IOMMU groups, hugepages).

pub mod perf;
pub mod setup;

/// Sends `tracing` output to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
