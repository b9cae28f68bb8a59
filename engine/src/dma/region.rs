//! Host memory for DMA: hugepages when reserved, else locked anonymous memory.

use super::map::{Domain, MemMap, RegionId};
use crate::Error;
use std::alloc::Layout;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Once;

/// Where DMA memory may come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HugepagePolicy {
    /// Hugepages when enough are free, else locked anonymous memory (with one warning).
    #[default]
    Prefer,
    /// Hugepages or an error.
    Require,
    /// Locked anonymous memory only.
    Never,
}

/// What backs a [`HostMem`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// Hugepages of this size, in bytes.
    Hugepages {
        /// The hugepage size in bytes.
        page_size: usize,
    },
    /// Anonymous memory locked in RAM (`mlock`).
    Locked,
    /// Anonymous memory that could not be locked (RLIMIT_MEMLOCK); still usable by
    /// io_uring and the CPU, but a device must not rely on it staying put.
    Unlocked,
    /// Anonymous memory that is pageable by design (RAM-backed bdevs).
    Pageable,
}

/// A run of host memory, page aligned, zero-filled when allocated.
pub struct HostMem {
    ptr: NonNull<u8>,
    len: usize,
    map_len: usize,
    backing: Backing,
}

// SAFETY: HostMem is a plain owned mapping; who may touch its bytes, and when, is decided
// by its users (pools hand out disjoint buffers; bdevs copy under their own rules).
unsafe impl Send for HostMem {}
// SAFETY: as above; HostMem's own methods only read its fields.
unsafe impl Sync for HostMem {}

impl fmt::Debug for HostMem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostMem")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("backing", &self.backing)
            .finish()
    }
}

/// Free hugepages and their size, from /proc/meminfo (`None` without hugetlb).
pub fn hugepages_free() -> Option<(usize, usize)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<usize> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let free = field("HugePages_Free:")?;
    let size_kb = field("Hugepagesize:")?;
    Some((free, size_kb * 1024))
}

static NO_HUGEPAGES_WARNING: Once = Once::new();

const PAGE_SIZE: usize = 4096;

impl HostMem {
    /// DMA memory of at least `len` bytes, following `policy`.
    pub fn alloc_dma(len: usize, policy: HugepagePolicy) -> Result<HostMem, Error> {
        assert!(len > 0);
        if policy != HugepagePolicy::Never {
            if let Some(mem) = Self::try_hugepages(len) {
                return Ok(mem);
            }
            if policy == HugepagePolicy::Require {
                return Err(Error::NoHugepages { len });
            }
            NO_HUGEPAGES_WARNING.call_once(|| {
                tracing::warn!(
                    "no hugepages reserved: DMA memory falls back to anonymous memory locked \
                     in RAM; reserve hugepages with: echo 1024 > /proc/sys/vm/nr_hugepages"
                );
            });
        }
        let mut mem = Self::anonymous(len)?;
        // SAFETY: the range is our own fresh mapping.
        let rc = unsafe { libc::mlock(mem.ptr.as_ptr().cast(), mem.map_len) };
        if rc == 0 {
            mem.backing = Backing::Locked;
        } else {
            let e = std::io::Error::last_os_error();
            tracing::warn!(
                len = mem.map_len,
                "cannot lock DMA memory in RAM ({e}); raise `ulimit -l` or run as root"
            );
            mem.backing = Backing::Unlocked;
        }
        Ok(mem)
    }

    /// Pageable anonymous memory of at least `len` bytes (not for DMA by devices).
    pub fn alloc_pageable(len: usize) -> Result<HostMem, Error> {
        assert!(len > 0);
        Self::anonymous(len)
    }

