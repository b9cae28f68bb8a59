//! pollux-setup: prepares a machine for Pollux's userspace NVMe driver (the job of
//! SPDK's `scripts/setup.sh`), through sysfs and procfs only.
//!
//! - [`Bdf`]: a PCI address, parsed from `0000:00:04.0` or the short `00:04.0`.
//! - [`Sysfs`]: the files under a root (`/` normally, a temporary tree in tests): it
//!   lists NVMe controllers ([`Sysfs::status`]), hands them to vfio-pci and back
//!   ([`Sysfs::bind`], [`Sysfs::unbind`]), checks that an IOMMU group can be used
//!   ([`Sysfs::check_viable`]) and reserves hugepages ([`Sysfs::set_hugepages`]).
//! - [`SetupError`]: every failure, each saying what to do about it.
//!
//! Binding follows the kernel's recommended sequence: write the driver's name to the
//! device's `driver_override`, unbind it from its current driver, then ask the kernel
//! to probe it again (`/sys/bus/pci/drivers_probe`), which now only matches the
//! override.

use serde::{Serialize, Serializer};
use std::cell::RefCell;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// PCI class code of an NVMe controller (mass storage, non-volatile memory, NVM Express).
pub const NVME_CLASS: u32 = 0x01_08_02;
/// PCI base class and subclass of a PCI-to-PCI bridge (the class code without its
/// programming interface byte).
pub const BRIDGE_CLASS: u32 = 0x06_04;
/// The kernel driver Pollux's userspace NVMe driver needs.
pub const VFIO_PCI: &str = "vfio-pci";
/// The environment variable that moves the root of `/sys`, `/proc` and `/dev`
/// (like the hidden `--sysfs-root` option).
pub const SYSFS_ROOT_ENV: &str = "POLLUX_SYSFS_ROOT";
/// Drivers that only lend a device to userspace: `unbind` takes a device away from them
/// to give it back to its kernel driver.
pub const USERSPACE_DRIVERS: [&str; 4] = ["vfio-pci", "uio_pci_generic", "igb_uio", "pci-stub"];
/// Drivers VFIO accepts on the other devices of a group besides vfio-pci itself.
const VFIO_COMPATIBLE: [&str; 2] = ["vfio-pci", "pci-stub"];

const PCI_DEVICES: &str = "/sys/bus/pci/devices";
const PCI_DRIVERS: &str = "/sys/bus/pci/drivers";
const DRIVERS_PROBE: &str = "/sys/bus/pci/drivers_probe";
const IOMMU_GROUPS: &str = "/sys/kernel/iommu_groups";
const NOIOMMU_MODE: &str = "/sys/module/vfio/parameters/enable_unsafe_noiommu_mode";
const VFIO_CONTAINER: &str = "/dev/vfio/vfio";
const MEMINFO: &str = "/proc/meminfo";
const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// Everything pollux-setup can fail at; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A PCI address that does not parse.
    #[error(
        "invalid PCI address {input:?}: {reason} (expected [domain:]bus:device.function in hex, e.g. 0000:00:04.0 or 00:04.0)"
    )]
    InvalidBdf {
        /// What was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No such device under `/sys/bus/pci/devices`.
    #[error("no PCI device {0} (ls /sys/bus/pci/devices)")]
    NoDevice(Bdf),
    /// A driver name that cannot be one (empty, or with `/` or blanks).
    #[error("invalid driver name {0:?}: give a kernel driver's name, such as vfio-pci")]
    InvalidDriver(String),
    /// The driver is not registered with the PCI bus (its module is not loaded).
    #[error("{driver} is not loaded: modprobe {driver}")]
    DriverNotLoaded {
        /// The driver's name.
        driver: String,
    },
    /// The device has no IOMMU group, so vfio-pci cannot take it.
    #[error(
        "{bdf} has no IOMMU group, so vfio-pci cannot take it: boot with intel_iommu=on (or amd_iommu=on) and enable VT-d / AMD-Vi in the firmware"
    )]
    NoIommuGroup {
        /// The device.
        bdf: Bdf,
    },
    /// Another device of the IOMMU group is held by a host driver, so VFIO refuses the
    /// whole group.
    #[error("VFIO group {group} is not viable: {}", unbind_advice(.blockers))]
    NotViable {
        /// The IOMMU group.
        group: u32,
        /// The devices in the way, with their drivers.
        blockers: Vec<GroupMember>,
    },
    /// After the probe, the device is not bound to the requested driver.
    #[error(
        "{bdf} is bound to {} instead of {driver} after drivers_probe: dmesg tells why {driver} did not take it",
        driver_or_none(.actual)
    )]
    BindFailed {
        /// The device.
        bdf: Bdf,
        /// The driver asked for.
        driver: String,
        /// The driver it ended up with.
        actual: Option<String>,
    },
    /// After clearing the override and probing, the userspace driver took the device
    /// again (it was told the device's ID with `new_id`).
    #[error(
        "{bdf} is still bound to {driver} after drivers_probe: remove its ID from the driver (echo {id} > /sys/bus/pci/drivers/{driver}/remove_id) and retry"
    )]
    StillBound {
        /// The device.
        bdf: Bdf,
        /// The userspace driver that kept it.
        driver: String,
        /// `vendor device` in hex, as `remove_id` wants it.
        id: String,
    },
    /// A file that could not be read.
    #[error("cannot read {}: {source}{}", .path.display(), root_hint(.source))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file that could not be written.
    #[error("cannot write {value:?} to {}: {source}{}", .path.display(), root_hint(.source))]
    Write {
        /// The file.
        path: PathBuf,
        /// What was being written.
        value: String,
        /// Why.
        source: io::Error,
    },
    /// A file that should hold a number does not.
    #[error("{} holds {value:?}, not a number", .path.display())]
    NotANumber {
        /// The file.
        path: PathBuf,
        /// What it holds.
        value: String,
    },
    /// `/proc/meminfo` lacks the hugepage lines.
    #[error(
        "{} has no {field} line: this kernel has no hugetlbfs (CONFIG_HUGETLBFS)",
        .path.display()
    )]
    NoHugepageInfo {
        /// The file read.
        path: PathBuf,
        /// The missing field.
        field: &'static str,
    },
    /// The kernel reserved fewer hugepages than asked for.
    #[error(
        "asked for {requested} hugepages but the kernel reserved only {reserved}: memory is too small or too fragmented; ask for fewer, retry after echo 3 > /proc/sys/vm/drop_caches, or reserve them at boot with hugepages={requested} on the kernel command line"
    )]
    HugepagesShort {
        /// Hugepages asked for.
        requested: u64,
        /// Hugepages the kernel reports after the write.
        reserved: u64,
    },
}

