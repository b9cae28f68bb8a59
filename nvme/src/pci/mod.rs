//! PCIe functions through VFIO: container, group and device (type1 IOMMU), regions,
//! BAR mapping with bounds-checked volatile MMIO, bus mastering, and DMA mappings at
//! IOVAs this module chooses.
//!
//! The controller code ([`crate::ctrlr`], [`crate::qpair`], [`crate::cmb`]) reaches the
//! hardware only through the [`Device`] trait: [`VfioDevice`] is the real one (every
//! system call it makes is in [`sys`]), and [`twin`] is an emulated controller for unit
//! tests, so bring-up, queues and PRP lists are tested on any machine.
//!
//! # Addresses
//!
//! An [`NvmeAddr`] is an address as *one* controller sees it: an IOVA in its VFIO
//! container, or an address inside its own CMB. It is never the CPU's virtual address,
//! and it is a different type from every other device's address.

pub mod sys;
pub mod twin;

use std::fmt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What went wrong with a PCIe controller; each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The machine is not set up for the userspace driver.
    #[error("{0}")]
    Setup(String),
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The controller did not do what the spec says in time.
    #[error("controller {ctrlr}: {what} (CSTS {csts:#x}); the controller may need a reset")]
    Timeout {
        /// The controller (BDF).
        ctrlr: String,
        /// What was awaited.
        what: String,
        /// CSTS when giving up.
        csts: u32,
    },
    /// The controller reported a fatal status (CSTS.CFS).
    #[error("controller {ctrlr}: controller fatal status (CSTS.CFS) during {what}")]
    Fatal {
        /// The controller.
        ctrlr: String,
        /// What was being done.
        what: String,
    },
    /// An admin command failed.
    #[error("{what} failed: {}", crate::fabrics::describe(*status))]
    Command {
        /// The command.
        what: String,
        /// Its status.
        status: crate::spec::cmd::Status,
    },
    /// The controller lacks something the driver needs.
    #[error("controller {ctrlr}: {what}")]
    Unsupported {
        /// The controller.
        ctrlr: String,
        /// What is missing.
        what: String,
    },
    /// A value given by the caller is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// An address as one NVMe controller sees it: an IOVA in its VFIO container, or an
/// address inside its CMB. See the module documentation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NvmeAddr(u64);

impl NvmeAddr {
    /// Only this crate makes them: from a DMA mapping or from the CMB.
    pub(crate) const fn new(a: u64) -> Self {
        NvmeAddr(a)
    }

    /// The value written into PRPs and SGLs.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The address `n` bytes further.
    pub fn offset(self, n: u64) -> NvmeAddr {
        NvmeAddr(self.0 + n)
    }
}

impl fmt::Debug for NvmeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NvmeAddr({:#x})", self.0)
    }
}

/// A mapped MMIO or memory range (a BAR, the twin's stand-in for one): CPU pointer and
/// length, accessed with volatile, bounds-checked operations.
pub struct Mmio {
    ptr: *mut u8,
    len: usize,
    _keep: Box<dyn Send + Sync>,
}

// SAFETY: MMIO is reachable from any thread; accesses are volatile and bounds-checked.
unsafe impl Send for Mmio {}
// SAFETY: as above.
unsafe impl Sync for Mmio {}

impl fmt::Debug for Mmio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mmio")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .finish()
    }
}

impl Mmio {
    /// A range at `ptr` of `len` bytes, kept mapped by `keep`.
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped, readable and writable while `keep` lives.
    pub unsafe fn new(ptr: *mut u8, len: usize, keep: Box<dyn Send + Sync>) -> Mmio {
        Mmio {
            ptr,
            len,
            _keep: keep,
        }
    }

    fn check(&self, off: usize, n: usize) -> *mut u8 {
        assert!(
            off.checked_add(n).is_some_and(|e| e <= self.len) && off % n == 0,
            "MMIO access of {n} bytes at {off:#x} outside a {:#x}-byte region or unaligned",
            self.len
        );
        // SAFETY: in bounds (asserted).
        unsafe { self.ptr.add(off) }
    }

    /// Reads a 32-bit register.
    pub fn read32(&self, off: usize) -> u32 {
        // SAFETY: in bounds and aligned (checked); MMIO wants volatile.
        unsafe { std::ptr::read_volatile(self.check(off, 4) as *const u32) }
    }

