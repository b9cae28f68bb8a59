//! The rdma-core ABI this crate uses, and the libraries loaded at run time.
//!
//! libibverbs and librdmacm are opened with `dlopen` on first use, so programs built
//! with this crate start on machines without rdma-core (they report "no RDMA" by name).
//! The structures are declared here with the layouts of rdma-core's `infiniband/verbs.h`
//! and `rdma/rdma_cma.h` on x86_64 (checked against Debian 12's rdma-core 44 with a C
//! program printing `offsetof`; the assertions below keep them). Only the fields the
//! crate reads are named; the rest is padding of the right size.
//!
//! `ibv_post_send`, `ibv_post_recv`, `ibv_post_srq_recv` and `ibv_poll_cq` are inline
//! functions in the C header that call through the context's `ops` table; they are
//! reached the same way here ([`ops`]).

#![allow(non_camel_case_types, missing_docs)]

use libc::{c_char, c_int, c_void};
use std::sync::OnceLock;

/// `struct ibv_sge`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ibv_sge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// `struct ibv_send_wr` (the RDMA member of its `wr` union; 128 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ibv_send_wr {
    pub wr_id: u64,
    pub next: *mut ibv_send_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
    pub opcode: u32,
    pub send_flags: u32,
    /// `imm_data` or `invalidate_rkey`.
    pub imm_or_inv: u32,
    pub remote_addr: u64,
    pub rkey: u32,
    pub _pad: [u8; 128 - 52],
}

impl Default for ibv_send_wr {
    fn default() -> Self {
        ibv_send_wr {
            wr_id: 0,
            next: std::ptr::null_mut(),
            sg_list: std::ptr::null_mut(),
            num_sge: 0,
            opcode: 0,
            send_flags: 0,
            imm_or_inv: 0,
            remote_addr: 0,
            rkey: 0,
            _pad: [0; 128 - 52],
        }
    }
}

/// `struct ibv_recv_wr`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ibv_recv_wr {
    pub wr_id: u64,
    pub next: *mut ibv_recv_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
}

/// `struct ibv_wc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ibv_wc {
    pub wr_id: u64,
    pub status: u32,
    pub opcode: u32,
    pub vendor_err: u32,
    pub byte_len: u32,
    /// `imm_data` or `invalidated_rkey`.
    pub imm_or_inv: u32,
    pub qp_num: u32,
    pub src_qp: u32,
    pub wc_flags: u32,
    _rest: [u8; 8],
}

/// `struct ibv_qp_cap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ibv_qp_cap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// `struct ibv_qp_init_attr`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ibv_qp_init_attr {
    pub qp_context: *mut c_void,
    pub send_cq: *mut c_void,
    pub recv_cq: *mut c_void,
    pub srq: *mut c_void,
    pub cap: ibv_qp_cap,
    pub qp_type: u32,
    pub sq_sig_all: c_int,
}

/// `struct ibv_srq_init_attr`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ibv_srq_init_attr {
    pub srq_context: *mut c_void,
    pub max_wr: u32,
    pub max_sge: u32,
    pub srq_limit: u32,
}

/// `struct ibv_mr` (the fields read).
#[repr(C)]
#[derive(Debug)]
pub struct ibv_mr {
    pub context: *mut c_void,
    pub pd: *mut c_void,
    pub addr: *mut c_void,
    pub length: usize,
    pub handle: u32,
    pub lkey: u32,
    pub rkey: u32,
}

/// `struct ibv_qp` (the fields read).
#[repr(C)]
#[derive(Debug)]
pub struct ibv_qp {
    pub context: *mut c_void,
    pub qp_context: *mut c_void,
    pub pd: *mut c_void,
    pub send_cq: *mut c_void,
    pub recv_cq: *mut c_void,
    pub srq: *mut c_void,
    pub handle: u32,
    pub qp_num: u32,
    pub state: u32,
}

/// `struct ibv_device_attr`, as bytes (fields read at their offsets).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct ibv_device_attr(pub [u8; 232]);

/// Offsets in `struct ibv_device_attr`.
pub mod device_attr {
    pub const MAX_QP_WR: usize = 112;
    pub const MAX_SGE: usize = 120;
    pub const MAX_SGE_RD: usize = 124;
    pub const MAX_CQE: usize = 132;
    pub const MAX_QP_RD_ATOM: usize = 144;
    pub const MAX_QP_INIT_RD_ATOM: usize = 156;
    pub const MAX_SRQ_WR: usize = 216;
    pub const VENDOR_ID: usize = 96;
}

