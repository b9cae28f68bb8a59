//! RDMA protection domains as mappers of the DMA registration map, and the addresses
//! an RDMA NIC uses.
//!
//! Every region registered in the map becomes a memory region of the protection
//! domain; a buffer then resolves to an [`RdmaLocal`] (the region's lkey and the
//! address) for the local NIC's scatter-gather entries. What a host names in a keyed
//! SGL is an [`RdmaRemote`] (its rkey and address): the remote side, a different type.
//! Neither converts into the other, nor into an NVMe controller's or the CPU's address:
//!
//! ```compile_fail
//! use pollux_engine::dma::{RdmaLocal, RdmaRemote};
//! fn rdma_read_from(remote: RdmaRemote) -> RdmaRemote { remote }
//! fn oops(local: RdmaLocal) -> RdmaRemote { rdma_read_from(local) }
//! ```
//!
//! ```compile_fail
//! use pollux_engine::dma::{CpuAddr, RdmaLocal};
//! fn sge(a: RdmaLocal) -> RdmaLocal { a }
//! fn oops(a: CpuAddr) -> RdmaLocal { sge(a) }
//! ```

use super::addr::{Initiator, Segment};
use super::devmem::{Unreachable, device_memory};
use super::map::{Domain, MAX_REGIONS, Mapper, RegionId, RegionInfo};
use super::p2p::{HostBridgePolicy, Sysfs};
use crate::Error;
use pollux_rdma::{Access, Mr, Pd};
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

/// The vendor ID Soft-RoCE (rdma_rxe) reports: a device whose "DMA" is the CPU copying
/// through the process's mappings.
const SOFT_ROCE_VENDOR: u32 = 0xffffff;

/// An address for the local RDMA NIC: the memory region's local key and the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RdmaLocal {
    lkey: u32,
    addr: u64,
}

impl RdmaLocal {
    /// The local key.
    pub fn lkey(self) -> u32 {
        self.lkey
    }

    /// The address.
    pub fn addr(self) -> u64 {
        self.addr
    }

    /// The address `n` bytes further in the same region.
    pub fn offset(self, n: u64) -> RdmaLocal {
        RdmaLocal {
            lkey: self.lkey,
            addr: self.addr + n,
        }
    }

    /// As a scatter-gather entry of `len` bytes.
    pub fn sge(self, len: u32) -> pollux_rdma::Sge {
        pollux_rdma::Sge {
            addr: self.addr,
            len,
            lkey: self.lkey,
        }
    }
}

/// A peer's memory as its keyed SGL data block names it: remote key and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RdmaRemote {
    rkey: u32,
    addr: u64,
}

impl RdmaRemote {
    /// What a keyed SGL descriptor from the wire says.
    pub fn from_wire(rkey: u32, addr: u64) -> RdmaRemote {
        RdmaRemote { rkey, addr }
    }

    /// The remote key.
    pub fn rkey(self) -> u32 {
        self.rkey
    }

    /// The address.
    pub fn addr(self) -> u64 {
        self.addr
    }

    /// The address `n` bytes further.
    pub fn offset(self, n: u64) -> RdmaRemote {
        RdmaRemote {
            rkey: self.rkey,
            addr: self.addr + n,
        }
    }
}

/// A protection domain as a mapper: one memory region per registered region. Host
/// memory is always registered; device memory (an NVMe CMB) only where the NIC reaches
/// it ([`super::DeviceMemory`]), else the reason is kept for [`RdmaMapper::unreachable`].
pub struct RdmaMapper {
    pd: Arc<Pd>,
    unreachable: Mutex<HashMap<usize, Unreachable>>,
    /// Per device-memory owner: whether its regions were registered, or why not.
    owners: Mutex<HashMap<u64, Result<(), Unreachable>>>,
    mrs: Box<[Mutex<Option<Mr>>]>,
    // Lock-free copies for resolution on the data path: (lkey, base, len) per slot;
    // len 0 when unmapped.
    keys: Box<[std::sync::atomic::AtomicU64]>,
    bases: Box<[std::sync::atomic::AtomicU64]>,
}

impl std::fmt::Debug for RdmaMapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaMapper").field("pd", &self.pd).finish()
    }
}

