//! A twin of a PCIe NVMe controller, for unit tests of the driver on any machine.
//!
//! It behaves as the NVMe base specification (and QEMU's model, which the lab drives)
//! says a controller does, as far as the driver relies on it: CC.EN and CSTS.RDY,
//! shutdown, the admin queue, Identify, Set Features Number of Queues, I/O queue
//! creation and deletion, Abort, Asynchronous Event Requests with the Changed Namespace
//! List, reads and writes through PRPs (lists included) and SGLs, Write Zeroes, Dataset
//! Management and Flush on a RAM namespace, and a CMB. Commands run synchronously when
//! a submission doorbell is written. `hold_io` keeps I/O commands pending (a stuck
//! device) to test timeouts and resets.
//!
//! It is a test double: nothing outside tests uses it.

use super::{Device, Error, Mmio, NvmeAddr};
use crate::spec::admin::{admin_opc, cns, log_id, nvm_opc};
use crate::spec::cmd::{Cqe, SglDescriptor, Sqe, Status, sgl_type};
use crate::spec::identify::{IdentifyController, IdentifyNamespace, LbaFormat, pad_ascii};
use crate::spec::regs::offset;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// The twin's block size.
pub const BLOCK: usize = 512;
/// Its namespace 1's blocks.
pub const BLOCKS: u64 = 4096;
/// Its MDTS (2^5 pages: 128 KiB).
pub const MDTS: u8 = 5;
/// Its CMB size.
pub const CMB_SIZE: usize = 4 << 20;
/// The bus address its CMB BAR (BAR2) has.
pub const CMB_BAR_ADDR: u64 = 0xf800_0000;

#[derive(Debug)]
struct Sq {
    base: u64,
    size: u16,
    cqid: u16,
    head: u16,
}

#[derive(Debug)]
struct Cq {
    base: u64,
    size: u16,
    tail: u16,
    phase: bool,
}

#[derive(Debug, Default)]
struct State {
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    cmbmsc: u64,
    sqs: BTreeMap<u16, Sq>,
    cqs: BTreeMap<u16, Cq>,
    dma: Vec<(u64, usize, usize)>,
    next_iova: u64,
    ns: Vec<u8>,
    attached2: bool,
    aers: VecDeque<u16>,
    events: VecDeque<u32>,
    changed: Vec<u32>,
    held: Vec<(u16, Sqe)>,
}

/// The twin controller.
#[derive(Debug)]
pub struct Twin {
    st: Mutex<State>,
    cmb: Box<[u8]>,
    /// I/O commands stay pending while set (a stuck device).
    pub hold_io: AtomicBool,
    /// Doorbell writes seen, for tests of batching.
    pub doorbells: AtomicU32,
    /// Commands whose data pointers lay in the CMB.
    pub cmb_commands: AtomicU32,
    /// Submission queue entries fetched from the CMB.
    pub cmb_sqes: AtomicU32,
}

impl Default for Twin {
    fn default() -> Self {
        Self::new()
    }
}

impl Twin {
    /// A reset controller with a zeroed 2 MiB namespace 1 and a detached namespace 2.
    pub fn new() -> Twin {
        Twin {
            st: Mutex::new(State {
                ns: vec![0; BLOCK * BLOCKS as usize],
                next_iova: 1 << 32,
                ..Default::default()
            }),
            cmb: vec![0u8; CMB_SIZE].into_boxed_slice(),
            hold_io: AtomicBool::new(false),
            doorbells: AtomicU32::new(0),
            cmb_commands: AtomicU32::new(0),
            cmb_sqes: AtomicU32::new(0),
        }
    }

    /// Attaches namespace 2 (as Namespace Attachment would) and raises the Namespace
    /// Attribute Changed event.
    pub fn attach_ns2(&self) {
        let mut st = self.st.lock().unwrap();
        st.attached2 = true;
        st.changed.push(2);
        // Notice (2), Namespace Attribute Changed (0), log page 04h.
        st.events.push_back(0x04_00_02);
        self.deliver_events(&mut st);
    }

