//! The userspace driver on a real controller through VFIO: run in the lab
//! (`tests/lab/run nvme-vfio nvme-cmb`), where QEMU's emulated NVMe controller is
//! bound to vfio-pci. Each test needs `POLLUX_NVME_BDF`; without it (or without VFIO)
//! it fails and says what is missing, which is why they are `#[ignore]`d in a plain
//! `cargo test`.
//!
//! `POLLUX_NVME_SERIAL` and `POLLUX_NVME_FW`, when set, are what QEMU was given and must
//! match Identify. `POLLUX_NVME_MARK_LBA`: the shutdown test leaves a pattern there
//! (and prints its MD5) for the kernel driver to read back.

use pollux_nvme::ctrlr::{Ctrlr, CtrlrOpts};
use pollux_nvme::pci::{Device, DmaMem, VfioDevice};
use pollux_nvme::qpair::{DataSeg, Qpair, SglMode};
use pollux_nvme::spec::admin::nvm_opc;
use pollux_nvme::spec::cmd::{Sqe, Status};
use pollux_nvme::spec::regs::{Csts, offset};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use zerocopy::little_endian::U32;

const NEED: &str =
    "needs a VFIO-bound NVMe controller in POLLUX_NVME_BDF: run tests/lab/run nvme-vfio";

fn bdf() -> String {
    std::env::var("POLLUX_NVME_BDF")
        .unwrap_or_else(|_| panic!("POLLUX_NVME_BDF is not set: this test {NEED}"))
}

fn attach(opts: CtrlrOpts) -> (Arc<dyn Device>, Arc<Ctrlr>) {
    let dev: Arc<dyn Device> = Arc::new(VfioDevice::open(&bdf()).unwrap_or_else(|e| panic!("{e}")));
    let c = Ctrlr::attach(dev.clone(), opts).unwrap_or_else(|e| panic!("{e}"));
    (dev, c)
}

fn rw(opc: u8, slba: u64, nlb: u32) -> Sqe {
    Sqe::nvm_rw(opc, 1, slba, nlb)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

#[allow(clippy::mut_from_ref)]
fn slice(m: &DmaMem, off: usize, len: usize) -> &mut [u8] {
    assert!(off + len <= m.len());
    // SAFETY: the tests touch a buffer only while no command uses it.
    unsafe { std::slice::from_raw_parts_mut(m.ptr(off), len) }
}

/// Runs one command to completion.
fn run(q: &mut Qpair, sqe: Sqe, data: &[DataSeg]) -> Status {
    q.submit(sqe, data, 0).unwrap();
    let mut st = None;
    let t0 = Instant::now();
    while st.is_none() {
        q.poll(0, |_, c| st = Some(c.status()));
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no completion in 30 s"
        );
    }
    st.unwrap()
}

#[test]
#[ignore = "needs a VFIO-bound NVMe controller: tests/lab/run nvme-vfio"]
fn identify_matches_what_qemu_was_given() {
    let (_d, c) = attach(CtrlrOpts::default());
    println!(
        "IDENTIFY model={:?} serial={:?} firmware={:?} mdts_bytes={} io_queues={} sgl={} cmb={:?}",
        c.model(),
        c.serial(),
        c.firmware(),
        c.max_transfer(),
        c.io_queues(),
        c.sgl_supported(),
        c.cmb()
    );
    for ns in c.namespaces() {
        println!(
            "NAMESPACE nsid={} block_size={} blocks={}",
            ns.nsid, ns.block_size, ns.num_blocks
        );
    }
    assert_eq!(c.model(), "QEMU NVMe Ctrl");
    if let Ok(s) = std::env::var("POLLUX_NVME_SERIAL") {
        assert_eq!(c.serial(), s);
    }
    if let Ok(f) = std::env::var("POLLUX_NVME_FW") {
        assert_eq!(c.firmware(), f);
    }
    assert!(!c.namespaces().is_empty());
}

