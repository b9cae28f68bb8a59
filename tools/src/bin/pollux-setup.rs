//! pollux-setup: readies the machine for Pollux's userspace NVMe driver (like SPDK's
//! scripts/setup.sh), through sysfs and procfs.
//!
//! `pollux-setup status [--json]`: NVMe controllers, their drivers and IOMMU groups,
//! hugepages, and what is still missing, with the fix.
//! `pollux-setup bind 00:04.0`: gives a controller to vfio-pci (driver_override, unbind,
//! drivers_probe) and checks that its IOMMU group is viable.
//! `pollux-setup unbind 00:04.0` (or `reset`): gives it back to its kernel driver.
//! `pollux-setup hugepages 1024`: reserves hugepages of the default size.
//!
//! `--sysfs-root DIR` (hidden) or `POLLUX_SYSFS_ROOT=DIR` works on a copy of `/sys`,
//! `/proc` and `/dev` under DIR instead of the real ones (and never runs modprobe).

use clap::{Parser, Subcommand};
use pollux_tools::setup::{Bdf, SYSFS_ROOT_ENV, SetupError, Sysfs, VFIO_PCI, resolve_root};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "pollux-setup",
    version,
    about = "Ready NVMe controllers, the IOMMU and hugepages for Pollux's userspace driver"
)]
struct Args {
    /// Root of /sys, /proc and /dev, for tests (also POLLUX_SYSFS_ROOT).
    #[arg(long = "sysfs-root", hide = true, global = true)]
    sysfs_root: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List NVMe controllers, hugepages, and what the userspace driver still lacks.
    Status {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give devices to vfio-pci (driver_override, unbind, drivers_probe).
    Bind {
        /// PCI addresses: 0000:00:04.0, or 00:04.0 for domain 0.
        #[arg(value_name = "BDF", required = true)]
        bdfs: Vec<Bdf>,
        /// The driver to bind to.
        #[arg(long, default_value = VFIO_PCI)]
        driver: String,
    },
    /// Give devices back to their kernel driver.
    #[command(alias = "reset")]
    Unbind {
        /// PCI addresses: 0000:00:04.0, or 00:04.0 for domain 0.
        #[arg(value_name = "BDF", required = true)]
        bdfs: Vec<Bdf>,
    },
    /// Whether CLIENT (a NIC) can reach PROVIDER's memory (an NVMe CMB) peer-to-peer,
    /// from the PCI topology: behind one switch, through an allowed host bridge, or not.
    P2p {
        /// The device whose memory is reached (the NVMe controller).
        provider: Bdf,
        /// The device that issues the DMA (the RDMA NIC).
        client: Bdf,
        /// Allow the host bridge path on any host bridge (or never).
        #[arg(long, value_parser = ["allow-list", "always", "never"], default_value = "allow-list")]
        host_bridge: String,
    },
    /// Reserve N hugepages of the default size (/proc/sys/vm/nr_hugepages).
    Hugepages {
        /// How many (0 releases them).
        n: u64,
    },
}

fn main() {
    pollux_tools::init_logging();
    let args = Args::parse();
    let root = resolve_root(args.sysfs_root, std::env::var_os(SYSFS_ROOT_ENV));
    let sys = Sysfs::new(&root).with_modprobe(root == Path::new("/"));
    if !run(&sys, args.cmd) {
        std::process::exit(1);
    }
}

fn fail(e: &SetupError) {
    eprintln!("pollux-setup: {e}");
}

fn or_none(d: &Option<String>) -> &str {
    d.as_deref().unwrap_or("no driver")
}

/// The addresses without repeats, in the order given.
fn unique(bdfs: &[Bdf]) -> Vec<Bdf> {
    let mut out: Vec<Bdf> = Vec::with_capacity(bdfs.len());
    for b in bdfs {
        if !out.contains(b) {
            out.push(*b);
        }
    }
    out
}

/// Runs a subcommand, printing what it did; false if anything failed.
fn run(sys: &Sysfs, cmd: Cmd) -> bool {
    match cmd {
        Cmd::Status { json } => {
            let st = sys.status();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&st).expect("the status serialises")
                );
            } else {
                print!("{st}");
            }
            true
        }
        Cmd::Bind { bdfs, driver } => bind(sys, &unique(&bdfs), &driver),
        Cmd::Unbind { bdfs } => unbind(sys, &unique(&bdfs)),
        Cmd::P2p {
            provider,
            client,
            host_bridge,
        } => {
            use pollux_engine::dma::p2p::{HostBridgePolicy, Sysfs as Topo};
            let policy = match host_bridge.as_str() {
                "always" => HostBridgePolicy::Always,
                "never" => HostBridgePolicy::Never,
                _ => HostBridgePolicy::AllowList,
            };
            let r = Topo::new(sys.root()).route(&provider.to_string(), &client.to_string(), policy);
            println!("{client} -> {provider}: {r}");
            r.possible()
        }
        Cmd::Hugepages { n } => match sys.set_hugepages(n) {
            Ok(got) => {
                match sys.hugepages() {
                    Ok(h) => println!(
                        "{got} hugepages of {} kB reserved ({} MiB)",
                        h.size_kb,
                        got * h.size_kb / 1024
                    ),
                    Err(_) => println!("{got} hugepages reserved"),
                }
                true
            }
            Err(e) => {
                fail(&e);
                false
            }
        },
    }
}

