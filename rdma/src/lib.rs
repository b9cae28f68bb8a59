//! # pollux-rdma
//!
//! Safe types over the system's rdma-core (libibverbs, librdmacm), loaded at run time
//! ([`sys`]): programs start on machines without rdma-core, and a machine with no RDMA
//! device is a normal condition reported by name ([`Error::NoDevice`],
//! [`Error::NoLibrary`]).
//!
//! - [`devices`]: the device list; [`Context`]: an open device.
//! - [`Pd`] (protection domain), [`Mr`] (memory region, also from a dma-buf fd with
//!   `ibv_reg_dmabuf_mr`), [`Cq`] (completion queue polled in batches), [`Srq`] (shared
//!   receive queue), [`Qp`] (an RC queue pair made through rdma_cm).
//! - [`EventChannel`] and [`CmId`]: rdma_cm listeners and connections. The connection
//!   setup is a typestate: a [`CmId`] is [`Listening`], [`Incoming`] (a connect request
//!   to accept or reject) or [`Active`] (resolved, connecting or connected).
//!
//! A child keeps its parent alive: a memory region holds its protection domain, which
//! holds its context. It depends on nothing else of Pollux; the engine makes a
//! protection domain a mapper of its DMA registration map.

pub mod sys;

use libc::c_void;
use std::ffi::CStr;
use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What went wrong; each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// rdma-core is not installed.
    #[error("no RDMA: {0}")]
    NoLibrary(String),
    /// No RDMA device (or none of that name).
    #[error(
        "no RDMA device{}: load a driver (for Soft-RoCE: modprobe rdma_rxe; rdma link add rxe0 type rxe netdev eth0)",
        .0.as_deref().map(|n| format!(" named {n}")).unwrap_or_default()
    )]
    NoDevice(Option<String>),
    /// A verbs or rdma_cm call failed.
    #[error("{what}: {source}")]
    Os {
        /// The call.
        what: String,
        /// errno.
        #[source]
        source: std::io::Error,
    },
    /// A connection event did not come in time, or came wrong.
    #[error("{0}")]
    Cm(String),
}

fn lib() -> Result<&'static sys::Lib, Error> {
    sys::lib().map_err(Error::NoLibrary)
}

fn os(what: impl Into<String>) -> Error {
    Error::Os {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

fn os_rc(what: impl Into<String>, rc: i32) -> Error {
    Error::Os {
        what: what.into(),
        source: if rc > 0 {
            std::io::Error::from_raw_os_error(rc)
        } else {
            std::io::Error::last_os_error()
        },
    }
}

/// The RDMA devices' names.
pub fn devices() -> Result<Vec<String>, Error> {
    let l = lib()?;
    let mut n = 0;
    // SAFETY: plain call; the list is freed below.
    let list = unsafe { (l.get_device_list)(&mut n) };
    if list.is_null() {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) | Some(libc::ENODEV) | None => {
                Err(Error::NoDevice(None))
            }
            _ => Err(Error::Os {
                what: "ibv_get_device_list".into(),
                source: e,
            }),
        };
    }
    let mut out = Vec::new();
    for i in 0..n.max(0) as usize {
        // SAFETY: the list holds `n` devices.
        let d = unsafe { *list.add(i) };
        // SAFETY: a device of the list has a NUL-terminated name.
        let name = unsafe { CStr::from_ptr((l.get_device_name)(d)) };
        out.push(name.to_string_lossy().into_owned());
    }
    // SAFETY: the list came from ibv_get_device_list.
    unsafe { (l.free_device_list)(list) };
    Ok(out)
}

/// Limits of a device (from `ibv_query_device`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceAttr {
    /// Work requests per queue.
    pub max_qp_wr: u32,
    /// Scatter-gather entries per work request.
    pub max_sge: u32,
    /// Scatter-gather entries per RDMA READ (iWARP NICs often take 1).
    pub max_sge_rd: u32,
    /// Completion queue entries.
    pub max_cqe: u32,
    /// RDMA READs in flight a queue pair accepts as responder.
    pub max_qp_rd_atom: u32,
    /// RDMA READs in flight a queue pair issues.
    pub max_qp_init_rd_atom: u32,
    /// Work requests per shared receive queue.
    pub max_srq_wr: u32,
    /// The vendor (0xffffff: Soft-RoCE).
    pub vendor_id: u32,
}

/// An open RDMA device (`ibv_context`).
pub struct Context {
    raw: *mut c_void,
    owned: bool,
}

// SAFETY: libibverbs contexts are thread-safe.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context").field("raw", &self.raw).finish()
    }
}

impl Context {
    /// Opens device `name` (the first one when `None`).
    pub fn open(name: Option<&str>) -> Result<Arc<Context>, Error> {
        let l = lib()?;
        let mut n = 0;
        // SAFETY: plain call; freed below.
        let list = unsafe { (l.get_device_list)(&mut n) };
        if list.is_null() {
            return Err(Error::NoDevice(name.map(str::to_owned)));
        }
        let mut found = None;
        for i in 0..n.max(0) as usize {
            // SAFETY: the list holds `n` devices, each with a name.
            let (d, dn) = unsafe {
                let d = *list.add(i);
                (
                    d,
                    CStr::from_ptr((l.get_device_name)(d))
                        .to_string_lossy()
                        .into_owned(),
                )
            };
            if name.is_none_or(|want| want == dn) {
                found = Some(d);
                break;
            }
        }
        let r = match found {
            Some(d) => {
                // SAFETY: a device of the live list.
                let raw = unsafe { (l.open_device)(d) };
                if raw.is_null() {
                    Err(os("ibv_open_device"))
                } else {
                    Ok(Arc::new(Context { raw, owned: true }))
                }
            }
            None => Err(Error::NoDevice(name.map(str::to_owned))),
        };
        // SAFETY: opened devices stay valid after the list is freed.
        unsafe { (l.free_device_list)(list) };
        r
    }