    fn anonymous(len: usize) -> Result<HostMem, Error> {
        let map_len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::Io {
                what: format!("map {map_len} bytes of anonymous memory"),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(HostMem {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null on success"),
            len,
            map_len,
            backing: Backing::Pageable,
        })
    }

    fn try_hugepages(len: usize) -> Option<HostMem> {
        let (free, page_size) = hugepages_free()?;
        let map_len = len.div_ceil(page_size) * page_size;
        if free * page_size < map_len {
            return None;
        }
        let layout = Layout::from_size_align(map_len, PAGE_SIZE).ok()?;
        // SAFETY: the layout has a non-zero size; /proc/meminfo names a hugepage size, so
        // hugepage-rs's lookup of it succeeds.
        let p = unsafe { hugepage_rs::alloc(layout) };
        let ptr = NonNull::new(p)?;
        // Touch every page now: a hugepage that is not there fails here, not as a SIGBUS
        // in the middle of an I/O.
        for off in (0..map_len).step_by(page_size) {
            // SAFETY: `off` is inside the fresh mapping of `map_len` bytes.
            unsafe { ptr.as_ptr().add(off).write_volatile(0) };
        }
        Some(HostMem {
            ptr,
            len,
            map_len,
            backing: Backing::Hugepages { page_size },
        })
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Usable length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the length is zero (never: allocation asserts a positive length).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What backs it.
    pub fn backing(&self) -> Backing {
        self.backing
    }
}

impl Drop for HostMem {
    fn drop(&mut self) {
        match self.backing {
            Backing::Hugepages { .. } => {
                let layout =
                    Layout::from_size_align(self.map_len, PAGE_SIZE).expect("valid at alloc");
                // SAFETY: allocated by hugepage_rs::alloc with this layout, not yet freed.
                unsafe { hugepage_rs::dealloc(self.ptr.as_ptr(), layout) };
            }
            _ => {
                // SAFETY: our own mapping of `map_len` bytes; nothing refers to it any more.
                unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.map_len) };
            }
        }
    }
}

/// DMA memory registered in the process's [`MemMap`] (host memory, or device memory
/// mapped for the CPU); unregistered when dropped.
pub struct DmaRegion {
    id: RegionId,
    ptr: *mut u8,
    len: usize,
    domain: Domain,
    _keep: Box<dyn Send + Sync>,
}

// SAFETY: the region owns (or keeps alive) its memory; who touches which bytes is
// decided by its users, as for HostMem.
unsafe impl Send for DmaRegion {}
// SAFETY: as above.
unsafe impl Sync for DmaRegion {}

impl fmt::Debug for DmaRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaRegion")
            .field("id", &self.id)
            .field("len", &self.len)
            .field("domain", &self.domain)
            .finish()
    }
}

impl DmaRegion {
    /// Allocates host DMA memory and registers it (every mapper is told).
    pub fn new(len: usize, policy: HugepagePolicy) -> Result<DmaRegion, Error> {
        let mem = HostMem::alloc_dma(len, policy)?;
        let (ptr, len) = (mem.as_ptr(), mem.len());
        let id = MemMap::global().register(ptr as usize, len, Domain::Host)?;
        Ok(DmaRegion {
            id,
            ptr,
            len,
            domain: Domain::Host,
            _keep: Box::new(mem),
        })
    }

    /// Registers `len` bytes at `ptr` of `domain` (device memory mapped for the CPU).
    ///
    /// # Safety
    /// `ptr..ptr+len` must stay mapped, readable and writable while `keep` lives.
    pub unsafe fn external(
        ptr: *mut u8,
        len: usize,
        domain: Domain,
        keep: Box<dyn Send + Sync>,
    ) -> Result<DmaRegion, Error> {
        let id = MemMap::global().register(ptr as usize, len, domain)?;
        Ok(DmaRegion {
            id,
            ptr,
            len,
            domain,
            _keep: keep,
        })
    }

    /// The region's slot in the map.
    pub fn id(&self) -> RegionId {
        self.id
    }

    /// Its first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where it lives.
    pub fn domain(&self) -> Domain {
        self.domain
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        MemMap::global().unregister(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_fallback_is_zeroed_and_writable() {
        let mem = HostMem::alloc_dma(1 << 20, HugepagePolicy::Never).unwrap();
        assert!(matches!(mem.backing(), Backing::Locked | Backing::Unlocked));
        // SAFETY: the mapping is ours and `len` bytes long.
        let s = unsafe { std::slice::from_raw_parts_mut(mem.as_ptr(), mem.len()) };
        assert!(s.iter().all(|&b| b == 0));
        s.fill(0xa5);
        assert_eq!(s[mem.len() - 1], 0xa5);
    }

    #[test]
    fn hugepages_when_reserved() {
        // Exercised for real when the test command reserves hugepages; otherwise
        // `Require` must fail with the message that says how to reserve them.
        match HostMem::alloc_dma(2 << 20, HugepagePolicy::Require) {
            Ok(mem) => {
                assert!(matches!(mem.backing(), Backing::Hugepages { .. }));
                // SAFETY: the mapping is ours and `len` bytes long.
                unsafe { mem.as_ptr().add(mem.len() - 1).write(7) };
            }
            Err(e) => assert!(e.to_string().contains("nr_hugepages"), "{e}"),
        }
    }
}