#[test]
#[ignore = "needs a VFIO-bound NVMe controller: tests/lab/run nvme-vfio"]
fn write_zeroes_deallocate_and_out_of_range() {
    let (dev, c) = attach(CtrlrOpts::default());
    let ns = c.namespace(1).unwrap();
    let bs = ns.block_size as usize;
    let mut q = c.create_io_qpair().unwrap();
    let m = DmaMem::new(&dev, 64 << 10).unwrap();
    let seg = [DataSeg {
        addr: m.addr(0),
        len: 64 << 10,
    }];
    let nlb = (64 << 10) / bs as u32;
    let mut rng = Rng(0x5eed);
    for (what, sqe) in [
        ("Write Zeroes", {
            let mut s = rw(nvm_opc::WRITE_ZEROES, 4096, nlb);
            s.dptr = [0; 16];
            s
        }),
        (
            "Deallocate",
            Sqe {
                opc: nvm_opc::DATASET_MANAGEMENT,
                nsid: U32::new(1),
                cdw10: U32::new(0),
                cdw11: U32::new(1 << 2),
                ..Default::default()
            },
        ),
    ] {
        rng.fill(slice(&m, 0, 64 << 10));
        assert_eq!(
            run(&mut q, rw(nvm_opc::WRITE, 4096, nlb), &seg),
            Status::SUCCESS
        );
        let st = if sqe.opc == nvm_opc::DATASET_MANAGEMENT {
            // One range: context attributes 0, NLB, SLBA.
            let r = slice(&m, 0, 16);
            r.fill(0);
            r[4..8].copy_from_slice(&nlb.to_le_bytes());
            r[8..16].copy_from_slice(&4096u64.to_le_bytes());
            run(
                &mut q,
                sqe,
                &[DataSeg {
                    addr: m.addr(0),
                    len: 16,
                }],
            )
        } else {
            run(&mut q, sqe, &[])
        };
        assert_eq!(st, Status::SUCCESS, "{what}");
        slice(&m, 0, 64 << 10).fill(0xee);
        assert_eq!(
            run(&mut q, rw(nvm_opc::READ, 4096, nlb), &seg),
            Status::SUCCESS
        );
        let zero = slice(&m, 0, 64 << 10).iter().all(|&b| b == 0);
        if what == "Deallocate" && !ns.dealloc_reads_zeroes {
            println!("CHECK deallocate: DLFEAT does not promise zeroes; read back not checked");
        } else {
            assert!(zero, "{what}: blocks do not read back as zeroes");
        }
        println!("CHECK {what}: blocks read back as zeroes");
    }
    let last = ns.num_blocks;
    let st = run(
        &mut q,
        rw(nvm_opc::READ, last - 1, 2),
        &[DataSeg {
            addr: m.addr(0),
            len: 2 * bs as u32,
        }],
    );
    assert_eq!((st.sct, st.sc, st.dnr), (0, 0x80, true), "{st:?}");
    println!("CHECK beyond the end: LBA Out of Range (sct 0, sc 0x80, dnr)");
}

#[allow(clippy::too_many_arguments)]
/// I/O at queue depth `qd` with blocks of `bs` bytes, write then verify, on `q`.
fn write_verify(
    q: &mut Qpair,
    m: &DmaMem,
    base_lba: u64,
    blocks: u64,
    bs: usize,
    io: usize,
    qd: usize,
    seed: u64,
) {
    let per = io / bs;
    let n_ios = (blocks as usize / per).min(256);
    let mut rng = Rng(seed | 1);
    let mut want: HashMap<u64, Vec<u8>> = HashMap::new();
    for pass in 0..2 {
        let opc = if pass == 0 {
            nvm_opc::WRITE
        } else {
            nvm_opc::READ
        };
        let mut next = 0usize;
        let mut inflight = 0usize;
        let mut free: Vec<usize> = (0..qd).collect();
        let mut done: Vec<(u64, Status)> = Vec::new();
        while next < n_ios || inflight > 0 {
            while next < n_ios && !free.is_empty() {
                let slot = free.pop().unwrap();
                let lba = base_lba + (next * per) as u64;
                let buf = slice(m, slot * io, io);
                if pass == 0 {
                    rng.fill(buf);
                    want.insert(lba, buf.to_vec());
                } else {
                    buf.fill(0);
                }
                let seg = [DataSeg {
                    addr: m.addr(slot * io),
                    len: io as u32,
                }];
                q.submit(rw(opc, lba, per as u32), &seg, (slot as u64) << 40 | lba)
                    .unwrap();
                next += 1;
                inflight += 1;
            }
            q.poll(0, |t, c| done.push((t, c.status())));
            for (t, st) in done.drain(..) {
                assert_eq!(st, Status::SUCCESS, "I/O of {io} bytes at QD {qd}");
                let slot = (t >> 40) as usize;
                let lba = t & ((1 << 40) - 1);
                if pass == 1 {
                    assert!(
                        slice(m, slot * io, io) == &want[&lba][..],
                        "data mismatch at LBA {lba} ({io} bytes, QD {qd})"
                    );
                }
                free.push(slot);
                inflight -= 1;
            }
        }
    }
}

