//! Fixed-size DMA buffer pools with per-thread caches (SPDK's iobuf).
//!
//! Two pools, small and large, each one [`DmaRegion`] carved into equal buffers; free
//! buffers are indices in a lock-free queue. Each thread gets a cache (its
//! [`IoChannel`] of [`Iobuf`]) that takes buffers from the pool in batches and gives
//! them back in batches, so a thread in steady state touches only its own cache.

use super::addr::{Cpu, CpuAddr, Initiator, Segment};
use super::map::RegionId;
use super::region::{DmaRegion, HugepagePolicy};
use crate::Error;
use crate::thread::{IoChannel, IoDevice, Thread};
use crossbeam::queue::ArrayQueue;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;

/// Sizes of the pools and caches, with SPDK's names and defaults
/// (`iobuf_set_options`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IobufOpts {
    /// Buffers in the small pool (default 8192).
    pub small_pool_count: usize,
    /// Buffers in the large pool (default 1024).
    pub large_pool_count: usize,
    /// Bytes in a small buffer (default 8 KiB).
    pub small_bufsize: usize,
    /// Bytes in a large buffer (default 128 KiB).
    pub large_bufsize: usize,
    /// Small buffers a thread keeps cached (default 128).
    pub small_cache_size: usize,
    /// Large buffers a thread keeps cached (default 16).
    pub large_cache_size: usize,
    /// Where the memory comes from.
    pub hugepages: HugepagePolicy,
}

impl Default for IobufOpts {
    fn default() -> Self {
        IobufOpts {
            small_pool_count: 8192,
            large_pool_count: 1024,
            small_bufsize: 8 << 10,
            large_bufsize: 128 << 10,
            small_cache_size: 128,
            large_cache_size: 16,
            hugepages: HugepagePolicy::Prefer,
        }
    }
}

impl IobufOpts {
    /// Small pools for tests and examples: 512 small, 64 large buffers.
    pub fn small() -> Self {
        IobufOpts {
            small_pool_count: 512,
            large_pool_count: 64,
            small_cache_size: 32,
            large_cache_size: 4,
            ..Self::default()
        }
    }
}

struct BufPool {
    name: &'static str,
    buf_size: usize,
    count: usize,
    cache_size: usize,
    region: DmaRegion,
    free: ArrayQueue<u32>,
}

impl BufPool {
    fn new(
        name: &'static str,
        buf_size: usize,
        count: usize,
        cache_size: usize,
        alloc: &mut dyn FnMut(usize) -> Result<DmaRegion, Error>,
    ) -> Result<BufPool, Error> {
        let bad = |why: String| Error::InvalidParam {
            what: format!("{name} iobuf pool"),
            why,
        };
        if buf_size < 4096 || buf_size % 4096 != 0 || buf_size > u32::MAX as usize {
            return Err(bad(format!(
                "buffer size {buf_size} must be whole 4 KiB pages, at most 4 GiB"
            )));
        }
        if count == 0 || count > u32::MAX as usize {
            return Err(bad(format!("{count} buffers: it needs 1 to {}", u32::MAX)));
        }
        let len = buf_size.checked_mul(count).ok_or_else(|| {
            bad(format!(
                "{count} buffers of {buf_size} bytes overflow the address space"
            ))
        })?;
        let region = alloc(len)?;
        let free = ArrayQueue::new(count);
        for i in 0..count as u32 {
            free.push(i).expect("sized for every buffer");
        }
        Ok(BufPool {
            name,
            buf_size,
            count,
            cache_size,
            region,
            free,
        })
    }

    fn ptr(&self, idx: u32) -> NonNull<u8> {
        debug_assert!((idx as usize) < self.count);
        // SAFETY: idx < count, so the offset stays inside the region.
        let p = unsafe { self.region.as_ptr().add(idx as usize * self.buf_size) };
        NonNull::new(p).expect("inside a mapping")
    }
}

/// The small and large DMA buffer pools.
pub struct Iobuf {
    small: BufPool,
    large: BufPool,
}

impl fmt::Debug for Iobuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iobuf")
            .field("levels", &self.pool_levels())
            .finish()
    }
}

