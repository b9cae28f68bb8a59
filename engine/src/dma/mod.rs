//! Memory that devices may DMA to, and the addresses each device sees it at.
//!
//! - [`HostMem`]: host memory from hugepages (hugepage-rs) when they are reserved, else
//!   anonymous memory locked in RAM, with one warning naming the command that reserves
//!   hugepages. Pollux never refuses to start only because hugepages are missing.
//! - [`MemMap`]: the process's registration map (SPDK's `mem_map`). Every DMA region is
//!   registered once; every [`Mapper`] (an io_uring ring's registered-buffer table, an
//!   NVMe controller's VFIO container in [`crate::bdev::nvme`], an RDMA protection domain
//!   ([`RdmaMapper`])) is told about every region, including those registered before the
//!   mapper existed, and about unregistration.
//! - [`Iobuf`]: fixed-size buffer pools, small and large as SPDK's iobuf, with per-thread
//!   caches (an [`IoChannel`](crate::thread::IoChannel) per thread). A [`DmaBuf`] goes back
//!   to its thread's cache when dropped; in steady state no I/O touches the heap.
//! - [`addr`]: per-initiator addresses as distinct types. A buffer segment resolves, for a
//!   named initiator, to the address that initiator uses: [`CpuAddr`] for the CPU,
//!   [`UringAddr`] for io_uring's registered buffers, `NvmeAddr` for an NVMe controller
//!   (`crate::bdev::nvme::NvmeInitiator`), [`RdmaLocal`] for an RDMA NIC (and
//!   [`RdmaRemote`] for a peer's keyed memory). One initiator's address cannot be handed
//!   to another device: that does not compile.

pub mod addr;
mod devmem;
mod map;
pub mod p2p;
mod pool;
mod rdma;
mod region;

pub use addr::{Cpu, CpuAddr, Initiator, Segment, UringAddr};
pub use devmem::{
    DeviceMemory, Unreachable, device_memory, register_device_memory, unregister_device_memory,
};
pub use map::{
    Domain, MAX_REGIONS, Mapper, MapperGuard, MemMap, REGION_LEN_MAX, RegionId, RegionInfo,
};
pub use pool::{DmaBuf, Iobuf, IobufCache, IobufOpts, IobufPoolStats};
pub use rdma::{RdmaInitiator, RdmaLocal, RdmaMapper, RdmaRemote};
pub use region::{Backing, DmaRegion, HostMem, HugepagePolicy, hugepages_free};

/// Calls `f(span, at)` for each piece of a command's buffers holding its data bytes
/// `off..off + len`: `at` is the piece's position in that range.
fn spans(bufs: &mut [DmaBuf], mut off: usize, len: usize, mut f: impl FnMut(&mut [u8], usize)) {
    let mut at = 0;
    for b in bufs {
        let s = b.as_mut_slice();
        if off >= s.len() {
            off -= s.len();
            continue;
        }
        let n = (s.len() - off).min(len - at);
        f(&mut s[off..off + n], at);
        at += n;
        off = 0;
        if at == len {
            break;
        }
    }
}

/// Copies a command's data from byte `off` into `out`.
pub(crate) fn gather(bufs: &mut [DmaBuf], off: usize, out: &mut [u8]) {
    spans(bufs, off, out.len(), |s, at| {
        out[at..at + s.len()].copy_from_slice(s)
    });
}

/// Copies `data` into a command's buffers from byte `off`.
pub(crate) fn scatter(bufs: &mut [DmaBuf], off: usize, data: &[u8]) {
    spans(bufs, off, data.len(), |s, at| {
        s.copy_from_slice(&data[at..at + s.len()])
    });
}
