use super::*;
use crate::dma::{HugepagePolicy, Iobuf, IobufOpts};
use crate::thread::Harness;
use std::cell::RefCell;
use std::time::Duration;

fn iobuf() -> Arc<Iobuf> {
    Iobuf::new(&IobufOpts {
        hugepages: HugepagePolicy::Never,
        ..IobufOpts::small()
    })
    .unwrap()
}

/// Runs one I/O to completion on harness thread 0.
fn run(h: &Harness, bdev: &Arc<Bdev>, io: Box<BdevIo>) -> Box<BdevIo> {
    let out: Rc<RefCell<Option<Box<BdevIo>>>> = Rc::new(RefCell::new(None));
    let o = out.clone();
    let cb: IoCallback = Rc::new(move |io| *o.borrow_mut() = Some(io));
    h.run_on(0, || bdev.channel().unwrap().submit(io, &cb))
        .unwrap();
    h.poll_until(Duration::from_secs(10), || out.borrow().is_some());
    out.take().unwrap()
}

fn buffers(h: &Harness, iobuf: &Arc<Iobuf>, lens: &[usize], fill: u8) -> Box<BdevIo> {
    h.run_on(0, || {
        let ch = iobuf.channel().unwrap();
        let mut io = BdevIo::new();
        for &l in lens {
            let mut b = ch.get(l).unwrap();
            b.as_mut_slice().fill(fill);
            io.push_buf(b).unwrap();
        }
        io
    })
}

fn pattern(seed: u64, block: u64, i: usize) -> u8 {
    (seed
        .wrapping_mul(31)
        .wrapping_add(block * 7)
        .wrapping_add(i as u64 / 3)
        % 251) as u8
}

#[test]
fn null_reads_zeroes_and_honours_latency() {
    let mut h = Harness::new(1);
    let iobuf = iobuf();
    let bdev = null::create(null::NullOpts {
        latency: Duration::from_micros(500),
        ..null::NullOpts::new("Null0", 1 << 20)
    })
    .unwrap();
    assert_eq!(bdev.num_blocks(), 2048);
    let mut io = buffers(&h, &iobuf, &[4096], 0xff);
    io.prepare(IoKind::Read, 8, 8);
    let done = Rc::new(RefCell::new(None));
    let d = done.clone();
    let cb: IoCallback = Rc::new(move |io| *d.borrow_mut() = Some(io));
    h.run_on(0, || bdev.channel().unwrap().submit(io, &cb))
        .unwrap();
    h.poll_threads();
    assert!(done.borrow().is_none(), "not before its latency");
    h.advance_time(Duration::from_micros(499));
    assert!(done.borrow().is_none());
    h.advance_time(Duration::from_micros(1));
    let io = done.take().expect("completed at its latency");
    assert_eq!(io.status(), IoStatus::Success);
    assert!(io.bufs()[0].as_slice().iter().all(|&b| b == 0));
    drop(io);
    h.run_on(0, || drop(cb));
    h.shutdown().unwrap();
    assert!(iobuf.is_full());
}

#[test]
fn malloc_round_trips_data_zeroes_and_unmaps() {
    let h = Harness::new(1);
    let iobuf = iobuf();
    let bdev = malloc::create(malloc::MallocOpts::new("Malloc0", 4 << 20)).unwrap();
    // A three-segment write.
    let mut io = buffers(&h, &iobuf, &[4096, 8192, 512], 0);
    for (k, b) in io.bufs_mut().iter_mut().enumerate() {
        for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
            *x = pattern(k as u64, 0, i);
        }
    }
    let expect: Vec<u8> = io
        .bufs()
        .iter()
        .flat_map(|b| b.as_slice().to_vec())
        .collect();
    io.prepare(IoKind::Write, 100, 25);
    let mut io = run(&h, &bdev, io);
    assert_eq!(io.status(), IoStatus::Success);
    io.clear_bufs();
    let mut io2 = buffers(&h, &iobuf, &[12800], 0xee);
    io2.prepare(IoKind::Read, 100, 25);
    let io2 = run(&h, &bdev, io2);
    assert_eq!(io2.bufs()[0].as_slice(), &expect[..]);
    drop(io2);
    for kind in [IoKind::WriteZeroes, IoKind::Unmap] {
        io.prepare(kind, 104, 2);
        io = run(&h, &bdev, io);
        assert_eq!(io.status(), IoStatus::Success);
        let mut r = buffers(&h, &iobuf, &[1024], 0xee);
        r.prepare(IoKind::Read, 104, 2);
        let r = run(&h, &bdev, r);
        assert!(r.bufs()[0].as_slice().iter().all(|&b| b == 0), "{kind:?}");
    }
    io.prepare(IoKind::Flush, 0, 0);
    assert!(run(&h, &bdev, io).status().is_success());
    h.shutdown().unwrap();
    assert!(iobuf.is_full());
}