/// Offsets of the `ops` entries in `struct ibv_context`.
pub mod ops {
    pub const POLL_CQ: usize = 96;
    pub const REQ_NOTIFY_CQ: usize = 104;
    pub const POST_SRQ_RECV: usize = 168;
    pub const POST_SEND: usize = 208;
    pub const POST_RECV: usize = 216;
}

/// `struct rdma_cm_id`, as the fields read.
pub mod cm_id {
    pub const VERBS: usize = 0;
    pub const QP: usize = 24;
    pub const SRC_ADDR: usize = 32;
    pub const DST_ADDR: usize = 160;
    pub const SIZE: usize = 416;
}

/// `struct rdma_conn_param`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rdma_conn_param {
    pub private_data: *const c_void,
    pub private_data_len: u8,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub flow_control: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    pub srq: u8,
    pub qp_num: u32,
}

/// `struct rdma_cm_event` (its `param.conn` member).
#[repr(C)]
#[derive(Debug)]
pub struct rdma_cm_event {
    pub id: *mut c_void,
    pub listen_id: *mut c_void,
    pub event: u32,
    pub status: c_int,
    pub private_data: *const c_void,
    pub private_data_len: u8,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    _rest: [u8; 80 - 35],
}

/// `struct rdma_event_channel`.
#[repr(C)]
#[derive(Debug)]
pub struct rdma_event_channel {
    pub fd: c_int,
}

// Constants of verbs.h and rdma_cma.h.
pub const IBV_QPT_RC: u32 = 2;
pub const IBV_ACCESS_LOCAL_WRITE: c_int = 1;
pub const IBV_ACCESS_REMOTE_WRITE: c_int = 2;
pub const IBV_ACCESS_REMOTE_READ: c_int = 4;
pub const IBV_WR_RDMA_WRITE: u32 = 0;
pub const IBV_WR_SEND: u32 = 2;
pub const IBV_WR_RDMA_READ: u32 = 4;
pub const IBV_WR_SEND_WITH_INV: u32 = 9;
pub const IBV_SEND_SIGNALED: u32 = 2;
pub const IBV_WC_SUCCESS: u32 = 0;
pub const IBV_WC_WR_FLUSH_ERR: u32 = 5;
pub const IBV_WC_WITH_INV: u32 = 8;
pub const RDMA_PS_TCP: u32 = 0x106;

type DeviceListFn = unsafe extern "C" fn(*mut c_int) -> *mut *mut c_void;
type FreeDeviceListFn = unsafe extern "C" fn(*mut *mut c_void);
type DeviceNameFn = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type OpenDeviceFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type IntOfPtrFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type QueryDeviceFn = unsafe extern "C" fn(*mut c_void, *mut ibv_device_attr) -> c_int;
type PtrOfPtrFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type RegMrFn = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, c_int) -> *mut ibv_mr;
type RegDmabufMrFn =
    unsafe extern "C" fn(*mut c_void, u64, usize, u64, c_int, c_int) -> *mut ibv_mr;
type CreateCqFn =
    unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, *mut c_void, c_int) -> *mut c_void;
type CreateSrqFn = unsafe extern "C" fn(*mut c_void, *mut ibv_srq_init_attr) -> *mut c_void;
type CreateChannelFn = unsafe extern "C" fn() -> *mut rdma_event_channel;
type DestroyChannelFn = unsafe extern "C" fn(*mut rdma_event_channel);
type CreateIdFn =
    unsafe extern "C" fn(*mut rdma_event_channel, *mut *mut c_void, *mut c_void, u32) -> c_int;
type AddrFn = unsafe extern "C" fn(*mut c_void, *const libc::sockaddr) -> c_int;
type ListenFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type GetEventFn = unsafe extern "C" fn(*mut rdma_event_channel, *mut *mut rdma_cm_event) -> c_int;
type AckEventFn = unsafe extern "C" fn(*mut rdma_cm_event) -> c_int;
type ConnParamFn = unsafe extern "C" fn(*mut c_void, *mut rdma_conn_param) -> c_int;
type RejectFn = unsafe extern "C" fn(*mut c_void, *const c_void, u8) -> c_int;
type CreateQpFn = unsafe extern "C" fn(*mut c_void, *mut c_void, *mut ibv_qp_init_attr) -> c_int;
type VoidOfPtrFn = unsafe extern "C" fn(*mut c_void);
type ResolveAddrFn =
    unsafe extern "C" fn(*mut c_void, *const libc::sockaddr, *const libc::sockaddr, c_int) -> c_int;
type ResolveRouteFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type EventStrFn = unsafe extern "C" fn(u32) -> *const c_char;
type MigrateIdFn = unsafe extern "C" fn(*mut c_void, *mut rdma_event_channel) -> c_int;
type GetCqEventFn = unsafe extern "C" fn(*mut c_void, *mut *mut c_void, *mut *mut c_void) -> c_int;
type AckCqEventsFn = unsafe extern "C" fn(*mut c_void, std::ffi::c_uint);

/// The functions of libibverbs and librdmacm this crate calls.
#[derive(Debug)]
pub struct Lib {
    pub get_device_list: DeviceListFn,
    pub free_device_list: FreeDeviceListFn,
    pub get_device_name: DeviceNameFn,
    pub open_device: OpenDeviceFn,
    pub close_device: IntOfPtrFn,
    pub query_device: QueryDeviceFn,
    pub alloc_pd: PtrOfPtrFn,
    pub dealloc_pd: IntOfPtrFn,
    pub reg_mr: RegMrFn,
    pub reg_dmabuf_mr: Option<RegDmabufMrFn>,
    pub dereg_mr: unsafe extern "C" fn(*mut ibv_mr) -> c_int,
    pub create_cq: CreateCqFn,
    pub destroy_cq: IntOfPtrFn,
    pub create_srq: CreateSrqFn,
    pub destroy_srq: IntOfPtrFn,
    pub create_event_channel: CreateChannelFn,
    pub destroy_event_channel: DestroyChannelFn,
    pub create_id: CreateIdFn,
    pub destroy_id: IntOfPtrFn,
    pub bind_addr: AddrFn,
    pub listen: ListenFn,
    pub get_cm_event: GetEventFn,
    pub ack_cm_event: AckEventFn,
    pub accept: ConnParamFn,
    pub connect: ConnParamFn,
    pub reject: RejectFn,
    pub disconnect: IntOfPtrFn,
    pub create_qp: CreateQpFn,
    pub destroy_qp: VoidOfPtrFn,
    pub resolve_addr: ResolveAddrFn,
    pub resolve_route: ResolveRouteFn,
    pub event_str: EventStrFn,
    pub get_devices: DeviceListFn,
    pub migrate_id: MigrateIdFn,
    pub create_comp_channel: PtrOfPtrFn,
    pub destroy_comp_channel: IntOfPtrFn,
    pub get_cq_event: GetCqEventFn,
    pub ack_cq_events: AckCqEventsFn,
    _libs: (libloading::Library, libloading::Library),
}

