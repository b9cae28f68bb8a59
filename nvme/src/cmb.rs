//! The Controller Memory Buffer: memory on the controller that the host reaches
//! through a BAR and the controller reaches at its own controller base address.
//!
//! Enabling it: set CMBMSC.CRE so CMBLOC/CMBSZ read non-zero (QEMU's controller shows
//! them only then), find the BAR and offset, program CMBMSC with CBA (the BAR's bus
//! address plus the offset) and CMSE, map the BAR, and keep IOVAs away from
//! CBA..CBA+size (the controller decodes those itself). Then [`Cmb::alloc`] hands out
//! buffers, each with two addresses of different types: a CPU pointer for the host and
//! an [`NvmeAddr`] for this controller alone.

use crate::pci::{Device, Error, Mmio, NvmeAddr};
use crate::spec::regs::{Cap, Cmbloc, Cmbmsc, Cmbsz, offset};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A controller's enabled CMB.
pub struct Cmb {
    dev: Arc<dyn Device>,
    bar: u8,
    mmio: Mmio,
    bar_off: u64,
    cba: u64,
    size: u64,
    sz: Cmbsz,
    free: Mutex<Vec<(u64, u64)>>,
    used: AtomicU64,
}

impl fmt::Debug for Cmb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmb")
            .field("cba", &format_args!("{:#x}", self.cba))
            .field("size", &self.size)
            .field("sqs", &self.sz.sqs())
            .field("lists", &self.sz.lists())
            .field("data", &(self.sz.rds() && self.sz.wds()))
            .finish()
    }
}

impl Cmb {
    /// Enables and maps the CMB of the controller behind `dev` (disabled or enabled:
    /// the CMB registers are independent of CC.EN). `None` when it has none.
    pub fn enable(dev: &Arc<dyn Device>) -> Result<Option<Arc<Cmb>>, Error> {
        let cap = Cap::from(dev.read64(offset::CAP));
        if !cap.cmbs() {
            return Ok(None);
        }
        // CRE first: CMBLOC and CMBSZ read as zero until then on NVMe 1.4 controllers.
        dev.write32(
            offset::CMBMSC,
            u64::from(Cmbmsc::new().with_cre(true)) as u32,
        );
        let loc = Cmbloc::from(dev.read32(offset::CMBLOC));
        let sz = Cmbsz::from(dev.read32(offset::CMBSZ));
        if sz.sz() == 0 {
            return Ok(None);
        }
        let (Some(unit), Some(size)) = (
            4096u64.checked_shl(4 * sz.szu() as u32),
            (sz.sz() as u64).checked_shl(12 + 4 * sz.szu() as u32),
        ) else {
            return Err(Error::Unsupported {
                ctrlr: dev.name().into(),
                what: format!(
                    "CMBSZ {:#x} describes a CMB too large to address",
                    u32::from(sz)
                ),
            });
        };
        let bar_off = loc.ofst() as u64 * unit;
        let bar = loc.bir();
        let mmio = dev.map_bar(bar)?;
        if bar_off + size > mmio.len() as u64 {
            return Err(Error::Unsupported {
                ctrlr: dev.name().into(),
                what: format!(
                    "CMB of {size} bytes at offset {bar_off:#x} runs past BAR{bar} ({} bytes)",
                    mmio.len()
                ),
            });
        }
        let cba = dev.bar_bus_addr(bar)? + bar_off;
        if cba % 4096 != 0 {
            return Err(Error::Unsupported {
                ctrlr: dev.name().into(),
                what: format!("CMB bus address {cba:#x} is not 4 KiB aligned"),
            });
        }
        dev.reserve_iova(cba, size);
        let msc = Cmbmsc::new()
            .with_cre(true)
            .with_cmse(true)
            .with_cba(cba >> 12);
        // High dword first: controllers (QEMU's among them) take CBA when the low dword
        // is written.
        let v = u64::from(msc);
        dev.write32(offset::CMBMSC + 4, (v >> 32) as u32);
        dev.write32(offset::CMBMSC, v as u32);
        let sts = dev.read32(offset::CMBSTS);
        if sts & 1 != 0 {
            return Err(Error::Unsupported {
                ctrlr: dev.name().into(),
                what: format!("the controller refused CMB address {cba:#x} (CMBSTS.CBAI)"),
            });
        }
        tracing::info!(
            ctrlr = dev.name(),
            bar,
            cba = format_args!("{cba:#x}"),
            size,
            sqs = sz.sqs(),
            lists = sz.lists(),
            rds = sz.rds(),
            wds = sz.wds(),
            "CMB enabled"
        );
        Ok(Some(Arc::new(Cmb {
            dev: dev.clone(),
            bar,
            mmio,
            bar_off,
            cba,
            size,
            sz,
            free: Mutex::new(vec![(0, size)]),
            used: AtomicU64::new(0),
        })))
    }