impl Iobuf {
    /// Allocates and registers both pools in host memory.
    pub fn new(opts: &IobufOpts) -> Result<Arc<Iobuf>, Error> {
        let policy = opts.hugepages;
        Self::new_in(opts, &mut |len| DmaRegion::new(len, policy))
    }

    /// Both pools in regions `alloc` makes (device memory, such as an NVMe CMB);
    /// `opts.hugepages` is not used.
    pub fn new_in(
        opts: &IobufOpts,
        alloc: &mut dyn FnMut(usize) -> Result<DmaRegion, Error>,
    ) -> Result<Arc<Iobuf>, Error> {
        if opts.small_bufsize > opts.large_bufsize {
            return Err(Error::InvalidParam {
                what: "small_bufsize".into(),
                why: "it must not exceed large_bufsize".into(),
            });
        }
        Ok(Arc::new(Iobuf {
            small: BufPool::new(
                "small",
                opts.small_bufsize,
                opts.small_pool_count,
                opts.small_cache_size,
                alloc,
            )?,
            large: BufPool::new(
                "large",
                opts.large_bufsize,
                opts.large_pool_count,
                opts.large_cache_size,
                alloc,
            )?,
        }))
    }

    /// This thread's cache, created on first use.
    pub fn channel(self: &Arc<Self>) -> Result<IoChannel<Iobuf>, Error> {
        Thread::expect_current().get_io_channel(self)
    }

    /// A cache of the calling thread's own, apart from the thread's shared one, keeping at
    /// most `small` and `large` buffers: for a module that sizes its cache itself, as an
    /// NVMe-oF transport's poll group does with `buf_cache_size`. Its buffers return to
    /// it, and what it holds returns to the pools when its last reference goes.
    pub fn module_cache(self: &Arc<Self>, small: usize, large: usize) -> IoChannel<Iobuf> {
        IoChannel::unshared(self.clone(), self.cache(small, large))
    }

    fn cache(self: &Arc<Self>, small_cap: usize, large_cap: usize) -> IobufCache {
        // What a cache may hold is bounded by the pool (no list grows past its pool).
        let (small_cap, large_cap) = (
            small_cap.min(self.small.count),
            large_cap.min(self.large.count),
        );
        IobufCache {
            iobuf: self.clone(),
            small: RefCell::new(Vec::with_capacity(small_cap)),
            large: RefCell::new(Vec::with_capacity(large_cap)),
            small_cap,
            large_cap,
            out: Cell::new(0),
            stats: Cell::new([IobufPoolStats::default(); 2]),
        }
    }

    /// Free buffers per pool (not counting thread caches), as `(name, free, total)`.
    pub fn pool_levels(&self) -> Vec<(String, usize, usize)> {
        [&self.small, &self.large]
            .iter()
            .map(|p| (p.name.to_owned(), p.free.len(), p.count))
            .collect()
    }

    /// Whether every buffer is back in its pool.
    pub fn is_full(&self) -> bool {
        self.small.free.len() == self.small.count && self.large.free.len() == self.large.count
    }

    /// Bytes in a small buffer.
    pub fn small_bufsize(&self) -> usize {
        self.small.buf_size
    }

    /// Bytes in a large buffer: the most one [`DmaBuf`] holds.
    pub fn large_bufsize(&self) -> usize {
        self.large.buf_size
    }

    fn pool(&self, large: bool) -> &BufPool {
        if large { &self.large } else { &self.small }
    }
}

/// Where one cache's buffers of one size came from (SPDK's `iobuf_get_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IobufPoolStats {
    /// Buffers handed out from the cache.
    pub cache: u64,
    /// Buffers handed out after a refill from the shared pool.
    pub main: u64,
    /// Requests the pool could not serve (the caller waits and retries).
    pub retry: u64,
}

/// A cache of free buffers: a thread's own (from [`Iobuf::channel`]) or a module's
/// (from [`Iobuf::module_cache`], sized by the module).
pub struct IobufCache {
    iobuf: Arc<Iobuf>,
    small: RefCell<Vec<u32>>,
    large: RefCell<Vec<u32>>,
    // The most buffers of each size kept cached.
    small_cap: usize,
    large_cap: usize,
    // Buffers taken through this cache and not yet given back.
    out: Cell<usize>,
    stats: Cell<[IobufPoolStats; 2]>,
}