#[test]
#[ignore = "needs a VFIO-bound NVMe controller: tests/lab/run nvme-vfio"]
fn random_data_round_trips_on_two_queue_pairs_at_depths_1_to_128() {
    let (dev, c) = attach(CtrlrOpts::default());
    let ns = c.namespace(1).unwrap();
    let bs = ns.block_size as usize;
    let max = c.max_transfer() as usize;
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let (c, dev) = (c.clone(), dev.clone());
            std::thread::spawn(move || {
                let mut q = c.create_io_qpair().unwrap();
                // Each queue pair its own 32 MiB of the namespace.
                let base = t * (32 << 20) / bs as u64;
                for &(io, qd) in &[(4096, 1), (16384, 8), (65536, 32), (4096, 128), (max, 4)] {
                    let m = DmaMem::new(&dev, io * qd).unwrap();
                    write_verify(
                        &mut q,
                        &m,
                        base,
                        (32 << 20) / bs as u64,
                        bs,
                        io,
                        qd,
                        t * 1000 + io as u64,
                    );
                    println!(
                        "CHECK qpair {} ({t}): {io}-byte I/Os at QD {qd} verified",
                        q.qid()
                    );
                }
                q.stats()
            })
        })
        .collect();
    for t in threads {
        let s = t.join().unwrap();
        println!("STATS {s:?}");
        assert!(s.prp_lists > 0);
    }
}

#[test]
#[ignore = "needs a VFIO-bound NVMe controller: tests/lab/run nvme-vfio"]
fn a_reset_during_io_loses_and_duplicates_nothing() {
    let (dev, c) = attach(CtrlrOpts::default());
    let bs = c.namespace(1).unwrap().block_size as usize;
    let mut q = c.create_io_qpair().unwrap();
    let qd = 32;
    let io = 16384;
    let m = DmaMem::new(&dev, qd * io).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let c2 = c.clone();
    let stop2 = stop.clone();
    let resetter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        c2.reset().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        stop2.store(true, Ordering::Relaxed);
    });
    let mut rng = Rng(77);
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let mut free: Vec<usize> = (0..qd).collect();
    let mut next_tag = 0u64;
    let mut written: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut inflight = 0;
    let mut done = Vec::new();
    let per = (io / bs) as u64;
    while !stop.load(Ordering::Relaxed) || inflight > 0 {
        while !stop.load(Ordering::Relaxed) && !free.is_empty() {
            let slot = free.pop().unwrap();
            // Each write to its own LBA range: any tag completes once and its data stays.
            let half = c.namespace(1).unwrap().num_blocks / 2;
            if (next_tag + 1) * per >= half {
                stop.store(true, Ordering::Relaxed);
                free.push(slot);
                break;
            }
            let lba = half + next_tag * per;
            let buf = slice(&m, slot * io, io);
            rng.fill(buf);
            written.insert(lba, buf.to_vec());
            let seg = [DataSeg {
                addr: m.addr(slot * io),
                len: io as u32,
            }];
            match q.submit(
                rw(nvm_opc::WRITE, lba, per as u32),
                &seg,
                next_tag << 8 | slot as u64,
            ) {
                Ok(()) => {
                    next_tag += 1;
                    inflight += 1;
                }
                Err(_) => {
                    written.remove(&lba);
                    free.push(slot);
                    break;
                }
            }
        }
        q.poll(0, |t, c| done.push((t, c.status())));
        for (t, st) in done.drain(..) {
            assert_eq!(
                st,
                Status::SUCCESS,
                "write completed with {st:?} across the reset"
            );
            *seen.entry(t >> 8).or_default() += 1;
            free.push((t & 0xff) as usize);
            inflight -= 1;
        }
    }
    resetter.join().unwrap();
    assert_eq!(c.stats().resets, 1);
    assert_eq!(
        seen.len() as u64,
        next_tag,
        "every submitted write completed"
    );
    assert!(seen.values().all(|&n| n == 1), "a completion came twice");
    println!(
        "CHECK reset: {} writes, each completed once; {} resubmitted after the reset",
        next_tag,
        q.stats().retried
    );
    // Read everything back.
    let r = DmaMem::new(&dev, io).unwrap();
    for (lba, data) in &written {
        assert_eq!(
            run(
                &mut q,
                rw(nvm_opc::READ, *lba, per as u32),
                &[DataSeg {
                    addr: r.addr(0),
                    len: io as u32
                }]
            ),
            Status::SUCCESS
        );
        assert!(
            slice(&r, 0, io) == &data[..],
            "data at LBA {lba} lost across the reset"
        );
    }
    println!("CHECK reset: all {} writes read back intact", written.len());
}