fn root_hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::PermissionDenied {
        " (run as root)"
    } else {
        ""
    }
}

fn driver_or_none(d: &Option<String>) -> &str {
    d.as_deref().unwrap_or("no driver")
}

fn unbind_advice(blockers: &[GroupMember]) -> String {
    let list: Vec<String> = blockers
        .iter()
        .map(|m| format!("{} from {}", m.bdf, driver_or_none(&m.driver)))
        .collect();
    let names: Vec<&str> = blockers.iter().map(|m| m.bdf.as_str()).collect();
    format!(
        "unbind {} (or give it to vfio-pci too: pollux-setup bind {})",
        list.join(" and "),
        names.join(" ")
    )
}

/// A PCI address: domain, bus, device and function (`0000:00:04.0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bdf {
    /// PCI domain (segment); 0 on most machines, 5 hex digits behind Intel VMD.
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device number, 0 to 0x1f.
    pub device: u8,
    /// Function number, 0 to 7.
    pub function: u8,
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl Serialize for Bdf {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Bdf {
    type Err = SetupError;

    /// Parses `dddd:bb:dd.f` or `bb:dd.f` (domain 0), in hex, either case.
    fn from_str(input: &str) -> Result<Self, SetupError> {
        let bad = |reason: String| SetupError::InvalidBdf {
            input: input.to_owned(),
            reason,
        };
        let field = |s: &str, what: &str, digits: usize, max: u32| -> Result<u32, SetupError> {
            if s.is_empty() {
                return Err(bad(format!("the {what} is missing")));
            }
            if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("the {what} {s:?} is not hexadecimal")));
            }
            if s.len() > digits {
                return Err(bad(format!(
                    "the {what} {s:?} has more than {digits} hex digits"
                )));
            }
            let v = u32::from_str_radix(s, 16).expect("at most 8 hex digits");
            if v > max {
                return Err(bad(format!(
                    "the {what} {v:#x} is out of range (0 to {max:#x})"
                )));
            }
            Ok(v)
        };
        let s = input.trim();
        let Some((left, function)) = s.rsplit_once('.') else {
            return Err(bad("there is no '.' before the function".into()));
        };
        let parts: Vec<&str> = left.split(':').collect();
        let (domain, bus, device) = match parts[..] {
            [bus, device] => ("0", bus, device),
            [domain, bus, device] => (domain, bus, device),
            _ => return Err(bad("it needs 1 or 2 ':'".into())),
        };
        Ok(Bdf {
            domain: field(domain, "domain", 8, u32::MAX)?,
            bus: field(bus, "bus", 2, 0xff)? as u8,
            device: field(device, "device", 2, 0x1f)? as u8,
            function: field(function, "function", 1, 7)? as u8,
        })
    }
}

/// Where the root of `/sys`, `/proc` and `/dev` is: the option if given, else the
/// environment variable [`SYSFS_ROOT_ENV`] if set and not empty, else `/`.
pub fn resolve_root(option: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    option
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The hugepage counters of `/proc/meminfo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Hugepages {
    /// `HugePages_Total`: hugepages reserved.
    pub total: u64,
    /// `HugePages_Free`: reserved and not in use.
    pub free: u64,
    /// `Hugepagesize`: the default hugepage size, in kB.
    pub size_kb: u64,
}

impl Hugepages {
    /// Parses the text of `/proc/meminfo`; the error names the missing field.
    pub fn parse_meminfo(text: &str) -> Result<Hugepages, &'static str> {
        let get = |field: &'static str| -> Result<u64, &'static str> {
            text.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == field).then(|| v.split_whitespace().next()?.parse().ok())?
                })
                .ok_or(field)
        };
        Ok(Hugepages {
            total: get("HugePages_Total")?,
            free: get("HugePages_Free")?,
            size_kb: get("Hugepagesize")?,
        })
    }

    /// Reserved memory in MiB.
    pub fn total_mib(&self) -> u64 {
        self.total * self.size_kb / 1024
    }
}

/// An NVMe controller as sysfs shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Controller {
    /// Its PCI address.
    pub bdf: Bdf,
    /// PCI vendor ID, 4 hex digits.
    pub vendor: String,
    /// PCI device ID, 4 hex digits.
    pub device: String,
    /// The driver bound to it, if any.
    pub driver: Option<String>,
    /// Its IOMMU group, if the IOMMU is on.
    pub iommu_group: Option<u32>,
    /// Whether `/dev/vfio/<group>` exists (it does once vfio-pci holds the group).
    pub vfio_dev: bool,
}

/// Another device of an IOMMU group, and its driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    /// Its PCI address, as named in the group's `devices` directory.
    pub bdf: String,
    /// The driver bound to it, if any.
    pub driver: Option<String>,
}

/// Something the userspace driver lacks, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What is missing.
    pub what: String,
    /// What to do.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.fix)
    }
}

/// Everything `pollux-setup status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The NVMe controllers (PCI class 0x010802), by address.
    pub controllers: Vec<Controller>,
    /// Hugepage counters, if `/proc/meminfo` has them.
    pub hugepages: Option<Hugepages>,
    /// How many IOMMU groups the kernel made (0: no IOMMU).
    pub iommu_groups: usize,
    /// Whether the vfio-pci driver is registered.
    pub vfio_pci_loaded: bool,
    /// Whether `/dev/vfio/vfio` exists.
    pub vfio_container: bool,
    /// What the userspace driver still lacks.
    pub problems: Vec<Problem>,
}

