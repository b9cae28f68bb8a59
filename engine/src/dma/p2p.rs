//! Whether one PCI device can reach another's memory peer-to-peer (an RDMA NIC
//! reaching an NVMe controller's CMB, say), decided from the PCI topology in sysfs, as
//! Linux's `pci_p2pdma` decides it:
//!
//! - **Behind one switch**: the two devices share an upstream bridge below the root
//!   complex, and no port between them has ACS P2P Request Redirect on. Transactions
//!   turn around in the switch; the client uses the provider's bus address.
//! - **Through the host bridge**: they share only the root complex (or ACS sends their
//!   traffic up to it). That works only on host bridges known to forward peer-to-peer
//!   traffic (the allow-list below, as Linux's), or where an option forces it.
//! - **Not at all**: different host bridges, a host bridge not allowed, or a device
//!   missing from sysfs. The reason is returned for logs and counters.
//!
//! The sysfs root is a parameter, so unit tests run on recorded topologies
//! (`engine/tests/fixtures/p2p/*.topo`).

use std::fmt;
use std::path::{Path, PathBuf};

/// A sysfs tree (the machine's at `/`, or a recorded one).
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
}

/// How traffic between two devices would go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum P2pRoute {
    /// The same device (a controller reaching its own CMB).
    SameDevice,
    /// Within a switch below the root complex: bus addresses.
    Switch {
        /// The deepest bridge both sit below.
        bridge: String,
    },
    /// Up through the host bridge and down again.
    HostBridge {
        /// The host bridge device (domain:00:00.0).
        bridge: String,
        /// Why this is allowed.
        allowed_by: String,
    },
    /// No peer-to-peer path.
    None {
        /// Why.
        why: String,
    },
}

impl P2pRoute {
    /// Whether there is a path.
    pub fn possible(&self) -> bool {
        !matches!(self, P2pRoute::None { .. })
    }
}

impl fmt::Display for P2pRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            P2pRoute::SameDevice => f.write_str("same device"),
            P2pRoute::Switch { bridge } => write!(f, "peer-to-peer below bridge {bridge}"),
            P2pRoute::HostBridge { bridge, allowed_by } => {
                write!(f, "through host bridge {bridge} ({allowed_by})")
            }
            P2pRoute::None { why } => write!(f, "no peer-to-peer path: {why}"),
        }
    }
}

/// What the host bridge path needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HostBridgePolicy {
    /// Allowed on the host bridges of the allow-list only (Linux's rule).
    #[default]
    AllowList,
    /// Allowed on any host bridge (an operator who knows the platform).
    Always,
    /// Never.
    Never,
}

/// Host bridges known to forward peer-to-peer traffic between their root ports:
/// (vendor, device, both devices must sit below this same host bridge). Linux keeps the
/// same list in `drivers/pci/p2pdma.c`; AMD's Zen host bridges are allowed as a family.
const HOST_BRIDGE_ALLOW: &[(u16, u16, &str)] = &[
    (0x8086, 0x3c00, "Intel Xeon E5 / Core i7 (Sandy Bridge-EP)"),
    (0x8086, 0x3c01, "Intel Xeon E5 / Core i7 (Sandy Bridge-EP)"),
    (0x8086, 0x2f00, "Intel Xeon E5 v3 (Haswell-EP)"),
    (0x8086, 0x2f01, "Intel Xeon E5 v3 (Haswell-EP)"),
    (0x8086, 0x2030, "Intel Skylake-SP"),
    (0x8086, 0x2031, "Intel Skylake-SP"),
    (0x8086, 0x2032, "Intel Skylake-SP"),
    (0x8086, 0x2033, "Intel Skylake-SP"),
    (0x8086, 0x2020, "Intel Skylake-SP"),
    (0x8086, 0x09a2, "Intel Ice Lake-SP"),
];

/// ACS extended capability ID, and the control register's P2P Request Redirect bit.
const ACS_CAP_ID: u16 = 0x000d;
const ACS_CTRL_RR: u16 = 1 << 2;

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs::new("/")
    }
}