#[test]
fn bad_input_gets_a_status_not_a_panic() {
    let h = Harness::new(1);
    let iobuf = iobuf();
    let bdev = malloc::create(malloc::MallocOpts::new("Malloc1", 1 << 20)).unwrap();
    let cb: IoCallback = Rc::new(|_| panic!("a refused I/O never completes"));
    let cases: Vec<(IoKind, u64, u64, Vec<usize>, IoStatus)> = vec![
        (IoKind::Read, 2047, 2, vec![1024], IoStatus::LbaOutOfRange),
        (
            IoKind::Write,
            u64::MAX,
            2,
            vec![1024],
            IoStatus::LbaOutOfRange,
        ),
        (IoKind::Read, 0, 2, vec![1000], IoStatus::InvalidField),
        (IoKind::Read, 0, 2, vec![], IoStatus::InvalidField),
        (IoKind::Write, 0, 0, vec![512], IoStatus::InvalidField),
        (IoKind::WriteZeroes, 0, 0, vec![], IoStatus::InvalidField),
        (IoKind::Unmap, 2040, 9, vec![], IoStatus::LbaOutOfRange),
    ];
    for (kind, off, n, lens, want) in cases {
        let mut io = buffers(&h, &iobuf, &lens, 0);
        io.prepare(kind, off, n);
        let err = h
            .run_on(0, || bdev.channel().unwrap().submit(io, &cb))
            .unwrap_err();
        assert_eq!(err.status, want, "{kind:?} {off}+{n} {lens:?}");
        assert_eq!(err.io.status(), want);
    }
    h.run_on(0, || drop(cb));
    h.shutdown().unwrap();
    assert!(iobuf.is_full());
}

#[test]
fn a_full_queue_is_back_pressure() {
    let h = Harness::new(1);
    let bdev = null::create(null::NullOpts::new("Null1", 1 << 20)).unwrap();
    let done = Rc::new(RefCell::new(0));
    let d = done.clone();
    let cb: IoCallback = Rc::new(move |_| *d.borrow_mut() += 1);
    h.run_on(0, || {
        let ch = bdev.channel().unwrap();
        for _ in 0..null::NULL_QUEUE_DEPTH_MAX {
            let mut io = BdevIo::new();
            io.prepare(IoKind::Flush, 0, 0);
            ch.submit(io, &cb).unwrap();
        }
        let mut io = BdevIo::new();
        io.prepare(IoKind::Flush, 0, 0);
        let e = ch.submit(io, &cb).unwrap_err();
        assert_eq!(e.status, IoStatus::NoMemory);
    });
    h.poll_threads();
    assert_eq!(*done.borrow(), null::NULL_QUEUE_DEPTH_MAX);
    h.run_on(0, || drop(cb));
    h.shutdown().unwrap();
}

fn temp_file_in(dir: &str, len: u64) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new_in(dir).unwrap();
    f.as_file().set_len(len).unwrap();
    f
}