    /// A context rdma_cm opened (not closed here: rdma_cm owns it).
    fn borrowed(raw: *mut c_void) -> Arc<Context> {
        Arc::new(Context { raw, owned: false })
    }

    /// The raw `ibv_context`.
    pub fn as_raw(&self) -> *mut c_void {
        self.raw
    }

    /// The device's name (`rxe0`, `mlx5_0`...).
    pub fn name(&self) -> String {
        let Ok(l) = lib() else {
            return String::new();
        };
        // SAFETY: `struct ibv_context` starts with its device; a device has a name.
        unsafe {
            let dev = sys::field_ptr(self.raw, 0);
            CStr::from_ptr((l.get_device_name)(dev))
                .to_string_lossy()
                .into_owned()
        }
    }

    /// The device's limits.
    pub fn query(&self) -> Result<DeviceAttr, Error> {
        let l = lib()?;
        let mut a = sys::ibv_device_attr([0; 232]);
        // SAFETY: a live context and an attribute buffer of the right size.
        let rc = unsafe { (l.query_device)(self.raw, &mut a) };
        if rc != 0 {
            return Err(os_rc("ibv_query_device", rc));
        }
        let u = |o: usize| u32::from_ne_bytes(a.0[o..o + 4].try_into().unwrap());
        use sys::device_attr as d;
        Ok(DeviceAttr {
            max_qp_wr: u(d::MAX_QP_WR),
            max_sge: u(d::MAX_SGE),
            max_sge_rd: u(d::MAX_SGE_RD),
            max_cqe: u(d::MAX_CQE),
            max_qp_rd_atom: u(d::MAX_QP_RD_ATOM),
            max_qp_init_rd_atom: u(d::MAX_QP_INIT_RD_ATOM),
            max_srq_wr: u(d::MAX_SRQ_WR),
            vendor_id: u(d::VENDOR_ID),
        })
    }

    /// The function at `off` of the context's ops table.
    fn op(&self, off: usize) -> *mut c_void {
        // SAFETY: `off` is an ops entry of the live context (sys::ops).
        unsafe { sys::field_ptr(self.raw, off) }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if self.owned {
            if let Ok(l) = lib() {
                // SAFETY: opened by us; every child holds an Arc to us, so none is left.
                unsafe { (l.close_device)(self.raw) };
            }
        }
    }
}

/// A protection domain.
pub struct Pd {
    raw: *mut c_void,
    ctx: Arc<Context>,
}

// SAFETY: verbs objects are thread-safe.
unsafe impl Send for Pd {}
// SAFETY: as above.
unsafe impl Sync for Pd {}

impl fmt::Debug for Pd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pd").field("raw", &self.raw).finish()
    }
}

/// What a memory region allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access(i32);

impl Access {
    /// Local writes only (receive buffers, RDMA READ targets).
    pub const LOCAL: Access = Access(sys::IBV_ACCESS_LOCAL_WRITE);
    /// Local writes and remote reads and writes (what a peer reaches with the rkey).
    pub const REMOTE: Access = Access(
        sys::IBV_ACCESS_LOCAL_WRITE | sys::IBV_ACCESS_REMOTE_READ | sys::IBV_ACCESS_REMOTE_WRITE,
    );
}

impl Pd {
    /// A protection domain on `ctx`.
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<Pd>, Error> {
        let l = lib()?;
        // SAFETY: a live context.
        let raw = unsafe { (l.alloc_pd)(ctx.raw) };
        if raw.is_null() {
            return Err(os("ibv_alloc_pd"));
        }
        Ok(Arc::new(Pd {
            raw,
            ctx: ctx.clone(),
        }))
    }

    /// Its context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// Registers `len` bytes at `addr`.
    ///
    /// # Safety
    /// The memory must stay allocated while the region exists (the NIC reaches it).
    pub unsafe fn reg_mr(
        self: &Arc<Self>,
        addr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<Mr, Error> {
        let l = lib()?;
        // SAFETY: a live PD; the caller keeps the memory.
        let raw = unsafe { (l.reg_mr)(self.raw, addr as *mut c_void, len, access.0) };
        if raw.is_null() {
            return Err(os(format!("ibv_reg_mr of {len} bytes")));
        }
        Ok(Mr {
            raw,
            pd: self.clone(),
        })
    }

    /// Registers `len` bytes at `offset` of a dma-buf (device memory, such as an NVMe
    /// CMB exported through VFIO), seen by peers at `iova`.
    pub fn reg_dmabuf_mr(
        self: &Arc<Self>,
        fd: i32,
        offset: u64,
        len: usize,
        iova: u64,
        access: Access,
    ) -> Result<Mr, Error> {
        let l = lib()?;
        let f = l.reg_dmabuf_mr.ok_or_else(|| {
            Error::NoLibrary(
                "this libibverbs has no ibv_reg_dmabuf_mr (rdma-core 34 or later has)".into(),
            )
        })?;
        // SAFETY: a live PD; the kernel checks the dma-buf.
        let raw = unsafe { f(self.raw, offset, len, iova, fd, access.0) };
        if raw.is_null() {
            return Err(os("ibv_reg_dmabuf_mr"));
        }
        Ok(Mr {
            raw,
            pd: self.clone(),
        })
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: every MR, SRQ and QP of this PD holds an Arc to it: none is left.
            unsafe { (l.dealloc_pd)(self.raw) };
        }
    }
}

/// A memory region.
pub struct Mr {
    raw: *mut sys::ibv_mr,
    pd: Arc<Pd>,
}

// SAFETY: verbs objects are thread-safe.
unsafe impl Send for Mr {}
// SAFETY: as above.
unsafe impl Sync for Mr {}

impl fmt::Debug for Mr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mr")
            .field("lkey", &self.lkey())
            .field("rkey", &self.rkey())
            .finish()
    }
}