#[test]
#[ignore = "needs a VFIO-bound NVMe controller: tests/lab/run nvme-cmb"]
fn cmb_submission_queues_lists_and_data() {
    let (_dev, c) = attach(CtrlrOpts {
        cmb_sqs: true,
        cmb_lists: true,
        sgl: SglMode::Never,
        ..Default::default()
    });
    let cmb = c
        .cmb()
        .expect("the controller has no CMB (cmb_size_mb on QEMU's nvme device?)")
        .clone();
    println!(
        "CMB {cmb:?} at controller address {:?}",
        cmb.controller_base()
    );
    let mut q = c.create_io_qpair().unwrap();
    assert!(q.sq_in_cmb(), "the submission queue is not in the CMB");
    assert!(q.lists_in_cmb(), "the PRP lists are not in the CMB");
    let bs = c.namespace(1).unwrap().block_size as usize;
    let len = 256 << 10;
    let mut w = cmb.alloc(len).unwrap();
    let r = cmb.alloc(len).unwrap();
    let mut data = vec![0u8; len];
    Rng(99).fill(&mut data);
    w.write(0, &data);
    let nlb = (len / bs) as u32;
    assert_eq!(
        run(
            &mut q,
            rw(nvm_opc::WRITE, 1 << 16, nlb),
            &[DataSeg {
                addr: w.nvme_addr(),
                len: len as u32
            }]
        ),
        Status::SUCCESS
    );
    assert_eq!(
        run(
            &mut q,
            rw(nvm_opc::READ, 1 << 16, nlb),
            &[DataSeg {
                addr: r.nvme_addr(),
                len: len as u32
            }]
        ),
        Status::SUCCESS
    );
    let mut back = vec![0u8; len];
    r.read(0, &mut back);
    assert!(back == data, "data through CMB buffers differs");
    let s = q.stats();
    println!(
        "CHECK cmb: SQ in CMB, PRP lists in CMB ({} list commands), {} bytes written from and read into CMB buffers, CMB used {} of {} bytes",
        s.prp_lists,
        len,
        cmb.used(),
        cmb.size()
    );
    assert!(s.prp_lists >= 2);
    // Exporting the CMB for a NIC: a dma-buf where the kernel can (6.19+), else why not.
    match cmb.export_dma_buf() {
        Ok(fd) => println!("CHECK dma-buf: the CMB exported as dma-buf fd {fd:?}"),
        Err(e) => println!("CHECK dma-buf: not exported, fallback to host memory for NICs: {e}"),
    }
}