impl RdmaMapper {
    /// A mapper for `pd` (add it with [`super::MemMap::add_mapper`]).
    pub fn new(pd: Arc<Pd>) -> Arc<RdmaMapper> {
        use std::sync::atomic::AtomicU64;
        Arc::new(RdmaMapper {
            pd,
            unreachable: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            mrs: (0..MAX_REGIONS).map(|_| Mutex::new(None)).collect(),
            keys: (0..MAX_REGIONS).map(|_| AtomicU64::new(0)).collect(),
            bases: (0..MAX_REGIONS).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Its protection domain.
    pub fn pd(&self) -> &Arc<Pd> {
        &self.pd
    }

    /// Resolves buffers for this NIC.
    pub fn initiator(self: &Arc<Self>) -> RdmaInitiator {
        RdmaInitiator(self.clone())
    }

    /// Why this NIC cannot reach device-memory region `r` (`None`: it can, or `r` is
    /// host memory).
    pub fn unreachable(&self, r: RegionId) -> Option<Unreachable> {
        self.unreachable.lock().unwrap().get(&r.index()).cloned()
    }

    /// Whether this NIC reaches the device memory of `owner` (`None`: no region of it
    /// has been registered).
    pub fn reaches(&self, owner: u64) -> Option<Result<(), Unreachable>> {
        self.owners.lock().unwrap().get(&owner).cloned()
    }

    fn store(&self, r: &RegionInfo, mr: Mr) {
        let i = r.id.index();
        use std::sync::atomic::Ordering;
        self.bases[i].store(r.vaddr as u64, Ordering::Relaxed);
        self.keys[i].store(mr.lkey() as u64 | (r.len as u64) << 32, Ordering::Release);
        *self.mrs[i].lock().unwrap() = Some(mr);
    }

    /// Registers device memory where this NIC reaches it: a route between the two
    /// devices, a dma-buf of the memory, and the NIC's driver taking it.
    fn map_device(&self, r: &RegionInfo, owner: u64) -> Result<(), Unreachable> {
        let dm = device_memory(owner)
            .ok_or_else(|| Unreachable::NoDmaBuf("its device exports no dma-buf".into()))?;
        let ctx = self.pd.context();
        let name = ctx.name();
        let soft = ctx.query().is_ok_and(|a| a.vendor_id == SOFT_ROCE_VENDOR);
        let provider = dm.pci_address();
        if !soft {
            let link = std::fs::read_link(format!("/sys/class/infiniband/{name}/device")).ok();
            let Some(nic) = link
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
            else {
                return Err(Unreachable::NoRoute(format!(
                    "{name} has no PCI function in sysfs"
                )));
            };
            let route = Sysfs::default().route(&provider, &nic, HostBridgePolicy::AllowList);
            if !route.possible() {
                return Err(Unreachable::NoRoute(format!(
                    "{provider} -> {name} ({nic}): {route}"
                )));
            }
        }
        match dm.export(r.vaddr, r.len) {
            Ok((fd, off)) => {
                // The MR holds the dma-buf; it goes when the region is unmapped.
                let mr = self
                    .pd
                    .reg_dmabuf_mr(fd.as_raw_fd(), off, r.len, r.vaddr as u64, Access::LOCAL)
                    .map_err(|e| {
                        Unreachable::Refused(format!(
                            "{name}: ibv_reg_dmabuf_mr on {provider}'s dma-buf: {e}"
                        ))
                    })?;
                self.store(r, mr);
                tracing::info!(nic = %name, device = %provider, bytes = r.len,
                    "device memory registered with the NIC over a dma-buf: peer-to-peer DMA");
                Ok(())
            }
            Err(why) if soft => {
                // A software device copies with the CPU: the CPU mapping would do, if
                // its driver can pin it (a VFIO BAR mapping cannot be pinned).
                // SAFETY: the region stays mapped until unmap deregisters the MR.
                match unsafe { self.pd.reg_mr(r.vaddr as *mut u8, r.len, Access::LOCAL) } {
                    Ok(mr) => {
                        self.store(r, mr);
                        tracing::info!(nic = %name, device = %provider, bytes = r.len,
                            "device memory registered with the software NIC through its CPU mapping");
                        Ok(())
                    }
                    Err(e) => Err(Unreachable::NoDmaBuf(format!(
                        "{why}; and {name} (Soft-RoCE) cannot register the CPU mapping of {provider}'s memory: ibv_reg_mr: {e}"
                    ))),
                }
            }
            Err(why) => Err(Unreachable::NoDmaBuf(why)),
        }
    }
}

impl Mapper for RdmaMapper {
    fn name(&self) -> String {
        format!("rdma {:?}", self.pd)
    }

    fn map(&self, r: &RegionInfo) -> Result<(), Error> {
        if let Domain::Device { owner } = r.domain {
            // Not reaching device memory is not an error: buffers there do not resolve
            // for this NIC, and requests fall back to host memory, for this reason.
            let res = self.map_device(r, owner);
            if let Err(why) = &res {
                tracing::info!(nic = %self.pd.context().name(), bytes = r.len, reason = %why,
                    "device memory not reachable by the NIC");
                self.unreachable
                    .lock()
                    .unwrap()
                    .insert(r.id.index(), why.clone());
            }
            // One unreachable region of the owner makes it unreachable.
            let mut o = self.owners.lock().unwrap();
            match o.get(&owner) {
                Some(Err(_)) => {}
                _ => {
                    o.insert(owner, res);
                }
            }
            return Ok(());
        }
        // Local access only: this NIC's RDMA READs land in the memory and its WRITEs and
        // SENDs leave from it; no peer is given a key to reach it.
        // SAFETY: the region stays allocated until the map unregisters it, which tells
        // this mapper first (unmap below deregisters the memory region).
        let mr =
            unsafe { self.pd.reg_mr(r.vaddr as *mut u8, r.len, Access::LOCAL) }.map_err(|e| {
                Error::Mapper {
                    mapper: self.name(),
                    why: e.to_string(),
                }
            })?;
        self.store(r, mr);
        Ok(())
    }

    fn unmap(&self, r: &RegionInfo) {
        let i = r.id.index();
        self.unreachable.lock().unwrap().remove(&i);
        if let Domain::Device { owner } = r.domain {
            self.owners.lock().unwrap().remove(&owner);
        }
        self.keys[i].store(0, std::sync::atomic::Ordering::Release);
        *self.mrs[i].lock().unwrap() = None;
    }
}

/// The local RDMA NIC as a DMA initiator.
#[derive(Clone, Debug)]
pub struct RdmaInitiator(Arc<RdmaMapper>);

impl Initiator for RdmaInitiator {
    type Addr = RdmaLocal;
    fn resolve(&self, seg: &Segment) -> Option<RdmaLocal> {
        use std::sync::atomic::Ordering;
        let i = seg.region.index();
        let k = self.0.keys.get(i)?.load(Ordering::Acquire);
        let len = (k >> 32) as usize;
        let base = self.0.bases[i].load(Ordering::Relaxed) as usize;
        (len != 0 && seg.vaddr >= base && seg.vaddr + seg.len as usize <= base + len).then_some(
            RdmaLocal {
                lkey: k as u32,
                addr: seg.vaddr as u64,
            },
        )
    }
}