impl Mr {
    /// The local key (for this side's scatter-gather entries).
    pub fn lkey(&self) -> u32 {
        // SAFETY: a live MR.
        unsafe { (*self.raw).lkey }
    }

    /// The remote key (for the peer's RDMA READ and WRITE).
    pub fn rkey(&self) -> u32 {
        // SAFETY: a live MR.
        unsafe { (*self.raw).rkey }
    }

    /// The registered address.
    pub fn addr(&self) -> u64 {
        // SAFETY: a live MR.
        unsafe { (*self.raw).addr as u64 }
    }

    /// Registered bytes.
    pub fn len(&self) -> usize {
        // SAFETY: a live MR.
        unsafe { (*self.raw).length }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its protection domain.
    pub fn pd(&self) -> &Arc<Pd> {
        &self.pd
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: registered here, deregistered once.
            unsafe { (l.dereg_mr)(self.raw) };
        }
    }
}

/// A work completion.
#[derive(Clone, Copy, Debug, Default)]
pub struct Wc(sys::ibv_wc);

impl Wc {
    /// The work request's id.
    pub fn wr_id(&self) -> u64 {
        self.0.wr_id
    }

    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        self.0.status == sys::IBV_WC_SUCCESS
    }

    /// Whether it was flushed (the queue pair went to error: a disconnect).
    pub fn flushed(&self) -> bool {
        self.0.status == sys::IBV_WC_WR_FLUSH_ERR
    }

    /// The status code (`ibv_wc_status`).
    pub fn status(&self) -> u32 {
        self.0.status
    }

    /// Bytes received (receive completions).
    pub fn byte_len(&self) -> u32 {
        self.0.byte_len
    }

    /// The queue pair number it belongs to.
    pub fn qp_num(&self) -> u32 {
        self.0.qp_num
    }

    /// The rkey the peer invalidated with SEND_WITH_INV, if it did.
    pub fn invalidated_rkey(&self) -> Option<u32> {
        (self.0.wc_flags & sys::IBV_WC_WITH_INV != 0).then_some(self.0.imm_or_inv)
    }
}

/// A completion queue.
pub struct Cq {
    raw: *mut c_void,
    ctx: Arc<Context>,
    poll_fn: PollCqFn,
    notify_fn: NotifyCqFn,
    _ch: Option<Arc<CompChannel>>,
}

/// A completion channel: its file descriptor turns readable when an armed CQ gets a
/// completion, so a poller can sleep.
pub struct CompChannel {
    raw: *mut c_void,
}

// SAFETY: completion channels are usable from any thread.
unsafe impl Send for CompChannel {}
// SAFETY: as above.
unsafe impl Sync for CompChannel {}

impl fmt::Debug for CompChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompChannel")
            .field("fd", &self.fd())
            .finish()
    }
}

impl CompChannel {
    /// A channel of `ctx`, read without blocking.
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<CompChannel>, Error> {
        let l = lib()?;
        // SAFETY: a live context.
        let raw = unsafe { (l.create_comp_channel)(ctx.raw) };
        if raw.is_null() {
            return Err(os("ibv_create_comp_channel"));
        }
        let ch = CompChannel { raw };
        let fd = ch.fd();
        // SAFETY: the channel's own descriptor.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Ok(Arc::new(ch))
    }

    /// Its file descriptor.
    pub fn fd(&self) -> i32 {
        // SAFETY: `struct ibv_comp_channel { context; int fd; ... }`.
        unsafe { *((self.raw as *const u8).add(8) as *const i32) }
    }

    /// Reads and acknowledges the notifications waiting; returns how many.
    pub fn drain(&self) -> usize {
        let Ok(l) = lib() else { return 0 };
        let mut n = 0;
        loop {
            let mut cq = std::ptr::null_mut();
            let mut ctx = std::ptr::null_mut();
            // SAFETY: a live, non-blocking channel.
            if unsafe { (l.get_cq_event)(self.raw, &mut cq, &mut ctx) } != 0 {
                return n;
            }
            // SAFETY: the event's CQ is live (a CQ holds its channel, not the reverse,
            // and is destroyed only after its events are acknowledged here).
            unsafe { (l.ack_cq_events)(cq, 1) };
            n += 1;
        }
    }
}

impl Drop for CompChannel {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: its CQs hold an Arc to it: none is left.
            unsafe { (l.destroy_comp_channel)(self.raw) };
        }
    }
}

/// rdma_cm's device contexts, held for the life of the process so that protection
/// domains and queues made on them outlive any one connection (`rdma_get_devices`).
pub fn cm_contexts() -> Result<Vec<Arc<Context>>, Error> {
    static LIST: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let l = lib()?;
    let mut n = 0;
    let list = *LIST.get_or_init(|| {
        // SAFETY: plain call; the list is never freed (held on purpose).
        unsafe { (l.get_devices)(&mut n) as usize }
    }) as *mut *mut c_void;
    if list.is_null() {
        return Err(Error::NoDevice(None));
    }
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        // SAFETY: the list is NULL-terminated.
        let c = unsafe { *list.add(i) };
        if c.is_null() {
            break;
        }
        out.push(Context::borrowed(c));
        i += 1;
    }
    Ok(out)
}

// SAFETY: verbs objects are thread-safe.
unsafe impl Send for Cq {}
// SAFETY: as above.
unsafe impl Sync for Cq {}

impl fmt::Debug for Cq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cq").field("raw", &self.raw).finish()
    }
}

impl Cq {
    /// A completion queue of at least `entries` entries, polled only.
    pub fn new(ctx: &Arc<Context>, entries: u32) -> Result<Arc<Cq>, Error> {
        Self::make(ctx, entries, None)
    }

    /// A completion queue whose notifications ([`Cq::arm`]) arrive on `ch`.
    pub fn with_channel(
        ctx: &Arc<Context>,
        entries: u32,
        ch: &Arc<CompChannel>,
    ) -> Result<Arc<Cq>, Error> {
        Self::make(ctx, entries, Some(ch))
    }