/// What [`Sysfs::bind`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BindReport {
    /// The device.
    pub bdf: Bdf,
    /// The driver it had before.
    pub previous: Option<String>,
    /// The driver it has now.
    pub driver: String,
    /// Its IOMMU group, if any.
    pub iommu_group: Option<u32>,
}

/// What [`Sysfs::unbind`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnbindReport {
    /// The device.
    pub bdf: Bdf,
    /// The driver it had before.
    pub previous: Option<String>,
    /// The driver it has now.
    pub driver: Option<String>,
}

fn validate_driver(driver: &str) -> Result<(), SetupError> {
    let ok = !driver.is_empty()
        && driver != "."
        && driver != ".."
        && !driver.contains(|c: char| c == '/' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(SetupError::InvalidDriver(driver.to_owned()))
    }
}

/// Fails unless `reserved` hugepages cover the `requested` ones.
pub fn check_reserved(requested: u64, reserved: u64) -> Result<(), SetupError> {
    if reserved < requested {
        Err(SetupError::HugepagesShort {
            requested,
            reserved,
        })
    } else {
        Ok(())
    }
}

/// The sysfs, procfs and devfs files under a root directory, and every write made to
/// them (in order, for tests and `RUST_LOG=debug`).
#[derive(Debug)]
pub struct Sysfs {
    root: PathBuf,
    modprobe: bool,
    writes: RefCell<Vec<(String, String)>>,
}

