//! The process's DMA registration map (SPDK's `mem_map` with its notify callbacks).
//!
//! Each region of DMA memory is registered once and gets a small integer [`RegionId`]
//! (its slot). Each [`Mapper`], a device's view of memory, is told about every region:
//! those registered while it exists, and, when it is added, those registered before it.
//! A mapper that needs per-region state keys it by the slot, so resolving an address
//! on the data path is an array index, never a search.
//!
//! The map is control-path only: a mutex serialises registration against mapper changes,
//! so a mapper is never told about a region twice or after it was removed.

use crate::Error;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

/// Regions the map holds at most (io_uring's registered-buffer table is this large).
pub const MAX_REGIONS: usize = 1024;

/// Largest region: io_uring registers buffers of at most 1 GiB.
pub const REGION_LEN_MAX: usize = 1 << 30;

/// A region's slot in the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub(crate) u16);

impl RegionId {
    /// The slot number, below [`MAX_REGIONS`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a region's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Domain {
    /// Host DRAM.
    Host,
    /// Memory on a device (an NVMe controller's CMB, mapped through its BAR): only that
    /// device's own mapper gives it an address; every other mapper leaves it out, so
    /// resolving such a buffer for another device says "cannot reach".
    Device {
        /// Which device: a token its mapper knows.
        owner: u64,
    },
}

/// A registered region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// Its slot.
    pub id: RegionId,
    /// The CPU's virtual address of its first byte.
    pub vaddr: usize,
    /// Its length in bytes.
    pub len: usize,
    /// Where it lives.
    pub domain: Domain,
}

/// A device's view of memory, told about every region.
pub trait Mapper: Send + Sync {
    /// A name for logs.
    fn name(&self) -> String;
    /// A region appeared. An error refuses the registration (the region is then
    /// unmapped from the mappers that accepted it).
    fn map(&self, region: &RegionInfo) -> Result<(), Error>;
    /// A region is going away; no I/O uses it any more.
    fn unmap(&self, region: &RegionInfo);
}

struct Inner {
    regions: Vec<Option<RegionInfo>>,
    mappers: Vec<(u64, Arc<dyn Mapper>)>,
    next_mapper: u64,
}

/// The registration map.
pub struct MemMap {
    inner: Mutex<Inner>,
}

impl fmt::Debug for MemMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = self.inner.lock().unwrap();
        f.debug_struct("MemMap")
            .field("regions", &g.regions.iter().flatten().count())
            .field("mappers", &g.mappers.len())
            .finish()
    }
}

impl Default for MemMap {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps a mapper in the map; dropping it removes the mapper (which then releases its
/// own mappings: it is not told about each region again).
#[must_use = "dropping the guard removes the mapper"]
pub struct MapperGuard {
    map: &'static MemMap,
    id: u64,
}

impl fmt::Debug for MapperGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapperGuard").field("id", &self.id).finish()
    }
}

impl Drop for MapperGuard {
    fn drop(&mut self) {
        self.map
            .inner
            .lock()
            .unwrap()
            .mappers
            .retain(|(id, _)| *id != self.id);
    }
}

impl MemMap {
    /// An empty map (the process uses [`MemMap::global`]; tests may make their own).
    pub fn new() -> Self {
        MemMap {
            inner: Mutex::new(Inner {
                regions: vec![None; MAX_REGIONS],
                mappers: Vec::new(),
                next_mapper: 1,
            }),
        }
    }