    fn make(
        ctx: &Arc<Context>,
        entries: u32,
        ch: Option<&Arc<CompChannel>>,
    ) -> Result<Arc<Cq>, Error> {
        let l = lib()?;
        // SAFETY: a live context and channel.
        let raw = unsafe {
            (l.create_cq)(
                ctx.raw,
                entries as i32,
                std::ptr::null_mut(),
                ch.map_or(std::ptr::null_mut(), |c| c.raw),
                0,
            )
        };
        if raw.is_null() {
            return Err(os(format!("ibv_create_cq of {entries} entries")));
        }
        let f = ctx.op(sys::ops::POLL_CQ);
        // SAFETY: ops.poll_cq has this signature (verbs.h).
        let poll_fn = unsafe { std::mem::transmute::<*mut c_void, PollCqFn>(f) };
        let f = ctx.op(sys::ops::REQ_NOTIFY_CQ);
        // SAFETY: ops.req_notify_cq has this signature (verbs.h).
        let notify_fn = unsafe { std::mem::transmute::<*mut c_void, NotifyCqFn>(f) };
        Ok(Arc::new(Cq {
            raw,
            ctx: ctx.clone(),
            poll_fn,
            notify_fn,
            _ch: ch.cloned(),
        }))
    }

    /// Asks for a notification on its channel at the next completion (poll once more
    /// afterwards: a completion that came before the call does not notify).
    pub fn arm(&self) -> Result<(), Error> {
        // SAFETY: a live CQ.
        let rc = unsafe { (self.notify_fn)(self.raw, 0) };
        if rc != 0 {
            return Err(os_rc("ibv_req_notify_cq", rc));
        }
        Ok(())
    }

    /// Reaps up to `out.len()` completions; returns how many.
    pub fn poll(&self, out: &mut [Wc]) -> Result<usize, Error> {
        // SAFETY: a live CQ; `out` holds `len` ibv_wc (Wc is repr-transparent in size).
        let n = unsafe {
            (self.poll_fn)(
                self.raw,
                out.len() as i32,
                out.as_mut_ptr() as *mut sys::ibv_wc,
            )
        };
        if n < 0 {
            return Err(os_rc("ibv_poll_cq", -n));
        }
        Ok(n as usize)
    }

    /// Its context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: its queue pairs hold an Arc to it: none is left.
            unsafe { (l.destroy_cq)(self.raw) };
        }
    }
}

/// A scatter-gather entry: `len` bytes at `addr` of the region with `lkey`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sge {
    /// Address (in the region's registered range).
    pub addr: u64,
    /// Bytes.
    pub len: u32,
    /// The region's local key.
    pub lkey: u32,
}

fn sges(s: &[Sge], out: &mut [sys::ibv_sge; 16]) -> usize {
    assert!(
        s.len() <= 16,
        "at most 16 scatter-gather entries per work request"
    );
    for (i, e) in s.iter().enumerate() {
        out[i] = sys::ibv_sge {
            addr: e.addr,
            length: e.len,
            lkey: e.lkey,
        };
    }
    s.len()
}

type PollCqFn = unsafe extern "C" fn(*mut c_void, i32, *mut sys::ibv_wc) -> i32;
type NotifyCqFn = unsafe extern "C" fn(*mut c_void, i32) -> i32;
type PostRecvFn =
    unsafe extern "C" fn(*mut c_void, *mut sys::ibv_recv_wr, *mut *mut sys::ibv_recv_wr) -> i32;
type PostSendFn =
    unsafe extern "C" fn(*mut c_void, *mut sys::ibv_send_wr, *mut *mut sys::ibv_send_wr) -> i32;

fn post_recv_raw(
    f: PostRecvFn,
    obj: *mut c_void,
    wr_id: u64,
    s: &[Sge],
    what: &str,
) -> Result<(), Error> {
    let mut sg = [sys::ibv_sge::default(); 16];
    let n = sges(s, &mut sg);
    let mut wr = sys::ibv_recv_wr {
        wr_id,
        next: std::ptr::null_mut(),
        sg_list: sg.as_mut_ptr(),
        num_sge: n as i32,
    };
    let mut bad = std::ptr::null_mut();
    // SAFETY: a live queue; the work request and its entries live through the call (the
    // provider copies them).
    let rc = unsafe { f(obj, &mut wr, &mut bad) };
    if rc != 0 {
        return Err(os_rc(what, rc));
    }
    Ok(())
}

/// A shared receive queue.
pub struct Srq {
    raw: *mut c_void,
    pd: Arc<Pd>,
    post: PostRecvFn,
}

// SAFETY: verbs objects are thread-safe.
unsafe impl Send for Srq {}
// SAFETY: as above.
unsafe impl Sync for Srq {}

impl fmt::Debug for Srq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Srq").field("raw", &self.raw).finish()
    }
}

impl Srq {
    /// A shared receive queue of `max_wr` work requests of `max_sge` entries.
    pub fn new(pd: &Arc<Pd>, max_wr: u32, max_sge: u32) -> Result<Arc<Srq>, Error> {
        let l = lib()?;
        let mut a = sys::ibv_srq_init_attr {
            srq_context: std::ptr::null_mut(),
            max_wr,
            max_sge,
            srq_limit: 0,
        };
        // SAFETY: a live PD and attributes.
        let raw = unsafe { (l.create_srq)(pd.raw, &mut a) };
        if raw.is_null() {
            return Err(os(format!("ibv_create_srq of {max_wr} entries")));
        }
        let f = pd.ctx.op(sys::ops::POST_SRQ_RECV);
        // SAFETY: ops.post_srq_recv has this signature.
        let post = unsafe { std::mem::transmute::<*mut c_void, PostRecvFn>(f) };
        Ok(Arc::new(Srq {
            raw,
            pd: pd.clone(),
            post,
        }))
    }