impl fmt::Debug for IobufCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IobufCache")
            .field("small", &self.small.borrow().len())
            .field("large", &self.large.borrow().len())
            .finish()
    }
}

impl IoDevice for Iobuf {
    type Channel = IobufCache;

    fn create_channel(self: &Arc<Self>, _thread: &Thread) -> Result<IobufCache, Error> {
        Ok(self.cache(self.small.cache_size, self.large.cache_size))
    }
}

impl IobufCache {
    fn list(&self, large: bool) -> &RefCell<Vec<u32>> {
        if large { &self.large } else { &self.small }
    }

    /// Buffers of this cache in use (taken and not yet dropped).
    pub fn outstanding(&self) -> usize {
        self.out.get()
    }

    /// Where this cache's small and large buffers came from.
    pub fn stats(&self) -> [IobufPoolStats; 2] {
        self.stats.get()
    }

    /// The most small and large buffers this cache keeps.
    pub fn capacity(&self) -> (usize, usize) {
        (self.small_cap, self.large_cap)
    }

    fn cap(&self, large: bool) -> usize {
        if large {
            self.large_cap
        } else {
            self.small_cap
        }
    }

    fn count(&self, large: bool, f: impl FnOnce(&mut IobufPoolStats)) {
        let mut s = self.stats.get();
        f(&mut s[usize::from(large)]);
        self.stats.set(s);
    }

    fn take(&self, large: bool) -> Option<u32> {
        let Some(i) = self.take_inner(large) else {
            self.count(large, |s| s.retry += 1);
            return None;
        };
        self.out.set(self.out.get() + 1);
        Some(i)
    }

    fn take_inner(&self, large: bool) -> Option<u32> {
        let mut list = self.list(large).borrow_mut();
        if let Some(i) = list.pop() {
            self.count(large, |s| s.cache += 1);
            return Some(i);
        }
        let pool = self.iobuf.pool(large);
        if self.cap(large) == 0 {
            let i = pool.free.pop()?;
            self.count(large, |s| s.main += 1);
            return Some(i);
        }
        // Refill half the cache in one go.
        for _ in 0..(self.cap(large) / 2).max(1) {
            match pool.free.pop() {
                Some(i) => list.push(i),
                None => break,
            }
        }
        let i = list.pop()?;
        self.count(large, |s| s.main += 1);
        Some(i)
    }

    fn give(&self, large: bool, idx: u32) {
        self.out.set(self.out.get() - 1);
        let pool = self.iobuf.pool(large);
        let cap = self.cap(large);
        if cap == 0 {
            let back = pool.free.push(idx);
            back.expect("pool has room for every buffer it owns");
            return;
        }
        let mut list = self.list(large).borrow_mut();
        if list.len() >= cap {
            // Return half the cache to the pool; the list never grows past its capacity.
            for _ in 0..(cap / 2).max(1) {
                let i = list.pop().expect("cache is full");
                let back = pool.free.push(i);
                back.expect("pool has room for every buffer it owns");
            }
        }
        list.push(idx);
    }
}

impl Drop for IobufCache {
    fn drop(&mut self) {
        for (large, list) in [(false, &self.small), (true, &self.large)] {
            let pool = self.iobuf.pool(large);
            for i in list.borrow_mut().drain(..) {
                pool.free
                    .push(i)
                    .expect("pool has room for every buffer it owns");
            }
        }
    }
}

impl IoChannel<Iobuf> {
    /// Buffers for `len` bytes as a scatter list of at most `N` entries: one small or
    /// large buffer, or several large ones. `None` when the pools are short or `len`
    /// needs more than `N` buffers (nothing is kept).
    pub fn get_sgl<const N: usize>(&self, len: usize) -> Option<arrayvec::ArrayVec<DmaBuf, N>> {
        self.get_sgl_unit(len, self.iobuf.large.buf_size)
    }