impl Sysfs {
    /// The tree under `root` (`/` for the machine's).
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    fn dev_dir(&self, bdf: &str) -> PathBuf {
        self.root.join("sys/bus/pci/devices").join(bdf)
    }

    fn attr_u16(&self, bdf: &str, attr: &str) -> Option<u16> {
        let s = std::fs::read_to_string(self.dev_dir(bdf).join(attr)).ok()?;
        u16::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
    }

    /// The chain of PCI functions from the root port down to `bdf` (itself last), and
    /// its host bridge (`pci0000:00`).
    pub fn chain(&self, bdf: &str) -> Result<(String, Vec<String>), String> {
        let real = std::fs::canonicalize(self.dev_dir(bdf))
            .map_err(|e| format!("{bdf} is not in sysfs ({e})"))?;
        let mut host = None;
        let mut chain = Vec::new();
        for c in real.components() {
            let s = c.as_os_str().to_string_lossy();
            if s.starts_with("pci") && s.contains(':') {
                host = Some(s.into_owned());
                chain.clear();
            } else if host.is_some() && is_bdf(&s) {
                chain.push(s.into_owned());
            }
        }
        match host {
            Some(h) if chain.last().map(String::as_str) == Some(bdf) => Ok((h, chain)),
            _ => Err(format!(
                "{bdf}: {} is not below a PCI host bridge",
                real.display()
            )),
        }
    }

