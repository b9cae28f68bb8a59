//! Every system call of the PCIe driver: VFIO ioctls, `pread`/`pwrite` on the device's
//! regions, `mmap` of BARs and of DMA memory. Nothing else in the crate calls into the
//! kernel for PCIe; the rest is logic, unit-tested against the twin in
//! [`super::twin`].
//!
//! The ABI structures come from `vfio-bindings` (rust-vmm), generated from the kernel's
//! `linux/vfio.h`; the ioctl numbers are `_IO(VFIO_TYPE, VFIO_BASE + n)` as that header
//! defines them.

use super::Error;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::ptr::NonNull;
use vfio_bindings::bindings::vfio as v;

const fn vfio_io(n: u32) -> libc::c_ulong {
    // _IO(type, nr): no direction, no size.
    (((v::VFIO_TYPE as u32) << 8) | (v::VFIO_BASE + n)) as libc::c_ulong
}

const GET_API_VERSION: libc::c_ulong = vfio_io(0);
const CHECK_EXTENSION: libc::c_ulong = vfio_io(1);
const SET_IOMMU: libc::c_ulong = vfio_io(2);
const GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
const GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
const GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_io(6);
const DEVICE_GET_INFO: libc::c_ulong = vfio_io(7);
const DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_io(8);
const IOMMU_GET_INFO: libc::c_ulong = vfio_io(12);
const IOMMU_MAP_DMA: libc::c_ulong = vfio_io(13);
const IOMMU_UNMAP_DMA: libc::c_ulong = vfio_io(14);
const DEVICE_FEATURE: libc::c_ulong = vfio_io(17);

/// The PCI configuration space's region index.
pub const CONFIG_REGION: u32 = v::VFIO_PCI_CONFIG_REGION_INDEX;

fn os_err(what: impl Into<String>) -> Error {
    Error::Os {
        what: what.into(),
        source: io::Error::last_os_error(),
    }
}

/// # Safety
/// `arg` must be what the ioctl `req` expects on `fd` (a pointer to its structure with
/// `argsz` set, or an integer).
unsafe fn ioctl(fd: &impl AsRawFd, req: libc::c_ulong, arg: libc::c_ulong) -> libc::c_int {
    // SAFETY: the caller vouches for `arg`.
    unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) }
}

/// An open `/dev/vfio/vfio`.
#[derive(Debug)]
pub struct Container(File);

/// One region of a device (BAR, config space...), as VFIO reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionInfo {
    /// Its index.
    pub index: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Bytes.
    pub size: u64,
    /// Its offset in the device file.
    pub offset: u64,
}

impl RegionInfo {
    /// Whether it may be mapped with `mmap`.
    pub fn mappable(&self) -> bool {
        self.flags & v::VFIO_REGION_INFO_FLAG_MMAP != 0
    }
}