impl Sysfs {
    /// The files under `root` (`/` for the real ones). `modprobe` is not run unless
    /// [`Sysfs::with_modprobe`] allows it.
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs {
            root: root.into(),
            modprobe: false,
            writes: RefCell::new(Vec::new()),
        }
    }

    /// Whether a missing driver may be loaded with `modprobe` (only sensible when the
    /// root is `/`).
    pub fn with_modprobe(mut self, allowed: bool) -> Sysfs {
        self.modprobe = allowed;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The writes made so far, in order: (path as seen from the root, value).
    pub fn writes(&self) -> Vec<(String, String)> {
        self.writes.borrow().clone()
    }

    fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    fn read(&self, abs: &str) -> Result<String, SetupError> {
        let path = self.path(abs);
        std::fs::read_to_string(&path).map_err(|source| SetupError::Read { path, source })
    }

    fn read_trimmed(&self, abs: &str) -> Option<String> {
        self.read(abs).ok().map(|s| s.trim().to_owned())
    }

    fn read_u64(&self, abs: &str) -> Result<u64, SetupError> {
        let text = self.read(abs)?;
        text.trim().parse().map_err(|_| SetupError::NotANumber {
            path: self.path(abs),
            value: text,
        })
    }

    fn read_hex(&self, abs: &str) -> Option<u32> {
        let s = self.read_trimmed(abs)?;
        u32::from_str_radix(s.trim_start_matches("0x"), 16).ok()
    }

    /// Writes `value` to an existing file in one `write`, as sysfs wants.
    fn write(&self, abs: &str, value: &str) -> Result<(), SetupError> {
        tracing::debug!("echo {value:?} > {abs}");
        self.writes
            .borrow_mut()
            .push((abs.to_owned(), value.to_owned()));
        let path = self.path(abs);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|source| SetupError::Write {
                path,
                value: value.to_owned(),
                source,
            })
    }

    fn link_name(&self, abs: &str) -> Option<String> {
        let target = std::fs::read_link(self.path(abs)).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }

    fn dir_names(&self, abs: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(abs))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn driver_of(&self, name: &str) -> Option<String> {
        self.link_name(&format!("{PCI_DEVICES}/{name}/driver"))
    }

    fn class_of(&self, name: &str) -> Option<u32> {
        self.read_hex(&format!("{PCI_DEVICES}/{name}/class"))
    }

    /// Fails with [`SetupError::NoDevice`] unless the device exists.
    pub fn check_device(&self, bdf: Bdf) -> Result<(), SetupError> {
        if self.exists(&format!("{PCI_DEVICES}/{bdf}")) {
            Ok(())
        } else {
            Err(SetupError::NoDevice(bdf))
        }
    }

    /// The driver bound to a device, if any.
    pub fn driver(&self, bdf: Bdf) -> Option<String> {
        self.driver_of(&bdf.to_string())
    }

    /// A device's IOMMU group, if it has one.
    pub fn iommu_group(&self, bdf: Bdf) -> Option<u32> {
        self.link_name(&format!("{PCI_DEVICES}/{bdf}/iommu_group"))?
            .parse()
            .ok()
    }

    /// Whether a PCI driver is registered (`/sys/bus/pci/drivers/<driver>` exists).
    pub fn driver_loaded(&self, driver: &str) -> bool {
        validate_driver(driver).is_ok() && self.exists(&format!("{PCI_DRIVERS}/{driver}"))
    }

    /// Makes sure a driver is registered, running `modprobe` if allowed; fails with
    /// [`SetupError::DriverNotLoaded`] otherwise.
    pub fn ensure_driver(&self, driver: &str) -> Result<(), SetupError> {
        validate_driver(driver)?;
        if self.driver_loaded(driver) {
            return Ok(());
        }
        if self.modprobe {
            tracing::info!("modprobe {driver}");
            match std::process::Command::new("modprobe").arg(driver).status() {
                Ok(s) if s.success() => {}
                Ok(s) => tracing::warn!("modprobe {driver} failed: {s}"),
                Err(e) => tracing::warn!("cannot run modprobe: {e}"),
            }
            if self.driver_loaded(driver) {
                return Ok(());
            }
        }
        Err(SetupError::DriverNotLoaded {
            driver: driver.to_owned(),
        })
    }

    /// Number of IOMMU groups (0 when the IOMMU is off).
    pub fn iommu_group_count(&self) -> usize {
        self.dir_names(IOMMU_GROUPS).len()
    }

    fn noiommu_mode(&self) -> bool {
        self.read_trimmed(NOIOMMU_MODE).as_deref() == Some("Y")
    }

    /// The devices of an IOMMU group, with their drivers.
    pub fn group_members(&self, group: u32) -> Vec<GroupMember> {
        self.dir_names(&format!("{IOMMU_GROUPS}/{group}/devices"))
            .into_iter()
            .map(|bdf| GroupMember {
                driver: self.driver_of(&bdf),
                bdf,
            })
            .collect()
    }

    /// Checks that VFIO can use an IOMMU group: every device in it is bound to vfio-pci
    /// (or pci-stub), to no driver, or is a PCI bridge; fails with
    /// [`SetupError::NotViable`] naming the others.
    pub fn check_viable(&self, group: u32) -> Result<(), SetupError> {
        let blockers: Vec<GroupMember> = self
            .group_members(group)
            .into_iter()
            .filter(|m| match &m.driver {
                None => false,
                Some(d) if VFIO_COMPATIBLE.contains(&d.as_str()) => false,
                Some(_) => self.class_of(&m.bdf).map(|c| c >> 8) != Some(BRIDGE_CLASS),
            })
            .collect();
        if blockers.is_empty() {
            Ok(())
        } else {
            Err(SetupError::NotViable { group, blockers })
        }
    }

    /// Binds a device to `driver`: writes the driver's name to its `driver_override`,
    /// unbinds it from its current driver, writes its address to `drivers_probe` and
    /// checks that `driver` took it. For vfio-pci the device needs an IOMMU group
    /// (unless vfio is in no-IOMMU mode). The group's viability is left to
    /// [`Sysfs::check_viable`], once every device asked for is bound.
    pub fn bind(&self, bdf: Bdf, driver: &str) -> Result<BindReport, SetupError> {
        validate_driver(driver)?;
        self.check_device(bdf)?;
        self.ensure_driver(driver)?;
        if driver == VFIO_PCI && self.iommu_group(bdf).is_none() && !self.noiommu_mode() {
            return Err(SetupError::NoIommuGroup { bdf });
        }
        let dev = format!("{PCI_DEVICES}/{bdf}");
        let name = bdf.to_string();
        let previous = self.driver_of(&name);
        self.write(&format!("{dev}/driver_override"), driver)?;
        if previous.as_deref() != Some(driver) {
            if previous.is_some() {
                self.write(&format!("{dev}/driver/unbind"), &name)?;
            }
            self.write(DRIVERS_PROBE, &name)?;
            let actual = self.driver_of(&name);
            if actual.as_deref() != Some(driver) {
                return Err(SetupError::BindFailed {
                    bdf,
                    driver: driver.to_owned(),
                    actual,
                });
            }
        }
        Ok(BindReport {
            bdf,
            previous,
            driver: driver.to_owned(),
            iommu_group: self.iommu_group(bdf),
        })
    }

    /// Gives a device back to its kernel driver: clears its `driver_override`, unbinds it
    /// from a userspace driver (vfio-pci and the like, or whatever the override named)
    /// and writes its address to `drivers_probe`. A device already on a kernel driver
    /// only loses its override.
    pub fn unbind(&self, bdf: Bdf) -> Result<UnbindReport, SetupError> {
        self.check_device(bdf)?;
        let dev = format!("{PCI_DEVICES}/{bdf}");
        let name = bdf.to_string();
        let previous = self.driver_of(&name);
        let overridden = self
            .read_trimmed(&format!("{dev}/driver_override"))
            .filter(|o| !o.is_empty() && o != "(null)");
        self.write(&format!("{dev}/driver_override"), "\n")?;
        let userspace = previous
            .as_deref()
            .is_some_and(|d| USERSPACE_DRIVERS.contains(&d) || overridden.as_deref() == Some(d));
        if userspace {
            self.write(&format!("{dev}/driver/unbind"), &name)?;
        }
        if userspace || previous.is_none() {
            self.write(DRIVERS_PROBE, &name)?;
        }
        let driver = self.driver_of(&name);
        if userspace && driver == previous {
            let vendor = self.read_hex(&format!("{dev}/vendor")).unwrap_or(0);
            let device = self.read_hex(&format!("{dev}/device")).unwrap_or(0);
            return Err(SetupError::StillBound {
                bdf,
                driver: driver.unwrap_or_default(),
                id: format!("{vendor:04x} {device:04x}"),
            });
        }
        Ok(UnbindReport {
            bdf,
            previous,
            driver,
        })
    }

    /// The hugepage counters of `/proc/meminfo`.
    pub fn hugepages(&self) -> Result<Hugepages, SetupError> {
        Hugepages::parse_meminfo(&self.read(MEMINFO)?).map_err(|field| SetupError::NoHugepageInfo {
            path: self.path(MEMINFO),
            field,
        })
    }

    /// Writes `n` to `/proc/sys/vm/nr_hugepages` and returns what the kernel reserved
    /// (read back); fails with [`SetupError::HugepagesShort`] if fewer than `n`.
    pub fn set_hugepages(&self, n: u64) -> Result<u64, SetupError> {
        self.write(NR_HUGEPAGES, &n.to_string())?;
        let reserved = self.read_u64(NR_HUGEPAGES)?;
        check_reserved(n, reserved)?;
        Ok(reserved)
    }

    /// The NVMe controllers (PCI class 0x010802), by address.
    pub fn nvme_controllers(&self) -> Vec<Controller> {
        self.dir_names(PCI_DEVICES)
            .into_iter()
            .filter(|name| self.class_of(name) == Some(NVME_CLASS))
            .filter_map(|name| {
                let bdf: Bdf = name.parse().ok()?;
                let id = |f: &str| {
                    self.read_trimmed(&format!("{PCI_DEVICES}/{name}/{f}"))
                        .map(|s| s.trim_start_matches("0x").to_owned())
                        .unwrap_or_else(|| "?".into())
                };
                let iommu_group = self.iommu_group(bdf);
                Some(Controller {
                    bdf,
                    vendor: id("vendor"),
                    device: id("device"),
                    driver: self.driver_of(&name),
                    iommu_group,
                    vfio_dev: iommu_group.is_some_and(|g| self.exists(&format!("/dev/vfio/{g}"))),
                })
            })
            .collect()
    }

    /// Controllers, hugepages, and what the userspace driver still lacks.
    pub fn status(&self) -> Status {
        let controllers = self.nvme_controllers();
        let hugepages = self.hugepages();
        let iommu_groups = self.iommu_group_count();
        let vfio_pci_loaded = self.driver_loaded(VFIO_PCI);
        let vfio_container = self.exists(VFIO_CONTAINER);
        let mut problems = Vec::new();
        let mut problem = |what: String, fix: String| problems.push(Problem { what, fix });
        if iommu_groups == 0 {
            problem(
                format!("no IOMMU: {IOMMU_GROUPS} is empty"),
                "boot with intel_iommu=on (or amd_iommu=on)".into(),
            );
        }
        if !vfio_pci_loaded {
            problem("vfio-pci is not loaded".into(), "modprobe vfio-pci".into());
        }
        if !vfio_container {
            problem(
                format!("{VFIO_CONTAINER} is missing"),
                "modprobe vfio-pci (it loads vfio, which creates it)".into(),
            );
        }
        match &hugepages {
            Err(e) => problem("no hugepage information".into(), e.to_string()),
            Ok(h) if h.total == 0 => problem(
                "no hugepages reserved (HugePages_Total is 0)".into(),
                "pollux-setup hugepages 1024".into(),
            ),
            Ok(h) if h.free == 0 => problem(
                format!("all {} hugepages are in use", h.total),
                format!(
                    "stop their users or reserve more: pollux-setup hugepages {}",
                    h.total * 2
                ),
            ),
            Ok(_) => {}
        }
        let on_vfio: Vec<&Controller> = controllers
            .iter()
            .filter(|c| c.driver.as_deref() == Some(VFIO_PCI))
            .collect();
        if controllers.is_empty() {
            problem(
                format!("no NVMe controller (PCI class {NVME_CLASS:#08x})"),
                "add one (lspci -d ::0108 lists them)".into(),
            );
        } else if on_vfio.is_empty() {
            let candidates: Vec<String> = controllers
                .iter()
                .map(|c| format!("{} ({})", c.bdf, driver_or_none(&c.driver)))
                .collect();
            problem(
                "no NVMe controller is bound to vfio-pci".into(),
                format!(
                    "pollux-setup bind <BDF>, with one of {} whose disk is not in use",
                    candidates.join(", ")
                ),
            );
        }
        let mut groups_checked = Vec::new();
        for c in on_vfio {
            let Some(g) = c.iommu_group else { continue };
            if !c.vfio_dev {
                problem(
                    format!("/dev/vfio/{g} is missing (IOMMU group of {})", c.bdf),
                    "check that udev or devtmpfs created it: ls -l /dev/vfio".into(),
                );
            }
            if groups_checked.contains(&g) {
                continue;
            }
            groups_checked.push(g);
            if let Err(SetupError::NotViable { group, blockers }) = self.check_viable(g) {
                problem(
                    format!("VFIO group {group} is not viable"),
                    unbind_advice(&blockers),
                );
            }
        }
        Status {
            controllers,
            hugepages: hugepages.ok(),
            iommu_groups,
            vfio_pci_loaded,
            vfio_container,
            problems,
        }
    }
}

