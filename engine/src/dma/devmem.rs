//! Device memory that other devices may reach: the exporters of [`Domain::Device`]
//! regions (an NVMe controller's CMB), and why a device cannot reach one.
//!
//! A device-memory region is registered in the map like host memory, but only its own
//! device's mapper gives it an address for free. Another device (an RDMA NIC) reaches
//! it only where three things hold, checked in this order when its mapper is told
//! about the region:
//!
//! 1. a peer-to-peer route between the two PCI functions ([`super::p2p`]);
//! 2. the memory exported as a dma-buf (VFIO's `VFIO_DEVICE_FEATURE_DMA_BUF` for a BAR);
//! 3. the other device's driver taking that dma-buf (for a NIC, `ibv_reg_dmabuf_mr`).
//!
//! The first that fails is the reason ([`Unreachable`]): logged once, and counted per
//! request that falls back to host memory.
//!
//! [`Domain::Device`]: super::Domain::Device

use std::collections::HashMap;
use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, OnceLock};

/// A device whose memory is in the map (one per `Domain::Device` owner).
pub trait DeviceMemory: Send + Sync {
    /// The owning device's PCI address (`0000:00:04.0`).
    fn pci_address(&self) -> String;
    /// A dma-buf of the device memory under `len` bytes at CPU address `vaddr` (a
    /// registered region), and the region's offset inside it; or why not (with the
    /// errno).
    fn export(&self, vaddr: usize, len: usize) -> Result<(OwnedFd, u64), String>;
}

/// Why a device cannot reach a device-memory region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// No peer-to-peer route between the two devices.
    NoRoute(String),
    /// The memory could not be exported as a dma-buf.
    NoDmaBuf(String),
    /// The device's driver refused a region over the dma-buf.
    Refused(String),
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::NoRoute(w) => write!(f, "no peer-to-peer route: {w}"),
            Unreachable::NoDmaBuf(w) => write!(f, "no dma-buf of the device memory: {w}"),
            Unreachable::Refused(w) => write!(f, "the device's driver refused it: {w}"),
        }
    }
}

fn exporters() -> &'static Mutex<HashMap<u64, Arc<dyn DeviceMemory>>> {
    static E: OnceLock<Mutex<HashMap<u64, Arc<dyn DeviceMemory>>>> = OnceLock::new();
    E.get_or_init(Default::default)
}

/// Registers the exporter of `Domain::Device { owner }` regions (before the regions).
pub fn register_device_memory(owner: u64, d: Arc<dyn DeviceMemory>) {
    exporters().lock().unwrap().insert(owner, d);
}

/// Removes an exporter (after its regions are gone).
pub fn unregister_device_memory(owner: u64) {
    exporters().lock().unwrap().remove(&owner);
}

/// The exporter of `owner`'s regions.
pub fn device_memory(owner: u64) -> Option<Arc<dyn DeviceMemory>> {
    exporters().lock().unwrap().get(&owner).cloned()
}