    /// Completes every held I/O command successfully (as a late device would).
    pub fn release_held(&self) {
        let mut st = self.st.lock().unwrap();
        for (sqid, sqe) in std::mem::take(&mut st.held) {
            let (status, dw0) = self.exec_io(&mut st, &sqe);
            self.post(&mut st, sqid, &sqe, status, dw0);
        }
    }

    /// The namespace's bytes at block `lba`.
    pub fn ns_bytes(&self, lba: u64, len: usize) -> Vec<u8> {
        let st = self.st.lock().unwrap();
        st.ns[lba as usize * BLOCK..][..len].to_vec()
    }

    fn cmb_range(&self, st: &State) -> Option<(u64, u64)> {
        let cmse = st.cmbmsc & 2 != 0;
        let cba = st.cmbmsc & !0xfff;
        cmse.then_some((cba, cba + CMB_SIZE as u64))
    }

    fn is_cmb(&self, st: &State, a: u64) -> bool {
        self.cmb_range(st).is_some_and(|(lo, hi)| a >= lo && a < hi)
    }

    /// A CPU pointer for `len` bytes at device address `a`, if mapped.
    fn ptr(&self, st: &State, a: u64, len: usize) -> Option<*mut u8> {
        if let Some((lo, hi)) = self.cmb_range(st) {
            if a >= lo && a + len as u64 <= hi {
                return Some(self.cmb[(a - lo) as usize..].as_ptr() as *mut u8);
            }
        }
        st.dma.iter().find_map(|&(iova, vaddr, l)| {
            (a >= iova && a + len as u64 <= iova + l as u64)
                .then(|| (vaddr + (a - iova) as usize) as *mut u8)
        })
    }