    /// Writes a 32-bit register.
    pub fn write32(&self, off: usize, v: u32) {
        // SAFETY: in bounds and aligned (checked); MMIO wants volatile.
        unsafe { std::ptr::write_volatile(self.check(off, 4) as *mut u32, v) }
    }

    /// Reads a 64-bit register (as two 32-bit reads, low first, which every controller
    /// accepts).
    pub fn read64(&self, off: usize) -> u64 {
        self.read32(off) as u64 | (self.read32(off + 4) as u64) << 32
    }

    /// Writes a 64-bit register (low then high).
    pub fn write64(&self, off: usize, v: u64) {
        self.write32(off, v as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }

    /// The CPU pointer of byte `off` (for memory-like regions such as the CMB).
    pub fn ptr_at(&self, off: usize, n: usize) -> *mut u8 {
        assert!(
            off.checked_add(n).is_some_and(|e| e <= self.len),
            "{n} bytes at {off:#x} outside a {:#x}-byte region",
            self.len
        );
        // SAFETY: in bounds (asserted).
        unsafe { self.ptr.add(off) }
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Register and DMA access to one PCIe function: [`VfioDevice`], or [`twin::Twin`] in
/// unit tests.
pub trait Device: Send + Sync + 'static {
    /// Its PCI address (BDF), for messages.
    fn name(&self) -> &str;
    /// Reads the 32-bit controller register at `off` in BAR0.
    fn read32(&self, off: u32) -> u32;
    /// Writes the 32-bit controller register at `off` in BAR0.
    fn write32(&self, off: u32, v: u32);
    /// Reads a 64-bit register (two 32-bit reads).
    fn read64(&self, off: u32) -> u64 {
        self.read32(off) as u64 | (self.read32(off + 4) as u64) << 32
    }
    /// Writes a 64-bit register (two 32-bit writes, low first).
    fn write64(&self, off: u32, v: u64) {
        self.write32(off, v as u32);
        self.write32(off + 4, (v >> 32) as u32);
    }
    /// Maps `len` bytes of CPU memory at `vaddr` for the device's DMA and returns their
    /// address for it. The memory must stay allocated until [`Self::unmap_dma`].
    fn map_dma(&self, vaddr: usize, len: usize) -> Result<NvmeAddr, Error>;
    /// Removes a mapping made by [`Self::map_dma`].
    fn unmap_dma(&self, addr: NvmeAddr, len: usize);
    /// Maps BAR `bar` for the CPU.
    fn map_bar(&self, bar: u8) -> Result<Mmio, Error>;
    /// The bus address BAR `bar` was given (from its config-space register).
    fn bar_bus_addr(&self, bar: u8) -> Result<u64, Error>;
    /// Keeps IOVAs away from `start..start+len` (the CMB's controller addresses, which
    /// the controller decodes itself and never sends to the IOMMU).
    fn reserve_iova(&self, start: u64, len: u64);
    /// Exports `len` bytes at `offset` of BAR `bar` as a dma-buf, for a peer device's
    /// driver. Fails with the reason where the kernel cannot.
    fn export_dma_buf(
        &self,
        bar: u8,
        offset: u64,
        len: u64,
    ) -> Result<std::os::fd::OwnedFd, Error> {
        let _ = (bar, offset, len);
        Err(Error::Unsupported {
            ctrlr: self.name().into(),
            what: "this device cannot export dma-bufs".into(),
        })
    }
}

/// Chooses IOVAs: bump allocation from 4 GiB up, 2 MiB aligned, inside the ranges the
/// IOMMU accepts and outside reserved ones. Freed ranges of the same size are reused.
#[derive(Debug)]
pub struct IovaSpace {
    ranges: Vec<(u64, u64)>,
    reserved: Vec<(u64, u64)>,
    next: u64,
    free: Vec<(u64, u64)>,
}

const IOVA_ALIGN: u64 = 2 << 20;

impl IovaSpace {
    /// A space over `ranges` (inclusive ends); `None` means the 39-bit space every
    /// x86 IOMMU offers.
    pub fn new(ranges: Option<Vec<(u64, u64)>>) -> Self {
        IovaSpace {
            ranges: ranges.unwrap_or_else(|| vec![(0, (1 << 39) - 1)]),
            reserved: Vec::new(),
            next: 1 << 32,
            free: Vec::new(),
        }
    }

    /// Keeps `start..start+len` out of allocations.
    pub fn reserve(&mut self, start: u64, len: u64) {
        self.reserved.push((start, start.saturating_add(len)));
    }

    /// An IOVA range of `len` bytes.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let size = len.div_ceil(IOVA_ALIGN) * IOVA_ALIGN;
        let reserved = &self.reserved;
        if let Some(i) = self
            .free
            .iter()
            .position(|&(a, l)| l == size && !reserved.iter().any(|&(s, e)| a < e && s < a + l))
        {
            return Some(self.free.swap_remove(i).0);
        }
        let mut at = self.next.div_ceil(IOVA_ALIGN) * IOVA_ALIGN;
        for _ in 0..64 {
            let end = at.checked_add(size)?;
            if let Some(&(_, r_end)) = self.reserved.iter().find(|&&(s, e)| at < e && s < end) {
                at = r_end.div_ceil(IOVA_ALIGN) * IOVA_ALIGN;
                continue;
            }
            match self.ranges.iter().find(|&&(s, e)| s <= at && end - 1 <= e) {
                Some(_) => {
                    self.next = end;
                    return Some(at);
                }
                None => {
                    // Move to the next range that starts after `at`.
                    at = self
                        .ranges
                        .iter()
                        .map(|&(s, _)| s.div_ceil(IOVA_ALIGN) * IOVA_ALIGN)
                        .filter(|&s| s > at)
                        .min()?;
                }
            }
        }
        None
    }

    /// Gives back a range from [`Self::alloc`].
    pub fn free(&mut self, iova: u64, len: u64) {
        self.free
            .push((iova, len.div_ceil(IOVA_ALIGN) * IOVA_ALIGN));
    }
}

/// Per-region translation from CPU addresses to a controller's addresses, indexed by
/// the engine's region slot: resolving a buffer is an array load, with no lock.
#[derive(Debug)]
pub struct RegionTable {
    // Per slot: iova - vaddr (wrapping), and the region's bounds (vaddr, len); 0 len
    // means unmapped.
    delta: Box<[AtomicU64]>,
    base: Box<[AtomicU64]>,
    len: Box<[AtomicU64]>,
}

impl RegionTable {
    /// A table of `slots` empty slots.
    pub fn new(slots: usize) -> Self {
        let mk = || (0..slots).map(|_| AtomicU64::new(0)).collect();
        RegionTable {
            delta: mk(),
            base: mk(),
            len: mk(),
        }
    }