/// Checks that every device exists before touching any.
fn all_exist(sys: &Sysfs, bdfs: &[Bdf]) -> bool {
    let mut ok = true;
    for b in bdfs {
        if let Err(e) = sys.check_device(*b) {
            fail(&e);
            ok = false;
        }
    }
    ok
}

fn bind(sys: &Sysfs, bdfs: &[Bdf], driver: &str) -> bool {
    if !all_exist(sys, bdfs) {
        return false;
    }
    let mut ok = true;
    let mut groups = Vec::new();
    for &bdf in bdfs {
        match sys.bind(bdf, driver) {
            Ok(r) => {
                let group = match r.iommu_group {
                    Some(g) => format!(", IOMMU group {g}"),
                    None => String::new(),
                };
                println!("{}: {} -> {}{group}", r.bdf, or_none(&r.previous), r.driver);
                if driver == VFIO_PCI
                    && let Some(g) = r.iommu_group
                    && !groups.contains(&g)
                {
                    groups.push(g);
                }
            }
            Err(e) => {
                fail(&e);
                ok = false;
                if matches!(
                    e,
                    SetupError::DriverNotLoaded { .. } | SetupError::InvalidDriver(_)
                ) {
                    return false;
                }
            }
        }
    }
    // Once every device asked for is bound, the groups should hold nothing else.
    for g in groups {
        if let Err(e) = sys.check_viable(g) {
            fail(&e);
            ok = false;
        }
    }
    ok
}

fn unbind(sys: &Sysfs, bdfs: &[Bdf]) -> bool {
    if !all_exist(sys, bdfs) {
        return false;
    }
    let mut ok = true;
    for &bdf in bdfs {
        match sys.unbind(bdf) {
            Ok(r) => {
                let hint = if r.driver.is_none() {
                    " (is its kernel driver loaded? e.g. modprobe nvme)"
                } else {
                    ""
                };
                println!(
                    "{}: {} -> {}{hint}",
                    r.bdf,
                    or_none(&r.previous),
                    or_none(&r.driver)
                );
            }
            Err(e) => {
                fail(&e);
                ok = false;
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn parses_subcommands() {
        let a = Args::try_parse_from(["pollux-setup", "reset", "00:04.0", "0000:00:05.1"]).unwrap();
        let Cmd::Unbind { bdfs } = a.cmd else {
            panic!("reset is unbind")
        };
        assert_eq!(bdfs[0].to_string(), "0000:00:04.0");
        assert_eq!(bdfs[1].to_string(), "0000:00:05.1");

        let a = Args::try_parse_from(["pollux-setup", "bind", "00:04.0", "--sysfs-root", "/t"])
            .unwrap();
        assert_eq!(a.sysfs_root, Some(PathBuf::from("/t")));
        let Cmd::Bind { driver, .. } = a.cmd else {
            panic!("bind")
        };
        assert_eq!(driver, VFIO_PCI);

        let e = Args::try_parse_from(["pollux-setup", "bind", "00:4g.0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid PCI address \"00:4g.0\""), "{e}");
        assert!(Args::try_parse_from(["pollux-setup", "bind"]).is_err());
        assert!(Args::try_parse_from(["pollux-setup", "hugepages", "-1"]).is_err());
    }

    #[test]
    fn runs_on_a_fake_root() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Sysfs::new(dir.path());
        assert!(run(&sys, Cmd::Status { json: true }));
        let b: Bdf = "00:04.0".parse().unwrap();
        assert!(!run(&sys, Cmd::Unbind { bdfs: vec![b] }));
        assert!(sys.writes().is_empty());
        assert!(!run(&sys, Cmd::Hugepages { n: 4 }));
        assert_eq!(unique(&[b, b]), [b]);
    }
}