    /// As [`get_sgl`](Self::get_sgl), in pieces of at most `unit` bytes (SPDK's
    /// `io_unit_size`; a unit beyond the large buffer size counts as the large size).
    pub fn get_sgl_unit<const N: usize>(
        &self,
        len: usize,
        unit: usize,
    ) -> Option<arrayvec::ArrayVec<DmaBuf, N>> {
        let unit = unit.clamp(1, self.iobuf.large.buf_size);
        let mut out = arrayvec::ArrayVec::new();
        let mut left = len;
        while left > 0 {
            let n = left.min(unit);
            out.try_push(self.get(n)?).ok()?;
            left -= n;
        }
        Some(out)
    }

    /// A buffer of at least `len` bytes (small or large), with its length set to `len`;
    /// `None` when `len` exceeds the large buffer size or the pool is empty (retry
    /// later: back-pressure, not an error).
    pub fn get(&self, len: usize) -> Option<DmaBuf> {
        let iobuf = &self.iobuf;
        let large = if len <= iobuf.small.buf_size {
            false
        } else if len <= iobuf.large.buf_size {
            true
        } else {
            return None;
        };
        let idx = self.take(large)?;
        let pool = iobuf.pool(large);
        Some(DmaBuf {
            ch: self.clone(),
            ptr: pool.ptr(idx),
            idx,
            cap: pool.buf_size as u32,
            len: len as u32,
            large,
            region: pool.region.id(),
        })
    }
}

/// A DMA buffer from a pool; back to its thread's cache when dropped.
///
/// It is `!Send`: it belongs to the thread whose cache it came from. An I/O in flight
/// owns it (it is moved into the request) until the I/O completes.
pub struct DmaBuf {
    ch: IoChannel<Iobuf>,
    ptr: NonNull<u8>,
    idx: u32,
    cap: u32,
    len: u32,
    large: bool,
    region: RegionId,
}

impl fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuf")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("cap", &self.cap)
            .finish()
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        self.ch.give(self.large, self.idx);
    }
}

impl DmaBuf {
    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether no byte is in use.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes it can hold.
    pub fn capacity(&self) -> usize {
        self.cap as usize
    }