    /// Records that slot `slot` (CPU range `vaddr..vaddr+len`) is at `addr`.
    pub fn set(&self, slot: usize, vaddr: usize, len: usize, addr: NvmeAddr) {
        self.delta[slot].store(addr.0.wrapping_sub(vaddr as u64), Ordering::Relaxed);
        self.base[slot].store(vaddr as u64, Ordering::Relaxed);
        self.len[slot].store(len as u64, Ordering::Release);
    }

    /// Clears slot `slot`, returning its address and length.
    pub fn clear(&self, slot: usize) -> Option<(NvmeAddr, usize)> {
        let len = self.len[slot].swap(0, Ordering::AcqRel);
        (len != 0).then(|| {
            let base = self.base[slot].load(Ordering::Relaxed);
            let d = self.delta[slot].load(Ordering::Relaxed);
            (NvmeAddr(base.wrapping_add(d)), len as usize)
        })
    }

    /// The address of CPU range `vaddr..vaddr+len` in slot `slot`, if mapped.
    pub fn resolve(&self, slot: usize, vaddr: usize, len: usize) -> Option<NvmeAddr> {
        let rlen = self.len.get(slot)?.load(Ordering::Acquire);
        let base = self.base[slot].load(Ordering::Relaxed);
        let v = vaddr as u64;
        (rlen != 0 && v >= base && v + len as u64 <= base + rlen)
            .then(|| NvmeAddr(v.wrapping_add(self.delta[slot].load(Ordering::Relaxed))))
    }
}

/// DMA memory this crate allocates for itself (queues, PRP lists, admin data): locked
/// anonymous memory mapped for one device, unmapped on drop.
pub struct DmaMem {
    map: sys::Mapping,
    addr: NvmeAddr,
    dev: std::sync::Arc<dyn Device>,
}

impl fmt::Debug for DmaMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaMem")
            .field("ptr", &self.map.ptr())
            .field("len", &self.map.len())
            .field("addr", &self.addr)
            .finish()
    }
}