    fn read(&self, st: &State, a: u64, out: &mut [u8]) -> bool {
        match self.ptr(st, a, out.len()) {
            // SAFETY: the range is inside memory the driver mapped (or the CMB).
            Some(p) => unsafe {
                std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len());
                true
            },
            None => false,
        }
    }

    fn write(&self, st: &State, a: u64, data: &[u8]) -> bool {
        match self.ptr(st, a, data.len()) {
            // SAFETY: as in `read`.
            Some(p) => unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len());
                true
            },
            None => false,
        }
    }

    /// The data pointer of `sqe` as a list of (address, length), or a status.
    fn data_list(&self, st: &State, sqe: &Sqe, len: usize) -> Result<Vec<(u64, usize)>, Status> {
        let mut out = Vec::new();
        if sqe.flags >> 6 == 0 {
            let prp1 = u64::from_le_bytes(sqe.dptr[..8].try_into().unwrap());
            let prp2 = u64::from_le_bytes(sqe.dptr[8..].try_into().unwrap());
            if prp1 & 3 != 0 {
                return Err(Status::generic(0x13, true)); // PRP Offset Invalid
            }
            let first = (4096 - (prp1 as usize & 0xfff)).min(len);
            out.push((prp1, first));
            let mut left = len - first;
            if left == 0 {
            } else if left <= 4096 {
                out.push((prp2, left));
            } else {
                let n = left.div_ceil(4096);
                if n > 512 {
                    return Err(Status::INVALID_FIELD);
                }
                let mut list = vec![0u8; n * 8];
                if !self.read(st, prp2, &mut list) {
                    return Err(Status::DATA_TRANSFER_ERROR);
                }
                for e in list.chunks(8) {
                    let a = u64::from_le_bytes(e.try_into().unwrap());
                    if a & 0xfff != 0 {
                        return Err(Status::generic(0x13, true));
                    }
                    let n = left.min(4096);
                    out.push((a, n));
                    left -= n;
                }
            }
        } else {
            let d = sqe.sgl();
            let descs = if d.ty() == sgl_type::DATA_BLOCK {
                vec![d]
            } else if d.ty() == 0x3 {
                // Last Segment: a list of data blocks.
                let n = d.len.get() as usize / 16;
                let mut raw = vec![0u8; n * 16];
                if !self.read(st, d.addr.get(), &mut raw) {
                    return Err(Status::DATA_TRANSFER_ERROR);
                }
                raw.chunks(16)
                    .map(|c| SglDescriptor::read_from_bytes(c).unwrap())
                    .collect()
            } else {
                return Err(Status::SGL_DESCRIPTOR_TYPE_INVALID);
            };
            for d in descs {
                if d.ty() != sgl_type::DATA_BLOCK {
                    return Err(Status::SGL_DESCRIPTOR_TYPE_INVALID);
                }
                out.push((d.addr.get(), d.len.get() as usize));
            }
            if out.iter().map(|e| e.1).sum::<usize>() != len {
                return Err(Status::SGL_LENGTH_INVALID);
            }
        }
        let cmb = out.iter().filter(|e| self.is_cmb(st, e.0)).count();
        if cmb != 0 && cmb != out.len() {
            return Err(Status::generic(0x12, true)); // Invalid Use of CMB
        }
        if cmb != 0 {
            self.cmb_commands.fetch_add(1, Ordering::Relaxed);
        }
        Ok(out)
    }

    fn copy_out(&self, st: &State, sqe: &Sqe, data: &[u8]) -> Status {
        match self.data_list(st, sqe, data.len()) {
            Ok(list) => {
                let mut at = 0;
                for (a, n) in list {
                    if !self.write(st, a, &data[at..at + n]) {
                        return Status::DATA_TRANSFER_ERROR;
                    }
                    at += n;
                }
                Status::SUCCESS
            }
            Err(s) => s,
        }
    }

    fn copy_in(&self, st: &State, sqe: &Sqe, len: usize) -> Result<Vec<u8>, Status> {
        let list = self.data_list(st, sqe, len)?;
        let mut data = vec![0u8; len];
        let mut at = 0;
        for (a, n) in list {
            if !self.read(st, a, &mut data[at..at + n]) {
                return Err(Status::DATA_TRANSFER_ERROR);
            }
            at += n;
        }
        Ok(data)
    }

    fn identify_ctrlr(&self) -> IdentifyController {
        let mut id = IdentifyController::new_zeroed();
        id.vid = U16::new(0x1b36);
        pad_ascii(&mut id.sn, "twin-1");
        pad_ascii(&mut id.mn, "Pollux twin controller");
        pad_ascii(&mut id.fr, "1.0");
        id.mdts = MDTS;
        id.cntlid = U16::new(0);
        id.aerl = 3;
        id.sqes = 0x66;
        id.cqes = 0x44;
        id.nn = U32::new(2);
        id.oncs = U16::new(0x0c);
        id.sgls = U32::new(1);
        id
    }

    fn identify_ns(&self) -> IdentifyNamespace {
        let mut ns = IdentifyNamespace::new_zeroed();
        ns.nsze = U64::new(BLOCKS);
        ns.ncap = U64::new(BLOCKS);
        ns.nuse = U64::new(BLOCKS);
        ns.dlfeat = 1;
        ns.lbaf[0] = LbaFormat::new(BLOCK as u32, 0);
        ns
    }

    fn deliver_events(&self, st: &mut State) {
        while !st.events.is_empty() && !st.aers.is_empty() {
            let ev = st.events.pop_front().unwrap();
            let cid = st.aers.pop_front().unwrap();
            let sqe = Sqe {
                cid: U16::new(cid),
                ..Default::default()
            };
            self.post(st, 0, &sqe, Status::SUCCESS, ev);
        }
    }

    fn exec_admin(&self, st: &mut State, sqe: &Sqe) -> Option<(Status, u32)> {
        let d10 = sqe.cdw10.get();
        let d11 = sqe.cdw11.get();
        let prp1 = u64::from_le_bytes(sqe.dptr[..8].try_into().unwrap());
        Some(match sqe.opc {
            admin_opc::IDENTIFY => {
                let mut buf = vec![0u8; 4096];
                match d10 as u8 {
                    cns::CONTROLLER => buf.copy_from_slice(self.identify_ctrlr().as_bytes()),
                    cns::NAMESPACE => {
                        let nsid = sqe.nsid.get();
                        if nsid == 1 || (nsid == 2 && st.attached2) {
                            buf.copy_from_slice(self.identify_ns().as_bytes());
                        }
                    }
                    cns::ACTIVE_NS_LIST => {
                        let mut ids = vec![1u32];
                        if st.attached2 {
                            ids.push(2);
                        }
                        for (i, id) in ids.iter().filter(|&&i| i > sqe.nsid.get()).enumerate() {
                            buf[i * 4..i * 4 + 4].copy_from_slice(&id.to_le_bytes());
                        }
                    }
                    _ => return Some((Status::INVALID_FIELD, 0)),
                }
                (self.copy_out(st, sqe, &buf), 0)
            }
            admin_opc::SET_FEATURES if d10 & 0xff == 0x07 => {
                let nsq = (d11 & 0xffff).min(7);
                let ncq = (d11 >> 16).min(7);
                (Status::SUCCESS, nsq | ncq << 16)
            }
            admin_opc::SET_FEATURES => (Status::SUCCESS, 0),
            admin_opc::CREATE_IO_CQ => {
                let qid = d10 as u16;
                if qid == 0 || qid > 8 || st.cqs.contains_key(&qid) || d11 & 1 == 0 {
                    return Some((Status::specific(0x01), 0));
                }
                st.cqs.insert(
                    qid,
                    Cq {
                        base: prp1,
                        size: (d10 >> 16) as u16 + 1,
                        tail: 0,
                        phase: true,
                    },
                );
                (Status::SUCCESS, 0)
            }
            admin_opc::CREATE_IO_SQ => {
                let qid = d10 as u16;
                let cqid = (d11 >> 16) as u16;
                if !st.cqs.contains_key(&cqid) {
                    return Some((Status::specific(0x00), 0));
                }
                if qid == 0 || st.sqs.contains_key(&qid) || d11 & 1 == 0 {
                    return Some((Status::specific(0x01), 0));
                }
                st.sqs.insert(
                    qid,
                    Sq {
                        base: prp1,
                        size: (d10 >> 16) as u16 + 1,
                        cqid,
                        head: 0,
                    },
                );
                (Status::SUCCESS, 0)
            }
            admin_opc::DELETE_IO_SQ => {
                let qid = d10 as u16;
                st.held.retain(|h| h.0 != qid);
                match st.sqs.remove(&qid) {
                    Some(_) => (Status::SUCCESS, 0),
                    None => (Status::specific(0x01), 0),
                }
            }
            admin_opc::DELETE_IO_CQ => match st.cqs.remove(&(d10 as u16)) {
                Some(_) => (Status::SUCCESS, 0),
                None => (Status::specific(0x01), 0),
            },
            admin_opc::ABORT => (Status::SUCCESS, 1),
            admin_opc::ASYNC_EVENT_REQUEST => {
                st.aers.push_back(sqe.cid.get());
                self.deliver_events(st);
                return None;
            }
            admin_opc::GET_LOG_PAGE if d10 as u8 == log_id::CHANGED_NS_LIST => {
                let mut buf = vec![0u8; ((d10 >> 16) as usize + 1) * 4];
                for (i, id) in std::mem::take(&mut st.changed).iter().enumerate() {
                    if i * 4 + 4 <= buf.len() {
                        buf[i * 4..i * 4 + 4].copy_from_slice(&id.to_le_bytes());
                    }
                }
                (self.copy_out(st, sqe, &buf), 0)
            }
            _ => (Status::INVALID_OPCODE, 0),
        })
    }

    fn exec_io(&self, st: &mut State, sqe: &Sqe) -> (Status, u32) {
        let nsid = sqe.nsid.get();
        if nsid != 1 {
            return (Status::INVALID_NAMESPACE, 0);
        }
        let slba = sqe.cdw10.get() as u64 | (sqe.cdw11.get() as u64) << 32;
        let nlb = (sqe.cdw12.get() & 0xffff) as u64 + 1;
        let in_range = slba.checked_add(nlb).is_some_and(|e| e <= BLOCKS);
        let at = slba as usize * BLOCK;
        let len = nlb as usize * BLOCK;
        let status = match sqe.opc {
            nvm_opc::READ | nvm_opc::WRITE if len > 4096 << MDTS => Status::INVALID_FIELD,
            nvm_opc::READ | nvm_opc::WRITE | nvm_opc::WRITE_ZEROES if !in_range => {
                Status::LBA_OUT_OF_RANGE
            }
            nvm_opc::READ => {
                let data = st.ns[at..at + len].to_vec();
                self.copy_out(st, sqe, &data)
            }
            nvm_opc::WRITE => match self.copy_in(st, sqe, len) {
                Ok(d) => {
                    st.ns[at..at + len].copy_from_slice(&d);
                    Status::SUCCESS
                }
                Err(s) => s,
            },
            nvm_opc::WRITE_ZEROES => {
                st.ns[at..at + len].fill(0);
                Status::SUCCESS
            }
            nvm_opc::DATASET_MANAGEMENT => {
                let n = (sqe.cdw10.get() & 0xff) as usize + 1;
                match self.copy_in(st, sqe, n * 16) {
                    Ok(r) => {
                        for e in r.chunks(16) {
                            let nlb = u32::from_le_bytes(e[4..8].try_into().unwrap()) as u64;
                            let slba = u64::from_le_bytes(e[8..16].try_into().unwrap());
                            if slba.checked_add(nlb).is_some_and(|e| e <= BLOCKS) {
                                st.ns[slba as usize * BLOCK..][..nlb as usize * BLOCK].fill(0);
                            }
                        }
                        Status::SUCCESS
                    }
                    Err(s) => s,
                }
            }
            nvm_opc::FLUSH => Status::SUCCESS,
            _ => Status::INVALID_OPCODE,
        };
        (status, 0)
    }

    fn post(&self, st: &mut State, sqid: u16, sqe: &Sqe, status: Status, dw0: u32) {
        let (cqid, sqhd) = match sqid {
            0 => (0, 0),
            q => match st.sqs.get(&q) {
                Some(sq) => (sq.cqid, sq.head),
                None => return,
            },
        };
        let Some(cq) = st.cqs.get_mut(&cqid) else {
            return;
        };
        let mut cqe = Cqe {
            dw0: U32::new(dw0),
            sqhd: U16::new(sqhd),
            sqid: U16::new(sqid),
            cid: sqe.cid,
            status: U16::new(cq.phase as u16),
            ..Default::default()
        };
        cqe.set_status(status);
        let at = cq.base + cq.tail as u64 * 16;
        cq.tail += 1;
        if cq.tail == cq.size {
            cq.tail = 0;
            cq.phase = !cq.phase;
        }
        self.write(st, at, cqe.as_bytes());
    }

    fn ring_sq(&self, st: &mut State, qid: u16, tail: u16) {
        loop {
            let Some(sq) = st.sqs.get(&qid) else { return };
            if sq.head == tail || sq.head >= sq.size {
                return;
            }
            let at = sq.base + sq.head as u64 * 64;
            let mut raw = [0u8; 64];
            if self.is_cmb(st, at) {
                self.cmb_sqes.fetch_add(1, Ordering::Relaxed);
            }
            if !self.read(st, at, &mut raw) {
                return;
            }
            let sqe = Sqe::read_from_bytes(&raw).unwrap();
            let sq = st.sqs.get_mut(&qid).unwrap();
            sq.head = (sq.head + 1) % sq.size;
            if qid == 0 {
                if let Some((s, dw0)) = self.exec_admin(st, &sqe) {
                    self.post(st, 0, &sqe, s, dw0);
                }
            } else if self.hold_io.load(Ordering::Relaxed) {
                st.held.push((qid, sqe));
            } else {
                let (s, dw0) = self.exec_io(st, &sqe);
                self.post(st, qid, &sqe, s, dw0);
            }
        }
    }

    fn reset(&self, st: &mut State) {
        st.sqs.clear();
        st.cqs.clear();
        st.aers.clear();
        st.held.clear();
        st.csts = 0;
    }
}