#[test]
#[ignore = "needs a VFIO-bound NVMe controller: tests/lab/run nvme-vfio"]
fn shutdown_leaves_the_controller_clean_with_the_data_in_place() {
    let (dev, c) = attach(CtrlrOpts::default());
    let bs = c.namespace(1).unwrap().block_size as usize;
    let lba: u64 = std::env::var("POLLUX_NVME_MARK_LBA")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2048);
    let len = 1 << 20;
    {
        let mut q = c.create_io_qpair().unwrap();
        let m = DmaMem::new(&dev, len).unwrap();
        let mut data = vec![0u8; len];
        Rng(4242).fill(&mut data);
        slice(&m, 0, len).copy_from_slice(&data);
        let half = len / 2;
        for i in 0..2 {
            let seg = [DataSeg {
                addr: m.addr(i * half),
                len: half as u32,
            }];
            assert_eq!(
                run(
                    &mut q,
                    rw(
                        nvm_opc::WRITE,
                        lba + (i * half / bs) as u64,
                        (half / bs) as u32
                    ),
                    &seg
                ),
                Status::SUCCESS
            );
        }
        let mut f = Sqe {
            opc: nvm_opc::FLUSH,
            nsid: U32::new(1),
            ..Default::default()
        };
        f.cdw10 = U32::new(0);
        assert_eq!(run(&mut q, f, &[]), Status::SUCCESS);
        std::fs::write("/tmp/lab-nvme-mark.bin", &data).unwrap();
    }
    c.shutdown().unwrap();
    let csts = Csts::from(dev.read32(offset::CSTS));
    assert_eq!(csts.shst(), 2, "CSTS {csts:?}");
    println!(
        "CHECK shutdown: CSTS.SHST=2 (complete); 1 MiB left at LBA {lba} in /tmp/lab-nvme-mark.bin"
    );
}

/// Namespace Attachment (admin 15h) of `nsid` to this controller (`sel` 0 attach, 1
/// detach), with the controller list {1, cntlid}.
fn ns_attach(c: &Ctrlr, nsid: u32, sel: u32) -> Result<(), pollux_nvme::pci::Error> {
    let mut list = [0u8; 4096];
    list[0..2].copy_from_slice(&1u16.to_le_bytes());
    list[2..4].copy_from_slice(&c.identify().cntlid.get().to_le_bytes());
    let sqe = Sqe {
        opc: pollux_nvme::spec::admin::admin_opc::NAMESPACE_ATTACHMENT,
        nsid: U32::new(nsid),
        cdw10: U32::new(sel),
        ..Default::default()
    };
    c.admin_command(sqe, pollux_nvme::ctrlr::AdminData::Out(&list))
        .map(|_| ())
}

fn wait_event(c: &Ctrlr) -> Vec<pollux_nvme::ctrlr::Event> {
    let t0 = Instant::now();
    loop {
        let ev = c.process_admin();
        if !ev.is_empty() {
            return ev;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no Asynchronous Event in 10 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
#[ignore = "needs a VFIO-bound NVMe controller: tests/lab/run nvme-vfio"]
fn namespace_attachment_raises_an_event_and_rescans() {
    use pollux_nvme::ctrlr::Event;
    let (_dev, c) = attach(CtrlrOpts::default());
    let ids = |c: &Ctrlr| c.namespaces().iter().map(|n| n.nsid).collect::<Vec<_>>();
    assert_eq!(ids(&c), vec![1], "QEMU's namespace 2 starts detached");
    ns_attach(&c, 2, 0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wait_event(&c), vec![Event::NamespacesChanged(vec![2])]);
    assert_eq!(ids(&c), vec![1, 2]);
    println!(
        "CHECK attach: Namespace Attachment of nsid 2 -> AEN (Notice, Namespace Attribute Changed), Changed NS List [2], namespaces now [1, 2]"
    );
    ns_attach(&c, 2, 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wait_event(&c), vec![Event::NamespacesChanged(vec![2])]);
    assert_eq!(ids(&c), vec![1]);
    println!("CHECK detach: the AEN again, namespaces back to [1]");
    assert!(c.stats().events >= 2);
}