impl DmaMem {
    /// `len` bytes (rounded up to 4 KiB), zeroed, mapped for `dev`.
    pub fn new(dev: &std::sync::Arc<dyn Device>, len: usize) -> Result<DmaMem, Error> {
        let len = len.div_ceil(4096) * 4096;
        let map = sys::Mapping::anonymous(len)?;
        let addr = dev.map_dma(map.ptr() as usize, len)?;
        Ok(DmaMem {
            map,
            addr,
            dev: dev.clone(),
        })
    }

    /// The CPU pointer of byte `off`.
    pub fn ptr(&self, off: usize) -> *mut u8 {
        assert!(off <= self.map.len());
        // SAFETY: in bounds (asserted).
        unsafe { self.map.ptr().add(off) }
    }

    /// The device's address of byte `off`.
    pub fn addr(&self, off: usize) -> NvmeAddr {
        assert!(off <= self.map.len());
        self.addr.offset(off as u64)
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it is empty (never).
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The bytes, for the CPU; the caller keeps the device away while it holds them.
    ///
    /// # Safety
    /// No device DMA to this memory may run while the slice lives.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is ours; the caller excludes device writes.
        unsafe { std::slice::from_raw_parts(self.map.ptr(), self.map.len()) }
    }
}

impl Drop for DmaMem {
    fn drop(&mut self) {
        self.dev.unmap_dma(self.addr, self.map.len());
    }
}

/// Reads a sysfs attribute of a PCI device, trimmed.
fn sysfs_attr(bdf: &str, attr: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/bus/pci/devices/{bdf}/{attr}"))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn link_name(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// Normalises a PCI address: `00:04.0` becomes `0000:00:04.0`.
pub fn normalize_bdf(s: &str) -> Result<String, Error> {
    let s = s.trim();
    let full = if s.matches(':').count() == 1 {
        format!("0000:{s}")
    } else {
        s.to_owned()
    };
    let ok = {
        let parts: Vec<&str> = full.split([':', '.']).collect();
        parts.len() == 4
            && [4, 2, 2, 1]
                .iter()
                .zip(&parts)
                .all(|(&n, p)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
            && u8::from_str_radix(parts[2], 16).is_ok_and(|d| d < 32)
            && u8::from_str_radix(parts[3], 16).is_ok_and(|f| f < 8)
    };
    if ok {
        Ok(full.to_ascii_lowercase())
    } else {
        Err(Error::Invalid(format!(
            "{s:?} is not a PCI address (DDDD:BB:DD.F, as in 0000:00:04.0)"
        )))
    }
}

/// A PCIe function driven through VFIO.
pub struct VfioDevice {
    bdf: String,
    container: sys::Container,
    _group: sys::Group,
    dev: sys::DeviceFd,
    bar0: Mmio,
    config: sys::RegionInfo,
    iova: Mutex<IovaSpace>,
}

impl fmt::Debug for VfioDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VfioDevice")
            .field("bdf", &self.bdf)
            .finish()
    }
}