impl Device for Twin {
    fn name(&self) -> &str {
        "twin"
    }

    fn read32(&self, off: u32) -> u32 {
        let st = self.st.lock().unwrap();
        let cap: u64 = 1023 // MQES
            | 1 << 16 // CQR
            | 2 << 24 // TO: 1 s
            | 1 << 37 // CSS: NVM
            | 1 << 57; // CMBS
        let cre = st.cmbmsc & 1 != 0;
        match off {
            offset::CAP => cap as u32,
            0x04 => (cap >> 32) as u32,
            offset::VS => 0x0001_0400,
            offset::CC => st.cc,
            offset::CSTS => st.csts,
            offset::AQA => st.aqa,
            offset::CMBLOC if cre => 2,
            // SQS, LISTS, RDS, WDS; SZU 1 MiB; 4 units.
            offset::CMBSZ if cre => 0b11101 | 2 << 8 | 4 << 12,
            offset::CMBMSC => st.cmbmsc as u32,
            0x54 => (st.cmbmsc >> 32) as u32,
            _ => 0,
        }
    }

    fn write32(&self, off: u32, v: u32) {
        let mut st = self.st.lock().unwrap();
        match off {
            offset::CC => {
                let was = st.cc;
                st.cc = v;
                if was & 1 == 0 && v & 1 == 1 {
                    let asqs = (st.aqa & 0xfff) as u16 + 1;
                    let acqs = ((st.aqa >> 16) & 0xfff) as u16 + 1;
                    let (asq, acq) = (st.asq, st.acq);
                    st.sqs.insert(
                        0,
                        Sq {
                            base: asq,
                            size: asqs,
                            cqid: 0,
                            head: 0,
                        },
                    );
                    st.cqs.insert(
                        0,
                        Cq {
                            base: acq,
                            size: acqs,
                            tail: 0,
                            phase: true,
                        },
                    );
                    st.csts |= 1;
                } else if was & 1 == 1 && v & 1 == 0 {
                    self.reset(&mut st);
                }
                if (v >> 14) & 3 != 0 && v & 1 == 1 {
                    st.csts = (st.csts & !0xc) | 0x8; // SHST complete
                }
            }
            offset::AQA => st.aqa = v,
            offset::ASQ => st.asq = (st.asq & !0xffff_ffff) | v as u64,
            0x2c => st.asq = (st.asq & 0xffff_ffff) | (v as u64) << 32,
            offset::ACQ => st.acq = (st.acq & !0xffff_ffff) | v as u64,
            0x34 => st.acq = (st.acq & 0xffff_ffff) | (v as u64) << 32,
            offset::CMBMSC => st.cmbmsc = (st.cmbmsc & !0xffff_ffff) | v as u64,
            0x54 => st.cmbmsc = (st.cmbmsc & 0xffff_ffff) | (v as u64) << 32,
            o if o >= offset::DOORBELLS => {
                self.doorbells.fetch_add(1, Ordering::Relaxed);
                let idx = (o - offset::DOORBELLS) / 4;
                let qid = (idx / 2) as u16;
                if idx % 2 == 0 && st.csts & 1 == 1 {
                    self.ring_sq(&mut st, qid, v as u16);
                }
            }
            _ => {}
        }
    }

    fn map_dma(&self, vaddr: usize, len: usize) -> Result<NvmeAddr, Error> {
        let mut st = self.st.lock().unwrap();
        let iova = st.next_iova;
        st.next_iova += (len as u64).div_ceil(2 << 20) * (2 << 20);
        st.dma.push((iova, vaddr, len));
        Ok(NvmeAddr::new(iova))
    }

    fn unmap_dma(&self, addr: NvmeAddr, _len: usize) {
        self.st.lock().unwrap().dma.retain(|d| d.0 != addr.get());
    }

    fn map_bar(&self, bar: u8) -> Result<Mmio, Error> {
        if bar != 2 {
            return Err(Error::Invalid(format!(
                "the twin maps BAR2 only, not {bar}"
            )));
        }
        // SAFETY: the CMB lives as long as the twin, which outlives every Mmio the
        // tests make (they hold the twin in an Arc next to the controller).
        Ok(unsafe { Mmio::new(self.cmb.as_ptr() as *mut u8, self.cmb.len(), Box::new(())) })
    }

    fn bar_bus_addr(&self, _bar: u8) -> Result<u64, Error> {
        Ok(CMB_BAR_ADDR)
    }

    fn reserve_iova(&self, _start: u64, _len: u64) {}
}