    /// The IOMMU group of `bdf`, if any.
    pub fn iommu_group(&self, bdf: &str) -> Option<String> {
        std::fs::read_link(self.dev_dir(bdf).join("iommu_group"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    /// Whether bridge `bdf` has ACS P2P Request Redirect on (read from its config
    /// space; `None` when the config space or the capability is not there).
    pub fn acs_redirect(&self, bdf: &str) -> Option<bool> {
        let cfg = std::fs::read(self.dev_dir(bdf).join("config")).ok()?;
        let mut off = 0x100usize;
        for _ in 0..64 {
            if off + 8 > cfg.len() || off < 0x100 {
                return None;
            }
            let hdr = u32::from_le_bytes(cfg[off..off + 4].try_into().ok()?);
            if hdr == 0 || hdr == 0xffff_ffff {
                return None;
            }
            if hdr as u16 == ACS_CAP_ID {
                let ctrl = u16::from_le_bytes(cfg[off + 6..off + 8].try_into().ok()?);
                return Some(ctrl & ACS_CTRL_RR != 0);
            }
            off = (hdr >> 20) as usize & !3;
            if off == 0 {
                return None;
            }
        }
        None
    }

    /// How `client` (the device issuing DMA, a NIC) would reach memory of `provider`
    /// (the device exposing it, an NVMe controller's CMB).
    pub fn route(&self, provider: &str, client: &str, policy: HostBridgePolicy) -> P2pRoute {
        if provider == client {
            return P2pRoute::SameDevice;
        }
        let (hp, cp) = match self.chain(provider) {
            Ok(x) => x,
            Err(why) => return P2pRoute::None { why },
        };
        let (hc, cc) = match self.chain(client) {
            Ok(x) => x,
            Err(why) => return P2pRoute::None { why },
        };
        if hp != hc {
            return P2pRoute::None {
                why: format!(
                    "{provider} and {client} are below different host bridges ({hp}, {hc})"
                ),
            };
        }
        // Bridges both devices sit below (the devices themselves excluded).
        let common = cp[..cp.len() - 1]
            .iter()
            .zip(&cc[..cc.len() - 1])
            .take_while(|(a, b)| a == b)
            .count();
        let mut redirect = None;
        if common > 0 {
            // Ports between the common bridge and each device: ACS redirect sends the
            // traffic up to the root complex.
            for b in cp[common..cp.len() - 1]
                .iter()
                .chain(&cc[common..cc.len() - 1])
            {
                if self.acs_redirect(b) == Some(true) {
                    redirect = Some(b.clone());
                    break;
                }
            }
            if redirect.is_none() {
                return P2pRoute::Switch {
                    bridge: cp[common - 1].clone(),
                };
            }
        }
        let domain = provider.split(':').next().unwrap_or("0000");
        let hb = format!("{domain}:00:00.0");
        let upward = match &redirect {
            Some(b) => format!("ACS P2P Request Redirect on {b} sends the traffic up"),
            None => "they share only the root complex".to_owned(),
        };
        match policy {
            HostBridgePolicy::Never => P2pRoute::None {
                why: format!("{upward}, and the host bridge path is disabled"),
            },
            HostBridgePolicy::Always => P2pRoute::HostBridge {
                bridge: hb,
                allowed_by: format!("{upward}; forced by option"),
            },
            HostBridgePolicy::AllowList => {
                let v = self.attr_u16(&hb, "vendor");
                let d = self.attr_u16(&hb, "device");
                let listed = HOST_BRIDGE_ALLOW
                    .iter()
                    .find(|(lv, ld, _)| Some(*lv) == v && Some(*ld) == d)
                    .map(|(_, _, n)| n.to_string())
                    .or_else(|| (v == Some(0x1022)).then(|| "AMD host bridge".to_owned()));
                match listed {
                    Some(name) => P2pRoute::HostBridge {
                        bridge: hb,
                        allowed_by: format!("{upward}; {name} is on the allow-list"),
                    },
                    None => P2pRoute::None {
                        why: format!(
                            "{upward}, and host bridge {hb} ({:04x}:{:04x}) is not known to forward peer-to-peer traffic (force with the host-bridge option)",
                            v.unwrap_or(0),
                            d.unwrap_or(0)
                        ),
                    },
                }
            }
        }
    }
}

fn is_bdf(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.'
}

/// Builds a sysfs tree from a topology description (for tests and fixtures): one
/// device per line, `<path of BDFs from the root port, '/'-separated> <vendor> <device>
/// [acs-rr] [iommu=<group>]`, under host bridge `pci<domain>:00`; `#` starts a comment.
pub fn build_fixture(root: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::symlink;
    let devs = root.join("sys/devices");
    let bus = root.join("sys/bus/pci/devices");
    std::fs::create_dir_all(&bus)?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let path = f.next().unwrap_or_default();
        let vendor = f.next().unwrap_or("0x0000");
        let device = f.next().unwrap_or("0x0000");
        let chain: Vec<&str> = path.split('/').collect();
        let bdf = chain.last().copied().unwrap_or_default();
        let domain = &bdf[..4];
        let mut dir = devs.join(format!("pci{domain}:00"));
        for c in &chain {
            dir = dir.join(c);
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("vendor"), format!("{vendor}\n"))?;
        std::fs::write(dir.join("device"), format!("{device}\n"))?;
        let mut cfg = vec![0u8; 4096];
        for opt in f {
            if opt == "acs-rr" || opt == "acs" {
                // An ACS capability at 0x100 (the only extended capability), control at +6.
                cfg[0x100..0x104].copy_from_slice(&(ACS_CAP_ID as u32 | 1 << 16).to_le_bytes());
                let ctrl: u16 = if opt == "acs-rr" { ACS_CTRL_RR | 1 } else { 1 };
                cfg[0x106..0x108].copy_from_slice(&ctrl.to_le_bytes());
            } else if let Some(g) = opt.strip_prefix("iommu=") {
                let gdir = root.join("sys/kernel/iommu_groups").join(g);
                std::fs::create_dir_all(gdir.join("devices"))?;
                symlink(&gdir, dir.join("iommu_group"))?;
            }
        }
        std::fs::write(dir.join("config"), &cfg)?;
        let link = bus.join(bdf);
        if !link.exists() {
            symlink(&dir, &link)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> (tempfile::TempDir, Sysfs) {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/p2p/{name}.topo")),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        build_fixture(dir.path(), &text).unwrap();
        let s = Sysfs::new(dir.path());
        (dir, s)
    }

    const SSD: &str = "0000:03:00.0";
    const NIC: &str = "0000:04:00.0";

    #[test]
    fn a_switch_with_acs_off_routes_by_bus_address() {
        let (_d, s) = fixture("switch");
        let (hb, chain) = s.chain(SSD).unwrap();
        assert_eq!(hb, "pci0000:00");
        assert_eq!(chain, ["0000:00:03.0", "0000:01:00.0", "0000:02:08.0", SSD]);
        assert_eq!(
            s.route(SSD, NIC, HostBridgePolicy::AllowList),
            P2pRoute::Switch {
                bridge: "0000:01:00.0".into()
            }
        );
        assert_eq!(s.acs_redirect("0000:02:08.0"), Some(false));
        assert_eq!(s.iommu_group(SSD).as_deref(), Some("11"));
        assert_eq!(
            s.route(SSD, SSD, HostBridgePolicy::Never),
            P2pRoute::SameDevice
        );
    }

    #[test]
    fn acs_redirect_sends_traffic_to_an_allowed_host_bridge() {
        let (_d, s) = fixture("switch-acs");
        let r = s.route(SSD, NIC, HostBridgePolicy::AllowList);
        let P2pRoute::HostBridge { bridge, allowed_by } = &r else {
            panic!("{r:?}");
        };
        assert_eq!(bridge, "0000:00:00.0");
        assert!(
            allowed_by.contains("ACS P2P Request Redirect on 0000:02:08.0"),
            "{allowed_by}"
        );
        assert!(allowed_by.contains("Skylake"), "{allowed_by}");
        let r = s.route(SSD, NIC, HostBridgePolicy::Never);
        assert!(!r.possible());
        assert!(r.to_string().contains("disabled"), "{r}");
        assert_ne!(s.iommu_group(SSD), s.iommu_group(NIC), "ACS isolates them");
    }

    #[test]
    fn root_ports_need_the_allow_list_or_the_option() {
        let (_d, s) = fixture("two-root-ports");
        let r = s.route("0000:01:00.0", "0000:02:00.0", HostBridgePolicy::AllowList);
        assert!(!r.possible());
        let why = r.to_string();
        assert!(
            why.contains("8086:3e0f") && why.contains("share only the root complex"),
            "{why}"
        );
        let r = s.route("0000:01:00.0", "0000:02:00.0", HostBridgePolicy::Always);
        assert!(
            matches!(r, P2pRoute::HostBridge { ref allowed_by, .. } if allowed_by.contains("forced")),
            "{r:?}"
        );
        let (_d, amd) = fixture("amd-two-root-ports");
        let r = amd.route("0000:01:00.0", "0000:02:00.0", HostBridgePolicy::AllowList);
        assert!(
            matches!(r, P2pRoute::HostBridge { ref allowed_by, .. } if allowed_by.contains("AMD")),
            "{r:?}"
        );
    }

    #[test]
    fn different_host_bridges_and_missing_devices_have_no_path() {
        let (_d, s) = fixture("two-host-bridges");
        let r = s.route("0000:01:00.0", "0001:01:00.0", HostBridgePolicy::Always);
        assert!(r.to_string().contains("different host bridges"), "{r}");
        let r = s.route("0000:01:00.0", "0000:09:00.0", HostBridgePolicy::Always);
        assert!(
            r.to_string().contains("0000:09:00.0 is not in sysfs"),
            "{r}"
        );
    }

    #[test]
    fn the_lab_machine_has_no_path() {
        let (_d, s) = fixture("qemu-q35-lab");
        let r = s.route("0000:00:01.0", "0000:00:02.0", HostBridgePolicy::AllowList);
        assert!(!r.possible());
        assert!(r.to_string().contains("8086:29c0"), "{r}");
    }
}