impl VfioDevice {
    /// Opens `bdf` (bound to vfio-pci) in a container of its own, maps BAR0 and
    /// enables memory decoding and bus mastering.
    pub fn open(bdf: &str) -> Result<VfioDevice, Error> {
        let bdf = normalize_bdf(bdf)?;
        let dir = format!("/sys/bus/pci/devices/{bdf}");
        if !Path::new(&dir).exists() {
            return Err(Error::Setup(format!(
                "no PCI device {bdf} (ls /sys/bus/pci/devices; pollux-setup status)"
            )));
        }
        let group = match link_name(format!("{dir}/iommu_group")) {
            Some(g) => g,
            None => {
                return Err(Error::Setup(
                    "no IOMMU: boot with intel_iommu=on (or amd_iommu=on) so that VFIO can isolate the device".into(),
                ));
            }
        };
        match link_name(format!("{dir}/driver")) {
            Some(d) if d == "vfio-pci" => {}
            Some(d) => {
                return Err(Error::Setup(format!(
                    "{bdf} is bound to {d}, not vfio-pci: pollux-setup bind {bdf}"
                )));
            }
            None => {
                return Err(Error::Setup(format!(
                    "{bdf} has no driver: pollux-setup bind {bdf}"
                )));
            }
        }
        let gnum: u32 = group
            .parse()
            .map_err(|_| Error::Setup(format!("IOMMU group {group:?} of {bdf} is not a number")))?;
        let container = sys::Container::open()?;
        let g = sys::Group::open(gnum)?;
        if !g.viable()? {
            return Err(Error::Setup(not_viable_message(gnum)));
        }
        g.set_container(&container)?;
        container.set_iommu()?;
        let ranges = container.iova_ranges()?;
        let dev = g.device(&bdf)?;
        let n = dev.num_regions()?;
        if n <= sys::CONFIG_REGION {
            return Err(Error::Setup(format!(
                "{bdf}: VFIO reports only {n} regions"
            )));
        }
        let config = dev.region(sys::CONFIG_REGION)?;
        let bar0_info = dev.region(0)?;
        let map = dev.mmap(&bar0_info)?;
        // SAFETY: the mapping covers its length and lives in the box.
        let bar0 = unsafe { Mmio::new(map.ptr(), map.len(), Box::new(map)) };
        let d = VfioDevice {
            bdf,
            container,
            _group: g,
            dev,
            bar0,
            config,
            iova: Mutex::new(IovaSpace::new(ranges)),
        };
        // PCI Command: Memory Space Enable (bit 1) and Bus Master Enable (bit 2).
        let cmd = d.config_read16(0x04)?;
        d.config_write16(0x04, cmd | 0x6)?;
        // The device's own BARs are never IOVAs: a controller decodes addresses in its
        // CMB itself (wherever CMBMSC.CBA puts it, the BAR's bus address here).
        for bar in 0..6u8 {
            if let (Ok(info), Ok(addr)) = (d.dev.region(bar as u32), d.bar_bus_addr(bar)) {
                if info.size > 0 && addr != 0 {
                    d.iova.lock().unwrap().reserve(addr, info.size);
                }
            }
        }
        tracing::info!(bdf = %d.bdf, iommu_group = gnum, "VFIO device open");
        Ok(d)
    }