    /// Sets the bytes in use; panics beyond the capacity.
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.cap as usize, "DmaBuf::set_len beyond capacity");
        self.len = len as u32;
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the buffer is ours alone (the pool handed out its index once) and no
        // device writes it: a device touches it only while an I/O owns this DmaBuf.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len as usize) }
    }

    /// The bytes in use, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` excludes other borrows.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len as usize) }
    }

    /// The segment of registered memory it covers (its length in use).
    pub fn segment(&self) -> Segment {
        Segment {
            region: self.region,
            vaddr: self.ptr.as_ptr() as usize,
            len: self.len,
        }
    }

    /// Its address for `initiator`, or `None` when that initiator cannot reach it.
    pub fn resolve<I: Initiator>(&self, initiator: &I) -> Option<I::Addr> {
        initiator.resolve(&self.segment())
    }

    /// Its CPU address.
    pub fn cpu_addr(&self) -> CpuAddr {
        Cpu.resolve(&self.segment())
            .expect("the CPU reaches all host memory")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thread::Harness;

    /// Test pools in locked memory: `small` and `large` buffers, caches of the sizes given.
    fn pools(small: usize, large: usize, small_cache: usize, large_cache: usize) -> Arc<Iobuf> {
        Iobuf::new(&IobufOpts {
            small_pool_count: small,
            large_pool_count: large,
            small_cache_size: small_cache,
            large_cache_size: large_cache,
            hugepages: HugepagePolicy::Never,
            ..IobufOpts::small()
        })
        .unwrap()
    }

    #[test]
    fn caches_refill_and_return_and_pools_end_full() {
        let iobuf = Iobuf::new(&IobufOpts {
            hugepages: HugepagePolicy::Never,
            ..IobufOpts::small()
        })
        .unwrap();
        let h = Harness::new(2);
        let held = h.run_on(0, || {
            let ch = iobuf.channel().unwrap();
            let mut bufs: Vec<DmaBuf> = (0..100).map(|_| ch.get(4096).unwrap()).collect();
            bufs.push(ch.get(100 << 10).unwrap());
            assert!(ch.get(1 << 20).is_none(), "beyond the large size");
            bufs
        });
        assert_eq!(held.len(), 101);
        assert!(!iobuf.is_full());
        // Distinct buffers.
        let mut addrs: Vec<usize> = held
            .iter()
            .map(|b| b.cpu_addr().as_ptr() as usize)
            .collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 101);
        h.run_on(0, || drop(held));
        h.shutdown().unwrap();
        assert!(iobuf.is_full(), "{:?}", iobuf.pool_levels());
    }

    #[test]
    fn caches_of_size_zero_and_absurd_sizes() {
        let iobuf = pools(4, 1, 0, 0);
        let h = Harness::new(1);
        h.run_on(0, || {
            let ch = iobuf.channel().unwrap();
            let b: Vec<DmaBuf> = (0..4).map(|_| ch.get(10).unwrap()).collect();
            drop(b);
            assert!(iobuf.is_full(), "no cache: straight back to the pool");
        });
        h.shutdown().unwrap();
        for opts in [
            IobufOpts {
                small_bufsize: (1 << 52) + 4096,
                large_bufsize: (1 << 52) + 4096,
                ..IobufOpts::small()
            },
            IobufOpts {
                small_bufsize: 1000,
                ..IobufOpts::small()
            },
            IobufOpts {
                small_pool_count: 0,
                ..IobufOpts::small()
            },
        ] {
            assert!(Iobuf::new(&opts).is_err());
        }
    }

    #[test]
    fn a_module_cache_keeps_its_own_size_counts_its_sources_and_splits_in_units() {
        let iobuf = pools(64, 4, 8, 2);
        let h = Harness::new(1);
        h.run_on(0, || {
            let ch = iobuf.module_cache(6, 0);
            assert_eq!(ch.capacity(), (6, 0));
            // 40 KiB in 8 KiB units: five small buffers; the first refill takes three.
            let b: arrayvec::ArrayVec<DmaBuf, 16> = ch.get_sgl_unit(40 << 10, 8 << 10).unwrap();
            assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![8192; 5]);
            let [small, large] = ch.stats();
            assert_eq!(small.cache + small.main, 5);
            assert_eq!(large, IobufPoolStats::default());
            drop(b);
            assert_eq!(ch.outstanding(), 0);
            // Back in the cache (two refills of three took six), not the pool.
            assert_eq!(iobuf.pool_levels()[0].1, 64 - 6);
            let again = ch.get(4096).unwrap();
            assert_eq!(ch.stats()[0].cache, small.cache + 1);
            drop(again);
            // A large unit and no large cache: straight from and back to the pool.
            let big: arrayvec::ArrayVec<DmaBuf, 16> = ch.get_sgl_unit(200 << 10, 1 << 30).unwrap();
            assert_eq!(
                big.len(),
                2,
                "units beyond the large size count as the large size"
            );
            assert_eq!(iobuf.pool_levels()[1].1, 2);
            drop(big);
            assert_eq!(iobuf.pool_levels()[1].1, 4);
            // A pool that runs dry is counted as a retry.
            let all: Vec<DmaBuf> = (0..4).map(|_| ch.get(100 << 10).unwrap()).collect();
            assert!(ch.get(100 << 10).is_none());
            assert_eq!(ch.stats()[1].retry, 1);
            drop(all);
            // The thread's own cache is another one.
            assert_eq!(iobuf.channel().unwrap().capacity(), (8, 2));
            drop(ch);
            assert!(
                iobuf.is_full(),
                "a dropped module cache gives everything back"
            );
        });
        h.shutdown().unwrap();
    }

    #[test]
    fn an_empty_pool_is_back_pressure() {
        let iobuf = pools(8, 1, 4, 1);
        let h = Harness::new(1);
        h.run_on(0, || {
            let ch = iobuf.channel().unwrap();
            let bufs: Vec<DmaBuf> = (0..8).map(|_| ch.get(10).unwrap()).collect();
            assert!(ch.get(10).is_none());
            drop(bufs);
            assert!(ch.get(10).is_some());
        });
        h.shutdown().unwrap();
        assert!(iobuf.is_full());
    }
}
