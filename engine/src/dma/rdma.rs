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
use super::map::{MAX_REGIONS, Mapper, RegionInfo};
use crate::Error;
use pollux_rdma::{Access, Mr, Pd};
use std::sync::{Arc, Mutex};

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

/// A protection domain as a mapper: one memory region per registered region.
pub struct RdmaMapper {
    pd: Arc<Pd>,
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
}

impl Mapper for RdmaMapper {
    fn name(&self) -> String {
        format!("rdma {:?}", self.pd)
    }

    fn map(&self, r: &RegionInfo) -> Result<(), Error> {
        if r.domain != super::map::Domain::Host {
            // Device memory (an NVMe CMB) needs a dma-buf memory region, which takes a
            // peer-to-peer path this mapper does not have: buffers there do not resolve
            // for this NIC, and requests fall back to host memory.
            return Ok(());
        }
        // SAFETY: the region stays allocated until the map unregisters it, which tells
        // this mapper first (unmap below deregisters the memory region).
        let mr =
            unsafe { self.pd.reg_mr(r.vaddr as *mut u8, r.len, Access::REMOTE) }.map_err(|e| {
                Error::Mapper {
                    mapper: self.name(),
                    why: e.to_string(),
                }
            })?;
        let i = r.id.index();
        use std::sync::atomic::Ordering;
        self.bases[i].store(r.vaddr as u64, Ordering::Relaxed);
        self.keys[i].store(mr.lkey() as u64 | (r.len as u64) << 32, Ordering::Release);
        *self.mrs[i].lock().unwrap() = Some(mr);
        Ok(())
    }

    fn unmap(&self, r: &RegionInfo) {
        let i = r.id.index();
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