impl Container {
    /// Opens the container and checks the API version and the type1v2 IOMMU.
    pub fn open() -> Result<Container, Error> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/vfio/vfio")
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::Setup(
                    "/dev/vfio/vfio is missing: modprobe vfio-pci (pollux-setup status tells what else is missing)".into(),
                ),
                _ => Error::Os {
                    what: "open /dev/vfio/vfio".into(),
                    source: e,
                },
            })?;
        let c = Container(f);
        // SAFETY: GET_API_VERSION takes no argument.
        let ver = unsafe { ioctl(&c.0, GET_API_VERSION, 0) };
        if ver != v::VFIO_API_VERSION as i32 {
            return Err(Error::Setup(format!(
                "VFIO API version {ver}, this driver speaks {}",
                v::VFIO_API_VERSION
            )));
        }
        // SAFETY: CHECK_EXTENSION takes an integer.
        let has = unsafe { ioctl(&c.0, CHECK_EXTENSION, v::VFIO_TYPE1v2_IOMMU as _) };
        if has <= 0 {
            return Err(Error::Setup(
                "the VFIO container has no type1v2 IOMMU: modprobe vfio_iommu_type1, and boot with intel_iommu=on (or amd_iommu=on)".into(),
            ));
        }
        Ok(c)
    }

    /// Selects the type1v2 IOMMU (after a group was added).
    pub fn set_iommu(&self) -> Result<(), Error> {
        // SAFETY: SET_IOMMU takes an integer.
        if unsafe { ioctl(&self.0, SET_IOMMU, v::VFIO_TYPE1v2_IOMMU as _) } < 0 {
            return Err(os_err("VFIO_SET_IOMMU type1v2"));
        }
        Ok(())
    }

    /// The IOVA ranges the IOMMU accepts (inclusive ends), or `None` when the kernel
    /// does not report them.
    pub fn iova_ranges(&self) -> Result<Option<Vec<(u64, u64)>>, Error> {
        let mut buf = vec![0u64; 512];
        let len = (buf.len() * 8) as u32;
        {
            let hdr = buf.as_mut_ptr() as *mut v::vfio_iommu_type1_info;
            // SAFETY: the buffer is 4 KiB, aligned for u64, larger than the header.
            unsafe {
                (*hdr).argsz = len;
            }
            // SAFETY: the kernel writes at most `argsz` bytes into the buffer.
            if unsafe { ioctl(&self.0, IOMMU_GET_INFO, hdr as _) } < 0 {
                return Err(os_err("VFIO_IOMMU_GET_INFO"));
            }
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let rd32 = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap());
        let rd64 = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().unwrap());
        let flags = rd32(4);
        let argsz = rd32(0) as usize;
        if flags & v::VFIO_IOMMU_INFO_CAPS == 0 || argsz > bytes.len() {
            return Ok(None);
        }
        let mut off = rd32(16) as usize;
        let mut hops = 0;
        while off != 0 && off + 16 <= bytes.len() && hops < 32 {
            let id = u16::from_ne_bytes([bytes[off], bytes[off + 1]]) as u32;
            if id == v::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
                let n = rd32(off + 8) as usize;
                let mut out = Vec::with_capacity(n);
                for i in 0..n {
                    let at = off + 16 + i * 16;
                    if at + 16 > bytes.len() {
                        break;
                    }
                    out.push((rd64(at), rd64(at + 8)));
                }
                return Ok(Some(out));
            }
            off = rd32(off + 4) as usize;
            hops += 1;
        }
        Ok(None)
    }

    /// Maps `len` bytes at `vaddr` for device reads and writes at `iova`.
    pub fn map_dma(&self, vaddr: usize, iova: u64, len: usize) -> Result<(), Error> {
        let mut m = v::vfio_iommu_type1_dma_map {
            argsz: std::mem::size_of::<v::vfio_iommu_type1_dma_map>() as u32,
            flags: v::VFIO_DMA_MAP_FLAG_READ | v::VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: vaddr as u64,
            iova,
            size: len as u64,
        };
        // SAFETY: `m` is a valid vfio_iommu_type1_dma_map with argsz set.
        if unsafe { ioctl(&self.0, IOMMU_MAP_DMA, &mut m as *mut _ as _) } < 0 {
            return Err(os_err(format!(
                "VFIO_IOMMU_MAP_DMA of {len:#x} bytes at iova {iova:#x}"
            )));
        }
        Ok(())
    }

    /// Unmaps what [`Self::map_dma`] mapped at `iova`.
    pub fn unmap_dma(&self, iova: u64, len: usize) -> Result<(), Error> {
        let mut m = v::vfio_iommu_type1_dma_unmap {
            argsz: std::mem::size_of::<v::vfio_iommu_type1_dma_unmap>() as u32,
            flags: 0,
            iova,
            size: len as u64,
            data: Default::default(),
        };
        // SAFETY: `m` is a valid vfio_iommu_type1_dma_unmap with argsz set.
        if unsafe { ioctl(&self.0, IOMMU_UNMAP_DMA, &mut m as *mut _ as _) } < 0 {
            return Err(os_err(format!("VFIO_IOMMU_UNMAP_DMA at iova {iova:#x}")));
        }
        Ok(())
    }
}

/// An open `/dev/vfio/<group>`.
#[derive(Debug)]
pub struct Group(File);