    /// The process's map.
    pub fn global() -> &'static MemMap {
        static MAP: OnceLock<MemMap> = OnceLock::new();
        MAP.get_or_init(MemMap::new)
    }

    /// Registers a region and tells every mapper.
    pub fn register(&self, vaddr: usize, len: usize, domain: Domain) -> Result<RegionId, Error> {
        if len == 0 || len > REGION_LEN_MAX {
            return Err(Error::RegionSize {
                len,
                max: REGION_LEN_MAX,
            });
        }
        let mut g = self.inner.lock().unwrap();
        let overlap = g
            .regions
            .iter()
            .flatten()
            .any(|r| vaddr < r.vaddr + r.len && r.vaddr < vaddr + len);
        assert!(!overlap, "DMA region {vaddr:#x}+{len:#x} registered twice");
        let slot = g
            .regions
            .iter()
            .position(|r| r.is_none())
            .ok_or(Error::TooManyRegions { max: MAX_REGIONS })?;
        let info = RegionInfo {
            id: RegionId(slot as u16),
            vaddr,
            len,
            domain,
        };
        for (i, (_, m)) in g.mappers.iter().enumerate() {
            if let Err(e) = m.map(&info) {
                for (_, done) in &g.mappers[..i] {
                    done.unmap(&info);
                }
                return Err(e);
            }
        }
        g.regions[slot] = Some(info);
        Ok(info.id)
    }

    /// Unregisters a region, telling every mapper first.
    pub fn unregister(&self, id: RegionId) {
        let mut g = self.inner.lock().unwrap();
        let info = g.regions[id.index()]
            .take()
            .expect("unregistering a region that is not registered");
        for (_, m) in &g.mappers {
            m.unmap(&info);
        }
    }

    /// Adds a mapper and tells it about every region already registered.
    pub fn add_mapper(&'static self, mapper: Arc<dyn Mapper>) -> Result<MapperGuard, Error> {
        let mut g = self.inner.lock().unwrap();
        let existing: Vec<RegionInfo> = g.regions.iter().flatten().copied().collect();
        for (i, r) in existing.iter().enumerate() {
            if let Err(e) = mapper.map(r) {
                for done in &existing[..i] {
                    mapper.unmap(done);
                }
                return Err(e);
            }
        }
        let id = g.next_mapper;
        g.next_mapper += 1;
        g.mappers.push((id, mapper));
        Ok(MapperGuard { map: self, id })
    }

    /// The region holding `vaddr`, if any (control path: a linear search).
    pub fn find(&self, vaddr: usize) -> Option<RegionInfo> {
        let g = self.inner.lock().unwrap();
        g.regions
            .iter()
            .flatten()
            .find(|r| r.vaddr <= vaddr && vaddr < r.vaddr + r.len)
            .copied()
    }

    /// The region in slot `id`.
    pub fn get(&self, id: RegionId) -> Option<RegionInfo> {
        self.inner.lock().unwrap().regions[id.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<String>>,
        refuse: Option<usize>,
    }

    impl Mapper for Recorder {
        fn name(&self) -> String {
            "recorder".into()
        }
        fn map(&self, r: &RegionInfo) -> Result<(), Error> {
            if Some(r.len) == self.refuse {
                return Err(Error::Mapper {
                    mapper: "recorder".into(),
                    why: "refused".into(),
                });
            }
            self.log.lock().unwrap().push(format!("map {:#x}", r.vaddr));
            Ok(())
        }
        fn unmap(&self, r: &RegionInfo) {
            self.log
                .lock()
                .unwrap()
                .push(format!("unmap {:#x}", r.vaddr));
        }
    }

    fn leak_map() -> &'static MemMap {
        Box::leak(Box::new(MemMap::new()))
    }

    #[test]
    fn late_mapper_hears_of_earlier_regions_and_later_ones() {
        let map = leak_map();
        let a = map.register(0x1000, 0x1000, Domain::Host).unwrap();
        let rec = Arc::new(Recorder::default());
        let guard = map.add_mapper(rec.clone()).unwrap();
        let b = map.register(0x4000, 0x1000, Domain::Host).unwrap();
        map.unregister(a);
        assert_eq!(
            *rec.log.lock().unwrap(),
            vec!["map 0x1000", "map 0x4000", "unmap 0x1000"]
        );
        // The freed slot is reused.
        let c = map.register(0x9000, 0x1000, Domain::Host).unwrap();
        assert_eq!(c, a);
        drop(guard);
        map.unregister(b);
        map.unregister(c);
        // A removed mapper hears nothing more.
        assert_eq!(rec.log.lock().unwrap().len(), 4);
        assert_eq!(map.find(0x9000), None);
    }

    #[test]
    fn a_refusing_mapper_rolls_back_the_others() {
        let map = leak_map();
        let ok = Arc::new(Recorder::default());
        let bad = Arc::new(Recorder {
            refuse: Some(0x2000),
            ..Default::default()
        });
        let _g1 = map.add_mapper(ok.clone()).unwrap();
        let _g2 = map.add_mapper(bad.clone()).unwrap();
        assert!(map.register(0x10000, 0x2000, Domain::Host).is_err());
        assert_eq!(
            *ok.log.lock().unwrap(),
            vec!["map 0x10000", "unmap 0x10000"]
        );
        assert_eq!(map.find(0x10000), None);
    }

    #[test]
    fn sizes_are_checked() {
        let map = leak_map();
        assert!(map.register(0x1000, 0, Domain::Host).is_err());
        assert!(
            map.register(0x1000, REGION_LEN_MAX + 1, Domain::Host)
                .is_err()
        );
    }
}