    /// Posts a receive buffer.
    pub fn post_recv(&self, wr_id: u64, s: &[Sge]) -> Result<(), Error> {
        post_recv_raw(self.post, self.raw, wr_id, s, "ibv_post_srq_recv")
    }

    /// Its protection domain.
    pub fn pd(&self) -> &Arc<Pd> {
        &self.pd
    }
}

impl Drop for Srq {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: its queue pairs hold an Arc to it: none is left.
            unsafe { (l.destroy_srq)(self.raw) };
        }
    }
}

/// A send work request.
#[derive(Clone, Copy, Debug)]
pub enum SendOp {
    /// SEND (a capsule or a response).
    Send,
    /// SEND that also invalidates the peer's `rkey`.
    SendInvalidate(u32),
    /// RDMA WRITE to the peer's memory.
    Write {
        /// Peer address.
        remote_addr: u64,
        /// Peer key.
        rkey: u32,
    },
    /// RDMA READ from the peer's memory.
    Read {
        /// Peer address.
        remote_addr: u64,
        /// Peer key.
        rkey: u32,
    },
}

/// An RC queue pair, made on a [`CmId`].
pub struct Qp {
    raw: *mut sys::ibv_qp,
    post_send: PostSendFn,
    post_recv: PostRecvFn,
    _pd: Arc<Pd>,
    _cqs: (Arc<Cq>, Arc<Cq>),
    _srq: Option<Arc<Srq>>,
}

// SAFETY: verbs objects are thread-safe.
unsafe impl Send for Qp {}

impl fmt::Debug for Qp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qp")
            .field("qp_num", &self.qp_num())
            .finish()
    }
}

impl Qp {
    /// Its number (work completions carry it).
    pub fn qp_num(&self) -> u32 {
        // SAFETY: a live QP.
        unsafe { (*self.raw).qp_num }
    }

    /// Posts one send work request (signaled when `signaled`).
    pub fn post_send(
        &self,
        wr_id: u64,
        op: SendOp,
        s: &[Sge],
        signaled: bool,
    ) -> Result<(), Error> {
        let mut sg = [sys::ibv_sge::default(); 16];
        let n = sges(s, &mut sg);
        let mut wr = sys::ibv_send_wr {
            wr_id,
            sg_list: sg.as_mut_ptr(),
            num_sge: n as i32,
            send_flags: if signaled { sys::IBV_SEND_SIGNALED } else { 0 },
            ..Default::default()
        };
        match op {
            SendOp::Send => wr.opcode = sys::IBV_WR_SEND,
            SendOp::SendInvalidate(k) => {
                wr.opcode = sys::IBV_WR_SEND_WITH_INV;
                wr.imm_or_inv = k;
            }
            SendOp::Write { remote_addr, rkey } => {
                wr.opcode = sys::IBV_WR_RDMA_WRITE;
                wr.remote_addr = remote_addr;
                wr.rkey = rkey;
            }
            SendOp::Read { remote_addr, rkey } => {
                wr.opcode = sys::IBV_WR_RDMA_READ;
                wr.remote_addr = remote_addr;
                wr.rkey = rkey;
            }
        }
        let mut bad = std::ptr::null_mut();
        // SAFETY: a live QP; the request lives through the call.
        let rc = unsafe { (self.post_send)(self.raw as *mut c_void, &mut wr, &mut bad) };
        if rc != 0 {
            return Err(os_rc("ibv_post_send", rc));
        }
        Ok(())
    }

    /// Posts a receive buffer on the queue pair itself (without an SRQ).
    pub fn post_recv(&self, wr_id: u64, s: &[Sge]) -> Result<(), Error> {
        post_recv_raw(
            self.post_recv,
            self.raw as *mut c_void,
            wr_id,
            s,
            "ibv_post_recv",
        )
    }
}

/// The capacities of a new queue pair.
#[derive(Clone, Copy, Debug)]
pub struct QpCaps {
    /// Send work requests.
    pub max_send_wr: u32,
    /// Receive work requests (0 with an SRQ).
    pub max_recv_wr: u32,
    /// Entries per send request.
    pub max_send_sge: u32,
    /// Entries per receive request.
    pub max_recv_sge: u32,
}

/// rdma_cm events of one [`EventChannel`], read without blocking.
pub struct EventChannel {
    raw: *mut sys::rdma_event_channel,
}

// SAFETY: rdma_cm channels are usable from any thread.
unsafe impl Send for EventChannel {}
// SAFETY: as above.
unsafe impl Sync for EventChannel {}

impl fmt::Debug for EventChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventChannel")
            .field("fd", &self.fd())
            .finish()
    }
}

/// What happened on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CmEventKind {
    /// The address resolved (active side).
    AddrResolved,
    /// The route resolved (active side).
    RouteResolved,
    /// A host asks to connect (passive side).
    ConnectRequest,
    /// The peer rejected (active side).
    Rejected,
    /// The connection is up.
    Established,
    /// The peer disconnected.
    Disconnected,
    /// The device went away.
    DeviceRemoval,
    /// The connection's resources may be freed.
    TimewaitExit,
    /// Anything else (an error): its rdma_cm code.
    Other(u32),
}

impl CmEventKind {
    fn from_raw(e: u32) -> CmEventKind {
        match e {
            0 => CmEventKind::AddrResolved,
            2 => CmEventKind::RouteResolved,
            4 => CmEventKind::ConnectRequest,
            8 => CmEventKind::Rejected,
            9 => CmEventKind::Established,
            10 => CmEventKind::Disconnected,
            11 => CmEventKind::DeviceRemoval,
            15 => CmEventKind::TimewaitExit,
            x => CmEventKind::Other(x),
        }
    }
}