fn load() -> Result<Lib, String> {
    // SAFETY: loading rdma-core's libraries runs their constructors, which only set up
    // their own state.
    let ibv = unsafe { libloading::Library::new("libibverbs.so.1") }.map_err(|e| {
        format!("libibverbs.so.1 cannot be loaded ({e}): install rdma-core (Debian: apt install ibverbs-providers librdmacm1)")
    })?;
    // SAFETY: as above.
    let cm = unsafe { libloading::Library::new("librdmacm.so.1") }.map_err(|e| {
        format!("librdmacm.so.1 cannot be loaded ({e}): install rdma-core (Debian: apt install librdmacm1)")
    })?;
    macro_rules! sym {
        ($lib:expr, $name:literal) => {
            // SAFETY: the symbol has the C signature of the field it is stored in (the
            // prototypes of verbs.h and rdma_cma.h).
            *unsafe { $lib.get(concat!($name, "\0").as_bytes()) }
                .map_err(|e| format!("{} lacks {}: {e}", stringify!($lib), $name))?
        };
    }
    Ok(Lib {
        get_device_list: sym!(ibv, "ibv_get_device_list"),
        free_device_list: sym!(ibv, "ibv_free_device_list"),
        get_device_name: sym!(ibv, "ibv_get_device_name"),
        open_device: sym!(ibv, "ibv_open_device"),
        close_device: sym!(ibv, "ibv_close_device"),
        query_device: sym!(ibv, "ibv_query_device"),
        alloc_pd: sym!(ibv, "ibv_alloc_pd"),
        dealloc_pd: sym!(ibv, "ibv_dealloc_pd"),
        reg_mr: sym!(ibv, "ibv_reg_mr"),
        // SAFETY: as in `sym!`; absent before rdma-core 34.
        reg_dmabuf_mr: unsafe { ibv.get(b"ibv_reg_dmabuf_mr\0") }.ok().map(|s| *s),
        dereg_mr: sym!(ibv, "ibv_dereg_mr"),
        create_cq: sym!(ibv, "ibv_create_cq"),
        destroy_cq: sym!(ibv, "ibv_destroy_cq"),
        create_srq: sym!(ibv, "ibv_create_srq"),
        destroy_srq: sym!(ibv, "ibv_destroy_srq"),
        create_event_channel: sym!(cm, "rdma_create_event_channel"),
        destroy_event_channel: sym!(cm, "rdma_destroy_event_channel"),
        create_id: sym!(cm, "rdma_create_id"),
        destroy_id: sym!(cm, "rdma_destroy_id"),
        bind_addr: sym!(cm, "rdma_bind_addr"),
        listen: sym!(cm, "rdma_listen"),
        get_cm_event: sym!(cm, "rdma_get_cm_event"),
        ack_cm_event: sym!(cm, "rdma_ack_cm_event"),
        accept: sym!(cm, "rdma_accept"),
        connect: sym!(cm, "rdma_connect"),
        reject: sym!(cm, "rdma_reject"),
        disconnect: sym!(cm, "rdma_disconnect"),
        create_qp: sym!(cm, "rdma_create_qp"),
        destroy_qp: sym!(cm, "rdma_destroy_qp"),
        resolve_addr: sym!(cm, "rdma_resolve_addr"),
        resolve_route: sym!(cm, "rdma_resolve_route"),
        event_str: sym!(cm, "rdma_event_str"),
        get_devices: sym!(cm, "rdma_get_devices"),
        migrate_id: sym!(cm, "rdma_migrate_id"),
        create_comp_channel: sym!(ibv, "ibv_create_comp_channel"),
        destroy_comp_channel: sym!(ibv, "ibv_destroy_comp_channel"),
        get_cq_event: sym!(ibv, "ibv_get_cq_event"),
        ack_cq_events: sym!(ibv, "ibv_ack_cq_events"),
        _libs: (ibv, cm),
    })
}

/// The loaded libraries, or why they cannot be loaded.
pub fn lib() -> Result<&'static Lib, String> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// Reads a pointer-sized field at `off` of a C structure.
///
/// # Safety
/// `base` must point to a live structure with a pointer at `off`.
pub unsafe fn field_ptr(base: *mut c_void, off: usize) -> *mut c_void {
    // SAFETY: the caller vouches for the structure.
    unsafe { std::ptr::read((base as *const u8).add(off) as *const *mut c_void) }
}

macro_rules! layout {
    ($t:ty, $size:expr) => {
        const _: () = assert!(std::mem::size_of::<$t>() == $size);
    };
    ($t:ty, $field:ident, $off:expr) => {
        const _: () = assert!(std::mem::offset_of!($t, $field) == $off);
    };
}
layout!(ibv_sge, 16);
layout!(ibv_send_wr, 128);
layout!(ibv_send_wr, imm_or_inv, 36);
layout!(ibv_send_wr, remote_addr, 40);
layout!(ibv_send_wr, rkey, 48);
layout!(ibv_recv_wr, 32);
layout!(ibv_wc, 48);
layout!(ibv_wc, byte_len, 20);
layout!(ibv_wc, qp_num, 28);
layout!(ibv_wc, wc_flags, 36);
layout!(ibv_qp_init_attr, 64);
layout!(ibv_qp_init_attr, cap, 32);
layout!(ibv_qp_init_attr, qp_type, 52);
layout!(ibv_srq_init_attr, 24);
layout!(ibv_mr, lkey, 36);
layout!(ibv_mr, rkey, 40);
layout!(ibv_qp, qp_num, 52);
layout!(rdma_conn_param, 24);
layout!(rdma_conn_param, initiator_depth, 10);
layout!(rdma_conn_param, qp_num, 16);
layout!(rdma_cm_event, 80);
layout!(rdma_cm_event, private_data, 24);
layout!(rdma_cm_event, private_data_len, 32);
layout!(rdma_cm_event, initiator_depth, 34);