impl Group {
    /// Opens group `n`.
    pub fn open(n: u32) -> Result<Group, Error> {
        let path = format!("/dev/vfio/{n}");
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map(Group)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::Setup(format!(
                    "{path} is missing: bind the device to vfio-pci (pollux-setup bind <bdf>)"
                )),
                io::ErrorKind::ResourceBusy => Error::Setup(format!(
                    "{path} is busy: another process (another polluxd?) has the device open"
                )),
                _ => Error::Os {
                    what: format!("open {path}"),
                    source: e,
                },
            })
    }

    /// Whether every device of the group is bound to vfio-pci or to no driver.
    pub fn viable(&self) -> Result<bool, Error> {
        let mut s = v::vfio_group_status {
            argsz: std::mem::size_of::<v::vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: `s` is a valid vfio_group_status with argsz set.
        if unsafe { ioctl(&self.0, GROUP_GET_STATUS, &mut s as *mut _ as _) } < 0 {
            return Err(os_err("VFIO_GROUP_GET_STATUS"));
        }
        Ok(s.flags & v::VFIO_GROUP_FLAGS_VIABLE != 0)
    }

    /// Adds the group to `c`.
    pub fn set_container(&self, c: &Container) -> Result<(), Error> {
        let fd: libc::c_int = c.0.as_raw_fd();
        // SAFETY: SET_CONTAINER takes a pointer to the container's fd.
        if unsafe { ioctl(&self.0, GROUP_SET_CONTAINER, &fd as *const _ as _) } < 0 {
            return Err(os_err("VFIO_GROUP_SET_CONTAINER"));
        }
        Ok(())
    }

    /// The device file of `bdf`.
    pub fn device(&self, bdf: &str) -> Result<DeviceFd, Error> {
        let name = CString::new(bdf).map_err(|_| Error::Setup(format!("bad BDF {bdf:?}")))?;
        // SAFETY: GET_DEVICE_FD takes a NUL-terminated name.
        let fd = unsafe { ioctl(&self.0, GROUP_GET_DEVICE_FD, name.as_ptr() as _) };
        if fd < 0 {
            return Err(os_err(format!("VFIO_GROUP_GET_DEVICE_FD {bdf}")));
        }
        // SAFETY: the kernel gave us this new descriptor.
        Ok(DeviceFd(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
    }
}

/// A VFIO device file.
#[derive(Debug)]
pub struct DeviceFd(File);

impl DeviceFd {
    /// The number of regions, after checking that it is a PCI device.
    pub fn num_regions(&self) -> Result<u32, Error> {
        let mut i = v::vfio_device_info {
            argsz: 16,
            ..Default::default()
        };
        // SAFETY: `i` is a valid vfio_device_info (argsz 16 asks for the base fields).
        if unsafe { ioctl(&self.0, DEVICE_GET_INFO, &mut i as *mut _ as _) } < 0 {
            return Err(os_err("VFIO_DEVICE_GET_INFO"));
        }
        if i.flags & v::VFIO_DEVICE_FLAGS_PCI == 0 {
            return Err(Error::Setup("the VFIO device is not a PCI device".into()));
        }
        Ok(i.num_regions)
    }

    /// Region `index`.
    pub fn region(&self, index: u32) -> Result<RegionInfo, Error> {
        let mut r = v::vfio_region_info {
            argsz: std::mem::size_of::<v::vfio_region_info>() as u32,
            index,
            ..Default::default()
        };
        // SAFETY: `r` is a valid vfio_region_info with argsz set.
        if unsafe { ioctl(&self.0, DEVICE_GET_REGION_INFO, &mut r as *mut _ as _) } < 0 {
            return Err(os_err(format!("VFIO_DEVICE_GET_REGION_INFO {index}")));
        }
        Ok(RegionInfo {
            index,
            flags: r.flags,
            size: r.size,
            offset: r.offset,
        })
    }

    /// Reads from a region (config space accesses go through here).
    pub fn read_at(&self, r: &RegionInfo, off: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.0
            .read_exact_at(buf, r.offset + off)
            .map_err(|e| Error::Os {
                what: format!("read region {} at {off:#x}", r.index),
                source: e,
            })
    }

    /// Writes to a region.
    pub fn write_at(&self, r: &RegionInfo, off: u64, buf: &[u8]) -> Result<(), Error> {
        self.0
            .write_all_at(buf, r.offset + off)
            .map_err(|e| Error::Os {
                what: format!("write region {} at {off:#x}", r.index),
                source: e,
            })
    }

    /// Exports `len` bytes at `offset` of region `index` as a dma-buf
    /// (`VFIO_DEVICE_FEATURE_DMA_BUF`, Linux 6.19 and later), for another device's driver
    /// (an RDMA NIC's `ibv_reg_dmabuf_mr`) to map peer-to-peer.
    pub fn dma_buf(&self, index: u32, offset: u64, len: u64) -> Result<OwnedFd, Error> {
        // vfio_device_feature header, vfio_device_feature_dma_buf, one range.
        let mut buf = [0u64; 5];
        let argsz = (8 + 16 + 16) as u32;
        let words: [u32; 6] = [
            argsz,
            v::VFIO_DEVICE_FEATURE_GET | v::VFIO_DEVICE_FEATURE_DMA_BUF,
            index,
            (libc::O_RDWR | libc::O_CLOEXEC) as u32,
            0,
            1,
        ];
        for (i, w) in words.iter().enumerate() {
            let b = &mut buf[i / 2];
            *b |= (*w as u64) << (32 * (i % 2));
        }
        buf[3] = offset;
        buf[4] = len;
        // SAFETY: a vfio_device_feature with the dma-buf payload and one range, argsz set.
        let fd = unsafe { ioctl(&self.0, DEVICE_FEATURE, buf.as_mut_ptr() as _) };
        if fd < 0 {
            return Err(os_err(format!(
                "VFIO_DEVICE_FEATURE_DMA_BUF of region {index} (Linux 6.19 or later exports PCI BARs as dma-bufs)"
            )));
        }
        // SAFETY: the kernel gave us this new descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Maps a region shared, for MMIO.
    pub fn mmap(&self, r: &RegionInfo) -> Result<Mapping, Error> {
        if !r.mappable() || r.size == 0 {
            return Err(Error::Setup(format!(
                "region {} of the device cannot be mapped (flags {:#x}, {} bytes)",
                r.index, r.flags, r.size
            )));
        }
        // SAFETY: a fresh shared mapping of the device file; the kernel checks the range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                r.size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.0.as_raw_fd(),
                r.offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_err(format!("mmap region {}", r.index)));
        }
        Ok(Mapping {
            ptr: NonNull::new(p as *mut u8).expect("mmap returned null"),
            len: r.size as usize,
        })
    }
}

/// A mapping made here, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a plain mapping; its users decide who touches which bytes.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Anonymous memory of `len` bytes (a multiple of 4 KiB), zeroed, populated and
    /// locked so that its pages stay put while a device uses them.
    pub fn anonymous(len: usize) -> Result<Mapping, Error> {
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_err(format!("mmap {len} bytes of DMA memory")));
        }
        // SAFETY: the range was just mapped. A failed mlock leaves it usable: VFIO pins
        // the pages it maps in any case.
        unsafe { libc::mlock(p, len) };
        Ok(Mapping {
            ptr: NonNull::new(p as *mut u8).expect("mmap returned null"),
            len,
        })
    }

    /// The first byte.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never, for mappings made here).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by this type and is unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr() as *mut libc::c_void, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_vfio_h() {
        // _IO(';', 100 + n) from linux/vfio.h.
        assert_eq!(GET_API_VERSION, 0x3b64);
        assert_eq!(GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(IOMMU_UNMAP_DMA, 0x3b72);
    }

    #[test]
    fn a_machine_without_vfio_says_what_to_do() {
        if std::path::Path::new("/dev/vfio/vfio").exists() {
            return; // this machine has VFIO; the lab covers it
        }
        let e = Container::open().unwrap_err().to_string();
        assert!(e.contains("modprobe vfio-pci"), "{e}");
    }

    #[test]
    fn anonymous_dma_memory_is_zeroed() {
        let m = Mapping::anonymous(8192).unwrap();
        // SAFETY: the mapping is 8 KiB and ours.
        let s = unsafe { std::slice::from_raw_parts(m.ptr(), m.len()) };
        assert!(s.iter().all(|&b| b == 0));
    }
}