/// A connection event (acknowledged when read: its private data is copied).
#[derive(Debug)]
pub struct CmEvent {
    /// What happened.
    pub kind: CmEventKind,
    /// Its status (errno-like for errors; the reject reason for rejections).
    pub status: i32,
    /// The connection it is about (for a connect request: the new one).
    pub id: CmIdRef,
    /// The listener, for a connect request.
    pub listen_id: Option<CmIdRef>,
    /// The peer's private data (the NVMe-oF connect or accept data).
    pub private_data: Vec<u8>,
    /// The peer's `responder_resources`.
    pub responder_resources: u8,
    /// The peer's `initiator_depth`.
    pub initiator_depth: u8,
}

/// The raw `rdma_cm_id` an event is about, to match it against ids held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CmIdRef(usize);

impl EventChannel {
    /// A channel whose events are read without blocking.
    pub fn new() -> Result<Arc<EventChannel>, Error> {
        let l = lib()?;
        // SAFETY: plain call.
        let raw = unsafe { (l.create_event_channel)() };
        if raw.is_null() {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENODEV) {
                return Err(Error::NoDevice(None));
            }
            return Err(Error::Os {
                what: "rdma_create_event_channel".into(),
                source: e,
            });
        }
        // SAFETY: a live channel; its fd is ours to make non-blocking.
        unsafe {
            let fd = (*raw).fd;
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        Ok(Arc::new(EventChannel { raw }))
    }

    /// Its file descriptor (readable when an event waits).
    pub fn fd(&self) -> i32 {
        // SAFETY: a live channel.
        unsafe { (*self.raw).fd }
    }

    /// The next event, if one is there.
    pub fn get(&self) -> Result<Option<CmEvent>, Error> {
        let l = lib()?;
        let mut ev = std::ptr::null_mut();
        // SAFETY: a live channel (non-blocking).
        let rc = unsafe { (l.get_cm_event)(self.raw, &mut ev) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(Error::Os {
                what: "rdma_get_cm_event".into(),
                source: e,
            });
        }
        // SAFETY: a live event until acknowledged below; private data copied first.
        let out = unsafe {
            let e = &*ev;
            let pd = if e.private_data.is_null() {
                Vec::new()
            } else {
                std::slice::from_raw_parts(e.private_data as *const u8, e.private_data_len as usize)
                    .to_vec()
            };
            CmEvent {
                kind: CmEventKind::from_raw(e.event),
                status: e.status,
                id: CmIdRef(e.id as usize),
                listen_id: (!e.listen_id.is_null()).then_some(CmIdRef(e.listen_id as usize)),
                private_data: pd,
                responder_resources: e.responder_resources,
                initiator_depth: e.initiator_depth,
            }
        };
        // SAFETY: the event was read above and is acknowledged once.
        unsafe { (l.ack_cm_event)(ev) };
        Ok(Some(out))
    }

    /// Waits up to `timeout` for an event about `id` (or, for a listener, a connect
    /// request to it); events about other ids are logged and dropped. For the active
    /// side's step-by-step setup, and tests.
    pub fn wait_for(&self, id: CmIdRef, timeout: Duration) -> Result<CmEvent, Error> {
        let t0 = Instant::now();
        loop {
            if let Some(e) = self.get()? {
                if e.id == id || e.listen_id == Some(id) {
                    return Ok(e);
                }
                tracing::debug!(?e, "rdma_cm event for another id while waiting");
                continue;
            }
            if t0.elapsed() > timeout {
                return Err(Error::Cm(format!(
                    "no rdma_cm event in {} ms",
                    timeout.as_millis()
                )));
            }
            let mut p = libc::pollfd {
                fd: self.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, 10) };
        }
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: every id on it holds an Arc to it: none is left.
            unsafe { (l.destroy_event_channel)(self.raw) };
        }
    }
}

/// A listening id.
#[derive(Debug)]
pub enum Listening {}
/// A connect request, to accept or reject.
#[derive(Debug)]
pub enum Incoming {}
/// An active-side id, and every accepted connection.
#[derive(Debug)]
pub enum Active {}

/// An rdma_cm id in state `S`.
pub struct CmId<S> {
    raw: *mut c_void,
    ch: Arc<EventChannel>,
    qp: Option<Qp>,
    _s: PhantomData<S>,
}

// SAFETY: rdma_cm ids are usable from any thread (one at a time: &mut for changes).
unsafe impl<S> Send for CmId<S> {}