    /// The whole CMB as a dma-buf, for an RDMA NIC to register (`ibv_reg_dmabuf_mr`);
    /// an error says why not (a kernel before 6.19 has no VFIO dma-buf export).
    pub fn export_dma_buf(&self) -> Result<std::os::fd::OwnedFd, Error> {
        self.dev.export_dma_buf(self.bar, self.bar_off, self.size)
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes allocated.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Where the controller sees it (CMBMSC.CBA).
    pub fn controller_base(&self) -> NvmeAddr {
        NvmeAddr::new(self.cba)
    }

    /// Whether submission queues may live in it (CMBSZ.SQS).
    pub fn supports_sqs(&self) -> bool {
        self.sz.sqs()
    }

    /// Whether PRP and SGL lists may live in it (CMBSZ.LISTS).
    pub fn supports_lists(&self) -> bool {
        self.sz.lists()
    }

    /// Whether data for both reads and writes may live in it (CMBSZ.RDS and WDS).
    pub fn supports_data(&self) -> bool {
        self.sz.rds() && self.sz.wds()
    }

    /// Whether `a` is one of its controller addresses.
    pub fn contains(&self, a: NvmeAddr) -> bool {
        a.get() >= self.cba && a.get() < self.cba + self.size
    }

    /// `len` bytes aligned to 4 KiB, or `None` when it is full.
    pub fn alloc(self: &Arc<Self>, len: usize) -> Option<CmbBuf> {
        let len = (len as u64).div_ceil(4096).max(1) * 4096;
        let mut free = self.free.lock().unwrap();
        let i = free.iter().position(|&(_, l)| l >= len)?;
        let (off, l) = free[i];
        if l == len {
            free.remove(i);
        } else {
            free[i] = (off + len, l - len);
        }
        self.used.fetch_add(len, Ordering::Relaxed);
        Some(CmbBuf {
            cmb: self.clone(),
            off,
            len,
        })
    }

    fn release(&self, off: u64, len: u64) {
        let mut free = self.free.lock().unwrap();
        free.push((off, len));
        free.sort_unstable();
        // Merge neighbours.
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(free.len());
        for &(o, l) in free.iter() {
            match out.last_mut() {
                Some(last) if last.0 + last.1 == o => last.1 += l,
                _ => out.push((o, l)),
            }
        }
        *free = out;
        self.used.fetch_sub(len, Ordering::Relaxed);
    }
}

/// A buffer in a CMB: [`Self::as_ptr`] for the CPU, [`Self::nvme_addr`] for the
/// controller. Freed on drop.
pub struct CmbBuf {
    cmb: Arc<Cmb>,
    off: u64,
    len: u64,
}

impl fmt::Debug for CmbBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmbBuf")
            .field("addr", &self.nvme_addr())
            .field("len", &self.len)
            .finish()
    }
}

impl CmbBuf {
    /// The controller's address of its first byte.
    pub fn nvme_addr(&self) -> NvmeAddr {
        NvmeAddr::new(self.cmb.cba + self.off)
    }

    /// Its offset from the start of the CMB (and of the CMB's dma-buf).
    pub fn offset(&self) -> u64 {
        self.off
    }

    /// The CPU's pointer to its first byte (through the BAR mapping).
    pub fn as_ptr(&self) -> *mut u8 {
        self.cmb
            .mmio
            .ptr_at((self.cmb.bar_off + self.off) as usize, self.len as usize)
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether it is empty (never).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `src` into it at `at` (the CPU writing through the BAR).
    pub fn write(&mut self, at: usize, src: &[u8]) {
        assert!(
            at + src.len() <= self.len as usize,
            "CMB write out of bounds"
        );
        // SAFETY: in bounds (asserted); the buffer is ours and no command uses it while
        // we hold `&mut self`.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.as_ptr().add(at), src.len()) }
    }

    /// Copies from it at `at` into `dst`.
    pub fn read(&self, at: usize, dst: &mut [u8]) {
        assert!(
            at + dst.len() <= self.len as usize,
            "CMB read out of bounds"
        );
        // SAFETY: in bounds (asserted); callers read after the command that filled it
        // completed.
        unsafe { std::ptr::copy_nonoverlapping(self.as_ptr().add(at), dst.as_mut_ptr(), dst.len()) }
    }

    /// The CMB it lies in.
    pub fn cmb(&self) -> &Arc<Cmb> {
        &self.cmb
    }
}

impl Drop for CmbBuf {
    fn drop(&mut self) {
        self.cmb.release(self.off, self.len);
    }
}