    /// Reads a 16-bit config-space register.
    pub fn config_read16(&self, off: u64) -> Result<u16, Error> {
        let mut b = [0u8; 2];
        self.dev.read_at(&self.config, off, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes a 16-bit config-space register.
    pub fn config_write16(&self, off: u64, v: u16) -> Result<(), Error> {
        self.dev.write_at(&self.config, off, &v.to_le_bytes())
    }

    fn config_read32(&self, off: u64) -> Result<u32, Error> {
        let mut b = [0u8; 4];
        self.dev.read_at(&self.config, off, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

fn check_bar(bar: u8) -> Result<(), Error> {
    if bar > 5 {
        return Err(Error::Invalid(format!("BAR {bar}: there are six, 0 to 5")));
    }
    Ok(())
}

/// "VFIO group 5 is not viable: unbind 0000:00:05.0 from nvme", from sysfs.
fn not_viable_message(group: u32) -> String {
    let mut culprits = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/sys/kernel/iommu_groups/{group}/devices")) {
        for e in rd.flatten() {
            let bdf = e.file_name().to_string_lossy().into_owned();
            let drv = link_name(e.path().join("driver"));
            let bridge = sysfs_attr(&bdf, "class").is_some_and(|c| c.starts_with("0x0604"));
            if let Some(d) = drv.filter(|d| d != "vfio-pci" && !bridge) {
                culprits.push(format!("unbind {bdf} from {d}"));
            }
        }
    }
    if culprits.is_empty() {
        culprits.push("bind every device of the group to vfio-pci".into());
    }
    format!("VFIO group {group} is not viable: {}", culprits.join(", "))
}

impl Device for VfioDevice {
    fn name(&self) -> &str {
        &self.bdf
    }

    fn read32(&self, off: u32) -> u32 {
        self.bar0.read32(off as usize)
    }

    fn write32(&self, off: u32, v: u32) {
        self.bar0.write32(off as usize, v)
    }

    fn map_dma(&self, vaddr: usize, len: usize) -> Result<NvmeAddr, Error> {
        let iova = self
            .iova
            .lock()
            .unwrap()
            .alloc(len as u64)
            .ok_or_else(|| Error::Setup(format!("{}: out of IOVA space", self.bdf)))?;
        if let Err(e) = self.container.map_dma(vaddr, iova, len) {
            self.iova.lock().unwrap().free(iova, len as u64);
            return Err(e);
        }
        Ok(NvmeAddr(iova))
    }

    fn unmap_dma(&self, addr: NvmeAddr, len: usize) {
        if let Err(e) = self.container.unmap_dma(addr.0, len) {
            tracing::warn!(bdf = %self.bdf, error = %e, "DMA unmap failed");
            return;
        }
        self.iova.lock().unwrap().free(addr.0, len as u64);
    }

    fn map_bar(&self, bar: u8) -> Result<Mmio, Error> {
        check_bar(bar)?;
        let info = self.dev.region(bar as u32)?;
        let map = self.dev.mmap(&info)?;
        // SAFETY: the mapping covers its length and lives in the box.
        Ok(unsafe { Mmio::new(map.ptr(), map.len(), Box::new(map)) })
    }

    fn bar_bus_addr(&self, bar: u8) -> Result<u64, Error> {
        check_bar(bar)?;
        let off = 0x10 + 4 * bar as u64;
        let lo = self.config_read32(off)?;
        if lo & 1 != 0 {
            return Err(Error::Invalid(format!("BAR {bar} is an I/O BAR")));
        }
        let hi = if (lo >> 1) & 3 == 2 {
            self.config_read32(off + 4)?
        } else {
            0
        };
        Ok(((hi as u64) << 32) | (lo & !0xf) as u64)
    }

    fn reserve_iova(&self, start: u64, len: u64) {
        self.iova.lock().unwrap().reserve(start, len);
    }

    fn export_dma_buf(
        &self,
        bar: u8,
        offset: u64,
        len: u64,
    ) -> Result<std::os::fd::OwnedFd, Error> {
        check_bar(bar)?;
        self.dev.dma_buf(bar as u32, offset, len)
    }
}

impl Drop for VfioDevice {
    fn drop(&mut self) {
        // Stop the device's DMA before the container (and its mappings) go.
        if let Ok(cmd) = self.config_read16(0x04) {
            let _ = self.config_write16(0x04, cmd & !0x4);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdfs_are_normalised_and_checked() {
        assert_eq!(normalize_bdf("00:04.0").unwrap(), "0000:00:04.0");
        assert_eq!(normalize_bdf("0000:3B:00.1").unwrap(), "0000:3b:00.1");
        for bad in [
            "",
            "00:04",
            "0000:00:20.0",
            "0000:00:04.8",
            "zz:00.0",
            "0:0:4.0",
        ] {
            assert!(normalize_bdf(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn iovas_avoid_reserved_ranges_and_stay_in_bounds() {
        let mut s = IovaSpace::new(Some(vec![(0, 0xfedf_ffff), (0xfef0_0000, (1 << 39) - 1)]));
        s.reserve(1 << 32, 64 << 20);
        let a = s.alloc(4096).unwrap();
        assert!(a >= (1 << 32) + (64 << 20));
        assert_eq!(a % IOVA_ALIGN, 0);
        let b = s.alloc(3 << 20).unwrap();
        assert!(b >= a + IOVA_ALIGN);
        s.free(a, 4096);
        assert_eq!(
            s.alloc(100).unwrap(),
            a,
            "a freed range of the same size is reused"
        );
        let mut small = IovaSpace::new(Some(vec![(0, (1 << 32) + (4 << 20) - 1)]));
        assert!(small.alloc(2 << 20).is_some());
        assert!(small.alloc(2 << 20).is_some());
        assert_eq!(small.alloc(2 << 20), None, "the space is exhausted");
    }

    #[test]
    fn region_table_resolves_inside_regions_only() {
        let t = RegionTable::new(4);
        t.set(2, 0x7000_0000, 0x20_0000, NvmeAddr(0x1_0000_0000));
        assert_eq!(
            t.resolve(2, 0x7000_1000, 4096),
            Some(NvmeAddr(0x1_0000_1000))
        );
        assert_eq!(t.resolve(2, 0x701f_f000, 8192), None, "runs past the end");
        assert_eq!(t.resolve(1, 0x7000_1000, 4096), None, "unmapped slot");
        assert_eq!(t.resolve(9, 0x7000_1000, 4096), None, "no such slot");
        assert_eq!(t.clear(2), Some((NvmeAddr(0x1_0000_0000), 0x20_0000)));
        assert_eq!(t.resolve(2, 0x7000_1000, 4096), None);
    }

    #[test]
    fn opening_a_missing_device_says_so() {
        let e = VfioDevice::open("0000:7f:1f.7").unwrap_err().to_string();
        assert!(e.contains("no PCI device 0000:7f:1f.7"), "{e}");
    }
}