impl fmt::Display for Status {
    /// The human-readable report of `pollux-setup status`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.controllers.is_empty() {
            writeln!(f, "NVMe controllers: none")?;
        } else {
            writeln!(f, "NVMe controllers:")?;
            writeln!(
                f,
                "  {:<14} {:<11} {:<16} {:<11} /dev/vfio/<group>",
                "BDF", "Vendor:Dev", "Driver", "IOMMU group"
            )?;
            for c in &self.controllers {
                let group = c.iommu_group.map_or_else(|| "-".into(), |g| g.to_string());
                let node = match c.iommu_group {
                    None => "-",
                    Some(_) if c.vfio_dev => "yes",
                    Some(_) => "no",
                };
                writeln!(
                    f,
                    "  {:<14} {:<11} {:<16} {:<11} {node}",
                    c.bdf.to_string(),
                    format!("{}:{}", c.vendor, c.device),
                    driver_or_none(&c.driver),
                    group,
                )?;
            }
        }
        match &self.hugepages {
            Some(h) => writeln!(
                f,
                "Hugepages: {} total, {} free, {} kB each ({} MiB reserved)",
                h.total,
                h.free,
                h.size_kb,
                h.total_mib()
            )?,
            None => writeln!(f, "Hugepages: unknown")?,
        }
        writeln!(
            f,
            "IOMMU groups: {}; vfio-pci {}; {VFIO_CONTAINER} {}",
            self.iommu_groups,
            if self.vfio_pci_loaded {
                "loaded"
            } else {
                "not loaded"
            },
            if self.vfio_container {
                "present"
            } else {
                "missing"
            },
        )?;
        if self.problems.is_empty() {
            writeln!(f, "Ready: nothing is missing for the userspace driver.")
        } else {
            writeln!(f, "Missing for the userspace driver:")?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;
    use tempfile::TempDir;

    /// A fake root with sysfs, procfs and devfs files; nothing in it reacts to writes.
    struct Fake {
        dir: TempDir,
    }

    impl Fake {
        fn new() -> Fake {
            let dir = tempfile::tempdir().unwrap();
            let f = Fake { dir };
            for d in [
                PCI_DEVICES,
                PCI_DRIVERS,
                IOMMU_GROUPS,
                "/proc/sys/vm",
                "/dev/vfio",
            ] {
                fs::create_dir_all(f.p(d)).unwrap();
            }
            f.file(DRIVERS_PROBE, "");
            f.file(NR_HUGEPAGES, "0\n");
            f.file(
                MEMINFO,
                "MemTotal:       16318416 kB\nHugePages_Total:     512\nHugePages_Free:      500\nHugePages_Rsvd:        0\nHugepagesize:       2048 kB\n",
            );
            f
        }

        fn p(&self, abs: &str) -> PathBuf {
            self.dir.path().join(abs.trim_start_matches('/'))
        }

        fn file(&self, abs: &str, text: &str) {
            let p = self.p(abs);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }

        fn read(&self, abs: &str) -> String {
            fs::read_to_string(self.p(abs)).unwrap()
        }

        fn driver(&self, name: &str) {
            fs::create_dir_all(self.p(&format!("{PCI_DRIVERS}/{name}"))).unwrap();
            for f in ["bind", "unbind", "new_id", "remove_id"] {
                self.file(&format!("{PCI_DRIVERS}/{name}/{f}"), "");
            }
        }

        fn device(&self, bdf: &str, class: u32, driver: Option<&str>, group: Option<u32>) {
            let dev = format!("{PCI_DEVICES}/{bdf}");
            self.file(&format!("{dev}/class"), &format!("{class:#08x}\n"));
            self.file(&format!("{dev}/vendor"), "0x8086\n");
            self.file(&format!("{dev}/device"), "0x0953\n");
            self.file(&format!("{dev}/driver_override"), "(null)\n");
            if let Some(d) = driver {
                self.driver(d);
                symlink(
                    self.p(&format!("{PCI_DRIVERS}/{d}")),
                    self.p(&format!("{dev}/driver")),
                )
                .unwrap();
            }
            if let Some(g) = group {
                let gdir = format!("{IOMMU_GROUPS}/{g}");
                fs::create_dir_all(self.p(&format!("{gdir}/devices"))).unwrap();
                symlink(self.p(&dev), self.p(&format!("{gdir}/devices/{bdf}"))).unwrap();
                symlink(self.p(&gdir), self.p(&format!("{dev}/iommu_group"))).unwrap();
            }
        }

        fn sysfs(&self) -> Sysfs {
            Sysfs::new(self.dir.path())
        }
    }

    fn bdf(s: &str) -> Bdf {
        s.parse().unwrap()
    }

    #[test]
    fn bdf_parsing() {
        let b = bdf("00:04.0");
        assert_eq!(
            b,
            Bdf {
                domain: 0,
                bus: 0,
                device: 4,
                function: 0
            }
        );
        assert_eq!(b.to_string(), "0000:00:04.0");
        assert_eq!(bdf("0000:3B:1f.7").to_string(), "0000:3b:1f.7");
        assert_eq!(bdf(" 10000:e1:00.0 ").to_string(), "10000:e1:00.0");
        for (input, reason) in [
            ("00:04", "no '.'"),
            ("04.0", "1 or 2 ':'"),
            ("0:0:0:0.0", "1 or 2 ':'"),
            ("00:4g.0", "\"4g\" is not hexadecimal"),
            ("00:+4.0", "not hexadecimal"),
            ("00:20.0", "device 0x20 is out of range (0 to 0x1f)"),
            ("00:04.8", "function 0x8 is out of range"),
            ("100:04.0", "bus \"100\" has more than 2 hex digits"),
            (":04.0", "the bus is missing"),
            ("00:04.", "the function is missing"),
        ] {
            let e = input.parse::<Bdf>().unwrap_err().to_string();
            assert!(e.contains(reason), "{input}: {e}");
            assert!(e.contains("e.g. 0000:00:04.0"), "{e}");
        }
    }

    #[test]
    fn root_resolution() {
        assert_eq!(resolve_root(None, None), PathBuf::from("/"));
        assert_eq!(resolve_root(None, Some("".into())), PathBuf::from("/"));
        assert_eq!(resolve_root(None, Some("/t".into())), PathBuf::from("/t"));
        assert_eq!(
            resolve_root(Some("/o".into()), Some("/t".into())),
            PathBuf::from("/o")
        );
    }

    #[test]
    fn listing() {
        let f = Fake::new();
        f.device("0000:00:05.0", NVME_CLASS, Some("nvme"), Some(5));
        f.device("0000:00:04.0", NVME_CLASS, Some("vfio-pci"), Some(4));
        f.device("0000:00:06.0", NVME_CLASS, None, None);
        f.device("0000:00:01.0", 0x02_00_00, Some("e1000"), Some(1));
        f.file("/dev/vfio/4", "");
        f.file(VFIO_CONTAINER, "");
        let st = f.sysfs().status();
        let got: Vec<(String, Option<&str>, Option<u32>, bool)> = st
            .controllers
            .iter()
            .map(|c| {
                (
                    c.bdf.to_string(),
                    c.driver.as_deref(),
                    c.iommu_group,
                    c.vfio_dev,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("0000:00:04.0".into(), Some("vfio-pci"), Some(4), true),
                ("0000:00:05.0".into(), Some("nvme"), Some(5), false),
                ("0000:00:06.0".into(), None, None, false),
            ]
        );
        assert_eq!(st.controllers[0].vendor, "8086");
        assert_eq!(st.controllers[0].device, "0953");
        assert_eq!(
            st.hugepages,
            Some(Hugepages {
                total: 512,
                free: 500,
                size_kb: 2048
            })
        );
        assert_eq!(st.iommu_groups, 3);
        assert!(st.vfio_pci_loaded && st.vfio_container);
        assert!(st.problems.is_empty(), "{:?}", st.problems);
        let text = st.to_string();
        assert!(text.contains("0000:00:05.0"), "{text}");
        assert!(text.contains("8086:0953"), "{text}");
        assert!(text.contains("1024 MiB reserved"), "{text}");
        assert!(text.contains("Ready"), "{text}");
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["controllers"][0]["bdf"], "0000:00:04.0");
        assert_eq!(json["controllers"][1]["driver"], "nvme");
        assert_eq!(json["hugepages"]["size_kb"], 2048);
    }

    #[test]
    fn status_problems() {
        let f = Fake::new();
        f.device("0000:00:04.0", NVME_CLASS, Some("nvme"), None);
        f.file(
            MEMINFO,
            "HugePages_Total: 0\nHugePages_Free: 0\nHugepagesize: 2048 kB\n",
        );
        let st = f.sysfs().status();
        let text: Vec<String> = st.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text[0],
            "no IOMMU: /sys/kernel/iommu_groups is empty: boot with intel_iommu=on (or amd_iommu=on)"
        );
        assert_eq!(text[1], "vfio-pci is not loaded: modprobe vfio-pci");
        assert!(
            text[2].starts_with("/dev/vfio/vfio is missing: "),
            "{text:?}"
        );
        assert!(text[3].contains("pollux-setup hugepages 1024"), "{text:?}");
        assert!(text[4].contains("0000:00:04.0 (nvme)"), "{text:?}");
        assert_eq!(text.len(), 5);
        assert!(st.to_string().contains("Missing for the userspace driver"));
    }

    #[test]
    fn status_reports_a_group_that_is_not_viable() {
        let f = Fake::new();
        f.device("0000:00:04.0", NVME_CLASS, Some("vfio-pci"), Some(7));
        f.device("0000:00:04.1", 0x01_06_01, Some("ahci"), None);
        symlink(
            f.p(&format!("{PCI_DEVICES}/0000:00:04.1")),
            f.p(&format!("{IOMMU_GROUPS}/7/devices/0000:00:04.1")),
        )
        .unwrap();
        f.file(VFIO_CONTAINER, "");
        let st = f.sysfs().status();
        let text: Vec<String> = st.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with("/dev/vfio/7 is missing"), "{text:?}");
        assert!(
            text[1].starts_with("VFIO group 7 is not viable: unbind 0000:00:04.1 from ahci"),
            "{text:?}"
        );
    }

    /// Puts `bdf` (already created) into IOMMU group `g` as well.
    fn join_group(f: &Fake, bdf: &str, g: u32) {
        let gdir = format!("{IOMMU_GROUPS}/{g}");
        fs::create_dir_all(f.p(&format!("{gdir}/devices"))).unwrap();
        symlink(
            f.p(&format!("{PCI_DEVICES}/{bdf}")),
            f.p(&format!("{gdir}/devices/{bdf}")),
        )
        .unwrap();
        symlink(f.p(&gdir), f.p(&format!("{PCI_DEVICES}/{bdf}/iommu_group"))).unwrap();
    }

    #[test]
    fn viability() {
        let f = Fake::new();
        f.device("0000:00:04.0", NVME_CLASS, Some("vfio-pci"), Some(5));
        f.device("0000:00:03.0", 0x06_04_00, Some("pcieport"), None);
        f.device("0000:00:04.1", NVME_CLASS, None, None);
        f.device("0000:00:04.2", NVME_CLASS, Some("pci-stub"), None);
        for d in ["0000:00:03.0", "0000:00:04.1", "0000:00:04.2"] {
            join_group(&f, d, 5);
        }
        let s = f.sysfs();
        s.check_viable(5).unwrap();
        assert_eq!(s.group_members(5).len(), 4);

        f.device("0000:00:05.0", NVME_CLASS, Some("nvme"), None);
        join_group(&f, "0000:00:05.0", 5);
        let e = s.check_viable(5).unwrap_err().to_string();
        assert_eq!(
            e,
            "VFIO group 5 is not viable: unbind 0000:00:05.0 from nvme (or give it to vfio-pci too: pollux-setup bind 0000:00:05.0)"
        );

        f.device("0000:00:05.1", 0x0c_03_30, Some("xhci_hcd"), None);
        join_group(&f, "0000:00:05.1", 5);
        let e = s.check_viable(5).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "VFIO group 5 is not viable: unbind 0000:00:05.0 from nvme and 0000:00:05.1 from xhci_hcd"
            ),
            "{e}"
        );
        assert!(
            e.ends_with("pollux-setup bind 0000:00:05.0 0000:00:05.1)"),
            "{e}"
        );
        // A group with no devices directory has nothing in the way.
        s.check_viable(99).unwrap();
    }

    #[test]
    fn bind_sequence() {
        let f = Fake::new();
        f.device("0000:00:04.0", NVME_CLASS, Some("nvme"), Some(5));
        f.driver(VFIO_PCI);
        let s = f.sysfs();
        let e = s.bind(bdf("00:04.0"), VFIO_PCI).unwrap_err();
        // Nothing in the fake tree reacts to the writes, so the device stays on nvme.
        assert_eq!(
            e.to_string(),
            "0000:00:04.0 is bound to nvme instead of vfio-pci after drivers_probe: dmesg tells why vfio-pci did not take it"
        );
        let dev = "/sys/bus/pci/devices/0000:00:04.0";
        assert_eq!(
            s.writes(),
            [
                (format!("{dev}/driver_override"), "vfio-pci".into()),
                (format!("{dev}/driver/unbind"), "0000:00:04.0".into()),
                (DRIVERS_PROBE.into(), "0000:00:04.0".into()),
            ]
        );
        assert_eq!(f.read(&format!("{dev}/driver_override")), "vfio-pci");
        assert_eq!(f.read("/sys/bus/pci/drivers/nvme/unbind"), "0000:00:04.0");
        assert_eq!(f.read(DRIVERS_PROBE), "0000:00:04.0");
    }

    #[test]
    fn bind_without_a_driver_skips_unbind() {
        let f = Fake::new();
        f.device("0000:00:04.0", NVME_CLASS, None, Some(5));
        f.driver(VFIO_PCI);
        let s = f.sysfs();
        let e = s.bind(bdf("00:04.0"), VFIO_PCI).unwrap_err();
        assert!(
            e.to_string()
                .contains("bound to no driver instead of vfio-pci")
        );
        let files: Vec<String> = s.writes().into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            files,
            [
                "/sys/bus/pci/devices/0000:00:04.0/driver_override",
                DRIVERS_PROBE
            ]
        );
    }

    #[test]
    fn bind_when_already_bound() {
        let f = Fake::new();
        f.device("0000:00:04.0", NVME_CLASS, Some(VFIO_PCI), Some(5));
        let s = f.sysfs();
        let r = s.bind(bdf("0000:00:04.0"), VFIO_PCI).unwrap();
        assert_eq!(r.previous.as_deref(), Some(VFIO_PCI));
        assert_eq!(r.iommu_group, Some(5));
        assert_eq!(
            s.writes().len(),
            1,
            "only driver_override: {:?}",
            s.writes()
        );
    }

    #[test]
    fn bind_refusals() {
        let f = Fake::new();
        f.device("0000:00:04.0", NVME_CLASS, Some("nvme"), None);
        let s = f.sysfs();
        assert_eq!(
            s.bind(bdf("00:09.0"), VFIO_PCI).unwrap_err().to_string(),
            "no PCI device 0000:00:09.0 (ls /sys/bus/pci/devices)"
        );
        assert_eq!(
            s.bind(bdf("00:04.0"), VFIO_PCI).unwrap_err().to_string(),
            "vfio-pci is not loaded: modprobe vfio-pci"
        );
        f.driver(VFIO_PCI);
        let e = s.bind(bdf("00:04.0"), VFIO_PCI).unwrap_err().to_string();
        assert!(e.starts_with("0000:00:04.0 has no IOMMU group"), "{e}");
        assert!(e.contains("intel_iommu=on"), "{e}");
        assert!(matches!(
            s.bind(bdf("00:04.0"), "../x"),
            Err(SetupError::InvalidDriver(_))
        ));
        assert!(s.writes().is_empty());
        // No-IOMMU mode lets vfio-pci take a device without a group.
        f.file(NOIOMMU_MODE, "Y\n");
        assert!(matches!(
            s.bind(bdf("00:04.0"), VFIO_PCI),
            Err(SetupError::BindFailed { .. })
        ));
    }

    #[test]
    fn unbind_sequence() {
        let f = Fake::new();
        f.device("0000:00:04.0", NVME_CLASS, Some(VFIO_PCI), Some(5));
        let dev = "/sys/bus/pci/devices/0000:00:04.0";
        f.file(&format!("{dev}/driver_override"), "vfio-pci\n");
        let s = f.sysfs();
        let e = s.unbind(bdf("00:04.0")).unwrap_err().to_string();
        // The fake device stays on vfio-pci.
        assert!(
            e.starts_with("0000:00:04.0 is still bound to vfio-pci after drivers_probe"),
            "{e}"
        );
        assert!(e.contains("echo 8086 0953 > /sys/bus/pci/drivers/vfio-pci/remove_id"));
        assert_eq!(
            s.writes(),
            [
                (format!("{dev}/driver_override"), "\n".into()),
                (format!("{dev}/driver/unbind"), "0000:00:04.0".into()),
                (DRIVERS_PROBE.into(), "0000:00:04.0".into()),
            ]
        );
        assert_eq!(f.read(&format!("{dev}/driver_override")), "\n");
        assert_eq!(
            f.read("/sys/bus/pci/drivers/vfio-pci/unbind"),
            "0000:00:04.0"
        );
    }

    #[test]
    fn unbind_without_a_driver_reprobes() {
        let f = Fake::new();
        f.device("0000:00:04.0", NVME_CLASS, None, Some(5));
        let s = f.sysfs();
        let r = s.unbind(bdf("00:04.0")).unwrap();
        assert_eq!((r.previous, r.driver), (None, None));
        let files: Vec<String> = s.writes().into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            files,
            [
                "/sys/bus/pci/devices/0000:00:04.0/driver_override",
                DRIVERS_PROBE
            ]
        );
    }

    #[test]
    fn unbind_leaves_a_kernel_driver_alone() {
        let f = Fake::new();
        f.device("0000:00:04.0", NVME_CLASS, Some("nvme"), Some(5));
        let s = f.sysfs();
        let r = s.unbind(bdf("00:04.0")).unwrap();
        assert_eq!(r.driver.as_deref(), Some("nvme"));
        assert_eq!(s.writes().len(), 1);
    }

    #[test]
    fn hugepages_read_back() {
        let f = Fake::new();
        let s = f.sysfs();
        assert_eq!(s.set_hugepages(1024).unwrap(), 1024);
        assert_eq!(f.read(NR_HUGEPAGES), "1024");
        assert_eq!(s.writes(), [(NR_HUGEPAGES.into(), "1024".into())]);
        assert_eq!(s.hugepages().unwrap().total_mib(), 1024);
        assert_eq!(
            check_reserved(1024, 700).unwrap_err().to_string(),
            "asked for 1024 hugepages but the kernel reserved only 700: memory is too small or too fragmented; ask for fewer, retry after echo 3 > /proc/sys/vm/drop_caches, or reserve them at boot with hugepages=1024 on the kernel command line"
        );
        check_reserved(0, 3).unwrap();
    }

    #[test]
    fn hugepage_errors() {
        let f = Fake::new();
        f.file(MEMINFO, "MemTotal: 1 kB\n");
        let s = f.sysfs();
        let e = s.hugepages().unwrap_err().to_string();
        assert!(
            e.ends_with(
                "has no HugePages_Total line: this kernel has no hugetlbfs (CONFIG_HUGETLBFS)"
            ),
            "{e}"
        );
        fs::remove_file(f.p(NR_HUGEPAGES)).unwrap();
        let e = s.set_hugepages(8).unwrap_err().to_string();
        assert!(e.starts_with("cannot write \"8\" to "), "{e}");
    }
}