/// Many writes of known patterns at many offsets, several in flight, then every block
/// read back and compared.
fn uring_integrity(dir: &str) {
    let h = Harness::new(1);
    let iobuf = iobuf();
    let file = temp_file_in(dir, 8 << 20);
    let bdev = uring::create(uring::UringOpts::new("Uring0", file.path())).unwrap();
    assert_eq!(bdev.block_size(), 4096);
    let blocks = bdev.num_blocks();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Expected content per block: the seed of the last write that covered it.
    let mut expect = vec![None::<u64>; blocks as usize];
    let inflight = Rc::new(RefCell::new(0usize));
    let failures = Rc::new(RefCell::new(Vec::new()));
    let (i2, f2) = (inflight.clone(), failures.clone());
    let cb: IoCallback = Rc::new(move |io: Box<BdevIo>| {
        *i2.borrow_mut() -= 1;
        if !io.status().is_success() {
            f2.borrow_mut().push(format!("{io:?}"));
        }
    });
    for round in 0..8 {
        // A batch of non-overlapping writes in flight at once.
        let mut used = vec![false; blocks as usize];
        for _ in 0..32 {
            let n = 1 + next() % 40;
            let off = next() % (blocks - n);
            if used[off as usize..(off + n) as usize].iter().any(|&u| u) {
                continue;
            }
            used[off as usize..(off + n) as usize].fill(true);
            let seed = next();
            // Split into up to 4 segments (each at most a large buffer).
            let total = (n * 4096) as usize;
            let segs = 1 + (next() % 4) as usize;
            let mut lens = Vec::new();
            let mut left = total;
            for s in 0..segs {
                let l = if s + 1 == segs {
                    left
                } else {
                    (left / 2 / 4096).max(1) * 4096
                };
                if l == 0 {
                    break;
                }
                lens.push(l.min(left));
                left -= l.min(left);
            }
            while left > 0 {
                lens.push(left.min(128 << 10));
                left -= left.min(128 << 10);
            }
            let lens: Vec<usize> = lens
                .into_iter()
                .flat_map(|l| {
                    let mut v = Vec::new();
                    let mut l = l;
                    while l > 0 {
                        v.push(l.min(128 << 10));
                        l -= l.min(128 << 10);
                    }
                    v
                })
                .collect();
            let mut io = buffers(&h, &iobuf, &lens, 0);
            let mut pos = 0usize;
            for b in io.bufs_mut() {
                for x in b.as_mut_slice() {
                    let blk = off + (pos / 4096) as u64;
                    *x = pattern(seed, blk, pos % 4096);
                    pos += 1;
                }
            }
            for b in off..off + n {
                expect[b as usize] = Some(seed);
            }
            io.prepare(IoKind::Write, off, n);
            *inflight.borrow_mut() += 1;
            h.run_on(0, || bdev.channel().unwrap().submit(io, &cb))
                .unwrap();
        }
        h.poll_until(Duration::from_secs(20), || *inflight.borrow() == 0);
        assert!(
            failures.borrow().is_empty(),
            "round {round}: {:?}",
            failures.borrow()
        );
    }
    // Read everything back, 64 blocks at a time in two segments.
    let mut b = 0;
    while b < blocks {
        let n = 64.min(blocks - b);
        let half = (n / 2).max(1);
        let lens: Vec<usize> = if n > 1 {
            vec![(half * 4096) as usize, ((n - half) * 4096) as usize]
        } else {
            vec![4096]
        };
        let mut io = buffers(&h, &iobuf, &lens, 0xcc);
        io.prepare(IoKind::Read, b, n);
        let io = run(&h, &bdev, io);
        assert!(io.status().is_success());
        let data: Vec<u8> = io
            .bufs()
            .iter()
            .flat_map(|x| x.as_slice().to_vec())
            .collect();
        for k in 0..n {
            let blk = b + k;
            let got = &data[(k * 4096) as usize..((k + 1) * 4096) as usize];
            match expect[blk as usize] {
                None => assert!(got.iter().all(|&x| x == 0), "block {blk} never written"),
                Some(seed) => {
                    for (i, &x) in got.iter().enumerate() {
                        assert_eq!(x, pattern(seed, blk, i), "block {blk} byte {i}");
                    }
                }
            }
        }
        b += n;
    }
    // Flush, write-zeroes and unmap read back as zeroes.
    let mut io = BdevIo::new();
    io.prepare(IoKind::Flush, 0, 0);
    assert!(run(&h, &bdev, io).status().is_success());
    for (kind, off) in [(IoKind::WriteZeroes, 10u64), (IoKind::Unmap, 300)] {
        let mut w = buffers(&h, &iobuf, &[8192], 0x77);
        w.prepare(IoKind::Write, off, 2);
        let mut w = run(&h, &bdev, w);
        w.clear_bufs();
        w.prepare(kind, off, 2);
        assert!(run(&h, &bdev, w).status().is_success(), "{kind:?}");
        let mut r = buffers(&h, &iobuf, &[8192], 0x55);
        r.prepare(IoKind::Read, off, 2);
        let r = run(&h, &bdev, r);
        assert!(
            r.bufs()[0].as_slice().iter().all(|&x| x == 0),
            "{kind:?} reads zeroes"
        );
    }
    h.run_on(0, || drop(cb));
    h.shutdown().unwrap();
    assert!(iobuf.is_full());
}

#[test]
fn uring_data_integrity_on_a_disk_file() {
    uring_integrity(&std::env::temp_dir().display().to_string());
}

#[test]
fn uring_data_integrity_on_tmpfs() {
    uring_integrity("/dev/shm");
}