impl<S> fmt::Debug for CmId<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmId")
            .field("raw", &self.raw)
            .field("qp", &self.qp)
            .finish()
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            (ss, std::mem::size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as u16,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (ss, std::mem::size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

fn read_sockaddr(p: *const u8) -> Option<SocketAddr> {
    // SAFETY: `p` points at a sockaddr_storage-sized field of a live cm id.
    unsafe {
        let fam = std::ptr::read_unaligned(p as *const u16) as i32;
        if fam == libc::AF_INET {
            let sin = std::ptr::read_unaligned(p as *const libc::sockaddr_in);
            Some(SocketAddr::from((
                sin.sin_addr.s_addr.to_ne_bytes(),
                u16::from_be(sin.sin_port),
            )))
        } else if fam == libc::AF_INET6 {
            let s = std::ptr::read_unaligned(p as *const libc::sockaddr_in6);
            Some(SocketAddr::from((
                s.sin6_addr.s6_addr,
                u16::from_be(s.sin6_port),
            )))
        } else {
            None
        }
    }
}

impl<S> CmId<S> {
    fn create(ch: &Arc<EventChannel>) -> Result<*mut c_void, Error> {
        let l = lib()?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: a live channel.
        let rc = unsafe { (l.create_id)(ch.raw, &mut raw, std::ptr::null_mut(), sys::RDMA_PS_TCP) };
        if rc != 0 {
            return Err(os_rc("rdma_create_id", rc));
        }
        Ok(raw)
    }

    /// Moves its events to channel `ch` (a connection's events then reach the thread
    /// that serves it rather than its listener's).
    pub fn migrate(&mut self, ch: &Arc<EventChannel>) -> Result<(), Error> {
        let l = lib()?;
        // SAFETY: a live id and channel; the id holds the new channel from now on.
        let rc = unsafe { (l.migrate_id)(self.raw, ch.raw) };
        if rc != 0 {
            return Err(os_rc("rdma_migrate_id", rc));
        }
        self.ch = ch.clone();
        Ok(())
    }

    /// Its reference, to match events.
    pub fn id(&self) -> CmIdRef {
        CmIdRef(self.raw as usize)
    }

    /// The device context it is bound to (once bound or resolved).
    pub fn context(&self) -> Option<Arc<Context>> {
        // SAFETY: a live id.
        let v = unsafe { sys::field_ptr(self.raw, sys::cm_id::VERBS) };
        (!v.is_null()).then(|| Context::borrowed(v))
    }

    /// The local address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the field lies inside the live id.
        read_sockaddr(unsafe { (self.raw as *const u8).add(sys::cm_id::SRC_ADDR) })
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the field lies inside the live id.
        read_sockaddr(unsafe { (self.raw as *const u8).add(sys::cm_id::DST_ADDR) })
    }

    /// Its queue pair, once made.
    pub fn qp(&self) -> Option<&Qp> {
        self.qp.as_ref()
    }

    /// Makes its RC queue pair: completions on `send_cq` and `recv_cq`, receives from
    /// `srq` when given.
    pub fn create_qp(
        &mut self,
        pd: &Arc<Pd>,
        send_cq: &Arc<Cq>,
        recv_cq: &Arc<Cq>,
        srq: Option<&Arc<Srq>>,
        caps: QpCaps,
    ) -> Result<&Qp, Error> {
        let l = lib()?;
        let mut a = sys::ibv_qp_init_attr {
            qp_context: std::ptr::null_mut(),
            send_cq: send_cq.raw,
            recv_cq: recv_cq.raw,
            srq: srq.map_or(std::ptr::null_mut(), |s| s.raw),
            cap: sys::ibv_qp_cap {
                max_send_wr: caps.max_send_wr,
                max_recv_wr: if srq.is_some() { 0 } else { caps.max_recv_wr },
                max_send_sge: caps.max_send_sge,
                max_recv_sge: caps.max_recv_sge,
                max_inline_data: 0,
            },
            qp_type: sys::IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: a live id, PD, CQs and SRQ.
        let rc = unsafe { (l.create_qp)(self.raw, pd.raw, &mut a) };
        if rc != 0 {
            return Err(os_rc("rdma_create_qp", rc));
        }
        // SAFETY: rdma_create_qp set the id's qp.
        let raw = unsafe { sys::field_ptr(self.raw, sys::cm_id::QP) } as *mut sys::ibv_qp;
        let ctx = &pd.ctx;
        // SAFETY: the ops entries have these signatures.
        let (ps, pr) = unsafe {
            (
                std::mem::transmute::<*mut c_void, PostSendFn>(ctx.op(sys::ops::POST_SEND)),
                std::mem::transmute::<*mut c_void, PostRecvFn>(ctx.op(sys::ops::POST_RECV)),
            )
        };
        self.qp = Some(Qp {
            raw,
            post_send: ps,
            post_recv: pr,
            _pd: pd.clone(),
            _cqs: (send_cq.clone(), recv_cq.clone()),
            _srq: srq.cloned(),
        });
        Ok(self.qp.as_ref().unwrap())
    }
}

impl CmId<Listening> {
    /// Listens on `addr` (connect requests arrive on `ch`).
    pub fn listen(
        ch: &Arc<EventChannel>,
        addr: SocketAddr,
        backlog: i32,
    ) -> Result<CmId<Listening>, Error> {
        let l = lib()?;
        let raw = Self::create(ch)?;
        let id = CmId {
            raw,
            ch: ch.clone(),
            qp: None,
            _s: PhantomData,
        };
        let (ss, _) = sockaddr(addr);
        // SAFETY: a live id and an address.
        if unsafe { (l.bind_addr)(raw, &ss as *const _ as *const libc::sockaddr) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                || e.raw_os_error() == Some(libc::ENODEV)
            {
                return Err(Error::NoDevice(Some(format!(
                    "for {addr} (no RDMA device has that address)"
                ))));
            }
            return Err(Error::Os {
                what: format!("rdma_bind_addr {addr}"),
                source: e,
            });
        }
        // SAFETY: a bound id.
        if unsafe { (l.listen)(raw, backlog) } != 0 {
            return Err(os(format!("rdma_listen on {addr}")));
        }
        Ok(id)
    }

    /// Takes the new id of a connect request read from the channel.
    pub fn incoming(&self, ev: &CmEvent) -> Option<CmId<Incoming>> {
        (ev.kind == CmEventKind::ConnectRequest && ev.listen_id == Some(self.id())).then(|| CmId {
            raw: ev.id.0 as *mut c_void,
            ch: self.ch.clone(),
            qp: None,
            _s: PhantomData,
        })
    }
}

fn conn_param(private: &[u8], responder: u8, initiator: u8) -> sys::rdma_conn_param {
    sys::rdma_conn_param {
        private_data: if private.is_empty() {
            std::ptr::null()
        } else {
            private.as_ptr() as *const c_void
        },
        private_data_len: private.len() as u8,
        responder_resources: responder,
        initiator_depth: initiator,
        flow_control: 0,
        retry_count: 7,
        rnr_retry_count: 7,
        srq: 0,
        qp_num: 0,
    }
}

impl CmId<Incoming> {
    /// Accepts (its queue pair made first) with `private` data; ESTABLISHED follows.
    pub fn accept(
        self,
        private: &[u8],
        responder: u8,
        initiator: u8,
    ) -> Result<CmId<Active>, Error> {
        let l = lib()?;
        let mut p = conn_param(private, responder, initiator);
        // SAFETY: a live id with its QP; the data lives through the call.
        let rc = unsafe { (l.accept)(self.raw, &mut p) };
        if rc != 0 {
            return Err(os_rc("rdma_accept", rc));
        }
        let me = std::mem::ManuallyDrop::new(self);
        // SAFETY: the fields are moved out of a value that is never dropped.
        let (ch, qp) = unsafe { (std::ptr::read(&me.ch), std::ptr::read(&me.qp)) };
        Ok(CmId {
            raw: me.raw,
            ch,
            qp,
            _s: PhantomData,
        })
    }

    /// Rejects with `private` data (the id is destroyed).
    pub fn reject(self, private: &[u8]) -> Result<(), Error> {
        let l = lib()?;
        // SAFETY: a live id; the data lives through the call.
        let rc = unsafe {
            (l.reject)(
                self.raw,
                private.as_ptr() as *const c_void,
                private.len() as u8,
            )
        };
        if rc != 0 {
            return Err(os_rc("rdma_reject", rc));
        }
        Ok(())
    }
}

impl CmId<Active> {
    /// Connects to `dst` with `private` data, waiting up to `timeout` for each step;
    /// `setup` makes the queue pair once the route is known (the device is then known).
    pub fn connect(
        ch: &Arc<EventChannel>,
        dst: SocketAddr,
        private: &[u8],
        timeout: Duration,
        setup: impl FnOnce(&mut CmId<Active>, &Arc<Context>) -> Result<(u8, u8), Error>,
    ) -> Result<(CmId<Active>, CmEvent), Error> {
        let l = lib()?;
        let raw = Self::create(ch)?;
        let mut id = CmId {
            raw,
            ch: ch.clone(),
            qp: None,
            _s: PhantomData,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        let (ss, _) = sockaddr(dst);
        // SAFETY: a live id and an address.
        if unsafe {
            (l.resolve_addr)(
                raw,
                std::ptr::null(),
                &ss as *const _ as *const libc::sockaddr,
                ms,
            )
        } != 0
        {
            return Err(os(format!("rdma_resolve_addr {dst}")));
        }
        let step = |id: &CmId<Active>, want: CmEventKind| -> Result<CmEvent, Error> {
            let e = ch.wait_for(id.id(), timeout)?;
            if e.kind != want {
                return Err(Error::Cm(format!(
                    "{dst}: expected {want:?}, got {:?} (status {})",
                    e.kind, e.status
                )));
            }
            Ok(e)
        };
        step(&id, CmEventKind::AddrResolved)?;
        // SAFETY: an address-resolved id.
        if unsafe { (l.resolve_route)(raw, ms) } != 0 {
            return Err(os(format!("rdma_resolve_route {dst}")));
        }
        step(&id, CmEventKind::RouteResolved)?;
        let ctx = id
            .context()
            .ok_or_else(|| Error::NoDevice(Some(format!("for {dst}"))))?;
        let (responder, initiator) = setup(&mut id, &ctx)?;
        let mut p = conn_param(private, responder, initiator);
        // SAFETY: a route-resolved id with its QP; the data lives through the call.
        if unsafe { (l.connect)(raw, &mut p) } != 0 {
            return Err(os(format!("rdma_connect {dst}")));
        }
        let e = ch.wait_for(id.id(), timeout)?;
        match e.kind {
            CmEventKind::Established => Ok((id, e)),
            CmEventKind::Rejected => Err(Error::Cm(format!(
                "{dst} rejected the connection (status {}, private data {:02x?})",
                e.status, e.private_data
            ))),
            k => Err(Error::Cm(format!(
                "{dst}: connect got {k:?} (status {})",
                e.status
            ))),
        }
    }

    /// Disconnects (DISCONNECTED follows on both sides).
    pub fn disconnect(&self) -> Result<(), Error> {
        let l = lib()?;
        // SAFETY: a live id.
        if unsafe { (l.disconnect)(self.raw) } != 0 {
            return Err(os("rdma_disconnect"));
        }
        Ok(())
    }
}

impl<S> Drop for CmId<S> {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            if let Some(qp) = self.qp.take() {
                // SAFETY: the QP was made on this id. Its PD, CQs and SRQ go after it.
                unsafe { (l.destroy_qp)(self.raw) };
                drop(qp);
            }
            // SAFETY: a live id, destroyed once.
            unsafe { (l.destroy_id)(self.raw) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_without_rdma_says_so_by_name() {
        // This machine has no RDMA device (the lab's guest has rxe): the list is empty
        // or the library is missing, and both say what to do.
        match devices() {
            Ok(d) => {
                assert!(d.is_empty(), "this test expects no RDMA device here: {d:?}");
                let e = Context::open(None).unwrap_err().to_string();
                assert!(e.starts_with("no RDMA device"), "{e}");
                assert!(e.contains("rdma link add"), "{e}");
            }
            Err(e) => {
                let m = e.to_string();
                assert!(m.starts_with("no RDMA"), "{m}");
            }
        }
    }

    #[test]
    fn cm_event_kinds_decode() {
        assert_eq!(CmEventKind::from_raw(4), CmEventKind::ConnectRequest);
        assert_eq!(CmEventKind::from_raw(9), CmEventKind::Established);
        assert_eq!(CmEventKind::from_raw(10), CmEventKind::Disconnected);
        assert_eq!(CmEventKind::from_raw(99), CmEventKind::Other(99));
    }

    #[test]
    fn socket_addresses_round_trip() {
        for a in ["10.0.2.15:4420", "[fe80::1]:4420"] {
            let a: SocketAddr = a.parse().unwrap();
            let (ss, _) = sockaddr(a);
            assert_eq!(read_sockaddr(&ss as *const _ as *const u8), Some(a));
        }
    }
}
