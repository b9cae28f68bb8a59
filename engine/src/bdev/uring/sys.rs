//! Raw syscalls of the io_uring bdev: registered-buffer table updates from any thread,
//! and block-device geometry ioctls.

use std::io;
use std::os::fd::RawFd;

/// `IORING_REGISTER_BUFFERS_UPDATE` (include/uapi/linux/io_uring.h).
const IORING_REGISTER_BUFFERS_UPDATE: libc::c_uint = 16;

/// `struct io_uring_rsrc_update2` (include/uapi/linux/io_uring.h).
#[repr(C)]
struct RsrcUpdate2 {
    offset: u32,
    resv: u32,
    data: u64,
    tags: u64,
    nr: u32,
    resv2: u32,
}
const _: () = assert!(std::mem::size_of::<RsrcUpdate2>() == 32);

/// Puts `iov` (or an empty slot, for a null base) at `slot` of the ring's sparse
/// registered-buffer table. The kernel serialises this against the ring's own use, so
/// any thread may call it.
pub(crate) fn update_registered_buffer(
    ring_fd: RawFd,
    slot: u32,
    iov: &libc::iovec,
) -> io::Result<()> {
    let upd = RsrcUpdate2 {
        offset: slot,
        resv: 0,
        data: iov as *const libc::iovec as u64,
        tags: 0,
        nr: 1,
        resv2: 0,
    };
    // SAFETY: `upd` and the iovec it points to are valid for the call; the kernel copies
    // both before returning and pins the pages the iovec names.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring_fd,
            IORING_REGISTER_BUFFERS_UPDATE,
            &upd as *const RsrcUpdate2,
            std::mem::size_of::<RsrcUpdate2>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `BLKGETSIZE64`: a block device's size in bytes.
pub(crate) fn blkdev_size(fd: RawFd) -> io::Result<u64> {
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd, BLKGETSIZE64, &mut size as *mut u64) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// `BLKSSZGET`: a block device's logical block size.
pub(crate) fn blkdev_logical_block_size(fd: RawFd) -> io::Result<u32> {
    const BLKSSZGET: libc::c_ulong = 0x1268;
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd, BLKSSZGET, &mut size as *mut libc::c_int) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size as u32)
}

/// Whether `fd` lives on tmpfs (`statfs` magic).
pub(crate) fn is_tmpfs(fd: RawFd) -> io::Result<bool> {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    // SAFETY: statfs is plain data; fstatfs fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid, writable statfs.
    let rc = unsafe { libc::fstatfs(fd, &mut st) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == TMPFS_MAGIC)
}