#[test]
fn uring_backend_errors_fail_only_that_io() {
    let h = Harness::new(1);
    let iobuf = iobuf();
    let file = temp_file_in("/dev/shm", 1 << 20);
    let bdev = uring::create(uring::UringOpts::new("Uring1", file.path())).unwrap();
    // The file shrinks under the bdev: reads past its new end fail, the rest work.
    file.as_file().set_len(512 << 10).unwrap();
    let mut io = buffers(&h, &iobuf, &[4096], 0);
    io.prepare(IoKind::Read, 200, 1);
    let io = run(&h, &bdev, io);
    assert_eq!(io.status(), IoStatus::UnrecoveredReadError);
    drop(io);
    let mut io = buffers(&h, &iobuf, &[4096], 0);
    io.prepare(IoKind::Read, 2, 1);
    assert!(run(&h, &bdev, io).status().is_success());
    h.shutdown().unwrap();
}

#[test]
fn uring_refuses_what_it_cannot_serve() {
    let e = uring::create(uring::UringOpts::new("U", "/nonexistent/file")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/file"), "{e}");
    let small = temp_file_in("/dev/shm", 100);
    let e = uring::create(uring::UringOpts::new("U", small.path())).unwrap_err();
    assert!(e.to_string().contains("less than one block"), "{e}");
    let e = uring::create(uring::UringOpts::new("U", "/dev/shm")).unwrap_err();
    assert!(e.to_string().contains("neither"), "{e}");
}

#[test]
fn nvme_status_mapping_is_one_to_one() {
    let all = [
        IoStatus::Success,
        IoStatus::InvalidOpcode,
        IoStatus::InvalidField,
        IoStatus::LbaOutOfRange,
        IoStatus::CapacityExceeded,
        IoStatus::WriteFault,
        IoStatus::UnrecoveredReadError,
        IoStatus::Aborted,
        IoStatus::NoMemory,
        IoStatus::InternalError,
    ];
    let mut seen = std::collections::HashSet::new();
    for s in all {
        let (sct, sc, _) = s.nvme_status();
        assert!(seen.insert((sct, sc)), "{s:?} collides");
    }
    assert_eq!(
        IoStatus::from_errno(IoKind::Read, libc::EIO),
        IoStatus::UnrecoveredReadError
    );
    assert_eq!(
        IoStatus::from_errno(IoKind::Write, libc::EIO),
        IoStatus::WriteFault
    );
    assert_eq!(
        IoStatus::from_errno(IoKind::Write, libc::ENOSPC),
        IoStatus::CapacityExceeded
    );
}

#[test]
fn a_callback_that_resubmits_does_not_starve_its_thread() {
    // Regression: a null channel completed, in the same poll, the I/Os its callbacks had
    // just resubmitted, so a closed loop of I/Os never let the poll return.
    let h = Harness::new(1);
    let bdev = null::create(null::NullOpts::new("NullLoop", 1 << 20)).unwrap();
    let done = Rc::new(RefCell::new(0u64));
    let slot: Rc<RefCell<Option<IoCallback>>> = Rc::new(RefCell::new(None));
    h.run_on(0, || {
        let ch = bdev.channel().unwrap();
        let (d, s, ch2) = (done.clone(), slot.clone(), ch.clone());
        let cb: IoCallback = Rc::new(move |mut io: Box<BdevIo>| {
            *d.borrow_mut() += 1;
            io.prepare(IoKind::Flush, 0, 0);
            let me = s.borrow().clone().unwrap();
            ch2.submit(io, &me).unwrap();
        });
        *slot.borrow_mut() = Some(cb.clone());
        for _ in 0..4 {
            let mut io = BdevIo::new();
            io.prepare(IoKind::Flush, 0, 0);
            ch.submit(io, &cb).unwrap();
        }
    });
    for round in 1..=3u64 {
        assert!(h.poll_thread(0).is_busy());
        assert_eq!(*done.borrow(), 4 * round, "one completion per I/O per loop");
    }
    slot.borrow_mut().take();
}

#[test]
fn uring_short_reads_continue_then_fail_at_end_of_file() {
    // The file loses half of its last block under the bdev: the read of that block
    // comes back short, the continuation finds the end of the file, and the I/O fails
    // alone with a media status, for fixed (one buffer) and vectored (two) reads alike.
    let h = Harness::new(1);
    let iobuf = iobuf();
    for direct in [true, false] {
        let file = temp_file_in("/dev/shm", 1 << 20);
        let bdev = uring::create(uring::UringOpts {
            direct,
            ..uring::UringOpts::new("UringShort", file.path())
        })
        .unwrap();
        let last = bdev.num_blocks() - 1;
        file.as_file().set_len((1 << 20) - 2048).unwrap();
        for lens in [vec![4096], vec![2048, 2048]] {
            let mut io = buffers(&h, &iobuf, &lens, 0x11);
            io.prepare(IoKind::Read, last, 1);
            let io = run(&h, &bdev, io);
            assert_eq!(
                io.status(),
                IoStatus::UnrecoveredReadError,
                "direct={direct} {lens:?}"
            );
        }
        let mut io = buffers(&h, &iobuf, &[4096], 0x11);
        io.prepare(IoKind::Read, last - 1, 1);
        assert!(run(&h, &bdev, io).status().is_success());
    }
    h.shutdown().unwrap();
    assert!(iobuf.is_full());
}

#[test]
fn uring_poll_returns_under_a_closed_loop_of_resubmissions() {
    // Regression: the uring poller reaped until the CQ was empty, and callbacks that
    // resubmit kept it non-empty, so one poll never returned and its reactor froze.
    let h = Harness::new(1);
    let iobuf = iobuf();
    let file = temp_file_in("/dev/shm", 1 << 20);
    let bdev = uring::create(uring::UringOpts {
        ring_depth: 16,
        ..uring::UringOpts::new("UringLoop", file.path())
    })
    .unwrap();
    let done = Rc::new(RefCell::new(0u64));
    let stop = Rc::new(RefCell::new(false));
    let slot: Rc<RefCell<Option<IoCallback>>> = Rc::new(RefCell::new(None));
    h.run_on(0, || {
        let ch = bdev.channel().unwrap();
        let (d, st, s, ch2) = (done.clone(), stop.clone(), slot.clone(), ch.clone());
        let cb: IoCallback = Rc::new(move |io: Box<BdevIo>| {
            *d.borrow_mut() += 1;
            if !*st.borrow() {
                let me = s.borrow().clone().unwrap();
                ch2.submit(io, &me).unwrap();
            }
        });
        *slot.borrow_mut() = Some(cb.clone());
        let bufs = iobuf.channel().unwrap();
        for i in 0..16 {
            let mut io = BdevIo::new();
            io.push_buf(bufs.get(4096).unwrap()).unwrap();
            io.prepare(IoKind::Read, i, 1);
            ch.submit(io, &cb).unwrap();
        }
    });
    // Poll until the loop has gone round several times (as slowly as the machine
    // likes), checking that every single poll returns having reaped at most a ring's worth.
    let mut before = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while *done.borrow() < 160 {
        assert!(
            std::time::Instant::now() < deadline,
            "the loop made no progress"
        );
        let _ = h.poll_thread(0);
        let now = *done.borrow();
        assert!(now - before <= 16, "one poll reaps at most a ring's worth");
        before = now;
    }
    // Let the loop wind down: every I/O completes once more and stops.
    *stop.borrow_mut() = true;
    let target = before + 16;
    h.poll_until(Duration::from_secs(10), || *done.borrow() >= target);
    slot.borrow_mut().take();
}

#[test]
fn nvme_bdev_splits_resolves_and_maps_statuses_on_the_controller_twin() {
    use pollux_nvme::pci::twin::{self, Twin};
    let h = Harness::new(1);
    let iobuf = iobuf();
    let t = Arc::new(Twin::new());
    let (c, bdevs) = nvme::attach_device(
        nvme::NvmeAttachOpts {
            name: "TwinTest".into(),
            traddr: "twin".into(),
            ctrlr: Default::default(),
            cmb_data: false,
        },
        t.clone(),
    )
    .unwrap();
    assert_eq!(bdevs.len(), 1);
    let bdev = bdevs[0].clone();
    assert_eq!(bdev.name(), "TwinTestn1");
    assert_eq!((bdev.block_size(), bdev.num_blocks()), (512, twin::BLOCKS));
    // Larger than the twin's 128 KiB transfer limit, in several buffers: split.
    let large = iobuf.large_bufsize();
    let n = (256 << 10) / large;
    let mut io = buffers(&h, &iobuf, &vec![large; n], 0);
    for (k, b) in io.bufs_mut().iter_mut().enumerate() {
        for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
            *x = pattern(k as u64 + 7, 3, i);
        }
    }
    let expect: Vec<u8> = io
        .bufs()
        .iter()
        .flat_map(|b| b.as_slice().to_vec())
        .collect();
    io.prepare(IoKind::Write, 64, (256 << 10) / 512);
    let mut io = run(&h, &bdev, io);
    assert_eq!(io.status(), IoStatus::Success);
    assert_eq!(t.ns_bytes(64, 256 << 10), expect);
    assert!(
        c.counters()
            .split
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    io.clear_bufs();
    let mut r = buffers(&h, &iobuf, &vec![large; n], 0xee);
    r.prepare(IoKind::Read, 64, (256 << 10) / 512);
    let r = run(&h, &bdev, r);
    assert_eq!(r.status(), IoStatus::Success);
    let got: Vec<u8> = r
        .bufs()
        .iter()
        .flat_map(|b| b.as_slice().to_vec())
        .collect();
    assert_eq!(got, expect);
    drop(r);
    for kind in [IoKind::WriteZeroes, IoKind::Unmap, IoKind::Flush] {
        io.prepare(kind, 64, if kind == IoKind::Flush { 0 } else { 16 });
        io = run(&h, &bdev, io);
        assert_eq!(io.status(), IoStatus::Success, "{kind:?}");
    }
    assert!(t.ns_bytes(64, 16 * 512).iter().all(|&b| b == 0));
    // The bdev layer refuses ranges past the end itself; the controller's own status
    // maps too (checked by nvme_status_mapping_is_one_to_one).
    drop(io);
    h.shutdown().unwrap();
    assert!(iobuf.is_full());
    nvme::detach("TwinTest").unwrap();
}

/// Submits `io` on harness thread 0; completions land in `out`.
#[allow(clippy::vec_box)] // the bdev layer hands I/Os back boxed
fn submit_to(
    h: &Harness,
    bdev: &Arc<Bdev>,
    io: Box<BdevIo>,
    out: &Rc<RefCell<Vec<Box<BdevIo>>>>,
) -> Result<(), SubmitError> {
    let o = out.clone();
    let cb: IoCallback = Rc::new(move |io| o.borrow_mut().push(io));
    h.run_on(0, || bdev.channel().unwrap().submit(io, &cb))
}

fn write_block(h: &Harness, iobuf: &Arc<Iobuf>, bdev: &Arc<Bdev>, lba: u64, fill: u8) -> IoStatus {
    let mut io = buffers(h, iobuf, &[4096], fill);
    io.prepare(IoKind::Write, lba, 8);
    run(h, bdev, io).status()
}

fn read_block(h: &Harness, iobuf: &Arc<Iobuf>, bdev: &Arc<Bdev>, lba: u64) -> (IoStatus, Vec<u8>) {
    let mut io = buffers(h, iobuf, &[4096], 0xee);
    io.prepare(IoKind::Read, lba, 8);
    let io = run(h, bdev, io);
    (io.status(), io.bufs()[0].as_slice().to_vec())
}

#[test]
fn an_error_bdev_fails_holds_corrupts_and_refuses_what_it_is_told_to() {
    use error::{ErrorInjector, ErrorIoType, ErrorType};
    let h = Harness::new(1);
    let iobuf = iobuf();
    let base = malloc::create(malloc::MallocOpts::new("M0", 1 << 20)).unwrap();
    let ee = error::create(base.clone(), None).unwrap();
    assert_eq!(ee.name(), "EE_M0");
    assert_eq!(ee.num_blocks(), base.num_blocks());
    let inj: &ErrorInjector = ee.module().unwrap();
    // No rule: everything passes.
    assert_eq!(write_block(&h, &iobuf, &ee, 0, 0x11), IoStatus::Success);
    assert_eq!(read_block(&h, &iobuf, &base, 0).1, vec![0x11; 4096]);

    // Two writes fail, and their data never reaches the base; the third passes.
    inj.inject(ErrorIoType::Write, ErrorType::Failure, 2, 0);
    for _ in 0..2 {
        assert_eq!(
            write_block(&h, &iobuf, &ee, 0, 0x22),
            IoStatus::InternalError
        );
    }
    assert_eq!(read_block(&h, &iobuf, &ee, 0).1, vec![0x11; 4096]);
    assert_eq!(write_block(&h, &iobuf, &ee, 0, 0x33), IoStatus::Success);
    assert_eq!(IoStatus::InternalError.nvme_status(), (0, 0x06, false));

    // A chosen NVMe status on reads.
    inj.inject(
        ErrorIoType::Read,
        ErrorType::NvmeFailure { sct: 2, sc: 0x81 },
        1,
        0,
    );
    let (st, _) = read_block(&h, &iobuf, &ee, 0);
    assert_eq!(st.nvme_status(), (2, 0x81, false));
    assert_eq!(read_block(&h, &iobuf, &ee, 0).0, IoStatus::Success);

    // Corruption: a write's byte 5 stored flipped; a read's byte 4100 flipped on its way up.
    inj.inject(
        ErrorIoType::Write,
        ErrorType::CorruptData {
            offset: 5,
            value: 0xff,
        },
        1,
        0,
    );
    assert_eq!(write_block(&h, &iobuf, &ee, 8, 0x44), IoStatus::Success);
    let got = read_block(&h, &iobuf, &base, 8).1;
    assert_eq!((got[4], got[5], got[6]), (0x44, 0x44 ^ 0xff, 0x44));
    inj.inject(
        ErrorIoType::Read,
        ErrorType::CorruptData {
            offset: 4096 + 7,
            value: 1,
        },
        1,
        0,
    );
    let got = read_block(&h, &iobuf, &ee, 0).1;
    assert_eq!((got[6], got[7]), (0x33, 0x33 ^ 1));
    assert_eq!(
        read_block(&h, &iobuf, &base, 0).1,
        vec![0x33; 4096],
        "stored intact"
    );

    // nomem: refused as a full queue once, then taken.
    inj.inject(ErrorIoType::Write, ErrorType::NoMemory, 1, 0);
    let out = Rc::new(RefCell::new(Vec::new()));
    let mut io = buffers(&h, &iobuf, &[4096], 0x55);
    io.prepare(IoKind::Write, 16, 8);
    let e = submit_to(&h, &ee, io, &out).unwrap_err();
    assert_eq!(e.status, IoStatus::NoMemory);
    assert!(run(&h, &ee, e.io).status().is_success());

    // pending: held until resumed (then written), or aborted.
    inj.inject(ErrorIoType::Write, ErrorType::Pending, 2, 0);
    for lba in [24, 32] {
        let mut io = buffers(&h, &iobuf, &[4096], 0x66);
        io.prepare(IoKind::Write, lba, 8);
        submit_to(&h, &ee, io, &out).unwrap();
    }
    for _ in 0..10 {
        h.poll_threads();
    }
    assert!(out.borrow().is_empty(), "held");
    assert_eq!(inj.pending(), 2);
    inj.resume_pending();
    h.poll_until(Duration::from_secs(10), || out.borrow().len() == 2);
    assert!(out.borrow().iter().all(|io| io.status().is_success()));
    assert_eq!(read_block(&h, &iobuf, &base, 32).1, vec![0x66; 4096]);
    out.borrow_mut().clear();
    assert_eq!(inj.remaining()[1], 0, "resume ends the pending rule");
    inj.inject(ErrorIoType::All, ErrorType::Pending, 1, 0);
    let mut io = buffers(&h, &iobuf, &[4096], 0x77);
    io.prepare(IoKind::Read, 24, 8);
    submit_to(&h, &ee, io, &out).unwrap();
    inj.abort_pending();
    h.poll_until(Duration::from_secs(10), || out.borrow().len() == 1);
    assert_eq!(out.borrow()[0].status(), IoStatus::Aborted);
    out.borrow_mut().clear();
    inj.inject(ErrorIoType::Clear, ErrorType::Failure, 0, 0);
    assert_eq!(inj.remaining(), [0; 4]);
    assert_eq!(write_block(&h, &iobuf, &ee, 40, 0x88), IoStatus::Success);
    h.shutdown().unwrap();
    assert!(iobuf.is_full());
}

#[test]
fn an_error_rule_with_a_queue_depth_hits_only_a_deep_enough_queue() {
    use error::{ErrorInjector, ErrorIoType, ErrorType};
    let mut h = Harness::new(1);
    let iobuf = iobuf();
    let base = null::create(null::NullOpts {
        latency: Duration::from_micros(100),
        ..null::NullOpts::new("N0", 1 << 20)
    })
    .unwrap();
    let ee = error::create(base, None).unwrap();
    let inj: &ErrorInjector = ee.module().unwrap();
    inj.inject(ErrorIoType::Read, ErrorType::Failure, 1, 2);
    let out = Rc::new(RefCell::new(Vec::new()));
    for i in 0..4u64 {
        let mut io = buffers(&h, &iobuf, &[512], 0);
        io.prepare(IoKind::Read, i, 1);
        io.ctx = i;
        submit_to(&h, &ee, io, &out).unwrap();
    }
    h.poll_threads();
    h.advance_time(Duration::from_micros(100));
    h.poll_until(Duration::from_secs(10), || out.borrow().len() == 4);
    let failed: Vec<u64> = out
        .borrow()
        .iter()
        .filter(|io| !io.status().is_success())
        .map(|io| io.ctx)
        .collect();
    assert_eq!(failed, vec![2], "the first I/O to find two at the base");
    out.borrow_mut().clear();
    h.shutdown().unwrap();
    assert!(iobuf.is_full());
}

#[test]
fn a_delay_bdev_holds_completions_without_blocking_and_follows_updates() {
    use delay::{DelayLatencies, DelayOpts, LatencyType};
    let mut h = Harness::new(1);
    let iobuf = iobuf();
    let base = null::create(null::NullOpts::new("N0", 1 << 20)).unwrap();
    let ms = Duration::from_millis;
    let opts = DelayOpts {
        name: "D0".into(),
        uuid: None,
        avg_read: Duration::from_micros(100),
        p99_read: ms(10),
        avg_write: ms(2),
        p99_write: ms(2),
    };
    let bad = DelayOpts {
        p99_read: Duration::from_micros(50),
        ..opts.clone()
    };
    assert!(delay::create(base.clone(), bad).is_err(), "p99 below avg");
    let d = delay::create(base, opts).unwrap();
    let lat: &DelayLatencies = d.module().unwrap();
    let out = Rc::new(RefCell::new(Vec::new()));
    // 2,000 reads, 250 at a time: about one in a hundred gets the p99 latency.
    let mut fast = 0;
    for round in 0..8u64 {
        for i in 0..250u64 {
            let mut io = buffers(&h, &iobuf, &[512], 0);
            io.prepare(IoKind::Read, round * 250 + i, 1);
            submit_to(&h, &d, io, &out).unwrap();
            h.poll_threads();
        }
        h.poll_threads();
        assert!(out.borrow().is_empty(), "none before 100 us");
        h.advance_time(Duration::from_micros(100));
        h.poll_threads();
        fast += out.borrow().len();
        h.advance_time(ms(10));
        h.poll_threads();
        assert_eq!(out.borrow().len(), 250);
        out.borrow_mut().clear();
    }
    assert!(
        (1940..2000).contains(&fast),
        "{fast} of 2000 at the average"
    );
    // A write waits its 2 ms; an unmap is not delayed; an update applies to the next.
    let mut io = buffers(&h, &iobuf, &[512], 0);
    io.prepare(IoKind::Write, 0, 1);
    submit_to(&h, &d, io, &out).unwrap();
    let mut io = BdevIo::new();
    io.prepare(IoKind::Unmap, 0, 8);
    submit_to(&h, &d, io, &out).unwrap();
    h.poll_threads();
    h.poll_threads();
    assert_eq!(out.borrow().len(), 1);
    assert_eq!(out.borrow()[0].kind(), IoKind::Unmap);
    h.advance_time(ms(2));
    h.poll_threads();
    assert_eq!(out.borrow().len(), 2);
    out.borrow_mut().clear();
    lat.set(LatencyType::AvgWrite, Duration::ZERO);
    lat.set(LatencyType::P99Write, Duration::ZERO);
    let mut io = buffers(&h, &iobuf, &[512], 0);
    io.prepare(IoKind::Write, 0, 1);
    submit_to(&h, &d, io, &out).unwrap();
    h.poll_threads();
    h.poll_threads();
    assert_eq!(out.borrow().len(), 1, "no delay after the update");
    out.borrow_mut().clear();
    h.shutdown().unwrap();
    assert!(iobuf.is_full());
}

#[test]
fn stacked_bdevs_pass_data_through_and_are_bounded_in_depth() {
    use delay::DelayOpts;
    let h = Harness::new(1);
    let iobuf = iobuf();
    let base = malloc::create(malloc::MallocOpts::new("M0", 1 << 20)).unwrap();
    let d = delay::create(
        base.clone(),
        DelayOpts {
            name: "D0".into(),
            uuid: None,
            avg_read: Duration::ZERO,
            p99_read: Duration::ZERO,
            avg_write: Duration::ZERO,
            p99_write: Duration::ZERO,
        },
    )
    .unwrap();
    let ee = error::create(d.clone(), None).unwrap();
    assert_eq!(ee.stack_depth(), 2);
    assert_eq!(write_block(&h, &iobuf, &ee, 0, 0x5a), IoStatus::Success);
    assert_eq!(read_block(&h, &iobuf, &ee, 0).1, vec![0x5a; 4096]);
    assert_eq!(read_block(&h, &iobuf, &base, 0).1, vec![0x5a; 4096]);
    let ee2 = error::create(ee.clone(), None).unwrap();
    assert!(error::create(ee2, None).is_err(), "a fifth level");
    h.shutdown().unwrap();
    assert!(iobuf.is_full());
}
